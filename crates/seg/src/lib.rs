//! organdose-seg: organ masks from a CT.
//!
//! CT organ segmentation: a 2.5D Mask R-CNN (torchvision layout and weight
//! names) in candle, run along the planes the scan lets it see, their probabilities fused.

// Index loops over 3x3 / 4x4 matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use organdose_core::{error, organs, volume, Error};
use organdose_io as io;
#[cfg(feature = "cuda")]
use organdose_kernels as gpu;
pub use organdose_kernels::{boxes, config};

pub mod anchors;
pub mod backbone;
pub mod confidence;
pub mod consensus;
pub mod conv;
pub mod cycle;
pub mod driver;
pub mod engine;
pub mod eval;
pub mod follow;
pub mod fusion;
pub mod model;
pub mod orient;
pub mod plane;
pub mod realct;
pub mod refine;
pub mod register;
pub mod roi_heads;
pub mod roi_ops;
pub mod rpn;
pub mod settings;
pub mod slicing;
pub mod transform;

pub use config::ModelConfig;
pub use model::{Detections, Forward, MaskRcnn};
pub use settings::SegmentConfig;
