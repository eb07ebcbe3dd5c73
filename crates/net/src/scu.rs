//! Storage SCU: sends DICOM files to one destination in one association, one
//! C-STORE per file, and reports each instance the peer acknowledged (success or
//! a storage warning) as it comes, so the caller can record it before the next.

use super::{dimse, Destination};
use crate::error::{Error, Result};
use dicom_dictionary_std::uids;
use dicom_object::meta::FileMetaTable;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the SCU needs to know of a file before sending it.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: PathBuf,
    pub sop_class: String,
    pub sop_instance: String,
    pub transfer_syntax: String,
    /// Where the data set starts (after preamble, magic and file meta group).
    pub data_offset: u64,
}

fn trim(s: &str) -> String {
    s.trim_end_matches(['\0', ' ']).to_string()
}

/// Reads a file's meta group (not its data set).
pub fn file_info(path: &Path) -> Result<FileInfo> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut preamble = [0u8; 128];
    std::io::Read::read_exact(&mut f, &mut preamble).map_err(|e| Error::io(path, e))?;
    // from_reader checks the 'DICM' magic itself.
    let meta = FileMetaTable::from_reader(&mut f)
        .map_err(|e| Error::dicom_from(path, "file meta group", e))?;
    Ok(FileInfo {
        path: path.to_path_buf(),
        sop_class: trim(meta.media_storage_sop_class_uid()),
        sop_instance: trim(meta.media_storage_sop_instance_uid()),
        transfer_syntax: trim(meta.transfer_syntax()),
        // The group length element itself is 12 bytes (tag, VR, length, UL value).
        data_offset: 132 + 12 + meta.information_group_length as u64,
    })
}

/// The data set bytes of `f` in transfer syntax `ts`: as stored when `ts` is the
/// file's own, re-encoded otherwise (native transfer syntaxes only).
fn data_set(f: &FileInfo, ts: &str) -> Result<Vec<u8>> {
    if ts == f.transfer_syntax {
        let bytes = std::fs::read(&f.path).map_err(|e| Error::io(&f.path, e))?;
        let start = usize::try_from(f.data_offset)
            .ok()
            .filter(|s| *s <= bytes.len())
            .ok_or_else(|| Error::dicom(&f.path, "file meta group longer than the file"))?;
        return Ok(bytes[start..].to_vec());
    }
    use dicom_transfer_syntax_registry::TransferSyntaxIndex;
    let target = TransferSyntaxRegistry
        .get(ts)
        .filter(|t| t.is_codec_free())
        .ok_or_else(|| Error::internal(format!("transfer syntax {ts} cannot be written")))?;
    let obj = dicom_object::open_file(&f.path).map_err(|e| Error::dicom_from(&f.path, "", e))?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, target)
        .map_err(|e| Error::dicom_from(&f.path, &format!("re-encoding to {ts}"), e))?;
    Ok(out)
}

/// Why a send stopped: the association could not be made or broke (the
/// destination's fault, retried), or a file was refused.
fn net(dest: &Destination, what: &str, e: impl std::fmt::Display) -> Error {
    Error::environment(format!("{dest}: {what}: {e}"))
}

