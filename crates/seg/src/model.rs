//! The whole Mask R-CNN: load from a model folder, one forward pass on an
//! (N, 3, H, W) batch with torchvision's inference semantics.

use super::backbone::{ce, Fpn, ResNet, Weights};
use super::boxes::BoxF;
use super::config::{MaskPaste, ModelConfig, TransformConfig};
use super::refine::KidneyRefiner;
use super::roi_heads::{Levels, RoiHeads};
use super::rpn::{proposals, RpnHead};
use super::transform::{paste_mask, paste_mask_exact, prepare, rescale_box};
use crate::error::{Error, FaultKind, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

pub struct MaskRcnn {
    pub cfg: ModelConfig,
    body: ResNet,
    fpn: Fpn,
    rpn: RpnHead,
    heads: RoiHeads,
    device: Device,
    /// The finer kidney stage of the folder's `[kidney_refine]`, if any.
    pub refiner: Option<KidneyRefiner>,
}

/// Detections of one image in the input image's pixels.
#[derive(Debug, Clone, Default)]
pub struct Detections {
    pub boxes: Vec<BoxF>,
    pub scores: Vec<f32>,
    /// Class indices into `ModelConfig::classes` (0 is background, never given).
    pub labels: Vec<usize>,
    /// One (h, w) probability map per detection, as torchvision's `masks`.
    pub masks: Vec<Vec<f32>>,
}

pub struct Forward {
    pub detections: Vec<Detections>,
    /// P2..P5 and the pooled level, (N, C, h, w) each, when asked for.
    pub features: Option<Vec<Tensor>>,
    /// RPN proposals per image, in the resized image's pixels.
    pub proposals: Vec<Vec<BoxF>>,
}

impl MaskRcnn {
    /// Loads `dir/model.toml` and the weights it names.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("model.toml");
        if !cfg_path.is_file() {
            return Err(Error::input(format!(
                "{}: no model.toml (a model folder holds model.toml and its safetensors weights)",
                dir.display()
            )));
        }
        let cfg = ModelConfig::load(&cfg_path)?;
        let wpath = dir.join(&cfg.weights);
        check_manifest(dir, &wpath, None)?;
        let ws = Weights::load(&wpath, device)?;
        let refine = cfg.kidney_refine.clone();
        let mut m = Self::new(cfg, &ws, device)?;
        if let Some(rc) = refine {
            check_manifest(dir, &dir.join(&rc.weights), Some("kidney_refine"))?;
            m.refiner = Some(KidneyRefiner::load(dir, rc, device)?);
        }
        Ok(m)
    }

    pub fn new(cfg: ModelConfig, ws: &Weights, device: &Device) -> Result<Self> {
        let (kind, blocks) = cfg.backbone.resolve()?;
        let body = ResNet::load(ws, "backbone.body", kind, blocks)?;
        let fpn = Fpn::load(ws, "backbone.fpn", 4)?;
        let rpn = RpnHead::load(ws)?;
        if rpn.num_anchors() != cfg.anchors.aspect_ratios.len() {
            return Err(Error::input(format!(
                "rpn.head.cls_logits has {} anchors per location, model config {} aspect ratios",
                rpn.num_anchors(),
                cfg.anchors.aspect_ratios.len()
            )));
        }
        let heads = RoiHeads::load(ws, &cfg.roi_heads, fpn.out_channels())?;
        if heads.num_classes != cfg.classes.len() {
            return Err(Error::input(format!(
                "weights predict {} classes, model config lists {}",
                heads.num_classes,
                cfg.classes.len()
            )));
        }
        Ok(MaskRcnn {
            cfg,
            body,
            fpn,
            rpn,
            heads,
            device: device.clone(),
            refiner: None,
        })
    }

    /// One forward pass. `input` is (N, 3, H, W) row-major in the value range
    /// torchvision's model takes (the HU window mapped to [0, 1]); the model
    /// config's mean/std and resize are applied here, as torchvision does.
    pub fn forward(&self, input: &[f32], dims: [usize; 4], want_features: bool) -> Result<Forward> {
        self.forward_with(input, dims, want_features, &self.cfg.transform)
    }

    /// [`forward`](Self::forward) of an input already at the network's pixel
    /// size (the driver's millimetre canvases, of any width and height): no
    /// resize, as torchvision's transform with `min_size` = the short side and
    /// `max_size` = the long side.
    pub fn forward_native(
        &self,
        input: &[f32],
        dims: [usize; 4],
        want_features: bool,
    ) -> Result<Forward> {
        let (h, w) = (dims[2], dims[3]);
        let t = TransformConfig {
            min_size: h.min(w),
            max_size: h.max(w),
            ..self.cfg.transform.clone()
        };
        self.forward_with(input, dims, want_features, &t)
    }

    fn forward_with(
        &self,
        input: &[f32],
        dims: [usize; 4],
        want_features: bool,
        transform: &TransformConfig,
    ) -> Result<Forward> {
        let [n, c, h, w] = dims;
        if c != 3 || n == 0 || h == 0 || w == 0 || input.len() != n * c * h * w {
            return Err(Error::input(format!(
                "network input must be N x 3 x H x W with N, H, W > 0, got {dims:?} ({} values)",
                input.len()
            )));
        }
        if input.iter().any(|v| !v.is_finite()) {
            return Err(Error::input("network input holds NaN or infinite values"));
        }
        let batch = prepare(input, n, h, w, transform);
        let (ph, pw) = batch.padded;
        let x = Tensor::from_vec(batch.data, (n, 3, ph, pw), &self.device).map_err(ce)?;
        let feats = self
            .body
            .forward(&x)
            .and_then(|c| self.fpn.forward(&c))
            .map_err(ce)?;
        let head = self.rpn.forward(&feats).map_err(ce)?;
        let sizes = vec![batch.image_size; n];
        let props = proposals(
            &head,
            &self.cfg.anchors,
            &self.cfg.rpn,
            batch.padded,
            &sizes,
        )?;
        let pooled = &feats[..4];
        let levels = Levels::infer(pooled, batch.image_size.0);
        let rh = &self.cfg.roi_heads;
        let raw = self
            .heads
            .detect(pooled, &levels, &props, batch.image_size, rh)?;
        let (mprob, m) = self.heads.masks(pooled, &levels, &raw, rh)?;
        let mut dets = Vec::with_capacity(n);
        let mut k = 0;
        for r in raw {
            let mut d = Detections {
                scores: r.scores,
                labels: r.labels,
                ..Default::default()
            };
            for b in r.boxes {
                let bo = rescale_box(b, batch.image_size, batch.original_size);
                let cell = &mprob[k * m * m..(k + 1) * m * m];
                d.masks.push(match rh.mask_paste {
                    MaskPaste::Torchvision => paste_mask(cell, m, bo, h, w),
                    MaskPaste::Exact => paste_mask_exact(cell, m, bo, h, w),
                });
                d.boxes.push(bo);
                k += 1;
            }
            dets.push(d);
        }
        Ok(Forward {
            detections: dets,
            features: want_features.then_some(feats),
            proposals: props,
        })
    }
}

