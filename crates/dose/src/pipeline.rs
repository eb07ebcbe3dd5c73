//! The dosimetry pipeline, independent of file formats: [`run`] takes volumes in memory
//! and returns a [`DoseSummary`] that `report::write_all` writes out.
//!
//! Steps: organ mass on the diagnostic CT; per time point the organ activity in the
//! border-extended VOI on the SPECT grid; kinetics and TIA per organ; mean dose by local
//! energy deposition (`TIA * E / m`, m from the diagnostic CT, as in the paper); a voxel
//! dose map on the reference time point's SPECT grid and the DVH of each organ.
//!
//! Voxel dose map: the decays of each organ (its TIA) are spread over the organ's own
//! voxels on the reference SPECT (coverage-weighted) in proportion to the activity there
//! at the reference time (the "single-time-point distribution, organ kinetics" hybrid);
//! voxels outside every VOI get the rest of the image's decays (trapezoid plus physical
//! tail of the rest-of-image activity), in proportion to their activity. The map is then
//! convolved with the dose kernel. With the delta kernel the coverage-weighted mean of an
//! organ's voxel doses is TIA E / (density x organ volume on the SPECT grid).

use super::activity;
use super::activity::{measure_time_point, ActivityVolume, TimePointMeasurement};
use super::dose::{dose_map, dvh, local_deposition_gy, Dvh, Kernel};
use super::kinetics::{self, FitResult, Kinetics};
use super::lesions::{self, Detection, Lesion, LesionMode, LesionSource};
use super::pvc::{self, PvcMethod, PvcResult, PvcSettings};
use super::registration;
use super::uncertainty::mean_dose_sd;
use super::{DosimetryConfig, Nuclide};
use crate::error::{Error, Result};
use crate::organs;
use crate::volume::Volume;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Version of the `dose_summary.json` schema (docs/outputs.md, "Outputs").
pub(crate) const SCHEMA_VERSION: &str = "1.7";

/// One SPECT time point with the organ mask for it.
#[derive(Debug, Clone)]
pub struct TimePointInput {
    /// Hours after injection.
    pub t_h: f64,
    /// Quantitative SPECT, Bq/mL.
    pub spect_bq_per_ml: Volume<f32>,
    /// Organ labels for this time point (the low-dose CT mask), on any grid registered
    /// to the SPECT: carried onto the SPECT grid by coverage.
    pub labels: Volume<u8>,
}

/// Everything one dosimetry run needs.
#[derive(Debug, Clone)]
pub struct DoseInput {
    pub patient_id: String,
    /// Organ labels on the diagnostic CT: organ masses.
    pub diag_ct_labels: Volume<u8>,
    pub timepoints: Vec<TimePointInput>,
    pub nuclide: Nuclide,
    pub injected_activity_mbq: f64,
}

/// DVH metrics in Gy (the curve is in [`OrganSummary::dvh_curve`] and `dvh.csv`).
#[derive(Debug, Clone, Serialize)]
pub struct DvhMetrics {
    #[serde(rename = "D2")]
    pub d2: f64,
    #[serde(rename = "D30")]
    pub d30: f64,
    #[serde(rename = "D50")]
    pub d50: f64,
    #[serde(rename = "D70")]
    pub d70: f64,
    #[serde(rename = "D98")]
    pub d98: f64,
    pub mean: f64,
    pub max: f64,
    pub volume_ml: f64,
}

/// Results for one organ (a key of `organs` in `dose_summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct OrganSummary {
    pub label: u8,
    /// Diagnostic-CT mask volume.
    pub volume_ml: f64,
    pub density_g_per_ml: f64,
    pub mass_g: f64,
    /// Organ activity per time point, MBq: partial-volume corrected when
    /// `settings.pvc` is not "none", then over the volume
    /// `settings.activity_volume` names (these are the activities the kinetics fit).
    pub activity_mbq: Vec<f64>,
    /// Standard uncertainty of `activity_mbq`: quantification (`activity_rel_sd`) and
    /// the PSF's uncertainty through the correction, in quadrature. The fits weigh by
    /// the quantification part only; the PSF part, the same direction at every time
    /// point, reaches `tia_mbq_h_sd` as one correlated component.
    pub activity_mbq_sd: Vec<f64>,
    /// Activity in the border-extended VOI (no partial-volume correction), MBq.
    pub activity_uncorrected_mbq: Vec<f64>,
    /// Mean over the organ of its own PSF-blurred mask, per time point (1: no loss to
    /// the PSF); `None` without correction.
    pub pvc_self_recovery: Vec<Option<f64>>,
    pub voi_volume_ml: Vec<f64>,
    /// Organ volume on each SPECT grid (from the time point's mask).
    pub spect_organ_volume_ml: Vec<f64>,
    pub concentration_bq_per_ml: Vec<f64>,
    pub shell_to_core_ratio: Vec<Option<f64>>,
    pub tia_mbq_h: f64,
    pub tia_mbq_h_sd: f64,
    /// Time-integrated activity coefficient (TIA / injected activity), hours.
    pub tiac_h: Option<f64>,
    /// TIA x E / mass. The liver's, when lesions are measured (settings.lesions not
    /// "off"), is its parenchyma's: the liver without its lesions (the organ at risk;
    /// `with_lesions` has the whole liver).
    pub mean_dose_gy: f64,
    /// Standard uncertainty of the mean dose: activity, fit and mass, and
    /// (network masks) the segmentation's share below, in quadrature.
    pub mean_dose_gy_sd: f64,
    /// The segmentation's share of `mean_dose_gy_sd`: the difference of the
    /// mean dose under the generous and the strict mask over sqrt(12) (the
    /// SD of a uniform spread between them)
    /// (`seg::driver::edge_band`); None with masks given from files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_dose_gy_sd_segmentation: Option<f64>,
    /// The same for the mass (g).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mass_g_sd_segmentation: Option<f64>,
    /// Biologically effective dose (`bed.rs`), where the organ's
    /// linear-quadratic parameters are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bed: Option<super::bed::Bed>,
    /// The liver with its lesions, when lesions are measured (the SNMMI dosimetry
    /// challenge: whether lesions were in the liver VOI explained most of the spread of
    /// liver doses between sites).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_lesions: Option<WithLesions>,
    /// TIA and mean dose from the uncorrected activities (equal to the above when
    /// `settings.pvc` is "none").
    pub tia_uncorrected_mbq_h: f64,
    pub mean_dose_uncorrected_gy: f64,
    pub dvh: Option<DvhMetrics>,
    #[serde(skip)]
    pub dvh_curve: Option<Dvh>,
    pub fit: Option<FitResult>,
    pub kinetics: Kinetics,
    pub warnings: Vec<String>,
}

/// An organ together with the lesions inside it (`organs.liver.with_lesions`).
#[derive(Debug, Clone, Serialize)]
pub struct WithLesions {
    /// Ids of the lesions counted (`lesions[].id`).
    pub lesions: Vec<usize>,
    pub volume_ml: f64,
    pub mass_g: f64,
    pub tia_mbq_h: f64,
    pub tia_mbq_h_sd: f64,
    /// (TIA of the organ + its lesions) x E / (their masses).
    pub mean_dose_gy: f64,
    pub mean_dose_gy_sd: f64,
}

