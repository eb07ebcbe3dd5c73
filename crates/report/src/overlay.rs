//! Quality-control picture of a segmentation (`organdose segment --overlay`):
//! axial, coronal and sagittal views of the CT at a soft-tissue window with
//! the organ outlines in colour (liver orange, left kidney green, right
//! kidney cyan, spleen magenta, other labels yellow) and a legend.
//!
//! Display conventions: radiological, patient right on the image's LEFT and
//! patient left on the image's right (axial and coronal), anterior at the top
//! of the axial view, superior at the top of coronal and sagittal, anterior
//! on the left of the sagittal view. Every view is sampled in patient space
//! (LPS mm) on square pixels of one common size, so the picture keeps the
//! physical aspect ratio whatever the voxel spacing (a 3 mm-slice coronal
//! view is not squashed) and whatever the stored axis order (feet-first,
//! flipped rows).
//!
//! The views cut through the organs: axial and coronal through the kidneys'
//! centroid (else all organs'), sagittal through the right kidney (else the
//! liver, else the left kidney, else the organs' centroid); the middle of the
//! volume when nothing is labelled.

use crate::error::{Error, FaultKind, Result};
use crate::io::write_bytes_atomically;
use crate::organs;
use crate::volume::{Vec3, Volume};
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use std::path::Path;

// Same font the plots use (Bitstream Vera licence, beside it).
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Gap between views and the margins (pixels).
const GAP: usize = 8;
const HEADER: usize = 22;
const FOOTER: usize = 44;
const BG: [u8; 3] = [24, 24, 24];

#[derive(Debug, Clone, Copy)]
pub struct OverlayOptions {
    /// CT display window (HU): [lower, upper].
    pub window_hu: [f32; 2],
    /// Pixels along the longest physical extent of the three views.
    pub panel_px: usize,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        // Soft tissue: level 40, width 400.
        OverlayOptions {
            window_hu: [-160.0, 240.0],
            panel_px: 420,
        }
    }
}

/// Outline colour of an organ label.
pub fn organ_colour(l: u8) -> [u8; 3] {
    match l {
        organs::LIVER => [255, 150, 0],
        organs::KIDNEY_LEFT => [0, 230, 60],
        organs::KIDNEY_RIGHT => [0, 200, 255],
        organs::SPLEEN => [230, 0, 230],
        _ => [255, 255, 0],
    }
}

/// An RGB picture, rows top to bottom.
#[derive(Debug, Clone)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Rgb {
    fn new(width: usize, height: usize, fill: [u8; 3]) -> Self {
        Rgb {
            width,
            height,
            data: fill.repeat(width * height),
        }
    }
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let o = (y * self.width + x) * 3;
        [self.data[o], self.data[o + 1], self.data[o + 2]]
    }
    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let o = (y * self.width + x) * 3;
            self.data[o..o + 3].copy_from_slice(&c);
        }
    }
    fn blend(&mut self, x: i64, y: i64, c: [u8; 3], a: f32) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let o = (y as usize * self.width + x as usize) * 3;
        for ch in 0..3 {
            let v = self.data[o + ch] as f32 * (1.0 - a) + c[ch] as f32 * a;
            self.data[o + ch] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    pub(crate) fn encode_png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            // fdeflate's fast mode: a study has about fifty QC pictures, and
            // the default (zlib level 6) took most of the report stage.
            enc.set_compression(png::Compression::Fast);
            let mut wr = enc
                .write_header()
                .map_err(|e| Error::library(FaultKind::Internal, "png", e))?;
            wr.write_image_data(&self.data)
                .map_err(|e| Error::library(FaultKind::Internal, "png", e))?;
        }
        Ok(out)
    }
}

/// One view: pixel (u, v) has its centre at `origin + (u+.5)*du + (v+.5)*dv`.
#[derive(Debug, Clone)]
struct View {
    title: String,
    origin: Vec3,
    du: Vec3,
    dv: Vec3,
    w: usize,
    h: usize,
    /// Side letters (left edge, right edge).
    sides: (&'static str, &'static str),
}

fn add(a: Vec3, b: Vec3, s: f64) -> Vec3 {
    [a[0] + s * b[0], a[1] + s * b[1], a[2] + s * b[2]]
}

