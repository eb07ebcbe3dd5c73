//! `organdose dose STUDY_DIR (--labels L.nii.gz [--ldct-labels F]... | --truth)
//! [--masks RTSTRUCT_OR_SEG...] -o OUT`.

use organdose::config::Config;
use organdose::pipeline::{run_study_corrected, MaskSource};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Study folder: a DICOM export of one patient's therapy cycle (any nesting), or
    /// NIfTI volumes with a study.json (as `organdose phantom --format nifti` writes).
    pub study_dir: PathBuf,
    /// Organ label map on the diagnostic CT (label values of crates/core/src/organs.rs).
    /// Without --labels or --truth the segmentation network makes the masks.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Label map on each time point's low-dose CT, in time order (repeat the option).
    /// Without it the diagnostic-CT labels are carried onto every SPECT.
    #[arg(long = "ldct-labels")]
    pub ldct_labels: Vec<PathBuf>,
    /// Use a phantom patient's truth labels (STUDY_DIR/truth, or --truth-dir).
    #[arg(long, conflicts_with = "labels")]
    pub truth: bool,
    /// Truth folder when it is not STUDY_DIR/truth.
    #[arg(long, requires = "truth")]
    pub truth_dir: Option<PathBuf>,
    /// Segmentation model folder (model.toml + safetensors) when the network makes
    /// the masks; default `segment.weights` of the configuration.
    #[arg(long, conflicts_with_all = ["labels", "truth"])]
    pub weights: Option<PathBuf>,
    /// Corrected contours: RT Structure Set or DICOM SEG files (e.g. edited in
    /// Slicer, MIM, Eclipse, OHIF), each referring to one of the study's CTs (by
    /// Series Instance UID, else frame of reference and SOP instances); the
    /// organs they hold (ROI names such as "Kidney L", "Left kidney", "LIVER")
    /// replace the other masks' on that CT; ROIs that are no organ but name a
    /// lesion ("Lesion 1", "GTV", "L2") are lesions. The result is `reviewed`.
    #[arg(long = "masks", num_args = 1..)]
    pub masks: Vec<PathBuf>,
    /// Border-extension sigma in mm (overrides dosimetry.psf_sigma_mm; the paper: 3 or 6).
    #[arg(long)]
    pub psf_sigma_mm: Option<f64>,
    /// Partial-volume correction (overrides dosimetry.pvc): none, gtm, labbe, rc.
    #[arg(long, value_parser = parse_pvc)]
    pub pvc: Option<organdose::dosimetry::pvc::PvcMethod>,
    /// SPECT PSF FWHM in mm for the partial-volume correction (overrides
    /// dosimetry.pvc_psf_fwhm_mm; measure it with `organdose calibrate-psf`).
    #[arg(long)]
    pub psf_fwhm_mm: Option<f64>,
    /// Output folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Earlier cycles' results of this patient: `DIR/*/dose_summary.json` (and
    /// `DIR/dose_summary.json`), e.g. the folder that holds each cycle's `-o`
    /// folder. The summary and report then give the treatment history: every
    /// cycle up to this one, cumulative dose and BED, and the remaining
    /// allowance under the limits. Results of other patients are left out.
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
    /// Skip the DICOM objects of OUT/dicom/ (RT Structure Sets, SEGs, RT Dose,
    /// Encapsulated PDF; `report.dicom` of the configuration).
    #[arg(long)]
    pub no_dicom: bool,
    /// Replace a final result in OUT with a partial or provisional one (without
    /// it such a run is refused: a final summary is not overwritten by a lesser
    /// one without a word).
    #[arg(long)]
    pub replace_final: bool,
}

