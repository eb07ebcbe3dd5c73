//! Device memory a study needs, sized before anything is allocated, so that a
//! study which cannot fit is refused with a clear message up front instead of
//! failing half-way with a driver out-of-memory error.
//!
//! What lives on the device, stage by stage (nothing else is resident; the CT
//! stays on the host and goes up one batch of slices at a time):
//! - weights: every tensor of the safetensors file as f32, for the whole job;
//! - network activations for one batch (`segment.batch_size` slices);
//! - PSF: two SPECT-sized f32 buffers (the separable passes ping-pong);
//! - runtime: cuBLAS handle and workspace, candle's and our kernel modules.
//!
//! Segmentation and PSF never overlap, so the need is weights + runtime +
//! max(activations, PSF). The activation model is an upper estimate per image
//! (derivation at [`activation_floats_per_image`]) with a 25 % allowance for
//! the allocator; `organdose bench --device cuda` prints it beside the measured
//! peak so it can be recalibrated on a real card.

use crate::config::ModelConfig;
use crate::error::{Error, FaultKind, Result};
use serde::Serialize;
use std::path::Path;

pub const MIB: u64 = 1 << 20;

/// Allowance for the caching allocator's rounding and fragmentation on top of
/// the live tensors counted below.
const ALLOCATOR_FACTOR: f64 = 1.25;
/// cuBLAS handle + workspace and candle's kernel modules (loaded lazily, a few
/// MB of SASS each), chosen generously. On an H200 (2026-11-26, shipped model,
/// batch 4) the whole study added about 290 MiB to the memory in use after
/// context creation, against 434 MiB estimated with this value.
const RUNTIME_WITH_NETWORK: u64 = 256 * MIB;
/// Our three kernel modules and small argument buffers only.
const RUNTIME_KERNELS_ONLY: u64 = 16 * MIB;

/// What the weights file tells about the network's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NetworkShape {
    /// Elements of every tensor in the file (held on the device as f32).
    pub weight_params: u64,
    /// FPN output channels (`backbone.fpn.layer_blocks.0...weight`, dim 0).
    pub fpn_channels: u64,
    /// Box head width (`roi_heads.box_head.fc6.weight`, dim 0).
    pub box_fc: u64,
}

impl NetworkShape {
    /// Reads only the safetensors header (8-byte length + JSON), not the data.
    pub fn from_safetensors(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len).map_err(|e| Error::io(path, e))?;
        let n = u64::from_le_bytes(len);
        // The format caps the header at 100 MB; a larger value is a broken file.
        if n > 100_000_000 {
            return Err(Error::input(format!(
                "{}: safetensors header of {n} bytes: not a safetensors file",
                path.display()
            )));
        }
        let mut head = vec![0u8; n as usize];
        f.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
        let text = std::str::from_utf8(&head).map_err(|e| {
            Error::library(
                FaultKind::Input,
                format!("{}: header is not UTF-8", path.display()),
                e,
            )
        })?;
        Self::from_header_json(text)
            .map_err(|e| Error::library(FaultKind::Input, format!("{}", path.display()), e))
    }

    /// The same from the header's JSON text.
    pub(crate) fn from_header_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::library(FaultKind::Input, "safetensors header", e))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::input("safetensors header is not a JSON object"))?;
        let shape = |name: &str| -> Option<Vec<u64>> {
            obj.get(name)?["shape"]
                .as_array()?
                .iter()
                .map(|d| d.as_u64())
                .collect()
        };
        let mut params = 0u64;
        for name in obj.keys() {
            if name == "__metadata__" {
                continue;
            }
            let dims = shape(name).ok_or_else(|| {
                Error::input(format!("safetensors header: tensor {name} has no shape"))
            })?;
            params = params.saturating_add(dims.iter().product::<u64>());
        }
        let first_dim = |names: &[&str]| names.iter().find_map(|n| shape(n)?.first().copied());
        // torchvision's current and older FPN names (as the model loader accepts).
        let fpn_channels = first_dim(&[
            "backbone.fpn.layer_blocks.0.0.weight",
            "backbone.fpn.layer_blocks.0.weight",
        ])
        .ok_or_else(|| Error::input("safetensors header: no backbone.fpn.layer_blocks.0 weight"))?;
        let box_fc = first_dim(&["roi_heads.box_head.fc6.weight"])
            .ok_or_else(|| Error::input("safetensors header: no roi_heads.box_head.fc6.weight"))?;
        Ok(NetworkShape {
            weight_params: params,
            fpn_channels,
            box_fc,
        })
    }
}

