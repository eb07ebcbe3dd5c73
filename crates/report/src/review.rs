//! What a person reviews before trusting a dose: quality-control pictures in
//! `OUT/qc/`, `tac_log.png`, `report.pdf`, and the DICOM objects of `OUT/dicom/`.
//!
//! QC pictures (axial, coronal, sagittal through each organ's centre):
//! - `qc/ct_<organ>.png`: the mask outlines over the diagnostic CT;
//! - `qc/tp<k>_ldct_<organ>.png`: time point k's mask over its low-dose CT;
//! - `qc/tp<k>_spect_<organ>.png`: the organ's VOI (the border-extended volume its
//!   activity was measured in) over time point k's SPECT, where a CT-SPECT
//!   misregistration shows as activity beside the outline.
//!
//! Nothing here fails a study: the dose results are already computed, so a
//! picture or object that cannot be made becomes a warning.

use super::dicom_out::source::SourceSeries;
use super::dicom_out::{self, Provenance};
use super::overlay::{label_centre, render_through, Palette, Rgb};
use super::pdf_report::{render as render_pdf, Picture, ReportPages, Standing, SummaryPage};
use crate::dosimetry::pipeline::{DoseInput, DoseSummary};
use crate::error::Result;
use crate::io::write_bytes_atomically;
use crate::io::IngestConfig;
use crate::organs;
use crate::study::{Source, Study};
use crate::volume::Volume;
use dicom_dictionary_std::tags;
use std::path::{Path, PathBuf};

/// Everything the review outputs are made from.
pub struct ReviewInput<'a> {
    pub study: &'a Study,
    pub input: &'a DoseInput,
    pub summary: &'a DoseSummary,
    pub provenance: Provenance,
    pub ingest: &'a IngestConfig,
    /// Write `dicom/` too.
    pub dicom: bool,
    pub tac_log_scale: bool,
    /// QC pictures of the CTs drawn while the pipeline held them ([`ct_pictures`]);
    /// a CT without pictures here (or whose masks changed since) is read again.
    pub ct_pictures: &'a [CtPictures],
}

/// Soft-tissue CT window (level 40, width 400).
const CT_WINDOW: [f32; 2] = [-160.0, 240.0];
const PANEL_PX: usize = 300;

/// Writes the QC pictures, report.pdf and (when asked) the DICOM objects into
/// `out`. Returns the files written and warnings for what could not be made.
pub fn write_review(r: &ReviewInput, out: &Path) -> (Vec<PathBuf>, Vec<String>) {
    // The DICOM objects (RT Structure Sets, SEGs, RT Dose) need nothing the
    // pictures or the PDF make: they are written beside them, and the PDF's
    // DICOM twin after both.
    let ((mut written, mut warnings, pdf), dicom) = rayon::join(
        || pictures_and_pdf(r, out),
        || {
            r.dicom.then(|| {
                let t1 = std::time::Instant::now();
                let made = dicom_out::write_cycle(r.study, r.input, r.summary, &r.provenance, out);
                tracing::debug!("DICOM outputs in {:.1} s", t1.elapsed().as_secs_f64());
                made
            })
        },
    );
    match dicom {
        Some(Ok((files, notes))) => {
            written.extend(files);
            warnings.extend(notes.into_iter().map(|n| format!("DICOM outputs: {n}")));
            if let Some(bytes) = &pdf {
                match dicom_out::write_report_pdf(r.study, r.summary, bytes, out) {
                    Ok(p) => written.extend(p),
                    Err(e) => warnings.push(format!("DICOM outputs not written: {e}")),
                }
            }
        }
        Some(Err(e)) => warnings.push(format!("DICOM outputs not written: {e}")),
        None => {}
    }
    (written, warnings)
}

