//! A fast rigid translation between two CTs of one patient (the cycle's
//! diagnostic CT and a low-dose CT days later), from the images alone, before
//! any network runs: where the diagnostic CT's organs lie on the other CT.
//!
//! Why translation only, on coarse grids: the answer bounds the network's
//! passes (`seg::follow::segment_bounded`) with a margin of centimetres, so a
//! few millimetres and the patient's 1-3 degrees of rotation do not matter,
//! and the search must cost a fraction of a second on two cores. Each visit
//! has its own frame of reference (the table moves the patient hundreds of
//! millimetres in z), so z is searched over every overlap; x and y start from
//! the patient coordinates (both scans centre the table) and are searched
//! within [`XY_SEARCH_MM`].
//!
//! The measure is the normalised cross-correlation of HU clamped to
//! [`HU_CLAMP`] (body outline, fat, muscle, bone and organs; contrast and
//! non-contrast phases both show them), over the diagnostic CT's organ box
//! plus [`TEMPLATE_MARGIN_MM`].

use crate::volume::Volume;
use rayon::prelude::*;

/// HU window of the measure: air and lung flatten to its floor, bone to its
/// top, so neither outweighs the soft tissue where the organs are.
pub const HU_CLAMP: [f32; 2] = [-200.0, 300.0];
/// Voxel sizes of the pyramid (mm), coarsest first.
pub const LEVELS_MM: [f64; 2] = [16.0, 8.0];
/// Half-width of the x and y search around the patient coordinates (mm).
pub const XY_SEARCH_MM: f64 = 64.0;
/// Template: the reference's organ box widened by this (mm).
pub const TEMPLATE_MARGIN_MM: f64 = 30.0;
/// Least share of the template that must fall inside the other CT.
pub const MIN_OVERLAP: f64 = 0.6;

/// A CT on a coarse grid: box averages of clamped HU, in canonical (LPS)
/// voxel order; positions in patient millimetres (`origin + index * spacing`,
/// the canonical series' direction taken as the identity).
#[derive(Debug, Clone)]
pub struct Coarse {
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    pub origin: [f64; 3],
    pub data: Vec<f32>,
}

impl Coarse {
    fn at(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[(k * self.dims[1] + j) * self.dims[0] + i]
    }

    /// Trilinear value at patient position `p`; None outside the grid.
    fn sample(&self, p: [f64; 3]) -> Option<f32> {
        let mut i0 = [0usize; 3];
        let mut f = [0f32; 3];
        for a in 0..3 {
            let x = (p[a] - self.origin[a]) / self.spacing[a];
            if !(x >= 0.0 && x <= (self.dims[a] - 1) as f64) {
                return None;
            }
            let b = (x.floor() as usize).min(self.dims[a].saturating_sub(2));
            i0[a] = b;
            f[a] = (x - b as f64) as f32;
        }
        let n = |a: usize| (i0[a] + 1).min(self.dims[a] - 1);
        let (x0, y0, z0) = (i0[0], i0[1], i0[2]);
        let (x1, y1, z1) = (n(0), n(1), n(2));
        let c00 = self.at(x0, y0, z0) * (1.0 - f[0]) + self.at(x1, y0, z0) * f[0];
        let c10 = self.at(x0, y1, z0) * (1.0 - f[0]) + self.at(x1, y1, z0) * f[0];
        let c01 = self.at(x0, y0, z1) * (1.0 - f[0]) + self.at(x1, y0, z1) * f[0];
        let c11 = self.at(x0, y1, z1) * (1.0 - f[0]) + self.at(x1, y1, z1) * f[0];
        let c0 = c00 * (1.0 - f[1]) + c10 * f[1];
        let c1 = c01 * (1.0 - f[1]) + c11 * f[1];
        Some(c0 * (1.0 - f[2]) + c1 * f[2])
    }

    fn position(&self, i: usize, j: usize, k: usize) -> [f64; 3] {
        [
            self.origin[0] + i as f64 * self.spacing[0],
            self.origin[1] + j as f64 * self.spacing[1],
            self.origin[2] + k as f64 * self.spacing[2],
        ]
    }

