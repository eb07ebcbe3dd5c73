//! The soak of the appliance (issue 20, Deliver 5), shared by the bench
//! (`cargo bench --bench soak`, 100 patients) and the CI test
//! (tests/it/appliance_soak.rs, a few patients): small phantom patients arrive in
//! random order, visit by visit (diagnostic CT, then each time point's LDCT +
//! SPECT, files shuffled and renamed), among junk and half-written files, while
//! the `watch` process is killed with SIGKILL at random moments and restarted.
//! At the end every cycle must exist once, be final, and its dose_summary.json
//! be byte-identical to a one-shot `organdose run --truth` of the patient.
#![allow(dead_code)]

use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{Format, Patient, PhantomConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SoakOptions {
    pub patients: usize,
    pub kills: usize,
    pub seed: u64,
    /// appliance.quiet_period_s of the box under test.
    pub quiet_s: f64,
    /// appliance.poll_interval_s.
    pub poll_s: f64,
    /// Seconds the idle box is measured for at the end.
    pub idle_measure_s: f64,
}

#[derive(Debug, Default)]
pub struct SoakReport {
    pub patients: usize,
    pub kills: usize,
    /// Kills that landed while the box said it was running a job.
    pub kills_during_job: usize,
    pub jobs_started: usize,
    pub cycles: usize,
    pub final_identical: usize,
    pub problems: Vec<String>,
    pub junk_files: usize,
    pub half_written: usize,
    pub wall_s: f64,
    pub idle_cpu_percent: f64,
    pub peak_rss_mb: f64,
}

/// xorshift64: repeatable without a dependency.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// 0 for the diagnostic CT, 1..=4 for the time point a series folder belongs to.
fn visit_of(name: &str) -> usize {
    ["0.5h", "6h", "24h", "72h"]
        .iter()
        .position(|t| name.ends_with(&format!("_{t}")))
        .map(|v| v + 1)
        .unwrap_or(0)
}

fn files_of_visit(patient_dir: &Path, visit: usize) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(patient_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with("truth"))
        .collect();
    dirs.sort();
    for d in dirs {
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        if visit_of(&name) != visit {
            continue;
        }
        let mut fs: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        fs.sort();
        out.extend(fs.into_iter().map(|f| (name.clone(), f)));
    }
    out
}

pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Peak resident set (VmHWM) of a process so far, MB.
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

struct Box_ {
    child: Child,
}

