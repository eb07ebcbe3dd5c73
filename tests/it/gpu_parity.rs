//! GPU kernels (kernels/*.cu through src/gpu) against their CPU twins
//! (seg::roi_ops / seg::roi_heads::multiscale_pool, dosimetry::psf) on fresh
//! random inputs: relative error < 1e-5, and every output element written
//! (outputs are filled with NaN before the launch and none may remain).
//!
//! Built only with `--features cuda-kernels` (or `cuda`). Each test SKIPs, with
//! the reason, when no CUDA device can be opened (no driver, no card); with
//! ORGANDOSE_REQUIRE_GPU=1 that is a failure instead, so a run on a GPU machine
//! cannot pass by skipping. Any other GPU error (NVRTC, launch) fails.
//! GPU_PARITY_SEED=N repeats a run's inputs (each run prints its seed).
#![cfg(feature = "cuda-kernels")]

use candle_core::{Device, Tensor};
use organdose::dosimetry::psf::{gaussian_blur_3d, gaussian_taps, Boundary};
use organdose::gpu::memory::{check_fits, estimate, MemoryEstimate, MIB};
use organdose::gpu::ops::{self, DeviceLevels, HostLevel, Pooling};
use organdose::gpu::{Gpu, GpuError};
use organdose::seg::boxes::{map_level, BoxF};
use organdose::seg::config::RoiPoolKind;
use organdose::seg::roi_heads::{multiscale_pool, Levels};
use organdose::seg::roi_ops::RoiAlign;

const TOL: f64 = 1e-5;

fn gpu() -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(g) => {
            eprintln!("GPU: {}", g.describe());
            Some(g)
        }
        Err(GpuError::NoDevice(why)) => {
            if std::env::var("ORGANDOSE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("ORGANDOSE_REQUIRE_GPU=1 but no CUDA device can be opened: {why}");
            }
            eprintln!("SKIP: no CUDA device can be opened: {why}");
            None
        }
        Err(e) => panic!("a CUDA device is there but the kernels failed: {e}"),
    }
}

/// xorshift64*: fresh inputs each run, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Self {
        let seed = std::env::var("GPU_PARITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("{test}: GPU_PARITY_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Largest |gpu - cpu| / |cpu| over the elements; values below a millionth of
/// the largest |cpu| are compared at that floor (a relative error of a value
/// that cancelled to ~0 says nothing). Also the count of non-identical values.
fn rel_err(gpu: &[f32], cpu: &[f32]) -> (f64, usize) {
    assert_eq!(gpu.len(), cpu.len(), "output lengths");
    let scale = cpu.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let floor = (scale * 1e-6).max(f64::MIN_POSITIVE);
    let mut worst = 0f64;
    let mut differ = 0;
    for (&g, &c) in gpu.iter().zip(cpu) {
        if g.to_bits() != c.to_bits() {
            differ += 1;
        }
        let e = (g as f64 - c as f64).abs() / (c.abs() as f64).max(floor);
        worst = worst.max(if e.is_nan() { f64::INFINITY } else { e });
    }
    (worst, differ)
}

fn assert_parity(what: &str, gpu: &[f32], cpu: &[f32]) {
    let unwritten = gpu.iter().filter(|v| v.is_nan()).count();
    assert_eq!(
        unwritten, 0,
        "{what}: {unwritten} output elements not written"
    );
    let (e, differ) = rel_err(gpu, cpu);
    eprintln!(
        "{what}: {} values, max relative error {e:.2e}, {differ} not bit-identical",
        cpu.len()
    );
    assert!(e < TOL, "{what}: max relative error {e:e} >= {TOL:e}");
}

fn download(gpu: &Gpu, d: &cudarc::driver::CudaSlice<f32>) -> Vec<f32> {
    gpu.stream().clone_dtoh(d).expect("device to host")
}

fn nan_buffer(gpu: &Gpu, n: usize) -> cudarc::driver::CudaSlice<f32> {
    gpu.stream()
        .clone_htod(&vec![f32::NAN; n])
        .expect("host to device")
}

/// FPN-like levels for a `side` x `side` image: P2..P5 at 1/4 .. 1/32.
struct Pyramid {
    data: Vec<Vec<f32>>,
    dims: Vec<[usize; 4]>,
    scales: Vec<f32>,
}

fn pyramid(rng: &mut Rng, n: usize, c: usize, side: usize) -> Pyramid {
    let mut p = Pyramid {
        data: vec![],
        dims: vec![],
        scales: vec![],
    };
    for l in 2..=5 {
        let s = side >> l;
        p.dims.push([n, c, s, s]);
        p.data.push(rng.vec(n * c * s * s, -2.0, 3.0));
        p.scales.push(1.0 / (1 << l) as f32);
    }
    p
}

impl Pyramid {
    fn host(&self) -> Vec<HostLevel<'_>> {
        (0..self.dims.len())
            .map(|l| HostLevel {
                data: &self.data[l],
                dims: self.dims[l],
                scale: self.scales[l],
            })
            .collect()
    }
    fn tensors(&self) -> Vec<Tensor> {
        self.data
            .iter()
            .zip(&self.dims)
            .map(|(d, &dm)| {
                Tensor::from_vec(d.clone(), (dm[0], dm[1], dm[2], dm[3]), &Device::Cpu)
                    .expect("tensor")
            })
            .collect()
    }
}

