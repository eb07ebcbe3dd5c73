//! A mutation fuzzer on stable Rust for organdose's input parsers (issue 20,
//! deliver 4): the DICOM header/geometry reader, the NIfTI reader, study.json
//! and the status-port command parser; and (issue 42) the Storage SCP's
//! data-set path: the bytes a C-STORE delivers, as the SCP writes and reads
//! them, and study.json's file names (an accepted study never reads outside
//! its folder).
//!
//! No coverage instrumentation (cargo-fuzz needs nightly, cargo-afl a toolchain
//! this machine does not have): inputs are seeds from `fuzz/corpus/<target>/`
//! changed by stacked byte, integer, token and structure-aware mutations
//! (DICOM element lengths, NIfTI header fields, JSON numbers). As cheap
//! feedback, an input that produces an outcome not seen before (the error
//! message with its numbers and paths removed) joins the pool, so later inputs
//! build on it.
//!
//! A crash is a panic, a broken property (below), or an allocation above the
//! target's budget; each is saved under the crash folder with the reason.
//! Before every run the input is written to `<crash dir>/work-<target>/`, so
//! an abort (a refused allocation above the allocator's cap) leaves it there.
//!
//! Shared by `fuzz/fuzz.rs` (the long runs) and `tests/fuzz_short.rs` (CI);
//! both install `tests/common/alloc_meter.rs` as the global allocator.

use organdose::config::Config;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::alloc_meter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Dicom,
    Nifti,
    StudyJson,
    Serial,
    Scp,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Dicom,
        Target::Nifti,
        Target::StudyJson,
        Target::Serial,
        Target::Scp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Dicom => "dicom",
            Target::Nifti => "nifti",
            Target::StudyJson => "study_json",
            Target::Serial => "serial",
            Target::Scp => "scp",
        }
    }

    #[allow(dead_code)] // used by fuzz/fuzz.rs, not by the CI test
    pub fn from_name(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Largest single allocation accepted for an input of `len` bytes: the
    /// readers may hold a few copies of the data (bytes, f64 values, the f32
    /// volume), never anything sized from a header alone.
    pub fn budget(self, len: usize) -> usize {
        (16 << 20) + 16 * len
    }

    fn tokens(self) -> &'static [&'static [u8]] {
        match self {
            Target::Dicom | Target::Scp => &[
                b"DICM",
                b"\xe0\x7f\x10\x00",
                b"\xfe\xff\x00\xe0",
                b"\xfe\xff\x0d\xe0",
                b"\xfe\xff\xdd\xe0",
                b"\xff\xff\xff\xff",
                b"SQ\0\0\xff\xff\xff\xff",
                b"UT\0\0",
                b"OB\0\0",
                b"1.2.840.10008.1.2",
                b"1.2.840.10008.1.2.2",
                b"1.2.840.10008.1.2.1.99",
                b"1.2.840.10008.1.2.5",
                b"20260301",
                b"081500.123456",
                b"20260301081500+0100",
                b"2026\xc3\xa90301",
                b"\\",
                b"1e308",
                b"-0",
                b"NaN",
            ],
            Target::Nifti => &[b"n+1\0", b"ni1\0", b"\x5c\x01\x00\x00", b"\0\0\x80\x7f"],
            Target::StudyJson => &[
                b"1e300",
                b"-1",
                b"0",
                b"NaN",
                b"1e-320",
                b"18446744073709551616",
                b"\"2026-03-01T08:00:00+05:00\"",
                b"\"2026-02-30T08:00:00\"",
                b"\"2026-03-01T08:00:0\xc3\xa9\"",
                b"\"../../etc/passwd\"",
                b"\"/etc/passwd\"",
                b"\"/proc/self/environ\"",
                b"\"ct.nii.gz/../../x\"",
                b"\"./ct.nii.gz\"",
                b"null",
                b"[]",
                b"{}",
                b"\"\"",
                b"\"t_h\": ",
            ],
            Target::Serial => &[
                b"STATUS",
                b"PAUSE",
                b"RESUME",
                b"\r\n",
                b"\n",
                b"\xff\xfe",
                b"\xc3\xa9",
                b"\0",
            ],
        }
    }
}

