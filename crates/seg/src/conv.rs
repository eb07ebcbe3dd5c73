//! 2-D convolution on CPU as im2col + GEMM, with the bias add and ReLU fused
//! into the same pass (issue 9).
//!
//! Why: candle 0.11's CPU `conv2d` is a direct loop nest that reaches 21-58
//! GFLOP/s on 3x3 convolutions on this class of machine, while its matrix
//! multiply (the `gemm` crate) reaches 140-179 GFLOP/s on the same products.
//! Laid out as `W [Cout, Cin*kh*kw] x col [Cin*kh*kw, Ho*Wo]` the product
//! lands directly in NCHW order, so no transpose follows; a 1x1 stride-1
//! convolution needs no im2col at all. The op is a candle `CustomOp3`
//! (input, weight, bias) so it stays inside candle's op model; on other
//! devices [`conv2d`] falls back to candle's own convolution.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Device, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

thread_local! {
    /// Each thread's im2col matrix, kept from one convolution to the next: a
    /// fresh one per call was zeroed and page-faulted in every time (memset
    /// and page faults were about 10 % of a forward pass in `perf`). It grows
    /// to the largest convolution's (about 10 MB per thread for the shipped
    /// model at 256 px).
    static COL: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Convolution parameters (dilation 1, groups 1: all torchvision's ResNet,
/// FPN, RPN and mask-head convolutions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv2dOp {
    pub stride: usize,
    pub padding: usize,
    pub relu: bool,
}

/// `x [N, Cin, H, W]` convolved with `w [Cout, Cin, kh, kw]`, plus `b
/// [Cout]`, then ReLU when `relu`. F32 on CPU uses the im2col + GEMM op;
/// anything else goes through candle's `conv2d`.
pub(crate) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    padding: usize,
    relu: bool,
) -> candle_core::Result<Tensor> {
    let cpu_f32 = matches!(x.device(), Device::Cpu)
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && b.dtype() == DType::F32;
    if cpu_f32 {
        let x = x.contiguous()?;
        return x.apply_op3_no_bwd(
            w,
            b,
            &Conv2dOp {
                stride,
                padding,
                relu,
            },
        );
    }
    let y = x
        .conv2d(w, padding, stride, 1, 1)?
        .broadcast_add(&b.reshape((1, b.dims()[0], 1, 1))?)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => candle_core::bail!("conv2d: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("conv2d: {what} must be contiguous"),
    }
}

/// Output positions `o` in `0..n_out` whose input index `o * stride + k -
/// pad` falls inside `0..n_in`: the half-open range `[lo, hi)`.
fn valid_range(n_in: usize, n_out: usize, stride: usize, k: usize, pad: usize) -> (usize, usize) {
    // o * stride + k >= pad  <=>  o >= ceil((pad - k) / stride)
    let lo = if pad > k {
        (pad - k).div_ceil(stride)
    } else {
        0
    };
    // o * stride + k - pad < n_in  <=>  o * stride < n_in + pad - k
    let lim = n_in + pad;
    let hi = if lim > k {
        (lim - k).div_ceil(stride)
    } else {
        0
    };
    (lo.min(n_out), hi.min(n_out).max(lo.min(n_out)))
}

/// Fills `col [Cin*kh*kw, Ho*Wo]` (row-major) for one image `x [Cin, H, W]`.
#[allow(clippy::too_many_arguments)]
fn im2col(
    x: &[f32],
    col: &mut [f32],
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    (ho, wo): (usize, usize),
    stride: usize,
    pad: usize,
    parallel: bool,
) {
    let p = ho * wo;
    let fill = |(r, row): (usize, &mut [f32])| {
        let c = r / (kh * kw);
        let ky = (r / kw) % kh;
        let kx = r % kw;
        let plane = &x[c * h * w..(c + 1) * h * w];
        let (y0, y1) = valid_range(h, ho, stride, ky, pad);
        let (x0, x1) = valid_range(w, wo, stride, kx, pad);
        row[..y0 * wo].fill(0.0);
        row[y1 * wo..].fill(0.0);
        for oy in y0..y1 {
            let iy = oy * stride + ky - pad;
            let out = &mut row[oy * wo..(oy + 1) * wo];
            out[..x0].fill(0.0);
            out[x1..].fill(0.0);
            let src = &plane[iy * w..(iy + 1) * w];
            if stride == 1 {
                let ix0 = x0 + kx - pad;
                out[x0..x1].copy_from_slice(&src[ix0..ix0 + (x1 - x0)]);
            } else {
                for (ox, o) in out[x0..x1].iter_mut().enumerate() {
                    *o = src[(ox + x0) * stride + kx - pad];
                }
            }
        }
    };
    if parallel {
        col.par_chunks_mut(p).enumerate().for_each(fill);
    } else {
        col.chunks_mut(p).enumerate().for_each(fill);
    }
}

