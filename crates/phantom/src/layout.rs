//! Writing one patient as a console would export it (DICOM, or NIfTI with a
//! study.json), plus `truth/` (label maps and truth.json).
//!
//! Layout (DICOM): `<out>/<patient_id>/<series_number>_<description>/IM0001.dcm`,
//! one study per visit (the diagnostic CT its own), LDCT and SPECT of a visit in
//! one frame of reference. NIfTI: `ct.nii.gz`, `tp<k>_ldct.nii.gz`,
//! `tp<k>_spect.nii.gz` (k from 1) and `study.json`.
//!
//! Truth label maps (NIfTI, uint8): `truth/labels_ct.nii.gz` on the diagnostic CT
//! grid, `truth/labels_ldct_tp<k>.nii.gz`, `truth/labels_spect_tp<k>.nii.gz`, with
//! the values of `organs::ORGANS` (0 background, 1 liver, 2 kidney_left,
//! 3 kidney_right, 4 spleen, 5 tumour), and `truth/tissue_ct.nii.gz` with the
//! tissue classes of `tissue::TISSUE_NAMES` (listed in truth.json).

use super::bed;
use super::kinetics::{self, LU177_HALF_LIFE_H};
use super::tissue::TISSUE_NAMES;
use super::{preview, rng, Format, Patient};
use crate::error::{Error, FaultKind, Result};
use crate::io::dicom_write::{self, CtInfo, DicomPatient, DicomSeries, DicomStudy, NmInfo};
use crate::io::nifti::write_nifti;
use crate::io::write_bytes_atomically;
use crate::organs;
use crate::volume::Volume;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// 2: organs gained `bed`, and `lesions` (per liver lesion) was added (both
/// additive; version 1 files have neither).
pub(crate) const FORMAT_VERSION: u32 = 2;
pub const RADIOPHARMACEUTICAL: &str = "Lu177-DOTATATE";
/// Radionuclide code for 177Lu as used in RadionuclideCodeSequence (SNOMED-RT
/// style code as commonly written by consoles; meaning per DICOM CID 18 style).
pub(crate) const LU177_CODE: (&str, &str, &str) = ("C-145A8", "SRT", "^177^Lutetium");

/// Options of one write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub format: Format,
    pub preview: Option<PathBuf>,
}

/// What was written for a patient.
#[derive(Debug, Clone)]
pub struct Written {
    pub patient_dir: PathBuf,
    pub truth_json: PathBuf,
    pub files: Vec<PathBuf>,
    /// What was written to `truth_json`.
    pub truth: Value,
}

/// `2.25.<128-bit decimal>` UID derived from the patient seed and a tag.
pub fn uid(p: &Patient, tag: &str) -> String {
    let hi = rng::hash64(p.patient_seed, tag) as u128;
    let lo = rng::hash64(p.patient_seed ^ 0x5555_AAAA_5555_AAAA, tag) as u128;
    let v = ((hi << 64) | lo) >> 1; // below 2^127: at most 39 digits
    format!("2.25.{}", v.max(1))
}

fn hours_label(t: f64) -> String {
    if (t - t.round()).abs() < 1e-9 {
        format!("{}h", t.round() as i64)
    } else {
        format!("{}h", t)
    }
}

fn series_dir(pdir: &Path, number: i32, desc: &str) -> PathBuf {
    let clean: String = desc
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    pdir.join(format!("{number:03}_{clean}"))
}

fn count_labels(v: &Volume<u8>) -> [usize; 256] {
    let mut c = [0usize; 256];
    for &l in &v.data {
        c[l as usize] += 1;
    }
    c
}

fn to_i16(v: &Volume<f32>) -> Volume<i16> {
    v.map(|x| x.round().clamp(-32768.0, 32767.0) as i16)
}

/// Writes everything for one patient under `out/<patient_id>/`.
pub fn write_patient(p: &Patient, out: &Path, opts: &WriteOptions) -> Result<Written> {
    write_patient_in(p, &out.join(&p.patient_id), opts)
}

