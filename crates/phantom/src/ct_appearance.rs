//! CT intensity rendering: tissue map -> HU the way a scanner shows it.
//!
//! A flat HU per tissue with white noise is easy to segment and unlike any real
//! CT, and a network trained on it fails on patient scans. This module draws,
//! per patient, what varies between patients and scanners, and renders each
//! acquisition from the anatomy:
//!
//! - mean HU per tissue and contrast phase (non-contrast, arterial /
//!   corticomedullary, portal-venous), drawn per patient within typical ranges;
//! - parenchymal texture: spatially correlated (Gaussian-filtered) noise with a
//!   per-tissue amplitude, a few HU in parenchyma, more in bone and stool;
//! - slice thickness with partial volume: each slice is the mean of `m`
//!   sub-slices spread over its thickness (labels stay the nearest-voxel labels
//!   of the slice centre);
//! - the in-plane blur of a reconstruction kernel (Gaussian, FWHM in mm);
//! - quantum noise with a band-pass (mid-frequency) power spectrum like filtered
//!   back-projection noise, SD by dose level, independent between slices;
//! - a patient couch below the back, arms beside the body on the low-dose CT,
//!   and the scanner's padding value outside the circular reconstruction field.
//!
//! Grids are assumed axial (identity direction, as every phantom grid is): the
//! couch and arms are placed in index space scaled by the spacing.

use super::rng::{hash64, Rng};
use super::tissue::Tissue;
use crate::volume::Geometry;
use rayon::prelude::*;

/// The anatomy on a grid: (tissue classes, organ labels).
pub(crate) type Raster<'a> = dyn Fn(&Geometry) -> (Vec<u8>, Vec<u8>) + Sync + 'a;

/// Number of tissue classes (`tissue::TISSUE_NAMES`).
pub(crate) const N_TISSUE: usize = 27;

/// Contrast phase of a CT acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    NonContrast,
    /// Late arterial / renal corticomedullary phase (about 30-40 s after
    /// injection): aorta bright, kidney cortex much brighter than medulla.
    Arterial,
    /// Portal-venous phase (about 60-80 s): liver enhanced, kidneys
    /// homogeneous (early nephrographic).
    PortalVenous,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::NonContrast => "non-contrast",
            Phase::Arterial => "arterial",
            Phase::PortalVenous => "portal-venous",
        }
    }
    fn index(self) -> usize {
        match self {
            Phase::NonContrast => 0,
            Phase::Arterial => 1,
            Phase::PortalVenous => 2,
        }
    }
}

/// Reconstruction kernel family: sets resolution and the noise texture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Soft-tissue kernel: noise correlated over ~1-2 pixels.
    Soft,
    /// Sharp (bone) kernel: noise mostly high frequency, neighbours
    /// anti-correlated. The PyTomography SPECT/CT sample's attenuation CT is one
    /// ("LBONE"); its soft-tissue noise SD measures 55-70 HU.
    Sharp,
}

/// How one kind of acquisition looks.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanLook {
    pub phase: Phase,
    pub kernel: Kernel,
    /// Noise SD (HU) in a uniform region.
    pub noise_sd_hu: f32,
    /// In-plane resolution of the kernel: Gaussian FWHM (mm).
    pub resolution_fwhm_mm: f32,
    /// Noise filter n = G(fine) * w - alpha G(coarse) * w on white noise w,
    /// sigmas in mm: a band-pass spectrum, zero-ish at DC like the ramp filter
    /// of filtered back-projection, cut at high frequency by the kernel.
    pub noise_fine_mm: f32,
    pub noise_coarse_mm: f32,
    pub noise_alpha: f32,
    /// Arms beside the body (tissue overlay in air voxels only).
    pub arms: bool,
}

/// The patient couch: a curved carbon-fibre shell with a foam core below the
/// patient's back.
#[derive(Debug, Clone, PartialEq)]
pub struct Couch {
    pub gap_mm: f64,
    pub thickness_mm: f64,
    pub half_width_mm: f64,
    /// Radius of curvature of the top surface (sides curve up towards the
    /// patient).
    pub radius_mm: f64,
    pub shell_mm: f64,
    pub shell_hu: f32,
    pub core_hu: f32,
}

/// Arms beside the body on the low-dose CT.
#[derive(Debug, Clone, PartialEq)]
pub struct Arms {
    pub gap_mm: f64,
    pub radius_mm: f64,
    pub dy_mm: f64,
    pub fat_mm: f64,
    pub bone_radius_mm: f64,
}

/// Everything about a patient's CT appearance, drawn once per patient.
#[derive(Debug, Clone, PartialEq)]
pub struct CtLook {
    /// Mean HU, `[phase][tissue]`.
    pub hu: [[f32; N_TISSUE]; 3],
    /// Texture SD (HU), `[phase][tissue]`.
    pub texture_sd: [[f32; N_TISSUE]; 3],
    /// Gaussian sigma (mm) of the texture field.
    pub texture_sigma_mm: f32,
    pub diagnostic: ScanLook,
    pub low_dose: ScanLook,
    pub couch: Couch,
    pub arms: Arms,
}

