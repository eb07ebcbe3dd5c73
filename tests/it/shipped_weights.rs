//! The shipped model (`weights/organs`) against a phantom's truth: a full-size
//! patient never used in training (training seeds 1000.., 7000-7063, 9000-9079,
//! 20000-20009, 22000-22029), made with the default generator (real anatomy, scanner-like
//! CT appearance), axial slabs through the kidneys and through the liver of
//! its contrast CT and of a low-dose CT, segmented axial-only (the test
//! suite's time budget; `organdose eval` gives the three-plane numbers on
//! whole volumes). Measured 2026-12-02 with the weights of sha256 72326c0f...
//! (step 5; axial-only, this patient's slabs, CT / low-dose CT): left kidney
//! 0.918 / 0.844, right kidney 0.892 / 0.878, liver 0.939 / 0.929; step 4
//! (b690ef7f...): 0.891 / 0.868, 0.805 / 0.854, 0.927 / 0.916. The weights
//! before (ff48cc92..., trained on the geometric phantoms) scored 0.500 /
//! 0.000, 0.000 / 0.000 and 0.839 / 0.810 on the same slabs. Step 8
//! (2c7b16ba..., shipped 2026-12-03): 0.921 / 0.902, 0.884 / 0.903, 0.941 /
//! 0.932. The floors sit
//! 0.06-0.10 below the step-5 figures: a model that loses a kidney in part, or a
//! broken load or preprocessing (~0), fails.

use crate::common::data;

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

/// Axial-only driver options (the test suite's time budget).
fn axial_options(batch_size: usize, parallel_batches: usize) -> DriverOptions {
    DriverOptions {
        planes: Planes::Axial,
        batch_size,
        parallel_batches,
        max_fill_gap: 2,
        other_planes_margin_mm: None,
        slice_step_mm: 0.0,
        other_planes_slice_step_mm: 0.0,
        fusion: organdose::seg::fusion::FuseRule::Median,
        fusion_threshold: 0.5,
        fill_holes: false,
        refine_kidneys: false,
        canvas_fit: None,
    }
}

/// The axial slice range (k) around the centre of the organs `ls`, +- `half` slices.
fn organ_slab(labels: &Volume<u8>, ls: &[u8], half: usize) -> (usize, usize) {
    let [nx, ny, nz] = labels.geom.dims;
    let (mut sum, mut n) = (0usize, 0usize);
    for (v, l) in labels.data.iter().enumerate() {
        if ls.contains(l) {
            sum += v / (nx * ny);
            n += 1;
        }
    }
    assert!(n > 0, "phantom without organs {ls:?}");
    let c = sum / n;
    (c.saturating_sub(half), (c + half).min(nz))
}

/// Segments an axial slab (+- 25 mm) through the centre of `ls` and checks
/// the Dice of each organ of `ls` on it.
fn check(
    model: &MaskRcnn,
    ct: &Volume<f32>,
    labels: &Volume<u8>,
    ls: &[u8],
    what: &str,
    floor: f64,
    failures: &mut Vec<String>,
) {
    let half = (25.0 / ct.geom.spacing[2]).ceil() as usize;
    let (k0, k1) = organ_slab(labels, ls, half);
    let (ct, labels) = (slab(ct, k0, k1), slab(labels, k0, k1));
    let opts = axial_options(4, 2);
    let pred = driver::segment(model, &ct, &opts, &mut |_, _| {}).unwrap();
    for &l in ls {
        let m = organ_metrics(&pred, &labels, l);
        let dice = m.dice.unwrap_or(0.0);
        eprintln!(
            "{what}: {} Dice {dice:.3} (truth {:.1} mL, predicted {:.1} mL, slices {k0}..{k1})",
            organs::name(l).unwrap_or("?"),
            m.truth_ml,
            m.predicted_ml
        );
        if dice < floor {
            failures.push(format!(
                "{what}: {} Dice {dice:.3} below {floor}",
                organs::name(l).unwrap_or("?")
            ));
        }
    }
}

