//! The CUDA context and our three kernels, compiled by NVRTC from the sources
//! embedded in the binary (so no CUDA toolkit is needed to build, and the PTX
//! is made for the very card found at run time).

use super::memory::{check_fits, MemoryEstimate};
use super::{sources, GpuError};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DriverError};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// PTX text of the three kernel files for one compute capability.
#[derive(Debug, Clone)]
pub struct KernelPtx {
    pub roi_align: String,
    pub roi_pool: String,
    pub gaussian_psf: String,
    /// The `--gpu-architecture` NVRTC compiled for ("default" when the card's
    /// own was refused and NVRTC's default, JIT-compiled by the driver, was used).
    pub arch: String,
}

/// Runs `f`, turning a panic into `NoDevice`. With run-time loading cudarc
/// panics (rather than returning an error) when libcuda or libnvrtc is absent;
/// a machine without a GPU must get an error it can report, not an abort.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, GpuError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA library panicked".into());
        GpuError::NoDevice(format!("{what}: {msg}"))
    })
}

/// Whether the dynamic loader can open one of `names`. Asked before cudarc
/// opens the library itself, because cudarc panics when it is missing.
fn loadable(names: &[&str]) -> bool {
    // SAFETY: these are the CUDA driver / NVRTC libraries cudarc is about to
    // load anyway; their initialisers have no preconditions.
    names
        .iter()
        .any(|n| unsafe { libloading::Library::new(*n) }.is_ok())
}

fn drv(e: DriverError) -> GpuError {
    GpuError::Driver(format!("{e:?}"))
}

fn compile_log(e: &CompileError) -> String {
    match e {
        CompileError::CompileError { log, options, .. } => {
            format!("{} (options {options:?})", log.to_string_lossy())
        }
        other => format!("{other:?}"),
    }
}

fn compile(kernel: &'static str, src: &str, arch: Option<&str>) -> Result<String, GpuError> {
    let opts = CompileOptions {
        // The kernels use __fmul_rn/__fadd_rn where order matters; these keep
        // every other float operation IEEE too, as on the CPU twin.
        fmad: Some(false),
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        options: arch
            .map(|a| vec![format!("--gpu-architecture={a}")])
            .unwrap_or_default(),
        name: Some(format!("{kernel}.cu")),
        ..Default::default()
    };
    let ptx = guarded("loading NVRTC (libnvrtc)", || {
        compile_ptx_with_opts(src, opts)
    })?
    .map_err(|e| GpuError::Compile {
        kernel,
        log: compile_log(&e),
    })?;
    Ok(ptx.to_src())
}

fn compile_all(arch: Option<&str>) -> Result<KernelPtx, GpuError> {
    Ok(KernelPtx {
        roi_align: compile("roi_align", sources::ROI_ALIGN, arch)?,
        roi_pool: compile("roi_pool", sources::ROI_POOL, arch)?,
        gaussian_psf: compile("gaussian_psf", sources::GAUSSIAN_PSF, arch)?,
        arch: arch.unwrap_or("default").to_string(),
    })
}

/// The kernels' PTX for compute capability `cc`, compiled once per process.
/// A card newer than the NVRTC library (which then refuses its architecture)
/// gets NVRTC's default target, which the driver JIT-compiles forward.
pub fn kernel_ptx(cc: (i32, i32)) -> Result<Arc<KernelPtx>, GpuError> {
    type PerArch = Mutex<HashMap<(i32, i32), Arc<KernelPtx>>>;
    static CACHE: OnceLock<PerArch> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = map.get(&cc) {
        return Ok(p.clone());
    }
    let nvrtc = [
        "libnvrtc.so",
        "libnvrtc.so.13",
        "libnvrtc.so.12",
        "libnvrtc.so.11",
    ];
    if !loadable(&nvrtc) {
        return Err(GpuError::Driver(
            "NVRTC (libnvrtc.so.13 or .12) not found: put the lib folder of a CUDA toolkit or of the \
             nvidia-cuda-nvrtc wheel on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let arch = format!("compute_{}{}", cc.0, cc.1);
    let ptx = match compile_all(Some(&arch)) {
        Ok(p) => p,
        Err(first) => compile_all(None).map_err(|_| first)?,
    };
    let ptx = Arc::new(ptx);
    map.insert(cc, ptx.clone());
    Ok(ptx)
}

/// One CUDA device with our kernels loaded, on one stream.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    pub(crate) roi_align_fn: CudaFunction,
    pub(crate) roi_pool_fn: CudaFunction,
    pub(crate) gaussian_fn: CudaFunction,
    name: String,
    cc: (i32, i32),
    arch: String,
}

impl Gpu {
    /// Opens device `ordinal` (0 = first) and compiles the kernels for it.
    /// `GpuError::NoDevice` when there is no driver or no device.
    pub fn open(ordinal: usize) -> Result<Self, GpuError> {
        if !loadable(&["libcuda.so.1", "libcuda.so"]) {
            return Err(GpuError::NoDevice(
                "no NVIDIA driver library (libcuda.so.1) on this machine".into(),
            ));
        }
        let ctx = guarded("loading the CUDA driver (libcuda)", || {
            CudaContext::new(ordinal)
        })?
        .map_err(|e| GpuError::NoDevice(format!("CUDA device {ordinal}: {e:?}")))?;
        Self::with_stream(ctx.default_stream())
    }

    /// On an existing stream (candle's), so that our kernels and candle's run
    /// in order on one stream without extra synchronisation.
    pub fn with_stream(stream: Arc<CudaStream>) -> Result<Self, GpuError> {
        let ctx = stream.context().clone();
        let cc = ctx.compute_capability().map_err(drv)?;
        let name = ctx.name().map_err(drv)?;
        let ptx = kernel_ptx(cc)?;
        let load = |src: &str, f: &str| -> Result<CudaFunction, GpuError> {
            let m = ctx.load_module(Ptx::from_src(src)).map_err(drv)?;
            m.load_function(f).map_err(drv)
        };
        Ok(Gpu {
            roi_align_fn: load(&ptx.roi_align, "roi_align_fwd")?,
            roi_pool_fn: load(&ptx.roi_pool, "roi_pool_fwd")?,
            gaussian_fn: load(&ptx.gaussian_psf, "gaussian_pass")?,
            arch: ptx.arch.clone(),
            ctx,
            stream,
            name,
            cc,
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// "NVIDIA H100 80GB HBM3, compute 9.0, PTX compute_90".
    pub fn describe(&self) -> String {
        format!(
            "{}, compute {}.{}, PTX {}",
            self.name, self.cc.0, self.cc.1, self.arch
        )
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// (free, total) device memory in bytes, as cuMemGetInfo.
    pub fn mem_info(&self) -> Result<(u64, u64), GpuError> {
        let (free, total) = self.ctx.mem_get_info().map_err(drv)?;
        Ok((free as u64, total as u64))
    }

    /// Refuses a study whose estimate does not fit in the free memory now.
    pub fn check_fits(&self, est: &MemoryEstimate) -> Result<(), GpuError> {
        let (free, total) = self.mem_info()?;
        check_fits(est, free, total)?;
        Ok(())
    }

    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream.synchronize().map_err(drv)
    }
}

pub(crate) fn driver_error(e: DriverError) -> GpuError {
    drv(e)
}
