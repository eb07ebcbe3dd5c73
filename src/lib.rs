//! organdose: scanner-side dosimetry for 177Lu molecular radiotherapy.
//!
//! The library is a workspace of crates, one per layer, each depending only on
//! those below it (docs/architecture.md):
//!
//! | crate | modules here |
//! |---|---|
//! | `organdose-core` | `error`, `organs`, `time`, `volume`, `defaults` |
//! | `organdose-io` | `io`, `classify`, `study` |
//! | `organdose-kernels` | `gpu` (the CUDA path; boxes, model config, Gaussian taps) |
//! | `organdose-phantom` | `phantom` |
//! | `organdose-dose` | `dosimetry` |
//! | `organdose-seg` | `seg` |
//! | `organdose-report` | `report` |
//! | `organdose-net` | `net` |
//! | `organdose-appliance` | `appliance`, `pipeline`, `config` |
//!
//! This crate re-exports them under one name for the binary (`src/main.rs`,
//! `src/cli/`), the tests and the benches. README.md is the user's manual.

pub use organdose_appliance as appliance;
pub use organdose_appliance::{config, pipeline};
pub use organdose_core::{defaults, error, organs, patient, time, volume};
pub use organdose_core::{Error, Geometry, Result, Volume};
pub use organdose_dose as dosimetry;
pub use organdose_io as io;
pub use organdose_io::{classify, study};
pub use organdose_kernels as gpu;
pub use organdose_net as net;
pub use organdose_phantom as phantom;
pub use organdose_report as report;
pub use organdose_seg as seg;
