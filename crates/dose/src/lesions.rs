//! Lesion VOIs (issue 37, item 3): where each lesion is, on which grid, and how it
//! reaches every time point. The dosimetry then treats each lesion as one more region
//! (its own label in the working label maps, [`FIRST_LABEL`] upwards): the same
//! coverage, mask shift, partial-volume correction (the lesions are regions of the
//! GTM beside the organs), kinetics and dose as an organ (`pipeline.rs`).
//!
//! Two sources:
//!
//! - **Given** ([`given`]): the label map's "tumour" label (a phantom's truth, a label
//!   map, an RT Structure Set or SEG whose non-organ ROIs the appliance painted as
//!   tumour). Each 26-connected component of the diagnostic CT's tumour voxels is one
//!   lesion (26: a lesion drawn slice by slice with a contour shifted by a voxel stays
//!   one piece); components under `lesion_min_volume_ml` are specks of a drawing and
//!   are dropped. A time point's own tumour components (its low-dose-CT mask) are
//!   matched to them by centroid, after the organs' displacement between the two CTs;
//!   a lesion a time point's mask lacks is carried there from the diagnostic CT by
//!   that displacement.
//! - **Automatic** ([`detect`]): hot spots of the SPECT nearest `lesion_detect_h`
//!   (24 h: the tumour-to-background contrast of 177Lu peptides is high by then, the
//!   blood pool has cleared). Method (the project's choice, after the threshold
//!   methods below):
//!   1. The SPECT smoothed by a Gaussian of half the PSF's sigma (noise); the image is
//!      then the activity blurred by `sigma_eff^2 = sigma_psf^2 + sigma_smooth^2 +
//!      voxel^2 / 12` per axis.
//!   2. Reference level: the median of the liver on that SPECT (the liver is the
//!      reference of somatostatin-receptor imaging, e.g. the Krenning score); without
//!      a liver mask, the median of the field above 1 % of its maximum.
//!   3. Candidates: local maxima (26 neighbours) at least `lesion_detect_contrast` x
//!      the reference, not within one PSF FWHM of a kidney or the spleen (organ uptake
//!      is not a lesion), highest first.
//!   4. Region: the voxels connected to the maximum above `B + f (M - B)`, M the
//!      maximum, B the local background (median of a shell from one to two FWHM
//!      beyond the region: liver voxels for a maximum in the liver, voxels of no organ
//!      otherwise). `f` starts at `lesion_threshold` (0.42: the fixed fraction of the
//!      maximum long used for PET lesions, Erdi et al., Cancer 1997;80:2505) and, with
//!      `lesion_threshold_method = "iterative"`, is iterated (Jentzen et al., J Nucl
//!      Med 2007;48:108; Nehmeh et al., Med Phys 2009;36:4803): the region's volume
//!      gives a sphere's radius R, `f` becomes the fraction of the maximum (above
//!      background) at the edge of a uniform sphere of radius R blurred by
//!      `sigma_eff` ([`sphere_edge_fraction`], the calibration computed from the PSF
//!      instead of measured on phantom spheres), until `f` settles. A fixed 42 % is
//!      off by -12 % to +87 % in volume for 16-44 mm spheres at 10-15 mm FWHM; the
//!      iteration is exact for spheres, so a lesion's mass (and dose) does not depend
//!      on its size against the PSF. The region is sampled at a third of a SPECT
//!      voxel (trilinear), which keeps a 4 mL lesion's volume from jumping by voxels.
//!   5. Kept when its volume is at least a sphere of diameter
//!      `lesion_min_diameter_fwhm` x the FWHM (smaller hot spots cannot be told from
//!      noise or measured) and no more than half of it lies near a kidney or the
//!      spleen. Numbered by volume, largest first.
//!
//!   The region found on the reference SPECT is carried to the other time points by
//!   the organs' displacement between their low-dose CTs (the liver's, when both
//!   have one) and each time point's mask shift, as the organs are.
//!
//!   Not excluded: the urinary bladder, bowel and blood pool, which organdose does
//!   not segment: the summary says automatic VOIs need a look.

use super::boxmap::BoxMap;
use super::psf::{gaussian_blur_3d_axes, Boundary};
use super::pvc::{blurred, Psf, FWHM_PER_SIGMA};
use crate::error::{Error, Result};
use crate::organs;
use crate::volume::{Geometry, Vec3, Volume};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Label of lesion `n` (0-based) in the dosimetry's working label maps: `FIRST_LABEL +
/// n`, above every organ label, so lesions and organs never share one.
pub(crate) const FIRST_LABEL: u8 = 16;

/// At most this many lesions per study (the labels left above [`FIRST_LABEL`]).
pub(crate) const MAX_LESIONS: usize = (u8::MAX - FIRST_LABEL) as usize + 1;

/// A hot region larger than this (mL) is not a focal lesion (an organ the masks miss,
/// the bladder): not taken.
const MAX_AUTO_LESION_ML: f64 = 1000.0;

/// The largest threshold fraction the iteration goes to: the edge of a sphere of
/// about 1.25 FWHM across (`sphere_edge_fraction`). Every lesion of 4 mL or more has
/// its edge at or below it for PSFs up to 15 mm FWHM; smaller ones would need more,
/// but there the fixed point is unstable (the region's volume changes faster with the
/// fraction than the fraction with the volume, and a lesion a little off a sphere
/// collapsed to half its volume on the phantoms): their volumes come out a little
/// large instead.
const MAX_FRACTION: f64 = 0.5;

/// Iterations of the threshold before it is taken as it stands (and said so).
const MAX_ITERATIONS: usize = 30;

/// Where lesion VOIs come from (`dosimetry.lesions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LesionMode {
    /// The masks' tumour label when they have one, else SPECT hot spots.
    Auto,
    /// Only the masks' tumour label.
    Given,
    /// Only SPECT hot spots (the masks' tumour voxels are ignored).
    Detect,
    /// No lesions: the tumour label is one organ, as before schema 1.6.
    Off,
}

impl LesionMode {
    pub fn name(self) -> &'static str {
        match self {
            LesionMode::Auto => "auto",
            LesionMode::Given => "given",
            LesionMode::Detect => "detect",
            LesionMode::Off => "off",
        }
    }
}

