//! organdose-dose: dosimetry of one study from its masks and SPECT time points.
//!
//! Dosimetry (issue 4): from organ masks and quantitative SPECT time points to organ
//! activity, time-integrated activity, mean absorbed dose, voxel dose map and DVH.
//!
//! Modules, in data-flow order:
//! - [`nuclide`]: half-life and energy per decay (sources named there);
//! - [`psf`]: separable 3-D Gaussian on anisotropic voxels (CPU twin of the CUDA kernel);
//! - [`activity`]: CT mask -> SPECT grid, border extension, organ activity, spill-out check;
//! - [`lesions`]: lesion VOIs, given (the tumour label's components) or found on the
//!   SPECT (hot spots, iterative threshold), carried to every time point;
//! - [`kinetics`]: time-activity fits (mono/bi-exponential, Levenberg-Marquardt), TIA,
//!   trapezoid cross-check, single- and two-time-point methods;
//! - [`dose`]: local energy deposition, voxel-S-value convolution (FFT), DVH;
//! - [`uncertainty`]: propagation to TIA and mean dose (EANM 2018);
//! - [`pipeline`]: the one entry point, [`pipeline::run`], format independent;
//! - [`plausibility`]: gates that hold an implausible result back as `needs_review`;

// Index loops over 3x3 / 4x4 matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use organdose_core::{defaults, error, organs, volume, Error, Result};
#[cfg(test)]
use organdose_phantom as phantom;

pub mod activity;
pub mod bed;
pub mod boxmap;
pub mod dose;
pub mod history;
pub mod kinetics;
pub mod lesions;
pub mod nuclide;
pub mod pipeline;
pub mod plausibility;
pub mod psf;
pub mod psf_calibration;
pub mod pvc;
pub mod registration;
pub mod uncertainty;

