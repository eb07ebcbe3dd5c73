//! Launch wrappers for the kernels of `kernels/`: host-slice versions that
//! mirror the CPU twins' signatures, and device-buffer versions (`*_into`,
//! `*_device`) that keep data on the card between stages.
//!
//! Arguments are checked here, on the host, as the CPU twins check them, so a
//! kernel never sees an index that would read outside its buffers.

use super::device::driver_error;
use super::{Gpu, GpuError};
use crate::boxes::{map_level, BoxF};
use crate::config::RoiPoolKind;
use crate::taps::{gaussian_taps, Boundary};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

const BLOCK: u32 = 256;
/// Grid-stride loops in every kernel: any grid size covers every element, so
/// the grid is capped well inside every card's limit.
const MAX_BLOCKS: u64 = 65_535;

pub(crate) fn launch_cfg(total: u64) -> LaunchConfig {
    let blocks = total.div_ceil(BLOCK as u64).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn to_i32(v: usize, what: &str) -> Result<i32, GpuError> {
    i32::try_from(v).map_err(|_| GpuError::Input(format!("{what} = {v} exceeds the kernel's int")))
}

/// One feature level on the host: (N, C, H, W) row-major and its spatial scale.
#[derive(Debug, Clone, Copy)]
pub struct HostLevel<'a> {
    pub data: &'a [f32],
    pub dims: [usize; 4],
    pub scale: f32,
}

/// Feature levels on the device: the levels' data back to back and the tables
/// the kernels index them with.
pub struct DeviceLevels {
    pub feats: CudaSlice<f32>,
    offsets: CudaSlice<u64>,
    hw: CudaSlice<i32>,
    scales: CudaSlice<f32>,
    pub n_levels: usize,
    /// Batch size and channels, the same on every level.
    pub n: usize,
    pub c: usize,
}

impl DeviceLevels {
    pub fn upload(gpu: &Gpu, levels: &[HostLevel]) -> Result<Self, GpuError> {
        let first = levels
            .first()
            .ok_or_else(|| GpuError::Input("RoI pooling: no feature level".into()))?;
        let [n, c, _, _] = first.dims;
        let mut all = Vec::new();
        let mut offsets = Vec::with_capacity(levels.len());
        let mut hw = Vec::with_capacity(2 * levels.len());
        for (l, lv) in levels.iter().enumerate() {
            let [ln, lc, h, w] = lv.dims;
            if ln != n || lc != c || h == 0 || w == 0 || lv.data.len() != n * c * h * w {
                return Err(GpuError::Input(format!(
                    "RoI pooling: level {l} is {:?} with {} values; every level must be (N={n}, C={c}, H>0, W>0) and filled",
                    lv.dims,
                    lv.data.len()
                )));
            }
            offsets.push(all.len() as u64);
            hw.push(to_i32(h, "feature height")?);
            hw.push(to_i32(w, "feature width")?);
            all.extend_from_slice(lv.data);
        }
        let s = gpu.stream();
        let scales: Vec<f32> = levels.iter().map(|l| l.scale).collect();
        Ok(DeviceLevels {
            feats: s.clone_htod(&all).map_err(driver_error)?,
            offsets: s.clone_htod(&offsets).map_err(driver_error)?,
            hw: s.clone_htod(&hw).map_err(driver_error)?,
            scales: s.clone_htod(&scales).map_err(driver_error)?,
            n_levels: levels.len(),
            n,
            c,
        })
    }
}

/// Which pooling and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pooling {
    /// torchvision `roi_align` (aligned = false in MultiScaleRoIAlign).
    Align { sampling_ratio: i32, aligned: bool },
    /// torchvision `roi_pool` (max).
    Max,
}

/// Output length of pooling `k` RoIs.
pub fn pooled_len(levels: &DeviceLevels, k: usize, pooled: (usize, usize)) -> usize {
    k * levels.c * pooled.0 * pooled.1
}

