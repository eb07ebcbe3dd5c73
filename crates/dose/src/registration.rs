//! SPECT/CT registration check before the partial-volume correction.
//!
//! The correction assumes the CT masks sit where the organs are in the SPECT; a
//! breath or a move between the low-dose CT and the SPECT breaks that, and a shift
//! of one SPECT voxel costs a kidney 5-8 % (docs/log/accuracy.md). This
//! finds the rigid translation of the masks that best explains the SPECT as the
//! blurred organs, each uniform, on a uniform background (the region model of the
//! correction, Labbé et al. 1998, without the shells): least squares over the
//! organs' blurred boxes for each trial shift, a pattern search from no shift with
//! steps of 1, 1/2 and 1/4 SPECT voxel. A translation commutes with the blur, so
//! the blurred masks are made once and only sampled at the shifted positions (the
//! smooth model is interpolated, never the noisy SPECT, whose variance would
//! otherwise favour fractional shifts).

use super::boxmap::BoxMap;
use super::pvc::{blurred, Psf};
use crate::volume::{Geometry, Volume};
use std::collections::BTreeMap;

/// What the search found for one time point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MaskShift {
    /// The masks' move in patient coordinates (mm, LPS).
    pub mm: [f64; 3],
    /// The same in SPECT voxels along the grid axes.
    pub voxels: [f64; 3],
    /// The search stopped at its limit (`max_mm`) on some axis.
    pub at_limit: bool,
    /// Relative drop of the residual sum of squares from no shift to this one.
    pub residual_drop: f64,
}

impl MaskShift {
    /// Length of the move (mm).
    pub fn length_mm(&self) -> f64 {
        self.mm.iter().map(|v| v * v).sum::<f64>().sqrt()
    }
}

/// The translation (within `max_mm` per axis) of the organ coverage maps `core` on
/// the SPECT grid that best explains `spect` (see the module docs). `None` when
/// there is nothing to fit (no organ, or a singular model).
pub(crate) fn estimate_shift(
    spect: &Volume<f32>,
    core: &BTreeMap<u8, BoxMap>,
    psf: &Psf,
    max_mm: f64,
) -> Option<MaskShift> {
    let g = &spect.geom;
    let grid = g.dims;
    let maps: Vec<BoxMap> = core
        .values()
        .filter(|b| b.sum() > 0.0 && b.fits(grid))
        .map(|b| blurred(b, g, psf))
        .collect();
    if maps.is_empty() {
        return None;
    }
    // Region of the fit: the union of the blurred boxes.
    let lo: [usize; 3] = std::array::from_fn(|a| maps.iter().map(|m| m.lo[a]).min().unwrap_or(0));
    let hi: [usize; 3] = std::array::from_fn(|a| {
        maps.iter()
            .map(|m| m.lo[a] + m.dims[a])
            .max()
            .unwrap_or(0)
            .min(grid[a])
    });
    let fit = Fit::new(spect, &maps, lo, hi);
    let max_vox: [f64; 3] = std::array::from_fn(|a| max_mm / g.spacing[a]);
    let r0 = fit.residual([0.0; 3])?;
    let (mut d, mut r) = ([0.0f64; 3], r0);
    for step in [1.0, 0.5, 0.25] {
        // Bounded: each move lowers the residual, and the box of moves is finite.
        for _ in 0..64 {
            let mut best: Option<([f64; 3], f64)> = None;
            for a in 0..3 {
                for s in [-step, step] {
                    let mut c = d;
                    c[a] += s;
                    if c[a].abs() > max_vox[a] + 1e-9 {
                        continue;
                    }
                    if let Some(rc) = fit.residual(c) {
                        if rc < best.map_or(r, |b| b.1) {
                            best = Some((c, rc));
                        }
                    }
                }
            }
            match best {
                Some((c, rc)) if rc < r * (1.0 - 1e-9) => {
                    d = c;
                    r = rc;
                }
                _ => break,
            }
        }
    }
    let at_limit = (0..3).any(|a| d[a].abs() > max_vox[a] - 0.25 - 1e-9 && d[a] != 0.0);
    Some(MaskShift {
        mm: shift_mm(g, d),
        voxels: d,
        at_limit,
        residual_drop: if r0 > 0.0 { 1.0 - r / r0 } else { 0.0 },
    })
}

/// The patient-space vector (mm) of a move of `d` voxels along the grid axes.
fn shift_mm(g: &Geometry, d: [f64; 3]) -> [f64; 3] {
    let a = g.index_to_patient([0.0; 3]);
    let b = g.index_to_patient(d);
    std::array::from_fn(|i| b[i] - a[i])
}

/// `labels` moved by `mm` in patient space (its origin moved; the voxels unchanged).
pub fn moved(labels: &Volume<u8>, mm: [f64; 3]) -> Volume<u8> {
    let mut v = labels.clone();
    for a in 0..3 {
        v.geom.origin[a] += mm[a];
    }
    v
}

