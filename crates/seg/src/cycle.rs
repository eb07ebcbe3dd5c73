//! The cycle's CTs agree: a therapy cycle has several CTs of the same
//! kidneys days apart (the diagnostic CT and the low-dose CT of each SPECT).
//! A kidney whose volume on one CT is an outlier against the others is
//! replaced by the reference CT's mask of that kidney, moved onto the outlying
//! CT by the translation that best overlays it on what the network found there
//! (a rigid shift: the kidney does not change shape in days, the patient's
//! position does). Every replacement is said.

use crate::organs;
use crate::volume::{Geometry, Volume};
use serde::Serialize;

/// Largest relative deviation of an organ's volume from the cycle's median
/// before the CT's mask is replaced (the network's own spread on phantoms is
/// about 2-5 %; a half-missed kidney is 30-50 % off).
pub(crate) const VOLUME_TOLERANCE: f64 = 0.10;
/// Confidence the diagnostic CT's mask counts ahead of a low-dose CT's when
/// the reference is chosen and when a mask is replaced. The diagnostic CT is
/// the full-dose, usually contrast and thin-slice image: on the held-out
/// phantoms its kidney masks were the cycle's best (Dice 0.945-0.985 against
/// the low-dose CTs' 0.92-0.96 once the cycle agreed), while confidences of
/// flagged masks a few hundredths apart swap with any change of settings
/// (PH30000-003's right kidney: 0.06 against 0.03, then 0.02 against 0.03
/// with a coarser slice step, and four low-dose masks 75 % too large
/// replaced the diagnostic one). A low-dose CT becomes the reference only
/// when it is clearly more confident.
pub(crate) const DIAGNOSTIC_BONUS: f64 = 0.15;
/// Translations searched (mm, each axis) and the steps of the search.
const SEARCH_MM: f64 = 30.0;
const COARSE_STEP_MM: f64 = 6.0;
const MID_STEP_MM: f64 = 3.0;
const FINE_STEP_MM: f64 = 1.0;
/// Points of the reference mask used in the search (a lattice subsample);
/// the coarse steps use fewer (an organ's overlap changes slowly over 6 mm).
const MAX_POINTS: usize = 6000;
const COARSE_POINTS: usize = 1500;

/// The organs checked across the cycle: the kidneys (the dose-limiting organ;
/// the liver is often cut by a low-dose CT's shorter field).
pub(crate) const CHECKED: [u8; 2] = [organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT];

/// Volumes of one organ across the cycle's CTs, before and after.
#[derive(Debug, Clone, Serialize)]
pub struct OrganCycle {
    pub organ: String,
    pub volumes_ml_before: Vec<f64>,
    pub volumes_ml_after: Vec<f64>,
    /// Indices of the CTs whose mask was replaced.
    pub replaced: Vec<usize>,
    /// The CT whose mask replaced them.
    pub reference: Option<usize>,
}

/// Coefficient of variation (SD / mean, sample SD) of `v`; None under 2 values.
pub fn cv(v: &[f64]) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    if m <= 0.0 {
        return None;
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
    Some(var.sqrt() / m)
}

/// Median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Volume (mL) of label `organ` in `l`.
pub fn volume_ml(l: &Volume<u8>, organ: u8) -> f64 {
    l.data.iter().filter(|&&v| v == organ).count() as f64 * l.geom.voxel_volume_ml()
}

/// Whether the organ reaches the first or last slice (cut by the scan's field).
fn cut_by_field(l: &Volume<u8>, organ: u8) -> bool {
    let plane = l.geom.dims[0] * l.geom.dims[1];
    let nz = l.geom.dims[2];
    l.data[..plane].contains(&organ) || (nz > 1 && l.data[(nz - 1) * plane..].contains(&organ))
}

