//! The patient's treatment history (issue 37, item 2): the cycles of one
//! patient kept together across months, with the cumulative absorbed dose and
//! BED per organ, the limits used in practice and the activity the next cycle
//! may have before it reaches them.
//!
//! - **Which cycles are one patient's:** the same Patient ID and, where both
//!   give them, the same issuer, birth date and sex
//!   ([`PatientIdentity::differs`]); a mismatch is a warning and the cycle is
//!   not counted.
//! - **Nothing counted twice:** a cycle is its injection date-time; two results
//!   of one cycle (an old copy, the cycle being recomputed) count once, the
//!   current computation first, else the better status, else the newer file.
//! - **Doses and BEDs add:** cycles are weeks apart, so sublethal damage is
//!   repaired between them (repair half-times are hours) and the BED of a
//!   course is the sum of its cycles' BEDs (Dale, Br J Radiol 1985;58:515;
//!   Bodei et al., EJNMMI 2008;35:1847 sum them so for the kidney limits).
//! - **Uncertainties add linearly:** a patient's cycles share the camera
//!   calibration, the PSF and the mask method, so their errors are not
//!   independent; the linear sum of the SDs is the bound for fully correlated
//!   errors.
//! - **Remaining allowance:** for each limit, the activity of the next cycle
//!   that would reach it at this patient's mean dose per GBq so far
//!   (`remaining / (dose per GBq)`; for the BED the quadratic
//!   `x + G x^2 / (alpha/beta) = remaining` in the next cycle's dose `x`, with
//!   G the mean Lea-Catcheside factor of the patient's cycles). Its SD comes
//!   from the cumulative SD and from the predicted dose per GBq, whose SD is
//!   the measurement's and the spread between the cycles (the next cycle
//!   varies as the earlier ones did) in quadrature.

use organdose_core::patient::PatientIdentity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One organ in one cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganCycle {
    pub mean_dose_gy: f64,
    pub mean_dose_gy_sd: f64,
    /// Mean dose per injected GBq.
    pub dose_gy_per_gbq: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed_gy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed_gy_sd: Option<f64>,
    /// Lea-Catcheside factor of the cycle's dose-rate curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub g_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_beta_gy: Option<f64>,
    /// The kinetics method (`single_point_*` for single-time-point cycles).
    pub method: String,
}

impl OrganCycle {
    pub(crate) fn new(
        d: f64,
        d_sd: f64,
        gbq: f64,
        bed: Option<&super::bed::Bed>,
        method: &str,
    ) -> Self {
        OrganCycle {
            mean_dose_gy: d,
            mean_dose_gy_sd: d_sd,
            dose_gy_per_gbq: d / gbq,
            bed_gy: bed.map(|b| b.bed_gy),
            bed_gy_sd: bed.map(|b| b.bed_gy_sd),
            g_factor: bed.map(|b| b.g_factor),
            alpha_beta_gy: bed.map(|b| b.alpha_beta_gy),
            method: method.to_string(),
        }
    }
}

/// One therapy cycle as the history counts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleDose {
    /// ISO 8601, as the summary gives it: what identifies the cycle.
    pub injection_datetime: String,
    pub injected_activity_mbq: f64,
    /// The summary's status (final, reviewed, needs_review, provisional, partial).
    pub status: String,
    /// The summary file it was read from; "this cycle" for the one computed now.
    pub source: String,
    pub organs: BTreeMap<String, OrganCycle>,
}

/// An organ's sum over the counted cycles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cumulative {
    pub dose_gy: f64,
    pub dose_gy_sd: f64,
    /// Absent when a counted cycle has no BED for the organ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed_gy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed_gy_sd: Option<f64>,
    /// Cycles that measured the organ, of the cycles counted.
    pub cycles: usize,
    /// Mean dose per GBq over those cycles and its predictive SD (see the
    /// module's text).
    pub dose_gy_per_gbq: f64,
    pub dose_gy_per_gbq_sd: f64,
}

