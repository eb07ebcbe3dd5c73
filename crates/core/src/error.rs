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
    #[error("{path}: not a readable DICOM file: {msg}")]
    Dicom { path: PathBuf, msg: String },
    #[error("{path}: not a readable NIfTI-1 file: {msg}")]
    Nifti { path: PathBuf, msg: String },
    #[error("series {series}: {msg}")]
    Series { series: String, msg: String },
    #[error("geometry: {0}")]
    Geometry(String),
    #[error("config {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("{0}")]
    Input(String),
    /// The box's surroundings failed (see the module comment); retried.
    #[error("{0}")]
    Environment(String),
    /// A bug in organdose; reported, never blamed on the patient's data.
    #[error("internal error: {0}")]
    Internal(String),
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
        }
    }
    pub fn nifti(path: &Path, msg: impl Into<String>) -> Self {
        Error::Nifti {
            path: path.to_path_buf(),
            msg: msg.into(),
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
}
