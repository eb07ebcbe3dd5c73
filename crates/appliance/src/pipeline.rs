//! One study, start to end: study folder -> organ masks -> dosimetry -> report.
//! `organdose run`, `organdose dose` and the appliance's worker all go through
//! here, so they give the same answer for the same inputs.

use crate::config::Config;
use crate::dosimetry::pipeline::{
    DoseInput, DoseSummary, MaskConfidence, Reviewed, TimePointInput,
};
use crate::dosimetry::Nuclide;
use crate::error::{Error, FaultKind, Result};
use crate::io::nifti::read_nifti_labels;
use crate::report::review::{ct_pictures, CtPictures, CtSlot};
use crate::seg::confidence::{Flag, OrganConfidence};
use crate::study::{Source, Study};
use crate::volume::Volume;
use std::path::{Path, PathBuf};

/// Where the organ masks come from.
#[derive(Debug, Clone)]
pub enum MaskSource {
    /// A phantom's truth folder (`truth.json`, `labels_ct.nii.gz`,
    /// `labels_ldct_tp<k>.nii.gz`); time points matched by hours after injection.
    Truth(PathBuf),
    /// A label map on the diagnostic CT and optionally one per time point on its
    /// low-dose CT, in time order.
    Files {
        diag_ct: PathBuf,
        ldct: Vec<PathBuf>,
    },
    /// The 2.5D Mask R-CNN (model folder: `model.toml` + safetensors) on the
    /// diagnostic CT (masses) and on each time point's low-dose CT (activities).
    Network { model_dir: PathBuf },
}

impl MaskSource {
    /// The truth folder of a phantom patient exported to `study_dir`.
    pub fn truth_of(study_dir: &Path) -> Self {
        MaskSource::Truth(study_dir.join("truth"))
    }
}

/// Label maps of the diagnostic CT and of each time point (None: use the diagnostic
/// CT's), what the segmentation noted about them, and (network masks in `auto`
/// mode) each CT's organ confidences.
type StudyMasks = (
    Volume<u8>,
    Vec<Option<Volume<u8>>>,
    Vec<String>,
    Vec<MaskConfidence>,
    Option<Bands>,
);

/// One CT's generous and strict masks (`seg::driver::edge_band`), kept as
/// the voxels where each differs from the fused mask: (voxel, its label
/// there). Applying one is a swap, and swapping again restores the mask.
type Band = [Vec<(u32, u8)>; 2];

/// The edge bands of a study's network masks: the diagnostic CT's, and per
/// time point its low-dose CT's (None: the time point uses the diagnostic
/// CT's mask, and so its band).
#[derive(Debug, Clone)]
struct Bands {
    diag: Band,
    per_tp: Vec<Option<Band>>,
}

/// A CT's band against its fused labels, before the cycle check: (voxel,
/// fused label, band label).
fn band_of(labels: &[u8], alts: &[Vec<u8>; 2]) -> [Vec<(u32, u8, u8)>; 2] {
    alts.each_ref().map(|alt| {
        labels
            .iter()
            .zip(alt)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .filter_map(|(v, (&a, &b))| Some((u32::try_from(v).ok()?, a, b)))
            .collect()
    })
}

/// Keeps a band's voxels that the cycle check left alone (`final` still
/// has the fused label there) and whose organs it did not replace.
fn band_after(raw: [Vec<(u32, u8, u8)>; 2], fin: &[u8], replaced: &[u8]) -> Band {
    raw.map(|r| {
        r.into_iter()
            .filter(|&(v, a, b)| {
                fin.get(v as usize) == Some(&a) && !replaced.contains(&a) && !replaced.contains(&b)
            })
            .map(|(v, _, b)| (v, b))
            .collect()
    })
}

fn swap_band(labels: &mut Volume<u8>, band: &mut [(u32, u8)]) {
    for (v, l) in band {
        if let Some(x) = labels.data.get_mut(*v as usize) {
            std::mem::swap(x, l);
        }
    }
}