/// The shipped model and the unseen patient (seed 777) the tests use; `None`
/// (skipped, or failed under `ORGANDOSE_REQUIRE_DATA=1`) without the real anatomy.
fn shipped_model_and_patient() -> Option<(MaskRcnn, Patient)> {
    // The floors are for the real anatomy: without it the test is skipped rather
    // than scoring the geometric fallback anatomy against floors set for another one.
    data::anatomy()?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/organs");
    let model = MaskRcnn::load_dir(&dir, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("shipped weights must load from {}: {e}", dir.display()));
    let cfg = PhantomConfig {
        anatomy: Some(organdose::phantom::AnatomyKind::Real),
        ..PhantomConfig::default()
    };
    let patient = Patient::try_new(&cfg, 777, 0).unwrap_or_else(|e| {
        panic!("this test needs the real anatomy of ../shared/data (see its README): {e}")
    });
    Some((model, patient))
}

/// The unseen patient's contrast CT and labels, rendered once for the tests
/// here (the same seed each: rendering a full-size CT is seconds of CI).
fn diag_ct(p: &Patient) -> &'static (Volume<f32>, Volume<u8>) {
    static CT: std::sync::OnceLock<(Volume<f32>, Volume<u8>)> = std::sync::OnceLock::new();
    CT.get_or_init(|| {
        let (ct, labels, _) = p.diagnostic_ct();
        (ct, labels)
    })
}

/// The unseen patient's first low-dose CT and labels, rendered once.
fn ldct0(p: &Patient) -> &'static (Volume<f32>, Volume<u8>) {
    static CT: std::sync::OnceLock<(Volume<f32>, Volume<u8>)> = std::sync::OnceLock::new();
    CT.get_or_init(|| p.ldct(0))
}

#[test]
fn shipped_model_finds_liver_and_kidneys_on_an_unseen_phantom() {
    let Some((model, p)) = shipped_model_and_patient() else {
        return;
    };
    let kidneys = [organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT];
    let liver = [organs::LIVER];
    let mut f = Vec::new();
    let (ct, labels) = diag_ct(&p);
    let (ldct, ldct_labels) = ldct0(&p);
    for (ls, floor) in [(&kidneys[..], FLOOR_KIDNEY), (&liver[..], FLOOR_LIVER)] {
        check(&model, ct, labels, ls, "contrast CT", floor, &mut f);
        check(&model, ldct, ldct_labels, ls, "low-dose CT", floor, &mut f);
    }
    assert!(f.is_empty(), "{f:#?}");
}

