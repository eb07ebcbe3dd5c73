//! A low-dose CT segmented by following the cycle's diagnostic CT: the
//! network runs the axial pass only, each organ of the diagnostic CT's fused
//! mask is moved onto the low-dose CT by the translation that best overlays
//! it on that pass (`seg::cycle::follow`), and the moved masks are taken when
//! every organ agrees with the pass; otherwise the full pass runs and says why.
//!
//! Why: a cycle's four low-dose CTs show the same organs as its diagnostic
//! CT, days apart, through 4-5 mm slices and more noise. Their coronal and
//! sagittal passes were two thirds of a study's time on the CPU, and their
//! masks have to agree with the diagnostic CT's anyway (`seg::cycle`).
//!
//! [`segment_bounded`] (the default, `segment.low_dose_ct = "bounded"`) keeps
//! the low-dose CT's own full pass but runs its axial plane only where the
//! diagnostic CT's organs are on it: the two CTs registered from their images
//! (`seg::register`, before the network), the organs' box moved by that
//! shift and widened by [`BOUND_MARGIN_MM`]. A low-dose CT spans more than
//! the organs, and with the arms beside the body its axial slices needed two
//! canvas tiles each; in bounds they need one. When the registration is
//! doubtful, or an organ comes out at the bound's edge, the full pass runs
//! and says why.

use super::cycle::{self, MovedOrgan};
use super::driver::{self, DriverOptions, Planes, Segmentation};
use super::model::MaskRcnn;
use super::orient::Reorient;
use super::plane::Plane;
use super::register::{self, Pyramid, Shift};
use crate::error::{Error, Result};
use crate::organs;
use crate::volume::Volume;

/// Lowest Dice between an organ's moved diagnostic mask and the low-dose
/// CT's own axial pass for the moved masks to be taken. The axial pass alone
/// reaches Dice 0.86-0.96 against truth on the held-out phantoms' low-dose
/// CTs, so two sound masks of one organ agree at about 0.85 or more; a
/// half-missed or misplaced organ is far below.
pub const MIN_DICE: f64 = 0.80;

/// The organs followed.
const ORGANS: [u8; 4] = [
    organs::LIVER,
    organs::KIDNEY_LEFT,
    organs::KIDNEY_RIGHT,
    organs::SPLEEN,
];

/// A low-dose CT's segmentation by [`segment_following`].
#[derive(Debug, Clone)]
pub struct Following {
    /// The moved masks (with the axial pass's probabilities), or the full pass.
    pub seg: Segmentation,
    /// Per organ, the move and its agreement with the axial pass.
    pub organs: Vec<MovedOrgan>,
    /// Why the full pass ran; None when the moved masks were taken.
    pub full_pass_because: Option<String>,
}

