//! PNG plots (tac.png, dvh.png) with plotters' bitmap backend.
//!
//! Text does not depend on the machine's fonts: plotters 0.3.7 is built without its
//! font features and [`TextBackend`] draws every label with `ab_glyph` from DejaVu
//! Sans compiled into the binary (`assets/fonts/DejaVuSans.ttf`, Bitstream Vera
//! licence beside it). Not Go Regular, used before: its slashed zero made every
//! tick label with a 0 look struck through.

use crate::dosimetry::kinetics::Model;
use crate::dosimetry::DoseSummary;
use crate::error::{Error, FaultKind, Result};
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::backend::BitMapBackend;
use plotters::prelude::*;
use plotters_backend::{
    text_anchor::{HPos, VPos},
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

static FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

const W: u32 = 900;
const H: u32 = 600;

/// BitMapBackend with text drawn by ab_glyph from the embedded font.
struct TextBackend<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

type BErr<'a> = DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;

impl<'a> TextBackend<'a> {
    fn layout(&self, text: &str, size: f64) -> (f32, f32, f32) {
        let sf = self.font.as_scaled(PxScale::from(size as f32));
        let mut w = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                w += sf.kern(p, id);
            }
            w += sf.h_advance(id);
            prev = Some(id);
        }
        (w, sf.ascent(), sf.ascent() - sf.descent())
    }
}

