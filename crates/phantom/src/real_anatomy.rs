//! Phantom anatomy built from real label maps (`--anatomy real`).
//!
//! Per patient: one WORD (or AMOS) abdominal label map gives the organ layout
//! (liver, spleen, kidneys, stomach, pancreas, duodenum, colon, small bowel,
//! gallbladder, bladder, ...); one ICRP-110 reference phantom (AM or AF) gives the
//! body around it (skin, subcutaneous fat, muscle, bones, lungs, heart, arms),
//! scaled per axis so that its liver + kidney bounding box matches the WORD
//! organs' box. ICRP's own abdominal organs become visceral fat, then the WORD
//! organs are painted in. Kidneys get cortex, medulla, pelvis and sinus fat from
//! the depth below the kidney surface and the side facing the hilum (the label
//! maps have none) and a renal vein, artery and ureter leaving the hilum; hollow
//! organs get a wall; the liver may get spherical lesions.
//! Organs whose real mass lies outside the geometric generator's ranges (liver
//! 1.0-2.5 kg, kidneys 90-260 g, spleen 100-250 g) are rescaled about their
//! centroid into range.
//!
//! All this is composed once per patient on a "canonical" body-frame grid (about
//! 1 x 1 x 2 mm for full-size CTs). A random smooth deformation (affine: scale
//! 0.9-1.1, rotation of a few degrees; plus an elastic displacement of a few mm,
//! smooth over ~15-30 cm) then maps the body frame onto the canonical grid:
//! [`RealAnatomy::rasterize`] sends each target voxel centre through the pose and
//! that map and takes the nearest canonical voxel. Every grid (diagnostic CT,
//! LDCT, SPECT) therefore samples the same continuous anatomy, and the organ labels
//! of each grid are its exact truth.
//!
//! Truth: the kidney label covers the whole kidney (cortex, medulla, pelvis, sinus
//! fat), as the geometric generator's does; the project has no renal tumour label
//! (label 5 is the liver lesion).

use super::geom::{self, Mat3, Pose};
use super::realdata::{self, word, DataPaths};
use super::rng::Rng;
use super::tissue::Tissue;
use crate::error::{Error, Result};
use crate::organs;
use crate::volume::{Geometry, Vec3, Volume};
use rayon::prelude::*;

/// Options for one real-anatomy patient.
#[derive(Debug, Clone)]
pub struct RealOptions {
    pub data: DataPaths,
    /// Canonical grid voxel (mm): finer costs memory and build time.
    pub voxel_mm: [f64; 3],
    pub missing_kidney: Option<u8>,
    pub lesions: usize,
}

/// One patient's real anatomy (see the module comment).
#[derive(Clone)]
pub struct RealAnatomy {
    /// Which sources were used, e.g. "WORD word_0016 + ICRP-110 AM".
    pub sources: String,
    /// "M" or "F", from the ICRP phantom used.
    pub sex: String,
    pub organs_present: Vec<u8>,
    pub target_mass_g: Vec<(u8, f64)>,
    pub z_kidney_bottom: f64,
    pub z_liver_top: f64,
    /// Half width / depth (mm) of the trunk (arms excluded) at kidney level.
    pub half_width_mm: f64,
    pub half_depth_mm: f64,
    pub tumour_volume_ml: f64,
    grid: Geometry,
    tissue: Vec<u8>,
    label: Vec<u8>,
    /// Liver lesions in painting order: centre (canonical voxel) and radius (mm).
    lesions: Vec<([usize; 3], f64)>,
    /// Canonical voxels the lesions cover, with the tissue class they had
    /// before (so that a shrunken lesion gives them back to the liver).
    lesion_under: Vec<(usize, u8)>,
    /// Body frame -> canonical: x = inv_lin * b + warp(b).
    inv_lin: Mat3,
    warp: Warp,
}

impl std::fmt::Debug for RealAnatomy {
    // The canonical volumes are tens of MB: show what they are, not their bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealAnatomy")
            .field("sources", &self.sources)
            .field("sex", &self.sex)
            .field("target_mass_g", &self.target_mass_g)
            .field("canonical_dims", &self.grid.dims)
            .finish_non_exhaustive()
    }
}

/// Smooth displacement field (mm) on a coarse body-frame grid, trilinear between
/// knots.
#[derive(Debug, Clone)]
struct Warp {
    origin: Vec3,
    step: f64,
    dims: [usize; 3],
    d: Vec<[f32; 3]>,
}

impl Warp {
    fn new(rng: &mut Rng, lo: Vec3, hi: Vec3, amp_mm: f64) -> Warp {
        let step = 20.0;
        let dims = [0, 1, 2].map(|a| (((hi[a] - lo[a]) / step).ceil() as usize).max(1) + 2);
        // Four plane waves with random directions and 15-30 cm wavelengths: smooth,
        // and with gradients well below 1 (2 pi amp / wavelength < 0.5), so the map
        // never folds.
        let waves: Vec<(Vec3, Vec3, f64)> = (0..4)
            .map(|_| {
                let k = geom::unit([rng.normal(), rng.normal(), rng.normal()]);
                let lam = rng.uniform(150.0, 300.0);
                let dir = geom::unit([rng.normal(), rng.normal(), rng.normal()]);
                (
                    geom::scale(k, std::f64::consts::TAU / lam),
                    geom::scale(dir, amp_mm * 0.5 * rng.uniform(0.5, 1.0)),
                    rng.uniform(0.0, std::f64::consts::TAU),
                )
            })
            .collect();
        let mut d = Vec::with_capacity(dims[0] * dims[1] * dims[2]);
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let p = [
                        lo[0] + i as f64 * step,
                        lo[1] + j as f64 * step,
                        lo[2] + k as f64 * step,
                    ];
                    let mut u = [0.0f64; 3];
                    for (kv, a, ph) in &waves {
                        let s = (crate::volume::dot(*kv, p) + ph).sin();
                        for c in 0..3 {
                            u[c] += a[c] * s;
                        }
                    }
                    d.push([u[0] as f32, u[1] as f32, u[2] as f32]);
                }
            }
        }
        Warp {
            origin: lo,
            step,
            dims,
            d,
        }
    }

    #[inline]
    fn at(&self, b: Vec3) -> Vec3 {
        let mut i0 = [0usize; 3];
        let mut f = [0f32; 3];
        for a in 0..3 {
            let t = ((b[a] - self.origin[a]) / self.step).clamp(0.0, (self.dims[a] - 1) as f64);
            let i = (t as usize).min(self.dims[a] - 2);
            i0[a] = i;
            f[a] = (t - i as f64) as f32;
        }
        let [nx, ny, _] = self.dims;
        let mut u = [0f32; 3];
        for c in 0..8 {
            let (di, dj, dk) = (c & 1, (c >> 1) & 1, (c >> 2) & 1);
            let w = (if di == 1 { f[0] } else { 1.0 - f[0] })
                * (if dj == 1 { f[1] } else { 1.0 - f[1] })
                * (if dk == 1 { f[2] } else { 1.0 - f[2] });
            let v = &self.d[(i0[0] + di) + nx * ((i0[1] + dj) + ny * (i0[2] + dk))];
            for a in 0..3 {
                u[a] += w * v[a];
            }
        }
        [u[0] as f64, u[1] as f64, u[2] as f64]
    }
}

/// ICRP-110 organ ID (AM_organs.dat / AF_organs.dat) to tissue class. `None`: an
/// abdominal organ that the WORD layout replaces (becomes visceral fat).
fn icrp_tissue(id: u8) -> Option<Tissue> {
    use Tissue::*;
    Some(match id {
        0 => Air,
        // Adrenals, GI tract, kidneys, liver, pancreas, spleen, ureters, bladder.
        1 | 2 | 70..=86 | 89..=95 | 113 | 127 | 135..=138 => return None,
        // Bones: cortical IDs alternate with spongiosa / medullary cavity.
        13 | 16 | 19 | 22 | 24 | 26 | 28 | 31 | 34 | 37 | 39 | 41 | 43 | 45 | 47 | 49 | 51 | 53
        | 55 | 128 => BoneCortical,
        14 | 17 | 20 | 23 | 25 | 27 | 29 | 32 | 35 | 38 | 40 | 42 | 44 | 46 | 48 | 50 | 52 | 54
        | 56 => BoneCancellous,
        // Medullary cavities hold yellow (fatty) marrow.
        15 | 18 | 21 | 30 | 33 | 36 => Fat,
        57..=60 => Disc,
        87 | 88 => Heart,
        9..=12 => Aorta,
        96..=99 => Lung,
        3 | 4 | 7 | 8 | 140 => Gas,
        62 | 64 | 116..=119 => Fat,
        122..=125 => Skin,
        126 | 61 => Csf,
        110 => StomachWall,
        _ => Muscle,
    })
}

/// ICRP IDs of the arms (excluded from the trunk width).
fn icrp_is_arm(id: u8) -> bool {
    matches!(id, 11 | 13..=23 | 59 | 104 | 108 | 118 | 124)
}

/// Per-label statistics of a map in patient (LPS) coordinates.
#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    sum: Vec3,
    lo: Vec3,
    hi: Vec3,
}

