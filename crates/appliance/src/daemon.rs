//! The appliance loop: poll the export folder, settle series, group them into
//! cycles, queue jobs (bounded crossbeam channel: back-pressure), run them in a
//! worker thread within the memory budget, record results, quarantine failures.
//!
//! Faults are handled by kind ([`FaultKind`]): an input fault is recorded as the
//! cycle's outcome and quarantined, and the cycle waits for its inputs to change;
//! an environment fault (full or read-only OUT, permissions, memory, GPU) is never
//! recorded: the job runs again after a back-off that doubles per failure; an
//! internal fault (a panic) is contained, recorded and quarantined for a bug
//! report, and the box keeps running. A failing round of the loop itself backs
//! off the same way instead of repeating at loop rate.

use super::clock::Clock;
use super::cycles::{attach_corrections, group_cycles, CorrectionFile, CycleInput};
use super::ingest::{Ingest, SeriesState};
use super::lock::OutLock;
use super::quarantine::{is_quarantined, quarantine};
use super::recent::Recent;
use super::settings::ApplianceConfig;
use super::state::{CycleRecord, StateStore};
use super::status::{status_text, StatusPort};
use super::swap;
use crate::error::{Error, FaultKind, Result};
use crate::io::IngestConfig;
use crate::pipeline::summary_status;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One unit of work: (re)compute the outputs of a cycle from its current series.
#[derive(Debug, Clone)]
pub struct Job {
    pub cycle: CycleInput,
    /// partial | provisional | final
    pub summary_status: String,
    pub signature: String,
    /// The input files as `path:size`, sorted (kept in the state record).
    pub inputs: Vec<String>,
    /// `OUT/<cycle id>/`
    pub out_dir: PathBuf,
}

/// What a finished job reports.
#[derive(Debug, Clone, Default)]
pub struct JobOutput {
    /// The status the summary was written with: the job's, or `needs_review`
    /// when a plausibility gate held it back.
    pub summary_status: String,
    pub message: String,
}

/// Does the science for a job; the appliance only orchestrates.
pub trait Processor: Send + Sync {
    /// Memory the job will need, in MB, estimated before it starts.
    fn memory_need_mb(&self, job: &Job) -> f64;
    /// Runs the job; `progress(stage, fraction)` reports where it is.
    fn process(&self, job: &Job, progress: &dyn Fn(&str, f64)) -> Result<JobOutput>;
}

struct Done {
    id: String,
    /// An environment fault: run the job again after a back-off.
    retry: bool,
}

/// Failures so far of something retried, and when to try it next.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    next_s: f64,
}

/// A job during which the box died this many times in a row (same inputs) is
/// not started again: an internal fault, quarantined, until its inputs change.
/// Three, so that a stop or a power cut during a job is never mistaken for it.
pub(crate) const MAX_DEATHS_PER_JOB: u32 = 3;

/// A full round runs at least this often even when nothing seems to have
/// changed (a clock step, a file system that keeps mtimes coarse).
const FULL_ROUND_S: f64 = 600.0;

/// With change notifications, the export folder is still walked this often
/// (a missed event, a file rewritten in place on a share).
const RESCAN_S: f64 = 60.0;

/// Quarantined inputs and unrecorded held changes the loop remembers in memory
/// (8 bytes each, whatever the uptime); beyond them the disk is asked.
const QUARANTINED_REMEMBERED: usize = 1024;
const HELD_REMEMBERED: usize = 256;

/// Seconds to wait after the `failures`-th failure in a row: `retry_initial_s`
/// doubled per failure, at most `retry_max_s`.
pub fn backoff_s(cfg: &ApplianceConfig, failures: u32) -> f64 {
    let first = cfg.retry_initial_s.max(0.0);
    let exp = failures.saturating_sub(1).min(30) as i32;
    (first * 2f64.powi(exp)).min(cfg.retry_max_s.max(first))
}

pub struct Appliance {
    cfg: ApplianceConfig,
    ingest_cfg: IngestConfig,
    out_dir: PathBuf,
    ingest: Ingest,
    store: Arc<StateStore>,
    pub status: Arc<StatusPort>,
    clock: Arc<dyn Clock>,
    tx: Option<Sender<Job>>,
    done_rx: Receiver<Done>,
    in_flight: BTreeSet<String>,
    /// Inputs quarantined already (name#signature): the newest in fixed memory,
    /// older ones asked of their reason.txt.
    quarantined: Recent<QUARANTINED_REMEMBERED>,
    /// Cycles waiting after an environment fault.
    retry: BTreeMap<String, Backoff>,
    /// Quarantine copies that failed (full or read-only OUT), by name#signature.
    quarantine_retry: BTreeMap<String, Backoff>,
    /// Held changes whose state record could not be written (cycle#message), so
    /// a read-only OUT does not repeat them every round.
    held_noted: Recent<HELD_REMEMBERED>,
    pub paused: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
    last_heartbeat_s: f64,
    /// When the last full round ran, and what it saw (see [`Appliance::step`]).
    last_full_s: f64,
    state_mtime: Option<std::time::SystemTime>,
    paused_before: bool,
    /// A full round is owed (a job finished, the queue was full, a round failed).
    dirty: bool,
    /// Set by file-system notifications (see [`Appliance::step`]); None when the
    /// folder is not watched: then every round walks it.
    fs_changed: Option<Arc<AtomicBool>>,
    last_walk_s: f64,
    /// Correction files (RTSTRUCT / SEG) read so far, by `path:size`: what they
    /// refer to, or None for one that is no correction to use (organdose's own
    /// output coming back, or unreadable and quarantined).
    corrections_seen: BTreeMap<String, Option<CorrectionFile>>,
    /// Dropped last: no other box works on this OUT while this one lives.
    _lock: OutLock,
}

