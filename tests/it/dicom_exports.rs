//! What consoles and anonymisers really export (issue 19, item 1), judged by
//! outside tools: series whose Study/SeriesInstanceUIDs are empty or removed are
//! read with the geometry and values dcm2niix gives; a patient with every UID
//! blanked gives the same doses as the original through `organdose run` and
//! `watch`; an Enhanced CT made by highdicom, a SPECT rewritten as PET Image
//! Storage and as NM with only a Real World Value Mapping, a pydicom DICOMDIR
//! and a study split over two folders read back as the originals; refusals
//! name the file and the attribute.
//!
//! dcm2niix (Debian) and pydicom/highdicom (PyPI) are installed by `.ci/run`
//! (pinned); with ORGANDOSE_REQUIRE_TOOLS=1 a missing tool fails the test.

use crate::common::tools;

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use organdose::appliance::daemon::records;
use organdose::config::Config;
use organdose::io::dicom::{list_files, read_single_series, scan};
use organdose::volume::Volume;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have_dcm2niix() -> bool {
    tools::on_path(
        "dcm2niix (apt-get install dcm2niix)",
        "What is accepted",
        "dcm2niix",
    )
}

fn have_python() -> bool {
    tools::python_dicom("What is accepted")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/make_exports.py")
}

fn python(args: &[&Path]) {
    let out = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "make_exports.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

use crate::common::fixtures::{box_config, BIN};
use tools::small_dicom_phantom as phantom;

/// The series folder of a phantom patient whose name ends with `suffix`.
fn series_dir(patient: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(patient)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no series *{suffix} in {}", patient.display()))
}

/// Copies every DICOM file below `src` (not a phantom's truth/) to the same
/// place below `dst`, edited.
fn rewrite(src: &Path, dst: &Path, edit: &dyn Fn(&Path, &mut DefaultDicomObject)) {
    for f in list_files(src).unwrap() {
        let rel = f.strip_prefix(src).unwrap();
        // The phantom's truth stays where it is (masks are read from there).
        if rel.starts_with("truth") {
            continue;
        }
        let d = dst.join(rel);
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        if !organdose::io::dicom::has_dicom_magic(&f) {
            std::fs::copy(&f, &d).unwrap();
            continue;
        }
        let mut o = dicom_object::open_file(&f).unwrap();
        edit(rel, &mut o);
        o.write_to_file(&d).unwrap();
    }
}

fn put_empty(o: &mut InMemDicomObject, tag: Tag) {
    o.put(DataElement::new(tag, VR::UI, PrimitiveValue::from("")));
}

const UIDS: [Tag; 4] = [
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::FRAME_OF_REFERENCE_UID,
    tags::SOP_INSTANCE_UID,
];

/// An anonymiser that keeps the UID attributes but empties them.
fn blank_uids(o: &mut DefaultDicomObject) {
    for t in UIDS {
        put_empty(o, t);
    }
}

/// NIfTI-1 (.nii) read by hand from the standard's byte offsets, so neither
/// side of the comparison goes through organdose's NIfTI reader: dims, the
/// sform rows (RAS, mm) and the scaled values, i fastest.
struct Nii {
    dims: [usize; 3],
    srow: [[f64; 4]; 3],
    data: Vec<f64>,
}

fn read_nii(path: &Path) -> Nii {
    let b = std::fs::read(path).unwrap();
    let i16_at = |o: usize| i16::from_le_bytes([b[o], b[o + 1]]);
    let f32_at = |o: usize| f32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as f64;
    assert_eq!(i32::from_le_bytes(b[0..4].try_into().unwrap()), 348);
    let dims = [
        i16_at(42) as usize,
        i16_at(44) as usize,
        i16_at(46) as usize,
    ];
    assert!(i16_at(40) == 3 || (i16_at(40) == 4 && i16_at(48) == 1));
    assert!(i16_at(254) > 0, "{}: no sform", path.display());
    let mut srow = [[0.0; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = f32_at(280 + 16 * r + 4 * c);
        }
    }
    let (datatype, off) = (i16_at(70), f32_at(108) as usize);
    let slope = match f32_at(112) {
        s if s == 0.0 || !s.is_finite() => 1.0,
        s => s,
    };
    let inter = f32_at(116);
    let n = dims.iter().product::<usize>();
    let raw = &b[off..];
    let data = (0..n)
        .map(|k| {
            let v = match datatype {
                2 => raw[k] as f64,
                4 => i16::from_le_bytes([raw[2 * k], raw[2 * k + 1]]) as f64,
                512 => u16::from_le_bytes([raw[2 * k], raw[2 * k + 1]]) as f64,
                16 => f32::from_le_bytes(raw[4 * k..4 * k + 4].try_into().unwrap()) as f64,
                d => panic!("{}: datatype {d}", path.display()),
            };
            v * slope + inter
        })
        .collect();
    Nii { dims, srow, data }
}

/// Every voxel centre of `a` must be a voxel centre of `b` (through both sforms,
/// whatever order or flips either stores) with the same value, and the grids the
/// same size: the same image in the same place.
fn assert_same_image(a: &Nii, b: &Nii, what: &str) {
    assert_eq!(
        a.dims.iter().product::<usize>(),
        b.dims.iter().product::<usize>(),
        "{what}: sizes {:?} and {:?}",
        a.dims,
        b.dims
    );
    // Inverse of b's 3x3 part (Cramer), for world -> b index.
    let m = |r: usize, c: usize| b.srow[r][c];
    let det = m(0, 0) * (m(1, 1) * m(2, 2) - m(1, 2) * m(2, 1))
        - m(0, 1) * (m(1, 0) * m(2, 2) - m(1, 2) * m(2, 0))
        + m(0, 2) * (m(1, 0) * m(2, 1) - m(1, 1) * m(2, 0));
    assert!(det.abs() > 1e-9);
    let inv = |r: usize, c: usize| {
        let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
        let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
        (m(r1, c1) * m(r2, c2) - m(r1, c2) * m(r2, c1)) / det
    };
    let mut worst_off: f64 = 0.0;
    let mut worst_diff: f64 = 0.0;
    for k in 0..a.dims[2] {
        for j in 0..a.dims[1] {
            for i in 0..a.dims[0] {
                let p = [i as f64, j as f64, k as f64];
                let w: Vec<f64> = (0..3)
                    .map(|r| {
                        a.srow[r][0] * p[0]
                            + a.srow[r][1] * p[1]
                            + a.srow[r][2] * p[2]
                            + a.srow[r][3]
                            - b.srow[r][3]
                    })
                    .collect();
                let q: Vec<f64> = (0..3)
                    .map(|r| inv(r, 0) * w[0] + inv(r, 1) * w[1] + inv(r, 2) * w[2])
                    .collect();
                let idx: Vec<usize> = q
                    .iter()
                    .zip(b.dims)
                    .map(|(&x, n)| {
                        worst_off = worst_off.max((x - x.round()).abs());
                        assert!(
                            x.round() >= 0.0 && (x.round() as usize) < n,
                            "{what}: voxel {p:?} falls outside the reference grid at {q:?}"
                        );
                        x.round() as usize
                    })
                    .collect();
                let va = a.data[i + a.dims[0] * (j + a.dims[1] * k)];
                let vb = b.data[idx[0] + b.dims[0] * (idx[1] + b.dims[1] * idx[2])];
                worst_diff = worst_diff.max((va - vb).abs());
            }
        }
    }
    // NIfTI stores the sform in f32: centres agree to its precision.
    assert!(
        worst_off < 1e-3,
        "{what}: voxel centres off by {worst_off} voxel"
    );
    assert!(
        worst_diff < 1e-3,
        "{what}: values differ by up to {worst_diff}"
    );
}

fn organdose(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run organdose")
}

fn ok(o: &std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn convert(dir: &Path, out: &Path) {
    ok(
        &organdose(&["convert", &dir.to_string_lossy(), &out.to_string_lossy()]),
        "organdose convert",
    );
}

fn dcm2niix(dir: &Path, out_dir: &Path) -> PathBuf {
    std::fs::create_dir_all(out_dir).unwrap();
    let o = Command::new("dcm2niix")
        .args(["-z", "n", "-b", "n", "-f", "ref", "-o"])
        .arg(out_dir)
        .arg(dir)
        .output()
        .expect("run dcm2niix");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let nii: Vec<PathBuf> = std::fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nii"))
        .collect();
    assert_eq!(nii.len(), 1, "dcm2niix wrote {nii:?}");
    nii[0].clone()
}

#[test]
fn empty_and_missing_uids_are_read_with_the_geometry_dcm2niix_gives() {
    if !have_dcm2niix() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(&tmp.path().join("ph"), 19);
    let generated = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated");
    // The phantom's diagnostic CT, and an oblique CT with its files out of order.
    for (name, src) in [
        ("phantom_ct", series_dir(&patient, "CT_ABDOMEN_CONTRAST")),
        ("oblique", generated.join("ct_oblique")),
    ] {
        for (mode, edit) in [
            (
                "empty",
                &(|_: &Path, o: &mut DefaultDicomObject| {
                    put_empty(o, tags::STUDY_INSTANCE_UID);
                    put_empty(o, tags::SERIES_INSTANCE_UID);
                }) as &dyn Fn(&Path, &mut DefaultDicomObject),
            ),
            ("removed", &|_: &Path, o: &mut DefaultDicomObject| {
                o.remove_element(tags::STUDY_INSTANCE_UID);
                o.remove_element(tags::SERIES_INSTANCE_UID);
            }),
        ] {
            let what = format!("{name} with {mode} UIDs");
            let dir = tmp.path().join(format!("{name}_{mode}"));
            rewrite(&src, &dir, edit);
            let inspect = ok(&organdose(&["inspect", &dir.to_string_lossy()]), "inspect");
            assert!(
                inspect.contains(
                    "identity: no SeriesInstanceUID (0020,000E) in the files: grouped by"
                ) && inspect.contains("SeriesNumber")
                    && !inspect.contains("PROBLEM"),
                "{what}: {inspect}"
            );
            let ours = tmp.path().join(format!("{name}_{mode}.nii"));
            convert(&dir, &ours);
            let reference = dcm2niix(&dir, &tmp.path().join(format!("d2n_{name}_{mode}")));
            assert_same_image(&read_nii(&ours), &read_nii(&reference), &what);
            // The same as the series with its UIDs.
            let with_uids = tmp.path().join(format!("{name}_uids.nii"));
            convert(&src, &with_uids);
            assert_same_image(&read_nii(&ours), &read_nii(&with_uids), &what);
        }
    }
}

fn run_dose(study: &Path, truth: &Path, out: &Path) -> serde_json::Value {
    ok(
        &organdose(&[
            "run",
            "--truth",
            "--truth-dir",
            &truth.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
            &study.to_string_lossy(),
        ]),
        "organdose run",
    );
    summary(out)
}

fn summary(dir: &Path) -> serde_json::Value {
    let p = dir.join("dose_summary.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// Organ masses and doses, which must not depend on the UIDs.
fn doses(s: &serde_json::Value) -> Vec<(String, f64, f64)> {
    let mut v: Vec<(String, f64, f64)> = s["organs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, o)| {
            (
                k.clone(),
                o["mass_g"].as_f64().unwrap(),
                o["mean_dose_gy"].as_f64().unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(v.iter().any(|o| o.0 == "kidney_left"), "{s}");
    v
}

fn assert_same_doses(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    let (da, db) = (doses(a), doses(b));
    assert_eq!(da, db, "{what}: organ masses/doses differ");
    assert_eq!(a["times_h"], b["times_h"], "{what}");
    assert_eq!(
        a["injected_activity_mbq"], b["injected_activity_mbq"],
        "{what}"
    );
}

/// `organdose watch --once` on `export`; returns the one cycle's folder and record.
fn watch_once(
    cfg: &Path,
    export: &Path,
    truth_root: &Path,
    out: &Path,
) -> (PathBuf, organdose::appliance::state::CycleRecord) {
    ok(
        &Command::new(BIN)
            .arg("--config")
            .arg(cfg)
            .args(["watch", "--once", "--status", "log", "--in"])
            .arg(export)
            .arg("--out")
            .arg(out)
            .arg("--truth-root")
            .arg(truth_root)
            .output()
            .unwrap(),
        "organdose watch --once",
    );
    let recs = records(out).unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let (id, r) = recs.into_iter().next().unwrap();
    (out.join(id), r)
}

fn quarantined(out: &Path) -> Vec<String> {
    std::fs::read_dir(out.join("quarantine"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_blanked_patient_gives_the_same_doses_through_run_and_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient = phantom(&staging, 23);
    let pid = patient.file_name().unwrap().to_string_lossy().to_string();
    let cfg = box_config(tmp.path(), "\n[report]\ndicom = false\n");
    let truth = patient.join("truth");
    let reference = run_dose(&patient, &truth, &tmp.path().join("ref"));
    assert_eq!(reference["status"], "final");

    // Every UID of every series empty (study, series, frame of reference, instance).
    let blanked_root = tmp.path().join("blanked");
    let blanked = blanked_root.join(&pid);
    rewrite(&patient, &blanked, &|_, o| blank_uids(o));
    let s = scan(&blanked).unwrap();
    assert_eq!(
        s.series.len(),
        9,
        "one diagnostic CT, four LDCT + SPECT pairs"
    );
    assert!(s.series.iter().all(|x| x.identity.is_some()));
    let by_run = run_dose(&blanked, &truth, &tmp.path().join("run_blanked"));
    assert_same_doses(&reference, &by_run, "organdose run, UIDs blanked");
    let warnings = by_run["warnings"].to_string();
    assert!(
        warnings.contains("paired as one SPECT/CT session"),
        "{warnings}"
    );
    assert!(!warnings.contains("no diagnostic CT"), "{warnings}");

    // The box on the blanked export: one cycle, final, the same doses, nothing quarantined.
    let out = tmp.path().join("out");
    let (dir, rec) = watch_once(&cfg, &blanked_root, &staging, &out);
    assert_eq!(rec.outcome, "done", "{}", rec.message);
    assert_eq!(rec.summary_status, "final");
    assert_same_doses(&reference, &summary(&dir), "watch, UIDs blanked");
    assert!(quarantined(&out).is_empty(), "{:?}", quarantined(&out));
}

#[test]
fn only_the_diagnostic_ct_blanked_keeps_its_masses() {
    // Issue 19: with only the diagnostic CT's UIDs blanked its files were refused,
    // the first low-dose CT stood in for it (masses from a 5 mm, contrast-free CT)
    // and the cycle still finished as final.
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient = phantom(&staging, 29);
    let pid = patient.file_name().unwrap().to_string_lossy().to_string();
    let cfg = box_config(tmp.path(), "\n[report]\ndicom = false\n");
    let reference = run_dose(&patient, &patient.join("truth"), &tmp.path().join("ref"));
    let export = tmp.path().join("export");
    rewrite(&patient, &export.join(&pid), &|rel, o| {
        if rel.starts_with("002_CT_ABDOMEN_CONTRAST") {
            put_empty(o, tags::STUDY_INSTANCE_UID);
            put_empty(o, tags::SERIES_INSTANCE_UID);
        }
    });
    let out = tmp.path().join("out");
    let (dir, rec) = watch_once(&cfg, &export, &staging, &out);
    assert_eq!(rec.outcome, "done", "{}", rec.message);
    assert_eq!(rec.summary_status, "final");
    let got = summary(&dir);
    assert_same_doses(&reference, &got, "watch, diagnostic CT blanked");
    assert!(!got["warnings"].to_string().contains("no diagnostic CT"));
    assert!(quarantined(&out).is_empty(), "{:?}", quarantined(&out));
}

fn read_dir_series(dir: &Path) -> Volume<f32> {
    read_single_series(dir, None, &Config::default().ingest)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .1
}

fn assert_same_volume(a: &Volume<f32>, b: &Volume<f32>, tol: f32, what: &str) {
    assert_eq!(a.geom.dims, b.geom.dims, "{what}");
    for (x, y) in [
        (a.geom.spacing, b.geom.spacing),
        (a.geom.origin, b.geom.origin),
    ] {
        for k in 0..3 {
            assert!((x[k] - y[k]).abs() < 1e-4, "{what}: {x:?} vs {y:?}");
        }
    }
    for d in 0..3 {
        for k in 0..3 {
            assert!(
                (a.geom.direction[d][k] - b.geom.direction[d][k]).abs() < 1e-6,
                "{what}"
            );
        }
    }
    let worst = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= tol, "{what}: values differ by up to {worst}");
}

#[test]
fn enhanced_ct_pt_spect_and_rwvm_only_nm_read_back_as_the_originals() {
    if !have_python() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(&tmp.path().join("ph"), 31);
    let cfg = Config::default();

    // Enhanced CT (highdicom's legacy converter, frames shuffled) = the single-frame series.
    let ct = series_dir(&patient, "CT_ABDOMEN_CONTRAST");
    let enh = tmp.path().join("enhanced");
    std::fs::create_dir_all(&enh).unwrap();
    let enh_file = enh.join("ect.dcm");
    python(&[Path::new("enhanced-ct"), &ct, &enh_file]);
    let s = scan(&enh).unwrap();
    assert!(s.series[0].files[0].enhanced);
    assert_same_volume(
        &read_dir_series(&enh),
        &read_dir_series(&ct),
        1e-3,
        "Enhanced CT",
    );

    // The 24 h SPECT as PET Image Storage, one file per slice with its own slope.
    let nm_dir = series_dir(&patient, "SPECT_24h");
    let nm = read_dir_series(&nm_dir);
    let pt = tmp.path().join("pt");
    python(&[Path::new("pt"), &nm_dir.join("IM0001.dcm"), &pt]);
    let s = scan(&pt).unwrap();
    assert_eq!(s.series.len(), 1);
    assert_eq!(s.series[0].files[0].modality, "PT");
    let top = nm.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_same_volume(&read_dir_series(&pt), &nm, top / 32000.0, "PT");

    // NM with a Real World Value Mapping only: no Units, no Rescale.
    let rw = tmp.path().join("rwvm");
    rewrite(&nm_dir, &rw, &|_, o| {
        let slope = o
            .get(tags::RESCALE_SLOPE)
            .map(|e| e.to_float64().unwrap())
            .unwrap_or(1.0);
        let icpt = o
            .get(tags::RESCALE_INTERCEPT)
            .map(|e| e.to_float64().unwrap())
            .unwrap_or(0.0);
        for t in [tags::UNITS, tags::RESCALE_SLOPE, tags::RESCALE_INTERCEPT] {
            o.remove_element(t);
        }
        let mut unit = InMemDicomObject::new_empty();
        for (t, v) in [
            (tags::CODE_VALUE, "Bq/ml"),
            (tags::CODING_SCHEME_DESIGNATOR, "UCUM"),
            (tags::CODE_MEANING, "Becquerels/milliliter"),
        ] {
            unit.put(DataElement::new(t, VR::SH, PrimitiveValue::from(v)));
        }
        let mut item = InMemDicomObject::new_empty();
        item.put(DataElement::new(
            tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![unit]),
        ));
        item.put(DataElement::new(
            tags::REAL_WORLD_VALUE_SLOPE,
            VR::FD,
            PrimitiveValue::from(slope),
        ));
        item.put(DataElement::new(
            tags::REAL_WORLD_VALUE_INTERCEPT,
            VR::FD,
            PrimitiveValue::from(icpt),
        ));
        o.put(DataElement::new(
            tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
    });
    let h = &scan(&rw).unwrap().series[0].files[0];
    assert_eq!(
        (h.units.clone(), h.value_unit()),
        (None, "Bq/mL".to_string())
    );
    // f32 volumes: the last bit of values up to `top`.
    assert_same_volume(&read_dir_series(&rw), &nm, top * 1e-6, "RWVM-only NM");

    // A whole study whose SPECTs are all PT gives the doses of the NM one.
    let pt_study = tmp.path().join("pt_study");
    for e in std::fs::read_dir(&patient).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.contains("SPECT") {
            python(&[
                Path::new("pt"),
                &p.join("IM0001.dcm"),
                &pt_study.join(&name),
            ]);
        } else if name != "truth" {
            rewrite(&p, &pt_study.join(&name), &|_, _| {});
        }
    }
    let study = organdose::study::load_study(&pt_study).unwrap();
    assert_eq!(study.timepoints.len(), 4);
    let run = |dir: &Path, out: &str| run_dose(dir, &patient.join("truth"), &tmp.path().join(out));
    let (a, b) = (run(&patient, "nm_out"), run(&pt_study, "pt_out"));
    for (x, y) in doses(&a).iter().zip(doses(&b)) {
        assert_eq!(x.1, y.1, "{}: masses", x.0);
        assert!(
            (x.2 - y.2).abs() <= 1e-3 * x.2.abs(),
            "{}: {} vs {} Gy",
            x.0,
            x.2,
            y.2
        );
    }
    drop(cfg);
}

#[test]
fn a_dicomdir_folder_and_a_study_split_over_two_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(&tmp.path().join("ph"), 37);
    let ct = series_dir(&patient, "CT_ABDOMEN_CONTRAST");
    let reference = read_dir_series(&ct);

    // Half the slices in one export folder, half in another; with and without UIDs.
    for blank in [false, true] {
        let root = tmp.path().join(format!("split_{blank}"));
        let files = list_files(&ct).unwrap();
        for (k, f) in files.iter().enumerate() {
            let d = root.join(if k % 2 == 0 {
                "export_a"
            } else {
                "export_b/sub"
            });
            std::fs::create_dir_all(&d).unwrap();
            let mut o = dicom_object::open_file(f).unwrap();
            if blank {
                blank_uids(&mut o);
            }
            o.write_to_file(d.join(f.file_name().unwrap())).unwrap();
        }
        let s = scan(&root).unwrap();
        assert_eq!(s.series.len(), 1, "split, blanked {blank}");
        assert_eq!(s.series[0].files.len(), files.len());
        assert_same_volume(&read_dir_series(&root), &reference, 0.0, "split study");
    }

    // A DICOMDIR written by pydicom's FileSet over the whole patient: the index is
    // skipped (and said so), the files it lists are read, the study is the same.
    if !have_python() {
        return;
    }
    let flat = tmp.path().join("no_truth");
    rewrite(&patient, &flat, &|_, _| {});
    let media = tmp.path().join("media");
    python(&[Path::new("dicomdir"), &flat, &media]);
    assert!(media.join("DICOMDIR").is_file());
    let s = scan(&media).unwrap();
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
    assert_eq!(s.ignored.len(), 1);
    assert!(s.ignored[0].0.ends_with("DICOMDIR"));
    assert_eq!(s.series.len(), 9);
    let inspect = ok(
        &organdose(&["inspect", &media.to_string_lossy()]),
        "inspect",
    );
    assert!(
        inspect.contains("DICOMDIR (Media Storage Directory)"),
        "{inspect}"
    );
    let a = organdose::study::load_study(&patient).unwrap();
    let b = organdose::study::load_study(&media).unwrap();
    let times =
        |s: &organdose::study::Study| s.timepoints.iter().map(|t| t.t_h).collect::<Vec<_>>();
    assert_eq!(times(&a), times(&b));
    assert_same_volume(
        &b.diagnostic_ct.read(&Config::default().ingest).unwrap(),
        &reference,
        0.0,
        "DICOMDIR diagnostic CT",
    );
}

#[test]
fn refusals_name_the_file_and_the_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated/ct_axial");
    let first = list_files(&src).unwrap()[2].file_name().unwrap().to_owned();
    for (tag, name) in [
        (
            tags::IMAGE_POSITION_PATIENT,
            "ImagePositionPatient (0020,0032)",
        ),
        (
            tags::IMAGE_ORIENTATION_PATIENT,
            "ImageOrientationPatient (0020,0037)",
        ),
    ] {
        // Without UIDs a file of another orientation is a series of its own
        // (orientation is part of the fallback identity), so that case is checked
        // with UIDs only.
        let modes: &[bool] = if tag == tags::IMAGE_ORIENTATION_PATIENT {
            &[false]
        } else {
            &[false, true]
        };
        for &blank in modes {
            let dir = tmp.path().join(format!("{}_{}_{blank}", tag.0, tag.1));
            rewrite(&src, &dir, &|rel, o| {
                if blank {
                    blank_uids(o);
                }
                if rel.file_name() == Some(&first) {
                    o.remove_element(tag);
                }
            });
            let e = read_single_series(&dir, None, &Config::default().ingest)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            let file = dir.join(&first).display().to_string();
            assert!(
                e.contains(&file) && e.contains(name),
                "missing {name}, blanked UIDs {blank}: {e}"
            );
        }
    }
    // Several energy windows in one NM object: the vector is named.
    let nm =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated/nm_multiframe_rescale");
    let dir = tmp.path().join("nm_windows");
    rewrite(&nm, &dir, &|_, o| {
        let frames = o
            .get(tags::NUMBER_OF_FRAMES)
            .map(|e| e.to_int::<u16>().unwrap())
            .unwrap_or(1);
        let v: Vec<u16> = (0..frames).map(|k| 1 + k % 2).collect();
        o.put(DataElement::new(
            tags::ENERGY_WINDOW_VECTOR,
            VR::US,
            PrimitiveValue::U16(v.into()),
        ));
    });
    let e = read_single_series(&dir, None, &Config::default().ingest)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("EnergyWindowVector (0054,0010)") && e.contains(&dir.display().to_string()),
        "{e}"
    );
}
