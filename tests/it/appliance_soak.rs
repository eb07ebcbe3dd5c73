//! The short soak (issue 20, Deliver 5): 3 small patients in random order among
//! junk and half-written files, the box killed with SIGKILL twice; every cycle
//! once, final, and byte-identical to `organdose run`. The long one is
//! `cargo bench --bench soak`.

use crate::common::soak;

#[test]
fn three_patients_two_kills_nothing_lost_or_doubled() {
    let work = tempfile::tempdir().unwrap();
    let opts = soak::SoakOptions {
        patients: 3,
        kills: 2,
        seed: 7,
        quiet_s: 1.0,
        poll_s: 0.5,
        idle_measure_s: 3.0,
    };
    let r = soak::run_soak(
        std::path::Path::new(env!("CARGO_BIN_EXE_organdose")),
        work.path(),
        &opts,
    );
    eprintln!("{r:?}");
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert_eq!((r.cycles, r.final_identical), (3, 3));
    assert!(
        r.idle_cpu_percent < 5.0,
        "idle box: {:.1} % of a core",
        r.idle_cpu_percent
    );
}
