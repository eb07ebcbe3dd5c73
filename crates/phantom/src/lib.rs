//! organdose-phantom: synthetic patients with exact truth.
//!
//! Synthetic patients with exact truth (issue 3): a contrast-enhanced diagnostic
//! CT and, per time point, a low-dose CT and a quantitative 177Lu SPECT (Bq/mL),
//! with organ labels on every grid and analytic organ activities, integrals and
//! doses.
//!
//! Modules: `anatomy` (implicit organs painted on any grid), `kinetics`
//! (time-activity curves, TIA, dose), `spect` (activity map, blur, counting noise),
//! `layout` (DICOM / NIfTI export, truth.json), `preview` (PNG montage).
//!
//! Frames: the anatomy lives in a body frame; each acquisition places it in the
//! scanner (DICOM LPS) with a [`geom::Pose`]: the diagnostic CT with its own pose,
//! each time point's LDCT with a per-visit pose, and that time point's SPECT with
//! the same pose, optionally followed by a misregistration (the patient moved
//! between CT and SPECT).

// Index loops over 3x3 / 4x4 matrices read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use organdose_core::{error, organs, time, volume, Geometry, Volume};
use organdose_io as io;

pub mod anatomy;
pub mod bed;
pub mod course;
pub mod ct_appearance;
pub mod geom;
pub mod kinetics;
pub mod layout;
pub mod png;
pub mod preview;
pub mod real_anatomy;
pub mod realdata;
pub mod rng;
pub mod spect;
pub mod tissue;

use crate::time::{days_from_civil, DateTime};
use anatomy::{Anatomy, AnatomyOptions, Tissue};
use geom::Pose;
use kinetics::Kinetics;
use rng::Rng;

/// Output format of the images (truth label maps are always NIfTI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Dicom,
    Nifti,
}

/// Which kidney, if any, is missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MissingKidney {
    None,
    Left,
    Right,
    /// Left or right with this probability per patient.
    Random(f64),
}

/// Where the anatomy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnatomyKind {
    /// Smooth ellipsoid organs (`anatomy.rs`): needs no data.
    Geometric,
    /// Real label maps (WORD / AMOS organs in an ICRP-110 body, `real_anatomy.rs`),
    /// read from the data folder.
    Real,
}

