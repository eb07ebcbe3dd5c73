//! The failures found by probing the box (issue 20), each as a regression test:
//! an idle daemon that spins, failing rounds at loop rate, two boxes on one OUT,
//! result folders mixed after a kill, a read-only OUT recorded as the study's
//! fault, implausible results reported as final, and the smaller ones (cycle ids
//! as paths, quarantine names that collide, study.json values believed, CTs
//! never opened with --truth, symlinked folders, causes printed twice).

use crate::common::fixtures::{box_config, copy_tree, phantom, series_dirs, BIN};
use crate::common::labels;
use crate::common::soak::cpu_ticks;
use labels::remove_lower_half;
use organdose::appliance::clock::ManualClock;
use organdose::appliance::daemon::{records, Appliance, Job, JobOutput, Processor};
use organdose::appliance::processor::{Masks, StudyProcessor};
use organdose::appliance::status::{Sink, StatusPort};
use organdose::config::Config;
use organdose::io::nifti::{read_nifti_labels, write_nifti};
use organdose::phantom::Format;
use organdose::pipeline::{run_study, MaskSource};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated")
}

/// Kills the child when the test ends, however it ends.
struct Reaper(Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn watch(cfg: &Path, export: &Path, out: &Path, events: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(cfg)
        .arg("watch")
        .arg("--in")
        .arg(export)
        .arg("--out")
        .arg(out)
        .arg("--status")
        .arg(format!("file:{}", events.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn wait_for(what: &str, limit_s: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed().as_secs() < limit_s,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finding 2: an idle box on an empty export folder burnt 60-70 % of a core
/// (each poll's own open events woke the loop: ~1,500 rounds a second).
#[test]
fn an_idle_box_sleeps_between_polls() {
    if !Path::new("/proc/self/stat").exists() {
        eprintln!("skipped: needs Linux /proc to measure CPU time");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (export, out) = (tmp.path().join("export"), tmp.path().join("out"));
    std::fs::create_dir_all(&export).unwrap();
    let cfg = box_config(tmp.path(), "");
    let events = tmp.path().join("events.log");
    let child = Reaper(watch(&cfg, &export, &out, &events).spawn().unwrap());
    let pid = child.0.id();
    wait_for("the box to start", 30, || events.exists());
    std::thread::sleep(Duration::from_millis(500));
    let a = cpu_ticks(pid).unwrap();
    let secs = 5.0;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let b = cpu_ticks(pid).unwrap();
    // Clock ticks are 1/100 s on Linux (sysconf(_SC_CLK_TCK)).
    let share = (b - a) as f64 / 100.0 / secs;
    eprintln!(
        "idle box: {} ticks in {secs} s = {:.2} % of a core",
        b - a,
        100.0 * share
    );
    assert!(
        share < 0.03,
        "idle box uses {:.1} % of a core",
        100.0 * share
    );
}

/// Finding 2 (second half): a round that fails was repeated at loop rate (1,452
/// error lines in 6 s); it backs off now.
#[test]
fn a_failing_round_backs_off_instead_of_repeating_at_loop_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let (export, out) = (tmp.path().join("export"), tmp.path().join("out"));
    copy_tree(&data().join("nm_multiframe_rwv"), &export.join("a"));
    // The cycle's state record is unreadable: every round that looks at it fails.
    std::fs::create_dir_all(out.join("state")).unwrap();
    std::fs::write(out.join("state/REF001_20260301T080000.json"), "{ not json").unwrap();
    let cfg = box_config(tmp.path(), "retry_initial_s = 1\n");
    let events = tmp.path().join("events.log");
    let _child = Reaper(watch(&cfg, &export, &out, &events).spawn().unwrap());
    wait_for("the first failing round", 60, || {
        std::fs::read_to_string(&events).is_ok_and(|l| l.contains("event error"))
    });
    std::thread::sleep(Duration::from_secs(4));
    let log = std::fs::read_to_string(&events).unwrap();
    let errors = log.matches("event error").count();
    assert!(errors <= 3, "{errors} error lines in about 4 s:\n{log}");
    assert!(log.contains("input fault"), "{log}");
}

/// Finding 4: two `watch` on one OUT both ran the same job.
#[test]
fn a_second_box_on_one_out_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (export, out) = (tmp.path().join("export"), tmp.path().join("out"));
    std::fs::create_dir_all(&export).unwrap();
    let cfg = box_config(tmp.path(), "");
    let events = tmp.path().join("events.log");
    let _first = Reaper(watch(&cfg, &export, &out, &events).spawn().unwrap());
    wait_for("the first box", 30, || events.exists());
    let mut second = Reaper(
        watch(&cfg, &export, &out, &tmp.path().join("events2.log"))
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = second.0.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed().as_secs() < 20, "the second box kept running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(second.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("another organdose box"), "{err}");
    // `status` tells a running box from a stopped one.
    let s = Command::new(BIN)
        .args(["status", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(v["running"], true);
}

fn appliance(
    export: &Path,
    out: &Path,
    clock: &ManualClock,
    cfg: &Config,
    p: Arc<dyn Processor>,
) -> Appliance {
    let status = Arc::new(StatusPort::new(Sink::Log, out));
    Appliance::new(
        export,
        out,
        cfg.appliance.clone(),
        cfg.ingest.clone(),
        p,
        status,
        Arc::new(clock.clone()),
    )
    .unwrap()
}

fn fast_config() -> Config {
    let mut cfg = Config::default();
    cfg.appliance.quiet_period_s = 2.0;
    cfg.appliance.retry_initial_s = 5.0;
    cfg
}

/// Finding 5: after a kill a result folder held a `final` summary beside a
/// PROVISIONAL report and old plots; results are now swapped in whole.
#[test]
fn a_result_folder_is_replaced_as_a_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient = phantom(&staging, 31, Format::Dicom);
    let (export, out) = (tmp.path().join("export"), tmp.path().join("out"));
    let dirs = series_dirs(&patient);
    let (last, first) = dirs.split_last().unwrap();
    // Without the 72 h SPECT the cycle is provisional.
    assert!(last.ends_with("003_SPECT_72h"), "{}", last.display());
    for d in first {
        copy_tree(d, &export.join(d.file_name().unwrap()));
    }
    let cfg = fast_config();
    let clock = ManualClock::default();
    let p = Arc::new(StudyProcessor {
        cfg: cfg.clone(),
        masks: Masks::TruthRoot(staging.clone()),
        outbox: None,
    });
    let mut app = appliance(&export, &out, &clock, &cfg, p);
    app.step().unwrap();
    clock.advance(3.0);
    assert_eq!(app.step().unwrap(), 1);
    app.wait_idle();
    let rec = records(&out).unwrap().into_values().next().unwrap();
    assert_eq!(rec.summary_status, "provisional", "{}", rec.message);
    let dir = out.join(&rec.id);
    assert!(std::fs::read_to_string(dir.join("report.txt"))
        .unwrap()
        .contains("PROVISIONAL"));
    std::fs::write(dir.join("left_from_before.png"), "old").unwrap();
    copy_tree(last, &export.join(last.file_name().unwrap()));
    app.step().unwrap();
    clock.advance(3.0);
    assert_eq!(app.step().unwrap(), 1);
    app.wait_idle();
    let rec = records(&out).unwrap().into_values().next().unwrap();
    assert_eq!(rec.summary_status, "final", "{}", rec.message);
    let report = std::fs::read_to_string(dir.join("report.txt")).unwrap();
    assert!(!report.contains("PROVISIONAL"), "{report}");
    assert!(
        !dir.join("left_from_before.png").exists(),
        "a file of the old result folder survived"
    );
    let hidden: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".partial") || n.ends_with(".old"))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

/// Sets or clears the immutable attribute (the one thing root cannot write
/// through, so a "read-only OUT" can be made in a test run as root).
fn immutable(p: &Path, on: bool) -> bool {
    Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(p)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Mutable(PathBuf);
impl Drop for Mutable {
    fn drop(&mut self) {
        immutable(&self.0, false);
    }
}

/// Finding 6: a read-only OUT was recorded as the study's failure (quarantine,
/// never retried) and left a piece of a copy; now it is an environment fault,
/// retried with back-off, nothing recorded or quarantined until it works.
#[test]
fn a_read_only_out_is_retried_and_never_blamed_on_the_study() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient = phantom(&staging, 32, Format::Dicom);
    let (export, out) = (tmp.path().join("export"), tmp.path().join("out"));
    for d in series_dirs(&patient) {
        copy_tree(&d, &export.join(d.file_name().unwrap()));
    }
    std::fs::write(export.join("notes.txt"), "not an image\n").unwrap();
    let mut cfg = fast_config();
    // This checks the box's handling of a read-only OUT, and expects a `final`
    // result at the end: the paper's VOI method keeps the outcome independent of the
    // partial-volume correction (with GTM and the default 12.5 mm PSF, seed 32's left
    // kidney fit is bi-exponential with 74 % TIA SD, rightly `needs_review`; 44 %
    // without correction).
    cfg.dosimetry.pvc = organdose::dosimetry::pvc::PvcMethod::None;
    let clock = ManualClock::default();
    let p = Arc::new(StudyProcessor {
        cfg: cfg.clone(),
        masks: Masks::TruthRoot(staging.clone()),
        outbox: None,
    });
    let mut app = appliance(&export, &out, &clock, &cfg, p);
    if !immutable(&out, true) {
        eprintln!("skipped: chattr +i is not available here");
        return;
    }
    let _guard = Mutable(out.clone());
    app.step().unwrap();
    clock.advance(3.0);
    assert_eq!(app.step().unwrap(), 1);
    app.wait_idle();
    let snap = app.status.get();
    assert_eq!(snap.fault, "environment", "{snap:?}");
    assert_eq!(snap.state, "idle", "not stuck on busy");
    assert!(records(&out).unwrap().is_empty(), "no outcome recorded");
    assert!(!out.join("quarantine").exists());
    // Rounds during the back-off do not run the job again.
    for _ in 0..20 {
        assert_eq!(app.step().unwrap(), 0);
    }
    assert!(app.status.get().retrying >= 1);
    immutable(&out, false);
    clock.advance(6.0);
    assert_eq!(app.step().unwrap(), 1);
    app.wait_idle();
    let rec = records(&out).unwrap().into_values().next().unwrap();
    assert_eq!(
        (rec.outcome.as_str(), rec.summary_status.as_str()),
        ("done", "final"),
        "{}",
        rec.message
    );
    // The junk file's quarantine came once OUT could be written, whole.
    clock.advance(600.0);
    app.step().unwrap();
    let q = out.join("quarantine");
    for e in std::fs::read_dir(&q).unwrap() {
        let e = e.unwrap().path();
        assert!(
            e.join("reason.txt").is_file(),
            "{} has no reason",
            e.display()
        );
    }
    assert_eq!(app.status.get().fault, "");
}

/// Finding 7: a result with a mask that loses half a kidney at one time point
/// (activity falling and rising again) was reported as final.
#[test]
fn an_implausible_result_needs_review_and_is_never_final() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(tmp.path(), 33, Format::Dicom);
    let study = organdose::study::load_study(&patient).unwrap();
    let truth = patient.join("truth");
    let cfg = Config::default();
    let mut ldct = Vec::new();
    for k in 1..=study.timepoints.len() {
        let p = truth.join(format!("labels_ldct_tp{k}.nii.gz"));
        if k == 2 {
            // The right kidney's lower half is missing from this time point's mask.
            let mut l = read_nifti_labels(&p).unwrap();
            remove_lower_half(&mut l, 3);
            let q = tmp.path().join("ldct_tp2_cut.nii.gz");
            write_nifti(&l, &q, "cut").unwrap();
            ldct.push(q);
        } else {
            ldct.push(p);
        }
    }
    let source = MaskSource::Files {
        diag_ct: truth.join("labels_ct.nii.gz"),
        ldct,
    };
    let out = tmp.path().join("out");
    let s = run_study(&study, &source, &out, &cfg, "final", &|_, _| {}).unwrap();
    assert_eq!(s.status, "needs_review", "{:?}", s.warnings);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.starts_with("needs review: kidney_right")),
        "{:?}",
        s.warnings
    );
    let report = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(report.contains("NEEDS REVIEW"), "{report}");
    // The untouched masks pass the gates.
    let ok = run_study(
        &study,
        &MaskSource::truth_of(&patient),
        &tmp.path().join("ok"),
        &cfg,
        "final",
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(ok.status, "final", "{:?}", ok.warnings);
}

/// Issue 36, the gate: a diagnostic-CT mask given through `--labels` with
/// half the right kidney removed (its mass, so its dose, off by about 2x)
/// was reported `final`. The cycle's CTs disagree on that kidney's volume:
/// `needs_review`, naming the organ and the CT; the truth masks stay final.
#[test]
fn a_half_kidney_given_as_labels_needs_review_and_the_whole_one_is_final() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(tmp.path(), 34, Format::Dicom);
    let study = organdose::study::load_study(&patient).unwrap();
    let truth = patient.join("truth");
    let cfg = Config::default();
    let mut l = read_nifti_labels(&truth.join("labels_ct.nii.gz")).unwrap();
    remove_lower_half(&mut l, 3);
    let damaged = tmp.path().join("ct_half_kidney.nii.gz");
    write_nifti(&l, &damaged, "half kidney").unwrap();
    let ldct: Vec<PathBuf> = (1..=study.timepoints.len())
        .map(|k| truth.join(format!("labels_ldct_tp{k}.nii.gz")))
        .collect();
    let run = |diag: PathBuf, dir: &str| {
        run_study(
            &study,
            &MaskSource::Files {
                diag_ct: diag,
                ldct: ldct.clone(),
            },
            &tmp.path().join(dir),
            &cfg,
            "final",
            &|_, _| {},
        )
        .unwrap()
    };
    let s = run(damaged, "damaged");
    assert_eq!(s.status, "needs_review", "{:?}", s.warnings);
    assert!(
        s.warnings.iter().any(|w| w
            .starts_with("needs review: kidney_right mask on the diagnostic CT")
            && w.contains("off the median of the cycle's CTs")),
        "{:?}",
        s.warnings
    );
    let ok = run(truth.join("labels_ct.nii.gz"), "whole");
    assert_eq!(ok.status, "final", "{:?}", ok.warnings);
    assert!(ok.mask_confidence.is_empty(), "{:?}", ok.mask_confidence);
}

/// `organdose inspect DIR | head -1` panicked ("failed printing to stdout:
/// Broken pipe"): a reader that stops early is no fault.
#[test]
fn inspect_into_a_closed_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(tmp.path(), 35, Format::Dicom);
    let mut child = Command::new(BIN)
        .arg("inspect")
        .arg(&patient)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before inspect has written anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

/// Finding 9: `finalize` took the cycle id as a path.
#[test]
fn finalize_refuses_a_cycle_id_that_is_a_path() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("box/out");
    std::fs::create_dir_all(out.join("state")).unwrap();
    // A record outside the box's state folder, where `../../x` leads.
    let victim = tmp.path().join("box/x.json");
    let rec = r#"{"id":"x","patient_id":"P","injection":"","signature":"","outcome":"done","summary_status":"partial","timepoints":1,"message":""}"#;
    std::fs::write(&victim, rec).unwrap();
    let o = Command::new(BIN)
        .args(["finalize", "--out"])
        .arg(&out)
        .arg("../../x")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a cycle id"));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        rec,
        "file outside OUT changed"
    );
}

