//! Deterministic random numbers for the phantom: xoshiro256** seeded by splitmix64.
//! Hand-written (no `rand` dependency) so that the byte stream for a seed never
//! changes with a crate upgrade.

/// splitmix64 step (Steele, Lea, Flood 2014): used for seeding and hashing.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit hash of a seed and a text tag (FNV-1a folded through splitmix64).
pub(crate) fn hash64(seed: u64, tag: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in tag.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    let mut s = h ^ seed.rotate_left(17);
    splitmix64(&mut s)
}

/// xoshiro256** (Blackman and Vigna 2018).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut st = seed;
        let s = [
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
        ];
        Rng { s }
    }

    /// An independent stream for a named purpose, so that adding draws in one part
    /// of the generator does not change another.
    pub(crate) fn fork(&self, tag: &str) -> Rng {
        Rng::new(hash64(self.s[0] ^ self.s[2].rotate_left(7), tag))
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Cheap approximately normal deviate (Irwin-Hall, 4 uniforms from one draw),
    /// mean 0, variance 1: for image noise where speed matters more than tails.
    #[inline]
    pub(crate) fn fast_normal(&mut self) -> f32 {
        let r = self.next_u64();
        let a = (r & 0xFFFF) as f32;
        let b = ((r >> 16) & 0xFFFF) as f32;
        let c = ((r >> 32) & 0xFFFF) as f32;
        let d = (r >> 48) as f32;
        // Sum of 4 U(0,1): mean 2, variance 4/12.
        ((a + b + c + d) * (1.0 / 65536.0) - 2.0) * 1.732_050_8
    }

    /// Poisson deviate. Knuth's product method below a mean of 30; above, the
    /// normal approximation N(mean, mean) rounded and clipped at 0 (relative error
    /// of the variance below 2 % there, adequate for phantom counting noise).
    pub(crate) fn poisson(&mut self, mean: f64) -> f64 {
        if mean.is_nan() || mean <= 0.0 {
            return 0.0;
        }
        if mean < 30.0 {
            let l = (-mean).exp();
            let mut k = 0.0;
            let mut p = 1.0;
            loop {
                p *= self.f64();
                if p <= l {
                    return k;
                }
                k += 1.0;
            }
        }
        (mean + mean.sqrt() * self.normal()).round().max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_poisson_moments() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut r = Rng::new(1);
        for &m in &[3.0, 100.0] {
            let n = 20000;
            let xs: Vec<f64> = (0..n).map(|_| r.poisson(m)).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            assert!((mean - m).abs() < 0.05 * m, "mean {mean} for {m}");
            assert!((var - m).abs() < 0.1 * m, "var {var} for {m}");
        }
    }
}