impl<'a> DrawingBackend for TextBackend<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;
    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> std::result::Result<(), BErr<'a>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> std::result::Result<(), BErr<'a>> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        p: BackendCoord,
        c: BackendColor,
    ) -> std::result::Result<(), BErr<'a>> {
        self.inner.draw_pixel(p, c)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
    ) -> std::result::Result<(), BErr<'a>> {
        self.inner.draw_line(a, b, s)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
        fill: bool,
    ) -> std::result::Result<(), BErr<'a>> {
        self.inner.draw_rect(a, b, s, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> std::result::Result<(), BErr<'a>> {
        self.inner.draw_path(path, s)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        c: BackendCoord,
        r: u32,
        s: &S,
        fill: bool,
    ) -> std::result::Result<(), BErr<'a>> {
        self.inner.draw_circle(c, r, s, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        v: I,
        s: &S,
    ) -> std::result::Result<(), BErr<'a>> {
        self.inner.fill_polygon(v, s)
    }
    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> std::result::Result<(u32, u32), BErr<'a>> {
        let (w, _, h) = self.layout(text, style.size());
        Ok((w.ceil() as u32, h.ceil() as u32))
    }
    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> std::result::Result<(), BErr<'a>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size();
        let (w, ascent, h) = self.layout(text, size);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Right => -w,
            HPos::Center => -w / 2.0,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0.0,
            VPos::Center => -h / 2.0,
            VPos::Bottom => -h,
        };
        let trans = style.transform();
        let scale = PxScale::from(size as f32);
        let sf = self.font.as_scaled(scale);
        let (bw, bh) = self.get_size();
        let mut x = 0.0f32;
        let mut prev = None;
        let mut pixels: Vec<(i32, i32, f32)> = Vec::new();
        for c in text.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                x += sf.kern(p, id);
            }
            let glyph = id.with_scale_and_position(scale, ab_glyph::point(x, ascent));
            x += sf.h_advance(id);
            prev = Some(id);
            if let Some(og) = self.font.outline_glyph(glyph) {
                let b = og.px_bounds();
                og.draw(|gx, gy, cov| {
                    if cov > 0.02 {
                        let px = (b.min.x + gx as f32 + dx).round() as i32;
                        let py = (b.min.y + gy as f32 + dy).round() as i32;
                        pixels.push((px, py, cov));
                    }
                });
            }
        }
        for (px, py, cov) in pixels {
            let (tx, ty) = trans.transform(px, py);
            let (fx, fy) = (pos.0 + tx, pos.1 + ty);
            if fx >= 0 && fy >= 0 && (fx as u32) < bw && (fy as u32) < bh {
                self.inner.draw_pixel(
                    (fx, fy),
                    BackendColor {
                        alpha: color.alpha * cov.min(1.0) as f64,
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

const PALETTE: [RGBColor; 5] = [
    RGBColor(200, 120, 0),
    RGBColor(0, 90, 200),
    RGBColor(200, 30, 60),
    RGBColor(40, 150, 60),
    RGBColor(120, 60, 160),
];

fn colour(label: u8) -> RGBColor {
    PALETTE[(label as usize + 4) % PALETTE.len()]
}

fn render<F>(draw: F) -> Result<Vec<u8>>
where
    F: FnOnce(
        &DrawingArea<TextBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
{
    let font = FontRef::try_from_slice(FONT_BYTES)
        .map_err(|e| Error::library(FaultKind::Internal, "embedded font", e))?;
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let backend = TextBackend {
            inner: BitMapBackend::with_buffer(&mut buf, (W, H)),
            font,
        };
        let root = backend.into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| Error::library(FaultKind::Internal, "plot", e))?;
        draw(&root).map_err(|e| Error::library(FaultKind::Internal, "plot", e))?;
        root.present()
            .map_err(|e| Error::library(FaultKind::Internal, "plot", e))?;
    }
    encode_png(&buf, W, H)
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc
            .write_header()
            .map_err(|e| Error::library(FaultKind::Internal, "png", e))?;
        wr.write_image_data(rgb)
            .map_err(|e| Error::library(FaultKind::Internal, "png", e))?;
    }
    Ok(out)
}

/// Time-activity curves: measured points with their standard uncertainty and the
/// chosen fit of each organ, on a linear activity axis.
pub(crate) fn tac_png(s: &DoseSummary) -> Result<Vec<u8>> {
    tac_png_scaled(s, false)
}

/// [`tac_png`], or with `log` a logarithmic activity axis (a mono-exponential
/// phase is a straight line there, so a wrong fit or an outlier stands out). The
/// log axis is drawn as log10 of the activity with labels in MBq.
pub(crate) fn tac_png_scaled(s: &DoseSummary, log: bool) -> Result<Vec<u8>> {
    let lp = std::f64::consts::LN_2 / s.half_life_h;
    let t_max = s.times_h.iter().cloned().fold(1.0, f64::max) * 1.3;
    let mut a_max: f64 = 0.0;
    let mut a_min = f64::INFINITY;
    for o in s.organs.values() {
        for (k, &a) in o.activity_mbq.iter().enumerate() {
            let sd = o.activity_mbq_sd.get(k).copied().unwrap_or(0.0);
            a_max = a_max.max(a + sd.max(0.0));
            if a > 0.0 {
                a_min = a_min.min(a);
            }
        }
    }
    let a_max = if a_max > 0.0 { a_max * 1.15 } else { 1.0 };
    // Log axis: from a decade below the smallest point, as log10.
    let (y0, y1) = if log {
        let lo = if a_min.is_finite() {
            a_min / 10.0
        } else {
            a_max / 1e3
        };
        (lo.log10().floor(), a_max.log10())
    } else {
        (0.0, a_max)
    };
    let y_of = move |a: f64| -> f64 {
        if log {
            a.max(10f64.powf(y0)).log10()
        } else {
            a.clamp(0.0, a_max)
        }
    };
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Time-activity curves, patient {}{}",
                    s.patient_id,
                    if log { " (log scale)" } else { "" }
                ),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, y0..y1)
            .map_err(|e| e.to_string())?;
        let fmt_y = move |v: &f64| -> String {
            if log {
                let a = 10f64.powf(*v);
                if a >= 10.0 {
                    format!("{a:.0}")
                } else {
                    format!("{a:.2}")
                }
            } else {
                format!("{v:.0}")
            }
        };
        chart
            .configure_mesh()
            .x_desc("time after injection (h)")
            .y_desc("organ activity (MBq)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&fmt_y)
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, o) in &s.organs {
            let c = colour(o.label);
            let pts: Vec<(f64, f64, f64)> = s
                .times_h
                .iter()
                .cloned()
                .zip(o.activity_mbq.iter().cloned())
                .enumerate()
                .map(|(k, (t, a))| (t, a, o.activity_mbq_sd.get(k).copied().unwrap_or(0.0)))
                .collect();
            chart
                .draw_series(pts.iter().map(|&(t, a, sd)| {
                    ErrorBar::new_vertical(
                        t,
                        y_of(a - sd),
                        y_of(a),
                        y_of(a + sd),
                        Color::stroke_width(&c, 2),
                        10,
                    )
                }))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|&(t, a, _)| Circle::new((t, y_of(a)), 5, c.filled())),
                )
                .map_err(|e| e.to_string())?
                .label(format!("{name} ({})", o.kinetics.method))
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
            // The curve that gave the TIA is drawn bold; with the hybrid method the
            // fitted model (its cross-check) is the thin line.
            let hybrid = o.kinetics.hybrid.as_ref();
            if let Some(h) = hybrid {
                let curve: Vec<(f64, f64)> = (0..=300)
                    .map(|i| {
                        let t = t_max * i as f64 / 300.0;
                        (t, y_of(h.eval(t)).min(y1))
                    })
                    .collect();
                chart
                    .draw_series(LineSeries::new(curve, Color::stroke_width(&c, 2)))
                    .map_err(|e| e.to_string())?;
            }
            if let Some(f) = &o.fit {
                let m: Model = f.model;
                let curve: Vec<(f64, f64)> = (0..=300)
                    .map(|i| {
                        let t = t_max * i as f64 / 300.0;
                        (t, y_of(m.eval(&f.parameters, lp, t)).min(y1))
                    })
                    .collect();
                let width = if hybrid.is_some() { 1 } else { 2 };
                chart
                    .draw_series(LineSeries::new(curve, Color::stroke_width(&c, width)))
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Cumulative DVH of each organ.
pub(crate) fn dvh_png(s: &DoseSummary) -> Result<Vec<u8>> {
    let mut d_max: f64 = 0.0;
    for o in s.organs.values() {
        if let Some(h) = &o.dvh_curve {
            d_max = d_max.max(h.max);
        }
    }
    let d_max = if d_max > 0.0 { d_max * 1.05 } else { 1.0 };
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Cumulative dose-volume histograms, patient {}",
                    s.patient_id
                ),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..d_max, 0.0..105.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("absorbed dose (Gy)")
            .y_desc("volume (%)")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, o) in &s.organs {
            let Some(h) = &o.dvh_curve else { continue };
            let c = colour(o.label);
            let mut pts: Vec<(f64, f64)> = h
                .dose_gy
                .iter()
                .zip(&h.volume_fraction)
                .map(|(&d, &v)| (d, v * 100.0))
                .collect();
            pts.push((h.max, 0.0));
            chart
                .draw_series(LineSeries::new(pts, Color::stroke_width(&c, 2)))
                .map_err(|e| e.to_string())?
                // The curve is the voxel dose map's (kernel convolution);
                // its voxel mean is not the table's organ mean (partial-volume
                // corrected TIA x E / mass): both are named so they are not
                // read as one figure that disagrees with itself.
                .label(format!(
                    "{name}: organ mean {:.2} Gy (table); voxel mean {:.2}, D30 {:.2}, D70 {:.2}",
                    o.mean_dose_gy, h.mean, h.d30, h.d70
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], Color::stroke_width(&c, 2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// The patient's cumulative BED per organ after each cycle (+- its SD) against
/// the configured BED limits (`history.png`); None without a history or a BED.
pub(crate) fn history_png(s: &DoseSummary) -> Result<Option<Vec<u8>>> {
    let Some(h) = &s.treatment_history else {
        return Ok(None);
    };
    // Per organ with a BED in every cycle: the running sums (linear SDs, as
    // the history adds them).
    // (organ, label, per cycle (number, cumulative BED, its SD)).
    type Running = Vec<(f64, f64, f64)>;
    let mut series: Vec<(String, u8, Running)> = Vec::new();
    for name in h.cumulative.keys() {
        let mut total = 0.0;
        let mut total_sd = 0.0;
        let mut pts = Vec::new();
        for (i, c) in h.cycles.iter().enumerate() {
            let Some(o) = c.organs.get(name) else {
                continue;
            };
            let Some(b) = o.bed_gy else { continue };
            total += b;
            total_sd += o.bed_gy_sd.unwrap_or(0.0);
            pts.push(((i + 1) as f64, total, total_sd));
        }
        if !pts.is_empty() {
            let label = crate::organs::label(name).unwrap_or(0);
            series.push((name.clone(), label, pts));
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    let limits: Vec<(String, f64)> = h
        .allowances
        .iter()
        .filter(|a| a.quantity.starts_with("BED"))
        .map(|a| (a.quantity.clone(), a.limit_gy))
        .fold(Vec::new(), |mut v, (q, l)| {
            if !v.iter().any(|(_, x): &(String, f64)| *x == l) {
                v.push((q, l));
            }
            v
        });
    let y_max = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|x| x.1 + x.2))
        .chain(limits.iter().map(|l| l.1))
        .fold(1.0f64, f64::max)
        // Room above the highest limit for the legend.
        * 1.35;
    let n = h.cycles.len().max(1) as f64;
    let png = render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Cumulative BED over the treatment, patient {}",
                    s.patient_id
                ),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.5..n + 0.5, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("cycle")
            .y_desc("cumulative BED (Gy)")
            .x_labels(h.cycles.len().max(1))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| e.to_string())?;
        for (q, l) in &limits {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.5, *l), (n + 0.5, *l)],
                    8,
                    6,
                    Color::stroke_width(&BLACK, 2),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("limit: {q} {l:.0} Gy"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        for (name, label, pts) in &series {
            let c = colour(*label);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.1)),
                    Color::stroke_width(&c, 2),
                ))
                .map_err(|e| e.to_string())?
                .label(format!(
                    "{name}: {:.1} +- {:.1} Gy after {} cycle(s)",
                    pts.last().map(|p| p.1).unwrap_or(0.0),
                    pts.last().map(|p| p.2).unwrap_or(0.0),
                    pts.len()
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], Color::stroke_width(&c, 2))
                });
            chart
                .draw_series(pts.iter().map(|p| {
                    ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, c.filled(), 10)
                }))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })?;
    Ok(Some(png))
}
