//! Dosimetry integration tests on synthetic volumes with closed-form answers.

use organdose::dosimetry::pvc::PvcMethod;
use organdose::dosimetry::{self, DoseInput, DosimetryConfig, Nuclide, TimePointInput};
use organdose::{Geometry, Volume};

/// The paper's VOI method: these SPECTs are unblurred, nothing spills, there is no
/// partial volume to correct.
fn paper_method() -> DosimetryConfig {
    DosimetryConfig {
        pvc: PvcMethod::None,
        ..DosimetryConfig::default()
    }
}

const LN2: f64 = std::f64::consts::LN_2;

/// Labels: a sphere of `label` (radius `r_mm`, centred) on `g`.
fn sphere(g: &Geometry, r_mm: f64, label: u8) -> Volume<u8> {
    let mut v = Volume::filled(g.clone(), 0u8);
    let c = [
        (g.dims[0] as f64 - 1.0) / 2.0,
        (g.dims[1] as f64 - 1.0) / 2.0,
        (g.dims[2] as f64 - 1.0) / 2.0,
    ];
    for k in 0..g.dims[2] {
        for j in 0..g.dims[1] {
            for i in 0..g.dims[0] {
                let d2 = ((i as f64 - c[0]) * g.spacing[0]).powi(2)
                    + ((j as f64 - c[1]) * g.spacing[1]).powi(2)
                    + ((k as f64 - c[2]) * g.spacing[2]).powi(2);
                if d2 <= r_mm * r_mm {
                    v.set(i, j, k, label);
                }
            }
        }
    }
    v
}

/// SPECT (Bq/mL) holding `activity_mbq` spread uniformly over the voxels of `mask`.
fn uniform_spect(mask: &Volume<u8>, activity_mbq: f64) -> Volume<f32> {
    let n = mask.data.iter().filter(|&&v| v > 0).count() as f64;
    let c = activity_mbq * 1e6 / (n * mask.geom.voxel_volume_ml());
    mask.map(|v| if v > 0 { c as f32 } else { 0.0 })
}

