//! A treatment course: one phantom patient treated in several cycles weeks
//! apart (`organdose phantom --cycles N`), with truth per cycle and
//! cumulative truth.
//!
//! Layout: `<out>/<patient_id>/cycle_<k>/` (k from 1), each exactly what a
//! single phantom's `<out>/<patient_id>/` holds (series folders or NIfTI with
//! study.json, and `truth/`), and `<out>/<patient_id>/course_truth.json`.
//!
//! What stays and what changes from cycle to cycle:
//! - the patient: anatomy, Patient ID, IssuerOfPatientID
//!   ([`ISSUER_OF_PATIENT_ID`]), name, birth date and sex are the same in
//!   every cycle; cycle 1's anatomy and kinetics are the single phantom's of
//!   the same seed and index;
//! - each cycle is a visit of its own: its own study UIDs, restaging CT 1-4
//!   weeks before its injection, positioning, grids, misregistration and noise,
//!   drawn from the cycle's own random streams;
//! - injection k (from 0) = first injection + k x interval (default
//!   [`DEFAULT_INTERVAL_DAYS`]), with the cycle's injected activity;
//! - kidneys: the slow phase's biological clearance rate is multiplied by
//!   [`KIDNEY_CLEARANCE_FACTOR_PER_CYCLE`] per cycle (renal function declining);
//! - liver lesions: each lesion's volume is multiplied by
//!   [`LESION_VOLUME_FACTOR_PER_CYCLE`] per cycle (a responding tumour), its
//!   uptake (fraction of the injected activity) with it, so its activity
//!   concentration stays;
//! - liver and spleen: uptake jittered by up to [`UPTAKE_JITTER`] per cycle
//!   (between-cycle variability), their curve's shape unchanged.

use super::anatomy::Anatomy;
use super::layout::{write_patient_in, WriteOptions, Written};
use super::rng::{self, Rng};
use super::{Acquisition, Patient, PhantomConfig};
use crate::error::{Error, Result};
use crate::organs;
use crate::time::DateTime;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// IssuerOfPatientID (0010,0021) of every course cycle: the phantom is the
/// system that assigned the Patient ID.
pub const ISSUER_OF_PATIENT_ID: &str = "ORGANDOSE-PHANTOM";

/// 177Lu-DOTATATE cycles are given about 8 weeks apart (NETTER-1: 4 cycles of
/// 7.4 GBq every 8 weeks; Strosberg et al., N Engl J Med 2017;376:125).
pub const DEFAULT_INTERVAL_DAYS: f64 = 56.0;

/// Kidneys' slow-phase biological clearance rate, per cycle (3 % slower each).
/// Renal function declines after PRRT: creatinine clearance about 4 % per
/// year after 177Lu-DOTATATE (Valkema et al., J Nucl Med 2005;46(Suppl
/// 1):83S); slower renal clearance keeps the peptide longer in the kidneys.
/// 3 % per cycle is several times that yearly rate spread over 8-week cycles
/// (under 1 %), chosen so that the drift shows in a 2-cycle test (kidney TIA
/// per MBq about +2 % per cycle), and still small next to the 30-60 h spread
/// between patients: illustrative, not a population figure.
pub const KIDNEY_CLEARANCE_FACTOR_PER_CYCLE: f64 = 0.97;

/// Each liver lesion's volume, per cycle. Illustrative of a responding
/// lesion: 0.7 per cycle is a diameter 11 % smaller per cycle, 30 % after
/// three cycles (the RECIST 1.1 partial-response threshold on diameters;
/// Eisenhauer et al., Eur J Cancer 2009;45:228).
pub const LESION_VOLUME_FACTOR_PER_CYCLE: f64 = 0.7;

/// Liver and spleen uptake varies between cycles of one patient; the phantom
/// multiplies it by a factor uniform in 1 +- this (illustrative).
pub const UPTAKE_JITTER: f64 = 0.05;

/// How a course is made.
#[derive(Debug, Clone)]
pub struct CourseConfig {
    pub cycles: usize,
    pub interval_days: f64,
    /// Injected activity (MBq) per cycle; a shorter list repeats its last
    /// value, an empty one uses the phantom configuration's `injected_mbq`.
    pub activities_mbq: Vec<f64>,
    pub kidney_clearance_factor_per_cycle: f64,
    pub lesion_volume_factor_per_cycle: f64,
}

impl CourseConfig {
    pub fn new(cycles: usize) -> CourseConfig {
        CourseConfig {
            cycles,
            interval_days: DEFAULT_INTERVAL_DAYS,
            activities_mbq: Vec::new(),
            kidney_clearance_factor_per_cycle: KIDNEY_CLEARANCE_FACTOR_PER_CYCLE,
            lesion_volume_factor_per_cycle: LESION_VOLUME_FACTOR_PER_CYCLE,
        }
    }