/// Writes everything for one patient (or one cycle of a course) into `pdir`:
/// the series folders (or NIfTI files and study.json) and `truth/`.
pub fn write_patient_in(p: &Patient, pdir: &Path, opts: &WriteOptions) -> Result<Written> {
    let pdir = pdir.to_path_buf();
    let tdir = pdir.join("truth");
    std::fs::create_dir_all(&tdir).map_err(|e| Error::io(&tdir, e))?;
    let mut files = Vec::new();
    let dp = DicomPatient {
        id: p.patient_id.clone(),
        name: p.patient_name.clone(),
        birth_date: p.birth_date.clone(),
        sex: p.sex.clone(),
        issuer: p.issuer_of_patient_id.clone().unwrap_or_default(),
    };
    let series =
        |uid_tag: &str, number: i32, desc: &str, t: crate::time::DateTime, for_tag: &str| {
            DicomSeries {
                uid: uid(p, uid_tag),
                number,
                description: desc.to_string(),
                date: t.da(),
                time: t.tm(),
                frame_of_reference_uid: uid(p, for_tag),
                acquisition_date: t.da(),
                acquisition_time: t.tm(),
                manufacturer: "organdose".into(),
                model: "Phantom SPECT/CT".into(),
                station: "ODPHANTOM".into(),
                body_part: "ABDOMEN".into(),
            }
        };

    // Diagnostic CT.
    let (ct, ct_labels, ct_tissue) = p.diagnostic_ct();
    let t_ct = p.diagnostic_ct_time;
    let ct_file = match opts.format {
        Format::Dicom => {
            let st = DicomStudy {
                uid: uid(p, "study-ct"),
                date: t_ct.da(),
                time: t_ct.tm(),
                description: "CT ABDOMEN".into(),
                study_id: "1".into(),
                accession: format!("A{}", rng::hash64(p.patient_seed, "acc-ct") % 100_000_000),
            };
            let se = series("series-ct", 2, "CT ABDOMEN CONTRAST", t_ct, "for-ct");
            let info = CtInfo {
                kvp: 120.0,
                tube_current_ma: 250,
                exposure_mas: 200,
                kernel: "B30f".into(),
                contrast_agent: Some("Iomeprol 350".into()),
                window_center: 40.0,
                window_width: 400.0,
            };
            let dir = series_dir(&pdir, se.number, &se.description);
            files.extend(dicom_write::write_ct_series(
                &ct, &dp, &st, &se, &info, &dir,
            )?);
            dir
        }
        Format::Nifti => {
            let f = pdir.join("ct.nii.gz");
            write_nifti(&to_i16(&ct), &f, "organdose phantom CT (HU), contrast")?;
            files.push(f.clone());
            f
        }
    };
    let ct_path = tdir.join("labels_ct.nii.gz");
    write_nifti(&ct_labels, &ct_path, "organ labels on diagnostic CT")?;
    files.push(ct_path);
    let tissue_path = tdir.join("tissue_ct.nii.gz");
    write_nifti(
        &Volume {
            geom: ct.geom.clone(),
            data: ct_tissue,
        },
        &tissue_path,
        "tissue classes on diagnostic CT",
    )?;
    files.push(tissue_path);
    let ct_counts = count_labels(&ct_labels);
    let (lesion_voxels, unclaimed) = p.lesion_voxels_ct(&ct_labels);
    if unclaimed > 0 {
        tracing::warn!(
            "{}: {unclaimed} tumour voxels of the diagnostic CT in no lesion (left out of the per-lesion truth)",
            p.patient_id
        );
    }
    let preview_src = opts
        .preview
        .as_ref()
        .map(|_| (ct.clone(), ct_labels.clone()));
    drop(ct);
    drop(ct_labels);

    // Time points.
    let preview_tp = p
        .times_h
        .iter()
        .enumerate()
        .min_by(|a, b| (a.1 - 24.0).abs().total_cmp(&(b.1 - 24.0).abs()))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let mut preview_tp_data = None;
    let mut tp_json = Vec::new();
    let mut spect_counts = Vec::new();
    let mut remainder = Vec::new();
    for (tp, &t_h) in p.times_h.iter().enumerate() {
        let k = tp + 1;
        let t = p.injection.plus_hours(t_h);
        let hl = hours_label(t_h);
        let (ldct, ldct_labels) = p.ldct(tp);
        let (act, spect_labels, rem) = p.noiseless_spect(tp);
        let spect = super::spect::measure(p, tp, &act);
        drop(act);
        remainder.push(rem);
        spect_counts.push(count_labels(&spect_labels));
        let (ldct_rel, spect_rel);
        match opts.format {
            Format::Dicom => {
                let st = DicomStudy {
                    uid: uid(p, &format!("study-tp{k}")),
                    date: t.da(),
                    time: t.tm(),
                    description: format!("SPECT/CT Lu177 {hl}"),
                    study_id: format!("{}", k + 1),
                    accession: format!(
                        "A{}",
                        rng::hash64(p.patient_seed, &format!("acc-tp{k}")) % 100_000_000
                    ),
                };
                let for_tag = format!("for-tp{k}");
                let se = series(
                    &format!("series-ldct-tp{k}"),
                    2,
                    &format!("LDCT {hl}"),
                    t,
                    &for_tag,
                );
                let info = CtInfo {
                    kvp: 120.0,
                    tube_current_ma: 30,
                    exposure_mas: 20,
                    kernel: "B08s".into(),
                    contrast_agent: None,
                    window_center: 40.0,
                    window_width: 400.0,
                };
                let dir = series_dir(&pdir, se.number, &se.description);
                files.extend(dicom_write::write_ct_series(
                    &ldct, &dp, &st, &se, &info, &dir,
                )?);
                ldct_rel = dir;
                let se = series(
                    &format!("series-spect-tp{k}"),
                    3,
                    &format!("SPECT {hl}"),
                    t,
                    &for_tag,
                );
                let nm = NmInfo {
                    radiopharmaceutical: RADIOPHARMACEUTICAL.into(),
                    nuclide_code: (
                        LU177_CODE.0.into(),
                        LU177_CODE.1.into(),
                        LU177_CODE.2.into(),
                    ),
                    total_dose_bq: p.injected_mbq * 1e6,
                    half_life_s: LU177_HALF_LIFE_H * 3600.0,
                    start_datetime: p.injection.to_dicom_dt(),
                    start_time: p.injection.tm(),
                    // 177Lu 208 keV photopeak, 20 % window (EJNMMI Phys 2020;7:51).
                    energy_windows: vec![("EM208".into(), 187.2, 228.8)],
                    projections: 120,
                    frame_duration_ms: 15_000,
                    collimator: "MEGP".into(),
                    reconstruction_diameter_mm: spect.geom.spacing[0] * spect.geom.dims[0] as f64,
                };
                let dir = series_dir(&pdir, se.number, &se.description);
                let f = dir.join("IM0001.dcm");
                dicom_write::write_nm_series(&spect, &dp, &st, &se, &nm, &f)?;
                files.push(f);
                spect_rel = dir;
            }
            Format::Nifti => {
                let f = pdir.join(format!("tp{k}_ldct.nii.gz"));
                write_nifti(
                    &to_i16(&ldct),
                    &f,
                    &format!("organdose phantom LDCT {hl} (HU)"),
                )?;
                files.push(f.clone());
                ldct_rel = f;
                let f = pdir.join(format!("tp{k}_spect.nii.gz"));
                write_nifti(&spect, &f, &format!("organdose phantom SPECT {hl} (Bq/mL)"))?;
                files.push(f.clone());
                spect_rel = f;
            }
        }
        let lp = tdir.join(format!("labels_ldct_tp{k}.nii.gz"));
        write_nifti(&ldct_labels, &lp, &format!("organ labels on LDCT {hl}"))?;
        files.push(lp);
        let sp = tdir.join(format!("labels_spect_tp{k}.nii.gz"));
        write_nifti(&spect_labels, &sp, &format!("organ labels on SPECT {hl}"))?;
        files.push(sp);
        tp_json.push(json!({
            "t_h": t_h,
            "acquisition_datetime": t.to_string(),
            "ldct": rel(&pdir, &ldct_rel),
            "spect": rel(&pdir, &spect_rel),
        }));
        if opts.preview.is_some() && tp == preview_tp {
            preview_tp_data = Some((ldct, spect, spect_labels));
        }
    }

    // study.json (NIfTI has no acquisition headers).
    if opts.format == Format::Nifti {
        let mut study = json!({
            "patient_id": p.patient_id,
            "nuclide": "Lu-177",
            "radiopharmaceutical": RADIOPHARMACEUTICAL,
            "injected_activity_mbq": p.injected_mbq,
            "injection_datetime": p.injection.to_string(),
            "diagnostic_ct": rel(&pdir, &ct_file),
            "diagnostic_ct_datetime": p.diagnostic_ct_time.to_string(),
            "timepoints": tp_json,
        });
        // What the DICOM headers say of the patient, for matching cycles (a
        // course's cycles only: a single phantom's study.json stays as it was).
        if let (Some(issuer), Some(obj)) = (&p.issuer_of_patient_id, study.as_object_mut()) {
            obj.insert("issuer_of_patient_id".into(), json!(issuer));
            obj.insert("patient_birth_date".into(), json!(p.birth_date));
            obj.insert("patient_sex".into(), json!(p.sex));
        }
        let f = pdir.join("study.json");
        write_json(&f, &study)?;
        files.push(f);
    }

    let mut truth = truth_json(
        p,
        &ct_counts,
        &lesion_voxels,
        &spect_counts,
        &remainder,
        &tp_json,
    );
    // A course's cycle says which, and who issued the Patient ID.
    if let (Some(c), Some(obj)) = (&p.cycle, truth.as_object_mut()) {
        obj.insert("issuer_of_patient_id".into(), json!(p.issuer_of_patient_id));
        obj.insert("patient_birth_date".into(), json!(p.birth_date));
        obj.insert("patient_sex".into(), json!(p.sex));
        obj.insert("course".into(), json!(c));
    }
    let truth_path = tdir.join("truth.json");
    write_json(&truth_path, &truth)?;
    files.push(truth_path.clone());

    if let (Some(path), Some((ct, ct_labels)), Some((ldct, spect, sl))) =
        (&opts.preview, preview_src, preview_tp_data)
    {
        preview::write_preview(path, &ct, &ct_labels, &ldct, &spect, &sl)?;
        files.push(path.clone());
    }
    Ok(Written {
        patient_dir: pdir,
        truth_json: truth_path,
        files,
        truth,
    })
}

