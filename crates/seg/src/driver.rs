//! The 2.5D driver: HU window, three adjacent slices as channels, axial /
//! coronal / sagittal passes, masks back on the CT grid, joined by
//! probability (`--planes auto`, `seg::fusion`) or by vote (`all`), gap
//! filling, largest components, kidney laterality from the patient x axis.

use super::consensus::{components, fill_gaps, majority_vote};
use super::fusion::{self, PlaneProbs, PlaneWeights};
use super::model::{Detections, MaskRcnn};
use super::orient::Reorient;
pub use super::plane::{class_targets, ClassTarget, Plane};
use super::slicing::{self, Canvas, PlaneSampler};
use super::transform::resize_bilinear;
use crate::error::{Error, Result};
use crate::organs;
use crate::volume::Volume;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// `--planes auto|axial|all` on the command line (clap::ValueEnum), `planes` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Planes {
    /// The planes' mask probabilities averaged, each plane weighted by what
    /// the scan's geometry lets it see (a thin slab's coronal and sagittal
    /// strips get no weight and are not run); then one component per organ,
    /// one kidney per side, holes closed (`seg::fusion`).
    Auto,
    /// Axial slices only (the paper's first mode).
    Axial,
    /// Axial, coronal and sagittal, joined by voxel vote (>= 2 of 3).
    All,
}

