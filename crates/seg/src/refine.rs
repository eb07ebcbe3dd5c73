//! The finer kidney stage (issue 35, item 1): each kidney mask of the Mask
//! R-CNN redrawn at a finer pixel, one axial slice at a time.
//!
//! The Mask R-CNN sees the CT at 1.6 mm and draws a 28 x 28 mask per organ:
//! the kidney's poles and hilum come out coarse. Around each kidney the CT is
//! resampled to `pixel_mm` (0.8 mm) on a square crop; a small U-Net
//! (train/kidney_refine.py) takes the slice, its neighbours `neighbor_mm`
//! above and below, and the coarse mask, and gives the kidney's probability
//! per crop pixel, which is sampled back onto the CT's voxels. The crop's
//! geometry here and in the training script must stay the same.

use super::backbone::{ce, Conv, Weights};
use super::config::RefineConfig;
use super::consensus::components;
use super::fusion::label_bbox;
use crate::error::{Error, Result};
use crate::volume::Volume;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::path::Path;

/// Slices per forward pass: bounds the activations (a 256 px crop's first
/// level is 4 x 16 x 256 x 256 floats, 17 MB; the bench study's peak RSS was
/// 851 MB with 8).
const BATCH: usize = 4;

pub struct KidneyRefiner {
    pub cfg: RefineConfig,
    /// Two convolutions (BN folded, ReLU) per level, down and up.
    enc: Vec<[Conv; 2]>,
    dec: Vec<[Conv; 2]>,
    head: Conv,
    device: Device,
}

/// What the stage did to one kidney.
#[derive(Debug, Clone, PartialEq)]
pub struct Redraw {
    pub label: u8,
    /// Slices redrawn, volume before and after (for the log).
    pub line: String,
    /// Why the redraw was not taken and the network's kidney kept (its
    /// volume too far from the network's); None: taken.
    pub kept: Option<String>,
}

/// Where one kidney's crop lies: its centre in voxel coordinates (i, j), its
/// side in pixels and the slices `[k0, k1)` it redraws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    pub centre: [f64; 2],
    pub size: usize,
    pub slices: (usize, usize),
}

impl KidneyRefiner {
    /// The stage named by `cfg`, its weights in `dir` (checked against the
    /// model folder's manifest by the caller).
    pub fn load(dir: &Path, cfg: RefineConfig, device: &Device) -> Result<Self> {
        let ws = Weights::load(&dir.join(&cfg.weights), device)?;
        Self::new(cfg, &ws, device)
    }

    pub fn new(cfg: RefineConfig, ws: &Weights, device: &Device) -> Result<Self> {
        let pair = |p: &str, want: usize| -> Result<[Conv; 2]> {
            let a = Conv::load_bn(ws, &format!("{p}.0.0"), &format!("{p}.0.1"), 1, 1)?;
            let b = Conv::load_bn(ws, &format!("{p}.1.0"), &format!("{p}.1.1"), 1, 1)?;
            if a.out_channels() != want || b.out_channels() != want {
                return Err(Error::input(format!(
                    "kidney stage: {p} has {} channels, model.toml's widths say {want}",
                    b.out_channels()
                )));
            }
            Ok([a, b])
        };
        let w = &cfg.widths;
        let enc = (0..w.len())
            .map(|l| pair(&format!("enc.{l}"), w[l]))
            .collect::<Result<Vec<_>>>()?;
        let dec = (0..w.len() - 1)
            .map(|n| pair(&format!("dec.{n}"), w[w.len() - 2 - n]))
            .collect::<Result<Vec<_>>>()?;
        let head = Conv::load(ws, "head", 1, 0)?;
        if head.out_channels() != 1 {
            return Err(Error::input("kidney stage: head must give one channel"));
        }
        Ok(KidneyRefiner {
            cfg,
            enc,
            dec,
            head,
            device: device.clone(),
        })
    }

