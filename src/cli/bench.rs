//! `organdose bench --device cpu|cuda`: latency of one phantom study, stage by
//! stage (ingest, segmentation per plane, PSF, dose), with peak memory: GPU
//! memory in use for cuda, resident set (VmHWM) for cpu.
//!
//! The study is a synthetic patient written as DICOM to a temporary folder (or
//! `--keep DIR`), then read back as the appliance would read a console export.
//! Without a model the segmentation stage is skipped (said so on a line) and
//! the dose uses the phantom's truth masks.

use super::bench_device::Backend;
use super::segment::resolve_default_weights;
use anyhow::Context;
use organdose::config::Config;
use organdose::dosimetry::activity::coverage_fractions;
use organdose::dosimetry::psf::Boundary;
use organdose::dosimetry::{DoseInput, Nuclide, TimePointInput};
use organdose::gpu::memory::{estimate, NetworkShape, MIB};
use organdose::io::nifti::read_nifti_labels;
use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{Format, Patient, PhantomConfig};
use organdose::seg::driver::{segment_timed, Plane, Planes};
use organdose::seg::{MaskRcnn, ModelConfig};
use organdose::volume::Volume;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Where the network and the PSF run. `cuda` needs a build with `--features cuda`.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
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
    #[arg(long, value_parser = ["axial", "all"])]
    pub planes: Option<String>,
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
    match args.planes.as_deref() {
        Some("axial") => cfg.segment.planes = Planes::Axial,
        Some(_) => cfg.segment.planes = Planes::All,
        None => {}
    }
    // Refuse an impossible device before minutes of phantom work.
    let mut backend = Backend::open(&args.device)?;
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

