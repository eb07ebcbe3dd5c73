//! Labelled real CTs for evaluation: loaders that turn the layouts public
//! datasets ship in into a CT `Volume<f32>` (HU, LPS geometry) plus a truth
//! label map with organdose labels (`crate::organs`), and the scoring of a
//! predicted label map against them.
//!
//! Layouts understood (see `/work/shared/data/README.md` for the copies kept
//! beside the project):
//!
//! * **CHAOS** (`DIR/DICOM_anon/*.dcm` + `DIR/Ground/liver_GT_NNN.png`): one
//!   binary PNG per slice. Checked on the CHAOS case kept here (CT i0000 ...
//!   i0077, ImagePositionPatient z from 1690.5 down to 1536.5 mm in 2 mm
//!   steps, orientation 1\0\0\0\1\0): PNG index n belongs to the n-th DICOM
//!   file in file-name order, which is the HIGHEST z first (head end), i.e.
//!   volume slice k = nz-1-n after the reader's ascending-z sort; we map by
//!   file name, not by assuming either. PNG rows are NOT flipped against the
//!   DICOM rows: as stored, 95-98 % of mask pixels lie at 40-200 HU (median
//!   ~141 HU, portal venous liver) and the mask sits in image columns
//!   50-320 of 512 (patient right); flipped up-down only 65-83 %, left-right
//!   35-70 %, reversed slice order 1-93 %.
//! * **3D-IRCADb** (`DIR/PATIENT_DICOM/image_K` + `DIR/MASKS_DICOM_liver.zip`
//!   holding `MASKS_DICOM/liver/image_K`, DICOM 0/255, or the same folder
//!   unzipped): the zip is read in place; mask `image_K` goes to CT file
//!   `image_K`, and its ImagePositionPatient, when present, must match that
//!   slice's.
//! * **PNG slices** (`DIR/images/NAME.png` 8-bit grey + `DIR/masks/NAME.png`
//!   RGB, the CURVAS export): kidney (255,255,0; both sides in one colour),
//!   liver (255,0,255), pancreas (0,255,255; not an organdose organ, ignored).
//!   Window and pixel size are not stored, see [`PngSliceOptions`]. Each slice
//!   becomes a 3-slice volume (the slice repeated) so the 2.5D input has its
//!   neighbours; only the middle slice is scored.
//! * **Generic**: a DICOM or NIfTI CT with a NIfTI label map and a value
//!   mapping (`1=liver,2=kidney`), or with one PNG mask per slice.
//!
//! Where the truth has one label for both kidneys ([`KIDNEY_UNSPLIT`]), the
//! prediction's kidney_left ∪ kidney_right is scored against it as "kidney".

use crate::error::{Error, FaultKind, Result};
use crate::eval::{organ_metrics, OrganMetrics};
use crate::io::IngestConfig;
use crate::io::{dicom, nifti};
use crate::organs;
use crate::volume::{Geometry, Vec3, Volume};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Truth label for "kidney, side not given". Outside `organs::ORGANS` on
/// purpose: it only ever appears in truth maps of this module.
pub const KIDNEY_UNSPLIT: u8 = 254;

/// How the 8-bit grey PNG slices are turned into HU and millimetres.
///
/// Default window: grey 0 = -10 HU, 255 = 245 HU (1 HU per grey level).
/// Estimated on the CURVAS slices: fat (about -100 HU) is fully black even
/// with image noise (so the lower end is well above fat); bile in the
/// gallbladder is grey ~30 (-> ~20 HU), muscle ~47-56 (-> ~40 HU), liver
/// 77-115 (-> 67-105 HU, portal venous), pancreas ~75 (-> 65 HU), enhanced
/// kidney cortex 150-190 (-> 140-180 HU), vertebral bone saturates; noise
/// of ~20 grey levels matches CT noise of ~20 HU at 1 HU per grey level.
/// Default pixel: 0.8 mm (a lumbar vertebral body spans ~54 pixels, adult
/// ~45 mm; a 400 mm field of view would give 0.78 mm).
///
/// Grey 0 is clipped: it says "at or below the window's floor", not
/// "-10 HU". Most such pixels are fat or air (below -100 HU), so by default
/// they are given `hu_at_black` = -1000 HU, what fat and air are on a real CT
/// after the network's own window; read linearly they would be water-like.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PngSliceOptions {
    pub hu_at_grey0: f64,
    pub hu_at_grey255: f64,
    /// HU given to grey 0 (clipped) pixels; `None`: read linearly too.
    pub hu_at_black: Option<f64>,
    pub pixel_mm: f64,
    /// Thickness given to the repeated slice (mm).
    pub slice_mm: f64,
}

