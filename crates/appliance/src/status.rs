//! Status port: one line per event and a periodic heartbeat, to the log, a file
//! or a serial device; `status.json` in the output folder always holds the last
//! state so `organdose status` can print it.
//!
//! What the port holds for months is of fixed size (`heapless`): a status line
//! and the snapshot's messages are at most [`STATUS_LINE_BYTES`] (longer text is
//! cut, marked with "..."), and a command line on the serial port at most
//! [`COMMAND_LINE_BYTES`] (a longer one is refused with a status line and
//! skipped to its end, never buffered).

use crate::error::{Error, FaultKind, Result};
use crate::io::write_bytes_atomically;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Longest status line (bytes), and longest message the snapshot keeps.
pub(crate) const STATUS_LINE_BYTES: usize = 1024;

/// A status line or message in fixed memory.
pub(crate) type StatusText = heapless::String<STATUS_LINE_BYTES>;

/// `text` in a [`StatusText`]: whole when it fits, else cut at a character
/// boundary and marked with "...".
pub(crate) fn status_text(text: &str) -> StatusText {
    let mut out = StatusText::new();
    if out.push_str(text).is_ok() {
        return out;
    }
    const MARK: &str = "...";
    let mut end = STATUS_LINE_BYTES - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // Both fit by construction: `end + MARK.len() <= STATUS_LINE_BYTES`.
    let _ = out.push_str(&text[..end]);
    let _ = out.push_str(MARK);
    out
}

