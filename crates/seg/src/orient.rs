//! The voxel order the network was trained in: axis 0 towards the patient's
//! left, 1 posterior, 2 head (LPS, an axial head-first series' own order, and
//! what `train/` reorients every volume to). A feet-first series, a NIfTI
//! stored in another order or a sagittal acquisition would otherwise reach
//! the network mirrored or in the wrong plane; the driver permutes and flips
//! the CT into this order (no resampling) and the labels back.

use crate::volume::{Geometry, Volume};

/// A permutation and flips of voxel axes: new axis `n` runs along old axis
/// `perm[n]`, reversed where `flip[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reorient {
    pub perm: [usize; 3],
    pub flip: [bool; 3],
    old_dims: [usize; 3],
}

impl Reorient {
    /// The axis order closest to LPS: each patient axis takes the voxel axis
    /// with the largest direction cosine along it (greedily, largest first,
    /// so an oblique series keeps a one-to-one assignment).
    pub fn canonical(g: &Geometry) -> Reorient {
        let mut perm = [0usize; 3];
        let mut flip = [false; 3];
        let mut used_axis = [false; 3];
        let mut used_patient = [false; 3];
        for _ in 0..3 {
            let mut best = (0usize, 0usize, -1.0f64);
            for (a, used_a) in used_axis.iter().enumerate() {
                for (p, used_p) in used_patient.iter().enumerate() {
                    let c = g.direction[a][p].abs();
                    if !used_a && !used_p && c > best.2 {
                        best = (a, p, c);
                    }
                }
            }
            let (a, p, _) = best;
            used_axis[a] = true;
            used_patient[p] = true;
            perm[p] = a;
            flip[p] = g.direction[a][p] < 0.0;
        }
        Reorient {
            perm,
            flip,
            old_dims: g.dims,
        }
    }

    pub(crate) fn is_identity(&self) -> bool {
        self.perm == [0, 1, 2] && self.flip == [false; 3]
    }

    pub(crate) fn new_dims(&self) -> [usize; 3] {
        self.perm.map(|a| self.old_dims[a])
    }

    /// Old linear index of every new voxel, in new linear order.
    fn old_index(&self) -> Vec<usize> {
        let od = self.old_dims;
        let nd = self.new_dims();
        let ostride = [1, od[0], od[0] * od[1]];
        let mut out = Vec::with_capacity(nd.iter().product());
        // Per new axis: old offset of each coordinate.
        let offs: Vec<Vec<usize>> = (0..3)
            .map(|n| {
                (0..nd[n])
                    .map(|c| {
                        let oc = if self.flip[n] { nd[n] - 1 - c } else { c };
                        oc * ostride[self.perm[n]]
                    })
                    .collect()
            })
            .collect();
        for &k in &offs[2] {
            for &j in &offs[1] {
                for &i in &offs[0] {
                    out.push(i + j + k);
                }
            }
        }
        out
    }

    /// The volume in the new order, with the geometry that keeps every voxel
    /// at its patient position.
    pub fn apply<T: Copy>(&self, v: &Volume<T>) -> Volume<T> {
        let idx = self.old_index();
        let g = &v.geom;
        let nd = self.new_dims();
        let mut direction = [[0.0; 3]; 3];
        let mut spacing = [0.0; 3];
        let mut first = [0.0f64; 3];
        for n in 0..3 {
            let a = self.perm[n];
            let s = if self.flip[n] { -1.0 } else { 1.0 };
            direction[n] = g.direction[a].map(|c| c * s);
            spacing[n] = g.spacing[a];
            first[a] = if self.flip[n] {
                (nd[n] - 1) as f64
            } else {
                0.0
            };
        }
        let geom = Geometry {
            dims: nd,
            spacing,
            origin: g.index_to_patient(first),
            direction,
        };
        Volume {
            geom,
            data: idx.iter().map(|&o| v.data[o]).collect(),
        }
    }

    /// Data in the new order back to the old grid.
    pub(crate) fn undo<T: Copy + Default>(&self, data: &[T]) -> Vec<T> {
        let mut out = vec![T::default(); data.len()];
        for (n, o) in self.old_index().into_iter().enumerate() {
            out[o] = data[n];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feet_first_sagittal() -> Volume<f32> {
        // Voxel axis 0 runs towards the patient's head, 1 towards the right
        // (-x), 2 posterior: nothing like LPS.
        let g = Geometry {
            dims: [4, 5, 3],
            spacing: [2.0, 0.5, 1.0],
            origin: [10.0, -3.0, 7.0],
            direction: [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        };
        let data = (0..60).map(|v| v as f32).collect();
        Volume { geom: g, data }
    }

    #[test]
    fn canonical_order_keeps_every_voxel_where_it_is_in_the_patient() {
        let v = feet_first_sagittal();
        let r = Reorient::canonical(&v.geom);
        assert_eq!(r.perm, [1, 2, 0]);
        assert_eq!(r.flip, [true, false, false]);
        let c = r.apply(&v);
        assert_eq!(c.geom.dims, [5, 3, 4]);
        assert_eq!(c.geom.spacing, [0.5, 1.0, 2.0]);
        for (n, d) in c.geom.direction.iter().enumerate() {
            let mut e = [0.0; 3];
            e[n] = 1.0;
            assert_eq!(*d, e, "new axis {n} runs along +LPS");
        }
        // Each voxel value sits at the same patient position in both grids.
        let od = v.geom.dims;
        for k in 0..od[2] {
            for j in 0..od[1] {
                for i in 0..od[0] {
                    let val = v.get(i, j, k);
                    let p = v.geom.index_to_patient([i as f64, j as f64, k as f64]);
                    let q = c.geom.patient_to_index(p).map(|x| x.round() as usize);
                    assert_eq!(c.get(q[0], q[1], q[2]), val);
                }
            }
        }
        assert_eq!(r.undo(&c.data), v.data);
    }

    #[test]
    fn lps_series_is_left_alone() {
        let g = Geometry::new([3, 2, 2], [1.0; 3], [0.0; 3]);
        assert!(Reorient::canonical(&g).is_identity());
    }
}
