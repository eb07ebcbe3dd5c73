//! Joining the planes by what each can see (`--planes auto`): every plane's
//! mask probabilities, pasted on the CT grid, are averaged with a weight per
//! plane and organ that comes from the scan's geometry; the fused map is then
//! cleaned (one component per organ, one kidney per side, holes closed).
//!
//! Why weights from geometry: a coronal or sagittal image is as tall as the
//! scan is long. On a 40 mm slab it is a strip in which no organ is whole, and
//! a 2-of-3 vote lets two such strips erase what the axial pass found. The
//! axial plane always sees the whole cross-section and keeps weight 1.

use super::consensus::components;
use super::plane::{ClassTarget, Plane};
use crate::organs;
use crate::volume::{Geometry, Volume};
use serde::Serialize;

/// Scan length (mm) at which a coronal or sagittal image of an organ gets
/// half weight, i.e. from which the three planes outvote the axial pass
/// under the weighted median. Measured on the tuning phantoms (seeds
/// 31000-31002, contrast CTs cut to kidney-centred slabs of 120-180 mm,
/// `organdose eval --data tuning --scans ct --compare --slab N:3`; docs/
/// segmentation.md, "Plane fusion"): the vote overtook the axial pass at
/// about 151-153 mm for the liver and the spleen (the spleen, high beside the
/// liver's dome, is cut by shorter scans although it is only about 11 cm
/// long) and was level with it or better from 120 mm for the kidneys
/// (mean length 11 cm, Emamian et al., AJR 1993;160:83). An organ the model
/// has beyond these uses the kidneys' value.
pub(crate) fn vote_length_mm(t: ClassTarget) -> f64 {
    match t {
        ClassTarget::Kidney => 130.0,
        ClassTarget::Organ(organs::LIVER) => 150.0,
        ClassTarget::Organ(organs::SPLEEN) => 150.0,
        ClassTarget::Organ(_) => 130.0,
    }
}

/// Width of the ramp of the coronal and sagittal weight around
/// [`vote_length_mm`] (mm): none 20 mm below it, full 20 mm above.
pub(crate) const CONTEXT_MM: f64 = 40.0;
/// Slice spacing up to which the coronal and sagittal images are sharp
/// enough vertically for full weight (mm); the training CTs are 1.5-3 mm.
pub(crate) const SHARP_SPACING_MM: f64 = 3.5;
/// Slice spacing at which the coronal and sagittal images get no weight (mm).
pub(crate) const COARSE_SPACING_MM: f64 = 7.0;
/// A plane whose weight is below this for every organ is not run.
pub(crate) const MIN_WEIGHT: f32 = 0.05;

/// Weight of each plane (axial, coronal, sagittal) per model class (index 0,
/// background, unused), with the reasons a plane lost weight.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlaneWeights {
    /// `w[plane][class]`, plane in the order axial, coronal, sagittal.
    pub w: [Vec<f32>; 3],
    pub notes: Vec<String>,
}

pub(crate) const PLANES: [Plane; 3] = [Plane::Axial, Plane::Coronal, Plane::Sagittal];

fn plane_index(p: Plane) -> usize {
    match p {
        Plane::Axial => 0,
        Plane::Coronal => 1,
        Plane::Sagittal => 2,
    }
}

impl PlaneWeights {
    /// The weights for a CT of geometry `g` (canonical voxel order: k is the
    /// patient's z) and the model's class targets.
    pub fn for_geometry(g: &Geometry, targets: &[Option<ClassTarget>]) -> PlaneWeights {
        let sz = g.spacing[2];
        let length_mm = g.dims[2] as f64 * sz;
        let w_spacing =
            ((COARSE_SPACING_MM - sz) / (COARSE_SPACING_MM - SHARP_SPACING_MM)).clamp(0.0, 1.0);
        let mut w = [
            vec![0f32; targets.len()],
            vec![0f32; targets.len()],
            vec![0f32; targets.len()],
        ];
        let mut notes = Vec::new();
        let mut short = Vec::new();
        for (c, t) in targets.iter().enumerate() {
            let Some(t) = t else { continue };
            let l = vote_length_mm(*t);
            let w_len = ((length_mm - l) / CONTEXT_MM + 0.5).clamp(0.0, 1.0);
            let other = (w_len * w_spacing) as f32;
            w[0][c] = 1.0;
            w[1][c] = other;
            w[2][c] = other;
            if w_len < 1.0 {
                short.push(format!(
                    "{} full weight from {:.0} mm, here {:.2}",
                    target_name(*t),
                    l + CONTEXT_MM / 2.0,
                    other
                ));
            }
        }
        if !short.is_empty() {
            notes.push(format!(
                "coronal/sagittal planes: the scan is {length_mm:.0} mm long, short for a whole organ with context ({}); axial decides where the weight is below 0.5",
                short.join("; ")
            ));
        }
        if w_spacing < 1.0 {
            notes.push(format!(
                "coronal/sagittal planes: slices {sz:.1} mm apart blur their images along z (weight x{w_spacing:.2}; full weight up to {SHARP_SPACING_MM} mm, none from {COARSE_SPACING_MM} mm)"
            ));
        }
        PlaneWeights { w, notes }
    }

