//! A walk over a DICOM file's element headers, before dicom-rs parses it.
//!
//! dicom-parser sizes its buffer from an element's declared length before it
//! reads the value (`buf.resize(len, 0)`), so a 340-byte file declaring a UT of
//! 0xFFFFFFF0 bytes makes it allocate (and touch) 4 GB. This walk reads only the
//! headers (tag, VR, length), seeks over the values and refuses any length that
//! runs past the end of the file, so whatever dicom-rs allocates afterwards is
//! bounded by the file's size. It also measures the pixel data (native length,
//! or fragment count and bytes when encapsulated), so the geometry from the
//! header (Rows x Columns x NumberOfFrames) can be checked against the bytes that
//! are really there before a volume is allocated.
//!
//! Deflated files are walked through the inflater (lengths checked against the
//! bytes the stream really holds); nothing is kept in memory.

use crate::error::{Error, Result};
use crate::fault::DicomFault;
use dicom_dictionary_std::{uids, StandardDataDictionary};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// What the walk found about (7FE0,0010) at the top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PixelDataInfo {
    /// Encapsulated (compressed) pixel data: items of fragments.
    pub encapsulated: bool,
    /// Native: the value length; encapsulated: the sum of the fragments' lengths.
    pub bytes: u64,
    /// Encapsulated: the number of items after the basic offset table.
    pub fragments: u64,
    /// Native: the length the element declares, when the file ends before it.
    pub declared_but_cut: Option<u64>,
    offset_table_seen: bool,
}

/// Result of [`check_element_lengths`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ElementBounds {
    pub file_len: u64,
    pub pixel_data: Option<PixelDataInfo>,
    /// Bytes of the data set before the top-level pixel data (the whole data
    /// set when it has none): what a read up to the pixel data parses and keeps
    /// in memory (the Storage SCP bounds it per association).
    pub header_bytes: u64,
    /// Elements (at any depth) and sequence items in those bytes.
    pub header_elements: u64,
    pub header_items: u64,
}

/// Heap bytes dicom-object holds per element it keeps (the element with its
/// value's inline storage), beyond the value bytes themselves.
pub const ELEMENT_COST: u64 = 160;
/// Heap bytes per sequence item: an `InMemDicomObject` whose map allocates a
/// whole B-tree leaf (11 slots of tag + element) for its first element.
pub const ITEM_COST: u64 = 2048;

impl ElementBounds {
    /// A bound on the memory a read up to the pixel data takes: the value bytes
    /// plus a fixed cost per element and per item (a data set of many empty
    /// items costs far more than its bytes; `tests/it/dicom_net.rs` measures it).
    pub fn header_parse_cost(&self) -> u64 {
        self.header_bytes
            .saturating_add(self.header_elements.saturating_mul(ELEMENT_COST))
            .saturating_add(self.header_items.saturating_mul(ITEM_COST))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

/// Where the walk is: a data set (elements), a sequence (items holding data
/// sets) or encapsulated pixel data (items holding raw fragments). `end` is the
/// stream position where a defined-length container stops.
#[derive(Clone, Copy)]
struct Frame {
    kind: Kind,
    end: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    DataSet,
    Sequence,
    Fragments,
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQ_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
/// Nesting deeper than this is not a real export; it also keeps the stack small.
const MAX_DEPTH: usize = 64;

/// A byte source that knows its position; `limit` is the number of bytes it
/// holds when that is known without reading them (a plain file).
struct Source<R> {
    r: R,
    pos: u64,
    limit: Option<u64>,
}

impl<R> Source<R> {
    /// Bytes after the current position, when the source's size is known.
    fn left(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.pos))
    }
}

impl<R: Read> Source<R> {
    /// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end of stream.
    fn read_or_eof(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "file ends inside an element header",
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += buf.len() as u64;
        Ok(true)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        if self.read_or_eof(buf)? {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file ends inside an element header",
            ))
        }
    }
}

trait Skip {
    /// Skips up to `len` bytes; returns how many the source held.
    fn skip(&mut self, len: u64) -> std::io::Result<u64>;
}

impl Skip for Source<BufReader<File>> {
    fn skip(&mut self, len: u64) -> std::io::Result<u64> {
        let left = self.limit.unwrap_or(0).saturating_sub(self.pos);
        let n = len.min(left);
        // i64 is enough: n <= the file's size.
        self.r.seek_relative(n as i64)?;
        self.pos += n;
        Ok(n)
    }
}

