//! Small 3-D helpers for the phantom: rotations, rigid poses, capsules.

use crate::volume::{cross, dot, Vec3};

pub(crate) type Mat3 = [[f64; 3]; 3];

pub(crate) const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

pub fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// Matrix times vector.
pub(crate) fn mul(m: &Mat3, v: Vec3) -> Vec3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}
/// Transpose(matrix) times vector.
pub(crate) fn mul_t(m: &Mat3, v: Vec3) -> Vec3 {
    [
        m[0][0] * v[0] + m[1][0] * v[1] + m[2][0] * v[2],
        m[0][1] * v[0] + m[1][1] * v[1] + m[2][1] * v[2],
        m[0][2] * v[0] + m[1][2] * v[1] + m[2][2] * v[2],
    ]
}
pub fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, x) in row.iter_mut().enumerate() {
            *x = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    m
}

/// Rotation from Euler angles (degrees) about x, then y, then z (R = Rz Ry Rx).
pub(crate) fn rotation_deg(rx: f64, ry: f64, rz: f64) -> Mat3 {
    let (sx, cx) = rx.to_radians().sin_cos();
    let (sy, cy) = ry.to_radians().sin_cos();
    let (sz, cz) = rz.to_radians().sin_cos();
    let mx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
    let my = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
    let mz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
    matmul(&mz, &matmul(&my, &mx))
}

/// Rigid placement of the body in scanner (patient LPS) space:
/// `world = rot * body + shift`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pose {
    pub rot: Mat3,
    pub shift: Vec3,
}

impl Pose {
    pub fn identity() -> Self {
        Pose {
            rot: IDENTITY,
            shift: [0.0; 3],
        }
    }
    pub(crate) fn to_world(&self, b: Vec3) -> Vec3 {
        add(mul(&self.rot, b), self.shift)
    }
    pub(crate) fn to_body(&self, w: Vec3) -> Vec3 {
        mul_t(&self.rot, sub(w, self.shift))
    }
    /// `self` applied after `inner`: world = self(inner(body)).
    pub(crate) fn compose(&self, inner: &Pose) -> Pose {
        Pose {
            rot: matmul(&self.rot, &inner.rot),
            shift: self.to_world(inner.shift),
        }
    }
}

/// Squared distance from `p` to the segment a-b and the parameter (0..1) of the
/// closest point.
pub(crate) fn segment_dist2(p: Vec3, a: Vec3, b: Vec3) -> (f64, f64) {
    let ab = sub(b, a);
    let l2 = dot(ab, ab);
    let t = if l2 > 0.0 {
        (dot(sub(p, a), ab) / l2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let c = add(a, scale(ab, t));
    let d = sub(p, c);
    (dot(d, d), t)
}

/// Unit vector (or x if degenerate).
pub fn unit(v: Vec3) -> Vec3 {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        scale(v, 1.0 / n)
    } else {
        [1.0, 0.0, 0.0]
    }
}

/// A right-handed frame whose third axis is `z`.
pub fn frame_from_z(z: Vec3) -> Mat3 {
    let z = unit(z);
    let helper = if z[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let x = unit(cross(helper, z));
    let y = cross(z, x);
    // Columns x, y, z.
    [[x[0], y[0], z[0]], [x[1], y[1], z[1]], [x[2], y[2], z[2]]]
}
