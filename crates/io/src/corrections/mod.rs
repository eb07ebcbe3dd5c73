//! Corrected contours coming back: an RT Structure Set (PS3.3 A.19) or a DICOM
//! Segmentation (PS3.3 A.51, binary or fractional) that a physicist edited in a
//! viewer (Slicer, MIM, Eclipse, OHIF) and sent back.
//!
//! [`read`] gives what the object refers to (series, frame of reference, SOP
//! instances), who made it and when, and per ROI its name and geometry in patient
//! coordinates: planar contours (RTSTRUCT) or frames each placed by its own plane
//! position, orientation and pixel spacing (SEG). [`names`] maps ROI names onto
//! organdose's organs, [`raster`] puts the geometry on a CT's grid.
//!
//! Parsing is dicom-rs'; the file's element lengths are walked first
//! ([`crate::dicom_bounds`]) so nothing is sized from a length the file
//! does not hold, and the SEG's Rows x Columns x frames is checked against the
//! pixel data really present before any frame is unpacked.

pub mod names;
pub mod raster;

use crate::dicom_bounds::check_element_lengths;
use crate::error::{Error, Result};
use crate::volume::Vec3;
use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{InMemDicomObject, OpenFileOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Most pixels (all frames together) a SEG may unpack: the same bound as the
/// largest CT volume organdose reads ([`crate::dicom::MAX_VOXELS`]).
pub(crate) const MAX_SEG_PIXELS: u64 = crate::dicom::MAX_VOXELS;

/// Which object a correction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RtStruct,
    Seg,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::RtStruct => "RT Structure Set",
            Kind::Seg => "SEG",
        }
    }
}

/// What a correction says it was drawn on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct References {
    pub series_uids: Vec<String>,
    pub frame_of_reference_uids: Vec<String>,
    pub sop_instance_uids: BTreeSet<String>,
}

impl References {
    /// Whether these references name the CT series `series_uid` (frame of
    /// reference `frame`, instances `instances`): by the Series Instance UID,
    /// else by the frame of reference together with at least one of its SOP
    /// instances (a frame of reference alone is shared by every series of a
    /// SPECT/CT session, so it does not tell which CT).
    pub fn name(&self, series_uid: &str, frame: &str, instances: &[String]) -> bool {
        if self.series_uids.iter().any(|s| s == series_uid) {
            return true;
        }
        !frame.is_empty()
            && self.frame_of_reference_uids.iter().any(|f| f == frame)
            && instances
                .iter()
                .any(|i| self.sop_instance_uids.contains(i.as_str()))
    }

    /// One line for messages: "series X (frame of reference Y)".
    pub fn describe(&self) -> String {
        let series = if self.series_uids.is_empty() {
            "no series".to_string()
        } else {
            format!("series {}", self.series_uids.join(", "))
        };
        let frame = if self.frame_of_reference_uids.is_empty() {
            "no frame of reference".to_string()
        } else {
            format!(
                "frame of reference {}",
                self.frame_of_reference_uids.join(", ")
            )
        };
        format!(
            "{series} ({frame}, {} image instance(s))",
            self.sop_instance_uids.len()
        )
    }
}

/// One SEG frame, placed by its own functional groups.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Centre of the first pixel, LPS mm.
    pub position: Vec3,
    /// Direction of increasing column index.
    pub row_dir: Vec3,
    /// Direction of increasing row index.
    pub col_dir: Vec3,
    /// (between rows, between columns), mm, as PixelSpacing stores it.
    pub pixel_spacing: [f64; 2],
    pub rows: usize,
    pub columns: usize,
    /// Row-major, true inside (a fractional value at least half the maximum).
    pub inside: Vec<bool>,
}

/// The geometry of one ROI or segment.
#[derive(Debug, Clone)]
pub enum Geometry {
    /// Closed planar contours, points in LPS mm.
    Contours(Vec<Vec<Vec3>>),
    Frames(Vec<Frame>),
}

#[derive(Debug, Clone)]
pub struct Roi {
    pub name: String,
    pub geometry: Geometry,
}

