//! NIfTI-1 reader and writer.
//!
//! `.nii` files are memory-mapped (memmap2) and converted slice by slice, so only the
//! output volume is held in memory; `.nii.gz` is streamed through flate2.
//! NIfTI's world space is RAS; organdose works in DICOM LPS, so the affine is
//! flipped in x and y on read and write (NIfTI-1 standard, nifti1.h comments).

use crate::error::{Error, Result};
use crate::fault::NiftiFault;
use crate::volume::{Geometry, Volume};
use crate::write_atomically;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

const HEADER_LEN: usize = 348;

/// The header fields organdose uses, decoded to native values.
#[derive(Debug, Clone)]
pub struct NiftiHeader {
    /// dim[1..=dim[0]].
    pub dims: Vec<usize>,
    pub datatype: i16,
    pub bitpix: i16,
    pub pixdim: [f32; 8],
    pub vox_offset: usize,
    pub scl_slope: f32,
    pub scl_inter: f32,
    pub xyzt_units: u8,
    pub qform_code: i16,
    pub sform_code: i16,
    pub quatern: [f32; 6],
    pub srow: [[f32; 4]; 3],
    pub descrip: String,
    pub big_endian: bool,
}

/// Storage types of NIfTI-1 (nifti1.h, `NIFTI_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl DataType {
    fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            2 => DataType::U8,
            256 => DataType::I8,
            4 => DataType::I16,
            512 => DataType::U16,
            8 => DataType::I32,
            768 => DataType::U32,
            1024 => DataType::I64,
            1280 => DataType::U64,
            16 => DataType::F32,
            64 => DataType::F64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    fn read(self, b: &[u8], be: bool) -> f64 {
        macro_rules! rd {
            ($t:ty, $n:expr) => {{
                let mut a = [0u8; $n];
                a.copy_from_slice(&b[..$n]);
                (if be {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }) as f64
            }};
        }
        match self {
            DataType::U8 => b[0] as f64,
            DataType::I8 => b[0] as i8 as f64,
            DataType::I16 => rd!(i16, 2),
            DataType::U16 => rd!(u16, 2),
            DataType::I32 => rd!(i32, 4),
            DataType::U32 => rd!(u32, 4),
            DataType::I64 => rd!(i64, 8),
            DataType::U64 => rd!(u64, 8),
            DataType::F32 => rd!(f32, 4),
            DataType::F64 => rd!(f64, 8),
        }
    }

    fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::I16 => "int16",
            DataType::U16 => "uint16",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }
}

fn rd_i16(b: &[u8], off: usize, be: bool) -> i16 {
    let a = [b[off], b[off + 1]];
    if be {
        i16::from_be_bytes(a)
    } else {
        i16::from_le_bytes(a)
    }
}

fn rd_i32(b: &[u8], off: usize, be: bool) -> i32 {
    let a = [b[off], b[off + 1], b[off + 2], b[off + 3]];
    if be {
        i32::from_be_bytes(a)
    } else {
        i32::from_le_bytes(a)
    }
}

fn rd_f32(b: &[u8], off: usize, be: bool) -> f32 {
    let a = [b[off], b[off + 1], b[off + 2], b[off + 3]];
    if be {
        f32::from_be_bytes(a)
    } else {
        f32::from_le_bytes(a)
    }
}