/// The least-squares problem: the SPECT on the fit box and the blurred organ maps.
struct Fit<'a> {
    spect: &'a Volume<f32>,
    yy: f64,
    sum_y: f64,
    n: f64,
    maps: &'a [BoxMap],
    lo: [usize; 3],
    hi: [usize; 3],
}

impl<'a> Fit<'a> {
    fn new(spect: &'a Volume<f32>, maps: &'a [BoxMap], lo: [usize; 3], hi: [usize; 3]) -> Self {
        let grid = spect.geom.dims;
        let (mut yy, mut sum_y) = (0.0, 0.0);
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                let s = (k * grid[1] + j) * grid[0];
                for &v in &spect.data[s + lo[0]..s + hi[0]] {
                    let v = v as f64;
                    yy += v * v;
                    sum_y += v;
                }
            }
        }
        let n = (0..3).map(|a| hi[a].saturating_sub(lo[a]) as f64).product();
        Fit {
            spect,
            yy,
            sum_y,
            n,
            maps,
            lo,
            hi,
        }
    }

    /// Residual sum of squares of the best uniform-organs-plus-background fit with the
    /// organs moved by `d` voxels.
    fn residual(&self, d: [f64; 3]) -> Option<f64> {
        use rayon::prelude::*;
        let grid = self.spect.geom.dims;
        let moved: Vec<Option<BoxMap>> = self
            .maps
            .par_iter()
            .map(|m| translated(m, d, self.lo, self.hi))
            .collect();
        let k = moved.len();
        let p = k + 1;
        let mut a = vec![0f64; p * p];
        let mut b = vec![0f64; p];
        for i in 0..k {
            let Some(mi) = &moved[i] else {
                // Moved out of the fit box: a zero column; keep the system solvable.
                a[i * p + i] = 1.0;
                continue;
            };
            for j in i..k {
                if let Some(mj) = &moved[j] {
                    let v = mi.dot(mj);
                    a[i * p + j] = v;
                    a[j * p + i] = v;
                }
            }
            let s = mi.sum();
            a[i * p + k] = s;
            a[k * p + i] = s;
            b[i] = mi.dot_full(&self.spect.data, grid);
        }
        a[k * p + k] = self.n;
        b[k] = self.sum_y;
        let theta = super::kinetics::solve(&a, &b, p)?;
        let r = self.yy - theta.iter().zip(&b).map(|(t, v)| t * v).sum::<f64>();
        r.is_finite().then_some(r.max(0.0))
    }
}

