//! RoI heads: multi-scale RoI pooling, box head (TwoMLPHead + FastRCNNPredictor),
//! detection post-processing, mask head (MaskRCNNHeads + MaskRCNNPredictor).

use super::backbone::{ce, Conv, Weights};
use super::boxes::{batched_nms, clip_box, decode, is_small, map_level, BoxF};
use super::config::{RoiHeadsConfig, RoiPoolKind};
use super::roi_ops::{roi_align, roi_pool};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};

/// Scales of the pooled levels (P2..P5), as torchvision's MultiScaleRoIAlign
/// infers them: 2^round(log2(feature_h / image_h)), image_h the largest
/// resized image height.
pub struct Levels {
    pub scales: Vec<f32>,
    pub k_min: i32,
    pub k_max: i32,
}

impl Levels {
    pub(crate) fn infer(feats: &[Tensor], image_h: usize) -> Self {
        let scales: Vec<f32> = feats
            .iter()
            .map(|f| {
                let approx = f.dims()[2] as f32 / image_h as f32;
                2f32.powf(approx.log2().round_ties_even())
            })
            .collect();
        let k_min = (-scales[0].log2()) as i32;
        let k_max = (-scales[scales.len() - 1].log2()) as i32;
        Levels {
            scales,
            k_min,
            k_max,
        }
    }
}

/// Pools every (image, box) pair from its FPN level; output (K, C, s, s) in input order.
pub fn multiscale_pool(
    feats: &[Tensor],
    levels: &Levels,
    boxes: &[(usize, BoxF)],
    size: usize,
    kind: RoiPoolKind,
    sampling_ratio: i32,
) -> candle_core::Result<Tensor> {
    let dev = feats[0].device();
    let c = feats[0].dims()[1];
    if boxes.is_empty() {
        return Tensor::zeros((0, c, size, size), candle_core::DType::F32, dev);
    }
    let lv: Vec<usize> = boxes
        .iter()
        .map(|(_, b)| map_level(b, levels.k_min, levels.k_max).min(feats.len() - 1))
        .collect();
    let mut parts = Vec::new();
    let mut order = Vec::with_capacity(boxes.len());
    for (l, f) in feats.iter().enumerate() {
        let idx: Vec<usize> = (0..boxes.len()).filter(|&i| lv[i] == l).collect();
        if idx.is_empty() {
            continue;
        }
        let mut r = Vec::with_capacity(idx.len() * 5);
        for &i in &idx {
            let (b, bx) = boxes[i];
            r.extend_from_slice(&[b as f32, bx[0], bx[1], bx[2], bx[3]]);
        }
        let rois = Tensor::from_vec(r, (idx.len(), 5), dev)?;
        let s = levels.scales[l];
        parts.push(match kind {
            RoiPoolKind::Align => roi_align(f, &rois, size, s, sampling_ratio)?,
            RoiPoolKind::MaxPool => roi_pool(f, &rois, size, s)?,
        });
        order.extend(idx);
    }
    let cat = Tensor::cat(&parts, 0)?;
    // Inverse permutation back to the input order.
    let mut inv = vec![0u32; order.len()];
    for (pos, &i) in order.iter().enumerate() {
        inv[i] = pos as u32;
    }
    cat.index_select(&Tensor::new(inv.as_slice(), dev)?, 0)
}

struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn load(ws: &Weights, p: &str) -> Result<Self> {
        let w = ws.get(&format!("{p}.weight"))?;
        let b = ws.get(&format!("{p}.bias"))?;
        if w.rank() != 2 || b.dims() != [w.dims()[0]] {
            return Err(Error::input(format!(
                "{p}: expected a 2-D weight and a matching bias"
            )));
        }
        Ok(Linear { w, b })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.w.t()?)?.broadcast_add(&self.b)
    }
}

pub(crate) struct RoiHeads {
    fc6: Linear,
    fc7: Linear,
    cls: Linear,
    bbox: Linear,
    mask_convs: Vec<Conv>,
    deconv_w: Tensor,
    deconv_b: Tensor,
    mask_logits: Conv,
    pub num_classes: usize,
}

/// Detections of one image in the resized image's pixels.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawDetections {
    pub boxes: Vec<BoxF>,
    pub scores: Vec<f32>,
    pub labels: Vec<usize>,
}

impl RoiHeads {
    pub fn load(ws: &Weights, cfg: &RoiHeadsConfig, fpn_channels: usize) -> Result<Self> {
        let fc6 = Linear::load(ws, "roi_heads.box_head.fc6")?;
        let want = fpn_channels * cfg.box_roi_pool_size * cfg.box_roi_pool_size;
        if fc6.w.dims().get(1) != Some(&want) {
            return Err(Error::input(format!(
                "roi_heads.box_head.fc6 takes {:?} inputs but {fpn_channels} channels x {}^2 pooled gives {want}: \
                 box_roi_pool_size in the model config does not match the weights",
                fc6.w.dims().get(1),
                cfg.box_roi_pool_size
            )));
        }
        let cls = Linear::load(ws, "roi_heads.box_predictor.cls_score")?;
        let num_classes = cls.w.dims()[0];
        let mut mask_convs = Vec::new();
        for i in 0.. {
            let names = [
                format!("roi_heads.mask_head.{i}.0.weight"),
                format!("roi_heads.mask_head.mask_fcn{}.weight", i + 1),
            ];
            match ws.get_any(&names) {
                Ok((n, _)) => mask_convs.push(Conv::load(ws, n.trim_end_matches(".weight"), 1, 1)?),
                Err(_) => break,
            }
        }
        if mask_convs.is_empty() {
            return Err(Error::input("weights have no roi_heads.mask_head layers"));
        }
        let deconv_w = ws.get("roi_heads.mask_predictor.conv5_mask.weight")?;
        let deconv_b = ws.get("roi_heads.mask_predictor.conv5_mask.bias")?;
        if deconv_w.rank() != 4 || deconv_b.dims() != [deconv_w.dims()[1]] {
            return Err(Error::input(
                "roi_heads.mask_predictor.conv5_mask: expected (in, out, 2, 2) and a matching bias",
            ));
        }
        Ok(RoiHeads {
            fc6,
            fc7: Linear::load(ws, "roi_heads.box_head.fc7")?,
            cls,
            bbox: Linear::load(ws, "roi_heads.box_predictor.bbox_pred")?,
            mask_convs,
            deconv_w,
            deconv_b,
            mask_logits: Conv::load(ws, "roi_heads.mask_predictor.mask_fcn_logits", 1, 0)?,
            num_classes,
        })
    }

