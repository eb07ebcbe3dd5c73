//! Configuration: `config/default.toml` compiled in, overridden by `--config FILE`.
//!
//! Each section's type lives with its owner (`io`, `appliance`, `seg`,
//! `dosimetry`, `report`, `net`), so those modules never import this one; the
//! aggregate, loading and merging are here, and the section types are
//! re-exported for callers.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::defaults::DEFAULT_TOML;
pub use crate::dosimetry::DosimetryConfig;
pub use crate::io::settings::IngestConfig;
pub use crate::net::DicomNetConfig;
pub use crate::report::settings::ReportConfig;
pub use crate::seg::settings::SegmentConfig;
pub use crate::settings::{ApplianceConfig, LogConfig};

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
        let mut base: toml::Value = toml::from_str(DEFAULT_TOML).map_err(|e| {
            Error::config(
                Path::new("config/default.toml"),
                e.to_string(),
                Some(Box::new(e)),
            )
        })?;
        if let Some(p) = path {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            let over: toml::Value = toml::from_str(&text)
                .map_err(|e| Error::config(p, e.to_string(), Some(Box::new(e))))?;
            merge(&mut base, over);
        }
        let cfg: Config = base.clone().try_into().map_err(|e: toml::de::Error| {
            // A value of the wrong type names no key through `try_into`: parsed
            // again from text, the error quotes the offending line.
            let spanned = toml::to_string(&base)
                .ok()
                .and_then(|t| toml::from_str::<Config>(&t).err())
                .map(|e| e.to_string());
            let path = path.unwrap_or(Path::new(""));
            match spanned {
                // The line-quoting message is the one to show; the first error
                // said less about the same fault.
                Some(m) => Error::config(path, m, None),
                None => Error::config(path, e.to_string(), Some(Box::new(e))),
            }
        })?;
        cfg.check_ranges().map_err(|msg| {
            Error::config(path.unwrap_or(Path::new("config/default.toml")), msg, None)
        })?;
        Ok(cfg)
    }

    /// Every numeric key with its value and its accepted range: the one table
    /// [`Config::load`] checks (issue 42: an unchecked value panicked, hung or
    /// silently turned a check off).
    pub(crate) fn numeric_keys(&self) -> Vec<(String, f64, Range)> {
        let (a, d, s, n, i) = (
            &self.appliance,
            &self.dosimetry,
            &self.segment,
            &self.dicom,
            &self.ingest,
        );
        const DAY_S: f64 = 86_400.0;
        let mut v: Vec<(String, f64, Range)> = vec![
            // A fraction of the slice spacing; 0 would call every real series gappy.
            (
                "ingest.slice_spacing_tolerance".into(),
                i.slice_spacing_tolerance,
                Range::open_closed(0.0, 0.5),
            ),
            (
                "ingest.max_tilt_deg".into(),
                i.max_tilt_deg,
                Range::closed(0.0, 45.0),
            ),
            // 0: a file is read as soon as it is seen (tests); a day at most.
            (
                "appliance.quiet_period_s".into(),
                a.quiet_period_s,
                Range::closed(0.0, DAY_S),
            ),
            // Below 10 ms the loop spins; Duration needs a finite value.
            (
                "appliance.poll_interval_s".into(),
                a.poll_interval_s,
                Range::closed(0.01, 3600.0),
            ),
            (
                "appliance.heartbeat_s".into(),
                a.heartbeat_s,
                Range::closed(0.1, DAY_S),
            ),
            // 64 MB: less than one CT series; 1 TB: more than any box this runs on.
            (
                "appliance.memory_budget_mb".into(),
                a.memory_budget_mb,
                Range::closed(64.0, 1_048_576.0),
            ),
            (
                "appliance.queue_capacity".into(),
                a.queue_capacity as f64,
                Range::closed(1.0, 1000.0),
            ),
            (
                "appliance.expected_timepoints".into(),
                a.expected_timepoints as f64,
                Range::closed(1.0, 20.0),
            ),
            // The standard serial rates.
            (
                "appliance.serial_baud".into(),
                a.serial_baud as f64,
                Range::closed(300.0, 4_000_000.0),
            ),
            (
                "appliance.retry_initial_s".into(),
                a.retry_initial_s,
                Range::closed(0.01, DAY_S),
            ),
            (
                "appliance.retry_max_s".into(),
                a.retry_max_s,
                Range::closed(0.01, 7.0 * DAY_S),
            ),
            (
                "dosimetry.psf_sigma_mm".into(),
                d.psf_sigma_mm,
                Range::closed(0.0, 50.0),
            ),
            (
                "dosimetry.voi_threshold".into(),
                d.voi_threshold,
                Range::open(0.0, 1.0),
            ),
            (
                "dosimetry.coverage_subsamples".into(),
                d.coverage_subsamples as f64,
                Range::closed(1.0, 8.0),
            ),
            // The shell is a Gaussian's taps wide: 1e308 overflowed its
            // capacity, 1e6 ran for minutes; 50 mm is several SPECT voxels.
            (
                "dosimetry.spill_shell_mm".into(),
                d.spill_shell_mm,
                Range::open_closed(0.0, 50.0),
            ),
            // NaN turned the spill warning off without a word.
            (
                "dosimetry.spill_warn_ratio".into(),
                d.spill_warn_ratio,
                Range::open_closed(0.0, 100.0),
            ),
            (
                "dosimetry.pvc_psf_fwhm_mm".into(),
                d.pvc_psf_fwhm_mm,
                Range::closed(1.0, 60.0),
            ),
            (
                "dosimetry.pvc_psf_fwhm_sd_mm".into(),
                d.pvc_psf_fwhm_sd_mm,
                Range::closed_open(0.0, 10.0),
            ),
            (
                "dosimetry.pvc_shell_mm".into(),
                d.pvc_shell_mm,
                Range::closed(0.0, 100.0),
            ),
            (
                "dosimetry.register_max_mm".into(),
                d.register_max_mm,
                Range::closed(0.0, 50.0),
            ),
            (
                "dosimetry.activity_rel_sd".into(),
                d.activity_rel_sd,
                Range::open(0.0, 1.0),
            ),
            (
                "dosimetry.mass_rel_sd".into(),
                d.mass_rel_sd,
                Range::closed_open(0.0, 1.0),
            ),
            (
                "dosimetry.dose_map_reference_h".into(),
                d.dose_map_reference_h,
                Range::closed(0.0, 10_000.0),
            ),
            (
                "dosimetry.dvh_bins".into(),
                d.dvh_bins as f64,
                Range::closed(2.0, 100_000.0),
            ),
            // A year at most; below that any window is a site's choice.
            (
                "dosimetry.max_timepoint_h".into(),
                d.max_timepoint_h,
                Range::open_closed(0.0, 8760.0),
            ),
            (
                "dosimetry.max_organ_dose_gy".into(),
                d.max_organ_dose_gy,
                Range::open_closed(0.0, 1000.0),
            ),
            (
                "dosimetry.lesion_min_volume_ml".into(),
                d.lesion_min_volume_ml,
                Range::closed(0.0, 1000.0),
            ),
            (
                "dosimetry.lesion_detect_h".into(),
                d.lesion_detect_h,
                Range::closed(0.0, 10_000.0),
            ),
            // Below 1 every voxel of the reference organ is a candidate.
            (
                "dosimetry.lesion_detect_contrast".into(),
                d.lesion_detect_contrast,
                Range::closed(1.0, 100.0),
            ),
            (
                "dosimetry.lesion_threshold".into(),
                d.lesion_threshold,
                Range::open(0.05, 0.95),
            ),
            (
                "dosimetry.lesion_min_diameter_fwhm".into(),
                d.lesion_min_diameter_fwhm,
                Range::closed(0.0, 10.0),
            ),
            (
                "segment.batch_size".into(),
                s.batch_size as f64,
                Range::closed(1.0, 256.0),
            ),
            (
                "segment.parallel_batches".into(),
                s.parallel_batches as f64,
                Range::closed(0.0, 256.0),
            ),
            (
                "segment.max_fill_gap_slices".into(),
                s.max_fill_gap_slices as f64,
                Range::closed(0.0, 100.0),
            ),
            // Negative: every slice.
            (
                "segment.other_planes_margin_mm".into(),
                s.other_planes_margin_mm,
                Range::closed(-1000.0, 1000.0),
            ),
            (
                "segment.slice_step_mm".into(),
                s.slice_step_mm,
                Range::closed(0.0, 20.0),
            ),
            (
                "segment.other_planes_slice_step_mm".into(),
                s.other_planes_slice_step_mm,
                Range::closed(0.0, 20.0),
            ),
            // Pixels of a side (rounded to multiples of 32); max 0: the square canvas.
            (
                "segment.canvas_max_px".into(),
                s.canvas_max_px as f64,
                Range::closed(0.0, 1024.0),
            ),
            (
                "segment.canvas_min_px".into(),
                s.canvas_min_px as f64,
                Range::closed(32.0, 1024.0),
            ),
            (
                "segment.fusion_threshold".into(),
                s.fusion_threshold as f64,
                Range::open(0.0, 1.0),
            ),
            (
                "dicom.port".into(),
                n.port as f64,
                Range::closed(0.0, 65535.0),
            ),
            (
                "dicom.max_associations".into(),
                n.max_associations as f64,
                Range::closed(1.0, 64.0),
            ),
            (
                "dicom.timeout_s".into(),
                n.timeout_s,
                Range::closed(1.0, 3600.0),
            ),
            (
                "dicom.retry_initial_s".into(),
                n.retry_initial_s,
                Range::closed(0.1, DAY_S),
            ),
            (
                "dicom.retry_max_s".into(),
                n.retry_max_s,
                Range::closed(0.1, 7.0 * DAY_S),
            ),
        ];
        if let Some(x) = d.pvc_psf_axial_fwhm_mm {
            v.push((
                "dosimetry.pvc_psf_axial_fwhm_mm".into(),
                x,
                Range::closed(1.0, 60.0),
            ));
        }
        for (organ, x) in &d.population_teff_h {
            // Never longer than the longest physical half-life served (177Lu, 159.5 h)
            // by much; 1000 h leaves room for a site's own nuclide table.
            v.push((
                format!("dosimetry.population_teff_h.{organ}"),
                *x,
                Range::open_closed(0.0, 1000.0),
            ));
        }
        for (organ, x) in &d.density_g_per_ml {
            // Lung (0.3) to cortical bone (1.9), with margin.
            v.push((
                format!("dosimetry.density_g_per_ml.{organ}"),
                *x,
                Range::closed(0.1, 5.0),
            ));
        }
        for (organ, x) in &d.bed_alpha_beta_gy {
            // Late-responding tissue 1-5 Gy, tumours up to about 20 Gy.
            v.push((
                format!("dosimetry.bed_alpha_beta_gy.{organ}"),
                *x,
                Range::closed(0.1, 100.0),
            ));
        }
        for (organ, x) in &d.bed_repair_half_time_h {
            // Repair half-times reported are minutes to a few hours.
            v.push((
                format!("dosimetry.bed_repair_half_time_h.{organ}"),
                *x,
                Range::closed(0.01, 100.0),
            ));
        }
        for (key, m) in [
            ("limit_dose_gy", &d.limit_dose_gy),
            ("limit_bed_gy", &d.limit_bed_gy),
            ("limit_bed_risk_gy", &d.limit_bed_risk_gy),
        ] {
            // Cumulative limits: a few Gy (bone marrow 2 Gy) to tens of Gy
            // (kidney BED 40 Gy); 1000 Gy is no organ's.
            for (organ, x) in m {
                v.push((
                    format!("dosimetry.{key}.{organ}"),
                    *x,
                    Range::closed(0.1, 1000.0),
                ));
            }
        }
        for (k, dest) in n.destinations.iter().enumerate() {
            v.push((
                format!("dicom.destinations[{k}].port"),
                dest.port as f64,
                Range::closed(1.0, 65535.0),
            ));
        }
        v
    }

    /// The first key outside its range, named with the range.
    pub(crate) fn check_ranges(&self) -> std::result::Result<(), String> {
        for (key, v, r) in self.numeric_keys() {
            if !r.contains(v) {
                return Err(format!("{key} = {v:?} is outside its range {r}"));
            }
        }
        Ok(())
    }
}