/// Typical mean HU ranges per tissue: (non-contrast, arterial, portal-venous).
/// Sources: typical abdominal CT values (Radiopaedia "Hounsfield unit");
/// enhancement by phase after Bae, Radiology 2010;256:32-61 (aorta 200-350 HU
/// arterial, liver 90-130 HU portal-venous) and, for the kidney, Yuh & Cohan,
/// AJR 1999;172:11-18 (corticomedullary phase cortex >> medulla, nephrographic
/// phase homogeneous). Ranges are the patient-to-patient spread.
fn hu_ranges(t: Tissue) -> [(f32, f32); 3] {
    use Tissue::*;
    let same = |lo: f32, hi: f32| [(lo, hi); 3];
    match t {
        Air => same(-1000.0, -1000.0),
        Skin => [(20.0, 50.0), (25.0, 55.0), (30.0, 60.0)],
        Fat => same(-120.0, -80.0),
        Muscle => [(40.0, 60.0), (45.0, 65.0), (50.0, 70.0)],
        // Mesenteric fat holds small vessels and is a little denser.
        VisceralFat => same(-110.0, -75.0),
        Liver => [(50.0, 70.0), (60.0, 85.0), (90.0, 130.0)],
        // Spleen 5-10 HU below the liver unenhanced.
        Spleen => [(40.0, 55.0), (90.0, 140.0), (100.0, 135.0)],
        KidneyCortex => [(28.0, 42.0), (150.0, 230.0), (150.0, 200.0)],
        KidneyMedulla => [(25.0, 38.0), (55.0, 100.0), (140.0, 190.0)],
        // Urine before the excretory phase (> 3 min).
        RenalPelvis => same(0.0, 15.0),
        RenalSinusFat => same(-100.0, -60.0),
        Aorta => [(35.0, 50.0), (200.0, 350.0), (130.0, 200.0)],
        // Infrarenal cava is barely opacified in the arterial phase.
        VenaCava => [(35.0, 50.0), (60.0, 120.0), (120.0, 180.0)],
        BoneCortical => same(700.0, 1100.0),
        BoneCancellous => same(150.0, 300.0),
        Disc => same(70.0, 100.0),
        Csf => same(0.0, 15.0),
        StomachWall => [(35.0, 50.0), (80.0, 130.0), (80.0, 115.0)],
        GiFluid => same(0.0, 20.0),
        Gas => same(-1000.0, -950.0),
        // Stool mixed with gas bubbles: the mean of the mixture (rendered as
        // matter plus bubbles, see `STOOL_MATTER_HU`).
        Stool => same(-150.0, -50.0),
        BowelWall => [(35.0, 50.0), (80.0, 130.0), (80.0, 115.0)],
        Gallbladder => same(0.0, 20.0),
        // Pancreas peaks in the late arterial ("pancreatic") phase.
        Pancreas => [(35.0, 50.0), (100.0, 150.0), (80.0, 120.0)],
        // Liver metastases: hypodense to the enhanced liver.
        Tumour => [(30.0, 45.0), (50.0, 90.0), (60.0, 95.0)],
        Lung => same(-880.0, -820.0),
        Heart => [(35.0, 50.0), (150.0, 300.0), (130.0, 190.0)],
    }
}

/// Texture SD (HU) per tissue before the per-patient scale: typical values
/// chosen to match the mottle seen on clinical abdominal CT (parenchyma a few
/// HU; trabecular bone, stool and lung, which hold sub-voxel structure, much
/// more). Arterial spleen adds its arciform heterogeneity.
fn texture_sd(t: Tissue, phase: Phase) -> f32 {
    use Tissue::*;
    match t {
        Air => 0.0,
        Skin => 5.0,
        Fat => 4.0,
        Muscle => 6.0,
        VisceralFat => 10.0,
        Liver => 5.0,
        Spleen => {
            if phase == Phase::Arterial {
                22.0
            } else {
                4.0
            }
        }
        KidneyCortex | KidneyMedulla => 6.0,
        RenalPelvis => 3.0,
        RenalSinusFat => 12.0,
        Aorta | VenaCava => 3.0,
        BoneCortical => 80.0,
        BoneCancellous => 45.0,
        Disc => 6.0,
        Csf | GiFluid | Gallbladder => 2.0,
        StomachWall | BowelWall => 8.0,
        Gas => 10.0,
        Stool => 90.0,
        Pancreas => 12.0,
        Tumour => 10.0,
        Lung => 40.0,
        Heart => 8.0,
    }
}

fn all_tissues() -> impl Iterator<Item = (usize, Tissue)> {
    (0..N_TISSUE).map(|i| (i, super::tissue_from_u8(i as u8)))
}