/// How the automatic VOI's threshold is set (`dosimetry.lesion_threshold_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdMethod {
    /// Iterated to the sphere calibration of the PSF (module docs).
    Iterative,
    /// `lesion_threshold` as it stands.
    Fixed,
}

/// Where a lesion's VOI came from (`source` in `dose_summary.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LesionSource {
    Given,
    Auto,
}

/// How an automatic VOI was found (`detection` of a lesion in `dose_summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// The SPECT it was found on (h p.i.).
    pub t_h: f64,
    /// Maximum of the smoothed SPECT, Bq/mL.
    pub peak_bq_per_ml: f64,
    /// Local background B, Bq/mL.
    pub background_bq_per_ml: f64,
    /// The reference level (liver median), Bq/mL.
    pub reference_bq_per_ml: f64,
    /// Peak over reference.
    pub contrast: f64,
    /// Final fraction f of (peak - background) above background.
    pub threshold_fraction: f64,
    pub threshold_bq_per_ml: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// One lesion's VOI, on a box of the grid it was drawn or found on.
#[derive(Debug, Clone)]
pub(crate) struct Lesion {
    pub source: LesionSource,
    /// Non-zero inside; its geometry is a box of the diagnostic CT (given) or of the
    /// SPECT sampled finer (automatic).
    pub mask: Volume<u8>,
    pub volume_ml: f64,
    /// LPS, mm.
    pub centroid_mm: Vec3,
    /// The organ it lies in (mostly surrounded by, for given lesions).
    pub site: Option<u8>,
    pub detection: Option<Detection>,
}

/// A geometry for a box of `g`: first voxel at continuous index `lo`, `dims` voxels of
/// `g`'s spacing divided by `factor`.
fn sub_geometry(g: &Geometry, lo: Vec3, dims: [usize; 3], factor: f64) -> Geometry {
    let mut s = g.clone();
    s.dims = dims;
    s.origin = g.index_to_patient(lo);
    s.spacing = g.spacing.map(|x| x / factor);
    s
}

/// Index triple of linear index `l` on `dims`.
fn idx3(l: usize, dims: [usize; 3]) -> [usize; 3] {
    [
        l % dims[0],
        (l / dims[0]) % dims[1],
        l / (dims[0] * dims[1]),
    ]
}

/// Calls `f` with each of the up to 26 neighbours of voxel `l`.
fn neighbours26(l: usize, dims: [usize; 3], mut f: impl FnMut(usize)) {
    let [i, j, k] = idx3(l, dims);
    for dk in -1i64..=1 {
        let z = k as i64 + dk;
        if z < 0 || z >= dims[2] as i64 {
            continue;
        }
        for dj in -1i64..=1 {
            let y = j as i64 + dj;
            if y < 0 || y >= dims[1] as i64 {
                continue;
            }
            for di in -1i64..=1 {
                let x = i as i64 + di;
                if x < 0 || x >= dims[0] as i64 || (di == 0 && dj == 0 && dk == 0) {
                    continue;
                }
                f(x as usize + dims[0] * (y as usize + dims[1] * z as usize));
            }
        }
    }
}

/// The 26-connected components of the voxels where `inside` holds, each a list of
/// linear indices, in order of their first voxel.
pub(crate) fn components(dims: [usize; 3], inside: impl Fn(usize) -> bool) -> Vec<Vec<usize>> {
    let n = dims[0] * dims[1] * dims[2];
    let mut seen = vec![0u64; n.div_ceil(64)];
    let mark = |l: usize, seen: &mut Vec<u64>| {
        let (w, b) = (l / 64, l % 64);
        let was = seen[w] >> b & 1 == 1;
        seen[w] |= 1 << b;
        was
    };
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for l in 0..n {
        if !inside(l) || mark(l, &mut seen) {
            continue;
        }
        let mut comp = vec![l];
        stack.push(l);
        while let Some(v) = stack.pop() {
            neighbours26(v, dims, |u| {
                if inside(u) && !mark(u, &mut seen) {
                    comp.push(u);
                    stack.push(u);
                }
            });
        }
        comp.sort_unstable();
        out.push(comp);
    }
    out
}

/// The 26-connected components of `label` on `labels` (as [`given`] splits the
/// tumour label), each a list of linear voxel indices.
pub fn components_of(labels: &Volume<u8>, label: u8) -> Vec<Vec<usize>> {
    components(labels.geom.dims, |l| labels.data[l] == label)
}

/// Lesions numbered as the summary lists them: largest volume first; equal volumes by
/// position (z, then y, then x, LPS).
pub(crate) fn number(lesions: &mut [Lesion]) {
    lesions.sort_by(|a, b| {
        b.volume_ml
            .total_cmp(&a.volume_ml)
            .then(a.centroid_mm[2].total_cmp(&b.centroid_mm[2]))
            .then(a.centroid_mm[1].total_cmp(&b.centroid_mm[1]))
            .then(a.centroid_mm[0].total_cmp(&b.centroid_mm[0]))
    });
}

/// A component of `g` as a lesion mask on its bounding box, with its volume and
/// centroid.
fn component_mask(g: &Geometry, voxels: &[usize]) -> Result<(Volume<u8>, f64, Vec3)> {
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    let mut sum = [0f64; 3];
    for &l in voxels {
        let ix = idx3(l, g.dims);
        for a in 0..3 {
            lo[a] = lo[a].min(ix[a]);
            hi[a] = hi[a].max(ix[a]);
            sum[a] += ix[a] as f64;
        }
    }
    let dims: [usize; 3] = std::array::from_fn(|a| hi[a] - lo[a] + 1);
    let sg = sub_geometry(g, lo.map(|v| v as f64), dims, 1.0);
    let mut data = vec![0u8; dims[0] * dims[1] * dims[2]];
    for &l in voxels {
        let ix = idx3(l, g.dims);
        data[(ix[0] - lo[0]) + dims[0] * ((ix[1] - lo[1]) + dims[1] * (ix[2] - lo[2]))] = 1;
    }
    let c = voxels.len().max(1) as f64;
    let centroid = g.index_to_patient(sum.map(|s| s / c));
    Ok((
        Volume::new(sg, data)?,
        voxels.len() as f64 * g.voxel_volume_ml(),
        centroid,
    ))
}

