//! torchvision GeneralizedRCNNTransform at test time: normalise, resize
//! (bilinear, align_corners = false, recomputed scale), pad to a multiple of
//! `size_divisible`; and back: box rescale and mask paste.

use super::config::TransformConfig;
use super::roi_ops::BoxF;

/// torchvision's resize rule: scale = min(min_size / short, max_size / long)
/// in f32, output = floor(in * scale) in f64 (F.interpolate's recompute path).
pub fn resized_size(h: usize, w: usize, cfg: &TransformConfig) -> (usize, usize) {
    let short = h.min(w) as f32;
    let long = h.max(w) as f32;
    let scale = (cfg.min_size as f32 / short).min(cfg.max_size as f32 / long) as f64;
    (
        ((h as f64) * scale).floor().max(1.0) as usize,
        ((w as f64) * scale).floor().max(1.0) as usize,
    )
}

/// Source indices and weights of torch's linear upsampling along one axis.
fn linear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of one (h, w) plane to (oh, ow), torch's CPU arithmetic.
pub fn resize_bilinear(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let ty = linear_taps(h, oh);
    let tx = linear_taps(w, ow);
    let mut out = vec![0f32; oh * ow];
    for (y, &(y0, y1, ly0, ly1)) in ty.iter().enumerate() {
        let r0 = &src[y0 * w..(y0 + 1) * w];
        let r1 = &src[y1 * w..(y1 + 1) * w];
        for (x, &(x0, x1, lx0, lx1)) in tx.iter().enumerate() {
            let t0 = r0[x0] * lx0 + r0[x1] * lx1;
            let t1 = r1[x0] * lx0 + r1[x1] * lx1;
            out[y * ow + x] = t0 * ly0 + t1 * ly1;
        }
    }
    out
}

/// A batch ready for the backbone.
pub struct Batch {
    /// (N, 3, ph, pw), normalised, resized, zero-padded.
    pub data: Vec<f32>,
    pub n: usize,
    pub padded: (usize, usize),
    /// Resized size of each image (all equal: one input tensor).
    pub image_size: (usize, usize),
    pub original_size: (usize, usize),
}

/// `input`: (N, 3, H, W) row-major, values as torchvision's model takes them.
pub fn prepare(input: &[f32], n: usize, h: usize, w: usize, cfg: &TransformConfig) -> Batch {
    let (oh, ow) = resized_size(h, w, cfg);
    let d = cfg.size_divisible.max(1);
    let ph = oh.div_ceil(d) * d;
    let pw = ow.div_ceil(d) * d;
    let mut data = vec![0f32; n * 3 * ph * pw];
    let mut plane = vec![0f32; h * w];
    for b in 0..n {
        for c in 0..3 {
            let src = &input[(b * 3 + c) * h * w..(b * 3 + c + 1) * h * w];
            let (m, s) = (cfg.image_mean[c], cfg.image_std[c]);
            for (p, v) in plane.iter_mut().zip(src) {
                *p = (v - m) / s;
            }
            let r = if (oh, ow) == (h, w) {
                plane.clone()
            } else {
                resize_bilinear(&plane, h, w, oh, ow)
            };
            let dst = &mut data[(b * 3 + c) * ph * pw..(b * 3 + c + 1) * ph * pw];
            for y in 0..oh {
                dst[y * pw..y * pw + ow].copy_from_slice(&r[y * ow..(y + 1) * ow]);
            }
        }
    }
    Batch {
        data,
        n,
        padded: (ph, pw),
        image_size: (oh, ow),
        original_size: (h, w),
    }
}

/// torchvision resize_boxes: from the resized image back to the original.
pub fn rescale_box(b: BoxF, resized: (usize, usize), original: (usize, usize)) -> BoxF {
    let rh = original.0 as f32 / resized.0 as f32;
    let rw = original.1 as f32 / resized.1 as f32;
    [b[0] * rw, b[1] * rh, b[2] * rw, b[3] * rh]
}

/// torchvision paste_masks_in_image for one (m, m) mask probability map:
/// pad by one, grow the box by (m+2)/m, truncate to integers, resize the
/// mask to the box bilinearly and place it in an (h, w) image.
pub fn paste_mask(mask: &[f32], m: usize, b: BoxF, h: usize, w: usize) -> Vec<f32> {
    let mp = m + 2;
    let mut padded = vec![0f32; mp * mp];
    for y in 0..m {
        padded[(y + 1) * mp + 1..(y + 1) * mp + 1 + m].copy_from_slice(&mask[y * m..(y + 1) * m]);
    }
    let scale = (mp as f64 / m as f64) as f32;
    let w_half = (b[2] - b[0]) * 0.5 * scale;
    let h_half = (b[3] - b[1]) * 0.5 * scale;
    let xc = (b[2] + b[0]) * 0.5;
    let yc = (b[3] + b[1]) * 0.5;
    // .to(int64) truncates toward zero.
    let bx = [
        (xc - w_half) as i64,
        (yc - h_half) as i64,
        (xc + w_half) as i64,
        (yc + h_half) as i64,
    ];
    let bw = (bx[2] - bx[0] + 1).max(1) as usize;
    let bh = (bx[3] - bx[1] + 1).max(1) as usize;
    let r = resize_bilinear(&padded, mp, mp, bh, bw);
    let mut out = vec![0f32; h * w];
    let x0 = bx[0].max(0);
    let x1 = (bx[2] + 1).min(w as i64);
    let y0 = bx[1].max(0);
    let y1 = (bx[3] + 1).min(h as i64);
    for y in y0..y1 {
        let sy = (y - bx[1]) as usize;
        if sy >= bh {
            continue;
        }
        for x in x0..x1 {
            let sx = (x - bx[0]) as usize;
            if sx < bw {
                out[y as usize * w + x as usize] = r[sy * bw + sx];
            }
        }
    }
    out
}