    /// Equal weights on the given planes (for tests and comparisons).
    pub fn equal(planes: &[Plane], n_classes: usize) -> PlaneWeights {
        let mut w = [
            vec![0f32; n_classes],
            vec![0f32; n_classes],
            vec![0f32; n_classes],
        ];
        for &p in planes {
            for x in w[plane_index(p)].iter_mut().skip(1) {
                *x = 1.0;
            }
        }
        PlaneWeights {
            w,
            notes: Vec::new(),
        }
    }

    pub fn of(&self, p: Plane) -> &[f32] {
        &self.w[plane_index(p)]
    }

    /// The planes worth running: those with weight >= MIN_WEIGHT for some organ.
    pub fn planes(&self) -> Vec<Plane> {
        PLANES
            .iter()
            .copied()
            .filter(|&p| self.of(p).iter().any(|&x| x >= MIN_WEIGHT))
            .collect()
    }

    /// Per class, the scale of plane `p`'s probability in the u8 accumulator:
    /// 255 x its share of the weights of the planes that run.
    pub fn scales(&self, p: Plane) -> Vec<f32> {
        self.scales_among(p, &self.planes())
    }

    /// [`Self::scales`] among the planes `run` (those whose probabilities exist).
    fn scales_among(&self, p: Plane, run: &[Plane]) -> Vec<f32> {
        let me = self.of(p);
        (0..me.len())
            .map(|c| {
                let total: f32 = run
                    .iter()
                    .map(|&q| self.of(q)[c])
                    .filter(|&x| x >= MIN_WEIGHT)
                    .sum();
                if me[c] >= MIN_WEIGHT && total > 0.0 {
                    255.0 * me[c] / total
                } else {
                    0.0
                }
            })
            .collect()
    }
}

fn target_name(t: ClassTarget) -> &'static str {
    match t {
        ClassTarget::Kidney => "kidney",
        ClassTarget::Organ(l) => organs::name(l).unwrap_or("organ"),
    }
}

/// One slice's probability of one class, on the bounding box of its non-zero
/// pixels (u0, v0, width, height in slice pixels), in 1/255 steps.
#[derive(Debug, Clone)]
struct Patch {
    u0: usize,
    v0: usize,
    w: usize,
    h: usize,
    q: Vec<u8>,
}

/// One plane's mask probabilities on the CT grid, kept per slice and class
/// as small patches (an organ covers a small part of each slice): what the
/// fusion averages and what the per-plane agreement is measured on.
#[derive(Debug, Clone)]
pub struct PlaneProbs {
    pub plane: Plane,
    pub dims: [usize; 3],
    /// `slices[t][c]`: slice t along the plane's axis, model class c.
    slices: Vec<Vec<Option<Patch>>>,
}

impl PlaneProbs {
    pub fn new(plane: Plane, dims: [usize; 3], n_classes: usize) -> PlaneProbs {
        let ns = dims[plane.axes().0];
        PlaneProbs {
            plane,
            dims,
            slices: vec![vec![None; n_classes]; ns],
        }
    }

    /// Keeps slice `t`'s probability image `p` (nu x nv, row v) of class `c`.
    pub fn put(&mut self, t: usize, c: usize, p: &[f32]) {
        let (_, ua, _) = self.plane.axes();
        let nu = self.dims[ua];
        let (mut u0, mut u1, mut v0, mut v1) = (usize::MAX, 0, usize::MAX, 0);
        for (i, &x) in p.iter().enumerate() {
            if x >= 0.5 / 255.0 {
                let (u, v) = (i % nu, i / nu);
                u0 = u0.min(u);
                u1 = u1.max(u);
                v0 = v0.min(v);
                v1 = v1.max(v);
            }
        }
        let Some(slot) = self.slices.get_mut(t).and_then(|s| s.get_mut(c)) else {
            return;
        };
        if u0 == usize::MAX {
            *slot = None;
            return;
        }
        let (w, h) = (u1 - u0 + 1, v1 - v0 + 1);
        let mut q = Vec::with_capacity(w * h);
        for v in v0..=v1 {
            for u in u0..=u1 {
                q.push((p[v * nu + u].clamp(0.0, 1.0) * 255.0 + 0.5) as u8);
            }
        }
        *slot = Some(Patch { u0, v0, w, h, q });
    }

    /// Calls `f(voxel, class, probability in 1/255)` for every stored pixel.
    pub fn for_each(&self, mut f: impl FnMut(usize, usize, u8)) {
        let (sa, ua, va) = self.plane.axes();
        let stride = [1, self.dims[0], self.dims[0] * self.dims[1]];
        for (t, cls) in self.slices.iter().enumerate() {
            for (c, patch) in cls.iter().enumerate() {
                let Some(pt) = patch else { continue };
                for dv in 0..pt.h {
                    for du in 0..pt.w {
                        let q = pt.q[dv * pt.w + du];
                        if q > 0 {
                            let vox = t * stride[sa]
                                + (pt.u0 + du) * stride[ua]
                                + (pt.v0 + dv) * stride[va];
                            f(vox, c, q);
                        }
                    }
                }
            }
        }
    }
}