/// Issue 39: the coronal canvas fitted to the body (`segment.canvas_max_px`,
/// the default) against the model's square canvas tiled, on coronal slices
/// through the kidneys of a low-dose CT whose body (arms beside it) is wider
/// than the square canvas: one image per slice instead of two, and the same
/// kidneys and liver (against each other and against the truth).
#[test]
fn a_fitted_canvas_gives_the_masks_of_the_tiled_square_one() {
    let Some((model, p)) = shipped_model_and_patient() else {
        return;
    };
    let (ct, labels) = ldct0(&p);
    // A slab 160 mm long around the kidneys: one square canvas along z.
    let kidneys = [organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT];
    let (k0, k1) = organ_slab(labels, &kidneys, (80.0 / ct.geom.spacing[2]) as usize);
    let (ct, labels) = (slab(ct, k0, k1), slab(labels, k0, k1));
    let [nx, ny, _] = ct.geom.dims;
    // Coronal slices (voxel rows j) +- 12 mm around the kidneys' centre.
    let (mut sum, mut n) = (0usize, 0usize);
    for (i, l) in labels.data.iter().enumerate() {
        if kidneys.contains(l) {
            sum += (i / nx) % ny;
            n += 1;
        }
    }
    assert!(n > 0, "no kidneys on the low-dose CT");
    let half = (12.0 / ct.geom.spacing[1]).ceil() as usize;
    let range = ((sum / n).saturating_sub(half), (sum / n + half).min(ny));
    let fit = organdose::config::Config::default()
        .segment
        .driver_options()
        .canvas_fit
        .expect("the default fits the canvas");
    let run = |canvas_fit| {
        let opts = DriverOptions {
            canvas_fit,
            ..axial_options(4, 2)
        };
        driver::plane_pass(&model, &ct, driver::Plane::Coronal, &opts, range).unwrap()
    };
    let ((tiled_s, tiled), (fitted_s, fitted)) = (run(None), run(Some(fit)));
    assert_eq!(
        tiled_s.tiles.len(),
        2,
        "the square canvas: two tiles across"
    );
    assert_eq!(
        fitted_s.tiles.len(),
        1,
        "fitted: one image of {} x {}",
        fitted_s.nx,
        fitted_s.ny
    );
    // Model classes on the passed slices against the truth's organs.
    let on = |v: usize| (range.0..range.1).contains(&((v / nx) % ny));
    let dice = |a: &dyn Fn(usize) -> bool, b: &dyn Fn(usize) -> bool| {
        let (mut both, mut na, mut nb) = (0usize, 0usize, 0usize);
        for v in (0..labels.data.len()).filter(|&v| on(v)) {
            let (x, y) = (a(v), b(v));
            both += usize::from(x && y);
            na += usize::from(x);
            nb += usize::from(y);
        }
        2.0 * both as f64 / (na + nb).max(1) as f64
    };
    let liver = [organs::LIVER];
    for (name, class, truth) in [("kidneys", 2u8, &kidneys[..]), ("liver", 1, &liver[..])] {
        let t = |v: usize| truth.contains(&labels.data[v]);
        let agree = dice(&|v| fitted[v] == class, &|v| tiled[v] == class);
        let dt = dice(&|v| tiled[v] == class, &t);
        let df = dice(&|v| fitted[v] == class, &t);
        eprintln!("{name}: fitted vs tiled Dice {agree:.3}; truth: tiled {dt:.3}, fitted {df:.3}");
        // One plane's raw pass (no fusion): 0.918 for the kidneys when written; a
        // canvas mapped back to the wrong pixels gives far less.
        assert!(agree >= 0.88, "{name}: fitted vs tiled Dice {agree:.3}");
        // Held-out phantoms, three planes: Dice means within 0.005, the worst
        // single CT and organ 0.021 lower (docs/log/speed.md).
        assert!(
            df >= dt - 0.02,
            "{name}: fitted {df:.3} against tiled {dt:.3}"
        );
    }
}

const FLOOR_KIDNEY: f64 = 0.74;
const FLOOR_LIVER: f64 = 0.86;

/// Batches in flight (`segment.parallel_batches`) must not change the masks:
/// each slice's result depends on that slice alone. The shipped model on a
/// kidney slab, one batch at a time against three at once (batches of 2, so
/// the groups split the slab differently).
#[test]
fn batches_in_flight_do_not_change_the_masks() {
    let Some((model, p)) = shipped_model_and_patient() else {
        return;
    };
    let (ct, labels) = diag_ct(&p);
    let half = (15.0 / ct.geom.spacing[2]).ceil() as usize;
    let (k0, k1) = organ_slab(labels, &[organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT], half);
    let ct = slab(ct, k0, k1);
    let run = |parallel_batches| {
        let opts = axial_options(2, parallel_batches);
        driver::segment(&model, &ct, &opts, &mut |_, _| {}).unwrap()
    };
    let one = run(1);
    let three = run(3);
    let found = one.data.iter().filter(|&&l| l != 0).count();
    assert!(
        found > 1000,
        "the model found only {found} organ voxels on the slab"
    );
    let differ = one
        .data
        .iter()
        .zip(&three.data)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differ, 0,
        "{differ} voxels differ between 1 and 3 batches in flight"
    );
}