impl CtLook {
    /// Draws a patient's appearance. `ct_noise` and `ldct_noise` are the noise
    /// SD ranges (HU) for soft-kernel diagnostic and low-dose CT.
    pub fn sample(r: &mut Rng, ct_noise: (f64, f64), ldct_noise: (f64, f64)) -> CtLook {
        let mut hu = [[0f32; N_TISSUE]; 3];
        let mut tex = [[0f32; N_TISSUE]; 3];
        // One enhancement strength per patient and phase (cardiac output,
        // contrast dose and timing move all organs together), mixed with a
        // per-tissue draw.
        let g = [r.f64() as f32, r.f64() as f32, r.f64() as f32];
        let tex_scale = r.uniform(0.7, 1.3) as f32;
        for (i, t) in all_tissues() {
            let ranges = hu_ranges(t);
            let u0 = r.f64() as f32;
            let (lo0, hi0) = ranges[0];
            let plain = lo0 + (hi0 - lo0) * u0;
            hu[0][i] = plain;
            for p in 1..3 {
                let (lo, hi) = ranges[p];
                let u = r.f64() as f32;
                hu[p][i] = if (lo, hi) == (lo0, hi0) {
                    // Not enhancing: the same tissue value in every phase.
                    plain
                } else {
                    lo + (hi - lo) * (0.6 * g[p] + 0.4 * u)
                };
            }
            for (p, phase) in [Phase::NonContrast, Phase::Arterial, Phase::PortalVenous]
                .into_iter()
                .enumerate()
            {
                tex[p][i] = texture_sd(t, phase) * tex_scale;
            }
        }
        // Portal-venous is the routine abdominal phase; arterial and
        // non-contrast studies are less common (typical practice).
        let u = r.f64();
        let phase = if u < 0.6 {
            Phase::PortalVenous
        } else if u < 0.8 {
            Phase::Arterial
        } else {
            Phase::NonContrast
        };
        let diagnostic = ScanLook {
            phase,
            kernel: Kernel::Soft,
            noise_sd_hu: r.uniform(ct_noise.0, ct_noise.1) as f32,
            // Soft-tissue kernels resolve about 0.8-1.2 mm FWHM in plane
            // (typical MTF50 ~0.35-0.45 lp/mm).
            resolution_fwhm_mm: r.uniform(0.8, 1.2) as f32,
            noise_fine_mm: r.uniform(0.45, 0.65) as f32,
            noise_coarse_mm: r.uniform(1.6, 2.4) as f32,
            noise_alpha: r.uniform(0.8, 0.95) as f32,
            arms: false,
        };
        // SPECT/CT attenuation CTs are reconstructed with a soft kernel most
        // often, sometimes a bone kernel (as the PyTomography sample is).
        let sharp = r.chance(0.3);
        let soft_sd = r.uniform(ldct_noise.0, ldct_noise.1);
        let low_dose = if sharp {
            ScanLook {
                phase: Phase::NonContrast,
                kernel: Kernel::Sharp,
                // A bone kernel roughly doubles the soft kernel's noise at the
                // same dose (typical); the sample measures 55-70 HU.
                noise_sd_hu: (soft_sd * r.uniform(1.5, 2.0)) as f32,
                resolution_fwhm_mm: r.uniform(0.6, 0.8) as f32,
                noise_fine_mm: r.uniform(0.25, 0.35) as f32,
                noise_coarse_mm: r.uniform(0.7, 1.0) as f32,
                noise_alpha: r.uniform(0.6, 0.8) as f32,
                arms: true,
            }
        } else {
            ScanLook {
                phase: Phase::NonContrast,
                kernel: Kernel::Soft,
                noise_sd_hu: soft_sd as f32,
                resolution_fwhm_mm: r.uniform(0.9, 1.3) as f32,
                noise_fine_mm: r.uniform(0.5, 0.7) as f32,
                noise_coarse_mm: r.uniform(1.6, 2.4) as f32,
                noise_alpha: r.uniform(0.8, 0.95) as f32,
                arms: true,
            }
        };
        // Couch: carbon-fibre skins and foam core, 40-70 mm thick, 40-48 cm
        // wide (typical CT and SPECT/CT tables); the skins read about
        // -200..+100 HU after partial volume, the foam near air.
        let couch = Couch {
            gap_mm: r.uniform(0.0, 4.0),
            thickness_mm: r.uniform(40.0, 70.0),
            half_width_mm: r.uniform(200.0, 240.0),
            radius_mm: r.uniform(600.0, 1400.0),
            shell_mm: r.uniform(1.5, 3.0),
            shell_hu: r.uniform(-100.0, 150.0) as f32,
            core_hu: r.uniform(-980.0, -900.0) as f32,
        };
        // Arms down beside the trunk (long SPECT acquisitions): upper arm /
        // elbow radius 35-48 mm, humerus shaft radius 9-12 mm (typical adult
        // anthropometry).
        let arms = Arms {
            gap_mm: r.uniform(3.0, 25.0),
            radius_mm: r.uniform(35.0, 48.0),
            dy_mm: r.uniform(-25.0, 15.0),
            fat_mm: r.uniform(4.0, 14.0),
            bone_radius_mm: r.uniform(9.0, 12.0),
        };
        CtLook {
            hu,
            texture_sd: tex,
            texture_sigma_mm: r.uniform(1.0, 2.0) as f32,
            diagnostic,
            low_dose,
            couch,
            arms,
        }
    }

    /// Mean HU of tissue `t` in `phase` for this patient.
    pub fn mean_hu(&self, t: Tissue, phase: Phase) -> f32 {
        self.hu[phase.index()][t as usize]
    }
}

/// Sub-slices averaged per slice: odd (the centre one is the nominal slice,
/// whose tissue and labels are returned), spaced at most ~1.7 mm, so thin
/// structures lose contrast in thick slices as on a scanner.
pub(crate) fn sub_slices(dz_mm: f64) -> usize {
    let n = (dz_mm / 1.7).ceil().max(1.0) as usize;
    if n.is_multiple_of(2) {
        n + 1
    } else {
        n
    }
}