fn spawn_box(
    bin: &Path,
    cfg: &Path,
    export: &Path,
    out: &Path,
    truth: &Path,
    events: &Path,
) -> Box_ {
    let child = Command::new(bin)
        .arg("--config")
        .arg(cfg)
        .arg("watch")
        .arg("--in")
        .arg(export)
        .arg("--out")
        .arg(out)
        .arg("--truth-root")
        .arg(truth)
        .arg("--status")
        .arg(format!("file:{}", events.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start organdose watch");
    Box_ { child }
}

impl Box_ {
    fn kill(mut self) -> f64 {
        let rss = peak_rss_mb(self.child.id());
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        rss
    }
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    let Ok(rd) = std::fs::read_dir(out.join("state")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Runs the soak in `work` with the organdose binary `bin`.
pub fn run_soak(bin: &Path, work: &Path, o: &SoakOptions) -> SoakReport {
    let t0 = Instant::now();
    let mut rng = Rng::new(o.seed);
    let staging = work.join("staging");
    let (export, out, refs) = (
        work.join("export"),
        work.join("out"),
        work.join("reference"),
    );
    std::fs::create_dir_all(&export).unwrap();
    let cfg = work.join("box.toml");
    std::fs::write(
        &cfg,
        format!(
            "[appliance]\nquiet_period_s = {}\npoll_interval_s = {}\nheartbeat_s = 5\nretry_initial_s = 1\n",
            o.quiet_s, o.poll_s
        ),
    )
    .unwrap();
    let mut report = SoakReport {
        patients: o.patients,
        kills: o.kills,
        ..Default::default()
    };

    // Patients and their one-shot reference results.
    let mut patients = Vec::new();
    for i in 0..o.patients {
        let p = Patient::new(&PhantomConfig::small(), o.seed * 1000 + i as u64, 0);
        let w = write_patient(
            &p,
            &staging,
            &WriteOptions {
                format: Format::Dicom,
                preview: None,
            },
        )
        .unwrap();
        let pid = w
            .patient_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let r = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .arg(&w.patient_dir)
            .arg("--truth")
            .arg("-o")
            .arg(refs.join(&pid))
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        patients.push((pid, w.patient_dir));
    }
    eprintln!(
        "soak: {} patients and references in {:.0} s",
        o.patients,
        t0.elapsed().as_secs_f64()
    );

    // Arrival order: each patient's visits in order, patients interleaved at random.
    let mut next_visit = vec![0usize; patients.len()];
    let mut drops = Vec::new();
    while drops.len() < patients.len() * 5 {
        let i = rng.below(patients.len());
        if next_visit[i] <= 4 {
            drops.push((i, next_visit[i]));
            next_visit[i] += 1;
        }
    }
    let mut kill_at: Vec<usize> = (0..o.kills).map(|_| rng.below(drops.len())).collect();
    kill_at.sort();

    let events = work.join("events.log");
    let mut the_box = spawn_box(bin, &cfg, &export, &out, &staging, &events);
    let mut peak_rss = 0f64;
    for (n, &(i, visit)) in drops.iter().enumerate() {
        let (pid, dir) = &patients[i];
        let mut files = files_of_visit(dir, visit);
        rng.shuffle(&mut files);
        let dst_dir = export.join(format!("{pid}_v{visit}"));
        std::fs::create_dir_all(&dst_dir).unwrap();
        for (k, (name, f)) in files.iter().enumerate() {
            let dst = dst_dir.join(format!("{name}_{k:04}.dcm"));
            if rng.below(40) == 0 {
                // A file still being written: half now, the rest well within the
                // quiet period (a writer that stalls longer is a new file later).
                let bytes = std::fs::read(f).unwrap();
                std::fs::write(&dst, &bytes[..bytes.len() / 2]).unwrap();
                std::thread::sleep(Duration::from_secs_f64(o.quiet_s * 0.2));
                std::fs::write(&dst, &bytes).unwrap();
                report.half_written += 1;
            } else {
                std::fs::copy(f, &dst).unwrap();
            }
        }
        if rng.below(4) == 0 {
            // Junk beside the images: text, or a DICOM cut after its magic.
            let j = export.join(format!(
                "junk_{n}.{}",
                if n % 2 == 0 { "txt" } else { "dcm" }
            ));
            if n % 2 == 0 {
                std::fs::write(&j, "console log line\n").unwrap();
            } else {
                let b = std::fs::read(&files[0].1).unwrap();
                std::fs::write(&j, &b[..132.min(b.len())]).unwrap();
            }
            report.junk_files += 1;
        }
        // Mostly the next visit follows at once (files closer together than the
        // quiet period keep every series waiting); one time in four the folder
        // settles and jobs run, so kills also land during jobs.
        let pause = if rng.below(4) == 0 {
            1.5 * o.quiet_s + 2.0
        } else {
            rng.unit() * o.quiet_s
        };
        std::thread::sleep(Duration::from_secs_f64(pause));
        while kill_at.first() == Some(&n) {
            kill_at.remove(0);
            // A random moment: between files settling, during a job, or idle.
            std::thread::sleep(Duration::from_secs_f64(rng.unit() * 3.0 * o.quiet_s));
            let busy = std::fs::read_to_string(out.join("status.json"))
                .is_ok_and(|t| t.contains("\"state\": \"busy\""));
            report.kills_during_job += busy as usize;
            peak_rss = peak_rss.max(the_box.kill());
            the_box = spawn_box(bin, &cfg, &export, &out, &staging, &events);
        }
    }

    // Until every patient's cycle is final and the box has nothing left to do.
    let deadline = Instant::now() + Duration::from_secs(120 + 30 * o.patients as u64);
    let mut calm = 0;
    loop {
        let recs = records(&out);
        // Final, or held back by a plausibility gate exactly as `organdose run`
        // holds it (the byte comparison below checks that).
        let finals = recs
            .iter()
            .filter(|r| {
                r["outcome"] == "done"
                    && (r["summary_status"] == "final" || r["summary_status"] == "needs_review")
            })
            .count();
        let snap: serde_json::Value = std::fs::read(out.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let idle = snap["state"] == "idle" && snap["queue"] == 0 && snap["pending_files"] == 0;
        calm = if finals >= patients.len() && idle {
            calm + 1
        } else {
            0
        };
        if calm >= 3 {
            break;
        }
        if Instant::now() > deadline {
            report.problems.push(format!(
                "timed out: {finals} of {} cycles final, status {snap}",
                patients.len()
            ));
            break;
        }
        std::thread::sleep(Duration::from_secs_f64(o.poll_s.max(0.5)));
    }

    // Idle CPU with every patient in the export folder.
    let pid = the_box.child.id();
    if let Some(a) = cpu_ticks(pid) {
        std::thread::sleep(Duration::from_secs_f64(o.idle_measure_s));
        if let Some(b) = cpu_ticks(pid) {
            // Clock ticks are 1/100 s on Linux.
            report.idle_cpu_percent = (b - a) as f64 / o.idle_measure_s;
        }
    }
    peak_rss = peak_rss.max(the_box.kill());
    report.peak_rss_mb = peak_rss;

    // Nothing lost, nothing twice, every final summary as `organdose run` wrote it.
    let log = std::fs::read_to_string(&events).unwrap_or_default();
    report.jobs_started = log.matches(" start (").count();
    let recs = records(&out);
    report.cycles = recs.len();
    let mut by_patient: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &recs {
        by_patient
            .entry(r["patient_id"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(r["id"].as_str().unwrap_or("").to_string());
    }
    for (pid, _) in &patients {
        let ids = by_patient.get(pid).cloned().unwrap_or_default();
        if ids.len() != 1 {
            report
                .problems
                .push(format!("patient {pid}: {} cycles {ids:?}", ids.len()));
            continue;
        }
        let got = std::fs::read(out.join(&ids[0]).join("dose_summary.json")).unwrap_or_default();
        let want = std::fs::read(refs.join(pid).join("dose_summary.json")).unwrap_or_default();
        if got == want && !got.is_empty() {
            report.final_identical += 1;
        } else {
            report.problems.push(format!(
                "patient {pid}: summary differs from `organdose run`"
            ));
        }
    }
    let folders: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| {
            !n.starts_with('.')
                && !["state", "quarantine", "status.json", "patients"].contains(&n.as_str())
        })
        .collect();
    // Each patient's treatment history, once (`OUT/patients/<ID>.json` and `.txt`).
    let histories = std::fs::read_dir(out.join("patients"))
        .map(|rd| rd.flatten().count())
        .unwrap_or(0);
    if histories != 2 * patients.len() {
        report.problems.push(format!(
            "{histories} files in OUT/patients for {} patients (a history .json and .txt each)",
            patients.len()
        ));
    }
    if folders.len() != patients.len() {
        report.problems.push(format!(
            "{} result folders for {} patients: {folders:?}",
            folders.len(),
            patients.len()
        ));
    }
    if let Ok(rd) = std::fs::read_dir(out.join("quarantine")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("cycle_") {
                let why = std::fs::read_to_string(e.path().join("reason.txt")).unwrap_or_default();
                report
                    .problems
                    .push(format!("quarantined cycle {n}: {why}"));
            }
        }
    }
    report.wall_s = t0.elapsed().as_secs_f64();
    report
}
