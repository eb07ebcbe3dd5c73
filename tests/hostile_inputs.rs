//! Files whose headers lie (issue 20, findings 1 and 8): each reader must give an
//! error naming the file, and must not allocate from the header's word. The
//! counting allocator refuses any single request above 256 MiB, so a reader that
//! trusts a header aborts this test instead of taking the machine's memory.

#[path = "common/alloc_meter.rs"]
mod alloc_meter;
#[path = "common/dicom_bytes.rs"]
mod dicom_bytes;

use organdose::config::Config;
use organdose::io::dicom::{read_header, read_single_series, scan};
use organdose::io::fault::{DicomFault, NiftiFault};
use organdose::io::nifti::{encode_nifti, read_nifti};
use organdose::volume::{Geometry, Volume};
use std::path::Path;

#[global_allocator]
static A: alloc_meter::AllocMeter = alloc_meter::AllocMeter;

/// Allocation allowed beyond the file's size: parser state, error strings, the
/// directory walk. A reader sizing anything from a lying header exceeds it.
const MARGIN: usize = 4 << 20;

fn check_bounded(name: &str, file_len: usize, largest: usize, peak: usize) {
    assert!(
        largest <= file_len + MARGIN && peak <= 4 * file_len + MARGIN,
        "{name}: largest allocation {largest} B, peak {peak} B for a {file_len}-byte file"
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

#[test]
fn lying_dicom_and_nifti_headers_are_errors_with_bounded_memory() {
    alloc_meter::set_cap(256 << 20);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::default().ingest;

    // Finding 1a: 2,000,000,000 frames declared, 16 x 12 x 8 frames of pixels present
    // (was: "memory allocation of 32000000000 bytes failed" in DicomSeries::slice_map).
    let frames = dicom_bytes::nm_multiframe(2_000_000_000, 16, 12, 16 * 12 * 8 * 2);
    let sub = dir.path().join("frames");
    std::fs::create_dir(&sub).expect("mkdir");
    let p = write(&sub, "nm_frames.dcm", &frames);
    let (r, largest, peak) = alloc_meter::measure(|| read_single_series(&sub, None, &cfg));
    let msg = r
        .map(|_| ())
        .expect_err("2e9 frames must be refused")
        .to_string();
    assert!(
        msg.contains("nm_frames.dcm") && msg.contains("2000000000"),
        "{msg}"
    );
    check_bounded("frames", frames.len(), largest, peak);
    // `inspect` shows the series with the problem, it does not abort.
    let (s, largest, peak) = alloc_meter::measure(|| scan(&sub).expect("scan"));
    let info = s.series[0].info(&cfg).expect("info");
    let problem = info.problem.expect("a problem");
    assert!(problem.contains("nm_frames.dcm"), "{problem}");
    check_bounded("frames inspect", frames.len(), largest, peak);
    // Frames that fit the voxel limit but not the pixel data.
    let short = dicom_bytes::nm_multiframe(100, 16, 12, 16 * 12 * 8 * 2);
    let sub2 = dir.path().join("short");
    std::fs::create_dir(&sub2).expect("mkdir");
    write(&sub2, "nm_short.dcm", &short);
    let msg = read_single_series(&sub2, None, &cfg)
        .map(|_| ())
        .expect_err("100 frames declared, 8 present")
        .to_string();
    assert!(
        msg.contains("nm_short.dcm") && msg.contains("truncated pixel data"),
        "{msg}"
    );
    // The honest file reads.
    let good = dicom_bytes::nm_multiframe(8, 16, 12, 16 * 12 * 8 * 2);
    let sub3 = dir.path().join("good");
    std::fs::create_dir(&sub3).expect("mkdir");
    write(&sub3, "nm_good.dcm", &good);
    let (_, v) = read_single_series(&sub3, None, &cfg).expect("honest file reads");
    assert_eq!(v.geom.dims, [16, 12, 8]);

    // Finding 1b: a 340-byte file whose UT element declares 0xFFFFFFF0 bytes (was:
    // `inspect` at 4.2 GB resident, the daemon killed in Ingest::poll -> read_header).
    let mut body = dicom_bytes::element(0x0008, 0x0060, "CS", b"NM", None);
    body.extend(dicom_bytes::element(
        0x0018,
        0x1030,
        "UT",
        b"protocol",
        Some(0xFFFF_FFF0),
    ));
    let mut ut = dicom_bytes::part10(dicom_bytes::NM_STORAGE, dicom_bytes::EXPLICIT_LE, &body);
    ut.resize(340, b' ');
    let p_ut = write(dir.path(), "ut_huge.dcm", &ut);
    let (r, largest, peak) = alloc_meter::measure(|| read_header(&p_ut));
    let msg = r
        .map(|_| ())
        .expect_err("UT past the end must be refused")
        .to_string();
    assert!(
        msg.contains("ut_huge.dcm")
            && msg.contains("(0018,1030)")
            && msg.contains("4294967280")
            && msg.contains("but 76 bytes remain"),
        "{msg}"
    );
    check_bounded("UT", ut.len(), largest, peak);
    // The same fault with its numbers, for code: the error's source says which
    // element, how long it claims to be and what the file holds.
    let e = read_header(&p_ut).map(|_| ()).expect_err("UT past the end");
    let fault = match &e {
        organdose::Error::Dicom {
            source: Some(s), ..
        } => s.downcast_ref::<DicomFault>().cloned(),
        _ => None,
    };
    match fault {
        Some(DicomFault::ElementTooLong {
            tag,
            declared,
            remaining,
            ..
        }) => {
            assert_eq!(tag, (0x0018, 0x1030));
            assert_eq!(declared, 0xFFFF_FFF0);
            assert_eq!(remaining, Some(76));
        }
        other => panic!("{other:?} from {e}"),
    }
    // The same length on an element nested in a sequence item, and on a meta element.
    let mut item = dicom_bytes::element(0x0008, 0x0104, "LO", b"x", Some(0xFFF0));
    item.truncate(item.len());
    let mut sq = Vec::new();
    sq.extend_from_slice(&[0x54, 0x00, 0x16, 0x00, b'S', b'Q', 0, 0]);
    sq.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    sq.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    sq.extend(dicom_bytes::element(
        0x0018,
        0x0031,
        "UT",
        b"Lu",
        Some(0x7FFF_FFF0),
    ));
    let nested = dicom_bytes::part10(dicom_bytes::NM_STORAGE, dicom_bytes::EXPLICIT_LE, &sq);
    let p_nested = write(dir.path(), "nested.dcm", &nested);
    let (r, largest, peak) = alloc_meter::measure(|| read_header(&p_nested));
    let msg = r
        .map(|_| ())
        .expect_err("nested length past the end")
        .to_string();
    assert!(
        msg.contains("nested.dcm") && msg.contains("(0018,0031)"),
        "{msg}"
    );
    check_bounded("nested", nested.len(), largest, peak);

    // Finding 8: vox_offset = 1e30 (was: a range panic in crates/io/src/nifti.rs).
    let g = Geometry::new([4, 3, 2], [1.0; 3], [0.0; 3]);
    let v = Volume::new(g, vec![1.0f32; 24]).expect("volume");
    let mut nii = encode_nifti(&v, "t");
    nii[108..112].copy_from_slice(&1e30f32.to_le_bytes());
    let p_nii = write(dir.path(), "far.nii", &nii);
    let (r, largest, peak) = alloc_meter::measure(|| read_nifti(&p_nii));
    let msg = r.map(|_| ()).expect_err("vox_offset 1e30").to_string();
    assert!(msg.contains("far.nii"), "{msg}");
    check_bounded("vox_offset", nii.len(), largest, peak);
    // dims of 32767^3 declared over 24 voxels of data.
    let mut big = encode_nifti(&v, "t");
    for a in 0..3 {
        big[42 + 2 * a..44 + 2 * a].copy_from_slice(&32767i16.to_le_bytes());
    }
    let p_big = write(dir.path(), "big.nii", &big);
    let (r, largest, peak) = alloc_meter::measure(|| read_nifti(&p_big));
    let msg = r.map(|_| ()).expect_err("huge dims").to_string();
    assert!(
        msg.contains("big.nii") && msg.contains("truncated"),
        "{msg}"
    );
    check_bounded("dims", big.len(), largest, peak);
    // With its numbers, for code: 32767^3 float32 voxels needed, 96 present.
    let e = read_nifti(&p_big).map(|_| ()).expect_err("huge dims");
    let fault = match &e {
        organdose::Error::Nifti {
            source: Some(s), ..
        } => s.downcast_ref::<NiftiFault>().cloned(),
        _ => None,
    };
    assert_eq!(
        fault,
        Some(NiftiFault::Truncated {
            needed: 32767usize.pow(3) * 4,
            present: 96,
        }),
        "{e}"
    );
    let _ = p;

    // A gzip bomb: a 4 x 3 x 2 header followed by 64 MB of zeros (was: all of it
    // decompressed into memory before the header was looked at).
    let mut bomb = encode_nifti(&v, "t");
    bomb.resize(bomb.len() + (64 << 20), 0);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &bomb).expect("gzip");
    let gz = enc.finish().expect("gzip");
    drop(bomb);
    let p_gz = write(dir.path(), "bomb.nii.gz", &gz);
    let (r, largest, peak) = alloc_meter::measure(|| read_nifti(&p_gz).map(|v| v.data.len()));
    assert_eq!(r.expect("the declared image reads"), 24);
    check_bounded("gzip bomb", gz.len(), largest, peak);
    // A small stream whose header declares 32767^3 float32 voxels.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &big).expect("gzip");
    let p_bgz = write(dir.path(), "big.nii.gz", &enc.finish().expect("gzip"));
    let msg = read_nifti(&p_bgz)
        .map(|_| ())
        .expect_err("huge dims in gzip")
        .to_string();
    assert!(msg.contains("big.nii.gz"), "{msg}");
}

/// The header walk must not refuse honest files in the other transfer
/// syntaxes (implicit VR, explicit big endian, deflated; written by pydicom
/// from the NM reference) nor compressed ones (RLE, JPEG 2000).
#[test]
fn the_header_walk_accepts_every_syntax_organdose_reads() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dicom");
    let cfg = Config::default().ingest;
    for name in [
        "nm_implicit_le.dcm",
        "nm_explicit_be.dcm",
        "nm_deflated.dcm",
        "nm_multiframe_rwv.dcm",
        "ct_rle_slice.dcm",
        "MR_small_jp2klossless.dcm",
        "CT_small.dcm",
    ] {
        let (_, v) = read_single_series(&corpus.join(name), None, &cfg)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!v.data.is_empty(), "{name}");
    }
    let (_, nm) =
        read_single_series(&corpus.join("nm_multiframe_rwv.dcm"), None, &cfg).expect("reference");
    for name in [
        "nm_implicit_le.dcm",
        "nm_explicit_be.dcm",
        "nm_deflated.dcm",
    ] {
        let (_, v) = read_single_series(&corpus.join(name), None, &cfg).expect("read");
        assert_eq!(
            v.data, nm.data,
            "{name}: voxels differ from the explicit-LE file"
        );
    }
}