/// What remains under one limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allowance {
    pub organ: String,
    /// "absorbed dose", "BED" or "BED with risk factors".
    pub quantity: String,
    pub limit_gy: f64,
    pub cumulative_gy: f64,
    pub cumulative_gy_sd: f64,
    /// limit - cumulative (negative: over the limit).
    pub remaining_gy: f64,
    /// Activity of a next cycle that would reach the limit, GBq (0 when it is
    /// reached).
    pub next_activity_gbq: f64,
    pub next_activity_gbq_sd: f64,
    pub reached: bool,
}

/// `treatment_history` in `dose_summary.json`, and what `organdose history`
/// prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreatmentHistory {
    pub patient: PatientIdentity,
    /// Counted cycles by injection date-time.
    pub cycles: Vec<CycleDose>,
    pub cumulative: BTreeMap<String, Cumulative>,
    pub allowances: Vec<Allowance>,
    /// How the figures are made (the module's text in one paragraph).
    pub method: String,
    /// Results not counted and why; cycles that need review.
    pub warnings: Vec<String>,
}

/// The limits of `[dosimetry]`: per organ, absorbed dose, BED and BED with risk
/// factors (Gy).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub dose_gy: BTreeMap<String, f64>,
    pub bed_gy: BTreeMap<String, f64>,
    pub bed_risk_gy: BTreeMap<String, f64>,
}

impl Limits {
    pub fn of(cfg: &super::DosimetryConfig) -> Self {
        Limits {
            dose_gy: cfg.limit_dose_gy.clone(),
            bed_gy: cfg.limit_bed_gy.clone(),
            bed_risk_gy: cfg.limit_bed_risk_gy.clone(),
        }
    }
}

const METHOD: &str = "Cycles of one patient: the same Patient ID and, where both give them, issuer, birth date and sex. \
Cumulative absorbed dose and BED are the sums over the cycles (cycles weeks apart: repair is complete between them, so BEDs add); \
their SDs add linearly (a patient's cycles share calibration, PSF and mask method). \
Remaining allowance: the next cycle's activity that reaches each limit at the patient's mean dose per GBq so far \
(for the BED with the cycles' mean Lea-Catcheside factor); its SD from the cumulative SD and the dose per GBq's \
(measurement and the spread between cycles, in quadrature).";

/// A cycle read from a `dose_summary.json`, with whose it is.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub patient: PatientIdentity,
    pub cycle: CycleDose,
    /// The file's modification time (the newer of two results of one cycle wins).
    pub modified: Option<std::time::SystemTime>,
}

/// The part of a `dose_summary.json` the history reads (schema 1.5 and later:
/// earlier ones have no injection date-time).
#[derive(Deserialize)]
struct SummaryFile {
    patient_id: String,
    #[serde(default)]
    patient: Option<PatientIdentity>,
    #[serde(default)]
    injection_datetime: String,
    injected_activity_mbq: f64,
    status: String,
    organs: BTreeMap<String, SummaryOrgan>,
}

#[derive(Deserialize)]
struct SummaryOrgan {
    mean_dose_gy: f64,
    mean_dose_gy_sd: f64,
    #[serde(default)]
    bed: Option<super::bed::Bed>,
    kinetics: SummaryKinetics,
}

#[derive(Deserialize)]
struct SummaryKinetics {
    method: String,
}

/// Reads one summary file as a cycle of the history; the error says why it
/// cannot count (the caller names the file).
pub fn read_summary(path: &Path) -> Result<Recorded, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let f: SummaryFile = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if f.injection_datetime.trim().is_empty() {
        return Err(
            "no injection date-time (a summary before schema 1.5): the cycle cannot be placed"
                .into(),
        );
    }
    let a = f.injected_activity_mbq;
    if !(a.is_finite() && a > 0.0) {
        return Err(format!("injected activity {a} MBq"));
    }
    let gbq = a / 1000.0;
    let mut organs = BTreeMap::new();
    for (n, o) in f.organs {
        if !(o.mean_dose_gy.is_finite() && o.mean_dose_gy_sd.is_finite()) {
            return Err(format!("{n}: mean dose {} Gy", o.mean_dose_gy));
        }
        let organ = OrganCycle::new(
            o.mean_dose_gy,
            o.mean_dose_gy_sd,
            gbq,
            o.bed.as_ref(),
            &o.kinetics.method,
        );
        organs.insert(n, organ);
    }
    let patient = f
        .patient
        .map(|mut p| {
            if p.id.trim().is_empty() {
                p.id = f.patient_id.trim().to_string();
            }
            p
        })
        .unwrap_or_else(|| PatientIdentity::with_id(&f.patient_id));
    Ok(Recorded {
        patient,
        cycle: CycleDose {
            injection_datetime: f.injection_datetime,
            injected_activity_mbq: a,
            status: f.status,
            source: path.display().to_string(),
            organs,
        },
        modified: std::fs::metadata(path).and_then(|m| m.modified()).ok(),
    })
}

