//! `organdose inspect PATH [--json]`.

use organdose::config::Config;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// File or folder (searched recursively).
    pub path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, _cfg: &Config) -> anyhow::Result<()> {
    let f = organdose::io::nifti::NiftiFile::open(&args.path)?;
    let g = f.header.geometry(&args.path)?;
    println!("{:?}", g);
    let _ = args.json;
    Ok(())
}