impl Stats {
    fn new() -> Self {
        Stats {
            n: 0,
            sum: [0.0; 3],
            lo: [f64::INFINITY; 3],
            hi: [f64::NEG_INFINITY; 3],
        }
    }
    fn add(&mut self, p: Vec3) {
        self.n += 1;
        for a in 0..3 {
            self.sum[a] += p[a];
            self.lo[a] = self.lo[a].min(p[a]);
            self.hi[a] = self.hi[a].max(p[a]);
        }
    }
    fn merge(&mut self, o: &Stats) {
        self.n += o.n;
        for a in 0..3 {
            self.sum[a] += o.sum[a];
            self.lo[a] = self.lo[a].min(o.lo[a]);
            self.hi[a] = self.hi[a].max(o.hi[a]);
        }
    }
    fn centroid(&self) -> Vec3 {
        let n = self.n.max(1) as f64;
        [self.sum[0] / n, self.sum[1] / n, self.sum[2] / n]
    }
}

/// Statistics of every label value 0..=255 of a map (0 unused), in LPS mm.
fn label_stats(v: &Volume<u8>) -> Vec<Stats> {
    let [nx, ny, nz] = v.geom.dims;
    (0..nz)
        .into_par_iter()
        .map(|k| {
            let mut s = vec![Stats::new(); 256];
            for j in 0..ny {
                for i in 0..nx {
                    let l = v.data[i + nx * (j + ny * k)];
                    if l != 0 {
                        s[l as usize].add(v.geom.index_to_patient([i as f64, j as f64, k as f64]));
                    }
                }
            }
            s
        })
        .reduce(
            || vec![Stats::new(); 256],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    x.merge(y);
                }
                a
            },
        )
}

/// Nearest voxel of `v` at patient point `p`, if inside.
#[inline]
fn nearest(v: &Volume<u8>, p: Vec3) -> Option<u8> {
    let idx = v.geom.patient_to_index(p);
    let mut ijk = [0usize; 3];
    for a in 0..3 {
        let r = idx[a].round();
        if !(r >= 0.0 && r < v.geom.dims[a] as f64) {
            return None;
        }
        ijk[a] = r as usize;
    }
    Some(v.get(ijk[0], ijk[1], ijk[2]))
}

/// The organ layout map, with labels in WORD's numbering, and its name.
fn load_layout(rng: &mut Rng, data: &DataPaths) -> Result<(Volume<u8>, String)> {
    let zip = data.word_zip();
    let entries = realdata::zip_label_entries(&zip)?;
    let amos = data.amos();
    let n_amos = usize::from(amos.is_file());
    let n = entries.len() + n_amos;
    if n == 0 {
        return Err(Error::input(format!(
            "{}: no label maps in the archive",
            zip.display()
        )));
    }
    let pick = rng.below(n as u64) as usize;
    if pick < entries.len() {
        let e = &entries[pick];
        let v = realdata::read_zip_label_map(&zip, e)?;
        let name = e
            .rsplit('/')
            .next()
            .unwrap_or(e)
            .trim_end_matches(".nii.gz");
        Ok((v, format!("WORD {name}")))
    } else {
        let v = realdata::read_label_map(&amos)?;
        Ok((v.map(realdata::amos_to_word), "AMOS amos_0013".into()))
    }
}

const MASS_RANGE_G: [(u8, f64, f64); 4] = [
    (organs::LIVER, 1000.0, 2500.0),
    (organs::KIDNEY_LEFT, 90.0, 260.0),
    (organs::KIDNEY_RIGHT, 90.0, 260.0),
    (organs::SPLEEN, 100.0, 250.0),
];

