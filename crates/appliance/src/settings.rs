//! `[appliance]` and `[log]` sections of the configuration: the box's loop,
//! status port and logging (see `config/default.toml` for each key).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    pub quiet_period_s: f64,
    pub poll_interval_s: f64,
    pub heartbeat_s: f64,
    pub memory_budget_mb: f64,
    pub queue_capacity: usize,
    pub expected_timepoints: usize,
    pub status: String,
    pub serial_baud: u32,
    /// First wait before a job that hit an environment fault runs again; doubled
    /// per failure up to `retry_max_s`.
    pub retry_initial_s: f64,
    pub retry_max_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}
