//! Region-based partial-volume correction of organ activities on one SPECT.
//!
//! A SPECT of system resolution 10-15 mm FWHM spreads a kidney's counts well beyond
//! its CT outline, and the neighbours' counts into it: the activity summed in a VOI
//! that follows the CT border is biased (about -11 % for kidneys with the paper's
//! 3 mm margin, `cargo bench --bench dose_margins`). With the CT masks carried onto
//! the SPECT grid and the camera's point-spread function (PSF), the mean activity
//! concentration of each region is recovered by solving a small linear system:
//!
//! - `Gtm`: the geometric transfer matrix (Rousset, Ma and Evans, J Nucl Med
//!   1998;39:904-911): `y_i = sum_j w_ij t_j`, `y_i` the mean of the image over region
//!   i, `w_ij` the mean over region i of region j's indicator blurred by the PSF,
//!   `t_j` the true mean concentration of region j.
//! - `Labbe`: the same regions fitted to every voxel by least squares, `min |y - A t|^2`
//!   with the blurred indicators as the columns of A (Labbé et al., J Nucl Med
//!   1998;39:1330; PETPVC's "Labbé" region-based method, Thomas et al., Phys Med Biol
//!   2016;61:7975).
//! - `Rc`: one recovery coefficient per organ, `RC = mean over the VOI of the blurred
//!   organ / organ volume`, as recovery-coefficient methods (OpenDose3D) apply: no
//!   spill-in from neighbours or background is modelled.
//!
//! Regions: each organ (its coverage fraction on the SPECT grid), one background shell
//! per organ (the voxels within `shell_mm` of it that belong to no organ, each voxel to
//! the nearest organ), and the rest of the field of view. Region weights sum to 1 in
//! every voxel (a partition of unity), so the rest is never stored: its blurred
//! indicator is `P 1 - sum_j P chi_j`, and `P 1` (the blurred field of view, zero
//! outside the grid as in [`Boundary::Zero`]) is separable. Every other map is held on
//! its region's bounding box plus the PSF's reach only.
//!
//! Assumptions (said in the summary's warnings when they break): uniform concentration
//! within each region, a depth-independent Gaussian PSF, masks registered to the SPECT.

use super::boxmap::BoxMap;
use super::psf::{
    blur_3d_with_taps, gaussian_blur_3d_axes, gaussian_taps, gaussian_taps_to, Boundary,
};
use crate::error::{Error, Result};
use crate::volume::Geometry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// FWHM = 2 sqrt(2 ln 2) sigma for a Gaussian.
pub(crate) const FWHM_PER_SIGMA: f64 = 2.354_820_045_030_949_3;

/// How organ activities are corrected for partial volume (`dosimetry.pvc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PvcMethod {
    /// Activity in the border-extended VOI, as the paper.
    None,
    Gtm,
    Labbe,
    Rc,
}

impl PvcMethod {
    /// The method of a configuration or command-line name.
    pub fn from_name(s: &str) -> std::result::Result<PvcMethod, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(PvcMethod::None),
            "gtm" => Ok(PvcMethod::Gtm),
            "labbe" | "labbé" => Ok(PvcMethod::Labbe),
            "rc" => Ok(PvcMethod::Rc),
            other => Err(format!(
                "unknown partial-volume correction {other:?}: none, gtm, labbe or rc"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PvcMethod::None => "none",
            PvcMethod::Gtm => "gtm",
            PvcMethod::Labbe => "labbe",
            PvcMethod::Rc => "rc",
        }
    }
}

/// A depth-independent Gaussian PSF, FWHM in mm per patient axis (x, y in-plane; z
/// axial).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Psf {
    pub fwhm_mm: [f64; 3],
}

impl Psf {
    pub fn new(fwhm_mm: f64, axial_fwhm_mm: Option<f64>) -> Psf {
        Psf {
            fwhm_mm: [fwhm_mm, fwhm_mm, axial_fwhm_mm.unwrap_or(fwhm_mm)],
        }
    }
    pub fn sigma_mm(&self) -> [f64; 3] {
        self.fwhm_mm.map(|f| f / FWHM_PER_SIGMA)
    }
    /// The same PSF wider (or narrower, `d < 0`) by `d` mm FWHM on every axis.
    pub fn widened(&self, d: f64) -> Psf {
        Psf {
            fwhm_mm: self.fwhm_mm.map(|f| (f + d).max(0.0)),
        }
    }
}

