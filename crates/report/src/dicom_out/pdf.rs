//! Encapsulated PDF (PS3.3 A.45.1) of report.pdf, so the report is filed in the
//! PACS beside the images and doses it describes.

use super::common::{base_object, write_part10, NewSeries, ENCAPSULATED_PDF_STORAGE};
use super::source::SourceSeries;
use crate::error::Result;
use crate::io::dicom_write::{put_empty, put_seq, put_str};
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use std::path::Path;

/// Writes `pdf` (the bytes of a PDF file) into `path`, in the study of `src`.
pub fn write_encapsulated(
    pdf: &[u8],
    src: &SourceSeries,
    title: &str,
    series_number: i64,
    path: &Path,
) -> Result<String> {
    let (mut o, sop) = base_object(
        src,
        ENCAPSULATED_PDF_STORAGE,
        &NewSeries {
            modality: "DOC",
            number: series_number,
            description: title.to_string(),
        },
    );
    super::common::put_content_date(&mut o);
    // SC Equipment: made on a workstation.
    put_str(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
    put_empty(&mut o, tags::ACQUISITION_DATE_TIME, VR::DT);
    // Patient name and ID are printed on every page.
    put_str(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put_str(&mut o, tags::DOCUMENT_TITLE, VR::ST, title);
    put_seq(&mut o, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![]);
    put_str(
        &mut o,
        tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT,
        VR::LO,
        "application/pdf",
    );
    o.put(DataElement::new(
        tags::ENCAPSULATED_DOCUMENT_LENGTH,
        VR::UL,
        PrimitiveValue::from(pdf.len() as u32),
    ));
    let mut bytes = pdf.to_vec();
    // OB values have even length; the padding byte sits after the PDF's %%EOF,
    // which is why EncapsulatedDocumentLength gives the true length.
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    o.put(DataElement::new(
        tags::ENCAPSULATED_DOCUMENT,
        VR::OB,
        PrimitiveValue::U8(C::from_vec(bytes)),
    ));
    write_part10(o, path, false)?;
    Ok(sop)
}
