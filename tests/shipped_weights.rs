//! The shipped model (`weights/organs`) against a phantom's truth: a full-size
//! patient never used in training (training seeds 1000.., index 0-23), an axial
//! slab through the kidneys of its contrast CT and of a low-dose CT,
//! segmented axial-only (the test suite's time budget; `organdose eval` gives
//! the three-plane numbers on whole volumes). The floors sit below the eval's
//! means with room for a slab's smaller organs at its ends.

use organdose::organs;
use organdose::phantom::{Patient, PhantomConfig};
use organdose::seg::driver::{self, DriverOptions, Planes};
use organdose::seg::eval::organ_metrics;
use organdose::seg::MaskRcnn;
use organdose::volume::{Geometry, Volume};
use std::path::Path;

/// Axial slices `k0..k1` of `v` as a volume of their own (same in-plane grid).
fn slab<T: Copy>(v: &Volume<T>, k0: usize, k1: usize) -> Volume<T> {
    let [nx, ny, _] = v.geom.dims;
    let g = &v.geom;
    let origin = g.index_to_patient([0.0, 0.0, k0 as f64]);
    let geom = Geometry {
        dims: [nx, ny, k1 - k0],
        spacing: g.spacing,
        origin,
        direction: g.direction,
    };
    let data = v.data[k0 * nx * ny..k1 * nx * ny].to_vec();
    Volume::new(geom, data).unwrap()
}

/// The axial slice range (k) holding both kidneys' centres, +- `half` slices.
fn kidney_slab(labels: &Volume<u8>, half: usize) -> (usize, usize) {
    let [nx, ny, nz] = labels.geom.dims;
    let (mut sum, mut n) = (0usize, 0usize);
    for (v, &l) in labels.data.iter().enumerate() {
        if l == organs::KIDNEY_LEFT || l == organs::KIDNEY_RIGHT {
            sum += v / (nx * ny);
            n += 1;
        }
    }
    assert!(n > 0, "phantom without kidneys");
    let c = sum / n;
    (c.saturating_sub(half), (c + half).min(nz))
}

fn check(model: &MaskRcnn, ct: &Volume<f32>, labels: &Volume<u8>, what: &str, floor: f64) {
    let half = (25.0 / ct.geom.spacing[2]).ceil() as usize; // +- 25 mm
    let (k0, k1) = kidney_slab(labels, half);
    let (ct, labels) = (slab(ct, k0, k1), slab(labels, k0, k1));
    let opts = DriverOptions {
        planes: Planes::Axial,
        batch_size: 4,
        max_fill_gap: 2,
        other_planes_margin_mm: None,
    };
    let pred = driver::segment(model, &ct, &opts, &mut |_, _| {}).unwrap();
    for l in [organs::LIVER, organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT] {
        let m = organ_metrics(&pred, &labels, l);
        let dice = m.dice.unwrap_or(0.0);
        eprintln!(
            "{what}: {} Dice {dice:.3} (truth {:.1} mL, predicted {:.1} mL, slices {k0}..{k1})",
            organs::name(l).unwrap_or("?"),
            m.truth_ml,
            m.predicted_ml
        );
        assert!(
            dice >= floor,
            "{what}: {} Dice {dice:.3} below {floor}",
            organs::name(l).unwrap_or("?")
        );
    }
}

#[test]
fn shipped_model_finds_liver_and_kidneys_on_an_unseen_phantom() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/organs");
    let model = MaskRcnn::load_dir(&dir, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("shipped weights must load from {}: {e}", dir.display()));
    let p = Patient::new(&PhantomConfig::default(), 777, 0);
    let (ct, labels, _) = p.diagnostic_ct();
    check(&model, &ct, &labels, "contrast CT", FLOOR_CT);
    let (ldct, ldct_labels) = p.ldct(0);
    check(&model, &ldct, &ldct_labels, "low-dose CT", FLOOR_LDCT);
}

const FLOOR_CT: f64 = 0.8;
const FLOOR_LDCT: f64 = 0.8;
