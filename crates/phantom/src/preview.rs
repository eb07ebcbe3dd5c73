//! Preview montage: axial and coronal diagnostic CT (window [-160, 240] HU) and
//! axial and coronal LDCT fused with SPECT (hot colour map), organ outlines in
//! colour. Radiological display: image left = patient right.

use super::png;
use crate::error::{Error, Result};
use crate::io::write_bytes_atomically;
use crate::organs;
use crate::volume::{Vec3, Volume};
use std::path::Path;

const PANEL: usize = 400;

fn organ_colour(l: u8) -> [u8; 3] {
    match l {
        organs::LIVER => [255, 150, 0],
        organs::KIDNEY_LEFT => [0, 230, 60],
        organs::KIDNEY_RIGHT => [0, 200, 255],
        organs::SPLEEN => [230, 0, 230],
        organs::TUMOUR => [255, 40, 40],
        _ => [255, 255, 0],
    }
}

/// A display plane: pixel (u, v) sits at `origin + u*du + v*dv` (patient mm).
struct Plane {
    origin: Vec3,
    du: Vec3,
    dv: Vec3,
}

fn at(p: &Plane, u: usize, v: usize) -> Vec3 {
    let (u, v) = (u as f64, v as f64);
    [
        p.origin[0] + u * p.du[0] + v * p.dv[0],
        p.origin[1] + u * p.du[1] + v * p.dv[1],
        p.origin[2] + u * p.du[2] + v * p.dv[2],
    ]
}

fn nearest<T: Copy>(vol: &Volume<T>, w: Vec3) -> Option<T> {
    let c = vol.geom.patient_to_index(w);
    let mut idx = [0usize; 3];
    for a in 0..3 {
        let r = c[a].round();
        if r < 0.0 || r >= vol.geom.dims[a] as f64 {
            return None;
        }
        idx[a] = r as usize;
    }
    Some(vol.get(idx[0], idx[1], idx[2]))
}

/// Axial plane through patient z = `z`, and coronal through y = `y`, covering
/// the in-plane (and z) extent of `g`.
fn planes(g: &crate::Geometry, z: f64, y: f64) -> (Plane, Plane) {
    let lo = g.index_to_patient([0.0, 0.0, 0.0]);
    let hi = g.index_to_patient([
        (g.dims[0] - 1) as f64,
        (g.dims[1] - 1) as f64,
        (g.dims[2] - 1) as f64,
    ]);
    let wx = hi[0] - lo[0];
    let wy = hi[1] - lo[1];
    let wz = hi[2] - lo[2];
    let s_ax = wx.max(wy) / PANEL as f64;
    let ax = Plane {
        origin: [lo[0], lo[1], z],
        du: [s_ax, 0.0, 0.0],
        dv: [0.0, s_ax, 0.0],
    };
    let s_co = wx.max(wz) / PANEL as f64;
    let co = Plane {
        origin: [lo[0], y, hi[2]],
        du: [s_co, 0.0, 0.0],
        dv: [0.0, 0.0, -s_co],
    };
    (ax, co)
}

