//! The box beside the console: watch folder, therapy cycles across days,
//! bounded job queue, memory budget, persistent state, status port. This layer
//! only orchestrates; the science is behind [`daemon::Processor`].

pub mod clock;
pub mod cycles;
pub mod daemon;
pub mod ingest;
pub mod lock;
pub mod processor;
pub mod quarantine;
pub mod recent;
pub mod settings;
pub mod state;
pub mod status;
pub mod swap;

pub use settings::{ApplianceConfig, LogConfig};