fn masks(
    study: &Study,
    source: &MaskSource,
    cfg: &Config,
    progress: &dyn Fn(&str, f64),
    mut pictures: Option<&mut Vec<CtPictures>>,
) -> Result<StudyMasks> {
    match source {
        MaskSource::Network { model_dir } => {
            if !model_dir.join("model.toml").is_file() {
                // The box's installation, not the patient's data: retried, not quarantined.
                return Err(Error::environment(format!(
                    "no segmentation model at {}: none is installed yet; give masks with --truth or --labels, or a model folder with --weights",
                    model_dir.display()
                )));
            }
            // Loaded once per process on the configured device (seg::engine).
            let model = crate::seg::engine::Engine::shared(cfg.segment.device)?.model(model_dir)?;
            let mut opts = cfg.segment.driver_options();
            if cfg.segment.device == crate::seg::engine::DeviceKind::Cuda {
                // One stream of batches on the GPU (config: parallel_batches).
                opts.parallel_batches = 1;
            }
            let n = study.timepoints.len() + 1;
            let targets = crate::seg::driver::class_targets(&model.cfg.classes)?;
            let auto = opts.planes == crate::seg::driver::Planes::Auto;
            let mut notes = Vec::new();
            // Per CT segmented, in order: its name and its organs' confidences.
            let mut confs: Vec<(String, Vec<(String, OrganConfidence)>)> = Vec::new();
            // Per CT segmented (auto), its edge band against the fused mask.
            let mut raw_bands: Vec<[Vec<(u32, u8, u8)>; 2]> = Vec::new();
            // A low-dose CT follows the diagnostic CT's masks (`seg::follow`).
            let follow = auto && cfg.segment.low_dose_ct == crate::seg::settings::LowDoseCt::Follow;
            // A low-dose CT's axial pass bounded by where the diagnostic CT's
            // organs are on it (`seg::follow::segment_bounded`).
            let bounded =
                auto && cfg.segment.low_dose_ct == crate::seg::settings::LowDoseCt::Bounded;
            let mut diag_ref: Option<crate::seg::follow::Reference> = None;
            let mut segment = |src: &Source,
                               k: usize,
                               what: &str,
                               reference: Option<&Volume<u8>>|
             -> Result<Volume<u8>> {
                let t_read = std::time::Instant::now();
                let ct = src.read(&cfg.ingest)?;
                let t_seg = std::time::Instant::now();
                let stage = format!("segment CT {}/{n}", k + 1);
                let mut prog = |done: usize, total: usize| {
                    progress(
                        &stage,
                        0.05 + 0.5 * (k as f64 + done as f64 / total.max(1) as f64) / n as f64,
                    )
                };
                let how = match (reference, diag_ref.as_ref()) {
                    (Some(r), _) if follow => Some(crate::seg::follow::LowDose::Follow(r)),
                    (Some(_), Some(d)) if bounded => Some(crate::seg::follow::LowDose::Bounded(d)),
                    _ => None,
                };
                let (seg, followed) = match how {
                    Some(how) => {
                        let l = crate::seg::follow::segment_low_dose(
                            &model,
                            &ct,
                            &opts,
                            how,
                            &mut prog,
                            &mut |_, _, _| {},
                        )?;
                        (l.seg, l.followed)
                    }
                    None => (
                        crate::seg::driver::segment_detail(
                            &model,
                            &ct,
                            &opts,
                            &mut prog,
                            &mut |_, _, _| {},
                        )?,
                        false,
                    ),
                };
                notes.extend(seg.notes.iter().map(|m| format!("{what} masks: {m}")));
                let t_after = std::time::Instant::now();
                // What is drawn or measured from this CT while it is in memory,
                // side by side (each part is mostly serial; on two cores this
                // was 2.3 s of the diagnostic CT's time one after the other):
                // the diagnostic CT's registration reference, the report's
                // pictures (drawn again from the CT only if its masks change
                // later), the masks' confidence and edge band.
                let slot = match k.checked_sub(1) {
                    None => (CtSlot::Diagnostic, None),
                    Some(i) => (CtSlot::TimePoint(i), study.timepoints.get(i).map(|t| t.t_h)),
                };
                let want_pictures = pictures.is_some();
                let measure = auto && !followed;
                let (new_ref, (pics_of_ct, measured)) = rayon::join(
                    || {
                        (bounded && reference.is_none())
                            .then(|| crate::seg::follow::Reference::new(&ct, &seg.labels))
                    },
                    || {
                        rayon::join(
                            || want_pictures.then(|| ct_pictures(&ct, &seg.labels, slot.0, slot.1)),
                            || {
                                measure.then(|| {
                                    rayon::join(
                                        || {
                                            crate::seg::confidence::assess(
                                                &seg,
                                                &ct,
                                                &targets,
                                                &|_| None,
                                            )
                                        },
                                        || {
                                            crate::seg::driver::edge_band(
                                                &seg, &ct, &targets, &opts,
                                            )
                                            .map(|alts| band_of(&seg.labels.data, &alts))
                                            .unwrap_or_default()
                                        },
                                    )
                                })
                            },
                        )
                    },
                );
                if let Some(r) = new_ref {
                    diag_ref = Some(r);
                }
                if let (Some(pics), Some(p)) = (pictures.as_deref_mut(), pics_of_ct) {
                    match p {
                        Ok(p) => pics.push(p),
                        Err(e) => tracing::debug!("QC pictures of {what} deferred: {e}"),
                    }
                }
                if auto && followed {
                    // The masks are the diagnostic CT's, moved: they carry its
                    // confidences (as a mask the cycle check replaces does),
                    // and no edge band of their own.
                    let diag_confs = confs.first().map(|(_, cs)| cs.clone()).unwrap_or_default();
                    let moved = diag_confs
                        .into_iter()
                        .map(|(organ, c)| {
                            let volume_ml = crate::organs::label(&organ)
                                .map_or(0.0, |l| crate::seg::cycle::volume_ml(&seg.labels, l));
                            (organ, OrganConfidence { volume_ml, ..c })
                        })
                        .collect();
                    confs.push((what.to_string(), moved));
                    raw_bands.push(Default::default());
                } else if let Some((conf, band)) = measured {
                    confs.push((what.to_string(), conf));
                    raw_bands.push(band);
                }
                tracing::debug!(
                    "{what}: read in {:.2} s, segmented in {:.2} s, then {:.2} s (reference, pictures, confidence, edge band)",
                    (t_seg - t_read).as_secs_f64(),
                    (t_after - t_seg).as_secs_f64(),
                    t_after.elapsed().as_secs_f64()
                );
                Ok(seg.labels)
            };
            let diag = segment(&study.diagnostic_ct, 0, "diagnostic CT", None)?;
            let mut per_tp = Vec::new();
            for (k, tp) in study.timepoints.iter().enumerate() {
                per_tp.push(match &tp.ldct {
                    Some(src) => Some(segment(
                        src,
                        k + 1,
                        &format!("low-dose CT {:.1} h", tp.t_h),
                        Some(&diag),
                    )?),
                    None => None,
                });
            }
            // The cycle's CTs show the same kidneys: an outlier is replaced by
            // the agreeing mask moved onto it (auto mode; axial/all stay raw
            // for comparison).
            let (diag, per_tp, bands) = if opts.planes == crate::seg::driver::Planes::Auto {
                let mut names = vec!["the diagnostic CT".to_string()];
                let mut all = vec![diag];
                let mut slots = Vec::new();
                for (k, (tp, m)) in study.timepoints.iter().zip(per_tp).enumerate() {
                    if let Some(m) = m {
                        names.push(format!("the low-dose CT at {:.1} h", tp.t_h));
                        slots.push(k);
                        all.push(m);
                    }
                }
                let conf_of = |i: usize, organ: u8| -> Option<f64> {
                    let name = crate::organs::name(organ)?;
                    confs
                        .get(i)?
                        .1
                        .iter()
                        .find(|(o, _)| o == name)
                        .map(|(_, c)| c.confidence)
                };
                let (cycle, cycle_notes) = crate::seg::cycle::harmonise(&mut all, &names, &conf_of);
                // A replaced mask is the reference CT's, moved: it carries that
                // mask's confidence.
                for oc in &cycle {
                    let Some(r) = oc.reference else { continue };
                    let reference = confs
                        .get(r)
                        .and_then(|(_, cs)| cs.iter().find(|(o, _)| *o == oc.organ))
                        .map(|(_, c)| c.clone());
                    for &i in &oc.replaced {
                        if let (Some(rc), Some((_, cs))) = (reference.clone(), confs.get_mut(i)) {
                            if let Some(slot) = cs.iter_mut().find(|(o, _)| *o == oc.organ) {
                                slot.1 = OrganConfidence {
                                    volume_ml: oc.volumes_ml_after[i],
                                    ..rc
                                };
                            }
                        }
                    }
                }
                for n in &cycle_notes {
                    tracing::warn!("{n}");
                }
                notes.extend(cycle_notes);
                // The bands, less what the cycle check replaced, in the
                // order of `all`: the diagnostic CT's, then the low-dose CTs'.
                let bands: Vec<Band> = raw_bands
                    .into_iter()
                    .enumerate()
                    .map(|(i, raw)| {
                        let replaced: Vec<u8> = cycle
                            .iter()
                            .filter(|oc| oc.replaced.contains(&i))
                            .filter_map(|oc| crate::organs::label(&oc.organ))
                            .collect();
                        match all.get(i) {
                            Some(fin) => band_after(raw, &fin.data, &replaced),
                            None => Band::default(),
                        }
                    })
                    .collect();
                let mut bands = bands.into_iter();
                let diag_band = bands.next().unwrap_or_default();
                let mut per_tp_bands: Vec<Option<Band>> = vec![None; study.timepoints.len()];
                let mut it = all.into_iter();
                let diag = it
                    .next()
                    .ok_or_else(|| Error::internal("cycle check lost the diagnostic mask"))?;
                let mut per_tp: Vec<Option<Volume<u8>>> = vec![None; study.timepoints.len()];
                for (k, m) in slots.into_iter().zip(it) {
                    per_tp[k] = Some(m);
                    per_tp_bands[k] = Some(bands.next().unwrap_or_default());
                }
                (
                    diag,
                    per_tp,
                    Some(Bands {
                        diag: diag_band,
                        per_tp: per_tp_bands,
                    }),
                )
            } else {
                (diag, per_tp, None)
            };
            let mask_confidence = confs
                .into_iter()
                .flat_map(|(ct, cs)| {
                    cs.into_iter().map(move |(organ, c)| MaskConfidence {
                        ct: ct.clone(),
                        organ,
                        confidence: c.confidence,
                        flag: match c.flag {
                            Flag::Ok => "ok".into(),
                            Flag::Review => "review".into(),
                        },
                        reasons: c.reasons,
                        volume_ml: c.volume_ml,
                    })
                })
                .collect();
            Ok((diag, per_tp, notes, mask_confidence, bands))
        }
        MaskSource::Truth(dir) => {
            let tj = dir.join("truth.json");
            let text = std::fs::read_to_string(&tj).map_err(|e| Error::io(&tj, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::library(FaultKind::Input, format!("{}", tj.display()), e))?;
            let times: Vec<f64> = v["times_h"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default();
            let diag = read_nifti_labels(&dir.join("labels_ct.nii.gz"))?;
            let mut per_tp = Vec::new();
            for tp in &study.timepoints {
                let k = times
                    .iter()
                    .enumerate()
                    .min_by(|a, b| (a.1 - tp.t_h).abs().total_cmp(&(b.1 - tp.t_h).abs()))
                    .filter(|(_, t)| (*t - tp.t_h).abs() < 1.0)
                    .map(|(k, _)| k)
                    .ok_or_else(|| {
                        Error::input(format!(
                            "{}: no truth time point near {:.2} h",
                            tj.display(),
                            tp.t_h
                        ))
                    })?;
                per_tp.push(Some(read_nifti_labels(
                    &dir.join(format!("labels_ldct_tp{}.nii.gz", k + 1)),
                )?));
            }
            let checks = given_mask_checks(study, &diag, &per_tp);
            Ok((diag, per_tp, Vec::new(), checks, None))
        }
        MaskSource::Files { diag_ct, ldct } => {
            if !ldct.is_empty() && ldct.len() != study.timepoints.len() {
                return Err(Error::input(format!(
                    "{} low-dose-CT label maps for {} time points",
                    ldct.len(),
                    study.timepoints.len()
                )));
            }
            let diag = read_nifti_labels(diag_ct)?;
            let per_tp = if ldct.is_empty() {
                vec![None; study.timepoints.len()]
            } else {
                ldct.iter()
                    .map(|p| read_nifti_labels(p).map(Some))
                    .collect::<Result<Vec<_>>>()?
            };
            let checks = given_mask_checks(study, &diag, &per_tp);
            Ok((diag, per_tp, Vec::new(), checks, None))
        }
    }
}

/// An organ whose volume on one of the cycle's CTs is further than this
/// from the median of its CTs: the same organ, days apart, so one of the
/// masks is wrong (truth masks of the phantoms agree within 1 %; a
/// physicist's masks on 5 mm low-dose CTs within about 10 %).
pub(crate) const GIVEN_MASK_TOLERANCE: f64 = 0.20;

/// Masks given as label maps (or a phantom's truth) are not the network's,
/// but the cycle's CTs must still agree on each organ's volume: those that
/// do not are flagged for review (one entry per flagged mask).
fn given_mask_checks(
    study: &Study,
    diag: &Volume<u8>,
    per_tp: &[Option<Volume<u8>>],
) -> Vec<MaskConfidence> {
    use crate::seg::cycle::{median, volume_ml};
    let mut cts: Vec<(String, &Volume<u8>)> = vec![("diagnostic CT".into(), diag)];
    for (tp, m) in study.timepoints.iter().zip(per_tp) {
        if let Some(m) = m {
            cts.push((format!("low-dose CT {:.1} h", tp.t_h), m));
        }
    }
    if cts.len() < 3 {
        // Two masks that disagree do not say which one is wrong.
        return Vec::new();
    }
    let mut out = Vec::new();
    for l in [
        crate::organs::LIVER,
        crate::organs::KIDNEY_LEFT,
        crate::organs::KIDNEY_RIGHT,
        crate::organs::SPLEEN,
    ] {
        let ml: Vec<f64> = cts.iter().map(|(_, m)| volume_ml(m, l)).collect();
        let median = median(&ml);
        if median.is_nan() || median <= 0.0 {
            continue;
        }
        for ((ct, _), &v) in cts.iter().zip(&ml) {
            let dev = (v - median).abs() / median;
            if dev > GIVEN_MASK_TOLERANCE {
                out.push(MaskConfidence {
                    ct: ct.clone(),
                    organ: crate::organs::name(l).unwrap_or("organ").into(),
                    confidence: 0.0,
                    flag: "review".into(),
                    reasons: vec![format!(
                        "given mask: volume {v:.0} mL is {:.0} % off the median of the cycle's CTs ({median:.0} mL)",
                        100.0 * dev
                    )],
                    volume_ml: v,
                });
            }
        }
    }
    out
}

/// Reads the volumes and masks of a study into the dosimetry's input.
pub fn dose_input(
    study: &Study,
    source: &MaskSource,
    cfg: &Config,
    progress: &dyn Fn(&str, f64),
) -> Result<(DoseInput, Vec<String>)> {
    let (input, notes, _, _, _, _) = dose_input_full(study, source, &[], cfg, progress, false)?;
    Ok((input, notes))
}

/// The dosimetry's input, the notes for the summary, the network masks'
/// confidences, who reviewed the masks (corrections applied), the bands of the
/// masks' edges and the report's CT pictures drawn on the way.
type FullInput = (
    DoseInput,
    Vec<String>,
    Vec<MaskConfidence>,
    Option<Reviewed>,
    Option<Bands>,
    Vec<CtPictures>,
);

/// [`dose_input`] with corrected contours (RT Structure Sets / SEGs) applied
/// over the masks, the network masks' confidences, and who reviewed them.
fn dose_input_full(
    study: &Study,
    source: &MaskSource,
    corrections: &[PathBuf],
    cfg: &Config,
    progress: &dyn Fn(&str, f64),
    draw: bool,
) -> Result<FullInput> {
    // The report's CT pictures, drawn where a CT is read anyway (`draw`).
    let mut pictures = Vec::new();
    let mut notes = study.notes.clone();
    let nuclide = Nuclide::from_name(&study.injection.nuclide)?;
    progress("masks", 0.05);
    let (mut diag, mut per_tp, seg_notes, mut confidence, mut bands) =
        masks(study, source, cfg, progress, draw.then_some(&mut pictures))?;
    notes.extend(seg_notes);
    let reviewed = if corrections.is_empty() {
        None
    } else {
        Some(apply_corrections(
            study,
            corrections,
            cfg,
            &mut diag,
            &mut per_tp,
            &mut confidence,
            &mut notes,
        )?)
    };
    // A corrected organ is the physicist's, not the network's: no edge band.
    if let (Some(r), Some(b)) = (&reviewed, bands.as_mut()) {
        let done: Vec<u8> = r
            .organs
            .iter()
            .filter_map(|o| crate::organs::label(o))
            .collect();
        let keep = |band: &mut Band, now: &Volume<u8>| {
            for side in band.iter_mut() {
                side.retain(|&(v, alt)| {
                    !done.contains(&alt)
                        && now.data.get(v as usize).is_some_and(|l| !done.contains(l))
                });
            }
        };
        keep(&mut b.diag, &diag);
        for (band, m) in b.per_tp.iter_mut().zip(&per_tp) {
            if let (Some(band), Some(m)) = (band.as_mut(), m) {
                keep(band, m);
            }
        }
    }
    if !matches!(source, MaskSource::Network { .. }) {
        check_ct(study, &diag, cfg, draw.then_some(&mut pictures))?;
    }
    let n = study.timepoints.len();
    let mut tps = Vec::with_capacity(n);
    for (k, (tp, labels)) in study.timepoints.iter().zip(per_tp).enumerate() {
        progress("read SPECT", 0.1 + 0.6 * k as f64 / n as f64);
        let spect = tp.spect.read(&cfg.ingest)?;
        let labels = match labels {
            Some(l) => l,
            None => {
                notes.push(format!(
                    "time point {:.1} h: no low-dose-CT mask; the diagnostic-CT mask is carried onto the SPECT by patient coordinates (registration assumed)",
                    tp.t_h
                ));
                diag.clone()
            }
        };
        tps.push(TimePointInput {
            t_h: tp.t_h,
            spect_bq_per_ml: spect,
            labels,
        });
    }
    Ok((
        DoseInput {
            patient_id: study.patient_id.clone(),
            diag_ct_labels: diag,
            timepoints: tps,
            nuclide,
            injected_activity_mbq: study.injection.activity_mbq,
        },
        notes,
        confidence,
        reviewed,
        bands,
        pictures,
    ))
}

/// Swaps band `i` into every CT's mask (or, called again, back out).
fn apply_band(
    input: &mut DoseInput,
    bands: &mut Bands,
    carried: &mut [Option<Vec<(u32, u8)>>],
    i: usize,
) {
    swap_band(&mut input.diag_ct_labels, &mut bands.diag[i]);
    for ((tp, b), c) in input
        .timepoints
        .iter_mut()
        .zip(bands.per_tp.iter_mut())
        .zip(carried.iter_mut())
    {
        match (b, c) {
            (Some(b), _) => swap_band(&mut tp.labels, &mut b[i]),
            (None, Some(c)) => swap_band(&mut tp.labels, c),
            (None, None) => {}
        }
    }
}

/// The segmentation's share of each organ's dose uncertainty: the study's
/// dosimetry again under the generous and the strict masks of every CT
/// (`Bands`); the difference of the organ's mean dose (and mass) between
/// the two over sqrt(12), added in quadrature to its SD. The masks are put back
/// as they were.
fn add_segmentation_term(
    input: &mut DoseInput,
    bands: &mut Bands,
    summary: &mut DoseSummary,
    cfg: &Config,
) -> Result<()> {
    let mut runs = Vec::with_capacity(2);
    for i in 0..2 {
        // A time point that carries the diagnostic CT's mask swaps with its
        // own copy of that band.
        let mut carried: Vec<Option<Vec<(u32, u8)>>> = bands
            .per_tp
            .iter()
            .map(|b| b.is_none().then(|| bands.diag[i].clone()))
            .collect();
        apply_band(input, bands, &mut carried, i);
        let r = crate::dosimetry::run(input, &cfg.dosimetry);
        // Back to the fused masks, whatever the run gave.
        apply_band(input, bands, &mut carried, i);
        runs.push(r?);
    }
    for (name, o) in summary.organs.iter_mut() {
        let (Some(a), Some(b)) = (runs[0].organs.get(name), runs[1].organs.get(name)) else {
            continue;
        };
        // The true mask anywhere between the strict and the generous reading,
        // uniformly: SD = range / sqrt(12). Half the range overstated it on
        // a held-out phantom (kidney_left mass 180 g against 186 g truth with
        // a half-range of 33 g; liver 1515 g against 1482 g, 234 g).
        let sd_d = (a.mean_dose_gy - b.mean_dose_gy).abs() / 12f64.sqrt();
        let sd_m = (a.mass_g - b.mass_g).abs() / 12f64.sqrt();
        if sd_d.is_finite() && sd_m.is_finite() {
            o.mean_dose_gy_sd = o.mean_dose_gy_sd.hypot(sd_d);
            o.mean_dose_gy_sd_segmentation = Some(sd_d);
            o.mass_g_sd_segmentation = Some(sd_m);
            o.bed = o
                .bed
                .as_ref()
                .map(|b| b.with_dose_sd(o.mean_dose_gy, o.mean_dose_gy_sd));
        }
    }
    Ok(())
}

/// The study's CTs a correction may refer to: (name as in the warnings and
/// mask confidences, slot: None the diagnostic CT, Some(k) time point k's
/// low-dose CT, its DICOM series).
fn correctable_cts(study: &Study) -> Vec<(String, Option<usize>, &crate::io::dicom::DicomSeries)> {
    let mut out = Vec::new();
    if let Source::Dicom(d) = &study.diagnostic_ct {
        out.push(("diagnostic CT".to_string(), None, d));
    }
    for (k, tp) in study.timepoints.iter().enumerate() {
        if let Some(Source::Dicom(d)) = &tp.ldct {
            out.push((format!("low-dose CT {:.1} h", tp.t_h), Some(k), d));
        }
    }
    out
}

/// Replaces masks with a physicist's corrected contours: each file refers to
/// one of the study's CTs (by Series Instance UID, else frame of reference and
/// SOP instances); its organs, rasterised on that CT's grid, replace the masks
/// of those organs there; other organs stay as they were. A file referring to
/// no CT of the study is an input error naming it and what it refers to.
/// Several files for one CT are applied oldest first (object date-time).
fn apply_corrections(
    study: &Study,
    files: &[PathBuf],
    cfg: &Config,
    diag: &mut Volume<u8>,
    per_tp: &mut [Option<Volume<u8>>],
    confidence: &mut Vec<MaskConfidence>,
    notes: &mut Vec<String>,
) -> Result<Reviewed> {
    use crate::io::corrections::{self, names, raster};
    let cts = correctable_cts(study);
    let mut by: Vec<String> = Vec::new();
    let mut at: Vec<String> = Vec::new();
    let mut objects: Vec<String> = Vec::new();
    let mut organs_done: Vec<String> = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    let mut lesion_rois: Vec<String> = Vec::new();
    // (CT name, organ): masks a person replaced; their confidences go.
    let mut replaced: Vec<(String, String)> = Vec::new();
    let mut read = files
        .iter()
        .map(|p| corrections::read(p))
        .collect::<Result<Vec<_>>>()?;
    // Several corrections of one CT: the newest object's contours win (applied
    // last); undated ones count as oldest, in the order given.
    read.sort_by(|a, b| a.at.cmp(&b.at));
    for c in &read {
        let path = &c.path;
        let targets: Vec<&(String, Option<usize>, &crate::io::dicom::DicomSeries)> = cts
            .iter()
            .filter(|(_, _, s)| {
                let frame = s
                    .files
                    .first()
                    .map(|h| h.frame_of_reference_uid.as_str())
                    .unwrap_or("");
                let sops: Vec<String> =
                    s.files.iter().map(|h| h.sop_instance_uid.clone()).collect();
                c.refs.name(&s.uid, frame, &sops)
            })
            .collect();
        if targets.is_empty() {
            let known: Vec<String> = cts
                .iter()
                .map(|(n, _, s)| format!("{n}: series {}", s.uid))
                .collect();
            return Err(Error::input(format!(
                "{}: this {} refers to {}, which is none of the study's CTs ({})",
                path.display(),
                c.kind.as_str(),
                c.refs.describe(),
                if known.is_empty() {
                    "the study has no DICOM CT".to_string()
                } else {
                    known.join("; ")
                }
            )));
        }
        let mut file_organs: Vec<String> = Vec::new();
        for (ct_name, slot, series) in targets {
            let labels: &mut Volume<u8> = match slot {
                None => &mut *diag,
                Some(k) => {
                    let entry = per_tp.get_mut(*k).ok_or_else(|| {
                        Error::internal(format!("time point {k} has no mask slot"))
                    })?;
                    if entry.is_none() {
                        // No mask of its own yet: the diagnostic CT's, carried onto
                        // this CT's grid by patient coordinates (as the SPECT gets it).
                        let geom = crate::study::Source::Dicom((*series).clone())
                            .read(&cfg.ingest)?
                            .geom;
                        *entry = Some(diag.resample_nearest(&geom, 0));
                    }
                    entry
                        .as_mut()
                        .ok_or_else(|| Error::internal("mask slot just filled is empty"))?
                }
            };
            // Rasterise every ROI first, then clear and paint, so two ROIs of one
            // organ add up and a corrected organ wins over a neighbour's old mask.
            let mut painted: std::collections::BTreeMap<u8, Vec<bool>> = Default::default();
            for roi in &c.rois {
                // A ROI that is no organ but names a lesion (or nothing else) is one:
                // painted as the tumour label, whose components the dosimetry splits.
                let lesion = names::organ_of(&roi.name).is_none() && names::is_lesion(&roi.name);
                let Some(organ) =
                    names::organ_of(&roi.name).or_else(|| lesion.then_some(crate::organs::TUMOUR))
                else {
                    if !ignored.contains(&roi.name) {
                        ignored.push(roi.name.clone());
                    }
                    continue;
                };
                let (mask, raster_notes) = raster::rasterise(roi, &labels.geom);
                notes.extend(
                    raster_notes
                        .into_iter()
                        .map(|n| format!("{}: {n}", c.name())),
                );
                if !mask.iter().any(|&b| b) {
                    notes.push(format!(
                        "{}: ROI '{}' has no voxel on the {ct_name}: not used",
                        c.name(),
                        roi.name
                    ));
                    let label = format!("{} (empty)", roi.name);
                    if !ignored.contains(&label) {
                        ignored.push(label);
                    }
                    continue;
                }
                if lesion && !lesion_rois.contains(&roi.name) {
                    lesion_rois.push(roi.name.clone());
                }
                let slot = painted
                    .entry(organ)
                    .or_insert_with(|| vec![false; mask.len()]);
                for (p, m) in slot.iter_mut().zip(&mask) {
                    *p |= *m;
                }
            }
            for v in labels.data.iter_mut() {
                if painted.contains_key(v) {
                    *v = 0;
                }
            }
            let mut here = Vec::new();
            for (organ, mask) in &painted {
                for (v, &m) in labels.data.iter_mut().zip(mask) {
                    if m {
                        *v = *organ;
                    }
                }
                let name = crate::organs::name(*organ).unwrap_or("unknown").to_string();
                replaced.push((ct_name.clone(), name.clone()));
                here.push(name);
            }
            if !here.is_empty() {
                notes.push(format!(
                    "reviewed: {} on the {ct_name} replaced by the corrected {} {} (by {}{})",
                    here.join(", "),
                    c.kind.as_str(),
                    c.name(),
                    c.by,
                    if c.at.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", c.at)
                    }
                ));
            }
            for n in here {
                if !file_organs.contains(&n) {
                    file_organs.push(n);
                }
            }
        }
        if file_organs.is_empty() {
            notes.push(format!(
                "{}: no ROI is one of organdose's organs: no mask replaced",
                c.name()
            ));
        }
        for n in file_organs {
            if !organs_done.contains(&n) {
                organs_done.push(n);
            }
        }
        if !by.contains(&c.by) {
            by.push(c.by.clone());
        }
        if !c.at.is_empty() {
            at.push(c.at.clone());
        }
        objects.push(c.name());
    }
    if !ignored.is_empty() {
        notes.push(format!(
            "corrections: ROI(s) not matched to an organ and ignored: {}",
            ignored.join(", ")
        ));
    }
    confidence.retain(|m| !replaced.iter().any(|(ct, o)| *ct == m.ct && *o == m.organ));
    at.sort();
    Ok(Reviewed {
        by: by.join("; "),
        at: at.pop().unwrap_or_default(),
        object: objects.join("; "),
        organs: organs_done,
        ignored_rois: ignored,
        lesion_rois,
    })
}

/// With masks from files (`--truth`, `--labels`) the diagnostic CT is still read:
/// a broken CT must fail here as it would with the network, and the label map
/// must lie on its grid (its masses are computed on it).
fn check_ct(
    study: &Study,
    labels: &Volume<u8>,
    cfg: &Config,
    pictures: Option<&mut Vec<CtPictures>>,
) -> Result<()> {
    let ct = study.diagnostic_ct.read(&cfg.ingest)?;
    if ct.geom.dims != labels.geom.dims {
        return Err(Error::input(format!(
            "the diagnostic-CT label map is {:?} voxels but the diagnostic CT ({}) is {:?}: masks must be on the CT's grid",
            labels.geom.dims,
            study.diagnostic_ct.describe(),
            ct.geom.dims
        )));
    }
    if let Some(pics) = pictures {
        match ct_pictures(&ct, labels, CtSlot::Diagnostic, None) {
            Ok(p) => pics.push(p),
            Err(e) => tracing::debug!("QC pictures of the diagnostic CT deferred: {e}"),
        }
    }
    Ok(())
}

/// Memory a study will need, in MB, from the headers alone (the network's
/// weights and activations come on top: `StudyProcessor::memory_need_mb`):
/// the larger of the segmentation stage (when the network makes the masks)
/// and the dosimetry stage.
///
/// Segmentation, measured (release, 2026-12-07, `cargo bench --bench
/// study_run`): `organdose run` peaked at 692 MB with a 512 x 512 x 187
/// diagnostic CT and at 1005 MB with 512 x 512 x 357 (four low-dose CTs and
/// SPECTs each), 7.0 bytes per voxel of the largest CT above 349 MB;
/// `organdose segment` alone 9.1 bytes per voxel (666 MB at 200 slices, 1144 MB
/// at 400). Counted here as 8 bytes per voxel of the largest CT and 0.5 per
/// voxel of every CT (their masks stay for the study); with the network's
/// term the estimate is 1.25 and 1.22 times those peaks.
/// Dosimetry: the largest CT read as f32 while labels (u8) exist; SPECTs f32
/// with about four working copies.
pub fn memory_need_mb(study: &Study, segmenting: bool) -> f64 {
    let voxels = |s: &Source| -> f64 {
        match s {
            Source::Dicom(d) => d
                .files
                .first()
                .map(|h| (h.rows * h.columns) as f64 * d.files.len().max(h.frames) as f64)
                .unwrap_or(0.0),
            Source::Nifti(p) => crate::io::nifti::NiftiFile::open(p)
                .map(|f| f.header.dims3().iter().product::<usize>() as f64)
                .unwrap_or(0.0),
        }
    };
    let ct = voxels(&study.diagnostic_ct);
    let spect: f64 = study.timepoints.iter().map(|t| voxels(&t.spect)).sum();
    let ldcts: Vec<f64> = study
        .timepoints
        .iter()
        .filter_map(|t| t.ldct.as_ref().map(&voxels))
        .collect();
    let ldct = ldcts.iter().copied().fold(0.0, f64::max);
    let all_ct = ct + ldcts.iter().sum::<f64>();
    let segmentation = if segmenting {
        ct.max(ldct) * 8.0 + all_ct * 0.5
    } else {
        0.0
    };
    let dosimetry = ct * 5.0 + ldct * 5.0 + spect * 4.0 * 4.0;
    segmentation.max(dosimetry) / 1e6 + 64.0
}

/// "partial" below 3 time points, "provisional" from 3, "final" once the expected
/// number arrived or a finalize was asked for.
pub fn summary_status(timepoints: usize, expected: usize, finalize: bool) -> &'static str {
    if finalize || timepoints >= expected {
        "final"
    } else if timepoints >= 3 {
        "provisional"
    } else {
        "partial"
    }
}

