//! Biologically effective dose (BED) of an organ from its dose-rate curve:
//! the linear-quadratic model with incomplete repair during a decaying
//! irradiation (Dale, Br J Radiol 1985;58:515; for 177Lu kidneys Wessels et
//! al., J Nucl Med 2008;49:1884 and Bodei et al., EJNMMI 2008;35:1847):
//!
//! `BED = D + q / (alpha/beta)`, `q = 2 int_0^inf Ddot(t) int_0^t Ddot(w) exp(-mu (t - w)) dw dt`
//!
//! with `mu = ln 2 / T_rep` (`q = G D^2`, G the Lea-Catcheside factor).
//! For a dose rate that is a sum of exponentials `sum_i c_i exp(-l_i t)`
//! (mono- and bi-exponential, uptake-washout) the integral has the closed
//! form `q = 2 sum_i sum_j c_i c_j / ((l_i + l_j)(l_i + mu))`; any other
//! curve (the hybrid trapezoid with its exponential tail) is integrated
//! numerically. EQD2 = BED / (1 + 2 Gy / (alpha/beta)).

use serde::{Deserialize, Serialize};

/// One organ's BED.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bed {
    pub bed_gy: f64,
    /// From the mean dose's SD: dBED/dD = 1 + 2 q / (D alpha/beta).
    pub bed_gy_sd: f64,
    /// Equivalent dose in 2 Gy fractions.
    pub eqd2_gy: f64,
    pub alpha_beta_gy: f64,
    pub repair_half_time_h: f64,
    /// Lea-Catcheside factor G = q / D^2.
    pub g_factor: f64,
    /// Which dose-rate curve: the hybrid curve, the fitted model, or a
    /// mono-exponential at the effective half-life the single-point method
    /// assumed.
    pub curve: String,
}

impl Bed {
    /// The same BED with the mean dose's SD replaced (the segmentation's
    /// share is added after the dosimetry).
    pub fn with_dose_sd(&self, d: f64, d_sd: f64) -> Bed {
        let slope = if d > 0.0 {
            1.0 + 2.0 * self.g_factor * d / self.alpha_beta_gy
        } else {
            1.0
        };
        Bed {
            bed_gy_sd: d_sd * slope,
            ..self.clone()
        }
    }
}

/// The BED of an organ whose mean dose `d` (+- `d_sd`) came from the TIA
/// `tia_mbq_h` of `k`: the dose rate is `d x A(t) / TIA` along the curve the
/// TIA was integrated on (`lp`: physical decay, 1/h; `teff_h`: the effective
/// half-life a single-point method assumed).
pub(crate) fn of_organ(
    d: f64,
    d_sd: f64,
    k: &super::kinetics::Kinetics,
    lp: f64,
    teff_h: f64,
    alpha_beta_gy: f64,
    repair_half_time_h: f64,
) -> Option<Bed> {
    use super::kinetics::Model;
    if !(d.is_finite() && d > 0.0 && k.tia_mbq_h > 0.0) {
        return None;
    }
    let mu = std::f64::consts::LN_2 / repair_half_time_h;
    let scale = d / k.tia_mbq_h;
    let (q, curve) = if let Some(h) = &k.hybrid {
        // Integrated until the tail has fallen to 1e-9 of its start.
        let last = h.t_h.last().copied().unwrap_or(0.0);
        let t_end = last + 21.0 / h.tail_rate_per_h.max(1e-6);
        (
            q_numerical(&|t| scale * h.eval(t), mu, t_end, 0.01),
            "hybrid trapezoid with exponential tail (integrated numerically)",
        )
    } else if let Some(f) = k.fit.as_ref().filter(|_| k.method.starts_with("fit_")) {
        let p = &f.parameters;
        let terms: Vec<(f64, f64)> = match f.model {
            Model::MonoExponential => vec![(p[0], p[1] + lp)],
            Model::BiExponential => vec![(p[0], p[1] + lp), (p[2], p[3] + lp)],
            Model::UptakeWashout => vec![(p[0], p[1] + lp), (-p[0], p[1] + p[2] + lp)],
        };
        if terms.iter().any(|&(_, l)| l.is_nan() || l <= 0.0) {
            return None;
        }
        let terms: Vec<(f64, f64)> = terms.into_iter().map(|(c, l)| (c * scale, l)).collect();
        (q_exponentials(&terms, mu), "fitted model (closed form)")
    } else {
        // Single- and two-point methods: a mono-exponential at the effective
        // half-life the TIA implies for them.
        let l = std::f64::consts::LN_2 / teff_h.max(1e-3);
        (
            q_exponentials(&[(d * l, l)], mu),
            "mono-exponential at the method's effective half-life",
        )
    };
    q.is_finite()
        .then(|| bed(d, d_sd, q, alpha_beta_gy, repair_half_time_h, curve))
}

/// `q` for `Ddot(t) = sum c_i exp(-l_i t)` (Gy/h, 1/h); rates must be > 0.
pub(crate) fn q_exponentials(terms: &[(f64, f64)], mu: f64) -> f64 {
    let mut q = 0.0;
    for &(ci, li) in terms {
        for &(cj, lj) in terms {
            q += ci * cj / ((li + lj) * (li + mu));
        }
    }
    2.0 * q
}

