//! Network inputs in millimetres: a plane's slices resampled to a fixed
//! physical pixel size on a fixed canvas, padded or tiled instead of
//! stretched, and the two neighbour channels taken at a fixed distance along
//! the slice normal. A 0.7 mm and a 5 mm series, or a coronal slab of 30
//! slices, then reach the network at one scale. `train/organdose_train/data.py`
//! (`mm_slice_input`, `plane_tiles`) computes exactly this; the parity test
//! (`tests/it/train_parity.rs`) holds both to it.
//!
//! Positions are "index millimetres" along each voxel axis: voxel centre i
//! sits at `i * spacing`. The direction cosines play no part: the image keeps
//! the series' own row/column order, as the stretched input did.

use super::plane::Plane;

/// Canvas of the physical sampling: `size` x `size` pixels of `pixel_mm`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Canvas {
    pub size: usize,
    pub pixel_mm: f32,
    /// Distance of the two neighbour channels from the centre slice (mm).
    pub neighbor_mm: f32,
}

impl Canvas {
    pub(crate) fn extent_mm(&self) -> f32 {
        self.size as f32 * self.pixel_mm
    }
}

/// One canvas window on a plane: the index-mm position of its left (u) and
/// top (v) edge. Canvas pixel x covers `u0 + x * pixel .. u0 + (x + 1) * pixel`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tile {
    pub u0_mm: f32,
    pub v0_mm: f32,
}

/// Tiles overlap by at least a quarter of the canvas, so an organ cut by one
/// tile's edge is whole in its neighbour.
const TILE_STEP: f32 = 0.75;

/// Left edges of the windows of width `canvas_mm` covering `[lo, hi]`: one
/// centred window when it fits, else evenly spaced windows from `lo` to `hi`.
pub(crate) fn axis_tiles(lo_mm: f32, hi_mm: f32, canvas_mm: f32) -> Vec<f32> {
    let extent = hi_mm - lo_mm;
    if extent <= canvas_mm {
        return vec![(lo_mm + hi_mm) * 0.5 - canvas_mm * 0.5];
    }
    let n = ((extent - canvas_mm) / (TILE_STEP * canvas_mm)).ceil() as usize + 1;
    let step = (extent - canvas_mm) / (n - 1) as f32;
    (0..n).map(|i| lo_mm + i as f32 * step).collect()
}

/// Voxels above this are the body (and couch); below, air.
pub(crate) const BODY_HU: f32 = -500.0;
/// Room left around the body's extent (mm).
pub(crate) const BODY_MARGIN_MM: f32 = 10.0;

/// Index range `[min, max]` along each axis of voxels with HU > `BODY_HU`;
/// None for a volume of air.
pub fn body_box(ct: &[f32], dims: [usize; 3]) -> Option<[(usize, usize); 3]> {
    let mut b = [(usize::MAX, 0usize); 3];
    let mut any = false;
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            let row = &ct[(k * dims[1] + j) * dims[0]..(k * dims[1] + j + 1) * dims[0]];
            let Some(first) = row.iter().position(|&v| v > BODY_HU) else {
                continue;
            };
            let last = row.iter().rposition(|&v| v > BODY_HU).unwrap_or(first);
            any = true;
            b[0] = (b[0].0.min(first), b[0].1.max(last));
            b[1] = (b[1].0.min(j), b[1].1.max(j));
            b[2] = (b[2].0.min(k), b[2].1.max(k));
        }
    }
    any.then_some(b)
}

/// Index-mm range `[lo, hi]` to cover along `axis`: the body box widened by
/// the margin, or the whole axis without a body.
pub fn axis_range_mm(
    body: Option<&[(usize, usize); 3]>,
    dims: [usize; 3],
    spacing: [f32; 3],
    axis: usize,
) -> (f32, f32) {
    let (a, b) = body.map_or((0, dims[axis] - 1), |bb| bb[axis]);
    (
        a as f32 * spacing[axis] - BODY_MARGIN_MM,
        b as f32 * spacing[axis] + BODY_MARGIN_MM,
    )
}

/// The tiles of a plane over the given index-mm ranges of its image axes.
pub fn plane_tiles(canvas: &Canvas, u_range: (f32, f32), v_range: (f32, f32)) -> Vec<Tile> {
    let e = canvas.extent_mm();
    let us = axis_tiles(u_range.0, u_range.1, e);
    let vs = axis_tiles(v_range.0, v_range.1, e);
    tile_grid(&us, &vs)
}