/// Everything that shapes a phantom besides the seed.
#[derive(Debug, Clone)]
pub struct PhantomConfig {
    /// Anatomy source. `None` (the default): real when the data folder exists,
    /// else geometric with a logged warning; `Some(Real)` is an error without data.
    pub anatomy: Option<AnatomyKind>,
    /// Data folder of the real anatomy; `None`: [`realdata::default_data_dir`].
    pub anatomy_data: Option<std::path::PathBuf>,
    /// Time points, hours after injection.
    pub times_h: Vec<f64>,
    pub injected_mbq: f64,
    /// In-plane matrix of the diagnostic CT and the pixel size range (mm).
    pub ct_matrix: usize,
    pub ct_pixel_mm: (f64, f64),
    /// Slice spacings to pick from (mm).
    pub ct_slice_mm: Vec<f64>,
    pub ldct_matrix: usize,
    pub ldct_pixel_mm: (f64, f64),
    pub ldct_slice_mm: Vec<f64>,
    /// (matrix, voxel mm) choices for SPECT.
    pub spect_grids: Vec<(usize, f64)>,
    pub spect_axial_fov_mm: f64,
    /// System blur FWHM range (mm).
    pub spect_fwhm_mm: (f64, f64),
    /// Counts per second per MBq in the reconstructed image and acquisition time:
    /// together they set the Poisson noise level.
    pub sensitivity_cps_per_mbq: f64,
    pub acquisition_s: f64,
    /// Largest CT-SPECT shift (mm) and rotation (degrees) per time point; 0 = none.
    pub misregistration_mm: f64,
    pub misregistration_deg: f64,
    /// Breathing motion amplitude along z (mm) blurring the SPECT; 0 = none.
    pub breathing_mm: f64,
    pub missing_kidney: MissingKidney,
    /// Liver lesions: None = random 0-2 per patient.
    pub lesions: Option<usize>,
    /// Noise SD ranges (HU, soft kernel) drawn per patient: diagnostic CT and
    /// low-dose CT (see `ct_appearance`).
    pub ct_noise_hu: (f64, f64),
    pub ldct_noise_hu: (f64, f64),
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig {
            anatomy: None,
            anatomy_data: None,
            times_h: vec![0.5, 6.0, 24.0, 72.0],
            injected_mbq: 7400.0,
            ct_matrix: 512,
            // Field of view 300-500 mm on 512 pixels; slices 0.625-5 mm
            // (diagnostic) and 2.5-5 mm (SPECT/CT low-dose), the common
            // reconstructions (typical clinical protocols).
            ct_pixel_mm: (0.59, 0.98),
            ct_slice_mm: vec![0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0],
            ldct_matrix: 512,
            ldct_pixel_mm: (0.88, 0.98),
            ldct_slice_mm: vec![2.5, 3.0, 3.75, 4.0, 5.0],
            spect_grids: vec![(128, 4.42), (128, 4.795), (128, 3.9), (256, 2.21)],
            spect_axial_fov_mm: 400.0,
            spect_fwhm_mm: (10.0, 15.0),
            sensitivity_cps_per_mbq: 10.0,
            acquisition_s: 1800.0,
            misregistration_mm: 0.0,
            misregistration_deg: 0.0,
            breathing_mm: 0.0,
            missing_kidney: MissingKidney::None,
            lesions: None,
            // Typical noise SD: diagnostic abdominal CT 8-15 HU, low-dose
            // attenuation CT 20-40 HU (soft kernel).
            ct_noise_hu: (8.0, 15.0),
            ldct_noise_hu: (20.0, 40.0),
        }
    }
}

impl PhantomConfig {
    /// The data folder for the real anatomy.
    pub fn anatomy_data_dir(&self) -> std::path::PathBuf {
        self.anatomy_data
            .clone()
            .unwrap_or_else(realdata::default_data_dir)
    }

    /// The anatomy this configuration gets: an explicit choice as is; the default
    /// is real when the data folder holds the sources, else geometric (warned once
    /// per process).
    pub fn resolved_anatomy(&self) -> AnatomyKind {
        match self.anatomy {
            Some(k) => k,
            None => {
                let data = realdata::DataPaths::new(self.anatomy_data_dir());
                match data.check() {
                    Ok(()) => AnatomyKind::Real,
                    Err(e) => {
                        static WARNED: std::sync::Once = std::sync::Once::new();
                        WARNED.call_once(|| {
                            tracing::warn!("{e}: using the geometric anatomy");
                        });
                        AnatomyKind::Geometric
                    }
                }
            }
        }
    }

    /// Coarse grids for fast tests (dev profile, seconds per patient).
    pub fn small() -> Self {
        PhantomConfig {
            ct_matrix: 128,
            ct_pixel_mm: (3.6, 3.6),
            ct_slice_mm: vec![8.0],
            ldct_matrix: 96,
            ldct_pixel_mm: (5.0, 5.0),
            ldct_slice_mm: vec![10.0],
            spect_grids: vec![(64, 8.8)],
            ..Default::default()
        }
    }
}

/// Misregistration of one time point's SPECT relative to its LDCT, in the body
/// frame: SPECT anatomy = rotate(rotation_deg, about the body origin) then shift.
#[derive(Debug, Clone, PartialEq)]
pub struct Misregistration {
    pub shift_mm: [f64; 3],
    pub rotation_deg: [f64; 3],
}

