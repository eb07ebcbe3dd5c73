//! organdose-report: the outputs of a study.
//!
//! Outputs of a dosimetry run: `dose_summary.json`, `report.txt`, `dvh.csv`, `dvh.png`,
//! `tac.png` and `dose_map.nii.gz`. Every file is written atomically (temporary name,
//! then rename).

// Index loops over 3x3 / 4x4 matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use crate::error::FaultKind;
use organdose_core::{error, organs, volume, Error, Geometry, Result};
use organdose_dose as dosimetry;
use organdose_io as io;
use organdose_io::study;

pub mod dicom_out;
pub mod overlay;
pub mod pdf_report;
pub mod plot;
pub mod review;
pub mod settings;

pub use settings::ReportConfig;

use crate::dosimetry::DoseSummary;
use crate::io::{nifti::write_nifti, write_bytes_atomically};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Writes every output into `out_dir` (created if needed); returns the paths written.
pub fn write_all(out_dir: &Path, s: &DoseSummary) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = out_dir.join(name);
        write_bytes_atomically(&p, bytes)?;
        written.push(p);
        Ok(())
    };
    put("dose_summary.json", summary_json(s)?.as_bytes())?;
    put("report.txt", report_text(s).as_bytes())?;
    put("dvh.csv", dvh_csv(s).as_bytes())?;
    put("dvh.png", &plot::dvh_png(s)?)?;
    put("tac.png", &plot::tac_png(s)?)?;
    if let Some(png) = plot::history_png(s)? {
        put("history.png", &png)?;
    }
    if let Some(d) = &s.dose_map_gy {
        let p = out_dir.join("dose_map.nii.gz");
        write_nifti(d, &p, "organdose dose map (Gy)")?;
        written.push(p);
    }
    Ok(written)
}

/// `dose_summary.json`, pretty printed. NaN (e.g. an undefined uncertainty) is written
/// as null.
pub(crate) fn summary_json(s: &DoseSummary) -> Result<String> {
    let v =
        serde_json::to_value(s).map_err(|e| Error::library(FaultKind::Internal, "summary", e))?;
    let mut text = serde_json::to_string_pretty(&v)
        .map_err(|e| Error::library(FaultKind::Internal, "summary", e))?;
    text.push('\n');
    Ok(text)
}

/// `dvh.csv`: long format, one row per organ and dose level.
pub(crate) fn dvh_csv(s: &DoseSummary) -> String {
    let mut out = String::from("organ,dose_gy,volume_fraction\n");
    for (name, o) in &s.organs {
        if let Some(h) = &o.dvh_curve {
            for (d, v) in h.dose_gy.iter().zip(&h.volume_fraction) {
                let _ = writeln!(out, "{name},{d:.6},{v:.6}");
            }
        }
    }
    out
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => fmt_num(x, prec),
        _ => "-".into(),
    }
}

/// `x` with `prec` decimals, or in scientific notation when that would print
/// hundreds of digits or a non-zero value as 0 (issue 42: 1e-300 MBq printed
/// "Injected: 0 MBq" and TIACs of 300 digits).
fn fmt_num(x: f64, prec: usize) -> String {
    let a = x.abs();
    if a >= 1e9 || (a > 0.0 && a < 0.5 * 10f64.powi(-(prec as i32))) {
        format!("{x:.3e}")
    } else {
        format!("{x:.prec$}")
    }
}

