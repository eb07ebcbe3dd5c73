//! `organdose calibrate-psf` against known truth: a 30 mm sphere of 177Lu in a warm
//! cylinder, through the phantom's own camera (`phantom::spect::camera`: Gaussian
//! truncated at 3 sigma, Poisson noise of a 30 min acquisition), written as NIfTI.
//! The FWHM found must be within 0.5 mm of the camera's.

use organdose::phantom::spect::camera;
use organdose::volume::{Geometry, Volume};
use std::process::Command;

fn sphere_phantom(fwhm_mm: f64, axial_fwhm_mm: f64, seed: u64) -> Volume<f32> {
    let g = Geometry::new([64, 64, 48], [4.42, 4.42, 4.42], [-141.4, -141.4, -106.0]);
    let [nx, ny, _] = g.dims;
    // 30 mm sphere at 100 kBq/mL, off-centre, in a 200 mm cylinder at 5 kBq/mL.
    let centre = [12.3, -8.1, 3.7];
    const SUB: usize = 4;
    let data: Vec<f32> = (0..g.len())
        .map(|l| {
            let idx = [l % nx, (l / nx) % ny, l / (nx * ny)];
            let mut inside = 0usize;
            let mut body = 0usize;
            for q in 0..SUB * SUB * SUB {
                let o = [q % SUB, (q / SUB) % SUB, q / (SUB * SUB)];
                let p = g.index_to_patient(std::array::from_fn(|a| {
                    idx[a] as f64 + (o[a] as f64 + 0.5) / SUB as f64 - 0.5
                }));
                let d2: f64 = (0..3).map(|a| (p[a] - centre[a]).powi(2)).sum();
                if d2 <= 15.0 * 15.0 {
                    inside += 1;
                } else if p[0] * p[0] + p[1] * p[1] <= 100.0 * 100.0 && p[2].abs() < 90.0 {
                    body += 1;
                }
            }
            let n = (SUB * SUB * SUB) as f32;
            (inside as f32 * 100e3 + body as f32 * 5e3) / n
        })
        .collect();
    let act = Volume::new(g, data).expect("volume");
    // Axial blur beyond the in-plane one: a breathing-free but anisotropic camera is
    // made by blurring axially once more (variances add).
    let mut v = camera(&act, fwhm_mm, 0.0, 0.0, seed);
    if axial_fwhm_mm > fwhm_mm {
        let extra = (axial_fwhm_mm.powi(2) - fwhm_mm.powi(2)).sqrt() / 2.354_82;
        organdose::dosimetry::psf::gaussian_blur_3d_axes(
            &mut v.data,
            v.geom.dims,
            v.geom.spacing,
            [0.0, 0.0, extra],
            organdose::dosimetry::psf::Boundary::Zero,
        );
    }
    // Poisson noise at the phantom's sensitivity (10 cps/MBq, 30 min).
    camera(&v, 0.0, 0.0, 10.0 * 1e-6 * 1800.0, seed + 1)
}

#[test]
fn calibrate_psf_recovers_the_cameras_fwhm() {
    let dir = tempfile::tempdir().expect("tmp");
    for (k, (f, fz)) in [(11.0, 11.0), (13.5, 15.0)].into_iter().enumerate() {
        let img = sphere_phantom(f, fz, 40 + k as u64);
        let path = dir.path().join(format!("sphere{k}.nii.gz"));
        organdose::io::nifti::write_nifti(&img, &path, "sphere").expect("write");
        let json = dir.path().join(format!("fit{k}.json"));
        let out = Command::new(env!("CARGO_BIN_EXE_organdose"))
            .args([
                "calibrate-psf",
                path.to_str().unwrap(),
                "--sphere-diameter-mm",
                "30",
                "--json",
            ])
            .arg(&json)
            .output()
            .expect("run organdose");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{stdout}");
        let fit: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
        let got = fit["fwhm_mm"].as_f64().expect("fwhm");
        let got_z = fit["axial_fwhm_mm"].as_f64().expect("axial");
        assert!((got - f).abs() < 0.5, "in-plane {got:.2} mm vs {f} mm");
        assert!((got_z - fz).abs() < 0.5, "axial {got_z:.2} mm vs {fz} mm");
        assert!(
            stdout.contains(&format!("pvc_psf_fwhm_mm = {got:.1}")),
            "{stdout}"
        );
        let c = &fit["centre_mm"];
        let c: Vec<f64> = (0..3).map(|a| c[a].as_f64().unwrap_or(f64::NAN)).collect();
        assert!(
            (c[0] - 12.3).abs() < 1.0 && (c[1] + 8.1).abs() < 1.0 && (c[2] - 3.7).abs() < 1.0,
            "{c:?}"
        );
    }
}

#[test]
fn calibrate_psf_refuses_a_flat_image_and_names_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let g = Geometry::new([20, 20, 20], [4.0; 3], [0.0; 3]);
    let flat = Volume::new(g, vec![1.0f32; 8000]).expect("volume");
    let path = dir.path().join("flat.nii.gz");
    organdose::io::nifti::write_nifti(&flat, &path, "flat").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_organdose"))
        .args([
            "calibrate-psf",
            path.to_str().unwrap(),
            "--sphere-diameter-mm",
            "30",
        ])
        .output()
        .expect("run organdose");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("flat.nii.gz") && err.contains("no hot sphere"),
        "{err}"
    );
}

#[test]
fn calibrate_psf_refuses_an_image_that_is_not_one_sphere() {
    // A long hot bar, not a 30 mm sphere: the fit runs to the edge of its search.
    let dir = tempfile::tempdir().expect("tmp");
    let g = Geometry::new([40, 40, 40], [4.0; 3], [0.0; 3]);
    let data: Vec<f32> = (0..g.len())
        .map(|l| {
            let (i, j) = (l % 40, (l / 40) % 40);
            if (18..22).contains(&i) && (18..22).contains(&j) {
                100.0
            } else {
                1.0
            }
        })
        .collect();
    let path = dir.path().join("bar.nii.gz");
    organdose::io::nifti::write_nifti(&Volume::new(g, data).expect("volume"), &path, "bar")
        .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_organdose"))
        .args([
            "calibrate-psf",
            path.to_str().unwrap(),
            "--sphere-diameter-mm",
            "30",
        ])
        .output()
        .expect("run organdose");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("bar.nii.gz") && err.contains("not one hot"),
        "{err}"
    );
}