/// One region of the model.
#[derive(Debug, Clone)]
struct Region {
    /// Organ label, or `None` for a background shell.
    organ: Option<u8>,
    /// Shell of this organ (for shells).
    near: u8,
    chi: BoxMap,
}

/// What the correction found for one organ.
#[derive(Debug, Clone, Serialize)]
pub struct PvcOrgan {
    pub concentration_bq_per_ml: f64,
    pub activity_mbq: f64,
    /// Recovery of the organ alone: mean over the organ of its own blurred indicator.
    pub self_recovery: f64,
}

/// The result of one correction.
#[derive(Debug, Clone, Serialize)]
pub struct PvcResult {
    pub method: PvcMethod,
    pub organs: BTreeMap<u8, PvcOrgan>,
    /// Mean concentration of each organ's background shell, Bq/mL.
    pub shell_concentration_bq_per_ml: BTreeMap<u8, f64>,
    pub rest_concentration_bq_per_ml: f64,
    /// 1-norm condition number of the matrix solved (for Labbé: of the normal
    /// equations' square root, comparable with the GTM's).
    pub condition_number: f64,
    pub warnings: Vec<String>,
}

/// Settings of one correction.
#[derive(Debug, Clone, Copy)]
pub struct PvcSettings {
    pub method: PvcMethod,
    pub psf: Psf,
    /// Width of each organ's background shell (mm).
    pub shell_mm: f64,
}

/// Corrects organ activities on one SPECT.
///
/// `spect`: Bq/mL on `geom`; `core`: each organ's coverage fraction on the same grid
/// (full grid); `voi`: the VOI weights of each organ (for `Rc`). The result's organs are those of `core` with any coverage.
pub fn correct(
    spect: &[f32],
    geom: &Geometry,
    core: &BTreeMap<u8, BoxMap>,
    voi: &BTreeMap<u8, BoxMap>,
    settings: &PvcSettings,
) -> Result<PvcResult> {
    let regions = Regions::new(geom, core, settings)?;
    regions.correct(spect, geom, voi, settings)
}

/// The regions of the model on one SPECT grid: made once, solved for several PSFs
/// (the configured one and one for its uncertainty).
#[derive(Debug, Clone)]
pub(crate) struct Regions {
    organs: Vec<(u8, BoxMap)>,
    regions: Vec<Region>,
}

impl Regions {
    /// The organs of `core` and, for GTM and Labbé, their background shells.
    pub fn new(
        geom: &Geometry,
        core: &BTreeMap<u8, BoxMap>,
        settings: &PvcSettings,
    ) -> Result<Regions> {
        let grid = geom.dims;
        if !core.values().all(|b| b.fits(grid)) {
            return Err(Error::input(
                "partial-volume correction: an organ map reaches beyond the SPECT grid",
            ));
        }
        let organs: Vec<(u8, BoxMap)> = core
            .iter()
            .filter(|(_, b)| b.sum() > 0.0)
            .map(|(&l, b)| (l, b.clone()))
            .collect();
        if organs.is_empty() {
            return Err(Error::input(
                "partial-volume correction: no organ on the SPECT grid",
            ));
        }
        let shells = match settings.method {
            PvcMethod::Gtm | PvcMethod::Labbe => {
                background_shells(&organs, geom, settings.shell_mm)
            }
            _ => Vec::new(),
        };
        let mut regions: Vec<Region> = organs
            .iter()
            .map(|(l, b)| Region {
                organ: Some(*l),
                near: *l,
                chi: b.clone(),
            })
            .collect();
        regions.extend(shells.into_iter().map(|(l, b)| Region {
            organ: None,
            near: l,
            chi: b,
        }));
        Ok(Regions { organs, regions })
    }