/// One lesion's results (`lesions[]` in `dose_summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct LesionSummary {
    /// 1, 2, ...: largest first.
    pub id: usize,
    /// "L1", "L2", ...
    pub name: String,
    /// "given" (the masks' tumour label) or "auto" (SPECT hot spot).
    pub source: LesionSource,
    /// The organ it lies in, when one does.
    pub site: Option<String>,
    /// LPS, mm (given: on the diagnostic CT; auto: on the SPECT it was found on).
    pub centroid_mm: [f64; 3],
    /// Given: the diagnostic-CT component; auto: the VOI on the SPECT.
    pub volume_ml: f64,
    pub density_g_per_ml: f64,
    pub mass_g: f64,
    /// Per time point, partial-volume corrected (the lesion is a region of the
    /// correction beside the organs).
    pub activity_mbq: Vec<f64>,
    pub activity_mbq_sd: Vec<f64>,
    /// In the border-extended VOI, no correction.
    pub activity_uncorrected_mbq: Vec<f64>,
    /// Per time point: the lesion's recovery of itself through the PSF (mean over
    /// the lesion of its own blurred mask); how much the correction had to restore.
    pub pvc_self_recovery: Vec<Option<f64>>,
    /// The VOI's volume on each SPECT grid.
    pub spect_volume_ml: Vec<f64>,
    pub tia_mbq_h: f64,
    pub tia_mbq_h_sd: f64,
    pub tiac_h: Option<f64>,
    pub mean_dose_gy: f64,
    pub mean_dose_gy_sd: f64,
    pub mean_dose_uncorrected_gy: f64,
    /// With the "tumour" linear-quadratic parameters, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bed: Option<super::bed::Bed>,
    /// Mean dose over the mean of the kidneys' mean doses (None without kidneys).
    pub tumour_to_kidney: Option<f64>,
    pub tumour_to_kidney_sd: Option<f64>,
    pub dvh: Option<DvhMetrics>,
    pub kinetics: Kinetics,
    pub fit: Option<FitResult>,
    /// How an automatic VOI was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
    pub warnings: Vec<String>,
}

/// The automatic lesion detection's settings (`settings.lesion_detection`).
#[derive(Debug, Clone, Serialize)]
pub struct LesionDetectionSettings {
    /// The SPECT searched (h p.i.).
    pub t_h: f64,
    pub contrast: f64,
    pub threshold: f64,
    pub threshold_method: String,
    pub min_diameter_fwhm: f64,
}

/// Settings a reader of the summary needs to interpret it.
#[derive(Debug, Clone, Serialize)]
pub struct SummarySettings {
    /// Partial-volume correction: "none", "gtm", "labbe", "rc".
    pub pvc: String,
    /// How the TIA was obtained from three or more points: "hybrid" or "fit".
    pub tia_method: String,
    /// Which volume an organ's activity is taken over: "diagnostic_ct" or
    /// "time_point" (`dosimetry.activity_volume`).
    pub activity_volume: String,
    pub psf_sigma_mm: f64,
    pub voi_threshold: f64,
    pub coverage_subsamples: usize,
    pub exclude_other_organs: bool,
    pub activity_rel_sd: f64,
    pub mass_rel_sd: f64,
    pub kernel: String,
    pub dose_map_time_point: usize,
    pub dose_map_t_h: f64,
    /// Where the lesions came from: "given", "detect" or "off" (`dosimetry.lesions`,
    /// "auto" resolved).
    pub lesions: String,
    pub lesion_min_volume_ml: f64,
    /// When lesions were searched for on the SPECT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lesion_detection: Option<LesionDetectionSettings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoseSummary {
    pub schema_version: String,
    pub generator: String,
    pub patient_id: String,
    /// The ID with issuer, birth date and sex (set by the caller from the
    /// study's headers; the ID alone otherwise).
    pub patient: organdose_core::patient::PatientIdentity,
    /// The injection's date-time, ISO 8601 (set by the caller): what the
    /// treatment history knows the cycle by.
    pub injection_datetime: String,
    pub nuclide: String,
    pub half_life_h: f64,
    pub electron_energy_kev_per_decay: f64,
    pub injected_activity_mbq: f64,
    pub times_h: Vec<f64>,
    pub settings: SummarySettings,
    /// What the partial-volume correction used and found (absent when "none").
    pub pvc: Option<PvcSummary>,
    pub organs: BTreeMap<String, OrganSummary>,
    /// Lesions, largest first (empty when none or `settings.lesions` is "off").
    pub lesions: Vec<LesionSummary>,
    /// `final` once the cycle's time points are all in; `provisional` (3 or more) or
    /// `partial` while a therapy cycle is still being acquired (set by the caller).
    pub status: String,
    /// Study-level warnings (organ warnings are in each organ).
    pub warnings: Vec<String>,
    /// Per CT and organ, how far the network's mask can be trusted (set by the
    /// caller; empty, and absent from the JSON, with masks given as files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mask_confidence: Vec<MaskConfidence>,
    /// Set when a physicist's corrected RT Structure Set or SEG replaced masks
    /// (issue 36); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewed: Option<Reviewed>,
    /// The patient's cycles so far with this one, cumulative doses and BEDs,
    /// and what remains under the limits (`history.rs`; set by the caller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub treatment_history: Option<super::history::TreatmentHistory>,
    /// Voxel dose map (Gy) on the reference SPECT grid.
    #[serde(skip)]
    pub dose_map_gy: Option<Volume<f32>>,
    /// Per time point of the input (input order), the VOIs the activities were
    /// measured in, on its SPECT grid (after any mask shift), as a label map:
    /// the report draws them without measuring again.
    #[serde(skip)]
    pub voi_maps: Vec<Option<Volume<u8>>>,
}

/// Who reviewed the masks and what their correction replaced (`reviewed` in
/// `dose_summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Reviewed {
    /// The person (ContentCreatorName / OperatorsName), else the object's label,
    /// with the Manufacturer of the tool.
    pub by: String,
    /// Date-time of the object (StructureSetDate/Time or ContentDate/Time), ISO 8601.
    pub at: String,
    /// File name or SOP instance UID of the correction(s).
    pub object: String,
    /// Organs whose masks it replaced.
    pub organs: Vec<String>,
    /// ROI / segment names that are none of organdose's organs: left out.
    pub ignored_rois: Vec<String>,
    /// ROI / segment names taken as lesions (painted as the tumour label).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lesion_rois: Vec<String>,
}

/// One organ mask's confidence on one CT (`mask_confidence` in `dose_summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct MaskConfidence {
    /// "diagnostic CT" or "low-dose CT <t> h".
    pub ct: String,
    pub organ: String,
    /// In [0, 1].
    pub confidence: f64,
    /// "ok" or "review".
    pub flag: String,
    pub reasons: Vec<String>,
    pub volume_ml: f64,
}

