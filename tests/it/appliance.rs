//! The appliance end to end on a phantom patient: files dropped one by one in
//! random order, time points days apart on a simulated clock, must give the same
//! final dose_summary.json as `organdose run` on the whole folder; a box killed
//! mid-job and restarted must give the same result without losing or repeating work.

use crate::common::fixtures::phantom;
use crate::common::labels;
use organdose::appliance::clock::ManualClock;
use organdose::appliance::daemon::{records, Appliance};
use organdose::appliance::processor::{Masks, StudyProcessor};
use organdose::appliance::status::{Sink, StatusPort};
use organdose::config::Config;
use organdose::phantom::Format;
use organdose::pipeline::{run_study, MaskSource};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every series of a phantom patient into the export folder at once.
fn export_all(patient_dir: &Path, export: &Path) {
    for (name, files) in dicom_files_by_series(patient_dir) {
        for f in files {
            let d = export.join(&name).join(f.file_name().unwrap());
            std::fs::create_dir_all(d.parent().unwrap()).unwrap();
            std::fs::copy(&f, &d).unwrap();
        }
    }
}

/// Deterministic shuffle (xorshift) so the test is repeatable.
fn shuffle<T>(v: &mut [T], mut s: u64) {
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
}

fn dicom_files_by_series(patient_dir: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(patient_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with("truth"))
        .collect();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        out.push((d.file_name().unwrap().to_string_lossy().to_string(), files));
    }
    out
}

fn config() -> Config {
    let mut cfg = Config::default();
    cfg.appliance.quiet_period_s = 30.0;
    cfg
}

#[test]
fn files_in_random_order_days_apart_give_the_same_summary_as_run() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient_dir = phantom(&staging, 21, Format::Dicom);
    let pid = patient_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let cfg = config();

    // Reference: the whole folder at once.
    let study = organdose::study::load_study(&patient_dir).unwrap();
    let reference_out = tmp.path().join("reference");
    run_study(
        &study,
        &MaskSource::truth_of(&patient_dir),
        &reference_out,
        &cfg,
        "final",
        &|_, _| {},
    )
    .unwrap();
    let reference = std::fs::read_to_string(reference_out.join("dose_summary.json")).unwrap();

    // The box: the diagnostic CT first, then each visit's LDCT + SPECT a day or more
    // apart, every visit's files in random order into a flat, renamed layout.
    let export = tmp.path().join("export");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&export).unwrap();
    let clock = ManualClock::default();
    let status = Arc::new(StatusPort::new(Sink::Log, &out));
    let processor = Arc::new(StudyProcessor {
        cfg: cfg.clone(),
        masks: Masks::TruthRoot(staging.clone()),
        outbox: None,
    });
    let mut app = Appliance::new(
        &export,
        &out,
        cfg.appliance.clone(),
        cfg.ingest.clone(),
        processor,
        status.clone(),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let series = dicom_files_by_series(&patient_dir);
    let visit_of = |name: &str| -> usize {
        ["0.5h", "6h", "24h", "72h"]
            .iter()
            .position(|t| name.ends_with(&format!("_{t}")))
            .map(|v| v + 1)
            .unwrap_or(0)
    };
    let mut statuses = Vec::new();
    for visit in 0..=4 {
        let mut files: Vec<(String, PathBuf)> = series
            .iter()
            .filter(|(name, _)| visit_of(name) == visit)
            .flat_map(|(name, fs)| fs.iter().map(move |f| (name.clone(), f.clone())))
            .collect();
        shuffle(&mut files, 1234 + visit as u64);
        for (n, (name, f)) in files.iter().enumerate() {
            let dst = export
                .join(format!("v{visit}"))
                .join(format!("{name}_{n:04}.dcm"));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(f, &dst).unwrap();
            if n % 50 == 0 {
                // Files keep arriving: nothing may start while the folder is busy.
                clock.advance(5.0);
                app.step().unwrap();
            }
        }
        app.step().unwrap();
        clock.advance(31.0);
        app.step().unwrap();
        app.wait_idle();
        if visit >= 1 {
            let rec = records(&out).unwrap();
            let r = rec
                .values()
                .next()
                .expect("a cycle record after each visit");
            assert_eq!(r.outcome, "done", "{}", r.message);
            statuses.push((r.timepoints, r.summary_status.clone()));
        }
        // The next visit comes a day or two later.
        clock.advance(86400.0 * 1.5);
    }
    assert_eq!(
        statuses,
        vec![
            (1, "partial".to_string()),
            (2, "partial".to_string()),
            (3, "provisional".to_string()),
            (4, "final".to_string())
        ]
    );
    let recs = records(&out).unwrap();
    assert_eq!(recs.len(), 1);
    let id = recs.keys().next().unwrap();
    assert!(id.starts_with(&pid), "{id}");
    let got = std::fs::read_to_string(out.join(id).join("dose_summary.json")).unwrap();
    assert_eq!(got, reference, "appliance and `run` summaries differ");
    // Inputs untouched, nothing quarantined.
    assert!(!out.join("quarantine").exists());
    assert_eq!(status.get().jobs_done, 4);
}