    /// Patient-mm extent `[lo, hi]` of the grid's voxel centres per axis.
    fn extent(&self) -> [(f64, f64); 3] {
        std::array::from_fn(|a| {
            (
                self.origin[a],
                self.origin[a] + (self.dims[a] - 1) as f64 * self.spacing[a],
            )
        })
    }
}

/// Box average of `data` on `dims` by integer `factor` per axis (partial
/// boxes at the far edges dropped, at least one voxel kept).
fn box_average(
    data: &[f32],
    dims: [usize; 3],
    spacing: [f64; 3],
    origin: [f64; 3],
    factor: [usize; 3],
    clamp: Option<[f32; 2]>,
) -> Coarse {
    let nd: [usize; 3] = std::array::from_fn(|a| (dims[a] / factor[a]).max(1));
    let mut out = vec![0f32; nd[0] * nd[1] * nd[2]];
    out.par_chunks_mut(nd[0] * nd[1])
        .enumerate()
        .for_each(|(k, plane)| {
            let mut count = vec![0u32; plane.len()];
            for kk in k * factor[2]..((k + 1) * factor[2]).min(dims[2]) {
                for jj in 0..(nd[1] * factor[1]).min(dims[1]) {
                    let j = (jj / factor[1]).min(nd[1] - 1);
                    let row =
                        &data[(kk * dims[1] + jj) * dims[0]..(kk * dims[1] + jj + 1) * dims[0]];
                    for (ii, &v) in row.iter().enumerate().take(nd[0] * factor[0]) {
                        let i = (ii / factor[0]).min(nd[0] - 1);
                        let v = match clamp {
                            Some([lo, hi]) if v.is_finite() => v.clamp(lo, hi),
                            Some([lo, _]) => lo,
                            None => v,
                        };
                        plane[j * nd[0] + i] += v;
                        count[j * nd[0] + i] += 1;
                    }
                }
            }
            for (v, c) in plane.iter_mut().zip(count) {
                *v /= c.max(1) as f32;
            }
        });
    Coarse {
        dims: nd,
        spacing: std::array::from_fn(|a| spacing[a] * factor[a] as f64),
        origin: std::array::from_fn(|a| origin[a] + (factor[a] - 1) as f64 * 0.5 * spacing[a]),
        data: out,
    }
}

/// A CT's registration pyramid ([`LEVELS_MM`], coarsest first). `ct` must be
/// in canonical voxel order (`seg::orient`).
#[derive(Debug, Clone)]
pub struct Pyramid {
    pub levels: Vec<Coarse>,
}

impl Pyramid {
    pub fn new(ct: &Volume<f32>) -> Pyramid {
        let g = &ct.geom;
        let fine_mm = LEVELS_MM[LEVELS_MM.len() - 1];
        let factor = g.spacing.map(|s| ((fine_mm / s).round() as usize).max(1));
        let fine = box_average(
            &ct.data,
            g.dims,
            g.spacing,
            g.origin,
            factor,
            Some(HU_CLAMP),
        );
        let mut levels = vec![fine];
        for &mm in LEVELS_MM.iter().rev().skip(1) {
            let prev = levels.last().expect("the finest level is there");
            let factor = prev.spacing.map(|s| ((mm / s).round() as usize).max(1));
            let next = box_average(
                &prev.data,
                prev.dims,
                prev.spacing,
                prev.origin,
                factor,
                None,
            );
            levels.push(next);
        }
        levels.reverse();
        Pyramid { levels }
    }
}

/// The translation found by [`register`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    /// Reference patient position + `mm` = the same anatomy on the other CT.
    pub mm: [f64; 3],
    /// Normalised cross-correlation at that shift.
    pub ncc: f64,
    /// Share of the template inside the other CT at that shift.
    pub overlap: f64,
}

/// Template voxels of one level: patient position and value.
fn template(level: &Coarse, roi: &[(f64, f64); 3]) -> Vec<([f64; 3], f32)> {
    let mut t = Vec::new();
    for k in 0..level.dims[2] {
        for j in 0..level.dims[1] {
            for i in 0..level.dims[0] {
                let p = level.position(i, j, k);
                if (0..3).all(|a| p[a] >= roi[a].0 && p[a] <= roi[a].1) {
                    t.push((p, level.at(i, j, k)));
                }
            }
        }
    }
    t
}