/// A corrected RT Structure Set or SEG as read.
#[derive(Debug, Clone)]
pub struct Correction {
    pub path: PathBuf,
    pub kind: Kind,
    pub sop_instance_uid: String,
    pub manufacturer: String,
    pub refs: References,
    /// Who made it: the person (ContentCreatorName / OperatorsName), else the
    /// structure set's or content label, with the Manufacturer.
    pub by: String,
    /// When (ISO 8601, no zone): StructureSetDate/Time, ContentDate/Time, else
    /// InstanceCreationDate/Time; "" when the object says nothing.
    pub at: String,
    pub rois: Vec<Roi>,
}

impl Correction {
    /// File name for messages (the full path is in the logs).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|v| v.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

fn floats(obj: &InMemDicomObject, tag: Tag, n: usize) -> Option<Vec<f64>> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| v.len() == n && v.iter().all(|x| x.is_finite()))
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

/// A person name as a reader writes it: "Doe^Jane" -> "Doe Jane".
fn person(pn: &str) -> String {
    pn.split(['^', '='])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// DA + TM -> "YYYY-MM-DDTHH:MM:SS" ("" without a valid date).
fn iso(date: &str, time: &str) -> String {
    let d: String = date.chars().filter(|c| c.is_ascii_digit()).collect();
    if d.len() != 8 {
        return String::new();
    }
    let t: String = time
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    let t = format!("{t:0<6}");
    format!(
        "{}-{}-{}T{}:{}:{}",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &t[0..2],
        &t[2..4],
        &t[4..6]
    )
}

/// Reads a corrected RT Structure Set or SEG. A file that is neither, or is
/// malformed, is an input error naming the file.
pub fn read(path: &Path) -> Result<Correction> {
    // Every declared length checked against the file before dicom-rs sizes a buffer.
    let bounds = check_element_lengths(path)?;
    let file = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| Error::dicom_from(path, "", e))?;
    let obj: &InMemDicomObject = &file;
    let class = text(obj, tags::SOP_CLASS_UID);
    let modality = text(obj, tags::MODALITY);
    let kind = if class == uids::RT_STRUCTURE_SET_STORAGE || modality == "RTSTRUCT" {
        Kind::RtStruct
    } else if class == uids::SEGMENTATION_STORAGE || modality == "SEG" {
        Kind::Seg
    } else {
        return Err(Error::dicom(
            path,
            format!(
                "neither an RT Structure Set nor a SEG (SOP class {class}, modality {modality})"
            ),
        ));
    };
    let manufacturer = text(obj, tags::MANUFACTURER);
    let (label, creator, date, time) = match kind {
        Kind::RtStruct => (
            text(obj, tags::STRUCTURE_SET_LABEL),
            text(obj, tags::OPERATORS_NAME),
            text(obj, tags::STRUCTURE_SET_DATE),
            text(obj, tags::STRUCTURE_SET_TIME),
        ),
        Kind::Seg => (
            text(obj, tags::CONTENT_LABEL),
            {
                let c = text(obj, tags::CONTENT_CREATOR_NAME);
                if c.is_empty() {
                    text(obj, tags::OPERATORS_NAME)
                } else {
                    c
                }
            },
            text(obj, tags::CONTENT_DATE),
            text(obj, tags::CONTENT_TIME),
        ),
    };
    let mut at = iso(&date, &time);
    if at.is_empty() {
        at = iso(
            &text(obj, tags::INSTANCE_CREATION_DATE),
            &text(obj, tags::INSTANCE_CREATION_TIME),
        );
    }
    let mut by = person(&creator);
    if by.is_empty() {
        by = label.clone();
    }
    if !manufacturer.is_empty() {
        by = if by.is_empty() {
            manufacturer.clone()
        } else {
            format!("{by} ({manufacturer})")
        };
    }
    if by.is_empty() {
        by = "unknown".into();
    }
    let mut c = Correction {
        path: path.to_path_buf(),
        kind,
        sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID),
        manufacturer,
        refs: References::default(),
        by,
        at,
        rois: Vec::new(),
    };
    match kind {
        Kind::RtStruct => read_rtstruct(obj, &mut c)?,
        Kind::Seg => read_seg(obj, &bounds, &mut c)?,
    }
    Ok(c)
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !s.is_empty() && !v.contains(&s) {
        v.push(s);
    }
}

