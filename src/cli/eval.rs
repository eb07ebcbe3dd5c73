//! `organdose eval --data DIR`: segments phantom patients and scores the
//! masks against their truth labels (Dice, HD95, volume error, missed slices).
//! `organdose eval --real DIR_OR_CT`: the same on labelled real CTs
//! (`organdose::seg::realct`: CHAOS, 3D-IRCADb, PNG slices, or a CT with a
//! label map / per-slice masks).

use super::segment::model_dir_or_default;
use anyhow::{bail, Context};
use organdose::config::Config;
use organdose::io::nifti;
use organdose::organs;
use organdose::seg::driver::{self, ClassTarget, DriverOptions, Planes};
use organdose::seg::engine::Engine;
use organdose::seg::eval::{organ_metrics, OrganMetrics};
use organdose::seg::realct::{
    self, CaseKind, CaseSource, GenericTruth, PngSliceOptions, TruthOrgan,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Folder of phantom patients written with `organdose phantom --format nifti`
    /// (DIR/<pid>/ct.nii.gz and DIR/<pid>/truth/labels_ct.nii.gz).
    #[arg(long, required_unless_present = "real", conflicts_with = "real")]
    pub data: Option<PathBuf>,
    /// Labelled real CTs: a folder holding CHAOS (DICOM_anon/ + Ground/),
    /// 3D-IRCADb (PATIENT_DICOM/ + MASKS_DICOM_liver.zip) or PNG slices
    /// (images/ + masks/), or sub-folders of those; or, with --label-map or
    /// --masks, one CT (DICOM folder or NIfTI).
    #[arg(long)]
    pub real: Option<PathBuf>,
    /// With --real CT: truth label map (NIfTI), values named by --map.
    #[arg(long, requires = "real", requires = "map", conflicts_with = "masks")]
    pub label_map: Option<PathBuf>,
    /// With --label-map: VALUE=ORGAN pairs, e.g. 1=liver,2=kidney ("kidney":
    /// both kidneys in one label, scored against kidney_left + kidney_right).
    #[arg(long, requires = "label_map")]
    pub map: Option<String>,
    /// With --real CT: folder of one PNG mask per slice (non-zero = organ), in
    /// the DICOM files' name order (NIfTI: slice order).
    #[arg(long, requires = "real")]
    pub masks: Option<PathBuf>,
    /// Organ of the --masks files.
    #[arg(long, default_value = "liver", requires = "masks")]
    pub mask_organ: String,
    /// PNG slices: HU of grey 0 (not stored in the files; an estimate).
    #[arg(long, default_value_t = PngSliceOptions::default().hu_at_grey0, allow_hyphen_values = true)]
    pub png_hu_lo: f64,
    /// PNG slices: HU of grey 255.
    #[arg(long, default_value_t = PngSliceOptions::default().hu_at_grey255, allow_hyphen_values = true)]
    pub png_hu_hi: f64,
    /// PNG slices: HU given to grey 0 (clipped, below the window), or
    /// "linear" to read grey 0 as --png-hu-lo like every other level.
    #[arg(long, default_value = "-1000", allow_hyphen_values = true)]
    pub png_black_hu: String,
    /// PNG slices: pixel size in mm (not stored; an estimate).
    #[arg(long, default_value_t = PngSliceOptions::default().pixel_mm)]
    pub png_pixel_mm: f64,
    /// Planes: axial only, or all three joined by voxel vote.
    #[arg(long, value_enum)]
    pub planes: Option<Planes>,
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
    /// JSON output; default DIR/eval_<scans>_<planes>.json (with --real:
    /// ./eval_real_<planes>.json, the data folders may be read-only).
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
    if let Some(real) = args.real.clone() {
        return run_real(&args, &real, cfg);
    }
    let data = args
        .data
        .clone()
        .context("--data DIR or --real DIR is required")?;
    let wdir = model_dir_or_default(args.weights.as_deref(), cfg)?;
    let pdirs = patients(&data)?;
    let model = Engine::shared(cfg.segment.device)?.model(&wdir)?;
    let (planes, pname) = planes_arg(&args, cfg);
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
        data: data.display().to_string(),
        weights: wdir.display().to_string(),
        classes: model.cfg.classes.clone(),
        planes,
        patients: results,
        summary,
    };
    let out = args
        .json
        .clone()
        .unwrap_or_else(|| data.join(format!("eval_{}_{pname}.json", args.scans)));
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming to {}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(())
}

#[derive(Serialize)]
struct RealCaseResult {
    case: String,
    kind: CaseKind,
    /// Planes the network ran on (PNG slices: axial only).
    planes: Planes,
    seconds: f64,
    /// Per organ; for slice cases the mL fields are areas in cm².
    organs: BTreeMap<String, OrganMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, Default)]