/// An accepted interval of a numeric key; NaN is in none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Range {
    pub lo: f64,
    pub hi: f64,
    pub lo_open: bool,
    pub hi_open: bool,
}

impl Range {
    pub const fn closed(lo: f64, hi: f64) -> Range {
        Range {
            lo,
            hi,
            lo_open: false,
            hi_open: false,
        }
    }
    pub const fn open(lo: f64, hi: f64) -> Range {
        Range {
            lo,
            hi,
            lo_open: true,
            hi_open: true,
        }
    }
    pub const fn open_closed(lo: f64, hi: f64) -> Range {
        Range {
            lo,
            hi,
            lo_open: true,
            hi_open: false,
        }
    }
    pub const fn closed_open(lo: f64, hi: f64) -> Range {
        Range {
            lo,
            hi,
            lo_open: false,
            hi_open: true,
        }
    }
    pub fn contains(&self, v: f64) -> bool {
        let above = if self.lo_open {
            v > self.lo
        } else {
            v >= self.lo
        };
        let below = if self.hi_open {
            v < self.hi
        } else {
            v <= self.hi
        };
        above && below
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}, {}{}",
            if self.lo_open { "(" } else { "[" },
            self.lo,
            self.hi,
            if self.hi_open { ")" } else { "]" }
        )
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
activity_volume = "time_point"
activity_rel_sd = 0.1
mass_rel_sd = 0.05
kernel = "kernels/lu177.txt"
dose_map_reference_h = 48.0
dvh_bins = 100
max_timepoint_h = 240.0
max_organ_dose_gy = 40.0
lesions = "detect"
lesion_min_volume_ml = 0.5
lesion_detect_h = 48.0
lesion_detect_contrast = 2.0
lesion_threshold = 0.5
lesion_threshold_method = "fixed"
lesion_min_diameter_fwhm = 1.5