impl RealAnatomy {
    /// Builds one patient's anatomy; `rng` decides every random choice.
    pub fn build(rng: &mut Rng, opts: &RealOptions) -> Result<RealAnatomy> {
        opts.data.check()?;
        let mut r = rng.fork("real-anatomy");
        let t0 = std::time::Instant::now();
        let (layout, layout_name) = load_layout(&mut r, &opts.data)?;
        tracing::debug!("{layout_name}: read in {:.1} s", t0.elapsed().as_secs_f64());
        let st = label_stats(&layout);
        let what = |m: &str| Error::input(format!("{layout_name}: {m}"));
        for l in [word::LIVER, word::KIDNEY_LEFT, word::KIDNEY_RIGHT] {
            if st[l as usize].n < 100 {
                return Err(what(&format!("label {l} (liver / kidney) missing")));
            }
        }
        // Trust the geometry, not the label names: the kidney with the larger LPS x
        // is the patient's left.
        let (kl_word, kr_word) = if st[word::KIDNEY_LEFT as usize].centroid()[0]
            >= st[word::KIDNEY_RIGHT as usize].centroid()[0]
        {
            (word::KIDNEY_LEFT, word::KIDNEY_RIGHT)
        } else {
            tracing::warn!("{layout_name}: kidney labels disagree with the geometry; swapped");
            (word::KIDNEY_RIGHT, word::KIDNEY_LEFT)
        };
        let kid_mid = geom::scale(
            geom::add(
                st[kl_word as usize].centroid(),
                st[kr_word as usize].centroid(),
            ),
            0.5,
        );
        if st[word::LIVER as usize].centroid()[0] > kid_mid[0] {
            // A liver on the patient's left means the map's orientation was read
            // wrong (or situs inversus): refuse rather than build a mirrored patient.
            return Err(what("liver on the patient's left after reading"));
        }

        // Body: ICRP-110 AM or AF.
        let (icrp_name, sex) = if r.chance(0.5) {
            ("AM", "M")
        } else {
            ("AF", "F")
        };
        let icrp = realdata::read_icrp110(&opts.data.icrp_tar(), icrp_name, (0, 10_000))?.ids;
        tracing::debug!(
            "ICRP-110 {icrp_name}: read at {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        let ist = label_stats(&icrp);
        let icrp_depth = slice_depth(&icrp);
        // WORD / AMOS slices are 2.5-5 mm: organ outlines interpolated the same way.
        let layout_depth = slice_depth(&layout);
        let mut box_w = Stats::new();
        for l in [word::LIVER, word::KIDNEY_LEFT, word::KIDNEY_RIGHT] {
            box_w.merge(&st[l as usize]);
        }
        let mut box_i = Stats::new();
        for id in 89..=95 {
            box_i.merge(&ist[id]);
        }
        if box_i.n == 0 {
            return Err(Error::input(format!(
                "{}: ICRP-110 {icrp_name} has no liver or kidneys",
                opts.data.icrp_tar().display()
            )));
        }
        // Per-axis scale ICRP -> WORD, kept within plausible body proportions.
        let mut s = [1.0; 3];
        let mut c_w = [0.0; 3];
        let mut c_i = [0.0; 3];
        for a in 0..3 {
            let ew = box_w.hi[a] - box_w.lo[a];
            let ei = box_i.hi[a] - box_i.lo[a];
            s[a] = (ew / ei).clamp(0.75, 1.35);
            c_w[a] = 0.5 * (box_w.hi[a] + box_w.lo[a]);
            c_i[a] = 0.5 * (box_i.hi[a] + box_i.lo[a]);
        }
        // The in-plane scales should not differ too much (a body is not squashed).
        let sxy = (s[0] * s[1]).sqrt();
        s[0] = s[0].clamp(sxy * 0.9, sxy * 1.1);
        s[1] = s[1].clamp(sxy * 0.9, sxy * 1.1);
        let to_icrp = |p: Vec3| -> Vec3 {
            [
                c_i[0] + (p[0] - c_w[0]) / s[0],
                c_i[1] + (p[1] - c_w[1]) / s[1],
                c_i[2] + (p[2] - c_w[2]) / s[2],
            ]
        };

        // Trunk outline at kidney level (in WORD coordinates): arms excluded.
        let kz_i = to_icrp(kid_mid)[2];
        let kk = icrp.geom.patient_to_index([0.0, 0.0, kz_i])[2]
            .round()
            .clamp(0.0, (icrp.geom.dims[2] - 1) as f64) as usize;
        let mut trunk = Stats::new();
        let mut whole = Stats::new();
        {
            let [nx, ny, _] = icrp.geom.dims;
            for j in 0..ny {
                for i in 0..nx {
                    let id = icrp.get(i, j, kk);
                    if id == 0 || id == 140 {
                        continue;
                    }
                    let p = icrp.geom.index_to_patient([i as f64, j as f64, kk as f64]);
                    let pw = [
                        c_w[0] + (p[0] - c_i[0]) * s[0],
                        c_w[1] + (p[1] - c_i[1]) * s[1],
                        0.0,
                    ];
                    whole.add(pw);
                    if !icrp_is_arm(id) {
                        trunk.add(pw);
                    }
                }
            }
        }
        if trunk.n == 0 {
            return Err(Error::input(format!(
                "{}: ICRP-110 {icrp_name} has no body at kidney level",
                opts.data.icrp_tar().display()
            )));
        }
        // Body frame origin (WORD coordinates): on the trunk's axis, at the kidneys'
        // mean height; the body frame keeps LPS axes.
        let origin = [
            0.5 * (trunk.lo[0] + trunk.hi[0]),
            0.5 * (trunk.lo[1] + trunk.hi[1]),
            kid_mid[2],
        ];
        let half_width_mm = 0.5 * (trunk.hi[0] - trunk.lo[0]);
        let half_depth_mm = 0.5 * (trunk.hi[1] - trunk.lo[1]);
        let kid_bottom = st[kl_word as usize].lo[2].min(st[kr_word as usize].lo[2]) - origin[2];
        let liver_top = st[word::LIVER as usize].hi[2] - origin[2];
        let zc = 0.5 * (kid_bottom + liver_top);

        // Canonical grid (body frame): the whole body cross-section, +-300 mm in z
        // about the middle of the kidneys-to-liver-dome span.
        let vx = opts.voxel_mm;
        let lo = [
            whole.lo[0] - origin[0] - 15.0,
            whole.lo[1] - origin[1] - 15.0,
            zc - 300.0,
        ];
        let hi = [
            whole.hi[0] - origin[0] + 15.0,
            whole.hi[1] - origin[1] + 15.0,
            zc + 300.0,
        ];
        let dims = [0, 1, 2].map(|a| ((hi[a] - lo[a]) / vx[a]).ceil() as usize + 1);
        let n = dims[0] * dims[1] * dims[2];
        if n > 400_000_000 {
            return Err(Error::input(format!(
                "real anatomy canonical grid {dims:?} too large: use a coarser voxel"
            )));
        }
        let grid = Geometry::new(dims, vx, lo);
        let word_z = (
            layout.geom.index_to_patient([0.0; 3])[2].min(
                layout
                    .geom
                    .index_to_patient([0.0, 0.0, (layout.geom.dims[2] - 1) as f64])[2],
            ),
            layout.geom.index_to_patient([0.0; 3])[2].max(
                layout
                    .geom
                    .index_to_patient([0.0, 0.0, (layout.geom.dims[2] - 1) as f64])[2],
            ),
        );

        // Pass 1: body tissue from ICRP, organ (WORD label) from the layout.
        let slice = dims[0] * dims[1];
        let mut tissue = vec![0u8; n];
        let mut wl = vec![0u8; n];
        tissue
            .par_chunks_mut(slice)
            .zip(wl.par_chunks_mut(slice))
            .enumerate()
            .for_each(|(k, (ts, ws))| {
                // Both source indices are affine in i: step them along the row
                // instead of transforming every voxel centre.
                let at = |i: f64, j: usize| {
                    let pw = geom::add(grid.index_to_patient([i, j as f64, k as f64]), origin);
                    (
                        pw,
                        icrp.geom.patient_to_index(to_icrp(pw)),
                        layout.geom.patient_to_index(pw),
                    )
                };
                for j in 0..dims[1] {
                    let (pw0, ii0, li0) = at(0.0, j);
                    let (pw1, ii1, li1) = at(1.0, j);
                    let (dp, di, dl) = (
                        geom::sub(pw1, pw0),
                        geom::sub(ii1, ii0),
                        geom::sub(li1, li0),
                    );
                    for i in 0..dims[0] {
                        let s = i as f64;
                        let pw = geom::add(pw0, geom::scale(dp, s));
                        let id = between_slices_idx(
                            &icrp,
                            &icrp_depth,
                            geom::add(ii0, geom::scale(di, s)),
                        );
                        let t = match icrp_tissue(id) {
                            Some(t) => t,
                            None if (word_z.0..=word_z.1).contains(&pw[2]) => Tissue::VisceralFat,
                            // Beyond the layout's slices ICRP's own bowel stays (its
                            // liver, kidneys and spleen never: they have no truth).
                            None => match id {
                                72 | 74 | 76 | 78 | 80 | 82 | 84 | 86 => Tissue::BowelWall,
                                73 | 75 | 138 => Tissue::GiFluid,
                                77 | 79 | 81 | 83 | 85 => Tissue::Stool,
                                _ => Tissue::VisceralFat,
                            },
                        };
                        let idx = i + dims[0] * j;
                        ts[idx] = t as u8;
                        // Organs are painted over the body, never outside it.
                        if t == Tissue::Air {
                            continue;
                        }
                        let w = between_slices_idx(
                            &layout,
                            &layout_depth,
                            geom::add(li0, geom::scale(dl, s)),
                        );
                        let w = if w == kl_word {
                            word::KIDNEY_LEFT
                        } else if w == kr_word {
                            word::KIDNEY_RIGHT
                        } else {
                            w
                        };
                        if w != 0 && w <= word::FEMUR_RIGHT {
                            ws[idx] = w;
                        }
                    }
                }
            });

        tracing::debug!(
            "canonical {dims:?} painted at {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        // Deformation, drawn now: the affine's determinant scales every volume, and
        // organ masses are brought into range with it.
        let scale0 = r.uniform(0.92, 1.08);
        let sc = [0, 1, 2].map(|_| scale0 * r.uniform(0.97, 1.03));
        let rot = geom::rotation_deg(
            r.uniform(-3.0, 3.0),
            r.uniform(-3.0, 3.0),
            r.uniform(-5.0, 5.0),
        );
        // inv_lin = diag(1/sc) * rot^T (forward: b = rot * diag(sc) * x).
        let mut inv_lin = [[0.0; 3]; 3];
        for (a, row) in inv_lin.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = rot[c][a] / sc[a];
            }
        }
        let warp_amp = r.uniform(3.0, 10.0);
        let wlo = [0, 1, 2].map(|a| lo[a] * 1.15 - 40.0);
        let whi = [0, 1, 2].map(|a| hi[a] * 1.15 + 40.0);
        let warp = Warp::new(&mut r.fork("warp"), wlo, whi, warp_amp);

        let vox_ml = vx[0] * vx[1] * vx[2] / 1000.0;
        let wlab = |o: u8| match o {
            organs::LIVER => word::LIVER,
            organs::KIDNEY_LEFT => word::KIDNEY_LEFT,
            organs::KIDNEY_RIGHT => word::KIDNEY_RIGHT,
            _ => word::SPLEEN,
        };
        // Missing kidney: its voxels become visceral fat.
        if let Some(mk) = opts.missing_kidney {
            let w = wlab(mk);
            wl.par_iter_mut().for_each(|x| {
                if *x == w {
                    *x = 0;
                }
            });
        }
        // KiTS23 kidneys (about half the patients): both kidneys replaced by those
        // of one KiTS23 case, tumour and cyst included (they stay kidney-labelled),
        // each centred on the layout's kidney and scaled to its volume.
        // Tumour (2) / cyst (3) of a KiTS23 kidney, per canonical voxel.
        let mut sub = vec![0u8; n];
        let mut kits_name = None;
        let mut rk = r.fork("kits");
        let cases = opts.data.kits_cases();
        if !cases.is_empty() && rk.chance(0.5) {
            for _ in 0..6 {
                let case = &cases[rk.below(cases.len() as u64) as usize];
                let k = match load_kits(case) {
                    Ok(Some(k)) => k,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!("{e}: KiTS23 case skipped");
                        continue;
                    }
                };
                for (side, w) in [(1usize, word::KIDNEY_LEFT), (0, word::KIDNEY_RIGHT)] {
                    let mut cw = [0.0; 3];
                    let mut cnt = 0usize;
                    for (idx, &x) in wl.iter().enumerate() {
                        if x == w {
                            let p = grid.index_to_patient([
                                (idx % dims[0]) as f64,
                                ((idx / dims[0]) % dims[1]) as f64,
                                (idx / slice) as f64,
                            ]);
                            cw = geom::add(cw, p);
                            cnt += 1;
                        }
                    }
                    if cnt == 0 {
                        continue;
                    }
                    cw = geom::scale(cw, 1.0 / cnt as f64);
                    let ks = &k.sides[side];
                    let ck = ks.centroid();
                    let f = (cnt as f64 * vox_ml / (ks.n as f64 * k.voxel_ml)).cbrt();
                    for x in wl.iter_mut() {
                        if *x == w {
                            *x = 0;
                        }
                    }
                    let mut ilo = [0usize; 3];
                    let mut ihi = [0usize; 3];
                    for a in 0..3 {
                        let l = cw[a] + (ks.lo[a] - ck[a]) * f - 2.0 * vx[a];
                        let h = cw[a] + (ks.hi[a] - ck[a]) * f + 2.0 * vx[a];
                        (ilo[a], ihi[a]) = index_range(l, h, lo[a], vx[a], dims[a]);
                    }
                    for kk in ilo[2]..ihi[2] {
                        for j in ilo[1]..ihi[1] {
                            for i in ilo[0]..ihi[0] {
                                let idx = grid.linear(i, j, kk);
                                let cur = wl[idx];
                                if !room_for_organ(cur, tissue[idx]) {
                                    continue;
                                }
                                let b = grid.index_to_patient([i as f64, j as f64, kk as f64]);
                                let q = [0, 1, 2].map(|a| ck[a] + (b[a] - cw[a]) / f);
                                if (q[0] > k.split_x) != (side == 1) {
                                    continue;
                                }
                                if let Some(l @ 1..=3) = nearest(&k.map, q) {
                                    wl[idx] = w;
                                    sub[idx] = if l > 1 { l } else { 0 };
                                }
                            }
                        }
                    }
                }
                kits_name = Some(
                    case.file_name()
                        .map(|n| n.to_string_lossy().trim_end_matches(".nii.gz").to_string())
                        .unwrap_or_default(),
                );
                break;
            }
        }

