//! `scripts/fetch-anatomy.sh` against a local mirror laid out from the data folder
//! (`file://`, never the network): every file of the manifest arrives
//! byte-identical and the generator's readers accept the folder; a mirror with one
//! damaged file fails its sha256 check and leaves nothing of that file behind; a
//! second run keeps what is already there.

use crate::common::data;
use crate::common::tools;

use organdose::phantom::realdata::DataPaths;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-anatomy.sh")
}

/// (path, sha256) of each manifest line (every alternative).
fn manifest() -> Vec<(String, String)> {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/anatomy-manifest.txt");
    let text = std::fs::read_to_string(&m).expect("manifest");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "manifest line {l:?}");
            (f[2].to_string(), f[1].to_string())
        })
        .collect()
}

fn fetch(base: &Path, dest: &Path) -> Output {
    Command::new("bash")
        .arg(script())
        .arg(dest)
        .env(
            "ORGANDOSE_ANATOMY_BASE_URL",
            format!("file://{}", base.display()),
        )
        .output()
        .expect("run fetch-anatomy.sh")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("organdose-fetch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A mirror of `root`'s manifest files, symlinked (no copy of 60 MB), except
/// `damaged`, copied with one byte changed.
fn mirror(root: &Path, at: &Path, damaged: Option<&str>) {
    // Symlinks resolve from where they are: the default root is relative.
    let root = &root.canonicalize().expect("data folder");
    for (path, _) in manifest() {
        let src = root.join(&path);
        if !src.is_file() {
            continue; // an alternative this data folder does not hold
        }
        let dst = at.join(&path);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        if damaged == Some(path.as_str()) {
            let mut b = std::fs::read(&src).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x55;
            std::fs::write(&dst, b).unwrap();
        } else if !dst.exists() {
            std::os::unix::fs::symlink(&src, &dst).unwrap();
        }
    }
}

fn have_curl() -> bool {
    tools::on_path("curl", "Quick start", "curl")
}

#[test]
fn fetch_from_a_local_mirror_is_byte_identical_and_readable() {
    let Some(d) = data::anatomy() else { return };
    if !have_curl() {
        return;
    }
    let m = tmp("mirror");
    mirror(&d.root, &m, None);
    let out = tmp("out");
    let o = fetch(&m, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "fetch failed: {stderr}");
    let mut n = 0;
    for (path, _) in manifest() {
        let src = d.root.join(&path);
        if !src.is_file() {
            continue;
        }
        let got = std::fs::read(out.join(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(got == std::fs::read(&src).unwrap(), "{path} differs");
        n += 1;
    }
    assert!(n >= 4, "only {n} files compared");
    // What the generator asks for is there, and no partial file is left.
    DataPaths::new(&out)
        .check()
        .expect("fetched folder is a data folder");
    assert_eq!(
        DataPaths::new(&out).kits_cases().len(),
        d.kits_cases().len()
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("ORGANDOSE_ANATOMY_DATA"), "{stdout}");
    // Run again: everything is kept, nothing fetched.
    let o = fetch(&m, &out);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains(" 0 fetched"));
    let _ = std::fs::remove_dir_all(&m);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_damaged_mirror_file_fails_its_sha256_and_is_not_kept() {
    let Some(d) = data::anatomy() else { return };
    if !have_curl() {
        return;
    }
    let damaged = "anatomy/amos/amos_0013_labels.nii.gz";
    assert!(
        manifest().iter().any(|(p, _)| p == damaged),
        "{damaged} must be in the manifest"
    );
    let m = tmp("bad-mirror");
    mirror(&d.root, &m, Some(damaged));
    let out = tmp("bad-out");
    let o = fetch(&m, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a damaged file must fail");
    assert!(
        stderr.contains("FAIL amos") && stderr.contains("sha256"),
        "{stderr}"
    );
    assert!(!out.join(damaged).exists());
    assert!(!out.join(format!("{damaged}.part")).exists());
    // The other files arrived and were checked.
    assert!(DataPaths::new(&out).check().is_ok());
    // An empty mirror: every group fails as unavailable.
    let empty = tmp("empty-mirror");
    let empty_out = tmp("empty-out");
    let o = fetch(&empty, &empty_out);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not available"));
    for p in [&m, &out, &empty, &empty_out] {
        let _ = std::fs::remove_dir_all(p);
    }
}