/// The QC pictures, `tac_log.png` and `report.pdf`: the files written,
/// warnings, and the PDF's bytes when it was made.
fn pictures_and_pdf(r: &ReviewInput, out: &Path) -> (Vec<PathBuf>, Vec<String>, Option<Vec<u8>>) {
    let mut written = Vec::new();
    let mut warnings = Vec::new();
    let t0 = std::time::Instant::now();
    let pictures = match qc_pictures(r, &out.join("qc"), &mut written) {
        Ok(p) => p,
        Err(e) => {
            warnings.push(format!("quality-control pictures not made: {e}"));
            Vec::new()
        }
    };
    tracing::debug!("QC pictures in {:.1} s", t0.elapsed().as_secs_f64());
    // tac.png is linear; the log-scale twin shows each phase as a straight line.
    let p = out.join("tac_log.png");
    match super::plot::tac_png_scaled(r.summary, true)
        .and_then(|png| write_bytes_atomically(&p, &png))
    {
        Ok(()) => written.push(p),
        Err(e) => warnings.push(format!("tac_log.png not written: {e}")),
    }
    let t_pdf = std::time::Instant::now();
    let pdf = match report_pdf(r, pictures) {
        Ok(bytes) => {
            let p = out.join("report.pdf");
            match write_bytes_atomically(&p, &bytes) {
                Ok(()) => written.push(p),
                Err(e) => warnings.push(format!("report.pdf not written: {e}")),
            }
            Some(bytes)
        }
        Err(e) => {
            warnings.push(format!("report.pdf not made: {e}"));
            None
        }
    };
    tracing::debug!("report.pdf in {:.1} s", t_pdf.elapsed().as_secs_f64());
    (written, warnings, pdf)
}

/// Organs present in a label map, in label order.
fn present(labels: &Volume<u8>) -> Vec<(u8, &'static str)> {
    let mut seen = [false; 256];
    for &v in &labels.data {
        seen[v as usize] = true;
    }
    organs::ORGANS
        .iter()
        .copied()
        .filter(|(l, _)| seen[*l as usize])
        .collect()
}

/// High end of the SPECT display window: the hottest voxel inside the VOIs, so
/// the organs' inner structure stays visible (a window from the whole image
/// saturates the kidneys, which are a few per mille of it); without VOIs the
/// 99.5th percentile of positive voxels.
fn spect_window(v: &Volume<f32>, vois: &Volume<u8>) -> [f32; 2] {
    let in_voi = v
        .data
        .iter()
        .zip(&vois.data)
        .filter(|(_, &l)| l != 0)
        .map(|(&x, _)| x)
        .fold(0f32, f32::max);
    if in_voi > 0.0 {
        return [0.0, in_voi];
    }
    let mut pos: Vec<f32> = v.data.iter().copied().filter(|x| *x > 0.0).collect();
    if pos.is_empty() {
        return [0.0, 1.0];
    }
    let k = ((pos.len() - 1) as f64 * 0.995) as usize;
    let (_, hi, _) = pos.select_nth_unstable_by(k, f32::total_cmp);
    [0.0, hi.max(1e-6)]
}

/// Which of a study's CTs a set of pictures shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtSlot {
    Diagnostic,
    /// The low-dose CT of the time point at this index (study order).
    TimePoint(usize),
}

/// One rendered picture: file name in `qc/`, caption, pixels.
#[derive(Clone)]
struct Rendered {
    name: String,
    caption: String,
    rgb: Rgb,
}

/// The QC pictures of one CT (each organ outlined through its centre), drawn
/// while the caller holds the CT, with a digest of the label map they show: the
/// report uses them when the final masks are still those, instead of reading
/// the CT again.
pub struct CtPictures {
    slot: CtSlot,
    digest: u64,
    pictures: Vec<Rendered>,
}

/// A digest of a label map (grid and voxels), to tell whether the masks a
/// picture shows are still the final ones.
fn labels_digest(labels: &Volume<u8>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.geom.dims.hash(&mut h);
    for v in labels
        .geom
        .spacing
        .iter()
        .chain(&labels.geom.origin)
        .chain(labels.geom.direction.iter().flatten())
    {
        v.to_bits().hash(&mut h);
    }
    labels.data.hash(&mut h);
    h.finish()
}

