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
use organdose::seg::confidence;
use organdose::seg::cycle;
use organdose::seg::driver::{self, ClassTarget, DriverOptions, Planes};
use organdose::seg::engine::Engine;
use organdose::seg::eval::{cut_slab, organ_metrics, OrganMetrics};
use organdose::seg::fusion::{self, PlaneWeights};
use organdose::seg::realct::{
    self, CaseKind, CaseSource, GenericTruth, PngSliceOptions, TruthOrgan,
};
use organdose::volume::Volume;
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
    /// Planes: auto (probabilities fused, weighted by geometry), axial only,
    /// or all three joined by voxel vote.
    #[arg(long, value_enum, conflicts_with = "compare")]
    pub planes: Option<Planes>,
    /// Score axial, all and auto side by side from one run of each plane.
    #[arg(long)]
    pub compare: bool,
    /// With --data --compare: also score the auto fusion at other thresholds
    /// and with equal plane weights, from the same passes (for tuning on
    /// phantoms; never on the labelled real cases).
    #[arg(long, requires = "compare", requires = "data")]
    pub sweep: bool,
    /// Score a thin slab of each 3-D CT instead: N slices MM apart (e.g.
    /// 20:2), centred on the truth's kidneys (else its organs), the CT
    /// interpolated along z, the truth by nearest slice.
    #[arg(long, value_parser = parse_slab)]
    pub slab: Option<(usize, f64)>,
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
    /// Write each auto mask's confidence, its signals and its Dice against
    /// the truth (for calibrating and judging `seg::confidence`).
    #[arg(long)]
    pub trust_json: Option<PathBuf>,
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
    let modes = modes_of(&args, planes);
    let labels = evaluated_organs(&model.cfg.classes)?;
    let mut by_mode: Vec<Vec<PatientResult>> = modes.iter().map(|_| Vec::new()).collect();
    type SweepCell = (Vec<f64>, Vec<f64>);
    // (scan id, truth, one prediction per mode, seconds) of the current patient.
    let mut pending: Vec<Pending> = Vec::new();
    let mut cycles: Vec<(String, cycle::OrganCycle, Vec<f64>)> = Vec::new();
    let auto_at = modes.iter().position(|&m| m == Planes::Auto);
    let mut trust: Vec<(String, String, confidence::OrganConfidence, f64)> = Vec::new();
    let flush = |pending: &mut Vec<Pending>,
                 by_mode: &mut Vec<Vec<PatientResult>>,
                 cycles: &mut Vec<(String, cycle::OrganCycle, Vec<f64>)>|
     -> anyhow::Result<()> {
        if let (Some(a), true) = (auto_at, pending.len() >= 3) {
            let mut maps: Vec<Volume<u8>> = pending
                .iter_mut()
                .map(|p| std::mem::replace(&mut p.2[a], Volume::filled(p.1.geom.clone(), 0)))
                .collect();
            let names: Vec<String> = pending.iter().map(|p| p.0.clone()).collect();
            let confs: Vec<BTreeMap<String, f64>> = pending.iter().map(|p| p.4.clone()).collect();
            let conf_of = |i: usize, organ: u8| -> Option<f64> {
                confs.get(i)?.get(organs::name(organ)?).copied()
            };
            let (rep, _) = cycle::harmonise(&mut maps, &names, &conf_of);
            for (p, m) in pending.iter_mut().zip(maps) {
                p.2[a] = m;
            }
            let pid = names[0].split('~').next().unwrap_or("").to_string();
            for oc in rep {
                let organ = organs::label(&oc.organ).unwrap_or(0);
                let truth_ml: Vec<f64> = pending
                    .iter()
                    .map(|p| {
                        p.1.data.iter().filter(|&&v| v == organ).count() as f64
                            * p.1.geom.voxel_volume_ml()
                    })
                    .collect();
                cycles.push((pid.clone(), oc, truth_ml));
            }
        }
        for (id, truth, preds, seconds, _) in pending.drain(..) {
            for (results, pred) in by_mode.iter_mut().zip(&preds) {
                let organs_m = labels
                    .iter()
                    .map(|&l| {
                        (
                            organs::name(l).unwrap_or("?").to_string(),
                            organ_metrics(pred, &truth, l),
                        )
                    })
                    .collect();
                results.push(PatientResult {
                    patient: id.clone(),
                    seconds,
                    organs: organs_m,
                });
            }
        }
        Ok(())
    };
    let mut sweep: BTreeMap<String, BTreeMap<String, SweepCell>> = BTreeMap::new();
    let scans = scans_of(&pdirs, &args.scans)?;
    // `auto` alone: a patient's low-dose CTs follow its diagnostic CT's masks
    // (`segment.low_dose_ct`), as `run` does: (patient, labels, confidences).
    let follow = modes == [Planes::Auto]
        && args.slab.is_none()
        && cfg.segment.low_dose_ct == organdose::seg::settings::LowDoseCt::Follow;
    let mut reference: Option<(String, Volume<u8>, BTreeMap<String, f64>)> = None;
    // `auto` alone, `segment.low_dose_ct = "bounded"`: a patient's low-dose
    // CTs' axial passes bounded by its diagnostic CT's organs, as `run` does.
    let bounded = modes == [Planes::Auto]
        && args.slab.is_none()
        && cfg.segment.low_dose_ct == organdose::seg::settings::LowDoseCt::Bounded;
    let mut bound_ref: Option<(String, organdose::seg::follow::Reference)> = None;
    let mut bounded_scans = 0usize;
    let mut followed_scans = 0usize;
    let mut full_passes: Vec<String> = Vec::new();
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
        let (ct, truth) = match args.slab {
            Some((n, mm)) => cut_slab(&ct, &truth, n, mm).with_context(|| {
                format!("{}: no truth to centre a slab on", truth_path.display())
            })?,
            None => (ct, truth),
        };
        let t0 = std::time::Instant::now();
        eprint!("[{}/{}] {id}: segmenting ({pname}) ...", n + 1, scans.len());
        let (patient, ldct) = match id.split_once('~') {
            Some((p, _)) => (p.to_string(), true),
            None => (id.clone(), false),
        };
        use organdose::seg::follow::LowDose;
        let follow_from = reference
            .as_ref()
            .filter(|r| follow && ldct && r.0 == patient);
        let bound_from = bound_ref
            .as_ref()
            .filter(|r| bounded && ldct && r.0 == patient);
        let how = match (follow_from, bound_from) {
            (Some((_, r, _)), _) => Some(LowDose::Follow(r)),
            (None, Some((_, r))) => Some(LowDose::Bounded(r)),
            (None, None) => None,
        };
        let mut followed = None;
        let segs = match how {
            Some(how) => {
                let l = organdose::seg::follow::segment_low_dose(
                    &model,
                    &ct,
                    &opts,
                    how,
                    &mut |_, _| {},
                    &mut |_, _, _| {},
                )?;
                match (&l.full_pass_because, follow_from) {
                    (Some(why), _) => full_passes.push(format!("{id}: {why}")),
                    (None, Some((_, _, conf))) => {
                        followed_scans += 1;
                        followed = Some(conf.clone());
                    }
                    (None, None) => bounded_scans += 1,
                }
                vec![l.seg]
            }
            None => driver::segment_modes(
                &model,
                &ct,
                &opts,
                &modes,
                &mut |_, _| {},
                &mut |_, _, _| {},
            )?,
        };
        if bounded && !ldct {
            if let Some(s) = segs.first() {
                bound_ref = Some((
                    patient.clone(),
                    organdose::seg::follow::Reference::new(&ct, &s.labels),
                ));
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        eprintln!(
            " {seconds:.1} s{}",
            if followed.is_some() {
                " (followed the diagnostic CT)"
            } else {
                ""
            }
        );
        if args.sweep {
            if let Some(auto) = segs.iter().find(|s| s.planes == Planes::Auto) {
                let targets = driver::class_targets(&model.cfg.classes)?;
                let geomw = auto
                    .weights
                    .clone()
                    .unwrap_or_else(|| PlaneWeights::for_geometry(&ct.geom, &targets));
                let run: Vec<_> = auto.plane_probs.iter().map(|p| p.plane).collect();
                let equal = PlaneWeights::equal(&run, targets.len());
                let variants = SWEEP_THRESH.iter().flat_map(|&th| {
                    [fusion::FuseRule::Median, fusion::FuseRule::Mean]
                        .into_iter()
                        .flat_map(move |r| [true, false].map(|h| (r, th, h)))
                });
                for (wname, w) in [("geom", &geomw), ("equal", &equal)] {
                    for (rule, th, holes) in variants.clone() {
                        if wname == "equal" && !(holes && th == 0.5) {
                            continue;
                        }
                        let lab = fusion::fused_labels(
                            &auto.plane_probs,
                            w,
                            &fusion::FuseOptions {
                                rule,
                                thresh: th,
                                max_fill_gap: opts.max_fill_gap,
                                fill_holes: holes,
                            },
                            &ct,
                            &targets,
                        )
                        .labels;
                        let pred = Volume {
                            geom: ct.geom.clone(),
                            data: lab,
                        };
                        let key = format!(
                            "{} t={th:.2} w={wname}{}",
                            rule.name(),
                            if holes { "" } else { " no-holes" }
                        );
                        let e = sweep.entry(key).or_default();
                        for &l in &labels {
                            let (d, ve) = dice_volume(&pred, &truth, l);
                            let name = organs::name(l).unwrap_or("?").to_string();
                            let x = e.entry(name).or_default();
                            x.0.extend(d);
                            x.1.extend(ve);
                        }
                    }
                }
            }
        }
        let mut scan_conf = BTreeMap::new();
        if let Some(conf) = followed {
            // The diagnostic CT's masks, moved: its confidences (as `run`).
            scan_conf = conf;
        } else if let Some(a) = auto_at {
            let targets = driver::class_targets(&model.cfg.classes)?;
            for (organ, c) in confidence::assess(&segs[a], &ct, &targets, &|_| None) {
                scan_conf.insert(organ.clone(), c.confidence);
                let l = organs::label(&organ).unwrap_or(0);
                let (d, _) = dice_volume(&segs[a].labels, &truth, l);
                let truth_ml = truth.data.iter().filter(|&&v| v == l).count() as f64
                    * truth.geom.voxel_volume_ml();
                if truth_ml > 0.0 {
                    trust.push((id.clone(), organ, c, d.unwrap_or(0.0)));
                }
            }
        }
        if follow && !ldct {
            if let Some(a) = auto_at {
                reference = Some((patient.clone(), segs[a].labels.clone(), scan_conf.clone()));
            }
        }
        // Scored when the patient's scans are all in: auto's masks are first
        // made to agree across the cycle (`seg::cycle`), as `run` does.
        if pending
            .first()
            .is_some_and(|p| p.0.split('~').next() != Some(&patient))
        {
            flush(&mut pending, &mut by_mode, &mut cycles)?;
        }
        pending.push((
            id,
            truth,
            segs.into_iter().map(|s| s.labels).collect(),
            seconds,
            scan_conf,
        ));
    }
    flush(&mut pending, &mut by_mode, &mut cycles)?;
    if bounded {
        println!(
            "low-dose CTs segmented in their diagnostic CT's bounds: {bounded_scans}; full passes: {}",
            full_passes.len()
        );
        for f in &full_passes {
            println!("  full pass, {f}");
        }
    }
    if follow {
        println!(
            "low-dose CTs that followed their diagnostic CT: {followed_scans}; full passes: {}",
            full_passes.len()
        );
        for f in &full_passes {
            println!("  full pass, {f}");
        }
    }
    if !cycles.is_empty() {
        println!("kidney volume across each patient's CTs, auto (mL; CV = SD / mean):");
        println!(
            "{:<14} {:<13} {:>8} {:>8} {:>8}  volumes before -> after (truth)",
            "patient", "organ", "CV truth", "CV before", "CV after"
        );
        let (mut cb, mut ca) = (Vec::new(), Vec::new());
        for (pid, oc, truth_ml) in &cycles {
            let f = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let (b, a) = (
                cycle::cv(&oc.volumes_ml_before),
                cycle::cv(&oc.volumes_ml_after),
            );
            cb.extend(b);
            ca.extend(a);
            println!(
                "{pid:<14} {:<13} {:>8} {:>8} {:>8}  {} -> {} ({})",
                oc.organ,
                fmt(cycle::cv(truth_ml).map(|x| 100.0 * x), 1),
                fmt(b.map(|x| 100.0 * x), 1),
                fmt(a.map(|x| 100.0 * x), 1),
                f(&oc.volumes_ml_before),
                f(&oc.volumes_ml_after),
                f(truth_ml)
            );
        }
        println!(
            "mean CV of kidney volume: before {} %, after {} %\n",
            fmt(mean(&cb).map(|x| 100.0 * x), 2),
            fmt(mean(&ca).map(|x| 100.0 * x), 2)
        );
    }
    let names: Vec<String> = labels
        .iter()
        .map(|&l| organs::name(l).unwrap_or("?").to_string())
        .collect();
    if !trust.is_empty() {
        print_trust(&trust);
    }
    if let Some(p) = &args.trust_json {
        write_trust(p, &trust)?;
    }
    if !sweep.is_empty() {
        println!("sweep of the auto fusion (mean Dice / mean volume error %):");
        print!("{:<22}", "variant");
        for n in &names {
            print!(" {n:>20}");
        }
        println!();
        for (k, per) in &sweep {
            print!("{k:<22}");
            for n in &names {
                let (d, v) = per.get(n).cloned().unwrap_or_default();
                print!(
                    " {:>20}",
                    format!("{} / {}", fmt(mean(&d), 4), fmt(mean(&v), 1))
                );
            }
            println!();
        }
        println!();
    }
    if modes.len() > 1 {
        return compare_phantoms(
            &args,
            &data,
            &wdir,
            &model.cfg.classes,
            &names,
            &modes,
            by_mode,
        );
    }
    let results = by_mode.pop().unwrap_or_default();
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
    write_json(&out, &report)?;
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

/// Keyed "<volume|slice>/<organ>", over the cases that loaded.
fn real_summaries(results: &[RealCaseResult]) -> BTreeMap<String, RealSummary> {
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
    summary
}

/// `eval --real --compare`: the 3-D cases per organ and the summaries per
/// kind and organ, each mode side by side; JSON with one report per mode.
fn compare_real(
    args: &Args,
    real: &Path,
    wdir: &Path,
    classes: &[String],
    png: Option<PngSliceOptions>,
    modes: &[Planes],
    by_mode: Vec<Vec<RealCaseResult>>,
) -> anyhow::Result<()> {
    print!("{:<20} {:<13} {:>10}", "3-D case", "organ", "truth mL");
    for m in modes {
        print!(" {:>10} {:>7}", format!("{} Dice", m.name()), "vol %");
    }
    println!();
    let n = by_mode.first().map_or(0, Vec::len);
    for i in 0..n {
        let r0 = &by_mode[0][i];
        if let Some(e) = &r0.error {
            println!("{:<20} error: {e}", r0.case);
            continue;
        }
        if r0.kind != CaseKind::Volume {
            continue;
        }
        for (organ, m0) in r0.organs.iter().filter(|(_, m)| m.dice.is_some()) {
            print!("{:<20} {:<13} {:>10.1}", r0.case, organ, m0.truth_ml);
            for r in &by_mode {
                let m = &r[i].organs[organ];
                print!(" {:>10} {:>7}", fmt(m.dice, 4), fmt(m.volume_error_pct, 1));
            }
            println!();
        }
    }
    let sums: Vec<BTreeMap<String, RealSummary>> =
        by_mode.iter().map(|r| real_summaries(r)).collect();
    print!("\n{:<22} {:>5}", "kind/organ", "cases");
    for m in modes {
        print!(
            " {:>10} {:>7} {:>7}",
            format!("{} Dice", m.name()),
            "median",
            "pooled"
        );
    }
    println!();
    for (k, s0) in &sums[0] {
        print!("{k:<22} {:>5}", s0.cases);
        for s in &sums {
            let x = &s[k];
            print!(
                " {:>10} {:>7} {:>7}",
                fmt(x.dice_mean, 4),
                fmt(x.dice_median, 4),
                fmt(x.dice_pooled, 4)
            );
        }
        println!();
    }
    let failed = by_mode
        .first()
        .map_or(0, |r| r.iter().filter(|r| r.error.is_some()).count());
    let reports: Vec<RealReport> = modes
        .iter()
        .zip(by_mode)
        .zip(sums)
        .map(|((m, cases), summary)| RealReport {
            real: real.display().to_string(),
            weights: wdir.display().to_string(),
            classes: classes.to_vec(),
            planes: *m,
            png_slices: png,
            png_slices_note: png.map(|p| p.describe()),
            cases,
            summary,
        })
        .collect();
    let out = args
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from("eval_real_compare.json"));
    write_json(&out, &reports)?;
    if failed > 0 {
        bail!("{failed} case(s) could not be loaded (see the table)");
    }
    Ok(())
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

fn parse_slab(s: &str) -> Result<(usize, f64), String> {
    let (n, mm) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: N:MM, e.g. 20:2"))?;
    let n: usize = n.parse().map_err(|_| format!("{n:?}: a slice count"))?;
    let mm: f64 = mm.parse().map_err(|_| format!("{mm:?}: a spacing in mm"))?;
    if !((2..=2000).contains(&n) && mm > 0.0 && mm <= 20.0) {
        return Err(format!("{s:?}: 2-2000 slices, 0-20 mm apart"));
    }
    Ok((n, mm))
}

/// Below this Dice a mask should be flagged; from this one it should not (issue 36).
const BAD_DICE: f64 = 0.85;
const GOOD_DICE: f64 = 0.92;

/// The auto masks' confidence against their Dice: each mask, then how well
/// the flag separates bad masks (Dice < 0.85) from good ones (>= 0.92).
fn print_trust(rows: &[(String, String, confidence::OrganConfidence, f64)]) {
    println!("mask confidence (auto) against Dice:");
    println!(
        "{:<16} {:<13} {:>6} {:>5} {:>7} {:>6} {:>6} {:>6} {:>5}  reasons",
        "scan", "organ", "Dice", "conf", "flag", "planes", "prob", "fuzzy", "cut"
    );
    for (id, organ, c, d) in rows {
        println!(
            "{:<16} {:<13} {:>6.3} {:>5.2} {:>7} {:>6} {:>6} {:>6} {:>5}  {}",
            id,
            organ,
            d,
            c.confidence,
            format!("{:?}", c.flag).to_lowercase(),
            fmt(c.signals.plane_dice_min, 3),
            fmt(c.signals.mean_probability, 3),
            fmt(c.signals.uncertain_fraction, 3),
            c.signals.cut_by_scan,
            c.reasons.join("; ")
        );
    }
    let flagged = |pred: &dyn Fn(f64) -> bool| {
        let sel: Vec<_> = rows.iter().filter(|r| pred(r.3)).collect();
        let f = sel
            .iter()
            .filter(|r| r.2.flag == confidence::Flag::Review)
            .count();
        (f, sel.len())
    };
    let (fb, nb) = flagged(&|d| d < BAD_DICE);
    let (fg, ng) = flagged(&|d| d >= GOOD_DICE);
    println!(
        "flagged: {fb} of {nb} masks with Dice < {BAD_DICE} (target >= 90 %), {fg} of {ng} with Dice >= {GOOD_DICE} (target <= 15 %)\n"
    );
}

/// One auto mask's confidence and its Dice, as `--trust-json` writes it.
#[derive(Serialize)]
struct TrustRow<'a> {
    scan: &'a str,
    organ: &'a str,
    dice: f64,
    #[serde(flatten)]
    confidence: &'a confidence::OrganConfidence,
}

