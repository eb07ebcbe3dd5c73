//! The DICOM outputs (RT Structure Set, SEG, RT Dose, Encapsulated PDF) judged by
//! outside tools: dciodvfy (Debian's dicom3tools) must report no error on any
//! object, and pydicom/highdicom (tests/scripts/check_dicom_out.py) must read the
//! masks and doses back, placed by the geometry stored in the objects, equal to
//! the label map and dose map they were made from, through head-first and
//! feet-first, flipped rows and columns, slices in reverse file order, coronal
//! and oblique planes. The left kidney is drawn on the patient's left (+x in LPS)
//! and checked there in every object.
//!
//! The tools are installed by `.ci/run` (pinned); there ORGANDOSE_REQUIRE_TOOLS=1
//! makes a missing tool a failure. Elsewhere a test without its tools says so and
//! passes without checking.

use crate::common::tools;

use organdose::io::dicom::scan;
use organdose::io::dicom_write::{
    write_ct_series, write_nm_series, CtInfo, DicomPatient, DicomSeries, DicomStudy, NmInfo,
};
use organdose::report::dicom_out::common::{ENCAPSULATED_PDF_STORAGE, RT_DOSE_STORAGE};
use organdose::report::dicom_out::source::SourceSeries;
use organdose::report::dicom_out::{pdf, rtdose, write_masks, Provenance};
use organdose::volume::{cross, Geometry, Vec3, Volume};
use std::path::{Path, PathBuf};
use std::process::Command;

fn have_dciodvfy() -> bool {
    tools::on_path(
        "dciodvfy (apt-get install dicom3tools)",
        "DICOM outputs",
        "dciodvfy",
    )
}

fn have_python() -> bool {
    tools::python_dicom("DICOM outputs")
}

/// dciodvfy's error lines for `path` (warnings are printed, not counted). A run
/// that does not finish normally, or does not recognise the object as `iod`,
/// is an error too: dciodvfy exits 0 after finding errors, and a crash prints
/// no "Error" line.
fn dciodvfy_errors(path: &Path, iod: &str) -> Vec<String> {
    let out = Command::new("dciodvfy")
        .arg(path)
        .output()
        .expect("run dciodvfy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() != Some(0) || text.lines().next() != Some(iod) {
        return vec![format!(
            "dciodvfy did not verify {} as {iod} ({}):\n{text}",
            path.display(),
            out.status
        )];
    }
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("Warning")).collect();
    eprintln!(
        "dciodvfy {}: {} warning(s)\n  {}",
        path.file_name().unwrap().to_string_lossy(),
        warnings.len(),
        warnings.join("\n  ")
    );
    text.lines()
        .filter(|l| l.starts_with("Error"))
        .map(|l| l.to_string())
        .collect()
}

fn check_py(args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/check_dicom_out.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "check_dicom_out.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("check_dicom_out.py prints JSON")
}

/// Writes the grid and values the Python checker compares with.
fn write_truth<T: Copy>(prefix: &Path, geom: &Geometry, data: &[T], to_bytes: fn(T) -> Vec<u8>) {
    let j = serde_json::json!({
        "dims": geom.dims, "spacing": geom.spacing, "origin": geom.origin, "direction": geom.direction,
    });
    std::fs::write(prefix.with_extension("json"), j.to_string()).unwrap();
    let bytes: Vec<u8> = data.iter().flat_map(|&v| to_bytes(v)).collect();
    std::fs::write(prefix.with_extension("raw"), bytes).unwrap();
}

/// A grid of `dims` with index axes along `dirs`, centred on the patient origin.
fn centred(dims: [usize; 3], spacing: Vec3, dirs: [Vec3; 3]) -> Geometry {
    let mut origin = [0.0; 3];
    for a in 0..3 {
        for r in 0..3 {
            origin[r] -= (dims[a] as f64 - 1.0) / 2.0 * spacing[a] * dirs[a][r];
        }
    }
    Geometry {
        dims,
        spacing,
        origin,
        direction: dirs,
    }
}

fn in_ellipsoid(p: Vec3, c: Vec3, r: Vec3) -> bool {
    (0..3).map(|a| ((p[a] - c[a]) / r[a]).powi(2)).sum::<f64>() <= 1.0
}

