//! One engine per process (issue 20, deliver 1): the device the network runs
//! on and every model loaded on it, once. `run`, `dose`, `segment`, `eval`,
//! `watch` (every job of the daemon) and `bench` take their model from here,
//! so the device choice (`--device`, `segment.device`) means the same thing for
//! all of them and a daemon does not read and hash the weights for each job.

use crate::error::{Error, Result};
use crate::model::MaskRcnn;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Where the network runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// CUDA device 0 (a `--features cuda` build).
    Cuda,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

pub struct Engine {
    kind: DeviceKind,
    device: Device,
    /// By canonical model folder.
    models: Mutex<HashMap<PathBuf, Arc<MaskRcnn>>>,
}

/// The process's engines, one per device kind (in practice one).
static ENGINES: OnceLock<Mutex<HashMap<DeviceKind, Arc<Engine>>>> = OnceLock::new();

impl Engine {
    /// The process's engine for `kind`, opened on first use.
    pub fn shared(kind: DeviceKind) -> Result<Arc<Engine>> {
        let all = ENGINES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut all = all
            .lock()
            .map_err(|_| Error::internal("engine table poisoned by a panic"))?;
        if let Some(e) = all.get(&kind) {
            return Ok(e.clone());
        }
        let e = Arc::new(Engine {
            kind,
            device: open_device(kind)?,
            models: Mutex::new(HashMap::new()),
        });
        all.insert(kind, e.clone());
        Ok(e)
    }

    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model of folder `dir` on this engine's device, loaded (and its
    /// weights checked against the manifest) the first time only. A model
    /// replaced on disk is picked up by the next process, not this one.
    pub fn model(&self, dir: &Path) -> Result<Arc<MaskRcnn>> {
        let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut models = self
            .models
            .lock()
            .map_err(|_| Error::internal("model table poisoned by a panic"))?;
        if let Some(m) = models.get(&key) {
            return Ok(m.clone());
        }
        let m = Arc::new(MaskRcnn::load_dir(dir, &self.device)?);
        tracing::info!("model {} loaded on {}", dir.display(), self.kind.name());
        models.insert(key, m.clone());
        Ok(m)
    }
}

fn open_device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Device::new_cuda(0).map_err(|e| {
            Error::library(
                crate::error::FaultKind::Environment,
                "opening CUDA device 0",
                e,
            )
        }),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(Error::environment(
            "--device cuda (segment.device): this organdose was built without CUDA; rebuild with `cargo build --release --features cuda` (docs/development.md, \"CUDA build\") or use --device cpu",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_engine_per_kind_and_cuda_refused_without_the_feature() {
        let a = Engine::shared(DeviceKind::Cpu).unwrap();
        let b = Engine::shared(DeviceKind::Cpu).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        #[cfg(not(feature = "cuda"))]
        {
            let e = Engine::shared(DeviceKind::Cuda).err().unwrap();
            assert!(e.to_string().contains("without CUDA"), "{e}");
        }
    }
}
