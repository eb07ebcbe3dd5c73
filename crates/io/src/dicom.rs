//! DICOM reader: finds series in any folder tree, works out their geometry from
//! the headers, and reads CT (HU) and NM/SPECT (Bq/mL) volumes.
//!
//! Slices are ordered by their position along the slice normal, never by file
//! name or InstanceNumber. Missing, duplicate and unevenly spaced slices and
//! gantry tilt are errors: a volume with a hole in it would give a wrong organ
//! volume without anyone noticing.

use crate::dicom_bounds::{check_element_lengths, ElementBounds};
use crate::error::{Error, Result};
use crate::fault::DicomFault;
use crate::time::DateTime;
use crate::volume::{cross, dot, norm, Geometry, Vec3, Volume};
use crate::IngestConfig;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_core::Tag;

/// Radiopharmaceutical Information Sequence, first item.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Radiopharmaceutical {
    /// Radionuclide code meaning, e.g. "^177^Lutetium", or the code value.
    pub nuclide: Option<String>,
    pub radiopharmaceutical: Option<String>,
    /// Injected activity in MBq (RadionuclideTotalDose is in Bq).
    pub total_dose_mbq: Option<f64>,
    pub start_datetime: Option<DateTime>,
    pub half_life_h: Option<f64>,
}

/// What one DICOM file's header says (pixel data not read).
#[derive(Debug, Clone, Default)]
pub struct DicomHeader {
    pub path: PathBuf,
    pub sop_class_uid: String,
    /// SOPInstanceUID: an instance sent twice has the same one (empty when absent).
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub modality: String,
    pub patient_id: String,
    pub patient_name: String,
    /// IssuerOfPatientID, PatientBirthDate (YYYYMMDD) and PatientSex: with the
    /// ID they decide whether two cycles are one patient's.
    pub issuer_of_patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_uid: String,
    /// SeriesInstanceUID; empty when the file has none or an empty one (an
    /// anonymiser's export): the series is then found by [`DicomHeader::series_key`].
    pub series_uid: String,
    pub frame_of_reference_uid: String,
    pub series_description: String,
    pub series_number: Option<i64>,
    /// SeriesDate + SeriesTime as written (part of a series' identity).
    pub series_datetime: String,
    pub station_name: String,
    pub instance_number: Option<i64>,
    pub rows: usize,
    pub columns: usize,
    pub frames: usize,
    pub pixel_spacing: Option<[f64; 2]>,
    pub position: Option<Vec3>,
    pub orientation: Option<[f64; 6]>,
    pub spacing_between_slices: Option<f64>,
    pub slice_thickness: Option<f64>,
    pub number_of_slices: Option<usize>,
    pub acquisition: Option<DateTime>,
    pub units: Option<String>,
    /// DecayCorrection (0054,1102): NONE, START or ADMIN.
    pub decay_correction: Option<String>,
    pub rescale: (f64, f64),
    /// Real World Value Mapping (slope, intercept, unit code value).
    pub real_world: Option<(f64, f64, String)>,
    pub radiopharmaceutical: Option<Radiopharmaceutical>,
    pub contrast_agent: Option<String>,
    pub image_type: String,
    pub kvp: Option<f64>,
    /// Exposure (0018,1152) in mAs: low on a SPECT/CT's attenuation CT.
    pub exposure_mas: Option<f64>,
    /// An enhanced multi-frame object (functional groups).
    pub enhanced: bool,
    /// Enhanced objects: per frame, ImagePositionPatient (Plane Position
    /// Sequence) and the rescale (Pixel Value Transformation Sequence).
    pub frame_positions: Vec<Option<Vec3>>,
    pub frame_rescale: Vec<Option<(f64, f64)>>,
    /// NM multi-frame: the vectors naming each frame's energy window, detector
    /// and slice (PS3.3 C.8.4.8), empty when absent.
    pub energy_window_vector: Vec<i64>,
    pub detector_vector: Vec<i64>,
    pub slice_vector: Vec<i64>,
    /// BitsAllocated (0028,0100); 0 when absent.
    pub bits_allocated: u16,
    /// SamplesPerPixel (0028,0002); 1 when absent.
    pub samples_per_pixel: u16,
    /// The file's size and its pixel data as measured by the header walk
    /// ([`crate::dicom_bounds`]): what Rows x Columns x NumberOfFrames is
    /// checked against before anything is allocated.
    pub bounds: ElementBounds,
}

/// One row of `organdose inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesInfo {
    pub source: String,
    pub modality: String,
    pub patient_id: String,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: String,
    pub series_description: String,
    pub files: usize,
    pub dims: [usize; 3],
    pub spacing_mm: Vec3,
    pub origin_mm: Vec3,
    pub direction: [Vec3; 3],
    pub orientation: String,
    pub acquisition_datetime: Option<DateTime>,
    pub units: String,
    pub radiopharmaceutical: Option<Radiopharmaceutical>,
    pub contrast_agent: Option<String>,
    /// Why the geometry or pixel data cannot be used, when it cannot.
    pub problem: Option<String>,
    /// How the series was told apart when its files have no SeriesInstanceUID.
    pub identity: Option<String>,
}

/// The files of one series.
#[derive(Debug, Clone)]
pub struct DicomSeries {
    /// The SeriesInstanceUID, or for files without one the key
    /// `nouid-<hash of the identity>` (see [`DicomHeader::series_key`]).
    pub uid: String,
    pub files: Vec<DicomHeader>,
    /// How the series was told apart when its files have no SeriesInstanceUID
    /// (shown by `inspect`); None when they have one.
    pub identity: Option<String>,
    /// Files beside this series' files (same folder) that could not be read,
    /// with the reason: a slice cut short or empty is one of them, and the
    /// series' errors name them (a gap alone would not say which file it was).
    pub unreadable: Vec<(PathBuf, String)>,
}

fn s(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|v| v.trim().trim_end_matches('\0').trim().to_string())
        .filter(|v| !v.is_empty())
}

fn f(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    obj.get(tag)
        .and_then(|e| e.to_float64().ok())
        .filter(|v| v.is_finite())
}

fn fs(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| v.iter().all(|x| x.is_finite()))
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag).and_then(|e| e.items()).and_then(|i| i.first())
}

fn date_time(obj: &InMemDicomObject, dt: Tag, da: Tag, tm: Tag) -> Option<DateTime> {
    if let Some(v) = s(obj, dt).and_then(|v| DateTime::from_dicom_dt(&v)) {
        return Some(v);
    }
    let d = s(obj, da)?;
    let t = s(obj, tm).unwrap_or_default();
    DateTime::from_dicom_da_tm(&d, &t)
}

