//! Patient anatomy as implicit shapes in a body frame (LPS mm: +x patient left,
//! +y posterior, +z superior; origin on the body axis at about the renal hilum),
//! painted in order onto any voxel grid. Each organ is a union of ellipsoids with a
//! smooth random deformation, scaled to a sampled mass.

use super::geom::{self, Mat3, Pose};
use super::rng::Rng;
use crate::organs;
use crate::volume::{Geometry, Vec3};

pub use super::tissue::Tissue;

/// One sinusoid of the smooth random deformation field (local, unit-less coords).
#[derive(Debug, Clone)]
struct Wave {
    k: Vec3,
    phase: f64,
    amp: Vec3,
}

/// Union of ellipsoids in a local frame, deformed smoothly, rotated, scaled.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub center: Vec3,
    /// Columns are the local axes expressed in the body frame.
    pub rot: Mat3,
    pub scale: f64,
    /// (centre, radii) in local mm before scaling.
    pub lobes: Vec<(Vec3, Vec3)>,
    waves: Vec<Wave>,
}

impl Blob {
    pub fn new(center: Vec3, rot: Mat3, lobes: Vec<(Vec3, Vec3)>) -> Self {
        Blob {
            center,
            rot,
            scale: 1.0,
            lobes,
            waves: Vec::new(),
        }
    }

    /// Adds `n` random waves of wavelength ~ `wavelength_mm` and amplitude up to
    /// `amp_mm` (local units).
    pub(crate) fn deform(
        mut self,
        rng: &mut Rng,
        n: usize,
        wavelength_mm: f64,
        amp_mm: f64,
    ) -> Self {
        for _ in 0..n {
            let dir = geom::unit([rng.normal(), rng.normal(), rng.normal()]);
            let kk = std::f64::consts::TAU / (wavelength_mm * rng.uniform(0.7, 1.4));
            let a = amp_mm * rng.uniform(0.3, 1.0) / (n as f64).sqrt();
            let ad = geom::unit([rng.normal(), rng.normal(), rng.normal()]);
            self.waves.push(Wave {
                k: geom::scale(dir, kk),
                phase: rng.uniform(0.0, std::f64::consts::TAU),
                amp: geom::scale(ad, a),
            });
        }
        self
    }

    /// Local (deformed, unscaled) coordinates of a body-frame point.
    #[inline]
    pub fn local(&self, b: Vec3) -> Vec3 {
        let mut l = geom::scale(
            geom::mul_t(&self.rot, geom::sub(b, self.center)),
            1.0 / self.scale,
        );
        let l0 = l;
        for w in &self.waves {
            let s = (crate::volume::dot(w.k, l0) + w.phase).sin();
            l = geom::add(l, geom::scale(w.amp, s));
        }
        l
    }

    /// Smallest normalised squared radius over the lobes (< 1 inside).
    #[inline]
    pub fn q(&self, l: Vec3) -> (f64, usize) {
        let mut best = (f64::INFINITY, 0);
        for (n, (c, r)) in self.lobes.iter().enumerate() {
            let d = [
                (l[0] - c[0]) / r[0],
                (l[1] - c[1]) / r[1],
                (l[2] - c[2]) / r[2],
            ];
            let q = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            if q < best.0 {
                best = (q, n);
            }
        }
        best
    }

    pub fn contains(&self, b: Vec3) -> bool {
        self.q(self.local(b)).0 < 1.0
    }

    /// Largest displacement of the deformation (local mm).
    fn max_amp(&self) -> f64 {
        self.waves.iter().map(|w| crate::volume::norm(w.amp)).sum()
    }

    /// Conservative bounding box in the body frame: each lobe's rotated ellipsoid
    /// box grown by the deformation amplitude.
    pub fn bbox(&self) -> (Vec3, Vec3) {
        let amp = self.max_amp();
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for (c, r) in &self.lobes {
            let cw = geom::add(
                self.center,
                geom::scale(geom::mul(&self.rot, *c), self.scale),
            );
            for a in 0..3 {
                let half = ((0..3)
                    .map(|j| (self.rot[a][j] * (r[j] + amp)).powi(2))
                    .sum::<f64>())
                .sqrt()
                    * self.scale;
                lo[a] = lo[a].min(cw[a] - half);
                hi[a] = hi[a].max(cw[a] + half);
            }
        }
        (lo, hi)
    }

    /// True when the undeformed point is so far outside every lobe that no
    /// deformation can bring it in.
    #[inline]
    fn surely_outside(&self, b: Vec3) -> bool {
        let l = geom::scale(
            geom::mul_t(&self.rot, geom::sub(b, self.center)),
            1.0 / self.scale,
        );
        let amp = self.max_amp();
        self.lobes.iter().all(|(c, r)| {
            let d = [
                (l[0] - c[0]) / (r[0] + amp),
                (l[1] - c[1]) / (r[1] + amp),
                (l[2] - c[2]) / (r[2] + amp),
            ];
            d[0] * d[0] + d[1] * d[1] + d[2] * d[2] > 1.0
        })
    }

