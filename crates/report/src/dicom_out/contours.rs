//! Closed contours of a binary slice mask, for RT Structure Sets.
//!
//! The contours follow the pixel edges between mask and background (the
//! marching-squares equivalent for a binary image that keeps the area): each
//! island gives one outer loop and each hole one inner loop. Read with the
//! even-odd rule (how RT systems combine several contours of one ROI on one
//! slice), the loops enclose exactly the pixel centres of the mask, and the
//! enclosed area is the mask's pixel count, so a TPS computes the same volume.
//! Diagonal neighbours are kept apart (4-connected islands), so no loop touches
//! itself.

/// A closed polygon in pixel coordinates: (column, row) of pixel centres, so a
/// vertex on a pixel corner has half-integer coordinates.
pub(crate) type Contour = Vec<[f64; 2]>;

/// Contours of `mask` (`w` columns by `h` rows, row-major, true inside).
pub fn trace(mask: &[bool], w: usize, h: usize) -> Vec<Contour> {
    debug_assert_eq!(mask.len(), w * h);
    let inside = |x: isize, y: isize| -> bool {
        x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && mask[x as usize + w * y as usize]
    };
    // Corner (x, y), 0..=w by 0..=h, is the top-left corner of pixel (x, y).
    let cw = w + 1;
    let corner = |x: usize, y: usize| x + cw * y;
    // Directed boundary edges with the mask on the left-hand side (walking in image
    // coordinates, rows downwards): up to two leave a corner (a diagonal saddle).
    let mut edges: Vec<(usize, usize)> = Vec::new();
    let mut out: Vec<[u32; 2]> = vec![[u32::MAX; 2]; cw * (h + 1)];
    let mut add = |from: usize, to: usize, edges: &mut Vec<(usize, usize)>| {
        let slot = &mut out[from];
        let id = edges.len() as u32;
        if slot[0] == u32::MAX {
            slot[0] = id;
        } else {
            slot[1] = id;
        }
        edges.push((from, to));
    };
    for y in 0..h {
        for x in 0..w {
            if !mask[x + w * y] {
                continue;
            }
            let (xi, yi) = (x as isize, y as isize);
            if !inside(xi - 1, yi) {
                add(corner(x, y), corner(x, y + 1), &mut edges);
            }
            if !inside(xi, yi + 1) {
                add(corner(x, y + 1), corner(x + 1, y + 1), &mut edges);
            }
            if !inside(xi + 1, yi) {
                add(corner(x + 1, y + 1), corner(x + 1, y), &mut edges);
            }
            if !inside(xi, yi - 1) {
                add(corner(x + 1, y), corner(x, y), &mut edges);
            }
        }
    }
    let xy = |c: usize| ((c % cw) as i64, (c / cw) as i64);
    let dir = |e: (usize, usize)| {
        let (a, b) = (xy(e.0), xy(e.1));
        (b.0 - a.0, b.1 - a.1)
    };
    let mut used = vec![false; edges.len()];
    let mut contours = Vec::new();
    for start in 0..edges.len() {
        if used[start] {
            continue;
        }
        let mut loop_corners: Vec<usize> = Vec::new();
        let mut e = start;
        loop {
            used[e] = true;
            loop_corners.push(edges[e].0);
            let here = edges[e].1;
            let (dx, dy) = dir(edges[e]);
            let slot = out[here];
            let next = if slot[1] == u32::MAX {
                slot[0]
            } else {
                // Saddle: turn left (towards the mask side), so the loop hugs the
                // pixel it came along and diagonal neighbours stay separate.
                // Left of (dx, dy) in rows-down coordinates is (dy, -dx).
                let left = (dy, -dx);
                if dir(edges[slot[0] as usize]) == left {
                    slot[0]
                } else {
                    slot[1]
                }
            };
            if next == u32::MAX {
                // Cannot happen for a closed boundary; stop rather than loop.
                break;
            }
            e = next as usize;
            if e == start || used[e] {
                break;
            }
        }
        contours.push(simplify(&loop_corners, cw));
    }
    contours
}

/// Corner indices to pixel-centre coordinates, dropping vertices in the middle of
/// a straight run.
fn simplify(corners: &[usize], cw: usize) -> Contour {
    let n = corners.len();
    let p = |k: usize| {
        let c = corners[k % n];
        ((c % cw) as i64, (c / cw) as i64)
    };
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let (a, b, c) = (p(k + n - 1), p(k), p(k + 1));
        let (d1, d2) = ((b.0 - a.0, b.1 - a.1), (c.0 - b.0, c.1 - b.1));
        if d1.0 * d2.1 - d1.1 * d2.0 != 0 {
            out.push([b.0 as f64 - 0.5, b.1 as f64 - 0.5]);
        }
    }
    out
}

/// Even-odd point-in-polygon test over several contours (what RT systems do).
pub fn inside_even_odd(contours: &[Contour], x: f64, y: f64) -> bool {
    let mut inside = false;
    for c in contours {
        let n = c.len();
        for k in 0..n {
            let (a, b) = (c[k], c[(k + 1) % n]);
            if (a[1] > y) != (b[1] > y) {
                let xc = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                if x < xc {
                    inside = !inside;
                }
            }
        }
    }
    inside
}

/// Signed area (shoelace): negative for islands, positive for holes.
pub fn area(c: &Contour) -> f64 {
    let n = c.len();
    (0..n)
        .map(|k| {
            let (a, b) = (c[k], c[(k + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_exact(mask: &[bool], w: usize, h: usize) -> Vec<Contour> {
        let cs = trace(mask, w, h);
        for y in 0..h {
            for x in 0..w {
                assert_eq!(
                    inside_even_odd(&cs, x as f64, y as f64),
                    mask[x + w * y],
                    "pixel ({x}, {y})"
                );
            }
        }
        let count = mask.iter().filter(|&&m| m).count() as f64;
        let a: f64 = cs.iter().map(area).sum();
        assert!((a.abs() - count).abs() < 1e-9, "area {a} vs {count} pixels");
        cs
    }

    #[test]
    fn square_with_hole_and_island_and_diagonal_touch() {
        let (w, h) = (12, 9);
        let mut m = vec![false; w * h];
        // 5x5 square with a 1x1 hole in the middle.
        for y in 1..6 {
            for x in 1..6 {
                m[x + w * y] = true;
            }
        }
        m[3 + w * 3] = false;
        // A separate island, and two pixels touching only at a corner.
        m[9 + w * 2] = true;
        m[8 + w * 7] = true;
        m[9 + w * 8] = true;
        let cs = check_exact(&m, w, h);
        // Outer square, its hole, the island, and the two diagonal pixels.
        assert_eq!(cs.len(), 5, "{cs:?}");
        // Islands run one way round (negative area in rows-down coordinates), the
        // hole the other.
        assert_eq!(cs.iter().filter(|c| area(c) > 0.0).count(), 1);
    }

    #[test]
    fn random_masks_are_reproduced_exactly() {
        let (w, h) = (23, 17);
        let mut s: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..40 {
            let m: Vec<bool> = (0..w * h)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s % 100 < 45
                })
                .collect();
            check_exact(&m, w, h);
        }
    }
}
