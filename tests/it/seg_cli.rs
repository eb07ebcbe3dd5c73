//! `organdose segment` end to end with the fixture model (random weights, so
//! the organs found are meaningless; the pipeline, formats and geometry are
//! what is checked), and the raw one-forward interface against torchvision.

use crate::common::fixtures::organdose;
use candle_core::{Device, Tensor};
use organdose::io::nifti;
use organdose::volume::{Geometry, Volume};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seg")
}

/// A model folder as shipped: model.toml + uncompressed weights.
fn model_dir(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(data().join("model.toml"), m.join("model.toml")).unwrap();
    let mut v = Vec::new();
    let f = std::fs::File::open(data().join("weights.safetensors.gz")).unwrap();
    flate2::read::GzDecoder::new(f).read_to_end(&mut v).unwrap();
    std::fs::write(m.join("weights.safetensors"), v).unwrap();
    m
}

#[test]
fn raw_forward_matches_torchvision_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_dir(tmp.path());
    let mut v = Vec::new();
    let f = std::fs::File::open(data().join("reference.safetensors.gz")).unwrap();
    flate2::read::GzDecoder::new(f).read_to_end(&mut v).unwrap();
    let r = candle_core::safetensors::load_buffer(&v, &Device::Cpu).unwrap();
    let inp = tmp.path().join("in.safetensors");
    let mut map = HashMap::new();
    map.insert("input".to_string(), r["input"].clone());
    candle_core::safetensors::save(&map, &inp).unwrap();
    let out = tmp.path().join("out.safetensors");
    let st = organdose()
        .args(["segment", "--raw-input"])
        .arg(&inp)
        .arg("--weights")
        .arg(&m)
        .arg("--raw-output")
        .arg(&out)
        .arg("--features")
        .status()
        .unwrap();
    assert!(st.success());
    let o = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    for key in ["boxes.0", "boxes.1", "features.0", "features.pool"] {
        let a: Vec<f32> = o[key].flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = r[key].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len(), "{key}");
        let e = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(e < 0.01, "{key}: {e}");
    }
    assert_eq!(o["masks.1"].dims(), r["masks.1"].dims());
    let l: Vec<i64> = o["labels.1"].to_vec1().unwrap();
    let lr: Vec<i64> = r["labels.1"].to_vec1().unwrap();
    assert_eq!(l, lr);
}

/// A small CT: air, a body ellipse of soft tissue, brighter blobs.
fn synthetic_ct() -> Volume<f32> {
    let (nx, ny, nz) = (40usize, 36usize, 8usize);
    let mut g = Geometry::new([nx, ny, nz], [4.0, 4.0, 5.0], [-80.0, -70.0, 0.0]);
    g.direction = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let mut v = Volume::filled(g, -1000.0f32);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let (x, y) = ((i as f32 - 20.0) / 18.0, (j as f32 - 18.0) / 14.0);
                if x * x + y * y < 1.0 {
                    let liver = (i as f32 - 12.0).powi(2) + (j as f32 - 16.0).powi(2) < 30.0;
                    let kidney = (i as f32 - 28.0).powi(2) + (j as f32 - 24.0).powi(2) < 10.0;
                    let hu = if liver {
                        150.0
                    } else if kidney {
                        180.0
                    } else {
                        20.0
                    };
                    v.set(i, j, k, hu + (k as f32));
                }
            }
        }
    }
    v
}

