//! The training code's 2.5D preprocessing (train/organdose_train/data.py)
//! against the driver's (`seg::driver::window` + `slice_input`) on the same
//! slices. The fixture comes from `train/dump_slices.py` run on
//! `organdose phantom --out DIR --seed 7 --count 1 --small --format nifti`;
//! here the same patient is written by the same writer and read back.

use organdose::io::nifti::read_nifti;
use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{Format, Patient, PhantomConfig};
use organdose::seg::driver::{slice_input, window, Plane};
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
    let mut checked = 0;
    for (name, view) in st.tensors() {
        if name == "dims" {
            continue;
        }
        let (plane, t) = name.split_once('.').unwrap();
        let plane = match plane {
            "axial" => Plane::Axial,
            "coronal" => Plane::Coronal,
            _ => Plane::Sagittal,
        };
        let size = view.shape()[1];
        let py: Vec<f32> = view
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let rs = slice_input(&win, dims, plane, t.parse().unwrap(), size);
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
    assert_eq!(checked, 4);
}
