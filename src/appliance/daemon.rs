//! The appliance loop: poll the export folder, settle series, group them into
//! cycles, queue jobs (bounded crossbeam channel: back-pressure), run them in a
//! worker thread within the memory budget, record results, quarantine failures.

use super::clock::Clock;
use super::cycles::{group_cycles, CycleInput};
use super::ingest::{Ingest, SeriesState};
use super::quarantine::quarantine;
use super::state::{CycleRecord, StateStore};
use super::status::StatusPort;
use crate::config::{ApplianceConfig, IngestConfig};
use crate::error::Result;
use crate::pipeline::summary_status;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One unit of work: (re)compute the outputs of a cycle from its current series.
#[derive(Debug, Clone)]
pub struct Job {
    pub cycle: CycleInput,
    /// partial | provisional | final
    pub summary_status: String,
    pub signature: String,
    /// `OUT/<cycle id>/`
    pub out_dir: PathBuf,
}

/// Does the science for a job; the appliance only orchestrates.
pub trait Processor: Send + Sync {
    /// Memory the job will need, in MB, estimated before it starts.
    fn memory_need_mb(&self, job: &Job) -> f64;
    /// Runs the job; `progress(stage, fraction)` reports where it is.
    fn process(&self, job: &Job, progress: &dyn Fn(&str, f64)) -> Result<String>;
}

