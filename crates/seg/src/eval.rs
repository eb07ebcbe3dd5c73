//! Segmentation metrics against truth label maps: Dice, HD95 (mm, patient
//! space), volume error, and slices where an organ was missed.

use crate::volume::Volume;
use serde::Serialize;

/// Metrics of one organ in one patient.
#[derive(Debug, Clone, Serialize)]
pub struct OrganMetrics {
    /// 2|A∩B| / (|A| + |B|); None when both are empty.
    pub dice: Option<f64>,
    /// 95th percentile of the pooled surface distances (both directions), mm;
    /// None when either mask is empty.
    pub hd95_mm: Option<f64>,
    pub truth_ml: f64,
    pub predicted_ml: f64,
    /// (predicted - truth) / truth, %; None when the truth is empty.
    pub volume_error_pct: Option<f64>,
    /// Axial slices (constant k) holding the organ in the truth.
    pub truth_slices: usize,
    /// Of those, the slices where the prediction has none of it.
    pub missed_slices: usize,
}

pub fn dice(pred: &[bool], truth: &[bool]) -> Option<f64> {
    let (mut i, mut a, mut b) = (0usize, 0usize, 0usize);
    for (&p, &t) in pred.iter().zip(truth) {
        i += (p && t) as usize;
        a += p as usize;
        b += t as usize;
    }
    (a + b > 0).then(|| 2.0 * i as f64 / (a + b) as f64)
}

/// Surface voxels: in the mask with a 6-neighbour outside it (or outside the grid).
pub fn surface(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let mut out = vec![false; mask.len()];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = i + nx * (j + ny * k);
                if !mask[v] {
                    continue;
                }
                out[v] = i == 0
                    || i + 1 == nx
                    || j == 0
                    || j + 1 == ny
                    || k == 0
                    || k + 1 == nz
                    || !mask[v - 1]
                    || !mask[v + 1]
                    || !mask[v - nx]
                    || !mask[v + nx]
                    || !mask[v - nx * ny]
                    || !mask[v + nx * ny];
            }
        }
    }
    out
}

/// 1-D squared distance transform (Felzenszwalb & Huttenlocher 2012) of
/// samples `f` at positions q * step (mm).
fn dt1(f: &[f64], step: f64, out: &mut [f64]) {
    let n = f.len();
    let mut v = vec![0usize; n];
    let mut z = vec![0f64; n + 1];
    let pos = |q: usize| q as f64 * step;
    let mut kk = 0usize;
    let mut first = None;
    for q in 0..n {
        if f[q].is_infinite() {
            continue;
        }
        if first.is_none() {
            first = Some(q);
            v[0] = q;
            z[0] = f64::NEG_INFINITY;
            z[1] = f64::INFINITY;
            continue;
        }
        loop {
            let p = v[kk];
            let s =
                ((f[q] + pos(q) * pos(q)) - (f[p] + pos(p) * pos(p))) / (2.0 * (pos(q) - pos(p)));
            // z[0] = -inf stops the pops at the first parabola.
            if s <= z[kk] && kk > 0 {
                kk -= 1;
                continue;
            }
            kk += 1;
            v[kk] = q;
            z[kk] = s;
            z[kk + 1] = f64::INFINITY;
            break;
        }
    }
    if first.is_none() {
        out.iter_mut().for_each(|o| *o = f64::INFINITY);
        return;
    }
    let mut k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while z[k + 1] < pos(q) {
            k += 1;
        }
        let d = pos(q) - pos(v[k]);
        *o = d * d + f[v[k]];
    }
}