        // Organ masses into range. Mass counts each canonical voxel at its volume
        // after the deformation (the warp's Jacobian changes volumes locally by up
        // to ~10 %); organs outside the range are rescaled about their centroid
        // from a snapshot of their mask (so a KiTS23 kidney keeps its tumour).
        let fwd = geom::matmul(
            &rot,
            &[[sc[0], 0.0, 0.0], [0.0, sc[1], 0.0], [0.0, 0.0, sc[2]]],
        );
        let jac_ml = |x: Vec3| -> f64 {
            let b = geom::mul(&fwd, x);
            let h = 2.0;
            let mut m = inv_lin;
            for c in 0..3 {
                let mut bp = b;
                let mut bm = b;
                bp[c] += h;
                bm[c] -= h;
                let (up, um) = (warp.at(bp), warp.at(bm));
                for (r, row) in m.iter_mut().enumerate() {
                    row[c] += (up[r] - um[r]) / (2.0 * h);
                }
            }
            let d = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
            vox_ml / d.abs().max(1e-6)
        };
        let ipoint = |idx: usize| {
            grid.index_to_patient([
                (idx % dims[0]) as f64,
                ((idx / dims[0]) % dims[1]) as f64,
                (idx / slice) as f64,
            ])
        };
        // Fixed chunks summed in order: a rayon `sum` adds in whatever order
        // the threads finish, and truth.json must be the same bytes per seed.
        let organ_ml = |wl: &[u8], w: u8| -> f64 {
            const CHUNK: usize = 1 << 16;
            let parts: Vec<f64> = wl
                .par_chunks(CHUNK)
                .enumerate()
                .map(|(ci, ch)| {
                    ch.iter()
                        .enumerate()
                        .filter(|(_, &x)| x == w)
                        .map(|(i, _)| jac_ml(ipoint(ci * CHUNK + i)))
                        .sum::<f64>()
                })
                .collect();
            parts.iter().sum()
        };
        for &(o, lo_g, hi_g) in &MASS_RANGE_G {
            if opts.missing_kidney == Some(o) {
                continue;
            }
            let w = wlab(o);
            // Organs that cannot grow into their neighbours come out short:
            // repeat (at most four times) until the mass is in range.
            for round in 0..4 {
                let Some((blo, bhi)) = label_box(&wl, dims, w) else {
                    break;
                };
                let m = organ_ml(&wl, w) * organs::default_density_g_per_ml(o);
                // Margins: the voxelised mass on a coarse grid moves a few per cent.
                let want = m.clamp(lo_g * 1.08, hi_g * 0.92);
                if (want / m - 1.0).abs() < 0.02 {
                    break;
                }
                // On a coarse grid a few per cent of scale is under a voxel and the
                // nearest-voxel repaint barely moves: push harder each round.
                let f = 1.0 + ((want / m).cbrt() - 1.0) * (1 + round) as f64;
                let bd = [0, 1, 2].map(|a| bhi[a] - blo[a]);
                let mut snap = vec![0u8; bd[0] * bd[1] * bd[2]];
                let mut cen = [0.0; 3];
                let mut cnt = 0.0;
                for k in 0..bd[2] {
                    for j in 0..bd[1] {
                        for i in 0..bd[0] {
                            let idx = grid.linear(blo[0] + i, blo[1] + j, blo[2] + k);
                            if wl[idx] == w {
                                // 1 kidney / organ, 2 tumour, 3 cyst.
                                snap[i + bd[0] * (j + bd[1] * k)] = 1 + sub[idx];
                                cen = geom::add(cen, ipoint(idx));
                                cnt += 1.0;
                                wl[idx] = 0;
                                sub[idx] = 0;
                            }
                        }
                    }
                }
                let cen = geom::scale(cen, 1.0 / cnt);
                let mut ilo = [0usize; 3];
                let mut ihi = [0usize; 3];
                for a in 0..3 {
                    let l = lo[a] + blo[a] as f64 * vx[a];
                    let h = lo[a] + bhi[a] as f64 * vx[a];
                    let l = cen[a] + (l - cen[a]) * f - 2.0 * vx[a];
                    let h = cen[a] + (h - cen[a]) * f + 2.0 * vx[a];
                    (ilo[a], ihi[a]) = index_range(l, h, lo[a], vx[a], dims[a]);
                }
                for k in ilo[2]..ihi[2] {
                    for j in ilo[1]..ihi[1] {
                        for i in ilo[0]..ihi[0] {
                            let idx = grid.linear(i, j, k);
                            let cur = wl[idx];
                            if !room_for_organ(cur, tissue[idx]) {
                                continue;
                            }
                            let x = grid.index_to_patient([i as f64, j as f64, k as f64]);
                            let q = [0, 1, 2].map(|a| cen[a] + (x[a] - cen[a]) / f);
                            let t =
                                [0, 1, 2].map(|a| ((q[a] - lo[a]) / vx[a]).round() - blo[a] as f64);
                            if (0..3).any(|a| !(t[a] >= 0.0 && t[a] < bd[a] as f64)) {
                                continue;
                            }
                            let v = snap
                                [t[0] as usize + bd[0] * (t[1] as usize + bd[1] * t[2] as usize)];
                            if v > 0 {
                                wl[idx] = w;
                                sub[idx] = v - 1;
                            }
                        }
                    }
                }
            }
        }

        tracing::debug!("KiTS23 and masses at {:.1} s", t0.elapsed().as_secs_f64());
        // Pass 2: tissue classes of the organs.
        let mut label = vec![0u8; n];
        let mut rl = r.fork("lesions");
        let kid_t = r.uniform(5.5, 8.0);
        let organ_box = |w: u8| label_box(&wl, dims, w);
        let wall = |idx: usize, w: u8, mm: f64| -> bool {
            let ijk = [idx % dims[0], (idx / dims[0]) % dims[1], idx / slice];
            for a in 0..3 {
                let stride = [1, dims[0], slice][a];
                let off = ((mm / vx[a]).round() as usize).max(1);
                if ijk[a] < off || ijk[a] + off >= dims[a] {
                    return true;
                }
                if wl[idx - off * stride] != w || wl[idx + off * stride] != w {
                    return true;
                }
            }
            false
        };
        // Stomach gas rises anteriorly (supine: low y).
        let stomach_gas_y = organ_box(word::STOMACH)
            .map(|(l, h)| lo[1] + vx[1] * (l[1] as f64 + 0.25 * (h[1] - l[1]) as f64));
        let gas_noise = Warp::new(&mut r.fork("colon-gas"), wlo, whi, 1.0);
        for idx in 0..n {
            let w = wl[idx];
            if w == 0 {
                continue;
            }
            use Tissue::*;
            let (t, l) = match w {
                word::LIVER => (Liver, organs::LIVER),
                word::SPLEEN => (Spleen, organs::SPLEEN),
                word::KIDNEY_LEFT => (KidneyCortex, organs::KIDNEY_LEFT),
                word::KIDNEY_RIGHT => (KidneyCortex, organs::KIDNEY_RIGHT),
                word::STOMACH => {
                    let t = if wall(idx, w, 3.0) {
                        StomachWall
                    } else {
                        let y = lo[1] + vx[1] * ((idx / dims[0]) % dims[1]) as f64;
                        if stomach_gas_y.is_some_and(|g| y < g) {
                            Gas
                        } else {
                            GiFluid
                        }
                    };
                    (t, 0)
                }
                word::GALLBLADDER => (Gallbladder, 0),
                word::ESOPHAGUS => (StomachWall, 0),
                word::PANCREAS => (Pancreas, 0),
                word::DUODENUM | word::INTESTINE => (
                    if wall(idx, w, 2.0) {
                        BowelWall
                    } else {
                        GiFluid
                    },
                    0,
                ),
                word::COLON | word::RECTUM => {
                    let t = if wall(idx, w, 2.0) {
                        BowelWall
                    } else {
                        let b = grid.index_to_patient([
                            (idx % dims[0]) as f64,
                            ((idx / dims[0]) % dims[1]) as f64,
                            (idx / slice) as f64,
                        ]);
                        if gas_noise.at(b)[0] > 0.3 {
                            Gas
                        } else {
                            Stool
                        }
                    };
                    (t, 0)
                }
                word::ADRENAL => (Muscle, 0),
                word::BLADDER => (GiFluid, 0),
                word::FEMUR_LEFT | word::FEMUR_RIGHT => (
                    if wall(idx, w, 2.0) {
                        BoneCortical
                    } else {
                        BoneCancellous
                    },
                    0,
                ),
                _ => continue,
            };
            tissue[idx] = t as u8;
            label[idx] = l;
        }

        // Kidney interior from the depth below the kidney surface.
        let mut rv = r.fork("renal-vessels");
        for w in [word::KIDNEY_LEFT, word::KIDNEY_RIGHT] {
            let Some((blo, bhi)) = organ_box(w) else {
                continue;
            };
            let bd = [0, 1, 2].map(|a| bhi[a] - blo[a] + 2);
            let depth = chamfer_depth(&wl, dims, blo, bd, w, vx);
            // Hilum direction: towards the body midline and a little anterior.
            let (mut c, mut cnt) = ([0.0; 3], 0.0);
            for (q, &d) in depth.iter().enumerate() {
                if d > 0.0 {
                    let p = box_point(q, bd, blo, &grid);
                    c = geom::add(c, p);
                    cnt += 1.0;
                }
            }
            if cnt == 0.0 {
                continue;
            }
            c = geom::scale(c, 1.0 / cnt);
            let hil = geom::unit([-c[0].signum(), -0.5, 0.0]);
            let dmax = depth.iter().cloned().fold(0.0f32, f32::max) as f64;
            let mut pmax: f64 = 1.0;
            for (q, &d) in depth.iter().enumerate() {
                if d > 0.0 {
                    let p = box_point(q, bd, blo, &grid);
                    pmax = pmax.max(crate::volume::dot(geom::sub(p, c), hil));
                }
            }
            for (q, &d) in depth.iter().enumerate() {
                if d <= 0.0 {
                    continue;
                }
                let d = d as f64;
                let p = box_point(q, bd, blo, &grid);
                let rel = geom::sub(p, c);
                let proj = crate::volume::dot(rel, hil) / pmax;
                let ang = rel[2].atan2(rel[1]);
                let t = if d >= kid_t && proj > 0.2 && d > 0.55 * dmax {
                    Tissue::RenalPelvis
                } else if d >= kid_t && proj > 0.35 {
                    Tissue::RenalSinusFat
                } else if d < kid_t * (1.0 + 0.35 * (5.0 * ang).cos()) {
                    Tissue::KidneyCortex
                } else {
                    Tissue::KidneyMedulla
                };
                let idx = box_to_canon(q, bd, blo, dims);
                tissue[idx] = t as u8;
            }
            // A perirenal fat rim (muscle within 1-8 mm of the kidney turned to fat)
            // was tried and left out: a kidney stage trained on it drew real kidneys
            // smaller (docs/log/weights.md, 2026-12-07 night). The draw stays so
            // that the vessels keep their shapes.
            let _ = rv.uniform(1.0, 8.0);
            renal_vessels(
                &mut rv,
                &mut tissue,
                &grid,
                c,
                geom::add(c, geom::scale(hil, 0.6 * pmax)),
            );
        }

