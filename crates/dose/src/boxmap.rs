//! Maps held on a box of a grid: an organ fills a small part of a SPECT, so its masks
//! and blurred masks are stored and blurred on its bounding box grown by the blur's
//! reach (`grown`, `reach`), where the blurred values equal those of the whole grid.

use super::psf::gaussian_taps;
use crate::volume::Geometry;

/// A map held on a box of the SPECT grid: `lo` its first voxel, `dims` its size,
/// `w` its values, x fastest.
#[derive(Debug, Clone)]
pub struct BoxMap {
    pub lo: [usize; 3],
    pub dims: [usize; 3],
    pub w: Vec<f32>,
}

impl BoxMap {
    /// The bounding box of the non-zero voxels of a full-grid map (`None`: all zero).
    pub(crate) fn from_full(full: &[f32], grid: [usize; 3]) -> Option<BoxMap> {
        let [nx, ny, _] = grid;
        let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
        for (l, &v) in full.iter().enumerate() {
            if v != 0.0 {
                let idx = [l % nx, (l / nx) % ny, l / (nx * ny)];
                for a in 0..3 {
                    lo[a] = lo[a].min(idx[a]);
                    hi[a] = hi[a].max(idx[a]);
                }
            }
        }
        if lo[0] == usize::MAX {
            return None;
        }
        let dims = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
        let mut w = Vec::with_capacity(dims[0] * dims[1] * dims[2]);
        for k in lo[2]..=hi[2] {
            for j in lo[1]..=hi[1] {
                let s = (k * ny + j) * nx;
                w.extend_from_slice(&full[s + lo[0]..=s + hi[0]]);
            }
        }
        Some(BoxMap { lo, dims, w })
    }

    /// A copy grown by `r` voxels per axis (clipped to `grid`), zero in the new part.
    pub fn grown(&self, r: [usize; 3], grid: [usize; 3]) -> BoxMap {
        let lo: [usize; 3] = std::array::from_fn(|a| self.lo[a].saturating_sub(r[a]));
        let hi: [usize; 3] =
            std::array::from_fn(|a| (self.lo[a] + self.dims[a] + r[a]).min(grid[a]));
        let dims: [usize; 3] = std::array::from_fn(|a| hi[a] - lo[a]);
        let mut w = vec![0f32; dims[0] * dims[1] * dims[2]];
        let off: [usize; 3] = std::array::from_fn(|a| self.lo[a] - lo[a]);
        for k in 0..self.dims[2] {
            for j in 0..self.dims[1] {
                let s = (k * self.dims[1] + j) * self.dims[0];
                let d = ((k + off[2]) * dims[1] + j + off[1]) * dims[0] + off[0];
                w[d..d + self.dims[0]].copy_from_slice(&self.w[s..s + self.dims[0]]);
            }
        }
        BoxMap { lo, dims, w }
    }

    /// Adds `other` where the two boxes overlap.
    pub fn add(&mut self, other: &BoxMap) {
        self.overlap_rows(other, |a, b| {
            a.iter_mut().zip(b).for_each(|(x, &y)| *x += y)
        });
    }

