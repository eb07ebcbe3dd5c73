//! `organdose eval --data DIR`: segments phantom patients and scores the
//! masks against their truth labels (Dice, HD95, volume error, missed slices).

use super::segment::model_dir_or_default;
use anyhow::{bail, Context};
use organdose::config::Config;
use organdose::io::nifti;
use organdose::organs;
use organdose::seg::driver::{self, ClassTarget, DriverOptions, Planes};
use organdose::seg::eval::{organ_metrics, OrganMetrics};
use organdose::seg::MaskRcnn;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Folder of phantom patients written with `organdose phantom --format nifti`
    /// (DIR/<pid>/ct.nii.gz and DIR/<pid>/truth/labels_ct.nii.gz).
    #[arg(long)]
    pub data: PathBuf,
    /// Planes: axial only, or all three joined by voxel vote.
    #[arg(long, value_parser = ["axial", "all"])]
    pub planes: Option<String>,
    /// Model folder (model.toml + weights); default: [segment] weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Which CTs of each patient: the diagnostic CT, the time points' low-dose
    /// CTs (tp<k>_ldct.nii.gz, truth/labels_ldct_tp<k>.nii.gz), or both.
    #[arg(long, value_parser = ["ct", "ldct", "all"], default_value = "ct")]
    pub scans: String,
    /// Coronal and sagittal passes over every slice, not only around the
    /// axial pass's organs (segment.other_planes_margin_mm).
    #[arg(long)]
    pub all_slices: bool,
    /// JSON output; default DIR/eval_<planes>.json.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct PatientResult {
    patient: String,
    seconds: f64,
    organs: BTreeMap<String, OrganMetrics>,
}

#[derive(Serialize, Default)]
struct Summary {
    patients: usize,
    dice_mean: Option<f64>,
    /// One small kidney missed drags the mean; the median shows the typical scan.
    dice_median: Option<f64>,
    dice_min: Option<f64>,
    hd95_mm_mean: Option<f64>,
    volume_error_pct_mean: Option<f64>,
    abs_volume_error_pct_mean: Option<f64>,
    truth_slices: usize,
    missed_slices: usize,
}

#[derive(Serialize)]
struct Report {
    data: String,
    weights: String,
    classes: Vec<String>,
    planes: Planes,
    patients: Vec<PatientResult>,
    summary: BTreeMap<String, Summary>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some(0.5 * (s[n / 2 - 1] + s[n / 2])),
    }
}

fn summarise(rs: &[PatientResult], organ: &str) -> Summary {
    let ms: Vec<&OrganMetrics> = rs.iter().filter_map(|r| r.organs.get(organ)).collect();
    let dice: Vec<f64> = ms.iter().filter_map(|m| m.dice).collect();
    let hd: Vec<f64> = ms.iter().filter_map(|m| m.hd95_mm).collect();
    let ve: Vec<f64> = ms.iter().filter_map(|m| m.volume_error_pct).collect();
    Summary {
        patients: ms.len(),
        dice_mean: mean(&dice),
        dice_median: median(&dice),
        dice_min: dice.iter().copied().reduce(f64::min),
        hd95_mm_mean: mean(&hd),
        volume_error_pct_mean: mean(&ve),
        abs_volume_error_pct_mean: mean(&ve.iter().map(|v| v.abs()).collect::<Vec<_>>()),
        truth_slices: ms.iter().map(|m| m.truth_slices).sum(),
        missed_slices: ms.iter().map(|m| m.missed_slices).sum(),
    }
}

fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// Organ labels a model produces (a shared "kidney" class gives both sides).
fn evaluated_organs(classes: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for t in driver::class_targets(classes)?.into_iter().flatten() {
        match t {
            ClassTarget::Organ(l) => out.push(l),
            ClassTarget::Kidney => out.extend([organs::KIDNEY_LEFT, organs::KIDNEY_RIGHT]),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn patients(data: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data)
        .with_context(|| format!("reading {}", data.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("truth/labels_ct.nii.gz").is_file())
        .collect();
    v.sort();
    if v.is_empty() {
        bail!(
            "no phantom patients in {}: expected DIR/<pid>/truth/labels_ct.nii.gz \
             (make them with `organdose phantom --out DIR --format nifti --seed N --count K`)",
            data.display()
        );
    }
    Ok(v)
}

/// (id, CT, truth labels) of every scan to score: `PID` for the diagnostic CT,
/// `PID~tp<k>` for a time point's low-dose CT.
fn scans_of(pdirs: &[PathBuf], which: &str) -> anyhow::Result<Vec<(String, PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for pd in pdirs {
        let id = pd
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        if which != "ldct" {
            let ct = pd.join("ct.nii.gz");
            if !ct.is_file() {
                bail!(
                    "{}: no ct.nii.gz (eval reads the NIfTI layout: `organdose phantom --format nifti`)",
                    pd.display()
                );
            }
            out.push((id.clone(), ct, pd.join("truth/labels_ct.nii.gz")));
        }
        if which != "ct" {
            for k in 1.. {
                let ct = pd.join(format!("tp{k}_ldct.nii.gz"));
                let tl = pd.join(format!("truth/labels_ldct_tp{k}.nii.gz"));
                if !(ct.is_file() && tl.is_file()) {
                    break;
                }
                out.push((format!("{id}~tp{k}"), ct, tl));
            }
        }
    }
    if out.is_empty() {
        bail!("no {which} scans found");
    }
    Ok(out)
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let wdir = model_dir_or_default(args.weights.as_deref(), cfg)?;
    let pdirs = patients(&args.data)?;
    let model = MaskRcnn::load_dir(&wdir, &candle_core::Device::Cpu)?;
    let planes = match args.planes.as_deref() {
        Some("axial") => Planes::Axial,
        Some(_) => Planes::All,
        None => cfg.segment.planes,
    };
    let pname = if planes == Planes::All {
        "all"
    } else {
        "axial"
    };
    let mut opts = DriverOptions {
        planes,
        ..cfg.segment.driver_options()
    };
    if args.all_slices {
        opts.other_planes_margin_mm = None;
    }
    let labels = evaluated_organs(&model.cfg.classes)?;
    let mut results = Vec::new();
    let scans = scans_of(&pdirs, &args.scans)?;
    for (n, (id, ct_path, truth_path)) in scans.iter().enumerate() {
        let id = id.clone();
        let ct = nifti::read_nifti(ct_path)?;
        let truth = nifti::read_nifti_labels(truth_path)?;
        if !truth.geom.same_grid(&ct.geom, 1e-3) {
            bail!(
                "{}: truth labels are not on the CT grid",
                truth_path.display()
            );
        }
        let t0 = std::time::Instant::now();
        eprint!("[{}/{}] {id}: segmenting ({pname}) ...", n + 1, scans.len());
        let pred = driver::segment(&model, &ct, &opts, &mut |_, _| {})?;
        let seconds = t0.elapsed().as_secs_f64();
        eprintln!(" {seconds:.1} s");
        let organs_m = labels
            .iter()
            .map(|&l| {
                (
                    organs::name(l).unwrap_or("?").to_string(),
                    organ_metrics(&pred, &truth, l),
                )
            })
            .collect();
        results.push(PatientResult {
            patient: id,
            seconds,
            organs: organs_m,
        });
    }
    let names: Vec<String> = labels
        .iter()
        .map(|&l| organs::name(l).unwrap_or("?").to_string())
        .collect();
    println!(
        "{:<12} {:<13} {:>7} {:>9} {:>10} {:>10} {:>10} {:>8}",
        "patient", "organ", "Dice", "HD95 mm", "truth mL", "pred mL", "vol err %", "missed"
    );
    for r in &results {
        for (name, m) in names.iter().filter_map(|n| r.organs.get_key_value(n)) {
            println!(
                "{:<12} {:<13} {:>7} {:>9} {:>10.1} {:>10.1} {:>10} {:>8}",
                r.patient,
                name,
                fmt(m.dice, 4),
                fmt(m.hd95_mm, 1),
                m.truth_ml,
                m.predicted_ml,
                fmt(m.volume_error_pct, 1),
                format!("{}/{}", m.missed_slices, m.truth_slices)
            );
        }
    }
    let summary: BTreeMap<String, Summary> = names
        .iter()
        .map(|n| (n.clone(), summarise(&results, n)))
        .collect();
    println!(
        "\nmean over {} scans ({pname}, {}):\n{:<13} {:>7} {:>7} {:>7} {:>9} {:>10} {:>12} {:>12}",
        results.len(),
        args.scans,
        "organ",
        "Dice",
        "median",
        "min",
        "HD95 mm",
        "vol err %",
        "|vol err| %",
        "missed"
    );
    for (n, s) in names.iter().filter_map(|n| summary.get_key_value(n)) {
        println!(
            "{:<13} {:>7} {:>7} {:>7} {:>9} {:>10} {:>12} {:>12}",
            n,
            fmt(s.dice_mean, 4),
            fmt(s.dice_median, 4),
            fmt(s.dice_min, 4),
            fmt(s.hd95_mm_mean, 1),
            fmt(s.volume_error_pct_mean, 1),
            fmt(s.abs_volume_error_pct_mean, 1),
            format!("{}/{}", s.missed_slices, s.truth_slices)
        );
    }
    let report = Report {
        data: args.data.display().to_string(),
        weights: wdir.display().to_string(),
        classes: model.cfg.classes.clone(),
        planes,
        patients: results,
        summary,
    };
    let out = args
        .json
        .clone()
        .unwrap_or_else(|| args.data.join(format!("eval_{}_{pname}.json", args.scans)));
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming to {}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[0.9, 0.18, 0.97]), Some(0.9));
        assert_eq!(median(&[1.0, 0.25, 0.75, 0.5]), Some(0.625));
        assert_eq!(median(&[]), None);
    }
}
