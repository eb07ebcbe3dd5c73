//! Organ activity on one SPECT time point: the CT organ mask is carried onto the SPECT
//! grid (fraction of each SPECT voxel covered), extended at its border by a Gaussian PSF
//! (the paper: sigma 3 mm, QDOSE "border extension"), and the SPECT (Bq/mL) is summed
//! in that VOI. A shell beyond the VOI is checked for spill-out or misregistration.

use super::boxmap::{reach, BoxMap};
use super::psf::{blur_3d_with_taps, gaussian_blur_3d_axes, gaussian_taps_to, Boundary};
use super::DosimetryConfig;
use crate::error::Result;
use crate::volume::{Geometry, Vec3, Volume};
use serde::Serialize;
use std::collections::BTreeMap;

/// Blurred-mask value one sigma outside a flat edge: Phi(-1). Thresholding a mask
/// blurred with sigma s at this value extends it by about s.
pub(crate) const ONE_SIGMA_LEVEL: f32 = 0.158_655_25;

/// Fraction (0..1) of each voxel of `target` covered by each label of `labels`, from
/// `sub`^3 sample points per target voxel looked up nearest-neighbour in the label map
/// (`sub` = 1 is plain nearest-neighbour resampling). Only labels in `wanted` are
/// returned, each on its own bounding box of the target grid; a wanted label that
/// covers nothing is absent.
///
/// Only the target voxels that can reach the wanted labels' bounding box are sampled,
/// and the slices are shared among threads: organs fill a small part of a SPECT.
pub(crate) fn coverage_boxes(
    labels: &Volume<u8>,
    target: &Geometry,
    sub: usize,
    wanted: &[u8],
) -> BTreeMap<u8, BoxMap> {
    use rayon::prelude::*;
    let sub = sub.max(1);
    let out = BTreeMap::new();
    let src = &labels.geom;
    let [sx, sy, sz] = src.dims;
    let mut want = [false; 256];
    wanted.iter().for_each(|&l| want[l as usize] = true);
    // Bounding box of the wanted labels, in label voxels.
    let plane = sx * sy;
    let boxes: Vec<Option<([usize; 3], [usize; 3])>> = labels
        .data
        .par_chunks(plane.max(1))
        .enumerate()
        .map(|(k, sl)| {
            let mut b: Option<([usize; 3], [usize; 3])> = None;
            for (l, &v) in sl.iter().enumerate() {
                if want[v as usize] {
                    let (i, j) = (l % sx, l / sx);
                    let e = b.get_or_insert(([i, j, k], [i, j, k]));
                    e.0 = [e.0[0].min(i), e.0[1].min(j), k];
                    e.1 = [e.1[0].max(i), e.1[1].max(j), k];
                }
            }
            b
        })
        .collect();
    let mut bb: Option<([usize; 3], [usize; 3])> = None;
    for b in boxes.into_iter().flatten() {
        let e = bb.get_or_insert(b);
        for a in 0..3 {
            e.0[a] = e.0[a].min(b.0[a]);
            e.1[a] = e.1[a].max(b.1[a]);
        }
    }
    let Some((blo, bhi)) = bb else {
        return out;
    };
    // The target voxels whose samples can land in that box.
    let [nx, ny, nz] = target.dims;
    let (mut tlo, mut thi) = ([f64::MAX; 3], [f64::MIN; 3]);
    for c in 0..8 {
        let corner: Vec3 = std::array::from_fn(|a| {
            if c >> a & 1 == 0 {
                blo[a] as f64 - 0.5
            } else {
                bhi[a] as f64 + 0.5
            }
        });
        let t = target.patient_to_index(src.index_to_patient(corner));
        for a in 0..3 {
            tlo[a] = tlo[a].min(t[a]);
            thi[a] = thi[a].max(t[a]);
        }
    }
    let n = [nx, ny, nz];
    let range: [(usize, usize); 3] = std::array::from_fn(|a| {
        let lo = (tlo[a].floor() - 1.0).max(0.0);
        let hi = (thi[a].ceil() + 1.0).min(n[a] as f64 - 1.0);
        (lo as usize, hi.max(lo) as usize)
    });
    if (0..3).any(|a| tlo[a] > n[a] as f64 || thi[a] < -1.0 || n[a] == 0) {
        return out;
    }
    let o = src.patient_to_index(target.index_to_patient([0.0; 3]));
    let step = |a: usize| -> Vec3 {
        let mut e = [0.0; 3];
        e[a] = 1.0;
        let p = src.patient_to_index(target.index_to_patient(e));
        [p[0] - o[0], p[1] - o[1], p[2] - o[2]]
    };
    let s = [step(0), step(1), step(2)];
    let offsets: Vec<f64> = (0..sub)
        .map(|q| (q as f64 + 0.5) / sub as f64 - 0.5)
        .collect();
    let weight = 1.0 / (sub * sub * sub) as f32;
    let lim = [sx as f64 - 0.5, sy as f64 - 0.5, sz as f64 - 0.5];
    // Per target slice: (voxel, label, fraction) of every covered voxel.
    let found: Vec<Vec<(usize, u8, f32)>> = (range[2].0..=range[2].1)
        .into_par_iter()
        .map(|k| {
            let mut hits = Vec::new();
            let mut counts: Vec<(u8, u32)> = Vec::with_capacity(4);
            for j in range[1].0..=range[1].1 {
                for i in range[0].0..=range[0].1 {
                    counts.clear();
                    for &dk in &offsets {
                        for &dj in &offsets {
                            for &di in &offsets {
                                let c = [i as f64 + di, j as f64 + dj, k as f64 + dk];
                                let mut p = o;
                                for (a, sa) in s.iter().enumerate() {
                                    p[0] += c[a] * sa[0];
                                    p[1] += c[a] * sa[1];
                                    p[2] += c[a] * sa[2];
                                }
                                // Nearest voxel: inside when -0.5 <= p < n - 0.5.
                                if p[0] < -0.5
                                    || p[1] < -0.5
                                    || p[2] < -0.5
                                    || p[0] >= lim[0]
                                    || p[1] >= lim[1]
                                    || p[2] >= lim[2]
                                {
                                    continue;
                                }
                                let (pi, pj, pk) = (
                                    (p[0] + 0.5) as usize,
                                    (p[1] + 0.5) as usize,
                                    (p[2] + 0.5) as usize,
                                );
                                let v = labels.data[pi + sx * (pj + sy * pk)];
                                if v == 0 {
                                    continue;
                                }
                                match counts.iter_mut().find(|(lab, _)| *lab == v) {
                                    Some(c) => c.1 += 1,
                                    None => counts.push((v, 1)),
                                }
                            }
                        }
                    }
                    let l = i + nx * (j + ny * k);
                    for &(lab, c) in &counts {
                        if want[lab as usize] {
                            hits.push((l, lab, c as f32 * weight));
                        }
                    }
                }
            }
            hits
        })
        .collect();
    // Bounding box per label, then the values.
    let mut bounds: BTreeMap<u8, ([usize; 3], [usize; 3])> = BTreeMap::new();
    for &(l, lab, _) in found.iter().flatten() {
        let idx = [l % nx, (l / nx) % ny, l / (nx * ny)];
        let e = bounds.entry(lab).or_insert((idx, idx));
        for a in 0..3 {
            e.0[a] = e.0[a].min(idx[a]);
            e.1[a] = e.1[a].max(idx[a]);
        }
    }
    let mut out: BTreeMap<u8, BoxMap> = bounds
        .into_iter()
        .map(|(lab, (lo, hi))| {
            let dims = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
            (
                lab,
                BoxMap {
                    lo,
                    dims,
                    w: vec![0f32; dims[0] * dims[1] * dims[2]],
                },
            )
        })
        .collect();
    for (l, lab, f) in found.into_iter().flatten() {
        if let Some(b) = out.get_mut(&lab) {
            let idx = [l % nx, (l / nx) % ny, l / (nx * ny)];
            let q = (idx[0] - b.lo[0])
                + b.dims[0] * ((idx[1] - b.lo[1]) + b.dims[1] * (idx[2] - b.lo[2]));
            b.w[q] = f;
        }
    }
    out
}

