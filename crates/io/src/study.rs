//! A patient's therapy cycle as found on disk: the diagnostic CT, and per time
//! point a quantitative SPECT (and the low-dose CT acquired with it), with the
//! hours since injection.
//!
//! Two layouts are understood:
//! - DICOM of any nesting (a console export): series are classified from their
//!   tags. An NM series in Bq/mL is a SPECT time point; a CT sharing its
//!   FrameOfReferenceUID is that time point's low-dose CT (same SPECT/CT session);
//!   any other CT is a diagnostic CT (one with ContrastBolusAgent preferred).
//!   Injection time and activity come from the RadiopharmaceuticalInformationSequence.
//! - NIfTI with a `study.json` beside it (NIfTI has no such headers), as
//!   `organdose phantom --format nifti` writes it.

use crate::classify::{self, Role};
use crate::dicom::{self, DicomHeader, DicomSeries};
use crate::error::{Error, FaultKind, Result};
use crate::nifti;
use crate::time::DateTime;
use crate::volume::Volume;
use crate::IngestConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a volume comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Dicom(DicomSeries),
    Nifti(PathBuf),
}

impl Source {
    pub fn read(&self, cfg: &IngestConfig) -> Result<Volume<f32>> {
        // One line per volume read (debug): how a study's reads are counted.
        tracing::debug!("reading the pixels of {}", self.describe());
        match self {
            Source::Dicom(s) => s.read(cfg),
            Source::Nifti(p) => nifti::read_nifti(p),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Dicom(s) => {
                let d = s
                    .files
                    .first()
                    .map(|h| h.series_description.clone())
                    .unwrap_or_default();
                format!("DICOM series {} ({d})", s.uid)
            }
            Source::Nifti(p) => p.display().to_string(),
        }
    }
}

/// Injection of the therapy cycle.
#[derive(Debug, Clone, Serialize)]
pub struct Injection {
    pub datetime: DateTime,
    pub activity_mbq: f64,
    pub nuclide: String,
}

#[derive(Debug, Clone)]
pub struct TimePoint {
    /// Hours from injection to the SPECT acquisition.
    pub t_h: f64,
    pub acquisition: DateTime,
    pub spect: Source,
    /// Low-dose CT of the same session, when there is one.
    pub ldct: Option<Source>,
}

#[derive(Debug, Clone)]
pub struct Study {
    pub patient_id: String,
    /// The ID with issuer, birth date and sex, as the headers (or study.json) give them.
    pub patient: crate::patient::PatientIdentity,
    pub injection: Injection,
    pub diagnostic_ct: Source,
    /// Sorted by time.
    pub timepoints: Vec<TimePoint>,
    /// Things a physicist should know (a fallback was used, a series was skipped).
    pub notes: Vec<String>,
}

/// `study.json` of the NIfTI layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyJson {
    pub patient_id: String,
    pub nuclide: String,
    pub injected_activity_mbq: f64,
    pub injection_datetime: String,
    pub diagnostic_ct: String,
    pub timepoints: Vec<StudyJsonTimePoint>,
    /// IssuerOfPatientID's counterpart: who assigned `patient_id` (with it, the
    /// patient across treatment cycles). Optional: empty when not given and
    /// then not written, so older files read as before.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer_of_patient_id: String,
    /// Birth date as DICOM DA (YYYYMMDD); optional like the issuer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_birth_date: String,
    /// "M", "F" or "O" as DICOM PatientSex; optional like the issuer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_sex: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyJsonTimePoint {
    pub t_h: f64,
    pub acquisition_datetime: String,
    pub ldct: Option<String>,
    pub spect: String,
}

/// Loads a study folder in either layout.
pub fn load_study(dir: &Path) -> Result<Study> {
    let sj = dir.join("study.json");
    if sj.is_file() {
        return load_nifti_study(dir, &sj);
    }
    let scan = dicom::scan(dir)?;
    if scan.series.is_empty() {
        return Err(Error::input(format!(
            "{}: no DICOM series and no study.json",
            dir.display()
        )));
    }
    assemble(scan.series)
}

/// Highest injected activity believed, MBq: 100 GBq is over ten times any
/// 177Lu or 90Y therapy activity (177Lu-DOTATATE 7.4 GBq per cycle); a larger
/// number is a unit error (Bq for MBq) or a broken file.
pub(crate) const MAX_ACTIVITY_MBQ: f64 = 1e5;