/// Makes the cycle's label maps agree (`labels[0]` the diagnostic CT's, the
/// others the low-dose CTs'; each on its own CT's grid). `names[i]` names CT
/// i in the notes; `confidence(i, organ)` is the organ mask's confidence on CT
/// i where known (`seg::confidence`).
///
/// The reference for an organ is its most confident mask, the diagnostic
/// CT's counting [`DIAGNOSTIC_BONUS`] more (without confidences: the
/// diagnostic CT when it is within the tolerance of the median, else the CT
/// closest to the median). The errors of one patient's CTs
/// are not independent (the same anatomy, the same network), so a majority can
/// be wrong together; the confidence says which mask to believe. A CT whose
/// volume is more than `VOLUME_TOLERANCE` off the reference's, whose mask is
/// less confident, and which the scan does not cut, gets the reference's mask
/// moved onto it. Returns per checked organ the volumes before and after, and
/// the notes.
pub fn harmonise(
    labels: &mut [Volume<u8>],
    names: &[String],
    confidence: &dyn Fn(usize, u8) -> Option<f64>,
) -> (Vec<OrganCycle>, Vec<String>) {
    let mut report = Vec::new();
    let mut notes = Vec::new();
    if labels.len() < 3 {
        // Two CTs cannot say which one is off.
        return (report, notes);
    }
    for organ in CHECKED {
        let oname = organs::name(organ).unwrap_or("organ");
        let before: Vec<f64> = labels.iter().map(|l| volume_ml(l, organ)).collect();
        let usable: Vec<usize> = (0..labels.len())
            .filter(|&i| before[i] > 0.0 && !cut_by_field(&labels[i], organ))
            .collect();
        let conf: Vec<Option<f64>> = (0..labels.len()).map(|i| confidence(i, organ)).collect();
        // What the choice of the reference and of the masks to replace weighs:
        // the confidence, the diagnostic CT's (CT 0) with its bonus.
        let score = |i: usize| conf[i].map(|c| c + if i == 0 { DIAGNOSTIC_BONUS } else { 0.0 });
        let mut replaced = Vec::new();
        let mut reference_used = None;
        if usable.len() >= 3 {
            let med = median(&usable.iter().map(|&i| before[i]).collect::<Vec<_>>());
            let off = |i: usize| (before[i] / med - 1.0).abs();
            let known = usable.iter().any(|&i| conf[i].is_some());
            let reference = if known {
                // Most confident; on a tie the earlier CT (the diagnostic one first).
                usable
                    .iter()
                    .copied()
                    .fold(None, |best: Option<usize>, i| match best {
                        Some(b) if score(b).unwrap_or(0.0) >= score(i).unwrap_or(0.0) => Some(b),
                        _ => Some(i),
                    })
                    .unwrap_or(0)
            } else if usable.contains(&0) && off(0) <= VOLUME_TOLERANCE {
                0
            } else {
                usable
                    .iter()
                    .copied()
                    .min_by(|&a, &b| off(a).total_cmp(&off(b)))
                    .unwrap_or(0)
            };
            let vref = before[reference];
            for i in 0..labels.len() {
                let outlier = before[i] == 0.0 || (before[i] / vref - 1.0).abs() > VOLUME_TOLERANCE;
                let less_sure = match (score(i), score(reference)) {
                    (Some(a), Some(b)) => a < b,
                    _ => true,
                };
                if i == reference || !outlier || !less_sure || cut_by_field(&labels[i], organ) {
                    continue;
                }
                let (r, l) = if i < reference {
                    let (a, b) = labels.split_at_mut(reference);
                    (&b[0], &mut a[i])
                } else {
                    let (a, b) = labels.split_at_mut(i);
                    (&a[reference], &mut b[0])
                };
                let shift = best_shift(r, l, organ).0;
                replace_with_shifted(r, l, organ, shift);
                replaced.push(i);
                reference_used = Some(reference);
                notes.push(format!(
                    "{oname} on {}: {:.1} mL against {:.1} mL on {}{}; replaced by that mask moved by ({:.0}, {:.0}, {:.0}) mm ({:.1} mL)",
                    names.get(i).map_or("a CT", String::as_str),
                    before[i],
                    vref,
                    names.get(reference).map_or("another CT", String::as_str),
                    match (conf[i], conf[reference]) {
                        (Some(a), Some(b)) => format!(" (mask confidence {a:.2} against {b:.2})"),
                        _ => format!(", the cycle's median {med:.1} mL"),
                    },
                    shift[0],
                    shift[1],
                    shift[2],
                    volume_ml(l, organ)
                ));
            }
        }
        let after: Vec<f64> = labels.iter().map(|l| volume_ml(l, organ)).collect();
        report.push(OrganCycle {
            organ: oname.to_string(),
            volumes_ml_before: before,
            volumes_ml_after: after,
            replaced,
            reference: reference_used,
        });
    }
    (report, notes)
}