/// Segments `ct` (a low-dose CT) by following `reference` (the cycle's
/// diagnostic CT's labels on its own grid): see the module's notes.
pub fn segment_following(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    opts: &DriverOptions,
    reference: &Volume<u8>,
    progress: &mut dyn FnMut(usize, usize),
    on_plane: &mut dyn FnMut(Plane, usize, std::time::Duration),
) -> Result<Following> {
    let axial = driver::segment_modes_on(
        model,
        ct,
        opts,
        &[Planes::Auto],
        Some(&[Plane::Axial]),
        None,
        progress,
        on_plane,
    )?
    .pop()
    .ok_or_else(|| Error::internal("segmentation gave no result"))?;
    let (moved, list) = cycle::follow(reference, &axial.labels, &ORGANS);
    let worst = list
        .iter()
        .min_by(|a, b| a.dice.total_cmp(&b.dice))
        .filter(|m| m.dice < MIN_DICE);
    let cut = list
        .iter()
        .find(|m| m.cut_in_reference && m.volume_ml_network > 0.0);
    let why = if list.is_empty() {
        Some("no organ on the diagnostic CT or on this CT's axial pass".to_string())
    } else if let Some(m) = cut {
        Some(format!(
            "{}: the diagnostic CT's field cuts it, and this CT shows it",
            m.organ
        ))
    } else {
        worst.map(|m| format!(
            "{}: the diagnostic CT's mask moved by ({:.0}, {:.0}, {:.0}) mm and this CT's axial pass agree at Dice {:.2} (< {MIN_DICE:.2}; {:.0} mL against {:.0} mL)",
            m.organ,
            m.shift_mm[0],
            m.shift_mm[1],
            m.shift_mm[2],
            m.dice,
            m.volume_ml_moved,
            m.volume_ml_network
        ))
    };
    if let Some(why) = why {
        tracing::warn!("full pass: {why}");
        let mut full = driver::segment_detail(
            model,
            ct,
            &DriverOptions {
                planes: Planes::Auto,
                ..opts.clone()
            },
            progress,
            on_plane,
        )?;
        full.notes.push(format!(
            "segmented in full, not from the diagnostic CT: {why}"
        ));
        return Ok(Following {
            seg: full,
            organs: list,
            full_pass_because: Some(why),
        });
    }
    let moves: Vec<String> = list
        .iter()
        .map(|m| {
            format!(
                "{} ({:.0}, {:.0}, {:.0}) mm, Dice {:.2}",
                m.organ, m.shift_mm[0], m.shift_mm[1], m.shift_mm[2], m.dice
            )
        })
        .collect();
    let note = format!(
        "the diagnostic CT's masks moved onto this CT, checked against its axial pass: {}",
        moves.join("; ")
    );
    tracing::info!("{note}");
    let mut notes = axial.notes;
    notes.push(note);
    Ok(Following {
        seg: Segmentation {
            labels: moved,
            notes,
            // The moved masks are the diagnostic CT's, not this CT's redraws
            // or clean-up.
            held: Vec::new(),
            ..axial
        },
        organs: list,
        full_pass_because: None,
    })
}