    fn check(&self) -> Result<()> {
        if self.cycles == 0 {
            return Err(Error::input("a course needs at least one cycle"));
        }
        if !(self.interval_days.is_finite() && self.interval_days >= 1.0) {
            return Err(Error::input(format!(
                "cycle interval {} days: at least 1 day",
                self.interval_days
            )));
        }
        if let Some(a) = self
            .activities_mbq
            .iter()
            .find(|a| !(a.is_finite() && **a > 0.0))
        {
            return Err(Error::input(format!(
                "cycle activity {a} MBq: must be positive"
            )));
        }
        for (what, f) in [
            (
                "kidney clearance factor",
                self.kidney_clearance_factor_per_cycle,
            ),
            ("lesion volume factor", self.lesion_volume_factor_per_cycle),
        ] {
            if !(f.is_finite() && f > 0.0 && f <= 2.0) {
                return Err(Error::input(format!("{what} per cycle {f}: 0 to 2")));
            }
        }
        Ok(())
    }
}

/// Which cycle of which course a phantom patient is (truth.json's `course`).
#[derive(Debug, Clone, Serialize)]
pub struct CycleOf {
    /// From 1.
    pub cycle: usize,
    pub cycles: usize,
    pub interval_days: f64,
    pub first_injection_datetime: String,
    /// Kidneys' slow-phase biological clearance rate relative to cycle 1.
    pub kidney_slow_clearance_factor: f64,
    /// Each lesion's volume relative to cycle 1 (nominal, before voxels).
    pub lesion_volume_factor: f64,
}

/// A course: the first cycle's patient and how the others follow from it.
#[derive(Debug, Clone)]
pub struct Course {
    pub base: Patient,
    pub phantom: PhantomConfig,
    pub config: CourseConfig,
}

impl Course {
    /// Patient `index` of a run seeded with `seed`, treated as `config` says
    /// (the real anatomy's errors returned, as [`Patient::try_new`]).
    pub fn new(
        phantom: &PhantomConfig,
        config: &CourseConfig,
        seed: u64,
        index: usize,
    ) -> Result<Course> {
        config.check()?;
        Ok(Course {
            base: Patient::try_new(phantom, seed, index)?,
            phantom: phantom.clone(),
            config: config.clone(),
        })
    }

    /// Like [`Course::new`] with an anatomy that cannot fail to build
    /// (a real one that does falls back to the geometric one, logged).
    pub fn from_patient(
        phantom: &PhantomConfig,
        config: &CourseConfig,
        base: Patient,
    ) -> Result<Course> {
        config.check()?;
        Ok(Course {
            base,
            phantom: phantom.clone(),
            config: config.clone(),
        })
    }

    pub fn patient_id(&self) -> &str {
        &self.base.patient_id
    }

    /// Injected activity (MBq) of cycle `k` (from 0).
    pub fn activity_mbq(&self, k: usize) -> f64 {
        let a = &self.config.activities_mbq;
        match a.get(k).or(a.last()) {
            Some(&x) => x,
            None => self.phantom.injected_mbq,
        }
    }

    /// Injection of cycle `k` (from 0): the first one plus k intervals.
    pub fn injection(&self, k: usize) -> DateTime {
        self.base
            .injection
            .plus_hours(k as f64 * self.config.interval_days * 24.0)
    }

