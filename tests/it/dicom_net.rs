//! The DICOM network against real peers, on loopback with free ports above 1024
//! picked at run time:
//! - dcmtk's `storescu` sends a phantom export into the box's Storage SCP while
//!   `organdose watch` runs; the cycle's dose_summary.json must equal the one
//!   `organdose run` writes for the same folder;
//! - a calling AE not on the list, a wrong called AE and a host not on the list
//!   are rejected (`echoscu`/`storescu` fail, nothing is written); an association
//!   aborted or dropped half-way through an instance leaves no file; a write that
//!   fails (the box runs under a file-size limit, `prlimit --fsize`, so the write
//!   gets EFBIG as it would ENOSPC on a full disk) is answered with 0xA700, not
//!   success, and leaves no file;
//! - the outbox sends each result to a real Orthanc (started by the test with its
//!   own configuration), read back through Orthanc's REST API: queued while
//!   Orthanc is down, delivered after it starts by a restarted box, each instance
//!   received exactly once (Orthanc's Lua `ReceivedInstanceFilter` logs every
//!   C-STORE it receives, duplicates included).
//!
//! The tools (Debian dcmtk and orthanc) are installed pinned by `.ci/run`; there
//! ORGANDOSE_REQUIRE_TOOLS=1 makes a missing tool a failure. Elsewhere a test
//! without its tools says so and passes without checking.

use crate::common::proc;
use crate::common::tools;
use proc::{wait_until, Proc};

use organdose::appliance::daemon::records;
use organdose::net::{outbox, scu};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn have(what: &str, exe: &str) -> bool {
    tools::on_path(what, "DICOM network", exe)
}

fn have_dcmtk() -> bool {
    have("dcmtk's storescu (apt-get install dcmtk)", "storescu")
        && have("dcmtk's echoscu (apt-get install dcmtk)", "echoscu")
}

use crate::common::fixtures::{all_files, free_port, read, series_dirs, BIN};
use tools::small_dicom_phantom as phantom;

fn config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("box.toml");
    std::fs::write(
        &p,
        format!(
            "[appliance]\nquiet_period_s = 1.0\npoll_interval_s = 0.1\nheartbeat_s = 0.2\n{extra}"
        ),
    )
    .unwrap();
    p
}

/// `organdose watch` with status lines in `events`; `wrap` runs it under another
/// command (prlimit).
fn watch(
    cfg: &Path,
    export: &Path,
    out: &Path,
    events: &Path,
    args: &[&str],
    wrap: &[&str],
) -> Command {
    let mut c = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    c.arg("--config")
        .arg(cfg)
        .arg("watch")
        .arg("--in")
        .arg(export)
        .arg("--out")
        .arg(out)
        .arg("--status")
        .arg(format!("file:{}", events.display()))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// A box with a Storage SCP on a free port; returns it once it listens.
fn scp_box(tmp: &Path, export: &Path, args: &[&str], wrap: &[&str]) -> (Proc, u16, PathBuf) {
    scp_box_with(tmp, export, "", args, wrap)
}

/// [`scp_box`] with `extra` appended to its configuration file.
fn scp_box_with(
    tmp: &Path,
    export: &Path,
    extra: &str,
    args: &[&str],
    wrap: &[&str],
) -> (Proc, u16, PathBuf) {
    let port = free_port();
    let events = tmp.join("events.log");
    let cfg = config(tmp, extra);
    let p = port.to_string();
    let mut all = vec![
        "--dicom-port",
        p.as_str(),
        "--dicom-bind",
        "127.0.0.1",
        "--ae-title",
        "ORGANDOSE",
        "--truth-root",
    ];
    let truth = tmp.join("no-truth");
    let truth_s = truth.display().to_string();
    all.push(&truth_s);
    all.extend_from_slice(args);
    let child = watch(&cfg, export, &tmp.join("out"), &events, &all, wrap)
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_until("the SCP to listen", 60, || {
        read(&events).contains(&format!("listening on 127.0.0.1:{port}"))
    });
    (proc, port, events)
}

fn dcmtk(tool: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool).args(args).output().unwrap()
}

fn ct_axial() -> Vec<String> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated/ct_axial");
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    v.sort();
    v
}

fn dcm_files(export: &Path) -> Vec<PathBuf> {
    all_files(export)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect()
}

