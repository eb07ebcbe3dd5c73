//! Quarantine: what cannot be processed is copied (never moved: input files are
//! never modified or deleted) to `OUT/quarantine/<name>/` with a `reason.txt`.

use crate::error::{Error, Result};
use crate::io::write_bytes_atomically;
use std::path::{Path, PathBuf};

/// Copies `files` (keeping their paths relative to `root`) and writes the reason.
/// Does nothing when the same name already holds the same reason and signature.
pub fn quarantine(
    out_dir: &Path,
    name: &str,
    root: &Path,
    files: &[PathBuf],
    reason: &str,
    signature: &str,
) -> Result<PathBuf> {
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
    let dir = out_dir.join("quarantine").join(safe);
    let text = format!("{reason}\n\nsignature: {signature}\n");
    let reason_path = dir.join("reason.txt");
    if std::fs::read_to_string(&reason_path).ok().as_deref() == Some(text.as_str()) {
        return Ok(dir);
    }
    for f in files {
        let rel = f.strip_prefix(root).unwrap_or(f.as_path());
        let rel = if rel.is_absolute() {
            PathBuf::from(rel.file_name().unwrap_or_default())
        } else {
            rel.to_path_buf()
        };
        let dst = dir.join("files").join(rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        std::fs::copy(f, &dst).map_err(|e| Error::io(f, e))?;
    }
    write_bytes_atomically(&reason_path, text.as_bytes())?;
    Ok(dir)
}