/// The dosimetry's configuration for masks from `source`: lesions "auto" finds them on
/// the SPECT only with the network's masks; masks from files (truth, label maps) are
/// taken as complete, their tumour label (or none) is the lesions.
fn dosimetry_config(source: &MaskSource, cfg: &Config) -> crate::dosimetry::DosimetryConfig {
    use crate::dosimetry::lesions::LesionMode;
    let mut d = cfg.dosimetry.clone();
    if d.lesions == LesionMode::Auto && !matches!(source, MaskSource::Network { .. }) {
        d.lesions = LesionMode::Given;
    }
    d
}

/// Runs the whole chain on a loaded study and writes the report files to `out`.
pub fn run_study(
    study: &Study,
    source: &MaskSource,
    out: &Path,
    cfg: &Config,
    status: &str,
    progress: &dyn Fn(&str, f64),
) -> Result<DoseSummary> {
    let none = crate::dosimetry::history::Earlier::default();
    run_study_corrected(study, source, &[], &none, out, cfg, status, progress)
}

/// [`run_study`] with a physicist's corrected contours (RT Structure Set / SEG
/// files, `dose --masks` and the appliance) replacing the masks of the organs
/// they hold. A final result from corrected masks is `reviewed`. `earlier`:
/// results of the patient's other cycles (any patient's: the history keeps
/// the ones that are this patient's), for the treatment history.
#[allow(clippy::too_many_arguments)]
pub fn run_study_corrected(
    study: &Study,
    source: &MaskSource,
    corrections: &[PathBuf],
    earlier: &crate::dosimetry::history::Earlier,
    out: &Path,
    cfg: &Config,
    status: &str,
    progress: &dyn Fn(&str, f64),
) -> Result<DoseSummary> {
    let (mut input, notes, confidence, reviewed, bands, pictures) =
        dose_input_full(study, source, corrections, cfg, progress, true)?;
    progress("dosimetry", 0.75);
    let mut summary = crate::dosimetry::run(&input, &dosimetry_config(source, cfg))?;
    if let Some(mut b) = bands {
        progress("segmentation uncertainty", 0.8);
        add_segmentation_term(&mut input, &mut b, &mut summary, cfg)?;
    }
    summary.status = status.to_string();
    summary.warnings.extend(notes);
    // A mask flagged for review holds the cycle back: its dose is as good as
    // its mask (seg::confidence).
    let flagged: Vec<String> = confidence
        .iter()
        .filter(|c| c.flag == "review")
        .map(|c| {
            format!(
                "needs review: {} mask on the {}: confidence {:.2} ({})",
                c.organ,
                c.ct,
                c.confidence,
                c.reasons.join("; ")
            )
        })
        .collect();
    summary.mask_confidence = confidence;
    if status != "partial" && !flagged.is_empty() {
        summary.status = "needs_review".into();
    }
    summary.warnings.extend(flagged);
    // SPECTs whose unit declarations disagree (issue 42, finding 8).
    let unit_conflicts: Vec<String> = study
        .timepoints
        .iter()
        .filter_map(|tp| match &tp.spect {
            Source::Dicom(s) => s.files.iter().find_map(|h| h.unit_conflict()),
            Source::Nifti(_) => None,
        })
        .collect();
    // A result no physicist should trust is never reported as final (a partial one
    // already says it is incomplete).
    if status != "partial" {
        let mut review = crate::dosimetry::plausibility::review(&summary);
        review
            .hold
            .extend(crate::dosimetry::plausibility::study_reasons(
                &summary,
                &cfg.dosimetry,
            ));
        review.hold.extend(unit_conflicts.iter().cloned());
        if !review.hold.is_empty() {
            summary.status = "needs_review".into();
        }
        summary.warnings.extend(
            review
                .hold
                .into_iter()
                .map(|r| format!("needs review: {r}"))
                .chain(review.small_vois.into_iter().map(|r| {
                    format!(
                        "implausible, but a lesion or a VOI under {} mL does not hold the summary back: {r}",
                        crate::dosimetry::plausibility::MIN_VOLUME_ML
                    )
                })),
        );
    }
    if status == "partial" {
        summary.warnings.extend(unit_conflicts);
    }
    // A person's masks make a final result `reviewed`; one still held back
    // (needs_review) or incomplete keeps its status and says who reviewed.
    if let Some(r) = reviewed {
        if summary.status == "final" {
            summary.status = "reviewed".into();
        }
        summary.reviewed = Some(r);
    }
    summary.patient = study.patient.clone();
    summary.injection_datetime = study.injection.datetime.to_string();
    // This cycle's report shows the course up to this cycle: a later cycle's
    // result (one that arrived first) is not part of it.
    let this_injection = &study.injection.datetime;
    let up_to_this: Vec<_> = earlier
        .records
        .iter()
        .filter(|r| {
            organdose_core::time::DateTime::parse_iso(&r.cycle.injection_datetime)
                .is_some_and(|t| t.hours_since(this_injection) <= 0.0)
        })
        .cloned()
        .collect();
    let history = crate::dosimetry::history::build(
        &summary.patient,
        up_to_this,
        Some(summary.cycle_dose()),
        &crate::dosimetry::history::Limits::of(&cfg.dosimetry),
    );
    let mut history = history;
    history.warnings.extend(earlier.unreadable_warnings());
    summary.treatment_history = Some(history);
    progress("report", 0.95);
    // The masks (what the report describes, and what a physicist corrects)
    // beside the QC pictures, report.pdf and the DICOM objects; what cannot be
    // made there is a warning in the summary, not a lost result, while a mask
    // not written fails the study.
    let (masks, (_, review_warnings)) = rayon::join(
        || match source {
            MaskSource::Network { .. } => write_masks(study, &input, out),
            _ => Ok(()),
        },
        || {
            crate::report::review::write_review(
                &crate::report::review::ReviewInput {
                    study,
                    input: &input,
                    summary: &summary,
                    provenance: provenance(source, cfg.segment.planes),
                    ingest: &cfg.ingest,
                    dicom: cfg.report.dicom,
                    tac_log_scale: cfg.report.tac_log_scale,
                    ct_pictures: &pictures,
                },
                out,
            )
        },
    );
    masks?;
    summary.warnings.extend(review_warnings);
    let t_files = std::time::Instant::now();
    crate::report::write_all(out, &summary)?;
    tracing::debug!(
        "summary, report.txt, plots and dose map in {:.1} s",
        t_files.elapsed().as_secs_f64()
    );
    progress("done", 1.0);
    Ok(summary)
}