/// Device memory of one study, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    /// Network activations for one batch, with the allocator allowance.
    pub network: u64,
    pub psf: u64,
    pub runtime: u64,
    /// weights + runtime + max(network, psf).
    pub total: u64,
    /// Slices per forward pass the network figure is for (0: no network).
    pub batch: usize,
}

impl MemoryEstimate {
    pub fn describe(&self) -> String {
        let m = |b: u64| b.div_ceil(MIB);
        format!(
            "weights {} MiB + runtime {} MiB + max(network activations {} MiB for a batch of {}, PSF {} MiB) = {} MiB",
            m(self.weights),
            m(self.runtime),
            m(self.network),
            self.batch,
            m(self.psf),
            m(self.total)
        )
    }
}

/// Side of the square network input after torchvision's transform: a square
/// slice of `input.size` is scaled to min(min_size, max_size), then padded up
/// to a multiple of `size_divisible`.
pub(crate) fn network_input_side(model: &ModelConfig) -> u64 {
    let t = &model.transform;
    let side = t.min_size.min(t.max_size).max(1) as u64;
    let d = t.size_divisible.max(1) as u64;
    side.div_ceil(d) * d
}

/// Upper estimate of the floats live at the peak of one image's backbone, FPN
/// and RPN, for an input side `s` and `f` FPN channels. With a = (s/4)^2, the
/// positions at stride 4 (torchvision ResNet-50, bottleneck widths):
/// - backbone: C2..C5 kept for the FPN (256 + 512/4 + 1024/16 + 2048/64 = 480
///   per a) plus a layer1 block at work (3x3 im2col 576 + two 256-channel
///   tensors): about 1600 a; the stem (7x7 im2col 147 + 64 channels at s/2,
///   i.e. 844 a) is smaller;
/// - FPN outputs P2..P6: f (1 + 1/4 + 1/16 + 1/64 + 1/256) a ~ 1.34 f a;
/// - RPN head on P2: 3x3 im2col 9 f a and its f-channel output.
///
/// The RPN peak (about 11.4 f a) dominates for f = 256; take the larger.
pub(crate) fn activation_floats_per_image(s: u64, f: u64) -> u64 {
    let a = (s / 4).max(1).pow(2);
    let backbone = 1600 * a;
    let rpn = (134 * f * a).div_ceil(100) + 10 * f * a;
    backbone.max(rpn)
}

/// Floats of the RoI heads per image: box features (P proposals x f x bp^2)
/// and two fc layers; mask head on D detections (four 3x3 convolutions at
/// mp^2 with their im2col, and the 2x deconvolution).
pub(crate) fn roi_floats_per_image(model: &ModelConfig, net: &NetworkShape) -> u64 {
    let rh = &model.roi_heads;
    let f = net.fpn_channels;
    let p = model.rpn.post_nms_top_n as u64;
    let d = rh.detections_per_img as u64;
    let bp = (rh.box_roi_pool_size as u64).pow(2);
    let mp = (rh.mask_roi_pool_size as u64).pow(2);
    let classes = model.classes.len() as u64;
    p * f * bp + 2 * p * net.box_fc + d * f * mp * 11 + d * (f + classes) * 4 * mp
}

/// Network bytes for a batch of `batch` slices (allocator allowance included).
pub(crate) fn network_bytes(model: &ModelConfig, net: &NetworkShape, batch: usize) -> u64 {
    let s = network_input_side(model);
    let input = 3 * s * s;
    let per_image =
        input + activation_floats_per_image(s, net.fpn_channels) + roi_floats_per_image(model, net);
    let floats = per_image.saturating_mul(batch.max(1) as u64);
    (floats as f64 * 4.0 * ALLOCATOR_FACTOR).ceil() as u64
}

