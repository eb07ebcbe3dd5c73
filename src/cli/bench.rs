//! `organdose bench [--device cpu|cuda]`: latency of one phantom study, stage by
//! stage as `pipeline::run_study` reports them (the path `run` and the daemon
//! take; the bench only observes it), with peak memory: GPU memory in use for
//! cuda, resident set (VmHWM) for cpu.
//!
//! The study is a synthetic patient written as DICOM to a temporary folder (or
//! `--keep DIR`), then read back as the appliance would read a console export.
//! Without a model the segmentation stage is skipped (said so on a line) and
//! the dose uses the phantom's truth masks.

use super::bench_device::Backend;
use super::segment::resolve_default_weights;
use anyhow::Context;
use organdose::config::Config;
use organdose::gpu::memory::{estimate, NetworkShape, MIB};
use organdose::io::nifti::NiftiFile;
use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{Format, Patient, PhantomConfig};
use organdose::pipeline::{run_study, MaskSource};
use organdose::seg::driver::Planes;
use organdose::seg::engine::Engine;
use organdose::seg::ModelConfig;
use organdose::study::Source;
use serde::Serialize;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Segmentation model folder; default `segment.weights` of the configuration.
    /// Without one the segmentation stage is skipped and truth masks are used.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Phantom seed.
    #[arg(long, default_value_t = 8)]
    pub seed: u64,
    /// A small phantom (128x128 CTs) instead of the full-size one.
    #[arg(long)]
    pub small: bool,
    /// Planes: axial only, or all three (default: config).
    #[arg(long, value_enum)]
    pub planes: Option<Planes>,
    /// Keep the phantom export in this folder instead of a temporary one.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Bench this study folder (e.g. one `organdose phantom` wrote) instead of
    /// making a phantom; without a model its `truth/` folder gives the masks.
    #[arg(long, conflicts_with_all = ["keep", "small", "seed"])]
    pub study: Option<PathBuf>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

const ROW_HEADER: &str = "stage                            device    time s  detail";

