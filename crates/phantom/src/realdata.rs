//! Readers for the real anatomy the phantom can be built from (`--anatomy real`):
//! WORD and AMOS abdominal label maps, KiTS23 kidney label maps and the ICRP-110
//! adult reference voxel phantoms. The data are third-party, read in place from the
//! data folder (never copied into the repository; `scripts/fetch-anatomy.sh` fetches
//! them; README.md, "Licences", and scripts/anatomy-manifest.txt name sources and licences):
//!
//! - `anatomy/word/WORD_V0.1.0_labelsTs.zip`: `labelsTs/word_XXXX.nii.gz` entries;
//! - `anatomy/amos/amos_0013_labels.nii.gz`;
//! - `anatomy/kits23/case_XXXXX.nii.gz`;
//! - `anatomy/icrp110/icrp110_g4dat.tar.gz` (or Geant4's `ICRPdata.tar.gz`, the
//!   same files one folder deeper): `ICRP110_g4dat/AM/AM_sliceN.g4dat`
//!   (three lines of dims, columns rows slices, then the organ IDs of one slice) and
//!   `OrganMasses.dat` (organ ID, male g, female g).
//!
//! Archives are read as streams: only the wanted entry is decompressed, and every
//! entry's size is checked before it is read into memory.

use crate::error::{Error, FaultKind, Result};
use crate::io::nifti::read_nifti_labels_bytes;
use crate::volume::{Geometry, Volume};
use flate2::read::GzDecoder;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Largest archive entry or label file read into memory (compressed bytes): the
/// largest real entry is a few MB; this only stops a corrupt size field.
const MAX_ENTRY_BYTES: u64 = 256 << 20;
/// Largest ICRP-110 phantom accepted (voxels): AF is 299 x 137 x 348 = 14.3 M.
const MAX_ICRP_VOXELS: usize = 64 << 20;

/// The environment variable naming the data folder (what `scripts/fetch-anatomy.sh
/// DIR` filled); `--anatomy-data` wins over it.
pub(crate) const DATA_ENV: &str = "ORGANDOSE_ANATOMY_DATA";

/// How to get the real anatomy, said wherever it is missing (one line).
pub const FETCH_HINT: &str = "scripts/fetch-anatomy.sh DIR, then ORGANDOSE_ANATOMY_DATA=DIR \
     (or --anatomy-data DIR)";

/// The data folder used when none is given: `$ORGANDOSE_ANATOMY_DATA` when set (a
/// fetched copy anywhere; also how tests are pointed away from the data), else
/// `../shared/data` beside the current directory if it exists, else beside the
/// crate's manifest (where tests and `cargo run` find it), else the former (so the
/// error names a sensible path).
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DATA_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let here = PathBuf::from("../shared/data");
    if here.is_dir() {
        return here;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if manifest.is_dir() {
        return manifest;
    }
    here
}

/// Paths of the sources inside a data folder.
#[derive(Debug, Clone)]
pub struct DataPaths {
    pub root: PathBuf,
}