/// xorshift64*: deterministic, seeded from the command line.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING_U32: [u32; 12] = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFF0,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
];

const MAX_INPUT: usize = 1 << 20;

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        if let Some(x) = buf.get_mut(at + i) {
            *x = *b;
        }
    }
}

/// Offsets where an explicit-VR element header seems to start (two capital
/// letters after a 4-byte tag): the length fields worth changing.
fn vr_offsets(buf: &[u8], start: usize) -> Vec<usize> {
    (start..buf.len().saturating_sub(8))
        .filter(|&o| buf[o + 4].is_ascii_uppercase() && buf[o + 5].is_ascii_uppercase())
        .collect()
}

fn mutate(t: Target, rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    let n = 1 + rng.below(4);
    for _ in 0..n {
        let len = input.len();
        let at = rng.below(len.max(1));
        match rng.below(13) {
            0 if len > 0 => input[at] ^= 1 << rng.below(8),
            1 if len > 0 => input[at] = rng.next() as u8,
            2 => {
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())] as u16;
                let b = if rng.below(2) == 0 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                put(input, at, &b);
            }
            3 => {
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                let b = if rng.below(2) == 0 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                put(input, at, &b);
            }
            4 if len > 1 => {
                let k = 1 + rng.below((len - at).min(64));
                input.drain(at..(at + k).min(len));
            }
            5 => {
                let k = 1 + rng.below(32);
                let chunk: Vec<u8> = if len > 0 && rng.below(2) == 0 {
                    let from = rng.below(len);
                    input[from..(from + k).min(len)].to_vec()
                } else {
                    (0..k).map(|_| rng.next() as u8).collect()
                };
                let at = at.min(input.len());
                input.splice(at..at, chunk);
            }
            6 if len > 0 => input.truncate(rng.below(len)),
            7 if !pool.is_empty() => {
                // Splice: our head, another input's tail.
                let other = &pool[rng.below(pool.len())];
                let from = rng.below(other.len().max(1));
                input.truncate(at);
                input.extend_from_slice(other.get(from..).unwrap_or(&[]));
            }
            8 => {
                let toks = t.tokens();
                let tok = toks[rng.below(toks.len())];
                let at = at.min(input.len());
                input.splice(at..at, tok.iter().copied());
            }
            9 => {
                let toks = t.tokens();
                put(input, at, toks[rng.below(toks.len())]);
            }
            10 if t == Target::Dicom || t == Target::Scp => {
                // An element's length field: 2 bytes (short VRs) or 4 (long).
                let offs = vr_offsets(input, if t == Target::Dicom { 132 } else { 0 });
                if !offs.is_empty() {
                    let o = offs[rng.below(offs.len())];
                    let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                    let long = matches!(
                        &input[o + 4..o + 6],
                        b"OB" | b"OW" | b"SQ" | b"UN" | b"UT" | b"OF" | b"OD" | b"UC" | b"UR"
                    );
                    if long {
                        put(input, o + 8, &v.to_le_bytes());
                    } else {
                        put(input, o + 6, &(v as u16).to_le_bytes());
                    }
                }
            }
            10 if t == Target::Nifti => {
                // A header field: dims, datatype, bitpix, pixdim, vox_offset, scl, codes.
                const FIELDS: [usize; 12] = [40, 42, 44, 46, 48, 70, 72, 80, 108, 112, 252, 254];
                let o = FIELDS[rng.below(FIELDS.len())];
                let v: [u8; 4] = match rng.below(4) {
                    0 => (INTERESTING_U32[rng.below(12)] as i16 as i32).to_le_bytes(),
                    1 => [1e30f32, -1.0, f32::NAN, f32::INFINITY, 0.0, 348.0][rng.below(6)]
                        .to_le_bytes(),
                    2 => (rng.below(70000) as i32).to_le_bytes(),
                    _ => INTERESTING_U32[rng.below(12)].to_le_bytes(),
                };
                let w = if o < 80 && o != 108 { 2 } else { 4 };
                put(input, o, &v[..w]);
            }
            _ => {
                // Text targets: a number replaced by an extreme one.
                if let Some(start) = input.iter().skip(at).position(|b| b.is_ascii_digit()) {
                    let s = at + start;
                    let e = input[s..]
                        .iter()
                        .position(|b| !(b.is_ascii_digit() || *b == b'.'))
                        .map(|p| s + p)
                        .unwrap_or(input.len());
                    let toks: [&[u8]; 6] = [b"1e300", b"-1", b"0", b"1e-320", b"99999999", b"-0"];
                    input.splice(s..e, toks[rng.below(6)].iter().copied());
                }
            }
        }
    }
    input.truncate(MAX_INPUT);
}

