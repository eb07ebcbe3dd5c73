//! How far each organ mask can be trusted, from signals that need no truth:
//! agreement between the planes, the network's own probability inside the
//! mask and at its edge, plausibility of volume and position, whether the
//! scan cuts the organ, and (in a study) agreement across the cycle's CTs.
//! A confidence in [0, 1] and a flag, `ok` or `review`, with the reasons.
//!
//! The mapping's constants were set on tuning phantoms (seeds 31000-31002,
//! never on the labelled real CTs); docs/segmentation.md, "Mask confidence", gives how well
//! it separates good from bad masks on held-out phantoms and real CTs.

use super::driver::{ClassTarget, Segmentation};
use super::fusion::{self, PlaneProbs};
use crate::organs;
use crate::volume::Volume;
use serde::Serialize;

/// Plausible organ volumes in adults (mL), set wide around the ICRP
/// reference masses (ICRP Publication 89, 2002: kidneys 310 g both, liver
/// 1800 g, spleen 150 g, adult male; female about 15-20 % less) at about
/// 1.05 g/mL: a mask outside them is more likely wrong than the organ.
pub(crate) fn plausible_ml(label: u8) -> Option<(f64, f64)> {
    match label {
        organs::KIDNEY_LEFT | organs::KIDNEY_RIGHT => Some((60.0, 400.0)),
        organs::LIVER => Some((600.0, 4000.0)),
        organs::SPLEEN => Some((40.0, 1200.0)),
        _ => None,
    }
}

/// Below this confidence an organ is flagged for review.
pub(crate) const REVIEW_BELOW: f64 = 0.5;
/// Pairwise Dice of the planes' masks mapped to [0, 1] between these.
const AGREE_LO: f64 = 0.70;
const AGREE_HI: f64 = 0.90;
/// Mean probability inside the mask mapped to [0, 1] between these.
const PROB_LO: f64 = 0.60;
const PROB_HI: f64 = 0.85;
/// A plane's weight for an organ from which its mask is asked to agree.
const TRUSTED_WEIGHT: f32 = 0.5;
/// An organ cut by the scan's edge is held below the review threshold.
const CUT_CONFIDENCE: f64 = 0.45;
/// An organ the segmentation holds (`Segmentation::held`: a kidney redrawn
/// too far from the network's, the redraw not taken; a kidney in two parts on
/// one side) is held below the review threshold: something is badly wrong,
/// and nothing here says which part is right.
const HELD_CONFIDENCE: f64 = 0.45;
/// Region around an organ in which the planes' masks are compared (mm).
const REGION_MARGIN_MM: f64 = 10.0;

/// What the confidence is made of, for the report and for calibration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Signals {
    /// Smallest Dice between two planes' masks of the organ (None: one plane).
    pub plane_dice_min: Option<f64>,
    /// Mean over the mask of the planes' mean probability.
    pub mean_probability: Option<f64>,
    /// Voxels near the mask whose planes' mean probability is between 0.25
    /// and 0.75, per voxel of the mask: a wide fuzzy edge.
    pub uncertain_fraction: Option<f64>,
    /// The organ reaches the first or last slice of the scan.
    pub cut_by_scan: bool,
    /// Relative deviation of the volume from the cycle's median (a study).
    pub cycle_deviation: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flag {
    Ok,
    Review,
}

/// One organ's confidence on one CT.
#[derive(Debug, Clone, Serialize)]
pub struct OrganConfidence {
    pub confidence: f64,
    pub flag: Flag,
    pub reasons: Vec<String>,
    pub volume_ml: f64,
    pub signals: Signals,
}

fn ramp(x: f64, lo: f64, hi: f64) -> f64 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// The organs a model's classes give, with their class index.
fn organ_classes(targets: &[Option<ClassTarget>]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    for (c, t) in targets.iter().enumerate() {
        match t {
            Some(ClassTarget::Organ(l)) => out.push((*l, c)),
            Some(ClassTarget::Kidney) => {
                out.push((organs::KIDNEY_LEFT, c));
                out.push((organs::KIDNEY_RIGHT, c));
            }
            None => {}
        }
    }
    out.sort_unstable();
    out
}