    /// Volume (mL) of the unscaled local shape, by counting a 2 mm lattice.
    fn local_volume_ml(&self) -> f64 {
        let saved = self.scale;
        let mut b = self.clone();
        b.scale = 1.0;
        b.center = [0.0; 3];
        b.rot = geom::IDENTITY;
        let (lo, hi) = b.bbox();
        let step = 2.0;
        let mut n = 0usize;
        let mut z = lo[2];
        while z <= hi[2] {
            let mut y = lo[1];
            while y <= hi[1] {
                let mut x = lo[0];
                while x <= hi[0] {
                    if b.contains([x, y, z]) {
                        n += 1;
                    }
                    x += step;
                }
                y += step;
            }
            z += step;
        }
        let _ = saved;
        n as f64 * step * step * step / 1000.0
    }

    /// Sets the scale so that the shape's volume is `target_ml`.
    pub(crate) fn fit_volume(mut self, target_ml: f64) -> Self {
        let v = self.local_volume_ml();
        if v > 0.0 {
            self.scale = (target_ml / v).cbrt();
        }
        self
    }
}

#[derive(Debug, Clone)]
enum Fill {
    Uniform(Tissue),
    Kidney,
    /// Gas above (anterior to) this body-frame y, fluid below; wall of `wall` (q).
    Hollow {
        gas_y: f64,
        wall_q: f64,
        wall: Tissue,
    },
}

#[derive(Debug, Clone)]
enum Kind {
    Body,
    Blob(Blob, Fill),
    /// Polyline tube; radius interpolated from r0 to r1 along the polyline.
    Tube {
        pts: Vec<Vec3>,
        r0: f64,
        r1: f64,
        fill: TubeFill,
    },
    Spine {
        x: f64,
        y: f64,
        r: f64,
        period: f64,
        z0: f64,
    },
}

#[derive(Debug, Clone, Copy)]
enum TubeFill {
    Uniform(Tissue),
    Bone,
    Colon,
}

#[derive(Debug, Clone)]
struct Feature {
    kind: Kind,
    label: u8,
    clip_to_cavity: bool,
    /// Fills only free cavity space (visceral fat or other bowel): bowel is
    /// pushed aside by solid organs, never drawn through them. Without this the
    /// colon, painted after the kidneys, hollowed kidneys out to shells (7 of
    /// 18 patients checked kept under 77 % of a kidney's mass, the worst 5 %).
    displaced_by_organs: bool,
    lo: Vec3,
    hi: Vec3,
}

/// Body outline: ellipse anteriorly, squarer (4th-power) posteriorly.
#[derive(Debug, Clone)]
pub struct BodyShape {
    pub half_width_mm: f64,
    pub half_depth_mm: f64,
    pub skin_mm: f64,
    pub fat_mm: f64,
    pub muscle_mm: f64,
    phase: f64,
    /// (half width, half depth) at body z = -1000 .. 1000 mm in 1 mm steps.
    table: Vec<(f64, f64)>,
}

impl BodyShape {
    fn with_table(mut self) -> Self {
        self.table = (0..=2000)
            .map(|i| self.axes_exact(i as f64 - 1000.0))
            .collect();
        self
    }

    /// Half-axes at height z (table lookup, linear interpolation).
    #[inline]
    fn axes(&self, z: f64) -> (f64, f64) {
        let x = (z + 1000.0).clamp(0.0, 1999.999);
        let i = x as usize;
        let f = x - i as f64;
        match (self.table.get(i), self.table.get(i + 1)) {
            (Some(a), Some(b)) => (a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1)),
            _ => self.axes_exact(z),
        }
    }

    fn axes_exact(&self, z: f64) -> (f64, f64) {
        let m = 1.0 + 0.05 * (z / 140.0 + self.phase).sin();
        // The chest widens above the liver.
        let chest = if z > 150.0 {
            1.0 + ((z - 150.0) / 400.0).min(0.12)
        } else {
            1.0
        };
        (self.half_width_mm * m * chest, self.half_depth_mm * m)
    }

    #[inline]
    fn norm(x: f64, y: f64, a: f64, b: f64) -> f64 {
        let dx = x / a;
        let dy = y / b;
        if y < 0.0 {
            dx * dx + dy * dy
        } else {
            let (x2, y2) = (dx * dx, dy * dy);
            (x2 * x2 + y2 * y2).sqrt()
        }
    }

    fn layer(&self, b: Vec3) -> Tissue {
        let (a, d) = self.axes(b[2]);
        let (x, y) = (b[0], b[1]);
        if Self::norm(x, y, a, d) > 1.0 {
            return Tissue::Air;
        }
        let s = self.skin_mm;
        if Self::norm(x, y, a - s, d - s) > 1.0 {
            return Tissue::Skin;
        }
        let f = self.fat_mm;
        if Self::norm(x, y, a - s - f, d - s - 0.7 * f) > 1.0 {
            return Tissue::Fat;
        }
        let m = self.muscle_mm;
        if Self::norm(x, y, a - s - f - m, d - s - 0.7 * f - m) > 1.0 {
            return Tissue::Muscle;
        }
        Tissue::VisceralFat
    }

    pub(crate) fn in_cavity(&self, b: Vec3) -> bool {
        let (a, d) = self.axes(b[2]);
        let t = self.skin_mm + self.fat_mm + self.muscle_mm;
        Self::norm(
            b[0],
            b[1],
            a - t,
            d - 0.7 * self.fat_mm - self.skin_mm - self.muscle_mm,
        ) <= 1.0
    }

    /// Half-axes of the cavity at height z.
    fn cavity_axes(&self, z: f64) -> (f64, f64) {
        let (a, d) = self.axes(z);
        (
            a - self.skin_mm - self.fat_mm - self.muscle_mm,
            d - self.skin_mm - 0.7 * self.fat_mm - self.muscle_mm,
        )
    }
}