impl Planes {
    /// The name `--planes` and the config use.
    pub fn name(self) -> &'static str {
        match self {
            Planes::Auto => "auto",
            Planes::Axial => "axial",
            Planes::All => "all",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DriverOptions {
    pub planes: Planes,
    /// Slices per forward pass.
    pub batch_size: usize,
    /// Forward passes run at once, one per thread (1: one batch at a time).
    pub parallel_batches: usize,
    /// Longest run of empty slices filled by interpolation (0: none).
    pub max_fill_gap: usize,
    /// With three planes: run the coronal and sagittal passes only over the
    /// slices the axial pass found organs in, widened by this margin (mm).
    /// None: every slice.
    pub other_planes_margin_mm: Option<f64>,
    /// Slices closer together than this along a plane's axis (mm) are run
    /// every k-th (k = floor(this / spacing)), each skipped slice's mask
    /// probabilities interpolated linearly between its two run neighbours; 0:
    /// every slice. The network's pixel is 1.6 mm: a coronal or sagittal pass
    /// over 0.8-1 mm columns sees nearly the same image twice. The axial
    /// pass's step; the coronal and sagittal passes take
    /// `other_planes_slice_step_mm`.
    pub slice_step_mm: f64,
    /// [`Self::slice_step_mm`] of the coronal and sagittal passes.
    pub other_planes_slice_step_mm: f64,
    /// `auto`: how the planes' probabilities are joined, at which threshold,
    /// and whether enclosed holes are closed (`seg::fusion`).
    pub fusion: fusion::FuseRule,
    pub fusion_threshold: f32,
    pub fill_holes: bool,
    /// Every mode's kidneys redrawn by the model's finer kidney stage
    /// (`seg::refine`) when the model folder has one.
    pub refine_kidneys: bool,
    /// Millimetre canvases fitted to each plane's body (or organ) extent
    /// within these sides, instead of the model's square canvas tiled
    /// (`seg::slicing::fitted_tiles`); None: the square canvas.
    pub canvas_fit: Option<slicing::CanvasFit>,
}

/// Slice range `[lo, hi)` along `axis` holding any labelled voxel of `map`,
/// widened by `margin` slices; None when the map is empty.
pub(crate) fn label_extent(
    map: &[u8],
    dims: [usize; 3],
    axis: usize,
    margin: usize,
) -> Option<(usize, usize)> {
    let (mut lo, mut hi) = (usize::MAX, 0usize);
    for (v, &c) in map.iter().enumerate() {
        if c != 0 {
            let idx = [
                v % dims[0],
                (v / dims[0]) % dims[1],
                v / (dims[0] * dims[1]),
            ][axis];
            lo = lo.min(idx);
            hi = hi.max(idx);
        }
    }
    (lo != usize::MAX).then(|| (lo.saturating_sub(margin), (hi + margin + 1).min(dims[axis])))
}

/// Neighbour-channel distance (mm) for a millimetre model that does not say:
/// about the slice thickness of the abdominal series the paper used.
pub(crate) const DEFAULT_NEIGHBOR_MM: f32 = 2.5;

/// CT in HU to [0, 1] through the window, clamped.
pub fn window(ct: &[f32], w: [f32; 2]) -> Vec<f32> {
    let span = w[1] - w[0];
    ct.iter()
        .map(|v| ((v - w[0]) / span).clamp(0.0, 1.0))
        .collect()
}

/// How many slices apart the network runs along an axis of `spacing` mm
/// ([`DriverOptions::slice_step_mm`]); 1 runs every slice.
pub fn slice_step(step_mm: f64, spacing: f64) -> usize {
    if !(step_mm > 0.0 && spacing > 0.0) {
        return 1;
    }
    ((step_mm / spacing + 1e-6).floor() as usize).max(1)
}

/// The slices of `[lo, hi)` the network runs at `step`: every step-th from
/// `lo`, and always the last, so that every skipped slice lies between two run ones.
pub fn run_slices(lo: usize, hi: usize, step: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (lo..hi).step_by(step.max(1)).collect();
    if hi > lo && v.last() != Some(&(hi - 1)) {
        v.push(hi - 1);
    }
    v
}

/// Network input for slice `t` of `plane`: slices t-1, t, t+1 (edges
/// replicated) as channels, each resampled to size x size; (3, size, size).
pub fn slice_input(win: &[f32], dims: [usize; 3], plane: Plane, t: usize, size: usize) -> Vec<f32> {
    let (sa, ua, va) = plane.axes();
    let stride = [1, dims[0], dims[0] * dims[1]];
    let (nu, nv) = (dims[ua], dims[va]);
    let last = dims[sa] - 1;
    let mut out = Vec::with_capacity(3 * size * size);
    let mut img = vec![0f32; nu * nv];
    for tt in [t.saturating_sub(1), t, (t + 1).min(last)] {
        for v in 0..nv {
            for u in 0..nu {
                img[v * nu + u] = win[tt * stride[sa] + u * stride[ua] + v * stride[va]];
            }
        }
        out.extend(resize_bilinear(&img, nv, nu, size, size));
    }
    out
}

/// Class-index map (0 background) of one plane on the CT grid. With a
/// `sampler` the slices reach the network in millimetres (`seg::slicing`:
/// fixed pixel size, padded or tiled); without, each slice is stretched to
/// the input size. With `probs` the plane's class probabilities are kept
/// there as well (for the fusion of `--planes auto`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn segment_plane(
    model: &MaskRcnn,
    win: &[f32],
    dims: [usize; 3],
    plane: Plane,
    opts: &DriverOptions,
    range: Option<(usize, usize)>,
    step: usize,
    sampler: Option<&PlaneSampler>,
    mut probs: Option<&mut PlaneProbs>,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<u8>> {
    let size = model.cfg.input.size;
    let (sa, ua, va) = plane.axes();
    let stride = [1, dims[0], dims[0] * dims[1]];
    let (nu, nv, ns) = (dims[ua], dims[va], dims[sa]);
    let nc = model.cfg.classes.len();
    let thresh = model.cfg.roi_heads.mask_thresh;
    let mut map = vec![0u8; win.len()];
    let n_tiles = sampler.map_or(1, |s| s.tiles.len().max(1));
    // Network image height and width: the sampler's canvas, or the square input.
    let (ih, iw) = sampler.map_or((size, size), |s| (s.ny, s.nx));
    // A batch holds about batch_size square images' pixels (the memory the
    // budget counts), every tile of its slices.
    let bs = (opts.batch_size.max(1) * size * size / (n_tiles * ih * iw)).max(1);
    let (lo, hi) = range.unwrap_or((0, ns));
    let hi = hi.min(ns);
    let run = run_slices(lo, hi, step);
    let batches: Vec<&[usize]> = run.chunks(bs).collect();
    // The last run slice's probabilities, for the slices skipped after it.
    let mut prev: Option<(usize, ClassProbs)> = None;
    // Several batches in flight, one per thread: much of a forward pass
    // (RPN, NMS, RoI heads, mask paste) is serial, so one batch at a time
    // leaves cores idle. Each slice's result does not depend on the others,
    // so the map is the same for any thread count.
    let in_flight = opts.parallel_batches.max(1);
    for group in batches.chunks(in_flight) {
        let want_probs = probs.is_some() || step > 1;
        let run = |ts: &&[usize]| -> Result<Vec<SliceOut>> {
            let n_img = ts.len() * n_tiles;
            let mut input = Vec::with_capacity(n_img * 3 * ih * iw);
            for &t in ts.iter() {
                match sampler {
                    Some(s) => {
                        for tile in 0..n_tiles {
                            input.extend(s.input(win, t, tile));
                        }
                    }
                    None => input.extend(slice_input(win, dims, plane, t, size)),
                }
            }
            let out = match sampler {
                Some(_) => model.forward_native(&input, [n_img, 3, ih, iw], false)?,
                None => model.forward(&input, [n_img, 3, size, size], false)?,
            };
            Ok(match sampler {
                Some(s) => out
                    .detections
                    .chunks(n_tiles)
                    .map(|dets| slice_classes_tiled(dets, s, nc, thresh, want_probs))
                    .collect(),
                None => out
                    .detections
                    .iter()
                    .map(|det| slice_classes(det, nc, size, nu, nv, thresh, want_probs))
                    .collect(),
            })
        };
        let results: Vec<Result<Vec<SliceOut>>> = if group.len() > 1 {
            group.par_iter().map(run).collect()
        } else {
            group.iter().map(run).collect()
        };
        for (ts, slices) in group.iter().zip(results) {
            for (&t, (cls, probs_t)) in ts.iter().zip(slices?) {
                let mut write = |t: usize, cls: &[u8], probs_t: &[(usize, Vec<f32>)]| {
                    for v in 0..nv {
                        for u in 0..nu {
                            let c = cls[v * nu + u];
                            if c != 0 {
                                map[t * stride[sa] + u * stride[ua] + v * stride[va]] = c;
                            }
                        }
                    }
                    if let Some(pp) = probs.as_mut() {
                        for (c, p) in probs_t {
                            pp.put(t, *c, p);
                        }
                    }
                };
                write(t, &cls, &probs_t);
                if let Some((tp, pp)) = prev.take() {
                    for tt in tp + 1..t {
                        let a = (t - tt) as f32 / (t - tp) as f32;
                        let mixed = mix_probs(&pp, &probs_t, a, nu * nv);
                        let cls = argmax_classes(
                            nu * nv,
                            thresh,
                            mixed.iter().map(|(c, p)| (*c, p.as_slice())),
                        );
                        write(tt, &cls, &mixed);
                    }
                }
                if step > 1 {
                    prev = Some((t, probs_t));
                }
            }
            progress(ts.len());
        }
    }
    if opts.max_fill_gap > 0 {
        for c in 1..nc {
            fill_gaps(&mut map, dims, sa, c as u8, opts.max_fill_gap);
        }
    }
    Ok(map)
}

/// `a` x `p0` + (1 - a) x `p1` per class of either (a class missing from one
/// side counts as probability 0 there); classes left all below 1/255 dropped.
fn mix_probs(
    p0: &[(usize, Vec<f32>)],
    p1: &[(usize, Vec<f32>)],
    a: f32,
    n: usize,
) -> Vec<(usize, Vec<f32>)> {
    let mut classes: Vec<usize> = p0.iter().chain(p1).map(|(c, _)| *c).collect();
    classes.sort_unstable();
    classes.dedup();
    classes
        .into_iter()
        .filter_map(|c| {
            let mut out = vec![0f32; n];
            for (w, side) in [(a, p0), (1.0 - a, p1)] {
                let side = side.iter().find(|(k, _)| *k == c).map(|(_, p)| p);
                if let Some(p) = side {
                    for (o, &x) in out.iter_mut().zip(p) {
                        *o += w * x;
                    }
                }
            }
            out.iter().any(|&x| x >= 0.5 / 255.0).then_some((c, out))
        })
        .collect()
}

/// Per class the highest mask probability of one image's detections, on
/// the network's canvas of `npx` pixels; None for a class with no pixel >= thresh.
fn class_probs(det: &Detections, nc: usize, npx: usize, thresh: f32) -> Vec<Option<Vec<f32>>> {
    let mut prob = vec![vec![0f32; npx]; nc];
    for (m, &l) in det.masks.iter().zip(&det.labels) {
        if l == 0 || l >= nc {
            continue;
        }
        for (p, &v) in prob[l].iter_mut().zip(m) {
            *p = p.max(v);
        }
    }
    prob.into_iter()
        .map(|p| p.iter().any(|&v| v >= thresh).then_some(p))
        .collect()
}

/// Each detected class's probability image on one slice's grid.
type ClassProbs = Vec<(usize, Vec<f32>)>;

/// One slice's class image (row v) and, when asked, each detected class's
/// probability image on the slice grid.
type SliceOut = (Vec<u8>, ClassProbs);

/// One slice's class image from its tiles (`seg::slicing`): each class's
/// probability carried back to the slice grid, the maximum over tiles; a
/// pixel takes the most probable class at >= thresh.
fn slice_classes_tiled(
    dets: &[Detections],
    s: &PlaneSampler,
    nc: usize,
    thresh: f32,
    with_probs: bool,
) -> SliceOut {
    let (_, ua, va) = s.plane.axes();
    let n = s.dims[ua] * s.dims[va];
    let mut acc: Vec<Option<Vec<f32>>> = vec![None; nc];
    for (tile, det) in dets.iter().enumerate() {
        for (c, p) in class_probs(det, nc, s.nx * s.ny, thresh)
            .into_iter()
            .enumerate()
            .skip(1)
        {
            if let Some(p) = p {
                let a = acc[c].get_or_insert_with(|| vec![0f32; n]);
                s.back_max(&p, tile, a);
            }
        }
    }
    let cls = argmax_classes(
        n,
        thresh,
        acc.iter()
            .enumerate()
            .filter_map(|(c, a)| a.as_deref().map(|a| (c, a))),
    );
    let probs = if with_probs {
        acc.into_iter()
            .enumerate()
            .filter_map(|(c, a)| a.map(|a| (c, a)))
            .collect()
    } else {
        Vec::new()
    };
    (cls, probs)
}

/// A pixel takes the most probable class at >= thresh (on a tie the later one).
fn argmax_classes<'a>(
    n: usize,
    thresh: f32,
    probs: impl Iterator<Item = (usize, &'a [f32])>,
) -> Vec<u8> {
    let mut best = vec![thresh; n];
    let mut cls = vec![0u8; n];
    for (c, pc) in probs {
        for (i, &p) in pc.iter().enumerate() {
            if p >= best[i] {
                best[i] = p;
                cls[i] = c as u8;
            }
        }
    }
    cls
}

/// One slice's class image (nu x nv, row v, 0 = none): per class the highest
/// mask probability of its detections, linearly interpolated back to the
/// slice's own grid; a pixel takes the most probable class at >= thresh.
fn slice_classes(
    det: &Detections,
    nc: usize,
    size: usize,
    nu: usize,
    nv: usize,
    thresh: f32,
    with_probs: bool,
) -> SliceOut {
    let resized: Vec<(usize, Vec<f32>)> = class_probs(det, nc, size * size, thresh)
        .into_iter()
        .enumerate()
        .skip(1)
        .filter_map(|(c, p)| p.map(|p| (c, resize_bilinear(&p, size, size, nv, nu))))
        .collect();
    let cls = argmax_classes(
        nu * nv,
        thresh,
        resized.iter().map(|(c, r)| (*c, r.as_slice())),
    );
    (cls, if with_probs { resized } else { Vec::new() })
}

/// The planes a mode may run (auto: at most these; see [`segment_modes`]).
pub fn planes_of(p: Planes) -> &'static [Plane] {
    match p {
        Planes::Axial => &[Plane::Axial],
        Planes::All | Planes::Auto => &[Plane::Axial, Plane::Coronal, Plane::Sagittal],
    }
}

/// One mode's organ labels on the CT's grid, with how they were made.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub planes: Planes,
    pub labels: Volume<u8>,
    /// The planes whose passes made these labels.
    pub planes_run: Vec<Plane>,
    /// `auto`: each plane's weight per model class, and why a plane lost weight.
    pub weights: Option<PlaneWeights>,
    /// `auto`: each plane's mask probabilities (the last `auto` result of
    /// [`segment_modes`] holds them).
    pub plane_probs: Vec<PlaneProbs>,
    /// What a physicist should know: planes that lost weight, dropped
    /// components, organs on an unexpected side.
    pub notes: Vec<String>,
    /// Organs (label, why) the segmentation itself cannot vouch for, held
    /// for review (`seg::confidence`): a kidney whose redraw by the kidney
    /// stage was not taken (its volume too far from the network's: one of
    /// the two is badly wrong), a kidney the network found in two parts on
    /// one side and none on the other.
    pub held: Vec<(u8, String)>,
}