/// How far a time point's `t_h` may differ from what its date-times say, hours:
/// six minutes covers rounding to the minute on either side.
pub(crate) const T_H_TOLERANCE_H: f64 = 0.1;

/// ISO 8601 date-time with an optional zone ("Z", "+05:00", "-0330", "+05"):
/// the naive date-time and the zone's offset east of UTC in seconds (None when
/// the text has no zone).
pub(crate) fn parse_iso_zoned(text: &str) -> Option<(DateTime, Option<f64>)> {
    let t = text.trim();
    if let Some(naive) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
        return DateTime::parse_iso(naive).map(|d| (d, Some(0.0)));
    }
    // A zone sign can only follow the time part (the date has '-' of its own).
    let time_start = t.find(['T', ' ']).map(|i| i + 1).unwrap_or(t.len());
    let Some(pos) = t[time_start..].rfind(['+', '-']).map(|i| time_start + i) else {
        return DateTime::parse_iso(t).map(|d| (d, None));
    };
    let (naive, zone) = t.split_at(pos);
    let sign = if zone.starts_with('-') { -1.0 } else { 1.0 };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(digits.len() == 2 || digits.len() == 4) {
        return None;
    }
    let h: f64 = digits.get(0..2)?.parse().ok()?;
    let m: f64 = digits.get(2..4).unwrap_or("0").parse().ok()?;
    if h > 14.0 || m >= 60.0 {
        return None;
    }
    DateTime::parse_iso(naive).map(|d| (d, Some(sign * (h * 3600.0 + m * 60.0))))
}

fn load_nifti_study(dir: &Path, sj: &Path) -> Result<Study> {
    let text = std::fs::read_to_string(sj).map_err(|e| Error::io(sj, e))?;
    let s: StudyJson = serde_json::from_str(&text)
        .map_err(|e| Error::library(FaultKind::Input, format!("{}", sj.display()), e))?;
    let a = s.injected_activity_mbq;
    if !(a.is_finite() && a > 0.0 && a <= MAX_ACTIVITY_MBQ) {
        return Err(Error::input(format!(
            "{}: injected_activity_mbq {a} is not a plausible activity (more than 0 and at most {MAX_ACTIVITY_MBQ} MBq)",
            sj.display()
        )));
    }
    // Date-times with a zone are converted to UTC; zone-less ones are taken as
    // they are (the console's local time). Mixing the two would make every
    // difference off by the zone, so it is refused.
    let mut zoned: Vec<bool> = Vec::new();
    let mut parse = |what: &str, text: &str| -> Result<DateTime> {
        let (d, off) = parse_iso_zoned(text).ok_or_else(|| {
            Error::input(format!(
                "{}: {what} '{text}' is not ISO 8601 (YYYY-MM-DDTHH:MM:SS, optionally with Z or +HH:MM)",
                sj.display()
            ))
        })?;
        zoned.push(off.is_some());
        Ok(d.plus_hours(-off.unwrap_or(0.0) / 3600.0))
    };
    let injection = parse("injection_datetime", &s.injection_datetime)?;
    let mut acqs = Vec::new();
    for tp in &s.timepoints {
        acqs.push(parse("acquisition_datetime", &tp.acquisition_datetime)?);
    }
    if zoned.iter().any(|z| *z) && !zoned.iter().all(|z| *z) {
        return Err(Error::input(format!(
            "{}: some date-times name a time zone and some do not: give all of them a zone, or none",
            sj.display()
        )));
    }
    let mut tps = Vec::new();
    for (tp, acq) in s.timepoints.iter().zip(acqs) {
        let from_dates = acq.hours_since(&injection);
        if !tp.t_h.is_finite() || (tp.t_h - from_dates).abs() > T_H_TOLERANCE_H {
            return Err(Error::input(format!(
                "{}: time point {}: t_h = {} h but its acquisition_datetime is {from_dates:.2} h after the injection",
                sj.display(),
                tp.acquisition_datetime,
                tp.t_h
            )));
        }
        let file = |name: &str| -> Result<Source> {
            let p = inside(dir, name, sj)?;
            if !p.is_file() {
                return Err(Error::input(format!(
                    "{}: names {name}, which is missing",
                    sj.display()
                )));
            }
            Ok(Source::Nifti(p))
        };
        tps.push(TimePoint {
            t_h: from_dates,
            acquisition: acq,
            spect: file(&tp.spect)?,
            ldct: match &tp.ldct {
                Some(n) => Some(file(n)?),
                None => None,
            },
        });
    }
    finish(Study {
        patient: crate::patient::PatientIdentity {
            id: s.patient_id.trim().to_string(),
            issuer: s.issuer_of_patient_id.trim().to_string(),
            birth_date: s.patient_birth_date.trim().to_string(),
            sex: s.patient_sex.trim().to_string(),
        },
        patient_id: s.patient_id,
        injection: Injection {
            datetime: injection,
            activity_mbq: s.injected_activity_mbq,
            nuclide: s.nuclide,
        },
        diagnostic_ct: Source::Nifti(inside(dir, &s.diagnostic_ct, sj)?),
        timepoints: tps,
        notes: Vec::new(),
    })
}