pub use nuclide::Nuclide;
pub use pipeline::{run, DoseInput, DoseSummary, TimePointInput};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[dosimetry]` section of the configuration (see `config/default.toml` for the meaning
/// of each key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DosimetryConfig {
    pub nuclide: String,
    pub psf_sigma_mm: f64,
    pub voi_threshold: f64,
    pub coverage_subsamples: usize,
    pub exclude_other_organs: bool,
    pub spill_shell_mm: f64,
    pub spill_warn_ratio: f64,
    pub pvc: pvc::PvcMethod,
    pub pvc_psf_fwhm_mm: f64,
    #[serde(default)]
    pub pvc_psf_axial_fwhm_mm: Option<f64>,
    pub pvc_psf_fwhm_sd_mm: f64,
    pub pvc_shell_mm: f64,
    /// Before the correction, search each time point's mask translation against the
    /// SPECT up to this far (mm per axis) and use the best (`registration.rs`); 0: off.
    #[serde(default)]
    pub register_max_mm: f64,
    /// How three or more time points become a TIA (`fit` or `hybrid`).
    pub tia_method: kinetics::TiaMethod,
    /// Which volume an organ's activity is taken over (`activity.rs`).
    #[serde(default)]
    pub activity_volume: activity::ActivityVolume,
    pub activity_rel_sd: f64,
    pub mass_rel_sd: f64,
    pub population_teff_h: BTreeMap<String, f64>,
    pub density_g_per_ml: BTreeMap<String, f64>,
    pub kernel: String,
    pub dose_map_reference_h: f64,
    pub dvh_bins: usize,
    /// A time point acquired later than this after the injection (h) is another
    /// cycle's or a wrong date: the summary needs review.
    pub max_timepoint_h: f64,
    /// A mean dose above this (Gy) in an organ the gates watch (kidneys, liver,
    /// spleen) is not a therapy cycle's: the summary needs review.
    pub max_organ_dose_gy: f64,
    /// Linear-quadratic alpha/beta (Gy) per organ for the BED (`bed.rs`); an
    /// organ not listed gets no BED.
    pub bed_alpha_beta_gy: BTreeMap<String, f64>,
    /// Repair half-time (h) per organ for the BED.
    pub bed_repair_half_time_h: BTreeMap<String, f64>,
    /// Cumulative limits per organ for the treatment history (`history.rs`):
    /// absorbed dose, BED, and BED for a patient with risk factors (Gy).
    pub limit_dose_gy: BTreeMap<String, f64>,
    pub limit_bed_gy: BTreeMap<String, f64>,
    pub limit_bed_risk_gy: BTreeMap<String, f64>,
    /// Where lesion VOIs come from (`lesions.rs`): `auto`, `given`, `detect`, `off`.
    pub lesions: lesions::LesionMode,
    /// Given lesions: tumour components smaller than this (mL) are dropped.
    pub lesion_min_volume_ml: f64,
    /// Automatic lesions are found on the time point nearest this (h p.i.).
    pub lesion_detect_h: f64,
    /// A hot spot is a candidate when its maximum is at least this x the liver median.
    pub lesion_detect_contrast: f64,
    /// Threshold fraction of (maximum - background) above background: the start of
    /// the iteration, or the threshold itself with `lesion_threshold_method = "fixed"`.
    pub lesion_threshold: f64,
    pub lesion_threshold_method: lesions::ThresholdMethod,
    /// Automatic VOIs smaller than a sphere of this many PSF FWHMs across are dropped.
    pub lesion_min_diameter_fwhm: f64,
}

impl Default for DosimetryConfig {
    fn default() -> Self {
        crate::defaults::section("dosimetry")
    }
}

impl DosimetryConfig {
    /// Density (g/mL) of an organ: configured value, else the organ default.
    pub fn density(&self, organ: &str) -> f64 {
        match self.density_g_per_ml.get(organ) {
            Some(&d) if d.is_finite() && d > 0.0 => d,
            _ => crate::organs::label(organ)
                .map(crate::organs::default_density_g_per_ml)
                .unwrap_or(1.06),
        }
    }

    /// (alpha/beta Gy, repair half-time h) of an organ, when both are set.
    pub(crate) fn lq(&self, organ: &str) -> Option<(f64, f64)> {
        Some((
            *self.bed_alpha_beta_gy.get(organ)?,
            *self.bed_repair_half_time_h.get(organ)?,
        ))
    }

    /// Population effective half-life (h) for the Madsen single-time-point method.
    pub fn population_teff_h(&self, organ: &str) -> f64 {
        self.population_teff_h
            .get(organ)
            .or_else(|| self.population_teff_h.get("kidney_left"))
            .copied()
            .unwrap_or(50.0)
    }

    /// What the automatic lesion detection takes from this configuration.
    pub(crate) fn lesion_detect_settings(&self) -> lesions::DetectSettings {
        lesions::DetectSettings {
            psf: self.psf(),
            contrast: self.lesion_detect_contrast,
            threshold: self.lesion_threshold,
            method: self.lesion_threshold_method,
            min_diameter_fwhm: self.lesion_min_diameter_fwhm,
        }
    }

    /// The PSF the partial-volume correction assumes.
    pub fn psf(&self) -> pvc::Psf {
        pvc::Psf::new(self.pvc_psf_fwhm_mm, self.pvc_psf_axial_fwhm_mm)
    }

    /// Refuses values that would make results meaningless.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: &str, v: f64| {
            Err(crate::Error::input(format!(
                "dosimetry config: {what} = {v} is out of range"
            )))
        };
        if !(self.psf_sigma_mm.is_finite() && self.psf_sigma_mm >= 0.0) {
            return bad("psf_sigma_mm", self.psf_sigma_mm);
        }
        if !(self.voi_threshold > 0.0 && self.voi_threshold < 1.0) {
            return bad("voi_threshold", self.voi_threshold);
        }
        if self.coverage_subsamples == 0 || self.coverage_subsamples > 8 {
            return bad("coverage_subsamples", self.coverage_subsamples as f64);
        }
        if !(self.spill_shell_mm.is_finite() && self.spill_shell_mm > 0.0) {
            return bad("spill_shell_mm", self.spill_shell_mm);
        }
        let fwhm_ok = |v: f64| v.is_finite() && (1.0..=60.0).contains(&v);
        if !fwhm_ok(self.pvc_psf_fwhm_mm) {
            return bad("pvc_psf_fwhm_mm", self.pvc_psf_fwhm_mm);
        }
        if let Some(v) = self.pvc_psf_axial_fwhm_mm {
            if !fwhm_ok(v) {
                return bad("pvc_psf_axial_fwhm_mm", v);
            }
        }
        if !(self.register_max_mm.is_finite() && (0.0..=50.0).contains(&self.register_max_mm)) {
            return bad("register_max_mm", self.register_max_mm);
        }
        if !(self.pvc_psf_fwhm_sd_mm.is_finite() && (0.0..10.0).contains(&self.pvc_psf_fwhm_sd_mm))
        {
            return bad("pvc_psf_fwhm_sd_mm", self.pvc_psf_fwhm_sd_mm);
        }
        if !(self.pvc_shell_mm.is_finite() && (0.0..=100.0).contains(&self.pvc_shell_mm)) {
            return bad("pvc_shell_mm", self.pvc_shell_mm);
        }
        if !(self.activity_rel_sd > 0.0 && self.activity_rel_sd < 1.0) {
            return bad("activity_rel_sd", self.activity_rel_sd);
        }
        if !(self.mass_rel_sd >= 0.0 && self.mass_rel_sd < 1.0) {
            return bad("mass_rel_sd", self.mass_rel_sd);
        }
        if !(self.lesion_min_volume_ml.is_finite()
            && (0.0..=1000.0).contains(&self.lesion_min_volume_ml))
        {
            return bad("lesion_min_volume_ml", self.lesion_min_volume_ml);
        }
        if !(self.lesion_detect_h.is_finite() && (0.0..=10_000.0).contains(&self.lesion_detect_h)) {
            return bad("lesion_detect_h", self.lesion_detect_h);
        }
        if !(self.lesion_detect_contrast.is_finite()
            && (1.0..=100.0).contains(&self.lesion_detect_contrast))
        {
            return bad("lesion_detect_contrast", self.lesion_detect_contrast);
        }
        if !(self.lesion_threshold > 0.05 && self.lesion_threshold < 0.95) {
            return bad("lesion_threshold", self.lesion_threshold);
        }
        if !(self.lesion_min_diameter_fwhm.is_finite()
            && (0.0..=10.0).contains(&self.lesion_min_diameter_fwhm))
        {
            return bad("lesion_min_diameter_fwhm", self.lesion_min_diameter_fwhm);
        }
        if self.dvh_bins < 2 || self.dvh_bins > 100_000 {
            return bad("dvh_bins", self.dvh_bins as f64);
        }
        for (key, m) in [
            ("limit_dose_gy", &self.limit_dose_gy),
            ("limit_bed_gy", &self.limit_bed_gy),
            ("limit_bed_risk_gy", &self.limit_bed_risk_gy),
        ] {
            for (organ, &v) in m {
                if !(v.is_finite() && v > 0.0 && v <= 1000.0) {
                    return bad(&format!("{key}.{organ}"), v);
                }
            }
        }
        Nuclide::from_name(&self.nuclide)?;
        Ok(())
    }
}
