//! Loads a study laid out as NIfTI files (the phantom generator's layout) into a
//! [`DoseInput`]. This is the one place that knows the layout; the DICOM study loader
//! replaces it for console exports.
//!
//! ```text
//! STUDY_DIR/study.json   {"patient_id", "nuclide": "Lu-177", "injected_activity_mbq",
//!                         "injection_datetime", "diagnostic_ct": "ct.nii.gz",
//!                         "timepoints": [{"t_h", "acquisition_datetime",
//!                                         "ldct": "tp1_ldct.nii.gz", "spect": "tp1_spect.nii.gz"}]}
//! STUDY_DIR/truth/labels_ct.nii.gz, STUDY_DIR/truth/labels_ldct_tp<k>.nii.gz (k = 1..n)
//! ```

use super::pipeline::{DoseInput, TimePointInput};
use super::Nuclide;
use crate::error::{Error, Result};
use crate::io::nifti::{read_nifti, read_nifti_labels};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
struct StudyJson {
    patient_id: String,
    nuclide: String,
    injected_activity_mbq: f64,
    timepoints: Vec<TimePointJson>,
}

#[derive(Debug, Deserialize)]
struct TimePointJson {
    t_h: f64,
    spect: String,
}

/// Where the organ labels come from.
#[derive(Debug, Clone)]
pub enum LabelSource {
    /// The phantom's truth labels under `STUDY_DIR/truth/`.
    Truth,
    /// A label map on the diagnostic CT and, optionally, one per time point on its
    /// low-dose CT (in time-point order). Without them the diagnostic-CT labels are
    /// carried onto every SPECT directly (assumes the SPECT is registered to the
    /// diagnostic CT).
    Files {
        diag_ct: PathBuf,
        ldct: Vec<PathBuf>,
    },
}

/// Reads the study; returns the input and notes for the summary's warnings.
pub fn load_nifti_study(dir: &Path, labels: &LabelSource) -> Result<(DoseInput, Vec<String>)> {
    let sj = dir.join("study.json");
    let text = std::fs::read_to_string(&sj).map_err(|e| Error::io(&sj, e))?;
    let study: StudyJson =
        serde_json::from_str(&text).map_err(|e| Error::input(format!("{}: {e}", sj.display())))?;
    let nuclide = Nuclide::from_name(&study.nuclide)?;
    if study.timepoints.is_empty() {
        return Err(Error::input(format!("{}: no time points", sj.display())));
    }
    let mut notes = Vec::new();
    let (diag, ldct): (PathBuf, Vec<Option<PathBuf>>) = match labels {
        LabelSource::Truth => (
            dir.join("truth").join("labels_ct.nii.gz"),
            (1..=study.timepoints.len())
                .map(|k| Some(dir.join("truth").join(format!("labels_ldct_tp{k}.nii.gz"))))
                .collect(),
        ),
        LabelSource::Files { diag_ct, ldct } => {
            if !ldct.is_empty() && ldct.len() != study.timepoints.len() {
                return Err(Error::input(format!(
                    "{} low-dose-CT label maps for {} time points",
                    ldct.len(),
                    study.timepoints.len()
                )));
            }
            if ldct.is_empty() {
                notes.push("no low-dose-CT masks given: the diagnostic-CT mask is carried onto every SPECT (registration to the diagnostic CT assumed)".into());
            }
            (
                diag_ct.clone(),
                (0..study.timepoints.len())
                    .map(|k| ldct.get(k).cloned())
                    .collect(),
            )
        }
    };
    let diag_ct_labels = read_nifti_labels(&diag)?;
    let mut timepoints = Vec::new();
    for (tp, lab) in study.timepoints.iter().zip(ldct) {
        let spect = read_nifti(&dir.join(&tp.spect))?;
        let labels = match lab {
            Some(p) => read_nifti_labels(&p)?,
            None => diag_ct_labels.clone(),
        };
        timepoints.push(TimePointInput {
            t_h: tp.t_h,
            spect_bq_per_ml: spect,
            labels,
        });
    }
    Ok((
        DoseInput {
            patient_id: study.patient_id,
            diag_ct_labels,
            timepoints,
            nuclide,
            injected_activity_mbq: study.injected_activity_mbq,
        },
        notes,
    ))
}
