//! The `organdose` binary: one clap subcommand per job; each lives in `cli/`.

mod cli;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "organdose",
    version,
    about = "Scanner-side 177Lu dosimetry: organ masks, SPECT activity, kidney dose"
)]
struct Cli {
    /// TOML file whose keys override config/default.toml.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the segmentation network runs (overrides segment.device) for every
    /// command that segments: run/dose, segment, eval, watch, demo, bench.
    #[arg(long, global = true, value_enum)]
    device: Option<organdose::seg::engine::DeviceKind>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole job on built-in data: a synthetic patient, segmented with the
    /// shipped weights, dosimetry, and the result beside the phantom's truth.
    Demo(cli::demo::Args),
    /// List the series in a file or folder (DICOM of any nesting, NIfTI).
    Inspect(cli::inspect::Args),
    /// Convert a DICOM series (or NIfTI) to NIfTI, geometry preserved.
    Convert(cli::convert::Args),
    /// Kidney (and organ) dosimetry of one study folder: dose_summary.json, report.txt,
    /// DVH, plots (`run` is the same command: the whole chain for one patient folder).
    #[command(visible_alias = "run")]
    Dose(cli::dose::Args),
    /// Watch the console's export folder and process therapy cycles as they arrive.
    Watch(cli::appliance::WatchArgs),
    /// Print the state of a running box (from its output folder).
    Status(cli::appliance::StatusArgs),
    /// Make a cycle's summary final with the time points it has.
    Finalize(cli::appliance::FinalizeArgs),
    /// A patient's treatment history from the results in OUT: each cycle, the
    /// cumulative dose and BED per organ, and the next cycle's activity that
    /// would reach each limit.
    History(cli::history::Args),
    /// Write synthetic patients (CT, LDCT + SPECT time points) with exact truth.
    Phantom(cli::phantom::Args),
    /// Organ labels (liver, kidneys) from a CT with the 2.5D Mask R-CNN,
    /// or one raw forward pass (--raw-input).
    Segment(cli::segment::Args),
    /// Score segmentation on phantom patients against their truth: Dice, HD95,
    /// volume error, missed slices (table + JSON).
    Eval(cli::eval::Args),
    /// Latency per stage (ingest, segmentation per plane, PSF, dose) and peak
    /// memory of one phantom study, on the CPU or (cuda builds) the GPU.
    Bench(cli::bench::Args),
    /// The SPECT system PSF (FWHM for the partial-volume correction) from a
    /// reconstructed sphere phantom.
    CalibratePsf(cli::calibrate_psf::Args),
    /// Check an installed box: configuration, folders, weights (sha256), disk and
    /// memory, status port, DICOM port, CUDA; one line per check, non-zero exit
    /// status when one fails.
    SelfCheck(cli::self_check::Args),
}

fn main() -> ExitCode {
    // A file-size limit (systemd LimitFSIZE=, ulimit -f) must be a write error
    // the box handles (a failure status to a C-STORE, a retried job), not
    // SIGXFSZ killing it.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before any
    // thread exists, touches no Rust state.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    // The self-check reports a configuration that does not parse as one of its
    // lines (and goes on to say what it could not check), so it loads it itself.
    if let Command::SelfCheck(a) = cli.command {
        return cli::self_check::run(a, cli.config.as_deref(), cli.device);
    }
    let mut cfg = match organdose::config::Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(d) = cli.device {
        cfg.segment.device = d;
    }
    cli::init_logging(&cfg);
    let result = match cli.command {
        Command::Demo(a) => cli::demo::run(a, &cfg),
        Command::Inspect(a) => cli::inspect::run(a, &cfg),
        Command::Convert(a) => cli::convert::run(a, &cfg),
        Command::Dose(a) => cli::dose::run(a, &cfg),
        Command::Watch(a) => cli::appliance::watch(a, &cfg),
        Command::Status(a) => cli::appliance::status(a, &cfg),
        Command::Finalize(a) => cli::appliance::finalize(a, &cfg),
        Command::History(a) => cli::history::run(a, &cfg),
        Command::Phantom(a) => cli::phantom::run(a, &cfg),
        Command::Segment(a) => cli::segment::run(a, &cfg),
        Command::Eval(a) => cli::eval::run(a, &cfg),
        Command::Bench(a) => cli::bench::run(a, &cfg),
        Command::CalibratePsf(a) => cli::calibrate_psf::run(a, &cfg),
        Command::SelfCheck(_) => unreachable!("handled before the configuration is loaded"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", organdose::error::chain_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
