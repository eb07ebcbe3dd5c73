//! Weights by torchvision state-dict name, convolutions, the ResNet body with
//! frozen batch norm (folded into the convolution at load) and the FPN.

use super::config::BlockKind;
use crate::error::{Error, FaultKind, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// candle errors on tensors built from checked inputs are not the patient's
/// fault: the device or the machine under it (CUDA, Metal, a build without the
/// device, I/O) is the environment's, anything else a bug. Decided from candle's
/// error variant, never from its text (a shape message that happens to say
/// "alloc" is still a bug).
pub(crate) fn ce(e: candle_core::Error) -> Error {
    let msg = format!("segmentation network: {e}");
    match candle_fault(&e) {
        FaultKind::Environment => Error::environment(msg),
        _ => Error::internal(msg),
    }
}

/// Whose fault a candle error is, from its variant (wrappers looked through).
pub(crate) fn candle_fault(e: &candle_core::Error) -> FaultKind {
    use candle_core::Error as C;
    match e {
        C::Context { inner, .. } | C::WithPath { inner, .. } | C::WithBacktrace { inner, .. } => {
            candle_fault(inner)
        }
        C::Cuda(_)
        | C::Metal(_)
        | C::NotCompiledWithCudaSupport
        | C::NotCompiledWithMetalSupport
        | C::Io(_) => FaultKind::Environment,
        _ => FaultKind::Internal,
    }
}

/// torchvision's FrozenBatchNorm2d eps (1e-5 since torchvision 0.6).
pub(crate) const FROZEN_BN_EPS: f32 = 1e-5;

/// A state dict: every tensor converted to f32 on `device`.
pub struct Weights {
    map: HashMap<String, Tensor>,
    what: String,
}

impl Weights {
    pub fn from_map(map: HashMap<String, Tensor>, what: &str) -> Result<Self> {
        let mut out = HashMap::with_capacity(map.len());
        for (k, v) in map {
            let v = if v.dtype() == DType::F32 {
                v
            } else {
                v.to_dtype(DType::F32).map_err(ce)?
            };
            out.insert(k, v);
        }
        Ok(Weights {
            map: out,
            what: what.to_string(),
        })
    }

    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self> {
        let map = candle_core::safetensors::load(path, device).map_err(|e| {
            Error::library(
                FaultKind::Environment,
                format!("{}: not readable safetensors", path.display()),
                e,
            )
        })?;
        Self::from_map(map, &path.display().to_string())
    }

    pub fn from_buffer(bytes: &[u8], device: &Device, what: &str) -> Result<Self> {
        let map = candle_core::safetensors::load_buffer(bytes, device).map_err(|e| {
            Error::library(
                FaultKind::Environment,
                format!("{what}: not readable safetensors"),
                e,
            )
        })?;
        Self::from_map(map, what)
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        self.map
            .get(name)
            .cloned()
            .ok_or_else(|| Error::input(format!("{}: missing weight {name}", self.what)))
    }

    /// The first of several names that exist (torchvision renamed some modules
    /// between versions, e.g. `inner_blocks.0.weight` -> `inner_blocks.0.0.weight`).
    pub(crate) fn get_any(&self, names: &[String]) -> Result<(String, Tensor)> {
        for n in names {
            if let Some(t) = self.map.get(n) {
                return Ok((n.clone(), t.clone()));
            }
        }
        Err(Error::input(format!(
            "{}: missing weight {}",
            self.what,
            names.join(" or ")
        )))
    }

    pub fn dims(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.get(name)?.dims().to_vec())
    }
}

/// A 2D convolution with optional bias (frozen BN folds into weight + bias).
#[derive(Clone)]
pub(crate) struct Conv {
    pub w: Tensor,
    /// Bias (zeros when the checkpoint has none), so every conv adds one in the fused pass.
    pub b: Tensor,
    pub stride: usize,
    pub padding: usize,
}

impl Conv {
    pub(crate) fn out_channels(&self) -> usize {
        self.w.dims()[0]
    }