/// What one input did: its class (for the pool's feedback) or a broken property.
enum Outcome {
    Class(String),
    Broken(String),
}

/// The error text with numbers and the work folder removed: inputs that fail
/// the same way with other numbers are one class.
fn class(prefix: &str, e: &dyn std::fmt::Display, work: &Path) -> String {
    let s = e.to_string().replace(&work.display().to_string(), "");
    let mut out = String::from(prefix);
    let mut last_digit = false;
    for c in s.chars().take(120) {
        let d = c.is_ascii_digit();
        if !(d && last_digit) {
            out.push(if d { '#' } else { c });
        }
        last_digit = d;
    }
    out
}

fn exec(t: Target, input: &[u8], work: &Path, cfg: &Config, n: u64) -> Outcome {
    match t {
        Target::Dicom => exec_dicom(input, work, cfg),
        Target::Nifti => exec_nifti(input, work, n),
        Target::StudyJson => exec_study(input, work),
        Target::Serial => exec_serial(input, work),
        Target::Scp => exec_scp(input, work, n),
    }
}

/// The Storage SCP's data-set path: `input` is the data set a C-STORE
/// delivers (no preamble, no meta), written after the SCP's own meta group
/// (explicit or implicit VR little endian, alternately) and read as the SCP
/// reads it, within the share of the default memory budget one of the default
/// eight associations gets.
fn exec_scp(input: &[u8], work: &Path, n: u64) -> Outcome {
    use organdose::net::scp;
    use std::io::Write;
    let ts = if n.is_multiple_of(2) {
        dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN
    } else {
        dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN
    };
    let p = work.join("scp").join("in.dcm");
    let written = std::fs::File::create(&p).and_then(|f| {
        let mut w = std::io::BufWriter::new(f);
        scp::write_preamble_and_meta(
            &mut w,
            dicom_dictionary_std::uids::CT_IMAGE_STORAGE,
            "1.2.3",
            ts,
            "FUZZ",
        )?;
        w.write_all(input)?;
        w.flush()
    });
    if written.is_err() {
        return Outcome::Class("write failed".into());
    }
    let cfg = Config::default();
    let limit = scp::parse_limit_bytes(cfg.appliance.memory_budget_mb, cfg.dicom.max_associations);
    match scp::read_received(&p, "1.2.3", limit) {
        Ok((study, series)) => {
            // Property: the folder names are made safe before they are joined.
            let (a, b) = (
                organdose::net::safe_name(&study),
                organdose::net::safe_name(&series),
            );
            if [&a, &b]
                .iter()
                .any(|x| x.is_empty() || x.contains('/') || x.as_str() == "..")
            {
                return Outcome::Broken(format!("unsafe folder names {a:?} / {b:?}"));
            }
            Outcome::Class("stored".into())
        }
        Err((code, why)) => Outcome::Class(class(&format!("0x{code:04X} "), &why, work)),
    }
}

