//! Separable 3-D Gaussian blur in millimetres on anisotropic voxels.
//!
//! This is the CPU twin of the CUDA Gaussian PSF kernel (`kernels/`): a plain function
//! over `f32` slices, one 1-D pass per axis (x, then y, then z), `f32` weights and
//! `f32` accumulation, so the device version can be compared voxel by voxel.
//!
//! Kernel: per axis, `w[t] = exp(-(t*spacing)^2 / (2 sigma^2))` for integer taps
//! `|t| <= ceil(5 sigma / spacing)`, normalised so the taps sum to 1 (a constant image
//! stays constant away from the borders, and the total is conserved). At 5 sigma the
//! truncation removes 6e-7 of the mass and 1.5e-5 of the variance.
//!
//! Boundary rule ([`Boundary`]): what a tap that falls outside the grid reads.
//! - `Zero`: outside the grid is 0. Mass near the border leaks out of the grid, as
//!   activity blurred out of a field of view would; this is the rule for masks.
//! - `Clamp`: outside reads the nearest edge voxel (replicate padding): a constant image
//!   stays exactly constant everywhere.

pub use organdose_kernels::taps::{gaussian_taps, gaussian_taps_to, Boundary};

/// Blurs `data` (layout `i + nx*(j + ny*k)`, `dims = [nx, ny, nz]`) in place with a
/// Gaussian of `sigma_mm` (isotropic in mm), voxel size `spacing_mm`.
///
/// Panics never; a `data` whose length does not match `dims` is left unchanged and
/// `false` is returned.
pub fn gaussian_blur_3d(
    data: &mut [f32],
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    sigma_mm: f64,
    boundary: Boundary,
) -> bool {
    gaussian_blur_3d_axes(data, dims, spacing_mm, [sigma_mm; 3], boundary)
}

/// As [`gaussian_blur_3d`] with one sigma (mm) per axis, e.g. an axial resolution
/// that differs from the in-plane one.
///
/// Each output voxel is `sum_t w[t] * src[q(t)]`, accumulated in `f32` from 0 in tap
/// order, as the CUDA kernel does; the loops run along whole rows and planes (no
/// index division, contiguous reads) and the planes are shared among threads, which
/// changes the speed, not one bit of the result.
pub fn gaussian_blur_3d_axes(
    data: &mut [f32],
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    sigma_mm: [f64; 3],
    boundary: Boundary,
) -> bool {
    let n = dims[0]
        .checked_mul(dims[1])
        .and_then(|v| v.checked_mul(dims[2]));
    if n != Some(data.len()) || data.is_empty() {
        return false;
    }
    let taps: [Vec<f32>; 3] = std::array::from_fn(|a| gaussian_taps(sigma_mm[a], spacing_mm[a]));
    blur_3d_with_taps(data, dims, &taps, boundary)
}

/// Separable blur of `data` with the given 1-D taps per axis (odd lengths, centred).
pub(crate) fn blur_3d_with_taps(
    data: &mut [f32],
    dims: [usize; 3],
    taps: &[Vec<f32>; 3],
    boundary: Boundary,
) -> bool {
    let n = dims[0]
        .checked_mul(dims[1])
        .and_then(|v| v.checked_mul(dims[2]));
    if n != Some(data.len()) || data.is_empty() || taps.iter().any(|t| t.len() % 2 == 0) {
        return false;
    }
    let mut scratch: Vec<f32> = Vec::new();
    for axis in 0..3 {
        let taps = &taps[axis];
        if taps.len() == 1 || dims[axis] == 0 {
            continue;
        }
        if scratch.is_empty() {
            scratch = vec![0f32; data.len()];
        }
        blur_axis(data, &mut scratch, dims, axis, taps, boundary);
        data.copy_from_slice(&scratch);
    }
    true
}

/// Source index along an axis of length `len` for tap offset `q`, or `None` when the
/// tap reads 0 (outside, zero boundary).
#[inline]
fn tap_source(q: i64, len: i64, boundary: Boundary) -> Option<usize> {
    if (0..len).contains(&q) {
        Some(q as usize)
    } else {
        match boundary {
            Boundary::Zero => None,
            Boundary::Clamp => Some(q.clamp(0, len - 1) as usize),
        }
    }
}

