//! Outside tools the DICOM tests check against (dciodvfy, dcm2niix, dcmtk,
//! Orthanc, pydicom/highdicom): one rule for all of them. A missing tool skips
//! with a message on a developer's machine and fails under
//! `ORGANDOSE_REQUIRE_TOOLS=1` (set by `.ci/run`, which installs them pinned).
#![allow(dead_code)] // each test binary uses its own subset

use std::process::Command;

fn tools_required() -> bool {
    std::env::var("ORGANDOSE_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// True when `cmd` runs successfully; otherwise false with a message (`readme`:
/// the section of README.md or docs/ that says how to install it), or a panic when the tools
/// are required.
pub fn have(what: &str, readme: &str, cmd: &mut Command) -> bool {
    let ok = cmd.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        if tools_required() {
            panic!("ORGANDOSE_REQUIRE_TOOLS=1 but {what} is not available");
        }
        eprintln!("SKIP: {what} not available (.ci/run installs it; see \"{readme}\" in README.md or docs/)");
    }
    ok
}

/// [`have`] for a program on PATH (some tools, dciodvfy among them, exit
/// non-zero when run without arguments).
pub fn on_path(what: &str, readme: &str, exe: &str) -> bool {
    have(
        what,
        readme,
        Command::new("sh").args(["-c", &format!("command -v {exe}")]),
    )
}

/// python3 with the pinned pydicom, highdicom and numpy
/// (`tests/scripts/requirements-dicom-out.txt`).
pub fn python_dicom(readme: &str) -> bool {
    have(
        "python3 with pydicom, highdicom, numpy (pip install, see .ci/run)",
        readme,
        Command::new("python3").args(["-c", "import pydicom, highdicom, numpy"]),
    )
}

/// A small phantom patient (`PhantomConfig::small`) written as DICOM under
/// `dir`; returns its patient folder.
pub fn small_dicom_phantom(dir: &std::path::Path, seed: u64) -> std::path::PathBuf {
    use organdose::phantom::layout::{write_patient, WriteOptions};
    use organdose::phantom::{Format, Patient, PhantomConfig};
    let p = Patient::new(&PhantomConfig::small(), seed, 0);
    write_patient(
        &p,
        dir,
        &WriteOptions {
            format: Format::Dicom,
            preview: None,
        },
    )
    .expect("write the phantom patient")
    .patient_dir
}