/// Draws the QC pictures of one CT: `t_h` is the time point's (for the
/// captions), `None` for the diagnostic CT.
pub fn ct_pictures(
    ct: &Volume<f32>,
    labels: &Volume<u8>,
    slot: CtSlot,
    t_h: Option<f64>,
) -> Result<CtPictures> {
    let mut pictures = Vec::new();
    for (lab, organ) in present(labels) {
        let (name, caption) = match (slot, t_h) {
            (CtSlot::TimePoint(k), Some(t)) => (
                format!("tp{}_ldct_{organ}.png", k + 1),
                format!("{organ} on the low-dose CT at {t:.1} h"),
            ),
            _ => (
                format!("ct_{organ}.png"),
                format!("{organ} on the diagnostic CT"),
            ),
        };
        if let Some(rgb) = render(ct, labels, lab, &caption, CT_WINDOW, Palette::Grey)? {
            pictures.push(Rendered { name, caption, rgb });
        }
    }
    Ok(CtPictures {
        slot,
        digest: labels_digest(labels),
        pictures,
    })
}

/// One organ through its centre, with the caption and display note; `None` when
/// the label map does not hold the organ.
fn render(
    img: &Volume<f32>,
    labels: &Volume<u8>,
    lab: u8,
    caption: &str,
    window: [f32; 2],
    palette: Palette,
) -> Result<Option<Rgb>> {
    let Some(c) = label_centre(labels, lab) else {
        return Ok(None);
    };
    let note = match palette {
        Palette::Grey => format!(
            "{caption}; CT window {:.0}..{:.0} HU; patient right on image left",
            window[0], window[1]
        ),
        Palette::Hot => format!(
            "{caption}; SPECT 0..{:.0} Bq/mL; patient right on image left",
            window[1]
        ),
    };
    render_through(img, labels, c, window, palette, PANEL_PX, &note).map(Some)
}

/// The pictures of one CT: the ones drawn while the pipeline held it when they
/// show the final masks, else drawn now from the CT read again (a mask replaced
/// by the cycle check or a correction after segmentation, or no CT held).
fn ct_pictures_of<'a>(
    r: &'a ReviewInput,
    src: &Source,
    labels: &Volume<u8>,
    slot: CtSlot,
    t_h: Option<f64>,
) -> Result<std::borrow::Cow<'a, [Rendered]>> {
    let digest = labels_digest(labels);
    if let Some(p) = r
        .ct_pictures
        .iter()
        .find(|p| p.slot == slot && p.digest == digest)
    {
        return Ok(std::borrow::Cow::Borrowed(&p.pictures));
    }
    tracing::debug!(
        "QC pictures: reading {} (not read before, or its masks changed after it was read)",
        src.describe()
    );
    let ct = src.read(r.ingest)?;
    Ok(std::borrow::Cow::Owned(
        ct_pictures(&ct, labels, slot, t_h)?.pictures,
    ))
}