/// Patient-space box of the volume: outer voxel faces, min and max per axis.
fn bounds(g: &crate::Geometry) -> (Vec3, Vec3) {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for c in 0..8 {
        let idx = [0, 1, 2].map(|a| {
            if c >> a & 1 == 1 {
                g.dims[a] as f64 - 0.5
            } else {
                -0.5
            }
        });
        let p = g.index_to_patient(idx);
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    (lo, hi)
}

/// Patient-space centroids: (kidneys, right kidney, liver, left kidney, all organs).
fn centres(labels: &Volume<u8>) -> [Option<Vec3>; 5] {
    let mut sum = [[0f64; 3]; 5];
    let mut n = [0usize; 5];
    let [nx, ny, nz] = labels.geom.dims;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let l = labels.data[labels.geom.linear(i, j, k)];
                if l == 0 {
                    continue;
                }
                let slots = [
                    l == organs::KIDNEY_LEFT || l == organs::KIDNEY_RIGHT,
                    l == organs::KIDNEY_RIGHT,
                    l == organs::LIVER,
                    l == organs::KIDNEY_LEFT,
                    true,
                ];
                for (s, _) in slots.iter().enumerate().filter(|(_, &b)| b) {
                    sum[s][0] += i as f64;
                    sum[s][1] += j as f64;
                    sum[s][2] += k as f64;
                    n[s] += 1;
                }
            }
        }
    }
    let mut out = [None; 5];
    for s in 0..5 {
        if n[s] > 0 {
            let c = sum[s].map(|v| v / n[s] as f64);
            out[s] = Some(labels.geom.index_to_patient(c));
        }
    }
    out
}

fn views(labels: &Volume<u8>, panel_px: usize) -> Vec<View> {
    let (lo, hi) = bounds(&labels.geom);
    let mid = [0, 1, 2].map(|a| 0.5 * (lo[a] + hi[a]));
    let [kid, rk, liv, lk, all] = centres(labels);
    let ax_co = kid.or(all).unwrap_or(mid);
    let sag = rk.or(liv).or(lk).or(all).unwrap_or(mid);
    views_at(&labels.geom, panel_px, ax_co, sag)
}

/// Axial and coronal views through `ax_co`, sagittal through `sag`, covering the
/// patient-space box of `g`.
fn views_at(g: &crate::Geometry, panel_px: usize, ax_co: Vec3, sag: Vec3) -> Vec<View> {
    let (lo, hi) = bounds(g);
    let ext = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let s = ext.iter().cloned().fold(0.0, f64::max) / panel_px.max(16) as f64;
    let n = |e: f64| ((e / s).round() as usize).max(1);
    vec![
        View {
            title: format!("axial z {:.0} mm", ax_co[2]),
            origin: [lo[0], lo[1], ax_co[2]],
            du: [s, 0.0, 0.0],
            dv: [0.0, s, 0.0],
            w: n(ext[0]),
            h: n(ext[1]),
            sides: ("R", "L"),
        },
        View {
            title: format!("coronal y {:.0} mm", ax_co[1]),
            origin: [lo[0], ax_co[1], hi[2]],
            du: [s, 0.0, 0.0],
            dv: [0.0, 0.0, -s],
            w: n(ext[0]),
            h: n(ext[2]),
            sides: ("R", "L"),
        },
        View {
            title: format!("sagittal x {:.0} mm", sag[0]),
            origin: [sag[0], lo[1], hi[2]],
            du: [0.0, s, 0.0],
            dv: [0.0, 0.0, -s],
            w: n(ext[1]),
            h: n(ext[2]),
            sides: ("A", "P"),
        },
    ]
}

fn nearest_label(vol: &Volume<u8>, p: Vec3) -> u8 {
    let c = vol.geom.patient_to_index(p);
    let mut idx = [0usize; 3];
    for a in 0..3 {
        let r = c[a].round();
        if r < 0.0 || r >= vol.geom.dims[a] as f64 {
            return 0;
        }
        idx[a] = r as usize;
    }
    vol.data[vol.geom.linear(idx[0], idx[1], idx[2])]
}

/// A view's CT grey image and label image.
fn sample(view: &View, ct: &Volume<f32>, labels: &Volume<u8>, win: [f32; 2]) -> (Vec<u8>, Vec<u8>) {
    let (w, h) = (view.w, view.h);
    let mut grey = vec![0u8; w * h];
    let mut lab = vec![0u8; w * h];
    let width = (win[1] - win[0]).max(1e-3);
    for v in 0..h {
        let row = add(view.origin, view.dv, v as f64 + 0.5);
        for u in 0..w {
            let p = add(row, view.du, u as f64 + 0.5);
            // Linear: a coronal view of thick slices looks like the data, not steps.
            let hu = ct
                .sample_linear(ct.geom.patient_to_index(p), ct.geom.dims)
                .unwrap_or(-1024.0);
            grey[v * w + u] = (((hu - win[0]) / width).clamp(0.0, 1.0) * 255.0).round() as u8;
            lab[v * w + u] = nearest_label(labels, p);
        }
    }
    (grey, lab)
}

