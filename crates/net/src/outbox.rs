//! The durable outbox: `OUT/.outbox/<job>/` holds one result's DICOM files for one
//! destination (hard links or copies, so a later result of the cycle swapping
//! its folder does not touch them) and `job.json`, which records each file once
//! the destination acknowledged it. A job is written under a temporary name and
//! renamed into place, so a crash leaves a whole job or none.
//!
//! The sender thread tries due jobs oldest first, one association per job;
//! a failure waits `retry_initial_s`, doubled per failure up to `retry_max_s`. A
//! start tries every job at once (restart resumes the outbox). A file is marked
//! sent only after a success (or warning) status and before the next is sent, so
//! an acknowledged file is never sent again; a crash between the peer's answer
//! and that record can repeat that one file (a PACS stores an instance it already
//! has once). A newer result of the same cycle for the same destination
//! supersedes an older job still waiting: the old one is dropped unsent.
//! Finished jobs leave their `job.json` in `OUT/.outbox/sent/`.

use super::{safe_name, scu, Destination};
use crate::error::{Error, FaultKind, Result};
use crate::io::write_bytes_atomically;
use crate::{NetChange, NetStatus};
use crossbeam_channel::{bounded, Receiver, Sender};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const OUTBOX: &str = ".outbox";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct JobFile {
    /// File name in the job's `files/`.
    pub name: String,
    pub sop_instance: String,
    pub sent: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct OutboxJob {
    pub id: String,
    pub cycle: String,
    pub destination: Destination,
    pub created_unix: f64,
    pub files: Vec<JobFile>,
    /// Failed attempts in a row.
    pub failures: u32,
    pub last_error: String,
    /// Set when the job was dropped for a newer result of its cycle.
    #[serde(default)]
    pub superseded_by: String,
}

impl OutboxJob {
    pub fn unsent(&self) -> usize {
        self.files.iter().filter(|f| !f.sent).count()
    }
}

/// The outbox as it is on disk (for `organdose status`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OutboxSummary {
    pub jobs: usize,
    pub queued_instances: usize,
    pub failing_jobs: usize,
    pub sent_jobs: usize,
    pub last_error: String,
}

pub struct Outbox {
    dir: PathBuf,
    destinations: Vec<Destination>,
    calling_ae: String,
    retry_initial_s: f64,
    retry_max_s: f64,
    timeout: Duration,
    status: Arc<dyn NetStatus>,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    /// Next try (unix s) per job id after a failure; in memory only, so a start
    /// tries every job at once.
    next_try: Mutex<BTreeMap<String, f64>>,
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn read_job(dir: &Path) -> Result<OutboxJob> {
    let p = dir.join("job.json");
    let t = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&t)
        .map_err(|e| Error::library(FaultKind::Input, format!("{}", p.display()), e))
}

fn write_job(dir: &Path, job: &OutboxJob) -> Result<()> {
    let text = serde_json::to_string_pretty(job)
        .map_err(|e| Error::library(FaultKind::Internal, "outbox job", e))?;
    write_bytes_atomically(&dir.join("job.json"), text.as_bytes())
}