/// Writes every QC picture; returns those the PDF shows (diagnostic CT, and the
/// reference time point's low-dose CT and SPECT, per organ). The SPECT panels
/// are drawn, and every picture encoded and written, on all threads; the
/// files and the PDF's pictures keep the order below.
fn qc_pictures(r: &ReviewInput, dir: &Path, written: &mut Vec<PathBuf>) -> Result<Vec<Picture>> {
    use rayon::prelude::*;
    use std::borrow::Cow;
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let ref_k = r.summary.settings.dose_map_time_point.saturating_sub(1);
    // A CT's pictures (in the PDF or not), or one SPECT panel still to draw,
    // in the order they are listed.
    enum Slot<'a> {
        Ct(Cow<'a, [Rendered]>, bool),
        Spect(usize),
    }
    let mut slots: Vec<Slot> = Vec::new();
    let diag = &r.input.diag_ct_labels;
    slots.push(Slot::Ct(
        ct_pictures_of(r, &r.study.diagnostic_ct, diag, CtSlot::Diagnostic, None)?,
        true,
    ));
    // (time point, label, organ, SPECT window) of each SPECT panel.
    let mut spect_panels = Vec::new();
    for (k, (tp, ti)) in r
        .study
        .timepoints
        .iter()
        .zip(&r.input.timepoints)
        .enumerate()
    {
        if let Some(src) = &tp.ldct {
            let pics = ct_pictures_of(r, src, &ti.labels, CtSlot::TimePoint(k), Some(tp.t_h))?;
            slots.push(Slot::Ct(pics, k == ref_k));
        }
        // The VOIs the dosimetry measured in, carried in its result.
        let Some(vois) = r.summary.voi_maps.get(k).and_then(|v| v.as_ref()) else {
            return Err(crate::Error::internal(format!(
                "the dosimetry result holds no VOIs for time point {}",
                k + 1
            )));
        };
        let win = spect_window(&ti.spect_bq_per_ml, vois);
        for (lab, organ) in present(&ti.labels) {
            slots.push(Slot::Spect(spect_panels.len()));
            spect_panels.push((k, lab, organ, vois, win));
        }
    }
    let spect: Vec<Option<(Rendered, bool)>> = spect_panels
        .par_iter()
        .map(|&(k, lab, organ, vois, win)| {
            let tp = &r.study.timepoints[k];
            let caption = format!("{organ} VOI over the SPECT at {:.1} h", tp.t_h);
            let spect = &r.input.timepoints[k].spect_bq_per_ml;
            Ok(
                render(spect, vois, lab, &caption, win, Palette::Hot)?.map(|rgb| {
                    let name = format!("tp{}_spect_{organ}.png", k + 1);
                    (Rendered { name, caption, rgb }, k == ref_k)
                }),
            )
        })
        .collect::<Result<_>>()?;
    let all: Vec<(&Rendered, bool)> = slots
        .iter()
        .flat_map(|slot| -> Vec<(&Rendered, bool)> {
            match slot {
                Slot::Ct(pics, pdf) => pics.iter().map(|p| (p, *pdf)).collect(),
                Slot::Spect(i) => spect[*i].iter().map(|(p, pdf)| (p, *pdf)).collect(),
            }
        })
        .collect();
    let paths: Vec<PathBuf> = all
        .par_iter()
        .map(|(p, _)| {
            let png = p.rgb.encode_png()?;
            let path = dir.join(&p.name);
            write_bytes_atomically(&path, &png)?;
            Ok(path)
        })
        .collect::<Result<_>>()?;
    written.extend(paths);
    Ok(all
        .iter()
        .filter(|(_, pdf)| *pdf)
        .map(|(p, _)| Picture {
            caption: p.caption.clone(),
            width: p.rgb.width,
            height: p.rgb.height,
            rgb: p.rgb.data.clone(),
        })
        .collect())
}

/// Patient and study lines for the header, from the diagnostic CT's DICOM
/// header when there is one.
fn header_lines(r: &ReviewInput) -> (Vec<String>, String) {
    let s = r.summary;
    let mut lines = Vec::new();
    let mut footer = format!("Patient ID {}", s.patient_id);
    if let Source::Dicom(d) = &r.study.diagnostic_ct {
        if let Ok(src) = SourceSeries::from_series(d) {
            let name = src.attr(tags::PATIENT_NAME).replace('^', " ");
            lines.push(format!(
                "Patient: {}   ID {}   born {}   sex {}",
                name.trim(),
                s.patient_id,
                src.attr(tags::PATIENT_BIRTH_DATE),
                src.attr(tags::PATIENT_SEX)
            ));
            lines.push(format!(
                "Diagnostic CT study: {} {}   accession {}   {}",
                src.attr(tags::STUDY_DATE),
                src.attr(tags::STUDY_TIME),
                src.attr(tags::ACCESSION_NUMBER),
                src.attr(tags::STUDY_DESCRIPTION)
            ));
            footer = format!("{} (ID {})", name.trim(), s.patient_id);
        }
    }
    if lines.is_empty() {
        lines.push(format!("Patient ID {}", s.patient_id));
    }
    let inj = &r.study.injection;
    lines.push(format!(
        "Injection: {} {:.0} MBq at {}   time points {} h p.i.   status {}",
        s.nuclide,
        inj.activity_mbq,
        inj.datetime,
        s.times_h
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.status
    ));
    (lines, footer)
}

