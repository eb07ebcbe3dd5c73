//! `report.pdf`: the page a physicist reads and signs. A header with patient,
//! study and cycle, the text report (method, per-organ table with uncertainties,
//! kinetics, warnings) in a fixed-width font so its table stays aligned, then the
//! TAC and DVH plots and the quality-control pictures, one or two to a page.
//! Patient name and ID and the page number are printed on every page.
//!
//! Built with pdf-writer (the typst project's PDF writer: pure Rust, no system
//! fonts): text uses the standard Helvetica and Courier fonts every PDF viewer
//! has, pictures are embedded as Flate-compressed RGB.

use crate::error::{Error, FaultKind, Result};
use flate2::write::ZlibEncoder;
use flate2::Compression;
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str};
use std::io::Write;

/// A4 in points.
const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 36.0;
/// Body text: Courier 7.6 pt fits the 112 columns of report.txt across the page.
const BODY_PT: f32 = 7.6;
const BODY_COLS: usize = 118;
const LEADING: f32 = 9.4;

/// A picture for the report: RGB rows top to bottom, with a caption.
pub struct Picture {
    pub caption: String,
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Picture {
    /// Decodes a PNG (8-bit RGB or RGBA, as organdose's plots and pictures are).
    pub(crate) fn from_png(caption: &str, png_bytes: &[u8]) -> Result<Self> {
        let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut r = dec
            .read_info()
            .map_err(|e| Error::library(FaultKind::Internal, "png", e))?;
        let mut buf = vec![0u8; r.output_buffer_size().unwrap_or(0)];
        let info = r
            .next_frame(&mut buf)
            .map_err(|e| Error::library(FaultKind::Internal, "png", e))?;
        let (w, h) = (info.width as usize, info.height as usize);
        let rgb = match info.color_type {
            png::ColorType::Rgb => buf[..w * h * 3].to_vec(),
            png::ColorType::Rgba => buf[..w * h * 4]
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect(),
            png::ColorType::Grayscale => buf[..w * h].iter().flat_map(|&g| [g, g, g]).collect(),
            other => return Err(Error::input(format!("png: colour type {other:?}"))),
        };
        Ok(Picture {
            caption: caption.to_string(),
            width: w,
            height: h,
            rgb,
        })
    }
}

/// What goes on the pages.
pub struct ReportPages {
    pub title: String,
    /// Header lines: patient, study, cycle.
    pub header: Vec<String>,
    /// Page 1, read in ten seconds; the text report follows as an appendix.
    pub summary: Option<SummaryPage>,
    /// The text report (report.txt).
    pub body: String,
    pub pictures: Vec<Picture>,
    /// Printed at the foot of every page (patient name and ID).
    pub footer: String,
}

/// How the cycle's result stands, as the first page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Final,
    NeedsReview,
    Reviewed,
    /// Partial or provisional: more time points are to come.
    Incomplete,
}

/// The first page: status and why, one row per organ, the warnings, and
/// small pictures of the organs flagged for review.
pub struct SummaryPage {
    pub standing: Standing,
    /// "FINAL", "NEEDS REVIEW", "REVIEWED by ... on ...".
    pub status: String,
    /// Why it needs review (or who reviewed what).
    pub why: Vec<String>,
    /// Column titles, then one row per organ.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// A second table under the first: column titles, then one row per lesion
    /// (none: no table).
    pub lesion_columns: Vec<String>,
    pub lesion_rows: Vec<Vec<String>>,
    /// Lines under the table (what the columns mean).
    pub notes: Vec<String>,
    /// The patient's course so far, fixed-width lines (empty: none).
    pub history: Vec<String>,
    pub warnings: Vec<String>,
    /// Indices into [`ReportPages::pictures`] shown small on the page.
    pub thumbnails: Vec<usize>,
}

/// Text as the standard fonts' WinAnsi bytes (Latin-1 for what reports hold;
/// anything else as '?').
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '\u{2013}' | '\u{2014}' => b'-',
            _ => b'?',
        })
        .collect()
}

