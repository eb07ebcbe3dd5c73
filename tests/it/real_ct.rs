//! Real-CT evaluation loaders (`organdose::seg::realct`) and the QC overlay
//! (`organdose::report::overlay`): synthetic cases with known truth written
//! by the project's own writers, then the real cases kept in
//! `../shared/data/real-ct` when that folder is there (`common/data.rs`: skipped
//! when absent, failed then under `ORGANDOSE_REQUIRE_DATA=1`).

use crate::common::data;

use organdose::config::Config;
use organdose::io::dicom_write::{self, CtInfo, DicomPatient, DicomSeries, DicomStudy};
use organdose::io::nifti;
use organdose::organs;
use organdose::report::overlay::{self, OverlayOptions};
use organdose::seg::realct::{
    self, CaseKind, CaseSource, GenericTruth, PngSliceOptions, TruthOrgan,
};
use organdose::{Geometry, Volume};
use std::io::Write;
use std::path::{Path, PathBuf};

fn write_ct(vol: &Volume<f32>, dir: &Path, uid: &str) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let p = DicomPatient {
        id: "RC1".into(),
        name: "REAL^CT".into(),
        birth_date: "19600101".into(),
        sex: "O".into(),
        issuer: String::new(),
    };
    let st = DicomStudy {
        uid: format!("{uid}.1"),
        date: "20260101".into(),
        time: "120000".into(),
        description: "CT".into(),
        study_id: "1".into(),
        accession: "A1".into(),
    };
    let se = DicomSeries {
        uid: format!("{uid}.2"),
        number: 2,
        description: "CT".into(),
        date: "20260101".into(),
        time: "120000".into(),
        frame_of_reference_uid: format!("{uid}.3"),
        acquisition_date: "20260101".into(),
        acquisition_time: "120000".into(),
        manufacturer: "organdose".into(),
        model: "test".into(),
        station: "T".into(),
        body_part: "ABDOMEN".into(),
    };
    let info = CtInfo {
        kvp: 120.0,
        tube_current_ma: 100,
        exposure_mas: 100,
        kernel: "B30f".into(),
        contrast_agent: None,
        window_center: 40.0,
        window_width: 400.0,
    };
    dicom_write::write_ct_series(vol, &p, &st, &se, &info, dir).unwrap()
}

fn write_png(path: &Path, w: usize, h: usize, ct: png::ColorType, data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w as u32, h as u32);
    enc.set_color(ct);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(data).unwrap();
}

const NX: usize = 12;
const NY: usize = 10;
const NZ: usize = 5;

/// CT at -50 HU with a 100 HU marker block on the patient's LEFT (high i,
/// LPS +x) in the most superior slice only; returns (CT, marker voxels).
fn marked_ct() -> (Volume<f32>, Vec<[usize; 3]>) {
    let g = Geometry::new([NX, NY, NZ], [2.0, 2.0, 3.0], [-11.0, -9.0, 100.0]);
    let mut ct = Volume::filled(g, -50f32);
    let mut marker = Vec::new();
    for j in 3..6 {
        for i in 8..11 {
            ct.set(i, j, NZ - 1, 100.0);
            marker.push([i, j, NZ - 1]);
        }
    }
    (ct, marker)
}

fn check_marker(truth: &Volume<u8>, ct: &Volume<f32>, marker: &[[usize; 3]], label: u8) {
    let n = truth.data.iter().filter(|&&v| v == label).count();
    assert_eq!(n, marker.len(), "truth voxel count");
    for &[i, j, k] in marker {
        assert_eq!(truth.get(i, j, k), label, "truth at {i},{j},{k}");
        assert_eq!(ct.get(i, j, k), 100.0);
        // On the patient's left (LPS +x) and at the top of the volume.
        let p = truth.geom.index_to_patient([i as f64, j as f64, k as f64]);
        assert!(p[0] > 0.0, "marker on the patient's left");
        assert!(
            (p[2] - 112.0).abs() < 1e-6,
            "most superior slice, z {}",
            p[2]
        );
    }
}

