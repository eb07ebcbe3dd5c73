//! The appliance's [`Processor`]: assembles a cycle's series into a study and runs
//! [`crate::pipeline`] on it, exactly as `organdose run` does.

use super::daemon::{Job, Processor};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::pipeline::{memory_need_mb, run_study, MaskSource};
use crate::study::{assemble, Study};
use std::path::PathBuf;

/// Where a cycle's organ masks come from.
#[derive(Debug, Clone)]
pub enum Masks {
    /// Phantom truth under `<root>/<patient_id>/truth` (demo and tests).
    TruthRoot(PathBuf),
    /// No mask source configured: every job fails with this reason.
    Missing(String),
}

pub struct StudyProcessor {
    pub cfg: Config,
    pub masks: Masks,
}

impl StudyProcessor {
    fn study(job: &Job) -> Result<Study> {
        assemble(job.cycle.series.clone())
    }

    fn mask_source(&self, study: &Study) -> Result<MaskSource> {
        match &self.masks {
            Masks::TruthRoot(root) => Ok(MaskSource::Truth(
                root.join(&study.patient_id).join("truth"),
            )),
            Masks::Missing(why) => Err(Error::input(why.clone())),
        }
    }
}

impl Processor for StudyProcessor {
    fn memory_need_mb(&self, job: &Job) -> f64 {
        Self::study(job).map(|s| memory_need_mb(&s)).unwrap_or(0.0)
    }

    fn process(&self, job: &Job, progress: &dyn Fn(&str, f64)) -> Result<String> {
        let study = Self::study(job)?;
        let source = self.mask_source(&study)?;
        let summary = run_study(
            &study,
            &source,
            &job.out_dir,
            &self.cfg,
            &job.summary_status,
            progress,
        )?;
        let kidneys: Vec<String> = summary
            .organs
            .iter()
            .filter(|(n, _)| n.starts_with("kidney"))
            .map(|(n, o)| format!("{n} {:.2} Gy", o.mean_dose_gy))
            .collect();
        Ok(kidneys.join(", "))
    }
}
