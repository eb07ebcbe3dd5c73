//! Storage SCP: C-ECHO and C-STORE of the image classes the reader turns into
//! volumes and of corrected RT Structure Sets / SEGs ([`super::STORAGE_CLASSES`]),
//! in the transfer syntaxes it decodes.
//!
//! Each instance is streamed into a temporary file in `<watched>/.organdose-incoming/`
//! (hidden from the ingest, and on the same file system, so the rename is atomic),
//! flushed to disk, renamed into `<watched>/<study>/<series>/<SOP instance>.dcm`,
//! and only then answered with success. A write error (a full disk, a file-size
//! limit) is answered with 0xA700 "out of resources" and the temporary file is
//! removed; an aborted or dropped association removes its partial instance. The
//! ingest then treats the folder as it treats a console's export (quiet period,
//! series completeness).
//!
//! Memory is bounded per association and in total: the received bytes go to
//! the temporary file, never to memory (a PDU is at most the 32 KB the SCP
//! offers); the file is then walked by the watch folder's bounded reader
//! ([`crate::io::dicom_bounds`]: an element longer than the bytes received is
//! refused before any allocation) and read up to the pixel data only when the
//! estimated cost of that read fits this association's share of
//! `appliance.memory_budget_mb` ([`parse_limit_bytes`]); so `max_associations`
//! at once stay within the budget (issue 42, `tests/it/dicom_net.rs` measures it).
//!
//! One thread per association, at most `max_associations` at once; a bad peer
//! (broken PDUs, a stall past `timeout_s`, a panic in its thread) ends its own
//! association only.

use super::{dimse, DicomNetConfig, STORAGE_CLASSES};
use crate::error::{io_is_environment, Error, FaultKind, Result};
use crate::io::dicom_bounds::check_element_lengths;
use crate::{NetChange, NetStatus};
use dicom_dictionary_std::tags;
use dicom_ul::association::server::AccessControl;
use dicom_ul::association::Association;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType,
    PresentationContextResultReason, UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociation, ServerAssociationOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The hidden folder of the watched folder where instances are written before
/// they are renamed into place.
pub(crate) const INCOMING: &str = ".organdose-incoming";

/// A command set larger than this is no C-STORE or C-ECHO request.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Explicit VR Big Endian (retired): readable by the registry, but the volume
/// reader is only checked on little-endian pixel data.
#[allow(deprecated)] // retired, and still what some old senders offer
const BIG_ENDIAN: &str = dicom_dictionary_std::uids::EXPLICIT_VR_BIG_ENDIAN;

/// The transfer syntaxes offered: those of the registry whose data set and pixel
/// data organdose decodes (native little endian, RLE, JPEG, JPEG 2000 with this
/// build's codecs; not deflate, not JPEG-LS, not big endian).
pub(crate) fn transfer_syntaxes() -> Vec<&'static str> {
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .iter()
        .filter(|ts| ts.can_decode_all() && ts.uid() != BIG_ENDIAN)
        .map(|ts| ts.uid())
        .collect()
}

struct Settings {
    ae_title: String,
    allow_ae: Vec<String>,
    /// None: any host.
    allow_hosts: Option<Vec<IpAddr>>,
    max_associations: usize,
    timeout: Duration,
    root: PathBuf,
    incoming: PathBuf,
    /// The most memory the parse of one data set may take
    /// ([`crate::io::dicom_bounds::ElementBounds::header_parse_cost`]): the
    /// memory budget shared by the associations served at once.
    parse_limit_bytes: u64,
}

/// The SCP's bound on what one association may parse in memory: its share of
/// `appliance.memory_budget_mb` (`max_associations` at once keep the SCP within
/// the budget in total). Received bytes go to disk, never to memory.
pub fn parse_limit_bytes(memory_budget_mb: f64, max_associations: usize) -> u64 {
    let budget = if memory_budget_mb.is_finite() && memory_budget_mb > 0.0 {
        memory_budget_mb
    } else {
        1.0
    };
    (budget * 1024.0 * 1024.0 / max_associations.max(1) as f64) as u64
}

