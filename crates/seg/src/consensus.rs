//! Joining per-plane label maps: voxel majority vote, filling slices an organ
//! skips between slices that have it, connected components.
//!
//! Maps are class-index volumes (0 background) on the CT grid, linear index
//! i + nx * (j + ny * k).

/// Voxel majority vote: a voxel gets class c when at least `min_votes` maps say c.
pub(crate) fn majority_vote(maps: &[&[u8]], min_votes: usize) -> Vec<u8> {
    let n = maps.first().map_or(0, |m| m.len());
    let mut out = vec![0u8; n];
    for (v, o) in out.iter_mut().enumerate() {
        for (a, m) in maps.iter().enumerate() {
            let c = m[v];
            if c == 0 {
                continue;
            }
            // Count each class once, at its first map.
            if maps[..a].iter().any(|p| p[v] == c) {
                continue;
            }
            if maps.iter().filter(|p| p[v] == c).count() >= min_votes {
                *o = c;
                break;
            }
        }
    }
    out
}

/// Strides of axis `a` and the two others for dims (nx, ny, nz).
fn axis_layout(dims: [usize; 3], axis: usize) -> (usize, [usize; 2], [usize; 2]) {
    let stride = [1, dims[0], dims[0] * dims[1]];
    let o: Vec<usize> = (0..3).filter(|&x| x != axis).collect();
    (
        stride[axis],
        [dims[o[0]], dims[o[1]]],
        [stride[o[0]], stride[o[1]]],
    )
}

/// Where class `c` is absent on up to `max_gap` consecutive slices along
/// `axis` but present on both sides, fill those slices by linear
/// interpolation of the two neighbouring slices' masks (value >= 0.5).
/// Returns the number of slices filled.
pub(crate) fn fill_gaps(
    map: &mut [u8],
    dims: [usize; 3],
    axis: usize,
    c: u8,
    max_gap: usize,
) -> usize {
    let (st, [n0, n1], [s0, s1]) = axis_layout(dims, axis);
    let ns = dims[axis];
    let idx = |t: usize, a: usize, b: usize| t * st + a * s0 + b * s1;
    let present: Vec<bool> = (0..ns)
        .map(|t| (0..n0).any(|a| (0..n1).any(|b| map[idx(t, a, b)] == c)))
        .collect();
    let mut filled = 0;
    let mut t = 0;
    while t < ns {
        if present[t] {
            t += 1;
            continue;
        }
        let start = t;
        while t < ns && !present[t] {
            t += 1;
        }
        // Gap [start, t): needs a slice with c on both sides.
        if start == 0 || t == ns || t - start > max_gap {
            continue;
        }
        let (lo, hi) = (start - 1, t);
        for g in start..t {
            let w = (g - lo) as f32 / (hi - lo) as f32;
            for a in 0..n0 {
                for b in 0..n1 {
                    let m0 = (map[idx(lo, a, b)] == c) as u8 as f32;
                    let m1 = (map[idx(hi, a, b)] == c) as u8 as f32;
                    let v = idx(g, a, b);
                    if map[v] == 0 && (1.0 - w) * m0 + w * m1 >= 0.5 {
                        map[v] = c;
                    }
                }
            }
            filled += 1;
        }
    }
    filled
}

/// 6-connected components of voxels equal to `c`, largest first.
pub fn components(map: &[u8], dims: [usize; 3], c: u8) -> Vec<Vec<usize>> {
    let [nx, ny, nz] = dims;
    let mut seen = vec![false; map.len()];
    let mut comps = Vec::new();
    let mut stack = Vec::new();
    for s in 0..map.len() {
        if map[s] != c || seen[s] {
            continue;
        }
        let mut comp = Vec::new();
        seen[s] = true;
        stack.push(s);
        while let Some(v) = stack.pop() {
            comp.push(v);
            let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
            let mut visit = |u: usize| {
                if map[u] == c && !seen[u] {
                    seen[u] = true;
                    stack.push(u);
                }
            };
            if i > 0 {
                visit(v - 1);
            }
            if i + 1 < nx {
                visit(v + 1);
            }
            if j > 0 {
                visit(v - nx);
            }
            if j + 1 < ny {
                visit(v + nx);
            }
            if k > 0 {
                visit(v - nx * ny);
            }
            if k + 1 < nz {
                visit(v + nx * ny);
            }
        }
        comps.push(comp);
    }
    comps.sort_by_key(|c| std::cmp::Reverse(c.len()));
    comps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vote_needs_two_of_three() {
        let a = [1u8, 1, 2, 0];
        let b = [1u8, 0, 2, 2];
        let c = [0u8, 2, 1, 0];
        assert_eq!(majority_vote(&[&a, &b, &c], 2), vec![1, 0, 2, 0]);
    }

    #[test]
    fn gap_filled_by_interpolation_and_components_sorted() {
        // 3x3x5, class 1 on slices 0, 1 and 4 (a gap of two at 2, 3).
        let dims = [3, 3, 5];
        let mut m = vec![0u8; 45];
        for k in [0usize, 1, 4] {
            m[4 + 9 * k] = 1;
        }
        m[9 * 4] = 1;
        assert_eq!(fill_gaps(&mut m, dims, 2, 1, 1), 0, "gap too long");
        assert_eq!(fill_gaps(&mut m, dims, 2, 1, 2), 2);
        assert_eq!(m[4 + 18], 1);
        assert_eq!(m[4 + 27], 1);
        // The corner is only on slice 4: weight 2/3 on slice 3, 1/3 on slice 2.
        assert_eq!(m[27], 1);
        assert_eq!(m[18], 0);
        let comps = components(&m, dims, 1);
        assert_eq!(comps.len(), 2);
        assert_eq!(comps[0].len(), 5);
        assert_eq!(comps[1].len(), 2);
    }
}
