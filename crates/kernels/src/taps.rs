//! Normalised 1-D Gaussian taps and the boundary rule of the separable Gaussian
//! PSF: shared by the CPU blur (organdose-dose `psf`) and the CUDA kernel (`ops`),
//! so both use the same weights.

/// What taps outside the grid read (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    Zero,
    Clamp,
}

/// Normalised 1-D Gaussian taps for `sigma_mm` on a grid of `spacing_mm`; index
/// `radius + t` holds the weight of offset `t`. `sigma_mm <= 0` gives the identity `[1]`.
pub fn gaussian_taps(sigma_mm: f64, spacing_mm: f64) -> Vec<f32> {
    gaussian_taps_to(sigma_mm, spacing_mm, 5.0)
}

/// As [`gaussian_taps`], truncated at `n_sigma` instead of 5 sigma (for uses that only
/// threshold the result near 2 sigma, where 3 sigma is plenty).
pub fn gaussian_taps_to(sigma_mm: f64, spacing_mm: f64, n_sigma: f64) -> Vec<f32> {
    if !(sigma_mm > 0.0 && sigma_mm.is_finite() && spacing_mm > 0.0 && spacing_mm.is_finite()) {
        return vec![1.0];
    }
    let s = sigma_mm / spacing_mm;
    let radius = (n_sigma * s).ceil().max(1.0) as i64;
    let mut w: Vec<f64> = (-radius..=radius)
        .map(|t| (-(t as f64).powi(2) / (2.0 * s * s)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter_mut().for_each(|x| *x /= sum);
    w.into_iter().map(|x| x as f32).collect()
}