impl DataPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataPaths { root: root.into() }
    }
    pub fn word_zip(&self) -> PathBuf {
        self.root.join("anatomy/word/WORD_V0.1.0_labelsTs.zip")
    }
    pub fn amos(&self) -> PathBuf {
        self.root.join("anatomy/amos/amos_0013_labels.nii.gz")
    }
    pub(crate) fn kits_dir(&self) -> PathBuf {
        self.root.join("anatomy/kits23")
    }
    /// The ICRP-110 archive: `icrp110_g4dat.tar.gz` (a repack of the g4dat files, as
    /// kept beside this project) if present, else Geant4's own `ICRPdata.tar.gz` (what
    /// `scripts/fetch-anatomy.sh` downloads): the readers find members by file name,
    /// so the two layouts read the same.
    pub fn icrp_tar(&self) -> PathBuf {
        let dir = self.root.join("anatomy/icrp110");
        let repack = dir.join("icrp110_g4dat.tar.gz");
        if repack.is_file() {
            return repack;
        }
        let upstream = dir.join("ICRPdata.tar.gz");
        if upstream.is_file() {
            return upstream;
        }
        repack
    }
    /// Names the first source that is missing, if any (the WORD zip and the ICRP
    /// tar are required; KiTS23 and AMOS are optional extras).
    pub fn check(&self) -> Result<()> {
        for p in [self.word_zip(), self.icrp_tar()] {
            if !p.is_file() {
                return Err(Error::input(format!(
                    "real anatomy source {} not found (data folder {}; get it with {FETCH_HINT}, \
                     or use --anatomy geometric)",
                    p.display(),
                    self.root.display()
                )));
            }
        }
        Ok(())
    }
    /// KiTS23 case files, sorted by name (empty when the folder is absent).
    pub fn kits_cases(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.kits_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("case_") && n.ends_with(".nii.gz"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// WORD label values (dataset README).
pub mod word {
    pub const LIVER: u8 = 1;
    pub const SPLEEN: u8 = 2;
    pub const KIDNEY_LEFT: u8 = 3;
    pub const KIDNEY_RIGHT: u8 = 4;
    pub(crate) const STOMACH: u8 = 5;
    pub(crate) const GALLBLADDER: u8 = 6;
    pub(crate) const ESOPHAGUS: u8 = 7;
    pub(crate) const PANCREAS: u8 = 8;
    pub(crate) const DUODENUM: u8 = 9;
    pub(crate) const COLON: u8 = 10;
    pub(crate) const INTESTINE: u8 = 11;
    pub(crate) const ADRENAL: u8 = 12;
    pub(crate) const RECTUM: u8 = 13;
    pub(crate) const BLADDER: u8 = 14;
    pub(crate) const FEMUR_LEFT: u8 = 15;
    pub(crate) const FEMUR_RIGHT: u8 = 16;
}

/// AMOS label values mapped onto WORD's, so one organ layout code serves both
/// (aorta, vena cava and prostate/uterus have no WORD label: 0).
pub fn amos_to_word(l: u8) -> u8 {
    match l {
        1 => word::SPLEEN,
        2 => word::KIDNEY_RIGHT,
        3 => word::KIDNEY_LEFT,
        4 => word::GALLBLADDER,
        5 => word::ESOPHAGUS,
        6 => word::LIVER,
        7 => word::STOMACH,
        10 => word::PANCREAS,
        11 | 12 => word::ADRENAL,
        13 => word::DUODENUM,
        14 => word::BLADDER,
        _ => 0,
    }
}

fn read_limited(mut r: impl Read, size: u64, what: &Path) -> Result<Vec<u8>> {
    if size > MAX_ENTRY_BYTES {
        return Err(Error::input(format!(
            "{}: {size} bytes, more than the {MAX_ENTRY_BYTES} accepted",
            what.display()
        )));
    }
    let mut buf = Vec::with_capacity(size as usize);
    r.by_ref()
        .take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(what, e))?;
    if buf.len() as u64 > MAX_ENTRY_BYTES {
        return Err(Error::input(format!(
            "{}: longer than its stated size",
            what.display()
        )));
    }
    Ok(buf)
}

fn zip_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::library(
        FaultKind::Input,
        format!("{}: zip archive", path.display()),
        e.to_string(),
    )
}