#[test]
fn storescu_into_the_scp_gives_the_same_summary_as_run() {
    if !have_dcmtk() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient_dir = phantom(&staging, 31);
    let export = tmp.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let out = tmp.path().join("out");
    let events = tmp.path().join("events.log");
    let cfg = config(tmp.path(), "");
    let port = free_port().to_string();
    let _box = Proc(
        watch(
            &cfg,
            &export,
            &out,
            &events,
            &[
                "--truth-root",
                staging.to_str().unwrap(),
                "--dicom-port",
                &port,
                "--dicom-bind",
                "127.0.0.1",
                "--ae-title",
                "ORGANDOSE",
                "--allow-ae",
                "CONSOLE",
            ],
            &[],
        )
        .spawn()
        .unwrap(),
    );
    wait_until("the SCP to listen", 60, || {
        read(&events).contains("listening on")
    });
    let dirs = series_dirs(&patient_dir);
    let sent: usize = dirs.iter().map(|d| all_files(d).len()).sum();
    let mut args = vec![
        "-aet",
        "CONSOLE",
        "-aec",
        "ORGANDOSE",
        "+sd",
        "127.0.0.1",
        &port,
    ];
    let dir_strings: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    args.extend(dir_strings.iter().map(|s| s.as_str()));
    let st = dcmtk("storescu", &args);
    assert!(
        st.status.success(),
        "storescu: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    // The whole patient arrived by the network: one cycle, final.
    wait_until("the cycle to finish", 600, || {
        records(&out).is_ok_and(|r| {
            r.values()
                .any(|c| c.outcome == "done" && c.summary_status == "final")
        })
    });
    let recs = records(&out).unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let id = recs.keys().next().unwrap().clone();
    let got = read(&out.join(&id).join("dose_summary.json"));
    let reference = tmp.path().join("reference");
    let st = Command::new(BIN)
        .arg("run")
        .arg(&patient_dir)
        .arg("--truth")
        .arg("-o")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_eq!(
        got,
        read(&reference.join("dose_summary.json")),
        "watch over the network and `run` on the folder differ"
    );
    // Every instance is a whole file in the watched folder, nothing left over.
    let files = all_files(&export);
    assert_eq!(dcm_files(&export).len(), sent, "{files:?}");
    assert_eq!(files.len(), sent, "only the instances: {files:?}");
    let status: serde_json::Value = serde_json::from_str(&read(&out.join("status.json"))).unwrap();
    assert_eq!(status["dicom_instances"], sent as u64, "{status}");
    assert_eq!(status["dicom_store_failures"], 0, "{status}");
    let log = read(&events);
    assert!(log.contains("calling AE titles accepted: CONSOLE"), "{log}");
    assert!(
        log.contains(&format!("released: {sent} instance(s) stored")),
        "{log}"
    );
}

#[test]
fn wrong_called_ae_calling_ae_or_host_is_rejected_and_nothing_written() {
    if !have_dcmtk() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let (_box, port, events) = scp_box(tmp.path(), &export, &["--allow-ae", "CONSOLE"], &[]);
    let port = port.to_string();
    let ok = dcmtk(
        "echoscu",
        &["-aet", "CONSOLE", "-aec", "ORGANDOSE", "127.0.0.1", &port],
    );
    assert!(ok.status.success(), "the allowed peer is answered");
    let files = ct_axial();
    for (calling, called) in [("INTRUDER", "ORGANDOSE"), ("CONSOLE", "WRONG")] {
        let e = dcmtk(
            "echoscu",
            &["-aet", calling, "-aec", called, "127.0.0.1", &port],
        );
        assert!(!e.status.success(), "echo {calling} -> {called} accepted");
        let mut args = vec!["-aet", calling, "-aec", called, "127.0.0.1", &port];
        args.extend(files.iter().map(|s| s.as_str()));
        let s = dcmtk("storescu", &args);
        assert!(!s.status.success(), "store {calling} -> {called} accepted");
        let err = String::from_utf8_lossy(&s.stderr).to_string();
        assert!(err.contains("Association Rejected"), "{err}");
    }
    assert!(dcm_files(&export).is_empty(), "{:?}", all_files(&export));
    wait_until("the rejection lines", 30, || {
        let log = read(&events);
        log.contains("rejected: calling AE title not in dicom.allow_ae")
            && log.contains("rejected: called AE title is not ORGANDOSE")
    });
    // Positive control: the allowed AE stores the same files.
    let mut args = vec!["-aet", "CONSOLE", "-aec", "ORGANDOSE", "127.0.0.1", &port];
    args.extend(files.iter().map(|s| s.as_str()));
    assert!(dcmtk("storescu", &args).status.success());
    assert_eq!(dcm_files(&export).len(), files.len());
    drop(_box);

    // A host allowlist without this host: even the allowed AE is refused.
    let tmp2 = tempfile::tempdir().unwrap();
    let export2 = tmp2.path().join("export");
    std::fs::create_dir_all(&export2).unwrap();
    let (_box2, port2, events2) = scp_box(
        tmp2.path(),
        &export2,
        &["--allow-ae", "CONSOLE", "--allow-host", "192.0.2.7"],
        &[],
    );
    let port2 = port2.to_string();
    let e = dcmtk(
        "echoscu",
        &["-aet", "CONSOLE", "-aec", "ORGANDOSE", "127.0.0.1", &port2],
    );
    assert!(!e.status.success());
    wait_until("the host rejection line", 30, || {
        read(&events2).contains("rejected: host not in dicom.allow_host")
    });
    assert!(all_files(&export2).is_empty());
}

#[test]
fn no_allowlist_is_said_at_start_up_and_an_aborted_association_leaves_nothing() {
    use dicom_ul::association::client::ClientAssociationOptions;
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    if !have_dcmtk() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let (_box, port, events) = scp_box(tmp.path(), &export, &[], &[]);
    // The line follows the "listening" one that scp_box waited for: wait for it too
    // (read at once, it was missing in one full-suite run of 2026-12-02).
    wait_until("the no-allowlist line", 30, || {
        read(&events).contains("no allow_ae list, ANY calling AE title is accepted")
    });
    let file = &ct_axial()[0];
    let info = scu::file_info(Path::new(file)).unwrap();
    let bytes = std::fs::read(file).unwrap();
    let data = &bytes[info.data_offset as usize..];
    // Half an instance, then an A-ABORT; then half an instance and the TCP
    // connection closed without a word (a console switched off).
    for abort in [true, false] {
        let mut a = ClientAssociationOptions::new()
            .calling_ae_title("ANYONE")
            .called_ae_title("ORGANDOSE")
            .with_presentation_context(info.sop_class.as_str(), vec![info.transfer_syntax.as_str()])
            .establish(("127.0.0.1", port))
            .unwrap();
        let pc = a.presentation_contexts()[0].id;
        let cmd = organdose::net::dimse::store_rq(1, &info.sop_class, &info.sop_instance).unwrap();
        for (kind, data, last) in [
            (PDataValueType::Command, cmd, true),
            (PDataValueType::Data, data[..data.len() / 2].to_vec(), false),
        ] {
            a.send(&dicom_ul::Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc,
                    value_type: kind,
                    is_last: last,
                    data,
                }],
            })
            .unwrap();
        }
        let n = read(&events).matches("no partial instance kept").count();
        if abort {
            a.abort().unwrap();
        } else {
            a.inner_stream().shutdown(std::net::Shutdown::Both).unwrap();
            drop(a);
        }
        wait_until("the SCP to end the association", 30, || {
            read(&events).matches("no partial instance kept").count() > n
        });
        assert!(
            all_files(&export).is_empty(),
            "abort={abort}: {:?}",
            all_files(&export)
        );
    }
    // A peer that speaks no DICOM at all (a port scanner): its connection ends,
    // the box goes on.
    let mut junk = TcpStream::connect(("127.0.0.1", port)).unwrap();
    junk.write_all(b"GET / HTTP/1.0\r\n\r\n\xff\xff\xff\xff")
        .unwrap();
    drop(junk);
    wait_until("the junk peer to be turned away", 30, || {
        read(&events).matches("rejected").count() >= 1
    });
    // The SCP still serves after all three.
    let p = port.to_string();
    assert!(
        dcmtk("storescu", &["-aec", "ORGANDOSE", "127.0.0.1", &p, file])
            .status
            .success()
    );
    assert_eq!(dcm_files(&export).len(), 1);
}