/// A feet-first series (rows mirrored: voxel axis 0 runs towards the
/// patient's right) holds the same patient: the driver must segment it in
/// the network's voxel order (`seg::orient`) and give the same organs, voxel
/// for voxel. Before the reorientation the network saw a mirrored abdomen.
#[test]
fn a_mirrored_series_gives_the_same_masks() {
    let Some((model, p)) = shipped_model_and_patient() else {
        return;
    };
    let (ct, labels) = diag_ct(&p);
    let half = (10.0 / ct.geom.spacing[2]).ceil() as usize;
    let (k0, k1) = organ_slab(labels, &[organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT], half);
    let ct = slab(ct, k0, k1);
    let [nx, ny, nz] = ct.geom.dims;
    let mut g = ct.geom.clone();
    g.origin = ct.geom.index_to_patient([(nx - 1) as f64, 0.0, 0.0]);
    g.direction[0] = ct.geom.direction[0].map(|c| -c);
    let mut data = vec![0f32; ct.data.len()];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                data[(k * ny + j) * nx + (nx - 1 - i)] = ct.data[(k * ny + j) * nx + i];
            }
        }
    }
    let mirrored = Volume::new(g, data).unwrap();
    let opts = axial_options(4, 2);
    let a = driver::segment(&model, &ct, &opts, &mut |_, _| {}).unwrap();
    let b = driver::segment(&model, &mirrored, &opts, &mut |_, _| {}).unwrap();
    let mut differ = 0;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if a.data[(k * ny + j) * nx + i] != b.data[(k * ny + j) * nx + (nx - 1 - i)] {
                    differ += 1;
                }
            }
        }
    }
    let left = a.data.iter().filter(|&&l| l == organs::KIDNEY_LEFT).count();
    assert!(left > 1000, "left kidney of {left} voxels on the slab");
    assert_eq!(differ, 0, "{differ} voxels differ on the mirrored series");
}

/// A thin slab (20 slices 2 mm apart through the kidneys) must never come out
/// worse than its axial pass: the default `auto` fusion gives the coronal and
/// sagittal strips (40 mm tall) no weight and does not run them. Before it,
/// the default three-plane vote let those strips erase what the axial pass
/// found (a real 40 mm slab: liver 0.31, spleen 0.00 against 0.94 / 0.91).
#[test]
fn a_thin_slab_is_not_worse_than_its_axial_pass() {
    let Some((model, p)) = shipped_model_and_patient() else {
        return;
    };
    let (ct, labels) = diag_ct(&p);
    let (ct, labels) = organdose::seg::eval::cut_slab(ct, labels, 20, 2.0).unwrap();
    let opts = DriverOptions {
        planes: Planes::Auto,
        ..axial_options(4, 2)
    };
    let segs = driver::segment_modes(
        &model,
        &ct,
        &opts,
        &[Planes::Axial, Planes::Auto],
        &mut |_, _| {},
        &mut |_, _, _| {},
    )
    .unwrap();
    let (axial, auto) = (&segs[0], &segs[1]);
    assert_eq!(auto.planes_run, vec![driver::Plane::Axial]);
    assert!(
        auto.notes.iter().any(|n| n.contains("40 mm long")),
        "{:?}",
        auto.notes
    );
    for l in [
        organs::LIVER,
        organs::KIDNEY_LEFT,
        organs::KIDNEY_RIGHT,
        organs::SPLEEN,
    ] {
        let a = organ_metrics(&axial.labels, &labels, l);
        if a.truth_ml < 1.0 {
            continue;
        }
        let f = organ_metrics(&auto.labels, &labels, l);
        let (da, df) = (a.dice.unwrap_or(0.0), f.dice.unwrap_or(0.0));
        eprintln!(
            "slab {}: axial {da:.3}, auto {df:.3} (truth {:.1} mL)",
            organs::name(l).unwrap_or("?"),
            a.truth_ml
        );
        assert!(df >= da - 0.02, "{l}: auto {df:.3} < axial {da:.3} - 0.02");
        assert!(df > 0.5, "{l}: auto {df:.3} on the slab");
    }
}

