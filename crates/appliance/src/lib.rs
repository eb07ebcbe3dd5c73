//! organdose-appliance: one study from masks to report (`pipeline`), the
//! configuration (`config`), and the appliance that runs them unattended.
//!
//! The box beside the console: watch folder, therapy cycles across days,
//! bounded job queue, memory budget, persistent state, status port. This layer
//! only orchestrates; the science is behind [`daemon::Processor`].

// Index loops over 3x3 / 4x4 matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use organdose_core::{defaults, error, organs, patient, volume};
use organdose_dose as dosimetry;
use organdose_io as io;
use organdose_io::{classify, study};
use organdose_net as net;
use organdose_report as report;
use organdose_seg as seg;

pub mod config;
pub mod pipeline;

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
