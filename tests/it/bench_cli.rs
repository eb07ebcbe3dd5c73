//! `organdose bench`: the CPU variant runs in the default build and prints its
//! table; `--device cuda` without the feature stops with "built without CUDA".

use crate::common::fixtures::organdose;

#[test]
fn cpu_bench_prints_every_stage_and_peak_rss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = organdose()
        .args(["bench", "--device", "cpu", "--small", "--seed", "3"])
        .arg("--weights")
        .arg(dir.path().join("no-model"))
        .arg("--keep")
        .arg(dir.path().join("study"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run organdose");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("segmentation: skipped: no model at"),
        "{text}"
    );
    // The stages of pipeline::run_study, as it reports them (the bench observes
    // the production path; it has no copy of its own).
    for row in [
        "load_study",
        "masks",
        "read SPECT",
        "dosimetry",
        "report",
        "study total",
        "peak resident set",
    ] {
        assert!(text.contains(row), "missing {row:?} in\n{text}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    let total = v["study_total_s"].as_f64().expect("total");
    let counted: f64 = v["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter(|s| s["counted"].as_bool() == Some(true))
        .map(|s| s["seconds"].as_f64().unwrap_or(f64::NAN))
        .sum();
    assert!((total - counted).abs() < 1e-9 && total > 0.0, "{v}");
    assert!(v["peak_memory_mb"].as_f64().is_some_and(|m| m > 1.0), "{v}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_bench_without_the_feature_is_a_clear_error() {
    let out = organdose()
        .args(["bench", "--device", "cuda"])
        .output()
        .expect("run organdose");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without CUDA"), "{err}");
}