impl Default for PngSliceOptions {
    fn default() -> Self {
        PngSliceOptions {
            hu_at_grey0: -10.0,
            hu_at_grey255: 245.0,
            hu_at_black: Some(-1000.0),
            pixel_mm: 0.8,
            slice_mm: 3.0,
        }
    }
}

impl PngSliceOptions {
    pub fn describe(&self) -> String {
        let black = match self.hu_at_black {
            Some(h) => format!(", clipped grey 0 read as {h} HU"),
            None => String::new(),
        };
        format!(
            "PNG slices: grey 0 = {} HU, 255 = {} HU (linear{black}), pixel {} mm (assumed), \
             slice repeated 3x at {} mm, scored on the middle slice, axial only",
            self.hu_at_grey0, self.hu_at_grey255, self.pixel_mm, self.slice_mm
        )
    }
}

/// What a truth organ is scored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TruthOrgan {
    /// An organdose label, scored label against label.
    Label(u8),
    /// Both kidneys in one label ([`KIDNEY_UNSPLIT`]).
    KidneyUnsplit,
}

impl TruthOrgan {
    pub fn name(self) -> &'static str {
        match self {
            TruthOrgan::Label(l) => organs::name(l).unwrap_or("?"),
            TruthOrgan::KidneyUnsplit => "kidney",
        }
    }
    fn truth_label(self) -> u8 {
        match self {
            TruthOrgan::Label(l) => l,
            TruthOrgan::KidneyUnsplit => KIDNEY_UNSPLIT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseKind {
    /// A CT volume: every slice scored, HD95 in 3-D.
    Volume,
    /// One 2-D slice (repeated along z): the middle slice scored, areas in
    /// cm² in place of mL, no HD95.
    Slice,
}

/// One labelled real CT, on one grid.
#[derive(Debug, Clone)]
pub struct RealCase {
    pub name: String,
    pub kind: CaseKind,
    pub ct: Volume<f32>,
    pub truth: Volume<u8>,
    /// The organs the truth holds labels for (others are not scored).
    pub organs: Vec<TruthOrgan>,
}

/// Where a case lives; loaded one at a time so only one CT is in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseSource {
    Chaos(PathBuf),
    Ircadb(PathBuf),
    PngSlice { image: PathBuf, mask: PathBuf },
    Generic { ct: PathBuf, truth: GenericTruth },
}

#[derive(Debug, Clone, PartialEq)]
pub enum GenericTruth {
    /// NIfTI label map + (file value, organ) pairs; other values are background.
    LabelMap {
        path: PathBuf,
        map: Vec<(u8, TruthOrgan)>,
    },
    /// One mask per slice (PNG, non-zero = `organ`), sorted by file name: for
    /// a DICOM CT in the DICOM files' name order, for NIfTI in k order.
    SliceMasks { dir: PathBuf, organ: TruthOrgan },
}

impl CaseSource {
    pub fn name(&self) -> String {
        let stem = |p: &Path| {
            p.file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| p.display().to_string())
        };
        match self {
            CaseSource::Chaos(d) => format!("chaos:{}", stem(d)),
            CaseSource::Ircadb(d) => format!("ircadb:{}", stem(d)),
            CaseSource::PngSlice { image, .. } => {
                let s = stem(image);
                format!("png:{}", s.trim_end_matches(".png"))
            }
            CaseSource::Generic { ct, .. } => stem(ct),
        }
    }

    pub fn load(&self, ingest: &IngestConfig, png: &PngSliceOptions) -> Result<RealCase> {
        let mut c = match self {
            CaseSource::Chaos(d) => load_chaos(d, ingest)?,
            CaseSource::Ircadb(d) => load_ircadb(d, ingest)?,
            CaseSource::PngSlice { image, mask } => load_png_slice(image, mask, png)?,
            CaseSource::Generic { ct, truth } => load_generic(ct, truth, ingest)?,
        };
        c.name = self.name();
        Ok(c)
    }
}

