//! Readers and writers against independent tools (pydicom, nibabel: values in
//! tests/data/expected.json, made by tests/scripts/make_reference.py), geometry
//! round trips, left/right, and malformed input.

use organdose::config::Config;
use organdose::io::dicom::{read_single_series, scan};
use organdose::io::nifti::{read_nifti, write_nifti, NiftiFile};
use organdose::{Geometry, Volume};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(data_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn arr3(v: &Value) -> [f64; 3] {
    let a = v.as_array().unwrap();
    [
        a[0].as_f64().unwrap(),
        a[1].as_f64().unwrap(),
        a[2].as_f64().unwrap(),
    ]
}

fn read_case(case: &Value) -> Volume<f32> {
    let path = data_dir().join(case["path"].as_str().unwrap());
    let cfg = Config::default();
    match case["kind"].as_str().unwrap() {
        "dicom" => read_single_series(&path, None, &cfg.ingest).unwrap().1,
        _ => match case["frame"].as_u64() {
            Some(t) => NiftiFile::open(&path)
                .unwrap()
                .read_frame(&path, t as usize)
                .unwrap(),
            None => read_nifti(&path).unwrap(),
        },
    }
}

fn assert_geometry(name: &str, g: &Geometry, case: &Value) {
    let dims: Vec<usize> = case["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(g.dims.to_vec(), dims, "{name}: dims");
    let sp = arr3(&case["spacing"]);
    let or = arr3(&case["origin"]);
    for a in 0..3 {
        assert!(
            (g.spacing[a] - sp[a]).abs() < 1e-4,
            "{name}: spacing {:?} vs {sp:?}",
            g.spacing
        );
        assert!(
            (g.origin[a] - or[a]).abs() < 1e-3,
            "{name}: origin {:?} vs {or:?}",
            g.origin
        );
        let d = arr3(&case["direction"][a]);
        for r in 0..3 {
            assert!(
                (g.direction[a][r] - d[r]).abs() < 1e-5,
                "{name}: direction {a} {:?} vs {d:?}",
                g.direction[a]
            );
        }
    }
}

fn assert_values(name: &str, v: &Volume<f32>, case: &Value) {
    let e = &case["values"];
    let sum: f64 = v.data.iter().map(|&x| x as f64).sum();
    let esum = e["sum"].as_f64().unwrap();
    assert!(
        (sum - esum).abs() <= 1e-5 * esum.abs().max(1.0),
        "{name}: sum {sum} vs {esum}"
    );
    for s in e["samples"].as_array().unwrap() {
        let s = s.as_array().unwrap();
        let (i, j, k) = (
            s[0].as_u64().unwrap() as usize,
            s[1].as_u64().unwrap() as usize,
            s[2].as_u64().unwrap() as usize,
        );
        let want = s[3].as_f64().unwrap();
        let got = v.get(i, j, k) as f64;
        assert!(
            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{name}: voxel ({i},{j},{k}) {got} vs {want}"
        );
    }
}

#[test]
fn every_reference_case_matches_pydicom_and_nibabel() {
    let exp = expected();
    let cases = exp["cases"].as_object().unwrap();
    assert!(cases.len() >= 15);
    for (name, case) in cases {
        let v = read_case(case);
        assert_geometry(name, &v.geom, case);
        assert_values(name, &v, case);
    }
}

/// Patient coordinates of the brightest voxel.
fn marker_position(v: &Volume<f32>) -> [f64; 3] {
    let (pos, _) =
        v.data.iter().enumerate().fold(
            (0, f32::MIN),
            |(bp, bv), (p, &x)| if x > bv { (p, x) } else { (bp, bv) },
        );
    let [nx, ny, _] = v.geom.dims;
    let idx = [
        (pos % nx) as f64,
        ((pos / nx) % ny) as f64,
        (pos / (nx * ny)) as f64,
    ];
    v.geom.index_to_patient(idx)
}

fn assert_close3(what: &str, a: [f64; 3], b: [f64; 3], tol: f64) {
    for r in 0..3 {
        assert!((a[r] - b[r]).abs() <= tol, "{what}: {a:?} vs {b:?}");
    }
}

#[test]
fn left_stays_left_through_read_write_convert_and_resample() {
    let exp = expected();
    let dir = tempfile::tempdir().unwrap();
    for (name, case) in exp["cases"].as_object().unwrap() {
        let Some(marker) = case.get("marker_lps") else {
            continue;
        };
        let marker = arr3(marker);
        let v = read_case(case);
        assert_close3(&format!("{name}: read"), marker_position(&v), marker, 1e-3);
        for ext in ["nii", "nii.gz"] {
            let out = dir.path().join(format!("{name}.{ext}"));
            write_nifti(&v, &out, "test").unwrap();
            let back = read_nifti(&out).unwrap();
            assert_close3(
                &format!("{name}: NIfTI {ext}"),
                marker_position(&back),
                marker,
                1e-3,
            );
            assert_eq!(back.data, v.data, "{name}: voxel values through NIfTI");
        }
        // Resampled onto a plain axial LPS grid covering the volume: still at the same place.
        let g = Geometry::new(
            [64, 64, 64],
            [1.0, 1.0, 1.0],
            [marker[0] - 32.0, marker[1] - 32.0, marker[2] - 32.0],
        );
        let r = v.resample_nearest(&g, -2000.0);
        // Nearest neighbour: within half a source voxel (plus half a target voxel).
        let tol = 0.5 * v.geom.spacing.iter().cloned().fold(0.0, f64::max) + 0.5;
        assert_close3(
            &format!("{name}: resampled"),
            marker_position(&r),
            marker,
            tol,
        );
        // The patient's left is +x in LPS: a marker placed at x > 0 stays there.
        assert_eq!(
            marker_position(&r)[0] > 0.0,
            marker[0] > 0.0,
            "{name}: side"
        );
    }
}

#[test]
fn convert_cli_round_trip_keeps_corners_within_1e3_mm() {
    let exp = expected();
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "ct_axial",
        "ct_flipped",
        "ct_oblique",
        "nm_multiframe_rwv",
        "nm_singleframe",
    ] {
        let case = &exp["cases"][name];
        let input = data_dir().join(case["path"].as_str().unwrap());
        let out = dir.path().join(format!("{name}.nii.gz"));
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_organdose"))
            .arg("convert")
            .arg(&input)
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "{name}: convert failed");
        let dicom = read_case(case);
        let nifti = read_nifti(&out).unwrap();
        let [nx, ny, nz] = dicom.geom.dims;
        for c in [
            [0, 0, 0],
            [nx - 1, 0, 0],
            [0, ny - 1, 0],
            [0, 0, nz - 1],
            [nx - 1, ny - 1, nz - 1],
        ] {
            let idx = c.map(|v| v as f64);
            assert_close3(
                &format!("{name}: corner {c:?}"),
                nifti.geom.index_to_patient(idx),
                dicom.geom.index_to_patient(idx),
                1e-3,
            );
        }
        assert_eq!(nifti.data, dicom.data);
    }
}