/// Index box of label `l`, widened by `margin` voxels per axis; None if absent.
fn bbox(labels: &Volume<u8>, l: u8, margin: [usize; 3]) -> Option<[[usize; 3]; 2]> {
    let d = labels.geom.dims;
    let [mut lo, mut hi] = fusion::label_bbox(&labels.data, d, l)?;
    for a in 0..3 {
        lo[a] = lo[a].saturating_sub(margin[a]);
        hi[a] = (hi[a] + margin[a]).min(d[a] - 1);
    }
    Some([lo, hi])
}

/// Per plane, its probability (1/255) of class `c` on the box, x fastest.
fn plane_boxes(
    planes: &[&PlaneProbs],
    c: usize,
    b: [[usize; 3]; 2],
    dims: [usize; 3],
) -> Vec<Vec<u8>> {
    let w = [
        b[1][0] - b[0][0] + 1,
        b[1][1] - b[0][1] + 1,
        b[1][2] - b[0][2] + 1,
    ];
    planes
        .iter()
        .map(|pp| {
            let mut out = vec![0u8; w[0] * w[1] * w[2]];
            pp.for_each(|v, cc, q| {
                if cc != c {
                    return;
                }
                let ijk = [
                    v % dims[0],
                    (v / dims[0]) % dims[1],
                    v / (dims[0] * dims[1]),
                ];
                if (0..3).all(|a| ijk[a] >= b[0][a] && ijk[a] <= b[1][a]) {
                    let r = (ijk[0] - b[0][0])
                        + w[0] * ((ijk[1] - b[0][1]) + w[1] * (ijk[2] - b[0][2]));
                    out[r] = q;
                }
            });
            out
        })
        .collect()
}

