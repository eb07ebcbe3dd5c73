//! Synthetic patients (issue 3): determinism, exact truth, read-back, orientation.

use organdose::io::nifti::{read_nifti, read_nifti_labels};
use organdose::organs;
use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{Format, MissingKidney, Patient, PhantomConfig};
use organdose::volume::Volume;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn small(times: &[f64]) -> PhantomConfig {
    PhantomConfig {
        times_h: times.to_vec(),
        ..PhantomConfig::small()
    }
}

fn all_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn truth(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("truth/truth.json")).unwrap()).unwrap()
}

/// Centroid (patient LPS mm) of a label.
fn centroid(v: &Volume<u8>, label: u8) -> Option<[f64; 3]> {
    let [nx, ny, nz] = v.geom.dims;
    let (mut s, mut n) = ([0.0; 3], 0usize);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if v.get(i, j, k) == label {
                    let p = v.geom.index_to_patient([i as f64, j as f64, k as f64]);
                    (0..3).for_each(|a| s[a] += p[a]);
                    n += 1;
                }
            }
        }
    }
    (n > 0).then(|| s.map(|x| x / n as f64))
}

#[test]
fn same_seed_same_bytes_different_seed_different_anatomy() {
    let cfg = small(&[0.5, 24.0]);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let opts = WriteOptions {
        format: Format::Dicom,
        preview: None,
    };
    write_patient(&Patient::new(&cfg, 11, 0), a.path(), &opts).unwrap();
    write_patient(&Patient::new(&cfg, 11, 0), b.path(), &opts).unwrap();
    let fa = all_files(a.path());
    let fb = all_files(b.path());
    assert!(fa.len() > 20, "{} files", fa.len());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(v == &fb[k], "{} differs between runs", k.display());
    }
    // Other seeds (and other patients of one seed): other anatomy.
    let p1 = Patient::new(&cfg, 11, 0);
    let p2 = Patient::new(&cfg, 12, 0);
    let p3 = Patient::new(&cfg, 11, 1);
    let l1 = p1.diagnostic_ct_labels();
    let l2 = p2.diagnostic_ct_labels();
    let l3 = p3.diagnostic_ct_labels();
    assert_ne!(p1.patient_id, p2.patient_id);
    assert_ne!(p1.patient_id, p3.patient_id);
    assert!(l1.geom != l2.geom || l1.data != l2.data);
    assert!(l1.geom != l3.geom || l1.data != l3.data);
    let m1 = p1.anatomy.target_mass_g.clone();
    assert_ne!(m1, p2.anatomy.target_mass_g);
    assert_ne!(m1, p3.anatomy.target_mass_g);
}

