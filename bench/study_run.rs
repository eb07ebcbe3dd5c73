//! Wall time and peak memory of `organdose run` on one full study: a 512x512x~400
//! diagnostic CT and 4 SPECT time points (with their low-dose CTs), as DICOM.
//! Prints a table; peak RSS must stay under appliance.memory_budget_mb.
//!
//!     cargo bench --bench study_run

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
    let dir = tempfile::tempdir().expect("temp dir");
    // 0.75 mm slices over the ~300 mm abdomen: about 400 CT slices.
    let cfg = PhantomConfig {
        ct_slice_mm: vec![0.75],
        ..PhantomConfig::default()
    };
    let t = Instant::now();
    let p = Patient::new(&cfg, 4242, 0);
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
    let budget = organdose::config::Config::default()
        .appliance
        .memory_budget_mb;
    let out = dir.path().join("out");
    let t = Instant::now();
    let mut child = std::process::Command::new(&bin)
        .arg("run")
        .arg(&w.patient_dir)
        .arg("--truth")
        .arg("-o")
        .arg(&out)
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
    assert!(status.success(), "organdose run failed");
    let g = &p.ct_geom;
    println!("| study | CT | SPECT | generate s | run wall s | peak RSS MB | budget MB |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {}x{}x{} | 4 x {}x{}x{} | {:.1} | {:.1} | {:.0} | {:.0} |",
        p.patient_id,
        g.dims[0],
        g.dims[1],
        g.dims[2],
        p.spect_geoms[0].dims[0],
        p.spect_geoms[0].dims[1],
        p.spect_geoms[0].dims[2],
        gen_s,
        run_s,
        peak,
        budget
    );
    if peak > budget {
        println!("PEAK RSS ABOVE THE BUDGET");
    }
}