fn write_trust(
    out: &Path,
    rows: &[(String, String, confidence::OrganConfidence, f64)],
) -> anyhow::Result<()> {
    let rows: Vec<TrustRow> = rows
        .iter()
        .map(|(scan, organ, c, d)| TrustRow {
            scan,
            organ,
            dice: *d,
            confidence: c,
        })
        .collect();
    write_json(out, &rows)
}

/// A scan waiting for the rest of its patient's scans: id, truth, one
/// prediction per mode, seconds, auto's mask confidence per organ.
type Pending = (
    String,
    Volume<u8>,
    Vec<Volume<u8>>,
    f64,
    BTreeMap<String, f64>,
);

/// Thresholds of the fused probability tried by `--sweep`.
const SWEEP_THRESH: [f32; 3] = [0.4, 0.45, 0.5];

/// Dice and volume error (%) of one organ, without the surface distances.
fn dice_volume(pred: &Volume<u8>, truth: &Volume<u8>, l: u8) -> (Option<f64>, Option<f64>) {
    let (mut i, mut a, mut b) = (0usize, 0usize, 0usize);
    for (&p, &t) in pred.data.iter().zip(&truth.data) {
        let (p, t) = (p == l, t == l);
        i += (p && t) as usize;
        a += p as usize;
        b += t as usize;
    }
    (
        (a + b > 0).then(|| 2.0 * i as f64 / (a + b) as f64),
        (b > 0).then(|| 100.0 * (a as f64 - b as f64) / b as f64),
    )
}

