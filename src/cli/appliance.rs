//! `organdose watch`, `organdose status`, `organdose finalize`.

use organdose::appliance::clock::SystemClock;
use organdose::appliance::daemon::{records, Appliance};
use organdose::appliance::processor::{Masks, StudyProcessor};
use organdose::appliance::state::StateStore;
use organdose::appliance::status::{open_serial, read_status, serve_commands, Sink, StatusPort};
use organdose::config::Config;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct WatchArgs {
    /// The folder the scanner console exports to (read only: nothing there is changed).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Output folder: one folder per patient cycle, state/, quarantine/, status.json.
    #[arg(long = "out")]
    pub out: PathBuf,
    /// Organ masks from phantom truth under DIR/<patient_id>/truth (demo, tests).
    #[arg(long)]
    pub truth_root: Option<PathBuf>,
    /// Segmentation model folder (default `segment.weights`); ignored with --truth-root.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Status lines: log, file:PATH or serial:DEVICE (overrides appliance.status).
    #[arg(long)]
    pub status: Option<String>,
    /// Process what is there, wait for the queue to empty, then exit.
    #[arg(long)]
    pub once: bool,
}

pub fn watch(args: WatchArgs, cfg: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    if !args.input.is_dir() {
        anyhow::bail!("{}: not a folder", args.input.display());
    }
    let spec = args
        .status
        .clone()
        .unwrap_or_else(|| cfg.appliance.status.clone());
    let (sink, commands) = match spec.strip_prefix("serial:") {
        Some(dev) => {
            let (s, r) = open_serial(dev, cfg.appliance.serial_baud)?;
            (s, Some(r))
        }
        None => (Sink::from_spec(&spec, cfg.appliance.serial_baud)?, None),
    };
    let status = Arc::new(StatusPort::new(sink, &args.out));
    let masks = match &args.truth_root {
        Some(r) => Masks::TruthRoot(r.clone()),
        None => Masks::Network(
            args.weights
                .clone()
                .unwrap_or_else(|| super::segment::resolve_default_weights(&cfg.segment.weights)),
        ),
    };
    let processor = Arc::new(StudyProcessor {
        cfg: cfg.clone(),
        masks,
    });
    let mut app = Appliance::new(
        &args.input,
        &args.out,
        cfg.appliance.clone(),
        cfg.ingest.clone(),
        processor,
        status.clone(),
        Arc::new(SystemClock::default()),
    )?;
    if let Some(reader) = commands {
        let (port, paused) = (status.clone(), app.paused.clone());
        std::thread::spawn(move || serve_commands(std::io::BufReader::new(reader), &port, &paused));
    }
    if args.once {
        // Let every file pass its quiet period once, then drain the queue.
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_secs_f64(cfg.appliance.quiet_period_s + 1.0);
        loop {
            app.step()?;
            app.wait_idle();
            if std::time::Instant::now() > deadline && app.idle() {
                app.step()?;
                app.wait_idle();
                if app.idle() {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        status.heartbeat();
        return Ok(());
    }
    // Runs until the process is stopped (systemd sends SIGTERM): every output and
    // state record is written atomically, so a stop at any moment loses nothing and
    // the next start resumes where this one was (tests/appliance.rs kills it to check).
    app.run(Arc::new(AtomicBool::new(false)))?;
    Ok(())
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The output folder of a running (or stopped) box.
    #[arg(long = "out")]
    pub out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn status(args: StatusArgs, _cfg: &Config) -> anyhow::Result<()> {
    let snap = read_status(&args.out)?;
    let recs = records(&args.out)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"status": snap, "cycles": recs}))?
        );
        return Ok(());
    }
    println!("{}", snap.line("status"));
    if !snap.last_event.is_empty() {
        println!("last event: {}", snap.last_event);
    }
    for r in recs.values() {
        println!(
            "{:<32} {:<7} {:<12} {} time point(s)  {}",
            r.id, r.outcome, r.summary_status, r.timepoints, r.message
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct FinalizeArgs {
    /// The output folder of the box.
    #[arg(long = "out")]
    pub out: PathBuf,
    /// Cycle id (as `organdose status` lists it).
    pub cycle: String,
}

pub fn finalize(args: FinalizeArgs, _cfg: &Config) -> anyhow::Result<()> {
    let store = StateStore::open(&args.out)?;
    let mut r = store
        .get(&args.cycle)?
        .ok_or_else(|| anyhow::anyhow!("no cycle {} in {}", args.cycle, args.out.display()))?;
    r.finalize_requested = true;
    store.put(&r)?;
    println!(
        "{}: the next round of the box writes the final summary with the {} time point(s) present",
        r.id, r.timepoints
    );
    Ok(())
}