fn report_pdf(r: &ReviewInput, qc: Vec<Picture>) -> Result<Vec<u8>> {
    let s = r.summary;
    let (header, footer) = header_lines(r);
    let mut pictures = vec![
        Picture::from_png(
            "Time-activity curves (points +- one standard uncertainty; lines: chosen fits)",
            &super::plot::tac_png_scaled(s, r.tac_log_scale)?,
        )?,
        Picture::from_png(
            "Cumulative dose-volume histograms",
            &super::plot::dvh_png(s)?,
        )?,
    ];
    if let Some(png) = super::plot::history_png(s)? {
        pictures.push(Picture::from_png(
            "Cumulative kidney BED over the patient's cycles (+- SD, linear sums) against the limits",
            &png,
        )?);
    }
    pictures.extend(qc);
    let summary = summary_page(s, &pictures);
    render_pdf(&ReportPages {
        title: "organdose dosimetry report".into(),
        header,
        summary: Some(summary),
        body: super::report_text(s),
        pictures,
        footer,
    })
}

/// Page 1's table of the course: per cycle the injected activity and the
/// kidneys' dose (BED), the cumulative figures, and for each kind of limit
/// the next cycle's largest activity (the kidney that reaches it first).
fn history_lines(s: &DoseSummary) -> Vec<String> {
    let Some(h) = s.treatment_history.as_ref() else {
        return Vec::new();
    };
    let kidneys: Vec<&String> = h
        .cumulative
        .keys()
        .filter(|n| n.starts_with("kidney"))
        .collect();
    if kidneys.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut head = format!(
        "{:<3} {:<19} {:>6}  {:<12}",
        "#", "injection", "GBq", "status"
    );
    for k in &kidneys {
        head.push_str(&format!(" {:>24}", format!("{k} Gy (BED)")));
    }
    out.push(head);
    for (i, c) in h.cycles.iter().enumerate() {
        let mut l = format!(
            "{:<3} {:<19} {:>6.2}  {:<12}",
            i + 1,
            c.injection_datetime.chars().take(19).collect::<String>(),
            c.injected_activity_mbq / 1000.0,
            c.status
        );
        for k in &kidneys {
            let cell = c
                .organs
                .get(*k)
                .map_or("-".to_string(), |o| match o.bed_gy {
                    Some(b) => format!("{:.2} ({b:.2})", o.mean_dose_gy),
                    None => format!("{:.2}", o.mean_dose_gy),
                });
            l.push_str(&format!(" {cell:>24}"));
        }
        out.push(l);
    }
    let mut l = format!("{:<44}", "cumulative +- SD");
    for k in &kidneys {
        let c = &h.cumulative[*k];
        let cell = match (c.bed_gy, c.bed_gy_sd) {
            (Some(b), Some(sd)) => {
                format!("{:.1}+-{:.1} ({b:.1}+-{sd:.1})", c.dose_gy, c.dose_gy_sd)
            }
            _ => format!("{:.1}+-{:.1}", c.dose_gy, c.dose_gy_sd),
        };
        l.push_str(&format!(" {cell:>24}"));
    }
    out.push(l);
    for quantity in ["absorbed dose", "BED", "BED with risk factors"] {
        let Some(a) = h
            .allowances
            .iter()
            .filter(|a| a.quantity == quantity)
            .min_by(|a, b| a.next_activity_gbq.total_cmp(&b.next_activity_gbq))
        else {
            continue;
        };
        out.push(if a.reached {
            format!(
                "{quantity} limit {:.0} Gy: REACHED ({} {:.1} +- {:.1} Gy)",
                a.limit_gy, a.organ, a.cumulative_gy, a.cumulative_gy_sd
            )
        } else {
            format!(
                "{quantity} limit {:.0} Gy: next cycle at most {:.1} +- {:.1} GBq ({}, {:.1} Gy left)",
                a.limit_gy, a.next_activity_gbq, a.next_activity_gbq_sd, a.organ, a.remaining_gy
            )
        });
    }
    if !h.warnings.is_empty() {
        out.push(format!(
            "{} note(s) on the history in the full report",
            h.warnings.len()
        ));
    }
    out
}