/// Finds the labelled cases below `root`: `root` itself, or its immediate
/// sub-folders, in one of the layouts of the module doc. Sorted by name.
pub fn discover(root: &Path) -> Result<Vec<CaseSource>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    if root.is_dir() {
        let mut subs: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        dirs.extend(subs);
    }
    for d in &dirs {
        if d.join("DICOM_anon").is_dir() && d.join("Ground").is_dir() {
            out.push(CaseSource::Chaos(d.clone()));
        } else if d.join("PATIENT_DICOM").is_dir()
            && (d.join("MASKS_DICOM_liver.zip").is_file() || d.join("MASKS_DICOM/liver").is_dir())
        {
            out.push(CaseSource::Ircadb(d.clone()));
        } else if d.join("images").is_dir() && d.join("masks").is_dir() {
            for image in sorted_files(&d.join("images"), "png")? {
                let Some(fname) = image.file_name() else {
                    continue;
                };
                let mask = d.join("masks").join(fname);
                if mask.is_file() {
                    out.push(CaseSource::PngSlice { image, mask });
                }
            }
        }
    }
    if out.is_empty() {
        return Err(Error::input(format!(
            "{}: no labelled real CT found (expected CHAOS DICOM_anon/ + Ground/, \
             3D-IRCADb PATIENT_DICOM/ + MASKS_DICOM_liver.zip, or images/ + masks/ PNG slices, \
             here or one folder down)",
            root.display()
        )));
    }
    Ok(out)
}

/// Parses `1=liver,2=kidney,3=kidney_left` (file value = organ name; "kidney"
/// is both kidneys in one label).
pub fn parse_label_mapping(s: &str) -> Result<Vec<(u8, TruthOrgan)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (v, n) = part
            .split_once('=')
            .ok_or_else(|| Error::input(format!("label mapping {part:?}: expected VALUE=ORGAN")))?;
        let v: u8 = v
            .trim()
            .parse()
            .map_err(|_| Error::input(format!("label mapping {part:?}: value must be 0-255")))?;
        let n = n.trim();
        let organ = if n == "kidney" {
            TruthOrgan::KidneyUnsplit
        } else {
            TruthOrgan::Label(organs::label(n).ok_or_else(|| {
                Error::input(format!(
                    "label mapping {part:?}: unknown organ {n:?} (liver, kidney, kidney_left, \
                     kidney_right, spleen)"
                ))
            })?)
        };
        out.push((v, organ));
    }
    if out.is_empty() {
        return Err(Error::input("empty label mapping"));
    }
    Ok(out)
}

