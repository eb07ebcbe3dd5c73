//! The SPECT system PSF from a measured sphere (`organdose calibrate-psf`).
//!
//! A hot sphere of known diameter (a NEMA/Jaszczak insert filled with 177Lu, in air,
//! water or a warm background) is reconstructed as the clinical protocol does. The
//! model of the image around it is `a (G * S)(v) + b`: the sphere's indicator `S`
//! (coverage of each voxel, 4^3 sub-samples) blurred by a Gaussian `G` of FWHM `f`
//! in-plane and `f_z` axially, scaled by the concentration `a`, over a uniform
//! background `b`. For given FWHMs, `a` and `b` follow by linear least squares; the
//! FWHMs minimise the residual (golden-section search on each, in turn). The centre is
//! the centroid of the background-subtracted counts near the hottest voxel.
//!
//! The same model is what the partial-volume correction assumes (a depth-independent
//! Gaussian), so the FWHM found is the one to configure. A 20-40 mm sphere fits
//! well: much smaller and the result depends on noise, much larger and the image holds
//! little information on the edge.

use super::psf::{gaussian_blur_3d_axes, Boundary};
use super::pvc::FWHM_PER_SIGMA;
use crate::error::{Error, Result};
use crate::volume::{Geometry, Volume};
use serde::Serialize;

/// What the fit found.
#[derive(Debug, Clone, Serialize)]
pub struct PsfFit {
    pub fwhm_mm: f64,
    pub axial_fwhm_mm: f64,
    /// Sphere centre in patient coordinates (LPS, mm).
    pub centre_mm: [f64; 3],
    /// Fitted concentration in the sphere and background (image units, Bq/mL for a
    /// quantitative SPECT).
    pub sphere_value: f64,
    pub background_value: f64,
    /// RMS residual over the fit region / fitted sphere value.
    pub relative_rms_residual: f64,
    pub voxels_fitted: usize,
}

/// Fits the PSF to the sphere of `diameter_mm` in `image`.
pub fn fit_sphere(image: &Volume<f32>, diameter_mm: f64) -> Result<PsfFit> {
    let g = &image.geom;
    g.validate()?;
    image.check_finite("calibration image")?;
    if !(diameter_mm.is_finite() && diameter_mm > 0.0) {
        return Err(Error::input(format!(
            "sphere diameter {diameter_mm} mm must be a positive number"
        )));
    }
    let [nx, ny, _] = g.dims;
    // Hottest voxel after a light smoothing (noise would pick a single hot voxel).
    let mut smooth = image.data.clone();
    gaussian_blur_3d_axes(
        &mut smooth,
        g.dims,
        g.spacing,
        [diameter_mm / 4.0; 3],
        Boundary::Clamp,
    );
    let (peak, _) =
        smooth.iter().enumerate().fold(
            (0usize, f32::MIN),
            |m, (l, &v)| if v > m.1 { (l, v) } else { m },
        );
    let pidx = [peak % nx, (peak / nx) % ny, peak / (nx * ny)];
    // Fit region: a box of half-width radius + 30 mm (room for a 25 mm FWHM).
    let half = diameter_mm / 2.0 + 30.0;
    let lo: [usize; 3] =
        std::array::from_fn(|a| pidx[a].saturating_sub((half / g.spacing[a]).ceil() as usize));
    let hi: [usize; 3] = std::array::from_fn(|a| {
        (pidx[a] + (half / g.spacing[a]).ceil() as usize + 1).min(g.dims[a])
    });
    let bd: [usize; 3] = std::array::from_fn(|a| hi[a] - lo[a]);
    if bd.iter().any(|&d| d < 3) {
        return Err(Error::input(
            "calibration image: the sphere is at the edge of the field of view",
        ));
    }
    let mut y = Vec::with_capacity(bd[0] * bd[1] * bd[2]);
    for k in lo[2]..hi[2] {
        for j in lo[1]..hi[1] {
            let s = (k * ny + j) * nx;
            y.extend(image.data[s + lo[0]..s + hi[0]].iter().map(|&v| v as f64));
        }
    }
    // Centre: centroid of the counts above the box's median near the peak.
    let mut sorted = y.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    if max.is_nan() || max <= median {
        return Err(Error::input(
            "calibration image: no hot sphere (the image is flat)",
        ));
    }
    let mut c = [0f64; 3];
    let mut wsum = 0f64;
    let level = median + 0.25 * (max - median);
    let mut l = 0;
    for k in 0..bd[2] {
        for j in 0..bd[1] {
            for i in 0..bd[0] {
                let w = y[l] - median;
                if y[l] > level {
                    for (a, x) in [i, j, k].iter().enumerate() {
                        c[a] += w * (*x + lo[a]) as f64;
                    }
                    wsum += w;
                }
                l += 1;
            }
        }
    }
    let centre_idx: [f64; 3] = std::array::from_fn(|a| c[a] / wsum);
    let sphere = sphere_coverage(bd, lo, g, centre_idx, diameter_mm / 2.0);
    let sub = Geometry::new(bd, g.spacing, [0.0; 3]);
    let model = |f: f64, fz: f64| -> (f64, f64, f64) {
        let mut m = sphere.clone();
        let s = [f / FWHM_PER_SIGMA, f / FWHM_PER_SIGMA, fz / FWHM_PER_SIGMA];
        gaussian_blur_3d_axes(&mut m, sub.dims, sub.spacing, s, Boundary::Zero);
        // Linear least squares for y = a m + b.
        let n = m.len() as f64;
        let (mut sm, mut sy, mut smm, mut smy) = (0f64, 0f64, 0f64, 0f64);
        for (&mi, &yi) in m.iter().zip(&y) {
            let mi = mi as f64;
            sm += mi;
            sy += yi;
            smm += mi * mi;
            smy += mi * yi;
        }
        let det = n * smm - sm * sm;
        let a = (n * smy - sm * sy) / det;
        let b = (sy - a * sm) / n;
        let sse: f64 = m
            .iter()
            .zip(&y)
            .map(|(&mi, &yi)| (yi - a * mi as f64 - b).powi(2))
            .sum();
        (sse, a, b)
    };
    const RANGE_MM: (f64, f64) = (1.0, 40.0);
    let (mut f, mut fz) = (10.0, 10.0);
    for _ in 0..3 {
        f = golden(|x| model(x, fz).0, RANGE_MM.0, RANGE_MM.1);
        fz = golden(|x| model(f, x).0, RANGE_MM.0, RANGE_MM.1);
    }
    // A minimum at the edge of the search is no minimum: the image is not one sphere
    // of that diameter (or the PSF is outside any SPECT's range).
    if [f, fz]
        .iter()
        .any(|&x| x < RANGE_MM.0 + 0.1 || x > RANGE_MM.1 - 0.1)
    {
        return Err(Error::input(format!(
            "calibration image: the best FWHM ({f:.1} mm in-plane, {fz:.1} mm axial) is at the edge of the {}-{} mm searched: not one hot {diameter_mm} mm sphere",
            RANGE_MM.0, RANGE_MM.1
        )));
    }
    let (sse, a, b) = model(f, fz);
    // A sphere model that is flat over the fit box (no edge in it) leaves the fit
    // undetermined: say so rather than print NaN.
    if !(sse.is_finite() && a.is_finite() && a > 0.0) {
        return Err(Error::input(format!(
            "calibration image: the fit of a {diameter_mm} mm sphere did not converge (sphere value {a}): is it one hot sphere of that size?"
        )));
    }
    let centre_mm = g.index_to_patient(centre_idx);
    Ok(PsfFit {
        fwhm_mm: f,
        axial_fwhm_mm: fz,
        centre_mm,
        sphere_value: a,
        background_value: b,
        relative_rms_residual: (sse / y.len() as f64).sqrt() / a.abs().max(1e-30),
        voxels_fitted: y.len(),
    })
}