/// The border-extended VOI of one organ (weights 0..1 per SPECT voxel).
///
/// With `sigma_mm > 0`: the coverage fraction is blurred by the Gaussian PSF (zero
/// outside the grid) and thresholded at `threshold`; voxels that belong more to another
/// organ (`other` fraction >= 0.5 and above this organ's own fraction) are left out when
/// `other` is given. With `sigma_mm == 0`: no extension, the weights are the coverage
/// fractions themselves (partial voxels count partly).
pub(crate) fn border_extended_voi(
    core: &[f32],
    other: Option<&[f32]>,
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    sigma_mm: f64,
    threshold: f64,
) -> Vec<f32> {
    if sigma_mm <= 0.0 {
        return core.to_vec();
    }
    let mut blurred = core.to_vec();
    gaussian_blur_3d_axes(
        &mut blurred,
        dims,
        spacing_mm,
        [sigma_mm; 3],
        Boundary::Zero,
    );
    blurred
        .iter()
        .enumerate()
        .map(|(l, &b)| {
            let own = core[l];
            let foreign = other.map(|o| o[l]).unwrap_or(0.0);
            let taken_by_other = foreign >= 0.5 && foreign > own;
            if own >= 0.5 || (b as f64 >= threshold && !taken_by_other) {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Which volume an organ's activity on a time point is taken over
/// (`dosimetry.activity_volume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityVolume {
    /// The time point's (corrected) activity scaled by the organ's volume on
    /// the diagnostic CT over its volume on that time point's SPECT grid: the
    /// activity of the organ whose mass the dose divides by, so that the mean
    /// dose is the organ's time-integrated mean concentration x E / density
    /// whatever volume each time point's mask has (a low-dose CT's mask 7 %
    /// smaller than the diagnostic CT's took 7 % off the dose).
    #[default]
    DiagnosticCt,
    /// The time point's own mask (the activity in its VOI, or the corrected
    /// concentration x its volume): the paper's way.
    TimePoint,
}

impl ActivityVolume {
    /// The name the configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            ActivityVolume::DiagnosticCt => "diagnostic_ct",
            ActivityVolume::TimePoint => "time_point",
        }
    }
}

/// What one organ holds on one time point.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OrganActivity {
    /// Activity in the border-extended VOI: sum(Bq/mL * weight * voxel mL) / 1e6.
    pub activity_mbq: f64,
    pub voi_volume_ml: f64,
    /// Volume of the organ itself on the SPECT grid (sum of coverage fractions).
    pub core_volume_ml: f64,
    /// Mean concentration over the organ (coverage-weighted), Bq/mL.
    pub core_concentration_bq_per_ml: f64,
    /// Mean concentration in the shell beyond the VOI, Bq/mL.
    pub shell_concentration_bq_per_ml: f64,
    /// 90th percentile of the shell concentration / mean organ concentration: high
    /// values mean spill-out beyond the margin or misregistration.
    pub shell_to_core_ratio: Option<f64>,
}