/// Lines of at most `cols` characters (long lines wrapped with an indent).
fn wrap(text: &str, cols: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let chars: Vec<char> = line.chars().collect();
        if chars.len() <= cols {
            out.push(line.to_string());
            continue;
        }
        let mut start = 0;
        let mut first = true;
        while start < chars.len() {
            let room = if first { cols } else { cols - 6 };
            let mut end = (start + room).min(chars.len());
            if end < chars.len() {
                if let Some(sp) = (start + room / 2..end).rev().find(|&i| chars[i] == ' ') {
                    end = sp + 1;
                }
            }
            let piece: String = chars[start..end].iter().collect();
            out.push(if first {
                piece
            } else {
                format!("      {piece}")
            });
            first = false;
            start = end;
        }
    }
    out
}

fn zlib(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data)
        .and_then(|_| e.finish())
        .map_err(|e| Error::library(FaultKind::Internal, "pdf image", e))
}

/// One page under construction.
struct PageDraft {
    content: Content,
    /// (resource name, image object) used on the page.
    images: Vec<(String, Ref)>,
}

/// Builds the PDF.
pub fn render(p: &ReportPages) -> Result<Vec<u8>> {
    let mut pdf = Pdf::new();
    let mut next = 1i32;
    let mut alloc = || {
        let r = Ref::new(next);
        next += 1;
        r
    };
    let catalog = alloc();
    let tree = alloc();
    let helv = alloc();
    let helv_bold = alloc();
    let courier = alloc();
    pdf.type1_font(helv)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(helv_bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(courier)
        .base_font(Name(b"Courier"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));

    let mut pages: Vec<PageDraft> = Vec::new();
    let text = |c: &mut Content, font: &[u8], size: f32, x: f32, y: f32, s: &str| {
        c.begin_text();
        c.set_font(Name(font), size);
        c.next_line(x, y);
        c.show(Str(&win_ansi(s)));
        c.end_text();
    };

    // Title and header lines from `y` down; the y below them.
    let title_block = |c: &mut Content, mut y: f32| {
        text(c, b"F2", 15.0, MARGIN, y, &p.title);
        y -= 20.0;
        for h in &p.header {
            text(c, b"F1", 9.5, MARGIN, y, h);
            y -= 12.5;
        }
        y
    };
    // Each picture is one image object, whether shown once or twice.
    let mut xobjects: Vec<Option<Ref>> = vec![None; p.pictures.len()];
    let drawable = |pic: &Picture| {
        pic.width > 0 && pic.height > 0 && pic.rgb.len() >= pic.width * pic.height * 3
    };
    if let Some(sp) = &p.summary {
        let mut c = Content::new();
        let mut images = Vec::new();
        let mut y = title_block(&mut c, PAGE_H - MARGIN - 14.0);
        // The status in a coloured band.
        y -= 8.0;
        let (r, g, b) = match sp.standing {
            Standing::Final => (0.80, 0.93, 0.80),
            Standing::NeedsReview => (1.00, 0.85, 0.60),
            Standing::Reviewed => (0.80, 0.88, 1.00),
            Standing::Incomplete => (0.90, 0.90, 0.90),
        };
        c.set_fill_rgb(r, g, b);
        c.rect(MARGIN, y - 8.0, PAGE_W - 2.0 * MARGIN, 24.0);
        c.fill_nonzero();
        c.set_fill_rgb(0.0, 0.0, 0.0);
        text(&mut c, b"F2", 13.0, MARGIN + 8.0, y, &sp.status);
        y -= 24.0;
        for w in &sp.why {
            for l in wrap(w, 110) {
                text(&mut c, b"F1", 8.5, MARGIN + 8.0, y, &l);
                y -= 10.5;
            }
        }
        // The organ table, then the lesions' (when any): each column as wide as
        // its longest entry (in characters), the page width shared out in proportion.
        y -= 8.0;
        let tables = [
            (&sp.columns, &sp.rows),
            (&sp.lesion_columns, &sp.lesion_rows),
        ];
        for (t, (columns, rows)) in tables.into_iter().enumerate() {
            if t > 0 && (rows.is_empty() || columns.is_empty()) {
                continue;
            }
            if t > 0 {
                y -= 6.0;
            }
            let chars: Vec<f32> = (0..columns.len())
                .map(|i| {
                    rows.iter()
                        .filter_map(|r| r.get(i))
                        .chain(std::iter::once(&columns[i]))
                        .map(|t| t.chars().count())
                        .max()
                        .unwrap_or(1) as f32
                        + 2.0
                })
                .collect();
            let total: f32 = chars.iter().sum::<f32>().max(1.0);
            let mut xs = vec![MARGIN];
            for w in &chars {
                let last = xs.last().copied().unwrap_or(MARGIN);
                xs.push(last + (PAGE_W - 2.0 * MARGIN) * w / total);
            }
            let x_of = |i: usize| xs.get(i).copied().unwrap_or(MARGIN);
            for (i, t) in columns.iter().enumerate() {
                text(&mut c, b"F2", 8.5, x_of(i), y, t);
            }
            y -= 4.0;
            c.set_stroke_rgb(0.5, 0.5, 0.5);
            c.set_line_width(0.6);
            c.move_to(MARGIN, y);
            c.line_to(PAGE_W - MARGIN, y);
            c.stroke();
            y -= 12.0;
            // A long lesion list must leave room for the warnings: the rest is in
            // the full report.
            let room = if t > 0 { 12 } else { usize::MAX };
            for row in rows.iter().take(room) {
                for (i, t) in row.iter().enumerate() {
                    text(&mut c, b"F1", 9.0, x_of(i), y, t);
                }
                y -= 13.0;
            }
            if rows.len() > room {
                text(
                    &mut c,
                    b"F1",
                    8.0,
                    MARGIN,
                    y,
                    &format!(
                        "... {} more in the full report (appendix)",
                        rows.len() - room
                    ),
                );
                y -= 11.0;
            }
        }
        y -= 2.0;
        for n in &sp.notes {
            for l in wrap(n, 120) {
                text(&mut c, b"F1", 7.5, MARGIN, y, &l);
                y -= 9.0;
            }
        }
        if !sp.history.is_empty() {
            y -= 6.0;
            text(&mut c, b"F2", 9.5, MARGIN, y, "Treatment history");
            y -= 11.0;
            for l in &sp.history {
                text(&mut c, b"F3", 7.6, MARGIN, y, l);
                y -= 9.0;
            }
        }
        // Warnings, as many as leave room for the pictures.
        y -= 6.0;
        let room_for_pics = if sp.thumbnails.is_empty() { 0.0 } else { 150.0 };
        text(
            &mut c,
            b"F2",
            9.5,
            MARGIN,
            y,
            if sp.warnings.is_empty() {
                "Warnings: none"
            } else {
                "Warnings"
            },
        );
        y -= 12.0;
        let mut shown = 0;
        'w: for w in &sp.warnings {
            for (i, l) in wrap(w, 118).into_iter().enumerate() {
                if y < MARGIN + 30.0 + room_for_pics {
                    break 'w;
                }
                let l = if i == 0 {
                    format!("- {l}")
                } else {
                    format!("  {l}")
                };
                text(&mut c, b"F1", 7.8, MARGIN, y, &l);
                y -= 9.4;
            }
            shown += 1;
        }
        if shown < sp.warnings.len() {
            text(
                &mut c,
                b"F1",
                7.8,
                MARGIN,
                y,
                &format!(
                    "... {} more in the full report (appendix)",
                    sp.warnings.len() - shown
                ),
            );
            y -= 9.4;
        }
        // Pictures of the flagged organs, side by side, at most 130 pt high.
        let thumbs: Vec<usize> = sp
            .thumbnails
            .iter()
            .copied()
            .filter(|&i| p.pictures.get(i).is_some_and(drawable))
            .collect();
        if !thumbs.is_empty() && y > MARGIN + 60.0 {
            y -= 6.0;
            text(&mut c, b"F2", 9.5, MARGIN, y, "Masks flagged for review");
            y -= 6.0;
            let per_row = thumbs.len().min(2);
            let cell_w = (PAGE_W - 2.0 * MARGIN) / per_row as f32;
            let max_h = (y - MARGIN - 26.0).min(130.0);
            let mut x = MARGIN;
            for (k, &i) in thumbs.iter().enumerate() {
                if k > 0 && k % per_row == 0 {
                    break; // one row: the rest are in the QC pages
                }
                let pic = &p.pictures[i];
                let scale = ((cell_w - 8.0) / pic.width as f32).min(max_h / pic.height as f32);
                let (w, h) = (pic.width as f32 * scale, pic.height as f32 * scale);
                let id = *xobjects[i].get_or_insert_with(&mut alloc);
                let name = format!("Im{i}");
                text(&mut c, b"F1", 7.5, x, y - 9.0, &pic.caption);
                c.save_state();
                c.transform([w, 0.0, 0.0, h, x, y - 12.0 - h]);
                c.x_object(Name(name.as_bytes()));
                c.restore_state();
                images.push((name, id));
                x += cell_w;
            }
        }
        pages.push(PageDraft { content: c, images });
    }

    // Text pages: title and header on the first, then the report body (an
    // appendix after the summary page).
    let body = wrap(&p.body, BODY_COLS);
    let mut lines = body.iter().peekable();
    let mut first = true;
    while first || lines.peek().is_some() {
        let mut c = Content::new();
        let mut y = PAGE_H - MARGIN - 14.0;
        if first && p.summary.is_some() {
            text(&mut c, b"F2", 13.0, MARGIN, y, "Appendix: full report");
            y -= 18.0;
            first = false;
        }
        if first {
            y = title_block(&mut c, y);
            y -= 6.0;
            c.set_stroke_rgb(0.5, 0.5, 0.5);
            c.set_line_width(0.6);
            c.move_to(MARGIN, y + 6.0);
            c.line_to(PAGE_W - MARGIN, y + 6.0);
            c.stroke();
            y -= 8.0;
            first = false;
        }
        while y > MARGIN + 24.0 {
            let Some(l) = lines.next() else { break };
            text(&mut c, b"F3", BODY_PT, MARGIN, y, l);
            y -= LEADING;
        }
        pages.push(PageDraft {
            content: c,
            images: Vec::new(),
        });
    }

    // Picture pages: as many as fit one above the other at the page width.
    let avail_w = PAGE_W - 2.0 * MARGIN;
    let top = PAGE_H - MARGIN;
    let mut current: Option<(PageDraft, f32)> = None;
    for (n, pic) in p.pictures.iter().enumerate() {
        if !drawable(pic) {
            continue;
        }
        let scale = (avail_w / pic.width as f32).min(1.0);
        let (w, h) = (pic.width as f32 * scale, pic.height as f32 * scale);
        let need = h + 18.0;
        let fits = current
            .as_ref()
            .is_some_and(|(_, y)| y - need > MARGIN + 20.0);
        if !fits {
            if let Some((page, _)) = current.take() {
                pages.push(page);
            }
            current = Some((
                PageDraft {
                    content: Content::new(),
                    images: Vec::new(),
                },
                top,
            ));
        }
        let Some((page, y)) = current.as_mut() else {
            continue;
        };
        let id = *xobjects[n].get_or_insert_with(&mut alloc);
        let name = format!("Im{n}");
        let x = MARGIN + (avail_w - w) / 2.0;
        let y_img = *y - 14.0 - h;
        text(
            &mut page.content,
            b"F1",
            9.0,
            MARGIN,
            *y - 10.0,
            &pic.caption,
        );
        page.content.save_state();
        page.content.transform([w, 0.0, 0.0, h, x, y_img]);
        page.content.x_object(Name(name.as_bytes()));
        page.content.restore_state();
        page.images.push((name, id));
        *y = y_img - 10.0;
    }
    if let Some((page, _)) = current.take() {
        pages.push(page);
    }

    let total = pages.len();
    let mut page_ids = Vec::with_capacity(total);
    for (k, mut page) in pages.into_iter().enumerate() {
        let foot = format!("{}    page {} of {}", p.footer, k + 1, total);
        text(&mut page.content, b"F1", 8.0, MARGIN, MARGIN - 14.0, &foot);
        let page_id = alloc();
        let content_id = alloc();
        page_ids.push(page_id);
        let mut pg = pdf.page(page_id);
        pg.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        pg.parent(tree);
        pg.contents(content_id);
        let mut res = pg.resources();
        let mut fonts = res.fonts();
        fonts.pair(Name(b"F1"), helv);
        fonts.pair(Name(b"F2"), helv_bold);
        fonts.pair(Name(b"F3"), courier);
        fonts.finish();
        let mut xo = res.x_objects();
        for (name, id) in &page.images {
            xo.pair(Name(name.as_bytes()), *id);
        }
        xo.finish();
        res.finish();
        pg.finish();
        let data = zlib(&page.content.finish())?;
        pdf.stream(content_id, &data).filter(Filter::FlateDecode);
    }
    for (n, id) in xobjects
        .into_iter()
        .enumerate()
        .filter_map(|(n, id)| Some((n, id?)))
    {
        let pic = &p.pictures[n];
        let data = zlib(&pic.rgb[..pic.width * pic.height * 3])?;
        let mut img = pdf.image_xobject(id, &data);
        img.filter(Filter::FlateDecode);
        img.width(pic.width as i32);
        img.height(pic.height as i32);
        img.color_space().device_rgb();
        img.bits_per_component(8);
        img.finish();
    }
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(total as i32);
    pdf.catalog(catalog).pages(tree);
    Ok(pdf.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_long_lines_and_keeps_short_ones() {
        let w = wrap("short\nthe quick brown fox jumps over the lazy dog", 20);
        assert_eq!(w[0], "short");
        assert!(w.iter().all(|l| l.chars().count() <= 20), "{w:?}");
        assert_eq!(w.len(), 4, "{w:?}");
    }

    #[test]
    fn pdf_has_every_page_and_picture() {
        let pic = Picture {
            caption: "test".into(),
            width: 4,
            height: 3,
            rgb: vec![200; 36],
        };
        let pages = ReportPages {
            title: "T".into(),
            header: vec!["Patient: X ± 1".into()],
            summary: None,
            body: "line\n".repeat(200),
            pictures: vec![pic],
            footer: "X".into(),
        };
        let bytes = render(&pages).unwrap();
        let s = String::from_utf8_lossy(&bytes);
        assert!(s.starts_with("%PDF-"));
        assert!(s.trim_end().ends_with("%%EOF"));
        // 200 body lines need three text pages, plus one picture page.
        assert!(s.contains("/Count 4"), "page count");
        assert_eq!(s.matches("/Subtype /Image").count(), 1);
    }

    #[test]
    fn summary_page_comes_first_and_shares_its_pictures() {
        let pic = |c: &str| Picture {
            caption: c.into(),
            width: 4,
            height: 3,
            rgb: vec![200; 36],
        };
        let pages = ReportPages {
            title: "T".into(),
            header: vec!["Patient: X".into()],
            summary: Some(SummaryPage {
                standing: Standing::NeedsReview,
                status: "NEEDS REVIEW".into(),
                why: vec!["kidney_left mask: the planes disagree".into()],
                columns: vec!["Organ".into(), "Mean dose Gy".into()],
                rows: vec![vec!["kidney_left".into(), "4.94 +- 0.40".into()]],
                lesion_columns: vec!["Lesion".into(), "Mean dose Gy".into()],
                lesion_rows: vec![vec!["L1".into(), "21.3 +- 2.1".into()]],
                notes: vec![],
                history: vec![],
                warnings: (0..300).map(|i| format!("warning {i}")).collect(),
                thumbnails: vec![1],
            }),
            body: "line\n".repeat(10),
            pictures: vec![pic("a"), pic("b")],
            footer: "X".into(),
        };
        let bytes = render(&pages).unwrap();
        let s = String::from_utf8_lossy(&bytes);
        // Summary, one appendix text page, one page of both pictures.
        assert!(s.contains("/Count 3"), "page count");
        // The thumbnail reuses the picture's image object.
        assert_eq!(s.matches("/Subtype /Image").count(), 2);
    }
}