impl<R: Read> Skip for Source<flate2::read::DeflateDecoder<R>> {
    fn skip(&mut self, len: u64) -> std::io::Result<u64> {
        let got = std::io::copy(&mut (&mut self.r).take(len), &mut std::io::sink())?;
        self.pos += got;
        Ok(got)
    }
}

fn u16_of(b: [u8; 2], be: bool) -> u16 {
    if be {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn u32_of(b: [u8; 4], be: bool) -> u32 {
    if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// Explicit VR: every VR but these has 2 reserved bytes and a 4-byte length
/// (PS3.5 7.1.2); an unknown VR is read as UN, long, as dicom-encoding does.
fn long_vr(vr: [u8; 2]) -> bool {
    !matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// Implicit VR: the VR dicom-parser gives a tag, from the standard dictionary
/// (UN when it is not there).
fn implicit_vr(tag: (u16, u16)) -> [u8; 2] {
    use dicom_core::dictionary::DataDictionary;
    StandardDataDictionary
        .by_tag(dicom_core::Tag(tag.0, tag.1))
        .map(|e| e.vr.relaxed())
        .and_then(|vr| vr.to_string().as_bytes().try_into().ok())
        .unwrap_or(*b"UN")
}

/// Bytes dicom-parser consumes for a value of `len` bytes: binary VRs are read
/// as whole numbers (`len / size` of them), so a length that is not a multiple
/// of the size leaves the rest for the next header, and the walk must do the
/// same or it reads other headers than the parser (found by fuzz/: a UL of 2
/// bytes put the parser on a 943 MB "length" the walk never saw).
fn consumed(vr: [u8; 2], len: u32) -> u64 {
    let size = match &vr {
        b"US" | b"OW" | b"SS" => 2,
        b"AT" | b"FL" | b"OF" | b"SL" | b"OL" | b"UL" => 4,
        b"FD" | b"OD" | b"SV" | b"OV" | b"UV" => 8,
        _ => 1,
    };
    (len as u64 / size) * size
}

/// Walks every element header of the DICOM Part 10 file at `path` and checks each
/// declared length against the bytes that follow it. Errors name the file, the
/// tag and the offset.
pub fn check_element_lengths(path: &Path) -> Result<ElementBounds> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut src = Source {
        r: BufReader::new(file),
        pos: 0,
        limit: Some(file_len),
    };
    // The preamble is optional for dicom-object (ReadPreamble::Auto): "DICM" at 128,
    // or at 0 for a file written without it.
    let mut pre = [0u8; 132];
    src.read_exact(&mut pre[..4])
        .map_err(|_| Error::dicom_from(path, "", DicomFault::ShorterThanPreamble))?;
    if &pre[..4] != b"DICM" {
        src.read_exact(&mut pre[4..])
            .map_err(|_| Error::dicom_from(path, "", DicomFault::ShorterThan132))?;
        if &pre[128..132] != b"DICM" {
            return Err(Error::dicom_from(path, "", DicomFault::NoMagic));
        }
    }
    let mut bounds = ElementBounds {
        file_len,
        pixel_data: None,
        header_bytes: 0,
        header_elements: 0,
        header_items: 0,
    };
    let ts = walk_meta(&mut src, path)?;
    let (syntax, deflated) = match ts.trim_end_matches(['\0', ' ']) {
        uids::IMPLICIT_VR_LITTLE_ENDIAN => (Syntax::ImplicitLe, false),
        // Retired, and still in old archives.
        #[allow(deprecated)]
        uids::EXPLICIT_VR_BIG_ENDIAN => (Syntax::ExplicitBe, false),
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => (Syntax::ExplicitLe, true),
        _ => (Syntax::ExplicitLe, false),
    };
    if deflated {
        let start = src.pos;
        let mut z = Source {
            r: flate2::read::DeflateDecoder::new(src.r),
            pos: 0,
            limit: None,
        };
        walk_data_set(&mut z, path, syntax, &mut bounds).map_err(|e| with_offset_note(e, start))?;
    } else {
        walk_data_set(&mut src, path, syntax, &mut bounds)?;
    }
    Ok(bounds)
}

fn with_offset_note(e: Error, start: u64) -> Error {
    match e {
        Error::Dicom { path, msg, source } => Error::Dicom {
            path,
            msg: format!("{msg} (in the deflated data set starting at byte {start})"),
            source,
        },
        e => e,
    }
}

/// The file meta group (explicit VR little endian), walked the way dicom-object
/// reads it: (0002,0000) first, then elements until its group length is used
/// up (not until the group number changes: a lying group length moves where the
/// data set starts, for dicom-object and so for this walk). Returns the transfer
/// syntax UID.
fn walk_meta(src: &mut Source<BufReader<File>>, path: &Path) -> Result<String> {
    let io = |e: std::io::Error| Error::dicom_from(path, "file meta group", e);
    let at = src.pos;
    let mut t = [0u8; 4];
    src.read_exact(&mut t).map_err(io)?;
    let tag = (
        u16::from_le_bytes([t[0], t[1]]),
        u16::from_le_bytes([t[2], t[3]]),
    );
    let (_, len) = read_explicit_rest(src, false).map_err(io)?;
    if tag != (0x0002, 0x0000) || len != 4 {
        return Err(Error::dicom_from(
            path,
            "",
            DicomFault::NoGroupLength { at },
        ));
    }
    let mut g = [0u8; 4];
    src.read_exact(&mut g).map_err(io)?;
    let group_len = u32::from_le_bytes(g) as u64;
    let start = src.pos;
    let mut ts = String::new();
    while src.pos - start < group_len {
        let at = src.pos;
        src.read_exact(&mut t).map_err(io)?;
        let tag = (
            u16::from_le_bytes([t[0], t[1]]),
            u16::from_le_bytes([t[2], t[3]]),
        );
        let len = if tag.0 == 0xFFFE {
            let mut l = [0u8; 4];
            src.read_exact(&mut l).map_err(io)?;
            u32::from_le_bytes(l)
        } else {
            read_explicit_rest(src, false).map_err(io)?.1
        };
        if len == UNDEFINED {
            return Err(Error::dicom_from(
                path,
                "",
                DicomFault::UndefinedMetaLength { tag, at },
            ));
        }
        if tag == (0x0002, 0x0010) && len <= 64 {
            let mut v = vec![0u8; len as usize];
            src.read_exact(&mut v).map_err(io)?;
            ts = String::from_utf8_lossy(&v).into_owned();
        } else {
            let left = src.left();
            let got = src.skip(len as u64).map_err(io)?;
            if got < len as u64 {
                return Err(too_long(path, tag, at, len, left.or(Some(got))));
            }
        }
    }
    Ok(ts)
}

/// `left`: the bytes after the element's header, when the file's size is known.
fn too_long(path: &Path, tag: (u16, u16), at: u64, len: u32, left: Option<u64>) -> Error {
    Error::dicom_from(
        path,
        "",
        DicomFault::ElementTooLong {
            tag,
            at,
            declared: len,
            remaining: left,
        },
    )
}

/// After the tag of an explicit-VR element: (VR, length).
fn read_explicit_rest<R: Read>(src: &mut Source<R>, be: bool) -> std::io::Result<([u8; 2], u32)> {
    let mut vr = [0u8; 2];
    src.read_exact(&mut vr)?;
    if long_vr(vr) {
        let mut b = [0u8; 6];
        src.read_exact(&mut b)?;
        Ok((vr, u32_of([b[2], b[3], b[4], b[5]], be)))
    } else {
        let mut b = [0u8; 2];
        src.read_exact(&mut b)?;
        Ok((vr, u16_of(b, be) as u32))
    }
}

fn walk_data_set<R: Read>(
    src: &mut Source<R>,
    path: &Path,
    syntax: Syntax,
    bounds: &mut ElementBounds,
) -> Result<()>
where
    Source<R>: Skip,
{
    let io = |e: std::io::Error| Error::dicom_from(path, "reading element headers", e);
    let be = syntax == Syntax::ExplicitBe;
    let start = src.pos;
    let mut stack = vec![Frame {
        kind: Kind::DataSet,
        end: None,
    }];
    loop {
        // Leave defined-length containers that end here.
        while stack
            .last()
            .is_some_and(|f| f.end.is_some_and(|e| src.pos >= e))
            && stack.len() > 1
        {
            stack.pop();
        }
        let at = src.pos;
        let mut t = [0u8; 4];
        if !src.read_or_eof(&mut t).map_err(io)? {
            if bounds.pixel_data.is_none() {
                bounds.header_bytes = at - start;
            }
            return Ok(());
        }
        let tag = (u16_of([t[0], t[1]], be), u16_of([t[2], t[3]], be));
        let top = stack.last().map(|f| f.kind).unwrap_or(Kind::DataSet);
        // Items and delimiters have no VR in any syntax (PS3.5 7.5).
        if tag.0 == 0xFFFE {
            let mut l = [0u8; 4];
            src.read_exact(&mut l).map_err(io)?;
            let len = u32_of(l, be);
            match tag {
                // Delimiters end containers; their length field is not read.
                ITEM_END if stack.len() > 1 => {
                    if top == Kind::DataSet {
                        stack.pop();
                    }
                }
                ITEM_END => {}
                SEQ_END if stack.len() > 1 => {
                    while let Some(f) = stack.pop() {
                        if f.kind != Kind::DataSet || stack.len() <= 1 {
                            break;
                        }
                    }
                    if stack.is_empty() {
                        stack.push(Frame {
                            kind: Kind::DataSet,
                            end: None,
                        });
                    }
                }
                ITEM if top == Kind::Fragments => {
                    let left = src.left();
                    if len == UNDEFINED {
                        return Err(too_long(path, tag, at, len, left));
                    }
                    let got = src.skip(len as u64).map_err(io)?;
                    if got < len as u64 {
                        return Err(too_long(path, tag, at, len, left.or(Some(got))));
                    }
                    if let Some(p) = bounds.pixel_data.as_mut() {
                        if p.encapsulated && stack.len() == 2 {
                            // The first item is the basic offset table (PS3.5 A.4).
                            if p.offset_table_seen {
                                p.fragments += 1;
                                p.bytes = p.bytes.saturating_add(len as u64);
                            } else {
                                p.offset_table_seen = true;
                            }
                        }
                    }
                }
                ITEM if top == Kind::Sequence => {
                    if bounds.pixel_data.is_none() {
                        bounds.header_items += 1;
                    }
                    // An item of a sequence holds a data set.
                    let end = if len == UNDEFINED {
                        None
                    } else {
                        let end = src.pos + len as u64;
                        if src.limit.is_some_and(|l| end > l) {
                            return Err(too_long(path, tag, at, len, src.left()));
                        }
                        Some(end)
                    };
                    push(&mut stack, Kind::DataSet, end, path)?;
                }
                // Anywhere else dicom-parser reads these as elements with a value.
                _ => {
                    if len != UNDEFINED {
                        let left = src.left();
                        let got = src.skip(len as u64).map_err(io)?;
                        if got < len as u64 {
                            return Err(too_long(path, tag, at, len, left.or(Some(got))));
                        }
                    }
                }
            }
            continue;
        }
        let (vr, len) = match syntax {
            Syntax::ImplicitLe => {
                let mut l = [0u8; 4];
                src.read_exact(&mut l).map_err(io)?;
                (implicit_vr(tag), u32::from_le_bytes(l))
            }
            _ => read_explicit_rest(src, be).map_err(io)?,
        };
        let top_level = stack.len() == 1;
        if top_level && tag == PIXEL_DATA && bounds.pixel_data.is_none() {
            bounds.header_bytes = at - start;
        }
        if bounds.pixel_data.is_none() {
            bounds.header_elements += 1;
        }
        if len == UNDEFINED {
            // A sequence, or encapsulated pixel data (items of fragments); an
            // undefined-length UN is a sequence in implicit VR (PS3.5 6.2.2).
            let kind = if tag == PIXEL_DATA && &vr != b"SQ" {
                if top_level {
                    bounds.pixel_data = Some(PixelDataInfo {
                        encapsulated: true,
                        bytes: 0,
                        fragments: 0,
                        declared_but_cut: None,
                        offset_table_seen: false,
                    });
                }
                Kind::Fragments
            } else {
                Kind::Sequence
            };
            push(&mut stack, kind, None, path)?;
            continue;
        }
        if &vr == b"SQ" {
            let end = src.pos + len as u64;
            if src.limit.is_some_and(|l| end > l) {
                return Err(too_long(path, tag, at, len, src.left()));
            }
            push(&mut stack, Kind::Sequence, Some(end), path)?;
            continue;
        }
        let left = src.left();
        let want = consumed(vr, len);
        let got = src.skip(want).map_err(io)?;
        if top_level && tag == PIXEL_DATA {
            // Native pixel data cut short is not a header fault: the bytes there
            // are recorded and the geometry check reports the truncation.
            bounds.pixel_data = Some(PixelDataInfo {
                encapsulated: false,
                bytes: got,
                fragments: 0,
                declared_but_cut: (got < want).then_some(len as u64),
                offset_table_seen: false,
            });
            if got < want {
                return Ok(());
            }
        } else if got < want {
            return Err(too_long(path, tag, at, len, left.or(Some(got))));
        }
    }
}

fn push(stack: &mut Vec<Frame>, kind: Kind, end: Option<u64>, path: &Path) -> Result<()> {
    if stack.len() >= MAX_DEPTH {
        return Err(Error::dicom_from(
            path,
            "",
            DicomFault::NestedTooDeep { max: MAX_DEPTH },
        ));
    }
    stack.push(Frame { kind, end });
    Ok(())
}
