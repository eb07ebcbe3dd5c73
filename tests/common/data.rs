//! Third-party data the tests read in place (real anatomy, real CTs): one rule for
//! all of them, as `tools.rs` has for outside programs. Absent data skip with one
//! line saying how to get them on a developer's machine (so a fresh clone's `cargo
//! test` passes), and fail under `ORGANDOSE_REQUIRE_DATA=1` (set by `.ci/run`: CI has
//! the data, and there a test that silently skipped would hide a regression).
#![allow(dead_code)] // each test binary uses its own subset

use organdose::phantom::realdata::{self, DataPaths};
use std::path::PathBuf;

fn data_required() -> bool {
    std::env::var("ORGANDOSE_REQUIRE_DATA").is_ok_and(|v| v == "1")
}

fn missing(msg: String) {
    if data_required() {
        panic!("ORGANDOSE_REQUIRE_DATA=1 but {msg}");
    }
    eprintln!("SKIP: {msg}");
}

/// The real anatomy (WORD, ICRP-110, KiTS23, AMOS) from `ORGANDOSE_ANATOMY_DATA` or
/// `../shared/data`; `None` (after one SKIP line) when its sources are absent.
pub fn anatomy() -> Option<DataPaths> {
    let p = DataPaths::new(realdata::default_data_dir());
    match p.check() {
        Ok(()) => Some(p),
        Err(_) => {
            missing(format!(
                "real anatomy not found in {}; get it with {}",
                p.root.display(),
                realdata::FETCH_HINT
            ));
            None
        }
    }
}

/// The labelled real CTs (`real-ct/` of the same data folder: evaluation only,
/// kept beside the project, not fetched: several licences forbid redistribution).
pub fn real_ct() -> Option<PathBuf> {
    let p = realdata::default_data_dir().join("real-ct");
    if p.is_dir() {
        Some(p)
    } else {
        missing(format!(
            "real CTs not found in {} (evaluation data kept beside the project, not \
             fetched; the real anatomy comes with {})",
            p.display(),
            realdata::FETCH_HINT
        ));
        None
    }
}
