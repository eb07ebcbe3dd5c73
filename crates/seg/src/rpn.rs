//! Region proposal network: head, decoding, per-level top-n, NMS.

use super::anchors::grid_anchors;
use super::backbone::{ce, Conv, Weights};
use super::boxes::{batched_nms, clip_box, decode, is_small, BoxF};
use super::config::{AnchorConfig, RpnConfig};
use crate::error::Result;
use candle_core::Tensor;

pub(crate) struct RpnHead {
    conv: Conv,
    cls: Conv,
    bbox: Conv,
}

impl RpnHead {
    pub fn load(ws: &Weights) -> Result<Self> {
        let (name, _) = ws.get_any(&[
            "rpn.head.conv.0.0.weight".to_string(),
            "rpn.head.conv.weight".to_string(),
        ])?;
        Ok(RpnHead {
            conv: Conv::load(ws, name.trim_end_matches(".weight"), 1, 1)?,
            cls: Conv::load(ws, "rpn.head.cls_logits", 1, 0)?,
            bbox: Conv::load(ws, "rpn.head.bbox_pred", 1, 0)?,
        })
    }

    pub(crate) fn num_anchors(&self) -> usize {
        self.cls.out_channels()
    }

    /// Per level: objectness (N, A, H, W) and box deltas (N, 4A, H, W).
    pub fn forward(&self, feats: &[Tensor]) -> candle_core::Result<Vec<(Tensor, Tensor)>> {
        feats
            .iter()
            .map(|f| {
                let t = self.conv.forward_relu(f)?;
                Ok((self.cls.forward(&t)?, self.bbox.forward(&t)?))
            })
            .collect()
    }
}

/// Proposals per image, best first, in the resized image's pixels.
pub fn proposals(
    head_out: &[(Tensor, Tensor)],
    anchors_cfg: &AnchorConfig,
    cfg: &RpnConfig,
    padded: (usize, usize),
    image_sizes: &[(usize, usize)],
) -> Result<Vec<Vec<BoxF>>> {
    let n_img = image_sizes.len();
    let mut per_img: Vec<Vec<(f32, BoxF, usize)>> = vec![Vec::new(); n_img];
    for (lvl, (obj, deltas)) in head_out.iter().enumerate() {
        let d = obj.dims();
        let (a, fh, fw) = (d[1], d[2], d[3]);
        let size = anchors_cfg
            .sizes
            .get(lvl)
            .copied()
            .unwrap_or(anchors_cfg.sizes[0]);
        let anchors = grid_anchors(size, &anchors_cfg.aspect_ratios, fh, fw, padded.0, padded.1);
        if anchors.len() != fh * fw * a {
            return Err(crate::Error::input(format!(
                "RPN head predicts {a} anchors per location but the anchor config gives {}",
                anchors_cfg.aspect_ratios.len()
            )));
        }
        let obj: Vec<f32> = obj.flatten_all().map_err(ce)?.to_vec1().map_err(ce)?;
        let del: Vec<f32> = deltas.flatten_all().map_err(ce)?.to_vec1().map_err(ce)?;
        for (b, out) in per_img.iter_mut().enumerate() {
            // Head layout (A, H, W) and (A, 4, H, W); anchors are (H, W, A).
            let mut lv: Vec<(f32, usize)> = Vec::with_capacity(fh * fw * a);
            for y in 0..fh {
                for x in 0..fw {
                    for ai in 0..a {
                        let s = obj[((b * a + ai) * fh + y) * fw + x];
                        lv.push((s, (y * fw + x) * a + ai));
                    }
                }
            }
            let k = cfg.pre_nms_top_n.min(lv.len());
            // torch.topk(sorted=True): descending by logit.
            lv.sort_by(|p, q| q.0.total_cmp(&p.0));
            lv.truncate(k);
            let (ih, iw) = image_sizes[b];
            for (s, idx) in lv {
                let (y, x, ai) = (idx / (fw * a), (idx / a) % fw, idx % a);
                let mut code = [0f32; 4];
                for (c, v) in code.iter_mut().enumerate() {
                    *v = del[((((b * a + ai) * 4 + c) * fh) + y) * fw + x];
                }
                let bx = clip_box(decode(anchors[idx], code, [1.0; 4]), ih, iw);
                let prob = 1.0 / (1.0 + (-s).exp());
                out.push((prob, bx, lvl));
            }
        }
    }
    let mut res = Vec::with_capacity(n_img);
    for cand in per_img {
        let cand: Vec<(f32, BoxF, usize)> = cand
            .into_iter()
            .filter(|(s, b, _)| !is_small(b, cfg.min_size) && *s >= cfg.score_thresh)
            .collect();
        let boxes: Vec<BoxF> = cand.iter().map(|c| c.1).collect();
        let scores: Vec<f32> = cand.iter().map(|c| c.0).collect();
        let lv: Vec<usize> = cand.iter().map(|c| c.2).collect();
        let mut keep = batched_nms(&boxes, &scores, &lv, cfg.nms_thresh);
        keep.truncate(cfg.post_nms_top_n);
        res.push(keep.into_iter().map(|i| boxes[i]).collect());
    }
    Ok(res)
}
