//! `organdose self-check`: what an installer asks before leaving the box. One
//! line per check (`ok`, `FAIL` or `skip`, the check's name, what was found),
//! then a count; the exit status is non-zero when any check failed. Nothing is
//! changed except a probe file written and removed in each folder that must be
//! writable.
//!
//! The folders default to those of `deploy/organdose.service`, so that
//! `organdose --config /etc/organdose/organdose.toml self-check` checks the box
//! as the unit will run it.

use organdose::appliance::status::open_serial;
use organdose::config::Config;
use organdose::seg::engine::DeviceKind;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The export folder `watch --in` reads (and the Storage SCP writes into).
    #[arg(long = "in", default_value = "/srv/organdose/export")]
    pub input: PathBuf,
    /// The output folder `watch --out` writes.
    #[arg(long = "out", default_value = "/srv/organdose/out")]
    pub out: PathBuf,
    /// Segmentation model folder (default `segment.weights`).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Status lines: log, file:PATH or serial:DEVICE (default appliance.status).
    #[arg(long)]
    pub status: Option<String>,
    /// Storage SCP port to try binding (default dicom.port; 0: none).
    #[arg(long)]
    pub dicom_port: Option<u16>,
    /// Address the SCP listens on (default dicom.bind).
    #[arg(long)]
    pub dicom_bind: Option<String>,
    /// Least free space (MB) in the output folder's file system. 1024 MB: a
    /// cycle's outputs are tens of MB and its state a few; a box below a GB is
    /// days from a full disk, which the box survives but stops producing on.
    #[arg(long, default_value_t = 1024.0)]
    pub min_free_disk_mb: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Skip,
}

/// The report: printed as it goes, so a check that hangs (a serial driver) shows
/// where.
#[derive(Default)]
struct Report {
    ok: usize,
    fail: usize,
    skip: usize,
}

impl Report {
    fn line(&mut self, o: Outcome, name: &str, detail: impl std::fmt::Display) {
        let tag = match o {
            Outcome::Ok => {
                self.ok += 1;
                "ok  "
            }
            Outcome::Fail => {
                self.fail += 1;
                "FAIL"
            }
            Outcome::Skip => {
                self.skip += 1;
                "skip"
            }
        };
        println!("{tag} {name}: {detail}");
        let _ = std::io::stdout().flush();
    }
    fn result(&mut self, name: &str, r: Result<String, String>) {
        match r {
            Ok(d) => self.line(Outcome::Ok, name, d),
            Err(d) => self.line(Outcome::Fail, name, d),
        }
    }
}

pub fn run(args: Args, config: Option<&Path>, device: Option<DeviceKind>) -> ExitCode {
    let mut r = Report::default();
    let from = config
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "built-in defaults (config/default.toml)".into());
    let cfg = match Config::load(config) {
        Ok(mut c) => {
            if let Some(d) = device {
                c.segment.device = d;
            }
            r.line(Outcome::Ok, "config", format!("{from} parses"));
            Some(c)
        }
        Err(e) => {
            r.line(Outcome::Fail, "config", e);
            None
        }
    };
    match &cfg {
        Some(cfg) => checks(&args, cfg, &mut r),
        None => r.line(
            Outcome::Skip,
            "the rest",
            "they need a configuration that parses",
        ),
    }
    println!("self-check: {} ok, {} FAIL, {} skip", r.ok, r.fail, r.skip);
    if r.fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn checks(args: &Args, cfg: &Config, r: &mut Report) {
    let dicom_port = args.dicom_port.unwrap_or(cfg.dicom.port);
    let dicom_bind = args.dicom_bind.clone().unwrap_or(cfg.dicom.bind.clone());
    // The Storage SCP writes what it receives into the export folder: then the box
    // needs to write there too (the unit's ReadOnlyPaths= must then go).
    r.result(
        "export folder",
        folder(&args.input, dicom_port != 0).map(|d| {
            if dicom_port != 0 {
                format!("{d} (the Storage SCP writes here)")
            } else {
                format!("{d} (read only to the box)")
            }
        }),
    );
    r.result("output folder", folder(&args.out, true));
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| super::segment::resolve_default_weights(&cfg.segment.weights));
    r.result("weights", check_weights(&weights));
    r.result("disk", disk(&args.out, args.min_free_disk_mb));
    match memory(cfg.appliance.memory_budget_mb) {
        Some(res) => r.result("memory", res),
        None => r.line(Outcome::Skip, "memory", "no /proc/meminfo on this system"),
    }
    let status = args
        .status
        .clone()
        .unwrap_or_else(|| cfg.appliance.status.clone());
    match status_sink(&status, cfg.appliance.serial_baud) {
        Some(res) => r.result("status port", res),
        None => r.line(
            Outcome::Skip,
            "status port",
            format!("appliance.status = {status:?}: no serial port or file to open"),
        ),
    }
    if dicom_port == 0 {
        r.line(
            Outcome::Skip,
            "dicom port",
            "dicom.port = 0: no Storage SCP (the export folder only)",
        );
    } else {
        r.result("dicom port", bind(&dicom_bind, dicom_port));
    }
    let (o, d) = cuda(cfg.segment.device);
    r.line(o, "cuda", d);
}

