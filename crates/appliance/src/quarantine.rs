//! Quarantine: what cannot be processed is copied (never moved: input files are
//! never modified or deleted) to `OUT/quarantine/<name>/` with a `reason.txt`.
//! A quarantine folder is complete or absent: files are copied into a staging
//! folder, flushed, the reason written, and the folder swapped in whole
//! ([`super::swap`]); a full disk leaves nothing behind but the error.

use super::swap;
use crate::error::{Error, FaultKind, Result};
use crate::io::write_bytes_atomically;
use std::path::{Path, PathBuf};

/// FNV-1a, 64 bit: a stable short tag for names (std's hasher may change between
/// Rust versions, and these names live on disk).
pub(super) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// File-system-safe folder name. Names that had to be changed get a tag of the
/// original, so two different inputs (`a/b.dcm`, `a_b.dcm`) never share a folder.
pub(crate) fn folder_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A leading dot would hide the folder (and collide with staging names).
    let safe = match safe.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => safe,
    };
    if safe == name {
        safe
    } else {
        format!("{safe}-{:08x}", fnv1a(name) as u32)
    }
}

/// Copies one file and flushes it to disk, naming the side that failed.
fn copy_synced(src: &Path, dst: &Path) -> Result<()> {
    let mut from = std::fs::File::open(src).map_err(|e| Error::io(src, e))?;
    let mut to = std::fs::File::create(dst).map_err(|e| Error::io(dst, e))?;
    std::io::copy(&mut from, &mut to).map_err(|e| Error::io(dst, e))?;
    to.sync_all().map_err(|e| Error::io(dst, e))
}

fn reason_text(reason: &str, fault: FaultKind, signature: &str) -> String {
    format!("{reason}\n\nfault: {fault}\nsignature: {signature}\n")
}

/// True when `name` already holds a quarantine copy with this reason and
/// signature (what [`quarantine`] would leave as it is).
pub(crate) fn is_quarantined(
    out_dir: &Path,
    name: &str,
    reason: &str,
    fault: FaultKind,
    signature: &str,
) -> bool {
    let reason_path = out_dir
        .join("quarantine")
        .join(folder_name(name))
        .join("reason.txt");
    std::fs::read_to_string(reason_path).ok() == Some(reason_text(reason, fault, signature))
}

/// Copies `files` (keeping their paths relative to `root`) and writes the reason.
/// Does nothing when the same name already holds the same reason and signature.
pub fn quarantine(
    out_dir: &Path,
    name: &str,
    root: &Path,
    files: &[PathBuf],
    reason: &str,
    fault: FaultKind,
    signature: &str,
) -> Result<PathBuf> {
    let dir = out_dir.join("quarantine").join(folder_name(name));
    if is_quarantined(out_dir, name, reason, fault, signature) {
        return Ok(dir);
    }
    let mut text = reason_text(reason, fault, signature);
    let staged = swap::staging(&dir)?;
    let result = (|| -> Result<()> {
        let mut gone = Vec::new();
        for f in files {
            let rel = f.strip_prefix(root).unwrap_or(f.as_path());
            let rel = if rel.is_absolute() {
                PathBuf::from(rel.file_name().unwrap_or_default())
            } else {
                rel.to_path_buf()
            };
            let dst = staged.join("files").join(rel);
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
            }
            match copy_synced(f, &dst) {
                Ok(()) => {}
                // Deleted from the export folder meanwhile: say so rather than fail.
                Err(Error::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => {
                    gone.push(f.display().to_string());
                }
                Err(e) => return Err(e),
            }
        }
        if !gone.is_empty() {
            text.push_str(&format!(
                "not copied (gone from the export folder): {}\n",
                gone.join(", ")
            ));
        }
        write_bytes_atomically(&staged.join("reason.txt"), text.as_bytes())?;
        swap::commit(&staged, &dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    result.map(|_| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_names_never_share_a_folder() {
        assert_eq!(folder_name("file_a.dcm"), "file_a.dcm");
        let a = folder_name("file_a/b.dcm");
        let b = folder_name("file_a_b.dcm");
        let c = folder_name("file_a b.dcm");
        assert!(a != b && a != c && b != c, "{a} {b} {c}");
        assert!(!folder_name(".hidden").starts_with('.'));
    }

    /// The disk is the daemon's lasting memory of what it quarantined (its
    /// memory keeps only the newest, `super::recent`).
    #[test]
    fn a_quarantine_copy_is_found_again_by_reason_and_signature() {
        let dir = tempfile::tempdir().unwrap();
        let (root, out) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::create_dir_all(&root).unwrap();
        let f = root.join("junk.dcm");
        std::fs::write(&f, b"not DICOM").unwrap();
        let why = "not a DICOM file";
        assert!(!is_quarantined(
            &out,
            "junk.dcm",
            why,
            FaultKind::Input,
            "s1"
        ));
        quarantine(&out, "junk.dcm", &root, &[f], why, FaultKind::Input, "s1").unwrap();
        assert!(is_quarantined(
            &out,
            "junk.dcm",
            why,
            FaultKind::Input,
            "s1"
        ));
        assert!(!is_quarantined(
            &out,
            "junk.dcm",
            why,
            FaultKind::Input,
            "s2"
        ));
        assert!(!is_quarantined(
            &out,
            "junk.dcm",
            "other",
            FaultKind::Input,
            "s1"
        ));
    }
}