fn sorted_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x.to_string_lossy().eq_ignore_ascii_case(ext))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// A decoded PNG as 8-bit samples, `channels` per pixel (1 grey, 3 RGB; an
/// alpha channel is dropped).
struct Png8 {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

fn read_png(path: &Path) -> Result<Png8> {
    let bad = |m: String| Error::input(format!("{}: not a readable PNG: {m}", path.display()));
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(f));
    // 1-bit masks and palettes become 8-bit samples; 16-bit is cut to 8.
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut rd = dec.read_info().map_err(|e| bad(e.to_string()))?;
    let size = rd
        .output_buffer_size()
        .ok_or_else(|| bad("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = rd.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let (src_ch, keep) = match info.color_type {
        png::ColorType::Grayscale => (1, 1),
        png::ColorType::GrayscaleAlpha => (2, 1),
        png::ColorType::Rgb => (3, 3),
        png::ColorType::Rgba => (4, 3),
        png::ColorType::Indexed => return Err(bad("palette not expanded".into())),
    };
    let mut data = Vec::with_capacity(w * h * keep);
    for r in 0..h {
        let row = &buf[r * info.line_size..r * info.line_size + w * src_ch];
        for px in row.chunks_exact(src_ch) {
            data.extend_from_slice(&px[..keep]);
        }
    }
    Ok(Png8 {
        width: w,
        height: h,
        channels: keep,
        data,
    })
}

/// Non-zero pixels of a binary mask PNG (any channel), row-major.
fn read_binary_mask(path: &Path, nx: usize, ny: usize) -> Result<Vec<bool>> {
    let p = read_png(path)?;
    if (p.width, p.height) != (nx, ny) {
        return Err(Error::input(format!(
            "{}: mask is {}x{}, the CT slice {nx}x{ny}",
            path.display(),
            p.width,
            p.height
        )));
    }
    Ok(p.data
        .chunks_exact(p.channels)
        .map(|c| c.iter().any(|&v| v > 0))
        .collect())
}

/// CT volume slice k of each DICOM file (by index in `series.files`).
fn k_of_file(series: &dicom::DicomSeries, ingest: &IngestConfig) -> Result<Vec<Option<usize>>> {
    let map = series.slice_map(ingest)?;
    let mut k_of = vec![None; series.files.len()];
    for (k, &(fi, fr)) in map.slices.iter().enumerate() {
        if fr == 0 {
            if let Some(s) = k_of.get_mut(fi) {
                *s = Some(k);
            }
        }
    }
    Ok(k_of)
}

/// Indices into `series.files`, sorted by file name.
fn files_by_name(series: &dicom::DicomSeries) -> Vec<usize> {
    let mut order: Vec<usize> = (0..series.files.len()).collect();
    order.sort_by(|&a, &b| {
        series.files[a]
            .path
            .file_name()
            .cmp(&series.files[b].path.file_name())
    });
    order
}

/// Puts per-slice masks (in `slot_k` order of the CT slices) into a label map.
fn paint_slice_masks(
    truth: &mut Volume<u8>,
    masks: &[PathBuf],
    slot_k: &[usize],
    label: u8,
) -> Result<()> {
    let [nx, ny, _] = truth.geom.dims;
    for (m, &k) in masks.iter().zip(slot_k) {
        let mask = read_binary_mask(m, nx, ny)?;
        let base = k * nx * ny;
        for (v, _) in mask.iter().enumerate().filter(|(_, &b)| b) {
            truth.data[base + v] = label;
        }
    }
    Ok(())
}

/// CHAOS layout: `dir/DICOM_anon/*.dcm` and `dir/Ground/*.png` (see module doc
/// for the slice order and row direction found on the data).
pub(crate) fn load_chaos(dir: &Path, ingest: &IngestConfig) -> Result<RealCase> {
    let (series, ct) = dicom::read_single_series(&dir.join("DICOM_anon"), None, ingest)?;
    let masks = sorted_files(&dir.join("Ground"), "png")?;
    let slot_k = dicom_slots(&series, ingest, masks.len(), &dir.join("Ground"))?;
    let mut truth = Volume::filled(ct.geom.clone(), 0u8);
    paint_slice_masks(&mut truth, &masks, &slot_k, organs::LIVER)?;
    Ok(RealCase {
        name: dir.display().to_string(),
        kind: CaseKind::Volume,
        ct,
        truth,
        organs: vec![TruthOrgan::Label(organs::LIVER)],
    })
}

/// Volume slice of the n-th DICOM file in file-name order, for n < `count`
/// (which must equal the number of files).
fn dicom_slots(
    series: &dicom::DicomSeries,
    ingest: &IngestConfig,
    count: usize,
    masks: &Path,
) -> Result<Vec<usize>> {
    if count != series.files.len() {
        return Err(Error::input(format!(
            "{}: {count} mask files for {} DICOM slices",
            masks.display(),
            series.files.len()
        )));
    }
    let k_of = k_of_file(series, ingest)?;
    files_by_name(series)
        .into_iter()
        .map(|fi| {
            k_of[fi].ok_or_else(|| {
                Error::dicom(
                    &series.files[fi].path,
                    "file is not one slice of the volume",
                )
            })
        })
        .collect()
}

/// A mask slice decoded from DICOM bytes: (rows, columns, stored values,
/// ImagePositionPatient).
type MaskSlice = (usize, usize, Vec<f64>, Option<Vec3>);

fn decode_dicom_bytes(bytes: &[u8], what: &str) -> Result<MaskSlice> {
    use dicom_dictionary_std::tags;
    use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
    let bad = |m: String| Error::dicom(Path::new(what), m);
    // from_reader expects the stream to start at the "DICM" magic.
    let body = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        &bytes[128..]
    } else {
        bytes
    };
    let obj = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(body)
        .map_err(|e| bad(e.to_string()))?;
    let pos = obj
        .element(tags::IMAGE_POSITION_PATIENT)
        .ok()
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| v.len() >= 3)
        .map(|v| [v[0], v[1], v[2]]);
    // The same guard as the CT reader's: a crafted RLE header would make the
    // decoder ask for gigabytes.
    dicom::check_rle_headers(Path::new(what), &obj)?;
    let dec = obj
        .decode_pixel_data()
        .map_err(|e| bad(format!("pixel data: {e}")))?;
    let (rows, cols) = (dec.rows() as usize, dec.columns() as usize);
    let v: Vec<f64> = dec
        .to_vec_with_options(&ConvertOptions::new().with_modality_lut(ModalityLutOption::None))
        .map_err(|e| bad(format!("pixel data: {e}")))?;
    if v.len() < rows * cols {
        return Err(bad(format!(
            "pixel data holds {} values, {} expected",
            v.len(),
            rows * cols
        )));
    }
    Ok((rows, cols, v, pos))
}

