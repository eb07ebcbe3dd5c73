//! SPECT simulation: organ activities spread over their SPECT-grid labels, a
//! remainder (blood pool and soft tissue) in the rest of the body, breathing blur,
//! Gaussian system blur and Poisson counting noise converted back to Bq/mL.

use super::rng::{self, Rng};
use super::{kinetics, tissue_from_u8, Patient};
use crate::volume::Volume;

/// Fraction of the whole-body remainder (activity not in the truth organs) that
/// lies in the SPECT field of view.
pub(crate) const REMAINDER_FRACTION_IN_FOV: f64 = 0.35;

/// See [`Patient::noiseless_spect`].
pub(crate) fn activity_map(p: &Patient, tp: usize) -> (Volume<f32>, Volume<u8>, f64) {
    let g = &p.spect_geoms[tp];
    let t_h = p.times_h[tp];
    let (tissue, labels) = p.anatomy.rasterize(g, &p.spect_pose(tp));
    let vox_ml = g.voxel_volume_ml();
    let mut counts = [0usize; 256];
    for &l in &labels {
        counts[l as usize] += 1;
    }
    let mut conc_of = [0f64; 256];
    let mut organ_total = 0.0;
    for &(l, _) in &p.kinetics {
        let a = p.organ_activity_mbq(l, t_h);
        organ_total += a;
        if counts[l as usize] > 0 {
            conc_of[l as usize] = a * 1e6 / (counts[l as usize] as f64 * vox_ml);
        }
    }
    let remainder_mbq = REMAINDER_FRACTION_IN_FOV
        * (kinetics::whole_body_fraction(t_h) * p.injected_mbq - organ_total).max(0.0);
    let mut wsum = 0.0f64;
    for (&t, &l) in tissue.iter().zip(&labels) {
        if l == 0 {
            wsum += tissue_from_u8(t).remainder_weight() as f64;
        }
    }
    let c_rem = if wsum > 0.0 {
        remainder_mbq * 1e6 / (wsum * vox_ml)
    } else {
        0.0
    };
    let data: Vec<f32> = tissue
        .iter()
        .zip(&labels)
        .map(|(&t, &l)| {
            if l != 0 {
                conc_of[l as usize] as f32
            } else {
                (c_rem * tissue_from_u8(t).remainder_weight() as f64) as f32
            }
        })
        .collect();
    (
        Volume {
            geom: g.clone(),
            data,
        },
        Volume {
            geom: g.clone(),
            data: labels,
        },
        remainder_mbq,
    )
}

/// Breathing blur (box along z), Gaussian system blur, Poisson noise.
pub fn measure(p: &Patient, tp: usize, act: &Volume<f32>) -> Volume<f32> {
    camera(
        act,
        p.spect_fwhm_mm,
        p.breathing_mm,
        p.counts_per_bq,
        rng::hash64(p.patient_seed, &format!("spect-noise-{tp}")),
    )
}

/// The phantom's camera on any activity map (Bq/mL): breathing box along z of
/// `breathing_mm`, Gaussian of `fwhm_mm` truncated at 3 sigma, Poisson noise at
/// `counts_per_bq` counts per Bq of a voxel (0: no noise). Also what a calibration
/// sphere acquisition sees (`tests/it/psf_calibration.rs`).
pub fn camera(
    act: &Volume<f32>,
    fwhm_mm: f64,
    breathing_mm: f64,
    counts_per_bq: f64,
    noise_seed: u64,
) -> Volume<f32> {
    let g = &act.geom;
    let mut v: Vec<f64> = act.data.iter().map(|&x| x as f64).collect();
    if breathing_mm > 0.0 {
        let n = ((breathing_mm / g.spacing[2]).round() as usize).max(1);
        let w = vec![1.0 / (n + 1) as f64; n + 1];
        // Centred box of n+1 taps (odd or even: shift half a tap down).
        convolve_axis(&mut v, g.dims, 2, &w, n / 2);
    }
    let sigma_mm = fwhm_mm / (8.0 * std::f64::consts::LN_2).sqrt();
    // FWHM 0: no system blur (noise only).
    let axes = if sigma_mm > 0.0 { 0..3 } else { 0..0 };
    for axis in axes {
        let s = sigma_mm / g.spacing[axis];
        let r = (3.0 * s).ceil() as usize;
        let mut w: Vec<f64> = (0..=2 * r)
            .map(|i| {
                let x = i as f64 - r as f64;
                (-0.5 * x * x / (s * s)).exp()
            })
            .collect();
        let sum: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= sum);
        convolve_axis(&mut v, g.dims, axis, &w, r);
    }
    let vox_ml = g.voxel_volume_ml();
    let k = counts_per_bq * vox_ml; // counts per (Bq/mL)
    let mut r = Rng::new(noise_seed);
    let data = v
        .iter()
        .map(|&c| {
            if k > 0.0 {
                (r.poisson(c.max(0.0) * k) / k) as f32
            } else {
                c as f32
            }
        })
        .collect();
    Volume {
        geom: g.clone(),
        data,
    }
}

/// 1-D convolution along `axis` with zero padding; `centre` is the kernel tap
/// that lands on the output voxel.
fn convolve_axis(v: &mut [f64], dims: [usize; 3], axis: usize, w: &[f64], centre: usize) {
    let [nx, ny, nz] = dims;
    let (n, stride) = match axis {
        0 => (nx, 1),
        1 => (ny, nx),
        _ => (nz, nx * ny),
    };
    let mut line = vec![0f64; n];
    let starts: Vec<usize> = match axis {
        0 => (0..ny * nz).map(|r| r * nx).collect(),
        1 => (0..nz)
            .flat_map(|k| (0..nx).map(move |i| k * nx * ny + i))
            .collect(),
        _ => (0..nx * ny).collect(),
    };
    for s in starts {
        for (q, x) in line.iter_mut().enumerate() {
            *x = v[s + q * stride];
        }
        for q in 0..n {
            let mut acc = 0.0;
            for (t, &wt) in w.iter().enumerate() {
                let src = q as isize + t as isize - centre as isize;
                if src >= 0 && (src as usize) < n {
                    acc += wt * line[src as usize];
                }
            }
            v[s + q * stride] = acc;
        }
    }
}