#[test]
fn uniform_sphere_mono_exponential_closed_form_tia_and_dose() {
    let g = Geometry::new([32, 32, 32], [4.0, 4.0, 4.0], [-62.0, -62.0, -62.0]);
    let mask = sphere(&g, 30.0, 2); // kidney_left
    let n_vox = mask.data.iter().filter(|&&v| v == 2).count() as f64;
    let nuc = Nuclide::Lu177;
    let lp = nuc.lambda_per_h();
    let (a0, b) = (40.0, 0.015); // MBq, biological rate 1/h
    let times = [0.5, 6.0, 24.0, 72.0];
    let timepoints = times
        .iter()
        .map(|&t| TimePointInput {
            t_h: t,
            spect_bq_per_ml: uniform_spect(&mask, a0 * (-(b + lp) * t).exp()),
            labels: mask.clone(),
        })
        .collect();
    let input = DoseInput {
        patient_id: "sphere".into(),
        diag_ct_labels: mask.clone(),
        timepoints,
        nuclide: nuc,
        injected_activity_mbq: 7400.0,
    };
    // The fitted model's closed form first; the default hybrid method below.
    let fit_cfg = DosimetryConfig {
        tia_method: dosimetry::kinetics::TiaMethod::Fit,
        ..paper_method()
    };
    let s = dosimetry::run(&input, &fit_cfg).unwrap();
    let o = &s.organs["kidney_left"];
    let mass_g = n_vox * 0.064 * 1.06;
    assert!((o.mass_g - mass_g).abs() < 1e-9 * mass_g);
    let tia = a0 / (b + lp);
    assert!(
        (o.tia_mbq_h - tia).abs() < 1e-5 * tia,
        "{} vs {tia}",
        o.tia_mbq_h
    );
    assert_eq!(
        o.fit.as_ref().unwrap().model,
        dosimetry::kinetics::Model::MonoExponential
    );
    let dose = tia * 1e6 * 3600.0 * 147.9 * 1.602_176_634e-16 / (mass_g / 1000.0);
    assert!((o.mean_dose_gy - dose).abs() < 1e-5 * dose);
    assert!(o.mean_dose_gy_sd > 0.0 && o.mean_dose_gy_sd < 0.1 * dose);
    assert!((o.tiac_h.unwrap() - tia / 7400.0).abs() < 1e-6);
    // BED of a mono-exponential dose rate (Dale 1985): D + D^2 l / ((l + mu) a/b),
    // l = b + lp, kidney a/b 2.6 Gy, T_rep 2.8 h (the defaults).
    let (l, mu) = (b + lp, LN2 / 2.8);
    let bed_closed = |d: f64| d + d * d * l / ((l + mu) * 2.6);
    let bed = o.bed.as_ref().expect("kidney BED");
    assert!(
        (bed.bed_gy - bed_closed(dose)).abs() < 1e-5 * bed_closed(dose),
        "{} vs {}",
        bed.bed_gy,
        bed_closed(dose)
    );
    assert!((bed.eqd2_gy - bed.bed_gy / (1.0 + 2.0 / 2.6)).abs() < 1e-9);
    assert!(bed.bed_gy_sd > o.mean_dose_gy_sd);
    // Uniform activity, delta kernel: a flat DVH at the mean dose.
    let d = o.dvh.as_ref().unwrap();
    for x in [d.d2, d.d30, d.d50, d.d70, d.d98, d.mean, d.max] {
        assert!((x - dose).abs() < 1e-4 * dose, "{x} vs {dose}");
    }
    let curve = o.dvh_curve.as_ref().unwrap();
    assert!(curve
        .volume_fraction
        .iter()
        .all(|&f| (f - 1.0).abs() < 1e-9));
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);

    // All outputs, atomically written, JSON with the documented schema.
    let dir = tempfile::tempdir().unwrap();
    organdose::report::write_all(dir.path(), &s).unwrap();
    for f in [
        "dose_summary.json",
        "report.txt",
        "dvh.csv",
        "dvh.png",
        "tac.png",
        "dose_map.nii.gz",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let text = std::fs::read_to_string(dir.path().join("dose_summary.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["schema_version"], "1.7");
    // These outputs are the fit run's: the summary says so.
    assert_eq!(j["settings"]["tia_method"], "fit");
    let k = &j["organs"]["kidney_left"];
    for key in [
        "mass_g",
        "volume_ml",
        "tia_mbq_h",
        "tia_mbq_h_sd",
        "mean_dose_gy",
        "mean_dose_gy_sd",
    ] {
        assert!(k[key].is_number(), "{key}");
    }
    for key in ["D2", "D30", "D50", "D70", "D98", "mean", "max"] {
        assert!(k["dvh"][key].is_number(), "dvh.{key}");
    }
    assert_eq!(k["fit"]["model"], "mono_exponential");
    assert_eq!(k["activity_mbq"].as_array().unwrap().len(), 4);
    let png = std::fs::read(dir.path().join("dvh.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let txt = std::fs::read_to_string(dir.path().join("report.txt")).unwrap();
    assert!(txt.contains("kidney_left"));
    // Hybrid (the default): a straight line from (0, 0) to the 0.5 h point, then the
    // exponential through the points, which is exact on a mono-exponential, and its
    // rate after 72 h: 0.25 A(0.5) + A(0.5) / (b + lp) by hand.
    let s = dosimetry::run(&input, &paper_method()).unwrap();
    let o = &s.organs["kidney_left"];
    let a05 = a0 * (-(b + lp) * 0.5).exp();
    let hybrid = 0.25 * a05 + a05 / (b + lp);
    assert!(
        (o.tia_mbq_h - hybrid).abs() < 1e-5 * hybrid,
        "{} vs {hybrid}",
        o.tia_mbq_h
    );
    assert_eq!(o.kinetics.method, "hybrid_trapezoid_exponential_tail");
    // Its BED, integrated numerically along the hybrid curve: the straight
    // first half hour barely matters, so within 0.5 % of the closed form.
    let b_h = o.bed.as_ref().expect("kidney BED").bed_gy;
    let d_h = o.mean_dose_gy;
    assert!(
        (b_h - bed_closed(d_h)).abs() < 5e-3 * bed_closed(d_h),
        "{b_h} vs {}",
        bed_closed(d_h)
    );
    assert!(k["bed"]["bed_gy"].is_number());
}

#[test]
fn hand_computed_mean_dose_one_kidney_single_time_point() {
    // Kidney: a 10 x 10 x 10 block of 5 mm voxels = 1000 x 0.125 mL = 125 mL;
    // mass = 125 mL x 1.06 g/mL = 132.5 g.
    // SPECT at 72 h p.i.: 10 MBq in the kidney, nothing elsewhere.
    // One time point at 72 h -> Hanscheid 2018: TIA = 10 MBq x 2 x 72 h / ln 2
    //   = 2077.4809 MBq h = 2077.4809e6 Bq x 3600 s = 7.47893e12 decays.
    // E = 147.9 keV x 1.602176634e-16 J/keV = 2.369619e-14 J.
    // D = 7.47893e12 x 2.369619e-14 J / 0.1325 kg = 0.177222 J / 0.1325 kg = 1.33753 Gy.
    let g = Geometry::new([20, 20, 20], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]);
    let mut mask = Volume::filled(g.clone(), 0u8);
    for k in 5..15 {
        for j in 5..15 {
            for i in 5..15 {
                mask.set(i, j, k, 3);
            }
        }
    }
    let spect = uniform_spect(&mask, 10.0);
    let input = DoseInput {
        patient_id: "block".into(),
        diag_ct_labels: mask.clone(),
        timepoints: vec![TimePointInput {
            t_h: 72.0,
            spect_bq_per_ml: spect,
            labels: mask,
        }],
        nuclide: Nuclide::Lu177,
        injected_activity_mbq: 7400.0,
    };
    let s = dosimetry::run(&input, &paper_method()).unwrap();
    let o = &s.organs["kidney_right"];
    assert!((o.mass_g - 132.5).abs() < 1e-9);
    assert!((o.activity_mbq[0] - 10.0).abs() < 1e-5);
    assert!((o.tia_mbq_h - 10.0 * 2.0 * 72.0 / LN2).abs() < 1e-3);
    assert!(
        (o.mean_dose_gy - 1.33753).abs() < 1e-4,
        "{}",
        o.mean_dose_gy
    );
    assert_eq!(o.kinetics.method, "single_point_hanscheid_2018");
    assert!(o.warnings.iter().any(|w| w.contains("only 1 time point")));
}

#[test]
fn misregistered_spect_warns_of_spill_out() {
    let g = Geometry::new([32, 32, 32], [4.0, 4.0, 4.0], [-62.0, -62.0, -62.0]);
    let mask = sphere(&g, 24.0, 2);
    // Activity in a sphere shifted by 12 mm (3 voxels) along x.
    let mut shifted = Volume::filled(g.clone(), 0u8);
    for k in 0..32 {
        for j in 0..32 {
            for i in 3..32 {
                shifted.set(i, j, k, mask.get(i - 3, j, k));
            }
        }
    }
    let lp = Nuclide::Lu177.lambda_per_h();
    let timepoints = [0.5, 6.0, 24.0, 72.0]
        .iter()
        .map(|&t| TimePointInput {
            t_h: t,
            spect_bq_per_ml: uniform_spect(&shifted, 20.0 * (-(0.02 + lp) * t).exp()),
            labels: mask.clone(),
        })
        .collect();
    let input = DoseInput {
        patient_id: "p7".into(),
        diag_ct_labels: mask.clone(),
        timepoints,
        nuclide: Nuclide::Lu177,
        injected_activity_mbq: 7400.0,
    };
    // The default correction first searches the masks' move against the SPECT: it
    // finds this one (12 mm, beyond its 10 mm limit) and says so.
    let searched = dosimetry::run(&input, &DosimetryConfig::default()).unwrap();
    let shifts = &searched.pvc.as_ref().unwrap().mask_shift_mm;
    assert!(
        shifts.iter().all(|m| m.is_some_and(|m| m[0] > 8.0)),
        "{shifts:?}"
    );
    assert!(
        searched
            .warnings
            .iter()
            .any(|w| w.contains("match the SPECT")),
        "{:?}",
        searched.warnings
    );
    // The VOIs the result carries for the report's pictures are the moved ones
    // the activity was measured in (the report drew the unmoved masks' VOIs):
    // their centre follows the SPECT's sphere, 12 mm along x.
    let centre_x = |v: &Volume<u8>| {
        let (mut sum, mut n) = (0.0, 0.0);
        for k in 0..32 {
            for j in 0..32 {
                for i in 0..32 {
                    if v.get(i, j, k) != 0 {
                        sum += i as f64;
                        n += 1.0;
                    }
                }
            }
        }
        sum / n * 4.0
    };
    assert_eq!(searched.voi_maps.len(), 4);
    for v in &searched.voi_maps {
        let v = v.as_ref().expect("VOIs of every time point");
        let moved = centre_x(v) - centre_x(&mask);
        assert!((moved - 12.0).abs() < 4.5, "VOI centre moved {moved} mm");
    }
    // The paper's VOI method keeps the masks where the CT put them.
    let s = dosimetry::run(&input, &paper_method()).unwrap();
    for v in &s.voi_maps {
        let v = v.as_ref().expect("VOIs of every time point");
        assert!((centre_x(v) - centre_x(&mask)).abs() < 1.0);
    }
    let o = &s.organs["kidney_left"];
    assert!(
        o.activity_mbq[0] < 20.0 * 0.9,
        "activity is lost: {}",
        o.activity_mbq[0]
    );
    eprintln!("shell/core ratios {:?}", o.shell_to_core_ratio);
    assert!(
        o.warnings.iter().any(|w| w.contains("misregistration")),
        "{:?}",
        o.warnings
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let g = Geometry::new([8, 8, 8], [4.0; 3], [0.0; 3]);
    let mask = sphere(&g, 10.0, 2);
    let mut spect = uniform_spect(&mask, 1.0);
    let mk = |spect: Volume<f32>, labels: Volume<u8>, tps: usize| DoseInput {
        patient_id: "bad".into(),
        diag_ct_labels: labels.clone(),
        timepoints: (0..tps)
            .map(|k| TimePointInput {
                t_h: 1.0 + k as f64,
                spect_bq_per_ml: spect.clone(),
                labels: labels.clone(),
            })
            .collect(),
        nuclide: Nuclide::Lu177,
        injected_activity_mbq: 1000.0,
    };
    let cfg = DosimetryConfig::default();
    assert!(dosimetry::run(&mk(spect.clone(), mask.clone(), 0), &cfg).is_err());
    let empty = Volume::filled(g.clone(), 0u8);
    assert!(dosimetry::run(&mk(spect.clone(), empty, 2), &cfg).is_err());
    spect.data[3] = f32::NAN;
    assert!(dosimetry::run(&mk(spect, mask.clone(), 2), &cfg).is_err());
    // An organ with no activity at all: zero dose, a warning, no panic.
    let zero = Volume::filled(g.clone(), 0f32);
    let s = dosimetry::run(&mk(zero, mask, 3), &cfg).unwrap();
    assert_eq!(s.organs["kidney_left"].mean_dose_gy, 0.0);
    assert!(!s.all_warnings().is_empty());
}

#[test]
fn nifti_study_layout_loads_with_truth_labels() {
    use organdose::io::nifti::write_nifti;
    use organdose::pipeline::{dose_input, MaskSource};
    let keep = std::env::var_os("ORGANDOSE_EXAMPLE_STUDY");
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(dir.join("truth")).unwrap();
    // Two kidneys (spheres of 20 mm radius, 36 mm apart from the centre line) on 4 mm voxels.
    let g = Geometry::new([40, 30, 30], [4.0; 3], [-78.0, -58.0, -58.0]);
    let mut labels = Volume::filled(g.clone(), 0u8);
    for k in 0..30 {
        for j in 0..30 {
            for i in 0..40 {
                let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                for (cx, lab) in [(40.0, 2u8), (-40.0, 3u8)] {
                    if (p[0] - cx).powi(2) + p[1].powi(2) + p[2].powi(2) <= 400.0 {
                        labels.set(i, j, k, lab);
                    }
                }
            }
        }
    }
    let lp = Nuclide::Lu177.lambda_per_h();
    let times = [0.5, 6.0, 24.0, 72.0];
    let mut tps = Vec::new();
    for (n, &t) in times.iter().enumerate() {
        // Bi-exponential kidney kinetics, left kidney 20 % hotter; 200 Bq/mL background.
        let a = 25.0 * (-(0.3 + lp) * t).exp() + 60.0 * (-(0.012 + lp) * t).exp();
        let nk = labels.data.iter().filter(|&&v| v == 2).count() as f64;
        let c = a * 1e6 / (nk * g.voxel_volume_ml());
        let spect = labels.map(|v| match v {
            2 => (1.2 * c) as f32,
            3 => c as f32,
            _ => 200.0,
        });
        let name = format!("tp{}_spect.nii.gz", n + 1);
        write_nifti(&spect, &dir.join(&name), "test spect").unwrap();
        write_nifti(
            &labels,
            &dir.join("truth")
                .join(format!("labels_ldct_tp{}.nii.gz", n + 1)),
            "labels",
        )
        .unwrap();
        let acq = organdose::time::DateTime::parse_iso("2026-03-01T08:00:00")
            .unwrap()
            .plus_hours(t)
            .to_string();
        tps.push(
            serde_json::json!({"t_h": t, "acquisition_datetime": acq, "ldct": null, "spect": name}),
        );
    }
    write_nifti(
        &labels,
        &dir.join("truth").join("labels_ct.nii.gz"),
        "labels",
    )
    .unwrap();
    // --truth still reads the diagnostic CT (a broken CT must fail as it would with
    // the network), so the study has one, on the labels' grid.
    write_nifti(&labels.map(|_| 0f32), &dir.join("ct.nii.gz"), "test ct").unwrap();
    let study = serde_json::json!({
        "patient_id": "EXAMPLE01", "nuclide": "Lu-177", "injected_activity_mbq": 7400.0,
        "injection_datetime": "2026-03-01T08:00:00", "diagnostic_ct": "ct.nii.gz", "timepoints": tps
    });
    std::fs::write(dir.join("study.json"), study.to_string()).unwrap();
    std::fs::write(
        dir.join("truth/truth.json"),
        serde_json::json!({ "times_h": times }).to_string(),
    )
    .unwrap();
    let st = organdose::study::load_study(&dir).unwrap();
    let cfg = organdose::config::Config::default();
    let (input, notes) = dose_input(&st, &MaskSource::truth_of(&dir), &cfg, &|_, _| {}).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(input.timepoints[3].t_h, 72.0);
    assert_eq!(input.timepoints.len(), 4);
    let s = dosimetry::run(&input, &DosimetryConfig::default()).unwrap();
    let l = &s.organs["kidney_left"];
    let r = &s.organs["kidney_right"];
    // Left/right kept (LPS: +x is the patient's left) and the 20 % difference seen.
    assert!((l.mean_dose_gy / r.mean_dose_gy - 1.2).abs() < 0.05);
    assert_eq!(
        l.fit.as_ref().unwrap().model,
        dosimetry::kinetics::Model::BiExponential
    );
}