/// (slice file name, DICOM bytes) of every liver mask of a 3D-IRCADb case:
/// from the zip when there is one, else from the unzipped folder.
fn ircadb_mask_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let zpath = dir.join("MASKS_DICOM_liver.zip");
    let mut out = Vec::new();
    if zpath.is_file() {
        let zerr = |e: zip::result::ZipError| {
            Error::library(FaultKind::Input, format!("{}", zpath.display()), e)
        };
        let f = std::fs::File::open(&zpath).map_err(|e| Error::io(&zpath, e))?;
        let mut za = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(zerr)?;
        for i in 0..za.len() {
            let mut e = za.by_index(i).map_err(zerr)?;
            let name = e.name().map_err(zerr)?.to_string();
            if e.is_dir() || !name.contains("liver/") {
                continue;
            }
            let base = name.rsplit('/').next().unwrap_or(&name).to_string();
            let mut b = Vec::with_capacity(e.size() as usize);
            e.read_to_end(&mut b)
                .map_err(|er| Error::input(format!("{}: {name}: {er}", zpath.display())))?;
            out.push((base, b));
        }
    } else {
        let d = dir.join("MASKS_DICOM/liver");
        for p in dicom::list_files(&d)? {
            let b = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            let base = p
                .file_name()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            out.push((base, b));
        }
    }
    Ok(out)
}