struct Done {
    id: String,
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
    quarantined: BTreeSet<String>,
    pub paused: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
    last_heartbeat_s: f64,
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
                .map_err(|e| crate::Error::input(format!("cannot start worker thread: {e}")))?
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
            quarantined: BTreeSet::new(),
            paused: Arc::new(AtomicBool::new(false)),
            worker: Some(worker),
            last_heartbeat_s: f64::NEG_INFINITY,
        })
    }

    /// One round: poll, settle, quarantine, queue. Returns the number of jobs queued.
    pub fn step(&mut self) -> Result<usize> {
        let now = self.clock.now_s();
        self.collect_done();
        self.ingest.poll(now);
        let mut ready = Vec::new();
        for st in self.ingest.settled_series(now, &self.ingest_cfg) {
            match st {
                SeriesState::Ready(s) => ready.push(s),
                SeriesState::Broken(s, why) => {
                    let sig = self.ingest.signature(&s);
                    let files: Vec<PathBuf> = s.files.iter().map(|h| h.path.clone()).collect();
                    self.quarantine_once(&format!("series_{}", s.uid), &files, &why, &sig);
                }
            }
        }
        for r in self.ingest.rejected() {
            let sig = format!("{}:{}", r.path.display(), r.size);
            let name = format!(
                "file_{}",
                r.path
                    .strip_prefix(self.ingest.root())
                    .unwrap_or(&r.path)
                    .display()
            );
            self.quarantine_once(&name, std::slice::from_ref(&r.path), &r.reason, &sig);
        }
        let (cycles, problems) = group_cycles(&ready);
        for (s, why) in problems {
            let sig = self.ingest.signature(&s);
            let files: Vec<PathBuf> = s.files.iter().map(|h| h.path.clone()).collect();
            self.quarantine_once(&format!("series_{}", s.uid), &files, &why, &sig);
        }
        let mut queued = 0;
        if !self.paused.load(Ordering::SeqCst) {
            for c in cycles {
                if self.in_flight.contains(&c.id) {
                    continue;
                }
                let record = self.store.get(&c.id)?;
                let finalize = record.as_ref().is_some_and(|r| r.finalize_requested);
                let status = summary_status(c.timepoints, self.cfg.expected_timepoints, finalize);
                let mut sigs: Vec<String> =
                    c.series.iter().map(|s| self.ingest.signature(s)).collect();
                sigs.sort();
                let signature = format!("{status}#{}", sigs.join("#"));
                if record.as_ref().is_some_and(|r| r.signature == signature) {
                    continue;
                }
                let job = Job {
                    out_dir: self.out_dir.join(&c.id),
                    summary_status: status.to_string(),
                    signature,
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
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        return Err(crate::Error::input("worker thread stopped"));
                    }
                }
            }
        }
        let paused = self.paused.load(Ordering::SeqCst);
        let pending = self.ingest.pending_files();
        let qlen = self.tx.as_ref().map(|t| t.len()).unwrap_or(0);
        self.status.update(|s| {
            s.queue = qlen;
            s.pending_files = pending;
            s.time_s = now;
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
        Ok(queued)
    }

    fn quarantine_once(&mut self, name: &str, files: &[PathBuf], why: &str, sig: &str) {
        let key = format!("{name}#{sig}");
        if self.quarantined.contains(&key) {
            return;
        }
        match quarantine(&self.out_dir, name, self.ingest.root(), files, why, sig) {
            Ok(dir) => {
                self.status
                    .event(&format!("quarantine {} reason=\"{why}\"", dir.display()));
                self.quarantined.insert(key);
            }
            Err(e) => tracing::error!("quarantine of {name} failed: {e}"),
        }
    }

    fn collect_done(&mut self) {
        while let Ok(d) = self.done_rx.try_recv() {
            self.in_flight.remove(&d.id);
        }
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
                Ok(d) => {
                    self.in_flight.remove(&d.id);
                }
                Err(_) => break,
            }
        }
    }

    /// Runs until `stop` is set: a round every poll interval, sooner when the
    /// file system reports a change.
    pub fn run(&mut self, stop: Arc<AtomicBool>) -> Result<()> {
        let (wake_tx, wake_rx) = bounded::<()>(1);
        let _watcher = start_notify(self.ingest.root(), wake_tx);
        self.status.event(&format!(
            "watching {} (quiet period {} s, budget {} MB)",
            self.ingest.root().display(),
            self.cfg.quiet_period_s,
            self.cfg.memory_budget_mb
        ));
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = self.step() {
                self.status.event(&format!("error {e}"));
            }
            let _ = wake_rx.recv_timeout(std::time::Duration::from_secs_f64(
                self.cfg.poll_interval_s.max(0.05),
            ));
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
fn start_notify(root: &Path, wake: Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut w = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = wake.try_send(());
    })
    .map_err(|e| tracing::warn!("file notifications unavailable ({e}); polling only"))
    .ok()?;
    if let Err(e) = w.watch(root, RecursiveMode::Recursive) {
        tracing::warn!("cannot watch {} ({e}); polling only", root.display());
        return None;
    }
    Some(w)
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
        let result = if need > budget_mb {
            Err(crate::Error::input(format!(
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
                Err(_) => Err(crate::Error::input(
                    "internal error (panic) while processing",
                )),
            }
        };
        let prev = store.get(&id).ok().flatten();
        let finalize_requested = prev.map(|p| p.finalize_requested).unwrap_or(false);
        let record = match result {
            Ok(msg) => {
                status.update(|s| s.jobs_done += 1);
                status.event(&format!("job {id} done: {} {msg}", job.summary_status));
                CycleRecord {
                    id: id.clone(),
                    patient_id: job.cycle.patient_id.clone(),
                    injection: job.cycle.injection.clone(),
                    signature: job.signature.clone(),
                    outcome: "done".into(),
                    summary_status: job.summary_status.clone(),
                    timepoints: job.cycle.timepoints,
                    message: msg,
                    finalize_requested,
                }
            }
            Err(e) => {
                status.update(|s| s.jobs_failed += 1);
                let why = e.to_string();
                status.event(&format!("job {id} failed: {why}"));
                let files: Vec<PathBuf> = job
                    .cycle
                    .series
                    .iter()
                    .flat_map(|s| s.files.iter().map(|h| h.path.clone()))
                    .collect();
                if let Err(q) = quarantine(
                    out,
                    &format!("cycle_{id}"),
                    export,
                    &files,
                    &why,
                    &job.signature,
                ) {
                    tracing::error!("quarantine of {id} failed: {q}");
                }
                CycleRecord {
                    id: id.clone(),
                    patient_id: job.cycle.patient_id.clone(),
                    injection: job.cycle.injection.clone(),
                    signature: job.signature.clone(),
                    outcome: "failed".into(),
                    summary_status: String::new(),
                    timepoints: job.cycle.timepoints,
                    message: why,
                    finalize_requested,
                }
            }
        };
        if let Err(e) = store.put(&record) {
            tracing::error!("state record for {id}: {e}");
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
        let _ = done.send(Done { id });
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
    use crate::appliance::clock::ManualClock;
    use crate::appliance::status::Sink;
    use crate::config::Config;
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
        fn process(&self, job: &Job, progress: &dyn Fn(&str, f64)) -> Result<String> {
            progress("record", 0.5);
            if self.fail {
                return Err(crate::Error::input("test processor refuses"));
            }
            self.jobs.lock().unwrap().push((
                job.cycle.id.clone(),
                job.summary_status.clone(),
                job.cycle.series.len(),
            ));
            std::fs::create_dir_all(&job.out_dir).unwrap();
            std::fs::write(job.out_dir.join("out.txt"), &job.signature).unwrap();
            Ok(String::new())
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
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated");
        let dir = tempfile::tempdir().unwrap();
        let (export, out) = (dir.path().join("export"), dir.path().join("out"));
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        let clock = ManualClock::default();
        let rec = Arc::new(Recorder {
            jobs: Mutex::new(vec![]),
            need_mb: 1.0,
            fail: false,
        });
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
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated");
        let dir = tempfile::tempdir().unwrap();
        let (export, out) = (dir.path().join("export"), dir.path().join("out"));
        copy_tree(&data.join("nm_multiframe_rwv"), &export.join("a"));
        std::fs::copy(data.join("bad/not_dicom.dcm"), export.join("junk.dcm")).unwrap();
        let clock = ManualClock::default();
        let big = Arc::new(Recorder {
            jobs: Mutex::new(vec![]),
            need_mb: 1e6,
            fail: false,
        });
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
}