/// The listening SCP; [`StorageScp::spawn`] serves it.
pub struct StorageScp {
    listener: TcpListener,
    settings: Arc<Settings>,
    status: Arc<dyn NetStatus>,
}

/// Who may associate, decided per connection (the peer's host is known then).
struct Gate<'a> {
    settings: &'a Settings,
    host_allowed: bool,
}

impl AccessControl for Gate<'_> {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> std::result::Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.host_allowed {
            return Err(AssociationRJServiceUserReason::NoReasonGiven);
        }
        let calling = calling_ae_title.trim();
        if !self.settings.allow_ae.is_empty()
            && !self.settings.allow_ae.iter().any(|a| a == calling)
        {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

fn resolve_hosts(hosts: &[String]) -> Result<Option<Vec<IpAddr>>> {
    if hosts.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for h in hosts {
        match h.parse::<IpAddr>() {
            Ok(ip) => out.push(ip),
            Err(_) => {
                let addrs = (h.as_str(), 0).to_socket_addrs().map_err(|e| {
                    Error::library(
                        FaultKind::Input,
                        format!("dicom.allow_host '{h}': cannot be resolved"),
                        e,
                    )
                })?;
                out.extend(addrs.map(|a| a.ip()));
            }
        }
    }
    Ok(Some(out))
}

/// IPv4 peers on a dual-stack socket arrive as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl StorageScp {
    /// Binds the port and prepares the incoming folder of `watched` (leftovers of
    /// a killed run are removed). Says at start-up what it accepts.
    pub fn bind(
        cfg: &DicomNetConfig,
        memory_budget_mb: f64,
        watched: &Path,
        status: Arc<dyn NetStatus>,
    ) -> Result<Self> {
        super::check_ae_title(&cfg.ae_title)?;
        for a in &cfg.allow_ae {
            super::check_ae_title(a)?;
        }
        let allow_hosts = resolve_hosts(&cfg.allow_host)?;
        let incoming = watched.join(INCOMING);
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming).map_err(|e| Error::io(&incoming, e))?;
        }
        std::fs::create_dir_all(&incoming).map_err(|e| Error::io(&incoming, e))?;
        let addr = format!("{}:{}", cfg.bind, cfg.port);
        let listener = TcpListener::bind(
            addr.to_socket_addrs()
                .map_err(|e| Error::library(FaultKind::Input, format!("dicom.bind '{addr}'"), e))?
                .collect::<Vec<_>>()
                .as_slice(),
        )
        .map_err(|e| Error::library(FaultKind::Environment, format!("DICOM port {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::library(FaultKind::Environment, format!("DICOM port {addr}"), e))?;
        let settings = Settings {
            ae_title: cfg.ae_title.trim().to_string(),
            allow_ae: cfg.allow_ae.iter().map(|a| a.trim().to_string()).collect(),
            allow_hosts,
            max_associations: cfg.max_associations.max(1),
            timeout: Duration::from_secs_f64(cfg.timeout_s.max(1.0)),
            root: watched.to_path_buf(),
            incoming,
            parse_limit_bytes: parse_limit_bytes(memory_budget_mb, cfg.max_associations),
        };
        let classes: Vec<&str> = STORAGE_CLASSES.iter().map(|(_, n)| *n).collect();
        status.net(NetChange::Listening(&local.to_string()));
        status.event(&format!(
            "dicom SCP {} listening on {local}: C-ECHO, C-STORE of {} in {} transfer syntaxes, into {}",
            settings.ae_title,
            classes.join(", "),
            transfer_syntaxes().len(),
            watched.display()
        ));
        status.event(&match settings.allow_ae.is_empty() {
            true => "dicom SCP: no allow_ae list, ANY calling AE title is accepted".to_string(),
            false => format!(
                "dicom SCP: calling AE titles accepted: {}",
                settings.allow_ae.join(", ")
            ),
        });
        status.event(&match &settings.allow_hosts {
            None => "dicom SCP: no allow_host list, any host is accepted".to_string(),
            Some(h) => format!(
                "dicom SCP: hosts accepted: {}",
                h.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
        Ok(StorageScp {
            listener,
            settings: Arc::new(settings),
            status,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves the port in a thread of its own for as long as the process lives.
    pub fn spawn(self) -> Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("dicom-scp".into())
            .spawn(move || self.accept_loop())
            .map_err(|e| {
                Error::library(
                    FaultKind::Environment,
                    "cannot start the DICOM SCP thread",
                    e,
                )
            })
    }

    fn accept_loop(self) {
        let active = Arc::new(AtomicUsize::new(0));
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: the machine's, not a peer's.
                    tracing::warn!("dicom SCP accept: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into());
            if active.fetch_add(1, Ordering::SeqCst) >= self.settings.max_associations {
                active.fetch_sub(1, Ordering::SeqCst);
                self.status.net(NetChange::Rejected);
                self.status.event(&format!(
                    "dicom association from {peer} rejected: {} associations already open (dicom.max_associations)",
                    self.settings.max_associations
                ));
                reject_busy(stream);
                continue;
            }
            let guard = ActiveGuard(active.clone());
            let (settings, status) = (self.settings.clone(), self.status.clone());
            let spawned = std::thread::Builder::new()
                .name("dicom-association".into())
                .spawn(move || {
                    let _guard = guard;
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        associate(stream, &settings, status.as_ref())
                    }));
                    if run.is_err() {
                        status.event(&format!(
                            "dicom association from {peer} ended by an internal fault (panic); its partial instance was removed"
                        ));
                    }
                });
            if let Err(e) = spawned {
                self.status
                    .event(&format!("dicom association not served: no thread: {e}"));
            }
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A transient rejection ("local limit exceeded"): the peer may try again later.
fn reject_busy(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut discard = [0u8; 4096];
    let _ = std::io::Read::read(&mut stream, &mut discard);
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut buf = Vec::new();
    if dicom_ul::write_pdu(&mut buf, &rj).is_ok() {
        let _ = stream.write_all(&buf);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// What one association did.
#[derive(Default)]
struct Tally {
    stored: usize,
    failed: usize,
    echoes: usize,
}

fn associate(stream: TcpStream, settings: &Settings, status: &dyn NetStatus) {
    let peer_ip = stream.peer_addr().ok().map(|a| canonical(a.ip()));
    let peer = peer_ip.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
    let host_allowed = match (&settings.allow_hosts, peer_ip) {
        (None, _) => true,
        (Some(list), Some(ip)) => list.iter().any(|a| canonical(*a) == ip),
        (Some(_), None) => false,
    };
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(Gate {
            settings,
            host_allowed,
        })
        .ae_title(settings.ae_title.as_str())
        .read_timeout(settings.timeout)
        .write_timeout(settings.timeout)
        .with_abstract_syntax(dimse::VERIFICATION);
    for (uid, _) in STORAGE_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    for ts in transfer_syntaxes() {
        options = options.with_transfer_syntax(ts);
    }
    let mut assoc = match options.establish(stream) {
        Ok(a) => a,
        Err(e) => {
            status.net(NetChange::Rejected);
            let why = match &e {
                dicom_ul::association::Error::Rejected { association_rj, .. } => {
                    match association_rj.source {
                        AssociationRJSource::ServiceUser(
                            AssociationRJServiceUserReason::CalledAETitleNotRecognized,
                        ) => format!("called AE title is not {}", settings.ae_title),
                        AssociationRJSource::ServiceUser(
                            AssociationRJServiceUserReason::CallingAETitleNotRecognized,
                        ) => "calling AE title not in dicom.allow_ae".to_string(),
                        _ if !host_allowed => "host not in dicom.allow_host".to_string(),
                        _ => format!("{e}"),
                    }
                }
                _ => format!("{e}"),
            };
            status.event(&format!("dicom association from {peer} rejected: {why}"));
            return;
        }
    };
    let calling = assoc.peer_ae_title().trim().to_string();
    let accepted = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .count();
    status.net(NetChange::Association);
    tracing::info!(
        "dicom association from {calling} ({peer}): {accepted} presentation context(s) accepted"
    );
    let mut tally = Tally::default();
    let end = serve(&mut assoc, settings, status, &calling, &mut tally);
    let counts = format!(
        "{} instance(s) stored, {} refused{}",
        tally.stored,
        tally.failed,
        if tally.echoes > 0 {
            format!(", {} echo(es)", tally.echoes)
        } else {
            String::new()
        }
    );
    match end {
        Ok(()) => status.event(&format!(
            "dicom association from {calling} ({peer}) released: {counts}"
        )),
        Err(why) => {
            status.event(&format!(
                "dicom association from {calling} ({peer}) ended: {why}; {counts}; no partial instance kept"
            ));
            let _ = assoc.abort();
        }
    }
}

/// The 128-byte preamble, "DICM" and the file meta group the SCP writes before
/// the data set it receives.
pub fn write_preamble_and_meta<W: Write>(
    w: &mut W,
    sop_class: &str,
    sop_instance: &str,
    ts: &str,
    calling: &str,
) -> std::io::Result<()> {
    let meta = dicom_object::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(ts)
        .source_application_entity_title(calling)
        .build()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    w.write_all(&[0u8; 128])?;
    w.write_all(b"DICM")?;
    meta.write(w).map_err(std::io::Error::other)
}

/// Checks and reads a received instance (the file at `path`, as the SCP wrote
/// it): the element lengths against the bytes received, the parse's estimated
/// memory against `parse_limit_bytes`, then the header up to the pixel data.
/// Ok: the study and series folder names; Err: the C-STORE status and why.
/// Public for the fuzzer (`fuzz/harness.rs`, target `scp`).
pub fn read_received(
    path: &Path,
    sop_instance: &str,
    parse_limit_bytes: u64,
) -> std::result::Result<(String, String), (u16, String)> {
    // The same bounded walk as the watch folder's reader: every declared
    // length checked against the bytes received before dicom-rs allocates
    // anything, and what the parse would hold against this association's
    // share of the memory budget.
    let bounds = match check_element_lengths(path) {
        Ok(b) => b,
        Err(e) => {
            let why = match e {
                Error::Dicom { msg, .. } => msg,
                e => e.to_string(),
            };
            return Err((
                dimse::CANNOT_UNDERSTAND,
                format!("data set not readable: {why}"),
            ));
        }
    };
    if bounds.header_parse_cost() > parse_limit_bytes {
        return Err((
                dimse::OUT_OF_RESOURCES,
                format!(
                    "data set before the pixel data ({} bytes, {} elements, {} items) would take about {} MB to read, more than this association's share of the memory budget ({} MB: appliance.memory_budget_mb / dicom.max_associations)",
                    bounds.header_bytes,
                    bounds.header_elements,
                    bounds.header_items,
                    bounds.header_parse_cost() >> 20,
                    parse_limit_bytes >> 20
                ),
            ));
    }
    let obj = match dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
    {
        Ok(o) => o,
        Err(e) => {
            return Err((
                dimse::CANNOT_UNDERSTAND,
                format!("data set not readable: {e}"),
            ))
        }
    };
    let get = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
            .unwrap_or_default()
    };
    if get(tags::SOP_INSTANCE_UID) != sop_instance {
        return Err((
            dimse::DATA_SET_MISMATCH,
            "SOPInstanceUID differs from the command's".into(),
        ));
    }
    let study = match get(tags::STUDY_INSTANCE_UID) {
        s if !s.is_empty() => s,
        _ => format!("study_{}", get(tags::PATIENT_ID)),
    };
    let series = match get(tags::SERIES_INSTANCE_UID) {
        s if !s.is_empty() => s,
        _ => format!(
            "series_{}_{}",
            get(tags::MODALITY),
            get(tags::SERIES_NUMBER)
        ),
    };
    Ok((study, series))
}

/// An instance being received: its temporary file is removed on drop unless it
/// was renamed into place.
struct Incoming {
    pc_id: u8,
    message_id: u16,
    sop_class: String,
    sop_instance: String,
    tmp: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    /// The first write error; the rest of the data is read and dropped so the
    /// association can go on with the next instance.
    error: Option<std::io::Error>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl Incoming {
    fn start(
        settings: &Settings,
        calling: &str,
        pc_id: u8,
        cmd: &dimse::Command,
        ts: &str,
    ) -> Incoming {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tmp = settings.incoming.join(format!(
            "{}-{}.part",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let mut inc = Incoming {
            pc_id,
            message_id: cmd.message_id,
            sop_class: cmd.sop_class.clone(),
            sop_instance: cmd.sop_instance.clone(),
            tmp,
            file: None,
            error: None,
        };
        let header = (|| -> std::io::Result<std::io::BufWriter<std::fs::File>> {
            let mut w = std::io::BufWriter::new(std::fs::File::create(&inc.tmp)?);
            write_preamble_and_meta(&mut w, &cmd.sop_class, &cmd.sop_instance, ts, calling)?;
            Ok(w)
        })();
        match header {
            Ok(w) => inc.file = Some(w),
            Err(e) => inc.error = Some(e),
        }
        inc
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(w) = &mut self.file {
            if let Err(e) = w.write_all(bytes) {
                self.error = Some(e);
                self.file = None;
            }
        }
    }

    /// Flushes, checks and renames the instance into place: the status to answer.
    fn finish(mut self, settings: &Settings) -> (u16, String) {
        let Some(w) = self.file.take() else {
            let e = self
                .error
                .take()
                .unwrap_or_else(|| std::io::Error::other("not written"));
            return (dimse::OUT_OF_RESOURCES, format!("write failed: {e}"));
        };
        if let Err(e) = w
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
        {
            return (dimse::OUT_OF_RESOURCES, format!("write failed: {e}"));
        }
        let (study, series) =
            match read_received(&self.tmp, &self.sop_instance, settings.parse_limit_bytes) {
                Ok(x) => x,
                Err(refusal) => return refusal,
            };
        let dir = settings
            .root
            .join(super::safe_name(&study))
            .join(super::safe_name(&series));
        let dest = dir.join(format!("{}.dcm", super::safe_name(&self.sop_instance)));
        let placed = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::rename(&self.tmp, &dest))
            .and_then(|_| std::fs::File::open(&dir).and_then(|d| d.sync_all()));
        match placed {
            Ok(()) => (dimse::SUCCESS, String::new()),
            Err(e) => {
                let kind = if io_is_environment(&e) {
                    "environment"
                } else {
                    "input"
                };
                (
                    dimse::OUT_OF_RESOURCES,
                    format!("not placed ({kind} fault): {e}"),
                )
            }
        }
    }
}

fn send_command<S>(assoc: &mut ServerAssociation<S>, pc_id: u8, data: Vec<u8>) -> Result<()>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        })
        .map_err(|e| Error::library(FaultKind::Environment, "response not sent", e))
}

/// The DIMSE loop of one association. Ok after a release; Err says why it ended
/// otherwise (any partial instance is removed by [`Incoming`]'s drop).
fn serve<S>(
    assoc: &mut ServerAssociation<S>,
    settings: &Settings,
    status: &dyn NetStatus,
    calling: &str,
    tally: &mut Tally,
) -> std::result::Result<(), String>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    let mut command = Vec::new();
    let mut current: Option<Incoming> = None;
    loop {
        let pdu = match assoc.receive() {
            Ok(p) => p,
            Err(e) => return Err(format!("connection lost or timed out ({e})")),
        };
        let data = match pdu {
            Pdu::PData { data } => data,
            Pdu::ReleaseRQ => {
                if current.is_some() {
                    return Err("released in the middle of an instance".into());
                }
                let _ = assoc.send(&Pdu::ReleaseRP);
                return Ok(());
            }
            Pdu::AbortRQ { source } => return Err(format!("aborted by the peer ({source:?})")),
            other => return Err(format!("unexpected {}", other.short_description())),
        };
        for pdv in data {
            match pdv.value_type {
                PDataValueType::Command => {
                    if current.is_some() {
                        return Err("a command in the middle of an instance".into());
                    }
                    command.extend_from_slice(&pdv.data);
                    if command.len() > MAX_COMMAND_BYTES {
                        return Err("command set too large".into());
                    }
                    if !pdv.is_last {
                        continue;
                    }
                    let cmd = dimse::parse(&command).map_err(|e| e.to_string())?;
                    command.clear();
                    let pc = assoc
                        .presentation_contexts()
                        .iter()
                        .find(|pc| {
                            pc.id == pdv.presentation_context_id
                                && pc.reason == PresentationContextResultReason::Acceptance
                        })
                        .cloned()
                        .ok_or_else(|| {
                            format!(
                                "presentation context {} not accepted",
                                pdv.presentation_context_id
                            )
                        })?;
                    match cmd.field {
                        dimse::C_ECHO_RQ => {
                            tally.echoes += 1;
                            let rsp = dimse::echo_rsp(cmd.message_id).map_err(|e| e.to_string())?;
                            send_command(assoc, pc.id, rsp).map_err(|e| e.to_string())?;
                        }
                        dimse::C_STORE_RQ if cmd.data_set_type != dimse::NO_DATA_SET => {
                            current = Some(Incoming::start(
                                settings,
                                calling,
                                pc.id,
                                &cmd,
                                &pc.transfer_syntax,
                            ));
                            if pc.abstract_syntax != cmd.sop_class {
                                // Read and drop the data; answered below.
                                if let Some(inc) = &mut current {
                                    inc.file = None;
                                    inc.error = Some(std::io::Error::other("class mismatch"));
                                }
                            }
                        }
                        other => {
                            return Err(format!(
                                "DIMSE command 0x{other:04X} not served (C-ECHO and C-STORE only)"
                            ))
                        }
                    }
                }
                PDataValueType::Data => {
                    let Some(inc) = current.as_mut() else {
                        return Err("data without a C-STORE request".into());
                    };
                    if inc.pc_id != pdv.presentation_context_id {
                        return Err("data on another presentation context".into());
                    }
                    inc.write(&pdv.data);
                    if !pdv.is_last {
                        continue;
                    }
                    let Some(inc) = current.take() else { continue };
                    let (pc_id, msg, class, inst) = (
                        inc.pc_id,
                        inc.message_id,
                        inc.sop_class.clone(),
                        inc.sop_instance.clone(),
                    );
                    let class_ok = assoc
                        .presentation_contexts()
                        .iter()
                        .any(|pc| pc.id == pc_id && pc.abstract_syntax == class);
                    let (code, why) = if class_ok {
                        inc.finish(settings)
                    } else {
                        drop(inc);
                        (
                            dimse::SOP_CLASS_NOT_SUPPORTED,
                            "SOP class differs from the presentation context's".into(),
                        )
                    };
                    if code == dimse::SUCCESS {
                        tally.stored += 1;
                        status.net(NetChange::Instance);
                    } else {
                        tally.failed += 1;
                        status.net(NetChange::StoreFailure);
                        status.event(&format!(
                            "dicom C-STORE of {inst} from {calling} refused (status 0x{code:04X}): {why}"
                        ));
                    }
                    let rsp = dimse::store_rsp(msg, &class, &inst, code, &why)
                        .map_err(|e| e.to_string())?;
                    send_command(assoc, pc_id, rsp).map_err(|e| e.to_string())?;
                }
            }
        }
    }
}