/// The partial-volume correction of a run (`pvc` in `dose_summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct PvcSummary {
    pub method: String,
    /// The SPECT PSF assumed (Gaussian, depth-independent), FWHM mm per axis x, y, z.
    pub psf_fwhm_mm: [f64; 3],
    pub psf_fwhm_sd_mm: f64,
    /// The configuration key the PSF came from.
    pub psf_source: String,
    pub shell_mm: f64,
    /// Per time point: condition number of the matrix solved.
    pub condition_number: Vec<f64>,
    /// Per time point: mean concentration (Bq/mL) of the field of view outside the
    /// organs and their shells.
    pub rest_concentration_bq_per_ml: Vec<f64>,
    /// The mask search's limit (mm; 0: no search).
    pub register_max_mm: f64,
    /// Per time point: how far the masks were moved to match the SPECT (mm, LPS);
    /// null where no search ran.
    pub mask_shift_mm: Vec<Option<[f64; 3]>>,
}

impl DoseSummary {
    /// This cycle as the treatment history counts it (`history.rs`).
    pub fn cycle_dose(&self) -> super::history::CycleDose {
        let gbq = self.injected_activity_mbq / 1000.0;
        super::history::CycleDose {
            injection_datetime: self.injection_datetime.clone(),
            injected_activity_mbq: self.injected_activity_mbq,
            status: self.status.clone(),
            source: "this cycle".into(),
            organs: self
                .organs
                .iter()
                .map(|(n, o)| {
                    let organ = super::history::OrganCycle::new(
                        o.mean_dose_gy,
                        o.mean_dose_gy_sd,
                        gbq,
                        o.bed.as_ref(),
                        &o.kinetics.method,
                    );
                    (n.clone(), organ)
                })
                .collect(),
        }
    }

    /// Every warning, organ ones prefixed with the organ name.
    pub fn all_warnings(&self) -> Vec<String> {
        let mut w = self.warnings.clone();
        for (name, o) in &self.organs {
            w.extend(o.warnings.iter().map(|x| format!("{name}: {x}")));
        }
        for l in &self.lesions {
            w.extend(l.warnings.iter().map(|x| format!("lesion {}: {x}", l.name)));
        }
        w
    }
}

/// The effective half-life (h) a single- or two-point method assumed: the
/// Hänscheid method the time of its point (its optimal effective half-life),
/// the others (Madsen, two points) the organ's population value.
fn teff_of(k: &kinetics::Kinetics, times: &[f64], population_h: f64) -> f64 {
    match k.method.as_str() {
        "single_point_hanscheid_2018" => times.first().copied().unwrap_or(population_h),
        _ => population_h,
    }
}