/// The organ that surrounds a component: the most frequent organ label among the
/// face neighbours outside it, when it holds at least 30 % of them.
fn surrounding_organ(
    labels: &Volume<u8>,
    voxels: &[usize],
    own: impl Fn(u8) -> bool,
) -> Option<u8> {
    let dims = labels.geom.dims;
    let mut counts = [0usize; 256];
    let mut total = 0usize;
    for &l in voxels {
        let [i, j, k] = idx3(l, dims);
        let mut look = |x: i64, y: i64, z: i64| {
            if x < 0 || y < 0 || z < 0 {
                return;
            }
            let (x, y, z) = (x as usize, y as usize, z as usize);
            if x >= dims[0] || y >= dims[1] || z >= dims[2] {
                return;
            }
            let v = labels.data[x + dims[0] * (y + dims[1] * z)];
            if !own(v) {
                counts[v as usize] += 1;
                total += 1;
            }
        };
        let (i, j, k) = (i as i64, j as i64, k as i64);
        look(i - 1, j, k);
        look(i + 1, j, k);
        look(i, j - 1, k);
        look(i, j + 1, k);
        look(i, j, k - 1);
        look(i, j, k + 1);
    }
    let (best, n) = organs::ORGANS
        .iter()
        .map(|&(l, _)| (l, counts[l as usize]))
        .filter(|&(l, _)| l != organs::TUMOUR)
        .max_by_key(|&(_, n)| n)?;
    (n > 0 && n as f64 >= 0.3 * total as f64).then_some(best)
}

/// Given lesions: the components of the tumour label on `diag` (26-connected), those
/// under `min_volume_ml` dropped (said in the notes), numbered.
pub(crate) fn given(
    diag: &Volume<u8>,
    min_volume_ml: f64,
    notes: &mut Vec<String>,
) -> Result<Vec<Lesion>> {
    let comps = components(diag.geom.dims, |l| diag.data[l] == organs::TUMOUR);
    let mut out = Vec::new();
    let mut specks = 0usize;
    for c in &comps {
        let (mask, volume_ml, centroid_mm) = component_mask(&diag.geom, c)?;
        if volume_ml < min_volume_ml {
            specks += 1;
            continue;
        }
        out.push(Lesion {
            source: LesionSource::Given,
            mask,
            volume_ml,
            centroid_mm,
            site: surrounding_organ(diag, c, |v| v == organs::TUMOUR),
            detection: None,
        });
    }
    if specks > 0 {
        notes.push(format!(
            "lesions: {specks} tumour component(s) under {min_volume_ml} mL (dosimetry.lesion_min_volume_ml) on the diagnostic CT left out"
        ));
    }
    number(&mut out);
    if out.len() > MAX_LESIONS {
        notes.push(format!(
            "lesions: {} given, only the {MAX_LESIONS} largest are measured",
            out.len()
        ));
        out.truncate(MAX_LESIONS);
    }
    Ok(out)
}

/// Per organ label (1-4): its centroid (LPS mm) and voxel count on `labels`.
pub(crate) fn organ_centroids(labels: &Volume<u8>) -> BTreeMap<u8, (Vec3, usize)> {
    let dims = labels.geom.dims;
    let mut sums = [[0f64; 3]; 5];
    let mut counts = [0usize; 5];
    for (l, &v) in labels.data.iter().enumerate() {
        if (1..=4).contains(&v) {
            let ix = idx3(l, dims);
            for a in 0..3 {
                sums[v as usize][a] += ix[a] as f64;
            }
            counts[v as usize] += 1;
        }
    }
    (1u8..=4)
        .filter(|&o| counts[o as usize] > 0)
        .map(|o| {
            let c = counts[o as usize] as f64;
            (
                o,
                (
                    labels
                        .geom
                        .index_to_patient(sums[o as usize].map(|s| s / c)),
                    counts[o as usize],
                ),
            )
        })
        .collect()
}

/// How far the organs moved from one label map to another (LPS mm): the liver's
/// centroid when both have a liver, else the voxel-weighted mean over the organs both
/// have, else nothing.
pub(crate) fn displacement(
    from: &BTreeMap<u8, (Vec3, usize)>,
    to: &BTreeMap<u8, (Vec3, usize)>,
) -> Vec3 {
    if let (Some(a), Some(b)) = (from.get(&organs::LIVER), to.get(&organs::LIVER)) {
        return std::array::from_fn(|i| b.0[i] - a.0[i]);
    }
    let mut d = [0f64; 3];
    let mut w = 0f64;
    for (o, a) in from {
        if let Some(b) = to.get(o) {
            let n = a.1.min(b.1) as f64;
            for i in 0..3 {
                d[i] += n * (b.0[i] - a.0[i]);
            }
            w += n;
        }
    }
    if w > 0.0 {
        d.map(|v| v / w)
    } else {
        [0.0; 3]
    }
}