/// `m` moved by `d` voxels (linear interpolation, separable: out(x) = m(x - d)),
/// cropped to the box `lo..hi` of the grid; `None` when nothing is left there.
fn translated(m: &BoxMap, d: [f64; 3], lo: [usize; 3], hi: [usize; 3]) -> Option<BoxMap> {
    let mut w = m.w.clone();
    let mut dims = m.dims;
    let mut start: [i64; 3] = std::array::from_fn(|a| m.lo[a] as i64);
    for a in 0..3 {
        let n = d[a].floor();
        let f = (d[a] - n) as f32;
        start[a] += n as i64;
        if f == 0.0 {
            continue;
        }
        // One more voxel along `a`: out[u] = (1 - f) in[u] + f in[u - 1].
        let mut nd = dims;
        nd[a] += 1;
        let mut out = vec![0f32; nd[0] * nd[1] * nd[2]];
        let stride_out = [1, nd[0], nd[0] * nd[1]][a];
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    let src = (z * dims[1] + y) * dims[0] + x;
                    let v = w[src];
                    if v == 0.0 {
                        continue;
                    }
                    let dst = (z * nd[1] + y) * nd[0] + x;
                    out[dst] += (1.0 - f) * v;
                    out[dst + stride_out] += f * v;
                }
            }
        }
        w = out;
        dims = nd;
    }
    // Crop to the fit box.
    let clo: [usize; 3] = std::array::from_fn(|a| start[a].max(lo[a] as i64) as usize);
    let chi: [usize; 3] =
        std::array::from_fn(|a| (start[a] + dims[a] as i64).min(hi[a] as i64).max(0) as usize);
    if (0..3).any(|a| chi[a] <= clo[a]) {
        return None;
    }
    let cd: [usize; 3] = std::array::from_fn(|a| chi[a] - clo[a]);
    let mut cw = Vec::with_capacity(cd[0] * cd[1] * cd[2]);
    for z in 0..cd[2] {
        for y in 0..cd[1] {
            let sz = (clo[2] as i64 + z as i64 - start[2]) as usize;
            let sy = (clo[1] as i64 + y as i64 - start[1]) as usize;
            let sx = (clo[0] as i64 - start[0]) as usize;
            let s = (sz * dims[1] + sy) * dims[0] + sx;
            cw.extend_from_slice(&w[s..s + cd[0]]);
        }
    }
    Some(BoxMap {
        lo: clo,
        dims: cd,
        w: cw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pvc::blurred;

    /// Two balls (kidney-sized) on a 4 mm grid, as coverage maps.
    fn balls(g: &Geometry, shift_mm: [f64; 3]) -> BTreeMap<u8, BoxMap> {
        let mut out = BTreeMap::new();
        for (l, c, r) in [
            (2u8, [-30.0, 0.0, 0.0], 28.0),
            (3u8, [35.0, 5.0, -4.0], 24.0),
        ] {
            let mut full = vec![0f32; g.len()];
            for k in 0..g.dims[2] {
                for j in 0..g.dims[1] {
                    for i in 0..g.dims[0] {
                        let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                        let d2: f64 = (0..3).map(|a| (p[a] - c[a] - shift_mm[a]).powi(2)).sum();
                        if d2 <= r * r {
                            full[g.linear(i, j, k)] = 1.0;
                        }
                    }
                }
            }
            out.insert(l, BoxMap::from_full(&full, g.dims).unwrap());
        }
        out
    }

    /// A SPECT of the organs at `shift_mm`: blurred uniform organs on a background.
    fn spect_of(g: &Geometry, psf: &Psf, shift_mm: [f64; 3]) -> Volume<f32> {
        let mut v = Volume::filled(g.clone(), 50.0f32);
        for (l, b) in balls(g, shift_mm) {
            let conc = if l == 2 { 1000.0 } else { 700.0 };
            let pb = blurred(&b, g, psf);
            pb.for_each(g.dims, |lin, w| v.data[lin] += conc * w);
        }
        v
    }

    #[test]
    fn a_known_misregistration_is_found_and_none_where_there_is_none() {
        let g = Geometry::new([40, 32, 28], [4.0, 4.0, 4.0], [-78.0, -62.0, -54.0]);
        let psf = Psf::new(12.0, None);
        let masks = balls(&g, [0.0; 3]);
        // Registered: no move.
        let s = estimate_shift(&spect_of(&g, &psf, [0.0; 3]), &masks, &psf, 10.0).unwrap();
        assert!(s.length_mm() < 0.5, "{s:?}");
        // The organs 4.4 mm right of and 2 mm below the masks: found within 1 mm.
        let truth = [4.4, 0.0, -2.0];
        let s = estimate_shift(&spect_of(&g, &psf, truth), &masks, &psf, 10.0).unwrap();
        for a in 0..3 {
            assert!((s.mm[a] - truth[a]).abs() < 1.0, "{s:?} vs {truth:?}");
        }
        assert!(!s.at_limit && s.residual_drop > 0.5, "{s:?}");
        // Beyond the limit: stops there and says so.
        let s = estimate_shift(&spect_of(&g, &psf, [12.0, 0.0, 0.0]), &masks, &psf, 6.0).unwrap();
        assert!(s.at_limit && (s.mm[0] - 6.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn translated_boxes_by_hand() {
        // A single voxel of 1 at (2, 3, 4) in a 10^3 grid.
        let m = BoxMap {
            lo: [2, 3, 4],
            dims: [1, 1, 1],
            w: vec![1.0],
        };
        let (lo, hi) = ([0; 3], [10; 3]);
        let t = translated(&m, [1.0, -2.0, 0.0], lo, hi).unwrap();
        assert_eq!(
            (t.lo, t.dims, t.w.clone()),
            ([3, 1, 4], [1, 1, 1], vec![1.0])
        );
        // A quarter voxel along x: 0.75 stays, 0.25 moves one voxel on.
        let t = translated(&m, [0.25, 0.0, 0.0], lo, hi).unwrap();
        assert_eq!((t.lo, t.dims), ([2, 3, 4], [2, 1, 1]));
        assert_eq!(t.w, vec![0.75, 0.25]);
        // Half a voxel on each axis: eight voxels of 1/8.
        let t = translated(&m, [0.5; 3], lo, hi).unwrap();
        assert_eq!(t.dims, [2, 2, 2]);
        assert!(t.w.iter().all(|&v| (v - 0.125).abs() < 1e-7));
        // Moved out of the fit box, or cropped at its edge.
        assert!(translated(&m, [-3.0, 0.0, 0.0], lo, hi).is_none());
        let t = translated(&m, [-2.5, 0.0, 0.0], lo, hi).unwrap();
        assert_eq!((t.lo, t.w.clone()), ([0, 3, 4], vec![0.5]));
    }

    #[test]
    fn moved_labels_keep_their_voxels() {
        let g = Geometry::new([4, 4, 4], [2.0; 3], [0.0; 3]);
        let v = Volume::filled(g, 3u8);
        let m = moved(&v, [1.0, -2.0, 0.5]);
        assert_eq!(m.data, v.data);
        assert_eq!(m.geom.origin, [1.0, -2.0, 0.5]);
    }
}
