//! Small maths: 2-D vectors, linear RGB colours, and signed distances.

use std::ops::{Add, Mul, Sub};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct V2 {
    pub(super) x: f32,
    pub(super) y: f32,
}

/// Towards the light, in object coordinates (every part of a scene is lit from here).
pub(super) const LIGHT: V2 = v2(-0.6, -0.8);

pub(super) const fn v2(x: f32, y: f32) -> V2 {
    V2 { x, y }
}

impl Add for V2 {
    type Output = V2;
    fn add(self, o: V2) -> V2 {
        v2(self.x + o.x, self.y + o.y)
    }
}

impl Sub for V2 {
    type Output = V2;
    fn sub(self, o: V2) -> V2 {
        v2(self.x - o.x, self.y - o.y)
    }
}

impl Mul<f32> for V2 {
    type Output = V2;
    fn mul(self, k: f32) -> V2 {
        v2(self.x * k, self.y * k)
    }
}

impl V2 {
    pub(super) fn dot(self, o: V2) -> f32 {
        self.x * o.x + self.y * o.y
    }
    pub(super) fn len(self) -> f32 {
        self.dot(self).sqrt()
    }
    pub(super) fn rot(self, angle: f32) -> V2 {
        let (s, c) = angle.sin_cos();
        v2(c * self.x - s * self.y, s * self.x + c * self.y)
    }
    pub(super) fn perp(self) -> V2 {
        v2(-self.y, self.x)
    }
    pub(super) fn unit(angle: f32) -> V2 {
        v2(angle.cos(), angle.sin())
    }
    pub(super) fn abs(self) -> V2 {
        v2(self.x.abs(), self.y.abs())
    }
}

pub(super) const CENTRE: V2 = v2(0.5, 0.5);

pub(super) type Rgb = [f32; 3];

pub(super) fn scale(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

pub(super) fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

pub(super) fn mul(a: Rgb, b: Rgb) -> Rgb {
    [a[0] * b[0], a[1] * b[1], a[2] * b[2]]
}

pub(super) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Rounded box signed distance (negative inside).
pub(super) fn sd_box(p: V2, c: V2, half: V2, radius: f32) -> f32 {
    let d = (p - c).abs() - half + v2(radius, radius);
    let outside = v2(d.x.max(0.0), d.y.max(0.0)).len();
    outside + d.x.max(d.y).min(0.0) - radius
}

/// Distance from `p` to segment `a`–`b` and the position along it in [0, 1].
pub(super) fn segment_distance(p: V2, a: V2, b: V2) -> (f32, f32) {
    let ab = b - a;
    let denom = ab.dot(ab);
    let t = if denom > 0.0 { ((p - a).dot(ab) / denom).clamp(0.0, 1.0) } else { 0.0 };
    ((p - (a + ab * t)).len(), t)
}