/// Renders one CT acquisition on `geom`. `raster` returns (tissue, labels) of
/// the anatomy on a grid. Returns HU, the labels and the tissue map of the
/// nominal grid (exact, nearest-voxel: the same call on the same grid as
/// [`super::Patient::diagnostic_ct_labels`]). Deterministic in `seed`
/// whatever the number of threads (every random stream is per slice).
pub fn render(
    look: &CtLook,
    scan: &ScanLook,
    geom: &Geometry,
    seed: u64,
    raster: &Raster<'_>,
) -> (Vec<f32>, Vec<u8>, Vec<u8>) {
    let [nx, ny, nz] = geom.dims;
    let plane = nx * ny;
    let t0 = std::time::Instant::now();

    // Sub-slices: the centre one on the nominal grid (whole, so its labels are
    // bit-identical to a plain rasterisation), the others in z chunks, all in
    // parallel. The off-centre ones only add the partial volume along z, so
    // they are sampled every second pixel in plane (a quarter of the cost; the
    // difference is at most one pixel at edges, under the kernel blur).
    let m = sub_slices(geom.spacing[2]);
    let centre = (m - 1) / 2;
    let dir = geom.direction[2];
    let (nxc, nyc) = (nx.div_ceil(2), ny.div_ceil(2));
    const CHUNK: usize = 8;
    let mut jobs: Vec<(usize, usize, usize)> = vec![(centre, 0, nz)];
    for s in (0..m).filter(|&s| s != centre) {
        jobs.extend(
            (0..nz)
                .step_by(CHUNK)
                .map(|k0| (s, k0, (k0 + CHUNK).min(nz))),
        );
    }
    let done: Vec<(Vec<u8>, Vec<u8>)> = jobs
        .par_iter()
        .map(|&(s, k0, k1)| {
            if s == centre {
                return raster(geom);
            }
            let off = (s as f64 - centre as f64) * geom.spacing[2] / m as f64;
            let mut g = geom.clone();
            g.origin = geom.index_to_patient([0.0, 0.0, k0 as f64]);
            for a in 0..3 {
                g.origin[a] += off * dir[a];
            }
            g.dims = [nxc, nyc, k1 - k0];
            g.spacing[0] *= 2.0;
            g.spacing[1] *= 2.0;
            (raster(&g).0, Vec::new())
        })
        .collect();
    let mut done = done.into_iter();
    let (tissue, labels) = done.next().unwrap_or_default();
    let mut subs: Vec<Vec<u8>> = vec![Vec::new(); m];
    for (&(s, _, _), (t, _)) in jobs.iter().skip(1).zip(done) {
        subs[s].extend_from_slice(&t);
    }
    let t_raster = t0.elapsed();

    let p = scan.phase.index();
    let mean = look.hu[p];
    let tex = look.texture_sd[p];

    // Overlays in the scanner frame, the same on every slice: arms (tissue) and
    // couch (HU), used only where the anatomy is air.
    let arms = if scan.arms && !has_arms(geom, &tissue) {
        arm_overlay(&look.arms, geom, &tissue)
    } else {
        vec![0u8; plane]
    };
    let couch = couch_overlay(&look.couch, geom, &tissue, &arms);

    // Parenchymal texture: one unit-variance correlated field per scan.
    let mut field = vec![0f32; geom.len()];
    field.par_chunks_mut(plane).enumerate().for_each(|(k, sl)| {
        let mut r = Rng::new(hash64(seed, &format!("texture-{k}")));
        sl.iter_mut().for_each(|v| *v = r.fast_normal());
        let s = look.texture_sigma_mm as f64;
        gauss_axis(sl, [nx, ny, 1], 0, s / geom.spacing[0]);
        gauss_axis(sl, [nx, ny, 1], 1, s / geom.spacing[1]);
    });
    gauss_axis(
        &mut field,
        geom.dims,
        2,
        look.texture_sigma_mm as f64 / geom.spacing[2],
    );
    let sd = (field.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / field.len().max(1) as f64)
        .sqrt()
        .max(1e-12);
    let norm = (1.0 / sd) as f32;

    // Partial volume: mean over the sub-slices of (tissue mean + texture).
    let inv = 1.0 / m as f32;
    let mut hu = vec![0f32; geom.len()];
    let sig_mm = scan.resolution_fwhm_mm as f64 / 2.354_82;
    let alpha = scan.noise_alpha;
    let cx = (nx as f64 - 1.0) / 2.0;
    let cy = (ny as f64 - 1.0) / 2.0;
    let rad2 = (nx.min(ny) as f64 / 2.0).powi(2);
    hu.par_chunks_mut(plane)
        .zip(field.par_chunks(plane))
        .enumerate()
        .for_each(|(k, (sl, fs))| {
            let mut t = vec![0u8; plane];
            for (s, sub) in subs.iter().enumerate() {
                if s == centre {
                    t.copy_from_slice(&tissue[k * plane..(k + 1) * plane]);
                } else {
                    let sc = &sub[k * nxc * nyc..(k + 1) * nxc * nyc];
                    for j in 0..ny {
                        let jc = j.div_ceil(2).min(nyc - 1);
                        for i in 0..nx {
                            t[j * nx + i] = sc[jc * nxc + i.div_ceil(2).min(nxc - 1)];
                        }
                    }
                }
                for q in 0..plane {
                    let mut tt = t[q] as usize;
                    if tt == Tissue::Air as usize && arms[q] != 0 {
                        tt = arms[q] as usize;
                    }
                    let v = if tt == Tissue::Air as usize {
                        let c = couch[q];
                        if c.is_nan() {
                            -1000.0
                        } else {
                            c
                        }
                    } else if tt == Tissue::Stool as usize {
                        // Faeces: soft matter with gas bubbles (where the
                        // texture field is low, ~30 % of the volume), not a
                        // symmetric mottle.
                        let f = norm * fs[q];
                        if f < -0.5 {
                            mean[Tissue::Gas as usize]
                        } else {
                            STOOL_MATTER_HU + 0.2 * tex[tt] * f
                        }
                    } else {
                        let ti = tt.min(N_TISSUE - 1);
                        mean[ti] + tex[ti] * norm * fs[q]
                    };
                    sl[q] += v;
                }
            }
            sl.iter_mut().for_each(|v| *v *= inv);
            // Reconstruction kernel blur, in mm on this grid's pixels.
            gauss_axis(sl, [nx, ny, 1], 0, sig_mm / geom.spacing[0]);
            gauss_axis(sl, [nx, ny, 1], 1, sig_mm / geom.spacing[1]);
            // Quantum noise, independent between slices (contiguous slices of
            // a helical scan nearly are): band-pass filtered white noise,
            // scaled to the drawn SD.
            let mut r = Rng::new(hash64(seed, &format!("quantum-{k}")));
            let mut fine: Vec<f32> = (0..plane).map(|_| r.fast_normal()).collect();
            let mut coarse = fine.clone();
            for a in 0..2 {
                gauss_axis(
                    &mut fine,
                    [nx, ny, 1],
                    a,
                    scan.noise_fine_mm as f64 / geom.spacing[a],
                );
                gauss_axis(
                    &mut coarse,
                    [nx, ny, 1],
                    a,
                    scan.noise_coarse_mm as f64 / geom.spacing[a],
                );
            }
            fine.iter_mut()
                .zip(&coarse)
                .for_each(|(f, c)| *f -= alpha * c);
            let var = fine.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / plane.max(1) as f64;
            let g = scan.noise_sd_hu / var.sqrt().max(1e-12) as f32;
            for j in 0..ny {
                for i in 0..nx {
                    let q = j * nx + i;
                    // Outside the circular reconstruction field the scanner
                    // writes its padding value (-1024 here, the lowest HU kept).
                    if (i as f64 - cx).powi(2) + (j as f64 - cy).powi(2) > rad2 {
                        sl[q] = -1024.0;
                    } else {
                        sl[q] = (sl[q] + g * fine[q]).clamp(-1024.0, 3071.0);
                    }
                }
            }
        });
    tracing::debug!(
        "CT render {:?}, {m} sub-slices: rasterise {:.2} s, total {:.2} s",
        geom.dims,
        t_raster.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    (hu, labels, tissue)
}

/// Gaussian smoothing along `axis` (sigma in voxels): exact taps for small
/// sigma, three running boxes (Kovesi 2010, "Fast almost-Gaussian filtering")
/// above 1.5 voxels, where the taps would cost more than the boxes.
pub(crate) fn gauss_axis(v: &mut [f32], dims: [usize; 3], axis: usize, sigma_vox: f64) {
    if sigma_vox < 1.5 {
        filter_axis(v, dims, axis, &gauss_kernel(sigma_vox));
        return;
    }
    let n = 3.0;
    let w_ideal = (12.0 * sigma_vox * sigma_vox / n + 1.0).sqrt();
    let mut wl = w_ideal.floor() as i64;
    if wl % 2 == 0 {
        wl -= 1;
    }
    let wu = wl + 2;
    let wlf = wl as f64;
    let mm = ((12.0 * sigma_vox * sigma_vox - n * wlf * wlf - 4.0 * n * wlf - 3.0 * n)
        / (-4.0 * wlf - 4.0))
        .round() as i64;
    for pass in 0..3 {
        let w = if pass < mm { wl } else { wu };
        box_axis(v, dims, axis, (w.max(1) as usize - 1) / 2);
    }
}

/// Running mean of width 2r+1 along `axis`, edges clamped.
fn box_axis(v: &mut [f32], dims: [usize; 3], axis: usize, r: usize) {
    let len = dims[axis];
    if r == 0 || len < 2 {
        return;
    }
    let [nx, ny, nz] = dims;
    let inv = 1.0 / (2 * r + 1) as f32;
    let clampi = |i: isize| i.clamp(0, len as isize - 1) as usize;
    if axis == 0 {
        let mut line = vec![0f32; nx];
        for row in v.chunks_mut(nx) {
            line.copy_from_slice(row);
            let mut acc: f32 = (-(r as isize)..=r as isize).map(|d| line[clampi(d)]).sum();
            for (i, out) in row.iter_mut().enumerate() {
                *out = acc * inv;
                acc += line[clampi(i as isize + r as isize + 1)]
                    - line[clampi(i as isize - r as isize)];
            }
        }
        return;
    }
    let (outer, stride, count) = if axis == 1 {
        (nz, nx, ny)
    } else {
        (ny, nx * ny, nz)
    };
    let mut block = vec![0f32; count * nx];
    let mut acc = vec![0f32; nx];
    for o in 0..outer {
        let base = |c: usize| {
            if axis == 1 {
                o * nx * ny + c * stride
            } else {
                o * nx + c * stride
            }
        };
        for c in 0..count {
            let b = base(c);
            block[c * nx..(c + 1) * nx].copy_from_slice(&v[b..b + nx]);
        }
        acc.iter_mut().for_each(|a| *a = 0.0);
        for d in -(r as isize)..=r as isize {
            let src = clampi(d);
            acc.iter_mut()
                .zip(&block[src * nx..(src + 1) * nx])
                .for_each(|(a, &b)| *a += b);
        }
        for c in 0..count {
            let b = base(c);
            v[b..b + nx]
                .iter_mut()
                .zip(&acc)
                .for_each(|(o, &a)| *o = a * inv);
            let add = clampi(c as isize + r as isize + 1);
            let sub = clampi(c as isize - r as isize);
            for x in 0..nx {
                acc[x] += block[add * nx + x] - block[sub * nx + x];
            }
        }
    }
}

/// Normalised Gaussian taps, radius ceil(3 sigma); a single tap when sigma is
/// too small to matter.
pub(crate) fn gauss_kernel(sigma_vox: f64) -> Vec<f32> {
    // NaN or tiny sigma: identity.
    if sigma_vox.is_nan() || sigma_vox <= 0.05 {
        return vec![1.0];
    }
    let rad = (3.0 * sigma_vox).ceil().max(1.0) as isize;
    let w: Vec<f64> = (-rad..=rad)
        .map(|d| (-(d as f64).powi(2) / (2.0 * sigma_vox * sigma_vox)).exp())
        .collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|&x| (x / s) as f32).collect()
}

