//! DICOM Segmentation (PS3.3 A.51), binary: one segment per organ present, one
//! frame per segment and source slice that holds it (empty frames left out), each
//! frame with its own plane position and a reference to its source CT instance.

use super::common::{
    base_object, code_item_dcm, organ_codes, sct, sop_ref, type_code_with_modifier, write_part10,
    NewSeries, SEGMENTATION_STORAGE,
};
use super::source::SourceSeries;
use super::{MaskSlices, Provenance};
use crate::error::{Error, Result};
use crate::io::dicom_write::{put_ds, put_empty, put_is, put_seq, put_str, put_strs, put_us};
use crate::organs;
use crate::overlay::organ_colour;
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::path::Path;

/// Writes the segmentation to `path`; returns its SOP instance UID, or None when
/// no organ is in the masks (a SEG must hold at least one frame).
pub fn write(
    masks: &MaskSlices,
    prov: &Provenance,
    series: &NewSeries,
    path: &Path,
) -> Result<Option<String>> {
    let src: &SourceSeries = masks.src;
    let i0 = src
        .instances
        .first()
        .ok_or_else(|| Error::series(&src.series_uid, "no instances"))?;
    let (rows, cols) = (i0.rows, i0.columns);
    if src
        .instances
        .iter()
        .any(|i| (i.rows, i.columns) != (rows, cols))
    {
        return Err(Error::series(
            &src.series_uid,
            "slices of different sizes: one SEG frame size needed",
        ));
    }
    // (segment number, organ label, frames as (instance index)).
    let mut segments: Vec<(u16, u8, Vec<usize>)> = Vec::new();
    for &(lab, _) in organs::ORGANS {
        let frames: Vec<usize> = masks
            .per_instance
            .iter()
            .enumerate()
            .filter(|(_, p)| p.contains(&lab))
            .map(|(k, _)| k)
            .collect();
        if !frames.is_empty() {
            segments.push((segments.len() as u16 + 1, lab, frames));
        }
    }
    let n_frames: usize = segments.iter().map(|s| s.2.len()).sum();
    if n_frames == 0 {
        return Ok(None);
    }

    let (mut o, sop) = base_object(src, SEGMENTATION_STORAGE, series);
    super::common::put_content_date(&mut o);
    put_strs(&mut o, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "PRIMARY"]);
    put_str(&mut o, tags::CONTENT_LABEL, VR::CS, "ORGANS");
    put_str(
        &mut o,
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        "organdose organ masks",
    );
    put_empty(&mut o, tags::CONTENT_CREATOR_NAME, VR::PN);
    put_str(
        &mut o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &src.frame_of_reference_uid,
    );
    put_empty(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO);
    put_us(&mut o, tags::SAMPLES_PER_PIXEL, 1);
    put_str(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    put_us(&mut o, tags::ROWS, rows as u16);
    put_us(&mut o, tags::COLUMNS, cols as u16);
    put_us(&mut o, tags::BITS_ALLOCATED, 1);
    put_us(&mut o, tags::BITS_STORED, 1);
    put_us(&mut o, tags::HIGH_BIT, 0);
    put_us(&mut o, tags::PIXEL_REPRESENTATION, 0);
    put_str(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_str(&mut o, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put_is(&mut o, tags::NUMBER_OF_FRAMES, n_frames as i64);

    let seg_items: Vec<InMemDicomObject> = segments
        .iter()
        .map(|(num, lab, _)| segment_item(*num, *lab, prov))
        .collect();
    put_seq(&mut o, tags::SEGMENT_SEQUENCE, seg_items);

    // Dimensions: segment, then position along the slice normal.
    let dim_uid = super::common::new_uid("dimension organization");
    let mut org = InMemDicomObject::new_empty();
    put_str(&mut org, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
    put_seq(&mut o, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org]);
    let dim = |index, group, label: &str| {
        let mut d = InMemDicomObject::new_empty();
        put_str(&mut d, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
        d.put(DataElement::new(
            tags::DIMENSION_INDEX_POINTER,
            VR::AT,
            PrimitiveValue::Tags(vec![index].into()),
        ));
        d.put(DataElement::new(
            tags::FUNCTIONAL_GROUP_POINTER,
            VR::AT,
            PrimitiveValue::Tags(vec![group].into()),
        ));
        put_str(&mut d, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        d
    };
    put_seq(
        &mut o,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "Segment Number",
            ),
            dim(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "Image Position Patient",
            ),
        ],
    );
    put_str(&mut o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");

    // Shared: pixel spacing and orientation (one series, one orientation).
    let mut measures = InMemDicomObject::new_empty();
    put_ds(&mut measures, tags::PIXEL_SPACING, &i0.pixel_spacing);
    let spacing = slice_spacing(src);
    put_ds(
        &mut measures,
        tags::SLICE_THICKNESS,
        &[i0.slice_thickness.unwrap_or(spacing)],
    );
    put_ds(&mut measures, tags::SPACING_BETWEEN_SLICES, &[spacing]);
    let mut orient = InMemDicomObject::new_empty();
    let (r, c) = (i0.row_dir, i0.col_dir);
    put_ds(
        &mut orient,
        tags::IMAGE_ORIENTATION_PATIENT,
        &[r[0], r[1], r[2], c[0], c[1], c[2]],
    );
    let mut shared = InMemDicomObject::new_empty();
    put_seq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    put_seq(&mut shared, tags::PLANE_ORIENTATION_SEQUENCE, vec![orient]);
    put_seq(
        &mut o,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared],
    );

    // Per frame: plane position, segment, source image; and the packed bits.
    let plane = rows * cols;
    let mut bits = vec![0u8; (n_frames * plane).div_ceil(8)];
    let mut per_frame = Vec::with_capacity(n_frames);
    let mut n = 0usize;
    for (num, lab, frames) in &segments {
        for &k in frames {
            let inst = &src.instances[k];
            let mut content = InMemDicomObject::new_empty();
            content.put(DataElement::new(
                tags::DIMENSION_INDEX_VALUES,
                VR::UL,
                PrimitiveValue::U32(vec![u32::from(*num), k as u32 + 1].into()),
            ));
            let mut pos = InMemDicomObject::new_empty();
            put_ds(&mut pos, tags::IMAGE_POSITION_PATIENT, &inst.position);
            let mut ident = InMemDicomObject::new_empty();
            put_us(&mut ident, tags::REFERENCED_SEGMENT_NUMBER, *num);
            let mut source = sop_ref(&inst.sop_class_uid, &inst.sop_instance_uid);
            put_seq(
                &mut source,
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code_item_dcm(
                    "121322",
                    "Source image for image processing operation",
                )],
            );
            let mut derivation = InMemDicomObject::new_empty();
            put_seq(
                &mut derivation,
                tags::DERIVATION_CODE_SEQUENCE,
                vec![code_item_dcm("113076", "Segmentation")],
            );
            put_seq(&mut derivation, tags::SOURCE_IMAGE_SEQUENCE, vec![source]);
            let mut fg = InMemDicomObject::new_empty();
            put_seq(&mut fg, tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]);
            put_seq(&mut fg, tags::FRAME_CONTENT_SEQUENCE, vec![content]);
            put_seq(&mut fg, tags::PLANE_POSITION_SEQUENCE, vec![pos]);
            put_seq(&mut fg, tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![ident]);
            per_frame.push(fg);
            // Bits in transmitted order, least significant bit first (PS3.5 8.1.1).
            for (p, &v) in masks.per_instance[k].iter().enumerate() {
                if v == *lab {
                    let b = n * plane + p;
                    bits[b / 8] |= 1 << (b % 8);
                }
            }
            n += 1;
        }
    }
    put_seq(
        &mut o,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        per_frame,
    );

    // Common Instance Reference: every source image a frame points at.
    let used: std::collections::BTreeSet<usize> =
        segments.iter().flat_map(|s| s.2.iter().copied()).collect();
    let mut ref_series = InMemDicomObject::new_empty();
    put_str(
        &mut ref_series,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &src.series_uid,
    );
    put_seq(
        &mut ref_series,
        tags::REFERENCED_INSTANCE_SEQUENCE,
        used.iter()
            .map(|&k| {
                let i = &src.instances[k];
                sop_ref(&i.sop_class_uid, &i.sop_instance_uid)
            })
            .collect(),
    );
    put_seq(&mut o, tags::REFERENCED_SERIES_SEQUENCE, vec![ref_series]);

    if bits.len() % 2 == 1 {
        bits.push(0);
    }
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(C::from_vec(bits)),
    ));
    write_part10(o, path, false)?;
    Ok(Some(sop))
}