        // KiTS23 tumour and cyst inside the kidney label.
        for (idx, &l) in sub.iter().enumerate() {
            if l > 0 && (wl[idx] == word::KIDNEY_LEFT || wl[idx] == word::KIDNEY_RIGHT) {
                tissue[idx] = if l == 2 {
                    Tissue::Tumour
                } else {
                    Tissue::RenalPelvis
                } as u8;
            }
        }

        // Liver lesions: spheres well inside the liver, clipped to it.
        let mut tumour_volume_ml = 0.0;
        let mut placed = 0;
        let mut lesions = Vec::new();
        let mut lesion_under = Vec::new();
        if opts.lesions > 0 {
            if let Some((blo, bhi)) = organ_box(word::LIVER) {
                let mut tries = 0;
                while placed < opts.lesions && tries < 2000 {
                    tries += 1;
                    let ijk =
                        [0, 1, 2].map(|a| blo[a] + rl.below((bhi[a] - blo[a]) as u64) as usize);
                    let rad = rl.uniform(8.0, 22.0);
                    let cidx = grid.linear(ijk[0], ijk[1], ijk[2]);
                    if wl[cidx] != word::LIVER {
                        continue;
                    }
                    // Liver at rad + 5 mm in the six axis directions.
                    let inside = (0..6).all(|dir| {
                        let a = dir / 2;
                        let sgn = if dir % 2 == 0 { -1.0 } else { 1.0 };
                        let off = ((rad + 5.0) / vx[a]).round();
                        let v = ijk[a] as f64 + sgn * off;
                        if v < 0.0 || v >= dims[a] as f64 {
                            return false;
                        }
                        let mut q = ijk;
                        q[a] = v as usize;
                        wl[grid.linear(q[0], q[1], q[2])] == word::LIVER
                    });
                    if !inside {
                        continue;
                    }
                    paint_lesion(
                        &grid,
                        ijk,
                        rad,
                        |idx, _| wl[idx] == word::LIVER,
                        &mut tissue,
                        &mut label,
                        &mut lesion_under,
                    );
                    lesions.push((ijk, rad));
                    tumour_volume_ml += 4.0 / 3.0 * std::f64::consts::PI * rad.powi(3) / 1000.0;
                    placed += 1;
                }
            }
        }

        // Organs present and their masses after the affine.
        let mut present = Vec::new();
        let mut target = Vec::new();
        for &(o, _) in organs::ORGANS {
            let ml = organ_ml(&label, o);
            if ml > 0.0 {
                present.push(o);
                target.push((o, ml * organs::default_density_g_per_ml(o)));
            }
        }
        let kid_bottom_c = [organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT]
            .iter()
            .filter_map(|&o| {
                label
                    .par_chunks(slice)
                    .position_first(|s| s.contains(&o))
                    .map(|k| lo[2] + k as f64 * vx[2])
            })
            .fold(f64::INFINITY, f64::min);
        let liver_top_c = label
            .par_chunks(slice)
            .position_last(|s| s.contains(&organs::LIVER))
            .map(|k| lo[2] + k as f64 * vx[2])
            .unwrap_or(liver_top);
        let kid_bottom_c = if kid_bottom_c.is_finite() {
            kid_bottom_c
        } else {
            kid_bottom
        };
        Ok(RealAnatomy {
            sources: match &kits_name {
                Some(k) => format!("{layout_name} + ICRP-110 {icrp_name} + KiTS23 {k} kidneys"),
                None => format!("{layout_name} + ICRP-110 {icrp_name}"),
            },
            sex: sex.to_string(),
            organs_present: present,
            target_mass_g: target,
            // Forward map in z: about sc[2] times the canonical height; a little
            // margin for the rotation and the warp.
            z_kidney_bottom: kid_bottom_c * sc[2] - warp_amp,
            z_liver_top: liver_top_c * sc[2] + warp_amp,
            half_width_mm: half_width_mm * sc[0],
            half_depth_mm: half_depth_mm * sc[1],
            tumour_volume_ml,
            grid,
            tissue,
            label,
            lesions,
            lesion_under,
            inv_lin,
            warp,
        })
    }

    pub(crate) fn lesion_count(&self) -> usize {
        self.lesions.len()
    }

    /// The same anatomy with each liver lesion's volume times `volume_factor`
    /// (radius times its cube root, same centre): the voxels it leaves get
    /// their liver label and tissue back. The lesion and liver target masses
    /// move by the voxels that changed hands (each at the lesion's mean
    /// volume per voxel, the warp's Jacobian being smooth over a lesion).
    pub(crate) fn with_lesions_scaled(&self, volume_factor: f64) -> RealAnatomy {
        let mut a = self.clone();
        let before = a.lesion_under.len();
        for &(idx, t) in &self.lesion_under {
            a.label[idx] = organs::LIVER;
            a.tissue[idx] = t;
        }
        a.lesion_under.clear();
        let s = volume_factor.cbrt();
        for l in a.lesions.iter_mut() {
            l.1 *= s;
        }
        let lesions = a.lesions.clone();
        for (ijk, rad) in lesions {
            // The scaled sphere lies inside the old one: liver again now, or
            // already tumour where it overlaps a lesion painted before.
            paint_lesion(
                &self.grid,
                ijk,
                rad,
                |_, l| l == organs::LIVER || l == organs::TUMOUR,
                &mut a.tissue,
                &mut a.label,
                &mut a.lesion_under,
            );
        }
        a.tumour_volume_ml *= volume_factor;
        let after = a.lesion_under.len();
        let tumour_g = |t: &[(u8, f64)]| {
            t.iter()
                .find(|(o, _)| *o == organs::TUMOUR)
                .map(|(_, g)| *g)
                .unwrap_or(0.0)
        };
        if before > 0 {
            let ml_per_voxel = tumour_g(&self.target_mass_g)
                / organs::default_density_g_per_ml(organs::TUMOUR)
                / before as f64;
            let moved_ml = (before - after) as f64 * ml_per_voxel;
            for (o, g) in a.target_mass_g.iter_mut() {
                if *o == organs::TUMOUR {
                    *g -= moved_ml * organs::default_density_g_per_ml(organs::TUMOUR);
                } else if *o == organs::LIVER {
                    *g += moved_ml * organs::default_density_g_per_ml(organs::LIVER);
                }
            }
        }
        a
    }

    /// Which lesion a body-frame point labelled "tumour" lies in: the last one
    /// painted over its canonical voxel (the voxel `rasterize` samples).
    pub(crate) fn lesion_at(&self, b: Vec3) -> Option<usize> {
        let g = &self.grid;
        let x = self.to_canonical(b);
        let f = [0, 1, 2].map(|a| ((x[a] - g.origin[a]) / g.spacing[a]).round());
        if !(f[0] >= 0.0 && f[0] < g.dims[0] as f64 && f[1] >= 0.0 && f[1] < g.dims[1] as f64) {
            return None;
        }
        let ijk = [
            f[0] as usize,
            f[1] as usize,
            f[2].clamp(0.0, (g.dims[2] - 1) as f64) as usize,
        ];
        self.lesions.iter().rposition(|(c, rad)| {
            let d2: f64 = (0..3)
                .map(|a| ((ijk[a] as f64 - c[a] as f64) * g.spacing[a]).powi(2))
                .sum();
            d2 <= rad * rad
        })
    }

    /// Body-frame point to canonical (undeformed) coordinates.
    #[inline]
    fn to_canonical(&self, b: Vec3) -> Vec3 {
        let u = self.warp.at(b);
        let m = &self.inv_lin;
        [
            m[0][0] * b[0] + m[0][1] * b[1] + m[0][2] * b[2] + u[0],
            m[1][0] * b[0] + m[1][1] * b[1] + m[1][2] * b[2] + u[1],
            m[2][0] * b[0] + m[2][1] * b[1] + m[2][2] * b[2] + u[2],
        ]
    }

    /// Tissue classes and organ labels on `grid`'s voxel centres, the anatomy
    /// placed by `pose` (same contract as [`super::anatomy::Anatomy::rasterize`]).
    pub(crate) fn rasterize(&self, grid: &Geometry, pose: &Pose) -> (Vec<u8>, Vec<u8>) {
        let n = grid.len();
        let [nx, ny, _] = grid.dims;
        let mut tissue = vec![Tissue::Air as u8; n];
        let mut label = vec![0u8; n];
        if n == 0 {
            return (tissue, label);
        }
        let g = &self.grid;
        let [cx, cy, cz] = g.dims;
        let inv = [1.0 / g.spacing[0], 1.0 / g.spacing[1], 1.0 / g.spacing[2]];
        tissue
            .par_chunks_mut(nx * ny)
            .zip(label.par_chunks_mut(nx * ny))
            .enumerate()
            .for_each(|(k, (ts, ls))| {
                for j in 0..ny {
                    let b0 = pose.to_body(grid.index_to_patient([0.0, j as f64, k as f64]));
                    let b1 = pose.to_body(grid.index_to_patient([1.0, j as f64, k as f64]));
                    let db = geom::sub(b1, b0);
                    for i in 0..nx {
                        let s = i as f64;
                        let b = [b0[0] + s * db[0], b0[1] + s * db[1], b0[2] + s * db[2]];
                        let x = self.to_canonical(b);
                        let fi = ((x[0] - g.origin[0]) * inv[0]).round();
                        let fj = ((x[1] - g.origin[1]) * inv[1]).round();
                        if !(fi >= 0.0 && fi < cx as f64 && fj >= 0.0 && fj < cy as f64) {
                            continue;
                        }
                        // Beyond the canonical slab the body continues like its end
                        // slices (no cut-off trunk in a long field of view).
                        let fk = ((x[2] - g.origin[2]) * inv[2])
                            .round()
                            .clamp(0.0, (cz - 1) as f64);
                        let idx = fi as usize + cx * (fj as usize + cy * fk as usize);
                        let o = i + nx * j;
                        ts[o] = self.tissue[idx];
                        ls[o] = self.label[idx];
                    }
                }
            });
        (tissue, label)
    }
}

