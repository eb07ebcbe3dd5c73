//! What many integration tests set up: the binary, small phantom patients,
//! copies of folders, a free port, the box's configuration file.

use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{Format, Patient, PhantomConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `organdose` binary cargo built for the tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_organdose");

/// `organdose` with the caller's RUST_LOG removed, so what it logs is what the
/// configuration says.
pub fn organdose() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("RUST_LOG");
    c
}

/// A small phantom patient (seed `seed`) written under `dir`; its folder.
pub fn phantom(dir: &Path, seed: u64, format: Format) -> PathBuf {
    let p = Patient::new(&PhantomConfig::small(), seed, 0);
    write_patient(
        &p,
        dir,
        &WriteOptions {
            format,
            preview: None,
        },
    )
    .unwrap()
    .patient_dir
}

/// The series folders of a phantom patient (not its truth), sorted.
pub fn series_dirs(patient_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(patient_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with("truth"))
        .collect();
    v.sort();
    v
}

/// Copies the tree `src` into `dst` (created), hidden files included.
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let d = dst.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &d);
        } else {
            std::fs::copy(&p, &d).unwrap();
        }
    }
}

/// Every file under `dir`, hidden ones (the SCP's incoming folder) included, sorted.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A text file's content, or "" while it does not exist (yet).
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A port above 1024 nobody listens on right now.
pub fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p > 1024 {
            return p;
        }
    }
}

/// `box.toml` in `dir` for a box under test: one-second quiet period, poll and
/// heartbeat, then `extra` (more TOML).
pub fn box_config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("box.toml");
    std::fs::write(
        &p,
        format!("[appliance]\nquiet_period_s = 1\npoll_interval_s = 1\nheartbeat_s = 1\n{extra}"),
    )
    .unwrap();
    p
}