/// Paints `label` into `labels` wherever `mask`, moved by `shift_mm` (LPS), is inside
/// at the voxel's centre (nearest mask voxel). Returns the voxels painted.
pub(crate) fn paint(
    labels: &mut Volume<u8>,
    mask: &Volume<u8>,
    shift_mm: Vec3,
    label: u8,
) -> usize {
    let g = labels.geom.clone();
    let md = mask.geom.dims;
    // The mask's corners on the label grid: the box to visit.
    let (mut lo, mut hi) = ([f64::MAX; 3], [f64::MIN; 3]);
    for c in 0..8 {
        let corner: Vec3 = std::array::from_fn(|a| {
            if c >> a & 1 == 0 {
                -0.5
            } else {
                md[a] as f64 - 0.5
            }
        });
        let p = mask.geom.index_to_patient(corner);
        let q = g.patient_to_index(std::array::from_fn(|a| p[a] + shift_mm[a]));
        for a in 0..3 {
            lo[a] = lo[a].min(q[a]);
            hi[a] = hi[a].max(q[a]);
        }
    }
    let range: [(usize, usize); 3] = std::array::from_fn(|a| {
        let l = lo[a].floor().max(0.0);
        let h = hi[a].ceil().min(g.dims[a] as f64 - 1.0);
        (l as usize, h as usize)
    });
    if (0..3).any(|a| hi[a] < 0.0 || lo[a] > g.dims[a] as f64 - 1.0 || range[a].1 < range[a].0) {
        return 0;
    }
    let mut n = 0;
    for k in range[2].0..=range[2].1 {
        for j in range[1].0..=range[1].1 {
            for i in range[0].0..=range[0].1 {
                let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                let q = mask
                    .geom
                    .patient_to_index(std::array::from_fn(|a| p[a] - shift_mm[a]));
                let r = q.map(|v| v.round());
                if (0..3).any(|a| r[a] < 0.0 || r[a] > md[a] as f64 - 1.0) {
                    continue;
                }
                let m = r[0] as usize + md[0] * (r[1] as usize + md[1] * r[2] as usize);
                if mask.data[m] != 0 {
                    labels.data[i + g.dims[0] * (j + g.dims[1] * k)] = label;
                    n += 1;
                }
            }
        }
    }
    n
}

/// The error function (Abramowitz and Stegun, Handbook of Mathematical Functions,
/// 7.1.26: |error| < 1.5e-7, plenty for a threshold fraction).
fn erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    s * y
}

/// A uniform sphere of radius `r_mm` (value 1, background 0) blurred by an isotropic
/// Gaussian of `sigma_mm`, at distance `d_mm` from its centre (the closed form of the
/// convolution in spherical coordinates).
pub(crate) fn blurred_sphere(d_mm: f64, r_mm: f64, sigma_mm: f64) -> f64 {
    let s = sigma_mm;
    let sq2 = std::f64::consts::SQRT_2;
    if d_mm < 1e-9 {
        let u = r_mm / s;
        return erf(u / sq2) - (2.0 / std::f64::consts::PI).sqrt() * u * (-u * u / 2.0).exp();
    }
    let (a, b) = ((r_mm - d_mm) / (sq2 * s), (r_mm + d_mm) / (sq2 * s));
    0.5 * (erf(a) + erf(b))
        - s / (d_mm * (2.0 * std::f64::consts::PI).sqrt())
            * ((-(r_mm - d_mm).powi(2) / (2.0 * s * s)).exp()
                - (-(r_mm + d_mm).powi(2) / (2.0 * s * s)).exp())
}

/// The fraction of its maximum (above background) that the blurred sphere of radius
/// `r_mm` has at its edge: the threshold that gives back the sphere's volume.
pub(crate) fn sphere_edge_fraction(r_mm: f64, sigma_mm: f64) -> f64 {
    if !(r_mm > 0.0 && sigma_mm > 0.0) {
        return 0.5;
    }
    let peak = blurred_sphere(0.0, r_mm, sigma_mm);
    if peak <= 1e-12 {
        return 0.95;
    }
    (blurred_sphere(r_mm, r_mm, sigma_mm) / peak).clamp(0.2, 0.95)
}

/// The radius (mm) where a blurred sphere of radius `r_mm` falls to `frac` of its
/// maximum (above background).
fn contour_radius(frac: f64, r_mm: f64, sigma_mm: f64) -> f64 {
    let level = frac * blurred_sphere(0.0, r_mm, sigma_mm);
    let (mut lo, mut hi) = (0.0, r_mm + 8.0 * sigma_mm);
    for _ in 0..60 {
        let m = 0.5 * (lo + hi);
        if blurred_sphere(m, r_mm, sigma_mm) > level {
            lo = m;
        } else {
            hi = m;
        }
    }
    lo
}

/// The radius (mm) of the sphere whose `frac` contour, blurred by `sigma_mm`, has
/// radius `rho_mm`; 0 when even a point's contour is wider (the contour radius grows
/// with the sphere's).
pub(crate) fn sphere_of_contour(frac: f64, rho_mm: f64, sigma_mm: f64) -> f64 {
    // A point's contour is the Gaussian's: sigma sqrt(2 ln(1/frac)). Below a tenth of
    // sigma the closed form loses its digits (differences of erf), and a sphere that
    // small is a point for the contour anyway.
    let point = sigma_mm * (2.0 * (1.0 / frac.clamp(1e-6, 1.0)).ln()).sqrt();
    let lo0 = 0.1 * sigma_mm;
    if rho_mm <= point || contour_radius(frac, lo0, sigma_mm) >= rho_mm {
        return 0.0;
    }
    let (mut lo, mut hi) = (lo0, rho_mm * 2.0);
    for _ in 0..60 {
        let m = 0.5 * (lo + hi);
        if contour_radius(frac, m, sigma_mm) < rho_mm {
            lo = m;
        } else {
            hi = m;
        }
    }
    lo
}

/// What [`detect`] needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DetectSettings {
    pub psf: Psf,
    pub contrast: f64,
    pub threshold: f64,
    pub method: ThresholdMethod,
    pub min_diameter_fwhm: f64,
}

/// The median of `v` (NaN when empty).
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// One automatic region: its fine samples and where they are.
struct FineRegion {
    /// First coarse voxel of the sampled box.
    lo: [usize; 3],
    dims: [usize; 3],
    inside: Vec<bool>,
    count: usize,
}