    /// Box branch and post-processing (torchvision postprocess_detections).
    pub(crate) fn detect(
        &self,
        feats: &[Tensor],
        levels: &Levels,
        proposals: &[Vec<BoxF>],
        image_size: (usize, usize),
        cfg: &RoiHeadsConfig,
    ) -> Result<Vec<RawDetections>> {
        let flat: Vec<(usize, BoxF)> = proposals
            .iter()
            .enumerate()
            .flat_map(|(b, v)| v.iter().map(move |x| (b, *x)))
            .collect();
        if flat.is_empty() {
            return Ok(vec![RawDetections::default(); proposals.len()]);
        }
        type Rows = Vec<Vec<f32>>;
        let f = || -> candle_core::Result<(Rows, Rows)> {
            let x = multiscale_pool(
                feats,
                levels,
                &flat,
                cfg.box_roi_pool_size,
                cfg.box_roi_pool,
                cfg.sampling_ratio,
            )?;
            let x = x.flatten_from(1)?;
            let x = self.fc6.forward(&x)?.relu()?;
            let x = self.fc7.forward(&x)?.relu()?;
            let logits = self.cls.forward(&x)?;
            let scores = candle_nn::ops::softmax_last_dim(&logits)?;
            let reg = self.bbox.forward(&x)?;
            Ok((scores.to_vec2()?, reg.to_vec2()?))
        };
        let (scores, reg) = f().map_err(ce)?;
        let nc = self.num_classes;
        let (ih, iw) = image_size;
        let mut out = Vec::with_capacity(proposals.len());
        let mut row = 0;
        for props in proposals {
            let mut boxes = Vec::new();
            let mut sc = Vec::new();
            let mut lab = Vec::new();
            for p in props {
                for c in 1..nc {
                    let s = scores[row][c];
                    let r = &reg[row][c * 4..c * 4 + 4];
                    let bx = clip_box(
                        decode(*p, [r[0], r[1], r[2], r[3]], cfg.bbox_reg_weights),
                        ih,
                        iw,
                    );
                    if s > cfg.score_thresh && !is_small(&bx, 1e-2) {
                        boxes.push(bx);
                        sc.push(s);
                        lab.push(c);
                    }
                }
                row += 1;
            }
            let mut keep = batched_nms(&boxes, &sc, &lab, cfg.nms_thresh);
            keep.truncate(cfg.detections_per_img);
            out.push(RawDetections {
                boxes: keep.iter().map(|&i| boxes[i]).collect(),
                scores: keep.iter().map(|&i| sc[i]).collect(),
                labels: keep.iter().map(|&i| lab[i]).collect(),
            });
        }
        Ok(out)
    }

    /// Mask probabilities (K, m, m) of each detection's own class, flattened.
    pub fn masks(
        &self,
        feats: &[Tensor],
        levels: &Levels,
        dets: &[RawDetections],
        cfg: &RoiHeadsConfig,
    ) -> Result<(Vec<f32>, usize)> {
        let flat: Vec<(usize, BoxF)> = dets
            .iter()
            .enumerate()
            .flat_map(|(b, d)| d.boxes.iter().map(move |x| (b, *x)))
            .collect();
        let m = 2 * cfg.mask_roi_pool_size;
        if flat.is_empty() {
            return Ok((Vec::new(), m));
        }
        let labels: Vec<u32> = dets
            .iter()
            .flat_map(|d| d.labels.iter().map(|&l| l as u32))
            .collect();
        let f = || -> candle_core::Result<Vec<f32>> {
            let mut x = multiscale_pool(
                feats,
                levels,
                &flat,
                cfg.mask_roi_pool_size,
                RoiPoolKind::Align,
                cfg.sampling_ratio,
            )?;
            for c in &self.mask_convs {
                x = c.forward_relu(&x)?;
            }
            let x = x.conv_transpose2d(&self.deconv_w, 0, 0, 2, 1)?;
            let x = x
                .broadcast_add(&self.deconv_b.reshape((1, self.deconv_b.dims()[0], 1, 1))?)?
                .relu()?;
            let logits = self.mask_logits.forward(&x)?;
            let (k, _, hh, ww) = logits.dims4()?;
            let dev: &Device = logits.device();
            // Gather each detection's class channel: row i*nc + label.
            let nc = self.num_classes as u32;
            let idx: Vec<u32> = labels
                .iter()
                .enumerate()
                .map(|(i, &l)| i as u32 * nc + l)
                .collect();
            let sel = logits
                .reshape((k * self.num_classes, hh * ww))?
                .index_select(&Tensor::new(idx.as_slice(), dev)?, 0)?;
            let prob = candle_nn::ops::sigmoid(&sel)?;
            prob.flatten_all()?.to_vec1()
        };
        let v = f().map_err(ce)?;
        Ok((v, m))
    }
}
