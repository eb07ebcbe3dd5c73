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

/// torchvision's integer paste box for a 28x28 mask (padded to 30): the
/// box scaled about its centre by 30/28, truncated toward zero.
fn paste_box(b: [f32; 4]) -> [i64; 4] {
    let scale = (30.0f64 / 28.0) as f32;
    let (wh, hh) = ((b[2] - b[0]) * 0.5 * scale, (b[3] - b[1]) * 0.5 * scale);
    let (xc, yc) = ((b[2] + b[0]) * 0.5, (b[3] + b[1]) * 0.5);
    [
        (xc - wh) as i64,
        (yc - hh) as i64,
        (xc + wh) as i64,
        (yc + hh) as i64,
    ]
}

fn load_gz(p: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load_buffer(&gunzip(p), &Device::Cpu).unwrap()
}

#[test]
fn mask_rcnn_matches_torchvision() {
    let dir = data();
    let ws = load_gz(&dir.join("weights.safetensors.gz"));
    check_fixture(&dir, ws, true);
}

/// The paper's 28 x 28 read as the box head's RoIAlign: same body and FPN,
/// a 28 x 28 x 32 -> 64 fc6.
#[test]
fn mask_rcnn_box_pool_28_matches_torchvision() {
    let mut ws = load_gz(&data().join("weights.safetensors.gz"));
    let dir = data().join("box28");
    ws.extend(load_gz(&dir.join("weights_override.safetensors.gz")));
    check_fixture(&dir, ws, false);
}

fn check_fixture(dir: &Path, ws: HashMap<String, Tensor>, features: bool) {
    let dev = Device::Cpu;
    let cfg = ModelConfig::load(&dir.join("model.toml")).unwrap();
    let ws = Weights::from_map(ws, "fixture weights").unwrap();
    let model = MaskRcnn::new(cfg, &ws, &dev).unwrap();
    let r = load_gz(&dir.join("reference.safetensors.gz"));
    let x = &r["input"];
    let d = x.dims4().unwrap();
    let out = model
        .forward(&vec1(x), [d.0, d.1, d.2, d.3], features)
        .unwrap();

    let no_feats = Vec::new();
    let feats = out.features.as_ref().unwrap_or(&no_feats);
    for (i, name) in ["0", "1", "2", "3", "pool"]
        .iter()
        .enumerate()
        .take(feats.len())
    {
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
        // IoU of the masks thresholded at 0.5, leaving out pixels that both
        // sides put within 1e-3 of the threshold: there float rounding alone
        // (boxes agree to ~1e-3 px) decides the side.
        let mut min_iou = 1f32;
        let mut raw_iou = 1f32;
        let mut max_pd = 0f32;
        let mut knife_edge = 0;
        for (k, m) in det.masks.iter().enumerate() {
            let w = &wm[k * hw..(k + 1) * hw];
            // The paste box is the detection box, expanded, truncated to
            // integers (torchvision's `.to(int64)`): boxes that agree to 1e-3 px
            // can still land on two sides of an integer there and paste the
            // same 28x28 mask one pixel wider. Such masks are counted, not compared.
            if paste_box(det.boxes[k]) != paste_box(wb[k]) {
                knife_edge += 1;
                continue;
            }
            let (mut inter, mut uni, mut ri, mut ru) = (0usize, 0usize, 0usize, 0usize);
            for (&a, &b) in m.iter().zip(w) {
                max_pd = max_pd.max((a - b).abs());
                let (pa, pb) = (a > 0.5, b > 0.5);
                ri += (pa && pb) as usize;
                ru += (pa || pb) as usize;
                if (a - 0.5).abs() < 1e-3 && (b - 0.5).abs() < 1e-3 {
                    continue;
                }
                inter += (pa && pb) as usize;
                uni += (pa || pb) as usize;
            }
            let iou = |i: usize, u: usize| if u == 0 { 1.0 } else { i as f32 / u as f32 };
            min_iou = min_iou.min(iou(inter, uni));
            raw_iou = raw_iou.min(iou(ri, ru));
        }
        eprintln!(
            "image {img}: {} detections, labels {gl:?}, max score diff {se:.2e}, \
             max box diff {be:.2e} px, min mask IoU {min_iou:.5} (all pixels {raw_iou:.5}), \
             max mask probability diff {max_pd:.2e}, \
             {knife_edge} on a truncation edge",
            wb.len()
        );
        assert!(se < 1e-3, "image {img}: scores differ by {se}");
        assert!(be < 0.5, "image {img}: boxes differ by {be} px");
        assert!(min_iou > 0.99, "image {img}: mask IoU {min_iou}");
        assert!(
            knife_edge <= 1,
            "image {img}: {knife_edge} paste boxes differ after truncation"
        );
        assert!(
            max_pd < 1e-2,
            "image {img}: mask probabilities differ by {max_pd}"
        );
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