/// The status of the summary already in `out`, when there is one.
fn existing_status(out: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(out.join("dose_summary.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("status")?.as_str().map(str::to_string)
}

fn parse_pvc(s: &str) -> Result<organdose::dosimetry::pvc::PvcMethod, String> {
    organdose::dosimetry::pvc::PvcMethod::from_name(s)
}

pub fn masks_from(args: &Args, cfg: &Config) -> MaskSource {
    if args.truth {
        match &args.truth_dir {
            Some(d) => MaskSource::Truth(d.clone()),
            None => MaskSource::truth_of(&args.study_dir),
        }
    } else if let Some(l) = &args.labels {
        MaskSource::Files {
            diag_ct: l.clone(),
            ldct: args.ldct_labels.clone(),
        }
    } else {
        MaskSource::Network {
            model_dir: args
                .weights
                .clone()
                .unwrap_or_else(|| super::segment::resolve_default_weights(&cfg.segment.weights)),
        }
    }
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let mut cfg = cfg.clone();
    if let Some(s) = args.psf_sigma_mm {
        cfg.dosimetry.psf_sigma_mm = s;
    }
    if args.no_dicom {
        cfg.report.dicom = false;
    }
    if let Some(m) = args.pvc {
        cfg.dosimetry.pvc = m;
    }
    if let Some(f) = args.psf_fwhm_mm {
        cfg.dosimetry.pvc_psf_fwhm_mm = f;
    }
    cfg.dosimetry.validate()?;
    let source = masks_from(&args, &cfg);
    let study = organdose::study::load_study(&args.study_dir)?;
    tracing::info!(
        "patient {}: {} time point(s) at {} h after {:.0} MBq {}",
        study.patient_id,
        study.timepoints.len(),
        study
            .timepoints
            .iter()
            .map(|t| format!("{:.1}", t.t_h))
            .collect::<Vec<_>>()
            .join(", "),
        study.injection.activity_mbq,
        study.injection.nuclide
    );
    let status = organdose::pipeline::summary_status(
        study.timepoints.len(),
        cfg.appliance.expected_timepoints,
        false,
    );
    if status != "final"
        && !args.replace_final
        && existing_status(&args.out).as_deref() == Some("final")
    {
        anyhow::bail!(
            "{} holds a final result (dose_summary.json) and this run would replace it with a {status} one ({} of {} time points): choose another --out, or pass --replace-final",
            args.out.display(),
            study.timepoints.len(),
            cfg.appliance.expected_timepoints
        );
    }
    let earlier = match &args.history {
        Some(dir) => {
            if !dir.is_dir() {
                anyhow::bail!("--history {}: no such folder", dir.display());
            }
            let found = organdose::dosimetry::history::read_dir(dir, 1);
            for (p, why) in &found.unreadable {
                tracing::warn!("{}: not read for the treatment history: {why}", p.display());
            }
            found
        }
        None => Default::default(),
    };
    let progress = super::progress_logger();
    let summary = run_study_corrected(
        &study,
        &source,
        &args.masks,
        &earlier,
        &args.out,
        &cfg,
        status,
        &progress,
    )?;
    for (name, o) in &summary.organs {
        println!(
            "{name:<13} {:>7.1} g  TIA {:>7.0} +- {:<5.0} MBq h  mean dose {:>6.2} +- {:.2} Gy",
            o.mass_g, o.tia_mbq_h, o.tia_mbq_h_sd, o.mean_dose_gy, o.mean_dose_gy_sd
        );
    }
    for l in &summary.lesions {
        println!(
            "lesion {:<6} {:>7.1} g  TIA {:>7.0} +- {:<5.0} MBq h  mean dose {:>6.2} +- {:.2} Gy  ({}{})",
            l.name,
            l.mass_g,
            l.tia_mbq_h,
            l.tia_mbq_h_sd,
            l.mean_dose_gy,
            l.mean_dose_gy_sd,
            match l.source {
                organdose::dosimetry::lesions::LesionSource::Given => "given",
                organdose::dosimetry::lesions::LesionSource::Auto => "auto",
            },
            l.tumour_to_kidney
                .map_or(String::new(), |r| format!(", tumour/kidney {r:.1}"))
        );
    }
    if let Some(w) = summary
        .organs
        .get("liver")
        .and_then(|o| o.with_lesions.as_ref())
    {
        println!(
            "liver with its lesions: {:.2} +- {:.2} Gy (liver above: without them)",
            w.mean_dose_gy, w.mean_dose_gy_sd
        );
    }
    for w in summary.all_warnings() {
        tracing::warn!("{w}");
    }
    if let Some(r) = &summary.reviewed {
        println!(
            "status {}: masks of {} from {} by {} {}",
            summary.status,
            r.organs.join(", "),
            r.object,
            r.by,
            r.at
        );
    }
    if let Some(h) = summary
        .treatment_history
        .as_ref()
        .filter(|h| h.cycles.len() > 1)
    {
        print!("{}", organdose::dosimetry::history::text(h));
    }
    println!("outputs in {}", args.out.display());
    Ok(())
}
