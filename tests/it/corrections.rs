//! Corrected contours coming back (issue 36, item 3), against known truth:
//!
//! - organdose's own RT Structure Sets and SEGs read back by `io::corrections`
//!   and rasterised on the CT's grid give the masks they were written from
//!   (Dice and volume per organ, against the phantom's truth label maps);
//! - a physicist's edit made with pydicom (RTSTRUCT: the left kidney shrunk
//!   5 mm towards its centroid on every slice, one slice deleted; also with the
//!   ROIs renamed "L Kidney" / "R Kidney" / "LIVER") or highdicom (SEG, binary
//!   and fractional: the left kidney eroded 5 mm, one slice deleted), whose
//!   left-kidney mass `tests/scripts/edit_corrections.py` computes on its own
//!   (matplotlib's Path for the contours, the written array for the SEG), used
//!   through `dose --masks`, the export folder and the Storage SCP (dcmtk
//!   `storescu`): the recomputed left-kidney mass is within 2 % of that truth,
//!   the status `reviewed` with who and when, the earlier result in history;
//! - a correction that refers to a series nobody has: `dose --masks` refuses it
//!   naming the file and the reference; the box quarantines it with a reason
//!   that names the series, and nothing else changes; organdose's own output
//!   coming back is no correction.
//!
//! The python tools (pydicom, highdicom, numpy, matplotlib) and dcmtk are
//! installed pinned by `.ci/run`; a missing tool skips a test with a message,
//! or fails it under ORGANDOSE_REQUIRE_TOOLS=1.

use crate::common::proc;
use crate::common::tools;
use proc::{wait_until, Proc};

use crate::common::fixtures::{copy_tree, free_port, read, series_dirs, BIN};
use organdose::appliance::clock::ManualClock;
use organdose::appliance::daemon::{records, Appliance};
use organdose::appliance::processor::{Masks, StudyProcessor};
use organdose::appliance::status::{Sink, StatusPort};
use organdose::config::Config;
use organdose::io::corrections::{self, names, raster};
use organdose::io::nifti::read_nifti_labels;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

const README: &str = "Sending corrections back";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/edit_corrections.py")
}

fn have_python() -> bool {
    tools::python_dicom(README)
        && tools::have(
            "python3 with matplotlib (pip install, see .ci/run)",
            README,
            Command::new("python3").args(["-c", "import matplotlib.path"]),
        )
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The phantom's diagnostic CT series folder.
fn diag_ct_dir(patient_dir: &Path) -> PathBuf {
    std::fs::read_dir(patient_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("_CT_"))
        })
        .expect("a diagnostic CT folder")
}

/// `organdose dose STUDY --truth [extra] -o out`; the output on failure.
fn dose(patient_dir: &Path, out: &Path, extra: &[&Path]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.arg("dose").arg(patient_dir).arg("--truth");
    if !extra.is_empty() {
        c.arg("--masks").args(extra);
    }
    c.arg("-o").arg(out).output().unwrap()
}

