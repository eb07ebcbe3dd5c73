//! `organdose inspect PATH [--json]`: what is in a file or folder.

use organdose::config::Config;
use organdose::io::{dicom, nifti};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// File or folder (searched recursively; any nesting, any file names).
    pub path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct NiftiRow {
    path: String,
    dims: Vec<usize>,
    spacing_mm: [f64; 3],
    origin_mm: [f64; 3],
    orientation: String,
    datatype: String,
    description: String,
    problem: Option<String>,
}

#[derive(Serialize)]
struct Rejected {
    path: String,
    reason: String,
}

#[derive(Serialize)]
struct Report {
    series: Vec<dicom::SeriesInfo>,
    nifti: Vec<NiftiRow>,
    rejected: Vec<Rejected>,
    /// Files read and skipped on purpose (a DICOMDIR).
    ignored: Vec<Rejected>,
}

pub fn run(args: Args, cfg: &Config) -> anyhow::Result<()> {
    let scan = dicom::scan(&args.path)?;
    let mut series = Vec::new();
    for s in &scan.series {
        series.push(s.info(&cfg.ingest)?);
    }
    let mut rejected: Vec<Rejected> = scan
        .rejected
        .iter()
        .map(|(p, r)| Rejected {
            path: p.display().to_string(),
            reason: r.clone(),
        })
        .collect();
    let mut rows = Vec::new();
    for p in &scan.nifti {
        match nifti::NiftiFile::open(p) {
            Ok(f) => {
                let g = f.header.geometry(p);
                rows.push(NiftiRow {
                    path: p.display().to_string(),
                    dims: f.header.dims.clone(),
                    spacing_mm: g.as_ref().map(|g| g.spacing).unwrap_or([0.0; 3]),
                    origin_mm: g.as_ref().map(|g| g.origin).unwrap_or([0.0; 3]),
                    orientation: g.as_ref().map(|g| g.orientation_code()).unwrap_or_default(),
                    datatype: f.header.datatype_name(),
                    description: f.header.descrip.clone(),
                    problem: g.err().map(|e| e.to_string()),
                });
            }
            Err(e) => rejected.push(Rejected {
                path: p.display().to_string(),
                reason: match e {
                    organdose::Error::Nifti { msg, .. } => format!("NIfTI: {msg}"),
                    other => other.to_string(),
                },
            }),
        }
    }
    let ignored = scan
        .ignored
        .iter()
        .map(|(p, r)| Rejected {
            path: p.display().to_string(),
            reason: r.clone(),
        })
        .collect();
    let report = Report {
        series,
        nifti: rows,
        rejected,
        ignored,
    };
    if args.json {
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        super::print_out(&table(&report))?;
    }
    Ok(())
}

fn fmt3(v: [f64; 3]) -> String {
    format!("{:.3}x{:.3}x{:.3}", v[0], v[1], v[2])
}

fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<12} {:<13} {:<20} {:<6} {:<19} {:<6} {:<28} DESCRIPTION",
        "MOD",
        "PATIENT",
        "DIMS",
        "SPACING MM",
        "ORIENT",
        "ACQUIRED",
        "UNITS",
        "RADIOPHARMACEUTICAL"
    );
    for s in &r.series {
        let rp = s
            .radiopharmaceutical
            .as_ref()
            .map(|p| {
                format!(
                    "{} {} MBq {}",
                    p.nuclide.as_deref().unwrap_or("?"),
                    p.total_dose_mbq
                        .map(|d| format!("{d:.0}"))
                        .unwrap_or("?".into()),
                    p.start_datetime.map(|t| t.to_string()).unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<4} {:<12} {:<13} {:<20} {:<6} {:<19} {:<6} {:<28} {}",
            s.modality,
            s.patient_id,
            format!("{}x{}x{}", s.dims[0], s.dims[1], s.dims[2]),
            fmt3(s.spacing_mm),
            s.orientation,
            s.acquisition_datetime
                .map(|t| t.to_string())
                .unwrap_or_default(),
            s.units,
            rp,
            s.series_description
        );
        let _ = writeln!(
            out,
            "     series {}  study {}  {} file(s) in {}",
            s.series_uid, s.study_uid, s.files, s.source
        );
        if let Some(i) = &s.identity {
            let _ = writeln!(out, "     identity: {i}");
        }
        if let Some(p) = &s.problem {
            let _ = writeln!(out, "     PROBLEM: {p}");
        }
    }
    for n in &r.nifti {
        let dims: Vec<String> = n.dims.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            out,
            "{:<4} {:<12} {:<13} {:<20} {:<6} {:<19} {:<6} {:<28} {}",
            "NII",
            "",
            dims.join("x"),
            fmt3(n.spacing_mm),
            n.orientation,
            "",
            n.datatype,
            "",
            n.path
        );
        if let Some(p) = &n.problem {
            let _ = writeln!(out, "     PROBLEM: {p}");
        }
    }
    for x in &r.ignored {
        let _ = writeln!(out, "skipped {}: {}", x.path, x.reason);
    }
    if !r.rejected.is_empty() {
        let _ = writeln!(out, "{} file(s) not read:", r.rejected.len());
        for x in &r.rejected {
            let _ = writeln!(out, "  {}: {}", x.path, x.reason);
        }
    }
    if r.series.is_empty() && r.nifti.is_empty() {
        let _ = writeln!(out, "no DICOM series or NIfTI files found");
    }
    out
}
