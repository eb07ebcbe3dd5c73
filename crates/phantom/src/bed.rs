//! Truth BED: the biologically effective dose of each organ and lesion,
//! computed by the phantom from its own analytic time-activity curves
//! ([`super::kinetics`]), independently of the dosimetry (`organdose-dose` is
//! not a dependency of this crate and its BED code is not used: the truth must
//! not share a mistake with what it checks).
//!
//! Linear-quadratic model with incomplete repair during a decaying
//! irradiation (Dale, Br J Radiol 1985;58:515):
//!
//! `BED = D + G D^2 / (alpha/beta)`,
//! `G = (2 / D^2) int_0^inf Ddot(t) int_0^t Ddot(s) exp(-mu (t - s)) ds dt`,
//! `mu = ln 2 / T_rep`,
//!
//! with the dose rate `Ddot(t) = D A(t) / TIA` (local deposition: the dose rate
//! follows the organ's activity). G does not depend on D, so it is computed
//! once per curve, by direct numerical double integration
//! ([`lea_catcheside_g`]); for a mono-exponential `Ddot ~ exp(-lambda t)` it is
//! `lambda / (lambda + mu)` (the unit test). Cycles of a course are weeks apart,
//! so repair between them is complete and their BEDs add.

use super::kinetics::Kinetics;
use crate::organs;
use serde::Serialize;

/// Linear-quadratic parameters of one tissue, with where they come from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BedParameters {
    pub alpha_beta_gy: f64,
    pub repair_half_time_h: f64,
    /// False: illustrative values, not an accepted figure for 177Lu therapy.
    pub sourced: bool,
    pub source: &'static str,
}

/// Kidneys: alpha/beta 2.6 Gy and repair half-time 2.8 h (Wessels et al.,
/// J Nucl Med 2008;49:1884; Bodei et al., Eur J Nucl Med Mol Imaging
/// 2008;35:1847), the values the kidney BED limits of 177Lu-PRRT were set with.
pub const KIDNEY: BedParameters = BedParameters {
    alpha_beta_gy: 2.6,
    repair_half_time_h: 2.8,
    sourced: true,
    source: "Wessels et al., J Nucl Med 2008;49:1884; Bodei et al., Eur J Nucl Med Mol Imaging 2008;35:1847",
};

/// Liver: illustrative (alpha/beta 2.5 Gy, late-responding normal tissue;
/// T_rep 1.5 h). No value is accepted for 177Lu; the dosimetry shows no liver
/// BED unless one is configured: compare only with the same parameters.
pub const LIVER: BedParameters = BedParameters {
    alpha_beta_gy: 2.5,
    repair_half_time_h: 1.5,
    sourced: false,
    source: "illustrative (not sourced for 177Lu): late-responding normal tissue",
};

/// Spleen: illustrative, as the liver.
pub const SPLEEN: BedParameters = BedParameters {
    alpha_beta_gy: 3.0,
    repair_half_time_h: 1.5,
    sourced: false,
    source: "illustrative (not sourced for 177Lu): late-responding normal tissue",
};

/// Tumour (liver lesions): illustrative (alpha/beta 10 Gy, the conventional
/// value for tumours and early-responding tissue; T_rep 1.5 h).
pub const TUMOUR: BedParameters = BedParameters {
    alpha_beta_gy: 10.0,
    repair_half_time_h: 1.5,
    sourced: false,
    source: "illustrative (not sourced for 177Lu): conventional tumour alpha/beta",
};

/// The parameters the truth uses for an organ label (None: no BED).
pub fn parameters(label: u8) -> Option<BedParameters> {
    match label {
        organs::KIDNEY_LEFT | organs::KIDNEY_RIGHT => Some(KIDNEY),
        organs::LIVER => Some(LIVER),
        organs::SPLEEN => Some(SPLEEN),
        organs::TUMOUR => Some(TUMOUR),
        _ => None,
    }
}

/// The Lea-Catcheside factor of a dose-rate curve (any unit: G is a ratio),
/// by direct numerical double integration on a uniform grid of `step_h` up to
/// `t_end_h` (where the curve must have died out). The inner integral
/// `I(t) = int_0^t Ddot(s) exp(-mu (t - s)) ds` is carried along the grid,
/// `I(t + h) = exp(-mu h) I(t) + int_t^(t+h) Ddot(s) exp(-mu (t + h - s)) ds`
/// (trapezoid for the last piece), and the outer integrals of `Ddot I` and
/// `Ddot` are trapezoids on the same grid: second order in `h`.
pub fn lea_catcheside_g(
    dose_rate: &dyn Fn(f64) -> f64,
    mu_per_h: f64,
    t_end_h: f64,
    step_h: f64,
) -> f64 {
    if !(t_end_h > 0.0 && step_h > 0.0 && mu_per_h >= 0.0) {
        return 0.0;
    }
    let n = (t_end_h / step_h).ceil().max(1.0) as usize;
    let h = t_end_h / n as f64;
    let decay = (-mu_per_h * h).exp();
    let mut f_prev = dose_rate(0.0);
    let mut inner = 0.0;
    let mut fi_prev = 0.0; // Ddot(0) * I(0), I(0) = 0
    let (mut dose, mut q) = (0.0, 0.0);
    for i in 1..=n {
        let f = dose_rate(i as f64 * h);
        inner = decay * inner + 0.5 * h * (decay * f_prev + f);
        let fi = f * inner;
        dose += 0.5 * h * (f_prev + f);
        q += 0.5 * h * (fi_prev + fi);
        f_prev = f;
        fi_prev = fi;
    }
    if dose > 0.0 {
        2.0 * q / (dose * dose)
    } else {
        0.0
    }
}

