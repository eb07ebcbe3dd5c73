//! Damaging label maps on purpose, for the tests of the review gates.

use organdose::Volume;

/// Removes label `lab` from the lower half of the slices that hold it.
pub fn remove_lower_half(l: &mut Volume<u8>, lab: u8) {
    let [nx, ny, nz] = l.geom.dims;
    let ks: Vec<usize> = (0..nz)
        .filter(|&z| (0..nx * ny).any(|i| l.data[z * nx * ny + i] == lab))
        .collect();
    let (Some(&first), Some(&last)) = (ks.first(), ks.last()) else {
        return;
    };
    for z in first..=(first + last) / 2 {
        for v in &mut l.data[z * nx * ny..(z + 1) * nx * ny] {
            if *v == lab {
                *v = 0;
            }
        }
    }
}