fn radiopharmaceutical(obj: &InMemDicomObject) -> Option<Radiopharmaceutical> {
    let item = first_item(obj, tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE)?;
    let nuclide = first_item(item, tags::RADIONUCLIDE_CODE_SEQUENCE)
        .and_then(|c| s(c, tags::CODE_MEANING).or_else(|| s(c, tags::CODE_VALUE)));
    let start = s(item, tags::RADIOPHARMACEUTICAL_START_DATE_TIME)
        .and_then(|v| DateTime::from_dicom_dt(&v))
        .or_else(|| {
            // Start Time alone: the date is the series date (PS3.3 C.8.4.10).
            let t = s(item, tags::RADIOPHARMACEUTICAL_START_TIME)?;
            let d = s(obj, tags::SERIES_DATE).or_else(|| s(obj, tags::STUDY_DATE))?;
            DateTime::from_dicom_da_tm(&d, &t)
        });
    Some(Radiopharmaceutical {
        nuclide,
        radiopharmaceutical: s(item, tags::RADIOPHARMACEUTICAL),
        total_dose_mbq: f(item, tags::RADIONUCLIDE_TOTAL_DOSE).map(|bq| bq / 1e6),
        start_datetime: start,
        half_life_h: f(item, tags::RADIONUCLIDE_HALF_LIFE).map(|sec| sec / 3600.0),
    })
}

/// The item of a functional group macro (PS3.3 C.7.6.16) that applies to a
/// frame: the frame's own Per-frame group, else the Shared one.
fn fg_item<'a>(
    frame: Option<&'a InMemDicomObject>,
    shared: Option<&'a InMemDicomObject>,
    seq: Tag,
) -> Option<&'a InMemDicomObject> {
    frame
        .and_then(|f| first_item(f, seq))
        .or_else(|| shared.and_then(|s| first_item(s, seq)))
}

fn vec3(v: Option<Vec<f64>>) -> Option<Vec3> {
    v.filter(|v| v.len() >= 3).map(|v| [v[0], v[1], v[2]])
}

fn ints(obj: &InMemDicomObject, tag: Tag) -> Vec<i64> {
    obj.get(tag)
        .and_then(|e| e.to_multi_int::<i64>().ok())
        .unwrap_or_default()
}

