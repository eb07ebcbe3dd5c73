//! CT appearance of the phantom (crates/phantom/src/ct_appearance.rs): noise level and
//! texture by dose, contrast phases, slice-thickness partial volume,
//! determinism.

use organdose::organs;
use organdose::phantom::anatomy::Tissue;
use organdose::phantom::ct_appearance::{render, CtLook, Kernel, Phase, ScanLook};
use organdose::phantom::rng::Rng;
use organdose::phantom::{AnatomyKind, Patient, PhantomConfig};
use organdose::volume::Geometry;

/// A 96x96 grid at 0.8 mm pixels, `nz` slices of `dz` mm centred on z = 0.
fn grid(nz: usize, dz: f64) -> Geometry {
    let n = 96;
    let half = (n as f64 - 1.0) / 2.0 * 0.8;
    let z0 = -(nz as f64 - 1.0) / 2.0 * dz;
    Geometry::new([n, n, nz], [0.8, 0.8, dz], [-half, -half, z0])
}

/// Rasterises `f(x, y, z)` (patient mm) on a grid: tissue classes, no labels.
fn raster_of(
    f: impl Fn(f64, f64, f64) -> Tissue + Sync,
) -> impl Fn(&Geometry) -> (Vec<u8>, Vec<u8>) + Sync {
    move |g: &Geometry| {
        let [nx, ny, nz] = g.dims;
        let mut t = vec![0u8; g.len()];
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let p = g.index_to_patient([i as f64, j as f64, k as f64]);
                    t[g.linear(i, j, k)] = f(p[0], p[1], p[2]) as u8;
                }
            }
        }
        (t, vec![0u8; g.len()])
    }
}

/// Small grids and the geometric anatomy (built in milliseconds; the CT
/// rendering under test is the same for either anatomy).
fn small() -> PhantomConfig {
    PhantomConfig {
        anatomy: Some(AnatomyKind::Geometric),
        ..PhantomConfig::small()
    }
}

fn look(seed: u64) -> CtLook {
    CtLook::sample(&mut Rng::new(seed), (8.0, 15.0), (20.0, 40.0))
}

/// Noise in a water disc (radius 35 mm; water has almost no texture): SD and
/// the mean neighbour correlation along x, over the central 40x40 pixels of
/// every slice, after removing each slice's mean.
fn water_noise(scan: &ScanLook, l: &CtLook, seed: u64) -> (f64, f64) {
    let g = grid(4, 2.5);
    let raster = raster_of(|x, y, _| {
        if x * x + y * y < 35.0 * 35.0 {
            Tissue::GiFluid
        } else {
            Tissue::Air
        }
    });
    let (hu, _, _) = render(l, scan, &g, seed, &raster);
    let [nx, ny, nz] = g.dims;
    let (mut ss, mut cc, mut n, mut nc) = (0.0, 0.0, 0usize, 0usize);
    for k in 0..nz {
        let px: Vec<(usize, usize)> = (28..68)
            .flat_map(|j| (28..68).map(move |i| (i, j)))
            .collect();
        let mean = px
            .iter()
            .map(|&(i, j)| hu[g.linear(i, j, k)] as f64)
            .sum::<f64>()
            / px.len() as f64;
        for &(i, j) in &px {
            let a = hu[g.linear(i, j, k)] as f64 - mean;
            ss += a * a;
            n += 1;
            if i + 1 < 68 {
                cc += a * (hu[g.linear(i + 1, j, k)] as f64 - mean);
                nc += 1;
            }
        }
        let _ = (nx, ny);
    }
    let var = ss / n as f64;
    (var.sqrt(), cc / nc as f64 / var)
}

#[test]
fn noise_sd_by_dose_level_and_correlated_texture() {
    for s in 0..6 {
        let l = look(s);
        let (sd_ct, corr_ct) = water_noise(&l.diagnostic, &l, 100 + s);
        let (sd_ld, corr_ld) = water_noise(&l.low_dose, &l, 200 + s);
        eprintln!(
            "seed {s}: diagnostic SD {sd_ct:.1} HU (drawn {:.1}), corr {corr_ct:.2}; low-dose {:?} SD {sd_ld:.1} (drawn {:.1}), corr {corr_ld:.2}",
            l.diagnostic.noise_sd_hu, l.low_dose.kernel, l.low_dose.noise_sd_hu
        );
        // Within the drawn range (texture of water adds < 3 HU in quadrature).
        assert!((7.5..16.5).contains(&sd_ct), "diagnostic SD {sd_ct}");
        match l.low_dose.kernel {
            Kernel::Soft => {
                assert!((19.0..42.0).contains(&sd_ld), "low-dose SD {sd_ld}");
                assert!(corr_ld > 0.3, "low-dose neighbour correlation {corr_ld}");
            }
            Kernel::Sharp => assert!((28.0..82.0).contains(&sd_ld), "sharp SD {sd_ld}"),
        }
        assert!(
            sd_ld > sd_ct + 5.0,
            "low-dose {sd_ld} vs diagnostic {sd_ct}"
        );
        // Correlated (soft kernel), not white.
        assert!(corr_ct > 0.3, "diagnostic neighbour correlation {corr_ct}");
        // The measured SD follows the drawn one.
        assert!((sd_ct / l.diagnostic.noise_sd_hu as f64 - 1.0).abs() < 0.15);
    }
}