/// Accepts every job and does nothing.
struct Nothing;
impl Processor for Nothing {
    fn memory_need_mb(&self, _job: &Job) -> f64 {
        1.0
    }
    fn process(&self, job: &Job, _p: &dyn Fn(&str, f64)) -> organdose::error::Result<JobOutput> {
        Ok(JobOutput {
            summary_status: job.summary_status.clone(),
            message: String::new(),
        })
    }
}

/// Finding 9: `a/b.dcm` and `a_b.dcm` were quarantined into one folder.
#[test]
fn two_inputs_never_share_a_quarantine_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (export, out) = (tmp.path().join("export"), tmp.path().join("out"));
    std::fs::create_dir_all(export.join("a")).unwrap();
    std::fs::write(export.join("a/b.dcm"), "first junk\n").unwrap();
    std::fs::write(export.join("a_b.dcm"), "second junk\n").unwrap();
    let cfg = fast_config();
    let clock = ManualClock::default();
    let mut app = appliance(&export, &out, &clock, &cfg, Arc::new(Nothing));
    app.step().unwrap();
    clock.advance(3.0);
    app.step().unwrap();
    let q: Vec<PathBuf> = std::fs::read_dir(out.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(q.len(), 2, "{q:?}");
    let mut copied: Vec<String> = q
        .iter()
        .flat_map(|d| organdose::io::dicom::list_files(&d.join("files")).unwrap())
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    copied.sort();
    assert_eq!(copied, vec!["first junk\n", "second junk\n"]);
}

