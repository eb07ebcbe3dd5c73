//! The fuzzer's command line (issue 20, deliver 4; see fuzz/harness.rs):
//!
//! ```sh
//! cargo run --release --example fuzz -- [--target dicom|nifti|study_json|serial|scp|all]
//!     [--seconds N] [--seed S] [--crashes DIR]
//! ```
//!
//! Runs each target for N seconds (default 60) from the seeds in fuzz/corpus/,
//! prints one line of figures per target and exits non-zero when any input
//! crashed or allocated above its budget (inputs and reasons in DIR, default
//! target/fuzz-crashes).

#[path = "../tests/common/alloc_meter.rs"]
mod alloc_meter;
mod harness;

use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static A: alloc_meter::AllocMeter = alloc_meter::AllocMeter;

fn main() {
    let mut targets: Vec<harness::Target> = harness::Target::ALL.to_vec();
    let mut seconds = 60.0f64;
    let mut seed = 1u64;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut crashes = root.join("target/fuzz-crashes");
    let mut replay: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--target" => {
                let v = val();
                targets = if v == "all" {
                    harness::Target::ALL.to_vec()
                } else {
                    match harness::Target::from_name(&v) {
                        Some(t) => vec![t],
                        None => {
                            eprintln!("unknown target {v} (dicom, nifti, study_json, serial, all)");
                            std::process::exit(2)
                        }
                    }
                }
            }
            "--seconds" => seconds = val().parse().unwrap_or(seconds),
            "--seed" => seed = val().parse().unwrap_or(seed),
            "--crashes" => crashes = PathBuf::from(val()),
            // Runs the targets once on these files (a crash's input) and stops.
            "--replay" => replay.push(PathBuf::from(val())),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2)
            }
        }
    }
    // A header trusted by a reader would ask for gigabytes: refuse (abort, the
    // input stays in the work folder) rather than take the machine's memory.
    alloc_meter::set_cap(2 << 30);
    if let Some(b) = std::env::var("FUZZ_TRACE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        alloc_meter::set_trace(b);
    }
    if !replay.is_empty() {
        for t in targets {
            for p in &replay {
                match harness::replay(t, p, &crashes) {
                    Ok(w) => println!("{} {}: {w}", t.name(), p.display()),
                    Err(w) => println!("{} {}: CRASH {w}", t.name(), p.display()),
                }
            }
        }
        return;
    }
    let mut bad = 0;
    for t in targets {
        let r = harness::run(
            t,
            Duration::from_secs_f64(seconds),
            seed,
            &root.join("fuzz/corpus"),
            &crashes,
        );
        println!("{r}");
        for c in &r.crashes {
            println!("  {c}");
        }
        bad += r.crashes.len();
    }
    if bad > 0 {
        std::process::exit(1);
    }
}
