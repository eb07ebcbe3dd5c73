//! `organdose eval` end to end on one small phantom with the fixture model
//! (random weights: the numbers are meaningless, the table, JSON and error
//! paths are what is checked).

use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{Format, Patient, PhantomConfig};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

fn model_dir(dir: &Path) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seg");
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(data.join("model.toml"), m.join("model.toml")).unwrap();
    let mut v = Vec::new();
    let f = std::fs::File::open(data.join("weights.safetensors.gz")).unwrap();
    flate2::read::GzDecoder::new(f).read_to_end(&mut v).unwrap();
    std::fs::write(m.join("weights.safetensors"), v).unwrap();
    m
}

#[test]
fn eval_writes_table_and_json_and_refuses_missing_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("patients");
    let p = Patient::new(&PhantomConfig::small(), 4242, 0);
    write_patient(
        &p,
        &data,
        &WriteOptions {
            format: Format::Nifti,
            preview: None,
        },
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_organdose");
    let missing = Command::new(bin)
        .args(["eval", "--data"])
        .arg(&data)
        .arg("--weights")
        .arg(tmp.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("no segmentation model at"), "{err}");

    let json = tmp.path().join("eval.json");
    let out = Command::new(bin)
        .args(["eval", "--planes", "axial", "--data"])
        .arg(&data)
        .arg("--weights")
        .arg(model_dir(tmp.path()))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("HD95 mm") && stdout.contains("kidney_left"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["planes"], "axial");
    let pat = &v["patients"][0];
    assert_eq!(pat["patient"], p.patient_id.as_str());
    // The fixture model's classes: liver and kidney (both sides).
    for organ in ["liver", "kidney_left", "kidney_right"] {
        let m = &pat["organs"][organ];
        assert!(m["truth_ml"].as_f64().unwrap() > 10.0, "{organ}: {m}");
        assert!(m["truth_slices"].as_u64().unwrap() > 0, "{organ}");
        assert!(v["summary"][organ]["patients"] == 1, "{organ}");
        // One scan: its Dice is the mean and the median.
        let sm = &v["summary"][organ];
        assert_eq!(sm["dice_median"], sm["dice_mean"], "{organ}: {sm}");
        assert_eq!(sm["dice_median"], m["dice"], "{organ}: {sm}");
    }
    assert!(pat["organs"].get("spleen").is_none());

    // The low-dose CTs of the time points, scored on their own truth.
    let json = tmp.path().join("eval_ldct.json");
    let out = Command::new(bin)
        .args(["eval", "--planes", "axial", "--scans", "ldct", "--data"])
        .arg(&data)
        .arg("--weights")
        .arg(tmp.path().join("model"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let ids: Vec<&str> = v["patients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["patient"].as_str())
        .collect();
    let want: Vec<String> = (1..=4).map(|k| format!("{}~tp{k}", p.patient_id)).collect();
    assert_eq!(ids, want);
    assert!(
        v["patients"][0]["organs"]["liver"]["truth_ml"]
            .as_f64()
            .unwrap()
            > 10.0
    );
}