/// Boxes of every kind: inside, crossing the border, tiny, image-sized, so
/// all four levels and the bilinear edge cases are hit.
fn random_boxes(rng: &mut Rng, n_img: usize, side: f32, k: usize) -> Vec<(usize, BoxF)> {
    (0..k)
        .map(|i| {
            let b = (rng.next() % n_img as u64) as usize;
            let w = match i % 4 {
                0 => rng.uniform(0.5, 8.0),
                1 => rng.uniform(8.0, side / 3.0),
                2 => rng.uniform(side / 3.0, side),
                _ => rng.uniform(side, 1.4 * side),
            };
            let h = w * rng.uniform(0.5, 2.0);
            let x1 = rng.uniform(-0.2 * side, side);
            let y1 = rng.uniform(-0.2 * side, side);
            (b, [x1, y1, x1 + w, y1 + h])
        })
        .collect()
}

fn cpu_multiscale(
    p: &Pyramid,
    boxes: &[(usize, BoxF)],
    size: usize,
    kind: RoiPoolKind,
    sr: i32,
) -> Vec<f32> {
    let levels = Levels {
        scales: p.scales.clone(),
        k_min: 2,
        k_max: 5,
    };
    multiscale_pool(&p.tensors(), &levels, boxes, size, kind, sr)
        .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
        .expect("CPU multiscale_pool")
}

/// The GPU side with a NaN-filled output (every element must be written),
/// and the host wrapper, which must agree with it.
fn gpu_multiscale(
    gpu: &Gpu,
    p: &Pyramid,
    boxes: &[(usize, BoxF)],
    size: usize,
    kind: RoiPoolKind,
    sr: i32,
) -> Vec<f32> {
    let dl = DeviceLevels::upload(gpu, &p.host()).expect("upload levels");
    let mut rois = Vec::new();
    let mut lv = Vec::new();
    for (b, bx) in boxes {
        rois.extend_from_slice(&[*b as f32, bx[0], bx[1], bx[2], bx[3]]);
        lv.push(map_level(bx, 2, 5).min(3));
    }
    let pooling = match kind {
        RoiPoolKind::Align => Pooling::Align {
            sampling_ratio: sr,
            aligned: false,
        },
        RoiPoolKind::MaxPool => Pooling::Max,
    };
    let total = ops::pooled_len(&dl, boxes.len(), (size, size));
    let mut out = nan_buffer(gpu, total);
    ops::roi_pool_into(gpu, &dl, &rois, &lv, (size, size), pooling, &mut out).expect("launch");
    let v = download(gpu, &out);
    let host = ops::multiscale_pool(gpu, &p.host(), (2, 5), boxes, size, kind, sr)
        .expect("host multiscale_pool");
    assert_eq!(
        host.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        v.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "host wrapper and device-buffer launch differ"
    );
    v
}

// Each test makes its inputs and CPU references before it looks for a device,
// so that on a machine without one the CPU half still runs (and a mistake in
// it shows here, not on the scarce GPU machine).

/// A CPU reference must be finite, non-trivial and equal to itself by the
/// measure the GPU is held to.
fn check_reference(what: &str, cpu: &[f32]) {
    assert!(!cpu.is_empty(), "{what}: empty reference");
    assert!(
        cpu.iter().all(|v| v.is_finite()),
        "{what}: non-finite reference"
    );
    assert!(cpu.iter().any(|&v| v != 0.0), "{what}: all-zero reference");
    assert_eq!(rel_err(cpu, cpu), (0.0, 0), "{what}");
}