/// Options that change which organs exist.
#[derive(Debug, Clone, Default)]
pub struct AnatomyOptions {
    /// Label of a kidney to leave out (organs::KIDNEY_LEFT / KIDNEY_RIGHT).
    pub missing_kidney: Option<u8>,
    /// Number of liver lesions (label "tumour").
    pub lesions: usize,
}

/// One sampled patient's anatomy.
#[derive(Debug, Clone)]
pub struct Anatomy {
    pub body: BodyShape,
    features: Vec<Feature>,
    /// Organ labels present (subset of organs::ORGANS).
    pub organs_present: Vec<u8>,
    /// Target masses (g) drawn for the organs (the voxelised truth may differ a little).
    pub target_mass_g: Vec<(u8, f64)>,
    /// Body-frame z of the lowest kidney pole and of the liver dome.
    pub z_kidney_bottom: f64,
    pub z_liver_top: f64,
    /// Nominal total lesion volume (mL, spheres before deformation and clipping).
    pub tumour_volume_ml: f64,
    /// Indices into `features` of the liver lesions, in painting order.
    lesion_features: Vec<usize>,
    /// Real-data anatomy (`--anatomy real`): when set, it alone is rasterized
    /// (`features` is empty and `body` only carries the trunk size).
    pub real: Option<std::sync::Arc<super::real_anatomy::RealAnatomy>>,
}

fn blob_feature(blob: Blob, fill: Fill, label: u8, clip: bool) -> Feature {
    let (lo, hi) = blob.bbox();
    Feature {
        kind: Kind::Blob(blob, fill),
        label,
        clip_to_cavity: clip,
        displaced_by_organs: false,
        lo,
        hi,
    }
}

fn tube_feature(pts: Vec<Vec3>, r0: f64, r1: f64, fill: TubeFill, clip: bool) -> Feature {
    let r = r0.max(r1);
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in &pts {
        for a in 0..3 {
            lo[a] = lo[a].min(p[a] - r);
            hi[a] = hi[a].max(p[a] + r);
        }
    }
    Feature {
        kind: Kind::Tube { pts, r0, r1, fill },
        label: 0,
        clip_to_cavity: clip,
        displaced_by_organs: false,
        lo,
        hi,
    }
}

impl Feature {
    fn displaced_by_organs(mut self) -> Feature {
        self.displaced_by_organs = true;
        self
    }
}

/// What bowel may be drawn over: the cavity's fat and other bowel (loops and
/// colon overlap each other freely).
fn free_for_bowel(t: u8) -> bool {
    [
        Tissue::VisceralFat,
        Tissue::BowelWall,
        Tissue::GiFluid,
        Tissue::Gas,
        Tissue::Stool,
    ]
    .iter()
    .any(|&f| f as u8 == t)
}

const BIG: f64 = 1.0e5;