    /// Solves for the region concentrations with `settings.method` and `.psf`.
    pub fn correct(
        &self,
        spect: &[f32],
        geom: &Geometry,
        voi: &BTreeMap<u8, BoxMap>,
        settings: &PvcSettings,
    ) -> Result<PvcResult> {
        let grid = geom.dims;
        if spect.len() != geom.len() || !voi.values().all(|b| b.fits(grid)) {
            return Err(Error::input(
                "partial-volume correction: SPECT and organ maps differ in size",
            ));
        }
        let vox_ml = geom.voxel_volume_ml();
        let (organs, regions) = (&self.organs, &self.regions);
        let mut warnings = Vec::new();
        let (t, cond, self_rec) = match settings.method {
            PvcMethod::Rc => {
                let mut t = Vec::new();
                let mut rec = Vec::new();
                for (l, b) in organs {
                    let blurred = blurred(b, geom, &settings.psf);
                    let vol = b.sum();
                    let w = voi
                        .get(l)
                        .ok_or_else(|| Error::input(format!("no VOI for label {l}")))?;
                    let rc = blurred.dot(w) / vol;
                    let own = blurred.dot(b) / vol;
                    let y = w.dot_full(spect, grid);
                    t.push(if rc > 0.0 { y / (rc * vol) } else { f64::NAN });
                    rec.push(own);
                }
                (t, 1.0, rec)
            }
            PvcMethod::Gtm | PvcMethod::Labbe => {
                solve_regions(spect, geom, regions, settings, &mut warnings)?
            }
            PvcMethod::None => {
                return Err(Error::input(
                    "partial-volume correction called with method none",
                ))
            }
        };
        let mut out = BTreeMap::new();
        let mut shell_conc = BTreeMap::new();
        for (r, reg) in regions.iter().enumerate() {
            match reg.organ {
                Some(l) => {
                    out.insert(
                        l,
                        PvcOrgan {
                            concentration_bq_per_ml: t[r],
                            activity_mbq: t[r] * reg.chi.sum() * vox_ml / 1e6,
                            self_recovery: self_rec[r],
                        },
                    );
                }
                None => {
                    if settings.method != PvcMethod::Rc {
                        shell_conc.insert(reg.near, t[r]);
                    }
                }
            }
        }
        let rest = if settings.method == PvcMethod::Rc {
            f64::NAN
        } else {
            t[regions.len()]
        };
        Ok(PvcResult {
            method: settings.method,
            organs: out,
            shell_concentration_bq_per_ml: shell_conc,
            rest_concentration_bq_per_ml: rest,
            condition_number: cond,
            warnings,
        })
    }
}

/// `P chi` on the box grown by the PSF's reach.
pub(crate) fn blurred(chi: &BoxMap, geom: &Geometry, psf: &Psf) -> BoxMap {
    let mut b = chi.grown(super::boxmap::reach(geom, psf.sigma_mm()), geom.dims);
    gaussian_blur_3d_axes(
        &mut b.w,
        b.dims,
        geom.spacing,
        psf.sigma_mm(),
        Boundary::Zero,
    );
    b
}

/// `P 1` on the grid, per axis: the 1-D blur of a line of ones with zero outside.
fn blurred_ones(geom: &Geometry, psf: &Psf) -> [Vec<f64>; 3] {
    let s = psf.sigma_mm();
    std::array::from_fn(|a| {
        let taps = gaussian_taps(s[a], geom.spacing[a]);
        let r = (taps.len() / 2) as i64;
        let n = geom.dims[a] as i64;
        (0..n)
            .map(|i| {
                taps.iter()
                    .enumerate()
                    .filter(|(t, _)| (0..n).contains(&(i + *t as i64 - r)))
                    .map(|(_, &w)| w as f64)
                    .sum()
            })
            .collect()
    })
}

