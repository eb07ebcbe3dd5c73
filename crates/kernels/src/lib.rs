//! organdose-kernels: the CUDA path and the plain types it shares with the CPU
//! code (`boxes`, the model configuration `config`, Gaussian `taps`, the device
//! memory budget `memory`), so that the network (organdose-seg) and the
//! dosimetry (organdose-dose) sit above it.
//!
//! The CUDA path (issue 8): the hand-written kernels of `kernels/` (this crate's folder) (RoIAlign,
//! RoI max pooling, the separable Gaussian PSF) loaded through cudarc, and the
//! device-memory budget of a study.
//!
//! - [`memory`] (every build): how much device memory a study needs, from the
//!   volume dimensions and the model config, and the refusal when it does not
//!   fit. Pure arithmetic, so the CPU build tests it.
//! - `device`, `ops` (features `cuda-kernels` / `cuda`): the context, NVRTC
//!   compilation of the embedded `.cu` sources at start-up (no CUDA toolkit at
//!   build time), and launch wrappers on host `Vec<f32>` or device buffers.
//! - `candle_ops` (feature `cuda`): the `cuda_fwd` of the RoI CustomOps, so the
//!   network runs on candle's CUDA device with these kernels.
//!
//! Each kernel has a CPU twin that the CPU build uses (`seg::roi_ops`,
//! `dosimetry::psf`); `tests/it/gpu_parity.rs` compares them on a GPU.

// Index loops over 3x3 / 4x4 matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use organdose_core::{error, Error};

pub mod boxes;
pub mod config;
pub mod taps;

pub mod memory;

#[cfg(feature = "cuda-kernels")]
mod device;
#[cfg(feature = "cuda-kernels")]
pub mod ops;
#[cfg(feature = "cuda-kernels")]
pub use device::{kernel_ptx, Gpu, KernelPtx};

#[cfg(feature = "cuda")]
pub mod candle_ops;

/// What went wrong on the device side. `NoDevice` is the one a caller may
/// treat as "run on the CPU instead"; the others are bugs or misconfiguration.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no usable CUDA device: {0}")]
    NoDevice(String),
    #[error("NVRTC could not compile kernels/{kernel}: {log}")]
    Compile { kernel: &'static str, log: String },
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    OutOfMemory(#[from] memory::DoesNotFit),
}

impl From<GpuError> for crate::Error {
    /// A failing driver, compiler or device memory is the machine's fault, not
    /// the study's: the appliance retries those (see [`crate::error::FaultKind`]).
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::Input(m) => crate::Error::input(m),
            other => crate::Error::environment(other.to_string()),
        }
    }
}

/// The kernel sources, embedded so that a binary needs no files beside it.
#[cfg(feature = "cuda-kernels")]
pub mod sources {
    pub(crate) const ROI_ALIGN: &str = include_str!("../kernels/roi_align.cu");
    pub(crate) const ROI_POOL: &str = include_str!("../kernels/roi_pool.cu");
    pub(crate) const GAUSSIAN_PSF: &str = include_str!("../kernels/gaussian_psf.cu");
}