/// Euclidean distance (mm) from every voxel to the nearest `seed` voxel, with
/// the grid's spacing (patient-space distance for orthonormal directions).
pub(crate) fn distance_map(seed: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let mut d: Vec<f64> = seed
        .iter()
        .map(|&s| if s { 0.0 } else { f64::INFINITY })
        .collect();
    let stride = [1, dims[0], dims[0] * dims[1]];
    for a in 0..3 {
        let n = dims[a];
        let (b, c) = match a {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        let mut line = vec![0f64; n];
        let mut out = vec![0f64; n];
        for y in 0..dims[c] {
            for x in 0..dims[b] {
                let base = x * stride[b] + y * stride[c];
                for (t, l) in line.iter_mut().enumerate() {
                    *l = d[base + t * stride[a]];
                }
                dt1(&line, spacing[a], &mut out);
                for (t, o) in out.iter().enumerate() {
                    d[base + t * stride[a]] = *o;
                }
            }
        }
    }
    d.iter_mut().for_each(|v| *v = v.sqrt());
    d
}

/// Percentile with linear interpolation between order statistics (numpy's default).
pub fn percentile(vals: &mut [f64], q: f64) -> Option<f64> {
    if vals.is_empty() {
        return None;
    }
    vals.sort_by(|a, b| a.total_cmp(b));
    let r = q / 100.0 * (vals.len() - 1) as f64;
    let (lo, hi) = (r.floor() as usize, r.ceil() as usize);
    Some(vals[lo] + (vals[hi] - vals[lo]) * (r - lo as f64))
}

/// HD95: surface voxels of each mask to the nearest surface voxel of the
/// other, both directions pooled, 95th percentile (medpy's `hd95`).
pub fn hd95_mm(a: &[bool], b: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Option<f64> {
    let (sa, sb) = (surface(a, dims), surface(b, dims));
    if !sa.iter().any(|&v| v) || !sb.iter().any(|&v| v) {
        return None;
    }
    let (da, db) = (
        distance_map(&sa, dims, spacing),
        distance_map(&sb, dims, spacing),
    );
    let mut d: Vec<f64> = Vec::new();
    for v in 0..a.len() {
        if sa[v] {
            d.push(db[v]);
        }
        if sb[v] {
            d.push(da[v]);
        }
    }
    percentile(&mut d, 95.0)
}

/// All metrics for organ `label` of `pred` against `truth` (same grid).
pub fn organ_metrics(pred: &Volume<u8>, truth: &Volume<u8>, label: u8) -> OrganMetrics {
    let g = &truth.geom;
    let p: Vec<bool> = pred.data.iter().map(|&v| v == label).collect();
    let t: Vec<bool> = truth.data.iter().map(|&v| v == label).collect();
    let ml = g.voxel_volume_ml();
    let (np, nt) = (
        p.iter().filter(|&&v| v).count(),
        t.iter().filter(|&&v| v).count(),
    );
    let slice = g.dims[0] * g.dims[1];
    let (mut truth_slices, mut missed_slices) = (0, 0);
    for k in 0..g.dims[2] {
        let r = k * slice..(k + 1) * slice;
        if t[r.clone()].iter().any(|&v| v) {
            truth_slices += 1;
            if !p[r].iter().any(|&v| v) {
                missed_slices += 1;
            }
        }
    }
    OrganMetrics {
        dice: dice(&p, &t),
        hd95_mm: hd95_mm(&p, &t, g.dims, g.spacing),
        truth_ml: nt as f64 * ml,
        predicted_ml: np as f64 * ml,
        volume_error_pct: (nt > 0).then(|| 100.0 * (np as f64 - nt as f64) / nt as f64),
        truth_slices,
        missed_slices,
    }
}

/// A thin slab cut out of a CT and its truth (`eval --slab N:MM`): `n`
/// slices `mm` apart along the slice axis, centred on the kidneys of the
/// truth (labels 2 and 3; else on every labelled voxel) and kept inside the
/// scan; the CT linearly interpolated along z, the truth by nearest slice.
/// None when the truth is empty.
pub fn cut_slab(
    ct: &Volume<f32>,
    truth: &Volume<u8>,
    n: usize,
    mm: f64,
) -> Option<(Volume<f32>, Volume<u8>)> {
    let g = &ct.geom;
    let [nx, ny, nz] = g.dims;
    let plane = nx * ny;
    let centre_of = |f: &dyn Fn(u8) -> bool| {
        let (mut s, mut c) = (0.0, 0usize);
        for (v, &l) in truth.data.iter().enumerate() {
            if f(l) {
                s += (v / plane) as f64;
                c += 1;
            }
        }
        (c > 0).then(|| s / c as f64)
    };
    let centre = centre_of(&|l| l == 2 || l == 3).or_else(|| centre_of(&|l| l != 0))?;
    let step = mm / g.spacing[2];
    let span = (n.max(1) - 1) as f64 * step;
    let last = (nz - 1) as f64;
    let k0 = (centre - span / 2.0).clamp(0.0, (last - span).max(0.0));
    let mut geom = g.clone();
    geom.dims = [nx, ny, n];
    geom.spacing[2] = mm;
    geom.origin = g.index_to_patient([0.0, 0.0, k0]);
    let mut c = vec![0f32; plane * n];
    let mut t = vec![0u8; plane * n];
    for i in 0..n {
        let kk = (k0 + i as f64 * step).clamp(0.0, last);
        let a = kk.floor() as usize;
        let b = (a + 1).min(nz - 1);
        let w = (kk - a as f64) as f32;
        let near = if kk - a as f64 >= 0.5 { b } else { a };
        let dst = i * plane;
        for p in 0..plane {
            c[dst + p] = ct.data[a * plane + p] * (1.0 - w) + ct.data[b * plane + p] * w;
            t[dst + p] = truth.data[near * plane + p];
        }
    }
    Some((
        Volume {
            geom: geom.clone(),
            data: c,
        },
        Volume { geom, data: t },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn cube(dims: [usize; 3], lo: [usize; 3], side: usize) -> Vec<bool> {
        let mut m = vec![false; dims.iter().product()];
        for k in lo[2]..lo[2] + side {
            for j in lo[1]..lo[1] + side {
                for i in lo[0]..lo[0] + side {
                    m[i + dims[0] * (j + dims[1] * k)] = true;
                }
            }
        }
        m
    }

    /// Two 10-voxel cubes, the second shifted by 2 voxels along i, spacing
    /// (1.5, 1, 1) mm. Overlap 8 x 10 x 10: Dice = 2 * 800 / 2000 = 0.8.
    /// Surface distances A -> B (488 surface voxels, by i layer of A):
    /// i = 0: 100 voxels, 3 mm to B's i = 2 face; i = 1: 36 ring voxels,
    /// 1.5 mm; i = 2..8: 7 x 36 ring voxels on B's side faces, 0; i = 9: 36
    /// ring voxels, 0, and 64 inner voxels at min(3, m) mm, m = their distance
    /// in voxels to B's side faces (m = 1: 28, m = 2: 20, m = 3: 12, m = 4: 4).
    /// B -> A mirrors this. Pooled, 976 values of which 2 x (100 + 16) = 232
    /// are 3 mm, more than the top 5 % (49): HD95 = 3 mm.
    #[test]
    fn shifted_cubes_dice_and_hd95_by_hand() {
        let dims = [16, 12, 12];
        let a = cube(dims, [1, 1, 1], 10);
        let b = cube(dims, [3, 1, 1], 10);
        assert!((dice(&a, &b).unwrap() - 0.8).abs() < 1e-12);
        let h = hd95_mm(&a, &b, dims, [1.5, 1.0, 1.0]).unwrap();
        assert!((h - 3.0).abs() < 1e-9, "{h}");
        // Spacing along the shift matters, across it not.
        let h = hd95_mm(&a, &b, dims, [1.0, 2.0, 2.0]).unwrap();
        assert!((h - 2.0).abs() < 1e-9, "{h}");
    }

    /// A 2 x 2 x 2 cube inside a 4 x 4 x 4 cube (spacing 1): Dice =
    /// 2 * 8 / 72 = 2/9. Every voxel of the small cube is on its surface and
    /// lies 1 voxel (face-adjacent) from the big cube's surface: 8 distances
    /// of 1. The big cube's 56 surface voxels: those at distance 1 from the
    /// small cube are face neighbours (24: 6 faces x 4), distance sqrt(2) the
    /// edge neighbours (24: 12 edges x 2), sqrt(3) the 8 corners. Pooled 64
    /// values: 32 ones, 24 sqrt(2), 8 sqrt(3); 95th percentile at rank
    /// 0.95 * 63 = 59.85 of the sorted list: among the sqrt(3) (ranks 56..63).
    #[test]
    fn nested_cubes_by_hand() {
        let dims = [6, 6, 6];
        let big = cube(dims, [1, 1, 1], 4);
        let small = cube(dims, [2, 2, 2], 2);
        assert!((dice(&small, &big).unwrap() - 2.0 / 9.0).abs() < 1e-12);
        let h = hd95_mm(&small, &big, dims, [1.0; 3]).unwrap();
        assert!((h - 3f64.sqrt()).abs() < 1e-9, "{h}");
    }

    #[test]
    fn distance_map_matches_brute_force() {
        let dims = [7, 5, 6];
        let sp = [0.7, 1.3, 2.1];
        let n: usize = dims.iter().product();
        let seed: Vec<bool> = (0..n).map(|v| (v * 7919 + 13) % 23 == 0).collect();
        let d = distance_map(&seed, dims, sp);
        let xyz = |v: usize| {
            [
                (v % dims[0]) as f64 * sp[0],
                ((v / dims[0]) % dims[1]) as f64 * sp[1],
                (v / (dims[0] * dims[1])) as f64 * sp[2],
            ]
        };
        for v in 0..n {
            let best = (0..n)
                .filter(|&s| seed[s])
                .map(|s| crate::volume::dist(xyz(v), xyz(s)))
                .fold(f64::INFINITY, f64::min);
            assert!((d[v] - best).abs() < 1e-9, "voxel {v}: {} vs {best}", d[v]);
        }
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], 95) = 3.85
        assert!((percentile(&mut [4.0, 1.0, 3.0, 2.0], 95.0).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&mut [], 95.0), None);
    }

    #[test]
    fn organ_metrics_volume_and_missed_slices() {
        let g = Geometry::new([4, 4, 4], [2.0, 2.0, 2.5], [0.0; 3]);
        let mut truth = Volume::filled(g.clone(), 0u8);
        let mut pred = Volume::filled(g, 0u8);
        for k in 0..4 {
            for j in 1..3 {
                for i in 1..3 {
                    truth.set(i, j, k, 2);
                    if k < 3 {
                        pred.set(i, j, k, 2);
                    }
                }
            }
        }
        pred.set(0, 0, 0, 2); // one extra voxel
        let m = organ_metrics(&pred, &truth, 2);
        assert_eq!((m.truth_slices, m.missed_slices), (4, 1));
        assert!((m.truth_ml - 16.0 * 0.01).abs() < 1e-12);
        // 13 predicted voxels against 16: -18.75 %
        assert!((m.volume_error_pct.unwrap() + 18.75).abs() < 1e-9);
        assert!((m.dice.unwrap() - 24.0 / 29.0).abs() < 1e-12);
        let none = organ_metrics(&pred, &truth, 1);
        assert_eq!(
            (none.dice, none.hd95_mm, none.volume_error_pct),
            (None, None, None)
        );
    }

    #[test]
    fn slab_centred_on_the_kidneys_and_resampled() {
        // 1 x 1 x 40 at 1 mm, CT value = z index; kidney on slices 20-29.
        let g = Geometry::new([1, 1, 40], [1.0; 3], [0.0, 0.0, -5.0]);
        let ct = Volume {
            geom: g.clone(),
            data: (0..40).map(|k| k as f32).collect(),
        };
        let mut t = Volume::filled(g, 0u8);
        for k in 20..30 {
            t.data[k] = 2;
        }
        // 4 slices 2.5 mm apart around centre 24.5: 20.75, 23.25, 25.75, 28.25.
        let (c, l) = cut_slab(&ct, &t, 4, 2.5).unwrap();
        assert_eq!(c.geom.dims, [1, 1, 4]);
        assert_eq!(c.geom.spacing[2], 2.5);
        assert!((c.geom.origin[2] - (-5.0 + 20.75)).abs() < 1e-9);
        for (i, v) in [20.75f32, 23.25, 25.75, 28.25].iter().enumerate() {
            assert!((c.data[i] - v).abs() < 1e-5, "{:?}", c.data);
        }
        assert_eq!(l.data, vec![2, 2, 2, 2]);
        // Near the top of the scan the slab stays inside it.
        let mut t2 = Volume::filled(ct.geom.clone(), 0u8);
        t2.data[39] = 1;
        let (c2, _) = cut_slab(&ct, &t2, 10, 2.0).unwrap();
        assert!((c2.data[9] - 39.0).abs() < 1e-5, "{:?}", c2.data);
        assert!(cut_slab(&ct, &Volume::filled(ct.geom.clone(), 0u8), 4, 2.0).is_none());
    }
}