/// A low-dose CT follows the diagnostic CT (`seg::follow`): the diagnostic
/// CT's masks, moved onto it, are taken when every organ agrees with its own
/// axial pass; when one does not, the full pass runs and says which organ.
/// Here the "low-dose CT" is a 40 mm slab of the same contrast CT and the
/// diagnostic masks are the truth, so the moved masks must be the slab's
/// truth, up to the move's error; with the left kidney erased from them, the slab's own kidney
/// disagrees (Dice 0) and the full pass runs.
#[test]
fn a_low_dose_ct_follows_the_diagnostic_masks_or_says_why_not() {
    let Some((model, p)) = shipped_model_and_patient() else {
        return;
    };
    let (ct, labels) = diag_ct(&p);
    let (slab_ct, slab_truth) = organdose::seg::eval::cut_slab(ct, labels, 20, 2.0).unwrap();
    let opts = DriverOptions {
        planes: Planes::Auto,
        ..axial_options(4, 2)
    };
    let f = organdose::seg::follow::segment_following(
        &model,
        &slab_ct,
        &opts,
        labels,
        &mut |_, _| {},
        &mut |_, _, _| {},
    )
    .unwrap();
    assert!(f.full_pass_because.is_none(), "{:?}", f.full_pass_because);
    assert_eq!(f.seg.planes_run, vec![driver::Plane::Axial]);
    let mut seen = 0;
    for l in [
        organs::LIVER,
        organs::KIDNEY_LEFT,
        organs::KIDNEY_RIGHT,
        organs::SPLEEN,
    ] {
        let m = organ_metrics(&f.seg.labels, &slab_truth, l);
        if m.truth_ml < 1.0 {
            continue;
        }
        seen += 1;
        let d = m.dice.unwrap_or(0.0);
        let moved = f
            .organs
            .iter()
            .find(|o| Some(o.organ.as_str()) == organs::name(l))
            .unwrap();
        eprintln!(
            "followed {}: Dice to truth {d:.3}; moved by {:?} mm, Dice to the axial pass {:.3}",
            moved.organ, moved.shift_mm, moved.dice
        );
        // The move is found against the slab's axial pass, so it is off by
        // that pass's own error (a voxel or so on a 40 mm slab): the moved
        // truth is the slab's truth shifted by at most 3 mm.
        let off = moved.shift_mm.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            off < 3.0 && d > 0.92,
            "{l}: moved truth (shifted {off:.1} mm) has Dice {d:.3} with the slab's truth"
        );
        assert!(moved.dice >= organdose::seg::follow::MIN_DICE);
    }
    assert!(seen >= 2, "the slab holds at least two organs");
    // The left kidney erased from the diagnostic masks: the slab's own pass
    // finds one where the moved masks have none.
    let mut no_left = labels.clone();
    for v in no_left.data.iter_mut() {
        if *v == organs::KIDNEY_LEFT {
            *v = 0;
        }
    }
    assert!(slab_truth.data.contains(&organs::KIDNEY_LEFT));
    let f = organdose::seg::follow::segment_following(
        &model,
        &slab_ct,
        &opts,
        &no_left,
        &mut |_, _| {},
        &mut |_, _, _| {},
    )
    .unwrap();
    let why = f.full_pass_because.expect("the full pass ran");
    assert!(
        why.starts_with("kidney_left:") && why.contains("Dice 0.00"),
        "{why}"
    );
    assert!(f.seg.notes.iter().any(|n| n.contains("segmented in full")));
    let m = organ_metrics(&f.seg.labels, &slab_truth, organs::KIDNEY_LEFT);
    assert!(m.dice.unwrap_or(0.0) > 0.7, "{m:?}");
}