/// How the planes' probabilities of a voxel are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FuseRule {
    /// Weighted median: organ where planes holding at least half the weight
    /// give it a probability >= the threshold. With equal weights and 0.5 it
    /// is the 2-of-3 vote; a plane with no weight has no say.
    Median,
    /// Weighted mean of the probabilities >= the threshold.
    Mean,
}

impl FuseRule {
    pub fn name(self) -> &'static str {
        match self {
            FuseRule::Median => "median",
            FuseRule::Mean => "mean",
        }
    }
}

/// The planes' probabilities joined with `weights`: for the mean, each plane
/// adds its share of p; for the median, its share where p >= `thresh` (the
/// weighted median is >= thresh where those shares reach one half).
pub(crate) fn fuse(
    planes: &[PlaneProbs],
    weights: &PlaneWeights,
    n_classes: usize,
    rule: FuseRule,
    thresh: f32,
) -> FusedProbs {
    let q_min = (thresh * 255.0 + 0.5).clamp(1.0, 255.0) as u8;
    let n = planes
        .first()
        .map_or(0, |p| p.dims.iter().product::<usize>());
    let mut f = FusedProbs::new(n_classes, n);
    // Shares among the planes that were kept.
    let run: Vec<Plane> = planes.iter().map(|p| p.plane).collect();
    for pp in planes {
        let scales = weights.scales_among(pp.plane, &run);
        pp.for_each(|v, c, q| {
            if c > 0 && c < n_classes {
                let p = match rule {
                    FuseRule::Mean => q as f32 / 255.0,
                    FuseRule::Median => (q >= q_min) as u8 as f32,
                };
                f.add(c, v, scales[c], p);
            }
        });
    }
    f
}

/// The weighted mean of the planes' class probabilities on the CT grid, in
/// 1/255 steps: `acc[c][voxel]` for each model class c >= 1 (index 0 empty).
/// Each plane adds round(scale x p), the scales summing to 255 per class.
#[derive(Debug, Clone)]
pub(crate) struct FusedProbs {
    pub acc: Vec<Vec<u8>>,
}

impl FusedProbs {
    pub fn new(n_classes: usize, n_voxels: usize) -> FusedProbs {
        FusedProbs {
            acc: (0..n_classes)
                .map(|c| {
                    if c == 0 {
                        Vec::new()
                    } else {
                        vec![0u8; n_voxels]
                    }
                })
                .collect(),
        }
    }

    /// Adds probability `p` of class `c` at `voxel` with `scale`.
    #[inline]
    pub fn add(&mut self, c: usize, voxel: usize, scale: f32, p: f32) {
        let q = (scale * p + 0.5) as u8;
        if q > 0 {
            let a = &mut self.acc[c][voxel];
            *a = a.saturating_add(q);
        }
    }

    /// Class-index map: the most probable class where its fused probability
    /// is >= `thresh` (on a tie the later class, as in one plane's slices).
    pub fn labels(&self, thresh: f32) -> Vec<u8> {
        let n = self.acc.iter().map(Vec::len).max().unwrap_or(0);
        let t = ((thresh * 255.0) + 0.5).clamp(1.0, 255.0) as u8;
        let mut best = vec![t; n];
        let mut out = vec![0u8; n];
        for (c, a) in self.acc.iter().enumerate().skip(1) {
            for (i, &v) in a.iter().enumerate() {
                if v >= best[i] {
                    best[i] = v;
                    out[i] = c as u8;
                }
            }
        }
        out
    }
}

/// How the fused probabilities become labels.
#[derive(Debug, Clone, Copy)]
pub struct FuseOptions {
    pub rule: FuseRule,
    /// A voxel is organ where the organ's fused probability is >= this.
    pub thresh: f32,
    /// Longest run of axial slices without an organ filled between slices with it.
    pub max_fill_gap: usize,
    /// Close each organ's enclosed holes (the kidney inside its capsule).
    pub fill_holes: bool,
}

/// What [`clean_labels`] made of a class map.
#[derive(Debug, Clone, Default)]
pub struct Cleaned {
    pub labels: Vec<u8>,
    /// What was dropped or looks wrong, for the log and the masks' notes.
    pub notes: Vec<String>,
    /// Organs (label, why) the clean-up cannot vouch for: their masks are
    /// held for review (`seg::confidence`).
    pub held: Vec<(u8, String)>,
}

/// Organ labels from the planes' probabilities: weighted mean, threshold,
/// gaps along z filled, then [`clean_labels`].
pub fn fused_labels(
    planes: &[PlaneProbs],
    weights: &PlaneWeights,
    opts: &FuseOptions,
    ct: &Volume<f32>,
    targets: &[Option<ClassTarget>],
) -> Cleaned {
    let nc = targets.len();
    let level = match opts.rule {
        FuseRule::Mean => opts.thresh,
        FuseRule::Median => 0.5,
    };
    let fused = fuse(planes, weights, nc, opts.rule, opts.thresh);
    let mut map = fused.labels(level);
    if opts.rule == FuseRule::Median {
        break_vote_ties(&mut map, &fused, planes, weights, level);
    }
    if map.len() != ct.data.len() {
        map = vec![0u8; ct.data.len()];
    }
    if opts.max_fill_gap > 0 {
        for c in 1..nc {
            super::consensus::fill_gaps(&mut map, ct.geom.dims, 2, c as u8, opts.max_fill_gap);
        }
    }
    clean_labels(&map, ct, targets, opts.fill_holes)
}