fn dicom_err(rel: &str) -> String {
    let path = data_dir().join(rel);
    match read_single_series(&path, None, &Config::default().ingest) {
        Ok(_) => panic!("{rel}: read succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_dicom_gives_clear_errors() {
    let cases = [
        ("generated/bad/truncated.dcm", "truncated"),
        ("generated/bad/header_only.dcm", "no readable DICOM series"),
        ("generated/bad/not_dicom.dcm", "not DICOM"),
        ("generated/bad/no_pixel", "no pixel data"),
        ("generated/bad/mixed_sizes", "mixed image sizes"),
        ("generated/bad/missing_slice", "1 slice(s) missing"),
        ("generated/bad/duplicate_slice", "duplicate slice"),
        ("generated/bad/gantry_tilt", "gantry tilt"),
        ("external/MR_truncated.dcm", ""),
    ];
    for (rel, want) in cases {
        let msg = dicom_err(rel);
        assert!(msg.contains(want), "{rel}: '{msg}' lacks '{want}'");
    }
}

#[test]
fn malformed_nifti_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let g = Geometry::new([4, 3, 2], [1.0, 1.0, 1.0], [0.0; 3]);
    let mut v = Volume::filled(g, 1.0f32);
    v.data[5] = f32::NAN;
    let nan = dir.path().join("nan.nii");
    write_nifti(&v, &nan, "nan").unwrap();
    let msg = read_nifti(&nan).unwrap_err().to_string();
    assert!(msg.contains("NaN"), "{msg}");
    // A file with NaN written by another tool (nibabel's test data).
    let msg = read_nifti(&data_dir().join("external/resampled_anat_moved.nii"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("NaN"), "{msg}");

    // Zero spacing: patch pixdim[1] and the sform column to 0.
    let good = dir.path().join("good.nii");
    v.data[5] = 0.0;
    write_nifti(&v, &good, "ok").unwrap();
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[80..84].copy_from_slice(&0f32.to_le_bytes());
    for r in 0..3 {
        let off = 280 + 16 * r;
        bytes[off..off + 4].copy_from_slice(&0f32.to_le_bytes());
    }
    let zero = dir.path().join("zero.nii");
    std::fs::write(&zero, &bytes).unwrap();
    let msg = read_nifti(&zero).unwrap_err().to_string();
    assert!(msg.contains("zero or invalid voxel size"), "{msg}");

    // Truncated data.
    let trunc = dir.path().join("trunc.nii");
    let good_bytes = std::fs::read(&good).unwrap();
    std::fs::write(&trunc, &good_bytes[..good_bytes.len() - 8]).unwrap();
    assert!(read_nifti(&trunc)
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    // Not NIfTI at all; NIfTI-2; a 4-D file read as 3-D.
    let junk = dir.path().join("junk.nii");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(read_nifti(&junk)
        .unwrap_err()
        .to_string()
        .contains("shorter than"));
    let n2 = data_dir().join("external/example_nifti2.nii.gz");
    assert!(read_nifti(&n2)
        .unwrap_err()
        .to_string()
        .contains("sizeof_hdr"));
    let f4 = data_dir().join("external/functional.nii");
    assert!(read_nifti(&f4).unwrap_err().to_string().contains("volumes"));
    // Corrupt gzip.
    let gz = dir.path().join("bad.nii.gz");
    std::fs::write(&gz, b"\x1f\x8b\x08\x00garbage").unwrap();
    assert!(read_nifti(&gz).unwrap_err().to_string().contains("gzip"));
}

#[test]
fn scan_groups_mixed_series_regardless_of_names_and_nesting() {
    let s = scan(&data_dir().join("generated")).unwrap();
    let uids: std::collections::BTreeSet<_> = s.series.iter().map(|x| x.uid.clone()).collect();
    assert_eq!(uids.len(), s.series.len());
    // 5 good CT + 2 NM multi-frame + 1 NM single-frame + 5 bad series folders.
    assert_eq!(
        s.series.len(),
        13,
        "{:?}",
        s.series.iter().map(|x| x.files.len()).collect::<Vec<_>>()
    );
    assert!(s.rejected.iter().any(|(p, _)| p.ends_with("not_dicom.dcm")));
}

#[test]
fn inspect_cli_reports_every_series_as_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_organdose"))
        .args(["inspect", "--json"])
        .arg(data_dir().join("generated"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 13);
    let nm = series
        .iter()
        .find(|s| s["source"].as_str().unwrap().ends_with("nm_multiframe_rwv"))
        .unwrap();
    assert_eq!(nm["modality"], "NM");
    assert_eq!(nm["units"], "Bq/mL");
    assert_eq!(nm["dims"], serde_json::json!([16, 12, 8]));
    let rp = &nm["radiopharmaceutical"];
    assert_eq!(rp["nuclide"], "^177^Lutetium");
    assert!((rp["total_dose_mbq"].as_f64().unwrap() - 7400.0).abs() < 1e-6);
    assert_eq!(rp["start_datetime"], "2026-03-01T08:00:00");
    assert_eq!(nm["acquisition_datetime"], "2026-03-01T09:00:00");
    let tilt = series
        .iter()
        .find(|s| s["source"].as_str().unwrap().ends_with("gantry_tilt"))
        .unwrap();
    assert!(tilt["problem"].as_str().unwrap().contains("gantry tilt"));
    assert_eq!(v["rejected"].as_array().unwrap().len(), 2);
}

/// Issue 20 finding 9: a series folder linked into the export was reported as
/// "not DICOM"; links are followed now, and a link loop is walked once.
#[test]
fn symlinked_series_folders_are_read_and_loops_end() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("elsewhere");
    std::fs::create_dir(&real).unwrap();
    let src = data_dir().join("generated/ct_axial");
    let mut n = 0;
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), real.join(e.file_name())).unwrap();
        n += 1;
    }
    let export = dir.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::os::unix::fs::symlink(&real, export.join("CT")).unwrap();
    std::os::unix::fs::symlink(&export, export.join("loop")).unwrap();
    let s = scan(&export).unwrap();
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    assert_eq!(s.series.len(), 1);
    assert_eq!(s.series[0].files.len(), n);
    let (_, v) = read_single_series(&export, None, &Config::default().ingest).unwrap();
    assert_eq!(v.geom.dims[2], n);
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
}