#[test]
fn a_write_that_fails_is_answered_out_of_resources_and_leaves_nothing() {
    use organdose::io::dicom_write::{
        write_ct_series, CtInfo, DicomPatient, DicomSeries, DicomStudy,
    };
    use organdose::volume::{Geometry, Volume};
    if !have_dcmtk() || !have("prlimit (util-linux)", "prlimit") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // One 512 x 512 CT slice: 512 KiB of pixels, over the 128 KiB the box may write.
    let g = Geometry::new([512, 512, 1], [0.8, 0.8, 2.0], [0.0, 0.0, 0.0]);
    let vol = Volume::new(g, vec![40.0f32; 512 * 512]).unwrap();
    let big = write_ct_series(
        &vol,
        &DicomPatient {
            id: "NET0001".into(),
            name: "TEST^NET".into(),
            birth_date: "19600101".into(),
            sex: "F".into(),
            issuer: String::new(),
        },
        &DicomStudy {
            uid: "2.25.71".into(),
            date: "20260101".into(),
            time: "090000".into(),
            description: "NET".into(),
            study_id: "1".into(),
            accession: "A1".into(),
        },
        &DicomSeries {
            uid: "2.25.72".into(),
            number: 2,
            description: "big".into(),
            date: "20260101".into(),
            time: "090000".into(),
            frame_of_reference_uid: "2.25.73".into(),
            acquisition_date: "20260101".into(),
            acquisition_time: "090000".into(),
            manufacturer: "test".into(),
            model: "test".into(),
            station: "TEST".into(),
            body_part: "ABDOMEN".into(),
        },
        &CtInfo {
            kvp: 120.0,
            tube_current_ma: 100,
            exposure_mas: 100,
            kernel: "B30f".into(),
            contrast_agent: None,
            window_center: 40.0,
            window_width: 400.0,
        },
        &tmp.path().join("big"),
    )
    .unwrap();
    assert!(std::fs::metadata(&big[0]).unwrap().len() > 256 * 1024);
    let export = tmp.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let (_box, port, events) = scp_box(
        tmp.path(),
        &export,
        &[],
        &["prlimit", "--fsize=131072", "--"],
    );
    let p = port.to_string();
    let big_s = big[0].display().to_string();
    let s = dcmtk(
        "storescu",
        &["-v", "-aec", "ORGANDOSE", "127.0.0.1", &p, &big_s],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&s.stdout),
        String::from_utf8_lossy(&s.stderr)
    );
    assert!(
        text.contains("Received Store Response (Refused: OutOfResources)"),
        "storescu was not told of the failure: {text}"
    );
    assert!(
        !text.contains("Received Store Response (Success)"),
        "{text}"
    );
    assert!(all_files(&export).is_empty(), "{:?}", all_files(&export));
    let log = read(&events);
    assert!(log.contains("refused (status 0xA700)"), "{log}");
    // Under the limit the same box stores: the refusal was the write, not the peer.
    let mut args = vec!["-aec", "ORGANDOSE", "127.0.0.1", &p];
    let files = ct_axial();
    args.extend(files.iter().map(|s| s.as_str()));
    assert!(dcmtk("storescu", &args).status.success());
    assert_eq!(dcm_files(&export).len(), files.len());
}

