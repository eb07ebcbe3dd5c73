//! Status port: one line per event and a periodic heartbeat, to the log, a file
//! or a serial device; `status.json` in the output folder always holds the last
//! state so `organdose status` can print it.

use crate::error::{Error, Result};
use crate::io::write_bytes_atomically;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the box is doing, shared between the ingest loop, the worker and the port.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Snapshot {
    /// idle | busy | paused | stopped
    pub state: String,
    pub job: String,
    pub stage: String,
    /// 0..1 within the current job.
    pub progress: f64,
    pub memory_mb: f64,
    pub memory_budget_mb: f64,
    pub queue: usize,
    pub pending_files: usize,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub last_event: String,
    /// Seconds on the appliance clock.
    pub time_s: f64,
    /// Kind of the last fault not yet cleared by a successful job
    /// (input | environment | internal), empty when none.
    #[serde(default)]
    pub fault: String,
    /// The message of that fault.
    #[serde(default)]
    pub fault_message: String,
    /// Cycles waiting to be retried after an environment fault.
    #[serde(default)]
    pub retrying: usize,
    /// The DICOM network (src/net/): where the Storage SCP listens (empty: none),
    /// associations accepted and rejected, instances stored and refused.
    #[serde(default)]
    pub dicom_listening: String,
    #[serde(default)]
    pub dicom_associations: u64,
    #[serde(default)]
    pub dicom_rejected: u64,
    #[serde(default)]
    pub dicom_instances: u64,
    #[serde(default)]
    pub dicom_store_failures: u64,
    /// The outbox: instances waiting to be sent, in how many jobs, jobs whose last
    /// try failed (and its error), instances sent since the start.
    #[serde(default)]
    pub outbox_queued: usize,
    #[serde(default)]
    pub outbox_jobs: usize,
    #[serde(default)]
    pub outbox_failing: usize,
    #[serde(default)]
    pub outbox_error: String,
    #[serde(default)]
    pub outbox_sent: u64,
}

impl Snapshot {
    pub fn line(&self, kind: &str) -> String {
        format!(
            "organdose {kind} state={} job={} stage={} progress={:.2} mem_mb={:.0}/{:.0} queue={} pending_files={} done={} failed={} fault={} retrying={} associations={} stored={} store_refused={} outbox_queued={} outbox_sent={} outbox_failing={}",
            self.state,
            if self.job.is_empty() { "-" } else { &self.job },
            if self.stage.is_empty() { "-" } else { &self.stage },
            self.progress,
            self.memory_mb,
            self.memory_budget_mb,
            self.queue,
            self.pending_files,
            self.jobs_done,
            self.jobs_failed,
            if self.fault.is_empty() { "-" } else { &self.fault },
            self.retrying,
            self.dicom_associations,
            self.dicom_instances,
            self.dicom_store_failures,
            self.outbox_queued,
            self.outbox_sent,
            self.outbox_failing
        )
    }
}

/// Where status lines go.
pub enum Sink {
    Log,
    File(PathBuf),
    Writer(Box<dyn Write + Send>),
}

impl Sink {
    /// `"log"`, `"file:PATH"` or `"serial:DEVICE"` (baud from config).
    pub fn from_spec(spec: &str, baud: u32) -> Result<Sink> {
        if spec == "log" || spec.is_empty() {
            return Ok(Sink::Log);
        }
        if let Some(p) = spec.strip_prefix("file:") {
            return Ok(Sink::File(PathBuf::from(p)));
        }
        if let Some(dev) = spec.strip_prefix("serial:") {
            return open_serial(dev, baud).map(|(sink, _)| sink);
        }
        Err(Error::input(format!(
            "status sink '{spec}': use log, file:PATH or serial:DEVICE"
        )))
    }
}

/// The status port.
pub struct StatusPort {
    sink: Mutex<Sink>,
    pub snapshot: Arc<Mutex<Snapshot>>,
    out_dir: PathBuf,
    /// The last status.json write error, so a full or read-only OUT logs it once,
    /// not on every event.
    persist_error: Mutex<Option<String>>,
}

impl StatusPort {
    pub fn new(sink: Sink, out_dir: &Path) -> Self {
        StatusPort {
            sink: Mutex::new(sink),
            snapshot: Arc::new(Mutex::new(Snapshot {
                state: "idle".into(),
                ..Default::default()
            })),
            out_dir: out_dir.to_path_buf(),
            persist_error: Mutex::new(None),
        }
    }

    pub fn update<F: FnOnce(&mut Snapshot)>(&self, f: F) {
        if let Ok(mut s) = self.snapshot.lock() {
            f(&mut s);
        }
    }

    pub fn get(&self) -> Snapshot {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// One event line.
    pub fn event(&self, msg: &str) {
        self.update(|s| s.last_event = msg.to_string());
        let line = format!("organdose event {msg}");
        self.emit(&line);
        self.persist();
    }

    pub fn heartbeat(&self) {
        self.update(|s| s.memory_mb = current_rss_mb());
        let line = self.get().line("heartbeat");
        self.emit(&line);
        self.persist();
    }

    fn emit(&self, line: &str) {
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        match &mut *sink {
            Sink::Log => tracing::info!("{line}"),
            Sink::File(p) => {
                let r = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&*p)
                    .and_then(|mut f| writeln!(f, "{line}"));
                if let Err(e) = r {
                    tracing::warn!("status file {}: {e}", p.display());
                }
            }
            Sink::Writer(w) => {
                if let Err(e) = write!(w, "{line}\r\n").and_then(|_| w.flush()) {
                    tracing::warn!("status port: {e}");
                }
            }
        }
    }