/// PSF bytes: two buffers of the largest SPECT grid, plus the taps.
pub(crate) fn psf_bytes(spect_dims: &[[usize; 3]]) -> u64 {
    let voxels = spect_dims
        .iter()
        .map(|d| d.iter().map(|&n| n as u64).product::<u64>())
        .max()
        .unwrap_or(0);
    2 * 4 * voxels + 4096
}

/// The whole estimate; `network` is None when no segmentation runs on the device.
pub fn estimate(
    network: Option<(&ModelConfig, &NetworkShape)>,
    batch: usize,
    spect_dims: &[[usize; 3]],
) -> MemoryEstimate {
    let psf = psf_bytes(spect_dims);
    let (weights, net, runtime, batch) = match network {
        Some((m, n)) => (
            n.weight_params.saturating_mul(4),
            network_bytes(m, n, batch),
            RUNTIME_WITH_NETWORK,
            batch.max(1),
        ),
        None => (0, 0, RUNTIME_KERNELS_ONLY, 0),
    };
    MemoryEstimate {
        weights,
        network: net,
        psf,
        runtime,
        total: weights + runtime + net.max(psf),
        batch,
    }
}

/// The refusal: what the study needs against what the device has free.
#[derive(Debug, thiserror::Error)]
#[error(
    "this study needs an estimated {need_mib} MiB of GPU memory ({detail}); the device has {free_mib} MiB free of {total_mib} MiB. Lower segment.batch_size, free the GPU, or run with --device cpu"
)]
pub struct DoesNotFit {
    pub need_mib: u64,
    pub free_mib: u64,
    pub total_mib: u64,
    pub detail: String,
}

/// Ok when the estimate fits in `free_bytes` (as cuMemGetInfo reports it, i.e.
/// after the context itself was created).
pub fn check_fits(
    est: &MemoryEstimate,
    free_bytes: u64,
    total_bytes: u64,
) -> std::result::Result<(), DoesNotFit> {
    if est.total <= free_bytes {
        return Ok(());
    }
    Err(DoesNotFit {
        need_mib: est.total.div_ceil(MIB),
        free_mib: free_bytes / MIB,
        total_mib: total_bytes / MIB,
        detail: est.describe(),
    })
}