/// Who made the masks, as the RT Structure Set and SEG record it.
fn provenance(
    source: &MaskSource,
    planes: crate::seg::driver::Planes,
) -> crate::report::dicom_out::Provenance {
    use crate::report::dicom_out::Provenance;
    match source {
        MaskSource::Network { model_dir } => Provenance {
            algorithm: Some((
                "organdose 2.5D Mask R-CNN".into(),
                format!(
                    "{} weights {}",
                    env!("CARGO_PKG_VERSION"),
                    model_dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
            )),
            description: match planes {
                crate::seg::driver::Planes::Auto => {
                    "organdose 2.5D Mask R-CNN, planes fused by probability"
                }
                crate::seg::driver::Planes::Axial => "organdose 2.5D Mask R-CNN, axial plane",
                crate::seg::driver::Planes::All => {
                    "organdose 2.5D Mask R-CNN, three planes, voxel vote"
                }
            }
            .into(),
        },
        MaskSource::Truth(_) => Provenance {
            algorithm: None,
            description: "phantom truth label map".into(),
        },
        MaskSource::Files { .. } => Provenance {
            algorithm: None,
            description: "label map given to organdose".into(),
        },
    }
}

/// The network's label maps, so a physicist can check them: `masks_ct.nii.gz` on
/// the diagnostic CT and `masks_tp<k>.nii.gz` on each time point's low-dose CT.
fn write_masks(study: &Study, input: &DoseInput, out: &Path) -> Result<()> {
    use crate::io::nifti::write_nifti;
    use rayon::prelude::*;
    let mut files = vec![(
        &input.diag_ct_labels,
        out.join("masks_ct.nii.gz"),
        "organdose masks (diagnostic CT)",
    )];
    for (k, (tp, ti)) in study.timepoints.iter().zip(&input.timepoints).enumerate() {
        if tp.ldct.is_some() {
            files.push((
                &ti.labels,
                out.join(format!("masks_tp{}.nii.gz", k + 1)),
                "organdose masks (low-dose CT)",
            ));
        }
    }
    // Compressing one map does not depend on another: side by side.
    files
        .par_iter()
        .map(|(labels, path, what)| write_nifti(labels, path, what))
        .collect::<Result<Vec<()>>>()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dosimetry::pvc::PvcMethod;
    use crate::volume::Geometry;

    /// Labels with `label` on the block i, j in 5..15, k in `z`.
    fn block(g: &Geometry, z: std::ops::Range<usize>, label: u8) -> Volume<u8> {
        let mut m = Volume::filled(g.clone(), 0u8);
        for k in z {
            for j in 5..15 {
                for i in 5..15 {
                    m.set(i, j, k, label);
                }
            }
        }
        m
    }

    #[test]
    fn segmentation_term_is_the_dose_range_over_sqrt12_and_masks_come_back() {
        // Kidney: a 10 x 10 x 10 block of 5 mm voxels (125 mL, 132.5 g) with
        // 10 MBq spread over it at 72 h; D = 1.33753 Gy (hand-computed in
        // tests/it/dosimetry.rs). Generous mask: two empty slices more (150 mL,
        // 159 g, same activity): D x 1000/1200 = 1.114608 Gy. Strict: one
        // slice less (119.25 g); its activity is what the VOI method reads
        // there, so its dose is taken from a run of the dosimetry on it.
        let g = Geometry::new([20, 20, 20], [5.0, 5.0, 5.0], [0.0, 0.0, 0.0]);
        let fused = block(&g, 5..15, 3);
        let c = 10.0e6 / (1000.0 * g.voxel_volume_ml());
        let spect = fused.map(|v| if v > 0 { c as f32 } else { 0.0 });
        let mut input = DoseInput {
            patient_id: "block".into(),
            diag_ct_labels: fused.clone(),
            timepoints: vec![TimePointInput {
                t_h: 72.0,
                spect_bq_per_ml: spect,
                labels: fused.clone(),
            }],
            nuclide: Nuclide::Lu177,
            injected_activity_mbq: 7400.0,
        };
        let mut cfg = Config::default();
        cfg.dosimetry.pvc = PvcMethod::None;
        let alts = [block(&g, 5..17, 3).data, block(&g, 5..14, 3).data];
        let raw = band_of(&fused.data, &alts);
        assert_eq!(raw[0].len(), 200);
        assert_eq!(raw[1].len(), 100);
        // The time point carries the diagnostic CT's mask (no band of its own).
        let mut bands = Bands {
            diag: band_after(raw, &fused.data, &[]),
            per_tp: vec![None],
        };
        let mut summary = crate::dosimetry::run(&input, &cfg.dosimetry).unwrap();
        let sd0 = summary.organs["kidney_right"].mean_dose_gy_sd;
        add_segmentation_term(&mut input, &mut bands, &mut summary, &cfg).unwrap();
        let o = &summary.organs["kidney_right"];
        let seg = o.mean_dose_gy_sd_segmentation.unwrap();
        let strict = block(&g, 5..14, 3);
        let d_strict = crate::dosimetry::run(
            &DoseInput {
                diag_ct_labels: strict.clone(),
                timepoints: vec![TimePointInput {
                    labels: strict,
                    ..input.timepoints[0].clone()
                }],
                ..input.clone()
            },
            &cfg.dosimetry,
        )
        .unwrap()
        .organs["kidney_right"]
            .mean_dose_gy;
        let r12 = 12f64.sqrt();
        assert!((seg - (d_strict - 1.114608) / r12).abs() < 1e-5, "{seg}");
        assert!((o.mass_g_sd_segmentation.unwrap() - (159.0 - 119.25) / r12).abs() < 1e-6);
        assert!((o.mean_dose_gy_sd - sd0.hypot(seg)).abs() < 1e-12);
        // The fused masks are back, voxel for voxel.
        assert_eq!(input.diag_ct_labels.data, fused.data);
        assert_eq!(input.timepoints[0].labels.data, fused.data);
    }

    #[test]
    fn a_band_keeps_only_what_the_cycle_check_left_alone() {
        let fused = vec![0u8, 2, 2, 3, 3, 0];
        let alts = [vec![2u8, 2, 2, 3, 3, 3], vec![0u8, 0, 2, 3, 0, 0]];
        let raw = band_of(&fused, &alts);
        // The cycle check replaced kidney_right (3): its voxels drop out; the
        // voxel it moved (index 1 now 0) drops out too.
        let fin = vec![0u8, 0, 2, 0, 3, 0];
        let b = band_after(raw, &fin, &[3]);
        assert_eq!(b[0], vec![(0, 2)]);
        assert!(b[1].is_empty());
    }
}