impl DicomHeader {
    fn from_object(path: &Path, file: &DefaultDicomObject, bounds: ElementBounds) -> Result<Self> {
        let meta = file.meta();
        let obj: &InMemDicomObject = file;
        let geom_src = first_item(obj, tags::DETECTOR_INFORMATION_SEQUENCE);
        // Enhanced multi-frame (Enhanced CT, Enhanced PET...): plane geometry and
        // rescale live in functional groups, not at the top level.
        let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
        let per_frame: &[InMemDicomObject] = obj
            .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .and_then(|e| e.items())
            .unwrap_or(&[]);
        let enhanced = shared.is_some() || !per_frame.is_empty();
        let frame0 = per_frame.first();
        let fg = |seq: Tag, tag: Tag| fg_item(frame0, shared, seq).and_then(|i| fs(i, tag));
        let orientation = fs(obj, tags::IMAGE_ORIENTATION_PATIENT)
            .or_else(|| geom_src.and_then(|d| fs(d, tags::IMAGE_ORIENTATION_PATIENT)))
            .or_else(|| {
                fg(
                    tags::PLANE_ORIENTATION_SEQUENCE,
                    tags::IMAGE_ORIENTATION_PATIENT,
                )
            });
        let position = fs(obj, tags::IMAGE_POSITION_PATIENT)
            .or_else(|| geom_src.and_then(|d| fs(d, tags::IMAGE_POSITION_PATIENT)))
            .or_else(|| fg(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT));
        let pixel_spacing = fs(obj, tags::PIXEL_SPACING)
            .or_else(|| fg(tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING));
        let frame_positions: Vec<Option<Vec3>> = per_frame
            .iter()
            .map(|fr| {
                vec3(
                    fg_item(Some(fr), shared, tags::PLANE_POSITION_SEQUENCE)
                        .and_then(|i| fs(i, tags::IMAGE_POSITION_PATIENT)),
                )
            })
            .collect();
        let frame_orientations: Vec<Option<Vec<f64>>> = per_frame
            .iter()
            .map(|fr| {
                fg_item(Some(fr), shared, tags::PLANE_ORIENTATION_SEQUENCE)
                    .and_then(|i| fs(i, tags::IMAGE_ORIENTATION_PATIENT))
            })
            .collect();
        if let (Some(o0), true) = (frame_orientations.first(), enhanced) {
            if frame_orientations.iter().any(|o| o != o0) {
                return Err(Error::dicom(
                    path,
                    "frames of different ImageOrientationPatient (Plane Orientation Sequence (0020,9116)): one volume needs one orientation; export the reformats as separate series",
                ));
            }
        }
        let frame_rescale: Vec<Option<(f64, f64)>> = per_frame
            .iter()
            .map(|fr| {
                let i = fg_item(Some(fr), shared, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE)?;
                Some((
                    f(i, tags::RESCALE_SLOPE)?,
                    f(i, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
                ))
            })
            .collect();
        let real_world = first_item(obj, tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE)
            .or_else(|| {
                // Enhanced objects carry it in a functional group (Real World Value
                // Mapping Sequence inside the shared or per-frame item).
                fg_item(frame0, shared, tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE)
            })
            .and_then(|rw| {
                let slope = f(rw, tags::REAL_WORLD_VALUE_SLOPE)?;
                let icpt = f(rw, tags::REAL_WORLD_VALUE_INTERCEPT).unwrap_or(0.0);
                let unit = first_item(rw, tags::MEASUREMENT_UNITS_CODE_SEQUENCE)
                    .and_then(|u| s(u, tags::CODE_VALUE))
                    .unwrap_or_default();
                Some((slope, icpt, unit))
            });
        let measures = |tag: Tag| {
            f(obj, tag).or_else(|| {
                fg_item(frame0, shared, tags::PIXEL_MEASURES_SEQUENCE).and_then(|i| f(i, tag))
            })
        };
        let modality = s(obj, tags::MODALITY).unwrap_or_default();
        let acquisition = date_time(
            obj,
            tags::ACQUISITION_DATE_TIME,
            tags::ACQUISITION_DATE,
            tags::ACQUISITION_TIME,
        )
        .or_else(|| {
            date_time(
                obj,
                Tag(0xFFFF, 0xFFFF),
                tags::SERIES_DATE,
                tags::SERIES_TIME,
            )
        })
        .or_else(|| {
            date_time(
                obj,
                Tag(0xFFFF, 0xFFFF),
                tags::CONTENT_DATE,
                tags::CONTENT_TIME,
            )
        });
        Ok(DicomHeader {
            path: path.to_path_buf(),
            sop_class_uid: meta
                .media_storage_sop_class_uid()
                .trim_end_matches('\0')
                .to_string(),
            sop_instance_uid: s(obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
            transfer_syntax: meta.transfer_syntax().trim_end_matches('\0').to_string(),
            modality,
            patient_id: s(obj, tags::PATIENT_ID).unwrap_or_default(),
            patient_name: s(obj, tags::PATIENT_NAME).unwrap_or_default(),
            issuer_of_patient_id: s(obj, tags::ISSUER_OF_PATIENT_ID).unwrap_or_default(),
            patient_birth_date: s(obj, tags::PATIENT_BIRTH_DATE).unwrap_or_default(),
            patient_sex: s(obj, tags::PATIENT_SEX).unwrap_or_default(),
            study_uid: s(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
            series_uid: s(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
            frame_of_reference_uid: s(obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
            series_description: s(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
            series_number: int(obj, tags::SERIES_NUMBER),
            series_datetime: format!(
                "{}{}",
                s(obj, tags::SERIES_DATE).unwrap_or_default(),
                s(obj, tags::SERIES_TIME).unwrap_or_default()
            ),
            station_name: s(obj, tags::STATION_NAME).unwrap_or_default(),
            instance_number: int(obj, tags::INSTANCE_NUMBER),
            rows: int(obj, tags::ROWS).unwrap_or(0).max(0) as usize,
            columns: int(obj, tags::COLUMNS).unwrap_or(0).max(0) as usize,
            frames: int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize,
            pixel_spacing: pixel_spacing.filter(|v| v.len() >= 2).map(|v| [v[0], v[1]]),
            position: vec3(position),
            orientation: orientation
                .filter(|v| v.len() >= 6)
                .map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]),
            spacing_between_slices: measures(tags::SPACING_BETWEEN_SLICES),
            slice_thickness: measures(tags::SLICE_THICKNESS),
            number_of_slices: int(obj, tags::NUMBER_OF_SLICES).map(|v| v.max(0) as usize),
            acquisition,
            units: s(obj, tags::UNITS),
            decay_correction: s(obj, tags::DECAY_CORRECTION),
            rescale: match f(obj, tags::RESCALE_SLOPE) {
                Some(slope) => (slope, f(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0)),
                None => frame_rescale
                    .first()
                    .copied()
                    .flatten()
                    .unwrap_or((1.0, 0.0)),
            },
            real_world,
            radiopharmaceutical: radiopharmaceutical(obj),
            contrast_agent: s(obj, tags::CONTRAST_BOLUS_AGENT),
            image_type: s(obj, tags::IMAGE_TYPE).unwrap_or_default(),
            kvp: f(obj, tags::KVP),
            exposure_mas: f(obj, tags::EXPOSURE),
            enhanced,
            frame_positions,
            frame_rescale,
            energy_window_vector: ints(obj, tags::ENERGY_WINDOW_VECTOR),
            detector_vector: ints(obj, tags::DETECTOR_VECTOR),
            slice_vector: ints(obj, tags::SLICE_VECTOR),
            bits_allocated: int(obj, tags::BITS_ALLOCATED)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(0),
            samples_per_pixel: int(obj, tags::SAMPLES_PER_PIXEL)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(1),
            bounds,
        })
    }

    /// The unit pixel values have after [`DicomHeader::value_transform`].
    pub fn value_unit(&self) -> String {
        match self.modality.as_str() {
            "CT" => "HU".into(),
            _ => {
                if let Some((_, _, u)) = &self.real_world {
                    if u.eq_ignore_ascii_case("Bq/ml") {
                        return "Bq/mL".into();
                    }
                }
                match self.units.as_deref() {
                    Some("BQML") => "Bq/mL".into(),
                    Some(u) => u.to_string(),
                    None => "unknown".into(),
                }
            }
        }
    }

    /// Units (0054,1001) and the Real World Value Mapping's units saying
    /// different things (one Bq/mL, the other not): which one is right is not in
    /// the file, so the result needs review (issue 42, finding 8). None when
    /// they agree or only one is there.
    pub fn unit_conflict(&self) -> Option<String> {
        if self.modality == "CT" {
            return None;
        }
        let (_, _, rwv) = self.real_world.as_ref()?;
        let units = self.units.as_deref()?;
        let rwv_bq = rwv.eq_ignore_ascii_case("Bq/ml");
        let units_bq = units == "BQML";
        (rwv_bq != units_bq).then(|| {
            format!(
                "{}: Units (0054,1001) say {units} but the Real World Value Mapping's units say {rwv}; the values were read as {} ({}): check the reconstruction's quantification",
                self.path.display(),
                self.value_unit(),
                if rwv_bq {
                    "the mapping wins"
                } else {
                    "from Units and Rescale"
                }
            )
        })
    }

    /// [`Self::value_transform`] for one frame: an enhanced object's per-frame
    /// Pixel Value Transformation wins over the top-level rescale.
    pub(crate) fn frame_transform(&self, frame: usize) -> (f64, f64) {
        let rwvm_bq = self
            .real_world
            .as_ref()
            .is_some_and(|(_, _, u)| u.eq_ignore_ascii_case("Bq/ml"));
        if self.modality != "CT" && rwvm_bq {
            return self.value_transform();
        }
        self.frame_rescale
            .get(frame)
            .copied()
            .flatten()
            .unwrap_or_else(|| self.value_transform())
    }

    /// (slope, intercept) from stored values to the unit of [`DicomHeader::value_unit`]:
    /// a Real World Value Mapping in Bq/ml wins over Rescale (PS3.3 C.7.6.16.2.11).
    pub(crate) fn value_transform(&self) -> (f64, f64) {
        if self.modality != "CT" {
            if let Some((slope, icpt, u)) = &self.real_world {
                if u.eq_ignore_ascii_case("Bq/ml") {
                    return (*slope, *icpt);
                }
            }
        }
        self.rescale
    }
}

/// FNV-1a, 64 bits: a stable key for a fallback identity (the same files give
/// the same key in every run and on every box).
fn fnv64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A number as identity text: rounded to 1e-4 (writers differ in the last
/// digits), and never "-0".
fn key_num(x: f64) -> String {
    format!("{:.4}", (x * 1e4).round() / 1e4 + 0.0)
}

impl DicomHeader {
    /// The attributes that tell this file's series apart when it has no
    /// SeriesInstanceUID: what every instance of one series shares (PS3.3
    /// General Series, Frame of Reference, Image Plane and Image Pixel modules).
    /// The folder is not among them (a study may be split over several export
    /// folders); it only separates files that would otherwise collide.
    pub(crate) fn identity_attributes(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("PatientID", self.patient_id.clone()),
            ("StudyInstanceUID", self.study_uid.clone()),
            ("Modality", self.modality.clone()),
            ("FrameOfReferenceUID", self.frame_of_reference_uid.clone()),
            (
                "SeriesNumber",
                self.series_number
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            ),
            ("SeriesDescription", self.series_description.clone()),
            ("SeriesDate/Time", self.series_datetime.clone()),
            (
                "ImageOrientationPatient",
                self.orientation
                    .map(|o| o.iter().map(|&x| key_num(x)).collect::<Vec<_>>().join("\\"))
                    .unwrap_or_default(),
            ),
            ("Rows/Columns", format!("{}x{}", self.rows, self.columns)),
            (
                "PixelSpacing",
                self.pixel_spacing
                    .map(|p| format!("{}\\{}", key_num(p[0]), key_num(p[1])))
                    .unwrap_or_default(),
            ),
        ];
        v.retain(|(_, val)| !val.is_empty());
        v
    }

    /// The key files are grouped into series by: the SeriesInstanceUID, or
    /// `nouid-<hash>` of [`Self::identity_attributes`] when it is missing or empty.
    pub(crate) fn series_key(&self) -> String {
        if !self.series_uid.is_empty() {
            return self.series_uid.clone();
        }
        let text: Vec<String> = self
            .identity_attributes()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("nouid-{:016x}", fnv64(&text.join("|")))
    }
}

/// Groups files into series by [`DicomHeader::series_key`]. Files of one
/// fallback identity in several folders are one series (a study split over
/// export folders) unless their slices collide (the same position twice, or
/// several multi-frame objects): then each folder, or each multi-frame file,
/// is a series of its own.
/// SHA-256 of a Part 10 file's data set: its bytes after the file meta group
/// (which records who wrote the file, so the same instance exported and
/// received over the network differs there). Streamed, and remembered per
/// (path, size, modification time): the box's ingest groups its files at every
/// poll.
fn data_set_digest(path: &Path) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    use std::sync::{Mutex, OnceLock};
    type Key = (PathBuf, u64, Option<std::time::SystemTime>);
    static CACHE: OnceLock<Mutex<std::collections::HashMap<Key, [u8; 32]>>> = OnceLock::new();
    let meta = std::fs::metadata(path).ok()?;
    let key: Key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(d) = cache.lock().ok()?.get(&key) {
        return Some(*d);
    }
    let mut f = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let mut pre = [0u8; 132];
    f.read_exact(&mut pre[..4]).ok()?;
    if &pre[..4] != b"DICM" {
        f.read_exact(&mut pre[4..]).ok()?;
        if &pre[128..132] != b"DICM" {
            return None;
        }
    }
    // (0002,0000) UL, explicit VR little endian: 8 bytes of header, 4 of value.
    let mut g = [0u8; 12];
    f.read_exact(&mut g).ok()?;
    let len = u32::from_le_bytes([g[8], g[9], g[10], g[11]]) as u64;
    std::io::copy(&mut (&mut f).take(len), &mut std::io::sink()).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    let d: [u8; 32] = h.finalize().into();
    if let Ok(mut c) = cache.lock() {
        if c.len() > 100_000 {
            c.clear();
        }
        c.insert(key, d);
    }
    Some(d)
}

/// Removes the second and later copies of an instance (same SOPInstanceUID and
/// the same data set, byte for byte): a console that re-sends, a PACS that
/// re-routes, a study exported twice into two folders. The first copy (in path
/// order) is kept; nothing is deleted on disk. Copies whose data differ stay,
/// and the series' geometry check names both files (issue 42, finding 3).
pub(crate) fn drop_identical_instances(mut headers: Vec<DicomHeader>) -> Vec<DicomHeader> {
    headers.sort_by(|a, b| a.path.cmp(&b.path));
    let mut by_uid: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, h) in headers.iter().enumerate() {
        if !h.sop_instance_uid.is_empty() {
            by_uid
                .entry(h.sop_instance_uid.clone())
                .or_default()
                .push(i);
        }
    }
    let mut drop = vec![false; headers.len()];
    for idx in by_uid.values().filter(|v| v.len() > 1) {
        let mut kept: Vec<(usize, Option<[u8; 32]>)> = Vec::new();
        for &i in idx {
            let data = data_set_digest(&headers[i].path);
            let same = data.is_some() && kept.iter().any(|(_, d)| d.is_some() && *d == data);
            if same {
                drop[i] = true;
            } else {
                kept.push((i, data));
            }
        }
    }
    headers
        .into_iter()
        .zip(drop)
        .filter(|(_, d)| !d)
        .map(|(h, _)| h)
        .collect()
}

pub fn group_series(headers: Vec<DicomHeader>) -> Vec<DicomSeries> {
    let headers = drop_identical_instances(headers);
    let mut groups: BTreeMap<String, Vec<DicomHeader>> = BTreeMap::new();
    for h in headers {
        groups.entry(h.series_key()).or_default().push(h);
    }
    let mut out = Vec::new();
    for (key, files) in groups {
        let Some(h0) = files.first() else { continue };
        if !h0.series_uid.is_empty() {
            out.push(DicomSeries {
                uid: key,
                files,
                identity: None,
                unreadable: Vec::new(),
            });
            continue;
        }
        let attrs: Vec<String> = h0
            .identity_attributes()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let why = format!(
            "no SeriesInstanceUID (0020,000E) in the files: grouped by {}",
            attrs.join(", ")
        );
        let multi = files.iter().filter(|h| h.frames > 1).count();
        let folders: std::collections::BTreeSet<PathBuf> = files
            .iter()
            .map(|h| h.path.parent().map(Path::to_path_buf).unwrap_or_default())
            .collect();
        let collide = || {
            let mut pos: Vec<Vec3> = files.iter().filter_map(|h| h.position).collect();
            pos.sort_by(|a, b| a[2].total_cmp(&b[2]));
            pos.len() < files.len()
                || pos.iter().enumerate().any(|(i, a)| {
                    pos[i + 1..]
                        .iter()
                        .take_while(|b| b[2] - a[2] < POS_TOL_MM)
                        .any(|b| norm([b[0] - a[0], b[1] - a[1], b[2] - a[2]]) < POS_TOL_MM)
                })
        };
        if files.len() > 1 && multi > 0 {
            // A multi-frame object is a whole reconstruction: one series each.
            for h in files {
                let name = h.path.display().to_string();
                out.push(DicomSeries {
                    uid: format!("{key}-{:08x}", fnv64(&name) as u32),
                    identity: Some(format!("{why}, file {name}")),
                    files: vec![h],
                    unreadable: Vec::new(),
                });
            }
        } else if folders.len() > 1 && collide() {
            let mut by_folder: BTreeMap<PathBuf, Vec<DicomHeader>> = BTreeMap::new();
            for h in files {
                let d = h.path.parent().map(Path::to_path_buf).unwrap_or_default();
                by_folder.entry(d).or_default().push(h);
            }
            for (d, files) in by_folder {
                let name = d.display().to_string();
                out.push(DicomSeries {
                    uid: format!("{key}-{:08x}", fnv64(&name) as u32),
                    identity: Some(format!(
                        "{why}, folder {name} (the same slices are in other folders)"
                    )),
                    files,
                    unreadable: Vec::new(),
                });
            }
        } else {
            out.push(DicomSeries {
                uid: key,
                files,
                identity: Some(why),
                unreadable: Vec::new(),
            });
        }
    }
    out
}

/// Reads the header of one DICOM file (stops before the pixel data). Every
/// element length is checked against the file's size first
/// ([`check_element_lengths`]): dicom-rs allocates what a length declares.
pub fn read_header(path: &Path) -> Result<DicomHeader> {
    let bounds = check_element_lengths(path)?;
    let file = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| Error::dicom_from(path, "", e))?;
    DicomHeader::from_object(path, &file, bounds)
}

/// Whether a header is an RT Structure Set or a Segmentation: contours or
/// segments on images, not an image (a physicist's correction, or organdose's
/// own output).
pub fn is_contour_object(modality: &str, sop_class_uid: &str) -> bool {
    use dicom_dictionary_std::uids;
    matches!(modality.trim(), "RTSTRUCT" | "SEG")
        || sop_class_uid == uids::RT_STRUCTURE_SET_STORAGE
        || sop_class_uid == uids::SEGMENTATION_STORAGE
}

/// Largest volume organdose builds from DICOM, in voxels: a 512 x 512 x 4096
/// whole-body CT; the f32 volume alone is 4 GiB, the box's whole memory.
pub(crate) const MAX_VOXELS: u64 = 512 * 512 * 4096;

/// Largest ratio of decoded to encapsulated pixel bytes accepted: deflate's
/// limit is 1032:1 (RLE 64:1), so a header claiming more than this of a
/// compressed stream is describing data that is not there.
pub(crate) const MAX_COMPRESSION_RATIO: u64 = 1100;

impl DicomHeader {
    /// Checks Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated
    /// against the pixel data really present, before anything is sized from them.
    pub(crate) fn check_pixel_budget(&self) -> Result<()> {
        let path = &self.path;
        let bytes_per_sample = (self.bits_allocated.max(1) as u64).div_ceil(8);
        let voxels = (self.rows as u64)
            .checked_mul(self.columns as u64)
            .and_then(|v| v.checked_mul(self.frames as u64))
            .filter(|&v| v <= MAX_VOXELS)
            .ok_or_else(|| {
                Error::dicom_from(
                    path,
                    "",
                    DicomFault::TooManyVoxels {
                        columns: self.columns,
                        rows: self.rows,
                        frames: self.frames,
                        max: MAX_VOXELS,
                    },
                )
            })?;
        let need = voxels * bytes_per_sample * self.samples_per_pixel.max(1) as u64;
        let pd = self
            .bounds
            .pixel_data
            .ok_or_else(|| Error::dicom_from(path, "", DicomFault::NoPixelData))?;
        let dims = format!(
            "{} x {} x {} frames x {} byte(s)",
            self.columns, self.rows, self.frames, bytes_per_sample
        );
        if let Some(declared) = pd.declared_but_cut {
            // dicom-rs would size the value from the declared length.
            return Err(Error::dicom_from(
                path,
                "",
                DicomFault::PixelDataCut {
                    declared,
                    held: pd.bytes,
                },
            ));
        }
        if !pd.encapsulated {
            if pd.bytes < need {
                return Err(Error::dicom_from(
                    path,
                    "",
                    DicomFault::PixelDataShort {
                        dims,
                        expected: need,
                        held: pd.bytes,
                    },
                ));
            }
            return Ok(());
        }
        // Encapsulated: every frame is at least one fragment (PS3.5 A.4).
        if self.frames > 1 && pd.fragments < self.frames as u64 {
            return Err(Error::dicom_from(
                path,
                "",
                DicomFault::FewerFragments {
                    frames: self.frames,
                    fragments: pd.fragments,
                },
            ));
        }
        if need > pd.bytes.saturating_mul(MAX_COMPRESSION_RATIO) {
            return Err(Error::dicom_from(
                path,
                "",
                DicomFault::CompressionBeyondLimit {
                    dims,
                    expected: need,
                    max_ratio: MAX_COMPRESSION_RATIO,
                    held: pd.bytes,
                },
            ));
        }
        Ok(())
    }
}

/// True when the file has the DICOM Part 10 preamble ("DICM" at byte 128).
pub fn has_dicom_magic(path: &Path) -> bool {
    let mut buf = [0u8; 132];
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_exact(&mut buf).is_ok() && &buf[128..132] == b"DICM",
        Err(_) => false,
    }
}