/// One organ of a reference CT's labels moved onto another CT ([`follow`]).
#[derive(Debug, Clone, Serialize)]
pub struct MovedOrgan {
    pub organ: String,
    /// Translation (mm, patient space) from the reference CT onto this one.
    pub shift_mm: [f64; 3],
    /// Dice between the moved mask and what the network found on this CT.
    pub dice: f64,
    pub volume_ml_moved: f64,
    pub volume_ml_network: f64,
    /// The reference CT's field cuts the organ (it reaches its first or last
    /// slice): the moved mask lacks what the reference did not see.
    pub cut_in_reference: bool,
}

/// Moves each of `organs` from `reference` (labels on the reference CT's
/// grid) onto the grid of `found` (what the network found on another CT of
/// the same patient) by the translation that best overlays it there, and
/// says how well each moved organ agrees with what was found. An organ that
/// neither holds is left out of the list; one that only one of them holds
/// gets Dice 0.
pub fn follow(
    reference: &Volume<u8>,
    found: &Volume<u8>,
    organs: &[u8],
) -> (Volume<u8>, Vec<MovedOrgan>) {
    let mut out = Volume::filled(found.geom.clone(), 0u8);
    let mut moved = Vec::new();
    // The organs move with the patient, give or take breathing: each
    // organ's search also starts from the median of all organs' own moves,
    // so that one organ the network found wrong on `found` is still looked
    // for where the others went.
    let own: Vec<Option<([f64; 3], f64)>> = organs
        .iter()
        .map(|&o| {
            reference
                .data
                .contains(&o)
                .then(|| best_shift(reference, found, o))
        })
        .collect();
    let found_own: Vec<[f64; 3]> = organs
        .iter()
        .zip(&own)
        .filter(|(&o, _)| found.data.contains(&o))
        .filter_map(|(_, s)| s.map(|s| s.0))
        .collect();
    let together = (found_own.len() >= 2)
        .then(|| [0, 1, 2].map(|a| median(&found_own.iter().map(|s| s[a]).collect::<Vec<_>>())));
    for (&organ, own) in organs.iter().zip(&own) {
        let in_ref = own.is_some();
        let shift = match (own, together) {
            (Some(own), Some(t)) => {
                // Only the start from where the others went is new here.
                let there = best_shift_from(reference, found, organ, &[t]);
                if there.1 > own.1 {
                    there.0
                } else {
                    own.0
                }
            }
            (Some(own), None) => own.0,
            (None, _) => [0.0; 3],
        };
        if in_ref {
            replace_with_shifted(reference, &mut out, organ, shift);
        }
        let (mut both, mut a, mut b) = (0usize, 0usize, 0usize);
        for (&x, &y) in out.data.iter().zip(&found.data) {
            let (x, y) = (x == organ, y == organ);
            both += usize::from(x && y);
            a += usize::from(x);
            b += usize::from(y);
        }
        if a + b == 0 {
            continue;
        }
        let vox = found.geom.voxel_volume_ml();
        moved.push(MovedOrgan {
            organ: organs::name(organ).unwrap_or("organ").to_string(),
            shift_mm: shift,
            dice: 2.0 * both as f64 / (a + b) as f64,
            volume_ml_moved: a as f64 * vox,
            volume_ml_network: b as f64 * vox,
            cut_in_reference: in_ref && cut_by_field(reference, organ),
        });
    }
    (out, moved)
}