// ---- Orthanc ----

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then_some(())
        .filter(|_| head.split_whitespace().nth(1) == Some("200"))?;
    Some(body.to_string())
}

struct Orthanc {
    proc: Proc,
    http: u16,
    received: PathBuf,
}

fn start_orthanc(dir: &Path, http: u16, dicom: u16) -> Orthanc {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    let received = dir.join("received.log");
    let lua = dir.join("count.lua");
    // Called for every instance Orthanc receives, before it decides whether it
    // already has it: the record of what was sent, duplicates included.
    std::fs::write(
        &lua,
        format!(
            "function ReceivedInstanceFilter(dicom, origin, info)\n  local f = io.open({:?}, \"a\")\n  f:write(dicom.SOPInstanceUID .. \"\\n\")\n  f:close()\n  return true\nend\n",
            received.display().to_string()
        ),
    )
    .unwrap();
    let cfg = serde_json::json!({
        "Name": "organdose-test",
        "StorageDirectory": db,
        "IndexDirectory": db,
        "HttpPort": http,
        "DicomPort": dicom,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": true,
        "RemoteAccessAllowed": false,
        "AuthenticationEnabled": false,
        "HttpServerEnabled": true,
        "DicomServerEnabled": true,
        "StorageCompression": false,
        "Plugins": [],
        "LuaScripts": [lua],
    });
    let cfg_path = dir.join("orthanc.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let child = Command::new("Orthanc")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let o = Orthanc {
        proc: Proc(child),
        http,
        received,
    };
    wait_until("Orthanc to answer", 60, || {
        http_get(http, "/system").is_some()
    });
    o
}