/// Issue 42, finding 7: a CT slice cut inside its header (200 bytes) or empty
/// (0 bytes) was reported as "1 slice(s) missing", naming no file. The error
/// now names the file and why it could not be read.
#[test]
fn a_truncated_or_empty_slice_is_named_in_the_error() {
    let cfg = Config::default().ingest;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated/ct_axial");
    // The slice in the middle of the stack (by position): its loss is a gap.
    let mut by_z: Vec<(f64, std::path::PathBuf)> = std::fs::read_dir(&src)
        .expect("ct_axial")
        .map(|e| {
            let p = e.expect("entry").path();
            let z = read_header(&p).expect("header").position.expect("position")[2];
            (z, p)
        })
        .collect();
    by_z.sort_by(|a, b| a.0.total_cmp(&b.0));
    let middle = by_z[by_z.len() / 2].1.file_name().expect("name").to_owned();
    for keep in [200usize, 0] {
        let dir = tempfile::tempdir().expect("tempdir");
        for (_, p) in &by_z {
            std::fs::copy(p, dir.path().join(p.file_name().expect("name"))).expect("copy");
        }
        let victim = dir.path().join(&middle);
        let bytes = std::fs::read(&victim).expect("read");
        std::fs::write(&victim, &bytes[..keep]).expect("truncate");
        let msg = read_single_series(dir.path(), None, &cfg)
            .map(|_| ())
            .expect_err("a slice in the middle is gone")
            .to_string();
        assert!(
            msg.contains(&*middle.to_string_lossy()) && msg.contains("could not be read"),
            "{keep} bytes: {msg}"
        );
    }
}