/// The model folder's weights file checked against its manifest without loading
/// the network (`organdose self-check`): the weights file's path and the sha256
/// it matched (`None`: the folder has no manifest naming it, nothing to check).
pub fn verify_dir(dir: &Path) -> Result<(std::path::PathBuf, Option<String>)> {
    let cfg_path = dir.join("model.toml");
    if !cfg_path.is_file() {
        return Err(Error::input(format!(
            "{}: no model.toml (a model folder holds model.toml and its safetensors weights)",
            dir.display()
        )));
    }
    let cfg = ModelConfig::load(&cfg_path)?;
    let wpath = dir.join(&cfg.weights);
    if !wpath.is_file() {
        return Err(Error::input(format!(
            "{}: the weights file model.toml names is missing",
            wpath.display()
        )));
    }
    let sha = check_manifest(dir, &wpath, None)?;
    if let Some(rc) = &cfg.kidney_refine {
        let rpath = dir.join(&rc.weights);
        if !rpath.is_file() {
            return Err(Error::input(format!(
                "{}: the kidney stage's weights file model.toml names is missing",
                rpath.display()
            )));
        }
        check_manifest(dir, &rpath, Some("kidney_refine"))?;
    }
    Ok((wpath, sha))
}

/// When the folder has a `manifest.json` (train/train.py writes one) naming
/// this weights file with a sha256, the file must match it: a truncated copy
/// or a replaced file would otherwise load and segment wrongly without a word.
/// Returns the sha256 checked, `None` when there was nothing to check.
/// `section`: the manifest's entry for a second weights file of the folder
/// (the kidney stage's `"kidney_refine"`), else its top level.
fn check_manifest(dir: &Path, weights: &Path, section: Option<&str>) -> Result<Option<String>> {
    use sha2::{Digest, Sha256};
    let mpath = dir.join("manifest.json");
    if !mpath.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&mpath).map_err(|e| Error::io(&mpath, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::library(FaultKind::Environment, format!("{}", mpath.display()), e))?;
    let v = match section {
        Some(k) => &v[k],
        None => &v,
    };
    let named = v["weights"].as_str().map(|w| dir.join(w));
    let (Some(want), Some(named)) = (v["sha256"].as_str(), named) else {
        return Ok(None);
    };
    if named != weights {
        return Ok(None);
    }
    let mut f = std::fs::File::open(weights).map_err(|e| Error::io(weights, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(weights, e))?;
    let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if !got.eq_ignore_ascii_case(want) {
        return Err(Error::input(format!(
            "{}: sha256 {got} does not match {} ({want}): the weights file is damaged or was replaced",
            weights.display(),
            mpath.display()
        )));
    }
    Ok(Some(got))
}