/// Page 1: status and why, per organ the mean dose +- SD, its segmentation
/// share, the mask confidence and flag; the warnings; the flagged organs'
/// pictures.
/// Page 1's lesion table: per lesion its source, site, volume, mean dose, BED and
/// tumour-to-kidney ratio; the liver with its lesions as the last row.
fn lesion_table(s: &DoseSummary) -> (Vec<String>, Vec<Vec<String>>) {
    if s.lesions.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let mut rows: Vec<Vec<String>> = s
        .lesions
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                match l.source {
                    crate::dosimetry::lesions::LesionSource::Given => "given".into(),
                    crate::dosimetry::lesions::LesionSource::Auto => "auto".into(),
                },
                l.site.clone().unwrap_or_else(|| "-".into()),
                format!("{:.1}", l.volume_ml),
                format!("{:.2} +- {:.2}", l.mean_dose_gy, l.mean_dose_gy_sd),
                l.bed.as_ref().map_or("-".into(), |b| {
                    format!("{:.2} +- {:.2}", b.bed_gy, b.bed_gy_sd)
                }),
                l.tumour_to_kidney.map_or("-".into(), |r| format!("{r:.1}")),
            ]
        })
        .collect();
    if let Some(w) = s.organs.get("liver").and_then(|o| o.with_lesions.as_ref()) {
        rows.push(vec![
            "liver + lesions".into(),
            "-".into(),
            "-".into(),
            format!("{:.0}", w.volume_ml),
            format!("{:.2} +- {:.2}", w.mean_dose_gy, w.mean_dose_gy_sd),
            "-".into(),
            "-".into(),
        ]);
    }
    (
        [
            "Lesion",
            "Source",
            "Site",
            "Vol mL",
            "Mean dose Gy +- SD",
            "BED Gy",
            "Tumour/kidney",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    )
}