/// Pools RoI r (`rois[5r..5r+5]`: batch, x1, y1, x2, y2) from level
/// `roi_level[r]` into `out`, (K, C, PH, PW). Every element of `out[..K*C*PH*PW]`
/// is written. Errors as the CPU twin on a bad batch index.
pub fn roi_pool_into(
    gpu: &Gpu,
    levels: &DeviceLevels,
    rois: &[f32],
    roi_level: &[usize],
    pooled: (usize, usize),
    pooling: Pooling,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let k = roi_level.len();
    if rois.len() != 5 * k {
        return Err(GpuError::Input(format!(
            "RoI pooling: {} RoI values for {k} levels (5 per RoI)",
            rois.len()
        )));
    }
    if pooled.0 == 0 || pooled.1 == 0 {
        return Err(GpuError::Input("RoI pooling: output size 0".into()));
    }
    for (r, (roi, &l)) in rois.chunks_exact(5).zip(roi_level).enumerate() {
        let b = roi[0] as i64;
        if b < 0 || b as usize >= levels.n {
            return Err(GpuError::Input(format!(
                "RoI pooling: batch index {b} out of range (RoI {r})"
            )));
        }
        if l >= levels.n_levels {
            return Err(GpuError::Input(format!(
                "RoI pooling: level {l} of RoI {r}, only {} levels",
                levels.n_levels
            )));
        }
    }
    let total = pooled_len(levels, k, pooled);
    if out.len() < total {
        return Err(GpuError::Input(format!(
            "RoI pooling: output buffer of {} for {total} values",
            out.len()
        )));
    }
    if total == 0 {
        return Ok(());
    }
    let s = gpu.stream();
    let lv: Vec<i32> = roi_level.iter().map(|&l| l as i32).collect();
    let d_rois = s.clone_htod(rois).map_err(driver_error)?;
    let d_lv = s.clone_htod(&lv).map_err(driver_error)?;
    let n_levels = to_i32(levels.n_levels, "levels")?;
    let n_rois = to_i32(k, "RoIs")?;
    let n_batch = to_i32(levels.n, "batch")?;
    let channels = to_i32(levels.c, "channels")?;
    let ph = to_i32(pooled.0, "pooled height")?;
    let pw = to_i32(pooled.1, "pooled width")?;
    let cfg = launch_cfg(total as u64);
    match pooling {
        Pooling::Align {
            sampling_ratio,
            aligned,
        } => {
            let aligned = aligned as i32;
            let mut b = s.launch_builder(&gpu.roi_align_fn);
            b.arg(&levels.feats)
                .arg(&levels.offsets)
                .arg(&levels.hw)
                .arg(&levels.scales)
                .arg(&n_levels)
                .arg(&d_rois)
                .arg(&d_lv)
                .arg(&n_rois)
                .arg(&n_batch)
                .arg(&channels)
                .arg(&ph)
                .arg(&pw)
                .arg(&sampling_ratio)
                .arg(&aligned)
                .arg(out);
            // SAFETY: the argument list matches roi_align_fwd's signature in
            // crates/kernels/kernels/roi_align.cu; indices were checked above.
            unsafe { b.launch(cfg) }.map_err(driver_error)?;
        }
        Pooling::Max => {
            let mut b = s.launch_builder(&gpu.roi_pool_fn);
            b.arg(&levels.feats)
                .arg(&levels.offsets)
                .arg(&levels.hw)
                .arg(&levels.scales)
                .arg(&n_levels)
                .arg(&d_rois)
                .arg(&d_lv)
                .arg(&n_rois)
                .arg(&n_batch)
                .arg(&channels)
                .arg(&ph)
                .arg(&pw)
                .arg(out);
            // SAFETY: as above, for roi_pool_fwd in crates/kernels/kernels/roi_pool.cu.
            unsafe { b.launch(cfg) }.map_err(driver_error)?;
        }
    }
    Ok(())
}

/// Host version: uploads, pools, returns (K, C, PH, PW) as a Vec.
pub fn roi_pool_host(
    gpu: &Gpu,
    levels: &[HostLevel],
    rois: &[f32],
    roi_level: &[usize],
    pooled: (usize, usize),
    pooling: Pooling,
) -> Result<Vec<f32>, GpuError> {
    let dl = DeviceLevels::upload(gpu, levels)?;
    let total = pooled_len(&dl, roi_level.len(), pooled);
    if total == 0 {
        return Ok(Vec::new());
    }
    let s = gpu.stream();
    let mut out = s.alloc_zeros::<f32>(total).map_err(driver_error)?;
    roi_pool_into(gpu, &dl, rois, roi_level, pooled, pooling, &mut out)?;
    s.clone_dtoh(&out).map_err(driver_error)
}

/// The paper's RoI pooling size (torchvision's box head pools 7 x 7).
pub(crate) const PAPER_POOL_SIZE: usize = 28;

/// RoI max pooling on the host's data, `size` x `size` (None: the paper's 28).
pub fn roi_max_pool(
    gpu: &Gpu,
    levels: &[HostLevel],
    rois: &[f32],
    roi_level: &[usize],
    size: Option<usize>,
) -> Result<Vec<f32>, GpuError> {
    let s = size.unwrap_or(PAPER_POOL_SIZE);
    roi_pool_host(gpu, levels, rois, roi_level, (s, s), Pooling::Max)
}

/// Device twin of `seg::roi_heads::multiscale_pool`: each (image, box) pooled
/// from the level torchvision's LevelMapper picks, (K, C, size, size) in input
/// order. `levels[l]` must be level k_min + l; `(k_min, k_max)` as `Levels`.
pub fn multiscale_pool(
    gpu: &Gpu,
    levels: &[HostLevel],
    (k_min, k_max): (i32, i32),
    boxes: &[(usize, BoxF)],
    size: usize,
    kind: RoiPoolKind,
    sampling_ratio: i32,
) -> Result<Vec<f32>, GpuError> {
    if levels.is_empty() {
        return Err(GpuError::Input("RoI pooling: no feature level".into()));
    }
    let mut rois = Vec::with_capacity(5 * boxes.len());
    let mut lv = Vec::with_capacity(boxes.len());
    for (b, bx) in boxes {
        rois.extend_from_slice(&[*b as f32, bx[0], bx[1], bx[2], bx[3]]);
        lv.push(map_level(bx, k_min, k_max).min(levels.len() - 1));
    }
    let pooling = match kind {
        RoiPoolKind::Align => Pooling::Align {
            sampling_ratio,
            aligned: false,
        },
        RoiPoolKind::MaxPool => Pooling::Max,
    };
    roi_pool_host(gpu, levels, &rois, &lv, (size, size), pooling)
}