/// Everything found under a path.
#[derive(Debug, Default)]
pub struct Scan {
    pub series: Vec<DicomSeries>,
    pub nifti: Vec<PathBuf>,
    /// Files that are neither readable DICOM nor NIfTI, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
    /// DICOM files that are not images and are skipped on purpose (a DICOMDIR).
    pub ignored: Vec<(PathBuf, String)>,
}

/// Lists every file below `path` (or `path` itself), skipping hidden names
/// (temporary files of writers in progress start with a dot). Symbolic links
/// are followed (a series folder linked into the export is read like any
/// other); a folder reached twice, e.g. through a link loop, is walked once.
pub fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        // canonicalize resolves links, so a loop lands on a folder already seen.
        let real = std::fs::canonicalize(&dir).map_err(|e| Error::io(&dir, e))?;
        if !seen.insert(real) {
            continue;
        }
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let p = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let mut ft = entry.file_type().map_err(|e| Error::io(&p, e))?;
            if ft.is_symlink() {
                match std::fs::metadata(&p) {
                    Ok(m) => ft = m.file_type(),
                    // A dangling link: listed, so the reader names it as unreadable.
                    Err(_) => {
                        out.push(p);
                        continue;
                    }
                }
            }
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Why a DICOMDIR is not read as an image: the files it indexes lie in the
/// same folder tree and are read from there directly, whatever their names.
pub(crate) const DICOMDIR_NOTE: &str =
    "DICOMDIR (Media Storage Directory): an index, not an image; the files it lists are read from the folder tree directly";

