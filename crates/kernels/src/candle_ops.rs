//! `cuda_fwd` of the RoI CustomOps of `seg::roi_ops`, so that the network runs
//! on candle's CUDA device: the same kernels as `ops`, loaded into candle's
//! context and launched on candle's stream (no extra synchronisation; the
//! output is a candle `CudaStorage`).
//!
//! candle calls this once per FPN level from `seg::roi_heads::multiscale_pool`,
//! so each launch sees one level (offset 0) and every RoI on it.

use super::kernel_ptx;
use super::ops::{launch_cfg, Pooling};
use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, Layout, Shape};
use cudarc::driver::PushKernelArg;

fn ce(e: impl std::fmt::Debug) -> candle_core::Error {
    candle_core::Error::Msg(format!("organdose CUDA RoI op: {e:?}"))
}

/// RoIAlign or RoI max pooling of `features` (N, C, H, W) over `rois` (K, 5),
/// output (K, C, pooled.0, pooled.1).
pub fn roi_fwd(
    pooling: Pooling,
    pooled: (usize, usize),
    spatial_scale: f32,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let f = l1.shape().dims();
    let r = l2.shape().dims();
    if f.len() != 4 || r.len() != 2 || r[1] != 5 {
        candle_core::bail!("roi op: features must be (N,C,H,W) and rois (K,5), got {f:?} {r:?}");
    }
    let (n, c, h, w, k) = (f[0], f[1], f[2], f[3], r[0]);
    let (ph, pw) = pooled;
    let shape = Shape::from((k, c, ph, pw));
    let dev = s1.device().clone();
    let stream = dev.cuda_stream();
    let total = k * c * ph * pw;
    if total == 0 {
        let empty = stream.null::<f32>().map_err(ce)?;
        return Ok((CudaStorage::wrap_cuda_slice(empty, dev), shape));
    }
    let (fa, fb) = l1
        .contiguous_offsets()
        .ok_or_else(|| ce("features must be contiguous"))?;
    let (ra, rb) = l2
        .contiguous_offsets()
        .ok_or_else(|| ce("rois must be contiguous"))?;
    let feats = s1.as_cuda_slice::<f32>()?.slice(fa..fb);
    let rois = s2.as_cuda_slice::<f32>()?.slice(ra..rb);
    // Batch indices are checked on the host, as the CPU op does: K x 5 floats.
    let host_rois: Vec<f32> = stream.clone_dtoh(&rois).map_err(ce)?;
    for roi in host_rois.chunks_exact(5) {
        let b = roi[0] as i64;
        if b < 0 || b as usize >= n {
            candle_core::bail!("roi op: batch index {b} out of range");
        }
    }
    let cc = stream.context().compute_capability().map_err(ce)?;
    let ptx = kernel_ptx(cc).map_err(ce)?;
    let (func_name, module, src) = match pooling {
        Pooling::Align { .. } => ("roi_align_fwd", "organdose_roi_align", &ptx.roi_align),
        Pooling::Max => ("roi_pool_fwd", "organdose_roi_pool", &ptx.roi_pool),
    };
    let func = dev.get_or_load_custom_func(func_name, module, src)?;
    let offsets = stream.clone_htod(&[0u64]).map_err(ce)?;
    let hw = stream.clone_htod(&[h as i32, w as i32]).map_err(ce)?;
    let scales = stream.clone_htod(&[spatial_scale]).map_err(ce)?;
    let levels = stream.clone_htod(&vec![0i32; k]).map_err(ce)?;
    let mut out = stream.alloc_zeros::<f32>(total).map_err(ce)?;
    let (one, n_rois, n_batch, channels) = (1i32, k as i32, n as i32, c as i32);
    let (ph, pw) = (ph as i32, pw as i32);
    let (sr, aligned) = match pooling {
        Pooling::Align {
            sampling_ratio,
            aligned,
        } => (sampling_ratio, aligned as i32),
        Pooling::Max => (0, 0),
    };
    {
        // The builder borrows the buffers above until the launch.
        let mut b = func.builder();
        b.arg(&feats)
            .arg(&offsets)
            .arg(&hw)
            .arg(&scales)
            .arg(&one)
            .arg(&rois)
            .arg(&levels)
            .arg(&n_rois)
            .arg(&n_batch)
            .arg(&channels)
            .arg(&ph)
            .arg(&pw);
        if let Pooling::Align { .. } = pooling {
            b.arg(&sr).arg(&aligned);
        }
        b.arg(&mut out);
        // SAFETY: the argument lists match roi_align_fwd / roi_pool_fwd in
        // kernels/; batch indices were checked above and the level is 0.
        unsafe { b.launch(launch_cfg(total as u64)) }.map_err(ce)?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
}
