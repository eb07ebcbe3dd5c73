//! `organdose segment`: organ labels from a CT, or one raw forward pass.

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use organdose::config::Config;
use organdose::io::{dicom, nifti};
use organdose::seg::driver::{self, DriverOptions, Planes};
use organdose::seg::engine::Engine;
use organdose::seg::MaskRcnn;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// CT: DICOM file or folder, or NIfTI.
    #[arg(required_unless_present = "raw_input")]
    pub ct: Option<PathBuf>,
    /// Output label map (.nii.gz): 0 background, 1 liver, 2 kidney_left, 3 kidney_right.
    #[arg(short, long, required_unless_present = "raw_input")]
    pub output: Option<PathBuf>,
    /// Planes: auto (three planes' probabilities fused, weighted by what the
    /// scan lets each see), axial only, or all three joined by voxel vote.
    #[arg(long, value_enum)]
    pub planes: Option<Planes>,
    /// Model folder (model.toml + weights); default: [segment] weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Also write a quality-control PNG: axial, coronal and sagittal views
    /// through the organs, organ outlines on the CT (radiological: patient
    /// right on the image's left), physical aspect ratio.
    #[arg(long, conflicts_with = "raw_input")]
    pub overlay: Option<PathBuf>,
    /// Also write a JSON report: per organ its confidence (0-1), flag (ok or
    /// review), the reasons and the volume (docs/segmentation.md, "Mask confidence").
    #[arg(long, conflicts_with = "raw_input")]
    pub report: Option<PathBuf>,
    /// SeriesInstanceUID when the DICOM input holds several series.
    #[arg(long)]
    pub series: Option<String>,
    /// One forward pass on the N x 3 x H x W tensor "input" of this safetensors file.
    #[arg(long, requires = "raw_output", conflicts_with_all = ["ct", "output"])]
    pub raw_input: Option<PathBuf>,
    /// Where the raw forward pass writes boxes, labels, scores, masks.
    #[arg(long, requires = "raw_input")]
    pub raw_output: Option<PathBuf>,
    /// With --raw-input: also write the FPN features.
    #[arg(long, requires = "raw_input")]
    pub features: bool,
}

/// `--weights DIR`, else the config's `segment.weights`; an error that says
/// so when the folder holds no model.toml.
/// The configured model folder; a relative one that is not under the current
/// folder is looked up in the source tree the binary was built from, so
/// `organdose demo` finds the shipped weights from anywhere on the build machine.
pub fn resolve_default_weights(dir: &Path) -> PathBuf {
    if dir.is_relative() && !dir.join("model.toml").is_file() {
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        if built.join("model.toml").is_file() {
            return built;
        }
    }
    dir.to_path_buf()
}

