//! Randomness: splitmix64 seed mixing, hashed lattice value noise and its fractal sum, and the
//! draws from an image's generator.

use std::f32::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::geometry::V2;

pub(super) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) fn hash_u32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Uniform in [0, 1) from a lattice point.
pub(super) fn hash2(ix: i32, iy: i32, salt: u32) -> f32 {
    let h = hash_u32((ix as u32).wrapping_mul(0x9e37_79b1) ^ hash_u32((iy as u32) ^ salt.wrapping_mul(0x85eb_ca77)));
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Smooth value noise in [0, 1].
pub(super) fn value_noise(p: V2, salt: u32) -> f32 {
    let (fx, fy) = (p.x.floor(), p.y.floor());
    let (ix, iy) = (fx as i32, fy as i32);
    let (tx, ty) = (p.x - fx, p.y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = hash2(ix, iy, salt);
    let b = hash2(ix + 1, iy, salt);
    let c = hash2(ix, iy + 1, salt);
    let d = hash2(ix + 1, iy + 1, salt);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// Fractal value noise in [0, 1].
pub(super) fn fbm(p: V2, octaves: u32, salt: u32) -> f32 {
    let (mut sum, mut amp, mut norm, mut freq) = (0.0, 0.5, 0.0, 1.0);
    for o in 0..octaves {
        sum += amp * value_noise(p * freq, salt.wrapping_add(o * 1013));
        norm += amp;
        amp *= 0.5;
        freq *= 2.03;
    }
    sum / norm
}

pub(super) fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

pub(super) fn signed(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    let v = uniform(rng, lo, hi);
    if rng.random_bool(0.5) {
        v
    } else {
        -v
    }
}

pub(super) fn standard_normal_pair(rng: &mut ChaCha8Rng) -> (f32, f32) {
    let u1 = 1.0 - rng.random::<f32>(); // (0, 1]
    let u2 = rng.random::<f32>();
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (2.0 * PI * u2).sin_cos();
    (r * c, r * s)
}