/// One time point measured for all organs, with the maps the dose map and the
/// partial-volume correction need, each on its organ's box of the SPECT grid.
#[derive(Debug, Clone)]
pub(crate) struct TimePointMeasurement {
    pub organs: BTreeMap<u8, OrganActivity>,
    /// Coverage fraction of each organ (organs that miss the grid are absent).
    pub core: BTreeMap<u8, BoxMap>,
    /// Border-extended VOI weights of each organ.
    pub voi: BTreeMap<u8, BoxMap>,
}

impl TimePointMeasurement {
    /// The organs' border-extended VOIs on the SPECT grid `geom` as one label map
    /// (a voxel in two VOIs shows the first organ's): what the activities were
    /// measured in, for the report's pictures.
    pub(crate) fn voi_label_map(&self, geom: &Geometry) -> Result<Volume<u8>> {
        let mut out = vec![0u8; geom.len()];
        for (&lab, w) in self.voi.iter().rev() {
            w.for_each(geom.dims, |l, v| {
                if v >= 0.5 {
                    out[l] = lab;
                }
            });
        }
        Volume::new(geom.clone(), out)
    }
}

/// Measures every organ in `organs` on one SPECT (Bq/mL) with the organ mask `labels`
/// (any grid: carried onto the SPECT grid by coverage).
///
/// Each organ is worked on its own box: the coverage's bounding box grown by the border
/// extension's and the spill shell's reach, where the blurred maps are exact.
pub(crate) fn measure_time_point(
    spect: &Volume<f32>,
    labels: &Volume<u8>,
    organs: &[u8],
    cfg: &DosimetryConfig,
) -> Result<TimePointMeasurement> {
    spect.geom.validate()?;
    labels.geom.validate()?;
    spect.check_finite("SPECT")?;
    if spect.data.iter().any(|&v| v < 0.0) {
        tracing::debug!("SPECT has negative voxels (reconstruction noise); summed as they are");
    }
    let g = &spect.geom;
    let core = coverage_boxes(labels, g, cfg.coverage_subsamples, organs);
    let vox_ml = g.voxel_volume_ml();
    let mut voi = BTreeMap::new();
    let mut result = BTreeMap::new();
    let extension = [cfg.psf_sigma_mm.max(0.0); 3];
    // The shell is the blurred VOI thresholded at one sigma: taps to 3 sigma suffice.
    let shell_taps: [Vec<f32>; 3] =
        std::array::from_fn(|a| gaussian_taps_to(cfg.spill_shell_mm, g.spacing[a], 3.0));
    let shell_reach: [usize; 3] = std::array::from_fn(|a| shell_taps[a].len() / 2);
    for &lab in organs {
        let Some(own_box) = core.get(&lab) else {
            result.insert(
                lab,
                OrganActivity {
                    activity_mbq: 0.0,
                    voi_volume_ml: 0.0,
                    core_volume_ml: 0.0,
                    core_concentration_bq_per_ml: 0.0,
                    shell_concentration_bq_per_ml: 0.0,
                    shell_to_core_ratio: None,
                },
            );
            continue;
        };
        let (r1, r2) = (reach(g, extension), shell_reach);
        let work = own_box.grown(std::array::from_fn(|a| r1[a] + r2[a] + 1), g.dims);
        let own = &work.w;
        // Other organs' coverage on the working box.
        let mut other = BoxMap {
            w: vec![0f32; work.w.len()],
            ..work.clone()
        };
        if cfg.exclude_other_organs {
            for (&l2, b) in &core {
                if l2 != lab {
                    other.add(b);
                }
            }
        }
        // On the working box, which holds the blur's whole reach: the same VOI as on
        // the whole grid.
        let w = border_extended_voi(
            own,
            cfg.exclude_other_organs.then_some(other.w.as_slice()),
            work.dims,
            g.spacing,
            cfg.psf_sigma_mm,
            cfg.voi_threshold,
        );
        let values = work.gather(&spect.data, g.dims);
        let mut act = 0f64;
        let mut wsum = 0f64;
        let mut core_act = 0f64;
        let mut core_sum = 0f64;
        for l in 0..own.len() {
            let c = values[l] as f64;
            act += c * w[l] as f64;
            wsum += w[l] as f64;
            core_act += c * own[l] as f64;
            core_sum += own[l] as f64;
        }
        // Shell: beyond the VOI by about spill_shell_mm, not in another organ.
        let mut ind: Vec<f32> = w.iter().map(|&x| if x > 0.0 { 1.0 } else { 0.0 }).collect();
        blur_3d_with_taps(&mut ind, work.dims, &shell_taps, Boundary::Zero);
        let mut shell: Vec<f64> = Vec::new();
        for l in 0..own.len() {
            if w[l] == 0.0 && own[l] == 0.0 && ind[l] >= ONE_SIGMA_LEVEL && other.w[l] < 0.5 {
                shell.push(values[l] as f64);
            }
        }
        let core_conc = if core_sum > 0.0 {
            core_act / core_sum
        } else {
            0.0
        };
        let shell_conc = if shell.is_empty() {
            0.0
        } else {
            shell.iter().sum::<f64>() / shell.len() as f64
        };
        // A misregistration puts activity on one side of the shell only: the 90th
        // percentile of the shell sees it where the shell mean would dilute it.
        shell.sort_by(|a, b| a.total_cmp(b));
        let p90 = shell
            .get(((shell.len() as f64 * 0.9) as usize).min(shell.len().saturating_sub(1)))
            .copied();
        let ratio = p90.filter(|_| core_conc > 0.0).map(|v| v / core_conc);
        result.insert(
            lab,
            OrganActivity {
                activity_mbq: act * vox_ml / 1e6,
                voi_volume_ml: wsum * vox_ml,
                core_volume_ml: core_sum * vox_ml,
                core_concentration_bq_per_ml: core_conc,
                shell_concentration_bq_per_ml: shell_conc,
                shell_to_core_ratio: ratio,
            },
        );
        if let Some(v) = (BoxMap { w, ..work }).trimmed() {
            voi.insert(lab, v);
        }
    }
    Ok(TimePointMeasurement {
        organs: result,
        core,
        voi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_of_a_finer_grid_is_fractional() {
        // Labels on 1 mm voxels, target on 2 mm voxels aligned so each target voxel holds
        // 2x2x2 source voxels; label the source slab i < 3 (1.5 target voxels).
        let src = Geometry::new([8, 8, 8], [1.0; 3], [0.0; 3]);
        let mut lab = Volume::filled(src, 0u8);
        for k in 0..8 {
            for j in 0..8 {
                for i in 0..3 {
                    lab.set(i, j, k, 2);
                }
            }
        }
        let tgt = Geometry::new([4, 4, 4], [2.0; 3], [0.5, 0.5, 0.5]);
        let f = coverage_boxes(&lab, &tgt, 2, &[2]);
        let mut m = vec![0f32; tgt.len()];
        f[&2].for_each(tgt.dims, |l, v| m[l] = v);
        assert!((m[0] - 1.0).abs() < 1e-6);
        assert!((m[1] - 0.5).abs() < 1e-6);
        assert_eq!(m[2], 0.0);
    }

    #[test]
    fn border_extension_grows_by_about_one_sigma() {
        // Slab x < 20 mm on 1 mm voxels, sigma 3 mm: the VOI edge moves about 3 mm.
        let g = Geometry::new([60, 31, 31], [1.0; 3], [0.0; 3]);
        let mut core = vec![0f32; g.len()];
        for (l, c) in core.iter_mut().enumerate() {
            if l % 60 < 20 {
                *c = 1.0;
            }
        }
        let w = border_extended_voi(&core, None, g.dims, g.spacing, 3.0, ONE_SIGMA_LEVEL as f64);
        let width = (0..60)
            .filter(|&i| w[i + 60 * (15 + 31 * 15)] > 0.0)
            .count();
        assert!((22..=24).contains(&width), "width {width}");
    }
}