/// True when the path names a NIfTI file by its extension.
pub fn is_nifti_path(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

fn is_gz(path: &Path) -> bool {
    path.to_string_lossy().to_ascii_lowercase().ends_with(".gz")
}

impl NiftiHeader {
    pub fn parse(b: &[u8], path: &Path) -> Result<Self> {
        if b.len() < HEADER_LEN {
            return Err(Error::nifti_from(
                path,
                "",
                NiftiFault::ShortHeader { len: b.len() },
            ));
        }
        let be = match (rd_i32(b, 0, false), rd_i32(b, 0, true)) {
            (348, _) => false,
            (_, 348) => true,
            _ => {
                return Err(Error::nifti_from(path, "", NiftiFault::SizeofHdr));
            }
        };
        let magic = &b[344..348];
        if magic != b"n+1\0" && magic != b"ni1\0" {
            return Err(Error::nifti_from(path, "", NiftiFault::Magic));
        }
        if magic == b"ni1\0" {
            return Err(Error::nifti_from(path, "", NiftiFault::HeaderImagePair));
        }
        let ndim = rd_i16(b, 40, be);
        if !(1..=7).contains(&ndim) {
            return Err(Error::nifti_from(path, "", NiftiFault::Rank { ndim }));
        }
        let mut dims = Vec::new();
        for d in 0..ndim as usize {
            let v = rd_i16(b, 42 + 2 * d, be);
            if v < 1 {
                return Err(Error::nifti_from(
                    path,
                    "",
                    NiftiFault::Dim {
                        axis: d + 1,
                        value: v,
                    },
                ));
            }
            dims.push(v as usize);
        }
        let mut pixdim = [0f32; 8];
        for (d, p) in pixdim.iter_mut().enumerate() {
            *p = rd_f32(b, 76 + 4 * d, be);
        }
        let vox = rd_f32(b, 108, be);
        if !(vox.is_finite() && vox >= 348.0) {
            return Err(Error::nifti_from(
                path,
                "",
                NiftiFault::VoxOffset { vox_offset: vox },
            ));
        }
        let mut quatern = [0f32; 6];
        for (q, v) in quatern.iter_mut().enumerate() {
            *v = rd_f32(b, 256 + 4 * q, be);
        }
        let mut srow = [[0f32; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = rd_f32(b, 280 + 16 * r + 4 * c, be);
            }
        }
        let descrip = String::from_utf8_lossy(&b[148..228])
            .trim_end_matches('\0')
            .trim()
            .to_string();
        Ok(NiftiHeader {
            dims,
            datatype: rd_i16(b, 70, be),
            bitpix: rd_i16(b, 72, be),
            pixdim,
            vox_offset: vox as usize,
            scl_slope: rd_f32(b, 112, be),
            scl_inter: rd_f32(b, 116, be),
            xyzt_units: b[123],
            qform_code: rd_i16(b, 252, be),
            sform_code: rd_i16(b, 254, be),
            quatern,
            srow,
            descrip,
            big_endian: be,
        })
    }

    /// Spatial dims (1 for missing axes).
    pub fn dims3(&self) -> [usize; 3] {
        let g = |a: usize| self.dims.get(a).copied().unwrap_or(1);
        [g(0), g(1), g(2)]
    }

    /// Number of 3-D volumes (product of dims 4..7).
    pub fn frames(&self) -> usize {
        self.dims.iter().skip(3).product()
    }

    pub fn datatype_name(&self) -> String {
        DataType::from_code(self.datatype)
            .map(|d| d.name().to_string())
            .unwrap_or_else(|| format!("code {}", self.datatype))
    }

    /// Factor from the file's spatial unit to mm (xyzt_units & 7; unknown means mm).
    fn unit_to_mm(&self) -> f64 {
        match self.xyzt_units & 0x07 {
            1 => 1000.0,
            3 => 0.001,
            _ => 1.0,
        }
    }

    /// Index->LPS geometry: sform when sform_code > 0, else qform when qform_code > 0,
    /// else the standard's "method 1" (pixdim scaling, no rotation, zero origin).
    pub fn geometry(&self, path: &Path) -> Result<Geometry> {
        let dims = self.dims3();
        let u = self.unit_to_mm();
        let mut ras = [[0f64; 4]; 4];
        ras[3][3] = 1.0;
        if self.sform_code > 0 {
            for r in 0..3 {
                for c in 0..4 {
                    ras[r][c] = self.srow[r][c] as f64 * u;
                }
            }
        } else if self.qform_code > 0 {
            let [b, c, d, qx, qy, qz] = self.quatern.map(|v| v as f64);
            let s = b * b + c * c + d * d;
            let a = if s > 1.0 { 0.0 } else { (1.0 - s).sqrt() };
            let rot = [
                [
                    a * a + b * b - c * c - d * d,
                    2.0 * (b * c - a * d),
                    2.0 * (b * d + a * c),
                ],
                [
                    2.0 * (b * c + a * d),
                    a * a + c * c - b * b - d * d,
                    2.0 * (c * d - a * b),
                ],
                [
                    2.0 * (b * d - a * c),
                    2.0 * (c * d + a * b),
                    a * a + d * d - c * c - b * b,
                ],
            ];
            let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
            let px = [
                self.pixdim[1] as f64,
                self.pixdim[2] as f64,
                qfac * self.pixdim[3] as f64,
            ];
            for r in 0..3 {
                for col in 0..3 {
                    ras[r][col] = rot[r][col] * px[col] * u;
                }
            }
            ras[0][3] = qx * u;
            ras[1][3] = qy * u;
            ras[2][3] = qz * u;
        } else {
            for a in 0..3 {
                ras[a][a] = self.pixdim[a + 1] as f64 * u;
            }
        }
        // RAS -> LPS: negate the x and y rows.
        let mut lps = ras;
        for c in 0..4 {
            lps[0][c] = -ras[0][c];
            lps[1][c] = -ras[1][c];
        }
        // A 2-D image has no third column in its affine; give it unit thickness.
        if dims[2] == 1 && (0..3).all(|r| lps[r][2] == 0.0) {
            lps[2][2] = 1.0;
        }
        Geometry::from_affine_lps(dims, &lps).map_err(|e| Error::nifti(path, e.to_string()))
    }
}

/// A NIfTI file opened for reading: header plus access to the voxel bytes.
pub struct NiftiFile {
    pub header: NiftiHeader,
    bytes: NiftiBytes,
}

enum NiftiBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl NiftiFile {
    /// Opens `.nii` (memory-mapped) or `.nii.gz` (decompressed once).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let bytes = if is_gz(path) {
            NiftiBytes::Owned(read_gz_bounded(file, path)?)
        } else {
            // SAFETY: the map is read-only and organdose never writes input files; a file
            // truncated by another process while mapped is the caller's (watch folder's)
            // concern: it only opens files that have been quiet for a while.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            NiftiBytes::Mapped(map)
        };
        let raw: &[u8] = match &bytes {
            NiftiBytes::Mapped(m) => m,
            NiftiBytes::Owned(v) => v,
        };
        let header = NiftiHeader::parse(raw, path)?;
        Ok(NiftiFile { header, bytes })
    }

    fn raw(&self) -> &[u8] {
        match &self.bytes {
            NiftiBytes::Mapped(m) => m,
            NiftiBytes::Owned(v) => v,
        }
    }

    /// Reads 3-D frame `t` as f32, with scl_slope/scl_inter applied.
    pub fn read_frame(&self, path: &Path, t: usize) -> Result<Volume<f32>> {
        let (geom, values) = frame_values(&self.header, self.raw(), path, t)?;
        let v = Volume::new(geom, values.map(|x| x as f32).collect())?;
        v.check_finite(&path.display().to_string())?;
        Ok(v)
    }
}