/// True for a DICOMDIR (its SOP class is the Media Storage Directory).
pub fn is_dicomdir(h: &DicomHeader) -> bool {
    h.sop_class_uid == dicom_dictionary_std::uids::MEDIA_STORAGE_DIRECTORY_STORAGE
}

/// Finds DICOM series (grouped by [`group_series`]) and NIfTI files below `path`.
pub fn scan(path: &Path) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut headers = Vec::new();
    for p in list_files(path)? {
        if crate::nifti::is_nifti_path(&p) {
            scan.nifti.push(p);
            continue;
        }
        if !has_dicom_magic(&p) {
            scan.rejected
                .push((p, "not DICOM (no 'DICM' at byte 128) and not NIfTI".into()));
            continue;
        }
        match read_header(&p) {
            Ok(h) if is_dicomdir(&h) => scan.ignored.push((p, DICOMDIR_NOTE.into())),
            Ok(h) => headers.push(h),
            Err(Error::Dicom { msg, .. }) => scan.rejected.push((p, msg)),
            Err(e) => scan.rejected.push((p, e.to_string())),
        }
    }
    scan.series = group_series(headers);
    for series in &mut scan.series {
        let folders: std::collections::BTreeSet<&Path> = series
            .files
            .iter()
            .filter_map(|h| h.path.parent())
            .collect();
        series.unreadable = scan
            .rejected
            .iter()
            .filter(|(p, _)| p.parent().is_some_and(|d| folders.contains(d)))
            .cloned()
            .collect();
    }
    Ok(scan)
}

/// Where each slice of a series comes from: (file index, frame in that file).
#[derive(Debug, Clone)]
pub struct SliceMap {
    pub geometry: Geometry,
    pub slices: Vec<(usize, usize)>,
}

const POS_TOL_MM: f64 = 1e-3;

impl DicomSeries {
    /// "; ... could not be read: FILE (why)" for the unreadable files beside the
    /// series, empty when there are none.
    pub(crate) fn unreadable_note(&self) -> String {
        if self.unreadable.is_empty() {
            return String::new();
        }
        let list: Vec<String> = self
            .unreadable
            .iter()
            .map(|(p, why)| format!("{} ({why})", p.display()))
            .collect();
        format!(
            "; {} file(s) in this series' folder could not be read: {}",
            list.len(),
            list.join("; ")
        )
    }

    fn first(&self) -> Result<&DicomHeader> {
        self.files
            .first()
            .ok_or_else(|| Error::series(&self.uid, "no files"))
    }