/// One image: `out [Cout, P] += W [Cout, K] x col [K, P]`, then ReLU; `out`
/// holds the bias already (written in the same pass that allocates it, so the
/// output is not zeroed first).
fn gemm_bias_relu(
    out: &mut [f32],
    w: &[f32],
    col: &[f32],
    (c_out, k, p): (usize, usize, usize),
    relu: bool,
    par: Parallelism,
) {
    // SAFETY: out is c_out x p, w is c_out x k, col is k x p, all row-major
    // and exactly that long (checked by the caller); the strides below
    // describe those layouts.
    unsafe {
        gemm::gemm(
            c_out,
            p,
            k,
            out.as_mut_ptr(),
            1,
            p as isize,
            true,
            w.as_ptr(),
            1,
            k as isize,
            col.as_ptr(),
            1,
            p as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
    if relu {
        for v in out.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "organdose-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "input")?;
        let w = f32_slice(s2, l2, "weight")?;
        let bias = f32_slice(s3, l3, "bias")?;
        let (n, c_in, h, wd) = l1.shape().dims4()?;
        let (c_out, wc_in, kh, kw) = l2.shape().dims4()?;
        if wc_in != c_in || bias.len() != c_out {
            candle_core::bail!(
                "conv2d: input {:?}, weight {:?}, bias {} do not match",
                l1.dims(),
                l2.dims(),
                bias.len()
            );
        }
        let (s, pad) = (self.stride.max(1), self.padding);
        if h + 2 * pad < kh || wd + 2 * pad < kw {
            candle_core::bail!("conv2d: kernel larger than the padded input");
        }
        let ho = (h + 2 * pad - kh) / s + 1;
        let wo = (wd + 2 * pad - kw) / s + 1;
        let (k, p) = (c_in * kh * kw, ho * wo);
        // Each output row starts as its bias: one pass over fresh memory
        // instead of zeroing it and then writing the bias.
        let mut out = Vec::with_capacity(n * c_out * p);
        for _ in 0..n {
            for &b in bias {
                out.extend(std::iter::repeat_n(b, p));
            }
        }
        let direct = kh == 1 && kw == 1 && s == 1 && pad == 0;
        let threads = rayon::current_num_threads();
        // Many small images (RoIs in the mask head): one image per thread.
        // Few large ones: one at a time, the threads inside im2col and GEMM.
        let per_image = n >= threads && threads > 1 && p * c_out < 256 * 64 * 64;
        let one = |(img, o): (usize, &mut [f32]), inner: bool| {
            let xi = &x[img * c_in * h * wd..(img + 1) * c_in * h * wd];
            let par = if inner && threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            if direct {
                gemm_bias_relu(o, w, xi, (c_out, k, p), self.relu, par);
            } else {
                // Taken out, not borrowed: while this thread waits inside a
                // parallel section, rayon may run another convolution on it
                // (which then starts from an empty buffer).
                let mut col = COL.take();
                // im2col writes every element: only growth is zeroed.
                if col.len() < k * p {
                    col.resize(k * p, 0.0);
                }
                im2col(
                    xi,
                    &mut col[..k * p],
                    (h, wd),
                    (kh, kw),
                    (ho, wo),
                    s,
                    pad,
                    inner,
                );
                gemm_bias_relu(o, w, &col[..k * p], (c_out, k, p), self.relu, par);
                COL.set(col);
            }
        };
        if per_image {
            out.par_chunks_mut(c_out * p)
                .enumerate()
                .for_each(|item| one(item, false));
        } else {
            for item in out.chunks_mut(c_out * p).enumerate() {
                one(item, true);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c_out, ho, wo))))
    }
}

/// torchvision's stem pooling, `max_pool2d(kernel 3, stride 2, padding 1)`:
/// each output the maximum of the window's pixels inside the image (torch
/// pads with -inf). On CPU in one pass, a plane per task; candle's own pooling
/// runs on one thread and needed the padding copied in first (about 4 % of a
/// forward pass together). Other devices pad and pool with candle (the input
/// follows a ReLU, so zero padding gives the same maxima there).
pub(crate) fn max_pool_3x3_s2_p1(x: &Tensor) -> candle_core::Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&MaxPool3x3S2);
    }
    x.pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .max_pool2d_with_stride(3, 2)
}

struct MaxPool3x3S2;