/// `q` for any dose rate (Gy/h) from 0 to `t_end` h, trapezoidal steps of
/// `dt` h on `y' = Ddot - mu y` (`y` the unrepaired part).
pub(crate) fn q_numerical(rate: &dyn Fn(f64) -> f64, mu: f64, t_end: f64, dt: f64) -> f64 {
    let n = (t_end / dt).ceil().max(1.0) as usize;
    let dt = t_end / n as f64;
    let decay = (-mu * dt).exp();
    let (mut y, mut r0, mut q) = (0.0, rate(0.0), 0.0);
    for k in 1..=n {
        let r1 = rate(k as f64 * dt);
        let y1 = y * decay + 0.5 * dt * (r0 * decay + r1);
        q += 0.5 * dt * (r0 * y + r1 * y1);
        y = y1;
        r0 = r1;
    }
    2.0 * q
}

/// BED from the mean dose `d` (Gy) with SD `d_sd` and `q` (Gy^2).
pub fn bed(
    d: f64,
    d_sd: f64,
    q: f64,
    alpha_beta_gy: f64,
    repair_half_time_h: f64,
    curve: &str,
) -> Bed {
    let bed_gy = d + q / alpha_beta_gy;
    let slope = if d > 0.0 {
        1.0 + 2.0 * q / (d * alpha_beta_gy)
    } else {
        1.0
    };
    Bed {
        bed_gy,
        bed_gy_sd: d_sd * slope,
        eqd2_gy: bed_gy / (1.0 + 2.0 / alpha_beta_gy),
        alpha_beta_gy,
        repair_half_time_h,
        g_factor: if d > 0.0 { q / (d * d) } else { 0.0 },
        curve: curve.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const LN2: f64 = std::f64::consts::LN_2;

    #[test]
    fn mono_exponential_by_hand_closed_form_and_integral() {
        // D = 20 Gy delivered as D l exp(-l t), T_eff 50 h: l = ln2/50 =
        // 0.0138629 /h; kidney T_rep 2.8 h: mu = ln2/2.8 = 0.2475526 /h.
        // G = l / (l + mu) = 0.0138629 / 0.2614155 = 0.0530302;
        // BED = 20 + 0.0530302 x 400 / 2.6 = 20 + 8.15849 = 28.1585 Gy;
        // EQD2 = 28.1585 / (1 + 2 / 2.6) = 28.1585 / 1.769231 = 15.9157 Gy.
        let (d, l, mu) = (20.0, LN2 / 50.0, LN2 / 2.8);
        let q = q_exponentials(&[(d * l, l)], mu);
        let b = bed(d, 1.0, q, 2.6, 2.8, "mono");
        assert!((b.g_factor - 0.0530302).abs() < 1e-6, "{}", b.g_factor);
        assert!((b.bed_gy - 28.1585).abs() < 1e-3, "{}", b.bed_gy);
        assert!((b.eqd2_gy - 15.9157).abs() < 1e-3, "{}", b.eqd2_gy);
        // SD: 1 Gy x (1 + 2 x 8.15849 / 20) = 1.81585 Gy.
        assert!((b.bed_gy_sd - 1.81585).abs() < 1e-4, "{}", b.bed_gy_sd);
        let qn = q_numerical(&|t| d * l * (-l * t).exp(), mu, 3000.0, 0.01);
        assert!((qn / q - 1.0).abs() < 1e-3, "{qn} vs {q}");
    }

    #[test]
    fn uptake_washout_closed_form_matches_the_integral() {
        // Ddot = a (exp(-b t) - exp(-(b + k) t)), a kidney-like curve.
        let (a, b, k, mu) = (0.2, 0.015, 2.0, LN2 / 2.8);
        let q = q_exponentials(&[(a, b), (-a, b + k)], mu);
        let qn = q_numerical(
            &|t| a * ((-b * t).exp() - (-(b + k) * t).exp()),
            mu,
            3000.0,
            0.005,
        );
        assert!((qn / q - 1.0).abs() < 1e-3, "{qn} vs {q}");
        // A fast uptake changes little: close to the mono-exponential's q.
        let q_mono = q_exponentials(&[(a, b)], mu);
        assert!(q < q_mono && q > 0.9 * q_mono, "{q} {q_mono}");
    }

    #[test]
    fn instantaneous_dose_has_g_one_and_slow_dose_g_near_zero() {
        // Very fast delivery (T_eff 0.01 h): no repair, G -> 1.
        let (d, l, mu) = (2.0, LN2 / 0.01, LN2 / 2.8);
        let g = q_exponentials(&[(d * l, l)], mu) / (d * d);
        assert!((g - 1.0).abs() < 0.01, "{g}");
        // Very slow (T_eff 10000 h): almost all repaired, G -> 0.
        let l = LN2 / 10000.0;
        let g = q_exponentials(&[(d * l, l)], mu) / (d * d);
        assert!(g < 0.001, "{g}");
    }
}