/// Organ label at a patient point (LPS mm): liver on the right (-x) with a tumour
/// inside it (a hole in the liver), the left kidney at +x, the right at -x, and a
/// spleen in two islands (spleen and splenule).
fn organ_at(p: Vec3) -> u8 {
    if in_ellipsoid(p, [-44.0, -8.0, 0.0], [7.0, 7.0, 7.0]) {
        5
    } else if in_ellipsoid(p, [-40.0, -10.0, 0.0], [28.0, 17.0, 18.0]) {
        1
    } else if in_ellipsoid(p, [36.0, 24.0, -4.0], [9.0, 7.0, 14.0]) {
        2
    } else if in_ellipsoid(p, [-30.0, 26.0, -7.0], [9.0, 7.0, 13.0]) {
        3
    } else if in_ellipsoid(p, [42.0, -6.0, 6.0], [10.0, 9.0, 10.0])
        || in_ellipsoid(p, [58.0, 12.0, 14.0], [3.5, 3.5, 3.5])
    {
        4
    } else {
        0
    }
}

fn patient() -> DicomPatient {
    DicomPatient {
        id: "DOUT0001".into(),
        name: "TEST^DICOMOUT".into(),
        birth_date: "19600101".into(),
        sex: "F".into(),
        issuer: String::new(),
    }
}

fn study() -> DicomStudy {
    DicomStudy {
        uid: "2.25.1000".into(),
        date: "20260101".into(),
        time: "090000".into(),
        description: "TEST".into(),
        study_id: "1".into(),
        accession: "ACC1".into(),
    }
}

fn series(uid: &str, number: i32) -> DicomSeries {
    DicomSeries {
        uid: uid.into(),
        number,
        description: format!("series {number}"),
        date: "20260101".into(),
        time: "090000".into(),
        frame_of_reference_uid: format!("{uid}.9"),
        acquisition_date: "20260101".into(),
        acquisition_time: "090000".into(),
        manufacturer: "test".into(),
        model: "test".into(),
        station: "TEST".into(),
        body_part: "ABDOMEN".into(),
    }
}

/// Writes a CT series of `geom` holding the phantom; returns its folder and labels.
fn ct_case(root: &Path, name: &str, number: usize, geom: Geometry) -> (PathBuf, Volume<u8>) {
    let mut labels = vec![0u8; geom.len()];
    let [nx, ny, nz] = geom.dims;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = geom.index_to_patient([i as f64, j as f64, k as f64]);
                labels[geom.linear(i, j, k)] = organ_at(p);
            }
        }
    }
    let hu: Vec<f32> = labels
        .iter()
        .map(|&l| [-50.0, 60.0, 30.0, 30.0, 45.0, 80.0][l as usize])
        .collect();
    let dir = root.join(format!("ct_{name}"));
    let ct = Volume::new(geom.clone(), hu).unwrap();
    let info = CtInfo {
        kvp: 120.0,
        tube_current_ma: 100,
        exposure_mas: 100,
        kernel: "B30f".into(),
        contrast_agent: None,
        window_center: 40.0,
        window_width: 400.0,
    };
    write_ct_series(
        &ct,
        &patient(),
        &study(),
        &series(&format!("2.25.2000.{number}"), 2),
        &info,
        &dir,
    )
    .unwrap();
    (dir, Volume::new(geom, labels).unwrap())
}

fn source_of(dir: &Path) -> SourceSeries {
    let s = scan(dir).unwrap();
    assert_eq!(s.series.len(), 1);
    let read = SourceSeries::read(&s.series[0]).unwrap();
    // What the outputs are made from when the study's headers are reused (the
    // files not opened again) is what reading every header again gives.
    let held = SourceSeries::from_series(&s.series[0]).unwrap();
    assert_eq!(
        format!("{:?}", held.instances),
        format!("{:?}", read.instances)
    );
    assert_eq!(
        format!("{:?}", held.patient_study),
        format!("{:?}", read.patient_study)
    );
    assert_eq!(
        (
            &held.series_uid,
            &held.study_uid,
            &held.frame_of_reference_uid,
            &held.modality
        ),
        (
            &read.series_uid,
            &read.study_uid,
            &read.frame_of_reference_uid,
            &read.modality
        )
    );
    held
}

fn automatic() -> Provenance {
    Provenance {
        algorithm: Some(("organdose Mask R-CNN".into(), "test".into())),
        description: "test masks".into(),
    }
}