/// Largest ratio of decompressed to compressed bytes a gzip stream can have
/// (deflate's limit is 1032:1), with a margin.
const MAX_GZIP_RATIO: u64 = 1100;

/// Decompresses a `.nii.gz`: the header first, then exactly the bytes it
/// declares (vox_offset + voxels), never more, and only after checking that a
/// stream of this compressed size could hold them. Memory follows the data
/// really present, not the header's word.
fn read_gz_bounded(file: File, path: &Path) -> Result<Vec<u8>> {
    let gz_err = |e: std::io::Error| Error::nifti_from(path, "gzip stream", e);
    let compressed = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut dec = GzDecoder::new(std::io::BufReader::new(file));
    let mut buf = Vec::new();
    (&mut dec)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut buf)
        .map_err(gz_err)?;
    let h = NiftiHeader::parse(&buf, path)?;
    let need = h.data_end(path)?;
    let most = compressed.saturating_mul(MAX_GZIP_RATIO);
    if need > most {
        return Err(Error::nifti_from(
            path,
            "",
            NiftiFault::BeyondGzip {
                declared: need,
                compressed,
            },
        ));
    }
    dec.take(need - buf.len() as u64)
        .read_to_end(&mut buf)
        .map_err(gz_err)?;
    Ok(buf)
}

