//! `[ingest]` section of the configuration: how strictly the DICOM reader
//! checks a series' geometry (see `config/default.toml` for each key).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub slice_spacing_tolerance: f64,
    pub max_tilt_deg: f64,
}
