//! Persistent appliance state: one JSON record per patient cycle, written
//! atomically after the cycle's outputs, so a restart (or a kill mid-job) loses
//! nothing and never processes the same inputs twice.

use crate::error::{Error, FaultKind, Result};
use crate::io::write_bytes_atomically;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CycleRecord {
    pub id: String,
    pub patient_id: String,
    pub injection: String,
    /// Signature of the inputs of the last finished job (files and sizes).
    pub signature: String,
    /// "done" or "failed".
    pub outcome: String,
    /// "partial", "provisional" or "final" for done jobs.
    pub summary_status: String,
    pub timepoints: usize,
    pub message: String,
    /// Set by `organdose finalize`: the summary is final with what exists.
    #[serde(default)]
    pub finalize_requested: bool,
    /// input | internal for failed jobs (environment faults are never recorded:
    /// they are retried).
    #[serde(default)]
    pub fault: String,
    /// The input files of the last finished job, `path:size`, sorted.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Set by `organdose finalize`: recompute with the inputs present even when
    /// that replaces a final result with fewer inputs (cleared by the next job).
    #[serde(default)]
    pub recompute_requested: bool,
    /// Why the inputs' current state is not processed (a final result is kept
    /// although inputs were removed); empty when nothing is held.
    #[serde(default)]
    pub held: String,
}

/// Cycle ids are `<patient>_<YYYYMMDD>T<HHMMSS>` made of `[A-Za-z0-9_-]`; anything
/// else (`../../x`, an absolute path) is refused before it becomes a file name.
pub fn check_id(id: &str) -> Result<()> {
    if !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(Error::input(format!(
            "'{id}' is not a cycle id (letters, digits, '_' and '-' only; `organdose status` lists them)"
        )))
    }
}

pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn open(out_dir: &Path) -> Result<Self> {
        let dir = out_dir.join("state");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(StateStore { dir })
    }

    fn path(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        Ok(self.dir.join(format!("{id}.json")))
    }

    pub fn get(&self, id: &str) -> Result<Option<CycleRecord>> {
        let p = self.path(id)?;
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| Error::library(FaultKind::Input, format!("{}", p.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    pub fn put(&self, r: &CycleRecord) -> Result<()> {
        let text = serde_json::to_string_pretty(r)
            .map_err(|e| Error::library(FaultKind::Internal, "state record", e))?;
        write_bytes_atomically(&self.path(&r.id)?, text.as_bytes())
    }

    fn running_path(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        Ok(self.dir.join(format!("{id}.running")))
    }

    /// Notes that a job starts, and returns how many times in a row the box
    /// died while running this same job (same inputs) before: a marker left by
    /// a process that never finished the job. An allocation failure aborts the
    /// process (it cannot be caught like a panic), so without this count a job
    /// that takes the box down would do it again after every restart.
    pub(crate) fn job_starts(&self, id: &str, signature: &str) -> Result<u32> {
        let p = self.running_path(id)?;
        let died: u32 = std::fs::read_to_string(&p)
            .ok()
            .and_then(|t| {
                let (n, sig) = t.split_once('\n')?;
                (sig == signature).then(|| n.trim().parse().ok())?
            })
            .unwrap_or(0);
        write_bytes_atomically(&p, format!("{}\n{signature}", died + 1).as_bytes())?;
        Ok(died)
    }

    /// The job ended (whatever its outcome): its marker goes.
    pub(crate) fn job_ended(&self, id: &str) {
        if let Ok(p) = self.running_path(id) {
            let _ = std::fs::remove_file(p);
        }
    }

    pub fn all(&self) -> Result<Vec<CycleRecord>> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Some(id) = p
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|id| check_id(id).is_ok())
                {
                    if let Some(r) = self.get(id)? {
                        out.push(r);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_id_is_never_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let store = StateStore::open(&out).unwrap();
        for bad in ["../../x", "/etc/passwd", "..", "a/b", ""] {
            let e = store.get(bad).unwrap_err();
            assert!(e.to_string().contains("not a cycle id"), "{bad}: {e}");
        }
        assert!(store.get("P1_20260301T080000").unwrap().is_none());
    }
}