/// Issue 42, finding 3: the same series exported twice (folders `A/` and
/// `B/`, identical files) was refused as "duplicate slice", and a multi-frame
/// SPECT twice as "2 files in a series holding a multi-frame image". Identical
/// instances count once; an instance whose copies differ names both files.
#[test]
fn identical_copies_count_once_and_conflicting_ones_name_both_files() {
    let cfg = Config::default().ingest;
    for series in ["ct_axial", "nm_multiframe_rescale"] {
        let src = data_dir().join("generated").join(series);
        let (_, alone) = read_single_series(&src, None, &cfg).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&src, &tmp.path().join("A"));
        copy_dir(&src, &tmp.path().join("B"));
        let (s, twice) = read_single_series(tmp.path(), None, &cfg)
            .unwrap_or_else(|e| panic!("{series} exported twice: {e}"));
        assert_eq!(twice.geom.dims, alone.geom.dims, "{series}");
        assert_eq!(twice.data, alone.data, "{series}");
        assert!(
            s.files
                .iter()
                .all(|h| h.path.starts_with(tmp.path().join("A"))),
            "{series}: the first copy (path order) is the one read"
        );
        // One instance of B changed in its last byte (pixel data): a conflict.
        let mut b: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("B"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        b.sort();
        let victim = &b[0];
        let mut bytes = std::fs::read(victim).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0x5A;
        std::fs::write(victim, &bytes).unwrap();
        let e = read_single_series(tmp.path(), None, &cfg)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        let twin = tmp.path().join("A").join(victim.file_name().unwrap());
        assert!(
            e.contains("different data")
                && e.contains(&victim.display().to_string())
                && e.contains(&twin.display().to_string()),
            "{series}: {e}"
        );
    }
}