/// Every (u, v) pair of window edges, row by row.
fn tile_grid(us: &[f32], vs: &[f32]) -> Vec<Tile> {
    vs.iter()
        .flat_map(|&v0| {
            us.iter().map(move |&u0| Tile {
                u0_mm: u0,
                v0_mm: v0,
            })
        })
        .collect()
}

/// The network's FPN strides: a canvas side is a multiple of this (no
/// zero-padding by the network's transform).
const SIDE_STEP_PX: usize = 32;

/// Canvas sides a plane's pass may take: at least `min_px`, at most `max_px`
/// pixels (multiples of 32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanvasFit {
    pub min_px: usize,
    pub max_px: usize,
}

/// Pixels and window edges along one axis for a canvas fitted to `[lo, hi]`:
/// one window just wide enough (rounded up to a multiple of 32 pixels, at
/// least `min_px`, centred) when the range fits in `max_px`, else windows of
/// `max_px` as [`axis_tiles`] lays them.
pub(crate) fn fitted_axis(
    lo_mm: f32,
    hi_mm: f32,
    pixel_mm: f32,
    fit: CanvasFit,
) -> (usize, Vec<f32>) {
    let max_px = (fit.max_px / SIDE_STEP_PX).max(1) * SIDE_STEP_PX;
    let min_px = (fit.min_px.div_ceil(SIDE_STEP_PX) * SIDE_STEP_PX).min(max_px);
    let need = ((hi_mm - lo_mm).max(0.0) / pixel_mm).ceil() as usize;
    let px = need.div_ceil(SIDE_STEP_PX) * SIDE_STEP_PX;
    let px = px.clamp(min_px.max(SIDE_STEP_PX), max_px);
    (px, axis_tiles(lo_mm, hi_mm, px as f32 * pixel_mm))
}

/// A plane's canvas fitted to the index-mm ranges of its image axes: its
/// width (u) and height (v) in pixels and its tiles. The network is
/// convolutional: a 320 x 256 image of a body 500 mm wide costs 1.25 of a
/// 256 x 256 one, where two overlapping 256-pixel tiles cost 2. Inference
/// only: the training data are cut as [`plane_tiles`] cuts them (the parity
/// test holds those), the same pixels on a smaller canvas.
pub fn fitted_tiles(
    canvas: &Canvas,
    fit: CanvasFit,
    u_range: (f32, f32),
    v_range: (f32, f32),
) -> (usize, usize, Vec<Tile>) {
    let (nx, us) = fitted_axis(u_range.0, u_range.1, canvas.pixel_mm, fit);
    let (ny, vs) = fitted_axis(v_range.0, v_range.1, canvas.pixel_mm, fit);
    (nx, ny, tile_grid(&us, &vs))
}

/// Linear-interpolation taps of canvas pixels on a source axis of `n`
/// voxels at `spacing`; None where the pixel centre lies outside the
/// source's half-voxel border (the canvas is padded with 0 there).
pub(crate) fn canvas_taps(
    n: usize,
    spacing: f32,
    origin_mm: f32,
    pixel_mm: f32,
    size: usize,
) -> Vec<Option<(usize, usize, f32, f32)>> {
    (0..size)
        .map(|x| tap((origin_mm + (x as f32 + 0.5) * pixel_mm) / spacing, n))
        .collect()
}

/// Linear taps at the continuous index `src` of an axis of `n` samples;
/// None outside the half-sample border.
fn tap(src: f32, n: usize) -> Option<(usize, usize, f32, f32)> {
    let last = n as f32 - 1.0;
    if !(-0.5..=last + 0.5).contains(&src) {
        return None;
    }
    let s = src.clamp(0.0, last);
    let i0 = (s.floor() as usize).min(n - 1);
    let i1 = (i0 + 1).min(n - 1);
    let l1 = s - i0 as f32;
    Some((i0, i1, 1.0 - l1, l1))
}

/// The slice-axis taps of a channel at `t + offset_mm / spacing`, clamped to
/// the volume (edges replicated, as the stretched input did).
pub(crate) fn slice_taps(
    t: usize,
    n: usize,
    spacing: f32,
    offset_mm: f32,
) -> (usize, usize, f32, f32) {
    let last = n as f32 - 1.0;
    let s = (t as f32 + offset_mm / spacing).clamp(0.0, last);
    let i0 = (s.floor() as usize).min(n - 1);
    let i1 = (i0 + 1).min(n - 1);
    let l1 = s - i0 as f32;
    (i0, i1, 1.0 - l1, l1)
}

