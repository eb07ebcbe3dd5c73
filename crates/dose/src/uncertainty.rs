//! Uncertainty propagation after the EANM guidance on uncertainty analysis for MRT
//! dosimetry (Gear et al., EJNMMI 2018;45:2456-2474): first-order (linear) propagation
//! of standard uncertainties, with covariances where parameters are correlated.
//!
//! - Activity: each organ activity carries a relative standard uncertainty
//!   (`activity_rel_sd`); the fits use it as weights, so the fit covariance carries it.
//! - TIA: `u(TIA)^2 = g^T C g`, g the gradient of the TIA with respect to the fit
//!   parameters, C their covariance ([`crate::kinetics`]); for reduced
//!   methods the activities are propagated directly.
//! - Mean dose `D = TIA E / m`: `(u(D)/D)^2 = (u(TIA)/TIA)^2 + (u(m)/m)^2` (E exact,
//!   TIA and mass independent: the mass comes from the diagnostic CT).

use serde::Serialize;

/// A value and its standard uncertainty (k = 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Uncertain {
    pub value: f64,
    pub sd: f64,
}

impl std::fmt::Display for Uncertain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = f.precision().unwrap_or(2);
        write!(f, "{:.*} +- {:.*}", p, self.value, p, self.sd)
    }
}

/// Standard uncertainty of `D = TIA E / m`.
pub(crate) fn mean_dose_sd(dose_gy: f64, tia: f64, tia_sd: f64, mass_rel_sd: f64) -> f64 {
    if tia == 0.0 || !tia.is_finite() || !dose_gy.is_finite() {
        return f64::NAN;
    }
    dose_gy.abs() * ((tia_sd / tia).powi(2) + mass_rel_sd.powi(2)).sqrt()
}

/// `g^T C g` for a row-major covariance.
pub fn quadratic_form(g: &[f64], cov: &[Vec<f64>]) -> f64 {
    let mut s = 0.0;
    for (r, gr) in g.iter().enumerate() {
        for (c, gc) in g.iter().enumerate() {
            s += gr * cov[r][c] * gc;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_uncertainties_add_in_quadrature() {
        // 3 % and 4 % -> 5 % of 2 Gy = 0.1 Gy.
        let sd = mean_dose_sd(2.0, 100.0, 3.0, 0.04);
        assert!((sd - 0.1).abs() < 1e-12);
        let q = quadratic_form(&[1.0, 2.0], &[vec![1.0, 0.5], vec![0.5, 2.0]]);
        assert!((q - (1.0 + 2.0 * 0.5 * 2.0 + 4.0 * 2.0)).abs() < 1e-12);
        assert_eq!(
            format!(
                "{:.1}",
                Uncertain {
                    value: 1.23,
                    sd: 0.05
                }
            ),
            "1.2 +- 0.1"
        );
    }
}
