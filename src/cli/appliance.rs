//! `organdose watch`, `organdose status`, `organdose finalize`.

use organdose::appliance::clock::SystemClock;
use organdose::appliance::daemon::{records, Appliance};
use organdose::appliance::lock::OutLock;
use organdose::appliance::processor::{Masks, StudyProcessor};
use organdose::appliance::state::{check_id, StateStore};
use organdose::appliance::status::{
    open_serial, read_status, serve_commands, status_age_s, Sink, StatusPort,
};
use organdose::config::Config;
use organdose::net::outbox::{self, Outbox};
use organdose::net::scp::StorageScp;
use organdose::net::{Destination, DicomNetConfig};
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
    /// Skip the DICOM objects of each cycle's dicom/ folder (`report.dicom`).
    #[arg(long)]
    pub no_dicom: bool,
    /// Storage SCP on this TCP port (dicom.port; 0: none): C-STORE into --in.
    #[arg(long)]
    pub dicom_port: Option<u16>,
    /// This box's AE title, called by senders and calling destinations (dicom.ae_title).
    #[arg(long)]
    pub ae_title: Option<String>,
    /// Address the SCP listens on (dicom.bind; default all interfaces).
    #[arg(long)]
    pub dicom_bind: Option<String>,
    /// A calling AE title allowed to send (repeatable; replaces dicom.allow_ae).
    #[arg(long = "allow-ae")]
    pub allow_ae: Vec<String>,
    /// A host allowed to connect, IP address or name (repeatable; replaces dicom.allow_host).
    #[arg(long = "allow-host")]
    pub allow_host: Vec<String>,
    /// Send each result's DICOM objects to AE@HOST:PORT (repeatable; replaces
    /// dicom.destinations).
    #[arg(long = "send-to")]
    pub send_to: Vec<String>,
}