/// 3D-IRCADb layout: `dir/PATIENT_DICOM/image_K` and the liver masks.
pub(crate) fn load_ircadb(dir: &Path, ingest: &IngestConfig) -> Result<RealCase> {
    let (series, ct) = dicom::read_single_series(&dir.join("PATIENT_DICOM"), None, ingest)?;
    let k_of = k_of_file(&series, ingest)?;
    let by_name: BTreeMap<String, usize> = series
        .files
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((h.path.file_name()?.to_string_lossy().to_string(), i)))
        .collect();
    let [nx, ny, _] = ct.geom.dims;
    let mut truth = Volume::filled(ct.geom.clone(), 0u8);
    let masks = ircadb_mask_files(dir)?;
    if masks.is_empty() {
        return Err(Error::input(format!(
            "{}: no liver masks (MASKS_DICOM/liver/*)",
            dir.display()
        )));
    }
    for (name, bytes) in &masks {
        let what = format!("{}: mask {name}", dir.display());
        let fi = *by_name
            .get(name)
            .ok_or_else(|| Error::input(format!("{what}: no CT slice file of that name")))?;
        let k = k_of[fi].ok_or_else(|| Error::input(format!("{what}: CT file not in volume")))?;
        let (rows, cols, v, pos) = decode_dicom_bytes(bytes, &what)?;
        if (cols, rows) != (nx, ny) {
            return Err(Error::input(format!(
                "{what}: {cols}x{rows}, the CT {nx}x{ny}"
            )));
        }
        if let Some(p) = pos {
            let want = ct.geom.index_to_patient([0.0, 0.0, k as f64]);
            if crate::volume::dist(p, want) > 0.05 {
                return Err(Error::input(format!(
                    "{what}: ImagePositionPatient {p:?} is not the CT slice's {want:?}"
                )));
            }
        }
        let base = k * nx * ny;
        for (i, _) in v[..nx * ny].iter().enumerate().filter(|(_, &x)| x > 0.0) {
            truth.data[base + i] = organs::LIVER;
        }
    }
    Ok(RealCase {
        name: dir.display().to_string(),
        kind: CaseKind::Volume,
        ct,
        truth,
        organs: vec![TruthOrgan::Label(organs::LIVER)],
    })
}

/// CURVAS mask colours (annotator export): kidney, liver. Pancreas
/// (0,255,255) is not an organdose organ.
const PNG_KIDNEY: [u8; 3] = [255, 255, 0];
const PNG_LIVER: [u8; 3] = [255, 0, 255];

/// One grey PNG slice with its RGB mask, as a 3-slice volume (see
/// [`PngSliceOptions`]). Image column -> patient left (+x), row -> posterior
/// (+y): the radiological display the slices are stored in (liver on the
/// image's left, table at the bottom).
pub(crate) fn load_png_slice(image: &Path, mask: &Path, o: &PngSliceOptions) -> Result<RealCase> {
    if !(o.pixel_mm > 0.0 && o.slice_mm > 0.0 && o.hu_at_grey255 > o.hu_at_grey0) {
        return Err(Error::input(format!(
            "PNG slice options {o:?}: pixel and slice size must be positive, grey 255 above grey 0"
        )));
    }
    let img = read_png(image)?;
    let m = read_png(mask)?;
    if (m.width, m.height) != (img.width, img.height) {
        return Err(Error::input(format!(
            "{}: mask {}x{} for an image {}x{}",
            mask.display(),
            m.width,
            m.height,
            img.width,
            img.height
        )));
    }
    if m.channels != 3 {
        return Err(Error::input(format!(
            "{}: mask must be RGB (kidney yellow, liver magenta)",
            mask.display()
        )));
    }
    let (nx, ny, nz) = (img.width, img.height, 3);
    let geom = Geometry::new(
        [nx, ny, nz],
        [o.pixel_mm, o.pixel_mm, o.slice_mm],
        [
            -0.5 * (nx as f64 - 1.0) * o.pixel_mm,
            -0.5 * (ny as f64 - 1.0) * o.pixel_mm,
            -o.slice_mm,
        ],
    );
    let scale = (o.hu_at_grey255 - o.hu_at_grey0) / 255.0;
    let slice_hu: Vec<f32> = img
        .data
        .chunks_exact(img.channels)
        .map(|c| match (c[0], o.hu_at_black) {
            (0, Some(h)) => h as f32,
            (g, _) => (o.hu_at_grey0 + g as f64 * scale) as f32,
        })
        .collect();
    let slice_lab: Vec<u8> = m
        .data
        .chunks_exact(3)
        .map(|c| match [c[0], c[1], c[2]] {
            PNG_KIDNEY => KIDNEY_UNSPLIT,
            PNG_LIVER => organs::LIVER,
            _ => 0,
        })
        .collect();
    let ct = Volume::new(geom.clone(), slice_hu.repeat(nz))?;
    let truth = Volume::new(geom, slice_lab.repeat(nz))?;
    Ok(RealCase {
        name: image.display().to_string(),
        kind: CaseKind::Slice,
        ct,
        truth,
        organs: vec![TruthOrgan::Label(organs::LIVER), TruthOrgan::KidneyUnsplit],
    })
}

