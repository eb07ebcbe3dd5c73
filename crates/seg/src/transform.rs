//! torchvision GeneralizedRCNNTransform at test time: normalise, resize
//! (bilinear, align_corners = false, recomputed scale), pad to a multiple of
//! `size_divisible`; and back: box rescale and mask paste.

use super::boxes::BoxF;
use super::config::TransformConfig;

/// torchvision's resize rule: scale = min(min_size / short, max_size / long)
/// in f32, output = floor(in * scale) in f64 (F.interpolate's recompute path).
pub(crate) fn resized_size(h: usize, w: usize, cfg: &TransformConfig) -> (usize, usize) {
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
pub(crate) fn resize_bilinear(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
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
pub(crate) fn rescale_box(b: BoxF, resized: (usize, usize), original: (usize, usize)) -> BoxF {
    let rh = original.0 as f32 / resized.0 as f32;
    let rw = original.1 as f32 / resized.1 as f32;
    [b[0] * rw, b[1] * rh, b[2] * rw, b[3] * rh]
}

/// torchvision paste_masks_in_image for one (m, m) mask probability map:
/// pad by one, grow the box by (m+2)/m, truncate to integers, resize the
/// mask to the box bilinearly and place it in an (h, w) image.
pub(crate) fn paste_mask(mask: &[f32], m: usize, b: BoxF, h: usize, w: usize) -> Vec<f32> {
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

/// Mask cell coordinate of each pixel index along one axis, for the exact
/// paste: (first pixel, per pixel (cell0, w0, cell1, w1)), cells outside
/// 0..m read as zero (torchvision pads by one empty cell too).
fn exact_taps(lo: f32, hi: f32, m: usize, n: usize) -> (usize, Vec<(usize, f32, usize, f32)>) {
    let cell = (hi - lo).max(1e-3) / m as f32;
    // Pixels whose cell coordinate lies in (-1, m) can get a value.
    let first = ((lo - 0.5 * cell).floor().max(0.0) as usize).min(n);
    let last = ((hi + 0.5 * cell).ceil().max(0.0) as usize).min(n);
    let taps = (first..last)
        .map(|x| {
            let s = (x as f32 - lo) / cell - 0.5;
            let c0 = s.floor();
            let f = s - c0;
            let weight = |c: f32, w: f32| {
                if c >= 0.0 && (c as usize) < m {
                    (c as usize, w)
                } else {
                    (0, 0.0)
                }
            };
            let (i0, w0) = weight(c0, 1.0 - f);
            let (i1, w1) = weight(c0 + 1.0, f);
            (i0, w0, i1, w1)
        })
        .collect();
    (first, taps)
}

/// Pastes one (m, m) mask probability map into an (h, w) image as the
/// inverse of the training targets: torchvision's project_masks_on_boxes
/// samples cell b of box [x0, x1] at pixel index x0 + (b + 0.5) (x1 - x0) / m
/// (RoIAlign, aligned = false), so pixel x reads cell
/// (x - x0) m / (x1 - x0) - 0.5, bilinearly. Unlike [`paste_mask`] the box is not rounded out to
/// whole pixels, which made every organ about a pixel too wide and too tall.
pub(crate) fn paste_mask_exact(mask: &[f32], m: usize, b: BoxF, h: usize, w: usize) -> Vec<f32> {
    let (x_first, tx) = exact_taps(b[0], b[2], m, w);
    let (y_first, ty) = exact_taps(b[1], b[3], m, h);
    let mut out = vec![0f32; h * w];
    for (y, &(r0, wy0, r1, wy1)) in ty.iter().enumerate() {
        let row = &mut out[(y_first + y) * w..(y_first + y + 1) * w];
        for (x, &(c0, wx0, c1, wx1)) in tx.iter().enumerate() {
            row[x_first + x] = wy0 * (wx0 * mask[r0 * m + c0] + wx1 * mask[r0 * m + c1])
                + wy1 * (wx0 * mask[r1 * m + c0] + wx1 * mask[r1 * m + c1]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roi_ops::roi_align;
    use candle_core::{Device, Tensor};

    /// An ellipse's pixels, its box as train/organdose_train/data.py writes
    /// it ([min, min, max + 1, max + 1]) and its 28x28 training target as
    /// torchvision's project_masks_on_boxes makes it (RoIAlign, aligned =
    /// false, adaptive sampling).
    fn ellipse_target(
        n: usize,
        c: (f32, f32),
        r: (f32, f32),
        m: usize,
    ) -> (Vec<f32>, BoxF, Vec<f32>) {
        let img: Vec<f32> = (0..n * n)
            .map(|i| {
                let (x, y) = ((i % n) as f32, (i / n) as f32);
                let d = ((x - c.0) / r.0).powi(2) + ((y - c.1) / r.1).powi(2);
                if d <= 1.0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let on: Vec<usize> = (0..n * n).filter(|&i| img[i] > 0.0).collect();
        let xs = on.iter().map(|&i| (i % n) as f32);
        let ys = on.iter().map(|&i| (i / n) as f32);
        let b = [
            xs.clone().fold(f32::MAX, f32::min),
            ys.clone().fold(f32::MAX, f32::min),
            xs.fold(0.0, f32::max) + 1.0,
            ys.fold(0.0, f32::max) + 1.0,
        ];
        let f = Tensor::from_vec(img.clone(), (1, 1, n, n), &Device::Cpu).unwrap();
        let rois =
            Tensor::from_vec(vec![0.0, b[0], b[1], b[2], b[3]], (1, 5), &Device::Cpu).unwrap();
        let t = roi_align(&f, &rois, m, 1.0, 0).unwrap();
        (img, b, t.flatten_all().unwrap().to_vec1().unwrap())
    }

    /// (pasted area / true area, IoU) at threshold 0.5.
    fn area_and_iou(truth: &[f32], pasted: &[f32]) -> (f64, f64) {
        let (mut t, mut p, mut both) = (0usize, 0usize, 0usize);
        for (&a, &b) in truth.iter().zip(pasted) {
            let (a, b) = (a > 0.5, b >= 0.5);
            t += a as usize;
            p += b as usize;
            both += (a && b) as usize;
        }
        (p as f64 / t as f64, both as f64 / (t + p - both) as f64)
    }

    #[test]
    fn exact_paste_inverts_the_training_target_torchvision_grows_it() {
        // Organ-sized ellipses at 256 px (kidneys ~20-40 px across), at
        // fractional centres: the perfect mask head returns the target, so
        // pasting it must give the organ back.
        let (n, m) = (96, 28);
        let cases = [
            ((40.3, 47.7), (13.3, 9.6)),
            ((50.5, 44.2), (20.1, 16.4)),
            ((47.9, 51.1), (8.2, 11.7)),
            ((45.0, 45.0), (30.4, 25.2)),
        ];
        for (c, r) in cases {
            let (img, b, target) = ellipse_target(n, c, r, m);
            let (ae, ie) = area_and_iou(&img, &paste_mask_exact(&target, m, b, n, n));
            let (at, it) = area_and_iou(&img, &paste_mask(&target, m, b, n, n));
            eprintln!("{c:?} {r:?}: exact x{ae:.3} IoU {ie:.3}; torchvision x{at:.3} IoU {it:.3}");
            assert!(
                (ae - 1.0).abs() < 0.03 && ie > 0.96,
                "exact paste of {c:?} {r:?}: area x{ae:.3}, IoU {ie:.3}"
            );
            // torchvision's rounding adds about a pixel per axis.
            assert!(
                at > ae && it < ie - 0.02,
                "torchvision paste of {c:?} {r:?}: area x{at:.3} IoU {it:.3} vs exact x{ae:.3} {ie:.3}"
            );
        }
    }

    #[test]
    fn exact_paste_stays_inside_the_image() {
        let mask = vec![1.0f32; 28 * 28];
        let out = paste_mask_exact(&mask, 28, [-5.0, 90.0, 20.0, 120.0], 100, 100);
        assert_eq!(out.len(), 100 * 100);
        assert!(out[99 * 100 + 10] > 0.99 && out[10] == 0.0);
    }
}