/// Where several classes pass the median at a voxel (each has the votes),
/// the one with the highest weighted mean probability takes it, as one
/// plane's pixel takes its most probable class. Without this the later class
/// won every tie: on a slab of the seed-777 phantom the spleen took the left
/// kidney's border (Dice 0.923 -> 0.897 against the axial pass).
fn break_vote_ties(
    map: &mut [u8],
    votes: &FusedProbs,
    planes: &[PlaneProbs],
    weights: &PlaneWeights,
    level: f32,
) {
    let t = ((level * 255.0) + 0.5).clamp(1.0, 255.0) as u8;
    let nc = votes.acc.len();
    let passing = |v: usize| (1..nc).filter(move |&c| votes.acc[c].get(v).is_some_and(|&x| x >= t));
    let mut tied: std::collections::HashMap<usize, Vec<f32>> = std::collections::HashMap::new();
    for v in 0..map.len() {
        if passing(v).count() > 1 {
            tied.insert(v, vec![0f32; nc]);
        }
    }
    if tied.is_empty() {
        return;
    }
    let run: Vec<Plane> = planes.iter().map(|p| p.plane).collect();
    for pp in planes {
        let scales = weights.scales_among(pp.plane, &run);
        pp.for_each(|v, c, q| {
            if let Some(m) = tied.get_mut(&v) {
                if c < nc {
                    m[c] += scales[c] * q as f32;
                }
            }
        });
    }
    for (v, m) in tied {
        if let Some(best) = passing(v).max_by(|&a, &b| m[a].total_cmp(&m[b]).then(a.cmp(&b))) {
            map[v] = best as u8;
        }
    }
}

/// Below this a dropped component is not worth a warning (mL).
pub(crate) const DROP_WARN_ML: f64 = 5.0;
/// Where each voxel of a component lies, and the component's centroid.
fn centroid(vox: &[usize], g: &Geometry) -> [f64; 3] {
    let d = g.dims;
    let mut s = [0.0; 3];
    for &v in vox {
        let p = g.index_to_patient([
            (v % d[0]) as f64,
            ((v / d[0]) % d[1]) as f64,
            (v / (d[0] * d[1])) as f64,
        ]);
        for a in 0..3 {
            s[a] += p[a];
        }
    }
    let n = vox.len().max(1) as f64;
    [s[0] / n, s[1] / n, s[2] / n]
}

/// Body centre (mean patient x and y of voxels above -500 HU, on a 4-voxel
/// lattice); the volume's centre when there is no body.
pub(crate) fn body_centre(ct: &Volume<f32>) -> [f64; 2] {
    let g = &ct.geom;
    let d = g.dims;
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0usize);
    for k in (0..d[2]).step_by(4) {
        for j in (0..d[1]).step_by(4) {
            for i in (0..d[0]).step_by(4) {
                if ct.data[g.linear(i, j, k)] > -500.0 {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    sx += p[0];
                    sy += p[1];
                    n += 1;
                }
            }
        }
    }
    if n == 0 {
        let p = g.index_to_patient([
            (d[0] as f64 - 1.0) / 2.0,
            (d[1] as f64 - 1.0) / 2.0,
            (d[2] as f64 - 1.0) / 2.0,
        ]);
        [p[0], p[1]]
    } else {
        [sx / n as f64, sy / n as f64]
    }
}