#[test]
fn killed_mid_job_restart_finishes_without_loss_or_repeat() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient_dir = phantom(&staging, 22, Format::Dicom);
    let export = tmp.path().join("export");
    let out = tmp.path().join("out");
    // The whole patient arrives at once; a junk file with it goes to quarantine.
    export_all(&patient_dir, &export);
    std::fs::write(export.join("notes.txt"), "not an image\n").unwrap();
    let cfg_path = tmp.path().join("box.toml");
    std::fs::write(
        &cfg_path,
        "[appliance]\nquiet_period_s = 0.5\npoll_interval_s = 0.1\nheartbeat_s = 0.2\n",
    )
    .unwrap();
    let events = tmp.path().join("events.log");
    let bin = env!("CARGO_BIN_EXE_organdose");
    let spawn = |once: bool| {
        let mut c = std::process::Command::new(bin);
        c.arg("--config")
            .arg(&cfg_path)
            .arg("watch")
            .arg("--in")
            .arg(&export)
            .arg("--out")
            .arg(&out)
            .arg("--truth-root")
            .arg(&staging)
            .arg("--status")
            .arg(format!("file:{}", events.display()));
        if once {
            c.arg("--once");
        }
        c
    };
    // First run: kill -9 as soon as the job is running.
    let mut child = spawn(false).spawn().unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(&events).unwrap_or_default();
        if log.contains(" start (") {
            break;
        }
        assert!(t0.elapsed().as_secs() < 120, "job never started:\n{log}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let log = std::fs::read_to_string(&events).unwrap();
    let killed_before_done = !log.contains(" done: ");
    eprintln!("killed before the job finished: {killed_before_done}");
    // Second run: finishes what is there, then exits.
    let st = spawn(true).status().unwrap();
    assert!(st.success());
    let log = std::fs::read_to_string(&events).unwrap();
    let starts = log.matches(" start (").count();
    let dones = log.matches(" done: ").count();
    assert_eq!(dones, 1, "exactly one finished job:\n{log}");
    if killed_before_done {
        assert_eq!(starts, 2, "the killed job ran again, once:\n{log}");
    }
    // A third start finds nothing to do.
    let st = spawn(true).status().unwrap();
    assert!(st.success());
    let log = std::fs::read_to_string(&events).unwrap();
    assert_eq!(
        log.matches(" done: ").count(),
        1,
        "no study processed twice:\n{log}"
    );

    // Same result as `organdose run` on the whole folder.
    let recs = records(&out).unwrap();
    let r = recs.values().next().unwrap();
    assert_eq!(
        (r.outcome.as_str(), r.summary_status.as_str()),
        ("done", "final")
    );
    let reference_out = tmp.path().join("reference");
    let st = std::process::Command::new(bin)
        .arg("run")
        .arg(&patient_dir)
        .arg("--truth")
        .arg("-o")
        .arg(&reference_out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join(&r.id).join("dose_summary.json")).unwrap(),
        std::fs::read_to_string(reference_out.join("dose_summary.json")).unwrap()
    );
    // The junk file is in quarantine with its reason, and still in the export folder.
    let q = out.join("quarantine");
    let reasons: Vec<String> = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path().join("reason.txt")).unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not DICOM")),
        "{reasons:?}"
    );
    assert!(export.join("notes.txt").is_file());
    // `organdose status` reads the box's state.
    let s = std::process::Command::new(bin)
        .args(["status", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s.stdout);
    assert!(text.contains(&r.id) && text.contains("final"), "{text}");
    assert!(text.contains("state=idle"), "{text}");
}

#[test]
fn run_without_masks_or_model_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let patient_dir = phantom(tmp.path(), 23, Format::Dicom);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_organdose"))
        .arg("run")
        .arg(&patient_dir)
        .arg("--weights")
        .arg(tmp.path().join("no-model"))
        .arg("-o")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no segmentation model"), "{err}");
}