impl Orthanc {
    fn sop_instance_uids(&self) -> Vec<String> {
        let ids: Vec<String> =
            serde_json::from_str(&http_get(self.http, "/instances").unwrap()).unwrap();
        let mut uids: Vec<String> = ids
            .iter()
            .map(|id| {
                let v: serde_json::Value = serde_json::from_str(
                    &http_get(self.http, &format!("/instances/{id}")).unwrap(),
                )
                .unwrap();
                v["MainDicomTags"]["SOPInstanceUID"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        uids.sort();
        uids
    }

    fn received(&self) -> Vec<String> {
        let mut v: Vec<String> = read(&self.received).lines().map(String::from).collect();
        v.sort();
        v
    }
}

#[test]
fn the_outbox_delivers_results_to_orthanc_after_it_starts_each_once() {
    if !have("Orthanc (apt-get install orthanc)", "Orthanc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    let patient_dir = phantom(&staging, 32);
    let export = tmp.path().join("export");
    for d in series_dirs(&patient_dir) {
        let dst = export.join(d.file_name().unwrap());
        std::fs::create_dir_all(&dst).unwrap();
        for f in all_files(&d) {
            std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
        }
    }
    let out = tmp.path().join("out");
    let events = tmp.path().join("events.log");
    let cfg = config(
        tmp.path(),
        "[dicom]\nretry_initial_s = 0.5\nretry_max_s = 2.0\ntimeout_s = 5.0\n",
    );
    let (http, dicom) = (free_port(), free_port());
    let dest = format!("ORTHANC@127.0.0.1:{dicom}");
    let args = [
        "--truth-root",
        staging.to_str().unwrap(),
        "--send-to",
        dest.as_str(),
    ];
    let with_once: Vec<&str> = args.iter().copied().chain(["--once"]).collect();

    // 1. Orthanc is down: the result is computed and queued, the send fails.
    let st = watch(&cfg, &export, &out, &events, &with_once, &[])
        .status()
        .unwrap();
    assert!(st.success(), "{}", read(&events));
    let recs = records(&out).unwrap();
    let rec = recs.values().next().unwrap();
    assert_eq!(rec.outcome, "done", "{}", rec.message);
    let mut expected: Vec<String> = all_files(&out.join(&rec.id).join("dicom"))
        .iter()
        .map(|f| scu::file_info(f).unwrap().sop_instance)
        .collect();
    expected.sort();
    assert!(expected.len() >= 4, "{expected:?}");
    let s = outbox::summary(&out).unwrap();
    assert_eq!(
        (s.jobs, s.queued_instances, s.failing_jobs),
        (1, expected.len(), 1),
        "{s:?}"
    );
    let shown = Command::new(BIN)
        .args(["status", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown.contains(&format!(
            "outbox: {} instance(s) queued in 1 job(s), 1 failing",
            expected.len()
        )),
        "{shown}"
    );

    // 2. A new start keeps trying (Orthanc still down), then Orthanc starts and
    // the back-off's next try delivers.
    let failures_before = read(&events).matches("unsent, failure").count();
    let running = Proc(
        watch(&cfg, &export, &out, &events, &args, &[])
            .spawn()
            .unwrap(),
    );
    wait_until("a failed try after the restart", 60, || {
        read(&events).matches("unsent, failure").count() > failures_before
    });
    let orthanc = start_orthanc(&tmp.path().join("orthanc"), http, dicom);
    wait_until("the outbox to deliver", 120, || {
        outbox::summary(&out).is_ok_and(|s| s.jobs == 0)
    });
    // The status lines say so too (status.json is written at the next beat).
    wait_until("status.json to show an empty outbox", 30, || {
        serde_json::from_str::<serde_json::Value>(&read(&out.join("status.json")))
            .is_ok_and(|s| s["outbox_queued"] == 0 && s["outbox_failing"] == 0)
    });
    drop(running);
    assert_eq!(orthanc.sop_instance_uids(), expected, "what Orthanc holds");
    assert_eq!(orthanc.received(), expected, "each received exactly once");

    // 3. A third start sends nothing again.
    let st = watch(&cfg, &export, &out, &events, &with_once, &[])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(orthanc.received(), expected, "nothing sent twice");
    let s = outbox::summary(&out).unwrap();
    assert_eq!((s.jobs, s.sent_jobs), (0, 1), "{s:?}");
    drop(orthanc.proc);
}

/// Peak resident memory of process `pid` (VmHWM in /proc), in MB.
fn vm_hwm_mb(pid: u32) -> f64 {
    let s = read(Path::new(&format!("/proc/{pid}/status")));
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb / 1024.0
}

/// The 60-byte data set of issue 42 (explicit VR little endian): SOP Class UID
/// CT, Modality CT, then a private (0029,1010) UN declaring 0xFFFFFFF0 bytes of
/// which 4 arrive.
fn hostile_60_bytes() -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'U', b'I', 26, 0]);
    d.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.2\0");
    d.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0]);
    d.extend_from_slice(b"CT");
    d.extend_from_slice(&[0x29, 0x00, 0x10, 0x10, b'U', b'N', 0, 0]);
    d.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    d.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(d.len(), 60);
    d
}

