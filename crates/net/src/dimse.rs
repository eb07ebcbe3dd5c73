//! The few DIMSE messages the box speaks (PS3.7 9.3): C-ECHO and C-STORE, request
//! and response. Command sets are always Implicit VR Little Endian; dicom-object
//! encodes them and computes the command group length.

use crate::error::{Error, FaultKind, Result};
use dicom_core::{dicom_value, DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

pub(crate) const C_STORE_RQ: u16 = 0x0001;
pub(crate) const C_STORE_RSP: u16 = 0x8001;
pub(crate) const C_ECHO_RQ: u16 = 0x0030;
pub(crate) const C_ECHO_RSP: u16 = 0x8030;
/// CommandDataSetType when no data set follows.
pub(crate) const NO_DATA_SET: u16 = 0x0101;

pub use dicom_dictionary_std::uids::VERIFICATION;

/// Status codes (PS3.4 B.2.3, PS3.7 C).
pub const SUCCESS: u16 = 0x0000;
/// Refused: out of resources (a write error, a full disk).
pub const OUT_OF_RESOURCES: u16 = 0xA700;
/// Error: data set does not match SOP class (or the command's instance UID).
pub(crate) const DATA_SET_MISMATCH: u16 = 0xA900;
/// Error: cannot understand.
pub(crate) const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Refused: SOP class not supported.
pub(crate) const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;

/// Whether a C-STORE response status means the peer has the instance: success
/// or one of the storage warnings (coercion, elements discarded, mismatch).
pub fn stored(status: u16) -> bool {
    status == SUCCESS || status == 0x0001 || (status & 0xF000) == 0xB000
}

/// The fields of a command set the box looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub responded_id: u16,
    pub sop_class: String,
    pub sop_instance: String,
    pub data_set_type: u16,
    pub status: u16,
    pub error_comment: String,
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

fn short(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u16> {
    obj.element(tag).ok().and_then(|e| e.to_int::<u16>().ok())
}

/// Parses a command set (the bytes of the command PDVs).
pub fn parse(bytes: &[u8]) -> Result<Command> {
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| Error::library(FaultKind::Input, "DIMSE command set not readable", e))?;
    let field = short(&obj, tags::COMMAND_FIELD)
        .ok_or_else(|| Error::input("DIMSE command set without Command Field (0000,0100)"))?;
    Ok(Command {
        field,
        message_id: short(&obj, tags::MESSAGE_ID).unwrap_or(0),
        responded_id: short(&obj, tags::MESSAGE_ID_BEING_RESPONDED_TO).unwrap_or(0),
        sop_class: text(&obj, tags::AFFECTED_SOP_CLASS_UID),
        sop_instance: text(&obj, tags::AFFECTED_SOP_INSTANCE_UID),
        data_set_type: short(&obj, tags::COMMAND_DATA_SET_TYPE).unwrap_or(NO_DATA_SET),
        status: short(&obj, tags::STATUS).unwrap_or(0xFFFF),
        error_comment: text(&obj, tags::ERROR_COMMENT),
    })
}

fn encode(elements: Vec<DataElement<InMemDicomObject>>) -> Result<Vec<u8>> {
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| Error::library(FaultKind::Internal, "DIMSE command not encoded", e))?;
    Ok(out)
}

fn uid(tag: dicom_core::Tag, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, dicom_value!(Str, v))
}

fn us(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, dicom_value!(U16, [v]))
}

pub(crate) fn echo_rsp(message_id: u16) -> Result<Vec<u8>> {
    encode(vec![
        uid(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION),
        us(tags::COMMAND_FIELD, C_ECHO_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, SUCCESS),
    ])
}

pub(crate) fn store_rsp(
    message_id: u16,
    sop_class: &str,
    sop_instance: &str,
    status: u16,
    comment: &str,
) -> Result<Vec<u8>> {
    let mut e = vec![
        uid(tags::AFFECTED_SOP_CLASS_UID, sop_class),
        us(tags::COMMAND_FIELD, C_STORE_RSP),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status),
        uid(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ];
    if status != SUCCESS && !comment.is_empty() {
        // Error Comment is LO: at most 64 characters.
        let c: String = comment.chars().take(64).collect();
        e.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            dicom_value!(Str, c),
        ));
    }
    encode(e)
}

pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Result<Vec<u8>> {
    encode(vec![
        uid(tags::AFFECTED_SOP_CLASS_UID, sop_class),
        us(tags::COMMAND_FIELD, C_STORE_RQ),
        us(tags::MESSAGE_ID, message_id),
        // Priority: medium.
        us(tags::PRIORITY, 0),
        // A data set follows (any value but 0x0101).
        us(tags::COMMAND_DATA_SET_TYPE, 0x0000),
        uid(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_and_response_round_trip() {
        let rq = parse(&store_rq(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4").unwrap()).unwrap();
        assert_eq!(
            (
                rq.field,
                rq.message_id,
                rq.sop_class.as_str(),
                rq.sop_instance.as_str()
            ),
            (C_STORE_RQ, 7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")
        );
        assert_ne!(rq.data_set_type, NO_DATA_SET);
        let rsp =
            parse(&store_rsp(7, "1.2", "1.2.3.4", OUT_OF_RESOURCES, "disk full").unwrap()).unwrap();
        assert_eq!(
            (rsp.field, rsp.responded_id, rsp.status),
            (C_STORE_RSP, 7, OUT_OF_RESOURCES)
        );
        assert_eq!(rsp.error_comment, "disk full");
        assert!(!stored(rsp.status));
        assert!(stored(SUCCESS) && stored(0xB007));
        assert!(parse(b"\x01\x02").is_err());
    }
}