#[test]
fn chaos_layout_maps_png_order_to_file_name_order() {
    let tmp = tempfile::tempdir().unwrap();
    let case = tmp.path().join("chaos");
    let dcm = case.join("DICOM_anon");
    let (ct, marker) = marked_ct();
    let files = write_ct(&ct, &dcm, "2.25.111");
    // CHAOS names its files so that name order runs from the head down:
    // the most superior slice (k = NZ-1) gets the first name.
    for (k, f) in files.iter().enumerate() {
        std::fs::rename(f, dcm.join(format!("i{:04},0000b.dcm", NZ - 1 - k))).unwrap();
    }
    let gt = case.join("Ground");
    std::fs::create_dir_all(&gt).unwrap();
    for n in 0..NZ {
        let mut m = vec![0u8; NX * NY];
        if n == 0 {
            for &[i, j, _] in &marker {
                m[j * NX + i] = 255;
            }
        }
        write_png(
            &gt.join(format!("liver_GT_{n:03}.png")),
            NX,
            NY,
            png::ColorType::Grayscale,
            &m,
        );
    }
    let found = realct::discover(tmp.path()).unwrap();
    assert_eq!(found, vec![CaseSource::Chaos(case.clone())]);
    let c = found[0]
        .load(&Config::default().ingest, &PngSliceOptions::default())
        .unwrap();
    assert_eq!(c.kind, CaseKind::Volume);
    assert_eq!(c.organs, vec![TruthOrgan::Label(organs::LIVER)]);
    assert!(c.ct.geom.same_grid(&ct.geom, 1e-3));
    check_marker(&c.truth, &c.ct, &marker, organs::LIVER);
}

#[test]
fn ircadb_layout_reads_masks_from_the_zip() {
    let tmp = tempfile::tempdir().unwrap();
    let case = tmp.path().join("ircadb-x");
    let (ct, marker) = marked_ct();
    write_ct(&ct, &case.join("PATIENT_DICOM"), "2.25.222");
    // Masks: stored 0 / 255 (HU -1024 / -769 with the writer's intercept).
    let mut mask = Volume::filled(ct.geom.clone(), -1024f32);
    for &[i, j, k] in &marker {
        mask.set(i, j, k, -769.0);
    }
    let mdir = tmp.path().join("masks_tmp");
    let mfiles = write_ct(&mask, &mdir, "2.25.223");
    let zf = std::fs::File::create(case.join("MASKS_DICOM_liver.zip")).unwrap();
    let mut z = zip::ZipWriter::new(zf);
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for f in &mfiles {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        z.start_file(format!("MASKS_DICOM/liver/{name}"), o)
            .unwrap();
        z.write_all(&std::fs::read(f).unwrap()).unwrap();
    }
    z.finish().unwrap();
    std::fs::remove_dir_all(&mdir).unwrap();
    let found = realct::discover(&case).unwrap();
    assert_eq!(found, vec![CaseSource::Ircadb(case.clone())]);
    let c = found[0]
        .load(&Config::default().ingest, &PngSliceOptions::default())
        .unwrap();
    check_marker(&c.truth, &c.ct, &marker, organs::LIVER);
}

#[test]
fn generic_nifti_label_map_with_mapping() {
    let tmp = tempfile::tempdir().unwrap();
    let (ct, marker) = marked_ct();
    let ctp = tmp.path().join("ct.nii.gz");
    nifti::write_nifti(&ct, &ctp, "test ct").unwrap();
    let mut lab = Volume::filled(ct.geom.clone(), 0u8);
    for &[i, j, k] in &marker {
        lab.set(i, j, k, 9);
    }
    // A value the mapping leaves out is background.
    lab.set(0, 0, 0, 4);
    let lp = tmp.path().join("labels.nii.gz");
    nifti::write_nifti(&lab, &lp, "test labels").unwrap();
    let src = CaseSource::Generic {
        ct: ctp,
        truth: GenericTruth::LabelMap {
            path: lp,
            map: realct::parse_label_mapping("9=kidney,7=liver").unwrap(),
        },
    };
    let c = src
        .load(&Config::default().ingest, &PngSliceOptions::default())
        .unwrap();
    assert_eq!(
        c.organs,
        vec![TruthOrgan::KidneyUnsplit, TruthOrgan::Label(organs::LIVER)]
    );
    check_marker(&c.truth, &c.ct, &marker, realct::KIDNEY_UNSPLIT);
    // The prediction's left kidney on the marker scores Dice 1 as "kidney".
    let mut pred = Volume::filled(c.truth.geom.clone(), 0u8);
    for &[i, j, k] in &marker {
        pred.set(i, j, k, organs::KIDNEY_LEFT);
    }
    let s = realct::score(&pred, &c).unwrap();
    assert_eq!(s[0].0, "kidney");
    assert_eq!(s[0].1.dice, Some(1.0));
    assert_eq!(s[0].1.hd95_mm, Some(0.0));
}

