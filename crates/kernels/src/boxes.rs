//! Box geometry with torchvision semantics: NMS, box coding, clipping and the
//! FPN level mapping. A leaf module (no candle, no `gpu/`), so the CUDA RoI
//! code and the CPU RoI operators both use it without importing each other.

/// A box (x1, y1, x2, y2) in image pixels.
pub type BoxF = [f32; 4];

/// Greedy NMS as torchvision's CPU kernel: stable sort by score (descending),
/// IoU without the +1 convention, suppress when IoU > threshold.
pub(crate) fn nms(boxes: &[BoxF], scores: &[f32], iou_thresh: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let areas: Vec<f32> = boxes
        .iter()
        .map(|b| (b[2] - b[0]) * (b[3] - b[1]))
        .collect();
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = boxes[i];
        for &j in &order[oi + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = boxes[j];
            let xx1 = bi[0].max(bj[0]);
            let yy1 = bi[1].max(bj[1]);
            let xx2 = bi[2].min(bj[2]);
            let yy2 = bi[3].min(bj[3]);
            let inter = (xx2 - xx1).max(0.0) * (yy2 - yy1).max(0.0);
            let ovr = inter / (areas[i] + areas[j] - inter);
            if ovr > iou_thresh {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// NMS within each group (class or level), kept indices sorted by score.
pub fn batched_nms(
    boxes: &[BoxF],
    scores: &[f32],
    groups: &[usize],
    iou_thresh: f32,
) -> Vec<usize> {
    let mut ids: Vec<usize> = groups.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut keep = Vec::new();
    for g in ids {
        let idx: Vec<usize> = (0..boxes.len()).filter(|&i| groups[i] == g).collect();
        let b: Vec<BoxF> = idx.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
        keep.extend(nms(&b, &s, iou_thresh).into_iter().map(|k| idx[k]));
    }
    keep.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    keep
}

/// torchvision BoxCoder.decode_single for one box and its (dx, dy, dw, dh).
pub fn decode(anchor: BoxF, code: [f32; 4], weights: [f32; 4]) -> BoxF {
    // log(1000 / 16), as torchvision's bbox_xform_clip.
    let clip = (1000.0f64 / 16.0).ln() as f32;
    let widths = anchor[2] - anchor[0];
    let heights = anchor[3] - anchor[1];
    let ctr_x = anchor[0] + 0.5 * widths;
    let ctr_y = anchor[1] + 0.5 * heights;
    let dx = code[0] / weights[0];
    let dy = code[1] / weights[1];
    let dw = (code[2] / weights[2]).min(clip);
    let dh = (code[3] / weights[3]).min(clip);
    let pcx = dx * widths + ctr_x;
    let pcy = dy * heights + ctr_y;
    let pw = dw.exp() * widths;
    let ph = dh.exp() * heights;
    let cw = 0.5 * pw;
    let ch = 0.5 * ph;
    [pcx - cw, pcy - ch, pcx + cw, pcy + ch]
}

/// Clip to an image of (height, width), as torchvision's clip_boxes_to_image.
pub fn clip_box(b: BoxF, h: usize, w: usize) -> BoxF {
    let (hf, wf) = (h as f32, w as f32);
    [
        b[0].clamp(0.0, wf),
        b[1].clamp(0.0, hf),
        b[2].clamp(0.0, wf),
        b[3].clamp(0.0, hf),
    ]
}

pub fn is_small(b: &BoxF, min_size: f32) -> bool {
    !((b[2] - b[0]) >= min_size && (b[3] - b[1]) >= min_size)
}

/// torchvision's LevelMapper (canonical scale 224 at level 4, eps 1e-6),
/// returned as an index into the pooled levels (0 = k_min).
pub fn map_level(b: &BoxF, k_min: i32, k_max: i32) -> usize {
    let s = ((b[2] - b[0]) * (b[3] - b[1])).sqrt();
    let lvl = (4.0f32 + (s / 224.0).log2() + 1e-6f32).floor();
    let lvl = (lvl as i32).clamp(k_min, k_max);
    (lvl - k_min) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_suppresses_overlaps_per_group() {
        let b = vec![
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 10.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
            [1.0, 1.0, 10.0, 10.0],
        ];
        let s = vec![0.9, 0.8, 0.7, 0.95];
        assert_eq!(nms(&b, &s, 0.5), vec![3, 2]);
        assert_eq!(batched_nms(&b, &s, &[0, 0, 0, 1], 0.5), vec![3, 0, 2]);
    }
}