/// Ingest, segmentation, PSF and dose of the exported study; stages appended.
/// Returns the device-memory estimate (MB) when one applies.
fn bench_study(
    args: &Args,
    cfg: &Config,
    backend: &mut Backend,
    study_dir: &Path,
    stages: &mut Vec<Stage>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Option<f64>> {
    let dev = backend.label();
    // Ingest: the study's series found and grouped, then every volume read.
    let t = Instant::now();
    let study = organdose::study::load_study(study_dir)?;
    let diag = study.diagnostic_ct.read(&cfg.ingest)?;
    let mut ldcts = Vec::new();
    let mut spects = Vec::new();
    for tp in &study.timepoints {
        ldcts.push(match &tp.ldct {
            Some(s) => Some(s.read(&cfg.ingest)?),
            None => None,
        });
        spects.push(tp.spect.read(&cfg.ingest)?);
    }
    push(
        stages,
        Stage {
            name: "ingest".into(),
            device: "cpu".into(),
            seconds: t.elapsed().as_secs_f64(),
            counted: true,
            detail: format!(
                "load_study + {} volumes read",
                1 + spects.len() + ldcts.iter().flatten().count()
            ),
        },
    );

    // The model, if there is one, and the memory the study needs on the device.
    let model_dir = args
        .weights
        .clone()
        .unwrap_or_else(|| resolve_default_weights(&cfg.segment.weights));
    let has_model = model_dir.join("model.toml").is_file();
    let spect_dims: Vec<[usize; 3]> = spects.iter().map(|s| s.geom.dims).collect();
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

    // Segmentation per plane, over the diagnostic CT and every low-dose CT.
    let (diag_labels, tp_labels) = if has_model {
        let t = Instant::now();
        let model = MaskRcnn::load_dir(&model_dir, &backend.candle_device())?;
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
        let mut opts = cfg.segment.driver_options();
        if backend.is_cuda() {
            // One stream of batches on the GPU: the CUDA path is measured that way.
            opts.parallel_batches = 1;
        }
        let mut per_plane: Vec<(Plane, usize, f64)> = Vec::new();
        let mut seg = |ct: &Volume<f32>| -> anyhow::Result<Volume<u8>> {
            Ok(segment_timed(
                &model,
                ct,
                &opts,
                &mut |_, _| {},
                &mut |p, n, d| match per_plane.iter_mut().find(|(q, _, _)| *q == p) {
                    Some(e) => {
                        e.1 += n;
                        e.2 += d.as_secs_f64();
                    }
                    None => per_plane.push((p, n, d.as_secs_f64())),
                },
            )?)
        };
        let d = seg(&diag)?;
        let mut per_tp = Vec::new();
        for l in &ldcts {
            per_tp.push(match l {
                Some(ct) => Some(seg(ct)?),
                None => None,
            });
        }
        let n_ct = 1 + ldcts.iter().flatten().count();
        for (p, n, s) in per_plane {
            push(
                stages,
                Stage {
                    name: format!("segment {}", p.name()),
                    device: dev.clone(),
                    seconds: s,
                    counted: true,
                    detail: format!("{n_ct} CTs, {n} slices, batch {}", opts.batch_size),
                },
            );
        }
        (d, per_tp)
    } else {
        let line = format!(
            "segmentation: skipped: no model at {} (give --weights DIR); the dose uses the phantom's truth masks",
            model_dir.display()
        );
        println!("{line}");
        notes.push(line);
        let truth = study_dir.join("truth");
        anyhow::ensure!(
            truth.join("labels_ct.nii.gz").is_file(),
            "no segmentation model at {} and no phantom truth masks in {}: give --weights DIR",
            model_dir.display(),
            truth.display()
        );
        let d = read_nifti_labels(&truth.join("labels_ct.nii.gz"))?;
        let mut per_tp = Vec::new();
        for k in 0..spects.len() {
            per_tp.push(Some(read_nifti_labels(
                &truth.join(format!("labels_ldct_tp{}.nii.gz", k + 1)),
            )?));
        }
        (d, per_tp)
    };

    let timepoints: Vec<TimePointInput> = study
        .timepoints
        .iter()
        .zip(spects)
        .zip(tp_labels)
        .map(|((tp, spect), labels)| TimePointInput {
            t_h: tp.t_h,
            spect_bq_per_ml: spect,
            labels: labels.unwrap_or_else(|| diag_labels.clone()),
        })
        .collect();

    // PSF: the border extension's Gaussian blur of every organ's mask on every
    // SPECT grid (the coverage fractions it blurs are made first, untimed).
    let sigma = cfg.dosimetry.psf_sigma_mm;
    let mut cores = Vec::new();
    for tp in &timepoints {
        let mut organs: Vec<u8> = tp.labels.data.iter().copied().filter(|&l| l != 0).collect();
        organs.sort_unstable();
        organs.dedup();
        let g = &tp.spect_bq_per_ml.geom;
        let cov = coverage_fractions(&tp.labels, g, cfg.dosimetry.coverage_subsamples, &organs);
        for (_, core) in cov {
            cores.push((g.dims, g.spacing, core));
        }
    }
    let t = Instant::now();
    let mut blurred = Vec::with_capacity(cores.len());
    for (dims, spacing, core) in &cores {
        let mut b = core.clone();
        backend.blur(&mut b, *dims, *spacing, sigma, Boundary::Zero)?;
        blurred.push(b);
    }
    let psf_s = t.elapsed().as_secs_f64();
    let mut detail = format!(
        "{} masks on {} SPECT grids, sigma {sigma} mm",
        cores.len(),
        timepoints.len()
    );
    if backend.is_cuda() {
        // The same blurs on the CPU twin (untimed): the kernel on real data.
        let mut worst = 0f64;
        for ((dims, spacing, core), g) in cores.iter().zip(&blurred) {
            let mut c = core.clone();
            organdose::dosimetry::psf::gaussian_blur_3d(
                &mut c,
                *dims,
                *spacing,
                sigma,
                Boundary::Zero,
            );
            for (a, b) in g.iter().zip(&c) {
                worst = worst.max((a - b).abs() as f64 / (b.abs() as f64).max(1e-6));
            }
        }
        detail.push_str(&format!("; max rel. diff to CPU {worst:.1e}"));
    }
    push(
        stages,
        Stage {
            name: "PSF (border blur)".into(),
            device: dev.clone(),
            seconds: psf_s,
            counted: true,
            detail,
        },
    );

    // Dose: the dosimetry as `organdose run` computes it.
    let input = DoseInput {
        patient_id: study.patient_id.clone(),
        diag_ct_labels: diag_labels,
        timepoints,
        nuclide: Nuclide::from_name(&study.injection.nuclide)?,
        injected_activity_mbq: study.injection.activity_mbq,
    };
    let t = Instant::now();
    let summary = organdose::dosimetry::run(&input, &cfg.dosimetry)?;
    push(
        stages,
        Stage {
            name: "dose".into(),
            device: "cpu".into(),
            seconds: t.elapsed().as_secs_f64(),
            counted: true,
            detail: format!(
                "dosimetry::run, {} organs (activities with the CPU PSF, fits, dose map, DVH)",
                summary.organs.len()
            ),
        },
    );
    Ok(est_mb)
}

fn print_report(r: &Report) {
    println!(
        "{:<32} {:<6} {:>9.3}  ingest + segmentation + PSF + dose",
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
