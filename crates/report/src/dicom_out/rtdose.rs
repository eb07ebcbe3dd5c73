//! RT Dose (PS3.3 A.18) of the voxel dose map, in Gy, on the SPECT's grid and
//! frame of reference.

use super::common::{
    base_object, sop_ref, write_part10, NewSeries, RT_DOSE_STORAGE, RT_STRUCTURE_SET_STORAGE,
};
use super::source::SourceSeries;
use crate::dosimetry::dose::Dvh;
use crate::error::{Error, Result};
use crate::io::dicom_write::{ds, put_ds, put_is, put_seq, put_str, put_us};
use crate::volume::{cross, dot, Volume};
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use std::path::Path;

/// Largest stored value. 16-bit unsigned: every RT Dose reader takes it, and
/// dicom3tools (the validator in the tests) aborts on 32-bit OW pixel data. One
/// step is max/65000, 0.0015 % of the hottest voxel (under 1 mGy for 50 Gy),
/// far below the dose's own uncertainty.
const MAX_STORED: f64 = 65000.0;

/// What the RT Dose says about the dose it holds.
pub struct DoseDescription {
    pub comment: String,
    /// Free text for the General Image module's DerivationDescription.
    pub derivation: String,
}

/// DVHs for the RT DVH module: the structure set on the dose's frame of reference
/// whose ROIs they belong to, and per ROI number its cumulative DVH.
pub struct DvhRefs<'a> {
    pub structure_set_uid: String,
    pub rois: Vec<(i64, &'a Dvh)>,
}

/// Writes `dose_gy` (on the grid of `spect`'s volume, same frame of reference) to
/// `path`; returns (SOP instance UID, DoseGridScaling as written).
pub fn write(
    dose_gy: &Volume<f32>,
    spect: &SourceSeries,
    desc: &DoseDescription,
    dvhs: Option<&DvhRefs>,
    series: &NewSeries,
    path: &Path,
) -> Result<(String, f64)> {
    let g = &dose_gy.geom;
    g.validate()?;
    let [nx, ny, nz] = g.dims;
    if nx > u16::MAX as usize || ny > u16::MAX as usize {
        return Err(Error::geometry(format!(
            "{nx}x{ny} dose planes do not fit Rows/Columns"
        )));
    }
    let (mut o, sop) = base_object(spect, RT_DOSE_STORAGE, series);
    super::common::put_content_date(&mut o);
    // RT Series: OperatorsName is Type 2.
    crate::io::dicom_write::put_empty(&mut o, tags::OPERATORS_NAME, VR::PN);
    put_str(
        &mut o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &spect.frame_of_reference_uid,
    );
    o.put(DataElement::new(
        tags::POSITION_REFERENCE_INDICATOR,
        VR::LO,
        PrimitiveValue::Empty,
    ));
    // Frames run along the plane normal (row x column), so GridFrameOffsetVector
    // rises from 0: some readers take the offsets to be increasing.
    let normal = cross(g.direction[0], g.direction[1]);
    let forward = dot(g.direction[2], normal) > 0.0;
    let slice = |f: usize| if forward { f } else { nz - 1 - f };
    let ipp = g.index_to_patient([0.0, 0.0, slice(0) as f64]);
    let r = g.direction[0];
    let c = g.direction[1];
    put_ds(&mut o, tags::IMAGE_POSITION_PATIENT, &ipp);
    put_ds(
        &mut o,
        tags::IMAGE_ORIENTATION_PATIENT,
        &[r[0], r[1], r[2], c[0], c[1], c[2]],
    );
    put_ds(&mut o, tags::PIXEL_SPACING, &[g.spacing[1], g.spacing[0]]);
    put_ds(&mut o, tags::SLICE_THICKNESS, &[g.spacing[2]]);
    let offsets: Vec<f64> = (0..nz).map(|f| f as f64 * g.spacing[2]).collect();
    put_ds(&mut o, tags::GRID_FRAME_OFFSET_VECTOR, &offsets);
    put_is(&mut o, tags::NUMBER_OF_FRAMES, nz as i64);
    o.put(DataElement::new(
        tags::FRAME_INCREMENT_POINTER,
        VR::AT,
        PrimitiveValue::from(tags::GRID_FRAME_OFFSET_VECTOR),
    ));
    put_us(&mut o, tags::SAMPLES_PER_PIXEL, 1);
    put_str(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    put_us(&mut o, tags::ROWS, ny as u16);
    put_us(&mut o, tags::COLUMNS, nx as u16);
    put_us(&mut o, tags::BITS_ALLOCATED, 16);
    put_us(&mut o, tags::BITS_STORED, 16);
    put_us(&mut o, tags::HIGH_BIT, 15);
    put_us(&mut o, tags::PIXEL_REPRESENTATION, 0);
    put_str(&mut o, tags::DOSE_UNITS, VR::CS, "GY");
    put_str(&mut o, tags::DOSE_TYPE, VR::CS, "PHYSICAL");
    // There is no RT Plan in radionuclide therapy: the dose comes from measured
    // activity over a therapy cycle, not from a planned delivery. Every defined
    // term of PS3.3 C.8.8.3 makes a reference Type 1C: PLAN, MULTI_PLAN,
    // FRACTION, BEAM, BRACHY, the *_SESSION types and CONTROL_POINT require a
    // Referenced RT Plan Sequence, RECORD a Referenced Treatment Record Sequence,
    // and either would point at an object that does not exist (dciodvfy reports
    // both as errors). Dose Summation Type is Defined Terms, which the standard
    // lets an application extend, so the dose says what it is: MRT_CYCLE, the
    // absorbed dose of one molecular-radiotherapy cycle integrated over time
    // (dciodvfy: a warning for an unrecognised defined term, no error). The
    // measurement it comes from is referenced instead: the SPECT, in
    // ReferencedImageSequence, on the same frame of reference.
    put_str(
        &mut o,
        tags::DOSE_SUMMATION_TYPE,
        VR::CS,
        DOSE_SUMMATION_TYPE,
    );
    put_str(&mut o, tags::DOSE_COMMENT, VR::LO, &desc.comment);
    put_str(
        &mut o,
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        &desc.derivation,
    );
    if let Some(i) = spect.instances.first() {
        put_seq(
            &mut o,
            tags::REFERENCED_IMAGE_SEQUENCE,
            vec![sop_ref(&i.sop_class_uid, &i.sop_instance_uid)],
        );
    }

    // Scaling: a round number of 6 significant digits, so the value a reader
    // parses is the one the stored integers were made with.
    let max = dose_gy
        .data
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0f32, f32::max) as f64;
    let scaling_text = if max > 0.0 {
        format!("{:.5E}", max / MAX_STORED)
    } else {
        "1".to_string()
    };
    let scaling: f64 = scaling_text
        .parse()
        .map_err(|_| Error::geometry(format!("dose grid scaling {scaling_text}")))?;
    debug_assert!(scaling_text.len() <= 16 && ds(scaling).len() <= 16);
    put_str(&mut o, tags::DOSE_GRID_SCALING, VR::DS, &scaling_text);
    if let Some(d) = dvhs.filter(|d| !d.rois.is_empty()) {
        put_dvhs(&mut o, d);
    }
    let mut px = Vec::with_capacity(g.len());
    for f in 0..nz {
        let k = slice(f);
        let plane = &dose_gy.data[k * nx * ny..(k + 1) * nx * ny];
        px.extend(plane.iter().map(|&d| {
            // A kernel's ringing can leave tiny negative doses; RT Dose is unsigned.
            let v = if d.is_finite() {
                d.max(0.0) as f64
            } else {
                0.0
            };
            (v / scaling).round().min(u16::MAX as f64) as u16
        }));
    }
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(C::from_vec(px)),
    ));
    write_part10(o, path, true)?;
    Ok((sop, scaling))
}