impl CustomOp1 for MaxPool3x3S2 {
    fn name(&self) -> &'static str {
        "organdose-max-pool-3x3-s2-p1"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "input")?;
        let (n, c, h, w) = l.shape().dims4()?;
        if h == 0 || w == 0 {
            candle_core::bail!("max_pool: empty image");
        }
        // (size + 2 * pad - kernel) / stride + 1
        let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        let mut out = vec![0f32; n * c * ho * wo];
        out.par_chunks_mut(ho * wo)
            .zip(x.par_chunks(h * w))
            .for_each(|(o, xp)| {
                for oy in 0..ho {
                    let (y0, y1) = ((2 * oy).saturating_sub(1), (2 * oy + 1).min(h - 1));
                    for ox in 0..wo {
                        let (x0, x1) = ((2 * ox).saturating_sub(1), (2 * ox + 1).min(w - 1));
                        let mut m = f32::NEG_INFINITY;
                        for row in xp[y0 * w..=y1 * w + x1].chunks(w) {
                            for &v in &row[x0..=x1] {
                                m = m.max(v);
                            }
                        }
                        o[oy * wo + ox] = m;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn stem_max_pool_is_torchs_with_minus_infinity_padding() {
        for (h, w) in [(9, 8), (8, 9), (1, 1), (2, 5), (16, 16)] {
            let (n, c) = (2, 3);
            let x = rand(n * c * h * w, (h * 31 + w) as u64);
            let t = Tensor::from_vec(x.clone(), (n, c, h, w), &Device::Cpu).unwrap();
            let got: Vec<f32> = max_pool_3x3_s2_p1(&t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let (ho, wo) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
            let mut want = Vec::new();
            for p in 0..n * c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut m = f32::NEG_INFINITY;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((oy * 2 + ky) as i64 - 1, (ox * 2 + kx) as i64 - 1);
                                if (0..h as i64).contains(&iy) && (0..w as i64).contains(&ix) {
                                    m = m.max(x[p * h * w + iy as usize * w + ix as usize]);
                                }
                            }
                        }
                        want.push(m);
                    }
                }
            }
            assert_eq!(got, want, "{h} x {w}");
        }
    }

    /// Reference: the textbook six-loop convolution in f64.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        (n, c_in, h, wd): (usize, usize, usize, usize),
        (c_out, kh, kw): (usize, usize, usize),
        s: usize,
        pad: usize,
        relu: bool,
    ) -> Vec<f32> {
        let ho = (h + 2 * pad - kh) / s + 1;
        let wo = (wd + 2 * pad - kw) / s + 1;
        let mut out = vec![0f32; n * c_out * ho * wo];
        for i in 0..n {
            for co in 0..c_out {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = b[co] as f64;
                        for ci in 0..c_in {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * s + ky) as isize - pad as isize;
                                    let ix = (ox * s + kx) as isize - pad as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv =
                                        x[((i * c_in + ci) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((co * c_in + ci) * kh + ky) * kw + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        let v = if relu { acc.max(0.0) } else { acc };
                        out[((i * c_out + co) * ho + oy) * wo + ox] = v as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_convolution_for_every_resnet_shape() {
        // (n, cin, h, w, cout, k, stride, pad, relu): stem, 3x3, strided 3x3,
        // 1x1 downsample, 1x1, odd sizes, many small images (mask head).
        let cases = [
            (1, 3, 23, 19, 8, 7, 2, 3, true),
            (2, 5, 12, 13, 6, 3, 1, 1, false),
            (1, 4, 11, 10, 7, 3, 2, 1, true),
            (2, 6, 9, 8, 5, 1, 2, 0, false),
            (3, 6, 7, 9, 4, 1, 1, 0, true),
            (9, 4, 6, 6, 3, 3, 1, 1, true),
            (1, 2, 3, 3, 2, 3, 1, 0, false),
        ];
        for (i, &(n, ci, h, w, co, k, s, p, relu)) in cases.iter().enumerate() {
            let x = rand(n * ci * h * w, 3 * i as u64 + 1);
            let wt = rand(co * ci * k * k, 3 * i as u64 + 2);
            let b = rand(co, 3 * i as u64 + 3);
            let want = naive(&x, &wt, &b, (n, ci, h, w), (co, k, k), s, p, relu);
            let xt = Tensor::from_vec(x, (n, ci, h, w), &Device::Cpu).unwrap();
            let wtt = Tensor::from_vec(wt, (co, ci, k, k), &Device::Cpu).unwrap();
            let bt = Tensor::from_vec(b, co, &Device::Cpu).unwrap();
            let got = conv2d(&xt, &wtt, &bt, s, p, relu).unwrap();
            let ho = (h + 2 * p - k) / s + 1;
            let wo = (w + 2 * p - k) / s + 1;
            assert_eq!(got.dims(), [n, co, ho, wo], "case {i}");
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "case {i} element {j}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn valid_range_counts_inside_positions() {
        for n_in in 1..9 {
            for stride in 1..4 {
                for k in 0..5 {
                    for pad in 0..4 {
                        if n_in + 2 * pad < k + 1 {
                            continue;
                        }
                        let n_out = (n_in + 2 * pad - (k + 1)) / stride + 1;
                        let (lo, hi) = valid_range(n_in, n_out, stride, k, pad);
                        for o in 0..n_out {
                            let i = (o * stride + k) as isize - pad as isize;
                            let inside = i >= 0 && i < n_in as isize;
                            assert_eq!(inside, o >= lo && o < hi, "{n_in} {stride} {k} {pad} {o}");
                        }
                    }
                }
            }
        }
    }
}