#[test]
fn truth_is_exact_and_nifti_reads_back() {
    let cfg = PhantomConfig {
        lesions: Some(2),
        ..small(&[0.5, 6.0, 24.0, 72.0])
    };
    let out = tempfile::tempdir().unwrap();
    let p = Patient::new(&cfg, 5, 0);
    let w = write_patient(
        &p,
        out.path(),
        &WriteOptions {
            format: Format::Nifti,
            preview: Some(out.path().join("preview.png")),
        },
    )
    .unwrap();
    let dir = &w.patient_dir;
    let t = truth(dir);
    let times: Vec<f64> = serde_json::from_value(t["times_h"].clone()).unwrap();
    assert_eq!(times, vec![0.5, 6.0, 24.0, 72.0]);
    assert_eq!(t["seed"], 5);
    assert_eq!(t["nuclide"], "Lu-177");
    let organs_t = t["organs"].as_object().unwrap();
    for name in ["liver", "kidney_left", "kidney_right", "spleen", "tumour"] {
        assert!(organs_t.contains_key(name), "truth lacks {name}");
    }

    // Mass from the written CT label map.
    let labels_ct = read_nifti_labels(&dir.join("truth/labels_ct.nii.gz")).unwrap();
    assert!(labels_ct.geom.same_grid(&p.ct_geom, 1e-3));
    for (name, o) in organs_t {
        let l = organs::label(name).unwrap();
        let n = labels_ct.data.iter().filter(|&&x| x == l).count() as f64;
        let mass = n * labels_ct.geom.voxel_volume_ml() * organs::default_density_g_per_ml(l);
        let truth_mass = o["mass_g"].as_f64().unwrap();
        assert!(
            (mass - truth_mass).abs() <= 0.005 * truth_mass,
            "{name}: {mass} g from labels vs {truth_mass} g in truth"
        );
        // Dose follows from the TIA and the mass.
        let tia = o["tia_mbq_h"].as_f64().unwrap();
        let d = tia * 3600.0 * 1e6 * 147.9 * 1.602176634e-16 / (truth_mass / 1000.0);
        assert!((d - o["mean_dose_gy"].as_f64().unwrap()).abs() < 1e-9 * d.max(1.0));
    }
    let kidney_g = organs_t["kidney_left"]["mass_g"].as_f64().unwrap();
    assert!((60.0..320.0).contains(&kidney_g), "kidney {kidney_g} g");

    // Noiseless, unblurred SPECT summed over each organ's SPECT label = truth activity.
    for (tp, &t_h) in times.iter().enumerate() {
        let (act, labels, _) = p.noiseless_spect(tp);
        let written =
            read_nifti_labels(&dir.join(format!("truth/labels_spect_tp{}.nii.gz", tp + 1)))
                .unwrap();
        assert_eq!(written.data, labels.data);
        assert!(written.geom.same_grid(&labels.geom, 1e-3));
        let vox = act.geom.voxel_volume_ml();
        for (name, o) in organs_t {
            let l = organs::label(name).unwrap();
            let sum_mbq: f64 = act
                .data
                .iter()
                .zip(&labels.data)
                .filter(|(_, &x)| x == l)
                .map(|(&c, _)| c as f64 * vox / 1e6)
                .sum();
            let truth_mbq = o["activity_mbq"][tp].as_f64().unwrap();
            assert!(
                (sum_mbq - truth_mbq).abs() <= 0.01 * truth_mbq,
                "{name} at {t_h} h: {sum_mbq} MBq in SPECT vs {truth_mbq} MBq truth"
            );
        }
        // The measured SPECT reads back on the same grid, roughly unbiased in total.
        let spect = read_nifti(&dir.join(format!("tp{}_spect.nii.gz", tp + 1))).unwrap();
        assert!(spect.geom.same_grid(&act.geom, 1e-3));
        let total_true: f64 = act.data.iter().map(|&c| c as f64).sum();
        let total_meas: f64 = spect.data.iter().map(|&c| c as f64).sum();
        assert!(
            (total_meas / total_true - 1.0).abs() < 0.1,
            "measured total {total_meas} vs true {total_true}"
        );
        let ldct = read_nifti(&dir.join(format!("tp{}_ldct.nii.gz", tp + 1))).unwrap();
        assert!(ldct.geom.same_grid(&p.ldct_geoms[tp], 1e-3));
    }

    // Diagnostic CT reads back with its geometry and plausible HU.
    let ct = read_nifti(&dir.join("ct.nii.gz")).unwrap();
    assert!(ct.geom.same_grid(&p.ct_geom, 1e-3));
    let liver_hu: Vec<f32> = ct
        .data
        .iter()
        .zip(&labels_ct.data)
        .filter(|(_, &l)| l == organs::LIVER)
        .map(|(&h, _)| h)
        .collect();
    let mean = liver_hu.iter().sum::<f32>() / liver_hu.len() as f32;
    // The phase is drawn per patient (ct_appearance): the liver must read its
    // drawn mean for that phase (partial volume at the edges of these coarse
    // 3.6 x 3.6 x 8 mm voxels pulls it a little towards the neighbours).
    let phase = p.ct_look.diagnostic.phase;
    let want = p
        .ct_look
        .mean_hu(organdose::phantom::anatomy::Tissue::Liver, phase);
    assert!(
        (mean - want).abs() < 15.0 && (40.0..150.0).contains(&mean),
        "{} liver mean {mean} HU, drawn {want}",
        phase.name()
    );

    // study.json.
    let study: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("study.json")).unwrap()).unwrap();
    assert_eq!(study["nuclide"], "Lu-177");
    assert_eq!(study["diagnostic_ct"], "ct.nii.gz");
    assert_eq!(study["timepoints"].as_array().unwrap().len(), 4);
    assert_eq!(study["timepoints"][2]["spect"], "tp3_spect.nii.gz");
    let png = std::fs::read(out.path().join("preview.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn liver_is_on_the_patient_right_in_every_written_grid() {
    let cfg = small(&[24.0]);
    let out = tempfile::tempdir().unwrap();
    for seed in [1u64, 2] {
        let p = Patient::new(&cfg, seed, 0);
        let w = write_patient(
            &p,
            out.path(),
            &WriteOptions {
                format: Format::Nifti,
                preview: None,
            },
        )
        .unwrap();
        for f in [
            "labels_ct.nii.gz",
            "labels_ldct_tp1.nii.gz",
            "labels_spect_tp1.nii.gz",
        ] {
            let v = read_nifti_labels(&w.patient_dir.join("truth").join(f)).unwrap();
            let liver = centroid(&v, organs::LIVER).unwrap();
            let spleen = centroid(&v, organs::SPLEEN).unwrap();
            let kl = centroid(&v, organs::KIDNEY_LEFT).unwrap();
            let kr = centroid(&v, organs::KIDNEY_RIGHT).unwrap();
            // LPS: patient right is -x.
            assert!(
                liver[0] < spleen[0],
                "{f}: liver x {} spleen x {}",
                liver[0],
                spleen[0]
            );
            assert!(
                kr[0] < kl[0],
                "{f}: right kidney x {} left x {}",
                kr[0],
                kl[0]
            );
            assert!(kr[0] < 0.0 + 30.0 && kl[0] > -30.0);
            // Superior liver, kidneys posterior to the liver centroid.
            assert!(
                liver[2] > kl[2] && liver[2] > kr[2],
                "{f}: liver not above kidneys"
            );
        }
    }
}

#[test]
fn dicom_headers_geometry_and_units() {
    use dicom_dictionary_std::tags;
    use dicom_object::open_file;
    let cfg = small(&[0.5, 24.0]);
    let out = tempfile::tempdir().unwrap();
    let p = Patient::new(&cfg, 9, 0);
    let w = write_patient(
        &p,
        out.path(),
        &WriteOptions {
            format: Format::Dicom,
            preview: None,
        },
    )
    .unwrap();
    let s = |o: &dicom_object::DefaultDicomObject, t| -> String {
        o.element(t).unwrap().to_str().unwrap().trim().to_string()
    };
    let f = |o: &dicom_object::DefaultDicomObject, t| -> Vec<f64> {
        o.element(t).unwrap().to_multi_float64().unwrap()
    };
    let d = &w.patient_dir;
    let ct1 = open_file(d.join("002_CT_ABDOMEN_CONTRAST/IM0001.dcm")).unwrap();
    let ct2 = open_file(d.join("002_CT_ABDOMEN_CONTRAST/IM0002.dcm")).unwrap();
    assert_eq!(s(&ct1, tags::PATIENT_ID), p.patient_id);
    assert_eq!(s(&ct1, tags::MODALITY), "CT");
    assert_eq!(s(&ct1, tags::SOP_CLASS_UID), "1.2.840.10008.5.1.4.1.1.2");
    assert!(!s(&ct1, tags::CONTRAST_BOLUS_AGENT).is_empty());
    let ipp1 = f(&ct1, tags::IMAGE_POSITION_PATIENT);
    let ipp2 = f(&ct2, tags::IMAGE_POSITION_PATIENT);
    let o = p.ct_geom.origin;
    for a in 0..3 {
        assert!((ipp1[a] - o[a]).abs() < 1e-3);
    }
    assert!((ipp2[2] - ipp1[2] - p.ct_geom.spacing[2]).abs() < 1e-3);
    let ps = f(&ct1, tags::PIXEL_SPACING);
    assert!(
        (ps[0] - p.ct_geom.spacing[1]).abs() < 1e-4 && (ps[1] - p.ct_geom.spacing[0]).abs() < 1e-4
    );
    assert_eq!(
        ct1.element(tags::ROWS).unwrap().to_int::<u32>().unwrap() as usize,
        p.ct_geom.dims[1]
    );
    let ct_study = s(&ct1, tags::STUDY_INSTANCE_UID);
    let ct_for = s(&ct1, tags::FRAME_OF_REFERENCE_UID);

    let injection = p.injection;
    for (tp, (t_h, hl)) in [(0.5, "0.5h"), (24.0, "24h")].iter().enumerate() {
        let ld = open_file(d.join(format!("002_LDCT_{hl}/IM0001.dcm"))).unwrap();
        let nm = open_file(d.join(format!("003_SPECT_{hl}/IM0001.dcm"))).unwrap();
        assert!(ld.element(tags::CONTRAST_BOLUS_AGENT).is_err());
        assert_eq!(
            s(&ld, tags::FRAME_OF_REFERENCE_UID),
            s(&nm, tags::FRAME_OF_REFERENCE_UID)
        );
        assert_ne!(s(&ld, tags::FRAME_OF_REFERENCE_UID), ct_for);
        assert_eq!(
            s(&ld, tags::STUDY_INSTANCE_UID),
            s(&nm, tags::STUDY_INSTANCE_UID)
        );
        assert_ne!(s(&ld, tags::STUDY_INSTANCE_UID), ct_study);
        assert_eq!(s(&nm, tags::MODALITY), "NM");
        assert_eq!(s(&nm, tags::UNITS), "BQML");
        assert_eq!(s(&nm, tags::SERIES_DESCRIPTION), format!("SPECT {hl}"));
        let acq = injection.plus_hours(*t_h);
        assert_eq!(s(&nm, tags::ACQUISITION_DATE_TIME), acq.to_dicom_dt());
        assert_eq!(s(&ld, tags::ACQUISITION_DATE), acq.da());
        assert_eq!(s(&nm, tags::ACQUISITION_TIME), acq.tm());
        let g = &p.spect_geoms[tp];
        assert_eq!(
            nm.element(tags::NUMBER_OF_FRAMES)
                .unwrap()
                .to_int::<usize>()
                .unwrap(),
            g.dims[2]
        );
        let ipp = f(&nm, tags::IMAGE_POSITION_PATIENT);
        for (x, o) in ipp.iter().zip(g.origin) {
            assert!((x - o).abs() < 1e-3);
        }
        assert!((f(&nm, tags::SPACING_BETWEEN_SLICES)[0] - g.spacing[2]).abs() < 1e-4);
        let rp = nm
            .element(tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE)
            .unwrap();
        let item = &rp.items().unwrap()[0];
        let dose = item
            .element(tags::RADIONUCLIDE_TOTAL_DOSE)
            .unwrap()
            .to_float64()
            .unwrap();
        assert!((dose - 7.4e9).abs() < 1.0);
        assert_eq!(
            item.element(tags::RADIOPHARMACEUTICAL_START_DATE_TIME)
                .unwrap()
                .to_str()
                .unwrap()
                .trim(),
            injection.to_dicom_dt()
        );
        let det = nm.element(tags::DETECTOR_INFORMATION_SEQUENCE).unwrap();
        assert!(det.items().unwrap()[0]
            .element(tags::IMAGE_ORIENTATION_PATIENT)
            .is_ok());
    }
    // 72 h later is days later (here 24 h: the next day).
    let nm24 = open_file(d.join("003_SPECT_24h/IM0001.dcm")).unwrap();
    assert_ne!(s(&nm24, tags::ACQUISITION_DATE), injection.da());
}

#[test]
fn missing_kidney_and_misregistration_options() {
    let cfg = PhantomConfig {
        missing_kidney: MissingKidney::Right,
        misregistration_mm: 15.0,
        misregistration_deg: 3.0,
        breathing_mm: 12.0,
        lesions: Some(0),
        ..small(&[24.0])
    };
    let p = Patient::new(&cfg, 4, 0);
    assert_eq!(p.missing_organs, vec![organs::KIDNEY_RIGHT]);
    let ct = p.diagnostic_ct_labels();
    assert!(!ct.data.contains(&organs::KIDNEY_RIGHT));
    assert!(ct.data.contains(&organs::KIDNEY_LEFT));
    let m = &p.misregistration[0];
    let mag = (m.shift_mm.iter().map(|x| x * x).sum::<f64>()).sqrt();
    assert!((7.4..=15.01).contains(&mag), "shift {mag}");
    // The SPECT-grid kidney moved with the misregistration relative to the LDCT.
    let ld = p.ldct_labels(0);
    let (_, sl, _) = p.noiseless_spect(0);
    let a = centroid(&ld, organs::KIDNEY_LEFT).unwrap();
    let b = centroid(&sl, organs::KIDNEY_LEFT).unwrap();
    let d = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt();
    assert!(d > 3.0, "kidney moved only {d} mm");
    let (meas, _) = p.spect(0);
    assert!(meas.data.iter().all(|v| v.is_finite() && *v >= 0.0));
}

#[test]
fn dicom_reads_back_through_organdose_reader() {
    use organdose::io::dicom::read_single_series;
    let cfg = small(&[24.0]);
    let out = tempfile::tempdir().unwrap();
    let p = Patient::new(&cfg, 21, 0);
    let w = write_patient(
        &p,
        out.path(),
        &WriteOptions {
            format: Format::Dicom,
            preview: None,
        },
    )
    .unwrap();
    let ingest = organdose::config::Config::default().ingest;
    let d = &w.patient_dir;
    let (_, ct) = read_single_series(&d.join("002_CT_ABDOMEN_CONTRAST"), None, &ingest).unwrap();
    assert!(
        ct.geom.same_grid(&p.ct_geom, 1e-3),
        "{:?} vs {:?}",
        ct.geom,
        p.ct_geom
    );
    let (ct_truth, _, _) = p.diagnostic_ct();
    let max_diff = ct
        .data
        .iter()
        .zip(&ct_truth.data)
        .map(|(a, b)| (a - b.round().clamp(-1024.0, 3071.0)).abs())
        .fold(0f32, f32::max);
    assert!(max_diff <= 0.5, "CT HU differ by {max_diff}");
    let (_, nm) = read_single_series(&d.join("003_SPECT_24h"), None, &ingest).unwrap();
    assert!(nm.geom.same_grid(&p.spect_geoms[0], 1e-3));
    let (meas, labels) = p.spect(0);
    let peak = meas.data.iter().cloned().fold(0f32, f32::max);
    let max_diff = nm
        .data
        .iter()
        .zip(&meas.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff <= peak / 65000.0, "NM Bq/mL differ by {max_diff}");
    // Patient left kidney at +x on the read-back SPECT grid.
    let lab = Volume {
        geom: nm.geom.clone(),
        data: labels.data,
    };
    let kl = centroid(&lab, organs::KIDNEY_LEFT).unwrap();
    let kr = centroid(&lab, organs::KIDNEY_RIGHT).unwrap();
    assert!(kl[0] > kr[0]);
}

/// Bowel is pushed aside by solid organs. The colon used to be drawn through
/// the kidneys: seed 8000's second patient kept 28 % / 44 % of its target
/// kidney masses (full-size CT), leaving kidney-shaped shells filled with stool.
#[test]
fn organs_keep_their_target_mass_beside_the_bowel() {
    let cfg = small(&[24.0]);
    let mut worst = (f64::INFINITY, String::new());
    for index in 0..6 {
        let p = Patient::new(&cfg, 8000, index);
        let ct = p.diagnostic_ct_labels();
        let ml = ct.geom.voxel_volume_ml();
        for &(label, target_g) in &p.anatomy.target_mass_g {
            if ![organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT, organs::SPLEEN].contains(&label) {
                continue;
            }
            let n = ct.data.iter().filter(|&&x| x == label).count() as f64;
            let ratio = n * ml * organs::default_density_g_per_ml(label) / target_g;
            if ratio < worst.0 {
                worst = (ratio, format!("{} label {label}", p.patient_id));
            }
        }
    }
    // 3.6 mm x 8 mm voxels: partial volume moves a kidney's voxel count by a
    // few per cent; the organs that lose mass to vessels lose about 2 %.
    assert!(worst.0 > 0.85, "{}: {:.2} of target mass", worst.1, worst.0);
}

// ---------------------------------------------------------------------------
// Treatment courses (issue 37, item 4): `organdose phantom --cycles N`.

use organdose::phantom::course::{
    write_course, Course, CourseConfig, ISSUER_OF_PATIENT_ID, KIDNEY_CLEARANCE_FACTOR_PER_CYCLE,
    LESION_VOLUME_FACTOR_PER_CYCLE,
};
use serde_json::Value;

fn geometric(times: &[f64], lesions: usize) -> PhantomConfig {
    PhantomConfig {
        anatomy: Some(organdose::phantom::AnatomyKind::Geometric),
        lesions: Some(lesions),
        ..small(times)
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs())
}

/// BED of a truth.json organ recomputed here from its `kinetics` alone, with
/// the closed form of the Lea-Catcheside factor for a sum of exponentials:
/// `G = (2/D^2) sum_ij c_i c_j / ((l_i + l_j)(l_i + mu))` (Dale 1985).
fn bed_closed_form(organ: &Value, alpha_beta: f64, t_rep_h: f64) -> f64 {
    let k = &organ["kinetics"];
    let ln2 = std::f64::consts::LN_2;
    let lp = ln2 / num(&k["physical_half_life_h"]);
    let (ff, fs) = (num(&k["fast_fraction"]), num(&k["slow_fraction"]));
    let terms = [
        (ff, ln2 / num(&k["fast_biological_half_life_h"]) + lp),
        (fs, ln2 / num(&k["slow_biological_half_life_h"]) + lp),
        (-(ff + fs), ln2 / num(&k["uptake_half_life_h"]) + lp),
    ];
    let mu = ln2 / t_rep_h;
    let area: f64 = terms.iter().map(|(c, l)| c / l).sum();
    let mut q = 0.0;
    for (ci, li) in terms {
        for (cj, lj) in terms {
            q += ci * cj / ((li + lj) * (li + mu));
        }
    }
    let g = 2.0 * q / (area * area);
    let d = num(&organ["mean_dose_gy"]);
    d + g * d * d / alpha_beta
}

#[test]
fn a_course_is_one_patient_treated_weeks_apart() {
    use dicom_dictionary_std::tags;
    let cfg = geometric(&[0.5, 24.0, 72.0], 2);
    let mut cc = CourseConfig::new(3);
    cc.interval_days = 42.0;
    cc.activities_mbq = vec![7400.0, 5550.0];
    let out = tempfile::tempdir().unwrap();
    let course = Course::new(&cfg, &cc, 31, 0).unwrap();
    let w = write_course(
        &course,
        out.path(),
        &WriteOptions {
            format: Format::Dicom,
            preview: None,
        },
    )
    .unwrap();
    let b = &course.base;
    assert_eq!(w.patient_dir, out.path().join(&b.patient_id));
    assert_eq!(w.cycles.len(), 3);

    // One patient in every cycle's DICOM; every visit its own study.
    let mut studies = std::collections::BTreeSet::new();
    for (k, c) in w.cycles.iter().enumerate() {
        assert_eq!(
            c.patient_dir,
            w.patient_dir.join(format!("cycle_{}", k + 1))
        );
        let series: Vec<PathBuf> = std::fs::read_dir(&c.patient_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && !p.ends_with("truth"))
            .collect();
        assert_eq!(series.len(), 1 + 2 * 3, "{series:?}");
        for dir in series {
            let o = dicom_object::open_file(dir.join("IM0001.dcm")).unwrap();
            let s = |t| o.element(t).unwrap().to_str().unwrap().trim().to_string();
            assert_eq!(s(tags::PATIENT_ID), b.patient_id);
            assert_eq!(s(tags::ISSUER_OF_PATIENT_ID), ISSUER_OF_PATIENT_ID);
            assert_eq!(s(tags::PATIENT_BIRTH_DATE), b.birth_date);
            assert_eq!(s(tags::PATIENT_SEX), b.sex);
            assert_eq!(s(tags::PATIENT_NAME), b.patient_name);
            studies.insert(s(tags::STUDY_INSTANCE_UID));
        }
    }
    // Per cycle the restaging CT's study and one per time point.
    assert_eq!(studies.len(), 3 * (1 + 3));

    let truths: Vec<Value> = w
        .cycles
        .iter()
        .map(|c| serde_json::from_str(&std::fs::read_to_string(&c.truth_json).unwrap()).unwrap())
        .collect();
    let inj0 =
        organdose::time::DateTime::parse_iso(truths[0]["injection_datetime"].as_str().unwrap())
            .unwrap();
    let tia_per_mbq = |t: &Value, organ: &str| {
        num(&t["organs"][organ]["tia_mbq_h"]) / num(&t["injected_activity_mbq"])
    };
    for (k, t) in truths.iter().enumerate() {
        // Injections exactly `interval` days apart, the restaging CT before each.
        let inj = organdose::time::DateTime::parse_iso(t["injection_datetime"].as_str().unwrap())
            .unwrap();
        assert!((inj.hours_since(&inj0) - k as f64 * 42.0 * 24.0).abs() < 1e-6);
        let ct =
            organdose::time::DateTime::parse_iso(t["diagnostic_ct_datetime"].as_str().unwrap())
                .unwrap();
        assert!(
            (6.5..28.0).contains(&(inj.hours_since(&ct) / 24.0)),
            "cycle {k}"
        );
        assert_eq!(
            num(&t["injected_activity_mbq"]),
            [7400.0, 5550.0, 5550.0][k]
        );
        assert_eq!(t["course"]["cycle"], k + 1);
        assert_eq!(t["course"]["cycles"], 3);
        assert_eq!(t["issuer_of_patient_id"], ISSUER_OF_PATIENT_ID);
        assert_eq!(t["patient_id"], b.patient_id.as_str());
        for kidney in ["kidney_left", "kidney_right"] {
            let o = &t["organs"][kidney];
            // Slow clearance: 3 % slower per cycle, so more TIA per MBq.
            let rate = |o: &Value| 1.0 / num(&o["kinetics"]["slow_biological_half_life_h"]);
            let want = KIDNEY_CLEARANCE_FACTOR_PER_CYCLE.powi(k as i32);
            assert!(rel_close(
                rate(o) / rate(&truths[0]["organs"][kidney]),
                want,
                1e-9
            ));
            if k > 0 {
                assert!(
                    tia_per_mbq(t, kidney) > tia_per_mbq(&truths[k - 1], kidney),
                    "{kidney} TIA per MBq, cycle {}",
                    k + 1
                );
            }
            // The BED written is the closed form of this curve within 0.1 %.
            let want = bed_closed_form(o, 2.6, 2.8);
            assert!(rel_close(num(&o["bed"]["bed_gy"]), want, 1e-3), "{o:#}");
            assert!(num(&o["bed"]["bed_gy"]) > num(&o["mean_dose_gy"]));
            assert_eq!(o["bed"]["sourced"], true);
        }
        // Lesions: the tumour voxels split among them, one concentration.
        let lesions = t["lesions"].as_array().unwrap();
        assert_eq!(lesions.len(), 2);
        let tumour = &t["organs"]["tumour"];
        let n: u64 = lesions
            .iter()
            .map(|l| l["voxel_count_ct"].as_u64().unwrap())
            .sum();
        assert_eq!(n, tumour["voxel_count_ct"].as_u64().unwrap());
        for l in lesions {
            assert!(rel_close(
                num(&l["mean_dose_gy"]),
                num(&tumour["mean_dose_gy"]),
                1e-9
            ));
            assert!(rel_close(num(&l["bed_gy"]), num(&l["bed"]["bed_gy"]), 0.0));
            assert_eq!(l["centre_mm"].as_array().unwrap().len(), 3);
            assert_eq!(l["centre_spect_mm"].as_array().unwrap().len(), 3);
        }
        let f = num(&tumour["kinetics"]["slow_fraction"])
            / num(&truths[0]["organs"]["tumour"]["kinetics"]["slow_fraction"]);
        assert!(rel_close(
            f,
            LESION_VOLUME_FACTOR_PER_CYCLE.powi(k as i32),
            1e-9
        ));
        // The liver's curve keeps its shape (only its uptake is jittered).
        let liver = |t: &Value, key: &str| num(&t["organs"]["liver"]["kinetics"][key]);
        for key in ["slow_effective_half_life_h", "uptake_half_life_h"] {
            assert_eq!(liver(t, key), liver(&truths[0], key));
        }
    }
    // Every lesion shrinks from cycle to cycle, about as the model says.
    let vol = |k: usize, i: usize| num(&truths[k]["lesions"][i]["volume_ml"]);
    for i in 0..2 {
        assert!(vol(1, i) < vol(0, i) && vol(2, i) < vol(1, i), "lesion {i}");
    }
    let ratio = (vol(2, 0) + vol(2, 1)) / (vol(0, 0) + vol(0, 1));
    let want = LESION_VOLUME_FACTOR_PER_CYCLE.powi(2);
    assert!((ratio - want).abs() < 0.15 * want, "{ratio} vs {want}");

    // course_truth.json: the cycles as their truth.json says, and the sums.
    let ct: Value =
        serde_json::from_str(&std::fs::read_to_string(&w.course_truth_json).unwrap()).unwrap();
    assert_eq!(ct["patient_id"], b.patient_id.as_str());
    assert_eq!(ct["patient_birth_date"], b.birth_date.as_str());
    assert!(ct["method"]
        .as_str()
        .unwrap()
        .contains("sum of the cycles' BEDs"));
    for (organ, cum) in ct["cumulative"]["organs"].as_object().unwrap() {
        let (mut d, mut bed) = (0.0, 0.0);
        for (k, t) in truths.iter().enumerate() {
            let o = &t["organs"][organ];
            let c = &ct["cycles"][k];
            assert_eq!(c["injection_datetime"], t["injection_datetime"]);
            assert_eq!(c["injected_activity_mbq"], t["injected_activity_mbq"]);
            assert!(rel_close(
                num(&c["organs"][organ]["mean_dose_gy"]),
                num(&o["mean_dose_gy"]),
                1e-12
            ));
            assert!(rel_close(
                num(&c["organs"][organ]["bed_gy"]),
                num(&o["bed"]["bed_gy"]),
                1e-12
            ));
            d += num(&o["mean_dose_gy"]);
            bed += num(&o["bed"]["bed_gy"]);
        }
        assert!(
            rel_close(num(&cum["absorbed_dose_gy"]), d, 1e-12),
            "{organ}"
        );
        assert!(rel_close(num(&cum["bed_gy"]), bed, 1e-12), "{organ}");
    }
    assert_eq!(ct["cumulative"]["organs"].as_object().unwrap().len(), 5);
    for i in 0..2 {
        let d: f64 = truths
            .iter()
            .map(|t| num(&t["lesions"][i]["mean_dose_gy"]))
            .sum();
        assert!(rel_close(
            num(&ct["cumulative"]["lesions"][i]["absorbed_dose_gy"]),
            d,
            1e-12
        ));
    }

    // The appliance hands every CT of the patient that is no SPECT/CT session
    // to every cycle: each cycle's study takes its own restaging CT.
    let diag_dir = |k: usize| w.cycles[k].patient_dir.join("002_CT_ABDOMEN_CONTRAST");
    let mut series = organdose::io::dicom::scan(&w.cycles[1].patient_dir)
        .unwrap()
        .series;
    for k in [0, 2] {
        series.extend(organdose::io::dicom::scan(&diag_dir(k)).unwrap().series);
    }
    let own = organdose::io::dicom::scan(&diag_dir(1)).unwrap().series[0]
        .uid
        .clone();
    let st = organdose::io::study::assemble(series).unwrap();
    assert!(
        matches!(&st.diagnostic_ct, organdose::io::study::Source::Dicom(s) if s.uid == own),
        "{}",
        st.diagnostic_ct.describe()
    );
    assert_eq!(st.patient.issuer, ISSUER_OF_PATIENT_ID);
    assert_eq!(st.timepoints.len(), 3);
}

#[test]
fn without_cycles_nothing_changes_and_a_nifti_course_names_the_patient() {
    let bin = env!("CARGO_BIN_EXE_organdose");
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let o = std::process::Command::new(bin)
            .env_remove("RUST_LOG")
            .args([
                "phantom",
                "--seed",
                "17",
                "--small",
                "--anatomy",
                "geometric",
            ])
            .args([
                "--lesions",
                "1",
                "--times",
                "0.5,24",
                "--format",
                "nifti",
                "--out",
            ])
            .arg(out)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    // The command without --cycles writes what write_patient writes, byte for byte.
    let cli = tmp.path().join("cli");
    run(&cli, &[]);
    let lib = tmp.path().join("lib");
    let cfg = geometric(&[0.5, 24.0], 1);
    let p = Patient::new(&cfg, 17, 0);
    let opts = WriteOptions {
        format: Format::Nifti,
        preview: None,
    };
    write_patient(&p, &lib, &opts).unwrap();
    let (a, b) = (all_files(&cli), all_files(&lib));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "{} differs", k.display());
    }
    // A single phantom's study.json names no issuer (as before).
    let sj = |d: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("study.json")).unwrap()).unwrap()
    };
    let single = sj(&cli.join(&p.patient_id));
    assert!(single.get("issuer_of_patient_id").is_none() && single.get("patient_sex").is_none());

    // Two cycles, 28 days apart.
    let course = tmp.path().join("course");
    run(&course, &["--cycles", "2", "--cycle-interval-days", "28"]);
    let pdir = course.join(&p.patient_id);
    assert!(pdir.join("course_truth.json").is_file());
    let mut injections = Vec::new();
    for k in 1..=2 {
        let cdir = pdir.join(format!("cycle_{k}"));
        let s = sj(&cdir);
        assert_eq!(s["patient_id"], p.patient_id.as_str());
        assert_eq!(s["issuer_of_patient_id"], ISSUER_OF_PATIENT_ID);
        assert_eq!(s["patient_birth_date"], p.birth_date.as_str());
        assert_eq!(s["patient_sex"], p.sex.as_str());
        let st = organdose::io::study::load_study(&cdir).unwrap();
        assert_eq!(st.timepoints.len(), 2);
        injections.push(st.injection.datetime);
        // Cycle 1 is the single phantom's patient: same kinetics, bit for bit.
        if k == 1 {
            let t: Value = serde_json::from_str(
                &std::fs::read_to_string(cdir.join("truth/truth.json")).unwrap(),
            )
            .unwrap();
            let s: Value = serde_json::from_str(
                &std::fs::read_to_string(cli.join(&p.patient_id).join("truth/truth.json")).unwrap(),
            )
            .unwrap();
            for (organ, o) in s["organs"].as_object().unwrap() {
                assert_eq!(o["kinetics"], t["organs"][organ]["kinetics"], "{organ}");
            }
            assert_eq!(s["injection_datetime"], t["injection_datetime"]);
        }
    }
    assert!((injections[1].hours_since(&injections[0]) - 28.0 * 24.0).abs() < 1e-6);
    // --cycle-interval-days without --cycles is refused.
    let o = std::process::Command::new(bin)
        .args(["phantom", "--small", "--cycle-interval-days", "30", "--out"])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!o.status.success());
}

