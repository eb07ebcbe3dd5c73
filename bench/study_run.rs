//! Wall time and peak memory of `organdose run` on whole phantom studies as
//! DICOM, network masks (the shipped weights, default configuration): the
//! study `organdose bench --seed 8` times stage by stage, and one with a
//! 512 x 512 x ~400 diagnostic CT (0.75 mm slices). Each row also gives the
//! memory the appliance estimates before it admits the job
//! (`pipeline::memory_need_mb` + `processor::network_need_mb`) against
//! `appliance.memory_budget_mb`.
//!
//!     cargo build --release && cargo bench --bench study_run
//!
//! `STUDY_RUN_TRUTH=1` uses the phantom's truth masks instead (no network).

use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{Format, Patient, PhantomConfig};
use std::time::Instant;

/// Peak resident set (VmHWM) of a running process, MB.
fn vm_hwm_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/organdose");
    if !bin.is_file() {
        eprintln!("build the release binary first: cargo build --release");
        std::process::exit(2);
    }
    let truth = std::env::var_os("STUDY_RUN_TRUTH").is_some_and(|v| v == "1");
    let weights = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/organs");
    let budget = organdose::config::Config::default()
        .appliance
        .memory_budget_mb;
    println!(
        "masks: {}",
        if truth {
            "truth"
        } else {
            "network (shipped weights)"
        }
    );
    println!(
        "| study | CT | SPECT | generate s | run wall s | peak RSS MB | estimate MB | budget MB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let studies = [
        ("bench (seed 8)", PhantomConfig::default(), 8),
        (
            "0.75 mm CT",
            // 0.75 mm slices over the ~300 mm abdomen: about 400 CT slices.
            PhantomConfig {
                ct_slice_mm: vec![0.75],
                ..PhantomConfig::default()
            },
            4242,
        ),
    ];
    for (what, cfg, seed) in studies {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = Instant::now();
        let p = Patient::new(&cfg, seed, 0);
        let w = write_patient(
            &p,
            dir.path(),
            &WriteOptions {
                format: Format::Dicom,
                preview: None,
            },
        )
        .expect("phantom");
        let gen_s = t.elapsed().as_secs_f64();
        let estimate = organdose::study::load_study(&w.patient_dir)
            .map(|s| organdose::pipeline::memory_need_mb(&s, !truth))
            .expect("study")
            + if truth {
                0.0
            } else {
                organdose::appliance::processor::network_need_mb(&weights)
            };
        let out = dir.path().join("out");
        let t = Instant::now();
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("run").arg(&w.patient_dir).arg("-o").arg(&out);
        if truth {
            cmd.arg("--truth");
        }
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn organdose");
        let mut peak: f64 = 0.0;
        let status = loop {
            if let Some(m) = vm_hwm_mb(child.id()) {
                peak = peak.max(m);
            }
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let run_s = t.elapsed().as_secs_f64();
        assert!(status.success(), "organdose run failed on {what}");
        let g = &p.ct_geom;
        let s = &p.spect_geoms[0];
        println!(
            "| {what} {} | {}x{}x{} | {} x {}x{}x{} | {gen_s:.1} | {run_s:.1} | {peak:.0} | {estimate:.0} | {budget:.0} |",
            p.patient_id,
            g.dims[0],
            g.dims[1],
            g.dims[2],
            p.spect_geoms.len(),
            s.dims[0],
            s.dims[1],
            s.dims[2],
        );
        if peak > budget {
            println!("PEAK RSS ABOVE THE BUDGET");
        }
        if peak > estimate {
            println!("peak RSS above the admission estimate (pipeline::memory_need_mb)");
        }
    }
}