#[test]
fn roi_align_multilevel_matches_cpu() {
    let mut rng = Rng::new("roi_align_multilevel");
    let p = pyramid(&mut rng, 3, 6, 128);
    let boxes = random_boxes(&mut rng, 3, 128.0, 64);
    // torchvision's box (7, sr 2) and mask (14) settings, the paper's 28, and
    // the adaptive sampling ratio (0: ceil(bin size) samples).
    let cases: Vec<(usize, i32, Vec<f32>)> = [(7, 2), (14, 2), (28, 2), (7, 0), (5, 3)]
        .into_iter()
        .map(|(size, sr)| {
            (
                size,
                sr,
                cpu_multiscale(&p, &boxes, size, RoiPoolKind::Align, sr),
            )
        })
        .collect();
    for (size, sr, cpu) in &cases {
        check_reference(&format!("roi_align {size} sr {sr}"), cpu);
    }
    let Some(gpu) = gpu() else { return };
    for (size, sr, cpu) in &cases {
        let g = gpu_multiscale(&gpu, &p, &boxes, *size, RoiPoolKind::Align, *sr);
        assert_parity(&format!("roi_align {size}x{size} sr {sr}"), &g, cpu);
    }
}

#[test]
fn roi_align_aligned_single_level_matches_cpu() {
    let mut rng = Rng::new("roi_align_aligned");
    let (n, c, h, w) = (2, 5, 23, 31);
    let feats = rng.vec(n * c * h * w, -1.0, 1.0);
    let boxes = random_boxes(&mut rng, n, 60.0, 40);
    let mut rois = Vec::new();
    for (b, bx) in &boxes {
        rois.extend_from_slice(&[*b as f32, bx[0], bx[1], bx[2], bx[3]]);
    }
    let k = boxes.len();
    let cases: Vec<(bool, i32, Vec<f32>)> = [(true, 2), (true, 0), (false, 1)]
        .into_iter()
        .map(|(aligned, sr)| {
            let op = RoiAlign {
                pooled_h: 6,
                pooled_w: 9,
                spatial_scale: 0.5,
                sampling_ratio: sr,
                aligned,
            };
            let f = Tensor::from_vec(feats.clone(), (n, c, h, w), &Device::Cpu).expect("tensor");
            let r = Tensor::from_vec(rois.clone(), (k, 5), &Device::Cpu).expect("tensor");
            let cpu: Vec<f32> = f
                .apply_op2_no_bwd(&r, &op)
                .and_then(|t| t.flatten_all()?.to_vec1())
                .expect("CPU roi_align");
            check_reference(&format!("roi_align aligned={aligned} sr {sr}"), &cpu);
            (aligned, sr, cpu)
        })
        .collect();
    let Some(gpu) = gpu() else { return };
    let level = [HostLevel {
        data: &feats,
        dims: [n, c, h, w],
        scale: 0.5,
    }];
    let dl = DeviceLevels::upload(&gpu, &level).expect("upload");
    for (aligned, sr, cpu) in &cases {
        let mut out = nan_buffer(&gpu, k * c * 6 * 9);
        let pooling = Pooling::Align {
            sampling_ratio: *sr,
            aligned: *aligned,
        };
        ops::roi_pool_into(&gpu, &dl, &rois, &vec![0; k], (6, 9), pooling, &mut out)
            .expect("launch");
        assert_parity(
            &format!("roi_align 6x9 aligned={aligned} sr {sr}"),
            &download(&gpu, &out),
            cpu,
        );
    }
}