    /// (N, 4, H, W) -> (N, 1, H, W) kidney logits; H and W multiples of
    /// 2^(levels - 1).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut skips: Vec<Tensor> = Vec::with_capacity(self.enc.len());
        let mut x = x.clone();
        for (l, [a, b]) in self.enc.iter().enumerate() {
            if l > 0 {
                x = x.max_pool2d(2)?;
            }
            x = b.forward_relu(&a.forward_relu(&x)?)?;
            skips.push(x.clone());
        }
        for (n, [a, b]) in self.dec.iter().enumerate() {
            let skip = &skips[skips.len() - 2 - n];
            let (_, _, h, w) = skip.dims4()?;
            x = x.upsample_nearest2d(h, w)?;
            x = Tensor::cat(&[&x, skip], 1)?;
            x = b.forward_relu(&a.forward_relu(&x)?)?;
        }
        self.head.forward(&x)
    }

    /// The crop of the kidney labelled `label` in `labels`; None without one.
    pub fn crop(
        &self,
        labels: &[u8],
        dims: [usize; 3],
        spacing: [f64; 3],
        label: u8,
    ) -> Option<Crop> {
        let [lo, hi] = label_bbox(labels, dims, label)?;
        let c = &self.cfg;
        let ext = ((hi[0] - lo[0] + 1) as f64 * spacing[0])
            .max((hi[1] - lo[1] + 1) as f64 * spacing[1])
            + 2.0 * c.margin_mm;
        let m = RefineConfig::CROP_MULTIPLE;
        let size =
            ((ext / c.pixel_mm / m as f64).ceil() as usize * m).clamp(c.min_size, c.max_size);
        let zm = (c.z_margin_mm / spacing[2]).ceil() as usize;
        Some(Crop {
            centre: [(lo[0] + hi[0]) as f64 / 2.0, (lo[1] + hi[1]) as f64 / 2.0],
            size,
            slices: (lo[2].saturating_sub(zm), (hi[2] + zm + 1).min(dims[2])),
        })
    }

    /// The network's input for slice `k` of `crop`: the windowed CT at k and
    /// `neighbor_mm` below and above, and the coarse mask of slice k
    /// (`coarse[i + j * nx]` true for the kidney), each (size x size), rows
    /// along j, columns along i.
    pub fn input(&self, ct: &Volume<f32>, coarse: &[bool], crop: &Crop, k: usize) -> Vec<f32> {
        let dims = ct.geom.dims;
        let sp = ct.geom.spacing;
        let s = crop.size;
        let (ii, jj) = pixel_coords(crop, sp, self.cfg.pixel_mm);
        let plane = dims[0] * dims[1];
        let [lo, hi] = self.cfg.hu_window;
        let d = self.cfg.neighbor_mm / sp[2];
        let mut out = vec![0f32; 4 * s * s];
        for (ch, z) in [k as f64 - d, k as f64, k as f64 + d]
            .into_iter()
            .enumerate()
        {
            let z = z.clamp(0.0, (dims[2] - 1) as f64);
            let k0 = z.floor() as usize;
            let k1 = (k0 + 1).min(dims[2] - 1);
            let f = z - k0 as f64;
            let a = &ct.data[k0 * plane..(k0 + 1) * plane];
            let b = &ct.data[k1 * plane..(k1 + 1) * plane];
            let o = &mut out[ch * s * s..(ch + 1) * s * s];
            for (r, &j) in jj.iter().enumerate() {
                for (col, &i) in ii.iter().enumerate() {
                    let mut hu = bilinear(a, dims, i, j);
                    if f > 0.0 && k1 != k0 {
                        hu = hu * (1.0 - f) + bilinear(b, dims, i, j) * f;
                    }
                    o[r * s + col] = (((hu as f32) - lo) / (hi - lo)).clamp(0.0, 1.0);
                }
            }
        }
        let m: Vec<f32> = coarse[..plane].iter().map(|&b| b as u8 as f32).collect();
        let o = &mut out[3 * s * s..];
        for (r, &j) in jj.iter().enumerate() {
            for (col, &i) in ii.iter().enumerate() {
                o[r * s + col] = bilinear(&m, dims, i, j) as f32;
            }
        }
        out
    }

    /// Redraws every kidney of `labels` (the CT's grid, the network's voxel
    /// order) on `ct`: inside each kidney's crop and slices, a voxel becomes
    /// the kidney where the stage says so and it was background or that
    /// kidney, and stops being it where the stage says not; then the
    /// kidney's part holding most of the network's kidney (a larger part
    /// elsewhere is dropped). Other organs keep their voxels. A redraw
    /// whose volume is not within `min_volume_ratio` to `max_volume_ratio`
    /// times the network's kidney is undone: the network's kidney is kept,
    /// and [`Redraw::kept`] says why.
    pub fn refine(
        &self,
        ct: &Volume<f32>,
        labels: &mut [u8],
        kidneys: &[u8],
    ) -> Result<Vec<Redraw>> {
        let dims = ct.geom.dims;
        if labels.len() != ct.data.len() {
            return Err(Error::internal(
                "kidney stage: labels and CT differ in size",
            ));
        }
        let sp = ct.geom.spacing;
        let voxel_ml = sp[0] * sp[1] * sp[2] / 1000.0;
        let plane = dims[0] * dims[1];
        let mut out = Vec::new();
        for &label in kidneys {
            let Some(crop) = self.crop(labels, dims, sp, label) else {
                continue;
            };
            let before = labels.iter().filter(|&&l| l == label).count();
            let s = crop.size;
            let (k0, k1) = crop.slices;
            // The coarse mask of the crop's slices only (a whole-volume copy
            // would be one byte per CT voxel more at the study's peak).
            let coarse: Vec<bool> = labels[k0 * plane..k1 * plane]
                .iter()
                .map(|&l| l == label)
                .collect();
            let ks: Vec<usize> = (k0..k1).collect();
            for chunk in ks.chunks(BATCH) {
                let parts: Vec<Vec<f32>> = chunk
                    .par_iter()
                    .map(|&k| {
                        self.input(
                            ct,
                            &coarse[(k - k0) * plane..(k - k0 + 1) * plane],
                            &crop,
                            k,
                        )
                    })
                    .collect();
                let x = parts.concat();
                let t = Tensor::from_vec(x, (chunk.len(), 4, s, s), &self.device).map_err(ce)?;
                let p: Vec<f32> = sigmoid_vec(&self.forward(&t).map_err(ce)?)?;
                for (n, &k) in chunk.iter().enumerate() {
                    let prob = &p[n * s * s..(n + 1) * s * s];
                    paste(
                        prob,
                        &crop,
                        sp,
                        self.cfg.pixel_mm,
                        dims,
                        &mut labels[k * plane..(k + 1) * plane],
                        label,
                        self.cfg.threshold,
                    );
                }
            }
            // One kidney per side: the part holding most of the network's
            // kidney (a refinement redraws that kidney; it does not move it
            // to a larger part elsewhere), on a tie the largest.
            let comps = components(labels, dims, label);
            let keep = kidney_part(&comps, |v| {
                (k0 * plane..k1 * plane).contains(&v) && coarse[v - k0 * plane]
            });
            for (i, c) in comps.iter().enumerate() {
                if Some(i) != keep {
                    for &v in c {
                        labels[v] = 0;
                    }
                }
            }
            let after = keep.map_or(0, |i| comps[i].len());
            let mut line = format!(
                "label {label}: redrawn at {} mm on {} slices ({s} px crop), {:.1} -> {:.1} mL",
                self.cfg.pixel_mm,
                k1 - k0,
                before as f64 * voxel_ml,
                after as f64 * voxel_ml
            );
            // The network's kidney lies inside the crop's slices, and the
            // stage changes nothing outside them.
            let region = &mut labels[k0 * plane..k1 * plane];
            let both = region
                .iter()
                .zip(&coarse)
                .filter(|(&l, &c)| c && l == label)
                .count();
            let dice = 2.0 * both as f64 / (before + after).max(1) as f64;
            let ratio = after as f64 / before.max(1) as f64;
            let (lo, hi) = (self.cfg.min_volume_ratio, self.cfg.max_volume_ratio);
            let kept = (!(lo..=hi).contains(&ratio)).then(|| {
                for (l, &c) in region.iter_mut().zip(&coarse) {
                    if c {
                        *l = label;
                    } else if *l == label {
                        *l = 0;
                    }
                }
                format!(
                    "the kidney stage's redraw ({:.1} mL, {ratio:.2} x the network's {:.1} mL, \
                     Dice {dice:.2} with it) was not taken: the network's kidney is kept \
                     (a redraw is taken at {lo} to {hi} x its volume)",
                    after as f64 * voxel_ml,
                    before as f64 * voxel_ml,
                )
            });
            if let Some(k) = &kept {
                line.push_str(&format!("; not taken: {k}"));
            }
            out.push(Redraw { label, line, kept });
        }
        Ok(out)
    }
}