/// Automatic lesion VOIs on one SPECT (module docs). `organs`: each organ's coverage
/// on the SPECT grid (after its mask shift); `t_h`: the SPECT's time.
pub(crate) fn detect(
    spect: &Volume<f32>,
    t_h: f64,
    organs_cov: &BTreeMap<u8, BoxMap>,
    s: &DetectSettings,
    notes: &mut Vec<String>,
) -> Result<Vec<Lesion>> {
    let g = &spect.geom;
    let dims = g.dims;
    let n = g.len();
    if spect.data.len() != n {
        return Err(Error::input(
            "lesion detection: SPECT size differs from its grid",
        ));
    }
    let vox_ml = g.voxel_volume_ml();
    let sig_psf = s.psf.sigma_mm();
    let sig_smooth = sig_psf.map(|x| 0.5 * x);
    let sig_eff: [f64; 3] = std::array::from_fn(|a| {
        (sig_psf[a].powi(2) + sig_smooth[a].powi(2) + g.spacing[a].powi(2) / 12.0).sqrt()
    });
    let sigma = (sig_eff[0] * sig_eff[1] * sig_eff[2]).cbrt();
    let fwhm = (s.psf.fwhm_mm[0] * s.psf.fwhm_mm[1] * s.psf.fwhm_mm[2]).cbrt();
    let mut sm = spect.data.clone();
    gaussian_blur_3d_axes(&mut sm, dims, g.spacing, sig_smooth, Boundary::Zero);
    let smv = Volume::new(g.clone(), sm)?;
    let sm = &smv.data;

    // Organ maps on the grid: liver, any organ, and near a kidney or the spleen.
    let mut liver = vec![false; n];
    let mut occupied = vec![false; n];
    let mut excluded = vec![false; n];
    // Inside a kidney or the spleen: a region never grows there (their uptake above
    // the threshold would join a lesion beside them).
    let mut blocked = vec![false; n];
    for (&lab, b) in organs_cov {
        if !b.fits(dims) {
            continue;
        }
        let avoid = matches!(
            lab,
            organs::KIDNEY_LEFT | organs::KIDNEY_RIGHT | organs::SPLEEN
        );
        b.for_each(dims, |l, v| {
            if v >= 0.5 {
                occupied[l] = true;
                if lab == organs::LIVER {
                    liver[l] = true;
                }
                if avoid {
                    blocked[l] = true;
                }
            }
        });
        if matches!(
            lab,
            organs::KIDNEY_LEFT | organs::KIDNEY_RIGHT | organs::SPLEEN
        ) {
            // Blurred with sigma = FWHM / 2 and cut at Phi(-2) = 0.0228: about one
            // FWHM beyond the organ's edge, where its own counts still spill.
            let near = Psf {
                fwhm_mm: s.psf.fwhm_mm.map(|f| 0.5 * f * FWHM_PER_SIGMA),
            };
            blurred(b, g, &near).for_each(dims, |l, v| {
                if v >= 0.022_750_13 {
                    excluded[l] = true;
                }
            });
        }
    }

    // Reference level.
    let mut liver_vals: Vec<f64> = (0..n).filter(|&l| liver[l]).map(|l| sm[l] as f64).collect();
    let (reference, what) = if liver_vals.len() as f64 * vox_ml >= 50.0 {
        (median(&mut liver_vals), "liver median")
    } else {
        let max = sm.iter().fold(0f32, |a, &b| a.max(b)) as f64;
        let mut field: Vec<f64> = sm
            .iter()
            .map(|&v| v as f64)
            .filter(|&v| v > 0.01 * max)
            .collect();
        (median(&mut field), "field median")
    };
    drop(liver_vals);
    if !(reference.is_finite() && reference > 0.0) {
        notes.push(format!(
            "lesions: no automatic detection on the {t_h:.1} h SPECT: its {what} is not positive"
        ));
        return Ok(Vec::new());
    }

    // Candidates: local maxima above contrast x reference.
    let floor = (s.contrast * reference) as f32;
    let mut peaks: Vec<(f32, usize)> = Vec::new();
    for k in 1..dims[2].saturating_sub(1) {
        for j in 1..dims[1].saturating_sub(1) {
            for i in 1..dims[0].saturating_sub(1) {
                let l = i + dims[0] * (j + dims[1] * k);
                let v = sm[l];
                if v < floor || excluded[l] {
                    continue;
                }
                let mut top = true;
                neighbours26(l, dims, |u| {
                    // Ties go to the lower index: a flat top gives one maximum.
                    if sm[u] > v || (sm[u] == v && u < l) {
                        top = false;
                    }
                });
                if top {
                    peaks.push((v, l));
                }
            }
        }
    }
    peaks.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    const MAX_CANDIDATES: usize = 5000;
    if peaks.len() > MAX_CANDIDATES {
        notes.push(format!(
            "lesions: {} hot spots on the {t_h:.1} h SPECT, only the {MAX_CANDIDATES} highest looked at",
            peaks.len()
        ));
        peaks.truncate(MAX_CANDIDATES);
    }

    let v_min_ml = std::f64::consts::PI / 6.0 * (s.min_diameter_fwhm * fwhm).powi(3) / 1000.0;
    let max_vox = (MAX_AUTO_LESION_ML / vox_ml).ceil() as usize;
    let q = (g.spacing.iter().fold(0f64, |a, &b| a.max(b)) / 1.5)
        .ceil()
        .clamp(1.0, 3.0) as usize;
    let fine_vox_ml = vox_ml / (q * q * q) as f64;
    let mut taken = vec![false; n];
    let mut out: Vec<Lesion> = Vec::new();
    let (mut too_small, mut too_large, mut organ_like) = (0usize, 0usize, 0usize);
    for &(pv, pl) in &peaks {
        if taken[pl] {
            continue;
        }
        let m = pv as f64;
        let in_liver = liver[pl];
        let peak_ix = idx3(pl, dims);
        // Local background: median of a shell one to two FWHM beyond radius r.
        let background = |r_mm: f64, taken: &[bool]| -> f64 {
            let (r0, r1) = (r_mm + fwhm, r_mm + 2.0 * fwhm);
            let reach: [usize; 3] = std::array::from_fn(|a| (r1 / g.spacing[a]).ceil() as usize);
            let mut vals = Vec::new();
            let mut all = Vec::new();
            for k in peak_ix[2].saturating_sub(reach[2])..(peak_ix[2] + reach[2] + 1).min(dims[2]) {
                for j in
                    peak_ix[1].saturating_sub(reach[1])..(peak_ix[1] + reach[1] + 1).min(dims[1])
                {
                    for i in peak_ix[0].saturating_sub(reach[0])
                        ..(peak_ix[0] + reach[0] + 1).min(dims[0])
                    {
                        let d2: f64 = [i, j, k]
                            .iter()
                            .zip(&peak_ix)
                            .zip(&g.spacing)
                            .map(|((&x, &p), &sp)| ((x as f64 - p as f64) * sp).powi(2))
                            .sum();
                        if d2 < r0 * r0 || d2 > r1 * r1 {
                            continue;
                        }
                        let l = i + dims[0] * (j + dims[1] * k);
                        if taken[l] || excluded[l] {
                            continue;
                        }
                        all.push(sm[l] as f64);
                        let ok = if in_liver { liver[l] } else { !occupied[l] };
                        if ok {
                            vals.push(sm[l] as f64);
                        }
                    }
                }
            }
            if vals.len() >= 8 {
                median(&mut vals)
            } else if in_liver {
                reference
            } else {
                median(&mut all)
            }
        };
        let mut f = s.threshold;
        let mut b = background(0.5 * fwhm, &taken);
        let mut iterations = 0;
        let mut converged = s.method == ThresholdMethod::Fixed;
        let mut region: Option<(FineRegion, Vec<usize>)> = None;
        let mut rejected = None;
        while iterations < MAX_ITERATIONS {
            iterations += 1;
            if !(b.is_finite() && m > b) {
                rejected = Some("flat");
                break;
            }
            let level = b + f * (m - b);
            // Coarse region first: where the fine samples can be.
            let mut coarse = vec![pl];
            let mut seen = std::collections::HashSet::from([pl]);
            let mut at = 0;
            let mut overflow = false;
            while at < coarse.len() {
                let v = coarse[at];
                at += 1;
                neighbours26(v, dims, |u| {
                    if !taken[u] && !blocked[u] && sm[u] as f64 >= level && seen.insert(u) {
                        coarse.push(u);
                    }
                });
                if coarse.len() > max_vox {
                    overflow = true;
                    break;
                }
            }
            if overflow {
                rejected = Some("large");
                break;
            }
            let fine = fine_region(&smv, &coarse, pl, q, level, &|l| taken[l] || blocked[l]);
            let v_ml = fine.count as f64 * fine_vox_ml;
            let r_mm = (3.0 * v_ml * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt();
            region = Some((fine, coarse));
            if s.method == ThresholdMethod::Fixed {
                break;
            }
            let f_new = sphere_edge_fraction(r_mm, sigma).min(MAX_FRACTION);
            let b_new = background(r_mm, &taken);
            if (f_new - f).abs() < 2e-3 && (b_new - b).abs() <= 0.005 * (m - b).abs() {
                converged = true;
                break;
            }
            // Damped after a few steps: a region on a ridge can flip between two sizes.
            let w = if iterations > 8 { 0.5 } else { 1.0 };
            f += w * (f_new - f);
            b += w * (b_new - b);
        }
        let Some((fine, coarse)) = region.filter(|_| rejected.is_none()) else {
            if rejected == Some("large") {
                too_large += 1;
            }
            // Mark the peak so its plateau is not tried again.
            taken[pl] = true;
            continue;
        };
        let v_ml = fine.count as f64 * fine_vox_ml;
        // Where the fine samples fall on the grid.
        let mut near_organ = 0usize;
        let mut in_liv = 0usize;
        let mut sum = [0f64; 3];
        let fd = fine.dims;
        let coarse_of = |u: usize| -> ([usize; 3], Vec3) {
            let fi = idx3(u, fd);
            let c: Vec3 =
                std::array::from_fn(|a| fine.lo[a] as f64 + (fi[a] as f64 + 0.5) / q as f64 - 0.5);
            let r = std::array::from_fn(|a| (c[a].round().max(0.0) as usize).min(dims[a] - 1));
            (r, c)
        };
        for (u, _) in fine.inside.iter().enumerate().filter(|(_, &x)| x) {
            let (r, c) = coarse_of(u);
            let l = r[0] + dims[0] * (r[1] + dims[1] * r[2]);
            if excluded[l] {
                near_organ += 1;
            }
            if liver[l] {
                in_liv += 1;
            }
            for a in 0..3 {
                sum[a] += c[a];
            }
        }
        for &l in &coarse {
            taken[l] = true;
        }
        // The size it is judged by: at the capped fraction the region is wider than
        // the object (a point source's region is the PSF's half maximum), so the
        // sphere whose contour it is.
        let size_ml = if f >= MAX_FRACTION - 1e-9 {
            let rho = (3.0 * v_ml * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt();
            4.0 / 3.0 * std::f64::consts::PI * sphere_of_contour(f, rho, sigma).powi(3) / 1000.0
        } else {
            v_ml
        };
        if size_ml < v_min_ml {
            too_small += 1;
            continue;
        }
        if 2 * near_organ > fine.count {
            organ_like += 1;
            continue;
        }
        let cnt = fine.count.max(1) as f64;
        let centroid_mm = g.index_to_patient(sum.map(|x| x / cnt));
        let fine_geom = sub_geometry(
            g,
            std::array::from_fn(|a| fine.lo[a] as f64 - 0.5 + 0.5 / q as f64),
            fd,
            q as f64,
        );
        let mask = Volume::new(
            fine_geom,
            fine.inside.iter().map(|&x| u8::from(x)).collect(),
        )?;
        let level = b + f * (m - b);
        out.push(Lesion {
            source: LesionSource::Auto,
            mask,
            volume_ml: v_ml,
            centroid_mm,
            site: (2 * in_liv >= fine.count).then_some(organs::LIVER),
            detection: Some(Detection {
                t_h,
                peak_bq_per_ml: m,
                background_bq_per_ml: b,
                reference_bq_per_ml: reference,
                contrast: m / reference,
                threshold_fraction: f,
                threshold_bq_per_ml: level,
                iterations,
                converged,
            }),
        });
        if out.len() >= MAX_LESIONS {
            notes.push(format!(
                "lesions: more than {MAX_LESIONS} hot spots on the {t_h:.1} h SPECT: only the first {MAX_LESIONS} measured"
            ));
            break;
        }
    }
    let skipped = [
        (
            too_small,
            format!(
                "smaller than a sphere of {:.1} mm ({v_min_ml:.2} mL)",
                s.min_diameter_fwhm * fwhm
            ),
        ),
        (too_large, format!("larger than {MAX_AUTO_LESION_ML:.0} mL")),
        (
            organ_like,
            "mostly within one FWHM of a kidney or the spleen".to_string(),
        ),
    ];
    let skipped: Vec<String> = skipped
        .into_iter()
        .filter(|(k, _)| *k > 0)
        .map(|(k, why)| format!("{k} {why}"))
        .collect();
    notes.push(format!(
        "lesions: {} automatic VOI(s) on the {t_h:.1} h SPECT (hot spots above {:.1} x the {what} {:.0} Bq/mL{}){}",
        out.len(),
        s.contrast,
        reference,
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; hot spots left out: {}", skipped.join(", "))
        },
        if out.is_empty() {
            ""
        } else {
            ": check them, the bladder, bowel and blood pool are not masked"
        }
    ));
    number(&mut out);
    Ok(out)
}

/// The samples at `q` per voxel and axis (trilinear in the smoothed SPECT) of the
/// coarse region's box grown by a voxel, above `level` and connected to the peak.
fn fine_region(
    smv: &Volume<f32>,
    coarse: &[usize],
    peak: usize,
    q: usize,
    level: f64,
    taken: &dyn Fn(usize) -> bool,
) -> FineRegion {
    let dims = smv.geom.dims;
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for &l in coarse {
        let ix = idx3(l, dims);
        for a in 0..3 {
            lo[a] = lo[a].min(ix[a]);
            hi[a] = hi[a].max(ix[a]);
        }
    }
    let lo: [usize; 3] = std::array::from_fn(|a| lo[a].saturating_sub(1));
    let hi: [usize; 3] = std::array::from_fn(|a| (hi[a] + 1).min(dims[a] - 1));
    let fd: [usize; 3] = std::array::from_fn(|a| (hi[a] - lo[a] + 1) * q);
    let nf = fd[0] * fd[1] * fd[2];
    let mut above = vec![false; nf];
    for w in 0..fd[2] {
        for v in 0..fd[1] {
            for u in 0..fd[0] {
                let c: Vec3 = [
                    lo[0] as f64 + (u as f64 + 0.5) / q as f64 - 0.5,
                    lo[1] as f64 + (v as f64 + 0.5) / q as f64 - 0.5,
                    lo[2] as f64 + (w as f64 + 0.5) / q as f64 - 0.5,
                ];
                let r: [usize; 3] =
                    std::array::from_fn(|a| (c[a].round().max(0.0) as usize).min(dims[a] - 1));
                if taken(r[0] + dims[0] * (r[1] + dims[1] * r[2])) {
                    continue;
                }
                if smv
                    .sample_linear(c, dims)
                    .is_some_and(|x| x as f64 >= level)
                {
                    above[u + fd[0] * (v + fd[1] * w)] = true;
                }
            }
        }
    }
    // Flood from the sample at the peak voxel's centre.
    let p = idx3(peak, dims);
    let start = (0..3).fold(0usize, |acc, a| {
        let s = (p[2 - a] - lo[2 - a]) * q + q / 2;
        acc * fd[2 - a] + s
    });
    let mut inside = vec![false; nf];
    let mut count = 0;
    if above[start] {
        let mut stack = vec![start];
        inside[start] = true;
        while let Some(x) = stack.pop() {
            count += 1;
            neighbours26(x, fd, |y| {
                if above[y] && !inside[y] {
                    inside[y] = true;
                    stack.push(y);
                }
            });
        }
    }
    FineRegion {
        lo,
        dims: fd,
        inside,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sphere_profile_matches_its_limits_and_a_numerical_blur() {
        // Large sphere: the edge sits at half the plateau.
        assert!((sphere_edge_fraction(200.0, 5.0) - 0.5).abs() < 0.01);
        // Centre of a large sphere is 1; far outside 0.
        assert!((blurred_sphere(0.0, 200.0, 5.0) - 1.0).abs() < 1e-6);
        assert!(blurred_sphere(100.0, 10.0, 5.0).abs() < 1e-9);
        // The radial profile against a brute-force 3-D blur on a fine grid: radius
        // 10 mm, sigma 5 mm, at the centre and at the edge.
        let (r, s, h) = (10.0f64, 5.0f64, 0.5f64);
        let num = |d: f64| {
            let mut acc = 0.0;
            let m = ((r + 5.0 * s) / h) as i64;
            for k in -m..=m {
                for j in -m..=m {
                    for i in -m..=m {
                        let p = [i as f64 * h, j as f64 * h, k as f64 * h];
                        if p[0] * p[0] + p[1] * p[1] + p[2] * p[2] > r * r {
                            continue;
                        }
                        let q2 = (p[0] - d).powi(2) + p[1] * p[1] + p[2] * p[2];
                        acc += (-q2 / (2.0 * s * s)).exp();
                    }
                }
            }
            acc * h * h * h / (2.0 * std::f64::consts::PI * s * s).powf(1.5)
        };
        for d in [0.0, r] {
            let (a, b) = (blurred_sphere(d, r, s), num(d));
            assert!(
                (a - b).abs() < 0.01,
                "d {d}: closed form {a} vs numeric {b}"
            );
        }
    }

    #[test]
    fn a_contour_gives_back_its_sphere() {
        for r in [3.0, 8.0, 15.0] {
            let rho = contour_radius(0.5, r, 6.0);
            assert!((sphere_of_contour(0.5, rho, 6.0) - r).abs() < 1e-3, "{r}");
        }
        // A small sphere's half-maximum contour: about the Gaussian's half width at
        // half maximum; a narrower one is no sphere.
        let hwhm = 6.0 * (2.0 * std::f64::consts::LN_2).sqrt();
        assert!((contour_radius(0.5, 0.6, 6.0) - hwhm).abs() < 0.05);
        assert_eq!(sphere_of_contour(0.5, 0.9 * hwhm, 6.0), 0.0);
    }

    #[test]
    fn components_are_26_connected_and_numbered_by_size() {
        // Hand-made map 12 x 10 x 6: a 3x3x3 cube (27 voxels), a 2x2x2 cube (8)
        // touching another 2x2x2 cube corner to corner (one component of 16), and a
        // single voxel (a speck).
        let g = Geometry::new([12, 10, 6], [2.0, 2.0, 2.0], [0.0; 3]);
        let mut v = Volume::filled(g, organs::LIVER);
        let mut set = |i: usize, j: usize, k: usize| v.set(i, j, k, organs::TUMOUR);
        for k in 1..4 {
            for j in 1..4 {
                for i in 1..4 {
                    set(i, j, k);
                }
            }
        }
        for k in 0..2 {
            for j in 6..8 {
                for i in 6..8 {
                    set(i, j, k);
                    set(i + 2, j + 2, k + 2);
                }
            }
        }
        set(10, 1, 5);
        let comps = components(v.geom.dims, |l| v.data[l] == organs::TUMOUR);
        let mut sizes: Vec<usize> = comps.iter().map(|c| c.len()).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![1, 16, 27]);
        // 8 mm3 voxels: 0.008 mL; the speck (0.008 mL) under 0.01 mL goes.
        let mut notes = Vec::new();
        let l = given(&v, 0.01, &mut notes).unwrap();
        assert_eq!(l.len(), 2);
        assert!((l[0].volume_ml - 27.0 * 0.008).abs() < 1e-12);
        assert!((l[1].volume_ml - 16.0 * 0.008).abs() < 1e-12);
        // The cube's centroid: voxel (2, 2, 2) at 2 mm spacing.
        assert_eq!(l[0].centroid_mm, [4.0, 4.0, 4.0]);
        assert_eq!(l[0].site, Some(organs::LIVER));
        assert!(notes[0].contains("1 tumour component"), "{notes:?}");
        // Equal volumes go by position: a copy further along z comes second.
        let mut two = vec![l[1].clone(), l[1].clone()];
        two[0].centroid_mm[2] += 10.0;
        number(&mut two);
        assert!(two[0].centroid_mm[2] < two[1].centroid_mm[2]);
    }

    #[test]
    fn painting_a_mask_moves_it_by_the_shift() {
        let g = Geometry::new([20, 20, 20], [1.0; 3], [0.0; 3]);
        let mut v = Volume::filled(g.clone(), 0u8);
        for i in 5..8 {
            v.set(i, 5, 5, organs::TUMOUR);
        }
        let mut notes = Vec::new();
        let l = given(&v, 0.0, &mut notes).unwrap();
        let mut target = Volume::filled(g, 0u8);
        let n = paint(&mut target, &l[0].mask, [4.0, 0.0, 2.0], 16);
        assert_eq!(n, 3);
        for i in 9..12 {
            assert_eq!(target.get(i, 5, 7), 16);
        }
    }

    /// A 15 mm-radius sphere (14.1 mL) of 10 on a flat background of 1 (the "liver"),
    /// blurred by a 12.5 mm FWHM Gaussian, on 2 mm voxels: one lesion found, its
    /// volume within 5 % and its centre within 1 mm; a 4 mm-radius sphere (smaller
    /// than a sphere of one FWHM) is not.
    #[test]
    fn a_blurred_sphere_on_a_flat_background_is_found_with_its_volume() {
        let g = Geometry::new([60, 60, 60], [2.0; 3], [-59.0, -59.0, -59.0]);
        let mut act = vec![1f32; g.len()];
        let r = 15.0;
        let small_c = [30.0, 30.0, 30.0];
        for (l, a) in act.iter_mut().enumerate() {
            let p = g.index_to_patient(idx3(l, g.dims).map(|x| x as f64));
            if p.iter().map(|x| x * x).sum::<f64>() <= r * r {
                *a = 10.0;
            }
            if p.iter()
                .zip(&small_c)
                .map(|(x, c)| (x - c).powi(2))
                .sum::<f64>()
                <= 16.0
            {
                *a = 10.0;
            }
        }
        let psf = Psf::new(12.5, None);
        gaussian_blur_3d_axes(&mut act, g.dims, g.spacing, psf.sigma_mm(), Boundary::Clamp);
        let spect = Volume::new(g.clone(), act).unwrap();
        // The whole field is liver.
        let liver = BoxMap {
            lo: [0; 3],
            dims: g.dims,
            w: vec![1.0; g.len()],
        };
        let cov = BTreeMap::from([(organs::LIVER, liver)]);
        let s = DetectSettings {
            psf,
            contrast: 1.5,
            threshold: 0.42,
            method: ThresholdMethod::Iterative,
            min_diameter_fwhm: 1.0,
        };
        let mut notes = Vec::new();
        let found = detect(&spect, 24.0, &cov, &s, &mut notes).unwrap();
        assert_eq!(found.len(), 1, "{notes:?}");
        let want = 4.0 / 3.0 * std::f64::consts::PI * r.powi(3) / 1000.0;
        let l = &found[0];
        let d = l.detection.as_ref().unwrap();
        eprintln!(
            "volume {:.2} mL (sphere {want:.2}), centre {:?}, f {:.3} after {} iterations, background {:.3}",
            l.volume_ml, l.centroid_mm, d.threshold_fraction, d.iterations, d.background_bq_per_ml
        );
        assert!(
            (l.volume_ml / want - 1.0).abs() < 0.05,
            "{} vs {want}",
            l.volume_ml
        );
        assert!(
            l.centroid_mm.iter().all(|c| c.abs() < 1.0),
            "{:?}",
            l.centroid_mm
        );
        assert!(d.converged);
        assert_eq!(l.site, Some(organs::LIVER));
        assert!((d.background_bq_per_ml - 1.0).abs() < 0.05);
        // The fixed 42 % gives a visibly different volume for this size.
        let fixed = detect(
            &spect,
            24.0,
            &cov,
            &DetectSettings {
                method: ThresholdMethod::Fixed,
                ..s
            },
            &mut notes,
        )
        .unwrap();
        assert!((fixed[0].volume_ml / want - 1.0).abs() > 0.05);
        // Inside a kidney the same hot spot is organ uptake.
        let kidney = BoxMap {
            lo: [20; 3],
            dims: [20; 3],
            w: vec![1.0; 8000],
        };
        let cov = BTreeMap::from([(organs::KIDNEY_LEFT, kidney)]);
        let none = detect(&spect, 24.0, &cov, &s, &mut notes).unwrap();
        assert!(none.is_empty());
    }
}