[dosimetry.population_teff_h]
kidney_left = 40.0
liver = 60.0

[dosimetry.bed_alpha_beta_gy]
kidney_left = 3.0

[dosimetry.bed_repair_half_time_h]
kidney_left = 2.5

[dosimetry.limit_dose_gy]
kidney_left = 20.0

[dosimetry.limit_bed_gy]
kidney_right = 38.0

[dosimetry.limit_bed_risk_gy]
kidney_left = 25.0

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
slice_step_mm = 3.0
other_planes_slice_step_mm = 4.0
fusion = "mean"
fusion_threshold = 0.25
fill_holes = false
low_dose_ct = "follow"
kidney_refine = false
canvas_max_px = 320
canvas_min_px = 192

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

    /// The paths of every numeric leaf of a TOML value.
    fn numeric_leaves(v: &toml::Value, at: &str, out: &mut Vec<(String, bool)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, x) in t {
                    let p = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    numeric_leaves(x, &p, out);
                }
            }
            toml::Value::Integer(_) => out.push((at.to_string(), true)),
            toml::Value::Float(_) => out.push((at.to_string(), false)),
            _ => {}
        }
    }

    /// Issue 42, finding 5: every numeric key of the table is refused with its
    /// name and range when NaN, infinite, negative, zero or huge, and accepted
    /// when the value is inside the range; and the table holds every numeric
    /// key of the shipped defaults.
    #[test]
    fn every_numeric_key_is_range_checked_key_by_key() {
        let defaults: toml::Value = toml::from_str(DEFAULT_TOML).unwrap();
        let mut leaves = Vec::new();
        numeric_leaves(&defaults, "", &mut leaves);
        let table = Config::default().numeric_keys();
        for (leaf, _) in &leaves {
            assert!(
                table.iter().any(|(k, _, _)| k == leaf),
                "{leaf} has no range in Config::numeric_keys"
            );
        }
        // Keys the defaults leave out: the axial FWHM and a destination's port.
        let mut keys: Vec<(String, bool)> = leaves;
        keys.push(("dosimetry.pvc_psf_axial_fwhm_mm".into(), false));
        keys.push(("dicom.destinations[0].port".into(), true));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let mut checked = 0;
        for (key, int) in &keys {
            let values: &[&str] = if *int {
                &["nan", "inf", "-5", "0", "1e308", "9223372036854775807"]
            } else {
                &["nan", "inf", "-inf", "-5.0", "0.0", "1e308"]
            };
            for v in values {
                let text = match key.strip_prefix("dicom.destinations[0].") {
                    Some(k) => format!(
                        "[[dicom.destinations]]\nae_title = \"PACS\"\nhost = \"10.0.0.5\"\n{k} = {v}\n"
                    ),
                    None => {
                        let (section, k) = key.rsplit_once('.').unwrap();
                        format!("[{section}]\n{k} = {v}\n")
                    }
                };
                std::fs::write(&p, &text).unwrap();
                let got = Config::load(Some(&p));
                let loaded = Config::load(Some(&p)).ok();
                let range = loaded
                    .as_ref()
                    .map(|c| c.numeric_keys())
                    .unwrap_or_else(|| table.clone())
                    .into_iter()
                    .find(|(k, _, _)| k == key)
                    .map(|(_, _, r)| r)
                    .unwrap_or_else(|| {
                        // Only in a file that sets it: take it from a valid one.
                        let ok = if *int { "1" } else { "10.0" };
                        std::fs::write(&p, text.replace(&format!("= {v}"), &format!("= {ok}")))
                            .unwrap();
                        let c = Config::load(Some(&p)).unwrap();
                        c.numeric_keys()
                            .into_iter()
                            .find(|(k, _, _)| k == key)
                            .unwrap()
                            .2
                    });
                let x: f64 = v.parse().unwrap();
                let literal_ok = !*int || v.parse::<i64>().is_ok_and(|i| i >= 0);
                let want_ok = literal_ok && range.contains(x);
                match got {
                    Ok(_) => assert!(want_ok, "{key} = {v} accepted, range {range}"),
                    Err(e) => {
                        assert!(!want_ok, "{key} = {v} refused: {e}");
                        let msg = e.to_string();
                        let last = key.rsplit(['.', ']']).next().unwrap();
                        assert!(
                            msg.contains(last),
                            "{key} = {v}: error does not name the key: {msg}"
                        );
                        if msg.contains("outside its range") {
                            assert!(
                                msg.contains(key.as_str()) && msg.contains(&range.to_string()),
                                "{key} = {v}: error does not name the key and range: {msg}"
                            );
                        }
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 200, "{checked}");
    }

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
        assert_eq!(
            c.dosimetry.activity_volume,
            crate::dosimetry::activity::ActivityVolume::TimePoint
        );
        assert_eq!(
            Config::default().dosimetry.activity_volume,
            crate::dosimetry::activity::ActivityVolume::DiagnosticCt
        );
        assert_eq!(c.dosimetry.population_teff_h["liver"], 60.0);
        assert_eq!(c.dosimetry.limit_dose_gy["kidney_left"], 20.0);
        assert_eq!(c.dosimetry.limit_bed_gy["kidney_right"], 38.0);
        assert_eq!(c.dosimetry.limit_bed_risk_gy["kidney_left"], 25.0);
        // The organ the file does not name keeps its shipped limit.
        assert_eq!(c.dosimetry.limit_bed_risk_gy["kidney_right"], 28.0);
        assert_eq!(c.segment.device, crate::seg::engine::DeviceKind::Cuda);
        assert_eq!(c.segment.planes, crate::seg::driver::Planes::Axial);
        assert_eq!(c.segment.driver_options().other_planes_margin_mm, None);
        assert_eq!(c.segment.driver_options().slice_step_mm, 3.0);
        assert_eq!(c.segment.driver_options().other_planes_slice_step_mm, 4.0);
        assert_eq!(
            c.segment.low_dose_ct,
            crate::seg::settings::LowDoseCt::Follow
        );
        assert!(!c.segment.kidney_refine && !c.segment.driver_options().refine_kidneys);
        assert!(Config::default().segment.kidney_refine);
        assert_eq!(
            Config::default().segment.low_dose_ct,
            crate::seg::settings::LowDoseCt::Bounded
        );
        let fit = c.segment.driver_options().canvas_fit;
        assert_eq!(fit.map(|f| (f.min_px, f.max_px)), Some((192, 320)));
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