/// True for a name that stays where it is joined: relative, made of plain
/// components only (no `..`, no root, no drive).
pub fn is_confined(name: &str) -> bool {
    use std::path::Component;
    let p = Path::new(name);
    !name.is_empty()
        && p.components().any(|c| matches!(c, Component::Normal(_)))
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// `dir/name` for a file `study.json` names; a name that leaves the study
/// folder (`../..`, an absolute path) is refused before anything is opened
/// (issue 42, finding 9).
fn inside(dir: &Path, name: &str, sj: &Path) -> Result<PathBuf> {
    if !is_confined(name) {
        return Err(Error::input(format!(
            "{}: names '{name}', which is not a path inside the study folder (relative, without '..'): not opened",
            sj.display()
        )));
    }
    Ok(dir.join(name))
}

fn finish(mut study: Study) -> Result<Study> {
    study.timepoints.sort_by(|a, b| a.t_h.total_cmp(&b.t_h));
    if study.timepoints.is_empty() {
        return Err(Error::input("no SPECT time point found"));
    }
    if let Some(tp) = study.timepoints.iter().find(|t| t.t_h < 0.0) {
        return Err(Error::input(format!(
            "a SPECT was acquired {:.1} h before the injection: check the radiopharmaceutical start time",
            -tp.t_h
        )));
    }
    Ok(study)
}

fn head(s: &DicomSeries) -> Result<&DicomHeader> {
    s.files
        .first()
        .ok_or_else(|| Error::series(&s.uid, "empty series"))
}

/// Sorts DICOM series of one patient and cycle into a study; what each series
/// is comes from [`crate::classify`], as in the appliance.
pub fn assemble(series: Vec<DicomSeries>) -> Result<Study> {
    let mut notes = Vec::new();
    let mut patients = std::collections::BTreeSet::new();
    let mut identity = crate::patient::PatientIdentity::default();
    let mut spects = Vec::new();
    let mut cts = Vec::new();
    for s in series {
        let h = head(&s)?;
        patients.insert(h.patient_id.clone());
        // The first series that gives an attribute gives it; one that gives
        // another value is said (a mix-up the history must not merge over).
        for (have, this, what) in [
            (
                &mut identity.issuer,
                &h.issuer_of_patient_id,
                "issuer of the Patient ID",
            ),
            (
                &mut identity.birth_date,
                &h.patient_birth_date,
                "birth date",
            ),
            (&mut identity.sex, &h.patient_sex, "sex"),
        ] {
            let this = this.trim();
            if have.is_empty() {
                *have = this.to_string();
            } else if !this.is_empty() && this != have.as_str() {
                notes.push(format!(
                    "series {} gives the patient's {what} as '{this}', others as '{have}'",
                    s.uid
                ));
            }
        }
        match classify::role(h) {
            Role::QuantitativeSpect => spects.push(s),
            Role::NotQuantitative { unit } => notes.push(format!(
                "skipped {} series {} ({}): values in {unit}, not Bq/mL (not a quantitative reconstruction)",
                h.modality, s.uid, h.series_description
            )),
            Role::Unusable { why } => {
                return Err(Error::series(&s.uid, format!("{}: {why}", h.path.display())))
            }
            Role::Ct => cts.push(s),
            Role::Unused { modality } => notes.push(format!("skipped {modality} series {}", s.uid)),
        }
    }
    if patients.len() > 1 {
        return Err(Error::input(format!(
            "series of {} patients in one study folder: {:?}",
            patients.len(),
            patients
        )));
    }
    if spects.is_empty() {
        return Err(Error::input(
            "no quantitative SPECT found (Modality NM or PT with Units BQML, or a Real World Value Mapping in Bq/ml)".to_string(),
        ));
    }
    // Injection: every SPECT of a cycle names the same start; differing ones mean
    // two cycles were exported together.
    let mut injection: Option<Injection> = None;
    for s in &spects {
        let h = head(s)?;
        let at = |m: &str| Error::series(&s.uid, format!("{}: {m}", h.path.display()));
        let rp = h.radiopharmaceutical.as_ref().ok_or_else(|| {
            at("no RadiopharmaceuticalInformationSequence (0054,0016): injection time unknown; export the SPECT with its radiopharmaceutical module")
        })?;
        let start = rp.start_datetime.ok_or_else(|| {
            at("no RadiopharmaceuticalStartDateTime (0018,1078) or StartTime (0018,1072): injection time unknown")
        })?;
        let act = rp
            .total_dose_mbq
            .ok_or_else(|| at("no RadionuclideTotalDose (0018,1074): injected activity unknown"))?;
        let this = Injection {
            datetime: start,
            activity_mbq: act,
            nuclide: rp.nuclide.clone().unwrap_or_else(|| "unknown".into()),
        };
        match &injection {
            None => injection = Some(this),
            Some(i) if (i.datetime.hours_since(&this.datetime)).abs() > 1.0 => {
                return Err(Error::input(format!(
                    "SPECT series name two injections ({} and {}): one therapy cycle per folder",
                    i.datetime, this.datetime
                )));
            }
            Some(_) => {}
        }
    }
    let injection = injection.ok_or_else(|| Error::input("no injection found"))?;
    let spect_heads: Vec<&DicomHeader> = spects.iter().map(head).collect::<Result<_>>()?;
    let ct_heads: Vec<&DicomHeader> = cts.iter().map(head).collect::<Result<_>>()?;
    let sessions = classify::pair_sessions(&spect_heads, &ct_heads);
    notes.extend(sessions.notes.iter().cloned());
    let mut tps = Vec::new();
    for (s, ldct) in spects.iter().zip(&sessions.ldct) {
        let h = head(s)?;
        let acq = h.acquisition.ok_or_else(|| {
            Error::series(
                &s.uid,
                format!(
                    "{}: no AcquisitionDateTime (0008,002A), AcquisitionDate/Time, SeriesDate/Time or ContentDate/Time: time point unknown",
                    h.path.display()
                ),
            )
        })?;
        let ldct = ldct.map(|k| cts[k].clone());
        if ldct.is_none() {
            notes.push(format!(
                "SPECT {} has no CT in its frame of reference: the diagnostic-CT masks are used",
                s.uid
            ));
        }
        tps.push(TimePoint {
            t_h: acq.hours_since(&injection.datetime),
            acquisition: acq,
            spect: Source::Dicom(s.clone()),
            ldct: ldct.map(Source::Dicom),
        });
    }
    let candidates: Vec<(&DicomHeader, usize)> = sessions
        .diagnostic
        .iter()
        .map(|&k| (ct_heads[k], cts[k].files.len()))
        .collect();
    let diag = classify::pick_diagnostic(&candidates, Some(&injection.datetime))
        .map(|i| cts[sessions.diagnostic[i]].clone());
    let diagnostic_ct = match diag {
        Some(d) => Source::Dicom(d),
        None => {
            let first = tps
                .iter()
                .min_by(|a, b| a.t_h.total_cmp(&b.t_h))
                .and_then(|t| t.ldct.clone())
                .ok_or_else(|| Error::input("no CT found: organ masks need a CT"))?;
            notes.push(
                "no diagnostic CT: the first time point's low-dose CT is used for masks and masses"
                    .into(),
            );
            first
        }
    };
    let patient_id = patients.into_iter().next().unwrap_or_default();
    identity.id = patient_id.clone();
    finish(Study {
        patient_id,
        patient: identity,
        injection,
        diagnostic_ct,
        timepoints: tps,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::Radiopharmaceutical;

    fn series(
        uid: &str,
        modality: &str,
        for_uid: &str,
        acq: &str,
        extra: impl Fn(&mut DicomHeader),
    ) -> DicomSeries {
        let mut h = DicomHeader {
            modality: modality.into(),
            patient_id: "P1".into(),
            series_uid: uid.into(),
            frame_of_reference_uid: for_uid.into(),
            acquisition: DateTime::parse_iso(acq),
            ..Default::default()
        };
        extra(&mut h);
        DicomSeries {
            uid: uid.into(),
            files: vec![h],
            identity: None,
            unreadable: Vec::new(),
        }
    }

    fn spect(uid: &str, for_uid: &str, acq: &str) -> DicomSeries {
        series(uid, "NM", for_uid, acq, |h| {
            h.units = Some("BQML".into());
            h.radiopharmaceutical = Some(Radiopharmaceutical {
                nuclide: Some("^177^Lutetium".into()),
                radiopharmaceutical: None,
                total_dose_mbq: Some(7400.0),
                start_datetime: DateTime::parse_iso("2026-03-01T08:00:00"),
                half_life_h: None,
            });
        })
    }

    #[test]
    fn classifies_series_and_times_from_tags() {
        let s = vec![
            spect("s24", "F24", "2026-03-02T08:00:00"),
            series("ct24", "CT", "F24", "2026-03-02T07:55:00", |_| {}),
            spect("s0", "F0", "2026-03-01T08:30:00"),
            series("ct0", "CT", "F0", "2026-03-01T08:25:00", |_| {}),
            series("diag", "CT", "FD", "2026-02-20T10:00:00", |h| {
                h.contrast_agent = Some("Iomeron".into())
            }),
            series("counts", "NM", "F0", "2026-03-01T08:30:00", |h| {
                h.units = Some("CNTS".into())
            }),
        ];
        let st = assemble(s).unwrap();
        assert_eq!(st.timepoints.len(), 2);
        assert_eq!(st.timepoints[0].t_h, 0.5);
        assert_eq!(st.timepoints[1].t_h, 24.0);
        assert!(matches!(&st.timepoints[1].ldct, Some(Source::Dicom(c)) if c.uid == "ct24"));
        assert!(matches!(&st.diagnostic_ct, Source::Dicom(c) if c.uid == "diag"));
        assert_eq!(st.injection.activity_mbq, 7400.0);
        assert!(st.notes.iter().any(|n| n.contains("CNTS")));
    }

    #[test]
    fn two_patients_or_no_spect_are_errors() {
        let mut other = spect("s1", "F1", "2026-03-01T09:00:00");
        other.files[0].patient_id = "P2".into();
        let e = assemble(vec![spect("s0", "F0", "2026-03-01T08:30:00"), other]).unwrap_err();
        assert!(e.to_string().contains("2 patients"));
        let e = assemble(vec![series("ct", "CT", "F", "2026-03-01T08:00:00", |_| {})]).unwrap_err();
        assert!(e.to_string().contains("no quantitative SPECT"));
    }

    #[test]
    fn study_json_patient_fields_are_optional() {
        // A file written before the fields existed reads with them empty...
        let old = r#"{"patient_id": "P1", "nuclide": "Lu-177", "injected_activity_mbq": 7400.0,
            "injection_datetime": "2026-03-01T08:00:00", "diagnostic_ct": "ct.nii.gz",
            "timepoints": []}"#;
        let s: StudyJson = serde_json::from_str(old).unwrap();
        assert!(s.issuer_of_patient_id.is_empty() && s.patient_birth_date.is_empty());
        // ...and empty ones are not written, so such a file round-trips unchanged.
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("issuer") && !text.contains("patient_sex"));
        let with = StudyJson {
            issuer_of_patient_id: "ORGANDOSE-PHANTOM".into(),
            patient_birth_date: "19550412".into(),
            patient_sex: "F".into(),
            ..s
        };
        let back: StudyJson = serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back.issuer_of_patient_id, "ORGANDOSE-PHANTOM");
        assert_eq!(back.patient_birth_date, "19550412");
        assert_eq!(back.patient_sex, "F");
    }

    #[test]
    fn iso_zones_are_read_and_applied() {
        let (d, off) = parse_iso_zoned("2026-03-01T08:00:00+05:00").unwrap();
        assert_eq!(off, Some(18000.0));
        assert_eq!(d, DateTime::parse_iso("2026-03-01T08:00:00").unwrap());
        assert_eq!(
            parse_iso_zoned("2026-03-01T08:00:00Z").unwrap().1,
            Some(0.0)
        );
        assert_eq!(
            parse_iso_zoned("2026-03-01T08:00:00-0330").unwrap().1,
            Some(-12600.0)
        );
        assert_eq!(parse_iso_zoned("2026-03-01T08:00:00").unwrap().1, None);
        assert!(parse_iso_zoned("2026-03-01T08:00:00+5x").is_none());
    }
}