/// Every `dose_summary.json` under `dir` down to `max_depth` folders (1:
/// `dir/*/dose_summary.json`, the appliance's results), but not inside a
/// result's own `history/` (the results a correction replaced) or hidden
/// folders (staging); what cannot be read comes back as (file, why).
pub fn read_dir(dir: &Path, max_depth: usize) -> Earlier {
    let mut found = Vec::new();
    let mut failed = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) => {
                failed.push((d.clone(), e.to_string()));
                continue;
            }
        };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                if depth < max_depth && name != "history" && !name.starts_with('.') {
                    stack.push((p, depth + 1));
                }
            } else if name == "dose_summary.json" {
                match read_summary(&p) {
                    Ok(r) => found.push(r),
                    Err(why) => failed.push((p, why)),
                }
            }
        }
    }
    Earlier {
        records: found,
        unreadable: failed,
    }
}

/// What [`read_dir`] found: the results read, and the files that could not be
/// (with why): a cycle in one of those is missing from the sums, so the
/// history says so.
#[derive(Debug, Clone, Default)]
pub struct Earlier {
    pub records: Vec<Recorded>,
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Earlier {
    /// The history's warnings for the files not read.
    pub fn unreadable_warnings(&self) -> Vec<String> {
        self.unreadable
            .iter()
            .map(|(p, why)| {
                format!(
                    "not read: {}: {why} (a cycle there is missing from the sums)",
                    p.display()
                )
            })
            .collect()
    }
}

/// The history of the patient with this ID (and issuer, when given) from the
/// results under `dir` (see [`read_dir`]): the patient is as their latest
/// cycle gives them; results that cannot be read are the history's warnings.
pub fn for_patient(
    dir: &Path,
    max_depth: usize,
    id: &str,
    issuer: Option<&str>,
    limits: &Limits,
) -> Result<TreatmentHistory, String> {
    if id.trim().is_empty() {
        return Err("an empty Patient ID names no patient".into());
    }
    let Earlier {
        records,
        unreadable,
    } = read_dir(dir, max_depth);
    let theirs = |r: &&Recorded| {
        r.patient.id.trim() == id.trim()
            && issuer.is_none_or(|i| r.patient.issuer.trim().eq_ignore_ascii_case(i.trim()))
    };
    let latest = records
        .iter()
        .filter(theirs)
        .max_by(|a, b| a.cycle.injection_datetime.cmp(&b.cycle.injection_datetime))
        .ok_or_else(|| {
            format!(
                "no result of patient '{id}'{} under {} ({} summaries read)",
                issuer.map(|i| format!(" (issuer {i})")).unwrap_or_default(),
                dir.display(),
                records.len()
            )
        })?
        .patient
        .clone();
    let mut h = build(&latest, records, None, limits);
    h.warnings.extend(
        Earlier {
            records: Vec::new(),
            unreadable,
        }
        .unreadable_warnings(),
    );
    Ok(h)
}

fn status_rank(s: &str) -> u8 {
    match s {
        "reviewed" => 5,
        "final" => 4,
        "needs_review" => 3,
        "provisional" => 2,
        "partial" => 1,
        _ => 0,
    }
}

/// The history of `patient`: the cycles of `records` that are theirs, with
/// `current` (the cycle computed now, which replaces any other result of its
/// cycle).
pub fn build(
    patient: &PatientIdentity,
    records: Vec<Recorded>,
    current: Option<CycleDose>,
    limits: &Limits,
) -> TreatmentHistory {
    let mut warnings = Vec::new();
    // Cycle key -> (rank, the cycle). The current one outranks every file.
    let mut by_cycle: BTreeMap<String, (u8, Option<std::time::SystemTime>, CycleDose)> =
        BTreeMap::new();
    let mut counted_identity = patient.clone();
    if let Some(c) = current {
        by_cycle.insert(c.injection_datetime.trim().to_string(), (u8::MAX, None, c));
    }
    // Without an ID (an anonymised export) nothing says whose a result is:
    // two such patients must not be added up.
    let anonymous = patient.id.trim().is_empty();
    if anonymous {
        warnings.push(
            "no Patient ID: this cycle is not joined to any other (cumulative figures are this cycle's)"
                .into(),
        );
    }
    for r in records {
        if anonymous || r.patient.id.trim() != patient.id.trim() {
            continue;
        }
        if let Some(why) = patient.differs(&r.patient) {
            warnings.push(format!(
                "not counted: {} (cycle of {}): {why}: another patient under the same ID, or a mix-up at the console",
                r.cycle.source, r.cycle.injection_datetime
            ));
            continue;
        }
        // Attributes only the earlier cycles give are kept for the record.
        for (have, other) in [
            (&mut counted_identity.issuer, &r.patient.issuer),
            (&mut counted_identity.birth_date, &r.patient.birth_date),
            (&mut counted_identity.sex, &r.patient.sex),
        ] {
            if have.trim().is_empty() {
                *have = other.trim().to_string();
            }
        }
        let key = r.cycle.injection_datetime.trim().to_string();
        let rank = status_rank(&r.cycle.status);
        match by_cycle.get(&key) {
            // The cycle computed now replaces its earlier result silently
            // (a recomputation into the same folder).
            Some((u8::MAX, _, _)) => {}
            Some((held_rank, held_mod, held)) if (*held_rank, *held_mod) >= (rank, r.modified) => {
                warnings.push(format!(
                    "not counted twice: {} (the cycle of {key}) is counted from {}",
                    r.cycle.source, held.source
                ));
            }
            Some((_, _, held)) => {
                warnings.push(format!(
                    "not counted twice: {} (the cycle of {key}) is counted from {}",
                    held.source, r.cycle.source
                ));
                by_cycle.insert(key, (rank, r.modified, r.cycle));
            }
            None => {
                by_cycle.insert(key, (rank, r.modified, r.cycle));
            }
        }
    }
    let mut cycles: Vec<CycleDose> = by_cycle.into_values().map(|(_, _, c)| c).collect();
    // ISO 8601 date-times of one console sort as text; parse where possible.
    cycles.sort_by(|a, b| a.injection_datetime.cmp(&b.injection_datetime));
    for c in &cycles {
        if c.status == "needs_review" {
            warnings.push(format!(
                "the cycle of {} needs review: its doses are counted as they stand",
                c.injection_datetime
            ));
        }
    }
    let cumulative = cumulate(&cycles);
    let allowances = allowances(&cycles, &cumulative, limits);
    TreatmentHistory {
        patient: counted_identity,
        cycles,
        cumulative,
        allowances,
        method: METHOD.into(),
        warnings,
    }
}

fn cumulate(cycles: &[CycleDose]) -> BTreeMap<String, Cumulative> {
    let mut names: Vec<&String> = cycles.iter().flat_map(|c| c.organs.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = BTreeMap::new();
    for name in names {
        let of: Vec<&OrganCycle> = cycles.iter().filter_map(|c| c.organs.get(name)).collect();
        let n = of.len();
        let dose: f64 = of.iter().map(|o| o.mean_dose_gy).sum();
        let dose_sd: f64 = of.iter().map(|o| o.mean_dose_gy_sd).sum();
        let beds: Option<Vec<(f64, f64)>> = of
            .iter()
            .map(|o| Some((o.bed_gy?, o.bed_gy_sd.unwrap_or(0.0))))
            .collect();
        // Predicted dose per GBq: the mean, its measurement SD (correlated
        // cycles: the mean of the relative SDs) and the spread between cycles.
        let per: Vec<f64> = of.iter().map(|o| o.dose_gy_per_gbq).collect();
        let mean = per.iter().sum::<f64>() / n as f64;
        let meas_rel = of
            .iter()
            .map(|o| {
                if o.mean_dose_gy > 0.0 {
                    o.mean_dose_gy_sd / o.mean_dose_gy
                } else {
                    0.0
                }
            })
            .sum::<f64>()
            / n as f64;
        let spread = if n > 1 {
            (per.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        out.insert(
            name.clone(),
            Cumulative {
                dose_gy: dose,
                dose_gy_sd: dose_sd,
                bed_gy: beds.as_ref().map(|b| b.iter().map(|x| x.0).sum()),
                bed_gy_sd: beds.as_ref().map(|b| b.iter().map(|x| x.1).sum()),
                cycles: n,
                dose_gy_per_gbq: mean,
                dose_gy_per_gbq_sd: ((meas_rel * mean).powi(2) + spread.powi(2)).sqrt(),
            },
        );
    }
    out
}

/// The next cycle's dose `x` (Gy) whose BED `x + g x^2 / ab` is `r` (the
/// root of the quadratic, in the form that stays accurate as g -> 0), and
/// dx/dr.
pub fn dose_for_bed(r: f64, g: f64, ab: f64) -> (f64, f64) {
    if r <= 0.0 {
        return (0.0, 0.0);
    }
    let k = g / ab;
    let x = 2.0 * r / (1.0 + (1.0 + 4.0 * k * r).sqrt());
    (x, 1.0 / (1.0 + 2.0 * k * x))
}

fn allowances(
    cycles: &[CycleDose],
    cum: &BTreeMap<String, Cumulative>,
    limits: &Limits,
) -> Vec<Allowance> {
    let mut out = Vec::new();
    for (name, c) in cum {
        let d = c.dose_gy_per_gbq;
        let d_sd = c.dose_gy_per_gbq_sd;
        let mut push =
            |quantity: &str, limit: f64, total: f64, total_sd: f64, x: f64, dxdr: f64| {
                let remaining = limit - total;
                let reached = remaining <= 0.0;
                let (a, a_sd) = if reached || d <= 0.0 {
                    (0.0, 0.0)
                } else {
                    let a = x / d;
                    // dA/dR = (dx/dR) / d, dA/dd = -A / d.
                    let sd = ((dxdr / d * total_sd).powi(2) + (a / d * d_sd).powi(2)).sqrt();
                    (a, sd)
                };
                out.push(Allowance {
                    organ: name.clone(),
                    quantity: quantity.into(),
                    limit_gy: limit,
                    cumulative_gy: total,
                    cumulative_gy_sd: total_sd,
                    remaining_gy: remaining,
                    next_activity_gbq: a,
                    next_activity_gbq_sd: a_sd,
                    reached,
                });
            };
        if let Some(&l) = limits.dose_gy.get(name) {
            let r = l - c.dose_gy;
            push("absorbed dose", l, c.dose_gy, c.dose_gy_sd, r.max(0.0), 1.0);
        }
        let (Some(bed), Some(bed_sd)) = (c.bed_gy, c.bed_gy_sd) else {
            continue;
        };
        // The next cycle's curve: the mean G and alpha/beta of the cycles.
        let gs: Vec<(f64, f64)> = cycles
            .iter()
            .filter_map(|cy| {
                let o = cy.organs.get(name)?;
                Some((o.g_factor?, o.alpha_beta_gy?))
            })
            .collect();
        if gs.is_empty() {
            continue;
        }
        let g = gs.iter().map(|x| x.0).sum::<f64>() / gs.len() as f64;
        let ab = gs.iter().map(|x| x.1).sum::<f64>() / gs.len() as f64;
        for (quantity, l) in [
            ("BED", limits.bed_gy.get(name)),
            ("BED with risk factors", limits.bed_risk_gy.get(name)),
        ] {
            let Some(&l) = l else { continue };
            let (x, dxdr) = dose_for_bed(l - bed, g, ab);
            push(quantity, l, bed, bed_sd, x, dxdr);
        }
    }
    out
}

/// The history as a text table (report.txt and `organdose history`).
pub fn text(h: &TreatmentHistory) -> String {
    use std::fmt::Write;
    let mut r = String::new();
    let p = &h.patient;
    let _ = writeln!(
        r,
        "Treatment history of patient {}{}{}{}: {} cycle(s)",
        p.id,
        if p.issuer.is_empty() {
            String::new()
        } else {
            format!(" (issuer {})", p.issuer)
        },
        if p.birth_date.is_empty() {
            String::new()
        } else {
            format!(", born {}", p.birth_date)
        },
        if p.sex.is_empty() {
            String::new()
        } else {
            format!(", sex {}", p.sex)
        },
        h.cycles.len()
    );
    let organs: Vec<&String> = h.cumulative.keys().collect();
    let _ = write!(
        r,
        "  {:<3} {:<19} {:>8} {:<12}",
        "#", "injection", "GBq", "status"
    );
    for o in &organs {
        let _ = write!(r, " {:>22}", format!("{o} Gy (BED)"));
    }
    let _ = writeln!(r);
    for (i, c) in h.cycles.iter().enumerate() {
        let _ = write!(
            r,
            "  {:<3} {:<19} {:>8.2} {:<12}",
            i + 1,
            c.injection_datetime,
            c.injected_activity_mbq / 1000.0,
            c.status
        );
        for o in &organs {
            let cell = match c.organs.get(*o) {
                Some(x) => match x.bed_gy {
                    Some(b) => format!("{:.2} ({:.2})", x.mean_dose_gy, b),
                    None => format!("{:.2}", x.mean_dose_gy),
                },
                None => "-".into(),
            };
            let _ = write!(r, " {cell:>22}");
        }
        let _ = writeln!(r);
    }
    let _ = write!(r, "  {:<45}", "cumulative (+- SD)");
    for o in &organs {
        let c = &h.cumulative[*o];
        let cell = match (c.bed_gy, c.bed_gy_sd) {
            (Some(b), Some(s)) => {
                format!("{:.1}+-{:.1} ({:.1}+-{:.1})", c.dose_gy, c.dose_gy_sd, b, s)
            }
            _ => format!("{:.1}+-{:.1}", c.dose_gy, c.dose_gy_sd),
        };
        let _ = write!(r, " {cell:>22}");
    }
    let _ = writeln!(r);
    if !h.allowances.is_empty() {
        let _ = writeln!(
            r,
            "Limits and the next cycle's activity that would reach them:"
        );
        for a in &h.allowances {
            let _ = writeln!(
                r,
                "  {:<13} {:<22} limit {:>5.1} Gy, so far {:>5.1} +- {:.1} Gy: {}",
                a.organ,
                a.quantity,
                a.limit_gy,
                a.cumulative_gy,
                a.cumulative_gy_sd,
                if a.reached {
                    "LIMIT REACHED".to_string()
                } else {
                    format!(
                        "{:.1} Gy left, next cycle at most {:.1} +- {:.1} GBq",
                        a.remaining_gy, a.next_activity_gbq, a.next_activity_gbq_sd
                    )
                }
            );
        }
    }
    for w in &h.warnings {
        let _ = writeln!(r, "  warning: {w}");
    }
    let _ = writeln!(r, "  ({})", h.method);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn organ(d: f64, sd: f64, gbq: f64, bed: Option<(f64, f64, f64)>) -> OrganCycle {
        OrganCycle {
            mean_dose_gy: d,
            mean_dose_gy_sd: sd,
            dose_gy_per_gbq: d / gbq,
            bed_gy: bed.map(|b| b.0),
            bed_gy_sd: bed.map(|b| b.1),
            g_factor: bed.map(|b| b.2),
            alpha_beta_gy: bed.map(|_| 2.6),
            method: "fit_mono_exponential".into(),
        }
    }

    fn cycle(date: &str, gbq: f64, status: &str, kidney: OrganCycle) -> CycleDose {
        CycleDose {
            injection_datetime: date.into(),
            injected_activity_mbq: gbq * 1000.0,
            status: status.into(),
            source: format!("{date}.json"),
            organs: [("kidney_left".to_string(), kidney)].into_iter().collect(),
        }
    }

    fn limits() -> Limits {
        let k = |v: f64| [("kidney_left".to_string(), v)].into_iter().collect();
        Limits {
            dose_gy: k(23.0),
            bed_gy: k(40.0),
            bed_risk_gy: k(28.0),
        }
    }

    fn rec(patient: &PatientIdentity, c: CycleDose) -> Recorded {
        Recorded {
            patient: patient.clone(),
            cycle: c,
            modified: None,
        }
    }

    /// A hand-computed course: two cycles of 7.4 GBq, kidney 4.0 +- 0.4 and
    /// 5.0 +- 0.5 Gy, BED 4.5 +- 0.5 and 5.8 +- 0.6 Gy with G 0.05 each.
    #[test]
    fn sums_and_allowances_by_hand() {
        let p = PatientIdentity::with_id("P1");
        let c1 = cycle(
            "2026-01-05T09:00:00",
            7.4,
            "final",
            organ(4.0, 0.4, 7.4, Some((4.5, 0.5, 0.05))),
        );
        let c2 = cycle(
            "2026-03-02T09:00:00",
            7.4,
            "final",
            organ(5.0, 0.5, 7.4, Some((5.8, 0.6, 0.05))),
        );
        let h = build(&p, vec![rec(&p, c2)], Some(c1), &limits());
        assert_eq!(h.cycles.len(), 2);
        assert_eq!(h.cycles[0].injection_datetime, "2026-01-05T09:00:00");
        let k = &h.cumulative["kidney_left"];
        assert!((k.dose_gy - 9.0).abs() < 1e-12 && (k.dose_gy_sd - 0.9).abs() < 1e-12);
        assert!((k.bed_gy.unwrap() - 10.3).abs() < 1e-12);
        assert!((k.bed_gy_sd.unwrap() - 1.1).abs() < 1e-12);
        // Dose per GBq: mean of 4/7.4 and 5/7.4 = 0.608108; measurement 10 %
        // relative; spread: SD of (0.540541, 0.675676) = 0.095555.
        let d = 4.5 / 7.4;
        assert!((k.dose_gy_per_gbq - d).abs() < 1e-12);
        let spread = (2.0 * (0.5 / 7.4f64).powi(2)).sqrt();
        let want_sd = ((0.1 * d).powi(2) + spread.powi(2)).sqrt();
        assert!((k.dose_gy_per_gbq_sd - want_sd).abs() < 1e-12);
        // Absorbed dose: 14 Gy left -> 14 / 0.608108 = 23.022 GBq.
        let a = &h.allowances[0];
        assert_eq!(a.quantity, "absorbed dose");
        assert!((a.remaining_gy - 14.0).abs() < 1e-12);
        assert!(
            (a.next_activity_gbq - 14.0 / d).abs() < 1e-9,
            "{}",
            a.next_activity_gbq
        );
        let sd = ((0.9 / d).powi(2) + (14.0 / d / d * want_sd).powi(2)).sqrt();
        assert!((a.next_activity_gbq_sd - sd).abs() < 1e-9);
        // BED 40: 29.7 Gy left; x + 0.05 x^2 / 2.6 = 29.7 -> x = 19.1905...
        let b = &h.allowances[1];
        assert_eq!(b.quantity, "BED");
        let k2 = 0.05 / 2.6;
        let x = (-1.0 + (1.0 + 4.0 * k2 * 29.7f64).sqrt()) / (2.0 * k2);
        assert!((x + k2 * x * x - 29.7).abs() < 1e-9);
        assert!((b.next_activity_gbq - x / d).abs() < 1e-9);
        // With risk factors: 28 - 10.3 = 17.7 Gy left.
        let c = &h.allowances[2];
        assert!((c.remaining_gy - 17.7).abs() < 1e-12 && !c.reached);
        assert!(c.next_activity_gbq < b.next_activity_gbq);
    }

    #[test]
    fn a_reached_limit_allows_nothing() {
        let p = PatientIdentity::with_id("P1");
        let c = cycle(
            "2026-01-05T09:00:00",
            7.4,
            "final",
            organ(24.0, 2.0, 7.4, None),
        );
        let h = build(&p, vec![], Some(c), &limits());
        assert_eq!(h.allowances.len(), 1, "no BED: only the dose limit");
        let a = &h.allowances[0];
        assert!(a.reached && a.next_activity_gbq == 0.0 && a.remaining_gy < 0.0);
        assert!(text(&h).contains("LIMIT REACHED"));
    }

    #[test]
    fn a_cycle_counts_once_and_another_patient_not_at_all() {
        let p = PatientIdentity {
            id: "P1".into(),
            issuer: "HOSP".into(),
            birth_date: "19580312".into(),
            sex: "F".into(),
        };
        let date = "2026-01-05T09:00:00";
        let now = cycle(date, 7.4, "final", organ(4.0, 0.4, 7.4, None));
        // An older result of the same cycle, and a cycle of someone else under
        // the same ID.
        let old = cycle(date, 7.4, "final", organ(3.0, 0.3, 7.4, None));
        let mut other = p.clone();
        other.birth_date = "19700101".into();
        let theirs = cycle(
            "2026-03-02T09:00:00",
            7.4,
            "final",
            organ(9.0, 0.9, 7.4, None),
        );
        let stranger = PatientIdentity::with_id("P2");
        let h = build(
            &p,
            vec![
                rec(&p, old),
                rec(&other, theirs),
                rec(
                    &stranger,
                    cycle(
                        "2026-05-02T09:00:00",
                        7.4,
                        "final",
                        organ(9.0, 0.9, 7.4, None),
                    ),
                ),
            ],
            Some(now),
            &limits(),
        );
        assert_eq!(h.cycles.len(), 1);
        assert_eq!(h.cumulative["kidney_left"].dose_gy, 4.0);
        let w = h.warnings.join("\n");
        assert!(
            !w.contains("not counted twice"),
            "a recomputation replaces silently: {w}"
        );
        assert!(w.contains("birth date '19700101'"), "{w}");
        assert!(!w.contains("P2"), "another ID is simply someone else: {w}");
    }

    #[test]
    fn of_two_files_of_one_cycle_the_better_status_counts_whatever_the_order() {
        let p = PatientIdentity::with_id("P1");
        let date = "2026-01-05T09:00:00";
        let partial = cycle(date, 7.4, "partial", organ(3.0, 0.9, 7.4, None));
        let fin = cycle(date, 7.4, "final", organ(4.0, 0.4, 7.4, None));
        for order in [[0, 1], [1, 0]] {
            let both = [partial.clone(), fin.clone()];
            let recs = order.iter().map(|&i| rec(&p, both[i].clone())).collect();
            let h = build(&p, recs, None, &limits());
            assert_eq!(h.cycles.len(), 1);
            assert_eq!(h.cycles[0].status, "final");
            assert_eq!(h.cumulative["kidney_left"].dose_gy, 4.0);
            assert!(h.warnings.iter().any(|w| w.contains("not counted twice")));
        }
    }

    #[test]
    fn cycles_without_a_patient_id_are_never_added_up() {
        let p = PatientIdentity::with_id("  ");
        let a = cycle(
            "2026-01-05T09:00:00",
            7.4,
            "final",
            organ(4.0, 0.4, 7.4, None),
        );
        let b = cycle(
            "2026-03-02T09:00:00",
            7.4,
            "final",
            organ(5.0, 0.5, 7.4, None),
        );
        let h = build(&p, vec![rec(&p, b)], Some(a), &limits());
        assert_eq!(h.cycles.len(), 1);
        assert_eq!(h.cumulative["kidney_left"].dose_gy, 4.0);
        assert!(h.warnings[0].contains("no Patient ID"), "{:?}", h.warnings);
        let e = for_patient(Path::new("."), 1, "", None, &limits()).unwrap_err();
        assert!(e.contains("empty Patient ID"), "{e}");
    }

    #[test]
    fn dose_for_bed_solves_the_quadratic_and_tends_to_the_dose_as_g_vanishes() {
        let (x, d) = dose_for_bed(30.0, 0.08, 2.6);
        assert!((x + 0.08 / 2.6 * x * x - 30.0).abs() < 1e-10);
        assert!((d - 1.0 / (1.0 + 2.0 * 0.08 / 2.6 * x)).abs() < 1e-12);
        let (x0, d0) = dose_for_bed(30.0, 0.0, 2.6);
        assert!((x0 - 30.0).abs() < 1e-12 && (d0 - 1.0).abs() < 1e-12);
        assert_eq!(dose_for_bed(-1.0, 0.05, 2.6), (0.0, 0.0));
    }
}