/// RT DVH module (PS3.3 C.8.8.4): cumulative DVHs in Gy and cm3. DVHData pairs
/// are (bin width, volume receiving at least the bin's lower edge), bins from
/// 0 Gy: the organdose DVH's levels are 0, w, 2w, ... with the fraction at or
/// above each, times the organ's volume on the dose grid.
fn put_dvhs(o: &mut dicom_object::InMemDicomObject, d: &DvhRefs) {
    use dicom_object::InMemDicomObject;
    put_seq(
        o,
        tags::REFERENCED_STRUCTURE_SET_SEQUENCE,
        vec![sop_ref(RT_STRUCTURE_SET_STORAGE, &d.structure_set_uid)],
    );
    let items: Vec<InMemDicomObject> = d
        .rois
        .iter()
        .filter(|(_, h)| h.dose_gy.len() >= 2)
        .map(|&(roi, h)| {
            let mut it = InMemDicomObject::new_empty();
            let mut r = InMemDicomObject::new_empty();
            put_is(&mut r, tags::REFERENCED_ROI_NUMBER, roi);
            put_str(&mut r, tags::DVHROI_CONTRIBUTION_TYPE, VR::CS, "INCLUDED");
            put_seq(&mut it, tags::DVH_REFERENCED_ROI_SEQUENCE, vec![r]);
            put_str(&mut it, tags::DVH_TYPE, VR::CS, "CUMULATIVE");
            put_str(&mut it, tags::DOSE_UNITS, VR::CS, "GY");
            put_str(&mut it, tags::DOSE_TYPE, VR::CS, "PHYSICAL");
            put_ds(&mut it, tags::DVH_DOSE_SCALING, &[1.0]);
            put_str(&mut it, tags::DVH_VOLUME_UNITS, VR::CS, "CM3");
            put_is(&mut it, tags::DVH_NUMBER_OF_BINS, h.dose_gy.len() as i64);
            let width = h.dose_gy[1] - h.dose_gy[0];
            let data: Vec<f64> = h
                .volume_fraction
                .iter()
                .flat_map(|&f| [width, f * h.volume_ml])
                .collect();
            put_ds(&mut it, tags::DVH_DATA, &data);
            put_ds(&mut it, tags::DVH_MINIMUM_DOSE, &[h.min]);
            put_ds(&mut it, tags::DVH_MAXIMUM_DOSE, &[h.max]);
            put_ds(&mut it, tags::DVH_MEAN_DOSE, &[h.mean]);
            it
        })
        .collect();
    put_seq(o, tags::DVH_SEQUENCE, items);
}

/// See the comment where it is written.
pub const DOSE_SUMMATION_TYPE: &str = "MRT_CYCLE";