#[test]
fn png_slice_layout_discovered_with_the_mask_of_the_same_name() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    std::fs::create_dir_all(tmp.path().join("masks")).unwrap();
    for name in ["p1_10.png", "p1_20.png"] {
        write_png(
            &tmp.path().join("images").join(name),
            4,
            4,
            png::ColorType::Grayscale,
            &[77u8; 16],
        );
        let mut rgb = vec![0u8; 48];
        rgb[0..3].copy_from_slice(&[255, 0, 255]);
        write_png(
            &tmp.path().join("masks").join(name),
            4,
            4,
            png::ColorType::Rgb,
            &rgb,
        );
    }
    // An image without a mask is not a case.
    write_png(
        &tmp.path().join("images/p2_1.png"),
        4,
        4,
        png::ColorType::Grayscale,
        &[0u8; 16],
    );
    let found = realct::discover(tmp.path()).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].name(), "png:p1_10");
    let o = PngSliceOptions {
        hu_at_grey0: -100.0,
        hu_at_grey255: 155.0,
        hu_at_black: None,
        pixel_mm: 0.5,
        slice_mm: 2.0,
    };
    let c = found[0].load(&Config::default().ingest, &o).unwrap();
    assert_eq!(c.kind, CaseKind::Slice);
    assert_eq!(c.ct.geom.spacing, [0.5, 0.5, 2.0]);
    assert_eq!(c.ct.get(2, 2, 1), -23.0);
    assert_eq!(c.truth.get(0, 0, 1), organs::LIVER);
    assert!(realct::discover(&tmp.path().join("images")).is_err());
}

/// Grey 0 is "clipped below the window": by default it reads as -1000 HU
/// (fat and air), not as the window's floor, which would make the body's
/// fat and the air around it look like water to the network.
#[test]
fn png_slice_clipped_black_reads_as_air_by_default_and_linear_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    std::fs::create_dir_all(tmp.path().join("masks")).unwrap();
    let mut grey = vec![0u8; 16];
    grey[5] = 10;
    write_png(
        &tmp.path().join("images/p_1.png"),
        4,
        4,
        png::ColorType::Grayscale,
        &grey,
    );
    write_png(
        &tmp.path().join("masks/p_1.png"),
        4,
        4,
        png::ColorType::Rgb,
        &[0u8; 48],
    );
    let found = realct::discover(tmp.path()).unwrap();
    let ingest = Config::default().ingest;
    let d = PngSliceOptions::default();
    let c = found[0].load(&ingest, &d).unwrap();
    assert_eq!(c.ct.get(0, 0, 1), -1000.0);
    // Grey 10 at 1 HU per level above -10 HU: 0 HU.
    assert_eq!(c.ct.get(1, 1, 1), 0.0);
    let linear = PngSliceOptions {
        hu_at_black: None,
        ..d
    };
    let c = found[0].load(&ingest, &linear).unwrap();
    assert_eq!(c.ct.get(0, 0, 1), -10.0);
    assert_eq!(c.ct.get(1, 1, 1), 0.0);
}

/// The labelled real cases kept beside the project (see its data README).
fn real_root() -> Option<PathBuf> {
    data::real_ct()
}

