//! One error type for the library: every failure on bad input says what and where.
//!
//! Errors are typed by whose fault they are ([`FaultKind`]), because the box
//! must treat them differently: an input fault (a broken or inconsistent study)
//! is quarantined with its reason and not retried until the inputs change; an
//! environment fault (disk full, read-only output, permissions, out of memory,
//! GPU, a missing model) says nothing about the patient and is retried with
//! back-off; an internal fault (a panic, a dead thread) is a bug: reported, and
//! the box keeps running.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The I/O error is part of the message and deliberately not a `source()`:
    /// anyhow's `{:#}` would print it twice ("No such file or directory (os
    /// error 2): No such file or directory (os error 2)").
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// `source`: the dicom-rs (or I/O) error behind `msg`, when there is one.
    #[error("{path}: not a readable DICOM file: {msg}")]
    Dicom {
        path: PathBuf,
        msg: String,
        #[source]
        source: Option<Source>,
    },
    #[error("{path}: not a readable NIfTI-1 file: {msg}")]
    Nifti {
        path: PathBuf,
        msg: String,
        #[source]
        source: Option<Source>,
    },
    #[error("series {series}: {msg}")]
    Series { series: String, msg: String },
    #[error("geometry: {0}")]
    Geometry(String),
    #[error("config {path}: {msg}")]
    Config {
        path: PathBuf,
        msg: String,
        #[source]
        source: Option<Source>,
    },
    #[error("{0}")]
    Input(String),
    /// The box's surroundings failed (see the module comment); retried.
    #[error("{0}")]
    Environment(String),
    /// A bug in organdose; reported, never blamed on the patient's data.
    #[error("internal error: {0}")]
    Internal(String),
    /// A library below (serde, candle, plotters, png, a thread) failed; its
    /// error is the `source`, and whose fault it is was said where it was
    /// caught, by the code that knows what it asked of the library.
    #[error("{context}: {source}")]
    Library {
        context: String,
        kind: FaultKind,
        #[source]
        source: Source,
    },
    /// One of organdose's own errors, with where it happened (a time point, a
    /// series): it keeps its fault kind.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

/// A reader error's message: which part (`what`, may be empty), then its source.
fn with_what(what: &str, source: &dyn std::error::Error) -> String {
    if what.is_empty() {
        source.to_string()
    } else {
        format!("{what}: {source}")
    }
}

/// The error of a library below, kept as a source.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its causes on one line, each cause said once: a cause whose
/// text the line already holds (a message that quotes its source) is not
/// repeated.
pub fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !t.is_empty() && !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

/// Whose fault an error is, and so what the appliance does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// The study itself: quarantine with the reason; retried only when its inputs change.
    Input,
    /// Disk, permissions, memory, GPU, model folder: retried with back-off, never
    /// recorded as the cycle's outcome.
    Environment,
    /// A bug (panic, dead thread): reported, contained; the box keeps running.
    Internal,
}

impl FaultKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FaultKind::Input => "input",
            FaultKind::Environment => "environment",
            FaultKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an I/O error comes from the machine rather than from the file's