/// Runs the dosimetry on `input` with `cfg`.
pub fn run(input: &DoseInput, cfg: &DosimetryConfig) -> Result<DoseSummary> {
    cfg.validate()?;
    if input.timepoints.is_empty() {
        return Err(Error::input("no SPECT time point: nothing to integrate"));
    }
    input.diag_ct_labels.geom.validate()?;
    let mut order: Vec<usize> = (0..input.timepoints.len()).collect();
    for tp in &input.timepoints {
        if !(tp.t_h.is_finite() && tp.t_h >= 0.0) {
            return Err(Error::input(format!(
                "time point at {} h p.i. is invalid",
                tp.t_h
            )));
        }
    }
    order.sort_by(|&a, &b| input.timepoints[a].t_h.total_cmp(&input.timepoints[b].t_h));
    let times: Vec<f64> = order.iter().map(|&i| input.timepoints[i].t_h).collect();
    if times.windows(2).any(|w| w[1] - w[0] < 1e-6) {
        return Err(Error::input(format!(
            "two time points at the same time: {times:?} h"
        )));
    }
    let mut warnings = Vec::new();
    if !(input.injected_activity_mbq.is_finite() && input.injected_activity_mbq > 0.0) {
        warnings.push(format!(
            "injected activity {} MBq is not a positive number: no TIAC",
            input.injected_activity_mbq
        ));
    }

    // Organs and masses on the diagnostic CT.
    let ct = &input.diag_ct_labels;
    let mut counts = [0usize; 256];
    for &v in &ct.data {
        counts[v as usize] += 1;
    }
    let has_tumour = counts[organs::TUMOUR as usize] > 0;
    // Lesions: "auto" is the masks' tumour label when they have one, else the SPECT's
    // hot spots (the appliance sets "given" for masks from files).
    let mode = match cfg.lesions {
        LesionMode::Auto if has_tumour => LesionMode::Given,
        LesionMode::Auto => LesionMode::Detect,
        m => m,
    };
    let organ_labels: Vec<u8> = organs::ORGANS
        .iter()
        .map(|(l, _)| *l)
        .filter(|&l| counts[l as usize] > 0)
        .filter(|&l| mode == LesionMode::Off || l != organs::TUMOUR)
        .collect();
    if organ_labels.is_empty() && !(mode == LesionMode::Given && has_tumour) {
        return Err(Error::input(
            "the diagnostic-CT label map holds no known organ (labels 1-5)",
        ));
    }
    let ct_vox_ml = ct.geom.voxel_volume_ml();
    let mut lesion_vois: Vec<Lesion> = match mode {
        LesionMode::Given => lesions::given(ct, cfg.lesion_min_volume_ml, &mut warnings)?,
        _ => Vec::new(),
    };
    if mode == LesionMode::Detect && has_tumour {
        warnings.push(
            "lesions: dosimetry.lesions = \"detect\": the masks' tumour label is not used, lesions are found on the SPECT".into(),
        );
    }

    // The reference time point of the dose map.
    let ref_pos = times
        .iter()
        .enumerate()
        .min_by(|a, b| {
            (a.1 - cfg.dose_map_reference_h)
                .abs()
                .total_cmp(&(b.1 - cfg.dose_map_reference_h).abs())
        })
        .map(|(i, _)| i)
        .unwrap_or(0);
    // The organs on each time point, and the masks' move to the SPECT; given lesions
    // take part as the one tumour region (hot spots the model leaves out would pull
    // the move).
    let mut first_labels = organ_labels.clone();
    if mode == LesionMode::Given && has_tumour {
        first_labels.push(organs::TUMOUR);
    }
    let mut first: Vec<Option<TimePointMeasurement>> = Vec::with_capacity(order.len());
    let mut shifts: Vec<Option<registration::MaskShift>> = Vec::with_capacity(order.len());
    for (pos, &i) in order.iter().enumerate() {
        let tp = &input.timepoints[i];
        // The time point said, the fault kind kept (a bug stays a bug).
        let at_tp = |e: Error| e.context(format!("time point {} ({} h)", pos + 1, tp.t_h));
        let m = measure_time_point(&tp.spect_bq_per_ml, &tp.labels, &first_labels, cfg)
            .map_err(at_tp)?;
        // The masks moved to where the SPECT says the organs are, when asked.
        let shift = (cfg.pvc != PvcMethod::None && cfg.register_max_mm > 0.0)
            .then(|| {
                registration::estimate_shift(
                    &tp.spect_bq_per_ml,
                    &m.core,
                    &cfg.psf(),
                    cfg.register_max_mm,
                )
            })
            .flatten();
        let m = match shift {
            Some(s) if s.length_mm() > 0.0 => {
                let moved = registration::moved(&tp.labels, s.mm);
                measure_time_point(&tp.spect_bq_per_ml, &moved, &first_labels, cfg)
                    .map_err(at_tp)?
            }
            _ => m,
        };
        if let Some(s) = shift {
            let tp_name = format!("time point {} ({:.1} h)", pos + 1, tp.t_h);
            let voxel = tp
                .spect_bq_per_ml
                .geom
                .spacing
                .iter()
                .fold(0.0f64, |a, &b| a.max(b));
            if s.at_limit {
                warnings.push(format!(
                    "{tp_name}: the masks match the SPECT best at the search limit (register_max_mm = {} mm), moved by ({:.1}, {:.1}, {:.1}) mm: a larger SPECT/CT misregistration, or masks that do not match the SPECT; check the registration",
                    cfg.register_max_mm, s.mm[0], s.mm[1], s.mm[2]
                ));
            } else if s.length_mm() >= 0.5 * voxel {
                warnings.push(format!(
                    "{tp_name}: masks moved by ({:.1}, {:.1}, {:.1}) mm to match the SPECT (SPECT/CT misregistration); check the registration",
                    s.mm[0], s.mm[1], s.mm[2]
                ));
            }
        }
        shifts.push(shift);
        first.push(Some(m));
    }
    let shift_mm = |pos: usize| shifts[pos].map_or([0.0; 3], |s| s.mm);

    // Automatic lesions: on the SPECT nearest lesion_detect_h, with its organs where
    // the mask search put them.
    let mut detect_pos = None;
    if mode == LesionMode::Detect {
        let pos = times
            .iter()
            .enumerate()
            .min_by(|a, b| {
                (a.1 - cfg.lesion_detect_h)
                    .abs()
                    .total_cmp(&(b.1 - cfg.lesion_detect_h).abs())
            })
            .map(|(i, _)| i)
            .unwrap_or(0);
        let tp = &input.timepoints[order[pos]];
        let core = first[pos]
            .as_ref()
            .map(|m| m.core.clone())
            .unwrap_or_default();
        lesion_vois = lesions::detect(
            &tp.spect_bq_per_ml,
            tp.t_h,
            &core,
            &cfg.lesion_detect_settings(),
            &mut warnings,
        )
        .map_err(|e| e.context(format!("lesion detection on the {:.1} h SPECT", tp.t_h)))?;
        detect_pos = Some(pos);
    }
    let lesion_labels: Vec<u8> = (0..lesion_vois.len())
        .map(|n| lesions::FIRST_LABEL + n as u8)
        .collect();
    let mut all_labels = organ_labels.clone();
    all_labels.extend(&lesion_labels);
    // Per lesion, per time point: how it reached that time point's mask.
    let mut lesion_notes: Vec<Vec<String>> = vec![Vec::new(); lesion_vois.len()];

    // Activity per time point, lesions painted into the masks; keep the maps of the
    // reference time point only.
    let diag_centroids = (!lesion_vois.is_empty() && mode == LesionMode::Given)
        .then(|| lesions::organ_centroids(ct));
    let detect_centroids = detect_pos.filter(|_| !lesion_vois.is_empty()).map(|p| {
        (
            lesions::organ_centroids(&input.timepoints[order[p]].labels),
            shift_mm(p),
        )
    });
    let mut per_tp: Vec<TimePointMeasurement> = Vec::new();
    let mut rest_mbq = Vec::new();
    let mut per_tp_pvc: Vec<Option<(PvcResult, PvcResult)>> = Vec::new();
    let mut ref_meas: Option<TimePointMeasurement> = None;
    let mut voi_maps: Vec<Option<Volume<u8>>> = vec![None; input.timepoints.len()];
    for (pos, &i) in order.iter().enumerate() {
        let tp = &input.timepoints[i];
        let at_tp = |e: Error| e.context(format!("time point {} ({} h)", pos + 1, tp.t_h));
        let m = if lesion_vois.is_empty() {
            first[pos]
                .take()
                .ok_or_else(|| Error::internal("time point measured twice"))?
        } else {
            first[pos] = None;
            let mut labels = tp.labels.clone();
            let here = lesions::organ_centroids(&tp.labels);
            let tp_name = format!("time point {} ({:.1} h)", pos + 1, tp.t_h);
            match (&diag_centroids, &detect_centroids) {
                (Some(dc), _) => {
                    let d = lesions::displacement(dc, &here);
                    let (per, global) = place_given(&mut labels, &lesion_vois, d);
                    for (n, note) in per {
                        lesion_notes[n].push(format!("{tp_name}: {note}"));
                    }
                    warnings.extend(global.into_iter().map(|w| format!("{tp_name}: {w}")));
                }
                (None, Some((rc, s_ref))) => {
                    // Where the organs moved between the two SPECTs: their low-dose-CT
                    // displacement and both mask shifts; painted before this time
                    // point's own shift, which the move below adds.
                    let d = lesions::displacement(rc, &here);
                    let shift: [f64; 3] = std::array::from_fn(|a| d[a] - s_ref[a]);
                    for v in labels.data.iter_mut() {
                        if *v == organs::TUMOUR {
                            *v = 0;
                        }
                    }
                    for (n, l) in lesion_vois.iter().enumerate() {
                        let painted = lesions::paint(&mut labels, &l.mask, shift, lesion_labels[n]);
                        if painted == 0 {
                            lesion_notes[n].push(format!(
                                "{tp_name}: the VOI lies outside this time point's mask grid: no activity measured"
                            ));
                        }
                    }
                }
                _ => {}
            }
            let labels = match shifts[pos] {
                Some(s) if s.length_mm() > 0.0 => registration::moved(&labels, s.mm),
                _ => labels,
            };
            measure_time_point(&tp.spect_bq_per_ml, &labels, &all_labels, cfg).map_err(at_tp)?
        };
        // The report draws lesions as the tumour label.
        let mut vm = m.voi_label_map(&tp.spect_bq_per_ml.geom).map_err(at_tp)?;
        for v in vm.data.iter_mut() {
            if *v >= lesions::FIRST_LABEL {
                *v = organs::TUMOUR;
            }
        }
        voi_maps[i] = Some(vm);
        let vox_ml = tp.spect_bq_per_ml.geom.voxel_volume_ml();
        let total: f64 = tp
            .spect_bq_per_ml
            .data
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>()
            * vox_ml
            / 1e6;
        let corrected = match cfg.pvc {
            PvcMethod::None => None,
            _ => Some(correct_time_point(&tp.spect_bq_per_ml, &m, cfg).map_err(at_tp)?),
        };
        let in_organs: f64 = m
            .organs
            .iter()
            .map(|(l, o)| {
                corrected
                    .as_ref()
                    .and_then(|c| c.0.organs.get(l))
                    .map(|c| c.activity_mbq)
                    .filter(|a| a.is_finite() && *a > 0.0)
                    .unwrap_or(o.activity_mbq)
            })
            .sum();
        rest_mbq.push((total - in_organs).max(0.0));
        per_tp_pvc.push(corrected);
        let light = TimePointMeasurement {
            organs: m.organs.clone(),
            core: BTreeMap::new(),
            voi: BTreeMap::new(),
        };
        if pos == ref_pos {
            ref_meas = Some(m);
        }
        per_tp.push(light);
    }
    drop(first);
    let ref_meas = ref_meas.ok_or_else(|| Error::input("no reference time point"))?;
    let ref_tp = &input.timepoints[order[ref_pos]];

    let nuclide = input.nuclide;
    let ctx = RegionContext {
        times: &times,
        per_tp: &per_tp,
        per_tp_pvc: &per_tp_pvc,
        cfg,
        lp: nuclide.lambda_per_h(),
        e_j: nuclide.electron_energy_j(),
        injected_mbq: input.injected_activity_mbq,
    };
    let (lp, e_j) = (ctx.lp, ctx.e_j);
    let mut organs_out = BTreeMap::new();
    for &lab in &organ_labels {
        let name = organs::name(lab).unwrap_or("unknown").to_string();
        let mut volume_ml = counts[lab as usize] as f64 * ct_vox_ml;
        let mut notes = Vec::new();
        if lab == organs::LIVER {
            // Automatic lesions were cut out of the liver on the SPECT; the
            // diagnostic CT's liver still holds them: the parenchyma is the rest.
            let inside: f64 = lesion_vois
                .iter()
                .filter(|l| l.source == LesionSource::Auto && l.site == Some(organs::LIVER))
                .map(|l| l.volume_ml)
                .sum();
            if inside > 0.0 {
                volume_ml = (volume_ml - inside).max(0.5 * volume_ml);
                notes.push(format!(
                    "volume: {inside:.1} mL of automatic lesion VOIs taken out of the diagnostic-CT liver ({:.1} mL): the liver's values are its parenchyma",
                    counts[lab as usize] as f64 * ct_vox_ml
                ));
            }
        }
        let mut o = region_summary(&ctx, lab, &name, volume_ml, false)?;
        o.warnings.splice(0..0, notes);
        organs_out.insert(name, o);
    }
    let mut lesion_out: Vec<(usize, OrganSummary)> = Vec::new();
    for (n, l) in lesion_vois.iter().enumerate() {
        let mut o = region_summary(&ctx, lesion_labels[n], TUMOUR_KEY, l.volume_ml, true)?;
        o.warnings
            .splice(0..0, std::mem::take(&mut lesion_notes[n]));
        lesion_out.push((n, o));
    }

    let mask_shifts: Vec<Option<[f64; 3]>> = shifts.iter().map(|s| s.map(|s| s.mm)).collect();
    let pvc_summary = (cfg.pvc != PvcMethod::None).then(|| {
        let psf = cfg.psf();
        let cond: Vec<f64> = per_tp_pvc
            .iter()
            .map(|c| c.as_ref().map_or(f64::NAN, |c| c.0.condition_number))
            .collect();
        for (pos, c) in per_tp_pvc.iter().enumerate() {
            if let Some((c, _)) = c {
                warnings.extend(
                    c.warnings
                        .iter()
                        .map(|w| format!("time point {} ({:.1} h): {w}", pos + 1, times[pos])),
                );
            }
        }
        PvcSummary {
            method: cfg.pvc.name().into(),
            psf_fwhm_mm: psf.fwhm_mm,
            psf_fwhm_sd_mm: cfg.pvc_psf_fwhm_sd_mm,
            psf_source: if cfg.pvc_psf_axial_fwhm_mm.is_some() {
                "dosimetry.pvc_psf_fwhm_mm, dosimetry.pvc_psf_axial_fwhm_mm".into()
            } else {
                "dosimetry.pvc_psf_fwhm_mm".into()
            },
            shell_mm: cfg.pvc_shell_mm,
            condition_number: cond,
            rest_concentration_bq_per_ml: per_tp_pvc
                .iter()
                .map(|c| {
                    c.as_ref()
                        .map_or(f64::NAN, |c| c.0.rest_concentration_bq_per_ml)
                })
                .collect(),
            register_max_mm: cfg.register_max_mm,
            mask_shift_mm: mask_shifts.clone(),
        }
    });

    // Voxel dose map on the reference SPECT grid.
    let spect = &ref_tp.spect_bq_per_ml;
    let g = &spect.geom;
    let vox_ml = g.voxel_volume_ml();
    let mut tia_map = vec![0f64; g.len()];
    let mut in_any_voi = vec![false; g.len()];
    for w in ref_meas.voi.values() {
        w.for_each(g.dims, |l, x| {
            if x > 0.0 {
                in_any_voi[l] = true;
            }
        });
    }
    let mut tia_of_label: BTreeMap<u8, f64> = organs_out
        .values()
        .map(|o| (o.label, o.tia_mbq_h))
        .collect();
    tia_of_label.extend(lesion_out.iter().map(|(_, o)| (o.label, o.tia_mbq_h)));
    for (&lab, core) in &ref_meas.core {
        let Some(&tia) = tia_of_label.get(&lab) else {
            continue;
        };
        let tia_bq_s = tia * 1e6 * 3600.0;
        let activity = core.gather(&spect.data, g.dims);
        let weights: Vec<f64> = core
            .w
            .iter()
            .zip(&activity)
            .map(|(&c, &a)| c as f64 * (a as f64).max(0.0))
            .collect();
        let mut s: f64 = weights.iter().sum();
        let uniform;
        let weights = if s > 0.0 {
            &weights
        } else {
            uniform = core.w.iter().map(|&c| c as f64).collect::<Vec<f64>>();
            s = uniform.iter().sum();
            &uniform
        };
        if s > 0.0 {
            let mut q = 0;
            core.for_each(g.dims, |l, _| {
                tia_map[l] += tia_bq_s * weights[q] / s;
                q += 1;
            });
        }
    }
    let rest_tia_bq_s = kinetics::trapezoid_physical_tail(&times, &rest_mbq, lp) * 1e6 * 3600.0;
    let rest_sum: f64 = spect
        .data
        .iter()
        .zip(&in_any_voi)
        .filter(|(_, &v)| !v)
        .map(|(&a, _)| (a as f64).max(0.0))
        .sum();
    if rest_sum > 0.0 {
        for l in 0..g.len() {
            if !in_any_voi[l] {
                tia_map[l] += rest_tia_bq_s * (spect.data[l] as f64).max(0.0) / rest_sum;
            }
        }
    }
    let kernel = if cfg.kernel.trim().eq_ignore_ascii_case("local") {
        Kernel::delta(e_j, g.spacing, cfg.density("kidney_left"))
    } else {
        Kernel::read(Path::new(cfg.kernel.trim()))?
    };
    let tia_vol = Volume::new(g.clone(), tia_map)?;
    let dmap = dose_map(&tia_vol, &kernel)?;
    drop(in_any_voi);
    let dvh_of = |lab: u8| {
        ref_meas.core.get(&lab).and_then(|core| {
            let d: Vec<f64> = core
                .gather(&dmap.data, g.dims)
                .into_iter()
                .map(|v| v as f64)
                .collect();
            let w: Vec<f64> = core.w.iter().map(|&c| c as f64 * vox_ml).collect();
            dvh(&d, &w, cfg.dvh_bins)
        })
    };
    let set_dvh = |o: &mut OrganSummary, h: Option<Dvh>, what: &str| {
        if let Some(h) = h {
            o.dvh = Some(DvhMetrics {
                d2: h.d2,
                d30: h.d30,
                d50: h.d50,
                d70: h.d70,
                d98: h.d98,
                mean: h.mean,
                max: h.max,
                volume_ml: h.volume_ml,
            });
            o.dvh_curve = Some(h);
        } else {
            o.warnings
                .push(format!("{what} not on the reference SPECT grid: no DVH"));
        }
    };
    for &lab in &organ_labels {
        let name = organs::name(lab).unwrap_or("unknown");
        let h = dvh_of(lab);
        if let Some(o) = organs_out.get_mut(name) {
            set_dvh(o, h, "organ");
        }
    }
    for (_, o) in lesion_out.iter_mut() {
        let h = dvh_of(o.label);
        set_dvh(o, h, "lesion");
    }
    let lesions_summary = lesion_results(&lesion_vois, lesion_out, &mut organs_out, cfg, e_j);
    Ok(DoseSummary {
        schema_version: SCHEMA_VERSION.into(),
        generator: format!("organdose {}", env!("CARGO_PKG_VERSION")),
        patient_id: input.patient_id.clone(),
        patient: organdose_core::patient::PatientIdentity::with_id(&input.patient_id),
        injection_datetime: String::new(),
        nuclide: nuclide.name().into(),
        half_life_h: nuclide.half_life_h(),
        electron_energy_kev_per_decay: nuclide.electron_energy_kev(),
        injected_activity_mbq: input.injected_activity_mbq,
        times_h: times.clone(),
        settings: SummarySettings {
            pvc: cfg.pvc.name().into(),
            tia_method: cfg.tia_method.name().into(),
            activity_volume: cfg.activity_volume.name().into(),
            psf_sigma_mm: cfg.psf_sigma_mm,
            voi_threshold: cfg.voi_threshold,
            coverage_subsamples: cfg.coverage_subsamples,
            exclude_other_organs: cfg.exclude_other_organs,
            activity_rel_sd: cfg.activity_rel_sd,
            mass_rel_sd: cfg.mass_rel_sd,
            kernel: kernel.source.clone(),
            dose_map_time_point: ref_pos + 1,
            dose_map_t_h: ref_tp.t_h,
            lesions: mode.name().into(),
            lesion_min_volume_ml: cfg.lesion_min_volume_ml,
            lesion_detection: detect_pos.map(|p| LesionDetectionSettings {
                t_h: times[p],
                contrast: cfg.lesion_detect_contrast,
                threshold: cfg.lesion_threshold,
                threshold_method: match cfg.lesion_threshold_method {
                    lesions::ThresholdMethod::Iterative => "iterative".into(),
                    lesions::ThresholdMethod::Fixed => "fixed".into(),
                },
                min_diameter_fwhm: cfg.lesion_min_diameter_fwhm,
            }),
        },
        pvc: pvc_summary,
        organs: organs_out,
        lesions: lesions_summary,
        status: "final".into(),
        warnings,
        mask_confidence: Vec::new(),
        reviewed: None,
        treatment_history: None,
        dose_map_gy: Some(dmap),
        voi_maps,
    })
}