/// (liver mL, median HU of the liver mask).
fn liver_stats(c: &realct::RealCase) -> (f64, f32) {
    let mut hu: Vec<f32> = c
        .truth
        .data
        .iter()
        .zip(&c.ct.data)
        .filter(|(&l, _)| l == organs::LIVER)
        .map(|(_, &h)| h)
        .collect();
    hu.sort_by(f32::total_cmp);
    let ml = hu.len() as f64 * c.truth.geom.voxel_volume_ml();
    (ml, hu.get(hu.len() / 2).copied().unwrap_or(f32::NAN))
}

/// Mean patient x of the liver mask minus the volume's centre x: negative on
/// the patient's right (LPS).
fn liver_side_mm(c: &realct::RealCase) -> f64 {
    let g = &c.truth.geom;
    let (mut s, mut n) = (0.0, 0usize);
    for k in 0..g.dims[2] {
        for j in 0..g.dims[1] {
            for i in 0..g.dims[0] {
                if c.truth.get(i, j, k) == organs::LIVER {
                    s += g.index_to_patient([i as f64, j as f64, k as f64])[0];
                    n += 1;
                }
            }
        }
    }
    let mid = g.index_to_patient([
        (g.dims[0] - 1) as f64 / 2.0,
        (g.dims[1] - 1) as f64 / 2.0,
        0.0,
    ])[0];
    s / n.max(1) as f64 - mid
}

#[test]
fn real_cases_have_plausible_truth() {
    let Some(root) = real_root() else { return };
    let ingest = Config::default().ingest;
    let png = PngSliceOptions::default();
    let found = realct::discover(&root).unwrap();
    let mut seen = (0, 0, 0);
    for src in &found {
        let c = src.load(&ingest, &png).unwrap();
        match src {
            CaseSource::Chaos(_) | CaseSource::Ircadb(_) => {
                let (ml, med) = liver_stats(&c);
                let side = liver_side_mm(&c);
                println!(
                    "{}: liver {ml:.0} mL, median {med:.0} HU, {side:.0} mm from the centre in x",
                    c.name
                );
                assert!((1000.0..=2500.0).contains(&ml), "{}: liver {ml} mL", c.name);
                assert!((40.0..=200.0).contains(&med), "{}: median {med} HU", c.name);
                assert!(side < -20.0, "{}: liver not on the patient's right", c.name);
                if matches!(src, CaseSource::Chaos(_)) {
                    seen.0 += 1;
                } else {
                    seen.1 += 1;
                }
            }
            CaseSource::PngSlice { .. } => {
                let kinds: Vec<u8> = c.truth.data.iter().copied().filter(|&v| v != 0).collect();
                assert!(!kinds.is_empty(), "{}: empty mask", c.name);
                seen.2 += 1;
            }
            CaseSource::Generic { .. } => {}
        }
    }
    println!("chaos {}, ircadb {}, png slices {}", seen.0, seen.1, seen.2);
    assert_eq!((seen.0, seen.1), (1, 1));
    assert_eq!(seen.2, 36);
}

