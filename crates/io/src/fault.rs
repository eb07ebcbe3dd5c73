//! What is wrong with a DICOM file's structure, with the numbers that say
//! where: the `source` of [`crate::error::Error::Dicom`] for the checks
//! organdose makes before dicom-rs reads a file (element lengths against the
//! file, pixel data against the header). The message of each is the one the
//! user reads; the fields are for code that needs them (a test, a fuzzer, a
//! report of which element broke).

/// A DICOM tag (group, element).
pub type Tag = (u16, u16);

fn show_tag(t: &Tag) -> String {
    format!("({:04X},{:04X})", t.0, t.1)
}

fn show_remaining(r: &Option<u64>) -> String {
    match r {
        Some(l) => format!("{l} bytes remain in the file"),
        None => "the data set ends before that".to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DicomFault {
    #[error("shorter than a DICOM preamble")]
    ShorterThanPreamble,
    #[error("shorter than the 132-byte DICOM preamble")]
    ShorterThan132,
    #[error("no 'DICM' at byte 128")]
    NoMagic,
    #[error("file meta group does not start with its group length (0002,0000) at byte {at}")]
    NoGroupLength { at: u64 },
    #[error("meta element {} at byte {at} has an undefined length", show_tag(.tag))]
    UndefinedMetaLength { tag: Tag, at: u64 },
    /// An element's declared length runs past what the file holds.
    #[error(
        "element {} at byte {at} declares {declared} bytes but {}: corrupt or truncated file",
        show_tag(.tag),
        show_remaining(.remaining)
    )]
    ElementTooLong {
        tag: Tag,
        at: u64,
        declared: u32,
        /// Bytes after the element's header, when the file's size is known.
        remaining: Option<u64>,
    },
    #[error("sequences nested more than {max} deep")]
    NestedTooDeep { max: usize },
    #[error(
        "header declares {columns} x {rows} x {frames} frames, more than the {max} voxels organdose reads"
    )]
    TooManyVoxels {
        columns: usize,
        rows: usize,
        frames: usize,
        max: u64,
    },
    #[error("no pixel data (7FE0,0010)")]
    NoPixelData,
    #[error("truncated pixel data: (7FE0,0010) declares {declared} bytes, the file holds {held}")]
    PixelDataCut { declared: u64, held: u64 },
    #[error("truncated pixel data: the header declares {dims} = {expected} bytes, the file holds {held}")]
    PixelDataShort {
        dims: String,
        expected: u64,
        held: u64,
    },
    #[error(
        "header declares {frames} frames, the compressed pixel data holds {fragments} fragment(s)"
    )]
    FewerFragments { frames: usize, fragments: u64 },
    #[error("header declares {dims} = {expected} bytes, more than {max_ratio} times the {held} bytes of compressed pixel data")]
    CompressionBeyondLimit {
        dims: String,
        expected: u64,
        max_ratio: u64,
        held: u64,
    },
}

/// What is wrong with a NIfTI-1 file's header or size: the `source` of
/// [`crate::error::Error::Nifti`] for the checks made before anything is
/// sized from the header.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NiftiFault {
    #[error("{len} bytes, shorter than the 348-byte header")]
    ShortHeader { len: usize },
    #[error("sizeof_hdr is not 348")]
    SizeofHdr,
    #[error("magic is not 'n+1' or 'ni1' (an Analyze 7.5 or NIfTI-2 file?)")]
    Magic,
    #[error("header/image pairs (.hdr/.img) are not supported: convert to a single .nii")]
    HeaderImagePair,
    #[error("dim[0] = {ndim}, not in 1..7")]
    Rank { ndim: i16 },
    /// `axis` counts from 1, as nifti1.h's dim[] does.
    #[error("dim[{axis}] = {value}")]
    Dim { axis: usize, value: i16 },
    #[error("vox_offset {vox_offset} is invalid")]
    VoxOffset { vox_offset: f32 },
    #[error("unsupported datatype code {code}")]
    Datatype { code: i16 },
    #[error("header declares {declared} bytes of image, more than a {compressed}-byte gzip stream can hold")]
    BeyondGzip { declared: u64, compressed: u64 },
    #[error("voxel data at offset {vox_offset} (vox_offset) + frame {frame} lie beyond the file's {file_len} bytes")]
    BeyondFile {
        vox_offset: usize,
        frame: usize,
        file_len: usize,
    },
    #[error("truncated: {needed} voxel bytes needed, {present} present")]
    Truncated { needed: usize, present: usize },
}