/// One synthetic patient: anatomy, kinetics, acquisition geometry and poses.
/// Images are computed on demand (nothing large is kept).
#[derive(Debug, Clone)]
pub struct Patient {
    pub seed: u64,
    pub index: usize,
    pub patient_seed: u64,
    pub patient_id: String,
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    /// IssuerOfPatientID written with the ID (None: not written; a single
    /// phantom has none, a course's cycles [`course::ISSUER_OF_PATIENT_ID`]).
    pub issuer_of_patient_id: Option<String>,
    /// Which cycle of a treatment course this is (None: a single phantom).
    pub cycle: Option<course::CycleOf>,
    pub anatomy: Anatomy,
    pub missing_organs: Vec<u8>,
    /// Kinetics of every organ present (label, parameters).
    pub kinetics: Vec<(u8, Kinetics)>,
    pub injected_mbq: f64,
    pub injection: DateTime,
    pub diagnostic_ct_time: DateTime,
    pub times_h: Vec<f64>,
    pub ct_geom: Geometry,
    pub ct_pose: Pose,
    pub ldct_geoms: Vec<Geometry>,
    pub spect_geoms: Vec<Geometry>,
    pub visit_poses: Vec<Pose>,
    pub misregistration: Vec<Misregistration>,
    pub spect_fwhm_mm: f64,
    pub breathing_mm: f64,
    pub counts_per_bq: f64,
    pub ct_noise_hu: f64,
    pub ldct_noise_hu: f64,
    /// HU per tissue and phase, texture, kernels, couch, arms (drawn per patient).
    pub ct_look: ct_appearance::CtLook,
}

fn pick(r: &mut Rng, xs: &[f64], default: f64) -> f64 {
    if xs.is_empty() {
        default
    } else {
        xs[r.below(xs.len() as u64) as usize]
    }
}

fn axial_grid(matrix: usize, px: f64, dz: f64, z_lo: f64, z_hi: f64, cx: f64, cy: f64) -> Geometry {
    let nz = (((z_hi - z_lo) / dz).ceil() as usize).max(1) + 1;
    let half = (matrix as f64 - 1.0) / 2.0 * px;
    Geometry::new(
        [matrix, matrix, nz],
        [px, px, dz],
        [cx - half, cy - half, z_lo],
    )
}

/// Where and how one visit's scans were taken: the diagnostic CT's pose and
/// grid, and per time point the LDCT / SPECT grids, the visit pose and the
/// CT-SPECT misregistration. Drawn after the patient's identity, in this
/// order, from the set-up stream `r` (and `mr` for the misregistration), so a
/// single phantom's draws are the ones it always had; a course's cycle draws
/// its own from its own streams ([`course`]).
pub(crate) struct Acquisition {
    pub ct_geom: Geometry,
    pub ct_pose: Pose,
    pub ldct_geoms: Vec<Geometry>,
    pub spect_geoms: Vec<Geometry>,
    pub visit_poses: Vec<Pose>,
    pub misregistration: Vec<Misregistration>,
    pub spect_fwhm_mm: f64,
}