    /// Geometry and slice order, with every check that protects a volume measurement.
    /// Every refusal names the file, the attribute, and what would make it readable.
    pub fn slice_map(&self, cfg: &IngestConfig) -> Result<SliceMap> {
        let h0 = self.first()?;
        let err = |m: String| Error::series(&self.uid, format!("{m}{}", self.unreadable_note()));
        let at = |h: &DicomHeader, m: String| err(format!("{}: {m}", h.path.display()));
        // Identical copies were dropped by group_series: two files left with one
        // SOPInstanceUID hold different data, and which is right is not ours to say.
        let mut seen: BTreeMap<&str, &DicomHeader> = BTreeMap::new();
        for h in &self.files {
            if h.sop_instance_uid.is_empty() {
                continue;
            }
            if let Some(first) = seen.insert(&h.sop_instance_uid, h) {
                return Err(err(format!(
                    "SOPInstanceUID {} is in two files with different data: {} and {} (remove the wrong one)",
                    h.sop_instance_uid,
                    first.path.display(),
                    h.path.display()
                )));
            }
        }
        for h in &self.files {
            if h.rows == 0 || h.columns == 0 {
                return Err(at(
                    h,
                    "no Rows (0028,0010) / Columns (0028,0011): not an image (export the image series, not a report or a raw-data object)".into(),
                ));
            }
            // Before the slice list or a volume is sized from the header.
            h.check_pixel_budget()?;
            if (h.rows, h.columns) != (h0.rows, h0.columns) {
                return Err(err(format!(
                    "mixed image sizes in one series: {}x{} ({}) and {}x{} ({})",
                    h0.columns,
                    h0.rows,
                    h0.path.display(),
                    h.columns,
                    h.rows,
                    h.path.display()
                )));
            }
        }
        let iop = h0.orientation.ok_or_else(|| {
            at(
                h0,
                "no ImageOrientationPatient (0020,0037) (top level, Detector Information Sequence or Plane Orientation Sequence): the slices cannot be placed in the patient; export the reconstructed volume with its Image Plane module".into(),
            )
        })?;
        let row = [iop[0], iop[1], iop[2]];
        let col = [iop[3], iop[4], iop[5]];
        if (norm(row) - 1.0).abs() > 1e-3
            || (norm(col) - 1.0).abs() > 1e-3
            || dot(row, col).abs() > 1e-3
        {
            return Err(at(
                h0,
                format!(
                    "ImageOrientationPatient (0020,0037) {iop:?} is not two orthonormal vectors"
                ),
            ));
        }
        let normal = cross(row, col);
        let ps = h0.pixel_spacing.ok_or_else(|| {
            at(
                h0,
                "no PixelSpacing (0028,0030) (top level or Pixel Measures Sequence): the voxel size is unknown; export with the Image Plane module".into(),
            )
        })?;
        if !(ps[0] > 0.0 && ps[1] > 0.0) {
            return Err(at(
                h0,
                format!("PixelSpacing (0028,0030) {ps:?} is not positive"),
            ));
        }
        // PixelSpacing is (between rows, between columns): rows step along j.
        let (sx, sy) = (ps[1], ps[0]);

        let multi: Vec<&DicomHeader> = self.files.iter().filter(|h| h.frames > 1).collect();
        if let Some(&h) = multi.first() {
            if self.files.len() > 1 {
                return Err(err(format!(
                    "{} files in a series holding a multi-frame image ({}): one reconstruction per series expected; export each reconstruction as its own series",
                    self.files.len(),
                    h.path.display()
                )));
            }
            if h.enhanced {
                // Enhanced multi-frame: every frame has its own plane position.
                if h.frame_positions.len() != h.frames {
                    return Err(at(
                        h,
                        format!(
                            "Per-frame Functional Groups Sequence (5200,9230) has {} item(s) for NumberOfFrames {}: the frames cannot be placed",
                            h.frame_positions.len(),
                            h.frames
                        ),
                    ));
                }
                let mut entries = Vec::with_capacity(h.frames);
                for (fr, p) in h.frame_positions.iter().enumerate() {
                    let p = p.ok_or_else(|| {
                        at(
                            h,
                            format!(
                                "frame {}: no ImagePositionPatient in the Plane Position Sequence (0020,9113), per-frame or shared",
                                fr + 1
                            ),
                        )
                    })?;
                    entries.push((p, 0, fr));
                }
                return self.stack(entries, h, [row, col, normal], [sx, sy], cfg);
            }
            let slot = self.nm_frame_slots(h)?;
            let dz = h
                .spacing_between_slices
                .or(h.slice_thickness)
                .ok_or_else(|| {
                    at(
                        h,
                        "multi-frame image without SpacingBetweenSlices (0018,0088) or SliceThickness (0018,0050): the slice distance is unknown".into(),
                    )
                })?;
            if dz == 0.0 {
                return Err(at(h, "SpacingBetweenSlices (0018,0088) is 0".into()));
            }
            let origin = h.position.ok_or_else(|| {
                at(
                    h,
                    "no ImagePositionPatient (0020,0032) (top level or Detector Information Sequence): the volume cannot be placed in the patient".into(),
                )
            })?;
            // Frames are stacked along the normal; a negative spacing means the other way.
            let dir_z = if dz > 0.0 { normal } else { normal.map(|v| -v) };
            let geometry = Geometry {
                dims: [h.columns, h.rows, h.frames],
                spacing: [sx, sy, dz.abs()],
                origin,
                direction: [row, col, dir_z],
            };
            geometry.validate().map_err(|e| err(e.to_string()))?;
            return Ok(SliceMap {
                geometry,
                slices: slot.into_iter().map(|fr| (0, fr)).collect(),
            });
        }

        // One slice per file.
        let mut entries = Vec::with_capacity(self.files.len());
        for (idx, h) in self.files.iter().enumerate() {
            let o = h.orientation.ok_or_else(|| {
                at(
                    h,
                    "no ImageOrientationPatient (0020,0037): the slice cannot be placed".into(),
                )
            })?;
            if o.iter().zip(iop.iter()).any(|(a, b)| (a - b).abs() > 1e-4) {
                return Err(at(
                    h,
                    format!(
                        "ImageOrientationPatient (0020,0037) differs from the rest of the series ({})",
                        h0.path.display()
                    ),
                ));
            }
            let p = h.position.ok_or_else(|| {
                at(
                    h,
                    "no ImagePositionPatient (0020,0032): the slice cannot be placed".into(),
                )
            })?;
            if h.pixel_spacing != h0.pixel_spacing {
                return Err(at(
                    h,
                    format!(
                        "PixelSpacing (0028,0030) differs from the rest of the series ({})",
                        h0.path.display()
                    ),
                ));
            }
            entries.push((p, idx, 0));
        }
        self.stack(entries, h0, [row, col, normal], [sx, sy], cfg)
    }

