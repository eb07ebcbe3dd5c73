//! A correction's ROIs on a CT's voxel grid.
//!
//! Contours: the inverse of how organdose writes them
//! (`report::dicom_out::contours`): every point goes to continuous voxel
//! indices; the contour's slice is the nearest one to its points' mean index
//! along the slice axis (the z of the points, never the order of the items);
//! a voxel is inside when its centre is inside under the even-odd rule over all
//! of the ROI's contours on that slice, so a contour inside another is a hole
//! and separate contours are islands. organdose's own contours run along pixel
//! edges (half-integer indices) and enclose exactly the pixel centres of the
//! mask they came from, so write -> read gives the mask back.
//!
//! SEG frames: each frame is placed by its own position, orientation and pixel
//! spacing; a voxel of the frame's nearest slice takes the value of the frame
//! pixel nearest to its centre (frames on the CT's own grid map one to one).

use super::{Frame, Geometry as RoiGeometry, Roi};
use crate::volume::{cross, dot, Geometry};
use std::collections::BTreeMap;

/// How far (in slices) a contour's points may spread along the slice axis and
/// still be taken as lying in one slice.
const PLANAR_TOL_SLICES: f64 = 0.5;
/// Smallest |cos| between a SEG frame's normal and the CT's slice axis.
const PARALLEL_COS: f64 = 0.99;

/// The ROI's voxels on `geom` (i fastest, as [`crate::volume::Volume`]), and
/// notes about geometry that could not be placed.
pub fn rasterise(roi: &Roi, geom: &Geometry) -> (Vec<bool>, Vec<String>) {
    let mut mask = vec![false; geom.len()];
    let mut notes = Vec::new();
    match &roi.geometry {
        RoiGeometry::Contours(cs) => contours(cs, geom, &mut mask, &mut notes, &roi.name),
        RoiGeometry::Frames(fs) => {
            for f in fs {
                if let Err(why) = frame(f, geom, &mut mask) {
                    notes.push(format!("ROI '{}': a frame {why}: left out", roi.name));
                }
            }
        }
    }
    (mask, notes)
}

fn contours(
    cs: &[Vec<[f64; 3]>],
    geom: &Geometry,
    mask: &mut [bool],
    notes: &mut Vec<String>,
    name: &str,
) {
    let [nx, ny, nz] = geom.dims;
    let mut by_slice: BTreeMap<usize, Vec<Vec<[f64; 2]>>> = BTreeMap::new();
    let (mut oblique, mut outside) = (0usize, 0usize);
    for c in cs {
        let idx: Vec<[f64; 3]> = c.iter().map(|&p| geom.patient_to_index(p)).collect();
        let (lo, hi) = idx
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p[2]), hi.max(p[2]))
            });
        if hi - lo > PLANAR_TOL_SLICES {
            oblique += 1;
            continue;
        }
        let k = (idx.iter().map(|p| p[2]).sum::<f64>() / idx.len() as f64).round();
        if !(k >= 0.0 && k < nz as f64) {
            outside += 1;
            continue;
        }
        by_slice
            .entry(k as usize)
            .or_default()
            .push(idx.iter().map(|p| [p[0], p[1]]).collect());
    }
    if oblique > 0 {
        notes.push(format!(
            "ROI '{name}': {oblique} contour(s) not in a CT slice plane: left out"
        ));
    }
    if outside > 0 {
        notes.push(format!(
            "ROI '{name}': {outside} contour(s) beyond the CT's slices: left out"
        ));
    }
    let mut xs: Vec<f64> = Vec::new();
    for (k, polys) in by_slice {
        let (ylo, yhi) = polys
            .iter()
            .flatten()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p[1]), hi.max(p[1]))
            });
        let j0 = ylo.ceil().max(0.0) as usize;
        let j1 = (yhi.floor().min(ny as f64 - 1.0)).max(-1.0);
        if j1 < 0.0 {
            continue;
        }
        for j in j0..=(j1 as usize) {
            let y = j as f64;
            xs.clear();
            for poly in &polys {
                let n = poly.len();
                for e in 0..n {
                    let (a, b) = (poly[e], poly[(e + 1) % n]);
                    // The same half-open rule as contours::inside_even_odd, so a
                    // vertex on the scan line is counted once.
                    if (a[1] > y) != (b[1] > y) {
                        xs.push(a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]));
                    }
                }
            }
            xs.sort_by(f64::total_cmp);
            // Pixel i is inside when an odd number of crossings lie right of it:
            // x[2m] <= i < x[2m+1].
            for pair in xs.chunks_exact(2) {
                let i0 = pair[0].ceil().max(0.0);
                let i1 = pair[1].ceil().min(nx as f64);
                if i1 <= i0 {
                    continue;
                }
                for i in i0 as usize..i1 as usize {
                    mask[geom.linear(i, j, k)] = true;
                }
            }
        }
    }
}