/// One plane's sampling geometry, shared by every slice and tile.
pub struct PlaneSampler {
    pub plane: Plane,
    pub dims: [usize; 3],
    pub spacing: [f32; 3],
    pub canvas: Canvas,
    /// Canvas width (u) and height (v) in pixels: `canvas.size` each, or
    /// fitted to the plane ([`fitted_tiles`]).
    pub nx: usize,
    pub ny: usize,
    pub tiles: Vec<Tile>,
    /// Per tile: u taps and v taps of the canvas on the slice.
    taps: Vec<(TapList, TapList)>,
    /// Per tile: u taps and v taps of the slice grid on the canvas.
    back: Vec<(TapList, TapList)>,
}

type TapList = Vec<Option<(usize, usize, f32, f32)>>;

impl PlaneSampler {
    /// Square `canvas.size` tiles (as the training data are cut).
    pub fn new(
        plane: Plane,
        dims: [usize; 3],
        spacing: [f32; 3],
        canvas: Canvas,
        tiles: Vec<Tile>,
    ) -> Self {
        Self::with_size(
            plane,
            dims,
            spacing,
            canvas,
            (canvas.size, canvas.size),
            tiles,
        )
    }

    /// Tiles of `nx` x `ny` canvas pixels (u, v).
    pub fn with_size(
        plane: Plane,
        dims: [usize; 3],
        spacing: [f32; 3],
        canvas: Canvas,
        (nx, ny): (usize, usize),
        tiles: Vec<Tile>,
    ) -> Self {
        let (_, ua, va) = plane.axes();
        let taps = tiles
            .iter()
            .map(|t| {
                (
                    canvas_taps(dims[ua], spacing[ua], t.u0_mm, canvas.pixel_mm, nx),
                    canvas_taps(dims[va], spacing[va], t.v0_mm, canvas.pixel_mm, ny),
                )
            })
            .collect();
        // Slice pixel i sits at canvas position (i * spacing - origin) / p - 0.5.
        let back_taps = |n_img: usize, spacing: f32, origin: f32, n_canvas: usize| -> TapList {
            (0..n_img)
                .map(|i| {
                    tap(
                        (i as f32 * spacing - origin) / canvas.pixel_mm - 0.5,
                        n_canvas,
                    )
                })
                .collect()
        };
        let back = tiles
            .iter()
            .map(|t| {
                (
                    back_taps(dims[ua], spacing[ua], t.u0_mm, nx),
                    back_taps(dims[va], spacing[va], t.v0_mm, ny),
                )
            })
            .collect();
        PlaneSampler {
            plane,
            dims,
            spacing,
            canvas,
            nx,
            ny,
            tiles,
            taps,
            back,
        }
    }

    /// Network input of slice `t` in tile `tile`: channels at
    /// -neighbor_mm, 0, +neighbor_mm along the slice normal; (3, ny, nx).
    pub fn input(&self, win: &[f32], t: usize, tile: usize) -> Vec<f32> {
        let (sa, ua, va) = self.plane.axes();
        let d = self.dims;
        let stride = [1, d[0], d[0] * d[1]];
        let (nx, ny) = (self.nx, self.ny);
        let (tu, tv) = &self.taps[tile];
        let mut out = vec![0f32; 3 * nx * ny];
        let nb = self.canvas.neighbor_mm;
        for (c, off) in [-nb, 0.0, nb].into_iter().enumerate() {
            let (k0, k1, wk0, wk1) = slice_taps(t, d[sa], self.spacing[sa], off);
            let at = |k: usize, u: usize, v: usize| {
                win[k * stride[sa] + u * stride[ua] + v * stride[va]]
            };
            let dst = &mut out[c * nx * ny..(c + 1) * nx * ny];
            for (y, tvy) in tv.iter().enumerate() {
                let Some((v0, v1, lv0, lv1)) = *tvy else {
                    continue;
                };
                for (x, tux) in tu.iter().enumerate() {
                    let Some((u0, u1, lu0, lu1)) = *tux else {
                        continue;
                    };
                    let bil = |k: usize| {
                        let t0 = at(k, u0, v0) * lu0 + at(k, u1, v0) * lu1;
                        let t1 = at(k, u0, v1) * lu0 + at(k, u1, v1) * lu1;
                        t0 * lv0 + t1 * lv1
                    };
                    dst[y * nx + x] = if wk1 == 0.0 {
                        bil(k0)
                    } else {
                        bil(k0) * wk0 + bil(k1) * wk1
                    };
                }
            }
        }
        out
    }