impl Anatomy {
    pub fn sample(rng: &mut Rng, opts: &AnatomyOptions) -> Anatomy {
        let mut r = rng.fork("anatomy");
        let body = BodyShape {
            half_width_mm: r.uniform(135.0, 180.0),
            half_depth_mm: r.uniform(95.0, 130.0),
            skin_mm: 2.0,
            fat_mm: r.uniform(8.0, 35.0),
            muscle_mm: r.uniform(7.0, 13.0),
            phase: r.uniform(0.0, std::f64::consts::TAU),
            table: Vec::new(),
        }
        .with_table();
        let mut f: Vec<Feature> = vec![Feature {
            kind: Kind::Body,
            label: 0,
            clip_to_cavity: false,
            displaced_by_organs: false,
            lo: [-BIG; 3],
            hi: [BIG; 3],
        }];
        let (cav_a, cav_d) = body.cavity_axes(0.0);
        let spine_y = cav_d - r.uniform(55.0, 70.0);
        let spine_r = r.uniform(18.0, 23.0);

        // Muscles behind and beside the spine.
        for side in [-1.0, 1.0] {
            f.push(tube_feature(
                vec![
                    [side * 40.0, spine_y + 38.0, -400.0],
                    [side * 40.0, spine_y + 38.0, 400.0],
                ],
                r.uniform(20.0, 27.0),
                r.uniform(20.0, 27.0),
                TubeFill::Uniform(Tissue::Muscle),
                false,
            ));
            f.push(tube_feature(
                vec![
                    [side * (spine_r + 12.0), spine_y - 5.0, 30.0],
                    [side * (spine_r + 30.0), spine_y - 25.0, -250.0],
                ],
                6.0,
                r.uniform(20.0, 28.0),
                TubeFill::Uniform(Tissue::Muscle),
                true,
            ));
        }

        // Lungs and heart above the diaphragm (seen by the LDCT and SPECT fields).
        for side in [-1.0, 1.0] {
            let b = Blob::new(
                [side * 0.55 * cav_a, 10.0, r.uniform(250.0, 275.0)],
                geom::IDENTITY,
                vec![([0.0; 3], [0.5 * cav_a, 0.9 * cav_d, 140.0])],
            )
            .deform(&mut r, 3, 150.0, 8.0);
            f.push(blob_feature(b, Fill::Uniform(Tissue::Lung), 0, true));
        }
        let heart = Blob::new(
            [15.0, -0.35 * cav_d, r.uniform(215.0, 235.0)],
            geom::rotation_deg(0.0, 0.0, r.uniform(20.0, 40.0)),
            vec![([0.0; 3], [65.0, 50.0, 55.0])],
        )
        .deform(&mut r, 3, 120.0, 6.0);
        f.push(blob_feature(heart, Fill::Uniform(Tissue::Heart), 0, true));

        let mut target = Vec::new();
        let mut present = Vec::new();

        // Liver: right lobe, left lobe across the midline, caudate. Mass 1.0-2.5 kg.
        let liver_g = r.uniform(1000.0, 2500.0);
        let liver = Blob::new(
            [-0.42 * cav_a, -5.0, r.uniform(85.0, 105.0)],
            geom::rotation_deg(
                r.uniform(-6.0, 6.0),
                r.uniform(-6.0, 6.0),
                r.uniform(-8.0, 8.0),
            ),
            vec![
                ([0.0; 3], [0.62 * cav_a, 0.85 * cav_d, 80.0]),
                (
                    [0.55 * cav_a, -0.35 * cav_d, 20.0],
                    [0.5 * cav_a, 0.4 * cav_d, 45.0],
                ),
                ([0.25 * cav_a, 0.25 * cav_d, 5.0], [25.0, 25.0, 35.0]),
            ],
        )
        .deform(&mut r, 5, 160.0, 12.0)
        .fit_volume(liver_g / organs::default_density_g_per_ml(organs::LIVER));
        let (_, liver_hi) = liver.bbox();
        let z_liver_top = liver.center[2] + 80.0 * liver.scale;
        let _ = liver_hi;
        target.push((organs::LIVER, liver_g));
        present.push(organs::LIVER);
        let liver_for_lesions = liver.clone();
        f.push(blob_feature(
            liver,
            Fill::Uniform(Tissue::Liver),
            organs::LIVER,
            true,
        ));

        // Gallbladder under the liver.
        let gb = Blob::new(
            [-0.25 * cav_a, -0.45 * cav_d, r.uniform(30.0, 50.0)],
            geom::rotation_deg(r.uniform(-25.0, 25.0), 0.0, 0.0),
            vec![([0.0; 3], [14.0, 14.0, 32.0])],
        )
        .deform(&mut r, 2, 60.0, 3.0);
        if r.chance(0.8) {
            f.push(blob_feature(
                gb,
                Fill::Uniform(Tissue::Gallbladder),
                0,
                true,
            ));
        }

        // Spleen, patient left and posterior. 100-250 g.
        let spleen_g = r.uniform(100.0, 250.0);
        let spleen = Blob::new(
            [0.68 * cav_a, 0.4 * cav_d, r.uniform(60.0, 85.0)],
            geom::rotation_deg(r.uniform(-10.0, 10.0), 0.0, r.uniform(25.0, 45.0)),
            vec![([0.0; 3], [25.0, 55.0, 55.0])],
        )
        .deform(&mut r, 4, 90.0, 6.0)
        .fit_volume(spleen_g / organs::default_density_g_per_ml(organs::SPLEEN));
        target.push((organs::SPLEEN, spleen_g));
        present.push(organs::SPLEEN);
        f.push(blob_feature(
            spleen,
            Fill::Uniform(Tissue::Spleen),
            organs::SPLEEN,
            true,
        ));

        // Stomach, left upper quadrant, air-fluid level (patient supine: gas anterior).
        let st_c = [0.3 * cav_a, -0.45 * cav_d, r.uniform(80.0, 100.0)];
        let stomach = Blob::new(
            st_c,
            geom::rotation_deg(r.uniform(-10.0, 10.0), 0.0, r.uniform(15.0, 40.0)),
            vec![
                ([0.0; 3], [45.0, 30.0, 50.0]),
                ([-30.0, 10.0, -35.0], [30.0, 20.0, 25.0]),
            ],
        )
        .deform(&mut r, 3, 100.0, 5.0);
        f.push(blob_feature(
            stomach,
            Fill::Hollow {
                gas_y: st_c[1] - r.uniform(5.0, 25.0),
                wall_q: 0.8,
                wall: Tissue::StomachWall,
            },
            0,
            true,
        ));

        // Pancreas across the spine, anterior to the left kidney.
        f.push(tube_feature(
            vec![
                [-30.0, spine_y - 55.0, r.uniform(10.0, 25.0)],
                [20.0, spine_y - 60.0, r.uniform(25.0, 35.0)],
                [75.0, spine_y - 30.0, r.uniform(40.0, 55.0)],
            ],
            r.uniform(10.0, 14.0),
            r.uniform(7.0, 10.0),
            TubeFill::Uniform(Tissue::Pancreas),
            true,
        ));

        // Kidneys: lateral to psoas, hilum facing antero-medially, 90-260 g.
        let base_kidney_g = r.uniform(110.0, 200.0);
        let mut z_kidney_bottom = f64::INFINITY;
        for (label, side) in [(organs::KIDNEY_RIGHT, -1.0), (organs::KIDNEY_LEFT, 1.0)] {
            if opts.missing_kidney == Some(label) {
                continue;
            }
            let mut g = base_kidney_g * r.uniform(0.9, 1.1);
            if opts.missing_kidney.is_some() {
                g *= 1.3; // compensatory hypertrophy of the single kidney
            }
            let g = g.clamp(90.0, 260.0);
            // Right kidney sits lower (liver above it).
            let zc = if side < 0.0 {
                r.uniform(-40.0, -20.0)
            } else {
                r.uniform(-20.0, 0.0)
            };
            let c = [
                side * (spine_r + r.uniform(45.0, 60.0)),
                spine_y + r.uniform(-5.0, 8.0),
                zc,
            ];
            let yaw = r.uniform(20.0, 40.0);
            let tilt = r.uniform(5.0, 18.0);
            // Local +x points medially (towards the hilum).
            let base = if side < 0.0 {
                geom::IDENTITY
            } else {
                geom::rotation_deg(0.0, 0.0, 180.0)
            };
            let rot = geom::matmul(&geom::rotation_deg(0.0, -side * tilt, side * yaw), &base);
            let kid = Blob::new(c, rot, vec![([0.0; 3], [28.0, 20.0, 55.0])])
                .deform(&mut r, 3, 120.0, 3.0)
                .fit_volume(g / organs::default_density_g_per_ml(label));
            z_kidney_bottom = z_kidney_bottom.min(zc - 58.0 * kid.scale);
            target.push((label, g));
            present.push(label);
            // Renal vessels from the hilum to the aorta / vena cava.
            let hilum = geom::add(c, geom::mul(&rot, [30.0 * kid.scale, 0.0, 0.0]));
            let vx = if side < 0.0 { -22.0 } else { 12.0 };
            f.push(tube_feature(
                vec![hilum, [vx, spine_y - spine_r - 14.0, zc + 10.0]],
                4.0,
                5.0,
                TubeFill::Uniform(if side < 0.0 {
                    Tissue::VenaCava
                } else {
                    Tissue::Aorta
                }),
                true,
            ));
            f.push(blob_feature(kid, Fill::Kidney, label, true));
        }
        if !z_kidney_bottom.is_finite() {
            z_kidney_bottom = -80.0;
        }

        // Spine and ribs.
        f.push(Feature {
            kind: Kind::Spine {
                x: 0.0,
                y: spine_y,
                r: spine_r,
                period: r.uniform(30.0, 36.0),
                z0: r.uniform(0.0, 36.0),
            },
            label: 0,
            clip_to_cavity: false,
            displaced_by_organs: false,
            lo: [-60.0, spine_y - spine_r - 2.0, -BIG],
            hi: [60.0, spine_y + spine_r + 60.0, BIG],
        });
        let rib_step = r.uniform(30.0, 38.0);
        let z12 = r.uniform(-5.0, 25.0);
        for n in 0..9 {
            let z0 = z12 + n as f64 * rib_step;
            // 12th and 11th ribs are short (floating).
            let arc = match n {
                0 => 75.0,
                1 => 110.0,
                _ => 155.0,
            };
            for side in [-1.0, 1.0] {
                let mut pts = Vec::new();
                for s in 0..=12 {
                    let th = (20.0 + (arc - 20.0) * s as f64 / 12.0).to_radians();
                    let z = z0 - 55.0 * (th / std::f64::consts::PI);
                    let (a, d) = body.cavity_axes(z);
                    let ra = a + 0.5 * body.muscle_mm;
                    let rd = d + 0.5 * body.muscle_mm;
                    pts.push([side * ra * th.sin(), rd * th.cos(), z]);
                }
                // One feature per segment: small boxes, one distance per voxel.
                for seg in pts.windows(2) {
                    f.push(tube_feature(seg.to_vec(), 5.0, 5.0, TubeFill::Bone, false));
                }
            }
        }

        // Bowel loops in the lower abdomen, colon around them.
        let nb = 18 + r.below(14) as usize;
        for _ in 0..nb {
            let c = [
                r.uniform(-0.7, 0.7) * cav_a,
                r.uniform(-0.9, 0.1) * cav_d,
                r.uniform(-170.0, 0.0),
            ];
            let rad = r.uniform(10.0, 18.0);
            let blob = Blob::new(
                c,
                geom::IDENTITY,
                vec![([0.0; 3], [rad, rad, rad * r.uniform(1.0, 2.0)])],
            )
            .deform(&mut r, 2, 40.0, 2.0);
            let gas_y = match r.below(3) {
                0 => -BIG,
                1 => c[1] - rad * r.uniform(-0.2, 0.6),
                _ => BIG,
            };
            f.push(
                blob_feature(
                    blob,
                    Fill::Hollow {
                        gas_y,
                        wall_q: 0.72,
                        wall: Tissue::BowelWall,
                    },
                    0,
                    true,
                )
                .displaced_by_organs(),
            );
        }
        let colon_r = r.uniform(18.0, 26.0);
        let zt = r.uniform(0.0, 30.0);
        let colon = [
            [-0.75 * cav_a, 0.0, -170.0],
            [-0.78 * cav_a, -0.1 * cav_d, zt - 10.0],
            [-0.3 * cav_a, -0.75 * cav_d, zt],
            [0.35 * cav_a, -0.7 * cav_d, zt + 10.0],
            [0.8 * cav_a, 0.05 * cav_d, zt - 5.0],
            [0.8 * cav_a, 0.1 * cav_d, -170.0],
        ];
        let nseg = colon.len() - 1;
        for (s, seg) in colon.windows(2).enumerate() {
            let ra = colon_r * (1.0 - 0.15 * s as f64 / nseg as f64);
            let rb = colon_r * (1.0 - 0.15 * (s + 1) as f64 / nseg as f64);
            f.push(tube_feature(seg.to_vec(), ra, rb, TubeFill::Colon, true).displaced_by_organs());
        }

        // Great vessels: aorta left-anterior of the spine, vena cava on the right.
        let ay = spine_y - spine_r - r.uniform(10.0, 14.0);
        f.push(tube_feature(
            vec![
                [8.0, ay, -250.0],
                [10.0, ay, 150.0],
                [15.0, spine_y - 5.0, 400.0],
            ],
            r.uniform(10.0, 13.0),
            r.uniform(11.0, 14.0),
            TubeFill::Uniform(Tissue::Aorta),
            false,
        ));
        f.push(tube_feature(
            vec![
                [-24.0, ay, -250.0],
                [-26.0, ay - 5.0, 120.0],
                [-20.0, ay - 15.0, 200.0],
            ],
            r.uniform(10.0, 13.0),
            r.uniform(11.0, 14.0),
            TubeFill::Uniform(Tissue::VenaCava),
            false,
        ));

        // Liver lesions.
        let mut tumour_volume_ml = 0.0;
        let mut lesion_features = Vec::new();
        if opts.lesions > 0 {
            let mut placed = 0;
            let (lo, hi) = liver_for_lesions.bbox();
            let mut tries = 0;
            while placed < opts.lesions && tries < 2000 {
                tries += 1;
                let p = [
                    r.uniform(lo[0], hi[0]),
                    r.uniform(lo[1], hi[1]),
                    r.uniform(lo[2], hi[2]),
                ];
                let rad = r.uniform(8.0, 22.0);
                // Centre well inside the liver and inside the cavity.
                let q = liver_for_lesions.q(liver_for_lesions.local(p)).0;
                if q > 0.5 || !body.in_cavity(p) {
                    continue;
                }
                let b = Blob::new(p, geom::IDENTITY, vec![([0.0; 3], [rad, rad, rad])])
                    .deform(&mut r, 3, 30.0, 2.0);
                lesion_features.push(f.len());
                f.push(blob_feature(
                    b,
                    Fill::Uniform(Tissue::Tumour),
                    organs::TUMOUR,
                    true,
                ));
                tumour_volume_ml += 4.0 / 3.0 * std::f64::consts::PI * rad.powi(3) / 1000.0;
                placed += 1;
            }
            if placed > 0 {
                present.push(organs::TUMOUR);
            }
        }
        present.sort_unstable();
        Anatomy {
            body,
            features: f,
            organs_present: present,
            target_mass_g: target,
            z_kidney_bottom,
            z_liver_top,
            tumour_volume_ml,
            lesion_features,
            real: None,
        }
    }