/// One C-STORE of `data` (a data set in transfer syntax `ts`) on an association
/// of its own; the response's status.
fn raw_c_store(port: u16, ts: &str, sop_instance: &str, data: &[u8]) -> u16 {
    use dicom_ul::association::client::ClientAssociationOptions;
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    let ct = dicom_dictionary_std::uids::CT_IMAGE_STORAGE;
    let mut a = ClientAssociationOptions::new()
        .calling_ae_title("HOSTILE")
        .called_ae_title("ORGANDOSE")
        .read_timeout(Duration::from_secs(60))
        .with_presentation_context(ct, vec![ts])
        .establish(("127.0.0.1", port))
        .unwrap();
    let pc = a.presentation_contexts()[0].id;
    let cmd = organdose::net::dimse::store_rq(1, ct, sop_instance).unwrap();
    a.send(&dicom_ul::Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: cmd,
        }],
    })
    .unwrap();
    let chunks: Vec<&[u8]> = data.chunks(16_000).collect();
    for (i, c) in chunks.iter().enumerate() {
        a.send(&dicom_ul::Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Data,
                is_last: i + 1 == chunks.len(),
                data: c.to_vec(),
            }],
        })
        .unwrap();
    }
    let rsp = match a.receive().unwrap() {
        dicom_ul::Pdu::PData { data } => data,
        other => panic!("no C-STORE response: {other:?}"),
    };
    let status = organdose::net::dimse::parse(&rsp[0].data).unwrap().status;
    let _ = a.release();
    status
}

/// A data set whose parse costs most per byte, just under `limit` (the SCP's
/// share of the memory budget per association) by the reader's own estimate:
/// SOP Class CT, a SOP Instance UID other than the command's (so it is parsed
/// and refused, never stored), then either `items` empty-ish sequence items or
/// distinct top-level elements.
fn costly_header(limit: u64, items: bool) -> Vec<u8> {
    use organdose::io::dicom_bounds::{ELEMENT_COST, ITEM_COST};
    let mut d = Vec::new();
    d.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'U', b'I', 26, 0]);
    d.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.2\0");
    d.extend_from_slice(&[0x08, 0x00, 0x18, 0x00, b'U', b'I', 8, 0]);
    d.extend_from_slice(b"9.9.9.9\0");
    // 90 % of the limit, the two elements above and the sequence counted.
    let room = limit * 9 / 10 - 4 * ELEMENT_COST - 200;
    if items {
        d.extend_from_slice(&[0x29, 0x00, 0x20, 0x10, b'S', b'Q', 0, 0]);
        d.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        let n = room / (16 + ITEM_COST + ELEMENT_COST);
        for _ in 0..n {
            d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 8, 0, 0, 0]);
            d.extend_from_slice(&[0x29, 0x00, 0x30, 0x10, b'L', b'O', 0, 0]);
        }
        d.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    } else {
        let n = (room / (8 + ELEMENT_COST)).min(0xFFFF - 0x1000);
        for e in 0..n as u16 {
            d.extend_from_slice(&[0x29, 0x00]);
            d.extend_from_slice(&(0x1000 + e).to_le_bytes());
            d.extend_from_slice(&[b'L', b'O', 0, 0]);
        }
    }
    d
}

