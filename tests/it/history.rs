//! The treatment history (issue 37, item 2): cycles of one patient counted
//! once each, cumulative doses and BEDs that are the sums of the cycles', and
//! `organdose history` agreeing with the summaries.

use crate::common::fixtures::{copy_tree, organdose, phantom, read};
use organdose::phantom::Format;
use organdose::time::DateTime;
use serde_json::Value;
use std::path::Path;

/// Moves every date-time of a NIfTI study by `days` (a later cycle of the
/// same patient: same anatomy, another injection).
fn shift_study(dir: &Path, days: f64) {
    let p = dir.join("study.json");
    let mut v: Value = serde_json::from_str(&read(&p)).unwrap();
    let shift = |s: &mut Value| {
        let t = DateTime::parse_iso(s.as_str().unwrap()).unwrap();
        *s = Value::String(t.plus_hours(days * 24.0).to_string());
    };
    shift(&mut v["injection_datetime"]);
    shift(&mut v["diagnostic_ct_datetime"]);
    for tp in v["timepoints"].as_array_mut().unwrap() {
        shift(&mut tp["acquisition_datetime"]);
    }
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&read(&dir.join("dose_summary.json"))).unwrap()
}

fn dose(study: &Path, out: &Path, history: Option<&Path>) {
    let mut c = organdose();
    c.arg("dose")
        .arg(study)
        .args(["--truth", "--no-dicom", "-o"])
        .arg(out);
    if let Some(h) = history {
        c.arg("--history").arg(h);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Equal JSON, numbers to 1e-12 relative (sums of the same terms read back
/// from text may differ in the last digit).
fn close(a: &Value, b: &Value) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-12 * x.abs().max(y.abs()), "{x} vs {y}");
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
            for (k, v) in x {
                close(v, &y[k]);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).for_each(|(a, b)| close(a, b));
        }
        _ => assert_eq!(a, b),
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn a_course_by_hand_adds_each_cycle_once() {
    let tmp = tempfile::tempdir().unwrap();
    let c1 = phantom(tmp.path(), 5, Format::Nifti);
    let c2 = tmp.path().join("cycle2");
    copy_tree(&c1, &c2);
    shift_study(&c2, 56.0);
    let res = tmp.path().join("results");
    dose(&c1, &res.join("c1"), None);
    dose(&c2, &res.join("c2"), Some(&res));
    // Computed again into the same folder: still two cycles.
    dose(&c2, &res.join("c2"), Some(&res));
    let s1 = summary(&res.join("c1"));
    let s2 = summary(&res.join("c2"));
    assert_eq!(s2["schema_version"], "1.7");
    assert_eq!(s2["patient"]["id"], s1["patient_id"]);
    let h1 = &s1["treatment_history"];
    let h2 = &s2["treatment_history"];
    assert_eq!(h1["cycles"].as_array().unwrap().len(), 1);
    assert_eq!(h2["cycles"].as_array().unwrap().len(), 2, "{h2:#}");
    assert!(
        h2["warnings"].as_array().unwrap().is_empty(),
        "{:#}",
        h2["warnings"]
    );
    for organ in ["kidney_left", "kidney_right", "liver"] {
        let d1 = f(&s1["organs"][organ]["mean_dose_gy"]);
        let d2 = f(&s2["organs"][organ]["mean_dose_gy"]);
        let cum = &h2["cumulative"][organ];
        assert!((f(&cum["dose_gy"]) - (d1 + d2)).abs() < 1e-9, "{organ}");
        let sd =
            f(&s1["organs"][organ]["mean_dose_gy_sd"]) + f(&s2["organs"][organ]["mean_dose_gy_sd"]);
        assert!((f(&cum["dose_gy_sd"]) - sd).abs() < 1e-9, "{organ}");
        if organ.starts_with("kidney") {
            let b =
                f(&s1["organs"][organ]["bed"]["bed_gy"]) + f(&s2["organs"][organ]["bed"]["bed_gy"]);
            assert!((f(&cum["bed_gy"]) - b).abs() < 1e-9, "{organ}");
            // The dose limit's allowance by hand: (23 - D) / mean dose per GBq.
            let a = h2["allowances"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["organ"] == organ && a["quantity"] == "absorbed dose")
                .unwrap();
            let per_gbq = (d1 + d2) / 2.0 / 7.4;
            assert!((f(&a["next_activity_gbq"]) - (23.0 - d1 - d2) / per_gbq).abs() < 1e-6);
        } else {
            assert!(cum.get("bed_gy").is_none(), "no BED configured for {organ}");
        }
    }
    // The report shows it; the plot is written.
    let txt = read(&res.join("c2/report.txt"));
    assert!(
        txt.contains("Treatment history of patient") && txt.contains("next cycle at most"),
        "{txt}"
    );
    assert!(res.join("c2/history.png").is_file());
    // `organdose history` reads the same from the results.
    let o = organdose()
        .args(["history", "--json", "--out"])
        .arg(&res)
        .arg(s1["patient_id"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let h: Value = serde_json::from_slice(&o.stdout).unwrap();
    close(&h["cumulative"], &h2["cumulative"]);
    close(&h["allowances"], &h2["allowances"]);
    // The first cycle's report counts only what came before it: itself.
    assert_eq!(
        h1["cycles"][0]["injection_datetime"],
        s1["injection_datetime"]
    );
    // A result that cannot be read is named in the history (a cycle in it
    // would be missing from the sums) and left as it was.
    let bad = "{\"patient_id\": \"PH5-001\", \"organs\": ";
    let broken = res.join("broken/dose_summary.json");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(&broken, bad).unwrap();
    dose(&c2, &res.join("c2"), Some(&res));
    let h = &summary(&res.join("c2"))["treatment_history"];
    assert_eq!(h["cycles"].as_array().unwrap().len(), 2);
    let w = h["warnings"].to_string();
    assert!(w.contains("not read") && w.contains("broken"), "{w}");
    assert_eq!(read(&broken), bad);
}

#[test]
fn history_of_an_unknown_patient_or_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let o = organdose()
        .args(["history", "--out"])
        .arg(tmp.path())
        .arg("NOBODY")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no result of patient 'NOBODY'"), "{e}");
    let o = organdose()
        .args(["history", "--out"])
        .arg(tmp.path().join("missing"))
        .arg("P")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such folder"));
}

/// `organdose phantom --small --cycles N`: the course's folder.
fn course(dir: &Path, seed: u64, cycles: usize) -> std::path::PathBuf {
    let o = organdose()
        .args(["phantom", "--small", "--seed", &seed.to_string()])
        .args(["--cycles", &cycles.to_string(), "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap()
}

fn history_json(out: &Path, id: &str) -> Value {
    let o = organdose()
        .args(["history", "--json", "--out"])
        .arg(out)
        .arg(id)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The target: a 4-cycle course pushed into `watch` out of order, with
/// a SIGKILL in the middle, gives the same history as the cycles run one by
/// one; the cumulative kidney BED is within 5 % of the phantom's truth; a
/// cycle computed again changes the cumulative figures once.
#[test]
fn a_course_through_watch_out_of_order_and_killed_gives_the_history_of_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient = course(&staging, 6, 4);
    let id = patient.file_name().unwrap().to_string_lossy().to_string();
    let cycle = |k: usize| patient.join(format!("cycle_{k}"));
    let export = tmp.path().join("export");
    let out = tmp.path().join("out");
    let put = |k: usize| {
        for d in crate::common::fixtures::series_dirs(&cycle(k)) {
            copy_tree(
                &d,
                &export.join(format!("c{k}_{}", d.file_name().unwrap().to_string_lossy())),
            );
        }
    };
    let cfg = crate::common::fixtures::box_config(tmp.path(), "");
    let events = tmp.path().join("events.log");
    let watch = |once: bool| {
        let mut c = organdose();
        c.arg("--config")
            .arg(&cfg)
            .args(["watch", "--no-dicom", "--in"])
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
    // The last and the second cycle first; killed as soon as a job runs.
    put(4);
    put(2);
    let mut child = watch(false).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&events)
        .unwrap_or_default()
        .contains(" start (")
    {
        assert!(t0.elapsed().as_secs() < 180, "no job started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Then the others; the box restarted finishes everything.
    put(3);
    put(1);
    let st = watch(true).status().unwrap();
    assert!(st.success());
    let file: Value = serde_json::from_str(&read(
        &out.join("patients")
            .join(format!("{id}_ORGANDOSE-PHANTOM.json")),
    ))
    .unwrap();
    assert_eq!(file["cycles"].as_array().unwrap().len(), 4, "{file:#}");
    assert!(
        file["warnings"].as_array().unwrap().is_empty(),
        "{:#}",
        file["warnings"]
    );
    assert_eq!(file["patient"]["issuer"], "ORGANDOSE-PHANTOM");
    // One by one, each with the earlier ones as its history.
    let by_hand = tmp.path().join("by_hand");
    for k in 1..=4 {
        let mut c = organdose();
        c.arg("dose")
            .arg(cycle(k))
            .args(["--truth", "--no-dicom", "-o"])
            .arg(by_hand.join(format!("c{k}")));
        if k > 1 {
            c.arg("--history").arg(&by_hand);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let reference = history_json(&by_hand, &id);
    close(&file["cumulative"], &reference["cumulative"]);
    close(&file["allowances"], &reference["allowances"]);
    let dates = |h: &Value| -> Vec<Value> {
        h["cycles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["injection_datetime"].clone())
            .collect()
    };
    assert_eq!(dates(&file), dates(&reference));
    // The fourth cycle's own summary counts all four; the box's status line
    // and `organdose history --out` agree with the file.
    close(&history_json(&out, &id)["cumulative"], &file["cumulative"]);
    // Against the phantom's own truth (its kinetics, independent of the
    // dosimetry): the cumulative kidney BED within 5 %.
    let truth: Value = serde_json::from_str(&read(&patient.join("course_truth.json"))).unwrap();
    for organ in ["kidney_left", "kidney_right"] {
        let want = f(&truth["cumulative"]["organs"][organ]["bed_gy"]);
        let got = f(&file["cumulative"][organ]["bed_gy"]);
        assert!(
            (got / want - 1.0).abs() < 0.05,
            "{organ}: BED {got} Gy, truth {want} Gy"
        );
        let want = f(&truth["cumulative"]["organs"][organ]["absorbed_dose_gy"]);
        let got = f(&file["cumulative"][organ]["dose_gy"]);
        assert!(
            (got / want - 1.0).abs() < 0.05,
            "{organ}: dose {got} Gy, truth {want} Gy"
        );
    }
    // Cycle 2 computed again differently (no partial-volume correction): the
    // cumulative figures change by exactly that cycle's change, once.
    let before = history_json(&by_hand, &id);
    let old2: Value = serde_json::from_str(&read(&by_hand.join("c2/dose_summary.json"))).unwrap();
    let o = organdose()
        .arg("dose")
        .arg(cycle(2))
        .args(["--truth", "--no-dicom", "--pvc", "none", "-o"])
        .arg(by_hand.join("c2"))
        .arg("--history")
        .arg(&by_hand)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let new2: Value = serde_json::from_str(&read(&by_hand.join("c2/dose_summary.json"))).unwrap();
    let after = history_json(&by_hand, &id);
    assert_eq!(after["cycles"].as_array().unwrap().len(), 4);
    let k = "kidney_left";
    let delta = f(&new2["organs"][k]["mean_dose_gy"]) - f(&old2["organs"][k]["mean_dose_gy"]);
    assert!(delta.abs() > 1e-3, "the recomputation changed the dose");
    let change = f(&after["cumulative"][k]["dose_gy"]) - f(&before["cumulative"][k]["dose_gy"]);
    assert!((change - delta).abs() < 1e-9, "{change} vs {delta}");
}