impl Appliance {
    pub fn new(
        export_dir: &Path,
        out_dir: &Path,
        cfg: ApplianceConfig,
        ingest_cfg: IngestConfig,
        processor: Arc<dyn Processor>,
        status: Arc<StatusPort>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let lock = OutLock::acquire(out_dir)?;
        // Result and quarantine folders whose swap a kill interrupted.
        swap::recover(out_dir)?;
        swap::recover(&out_dir.join("quarantine"))?;
        let store = Arc::new(StateStore::open(out_dir)?);
        let (tx, rx) = bounded::<Job>(cfg.queue_capacity.max(1));
        let (done_tx, done_rx) = bounded::<Done>(cfg.queue_capacity.max(1) + 1);
        let worker = {
            let status = status.clone();
            let store = store.clone();
            let budget = cfg.memory_budget_mb;
            let export = export_dir.to_path_buf();
            let out = out_dir.to_path_buf();
            std::thread::Builder::new()
                .name("organdose-worker".into())
                .spawn(move || {
                    worker_loop(rx, done_tx, processor, status, store, budget, &export, &out)
                })
                .map_err(|e| {
                    Error::library(FaultKind::Environment, "cannot start worker thread", e)
                })?
        };
        status.update(|s| s.memory_budget_mb = cfg.memory_budget_mb);
        Ok(Appliance {
            ingest: Ingest::new(export_dir, cfg.quiet_period_s),
            cfg,
            ingest_cfg,
            out_dir: out_dir.to_path_buf(),
            store,
            status,
            clock,
            tx: Some(tx),
            done_rx,
            in_flight: BTreeSet::new(),
            quarantined: Recent::default(),
            retry: BTreeMap::new(),
            quarantine_retry: BTreeMap::new(),
            held_noted: Recent::default(),
            paused: Arc::new(AtomicBool::new(false)),
            worker: Some(worker),
            last_heartbeat_s: f64::NEG_INFINITY,
            last_full_s: f64::NEG_INFINITY,
            state_mtime: None,
            paused_before: false,
            dirty: true,
            fs_changed: None,
            last_walk_s: f64::NEG_INFINITY,
            corrections_seen: BTreeMap::new(),
            _lock: lock,
        })
    }

    /// One round: poll, settle, quarantine, queue. Returns the number of jobs
    /// queued; an error (e.g. a state record that cannot be read) is returned
    /// after the round has done what it could.
    ///
    /// When nothing changed since the last round (no file changed or settled, no
    /// job finished, no retry due, no record written by `organdose finalize`),
    /// only the poll and the heartbeat run: an export folder holding months of
    /// patients costs a directory walk per poll, not a regrouping of every series.
    pub fn step(&mut self) -> Result<usize> {
        let now = self.clock.now_s();
        let done = self.collect_done();
        // The walk of the export folder is the cost of an idle round (a stat per
        // file: 16 % of a core at one round a second over 100 patients' 20,000
        // files). With change notifications it runs only after a change, while
        // files settle, and every RESCAN_S as a safety net; without them (a
        // network share, tests) every round.
        let walk = match &self.fs_changed {
            None => true,
            Some(flag) => {
                flag.swap(false, Ordering::SeqCst)
                    || self.ingest.pending_files() > 0
                    || self.ingest.settling(self.last_walk_s, now)
                    || now - self.last_walk_s >= RESCAN_S
            }
        };
        let changed = if walk {
            self.last_walk_s = now;
            self.ingest.poll(now)
        } else {
            0
        };
        let paused = self.paused.load(Ordering::SeqCst);
        let state_mtime = std::fs::metadata(self.out_dir.join("state"))
            .and_then(|m| m.modified())
            .ok();
        let due = self.retry.values().any(|b| b.next_s <= now)
            || self.quarantine_retry.values().any(|b| b.next_s <= now);
        let full = self.dirty
            || changed > 0
            || done > 0
            || due
            || paused != self.paused_before
            || state_mtime != self.state_mtime
            || self.ingest.settling(self.last_full_s, now)
            || now - self.last_full_s >= FULL_ROUND_S;
        let result = if full {
            self.last_full_s = now;
            self.state_mtime = state_mtime;
            self.paused_before = paused;
            self.dirty = false;
            self.full_round(now)
        } else {
            Ok(0)
        };
        if result.is_err() {
            self.dirty = true;
        }
        let pending = self.ingest.pending_files();
        let qlen = self.tx.as_ref().map(|t| t.len()).unwrap_or(0);
        let retrying = self.retry.len() + self.quarantine_retry.len();
        self.status.update(|s| {
            s.queue = qlen;
            s.pending_files = pending;
            s.time_s = now;
            s.retrying = retrying;
            if paused {
                s.state = "paused".into();
            } else if s.state == "paused" {
                s.state = "idle".into();
            }
        });
        if now - self.last_heartbeat_s >= self.cfg.heartbeat_s {
            self.last_heartbeat_s = now;
            self.status.heartbeat();
        }
        result
    }