/// Patient-space points of `organ` in `l`, a lattice subsample of at most MAX_POINTS.
fn organ_points(l: &Volume<u8>, organ: u8) -> Vec<[f64; 3]> {
    let d = l.geom.dims;
    let n = l.data.iter().filter(|&&v| v == organ).count();
    let every = n.div_ceil(MAX_POINTS).max(1);
    l.data
        .iter()
        .enumerate()
        .filter(|(_, &v)| v == organ)
        .step_by(every)
        .map(|(v, _)| {
            l.geom.index_to_patient([
                (v % d[0]) as f64,
                ((v / d[0]) % d[1]) as f64,
                (v / (d[0] * d[1])) as f64,
            ])
        })
        .collect()
}

/// Label at a patient point (nearest voxel), 0 outside the grid.
fn label_at(l: &Volume<u8>, p: [f64; 3]) -> u8 {
    label_in(l, p).unwrap_or(0)
}

/// Label at a patient point (nearest voxel), None outside the grid.
fn label_in(l: &Volume<u8>, p: [f64; 3]) -> Option<u8> {
    let idx = l.geom.patient_to_index(p);
    let d = l.geom.dims;
    let mut ijk = [0usize; 3];
    for a in 0..3 {
        let r = idx[a].round();
        if r < 0.0 || r >= d[a] as f64 {
            return None;
        }
        ijk[a] = r as usize;
    }
    Some(l.data[l.geom.linear(ijk[0], ijk[1], ijk[2])])
}

/// [`best_shift_from`] the centroids' offset (when the target has the
/// organ at all) and from no move.
fn best_shift(reference: &Volume<u8>, l: &Volume<u8>, organ: u8) -> ([f64; 3], f64) {
    let c = |ps: &[[f64; 3]]| -> Option<[f64; 3]> {
        (!ps.is_empty()).then(|| {
            let mut s = [0.0; 3];
            for p in ps {
                for a in 0..3 {
                    s[a] += p[a];
                }
            }
            s.map(|x| x / ps.len() as f64)
        })
    };
    let start = match (
        c(&organ_points(reference, organ)),
        c(&organ_points(l, organ)),
    ) {
        (Some(a), Some(b)) => [b[0] - a[0], b[1] - a[1], b[2] - a[2]],
        _ => [0.0; 3],
    };
    best_shift_from(reference, l, organ, &[start, [0.0; 3]])
}

/// The translation (mm, patient space) of the reference's organ that best
/// overlays it on the organ found in `l`, and its score (Dice inside `l`'s
/// field; ties: the first found): a coarse search from each of `starts`,
/// then finer steps around the best.
fn best_shift_from(
    reference: &Volume<u8>,
    l: &Volume<u8>,
    organ: u8,
    starts: &[[f64; 3]],
) -> ([f64; 3], f64) {
    let pts = organ_points(reference, organ);
    let few: Vec<[f64; 3]> = pts
        .iter()
        .step_by(pts.len().div_ceil(COARSE_POINTS).max(1))
        .copied()
        .collect();
    // The moved organ's Dice with the found one, where the moved organ is
    // only what lands inside the target's field: a field that cuts the organ
    // (a short scan) then matches the part it holds, not whichever part of
    // a large organ covers most of it. In reference points: each stands for
    // V_ref / n points' worth of volume.
    let v_ref = volume_ml(reference, organ);
    let v_found = volume_ml(l, organ);
    let score = |pts: &[[f64; 3]], t: [f64; 3]| -> f64 {
        let (mut hits, mut inside) = (0usize, 0usize);
        for p in pts {
            if let Some(x) = label_in(l, [p[0] + t[0], p[1] + t[1], p[2] + t[2]]) {
                inside += 1;
                hits += usize::from(x == organ);
            }
        }
        let found_pts = if v_ref > 0.0 {
            v_found / v_ref * pts.len() as f64
        } else {
            0.0
        };
        let denom = inside as f64 + found_pts;
        if denom > 0.0 {
            2.0 * hits as f64 / denom
        } else {
            0.0
        }
    };
    let search = |pts: &[[f64; 3]], centre: [f64; 3], half: f64, step: f64| -> ([f64; 3], f64) {
        let n = (half / step).round() as i64;
        let mut best = (centre, score(pts, centre));
        for dz in -n..=n {
            for dy in -n..=n {
                for dx in -n..=n {
                    let t = [
                        centre[0] + dx as f64 * step,
                        centre[1] + dy as f64 * step,
                        centre[2] + dz as f64 * step,
                    ];
                    let s = score(pts, t);
                    if s > best.1 {
                        best = (t, s);
                    }
                }
            }
        }
        best
    };
    let mut coarse: Option<([f64; 3], f64)> = None;
    for &s in starts {
        let c = search(&few, s, SEARCH_MM, COARSE_STEP_MM);
        if coarse.is_none_or(|b| c.1 > b.1) {
            coarse = Some(c);
        }
    }
    let coarse = coarse.map_or([0.0; 3], |c| c.0);
    let mid = search(&pts, coarse, COARSE_STEP_MM, MID_STEP_MM).0;
    search(&pts, mid, MID_STEP_MM, FINE_STEP_MM)
}