fn summary_page(s: &DoseSummary, pictures: &[Picture]) -> SummaryPage {
    // Why: flagged masks one line per organ, then the other holds.
    let mut review: Vec<String> = Vec::new();
    let mut organs_flagged: Vec<&str> = Vec::new();
    for c in s.mask_confidence.iter().filter(|c| c.flag == "review") {
        if !organs_flagged.contains(&c.organ.as_str()) {
            organs_flagged.push(&c.organ);
        }
    }
    for organ in &organs_flagged {
        let all: Vec<_> = s
            .mask_confidence
            .iter()
            .filter(|c| c.organ == *organ)
            .collect();
        let bad: Vec<_> = all.iter().filter(|c| c.flag == "review").collect();
        let lo = bad
            .iter()
            .map(|c| c.confidence)
            .fold(f64::INFINITY, f64::min);
        let hi = bad.iter().map(|c| c.confidence).fold(0.0, f64::max);
        let first = bad
            .first()
            .map(|c| format!("{}: {}", c.ct, c.reasons.join("; ")))
            .unwrap_or_default();
        review.push(format!(
            "{organ} mask flagged on {} of {} CT(s), confidence {lo:.2}-{hi:.2}; e.g. {first}",
            bad.len(),
            all.len()
        ));
    }
    review.extend(
        s.warnings
            .iter()
            .filter_map(|w| w.strip_prefix("needs review: "))
            .filter(|w| {
                !organs_flagged
                    .iter()
                    .any(|o| w.starts_with(&format!("{o} mask on the ")))
            })
            .map(str::to_string),
    );
    let (standing, status, why) = match s.status.as_str() {
        "final" => (Standing::Final, "FINAL".to_string(), Vec::new()),
        "reviewed" => (
            Standing::Reviewed,
            match &s.reviewed {
                Some(r) if !r.at.is_empty() => format!("REVIEWED by {} ({})", r.by, r.at),
                Some(r) => format!("REVIEWED by {}", r.by),
                None => "REVIEWED".to_string(),
            },
            s.reviewed
                .iter()
                .map(|r| {
                    format!(
                        "corrected masks of {} from {}",
                        r.organs.join(", "),
                        r.object
                    )
                })
                .collect(),
        ),
        "needs_review" => (
            Standing::NeedsReview,
            "NEEDS REVIEW before these doses are used".to_string(),
            review,
        ),
        other => (
            Standing::Incomplete,
            format!(
                "{} ({} time points so far)",
                other.to_uppercase(),
                s.times_h.len()
            ),
            review,
        ),
    };
    // Per organ: the lowest confidence over the cycle's CTs, and whether any
    // of its masks is flagged.
    let conf = |organ: &str| {
        let cs: Vec<_> = s
            .mask_confidence
            .iter()
            .filter(|c| c.organ == organ)
            .collect();
        let low = cs.iter().map(|c| c.confidence).fold(f64::NAN, f64::min);
        let flagged: Vec<&str> = cs
            .iter()
            .filter(|c| c.flag == "review")
            .map(|c| c.ct.as_str())
            .collect();
        (cs.is_empty(), low, flagged)
    };
    let mut rows = Vec::new();
    let mut thumbnails = Vec::new();
    for (name, o) in &s.organs {
        let (none, low, flagged) = conf(name);
        rows.push(vec![
            name.clone(),
            format!("{:.2} +- {:.2}", o.mean_dose_gy, o.mean_dose_gy_sd),
            o.mean_dose_gy_sd_segmentation
                .map_or("-".into(), |x| format!("{x:.2}")),
            o.bed.as_ref().map_or("-".into(), |b| {
                format!("{:.2} +- {:.2}", b.bed_gy, b.bed_gy_sd)
            }),
            if s.injected_activity_mbq > 0.0 {
                format!("{:.2}", o.mean_dose_gy / (s.injected_activity_mbq / 1000.0))
            } else {
                "-".into()
            },
            format!("{:.0}", o.mass_g),
            if none {
                "-".into()
            } else {
                format!("{low:.2}")
            },
            if none {
                "given".into()
            } else if flagged.is_empty() {
                "ok".into()
            } else {
                format!("REVIEW ({})", flagged.len())
            },
        ]);
        if !flagged.is_empty() {
            let on_diag = format!("{name} on the diagnostic CT");
            if let Some(i) = pictures
                .iter()
                .position(|p| p.caption == on_diag)
                .or_else(|| {
                    pictures
                        .iter()
                        .position(|p| p.caption.starts_with(name.as_str()))
                })
            {
                thumbnails.push(i);
            }
        }
    }
    let (lesion_columns, lesion_rows) = lesion_table(s);
    SummaryPage {
        standing,
        status,
        why,
        lesion_columns,
        lesion_rows,
        columns: [
            "Organ",
            "Mean dose Gy +- SD",
            "of which mask",
            "BED Gy",
            "Gy/GBq",
            "Mass g",
            "Mask conf.",
            "Mask flag",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes: vec![
            "Mean dose: partial-volume corrected organ mean (TIA x E / mass), +- one standard uncertainty (activity, fit, mass and the mask). \
             'of which mask': the segmentation's share (dose difference between a generous and a strict reading of the network's probabilities, over sqrt 12). \
             BED: biologically effective dose with the configured alpha/beta and repair half-time (the full report lists them). Mask conf.: lowest confidence over the cycle's CTs (0-1); REVIEW (n): n CTs' masks flagged. The DVH plot's voxel means come from the dose map and can differ; the full report explains."
                .into(),
        ]
        .into_iter()
        .chain((!s.lesions.is_empty()).then(|| {
            "Lesions: given (the masks' tumour label) or auto (SPECT hot spot), each partial-volume corrected as a region of its own. \
             The liver row above is the liver without its lesions (parenchyma); 'liver + lesions' is the whole liver. Tumour/kidney: the lesion's mean dose over the kidneys' mean."
                .to_string()
        }))
        .collect(),
        history: history_lines(s),
        warnings: s
            .all_warnings()
            .into_iter()
            .filter(|w| !w.starts_with("needs review: "))
            .collect(),
        thumbnails,
    }
}
