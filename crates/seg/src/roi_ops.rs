//! RoI operators with torchvision semantics: RoIAlign and RoI max pooling as
//! candle `CustomOp2`s (CPU here; with feature `cuda` their `cuda_fwd` runs kernels/*.cu).
//! Arithmetic follows torchvision's CPU kernels term by term so results agree
//! to float rounding. Box geometry (NMS, coding, level mapping) is in `boxes`,
//! which `gpu/` uses too: this module calls into `gpu/`, `boxes` does not.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => candle_core::bail!("{what}: expected f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

/// Shared input checks: features (N, C, H, W), rois (K, 5) as (batch, x1, y1, x2, y2).
fn dims(l1: &Layout, l2: &Layout) -> candle_core::Result<([usize; 4], usize)> {
    let f = l1.shape().dims();
    let r = l2.shape().dims();
    if f.len() != 4 || r.len() != 2 || r[1] != 5 {
        candle_core::bail!("roi op: features must be (N,C,H,W) and rois (K,5), got {f:?} {r:?}");
    }
    Ok(([f[0], f[1], f[2], f[3]], r[0]))
}

/// torchvision `roi_align` (forward).
#[derive(Debug, Clone, Copy)]
pub struct RoiAlign {
    pub pooled_h: usize,
    pub pooled_w: usize,
    pub spatial_scale: f32,
    pub sampling_ratio: i32,
    pub aligned: bool,
}

#[derive(Clone, Copy)]
struct Pre {
    pos: [usize; 4],
    w: [f32; 4],
}

