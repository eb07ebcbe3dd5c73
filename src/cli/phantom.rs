//! `organdose phantom --out DIR [--seed N] [--count K] [--format dicom|nifti] [--preview PNG]
//! [--anatomy geometric|real] [--anatomy-data DIR] [--cycles N [--cycle-interval-days D]
//! [--cycle-activities-mbq A1,A2,..]]`.

use organdose::config::Config;
use organdose::phantom::course::{write_course, Course, CourseConfig, DEFAULT_INTERVAL_DAYS};
use organdose::phantom::layout::{write_patient, WriteOptions};
use organdose::phantom::{AnatomyKind, Format, MissingKidney, Patient, PhantomConfig};
use std::path::PathBuf;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Dicom,
    Nifti,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AnatomyArg {
    Geometric,
    Real,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KidneyArg {
    Left,
    Right,
    Random,
}

#[derive(clap::Args)]
pub struct Args {
    /// Output folder; each patient goes to DIR/<patient_id>/.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    #[arg(long, value_enum, default_value = "dicom")]
    pub format: FormatArg,
    /// PNG montage (with several patients, one file per patient: <stem>_<id>.png).
    #[arg(long)]
    pub preview: Option<PathBuf>,
    /// Time points in hours after injection, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "0.5,6,24,72")]
    pub times: Vec<f64>,
    /// Injected activity (MBq).
    #[arg(long, default_value_t = 7400.0)]
    pub activity_mbq: f64,
    /// SPECT system blur FWHM (mm); default: random 10-15 per patient.
    #[arg(long)]
    pub fwhm_mm: Option<f64>,
    /// Largest CT-SPECT misregistration per time point: shift (mm).
    #[arg(long, default_value_t = 0.0)]
    pub misregister_mm: f64,
    /// Largest CT-SPECT misregistration per time point: rotation (degrees).
    #[arg(long, default_value_t = 0.0)]
    pub misregister_deg: f64,
    /// Breathing motion amplitude along z blurring the SPECT (mm).
    #[arg(long, default_value_t = 0.0)]
    pub breathing_mm: f64,
    /// Leave out a kidney (random: left or right in every patient).
    #[arg(long, value_enum)]
    pub missing_kidney: Option<KidneyArg>,
    /// Number of liver lesions (default random 0-2).
    #[arg(long)]
    pub lesions: Option<usize>,
    /// Coarse grids (128x128 CT) for quick tests.
    #[arg(long)]
    pub small: bool,
    /// Anatomy: `real` (WORD / AMOS organs in an ICRP-110 body, from the data
    /// folder) or `geometric` (ellipsoid organs). Default: real when the data
    /// folder exists, else geometric with a warning.
    #[arg(long, value_enum)]
    pub anatomy: Option<AnatomyArg>,
    /// Data folder of the real anatomy (default: $ORGANDOSE_ANATOMY_DATA, else
    /// ../shared/data beside the current directory or the source tree;
    /// `scripts/fetch-anatomy.sh DIR` fills one).
    #[arg(long)]
    pub anatomy_data: Option<PathBuf>,
    /// A real low-dose (SPECT/CT) CT series, `DIR` or `DIR:SLICE` (slice index
    /// along the series), shown beside the first patient's low-dose CT in
    /// `--compare-png` (W 400 / L 40).
    #[arg(long, value_name = "DIR[:SLICE]")]
    pub compare_real_ldct: Option<String>,
    /// A real diagnostic CT series, shown beside the first patient's diagnostic CT.
    #[arg(long, value_name = "DIR[:SLICE]")]
    pub compare_real_ct: Option<String>,
    /// The real-versus-phantom picture (with `--compare-real-*`).
    #[arg(long, default_value = "real_vs_phantom.png")]
    pub compare_png: PathBuf,
    /// A treatment course: N cycles of each patient, written to
    /// DIR/<patient_id>/cycle_<k>/ (each like a single patient's folder) with
    /// DIR/<patient_id>/course_truth.json (docs/phantoms.md, "Treatment courses").
    #[arg(long, value_name = "N")]
    pub cycles: Option<usize>,
    /// Days between a course's injections.
    #[arg(long, default_value_t = DEFAULT_INTERVAL_DAYS, requires = "cycles")]
    pub cycle_interval_days: f64,
    /// Injected activity (MBq) of each cycle, comma separated (the last repeats;
    /// default: --activity-mbq for every cycle).
    #[arg(long, value_delimiter = ',', requires = "cycles")]
    pub cycle_activities_mbq: Vec<f64>,
}

/// `DIR` or `DIR:SLICE` -> (DIR, slice).
fn dir_and_slice(s: &str) -> (PathBuf, Option<usize>) {
    match s.rsplit_once(':') {
        Some((d, k)) if k.parse::<usize>().is_ok() => (PathBuf::from(d), k.parse().ok()),
        _ => (PathBuf::from(s), None),
    }
}

/// Reads each real series, renders the first patient's matching scan and
/// writes the side-by-side picture.
fn write_comparison(args: &Args, cfg: &PhantomConfig, app: &Config) -> anyhow::Result<()> {
    use organdose::phantom::ct_appearance::{kidney_slice, write_comparison, ComparePanel};
    let p = Patient::try_new(cfg, args.seed, 0)?;
    let mut vols = Vec::new();
    for (spec, low_dose) in [
        (&args.compare_real_ldct, true),
        (&args.compare_real_ct, false),
    ] {
        let Some(spec) = spec else { continue };
        let (dir, k) = dir_and_slice(spec);
        let (_, real) = organdose::io::dicom::read_single_series(&dir, None, &app.ingest)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        let k = k.unwrap_or(real.geom.dims[2] / 2);
        if k >= real.geom.dims[2] {
            anyhow::bail!("{}: slice {k} of {}", dir.display(), real.geom.dims[2]);
        }
        let (ph, labels) = if low_dose {
            p.ldct(0)
        } else {
            let (v, l, _) = p.diagnostic_ct();
            (v, l)
        };
        let pk = kidney_slice(&labels);
        vols.push((real, k, ph, pk));
    }
    let rows: Vec<_> = vols
        .iter()
        .map(|(r, k, ph, pk)| {
            (
                ComparePanel { ct: r, k: *k },
                ComparePanel { ct: ph, k: *pk },
            )
        })
        .collect();
    write_comparison(&args.compare_png, &rows)?;
    println!("comparison: {}", args.compare_png.display());
    Ok(())
}

pub fn run(args: Args, app: &Config) -> anyhow::Result<()> {
    if args.times.is_empty() || args.times.iter().any(|t| !(t.is_finite() && *t >= 0.0)) {
        anyhow::bail!("--times must be non-negative hours, e.g. 0.5,6,24,72");
    }
    if !(args.activity_mbq.is_finite() && args.activity_mbq > 0.0) {
        anyhow::bail!("--activity-mbq must be positive");
    }
    let mut cfg = if args.small {
        PhantomConfig::small()
    } else {
        PhantomConfig::default()
    };
    cfg.times_h = args.times.clone();
    cfg.injected_mbq = args.activity_mbq;
    if let Some(f) = args.fwhm_mm {
        if !(f.is_finite() && f > 0.0) {
            anyhow::bail!("--fwhm-mm must be positive");
        }
        cfg.spect_fwhm_mm = (f, f);
    }
    cfg.misregistration_mm = args.misregister_mm.max(0.0);
    cfg.misregistration_deg = args.misregister_deg.max(0.0);
    cfg.breathing_mm = args.breathing_mm.max(0.0);
    cfg.missing_kidney = match args.missing_kidney {
        None => MissingKidney::None,
        Some(KidneyArg::Left) => MissingKidney::Left,
        Some(KidneyArg::Right) => MissingKidney::Right,
        Some(KidneyArg::Random) => MissingKidney::Random(1.0),
    };
    cfg.lesions = args.lesions;
    cfg.anatomy = args.anatomy.map(|a| match a {
        AnatomyArg::Geometric => AnatomyKind::Geometric,
        AnatomyArg::Real => AnatomyKind::Real,
    });
    cfg.anatomy_data = args.anatomy_data.clone();
    let format = match args.format {
        FormatArg::Dicom => Format::Dicom,
        FormatArg::Nifti => Format::Nifti,
    };
    if args.compare_real_ldct.is_some() || args.compare_real_ct.is_some() {
        write_comparison(&args, &cfg, app)?;
    }
    let course = match args.cycles {
        Some(n) => {
            if n == 0 {
                anyhow::bail!("--cycles must be at least 1");
            }
            let mut c = CourseConfig::new(n);
            c.interval_days = args.cycle_interval_days;
            c.activities_mbq = args.cycle_activities_mbq.clone();
            Some(c)
        }
        None => None,
    };
    for i in 0..args.count {
        let t0 = std::time::Instant::now();
        // try_new: an explicit `--anatomy real` without usable data is an error
        // naming the file, not a silent geometric patient.
        let p = Patient::try_new(&cfg, args.seed, i)?;
        if let Some(real) = &p.anatomy.real {
            tracing::info!(
                "{}: anatomy {} built in {:.1} s",
                p.patient_id,
                real.sources,
                t0.elapsed().as_secs_f64()
            );
        }
        let preview = args.preview.as_ref().map(|path| {
            if args.count == 1 {
                path.clone()
            } else {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                path.with_file_name(format!("{stem}_{}.png", p.patient_id))
            }
        });
        if let Some(c) = &course {
            let course = Course::from_patient(&cfg, c, p)?;
            let w = write_course(&course, &args.out, &WriteOptions { format, preview })?;
            println!(
                "{}: {} cycles, {} files in {}",
                course.patient_id(),
                w.cycles.len(),
                w.cycles.iter().map(|c| c.files.len()).sum::<usize>() + 1,
                w.patient_dir.display()
            );
            continue;
        }
        let w = write_patient(&p, &args.out, &WriteOptions { format, preview })?;
        println!(
            "{}: {} files in {}",
            p.patient_id,
            w.files.len(),
            w.patient_dir.display()
        );
    }
    Ok(())
}