/// One 1-D pass along `axis`, reading `src`, writing `dst`.
fn blur_axis(
    src: &[f32],
    dst: &mut [f32],
    dims: [usize; 3],
    axis: usize,
    taps: &[f32],
    boundary: Boundary,
) {
    use rayon::prelude::*;
    let [nx, ny, _] = dims;
    let plane = nx * ny;
    let radius = (taps.len() / 2) as i64;
    match axis {
        0 => dst.par_chunks_mut(plane).enumerate().for_each(|(k, out)| {
            for (j, row) in out.chunks_mut(nx).enumerate() {
                let line = &src[(k * ny + j) * nx..][..nx];
                for (i, o) in row.iter_mut().enumerate() {
                    let mut acc = 0f32;
                    for (ti, &w) in taps.iter().enumerate() {
                        if let Some(q) =
                            tap_source(i as i64 + ti as i64 - radius, nx as i64, boundary)
                        {
                            acc += w * line[q];
                        }
                    }
                    *o = acc;
                }
            }
        }),
        1 => dst.par_chunks_mut(plane).enumerate().for_each(|(k, out)| {
            let slab = &src[k * plane..][..plane];
            for (j, row) in out.chunks_mut(nx).enumerate() {
                row.iter_mut().for_each(|o| *o = 0.0);
                for (ti, &w) in taps.iter().enumerate() {
                    if let Some(q) = tap_source(j as i64 + ti as i64 - radius, ny as i64, boundary)
                    {
                        let s = &slab[q * nx..][..nx];
                        row.iter_mut().zip(s).for_each(|(o, &v)| *o += w * v);
                    }
                }
            }
        }),
        _ => {
            let nz = dims[2] as i64;
            dst.par_chunks_mut(plane).enumerate().for_each(|(k, out)| {
                out.iter_mut().for_each(|o| *o = 0.0);
                for (ti, &w) in taps.iter().enumerate() {
                    if let Some(q) = tap_source(k as i64 + ti as i64 - radius, nz, boundary) {
                        let s = &src[q * plane..][..plane];
                        out.iter_mut().zip(s).for_each(|(o, &v)| *o += w * v);
                    }
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_second_moment_is_sigma_squared_per_axis_and_total_conserved() {
        // Anisotropic voxels: 1 x 1.5 x 2 mm; sigma 3 mm.
        let dims = [41, 31, 25];
        let sp = [1.0, 1.5, 2.0];
        let mut d = vec![0f32; dims[0] * dims[1] * dims[2]];
        let c = [20usize, 15, 12];
        d[c[0] + dims[0] * (c[1] + dims[1] * c[2])] = 1000.0;
        assert!(gaussian_blur_3d(&mut d, dims, sp, 3.0, Boundary::Zero));
        let total: f64 = d.iter().map(|&v| v as f64).sum();
        assert!(
            (total - 1000.0).abs() < 1e-3 * 1000.0 * 1e-2,
            "total {total}"
        );
        let mut m2 = [0f64; 3];
        let mut m1 = [0f64; 3];
        for (l, &v) in d.iter().enumerate() {
            let idx = [
                l % dims[0],
                (l / dims[0]) % dims[1],
                l / (dims[0] * dims[1]),
            ];
            for a in 0..3 {
                let x = (idx[a] as f64 - c[a] as f64) * sp[a];
                m1[a] += v as f64 * x;
                m2[a] += v as f64 * x * x;
            }
        }
        for a in 0..3 {
            assert!((m1[a] / total).abs() < 1e-4, "mean shift axis {a}");
            let var = m2[a] / total;
            assert!((var - 9.0).abs() < 9.0 * 1e-3, "axis {a}: variance {var}");
        }
    }

    #[test]
    fn boundary_rules() {
        let dims = [10, 4, 3];
        let mut d = vec![2f32; 120];
        gaussian_blur_3d(&mut d, dims, [1.0; 3], 2.0, Boundary::Clamp);
        assert!(d.iter().all(|&v| (v - 2.0).abs() < 1e-5));
        let mut z = vec![2f32; 120];
        gaussian_blur_3d(&mut z, dims, [1.0; 3], 2.0, Boundary::Zero);
        assert!(
            z.iter().all(|&v| v < 2.0),
            "zero padding leaks at every voxel here"
        );
        // Identity for sigma 0 and refusal of a wrong length.
        let mut e = vec![1f32, 2.0, 3.0];
        assert!(gaussian_blur_3d(
            &mut e,
            [3, 1, 1],
            [1.0; 3],
            0.0,
            Boundary::Zero
        ));
        assert_eq!(e, vec![1.0, 2.0, 3.0]);
        assert!(!gaussian_blur_3d(
            &mut e,
            [4, 1, 1],
            [1.0; 3],
            1.0,
            Boundary::Zero
        ));
    }

    /// The per-voxel loop the CUDA kernel runs (and this module ran before it was
    /// made fast): the fast passes must give the same bits.
    fn reference_pass(
        src: &[f32],
        dims: [usize; 3],
        axis: usize,
        taps: &[f32],
        b: Boundary,
    ) -> Vec<f32> {
        let [nx, ny, _] = dims;
        let stride = [1, nx, nx * ny][axis];
        let len = dims[axis] as i64;
        let radius = (taps.len() / 2) as i64;
        (0..src.len())
            .map(|l| {
                let pos = ((l / stride) % dims[axis]) as i64;
                let start = l - pos as usize * stride;
                let mut acc = 0f32;
                for (ti, &w) in taps.iter().enumerate() {
                    if let Some(q) = tap_source(pos + ti as i64 - radius, len, b) {
                        acc += w * src[start + q * stride];
                    }
                }
                acc
            })
            .collect()
    }

    #[test]
    fn fast_passes_are_bit_identical_to_the_per_voxel_loop() {
        let dims = [23, 17, 11];
        let sp = [1.3, 2.1, 3.7];
        let mut seed = 12345u64;
        let orig: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 40) as f32 / 1e4
            })
            .collect();
        for b in [Boundary::Zero, Boundary::Clamp] {
            let mut fast = orig.clone();
            assert!(gaussian_blur_3d_axes(
                &mut fast,
                dims,
                sp,
                [4.0, 3.0, 6.0],
                b
            ));
            let mut slow = orig.clone();
            for (axis, s) in [4.0, 3.0, 6.0].iter().enumerate() {
                slow = reference_pass(&slow, dims, axis, &gaussian_taps(*s, sp[axis]), b);
            }
            assert!(fast
                .iter()
                .zip(&slow)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