impl NiftiHeader {
    /// Where the voxel data of every frame ends (vox_offset + voxels x size), in bytes.
    fn data_end(&self, path: &Path) -> Result<u64> {
        let dt = DataType::from_code(self.datatype).ok_or_else(|| {
            Error::nifti_from(
                path,
                "",
                NiftiFault::Datatype {
                    code: self.datatype,
                },
            )
        })?;
        self.dims
            .iter()
            .try_fold(dt.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .and_then(|b| b.checked_add(self.vox_offset as u64))
            .ok_or_else(|| {
                Error::nifti(
                    path,
                    format!(
                        "dims {:?} x {} bytes + vox_offset {} overflow",
                        self.dims,
                        dt.size(),
                        self.vox_offset
                    ),
                )
            })
    }
}

/// Geometry and voxel values (scl_slope/scl_inter applied, f64) of 3-D frame
/// `t` of a parsed NIfTI held in `raw`; sizes checked against the bytes
/// present before anything is read.
fn frame_values<'a>(
    h: &NiftiHeader,
    raw: &'a [u8],
    path: &Path,
    t: usize,
) -> Result<(Geometry, impl Iterator<Item = f64> + 'a)> {
    let dt = DataType::from_code(h.datatype)
        .ok_or_else(|| Error::nifti_from(path, "", NiftiFault::Datatype { code: h.datatype }))?;
    if t >= h.frames() {
        return Err(Error::nifti(
            path,
            format!("frame {t} requested, file has {}", h.frames()),
        ));
    }
    let geom = h.geometry(path)?;
    let sz = dt.size();
    let frame_bytes = geom
        .len()
        .checked_mul(sz)
        .ok_or_else(|| Error::nifti(path, "dims overflow"))?;
    let beyond = || {
        Error::nifti_from(
            path,
            "",
            NiftiFault::BeyondFile {
                vox_offset: h.vox_offset,
                frame: t,
                file_len: raw.len(),
            },
        )
    };
    let start = frame_bytes
        .checked_mul(t)
        .and_then(|o| o.checked_add(h.vox_offset))
        .ok_or_else(beyond)?;
    let end = start.checked_add(frame_bytes).ok_or_else(beyond)?;
    if raw.len() < end {
        return Err(Error::nifti_from(
            path,
            "",
            NiftiFault::Truncated {
                needed: h.frames().saturating_mul(frame_bytes),
                present: raw.len().saturating_sub(h.vox_offset),
            },
        ));
    }
    // scl_slope == 0 means "no scaling" (nifti1.h).
    let (slope, inter) = if h.scl_slope != 0.0 && h.scl_slope.is_finite() {
        (h.scl_slope as f64, h.scl_inter as f64)
    } else {
        (1.0, 0.0)
    };
    let be = h.big_endian;
    let values = raw[start..end]
        .chunks_exact(sz)
        .map(move |c| dt.read(c, be) * slope + inter);
    Ok((geom, values))
}

/// Reads a 3-D NIfTI image as f32. A 4-D file is an error (pick a frame with
/// [`NiftiFile::read_frame`]); NaN or infinite voxels are an error.
pub fn read_nifti(path: &Path) -> Result<Volume<f32>> {
    let f = NiftiFile::open(path)?;
    if f.header.frames() > 1 {
        return Err(Error::nifti(
            path,
            format!(
                "{}-D image with {} volumes: organdose reads 3-D volumes only",
                f.header.dims.len(),
                f.header.frames()
            ),
        ));
    }
    f.read_frame(path, 0)
}