/// Paints a spherical lesion (centre `ijk`, radius `rad` mm) over the
/// canonical voxels `may(index, label)` allows, recording the tissue each had before it
/// first became tumour.
fn paint_lesion(
    grid: &Geometry,
    ijk: [usize; 3],
    rad: f64,
    may: impl Fn(usize, u8) -> bool,
    tissue: &mut [u8],
    label: &mut [u8],
    under: &mut Vec<(usize, u8)>,
) {
    let (vx, dims) = (grid.spacing, grid.dims);
    let ext = [0, 1, 2].map(|a| (rad / vx[a]).ceil() as isize);
    for dk in -ext[2]..=ext[2] {
        for dj in -ext[1]..=ext[1] {
            for di in -ext[0]..=ext[0] {
                let d2 = (di as f64 * vx[0]).powi(2)
                    + (dj as f64 * vx[1]).powi(2)
                    + (dk as f64 * vx[2]).powi(2);
                if d2 > rad * rad {
                    continue;
                }
                let q = [
                    ijk[0] as isize + di,
                    ijk[1] as isize + dj,
                    ijk[2] as isize + dk,
                ];
                if (0..3).any(|a| q[a] < 0 || q[a] >= dims[a] as isize) {
                    continue;
                }
                let idx = grid.linear(q[0] as usize, q[1] as usize, q[2] as usize);
                if may(idx, label[idx]) {
                    if label[idx] != organs::TUMOUR {
                        under.push((idx, tissue[idx]));
                    }
                    tissue[idx] = Tissue::Tumour as u8;
                    label[idx] = organs::TUMOUR;
                }
            }
        }
    }
}

/// The two kidneys of a KiTS23 case (labels 1 kidney, 2 tumour, 3 cyst).
struct KitsKidneys {
    map: Volume<u8>,
    voxel_ml: f64,
    /// LPS x dividing the patient's right (below) from the left (above).
    split_x: f64,
    /// [right, left] statistics of label > 0 (LPS mm).
    sides: [Stats; 2],
}

/// Reads a KiTS23 case and splits it into right and left kidney by position
/// (two-means on x). `None`: not two usable kidneys (a nephrectomy, a tumour
/// over half the kidney, or an implausible volume).
fn load_kits(path: &std::path::Path) -> Result<Option<KitsKidneys>> {
    // Thin-slice cases reach 280 M voxels: peek at the header and skip those
    // (the choice stays wide: most cases are under 60 M).
    if realdata::label_map_voxels(path)? > 80_000_000 {
        return Ok(None);
    }
    let map = realdata::read_label_map(path)?;
    let [nx, ny, nz] = map.geom.dims;
    // x histogram in 2 mm bins, then two-means on it.
    let mut hist: std::collections::BTreeMap<i64, usize> = Default::default();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if map.data[i + nx * (j + ny * k)] > 0 {
                    let x = map.geom.index_to_patient([i as f64, j as f64, k as f64])[0];
                    *hist.entry((x / 2.0).floor() as i64).or_default() += 1;
                }
            }
        }
    }
    let (Some((&b0, _)), Some((&b1, _))) = (hist.first_key_value(), hist.last_key_value()) else {
        return Ok(None);
    };
    let (mut m0, mut m1) = (b0 as f64 * 2.0, b1 as f64 * 2.0);
    for _ in 0..10 {
        let split = 0.5 * (m0 + m1);
        let (mut s0, mut n0, mut s1, mut n1) = (0.0, 0.0, 0.0, 0.0);
        for (&b, &c) in &hist {
            let x = b as f64 * 2.0 + 1.0;
            if x < split {
                s0 += x * c as f64;
                n0 += c as f64;
            } else {
                s1 += x * c as f64;
                n1 += c as f64;
            }
        }
        if n0 == 0.0 || n1 == 0.0 {
            return Ok(None);
        }
        m0 = s0 / n0;
        m1 = s1 / n1;
    }
    let split_x = 0.5 * (m0 + m1);
    let mut sides = [Stats::new(), Stats::new()];
    let mut tumour = [0usize; 2];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let l = map.data[i + nx * (j + ny * k)];
                if l > 0 {
                    let p = map.geom.index_to_patient([i as f64, j as f64, k as f64]);
                    let s = usize::from(p[0] > split_x);
                    sides[s].add(p);
                    if l == 2 {
                        tumour[s] += 1;
                    }
                }
            }
        }
    }
    let voxel_ml = map.geom.voxel_volume_ml();
    for s in 0..2 {
        let ml = sides[s].n as f64 * voxel_ml;
        // Two kidneys about 60 mm or more apart, each 60-600 mL, tumour under half.
        if !(60.0..600.0).contains(&ml) || tumour[s] * 2 > sides[s].n || m1 - m0 < 60.0 {
            return Ok(None);
        }
    }
    Ok(Some(KitsKidneys {
        map,
        voxel_ml,
        split_x,
        sides,
    }))
}

/// Per slice, the in-plane chamfer distance (mm) from each voxel to the nearest
/// voxel of another ID: how deep inside its region a voxel lies.
fn slice_depth(v: &Volume<u8>) -> Vec<f32> {
    let [nx, ny, _] = v.geom.dims;
    let (dx, dy) = (v.geom.spacing[0] as f32, v.geom.spacing[1] as f32);
    let dd = (dx * dx + dy * dy).sqrt();
    let mut out = vec![0f32; v.data.len()];
    out.par_chunks_mut(nx * ny).enumerate().for_each(|(k, d)| {
        let ids = &v.data[k * nx * ny..(k + 1) * nx * ny];
        // Box of the boundaries: the passes run only within it plus a margin
        // (beyond, a voxel is so deep that the exact value does not matter).
        let (mut i0, mut i1, mut j0, mut j1) = (nx, 0, ny, 0);
        for j in 0..ny {
            for i in 0..nx {
                let q = i + nx * j;
                let id = ids[q];
                // The image border is no boundary: regions run on past it.
                let edge = (i > 0 && ids[q - 1] != id)
                    || (i + 1 < nx && ids[q + 1] != id)
                    || (j > 0 && ids[q - nx] != id)
                    || (j + 1 < ny && ids[q + nx] != id);
                d[q] = if edge {
                    i0 = i0.min(i);
                    i1 = i1.max(i + 1);
                    j0 = j0.min(j);
                    j1 = j1.max(j + 1);
                    0.5 * dx.min(dy)
                } else {
                    f32::INFINITY
                };
            }
        }
        if i0 >= i1 {
            return;
        }
        const MARGIN: usize = 32;
        let (i0, i1) = (i0.saturating_sub(MARGIN), (i1 + MARGIN).min(nx));
        let (j0, j1) = (j0.saturating_sub(MARGIN), (j1 + MARGIN).min(ny));
        let nb = [
            (-1isize, 0isize, dx),
            (0, -1, dy),
            (-1, -1, dd),
            (1, -1, dd),
        ];
        for j in j0..j1 {
            for i in i0..i1 {
                for &(di, dj, w) in &nb {
                    let (ii, jj) = (i as isize + di, j as isize + dj);
                    if ii >= 0 && jj >= 0 && (ii as usize) < nx {
                        let p = ii as usize + nx * jj as usize;
                        let q = i + nx * j;
                        d[q] = d[q].min(d[p] + w);
                    }
                }
            }
        }
        for j in (j0..j1).rev() {
            for i in (i0..i1).rev() {
                for &(di, dj, w) in &nb {
                    let (ii, jj) = (i as isize - di, j as isize - dj);
                    if ii >= 0 && (ii as usize) < nx && (jj as usize) < ny {
                        let p = ii as usize + nx * jj as usize;
                        let q = i + nx * j;
                        d[q] = d[q].min(d[p] + w);
                    }
                }
            }
        }
    });
    out
}

/// ID at a point between two slices of a thick-slice map: where the slices
/// disagree, the region lying deeper inside its own slice (weighted by closeness
/// in z) wins, so boundaries move smoothly from one slice to the next instead of
/// stepping every slice (ICRP AM slices are 8 mm).
#[cfg(test)]
fn between_slices(v: &Volume<u8>, depth: &[f32], p: Vec3) -> u8 {
    between_slices_idx(v, depth, v.geom.patient_to_index(p))
}

