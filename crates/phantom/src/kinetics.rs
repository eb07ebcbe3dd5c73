//! Organ time-activity curves with analytic integrals and local-deposition doses.
//!
//! Model (per organ, t in hours after injection, A_inj the injected activity):
//!
//! A(t) = A_inj * [ f_fast * exp(-(l_fast + l_phys) t)
//!                + f_slow * exp(-(l_slow + l_phys) t)
//!                - (f_fast + f_slow) * exp(-(l_up + l_phys) t) ]
//!
//! i.e. uptake with rate l_up and a bi-exponential biological washout (fast and
//! slow phase), every term multiplied by physical decay. A(0) = 0 and A(t) >= 0
//! whenever l_up exceeds both washout rates. The integral from 0 to infinity is
//!
//! TIA = A_inj * [ f_fast / (l_fast + l_phys) + f_slow / (l_slow + l_phys)
//!               - (f_fast + f_slow) / (l_up + l_phys) ].

use super::rng::Rng;
use crate::organs;
use serde::Serialize;

/// 177Lu physical half-life: 6.647 d = 159.528 h (NNDC; EJNMMI Phys 2020;7:51, Table 1).
pub(crate) const LU177_HALF_LIFE_H: f64 = 6.647 * 24.0;
/// 177Lu mean electron energy per decay (beta + CE + Auger): 147.9 keV
/// (EJNMMI Phys 2020;7:51, Table 1).
pub(crate) const LU177_ELECTRON_KEV: f64 = 147.9;
/// J per keV (CODATA 2018 exact elementary charge, 1.602176634e-19 C, x 1000).
pub const J_PER_KEV: f64 = 1.602_176_634e-16;

pub fn lambda_phys_per_h() -> f64 {
    std::f64::consts::LN_2 / LU177_HALF_LIFE_H
}

/// Kinetic parameters of one organ (fractions of the injected activity; half-lives
/// in hours). Serialised into truth.json with these names.
#[derive(Debug, Clone, Serialize)]
pub struct Kinetics {
    pub model: &'static str,
    pub fast_fraction: f64,
    pub slow_fraction: f64,
    pub fast_biological_half_life_h: f64,
    pub slow_biological_half_life_h: f64,
    pub uptake_half_life_h: f64,
    /// Effective half-life of the slow phase (biological and physical), hours.
    pub slow_effective_half_life_h: f64,
    pub physical_half_life_h: f64,
}

const MODEL: &str = "A(t)=A_inj*[f_fast*exp(-(ln2/T_fast+ln2/T_phys)t)+f_slow*exp(-(ln2/T_slow+ln2/T_phys)t)-(f_fast+f_slow)*exp(-(ln2/T_up+ln2/T_phys)t)], t in h";

impl Kinetics {
    /// Builds from the slow phase's effective half-life (which must be shorter
    /// than the physical one).
    pub fn new(
        f_fast: f64,
        t_fast_bio_h: f64,
        f_slow: f64,
        t_slow_eff_h: f64,
        t_up_h: f64,
    ) -> Self {
        let lp = lambda_phys_per_h();
        let l_slow_eff = std::f64::consts::LN_2 / t_slow_eff_h;
        let l_slow_bio = (l_slow_eff - lp).max(1e-9);
        Kinetics {
            model: MODEL,
            fast_fraction: f_fast,
            slow_fraction: f_slow,
            fast_biological_half_life_h: t_fast_bio_h,
            slow_biological_half_life_h: std::f64::consts::LN_2 / l_slow_bio,
            uptake_half_life_h: t_up_h,
            slow_effective_half_life_h: std::f64::consts::LN_2 / (l_slow_bio + lp),
            physical_half_life_h: LU177_HALF_LIFE_H,
        }
    }

    fn rates(&self) -> (f64, f64, f64) {
        let lp = lambda_phys_per_h();
        let ln2 = std::f64::consts::LN_2;
        (
            ln2 / self.fast_biological_half_life_h + lp,
            ln2 / self.slow_biological_half_life_h + lp,
            ln2 / self.uptake_half_life_h + lp,
        )
    }

    /// Activity (MBq) at `t_h` hours after injecting `a_inj_mbq`.
    pub fn activity_mbq(&self, a_inj_mbq: f64, t_h: f64) -> f64 {
        let (lf, ls, lu) = self.rates();
        let a = self.fast_fraction * (-lf * t_h).exp() + self.slow_fraction * (-ls * t_h).exp()
            - (self.fast_fraction + self.slow_fraction) * (-lu * t_h).exp();
        a_inj_mbq * a.max(0.0)
    }

    /// Time-integrated activity from 0 to infinity, MBq h.
    pub fn tia_mbq_h(&self, a_inj_mbq: f64) -> f64 {
        let (lf, ls, lu) = self.rates();
        a_inj_mbq
            * (self.fast_fraction / lf + self.slow_fraction / ls
                - (self.fast_fraction + self.slow_fraction) / lu)
    }

    /// The curve as a sum of exponentials per MBq injected: `A(t) / A_inj =
    /// sum c_i exp(-rate_i t)` with (c_i, rate_i in 1/h), physical decay included.
    pub fn exponential_terms(&self) -> [(f64, f64); 3] {
        let (lf, ls, lu) = self.rates();
        [
            (self.fast_fraction, lf),
            (self.slow_fraction, ls),
            (-(self.fast_fraction + self.slow_fraction), lu),
        ]
    }