/// Reads a label map: values must be whole numbers in 0..=255.
pub fn read_nifti_labels(path: &Path) -> Result<Volume<u8>> {
    let v = read_nifti(path)?;
    if let Some(bad) = v
        .data
        .iter()
        .find(|&&x| !(0.0..=255.0).contains(&x) || x.fract() != 0.0)
    {
        return Err(Error::nifti(
            path,
            format!("label map holds {bad}: labels must be whole numbers 0..255"),
        ));
    }
    Ok(v.map(|x| x as u8))
}

/// Largest decompressed NIfTI accepted from memory (bytes): a 512x512x1100 int16
/// label map is 577 MB; anything beyond this is a corrupt or hostile stream.
pub(crate) const MAX_NIFTI_BYTES: u64 = 1 << 30;

/// Reads a label map held in memory (`.nii` bytes, or gzip-compressed `.nii.gz`
/// bytes, told apart by the gzip magic), e.g. an entry of a zip archive. `name`
/// only labels errors. Voxels are converted straight to u8 (no f32 copy), after the
/// header's dims have been checked against the bytes present; values must be whole
/// numbers in 0..=255.
pub fn read_nifti_labels_bytes(bytes: Vec<u8>, name: &Path) -> Result<Volume<u8>> {
    let raw = if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut buf = Vec::new();
        GzDecoder::new(&bytes[..])
            .take(MAX_NIFTI_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::nifti_from(name, "gzip stream", e))?;
        if buf.len() as u64 > MAX_NIFTI_BYTES {
            return Err(Error::nifti(
                name,
                format!("decompresses to more than {MAX_NIFTI_BYTES} bytes"),
            ));
        }
        buf
    } else {
        bytes
    };
    let h = NiftiHeader::parse(&raw, name)?;
    if h.frames() > 1 {
        return Err(Error::nifti(
            name,
            format!("{} volumes: a label map has one", h.frames()),
        ));
    }
    let (geom, values) = frame_values(&h, &raw, name, 0)?;
    let mut data = Vec::with_capacity(geom.len());
    for x in values {
        if !(0.0..=255.0).contains(&x) || x.fract() != 0.0 {
            return Err(Error::nifti(
                name,
                format!("label map holds {x}: labels must be whole numbers 0..255"),
            ));
        }
        data.push(x as u8);
    }
    Volume::new(geom, data)
}

/// Voxel types organdose writes.
pub trait NiftiScalar: Copy {
    const DATATYPE: i16;
    const BITPIX: i16;
    fn put(self, out: &mut Vec<u8>);
}

