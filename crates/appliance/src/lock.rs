//! One box per output folder: `watch` holds an exclusive advisory lock on
//! `OUT/.organdose.lock` for as long as it runs. Two boxes on one OUT would run
//! the same jobs and fight over every state record and result folder. The lock
//! is released by the kernel when the process ends, however it ends (SIGKILL
//! included), so a stale lock never blocks a restart.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

const NAME: &str = ".organdose.lock";

/// Held while alive.
#[derive(Debug)]
pub struct OutLock {
    _file: File,
    pub path: PathBuf,
}

fn holder_text(f: &mut File) -> String {
    let mut s = String::new();
    let _ = f.rewind().and_then(|_| f.take(256).read_to_string(&mut s));
    s.trim().to_string()
}

impl OutLock {
    /// Takes the lock, or says which process has it.
    pub(crate) fn acquire(out_dir: &Path) -> Result<OutLock> {
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let path = out_dir.join(NAME);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            // A read-only OUT: the lock works on a read-only handle too, and the
            // box starts and retries its writes with back-off.
            Err(e) if crate::error::io_is_environment(&e) => {
                File::open(&path).map_err(|_| Error::io(&path, e))?
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let who = holder_text(&mut file);
                return Err(Error::environment(format!(
                    "{}: another organdose box already works on this output folder ({}); one box per output folder: stop it first or give another --out",
                    out_dir.display(),
                    if who.is_empty() { "holder unknown".to_string() } else { who }
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // Who holds it, for the message above and for `organdose status`.
        let who = format!("pid {}", std::process::id());
        let r = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(who.as_bytes()));
        if let Err(e) = r {
            // The lock itself is what matters; a full disk only loses the pid.
            tracing::warn!("{}: {e}", path.display());
        }
        Ok(OutLock { _file: file, path })
    }

    /// The holder ("pid N") when a box holds the lock on `out_dir`, else None.
    pub fn holder(out_dir: &Path) -> Option<String> {
        let path = out_dir.join(NAME);
        let mut file = File::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(TryLockError::WouldBlock) => Some(holder_text(&mut file)),
            Err(TryLockError::Error(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_one_out_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = OutLock::acquire(dir.path()).unwrap();
        let e = OutLock::acquire(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("another organdose box"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(OutLock::holder(dir.path()).is_some());
        drop(a);
        assert!(OutLock::holder(dir.path()).is_none());
        let _b = OutLock::acquire(dir.path()).unwrap();
    }
}