/// The waiting jobs in `OUT/.outbox`, oldest first (ids start with the time).
fn list_jobs(dir: &Path) -> Result<Vec<(PathBuf, OutboxJob)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || name == "sent" || !e.path().is_dir() {
            continue;
        }
        match read_job(&e.path()) {
            Ok(j) => out.push((e.path(), j)),
            Err(err) => tracing::warn!("outbox: {err}"),
        }
    }
    out.sort_by(|a, b| {
        (a.1.created_unix, &a.1.id)
            .partial_cmp(&(b.1.created_unix, &b.1.id))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(out)
}

/// Counts of `OUT/.outbox` (any box, running or not).
pub fn summary(out_dir: &Path) -> Result<OutboxSummary> {
    list_summary(&out_dir.join(OUTBOX))
}

fn list_summary(dir: &Path) -> Result<OutboxSummary> {
    let jobs = list_jobs(dir)?;
    let sent_jobs = std::fs::read_dir(dir.join("sent"))
        .map(|rd| rd.flatten().count())
        .unwrap_or(0);
    Ok(OutboxSummary {
        jobs: jobs.len(),
        queued_instances: jobs.iter().map(|(_, j)| j.unsent()).sum(),
        failing_jobs: jobs.iter().filter(|(_, j)| j.failures > 0).count(),
        sent_jobs,
        last_error: jobs
            .iter()
            .rev()
            .find(|(_, j)| j.failures > 0)
            .map(|(_, j)| j.last_error.clone())
            .unwrap_or_default(),
    })
}

/// Hard link, or a copy where links are not possible.
fn link_or_copy(src: &Path, dst: &Path) -> std::io::Result<()> {
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    std::fs::copy(src, dst)?;
    std::fs::File::open(dst)?.sync_all()
}

impl Outbox {
    /// The outbox of `OUT/.outbox`, checked but not touched yet: [`Self::prepare`]
    /// does that, once this process holds OUT's lock.
    pub fn new(
        out_dir: &Path,
        cfg: &super::DicomNetConfig,
        status: Arc<dyn NetStatus>,
    ) -> Result<Self> {
        super::check_ae_title(&cfg.ae_title)?;
        for d in &cfg.destinations {
            d.check()?;
        }
        let (wake_tx, wake_rx) = bounded(1);
        Ok(Outbox {
            dir: out_dir.join(OUTBOX),
            destinations: cfg.destinations.clone(),
            calling_ae: cfg.ae_title.trim().to_string(),
            retry_initial_s: cfg.retry_initial_s.max(0.0),
            retry_max_s: cfg.retry_max_s.max(cfg.retry_initial_s),
            timeout: Duration::from_secs_f64(cfg.timeout_s.max(1.0)),
            status,
            wake_tx,
            wake_rx,
            next_try: Mutex::new(BTreeMap::new()),
        })
    }

    /// Creates the folder, removes a job left half-written by a kill, and says
    /// what waits.
    pub fn prepare(&self) -> Result<()> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir.join("sent")).map_err(|e| Error::io(dir, e))?;
        for e in std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let s = list_summary(dir)?;
        self.publish(&s);
        let dests: Vec<String> = self.destinations.iter().map(|d| d.key()).collect();
        self.status.event(&format!(
            "outbox {}: {} job(s), {} instance(s) waiting; results go to {}",
            dir.display(),
            s.jobs,
            s.queued_instances,
            if dests.is_empty() {
                "no destination (dicom.destinations)".to_string()
            } else {
                dests.join(", ")
            }
        ));
        Ok(())
    }

    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    fn publish(&self, s: &OutboxSummary) {
        self.status.net(NetChange::Outbox {
            queued: s.queued_instances,
            jobs: s.jobs,
            failing: s.failing_jobs,
            last_error: &s.last_error,
        });
    }

    fn refresh(&self) {
        match list_summary(&self.dir) {
            Ok(s) => self.publish(&s),
            Err(e) => tracing::warn!("outbox: {e}"),
        }
    }

    /// Queues the DICOM files of `dicom_dir` (a cycle's committed result) for
    /// every destination. Returns the number of jobs written.
    pub fn enqueue(&self, cycle: &str, dicom_dir: &Path) -> Result<usize> {
        if self.destinations.is_empty() {
            return Ok(0);
        }
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dicom_dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "dcm"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(dicom_dir, e)),
        };
        files.sort();
        if files.is_empty() {
            return Ok(0);
        }
        let infos = files
            .iter()
            .map(|f| scu::file_info(f))
            .collect::<Result<Vec<_>>>()?;
        let created = now_unix();
        let stamp = (created * 1000.0) as u64;
        for (k, dest) in self.destinations.iter().enumerate() {
            let id = format!("{stamp:016}_{}_{k}", safe_name(cycle));
            let tmp = self.dir.join(format!(".tmp-{id}"));
            let fin = self.dir.join(&id);
            let written = (|| -> Result<()> {
                let fdir = tmp.join("files");
                std::fs::create_dir_all(&fdir).map_err(|e| Error::io(&fdir, e))?;
                let mut jf = Vec::new();
                for (f, info) in files.iter().zip(&infos) {
                    let name = f
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let dst = fdir.join(&name);
                    link_or_copy(f, &dst).map_err(|e| Error::io(&dst, e))?;
                    jf.push(JobFile {
                        name,
                        sop_instance: info.sop_instance.clone(),
                        sent: false,
                    });
                }
                let job = OutboxJob {
                    id: id.clone(),
                    cycle: cycle.to_string(),
                    destination: dest.clone(),
                    created_unix: created,
                    files: jf,
                    failures: 0,
                    last_error: String::new(),
                    superseded_by: String::new(),
                };
                write_job(&tmp, &job)?;
                std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
                if let Ok(d) = std::fs::File::open(&self.dir) {
                    let _ = d.sync_all();
                }
                Ok(())
            })();
            if let Err(e) = written {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        }
        self.status.event(&format!(
            "outbox: cycle {cycle}: {} instance(s) queued for {} destination(s)",
            files.len(),
            self.destinations.len()
        ));
        self.refresh();
        let _ = self.wake_tx.try_send(());
        Ok(self.destinations.len())
    }

    fn backoff_s(&self, failures: u32) -> f64 {
        let exp = failures.saturating_sub(1).min(30) as i32;
        (self.retry_initial_s * 2f64.powi(exp)).min(self.retry_max_s)
    }

    /// One pass over the jobs: superseded ones are dropped, due ones sent.
    /// Returns how many jobs are still waiting.
    pub fn round(&self) -> usize {
        let jobs = match list_jobs(&self.dir) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!("outbox: {e}");
                return 0;
            }
        };
        // The newest job per (cycle, destination) wins.
        let mut newest: BTreeMap<(String, String), String> = BTreeMap::new();
        for (_, j) in &jobs {
            newest.insert((j.cycle.clone(), j.destination.key()), j.id.clone());
        }
        let now = now_unix();
        let mut waiting = 0;
        for (dir, mut job) in jobs {
            let key = (job.cycle.clone(), job.destination.key());
            let latest = newest.get(&key).cloned().unwrap_or_default();
            if latest != job.id {
                job.superseded_by = latest;
                self.status.event(&format!(
                    "outbox: job {} ({} instance(s) unsent to {}) dropped: a newer result of cycle {} replaces it",
                    job.id,
                    job.unsent(),
                    job.destination,
                    job.cycle
                ));
                self.retire(&dir, &job);
                continue;
            }
            let due = self
                .next_try
                .lock()
                .map(|m| m.get(&job.id).is_none_or(|t| *t <= now))
                .unwrap_or(true);
            if !due {
                waiting += 1;
                continue;
            }
            if !self.attempt(&dir, &mut job) {
                waiting += 1;
            }
        }
        self.refresh();
        waiting
    }

    /// Moves a job's record to `sent/` and removes its files.
    fn retire(&self, dir: &Path, job: &OutboxJob) {
        let dst = self.dir.join("sent").join(format!("{}.json", job.id));
        let text = serde_json::to_string_pretty(job).unwrap_or_default();
        if let Err(e) = write_bytes_atomically(&dst, text.as_bytes()) {
            tracing::warn!("outbox: {e}");
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!("outbox: {}: {e}", dir.display());
        }
        if let Ok(mut m) = self.next_try.lock() {
            m.remove(&job.id);
        }
        self.refresh();
    }

    /// Sends what of `job` is unsent; true when the job is done.
    fn attempt(&self, dir: &Path, job: &mut OutboxJob) -> bool {
        let pending: Vec<usize> = (0..job.files.len())
            .filter(|i| !job.files[*i].sent)
            .collect();
        let infos: Result<Vec<scu::FileInfo>> = pending
            .iter()
            .map(|i| scu::file_info(&dir.join("files").join(&job.files[*i].name)))
            .collect();
        let dest = job.destination.clone();
        let result = infos.and_then(|infos| {
            let mut ack = |k: usize| -> Result<()> {
                job.files[pending[k]].sent = true;
                self.status.net(NetChange::OutboxSent);
                write_job(dir, job)
            };
            scu::send(&dest, &self.calling_ae, &infos, self.timeout, &mut ack)
        });
        match result {
            Ok(()) => {
                job.failures = 0;
                job.last_error.clear();
                self.retire(dir, job);
                self.status.event(&format!(
                    "outbox: cycle {}: {} instance(s) sent to {}",
                    job.cycle,
                    pending.len(),
                    job.destination
                ));
                true
            }
            Err(e) => {
                job.failures += 1;
                job.last_error = e.to_string();
                let wait = self.backoff_s(job.failures);
                if let Ok(mut m) = self.next_try.lock() {
                    m.insert(job.id.clone(), now_unix() + wait);
                }
                if let Err(w) = write_job(dir, job) {
                    tracing::warn!("outbox: {w}");
                }
                self.refresh();
                self.status.event(&format!(
                    "outbox: cycle {} to {}: {} of {} instance(s) unsent, failure {} in a row, next try in {wait:.0} s: {e}",
                    job.cycle,
                    job.destination,
                    job.unsent(),
                    job.files.len(),
                    job.failures
                ));
                false
            }
        }
    }

    /// Runs rounds until `stop`: after each enqueue, and at least every second
    /// while jobs wait for their back-off.
    pub fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            let waiting = self.round();
            let wait = if waiting > 0 {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(30)
            };
            let _ = self.wake_rx.recv_timeout(wait);
        }
    }

    /// Serves the outbox in a thread of its own.
    pub fn spawn(self: &Arc<Self>, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("dicom-outbox".into())
            .spawn(move || me.run(&stop))
            .map_err(|e| {
                Error::library(FaultKind::Environment, "cannot start the outbox thread", e)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_result_supersedes_a_waiting_job_and_failures_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/generated/ct_axial");
        // Nobody listens on this port: every try fails (connection refused).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = super::super::DicomNetConfig {
            destinations: vec![Destination {
                ae_title: "PACS".into(),
                host: "127.0.0.1".into(),
                port,
            }],
            retry_initial_s: 100.0,
            timeout_s: 2.0,
            ..Default::default()
        };
        let status: Arc<dyn NetStatus> = Arc::new(crate::LogStatus);
        let ob = Outbox::new(&out, &cfg, status.clone()).unwrap();
        ob.prepare().unwrap();
        assert_eq!(ob.enqueue("C1", &src).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(ob.enqueue("C1", &src).unwrap(), 1);
        assert_eq!(summary(&out).unwrap().jobs, 2);
        assert_eq!(ob.round(), 1, "the newer job waits, the older is dropped");
        let s = summary(&out).unwrap();
        assert_eq!((s.jobs, s.queued_instances, s.failing_jobs), (1, 6, 1));
        assert!(s.last_error.contains("association"), "{}", s.last_error);
        let dropped: OutboxJob = serde_json::from_str(
            &std::fs::read_to_string(
                std::fs::read_dir(out.join(OUTBOX).join("sent"))
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .path(),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(!dropped.superseded_by.is_empty());
        // Within the back-off the job is not tried again.
        assert_eq!(ob.round(), 1);
        assert_eq!(list_jobs(&ob.dir).unwrap()[0].1.failures, 1);
        // A new start tries at once.
        let again = Outbox::new(&out, &cfg, status).unwrap();
        again.prepare().unwrap();
        assert_eq!(again.round(), 1);
        assert_eq!(list_jobs(&again.dir).unwrap()[0].1.failures, 2);
    }
}