fn dose_ok(patient_dir: &Path, out: &Path, extra: &[&Path]) -> Value {
    let o = dose(patient_dir, out, extra);
    assert!(
        o.status.success(),
        "dose: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    json(&out.join("dose_summary.json"))
}

/// The python edit: writes `dst`, returns the truth it computed.
fn edit(kind: &str, src: &Path, dst: &Path, ct_dir: &Path, extra: &[&str]) -> Value {
    let o = Command::new("python3")
        .arg(script())
        .arg(kind)
        .arg(src)
        .arg(dst)
        .arg(ct_dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "edit_corrections.py {kind}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn kidney_left_g(summary: &Value) -> f64 {
    summary["organs"]["kidney_left"]["mass_g"].as_f64().unwrap()
}

/// The recomputed left kidney against the independent truth, and against the
/// mass before the edit (so an edit that was not applied fails).
fn check_mass(summary: &Value, truth: &Value, before_g: f64, what: &str) {
    let got = kidney_left_g(summary);
    let want = truth["kidney_left_g"].as_f64().unwrap();
    let err = (got - want).abs() / want;
    eprintln!(
        "{what}: kidney_left {got:.2} g, independent truth {want:.2} g ({:+.3} %), before the edit {before_g:.2} g",
        100.0 * (got - want) / want
    );
    assert!(err < 0.02, "{what}: {got} g vs truth {want} g");
    assert!(
        (got - before_g).abs() / before_g > 0.2,
        "{what}: the edit should change the mass ({got} vs {before_g})"
    );
}

fn check_reviewed(summary: &Value, what: &str) {
    assert_eq!(
        summary["status"], "reviewed",
        "{what}: {}",
        summary["status"]
    );
    let r = &summary["reviewed"];
    assert!(
        r["by"].as_str().unwrap().contains("Physicist Test"),
        "{what}: {r}"
    );
    assert!(!r["at"].as_str().unwrap().is_empty(), "{what}: {r}");
    assert!(
        r["organs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "kidney_left"),
        "{what}: {r}"
    );
}

fn dice(a: &[bool], b: &[bool]) -> f64 {
    let both = a.iter().zip(b).filter(|(x, y)| **x && **y).count() as f64;
    let n = (a.iter().filter(|x| **x).count() + b.iter().filter(|x| **x).count()) as f64;
    if n == 0.0 {
        1.0
    } else {
        2.0 * both / n
    }
}

#[test]
fn organdose_rtstruct_and_seg_read_back_to_the_masks_they_were_written_from() {
    let tmp = tempfile::tempdir().unwrap();
    let patient_dir = tools::small_dicom_phantom(&tmp.path().join("ph"), 41);
    let out = tmp.path().join("out");
    dose_ok(&patient_dir, &out, &[]);
    let truth_dir = patient_dir.join("truth");
    for (object, truth) in [
        ("RTSTRUCT_CT.dcm", "labels_ct.nii.gz"),
        ("SEG_CT.dcm", "labels_ct.nii.gz"),
        ("RTSTRUCT_TP1.dcm", "labels_ldct_tp1.nii.gz"),
        ("SEG_TP3.dcm", "labels_ldct_tp3.nii.gz"),
    ] {
        let labels = read_nifti_labels(&truth_dir.join(truth)).unwrap();
        let c = corrections::read(&out.join("dicom").join(object)).unwrap();
        assert!(c.manufacturer == "organdose", "{object}");
        let mut seen = 0;
        for roi in &c.rois {
            let organ = names::organ_of(&roi.name)
                .unwrap_or_else(|| panic!("{object}: ROI '{}' is no organ", roi.name));
            let (mask, notes) = raster::rasterise(roi, &labels.geom);
            assert!(notes.is_empty(), "{object}: {notes:?}");
            let want: Vec<bool> = labels.data.iter().map(|&v| v == organ).collect();
            let (n_got, n_want) = (
                mask.iter().filter(|b| **b).count(),
                want.iter().filter(|b| **b).count(),
            );
            let d = dice(&mask, &want);
            let dv = (n_got as f64 - n_want as f64) / n_want as f64;
            eprintln!(
                "{object} {}: Dice {d:.4}, volume {n_got} vs {n_want} voxels ({:+.2} %)",
                roi.name,
                100.0 * dv
            );
            assert!(d > 0.97, "{object} {}: Dice {d}", roi.name);
            assert!(dv.abs() < 0.02, "{object} {}: volume {dv}", roi.name);
            seen += 1;
        }
        assert!(seen >= 4, "{object}: {seen} ROIs");
    }
    // A malformed object is an input error that names the file: a CT slice, and
    // a structure set cut short.
    let slice = std::fs::read_dir(diag_ct_dir(&patient_dir))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let e = corrections::read(&slice).unwrap_err();
    assert_eq!(e.kind(), organdose::error::FaultKind::Input);
    assert!(e.to_string().contains(&slice.display().to_string()), "{e}");
    assert!(
        e.to_string()
            .contains("neither an RT Structure Set nor a SEG"),
        "{e}"
    );
    let bytes = std::fs::read(out.join("dicom/RTSTRUCT_CT.dcm")).unwrap();
    let cut = tmp.path().join("cut.dcm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = corrections::read(&cut).unwrap_err();
    assert_eq!(e.kind(), organdose::error::FaultKind::Input);
    assert!(e.to_string().contains("cut.dcm"), "{e}");
}

#[test]
fn dose_masks_with_edited_rtstruct_and_seg_gives_the_independent_mass() {
    if !have_python() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let patient_dir = tools::small_dicom_phantom(&tmp.path().join("ph"), 42);
    let ct = diag_ct_dir(&patient_dir);
    let first = tmp.path().join("first");
    let before = kidney_left_g(&dose_ok(&patient_dir, &first, &[]));
    let dicom = first.join("dicom");
    let cases: [(&str, &str, &[&str]); 4] = [
        ("rtstruct", "RTSTRUCT_CT.dcm", &[]),
        (
            "rtstruct",
            "RTSTRUCT_CT.dcm",
            &[
                "--rename",
                "Kidney_L=L Kidney",
                "--rename",
                "Kidney_R=R Kidney",
                "--rename",
                "Liver=LIVER",
            ],
        ),
        ("seg", "SEG_CT.dcm", &[]),
        ("seg", "SEG_CT.dcm", &["--fractional"]),
    ];
    for (n, (kind, src, extra)) in cases.iter().enumerate() {
        let what = format!("dose --masks, {kind} {extra:?}");
        let edited = tmp.path().join(format!("edited_{n}.dcm"));
        let truth = edit(kind, &dicom.join(src), &edited, &ct, extra);
        let out = tmp.path().join(format!("out_{n}"));
        let s = dose_ok(&patient_dir, &out, &[&edited]);
        check_reviewed(&s, &what);
        check_mass(&s, &truth, before, &what);
        assert!(
            s["reviewed"]["object"]
                .as_str()
                .unwrap()
                .contains(&format!("edited_{n}.dcm")),
            "{what}: {}",
            s["reviewed"]
        );
        // The other organs are the same ROIs as before, renamed or not.
        let s0 = json(&first.join("dose_summary.json"));
        for organ in ["kidney_right", "liver", "spleen"] {
            let (a, b) = (
                s["organs"][organ]["mass_g"].as_f64().unwrap(),
                s0["organs"][organ]["mass_g"].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-6 * b, "{what}: {organ} {a} vs {b}");
        }
        assert!(read(&out.join("report.txt")).contains("REVIEWED: masks of"));
    }
    // A correction for a series the study does not have: refused, naming the
    // file and the reference.
    let unknown = tmp.path().join("unknown.dcm");
    let t = edit(
        "rtstruct",
        &dicom.join("RTSTRUCT_CT.dcm"),
        &unknown,
        &ct,
        &["--unknown-series"],
    );
    let o = dose(&patient_dir, &tmp.path().join("out_unknown"), &[&unknown]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown.dcm"), "{err}");
    assert!(
        err.contains(t["unknown_series"].as_str().unwrap()),
        "names the missing series: {err}"
    );
    assert!(!tmp.path().join("out_unknown/dose_summary.json").exists());
}

/// One round after the quiet period, and the job it queues run to the end.
fn settle(app: &mut Appliance, clock: &ManualClock) -> usize {
    app.step().unwrap();
    clock.advance(11.0);
    let n = app.step().unwrap();
    app.wait_idle();
    app.step().unwrap();
    n
}

fn history_summaries(cycle_dir: &Path) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(cycle_dir.join("history")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs.iter()
        .map(|d| json(&d.join("dose_summary.json")))
        .collect()
}

#[test]
fn export_folder_correction_recomputes_the_cycle_reviewed_with_history() {
    if !have_python() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient_dir = tools::small_dicom_phantom(&staging, 43);
    let ct = diag_ct_dir(&patient_dir);
    let (export, out) = (tmp.path().join("export"), tmp.path().join("out"));
    for d in series_dirs(&patient_dir) {
        let dst = export.join(d.file_name().unwrap());
        std::fs::create_dir_all(&dst).unwrap();
        copy_tree(&d, &dst);
    }
    let mut cfg = Config::default();
    cfg.appliance.quiet_period_s = 10.0;
    let clock = ManualClock::default();
    let processor = Arc::new(StudyProcessor {
        cfg: cfg.clone(),
        masks: Masks::TruthRoot(staging.clone()),
        outbox: None,
    });
    let status = Arc::new(StatusPort::new(Sink::Log, &out));
    let mut app = Appliance::new(
        &export,
        &out,
        cfg.appliance.clone(),
        cfg.ingest.clone(),
        processor,
        status,
        Arc::new(clock.clone()),
    )
    .unwrap();
    assert_eq!(settle(&mut app, &clock), 1);
    let recs = records(&out).unwrap();
    let (id, first) = recs.iter().next().unwrap();
    assert_eq!(first.summary_status, "final");
    let cycle_dir = out.join(id);
    let first_summary = read(&cycle_dir.join("dose_summary.json"));
    let before = kidney_left_g(&serde_json::from_str(&first_summary).unwrap());
    let own = tmp.path().join("own");
    std::fs::create_dir_all(&own).unwrap();
    copy_tree(&cycle_dir.join("dicom"), &own);

    // 1. A correction of a series nobody has: quarantined with a reason naming
    // it; the cycle, its record and its result stay as they are.
    let corr = export.join("corrections");
    std::fs::create_dir_all(&corr).unwrap();
    let t = edit(
        "rtstruct",
        &own.join("RTSTRUCT_CT.dcm"),
        &corr.join("unknown.dcm"),
        &ct,
        &["--unknown-series"],
    );
    assert_eq!(settle(&mut app, &clock), 0, "nothing recomputed");
    let q = out.join("quarantine");
    let reasons: Vec<String> = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| read(&e.unwrap().path().join("reason.txt")))
        .collect();
    let series = t["unknown_series"].as_str().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(series) && r.contains("unknown.dcm")),
        "{reasons:?}"
    );
    assert_eq!(records(&out).unwrap().get(id), Some(first));
    assert_eq!(read(&cycle_dir.join("dose_summary.json")), first_summary);
    assert!(corr.join("unknown.dcm").is_file(), "input left in place");

    // 2. organdose's own structure set coming back: no correction, no loop.
    std::fs::copy(own.join("RTSTRUCT_CT.dcm"), corr.join("own_rtstruct.dcm")).unwrap();
    std::fs::copy(own.join("SEG_TP1.dcm"), corr.join("own_seg.dcm")).unwrap();
    assert_eq!(settle(&mut app, &clock), 0, "own outputs recompute nothing");
    assert_eq!(records(&out).unwrap().get(id), Some(first));

    // 3. The physicist's structure set, ROIs named "L Kidney" / "R Kidney" /
    // "LIVER": the cycle is recomputed, reviewed, the final result in history.
    let t_rs = edit(
        "rtstruct",
        &own.join("RTSTRUCT_CT.dcm"),
        &corr.join("reviewed_rs.dcm"),
        &ct,
        &[
            "--rename",
            "Kidney_L=L Kidney",
            "--rename",
            "Kidney_R=R Kidney",
            "--rename",
            "Liver=LIVER",
        ],
    );
    assert_eq!(settle(&mut app, &clock), 1);
    let rec = records(&out).unwrap().get(id).unwrap().clone();
    assert_eq!(
        (rec.outcome.as_str(), rec.summary_status.as_str()),
        ("done", "reviewed"),
        "{rec:?}"
    );
    assert!(
        rec.message.contains("reviewed by Physicist Test"),
        "{rec:?}"
    );
    let s = json(&cycle_dir.join("dose_summary.json"));
    check_reviewed(&s, "export folder, RTSTRUCT");
    check_mass(&s, &t_rs, before, "export folder, RTSTRUCT");
    let hist = history_summaries(&cycle_dir);
    assert_eq!(hist.len(), 1, "the final result kept");
    assert_eq!(hist[0]["status"], "final");
    assert!((kidney_left_g(&hist[0]) - before).abs() < 1e-9);
    assert_eq!(settle(&mut app, &clock), 0, "computed once");

    // 4. A newer SEG of the same CT (highdicom): it wins over the older
    // structure set; both results before it stay in history.
    let t_seg = edit(
        "seg",
        &own.join("SEG_CT.dcm"),
        &corr.join("reviewed_seg.dcm"),
        &ct,
        &[],
    );
    assert_eq!(settle(&mut app, &clock), 1);
    let s = json(&cycle_dir.join("dose_summary.json"));
    check_reviewed(&s, "export folder, SEG");
    check_mass(&s, &t_seg, before, "export folder, SEG");
    let hist = history_summaries(&cycle_dir);
    let statuses: Vec<&str> = hist.iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert!(statuses.contains(&"final") && statuses.contains(&"reviewed"));
}

#[test]
fn storescu_sends_an_edited_rtstruct_into_the_scp_and_the_cycle_is_reviewed() {
    if !(tools::on_path(
        "dcmtk's storescu (apt-get install dcmtk)",
        README,
        "storescu",
    ) && have_python())
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient_dir = tools::small_dicom_phantom(&staging, 44);
    let ct = diag_ct_dir(&patient_dir);
    let export = tmp.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let out = tmp.path().join("out");
    let events = tmp.path().join("events.log");
    let cfg = tmp.path().join("box.toml");
    std::fs::write(
        &cfg,
        "[appliance]\nquiet_period_s = 1.0\npoll_interval_s = 0.1\nheartbeat_s = 0.2\n",
    )
    .unwrap();
    let port = free_port().to_string();
    let _box = Proc(
        Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("watch")
            .arg("--in")
            .arg(&export)
            .arg("--out")
            .arg(&out)
            .arg("--status")
            .arg(format!("file:{}", events.display()))
            .args(["--truth-root", staging.to_str().unwrap()])
            .args(["--dicom-port", &port, "--dicom-bind", "127.0.0.1"])
            .args(["--ae-title", "ORGANDOSE"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the SCP to listen", 60, || {
        read(&events).contains("listening on")
    });
    let store = |paths: &[PathBuf]| {
        let mut c = Command::new("storescu");
        c.args([
            "-aet",
            "PHYSICIST",
            "-aec",
            "ORGANDOSE",
            "+sd",
            "127.0.0.1",
            &port,
        ]);
        c.args(paths);
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "storescu: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    store(&series_dirs(&patient_dir));
    wait_until("the final result", 300, || {
        records(&out).is_ok_and(|r| {
            r.values()
                .any(|c| c.outcome == "done" && c.summary_status == "final")
        })
    });
    let recs = records(&out).unwrap();
    let id = recs.keys().next().unwrap().clone();
    let cycle_dir = out.join(&id);
    let before = kidney_left_g(&json(&cycle_dir.join("dose_summary.json")));
    let edited = tmp.path().join("edited_rs.dcm");
    let t = edit(
        "rtstruct",
        &cycle_dir.join("dicom/RTSTRUCT_CT.dcm"),
        &edited,
        &ct,
        &[],
    );
    store(&[edited]);
    wait_until("the reviewed result", 300, || {
        records(&out).is_ok_and(|r| r.get(&id).is_some_and(|c| c.summary_status == "reviewed"))
    });
    let s = json(&cycle_dir.join("dose_summary.json"));
    check_reviewed(&s, "storescu, RTSTRUCT");
    check_mass(&s, &t, before, "storescu, RTSTRUCT");
    let hist = history_summaries(&cycle_dir);
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0]["status"], "final");
    // The status lines and `organdose status` say reviewed, by whom.
    let log = read(&events);
    assert!(
        log.contains(&format!("job {id} done: reviewed")),
        "{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let st = Command::new(BIN)
        .args(["status", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&id) && l.contains("reviewed") && l.contains("Physicist Test")),
        "{text}"
    );
}

/// A structure set whose tumour ROI a physicist renamed "Lesion 1": a ROI that is no
/// organ but names a lesion gives lesions (issue 37), listed in `lesion_rois`, not
/// ignored.
#[test]
fn a_lesion_roi_of_a_correction_gives_lesions() {
    if !have_python() {
        return;
    }
    use organdose::phantom::layout::{write_patient, WriteOptions};
    use organdose::phantom::{AnatomyKind, Format, Patient, PhantomConfig};
    let tmp = tempfile::tempdir().unwrap();
    let cfg = PhantomConfig {
        lesions: Some(2),
        anatomy: Some(AnatomyKind::Geometric),
        ..PhantomConfig::small()
    };
    let p = Patient::new(&cfg, 7, 0);
    let patient_dir = write_patient(
        &p,
        &tmp.path().join("ph"),
        &WriteOptions {
            format: Format::Dicom,
            preview: None,
        },
    )
    .unwrap()
    .patient_dir;
    let ct = diag_ct_dir(&patient_dir);
    let first = tmp.path().join("first");
    let s0 = dose_ok(&patient_dir, &first, &[]);
    let n0 = s0["lesions"].as_array().map_or(0, |l| l.len());
    assert!(n0 > 0, "the phantom has lesions");
    let edited = tmp.path().join("edited.dcm");
    edit(
        "rtstruct",
        &first.join("dicom/RTSTRUCT_CT.dcm"),
        &edited,
        &ct,
        &["--rename", "Tumour=Lesion 1"],
    );
    let s = dose_ok(&patient_dir, &tmp.path().join("out"), &[&edited]);
    assert_eq!(
        s["reviewed"]["lesion_rois"],
        serde_json::json!(["Lesion 1"])
    );
    assert!(!s["reviewed"]["ignored_rois"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "Lesion 1"));
    let lesions = s["lesions"].as_array().unwrap();
    assert_eq!(lesions.len(), n0, "{}", s["lesions"]);
    assert!(lesions.iter().all(|l| l["source"] == "given"));
}
