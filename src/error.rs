//! One error type for the library: every failure on bad input says what and where.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
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
}

pub type Result<T> = std::result::Result<T, Error>;