/// The lesions of `report.txt`: a table, the liver with and without them, and each
/// lesion's activities.
fn lesion_text(r: &mut String, s: &DoseSummary) {
    let st = &s.settings;
    if st.lesions == "off" {
        return;
    }
    let _ = writeln!(r);
    let how = match &st.lesion_detection {
        Some(d) => format!(
            "SPECT hot spots on the {:.1} h SPECT: maxima >= {:.1} x the liver median, region above background + f x (maximum - background), f {} from {:.2}, at least a sphere of {:.1} FWHM",
            d.t_h,
            d.contrast,
            if d.threshold_method == "iterative" {
                "iterated to the PSF's sphere calibration"
            } else {
                "fixed"
            },
            d.threshold,
            d.min_diameter_fwhm
        ),
        None => format!(
            "the masks' tumour label, one lesion per connected component of {} mL or more",
            st.lesion_min_volume_ml
        ),
    };
    if s.lesions.is_empty() {
        let _ = writeln!(r, "Lesions: none ({how}).");
        return;
    }
    let _ = writeln!(r, "Lesions ({how}):");
    let _ = writeln!(
        r,
        "{:<6} {:<6} {:<7} {:>8} {:>8} {:>16} {:>16} {:>16} {:>6} {:>9}",
        "Lesion",
        "Source",
        "Site",
        "Vol mL",
        "Mass g",
        "TIA MBq h",
        "Mean dose Gy",
        "BED Gy",
        "T/K",
        "Recovery"
    );
    for l in &s.lesions {
        let rec: Vec<f64> = l.pvc_self_recovery.iter().flatten().copied().collect();
        let recovery = match (
            rec.iter().copied().reduce(f64::min),
            rec.iter().copied().reduce(f64::max),
        ) {
            (Some(a), Some(b)) if (b - a).abs() < 0.005 => format!("{a:.2}"),
            (Some(a), Some(b)) => format!("{a:.2}-{b:.2}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            r,
            "{:<6} {:<6} {:<7} {:>8.1} {:>8.1} {:>16} {:>16} {:>16} {:>6} {:>9}",
            l.name,
            match l.source {
                crate::dosimetry::lesions::LesionSource::Given => "given",
                crate::dosimetry::lesions::LesionSource::Auto => "auto",
            },
            l.site.as_deref().unwrap_or("-"),
            l.volume_ml,
            l.mass_g,
            format!("{:.0} +- {:.0}", l.tia_mbq_h, l.tia_mbq_h_sd),
            format!("{:.2} +- {:.2}", l.mean_dose_gy, l.mean_dose_gy_sd),
            l.bed.as_ref().map_or("-".into(), |b| format!(
                "{:.2} +- {:.2}",
                b.bed_gy, b.bed_gy_sd
            )),
            fmt_opt(l.tumour_to_kidney, 1),
            recovery
        );
    }
    if let Some((o, w)) = s
        .organs
        .get("liver")
        .and_then(|o| o.with_lesions.as_ref().map(|w| (o, w)))
    {
        let ids: Vec<String> = w.lesions.iter().map(|i| format!("L{i}")).collect();
        let _ = writeln!(
            r,
            "Liver: without its lesions (the liver row above, parenchyma) {:.2} +- {:.2} Gy ({:.0} g); with its lesions ({}) {:.2} +- {:.2} Gy ({:.0} g).",
            o.mean_dose_gy,
            o.mean_dose_gy_sd,
            o.mass_g,
            if ids.is_empty() { "none".to_string() } else { ids.join(", ") },
            w.mean_dose_gy,
            w.mean_dose_gy_sd,
            w.mass_g
        );
    }
    let _ = writeln!(
        r,
        "T/K: lesion mean dose over the mean of the kidneys' mean doses. Recovery: the lesion's self-recovery through the PSF (range over the time points)."
    );
    let _ = writeln!(
        r,
        "Lesion activity (MBq) per time point (partial-volume corrected; uncorrected):"
    );
    for l in &s.lesions {
        let a: Vec<String> = l.activity_mbq.iter().map(|a| format!("{a:8.2}")).collect();
        let u: Vec<String> = l
            .activity_uncorrected_mbq
            .iter()
            .map(|a| format!("{a:.2}"))
            .collect();
        let _ = writeln!(r, "  {:<13}{}   ({})", l.name, a.join(" "), u.join(", "));
    }
}

/// `report.txt`: one page for the physicist.
pub(crate) fn report_text(s: &DoseSummary) -> String {
    let mut r = String::new();
    let st = &s.settings;
    let _ = writeln!(
        r,
        "ORGANDOSE DOSIMETRY REPORT  (dose_summary schema {}, {})",
        s.schema_version, s.generator
    );
    let _ = writeln!(r, "Patient: {}", s.patient_id);
    if s.status == "needs_review" {
        let _ = writeln!(
            r,
            "STATUS: NEEDS REVIEW (a plausibility check failed, see the warnings: not a final result)"
        );
    } else if s.status != "final" && s.status != "reviewed" {
        let _ = writeln!(
            r,
            "STATUS: {} (the therapy cycle's later time points are still to come; values will change)",
            s.status.to_uppercase()
        );
    }
    if let Some(rv) = &s.reviewed {
        // One line (issue 36): whose corrected contours the result uses.
        let _ = writeln!(
            r,
            "REVIEWED: masks of {} from {} by {}{}",
            if rv.organs.is_empty() {
                "no organ".to_string()
            } else {
                rv.organs.join(", ")
            },
            rv.object,
            rv.by,
            if rv.at.is_empty() {
                String::new()
            } else {
                format!(" at {}", rv.at)
            }
        );
    }
    let _ = writeln!(
        r,
        "Nuclide: {} (T1/2 = {:.1} h, {:.1} keV/decay electrons)   Injected: {} MBq",
        s.nuclide,
        s.half_life_h,
        s.electron_energy_kev_per_decay,
        fmt_num(s.injected_activity_mbq, 0)
    );
    let times: Vec<String> = s.times_h.iter().map(|t| format!("{t:.1}")).collect();
    let _ = writeln!(r, "Time points (h p.i.): {}", times.join(", "));
    let _ = writeln!(
        r,
        "Method: CT mask -> SPECT grid (coverage), border extension Gaussian sigma {:.1} mm (threshold {:.3});",
        st.psf_sigma_mm, st.voi_threshold
    );
    let _ = writeln!(
        r,
        "        mass from diagnostic CT; mean dose = TIA x E / m (local deposition);"
    );
    let _ = writeln!(
        r,
        "        DVH from voxel dose map, kernel {}, activity distribution of time point {} ({:.1} h).",
        st.kernel, st.dose_map_time_point, st.dose_map_t_h
    );
    match &s.pvc {
        Some(p) => {
            let cond: Vec<String> = p
                .condition_number
                .iter()
                .map(|c| format!("{c:.1}"))
                .collect();
            let _ = writeln!(
                r,
                "        partial-volume correction {} (organs, {:.0} mm background shells, rest of field),",
                p.method.to_uppercase(),
                p.shell_mm
            );
            let _ = writeln!(
                r,
                "        SPECT PSF FWHM {:.1} x {:.1} x {:.1} mm +- {:.1} mm ({}); condition numbers {}.",
                p.psf_fwhm_mm[0],
                p.psf_fwhm_mm[1],
                p.psf_fwhm_mm[2],
                p.psf_fwhm_sd_mm,
                p.psf_source,
                cond.join(", ")
            );
        }
        None => {
            let _ = writeln!(
                r,
                "        no partial-volume correction (activity in the border-extended VOI)."
            );
        }
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "{:<13} {:>8} {:>8} {:>18} {:>8} {:>16} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "Organ",
        "Mass g",
        "Vol mL",
        "TIA MBq h",
        "TIAC h",
        "Mean dose Gy",
        "D2",
        "D30",
        "D50",
        "D70",
        "D98"
    );
    for (name, o) in &s.organs {
        let d = o.dvh.as_ref();
        let _ = writeln!(
            r,
            "{:<13} {:>8.1} {:>8.1} {:>18} {:>8} {:>16} {:>6} {:>6} {:>6} {:>6} {:>6}",
            name,
            o.mass_g,
            o.volume_ml,
            format!("{:.0} +- {:.0}", o.tia_mbq_h, o.tia_mbq_h_sd),
            fmt_opt(o.tiac_h, 2),
            format!("{:.2} +- {:.2}", o.mean_dose_gy, o.mean_dose_gy_sd),
            fmt_opt(d.map(|x| x.d2), 2),
            fmt_opt(d.map(|x| x.d30), 2),
            fmt_opt(d.map(|x| x.d50), 2),
            fmt_opt(d.map(|x| x.d70), 2),
            fmt_opt(d.map(|x| x.d98), 2),
        );
    }
    let beds: Vec<_> = s
        .organs
        .iter()
        .filter_map(|(n, o)| o.bed.as_ref().map(|b| (n, b)))
        .collect();
    if !beds.is_empty() {
        let _ = writeln!(r);
        let _ = writeln!(
            r,
            "Biologically effective dose (linear-quadratic, repair during the decaying dose rate):"
        );
        for (n, b) in beds {
            let _ = writeln!(
                r,
                "  {:<13} BED {:.2} +- {:.2} Gy, EQD2 {:.2} Gy (alpha/beta {} Gy, T_rep {} h, G = {:.4}; {})",
                n,
                b.bed_gy,
                b.bed_gy_sd,
                b.eqd2_gy,
                b.alpha_beta_gy,
                b.repair_half_time_h,
                b.g_factor,
                b.curve
            );
        }
    }
    if let Some(h) = &s.treatment_history {
        let _ = writeln!(r);
        r.push_str(&crate::dosimetry::history::text(h));
    }
    lesion_text(&mut r, s);
    let _ = writeln!(r);
    let _ = writeln!(r, "Organ activity (MBq) per time point:");
    for (name, o) in &s.organs {
        let a: Vec<String> = o.activity_mbq.iter().map(|a| format!("{a:8.2}")).collect();
        let _ = writeln!(r, "  {:<13}{}", name, a.join(" "));
    }
    if s.pvc.is_some() {
        let _ = writeln!(
            r,
            "  without partial-volume correction (border-extended VOI):"
        );
        for (name, o) in &s.organs {
            let a: Vec<String> = o
                .activity_uncorrected_mbq
                .iter()
                .map(|a| format!("{a:8.2}"))
                .collect();
            let _ = writeln!(
                r,
                "  {:<13}{}   mean dose {:.2} Gy",
                name,
                a.join(" "),
                o.mean_dose_uncorrected_gy
            );
        }
    }
    let _ = writeln!(r);
    let _ = writeln!(r, "Kinetics:");
    for (name, o) in &s.organs {
        let k = &o.kinetics;
        let _ = writeln!(r, "  {name}: {}", k.description);
        if let Some(f) = &o.fit {
            let p: Vec<String> = f
                .parameter_names
                .iter()
                .zip(&f.parameters)
                .map(|(n, v)| format!("{n} = {v:.4}"))
                .collect();
            let _ = writeln!(
                r,
                "    {}; AICc {}; choice: {}",
                p.join(", "),
                fmt_opt(f.aicc, 2),
                k.selection
            );
        }
        let dev = if k.trapezoid_tia_mbq_h > 0.0 {
            format!(
                "{:+.1} %",
                (k.trapezoid_tia_mbq_h / o.tia_mbq_h.max(1e-12) - 1.0) * 100.0
            )
        } else {
            "-".into()
        };
        let _ = writeln!(
            r,
            "    cross-check trapezoid + physical tail: {:.0} MBq h ({dev})",
            k.trapezoid_tia_mbq_h
        );
    }
    let _ = writeln!(r);
    let w = s.all_warnings();
    if w.is_empty() {
        let _ = writeln!(r, "Warnings: none");
    } else {
        let _ = writeln!(r, "WARNINGS:");
        for x in w {
            let _ = writeln!(r, "  ! {x}");
        }
    }
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Values are +- one standard uncertainty (EANM 2018, Gear et al.): activity {:.0} %, mass {:.0} %,",
        st.activity_rel_sd * 100.0,
        st.mass_rel_sd * 100.0
    );
    let _ = writeln!(
        r,
        "propagated through the fit covariance. Dx = lowest dose in the hottest x % of the organ."
    );
    let seg: Vec<String> = s
        .organs
        .iter()
        .filter_map(|(n, o)| {
            o.mean_dose_gy_sd_segmentation
                .map(|x| format!("{n} {x:.2} Gy"))
        })
        .collect();
    if !seg.is_empty() {
        let _ = writeln!(
            r,
            "The mean-dose SD includes the masks' share: the dose difference between the masks a generous and a strict"
        );
        let _ = writeln!(
            r,
            "reading of the network's plane probabilities give (0.25 and 0.75), over sqrt(12): {}.",
            seg.join(", ")
        );
    }
    let dvh: Vec<String> = s
        .organs
        .iter()
        .filter_map(|(n, o)| {
            o.dvh
                .as_ref()
                .map(|d| format!("{n} {:.2} Gy (organ mean {:.2})", d.mean, o.mean_dose_gy))
        })
        .collect();
    if !dvh.is_empty() {
        let _ = writeln!(
            r,
            "Mean dose = organ mean: TIA (partial-volume corrected) x E / mass. D2-D98 and the DVH plot come from the voxel"
        );
        let _ = writeln!(
            r,
            "dose map (TIA shaped by the SPECT, convolved with the kernel); its voxel mean differs: {}.",
            dvh.join(", ")
        );
    }
    r
}
