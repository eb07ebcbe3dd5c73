//! The cycle's results as DICOM objects consoles, TPSs and PACS open, in
//! `OUT/dicom/`:
//!
//! - `RTSTRUCT_CT.dcm`, `SEG_CT.dcm`: the organ masks on the diagnostic CT;
//! - `RTSTRUCT_TP<k>.dcm`, `SEG_TP<k>.dcm`: the masks on time point k's low-dose CT;
//! - `RTDOSE.dcm`: the voxel dose map (Gy) on the reference SPECT;
//! - `REPORT_PDF.dcm`: report.pdf as Encapsulated PDF.
//!
//! Each object is a new series (new UIDs) in the study of the images it derives
//! from, with that study's patient and study attributes copied unchanged.

pub mod common;
pub mod contours;
pub mod pdf;
pub mod rtdose;
pub mod rtstruct;
pub mod seg;
pub mod source;

use crate::dosimetry::pipeline::{DoseInput, DoseSummary};
use crate::error::Result;
use crate::study::{Source, Study};
use crate::volume::Volume;
use common::NewSeries;
use rayon::prelude::*;
use source::SourceSeries;
use std::path::{Path, PathBuf};

/// Who made the masks: goes into ROI/segment algorithm attributes.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// (name, version) of the algorithm for automatic masks; None for masks a person
    /// (or a phantom's truth) gave.
    pub algorithm: Option<(String, String)>,
    pub description: String,
}

impl Provenance {
    pub(crate) fn rt_algorithm(&self) -> &'static str {
        if self.algorithm.is_some() {
            "AUTOMATIC"
        } else {
            "MANUAL"
        }
    }

    pub(crate) fn seg_algorithm(&self) -> &'static str {
        self.rt_algorithm()
    }
}

/// A label map as each slice of a CT series sees it.
pub struct MaskSlices<'a> {
    pub src: &'a SourceSeries,
    /// Per instance of `src` (same order): labels at its pixel centres, row-major.
    pub per_instance: Vec<Vec<u8>>,
}

impl<'a> MaskSlices<'a> {
    pub fn new(src: &'a SourceSeries, labels: &Volume<u8>) -> Self {
        MaskSlices {
            src,
            per_instance: src
                .instances
                .iter()
                .map(|i| i.sample_labels(labels))
                .collect(),
        }
    }
}

/// RT Structure Set and SEG of `labels` on `src`, as `<stem>` files in `dir`;
/// returns the files and the structure set's SOP instance UID.
pub fn write_masks(
    src: &SourceSeries,
    labels: &Volume<u8>,
    prov: &Provenance,
    what: &str,
    stem: &str,
    series_number: i64,
    dir: &Path,
) -> Result<(Vec<PathBuf>, Option<String>)> {
    let t0 = std::time::Instant::now();
    let masks = MaskSlices::new(src, labels);
    let t_sample = t0.elapsed().as_secs_f64();
    let mut out = Vec::new();
    // A structure set must hold at least one ROI: none when no organ is on these
    // slices (a CT that misses the abdomen, or a network that found nothing).
    let any_organ = masks
        .per_instance
        .iter()
        .any(|p| p.iter().any(|&v| crate::organs::name(v).is_some()));
    if !any_organ {
        return Ok((out, None));
    }
    let p = dir.join(format!("RTSTRUCT_{stem}.dcm"));
    let uid = rtstruct::write(
        &masks,
        prov,
        &NewSeries {
            modality: "RTSTRUCT",
            number: series_number,
            description: format!("organdose organs on {what}"),
        },
        "ORGANDOSE",
        &p,
    )?;
    out.push(p);
    let t_struct = t0.elapsed().as_secs_f64() - t_sample;
    let p = dir.join(format!("SEG_{stem}.dcm"));
    if seg::write(
        &masks,
        prov,
        &NewSeries {
            modality: "SEG",
            number: series_number + 1,
            description: format!("organdose organs on {what}"),
        },
        &p,
    )?
    .is_some()
    {
        out.push(p);
    }
    tracing::debug!(
        "{stem}: masks sampled on the slices {t_sample:.2} s, RT Struct {t_struct:.2} s, SEG {:.2} s",
        t0.elapsed().as_secs_f64() - t_sample - t_struct
    );
    Ok((out, Some(uid)))
}

/// One CT's derived objects: its source series, the files written, the RT
/// Structure Set's UID.
type MadeStruct = (SourceSeries, Vec<PathBuf>, Option<String>);

/// Everything above for one finished cycle. `pdf` is report.pdf's bytes when it
/// was made. Returns the files written and notes for what could not be written
/// (a NIfTI study has no DICOM images to reference).
/// A provisional result says so in the series description a PACS lists (the
/// final one comes later as new series): " (provisional)", or nothing.
fn status_suffix(summary: &DoseSummary) -> String {
    match summary.status.as_str() {
        "final" => String::new(),
        s => format!(" ({s})"),
    }
}

/// The DICOM SPECT of the reference time point, which the dose map lies on
/// (1-based in the summary, time order, as study.timepoints are).
fn reference_spect<'a>(
    study: &'a Study,
    summary: &DoseSummary,
) -> Option<&'a crate::io::dicom::DicomSeries> {
    let k = summary.settings.dose_map_time_point.checked_sub(1)?;
    match &study.timepoints.get(k)?.spect {
        Source::Dicom(d) => Some(d),
        Source::Nifti(_) => None,
    }
}