#[test]
fn roi_max_pool_28_multilevel_matches_cpu() {
    let mut rng = Rng::new("roi_max_pool");
    let p = pyramid(&mut rng, 2, 4, 256);
    let boxes = random_boxes(&mut rng, 2, 256.0, 48);
    let cases: Vec<(usize, Vec<f32>)> = [28, 7, 3]
        .into_iter()
        .map(|size| {
            (
                size,
                cpu_multiscale(&p, &boxes, size, RoiPoolKind::MaxPool, 0),
            )
        })
        .collect();
    for (size, cpu) in &cases {
        check_reference(&format!("roi_pool {size}"), cpu);
    }
    let Some(gpu) = gpu() else { return };
    for (size, cpu) in &cases {
        let g = gpu_multiscale(&gpu, &p, &boxes, *size, RoiPoolKind::MaxPool, 0);
        assert_parity(&format!("roi_pool {size}x{size}"), &g, cpu);
    }
    // The size defaults to the paper's 28.
    let mut rois = Vec::new();
    let mut lv = Vec::new();
    for (b, bx) in &boxes {
        rois.extend_from_slice(&[*b as f32, bx[0], bx[1], bx[2], bx[3]]);
        lv.push(map_level(bx, 2, 5).min(3));
    }
    let g = ops::roi_max_pool(&gpu, &p.host(), &rois, &lv, None).expect("roi_max_pool");
    assert_parity("roi_max_pool default size", &g, &cases[0].1);
}

/// The network's path (feature `cuda`): candle CUDA tensors through
/// `multiscale_pool`, i.e. the RoI CustomOps' `cuda_fwd` on candle's stream,
/// plus candle's own cat / index_select around them.
#[cfg(feature = "cuda")]
#[test]
fn candle_cuda_multiscale_pool_matches_cpu() {
    let mut rng = Rng::new("candle_cuda_multiscale");
    let p = pyramid(&mut rng, 2, 8, 128);
    let boxes = random_boxes(&mut rng, 2, 128.0, 32);
    let cases: Vec<(RoiPoolKind, usize, i32, Vec<f32>)> = [
        (RoiPoolKind::Align, 7, 2),
        (RoiPoolKind::Align, 14, 0),
        (RoiPoolKind::MaxPool, 28, 0),
    ]
    .into_iter()
    .map(|(kind, size, sr)| (kind, size, sr, cpu_multiscale(&p, &boxes, size, kind, sr)))
    .collect();
    let Some(_gpu) = gpu() else { return };
    let dev = Device::new_cuda(0).expect("candle CUDA device");
    let feats: Vec<Tensor> = p
        .tensors()
        .iter()
        .map(|t| t.to_device(&dev))
        .collect::<candle_core::Result<_>>()
        .expect("features to the device");
    let levels = Levels {
        scales: p.scales.clone(),
        k_min: 2,
        k_max: 5,
    };
    for (kind, size, sr, cpu) in &cases {
        let g: Vec<f32> = multiscale_pool(&feats, &levels, &boxes, *size, *kind, *sr)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .expect("multiscale_pool on CUDA");
        assert_parity(
            &format!("candle CUDA {kind:?} {size}x{size} sr {sr}"),
            &g,
            cpu,
        );
    }
}

#[test]
fn roi_ops_refuse_bad_batch_index() {
    let Some(gpu) = gpu() else { return };
    let data = vec![1f32; 2 * 8 * 8];
    let level = [HostLevel {
        data: &data,
        dims: [2, 1, 8, 8],
        scale: 1.0,
    }];
    let r = ops::roi_pool_host(
        &gpu,
        &level,
        &[2.0, 0.0, 0.0, 4.0, 4.0],
        &[0],
        (2, 2),
        Pooling::Max,
    );
    assert!(matches!(r, Err(GpuError::Input(_))), "{r:?}");
}

/// CPU blur along one axis only: the other axes get an infinite spacing, for
/// which `gaussian_taps` is the identity.
fn cpu_one_axis(
    data: &[f32],
    dims: [usize; 3],
    axis: usize,
    spacing: f64,
    sigma: f64,
    b: Boundary,
) -> Vec<f32> {
    let mut sp = [f64::INFINITY; 3];
    sp[axis] = spacing;
    let mut v = data.to_vec();
    assert!(gaussian_blur_3d(&mut v, dims, sp, sigma, b));
    v
}