    /// Cycle `k` (from 0) as a phantom patient of its own.
    pub fn cycle(&self, k: usize) -> Patient {
        let b = &self.base;
        let c = &self.config;
        let cycle_seed = rng::hash64(b.patient_seed, &format!("course-cycle-{}", k + 1));
        let root = Rng::new(cycle_seed);
        let mut r = root.fork("setup");
        let injection = self.injection(k);
        // Restaging CT 1-4 weeks before the cycle's injection (as a single
        // phantom's diagnostic CT before its one).
        let inj_s = injection.epoch_seconds().round() as i64;
        let ct_time = DateTime::from_epoch_seconds(
            (inj_s - (7 + r.below(21) as i64) * 86_400 + r.below(6 * 3600) as i64) as f64,
        );
        let lesion_factor = c.lesion_volume_factor_per_cycle.powi(k as i32);
        let kidney_factor = c.kidney_clearance_factor_per_cycle.powi(k as i32);
        let anatomy: Anatomy = if k == 0 || b.anatomy.lesion_count() == 0 {
            b.anatomy.clone()
        } else {
            b.anatomy.with_lesions_scaled(lesion_factor)
        };
        let acq = Acquisition::draw(
            &self.phantom,
            &anatomy,
            &mut r,
            &mut root.fork("misregistration"),
        );
        let mut kr = root.fork("kinetics");
        let kinetics = b
            .kinetics
            .iter()
            .map(|(l, kin)| {
                let kin = match *l {
                    // Cycle 1 is the patient as drawn, bit for bit.
                    _ if k == 0 => kin.clone(),
                    organs::KIDNEY_LEFT | organs::KIDNEY_RIGHT => {
                        kin.with_slow_clearance_scaled(kidney_factor)
                    }
                    organs::TUMOUR => kin.with_uptake_scaled(lesion_factor),
                    _ => {
                        kin.with_uptake_scaled(kr.uniform(1.0 - UPTAKE_JITTER, 1.0 + UPTAKE_JITTER))
                    }
                };
                (*l, kin)
            })
            .collect();
        Patient {
            seed: b.seed,
            index: b.index,
            // Noise, UIDs and accession numbers hash this: each cycle its own.
            patient_seed: cycle_seed,
            patient_id: b.patient_id.clone(),
            patient_name: b.patient_name.clone(),
            birth_date: b.birth_date.clone(),
            sex: b.sex.clone(),
            issuer_of_patient_id: Some(ISSUER_OF_PATIENT_ID.to_string()),
            cycle: Some(CycleOf {
                cycle: k + 1,
                cycles: c.cycles,
                interval_days: c.interval_days,
                first_injection_datetime: b.injection.to_string(),
                kidney_slow_clearance_factor: kidney_factor,
                lesion_volume_factor: lesion_factor,
            }),
            missing_organs: b.missing_organs.clone(),
            anatomy,
            kinetics,
            injected_mbq: self.activity_mbq(k),
            injection,
            diagnostic_ct_time: ct_time,
            times_h: b.times_h.clone(),
            ct_geom: acq.ct_geom,
            ct_pose: acq.ct_pose,
            ldct_geoms: acq.ldct_geoms,
            spect_geoms: acq.spect_geoms,
            visit_poses: acq.visit_poses,
            misregistration: acq.misregistration,
            spect_fwhm_mm: acq.spect_fwhm_mm,
            breathing_mm: b.breathing_mm,
            counts_per_bq: b.counts_per_bq,
            ct_noise_hu: b.ct_noise_hu,
            ldct_noise_hu: b.ldct_noise_hu,
            ct_look: b.ct_look.clone(),
        }
    }
}

/// What was written for a course.
#[derive(Debug, Clone)]
pub struct WrittenCourse {
    /// `<out>/<patient_id>`.
    pub patient_dir: PathBuf,
    /// One per cycle, in order (`cycle_<k>`).
    pub cycles: Vec<Written>,
    pub course_truth_json: PathBuf,
    pub course_truth: Value,
}

/// Folder of cycle `k` (from 0) under the course's patient folder.
pub fn cycle_dir(patient_dir: &Path, k: usize) -> PathBuf {
    patient_dir.join(format!("cycle_{}", k + 1))
}

/// Writes every cycle (one at a time: a cycle's images are dropped before
/// the next is made) and `course_truth.json`. With a preview, each cycle's
/// is `<stem>_cycle<k>.png` beside it.
pub fn write_course(course: &Course, out: &Path, opts: &WriteOptions) -> Result<WrittenCourse> {
    let pdir = out.join(course.patient_id());
    let mut cycles = Vec::new();
    for k in 0..course.config.cycles {
        let p = course.cycle(k);
        let preview = opts.preview.as_ref().map(|path| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            path.with_file_name(format!("{stem}_cycle{}.png", k + 1))
        });
        let w = write_patient_in(
            &p,
            &cycle_dir(&pdir, k),
            &WriteOptions {
                format: opts.format,
                preview,
            },
        )?;
        cycles.push(w);
    }
    let truth = course_truth(course, &cycles);
    let path = pdir.join("course_truth.json");
    super::layout::write_json(&path, &truth)?;
    Ok(WrittenCourse {
        patient_dir: pdir,
        cycles,
        course_truth_json: path,
        course_truth: truth,
    })
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn bed_of(v: &Value) -> Option<f64> {
    v.get("bed")?.get("bed_gy")?.as_f64()
}

