//! `organdose history --out OUT PATIENT_ID [--issuer I] [--json]`: the patient's
//! treatment history from the results in OUT (the box's output folder, or a
//! folder of `organdose dose` outputs): every cycle, the cumulative absorbed
//! dose and BED per organ, and what remains under the configured limits.

use organdose::config::Config;
use organdose::dosimetry::history;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The results: `OUT/*/dose_summary.json` (the box's output folder, or the
    /// folder that holds each cycle's `organdose dose -o` folder).
    #[arg(long = "out")]
    pub out: PathBuf,
    /// The patient's ID (DICOM PatientID).
    pub patient_id: String,
    /// Only the cycles whose IssuerOfPatientID is this (two hospitals' IDs can
    /// collide); without it the latest cycle's issuer decides.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Print JSON (as `treatment_history` in dose_summary.json).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    if !args.out.is_dir() {
        anyhow::bail!("{}: no such folder", args.out.display());
    }
    let h = history::for_patient(
        &args.out,
        1,
        &args.patient_id,
        args.issuer.as_deref(),
        &history::Limits::of(&cfg.dosimetry),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if args.json {
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&h)?))
    } else {
        super::print_out(&history::text(&h))
    }
}