    /// NM multi-frame (PS3.3 C.8.4.8): which frame holds which slice, from the
    /// Slice Vector when there is one; several energy windows or detectors in
    /// one reconstruction are refused (the volume would mix them).
    fn nm_frame_slots(&self, h: &DicomHeader) -> Result<Vec<usize>> {
        let at = |m: String| Error::series(&self.uid, format!("{}: {m}", h.path.display()));
        let distinct = |v: &[i64]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
        if distinct(&h.energy_window_vector) > 1 {
            return Err(at(format!(
                "EnergyWindowVector (0054,0010) names {} energy windows in one object: export the photopeak reconstruction as its own series",
                distinct(&h.energy_window_vector)
            )));
        }
        if distinct(&h.detector_vector) > 1 {
            return Err(at(format!(
                "DetectorVector (0054,0020) names {} detectors in one object (projections?): export the reconstructed (RECON TOMO) series",
                distinct(&h.detector_vector)
            )));
        }
        if let Some(ns) = h.number_of_slices {
            if ns != h.frames {
                return Err(at(format!(
                    "{} frames but NumberOfSlices (0054,0081) {ns}: several energy windows, detectors or phases in one object are not supported; export one reconstruction per series",
                    h.frames
                )));
            }
        }
        if h.slice_vector.is_empty() {
            return Ok((0..h.frames).collect());
        }
        // slice_vector[frame] is the 1-based slice of that frame; slot[slice] = frame.
        let mut slot = vec![usize::MAX; h.frames];
        if h.slice_vector.len() == h.frames {
            for (fr, &sl) in h.slice_vector.iter().enumerate() {
                match usize::try_from(sl - 1).ok().and_then(|k| slot.get_mut(k)) {
                    Some(x) if *x == usize::MAX => *x = fr,
                    _ => {
                        slot.clear();
                        break;
                    }
                }
            }
        } else {
            slot.clear();
        }
        if slot.len() != h.frames {
            return Err(at(format!(
                "SliceVector (0054,0080) is not each slice 1..{} once ({} values): the frames cannot be ordered",
                h.frames,
                h.slice_vector.len()
            )));
        }
        Ok(slot)
    }

    /// Orders planes (position, file, frame) along the slice normal and checks
    /// them for duplicates, holes, uneven spacing and gantry tilt.
    fn stack(
        &self,
        entries: Vec<(Vec3, usize, usize)>,
        h0: &DicomHeader,
        [row, col, normal]: [Vec3; 3],
        [sx, sy]: [f64; 2],
        cfg: &IngestConfig,
    ) -> Result<SliceMap> {
        let err = |m: String| Error::series(&self.uid, format!("{m}{}", self.unreadable_note()));
        let label = |k: usize| {
            let (_, fi, fr) = entries[k];
            let p = self.files[fi].path.display();
            if self.files[fi].frames > 1 {
                format!("{p} frame {}", fr + 1)
            } else {
                p.to_string()
            }
        };
        let mut order: Vec<(f64, usize)> = entries
            .iter()
            .enumerate()
            .map(|(k, e)| (dot(e.0, normal), k))
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in order.windows(2) {
            if (w[1].0 - w[0].0).abs() < POS_TOL_MM {
                return Err(err(format!(
                    "duplicate slice at {:.3} mm along the normal: {} and {} (two series with the same identity? give them SeriesInstanceUIDs or export them to separate folders)",
                    w[0].0,
                    label(w[0].1),
                    label(w[1].1)
                )));
            }
        }
        let n = order.len();
        let pos = |k: usize| entries[order[k].1].0;
        let origin = pos(0);
        let (dz, dir_z) = if n == 1 {
            let dz = h0
                .spacing_between_slices
                .or(h0.slice_thickness)
                .filter(|v| *v > 0.0)
                .unwrap_or(1.0);
            (dz, normal)
        } else {
            let gaps: Vec<f64> = order.windows(2).map(|w| w[1].0 - w[0].0).collect();
            let mut sorted = gaps.clone();
            sorted.sort_by(f64::total_cmp);
            let typical = sorted[sorted.len() / 2];
            let tol = cfg.slice_spacing_tolerance * typical;
            for (k, &g) in gaps.iter().enumerate() {
                if (g - typical).abs() > tol.max(POS_TOL_MM) {
                    let ratio = g / typical;
                    let msg = if (ratio - ratio.round()).abs() * typical <= tol.max(POS_TOL_MM)
                        && ratio.round() >= 2.0
                    {
                        format!(
                            "{} slice(s) missing between {:.2} and {:.2} mm along the normal (gap {:.3} mm, spacing {:.3} mm)",
                            ratio.round() as i64 - 1,
                            order[k].0,
                            order[k + 1].0,
                            g,
                            typical
                        )
                    } else {
                        format!(
                            "non-uniform slice spacing: gap of {:.3} mm between {:.2} and {:.2} mm, typical {:.3} mm",
                            g, order[k].0, order[k + 1].0, typical
                        )
                    };
                    return Err(err(msg));
                }
            }
            let last = pos(n - 1);
            let step = [
                (last[0] - origin[0]) / (n - 1) as f64,
                (last[1] - origin[1]) / (n - 1) as f64,
                (last[2] - origin[2]) / (n - 1) as f64,
            ];
            let len = norm(step);
            let cos = (dot(step, normal) / len).clamp(-1.0, 1.0);
            let angle = cos.acos().to_degrees();
            if angle > cfg.max_tilt_deg {
                return Err(err(format!(
                    "gantry tilt of {angle:.2} degrees (slice positions do not follow the slice normal): resample the series on the console, or raise ingest.max_tilt_deg"
                )));
            }
            (dot(step, normal), normal)
        };
        let geometry = Geometry {
            dims: [h0.columns, h0.rows, n],
            spacing: [sx, sy, dz],
            origin,
            direction: [row, col, dir_z],
        };
        geometry.validate().map_err(|e| err(e.to_string()))?;
        Ok(SliceMap {
            geometry,
            slices: order
                .iter()
                .map(|&(_, k)| (entries[k].1, entries[k].2))
                .collect(),
        })
    }

    /// The row `organdose inspect` prints. Geometry problems are reported in
    /// `problem`, not as an error, so one bad series does not hide the others.
    pub fn info(&self, cfg: &IngestConfig) -> Result<SeriesInfo> {
        let h0 = self.first()?;
        // Contours and segmentations (a physicist's corrections, organdose's own
        // outputs) are not images: nothing to lay out on a grid, and no problem.
        let (geom, problem) = if is_contour_object(&h0.modality, &h0.sop_class_uid) {
            (None, None)
        } else {
            match self.slice_map(cfg) {
                Ok(m) => (Some(m.geometry), None),
                Err(e) => (None, Some(e.to_string())),
            }
        };
        let acquisition = self.files.iter().filter_map(|h| h.acquisition).fold(
            None,
            |acc: Option<DateTime>, t| {
                Some(match acc {
                    Some(a) if a <= t => a,
                    _ => t,
                })
            },
        );
        Ok(SeriesInfo {
            source: self.source_label(),
            modality: h0.modality.clone(),
            patient_id: h0.patient_id.clone(),
            study_uid: h0.study_uid.clone(),
            series_uid: self.uid.clone(),
            frame_of_reference_uid: h0.frame_of_reference_uid.clone(),
            series_description: h0.series_description.clone(),
            files: self.files.len(),
            dims: geom
                .as_ref()
                .map(|g| g.dims)
                .unwrap_or([h0.columns, h0.rows, 0]),
            spacing_mm: geom.as_ref().map(|g| g.spacing).unwrap_or([0.0; 3]),
            origin_mm: geom.as_ref().map(|g| g.origin).unwrap_or([0.0; 3]),
            direction: geom.as_ref().map(|g| g.direction).unwrap_or([[0.0; 3]; 3]),
            orientation: geom
                .as_ref()
                .map(|g| g.orientation_code())
                .unwrap_or_default(),
            acquisition_datetime: acquisition,
            units: h0.value_unit(),
            radiopharmaceutical: h0.radiopharmaceutical.clone(),
            contrast_agent: h0.contrast_agent.clone(),
            problem,
            identity: self.identity.clone(),
        })
    }