/// G of a phantom organ's curve: the grid step resolves the fastest rate
/// (uptake, repair) to 2 % of its time constant (trapezoid error about 3e-5),
/// and the grid runs until the slowest exponential has fallen to 1e-8.
pub fn g_of_kinetics(k: &Kinetics, repair_half_time_h: f64) -> f64 {
    let mu = std::f64::consts::LN_2 / repair_half_time_h;
    let rates = k.exponential_terms().map(|(_, l)| l);
    let fastest = rates.iter().cloned().fold(mu, f64::max);
    let slowest = rates.iter().cloned().fold(f64::INFINITY, f64::min);
    let t_end = 18.5 / slowest.max(1e-6);
    lea_catcheside_g(&|t| k.activity_mbq(1.0, t), mu, t_end, 0.02 / fastest)
}

/// One organ's or lesion's truth BED, as truth.json states it.
#[derive(Debug, Clone, Serialize)]
pub struct TruthBed {
    pub bed_gy: f64,
    /// Equivalent dose in 2 Gy fractions: BED / (1 + 2 Gy / (alpha/beta)).
    pub eqd2_gy: f64,
    pub g_factor: f64,
    #[serde(flatten)]
    pub parameters: BedParameters,
}

impl TruthBed {
    /// The BED of a mean dose `dose_gy` delivered along a curve whose
    /// Lea-Catcheside factor is `g`.
    pub fn new(dose_gy: f64, g: f64, p: BedParameters) -> TruthBed {
        let bed = dose_gy + g * dose_gy * dose_gy / p.alpha_beta_gy;
        TruthBed {
            bed_gy: bed,
            eqd2_gy: bed / (1.0 + 2.0 / p.alpha_beta_gy),
            g_factor: g,
            parameters: p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed form for a sum of exponentials `sum c_i exp(-l_i t)`: the double
    /// integral is `sum_ij c_i c_j / ((l_i + l_j)(l_i + mu))` (inner integral
    /// `c_j (exp(-l_j t) - exp(-mu t)) / (mu - l_j)`, then the outer one).
    fn g_closed(terms: &[(f64, f64)], mu: f64) -> f64 {
        let d: f64 = terms.iter().map(|(c, l)| c / l).sum();
        let mut q = 0.0;
        for (ci, li) in terms {
            for (cj, lj) in terms {
                q += ci * cj / ((li + lj) * (li + mu));
            }
        }
        2.0 * q / (d * d)
    }

    #[test]
    fn mono_exponential_matches_the_closed_form() {
        // Kidney-like effective half-lives with the kidney's repair half-time,
        // and a fast curve (1 h) against a slow repair (10 h).
        for (teff_h, trep_h) in [(40.0, 2.8), (60.0, 2.8), (100.0, 1.5), (1.0, 10.0)] {
            let l = std::f64::consts::LN_2 / teff_h;
            let mu = std::f64::consts::LN_2 / trep_h;
            let g = lea_catcheside_g(&|t| 3.0 * (-l * t).exp(), mu, 20.0 / l, 0.01);
            let exact = l / (l + mu);
            assert!(
                (g - exact).abs() / exact < 1e-3,
                "{teff_h} h: {g} vs {exact}"
            );
            // Fine enough for much better than the 0.1 % asked.
            assert!(
                (g - exact).abs() / exact < 1e-4,
                "{teff_h} h: {g} vs {exact}"
            );
        }
    }

    #[test]
    fn phantom_curves_match_the_sum_of_exponentials() {
        // Uptake in 0.1 h (the fastest the phantom draws) and a slow washout.
        let cases = [
            (Kinetics::new(0.01, 2.0, 0.02, 45.0, 0.1), KIDNEY),
            (Kinetics::new(0.02, 4.0, 0.05, 90.0, 0.5), LIVER),
            (Kinetics::new(0.0, 2.0, 0.004, 100.0, 3.0), TUMOUR),
        ];
        for (k, p) in cases {
            let g = g_of_kinetics(&k, p.repair_half_time_h);
            let exact = g_closed(
                &k.exponential_terms(),
                std::f64::consts::LN_2 / p.repair_half_time_h,
            );
            assert!((g - exact).abs() / exact < 1e-4, "{g} vs {exact}");
            assert!(g > 0.0 && g < 1.0);
        }
    }

    #[test]
    fn bed_adds_the_quadratic_term() {
        let b = TruthBed::new(20.0, 0.05, KIDNEY);
        assert!((b.bed_gy - (20.0 + 0.05 * 400.0 / 2.6)).abs() < 1e-12);
        assert!((b.eqd2_gy - b.bed_gy / (1.0 + 2.0 / 2.6)).abs() < 1e-12);
        assert_eq!(TruthBed::new(0.0, 0.05, KIDNEY).bed_gy, 0.0);
    }
}
