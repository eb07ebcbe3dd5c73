//! Watches the export folder by polling: a file is read only once its size and
//! modification time have not changed for the quiet period, so a file still being
//! written is never read half-way; a series is complete once all its files are
//! quiet and its slices form a gap-free volume.
//!
//! Polling works on network shares where change notifications do not; `notify`
//! events (see `daemon`) only make the next poll come sooner.
//!
//! A deletion is a change like any other: nothing in the folder counts as settled
//! until the quiet period has passed since the last file disappeared, so an
//! `rm -rf` in progress (or a console replacing a series) is never processed
//! half-way.

use crate::io::dicom::{self, DicomHeader, DicomSeries};
use crate::io::IngestConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How many quiet periods a file the box may not read is retried before it is
/// rejected (and quarantined, which then fails and is retried with back-off).
const UNREADABLE_QUIET_PERIODS: f64 = 10.0;

#[derive(Debug, Clone)]
enum Kind {
    Unread,
    Dicom(Box<DicomHeader>),
    Rejected(String),
    /// Read and skipped on purpose (a DICOMDIR: its files are read directly).
    Ignored,
}

#[derive(Debug, Clone)]
struct Tracked {
    size: u64,
    mtime: Option<SystemTime>,
    changed_at_s: f64,
    kind: Kind,
}

/// A series whose files have settled.
#[derive(Debug, Clone)]
pub(crate) enum SeriesState {
    /// Complete and consistent: ready for a job.
    Ready(DicomSeries),
    /// Settled but unusable (missing slices, mixed sizes...): for quarantine.
    Broken(DicomSeries, String),
    /// An RT Structure Set or SEG (a physicist's corrected contours, issue 36):
    /// no volume of its own, matched to a cycle's CT by the daemon.
    Correction(DicomSeries),
}

/// The export folder as seen at the last poll.
pub struct Ingest {
    root: PathBuf,
    quiet_s: f64,
    files: BTreeMap<PathBuf, Tracked>,
    /// When a file last disappeared.
    last_removal_s: f64,
}

/// A file that is neither DICOM nor NIfTI, or unreadable, once quiet.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedFile {
    pub path: PathBuf,
    pub reason: String,
    pub size: u64,
    /// The file is DICOM (it has the 'DICM' preamble): it may be one of a
    /// patient's series that could not be read.
    pub dicom: bool,
}

impl Ingest {
    pub fn new(root: &Path, quiet_s: f64) -> Self {
        Ingest {
            root: root.to_path_buf(),
            quiet_s,
            files: BTreeMap::new(),
            last_removal_s: f64::NEG_INFINITY,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Looks at every file once; reads the headers of files that have become quiet.
    /// Returns the number of files that changed, disappeared or were read since
    /// the last poll.
    pub fn poll(&mut self, now_s: f64) -> usize {
        let listed = match dicom::list_files(&self.root) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot list {}: {e}", self.root.display());
                return 0;
            }
        };
        let mut changed = 0;
        let present: std::collections::BTreeSet<PathBuf> = listed.iter().cloned().collect();
        let before = self.files.len();
        self.files.retain(|p, _| present.contains(p));
        if self.files.len() < before {
            changed += before - self.files.len();
            self.last_removal_s = now_s;
        }
        for p in listed {
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            let (size, mtime) = (meta.len(), meta.modified().ok());
            match self.files.get_mut(&p) {
                Some(t) if t.size == size && t.mtime == mtime => {}
                Some(t) => {
                    *t = Tracked {
                        size,
                        mtime,
                        changed_at_s: now_s,
                        kind: Kind::Unread,
                    };
                    changed += 1;
                }
                None => {
                    self.files.insert(
                        p.clone(),
                        Tracked {
                            size,
                            mtime,
                            changed_at_s: now_s,
                            kind: Kind::Unread,
                        },
                    );
                    changed += 1;
                }
            }
        }
        for (p, t) in self.files.iter_mut() {
            if matches!(t.kind, Kind::Unread) && now_s - t.changed_at_s >= self.quiet_s {
                // A file the box may not read (permissions, a failing share) is the
                // machine's problem, not a bad file: it stays unread and is tried
                // again at the next poll instead of being rejected for good.
                // After UNREADABLE_QUIET_PERIODS it is rejected all the same: a file
                // nobody may read would otherwise keep the folder busy for good.
                if let Err(e) = std::fs::File::open(p) {
                    if crate::error::io_is_environment(&e) {
                        if now_s - t.changed_at_s < UNREADABLE_QUIET_PERIODS * self.quiet_s {
                            tracing::warn!("{}: {e}; tried again at the next poll", p.display());
                            continue;
                        }
                        t.kind = Kind::Rejected(format!("cannot be read: {e}"));
                        changed += 1;
                        continue;
                    }
                }
                t.kind = if crate::io::nifti::is_nifti_path(p) {
                    Kind::Rejected(
                        "NIfTI in the watched folder: NIfTI studies need a study.json; use `organdose run`".into(),
                    )
                } else if !dicom::has_dicom_magic(p) {
                    Kind::Rejected("not DICOM (no 'DICM' at byte 128)".into())
                } else {
                    match dicom::read_header(p) {
                        Ok(h) if dicom::is_dicomdir(&h) => Kind::Ignored,
                        Ok(h) => Kind::Dicom(Box::new(h)),
                        Err(e) => Kind::Rejected(e.to_string()),
                    }
                };
                changed += 1;
            }
        }
        changed
    }