/// Convolves `v` (dims, x fastest) along `axis` with the odd-length kernel
/// `k`, edges clamped.
pub(crate) fn filter_axis(v: &mut [f32], dims: [usize; 3], axis: usize, k: &[f32]) {
    if k.len() <= 1 {
        return;
    }
    let [nx, ny, nz] = dims;
    let rad = (k.len() / 2) as isize;
    let len = dims[axis];
    if len < 2 {
        return;
    }
    let clampi = |i: isize| i.clamp(0, len as isize - 1) as usize;
    match axis {
        0 => {
            let mut line = vec![0f32; nx];
            for row in v.chunks_mut(nx) {
                line.copy_from_slice(row);
                for (i, out) in row.iter_mut().enumerate() {
                    let mut acc = 0f32;
                    for (t, &w) in k.iter().enumerate() {
                        acc += w * line[clampi(i as isize + t as isize - rad)];
                    }
                    *out = acc;
                }
            }
        }
        _ => {
            // Lines along y (within a slice) or z (across slices): filter whole
            // rows of x at once so memory is read contiguously.
            let (outer, stride, count) = if axis == 1 {
                (nz, nx, ny)
            } else {
                (ny, nx * ny, nz)
            };
            let mut block = vec![0f32; count * nx];
            for o in 0..outer {
                let base = |c: usize| {
                    if axis == 1 {
                        o * nx * ny + c * stride
                    } else {
                        o * nx + c * stride
                    }
                };
                for c in 0..count {
                    let b = base(c);
                    block[c * nx..(c + 1) * nx].copy_from_slice(&v[b..b + nx]);
                }
                for c in 0..count {
                    let b = base(c);
                    let out = &mut v[b..b + nx];
                    out.iter_mut().for_each(|x| *x = 0.0);
                    for (t, &w) in k.iter().enumerate() {
                        let src = clampi(c as isize + t as isize - rad);
                        let line = &block[src * nx..(src + 1) * nx];
                        for (x, &y) in out.iter_mut().zip(line) {
                            *x += w * y;
                        }
                    }
                }
            }
        }
    }
}