#[test]
fn arterial_kidney_cortex_is_brighter_than_medulla() {
    // Half cortex (x < 0), half medulla, 40 mm disc.
    let raster = raster_of(|x, y, _| {
        if x * x + y * y >= 40.0 * 40.0 {
            Tissue::Fat
        } else if x < 0.0 {
            Tissue::KidneyCortex
        } else {
            Tissue::KidneyMedulla
        }
    });
    let g = grid(3, 2.5);
    for s in 0..5 {
        let l = look(s);
        let mut means = Vec::new();
        for phase in [Phase::Arterial, Phase::PortalVenous, Phase::NonContrast] {
            let scan = ScanLook {
                phase,
                ..l.diagnostic.clone()
            };
            let (hu, _, _) = render(&l, &scan, &g, 7, &raster);
            let region = |i0: usize, i1: usize| {
                let mut v = Vec::new();
                for k in 0..3 {
                    for j in 38..58 {
                        for i in i0..i1 {
                            v.push(hu[g.linear(i, j, k)] as f64);
                        }
                    }
                }
                v.iter().sum::<f64>() / v.len() as f64
            };
            let (cortex, medulla) = (region(20, 40), region(56, 76));
            eprintln!(
                "seed {s} {}: cortex {cortex:.0} HU, medulla {medulla:.0} HU",
                phase.name()
            );
            means.push((cortex, medulla));
        }
        let (ca, ma) = means[0];
        assert!(ca - ma > 40.0, "arterial cortex {ca} medulla {ma}");
        assert!(ca > 140.0, "arterial cortex {ca}");
        // Portal-venous: homogeneous and enhanced.
        let (cp, mp) = means[1];
        assert!(
            (cp - mp).abs() < 65.0 && mp > 120.0,
            "portal-venous {cp} {mp}"
        );
        let (cn, mn) = means[2];
        assert!(cn < 50.0 && mn < 50.0, "non-contrast {cn} {mn}");
    }
}

#[test]
fn low_dose_ct_is_never_contrast_enhanced() {
    let cfg = small();
    let mut phases = [0usize; 3];
    for seed in 0..200 {
        let p = Patient::new(&cfg, seed, 0);
        assert_eq!(p.ct_look.low_dose.phase, Phase::NonContrast, "seed {seed}");
        phases[match p.ct_look.diagnostic.phase {
            Phase::NonContrast => 0,
            Phase::Arterial => 1,
            Phase::PortalVenous => 2,
        }] += 1;
    }
    // Portal-venous the most common diagnostic phase, every phase drawn.
    assert!(phases[2] > phases[0] && phases[2] > phases[1], "{phases:?}");
    assert!(phases.iter().all(|&n| n > 10), "{phases:?}");
    // A rendered low-dose CT: kidneys and aorta at unenhanced values.
    let p = (0..50)
        .map(|s| Patient::new(&cfg, s, 0))
        .find(|p| p.ct_look.diagnostic.phase != Phase::NonContrast)
        .expect("an enhanced diagnostic CT in 50 seeds");
    let (ld, labels) = p.ldct(0);
    // The labels alone (what the dose tests take) are the rendered CT's.
    let alone = p.ldct_labels(0);
    assert_eq!(alone.geom, labels.geom);
    assert!(
        alone.data == labels.data,
        "ldct_labels differs from ldct's labels"
    );
    let kid: Vec<f32> = ld
        .data
        .iter()
        .zip(&labels.data)
        .filter(|(_, &l)| l == organs::KIDNEY_LEFT || l == organs::KIDNEY_RIGHT)
        .map(|(&h, _)| h)
        .collect();
    let mean = kid.iter().sum::<f32>() / kid.len().max(1) as f32;
    assert!(
        !kid.is_empty() && mean < 60.0,
        "low-dose kidney mean {mean} HU"
    );
}

#[test]
fn same_seed_same_bytes() {
    let cfg = small();
    let a = Patient::new(&cfg, 11, 0).diagnostic_ct().0;
    let b = Patient::new(&cfg, 11, 0).diagnostic_ct().0;
    assert!(a
        .data
        .iter()
        .zip(&b.data)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    let c = Patient::new(&cfg, 12, 0).diagnostic_ct().0;
    assert!(a.data != c.data);
    let l1 = Patient::new(&cfg, 11, 0).ldct(0).0;
    let l2 = Patient::new(&cfg, 11, 0).ldct(0).0;
    assert!(l1
        .data
        .iter()
        .zip(&l2.data)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn thin_bright_plate_loses_peak_in_thick_slices() {
    // A 2 mm bone plate across the field at z = 0, in water; slices centred on it.
    let raster = raster_of(|_, _, z| {
        if z.abs() < 1.0 {
            Tissue::BoneCortical
        } else {
            Tissue::GiFluid
        }
    });
    let l = look(3);
    let plate = l.mean_hu(Tissue::BoneCortical, Phase::NonContrast) as f64;
    let mut peaks = Vec::new();
    for dz in [0.625, 2.5, 5.0] {
        let g = grid(5, dz);
        let (hu, _, _) = render(&l, &l.diagnostic, &g, 9, &raster);
        // Mean over the centre slice (noise averages out).
        let k = 2;
        let v: Vec<f64> = (20..76)
            .flat_map(|j| (20..76).map(move |i| (i, j)))
            .map(|(i, j)| hu[g.linear(i, j, k)] as f64)
            .collect();
        let peak = v.iter().sum::<f64>() / v.len() as f64;
        eprintln!("slice {dz} mm: plate slice {peak:.0} HU (plate {plate:.0})");
        peaks.push(peak);
    }
    assert!((peaks[0] - plate).abs() < 60.0, "thin slice {peaks:?}");
    assert!(
        peaks[2] < peaks[0] - 300.0,
        "5 mm slice keeps the peak: {peaks:?}"
    );
    assert!(peaks[2] < peaks[1] - 100.0, "{peaks:?}");
}
