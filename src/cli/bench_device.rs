//! The device side of `organdose bench`: the CPU, or (feature `cuda`) candle's
//! CUDA device with our kernels loaded on its stream, plus the peak-memory
//! figure of each (VmHWM; GPU memory in use sampled while the bench runs).

use organdose::gpu::memory::MemoryEstimate;

pub enum Backend {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(Box<cuda::CudaBackend>),
}

impl Backend {
    pub fn open(device: &str) -> anyhow::Result<Self> {
        match device {
            "cpu" => Ok(Backend::Cpu),
            #[cfg(feature = "cuda")]
            "cuda" => Ok(Backend::Cuda(Box::new(cuda::CudaBackend::open()?))),
            #[cfg(not(feature = "cuda"))]
            "cuda" => anyhow::bail!(
                "--device cuda: this organdose was built without CUDA; rebuild with \
                 `cargo build --release --features cuda` (docs/development.md, \"CUDA build\") or use --device cpu"
            ),
            other => anyhow::bail!("unknown device {other:?} (cpu or cuda)"),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Backend::Cpu => "cpu".into(),
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => "cuda".into(),
        }
    }

    pub fn is_cuda(&self) -> bool {
        !matches!(self, Backend::Cpu)
    }

    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu => format!("{} threads", rayon::current_num_threads()),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => c.gpu.describe(),
        }
    }

    /// Refuses the study up front when its estimate does not fit the device.
    pub fn check_memory(&self, est: &MemoryEstimate) -> anyhow::Result<()> {
        match self {
            Backend::Cpu => {
                let _ = est;
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => {
                let (free, total) = c.gpu.mem_info()?;
                println!(
                    "GPU memory: estimate {} MiB ({}); {} MiB free of {} MiB",
                    est.total.div_ceil(organdose::gpu::memory::MIB),
                    est.describe(),
                    free / organdose::gpu::memory::MIB,
                    total / organdose::gpu::memory::MIB
                );
                c.gpu.check_fits(est)?;
                Ok(())
            }
        }
    }

    /// (peak MB, what was measured). Stops the GPU sampler.
    pub fn peak_memory_mb(&mut self) -> (Option<f64>, String) {
        match self {
            Backend::Cpu => (vm_hwm_mb(), "resident set (VmHWM)".into()),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => (
                c.stop_sampler(),
                "GPU memory in use (total - free, sampled every 5 ms; CUDA context included)"
                    .into(),
            ),
        }
    }
}

/// Peak resident set of this process, MB.
fn vm_hwm_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(feature = "cuda")]
mod cuda {
    use organdose::gpu::Gpu;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    pub struct CudaBackend {
        pub gpu: Gpu,
        stop: Arc<AtomicBool>,
        peak: Arc<AtomicU64>,
        sampler: Option<std::thread::JoinHandle<()>>,
    }

    impl CudaBackend {
        pub fn open() -> anyhow::Result<Self> {
            // The engine's device: the network of run_study runs on it.
            let candle =
                organdose::seg::engine::Engine::shared(organdose::seg::engine::DeviceKind::Cuda)?
                    .device()
                    .clone();
            // Our kernels on candle's own stream and context.
            let stream = candle.as_cuda_device()?.cuda_stream();
            let gpu = Gpu::with_stream(stream)?;
            let stop = Arc::new(AtomicBool::new(false));
            let peak = Arc::new(AtomicU64::new(0));
            let ctx = gpu.context().clone();
            let (s, p) = (stop.clone(), peak.clone());
            // cuMemGetInfo has no peak; sampling total - free is the portable
            // way to see what the study held at its largest.
            let sampler = std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Ok((free, total)) = ctx.mem_get_info() {
                        p.fetch_max((total - free) as u64, Ordering::Relaxed);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
            Ok(CudaBackend {
                gpu,
                stop,
                peak,
                sampler: Some(sampler),
            })
        }

        pub fn stop_sampler(&mut self) -> Option<f64> {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.sampler.take() {
                let _ = h.join();
            }
            let b = self.peak.load(Ordering::Relaxed);
            (b > 0).then(|| b as f64 / (1u64 << 20) as f64)
        }
    }
}