fn rel(base: &Path, p: &Path) -> String {
    p.strip_prefix(base)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

pub(crate) fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(v)
        .map_err(|e| Error::library(FaultKind::Input, format!("{}", path.display()), e))?;
    s.push('\n');
    write_bytes_atomically(path, s.as_bytes())
}

/// truth.json: organ volumes and masses from the diagnostic-CT label voxel
/// counts, activities from the kinetics, analytic TIA and local-deposition dose.
pub(crate) fn truth_json(
    p: &Patient,
    ct_counts: &[usize; 256],
    lesion_voxels: &[(usize, [f64; 3])],
    spect_counts: &[[usize; 256]],
    remainder_mbq: &[f64],
    timepoints: &[Value],
) -> Value {
    let vox_ml = p.ct_geom.voxel_volume_ml();
    let mut organs_obj = Map::new();
    let mut lesions = Vec::new();
    for (label, kin) in &p.kinetics {
        let Some(name) = organs::name(*label) else {
            continue;
        };
        let density = organs::default_density_g_per_ml(*label);
        let n = ct_counts[*label as usize];
        let volume_ml = n as f64 * vox_ml;
        let mass_g = volume_ml * density;
        let tia = kin.tia_mbq_h(p.injected_mbq);
        let dose = kinetics::mean_dose_gy(tia, mass_g);
        // G depends on the curve's shape only: once per organ, shared by its lesions.
        let bed_params = bed::parameters(*label);
        let g = bed_params.map(|b| bed::g_of_kinetics(kin, b.repair_half_time_h));
        let truth_bed = |d: f64| match (bed_params, g) {
            (Some(b), Some(g)) => json!(bed::TruthBed::new(d, g, b)),
            _ => Value::Null,
        };
        if *label == organs::TUMOUR {
            // Every lesion has the tumour's concentration (one curve spread
            // uniformly over label 5): its TIA is its share of the voxels.
            for (i, (n, body)) in lesion_voxels.iter().enumerate() {
                let l_ml = *n as f64 * vox_ml;
                let l_g = l_ml * density;
                let l_tia = if ct_counts[*label as usize] > 0 {
                    tia * *n as f64 / ct_counts[*label as usize] as f64
                } else {
                    0.0
                };
                let l_dose = kinetics::mean_dose_gy(l_tia, l_g);
                let b = truth_bed(l_dose);
                let (centre, ldct, spect) = if *n > 0 {
                    (
                        json!(p.ct_pose.to_world(*body)),
                        json!(p
                            .visit_poses
                            .iter()
                            .map(|v| v.to_world(*body))
                            .collect::<Vec<_>>()),
                        json!((0..p.times_h.len())
                            .map(|tp| p.spect_pose(tp).to_world(*body))
                            .collect::<Vec<_>>()),
                    )
                } else {
                    (Value::Null, Value::Null, Value::Null)
                };
                lesions.push(json!({
                    "index": i + 1,
                    "label": label,
                    "centre_mm": centre,
                    "centre_ldct_mm": ldct,
                    "centre_spect_mm": spect,
                    "voxel_count_ct": n,
                    "volume_ml": l_ml,
                    "density_g_per_ml": density,
                    "mass_g": l_g,
                    "tia_mbq_h": l_tia,
                    "mean_dose_gy": l_dose,
                    "bed_gy": b.get("bed_gy").cloned().unwrap_or(Value::Null),
                    "bed": b,
                }));
            }
        }
        let target = p
            .anatomy
            .target_mass_g
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, g)| *g);
        organs_obj.insert(
            name.to_string(),
            json!({
                "label": label,
                "voxel_count_ct": n,
                "volume_ml": volume_ml,
                "density_g_per_ml": density,
                "mass_g": mass_g,
                "target_mass_g": target,
                "activity_mbq": p.times_h.iter().map(|&t| kin.activity_mbq(p.injected_mbq, t)).collect::<Vec<_>>(),
                "spect_voxel_count": spect_counts.iter().map(|c| c[*label as usize]).collect::<Vec<_>>(),
                "kinetics": kin,
                "tia_mbq_h": tia,
                "mean_dose_gy": dose,
                "bed": truth_bed(dose),
            }),
        );
    }
    let labels: Map<String, Value> = std::iter::once(("0".to_string(), json!("background")))
        .chain(
            organs::ORGANS
                .iter()
                .map(|(l, n)| (l.to_string(), json!(n))),
        )
        .collect();
    json!({
        "format_version": FORMAT_VERSION,
        "generator": format!("organdose {} phantom", env!("CARGO_PKG_VERSION")),
        "seed": p.seed,
        "patient_index": p.index,
        "patient_id": p.patient_id,
        "nuclide": "Lu-177",
        "radiopharmaceutical": RADIOPHARMACEUTICAL,
        "physical_half_life_h": LU177_HALF_LIFE_H,
        "electron_energy_per_decay_kev": kinetics::LU177_ELECTRON_KEV,
        "injected_activity_mbq": p.injected_mbq,
        "injection_datetime": p.injection.to_string(),
        "diagnostic_ct_datetime": p.diagnostic_ct_time.to_string(),
        "times_h": p.times_h,
        "timepoints": timepoints,
        "spect_fwhm_mm": p.spect_fwhm_mm,
        "breathing_amplitude_mm": p.breathing_mm,
        "spect_psf": spect_psf(p),
        "misregistration": p.misregistration.iter().zip(&p.times_h).map(|(m, t)| json!({
            "t_h": t,
            "shift_mm": m.shift_mm,
            "rotation_deg": m.rotation_deg,
            "meaning": "SPECT anatomy relative to the LDCT of the same time point, body frame: rotate about the body origin (x, then y, then z), then shift",
        })).collect::<Vec<_>>(),
        "missing_organs": p.missing_organs.iter().filter_map(|&l| organs::name(l)).collect::<Vec<_>>(),
        "remainder_activity_in_spect_fov_mbq": remainder_mbq,
        "dose_method": "local energy deposition: mean_dose_gy = tia_mbq_h * 3600 * 1e6 * 147.9 keV * 1.602176634e-16 J/keV / (mass_g / 1000)",
        "volume_method": "volume_ml = diagnostic-CT label voxel count x voxel volume; mass_g = volume_ml x density",
        "spect_method": "organ activity spread uniformly over its SPECT-grid label; remainder over other body voxels weighted by tissue; then breathing blur, Gaussian blur, Poisson noise",
        "label_classes": labels,
        "tissue_classes": TISSUE_NAMES,
        "grids": {
            "diagnostic_ct": {"dims": p.ct_geom.dims, "spacing_mm": p.ct_geom.spacing, "origin_mm": p.ct_geom.origin},
            "ldct": p.ldct_geoms.iter().map(|g| json!({"dims": g.dims, "spacing_mm": g.spacing, "origin_mm": g.origin})).collect::<Vec<_>>(),
            "spect": p.spect_geoms.iter().map(|g| json!({"dims": g.dims, "spacing_mm": g.spacing, "origin_mm": g.origin})).collect::<Vec<_>>(),
        },
        "bed_method": "linear-quadratic with repair during the decaying dose rate (Dale, Br J Radiol 1985;58:515): bed_gy = D + G D^2 / alpha_beta_gy, G = (2/D^2) int_0^inf Ddot(t) int_0^t Ddot(s) exp(-mu (t-s)) ds dt, mu = ln2 / repair_half_time_h, Ddot = D A(t) / TIA from the kinetics above, integrated numerically (crates/phantom/src/bed.rs); eqd2_gy = bed_gy / (1 + 2 / alpha_beta_gy); 'sourced': false marks illustrative parameters",
        "organs": organs_obj,
        "lesions": lesions,
        "lesion_method": "liver lesions in painting order (label 5 'tumour' is all of them): voxel_count_ct = the lesion's voxels of labels_ct; centre_mm = their centroid on the diagnostic CT, centre_ldct_mm / centre_spect_mm the same point on each time point's LDCT / SPECT (patient LPS); every lesion has the tumour's activity concentration, so tia_mbq_h = the tumour's TIA x its share of the tumour voxels",
    })
}