fn exec_dicom(input: &[u8], work: &Path, cfg: &Config) -> Outcome {
    use organdose::io::dicom;
    let dir = work.join("dicom");
    let p = dir.join("in.dcm");
    if std::fs::write(&p, input).is_err() {
        return Outcome::Class("write failed".into());
    }
    let scan = match dicom::scan(&dir) {
        Ok(s) => s,
        Err(e) => return Outcome::Class(class("scan: ", &e, work)),
    };
    if let Some((_, why)) = scan.rejected.first() {
        return Outcome::Class(class("rejected: ", why, work));
    }
    let mut c = String::from("series:");
    for s in &scan.series {
        let info = match s.info(&cfg.ingest) {
            Ok(i) => i,
            Err(e) => return Outcome::Class(class("info: ", &e, work)),
        };
        if let Some(pr) = &info.problem {
            c += &class(" problem ", pr, work);
            continue;
        }
        match s.read(&cfg.ingest) {
            Ok(v) => {
                // Property: a volume that reads has the geometry inspect showed.
                if v.geom.dims != info.dims {
                    return Outcome::Broken(format!(
                        "read gave dims {:?}, inspect {:?}",
                        v.geom.dims, info.dims
                    ));
                }
                c += &format!(" read {}", info.modality);
            }
            Err(e) => c += &class(" read ", &e, work),
        }
    }
    if let Err(e) = organdose::study::assemble(scan.series) {
        c += &class(" assemble ", &e, work);
    }
    Outcome::Class(c)
}