fn edit_study_json(dir: &Path, f: impl Fn(&mut serde_json::Value)) {
    let p = dir.join("study.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

/// Finding 9: zero, negative or 1e300 MBq and a `t_h` contradicting the
/// date-times were accepted; `+05:00` was refused.
#[test]
fn study_json_values_are_checked_and_zones_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(tmp.path(), 34, Format::Nifti);
    let original = std::fs::read(patient.join("study.json")).unwrap();
    let reference = organdose::study::load_study(&patient).unwrap();
    for bad in [0.0, -7400.0, 1e300] {
        edit_study_json(&patient, |v| v["injected_activity_mbq"] = bad.into());
        let e = organdose::study::load_study(&patient)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a plausible activity") && e.contains("study.json"),
            "{e}"
        );
        std::fs::write(patient.join("study.json"), &original).unwrap();
    }
    edit_study_json(&patient, |v| {
        let t = v["timepoints"][1]["t_h"].as_f64().unwrap();
        v["timepoints"][1]["t_h"] = (t + 5.0).into();
    });
    let e = organdose::study::load_study(&patient)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t_h"), "{e}");
    std::fs::write(patient.join("study.json"), &original).unwrap();
    // Every date-time with a +05:00 zone: read, and the same hours after injection.
    edit_study_json(&patient, |v| {
        let z = |s: &serde_json::Value| format!("{}+05:00", s.as_str().unwrap());
        v["injection_datetime"] = z(&v["injection_datetime"]).into();
        for tp in v["timepoints"].as_array_mut().unwrap() {
            tp["acquisition_datetime"] = z(&tp["acquisition_datetime"]).into();
        }
    });
    let zoned = organdose::study::load_study(&patient).unwrap();
    let t = |s: &organdose::study::Study| s.timepoints.iter().map(|t| t.t_h).collect::<Vec<_>>();
    assert_eq!(t(&zoned), t(&reference));
    // A zone on the injection only is refused (every difference would be off by it).
    std::fs::write(patient.join("study.json"), &original).unwrap();
    edit_study_json(&patient, |v| {
        v["injection_datetime"] =
            format!("{}+05:00", v["injection_datetime"].as_str().unwrap()).into();
    });
    let e = organdose::study::load_study(&patient)
        .unwrap_err()
        .to_string();
    assert!(e.contains("time zone"), "{e}");
}

