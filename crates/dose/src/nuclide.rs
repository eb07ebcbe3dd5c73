//! Radionuclide data used for dosimetry. Every number carries its source.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// 1 keV in joules (CODATA 2018 exact elementary charge: 1.602176634e-19 C).
pub const J_PER_KEV: f64 = 1.602_176_634e-16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Nuclide {
    #[serde(rename = "Lu-177")]
    Lu177,
    #[serde(rename = "Y-90")]
    Y90,
}

impl Nuclide {
    /// Accepts the common spellings: "Lu-177", "177Lu", "Lu177", "lu-177"; "Y-90", "90Y".
    pub fn from_name(name: &str) -> Result<Self> {
        let n: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match n.as_str() {
            // DICOM RadionuclideCodeSequence code meanings read "^177^Lutetium".
            "lu177" | "177lu" | "177lutetium" | "lutetium177" => Ok(Nuclide::Lu177),
            "y90" | "90y" | "90yttrium" | "yttrium90" => Ok(Nuclide::Y90),
            _ => Err(Error::input(format!(
                "unknown radionuclide {name:?} (known: Lu-177, Y-90)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Nuclide::Lu177 => "Lu-177",
            Nuclide::Y90 => "Y-90",
        }
    }

    /// Physical half-life in hours.
    pub fn half_life_h(self) -> f64 {
        match self {
            // 6.647 d: NNDC; EJNMMI Phys 2020;7:51, Table 1.
            Nuclide::Lu177 => 6.647 * 24.0,
            // 64.05 h: NNDC (ENSDF).
            Nuclide::Y90 => 64.05,
        }
    }

    /// Physical decay constant in 1/h.
    pub fn lambda_per_h(self) -> f64 {
        std::f64::consts::LN_2 / self.half_life_h()
    }

    /// Mean energy per decay emitted as non-penetrating radiation (electrons: beta,
    /// conversion and Auger), deposited locally, in keV.
    pub(crate) fn electron_energy_kev(self) -> f64 {
        match self {
            // 147.9 keV (beta + CE + Auger): EJNMMI Phys 2020;7:51, Table 1.
            Nuclide::Lu177 => 147.9,
            // 933.7 keV mean beta energy per decay: NNDC / ICRP Publication 107.
            Nuclide::Y90 => 933.7,
        }
    }

    /// Injected activities (MBq) believed for a therapy cycle with this nuclide;
    /// outside, the number is a unit error (Bq or GBq for MBq), a typo or a
    /// broken header, and the result needs review.
    pub(crate) fn plausible_injected_mbq(self) -> (f64, f64) {
        match self {
            // 177Lu-DOTATATE and -PSMA-617 give 7.4 GBq per cycle (NETTER-1, VISION);
            // escalated and dosimetry-guided cycles reach 11-15 GBq. Below 100 MBq a
            // SPECT has too few counts for quantitative dosimetry.
            Nuclide::Lu177 => (100.0, 15_000.0),
            // 90Y microspheres: 0.5-5 GBq typical, glass up to ~20 GBq for large
            // livers (package inserts); 90Y-ibritumomab at most 1.2 GBq.
            Nuclide::Y90 => (100.0, 20_000.0),
        }
    }

    /// Energy per decay in joules.
    pub(crate) fn electron_energy_j(self) -> f64 {
        self.electron_energy_kev() * J_PER_KEV
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_constants() {
        assert_eq!(Nuclide::from_name("177Lu").unwrap(), Nuclide::Lu177);
        assert_eq!(Nuclide::from_name("Lu-177").unwrap(), Nuclide::Lu177);
        assert_eq!(Nuclide::from_name("90Y").unwrap(), Nuclide::Y90);
        assert!(Nuclide::from_name("Tc-99m").is_err());
        assert!((Nuclide::Lu177.half_life_h() - 159.528).abs() < 1e-9);
        // 147.9 keV = 2.3696e-14 J
        assert!((Nuclide::Lu177.electron_energy_j() - 2.369_619e-14).abs() < 1e-19);
    }
}
