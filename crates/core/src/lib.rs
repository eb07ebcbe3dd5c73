//! organdose-core: what every layer shares. The image volume and its geometry
//! (LPS, mm), organ labels, DICOM dates and times, the shipped default
//! configuration, and the error type with its fault kinds (input / environment /
//! internal), which decide whether the appliance quarantines or retries.

// Index loops over 3x3 / 4x4 matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

pub mod defaults;
pub mod error;
pub mod organs;
pub mod patient;
pub mod time;
pub mod volume;

pub use error::{Error, FaultKind, Result};
pub use volume::{Geometry, Volume};