/// Finding 9: with `--truth` the CT was never opened, so a CT with a missing
/// slice passed silently.
#[test]
fn truth_masks_still_read_the_ct() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(tmp.path(), 35, Format::Dicom);
    let ct = patient.join("002_CT_ABDOMEN_CONTRAST");
    let mut slices: Vec<PathBuf> = std::fs::read_dir(&ct)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    slices.sort();
    assert!(slices.len() >= 5);
    // A slice from the middle of the series (by position) is lost.
    let series = organdose::io::dicom::scan(&ct).unwrap().series.remove(0);
    let mut by_z: Vec<(f64, PathBuf)> = series
        .files
        .iter()
        .map(|h| (h.position.map(|p| p[2]).unwrap_or(0.0), h.path.clone()))
        .collect();
    by_z.sort_by(|a, b| a.0.total_cmp(&b.0));
    std::fs::remove_file(&by_z[by_z.len() / 2].1).unwrap();
    let o = Command::new(BIN)
        .arg("run")
        .arg(&patient)
        .arg("--truth")
        .arg("-o")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a CT with a missing slice passed");
    assert!(err.to_lowercase().contains("slice"), "{err}");
}

/// Finding 9: a symlinked series folder was reported as "not DICOM".
#[test]
fn symlinked_series_folders_are_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(&tmp.path().join("real"), 36, Format::Dicom);
    let linked = tmp.path().join("linked");
    std::fs::create_dir_all(&linked).unwrap();
    for d in series_dirs(&patient) {
        std::os::unix::fs::symlink(&d, linked.join(d.file_name().unwrap())).unwrap();
    }
    // A loop must not hang the walk.
    std::os::unix::fs::symlink(&linked, linked.join("loop")).unwrap();
    let a = organdose::study::load_study(&patient).unwrap();
    let b = organdose::study::load_study(&linked).unwrap();
    assert_eq!(a.timepoints.len(), b.timepoints.len());
    let scan = organdose::io::dicom::scan(&linked).unwrap();
    assert!(scan.rejected.is_empty(), "{:?}", scan.rejected);
}