/// Solid part of faeces (typical: soft-tissue to water density, 0-40 HU).
const STOOL_MATTER_HU: f32 = 25.0;

/// Whether the anatomy already has arms (or any other body part apart from
/// the trunk): on the middle slice, the row through the body's centre crosses
/// two or more runs of at least 10 non-air voxels.
fn has_arms(geom: &Geometry, tissue: &[u8]) -> bool {
    let [nx, ny, nz] = geom.dims;
    let plane = nx * ny;
    let Some((_, _, j0, j1)) = body_extent(geom, tissue) else {
        return false;
    };
    let k = nz / 2;
    let j = (j0 + j1) / 2;
    let row = &tissue[k * plane + j * nx..k * plane + (j + 1) * nx];
    let mut runs = 0;
    let mut len = 0;
    for &t in row.iter().chain(std::iter::once(&(Tissue::Air as u8))) {
        if t != Tissue::Air as u8 {
            len += 1;
        } else {
            if len >= 10 {
                runs += 1;
            }
            len = 0;
        }
    }
    runs >= 2
}

/// In-plane extent of the body over all slices, in index units:
/// (i_min, i_max, j_min, j_max), or None for an empty grid.
fn body_extent(geom: &Geometry, tissue: &[u8]) -> Option<(usize, usize, usize, usize)> {
    let [nx, ny, _] = geom.dims;
    let plane = nx * ny;
    let mut ext: Option<(usize, usize, usize, usize)> = None;
    for (idx, &t) in tissue.iter().enumerate() {
        if t == Tissue::Air as u8 {
            continue;
        }
        let q = idx % plane;
        let (i, j) = (q % nx, q / nx);
        ext = Some(match ext {
            None => (i, i, j, j),
            Some((a, b, c, d)) => (a.min(i), b.max(i), c.min(j), d.max(j)),
        });
    }
    ext
}