/// Sends `files` to `dest` as `calling_ae`. `acknowledged(i)` is called after the
/// peer answered file `i` with success or a warning, before the next file is sent;
/// an error from it stops the send. Returns the first failure, if any: the files
/// before it were acknowledged, the rest not sent.
pub fn send(
    dest: &Destination,
    calling_ae: &str,
    files: &[FileInfo],
    timeout: Duration,
    acknowledged: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut classes: Vec<(String, Vec<String>)> = Vec::new();
    for f in files {
        let own = f.transfer_syntax.clone();
        let mut ts = vec![own];
        for alt in [
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
        ] {
            if !ts.iter().any(|t| t == alt) {
                ts.push(alt.to_string());
            }
        }
        match classes.iter_mut().find(|(c, _)| *c == f.sop_class) {
            Some((_, list)) => {
                for t in ts {
                    if !list.contains(&t) {
                        list.push(t);
                    }
                }
            }
            None => classes.push((f.sop_class.clone(), ts)),
        }
    }
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae)
        .called_ae_title(dest.ae_title.as_str())
        .connection_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout);
    for (class, ts) in &classes {
        options = options.with_presentation_context(
            class.as_str(),
            ts.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        );
    }
    let mut assoc = options
        .establish((dest.host.as_str(), dest.port))
        .map_err(|e| net(dest, "association", e))?;
    let result = (|| -> Result<()> {
        for (i, f) in files.iter().enumerate() {
            let pcs = assoc.presentation_contexts();
            // The context of the file's class that takes its own transfer syntax,
            // else one that takes a native one.
            let pc = pcs
                .iter()
                .filter(|pc| {
                    pc.reason == PresentationContextResultReason::Acceptance
                        && pc.abstract_syntax == f.sop_class
                })
                .min_by_key(|pc| pc.transfer_syntax != f.transfer_syntax)
                .cloned()
                .ok_or_else(|| {
                    net(
                        dest,
                        "refused",
                        format!("SOP class {} of {}", f.sop_class, f.path.display()),
                    )
                })?;
            let bytes = data_set(f, &pc.transfer_syntax)?;
            let message_id = (i % 0xFFFF) as u16 + 1;
            let cmd = dimse::store_rq(message_id, &f.sop_class, &f.sop_instance)?;
            assoc
                .send(&Pdu::PData {
                    data: vec![PDataValue {
                        presentation_context_id: pc.id,
                        value_type: PDataValueType::Command,
                        is_last: true,
                        data: cmd,
                    }],
                })
                .map_err(|e| net(dest, "send", e))?;
            {
                let mut w = assoc.send_pdata(pc.id);
                w.write_all(&bytes).map_err(|e| net(dest, "send", e))?;
                w.finish().map_err(|e| net(dest, "send", e))?;
            }
            let rsp = receive_command(&mut assoc).map_err(|e| net(dest, "response", e))?;
            if rsp.field != dimse::C_STORE_RSP || rsp.responded_id != message_id {
                return Err(net(
                    dest,
                    "response",
                    format!("0x{:04X} for message {}", rsp.field, rsp.responded_id),
                ));
            }
            if !dimse::stored(rsp.status) {
                return Err(net(
                    dest,
                    "C-STORE refused",
                    format!(
                        "status 0x{:04X} for {} {}",
                        rsp.status,
                        f.path.display(),
                        rsp.error_comment
                    ),
                ));
            }
            acknowledged(i)?;
        }
        Ok(())
    })();
    match &result {
        Ok(()) => {
            let _ = assoc.release();
        }
        Err(_) => {
            let _ = assoc.abort();
        }
    }
    result
}

fn receive_command<S>(
    assoc: &mut dicom_ul::ClientAssociation<S>,
) -> std::result::Result<dimse::Command, String>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    let mut buf = Vec::new();
    loop {
        match assoc.receive().map_err(|e| e.to_string())? {
            Pdu::PData { data } => {
                for pdv in data {
                    if pdv.value_type != PDataValueType::Command {
                        return Err("data where a response was expected".into());
                    }
                    buf.extend_from_slice(&pdv.data);
                    if buf.len() > 64 * 1024 {
                        return Err("response too large".into());
                    }
                    if pdv.is_last {
                        return dimse::parse(&buf).map_err(|e| e.to_string());
                    }
                }
            }
            Pdu::AbortRQ { source } => return Err(format!("aborted by the peer ({source:?})")),
            other => return Err(format!("unexpected {}", other.short_description())),
        }
    }
}

/// C-ECHO: whether `dest` answers (for start-up lines and tests).
pub fn echo(dest: &Destination, calling_ae: &str, timeout: Duration) -> Result<()> {
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae)
        .called_ae_title(dest.ae_title.as_str())
        .with_presentation_context(dimse::VERIFICATION, vec![uids::IMPLICIT_VR_LITTLE_ENDIAN])
        .connection_timeout(timeout)
        .read_timeout(timeout)
        .establish((dest.host.as_str(), dest.port))
        .map_err(|e| net(dest, "association", e))?;
    let pc = assoc
        .presentation_contexts()
        .first()
        .map(|pc| pc.id)
        .ok_or_else(|| net(dest, "echo", "verification refused"))?;
    let cmd = {
        use dicom_core::{dicom_value, DataElement, VR};
        use dicom_dictionary_std::tags;
        let obj = dicom_object::InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                dicom_value!(Str, dimse::VERIFICATION),
            ),
            DataElement::new(
                tags::COMMAND_FIELD,
                VR::US,
                dicom_value!(U16, [dimse::C_ECHO_RQ]),
            ),
            DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [1])),
            DataElement::new(
                tags::COMMAND_DATA_SET_TYPE,
                VR::US,
                dicom_value!(U16, [dimse::NO_DATA_SET]),
            ),
        ]);
        let mut out = Vec::new();
        obj.write_dataset_with_ts(
            &mut out,
            &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .map_err(|e| Error::internal(e.to_string()))?;
        out
    };
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data: cmd,
            }],
        })
        .map_err(|e| net(dest, "echo", e))?;
    let rsp = receive_command(&mut assoc).map_err(|e| net(dest, "echo", e))?;
    let _ = assoc.release();
    if rsp.field == dimse::C_ECHO_RSP && rsp.status == dimse::SUCCESS {
        Ok(())
    } else {
        Err(net(dest, "echo", format!("status 0x{:04X}", rsp.status)))
    }
}