/// Finding 9: "No such file or directory (os error 2): No such file or
/// directory (os error 2)".
#[test]
fn an_error_says_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["run", "/nonexistent/study", "--truth", "-o"])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(err.contains("/nonexistent/study"), "{err}");
}

/// Issue 41: an error keeps the library error under it as its `source`; the
/// message still quotes it (status lines and quarantine reasons show it), and
/// the command line says it once (`{:#}` said it twice).
#[test]
fn a_kept_source_is_said_once() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.nii.gz");
    std::fs::write(
        &bad,
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbagegarbage",
    )
    .unwrap();
    let o = Command::new(BIN)
        .arg("segment")
        .arg(&bad)
        .arg("-o")
        .arg(tmp.path().join("x.nii.gz"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("bad.nii.gz: not a readable NIfTI-1 file: gzip stream"),
        "{err}"
    );
    assert_eq!(err.matches("corrupt deflate stream").count(), 1, "{err}");
}

// Issue 42: the second probe of the box.

/// Issue 42, finding 6: `organdose status --out OUT | head -1` panicked on the
/// closed pipe (rc 101). The reader here is gone before the first line.
#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let snap = organdose::appliance::status::Snapshot {
        state: "idle".into(),
        ..Default::default()
    };
    std::fs::write(
        out.join("status.json"),
        serde_json::to_string(&snap).unwrap(),
    )
    .unwrap();
    for json in [false, true] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut c = Command::new(BIN);
        c.arg("status");
        if json {
            c.arg("--json");
        }
        let o = c
            .arg("--out")
            .arg(&out)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "json={json}: {err}");
        assert!(o.status.success(), "json={json}: {:?} {err}", o.status);
    }
}