impl Acquisition {
    pub(crate) fn draw(
        cfg: &PhantomConfig,
        anatomy: &Anatomy,
        r: &mut Rng,
        mr: &mut Rng,
    ) -> Acquisition {
        // Diagnostic CT: liver dome to below the kidneys.
        let ct_pose = Pose {
            rot: geom::rotation_deg(
                r.uniform(-1.0, 1.0),
                r.uniform(-1.0, 1.0),
                r.uniform(-2.0, 2.0),
            ),
            shift: [
                r.uniform(-10.0, 10.0),
                r.uniform(-15.0, 15.0),
                -r.uniform(300.0, 700.0),
            ],
        };
        let z_lo = anatomy.z_kidney_bottom - r.uniform(20.0, 45.0);
        let z_hi = anatomy.z_liver_top + r.uniform(10.0, 30.0);
        let body_w = 2.0 * anatomy.body.half_width_mm * 1.1 + 30.0;
        let px = r
            .uniform(cfg.ct_pixel_mm.0, cfg.ct_pixel_mm.1)
            .max(body_w / cfg.ct_matrix as f64)
            .min(cfg.ct_pixel_mm.1.max(1.0));
        let dz = pick(r, &cfg.ct_slice_mm, 3.0);
        let ct_geom = axial_grid(
            cfg.ct_matrix,
            px,
            dz,
            z_lo + ct_pose.shift[2],
            z_hi + ct_pose.shift[2],
            0.0,
            0.0,
        );

        let (spect_n, spect_mm) = if cfg.spect_grids.is_empty() {
            (128, 4.42)
        } else {
            cfg.spect_grids[r.below(cfg.spect_grids.len() as u64) as usize]
        };
        let ldct_px = r.uniform(cfg.ldct_pixel_mm.0, cfg.ldct_pixel_mm.1);
        let ldct_dz = pick(r, &cfg.ldct_slice_mm, 5.0);
        let fwhm = r.uniform(cfg.spect_fwhm_mm.0, cfg.spect_fwhm_mm.1);
        let mut ldct_geoms = Vec::new();
        let mut spect_geoms = Vec::new();
        let mut visit_poses = Vec::new();
        let mut misregistration = Vec::new();
        for _ in &cfg.times_h {
            let pose = Pose {
                rot: geom::rotation_deg(
                    r.uniform(-1.5, 1.5),
                    r.uniform(-1.5, 1.5),
                    r.uniform(-3.0, 3.0),
                ),
                shift: [
                    r.uniform(-12.0, 12.0),
                    r.uniform(-12.0, 12.0),
                    -r.uniform(400.0, 800.0),
                ],
            };
            // SPECT axial field centred between kidneys and liver dome.
            let zc = 0.5 * (anatomy.z_kidney_bottom + anatomy.z_liver_top)
                + r.uniform(-15.0, 15.0)
                + pose.shift[2];
            let nzs = (cfg.spect_axial_fov_mm / spect_mm).round().max(1.0) as usize;
            let half_s = (spect_n as f64 - 1.0) / 2.0 * spect_mm;
            let half_z = (nzs as f64 - 1.0) / 2.0 * spect_mm;
            let sg = Geometry::new(
                [spect_n, spect_n, nzs],
                [spect_mm; 3],
                [-half_s, -half_s, zc - half_z],
            );
            let lg = axial_grid(
                cfg.ldct_matrix,
                ldct_px,
                ldct_dz,
                zc - half_z,
                zc + half_z,
                0.0,
                0.0,
            );
            let mis = if cfg.misregistration_mm > 0.0 || cfg.misregistration_deg > 0.0 {
                let dir = geom::unit([mr.normal(), mr.normal(), mr.normal()]);
                let mag = cfg.misregistration_mm * mr.uniform(0.5, 1.0);
                Misregistration {
                    shift_mm: geom::scale(dir, mag),
                    rotation_deg: [
                        cfg.misregistration_deg * mr.uniform(-1.0, 1.0),
                        cfg.misregistration_deg * mr.uniform(-1.0, 1.0),
                        cfg.misregistration_deg * mr.uniform(-1.0, 1.0),
                    ],
                }
            } else {
                Misregistration {
                    shift_mm: [0.0; 3],
                    rotation_deg: [0.0; 3],
                }
            };
            ldct_geoms.push(lg);
            spect_geoms.push(sg);
            visit_poses.push(pose);
            misregistration.push(mis);
        }
        Acquisition {
            ct_geom,
            ct_pose,
            ldct_geoms,
            spect_geoms,
            visit_poses,
            misregistration,
            spect_fwhm_mm: fwhm,
        }
    }
}