/// Organ labels from a fused class map, cleaned: one component per organ
/// (a part of the liver cut off by a slab's edge was kept on trial: on tuning
/// phantom slabs of 120 mm it added false liver, so the largest only),
/// one kidney per side of the body's midline (LPS: larger x is the
/// patient's left), with `fill_holes` each organ's enclosed cavities closed
/// (the kidney is the whole organ inside its capsule: a tumour or cyst the
/// network left out inside it is kidney). Returns the labels and what was
/// dropped or looks wrong, and the organs it cannot vouch for.
pub(crate) fn clean_labels(
    map: &[u8],
    ct: &Volume<f32>,
    targets: &[Option<ClassTarget>],
    fill_holes: bool,
) -> Cleaned {
    let g = &ct.geom;
    let dims = g.dims;
    let ml = g.voxel_volume_ml();
    let centre = body_centre(ct);
    let mut out = vec![0u8; map.len()];
    let mut notes = Vec::new();
    let mut held = Vec::new();
    let put = |out: &mut Vec<u8>, vox: &[usize], l: u8| {
        for &v in vox {
            out[v] = l;
        }
    };

    for (c, t) in targets.iter().enumerate() {
        let Some(t) = t else { continue };
        let comps = components(map, dims, c as u8);
        match t {
            ClassTarget::Organ(l) => {
                let Some(first) = comps.first() else { continue };
                let name = organs::name(*l).unwrap_or("organ");
                for d in comps.iter().skip(1) {
                    let v = d.len() as f64 * ml;
                    if v >= DROP_WARN_ML {
                        notes.push(format!(
                            "{name}: a second component of {v:.1} mL was dropped (kept {:.1} mL)",
                            first.len() as f64 * ml
                        ));
                    }
                }
                let x = centroid(first, g)[0];
                if *l == organs::LIVER && x > centre[0] {
                    notes.push("liver: found on the patient's left: check the orientation of the CT (or situs inversus)".into());
                }
                if *l == organs::SPLEEN && x < centre[0] {
                    notes.push("spleen: found on the patient's right: check the orientation of the CT (or situs inversus)".into());
                }
                put(&mut out, first, *l);
            }
            ClassTarget::Kidney => {
                // The two largest components, each named by its side; the rest
                // dropped, a large one said. (Keeping the largest per side
                // instead dropped true kidneys for larger false ones on the
                // same side on real slices: CURVAS kidney 0.825 -> 0.780.)
                let kept: Vec<&Vec<usize>> = comps.iter().take(2).collect();
                let mut sides = Vec::new();
                for comp in &kept {
                    let p = centroid(comp, g);
                    let side = usize::from(p[0] > centre[0]); // 1: left
                    let name = ["kidney_right", "kidney_left"][side];
                    if p[1] < centre[1] {
                        notes.push(format!(
                            "{name}: its centroid lies in the front half of the body (kidneys are posterior): check the mask and the CT's orientation"
                        ));
                    }
                    put(
                        &mut out,
                        comp,
                        [organs::KIDNEY_RIGHT, organs::KIDNEY_LEFT][side],
                    );
                    sides.push(side);
                }
                if sides.len() == 2 && sides[0] == sides[1] {
                    let why = format!(
                        "two separate parts ({:.1} and {:.1} mL) and no kidney on the other side: one may not be kidney",
                        kept[0].len() as f64 * ml,
                        kept[1].len() as f64 * ml
                    );
                    notes.push(format!(
                        "{}: {why}",
                        ["kidney_right", "kidney_left"][sides[0]]
                    ));
                    // Which part is the kidney is a person's call: on a real
                    // slice the network gave a bowel loop in front of the
                    // kidney as a second part, and a kidney stage kept the loop.
                    held.push(([organs::KIDNEY_RIGHT, organs::KIDNEY_LEFT][sides[0]], why));
                }
                for d in comps.iter().skip(2) {
                    let v = d.len() as f64 * ml;
                    if v >= DROP_WARN_ML {
                        notes.push(format!(
                            "kidney: a third component of {v:.1} mL was dropped"
                        ));
                    }
                }
            }
        }
    }
    // Holes: background enclosed by one organ in 3-D becomes that organ.
    let labels: Vec<u8> = if fill_holes {
        let mut l: Vec<u8> = out.iter().copied().filter(|&v| v != 0).collect();
        l.sort_unstable();
        l.dedup();
        l
    } else {
        Vec::new()
    };
    for l in labels {
        fill_holes_3d(&mut out, dims, l);
    }
    Cleaned {
        labels: out,
        notes,
        held,
    }
}

/// Index box `[lo, hi]` (inclusive) of the voxels equal to `l` in a map of
/// `dims` (x fastest); None when there are none.
pub(crate) fn label_bbox(map: &[u8], dims: [usize; 3], l: u8) -> Option<[[usize; 3]; 2]> {
    labels_bbox(map, dims, &[l])
}

/// [`label_bbox`] of the voxels with any of `ls` (inclusive corners).
pub(crate) fn labels_bbox(map: &[u8], dims: [usize; 3], ls: &[u8]) -> Option<[[usize; 3]; 2]> {
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for (v, &x) in map.iter().enumerate() {
        if x != 0 && ls.contains(&x) {
            let ijk = [
                v % dims[0],
                (v / dims[0]) % dims[1],
                v / (dims[0] * dims[1]),
            ];
            for a in 0..3 {
                lo[a] = lo[a].min(ijk[a]);
                hi[a] = hi[a].max(ijk[a]);
            }
        }
    }
    (lo[0] != usize::MAX).then_some([lo, hi])
}