pub fn model_dir_or_default(weights: Option<&Path>, cfg: &Config) -> anyhow::Result<PathBuf> {
    let dir = weights
        .map(Path::to_path_buf)
        .unwrap_or_else(|| resolve_default_weights(&cfg.segment.weights));
    if !dir.join("model.toml").is_file() {
        bail!(
            "no segmentation model at {}: none is installed yet (training is a separate step); \
             pass --weights DIR with DIR/model.toml and its safetensors weights",
            dir.display()
        );
    }
    Ok(dir)
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    // The process's engine: the configured device, the model loaded once.
    let engine = Engine::shared(cfg.segment.device)?;
    let model = engine.model(&model_dir_or_default(args.weights.as_deref(), cfg)?)?;
    if let Some(inp) = &args.raw_input {
        let out = args
            .raw_output
            .as_deref()
            .context("--raw-output is required")?;
        return raw(&model, engine.device(), inp, out, args.features);
    }
    let (Some(ct_path), Some(out)) = (&args.ct, &args.output) else {
        bail!("give CT_PATH and -o OUTPUT, or --raw-input and --raw-output");
    };
    let ct = if nifti::is_nifti_path(ct_path) {
        nifti::read_nifti(ct_path)?
    } else {
        dicom::read_single_series(ct_path, args.series.as_deref(), &cfg.ingest)?.1
    };
    let planes = args.planes.unwrap_or(cfg.segment.planes);
    let opts = DriverOptions {
        planes,
        ..cfg.segment.driver_options()
    };
    let total: u64 = driver::planes_of(planes)
        .iter()
        .map(|p| ct.geom.dims[p.axes().0] as u64)
        .sum();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "segment {bar:40} {pos}/{len} slices {elapsed}/{eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let t0 = std::time::Instant::now();
    let seg = driver::segment_detail(
        &model,
        &ct,
        &opts,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64)
        },
        &mut |_, _, _| {},
    )?;
    bar.finish_and_clear();
    // The driver has logged its notes (planes that lost weight, dropped parts).
    if let Some(rp) = &args.report {
        let targets = driver::class_targets(&model.cfg.classes)?;
        let organs: serde_json::Map<String, serde_json::Value> =
            organdose::seg::confidence::assess(&seg, &ct, &targets, &|_| None)
                .into_iter()
                .map(|(o, c)| {
                    if c.flag == organdose::seg::confidence::Flag::Review {
                        tracing::warn!(
                            "{o}: review (confidence {:.2}): {}",
                            c.confidence,
                            c.reasons.join("; ")
                        );
                    }
                    Ok((o, serde_json::to_value(c)?))
                })
                .collect::<anyhow::Result<_>>()?;
        let doc = serde_json::json!({
            "ct": ct_path.display().to_string(),
            "planes": planes.name(),
            "planes_run": seg.planes_run.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "notes": seg.notes,
            "organs": organs,
        });
        let tmp = rp.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, rp).with_context(|| format!("renaming to {}", rp.display()))?;
    }
    let labels = seg.labels;
    nifti::write_nifti(&labels, out, "organdose segment")?;
    if let Some(qc) = &args.overlay {
        organdose::report::overlay::write_overlay(qc, &ct, &labels, &Default::default())?;
        tracing::info!("wrote {}", qc.display());
    }
    let mut counts = [0usize; 256];
    for &l in &labels.data {
        counts[l as usize] += 1;
    }
    let ml = labels.geom.voxel_volume_ml();
    let summary: Vec<String> = organdose::organs::ORGANS
        .iter()
        .filter(|(l, _)| counts[*l as usize] > 0)
        .map(|(l, n)| format!("{n} {:.1} mL", counts[*l as usize] as f64 * ml))
        .collect();
    tracing::info!(
        "wrote {} in {:.1} s ({}): {}",
        out.display(),
        t0.elapsed().as_secs_f64(),
        seg.planes_run
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join("+")
            + match planes {
                Planes::Auto if seg.planes_run.len() > 1 => ", fused",
                Planes::All => ", vote",
                _ => "",
            },
        if summary.is_empty() {
            "no organ found".to_string()
        } else {
            summary.join(", ")
        }
    );
    Ok(())
}

fn raw(
    model: &MaskRcnn,
    dev: &Device,
    inp: &Path,
    out: &Path,
    features: bool,
) -> anyhow::Result<()> {
    let t = candle_core::safetensors::load(inp, dev)
        .with_context(|| format!("{}: not readable safetensors", inp.display()))?;
    let x = match t.get("input") {
        Some(x) => x.clone(),
        None if t.len() == 1 => t.values().next().cloned().context("empty file")?,
        None => bail!("{}: no tensor named \"input\"", inp.display()),
    };
    let x = x.to_dtype(candle_core::DType::F32)?;
    let Ok((n, c, h, w)) = x.dims4() else {
        bail!(
            "{}: input must be N x 3 x H x W, got {:?}",
            inp.display(),
            x.dims()
        );
    };
    let data: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let f = model.forward(&data, [n, c, h, w], features)?;
    let mut o: HashMap<String, Tensor> = HashMap::new();
    for (i, d) in f.detections.iter().enumerate() {
        let k = d.boxes.len();
        let b: Vec<f32> = d.boxes.iter().flatten().copied().collect();
        o.insert(format!("boxes.{i}"), Tensor::from_vec(b, (k, 4), dev)?);
        let l: Vec<i64> = d.labels.iter().map(|&l| l as i64).collect();
        o.insert(format!("labels.{i}"), Tensor::from_vec(l, k, dev)?);
        o.insert(
            format!("scores.{i}"),
            Tensor::from_vec(d.scores.clone(), k, dev)?,
        );
        let m: Vec<f32> = d.masks.iter().flatten().copied().collect();
        o.insert(
            format!("masks.{i}"),
            Tensor::from_vec(m, (k, 1, h, w), dev)?,
        );
        let p: Vec<f32> = f.proposals[i].iter().flatten().copied().collect();
        let np = f.proposals[i].len();
        o.insert(format!("proposals.{i}"), Tensor::from_vec(p, (np, 4), dev)?);
    }
    if let Some(fs) = &f.features {
        for (name, t) in ["0", "1", "2", "3", "pool"].iter().zip(fs) {
            o.insert(format!("features.{name}"), t.clone());
        }
    }
    let tmp = out.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&o, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    let k: usize = f.detections.iter().map(|d| d.boxes.len()).sum();
    tracing::info!("wrote {} ({n} images, {k} detections)", out.display());
    Ok(())
}
