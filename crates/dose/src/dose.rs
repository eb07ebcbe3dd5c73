//! Absorbed dose: organ mean dose by local energy deposition, voxel dose map by
//! voxel-S-value (VSV) convolution, dose-volume histograms.
//!
//! Local energy deposition (MIRD, non-penetrating radiation): `D = TIA * E / m`, TIA in
//! decays (Bq s), E the electron energy per decay (J), m the mass (kg).
//!
//! # Kernel file format (text, version 1)
//! ```text
//! # organdose voxel S-value kernel v1
//! # voxel_mm: 4.42 4.42 4.42        (required: voxel size the kernel was computed for)
//! # unit: mGy/(MBq s)               (required: "mGy/(MBq s)" or "Gy/(Bq s)")
//! # symmetry: octant                (optional: "full" (default) or "octant")
//! # nuclide: Lu-177                 (optional, informative)
//! 0 0 0 2.05e-1
//! 1 0 0 1.41e-2
//! ...
//! ```
//! Every other `#` line is a comment. A data line is `di dj dk value` (whitespace or
//! commas): the dose to a voxel offset by (di, dj, dk) voxels from a source voxel per
//! decay there. Offsets not listed are 0. With `symmetry: octant` only offsets >= 0 are
//! given and each is mirrored to all sign combinations (published VSV tables, e.g.
//! Lanconelli et al. 2012, are given so). The kernel voxel size must equal the SPECT
//! voxel size within 2 % (no kernel resampling is done).
//!
//! The built-in `local` kernel is the delta kernel `S(0,0,0) = E / (rho * V_voxel)`:
//! convolving with it is exactly local energy deposition.

use crate::error::{Error, Result};
use crate::volume::Volume;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use serde::Serialize;
use std::path::Path;

/// Seconds per hour.
const S_PER_H: f64 = 3600.0;

/// Mean absorbed dose (Gy) by local energy deposition: `tia_mbq_h` MBq h of decays of
/// `energy_j` J each in `mass_g` grams.
pub(crate) fn local_deposition_gy(tia_mbq_h: f64, energy_j: f64, mass_g: f64) -> f64 {
    if mass_g <= 0.0 {
        return f64::NAN;
    }
    tia_mbq_h * 1e6 * S_PER_H * energy_j / (mass_g * 1e-3)
}

/// A voxel S-value kernel: `values[(di+rx) + (2rx+1)*((dj+ry) + (2ry+1)*(dk+rz))]` in
/// Gy per decay (Gy / (Bq s)).
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub radius: [usize; 3],
    pub voxel_mm: [f64; 3],
    pub values: Vec<f64>,
    /// Where it came from, for the report ("local (delta kernel)" or a file name).
    pub source: String,
}

impl Kernel {
    /// The delta kernel: all energy stays in the voxel of decay.
    pub fn delta(energy_j: f64, voxel_mm: [f64; 3], density_g_per_ml: f64) -> Self {
        let mass_kg = voxel_mm[0] * voxel_mm[1] * voxel_mm[2] / 1000.0 * density_g_per_ml * 1e-3;
        Kernel {
            radius: [0, 0, 0],
            voxel_mm,
            values: vec![energy_j / mass_kg],
            source: "local (delta kernel = local energy deposition)".into(),
        }
    }

    pub fn dims(&self) -> [usize; 3] {
        [
            2 * self.radius[0] + 1,
            2 * self.radius[1] + 1,
            2 * self.radius[2] + 1,
        ]
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut k = Self::parse(&text).map_err(|m| {
            Error::input(format!("{}: not a valid kernel file: {m}", path.display()))
        })?;
        k.source = path.display().to_string();
        Ok(k)
    }