/// Draws `text` with its top-left corner at (x, y); returns the width drawn.
fn draw_text(
    img: &mut Rgb,
    font: &FontRef<'_>,
    text: &str,
    x: f32,
    y: f32,
    px: f32,
    c: [u8; 3],
) -> f32 {
    let scale = PxScale::from(px);
    let sf = font.as_scaled(scale);
    let mut pen = x;
    let mut prev = None;
    for ch in text.chars() {
        let id = sf.glyph_id(ch);
        if let Some(p) = prev {
            pen += sf.kern(p, id);
        }
        let g = id.with_scale_and_position(scale, ab_glyph::point(pen, y + sf.ascent()));
        pen += sf.h_advance(id);
        prev = Some(id);
        if let Some(og) = font.outline_glyph(g) {
            let b = og.px_bounds();
            og.draw(|gx, gy, cov| {
                img.blend(
                    b.min.x as i64 + gx as i64,
                    b.min.y as i64 + gy as i64,
                    c,
                    cov.clamp(0.0, 1.0),
                );
            });
        }
    }
    pen - x
}

/// Renders the three views side by side with titles and a legend.
pub fn render(ct: &Volume<f32>, labels: &Volume<u8>, o: &OverlayOptions) -> Result<Rgb> {
    if !labels.geom.same_grid(&ct.geom, 1e-2) {
        return Err(Error::geometry(
            "overlay: the label map is not on the CT's grid",
        ));
    }
    let note = format!(
        "CT window {:.0}..{:.0} HU; radiological: patient right on image left; square mm pixels",
        o.window_hu[0], o.window_hu[1]
    );
    render_views(
        ct,
        labels,
        &views(labels, o.panel_px),
        o.window_hu,
        Palette::Grey,
        &note,
    )
}

/// How image values are shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Palette {
    /// CT: grey.
    Grey,
    /// SPECT: black-red-yellow-white ("hot iron"), so outlines stay visible.
    Hot,
}

fn colour(p: Palette, g: u8) -> [u8; 3] {
    match p {
        Palette::Grey => [g, g, g],
        Palette::Hot => {
            let t = g as f32 / 255.0;
            let c = |a: f32| (a.clamp(0.0, 1.0) * 255.0).round() as u8;
            [c(t * 2.5), c(t * 2.5 - 1.0), c(t * 3.0 - 2.0)]
        }
    }
}

/// The three views of `image` through `centre` (any grid: masks and image are
/// both sampled in patient space), outlines of `labels`, a legend and `note`.
pub(crate) fn render_through(
    image: &Volume<f32>,
    labels: &Volume<u8>,
    centre: Vec3,
    window: [f32; 2],
    palette: Palette,
    panel_px: usize,
    note: &str,
) -> Result<Rgb> {
    let vs = views_at(&image.geom, panel_px, centre, centre);
    render_views(image, labels, &vs, window, palette, note)
}

/// Patient-space centroid of one label, if it is there.
pub(crate) fn label_centre(labels: &Volume<u8>, label: u8) -> Option<Vec3> {
    let [nx, ny, nz] = labels.geom.dims;
    let (mut sum, mut n) = ([0f64; 3], 0usize);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if labels.data[labels.geom.linear(i, j, k)] == label {
                    sum[0] += i as f64;
                    sum[1] += j as f64;
                    sum[2] += k as f64;
                    n += 1;
                }
            }
        }
    }
    (n > 0).then(|| labels.geom.index_to_patient(sum.map(|v| v / n as f64)))
}