/// The SPECT simulation's PSF as `truth.json` states it (`spect::measure`): a centred box
/// along z for breathing (when any), then an isotropic Gaussian truncated at 3 sigma. The
/// effective axial FWHM is the Gaussian's with the box's variance added, the value a
/// partial-volume correction with a Gaussian PSF should assume along z.
pub fn spect_psf(p: &Patient) -> serde_json::Value {
    let f = p.spect_fwhm_mm;
    let sigma = f / (8.0 * std::f64::consts::LN_2).sqrt();
    let axial: Vec<f64> = p
        .spect_geoms
        .iter()
        .map(|g| {
            if p.breathing_mm > 0.0 {
                let n = ((p.breathing_mm / g.spacing[2]).round() as usize).max(1) as f64;
                // Variance of a discrete box of n + 1 taps of spacing dz.
                let var = ((n + 1.0).powi(2) - 1.0) / 12.0 * g.spacing[2].powi(2);
                (8.0 * std::f64::consts::LN_2 * (sigma * sigma + var)).sqrt()
            } else {
                f
            }
        })
        .collect();
    json!({
        "model": "Gaussian, depth-independent, isotropic, truncated at 3 sigma; breathing box along z first",
        "fwhm_mm": [f, f, f],
        "sigma_mm": sigma,
        "truncation_sigma": 3.0,
        "breathing_box_mm": p.breathing_mm,
        "effective_axial_fwhm_mm": axial,
        "meaning": "what a partial-volume correction should use as dosimetry.pvc_psf_fwhm_mm (and pvc_psf_axial_fwhm_mm = effective_axial_fwhm_mm when breathing is on)",
    })
}
