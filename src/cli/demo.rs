//! `organdose demo`: the whole job on built-in data. Makes a synthetic patient
//! as a console would export it (DICOM), segments every CT with the shipped
//! network, computes the dose, and prints it beside the phantom's truth.

use super::segment::model_dir_or_default;
use anyhow::Context;
use organdose::config::Config;
use organdose::dosimetry::pvc::PvcMethod;
use organdose::io::nifti::read_nifti_labels;
use organdose::organs;
use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::realdata::{self, DataPaths};
use organdose::phantom::{AnatomyKind, Format, Patient, PhantomConfig};
use organdose::pipeline::{run_study, MaskSource};
use organdose::seg::driver::Planes;
use organdose::seg::eval::organ_metrics;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Work folder: the phantom's export goes to OUT/export/<pid>, the results to
    /// OUT/result.
    #[arg(long, default_value = "organdose-demo")]
    pub out: PathBuf,
    /// Phantom seed (the shipped weights were trained on patients of seed 1000 and seeds 7000-7063).
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Segmentation model folder; default `segment.weights` of the configuration.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Planes: axial only, or all three joined by voxel vote (default: config).
    #[arg(long, value_enum)]
    pub planes: Option<Planes>,
    /// Use the phantom's truth masks instead of the network (no weights needed).
    #[arg(long)]
    pub truth: bool,
    /// Data folder of the real anatomy (default: $ORGANDOSE_ANATOMY_DATA, else
    /// ../shared/data; `scripts/fetch-anatomy.sh DIR` fills one).
    #[arg(long)]
    pub anatomy_data: Option<PathBuf>,
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let mut cfg = cfg.clone();
    if let Some(p) = args.planes {
        cfg.segment.planes = p;
    }
    // Fail before the minutes of work if the model is missing.
    let model_dir = if args.truth {
        None
    } else {
        Some(model_dir_or_default(args.weights.as_deref(), &cfg)?)
    };
    let t_all = Instant::now();

    let t0 = Instant::now();
    let mut pcfg = PhantomConfig {
        anatomy_data: args.anatomy_data.clone(),
        ..PhantomConfig::default()
    };
    // Chosen here rather than by the generator's fallback, so that the demo says in
    // one line what it uses and how to get the anatomy the weights were trained on.
    let data = DataPaths::new(pcfg.anatomy_data_dir());
    pcfg.anatomy = Some(match data.check() {
        Ok(()) => AnatomyKind::Real,
        Err(_) => {
            println!(
                "anatomy: no real anatomy in {}, so the geometric stand-in (the weights were \
                 trained on the real one: expect larger errors); get it with {}",
                data.root.display(),
                realdata::FETCH_HINT
            );
            AnatomyKind::Geometric
        }
    });
    let patient = Patient::try_new(&pcfg, args.seed, 0)?;
    let export = args.out.join("export");
    let written = write_patient(
        &patient,
        &export,
        &WriteOptions {
            format: Format::Dicom,
            preview: None,
        },
    )?;
    println!(
        "1/3 phantom patient {} (seed {}): {} DICOM files in {} ({:.1} s)",
        patient.patient_id,
        args.seed,
        written.files.len(),
        written.patient_dir.display(),
        t0.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    let study = organdose::study::load_study(&written.patient_dir)?;
    let truth_dir = written.patient_dir.join("truth");
    let source = match &model_dir {
        Some(d) => MaskSource::Network {
            model_dir: d.clone(),
        },
        None => MaskSource::Truth(truth_dir.clone()),
    };
    let tj = truth_dir.join("truth.json");
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&tj).with_context(|| format!("reading {}", tj.display()))?,
    )
    .with_context(|| format!("parsing {}", tj.display()))?;
    // The phantom camera's PSF stands for the site's measured one (calibrate-psf).
    let mut cfg = cfg.clone();
    let psf_note = match truth["spect_psf"]["fwhm_mm"][0].as_f64() {
        Some(f) if cfg.dosimetry.pvc != PvcMethod::None => {
            cfg.dosimetry.pvc_psf_fwhm_mm = f;
            format!(
                "partial-volume correction {} with PSF FWHM {f:.1} mm (the phantom camera's; a site measures its own with `organdose calibrate-psf`)",
                cfg.dosimetry.pvc.name()
            )
        }
        _ => format!("partial-volume correction {}", cfg.dosimetry.pvc.name()),
    };
    let cfg = &cfg;
    let result = args.out.join("result");
    let progress = super::progress_logger();
    println!(
        "2/3 {} CT(s) and {} SPECT time points: {} ...",
        1 + study.timepoints.iter().filter(|t| t.ldct.is_some()).count(),
        study.timepoints.len(),
        match &model_dir {
            Some(d) => format!(
                "segmenting with {} (planes: {}), then dosimetry",
                d.display(),
                cfg.segment.planes.name()
            ),
            None => "truth masks, dosimetry".to_string(),
        }
    );
    println!("    {psf_note}");
    let summary = run_study(&study, &source, &result, cfg, "final", &progress)?;
    println!("    done in {:.1} s", t0.elapsed().as_secs_f64());

    let masks = result.join("masks_ct.nii.gz");
    let (pred, truth_labels) = if masks.is_file() {
        (
            Some(read_nifti_labels(&masks)?),
            Some(read_nifti_labels(&truth_dir.join("labels_ct.nii.gz"))?),
        )
    } else {
        (None, None)
    };
    println!(
        "3/3 {:<13} {:>8} {:>10} {:>10} {:>8} {:>8} {:>7}",
        "organ", "mass g", "dose Gy", "truth Gy", "error", "no PVC", "Dice"
    );
    for (name, o) in &summary.organs {
        let t = &truth["organs"][name.as_str()];
        let td = t["mean_dose_gy"].as_f64();
        let err = td.map(|td| 100.0 * (o.mean_dose_gy - td) / td);
        let err_uncorrected = td.map(|td| 100.0 * (o.mean_dose_uncorrected_gy - td) / td);
        let dice = match (&pred, &truth_labels, organs::label(name)) {
            (Some(p), Some(tl), Some(l)) => organ_metrics(p, tl, l).dice,
            _ => None,
        };
        println!(
            "    {:<13} {:>8.1} {:>10.2} {:>10} {:>8} {:>8} {:>7}",
            name,
            o.mass_g,
            o.mean_dose_gy,
            td.map_or("-".into(), |v| format!("{v:.2}")),
            err.map_or("-".into(), |v| format!("{v:+.1} %")),
            err_uncorrected.map_or("-".into(), |v| format!("{v:+.1} %")),
            dice.map_or("-".into(), |v| format!("{v:.3}"))
        );
    }
    for w in summary.all_warnings() {
        println!("    warning: {w}");
    }
    println!(
        "outputs in {} (dose_summary.json, report.txt, report.pdf, dvh.png, tac.png, qc/, dicom/{}); total {:.1} s",
        result.display(),
        if pred.is_some() {
            ", masks_*.nii.gz"
        } else {
            ""
        },
        t_all.elapsed().as_secs_f64()
    );
    println!(
        "synthetic patient; the shipped weights were trained on synthetic patients only: not for clinical use"
    );
    Ok(())
}
