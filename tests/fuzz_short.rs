//! The CI share of the fuzzer (issue 20, deliver 4): every target for a few
//! seconds from the corpus in fuzz/corpus; no panic, no broken property, no
//! allocation above the budget. The long runs: `cargo run --release --example
//! fuzz -- --seconds 3600` (figures in docs/log/fuzz.md).

#[path = "common/alloc_meter.rs"]
mod alloc_meter;
#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;
use std::time::Duration;

#[global_allocator]
static A: alloc_meter::AllocMeter = alloc_meter::AllocMeter;

/// Seconds per target; FUZZ_SECONDS overrides (the CI default keeps the whole
/// test near half a minute: CI time is tight; the long runs are separate).
fn seconds() -> f64 {
    std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6.0)
}

#[test]
fn every_target_survives_a_short_run() {
    alloc_meter::set_cap(1 << 30);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crashes = tempfile::tempdir().expect("tempdir");
    let mut failed = Vec::new();
    for t in harness::Target::ALL {
        let r = harness::run(
            t,
            Duration::from_secs_f64(seconds()),
            2026,
            &root.join("fuzz/corpus"),
            crashes.path(),
        );
        eprintln!("{r}");
        assert!(r.seeds > 0, "{}: no seeds in fuzz/corpus", r.target);
        failed.extend(r.crashes);
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Inputs the fuzzer found crashing (fuzz/regressions/<target>/), each fixed:
/// they must stay fixed.
#[test]
fn found_crashes_stay_fixed() {
    alloc_meter::set_cap(1 << 30);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let work = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    let mut failed = Vec::new();
    for t in harness::Target::ALL {
        let Ok(rd) = std::fs::read_dir(root.join(t.name())) else {
            continue;
        };
        for e in rd.flatten() {
            n += 1;
            if let Err(why) = harness::replay(t, &e.path(), work.path()) {
                failed.push(format!("{}: {why}", e.path().display()));
            }
        }
    }
    assert!(n > 0, "no regression inputs in {}", root.display());
    assert!(failed.is_empty(), "{failed:#?}");
}