    /// Probability of canvas image `prob` (ny x nx) of tile `tile` at
    /// each pixel (u, v) of the slice grid, 0 outside the tile; the maximum
    /// is kept in `acc` (nu x nv, row v).
    pub(crate) fn back_max(&self, prob: &[f32], tile: usize, acc: &mut [f32]) {
        let nu = self.dims[self.plane.axes().1];
        let size = self.nx;
        let (tu, tv) = &self.back[tile];
        for (v, tvv) in tv.iter().enumerate() {
            let Some((y0, y1, ly0, ly1)) = *tvv else {
                continue;
            };
            for (u, tuu) in tu.iter().enumerate() {
                let Some((x0, x1, lx0, lx1)) = *tuu else {
                    continue;
                };
                let t0 = prob[y0 * size + x0] * lx0 + prob[y0 * size + x1] * lx1;
                let t1 = prob[y1 * size + x0] * lx0 + prob[y1 * size + x1] * lx1;
                let val = t0 * ly0 + t1 * ly1;
                let a = &mut acc[v * nu + u];
                if val > *a {
                    *a = val;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_centre_when_they_fit_and_cover_when_they_do_not() {
        assert_eq!(axis_tiles(0.0, 100.0, 400.0), vec![-150.0]);
        let t = axis_tiles(0.0, 1000.0, 400.0);
        // (1000 - 400) / 300 = 2 steps -> 3 windows, first at lo, last ending at hi.
        assert_eq!(t.len(), 3);
        assert_eq!(t[0], 0.0);
        assert!((t[2] + 400.0 - 1000.0).abs() < 1e-3);
        for w in t.windows(2) {
            assert!(w[1] - w[0] <= 0.75 * 400.0 + 1e-3, "overlap kept");
        }
    }

    #[test]
    fn same_physical_scale_whatever_the_voxel_size() {
        // A 60 mm wide bright square on a 0.75 mm grid and on a 3 mm grid
        // covers the same number of canvas pixels (2 mm each): 30.
        let canvas = Canvas {
            size: 64,
            pixel_mm: 2.0,
            neighbor_mm: 0.0,
        };
        for sp in [0.75f32, 3.0] {
            let n = (120.0 / sp) as usize;
            let dims = [n, n, 1];
            let mut win = vec![0f32; n * n];
            for j in 0..n {
                for i in 0..n {
                    let (x, y) = (i as f32 * sp, j as f32 * sp);
                    if (30.0..90.0).contains(&x) && (30.0..90.0).contains(&y) {
                        win[j * n + i] = 1.0;
                    }
                }
            }
            let tiles = plane_tiles(&canvas, (0.0, 120.0 - sp), (0.0, 120.0 - sp));
            assert_eq!(tiles.len(), 1);
            let s = PlaneSampler::new(Plane::Axial, dims, [sp, sp, 1.0], canvas, tiles);
            let img = s.input(&win, 0, 0);
            let row = &img[32 * 64..33 * 64];
            let bright = row.iter().filter(|&&v| v >= 0.5).count();
            assert!((29..=31).contains(&bright), "spacing {sp}: {bright} px");
            // Outside the image: padded with 0.
            assert_eq!(img[0], 0.0);
        }
    }

    #[test]
    fn neighbour_channels_sit_at_a_distance_in_mm() {
        // Slices carry their own z (mm) as value: channel values are the
        // neighbour positions, whatever the slice spacing.
        let canvas = Canvas {
            size: 8,
            pixel_mm: 1.0,
            neighbor_mm: 3.0,
        };
        for dz in [1.0f32, 1.5, 5.0] {
            let dims = [8, 8, 12];
            let win: Vec<f32> = (0..8 * 8 * 12).map(|v| (v / 64) as f32 * dz).collect();
            let s = PlaneSampler::new(
                Plane::Axial,
                dims,
                [1.0, 1.0, dz],
                canvas,
                vec![Tile {
                    u0_mm: 0.0,
                    v0_mm: 0.0,
                }],
            );
            let t = 6;
            let x = s.input(&win, t, 0);
            let z = t as f32 * dz;
            let lo = (z - 3.0).max(0.0);
            let hi = (z + 3.0).min(11.0 * dz);
            assert!((x[0] - lo).abs() < 1e-4, "dz {dz}: {} vs {lo}", x[0]);
            assert!((x[64] - z).abs() < 1e-4);
            assert!((x[128] - hi).abs() < 1e-4, "dz {dz}: {} vs {hi}", x[128]);
        }
    }

    #[test]
    fn back_projection_returns_the_input_geometry() {
        // A canvas image made from a slice maps back onto the same pixels.
        let canvas = Canvas {
            size: 48,
            pixel_mm: 1.5,
            neighbor_mm: 0.0,
        };
        let (n, sp) = (40usize, 2.0f32);
        let mut win = vec![0f32; n * n];
        for j in 10..20 {
            for i in 25..33 {
                win[j * n + i] = 1.0;
            }
        }
        let tiles = plane_tiles(&canvas, (0.0, 78.0), (0.0, 78.0));
        let s = PlaneSampler::new(Plane::Axial, [n, n, 1], [sp, sp, 1.0], canvas, tiles);
        let img = s.input(&win, 0, 0);
        let mut acc = vec![0f32; n * n];
        s.back_max(&img[..48 * 48], 0, &mut acc);
        let back: Vec<bool> = acc.iter().map(|&v| v >= 0.5).collect();
        let truth: Vec<bool> = win.iter().map(|&v| v >= 0.5).collect();
        let diff = back.iter().zip(&truth).filter(|(a, b)| a != b).count();
        assert!(diff <= 4, "{diff} pixels differ");
    }

    #[test]
    fn a_fitted_canvas_covers_the_body_in_one_window_up_to_its_limit() {
        let fit = CanvasFit {
            min_px: 256,
            max_px: 384,
        };
        // A body 490 mm wide (arms down) at 1.6 mm: 307 pixels -> one window of 320,
        // centred; the square 256-pixel canvas (410 mm) needs two.
        let (px, w) = fitted_axis(-5.0, 485.0, 1.6, fit);
        assert_eq!((px, w.len()), (320, 1));
        assert!(
            (w[0] + 0.5 * 320.0 * 1.6 - 240.0).abs() < 1e-3,
            "centred: {w:?}"
        );
        assert_eq!(axis_tiles(-5.0, 485.0, 256.0 * 1.6).len(), 2);
        // Narrower than min_px: min_px, as trained.
        assert_eq!(fitted_axis(0.0, 200.0, 1.6, fit).0, 256);
        let small = CanvasFit { min_px: 100, ..fit };
        // 125 px -> 128 (multiples of 32 whatever min_px says).
        assert_eq!(fitted_axis(0.0, 200.0, 1.6, small).0, 128);
        assert_eq!(fitted_axis(0.0, 100.0, 1.6, small).0, 128);
        // Wider than max_px: windows of max_px, overlapping, first at lo, last ending at hi.
        let (px, w) = fitted_axis(0.0, 1000.0, 1.6, fit);
        assert_eq!(px, 384);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0], 0.0);
        assert!((w[1] + 384.0 * 1.6 - 1000.0).abs() < 1e-3);
        // Both axes: width (u) and height (v) each fitted.
        let canvas = Canvas {
            size: 256,
            pixel_mm: 1.6,
            neighbor_mm: 2.5,
        };
        let (nx, ny, tiles) = fitted_tiles(&canvas, fit, (-5.0, 485.0), (0.0, 300.0));
        assert_eq!((nx, ny, tiles.len()), (320, 256, 1));
    }

    #[test]
    fn a_wide_canvas_maps_back_onto_the_slice() {
        // As back_projection_returns_the_input_geometry, on a 64 x 32 canvas.
        let canvas = Canvas {
            size: 32,
            pixel_mm: 1.5,
            neighbor_mm: 0.0,
        };
        let (nu, nv, sp) = (44usize, 20usize, 2.0f32);
        let mut win = vec![0f32; nu * nv];
        for j in 5..12 {
            for i in 30..40 {
                win[j * nu + i] = 1.0;
            }
        }
        let tile = Tile {
            u0_mm: -2.0,
            v0_mm: -4.0,
        };
        let s = PlaneSampler::with_size(
            Plane::Axial,
            [nu, nv, 1],
            [sp, sp, 1.0],
            canvas,
            (64, 32),
            vec![tile],
        );
        let img = s.input(&win, 0, 0);
        assert_eq!(img.len(), 3 * 64 * 32);
        let mut acc = vec![0f32; nu * nv];
        s.back_max(&img[..64 * 32], 0, &mut acc);
        let diff = acc
            .iter()
            .zip(&win)
            .filter(|(a, b)| (**a >= 0.5) != (**b >= 0.5))
            .count();
        assert!(diff <= 4, "{diff} pixels differ");
        // The object's right edge (u = 39 x 2 mm = 78 mm) is on the canvas beyond
        // 256 pixels' worth of a square 32-pixel canvas (48 mm).
        assert!(acc[8 * nu + 39] >= 0.5);
    }

    #[test]
    fn body_box_finds_the_body() {
        let dims = [6, 5, 4];
        let mut ct = vec![-1000f32; 120];
        ct[2 + 6 * 3 + 30] = 40.0;
        ct[4 + 6 + 30 * 2] = 40.0;
        assert_eq!(body_box(&ct, dims), Some([(2, 4), (1, 3), (1, 2)]));
        assert_eq!(body_box(&vec![-1000f32; 120], dims), None);
    }
}