/// course_truth.json from the cycles' truth: per cycle the injection and per
/// organ / lesion the dose and BED; cumulative sums.
fn course_truth(course: &Course, cycles: &[Written]) -> Value {
    let b = &course.base;
    let mut per_cycle = Vec::new();
    // name -> (dose sum, BED sum or None when a cycle has none, BED params).
    let mut cum: Vec<(String, f64, Option<f64>, Value)> = Vec::new();
    let mut cum_lesions: Vec<(f64, Option<f64>)> = Vec::new();
    for (k, w) in cycles.iter().enumerate() {
        let t = &w.truth;
        let mut organs_obj = Map::new();
        if let Some(orgs) = t.get("organs").and_then(Value::as_object) {
            for (name, o) in orgs {
                let dose = num(o, "mean_dose_gy");
                let bed = bed_of(o);
                let injected = num(t, "injected_activity_mbq");
                organs_obj.insert(
                    name.clone(),
                    json!({
                        "mass_g": num(o, "mass_g"),
                        "tia_mbq_h": num(o, "tia_mbq_h"),
                        "tia_per_injected_mbq_h": if injected > 0.0 { num(o, "tia_mbq_h") / injected } else { 0.0 },
                        "mean_dose_gy": dose,
                        "bed_gy": bed,
                    }),
                );
                let params = o
                    .get("bed")
                    .map(|x| {
                        json!({
                            "alpha_beta_gy": x.get("alpha_beta_gy"),
                            "repair_half_time_h": x.get("repair_half_time_h"),
                            "sourced": x.get("sourced"),
                            "source": x.get("source"),
                        })
                    })
                    .unwrap_or(Value::Null);
                match cum.iter_mut().find(|c| c.0 == *name) {
                    Some(c) => {
                        c.1 += dose;
                        c.2 = c.2.zip(bed).map(|(a, x)| a + x);
                    }
                    None => cum.push((name.clone(), dose, bed, params)),
                }
            }
        }
        let lesions: Vec<Value> = t
            .get("lesions")
            .and_then(Value::as_array)
            .map(|ls| {
                ls.iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let (dose, bed) = (
                            num(l, "mean_dose_gy"),
                            l.get("bed_gy").and_then(Value::as_f64),
                        );
                        match cum_lesions.get_mut(i) {
                            Some(c) => {
                                c.0 += dose;
                                c.1 = c.1.zip(bed).map(|(a, x)| a + x);
                            }
                            None => cum_lesions.push((dose, bed)),
                        }
                        json!({
                            "index": l.get("index"),
                            "volume_ml": num(l, "volume_ml"),
                            "mean_dose_gy": dose,
                            "bed_gy": bed,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        per_cycle.push(json!({
            "cycle": k + 1,
            "folder": format!("cycle_{}", k + 1),
            "injection_datetime": t.get("injection_datetime"),
            "injected_activity_mbq": num(t, "injected_activity_mbq"),
            "course": t.get("course"),
            "organs": organs_obj,
            "lesions": lesions,
        }));
    }
    let cum_organs: Map<String, Value> = cum
        .into_iter()
        .map(|(name, dose, bed, params)| {
            let eqd2 = bed
                .zip(params.get("alpha_beta_gy").and_then(Value::as_f64))
                .map(|(x, ab)| x / (1.0 + 2.0 / ab));
            (
                name,
                json!({
                    "absorbed_dose_gy": dose,
                    "bed_gy": bed,
                    "eqd2_gy": eqd2,
                    "bed_parameters": params,
                }),
            )
        })
        .collect();
    let c = &course.config;
    json!({
        "format_version": 1,
        "generator": format!("organdose {} phantom", env!("CARGO_PKG_VERSION")),
        "seed": b.seed,
        "patient_index": b.index,
        "patient_id": b.patient_id,
        "issuer_of_patient_id": ISSUER_OF_PATIENT_ID,
        "patient_birth_date": b.birth_date,
        "patient_sex": b.sex,
        "cycle_count": c.cycles,
        "interval_days": c.interval_days,
        "model": {
            "kidney_slow_clearance_factor_per_cycle": c.kidney_clearance_factor_per_cycle,
            "lesion_volume_factor_per_cycle": c.lesion_volume_factor_per_cycle,
            "liver_spleen_uptake_jitter": UPTAKE_JITTER,
            "text": "same anatomy and patient in every cycle; injection k = first + k x interval_days; kidneys' slow-phase biological clearance rate x kidney_slow_clearance_factor_per_cycle per cycle (renal function declining); each liver lesion's volume and uptake x lesion_volume_factor_per_cycle per cycle (concentration kept); liver and spleen uptake x uniform(1 - jitter, 1 + jitter) from cycle 2 on; each cycle its own visit (restaging CT, positioning, grids, misregistration, noise)",
        },
        "cycles": per_cycle,
        "cumulative": {
            "organs": cum_organs,
            "lesions": cum_lesions.iter().enumerate().map(|(i, (d, bed))| json!({
                "index": i + 1,
                "absorbed_dose_gy": d,
                "bed_gy": bed,
            })).collect::<Vec<_>>(),
        },
        "method": "per cycle: each cycle's truth.json (cycle_<k>/truth/truth.json: mean dose by local deposition, BED from the cycle's own dose-rate curve, see its bed_method). Cumulative absorbed dose = sum of the cycles' mean doses. Cumulative BED = sum of the cycles' BEDs: the cycles are interval_days apart, far longer than any repair half-time (hours), so repair between cycles is complete and each cycle's quadratic term stands alone (BEDs of separate treatments add). eqd2_gy = cumulative BED / (1 + 2 / alpha_beta_gy). A BED is null where its organ has no BED parameters.",
    })
}
