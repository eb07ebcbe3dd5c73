//! Kidney dose error against phantom truth for 3 mm and 6 mm border extension,
//! on SPECTs with system blur and Poisson noise (and noiseless/unblurred as a
//! reference). Prints a table.
//!
//!     cargo bench --bench dose_margins            # 4 patients
//!     ORGANDOSE_BENCH_PATIENTS=10 cargo bench --bench dose_margins

use organdose::dosimetry::pipeline::{DoseInput, TimePointInput};
use organdose::dosimetry::{DosimetryConfig, Nuclide};
use organdose::organs;
use organdose::phantom::{kinetics, Patient, PhantomConfig};

fn main() {
    let n: u64 = std::env::var("ORGANDOSE_BENCH_PATIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let cfg = PhantomConfig::default();
    println!(
        "{:<10} {:<13} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "patient", "organ", "truth Gy", "ideal 3mm", "3 mm", "6 mm", "FWHM mm"
    );
    let mut errs: [Vec<f64>; 3] = [vec![], vec![], vec![]];
    for seed in 100..100 + n {
        let t0 = std::time::Instant::now();
        let p = Patient::new(&cfg, seed, 0);
        let diag = p.diagnostic_ct_labels();
        let ldct: Vec<_> = (0..p.times_h.len()).map(|tp| p.ldct(tp).1).collect();
        let ideal: Vec<_> = (0..p.times_h.len())
            .map(|tp| p.noiseless_spect(tp).0)
            .collect();
        let real: Vec<_> = (0..p.times_h.len()).map(|tp| p.spect(tp).0).collect();
        let input = |spects: &[organdose::Volume<f32>]| DoseInput {
            patient_id: p.patient_id.clone(),
            diag_ct_labels: diag.clone(),
            timepoints: (0..p.times_h.len())
                .map(|tp| TimePointInput {
                    t_h: p.times_h[tp],
                    spect_bq_per_ml: spects[tp].clone(),
                    labels: ldct[tp].clone(),
                })
                .collect(),
            nuclide: Nuclide::Lu177,
            injected_activity_mbq: p.injected_mbq,
        };
        let run = |spects: &[organdose::Volume<f32>], sigma: f64| {
            let d = DosimetryConfig {
                psf_sigma_mm: sigma,
                ..DosimetryConfig::default()
            };
            organdose::dosimetry::run(&input(spects), &d).expect("dosimetry")
        };
        let s_ideal = run(&ideal, 3.0);
        let s3 = run(&real, 3.0);
        let s6 = run(&real, 6.0);
        for label in [organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT] {
            let Some(name) = organs::name(label) else {
                continue;
            };
            let Some((_, kin)) = p.kinetics.iter().find(|(l, _)| *l == label) else {
                continue;
            };
            if !s3.organs.contains_key(name) {
                continue;
            }
            let count = diag.data.iter().filter(|&&v| v == label).count();
            let mass = count as f64
                * diag.geom.voxel_volume_ml()
                * organs::default_density_g_per_ml(label);
            let truth = kinetics::mean_dose_gy(kin.tia_mbq_h(p.injected_mbq), mass);
            let e = |s: &organdose::dosimetry::pipeline::DoseSummary| {
                100.0 * (s.organs[name].mean_dose_gy / truth - 1.0)
            };
            let row = [e(&s_ideal), e(&s3), e(&s6)];
            for (k, v) in row.iter().enumerate() {
                errs[k].push(*v);
            }
            println!(
                "{:<10} {:<13} {:>9.2} {:>+8.1}% {:>+8.1}% {:>+8.1}% {:>9.1}",
                p.patient_id, name, truth, row[0], row[1], row[2], p.spect_fwhm_mm
            );
        }
        eprintln!(
            "  ({} in {:.1} s)",
            p.patient_id,
            t0.elapsed().as_secs_f64()
        );
    }
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let rms = (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt();
        (m, rms)
    };
    println!();
    for (k, name) in ["ideal SPECT, 3 mm", "blur+noise, 3 mm", "blur+noise, 6 mm"]
        .iter()
        .enumerate()
    {
        let (m, rms) = stats(&errs[k]);
        println!(
            "{name:<20} mean error {m:+.1} %, RMS {rms:.1} % ({} kidneys)",
            errs[k].len()
        );
    }
}