/// Which of the redrawn kidney's parts (`comps`, voxel indices) to keep: the
/// one holding most voxels of the network's kidney (`network`), on a tie the
/// largest, then the first.
fn kidney_part(comps: &[Vec<usize>], network: impl Fn(usize) -> bool) -> Option<usize> {
    comps
        .iter()
        .enumerate()
        .max_by_key(|(i, c)| {
            (
                c.iter().filter(|&&v| network(v)).count(),
                c.len(),
                std::cmp::Reverse(*i),
            )
        })
        .map(|(i, _)| i)
}

fn sigmoid_vec(t: &Tensor) -> Result<Vec<f32>> {
    let v: Vec<f32> = t.flatten_all().map_err(ce)?.to_vec1().map_err(ce)?;
    Ok(v.into_iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect())
}

/// Voxel coordinates of the crop's pixel columns (i) and rows (j).
fn pixel_coords(crop: &Crop, sp: [f64; 3], pixel_mm: f64) -> (Vec<f64>, Vec<f64>) {
    let half = (crop.size as f64 - 1.0) / 2.0;
    let axis = |c: f64, s: f64| -> Vec<f64> {
        (0..crop.size)
            .map(|n| c + (n as f64 - half) * pixel_mm / s)
            .collect()
    };
    (axis(crop.centre[0], sp[0]), axis(crop.centre[1], sp[1]))
}