#[test]
fn rtstruct_and_seg_round_trip_through_orientations() {
    let py = have_python();
    let dv = have_dciodvfy();
    let tmp = tempfile::tempdir().unwrap();
    let (x, y, z) = ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]);
    let neg = |v: Vec3| v.map(|c: f64| -c);
    let axial = [64, 56, 24];
    let sp = [2.5, 2.5, 3.0];
    let cases: Vec<(&str, Geometry)> = vec![
        ("hfs", centred(axial, sp, [x, y, z])),
        // Feet first supine: rows run to the patient's right, slices head-wards
        // in reverse (the normal points to the feet).
        ("ffs", centred(axial, sp, [neg(x), y, neg(z)])),
        // Head first prone: rows and columns flipped; slices stacked against the
        // normal, so the files come in reverse order.
        ("hfp_reverse", centred(axial, sp, [neg(x), neg(y), neg(z)])),
        ("columns_flipped", centred(axial, sp, [x, neg(y), z])),
        // Coronal slices, anterior to posterior.
        (
            "coronal",
            centred([64, 24, 30], [2.5, 3.0, 2.5], [x, neg(z), y]),
        ),
    ];
    for (number, (name, geom)) in cases.into_iter().enumerate() {
        let (ct_dir, labels) = ct_case(tmp.path(), name, number, geom);
        let src = source_of(&ct_dir);
        let out = tmp.path().join(format!("out_{name}"));
        std::fs::create_dir_all(&out).unwrap();
        let t0 = std::time::Instant::now();
        let (files, _) =
            write_masks(&src, &labels, &automatic(), "test CT", "CT", 9001, &out).unwrap();
        eprintln!(
            "{name}: RT Struct + SEG written in {:.2} s",
            t0.elapsed().as_secs_f64()
        );
        assert_eq!(files.len(), 2, "{files:?}");
        if number == 0 {
            // `inspect` lists its own outputs as what they are (a 1-bit SEG was
            // reported as truncated 8-bit pixel data, the RT Structure Set as
            // "not an image").
            let o = crate::common::fixtures::organdose()
                .arg("inspect")
                .arg(&out)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{text}");
            assert!(text.contains("SEG ") && text.contains("RTSTRUCT"), "{text}");
            assert!(!text.contains("PROBLEM"), "{text}");
        }
        let prefix = tmp.path().join(format!("truth_{name}"));
        write_truth(&prefix, &labels.geom, &labels.data, |v| vec![v]);
        if dv {
            for (f, iod) in files.iter().zip(["RTStructureSet", "Segmentation"]) {
                let e = dciodvfy_errors(f, iod);
                assert!(
                    e.is_empty(),
                    "{name}: dciodvfy {}:\n{}",
                    f.display(),
                    e.join("\n")
                );
            }
        }
        if !py {
            continue;
        }
        let (ct, pre) = (ct_dir.to_str().unwrap(), prefix.to_str().unwrap());
        let seg = check_py(&["seg", files[1].to_str().unwrap(), ct, pre]);
        eprintln!("{name}: SEG {seg}");
        assert_eq!(seg["empty_frames"], 0, "{name}: empty frames written");
        assert_eq!(seg["frames_bad_reference"], 0, "{name}");
        assert_eq!(seg["pixels_outside_truth"], 0, "{name}");
        assert!(seg["worst_offset_index"].as_f64().unwrap() < 1e-3, "{name}");
        assert_eq!(seg["highdicom_segments"], 5, "{name}");
        for lab in 1..=5 {
            let s = &seg["segments"][lab.to_string()];
            assert_eq!(s["mismatch"], 0, "{name}: segment of label {lab}: {s}");
            assert!(s["truth_voxels"].as_u64().unwrap() > 0);
            assert_eq!(
                seg["highdicom_mismatch"][lab.to_string()],
                0,
                "{name}: label {lab}"
            );
        }
        let lk = seg["segments"]["2"]["centroid_mm"][0].as_f64().unwrap();
        let rk = seg["segments"]["3"]["centroid_mm"][0].as_f64().unwrap();
        assert!(
            lk > 20.0 && rk < -20.0,
            "{name}: kidneys left {lk} right {rk} (LPS x)"
        );

        let rs = check_py(&["rtstruct", files[0].to_str().unwrap(), ct, pre]);
        eprintln!("{name}: RTSTRUCT {rs}");
        for key in [
            "frame_ok",
            "study_ok",
            "series_ok",
            "patient_ok",
            "all_images_referenced",
        ] {
            assert_eq!(rs[key], true, "{name}: {key}");
        }
        assert!(rs["worst_off_plane_mm"].as_f64().unwrap() < 1e-3, "{name}");
        for lab in 1..=5 {
            let r = &rs["rois"][lab.to_string()];
            // Contours on pixel edges enclose exactly the mask's pixel centres:
            // the raster comes back whole (Dice 1) up to decimal-string rounding.
            let dice = r["dice"].as_f64().unwrap();
            let dist = r["centroid_distance_mm"].as_f64().unwrap();
            assert!(dice >= 0.999, "{name}: label {lab} Dice {dice}");
            assert!(dist <= 0.1, "{name}: label {lab} centroid {dist} mm off");
        }
        let lk = rs["rois"]["2"]["centroid_mm"][0].as_f64().unwrap();
        assert!(lk > 20.0, "{name}: left kidney at x = {lk}");
        // Two spleen islands and a liver with a hole: more contours than slices.
        assert_eq!(rs["rois"]["2"]["name"], "Kidney_L");
    }
}