/// The modes scored: the three side by side with --compare, else one.
fn modes_of(args: &Args, planes: Planes) -> Vec<Planes> {
    if args.compare {
        vec![Planes::Axial, Planes::All, Planes::Auto]
    } else {
        vec![planes]
    }
}

fn write_json<T: Serialize>(out: &Path, v: &T) -> anyhow::Result<()> {
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(v)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    println!("\nwrote {}", out.display());
    Ok(())
}

/// `eval --data --compare`: Dice and volume error per scan and organ for each
/// mode side by side, then the means; JSON with one report per mode.
fn compare_phantoms(
    args: &Args,
    data: &Path,
    wdir: &Path,
    classes: &[String],
    names: &[String],
    modes: &[Planes],
    by_mode: Vec<Vec<PatientResult>>,
) -> anyhow::Result<()> {
    print!("{:<14} {:<13} {:>9}", "patient", "organ", "truth mL");
    for m in modes {
        print!(" {:>8} {:>7}", format!("{} Dice", m.name()), "vol %");
    }
    println!();
    let n = by_mode.first().map_or(0, Vec::len);
    for i in 0..n {
        for name in names {
            let Some(m0) = by_mode[0][i].organs.get(name) else {
                continue;
            };
            print!(
                "{:<14} {:<13} {:>9.1}",
                by_mode[0][i].patient, name, m0.truth_ml
            );
            for r in &by_mode {
                let m = &r[i].organs[name];
                print!(" {:>8} {:>7}", fmt(m.dice, 4), fmt(m.volume_error_pct, 1));
            }
            println!();
        }
    }
    println!("\nmean over {n} scans ({}):", args.scans);
    print!("{:<13}", "organ");
    for m in modes {
        print!(
            " {:>8} {:>7} {:>7}",
            format!("{} Dice", m.name()),
            "min",
            "vol %"
        );
    }
    println!();
    let mut reports = Vec::new();
    let sums: Vec<BTreeMap<String, Summary>> = by_mode
        .iter()
        .map(|rs| {
            names
                .iter()
                .map(|n| (n.clone(), summarise(rs, n)))
                .collect()
        })
        .collect();
    for name in names {
        print!("{name:<13}");
        for s in &sums {
            let s = &s[name];
            print!(
                " {:>8} {:>7} {:>7}",
                fmt(s.dice_mean, 4),
                fmt(s.dice_min, 4),
                fmt(s.volume_error_pct_mean, 1)
            );
        }
        println!();
    }
    for ((m, rs), summary) in modes.iter().zip(by_mode).zip(sums) {
        reports.push(Report {
            data: data.display().to_string(),
            weights: wdir.display().to_string(),
            classes: classes.to_vec(),
            planes: *m,
            patients: rs,
            summary,
        });
    }
    let out = args
        .json
        .clone()
        .unwrap_or_else(|| data.join(format!("eval_{}_compare.json", args.scans)));
    write_json(&out, &reports)
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
    let modes = modes_of(args, planes);
    let mut by_mode: Vec<Vec<RealCaseResult>> = modes.iter().map(|_| Vec::new()).collect();
    let mut trust: Vec<(String, String, confidence::OrganConfidence, f64)> = Vec::new();
    for (n, src) in sources.iter().enumerate() {
        let name = src.name();
        eprint!("[{}/{}] {name}: loading ...", n + 1, sources.len());
        let t0 = std::time::Instant::now();
        let case = match src.load(&cfg.ingest, &png) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(" failed: {e}");
                for (results, &m) in by_mode.iter_mut().zip(&modes) {
                    results.push(RealCaseResult {
                        case: name.clone(),
                        kind: CaseKind::Volume,
                        planes: m,
                        seconds: 0.0,
                        organs: BTreeMap::new(),
                        error: Some(e.to_string()),
                    });
                }
                continue;
            }
        };
        let case = match (args.slab, case.kind) {
            (Some((n, mm)), CaseKind::Volume) => {
                let (ct, truth) = cut_slab(&case.ct, &case.truth, n, mm)
                    .with_context(|| format!("{name}: no truth to centre a slab on"))?;
                realct::RealCase { ct, truth, ..case }
            }
            _ => case,
        };
        // A repeated 2-D slice has no coronal or sagittal extent for a vote
        // (auto gives those planes no weight by itself).
        let case_modes: Vec<Planes> = modes
            .iter()
            .map(|&m| {
                if case.kind == CaseKind::Slice && m == Planes::All {
                    Planes::Axial
                } else {
                    m
                }
            })
            .collect();
        let mut opts = DriverOptions {
            planes: case_modes[0],
            ..cfg.segment.driver_options()
        };
        if args.all_slices {
            opts.other_planes_margin_mm = None;
        }
        eprint!(" segmenting ...");
        let segs = driver::segment_modes(
            &model,
            &case.ct,
            &opts,
            &case_modes,
            &mut |_, _| {},
            &mut |_, _, _| {},
        )?;
        let seconds = t0.elapsed().as_secs_f64();
        eprintln!(" {seconds:.1} s");
        // The auto masks' confidence against their Dice (3-D cases: a
        // repeated 2-D slice has no planes to compare or edge to be cut by).
        if case.kind == CaseKind::Volume {
            if let Some(a) = case_modes.iter().rposition(|&m| m == Planes::Auto) {
                let targets = driver::class_targets(&model.cfg.classes)?;
                let scored: BTreeMap<String, organdose::seg::eval::OrganMetrics> =
                    realct::score(&segs[a].labels, &case)?.into_iter().collect();
                for (organ, c) in confidence::assess(&segs[a], &case.ct, &targets, &|_| None) {
                    if let Some(d) = scored.get(&organ).and_then(|m| m.dice) {
                        trust.push((name.clone(), organ, c, d));
                    }
                }
            }
        }
        for ((results, seg), &m) in by_mode.iter_mut().zip(&segs).zip(&case_modes) {
            let organs_m = realct::score(&seg.labels, &case)?.into_iter().collect();
            results.push(RealCaseResult {
                case: name.clone(),
                kind: case.kind,
                planes: m,
                seconds,
                organs: organs_m,
                error: None,
            });
        }
    }
    if !trust.is_empty() {
        print_trust(&trust);
    }
    if let Some(p) = &args.trust_json {
        write_trust(p, &trust)?;
    }
    if modes.len() > 1 {
        return compare_real(
            args,
            real,
            &wdir,
            &model.cfg.classes,
            any_png.then_some(png),
            &modes,
            by_mode,
        );
    }
    let results = by_mode.pop().unwrap_or_default();
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
        let pl = r.planes.name();
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
    let summary = real_summaries(&results);
    println!(
        "\nper organ ({pname} on 3-D cases; on 2-D slices the axial plane, cleaned up with auto):\n{:<22} {:>5} {:>7} {:>7} {:>7} {:>8} {:>9} {:>12}",
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
    write_json(&out, &report)?;
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