fn exec_nifti(input: &[u8], work: &Path, n: u64) -> Outcome {
    use organdose::io::nifti;
    let p = work.join("nifti").join("in.nii");
    if std::fs::write(&p, input).is_err() {
        return Outcome::Class("write failed".into());
    }
    let mut c = match nifti::read_nifti(&p) {
        Ok(v) => format!("read {:?}", v.geom.dims.map(|d| d.min(2))),
        Err(e) => class("read: ", &e, work),
    };
    if let Ok(f) = nifti::NiftiFile::open(&p) {
        let frames = f.header.frames().min(3);
        for t in 0..frames {
            if let Err(e) = f.read_frame(&p, t) {
                c += &class(" frame ", &e, work);
                break;
            }
        }
    }
    if let Err(e) = nifti::read_nifti_labels_bytes(input.to_vec(), Path::new("mem.nii")) {
        c += &class(" labels ", &e, work);
    }
    // Every fourth input also as .nii.gz (the streamed path).
    if n.is_multiple_of(4) {
        use std::io::Write;
        let gz = work.join("nifti").join("in.nii.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if enc.write_all(input).is_ok() {
            if let Ok(bytes) = enc.finish() {
                if std::fs::write(&gz, bytes).is_ok() {
                    match (nifti::read_nifti(&gz), nifti::read_nifti(&p)) {
                        (Ok(a), Ok(b)) if a.data.len() != b.data.len() => {
                            return Outcome::Broken(".nii.gz and .nii of one image differ".into())
                        }
                        // One image is one image, compressed or not; the only
                        // allowed difference is the gzip-only size check.
                        (Ok(_), Err(e)) | (Err(e), Ok(_))
                            if !e.to_string().contains("gzip stream can hold") =>
                        {
                            return Outcome::Broken(format!(".nii.gz and .nii disagree: {e}"));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Outcome::Class(c)
}

fn exec_study(input: &[u8], work: &Path) -> Outcome {
    let dir = work.join("study");
    if std::fs::write(dir.join("study.json"), input).is_err() {
        return Outcome::Class("write failed".into());
    }
    match organdose::study::load_study(&dir) {
        Ok(s) => {
            // Properties of an accepted study: plausible activity, finite
            // times in order.
            let a = s.injection.activity_mbq;
            if !(a.is_finite() && a > 0.0) {
                return Outcome::Broken(format!("accepted activity {a} MBq"));
            }
            if s.timepoints.iter().any(|t| !t.t_h.is_finite()) {
                return Outcome::Broken("accepted a non-finite t_h".into());
            }
            // Property (issue 42): every file it names is inside the study folder.
            let mut files = vec![&s.diagnostic_ct];
            for t in &s.timepoints {
                files.push(&t.spect);
                files.extend(t.ldct.as_ref());
            }
            for f in files {
                if let organdose::study::Source::Nifti(p) = f {
                    let inside = p.strip_prefix(&dir).is_ok_and(|r| {
                        r.components()
                            .all(|c| matches!(c, std::path::Component::Normal(_)))
                    });
                    if !inside {
                        return Outcome::Broken(format!(
                            "accepted a path outside the study folder: {}",
                            p.display()
                        ));
                    }
                }
            }
            Outcome::Class(format!("ok {} time points", s.timepoints.len().min(5)))
        }
        Err(e) => Outcome::Class(class("", &e, work)),
    }
}

fn exec_serial(input: &[u8], work: &Path) -> Outcome {
    use organdose::appliance::status::{serve_commands, Sink, StatusPort};
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Shared::default();
    let port = StatusPort::new(Sink::Writer(Box::new(out.clone())), &work.join("serial"));
    let paused = std::sync::atomic::AtomicBool::new(false);
    // Property: whatever came before, a STATUS on its own line is answered.
    let mut line = input.to_vec();
    line.extend_from_slice(b"\nSTATUS\n");
    serve_commands(std::io::Cursor::new(line), &port, &paused);
    let text = out.0.lock().map(|v| v.clone()).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    if !text.contains("organdose status") {
        return Outcome::Broken("a STATUS after this input got no answer".into());
    }
    let lines = text.lines().count();
    Outcome::Class(format!(
        "{} lines, paused {}",
        lines.min(4),
        paused.load(std::sync::atomic::Ordering::SeqCst)
    ))
}

/// Runs target `t` once on the file `input`: Ok(what happened) or Err(why it
/// is a crash: a panic, a broken property, an allocation above the budget).
pub fn replay(t: Target, input: &Path, crash_dir: &Path) -> Result<String, String> {
    let work = crash_dir.join(format!("work-{}", t.name()));
    prepare_work(&work);
    let bytes = std::fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let (r, largest, peak) = alloc_meter::measure(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exec(t, &bytes, &work, &Config::default(), 0)
        }))
    });
    let sizes = format!("largest allocation {largest} B, peak {peak} B");
    match r {
        Err(_) => Err(format!("panic ({sizes})")),
        Ok(Outcome::Broken(w)) => Err(format!("property broken: {w} ({sizes})")),
        Ok(Outcome::Class(_)) if largest > t.budget(bytes.len()) => Err(format!(
            "over the allocation budget of {} B ({sizes})",
            t.budget(bytes.len())
        )),
        Ok(Outcome::Class(c)) => Ok(format!("{c} ({sizes})")),
    }
}

fn prepare_work(work: &Path) {
    for sub in ["dicom", "nifti", "study", "serial", "scp"] {
        let _ = std::fs::create_dir_all(work.join(sub));
    }
    // study.json names these; only their presence is checked when it loads.
    for f in [
        "ct.nii.gz",
        "spect_1.nii.gz",
        "ldct_1.nii.gz",
        "spect_2.nii.gz",
    ] {
        let _ = std::fs::write(work.join("study").join(f), b"");
    }
}

/// Seeds: the files of `fuzz/corpus/<target>/`.
pub fn seeds(corpus: &Path, t: Target) -> Vec<Vec<u8>> {
    let dir = corpus.join(t.name());
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

#[derive(Debug, Default)]
pub struct Report {
    pub target: String,
    pub execs: u64,
    pub seconds: f64,
    pub seeds: usize,
    pub pool: usize,
    pub classes: usize,
    pub crashes: Vec<String>,
    pub over_budget: u64,
    /// Largest single allocation seen, and its input's length.
    pub max_alloc: (usize, usize),
    /// Largest ratio of allocation to input length.
    pub max_alloc_ratio: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} execs in {:.0} s ({:.0}/s), {} seeds, pool {}, {} outcome classes, {} crashes, {} over the allocation budget, largest allocation {} B (input {} B), largest allocation/input {:.1}",
            self.target,
            self.execs,
            self.seconds,
            self.execs as f64 / self.seconds.max(1e-9),
            self.seeds,
            self.pool,
            self.classes,
            self.crashes.len(),
            self.over_budget,
            self.max_alloc.0,
            self.max_alloc.1,
            self.max_alloc_ratio
        )
    }
}

