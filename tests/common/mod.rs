//! Helpers shared by the integration tests: `tests/it/` uses them as
//! `crate::common::*`; the allocation-metered binaries (`tests/hostile_inputs.rs`,
//! `tests/fuzz_short.rs`) take the files they need with `#[path]`.
#![allow(dead_code)]

pub mod alloc_meter;
pub mod data;
pub mod dicom_bytes;
pub mod fixtures;
pub mod labels;
pub mod proc;
pub mod soak;
pub mod tools;