    /// The values of a full-grid map on this box.
    pub(crate) fn gather(&self, full: &[f32], grid: [usize; 3]) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.w.len());
        let [nx, ny, _] = grid;
        for k in 0..self.dims[2] {
            for j in 0..self.dims[1] {
                let s = ((self.lo[2] + k) * ny + self.lo[1] + j) * nx + self.lo[0];
                out.extend_from_slice(&full[s..s + self.dims[0]]);
            }
        }
        out
    }

    /// The box shrunk to its non-zero voxels (`None`: all zero).
    pub(crate) fn trimmed(&self) -> Option<BoxMap> {
        let t = BoxMap::from_full(&self.w, self.dims)?;
        Some(BoxMap {
            lo: std::array::from_fn(|a| self.lo[a] + t.lo[a]),
            dims: t.dims,
            w: t.w,
        })
    }

    /// Calls `f(self_row, other_row)` for each x-row where the boxes overlap.
    fn overlap_rows(&mut self, other: &BoxMap, mut f: impl FnMut(&mut [f32], &[f32])) {
        let lo: [usize; 3] = std::array::from_fn(|a| self.lo[a].max(other.lo[a]));
        let hi: [usize; 3] =
            std::array::from_fn(|a| (self.lo[a] + self.dims[a]).min(other.lo[a] + other.dims[a]));
        if (0..3).any(|a| hi[a] <= lo[a]) {
            return;
        }
        let n = hi[0] - lo[0];
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                let a0 = ((k - self.lo[2]) * self.dims[1] + j - self.lo[1]) * self.dims[0] + lo[0]
                    - self.lo[0];
                let b0 = ((k - other.lo[2]) * other.dims[1] + j - other.lo[1]) * other.dims[0]
                    + lo[0]
                    - other.lo[0];
                f(&mut self.w[a0..a0 + n], &other.w[b0..b0 + n]);
            }
        }
    }

    /// Whether the box lies within a grid of `grid` voxels.
    pub fn fits(&self, grid: [usize; 3]) -> bool {
        (0..3).all(|a| self.lo[a] + self.dims[a] <= grid[a])
    }

    pub fn sum(&self) -> f64 {
        self.w.iter().map(|&v| v as f64).sum()
    }

    /// Visits every voxel as (grid index, value).
    pub fn for_each(&self, grid: [usize; 3], mut f: impl FnMut(usize, f32)) {
        let [nx, ny, _] = grid;
        let mut l = 0;
        for k in 0..self.dims[2] {
            for j in 0..self.dims[1] {
                let s = ((self.lo[2] + k) * ny + self.lo[1] + j) * nx + self.lo[0];
                for i in 0..self.dims[0] {
                    f(s + i, self.w[l]);
                    l += 1;
                }
            }
        }
    }

    /// `sum_v a(v) b(v)` over the overlap of two boxes.
    pub fn dot(&self, other: &BoxMap) -> f64 {
        let lo: [usize; 3] = std::array::from_fn(|a| self.lo[a].max(other.lo[a]));
        let hi: [usize; 3] =
            std::array::from_fn(|a| (self.lo[a] + self.dims[a]).min(other.lo[a] + other.dims[a]));
        if (0..3).any(|a| hi[a] <= lo[a]) {
            return 0.0;
        }
        let mut s = 0f64;
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                let a0 = ((k - self.lo[2]) * self.dims[1] + j - self.lo[1]) * self.dims[0];
                let b0 = ((k - other.lo[2]) * other.dims[1] + j - other.lo[1]) * other.dims[0];
                let n = hi[0] - lo[0];
                let a = &self.w[a0 + lo[0] - self.lo[0]..][..n];
                let b = &other.w[b0 + lo[0] - other.lo[0]..][..n];
                s += a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| x as f64 * y as f64)
                    .sum::<f64>();
            }
        }
        s
    }

    /// `sum_v a(v) full(v)` with a full-grid map.
    pub(crate) fn dot_full(&self, full: &[f32], grid: [usize; 3]) -> f64 {
        let mut s = 0f64;
        self.for_each(grid, |l, v| s += v as f64 * full[l] as f64);
        s
    }

    /// `sum_v a(v) fx(i) fy(j) fz(k)` with a separable full-grid map.
    pub(crate) fn dot_separable(&self, f: &[Vec<f64>; 3]) -> f64 {
        let mut s = 0f64;
        let mut l = 0;
        for k in 0..self.dims[2] {
            let fz = f[2][self.lo[2] + k];
            for j in 0..self.dims[1] {
                let fyz = fz * f[1][self.lo[1] + j];
                for i in 0..self.dims[0] {
                    s += self.w[l] as f64 * f[0][self.lo[0] + i] * fyz;
                    l += 1;
                }
            }
        }
        s
    }
}

/// Voxels a Gaussian of `sigma_mm` (per axis) reaches from a voxel: the taps' radius.
pub fn reach(geom: &Geometry, sigma_mm: [f64; 3]) -> [usize; 3] {
    std::array::from_fn(|a| gaussian_taps(sigma_mm[a], geom.spacing[a]).len() / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psf::{gaussian_blur_3d_axes, Boundary};

    #[test]
    fn blurring_on_the_grown_box_equals_blurring_the_grid() {
        let g = Geometry::new([30, 26, 22], [2.0, 2.5, 3.0], [0.0; 3]);
        let mut full = vec![0f32; g.len()];
        for k in 8..12 {
            for j in 3..9 {
                for i in 20..29 {
                    full[i + 30 * (j + 26 * k)] = (i + j + k) as f32 / 10.0;
                }
            }
        }
        let sigma = [4.0, 3.0, 5.0];
        let b = BoxMap::from_full(&full, g.dims).expect("box");
        assert_eq!((b.lo, b.dims), ([20, 3, 8], [9, 6, 4]));
        let mut grown = b.grown(reach(&g, sigma), g.dims);
        gaussian_blur_3d_axes(&mut grown.w, grown.dims, g.spacing, sigma, Boundary::Zero);
        let mut fast = vec![0f32; g.len()];
        grown.for_each(g.dims, |l, v| fast[l] = v);
        let mut slow = full.clone();
        gaussian_blur_3d_axes(&mut slow, g.dims, g.spacing, sigma, Boundary::Zero);
        assert!(fast.iter().zip(&slow).all(|(a, b)| a == b));
        assert!((b.sum() - full.iter().map(|&v| v as f64).sum::<f64>()).abs() < 1e-9);
        assert!((b.dot_full(&full, g.dims) - b.dot(&b)).abs() < 1e-9);
        assert_eq!(b.trimmed().map(|t| (t.lo, t.dims)), Some((b.lo, b.dims)));
    }
}