fn read_rtstruct(obj: &InMemDicomObject, c: &mut Correction) -> Result<()> {
    let path = c.path.clone();
    let bad = |m: String| Error::dicom(&path, m);
    // References: frame of reference -> study -> series -> images.
    for f in items(obj, tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE) {
        push_unique(
            &mut c.refs.frame_of_reference_uids,
            text(f, tags::FRAME_OF_REFERENCE_UID),
        );
        for st in items(f, tags::RT_REFERENCED_STUDY_SEQUENCE) {
            for se in items(st, tags::RT_REFERENCED_SERIES_SEQUENCE) {
                push_unique(&mut c.refs.series_uids, text(se, tags::SERIES_INSTANCE_UID));
                for im in items(se, tags::CONTOUR_IMAGE_SEQUENCE) {
                    let uid = text(im, tags::REFERENCED_SOP_INSTANCE_UID);
                    if !uid.is_empty() {
                        c.refs.sop_instance_uids.insert(uid);
                    }
                }
            }
        }
    }
    push_unique(
        &mut c.refs.frame_of_reference_uids,
        text(obj, tags::FRAME_OF_REFERENCE_UID),
    );
    let rois = items(obj, tags::STRUCTURE_SET_ROI_SEQUENCE);
    if rois.is_empty() {
        return Err(bad(
            "RT Structure Set without a StructureSetROISequence".into()
        ));
    }
    let mut names: Vec<(i64, String)> = Vec::new();
    for r in rois {
        let n = int(r, tags::ROI_NUMBER)
            .ok_or_else(|| bad("a StructureSetROISequence item without ROINumber".into()))?;
        push_unique(
            &mut c.refs.frame_of_reference_uids,
            text(r, tags::REFERENCED_FRAME_OF_REFERENCE_UID),
        );
        names.push((n, text(r, tags::ROI_NAME)));
    }
    for rc in items(obj, tags::ROI_CONTOUR_SEQUENCE) {
        let n = int(rc, tags::REFERENCED_ROI_NUMBER)
            .ok_or_else(|| bad("a ROIContourSequence item without ReferencedROINumber".into()))?;
        let name = names
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| {
                bad(format!(
                    "ROIContourSequence refers to ROI {n}, which StructureSetROISequence does not list"
                ))
            })?;
        let mut contours = Vec::new();
        for ct in items(rc, tags::CONTOUR_SEQUENCE) {
            for im in items(ct, tags::CONTOUR_IMAGE_SEQUENCE) {
                let uid = text(im, tags::REFERENCED_SOP_INSTANCE_UID);
                if !uid.is_empty() {
                    c.refs.sop_instance_uids.insert(uid);
                }
            }
            let kind = text(ct, tags::CONTOUR_GEOMETRIC_TYPE);
            // Points and open polylines enclose nothing.
            if !(kind.is_empty() || kind == "CLOSED_PLANAR") {
                continue;
            }
            let data = ct
                .get(tags::CONTOUR_DATA)
                .map(|e| e.to_multi_float64())
                .transpose()
                .map_err(|e| bad(format!("ROI '{name}': ContourData is not numbers: {e}")))?
                .unwrap_or_default();
            if data.len() % 3 != 0 || data.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!(
                    "ROI '{name}': ContourData holds {} values, not finite (x, y, z) triplets",
                    data.len()
                )));
            }
            if let Some(np) = int(ct, tags::NUMBER_OF_CONTOUR_POINTS) {
                if np as usize * 3 != data.len() {
                    return Err(bad(format!(
                        "ROI '{name}': NumberOfContourPoints {np} but ContourData holds {} points",
                        data.len() / 3
                    )));
                }
            }
            if data.len() >= 9 {
                contours.push(data.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect());
            }
        }
        c.rois.push(Roi {
            name,
            geometry: Geometry::Contours(contours),
        });
    }
    Ok(())
}

/// A functional group item of a frame: its own, else the shared one.
fn group<'a>(
    own: Option<&'a InMemDicomObject>,
    shared: Option<&'a InMemDicomObject>,
    seq: Tag,
) -> Option<&'a InMemDicomObject> {
    own.and_then(|o| items(o, seq).first())
        .or_else(|| shared.and_then(|s| items(s, seq).first()))
}