/// The largest batch (at most `wanted`) whose estimate fits in `free_bytes`;
/// None when not even one slice fits.
pub fn largest_batch(
    model: &ModelConfig,
    net: &NetworkShape,
    wanted: usize,
    spect_dims: &[[usize; 3]],
    free_bytes: u64,
) -> Option<usize> {
    (1..=wanted.max(1))
        .rev()
        .find(|&b| estimate(Some((model, net)), b, spect_dims).total <= free_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(size: usize, box_pool: usize) -> ModelConfig {
        let text = format!(
            r#"
classes = ["background", "liver", "kidney"]
[input]
size = {size}
hu_window = [-100.0, 200.0]
[transform]
min_size = {size}
max_size = {size}
[backbone]
depth = 50
[roi_heads]
box_roi_pool = "align"
box_roi_pool_size = {box_pool}
mask_roi_pool_size = 14
sampling_ratio = 2
score_thresh = 0.9
nms_thresh = 0.5
detections_per_img = 5
bbox_reg_weights = [10.0, 10.0, 5.0, 5.0]
"#
        );
        ModelConfig::from_toml(&text, Path::new("model.toml")).expect("test config")
    }

    // torchvision maskrcnn_resnet50_fpn with 3 classes: about 43.9 M parameters.
    const R50: NetworkShape = NetworkShape {
        weight_params: 43_900_000,
        fpn_channels: 256,
        box_fc: 1024,
    };

    #[test]
    fn input_side_is_padded_to_the_divisor() {
        assert_eq!(network_input_side(&model(256, 7)), 256);
        assert_eq!(network_input_side(&model(300, 7)), 320);
    }

    #[test]
    fn resnet50_at_256_needs_about_a_gigabyte_for_a_batch_of_four() {
        let m = model(256, 7);
        let spect = [[128, 128, 100]; 4];
        let e = estimate(Some((&m, &R50)), 4, &spect);
        assert_eq!(e.weights, 4 * 43_900_000);
        // Per image: RPN peak 11.34 * 256 * 64^2 = 11.9 M floats dominates.
        let per_image = activation_floats_per_image(256, 256);
        assert_eq!(
            per_image,
            (134 * 256 * 4096u64).div_ceil(100) + 10 * 256 * 4096
        );
        assert!(e.network > 4 * 4 * per_image, "{e:?}");
        assert!(
            (700 * MIB..1400 * MIB).contains(&e.total),
            "{}",
            e.describe()
        );
        assert_eq!(e.total, e.weights + e.runtime + e.network.max(e.psf));
        // Linear in the batch (up to the fixed parts).
        let e8 = estimate(Some((&m, &R50)), 8, &spect);
        let d = (e8.network as i64 - 2 * e.network as i64).abs();
        assert!(d < 16, "{} vs 2 x {}", e8.network, e.network);
    }

    #[test]
    fn box_pool_28_weighs_in_through_the_roi_features() {
        let e7 = network_bytes(&model(256, 7), &R50, 1);
        let e28 = network_bytes(&model(256, 28), &R50, 1);
        // 100 proposals x 256 channels x (784 - 49) bins x 4 B x 1.25.
        let extra = (100.0 * 256.0 * 735.0 * 4.0 * 1.25) as u64;
        assert!((e28 - e7).abs_diff(extra) < 8, "{e7} {e28}");
    }

    #[test]
    fn psf_only_study_and_refusal_message() {
        let e = estimate(None, 4, &[[256, 256, 200], [128, 128, 100]]);
        assert_eq!(e.psf, 2 * 4 * 256 * 256 * 200 + 4096);
        assert_eq!(e.total, e.runtime + e.psf);
        assert!(check_fits(&e, e.total, 8 << 30).is_ok());
        let err = check_fits(&e, e.total - 1, 8 << 30).expect_err("must refuse");
        let msg = err.to_string();
        assert!(msg.contains("MiB free of 8192 MiB"), "{msg}");
        assert!(msg.contains("--device cpu"), "{msg}");
        assert!(msg.contains("PSF 101 MiB"), "{msg}");
    }

    #[test]
    fn largest_batch_backs_off() {
        let m = model(256, 7);
        let spect = [[128, 128, 100]];
        let four = estimate(Some((&m, &R50)), 4, &spect).total;
        assert_eq!(largest_batch(&m, &R50, 8, &spect, four), Some(4));
        assert_eq!(largest_batch(&m, &R50, 8, &spect, 0), None);
    }

    #[test]
    fn shape_from_a_safetensors_header() {
        use safetensors::tensor::{Dtype, TensorView};
        let z = vec![0u8; 4 * 64 * 32];
        let fc6 = TensorView::new(Dtype::F32, vec![64, 32], &z).expect("view");
        let fpn = TensorView::new(Dtype::F32, vec![32, 32, 1, 1], &z[..4 * 32 * 32]).expect("view");
        let bytes = safetensors::serialize(
            [
                ("roi_heads.box_head.fc6.weight", fc6),
                ("backbone.fpn.layer_blocks.0.0.weight", fpn),
            ],
            None,
        )
        .expect("serialize");
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("w.safetensors");
        std::fs::write(&p, &bytes).expect("write");
        let s = NetworkShape::from_safetensors(&p).expect("header");
        assert_eq!(
            s,
            NetworkShape {
                weight_params: 64 * 32 + 32 * 32,
                fpn_channels: 32,
                box_fc: 64
            }
        );
        // A file that is not safetensors is an error, not a panic.
        std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\xffjunk").expect("write");
        assert!(NetworkShape::from_safetensors(&p).is_err());
    }
}