/// `img` (one slice, i fastest) at (i, j), edges clamped.
fn bilinear<T: Copy + Into<f64>>(img: &[T], dims: [usize; 3], i: f64, j: f64) -> f64 {
    let (ni, nj) = (dims[0], dims[1]);
    let i = i.clamp(0.0, (ni - 1) as f64);
    let j = j.clamp(0.0, (nj - 1) as f64);
    let (i0, j0) = (i.floor() as usize, j.floor() as usize);
    let (i1, j1) = ((i0 + 1).min(ni - 1), (j0 + 1).min(nj - 1));
    let (fi, fj) = (i - i0 as f64, j - j0 as f64);
    let at = |a: usize, b: usize| -> f64 { img[b * ni + a].into() };
    (at(i0, j0) * (1.0 - fi) + at(i1, j0) * fi) * (1.0 - fj)
        + (at(i0, j1) * (1.0 - fi) + at(i1, j1) * fi) * fj
}

/// One slice's crop probabilities back onto the slice's voxels under the crop.
#[allow(clippy::too_many_arguments)]
fn paste(
    prob: &[f32],
    crop: &Crop,
    sp: [f64; 3],
    pixel_mm: f64,
    dims: [usize; 3],
    slice: &mut [u8],
    label: u8,
    thresh: f32,
) {
    let s = crop.size;
    let half = (s as f64 - 1.0) / 2.0;
    let pdims = [s, s, 1];
    // Crop pixel coordinate of voxel index n along an axis.
    let to_px = |n: usize, c: f64, sp: f64| (n as f64 - c) * sp / pixel_mm + half;
    let range = |c: f64, sp: f64, n: usize| -> (usize, usize) {
        let r = half * pixel_mm / sp;
        let a = (c - r).ceil().max(0.0) as usize;
        let b = ((c + r).floor().max(-1.0) + 1.0) as usize;
        (a.min(n), b.min(n))
    };
    let (i0, i1) = range(crop.centre[0], sp[0], dims[0]);
    let (j0, j1) = range(crop.centre[1], sp[1], dims[1]);
    for j in j0..j1 {
        let v = to_px(j, crop.centre[1], sp[1]);
        for i in i0..i1 {
            let u = to_px(i, crop.centre[0], sp[0]);
            let p = bilinear(prob, pdims, u, v) as f32;
            let cell = &mut slice[j * dims[0] + i];
            if p >= thresh {
                if *cell == 0 {
                    *cell = label;
                }
            } else if *cell == label {
                *cell = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_is_exact_on_a_plane_and_clamps_at_the_edges() {
        // f(i, j) = 2 i + 3 j on a 4 x 3 slice: bilinear reproduces it.
        let dims = [4, 3, 1];
        let img: Vec<f32> = (0..12)
            .map(|v| (2 * (v % 4) + 3 * (v / 4)) as f32)
            .collect();
        assert!((bilinear(&img, dims, 1.25, 0.5) - 4.0).abs() < 1e-12);
        assert!((bilinear(&img, dims, -3.0, 5.0) - 6.0).abs() < 1e-12);
    }

    /// A disc of radius 20 mm drawn in crop pixels (0.8 mm) lands on the
    /// slice's voxels (0.9 x 0.7 mm) where the crop's pixel coordinates
    /// (those `input` samples at) say: inside 19 mm of the crop's centre the
    /// voxels become the kidney unless another organ holds them, beyond 21 mm
    /// the kidney's old voxels under the crop are cleared, and voxels
    /// outside the crop keep their labels.
    #[test]
    fn paste_puts_crop_pixels_back_on_the_voxels_they_were_sampled_from() {
        let dims = [120usize, 150, 1];
        let sp = [0.9, 0.7, 2.0];
        let crop = Crop {
            centre: [60.3, 70.6],
            size: 64,
            slices: (0, 1),
        };
        let px = 0.8;
        let (ii, jj) = pixel_coords(&crop, sp, px);
        let mm = |i: f64, j: f64| {
            (((i - crop.centre[0]) * sp[0]).powi(2) + ((j - crop.centre[1]) * sp[1]).powi(2)).sqrt()
        };
        let mut prob = vec![0f32; 64 * 64];
        for (r, &j) in jj.iter().enumerate() {
            for (c, &i) in ii.iter().enumerate() {
                prob[r * 64 + c] = (mm(i, j) < 20.0) as u8 as f32;
            }
        }
        let mut slice = vec![0u8; dims[0] * dims[1]];
        // The old kidney: a band across the whole slice; liver at the centre.
        for j in 60..80 {
            for i in 0..dims[0] {
                slice[j * dims[0] + i] = 2;
            }
        }
        slice[70 * dims[0] + 60] = 1;
        paste(&prob, &crop, sp, px, dims, &mut slice, 2, 0.5);
        let half = 31.5 * px;
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let (l, d) = (slice[j * dims[0] + i], mm(i as f64, j as f64));
                let inside_crop = ((i as f64 - crop.centre[0]) * sp[0]).abs() <= half
                    && ((j as f64 - crop.centre[1]) * sp[1]).abs() <= half;
                if (i, j) == (60, 70) {
                    assert_eq!(l, 1, "another organ's voxel is kept");
                } else if !inside_crop {
                    let old = if (60..80).contains(&j) { 2 } else { 0 };
                    assert_eq!(l, old, "outside the crop ({i}, {j})");
                } else if d < 19.0 {
                    assert_eq!(l, 2, "inside the disc ({i}, {j}) at {d:.1} mm");
                } else if d > 21.0 {
                    assert_eq!(l, 0, "outside the disc ({i}, {j}) at {d:.1} mm");
                }
            }
        }
    }

    #[test]
    fn the_part_kept_is_the_one_on_the_networks_kidney() {
        // A large part away from the network's kidney (voxels 0..100) and a
        // smaller one on it (200..240, the network's kidney 190..230).
        let comps = vec![(0..100).collect::<Vec<_>>(), (200..240).collect()];
        let network = |v: usize| (190..230).contains(&v);
        assert_eq!(kidney_part(&comps, network), Some(1));
        // Nothing on the network's kidney: the largest; none at all: None.
        assert_eq!(kidney_part(&comps, |_| false), Some(0));
        assert_eq!(kidney_part(&[], network), None);
    }
}
