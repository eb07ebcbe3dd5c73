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
    /// Folder where `bench/run.sh OUT model:weights/organs CT` left torchvision's
    /// timing (`torchvision.json`) and the slices it timed (`input.f32`): after
    /// the study the model runs the same slices on this process's threads and
    /// the bench prints the per-slice ratio organdose / torchvision.
    #[arg(long, value_name = "DIR")]
    pub torchvision: Option<PathBuf>,
}

/// What `bench/torchvision_bench.py` wrote about its run on a trained model.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct TorchvisionTiming {
    /// The model folder it loaded (absolute).
    pub model: PathBuf,
    pub threads: usize,
    pub batch: usize,
    pub size: usize,
    pub reps: usize,
    pub ms_per_slice_min: f64,
    pub ms_per_slice_median: f64,
    pub det_per_slice: f64,
    #[serde(default)]
    pub torch_version: String,
}

/// The forward pass on torchvision's slices, against torchvision's timing.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardRatio {
    pub torchvision: TorchvisionTiming,
    pub threads: usize,
    pub ms_per_slice_min: f64,
    pub ms_per_slice_median: f64,
    pub det_per_slice: f64,
    /// organdose / torchvision, fastest repetitions (the machine is shared:
    /// slower ones saw other load), and medians.
    pub ratio_min: f64,
    pub ratio_median: f64,
}

impl ForwardRatio {
    fn new(tv: TorchvisionTiming, threads: usize, per_slice_s: &[f64], det_per_slice: f64) -> Self {
        let mut t: Vec<f64> = per_slice_s.iter().map(|s| s * 1e3).collect();
        t.sort_by(f64::total_cmp);
        let (min, median) = (t[0], t[t.len() / 2]);
        ForwardRatio {
            ratio_min: min / tv.ms_per_slice_min,
            ratio_median: median / tv.ms_per_slice_median,
            torchvision: tv,
            threads,
            ms_per_slice_min: min,
            ms_per_slice_median: median,
            det_per_slice,
        }
    }

    fn line(&self) -> String {
        let tv = &self.torchvision;
        let threads = if tv.threads == self.threads {
            format!("{} threads", self.threads)
        } else {
            format!(
                "organdose {} threads, torchvision {} (not the same: the ratio is not like for like)",
                self.threads, tv.threads
            )
        };
        format!(
            "forward pass vs torchvision{}: organdose {:.0} ms/slice (median {:.0}), torchvision {:.0} (median {:.0}): ratio {:.2} (medians {:.2}); {} x {} px slices, min of {}, {threads}; detections per slice {:.1} / {:.1}",
            if tv.torch_version.is_empty() {
                String::new()
            } else {
                format!(" {}", tv.torch_version)
            },
            self.ms_per_slice_min,
            self.ms_per_slice_median,
            tv.ms_per_slice_min,
            tv.ms_per_slice_median,
            self.ratio_min,
            self.ratio_median,
            tv.batch,
            tv.size,
            tv.reps,
            self.det_per_slice,
            tv.det_per_slice,
        )
    }
}

/// Reads `DIR/torchvision.json` and `DIR/input.f32`, checked against the
/// model the bench runs (its folder and input size): a ratio between two
/// different models, or on other slices, would mean nothing.
fn read_torchvision(
    dir: &Path,
    model_dir: &Path,
    size: usize,
) -> anyhow::Result<(TorchvisionTiming, Vec<f32>)> {
    let jp = dir.join("torchvision.json");
    let text = std::fs::read_to_string(&jp).with_context(|| {
        format!(
            "reading {} (run bench/run.sh DIR model:MODEL CT.nii.gz first)",
            jp.display()
        )
    })?;
    let tv: TorchvisionTiming = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a torchvision timing", jp.display()))?;
    if !(tv.ms_per_slice_min > 0.0 && tv.ms_per_slice_median > 0.0 && tv.reps > 0 && tv.batch > 0) {
        anyhow::bail!("{}: times and counts must be positive", jp.display());
    }
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(&tv.model, model_dir) {
        anyhow::bail!(
            "{}: torchvision timed the model in {}, this bench runs {} (give --weights {})",
            jp.display(),
            tv.model.display(),
            model_dir.display(),
            tv.model.display()
        );
    }
    if tv.size != size {
        anyhow::bail!(
            "{}: torchvision timed {} px slices, the model takes {size}",
            jp.display(),
            tv.size
        );
    }
    let ip = dir.join("input.f32");
    // Counts from a file: checked before they size anything.
    let want = [3, size, size, 4]
        .iter()
        .try_fold(tv.batch, |a, &b| a.checked_mul(b))
        .ok_or_else(|| anyhow::anyhow!("{}: batch {} is absurd", jp.display(), tv.batch))?;
    let len = std::fs::metadata(&ip)
        .with_context(|| format!("reading {}", ip.display()))?
        .len();
    if len != want as u64 {
        anyhow::bail!(
            "{}: {len} bytes, expected {} x 3 x {size} x {size} f32 ({want} bytes)",
            ip.display(),
            tv.batch
        );
    }
    let bytes = std::fs::read(&ip).with_context(|| format!("reading {}", ip.display()))?;
    let x = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((tv, x))
}