/// One background shell per organ: voxels within `shell_mm` of the organ, weighted by
/// the part of the voxel no organ covers; a voxel near several organs goes to the one
/// whose blurred mask is highest there (the nearest, for flat borders).
fn background_shells(organs: &[(u8, BoxMap)], geom: &Geometry, shell_mm: f64) -> Vec<(u8, BoxMap)> {
    if shell_mm.is_nan() || shell_mm <= 0.0 {
        return Vec::new();
    }
    let grid = geom.dims;
    // sigma so that 2 sigma = shell_mm: the blurred mask of a flat border falls to
    // Phi(-2) = 0.0228 at shell_mm outside it.
    let sigma = shell_mm / 2.0;
    const LEVEL: f32 = 0.022_750_13;
    let taps: [Vec<f32>; 3] =
        std::array::from_fn(|a| gaussian_taps_to(sigma, geom.spacing[a], 3.0));
    let r: [usize; 3] = std::array::from_fn(|a| (shell_mm / geom.spacing[a]).ceil() as usize + 1);
    // Union box of the grown organs: the only place shells can be.
    let grown: Vec<BoxMap> = organs.iter().map(|(_, b)| b.grown(r, grid)).collect();
    let lo: [usize; 3] = std::array::from_fn(|a| grown.iter().map(|b| b.lo[a]).min().unwrap_or(0));
    let hi: [usize; 3] =
        std::array::from_fn(|a| grown.iter().map(|b| b.lo[a] + b.dims[a]).max().unwrap_or(0));
    let ud: [usize; 3] = std::array::from_fn(|a| hi[a] - lo[a]);
    let un = ud[0] * ud[1] * ud[2];
    let uidx = |x: usize, y: usize, z: usize| ((z - lo[2]) * ud[1] + y - lo[1]) * ud[0] + x - lo[0];
    let mut occupied = vec![0f32; un];
    let mut best = vec![0f32; un];
    let mut owner = vec![u16::MAX; un];
    for (o, (_, b)) in organs.iter().enumerate() {
        visit(b, |x, y, z, v| occupied[uidx(x, y, z)] += v);
        let mut g = grown[o].clone();
        blur_3d_with_taps(&mut g.w, g.dims, &taps, Boundary::Zero);
        visit(&g, |x, y, z, v| {
            let u = uidx(x, y, z);
            if v >= LEVEL && v > best[u] {
                best[u] = v;
                owner[u] = o as u16;
            }
        });
    }
    let mut out = Vec::new();
    for (o, (l, _)) in organs.iter().enumerate() {
        let g = &grown[o];
        let mut w = vec![0f32; g.w.len()];
        let mut m = 0usize;
        visit(g, |x, y, z, _| {
            let u = uidx(x, y, z);
            if owner[u] == o as u16 {
                w[m] = (1.0 - occupied[u]).max(0.0);
            }
            m += 1;
        });
        let full_box = BoxMap {
            lo: g.lo,
            dims: g.dims,
            w,
        };
        // Trim to the shell's own bounding box. A shell of a few voxels' remnants (a
        // lesion inside the liver keeps only slivers at the liver's edge) cannot have a
        // concentration of its own: its voxels go to the rest of the field, not to a
        // near-collinear column (condition number 67 instead of 8 on a phantom).
        if let Some(t) = full_box.trimmed() {
            if t.sum() * geom.voxel_volume_ml() >= MIN_SHELL_ML {
                out.push((*l, t));
            }
        }
    }
    out
}

/// The smallest background shell (mL) that is a region of its own.
const MIN_SHELL_ML: f64 = 5.0;

/// Visits a box as (x, y, z, value) in grid coordinates.
fn visit(b: &BoxMap, mut f: impl FnMut(usize, usize, usize, f32)) {
    let mut l = 0;
    for k in 0..b.dims[2] {
        for j in 0..b.dims[1] {
            for i in 0..b.dims[0] {
                f(b.lo[0] + i, b.lo[1] + j, b.lo[2] + k, b.w[l]);
                l += 1;
            }
        }
    }
}