    /// Parses the text format described in the module documentation.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut voxel_mm: Option<[f64; 3]> = None;
        let mut scale: Option<f64> = None;
        let mut octant = false;
        let mut entries: Vec<([i64; 3], f64)> = Vec::new();
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                if let Some((key, val)) = c.split_once(':') {
                    let val = val.trim();
                    match key.trim().to_ascii_lowercase().as_str() {
                        "voxel_mm" => {
                            let v: Vec<f64> = val
                                .split(|c: char| c.is_whitespace() || c == ',')
                                .filter(|s| !s.is_empty())
                                .map(|s| s.parse::<f64>())
                                .collect::<std::result::Result<_, _>>()
                                .map_err(|e| format!("line {}: voxel_mm: {e}", no + 1))?;
                            if v.len() != 3 || v.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                                return Err(format!(
                                    "line {}: voxel_mm needs 3 positive numbers",
                                    no + 1
                                ));
                            }
                            voxel_mm = Some([v[0], v[1], v[2]]);
                        }
                        "unit" => {
                            let u: String = val.chars().filter(|c| !c.is_whitespace()).collect();
                            scale = Some(match u.as_str() {
                                "mGy/(MBqs)" | "mGy/MBq/s" => 1e-9,
                                "Gy/(Bqs)" | "Gy/Bq/s" => 1.0,
                                _ => return Err(format!("line {}: unknown unit {val:?}", no + 1)),
                            });
                        }
                        "symmetry" => {
                            octant = match val.to_ascii_lowercase().as_str() {
                                "octant" => true,
                                "full" => false,
                                _ => {
                                    return Err(format!(
                                        "line {}: symmetry is full or octant",
                                        no + 1
                                    ))
                                }
                            }
                        }
                        _ => {}
                    }
                }
                continue;
            }
            let f: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .collect();
            if f.len() != 4 {
                return Err(format!("line {}: expected `di dj dk value`", no + 1));
            }
            let mut d = [0i64; 3];
            for a in 0..3 {
                d[a] = f[a]
                    .parse()
                    .map_err(|_| format!("line {}: offset {:?} is not an integer", no + 1, f[a]))?;
                if d[a].abs() > 64 {
                    return Err(format!("line {}: offset beyond 64 voxels", no + 1));
                }
            }
            let v: f64 = f[3]
                .parse()
                .map_err(|_| format!("line {}: value {:?} is not a number", no + 1, f[3]))?;
            if !v.is_finite() || v < 0.0 {
                return Err(format!("line {}: value must be finite and >= 0", no + 1));
            }
            if octant && d.iter().any(|&x| x < 0) {
                return Err(format!(
                    "line {}: octant kernels list offsets >= 0 only",
                    no + 1
                ));
            }
            entries.push((d, v));
        }
        let voxel_mm = voxel_mm.ok_or("missing `# voxel_mm:` header")?;
        let scale = scale.ok_or("missing `# unit:` header")?;
        if entries.is_empty() {
            return Err("no kernel values".into());
        }
        let mut radius = [0usize; 3];
        for (d, _) in &entries {
            for a in 0..3 {
                radius[a] = radius[a].max(d[a].unsigned_abs() as usize);
            }
        }
        let dims = [2 * radius[0] + 1, 2 * radius[1] + 1, 2 * radius[2] + 1];
        let mut values = vec![0.0; dims[0] * dims[1] * dims[2]];
        for (d, v) in &entries {
            let signs: &[i64] = if octant { &[1, -1] } else { &[1] };
            for &sx in signs {
                for &sy in signs {
                    for &sz in signs {
                        let o = [d[0] * sx, d[1] * sy, d[2] * sz];
                        let idx = (o[0] + radius[0] as i64) as usize
                            + dims[0]
                                * ((o[1] + radius[1] as i64) as usize
                                    + dims[1] * (o[2] + radius[2] as i64) as usize);
                        values[idx] = v * scale;
                    }
                }
            }
        }
        Ok(Kernel {
            radius,
            voxel_mm,
            values,
            source: String::new(),
        })
    }
}

/// Dose map (Gy) from a map of decays per voxel (`tia_bq_s`, Bq s in each voxel).
/// Direct product for a one-voxel kernel (exact), FFT convolution otherwise.
pub fn dose_map(tia_bq_s: &Volume<f64>, kernel: &Kernel) -> Result<Volume<f32>> {
    let g = &tia_bq_s.geom;
    for a in 0..3 {
        if (kernel.voxel_mm[a] - g.spacing[a]).abs() > 0.02 * g.spacing[a] {
            return Err(Error::input(format!(
                "kernel voxel size {:?} mm does not match the SPECT voxel size {:?} mm",
                kernel.voxel_mm, g.spacing
            )));
        }
    }
    let data: Vec<f64> = if kernel.values.len() == 1 {
        tia_bq_s
            .data
            .iter()
            .map(|&v| v * kernel.values[0])
            .collect()
    } else {
        fft_convolve(&tia_bq_s.data, g.dims, &kernel.values, kernel.radius)
    };
    Volume::new(g.clone(), data.into_iter().map(|v| v as f32).collect())
}