    /// Settle, group, quarantine and queue (see [`Self::step`]).
    fn full_round(&mut self, now: f64) -> Result<usize> {
        let mut ready = Vec::new();
        // DICOM series that could not be used, by patient (None: unknown): it may
        // be a cycle's missing diagnostic CT or time point, so no cycle it may
        // belong to is reported as final while it is there.
        let mut refused: Vec<(Option<String>, String)> = Vec::new();
        // Corrected contours of this round, with the patient their header names.
        let mut correction_files: Vec<(PathBuf, String)> = Vec::new();
        for st in self.ingest.settled_series(now, &self.ingest_cfg) {
            match st {
                SeriesState::Ready(s) => ready.push(s),
                SeriesState::Correction(s) => correction_files.extend(
                    s.files
                        .iter()
                        .map(|h| (h.path.clone(), h.patient_id.clone())),
                ),
                SeriesState::Broken(s, why) => {
                    refused.push((s.files.first().map(|h| h.patient_id.clone()), why.clone()));
                    let sig = self.ingest.signature(&s);
                    let files: Vec<PathBuf> = s.files.iter().map(|h| h.path.clone()).collect();
                    self.quarantine_once(&format!("series_{}", s.uid), &files, &why, &sig, now);
                }
            }
        }
        for r in self.ingest.rejected() {
            // Single unreadable files (junk, a file cut short) are quarantined
            // with their reason but do not hold every cycle of the box from
            // final: only an unreadable series of the cycle's patient does.
            let sig = format!("{}:{}", r.path.display(), r.size);
            let name = format!(
                "file_{}",
                r.path
                    .strip_prefix(self.ingest.root())
                    .unwrap_or(&r.path)
                    .display()
            );
            self.quarantine_once(&name, std::slice::from_ref(&r.path), &r.reason, &sig, now);
        }
        let (mut cycles, problems) = group_cycles(&ready);
        for (s, why) in problems {
            let sig = self.ingest.signature(&s);
            let files: Vec<PathBuf> = s.files.iter().map(|h| h.path.clone()).collect();
            self.quarantine_once(&format!("series_{}", s.uid), &files, &why, &sig, now);
        }
        // Corrected contours: attached to the cycle of the CT they refer to (its
        // signature changes, so it is recomputed); one for a CT no cycle has is
        // quarantined with the reference it names, and nothing else changes.
        let (corrections, unreadable) = self.read_corrections(&correction_files, now);
        // A physicist's correction the box cannot read must not leave her
        // patient's cycle `final` on the masks she corrected.
        refused.extend(unreadable);
        for (path, why) in attach_corrections(&mut cycles, &corrections) {
            let sig = self.ingest.file_input(&path);
            self.quarantine_once(
                &self.correction_name(&path),
                std::slice::from_ref(&path),
                &why,
                &sig,
                now,
            );
        }
        let mut queued = 0;
        let mut first_error: Option<Error> = None;
        if !self.paused.load(Ordering::SeqCst) {
            for c in cycles {
                if self.in_flight.contains(&c.id) {
                    continue;
                }
                if self.retry.get(&c.id).is_some_and(|b| b.next_s > now) {
                    continue;
                }
                let record = match self.store.get(&c.id) {
                    Ok(r) => r,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                };
                let finalize = record.as_ref().is_some_and(|r| r.finalize_requested);
                let mut status =
                    summary_status(c.timepoints, self.cfg.expected_timepoints, finalize);
                let mut c = c;
                let theirs: Vec<&String> = refused
                    .iter()
                    .filter(|(p, _)| p.as_ref().is_none_or(|p| *p == c.patient_id))
                    .map(|(_, why)| why)
                    .collect();
                if status == "final" && !finalize {
                    if let Some(first) = theirs.first() {
                        status = "needs_review";
                        c.notes.push(format!(
                            "needs review: held from final: {} DICOM series or file(s) in the export could not be read and may belong to this cycle (e.g. {first}); fix or remove them (see quarantine/), or `organdose finalize` to accept the result without them",
                            theirs.len()
                        ));
                    }
                }
                let mut sigs: Vec<String> =
                    c.series.iter().map(|s| self.ingest.signature(s)).collect();
                sigs.sort();
                let mut corr_inputs: Vec<String> = c
                    .corrections
                    .iter()
                    .map(|p| self.ingest.file_input(p))
                    .collect();
                corr_inputs.sort();
                let mut signature = format!("{status}#{}", sigs.join("#"));
                if !corr_inputs.is_empty() {
                    signature.push_str(&format!("#corrections#{}", corr_inputs.join("#")));
                }
                if record.as_ref().is_some_and(|r| r.signature == signature) {
                    continue;
                }
                let mut inputs: Vec<String> = c
                    .series
                    .iter()
                    .flat_map(|s| self.ingest.inputs(s))
                    .chain(corr_inputs)
                    .collect();
                inputs.sort();
                if let Some(r) = &record {
                    if self.hold_final(r, &inputs) {
                        continue;
                    }
                }
                let job = Job {
                    out_dir: self.out_dir.join(&c.id),
                    summary_status: status.to_string(),
                    signature,
                    inputs,
                    cycle: c,
                };
                let Some(tx) = &self.tx else { break };
                let id = job.cycle.id.clone();
                match tx.try_send(job) {
                    Ok(()) => {
                        self.in_flight.insert(id);
                        queued += 1;
                    }
                    Err(TrySendError::Full(job)) => {
                        // Back-pressure: the job is found again on the next round.
                        tracing::debug!("queue full; {} waits", job.cycle.id);
                        self.dirty = true;
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Err(Error::internal("worker thread stopped"));
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(queued),
        }
    }

    /// A final result is never replaced by one computed from fewer inputs without
    /// an explicit `organdose finalize`: true (and the change reported once) when
    /// files the final result was computed from are gone or changed.
    fn hold_final(&mut self, r: &CycleRecord, inputs: &[String]) -> bool {
        if r.outcome != "done"
            || !r.signature.starts_with("final#")
            || r.recompute_requested
            || r.inputs.is_empty()
        {
            return false;
        }
        let now: BTreeSet<&String> = inputs.iter().collect();
        let lost: Vec<&String> = r.inputs.iter().filter(|x| !now.contains(x)).collect();
        let Some(first) = lost.first() else {
            return false;
        };
        let example = first.rsplit_once(':').map(|(p, _)| p).unwrap_or(first);
        let msg = format!(
            "{} input file(s) of the final result were removed or changed since it was computed (e.g. {example}); the final result is kept; `organdose finalize --out {} {}` recomputes it with the inputs present",
            lost.len(),
            self.out_dir.display(),
            r.id
        );
        // The state record is the lasting memory: a change it holds was said
        // (also before a restart); memory only keeps an unwritable record
        // from repeating the line every round.
        if r.held == msg || !self.held_noted.insert(&format!("{}#{msg}", r.id)) {
            return true;
        }
        self.status.event(&format!("cycle {} held: {msg}", r.id));
        let mut held = r.clone();
        held.held = msg;
        if let Err(e) = self.store.put(&held) {
            tracing::warn!("state record for {}: {e}", r.id);
        }
        true
    }

    /// Quarantine name of a correction file: its path under the export folder.
    fn correction_name(&self, path: &Path) -> String {
        format!(
            "correction_{}",
            path.strip_prefix(self.ingest.root())
                .unwrap_or(path)
                .display()
        )
    }

    /// Reads the correction files of this round (each once per content): what
    /// they refer to. organdose's own RT Structure Sets and SEGs coming back
    /// (Manufacturer "organdose", e.g. a PACS sending the box's results back)
    /// are no correction: said once and left alone, so results never loop. An
    /// unreadable one is quarantined with the reason.
    /// Also returns, per correction that cannot be read, its patient and why.
    fn read_corrections(
        &mut self,
        files: &[(PathBuf, String)],
        now: f64,
    ) -> (Vec<CorrectionFile>, Vec<(Option<String>, String)>) {
        let keys: Vec<String> = files
            .iter()
            .map(|(p, _)| self.ingest.file_input(p))
            .collect();
        // Forget files that are gone (bounded memory over months).
        let present: BTreeSet<&String> = keys.iter().collect();
        self.corrections_seen.retain(|k, _| present.contains(k));
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for ((path, patient), key) in files.iter().zip(&keys) {
            if !self.corrections_seen.contains_key(key) {
                let seen = match crate::io::corrections::read(path) {
                    Ok(c) if c.manufacturer.eq_ignore_ascii_case("organdose") => {
                        self.status.event(&format!(
                            "ignored {}: organdose's own {} (Manufacturer organdose), not a correction",
                            path.display(),
                            c.kind.as_str()
                        ));
                        None
                    }
                    Ok(c) => {
                        self.status.event(&format!(
                            "correction {} ({} by {}{}) refers to {}",
                            path.display(),
                            c.kind.as_str(),
                            c.by,
                            if c.at.is_empty() {
                                String::new()
                            } else {
                                format!(", {}", c.at)
                            },
                            c.refs.describe()
                        ));
                        Some(CorrectionFile {
                            path: path.clone(),
                            kind: c.kind.as_str(),
                            refs: c.refs,
                        })
                    }
                    Err(e) => {
                        // Not remembered: quarantine_once says it once, and retries
                        // a copy that failed (a full OUT).
                        let why = format!("corrected contours not readable: {e}");
                        let name = self.correction_name(path);
                        self.quarantine_once(&name, std::slice::from_ref(path), &why, key, now);
                        unreadable.push((Some(patient.clone()), why));
                        continue;
                    }
                };
                self.corrections_seen.insert(key.clone(), seen);
            }
            if let Some(Some(c)) = self.corrections_seen.get(key) {
                out.push(c.clone());
            }
        }
        (out, unreadable)
    }

    fn quarantine_once(&mut self, name: &str, files: &[PathBuf], why: &str, sig: &str, now: f64) {
        let key = format!("{name}#{sig}");
        if self.quarantined.contains(&key) {
            return;
        }
        // Forgotten by the memory (or from before a restart): the copy on disk says.
        if is_quarantined(&self.out_dir, name, why, FaultKind::Input, sig) {
            self.quarantined.insert(&key);
            return;
        }
        if self
            .quarantine_retry
            .get(&key)
            .is_some_and(|b| b.next_s > now)
        {
            return;
        }
        match quarantine(
            &self.out_dir,
            name,
            self.ingest.root(),
            files,
            why,
            FaultKind::Input,
            sig,
        ) {
            Ok(dir) => {
                self.status
                    .event(&format!("quarantine {} reason=\"{why}\"", dir.display()));
                self.quarantined.insert(&key);
                self.quarantine_retry.remove(&key);
            }
            Err(e) => {
                let failures = self.quarantine_retry.get(&key).map_or(0, |b| b.failures) + 1;
                let wait = backoff_s(&self.cfg, failures);
                self.status.event(&format!(
                    "quarantine of {name} failed ({} fault), next try in {wait:.0} s: {e}",
                    e.kind()
                ));
                self.quarantine_retry.insert(
                    key,
                    Backoff {
                        failures,
                        next_s: now + wait,
                    },
                );
            }
        }
    }

    fn on_done(&mut self, d: Done) {
        self.in_flight.remove(&d.id);
        // The cycle may have new inputs that arrived while it ran.
        self.dirty = true;
        if d.retry {
            let failures = self.retry.get(&d.id).map_or(0, |b| b.failures) + 1;
            let wait = backoff_s(&self.cfg, failures);
            self.status.event(&format!(
                "job {} runs again in {wait:.0} s (environment fault {failures} in a row)",
                d.id
            ));
            self.retry.insert(
                d.id,
                Backoff {
                    failures,
                    next_s: self.clock.now_s() + wait,
                },
            );
        } else {
            self.retry.remove(&d.id);
        }
    }

    /// Takes the finished jobs' reports; returns how many there were.
    fn collect_done(&mut self) -> usize {
        let mut n = 0;
        while let Ok(d) = self.done_rx.try_recv() {
            self.on_done(d);
            n += 1;
        }
        n
    }

    /// True when nothing is queued or running.
    pub fn idle(&mut self) -> bool {
        self.collect_done();
        self.in_flight.is_empty()
    }

    /// Blocks until the queued jobs have finished.
    pub fn wait_idle(&mut self) {
        while !self.in_flight.is_empty() {
            match self.done_rx.recv() {
                Ok(d) => self.on_done(d),
                Err(_) => break,
            }
        }
    }

    /// Runs until `stop` is set: a round every poll interval. A change reported by
    /// the file system brings the next round forward, but never closer than
    /// `min(poll_interval_s, 1 s)` to the last one; a failing round backs off.
    pub fn run(&mut self, stop: Arc<AtomicBool>) -> Result<()> {
        let (wake_tx, wake_rx) = bounded::<()>(1);
        let changed = Arc::new(AtomicBool::new(true));
        let _watcher = start_notify(self.ingest.root(), wake_tx, changed.clone());
        if _watcher.is_some() {
            self.fs_changed = Some(changed);
        }
        self.status.event(&format!(
            "watching {} (quiet period {} s, poll every {} s, budget {} MB)",
            self.ingest.root().display(),
            self.cfg.quiet_period_s,
            self.cfg.poll_interval_s,
            self.cfg.memory_budget_mb
        ));
        let poll = self.cfg.poll_interval_s.max(0.05);
        let min_gap = Duration::from_secs_f64(poll.min(1.0));
        let mut failures = 0u32;
        let mut last_error = String::new();
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let wait_s = match self.step() {
                Ok(_) => {
                    if failures > 0 {
                        self.status
                            .event(&format!("recovered after {failures} failed round(s)"));
                        failures = 0;
                        last_error.clear();
                    }
                    poll
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff_s(&self.cfg, failures).max(poll);
                    let msg = e.to_string();
                    // The same error is said again only at doubling counts, not per round.
                    if msg != last_error || failures.is_power_of_two() {
                        self.status.event(&format!(
                            "error ({} fault, {failures} round(s) in a row, next round in {wait:.0} s): {msg}",
                            e.kind()
                        ));
                        last_error = msg;
                    }
                    wait
                }
            };
            let deadline = started + Duration::from_secs_f64(wait_s);
            std::thread::sleep((started + min_gap).saturating_duration_since(Instant::now()));
            while !stop.load(Ordering::SeqCst) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Stop is looked at every second; while backing off, file events do
                // not shorten the wait.
                let woke = wake_rx
                    .recv_timeout(left.min(Duration::from_secs(1)))
                    .is_ok();
                if woke && failures == 0 {
                    break;
                }
            }
        }
        self.status.update(|s| s.state = "stopped".into());
        self.status.event("stopping");
        Ok(())
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// File-system notifications as wake-ups only; polling stays the source of truth.
/// `changed` is set by every event that may change what a walk of the folder
/// finds (a lost or overflowed event queue included).
fn start_notify(
    root: &Path,
    wake: Sender<()>,
    changed: Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else {
            changed.store(true, Ordering::SeqCst);
            return;
        };
        if ev.need_rescan() {
            changed.store(true, Ordering::SeqCst);
        }
        // The poll itself opens and reads the watched folders and files: those
        // access events (and the atime updates they cause) must not wake the
        // loop, or it spins (issue 20: ~1,500 rounds a second on an empty folder).
        let relevant = match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
            EventKind::Other => false,
            _ => true,
        };
        if relevant {
            changed.store(true, Ordering::SeqCst);
            let _ = wake.try_send(());
        }
    })
    .map_err(|e| tracing::warn!("file notifications unavailable ({e}); polling only"))
    .ok()?;
    if let Err(e) = w.watch(root, RecursiveMode::Recursive) {
        tracing::warn!("cannot watch {} ({e}); polling only", root.display());
        return None;
    }
    Some(w)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Whether a job's input files are still as they were when it was queued (a file
/// deleted or rewritten while the job ran makes its failure meaningless).
fn inputs_unchanged(job: &Job) -> bool {
    job.inputs.iter().all(|entry| {
        let Some((path, size)) = entry.rsplit_once(':') else {
            return true;
        };
        std::fs::metadata(path)
            .map(|m| m.len().to_string() == size)
            .unwrap_or(false)
    })
}

#[allow(clippy::too_many_arguments)]
fn worker_loop(
    rx: Receiver<Job>,
    done: Sender<Done>,
    processor: Arc<dyn Processor>,
    status: Arc<StatusPort>,
    store: Arc<StateStore>,
    budget_mb: f64,
    export: &Path,
    out: &Path,
) {
    for job in rx.iter() {
        let id = job.cycle.id.clone();
        status.update(|s| {
            // Taken off the queue: status.json (written by the events below)
            // must not show it queued once the box is idle (issue 42).
            s.queue = rx.len();
            s.state = "busy".into();
            s.job = id.clone();
            s.stage = "start".into();
            s.progress = 0.0;
        });
        status.event(&format!(
            "job {id} start ({} series, {} time points, {})",
            job.cycle.series.len(),
            job.cycle.timepoints,
            job.summary_status
        ));
        let need = processor.memory_need_mb(&job);
        let died = match store.job_starts(&id, &job.signature) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("{e}");
                0
            }
        };
        let result = if died >= MAX_DEATHS_PER_JOB {
            Err(Error::internal(format!(
                "the box stopped {died} times in a row while running this job (killed, out of memory or aborted); it is not tried again until its inputs change"
            )))
        } else if need > budget_mb {
            Err(Error::input(format!(
                "job needs about {need:.0} MB, more than the memory budget of {budget_mb:.0} MB (appliance.memory_budget_mb)"
            )))
        } else {
            let progress = |stage: &str, f: f64| {
                status.update(|s| {
                    s.stage = stage.to_string();
                    s.progress = f;
                })
            };
            // A panic in the science must not take the box down.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                processor.process(&job, &progress)
            })) {
                Ok(r) => r,
                Err(p) => Err(Error::internal(format!(
                    "panic while processing: {}",
                    panic_message(p.as_ref())
                ))),
            }
        };
        let prev = store.get(&id).ok().flatten();
        let finalize_requested = prev.as_ref().is_some_and(|p| p.finalize_requested);
        let mut retry = false;
        let record = match result {
            Ok(o) => {
                status.update(|s| {
                    s.jobs_done += 1;
                    s.fault.clear();
                    s.fault_message.clear();
                });
                status.event(&format!(
                    "job {id} done: {} {}",
                    o.summary_status, o.message
                ));
                Some(CycleRecord {
                    id: id.clone(),
                    patient_id: job.cycle.patient_id.clone(),
                    injection: job.cycle.injection.clone(),
                    signature: job.signature.clone(),
                    outcome: "done".into(),
                    summary_status: o.summary_status,
                    timepoints: job.cycle.timepoints,
                    message: o.message,
                    finalize_requested,
                    fault: String::new(),
                    inputs: job.inputs.clone(),
                    recompute_requested: false,
                    held: String::new(),
                })
            }
            Err(e) => {
                let kind = e.kind();
                let why = e.to_string();
                status.update(|s| {
                    s.fault = kind.to_string();
                    s.fault_message = status_text(&why);
                });
                if kind == FaultKind::Environment {
                    // Not the study's fault: nothing is recorded, the job runs again.
                    status.event(&format!("job {id} environment fault: {why}"));
                    retry = true;
                    None
                } else if !inputs_unchanged(&job) {
                    status.event(&format!(
                        "job {id}: its input files changed while it ran ({why}); it runs again once they have settled"
                    ));
                    None
                } else {
                    status.update(|s| s.jobs_failed += 1);
                    status.event(&format!("job {id} failed ({kind} fault): {why}"));
                    let files: Vec<PathBuf> = job
                        .cycle
                        .series
                        .iter()
                        .flat_map(|s| s.files.iter().map(|h| h.path.clone()))
                        .collect();
                    let q = quarantine(
                        out,
                        &format!("cycle_{id}"),
                        export,
                        &files,
                        &why,
                        kind,
                        &job.signature,
                    );
                    match q {
                        Err(q) if q.kind() == FaultKind::Environment => {
                            // Without its quarantine copy the failure is not recorded
                            // either: both are tried again after the back-off.
                            status.event(&format!(
                                "quarantine of {id} failed (environment fault): {q}"
                            ));
                            retry = true;
                            None
                        }
                        r => {
                            if let Err(q) = r {
                                tracing::error!("quarantine of {id} failed: {q}");
                            }
                            Some(CycleRecord {
                                id: id.clone(),
                                patient_id: job.cycle.patient_id.clone(),
                                injection: job.cycle.injection.clone(),
                                signature: job.signature.clone(),
                                outcome: "failed".into(),
                                summary_status: String::new(),
                                timepoints: job.cycle.timepoints,
                                message: why,
                                finalize_requested,
                                fault: kind.to_string(),
                                inputs: job.inputs.clone(),
                                recompute_requested: false,
                                held: String::new(),
                            })
                        }
                    }
                }
            }
        };
        store.job_ended(&id);
        if let Some(record) = record {
            if let Err(e) = store.put(&record) {
                // The outputs are there but the record is not: the job runs again.
                status.event(&format!(
                    "state record for {id} not written ({} fault): {e}",
                    e.kind()
                ));
                retry = true;
            }
        }
        status.update(|s| {
            s.state = "idle".into();
            s.job.clear();
            s.stage.clear();
            s.progress = 0.0;
        });
        // `organdose status` should not show a finished job as running until the
        // next heartbeat.
        status.persist();
        let _ = done.send(Done { id, retry });
    }
}

