//! Soak of the appliance (issue 20): small phantom patients arriving in random
//! order among junk and half-written files, the `watch` process killed with
//! SIGKILL at random moments; 0 cycles lost, 0 duplicated, every final summary
//! byte-identical to a one-shot `organdose run`; idle CPU and peak RSS printed.
//!
//!     cargo bench --bench soak -- [--patients 100] [--kills 10] [--seed 1]
//!
//! Exits non-zero when a check fails. The short version (3 patients, 2 kills)
//! is tests/it/appliance_soak.rs.

#[path = "../tests/common/soak.rs"]
mod soak;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let opts = soak::SoakOptions {
        patients: arg("--patients", 100) as usize,
        kills: arg("--kills", 10) as usize,
        seed: arg("--seed", 1),
        quiet_s: 2.0,
        poll_s: 1.0,
        idle_measure_s: 20.0,
    };
    let work = tempfile::tempdir().expect("temp dir");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_organdose"));
    let r = soak::run_soak(bin, work.path(), &opts);
    println!(
        "soak: {} patients, {} SIGKILLs ({} during a job), {} junk and {} half-written files",
        r.patients, r.kills, r.kills_during_job, r.junk_files, r.half_written
    );
    println!(
        "      {} jobs started, {} cycles, {} final summaries identical to `organdose run`",
        r.jobs_started, r.cycles, r.final_identical
    );
    println!("      idle CPU {:.2} % of a core with every patient in the export folder (poll every {} s)", r.idle_cpu_percent, opts.poll_s);
    println!(
        "      peak RSS {:.0} MB (largest of the box's processes), wall {:.0} s",
        r.peak_rss_mb, r.wall_s
    );
    for p in &r.problems {
        println!("PROBLEM: {p}");
    }
    if !r.problems.is_empty() {
        std::process::exit(1);
    }
}