fn frame(f: &Frame, geom: &Geometry, mask: &mut [bool]) -> Result<(), String> {
    let [nx, ny, nz] = geom.dims;
    let normal = cross(f.row_dir, f.col_dir);
    if dot(normal, geom.direction[2]).abs() < PARALLEL_COS {
        return Err("is not parallel to the CT's slices".into());
    }
    if f.inside.len() != f.rows * f.columns {
        return Err("has a pixel count that differs from its size".into());
    }
    let k = geom.patient_to_index(f.position)[2].round();
    if !(k >= 0.0 && k < nz as f64) {
        return Err("lies beyond the CT's slices".into());
    }
    let k = k as usize;
    if !f.inside.iter().any(|&b| b) {
        return Ok(());
    }
    let (dr, dc) = (f.pixel_spacing[0], f.pixel_spacing[1]);
    for j in 0..ny {
        for i in 0..nx {
            let p = geom.index_to_patient([i as f64, j as f64, k as f64]);
            let d = [
                p[0] - f.position[0],
                p[1] - f.position[1],
                p[2] - f.position[2],
            ];
            let u = (dot(d, f.row_dir) / dc).round();
            let v = (dot(d, f.col_dir) / dr).round();
            if u >= 0.0
                && v >= 0.0
                && (u as usize) < f.columns
                && (v as usize) < f.rows
                && f.inside[u as usize + f.columns * v as usize]
            {
                mask[geom.linear(i, j, k)] = true;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Geometry {
        // 2 mm pixels, 3 mm slices, origin off zero, as a CT would be.
        Geometry::new([40, 30, 10], [2.0, 2.0, 3.0], [-40.0, -30.0, 100.0])
    }

    /// A square in voxel index coordinates (corners at half-integers) on slice k,
    /// as patient points.
    fn square(g: &Geometry, i0: f64, j0: f64, i1: f64, j1: f64, k: f64) -> Vec<[f64; 3]> {
        [[i0, j0], [i1, j0], [i1, j1], [i0, j1]]
            .iter()
            .map(|&[i, j]| g.index_to_patient([i, j, k + 0.1]))
            .collect()
    }

    #[test]
    fn square_with_a_hole_and_an_island_gives_the_hand_counted_voxels() {
        let g = grid();
        // Outer: pixel centres 5..=14 x 5..=14 (10 x 10 = 100); hole 8..=10 x 8..=10
        // (3 x 3 = 9); island 20..=22 x 2..=3 (3 x 2 = 6): 97 voxels on slice 4.
        let roi = Roi {
            name: "Liver".into(),
            geometry: RoiGeometry::Contours(vec![
                square(&g, 4.5, 4.5, 14.5, 14.5, 4.0),
                square(&g, 7.5, 7.5, 10.5, 10.5, 4.0),
                square(&g, 19.5, 1.5, 22.5, 3.5, 4.0),
            ]),
        };
        let (m, notes) = rasterise(&roi, &g);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(m.iter().filter(|&&b| b).count(), 97);
        assert!(m[g.linear(5, 5, 4)] && !m[g.linear(9, 9, 4)] && m[g.linear(21, 3, 4)]);
        assert!(!m[g.linear(5, 5, 3)] && !m[g.linear(5, 5, 5)]);
    }

    #[test]
    fn contours_off_the_slices_or_oblique_are_left_out_with_a_note() {
        let g = grid();
        let mut tilted = square(&g, 4.5, 4.5, 8.5, 8.5, 2.0);
        tilted[2][2] += 6.0;
        let roi = Roi {
            name: "Spleen".into(),
            geometry: RoiGeometry::Contours(vec![square(&g, 4.5, 4.5, 8.5, 8.5, 12.0), tilted]),
        };
        let (m, notes) = rasterise(&roi, &g);
        assert!(!m.iter().any(|&b| b));
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn a_seg_frame_on_a_finer_grid_is_placed_by_its_own_geometry() {
        let g = grid();
        // Frame with 1 mm pixels starting at the voxel (10, 10) of slice 6; the
        // block 0..8 x 0..6 (mm) covers voxel centres 10..=13 x 10..=12 (4 x 3).
        let pos = g.index_to_patient([10.0, 10.0, 6.0]);
        let (rows, cols) = (20, 20);
        let mut inside = vec![false; rows * cols];
        for v in 0..6 {
            for u in 0..8 {
                inside[u + cols * v] = true;
            }
        }
        let f = Frame {
            position: pos,
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            pixel_spacing: [1.0, 1.0],
            rows,
            columns: cols,
            inside,
        };
        let roi = Roi {
            name: "Kidney_L".into(),
            geometry: RoiGeometry::Frames(vec![f]),
        };
        let (m, notes) = rasterise(&roi, &g);
        assert!(notes.is_empty());
        assert_eq!(m.iter().filter(|&&b| b).count(), 12);
        assert!(m[g.linear(10, 10, 6)] && m[g.linear(13, 12, 6)] && !m[g.linear(14, 10, 6)]);
    }
}