/// [`between_slices`] at a continuous voxel index.
#[inline]
fn between_slices_idx(v: &Volume<u8>, depth: &[f32], idx: Vec3) -> u8 {
    let [nx, ny, nz] = v.geom.dims;
    let (i, j) = (idx[0].round(), idx[1].round());
    // Outside the map (NaN included): air.
    let inside = (0.0..nx as f64).contains(&i)
        && (0.0..ny as f64).contains(&j)
        && (-0.5..nz as f64 - 0.5).contains(&idx[2]);
    if !inside {
        return 0;
    }
    let z = idx[2].clamp(0.0, (nz - 1) as f64);
    let k0 = (z.floor() as usize).min(nz.saturating_sub(2));
    let k1 = (k0 + 1).min(nz - 1);
    let f = (z - k0 as f64) as f32;
    let q = i as usize + nx * j as usize;
    let (a, b) = (k0 * nx * ny + q, k1 * nx * ny + q);
    let (ia, ib) = (v.data[a], v.data[b]);
    if ia == ib {
        return ia;
    }
    // Capped: a slice with one region only has infinite depth (0 x inf = NaN).
    if (1.0 - f) * depth[a].min(1e6) >= f * depth[b].min(1e6) {
        ia
    } else {
        ib
    }
}

/// Index box [lo, hi) of the voxels labelled `w`.
fn label_box(wl: &[u8], dims: [usize; 3], w: u8) -> Option<([usize; 3], [usize; 3])> {
    let mut lo_i = [usize::MAX; 3];
    let mut hi_i = [0usize; 3];
    for (idx, &x) in wl.iter().enumerate() {
        if x == w {
            let ijk = [
                idx % dims[0],
                (idx / dims[0]) % dims[1],
                idx / (dims[0] * dims[1]),
            ];
            for a in 0..3 {
                lo_i[a] = lo_i[a].min(ijk[a]);
                hi_i[a] = hi_i[a].max(ijk[a] + 1);
            }
        }
    }
    (lo_i[0] != usize::MAX).then_some((lo_i, hi_i))
}

/// Canonical point of box voxel `q`.
fn box_point(q: usize, bd: [usize; 3], blo: [usize; 3], grid: &Geometry) -> Vec3 {
    let i = q % bd[0];
    let j = (q / bd[0]) % bd[1];
    let k = q / (bd[0] * bd[1]);
    grid.index_to_patient([
        (blo[0] + i) as f64 - 1.0,
        (blo[1] + j) as f64 - 1.0,
        (blo[2] + k) as f64 - 1.0,
    ])
}

/// Canonical linear index of box voxel `q` (the box has a one-voxel border).
fn box_to_canon(q: usize, bd: [usize; 3], blo: [usize; 3], dims: [usize; 3]) -> usize {
    let i = blo[0] + q % bd[0] - 1;
    let j = blo[1] + (q / bd[0]) % bd[1] - 1;
    let k = blo[2] + q / (bd[0] * bd[1]) - 1;
    i + dims[0] * (j + dims[1] * k)
}

/// Chamfer distance (mm) from each voxel labelled `w` to the nearest voxel not
/// labelled `w`, on the box `blo .. blo + bd - 2` with a one-voxel border of
/// background; 0 outside the organ. Two raster passes over the 26-neighbourhood
/// (within a few per cent of the Euclidean distance: enough for tissue layers).
fn chamfer_depth(
    wl: &[u8],
    dims: [usize; 3],
    blo: [usize; 3],
    bd: [usize; 3],
    w: u8,
    vx: [f64; 3],
) -> Vec<f32> {
    let n = bd[0] * bd[1] * bd[2];
    let mut d = vec![0f32; n];
    for k in 1..bd[2] - 1 {
        for j in 1..bd[1] - 1 {
            for i in 1..bd[0] - 1 {
                let (ci, cj, ck) = (blo[0] + i - 1, blo[1] + j - 1, blo[2] + k - 1);
                if ci < dims[0]
                    && cj < dims[1]
                    && ck < dims[2]
                    && wl[ci + dims[0] * (cj + dims[1] * ck)] == w
                {
                    d[i + bd[0] * (j + bd[1] * k)] = f32::INFINITY;
                }
            }
        }
    }
    let mut fwd = Vec::new();
    for dk in -1i32..=1 {
        for dj in -1i32..=1 {
            for di in -1i32..=1 {
                let before = (dk, dj, di) < (0, 0, 0);
                if before {
                    let len = ((di as f64 * vx[0]).powi(2)
                        + (dj as f64 * vx[1]).powi(2)
                        + (dk as f64 * vx[2]).powi(2))
                    .sqrt() as f32;
                    fwd.push((di as isize, dj as isize, dk as isize, len));
                }
            }
        }
    }
    let at = |i: usize, j: usize, k: usize| i + bd[0] * (j + bd[1] * k);
    for k in 1..bd[2] - 1 {
        for j in 1..bd[1] - 1 {
            for i in 1..bd[0] - 1 {
                let q = at(i, j, k);
                if d[q] == 0.0 {
                    continue;
                }
                let mut m = d[q];
                for &(di, dj, dk, len) in &fwd {
                    let p = at(
                        (i as isize + di) as usize,
                        (j as isize + dj) as usize,
                        (k as isize + dk) as usize,
                    );
                    m = m.min(d[p] + len);
                }
                d[q] = m;
            }
        }
    }
    for k in (1..bd[2] - 1).rev() {
        for j in (1..bd[1] - 1).rev() {
            for i in (1..bd[0] - 1).rev() {
                let q = at(i, j, k);
                if d[q] == 0.0 {
                    continue;
                }
                let mut m = d[q];
                for &(di, dj, dk, len) in &fwd {
                    let p = at(
                        (i as isize - di) as usize,
                        (j as isize - dj) as usize,
                        (k as isize - dk) as usize,
                    );
                    m = m.min(d[p] + len);
                }
                d[q] = m;
            }
        }
    }
    d
}

/// Renal vein, renal artery and ureter of one kidney (issue 35: on real CTs the
/// hilum, where these leave the kidney, is where kidney masks go wrong; WORD and
/// ICRP-110 have none of them). Tubes along polylines: vein (radius 4-6 mm) and
/// artery (2.5-3.5 mm) from the renal sinus to the vena cava and the aorta, the
/// left vein in front of the aorta and the right artery behind the vena cava;
/// ureter (2-3 mm) from the lower hilum down and medially in front of the
/// psoas. The aorta is found in the hilum's slice as ICRP's trunk vessels in
/// front of the kidneys left of the midline (else at its usual place), the
/// vena cava likewise right of it (else 32 mm to the aorta's right). Sizes:
/// adult ranges of standard anatomy texts (renal vein 10-12 mm, renal artery
/// 5-6 mm, ureter 3-6 mm across). They replace only fat and renal sinus fat,
/// never an organ or muscle, and leave the labels alone (the kidney label keeps
/// its sinus, as before).
fn renal_vessels(rng: &mut Rng, tissue: &mut [u8], grid: &Geometry, c: Vec3, hilum: Vec3) {
    let dims = grid.dims;
    let side = c[0].signum();
    let k = grid.patient_to_index(hilum)[2].round();
    let (mut aorta, mut cava) = (([0.0; 3], 0.0), ([0.0; 3], 0.0));
    if (0.0..dims[2] as f64).contains(&k) {
        let k = k as usize;
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                if tissue[grid.linear(i, j, k)] != Tissue::Aorta as u8 {
                    continue;
                }
                let p = grid.index_to_patient([i as f64, j as f64, k as f64]);
                if p[0].abs() > 60.0 || p[1] > c[1] || p[1] < c[1] - 100.0 {
                    continue;
                }
                let acc = if p[0] > -5.0 { &mut aorta } else { &mut cava };
                acc.0 = geom::add(acc.0, p);
                acc.1 += 1.0;
            }
        }
    }
    let centre = |acc: (Vec3, f64)| (acc.1 > 10.0).then(|| geom::scale(acc.0, 1.0 / acc.1));
    let z = hilum[2];
    let a = centre(aorta).map_or([10.0, c[1] - 50.0, z], |p| [p[0], p[1], z]);
    let v = centre(cava).map_or([a[0] - 32.0, a[1] + 2.0, z], |p| [p[0], p[1], z]);
    let allowed = [
        Tissue::VisceralFat as u8,
        Tissue::Fat as u8,
        Tissue::RenalSinusFat as u8,
    ];
    let vein_r = rng.uniform(4.0, 6.0);
    let art_r = rng.uniform(2.5, 3.5);
    // The artery leaves behind the vein and arises a little higher.
    let h_art = geom::add(hilum, [0.0, 6.0, 3.0]);
    let rise = rng.uniform(5.0, 15.0);
    let at = |p: Vec3, dx: f64, dy: f64, dz: f64| [p[0] + dx, p[1] + dy, p[2] + dz];
    let (vein, artery): (Vec<Vec3>, Vec<Vec3>) = if side > 0.0 {
        (
            vec![
                hilum,
                at(a, 16.0, -4.0, 0.0),
                at(a, 0.0, -16.0, 0.0),
                at(v, 8.0, -4.0, 0.0),
                v,
            ],
            vec![h_art, at(a, 8.0, 2.0, rise), at(a, 0.0, 0.0, rise)],
        )
    } else {
        (
            vec![hilum, at(v, -8.0, 0.0, 0.0), v],
            vec![
                h_art,
                at(v, 0.0, 12.0, rise),
                at(a, -6.0, 4.0, rise),
                at(a, 0.0, 0.0, rise),
            ],
        )
    };
    for (path, r, t) in [
        (vein, vein_r, Tissue::VenaCava),
        (artery, art_r, Tissue::Aorta),
    ] {
        let n = paint_tube(tissue, grid, &path, r, t, &allowed);
        tracing::debug!("{t:?} from {:.0?}: {n} voxels", path[0]);
    }
    let u0 = geom::add(hilum, [0.0, 5.0, -15.0]);
    let u1 = [u0[0] * 0.85, u0[1] + 5.0, u0[2] - 60.0];
    let u2 = [side * rng.uniform(35.0, 50.0), u0[1], u0[2] - 160.0];
    let ur = rng.uniform(2.0, 3.0);
    let n = paint_tube(
        tissue,
        grid,
        &[u0, u1, u2],
        ur,
        Tissue::RenalPelvis,
        &[Tissue::VisceralFat as u8, Tissue::Fat as u8],
    );
    tracing::debug!("ureter from {u0:.0?}: {n} voxels");
}