#[test]
fn overlay_png_size_and_outline_colour() {
    // 40 x 30 voxels of 1 mm, 10 slices of 4 mm: views (axial 40x30,
    // coronal 40x40, sagittal 30x40 pixels at 1 mm with panel_px 40).
    let g = Geometry::new([40, 30, 10], [1.0, 1.0, 4.0], [0.0, 0.0, 0.0]);
    let ct = Volume::filled(g.clone(), 40f32);
    let mut lab = Volume::filled(g, 0u8);
    for k in 3..7 {
        for j in 10..20 {
            for i in 14..20 {
                lab.set(i, j, k, organs::KIDNEY_RIGHT);
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("qc.png");
    let o = OverlayOptions {
        panel_px: 40,
        ..Default::default()
    };
    overlay::write_overlay(&out, &ct, &lab, &o).unwrap();
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let mut rd = dec.read_info().unwrap();
    let mut buf = vec![0u8; rd.output_buffer_size().unwrap()];
    let info = rd.next_frame(&mut buf).unwrap();
    // Width: gap 8 + (40 + 8) + (40 + 8) + (30 + 8); height: header 22 +
    // 40 + footer 44.
    assert_eq!((info.width, info.height), (142, 106));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = |x: usize, y: usize| {
        let o = y * info.line_size + x * 3;
        [buf[o], buf[o + 1], buf[o + 2]]
    };
    // Axial row of j = 15: the right kidney's edge columns i = 14 and 19
    // (x 14 and 19 mm of 40, the image's left half: radiological), in its
    // colour; its inside is grey.
    let c = overlay::organ_colour(organs::KIDNEY_RIGHT);
    assert_eq!(px(8 + 14, 22 + 15), c);
    assert_eq!(px(8 + 19, 22 + 15), c);
    let inside = px(8 + 17, 22 + 15);
    assert_eq!(inside[0], inside[1]);
    assert_ne!(inside, c);
    // Coronal view (second panel, top = superior): slices 3..7 of 4 mm are
    // nearest to z 10..26 mm; row v samples z = 38 - (v + 0.5), so row 12
    // (z 25.5) is the top edge and row 20 (z 17.5) inside.
    let x0 = 8 + 40 + 8;
    assert_eq!(px(x0 + 17, 22 + 12), c);
    assert_ne!(px(x0 + 17, 22 + 20), c);
}

/// The fixture model of tests/data/seg (random weights: only the command's
/// plumbing is checked, not the numbers).
fn fixture_model(dir: &Path) -> PathBuf {
    use std::io::Read;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seg");
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(data.join("model.toml"), m.join("model.toml")).unwrap();
    let mut v = Vec::new();
    let f = std::fs::File::open(data.join("weights.safetensors.gz")).unwrap();
    flate2::read::GzDecoder::new(f).read_to_end(&mut v).unwrap();
    std::fs::write(m.join("weights.safetensors"), v).unwrap();
    m
}

#[test]
fn eval_real_and_segment_overlay_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model(tmp.path());
    let real = tmp.path().join("slices");
    std::fs::create_dir_all(real.join("images")).unwrap();
    std::fs::create_dir_all(real.join("masks")).unwrap();
    let (w, h) = (64usize, 64usize);
    let mut rgb = vec![0u8; w * h * 3];
    for y in 20..40 {
        for x in 10..30 {
            rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[255, 0, 255]);
        }
    }
    write_png(
        &real.join("images/a_1.png"),
        w,
        h,
        png::ColorType::Grayscale,
        &vec![90u8; w * h],
    );
    write_png(&real.join("masks/a_1.png"), w, h, png::ColorType::Rgb, &rgb);
    let bin = env!("CARGO_BIN_EXE_organdose");
    let json = tmp.path().join("real.json");
    let out = std::process::Command::new(bin)
        .args(["eval", "--planes", "all", "--png-hu-lo", "-20", "--real"])
        .arg(&real)
        .arg("--weights")
        .arg(&model)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("grey 0 = -20 HU"), "{stdout}");
    assert!(
        stdout.contains("png:a_1") && stdout.contains("liver"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let c = &v["cases"][0];
    assert_eq!(c["kind"], "slice");
    // PNG slices always run axial, whatever --planes says.
    assert_eq!(c["planes"], "axial");
    // 20 x 20 pixels of 0.8 mm = 2.56 cm².
    let t = c["organs"]["liver"]["truth_ml"].as_f64().unwrap();
    assert!((t - 2.56).abs() < 1e-6, "{t}");
    assert_eq!(v["png_slices"]["hu_at_grey0"], -20.0);

    // segment --overlay on a small NIfTI CT.
    let (ct, _) = marked_ct();
    let ctp = tmp.path().join("ct.nii.gz");
    nifti::write_nifti(&ct, &ctp, "test ct").unwrap();
    let qc = tmp.path().join("qc.png");
    let out = std::process::Command::new(bin)
        .args(["segment", "--planes", "axial"])
        .arg(&ctp)
        .arg("-o")
        .arg(tmp.path().join("labels.nii.gz"))
        .arg("--weights")
        .arg(&model)
        .arg("--overlay")
        .arg(&qc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&qc).unwrap()));
    let info = dec.read_info().unwrap().info().clone();
    assert!(
        info.width > 100 && info.height > 60,
        "{}x{}",
        info.width,
        info.height
    );
}
