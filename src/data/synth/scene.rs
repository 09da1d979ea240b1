//! Scenes: what the camera sees before lighting and noise, as a function of object coordinates,
//! and their antialiased rendering into a base image.

use std::f32::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::camera::Pose;
use super::catalog::Category;
use super::geometry::{scale, v2, Rgb, V2};
use super::noise::uniform;
use super::objects::{Bracket, Washer};
use super::pcb::Pcb;
use super::textures::{Grid, Marble, Weave};

#[derive(Debug, Clone)]
pub(super) enum Scene {
    Weave(Weave),
    Marble(Marble),
    Grid(Grid),
    Washer(Washer),
    Bracket(Bracket),
    Pcb(Pcb),
}

impl Scene {
    pub(super) fn sample(rng: &mut ChaCha8Rng, cat: Category) -> Scene {
        let salt = rng.random::<u32>();
        let phase = v2(uniform(rng, 0.0, 64.0), uniform(rng, 0.0, 64.0));
        match cat {
            Category::Weave => Scene::Weave(Weave { phase, period: 1.0 / 16.0 * uniform(rng, 0.985, 1.015), salt }),
            Category::Marble => Scene::Marble(Marble { phase, salt }),
            Category::Grid => {
                Scene::Grid(Grid { phase, period: 1.0 / 10.0, half_width: 0.14, tear: None, bend: None, salt })
            }
            Category::Washer => {
                Scene::Washer(Washer { notch: None, rings_phase: uniform(rng, 0.0, 2.0 * PI), bg_phase: phase, salt })
            }
            Category::Bracket => {
                Scene::Bracket(Bracket { chip: None, bg_phase: phase, brush_phase: uniform(rng, 0.0, 50.0), salt })
            }
            Category::Pcb => Scene::Pcb(Pcb::sample(rng, phase, salt)),
        }
    }

    /// Colour at object point `q`, and whether `q` is on the part (where defects may lie).
    pub(super) fn shade(&self, q: V2) -> (Rgb, bool) {
        match self {
            Scene::Weave(s) => (s.shade(q), true),
            Scene::Marble(s) => (s.shade(q), true),
            Scene::Grid(s) => (s.shade(q), true),
            Scene::Washer(s) => s.shade(q),
            Scene::Bracket(s) => s.shade(q),
            Scene::Pcb(s) => (s.shade(q), true),
        }
    }
}

/// Sample offsets (pixels) of the 4-sample rotated-grid antialiasing.
pub(super) const SAMPLES: [(f32, f32); 4] = [(-0.125, -0.375), (0.375, -0.125), (0.125, 0.375), (-0.375, 0.125)];

/// A rendering before lighting and noise.
pub(super) struct Base {
    pub(super) rgb: Vec<Rgb>,
    /// Fraction of each pixel on the part.
    pub(super) part: Vec<f32>,
}

pub(super) fn render_scene(scene: &Scene, pose: &Pose, n: usize) -> Base {
    let mut rgb = Vec::with_capacity(n * n);
    let mut part = Vec::with_capacity(n * n);
    let inv = 1.0 / n as f32;
    for py in 0..n {
        for px in 0..n {
            let mut acc = [0.0f32; 3];
            let mut on = 0u32;
            for (ox, oy) in SAMPLES {
                let u = v2((px as f32 + 0.5 + ox) * inv, (py as f32 + 0.5 + oy) * inv);
                let (c, p) = scene.shade(pose.to_object(u));
                for ch in 0..3 {
                    acc[ch] += c[ch];
                }
                on += u32::from(p);
            }
            rgb.push(scale(acc, 0.25));
            part.push(on as f32 * 0.25);
        }
    }
    Base { rgb, part }
}