/// Cycle ids with their last record, for `organdose status`.
pub fn records(out_dir: &Path) -> Result<BTreeMap<String, CycleRecord>> {
    Ok(StateStore::open(out_dir)?
        .all()?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::status::Sink;
    use std::sync::Mutex;

    /// Records the jobs it is given and writes one output file per job.
    struct Recorder {
        jobs: Mutex<Vec<(String, String, usize)>>,
        need_mb: f64,
        fail: bool,
    }

    impl Processor for Recorder {
        fn memory_need_mb(&self, _job: &Job) -> f64 {
            self.need_mb
        }
        fn process(&self, job: &Job, progress: &dyn Fn(&str, f64)) -> Result<JobOutput> {
            progress("record", 0.5);
            if self.fail {
                return Err(crate::error::Error::input("test processor refuses"));
            }
            self.jobs.lock().unwrap().push((
                job.cycle.id.clone(),
                job.summary_status.clone(),
                job.cycle.series.len(),
            ));
            std::fs::create_dir_all(&job.out_dir).unwrap();
            std::fs::write(job.out_dir.join("out.txt"), &job.signature).unwrap();
            Ok(JobOutput {
                summary_status: job.summary_status.clone(),
                message: String::new(),
            })
        }
    }

    /// What each test starts from: the generated DICOM series, an empty export
    /// folder and output folder in a temporary directory, a clock at zero.
    struct Fixture {
        _dir: tempfile::TempDir,
        data: PathBuf,
        export: PathBuf,
        out: PathBuf,
        clock: ManualClock,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            Fixture {
                data: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/generated"),
                export: dir.path().join("export"),
                out: dir.path().join("out"),
                clock: ManualClock::default(),
                _dir: dir,
            }
        }
    }

    impl Recorder {
        fn new(need_mb: f64, fail: bool) -> Arc<Self> {
            Arc::new(Recorder {
                jobs: Mutex::new(vec![]),
                need_mb,
                fail,
            })
        }
    }

    fn copy_tree(src: &Path, dst: &Path) {
        for f in crate::io::dicom::list_files(src).unwrap() {
            let rel = f.strip_prefix(src).unwrap();
            let d = dst.join(rel);
            std::fs::create_dir_all(d.parent().unwrap()).unwrap();
            std::fs::copy(&f, &d).unwrap();
        }
    }

    fn appliance(
        export: &Path,
        out: &Path,
        clock: &ManualClock,
        p: Arc<dyn Processor>,
    ) -> Appliance {
        let mut cfg = Config::default();
        cfg.appliance.quiet_period_s = 10.0;
        let status = Arc::new(StatusPort::new(Sink::Log, out));
        Appliance::new(
            export,
            out,
            cfg.appliance,
            cfg.ingest,
            p,
            status,
            Arc::new(clock.clone()),
        )
        .unwrap()
    }

    #[test]
    fn job_runs_once_survives_restart_and_reruns_on_new_data() {
        let Fixture {
            _dir,
            data,
            export,
            out,
            clock,
        } = Fixture::new();
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        let rec = Recorder::new(1.0, false);
        {
            let mut app = appliance(&export, &out, &clock, rec.clone());
            assert_eq!(app.step().unwrap(), 0, "nothing before the quiet period");
            clock.advance(11.0);
            assert_eq!(app.step().unwrap(), 1);
            app.wait_idle();
            assert_eq!(app.step().unwrap(), 0, "same inputs: not queued again");
        }
        assert_eq!(rec.jobs.lock().unwrap().len(), 1);
        assert_eq!(rec.jobs.lock().unwrap()[0].1, "partial");
        // Restart: the record on disk says it is done.
        {
            let mut app = appliance(&export, &out, &clock, rec.clone());
            app.step().unwrap();
            clock.advance(11.0);
            assert_eq!(app.step().unwrap(), 0);
        }
        assert_eq!(rec.jobs.lock().unwrap().len(), 1);
        // A new series of the same patient arrives (the rescale SPECT is a second
        // time point of the same injection): the cycle is processed again.
        copy_tree(&data.join("nm_multiframe_rescale"), &export.join("b"));
        let mut app = appliance(&export, &out, &clock, rec.clone());
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        let jobs = rec.jobs.lock().unwrap().clone();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].2, 2);
        let recs = records(&out).unwrap();
        assert_eq!(recs.len(), 1);
        assert!(recs
            .values()
            .all(|r| r.outcome == "done" && r.timepoints == 2));
    }

    #[test]
    fn over_budget_and_failing_jobs_are_refused_and_quarantined_and_box_keeps_going() {
        let Fixture {
            _dir,
            data,
            export,
            out,
            clock,
        } = Fixture::new();
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        std::fs::copy(data.join("bad/not_dicom.dcm"), export.join("junk.dcm")).unwrap();
        let big = Recorder::new(1e6, false);
        let mut app = appliance(&export, &out, &clock, big.clone());
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        assert!(
            big.jobs.lock().unwrap().is_empty(),
            "refused before running"
        );
        let r = records(&out).unwrap();
        let rec = r.values().next().unwrap();
        assert_eq!(rec.outcome, "failed");
        assert!(rec.message.contains("memory budget"), "{}", rec.message);
        let q = out.join("quarantine");
        let reasons: Vec<String> = std::fs::read_dir(&q)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path().join("reason.txt")).unwrap())
            .collect();
        assert!(reasons.iter().any(|r| r.contains("memory budget")));
        assert!(reasons.iter().any(|r| r.contains("not DICOM")));
        // Inputs untouched.
        assert!(export.join("junk.dcm").is_file());
        assert!(export.join("a/spect.dcm").is_file());
        assert_eq!(app.status.get().jobs_failed, 1);
    }

    /// Issue 42, finding 11: after a failed job `status` showed `queue=1` while
    /// the box was idle (status.json written by the job's events kept the
    /// queue length of the round that queued it).
    #[test]
    fn a_finished_job_is_not_shown_queued() {
        let Fixture {
            _dir,
            data,
            export,
            out,
            clock,
        } = Fixture::new();
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        let big = Recorder::new(1e6, false);
        let mut app = appliance(&export, &out, &clock, big);
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        let on_disk = crate::status::read_status(&out).unwrap();
        assert_eq!(on_disk.jobs_failed, 1);
        assert_eq!(on_disk.queue, 0, "{}", on_disk.line("status"));
    }

    /// Fails as told, one behaviour per call, then succeeds.
    struct Scripted {
        plan: Mutex<Vec<&'static str>>,
        calls: Mutex<usize>,
    }

    impl Processor for Scripted {
        fn memory_need_mb(&self, _job: &Job) -> f64 {
            1.0
        }
        fn process(&self, job: &Job, _progress: &dyn Fn(&str, f64)) -> Result<JobOutput> {
            *self.calls.lock().unwrap() += 1;
            let next = {
                let mut p = self.plan.lock().unwrap();
                if p.is_empty() {
                    "ok"
                } else {
                    p.remove(0)
                }
            };
            match next {
                "disk full" => Err(Error::io(
                    &job.out_dir.join("dose_summary.json"),
                    std::io::Error::from_raw_os_error(28),
                )),
                "panic" => panic!("test processor panics"),
                "vanish" => {
                    // `rm -rf` of the patient while the job reads it.
                    let f = &job.cycle.series[0].files[0].path;
                    std::fs::remove_file(f).unwrap();
                    Err(Error::io(f, std::io::ErrorKind::NotFound.into()))
                }
                _ => Ok(JobOutput {
                    summary_status: job.summary_status.clone(),
                    message: "ok".into(),
                }),
            }
        }
    }

    fn scripted(plan: &[&'static str]) -> Arc<Scripted> {
        Arc::new(Scripted {
            plan: Mutex::new(plan.to_vec()),
            calls: Mutex::new(0),
        })
    }

    #[test]
    fn environment_fault_is_retried_with_backoff_and_never_recorded() {
        let Fixture {
            _dir,
            data,
            export,
            out,
            clock,
        } = Fixture::new();
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        let p = scripted(&["disk full", "disk full"]);
        let mut app = appliance(&export, &out, &clock, p.clone());
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        assert!(
            records(&out).unwrap().is_empty(),
            "an environment fault is no outcome"
        );
        assert!(
            !out.join("quarantine").exists(),
            "nor a reason to quarantine"
        );
        assert_eq!(app.status.get().fault, "environment");
        assert_eq!(app.status.get().retrying, 0);
        // Rounds within the back-off (5 s, then 10 s) do not run the job again.
        for _ in 0..50 {
            assert_eq!(app.step().unwrap(), 0);
        }
        assert_eq!(app.status.get().retrying, 1);
        assert_eq!(*p.calls.lock().unwrap(), 1);
        clock.advance(5.1);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        clock.advance(5.1);
        assert_eq!(app.step().unwrap(), 0, "second back-off is 10 s");
        clock.advance(5.1);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        assert_eq!(*p.calls.lock().unwrap(), 3);
        let r = records(&out).unwrap();
        let rec = r.values().next().unwrap();
        assert_eq!(rec.outcome, "done");
        assert_eq!(app.status.get().fault, "", "cleared by the job that worked");
        assert_eq!(app.status.get().jobs_failed, 0);
    }

    #[test]
    fn inputs_deleted_while_the_job_ran_are_no_outcome() {
        let Fixture {
            _dir,
            data,
            export,
            out,
            clock,
        } = Fixture::new();
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        let p = scripted(&["vanish"]);
        let mut app = appliance(&export, &out, &clock, p.clone());
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        assert!(
            records(&out).unwrap().is_empty(),
            "a raced job is no outcome"
        );
        assert!(!out.join("quarantine").exists(), "nothing half-copied");
        assert_eq!(app.status.get().jobs_failed, 0);
        assert!(app.status.get().last_event.contains("changed while it ran"));
    }

    #[test]
    fn a_job_that_keeps_killing_the_box_is_not_started_a_fourth_time() {
        let Fixture {
            _dir,
            data,
            export,
            out,
            clock,
        } = Fixture::new();
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        let p = scripted(&[]);
        // Three processes died while running this job: each left its start
        // marker and never the end.
        let mut ing = super::super::ingest::Ingest::new(&export, 10.0);
        ing.poll(0.0);
        ing.poll(11.0);
        let s = match &ing.settled_series(11.0, &Config::default().ingest)[0] {
            SeriesState::Ready(s) => s.clone(),
            SeriesState::Broken(_, r) => panic!("{r}"),
            SeriesState::Correction(s) => panic!("a correction: {}", s.uid),
        };
        let sig = format!("partial#{}", ing.signature(&s));
        let store = StateStore::open(&out).unwrap();
        let id = "REF001_20260301T080000";
        for died in 0..3 {
            assert_eq!(store.job_starts(id, &sig).unwrap(), died);
        }
        let mut app = appliance(&export, &out, &clock, p.clone());
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        assert_eq!(*p.calls.lock().unwrap(), 0, "not started a fourth time");
        let rec = records(&out).unwrap().into_values().next().unwrap();
        assert_eq!(
            (rec.outcome.as_str(), rec.fault.as_str()),
            ("failed", "internal")
        );
        assert_eq!(rec.signature, sig);
        assert!(rec.message.contains("3 times in a row"), "{}", rec.message);
        assert!(!out.join("state").join(format!("{id}.running")).exists());
    }

    #[test]
    fn a_panic_is_an_internal_fault_and_the_box_keeps_going() {
        let Fixture {
            _dir,
            data,
            export,
            out,
            clock,
        } = Fixture::new();
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        let p = scripted(&["panic"]);
        let mut app = appliance(&export, &out, &clock, p.clone());
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        let r = records(&out).unwrap();
        let rec = r.values().next().unwrap();
        assert_eq!(
            (rec.outcome.as_str(), rec.fault.as_str()),
            ("failed", "internal")
        );
        assert!(
            rec.message.contains("test processor panics"),
            "{}",
            rec.message
        );
        assert_eq!(app.status.get().fault, "internal");
        // Not retried until the inputs change; then the box runs it again.
        clock.advance(1000.0);
        assert_eq!(app.step().unwrap(), 0);
        copy_tree(&data.join("nm_multiframe_rescale"), &export.join("b"));
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        assert_eq!(
            records(&out).unwrap().values().next().unwrap().outcome,
            "done"
        );
    }

    #[test]
    fn a_final_result_is_kept_when_inputs_are_removed_until_finalize_says_otherwise() {
        let Fixture {
            _dir,
            data,
            export,
            out,
            clock,
        } = Fixture::new();
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        copy_tree(&data.join("nm_multiframe_rescale"), &export.join("b"));
        let rec = Recorder::new(1.0, false);
        let mut cfg = Config::default();
        cfg.appliance.quiet_period_s = 10.0;
        cfg.appliance.expected_timepoints = 2;
        let status = Arc::new(StatusPort::new(Sink::Log, &out));
        let mut app = Appliance::new(
            &export,
            &out,
            cfg.appliance,
            cfg.ingest,
            rec.clone(),
            status,
            Arc::new(clock.clone()),
        )
        .unwrap();
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        let r = records(&out).unwrap().into_values().next().unwrap();
        assert_eq!((r.summary_status.as_str(), r.timepoints), ("final", 2));
        // One time point's SPECT is deleted: after the quiet period the box keeps
        // the final result and says so.
        std::fs::remove_dir_all(export.join("b")).unwrap();
        app.step().unwrap();
        clock.advance(11.0);
        assert_eq!(app.step().unwrap(), 0, "a final result is not downgraded");
        assert_eq!(rec.jobs.lock().unwrap().len(), 1);
        let r = records(&out).unwrap().into_values().next().unwrap();
        assert_eq!((r.summary_status.as_str(), r.timepoints), ("final", 2));
        assert!(r.held.contains("removed or changed"), "{}", r.held);
        assert!(app.status.get().last_event.contains("held"));
        // The explicit command: recompute with what is there.
        let store = StateStore::open(&out).unwrap();
        let mut r2 = r.clone();
        r2.finalize_requested = true;
        r2.recompute_requested = true;
        store.put(&r2).unwrap();
        assert_eq!(app.step().unwrap(), 1);
        app.wait_idle();
        let r = records(&out).unwrap().into_values().next().unwrap();
        assert_eq!((r.summary_status.as_str(), r.timepoints), ("final", 1));
        assert!(r.held.is_empty() && !r.recompute_requested);
    }
}