/// The lesions' summaries from their region results, their tumour-to-kidney ratios,
/// and the liver with its lesions (`with_lesions`).
fn lesion_results(
    vois: &[Lesion],
    results: Vec<(usize, OrganSummary)>,
    organs_out: &mut BTreeMap<String, OrganSummary>,
    cfg: &DosimetryConfig,
    e_j: f64,
) -> Vec<LesionSummary> {
    // The kidneys' mean: of the kidneys there are (one after a nephrectomy).
    let kidneys: Vec<(f64, f64)> = ["kidney_left", "kidney_right"]
        .iter()
        .filter_map(|k| organs_out.get(*k))
        .filter(|o| o.mean_dose_gy.is_finite() && o.mean_dose_gy > 0.0)
        .map(|o| (o.mean_dose_gy, o.mean_dose_gy_sd))
        .collect();
    let kidney_mean = (!kidneys.is_empty()).then(|| {
        let n = kidneys.len() as f64;
        let d = kidneys.iter().map(|k| k.0).sum::<f64>() / n;
        let sd = kidneys.iter().map(|k| k.1 * k.1).sum::<f64>().sqrt() / n;
        (d, sd)
    });
    let mut out = Vec::with_capacity(results.len());
    for (n, o) in results {
        let Some(l) = vois.get(n) else { continue };
        let (ratio, ratio_sd) = match kidney_mean {
            Some((k, k_sd)) if o.mean_dose_gy.is_finite() => {
                let r = o.mean_dose_gy / k;
                let rel =
                    ((o.mean_dose_gy_sd / o.mean_dose_gy).powi(2) + (k_sd / k).powi(2)).sqrt();
                (Some(r), Some((r * rel).abs()).filter(|v| v.is_finite()))
            }
            _ => (None, None),
        };
        out.push(LesionSummary {
            id: n + 1,
            name: format!("L{}", n + 1),
            source: l.source,
            site: l.site.and_then(organs::name).map(String::from),
            centroid_mm: l.centroid_mm,
            volume_ml: o.volume_ml,
            density_g_per_ml: o.density_g_per_ml,
            mass_g: o.mass_g,
            activity_mbq: o.activity_mbq,
            activity_mbq_sd: o.activity_mbq_sd,
            activity_uncorrected_mbq: o.activity_uncorrected_mbq,
            pvc_self_recovery: o.pvc_self_recovery,
            spect_volume_ml: o.spect_organ_volume_ml,
            tia_mbq_h: o.tia_mbq_h,
            tia_mbq_h_sd: o.tia_mbq_h_sd,
            tiac_h: o.tiac_h,
            mean_dose_gy: o.mean_dose_gy,
            mean_dose_gy_sd: o.mean_dose_gy_sd,
            mean_dose_uncorrected_gy: o.mean_dose_uncorrected_gy,
            bed: o.bed,
            tumour_to_kidney: ratio,
            tumour_to_kidney_sd: ratio_sd,
            dvh: o.dvh,
            kinetics: o.kinetics,
            fit: o.fit,
            detection: l.detection.clone(),
            warnings: o.warnings,
        });
    }
    if cfg.lesions != LesionMode::Off {
        if let Some(liver) = organs_out.get_mut("liver") {
            let inside: Vec<&LesionSummary> = out
                .iter()
                .filter(|l| l.site.as_deref() == Some("liver"))
                .collect();
            let volume_ml = liver.volume_ml + inside.iter().map(|l| l.volume_ml).sum::<f64>();
            let mass_g = liver.mass_g + inside.iter().map(|l| l.mass_g).sum::<f64>();
            let tia = liver.tia_mbq_h + inside.iter().map(|l| l.tia_mbq_h).sum::<f64>();
            // The parts' TIAs are measured separately: their uncertainties add in
            // quadrature.
            let tia_sd = (liver.tia_mbq_h_sd.powi(2)
                + inside.iter().map(|l| l.tia_mbq_h_sd.powi(2)).sum::<f64>())
            .sqrt();
            let dose = local_deposition_gy(tia, e_j, mass_g);
            liver.with_lesions = Some(WithLesions {
                lesions: inside.iter().map(|l| l.id).collect(),
                volume_ml,
                mass_g,
                tia_mbq_h: tia,
                tia_mbq_h_sd: tia_sd,
                mean_dose_gy: dose,
                mean_dose_gy_sd: mean_dose_sd(dose, tia, tia_sd, cfg.mass_rel_sd),
            });
        }
    }
    out
}