/// The finer kidney stage (`seg::refine`, `[kidney_refine]` of the shipped
/// model folder) against the unseen phantom's truth: the kidney slab's axial
/// masks as the Mask R-CNN gives them and as the stage redraws them (what
/// `segment.kidney_refine` does to every mode), on the contrast CT and a
/// low-dose CT. The stage must not lose a kidney it is given (no kidney
/// more than 0.02 worse), and must bring them closer to the truth.
#[test]
fn the_kidney_stage_redraws_the_kidneys_closer_to_the_truth() {
    let Some((model, p)) = shipped_model_and_patient() else {
        return;
    };
    let r = model
        .refiner
        .as_ref()
        .expect("weights/organs has a [kidney_refine] stage");
    let kidneys = [organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT];
    let (ct, labels) = diag_ct(&p);
    let (ldct, ldct_labels) = ldct0(&p);
    let (mut before, mut after) = (0.0, 0.0);
    for (what, ct, labels) in [
        ("contrast CT", &ct, &labels),
        ("low-dose CT", &ldct, &ldct_labels),
    ] {
        let half = (25.0 / ct.geom.spacing[2]).ceil() as usize;
        let (k0, k1) = organ_slab(labels, &kidneys, half);
        let (ct, labels) = (slab(ct, k0, k1), slab(labels, k0, k1));
        let plain = driver::segment(&model, &ct, &axial_options(4, 2), &mut |_, _| {}).unwrap();
        let mut redrawn = plain.clone();
        let lines = r.refine(&ct, &mut redrawn.data, &kidneys).unwrap();
        assert_eq!(lines.len(), 2, "{what}: {lines:?}");
        assert!(lines.iter().all(|d| d.kept.is_none()), "{what}: {lines:?}");
        for l in kidneys {
            let a = organ_metrics(&plain, &labels, l).dice.unwrap_or(0.0);
            let b = organ_metrics(&redrawn, &labels, l).dice.unwrap_or(0.0);
            eprintln!(
                "{what}: {} Dice {a:.3} -> {b:.3} with the kidney stage",
                organs::name(l).unwrap_or("?")
            );
            assert!(b >= a - 0.02, "{what} {l}: {a:.3} -> {b:.3}");
            before += a;
            after += b;
        }
    }
    // Measured 2026-12-07 (stage sha256 3e871cef...): 0.921 -> 0.981, 0.884 ->
    // 0.984 on the contrast CT, 0.902 -> 0.933, 0.903 -> 0.923 on the low-dose
    // CT; asked: a mean gain of at least 0.01.
    assert!(
        after >= before + 4.0 * 0.01,
        "mean kidney Dice {:.4} -> {:.4}",
        before / 4.0,
        after / 4.0
    );
}

