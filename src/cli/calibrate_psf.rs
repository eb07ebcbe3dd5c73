//! `organdose calibrate-psf IMAGE --sphere-diameter-mm D`: the SPECT system PSF from a
//! reconstructed sphere phantom, printed as the configuration lines to use.

use anyhow::Context;
use organdose::config::Config;
use organdose::dosimetry::psf_calibration::fit_sphere;
use organdose::io::{dicom, nifti};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Reconstructed SPECT of one hot sphere (DICOM series folder or NIfTI), acquired
    /// and reconstructed as the clinical protocol is.
    pub image: PathBuf,
    /// Inner diameter of the sphere in mm (20-40 mm suits 177Lu).
    #[arg(long)]
    pub sphere_diameter_mm: f64,
    /// SeriesInstanceUID when the folder holds several series.
    #[arg(long)]
    pub series: Option<String>,
    /// Also write the fit as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let image = if nifti::is_nifti_path(&args.image) {
        nifti::read_nifti(&args.image)?
    } else {
        dicom::read_single_series(&args.image, args.series.as_deref(), &cfg.ingest)?.1
    };
    let fit = fit_sphere(&image, args.sphere_diameter_mm)
        .with_context(|| format!("fitting the sphere in {}", args.image.display()))?;
    println!(
        "sphere {:.1} mm at ({:.1}, {:.1}, {:.1}) mm: value {:.4e} over background {:.4e}, {} voxels, RMS residual {:.1} % of the sphere value",
        args.sphere_diameter_mm,
        fit.centre_mm[0],
        fit.centre_mm[1],
        fit.centre_mm[2],
        fit.sphere_value,
        fit.background_value,
        fit.voxels_fitted,
        100.0 * fit.relative_rms_residual
    );
    println!(
        "PSF FWHM {:.2} mm in-plane, {:.2} mm axial",
        fit.fwhm_mm, fit.axial_fwhm_mm
    );
    println!("# for the configuration file of this camera, collimator and reconstruction:");
    println!("[dosimetry]");
    println!("pvc_psf_fwhm_mm = {:.1}", fit.fwhm_mm);
    if (fit.axial_fwhm_mm - fit.fwhm_mm).abs() >= 0.5 {
        println!("pvc_psf_axial_fwhm_mm = {:.1}", fit.axial_fwhm_mm);
    }
    if fit.relative_rms_residual > 0.2 {
        tracing::warn!(
            "the residual is {:.0} % of the sphere value: a noisy acquisition or not a single sphere; the FWHM is uncertain",
            100.0 * fit.relative_rms_residual
        );
    }
    if let Some(j) = &args.json {
        let text = serde_json::to_string_pretty(&fit)?;
        organdose::io::write_bytes_atomically(j, text.as_bytes())?;
    }
    Ok(())
}