/// A DICOM or NIfTI CT with a label map or per-slice masks.
pub(crate) fn load_generic(
    ct_path: &Path,
    truth: &GenericTruth,
    ingest: &IngestConfig,
) -> Result<RealCase> {
    let (series, ct) = if nifti::is_nifti_path(ct_path) {
        (None, nifti::read_nifti(ct_path)?)
    } else {
        let (s, v) = dicom::read_single_series(ct_path, None, ingest)?;
        (Some(s), v)
    };
    let mut lab = Volume::filled(ct.geom.clone(), 0u8);
    let organs_v: Vec<TruthOrgan> = match truth {
        GenericTruth::LabelMap { path, map } => {
            let l = nifti::read_nifti_labels(path)?;
            let l = if l.geom.same_grid(&ct.geom, 1e-2) {
                l
            } else {
                // Another grid: carry labels onto the CT's by nearest neighbour
                // (patient space), as the dosimetry does with masks.
                tracing::warn!(
                    "{}: not on the CT grid, resampled (nearest)",
                    path.display()
                );
                l.resample_nearest(&ct.geom, 0)
            };
            let mut lut = [0u8; 256];
            for &(v, o) in map {
                lut[v as usize] = o.truth_label();
            }
            for (d, &s) in lab.data.iter_mut().zip(&l.data) {
                *d = lut[s as usize];
            }
            let mut os: Vec<TruthOrgan> = Vec::new();
            for &(_, o) in map {
                if !os.contains(&o) {
                    os.push(o);
                }
            }
            os
        }
        GenericTruth::SliceMasks { dir, organ } => {
            let masks = sorted_files(dir, "png")?;
            let nz = ct.geom.dims[2];
            let slots: Vec<usize> = match &series {
                Some(s) => dicom_slots(s, ingest, masks.len(), dir)?,
                None if masks.len() == nz => (0..nz).collect(),
                None => {
                    return Err(Error::input(format!(
                        "{}: {} masks for {nz} slices",
                        dir.display(),
                        masks.len()
                    )))
                }
            };
            paint_slice_masks(&mut lab, &masks, &slots, organ.truth_label())?;
            vec![*organ]
        }
    };
    Ok(RealCase {
        name: ct_path.display().to_string(),
        kind: CaseKind::Volume,
        ct,
        truth: lab,
        organs: organs_v,
    })
}

/// The middle slice of `v` alone, 10 mm thick so that mL read as cm².
fn middle_slice(v: &Volume<u8>) -> Volume<u8> {
    let [nx, ny, nz] = v.geom.dims;
    let k = nz / 2;
    let mut g = v.geom.clone();
    g.dims = [nx, ny, 1];
    g.origin = v.geom.index_to_patient([0.0, 0.0, k as f64]);
    g.spacing[2] = 10.0;
    Volume {
        geom: g,
        data: v.data[k * nx * ny..(k + 1) * nx * ny].to_vec(),
    }
}

