//! DICOM writers: CT Image Storage (one file per slice) and NM Image Storage
//! (multi-frame reconstructed SPECT in Bq/mL), Explicit VR Little Endian, written
//! atomically. Used by the phantom to produce console-like exports.

use crate::error::{Error, Result};
use crate::volume::{Vec3, Volume};
use crate::write_bytes_atomically;
use dicom_core::value::{DataSetSequence, C};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use std::path::{Path, PathBuf};

// SOP classes from the standard dictionary, not typed out here.
pub use dicom_dictionary_std::uids::{
    CT_IMAGE_STORAGE, NUCLEAR_MEDICINE_IMAGE_STORAGE as NM_IMAGE_STORAGE,
};
/// Implementation class UID of organdose (under the 2.25 UUID-derived root).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.275741864483510678566144889372061815320";

#[derive(Debug, Clone)]
pub struct DicomPatient {
    pub id: String,
    /// DICOM PN, e.g. "PHANTOM^P0001".
    pub name: String,
    /// YYYYMMDD.
    pub birth_date: String,
    /// "M", "F" or "O".
    pub sex: String,
    /// IssuerOfPatientID (0010,0021): the system that assigned `id` (empty: not
    /// written). With the ID it names the patient across visits (treatment cycles).
    pub issuer: String,
}

#[derive(Debug, Clone)]
pub struct DicomStudy {
    pub uid: String,
    pub date: String,
    pub time: String,
    pub description: String,
    pub study_id: String,
    pub accession: String,
}

#[derive(Debug, Clone)]
pub struct DicomSeries {
    pub uid: String,
    pub number: i32,
    pub description: String,
    pub date: String,
    pub time: String,
    pub frame_of_reference_uid: String,
    /// YYYYMMDD and HHMMSS.
    pub acquisition_date: String,
    pub acquisition_time: String,
    pub manufacturer: String,
    pub model: String,
    pub station: String,
    pub body_part: String,
}

#[derive(Debug, Clone)]
pub struct CtInfo {
    pub kvp: f64,
    pub tube_current_ma: i32,
    pub exposure_mas: i32,
    pub kernel: String,
    /// Contrast agent for a contrast-enhanced series (ContrastBolusAgent).
    pub contrast_agent: Option<String>,
    pub window_center: f64,
    pub window_width: f64,
}

#[derive(Debug, Clone)]
pub struct NmInfo {
    pub radiopharmaceutical: String,
    /// (CodeValue, CodingSchemeDesignator, CodeMeaning) of the radionuclide.
    pub nuclide_code: (String, String, String),
    pub total_dose_bq: f64,
    pub half_life_s: f64,
    /// YYYYMMDDHHMMSS
    pub start_datetime: String,
    /// HHMMSS
    pub start_time: String,
    /// (name, lower keV, upper keV)
    pub energy_windows: Vec<(String, f64, f64)>,
    pub projections: u32,
    pub frame_duration_ms: u32,
    pub collimator: String,
    pub reconstruction_diameter_mm: f64,
}

/// DICOM decimal string (at most 16 characters).
pub fn ds(x: f64) -> String {
    if !x.is_finite() {
        return "0".into();
    }
    for prec in (0..=8).rev() {
        let s = format!("{x:.prec$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 16 {
            return if s == "-0" { "0".into() } else { s };
        }
    }
    let s = format!("{x:.6E}");
    if s.len() <= 16 {
        s
    } else {
        format!("{x:.3E}")
    }
}

pub(crate) fn ds_multi(xs: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(xs.iter().map(|&x| ds(x)).collect::<Vec<_>>().into())
}