fn nm_info() -> NmInfo {
    NmInfo {
        radiopharmaceutical: "Lu-177-PSMA".into(),
        nuclide_code: ("C-145A8".into(), "SRT".into(), "^177^Lutetium".into()),
        total_dose_bq: 7.4e9,
        half_life_s: 574_300.0,
        start_datetime: "20260101080000".into(),
        start_time: "080000".into(),
        energy_windows: vec![("EM208".into(), 187.2, 228.8)],
        projections: 120,
        frame_duration_ms: 15_000,
        collimator: "MEGP".into(),
        reconstruction_diameter_mm: 300.0,
    }
}

#[test]
fn rtdose_round_trip_axial_and_non_axial_spect() {
    let py = have_python();
    let dv = have_dciodvfy();
    let tmp = tempfile::tempdir().unwrap();
    let (x, y, z) = ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]);
    let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
    // Oblique: rows along x, columns tilted 30 degrees from y towards z.
    let col = [0.0, c, s];
    let oblique = [x, col, cross(x, col)];
    let cases: Vec<(&str, Geometry)> = vec![
        ("axial", centred([40, 36, 20], [4.8, 4.8, 4.8], [x, y, z])),
        (
            "axial_reverse",
            centred([40, 36, 20], [4.8, 4.8, 4.8], [x, y, z.map(|v| -v)]),
        ),
        (
            "coronal",
            centred([40, 20, 36], [4.8, 4.8, 4.8], [x, z.map(|v| -v), y]),
        ),
        ("oblique", centred([40, 36, 20], [4.8, 4.8, 4.8], oblique)),
    ];
    for (number, (name, geom)) in cases.into_iter().enumerate() {
        let n = geom.len();
        let mut dose = vec![0f32; n];
        let mut act = vec![0f32; n];
        let [nx, ny, nz] = geom.dims;
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let p = geom.index_to_patient([i as f64, j as f64, k as f64]);
                    let l = organ_at(p);
                    let base = 0.05 * (-(p[0] * p[0] + p[1] * p[1]) / 5000.0).exp();
                    let d = base + [0.0, 4.0, 9.5, 8.7, 6.0, 31.0][l as usize];
                    dose[geom.linear(i, j, k)] = d as f32;
                    act[geom.linear(i, j, k)] = (d * 1e4) as f32;
                }
            }
        }
        let dir = tmp.path().join(format!("spect_{name}"));
        let spect = Volume::new(geom.clone(), act).unwrap();
        write_nm_series(
            &spect,
            &patient(),
            &study(),
            &series(&format!("2.25.3000.{number}"), 3),
            &nm_info(),
            &dir.join("IM0001.dcm"),
        )
        .unwrap();
        let src = source_of(&dir);
        let dose = Volume::new(geom.clone(), dose).unwrap();
        let p = tmp.path().join(format!("RTDOSE_{name}.dcm"));
        let desc = rtdose::DoseDescription {
            comment: "test".into(),
            derivation: "test".into(),
        };
        let series = organdose::report::dicom_out::common::NewSeries {
            modality: "RTDOSE",
            number: 9051,
            description: "dose".into(),
        };
        let (_, scaling) = rtdose::write(&dose, &src, &desc, None, &series, &p).unwrap();
        let head = organdose::io::dicom::read_header(&p).unwrap();
        assert_eq!(head.sop_class_uid, RT_DOSE_STORAGE);
        assert_eq!(head.frame_of_reference_uid, src.frame_of_reference_uid);
        let prefix = tmp.path().join(format!("dose_{name}"));
        write_truth(&prefix, &geom, &dose.data, |v: f32| {
            v.to_le_bytes().to_vec()
        });
        if dv {
            let e = dciodvfy_errors(&p, "RTDose");
            assert!(e.is_empty(), "{name}: dciodvfy:\n{}", e.join("\n"));
        }
        if !py {
            continue;
        }
        let r = check_py(&["rtdose", p.to_str().unwrap(), prefix.to_str().unwrap()]);
        eprintln!("{name}: RTDOSE {r}");
        assert_eq!(r["missing_voxels"], 0, "{name}");
        assert!(
            r["worst_offset_index"].as_f64().unwrap() < 1e-3,
            "{name}: {r}"
        );
        assert_eq!(r["units"], "GY");
        assert_eq!(r["summation"], rtdose::DOSE_SUMMATION_TYPE);
        assert_eq!(r["frame_of_reference"], src.frame_of_reference_uid.as_str());
        // Read back within half a scaling step (the rounding to integers), plus
        // float rounding of the f32 map.
        let err = r["max_abs_err_gy"].as_f64().unwrap();
        assert!(
            err <= 0.5 * scaling + 1e-6,
            "{name}: error {err} Gy, scaling {scaling}"
        );
    }
}