/// Background voxels that label `l` encloses in 3-D (not reachable from the
/// faces of `l`'s bounding box through voxels other than `l`, 6-connected)
/// become `l`: a cyst or tumour inside the capsule that the network left out.
/// The renal sinus, open to the hilum, is not enclosed and stays as found.
/// Returns the voxels filled.
pub(crate) fn fill_holes_3d(map: &mut [u8], dims: [usize; 3], l: u8) -> usize {
    let [nx, ny, _] = dims;
    let Some([lo, hi]) = label_bbox(map, dims, l) else {
        return 0;
    };
    if (0..3).any(|a| hi[a] - lo[a] < 2) {
        return 0;
    }
    let w = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
    let at = |i: usize, j: usize, k: usize| (lo[0] + i) + nx * ((lo[1] + j) + ny * (lo[2] + k));
    let mut reach = vec![false; w[0] * w[1] * w[2]];
    let r = |i: usize, j: usize, k: usize| i + w[0] * (j + w[1] * k);
    let mut stack = Vec::new();
    for k in 0..w[2] {
        for j in 0..w[1] {
            for i in 0..w[0] {
                let face =
                    i == 0 || j == 0 || k == 0 || i + 1 == w[0] || j + 1 == w[1] || k + 1 == w[2];
                if face && map[at(i, j, k)] != l {
                    reach[r(i, j, k)] = true;
                    stack.push((i, j, k));
                }
            }
        }
    }
    while let Some((i, j, k)) = stack.pop() {
        let mut visit = |i: usize, j: usize, k: usize| {
            let q = r(i, j, k);
            if !reach[q] && map[at(i, j, k)] != l {
                reach[q] = true;
                stack.push((i, j, k));
            }
        };
        if i > 0 {
            visit(i - 1, j, k);
        }
        if i + 1 < w[0] {
            visit(i + 1, j, k);
        }
        if j > 0 {
            visit(i, j - 1, k);
        }
        if j + 1 < w[1] {
            visit(i, j + 1, k);
        }
        if k > 0 {
            visit(i, j, k - 1);
        }
        if k + 1 < w[2] {
            visit(i, j, k + 1);
        }
    }
    let mut filled = 0;
    for k in 0..w[2] {
        for j in 0..w[1] {
            for i in 0..w[0] {
                let v = at(i, j, k);
                if !reach[r(i, j, k)] && map[v] == 0 {
                    map[v] = l;
                    filled += 1;
                }
            }
        }
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kidney_targets() -> Vec<Option<ClassTarget>> {
        vec![
            None,
            Some(ClassTarget::Organ(organs::LIVER)),
            Some(ClassTarget::Kidney),
            Some(ClassTarget::Organ(organs::SPLEEN)),
        ]
    }

    #[test]
    fn thin_slab_gives_coronal_and_sagittal_no_weight() {
        // 20 slices of 2 mm: 40 mm, shorter than any organ.
        let g = Geometry::new([64, 64, 20], [0.8, 0.8, 2.0], [0.0; 3]);
        let w = PlaneWeights::for_geometry(&g, &kidney_targets());
        assert_eq!(w.planes(), vec![Plane::Axial]);
        assert_eq!(w.scales(Plane::Axial)[2], 255.0);
        assert!(w.notes[0].contains("40 mm"), "{:?}", w.notes);
        // A 300 mm scan at 2.5 mm: all three planes, equal shares.
        let g = Geometry::new([64, 64, 120], [0.8, 0.8, 2.5], [0.0; 3]);
        let w = PlaneWeights::for_geometry(&g, &kidney_targets());
        assert_eq!(w.planes().len(), 3);
        assert!(w.notes.is_empty(), "{:?}", w.notes);
        for c in 1..4 {
            assert!((w.scales(Plane::Coronal)[c] - 85.0).abs() < 1e-4);
        }
        // 150 mm: the kidney (vote length 130 mm) full, the liver and the
        // spleen (150 mm, where the vote overtook the axial pass on the
        // tuning phantoms) half; at 140 mm a quarter (the kidney 0.75), so
        // the axial pass decides them; at 170 mm full.
        let g = Geometry::new([64, 64, 60], [0.8, 0.8, 2.5], [0.0; 3]);
        let w = PlaneWeights::for_geometry(&g, &kidney_targets());
        assert!((w.of(Plane::Sagittal)[1] - 0.5).abs() < 1e-6);
        assert_eq!(w.of(Plane::Sagittal)[2], 1.0);
        assert!((w.of(Plane::Coronal)[3] - 0.5).abs() < 1e-6);
        let g = Geometry::new([64, 64, 56], [0.8, 0.8, 2.5], [0.0; 3]);
        let w = PlaneWeights::for_geometry(&g, &kidney_targets());
        assert!((w.of(Plane::Sagittal)[1] - 0.25).abs() < 1e-6);
        assert!((w.of(Plane::Sagittal)[3] - 0.25).abs() < 1e-6);
        assert!((w.of(Plane::Sagittal)[2] - 0.75).abs() < 1e-6);
        assert!(
            w.notes[0].contains("liver full weight from 170 mm"),
            "{:?}",
            w.notes
        );
        let g = Geometry::new([64, 64, 68], [0.8, 0.8, 2.5], [0.0; 3]);
        let w = PlaneWeights::for_geometry(&g, &kidney_targets());
        assert!(w.of(Plane::Sagittal)[1..].iter().all(|&x| x == 1.0));
        // 5 mm slices over 400 mm: the spacing alone halves the weight (7-5)/(7-3.5).
        let g = Geometry::new([64, 64, 80], [0.8, 0.8, 5.0], [0.0; 3]);
        let w = PlaneWeights::for_geometry(&g, &kidney_targets());
        assert!((w.of(Plane::Coronal)[2] - 2.0 / 3.5).abs() < 1e-6);
    }

    #[test]
    fn fused_mean_of_probabilities_not_a_vote() {
        // One voxel: axial 0.95, coronal 0.30, sagittal 0.30 -> mean 0.517:
        // kept, where a 2-of-3 vote at 0.5 would drop it.
        let w = PlaneWeights::equal(&PLANES, 2);
        let mut f = FusedProbs::new(2, 2);
        for (p, v) in [
            (Plane::Axial, 0.95),
            (Plane::Coronal, 0.3),
            (Plane::Sagittal, 0.3),
        ] {
            f.add(1, 0, w.scales(p)[1], v);
            f.add(1, 1, w.scales(p)[1], v - 0.1);
        }
        // 0.517 -> 1; 0.417 -> 0.
        assert_eq!(f.labels(0.5), vec![1, 0]);
        // The accumulator holds round(85 * p) per plane: 81 + 26 + 26.
        assert_eq!(f.acc[1][0], 133);
    }

    #[test]
    fn weighted_median_is_the_vote_and_a_weightless_plane_has_no_say() {
        // 1 x 1 x 4 grid; one organ class. Per voxel (axial, coronal, sagittal):
        // v0 (0.9, 0.6, 0.1): two planes -> organ; v1 (0.9, 0.1, 0.1): one -> not;
        // v2 (0.2, 0.7, 0.8): two -> organ; v3 (0.49, 0.51, 0.2): one -> not.
        let dims = [1, 1, 4];
        let vals = [
            [0.9f32, 0.9, 0.2, 0.49],
            [0.6, 0.1, 0.7, 0.51],
            [0.1, 0.1, 0.8, 0.2],
        ];
        let mut planes = Vec::new();
        for (p, v) in PLANES.iter().zip(vals) {
            let mut pp = PlaneProbs::new(*p, dims, 2);
            // Write each voxel through its own plane's slicing: (sa, ua, va).
            let (sa, ua, _) = p.axes();
            for (k, &x) in v.iter().enumerate() {
                let ijk = [0usize, 0, k];
                let t = ijk[sa];
                let nu = dims[ua];
                let mut img = vec![0f32; nu * dims[p.axes().2]];
                img[ijk[ua] + nu * ijk[p.axes().2]] = x;
                // Several voxels share a slice in this plane: merge.
                let mut prev = vec![0f32; img.len()];
                pp.for_each(|vox, _, q| {
                    let kk = vox; // i = j = 0: the voxel index is k
                    let pi = [0usize, 0, kk];
                    if pi[sa] == t {
                        prev[pi[ua] + nu * pi[p.axes().2]] = q as f32 / 255.0;
                    }
                });
                for (a, b) in img.iter_mut().zip(prev) {
                    *a = a.max(b);
                }
                pp.put(t, 1, &img);
            }
            planes.push(pp);
        }
        let g = Geometry::new(dims, [1.0; 3], [0.0; 3]);
        let ct = Volume::filled(g, 40.0f32);
        let t = vec![None, Some(ClassTarget::Organ(organs::LIVER))];
        let opts = FuseOptions {
            rule: FuseRule::Median,
            thresh: 0.5,
            max_fill_gap: 0,
            fill_holes: false,
        };
        let equal = PlaneWeights::equal(&PLANES, 2);
        let f = fuse(&planes, &equal, 2, FuseRule::Median, 0.5).labels(0.5);
        assert_eq!(f, vec![1, 0, 1, 0]);
        // Coronal and sagittal without weight: the axial plane alone.
        let axial_only = PlaneWeights::equal(&[Plane::Axial], 2);
        let f = fuse(&planes, &axial_only, 2, FuseRule::Median, 0.5).labels(0.5);
        assert_eq!(f, vec![1, 1, 0, 0]);
        // The mean at 0.5: v0 0.533 and v2 0.533 organ, v1 0.367 and v3 0.4 not.
        let f = fuse(&planes, &equal, 2, FuseRule::Mean, 0.5).labels(0.5);
        assert_eq!(f, vec![1, 0, 1, 0]);
        // Through fused_labels the largest component is kept: v0 and v2 are
        // not 6-connected (v1 between them), one of the two survives.
        let l = fused_labels(&planes, &equal, &opts, &ct, &t).labels;
        assert_eq!(l.iter().filter(|&&x| x == organs::LIVER).count(), 1);
    }

    #[test]
    fn a_tie_of_votes_goes_to_the_more_probable_class() {
        // One voxel, axial plane only: kidney (class 2) 0.9, spleen (3) 0.6.
        // Both pass the median; the kidney is the more probable.
        let dims = [1, 1, 1];
        let mut pp = PlaneProbs::new(Plane::Axial, dims, 4);
        pp.put(0, 2, &[0.9]);
        pp.put(0, 3, &[0.6]);
        let w = PlaneWeights::equal(&[Plane::Axial], 4);
        let g = Geometry::new(dims, [1.0; 3], [0.0; 3]);
        let ct = Volume::filled(g, 40.0f32);
        let opts = FuseOptions {
            rule: FuseRule::Median,
            thresh: 0.5,
            max_fill_gap: 0,
            fill_holes: false,
        };
        // Without the tie-break the later class (spleen) would win.
        assert_eq!(
            fuse(&[pp.clone()], &w, 4, FuseRule::Median, 0.5).labels(0.5),
            vec![3]
        );
        let l = fused_labels(&[pp], &w, &opts, &ct, &kidney_targets()).labels;
        assert!(
            l[0] == organs::KIDNEY_LEFT || l[0] == organs::KIDNEY_RIGHT,
            "{l:?}"
        );
    }

    #[test]
    fn kidneys_named_by_side_cavities_closed_fragments_said() {
        // Identity geometry: +x is the patient's left, +y posterior.
        let g = Geometry::new([40, 20, 6], [2.0, 2.0, 2.0], [0.0; 3]);
        let mut ct = Volume::filled(g.clone(), -1000.0f32);
        for v in ct.data.iter_mut() {
            *v = 40.0;
        }
        let mut map = vec![0u8; 40 * 20 * 6];
        let at = |i: usize, j: usize, k: usize| i + 40 * (j + 20 * k);
        // Right kidney (low x, posterior y): a closed 7x7x4 shell, slices 1-4,
        // its inside empty (a cyst the network left out).
        for k in 1..5 {
            for j in 11..18 {
                for i in 3..10 {
                    let edge = i == 3 || i == 9 || j == 11 || j == 17 || k == 1 || k == 4;
                    if edge {
                        map[at(i, j, k)] = 2;
                    }
                }
            }
        }
        // Left kidney: a 5x5x4 block; and a 2x2x2 fragment on the left too (8 voxels
        // of 8 mm3: 0.064 mL, below the warning), and a big left fragment of 5.1 mL.
        for k in 1..5 {
            for j in 12..17 {
                for i in 28..33 {
                    map[at(i, j, k)] = 2;
                }
            }
        }
        for k in 0..2 {
            for j in 0..2 {
                for i in 36..38 {
                    map[at(i, j, k)] = 2;
                }
            }
        }
        // A slot through the left kidney open to the outside (a sinus at
        // the hilum) is not a cavity.
        for j in 12..17 {
            map[at(30, j, 2)] = 0;
        }
        let t = kidney_targets();
        let Cleaned {
            labels: out, notes, ..
        } = clean_labels(&map, &ct, &t, true);
        // The shell's 5x5x2 inside is filled: 7x7x4 in all.
        let right = out.iter().filter(|&&v| v == organs::KIDNEY_RIGHT).count();
        assert_eq!(right, 49 * 4);
        let left = out.iter().filter(|&&v| v == organs::KIDNEY_LEFT).count();
        assert_eq!(
            left, 95,
            "the slot stays open; the small left fragment is dropped"
        );
        let out = clean_labels(&map, &ct, &t, false).labels;
        let right = out.iter().filter(|&&v| v == organs::KIDNEY_RIGHT).count();
        assert_eq!(right, 49 * 4 - 50);
        assert!(notes.is_empty(), "{notes:?}");
        // A dropped fragment of >= 5 mL is said.
        let g2 = Geometry::new([40, 20, 6], [10.0, 10.0, 10.0], [0.0; 3]);
        let ct2 = Volume::filled(g2, 40.0f32);
        let notes = clean_labels(&map, &ct2, &t, true).notes;
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("kidney: a third component of 8.0 mL")),
            "{notes:?}"
        );
    }

    /// Two kidney parts on the patient's left and none on the right (the
    /// network's bowel loop beside a real kidney): the left kidney is held
    /// for review with both volumes; one kidney per side holds nothing.
    #[test]
    fn a_kidney_in_two_parts_on_one_side_is_held_for_review() {
        let g = Geometry::new([20, 20, 4], [2.0; 3], [0.0; 3]);
        let ct = Volume::filled(g, 40.0f32);
        let block = |map: &mut Vec<u8>, i0: usize, j0: usize| {
            for k in 0..2 {
                for j in j0..j0 + 3 {
                    for i in i0..i0 + 3 {
                        map[i + 20 * j + 400 * k] = 2;
                    }
                }
            }
        };
        // Large x is the patient's left (LPS); high y posterior.
        let mut split = vec![0u8; 20 * 20 * 4];
        block(&mut split, 12, 14);
        block(&mut split, 16, 6);
        let c = clean_labels(&split, &ct, &kidney_targets(), true);
        assert_eq!(c.held.len(), 1, "{:?}", c.held);
        assert_eq!(c.held[0].0, organs::KIDNEY_LEFT);
        // 18 voxels of 8 mm^3 each part.
        assert!(c.held[0].1.contains("0.1 and 0.1 mL"), "{:?}", c.held);
        assert!(
            c.labels
                .iter()
                .filter(|&&v| v == organs::KIDNEY_LEFT)
                .count()
                == 36
        );
        let mut pair = vec![0u8; 20 * 20 * 4];
        block(&mut pair, 12, 14);
        block(&mut pair, 3, 14);
        let c = clean_labels(&pair, &ct, &kidney_targets(), true);
        assert!(c.held.is_empty(), "{:?}", c.held);
    }

    #[test]
    fn kidney_in_front_of_the_body_centre_is_said() {
        let g = Geometry::new([20, 20, 4], [2.0; 3], [0.0; 3]);
        let ct = Volume::filled(g, 40.0f32);
        let mut map = vec![0u8; 20 * 20 * 4];
        // Low y: anterior in LPS.
        for j in 1..4 {
            for i in 2..5 {
                map[i + 20 * j + 400] = 2;
            }
        }
        let notes = clean_labels(&map, &ct, &kidney_targets(), true).notes;
        assert!(notes.iter().any(|n| n.contains("front half")), "{notes:?}");
    }
}