/// Distance between neighbouring slice planes along the normal (the median gap).
fn slice_spacing(src: &SourceSeries) -> f64 {
    let Some(i0) = src.instances.first() else {
        return 1.0;
    };
    let n = i0.normal();
    let pos: Vec<f64> = src
        .instances
        .iter()
        .map(|i| crate::volume::dot(i.position, n))
        .collect();
    let mut gaps: Vec<f64> = pos.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    gaps.sort_by(f64::total_cmp);
    match gaps.get(gaps.len() / 2) {
        Some(&g) if g > 0.0 => g,
        _ => i0.slice_thickness.unwrap_or(1.0),
    }
}

fn segment_item(num: u16, lab: u8, prov: &Provenance) -> InMemDicomObject {
    let codes = organ_codes(lab);
    let mut s = InMemDicomObject::new_empty();
    put_us(&mut s, tags::SEGMENT_NUMBER, num);
    put_str(&mut s, tags::SEGMENT_LABEL, VR::LO, codes.display);
    put_str(
        &mut s,
        tags::SEGMENT_ALGORITHM_TYPE,
        VR::CS,
        prov.seg_algorithm(),
    );
    if let Some((name, version)) = &prov.algorithm {
        put_str(&mut s, tags::SEGMENT_ALGORITHM_NAME, VR::LO, name);
        let mut alg = InMemDicomObject::new_empty();
        put_seq(
            &mut alg,
            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
            vec![code_item_dcm("123109", "Artificial Intelligence")],
        );
        put_str(&mut alg, tags::ALGORITHM_NAME, VR::LO, name);
        put_str(&mut alg, tags::ALGORITHM_VERSION, VR::LO, version);
        put_seq(
            &mut s,
            tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
            vec![alg],
        );
    }
    put_seq(
        &mut s,
        tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
        vec![sct(codes.category)],
    );
    put_seq(
        &mut s,
        tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
        vec![type_code_with_modifier(&codes)],
    );
    s.put(DataElement::new(
        tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
        VR::US,
        PrimitiveValue::U16(cielab(organ_colour(lab)).to_vec().into()),
    ));
    s
}

/// sRGB to DICOM's scaled CIELab (PS3.3 C.10.7.1.1: L 0-100 and a, b -128-127
/// mapped onto 0-65535), D65 white.
fn cielab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| {
        if t > 0.008856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let l = 116.0 * fy - 16.0;
    let a = 500.0 * (fx - fy);
    let bb = 200.0 * (fy - fz);
    [
        (l / 100.0 * 65535.0).round().clamp(0.0, 65535.0) as u16,
        ((a + 128.0) / 255.0 * 65535.0).round().clamp(0.0, 65535.0) as u16,
        ((bb + 128.0) / 255.0 * 65535.0).round().clamp(0.0, 65535.0) as u16,
    ]
}
