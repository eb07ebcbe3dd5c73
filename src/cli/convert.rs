//! `organdose convert IN OUT.nii.gz`: a DICOM series (or NIfTI) to NIfTI.

use organdose::config::Config;
use organdose::io::{dicom, nifti};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// DICOM file or folder holding the series, or a NIfTI file.
    pub input: PathBuf,
    /// Output .nii or .nii.gz (written to a temporary name, then renamed).
    pub output: PathBuf,
    /// SeriesInstanceUID to convert when the input holds several series.
    #[arg(long)]
    pub series: Option<String>,
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let (vol, what) = if nifti::is_nifti_path(&args.input) {
        (nifti::read_nifti(&args.input)?, "NIfTI".to_string())
    } else {
        let (s, v) = dicom::read_single_series(&args.input, args.series.as_deref(), &cfg.ingest)?;
        let h = s
            .files
            .first()
            .map(|h| (h.modality.clone(), h.value_unit()));
        let (m, u) = h.unwrap_or_default();
        (v, format!("{m} series {} ({u})", s.uid))
    };
    let descrip = format!("organdose convert: {what}");
    nifti::write_nifti(&vol, &args.output, &descrip)?;
    let g = &vol.geom;
    tracing::info!(
        "wrote {} ({}x{}x{}, {:.3}x{:.3}x{:.3} mm, {})",
        args.output.display(),
        g.dims[0],
        g.dims[1],
        g.dims[2],
        g.spacing[0],
        g.spacing[1],
        g.spacing[2],
        g.orientation_code()
    );
    Ok(())
}