/// Names of the `.nii.gz` entries of a zip archive, sorted.
pub fn zip_label_entries(zip_path: &Path) -> Result<Vec<String>> {
    let f = File::open(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let z = zip::ZipArchive::new(BufReader::new(f)).map_err(|e| zip_err(zip_path, e))?;
    let mut names = Vec::new();
    for n in z.file_names() {
        let n = n.map_err(|e| zip_err(zip_path, e))?;
        if n.ends_with(".nii.gz") || n.ends_with(".nii") {
            names.push(n.into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads one label-map entry of a zip archive (only that entry is decompressed).
pub fn read_zip_label_map(zip_path: &Path, entry: &str) -> Result<Volume<u8>> {
    let f = File::open(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let mut z = zip::ZipArchive::new(BufReader::new(f)).map_err(|e| zip_err(zip_path, e))?;
    let name = zip_path.join(entry);
    let e = z.by_name(entry).map_err(|e| zip_err(&name, e))?;
    let size = e.size();
    let bytes = read_limited(e, size, &name)?;
    read_nifti_labels_bytes(bytes, &name)
}

/// Reads a label map file (`.nii` or `.nii.gz`) into u8 labels.
pub fn read_label_map(path: &Path) -> Result<Volume<u8>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let bytes = read_limited(f, size, path)?;
    read_nifti_labels_bytes(bytes, path)
}

/// Number of voxels of a `.nii` / `.nii.gz` label map, from its header alone
/// (only the first 348 bytes are decompressed).
pub fn label_map_voxels(path: &Path) -> Result<usize> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = vec![0u8; 348];
    let gz = path.to_string_lossy().ends_with(".gz");
    let read = if gz {
        GzDecoder::new(BufReader::new(f)).read_exact(&mut head)
    } else {
        BufReader::new(f).read_exact(&mut head)
    };
    read.map_err(|e| Error::io(path, e))?;
    let h = crate::io::nifti::NiftiHeader::parse(&head, path)?;
    Ok(h.dims3().iter().product::<usize>() * h.frames())
}

/// One ICRP-110 reference phantom: organ IDs (ID values of `XX_organs.dat`) on an
/// axis-aligned LPS grid. The arrays run columns right to left (+x LPS), rows
/// front to back (+y), slices toes to vertex (+z) (P110 README), so index order is
/// already LPS; the origin is put at the first voxel of the first slice read.
#[derive(Debug, Clone)]
pub struct IcrpPhantom {
    /// "AM" or "AF".
    pub name: String,
    /// First slice held (0-based, of the whole phantom).
    pub first_slice: usize,
    pub ids: Volume<u8>,
}

/// Voxel sizes (mm) of the ICRP-110 phantoms (ICRP Publication 110, Table 3):
/// they are not stored in the g4dat files.
pub(crate) fn icrp_voxel_mm(name: &str) -> Option<[f64; 3]> {
    match name {
        "AM" => Some([2.137, 2.137, 8.0]),
        "AF" => Some([1.775, 1.775, 4.84]),
        _ => None,
    }
}

fn tar_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::library(
        FaultKind::Input,
        format!("{}: tar.gz archive", path.display()),
        e.to_string(),
    )
}

/// Parses one g4dat slice: three dims (columns, rows, slices), then columns x rows
/// organ IDs.
pub(crate) fn parse_g4dat_slice(text: &str, what: &Path) -> Result<([usize; 3], Vec<u8>)> {
    let bad = |m: String| Error::input(format!("{}: {m}", what.display()));
    let mut tok = text.split_ascii_whitespace();
    let mut dims = [0usize; 3];
    for d in dims.iter_mut() {
        *d = tok
            .next()
            .and_then(|t| t.parse().ok())
            .filter(|&v: &usize| (1..=4096).contains(&v))
            .ok_or_else(|| bad("missing or invalid dimension line".into()))?;
    }
    let n = dims[0] * dims[1];
    let mut ids = Vec::with_capacity(n);
    for t in tok {
        let v: u16 = t
            .parse()
            .map_err(|_| bad(format!("organ ID {t:?} is not a number")))?;
        let v = u8::try_from(v).map_err(|_| bad(format!("organ ID {v} above 255")))?;
        ids.push(v);
        if ids.len() > n {
            break;
        }
    }
    if ids.len() != n {
        return Err(bad(format!(
            "{} organ IDs, {} x {} = {n} expected",
            ids.len(),
            dims[0],
            dims[1]
        )));
    }
    Ok((dims, ids))
}

/// Slice number (1-based) of a member named `.../XX/XX_sliceN.g4dat`.
fn g4dat_slice_number(path: &str, name: &str) -> Option<usize> {
    let file = path.rsplit('/').next()?;
    let rest = file.strip_prefix(name)?.strip_prefix("_slice")?;
    rest.strip_suffix(".g4dat")?.parse().ok()
}

/// Reads phantom `name` ("AM" or "AF") from the tar.gz, keeping slices
/// `slices.0..slices.1` (0-based, clipped to the phantom); the archive is read once,
/// as a stream.
pub fn read_icrp110(tar_gz: &Path, name: &str, slices: (usize, usize)) -> Result<IcrpPhantom> {
    let voxel = icrp_voxel_mm(name)
        .ok_or_else(|| Error::input(format!("ICRP-110 phantom {name:?}: AM or AF")))?;
    let f = File::open(tar_gz).map_err(|e| Error::io(tar_gz, e))?;
    let mut ar = tar::Archive::new(GzDecoder::new(BufReader::new(f)));
    let mut dims: Option<[usize; 3]> = None;
    let mut data: Vec<u8> = Vec::new();
    let mut have: Vec<bool> = Vec::new();
    let (mut lo, mut hi) = slices;
    for entry in ar.entries().map_err(|e| tar_err(tar_gz, e))? {
        let mut entry = entry.map_err(|e| tar_err(tar_gz, e))?;
        let path = entry
            .path()
            .map_err(|e| tar_err(tar_gz, e))?
            .to_string_lossy()
            .into_owned();
        let Some(num) = g4dat_slice_number(&path, name) else {
            continue;
        };
        let what = tar_gz.join(&path);
        if num == 0 {
            return Err(Error::input(format!("{}: slice 0", what.display())));
        }
        let k = num - 1;
        if k < lo || k >= hi {
            continue;
        }
        let size = entry.header().size().map_err(|e| tar_err(&what, e))?;
        let bytes = read_limited(&mut entry, size, &what)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::input(format!("{}: not text", what.display())))?;
        let (d, ids) = parse_g4dat_slice(&text, &what)?;
        match dims {
            None => {
                lo = lo.min(d[2]);
                hi = hi.min(d[2]);
                let n = d[0] * d[1] * (hi - lo);
                if n > MAX_ICRP_VOXELS {
                    return Err(Error::input(format!(
                        "{}: {} x {} x {} voxels, more than {MAX_ICRP_VOXELS}",
                        what.display(),
                        d[0],
                        d[1],
                        hi - lo
                    )));
                }
                data = vec![0u8; n];
                have = vec![false; hi - lo];
                dims = Some(d);
            }
            Some(d0) if d0 != d => {
                return Err(Error::input(format!(
                    "{}: dims {d:?}, other slices have {d0:?}",
                    what.display()
                )));
            }
            _ => {}
        }
        if k >= hi {
            continue;
        }
        let n = d[0] * d[1];
        data[(k - lo) * n..(k - lo + 1) * n].copy_from_slice(&ids);
        have[k - lo] = true;
    }
    let d = dims.ok_or_else(|| {
        Error::input(format!(
            "{}: no {name} slices in {}..{}",
            tar_gz.display(),
            slices.0,
            slices.1
        ))
    })?;
    if let Some(miss) = have.iter().position(|h| !h) {
        return Err(Error::input(format!(
            "{}: {name} slice {} missing",
            tar_gz.display(),
            lo + miss + 1
        )));
    }
    let geom = Geometry::new(
        [d[0], d[1], hi - lo],
        voxel,
        [0.0, 0.0, lo as f64 * voxel[2]],
    );
    Ok(IcrpPhantom {
        name: name.to_string(),
        first_slice: lo,
        ids: Volume::new(geom, data)?,
    })
}

/// Reference organ masses of `OrganMasses.dat` in the tar.gz: (ID, male g, female g).
pub fn read_icrp_organ_masses(tar_gz: &Path) -> Result<Vec<(u8, f64, f64)>> {
    let f = File::open(tar_gz).map_err(|e| Error::io(tar_gz, e))?;
    let mut ar = tar::Archive::new(GzDecoder::new(BufReader::new(f)));
    for entry in ar.entries().map_err(|e| tar_err(tar_gz, e))? {
        let mut entry = entry.map_err(|e| tar_err(tar_gz, e))?;
        let path = entry
            .path()
            .map_err(|e| tar_err(tar_gz, e))?
            .to_string_lossy()
            .into_owned();
        if !path.ends_with("OrganMasses.dat") {
            continue;
        }
        let what = tar_gz.join(&path);
        let size = entry.header().size().map_err(|e| tar_err(&what, e))?;
        let bytes = read_limited(&mut entry, size, &what)?;
        let text = String::from_utf8_lossy(&bytes);
        let mut out = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 {
                continue;
            }
            if let (Ok(id), Ok(m), Ok(w)) = (f[0].parse::<u8>(), f[1].parse(), f[2].parse()) {
                out.push((id, m, w));
            }
        }
        return Ok(out);
    }
    Err(Error::input(format!(
        "{}: no OrganMasses.dat",
        tar_gz.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::nifti::encode_nifti;
    use std::io::Write;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("organdose-realdata-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d.join(name)
    }

    #[test]
    fn zip_entry_round_trip() {
        let g = Geometry::new([4, 3, 2], [0.7, 0.7, 3.0], [0.0; 3]);
        let data: Vec<u8> = (0..24).map(|i| (i % 4) as u8).collect();
        let nii = encode_nifti(&Volume::new(g, data.clone()).expect("vol"), "t");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&nii).expect("gz");
        let gz = gz.finish().expect("gz");
        let path = tmp("t.zip");
        {
            let f = File::create(&path).expect("create");
            let mut w = zip::ZipWriter::new(f);
            let opt = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file("labelsTs/word_0002.nii.gz", opt)
                .expect("start");
            w.write_all(&gz).expect("write");
            w.start_file("labelsTs/readme.txt", opt).expect("start");
            w.write_all(b"x").expect("write");
            w.start_file("labelsTs/word_0001.nii.gz", opt)
                .expect("start");
            w.write_all(&gz).expect("write");
            w.finish().expect("finish");
        }
        let names = zip_label_entries(&path).expect("list");
        assert_eq!(
            names,
            vec!["labelsTs/word_0001.nii.gz", "labelsTs/word_0002.nii.gz"]
        );
        let v = read_zip_label_map(&path, &names[1]).expect("read");
        assert_eq!(v.data, data);
        assert_eq!(v.geom.dims, [4, 3, 2]);
        let e = read_zip_label_map(&path, "labelsTs/nope.nii.gz").unwrap_err();
        assert!(e.to_string().contains("nope.nii.gz"), "{e}");
    }

    fn g4dat(dims: [usize; 3], ids: &[u8]) -> String {
        let mut s = format!("{}\n{}\n{}\n", dims[0], dims[1], dims[2]);
        for c in ids.chunks(5) {
            let line: Vec<String> = c.iter().map(|v| v.to_string()).collect();
            s.push_str(&line.join(" "));
            s.push('\n');
        }
        s
    }

    #[test]
    fn icrp_tar_round_trip() {
        // 3 columns x 2 rows x 4 slices; slice k holds k*10 + index.
        let dims = [3usize, 2, 4];
        let path = tmp("icrp.tar.gz");
        {
            let f = File::create(&path).expect("create");
            let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            let mut b = tar::Builder::new(gz);
            let mut add = |name: &str, text: &str| {
                let mut h = tar::Header::new_gnu();
                h.set_size(text.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, text.as_bytes())
                    .expect("append");
            };
            add(
                "./ICRP110_g4dat/OrganMasses.dat",
                "Organ ID\tMale (g)\tFemale (g)\n0\t0\t0\n95\t1800.01\t1400\n",
            );
            // Out of order, as in the real archive.
            for k in [3usize, 0, 2, 1] {
                let ids: Vec<u8> = (0..6).map(|i| (k * 10 + i) as u8).collect();
                add(
                    &format!("./ICRP110_g4dat/AM/AM_slice{}.g4dat", k + 1),
                    &g4dat(dims, &ids),
                );
            }
            b.into_inner().expect("tar").finish().expect("gz");
        }
        let p = read_icrp110(&path, "AM", (1, 3)).expect("read");
        assert_eq!(p.ids.geom.dims, [3, 2, 2]);
        assert_eq!(p.ids.get(2, 1, 0), 15);
        assert_eq!(p.ids.get(0, 0, 1), 20);
        assert_eq!(p.ids.geom.origin[2], 8.0);
        let all = read_icrp110(&path, "AM", (0, 100)).expect("read");
        assert_eq!(all.ids.geom.dims, [3, 2, 4]);
        assert_eq!(all.ids.get(1, 0, 3), 31);
        assert!(read_icrp110(&path, "AF", (0, 100)).is_err());
        let m = read_icrp_organ_masses(&path).expect("masses");
        assert_eq!(m, vec![(0, 0.0, 0.0), (95, 1800.01, 1400.0)]);
        // A short slice is an error naming the member.
        let e = parse_g4dat_slice("3\n2\n4\n1 2 3\n", Path::new("AM_slice9.g4dat")).unwrap_err();
        assert!(e.to_string().contains("AM_slice9"), "{e}");
    }
}