/// Issue 36, the gate in the box: a cycle held for review says why on its
/// status line and in `organdose status`, not only in the summary. The
/// truth masks given to the box lose half the right kidney on one low-dose CT.
#[test]
fn a_cycle_held_for_review_says_why_on_the_status_line_and_in_status() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient_dir = phantom(&staging, 24, Format::Dicom);
    let tp2 = patient_dir.join("truth/labels_ldct_tp2.nii.gz");
    let mut l = organdose::io::nifti::read_nifti_labels(&tp2).unwrap();
    labels::remove_lower_half(&mut l, 3);
    organdose::io::nifti::write_nifti(&l, &tp2, "half a right kidney").unwrap();
    let export = tmp.path().join("export");
    let out = tmp.path().join("out");
    export_all(&patient_dir, &export);
    let cfg_path = tmp.path().join("box.toml");
    std::fs::write(
        &cfg_path,
        "[appliance]\nquiet_period_s = 0.2\npoll_interval_s = 0.1\nheartbeat_s = 0.2\n",
    )
    .unwrap();
    let events = tmp.path().join("events.log");
    let bin = env!("CARGO_BIN_EXE_organdose");
    let st = std::process::Command::new(bin)
        .arg("--config")
        .arg(&cfg_path)
        .args(["watch", "--once", "--no-dicom", "--in"])
        .arg(&export)
        .arg("--out")
        .arg(&out)
        .arg("--truth-root")
        .arg(&staging)
        .arg("--status")
        .arg(format!("file:{}", events.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let why = "needs review: kidney_right mask on the low-dose CT";
    let log = std::fs::read_to_string(&events).unwrap();
    let done = log.lines().find(|l| l.contains(" done: ")).unwrap_or("");
    assert!(
        done.contains("needs_review") && done.contains(why),
        "status line: {done}\n{log}"
    );
    let s = std::process::Command::new(bin)
        .args(["status", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s.stdout);
    assert!(
        text.contains("needs_review") && text.contains(why),
        "{text}"
    );
}

/// A physicist's correction the box cannot read (here an RT Structure Set
/// with its ROI list cut out) was quarantined while her patient's cycle
/// came out `final` on the masks she had corrected. It now holds the cycle
/// for review, says so on the status line, and the file stays untouched.
#[test]
fn an_unreadable_correction_holds_its_patients_cycle_from_final() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient_dir = phantom(&staging, 25, Format::Dicom);
    let bin = env!("CARGO_BIN_EXE_organdose");
    // organdose's own RT Structure Set of the diagnostic CT, as a viewer
    // would send it back, with its StructureSetROISequence missing.
    let reference = tmp.path().join("reference");
    let st = std::process::Command::new(bin)
        .arg("dose")
        .arg(&patient_dir)
        .arg("--truth")
        .arg("-o")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let mut o = dicom_object::open_file(reference.join("dicom/RTSTRUCT_CT.dcm")).unwrap();
    o.put(DataElement::new(
        tags::MANUFACTURER,
        VR::LO,
        PrimitiveValue::from("Viewer"),
    ));
    o.remove_element(tags::STRUCTURE_SET_ROI_SEQUENCE);
    let export = tmp.path().join("export");
    export_all(&patient_dir, &export);
    let bad = export.join("corrections/broken_rtstruct.dcm");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    o.write_to_file(&bad).unwrap();
    let before = std::fs::read(&bad).unwrap();
    let out = tmp.path().join("out");
    let events = tmp.path().join("events.log");
    let st = std::process::Command::new(bin)
        .args(["watch", "--once", "--no-dicom", "--in"])
        .arg(&export)
        .arg("--out")
        .arg(&out)
        .arg("--truth-root")
        .arg(&staging)
        .arg("--status")
        .arg(format!("file:{}", events.display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let log = std::fs::read_to_string(&events).unwrap();
    let done = log.lines().find(|l| l.contains(" done: ")).unwrap_or("");
    assert!(
        done.contains("needs_review") && done.contains("held from final"),
        "status line: {done}\n{log}"
    );
    assert!(log.contains("corrected contours not readable"), "{log}");
    assert_eq!(
        std::fs::read(&bad).unwrap(),
        before,
        "the correction changed"
    );
    let q = std::fs::read_dir(out.join("quarantine")).unwrap().count();
    assert_eq!(q, 1, "one quarantined correction");
}

/// Issue 41: a study's CTs are read once. With truth masks the diagnostic CT
/// is read to check the masks' grid and its QC pictures are drawn then; each
/// low-dose CT is read by the report alone; each SPECT by the dosimetry. (The
/// report read the diagnostic CT a second time.)
#[test]
fn each_volume_of_a_study_is_read_once() {
    let tmp = tempfile::tempdir().unwrap();
    let patient_dir = phantom(tmp.path(), 26, Format::Dicom);
    let o = crate::common::fixtures::organdose()
        .env("RUST_LOG", "organdose_io=debug,warn")
        .arg("dose")
        .arg(&patient_dir)
        .arg("--truth")
        .arg("-o")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let mut reads: std::collections::BTreeMap<String, usize> = Default::default();
    for line in err.lines() {
        if let Some(i) = line.find("reading the pixels of DICOM series ") {
            let rest = &line[i + "reading the pixels of DICOM series ".len()..];
            let uid = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            *reads.entry(uid).or_default() += 1;
        }
    }
    // Diagnostic CT, four low-dose CTs, four SPECTs.
    assert_eq!(reads.len(), 9, "{reads:?}\n{err}");
    assert!(reads.values().all(|&n| n == 1), "{reads:?}");
}