/// Scores a prediction (organdose labels on the case's grid) against the
/// case's truth, per organ the truth has. Unsplit kidney truth is scored
/// against the prediction's kidney_left ∪ kidney_right.
pub fn score(pred: &Volume<u8>, case: &RealCase) -> Result<Vec<(String, OrganMetrics)>> {
    if !pred.geom.same_grid(&case.truth.geom, 1e-3) {
        return Err(Error::geometry(format!(
            "{}: prediction is not on the case's grid",
            case.name
        )));
    }
    let (pred, truth) = match case.kind {
        CaseKind::Volume => (pred.clone(), case.truth.clone()),
        CaseKind::Slice => (middle_slice(pred), middle_slice(&case.truth)),
    };
    let mut out = Vec::new();
    for &o in &case.organs {
        let mut m = match o {
            TruthOrgan::Label(l) => organ_metrics(&pred, &truth, l),
            TruthOrgan::KidneyUnsplit => {
                let p = pred.map(|v| {
                    if v == organs::KIDNEY_LEFT || v == organs::KIDNEY_RIGHT {
                        KIDNEY_UNSPLIT
                    } else {
                        v
                    }
                });
                organ_metrics(&p, &truth, KIDNEY_UNSPLIT)
            }
        };
        if case.kind == CaseKind::Slice {
            // One slice: every voxel is on the 3-D surface, so HD95 would mean nothing.
            m.hd95_mm = None;
        }
        out.push((o.name().to_string(), m));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, ct: png::ColorType, data: &[u8]) {
        let f = std::fs::File::create(path).expect("create png");
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w, h);
        enc.set_color(ct);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().expect("png header");
        wr.write_image_data(data).expect("png data");
    }

    #[test]
    fn label_mapping_parses_and_rejects() {
        let m = parse_label_mapping("1=liver, 2=kidney,3=kidney_right").expect("parse");
        assert_eq!(
            m,
            vec![
                (1, TruthOrgan::Label(organs::LIVER)),
                (2, TruthOrgan::KidneyUnsplit),
                (3, TruthOrgan::Label(organs::KIDNEY_RIGHT)),
            ]
        );
        assert!(parse_label_mapping("1=lung").is_err());
        assert!(parse_label_mapping("300=liver").is_err());
        assert!(parse_label_mapping("liver").is_err());
    }

    #[test]
    fn png_slice_geometry_hu_and_side() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (w, h) = (8usize, 6usize);
        let mut grey = vec![0u8; w * h];
        grey[2 * w + 1] = 255;
        let mut rgb = vec![0u8; w * h * 3];
        // Liver on the image's left (patient right), kidney on the right.
        rgb[(2 * w + 1) * 3..(2 * w + 1) * 3 + 3].copy_from_slice(&PNG_LIVER);
        rgb[(3 * w + 6) * 3..(3 * w + 6) * 3 + 3].copy_from_slice(&PNG_KIDNEY);
        let (ip, mp) = (dir.path().join("i.png"), dir.path().join("m.png"));
        write_png(&ip, w as u32, h as u32, png::ColorType::Grayscale, &grey);
        write_png(&mp, w as u32, h as u32, png::ColorType::Rgb, &rgb);
        let o = PngSliceOptions::default();
        let c = load_png_slice(&ip, &mp, &o).expect("load");
        assert_eq!(c.ct.geom.dims, [8, 6, 3]);
        assert_eq!(c.ct.get(1, 2, 1), o.hu_at_grey255 as f32);
        // Grey 0 is clipped: read as fat/air, not as the window's floor.
        assert_eq!(c.ct.get(0, 0, 1), -1000.0);
        assert_eq!(c.truth.get(1, 2, 0), organs::LIVER);
        assert_eq!(c.truth.get(6, 3, 2), KIDNEY_UNSPLIT);
        // LPS: the liver pixel is at negative x (patient right).
        let p = c.truth.geom.index_to_patient([1.0, 2.0, 1.0]);
        assert!(p[0] < 0.0 && p[2].abs() < 1e-9);
        // Scoring: a prediction with the kidney called "left" still counts.
        let mut pred = Volume::filled(c.truth.geom.clone(), 0u8);
        pred.set(6, 3, 1, organs::KIDNEY_LEFT);
        let s = score(&pred, &c).expect("score");
        let kid = &s.iter().find(|(n, _)| n == "kidney").expect("kidney").1;
        assert_eq!(kid.dice, Some(1.0));
        assert!(kid.hd95_mm.is_none());
        let liv = &s.iter().find(|(n, _)| n == "liver").expect("liver").1;
        assert_eq!(liv.dice, Some(0.0));
        // 1 pixel of 0.8 x 0.8 mm = 0.0064 cm².
        assert!((liv.truth_ml - 0.0064).abs() < 1e-9);
    }
}