/// Reads a message of `status.json` cut to fit (a file written by another
/// version may hold a longer one).
fn de_status_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<StatusText, D::Error> {
    let s = String::deserialize(d)?;
    Ok(status_text(&s))
}

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
    #[serde(deserialize_with = "de_status_text")]
    pub last_event: StatusText,
    /// Seconds on the appliance clock.
    pub time_s: f64,
    /// Kind of the last fault not yet cleared by a successful job
    /// (input | environment | internal), empty when none.
    #[serde(default)]
    pub fault: String,
    /// The message of that fault.
    #[serde(default, deserialize_with = "de_status_text")]
    pub fault_message: StatusText,
    /// Cycles waiting to be retried after an environment fault.
    #[serde(default)]
    pub retrying: usize,
    /// The DICOM network (crates/net/src/): where the Storage SCP listens (empty: none),
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
    #[serde(default, deserialize_with = "de_status_text")]
    pub outbox_error: StatusText,
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
        self.update(|s| s.last_event = status_text(msg));
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
        let line = status_text(line);
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
    pub(crate) fn persist(&self) {
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

/// The network (organdose-net) reports through this: its events are the box's
/// events, its counters the status line's.
impl organdose_net::NetStatus for StatusPort {
    fn event(&self, line: &str) {
        StatusPort::event(self, line);
    }
    fn net(&self, change: organdose_net::NetChange<'_>) {
        use organdose_net::NetChange as C;
        self.update(|s| match change {
            C::Listening(addr) => s.dicom_listening = addr.to_string(),
            C::Rejected => s.dicom_rejected += 1,
            C::Association => s.dicom_associations += 1,
            C::Instance => s.dicom_instances += 1,
            C::StoreFailure => s.dicom_store_failures += 1,
            C::OutboxSent => s.outbox_sent += 1,
            C::Outbox {
                queued,
                jobs,
                failing,
                last_error,
            } => {
                s.outbox_queued = queued;
                s.outbox_jobs = jobs;
                s.outbox_failing = failing;
                s.outbox_error = status_text(last_error);
            }
        });
    }
}

/// Resident set size of this process in MB (Linux /proc; 0 elsewhere).
pub(crate) fn current_rss_mb() -> f64 {
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
    serde_json::from_str(&t)
        .map_err(|e| Error::library(FaultKind::Input, format!("{}", p.display()), e))
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

/// Longest command line on the status port (bytes, without its line end).
pub(crate) const COMMAND_LINE_BYTES: usize = 256;

/// What one byte of command input did.
#[derive(Debug, PartialEq)]
pub(crate) enum Fed<'a> {
    /// Nothing to do yet.
    Pending,
    /// A line ended (without its `\n`); it is in the buffer until the next byte.
    Line(&'a [u8]),
    /// The line outgrew [`COMMAND_LINE_BYTES`]: it is refused now, and what is
    /// left of it, up to its `\n`, is skipped without being kept.
    TooLong,
}

/// Assembles command lines from status-port bytes in a fixed buffer, so line
/// noise or a line without end never grows memory.
#[derive(Debug, Default)]
pub(crate) struct CommandLine {
    buf: heapless::Vec<u8, COMMAND_LINE_BYTES>,
    /// Inside a refused line, until its `\n`.
    skipping: bool,
    /// The buffer holds a line handed out, cleared by the next byte.
    ended: bool,
}

impl CommandLine {
    pub fn push(&mut self, b: u8) -> Fed<'_> {
        if std::mem::take(&mut self.ended) {
            self.buf.clear();
        }
        if b == b'\n' {
            if std::mem::take(&mut self.skipping) {
                return Fed::Pending;
            }
            self.ended = true;
            return Fed::Line(&self.buf);
        }
        if self.skipping {
            return Fed::Pending;
        }
        if self.buf.push(b).is_err() {
            self.buf.clear();
            self.skipping = true;
            return Fed::TooLong;
        }
        Fed::Pending
    }

    /// The last line when the input ends without a `\n`.
    pub fn finish(&mut self) -> Option<&[u8]> {
        if std::mem::take(&mut self.ended) {
            self.buf.clear();
        }
        if std::mem::take(&mut self.skipping) || self.buf.is_empty() {
            return None;
        }
        self.ended = true;
        Some(&self.buf)
    }

    /// Bytes held now (at most [`COMMAND_LINE_BYTES`]).
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Serves commands arriving on the status port, one per line: `STATUS` answers
/// with a status line, `PAUSE` stops queuing new jobs (the running one finishes),
/// `RESUME` starts again. Returns at end of input.
pub fn serve_commands<R: std::io::BufRead>(
    input: R,
    port: &StatusPort,
    paused: &std::sync::atomic::AtomicBool,
) {
    // Bytes, not `lines()`: one non-UTF-8 byte of line noise made `lines()` fail
    // and end this loop for good (found by fuzz/); a line is held in a fixed
    // buffer ([`CommandLine`]); a serial read timeout is not the end.
    let mut input = input;
    let mut line = CommandLine::default();
    loop {
        let chunk = match input.fill_buf() {
            Ok([]) => break,
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        let n = chunk.len();
        for &b in chunk {
            match line.push(b) {
                Fed::Pending => {}
                Fed::Line(l) => run_command(l, port, paused),
                Fed::TooLong => port.emit(&format!(
                    "organdose error command longer than {COMMAND_LINE_BYTES} bytes ignored"
                )),
            }
        }
        input.consume(n);
    }
    if let Some(l) = line.finish() {
        run_command(l, port, paused);
    }
}

/// One command line (its bytes: noise is answered, not fatal).
fn run_command(line: &[u8], port: &StatusPort, paused: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    let line = String::from_utf8_lossy(line);
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

/// Opens a serial device: a writer for status lines and a reader for commands.
pub fn open_serial(dev: &str, baud: u32) -> Result<(Sink, Box<dyn std::io::Read + Send>)> {
    let port = serialport::new(dev, baud)
        .timeout(std::time::Duration::from_secs(3600))
        .open()
        .map_err(|e| Error::library(FaultKind::Environment, format!("serial port {dev}"), e))?;
    let reader = port
        .try_clone()
        .map_err(|e| Error::library(FaultKind::Environment, format!("serial port {dev}"), e))?;
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

    /// 1 MB without a line end: the command buffer stays at its capacity, the
    /// line is refused once with a status line, and the next command works. An
    /// unbounded buffer would hold the whole megabyte.
    #[test]
    fn an_endless_line_is_refused_in_fixed_memory() {
        let mut line = CommandLine::default();
        let mut refused = 0;
        for _ in 0..1_000_000 {
            match line.push(b'x') {
                Fed::Pending => {}
                Fed::TooLong => refused += 1,
                Fed::Line(l) => panic!("no line end was sent, got {} bytes", l.len()),
            }
            assert!(line.buffered() <= COMMAND_LINE_BYTES);
        }
        assert_eq!(refused, 1, "refused once, when it outgrew the buffer");
        assert_eq!(line.buffered(), 0, "the refused line is not kept");
        let mut lines = Vec::new();
        for &b in b"\r\nPAUSE\r\n" {
            if let Fed::Line(l) = line.push(b) {
                lines.push(String::from_utf8_lossy(l).into_owned());
            }
        }
        assert_eq!(lines, ["PAUSE\r"], "the end of the refused line is skipped");

        // The same through the port.
        let dir = tempfile::tempdir().unwrap();
        let buf = Shared::default();
        let port = StatusPort::new(Sink::Writer(Box::new(buf.clone())), dir.path());
        let paused = std::sync::atomic::AtomicBool::new(false);
        let mut input = vec![b'y'; 1 << 20];
        input.extend_from_slice(b"\nPAUSE\n");
        serve_commands(std::io::Cursor::new(input), &port, &paused);
        assert!(paused.load(std::sync::atomic::Ordering::SeqCst));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("longer than 256 bytes").count(), 1, "{text}");
        assert!(text.len() < 4 * STATUS_LINE_BYTES, "{} bytes", text.len());
        // A line of exactly the capacity is still a command (and unknown).
        let mut input = vec![b'z'; COMMAND_LINE_BYTES];
        input.extend_from_slice(b"\nRESUME");
        serve_commands(std::io::Cursor::new(input), &port, &paused);
        assert!(
            !paused.load(std::sync::atomic::Ordering::SeqCst),
            "last line without end"
        );
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("unknown command 'ZZZ"), "{text}");
    }

    /// Messages are held in fixed memory: a long one is cut at a character
    /// boundary, marked, in the line, the snapshot and status.json; a longer
    /// one in a status.json of another version is cut when read.
    #[test]
    fn long_messages_are_cut_to_a_status_line() {
        let dir = tempfile::tempdir().unwrap();
        let buf = Shared::default();
        let port = StatusPort::new(Sink::Writer(Box::new(buf.clone())), dir.path());
        let long = "ä".repeat(3000);
        port.event(&long);
        let ev = port.get().last_event;
        assert!(
            ev.len() <= STATUS_LINE_BYTES && ev.ends_with("ä..."),
            "{}",
            ev.len()
        );
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.len() <= STATUS_LINE_BYTES + 2, "{}", text.len());
        assert!(text.ends_with("...\r\n"));
        assert_eq!(read_status(dir.path()).unwrap().last_event, ev);
        let mut snap = serde_json::to_value(port.get()).unwrap();
        snap["fault_message"] = serde_json::Value::String("e".repeat(5000));
        std::fs::write(dir.path().join("status.json"), snap.to_string()).unwrap();
        let back = read_status(dir.path()).unwrap();
        assert_eq!(back.fault_message.len(), STATUS_LINE_BYTES);
        assert_eq!(status_text("short"), "short");
    }
}
