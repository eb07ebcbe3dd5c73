//! The appliance's [`Processor`]: assembles a cycle's series into a study and runs
//! [`crate::pipeline`] on it, exactly as `organdose run` does. The outputs are
//! written to a staging folder and swapped in whole ([`super::swap`]).

use super::daemon::{Job, JobOutput, Processor};
use super::swap;
use crate::config::Config;
use crate::dosimetry::history;
use crate::error::{Error, Result};
use crate::pipeline::{memory_need_mb, run_study_corrected, MaskSource};
use crate::study::{assemble, Study};
use std::path::{Path, PathBuf};

/// Where a cycle's organ masks come from.
#[derive(Debug, Clone)]
pub enum Masks {
    /// Phantom truth under `<root>/<patient_id>/truth` (demo and tests).
    TruthRoot(PathBuf),
    /// The segmentation network in this model folder.
    Network(PathBuf),
}

pub struct StudyProcessor {
    pub cfg: Config,
    pub masks: Masks,
    /// Where each committed result's DICOM objects are queued to be sent (None:
    /// not sent).
    pub outbox: Option<std::sync::Arc<crate::net::outbox::Outbox>>,
}

impl StudyProcessor {
    fn study(job: &Job) -> Result<Study> {
        let mut study = assemble(job.cycle.series.clone())?;
        study.notes.extend(job.cycle.notes.iter().cloned());
        Ok(study)
    }

    fn mask_source(&self, study: &Study) -> Result<MaskSource> {
        match &self.masks {
            Masks::TruthRoot(root) => {
                let dir = truth_dir(root, &study.patient_id)?;
                let cycle = course_cycle_truth(&dir, &study.injection.datetime);
                Ok(MaskSource::Truth(cycle.unwrap_or(dir)))
            }
            Masks::Network(dir) => Ok(MaskSource::Network {
                model_dir: dir.clone(),
            }),
        }
    }
}

/// `<root>/<patient_id>/truth`; a Patient ID that is not one plain folder name
/// (`../p/PH4711-001`, `/etc`) is refused, not followed (issue 42, finding 9).
fn truth_dir(root: &std::path::Path, patient_id: &str) -> Result<PathBuf> {
    let one = std::path::Path::new(patient_id).components().count() == 1;
    if !(one && crate::study::is_confined(patient_id)) {
        return Err(crate::error::Error::input(format!(
            "Patient ID '{patient_id}' is not a plain folder name: not looked up under the truth root {}",
            root.display()
        )));
    }
    Ok(root.join(patient_id).join("truth"))
}

/// A phantom course (`organdose phantom --cycles N`) keeps each cycle's truth
/// in `<root>/<id>/cycle_<k>/truth` instead of `<root>/<id>/truth` (`single`):
/// the one whose truth.json names this injection (to the minute).
fn course_cycle_truth(
    single: &Path,
    injection: &organdose_core::time::DateTime,
) -> Option<PathBuf> {
    if single.is_dir() {
        return None;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(single.parent()?)
        .ok()?
        .flatten()
        .map(|e| e.path().join("truth"))
        .collect();
    dirs.sort();
    dirs.into_iter().find(|t| {
        std::fs::read_to_string(t.join("truth.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| {
                organdose_core::time::DateTime::parse_iso(v["injection_datetime"].as_str()?)
            })
            .is_some_and(|d| d.hours_since(injection).abs() < 1.0 / 60.0)
    })
}

/// The cycle's history, carried into the new result: `history/` of the
/// current result is kept whole, and when corrected contours are applied
/// (`archive`) the current result itself goes to
/// `history/<YYYYMMDDTHHMMSSZ>_<its status>/`, so a reviewed result never loses
/// the one it replaced. Copies, not moves: until the swap the old folder stays
/// whole, and a failure here leaves it as it was.
fn keep_history(out_dir: &Path, staged: &Path, archive: bool) -> Result<()> {
    let old_history = out_dir.join("history");
    let new_history = staged.join("history");
    if old_history.is_dir() {
        copy_tree(&old_history, &new_history)?;
    }
    let old_summary = out_dir.join("dose_summary.json");
    if !(archive && old_summary.is_file()) {
        return Ok(());
    }
    let status = std::fs::read_to_string(&old_summary)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("status")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<String>();
    let (date, time) = crate::report::dicom_out::common::now_da_tm();
    let mut dest = new_history.join(format!("{date}T{time}Z_{status}"));
    let mut n = 1;
    while dest.exists() {
        n += 1;
        dest = new_history.join(format!("{date}T{time}Z_{status}_{n}"));
    }
    let rd = std::fs::read_dir(out_dir).map_err(|e| Error::io(out_dir, e))?;
    std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(out_dir, e))?;
        if e.file_name() == "history" {
            continue;
        }
        let to = dest.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), &to).map_err(|er| Error::io(&to, er))?;
        }
    }
    Ok(())
}