#[test]
fn encapsulated_pdf_passes_dciodvfy() {
    let dv = have_dciodvfy();
    let tmp = tempfile::tempdir().unwrap();
    let g = centred(
        [32, 32, 16],
        [4.8, 4.8, 4.8],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    let dir = tmp.path().join("spect");
    let spect = Volume::new(g.clone(), vec![1.0f32; g.len()]).unwrap();
    write_nm_series(
        &spect,
        &patient(),
        &study(),
        &series("2.25.4000", 3),
        &nm_info(),
        &dir.join("IM0001.dcm"),
    )
    .unwrap();
    let src = source_of(&dir);
    // A minimal valid PDF of odd length, so the padding byte is exercised.
    let pdf_bytes: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";
    assert_eq!(pdf_bytes.len() % 2, 1);
    let p = tmp.path().join("REPORT_PDF.dcm");
    pdf::write_encapsulated(pdf_bytes, &src, "test report", 9061, &p).unwrap();
    let head = organdose::io::dicom::read_header(&p).unwrap();
    assert_eq!(head.sop_class_uid, ENCAPSULATED_PDF_STORAGE);
    if dv {
        let e = dciodvfy_errors(&p, "EncapsulatedPDF");
        assert!(e.is_empty(), "dciodvfy:\n{}", e.join("\n"));
    }
}

/// Every DS value at most 16 characters (Eclipse refuses longer ones), IS at
/// most 12, UI at most 64, through all sequences.
fn check_value_lengths(obj: &dicom_object::InMemDicomObject, bad: &mut Vec<String>) {
    use dicom_core::VR;
    for e in obj.iter() {
        if let Some(items) = e.items() {
            for it in items {
                check_value_lengths(it, bad);
            }
            continue;
        }
        let max = match e.vr() {
            VR::DS => 16,
            VR::IS => 12,
            VR::UI => 64,
            _ => continue,
        };
        if let Ok(vals) = e.value().to_multi_str() {
            for v in vals.iter() {
                let v = v.trim_end_matches(['\0', ' ']);
                if v.len() > max {
                    bad.push(format!("{:?} {:?} '{v}'", e.header().tag, e.vr()));
                }
            }
        }
    }
}

/// A whole cycle as `organdose run --truth` makes it: every object in dicom/,
/// each accepted by dciodvfy, the SEG and RT Structure Set of the diagnostic CT
/// and of a low-dose CT equal to the phantom's truth label maps, and the RT
/// Dose equal to dose_map.nii.gz; with `report.dicom = false` no dicom/ at all.
#[test]
fn phantom_cycle_writes_every_object() {
    use organdose::config::Config;
    use organdose::io::nifti::{read_nifti, read_nifti_labels};
    use organdose::phantom::layout::{write_patient, WriteOptions};
    use organdose::phantom::{Format, Patient, PhantomConfig};
    use organdose::pipeline::{run_study, MaskSource};
    use organdose::study::{load_study, Source};

    let py = have_python();
    let dv = have_dciodvfy();
    let tmp = tempfile::tempdir().unwrap();
    let patient = Patient::new(&PhantomConfig::small(), 7, 0);
    let w = write_patient(
        &patient,
        &tmp.path().join("export"),
        &WriteOptions {
            format: Format::Dicom,
            preview: None,
        },
    )
    .unwrap();
    let study = load_study(&w.patient_dir).unwrap();
    let out = tmp.path().join("out");
    let cfg = Config::default();
    let t0 = std::time::Instant::now();
    run_study(
        &study,
        &MaskSource::truth_of(&w.patient_dir),
        &out,
        &cfg,
        "final",
        &|_, _| {},
    )
    .unwrap();
    eprintln!(
        "cycle with review outputs in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let dicom = out.join("dicom");
    let n = study.timepoints.len();
    let mut expected: Vec<(String, &str)> = vec![
        ("RTSTRUCT_CT.dcm".into(), "RTStructureSet"),
        ("SEG_CT.dcm".into(), "Segmentation"),
        ("RTDOSE.dcm".into(), "RTDose"),
        ("REPORT_PDF.dcm".into(), "EncapsulatedPDF"),
    ];
    for k in 1..=n {
        expected.push((format!("RTSTRUCT_TP{k}.dcm"), "RTStructureSet"));
        expected.push((format!("SEG_TP{k}.dcm"), "Segmentation"));
    }
    for (f, iod) in &expected {
        let p = dicom.join(f);
        assert!(p.is_file(), "{f} missing");
        let obj = dicom_object::open_file(&p).unwrap();
        let mut bad = Vec::new();
        check_value_lengths(&obj, &mut bad);
        assert!(bad.is_empty(), "{f}: {bad:?}");
        if dv {
            let e = dciodvfy_errors(&p, iod);
            assert!(e.is_empty(), "{f}: {}", e.join("\n"));
        }
    }
    // The Encapsulated PDF holds report.pdf byte for byte (the even-length pad
    // after it excluded by EncapsulatedDocumentLength).
    let pdf = std::fs::read(out.join("report.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let obj = dicom_object::open_file(dicom.join("REPORT_PDF.dcm")).unwrap();
    let doc = obj
        .element(dicom_dictionary_std::tags::ENCAPSULATED_DOCUMENT)
        .unwrap()
        .to_bytes()
        .unwrap();
    let len: u32 = obj
        .element(dicom_dictionary_std::tags::ENCAPSULATED_DOCUMENT_LENGTH)
        .unwrap()
        .to_int()
        .unwrap();
    assert_eq!(len as usize, pdf.len());
    assert_eq!(&doc[..pdf.len()], &pdf[..]);
    assert!(out.join("tac_log.png").is_file());
    assert!(out.join("qc/ct_kidney_left.png").is_file());
    assert!(out
        .join(format!("qc/tp{n}_spect_kidney_right.png"))
        .is_file());

    if py {
        let truth = w.patient_dir.join("truth");
        let series_dir = |s: &Source| match s {
            Source::Dicom(d) => d.files[0].path.parent().unwrap().to_path_buf(),
            Source::Nifti(_) => panic!("phantom export is DICOM"),
        };
        let ldct = study.timepoints[0].ldct.as_ref().unwrap();
        for (obj, ct_dir, labels) in [
            ("CT", series_dir(&study.diagnostic_ct), "labels_ct.nii.gz"),
            ("TP1", series_dir(ldct), "labels_ldct_tp1.nii.gz"),
        ] {
            let lab = read_nifti_labels(&truth.join(labels)).unwrap();
            let prefix = tmp.path().join(format!("truth_{obj}"));
            write_truth(&prefix, &lab.geom, &lab.data, |v| vec![v]);
            let (ct, pre) = (ct_dir.to_str().unwrap(), prefix.to_str().unwrap());
            let seg_path = dicom.join(format!("SEG_{obj}.dcm"));
            let seg = check_py(&["seg", seg_path.to_str().unwrap(), ct, pre]);
            let rs_path = dicom.join(format!("RTSTRUCT_{obj}.dcm"));
            let rs = check_py(&["rtstruct", rs_path.to_str().unwrap(), ct, pre]);
            eprintln!("{obj}: SEG {seg}\n{obj}: RTSTRUCT {rs}");
            let organs: Vec<u8> = (1..=5).filter(|l| lab.data.contains(l)).collect();
            assert!(organs.len() >= 4, "{obj}: organs {organs:?}");
            for l in organs {
                let key = l.to_string();
                assert_eq!(seg["segments"][&key]["mismatch"], 0, "{obj} SEG label {l}");
                assert_eq!(seg["highdicom_mismatch"][&key], 0, "{obj} SEG label {l}");
                let dice = rs["rois"][&key]["dice"].as_f64().unwrap();
                let dist = rs["rois"][&key]["centroid_distance_mm"].as_f64().unwrap();
                assert!(
                    dice >= 0.999 && dist <= 0.1,
                    "{obj} RTSTRUCT label {l}: Dice {dice}, {dist} mm"
                );
            }
            assert_eq!(rs["all_images_referenced"], true, "{obj}");
            assert!(
                seg["segments"]["2"]["centroid_mm"][0].as_f64().unwrap() > 0.0,
                "{obj}: left kidney on the left"
            );
        }
        let dose = read_nifti(&out.join("dose_map.nii.gz")).unwrap();
        let prefix = tmp.path().join("truth_dose");
        write_truth(&prefix, &dose.geom, &dose.data, |v: f32| {
            v.to_le_bytes().to_vec()
        });
        let rd = dicom.join("RTDOSE.dcm");
        let r = check_py(&["rtdose", rd.to_str().unwrap(), prefix.to_str().unwrap()]);
        eprintln!("RTDOSE {r}");
        assert_eq!(r["missing_voxels"], 0);
        let scaling = r["scaling"].as_f64().unwrap();
        let err = r["max_abs_err_gy"].as_f64().unwrap();
        assert!(
            err <= 0.5 * scaling + 1e-6,
            "dose read back {err} Gy off (scaling {scaling})"
        );
        // DVHs: on the reference time point's LDCT structure set (same frame of
        // reference as the SPECT), one per organ, volumes and means consistent.
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("dose_summary.json")).unwrap())
                .unwrap();
        let k = summary["settings"]["dose_map_time_point"].as_u64().unwrap();
        let ss = dicom_object::open_file(dicom.join(format!("RTSTRUCT_TP{k}.dcm"))).unwrap();
        let ss_uid = ss
            .element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(r["referenced_structure_set"], ss_uid.trim_end_matches('\0'));
        let organs = summary["organs"].as_object().unwrap();
        assert_eq!(r["dvhs"].as_array().unwrap().len(), organs.len());
        for h in r["dvhs"].as_array().unwrap() {
            let o = organs
                .values()
                .find(|o| o["label"] == h["roi"])
                .expect("DVH ROI is an organ");
            let vol = o["dvh"]["volume_ml"].as_f64().unwrap();
            let w = h["bin_width"].as_f64().unwrap();
            let (m_data, m_stated) = (
                h["mean_from_data"].as_f64().unwrap(),
                h["mean_stated"].as_f64().unwrap(),
            );
            assert!(
                (h["volume_cm3"].as_f64().unwrap() - vol).abs() < 1e-3 * vol,
                "{h}"
            );
            assert!(
                (m_stated - o["dvh"]["mean"].as_f64().unwrap()).abs() < 1e-6,
                "{h}"
            );
            assert!(
                (m_data - m_stated).abs() <= w,
                "DVHData mean {m_data} vs {m_stated} (bin {w}): {h}"
            );
        }
    }

    let mut no_dicom = cfg.clone();
    no_dicom.report.dicom = false;
    let out2 = tmp.path().join("out_no_dicom");
    run_study(
        &study,
        &MaskSource::truth_of(&w.patient_dir),
        &out2,
        &no_dicom,
        "final",
        &|_, _| {},
    )
    .unwrap();
    assert!(!out2.join("dicom").exists());
    assert!(out2.join("report.pdf").is_file());
}

#[test]
fn no_organ_no_structure_set() {
    let tmp = tempfile::tempdir().unwrap();
    let g = centred(
        [16, 16, 4],
        [2.5, 2.5, 3.0],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    // Far from every organ of organ_at: an empty label map.
    let mut g_far = g.clone();
    g_far.origin[2] += 500.0;
    let (ct_dir, labels) = ct_case(tmp.path(), "empty", 99, g_far);
    assert!(labels.data.iter().all(|&v| v == 0));
    let src = source_of(&ct_dir);
    let (files, uid) = write_masks(
        &src,
        &labels,
        &automatic(),
        "empty CT",
        "CT",
        9001,
        tmp.path(),
    )
    .unwrap();
    assert!(files.is_empty() && uid.is_none(), "{files:?}");
}