/// Segments a CT (HU) into organ labels of `organs.rs` on the CT's own grid.
/// `progress(done_slices, total_slices)` is called after each batch.
pub fn segment(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    opts: &DriverOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Volume<u8>> {
    segment_timed(model, ct, opts, progress, &mut |_, _, _| {})
}

/// [`segment`], also telling `on_plane(plane, slices run, wall time)` after
/// each plane's pass (`organdose bench` reports latency per plane).
pub(crate) fn segment_timed(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    opts: &DriverOptions,
    progress: &mut dyn FnMut(usize, usize),
    on_plane: &mut dyn FnMut(Plane, usize, std::time::Duration),
) -> Result<Volume<u8>> {
    Ok(segment_detail(model, ct, opts, progress, on_plane)?.labels)
}

/// [`segment_timed`] with the plane weights and the notes of the mode.
pub fn segment_detail(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    opts: &DriverOptions,
    progress: &mut dyn FnMut(usize, usize),
    on_plane: &mut dyn FnMut(Plane, usize, std::time::Duration),
) -> Result<Segmentation> {
    segment_modes(model, ct, opts, &[opts.planes], progress, on_plane)?
        .pop()
        .ok_or_else(|| Error::internal("segmentation gave no result"))
}

/// Fused probability read as organ for the generous and the strict mask of
/// [`edge_band`]: where the planes' weighted mean probability is above one
/// and below the other, the mask could be either.
pub(crate) const EDGE_BAND: [f32; 2] = [0.25, 0.75];

/// The organ masks a generous and a strict reading of the planes'
/// probabilities give (weighted mean at [`EDGE_BAND`], cleaned up as the
/// fused mask is), on the CT's grid; None without an `auto` result's
/// probabilities. The spread of an organ's mass and dose between the two is
/// the segmentation's share of its uncertainty: it is wide where the planes
/// disagree or the network is unsure of the edge.
pub fn edge_band(
    seg: &Segmentation,
    ct: &Volume<f32>,
    targets: &[Option<ClassTarget>],
    opts: &DriverOptions,
) -> Option<[Vec<u8>; 2]> {
    let weights = seg.weights.as_ref()?;
    if seg.plane_probs.is_empty() {
        return None;
    }
    // The probabilities are in the network's voxel order (`seg::orient`).
    let ro = Reorient::canonical(&ct.geom);
    let canon;
    let ct_c = if ro.is_identity() {
        ct
    } else {
        canon = ro.apply(ct);
        &canon
    };
    if seg.plane_probs.iter().any(|p| p.dims != ct_c.geom.dims) {
        return None;
    }
    Some(EDGE_BAND.map(|thresh| {
        let labels = fusion::fused_labels(
            &seg.plane_probs,
            weights,
            &fusion::FuseOptions {
                rule: fusion::FuseRule::Mean,
                thresh,
                max_fill_gap: opts.max_fill_gap,
                fill_holes: opts.fill_holes,
            },
            ct_c,
            targets,
        )
        .labels;
        if ro.is_identity() {
            labels
        } else {
            ro.undo(&labels)
        }
    }))
}

/// Several modes from one run of the planes they need (each plane runs once):
/// `eval --compare` scores axial, all and auto side by side this way. The
/// result is in the order of `modes`.
pub fn segment_modes(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    opts: &DriverOptions,
    modes: &[Planes],
    progress: &mut dyn FnMut(usize, usize),
    on_plane: &mut dyn FnMut(Plane, usize, std::time::Duration),
) -> Result<Vec<Segmentation>> {
    segment_modes_on(model, ct, opts, modes, None, None, progress, on_plane)
}

/// [`segment_modes`]; with `only`, `auto` runs and weighs just those planes
/// (equal weights) whatever the geometry would give them. With `bound`
/// (voxel index ranges `[lo, hi)` of a CT already in canonical order,
/// `seg::orient`) the axial pass runs only over its slices, its canvas
/// centred on its x-y box (one tile where the box fits): where
/// `seg::follow::segment_bounded` put the diagnostic CT's organs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn segment_modes_on(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    opts: &DriverOptions,
    modes: &[Planes],
    only: Option<&[Plane]>,
    bound: Option<&[(usize, usize); 3]>,
    progress: &mut dyn FnMut(usize, usize),
    on_plane: &mut dyn FnMut(Plane, usize, std::time::Duration),
) -> Result<Vec<Segmentation>> {
    let targets = class_targets(&model.cfg.classes)?;
    let dims = ct.geom.dims;
    if dims.contains(&0) {
        return Err(Error::input("CT has an empty dimension"));
    }
    ct.check_finite("CT")?;
    // The network knows one voxel order (`seg::orient`): a feet-first or
    // otherwise stored CT is segmented in that order and its labels put back.
    let ro = Reorient::canonical(&ct.geom);
    if !ro.is_identity() {
        if bound.is_some() {
            return Err(Error::internal(
                "a pass bound was given for a CT not in canonical order",
            ));
        }
        let canon = ro.apply(ct);
        let segs = segment_modes_on(model, &canon, opts, modes, only, None, progress, on_plane)?;
        return Ok(segs
            .into_iter()
            .map(|s| Segmentation {
                labels: Volume {
                    geom: ct.geom.clone(),
                    data: ro.undo(&s.labels.data),
                },
                ..s
            })
            .collect());
    }
    let win = window(&ct.data, model.cfg.input.hu_window);
    let nc = model.cfg.classes.len();
    let weights = match only {
        Some(ps) => PlaneWeights::equal(ps, nc),
        None => PlaneWeights::for_geometry(&ct.geom, &targets),
    };
    let auto = modes.contains(&Planes::Auto);
    let vote = modes.contains(&Planes::All);
    let auto_planes = weights.planes();
    let planes: Vec<Plane> = fusion::PLANES
        .iter()
        .copied()
        .filter(|&p| p == Plane::Axial || vote || (auto && auto_planes.contains(&p)))
        .collect();
    if auto {
        for n in &weights.notes {
            tracing::info!("{n}");
        }
    }
    // `auto` alone, where the coronal and sagittal planes each carry at least
    // half the weight of every organ: the axial pass is one of three votes and
    // runs at their step. Where the axial pass decides (a thin slab, coarse
    // slices) it keeps its own: 4.8 mm there cost a 40 mm slab's left kidney
    // 0.016 Dice (docs/log/speed.md).
    let axial_sparse = auto
        && !vote
        && !modes.contains(&Planes::Axial)
        && [Plane::Coronal, Plane::Sagittal]
            .iter()
            .all(|&p| auto_planes.contains(&p) && weights.of(p).iter().skip(1).all(|&w| w >= 0.5));
    let mut plane_probs: Vec<PlaneProbs> = Vec::new();
    let spacing = ct.geom.spacing.map(|s| s as f32);
    let canvas = model_canvas(model);
    let body = canvas.and_then(|_| slicing::body_box(&ct.data, dims));
    let mut total: usize = planes.iter().map(|p| dims[p.axes().0]).sum();
    let mut done = 0;
    let mut maps: Vec<Vec<u8>> = Vec::new();
    // The axial pass's organs after the clean-up (largest components): what
    // bounds the other planes, so that a stray detection far from the organs
    // does not widen them.
    let mut axial_organs: Option<Vec<u8>> = None;
    for &p in &planes {
        let t0 = std::time::Instant::now();
        let sa = p.axes().0;
        // The axial pass runs first; its organs bound the others.
        let range = match (opts.other_planes_margin_mm, axial_organs.as_ref()) {
            (Some(mm), Some(axial)) if p != Plane::Axial => {
                let margin = (mm.max(0.0) / ct.geom.spacing[sa]).ceil() as usize;
                label_extent(axial, dims, sa, margin)
            }
            _ => None,
        };
        let range = match bound {
            Some(b) if p == Plane::Axial => Some(b[2]),
            _ => range,
        };
        let step_mm = match p {
            Plane::Axial if !axial_sparse => opts.slice_step_mm,
            _ => opts.other_planes_slice_step_mm,
        };
        let step = slice_step(step_mm, ct.geom.spacing[sa]);
        let (lo, hi) = range.unwrap_or((0, dims[sa]));
        let n = run_slices(lo, hi, step).len();
        total -= dims[sa] - n;
        let sampler = canvas.map(|cv| {
            let (_, ua, va) = p.axes();
            let mut u = slicing::axis_range_mm(body.as_ref(), dims, spacing, ua);
            let mut v = slicing::axis_range_mm(body.as_ref(), dims, spacing, va);
            if let (Some(b), Plane::Axial) = (bound, p) {
                // The body's extent where it is the narrower (no room is
                // gained beyond the body), else the bound's.
                let within = |r: (f32, f32), axis: usize| {
                    let (lo, hi) = b[axis];
                    let bb = (
                        lo as f32 * spacing[axis] - slicing::BODY_MARGIN_MM,
                        hi.saturating_sub(1) as f32 * spacing[axis] + slicing::BODY_MARGIN_MM,
                    );
                    let cut = (r.0.max(bb.0), r.1.min(bb.1));
                    if cut.0 < cut.1 {
                        cut
                    } else {
                        bb
                    }
                };
                u = within(u, ua);
                v = within(v, va);
            }
            // Coronal and sagittal images span z: bounded like their slices,
            // by the axial pass's organs, one canvas covers them (no tiles
            // over the whole scan length).
            if let (Some(mm), Some(axial), true) =
                (opts.other_planes_margin_mm, axial_organs.as_ref(), va == 2)
            {
                let margin = (mm.max(0.0) / ct.geom.spacing[2]).ceil() as usize;
                if let Some((a, b)) = label_extent(axial, dims, 2, margin) {
                    v = (
                        a as f32 * spacing[2] - slicing::BODY_MARGIN_MM,
                        (b - 1) as f32 * spacing[2] + slicing::BODY_MARGIN_MM,
                    );
                }
            }
            plane_sampler(cv, opts.canvas_fit, p, dims, spacing, u, v)
        });
        let mut pp = (auto && auto_planes.contains(&p)).then(|| PlaneProbs::new(p, dims, nc));
        let m = segment_plane(
            model,
            &win,
            dims,
            p,
            opts,
            range,
            step,
            sampler.as_ref(),
            pp.as_mut(),
            &mut |k| {
                done += k;
                progress(done, total);
            },
        )?;
        tracing::debug!(
            "{} plane: {n} of {} slices run (every {step}), {} tile(s) of {} each, in {:.1} s",
            p.name(),
            dims[sa],
            sampler.as_ref().map_or(1, |s| s.tiles.len().max(1)),
            sampler
                .as_ref()
                .map_or("the square input".to_string(), |s| format!(
                    "{} x {} px",
                    s.nx, s.ny
                )),
            t0.elapsed().as_secs_f64()
        );
        on_plane(p, n, t0.elapsed());
        if p == Plane::Axial && planes.len() > 1 && opts.other_planes_margin_mm.is_some() {
            axial_organs = Some(to_organ_labels(&m, ct, &targets));
        }
        maps.push(m);
        plane_probs.extend(pp);
    }
    drop(win);
    let mut out = Vec::with_capacity(modes.len());
    for &mode in modes {
        out.push(match mode {
            Planes::Axial => Segmentation {
                planes: mode,
                labels: Volume {
                    geom: ct.geom.clone(),
                    // The clean-up already ran when the axial pass bounded the others.
                    data: axial_organs
                        .clone()
                        .unwrap_or_else(|| to_organ_labels(&maps[0], ct, &targets)),
                },
                planes_run: vec![Plane::Axial],
                weights: None,
                plane_probs: Vec::new(),
                notes: Vec::new(),
                held: Vec::new(),
            },
            Planes::All => {
                let refs: Vec<&[u8]> = maps.iter().map(|m| m.as_slice()).collect();
                Segmentation {
                    planes: mode,
                    labels: Volume {
                        geom: ct.geom.clone(),
                        data: to_organ_labels(&majority_vote(&refs, 2), ct, &targets),
                    },
                    planes_run: planes.clone(),
                    weights: None,
                    plane_probs: Vec::new(),
                    notes: Vec::new(),
                    held: Vec::new(),
                }
            }
            Planes::Auto => {
                let fusion::Cleaned {
                    labels,
                    notes: clean_notes,
                    held,
                } = fusion::fused_labels(
                    &plane_probs,
                    &weights,
                    &fusion::FuseOptions {
                        rule: opts.fusion,
                        thresh: opts.fusion_threshold,
                        max_fill_gap: opts.max_fill_gap,
                        fill_holes: opts.fill_holes,
                    },
                    ct,
                    &targets,
                );
                for n in &clean_notes {
                    tracing::warn!("{n}");
                }
                let mut notes = weights.notes.clone();
                notes.extend(clean_notes);
                Segmentation {
                    planes: mode,
                    labels: Volume {
                        geom: ct.geom.clone(),
                        data: labels,
                    },
                    planes_run: auto_planes.clone(),
                    weights: Some(weights.clone()),
                    plane_probs: Vec::new(),
                    notes,
                    held,
                }
            }
        });
    }
    if let (true, Some(r)) = (opts.refine_kidneys, model.refiner.as_ref()) {
        let t0 = std::time::Instant::now();
        for s in out.iter_mut() {
            let kidneys = [organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT];
            for d in r.refine(ct, &mut s.labels.data, &kidneys)? {
                tracing::debug!("{} mode, kidney stage: {}", s.planes.name(), d.line);
                if let Some(why) = d.kept {
                    let name = organs::name(d.label).unwrap_or("kidney");
                    tracing::warn!("{name}: {why}");
                    s.notes.push(format!("{name}: {why}"));
                    s.held.push((d.label, why));
                }
            }
        }
        tracing::debug!(
            "kidney stage: {} mode(s) in {:.1} s",
            out.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    if let Some(last) = out.iter_mut().rev().find(|s| s.planes == Planes::Auto) {
        last.plane_probs = plane_probs;
    }
    Ok(out)
}

/// The model's millimetre canvas (`input.pixel_mm`); None for a model that
/// takes each slice stretched to its input size.
fn model_canvas(model: &MaskRcnn) -> Option<Canvas> {
    model.cfg.input.pixel_mm.map(|p| Canvas {
        size: model.cfg.input.size,
        pixel_mm: p,
        neighbor_mm: model.cfg.input.neighbor_mm.unwrap_or(DEFAULT_NEIGHBOR_MM),
    })
}

/// One plane's canvas over the index-mm ranges `u`, `v` of its image axes:
/// fitted to them (`fit`) for the coronal and sagittal planes, else the
/// model's square canvas tiled. The axial pass keeps the square canvas it was
/// trained on: on real axial slices of wide patients one fitted image lost
/// kidneys that the two overlapping tiles found (CURVAS 10011: Dice 0.94 ->
/// 0.63 on one slice, a false kidney on another; docs/log/speed.md).
pub fn plane_sampler(
    cv: Canvas,
    fit: Option<slicing::CanvasFit>,
    p: Plane,
    dims: [usize; 3],
    spacing: [f32; 3],
    u: (f32, f32),
    v: (f32, f32),
) -> PlaneSampler {
    match fit.filter(|_| p != Plane::Axial) {
        Some(fit) => {
            let (nx, ny, tiles) = slicing::fitted_tiles(&cv, fit, u, v);
            PlaneSampler::with_size(p, dims, spacing, cv, (nx, ny), tiles)
        }
        None => PlaneSampler::new(p, dims, spacing, cv, slicing::plane_tiles(&cv, u, v)),
    }
}

/// One plane's pass alone, every slice of `range` along its axis, on the
/// body's canvas ([`plane_sampler`]): the model's classes on the CT's grid
/// (0 elsewhere). The pass [`segment_detail`] runs per plane, without the
/// axial bound, the fusion or the clean-up; `ct` in the network's voxel order
/// (`seg::orient`). For tests and benches of the sampling.
pub fn plane_pass(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    p: Plane,
    opts: &DriverOptions,
    range: (usize, usize),
) -> Result<(PlaneSampler, Vec<u8>)> {
    let dims = ct.geom.dims;
    let spacing = ct.geom.spacing.map(|s| s as f32);
    let Some(cv) = model_canvas(model) else {
        return Err(Error::input(
            "the model has no millimetre canvas (input.pixel_mm)",
        ));
    };
    let body = slicing::body_box(&ct.data, dims);
    let (_, ua, va) = p.axes();
    let u = slicing::axis_range_mm(body.as_ref(), dims, spacing, ua);
    let v = slicing::axis_range_mm(body.as_ref(), dims, spacing, va);
    let s = plane_sampler(cv, opts.canvas_fit, p, dims, spacing, u, v);
    let win = window(&ct.data, model.cfg.input.hu_window);
    let map = segment_plane(
        model,
        &win,
        dims,
        p,
        opts,
        Some(range),
        1,
        Some(&s),
        None,
        &mut |_| {},
    )?;
    Ok((s, map))
}

/// Largest component per organ; a shared kidney class keeps its two largest
/// components and names each by its centroid's patient x against the body
/// midline (LPS: larger x is the patient's left).
pub(crate) fn to_organ_labels(
    map: &[u8],
    ct: &Volume<f32>,
    targets: &[Option<ClassTarget>],
) -> Vec<u8> {
    let g = &ct.geom;
    let dims = g.dims;
    let mut out = vec![0u8; map.len()];
    let centroid_x = |vox: &[usize]| -> f64 {
        let mut s = 0.0;
        for &v in vox {
            let (i, j, k) = (
                v % dims[0],
                (v / dims[0]) % dims[1],
                v / (dims[0] * dims[1]),
            );
            s += g.index_to_patient([i as f64, j as f64, k as f64])[0];
        }
        s / vox.len().max(1) as f64
    };
    for (c, t) in targets.iter().enumerate() {
        let Some(t) = t else { continue };
        let comps = components(map, dims, c as u8);
        match t {
            ClassTarget::Organ(l) => {
                if let Some(cc) = comps.first() {
                    for &v in cc {
                        out[v] = *l;
                    }
                }
            }
            ClassTarget::Kidney => {
                let kept: Vec<&Vec<usize>> = comps.iter().take(2).collect();
                let xs: Vec<f64> = kept.iter().map(|c| centroid_x(c)).collect();
                // The body's midline rather than the midpoint of the two
                // components: a fragment of one kidney then keeps its side.
                let midline = fusion::body_centre(ct)[0];
                for (cc, x) in kept.iter().zip(&xs) {
                    let l = if *x > midline {
                        organs::KIDNEY_LEFT
                    } else {
                        organs::KIDNEY_RIGHT
                    };
                    for &v in cc.iter() {
                        out[v] = l;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn mask_threshold_decides_which_pixels_are_organ() {
        // One liver detection (class 1) on a 2 x 2 canvas, one kidney (2).
        let det = Detections {
            boxes: vec![[0.0, 0.0, 2.0, 2.0]; 2],
            scores: vec![0.95, 0.92],
            labels: vec![1, 2],
            masks: vec![vec![0.6, 0.45, 0.2, 0.0], vec![0.1, 0.4, 0.3, 0.0]],
        };
        // torchvision's 0.5: only the first pixel is liver.
        assert_eq!(
            slice_classes(&det, 3, 2, 2, 2, 0.5, false).0,
            vec![1, 0, 0, 0]
        );
        // 0.35: the second pixel turns liver (0.45 > kidney's 0.4).
        assert_eq!(
            slice_classes(&det, 3, 2, 2, 2, 0.35, false).0,
            vec![1, 1, 0, 0]
        );
        // 0.25: the third pixel is kidney's alone above the threshold.
        assert_eq!(
            slice_classes(&det, 3, 2, 2, 2, 0.25, true).0,
            vec![1, 1, 2, 0]
        );
        // A class whose mask never reaches the threshold gives nothing.
        assert!(class_probs(&det, 3, 2, 0.5)[2].is_none());
    }

    #[test]
    fn slice_input_replicates_edges() {
        let dims = [4, 4, 3];
        let win: Vec<f32> = (0..48).map(|v| (v / 16) as f32).collect();
        let x = slice_input(&win, dims, Plane::Axial, 0, 4);
        assert_eq!((x[0], x[16], x[32]), (0.0, 0.0, 1.0));
        let x = slice_input(&win, dims, Plane::Axial, 2, 4);
        assert_eq!((x[0], x[16], x[32]), (1.0, 2.0, 2.0));
    }

    #[test]
    // Indices spelled i + nx*j + nx*ny*k, the factor 1 included.
    #[allow(clippy::identity_op)]
    fn label_extent_widens_and_clamps() {
        let dims = [5, 4, 3];
        let mut map = vec![0u8; 60];
        assert_eq!(label_extent(&map, dims, 0, 1), None);
        map[1 + 5 * 2 + 20 * 1] = 3; // i 1, j 2, k 1
        map[3 + 5 * 2 + 20 * 1] = 1; // i 3
        assert_eq!(label_extent(&map, dims, 0, 0), Some((1, 4)));
        assert_eq!(label_extent(&map, dims, 0, 1), Some((0, 5)));
        assert_eq!(label_extent(&map, dims, 1, 1), Some((1, 4)));
        assert_eq!(label_extent(&map, dims, 2, 5), Some((0, 3)));
    }

    #[test]
    fn slices_run_every_step_and_always_the_last() {
        assert_eq!(run_slices(0, 10, 3), vec![0, 3, 6, 9]);
        assert_eq!(run_slices(0, 11, 3), vec![0, 3, 6, 9, 10]);
        assert_eq!(run_slices(4, 9, 1), vec![4, 5, 6, 7, 8]);
        assert_eq!(run_slices(5, 6, 2), vec![5]);
        assert!(run_slices(3, 3, 2).is_empty());
        // 2 mm over 0.98 mm columns: every other; 1.5 mm slices: every one;
        // 0.66 mm: every third; 0 or a bad spacing: every one.
        assert_eq!(slice_step(2.0, 0.98), 2);
        assert_eq!(slice_step(2.0, 1.0), 2);
        assert_eq!(slice_step(2.0, 1.5), 1);
        assert_eq!(slice_step(2.0, 0.66), 3);
        assert_eq!(slice_step(0.0, 0.5), 1);
        assert_eq!(slice_step(2.0, f64::NAN), 1);
    }

    #[test]
    fn skipped_slices_mix_their_neighbours_probabilities() {
        // Class 1 on both sides, class 2 only on the far side; a = 0.25 is
        // a quarter of the way from the far side (weight of the near side).
        let p0 = vec![(1usize, vec![1.0f32, 0.0])];
        let p1 = vec![(1usize, vec![0.0f32, 1.0]), (2, vec![0.5, 0.5])];
        let m = mix_probs(&p0, &p1, 0.25, 2);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, 1);
        assert!((m[0].1[0] - 0.25).abs() < 1e-6 && (m[0].1[1] - 0.75).abs() < 1e-6);
        assert_eq!(m[1].0, 2);
        assert!((m[1].1[0] - 0.375).abs() < 1e-6 && (m[1].1[1] - 0.375).abs() < 1e-6);
        // A class that fades to nothing is dropped.
        let gone = mix_probs(&[(3usize, vec![0.001f32])], &[], 0.5, 1);
        assert!(gone.is_empty());
    }

    #[test]
    fn kidneys_named_by_patient_x() {
        // Identity direction: index i grows along patient +x (LPS left).
        let g = Geometry::new([10, 2, 2], [1.0; 3], [0.0; 3]);
        let ct = Volume::filled(g, 0.0f32);
        let mut map = vec![0u8; 40];
        map[1] = 1; // low x: the patient's right
        map[8] = 1; // high x: the patient's left
        map[9] = 1;
        let t = vec![None, Some(ClassTarget::Kidney)];
        let out = to_organ_labels(&map, &ct, &t);
        assert_eq!(out[1], organs::KIDNEY_RIGHT);
        assert_eq!(out[8], organs::KIDNEY_LEFT);
    }
}