/// The folder of every cycle's result (`OUT`, the parent of `OUT/<cycle id>`).
fn results_root(cycle_out: &Path) -> PathBuf {
    cycle_out
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `OUT/patients/<ID>[_<issuer>].json` and `.txt`: the patient's treatment
/// history from every result in `OUT` (written whole each time, so a
/// recomputed or corrected cycle is counted once, as it is now).
pub fn write_patient_history(
    root: &Path,
    patient: &crate::patient::PatientIdentity,
    cfg: &Config,
) -> Result<PathBuf> {
    let issuer = (!patient.issuer.trim().is_empty()).then_some(patient.issuer.as_str());
    let h = history::for_patient(
        root,
        1,
        &patient.id,
        issuer,
        &history::Limits::of(&cfg.dosimetry),
    )
    .map_err(Error::internal)?;
    let dir = root.join("patients");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut name = safe_name(&patient.id);
    if let Some(i) = issuer {
        name.push('_');
        name.push_str(&safe_name(i));
    }
    let json = serde_json::to_string_pretty(&h)
        .map_err(|e| Error::library(crate::error::FaultKind::Internal, "history json", e))?;
    let path = dir.join(format!("{name}.json"));
    crate::io::write_bytes_atomically(&path, json.as_bytes())?;
    crate::io::write_bytes_atomically(
        &dir.join(format!("{name}.txt")),
        history::text(&h).as_bytes(),
    )?;
    Ok(path)
}

/// A file-name-safe form of an ID (as cycle ids are made).
fn safe_name(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for e in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let e = e.map_err(|e| Error::io(from, e))?;
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), &dst).map_err(|er| Error::io(&dst, er))?;
        }
    }
    Ok(())
}

fn dir_size_mb(dir: &std::path::Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len() as f64 / 1e6)
                .sum()
        })
        .unwrap_or(0.0)
}

/// Memory of the network in `model_dir` (MB): its weights plus activations
/// (the seg bench peaks at 0.63 GB for a ResNet-50 at 512 px,
/// docs/log/bench.md, about 0.3 GB above its weights). With
/// [`memory_need_mb`] of the study, what a job is admitted by.
pub fn network_need_mb(model_dir: &Path) -> f64 {
    dir_size_mb(model_dir) + 300.0
}

impl Processor for StudyProcessor {
    fn memory_need_mb(&self, job: &Job) -> f64 {
        let segmenting = matches!(self.masks, Masks::Network(_));
        let volumes = Self::study(job)
            .map(|s| memory_need_mb(&s, segmenting))
            .unwrap_or(0.0);
        let network = match &self.masks {
            Masks::Network(dir) => network_need_mb(dir),
            Masks::TruthRoot(_) => 0.0,
        };
        volumes + network
    }

    fn process(&self, job: &Job, progress: &dyn Fn(&str, f64)) -> Result<JobOutput> {
        let study = Self::study(job)?;
        let source = self.mask_source(&study)?;
        let staged = swap::staging(&job.out_dir)?;
        // The patient's other cycles: the results beside this one.
        let root = results_root(&job.out_dir);
        let earlier = history::read_dir(&root, 1);
        for (p, why) in &earlier.unreadable {
            tracing::warn!("{}: not read for the treatment history: {why}", p.display());
        }
        let summary = run_study_corrected(
            &study,
            &source,
            &job.cycle.corrections,
            &earlier,
            &staged,
            &self.cfg,
            &job.summary_status,
            progress,
        )
        .and_then(|s| {
            keep_history(&job.out_dir, &staged, !job.cycle.corrections.is_empty())?;
            Ok(s)
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&staged);
        })?;
        swap::commit(&staged, &job.out_dir)?;
        // Before the job is recorded done: a kill before this runs the job
        // again, so the patient's history file never stays behind its results.
        if !summary.patient.id.trim().is_empty() {
            write_patient_history(&root, &summary.patient, &self.cfg)?;
        }
        if let Some(outbox) = &self.outbox {
            // Queued once the result is in place; a failure to queue (a full OUT)
            // is an environment fault: the job runs again and queues again.
            outbox.enqueue(&job.cycle.id, &job.out_dir.join("dicom"))?;
        }
        let kidneys: Vec<String> = summary
            .organs
            .iter()
            .filter(|(n, _)| n.starts_with("kidney"))
            .map(|(n, o)| format!("{n} {:.2} Gy", o.mean_dose_gy))
            .collect();
        // Why a result is held back, on the status line and in `organdose
        // status`: the first reason, and how many more the report lists.
        let mut message = kidneys.join(", ");
        if summary.status == "needs_review" {
            let why: Vec<&str> = summary
                .warnings
                .iter()
                .filter_map(|w| w.strip_prefix("needs review: "))
                .collect();
            if let Some(first) = why.first() {
                message.push_str(&format!("; needs review: {first}"));
                if why.len() > 1 {
                    message.push_str(&format!(" (+{} more in the report)", why.len() - 1));
                }
            }
        }
        if let Some(r) = &summary.reviewed {
            message.push_str(&format!(
                "; reviewed by {}{} ({}: {})",
                r.by,
                if r.at.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", r.at)
                },
                r.object,
                r.organs.join(", ")
            ));
        }
        Ok(JobOutput {
            summary_status: summary.status.clone(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 42, finding 9: a Patient ID of `../p/PH4711-001` was followed out
    /// of the truth root.
    #[test]
    fn a_patient_id_that_is_a_path_is_not_followed() {
        let root = std::path::Path::new("/data/truth-root");
        assert_eq!(
            truth_dir(root, "PH4711-001").unwrap(),
            root.join("PH4711-001/truth")
        );
        for bad in ["../p/PH4711-001", "..", "/etc", "a/b", "", ".", "./x"] {
            let e = truth_dir(root, bad).unwrap_err().to_string();
            assert!(e.contains("not a plain folder name"), "{bad}: {e}");
        }
    }
}
