//! organdose: scanner-side dosimetry for 177Lu molecular radiotherapy.
//!
//! Data flow: `io` (ingest) -> `seg` (segment) -> `dosimetry` -> `report`;
//! `appliance` orchestrates; `net` is its DICOM network (Storage SCP in, outbox
//! and Storage SCU out). README.md is the
//! user's manual; docs/development.md has the layout and the development notes.

// Index loops over 3x3 / 4x4 matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

pub mod appliance;
pub mod classify;
pub mod config;
pub mod defaults;
pub mod dosimetry;
pub mod error;
pub mod gpu;
pub mod io;
pub mod net;
pub mod organs;
pub mod phantom;
pub mod pipeline;
pub mod report;
pub mod seg;
pub mod study;
pub mod time;
pub mod volume;

pub use error::{Error, Result};
pub use volume::{Geometry, Volume};