/// A cycle folder is a study like any phantom patient's: `organdose dose
/// --truth` runs on it, and with the first cycle's result as history it
/// counts the course's two cycles as one patient's.
#[test]
fn a_course_cycle_is_a_study_and_the_cycles_are_one_patient() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = geometric(&[0.5, 6.0, 24.0, 72.0], 0);
    let course = Course::new(&cfg, &CourseConfig::new(2), 8, 0).unwrap();
    let w = write_course(
        &course,
        tmp.path(),
        &WriteOptions {
            format: Format::Dicom,
            preview: None,
        },
    )
    .unwrap();
    let res = tmp.path().join("results");
    std::fs::create_dir_all(&res).unwrap();
    for (k, c) in w.cycles.iter().enumerate() {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_organdose"))
            .env_remove("RUST_LOG")
            .arg("dose")
            .arg(&c.patient_dir)
            .args(["--truth", "--no-dicom", "--history"])
            .arg(&res)
            .arg("-o")
            .arg(res.join(format!("c{}", k + 1)))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(res.join("c2/dose_summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["patient"]["issuer"], ISSUER_OF_PATIENT_ID);
    let h = &s["treatment_history"];
    assert_eq!(h["cycles"].as_array().unwrap().len(), 2, "{h:#}");
    assert!(h["warnings"].as_array().unwrap().is_empty(), "{h:#}");
    for kidney in ["kidney_left", "kidney_right"] {
        let truth = &w.course_truth["cumulative"]["organs"][kidney];
        let (d, bed) = (
            num(&h["cumulative"][kidney]["dose_gy"]),
            num(&h["cumulative"][kidney]["bed_gy"]),
        );
        let (td, tbed) = (num(&truth["absorbed_dose_gy"]), num(&truth["bed_gy"]));
        eprintln!(
            "{kidney}: cumulative dose {d:.3} Gy (truth {td:.3}), BED {bed:.3} Gy (truth {tbed:.3})"
        );
        // Small grids and a noisy, blurred SPECT: the dosimetry's own accuracy is
        // checked elsewhere; here that the course adds up as one patient's.
        assert!((d - td).abs() < 0.1 * td, "{kidney}: {d} vs {td}");
        assert!((bed - tbed).abs() < 0.1 * tbed, "{kidney}: {bed} vs {tbed}");
    }
}
