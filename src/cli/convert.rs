//! `organdose convert IN OUT.nii.gz`.

use organdose::config::Config;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// DICOM file or folder holding one series, or a NIfTI file.
    pub input: PathBuf,
    /// Output .nii or .nii.gz.
    pub output: PathBuf,
}

pub fn run(args: Args, _cfg: &Config) -> anyhow::Result<()> {
    let v = organdose::io::nifti::read_nifti(&args.input)?;
    organdose::io::nifti::write_nifti(&v, &args.output, "organdose convert")?;
    Ok(())
}
