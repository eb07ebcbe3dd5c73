//! Writes DICOM Part 10 files byte by byte (explicit VR little endian), so a
//! test can build a file whose header lies: a length past the end, a frame
//! count the pixel data does not hold.
#![allow(dead_code)]

pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const NM_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.20";

/// VRs with a 4-byte length in explicit VR (PS3.5 7.1.2).
fn long_vr(vr: &str) -> bool {
    matches!(
        vr,
        "OB" | "OD" | "OF" | "OL" | "OV" | "OW" | "SQ" | "SV" | "UC" | "UN" | "UR" | "UT" | "UV"
    )
}

/// Pads a value to even length as DICOM wants (space for text, NUL for UI/bytes).
fn pad(vr: &str, mut v: Vec<u8>) -> Vec<u8> {
    if v.len() % 2 == 1 {
        v.push(if matches!(vr, "UI" | "OB" | "OW") {
            0
        } else {
            b' '
        });
    }
    v
}

/// One element's bytes; `declared` overrides the length field.
pub fn element(group: u16, elem: u16, vr: &str, value: &[u8], declared: Option<u32>) -> Vec<u8> {
    let v = pad(vr, value.to_vec());
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr.as_bytes());
    let len = declared.unwrap_or(v.len() as u32);
    if long_vr(vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        out.extend_from_slice(&(len as u16).to_le_bytes());
    }
    out.extend_from_slice(&v);
    out
}

/// A Part 10 file: preamble, meta group, then `body` (already encoded elements,
/// in tag order).
pub fn part10(sop_class: &str, ts: &str, body: &[u8]) -> Vec<u8> {
    let mut meta = Vec::new();
    meta.extend(element(0x0002, 0x0001, "OB", &[0, 1], None));
    meta.extend(element(0x0002, 0x0002, "UI", sop_class.as_bytes(), None));
    meta.extend(element(0x0002, 0x0003, "UI", b"1.2.3.4.5.6.7", None));
    meta.extend(element(0x0002, 0x0010, "UI", ts.as_bytes(), None));
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend(element(
        0x0002,
        0x0000,
        "UL",
        &(meta.len() as u32).to_le_bytes(),
        None,
    ));
    out.extend(meta);
    out.extend_from_slice(body);
    out
}

/// The header of an NM multi-frame SPECT (Bq/mL), `frames` declared, `cols` x
/// `rows` 16-bit pixels; pixel data of `pixel_bytes` bytes appended.
pub fn nm_multiframe(frames: u32, cols: u16, rows: u16, pixel_bytes: usize) -> Vec<u8> {
    let s = |g, e, vr: &str, v: &str| element(g, e, vr, v.as_bytes(), None);
    let us = |g, e, v: u16| element(g, e, "US", &v.to_le_bytes(), None);
    let mut b = Vec::new();
    b.extend(s(0x0008, 0x0016, "UI", NM_STORAGE));
    b.extend(s(0x0008, 0x0018, "UI", "1.2.3.4.5.6.7"));
    b.extend(s(0x0008, 0x0022, "DA", "20260301"));
    b.extend(s(0x0008, 0x0032, "TM", "090000"));
    b.extend(s(0x0008, 0x0060, "CS", "NM"));
    b.extend(s(0x0010, 0x0020, "LO", "HOSTILE"));
    b.extend(s(0x0018, 0x0088, "DS", "4.0"));
    b.extend(s(0x0020, 0x000D, "UI", "1.2.3.4.1"));
    b.extend(s(0x0020, 0x000E, "UI", "1.2.3.4.2"));
    b.extend(s(0x0020, 0x0032, "DS", "0\\0\\0"));
    b.extend(s(0x0020, 0x0037, "DS", "1\\0\\0\\0\\1\\0"));
    b.extend(us(0x0028, 0x0002, 1));
    b.extend(s(0x0028, 0x0004, "CS", "MONOCHROME2"));
    b.extend(s(0x0028, 0x0008, "IS", &frames.to_string()));
    b.extend(us(0x0028, 0x0010, rows));
    b.extend(us(0x0028, 0x0011, cols));
    b.extend(s(0x0028, 0x0030, "DS", "4\\4"));
    b.extend(us(0x0028, 0x0100, 16));
    b.extend(us(0x0028, 0x0101, 16));
    b.extend(us(0x0028, 0x0102, 15));
    b.extend(us(0x0028, 0x0103, 0));
    b.extend(s(0x0054, 0x1001, "CS", "BQML"));
    b.extend(element(0x7FE0, 0x0010, "OW", &vec![0u8; pixel_bytes], None));
    part10(NM_STORAGE, EXPLICIT_LE, &b)
}