/// Issue 42, findings 2 and 4: a SPECT 16 months after the injection gave
/// `final` with kidney doses of 256 and 429 Gy; `study.json` with 1e-300 MBq
/// gave `final`. Both are `needs_review` now, with the window or the range in
/// the reason; so is an organ dose above `dosimetry.max_organ_dose_gy`.
#[test]
fn impossible_times_activities_and_doses_need_review() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(tmp.path(), 33, Format::Nifti);
    let cfg = Config::default();
    // The truth masks by file (truth_of finds them by time, and these times are
    // nobody's).
    let truth = patient.join("truth");
    let source = MaskSource::Files {
        diag_ct: truth.join("labels_ct.nii.gz"),
        ldct: (1..=4)
            .map(|k| truth.join(format!("labels_ldct_tp{k}.nii.gz")))
            .collect(),
    };
    let run = |study: &organdose::study::Study, cfg: &Config, name: &str| {
        run_study(
            study,
            &source,
            &tmp.path().join(name),
            cfg,
            "final",
            &|_, _| {},
        )
        .unwrap()
    };
    let held = |s: &organdose::dosimetry::DoseSummary, what: &str| {
        assert_eq!(s.status, "needs_review", "{what}: {:?}", s.warnings);
        assert!(
            s.warnings
                .iter()
                .any(|w| w.starts_with("needs review:") && w.contains(what)),
            "{what}: {:?}",
            s.warnings
        );
    };
    // 1e-300 MBq in study.json (finding 4).
    edit_study_json(&patient, |v| v["injected_activity_mbq"] = 1e-300.into());
    let tiny = organdose::study::load_study(&patient).unwrap();
    held(
        &run(&tiny, &cfg, "tiny"),
        "injected activity 1.000e-300 MBq",
    );
    // report.txt says so, not "Injected: 0 MBq" with TIACs of 300 digits.
    let report = std::fs::read_to_string(tmp.path().join("tiny/report.txt")).unwrap();
    assert!(report.contains("Injected: 1.000e-300 MBq"), "{report}");
    let longest_number = report
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest_number < 20, "{report}");
    // Every time point 11,712 h later (finding 2): the window is in the reason.
    let mut late = tiny.clone();
    late.injection.activity_mbq = 7400.0;
    for tp in &mut late.timepoints {
        tp.t_h += 11_712.0;
    }
    held(
        &run(&late, &cfg, "late"),
        "outside the window of 0 to 504 h",
    );
    // An organ dose above the configured plausible one.
    let mut ok = late.clone();
    for (tp, orig) in ok.timepoints.iter_mut().zip(&tiny.timepoints) {
        tp.t_h = orig.t_h;
    }
    let mut strict = cfg.clone();
    strict.dosimetry.max_organ_dose_gy = 0.001;
    held(&run(&ok, &strict, "dose"), "dosimetry.max_organ_dose_gy");
    // The same study with its own numbers is final.
    let s = run(&ok, &cfg, "ok");
    assert_eq!(s.status, "final", "{:?}", s.warnings);
}