#[test]
fn hostile_c_stores_are_refused_and_the_daemon_stays_under_its_memory_budget() {
    // Issue 42, finding 1: a 60-byte data set declaring a 4 GB element drove the
    // daemon to 4.1 GB resident; 18 bytes of text to 530 MB; 20 MB of random
    // bytes to 1.8 GB. Eight such associations at once (dicom.max_associations)
    // must keep the daemon's peak resident memory under its budget.
    let tmp = tempfile::tempdir().unwrap();
    let export = tmp.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let budget_mb = 256.0;
    let (boxp, port, events) = scp_box_with(
        tmp.path(),
        &export,
        &format!("memory_budget_mb = {budget_mb:.1}\n"),
        &[],
        &[],
    );
    let pid = boxp.0.id();
    let before = vm_hwm_mb(pid);
    let explicit = dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN;
    let implicit = dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN;
    // 20 MB of random bytes (xorshift, fixed seed).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let random: Vec<u8> = (0..20 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let text = b"this is not DICOM\n".to_vec();
    assert_eq!(text.len(), 18);
    let random = std::sync::Arc::new(random);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let random = random.clone();
            let text = text.clone();
            std::thread::spawn(move || {
                let uid = format!("1.2.3.42.{i}");
                let limit = organdose::net::scp::parse_limit_bytes(budget_mb, 8);
                match i {
                    0..=1 => raw_c_store(port, explicit, &uid, &hostile_60_bytes()),
                    2 => raw_c_store(port, implicit, &uid, &text),
                    3 => raw_c_store(port, explicit, &uid, &random),
                    4 => raw_c_store(port, implicit, &uid, &random),
                    5..=6 => raw_c_store(port, explicit, &uid, &costly_header(limit, true)),
                    _ => raw_c_store(port, explicit, &uid, &costly_header(limit, false)),
                }
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let status = t.join().unwrap();
        assert!(
            !organdose::net::dimse::stored(status),
            "association {i}: status 0x{status:04X}"
        );
    }
    let after = vm_hwm_mb(pid);
    let ev = read(&events);
    eprintln!("daemon peak resident: {before:.0} MB before, {after:.0} MB after eight hostile associations (budget {budget_mb} MB)");
    if std::env::var_os("SHOW_EVENTS").is_some() {
        eprintln!("{ev}");
    }
    assert!(
        after < budget_mb && after - before < 64.0,
        "peak resident {after:.0} MB (before the C-STOREs {before:.0} MB, budget {budget_mb} MB)\n{ev}"
    );
    assert!(
        ev.contains("declares 4294967280 bytes"),
        "the refusal names the element's length: {ev}"
    );
    assert!(dcm_files(&export).is_empty(), "{:?}", all_files(&export));
    // A header whose parse would take more than the association's share is
    // refused as out of resources, before it is parsed.
    let limit = organdose::net::scp::parse_limit_bytes(budget_mb, 8);
    let status = raw_c_store(
        port,
        explicit,
        "1.2.3.42.8",
        &costly_header(2 * limit, true),
    );
    assert_eq!(
        status,
        organdose::net::dimse::OUT_OF_RESOURCES,
        "{}",
        read(&events)
    );
    assert!(read(&events).contains("share of the memory budget"));
    // The SCP still serves: the first slice of a real series is stored.
    let file = &ct_axial()[0];
    let info = scu::file_info(Path::new(file)).unwrap();
    let bytes = std::fs::read(file).unwrap();
    let status = raw_c_store(
        port,
        &info.transfer_syntax,
        &info.sop_instance,
        &bytes[info.data_offset as usize..],
    );
    assert_eq!(status, 0, "{}", read(&events));
    assert_eq!(dcm_files(&export).len(), 1);
}