    /// Wraps a real-data anatomy behind the same interface (fields the patient
    /// set-up reads: organs, target masses, z range, trunk size).
    pub(crate) fn from_real(real: super::real_anatomy::RealAnatomy) -> Anatomy {
        let body = BodyShape {
            half_width_mm: real.half_width_mm,
            half_depth_mm: real.half_depth_mm,
            skin_mm: 2.0,
            fat_mm: 0.0,
            muscle_mm: 0.0,
            phase: 0.0,
            table: Vec::new(),
        };
        Anatomy {
            body,
            features: Vec::new(),
            organs_present: real.organs_present.clone(),
            target_mass_g: real.target_mass_g.clone(),
            z_kidney_bottom: real.z_kidney_bottom,
            z_liver_top: real.z_liver_top,
            tumour_volume_ml: real.tumour_volume_ml,
            lesion_features: Vec::new(),
            real: Some(std::sync::Arc::new(real)),
        }
    }

    /// Number of liver lesions placed (all labelled "tumour").
    pub fn lesion_count(&self) -> usize {
        match &self.real {
            Some(real) => real.lesion_count(),
            None => self.lesion_features.len(),
        }
    }

    /// The same anatomy with every liver lesion's volume multiplied by
    /// `volume_factor` (each scaled about its own centre; the liver fills what
    /// they leave). Everything else is unchanged, voxel for voxel.
    pub fn with_lesions_scaled(&self, volume_factor: f64) -> Anatomy {
        let mut a = self.clone();
        a.tumour_volume_ml *= volume_factor;
        if let Some(real) = &self.real {
            let r = real.with_lesions_scaled(volume_factor);
            a.tumour_volume_ml = r.tumour_volume_ml;
            a.target_mass_g = r.target_mass_g.clone();
            a.real = Some(std::sync::Arc::new(r));
            return a;
        }
        let s = volume_factor.cbrt();
        for &i in &self.lesion_features {
            let feat = &mut a.features[i];
            if let Kind::Blob(b, _) = &mut feat.kind {
                // The deformation lives in local (unscaled) units: the shape
                // scales as a whole and its volume by s^3.
                b.scale *= s;
                let (lo, hi) = b.bbox();
                feat.lo = lo;
                feat.hi = hi;
            }
        }
        a
    }

