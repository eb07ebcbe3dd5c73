//! `Volume<T>` and `Geometry`: voxels on a grid placed in DICOM patient space (LPS, mm).
//!
//! Layout: voxel index (i, j, k), i fastest, so the linear index is
//! `i + nx * (j + ny * k)`. This is the order of DICOM pixel rows stacked along the
//! slice normal and of NIfTI data, so neither reader needs to reorder.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub type Vec3 = [f64; 3];

/// Where a voxel grid sits in patient space.
///
/// `direction[a]` is the unit vector (LPS) of index axis `a`: for a DICOM series,
/// `direction[0]` is the row direction (increasing column index),
/// `direction[1]` the column direction and `direction[2]` the slice step.
/// A voxel (i, j, k) has its centre at
/// `origin + i*spacing[0]*direction[0] + j*spacing[1]*direction[1] + k*spacing[2]*direction[2]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    pub dims: [usize; 3],
    pub spacing: Vec3,
    pub origin: Vec3,
    pub direction: [Vec3; 3],
}

impl Geometry {
    /// Axis-aligned geometry (identity direction).
    pub fn new(dims: [usize; 3], spacing: Vec3, origin: Vec3) -> Self {
        Geometry {
            dims,
            spacing,
            origin,
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    /// Checks what every consumer relies on: non-empty, positive finite spacing,
    /// orthonormal direction cosines.
    pub fn validate(&self) -> Result<()> {
        if self.dims.contains(&0) {
            return Err(Error::geometry(format!("empty grid {:?}", self.dims)));
        }
        if self
            .dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .is_none()
        {
            return Err(Error::geometry(format!("grid {:?} overflows", self.dims)));
        }
        for (a, &s) in self.spacing.iter().enumerate() {
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::geometry(format!(
                    "spacing along axis {a} is {s} mm: it must be a positive number"
                )));
            }
        }
        if self.origin.iter().any(|v| !v.is_finite()) {
            return Err(Error::geometry(format!(
                "origin {:?} is not finite",
                self.origin
            )));
        }
        for a in 0..3 {
            let n = norm(self.direction[a]);
            if !n.is_finite() || (n - 1.0).abs() > 1e-3 {
                return Err(Error::geometry(format!(
                    "direction of axis {a} {:?} is not a unit vector",
                    self.direction[a]
                )));
            }
            for b in (a + 1)..3 {
                if dot(self.direction[a], self.direction[b]).abs() > 1e-3 {
                    return Err(Error::geometry(format!(
                        "directions of axes {a} and {b} are not perpendicular (sheared grid)"
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Volume of one voxel in mL (= cm3).
    pub fn voxel_volume_ml(&self) -> f64 {
        self.spacing[0] * self.spacing[1] * self.spacing[2] / 1000.0
    }

    #[inline]
    pub fn linear(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// Continuous index (i, j, k) to patient coordinates (LPS, mm).
    pub fn index_to_patient(&self, idx: Vec3) -> Vec3 {
        let mut p = self.origin;
        for a in 0..3 {
            let s = idx[a] * self.spacing[a];
            for (r, pr) in p.iter_mut().enumerate() {
                *pr += s * self.direction[a][r];
            }
        }
        p
    }

    /// Patient coordinates (LPS, mm) to continuous index. Exact inverse of
    /// [`Geometry::index_to_patient`] for orthonormal directions.
    pub fn patient_to_index(&self, p: Vec3) -> Vec3 {
        let d = [
            p[0] - self.origin[0],
            p[1] - self.origin[1],
            p[2] - self.origin[2],
        ];
        let mut idx = [0.0; 3];
        for a in 0..3 {
            idx[a] = dot(d, self.direction[a]) / self.spacing[a];
        }
        idx
    }

    /// 4x4 affine (row-major) from index to LPS.
    pub fn affine_lps(&self) -> [[f64; 4]; 4] {
        let mut m = [[0.0; 4]; 4];
        for r in 0..3 {
            for a in 0..3 {
                m[r][a] = self.direction[a][r] * self.spacing[a];
            }
            m[r][3] = self.origin[r];
        }
        m[3][3] = 1.0;
        m
    }

    /// Builds a geometry from an index->LPS affine (rotation and scale, no shear).
    pub fn from_affine_lps(dims: [usize; 3], m: &[[f64; 4]; 4]) -> Result<Self> {
        let mut spacing = [0.0; 3];
        let mut direction = [[0.0; 3]; 3];
        for a in 0..3 {
            let col = [m[0][a], m[1][a], m[2][a]];
            let n = norm(col);
            if !(n.is_finite() && n > 0.0) {
                return Err(Error::geometry(format!(
                    "affine column {a} has length {n}: zero or invalid voxel size"
                )));
            }
            spacing[a] = n;
            direction[a] = [col[0] / n, col[1] / n, col[2] / n];
        }
        let g = Geometry {
            dims,
            spacing,
            origin: [m[0][3], m[1][3], m[2][3]],
            direction,
        };
        g.validate()?;
        Ok(g)
    }

    /// Same grid in patient space, different dims/spacing check: true when the two
    /// geometries place every voxel at the same point (within `tol_mm`).
    pub fn same_grid(&self, other: &Geometry, tol_mm: f64) -> bool {
        if self.dims != other.dims {
            return false;
        }
        let [nx, ny, nz] = self.dims;
        let corners = [
            [0.0, 0.0, 0.0],
            [(nx - 1) as f64, 0.0, 0.0],
            [0.0, (ny - 1) as f64, 0.0],
            [0.0, 0.0, (nz - 1) as f64],
            [(nx - 1) as f64, (ny - 1) as f64, (nz - 1) as f64],
        ];
        corners.iter().all(|&c| {
            let a = self.index_to_patient(c);
            let b = other.index_to_patient(c);
            dist(a, b) <= tol_mm
        })
    }

    /// Short human description of the axis orientation, e.g. "LPS" for an axial
    /// DICOM CT, "RAS" for a volume whose axes run right, anterior, superior.
    pub fn orientation_code(&self) -> String {
        self.direction
            .iter()
            .map(|d| {
                let (mut best, mut v) = (0, 0.0f64);
                for (r, &x) in d.iter().enumerate() {
                    if x.abs() > v.abs() {
                        best = r;
                        v = x;
                    }
                }
                match (best, v >= 0.0) {
                    (0, true) => 'L',
                    (0, false) => 'R',
                    (1, true) => 'P',
                    (1, false) => 'A',
                    (_, true) => 'S',
                    (_, false) => 'I',
                }
            })
            .collect()
    }
}

/// Voxels of type `T` on a [`Geometry`].
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    pub geom: Geometry,
    pub data: Vec<T>,
}

impl<T: Copy> Volume<T> {
    pub fn new(geom: Geometry, data: Vec<T>) -> Result<Self> {
        if data.len() != geom.len() {
            return Err(Error::geometry(format!(
                "{} voxels given for a {:?} grid ({} voxels)",
                data.len(),
                geom.dims,
                geom.len()
            )));
        }
        Ok(Volume { geom, data })
    }

    pub fn filled(geom: Geometry, value: T) -> Self {
        let n = geom.len();
        Volume {
            geom,
            data: vec![value; n],
        }
    }

    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> T {
        self.data[self.geom.linear(i, j, k)]
    }

    #[inline]
    pub fn set(&mut self, i: usize, j: usize, k: usize, v: T) {
        let l = self.geom.linear(i, j, k);
        self.data[l] = v;
    }

    pub fn map<U, F: Fn(T) -> U>(&self, f: F) -> Volume<U> {
        Volume {
            geom: self.geom.clone(),
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }

    /// Nearest-neighbour resampling onto `target` (for label maps); voxels that fall
    /// outside the source get `fill`.
    pub fn resample_nearest(&self, target: &Geometry, fill: T) -> Volume<T> {
        let mut out = Volume::filled(target.clone(), fill);
        let [sx, sy, sz] = self.geom.dims;
        for_each_source_index(&self.geom, target, |l, c| {
            let i = c[0].round();
            let j = c[1].round();
            let k = c[2].round();
            if i >= 0.0
                && j >= 0.0
                && k >= 0.0
                && (i as usize) < sx
                && (j as usize) < sy
                && (k as usize) < sz
            {
                out.data[l] = self.get(i as usize, j as usize, k as usize);
            }
        });
        out
    }
}

impl Volume<f32> {
    /// Trilinear resampling onto `target` (for images). Points outside the source
    /// grid (beyond half a voxel past the outer centres) get `fill`; within that
    /// border the edge value is held.
    pub fn resample_linear(&self, target: &Geometry, fill: f32) -> Volume<f32> {
        let mut out = Volume::filled(target.clone(), fill);
        let d = self.geom.dims;
        for_each_source_index(&self.geom, target, |l, c| {
            if let Some(v) = self.sample_linear(c, d) {
                out.data[l] = v;
            }
        });
        out
    }

    /// Trilinear value at a continuous source index, `None` outside.
    pub fn sample_linear(&self, c: Vec3, d: [usize; 3]) -> Option<f32> {
        let mut i0 = [0usize; 3];
        let mut f = [0f64; 3];
        for a in 0..3 {
            if c[a] < -0.5 || c[a] > d[a] as f64 - 0.5 {
                return None;
            }
            let x = c[a].clamp(0.0, (d[a] - 1) as f64);
            let fl = x.floor();
            i0[a] = fl as usize;
            f[a] = x - fl;
            if i0[a] + 1 >= d[a] {
                i0[a] = d[a] - 1;
                f[a] = 0.0;
            }
        }
        let mut acc = 0f64;
        for dz in 0..2 {
            let wz = if dz == 0 { 1.0 - f[2] } else { f[2] };
            if wz == 0.0 {
                continue;
            }
            for dy in 0..2 {
                let wy = if dy == 0 { 1.0 - f[1] } else { f[1] };
                if wy == 0.0 {
                    continue;
                }
                for dx in 0..2 {
                    let wx = if dx == 0 { 1.0 - f[0] } else { f[0] };
                    if wx == 0.0 {
                        continue;
                    }
                    let v = self.get(i0[0] + dx, i0[1] + dy, i0[2] + dz);
                    acc += wx * wy * wz * v as f64;
                }
            }
        }
        Some(acc as f32)
    }

    /// Error when any voxel is NaN or infinite: downstream sums would be silently wrong.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        if let Some(pos) = self.data.iter().position(|v| !v.is_finite()) {
            let nx = self.geom.dims[0];
            let ny = self.geom.dims[1];
            return Err(Error::geometry(format!(
                "{what}: voxel ({}, {}, {}) is {} (NaN or infinite values are not accepted)",
                pos % nx,
                (pos / nx) % ny,
                pos / (nx * ny),
                self.data[pos]
            )));
        }
        Ok(())
    }
}

/// Calls `f(linear target index, continuous source index)` for every target voxel,
/// walking the affine incrementally along i.
fn for_each_source_index<F: FnMut(usize, Vec3)>(src: &Geometry, dst: &Geometry, mut f: F) {
    let [nx, ny, nz] = dst.dims;
    let origin = src.patient_to_index(dst.index_to_patient([0.0, 0.0, 0.0]));
    let step = |a: usize| {
        let mut e = [0.0; 3];
        e[a] = 1.0;
        let p = src.patient_to_index(dst.index_to_patient(e));
        [p[0] - origin[0], p[1] - origin[1], p[2] - origin[2]]
    };
    let (si, sj, sk) = (step(0), step(1), step(2));
    let mut l = 0;
    for k in 0..nz {
        for j in 0..ny {
            let base = [
                origin[0] + j as f64 * sj[0] + k as f64 * sk[0],
                origin[1] + j as f64 * sj[1] + k as f64 * sk[1],
                origin[2] + j as f64 * sj[2] + k as f64 * sk[2],
            ];
            for i in 0..nx {
                let fi = i as f64;
                f(
                    l,
                    [
                        base[0] + fi * si[0],
                        base[1] + fi * si[1],
                        base[2] + fi * si[2],
                    ],
                );
                l += 1;
            }
        }
    }
}

pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

pub fn dist(a: Vec3, b: Vec3) -> f64 {
    norm([a[0] - b[0], a[1] - b[1], a[2] - b[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        let c = 30f64.to_radians().cos();
        let s = 30f64.to_radians().sin();
        Geometry {
            dims: [4, 5, 6],
            spacing: [0.8, 0.9, 2.5],
            origin: [-100.0, 20.0, 300.0],
            direction: [[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn index_patient_round_trip() {
        let g = oblique();
        g.validate().unwrap();
        let idx = [1.5, 3.25, 4.0];
        let back = g.patient_to_index(g.index_to_patient(idx));
        for a in 0..3 {
            assert!((back[a] - idx[a]).abs() < 1e-12);
        }
        let g2 = Geometry::from_affine_lps(g.dims, &g.affine_lps()).unwrap();
        assert!(g.same_grid(&g2, 1e-9));
    }

    #[test]
    fn hand_computed_voxel_centre() {
        // Voxel (2, 1, 3) of an axis-aligned grid: origin + index * spacing.
        let g = Geometry::new([4, 4, 4], [0.5, 2.0, 3.0], [10.0, 20.0, 30.0]);
        assert_eq!(g.index_to_patient([2.0, 1.0, 3.0]), [11.0, 22.0, 39.0]);
        assert_eq!(g.orientation_code(), "LPS");
    }

    #[test]
    fn resample_identity_and_linear_ramp() {
        let g = Geometry::new([8, 6, 5], [2.0, 2.0, 3.0], [0.0, 0.0, 0.0]);
        let data: Vec<f32> = (0..g.len())
            .map(|l| {
                let i = l % 8;
                i as f32 * 10.0
            })
            .collect();
        let v = Volume::new(g.clone(), data).unwrap();
        assert_eq!(v.resample_linear(&g, -1.0), v);
        // Half-voxel shift along i: a ramp resamples to the midpoints exactly.
        let shifted = Geometry::new([7, 6, 5], [2.0, 2.0, 3.0], [1.0, 0.0, 0.0]);
        let r = v.resample_linear(&shifted, -1.0);
        assert!((r.get(0, 0, 0) - 5.0).abs() < 1e-5);
        assert!((r.get(6, 5, 4) - 65.0).abs() < 1e-5);
        // Far outside: fill.
        let outside = Geometry::new([2, 2, 2], [1.0, 1.0, 1.0], [500.0, 0.0, 0.0]);
        assert!(v
            .resample_linear(&outside, -1.0)
            .data
            .iter()
            .all(|&x| x == -1.0));
    }

    #[test]
    fn resample_nearest_keeps_labels() {
        let g = Geometry::new([4, 4, 4], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]);
        let mut v = Volume::filled(g, 0u8);
        v.set(2, 1, 3, 7);
        // Target at half the spacing: voxel (2,1,3) covers target voxels (4..5, 2..3, 6..7) around it.
        let t = Geometry::new([8, 8, 8], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]);
        let r = v.resample_nearest(&t, 0);
        assert_eq!(r.get(4, 2, 6), 7);
        assert_eq!(r.data.iter().filter(|&&x| x == 7).count(), 8);
    }

    #[test]
    fn invalid_geometry_is_an_error() {
        let mut g = Geometry::new([4, 4, 4], [1.0, 0.0, 1.0], [0.0; 3]);
        assert!(g.validate().is_err());
        g.spacing[1] = f64::NAN;
        assert!(g.validate().is_err());
        let g = Geometry::new([0, 4, 4], [1.0; 3], [0.0; 3]);
        assert!(g.validate().is_err());
    }
}