impl CustomOp2 for RoiAlign {
    fn name(&self) -> &'static str {
        "roi_align"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ([n, c, h, w], k) = dims(l1, l2)?;
        let feat = contiguous_f32(s1, l1, "roi_align features")?;
        let rois = contiguous_f32(s2, l2, "roi_align rois")?;
        let (ph_n, pw_n) = (self.pooled_h, self.pooled_w);
        let mut out = vec![0f32; k * c * ph_n * pw_n];
        let offset = if self.aligned { 0.5f32 } else { 0.0 };
        for r in 0..k {
            let b = rois[r * 5] as i64;
            if b < 0 || b as usize >= n {
                candle_core::bail!("roi_align: batch index {b} out of range");
            }
        }
        // One RoI per task: the box and mask heads pool a few hundred RoIs
        // per batch, each independent (the same arithmetic as one at a time).
        use rayon::prelude::*;
        out.par_chunks_mut((c * ph_n * pw_n).max(1))
            .enumerate()
            .for_each_init(Vec::new, |pre: &mut Vec<Pre>, (r, out_r)| {
                let roi = &rois[r * 5..r * 5 + 5];
                let b = roi[0] as usize;
                let start_w = roi[1] * self.spatial_scale - offset;
                let start_h = roi[2] * self.spatial_scale - offset;
                let end_w = roi[3] * self.spatial_scale - offset;
                let end_h = roi[4] * self.spatial_scale - offset;
                let mut roi_w = end_w - start_w;
                let mut roi_h = end_h - start_h;
                if !self.aligned {
                    roi_w = roi_w.max(1.0);
                    roi_h = roi_h.max(1.0);
                }
                let bin_h = roi_h / ph_n as f32;
                let bin_w = roi_w / pw_n as f32;
                let grid_h = if self.sampling_ratio > 0 {
                    self.sampling_ratio as usize
                } else {
                    (roi_h / ph_n as f32).ceil() as usize
                };
                let grid_w = if self.sampling_ratio > 0 {
                    self.sampling_ratio as usize
                } else {
                    (roi_w / pw_n as f32).ceil() as usize
                };
                let count = (grid_h * grid_w).max(1) as f32;
                pre.clear();
                for ph in 0..ph_n {
                    for pw in 0..pw_n {
                        for iy in 0..grid_h {
                            let yy = start_h
                                + ph as f32 * bin_h
                                + (iy as f32 + 0.5) * bin_h / grid_h as f32;
                            for ix in 0..grid_w {
                                let xx = start_w
                                    + pw as f32 * bin_w
                                    + (ix as f32 + 0.5) * bin_w / grid_w as f32;
                                pre.push(bilinear_pre(yy, xx, h, w));
                            }
                        }
                    }
                }
                let per_bin = grid_h * grid_w;
                for ch in 0..c {
                    let plane = &feat[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                    let o = &mut out_r[ch * ph_n * pw_n..(ch + 1) * ph_n * pw_n];
                    for (bin, ov) in o.iter_mut().enumerate() {
                        let mut acc = 0f32;
                        for p in &pre[bin * per_bin..(bin + 1) * per_bin] {
                            acc += p.w[0] * plane[p.pos[0]]
                                + p.w[1] * plane[p.pos[1]]
                                + p.w[2] * plane[p.pos[2]]
                                + p.w[3] * plane[p.pos[3]];
                        }
                        *ov = acc / count;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((k, c, ph_n, pw_n))))
    }

    /// crates/kernels/kernels/roi_align.cu through `gpu::candle_ops` (feature `cuda`).
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::gpu::candle_ops::roi_fwd(
            crate::gpu::ops::Pooling::Align {
                sampling_ratio: self.sampling_ratio,
                aligned: self.aligned,
            },
            (self.pooled_h, self.pooled_w),
            self.spatial_scale,
            s1,
            l1,
            s2,
            l2,
        )
    }
}

/// torchvision's `pre_calc_for_bilinear_interpolate` for one sample point.
fn bilinear_pre(y: f32, x: f32, h: usize, w: usize) -> Pre {
    let (hf, wf) = (h as f32, w as f32);
    if y < -1.0 || y > hf || x < -1.0 || x > wf {
        return Pre {
            pos: [0; 4],
            w: [0.0; 4],
        };
    }
    let mut y = if y <= 0.0 { 0.0 } else { y };
    let mut x = if x <= 0.0 { 0.0 } else { x };
    let mut y_low = y as usize;
    let mut x_low = x as usize;
    let y_high;
    let x_high;
    if y_low >= h - 1 {
        y_low = h - 1;
        y_high = h - 1;
        y = y_low as f32;
    } else {
        y_high = y_low + 1;
    }
    if x_low >= w - 1 {
        x_low = w - 1;
        x_high = w - 1;
        x = x_low as f32;
    } else {
        x_high = x_low + 1;
    }
    let ly = y - y_low as f32;
    let lx = x - x_low as f32;
    let hy = 1.0 - ly;
    let hx = 1.0 - lx;
    Pre {
        pos: [
            y_low * w + x_low,
            y_low * w + x_high,
            y_high * w + x_low,
            y_high * w + x_high,
        ],
        w: [hy * hx, hy * lx, ly * hx, ly * lx],
    }
}

/// torchvision `roi_pool` (RoI max pooling, forward).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoiPool {
    pub pooled_h: usize,
    pub pooled_w: usize,
    pub spatial_scale: f32,
}