    /// Loads `{prefix}.weight` and, if present, `{prefix}.bias`.
    pub fn load(ws: &Weights, prefix: &str, stride: usize, padding: usize) -> Result<Self> {
        let w = ws.get(&format!("{prefix}.weight"))?;
        if w.rank() != 4 {
            return Err(Error::input(format!("{prefix}.weight: expected 4-D")));
        }
        let bn = format!("{prefix}.bias");
        let b = if ws.has(&bn) {
            ws.get(&bn)?
        } else {
            Tensor::zeros(w.dims()[0], w.dtype(), w.device()).map_err(ce)?
        };
        Ok(Conv {
            w,
            b,
            stride,
            padding,
        })
    }

    /// A bias-free conv followed by FrozenBatchNorm2d `bn`, folded:
    /// w' = w * scale, b' = bias - mean * scale, scale = gamma / sqrt(var + eps).
    pub(crate) fn load_bn(
        ws: &Weights,
        conv: &str,
        bn: &str,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let w = ws.get(&format!("{conv}.weight"))?;
        let g = ws.get(&format!("{bn}.weight"))?;
        let beta = ws.get(&format!("{bn}.bias"))?;
        let mean = ws.get(&format!("{bn}.running_mean"))?;
        let var = ws.get(&format!("{bn}.running_var"))?;
        if w.rank() != 4 {
            return Err(Error::input(format!("{conv}.weight: expected 4-D")));
        }
        let c = w.dims()[0];
        if [&g, &beta, &mean, &var].iter().any(|t| t.dims() != [c]) {
            return Err(Error::input(format!("{bn}: shape does not match {conv}")));
        }
        let f = || -> candle_core::Result<(Tensor, Tensor)> {
            let scale = (g / (var + FROZEN_BN_EPS as f64)?.sqrt()?)?;
            let b = (beta - (mean * &scale)?)?;
            let w = w.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
            Ok((w, b))
        };
        let (w, b) = f().map_err(ce)?;
        Ok(Conv {
            w,
            b,
            stride,
            padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, false)
    }

    /// Convolution, bias and ReLU in one pass.
    pub(crate) fn forward_relu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        super::conv::conv2d(x, &self.w, &self.b, self.stride, self.padding, relu)
    }
}

struct Block {
    convs: Vec<Conv>,
    downsample: Option<Conv>,
}

impl Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            y = if i < last {
                c.forward_relu(&y)?
            } else {
                c.forward(&y)?
            };
        }
        let id = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        (y + id)?.relu()
    }
}

/// torchvision ResNet body up to layer4; returns layer1..layer4 outputs (C2..C5).
pub struct ResNet {
    stem: Conv,
    layers: Vec<Vec<Block>>,
}

impl ResNet {
    pub fn load(ws: &Weights, prefix: &str, kind: BlockKind, blocks: [usize; 4]) -> Result<Self> {
        let stem = Conv::load_bn(
            ws,
            &format!("{prefix}.conv1"),
            &format!("{prefix}.bn1"),
            2,
            3,
        )?;
        let mut layers = Vec::new();
        for (li, &n) in blocks.iter().enumerate() {
            let mut v = Vec::new();
            for bi in 0..n {
                let p = format!("{prefix}.layer{}.{bi}", li + 1);
                let stride = if li > 0 && bi == 0 { 2 } else { 1 };
                let convs = match kind {
                    BlockKind::Basic => vec![
                        Conv::load_bn(ws, &format!("{p}.conv1"), &format!("{p}.bn1"), stride, 1)?,
                        Conv::load_bn(ws, &format!("{p}.conv2"), &format!("{p}.bn2"), 1, 1)?,
                    ],
                    // torchvision's Bottleneck (ResNet v1.5) strides in the 3x3.
                    BlockKind::Bottleneck => vec![
                        Conv::load_bn(ws, &format!("{p}.conv1"), &format!("{p}.bn1"), 1, 0)?,
                        Conv::load_bn(ws, &format!("{p}.conv2"), &format!("{p}.bn2"), stride, 1)?,
                        Conv::load_bn(ws, &format!("{p}.conv3"), &format!("{p}.bn3"), 1, 0)?,
                    ],
                };
                let dn = format!("{p}.downsample.0");
                let downsample = if ws.has(&format!("{dn}.weight")) {
                    Some(Conv::load_bn(
                        ws,
                        &dn,
                        &format!("{p}.downsample.1"),
                        stride,
                        0,
                    )?)
                } else {
                    None
                };
                v.push(Block { convs, downsample });
            }
            layers.push(v);
        }
        if ws.has(&format!("{prefix}.layer1.0.conv3.weight")) != (kind == BlockKind::Bottleneck) {
            return Err(Error::input(
                "model config block type does not match the weights (conv3 present iff bottleneck)",
            ));
        }
        if ws.has(&format!("{prefix}.layer1.{}.conv1.weight", blocks[0])) {
            return Err(Error::input(
                "weights hold more blocks in layer1 than the model config says",
            ));
        }
        Ok(ResNet { stem, layers })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let y = self.stem.forward_relu(x)?;
        let mut y = super::conv::max_pool_3x3_s2_p1(&y)?;
        let mut outs = Vec::with_capacity(4);
        for layer in &self.layers {
            for b in layer {
                y = b.forward(&y)?;
            }
            outs.push(y.clone());
        }
        Ok(outs)
    }
}