/// Issue 42, finding 10: `finalize` on a failed cycle printed "the next round
/// ... writes the final summary" and exited 0, but nothing ran. It refuses now,
/// says why, and leaves the record as it was.
#[test]
fn finalize_of_a_failed_cycle_refuses_and_promises_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("state")).unwrap();
    let rec = r#"{"id":"PH1_20260101T100000","patient_id":"PH1","injection":"","signature":"final#x","outcome":"failed","summary_status":"","timepoints":4,"message":"series 1.2.3: 1 slice(s) missing","fault":"input"}"#;
    let path = out.join("state/PH1_20260101T100000.json");
    std::fs::write(&path, rec).unwrap();
    let o = Command::new(BIN)
        .args(["finalize", "--out"])
        .arg(&out)
        .arg("PH1_20260101T100000")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(!o.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("next round"), "{stdout}");
    assert!(
        stderr.contains("failed") && stderr.contains("slice(s) missing"),
        "{stderr}"
    );
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_ne!(after["finalize_requested"], true, "{after}");
}

/// Issue 42, finding 9: paths in `study.json` were not confined to the study
/// folder: `../..` and absolute paths were opened (`/etc/passwd`,
/// `/proc/self/environ`).
#[test]
fn study_json_paths_stay_inside_the_study_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(tmp.path(), 34, Format::Nifti);
    let original = std::fs::read(patient.join("study.json")).unwrap();
    // A real file outside the study folder, reachable with '..'.
    std::fs::write(tmp.path().join("outside.nii.gz"), b"not yours").unwrap();
    let depth = patient.components().count();
    let up_to_root = "../".repeat(depth + 2);
    for bad in [
        "../outside.nii.gz".to_string(),
        format!("{up_to_root}etc/passwd"),
        "/etc/passwd".to_string(),
        "/proc/self/environ".to_string(),
        "sub/../../outside.nii.gz".to_string(),
    ] {
        for key in ["diagnostic_ct", "spect", "ldct"] {
            edit_study_json(&patient, |v| match key {
                "diagnostic_ct" => v["diagnostic_ct"] = bad.clone().into(),
                k => v["timepoints"][0][k] = bad.clone().into(),
            });
            let e = organdose::study::load_study(&patient)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("not a path inside the study folder") && e.contains("study.json"),
                "{key} = {bad}: {e}"
            );
            std::fs::write(patient.join("study.json"), &original).unwrap();
        }
    }
    organdose::study::load_study(&patient).unwrap();
}