/// Confidence of every organ the model segments, from one `auto`
/// segmentation of `ct`. `cycle_deviation` gives, per organ label, the
/// relative deviation of its volume from the cycle's median (a study).
pub fn assess(
    seg: &Segmentation,
    ct: &Volume<f32>,
    targets: &[Option<ClassTarget>],
    cycle_deviation: &dyn Fn(u8) -> Option<f64>,
) -> Vec<(String, OrganConfidence)> {
    // The planes' probabilities are in the network's voxel order
    // (`seg::orient`): the labels and CT are looked at in that order too.
    let ro = super::orient::Reorient::canonical(&ct.geom);
    let (lab_c, ct_c);
    let (labels, ct) = if ro.is_identity() {
        (&seg.labels, ct)
    } else {
        lab_c = ro.apply(&seg.labels);
        ct_c = ro.apply(ct);
        (&lab_c, &ct_c)
    };
    let g = &labels.geom;
    let dims = g.dims;
    let ml = g.voxel_volume_ml();
    let margin = [0, 1, 2].map(|a| (REGION_MARGIN_MM / g.spacing[a]).ceil() as usize);
    let centre = fusion::body_centre(ct);
    let mut out = Vec::new();
    for (l, c) in organ_classes(targets) {
        let name = organs::name(l).unwrap_or("organ").to_string();
        let n = labels.data.iter().filter(|&&x| x == l).count();
        let volume_ml = n as f64 * ml;
        let mut reasons = Vec::new();
        let mut s = Signals {
            cycle_deviation: cycle_deviation(l),
            ..Signals::default()
        };
        let Some(b) = bbox(labels, l, margin) else {
            out.push((
                name,
                OrganConfidence {
                    confidence: 0.0,
                    flag: Flag::Review,
                    reasons: vec!["not found on this CT".into()],
                    volume_ml: 0.0,
                    signals: s,
                },
            ));
            continue;
        };
        let probs: Vec<&PlaneProbs> = seg.plane_probs.iter().filter(|p| p.dims == dims).collect();
        // Agreement is asked only of the planes that see the organ whole
        // (weight >= TRUSTED_WEIGHT): on a slab a coronal pass of weight 0.15
        // sees a strip and disagrees by construction, not because the mask
        // is wrong (tuning slabs 30 x 4 mm: 6 of 8 good masks were flagged).
        let trusted: Vec<&PlaneProbs> = probs
            .iter()
            .copied()
            .filter(|p| {
                seg.weights
                    .as_ref()
                    .map(|w| w.of(p.plane).get(c).copied().unwrap_or(0.0) >= TRUSTED_WEIGHT)
                    .unwrap_or(true)
            })
            .collect();
        if !probs.is_empty() {
            let boxes = plane_boxes(&probs, c, b, dims);
            let w = [
                b[1][0] - b[0][0] + 1,
                b[1][1] - b[0][1] + 1,
                b[1][2] - b[0][2] + 1,
            ];
            let inside = |r: usize| {
                let (i, j, k) = (r % w[0], (r / w[0]) % w[1], r / (w[0] * w[1]));
                labels.data[g.linear(b[0][0] + i, b[0][1] + j, b[0][2] + k)] == l
            };
            // Each plane's mask: its probability >= 0.5 (the other kidney is
            // outside the box or not connected; restrict to near this one).
            let masks: Vec<Vec<bool>> = plane_boxes(&trusted, c, b, dims)
                .iter()
                .map(|p| p.iter().map(|&q| q >= 128).collect())
                .collect();
            if masks.len() >= 2 {
                let mut dmin = f64::MAX;
                for a in 0..masks.len() {
                    for bb in a + 1..masks.len() {
                        let d = super::eval::dice(&masks[a], &masks[bb]).unwrap_or(0.0);
                        dmin = dmin.min(d);
                    }
                }
                s.plane_dice_min = Some(dmin);
            }
            let np = boxes.len() as f64;
            let (mut sum, mut cnt, mut fuzzy) = (0.0, 0usize, 0usize);
            for r in 0..boxes[0].len() {
                let m: f64 = boxes.iter().map(|p| p[r] as f64 / 255.0).sum::<f64>() / np;
                if inside(r) {
                    sum += m;
                    cnt += 1;
                }
                if (0.25..=0.75).contains(&m) {
                    fuzzy += 1;
                }
            }
            s.mean_probability = (cnt > 0).then(|| sum / cnt as f64);
            s.uncertain_fraction = (n > 0).then(|| fuzzy as f64 / n as f64);
        }
        // Cut by the scan's first or last slice.
        let plane = dims[0] * dims[1];
        s.cut_by_scan =
            labels.data[..plane].contains(&l) || labels.data[(dims[2] - 1) * plane..].contains(&l);
        // The factors.
        let mut conf = 1.0;
        match s.plane_dice_min {
            Some(d) => {
                conf *= ramp(d, AGREE_LO, AGREE_HI).max(0.05);
                if d < AGREE_LO + 0.5 * (AGREE_HI - AGREE_LO) {
                    reasons.push(format!(
                        "the planes disagree (smallest Dice between planes {d:.2})"
                    ));
                }
            }
            None => conf *= 0.8,
        }
        if let Some(p) = s.mean_probability {
            conf *= ramp(p, PROB_LO, PROB_HI).max(0.05);
            if p < PROB_LO + 0.5 * (PROB_HI - PROB_LO) {
                reasons.push(format!(
                    "low network probability inside the mask (mean {p:.2})"
                ));
            }
        }
        if let Some((lo, hi)) = plausible_ml(l) {
            if !s.cut_by_scan && !(lo..=hi).contains(&volume_ml) {
                conf *= 0.2;
                reasons.push(format!(
                    "volume {volume_ml:.0} mL outside the plausible {lo:.0}-{hi:.0} mL"
                ));
            }
        }
        if s.cut_by_scan {
            // Part of the organ is outside the scan: its mass and mean dose
            // are of that part only, and on held-out slabs a mask of Dice
            // 0.53 looked as confident as good ones. Always a person's call.
            conf = conf.min(CUT_CONFIDENCE);
            reasons
                .push("cut by the edge of the scan: the mask holds only part of the organ".into());
        }
        if let Some(dev) = s.cycle_deviation {
            conf *= ramp(0.20 - dev, 0.0, 0.12);
            if dev > 0.10 {
                reasons.push(format!(
                    "volume {:.0} % off the median of the cycle's CTs",
                    100.0 * dev
                ));
            }
        }
        for (_, why) in seg.held.iter().filter(|(h, _)| *h == l) {
            conf = conf.min(HELD_CONFIDENCE);
            reasons.push(why.clone());
        }
        // Position: kidneys posterior, liver right, spleen left (LPS).
        let (mut sx, mut sy) = (0.0, 0.0);
        let mut k = 0usize;
        for (v, &x) in labels.data.iter().enumerate().step_by(3) {
            if x == l {
                let p = g.index_to_patient([
                    (v % dims[0]) as f64,
                    ((v / dims[0]) % dims[1]) as f64,
                    (v / plane) as f64,
                ]);
                sx += p[0];
                sy += p[1];
                k += 1;
            }
        }
        if k > 0 {
            let (x, y) = (sx / k as f64, sy / k as f64);
            let wrong = match l {
                organs::KIDNEY_LEFT | organs::KIDNEY_RIGHT => y < centre[1],
                organs::LIVER => x > centre[0],
                organs::SPLEEN => x < centre[0],
                _ => false,
            };
            if wrong {
                conf *= 0.2;
                reasons.push("on an unexpected side of the body".into());
            }
        }
        let flag = if conf < REVIEW_BELOW {
            Flag::Review
        } else {
            Flag::Ok
        };
        if flag == Flag::Review && reasons.is_empty() {
            reasons.push(format!("confidence {conf:.2} below {REVIEW_BELOW}"));
        }
        out.push((
            name,
            OrganConfidence {
                confidence: conf,
                flag,
                reasons,
                volume_ml,
                signals: s,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn a_refused_kidney_redraw_holds_the_kidney_for_review() {
        // A 64 mL left kidney (8 x 8 x 8 voxels of 5 mm) behind the body's
        // centre, inside the scan, in a body of soft tissue; no plane
        // probabilities (confidence 0.8: ok).
        let dims = [40, 40, 12];
        let geom = Geometry::new(dims, [5.0; 3], [0.0; 3]);
        let ct = Volume::new(geom.clone(), vec![40f32; 40 * 40 * 12]).unwrap();
        let mut labels = Volume::new(geom.clone(), vec![0u8; 40 * 40 * 12]).unwrap();
        for k in 2..10 {
            for j in 26..34 {
                for i in 24..32 {
                    labels.data[geom.linear(i, j, k)] = organs::KIDNEY_LEFT;
                }
            }
        }
        let targets = [None, Some(ClassTarget::Kidney)];
        let left = |held: Vec<(u8, String)>| {
            let seg = Segmentation {
                planes: super::super::driver::Planes::Auto,
                labels: labels.clone(),
                planes_run: Vec::new(),
                weights: None,
                plane_probs: Vec::new(),
                notes: Vec::new(),
                held,
            };
            assess(&seg, &ct, &targets, &|_| None)
                .into_iter()
                .find(|(o, _)| o == "kidney_left")
                .map(|(_, c)| c)
                .unwrap()
        };
        let ok = left(Vec::new());
        assert_eq!(ok.flag, Flag::Ok, "{:?}", ok.reasons);
        assert!((ok.volume_ml - 64.0).abs() < 1e-9);
        let held = left(vec![(
            organs::KIDNEY_LEFT,
            "the kidney stage's redraw was far from the network's kidney and not taken".into(),
        )]);
        assert_eq!(held.flag, Flag::Review);
        assert!(held.confidence <= HELD_CONFIDENCE);
        assert!(
            held.reasons.iter().any(|r| r.contains("kidney stage")),
            "{:?}",
            held.reasons
        );
    }
}