/// torchvision FeaturePyramidNetwork with LastLevelMaxPool: P2..P5 and 'pool'.
pub(crate) struct Fpn {
    inner: Vec<Conv>,
    layer: Vec<Conv>,
}

impl Fpn {
    pub fn load(ws: &Weights, prefix: &str, levels: usize) -> Result<Self> {
        let mut inner = Vec::new();
        let mut layer = Vec::new();
        for i in 0..levels {
            for (v, kind, pad) in [
                (&mut inner, "inner_blocks", 0),
                (&mut layer, "layer_blocks", 1),
            ] {
                let (name, _) = ws.get_any(&[
                    format!("{prefix}.{kind}.{i}.0.weight"),
                    format!("{prefix}.{kind}.{i}.weight"),
                ])?;
                let p = name.trim_end_matches(".weight").to_string();
                v.push(Conv::load(ws, &p, 1, pad)?);
            }
        }
        Ok(Fpn { inner, layer })
    }

    pub(crate) fn out_channels(&self) -> usize {
        self.layer[0].out_channels()
    }

    pub fn forward(&self, c: &[Tensor]) -> candle_core::Result<Vec<Tensor>> {
        let n = self.inner.len();
        let mut last = self.inner[n - 1].forward(&c[n - 1])?;
        let mut res = vec![self.layer[n - 1].forward(&last)?];
        for i in (0..n - 1).rev() {
            let lat = self.inner[i].forward(&c[i])?;
            let (h, w) = (lat.dims()[2], lat.dims()[3]);
            last = (lat + last.upsample_nearest2d(h, w)?)?;
            res.insert(0, self.layer[i].forward(&last)?);
        }
        // LastLevelMaxPool: max_pool2d(kernel 1, stride 2) = every other pixel.
        let p = res[n - 1].max_pool2d_with_stride(1, 2)?;
        res.push(p);
        Ok(res)
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;

    #[test]
    fn a_candle_error_is_judged_by_its_variant_not_its_text() {
        let cuda = candle_core::Error::Cuda("CUDA_ERROR_OUT_OF_MEMORY".into());
        assert_eq!(ce(cuda).kind(), FaultKind::Environment);
        let io = candle_core::Error::Io(std::io::Error::other("disk"));
        assert_eq!(
            ce(io.context("reading the weights")).kind(),
            FaultKind::Environment
        );
        // A shape bug whose message says "alloc" or "cuda" was called the
        // machine's fault (retried forever) when this read the text.
        let msg = candle_core::Error::Msg("buffer alloc for shape [3, 0]: cuda layout".into());
        assert_eq!(ce(msg).kind(), FaultKind::Internal);
        let shape = candle_core::Error::ShapeMismatch {
            buffer_size: 3,
            shape: candle_core::Shape::from((2, 2)),
        };
        assert_eq!(ce(shape).kind(), FaultKind::Internal);
    }
}