    /// The same curve with the slow phase's biological clearance rate
    /// multiplied by `factor` (below 1: slower clearance, longer retention).
    pub fn with_slow_clearance_scaled(&self, factor: f64) -> Kinetics {
        let ln2 = std::f64::consts::LN_2;
        let l_bio = ln2 / self.slow_biological_half_life_h * factor;
        Kinetics {
            slow_biological_half_life_h: ln2 / l_bio,
            slow_effective_half_life_h: ln2 / (l_bio + lambda_phys_per_h()),
            ..self.clone()
        }
    }

    /// The same curve with the uptake (both washout fractions) multiplied by
    /// `factor`: the shape is unchanged, the TIA scales with it.
    pub fn with_uptake_scaled(&self, factor: f64) -> Kinetics {
        Kinetics {
            fast_fraction: self.fast_fraction * factor,
            slow_fraction: self.slow_fraction * factor,
            ..self.clone()
        }
    }

    /// Samples plausible 177Lu-DOTATATE kinetics for an organ.
    ///
    /// Kidneys: slow-phase effective half-life 30-60 h, the range reported for
    /// 177Lu-DOTATATE (e.g. Sandström et al., J Nucl Med 2013;54:33-41, and the
    /// organdose brief); 1.2-2.5 % of the injected activity in the slow phase so
    /// that each kidney holds about 0.8-1.8 % at 24 h (about 0.4-0.9 Gy/GBq). Liver (several %), spleen and
    /// tumour retain longer (effective 60-120 h). Tumour uptake scales with its
    /// volume (`volume_ml`): 0.01-0.04 % of the injected activity per mL, which
    /// gives tumour doses of roughly 10-40 Gy per 7.4 GBq cycle.
    pub fn sample(label: u8, rng: &mut Rng, volume_ml: f64) -> Self {
        match label {
            organs::KIDNEY_LEFT | organs::KIDNEY_RIGHT => Kinetics::new(
                rng.uniform(0.003, 0.01),
                rng.uniform(1.0, 3.0),
                rng.uniform(0.012, 0.025),
                rng.uniform(30.0, 60.0),
                rng.uniform(0.1, 0.3),
            ),
            organs::LIVER => Kinetics::new(
                rng.uniform(0.01, 0.03),
                rng.uniform(2.0, 6.0),
                rng.uniform(0.03, 0.07),
                rng.uniform(60.0, 110.0),
                rng.uniform(0.3, 1.0),
            ),
            organs::SPLEEN => Kinetics::new(
                rng.uniform(0.003, 0.01),
                rng.uniform(2.0, 6.0),
                rng.uniform(0.01, 0.03),
                rng.uniform(60.0, 100.0),
                rng.uniform(0.3, 1.0),
            ),
            _ => Kinetics::new(
                0.0,
                2.0,
                (volume_ml * rng.uniform(1.0e-4, 4.0e-4)).min(0.05),
                rng.uniform(70.0, 120.0),
                rng.uniform(1.0, 4.0),
            ),
        }
    }
}

/// Whole-body retention (fraction of injected activity, decay included): fast
/// renal clearance of most of the peptide, slow retention of the rest.
pub(crate) fn whole_body_fraction(t_h: f64) -> f64 {
    let ln2 = std::f64::consts::LN_2;
    let lp = lambda_phys_per_h();
    (0.6 * (-(ln2 / 2.0) * t_h).exp() + 0.4 * (-(ln2 / 80.0) * t_h).exp()) * (-lp * t_h).exp()
}

/// Mean absorbed dose (Gy) by local deposition: TIA (MBq h) x 3600 s/h x 1e6 Bq/MBq
/// x 147.9 keV x J/keV / mass (kg).
pub fn mean_dose_gy(tia_mbq_h: f64, mass_g: f64) -> f64 {
    if mass_g <= 0.0 {
        return 0.0;
    }
    tia_mbq_h * 3600.0 * 1e6 * LU177_ELECTRON_KEV * J_PER_KEV / (mass_g / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tia_matches_numeric_integral() {
        let k = Kinetics::new(0.01, 2.0, 0.02, 45.0, 0.2);
        let mut s = 0.0;
        let dt = 0.01;
        let mut t = 0.0;
        while t < 5000.0 {
            s += k.activity_mbq(7400.0, t + dt / 2.0) * dt;
            t += dt;
        }
        let tia = k.tia_mbq_h(7400.0);
        assert!((s - tia).abs() / tia < 1e-3, "{s} vs {tia}");
        assert!((k.slow_effective_half_life_h - 45.0).abs() < 1e-9);
        assert_eq!(k.activity_mbq(7400.0, 0.0), 0.0);
    }

    #[test]
    fn terms_and_scalings_describe_the_same_curve() {
        let k = Kinetics::new(0.01, 2.0, 0.02, 45.0, 0.2);
        for t in [0.0, 0.3, 5.0, 72.0, 400.0] {
            let a: f64 = k
                .exponential_terms()
                .iter()
                .map(|(c, l)| c * (-l * t).exp())
                .sum();
            assert!((7400.0 * a - k.activity_mbq(7400.0, t)).abs() < 1e-9);
        }
        // Slower clearance: longer effective half-life, more TIA.
        let slow = k.with_slow_clearance_scaled(0.97);
        assert!(slow.slow_effective_half_life_h > k.slow_effective_half_life_h);
        assert!(slow.tia_mbq_h(1.0) > k.tia_mbq_h(1.0));
        assert!(
            (slow.slow_biological_half_life_h * 0.97 - k.slow_biological_half_life_h).abs() < 1e-9
        );
        let half = k.with_uptake_scaled(0.5);
        assert!((half.tia_mbq_h(1.0) - 0.5 * k.tia_mbq_h(1.0)).abs() < 1e-12);
    }
}