/// GTM or Labbé over `regions` plus the rest of the field of view. Returns the
/// concentrations (regions, then the rest), the condition number, and each region's
/// self-recovery.
fn solve_regions(
    spect: &[f32],
    geom: &Geometry,
    regions: &[Region],
    settings: &PvcSettings,
    warnings: &mut Vec<String>,
) -> Result<(Vec<f64>, f64, Vec<f64>)> {
    use rayon::prelude::*;
    let grid = geom.dims;
    let k = regions.len();
    let p = k + 1;
    let psf = &settings.psf;
    let pchi: Vec<BoxMap> = regions
        .par_iter()
        .map(|r| blurred(&r.chi, geom, psf))
        .collect();
    let ones = blurred_ones(geom, psf);
    let vol: Vec<f64> = regions.iter().map(|r| r.chi.sum()).collect();
    let n_fov = geom.len() as f64;
    let vol_rest = n_fov - vol.iter().sum::<f64>();
    let sum_y: f64 = spect.iter().map(|&v| v as f64).sum();
    // <chi_i, P chi_j> for the regions.
    let cp: Vec<f64> = (0..k * k)
        .into_par_iter()
        .map(|ij| regions[ij / k].chi.dot(&pchi[ij % k]))
        .collect();
    let self_rec: Vec<f64> = (0..k).map(|i| cp[i * k + i] / vol[i]).collect();
    let mut m = vec![0f64; p * p];
    let mut rhs = vec![0f64; p];
    let cond;
    match settings.method {
        PvcMethod::Gtm => {
            let chi_p1: Vec<f64> = regions.iter().map(|r| r.chi.dot_separable(&ones)).collect();
            let sum_p1: f64 = ones.iter().map(|f| f.iter().sum::<f64>()).product();
            let chi_y: Vec<f64> = regions
                .iter()
                .map(|r| r.chi.dot_full(spect, grid))
                .collect();
            for i in 0..k {
                let mut row_sum = 0.0;
                for j in 0..k {
                    m[i * p + j] = cp[i * k + j] / vol[i];
                    row_sum += m[i * p + j];
                }
                m[i * p + k] = chi_p1[i] / vol[i] - row_sum;
                rhs[i] = chi_y[i] / vol[i];
            }
            if vol_rest > 0.5 {
                let mut row_sum = 0.0;
                for j in 0..k {
                    let total_j = pchi[j].sum();
                    let in_regions: f64 = (0..k).map(|i| cp[i * k + j]).sum();
                    m[k * p + j] = (total_j - in_regions) / vol_rest;
                    row_sum += m[k * p + j];
                }
                let p1_in: f64 = chi_p1.iter().sum();
                m[k * p + k] = (sum_p1 - p1_in) / vol_rest - row_sum;
                rhs[k] = (sum_y - chi_y.iter().sum::<f64>()) / vol_rest;
            } else {
                m[k * p + k] = 1.0;
            }
            cond = condition_1(&m, p);
        }
        _ => {
            // Normal equations of the voxel fit.
            let pp: Vec<f64> = (0..k * k)
                .into_par_iter()
                .map(|ij| {
                    let (i, j) = (ij / k, ij % k);
                    if j < i {
                        0.0
                    } else {
                        pchi[i].dot(&pchi[j])
                    }
                })
                .collect();
            let pp = |i: usize, j: usize| pp[i.min(j) * k + i.max(j)];
            let p_p1: Vec<f64> = pchi.iter().map(|b| b.dot_separable(&ones)).collect();
            let p1p1: f64 = ones
                .iter()
                .map(|f| f.iter().map(|v| v * v).sum::<f64>())
                .product();
            let p_y: Vec<f64> = pchi.iter().map(|b| b.dot_full(spect, grid)).collect();
            let p1_y = {
                let [nx, ny, _] = grid;
                let mut s = 0f64;
                for (l, &v) in spect.iter().enumerate() {
                    s += v as f64
                        * ones[0][l % nx]
                        * ones[1][(l / nx) % ny]
                        * ones[2][l / (nx * ny)];
                }
                s
            };
            for i in 0..k {
                let mut row_sum = 0.0;
                for j in 0..k {
                    m[i * p + j] = pp(i, j);
                    row_sum += pp(i, j);
                }
                m[i * p + k] = p_p1[i] - row_sum;
                m[k * p + i] = m[i * p + k];
                rhs[i] = p_y[i];
            }
            let all: f64 = (0..k)
                .flat_map(|i| (0..k).map(move |j| (i, j)))
                .map(|(i, j)| pp(i, j))
                .sum();
            m[k * p + k] = p1p1 - 2.0 * p_p1.iter().sum::<f64>() + all;
            rhs[k] = p1_y - p_y.iter().sum::<f64>();
            if m[k * p + k] <= 1e-9 * p1p1.max(1.0) {
                // No voxel outside the regions: the rest column is empty.
                for j in 0..p {
                    m[k * p + j] = 0.0;
                    m[j * p + k] = 0.0;
                }
                m[k * p + k] = 1.0;
                rhs[k] = 0.0;
            }
            cond = condition_1(&m, p).sqrt();
        }
    }
    let t = super::kinetics::solve(&m, &rhs, p).ok_or_else(|| {
        Error::input(
            "partial-volume correction: the region matrix is singular (two regions the PSF cannot tell apart)",
        )
    })?;
    let limit = match settings.method {
        PvcMethod::Gtm => 20.0,
        _ => 50.0,
    };
    if cond.is_nan() || cond >= limit {
        warnings.push(format!(
            "partial-volume correction ({}): condition number {cond:.1} above {limit:.0}: regions too small or too close for the PSF, corrected activities amplify noise",
            settings.method.name()
        ));
    }
    Ok((t, cond, self_rec))
}

