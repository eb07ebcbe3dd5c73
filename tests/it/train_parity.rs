//! The training code's 2.5D preprocessing (train/organdose_train/data.py)
//! against the driver's (`seg::driver::window` + `slice_input`) on the same
//! slices. The fixture comes from `train/dump_slices.py` run on
//! `organdose phantom --out DIR --seed 7 --count 1 --small --format nifti`;
//! here the same patient is written by the same writer and read back.

use organdose::io::nifti::read_nifti;
use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{Format, Patient, PhantomConfig};
use organdose::seg::driver::{slice_input, window, Plane};
use organdose::seg::slicing::{self, Canvas, PlaneSampler};
use safetensors::SafeTensors;
use std::path::Path;

#[test]
fn python_and_rust_slice_inputs_agree() {
    let fixture = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/train/slices.safetensors"),
    )
    .unwrap();
    let st = SafeTensors::deserialize(&fixture).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = Patient::new(&PhantomConfig::small(), 7, 0);
    let w = write_patient(
        &p,
        tmp.path(),
        &WriteOptions {
            format: Format::Nifti,
            preview: None,
        },
    )
    .unwrap();
    let ct = read_nifti(&w.patient_dir.join("ct.nii.gz")).unwrap();
    let dims = ct.geom.dims;
    let fd: Vec<i64> = st
        .tensor("dims")
        .unwrap()
        .data()
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(fd, dims.map(|d| d as i64).to_vec(), "phantom dims changed");
    let win = window(&ct.data, [-100.0, 200.0]);
    let meta = st_metadata(&fixture);
    let canvas = Canvas {
        size: 48,
        pixel_mm: meta["pixel_mm"].parse().unwrap(),
        neighbor_mm: meta["neighbor_mm"].parse().unwrap(),
    };
    let spacing = ct.geom.spacing.map(|s| s as f32);
    let body = slicing::body_box(&ct.data, dims);
    let f32s = |view: &safetensors::tensor::TensorView| -> Vec<f32> {
        view.data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let plane_of = |p: &str| match p {
        "axial" => Plane::Axial,
        "coronal" => Plane::Coronal,
        _ => Plane::Sagittal,
    };
    let mut checked = 0;
    let mut checked_mm = 0;
    for (name, view) in st.tensors() {
        if name == "dims" || name.starts_with("tile.") {
            continue;
        }
        let py = f32s(&view);
        let rs = if let Some(rest) = name.strip_prefix("mm.") {
            // Millimetre canvas: the driver's own tiling of the plane, and
            // its input on each tile.
            let parts: Vec<&str> = rest.split('.').collect();
            let plane = plane_of(parts[0]);
            let (t, i): (usize, usize) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
            let (_, ua, va) = plane.axes();
            let tiles = slicing::plane_tiles(
                &canvas,
                slicing::axis_range_mm(body.as_ref(), dims, spacing, ua),
                slicing::axis_range_mm(body.as_ref(), dims, spacing, va),
            );
            let want = f32s(&st.tensor(&format!("tile.{rest}")).unwrap());
            assert_eq!(
                [tiles[i].u0_mm, tiles[i].v0_mm],
                [want[0], want[1]],
                "{name}: tile position"
            );
            checked_mm += 1;
            PlaneSampler::new(plane, dims, spacing, canvas, tiles).input(&win, t, i)
        } else {
            let (plane, t) = name.split_once('.').unwrap();
            let size = view.shape()[1];
            slice_input(&win, dims, plane_of(plane), t.parse().unwrap(), size)
        };
        assert_eq!(py.len(), rs.len(), "{name}");
        let max = py
            .iter()
            .zip(&rs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max <= 1e-6, "{name}: max abs diff {max}");
        // Not a trivially flat slice.
        assert!(
            py.iter().any(|&v| v > 0.1) && py.iter().any(|&v| v < 0.9),
            "{name}"
        );
        println!("{name}: max abs diff {max:e}");
        checked += 1;
    }
    assert!(
        checked_mm >= 5,
        "{checked_mm} millimetre tiles: the small phantom needs several"
    );
    assert_eq!(checked - checked_mm, 4);
}

/// The safetensors header's `__metadata__` (the crate's API hides it).
fn st_metadata(bytes: &[u8]) -> std::collections::HashMap<String, String> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    serde_json::from_value(header["__metadata__"].clone()).unwrap()
}