/// Replaces `organ` in `l` by the reference's organ moved by `shift` (mm):
/// each voxel of `l` takes the reference's label at its position minus the
/// shift (nearest voxel). Voxels of other organs stay theirs.
fn replace_with_shifted(reference: &Volume<u8>, l: &mut Volume<u8>, organ: u8, shift: [f64; 3]) {
    for v in l.data.iter_mut() {
        if *v == organ {
            *v = 0;
        }
    }
    // Only the reference organ's bounding box, mapped, needs visiting.
    let bbox = moved_bbox(reference, organ, shift, &l.geom);
    let Some([lo, hi]) = bbox else { return };
    let g = l.geom.clone();
    for k in lo[2]..=hi[2] {
        for j in lo[1]..=hi[1] {
            for i in lo[0]..=hi[0] {
                let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                let q = [p[0] - shift[0], p[1] - shift[1], p[2] - shift[2]];
                if label_at(reference, q) == organ {
                    let v = g.linear(i, j, k);
                    if l.data[v] == 0 {
                        l.data[v] = organ;
                    }
                }
            }
        }
    }
}

/// Index box of `g` covering the reference organ's voxels moved by `shift`.
fn moved_bbox(
    reference: &Volume<u8>,
    organ: u8,
    shift: [f64; 3],
    g: &Geometry,
) -> Option<[[usize; 3]; 2]> {
    let [lo, hi] = super::fusion::label_bbox(&reference.data, reference.geom.dims, organ)?;
    let (mut olo, mut ohi) = ([f64::MAX; 3], [f64::MIN; 3]);
    for corner in 0..8 {
        let c = [
            if corner & 1 == 0 { lo[0] } else { hi[0] } as f64,
            if corner & 2 == 0 { lo[1] } else { hi[1] } as f64,
            if corner & 4 == 0 { lo[2] } else { hi[2] } as f64,
        ];
        let p = reference.geom.index_to_patient(c);
        let idx = g.patient_to_index([p[0] + shift[0], p[1] + shift[1], p[2] + shift[2]]);
        for a in 0..3 {
            olo[a] = olo[a].min(idx[a]);
            ohi[a] = ohi[a].max(idx[a]);
        }
    }
    let mut out = [[0usize; 3]; 2];
    for a in 0..3 {
        let top = g.dims[a] as f64 - 1.0;
        let a0 = (olo[a] - 1.0).floor().clamp(0.0, top);
        let a1 = (ohi[a] + 1.0).ceil().clamp(0.0, top);
        if ohi[a] + 1.0 < 0.0 || olo[a] - 1.0 > top {
            return None;
        }
        out[0][a] = a0 as usize;
        out[1][a] = a1 as usize;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 40 x 40 x 30 grid at 2 mm with a 10 x 8 x 12 voxel kidney box at `at`.
    fn scan(origin: [f64; 3], at: [usize; 3], size: [usize; 3]) -> Volume<u8> {
        let g = Geometry::new([40, 40, 30], [2.0; 3], origin);
        let mut l = Volume::filled(g, 0u8);
        for k in at[2]..at[2] + size[2] {
            for j in at[1]..at[1] + size[1] {
                for i in at[0]..at[0] + size[0] {
                    let v = l.geom.linear(i, j, k);
                    l.data[v] = organs::KIDNEY_LEFT;
                }
            }
        }
        l
    }

    #[test]
    fn an_outlying_kidney_is_replaced_by_the_moved_reference() {
        let full = [10, 8, 12];
        // Five CTs; the patient lies elsewhere on each (origins differ), and
        // on CT 3 the network found only the lower half of the kidney.
        let mut cts = vec![
            scan([0.0; 3], [10, 10, 8], full),
            scan([4.0, -2.0, 0.0], [12, 12, 9], full),
            scan([0.0; 3], [9, 10, 8], full),
            scan([0.0, 6.0, -4.0], [11, 7, 10], [10, 8, 6]),
            scan([0.0; 3], [10, 11, 8], full),
        ];
        let names: Vec<String> = (0..5).map(|i| format!("CT {i}")).collect();
        let (rep, notes) = harmonise(&mut cts, &names, &|_, _| None);
        let kl = &rep[0];
        assert_eq!(kl.replaced, vec![3], "{notes:?}");
        let v: Vec<f64> = kl.volumes_ml_after.clone();
        assert!(v.iter().all(|&x| (x - v[0]).abs() < 1e-9), "{v:?}");
        assert!(cv(&kl.volumes_ml_before).unwrap() > 0.15);
        assert!(cv(&kl.volumes_ml_after).unwrap() < 1e-9);
        // The moved kidney covers the half the network found on CT 3.
        let l = &cts[3];
        for k in 10..16 {
            let vv = l.geom.linear(11, 7, k);
            assert_eq!(l.data[vv], organs::KIDNEY_LEFT);
        }
        assert!(
            notes[0].starts_with("kidney_left on CT 3: 3.8 mL"),
            "{notes:?}"
        );
    }

    /// Five CTs: the diagnostic CT's kidney (10 x 8 x 12 voxels) and four
    /// low-dose CTs agreeing on one 50 % too large (the same network on the
    /// same anatomy errs alike); with their names.
    fn true_diagnostic_and_four_large() -> (Vec<Volume<u8>>, Vec<String>) {
        let mut cts = vec![scan([0.0; 3], [10, 10, 8], [10, 8, 12])];
        for _ in 0..4 {
            cts.push(scan([0.0; 3], [10, 10, 8], [15, 8, 12]));
        }
        (cts, (0..5).map(|i| format!("CT {i}")).collect())
    }

    #[test]
    fn a_confident_minority_is_believed_over_an_agreeing_majority() {
        // The diagnostic CT's kidney is the truth; the low-dose CTs' are less
        // confident: they are replaced.
        let (mut cts, names) = true_diagnostic_and_four_large();
        let conf = |i: usize, _| Some(if i == 0 { 0.11 } else { 0.04 });
        let (rep, notes) = harmonise(&mut cts, &names, &conf);
        assert_eq!(rep[0].replaced, vec![1, 2, 3, 4], "{notes:?}");
        assert_eq!(rep[0].reference, Some(0));
        let v = &rep[0].volumes_ml_after;
        assert!(v.iter().all(|&x| (x - v[0]).abs() < 1e-9), "{v:?}");
        assert!(
            notes[0].contains("mask confidence 0.04 against 0.11"),
            "{notes:?}"
        );
        // Without confidences the median (the majority) wins.
        let (mut cts, _) = true_diagnostic_and_four_large();
        let (rep, _) = harmonise(&mut cts, &names, &|_, _| None);
        assert_eq!(rep[0].replaced, vec![0]);
    }

    #[test]
    fn the_diagnostic_ct_stays_the_reference_unless_clearly_less_confident() {
        // As on held-out PH30000-003 with a coarser slice step: every mask
        // flagged, the low-dose CTs' (50 % too large) a hundredth more
        // confident than the diagnostic CT's. The diagnostic CT stays the
        // reference and the low-dose CTs take its kidney.
        let (mut cts, names) = true_diagnostic_and_four_large();
        let conf = |i: usize, _| Some(if i == 0 { 0.02 } else { 0.03 });
        let (rep, notes) = harmonise(&mut cts, &names, &conf);
        assert_eq!(rep[0].reference, Some(0), "{notes:?}");
        assert_eq!(rep[0].replaced, vec![1, 2, 3, 4], "{notes:?}");
        assert!(
            notes[0].contains("mask confidence 0.03 against 0.02"),
            "{notes:?}"
        );
        // A low-dose CT clearly more confident (by more than the bonus) is
        // believed over the diagnostic CT.
        let (mut cts, _) = true_diagnostic_and_four_large();
        let conf = |i: usize, _| Some(if i == 2 { 0.60 } else { 0.10 });
        let (rep, notes) = harmonise(&mut cts, &names, &conf);
        assert_eq!(rep[0].reference, Some(2), "{notes:?}");
        assert_eq!(rep[0].replaced, vec![0], "{notes:?}");
    }

    #[test]
    fn a_reference_kidney_follows_onto_another_grid() {
        // The reference kidney (10 x 8 x 12 voxels at 2 mm); on the other CT
        // (origin moved by (4, -2, 0) mm) the network found it one voxel
        // further along i and j.
        let reference = scan([0.0; 3], [10, 10, 8], [10, 8, 12]);
        let found = scan([4.0, -2.0, 0.0], [11, 11, 8], [10, 8, 12]);
        let (moved, list) = follow(&reference, &found, &[organs::KIDNEY_LEFT, organs::LIVER]);
        assert_eq!(list.len(), 1, "no liver in either: left out");
        let m = &list[0];
        // Reference voxel 10 lies at 20 mm; found voxel 11 at 4 + 22 = 26 mm
        // (and -2 + 22 = 20 mm in y).
        assert_eq!(m.shift_mm, [6.0, 0.0, 0.0], "{m:?}");
        assert!((m.volume_ml_moved - 960.0 * 0.008).abs() < 1e-9, "{m:?}");
        assert!((m.volume_ml_network - 960.0 * 0.008).abs() < 1e-9);
        assert!((m.dice - 1.0).abs() < 1e-12, "{m:?}");
        assert_eq!(moved.data, found.data);
        assert!(!m.cut_in_reference);
        // A reference kidney that reaches its scan's first slice is cut there.
        let cut = scan([0.0; 3], [10, 10, 0], [10, 8, 12]);
        let (_, list) = follow(&cut, &found, &[organs::KIDNEY_LEFT]);
        assert!(list[0].cut_in_reference);
        // An organ only the network found gets Dice 0.
        let empty = Volume::filled(reference.geom.clone(), 0u8);
        let (_, list) = follow(&empty, &found, &[organs::KIDNEY_LEFT]);
        assert_eq!(list[0].dice, 0.0);
        assert_eq!(list[0].volume_ml_moved, 0.0);
    }

    #[test]
    fn agreeing_cts_and_cut_kidneys_are_left_alone() {
        let mut cts = vec![
            scan([0.0; 3], [10, 10, 8], [10, 8, 12]),
            scan([0.0; 3], [10, 10, 8], [10, 8, 12]),
            scan([0.0; 3], [10, 10, 8], [10, 8, 11]),
            // Cut by the top of the field: legitimately smaller.
            scan([0.0; 3], [10, 10, 0], [10, 8, 5]),
        ];
        let names: Vec<String> = (0..4).map(|i| format!("CT {i}")).collect();
        let (rep, notes) = harmonise(&mut cts, &names, &|_, _| None);
        assert!(rep[0].replaced.is_empty() && notes.is_empty(), "{notes:?}");
        assert_eq!(rep[0].volumes_ml_before, rep[0].volumes_ml_after);
    }
}