/// Appends a row and prints it at once, so a bench cut short by a timeout
/// still shows the stages it finished.
fn push(stages: &mut Vec<Stage>, s: Stage) {
    println!(
        "{:<32} {:<6} {:>9.3}  {}",
        s.name, s.device, s.seconds, s.detail
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    stages.push(s);
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    pub device: String,
    pub seconds: f64,
    /// Counted in the study total (setup and model loading are not).
    pub counted: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub device: String,
    pub device_name: String,
    pub patient: String,
    pub stages: Vec<Stage>,
    pub study_total_s: f64,
    pub peak_memory_mb: Option<f64>,
    pub peak_memory_what: String,
    pub memory_estimate_mb: Option<f64>,
    pub notes: Vec<String>,
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let mut cfg = cfg.clone();
    if let Some(p) = args.planes {
        cfg.segment.planes = p;
    }
    // Refuse an impossible device before minutes of phantom work.
    // The device is the engine's: global --device or segment.device.
    let mut backend = Backend::open(cfg.segment.device.name())?;
    let mut notes = Vec::new();
    let mut stages = Vec::new();
    let dev = backend.label();
    println!("organdose bench: device {dev} ({})", backend.describe());
    println!("{ROW_HEADER}");

    let (patient, memory_estimate_mb) = match &args.study {
        Some(dir) => {
            let est = bench_study(&args, &cfg, &mut backend, dir, &mut stages, &mut notes)?;
            (dir.display().to_string(), est)
        }
        None => {
            // Setup: the phantom export (not part of the study's latency).
            let t = Instant::now();
            let pcfg = if args.small {
                PhantomConfig::small()
            } else {
                PhantomConfig::default()
            };
            let patient = Patient::new(&pcfg, args.seed, 0);
            let (root, temporary) = match &args.keep {
                Some(d) => (d.clone(), false),
                None => (
                    std::env::temp_dir().join(format!("organdose-bench-{}", std::process::id())),
                    true,
                ),
            };
            let written = write_patient(
                &patient,
                &root,
                &WriteOptions {
                    format: Format::Dicom,
                    preview: None,
                },
            )?;
            push(
                &mut stages,
                Stage {
                    name: "phantom export (setup)".into(),
                    device: "cpu".into(),
                    seconds: t.elapsed().as_secs_f64(),
                    counted: false,
                    detail: format!("{} DICOM files", written.files.len()),
                },
            );
            let result = bench_study(
                &args,
                &cfg,
                &mut backend,
                &written.patient_dir,
                &mut stages,
                &mut notes,
            );
            if temporary {
                // Our own temporary export only; a --keep folder is left as it is.
                let _ = std::fs::remove_dir_all(&root);
            }
            let desc = format!(
                "phantom {} (seed {}): CT {:?}, {} time points, SPECT {}",
                patient.patient_id,
                args.seed,
                patient.ct_geom.dims,
                patient.spect_geoms.len(),
                patient
                    .spect_geoms
                    .first()
                    .map_or("-".into(), |g| format!("{:?}", g.dims))
            );
            (desc, result?)
        }
    };

    let study_total_s = stages.iter().filter(|s| s.counted).map(|s| s.seconds).sum();
    let (peak, what) = backend.peak_memory_mb();
    let report = Report {
        device: dev,
        device_name: backend.describe(),
        patient,
        stages,
        study_total_s,
        peak_memory_mb: peak,
        peak_memory_what: what,
        memory_estimate_mb,
        notes,
    };
    print_report(&report);
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Runs the exported study through `pipeline::run_study`, the path `organdose
/// run` and every job of the daemon take, on the process's engine, and times
/// its stages from the progress it reports: the bench observes production, it
/// has no pipeline of its own. Returns the device-memory estimate (MB) when
/// one applies.
fn bench_study(
    args: &Args,
    cfg: &Config,
    backend: &mut Backend,
    study_dir: &Path,
    stages: &mut Vec<Stage>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Option<f64>> {
    let dev = backend.label();
    let t = Instant::now();
    let study = organdose::study::load_study(study_dir)?;
    push(
        stages,
        Stage {
            name: "load_study".into(),
            device: "cpu".into(),
            seconds: t.elapsed().as_secs_f64(),
            counted: true,
            detail: format!("{} time point(s), headers only", study.timepoints.len()),
        },
    );

    // The model, if there is one, and the memory the study needs on the device.
    let model_dir = args
        .weights
        .clone()
        .unwrap_or_else(|| resolve_default_weights(&cfg.segment.weights));
    let has_model = model_dir.join("model.toml").is_file();
    let mut spect_dims: Vec<[usize; 3]> = Vec::new();
    for tp in &study.timepoints {
        spect_dims.push(match &tp.spect {
            Source::Dicom(d) => d.slice_map(&cfg.ingest)?.geometry.dims,
            Source::Nifti(p) => NiftiFile::open(p)?.header.dims3(),
        });
    }
    let net = if has_model {
        let mc = ModelConfig::load(&model_dir.join("model.toml"))?;
        let shape = NetworkShape::from_safetensors(&model_dir.join(&mc.weights))?;
        Some((mc, shape))
    } else {
        None
    };
    let est = estimate(
        net.as_ref().map(|(m, s)| (m, s)),
        cfg.segment.batch_size,
        &spect_dims,
    );
    let est_mb = backend.is_cuda().then_some(est.total as f64 / MIB as f64);
    backend.check_memory(&est)?;

    let source = if has_model {
        // Loaded here, once, so the study's time does not include it (a daemon
        // loads it once for all its jobs).
        let t = Instant::now();
        Engine::shared(cfg.segment.device)?.model(&model_dir)?;
        push(
            stages,
            Stage {
                name: "model load (once per process)".into(),
                device: dev.clone(),
                seconds: t.elapsed().as_secs_f64(),
                counted: false,
                detail: model_dir.display().to_string(),
            },
        );
        MaskSource::Network { model_dir }
    } else {
        let line = format!(
            "segmentation: skipped: no model at {} (give --weights DIR); the dose uses the phantom's truth masks",
            model_dir.display()
        );
        println!("{line}");
        notes.push(line);
        MaskSource::truth_of(study_dir)
    };

    // Stage boundaries as run_study reports them ("masks", "segment CT k/n",
    // "read SPECT", "dosimetry", "report", "done").
    let marks: RefCell<Vec<(String, Instant)>> = RefCell::new(Vec::new());
    let observe = |stage: &str, _: f64| {
        let mut m = marks.borrow_mut();
        if m.last().is_none_or(|(s, _)| s != stage) {
            m.push((stage.to_string(), Instant::now()));
        }
    };
    let out = std::env::temp_dir().join(format!("organdose-bench-out-{}", std::process::id()));
    let status = organdose::pipeline::summary_status(
        study.timepoints.len(),
        cfg.appliance.expected_timepoints,
        false,
    );
    let result = run_study(&study, &source, &out, cfg, status, &observe);
    let end = Instant::now();
    let _ = std::fs::remove_dir_all(&out);
    let summary = result?;
    let marks = marks.into_inner();
    for (k, (stage, at)) in marks.iter().enumerate() {
        if stage == "done" {
            break;
        }
        let next = marks.get(k + 1).map_or(end, |m| m.1);
        let on_device = stage.starts_with("segment") || stage == "masks" && has_model;
        push(
            stages,
            Stage {
                name: stage.clone(),
                device: if on_device { dev.clone() } else { "cpu".into() },
                seconds: next.duration_since(*at).as_secs_f64(),
                counted: true,
                detail: match stage.as_str() {
                    "masks" if has_model => "engine model, first CT read".into(),
                    "masks" => "truth label maps + diagnostic CT read".into(),
                    "dosimetry" => format!(
                        "dosimetry::run, {} organs (activities, PSF, fits, dose map, DVH)",
                        summary.organs.len()
                    ),
                    "report" => "report files, QC pictures, DICOM objects".into(),
                    _ => String::new(),
                },
            },
        );
    }
    Ok(est_mb)
}

fn print_report(r: &Report) {
    println!(
        "{:<32} {:<6} {:>9.3}  load_study + pipeline::run_study",
        "study total", "", r.study_total_s
    );
    println!("study: {}", r.patient);
    match r.peak_memory_mb {
        Some(m) => println!("peak {}: {m:.0} MB", r.peak_memory_what),
        None => println!("peak {}: not available", r.peak_memory_what),
    }
    if let Some(e) = r.memory_estimate_mb {
        println!("device memory estimate (gpu::memory): {e:.0} MB");
    }
}