impl Patient {
    /// Patient `index` of a run seeded with `seed`. A real anatomy that cannot be
    /// built (data missing or unreadable) is logged and replaced by the geometric
    /// one; [`Patient::try_new`] returns the error instead.
    pub fn new(cfg: &PhantomConfig, seed: u64, index: usize) -> Patient {
        match Patient::try_new(cfg, seed, index) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("real anatomy: {e}; falling back to the geometric anatomy");
                Patient::build(cfg, seed, index, AnatomyKind::Geometric)
                    .unwrap_or_else(|_| unreachable!("the geometric anatomy cannot fail"))
            }
        }
    }

    /// Like [`Patient::new`], with the real anatomy's errors returned (naming the
    /// missing or bad file).
    pub fn try_new(cfg: &PhantomConfig, seed: u64, index: usize) -> crate::error::Result<Patient> {
        Patient::build(cfg, seed, index, cfg.resolved_anatomy())
    }

    fn build(
        cfg: &PhantomConfig,
        seed: u64,
        index: usize,
        kind: AnatomyKind,
    ) -> crate::error::Result<Patient> {
        let patient_seed = rng::hash64(seed, &format!("patient-{index}"));
        let root = Rng::new(patient_seed);
        let mut r = root.fork("setup");
        let missing_kidney = match cfg.missing_kidney {
            MissingKidney::None => None,
            MissingKidney::Left => Some(organs::KIDNEY_LEFT),
            MissingKidney::Right => Some(organs::KIDNEY_RIGHT),
            MissingKidney::Random(p) => {
                if r.chance(p) {
                    Some(if r.chance(0.5) {
                        organs::KIDNEY_LEFT
                    } else {
                        organs::KIDNEY_RIGHT
                    })
                } else {
                    None
                }
            }
        };
        let lesions = cfg.lesions.unwrap_or_else(|| r.below(3) as usize);
        let anatomy = match kind {
            AnatomyKind::Geometric => Anatomy::sample(
                &mut root.fork("anatomy"),
                &AnatomyOptions {
                    missing_kidney,
                    lesions,
                },
            ),
            AnatomyKind::Real => {
                // Canonical grid about as fine as the diagnostic CT (1-3 mm in
                // plane, 2-4 mm slices): finer than the CT buys nothing.
                let p = cfg.ct_pixel_mm.0.clamp(1.0, 3.0);
                Anatomy::from_real(real_anatomy::RealAnatomy::build(
                    &mut root.fork("anatomy"),
                    &real_anatomy::RealOptions {
                        data: realdata::DataPaths::new(cfg.anatomy_data_dir()),
                        voxel_mm: [p, p, (2.0 * p).clamp(2.0, 4.0)],
                        missing_kidney,
                        lesions,
                    },
                )?)
            }
        };
        let mut kr = root.fork("kinetics");
        let kinetics = anatomy
            .organs_present
            .iter()
            .map(|&l| (l, Kinetics::sample(l, &mut kr, anatomy.tumour_volume_ml)))
            .collect();

        // Dates: injection on a weekday morning in 2023-2025, diagnostic CT 1-4
        // weeks before.
        let day0 = days_from_civil(2023, 1, 2) + r.below(3 * 365) as i64;
        let weekday = (day0 + 3).rem_euclid(7); // 0 = Monday (1970-01-01 was a Thursday)
        let day0 = if weekday >= 5 {
            day0 - (weekday - 4)
        } else {
            day0
        };
        let inj_s = day0 * 86_400 + 8 * 3600 + r.below(3 * 3600) as i64;
        let inj = DateTime::from_epoch_seconds(inj_s as f64);
        let ct_time = DateTime::from_epoch_seconds(
            (inj_s - (7 + r.below(21) as i64) * 86_400 + r.below(6 * 3600) as i64) as f64,
        );
        let birth = DateTime::from_epoch_seconds(
            (days_from_civil(1940 + r.below(40) as i64, 1, 1) * 86_400
                + r.below(365) as i64 * 86_400) as f64,
        );
        let sex = if r.chance(0.5) { "M" } else { "F" }.to_string();
        // A real anatomy's body is a male or female reference phantom.
        let sex = match &anatomy.real {
            Some(real) => real.sex.clone(),
            None => sex,
        };

        let acq = Acquisition::draw(cfg, &anatomy, &mut r, &mut root.fork("misregistration"));
        let patient_id = format!("PH{seed}-{:03}", index + 1);
        // Own stream, so the appearance draws leave every other draw unchanged.
        let ct_look = ct_appearance::CtLook::sample(
            &mut root.fork("ct-appearance"),
            cfg.ct_noise_hu,
            cfg.ldct_noise_hu,
        );
        Ok(Patient {
            seed,
            index,
            patient_seed,
            patient_name: format!("PHANTOM^{}", patient_id.replace('-', "_")),
            patient_id,
            birth_date: birth.da(),
            sex,
            issuer_of_patient_id: None,
            cycle: None,
            missing_organs: missing_kidney.into_iter().collect(),
            anatomy,
            kinetics,
            injected_mbq: cfg.injected_mbq,
            injection: inj,
            diagnostic_ct_time: ct_time,
            times_h: cfg.times_h.clone(),
            ct_geom: acq.ct_geom,
            ct_pose: acq.ct_pose,
            ldct_geoms: acq.ldct_geoms,
            spect_geoms: acq.spect_geoms,
            visit_poses: acq.visit_poses,
            misregistration: acq.misregistration,
            spect_fwhm_mm: acq.spect_fwhm_mm,
            breathing_mm: cfg.breathing_mm,
            counts_per_bq: cfg.sensitivity_cps_per_mbq * 1e-6 * cfg.acquisition_s,
            ct_noise_hu: ct_look.diagnostic.noise_sd_hu as f64,
            ldct_noise_hu: ct_look.low_dose.noise_sd_hu as f64,
            ct_look,
        })
    }

    /// Pose of the anatomy in time point `tp`'s SPECT (visit pose after the
    /// misregistration).
    pub(crate) fn spect_pose(&self, tp: usize) -> Pose {
        let m = &self.misregistration[tp];
        let inner = Pose {
            rot: geom::rotation_deg(m.rotation_deg[0], m.rotation_deg[1], m.rotation_deg[2]),
            shift: m.shift_mm,
        };
        self.visit_poses[tp].compose(&inner)
    }

    /// Per liver lesion (painting order): its voxels among the "tumour"
    /// voxels of `ct_labels` (the diagnostic-CT grid) and their centroid in the
    /// body frame; plus the count of tumour voxels no lesion claims (none
    /// expected: the labels are painted from the same shapes).
    pub fn lesion_voxels_ct(&self, ct_labels: &Volume<u8>) -> (Vec<(usize, [f64; 3])>, usize) {
        let mut out = vec![(0usize, [0.0f64; 3]); self.anatomy.lesion_count()];
        let mut unclaimed = 0;
        let g = &ct_labels.geom;
        let [nx, ny, nz] = g.dims;
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    if ct_labels.data[g.linear(i, j, k)] != organs::TUMOUR {
                        continue;
                    }
                    let b = self
                        .ct_pose
                        .to_body(g.index_to_patient([i as f64, j as f64, k as f64]));
                    match self.anatomy.lesion_at(b).and_then(|l| out.get_mut(l)) {
                        Some((n, s)) => {
                            *n += 1;
                            (0..3).for_each(|a| s[a] += b[a]);
                        }
                        None => unclaimed += 1,
                    }
                }
            }
        }
        for (n, s) in out.iter_mut() {
            if *n > 0 {
                *s = s.map(|x| x / *n as f64);
            }
        }
        (out, unclaimed)
    }

    /// Organ activity (MBq) at `t_h`: analytic, from the kinetics.
    pub fn organ_activity_mbq(&self, label: u8, t_h: f64) -> f64 {
        self.kinetics
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, k)| k.activity_mbq(self.injected_mbq, t_h))
            .unwrap_or(0.0)
    }

    fn ct_image(
        &self,
        geom: &Geometry,
        pose: &Pose,
        scan: &ct_appearance::ScanLook,
        tag: &str,
    ) -> (Volume<f32>, Volume<u8>, Vec<u8>) {
        let (hu, labels, tissue) = ct_appearance::render(
            &self.ct_look,
            scan,
            geom,
            rng::hash64(self.patient_seed, tag),
            &|g| self.anatomy.rasterize(g, pose),
        );
        (
            Volume {
                geom: geom.clone(),
                data: hu,
            },
            Volume {
                geom: geom.clone(),
                data: labels,
            },
            tissue,
        )
    }

    /// Diagnostic CT (HU; contrast phase drawn per patient, `ct_look.diagnostic`),
    /// its organ labels and tissue classes.
    pub fn diagnostic_ct(&self) -> (Volume<f32>, Volume<u8>, Vec<u8>) {
        self.ct_image(
            &self.ct_geom,
            &self.ct_pose,
            &self.ct_look.diagnostic,
            "ct-noise",
        )
    }

    /// Organ labels on the diagnostic CT grid only (no image).
    pub fn diagnostic_ct_labels(&self) -> Volume<u8> {
        let (_, labels) = self.anatomy.rasterize(&self.ct_geom, &self.ct_pose);
        Volume {
            geom: self.ct_geom.clone(),
            data: labels,
        }
    }

    /// Low-dose CT of time point `tp` (HU, no contrast) and its organ labels.
    pub fn ldct(&self, tp: usize) -> (Volume<f32>, Volume<u8>) {
        let (v, l, _) = self.ct_image(
            &self.ldct_geoms[tp],
            &self.visit_poses[tp],
            &self.ct_look.low_dose,
            &format!("ldct-noise-{tp}"),
        );
        (v, l)
    }

    /// Organ labels of time point `tp`'s low-dose CT only (no image): the same
    /// labels as [`Patient::ldct`]'s without rendering the CT (the dose needs
    /// only these).
    pub fn ldct_labels(&self, tp: usize) -> Volume<u8> {
        let geom = &self.ldct_geoms[tp];
        let (_, labels) = self.anatomy.rasterize(geom, &self.visit_poses[tp]);
        Volume {
            geom: geom.clone(),
            data: labels,
        }
    }

    /// Noiseless, unblurred activity concentration (Bq/mL) of time point `tp` on
    /// its SPECT grid, the SPECT-grid organ labels, and the remainder activity in
    /// the field of view (MBq). Each organ's activity is spread uniformly over its
    /// label voxels, so the sum over a label is the truth activity.
    pub fn noiseless_spect(&self, tp: usize) -> (Volume<f32>, Volume<u8>, f64) {
        spect::activity_map(self, tp)
    }

    /// The SPECT as the camera reports it: breathing blur, system blur, Poisson
    /// noise, in Bq/mL; with the SPECT-grid labels.
    pub fn spect(&self, tp: usize) -> (Volume<f32>, Volume<u8>) {
        let (act, labels, _) = self.noiseless_spect(tp);
        let measured = spect::measure(self, tp, &act);
        (measured, labels)
    }
}

pub(crate) fn tissue_from_u8(t: u8) -> Tissue {
    use Tissue::*;
    const ALL: [Tissue; 27] = [
        Air,
        Skin,
        Fat,
        Muscle,
        VisceralFat,
        Liver,
        Spleen,
        KidneyCortex,
        KidneyMedulla,
        RenalPelvis,
        RenalSinusFat,
        Aorta,
        VenaCava,
        BoneCortical,
        BoneCancellous,
        Disc,
        Csf,
        StomachWall,
        GiFluid,
        Gas,
        Stool,
        BowelWall,
        Gallbladder,
        Pancreas,
        Tumour,
        Lung,
        Heart,
    ];
    ALL.get(t as usize).copied().unwrap_or(Air)
}