    /// Which lesion (index in painting order) a body-frame point labelled
    /// "tumour" belongs to: the last one painted there, as in `rasterize`.
    pub(crate) fn lesion_at(&self, b: Vec3) -> Option<usize> {
        if let Some(real) = &self.real {
            return real.lesion_at(b);
        }
        self.lesion_features.iter().rposition(|&i| {
            let feat = &self.features[i];
            self.classify(feat, b).is_some() && (!feat.clip_to_cavity || self.body.in_cavity(b))
        })
    }

    fn classify(&self, feat: &Feature, b: Vec3) -> Option<Tissue> {
        match &feat.kind {
            Kind::Body => Some(self.body.layer(b)),
            Kind::Blob(blob, fill) => {
                if blob.surely_outside(b) {
                    return None;
                }
                let l = blob.local(b);
                let (q, lobe) = blob.q(l);
                if q >= 1.0 {
                    return None;
                }
                match fill {
                    Fill::Uniform(t) => Some(*t),
                    Fill::Kidney => {
                        let (_, rr) = blob.lobes[lobe];
                        let n = [l[0] / rr[0], l[1] / rr[1], l[2] / rr[2]];
                        let sinus = sq((n[0] - 0.55) / 0.55) + sq(n[1] / 0.42) + sq(n[2] / 0.45);
                        if sinus < 1.0 {
                            if n[0] > 0.78 {
                                return None; // hilum opening
                            }
                            let pelvis = sq((n[0] - 0.6) / 0.4) + sq(n[1] / 0.25) + sq(n[2] / 0.3);
                            return Some(if pelvis < 1.0 {
                                Tissue::RenalPelvis
                            } else {
                                Tissue::RenalSinusFat
                            });
                        }
                        let ang = n[2].atan2(n[1]);
                        let edge = 0.55 + 0.12 * (5.0 * ang).cos();
                        Some(if q < edge {
                            Tissue::KidneyMedulla
                        } else {
                            Tissue::KidneyCortex
                        })
                    }
                    Fill::Hollow {
                        gas_y,
                        wall_q,
                        wall,
                    } => Some(if q > *wall_q {
                        *wall
                    } else if b[1] < *gas_y {
                        Tissue::Gas
                    } else {
                        Tissue::GiFluid
                    }),
                }
            }
            Kind::Tube { pts, r0, r1, fill } => {
                let nseg = pts.len() - 1;
                let mut best = (f64::INFINITY, 0.0);
                for s in 0..nseg {
                    let (d2, t) = geom::segment_dist2(b, pts[s], pts[s + 1]);
                    if d2 < best.0 {
                        best = (d2, (s as f64 + t) / nseg as f64);
                    }
                }
                let rad = r0 + (r1 - r0) * best.1;
                if best.0 >= rad * rad {
                    return None;
                }
                let d = best.0.sqrt();
                Some(match fill {
                    TubeFill::Uniform(t) => *t,
                    TubeFill::Bone => {
                        if d > rad - 1.5 {
                            Tissue::BoneCortical
                        } else {
                            Tissue::BoneCancellous
                        }
                    }
                    TubeFill::Colon => {
                        if d > rad - 2.5 {
                            Tissue::BowelWall
                        } else {
                            let m = (0.31 * b[0]).sin() * (0.27 * b[1] + 1.0).sin()
                                + (0.23 * b[2] + 2.0).sin() * (0.19 * b[0] - 0.5).cos();
                            if m > 0.35 {
                                Tissue::Gas
                            } else {
                                Tissue::Stool
                            }
                        }
                    }
                })
            }
            Kind::Spine {
                x,
                y,
                r,
                period,
                z0,
            } => {
                let dx = b[0] - x;
                let dy = b[1] - y;
                let ph = (b[2] - z0).rem_euclid(*period);
                let in_disc = ph < 7.0;
                let d = (dx * dx + dy * dy).sqrt();
                if d < *r {
                    return Some(if in_disc {
                        Tissue::Disc
                    } else if d > r - 2.5 {
                        Tissue::BoneCortical
                    } else {
                        Tissue::BoneCancellous
                    });
                }
                let cy = y + r + 10.0;
                let dc = (dx * dx + sq(b[1] - cy)).sqrt();
                if dc < 8.5 {
                    return Some(Tissue::Csf);
                }
                if in_disc {
                    return None;
                }
                if dc < 14.0 {
                    return Some(Tissue::BoneCortical);
                }
                let (d2, _) = geom::segment_dist2(b, [*x, cy + 10.0, b[2]], [*x, cy + 38.0, b[2]]);
                if d2 < 25.0 {
                    return Some(Tissue::BoneCortical);
                }
                if ph < 7.0 + 14.0 {
                    for side in [-1.0, 1.0] {
                        let (d2, _) = geom::segment_dist2(
                            b,
                            [x + side * 10.0, cy - 2.0, b[2]],
                            [x + side * 42.0, cy - 8.0, b[2]],
                        );
                        if d2 < 25.0 {
                            return Some(Tissue::BoneCortical);
                        }
                    }
                }
                None
            }
        }
    }