    /// Writes `status.json` now (events and heartbeats do it too).
    pub fn persist(&self) {
        let snap = self.get();
        if let Ok(text) = serde_json::to_string_pretty(&snap) {
            let r = write_bytes_atomically(&self.out_dir.join("status.json"), text.as_bytes());
            let Ok(mut last) = self.persist_error.lock() else {
                return;
            };
            match r {
                Ok(()) => {
                    if last.take().is_some() {
                        tracing::info!("status.json written again");
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if last.as_deref() != Some(msg.as_str()) {
                        tracing::warn!("status.json ({} fault): {msg}", e.kind());
                        *last = Some(msg);
                    }
                }
            }
        }
    }
}

/// Resident set size of this process in MB (Linux /proc; 0 elsewhere).
pub fn current_rss_mb() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0.0;
    };
    let pages: f64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

/// Reads the last state a running (or stopped) box left in `out_dir`.
pub fn read_status(out_dir: &Path) -> Result<Snapshot> {
    let p = out_dir.join("status.json");
    let t = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&t).map_err(|e| Error::input(format!("{}: {e}", p.display())))
}

/// Seconds since `status.json` in `out_dir` was last written (None when unknown).
pub fn status_age_s(out_dir: &Path) -> Option<f64> {
    let m = std::fs::metadata(out_dir.join("status.json")).ok()?;
    let t = m.modified().ok()?;
    std::time::SystemTime::now()
        .duration_since(t)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// Serves commands arriving on the status port, one per line: `STATUS` answers
/// with a status line, `PAUSE` stops queuing new jobs (the running one finishes),
/// `RESUME` starts again. Returns at end of input.
pub fn serve_commands<R: std::io::BufRead>(
    input: R,
    port: &StatusPort,
    paused: &std::sync::atomic::AtomicBool,
) {
    use std::io::{BufRead, Read};
    use std::sync::atomic::Ordering;
    // Bytes, not `lines()`: one non-UTF-8 byte of line noise made `lines()` fail
    // and end this loop for good (found by fuzz/); a line is capped so an
    // endless one cannot grow memory; a serial read timeout is not the end.
    const MAX_LINE: u64 = 256;
    let mut input = input;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut input).take(MAX_LINE).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => break,
        }
        if buf.len() as u64 == MAX_LINE && buf.last() != Some(&b'\n') {
            // Too long for a command: skip to the end of this line.
            let mut rest = Vec::new();
            while let Ok(n) = (&mut input).take(MAX_LINE).read_until(b'\n', &mut rest) {
                if n == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
                rest.clear();
            }
            port.emit(&format!(
                "organdose error command longer than {MAX_LINE} bytes ignored"
            ));
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        match line.trim().to_ascii_uppercase().as_str() {
            "" => {}
            "STATUS" => port.emit(&port.get().line("status")),
            "PAUSE" => {
                paused.store(true, Ordering::SeqCst);
                port.update(|s| s.state = "paused".into());
                port.event("paused by command");
            }
            "RESUME" => {
                paused.store(false, Ordering::SeqCst);
                port.update(|s| s.state = "idle".into());
                port.event("resumed by command");
            }
            other => port.emit(&format!(
                "organdose error unknown command '{other}' (STATUS, PAUSE, RESUME)"
            )),
        }
    }
}

/// Opens a serial device: a writer for status lines and a reader for commands.
pub fn open_serial(dev: &str, baud: u32) -> Result<(Sink, Box<dyn std::io::Read + Send>)> {
    let port = serialport::new(dev, baud)
        .timeout(std::time::Duration::from_secs(3600))
        .open()
        .map_err(|e| Error::environment(format!("serial port {dev}: {e}")))?;
    let reader = port
        .try_clone()
        .map_err(|e| Error::environment(format!("serial port {dev}: {e}")))?;
    Ok((Sink::Writer(Box::new(port)), Box::new(reader)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn commands_pause_resume_and_report() {
        let dir = tempfile::tempdir().unwrap();
        let buf = Shared::default();
        let port = StatusPort::new(Sink::Writer(Box::new(buf.clone())), dir.path());
        let paused = std::sync::atomic::AtomicBool::new(false);
        serve_commands(std::io::Cursor::new("PAUSE\nSTATUS\n"), &port, &paused);
        assert!(paused.load(std::sync::atomic::Ordering::SeqCst));
        serve_commands(std::io::Cursor::new("resume\nbogus\n"), &port, &paused);
        assert!(!paused.load(std::sync::atomic::Ordering::SeqCst));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("organdose status state=paused"), "{text}");
        assert!(text.contains("resumed by command"));
        assert!(text.contains("unknown command 'BOGUS'"));
        assert!(
            text.split('\n')
                .filter(|l| !l.is_empty())
                .all(|l| l.ends_with('\r')),
            "serial lines end in CRLF"
        );
        let snap = read_status(dir.path()).unwrap();
        assert_eq!(snap.state, "idle");
    }

    /// Found by fuzz/: one non-UTF-8 byte ended the command loop for good; an
    /// endless line grew memory. Both are skipped now and the next command works.
    #[test]
    fn line_noise_and_long_lines_do_not_stop_commands() {
        let dir = tempfile::tempdir().unwrap();
        let buf = Shared::default();
        let port = StatusPort::new(Sink::Writer(Box::new(buf.clone())), dir.path());
        let paused = std::sync::atomic::AtomicBool::new(false);
        let mut input = b"\xff\xfe noise\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend_from_slice(b"\nPAUSE\n");
        serve_commands(std::io::Cursor::new(input), &port, &paused);
        assert!(paused.load(std::sync::atomic::Ordering::SeqCst));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("unknown command"), "{text}");
        assert!(text.contains("longer than 256 bytes"), "{text}");
    }
}
