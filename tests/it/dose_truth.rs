//! Dosimetry against the phantom's exact truth: mean kidney dose from truth labels
//! and the noiseless, unblurred SPECT must match the analytic truth within 2 %.

use organdose::dosimetry::pipeline::{DoseInput, TimePointInput};
use organdose::dosimetry::{DosimetryConfig, Nuclide};
use organdose::organs;
use organdose::phantom::{kinetics, Patient, PhantomConfig};

/// Truth mean dose (Gy) per organ, as truth.json computes it: analytic TIA of the
/// phantom's kinetics over the diagnostic-CT label mass.
fn truth_dose(p: &Patient, diag: &organdose::Volume<u8>, label: u8) -> f64 {
    let (_, kin) = p.kinetics.iter().find(|(l, _)| *l == label).unwrap();
    let n = diag.data.iter().filter(|&&v| v == label).count();
    let mass_g = n as f64 * diag.geom.voxel_volume_ml() * organs::default_density_g_per_ml(label);
    kinetics::mean_dose_gy(kin.tia_mbq_h(p.injected_mbq), mass_g)
}

fn input(p: &Patient, diag: &organdose::Volume<u8>) -> DoseInput {
    DoseInput {
        patient_id: p.patient_id.clone(),
        diag_ct_labels: diag.clone(),
        timepoints: (0..p.times_h.len())
            .map(|tp| {
                let (spect, _, _) = p.noiseless_spect(tp);
                let ldct_labels = p.ldct_labels(tp);
                TimePointInput {
                    t_h: p.times_h[tp],
                    spect_bq_per_ml: spect,
                    labels: ldct_labels,
                }
            })
            .collect(),
        nuclide: Nuclide::Lu177,
        injected_activity_mbq: p.injected_mbq,
    }
}

#[test]
fn kidney_dose_from_truth_labels_and_noiseless_spect_within_2_percent() {
    // Fine enough that label partial volumes stay small. The default border extension
    // (Gaussian sigma 3 mm) also collects the SPECT voxels that the CT mask covers
    // only in part; without it the activity comes out about 5 % low.
    let cfg = PhantomConfig {
        ct_matrix: 256,
        ct_pixel_mm: (1.6, 1.6),
        ct_slice_mm: vec![3.0],
        ldct_matrix: 256,
        ldct_pixel_mm: (1.6, 1.6),
        ldct_slice_mm: vec![3.0],
        spect_grids: vec![(128, 4.42)],
        // The geometric anatomy keeps kidneys apart from liver and spleen: this
        // checks the pipeline itself. Real anatomy (kidneys touching liver or
        // spleen) adds spill-in through the border extension: -0.5 to +2.3 %
        // on seeds 11-14; tests/it/real_anatomy.rs checks that within 3 %.
        anatomy: Some(organdose::phantom::AnatomyKind::Geometric),
        ..PhantomConfig::default()
    };
    // Unblurred SPECT: nothing spills, the paper's VOI method is what is tested
    // (tests/it/pvc_truth.rs checks the correction on blurred SPECTs).
    let dcfg = DosimetryConfig {
        pvc: organdose::dosimetry::pvc::PvcMethod::None,
        ..DosimetryConfig::default()
    };
    assert_eq!(dcfg.psf_sigma_mm, 3.0);
    for seed in [11u64, 12] {
        let p = Patient::new(&cfg, seed, 0);
        let diag = p.diagnostic_ct_labels();
        let s = organdose::dosimetry::run(&input(&p, &diag), &dcfg).unwrap();
        for (label, name) in [
            (organs::KIDNEY_LEFT, "kidney_left"),
            (organs::KIDNEY_RIGHT, "kidney_right"),
        ] {
            if p.missing_organs.contains(&label) {
                continue;
            }
            let want = truth_dose(&p, &diag, label);
            let got = s.organs[name].mean_dose_gy;
            let err = (got - want) / want;
            eprintln!(
                "seed {seed} {name}: {got:.3} Gy vs truth {want:.3} Gy ({:+.2} %)",
                100.0 * err
            );
            assert!(err.abs() < 0.02, "seed {seed} {name}: {got} vs {want}");
        }
    }
}
