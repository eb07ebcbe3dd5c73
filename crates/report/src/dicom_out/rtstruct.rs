//! RT Structure Set (PS3.3 A.19) of the organ masks on one CT series: one ROI per
//! organ present, contours per slice in patient mm from each slice's own
//! position and orientation, referencing every CT instance of the series.

use super::common::{
    base_object, organ_codes, sop_ref, type_code_with_modifier, write_part10, NewSeries,
    RT_STRUCTURE_SET_STORAGE,
};
use super::contours::trace;
use super::source::SourceSeries;
use super::{MaskSlices, Provenance};
use crate::error::Result;
use crate::io::dicom_write::{ds, put_empty, put_is, put_seq, put_str};
use crate::organs;
use crate::overlay::organ_colour;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::path::Path;

/// Study Component Management SOP Class (retired, PS3.3 C.8.8.5): the class RT
/// systems expect in RTReferencedStudySequence.
#[allow(deprecated)] // retired, and still what RT systems expect there
const STUDY_COMPONENT_SOP_CLASS: &str = dicom_dictionary_std::uids::STUDY_COMPONENT_MANAGEMENT;

/// Writes the structure set to `path`; returns its SOP instance UID.
pub fn write(
    masks: &MaskSlices,
    prov: &Provenance,
    series: &NewSeries,
    label: &str,
    path: &Path,
) -> Result<String> {
    let src: &SourceSeries = masks.src;
    let (mut o, sop) = base_object(src, RT_STRUCTURE_SET_STORAGE, series);
    // RT Series: OperatorsName is Type 2.
    put_empty(&mut o, tags::OPERATORS_NAME, VR::PN);
    // Frame of Reference module (part of the RT Structure Set IOD since 2021).
    put_str(
        &mut o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &src.frame_of_reference_uid,
    );
    put_empty(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO);
    put_str(&mut o, tags::STRUCTURE_SET_LABEL, VR::SH, label);
    put_str(&mut o, tags::STRUCTURE_SET_NAME, VR::LO, label);
    let (date, time) = super::common::now_da_tm();
    put_str(&mut o, tags::STRUCTURE_SET_DATE, VR::DA, &date);
    put_str(&mut o, tags::STRUCTURE_SET_TIME, VR::TM, &time);

    // Referenced frame of reference -> study -> series -> every image.
    let images: Vec<InMemDicomObject> = src
        .instances
        .iter()
        .map(|i| sop_ref(&i.sop_class_uid, &i.sop_instance_uid))
        .collect();
    let mut ser = InMemDicomObject::new_empty();
    put_str(&mut ser, tags::SERIES_INSTANCE_UID, VR::UI, &src.series_uid);
    put_seq(&mut ser, tags::CONTOUR_IMAGE_SEQUENCE, images);
    let mut study = sop_ref(STUDY_COMPONENT_SOP_CLASS, &src.study_uid);
    put_seq(&mut study, tags::RT_REFERENCED_SERIES_SEQUENCE, vec![ser]);
    let mut frame = InMemDicomObject::new_empty();
    put_str(
        &mut frame,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &src.frame_of_reference_uid,
    );
    put_seq(&mut frame, tags::RT_REFERENCED_STUDY_SEQUENCE, vec![study]);
    put_seq(
        &mut o,
        tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
        vec![frame],
    );

    let mut rois = Vec::new();
    let mut roi_contours = Vec::new();
    let mut observations = Vec::new();
    for &(lab, _) in organs::ORGANS {
        let contours = organ_contours(masks, lab);
        if contours.is_empty() {
            continue;
        }
        let number = lab as i64;
        let codes = organ_codes(lab);
        let mut roi = InMemDicomObject::new_empty();
        put_is(&mut roi, tags::ROI_NUMBER, number);
        put_str(
            &mut roi,
            tags::REFERENCED_FRAME_OF_REFERENCE_UID,
            VR::UI,
            &src.frame_of_reference_uid,
        );
        put_str(&mut roi, tags::ROI_NAME, VR::LO, codes.display);
        put_str(
            &mut roi,
            tags::ROI_GENERATION_ALGORITHM,
            VR::CS,
            prov.rt_algorithm(),
        );
        put_str(
            &mut roi,
            tags::ROI_GENERATION_DESCRIPTION,
            VR::LO,
            &prov.description,
        );
        rois.push(roi);

        let mut rc = InMemDicomObject::new_empty();
        let [r, g, b] = organ_colour(lab);
        rc.put(DataElement::new(
            tags::ROI_DISPLAY_COLOR,
            VR::IS,
            PrimitiveValue::Strs(vec![r.to_string(), g.to_string(), b.to_string()].into()),
        ));
        put_seq(&mut rc, tags::CONTOUR_SEQUENCE, contours);
        put_is(&mut rc, tags::REFERENCED_ROI_NUMBER, number);
        roi_contours.push(rc);

        let mut obs = InMemDicomObject::new_empty();
        put_is(&mut obs, tags::OBSERVATION_NUMBER, number);
        put_is(&mut obs, tags::REFERENCED_ROI_NUMBER, number);
        // ROI Observation Label (3006,0085) is retired in the current standard, but
        // older RT systems show it as the structure's label: kept for them.
        put_str(&mut obs, Tag(0x3006, 0x0085), VR::SH, codes.display);
        put_seq(
            &mut obs,
            tags::RTROI_IDENTIFICATION_CODE_SEQUENCE,
            vec![type_code_with_modifier(&codes)],
        );
        put_str(
            &mut obs,
            tags::RTROI_INTERPRETED_TYPE,
            VR::CS,
            codes.rt_type,
        );
        obs.put(DataElement::new(
            tags::ROI_INTERPRETER,
            VR::PN,
            PrimitiveValue::Empty,
        ));
        observations.push(obs);
    }
    put_seq(&mut o, tags::STRUCTURE_SET_ROI_SEQUENCE, rois);
    put_seq(&mut o, tags::ROI_CONTOUR_SEQUENCE, roi_contours);
    put_seq(&mut o, tags::RTROI_OBSERVATIONS_SEQUENCE, observations);
    put_str(&mut o, tags::APPROVAL_STATUS, VR::CS, "UNAPPROVED");
    write_part10(o, path, true)?;
    Ok(sop)
}