    /// Paints the anatomy, placed in the scanner by `pose`, onto `geom`'s voxel
    /// centres: returns (tissue classes, organ labels), both in voxel order.
    pub(crate) fn rasterize(&self, grid: &Geometry, pose: &Pose) -> (Vec<u8>, Vec<u8>) {
        if let Some(real) = &self.real {
            return real.rasterize(grid, pose);
        }
        let n = grid.len();
        let mut tissue = vec![Tissue::Air as u8; n];
        let mut label = vec![0u8; n];
        let [nx, ny, nz] = grid.dims;
        for feat in &self.features {
            // Index-space bounding box of the feature's body-frame box.
            let (ilo, ihi) = if matches!(feat.kind, Kind::Body) {
                ([0usize; 3], [nx, ny, nz])
            } else {
                let mut lo = [f64::INFINITY; 3];
                let mut hi = [f64::NEG_INFINITY; 3];
                for c in 0..8 {
                    let p = [
                        if c & 1 == 0 { feat.lo[0] } else { feat.hi[0] },
                        if c & 2 == 0 { feat.lo[1] } else { feat.hi[1] },
                        if c & 4 == 0 { feat.lo[2] } else { feat.hi[2] },
                    ];
                    let idx = grid.patient_to_index(pose.to_world(p));
                    for a in 0..3 {
                        lo[a] = lo[a].min(idx[a]);
                        hi[a] = hi[a].max(idx[a]);
                    }
                }
                let mut ilo = [0usize; 3];
                let mut ihi = [0usize; 3];
                for a in 0..3 {
                    let d = grid.dims[a] as f64;
                    ilo[a] = lo[a].floor().clamp(0.0, d) as usize;
                    ihi[a] = (hi[a].ceil() + 1.0).clamp(0.0, d) as usize;
                }
                (ilo, ihi)
            };
            if (0..3).any(|a| ilo[a] >= ihi[a]) {
                continue;
            }
            for k in ilo[2]..ihi[2] {
                for j in ilo[1]..ihi[1] {
                    let b0 =
                        pose.to_body(grid.index_to_patient([ilo[0] as f64, j as f64, k as f64]));
                    let b1 = pose.to_body(grid.index_to_patient([
                        ilo[0] as f64 + 1.0,
                        j as f64,
                        k as f64,
                    ]));
                    let db = geom::sub(b1, b0);
                    let row = grid.linear(0, j, k);
                    for i in ilo[0]..ihi[0] {
                        let s = (i - ilo[0]) as f64;
                        let b = [b0[0] + s * db[0], b0[1] + s * db[1], b0[2] + s * db[2]];
                        if let Some(t) = self.classify(feat, b) {
                            if feat.clip_to_cavity && !self.body.in_cavity(b) {
                                continue;
                            }
                            if feat.displaced_by_organs && !free_for_bowel(tissue[row + i]) {
                                continue;
                            }
                            tissue[row + i] = t as u8;
                            label[row + i] = feat.label;
                        }
                    }
                }
            }
        }
        (tissue, label)
    }
}

#[inline]
fn sq(x: f64) -> f64 {
    x * x
}