/// Paints tissue `t` within `r` mm of the polyline `p`, over the voxels whose
/// tissue is in `allowed`; returns how many it painted.
fn paint_tube(
    tissue: &mut [u8],
    grid: &Geometry,
    p: &[Vec3],
    r: f64,
    t: Tissue,
    allowed: &[u8],
) -> usize {
    let dims = grid.dims;
    let vx = grid.spacing;
    let mut painted = 0;
    for seg in p.windows(2) {
        let d = geom::sub(seg[1], seg[0]);
        let len = crate::volume::dot(d, d).sqrt();
        let steps = (len / 0.5).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let q = geom::add(seg[0], geom::scale(d, s as f64 / steps as f64));
            let ci = grid.patient_to_index(q);
            let span = |a: usize| {
                let h = r / vx[a];
                let lo = (ci[a] - h).floor().max(0.0) as usize;
                let hi = ((ci[a] + h).ceil() + 1.0).clamp(0.0, dims[a] as f64) as usize;
                lo..hi
            };
            for k in span(2) {
                for j in span(1) {
                    for i in span(0) {
                        let x = grid.index_to_patient([i as f64, j as f64, k as f64]);
                        let e = geom::sub(x, q);
                        if crate::volume::dot(e, e) > r * r {
                            continue;
                        }
                        let idx = grid.linear(i, j, k);
                        if allowed.contains(&tissue[idx]) {
                            tissue[idx] = t as u8;
                            painted += 1;
                        }
                    }
                }
            }
        }
    }
    painted
}

/// Where a grown organ may spread: empty layout voxels or bowel (which a
/// solid organ pushes aside), never air.
fn room_for_organ(layout: u8, tissue: u8) -> bool {
    (layout == 0 || layout == word::COLON || layout == word::INTESTINE || layout == word::DUODENUM)
        && tissue != Tissue::Air as u8
}

/// Voxel index range `[lo, hi)` along one axis covering `l..h` mm, clamped to the grid.
fn index_range(l: f64, h: f64, origin: f64, vx: f64, n: usize) -> (usize, usize) {
    (
        ((l - origin) / vx).floor().clamp(0.0, n as f64) as usize,
        ((h - origin) / vx).ceil().clamp(0.0, n as f64) as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chamfer_depth_of_a_slab() {
        // A 9-voxel-thick slab in x: depth grows by one voxel per step from each face.
        let dims = [11, 5, 5];
        let mut wl = vec![0u8; 11 * 25];
        for k in 0..5 {
            for j in 0..5 {
                for i in 1..10 {
                    wl[i + 11 * (j + 5 * k)] = 3;
                }
            }
        }
        let blo = [0, 0, 0];
        let bd = [13, 7, 7];
        let d = chamfer_depth(&wl, dims, blo, bd, 3, [1.0, 2.0, 2.0]);
        let at = |i: usize| d[(i + 1) + 13 * (3 + 7 * 3)];
        assert_eq!(at(0), 0.0);
        assert_eq!(at(1), 1.0);
        assert_eq!(at(5), 5.0);
        assert_eq!(at(9), 1.0);
        // The box border is background: the slab's y faces are surfaces too.
        assert_eq!(d[(5 + 1) + 13 * (1 + 7 * 3)], 2.0);
    }

    #[test]
    fn thick_slice_boundaries_move_smoothly_between_slices() {
        // 12 x 1 x 2: ID 1 fills columns 0..8 in slice 0 and 0..4 in slice 1.
        let g = Geometry::new([12, 1, 2], [1.0, 1.0, 8.0], [0.0; 3]);
        let mut d = vec![2u8; 24];
        for i in 0..8 {
            d[i] = 1;
        }
        for i in 0..4 {
            d[12 + i] = 1;
        }
        let v = Volume::new(g, d).expect("vol");
        let depth = slice_depth(&v);
        let edge = |z: f64| {
            (0..12)
                .take_while(|&i| between_slices(&v, &depth, [i as f64, 0.0, z]) == 1)
                .count()
        };
        assert_eq!(edge(0.0), 8);
        assert_eq!(edge(8.0), 4);
        let mid = edge(4.0);
        assert!((5..=7).contains(&mid), "{mid}");
        assert!(edge(2.0) >= mid && edge(6.0) <= mid);
    }

    /// A 1 x 1 x 2 mm body-frame grid of visceral fat with a 40 x 30 x 40 mm
    /// kidney (layout label 3) centred at x = +70 mm, muscle behind it.
    fn kidney_scene() -> (Geometry, Vec<u8>, Vec<u8>) {
        let g = Geometry::new([200, 160, 40], [1.0, 1.0, 2.0], [-100.0, -80.0, -40.0]);
        let n = 200 * 160 * 40;
        let mut tissue = vec![Tissue::VisceralFat as u8; n];
        let mut wl = vec![0u8; n];
        for k in 0..40 {
            for j in 0..160 {
                for i in 0..200 {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    let idx = g.linear(i, j, k);
                    if (50.0..90.0).contains(&p[0])
                        && (10.0..40.0).contains(&p[1])
                        && p[2].abs() < 20.0
                    {
                        wl[idx] = word::KIDNEY_LEFT;
                        tissue[idx] = Tissue::KidneyCortex as u8;
                    } else if p[1] >= 40.0 {
                        tissue[idx] = Tissue::Muscle as u8;
                    }
                }
            }
        }
        (g, tissue, wl)
    }

    #[test]
    fn renal_vein_runs_in_front_of_the_aorta_to_the_cava_and_spares_organs() {
        let (g, mut tissue, wl) = kidney_scene();
        // Aorta (radius 10 mm) at x = +10, y = -20; a liver block on the way to
        // where the vena cava would be; no vena cava voxels: its usual place.
        for k in 0..40 {
            for j in 0..160 {
                for i in 0..200 {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    let idx = g.linear(i, j, k);
                    if (p[0] - 10.0).powi(2) + (p[1] + 20.0).powi(2) < 100.0 {
                        tissue[idx] = Tissue::Aorta as u8;
                    } else if (-60.0..-30.0).contains(&p[0]) && (-60.0..-30.0).contains(&p[1]) {
                        tissue[idx] = Tissue::Liver as u8;
                    }
                }
            }
        }
        let before = tissue.clone();
        let c = [70.0, 25.0, 0.0];
        let hilum = [48.0, 18.0, 0.0];
        renal_vessels(&mut Rng::new(3), &mut tissue, &g, c, hilum);
        let (mut vein, mut artery, mut ureter) = (Vec::new(), Vec::new(), Vec::new());
        for (idx, (&t, &b)) in tissue.iter().zip(&before).enumerate() {
            if t == b {
                continue;
            }
            assert!(
                [
                    Tissue::VisceralFat as u8,
                    Tissue::Fat as u8,
                    Tissue::RenalSinusFat as u8
                ]
                .contains(&b),
                "an organ or muscle was painted over"
            );
            let [i, j, k] = [idx % 200, (idx / 200) % 160, idx / (200 * 160)];
            let p = g.index_to_patient([i as f64, j as f64, k as f64]);
            if t == Tissue::VenaCava as u8 {
                vein.push(p);
            } else if t == Tissue::Aorta as u8 {
                artery.push(p);
            } else if t == Tissue::RenalPelvis as u8 {
                ureter.push(p);
            }
        }
        assert!(
            wl.iter().all(|&w| w == 0 || w == word::KIDNEY_LEFT),
            "labels untouched"
        );
        // The vein crosses the midline in front of the aorta (y < -30) and ends
        // at the vena cava's usual place, 32 mm right of the aorta.
        assert!(
            vein.iter().any(|p| p[0].abs() < 3.0 && p[1] < -30.0),
            "vein in front of the aorta"
        );
        assert!(vein.iter().any(|p| p[0] < -18.0), "vein reaches the cava");
        assert!(vein.iter().any(|p| p[0] > 45.0), "vein leaves the hilum");
        // The artery runs from the hilum to the aorta; the ureter goes down.
        assert!(artery.iter().any(|p| p[0] > 45.0) && artery.iter().any(|p| p[0] < 25.0));
        assert!(ureter.iter().any(|p| p[2] < -30.0), "ureter descends");
        // Tube radii: vein 4-6 mm, so at most about pi 6^2 mm^2 per mm of length.
        assert!(vein.len() > 500, "{} vein voxels", vein.len());
    }

    #[test]
    fn warp_is_smooth_and_bounded() {
        let mut r = Rng::new(5);
        let w = Warp::new(&mut r, [-300.0; 3], [300.0; 3], 8.0);
        let mut prev = w.at([0.0, 0.0, -200.0]);
        for s in 1..400 {
            let u = w.at([0.0, 0.0, -200.0 + s as f64]);
            for a in 0..3 {
                assert!(u[a].abs() < 8.0 + 1e-6);
                assert!((u[a] - prev[a]).abs() < 0.5, "gradient too large");
            }
            prev = u;
        }
    }
}