/// Couch HU per in-plane pixel (NaN = none), below the lowest body voxel, not
/// where an arm lies.
fn couch_overlay(c: &Couch, geom: &Geometry, tissue: &[u8], arms: &[u8]) -> Vec<f32> {
    let [nx, ny, _] = geom.dims;
    let mut out = vec![f32::NAN; nx * ny];
    let Some((i0, i1, _, j1)) = body_extent(geom, tissue) else {
        return out;
    };
    let (sx, sy) = (geom.spacing[0], geom.spacing[1]);
    let xc = 0.5 * (i0 + i1) as f64 * sx;
    // +y is posterior: the table top lies just behind the patient's back.
    let y0 = (j1 as f64 + 0.5) * sy + c.gap_mm;
    for j in 0..ny {
        let y = j as f64 * sy;
        for i in 0..nx {
            let x = i as f64 * sx - xc;
            if x.abs() > c.half_width_mm {
                continue;
            }
            let top = y0 - x * x / (2.0 * c.radius_mm);
            let depth = y - top;
            if depth < 0.0 || depth > c.thickness_mm {
                continue;
            }
            if arms.get(j * nx + i).is_some_and(|&a| a != 0) {
                continue;
            }
            let edge = c.half_width_mm - x.abs();
            let shell =
                depth < c.shell_mm || c.thickness_mm - depth < c.shell_mm || edge < c.shell_mm;
            out[j * nx + i] = if shell { c.shell_hu } else { c.core_hu };
        }
    }
    out
}

/// Arm cross-sections (tissue per in-plane pixel, 0 = none) beside the body.
fn arm_overlay(a: &Arms, geom: &Geometry, tissue: &[u8]) -> Vec<u8> {
    let [nx, ny, _] = geom.dims;
    let mut out = vec![0u8; nx * ny];
    let Some((i0, i1, j0, j1)) = body_extent(geom, tissue) else {
        return out;
    };
    let (sx, sy) = (geom.spacing[0], geom.spacing[1]);
    let yc = 0.5 * (j0 + j1) as f64 * sy + a.dy_mm;
    let centres = [
        i0 as f64 * sx - a.gap_mm - a.radius_mm,
        i1 as f64 * sx + a.gap_mm + a.radius_mm,
    ];
    for j in 0..ny {
        let y = j as f64 * sy;
        for i in 0..nx {
            let x = i as f64 * sx;
            for &xc in &centres {
                // Slightly flattened front to back, as an arm at rest.
                let d = ((x - xc).powi(2) + ((y - yc) / 0.9).powi(2)).sqrt();
                if d > a.radius_mm {
                    continue;
                }
                let bone_d = ((x - xc).powi(2) + (y - yc).powi(2)).sqrt();
                let t = if bone_d < a.bone_radius_mm - 3.0 {
                    // Fatty (yellow) marrow of the humerus shaft.
                    Tissue::Fat
                } else if bone_d < a.bone_radius_mm {
                    Tissue::BoneCortical
                } else if d > a.radius_mm - 2.0 {
                    Tissue::Skin
                } else if d > a.radius_mm - 2.0 - a.fat_mm {
                    Tissue::Fat
                } else {
                    Tissue::Muscle
                };
                out[j * nx + i] = t as u8;
            }
        }
    }
    out
}

/// One panel of the real-versus-phantom picture: an axial slice `k` of `ct`.
pub struct ComparePanel<'a> {
    pub ct: &'a crate::volume::Volume<f32>,
    pub k: usize,
}

/// Panel size of the comparison picture (mm, and pixels at 1 mm).
const CMP_W: usize = 400;
const CMP_H: usize = 290;

/// Grey level of `hu` at window width 400 / level 40 (abdominal soft tissue).
fn window(hu: f32) -> u8 {
    (((hu + 160.0) / 400.0).clamp(0.0, 1.0) * 255.0).round() as u8
}