/// Issue 39: a low-dose CT's axial pass bounded by the diagnostic CT's organs
/// (`segment.low_dose_ct = "bounded"`, `seg::follow::segment_bounded`) against
/// the CT's own full pass, every plane of the default mode. The unseen
/// patient's first low-dose CT, the diagnostic CT's truth as its organs: the
/// two CTs lie hundreds of millimetres apart in their frames, so the bound is
/// only right if the registration is; the organs' shift between the two
/// truths checks it. The bounded pass must run fewer axial slices and give
/// masks as good as the full pass's: Dice to the truth within 0.005 of the
/// full pass's per organ, and the two masks the same organs (Dice >= 0.90
/// between them: one canvas tile centred on the organs instead of two over
/// the body is another input to the network, so the two differ by its own
/// noise; measured 2026-12-08 with the default 4.8 mm step of the coronal and
/// sagittal passes: liver 0.980, kidneys 0.966 / 0.948, spleen 0.979 between
/// them, and to the truth bounded 0.946 / 0.921 / 0.912 / 0.957 against full
/// 0.945 / 0.922 / 0.902 / 0.957; a half-missed organ is far below 0.90).
#[test]
fn a_bounded_low_dose_ct_gives_the_full_pass_masks() {
    let Some((model, p)) = shipped_model_and_patient() else {
        return;
    };
    let (ct, labels) = diag_ct(&p);
    let (ldct, truth) = ldct0(&p);
    let opts = DriverOptions {
        planes: Planes::Auto,
        other_planes_margin_mm: Some(20.0),
        slice_step_mm: 3.2,
        other_planes_slice_step_mm: 4.8,
        ..axial_options(4, 2)
    };
    let reference = organdose::seg::follow::Reference::new(ct, labels);
    let mut axial_bounded = 0;
    let b = organdose::seg::follow::segment_bounded(
        &model,
        ldct,
        &opts,
        &reference,
        &mut |_, _| {},
        &mut |pl, n, _| {
            if pl == driver::Plane::Axial {
                axial_bounded = n;
            }
        },
    )
    .unwrap();
    assert!(b.full_pass_because.is_none(), "{:?}", b.full_pass_because);
    let mut axial_full = 0;
    let full = driver::segment_detail(&model, ldct, &opts, &mut |_, _| {}, &mut |pl, n, _| {
        if pl == driver::Plane::Axial {
            axial_full = n;
        }
    })
    .unwrap();
    eprintln!("axial slices run: bounded {axial_bounded}, full {axial_full}");
    assert!(axial_bounded > 0 && axial_bounded < axial_full);
    // The registration against the organs' own shift between the truths.
    let centre = |v: &Volume<u8>, l: u8| {
        let (mut s, mut n) = ([0.0f64; 3], 0.0);
        for (i, &x) in v.data.iter().enumerate() {
            if x == l {
                let d = v.geom.dims;
                let q = v.geom.index_to_patient([
                    (i % d[0]) as f64,
                    ((i / d[0]) % d[1]) as f64,
                    (i / (d[0] * d[1])) as f64,
                ]);
                for a in 0..3 {
                    s[a] += q[a];
                }
                n += 1.0;
            }
        }
        s.map(|x| x / n)
    };
    let shift = b.shift.expect("a registration");
    let (c0, c1) = (centre(labels, organs::LIVER), centre(truth, organs::LIVER));
    let err: f64 = (0..3)
        .map(|a| (c1[a] - c0[a] - shift.mm[a]).powi(2))
        .sum::<f64>()
        .sqrt();
    eprintln!(
        "registration {:?} (ncc {:.3}); liver centre moved {:?}",
        shift.mm,
        shift.ncc,
        [c1[0] - c0[0], c1[1] - c0[1], c1[2] - c0[2]]
    );
    assert!(
        err < 12.0,
        "registration off the liver's move by {err:.1} mm"
    );
    let mut f = Vec::new();
    for l in [
        organs::LIVER,
        organs::KIDNEY_LEFT,
        organs::KIDNEY_RIGHT,
        organs::SPLEEN,
    ] {
        let name = organs::name(l).unwrap_or("?");
        let db = organ_metrics(&b.seg.labels, truth, l).dice.unwrap_or(0.0);
        let df = organ_metrics(&full.labels, truth, l).dice.unwrap_or(0.0);
        let agree = organ_metrics(&b.seg.labels, &full.labels, l)
            .dice
            .unwrap_or(0.0);
        eprintln!("{name}: bounded {db:.4}, full {df:.4} against the truth; {agree:.4} against each other");
        if agree < 0.90 || db < df - 0.005 {
            f.push(format!(
                "{name}: bounded {db:.4}, full {df:.4}, agree {agree:.4}"
            ));
        }
    }
    assert!(f.is_empty(), "{f:#?}");
}
