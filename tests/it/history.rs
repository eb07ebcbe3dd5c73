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
    assert_eq!(s2["schema_version"], "1.5");
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