fn panel_pixels(pn: &ComparePanel) -> Vec<u8> {
    let g = &pn.ct.geom;
    let [nx, ny, nz] = g.dims;
    let k = pn.k.min(nz.saturating_sub(1));
    // Centre on the body: the bounding box of voxels above -400 HU, without
    // the couch (its rows are thin; the box is taken on pixels with at least
    // 20 body pixels in their row).
    let sl = &pn.ct.data[k * nx * ny..(k + 1) * nx * ny];
    let (mut i0, mut i1, mut j0, mut j1) = (nx, 0, ny, 0);
    for j in 0..ny {
        let row = &sl[j * nx..(j + 1) * nx];
        let cnt = row.iter().filter(|&&v| v > -400.0).count();
        if cnt < 20 {
            continue;
        }
        j0 = j0.min(j);
        j1 = j1.max(j);
        for (i, &v) in row.iter().enumerate() {
            if v > -400.0 {
                i0 = i0.min(i);
                i1 = i1.max(i);
            }
        }
    }
    let (ci, cj) = if i0 <= i1 && j0 <= j1 {
        (0.5 * (i0 + i1) as f64, 0.5 * (j0 + j1) as f64)
    } else {
        (nx as f64 / 2.0, ny as f64 / 2.0)
    };
    let c = g.index_to_patient([ci, cj, k as f64]);
    let mut out = vec![0u8; CMP_W * CMP_H];
    for v in 0..CMP_H {
        for u in 0..CMP_W {
            // Radiological display: image right = patient left (+x), image
            // down = posterior (+y); 1 mm per pixel.
            let w = [
                c[0] + u as f64 - CMP_W as f64 / 2.0,
                c[1] + v as f64 - CMP_H as f64 / 2.0,
                c[2],
            ];
            let idx = g.patient_to_index(w);
            let (fi, fj) = (idx[0], idx[1]);
            if fi < 0.0 || fj < 0.0 || fi > (nx - 1) as f64 || fj > (ny - 1) as f64 {
                out[v * CMP_W + u] = window(-1024.0);
                continue;
            }
            let (a, b) = (fi.floor() as usize, fj.floor() as usize);
            let (a1, b1) = ((a + 1).min(nx - 1), (b + 1).min(ny - 1));
            let (tx, ty) = ((fi - a as f64) as f32, (fj - b as f64) as f32);
            let at = |i: usize, j: usize| sl[j * nx + i];
            let h = (1.0 - ty) * ((1.0 - tx) * at(a, b) + tx * at(a1, b))
                + ty * ((1.0 - tx) * at(a, b1) + tx * at(a1, b1));
            out[v * CMP_W + u] = window(h);
        }
    }
    out
}

/// Writes rows of panel pairs (real | phantom) as one grey PNG at W 400 / L 40,
/// 1 mm per pixel, each panel 400 x 290 mm centred on the body.
pub fn write_comparison(
    path: &std::path::Path,
    rows: &[(ComparePanel, ComparePanel)],
) -> crate::error::Result<()> {
    let gap = 4;
    let w = 2 * CMP_W + gap;
    let h = rows.len() * CMP_H + rows.len().saturating_sub(1) * gap;
    let mut img = vec![255u8; w * h];
    for (r, (a, b)) in rows.iter().enumerate() {
        for (c, pn) in [a, b].into_iter().enumerate() {
            let px = panel_pixels(pn);
            let (ox, oy) = (c * (CMP_W + gap), r * (CMP_H + gap));
            for v in 0..CMP_H {
                let o = (oy + v) * w + ox;
                img[o..o + CMP_W].copy_from_slice(&px[v * CMP_W..(v + 1) * CMP_W]);
            }
        }
    }
    let bytes = super::png::encode_gray(w as u32, h as u32, &img)
        .map_err(|e| crate::error::Error::io(path, e))?;
    crate::io::write_bytes_atomically(path, &bytes)
}

/// The axial slice of `labels` holding the most kidney voxels (the middle
/// slice if there are none).
pub fn kidney_slice(labels: &crate::volume::Volume<u8>) -> usize {
    let [nx, ny, nz] = labels.geom.dims;
    let plane = nx * ny;
    (0..nz)
        .max_by_key(|&k| {
            labels.data[k * plane..(k + 1) * plane]
                .iter()
                .filter(|&&l| l == crate::organs::KIDNEY_LEFT || l == crate::organs::KIDNEY_RIGHT)
                .count()
        })
        .unwrap_or(nz / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_slices_are_odd_and_fine_enough() {
        for &dz in &[0.6, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0, 8.0] {
            let m = sub_slices(dz);
            assert_eq!(m % 2, 1, "{dz}");
            assert!(dz / m as f64 <= 1.7, "{dz}: {m}");
        }
        assert_eq!(sub_slices(0.625), 1);
    }

    #[test]
    fn gaussian_taps_sum_to_one_and_filter_keeps_the_mean() {
        let k = gauss_kernel(1.3);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let dims = [7, 5, 4];
        let mut v = vec![3.0f32; 140];
        for a in 0..3 {
            filter_axis(&mut v, dims, a, &k);
        }
        assert!(v.iter().all(|x| (x - 3.0).abs() < 1e-4));
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        for s in 0..50 {
            let look = CtLook::sample(&mut Rng::new(s), (8.0, 15.0), (20.0, 40.0));
            for (i, t) in all_tissues() {
                for (p, &(lo, hi)) in hu_ranges(t).iter().enumerate() {
                    let v = look.hu[p][i];
                    assert!(v >= lo - 1e-3 && v <= hi + 1e-3, "{t:?} phase {p}: {v}");
                }
            }
            let a = Phase::Arterial;
            assert!(
                look.mean_hu(Tissue::KidneyCortex, a) - look.mean_hu(Tissue::KidneyMedulla, a)
                    >= 50.0
            );
            assert_eq!(look.low_dose.phase, Phase::NonContrast);
            assert!((8.0..=15.0).contains(&look.diagnostic.noise_sd_hu));
        }
    }
}
