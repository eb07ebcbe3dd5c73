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

use super::cycle::{self, MovedOrgan};
use super::driver::{self, DriverOptions, Planes, Segmentation};
use super::model::MaskRcnn;
use super::plane::Plane;
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