fn read_seg(
    obj: &InMemDicomObject,
    bounds: &crate::dicom_bounds::ElementBounds,
    c: &mut Correction,
) -> Result<()> {
    let path = c.path.clone();
    let bad = |m: String| Error::dicom(&path, m);
    push_unique(
        &mut c.refs.frame_of_reference_uids,
        text(obj, tags::FRAME_OF_REFERENCE_UID),
    );
    for s in items(obj, tags::REFERENCED_SERIES_SEQUENCE) {
        push_unique(&mut c.refs.series_uids, text(s, tags::SERIES_INSTANCE_UID));
        for i in items(s, tags::REFERENCED_INSTANCE_SEQUENCE) {
            let uid = text(i, tags::REFERENCED_SOP_INSTANCE_UID);
            if !uid.is_empty() {
                c.refs.sop_instance_uids.insert(uid);
            }
        }
    }
    let seg_type = text(obj, tags::SEGMENTATION_TYPE);
    let rows = int(obj, tags::ROWS).filter(|&v| v > 0);
    let cols = int(obj, tags::COLUMNS).filter(|&v| v > 0);
    let frames = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    let bits = int(obj, tags::BITS_ALLOCATED).unwrap_or(0);
    let (Some(rows), Some(cols)) = (rows, cols) else {
        return Err(bad("SEG without Rows/Columns".into()));
    };
    if frames < 1 {
        return Err(bad(format!("SEG with NumberOfFrames {frames}")));
    }
    let (rows, cols, frames) = (rows as u64, cols as u64, frames as u64);
    let pixels = rows
        .checked_mul(cols)
        .and_then(|p| p.checked_mul(frames))
        .filter(|&p| p <= MAX_SEG_PIXELS)
        .ok_or_else(|| {
            bad(format!(
                "SEG header declares {cols} x {rows} x {frames} frames, more than the {MAX_SEG_PIXELS} pixels organdose reads"
            ))
        })?;
    let (binary, max_value) = match seg_type.as_str() {
        "BINARY" if bits == 1 => (true, 1.0),
        "FRACTIONAL" if bits == 8 => (
            false,
            int(obj, tags::MAXIMUM_FRACTIONAL_VALUE)
                .filter(|&m| m > 0 && m <= 255)
                .ok_or_else(|| bad("fractional SEG without a MaximumFractionalValue in 1..255".into()))?
                as f64,
        ),
        t => {
            return Err(bad(format!(
                "SegmentationType '{t}' with BitsAllocated {bits}: organdose reads BINARY (1 bit) and FRACTIONAL (8 bits)"
            )))
        }
    };
    let need = if binary { pixels.div_ceil(8) } else { pixels };
    let pd = bounds
        .pixel_data
        .ok_or_else(|| bad("SEG without pixel data (7FE0,0010)".into()))?;
    if pd.encapsulated {
        return Err(bad(
            "SEG pixel data is compressed: send it uncompressed (Explicit VR Little Endian)".into(),
        ));
    }
    if pd.bytes < need {
        return Err(bad(format!(
            "SEG pixel data holds {} bytes; {cols} x {rows} x {frames} frames need {need}",
            pd.bytes
        )));
    }
    // Checked above: the value is there and of the declared size.
    let data = obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| bad("SEG without pixel data (7FE0,0010)".into()))?
        .to_bytes()
        .map_err(|e| bad(format!("SEG pixel data: {e}")))?;
    if (data.len() as u64) < need {
        return Err(bad(format!(
            "SEG pixel data holds {} bytes; {need} needed",
            data.len()
        )));
    }
    let segments: Vec<(i64, String)> = items(obj, tags::SEGMENT_SEQUENCE)
        .iter()
        .filter_map(|s| Some((int(s, tags::SEGMENT_NUMBER)?, text(s, tags::SEGMENT_LABEL))))
        .collect();
    if segments.is_empty() {
        return Err(bad("SEG without a SegmentSequence".into()));
    }
    let shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    if per_frame.len() as u64 != frames {
        return Err(bad(format!(
            "{} PerFrameFunctionalGroupsSequence items for {frames} frames",
            per_frame.len()
        )));
    }
    let plane = (rows * cols) as usize;
    let mut by_segment: Vec<Vec<Frame>> = vec![Vec::new(); segments.len()];
    for (f, fg) in per_frame.iter().enumerate() {
        let at = |what: &str| bad(format!("SEG frame {}: no {what}", f + 1));
        let seg_no = group(Some(fg), shared, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .and_then(|g| int(g, tags::REFERENCED_SEGMENT_NUMBER))
            .ok_or_else(|| at("ReferencedSegmentNumber"))?;
        let slot = segments
            .iter()
            .position(|(n, _)| *n == seg_no)
            .ok_or_else(|| {
                bad(format!(
                    "SEG frame {} refers to segment {seg_no}, which SegmentSequence does not list",
                    f + 1
                ))
            })?;
        let pos = group(Some(fg), shared, tags::PLANE_POSITION_SEQUENCE)
            .and_then(|g| floats(g, tags::IMAGE_POSITION_PATIENT, 3))
            .ok_or_else(|| at("PlanePositionSequence ImagePositionPatient"))?;
        let ori = group(Some(fg), shared, tags::PLANE_ORIENTATION_SEQUENCE)
            .and_then(|g| floats(g, tags::IMAGE_ORIENTATION_PATIENT, 6))
            .ok_or_else(|| at("PlaneOrientationSequence ImageOrientationPatient"))?;
        let ps = group(Some(fg), shared, tags::PIXEL_MEASURES_SEQUENCE)
            .and_then(|g| floats(g, tags::PIXEL_SPACING, 2))
            .filter(|p| p[0] > 0.0 && p[1] > 0.0)
            .ok_or_else(|| at("PixelMeasuresSequence PixelSpacing"))?;
        for d in items(fg, tags::DERIVATION_IMAGE_SEQUENCE) {
            for s in items(d, tags::SOURCE_IMAGE_SEQUENCE) {
                let uid = text(s, tags::REFERENCED_SOP_INSTANCE_UID);
                if !uid.is_empty() {
                    c.refs.sop_instance_uids.insert(uid);
                }
            }
        }
        let start = f * plane;
        let inside: Vec<bool> = if binary {
            // Bits run on across frames, least significant bit first (PS3.5 8.1.1).
            (start..start + plane)
                .map(|b| data[b / 8] >> (b % 8) & 1 == 1)
                .collect()
        } else {
            data[start..start + plane]
                .iter()
                .map(|&v| v as f64 >= 0.5 * max_value)
                .collect()
        };
        by_segment[slot].push(Frame {
            position: [pos[0], pos[1], pos[2]],
            row_dir: [ori[0], ori[1], ori[2]],
            col_dir: [ori[3], ori[4], ori[5]],
            pixel_spacing: [ps[0], ps[1]],
            rows: rows as usize,
            columns: cols as usize,
            inside,
        });
    }
    for ((_, name), frames) in segments.into_iter().zip(by_segment) {
        c.rois.push(Roi {
            name,
            geometry: Geometry::Frames(frames),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_names_read_as_a_person_reads_them() {
        assert_eq!(iso("20261206", "101530.25"), "2026-12-06T10:15:30");
        assert_eq!(iso("20261206", "1015"), "2026-12-06T10:15:00");
        assert_eq!(iso("", "1015"), "");
        assert_eq!(person("Doe^Jane^^Dr"), "Doe Jane Dr");
    }

    #[test]
    fn references_need_the_series_or_the_frame_with_an_instance() {
        let r = References {
            series_uids: vec!["1.2.3".into()],
            frame_of_reference_uids: vec!["9.9".into()],
            sop_instance_uids: ["1.2.3.1".to_string()].into_iter().collect(),
        };
        assert!(r.name("1.2.3", "", &[]));
        assert!(r.name("other", "9.9", &["1.2.3.1".into()]));
        assert!(
            !r.name("other", "9.9", &["5.5".into()]),
            "a frame alone does not tell the CT"
        );
        assert!(!r.name("other", "8.8", &["1.2.3.1".into()]));
    }
}
