//! `[report]` section of the configuration (see `config/default.toml`).

use serde::{Deserialize, Serialize};

/// What a finished cycle writes besides the JSON/text/CSV results.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// RT Structure Sets, SEGs, RT Dose and the Encapsulated PDF in `OUT/<cycle>/dicom/`.
    pub dicom: bool,
    /// Time-activity plot with a logarithmic activity axis.
    pub tac_log_scale: bool,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            dicom: true,
            tac_log_scale: false,
        }
    }
}