impl CustomOp2 for RoiPool {
    fn name(&self) -> &'static str {
        "roi_pool"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ([n, c, h, w], k) = dims(l1, l2)?;
        let feat = contiguous_f32(s1, l1, "roi_pool features")?;
        let rois = contiguous_f32(s2, l2, "roi_pool rois")?;
        let (ph_n, pw_n) = (self.pooled_h, self.pooled_w);
        let mut out = vec![0f32; k * c * ph_n * pw_n];
        for r in 0..k {
            let roi = &rois[r * 5..r * 5 + 5];
            let b = roi[0] as i64;
            if b < 0 || b as usize >= n {
                candle_core::bail!("roi_pool: batch index {b} out of range");
            }
            let b = b as usize;
            // C++ round(): half away from zero, as Rust's f32::round.
            let sw = (roi[1] * self.spatial_scale).round() as i64;
            let sh = (roi[2] * self.spatial_scale).round() as i64;
            let ew = (roi[3] * self.spatial_scale).round() as i64;
            let eh = (roi[4] * self.spatial_scale).round() as i64;
            let roi_w = (ew - sw + 1).max(1);
            let roi_h = (eh - sh + 1).max(1);
            let bin_h = roi_h as f32 / ph_n as f32;
            let bin_w = roi_w as f32 / pw_n as f32;
            for ph in 0..ph_n {
                let hs = ((ph as f32 * bin_h).floor() as i64 + sh).clamp(0, h as i64) as usize;
                let he = (((ph + 1) as f32 * bin_h).ceil() as i64 + sh).clamp(0, h as i64) as usize;
                for pw in 0..pw_n {
                    let ws = ((pw as f32 * bin_w).floor() as i64 + sw).clamp(0, w as i64) as usize;
                    let we =
                        (((pw + 1) as f32 * bin_w).ceil() as i64 + sw).clamp(0, w as i64) as usize;
                    let empty = he <= hs || we <= ws;
                    for ch in 0..c {
                        let plane = &feat[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                        let mut m = if empty { 0.0 } else { f32::MIN };
                        for yy in hs..he {
                            for &v in &plane[yy * w + ws..yy * w + we] {
                                if v > m {
                                    m = v;
                                }
                            }
                        }
                        out[((r * c + ch) * ph_n + ph) * pw_n + pw] = m;
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((k, c, ph_n, pw_n))))
    }

    /// crates/kernels/kernels/roi_pool.cu through `gpu::candle_ops` (feature `cuda`).
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::gpu::candle_ops::roi_fwd(
            crate::gpu::ops::Pooling::Max,
            (self.pooled_h, self.pooled_w),
            self.spatial_scale,
            s1,
            l1,
            s2,
            l2,
        )
    }
}

pub fn roi_align(
    features: &Tensor,
    rois: &Tensor,
    output: usize,
    spatial_scale: f32,
    sampling_ratio: i32,
) -> candle_core::Result<Tensor> {
    features.apply_op2_no_bwd(
        rois,
        &RoiAlign {
            pooled_h: output,
            pooled_w: output,
            spatial_scale,
            sampling_ratio,
            aligned: false,
        },
    )
}

pub fn roi_pool(
    features: &Tensor,
    rois: &Tensor,
    output: usize,
    spatial_scale: f32,
) -> candle_core::Result<Tensor> {
    features.apply_op2_no_bwd(
        rois,
        &RoiPool {
            pooled_h: output,
            pooled_w: output,
            spatial_scale,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn roi_align_constant_and_linear() {
        // On a linear ramp f(x, y) = x, a RoI fully inside averages its sample x's.
        let (h, w) = (8usize, 8usize);
        let data: Vec<f32> = (0..h * w).map(|i| (i % w) as f32).collect();
        let f = Tensor::from_vec(data, (1, 1, h, w), &Device::Cpu).unwrap();
        let rois = Tensor::from_vec(vec![0f32, 1.0, 1.0, 5.0, 5.0], (1, 5), &Device::Cpu).unwrap();
        let o = roi_align(&f, &rois, 2, 1.0, 2).unwrap();
        let v: Vec<f32> = o.flatten_all().unwrap().to_vec1().unwrap();
        // bins [1,3] and [3,5], samples at 1.5, 2.5 and 3.5, 4.5.
        assert!(
            (v[0] - 2.0).abs() < 1e-6 && (v[1] - 4.0).abs() < 1e-6,
            "{v:?}"
        );
    }

    #[test]
    fn roi_pool_takes_max() {
        let data: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let f = Tensor::from_vec(data, (1, 1, 4, 4), &Device::Cpu).unwrap();
        let rois = Tensor::from_vec(vec![0f32, 0.0, 0.0, 3.0, 3.0], (1, 5), &Device::Cpu).unwrap();
        let v: Vec<f32> = roi_pool(&f, &rois, 2, 1.0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(v, vec![5.0, 7.0, 13.0, 15.0]);
    }
}