/// `[dicom]` with the command line's overrides.
fn net_config(args: &WatchArgs, cfg: &Config) -> anyhow::Result<DicomNetConfig> {
    let mut net = cfg.dicom.clone();
    if let Some(p) = args.dicom_port {
        net.port = p;
    }
    if let Some(a) = &args.ae_title {
        net.ae_title = a.clone();
    }
    if let Some(b) = &args.dicom_bind {
        net.bind = b.clone();
    }
    if !args.allow_ae.is_empty() {
        net.allow_ae = args.allow_ae.clone();
    }
    if !args.allow_host.is_empty() {
        net.allow_host = args.allow_host.clone();
    }
    if !args.send_to.is_empty() {
        net.destinations = args
            .send_to
            .iter()
            .map(|d| Destination::parse(d))
            .collect::<Result<_, _>>()?;
    }
    Ok(net)
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
    let net = net_config(&args, cfg)?;
    // The outbox also runs without destinations when jobs of an earlier
    // configuration wait in it (they are still delivered, and reported).
    let outbox =
        if !net.destinations.is_empty() || outbox::summary(&args.out).is_ok_and(|s| s.jobs > 0) {
            Some(Arc::new(Outbox::new(&args.out, &net, status.clone())?))
        } else {
            None
        };
    let masks = match &args.truth_root {
        Some(r) => Masks::TruthRoot(r.clone()),
        None => Masks::Network(
            args.weights
                .clone()
                .unwrap_or_else(|| super::segment::resolve_default_weights(&cfg.segment.weights)),
        ),
    };
    let mut proc_cfg = cfg.clone();
    if args.no_dicom {
        proc_cfg.report.dicom = false;
    }
    let processor = Arc::new(StudyProcessor {
        cfg: proc_cfg,
        masks,
        outbox: outbox.clone(),
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
    // Both after the lock on OUT: no second box on this OUT writes the outbox or
    // takes instances for it.
    if let Some(ob) = &outbox {
        ob.prepare()?;
    }
    if net.port != 0 {
        StorageScp::bind(
            &net,
            cfg.appliance.memory_budget_mb,
            &args.input,
            status.clone(),
        )?
        .spawn()?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    if let (Some(ob), false) = (&outbox, args.once) {
        ob.spawn(stop.clone())?;
    }
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
        // One try of every waiting send; what fails waits for the next start.
        if let Some(ob) = &outbox {
            ob.round();
        }
        status.heartbeat();
        return Ok(());
    }
    // Runs until the process is stopped (systemd sends SIGTERM): every output and
    // state record is written atomically, so a stop at any moment loses nothing and
    // the next start resumes where this one was (tests/it/appliance.rs kills it to check).
    app.run(stop)?;
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

pub fn status(args: StatusArgs, cfg: &Config) -> anyhow::Result<()> {
    let mut snap = read_status(&args.out)?;
    let recs = records(&args.out)?;
    // status.json is the box's last word; whether a box still runs is the lock's.
    let holder = OutLock::holder(&args.out);
    let age_s = status_age_s(&args.out);
    let mut notes = Vec::new();
    match &holder {
        None => {
            if snap.state != "stopped" && snap.state != "idle" {
                notes.push(format!(
                    "no box runs on {} (it was {} when it stopped: that job did not finish and runs again at the next start)",
                    args.out.display(),
                    snap.state
                ));
                snap.state = "stopped".into();
            } else {
                notes.push(format!("no box runs on {}", args.out.display()));
            }
        }
        Some(who) => {
            let beat = cfg.appliance.heartbeat_s.max(1.0);
            if let Some(age) = age_s.filter(|a| *a > 3.0 * beat + 10.0) {
                notes.push(format!(
                    "a box runs ({who}) but status.json is {age:.0} s old although it beats every {beat:.0} s: it cannot write {} (full or read-only?)",
                    args.out.display()
                ));
            }
        }
    }
    // The outbox as it is on disk now, running box or not.
    let ob = outbox::summary(&args.out)?;
    // Written line by line to stdout; a reader that stops early (`| head -1`)
    // closes the pipe: that ends the listing, it is no fault (issue 42).
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    macro_rules! out {
        ($($arg:tt)*) => {
            if let Err(e) = writeln!(stdout, $($arg)*) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.into());
            }
        };
    }
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "status": snap,
                "outbox": ob,
                "running": holder.is_some(),
                "status_age_s": age_s,
                "notes": notes,
                "cycles": recs
            }))?
        );
        return Ok(());
    }
    out!("{}", snap.line("status"));
    for n in &notes {
        out!("note: {n}");
    }
    if !snap.fault.is_empty() {
        out!("last fault ({}): {}", snap.fault, snap.fault_message);
    }
    if !snap.dicom_listening.is_empty() {
        out!(
            "dicom SCP on {}: {} association(s), {} rejected, {} instance(s) stored, {} refused",
            snap.dicom_listening,
            snap.dicom_associations,
            snap.dicom_rejected,
            snap.dicom_instances,
            snap.dicom_store_failures
        );
    }
    if ob.jobs > 0 || ob.sent_jobs > 0 {
        out!(
            "outbox: {} instance(s) queued in {} job(s), {} failing, {} job(s) sent{}",
            ob.queued_instances,
            ob.jobs,
            ob.failing_jobs,
            ob.sent_jobs,
            if ob.last_error.is_empty() {
                String::new()
            } else {
                format!("; last error: {}", ob.last_error)
            }
        );
    }
    if !snap.last_event.is_empty() {
        out!("last event: {}", snap.last_event);
    }
    for r in recs.values() {
        let outcome = if r.fault.is_empty() {
            r.outcome.clone()
        } else {
            format!("{} ({} fault)", r.outcome, r.fault)
        };
        out!(
            "{:<32} {:<7} {:<12} {} time point(s)  {}",
            r.id,
            outcome,
            r.summary_status,
            r.timepoints,
            r.message
        );
        if !r.held.is_empty() {
            out!("{:<32} held: {}", "", r.held);
        }
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
    check_id(&args.cycle)?;
    let store = StateStore::open(&args.out)?;
    let mut r = store
        .get(&args.cycle)?
        .ok_or_else(|| anyhow::anyhow!("no cycle {} in {}", args.cycle, args.out.display()))?;
    if r.outcome != "done" {
        // Nothing to make final: the box would run the same failing job again
        // (or not at all, its inputs unchanged), so no promise is made (issue 42).
        anyhow::bail!(
            "{}: its last job failed ({}{}): there is no summary to make final; fix or replace the inputs (see quarantine/ and `organdose status`) and the box runs the cycle again",
            r.id,
            if r.fault.is_empty() {
                String::new()
            } else {
                format!("{} fault: ", r.fault)
            },
            r.message
        );
    }
    r.finalize_requested = true;
    // The explicit command that may replace a final result computed from inputs
    // that have since been removed (the box never does that on its own).
    r.recompute_requested = !r.held.is_empty();
    store.put(&r)?;
    if r.recompute_requested {
        println!(
            "{}: the next round of the box recomputes the final summary with the inputs present now ({})",
            r.id, r.held
        );
    } else {
        println!(
            "{}: the next round of the box writes the final summary with the {} time point(s) present",
            r.id, r.timepoints
        );
    }
    Ok(())
}