/// Linear 3-D convolution `out[v] = sum_u data[u] * k[v - u]` on the grid of `data`
/// (zero outside), by FFT on a grid padded by the kernel radius on each axis.
pub(crate) fn fft_convolve(
    data: &[f64],
    dims: [usize; 3],
    k: &[f64],
    radius: [usize; 3],
) -> Vec<f64> {
    let p = [
        dims[0] + radius[0],
        dims[1] + radius[1],
        dims[2] + radius[2],
    ];
    let n = p[0] * p[1] * p[2];
    let lin = |i: usize, j: usize, l: usize| i + p[0] * (j + p[1] * l);
    let mut a = vec![Complex::new(0.0, 0.0); n];
    for kk in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                a[lin(i, j, kk)].re = data[i + dims[0] * (j + dims[1] * kk)];
            }
        }
    }
    let kd = [2 * radius[0] + 1, 2 * radius[1] + 1, 2 * radius[2] + 1];
    let mut b = vec![Complex::new(0.0, 0.0); n];
    for dk in 0..kd[2] {
        for dj in 0..kd[1] {
            for di in 0..kd[0] {
                let o = [
                    di as i64 - radius[0] as i64,
                    dj as i64 - radius[1] as i64,
                    dk as i64 - radius[2] as i64,
                ];
                let w = |x: i64, m: usize| x.rem_euclid(m as i64) as usize;
                b[lin(w(o[0], p[0]), w(o[1], p[1]), w(o[2], p[2]))].re +=
                    k[di + kd[0] * (dj + kd[1] * dk)];
            }
        }
    }
    let mut planner = FftPlanner::<f64>::new();
    fft3(&mut a, p, &mut planner, false);
    fft3(&mut b, p, &mut planner, false);
    a.iter_mut().zip(&b).for_each(|(x, y)| *x *= *y);
    fft3(&mut a, p, &mut planner, true);
    let scale = 1.0 / n as f64;
    let mut out = vec![0.0; data.len()];
    for kk in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                out[i + dims[0] * (j + dims[1] * kk)] = a[lin(i, j, kk)].re * scale;
            }
        }
    }
    out
}

fn fft3(buf: &mut [Complex<f64>], p: [usize; 3], planner: &mut FftPlanner<f64>, inverse: bool) {
    let strides = [1, p[0], p[0] * p[1]];
    for axis in 0..3 {
        let len = p[axis];
        if len < 2 {
            continue;
        }
        let fft = if inverse {
            planner.plan_fft_inverse(len)
        } else {
            planner.plan_fft_forward(len)
        };
        if axis == 0 {
            fft.process(buf);
            continue;
        }
        let s = strides[axis];
        let mut line = vec![Complex::new(0.0, 0.0); len];
        for start in 0..buf.len() {
            // Line starts: index whose coordinate along `axis` is 0.
            if !(start / s).is_multiple_of(len) {
                continue;
            }
            for q in 0..len {
                line[q] = buf[start + q * s];
            }
            fft.process(&mut line);
            for q in 0..len {
                buf[start + q * s] = line[q];
            }
        }
    }
}

/// Cumulative dose-volume histogram of one organ and its metrics (Gy).
#[derive(Debug, Clone, Serialize)]
pub struct Dvh {
    /// Dose levels (Gy), from 0 to the maximum.
    pub dose_gy: Vec<f64>,
    /// Fraction of the organ volume receiving at least each dose level.
    pub volume_fraction: Vec<f64>,
    /// D_x: the lowest dose in the hottest x % of the volume.
    pub d2: f64,
    pub d30: f64,
    pub d50: f64,
    pub d70: f64,
    pub d98: f64,
    pub mean: f64,
    pub max: f64,
    pub min: f64,
    pub volume_ml: f64,
}

