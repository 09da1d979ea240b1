//! The texture categories: plain-woven fabric, veined marble and woven wire mesh.

use std::f32::consts::PI;

use super::geometry::{scale, v2, Rgb, V2};
use super::noise::{fbm, hash2, value_noise};

#[derive(Debug, Clone)]
pub(super) struct Weave {
    pub(super) phase: V2,
    pub(super) period: f32,
    pub(super) salt: u32,
}

impl Weave {
    pub(super) const WARP: Rgb = [0.80, 0.70, 0.54];
    pub(super) const WEFT: Rgb = [0.74, 0.62, 0.47];
    pub(super) const GAP: Rgb = [0.22, 0.17, 0.12];

    pub(super) fn shade(&self, q: V2) -> Rgb {
        let p = q * (1.0 / self.period) + self.phase;
        let (i, j) = (p.x.floor(), p.y.floor());
        let (fx, fy) = (p.x - i, p.y - j);
        let warp_top = (i as i64 + j as i64).rem_euclid(2) == 0;
        let hw = 0.42;
        let thread = |across: f32, along: f32, index: f32, coord: f32, top: bool, salt: u32| -> Option<f32> {
            let d = (across - 0.5).abs() / hw;
            if d >= 1.0 {
                return None;
            }
            let profile = 0.55 + 0.45 * (1.0 - d * d).sqrt();
            let bulge = if top { 0.78 + 0.22 * (PI * along).sin() } else { 0.68 };
            let fibre = 0.92 + 0.16 * value_noise(v2(index * 7.31 + across * 3.0, coord * 9.0), salt);
            let var = 0.94 + 0.12 * hash2(index as i32, 0, salt ^ 0x5bd1);
            Some(profile * bulge * fibre * var)
        };
        let warp = thread(fx, fy, i, p.y, warp_top, self.salt);
        let weft = thread(fy, fx, j, p.x, !warp_top, self.salt ^ 0x68e3);
        let (top, top_c, under, under_c) =
            if warp_top { (warp, Self::WARP, weft, Self::WEFT) } else { (weft, Self::WEFT, warp, Self::WARP) };
        match (top, under) {
            (Some(v), _) => scale(top_c, v),
            (None, Some(v)) => scale(under_c, v * 0.9),
            (None, None) => Self::GAP,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Marble {
    pub(super) phase: V2,
    pub(super) salt: u32,
}

impl Marble {
    pub(super) fn shade(&self, q: V2) -> Rgb {
        let p = q * 2.5 + self.phase;
        let turb = fbm(p, 5, self.salt);
        let cloud = fbm(p * 1.9 + v2(3.1, 7.7), 4, self.salt ^ 0x2f6b);
        let s = ((p.x * 0.9 + p.y * 0.5) * 2.2 + turb * 7.0).sin();
        let vein = (1.0 - s.abs()).powi(10);
        let t = ((p.x * 0.4 - p.y * 1.1) * 5.0 + cloud * 9.0).sin();
        let fine = (1.0 - t.abs()).powi(24);
        let base = scale([0.86, 0.85, 0.82], 0.9 + 0.14 * cloud);
        [base[0] - 0.30 * vein - 0.12 * fine, base[1] - 0.28 * vein - 0.12 * fine, base[2] - 0.22 * vein - 0.09 * fine]
    }
}

#[derive(Debug, Clone)]
pub(super) struct Grid {
    pub(super) phase: V2,
    pub(super) period: f32,
    /// Half width of a wire, in periods.
    pub(super) half_width: f32,
    /// Wires removed inside this disc (object coordinates).
    pub(super) tear: Option<(V2, f32)>,
    /// Wires displaced inside a disc: (centre, radius, displacement at the centre).
    pub(super) bend: Option<(V2, f32, V2)>,
    pub(super) salt: u32,
}

impl Grid {
    pub(super) const METAL: Rgb = [0.74, 0.76, 0.80];
    pub(super) const BACKING: Rgb = [0.10, 0.10, 0.11];

    pub(super) fn shade(&self, q0: V2) -> Rgb {
        let mut q = q0;
        if let Some((c, r, d)) = self.bend {
            let t = (q - c).len() / r;
            if t < 1.0 {
                let f = 1.0 - t * t;
                q = q - d * (f * f);
            }
        }
        let backing = scale(Self::BACKING, 0.8 + 0.4 * value_noise(q * 25.0 + self.phase, self.salt));
        if let Some((c, r)) = self.tear {
            if (q0 - c).len() < r {
                return backing;
            }
        }
        let p = q * (1.0 / self.period) + self.phase;
        let (i, j) = (p.x.floor(), p.y.floor());
        let dx = (p.x - i - 0.5) / self.half_width;
        let dy = (p.y - j - 0.5) / self.half_width;
        let vertical_top = (i as i64 + j as i64).rem_euclid(2) == 0;
        let wire = |d: f32| -> Rgb {
            let a = (1.0 - d * d).max(0.0).sqrt();
            scale(Self::METAL, 0.35 + 0.45 * a + 0.35 * (-(d + 0.35) * (d + 0.35) / 0.05).exp())
        };
        let (in_v, in_h) = (dx.abs() < 1.0, dy.abs() < 1.0);
        match (in_v, in_h) {
            (true, true) => {
                if vertical_top {
                    wire(dx)
                } else {
                    wire(dy)
                }
            }
            (true, false) => {
                let shadow = if !vertical_top && dy.abs() < 1.7 { 0.72 } else { 1.0 };
                scale(wire(dx), shadow)
            }
            (false, true) => {
                let shadow = if vertical_top && dx.abs() < 1.7 { 0.72 } else { 1.0 };
                scale(wire(dy), shadow)
            }
            (false, false) => {
                let near = dx.abs() < 1.6 || dy.abs() < 1.6;
                scale(backing, if near { 0.7 } else { 1.0 })
            }
        }
    }
}