pub fn put_str(o: &mut InMemDicomObject, tag: Tag, vr: VR, s: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(s)));
}
pub fn put_strs(o: &mut InMemDicomObject, tag: Tag, vr: VR, s: &[&str]) {
    o.put(DataElement::new(
        tag,
        vr,
        PrimitiveValue::Strs(s.iter().map(|x| x.to_string()).collect::<Vec<_>>().into()),
    ));
}
pub fn put_ds(o: &mut InMemDicomObject, tag: Tag, xs: &[f64]) {
    o.put(DataElement::new(tag, VR::DS, ds_multi(xs)));
}
pub fn put_is(o: &mut InMemDicomObject, tag: Tag, v: i64) {
    put_str(o, tag, VR::IS, &v.to_string());
}
pub fn put_us(o: &mut InMemDicomObject, tag: Tag, v: u16) {
    o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}
pub fn put_empty(o: &mut InMemDicomObject, tag: Tag, vr: VR) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
}
pub fn put_seq(o: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}
pub fn code_item(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    put_str(&mut c, tags::CODE_VALUE, VR::SH, value);
    put_str(&mut c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put_str(&mut c, tags::CODE_MEANING, VR::LO, meaning);
    c
}

/// Patient, study, series, frame of reference, equipment and SOP common modules.
fn common(
    o: &mut InMemDicomObject,
    p: &DicomPatient,
    st: &DicomStudy,
    se: &DicomSeries,
    modality: &str,
    sop_class: &str,
    sop_uid: &str,
) {
    put_str(o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    put_str(o, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(o, tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    put_str(o, tags::STUDY_DATE, VR::DA, &st.date);
    put_str(o, tags::SERIES_DATE, VR::DA, &se.date);
    put_str(o, tags::ACQUISITION_DATE, VR::DA, &se.acquisition_date);
    put_str(o, tags::CONTENT_DATE, VR::DA, &se.acquisition_date);
    put_str(
        o,
        tags::ACQUISITION_DATE_TIME,
        VR::DT,
        &format!("{}{}", se.acquisition_date, se.acquisition_time),
    );
    put_str(o, tags::STUDY_TIME, VR::TM, &st.time);
    put_str(o, tags::SERIES_TIME, VR::TM, &se.time);
    put_str(o, tags::ACQUISITION_TIME, VR::TM, &se.acquisition_time);
    put_str(o, tags::CONTENT_TIME, VR::TM, &se.acquisition_time);
    put_str(o, tags::ACCESSION_NUMBER, VR::SH, &st.accession);
    put_str(o, tags::MODALITY, VR::CS, modality);
    put_str(o, tags::MANUFACTURER, VR::LO, &se.manufacturer);
    put_str(o, tags::INSTITUTION_NAME, VR::LO, "organdose phantom");
    put_empty(o, tags::REFERRING_PHYSICIAN_NAME, VR::PN);
    put_str(o, tags::STATION_NAME, VR::SH, &se.station);
    put_str(o, tags::STUDY_DESCRIPTION, VR::LO, &st.description);
    put_str(o, tags::SERIES_DESCRIPTION, VR::LO, &se.description);
    put_str(o, tags::MANUFACTURER_MODEL_NAME, VR::LO, &se.model);
    put_str(o, tags::PATIENT_NAME, VR::PN, &p.name);
    put_str(o, tags::PATIENT_ID, VR::LO, &p.id);
    if !p.issuer.is_empty() {
        put_str(o, tags::ISSUER_OF_PATIENT_ID, VR::LO, &p.issuer);
    }
    put_str(o, tags::PATIENT_BIRTH_DATE, VR::DA, &p.birth_date);
    put_str(o, tags::PATIENT_SEX, VR::CS, &p.sex);
    put_str(o, tags::BODY_PART_EXAMINED, VR::CS, &se.body_part);
    put_str(o, tags::DEVICE_SERIAL_NUMBER, VR::LO, "OD-0001");
    put_str(
        o,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    if modality == "CT" {
        // NM carries PatientOrientationCodeSequence instead.
        put_str(o, tags::PATIENT_POSITION, VR::CS, "HFS");
    }
    put_str(o, tags::STUDY_INSTANCE_UID, VR::UI, &st.uid);
    put_str(o, tags::SERIES_INSTANCE_UID, VR::UI, &se.uid);
    put_str(o, tags::STUDY_ID, VR::SH, &st.study_id);
    put_is(o, tags::SERIES_NUMBER, se.number as i64);
    put_is(o, tags::ACQUISITION_NUMBER, 1);
    put_str(
        o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &se.frame_of_reference_uid,
    );
    put_empty(o, tags::POSITION_REFERENCE_INDICATOR, VR::LO);
}

fn pixel_module(
    o: &mut InMemDicomObject,
    rows: usize,
    cols: usize,
    bits_stored: u16,
    signed: bool,
) {
    put_us(o, tags::SAMPLES_PER_PIXEL, 1);
    put_str(o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_us(o, tags::ROWS, rows as u16);
    put_us(o, tags::COLUMNS, cols as u16);
    put_us(o, tags::BITS_ALLOCATED, 16);
    put_us(o, tags::BITS_STORED, bits_stored);
    put_us(o, tags::HIGH_BIT, bits_stored - 1);
    put_us(o, tags::PIXEL_REPRESENTATION, u16::from(signed));
}

fn finish(o: InMemDicomObject, path: &Path) -> Result<()> {
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name("ORGANDOSE_01"),
        )
        .map_err(|e| Error::dicom_from(path, "", e))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| Error::dicom_from(path, "", e))?;
    write_bytes_atomically(path, &bytes)
}

fn check_grid<T>(vol: &Volume<T>) -> Result<()> {
    vol.geom.validate()?;
    let [nx, ny, _] = vol.geom.dims;
    if nx > u16::MAX as usize || ny > u16::MAX as usize {
        return Err(Error::geometry(format!(
            "{nx}x{ny} slices do not fit DICOM Rows/Columns"
        )));
    }
    Ok(())
}

fn orientation(v: &[Vec3; 3]) -> [f64; 6] {
    [v[0][0], v[0][1], v[0][2], v[1][0], v[1][1], v[1][2]]
}

/// Writes a CT volume (HU) as one file per slice `dir/IM0001.dcm`, ... Stored
/// values are HU + 1024 (unsigned, 12 bits stored, RescaleIntercept -1024). The
/// SOP instance UID of slice k is `<series uid>.<k+1>`. Returns the paths written.
pub fn write_ct_series(
    vol: &Volume<f32>,
    p: &DicomPatient,
    st: &DicomStudy,
    se: &DicomSeries,
    ct: &CtInfo,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    check_grid(vol)?;
    let g = &vol.geom;
    let [nx, ny, nz] = g.dims;
    let mut out = Vec::with_capacity(nz);
    for k in 0..nz {
        let sop = format!("{}.{}", se.uid, k + 1);
        let mut o = InMemDicomObject::new_empty();
        common(&mut o, p, st, se, "CT", CT_IMAGE_STORAGE, &sop);
        put_strs(
            &mut o,
            tags::IMAGE_TYPE,
            VR::CS,
            &["ORIGINAL", "PRIMARY", "AXIAL"],
        );
        if let Some(agent) = &ct.contrast_agent {
            put_str(&mut o, tags::CONTRAST_BOLUS_AGENT, VR::LO, agent);
            put_str(&mut o, tags::CONTRAST_BOLUS_ROUTE, VR::LO, "IV");
        }
        put_ds(&mut o, tags::SLICE_THICKNESS, &[g.spacing[2]]);
        put_ds(&mut o, tags::KVP, &[ct.kvp]);
        put_ds(&mut o, tags::SPACING_BETWEEN_SLICES, &[g.spacing[2]]);
        put_ds(
            &mut o,
            tags::RECONSTRUCTION_DIAMETER,
            &[g.spacing[0] * nx as f64],
        );
        put_str(&mut o, tags::CONVOLUTION_KERNEL, VR::SH, &ct.kernel);
        put_is(&mut o, tags::X_RAY_TUBE_CURRENT, ct.tube_current_ma as i64);
        put_is(&mut o, tags::EXPOSURE, ct.exposure_mas as i64);
        put_is(&mut o, tags::INSTANCE_NUMBER, (k + 1) as i64);
        let ipp = g.index_to_patient([0.0, 0.0, k as f64]);
        put_ds(&mut o, tags::IMAGE_POSITION_PATIENT, &ipp);
        put_ds(
            &mut o,
            tags::IMAGE_ORIENTATION_PATIENT,
            &orientation(&g.direction),
        );
        put_ds(&mut o, tags::SLICE_LOCATION, &[ipp[2]]);
        pixel_module(&mut o, ny, nx, 12, false);
        put_ds(&mut o, tags::PIXEL_SPACING, &[g.spacing[1], g.spacing[0]]);
        put_ds(&mut o, tags::WINDOW_CENTER, &[ct.window_center]);
        put_ds(&mut o, tags::WINDOW_WIDTH, &[ct.window_width]);
        put_ds(&mut o, tags::RESCALE_INTERCEPT, &[-1024.0]);
        put_ds(&mut o, tags::RESCALE_SLOPE, &[1.0]);
        put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "HU");
        let start = k * nx * ny;
        let px: Vec<u16> = vol.data[start..start + nx * ny]
            .iter()
            .map(|&hu| (hu.round() + 1024.0).clamp(0.0, 4095.0) as u16)
            .collect();
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(C::from_vec(px)),
        ));
        let path = dir.join(format!("IM{:04}.dcm", k + 1));
        finish(o, &path)?;
        out.push(path);
    }
    Ok(out)
}

/// Writes a reconstructed SPECT volume (Bq/mL) as one multi-frame NM file. Stored
/// values are unsigned 16-bit with one RescaleSlope for the series (and the same
/// mapping in RealWorldValueMappingSequence, units Bq/ml). Returns the slope.
pub fn write_nm_series(
    vol: &Volume<f32>,
    p: &DicomPatient,
    st: &DicomStudy,
    se: &DicomSeries,
    nm: &NmInfo,
    path: &Path,
) -> Result<f64> {
    check_grid(vol)?;
    let g = &vol.geom;
    let [nx, ny, nz] = g.dims;
    if nz > u16::MAX as usize {
        return Err(Error::geometry(format!("{nz} slices: too many NM frames")));
    }
    let max = vol.data.iter().cloned().fold(0f32, f32::max) as f64;
    let slope = if max > 0.0 { max / 65000.0 } else { 1.0 };
    let sop = format!("{}.1", se.uid);
    let mut o = InMemDicomObject::new_empty();
    common(&mut o, p, st, se, "NM", NM_IMAGE_STORAGE, &sop);
    put_strs(
        &mut o,
        tags::IMAGE_TYPE,
        VR::CS,
        &["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"],
    );
    put_is(&mut o, tags::INSTANCE_NUMBER, 1);
    put_str(&mut o, tags::PATIENT_ORIENTATION, VR::CS, "");
    put_ds(&mut o, tags::SLICE_THICKNESS, &[g.spacing[2]]);
    put_ds(&mut o, tags::SPACING_BETWEEN_SLICES, &[g.spacing[2]]);
    put_ds(
        &mut o,
        tags::RECONSTRUCTION_DIAMETER,
        &[nm.reconstruction_diameter_mm],
    );
    put_str(&mut o, tags::CONVOLUTION_KERNEL, VR::SH, "OSEM 4i8s");
    let ipp = g.index_to_patient([0.0, 0.0, 0.0]);
    let iop = orientation(&g.direction);
    put_ds(&mut o, tags::IMAGE_POSITION_PATIENT, &ipp);
    put_ds(&mut o, tags::IMAGE_ORIENTATION_PATIENT, &iop);
    put_strs(
        &mut o,
        tags::CORRECTED_IMAGE,
        VR::CS,
        &["ATTN", "SCAT", "DECY"],
    );
    put_str(&mut o, tags::DECAY_CORRECTION, VR::CS, "NONE");
    put_str(&mut o, tags::UNITS, VR::CS, "BQML");
    put_str(&mut o, tags::COUNTS_SOURCE, VR::CS, "EMISSION");
    put_is(
        &mut o,
        tags::COUNTS_ACCUMULATED,
        nm.projections as i64 * 200_000,
    );

    // Image pixel + multi-frame.
    pixel_module(&mut o, ny, nx, 16, false);
    put_ds(&mut o, tags::PIXEL_SPACING, &[g.spacing[1], g.spacing[0]]);
    put_is(&mut o, tags::NUMBER_OF_FRAMES, nz as i64);
    o.put(DataElement::new(
        tags::FRAME_INCREMENT_POINTER,
        VR::AT,
        PrimitiveValue::from(tags::SLICE_VECTOR),
    ));
    o.put(DataElement::new(
        tags::SLICE_VECTOR,
        VR::US,
        PrimitiveValue::U16((1..=nz as u16).collect::<Vec<_>>().into()),
    ));
    put_us(&mut o, tags::NUMBER_OF_SLICES, nz as u16);
    put_us(
        &mut o,
        tags::NUMBER_OF_ENERGY_WINDOWS,
        nm.energy_windows.len().max(1) as u16,
    );
    put_us(&mut o, tags::NUMBER_OF_DETECTORS, 1);
    put_us(&mut o, tags::NUMBER_OF_ROTATIONS, 1);
    put_ds(&mut o, tags::RESCALE_INTERCEPT, &[0.0]);
    put_ds(&mut o, tags::RESCALE_SLOPE, &[slope]);
    put_str(&mut o, tags::RESCALE_TYPE, VR::LO, "BQML");

    // Real-world value mapping: stored value x slope = Bq/ml.
    let mut rwv = InMemDicomObject::new_empty();
    put_str(
        &mut rwv,
        tags::LUT_EXPLANATION,
        VR::LO,
        "Activity concentration",
    );
    put_str(&mut rwv, tags::LUT_LABEL, VR::SH, "BQML");
    put_us(&mut rwv, tags::REAL_WORLD_VALUE_FIRST_VALUE_MAPPED, 0);
    put_us(&mut rwv, tags::REAL_WORLD_VALUE_LAST_VALUE_MAPPED, 65535);
    rwv.put(DataElement::new(
        tags::REAL_WORLD_VALUE_INTERCEPT,
        VR::FD,
        PrimitiveValue::from(0.0f64),
    ));
    rwv.put(DataElement::new(
        tags::REAL_WORLD_VALUE_SLOPE,
        VR::FD,
        PrimitiveValue::from(slope),
    ));
    put_seq(
        &mut rwv,
        tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
        vec![code_item("Bq/ml", "UCUM", "Becquerels/milliliter")],
    );
    put_seq(&mut o, tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE, vec![rwv]);

    // NM/PET patient orientation: recumbent, supine, head first.
    let mut orient = code_item("102538003", "SCT", "recumbent");
    put_seq(
        &mut orient,
        tags::PATIENT_ORIENTATION_MODIFIER_CODE_SEQUENCE,
        vec![code_item("40199007", "SCT", "supine")],
    );
    put_seq(
        &mut o,
        tags::PATIENT_ORIENTATION_CODE_SEQUENCE,
        vec![orient],
    );
    put_seq(
        &mut o,
        tags::PATIENT_GANTRY_RELATIONSHIP_CODE_SEQUENCE,
        vec![code_item("102540008", "SCT", "headfirst")],
    );

    // Isotope: energy windows and radiopharmaceutical.
    let windows: Vec<InMemDicomObject> = nm
        .energy_windows
        .iter()
        .map(|(name, lo, hi)| {
            let mut w = InMemDicomObject::new_empty();
            let mut r = InMemDicomObject::new_empty();
            put_ds(&mut r, tags::ENERGY_WINDOW_LOWER_LIMIT, &[*lo]);
            put_ds(&mut r, tags::ENERGY_WINDOW_UPPER_LIMIT, &[*hi]);
            put_seq(&mut w, tags::ENERGY_WINDOW_RANGE_SEQUENCE, vec![r]);
            put_str(&mut w, tags::ENERGY_WINDOW_NAME, VR::SH, name);
            w
        })
        .collect();
    put_seq(&mut o, tags::ENERGY_WINDOW_INFORMATION_SEQUENCE, windows);
    let mut rp = InMemDicomObject::new_empty();
    put_str(
        &mut rp,
        tags::RADIOPHARMACEUTICAL_ROUTE,
        VR::LO,
        "Intravenous route",
    );
    put_str(
        &mut rp,
        tags::RADIOPHARMACEUTICAL,
        VR::LO,
        &nm.radiopharmaceutical,
    );
    put_str(
        &mut rp,
        tags::RADIOPHARMACEUTICAL_START_TIME,
        VR::TM,
        &nm.start_time,
    );
    put_str(
        &mut rp,
        tags::RADIOPHARMACEUTICAL_START_DATE_TIME,
        VR::DT,
        &nm.start_datetime,
    );
    put_ds(&mut rp, tags::RADIONUCLIDE_TOTAL_DOSE, &[nm.total_dose_bq]);
    put_ds(&mut rp, tags::RADIONUCLIDE_HALF_LIFE, &[nm.half_life_s]);
    let (cv, cs, cm) = &nm.nuclide_code;
    put_seq(
        &mut rp,
        tags::RADIONUCLIDE_CODE_SEQUENCE,
        vec![code_item(cv, cs, cm)],
    );
    put_seq(
        &mut o,
        tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE,
        vec![rp],
    );

    // Detector: one item carrying the image plane, as consoles write it.
    let mut det = InMemDicomObject::new_empty();
    put_str(&mut det, tags::COLLIMATOR_GRID_NAME, VR::SH, &nm.collimator);
    put_str(&mut det, tags::COLLIMATOR_TYPE, VR::CS, "PARA");
    put_empty(&mut det, tags::FOCAL_DISTANCE, VR::IS);
    put_ds(&mut det, tags::IMAGE_POSITION_PATIENT, &ipp);
    put_ds(&mut det, tags::IMAGE_ORIENTATION_PATIENT, &iop);
    put_seq(&mut o, tags::DETECTOR_INFORMATION_SEQUENCE, vec![det]);

    // TOMO acquisition.
    let mut rot = InMemDicomObject::new_empty();
    put_ds(&mut rot, tags::START_ANGLE, &[0.0]);
    put_ds(
        &mut rot,
        tags::ANGULAR_STEP,
        &[360.0 / nm.projections.max(1) as f64],
    );
    put_str(&mut rot, tags::ROTATION_DIRECTION, VR::CS, "CW");
    put_ds(&mut rot, tags::SCAN_ARC, &[360.0]);
    put_is(
        &mut rot,
        tags::ACTUAL_FRAME_DURATION,
        nm.frame_duration_ms as i64,
    );
    put_us(
        &mut rot,
        tags::NUMBER_OF_FRAMES_IN_ROTATION,
        nm.projections as u16,
    );
    put_seq(&mut o, tags::ROTATION_INFORMATION_SEQUENCE, vec![rot]);
    put_str(
        &mut o,
        tags::TYPE_OF_DETECTOR_MOTION,
        VR::CS,
        "STEP AND SHOOT",
    );

    let px: Vec<u16> = vol
        .data
        .iter()
        .map(|&v| ((v as f64 / slope).round()).clamp(0.0, 65535.0) as u16)
        .collect();
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(C::from_vec(px)),
    ));
    finish(o, path)?;
    Ok(slope)
}
