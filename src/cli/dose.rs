//! `organdose dose STUDY_DIR --labels LABELS.nii.gz -o OUT` (or `--truth`).

use organdose::config::Config;
use organdose::dosimetry::nifti_study::{load_nifti_study, LabelSource};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Study folder (study.json + NIfTI volumes, as the phantom writes it).
    pub study_dir: PathBuf,
    /// Organ label map on the diagnostic CT (values as in organs.rs).
    #[arg(long, required_unless_present = "truth")]
    pub labels: Option<PathBuf>,
    /// Label map on each time point's low-dose CT, in time-point order (repeat the
    /// option). Without it the diagnostic-CT labels are used on every SPECT.
    #[arg(long = "ldct-labels")]
    pub ldct_labels: Vec<PathBuf>,
    /// Use the phantom's truth labels (STUDY_DIR/truth/labels_*.nii.gz).
    #[arg(long, conflicts_with = "labels")]
    pub truth: bool,
    /// Border-extension sigma in mm (overrides the configuration; the paper: 3 or 6).
    #[arg(long)]
    pub psf_sigma_mm: Option<f64>,
    /// Output folder.
    #[arg(short, long)]
    pub out: PathBuf,
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let mut dcfg = cfg.dosimetry.clone();
    if let Some(s) = args.psf_sigma_mm {
        dcfg.psf_sigma_mm = s;
    }
    let source = if args.truth {
        LabelSource::Truth
    } else {
        LabelSource::Files {
            diag_ct: args
                .labels
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--labels or --truth is required"))?,
            ldct: args.ldct_labels.clone(),
        }
    };
    let (input, notes) = load_nifti_study(&args.study_dir, &source)?;
    let mut summary = organdose::dosimetry::run(&input, &dcfg)?;
    summary.warnings.extend(notes);
    let written = organdose::report::write_all(&args.out, &summary)?;
    for (name, o) in &summary.organs {
        tracing::info!(
            "{name}: {:.1} g, TIA {:.0} +- {:.0} MBq h, mean dose {:.2} +- {:.2} Gy",
            o.mass_g,
            o.tia_mbq_h,
            o.tia_mbq_h_sd,
            o.mean_dose_gy,
            o.mean_dose_gy_sd
        );
    }
    for w in summary.all_warnings() {
        tracing::warn!("{w}");
    }
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}