struct RealSummary {
    /// Cases with the organ in the truth or the prediction (those with a Dice).
    cases: usize,
    dice_mean: Option<f64>,
    dice_median: Option<f64>,
    dice_min: Option<f64>,
    /// Sum over cases of 2|A∩B| / sum of (|A|+|B|): one Dice of all pixels.
    dice_pooled: Option<f64>,
    hd95_mm_mean: Option<f64>,
    abs_volume_error_pct_mean: Option<f64>,
}

#[derive(Serialize)]
struct RealReport {
    real: String,
    weights: String,
    classes: Vec<String>,
    planes: Planes,
    /// How the PNG slices were turned into HU and mm (assumed, not stored).
    png_slices: Option<PngSliceOptions>,
    png_slices_note: Option<String>,
    cases: Vec<RealCaseResult>,
    /// Keyed "<volume|slice>/<organ>".
    summary: BTreeMap<String, RealSummary>,
}

fn real_summary(rs: &[&RealCaseResult], organ: &str) -> RealSummary {
    let ms: Vec<&OrganMetrics> = rs.iter().filter_map(|r| r.organs.get(organ)).collect();
    let dice: Vec<f64> = ms.iter().filter_map(|m| m.dice).collect();
    let hd: Vec<f64> = ms.iter().filter_map(|m| m.hd95_mm).collect();
    let ve: Vec<f64> = ms
        .iter()
        .filter_map(|m| m.volume_error_pct.map(f64::abs))
        .collect();
    let (mut num, mut den) = (0.0, 0.0);
    for m in &ms {
        let sz = m.truth_ml + m.predicted_ml;
        num += m.dice.unwrap_or(0.0) * sz;
        den += sz;
    }
    RealSummary {
        cases: dice.len(),
        dice_mean: mean(&dice),
        dice_median: median(&dice),
        dice_min: dice.iter().copied().reduce(f64::min),
        dice_pooled: (den > 0.0).then(|| num / den),
        hd95_mm_mean: mean(&hd),
        abs_volume_error_pct_mean: mean(&ve),
    }
}

fn real_sources(args: &Args, real: &Path) -> anyhow::Result<Vec<CaseSource>> {
    if let Some(lm) = &args.label_map {
        let spec = args
            .map
            .as_deref()
            .context("--label-map needs --map VALUE=ORGAN,...")?;
        return Ok(vec![CaseSource::Generic {
            ct: real.to_path_buf(),
            truth: GenericTruth::LabelMap {
                path: lm.clone(),
                map: realct::parse_label_mapping(spec)?,
            },
        }]);
    }
    if let Some(dir) = &args.masks {
        let organ = match args.mask_organ.as_str() {
            "kidney" => TruthOrgan::KidneyUnsplit,
            n => TruthOrgan::Label(
                organs::label(n).with_context(|| format!("--mask-organ {n}: unknown organ"))?,
            ),
        };
        return Ok(vec![CaseSource::Generic {
            ct: real.to_path_buf(),
            truth: GenericTruth::SliceMasks {
                dir: dir.clone(),
                organ,
            },
        }]);
    }
    Ok(realct::discover(real)?)
}

/// `--planes`, else the config's; with the name used in file names.
fn planes_arg(args: &Args, cfg: &Config) -> (Planes, &'static str) {
    let planes = args.planes.unwrap_or(cfg.segment.planes);
    (planes, planes.name())
}

