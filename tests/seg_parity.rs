//! The Rust Mask R-CNN against torchvision on the same weights and inputs
//! (fixtures from train/make_fixture.py, committed under tests/data/seg/).

use candle_core::{Device, Tensor};
use organdose::seg::backbone::Weights;
use organdose::seg::roi_ops::{roi_align, roi_pool, RoiAlign};
use organdose::seg::{MaskRcnn, ModelConfig};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seg")
}

fn gunzip(p: &Path) -> Vec<u8> {
    let f = std::fs::File::open(p).unwrap();
    let mut v = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut v).unwrap();
    v
}

fn vec1(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn boxes(t: &Tensor) -> Vec<[f32; 4]> {
    vec1(t)
        .chunks(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect()
}

fn max_box_diff(a: &[[f32; 4]], b: &[[f32; 4]]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| (0..4).map(move |i| (x[i] - y[i]).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn mask_rcnn_matches_torchvision() {
    let dev = Device::Cpu;
    let dir = data();
    let cfg = ModelConfig::load(&dir.join("model.toml")).unwrap();
    let wbytes = gunzip(&dir.join("weights.safetensors.gz"));
    let ws = Weights::from_buffer(&wbytes, &dev, "fixture weights").unwrap();
    let model = MaskRcnn::new(cfg, &ws, &dev).unwrap();
    let rbytes = gunzip(&dir.join("reference.safetensors.gz"));
    let r: HashMap<String, Tensor> = candle_core::safetensors::load_buffer(&rbytes, &dev).unwrap();
    let x = &r["input"];
    let d = x.dims4().unwrap();
    let out = model.forward(&vec1(x), [d.0, d.1, d.2, d.3], true).unwrap();

    let feats = out.features.as_ref().unwrap();
    for (i, name) in ["0", "1", "2", "3", "pool"].iter().enumerate() {
        let want = &r[&format!("features.{name}")];
        assert_eq!(feats[i].dims(), want.dims(), "features.{name} shape");
        let (a, b) = (vec1(&feats[i]), vec1(want));
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()))
            / scale;
        eprintln!("features.{name}: max |diff| / max |ref| = {err:.2e}");
        assert!(err < 1e-4, "features.{name}: relative error {err}");
    }
    for img in 0..d.0 {
        let want = boxes(&r[&format!("proposals.{img}")]);
        let got = &out.proposals[img];
        assert_eq!(got.len(), want.len(), "image {img}: proposal count");
        let e = max_box_diff(got, &want);
        eprintln!(
            "image {img}: {} proposals, max coordinate diff {e:.2e} px",
            got.len()
        );
        assert!(e < 0.5, "image {img}: proposals differ by {e} px");

        let det = &out.detections[img];
        let wb = boxes(&r[&format!("boxes.{img}")]);
        let wl: Vec<i64> = r[&format!("labels.{img}")].to_vec1().unwrap();
        let wsc = vec1(&r[&format!("scores.{img}")]);
        assert!(!wb.is_empty(), "fixture must have detections");
        assert_eq!(det.boxes.len(), wb.len(), "image {img}: detection count");
        let gl: Vec<i64> = det.labels.iter().map(|&l| l as i64).collect();
        assert_eq!(gl, wl, "image {img}: labels");
        let se = det
            .scores
            .iter()
            .zip(&wsc)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let be = max_box_diff(&det.boxes, &wb);
        let wm = vec1(&r[&format!("masks.{img}")]);
        let hw = d.2 * d.3;
        let mut min_iou = 1f32;
        for (k, m) in det.masks.iter().enumerate() {
            let w = &wm[k * hw..(k + 1) * hw];
            let inter = m
                .iter()
                .zip(w)
                .filter(|(a, b)| **a > 0.5 && **b > 0.5)
                .count();
            let uni = m
                .iter()
                .zip(w)
                .filter(|(a, b)| **a > 0.5 || **b > 0.5)
                .count();
            let iou = if uni == 0 {
                1.0
            } else {
                inter as f32 / uni as f32
            };
            min_iou = min_iou.min(iou);
        }
        eprintln!(
            "image {img}: {} detections, labels {gl:?}, max score diff {se:.2e}, \
             max box diff {be:.2e} px, min mask IoU {min_iou:.5}",
            wb.len()
        );
        assert!(se < 1e-3, "image {img}: scores differ by {se}");
        assert!(be < 0.5, "image {img}: boxes differ by {be} px");
        assert!(min_iou > 0.99, "image {img}: mask IoU {min_iou}");
    }
}

#[test]
fn roi_ops_match_torchvision() {
    let dev = Device::Cpu;
    let r = candle_core::safetensors::load(data().join("roi_ops.safetensors"), &dev).unwrap();
    let (f, rois) = (&r["features"], &r["rois"]);
    let check = |name: &str, got: Tensor| {
        let (a, b) = (vec1(&got), vec1(&r[name]));
        assert_eq!(a.len(), b.len(), "{name}: size");
        let e = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        eprintln!("{name}: max |diff| {e:.2e}");
        assert!(e < 1e-5, "{name}: max diff {e}");
    };
    for sr in [2, 0] {
        for al in [false, true] {
            let op = RoiAlign {
                pooled_h: 7,
                pooled_w: 7,
                spatial_scale: 0.5,
                sampling_ratio: sr,
                aligned: al,
            };
            let got = f.apply_op2_no_bwd(rois, &op).unwrap();
            check(&format!("align_s{sr}_{}", al as u8), got);
        }
    }
    check("align_s2_0", roi_align(f, rois, 7, 0.5, 2).unwrap());
    check("pool28", roi_pool(f, rois, 28, 0.5).unwrap());
    check("pool7_s1", roi_pool(f, rois, 7, 1.0).unwrap());
}