/// The configuration key of lesions (density, population half-life, BED).
const TUMOUR_KEY: &str = "tumour";

/// What every region's (organ's or lesion's) results are computed from.
struct RegionContext<'a> {
    times: &'a [f64],
    per_tp: &'a [TimePointMeasurement],
    per_tp_pvc: &'a [Option<(PvcResult, PvcResult)>],
    cfg: &'a DosimetryConfig,
    /// Physical decay constant (1/h) and energy per decay (J).
    lp: f64,
    e_j: f64,
    injected_mbq: f64,
}

/// Activities, kinetics, TIA, mean dose, SD and BED of the region `lab` (an organ, or
/// a lesion with `lesion`), `key` its configuration key, `volume_ml` its volume on the
/// diagnostic CT (an automatic lesion: on the SPECT).
fn region_summary(
    ctx: &RegionContext,
    lab: u8,
    key: &str,
    volume_ml: f64,
    lesion: bool,
) -> Result<OrganSummary> {
    let (times, per_tp, per_tp_pvc, cfg) = (ctx.times, ctx.per_tp, ctx.per_tp_pvc, ctx.cfg);
    let (lp, e_j) = (ctx.lp, ctx.e_j);
    let of = |m: &TimePointMeasurement| -> Result<activity::OrganActivity> {
        m.organs
            .get(&lab)
            .cloned()
            .ok_or_else(|| Error::internal(format!("label {lab} was not measured")))
    };
    let meas: Vec<activity::OrganActivity> = per_tp.iter().map(of).collect::<Result<_>>()?;
    let density = cfg.density(key);
    let mass_g = volume_ml * density;
    // The corrected activity is the organ's concentration x its volume on the
    // time point's SPECT grid; taken over the diagnostic CT's volume instead, it
    // is the activity of the organ whose mass the dose divides by
    // (`ActivityVolume`). The uncorrected VOI activity (the paper's method)
    // counts what the border-extended VOI holds, not a concentration, and
    // stays as measured; so does a lesion's.
    let by_ct = cfg.activity_volume == ActivityVolume::DiagnosticCt && !lesion;
    let uncorrected: Vec<f64> = meas.iter().map(|o| o.activity_mbq).collect();
    let mut ow = Vec::new();
    let mut acts = uncorrected.clone();
    let mut sds = kinetics::activity_sd(&uncorrected, cfg.activity_rel_sd);
    let mut wide_acts = uncorrected.clone();
    let mut recovery = vec![None; times.len()];
    let mut scaled = vec![false; times.len()];
    for (pos, c) in per_tp_pvc.iter().enumerate() {
        let Some((c, wide)) = c else { continue };
        let (Some(o), Some(w)) = (c.organs.get(&lab), wide.organs.get(&lab)) else {
            continue;
        };
        let (o_act, w_act) = (o.activity_mbq, w.activity_mbq);
        let tp_name = format!("time point {} ({:.1} h)", pos + 1, times[pos]);
        recovery[pos] = Some(o.self_recovery);
        if !(o_act.is_finite() && o_act > 0.0) {
            ow.push(format!(
                "{tp_name}: partial-volume corrected activity {o_act:.3} MBq is not positive: the uncorrected VOI activity is used"
            ));
            continue;
        }
        // A small organ (low self-recovery) legitimately gains more than a kidney.
        let ratio = o_act / uncorrected[pos];
        let max_ratio = 1.5 / o.self_recovery.clamp(0.2, 1.0);
        if !(0.8..=max_ratio).contains(&ratio) {
            ow.push(format!(
                "{tp_name}: partial-volume correction changes the activity by x{ratio:.2} ({:.1} -> {o_act:.1} MBq): implausible, check the masks, registration and PSF",
                uncorrected[pos]
            ));
        }
        if o.self_recovery < 0.5 {
            ow.push(format!(
                "{tp_name}: the {} is small for the PSF (self-recovery {:.2}): its corrected activity depends strongly on the PSF",
                if lesion { "lesion" } else { "organ" },
                o.self_recovery
            ));
        }
        // Over the diagnostic CT's volume where both volumes exist (an empty
        // mask on this time point has no concentration to carry).
        let over_diag = by_ct && volume_ml > 0.0 && meas[pos].core_volume_ml > 0.0;
        let (o_act, w_act) = if over_diag {
            let over_ct = |c: f64| c * volume_ml / 1e6;
            (
                over_ct(o.concentration_bq_per_ml),
                over_ct(w.concentration_bq_per_ml),
            )
        } else {
            (o_act, w_act)
        };
        // PSF uncertainty: the correction redone with the FWHM one SD wider.
        let u_psf = (w_act - o_act).abs();
        acts[pos] = o_act;
        wide_acts[pos] = w_act;
        scaled[pos] = over_diag;
        sds[pos] = ((cfg.activity_rel_sd * o_act).powi(2) + u_psf * u_psf).sqrt();
    }
    // The fit weights carry the independent (quantification) uncertainty only: the
    // PSF's error moves every time point the same way, so it is propagated as one
    // correlated component, the TIA of the activities corrected with the wider PSF
    // (EANM 2018: correlated inputs are not added as independent noise; as weights
    // they would also tip the model choice towards the simplest model).
    let mut k = kinetics::integrate(
        times,
        &acts,
        lp,
        cfg.activity_rel_sd,
        cfg.population_teff_h(key),
        cfg.tia_method,
    )?;
    if per_tp_pvc.iter().any(|c| c.is_some()) && wide_acts != acts {
        // Relative change of the TIA through the trapezoid + physical tail, which is
        // linear in the activities: a fit could switch models between the two PSFs
        // and turn a small change into a jump.
        let trap = kinetics::trapezoid_physical_tail(times, &acts, lp);
        let trap_wide = kinetics::trapezoid_physical_tail(times, &wide_acts, lp);
        if trap > 0.0 {
            let u = k.tia_mbq_h * (trap_wide - trap) / trap;
            k.tia_mbq_h_sd = (k.tia_mbq_h_sd.powi(2) + u * u).sqrt();
        }
    }
    let dose = local_deposition_gy(k.tia_mbq_h, e_j, mass_g);
    // The same kinetics on the uncorrected activities: what the correction changed.
    let uncorrected_tia = if cfg.pvc == PvcMethod::None {
        k.tia_mbq_h
    } else {
        kinetics::integrate(
            times,
            &uncorrected,
            lp,
            cfg.activity_rel_sd,
            cfg.population_teff_h(key),
            cfg.tia_method,
        )
        .map_or(f64::NAN, |u| u.tia_mbq_h)
    };
    let dose_sd = mean_dose_sd(dose, k.tia_mbq_h, k.tia_mbq_h_sd, cfg.mass_rel_sd);
    ow.extend(k.warnings.iter().cloned());
    let what = if lesion { "lesion" } else { "organ" };
    for (pos, o) in meas.iter().enumerate() {
        if o.core_volume_ml <= 0.0 {
            ow.push(format!(
                "time point {} ({:.1} h): the {what} mask does not reach the SPECT field of view",
                pos + 1,
                times[pos]
            ));
            continue;
        }
        // A lesion's counts spread beyond any margin; the correction models it.
        if let Some(r) = o.shell_to_core_ratio.filter(|_| !lesion) {
            if r > cfg.spill_warn_ratio {
                ow.push(format!(
                    "time point {} ({:.1} h): activity concentration in the {:.0} mm shell outside the VOI is {:.0} % of that inside the organ: spill-out beyond the {:.0} mm margin or SPECT/CT misregistration (as the paper's patient 7); check the registration or try a 6 mm margin",
                    pos + 1, times[pos], cfg.spill_shell_mm, r * 100.0, cfg.psf_sigma_mm
                ));
            }
        }
        let dv = (o.core_volume_ml - volume_ml) / volume_ml;
        if dv.abs() > 0.15 {
            ow.push(format!(
                "time point {} ({:.1} h): {what} volume on the SPECT grid ({:.1} mL) differs by {:+.0} % from the {} ({:.1} mL){}",
                pos + 1,
                times[pos],
                o.core_volume_ml,
                dv * 100.0,
                if lesion { "lesion's VOI" } else { "diagnostic CT" },
                volume_ml,
                if scaled[pos] {
                    format!(
                        ": its activity there is its concentration over the diagnostic CT's volume (x{:.2}); check that time point's mask",
                        volume_ml / o.core_volume_ml
                    )
                } else {
                    String::new()
                }
            ));
        }
    }
    let mut kin = k.clone();
    kin.warnings.clear();
    let bed = cfg.lq(key).and_then(|(ab, trep)| {
        super::bed::of_organ(
            dose,
            dose_sd,
            &k,
            lp,
            teff_of(&k, times, cfg.population_teff_h(key)),
            ab,
            trep,
        )
    });
    Ok(OrganSummary {
        label: lab,
        volume_ml,
        density_g_per_ml: density,
        mass_g,
        activity_mbq_sd: sds,
        activity_mbq: acts,
        activity_uncorrected_mbq: uncorrected,
        pvc_self_recovery: recovery,
        voi_volume_ml: meas.iter().map(|o| o.voi_volume_ml).collect(),
        spect_organ_volume_ml: meas.iter().map(|o| o.core_volume_ml).collect(),
        concentration_bq_per_ml: meas
            .iter()
            .map(|o| o.core_concentration_bq_per_ml)
            .collect(),
        shell_to_core_ratio: meas.iter().map(|o| o.shell_to_core_ratio).collect(),
        tia_mbq_h: k.tia_mbq_h,
        tia_mbq_h_sd: k.tia_mbq_h_sd,
        tiac_h: (ctx.injected_mbq > 0.0).then(|| k.tia_mbq_h / ctx.injected_mbq),
        mean_dose_gy: dose,
        tia_uncorrected_mbq_h: uncorrected_tia,
        mean_dose_uncorrected_gy: local_deposition_gy(uncorrected_tia, e_j, mass_g),
        mean_dose_gy_sd: dose_sd,
        mean_dose_gy_sd_segmentation: None,
        mass_g_sd_segmentation: None,
        bed,
        with_lesions: None,
        dvh: None,
        dvh_curve: None,
        fit: k.fit.clone(),
        kinetics: kin,
        warnings: ow,
    })
}