/// Issue 42, finding 8: a SPECT whose Units (0054,1001) say BQML while its
/// Real World Value Mapping says counts was used as Bq/mL and reported final
/// without a word; the other way round the mapping won silently. Both need
/// review now, the reason naming both declarations and the file.
#[test]
fn conflicting_spect_unit_declarations_need_review() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(tmp.path(), 33, Format::Dicom);
    let study = organdose::study::load_study(&patient).unwrap();
    let cfg = Config::default();
    type Edit = fn(&mut organdose::io::dicom::DicomHeader);
    let cases: [(&str, Edit); 2] = [
        (
            "say BQML but the Real World Value Mapping's units say {counts}",
            |h| {
                if let Some(rw) = &mut h.real_world {
                    rw.2 = "{counts}".into();
                }
            },
        ),
        (
            "say CNTS but the Real World Value Mapping's units say Bq/ml",
            |h| {
                h.units = Some("CNTS".into());
            },
        ),
    ];
    for (k, (what, edit)) in cases.into_iter().enumerate() {
        let mut s = study.clone();
        let organdose::study::Source::Dicom(series) = &mut s.timepoints[1].spect else {
            panic!("a DICOM SPECT");
        };
        series.files.iter_mut().for_each(edit);
        let out = run_study(
            &s,
            &MaskSource::truth_of(&patient),
            &tmp.path().join(format!("out{k}")),
            &cfg,
            "final",
            &|_, _| {},
        )
        .unwrap();
        assert_eq!(out.status, "needs_review", "{what}: {:?}", out.warnings);
        assert!(
            out.warnings
                .iter()
                .any(|w| w.starts_with("needs review:") && w.contains(what) && w.contains(".dcm")),
            "{what}: {:?}",
            out.warnings
        );
    }
}

/// Issue 42, finding 11: "unable to remove watch descriptor from inotify" was
/// logged at INFO again and again (notify's own line when a watched folder is
/// removed, as a quarantine or a console's clean-up does); it says nothing a
/// physicist can act on.
#[test]
fn removed_folders_do_not_fill_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (export, out) = (tmp.path().join("export"), tmp.path().join("out"));
    std::fs::create_dir_all(&export).unwrap();
    let cfg = box_config(tmp.path(), "");
    let events = tmp.path().join("events.log");
    let mut child = Reaper(watch(&cfg, &export, &out, &events).spawn().unwrap());
    wait_for("the box", 30, || events.exists());
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..5 {
        let d = export.join(format!("a{i}"));
        std::fs::create_dir_all(d.join("b/c")).unwrap();
        std::fs::write(d.join("b/c/f"), b"x").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        std::fs::remove_dir_all(&d).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!err.contains("unable to remove watch descriptor"), "{err}");
}

/// Issue 42, finding 11: re-running `organdose run` into an `-o` that holds a
/// final result replaced it with a provisional one without a word. It is
/// refused now (the final result stays), unless --replace-final says so.
#[test]
fn run_does_not_replace_a_final_result_with_a_lesser_one_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let patient = phantom(tmp.path(), 34, Format::Nifti);
    let out = tmp.path().join("out");
    let run = |cfg: Option<&Path>, extra: &[&str]| {
        let mut c = Command::new(BIN);
        if let Some(cfg) = cfg {
            c.arg("--config").arg(cfg);
        }
        c.arg("run")
            .arg(&patient)
            .args(["--truth", "--no-dicom", "-o"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let status = || -> String {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("dose_summary.json")).unwrap())
                .unwrap();
        v["status"].as_str().unwrap().to_string()
    };
    let first = run(None, &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(status(), "final");
    let before = std::fs::read(out.join("dose_summary.json")).unwrap();
    // Five time points expected: the same four are provisional now.
    let cfg = tmp.path().join("five.toml");
    std::fs::write(&cfg, "[appliance]\nexpected_timepoints = 5\n").unwrap();
    let second = run(Some(&cfg), &[]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains("holds a final result") && err.contains("provisional"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("dose_summary.json")).unwrap(),
        before
    );
    let third = run(Some(&cfg), &["--replace-final"]);
    assert!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    assert_eq!(status(), "provisional");
}