/// The engine's model on torchvision's slices `x`: one warm-up, then as many
/// timed passes as torchvision made.
fn forward_ratio(
    model_dir: &Path,
    device: organdose::seg::engine::DeviceKind,
    tv: TorchvisionTiming,
    x: &[f32],
) -> anyhow::Result<ForwardRatio> {
    let model = Engine::shared(device)?.model(model_dir)?;
    let size = model.cfg.input.size;
    let dims = [tv.batch, 3, size, size];
    model.forward(x, dims, false)?;
    let mut times = Vec::with_capacity(tv.reps);
    let mut det = 0.0;
    for _ in 0..tv.reps {
        let t = Instant::now();
        let f = model.forward(x, dims, false)?;
        times.push(t.elapsed().as_secs_f64() / tv.batch as f64);
        det = f.detections.iter().map(|d| d.boxes.len()).sum::<usize>() as f64 / tv.batch as f64;
    }
    Ok(ForwardRatio::new(
        tv,
        rayon::current_num_threads(),
        &times,
        det,
    ))
}

/// The model folder the bench runs: `--weights`, else `segment.weights`.
fn model_dir_of(args: &Args, cfg: &Config) -> PathBuf {
    args.weights
        .clone()
        .unwrap_or_else(|| resolve_default_weights(&cfg.segment.weights))
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
    /// With `--torchvision`: the forward pass against torchvision's.
    pub forward: Option<ForwardRatio>,
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
    // A comparison that cannot run says so before minutes of study.
    let tv_model = match &args.torchvision {
        Some(dir) => {
            let model_dir = model_dir_of(&args, &cfg);
            let toml = model_dir.join("model.toml");
            if !toml.is_file() {
                anyhow::bail!(
                    "--torchvision compares the network's forward pass, but there is no model at {} (give --weights DIR)",
                    model_dir.display()
                );
            }
            let (tv, x) = read_torchvision(dir, &model_dir, ModelConfig::load(&toml)?.input.size)?;
            Some((tv, x, model_dir))
        }
        None => None,
    };
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
    // Peak memory is the study's: read before the forward-pass comparison.
    let (peak, what) = backend.peak_memory_mb();
    let forward = match tv_model {
        Some((tv, x, model_dir)) => {
            let t = Instant::now();
            let r = forward_ratio(&model_dir, cfg.segment.device, tv, &x)?;
            push(
                &mut stages,
                Stage {
                    name: "forward pass (torchvision's slices)".into(),
                    device: dev.clone(),
                    seconds: t.elapsed().as_secs_f64(),
                    counted: false,
                    detail: format!("{} x {} reps", r.torchvision.batch, r.torchvision.reps),
                },
            );
            Some(r)
        }
        None => None,
    };
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
        forward,
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
    let model_dir = model_dir_of(args, cfg);
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
    if let Some(f) = &r.forward {
        println!("{}", f.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(model: &Path) -> TorchvisionTiming {
        TorchvisionTiming {
            model: model.to_path_buf(),
            threads: 2,
            batch: 2,
            size: 8,
            reps: 3,
            ms_per_slice_min: 35.0,
            ms_per_slice_median: 37.0,
            det_per_slice: 4.0,
            torch_version: "torch 2.15.0, torchvision 0.29.2".into(),
        }
    }

    #[test]
    fn the_ratio_is_fastest_over_fastest_and_median_over_median() {
        let tv = timing(Path::new("/m"));
        let r = ForwardRatio::new(tv, 2, &[0.050, 0.040, 0.045], 4.0);
        assert_eq!((r.ms_per_slice_min, r.ms_per_slice_median), (40.0, 45.0));
        assert!((r.ratio_min - 40.0 / 35.0).abs() < 1e-12);
        assert!((r.ratio_median - 45.0 / 37.0).abs() < 1e-12);
        let line = r.line();
        assert!(line.contains("ratio 1.14 (medians 1.22)"), "{line}");
        assert!(line.contains("2 threads"), "{line}");
        let other = ForwardRatio::new(timing(Path::new("/m")), 4, &[0.04], 4.0);
        assert!(
            other.line().contains("not like for like"),
            "{}",
            other.line()
        );
    }

    #[test]
    fn a_timing_of_another_model_or_other_slices_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        let other = dir.path().join("other");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let err = read_torchvision(dir.path(), &model, 8).unwrap_err();
        assert!(format!("{err:#}").contains("torchvision.json"), "{err:#}");
        let write = |tv: &TorchvisionTiming| {
            std::fs::write(
                dir.path().join("torchvision.json"),
                serde_json::to_string(tv).unwrap(),
            )
            .unwrap()
        };
        write(&timing(&other));
        let err = format!("{:#}", read_torchvision(dir.path(), &model, 8).unwrap_err());
        assert!(err.contains("timed the model in"), "{err}");
        write(&timing(&model));
        let err = format!(
            "{:#}",
            read_torchvision(dir.path(), &model, 16).unwrap_err()
        );
        assert!(err.contains("8 px slices, the model takes 16"), "{err}");
        // A batch whose byte count overflows is refused, not wrapped.
        write(&TorchvisionTiming {
            batch: usize::MAX / 8,
            ..timing(&model)
        });
        let err = format!("{:#}", read_torchvision(dir.path(), &model, 8).unwrap_err());
        assert!(err.contains("is absurd"), "{err}");
        write(&timing(&model));
        // 2 x 3 x 8 x 8 f32 is 1536 bytes.
        std::fs::write(dir.path().join("input.f32"), vec![0u8; 1000]).unwrap();
        let err = format!("{:#}", read_torchvision(dir.path(), &model, 8).unwrap_err());
        assert!(err.contains("1000 bytes") && err.contains("1536"), "{err}");
        let x: Vec<u8> = (0..384).flat_map(|i| (i as f32).to_le_bytes()).collect();
        std::fs::write(dir.path().join("input.f32"), x).unwrap();
        let (tv, x) = read_torchvision(dir.path(), &model, 8).unwrap();
        assert_eq!((tv.batch, x.len(), x[383]), (2, 384, 383.0));
    }
}
