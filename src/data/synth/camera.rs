//! Per-image look: where the object lies in the frame (pose), lighting and sensor noise, applied
//! identically to an image's clean and defective renderings.

use std::f32::consts::PI;

use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::catalog::Category;
use super::geometry::{scale, v2, Rgb, CENTRE, V2};
use super::noise::{standard_normal_pair, uniform};

/// Where the (unit-square) object lies in the (unit-square) image.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pose {
    pub(super) angle: f32,
    pub(super) scale: f32,
    pub(super) shift: V2,
}

impl Pose {
    pub(super) fn to_object(self, u: V2) -> V2 {
        CENTRE + (u - CENTRE - self.shift).rot(-self.angle) * (1.0 / self.scale)
    }
}

pub(super) struct Look {
    pub(super) pose: Pose,
    pub(super) gain: f32,
    pub(super) tint: Rgb,
    pub(super) gradient: f32,
    pub(super) gradient_dir: V2,
    pub(super) vignette: f32,
    pub(super) noise_sigma: f32,
}

impl Look {
    pub(super) fn sample(rng: &mut ChaCha8Rng, cat: Category) -> Look {
        let (max_angle, max_shift) = if cat.is_object() { (4.0f32, 0.03) } else { (3.0f32, 0.02) };
        Look {
            pose: Pose {
                angle: uniform(rng, -1.0, 1.0) * max_angle.to_radians(),
                scale: uniform(rng, 0.97, 1.03),
                shift: v2(uniform(rng, -max_shift, max_shift), uniform(rng, -max_shift, max_shift)),
            },
            gain: uniform(rng, 0.88, 1.12),
            tint: [uniform(rng, 0.97, 1.03), uniform(rng, 0.97, 1.03), uniform(rng, 0.97, 1.03)],
            gradient: uniform(rng, 0.0, 0.16),
            gradient_dir: V2::unit(uniform(rng, 0.0, 2.0 * PI)),
            vignette: uniform(rng, 0.0, 0.25),
            noise_sigma: uniform(rng, 0.006, 0.018),
        }
    }
}

/// Lighting and noise of one image, applied identically to its clean and defective renderings.
pub(super) struct Finish {
    /// Per pixel: gain × tint.
    pub(super) light: Vec<Rgb>,
    pub(super) noise: Vec<Rgb>,
}

impl Finish {
    pub(super) fn new(look: &Look, n: usize, noise_seed: u64) -> Finish {
        let mut light = Vec::with_capacity(n * n);
        for py in 0..n {
            for px in 0..n {
                let u = v2((px as f32 + 0.5) / n as f32, (py as f32 + 0.5) / n as f32) - CENTRE;
                let l = look.gain * (1.0 + look.gradient * u.dot(look.gradient_dir)) * (1.0 - look.vignette * u.dot(u));
                light.push(scale(look.tint, l));
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(noise_seed);
        let mut values = Vec::with_capacity(n * n * 3 + 1);
        while values.len() < n * n * 3 {
            let (a, b) = standard_normal_pair(&mut rng);
            values.push(a * look.noise_sigma);
            values.push(b * look.noise_sigma);
        }
        let noise = values.chunks_exact(3).take(n * n).map(|c| [c[0], c[1], c[2]]).collect();
        Finish { light, noise }
    }

    pub(super) fn apply(&self, base: &[Rgb], n: usize) -> RgbImage {
        let mut raw = Vec::with_capacity(n * n * 3);
        for ((b, l), z) in base.iter().zip(&self.light).zip(&self.noise) {
            for ch in 0..3 {
                let v = (b[ch] * l[ch] + z[ch]).clamp(0.0, 1.0);
                raw.push((v * 255.0).round() as u8);
            }
        }
        RgbImage::from_raw(n as u32, n as u32, raw).expect("n*n*3 bytes")
    }
}
