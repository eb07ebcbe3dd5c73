//! The integration tests, one binary (one link of candle instead of one per file).
//! Each module is one area; `cargo test --test it MODULE::` runs one of them.
//! The tests that install a counting global allocator (`tests/hostile_inputs.rs`,
//! `tests/fuzz_short.rs`) stay binaries of their own: the allocator and its cap
//! are process-wide.

#[path = "../common/mod.rs"]
mod common;

mod appliance;
mod appliance_faults;
mod appliance_soak;
mod bench_cli;
mod corrections;
mod ct_appearance;
mod dicom_exports;
mod dicom_net;
mod dicom_out;
mod docs_links;
mod dose_truth;
mod dosimetry;
mod eval_cli;
mod fetch_anatomy;
mod gpu_parity;
mod history;
mod io;
mod lesion_truth;
mod phantom;
mod psf_calibration;
mod pvc_truth;
mod real_anatomy;
mod real_ct;
mod refine_parity;
mod seg_cli;
mod seg_parity;
mod self_check;
mod shipped_weights;
mod train_parity;