impl NiftiScalar for f32 {
    const DATATYPE: i16 = 16;
    const BITPIX: i16 = 32;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NiftiScalar for u8 {
    const DATATYPE: i16 = 2;
    const BITPIX: i16 = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

impl NiftiScalar for i16 {
    const DATATYPE: i16 = 4;
    const BITPIX: i16 = 16;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Rotation matrix (columns = axes) to the NIfTI quaternion (b, c, d) and qfac,
/// following nifti1_io.c `nifti_mat44_to_quatern`.
fn rotation_to_quatern(cols: [[f64; 3]; 3]) -> ([f64; 3], f64) {
    // r[row][col]
    let mut r = [[0f64; 3]; 3];
    for c in 0..3 {
        for row in 0..3 {
            r[row][c] = cols[c][row];
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    if qfac < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    let (a, mut b, mut c, mut d);
    let tr = r[0][0] + r[1][1] + r[2][2] + 1.0;
    if tr > 0.5 {
        a = 0.5 * tr.sqrt();
        b = 0.25 * (r[2][1] - r[1][2]) / a;
        c = 0.25 * (r[0][2] - r[2][0]) / a;
        d = 0.25 * (r[1][0] - r[0][1]) / a;
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r[0][1] + r[1][0]) / b;
            d = 0.25 * (r[0][2] + r[2][0]) / b;
            a = 0.25 * (r[2][1] - r[1][2]) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r[0][1] + r[1][0]) / c;
            d = 0.25 * (r[1][2] + r[2][1]) / c;
            a = 0.25 * (r[0][2] - r[2][0]) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r[0][2] + r[2][0]) / d;
            c = 0.25 * (r[1][2] + r[2][1]) / d;
            a = 0.25 * (r[1][0] - r[0][1]) / d;
        }
        if a < 0.0 {
            b = -b;
            c = -c;
            d = -d;
        }
    }
    ([b, c, d], qfac)
}

/// Encodes a NIfTI-1 single file (header + 4-byte extension flag + data), little endian.
pub fn encode_nifti<T: NiftiScalar>(vol: &Volume<T>, descrip: &str) -> Vec<u8> {
    let g = &vol.geom;
    let mut h = vec![0u8; 352];
    let put_i16 =
        |h: &mut Vec<u8>, off: usize, v: i16| h[off..off + 2].copy_from_slice(&v.to_le_bytes());
    let put_i32 =
        |h: &mut Vec<u8>, off: usize, v: i32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put_f32 =
        |h: &mut Vec<u8>, off: usize, v: f32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put_i32(&mut h, 0, 348);
    h[38] = b'r';
    put_i16(&mut h, 40, 3);
    for a in 0..3 {
        put_i16(&mut h, 42 + 2 * a, g.dims[a].min(i16::MAX as usize) as i16);
    }
    for a in 3..7 {
        put_i16(&mut h, 42 + 2 * a, 1);
    }
    put_i16(&mut h, 70, T::DATATYPE);
    put_i16(&mut h, 72, T::BITPIX);
    // LPS -> RAS affine.
    let lps = g.affine_lps();
    let mut ras = lps;
    for c in 0..4 {
        ras[0][c] = -lps[0][c];
        ras[1][c] = -lps[1][c];
    }
    let cols = [0, 1, 2].map(|a| [-g.direction[a][0], -g.direction[a][1], g.direction[a][2]]);
    let ([qb, qc, qd], qfac) = rotation_to_quatern(cols);
    put_f32(&mut h, 76, qfac as f32);
    for a in 0..3 {
        put_f32(&mut h, 80 + 4 * a, g.spacing[a] as f32);
    }
    put_f32(&mut h, 108, 352.0);
    put_f32(&mut h, 112, 1.0);
    put_f32(&mut h, 116, 0.0);
    h[123] = 2 | 8; // mm, seconds
    let d = descrip.as_bytes();
    let n = d.len().min(79);
    h[148..148 + n].copy_from_slice(&d[..n]);
    put_i16(&mut h, 252, 1); // qform: scanner anatomical
    put_i16(&mut h, 254, 1); // sform: scanner anatomical
    for (q, v) in [qb, qc, qd, ras[0][3], ras[1][3], ras[2][3]]
        .iter()
        .enumerate()
    {
        put_f32(&mut h, 256 + 4 * q, *v as f32);
    }
    for r in 0..3 {
        for c in 0..4 {
            put_f32(&mut h, 280 + 16 * r + 4 * c, ras[r][c] as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h.reserve(vol.data.len() * (T::BITPIX as usize / 8));
    for &v in &vol.data {
        v.put(&mut h);
    }
    h
}

/// Writes `.nii` or `.nii.gz` (by the extension), via a temporary name renamed into place.
pub fn write_nifti<T: NiftiScalar>(vol: &Volume<T>, path: &Path, descrip: &str) -> Result<()> {
    if !is_nifti_path(path) {
        return Err(Error::input(format!(
            "{}: output name must end in .nii or .nii.gz",
            path.display()
        )));
    }
    let bytes = encode_nifti(vol, descrip);
    write_atomically(path, |w| {
        if is_gz(path) {
            let mut enc = GzEncoder::new(w, flate2::Compression::fast());
            enc.write_all(&bytes)?;
            enc.finish()?;
        } else {
            w.write_all(&bytes)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_bytes_with_bad_offsets_or_truncation_are_errors() {
        let g = Geometry::new([4, 3, 2], [1.0; 3], [0.0; 3]);
        let v = Volume::new(g, (0..24u8).collect()).unwrap();
        let good = encode_nifti(&v, "t");
        let back = read_nifti_labels_bytes(good.clone(), Path::new("m.nii")).unwrap();
        assert_eq!(back.data, v.data);
        let mut far = good.clone();
        far[108..112].copy_from_slice(&1e30f32.to_le_bytes());
        let e = read_nifti_labels_bytes(far, Path::new("m.nii")).unwrap_err();
        assert!(e.to_string().contains("beyond the file"), "{e}");
        let e = read_nifti_labels_bytes(good[..good.len() - 5].to_vec(), Path::new("m.nii"))
            .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn quaternion_round_trip_for_flips_and_obliques() {
        let c = 20f64.to_radians().cos();
        let s = 20f64.to_radians().sin();
        let cases = [
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
            [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]],
            [[c, s, 0.0], [0.0, 0.0, -1.0], [-s, c, 0.0]],
        ];
        for cols in cases {
            let ([b, cq, d], qfac) = rotation_to_quatern(cols);
            let mut hdr = vec![0u8; 352];
            hdr[0..4].copy_from_slice(&348i32.to_le_bytes());
            hdr[40..42].copy_from_slice(&3i16.to_le_bytes());
            for a in 0..3 {
                hdr[42 + 2 * a..44 + 2 * a].copy_from_slice(&2i16.to_le_bytes());
            }
            hdr[76..80].copy_from_slice(&(qfac as f32).to_le_bytes());
            for a in 0..3 {
                hdr[80 + 4 * a..84 + 4 * a].copy_from_slice(&1f32.to_le_bytes());
            }
            hdr[108..112].copy_from_slice(&352f32.to_le_bytes());
            hdr[252..254].copy_from_slice(&1i16.to_le_bytes());
            for (q, v) in [b, cq, d].iter().enumerate() {
                hdr[256 + 4 * q..260 + 4 * q].copy_from_slice(&(*v as f32).to_le_bytes());
            }
            hdr[344..348].copy_from_slice(b"n+1\0");
            let h = NiftiHeader::parse(&hdr, Path::new("q.nii")).unwrap();
            let g = h.geometry(Path::new("q.nii")).unwrap();
            for a in 0..3 {
                // geometry is LPS: flip x, y back to RAS to compare.
                let got = [-g.direction[a][0], -g.direction[a][1], g.direction[a][2]];
                for r in 0..3 {
                    assert!((got[r] - cols[a][r]).abs() < 1e-6, "{cols:?} -> {got:?}");
                }
            }
        }
    }

    #[test]
    fn labels_from_memory_plain_and_gzip() {
        let mut g = Geometry::new([3, 2, 2], [0.7, 0.8, 3.0], [-5.0, 2.0, 10.0]);
        g.direction[0] = [-1.0, 0.0, 0.0];
        let data: Vec<u8> = (0..12).map(|i| (i % 5) as u8).collect();
        let vol = Volume::new(g.clone(), data.clone()).expect("volume");
        let plain = encode_nifti(&vol, "t");
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).expect("gzip");
        let gz = gz.finish().expect("gzip");
        for bytes in [plain.clone(), gz] {
            let back = read_nifti_labels_bytes(bytes, Path::new("mem.nii")).expect("read");
            assert_eq!(back.data, data);
            assert!(back.geom.same_grid(&g, 1e-4));
        }
        // Truncated voxel data is an error naming the entry, not a panic.
        let cut = plain[..plain.len() - 3].to_vec();
        let e = read_nifti_labels_bytes(cut, Path::new("entry.nii")).unwrap_err();
        assert!(e.to_string().contains("entry.nii"), "{e}");
    }
}