/// NCC of the template against `moving` shifted by `s`, and the share of the
/// template inside it; None below [`MIN_OVERLAP`] or on a flat image.
fn ncc(tpl: &[([f64; 3], f32)], moving: &Coarse, s: [f64; 3]) -> Option<(f64, f64)> {
    let (mut n, mut sa, mut sb, mut saa, mut sbb, mut sab) = (0usize, 0.0, 0.0, 0.0, 0.0, 0.0);
    for &(p, a) in tpl {
        let Some(b) = moving.sample([p[0] + s[0], p[1] + s[1], p[2] + s[2]]) else {
            continue;
        };
        let (a, b) = (a as f64, b as f64);
        n += 1;
        sa += a;
        sb += b;
        saa += a * a;
        sbb += b * b;
        sab += a * b;
    }
    let overlap = n as f64 / tpl.len().max(1) as f64;
    if overlap < MIN_OVERLAP {
        return None;
    }
    let nf = n as f64;
    let va = saa - sa * sa / nf;
    let vb = sbb - sb * sb / nf;
    let cov = sab - sa * sb / nf;
    (va > 1e-6 && vb > 1e-6).then(|| (cov / (va * vb).sqrt(), overlap))
}

/// Best of the candidate shifts (ties to the first).
fn best_of(tpl: &[([f64; 3], f32)], moving: &Coarse, cands: Vec<[f64; 3]>) -> Option<Shift> {
    cands
        .par_iter()
        .filter_map(|&s| {
            ncc(tpl, moving, s).map(|(ncc, overlap)| Shift {
                mm: s,
                ncc,
                overlap,
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(None, |best: Option<Shift>, c| match best {
            Some(b) if b.ncc >= c.ncc => Some(b),
            _ => Some(c),
        })
}

/// The translation that carries `reference` (around its patient-mm organ box
/// `organs`) onto `moving`. None where no shift puts [`MIN_OVERLAP`] of the
/// template inside the other CT.
pub fn register(reference: &Pyramid, moving: &Pyramid, organs: &[(f64, f64); 3]) -> Option<Shift> {
    let roi: [(f64, f64); 3] = std::array::from_fn(|a| {
        (
            organs[a].0 - TEMPLATE_MARGIN_MM,
            organs[a].1 + TEMPLATE_MARGIN_MM,
        )
    });
    let mut best: Option<Shift> = None;
    for (li, (rl, ml)) in reference.levels.iter().zip(&moving.levels).enumerate() {
        let tpl = template(rl, &roi);
        if tpl.is_empty() {
            return None;
        }
        let step = LEVELS_MM[li] * 0.5;
        let cands: Vec<[f64; 3]> = match best {
            None => {
                // Every z where the template can overlap the other CT; x, y
                // around the patient coordinates.
                let me = ml.extent();
                let (tz0, tz1) = tpl.iter().fold((f64::MAX, f64::MIN), |(a, b), (p, _)| {
                    (a.min(p[2]), b.max(p[2]))
                });
                let (z0, z1) = (me[2].0 - tz1, me[2].1 - tz0);
                let nz = ((z1 - z0) / step).ceil().max(0.0) as usize;
                let nxy = (XY_SEARCH_MM / LEVELS_MM[li]).round() as i64;
                let mut c = Vec::new();
                for kz in 0..=nz {
                    for jy in -nxy..=nxy {
                        for ix in -nxy..=nxy {
                            c.push([
                                ix as f64 * LEVELS_MM[li],
                                jy as f64 * LEVELS_MM[li],
                                z0 + kz as f64 * step,
                            ]);
                        }
                    }
                }
                c
            }
            Some(b) => {
                // Two steps either way around the coarser level's best, then
                // one half-step either way around this level's.
                let around = |c: [f64; 3], st: f64, n: i64| {
                    let mut v = Vec::new();
                    for dz in -n..=n {
                        for dy in -n..=n {
                            for dx in -n..=n {
                                v.push([
                                    c[0] + dx as f64 * st,
                                    c[1] + dy as f64 * st,
                                    c[2] + dz as f64 * st,
                                ]);
                            }
                        }
                    }
                    v
                };
                let first = best_of(&tpl, ml, around(b.mm, step, 2));
                match first {
                    Some(f) => around(f.mm, step * 0.5, 1),
                    None => around(b.mm, step, 2),
                }
            }
        };
        best = best_of(&tpl, ml, cands).or(best);
        best?;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    /// A body with a spine and two blobs, on a grid of `spacing` at `origin`.
    fn body(dims: [usize; 3], spacing: [f64; 3], origin: [f64; 3], shift: [f64; 3]) -> Volume<f32> {
        let g = Geometry::new(dims, spacing, origin);
        let mut data = vec![-1000f32; dims[0] * dims[1] * dims[2]];
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let p = [
                        origin[0] + i as f64 * spacing[0] - shift[0],
                        origin[1] + j as f64 * spacing[1] - shift[1],
                        origin[2] + k as f64 * spacing[2] - shift[2],
                    ];
                    let e = (p[0] / 160.0).powi(2) + (p[1] / 110.0).powi(2);
                    let mut v = if e < 1.0 { -90.0 } else { -1000.0 };
                    // Spine and an organ that change along z.
                    if (p[0]).powi(2) + (p[1] - 60.0).powi(2) < 20.0f64.powi(2) {
                        v = 400.0;
                    }
                    let zc = 40.0 * (p[2] / 60.0).sin();
                    if (p[0] - 70.0 - zc).powi(2) + (p[1] + 10.0).powi(2) + (p[2] - 30.0).powi(2)
                        < 60.0f64.powi(2)
                    {
                        v = 60.0;
                    }
                    if (p[0] + 60.0).powi(2) + (p[1] - 20.0).powi(2) + (p[2] + 50.0).powi(2)
                        < 35.0f64.powi(2)
                    {
                        v = 30.0;
                    }
                    data[(k * dims[1] + j) * dims[0] + i] = v;
                }
            }
        }
        Volume { geom: g, data }
    }

    #[test]
    fn finds_a_known_shift_between_two_grids() {
        // Reference: 1 mm pixels, 2.5 mm slices, anatomy at z 0; the other
        // CT: 1.4 mm pixels, 4 mm slices, its own frame (the anatomy 612 mm
        // lower in z) and moved 14 mm left, 9 mm back.
        let r = body(
            [320, 240, 100],
            [1.0, 1.0, 2.5],
            [-160.0, -120.0, -125.0],
            [0.0; 3],
        );
        let truth = [14.0, -9.0, -612.0];
        let m = body(
            [260, 200, 70],
            [1.4, 1.4, 4.0],
            [-182.0, -140.0, -752.0],
            truth,
        );
        let organs = [(-100.0, 140.0), (-60.0, 40.0), (-90.0, 95.0)];
        let s = register(&Pyramid::new(&r), &Pyramid::new(&m), &organs).expect("a shift");
        for a in 0..3 {
            assert!(
                (s.mm[a] - truth[a]).abs() <= 4.0,
                "axis {a}: found {:?}, truth {truth:?} (ncc {:.3})",
                s.mm,
                s.ncc
            );
        }
        assert!(s.ncc > 0.8, "ncc {}", s.ncc);
    }

    #[test]
    fn no_shift_when_the_other_ct_cannot_hold_the_organs() {
        let r = body(
            [160, 120, 50],
            [2.0, 2.0, 5.0],
            [-160.0, -120.0, -125.0],
            [0.0; 3],
        );
        // A CT of a few slices: less than MIN_OVERLAP of the template fits.
        let m = body(
            [160, 120, 4],
            [2.0, 2.0, 5.0],
            [-160.0, -120.0, 0.0],
            [0.0; 3],
        );
        let organs = [(-100.0, 140.0), (-60.0, 40.0), (-90.0, 95.0)];
        assert!(register(&Pyramid::new(&r), &Pyramid::new(&m), &organs).is_none());
    }
}