fn render_views(
    ct: &Volume<f32>,
    labels: &Volume<u8>,
    vs: &[View],
    window: [f32; 2],
    palette: Palette,
    note: &str,
) -> Result<Rgb> {
    let font = FontRef::try_from_slice(FONT_BYTES)
        .map_err(|e| Error::library(FaultKind::Internal, "overlay font", e))?;
    let width = GAP + vs.iter().map(|v| v.w + GAP).sum::<usize>();
    let body_h = vs.iter().map(|v| v.h).max().unwrap_or(1);
    let height = HEADER + body_h + FOOTER;
    let mut img = Rgb::new(width, height, BG);
    let mut x0 = GAP;
    for view in vs {
        let (grey, lab) = sample(view, ct, labels, window);
        let (w, h) = (view.w, view.h);
        for v in 0..h {
            for u in 0..w {
                let g = grey[v * w + u];
                img.put(x0 + u, HEADER + v, colour(palette, g));
            }
        }
        // Outline: an organ pixel with a 4-neighbour of another label, drawn
        // with the outside neighbour too so the line is 2 px and visible.
        for v in 0..h {
            for u in 0..w {
                let l = lab[v * w + u];
                if l == 0 {
                    continue;
                }
                let nb = [
                    (u.wrapping_sub(1), v),
                    (u + 1, v),
                    (u, v.wrapping_sub(1)),
                    (u, v + 1),
                ];
                let mut edge = false;
                for &(nu, nv) in &nb {
                    if nu >= w || nv >= h {
                        edge = true;
                    } else if lab[nv * w + nu] != l {
                        edge = true;
                        if lab[nv * w + nu] == 0 {
                            img.put(x0 + nu, HEADER + nv, organ_colour(l));
                        }
                    }
                }
                if edge {
                    img.put(x0 + u, HEADER + v, organ_colour(l));
                }
            }
        }
        let white = [235, 235, 235];
        draw_text(&mut img, &font, &view.title, x0 as f32, 3.0, 15.0, white);
        let yl = (HEADER + h / 2) as f32 - 7.0;
        draw_text(
            &mut img,
            &font,
            view.sides.0,
            (x0 + 3) as f32,
            yl,
            15.0,
            [255, 255, 120],
        );
        draw_text(
            &mut img,
            &font,
            view.sides.1,
            (x0 + w) as f32 - 13.0,
            yl,
            15.0,
            [255, 255, 120],
        );
        x0 += w + GAP;
    }
    // Legend.
    let y = (HEADER + body_h + 6) as f32;
    let mut x = GAP as f32;
    for (l, name) in [
        (organs::LIVER, "liver"),
        (organs::KIDNEY_LEFT, "kidney left"),
        (organs::KIDNEY_RIGHT, "kidney right"),
        (organs::SPLEEN, "spleen"),
        (organs::TUMOUR, "tumour"),
    ] {
        let c = organ_colour(l);
        for dy in 0..12 {
            for dx in 0..12 {
                img.put(x as usize + dx, y as usize + 2 + dy, c);
            }
        }
        x += 16.0;
        x += draw_text(&mut img, &font, name, x, y, 14.0, [235, 235, 235]) + 14.0;
    }
    draw_text(
        &mut img,
        &font,
        note,
        GAP as f32,
        y + 18.0,
        13.0,
        [190, 190, 190],
    );
    Ok(img)
}

/// Renders and writes the picture (temporary name, then rename).
pub fn write_overlay(
    path: &Path,
    ct: &Volume<f32>,
    labels: &Volume<u8>,
    o: &OverlayOptions,
) -> Result<()> {
    let img = render(ct, labels, o)?;
    write_bytes_atomically(path, &img.encode_png()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    #[test]
    fn aspect_and_sides() {
        // 40 x 30 voxels of 1 mm, 10 slices of 4 mm: coronal is 40 x 40 mm.
        let g = Geometry::new([40, 30, 10], [1.0, 1.0, 4.0], [0.0, 0.0, 0.0]);
        let ct = Volume::filled(g.clone(), 40f32);
        let mut lab = Volume::filled(g, 0u8);
        // Left kidney at high x (patient left).
        for k in 3..7 {
            for j in 10..20 {
                for i in 22..28 {
                    lab.set(i, j, k, organs::KIDNEY_LEFT);
                }
            }
        }
        let o = OverlayOptions {
            panel_px: 40,
            ..Default::default()
        };
        let vs = views(&lab, o.panel_px);
        assert_eq!((vs[0].w, vs[0].h), (40, 30));
        assert_eq!((vs[1].w, vs[1].h), (40, 40));
        assert_eq!((vs[2].w, vs[2].h), (30, 40));
        let img = render(&ct, &lab, &o).expect("render");
        // Axial: the kidney's edge at x = 22 mm (column 22) is on the
        // image's right half, in the kidney colour; its inside is grey.
        let row = HEADER + 15;
        assert_eq!(img.pixel(GAP + 22, row), organ_colour(organs::KIDNEY_LEFT));
        assert_ne!(img.pixel(GAP + 25, row), organ_colour(organs::KIDNEY_LEFT));
        assert_ne!(img.pixel(GAP + 5, row), organ_colour(organs::KIDNEY_LEFT));
    }
}