#[test]
fn gaussian_single_passes_write_every_voxel_and_match_cpu() {
    let mut rng = Rng::new("gaussian_pass");
    // Odd sizes, and an axis shorter than the kernel radius (z: 4 voxels,
    // radius 8 at sigma 3 mm / 2 mm), so the boundary rule decides a lot.
    let dims = [37, 23, 4];
    let n: usize = dims.iter().product();
    let data = rng.vec(n, 0.0, 1000.0);
    let mut cases = Vec::new();
    for (axis, spacing) in [(0, 0.9), (1, 1.7), (2, 2.0)] {
        for b in [Boundary::Zero, Boundary::Clamp] {
            let cpu = cpu_one_axis(&data, dims, axis, spacing, 3.0, b);
            check_reference(&format!("gaussian pass axis {axis} {b:?}"), &cpu);
            assert_ne!(cpu, data, "the pass must change the data");
            cases.push((axis, gaussian_taps(3.0, spacing), b, cpu));
        }
    }
    let Some(gpu) = gpu() else { return };
    let src = gpu.stream().clone_htod(&data).expect("upload");
    for (axis, taps, b, cpu) in &cases {
        let mut dst = nan_buffer(&gpu, n);
        ops::gaussian_pass_into(&gpu, &src, &mut dst, dims, *axis, taps, *b).expect("launch");
        assert_parity(
            &format!("gaussian pass axis {axis} {b:?} ({} taps)", taps.len()),
            &download(&gpu, &dst),
            cpu,
        );
    }
}

#[test]
fn gaussian_3d_anisotropic_matches_cpu() {
    let mut rng = Rng::new("gaussian_3d");
    let dims = [41, 29, 19];
    let n: usize = dims.iter().product();
    // A mask-like input (0/1 with fractions) and a SPECT-like one.
    let mask: Vec<f32> = (0..n)
        .map(|_| match rng.next() % 4 {
            0 => 1.0,
            1 => rng.uniform(0.0, 1.0),
            _ => 0.0,
        })
        .collect();
    let spect = rng.vec(n, 0.0, 5.0e4);
    let spacing = [0.9, 1.7, 2.6];
    let mut cases = Vec::new();
    for (name, data) in [("mask", &mask), ("spect", &spect)] {
        for b in [Boundary::Zero, Boundary::Clamp] {
            for sigma in [3.0, 6.0] {
                let mut cpu = data.clone();
                assert!(gaussian_blur_3d(&mut cpu, dims, spacing, sigma, b));
                check_reference(&format!("gaussian 3-D {name} {sigma} {b:?}"), &cpu);
                cases.push((name, data, b, sigma, cpu));
            }
        }
    }
    let Some(gpu) = gpu() else { return };
    for (name, data, b, sigma, cpu) in &cases {
        let (b, sigma) = (*b, *sigma);
        // Host wrapper.
        let mut g = data.to_vec();
        assert!(ops::gaussian_blur_3d(&gpu, &mut g, dims, spacing, sigma, b).expect("blur"));
        assert_parity(&format!("gaussian 3-D {name} sigma {sigma} {b:?}"), &g, cpu);
        // Device variant with a NaN scratch buffer: three passes end in the
        // scratch and are copied back; nothing may stay unwritten.
        let mut d = gpu.stream().clone_htod(data.as_slice()).expect("upload");
        let mut scratch = nan_buffer(&gpu, n);
        assert!(
            ops::gaussian_blur_3d_device(&gpu, &mut d, &mut scratch, dims, spacing, sigma, b)
                .expect("blur")
        );
        assert_parity(
            &format!("gaussian 3-D device {name} sigma {sigma} {b:?}"),
            &download(&gpu, &d),
            cpu,
        );
    }
    // The twin's edge cases: sigma 0 is the identity, a wrong length is refused.
    let mut e = vec![1f32, 2.0, 3.0];
    assert!(
        ops::gaussian_blur_3d(&gpu, &mut e, [3, 1, 1], [1.0; 3], 0.0, Boundary::Zero)
            .expect("blur")
    );
    assert_eq!(e, vec![1.0, 2.0, 3.0]);
    assert!(
        !ops::gaussian_blur_3d(&gpu, &mut e, [4, 1, 1], [1.0; 3], 1.0, Boundary::Zero)
            .expect("blur")
    );
}

#[test]
fn memory_check_uses_the_device_numbers() {
    let Some(gpu) = gpu() else { return };
    let (free, total) = gpu.mem_info().expect("mem_get_info");
    eprintln!(
        "device memory: {} MiB free of {} MiB",
        free / MIB,
        total / MIB
    );
    assert!(free <= total && total > 0);
    let small = estimate(None, 1, &[[128, 128, 128]]);
    assert!(gpu.check_fits(&small).is_ok());
    let huge = MemoryEstimate {
        total: total + MIB,
        ..small
    };
    assert!(check_fits(&huge, free, total).is_err());
    assert!(matches!(
        gpu.check_fits(&huge),
        Err(GpuError::OutOfMemory(_))
    ));
}
