//! `organdose self-check` on a good setup (every check `ok` or `skip`, exit 0) and
//! with each check made to fail once: a missing export folder, an unwritable
//! output folder, a damaged copy of the weights, a disk and a memory below what is
//! asked, a serial port that is not there, a DICOM port already bound, and a
//! configuration that does not parse.

use crate::common::fixtures::free_port;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Setup {
    root: PathBuf,
    input: PathBuf,
    out: PathBuf,
    config: PathBuf,
}

fn setup(name: &str) -> Setup {
    let root = std::env::temp_dir().join(format!(
        "organdose-self-check-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&root);
    let input = root.join("export");
    let out = root.join("out");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let config = root.join("organdose.toml");
    // A budget any test machine has, so that only what a test breaks fails.
    std::fs::write(&config, "[appliance]\nmemory_budget_mb = 64.0\n").unwrap();
    Setup {
        root,
        input,
        out,
        config,
    }
}

/// (exit success, stdout) of `organdose --config C self-check --in I --out O ARGS`.
fn self_check(s: &Setup, extra: &[&str]) -> (bool, String) {
    // 1 MB of disk unless the test asks for more: only what a test breaks fails.
    let disk: &[&str] = if extra.contains(&"--min-free-disk-mb") {
        &[]
    } else {
        &["--min-free-disk-mb", "1"]
    };
    let o = Command::new(env!("CARGO_BIN_EXE_organdose"))
        .arg("--config")
        .arg(&s.config)
        .arg("self-check")
        .arg("--in")
        .arg(&s.input)
        .arg("--out")
        .arg(&s.out)
        .args(disk)
        .args(extra)
        .output()
        .expect("run organdose");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    (o.status.success(), out)
}

/// The line of check `name` starts with `tag`.
fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.get(4..)
                .is_some_and(|r| r.trim_start().starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no {name} line in\n{out}"))
}

fn assert_tag(out: &str, name: &str, tag: &str) {
    let l = line(out, name);
    assert!(l.starts_with(tag), "{name}: expected {tag}: {l}\n{out}");
}

fn weights_copy(s: &Setup) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/organs");
    let dst = s.root.join("weights");
    std::fs::create_dir_all(&dst).unwrap();
    for f in [
        "model.toml",
        "manifest.json",
        "model.safetensors",
        "kidney_refine.safetensors",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

#[test]
fn a_good_setup_passes_every_check() {
    let s = setup("good");
    let port = free_port().to_string();
    let (ok, out) = self_check(&s, &["--dicom-bind", "127.0.0.1", "--dicom-port", &port]);
    assert!(ok, "{out}");
    for name in [
        "config",
        "export folder",
        "output folder",
        "weights",
        "disk",
        "dicom port",
    ] {
        assert_tag(&out, name, "ok");
    }
    assert!(
        line(&out, "weights").contains("matches its manifest"),
        "{out}"
    );
    // The SCP writes into the export folder: then it is checked for writing.
    assert!(line(&out, "export folder").contains("writable"), "{out}");
    assert_tag(&out, "status port", "skip");
    assert!(!out.lines().any(|l| l.starts_with("FAIL")), "{out}");
    assert!(
        out.contains("self-check: ") && out.contains(" 0 FAIL"),
        "{out}"
    );
    // No probe file is left behind.
    assert_eq!(std::fs::read_dir(&s.out).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&s.root);
}

#[test]
fn an_unwritable_output_folder_fails() {
    let s = setup("ro");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&s.out, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root writes through the mode bits: then a folder no one can write to.
    let probe = s.out.join("probe");
    let out_dir = if std::fs::write(&probe, b"x").is_ok() {
        let _ = std::fs::remove_file(&probe);
        PathBuf::from("/proc/self")
    } else {
        s.out.clone()
    };
    let s2 = Setup {
        out: out_dir,
        ..setup("ro2")
    };
    let (ok, out) = self_check(&s2, &[]);
    assert!(!ok, "{out}");
    assert_tag(&out, "output folder", "FAIL");
    assert!(
        line(&out, "output folder").contains("not writable"),
        "{out}"
    );
    std::fs::set_permissions(&s.out, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _ = std::fs::remove_dir_all(&s.root);
    let _ = std::fs::remove_dir_all(&s2.root);
}

#[test]
fn a_missing_export_folder_fails() {
    let s = setup("noin");
    std::fs::remove_dir(&s.input).unwrap();
    let (ok, out) = self_check(&s, &[]);
    assert!(!ok, "{out}");
    assert_tag(&out, "export folder", "FAIL");
    assert!(line(&out, "export folder").contains("missing"), "{out}");
    let _ = std::fs::remove_dir_all(&s.root);
}

#[test]
fn a_damaged_weights_copy_fails_its_sha256() {
    let s = setup("weights");
    let w = weights_copy(&s);
    let (ok, out) = self_check(&s, &["--weights", w.to_str().unwrap()]);
    assert!(ok, "the intact copy passes: {out}");
    let f = w.join("model.safetensors");
    let mut b = std::fs::read(&f).unwrap();
    let n = b.len();
    b[n - 1] ^= 0xff;
    std::fs::write(&f, b).unwrap();
    let (ok, out) = self_check(&s, &["--weights", w.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert_tag(&out, "weights", "FAIL");
    assert!(line(&out, "weights").contains("does not match"), "{out}");
    // The kidney stage's file is checked against its manifest entry too.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/organs/model.safetensors"),
        &f,
    )
    .unwrap();
    let (ok, out) = self_check(&s, &["--weights", w.to_str().unwrap()]);
    assert!(ok, "restored: {out}");
    let k = w.join("kidney_refine.safetensors");
    let mut b = std::fs::read(&k).unwrap();
    b[100] ^= 0xff;
    std::fs::write(&k, b).unwrap();
    let (ok, out) = self_check(&s, &["--weights", w.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        line(&out, "weights").contains("kidney_refine.safetensors")
            && line(&out, "weights").contains("does not match"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&s.root);
}

#[test]
fn a_bound_dicom_port_fails() {
    let s = setup("port");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (ok, out) = self_check(&s, &["--dicom-bind", "127.0.0.1", "--dicom-port", &port]);
    assert!(!ok, "{out}");
    assert_tag(&out, "dicom port", "FAIL");
    drop(taken);
    let _ = std::fs::remove_dir_all(&s.root);
}

#[test]
fn a_missing_serial_port_fails() {
    let s = setup("serial");
    let (ok, out) = self_check(&s, &["--status", "serial:/nonexistent/ttyUSB9"]);
    assert!(!ok, "{out}");
    assert_tag(&out, "status port", "FAIL");
    assert!(
        line(&out, "status port").contains("/nonexistent/ttyUSB9"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&s.root);
}

#[test]
fn too_little_disk_or_memory_fails() {
    let s = setup("budget");
    let (ok, out) = self_check(&s, &["--min-free-disk-mb", "1e12"]);
    assert!(!ok, "{out}");
    assert_tag(&out, "disk", "FAIL");
    if Path::new("/proc/meminfo").is_file() {
        std::fs::write(&s.config, "[appliance]\nmemory_budget_mb = 1048576.0\n").unwrap();
        let (ok, out) = self_check(&s, &[]);
        assert!(!ok, "{out}");
        assert_tag(&out, "memory", "FAIL");
        assert!(line(&out, "memory").contains("memory_budget_mb"), "{out}");
    }
    let _ = std::fs::remove_dir_all(&s.root);
}

#[test]
fn a_configuration_that_does_not_parse_fails() {
    let s = setup("config");
    std::fs::write(&s.config, "[appliance\nmemory_budget_mb = \n").unwrap();
    let (ok, out) = self_check(&s, &[]);
    assert!(!ok, "{out}");
    assert_tag(&out, "config", "FAIL");
    assert!(out.contains("self-check: 0 ok, 1 FAIL"), "{out}");
    let _ = std::fs::remove_dir_all(&s.root);
}