fn render(
    plane: &Plane,
    ct: &Volume<f32>,
    labels: &Volume<u8>,
    spect: Option<(&Volume<f32>, f32)>,
) -> Vec<[u8; 3]> {
    let mut lab = vec![0u8; PANEL * PANEL];
    let mut img = vec![[0u8; 3]; PANEL * PANEL];
    for v in 0..PANEL {
        for u in 0..PANEL {
            let w = at(plane, u, v);
            let hu = nearest(ct, w).unwrap_or(-1024.0);
            let g = (((hu + 160.0) / 400.0).clamp(0.0, 1.0) * 255.0) as f32;
            let mut px = [g, g, g];
            if let Some((s, vmax)) = spect {
                if let Some(c) = s.sample_linear(s.geom.patient_to_index(w), s.geom.dims) {
                    let t = (c / vmax).clamp(0.0, 1.0);
                    let hot = [
                        (3.0 * t).min(1.0),
                        (3.0 * t - 1.0).clamp(0.0, 1.0),
                        (3.0 * t - 2.0).clamp(0.0, 1.0),
                    ];
                    let a = (t * 1.5).min(0.85);
                    for ch in 0..3 {
                        px[ch] = px[ch] * (1.0 - a) + 255.0 * hot[ch] * a;
                    }
                }
            }
            img[v * PANEL + u] = [px[0] as u8, px[1] as u8, px[2] as u8];
            lab[v * PANEL + u] = nearest(labels, w).unwrap_or(0);
        }
    }
    for v in 1..PANEL - 1 {
        for u in 1..PANEL - 1 {
            let l = lab[v * PANEL + u];
            if l == 0 {
                continue;
            }
            let edge = [
                lab[v * PANEL + u - 1],
                lab[v * PANEL + u + 1],
                lab[(v - 1) * PANEL + u],
                lab[(v + 1) * PANEL + u],
            ]
            .iter()
            .any(|&n| n != l);
            if edge {
                img[v * PANEL + u] = organ_colour(l);
            }
        }
    }
    img
}

/// Patient z and y through the kidneys (or the organ centroid) on a label map.
fn kidney_centre(labels: &Volume<u8>) -> Vec3 {
    let mut sum = [0.0; 3];
    let mut n = 0usize;
    let mut any = [0.0; 3];
    let mut na = 0usize;
    let [nx, ny, nz] = labels.geom.dims;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let l = labels.get(i, j, k);
                if l == 0 {
                    continue;
                }
                let p = [i as f64, j as f64, k as f64];
                if l == organs::KIDNEY_LEFT || l == organs::KIDNEY_RIGHT {
                    (0..3).for_each(|a| sum[a] += p[a]);
                    n += 1;
                }
                (0..3).for_each(|a| any[a] += p[a]);
                na += 1;
            }
        }
    }
    let c = if n > 0 {
        sum.map(|s| s / n as f64)
    } else if na > 0 {
        any.map(|s| s / na as f64)
    } else {
        [nx as f64 / 2.0, ny as f64 / 2.0, nz as f64 / 2.0]
    };
    labels.geom.index_to_patient(c)
}

/// Writes the 2x2 montage: top diagnostic CT (axial, coronal), bottom LDCT + SPECT.
pub(crate) fn write_preview(
    path: &Path,
    ct: &Volume<f32>,
    ct_labels: &Volume<u8>,
    ldct: &Volume<f32>,
    spect: &Volume<f32>,
    spect_labels: &Volume<u8>,
) -> Result<()> {
    let c = kidney_centre(ct_labels);
    let (ax, co) = planes(&ct.geom, c[2], c[1]);
    let a = render(&ax, ct, ct_labels, None);
    let b = render(&co, ct, ct_labels, None);
    let mut sorted: Vec<f32> = spect.data.iter().cloned().filter(|v| *v > 0.0).collect();
    sorted.sort_by(|x, y| x.total_cmp(y));
    let vmax = sorted
        .get(((sorted.len() as f64) * 0.999) as usize)
        .copied()
        .unwrap_or(1.0)
        .max(1e-6);
    let cs = kidney_centre(spect_labels);
    let (ax2, co2) = planes(&ldct.geom, cs[2], cs[1]);
    let cc = render(&ax2, ldct, spect_labels, Some((spect, vmax)));
    let d = render(&co2, ldct, spect_labels, Some((spect, vmax)));
    let w = 2 * PANEL;
    let mut rgb = vec![0u8; w * w * 3];
    for (pi, panel) in [a, b, cc, d].iter().enumerate() {
        let (ox, oy) = ((pi % 2) * PANEL, (pi / 2) * PANEL);
        for v in 0..PANEL {
            for u in 0..PANEL {
                let o = ((oy + v) * w + ox + u) * 3;
                rgb[o..o + 3].copy_from_slice(&panel[v * PANEL + u]);
            }
        }
    }
    let bytes = png::encode_rgb(w as u32, w as u32, &rgb).map_err(|e| Error::io(path, e))?;
    write_bytes_atomically(path, &bytes)
}