/// One 1-D Gaussian pass along `axis` (0 = x), `src` to `dst`, every element of
/// `dst[..nx*ny*nz]` written. `taps` as `psf::gaussian_taps` makes them.
pub fn gaussian_pass_into(
    gpu: &Gpu,
    src: &CudaSlice<f32>,
    dst: &mut CudaSlice<f32>,
    dims: [usize; 3],
    axis: usize,
    taps: &[f32],
    boundary: Boundary,
) -> Result<(), GpuError> {
    let n: usize = dims.iter().product();
    if axis > 2 || taps.len().is_multiple_of(2) || src.len() < n || dst.len() < n {
        return Err(GpuError::Input(format!(
            "Gaussian pass: axis {axis}, {} taps (must be odd), buffers {} / {} for {n} voxels",
            taps.len(),
            src.len(),
            dst.len()
        )));
    }
    if n == 0 {
        return Ok(());
    }
    let s = gpu.stream();
    let d_taps = s.clone_htod(taps).map_err(driver_error)?;
    let (nx, ny, nz) = (dims[0] as u64, dims[1] as u64, dims[2] as u64);
    let axis = axis as i32;
    let n_taps = to_i32(taps.len(), "taps")?;
    let bnd: i32 = match boundary {
        Boundary::Zero => 0,
        Boundary::Clamp => 1,
    };
    let mut b = s.launch_builder(&gpu.gaussian_fn);
    b.arg(src)
        .arg(dst)
        .arg(&nx)
        .arg(&ny)
        .arg(&nz)
        .arg(&axis)
        .arg(&d_taps)
        .arg(&n_taps)
        .arg(&bnd);
    // SAFETY: matches gaussian_pass in crates/kernels/kernels/gaussian_psf.cu; both buffers
    // hold at least nx*ny*nz values (checked above).
    unsafe { b.launch(launch_cfg(n as u64)) }.map_err(driver_error)?;
    Ok(())
}

/// Device twin of `psf::gaussian_blur_3d` on a device buffer: x, y, z passes
/// ping-ponging with `scratch` (same length); the result ends in `data`.
/// Returns false, as the twin, when the length does not match `dims`.
pub fn gaussian_blur_3d_device(
    gpu: &Gpu,
    data: &mut CudaSlice<f32>,
    scratch: &mut CudaSlice<f32>,
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    sigma_mm: f64,
    boundary: Boundary,
) -> Result<bool, GpuError> {
    let n = dims[0]
        .checked_mul(dims[1])
        .and_then(|v| v.checked_mul(dims[2]));
    if n != Some(data.len()) || data.is_empty() || scratch.len() < data.len() {
        return Ok(false);
    }
    // true: the current image is in `data`.
    let mut in_data = true;
    for (axis, &spacing) in spacing_mm.iter().enumerate() {
        let taps = gaussian_taps(sigma_mm, spacing);
        if taps.len() == 1 {
            continue;
        }
        if in_data {
            gaussian_pass_into(gpu, data, scratch, dims, axis, &taps, boundary)?;
        } else {
            gaussian_pass_into(gpu, scratch, data, dims, axis, &taps, boundary)?;
        }
        in_data = !in_data;
    }
    if !in_data {
        gpu.stream()
            .memcpy_dtod(&*scratch, data)
            .map_err(driver_error)?;
    }
    Ok(true)
}

/// Host twin of `psf::gaussian_blur_3d`: blurs `data` in place on the device.
pub fn gaussian_blur_3d(
    gpu: &Gpu,
    data: &mut [f32],
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    sigma_mm: f64,
    boundary: Boundary,
) -> Result<bool, GpuError> {
    let n = dims[0]
        .checked_mul(dims[1])
        .and_then(|v| v.checked_mul(dims[2]));
    if n != Some(data.len()) || data.is_empty() {
        return Ok(false);
    }
    let s = gpu.stream();
    let mut d = s.clone_htod(&*data).map_err(driver_error)?;
    let mut scratch = s.alloc_zeros::<f32>(data.len()).map_err(driver_error)?;
    gaussian_blur_3d_device(
        gpu,
        &mut d,
        &mut scratch,
        dims,
        spacing_mm,
        sigma_mm,
        boundary,
    )?;
    s.memcpy_dtoh(&d, data).map_err(driver_error)?;
    Ok(true)
}
