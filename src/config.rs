//! Configuration: `config/default.toml` compiled in, overridden by `--config FILE`.
//!
//! Each section's type lives with its owner (`io`, `appliance`, `seg`,
//! `dosimetry`, `report`, `net`), so those modules never import this one; the
//! aggregate, loading and merging are here, and the section types are
//! re-exported for callers.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::appliance::settings::{ApplianceConfig, LogConfig};
pub use crate::defaults::DEFAULT_TOML;
pub use crate::dosimetry::DosimetryConfig;
pub use crate::io::settings::IngestConfig;
pub use crate::net::DicomNetConfig;
pub use crate::report::settings::ReportConfig;
pub use crate::seg::settings::SegmentConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub ingest: IngestConfig,
    pub appliance: ApplianceConfig,
    pub dosimetry: DosimetryConfig,
    pub segment: SegmentConfig,
    /// Absent from older config files: the defaults then.
    #[serde(default)]
    pub report: ReportConfig,
    /// The DICOM network: Storage SCP and the outbox's destinations.
    #[serde(default)]
    pub dicom: DicomNetConfig,
}

impl Default for Config {
    fn default() -> Self {
        // The shipped defaults are checked by a test, so this cannot fail in a release.
        toml::from_str(DEFAULT_TOML).expect("config/default.toml is valid")
    }
}

impl Config {
    /// Defaults with the keys of `path` laid over them (a partial file is fine).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut base: toml::Value = toml::from_str(DEFAULT_TOML).map_err(|e| Error::Config {
            path: "config/default.toml".into(),
            msg: e.to_string(),
        })?;
        if let Some(p) = path {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            let over: toml::Value = toml::from_str(&text).map_err(|e| Error::Config {
                path: p.to_path_buf(),
                msg: e.to_string(),
            })?;
            merge(&mut base, over);
        }
        let cfg: Config = base
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config {
                path: path.map(|p| p.to_path_buf()).unwrap_or_default(),
                msg: e.to_string(),
            })?;
        Ok(cfg)
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_partial_override_merges() {
        let d = Config::default();
        assert_eq!(d.ingest.max_tilt_deg, 0.5);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[ingest]\nmax_tilt_deg = 2.0\n").unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.ingest.max_tilt_deg, 2.0);
        assert_eq!(
            c.ingest.slice_spacing_tolerance,
            d.ingest.slice_spacing_tolerance
        );
        std::fs::write(&p, "[ingest]\nmax_tilt = 2.0\n").unwrap();
        assert!(Config::load(Some(&p)).is_err(), "unknown keys are refused");
    }

    /// Every key of every section, each with a value other than the shipped
    /// default: the section structs live with their owners (io, appliance,
    /// seg, dosimetry, report, net), and this pins that a site's full config
    /// file still parses to the same values, key for key.
    const EVERY_KEY_TOML: &str = r#"
[log]
level = "debug"

[ingest]
slice_spacing_tolerance = 0.1
max_tilt_deg = 1.5

[appliance]
quiet_period_s = 2.0
poll_interval_s = 1.0
heartbeat_s = 30.0
memory_budget_mb = 1024.0
queue_capacity = 2
expected_timepoints = 3
status = "serial:/dev/ttyUSB1"
serial_baud = 9600
retry_initial_s = 1.0
retry_max_s = 60.0

[dosimetry]
nuclide = "Y-90"
psf_sigma_mm = 6.0
voi_threshold = 0.2
coverage_subsamples = 2
exclude_other_organs = false
spill_shell_mm = 8.0
spill_warn_ratio = 0.4
pvc = "labbe"
pvc_psf_fwhm_mm = 10.0
pvc_psf_axial_fwhm_mm = 14.0
pvc_psf_fwhm_sd_mm = 0.5
pvc_shell_mm = 15.0
register_max_mm = 4.0
tia_method = "fit"
activity_rel_sd = 0.1
mass_rel_sd = 0.05
kernel = "kernels/lu177.txt"
dose_map_reference_h = 48.0
dvh_bins = 100

[dosimetry.population_teff_h]
kidney_left = 40.0
liver = 60.0

[dosimetry.density_g_per_ml]
liver = 1.05
spleen = 1.04

[segment]
weights = "/opt/organdose/model"
device = "cuda"
planes = "axial"
batch_size = 8
parallel_batches = 2
max_fill_gap_slices = 3
other_planes_margin_mm = -1.0
fusion = "mean"
fusion_threshold = 0.25
fill_holes = false

[report]
dicom = false
tac_log_scale = true

[dicom]
port = 11112
ae_title = "BOX1"
bind = "127.0.0.1"
allow_ae = ["CONSOLE"]
allow_host = ["10.0.0.7"]
max_associations = 2
timeout_s = 30.0
retry_initial_s = 5.0
retry_max_s = 300.0

[[dicom.destinations]]
ae_title = "PACS"
host = "10.0.0.5"
port = 104
"#;

    #[test]
    fn every_section_and_key_parses_to_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("every.toml");
        std::fs::write(&p, EVERY_KEY_TOML).unwrap();
        // Key for key: the file parsed and written back is the file itself, so
        // no key was renamed, dropped or defaulted by the move of a section.
        let parsed: Config = toml::from_str(EVERY_KEY_TOML).unwrap();
        let input: toml::Value = toml::from_str(EVERY_KEY_TOML).unwrap();
        assert_eq!(toml::Value::try_from(&parsed).unwrap(), input);
        // Through `load` (laid over the defaults: the organ maps keep the
        // organs the file does not name).
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.dosimetry.population_teff_h["kidney_right"], 50.0);
        // And through each owner's type, a value per section.
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.ingest.slice_spacing_tolerance, 0.1);
        assert_eq!(c.appliance.status, "serial:/dev/ttyUSB1");
        assert_eq!(c.appliance.retry_max_s, 60.0);
        assert_eq!(c.dosimetry.pvc, crate::dosimetry::pvc::PvcMethod::Labbe);
        assert_eq!(c.dosimetry.pvc_psf_axial_fwhm_mm, Some(14.0));
        assert_eq!(c.dosimetry.population_teff_h["liver"], 60.0);
        assert_eq!(c.segment.device, crate::seg::engine::DeviceKind::Cuda);
        assert_eq!(c.segment.planes, crate::seg::driver::Planes::Axial);
        assert_eq!(c.segment.driver_options().other_planes_margin_mm, None);
        assert!(!c.report.dicom && c.report.tac_log_scale);
        assert_eq!(c.dicom.destinations[0].port, 104);
        // Sections and keys a file leaves out are the shipped defaults, the
        // ones with a default of their own included.
        let d = Config::default();
        let partial: Config = toml::from_str(
            DEFAULT_TOML
                .split("\n[report]")
                .next()
                .expect("default.toml has a [report] section"),
        )
        .unwrap();
        assert_eq!(partial.report.dicom, d.report.dicom);
        assert_eq!(partial.report.tac_log_scale, d.report.tac_log_scale);
        assert_eq!(
            toml::Value::try_from(&d.dosimetry).unwrap(),
            toml::Value::try_from(crate::dosimetry::DosimetryConfig::default()).unwrap()
        );
    }
}