pub(crate) fn write_cycle(
    study: &Study,
    input: &DoseInput,
    summary: &DoseSummary,
    prov: &Provenance,
    out_dir: &Path,
) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let dir = out_dir.join("dicom");
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
    let mut written = Vec::new();
    let mut notes = Vec::new();
    let status = status_suffix(summary);
    let dicom = |s: &Source| match s {
        Source::Dicom(d) => Some(d.clone()),
        Source::Nifti(_) => None,
    };
    // The RT Structure Set and SEG of each CT (None: the diagnostic CT; Some(k):
    // time point k's low-dose CT), made side by side: they share nothing.
    let mut jobs: Vec<(Option<usize>, crate::io::dicom::DicomSeries, &Volume<u8>)> = Vec::new();
    match dicom(&study.diagnostic_ct) {
        Some(ct) => jobs.push((None, ct, &input.diag_ct_labels)),
        None => notes.push("diagnostic CT is NIfTI: no RT Structure Set / SEG for it".into()),
    }
    for (k, (tp, ti)) in study.timepoints.iter().zip(&input.timepoints).enumerate() {
        if let Some(ldct) = tp.ldct.as_ref().and_then(dicom) {
            jobs.push((Some(k), ldct, &ti.labels));
        }
    }
    let made: Vec<Result<MadeStruct>> = jobs
        .par_iter()
        .map(|(slot, series, labels)| {
            let src = SourceSeries::from_series(series)?;
            let (what, stem, number) = match slot {
                None => (format!("diagnostic CT{status}"), "CT".to_string(), 9001),
                Some(k) => (
                    format!("low-dose CT {:.1} h{status}", study.timepoints[*k].t_h),
                    format!("TP{}", k + 1),
                    9011 + 2 * *k as i64,
                ),
            };
            let (files, uid) = write_masks(&src, labels, prov, &what, &stem, number, &dir)?;
            Ok((src, files, uid))
        })
        .collect();
    // (time point, frame of reference, structure set UID) of each LDCT's RT Struct.
    let mut ldct_structs: Vec<(usize, String, String)> = Vec::new();
    for ((slot, _, _), r) in jobs.iter().zip(made) {
        let (src, files, uid) = r?;
        if files.is_empty() {
            notes.push(match slot {
                None => "no organ on the diagnostic CT: no RT Structure Set / SEG".into(),
                Some(k) => format!(
                    "no organ on the low-dose CT at {:.1} h: no RT Structure Set / SEG",
                    study.timepoints[*k].t_h
                ),
            });
        }
        written.extend(files);
        if let (Some(k), Some(uid)) = (slot, uid) {
            ldct_structs.push((*k, src.frame_of_reference_uid.clone(), uid));
        }
    }
    let ref_k = summary.settings.dose_map_time_point.checked_sub(1);
    match (&summary.dose_map_gy, reference_spect(study, summary)) {
        (Some(dose), Some(spect)) => {
            let src = SourceSeries::from_series(spect)?;
            let p = dir.join("RTDOSE.dcm");
            // The DVHs belong to the organs on the dose grid, from the reference
            // time point's mask: its low-dose CT's structure set, when that shares
            // the SPECT's frame of reference (the same SPECT/CT session).
            let dvh_rois: Vec<(i64, &crate::dosimetry::dose::Dvh)> = summary
                .organs
                .values()
                .filter_map(|o| o.dvh_curve.as_ref().map(|h| (o.label as i64, h)))
                .collect();
            let dvhs = ldct_structs
                .iter()
                .find(|(k, frame, _)| Some(*k) == ref_k && *frame == src.frame_of_reference_uid)
                .map(|(_, _, uid)| rtdose::DvhRefs {
                    structure_set_uid: uid.clone(),
                    rois: dvh_rois,
                });
            rtdose::write(
                dose,
                &src,
                &rtdose::DoseDescription {
                    comment: format!(
                        "{} absorbed dose, whole cycle (organ kinetics)",
                        summary.nuclide
                    ),
                    derivation: format!(
                        "organdose: time-integrated activity per organ spread as the activity of the SPECT at {:.1} h p.i.; kernel {}",
                        summary.settings.dose_map_t_h, summary.settings.kernel
                    ),
                },
                dvhs.as_ref(),
                &NewSeries {
                    modality: "RTDOSE",
                    number: 9051,
                    description: format!("organdose absorbed dose (Gy){status}"),
                },
                &p,
            )?;
            written.push(p);
        }
        (None, _) => notes.push("no voxel dose map: no RT Dose written".into()),
        (_, None) => notes.push("reference SPECT is not DICOM: no RT Dose written".into()),
    }
    Ok((written, notes))
}

/// `report.pdf` as an Encapsulated PDF in the series of the RT Dose (the
/// reference SPECT's study and frame of reference), written apart from
/// [`write_cycle`] so that the DICOM objects need not wait for the PDF's
/// pictures. None where no RT Dose is written (no dose map, or a NIfTI SPECT).
pub(crate) fn write_report_pdf(
    study: &Study,
    summary: &DoseSummary,
    pdf: &[u8],
    out_dir: &Path,
) -> Result<Option<PathBuf>> {
    let (Some(_), Some(spect)) = (&summary.dose_map_gy, reference_spect(study, summary)) else {
        return Ok(None);
    };
    let status = status_suffix(summary);
    let src = SourceSeries::from_series(spect)?;
    let dir = out_dir.join("dicom");
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
    let p = dir.join("REPORT_PDF.dcm");
    pdf::write_encapsulated(
        pdf,
        &src,
        &format!("organdose dosimetry report{status}"),
        9061,
        &p,
    )?;
    Ok(Some(p))
}