thread_local! {
    static PANIC_MSG: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs target `t` for `budget` (wall clock) from seeds in `corpus`; crashes are
/// written to `crash_dir`.
pub fn run(t: Target, budget: Duration, seed: u64, corpus: &Path, crash_dir: &Path) -> Report {
    let work = crash_dir.join(format!("work-{}", t.name()));
    prepare_work(&work);
    let cfg = Config::default();
    let seeds = seeds(corpus, t);
    let mut pool = seeds.clone();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut classes = std::collections::HashSet::new();
    let mut rng = Rng::new(seed);
    let mut rep = Report {
        target: t.name().into(),
        seeds: seeds.len(),
        ..Default::default()
    };
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("{info}");
        PANIC_MSG.with(|m| *m.borrow_mut() = Some(msg));
    }));
    let start = Instant::now();
    while start.elapsed() < budget {
        let mut input = if rep.execs < seeds.len() as u64 {
            // Each seed once as it is.
            seeds[rep.execs as usize].clone()
        } else {
            let mut v = pool[rng.below(pool.len())].clone();
            mutate(t, &mut rng, &mut v, &pool);
            v
        };
        input.truncate(MAX_INPUT);
        let n = rep.execs;
        let (res, largest, _) = alloc_meter::measure(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                exec(t, &input, &work, &cfg, n)
            }))
        });
        rep.execs += 1;
        let len = input.len().max(1);
        if largest > rep.max_alloc.0 {
            rep.max_alloc = (largest, input.len());
        }
        rep.max_alloc_ratio = rep.max_alloc_ratio.max(largest as f64 / len as f64);
        let why = match res {
            Err(_) => Some(
                PANIC_MSG
                    .with(|m| m.borrow_mut().take())
                    .unwrap_or_else(|| "panic".into()),
            ),
            Ok(Outcome::Broken(w)) => Some(format!("property: {w}")),
            Ok(Outcome::Class(c)) => {
                if classes.insert(c) && pool.len() < 2000 {
                    pool.push(input.clone());
                }
                None
            }
        };
        let over = largest > t.budget(input.len());
        if over {
            rep.over_budget += 1;
        }
        if let Some(why) = why.or_else(|| {
            over.then(|| {
                format!(
                    "allocation of {largest} B for a {}-byte input (budget {})",
                    input.len(),
                    t.budget(input.len())
                )
            })
        }) {
            let name = format!("crash-{}-{}", t.name(), rep.crashes.len());
            let _ = std::fs::create_dir_all(crash_dir);
            let _ = std::fs::write(crash_dir.join(format!("{name}.bin")), &input);
            let _ = std::fs::write(crash_dir.join(format!("{name}.txt")), &why);
            rep.crashes.push(format!("{name}: {why}"));
        }
    }
    std::panic::set_hook(prev_hook);
    rep.seconds = start.elapsed().as_secs_f64();
    rep.pool = pool.len();
    rep.classes = classes.len();
    rep
}