#[test]
fn segment_ct_end_to_end_and_missing_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_dir(tmp.path());
    let ct = synthetic_ct();
    let ct_path = tmp.path().join("ct.nii.gz");
    nifti::write_nifti(&ct, &ct_path, "synthetic CT").unwrap();
    for planes in ["axial", "all", "auto"] {
        let out = tmp.path().join(format!("labels_{planes}.nii.gz"));
        let report = tmp.path().join(format!("report_{planes}.json"));
        let st = organdose()
            .arg("segment")
            .arg(&ct_path)
            .arg("-o")
            .arg(&out)
            .args(["--planes", planes, "--weights"])
            .arg(&m)
            .arg("--report")
            .arg(&report)
            .status()
            .unwrap();
        assert!(st.success(), "{planes}");
        // Every organ the model segments has a confidence in [0, 1] and a flag;
        // one that was not found is flagged for review, saying so.
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(r["planes"], planes);
        let organs = r["organs"].as_object().unwrap();
        assert!(!organs.is_empty(), "{r}");
        for (name, o) in organs {
            let c = o["confidence"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&c), "{name}: {c}");
            let flag = o["flag"].as_str().unwrap();
            assert!(flag == "ok" || flag == "review", "{name}: {flag}");
            if o["volume_ml"].as_f64().unwrap() == 0.0 {
                assert_eq!(flag, "review", "{name}");
                assert_eq!(o["reasons"][0], "not found on this CT", "{name}");
            }
        }
        let l = nifti::read_nifti_labels(&out).unwrap();
        assert!(
            l.geom.same_grid(&ct.geom, 1e-4),
            "{planes}: output on the CT grid"
        );
        assert!(
            l.data.iter().all(|&v| v <= 4),
            "{planes}: only liver/kidney/spleen labels"
        );
    }
    // No model: a clear error, not a panic.
    let o = organdose()
        .arg("segment")
        .arg(&ct_path)
        .arg("-o")
        .arg(tmp.path().join("x.nii.gz"))
        .arg("--weights")
        .arg(tmp.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no segmentation model"), "{err}");
}

#[test]
fn raw_input_of_wrong_shape_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model_dir(tmp.path());
    let inp = tmp.path().join("in.safetensors");
    let mut map = HashMap::new();
    map.insert(
        "input".to_string(),
        Tensor::zeros((1, 2, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&map, &inp).unwrap();
    let o = organdose()
        .args(["segment", "--raw-input"])
        .arg(&inp)
        .arg("--weights")
        .arg(&m)
        .arg("--raw-output")
        .arg(tmp.path().join("o.safetensors"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("N x 3 x H x W"));
}

#[test]
fn segment_runs_on_a_phantom_dicom_ct() {
    use organdose::phantom::layout::{write_patient, WriteOptions};
    use organdose::phantom::{Format, Patient, PhantomConfig};
    let tmp = tempfile::tempdir().unwrap();
    let m = model_dir(tmp.path());
    let p = Patient::new(&PhantomConfig::small(), 31, 0);
    let w = write_patient(
        &p,
        &tmp.path().join("patients"),
        &WriteOptions {
            format: Format::Dicom,
            preview: None,
        },
    )
    .unwrap();
    let ct_dir = std::fs::read_dir(&w.patient_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("CT_ABDOMEN"))
        .expect("diagnostic CT folder");
    let out = tmp.path().join("labels.nii.gz");
    let st = organdose()
        .arg("segment")
        .arg(&ct_dir)
        .arg("-o")
        .arg(&out)
        .args(["--planes", "axial", "--weights"])
        .arg(&m)
        .status()
        .unwrap();
    assert!(st.success());
    let l = nifti::read_nifti_labels(&out).unwrap();
    assert!(
        l.geom.same_grid(&p.ct_geom, 1e-3),
        "labels on the DICOM CT grid"
    );
}

#[test]
fn weights_must_match_their_manifest() {
    use organdose::seg::MaskRcnn;
    let tmp = tempfile::tempdir().unwrap();
    let m = model_dir(tmp.path());
    // sha256 of the fixture weights, from Python's hashlib.
    let good = "93e029550a86be34ae3e510f0d025887f3bd5c68bce3b620730c1329979cf5ac";
    let manifest = |sha: &str| {
        std::fs::write(
            m.join("manifest.json"),
            format!(r#"{{"weights": "weights.safetensors", "sha256": "{sha}"}}"#),
        )
        .unwrap()
    };
    manifest(good);
    assert!(MaskRcnn::load_dir(&m, &Device::Cpu).is_ok());
    manifest(&good.replace('9', "8"));
    let err = MaskRcnn::load_dir(&m, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not match"), "{err}");
    // A damaged file (one byte flipped) against the right manifest.
    manifest(good);
    let w = m.join("weights.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&w, bytes).unwrap();
    let out = organdose()
        .args([
            "segment",
            "--raw-input",
            "x",
            "--raw-output",
            "y",
            "--weights",
        ])
        .arg(&m)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged or was replaced"), "{err}");
}