/// Coverage (0..1) of each voxel of the box by the sphere, 4^3 sub-samples per voxel.
fn sphere_coverage(
    bd: [usize; 3],
    lo: [usize; 3],
    g: &Geometry,
    centre_idx: [f64; 3],
    radius_mm: f64,
) -> Vec<f32> {
    const SUB: usize = 4;
    let mut out = Vec::with_capacity(bd[0] * bd[1] * bd[2]);
    let off: Vec<f64> = (0..SUB)
        .map(|q| (q as f64 + 0.5) / SUB as f64 - 0.5)
        .collect();
    for k in 0..bd[2] {
        for j in 0..bd[1] {
            for i in 0..bd[0] {
                let mut n = 0usize;
                for &dk in &off {
                    for &dj in &off {
                        for &di in &off {
                            let d = [
                                ((i + lo[0]) as f64 + di - centre_idx[0]) * g.spacing[0],
                                ((j + lo[1]) as f64 + dj - centre_idx[1]) * g.spacing[1],
                                ((k + lo[2]) as f64 + dk - centre_idx[2]) * g.spacing[2],
                            ];
                            if d.iter().map(|x| x * x).sum::<f64>() <= radius_mm * radius_mm {
                                n += 1;
                            }
                        }
                    }
                }
                out.push(n as f32 / (SUB * SUB * SUB) as f32);
            }
        }
    }
    out
}

/// Minimum of a unimodal `f` on [lo, hi] to 0.01 mm.
fn golden(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let mut x1 = hi - r * (hi - lo);
    let mut x2 = lo + r * (hi - lo);
    let (mut f1, mut f2) = (f(x1), f(x2));
    while hi - lo > 0.01 {
        if f1 < f2 {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - r * (hi - lo);
            f1 = f(x1);
        } else {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + r * (hi - lo);
            f2 = f(x2);
        }
    }
    (lo + hi) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_section_finds_a_parabola_minimum() {
        let x = golden(|x| (x - 7.3).powi(2), 1.0, 40.0);
        assert!((x - 7.3).abs() < 0.01);
    }
}
