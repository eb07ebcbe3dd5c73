//! A folder replaced as a whole: results and quarantine copies are written to
//! `.NAME.partial` beside the target, then swapped in by renames, so a reader
//! (or a restart after SIGKILL) sees the old folder or the new one, never a mix
//! of the two (a `final` summary beside a `PROVISIONAL` report and old plots).
//!
//! Swap: `NAME` -> `.NAME.old`, `.NAME.partial` -> `NAME`, remove `.NAME.old`.
//! A kill between the two renames leaves `.NAME.old` and no `NAME`;
//! [`recover`] puts the old one back (its state record still describes it, so
//! the job simply runs again).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

fn sibling(target: &Path, suffix: &str) -> Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| Error::internal(format!("{}: not a folder name", target.display())))?;
    Ok(target.with_file_name(format!(".{}.{suffix}", name.to_string_lossy())))
}

/// An empty staging folder for `target` (a leftover of an interrupted write is removed).
pub fn staging(target: &Path) -> Result<PathBuf> {
    let s = sibling(target, "partial")?;
    remove(&s)?;
    std::fs::create_dir_all(&s).map_err(|e| Error::io(&s, e))?;
    Ok(s)
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Flushes a folder's entries (the renames into it) to disk.
fn sync_dir(p: &Path) {
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.sync_all();
    }
}

/// Swaps the complete `staged` folder in as `target`.
pub(crate) fn commit(staged: &Path, target: &Path) -> Result<()> {
    sync_dir(staged);
    let old = sibling(target, "old")?;
    remove(&old)?;
    if target.exists() {
        std::fs::rename(target, &old).map_err(|e| Error::io(target, e))?;
    }
    if let Err(e) = std::fs::rename(staged, target) {
        // Put the old folder back rather than leave none.
        let _ = std::fs::rename(&old, target);
        return Err(Error::io(target, e));
    }
    if let Some(parent) = target.parent() {
        sync_dir(parent);
    }
    if let Err(e) = remove(&old) {
        tracing::warn!("{e}");
    }
    Ok(())
}

/// Cleans up after an interrupted write or swap in `parent`: drops `.X.partial`,
/// restores `.X.old` as `X` when `X` is missing, drops it otherwise.
pub(crate) fn recover(parent: &Path) -> Result<()> {
    let rd = match std::fs::read_dir(parent) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(parent, e)),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(stem) = name.strip_prefix('.') else {
            continue;
        };
        if stem.ends_with(".partial") {
            remove(&e.path())?;
        } else if let Some(base) = stem.strip_suffix(".old") {
            let target = parent.join(base);
            if target.exists() {
                remove(&e.path())?;
            } else {
                std::fs::rename(e.path(), &target).map_err(|er| Error::io(&target, er))?;
                tracing::warn!(
                    "{}: restored the previous folder (a swap was interrupted)",
                    target.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_replaces_whole_folder_and_recovery_restores_an_interrupted_one() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("P1_20260301T080000");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("report.txt"), "old").unwrap();
        std::fs::write(target.join("old_only.png"), "old").unwrap();
        let s = staging(&target).unwrap();
        std::fs::write(s.join("report.txt"), "new").unwrap();
        commit(&s, &target).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("report.txt")).unwrap(),
            "new"
        );
        assert!(
            !target.join("old_only.png").exists(),
            "nothing of the old folder left"
        );
        // Killed between the renames: the old folder is put back; a half-written
        // staging folder is dropped.
        let old = dir.path().join(".P1_20260301T080000.old");
        std::fs::rename(&target, &old).unwrap();
        let s = staging(&target).unwrap();
        std::fs::write(s.join("dose_summary.json"), "half").unwrap();
        recover(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("report.txt")).unwrap(),
            "new"
        );
        assert!(!old.exists() && !s.exists());
    }
}
