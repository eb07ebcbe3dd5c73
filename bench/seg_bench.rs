//! Segmentation network bench: time per slice and peak memory of one model
//! folder (as written by bench/torchvision_bench.py), on this machine's threads.
//!
//! cargo run --release --example seg_bench -- MODEL_DIR [BATCH] [REPS] [INPUT.f32]
//! INPUT.f32: the batch (BATCH x 3 x size x size, little-endian f32) that
//! bench/torchvision_bench.py timed, so both sides see the same slices.
//! Prints ms/slice (fastest repetition, and the median), detections per slice, the extrapolated time for a
//! 512 x 512 x 200 CT (axial: 200 slices; three planes: 200 + 512 + 512) and
//! peak RSS (VmHWM).

use candle_core::Device;
use organdose::seg::MaskRcnn;
use std::path::PathBuf;
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        a.get(1)
            .ok_or_else(|| anyhow::anyhow!("usage: seg_bench MODEL_DIR [BATCH] [REPS]"))?,
    );
    let batch: usize = a.get(2).map_or(Ok(4), |s| s.parse())?;
    let reps: usize = a.get(3).map_or(Ok(2), |s| s.parse())?;
    let model = MaskRcnn::load_dir(&dir, &Device::Cpu)?;
    let s = model.cfg.input.size;
    // A fixed pseudo-random input (xorshift) so runs are comparable.
    let mut st = 0x2545F4914F6CDD1Du64;
    let x: Vec<f32> = match a.get(4) {
        Some(p) => {
            let bytes = std::fs::read(p)?;
            if bytes.len() != batch * 3 * s * s * 4 {
                anyhow::bail!(
                    "{p}: {} bytes, expected {batch} x 3 x {s} x {s} f32",
                    bytes.len()
                );
            }
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }
        None => (0..batch * 3 * s * s)
            .map(|_| {
                st ^= st << 13;
                st ^= st >> 7;
                st ^= st << 17;
                (st >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect(),
    };
    model.forward(&x, [batch, 3, s, s], false)?; // warm-up
    let mut ndet = 0;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        let f = model.forward(&x, [batch, 3, s, s], false)?;
        times.push(t0.elapsed().as_secs_f64() / batch as f64);
        ndet = f.detections.iter().map(|d| d.boxes.len()).sum::<usize>();
    }
    times.sort_by(f64::total_cmp);
    // The fastest repetition: the machine is shared, slower ones saw other load.
    let per = times[0];
    println!(
        "organdose {}: {:.0} ms/slice (min of {}; median {:.0}), {:.1} det/slice, volume 512x512x200: axial {:.0} s, 3 planes {:.0} s, peak RSS {:.0} MB",
        dir.display(),
        per * 1e3,
        times.len(),
        times[times.len() / 2] * 1e3,
        ndet as f64 / batch as f64,
        per * 200.0,
        per * 1224.0,
        peak_rss_mb()
    );
    Ok(())
}