    /// Whether what [`Self::settled_series`] returns may differ from the last
    /// round's although [`Self::poll`] saw no change: files are still settling, or
    /// the quiet period after a deletion ends between `since_s` and `now_s`.
    pub fn settling(&self, since_s: f64, now_s: f64) -> bool {
        let removal_quiet_at = self.last_removal_s + self.quiet_s;
        self.pending_files() > 0 || (removal_quiet_at > since_s && removal_quiet_at <= now_s)
    }

    /// Files still waiting for their quiet period.
    pub fn pending_files(&self) -> usize {
        self.files
            .values()
            .filter(|t| matches!(t.kind, Kind::Unread))
            .count()
    }

    pub fn rejected(&self) -> Vec<RejectedFile> {
        self.files
            .iter()
            .filter_map(|(p, t)| match &t.kind {
                Kind::Rejected(r) => Some(RejectedFile {
                    path: p.clone(),
                    reason: r.clone(),
                    size: t.size,
                    dicom: !crate::io::nifti::is_nifti_path(p) && dicom::has_dicom_magic(p),
                }),
                _ => None,
            })
            .collect()
    }

    /// Series whose files are all read and quiet, checked for completeness.
    /// Files are grouped as `inspect` and `run` group them ([`dicom::group_series`]:
    /// by SeriesInstanceUID, else by what identifies the series).
    pub(crate) fn settled_series(&self, now_s: f64, cfg: &IngestConfig) -> Vec<SeriesState> {
        // A file not read yet may belong to any series (its header says which), so
        // nothing counts as settled while one is waiting; a steady trickle of files
        // closer together than the quiet period therefore delays every series.
        let folder_busy = self.pending_files() > 0 || now_s - self.last_removal_s < self.quiet_s;
        let headers: Vec<DicomHeader> = self
            .files
            .values()
            .filter_map(|t| match &t.kind {
                Kind::Dicom(h) => Some((**h).clone()),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        if folder_busy {
            return out;
        }
        for s in dicom::group_series(headers) {
            let quiet = s.files.iter().all(|h| {
                self.files
                    .get(&h.path)
                    .is_some_and(|t| now_s - t.changed_at_s >= self.quiet_s)
            });
            if !quiet {
                continue;
            }
            if s.files
                .first()
                .is_some_and(|h| crate::io::dicom::is_contour_object(&h.modality, &h.sop_class_uid))
            {
                out.push(SeriesState::Correction(s));
                continue;
            }
            match s.slice_map(cfg) {
                Ok(_) => out.push(SeriesState::Ready(s)),
                Err(e) => out.push(SeriesState::Broken(s, e.to_string())),
            }
        }
        out
    }

    /// Size and modification signature of a series' files, to notice changes.
    pub fn signature(&self, s: &DicomSeries) -> String {
        self.inputs(s).join("|")
    }

    /// One file as `path:size` (a correction file's input entry).
    pub(crate) fn file_input(&self, path: &Path) -> String {
        let size = self.files.get(path).map(|t| t.size).unwrap_or(0);
        format!("{}:{size}", path.display())
    }

    /// The series' files as `path:size`, sorted.
    pub fn inputs(&self, s: &DicomSeries) -> Vec<String> {
        let mut parts: Vec<String> = s
            .files
            .iter()
            .map(|h| {
                let size = self.files.get(&h.path).map(|t| t.size).unwrap_or(0);
                format!("{}:{size}", h.path.display())
            })
            .collect();
        parts.sort();
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn copy_dir(src: &Path, dst: &Path) -> Vec<PathBuf> {
        std::fs::create_dir_all(dst).unwrap();
        let mut out = Vec::new();
        for e in std::fs::read_dir(src).unwrap() {
            let p = e.unwrap().path();
            let d = dst.join(p.file_name().unwrap());
            std::fs::copy(&p, &d).unwrap();
            out.push(d);
        }
        out
    }

    #[test]
    fn series_waits_for_quiet_period_and_half_written_file_is_not_read() {
        let cfg = Config::default();
        let data =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/generated/ct_axial");
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("export/ct");
        let files = copy_dir(&data, &dst);
        // One slice still being written: only its first half is there.
        let full = std::fs::read(&files[0]).unwrap();
        std::fs::write(&files[0], &full[..full.len() / 2]).unwrap();
        let mut ing = Ingest::new(&dir.path().join("export"), 10.0);
        ing.poll(0.0);
        assert!(ing.settled_series(0.0, &cfg.ingest).is_empty());
        // The writer finishes 5 s later: the quiet period restarts for that file.
        std::fs::write(&files[0], &full).unwrap();
        // Make sure the change is visible even on coarse mtime file systems.
        assert_eq!(ing.poll(5.0), 1);
        assert!(ing.settled_series(12.0, &cfg.ingest).is_empty());
        ing.poll(16.0);
        let s = ing.settled_series(16.0, &cfg.ingest);
        assert_eq!(s.len(), 1);
        match &s[0] {
            SeriesState::Ready(s) => {
                assert_eq!(s.files.len(), 6);
                let v = s.read(&cfg.ingest).unwrap();
                assert_eq!(v.geom.dims, [20, 16, 6]);
            }
            SeriesState::Broken(_, r) => panic!("broken: {r}"),
            SeriesState::Correction(s) => panic!("a correction: {}", s.uid),
        }
    }

    #[test]
    fn missing_slice_and_junk_are_reported_after_quiet_period() {
        let cfg = Config::default();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/generated/bad");
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&root.join("missing_slice"), &dir.path().join("a"));
        std::fs::copy(root.join("not_dicom.dcm"), dir.path().join("junk.dcm")).unwrap();
        let mut ing = Ingest::new(dir.path(), 1.0);
        ing.poll(0.0);
        ing.poll(2.0);
        let s = ing.settled_series(2.0, &cfg.ingest);
        assert!(matches!(&s[0], SeriesState::Broken(_, r) if r.contains("missing")));
        let r = ing.rejected();
        assert_eq!(r.len(), 1);
        assert!(r[0].reason.contains("not DICOM"));
    }

    #[test]
    fn a_deletion_restarts_the_quiet_period() {
        let cfg = Config::default();
        let data =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/generated/ct_axial");
        let dir = tempfile::tempdir().unwrap();
        let files = copy_dir(&data, &dir.path().join("ct"));
        let mut ing = Ingest::new(dir.path(), 10.0);
        ing.poll(0.0);
        ing.poll(11.0);
        assert_eq!(ing.settled_series(11.0, &cfg.ingest).len(), 1);
        // The top slice goes (an `rm` in progress): the shorter series is not used
        // until the folder has been quiet again.
        let mut sorted = files.clone();
        sorted.sort();
        std::fs::remove_file(sorted.last().unwrap()).unwrap();
        assert_eq!(ing.poll(12.0), 1);
        assert!(ing.settled_series(12.0, &cfg.ingest).is_empty());
        assert!(ing.settled_series(21.0, &cfg.ingest).is_empty());
        assert_eq!(ing.settled_series(22.5, &cfg.ingest).len(), 1);
    }
}