/// How a low-dose CT uses its cycle's diagnostic CT (`segment.low_dose_ct`).
#[derive(Debug, Clone, Copy)]
pub enum LowDose<'a> {
    /// [`segment_following`] the diagnostic CT's labels.
    Follow(&'a Volume<u8>),
    /// [`segment_bounded`] by the diagnostic CT's [`Reference`].
    Bounded(&'a Reference),
}

/// A low-dose CT's segmentation by [`segment_low_dose`].
#[derive(Debug, Clone)]
pub struct LowDoseSeg {
    pub seg: Segmentation,
    /// The masks are the diagnostic CT's, moved ([`LowDose::Follow`] taken).
    pub followed: bool,
    /// Why the full pass ran instead; None when the faster path was taken.
    pub full_pass_because: Option<String>,
}

/// Segments a low-dose CT the way `how` says: one entry for `run`, the
/// daemon and `eval`.
pub fn segment_low_dose(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    opts: &DriverOptions,
    how: LowDose<'_>,
    progress: &mut dyn FnMut(usize, usize),
    on_plane: &mut dyn FnMut(Plane, usize, std::time::Duration),
) -> Result<LowDoseSeg> {
    Ok(match how {
        LowDose::Follow(r) => {
            let f = segment_following(model, ct, opts, r, progress, on_plane)?;
            LowDoseSeg {
                followed: f.full_pass_because.is_none(),
                seg: f.seg,
                full_pass_because: f.full_pass_because,
            }
        }
        LowDose::Bounded(r) => {
            let b = segment_bounded(model, ct, opts, r, progress, on_plane)?;
            LowDoseSeg {
                seg: b.seg,
                followed: false,
                full_pass_because: b.full_pass_because,
            }
        }
    })
}

/// Room around the diagnostic CT's organs, moved onto a low-dose CT, where its
/// axial pass runs (mm): the registration's few millimetres, the kidneys'
/// breathing (10-20 mm, the two scans in any phase of it) and the organs'
/// change over days.
pub const BOUND_MARGIN_MM: f64 = 30.0;
/// An organ within this of a bound's face (mm; faces inside the CT only)
/// may reach beyond it: the full pass runs.
pub const EDGE_GUARD_MM: f64 = 8.0;
/// Organs of the diagnostic CT this close to its field's end (mm) may go on
/// beyond it: the network misses an organ's last few small cross-sections
/// (PH30000-003: the liver's tip cut by the field, its mask ending 6 mm
/// short of it), so an organ at the field's end is not always on its last
/// slice.
pub const FIELD_END_MM: f64 = 10.0;
/// Least normalised cross-correlation of the registration to be trusted.
/// Measured between the diagnostic and low-dose CTs of held-out phantoms:
/// see `docs/log/speed.md` ("Low-dose CTs in bounds").
pub const MIN_NCC: f64 = 0.5;

/// What a low-dose CT needs of its cycle's diagnostic CT to be segmented in
/// bounds: the diagnostic CT's registration pyramid and its organs' box.
#[derive(Debug, Clone)]
pub struct Reference {
    pyramid: Pyramid,
    /// Patient-mm box of the organs (canonical axes), None without organs.
    organs_mm: Option<[(f64, f64); 3]>,
    /// Per axis, whether the diagnostic CT's field cuts the organs at its
    /// low and high end: their extent beyond is unknown, so the bound runs
    /// to the other CT's end there.
    cut: [[bool; 2]; 3],
}

impl Reference {
    /// From the diagnostic CT and its labels (on its grid).
    pub fn new(ct: &Volume<f32>, labels: &Volume<u8>) -> Reference {
        let ro = Reorient::canonical(&ct.geom);
        let (ct, labels) = if ro.is_identity() {
            (
                std::borrow::Cow::Borrowed(ct),
                std::borrow::Cow::Borrowed(labels),
            )
        } else {
            (
                std::borrow::Cow::Owned(ro.apply(ct)),
                std::borrow::Cow::Owned(ro.apply(labels)),
            )
        };
        let g = &labels.geom;
        let boxed = index_box(&labels.data, g.dims, &ORGANS);
        let organs_mm = boxed.map(|b| {
            std::array::from_fn(|a| {
                (
                    g.origin[a] + b[a].0 as f64 * g.spacing[a],
                    g.origin[a] + (b[a].1 - 1) as f64 * g.spacing[a],
                )
            })
        });
        let cut = boxed.map_or([[false; 2]; 3], |b| {
            std::array::from_fn(|a| {
                let near = (FIELD_END_MM / g.spacing[a]).ceil() as usize;
                [b[a].0 <= near, b[a].1 + near >= g.dims[a]]
            })
        });
        Reference {
            pyramid: Pyramid::new(&ct),
            organs_mm,
            cut,
        }
    }
}

/// Voxel index ranges `[lo, hi)` per axis of the voxels with one of `labels`.
fn index_box(data: &[u8], dims: [usize; 3], labels: &[u8]) -> Option<[(usize, usize); 3]> {
    super::fusion::labels_bbox(data, dims, labels)
        .map(|[lo, hi]| std::array::from_fn(|a| (lo[a], hi[a] + 1)))
}

/// A low-dose CT's segmentation by [`segment_bounded`].
#[derive(Debug, Clone)]
pub struct Bounded {
    pub seg: Segmentation,
    /// The registration onto the diagnostic CT, where one was found.
    pub shift: Option<Shift>,
    /// Why the full pass ran; None when the bounded pass was taken.
    pub full_pass_because: Option<String>,
}

/// Segments `ct` (a low-dose CT) with every plane, the axial pass bounded by
/// where `reference`'s organs are on it: see the module's notes.
pub fn segment_bounded(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    opts: &DriverOptions,
    reference: &Reference,
    progress: &mut dyn FnMut(usize, usize),
    on_plane: &mut dyn FnMut(Plane, usize, std::time::Duration),
) -> Result<Bounded> {
    let opts = DriverOptions {
        planes: Planes::Auto,
        ..opts.clone()
    };
    let ro = Reorient::canonical(&ct.geom);
    let canon = if ro.is_identity() {
        std::borrow::Cow::Borrowed(ct)
    } else {
        std::borrow::Cow::Owned(ro.apply(ct))
    };
    let (shift, bound) = match reference.organs_mm {
        None => (None, Err("no organ on the diagnostic CT".to_string())),
        Some(organs) => {
            let t0 = std::time::Instant::now();
            let shift = register::register(&reference.pyramid, &Pyramid::new(&canon), &organs);
            tracing::debug!(
                "registration onto the diagnostic CT: {shift:?} in {:.2} s",
                t0.elapsed().as_secs_f64()
            );
            let bound = match shift {
                None => Err("the diagnostic CT's organs do not overlap this CT".to_string()),
                Some(s) if s.ncc < MIN_NCC => Err(format!(
                    "the registration onto the diagnostic CT is doubtful (correlation {:.2} < {MIN_NCC:.2})",
                    s.ncc
                )),
                Some(s) => bound_of(&canon.geom, &organs, reference.cut, &s)
                    .ok_or_else(|| "the diagnostic CT's organs, moved, lie outside this CT".to_string()),
            };
            (shift, bound)
        }
    };
    let full = |why: String,
                progress: &mut dyn FnMut(usize, usize),
                on_plane: &mut dyn FnMut(Plane, usize, std::time::Duration)|
     -> Result<Bounded> {
        tracing::warn!("full pass: {why}");
        let mut seg = driver::segment_detail(model, ct, &opts, progress, on_plane)?;
        seg.notes.push(format!(
            "segmented in full, not in the diagnostic CT's bounds: {why}"
        ));
        Ok(Bounded {
            seg,
            shift,
            full_pass_because: Some(why),
        })
    };
    let b = match bound {
        Ok(b) => b,
        Err(why) => return full(why, progress, on_plane),
    };
    let mut seg = driver::segment_modes_on(
        model,
        &canon,
        &opts,
        &[Planes::Auto],
        None,
        Some(&b),
        progress,
        on_plane,
    )?
    .pop()
    .ok_or_else(|| Error::internal("segmentation gave no result"))?;
    if let Some(why) = at_the_edge(&seg.labels, &b) {
        return full(why, progress, on_plane);
    }
    let s = shift.ok_or_else(|| Error::internal("a bound without a registration"))?;
    let note = format!(
        "axial pass in the diagnostic CT's bounds (moved by ({:.0}, {:.0}, {:.0}) mm, correlation {:.2}): slices {}-{} of {}",
        s.mm[0],
        s.mm[1],
        s.mm[2],
        s.ncc,
        b[2].0 + 1,
        b[2].1,
        canon.geom.dims[2]
    );
    tracing::debug!("{note}");
    if !ro.is_identity() {
        seg.labels = Volume {
            geom: ct.geom.clone(),
            data: ro.undo(&seg.labels.data),
        };
    }
    Ok(Bounded {
        seg,
        shift,
        full_pass_because: None,
    })
}

/// The canonical voxel ranges `[lo, hi)` of `organs` (patient mm on the
/// reference) moved by `s` and widened by [`BOUND_MARGIN_MM`], to the CT's
/// end on a side where the reference's field `cut` them; None where that
/// misses the CT.
fn bound_of(
    g: &crate::volume::Geometry,
    organs: &[(f64, f64); 3],
    cut: [[bool; 2]; 3],
    s: &Shift,
) -> Option<[(usize, usize); 3]> {
    let mut b = [(0usize, 0usize); 3];
    for a in 0..3 {
        let lo = (organs[a].0 + s.mm[a] - BOUND_MARGIN_MM - g.origin[a]) / g.spacing[a];
        let hi = (organs[a].1 + s.mm[a] + BOUND_MARGIN_MM - g.origin[a]) / g.spacing[a];
        let n = g.dims[a] as f64;
        let lo = if cut[a][0] {
            0.0
        } else {
            lo.floor().clamp(0.0, n)
        };
        let hi = if cut[a][1] {
            n
        } else {
            (hi.ceil() + 1.0).clamp(0.0, n)
        };
        if hi <= lo {
            return None;
        }
        b[a] = (lo as usize, hi as usize);
    }
    Some(b)
}

/// Why the bounded pass cannot be trusted: an organ within [`EDGE_GUARD_MM`]
/// of a face of the bound that lies inside the CT.
fn at_the_edge(labels: &Volume<u8>, b: &[(usize, usize); 3]) -> Option<String> {
    let g = &labels.geom;
    let got = index_box(&labels.data, g.dims, &ORGANS)?;
    const AXIS: [&str; 3] = ["x", "y", "z"];
    for a in 0..3 {
        let guard = (EDGE_GUARD_MM / g.spacing[a]).ceil() as usize;
        let low_face = b[a].0 > 0 && got[a].0 < b[a].0 + guard;
        let high_face = b[a].1 < g.dims[a] && got[a].1 + guard > b[a].1;
        if low_face || high_face {
            return Some(format!(
                "the organs reach the edge of the diagnostic CT's bounds along {} (voxels {}-{} against {}-{})",
                AXIS[a],
                got[a].0,
                got[a].1,
                b[a].0,
                b[a].1
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn the_bound_is_the_moved_organ_box_with_its_margin_inside_the_ct() {
        // 2 mm pixels, 4 mm slices, origin (-100, -100, -500).
        let g = Geometry::new([100, 100, 50], [2.0, 2.0, 4.0], [-100.0, -100.0, -500.0]);
        let organs = [(-40.0, 40.0), (-20.0, 20.0), (0.0, 100.0)];
        let s = Shift {
            mm: [10.0, 0.0, -420.0],
            ncc: 0.9,
            overlap: 1.0,
        };
        let b = bound_of(&g, &organs, [[false; 2]; 3], &s).unwrap();
        // x: -40+10-30 = -60 mm -> voxel 20; 40+10+30 = 80 mm -> 90, +1.
        assert_eq!(b[0], (20, 91));
        assert_eq!(b[1], (25, 76));
        // z: 0-420-30 = -450 -> 12.5 -> 12; 100-420+30 = -290 -> 52.5, clamped.
        assert_eq!(b[2], (12, 50));
        // Moved off the CT: no bound.
        let far = Shift {
            mm: [0.0, 0.0, 500.0],
            ..s
        };
        assert!(bound_of(&g, &organs, [[false; 2]; 3], &far).is_none());
        // The reference's field cut the organs at its low z end: the bound
        // runs to this CT's first slice.
        let cut = [[false; 2], [false; 2], [true, false]];
        let b = bound_of(&g, &organs, cut, &s).unwrap();
        assert_eq!(b[2], (0, 50));
        assert_eq!(b[0], (20, 91));
    }

    #[test]
    fn organs_near_the_reference_fields_end_are_cut_there() {
        let g = Geometry::new([20, 20, 40], [2.0, 2.0, 2.0], [0.0; 3]);
        let ct = Volume::filled(g.clone(), 0f32);
        let mut l = Volume::filled(g, 0u8);
        // 6 mm from the field's low z end (within FIELD_END_MM), 20 mm from
        // its high end and from every x and y end.
        for k in 3..30 {
            let n = l.geom.linear(10, 10, k);
            l.data[n] = organs::LIVER;
        }
        let r = Reference::new(&ct, &l);
        assert_eq!(r.cut, [[false; 2], [false; 2], [true, false]]);
        let none = Reference::new(&ct, &Volume::filled(l.geom.clone(), 0u8));
        assert!(none.organs_mm.is_none());
    }

    #[test]
    fn an_organ_at_an_inner_face_of_the_bound_is_at_the_edge() {
        let g = Geometry::new([40, 40, 40], [2.0, 2.0, 2.0], [0.0; 3]);
        let b = [(5, 35), (5, 35), (10, 30)];
        let mut l = Volume::filled(g, 0u8);
        let put = |l: &mut Volume<u8>, i: usize, j: usize, k: usize| {
            let n = l.geom.linear(i, j, k);
            l.data[n] = organs::LIVER;
        };
        for k in 16..24 {
            put(&mut l, 20, 20, k);
        }
        assert_eq!(at_the_edge(&l, &b), None);
        // 2 slices (4 mm) from the upper z face: inside the 8 mm guard.
        put(&mut l, 20, 20, 27);
        let why = at_the_edge(&l, &b).expect("at the edge");
        assert!(why.contains("along z"), "{why}");
        // A face at the CT's own end is no edge of the bound.
        let whole_z = [(5, 35), (5, 35), (0, 40)];
        put(&mut l, 20, 20, 39);
        assert_eq!(at_the_edge(&l, &whole_z), None);
    }
}