fn run_real(args: &Args, real: &Path, cfg: &Config) -> anyhow::Result<()> {
    let wdir = model_dir_or_default(args.weights.as_deref(), cfg)?;
    let sources = real_sources(args, real)?;
    let model = Engine::shared(cfg.segment.device)?.model(&wdir)?;
    let (planes, pname) = planes_arg(args, cfg);
    let png = PngSliceOptions {
        hu_at_grey0: args.png_hu_lo,
        hu_at_grey255: args.png_hu_hi,
        hu_at_black: match args.png_black_hu.as_str() {
            "linear" => None,
            h => Some(h.parse::<f64>().map_err(|_| {
                anyhow::anyhow!("--png-black-hu {h:?}: a number of HU or \"linear\"")
            })?),
        },
        pixel_mm: args.png_pixel_mm,
        ..PngSliceOptions::default()
    };
    let any_png = sources
        .iter()
        .any(|s| matches!(s, CaseSource::PngSlice { .. }));
    if any_png {
        println!("{}", png.describe());
    }
    let mut results = Vec::new();
    for (n, src) in sources.iter().enumerate() {
        let name = src.name();
        eprint!("[{}/{}] {name}: loading ...", n + 1, sources.len());
        let t0 = std::time::Instant::now();
        let case = match src.load(&cfg.ingest, &png) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(" failed: {e}");
                results.push(RealCaseResult {
                    case: name,
                    kind: CaseKind::Volume,
                    planes,
                    seconds: 0.0,
                    organs: BTreeMap::new(),
                    error: Some(e.to_string()),
                });
                continue;
            }
        };
        // A repeated 2-D slice has no coronal or sagittal extent to segment.
        let case_planes = if case.kind == CaseKind::Slice {
            Planes::Axial
        } else {
            planes
        };
        let mut opts = DriverOptions {
            planes: case_planes,
            ..cfg.segment.driver_options()
        };
        if args.all_slices {
            opts.other_planes_margin_mm = None;
        }
        eprint!(" segmenting ...");
        let pred = driver::segment(&model, &case.ct, &opts, &mut |_, _| {})?;
        let seconds = t0.elapsed().as_secs_f64();
        eprintln!(" {seconds:.1} s");
        let organs_m = realct::score(&pred, &case)?.into_iter().collect();
        results.push(RealCaseResult {
            case: name,
            kind: case.kind,
            planes: case_planes,
            seconds,
            organs: organs_m,
            error: None,
        });
    }
    println!(
        "{:<20} {:<6} {:<7} {:<13} {:>7} {:>9} {:>10} {:>10} {:>10} {:>8}",
        "case",
        "kind",
        "planes",
        "organ",
        "Dice",
        "HD95 mm",
        "truth",
        "pred",
        "vol err %",
        "missed"
    );
    for r in &results {
        let unit = if r.kind == CaseKind::Slice {
            "cm2"
        } else {
            "mL"
        };
        let kind = if r.kind == CaseKind::Slice {
            "2-D"
        } else {
            "3-D"
        };
        let pl = if r.planes == Planes::All {
            "all"
        } else {
            "axial"
        };
        if let Some(e) = &r.error {
            println!("{:<20} error: {e}", r.case);
        }
        // A slice without the organ in truth or prediction says nothing (JSON keeps it).
        for (organ, m) in r.organs.iter().filter(|(_, m)| m.dice.is_some()) {
            println!(
                "{:<20} {:<6} {:<7} {:<13} {:>7} {:>9} {:>10} {:>10} {:>10} {:>8}",
                r.case,
                kind,
                pl,
                organ,
                fmt(m.dice, 4),
                fmt(m.hd95_mm, 1),
                format!("{:.1} {unit}", m.truth_ml),
                format!("{:.1} {unit}", m.predicted_ml),
                fmt(m.volume_error_pct, 1),
                format!("{}/{}", m.missed_slices, m.truth_slices)
            );
        }
    }
    let mut summary = BTreeMap::new();
    for (kind, kname) in [(CaseKind::Volume, "volume"), (CaseKind::Slice, "slice")] {
        let rs: Vec<&RealCaseResult> = results
            .iter()
            .filter(|r| r.kind == kind && r.error.is_none())
            .collect();
        let mut names: Vec<&String> = rs.iter().flat_map(|r| r.organs.keys()).collect();
        names.sort();
        names.dedup();
        for n in names {
            summary.insert(format!("{kname}/{n}"), real_summary(&rs, n));
        }
    }
    println!(
        "\nper organ ({pname} on 3-D cases, axial on 2-D slices):\n{:<22} {:>5} {:>7} {:>7} {:>7} {:>8} {:>9} {:>12}",
        "kind/organ", "cases", "Dice", "median", "min", "pooled", "HD95 mm", "|vol err| %"
    );
    for (k, s) in &summary {
        println!(
            "{:<22} {:>5} {:>7} {:>7} {:>7} {:>8} {:>9} {:>12}",
            k,
            s.cases,
            fmt(s.dice_mean, 4),
            fmt(s.dice_median, 4),
            fmt(s.dice_min, 4),
            fmt(s.dice_pooled, 4),
            fmt(s.hd95_mm_mean, 1),
            fmt(s.abs_volume_error_pct_mean, 1)
        );
    }
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    let report = RealReport {
        real: real.display().to_string(),
        weights: wdir.display().to_string(),
        classes: model.cfg.classes.clone(),
        planes,
        png_slices: any_png.then_some(png),
        png_slices_note: any_png.then(|| png.describe()),
        cases: results,
        summary,
    };
    let out = args
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("eval_real_{pname}.json")));
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming to {}", out.display()))?;
    println!("\nwrote {}", out.display());
    if failed > 0 {
        bail!("{failed} case(s) could not be loaded (see the table)");
    }
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