/// DVH of voxel doses `dose` with volume weights `weight_ml` (partial voxels weigh
/// less); voxels with zero weight are ignored. `None` when the organ is empty.
pub fn dvh(dose: &[f64], weight_ml: &[f64], bins: usize) -> Option<Dvh> {
    let mut v: Vec<(f64, f64)> = dose
        .iter()
        .zip(weight_ml)
        .filter(|(d, w)| **w > 0.0 && d.is_finite())
        .map(|(&d, &w)| (d, w))
        .collect();
    let total: f64 = v.iter().map(|x| x.1).sum();
    if v.is_empty() || total <= 0.0 {
        return None;
    }
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let d_at = |pct: f64| {
        let target = pct / 100.0 * total;
        let mut cum = 0.0;
        for &(d, w) in &v {
            cum += w;
            if cum >= target * (1.0 - 1e-12) {
                return d;
            }
        }
        v[v.len() - 1].0
    };
    let max = v[0].0;
    let min = v[v.len() - 1].0;
    let mean = v.iter().map(|x| x.0 * x.1).sum::<f64>() / total;
    let bins = bins.max(2);
    let dose_gy: Vec<f64> = (0..bins)
        .map(|b| max * b as f64 / (bins - 1) as f64)
        .collect();
    // v is sorted descending: walk levels ascending from the back.
    let mut volume_fraction = Vec::with_capacity(bins);
    for &level in &dose_gy {
        let above: f64 = v.iter().take_while(|x| x.0 >= level).map(|x| x.1).sum();
        volume_fraction.push(above / total);
    }
    Some(Dvh {
        dose_gy,
        volume_fraction,
        d2: d_at(2.0),
        d30: d_at(30.0),
        d50: d_at(50.0),
        d70: d_at(70.0),
        d98: d_at(98.0),
        mean,
        max,
        min,
        volume_ml: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    #[test]
    fn delta_kernel_equals_local_deposition_exactly() {
        let g = Geometry::new([5, 4, 3], [4.0, 4.0, 5.0], [0.0; 3]);
        let tia: Vec<f64> = (0..g.len()).map(|l| (l * 37 % 11) as f64 * 1e9).collect();
        let vol = Volume::new(g.clone(), tia.clone()).unwrap();
        let e = 147.9 * crate::nuclide::J_PER_KEV;
        let k = Kernel::delta(e, g.spacing, 1.06);
        let d = dose_map(&vol, &k).unwrap();
        let m_g = 4.0 * 4.0 * 5.0 / 1000.0 * 1.06;
        for (l, &t) in tia.iter().enumerate() {
            let want = local_deposition_gy(t / 1e6 / 3600.0, e, m_g);
            assert!((d.data[l] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-30));
            assert_eq!(d.data[l], (t * k.values[0]) as f32);
        }
        // Same delta kernel forced through the FFT path (a 3x3x3 kernel with only the
        // centre set): equal to rounding.
        let mut k3 = k.clone();
        k3.radius = [1, 1, 1];
        k3.values = vec![0.0; 27];
        k3.values[13] = k.values[0];
        let d3 = dose_map(&vol, &k3).unwrap();
        for l in 0..g.len() {
            assert!((d3.data[l] - d.data[l]).abs() <= 1e-5 * d.data[l].abs().max(1e-3));
        }
    }

    #[test]
    fn fft_convolution_matches_direct_sum_and_kernel_file_parses() {
        let text = "# organdose voxel S-value kernel v1\n# voxel_mm: 2 2 2\n# unit: Gy/(Bq s)\n# symmetry: octant\n0 0 0 1.0\n1 0 0 0.5\n0 1 0 0.25\n1,1,1,0.1\n";
        let k = Kernel::parse(text).unwrap();
        assert_eq!(k.radius, [1, 1, 1]);
        assert_eq!(k.values.iter().filter(|&&v| v == 0.1).count(), 8);
        let dims = [6, 5, 4];
        let data: Vec<f64> = (0..120).map(|l| ((l * 7) % 5) as f64).collect();
        let got = fft_convolve(&data, dims, &k.values, k.radius);
        for z in 0..4i64 {
            for y in 0..5i64 {
                for x in 0..6i64 {
                    let mut s = 0.0;
                    for dz in -1..=1i64 {
                        for dy in -1..=1i64 {
                            for dx in -1..=1i64 {
                                let (ux, uy, uz) = (x - dx, y - dy, z - dz);
                                if ux < 0 || uy < 0 || uz < 0 || ux >= 6 || uy >= 5 || uz >= 4 {
                                    continue;
                                }
                                let kv = k.values[(dx + 1 + 3 * (dy + 1 + 3 * (dz + 1))) as usize];
                                s += data[(ux + 6 * (uy + 5 * uz)) as usize] * kv;
                            }
                        }
                    }
                    let l = (x + 6 * (y + 5 * z)) as usize;
                    assert!((got[l] - s).abs() < 1e-9, "{l}: {} vs {s}", got[l]);
                }
            }
        }
        assert!(Kernel::parse("0 0 0 1\n").is_err(), "headers are required");
        assert!(Kernel::parse("# voxel_mm: 1 1 1\n# unit: Gy/(Bq s)\n0 0 x 1\n").is_err());
    }

    #[test]
    fn dvh_of_uniform_dose_is_flat() {
        let d = vec![2.5; 1000];
        let w = vec![0.1; 1000];
        let h = dvh(&d, &w, 50).unwrap();
        assert!(h.volume_fraction.iter().all(|&f| (f - 1.0).abs() < 1e-12));
        for x in [h.d2, h.d30, h.d50, h.d70, h.d98, h.mean, h.max, h.min] {
            assert!((x - 2.5).abs() < 1e-12);
        }
        assert!((h.volume_ml - 100.0).abs() < 1e-9);
        // A ramp 1..=100 with equal weights: D30 = 71, D70 = 31.
        let d: Vec<f64> = (1..=100).map(|v| v as f64).collect();
        let h = dvh(&d, &[1.0; 100], 101).unwrap();
        assert_eq!(h.d30, 71.0);
        assert_eq!(h.d70, 31.0);
        assert_eq!(h.d2, 99.0);
        assert!(dvh(&[], &[], 10).is_none());
    }
}