/// Given lesions on one time point's mask (`labels`, changed in place): its own
/// tumour components, matched by centroid to the diagnostic CT's lesions moved by the
/// organs' displacement `d` (nearest pairs first, within the lesion's radius or
/// 20 mm), take the lesions' labels; a lesion without one is carried from the
/// diagnostic CT by `d`; a component matching no lesion is left out. Returns notes:
/// per lesion (index, text), and for the study.
fn place_given(
    labels: &mut Volume<u8>,
    lesion_vois: &[Lesion],
    d: [f64; 3],
) -> (Vec<(usize, String)>, Vec<String>) {
    let g = labels.geom.clone();
    let comps = lesions::components(g.dims, |l| labels.data[l] == organs::TUMOUR);
    let centre = |c: &[usize]| -> [f64; 3] {
        let mut s = [0f64; 3];
        for &l in c {
            let ix = [
                l % g.dims[0],
                (l / g.dims[0]) % g.dims[1],
                l / (g.dims[0] * g.dims[1]),
            ];
            for a in 0..3 {
                s[a] += ix[a] as f64;
            }
        }
        g.index_to_patient(s.map(|v| v / c.len().max(1) as f64))
    };
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (ci, c) in comps.iter().enumerate() {
        let p = centre(c);
        for (li, l) in lesion_vois.iter().enumerate() {
            let dist = (0..3)
                .map(|a| (p[a] - l.centroid_mm[a] - d[a]).powi(2))
                .sum::<f64>()
                .sqrt();
            let r_eq = (3.0 * l.volume_ml * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt();
            if dist <= r_eq.max(20.0) {
                pairs.push((dist, ci, li));
            }
        }
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut of_comp: Vec<Option<usize>> = vec![None; comps.len()];
    let mut placed = vec![false; lesion_vois.len()];
    for (_, ci, li) in pairs {
        if of_comp[ci].is_none() && !placed[li] {
            of_comp[ci] = Some(li);
            placed[li] = true;
        }
    }
    let mut global = Vec::new();
    let mut unmatched = 0usize;
    for (ci, c) in comps.iter().enumerate() {
        let v = match of_comp[ci] {
            Some(li) => lesions::FIRST_LABEL + li as u8,
            None => {
                unmatched += 1;
                0
            }
        };
        for &l in c {
            labels.data[l] = v;
        }
    }
    if unmatched > 0 {
        global.push(format!(
            "lesions: {unmatched} tumour component(s) of a time point's mask match no lesion of the diagnostic CT: left out"
        ));
    }
    let mut notes = Vec::new();
    for (li, l) in lesion_vois.iter().enumerate() {
        if placed[li] {
            continue;
        }
        let n = lesions::paint(labels, &l.mask, d, lesions::FIRST_LABEL + li as u8);
        notes.push((
            li,
            if n > 0 {
                format!(
                    "no VOI of its own on this time point's mask: carried from the diagnostic CT with the organs' displacement ({:.1}, {:.1}, {:.1}) mm",
                    d[0], d[1], d[2]
                )
            } else {
                "outside this time point's mask grid: no activity measured".into()
            },
        ));
    }
    (notes, global)
}

/// The correction of one time point with the configured PSF, and again with the
/// FWHM one standard uncertainty wider (for the PSF's share of the activity
/// uncertainty).
fn correct_time_point(
    spect: &Volume<f32>,
    m: &TimePointMeasurement,
    cfg: &DosimetryConfig,
) -> Result<(PvcResult, PvcResult)> {
    let settings = PvcSettings {
        method: cfg.pvc,
        psf: cfg.psf(),
        shell_mm: cfg.pvc_shell_mm,
    };
    let regions = pvc::Regions::new(&spect.geom, &m.core, &settings)?;
    let r = regions.correct(&spect.data, &spect.geom, &m.voi, &settings)?;
    let wide = if cfg.pvc_psf_fwhm_sd_mm > 0.0 {
        let s = PvcSettings {
            psf: settings.psf.widened(cfg.pvc_psf_fwhm_sd_mm),
            ..settings
        };
        regions.correct(&spect.data, &spect.geom, &m.voi, &s)?
    } else {
        r.clone()
    };
    Ok((r, wide))
}
