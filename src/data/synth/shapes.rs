//! Antialiased pixel-space shapes that overlay defects are drawn with (strokes and blobs), and
//! the random curves that shape them.

use std::f32::consts::PI;

use rand_chacha::ChaCha8Rng;

use super::geometry::{segment_distance, v2, V2};
use super::noise::uniform;
use super::scene::SAMPLES;

/// Pixel-space shape with antialiased coverage.
pub(super) trait Shape {
    /// Inclusive-exclusive pixel bounding box (x0, y0, x1, y1), unclipped.
    fn bbox(&self) -> (f32, f32, f32, f32);
    fn contains(&self, p: V2) -> bool;
}

/// A polyline with a half width at each vertex.
pub(super) struct Stroke {
    pub(super) points: Vec<V2>,
    pub(super) half: Vec<f32>,
}

impl Shape for Stroke {
    fn bbox(&self) -> (f32, f32, f32, f32) {
        let m = self.half.iter().copied().fold(0.0f32, f32::max) + 1.0;
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in &self.points {
            x0 = x0.min(p.x);
            y0 = y0.min(p.y);
            x1 = x1.max(p.x);
            y1 = y1.max(p.y);
        }
        (x0 - m, y0 - m, x1 + m, y1 + m)
    }

    fn contains(&self, p: V2) -> bool {
        (0..self.points.len().saturating_sub(1)).any(|k| {
            let (d, t) = segment_distance(p, self.points[k], self.points[k + 1]);
            d < self.half[k] + (self.half[k + 1] - self.half[k]) * t
        })
    }
}

/// An irregular disc: radius modulated by a few harmonics of the angle.
pub(super) struct Blob {
    pub(super) centre: V2,
    pub(super) radius: f32,
    pub(super) harmonics: [(f32, f32); 3],
}

impl Blob {
    pub(super) fn sample(rng: &mut ChaCha8Rng, centre: V2, radius: f32, roughness: f32) -> Blob {
        let mut harmonics = [(0.0, 0.0); 3];
        for (k, h) in harmonics.iter_mut().enumerate() {
            *h = (uniform(rng, 0.0, roughness) / (k as f32 + 1.0), uniform(rng, 0.0, 2.0 * PI));
        }
        Blob { centre, radius, harmonics }
    }

    /// Distance from the centre relative to the local radius (< 1 inside).
    pub(super) fn rel(&self, p: V2) -> f32 {
        let d = p - self.centre;
        let phi = d.y.atan2(d.x);
        let mut r = 1.0;
        for (k, (amp, ph)) in self.harmonics.iter().enumerate() {
            r += amp * ((k as f32 + 2.0) * phi + ph).sin();
        }
        d.len() / (self.radius * r)
    }

    pub(super) fn max_radius(&self) -> f32 {
        self.radius * (1.0 + self.harmonics.iter().map(|h| h.0).sum::<f32>())
    }
}

impl Shape for Blob {
    fn bbox(&self) -> (f32, f32, f32, f32) {
        let r = self.max_radius() + 1.0;
        (self.centre.x - r, self.centre.y - r, self.centre.x + r, self.centre.y + r)
    }

    fn contains(&self, p: V2) -> bool {
        self.rel(p) < 1.0
    }
}

/// Antialiased coverage of `shape`, accumulated into `alpha` with `max`; returns the pixel box.
pub(super) fn rasterize(shape: &dyn Shape, n: usize, alpha: &mut [f32]) -> (usize, usize, usize, usize) {
    let (x0, y0, x1, y1) = shape.bbox();
    let clip = |v: f32| (v.floor().max(0.0) as usize).min(n);
    let (x0, y0, x1, y1) = (clip(x0), clip(y0), clip(x1 + 1.0), clip(y1 + 1.0));
    for py in y0..y1 {
        for px in x0..x1 {
            let hits = SAMPLES
                .iter()
                .filter(|(ox, oy)| shape.contains(v2(px as f32 + 0.5 + ox, py as f32 + 0.5 + oy)))
                .count();
            if hits > 0 {
                let a = &mut alpha[py * n + px];
                *a = a.max(hits as f32 * 0.25);
            }
        }
    }
    (x0, y0, x1, y1)
}

/// A smooth random curve through `anchor`, of about `length` pixels.
pub(super) fn curve(rng: &mut ChaCha8Rng, anchor: V2, length: f32, bend: f32) -> Vec<V2> {
    let dir = V2::unit(uniform(rng, 0.0, PI));
    let a = anchor - dir * (length * 0.5);
    let b = anchor + dir * (length * 0.5);
    let ctrl = anchor + dir.perp() * (length * uniform(rng, -bend, bend));
    (0..=24)
        .map(|k| {
            let t = k as f32 / 24.0;
            a * ((1.0 - t) * (1.0 - t)) + ctrl * (2.0 * t * (1.0 - t)) + b * (t * t)
        })
        .collect()
}

/// A jagged random walk from `start` in direction `angle`.
pub(super) fn jagged(rng: &mut ChaCha8Rng, start: V2, angle: f32, length: f32, step: f32) -> Vec<V2> {
    let steps = (length / step).ceil().max(2.0) as usize;
    let mut pts = vec![start];
    let mut heading = angle;
    let mut p = start;
    for _ in 0..steps {
        heading = angle + 0.6 * (heading - angle) + uniform(rng, -0.7, 0.7);
        p = p + V2::unit(heading) * (step * uniform(rng, 0.6, 1.4));
        pts.push(p);
    }
    pts
}

/// Half widths tapering from `w` in the middle of a stroke to `w * ends` at both ends.
pub(super) fn taper(len: usize, w: f32, ends: f32) -> Vec<f32> {
    (0..len)
        .map(|k| {
            let t = k as f32 / (len - 1).max(1) as f32;
            w * (ends + (1.0 - ends) * (PI * t).sin())
        })
        .collect()
}