    fn source_label(&self) -> String {
        let dirs: std::collections::BTreeSet<_> = self
            .files
            .iter()
            .filter_map(|h| h.path.parent().map(|p| p.display().to_string()))
            .collect();
        match dirs.len() {
            1 => dirs.into_iter().next().unwrap_or_default(),
            n => format!("{n} folders"),
        }
    }

    /// Reads the volume: HU for CT, the unit of [`DicomHeader::value_unit`] for NM.
    pub fn read(&self, cfg: &IngestConfig) -> Result<Volume<f32>> {
        let map = self.slice_map(cfg)?;
        let g = &map.geometry;
        let plane = g.dims[0] * g.dims[1];
        let mut data = vec![0f32; g.len()];
        // Files hold one slice each, or (multi-frame) every slice: decode each file once.
        let mut by_file: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for (k, &(fi, fr)) in map.slices.iter().enumerate() {
            by_file.entry(fi).or_default().push((k, fr));
        }
        for (fi, slots) in by_file {
            let h = &self.files[fi];
            let values = read_frames(h)?;
            for (k, fr) in slots {
                let (slope, icpt) = h.frame_transform(fr);
                let src = values.get(fr * plane..(fr + 1) * plane).ok_or_else(|| {
                    Error::dicom(&h.path, format!("frame {fr} missing from pixel data"))
                })?;
                for (dst, &v) in data[k * plane..(k + 1) * plane].iter_mut().zip(src) {
                    *dst = (v * slope + icpt) as f32;
                }
            }
        }
        let vol = Volume::new(g.clone(), data)?;
        vol.check_finite(&format!("series {}", self.uid))?;
        Ok(vol)
    }
}

/// Decodes every frame of a file as stored values (no modality LUT: the caller
/// applies the right transform).
fn read_frames(h: &DicomHeader) -> Result<Vec<f64>> {
    let path = &h.path;
    // The file may have changed since its header was read: walk it again.
    let bounds = check_element_lengths(path)?;
    DicomHeader {
        bounds,
        ..h.clone()
    }
    .check_pixel_budget()?;
    let file = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| Error::dicom_from(path, "", e))?;
    if file.get(tags::PIXEL_DATA).is_none() {
        return Err(Error::dicom(path, "no pixel data (7FE0,0010)"));
    }
    // dicom-pixeldata's decoders panic on some corrupt streams (an RLE segment
    // that decodes short indexes past its buffer, rle_lossless.rs:119, found by
    // fuzz/): a bad file is an input fault, so the panic becomes its error here
    // rather than reaching the appliance's worker.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_frames(h, &file)))
        .unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::dicom(
                path,
                format!("pixel data: the decoder failed ({why})"),
            ))
        })
}

/// RLE Lossless (PS3.5 Annex G) headers checked before dicom-pixeldata reads
/// them: its `read_rle_header` sizes a vector from the header's segment
/// count, so a crafted count of 2^32 - 1 asked 16 GiB and aborted the process
/// (found by fuzz/). A valid header has 1-15 segments whose offsets lie
/// inside the fragment (G.3.1).
pub fn check_rle_headers(path: &Path, file: &DefaultDicomObject) -> Result<()> {
    if file.meta().transfer_syntax().trim_end_matches('\0') != uids::RLE_LOSSLESS {
        return Ok(());
    }
    let Ok(elem) = file.element(tags::PIXEL_DATA) else {
        return Ok(());
    };
    let Some(fragments) = elem.value().fragments() else {
        return Err(Error::dicom(path, "RLE pixel data is not encapsulated"));
    };
    for (i, f) in fragments.iter().enumerate() {
        let bad = |why: String| Error::dicom(path, format!("RLE fragment {i}: {why}"));
        if f.len() < 64 {
            return Err(bad(format!(
                "{} bytes, shorter than its 64-byte header",
                f.len()
            )));
        }
        let word =
            |k: usize| u32::from_le_bytes([f[4 * k], f[4 * k + 1], f[4 * k + 2], f[4 * k + 3]]);
        let n = word(0);
        if !(1..=15).contains(&n) {
            return Err(bad(format!(
                "header declares {n} segments (1 to 15 allowed)"
            )));
        }
        for k in 1..=n as usize {
            let off = word(k) as usize;
            if off < 64 || off > f.len() {
                return Err(bad(format!(
                    "segment {k} starts at byte {off}, outside the fragment's {} bytes",
                    f.len()
                )));
            }
        }
    }
    Ok(())
}

/// Decodes and converts the pixel data of an opened file (see [`read_frames`]).
fn decode_frames(h: &DicomHeader, file: &DefaultDicomObject) -> Result<Vec<f64>> {
    let path = &h.path;
    check_rle_headers(path, file)?;
    let decoded = file
        .decode_pixel_data()
        .map_err(|e| Error::dicom_from(path, "pixel data", e))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(Error::dicom(
            path,
            format!(
                "{} samples per pixel: only greyscale images can be volumes",
                decoded.samples_per_pixel()
            ),
        ));
    }
    let expected = h.rows * h.columns * h.frames;
    let raw_len = decoded.data().len();
    let need = expected * (decoded.bits_allocated() as usize).div_ceil(8);
    if raw_len < need {
        return Err(Error::dicom(
            path,
            format!("truncated pixel data: {raw_len} bytes, {need} needed"),
        ));
    }
    let opts = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    let v: Vec<f64> = decoded
        .to_vec_with_options(&opts)
        .map_err(|e| Error::dicom_from(path, "pixel data", e))?;
    if v.len() < expected {
        return Err(Error::dicom(
            path,
            format!("pixel data holds {} values, {expected} expected", v.len()),
        ));
    }
    Ok(v)
}

/// Reads the one series found under `path` (a file or folder). Several series
/// there is an error listing them, unless `series_uid` picks one.
pub fn read_single_series(
    path: &Path,
    series_uid: Option<&str>,
    cfg: &IngestConfig,
) -> Result<(DicomSeries, Volume<f32>)> {
    let scan = scan(path)?;
    let series = match series_uid {
        Some(uid) => scan
            .series
            .into_iter()
            .find(|s| s.uid == uid)
            .ok_or_else(|| Error::input(format!("{}: no series {uid}", path.display())))?,
        None => {
            if scan.series.len() > 1 {
                let list: Vec<String> = scan
                    .series
                    .iter()
                    .map(|s| {
                        let d = s
                            .files
                            .first()
                            .map(|h| h.series_description.as_str())
                            .unwrap_or("");
                        format!("  {} ({d}, {} files)", s.uid, s.files.len())
                    })
                    .collect();
                return Err(Error::input(format!(
                    "{}: {} series found; pick one with --series UID:\n{}",
                    path.display(),
                    scan.series.len(),
                    list.join("\n")
                )));
            }
            match scan.series.into_iter().next() {
                Some(s) => s,
                None => {
                    let why = scan
                        .rejected
                        .first()
                        .map(|(p, r)| format!(" ({}: {r})", p.display()))
                        .unwrap_or_default();
                    return Err(Error::input(format!(
                        "{}: no readable DICOM series{why}",
                        path.display()
                    )));
                }
            }
        }
    };
    let vol = series.read(cfg)?;
    Ok((series, vol))
}
