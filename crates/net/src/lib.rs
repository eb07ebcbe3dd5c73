//! organdose-net: the DICOM network.
//!
//! The DICOM network beside the watched folder: a Storage SCP ([`scp`]) that
//! writes every instance it is sent into the watched folder (atomically, so the
//! ingest sees whole files only), and a Storage SCU ([`scu`]) fed by a durable
//! outbox on disk ([`outbox`]) that sends each cycle's DICOM results to PACS.
//! Associations and PDUs are dicom-rs (`dicom-ul`); the DIMSE messages are
//! [`dimse`].

// Index loops over 3x3 / 4x4 matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use organdose_core::error;
use organdose_io as io;

pub mod dimse;
pub mod outbox;
pub mod scp;
pub mod scu;

/// What the network tells whoever runs it (the appliance's status port), so the
/// network reports without knowing the appliance above it.
pub trait NetStatus: Send + Sync {
    /// One event line (log, status port, `status.json`).
    fn event(&self, line: &str);
    /// A counter or state of the network changed.
    fn net(&self, change: NetChange<'_>);
}

/// The network's counters and states, as [`NetStatus::net`] receives them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NetChange<'a> {
    /// The SCP listens on this address.
    Listening(&'a str),
    /// An association was refused (peer not allowed, bad request, too many).
    Rejected,
    /// An association was accepted.
    Association,
    /// An instance was stored.
    Instance,
    /// A C-STORE was answered with a failure.
    StoreFailure,
    /// The outbox sent a job.
    OutboxSent,
    /// The outbox's queue as it now stands.
    Outbox {
        queued: usize,
        jobs: usize,
        failing: usize,
        last_error: &'a str,
    },
}

/// A [`NetStatus`] that only logs, for tools and tests that run the network alone.
pub struct LogStatus;

impl NetStatus for LogStatus {
    fn event(&self, line: &str) {
        tracing::info!("organdose event {line}");
    }
    fn net(&self, _change: NetChange<'_>) {}
}

use dicom_dictionary_std::uids;
use serde::{Deserialize, Serialize};

/// Storage SOP classes the SCP accepts: the images the reader turns into volumes,
/// and the RT Structure Sets and Segmentations a physicist sends back with
/// corrected contours (issue 36; the appliance matches them to a cycle's CT).
pub(crate) const STORAGE_CLASSES: &[(&str, &str)] = &[
    (uids::CT_IMAGE_STORAGE, "CT Image Storage"),
    (uids::ENHANCED_CT_IMAGE_STORAGE, "Enhanced CT Image Storage"),
    (uids::NUCLEAR_MEDICINE_IMAGE_STORAGE, "NM Image Storage"),
    (
        uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
        "PET Image Storage",
    ),
    (
        uids::ENHANCED_PET_IMAGE_STORAGE,
        "Enhanced PET Image Storage",
    ),
    (uids::RT_STRUCTURE_SET_STORAGE, "RT Structure Set Storage"),
    (uids::SEGMENTATION_STORAGE, "Segmentation Storage"),
];

/// `[dicom]` of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DicomNetConfig {
    /// TCP port of the Storage SCP; 0: no SCP (the watched folder only).
    pub port: u16,
    /// This box's AE title: the called AE the SCP answers to, and the calling
    /// AE of the SCU.
    pub ae_title: String,
    /// Address the SCP listens on ("0.0.0.0": all interfaces).
    pub bind: String,
    /// Calling AE titles allowed to send; empty: any.
    pub allow_ae: Vec<String>,
    /// Peer hosts (IP addresses or names, resolved at start-up) allowed to
    /// connect; empty: any.
    pub allow_host: Vec<String>,
    /// Associations served at once; more are rejected (transient, try later).
    pub max_associations: usize,
    /// A peer silent for this long is dropped (and its partial instance removed).
    pub timeout_s: f64,
    /// Where results are sent (C-STORE), each through the outbox.
    pub destinations: Vec<Destination>,
    /// First wait before a failed send is tried again; doubled per failure up to
    /// `retry_max_s`.
    pub retry_initial_s: f64,
    pub retry_max_s: f64,
}

impl Default for DicomNetConfig {
    fn default() -> Self {
        DicomNetConfig {
            port: 0,
            ae_title: "ORGANDOSE".into(),
            bind: "0.0.0.0".into(),
            allow_ae: Vec::new(),
            allow_host: Vec::new(),
            max_associations: 8,
            timeout_s: 60.0,
            destinations: Vec::new(),
            retry_initial_s: 10.0,
            retry_max_s: 900.0,
        }
    }
}

/// A Storage SCP results are sent to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

impl Destination {
    /// `AE@HOST:PORT` (the form of `--send-to`).
    pub fn parse(s: &str) -> crate::error::Result<Destination> {
        let bad = || {
            crate::error::Error::input(format!(
                "destination '{s}': expected AE@HOST:PORT, e.g. PACS@10.0.0.5:104"
            ))
        };
        let (ae, addr) = s.split_once('@').ok_or_else(bad)?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let d = Destination {
            ae_title: ae.to_string(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        };
        d.check()?;
        Ok(d)
    }

    pub fn check(&self) -> crate::error::Result<()> {
        check_ae_title(&self.ae_title)?;
        if self.host.is_empty() || self.port == 0 {
            return Err(crate::error::Error::input(format!(
                "destination {}: host and a port above 0 are needed",
                self.ae_title
            )));
        }
        Ok(())
    }

    /// A name for files and status lines: `AE@host:port` with only safe characters.
    pub fn key(&self) -> String {
        format!("{}@{}:{}", self.ae_title, self.host, self.port)
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// An AE title is 1-16 characters of the default repertoire, no backslash, not
/// all spaces (PS3.5 6.2, VR AE).
pub(crate) fn check_ae_title(ae: &str) -> crate::error::Result<()> {
    let ok = !ae.trim().is_empty()
        && ae.len() <= 16
        && ae
            .chars()
            .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(crate::error::Error::input(format!(
            "AE title '{ae}': 1 to 16 ASCII characters, no backslash"
        )))
    }
}

/// A file or folder name from a UID or AE title: only `[A-Za-z0-9._-]`.
pub fn safe_name(s: &str) -> String {
    let t: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    // Never hidden (the ingest skips dot files) and never empty.
    match t.trim_start_matches('.') {
        "" => "_".into(),
        x => x.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_and_ae_titles_are_checked() {
        let d = Destination::parse("PACS@10.0.0.5:104").unwrap();
        assert_eq!(
            (d.ae_title.as_str(), d.host.as_str(), d.port),
            ("PACS", "10.0.0.5", 104)
        );
        assert_eq!(Destination::parse("P@[::1]:11112").unwrap().host, "::1");
        for bad in [
            "PACS",
            "PACS@host",
            "PACS@host:x",
            "@h:1",
            "A_VERY_LONG_AE_TITLE@h:1",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(safe_name("1.2.3"), "1.2.3");
        assert_eq!(safe_name("../x/y"), "_x_y");
        assert_eq!(safe_name(""), "_");
    }
}