/// Contour items of one organ over every slice that holds it.
fn organ_contours(masks: &MaskSlices, lab: u8) -> Vec<InMemDicomObject> {
    let mut items = Vec::new();
    for (inst, plane) in masks.src.instances.iter().zip(&masks.per_instance) {
        // Most slices do not hold the organ: a byte search (memchr) says so
        // without building the slice's mask.
        if !plane.contains(&lab) {
            continue;
        }
        let (w, h) = (inst.columns, inst.rows);
        let m: Vec<bool> = plane.iter().map(|&v| v == lab).collect();
        for c in trace(&m, w, h) {
            let mut item = InMemDicomObject::new_empty();
            put_seq(
                &mut item,
                tags::CONTOUR_IMAGE_SEQUENCE,
                vec![sop_ref(&inst.sop_class_uid, &inst.sop_instance_uid)],
            );
            put_str(
                &mut item,
                tags::CONTOUR_GEOMETRIC_TYPE,
                VR::CS,
                "CLOSED_PLANAR",
            );
            put_is(&mut item, tags::NUMBER_OF_CONTOUR_POINTS, c.len() as i64);
            put_is(&mut item, tags::CONTOUR_NUMBER, items.len() as i64 + 1);
            let data: Vec<String> = c
                .iter()
                .flat_map(|&[u, v]| inst.pixel_to_patient(u, v))
                .map(ds)
                .collect();
            item.put(DataElement::new(
                tags::CONTOUR_DATA,
                VR::DS,
                PrimitiveValue::Strs(data.into()),
            ));
            items.push(item);
        }
    }
    items
}