/// content or name: space, quota, read-only or failing disk, permissions,
/// memory, busy or stale (network) file systems.
pub fn io_is_environment(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::StorageFull
            | K::QuotaExceeded
            | K::ReadOnlyFilesystem
            | K::PermissionDenied
            | K::OutOfMemory
            | K::ResourceBusy
            | K::ExecutableFileBusy
            | K::StaleNetworkFileHandle
            | K::TimedOut
            | K::Interrupted
            | K::WouldBlock
            | K::NotConnected
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NetworkDown
            | K::NetworkUnreachable
            | K::HostUnreachable
            | K::FileTooLarge
    ) {
        return true;
    }
    // EIO (5 on Linux and the BSDs): the disk or the share failed under us; std
    // has no stable ErrorKind for it.
    cfg!(unix) && e.raw_os_error() == Some(5)
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            err: source,
        }
    }
    pub fn dicom(path: &Path, msg: impl Into<String>) -> Self {
        Error::Dicom {
            path: path.to_path_buf(),
            msg: msg.into(),
            source: None,
        }
    }
    /// A DICOM file dicom-rs (or the reader under it) could not read: `what`
    /// says which part ("" when the source says it all), `source` is kept.
    pub fn dicom_from(
        path: &Path,
        what: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Dicom {
            path: path.to_path_buf(),
            msg: with_what(what, &source),
            source: Some(Box::new(source)),
        }
    }
    pub fn nifti(path: &Path, msg: impl Into<String>) -> Self {
        Error::Nifti {
            path: path.to_path_buf(),
            msg: msg.into(),
            source: None,
        }
    }
    /// As [`Error::dicom_from`] for a NIfTI file.
    pub fn nifti_from(
        path: &Path,
        what: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Nifti {
            path: path.to_path_buf(),
            msg: with_what(what, &source),
            source: Some(Box::new(source)),
        }
    }
    /// A configuration file that does not parse (`source`: the TOML error).
    pub fn config(path: &Path, msg: impl Into<String>, source: Option<Source>) -> Self {
        Error::Config {
            path: path.to_path_buf(),
            msg: msg.into(),
            source,
        }
    }
    /// A library's error, kept as the source; `kind` is whose fault it is.
    pub fn library(kind: FaultKind, context: impl Into<String>, source: impl Into<Source>) -> Self {
        Error::Library {
            context: context.into(),
            kind,
            source: source.into(),
        }
    }
    /// This error with where it happened; its fault kind is kept.
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
    pub fn series(series: &str, msg: impl Into<String>) -> Self {
        Error::Series {
            series: series.to_string(),
            msg: msg.into(),
        }
    }
    pub fn geometry(msg: impl Into<String>) -> Self {
        Error::Geometry(msg.into())
    }
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
    pub fn environment(msg: impl Into<String>) -> Self {
        Error::Environment(msg.into())
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// Whose fault this is (see [`FaultKind`]).
    pub fn kind(&self) -> FaultKind {
        match self {
            Error::Io { err, .. } if io_is_environment(err) => FaultKind::Environment,
            Error::Environment(_) => FaultKind::Environment,
            Error::Internal(_) => FaultKind::Internal,
            Error::Library { kind, .. } => *kind,
            Error::Context { source, .. } => source.kind(),
            _ => FaultKind::Input,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind as K;

    #[test]
    fn io_faults_of_the_machine_are_environment_and_bad_files_are_input() {
        let p = Path::new("/out/x");
        for k in [
            K::StorageFull,
            K::ReadOnlyFilesystem,
            K::PermissionDenied,
            K::OutOfMemory,
        ] {
            assert_eq!(
                Error::io(p, k.into()).kind(),
                FaultKind::Environment,
                "{k:?}"
            );
        }
        // ENOSPC, EROFS, EACCES, EIO as the OS reports them.
        for errno in [28, 30, 13, 5] {
            let e = Error::io(p, std::io::Error::from_raw_os_error(errno));
            assert_eq!(e.kind(), FaultKind::Environment, "errno {errno}");
        }
        for k in [K::NotFound, K::InvalidData, K::UnexpectedEof] {
            assert_eq!(Error::io(p, k.into()).kind(), FaultKind::Input, "{k:?}");
        }
        assert_eq!(Error::input("x").kind(), FaultKind::Input);
        assert_eq!(Error::dicom(p, "x").kind(), FaultKind::Input);
        assert_eq!(Error::environment("gpu").kind(), FaultKind::Environment);
        assert_eq!(Error::internal("panic").kind(), FaultKind::Internal);
    }

    #[test]
    fn io_error_names_the_file_and_its_cause_once() {
        let e = Error::io(
            Path::new("/nonexistent"),
            std::io::Error::from_raw_os_error(2),
        );
        let chained = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(chained.matches("os error 2").count(), 1, "{chained}");
        assert!(chained.starts_with("/nonexistent: "), "{chained}");
    }

    #[test]
    fn a_library_error_keeps_its_source_and_the_kind_it_was_given() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let e = Error::library(FaultKind::Internal, "summary", json);
        assert_eq!(e.kind(), FaultKind::Internal);
        assert!(std::error::Error::source(&e).is_some());
        // The message says the cause (a status line or a quarantine reason has
        // it); the chain says it once.
        let text = chain_text(&e);
        assert!(text.starts_with("summary: EOF"), "{text}");
        assert_eq!(text.matches("EOF").count(), 1, "{text}");
    }

    #[test]
    fn context_keeps_the_fault_kind_of_what_it_wraps() {
        // The dosimetry said "time point 2" by making every error an input
        // fault: a bug inside was quarantined as the patient's data.
        let bug = Error::internal("PVC matrix of the wrong size").context("time point 2 (6 h)");
        assert_eq!(bug.kind(), FaultKind::Internal);
        assert_eq!(
            bug.to_string(),
            "time point 2 (6 h): internal error: PVC matrix of the wrong size"
        );
        let disk = Error::io(Path::new("/out"), std::io::Error::from_raw_os_error(28))
            .context("time point 1");
        assert_eq!(disk.kind(), FaultKind::Environment);
        assert_eq!(Error::input("bad").context("x").kind(), FaultKind::Input);
        assert_eq!(chain_text(&bug).matches("PVC matrix").count(), 1);
    }

    #[test]
    fn a_dicom_error_from_a_reader_keeps_its_source_and_says_it_once() {
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut short at byte 132");
        let e = Error::dicom_from(Path::new("/in/a.dcm"), "file meta group", io);
        assert_eq!(e.kind(), FaultKind::Input);
        assert!(std::error::Error::source(&e).is_some());
        let text = chain_text(&e);
        assert_eq!(
            text,
            "/in/a.dcm: not a readable DICOM file: file meta group: cut short at byte 132"
        );
        let chained = format!("{:#}", anyhow::Error::from(e).context("reading the study"));
        assert!(chained.contains("cut short"), "{chained}");
    }
}
