//! Pieces every derived object shares: new UIDs, the patient/study/series/equipment
//! attributes, the organ codes, and writing a Part 10 file.

use super::source::SourceSeries;
use crate::error::{Error, Result};
use crate::io::dicom_write::{
    code_item, put_empty, put_is, put_seq, put_str, IMPLEMENTATION_CLASS_UID,
};
use crate::io::write_bytes_atomically;
use crate::organs;
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

// SOP classes from the standard dictionary, not typed out here.
pub use dicom_dictionary_std::uids::{
    ENCAPSULATED_PDF_STORAGE, RT_DOSE_STORAGE, RT_STRUCTURE_SET_STORAGE, SEGMENTATION_STORAGE,
};

/// A new UID under the 2.25 root (PS3.5 B.2: a UUID as one decimal number). The
/// 128 bits are a SHA-256 of the clock, the process, a counter and `salt`, so two
/// objects written in the same nanosecond still differ.
pub(crate) fn new_uid(salt: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(salt.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    // RFC 4122 version 4 / variant bits, as a UUID-derived UID should carry.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// Date (YYYYMMDD) and time (HHMMSS) now, UTC: content and series dates of the
/// objects organdose creates.
pub fn now_da_tm() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}{month:02}{day:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, (rem / 60) % 60, rem % 60),
    )
}

/// What the series of a new object is called and numbered.
#[derive(Debug, Clone)]
pub struct NewSeries {
    pub modality: &'static str,
    pub number: i64,
    pub description: String,
}

/// SOP common, patient, study (copied from `src`), series (new) and equipment
/// attributes. Returns the new object and its SOP instance UID.
pub(crate) fn base_object(
    src: &SourceSeries,
    sop_class: &str,
    series: &NewSeries,
) -> (InMemDicomObject, String) {
    let mut o = InMemDicomObject::new_empty();
    for e in src.patient_study.iter() {
        o.put(e.clone());
    }
    if o.get(tags::SPECIFIC_CHARACTER_SET).is_none() {
        put_str(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    }
    // Type 2 attributes of the patient and study modules: present, empty if unknown.
    for (tag, vr) in [
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::PATIENT_SEX, VR::CS),
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_TIME, VR::TM),
        (tags::STUDY_ID, VR::SH),
        (tags::ACCESSION_NUMBER, VR::SH),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    ] {
        if o.get(tag).is_none() {
            put_empty(&mut o, tag, vr);
        }
    }
    put_str(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &src.study_uid);
    let sop = new_uid(sop_class);
    let (date, time) = now_da_tm();
    put_str(&mut o, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &sop);
    put_str(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &date);
    put_str(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &time);
    put_str(&mut o, tags::MODALITY, VR::CS, series.modality);
    put_str(
        &mut o,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &new_uid(&series.description),
    );
    put_is(&mut o, tags::SERIES_NUMBER, series.number);
    put_str(&mut o, tags::SERIES_DATE, VR::DA, &date);
    put_str(&mut o, tags::SERIES_TIME, VR::TM, &time);
    put_str(
        &mut o,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &series.description,
    );
    put_is(&mut o, tags::INSTANCE_NUMBER, 1);
    put_str(&mut o, tags::MANUFACTURER, VR::LO, "organdose");
    put_str(&mut o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "organdose");
    put_str(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, "0");
    put_str(
        &mut o,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    (o, sop)
}

/// ContentDate/ContentTime (now), for the objects whose IOD has them (image and
/// document modules; an RT Structure Set has its own StructureSetDate/Time).
pub(crate) fn put_content_date(o: &mut InMemDicomObject) {
    let (date, time) = now_da_tm();
    put_str(o, tags::CONTENT_DATE, VR::DA, &date);
    put_str(o, tags::CONTENT_TIME, VR::TM, &time);
}

/// One item of a reference to an image: (ReferencedSOPClassUID, ReferencedSOPInstanceUID).
pub(crate) fn sop_ref(class: &str, instance: &str) -> InMemDicomObject {
    let mut r = InMemDicomObject::new_empty();
    put_str(&mut r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
    put_str(&mut r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance);
    r
}

/// Codes of an organ: (category, type, laterality modifier), SNOMED CT as DICOM
/// CID 7150 / 7151 / 244 list them (kidneys as "Kidney" with a laterality
/// modifier, the way PS3.16 and dcmqi code paired organs).
pub(crate) struct OrganCodes {
    pub category: (&'static str, &'static str),
    pub kind: (&'static str, &'static str),
    pub laterality: Option<(&'static str, &'static str)>,
    /// RT ROI Interpreted Type.
    pub rt_type: &'static str,
    /// Name a console shows.
    pub display: &'static str,
}

const ANATOMY: (&str, &str) = ("123037004", "Anatomical Structure");

pub(crate) fn organ_codes(label: u8) -> OrganCodes {
    let organ = |kind, laterality, display| OrganCodes {
        category: ANATOMY,
        kind,
        laterality,
        rt_type: "ORGAN",
        display,
    };
    match label {
        organs::LIVER => organ(("10200004", "Liver"), None, "Liver"),
        organs::KIDNEY_LEFT => organ(
            ("64033007", "Kidney"),
            Some(("7771000", "Left")),
            "Kidney_L",
        ),
        organs::KIDNEY_RIGHT => organ(
            ("64033007", "Kidney"),
            Some(("24028007", "Right")),
            "Kidney_R",
        ),
        organs::SPLEEN => organ(("78961009", "Spleen"), None, "Spleen"),
        // A lesion: "Morphologically Altered Structure" / "Neoplasm" (CID 7151 /
        // 7159); a gross tumour volume for RT systems.
        _ => OrganCodes {
            category: ("49755003", "Morphologically Altered Structure"),
            kind: ("108369006", "Neoplasm"),
            laterality: None,
            rt_type: "GTV",
            display: "Tumour",
        },
    }
}

/// SNOMED CT code item (scheme SCT).
pub(crate) fn sct(code: (&str, &str)) -> InMemDicomObject {
    code_item(code.0, "SCT", code.1)
}

/// DICOM-defined code item (scheme DCM).
pub(crate) fn code_item_dcm(value: &str, meaning: &str) -> InMemDicomObject {
    code_item(value, "DCM", meaning)
}

/// Type code item with its laterality modifier inside, as SEG and RT ROI
/// identification codes carry it.
pub(crate) fn type_code_with_modifier(c: &OrganCodes) -> InMemDicomObject {
    let mut t = sct(c.kind);
    if let Some(l) = c.laterality {
        put_seq(
            &mut t,
            tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE,
            vec![sct(l)],
        );
    }
    t
}

/// Writes `o` as a Part 10 file. RT objects go as Implicit VR Little Endian: a
/// long contour's ContourData outgrows the 16-bit value length of DS in Explicit VR,
/// and some RT systems still read nothing else.
pub(crate) fn write_part10(o: InMemDicomObject, path: &Path, implicit: bool) -> Result<()> {
    let ts = if implicit {
        uids::IMPLICIT_VR_LITTLE_ENDIAN
    } else {
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    };
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name("ORGANDOSE_01"),
        )
        .map_err(|e| Error::dicom_from(path, "", e))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| Error::dicom_from(path, "", e))?;
    write_bytes_atomically(path, &bytes)
}