/// `|A|_1 |A^-1|_1` (infinite when singular).
fn condition_1(a: &[f64], p: usize) -> f64 {
    let norm = |m: &[f64]| {
        (0..p)
            .map(|c| (0..p).map(|r| m[r * p + c].abs()).sum::<f64>())
            .fold(0.0f64, f64::max)
    };
    match super::kinetics::invert(a, p) {
        Some(inv) => norm(a) * norm(&inv),
        None => f64::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ball(g: &Geometry, c: [f64; 3], r: f64) -> Vec<f32> {
        let [nx, ny, _] = g.dims;
        (0..g.len())
            .map(|l| {
                let p = [
                    (l % nx) as f64 * g.spacing[0],
                    ((l / nx) % ny) as f64 * g.spacing[1],
                    (l / (nx * ny)) as f64 * g.spacing[2],
                ];
                let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
                if d2 <= r * r {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Two touching organs in a background, blurred by a Gaussian PSF; returns the
    /// relative errors of the two organ concentrations for each method.
    fn two_organs(
        body_radius_mm: f64,
        true_fwhm: f64,
        given_fwhm: f64,
    ) -> Vec<(PvcMethod, f64, f64, f64)> {
        let g = Geometry::new([48, 40, 36], [4.0, 4.0, 4.0], [0.0; 3]);
        let a = ball(&g, [70.0, 80.0, 70.0], 22.0);
        let mut b = ball(&g, [115.0, 80.0, 70.0], 25.0);
        b.iter_mut().zip(&a).for_each(|(x, &y)| {
            if y > 0.0 {
                *x = 0.0
            }
        });
        let body = ball(&g, [95.0, 80.0, 70.0], body_radius_mm);
        let (ca, cb, cbg) = (1000.0f32, 300.0f32, 40.0f32);
        let mut img: Vec<f32> = (0..g.len())
            .map(|l| a[l] * ca + b[l] * cb + (1.0 - a[l] - b[l]) * body[l] * cbg)
            .collect();
        let psf = Psf::new(true_fwhm, None);
        gaussian_blur_3d_axes(&mut img, g.dims, g.spacing, psf.sigma_mm(), Boundary::Zero);
        let core: BTreeMap<u8, BoxMap> = [(2u8, &a), (3u8, &b)]
            .into_iter()
            .filter_map(|(l, m)| BoxMap::from_full(m, g.dims).map(|x| (l, x)))
            .collect();
        [PvcMethod::Gtm, PvcMethod::Labbe]
            .into_iter()
            .map(|method| {
                let r = correct(
                    &img,
                    &g,
                    &core,
                    &core,
                    &PvcSettings {
                        method,
                        psf: Psf::new(given_fwhm, None),
                        shell_mm: 20.0,
                    },
                )
                .expect("pvc");
                (
                    method,
                    r.organs[&2].concentration_bq_per_ml / ca as f64 - 1.0,
                    r.organs[&3].concentration_bq_per_ml / cb as f64 - 1.0,
                    r.condition_number,
                )
            })
            .collect()
    }

    #[test]
    fn noise_free_gtm_with_the_true_psf_is_exact() {
        // Uniform background over the whole field of view: every region is uniform,
        // the model holds exactly.
        for (m, ea, eb, cond) in two_organs(1e6, 12.0, 12.0) {
            assert!(
                ea.abs() < 1e-4 && eb.abs() < 1e-4,
                "{m:?}: {ea:+.2e} {eb:+.2e}"
            );
            assert!(cond > 1.0 && cond < 20.0, "{m:?}: condition {cond}");
        }
    }

    #[test]
    fn non_uniform_background_and_wrong_psf_cost_accuracy_as_expected() {
        // Body of radius 70 mm (air outside): the shells and the rest are not uniform.
        for (m, ea, eb, _) in two_organs(70.0, 12.0, 12.0) {
            assert!(
                ea.abs() < 0.01 && eb.abs() < 0.02,
                "{m:?}: {ea:+.4} {eb:+.4}"
            );
        }
        // A PSF assumed 2 mm too wide over-corrects, 2 mm too narrow under-corrects.
        for (wrong, sign) in [(14.0, 1.0), (10.0, -1.0)] {
            for (m, ea, eb, _) in two_organs(1e6, 12.0, wrong) {
                assert!(
                    ea * sign > 0.005 && eb * sign > 0.005,
                    "{m:?} at {wrong} mm: {ea:+.4} {eb:+.4}"
                );
                assert!(
                    ea.abs() < 0.15 && eb.abs() < 0.15,
                    "{m:?} at {wrong} mm: {ea:+.4} {eb:+.4}"
                );
            }
        }
    }
}
