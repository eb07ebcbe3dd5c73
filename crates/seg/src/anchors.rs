//! torchvision AnchorGenerator: one size per level, all aspect ratios,
//! anchors ordered (y, x, ratio) to match the RPN head's flattening.

use super::boxes::BoxF;

/// Zero-centred base anchors of one level, rounded half-to-even as torch.round.
pub(crate) fn base_anchors(size: f32, ratios: &[f32]) -> Vec<BoxF> {
    ratios
        .iter()
        .map(|&r| {
            let hr = r.sqrt();
            let wr = 1.0 / hr;
            let ws = wr * size;
            let hs = hr * size;
            [
                (-ws / 2.0).round_ties_even(),
                (-hs / 2.0).round_ties_even(),
                (ws / 2.0).round_ties_even(),
                (hs / 2.0).round_ties_even(),
            ]
        })
        .collect()
}

/// Anchors for a feature map of (fh, fw) on a padded batch image of (ih, iw).
pub(crate) fn grid_anchors(
    size: f32,
    ratios: &[f32],
    fh: usize,
    fw: usize,
    ih: usize,
    iw: usize,
) -> Vec<BoxF> {
    let base = base_anchors(size, ratios);
    // torchvision: stride = image_size // feature_size (integer division).
    let sy = (ih / fh.max(1)) as f32;
    let sx = (iw / fw.max(1)) as f32;
    let mut out = Vec::with_capacity(fh * fw * base.len());
    for y in 0..fh {
        for x in 0..fw {
            let (ox, oy) = (x as f32 * sx, y as f32 * sy);
            for b in &base {
                out.push([ox + b[0], oy + b[1], ox + b[2], oy + b[3]]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_base_anchors_for_32() {
        // torchvision AnchorGenerator((32,), (0.5, 1, 2)) cell anchors.
        let b = base_anchors(32.0, &[0.5, 1.0, 2.0]);
        assert_eq!(b[0], [-23.0, -11.0, 23.0, 11.0]);
        assert_eq!(b[1], [-16.0, -16.0, 16.0, 16.0]);
        assert_eq!(b[2], [-11.0, -23.0, 11.0, 23.0]);
    }
}