/// A folder that exists, can be listed and, when `write`, takes a file (written,
/// synced and removed: a read-only mount or a full disk fails here, not on the
/// first patient).
fn folder(dir: &Path, write: bool) -> Result<String, String> {
    let shown = dir.display();
    if !dir.is_dir() {
        return Err(format!(
            "{shown} is missing (create it, owned by the user the box runs as)"
        ));
    }
    std::fs::read_dir(dir).map_err(|e| format!("{shown}: cannot be listed: {e}"))?;
    if !write {
        return Ok(format!("{shown} exists and can be read"));
    }
    let probe = dir.join(format!(".organdose-self-check-{}", std::process::id()));
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| {
            f.write_all(b"organdose self-check\n")?;
            f.sync_all()
        })
        .map_err(|e| format!("{shown}: not writable: {e}"));
    let _ = std::fs::remove_file(&probe);
    written?;
    Ok(format!("{shown} exists and is writable"))
}

fn check_weights(dir: &Path) -> Result<String, String> {
    match organdose::seg::model::verify_dir(dir) {
        Ok((w, Some(sha))) => Ok(format!(
            "{} matches its manifest (sha256 {}...)",
            w.display(),
            &sha[..12.min(sha.len())]
        )),
        Ok((w, None)) => Ok(format!(
            "{} present; no manifest.json names it, so no sha256 to check",
            w.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Free space for an unprivileged writer in the file system of `dir` (statvfs).
fn disk(dir: &Path, min_mb: f64) -> Result<String, String> {
    let free = free_bytes(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let free_mb = free as f64 / (1024.0 * 1024.0);
    let d = format!(
        "{free_mb:.0} MB free in {}'s file system (at least {min_mb:.0} MB wanted)",
        dir.display()
    );
    if free_mb >= min_mb {
        Ok(d)
    } else {
        Err(d)
    }
}

#[cfg(unix)]
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs only writes into the zeroed struct we own; the path is a
    // valid NUL-terminated string for the duration of the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> std::io::Result<u64> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "free space is read on Unix only",
    ))
}

/// MemAvailable (what can be had without swapping) against the budget the box
/// sizes its jobs to: a budget above it means jobs accepted by the budget can
/// still run out of memory.
fn memory(budget_mb: f64) -> Option<Result<String, String>> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = |key: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let avail_mb = kb("MemAvailable:")? / 1024.0;
    let total_mb = kb("MemTotal:").map(|k| k / 1024.0).unwrap_or(f64::NAN);
    let d = format!(
        "{avail_mb:.0} MB available of {total_mb:.0} MB; appliance.memory_budget_mb = {budget_mb:.0}"
    );
    Some(if avail_mb >= budget_mb {
        Ok(d)
    } else {
        Err(format!("{d}: lower the budget or free memory"))
    })
}

/// The status port opens (serial) or its file takes a line; `None` for "log".
fn status_sink(spec: &str, baud: u32) -> Option<Result<String, String>> {
    if let Some(dev) = spec.strip_prefix("serial:") {
        return Some(
            open_serial(dev, baud)
                .map(|_| format!("serial port {dev} opens at {baud} baud"))
                .map_err(|e| e.to_string()),
        );
    }
    if let Some(p) = spec.strip_prefix("file:") {
        let path = PathBuf::from(p);
        return Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map(|_| format!("status file {} can be appended to", path.display()))
                .map_err(|e| format!("status file {}: {e}", path.display())),
        );
    }
    if spec == "log" || spec.is_empty() {
        return None;
    }
    Some(Err(format!(
        "appliance.status = {spec:?}: use log, file:PATH or serial:DEVICE"
    )))
}

/// The SCP's port can be bound now (another program on it, or a port below 1024
/// without the capability, fails here rather than at the daemon's start).
fn bind(host: &str, port: u16) -> Result<String, String> {
    match std::net::TcpListener::bind((host, port)) {
        Ok(l) => {
            let at = l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| format!("{host}:{port}"));
            Ok(format!("{at} can be bound (released again)"))
        }
        Err(e) => Err(format!("{host}:{port} cannot be bound: {e}")),
    }
}

/// Whether this binary and machine can run the network on CUDA: informational
/// (`skip`) unless `segment.device = "cuda"`, when a missing piece fails.
fn cuda(device: DeviceKind) -> (Outcome, String) {
    let built = cfg!(feature = "cuda");
    let driver = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()));
    let mut d = String::new();
    let _ = write!(
        d,
        "this build {} CUDA; NVIDIA driver: {}",
        if built { "has" } else { "has no" },
        driver.as_deref().unwrap_or("none found")
    );
    match device {
        DeviceKind::Cuda if built && driver.is_some() => (Outcome::Ok, d),
        DeviceKind::Cuda => (
            Outcome::Fail,
            format!("segment.device = \"cuda\" but {d} (docs/development.md, \"CUDA build\")"),
        ),
        _ => (
            Outcome::Skip,
            format!(
                "segment.device = \"{}\" (informational: {d})",
                device.name()
            ),
        ),
    }
}
