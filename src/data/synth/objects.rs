//! The object categories on a plain background: a machined steel washer and an L-shaped zinc
//! bracket.

use super::geometry::LIGHT;
use super::geometry::{scale, sd_box, smoothstep, v2, Rgb, CENTRE, V2};
use super::noise::{fbm, value_noise};

#[derive(Debug, Clone)]
pub(super) struct Washer {
    /// Material removed inside this disc.
    pub(super) notch: Option<(V2, f32)>,
    pub(super) rings_phase: f32,
    pub(super) bg_phase: V2,
    pub(super) salt: u32,
}

impl Washer {
    pub(super) const R_OUT: f32 = 0.33;
    pub(super) const R_IN: f32 = 0.14;
    pub(super) const STEEL: Rgb = [0.70, 0.71, 0.74];
    pub(super) const TABLE: Rgb = [0.26, 0.23, 0.20];
    pub(super) const SHADOW: V2 = v2(0.012, 0.016);

    pub(super) fn on_ring(&self, q: V2) -> bool {
        let r = (q - CENTRE).len();
        (Self::R_IN..=Self::R_OUT).contains(&r) && self.notch.is_none_or(|(c, nr)| (q - c).len() > nr)
    }

    pub(super) fn shade(&self, q: V2) -> (Rgb, bool) {
        let d = q - CENTRE;
        let r = d.len();
        if self.on_ring(q) {
            let n = d * (1.0 / r.max(1e-6));
            let t = (r - Self::R_IN) / (Self::R_OUT - Self::R_IN);
            let outer = smoothstep(0.84, 1.0, t);
            let inner = smoothstep(0.16, 0.0, t);
            let ndl = n.dot(LIGHT);
            let rings = 0.035 * (r * 520.0 + self.rings_phase + 3.0 * value_noise(q * 14.0, self.salt)).sin();
            let grain = 0.04 * (value_noise(v2(r * 400.0, d.y.atan2(d.x) * 6.0), self.salt ^ 0x77) - 0.5);
            let s = 0.78 + rings + grain + 0.30 * outer * ndl - 0.30 * inner * ndl;
            (scale(Self::STEEL, s), true)
        } else {
            let table = scale(Self::TABLE, 0.85 + 0.3 * fbm(q * 6.0 + self.bg_phase, 3, self.salt ^ 0x3c));
            let shadow = if self.on_ring(q - Self::SHADOW) { 0.55 } else { 1.0 };
            (scale(table, shadow), false)
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Bracket {
    /// Material removed inside this disc.
    pub(super) chip: Option<(V2, f32)>,
    pub(super) bg_phase: V2,
    pub(super) brush_phase: f32,
    pub(super) salt: u32,
}

impl Bracket {
    pub(super) const ZINC: Rgb = [0.74, 0.75, 0.78];
    pub(super) const BACKGROUND: Rgb = [0.20, 0.24, 0.30];
    pub(super) const HOLES: [(V2, f32); 3] = [(v2(0.30, 0.33), 0.055), (v2(0.56, 0.68), 0.05), (v2(0.72, 0.68), 0.045)];
    pub(super) const SHADOW: V2 = v2(0.014, 0.018);
    /// Corners and edge points of the outline, where a chip may be.
    pub(super) const OUTLINE: [V2; 9] = [
        v2(0.18, 0.20),
        v2(0.42, 0.20),
        v2(0.42, 0.56),
        v2(0.82, 0.56),
        v2(0.82, 0.80),
        v2(0.18, 0.80),
        v2(0.18, 0.45),
        v2(0.62, 0.80),
        v2(0.42, 0.38),
    ];

    pub(super) fn sd(&self, q: V2) -> f32 {
        let a = sd_box(q, v2(0.50, 0.68), v2(0.32, 0.12), 0.025);
        let b = sd_box(q, v2(0.30, 0.50), v2(0.12, 0.30), 0.025);
        let mut d = a.min(b);
        for (c, r) in Self::HOLES {
            d = d.max(r - (q - c).len());
        }
        if let Some((c, r)) = self.chip {
            d = d.max(r - (q - c).len());
        }
        d
    }

    pub(super) fn shade(&self, q: V2) -> (Rgb, bool) {
        let d = self.sd(q);
        if d < 0.0 {
            let brush = value_noise(v2(q.x * 4.0 + self.brush_phase, q.y * 260.0), self.salt);
            let mut s = 0.80 + 0.10 * (brush - 0.5);
            let edge = 0.012;
            if d > -edge {
                let h = 0.002;
                let g = v2(
                    self.sd(q + v2(h, 0.0)) - self.sd(q - v2(h, 0.0)),
                    self.sd(q + v2(0.0, h)) - self.sd(q - v2(0.0, h)),
                );
                let n = g * (1.0 / g.len().max(1e-9));
                s += 0.35 * (1.0 + d / edge) * n.dot(LIGHT);
            }
            (scale(Self::ZINC, s), true)
        } else {
            let bg = scale(Self::BACKGROUND, 0.85 + 0.3 * fbm(q * 5.0 + self.bg_phase, 3, self.salt ^ 0x91));
            let shadow = if self.sd(q - Self::SHADOW) < 0.0 { 0.55 } else { 1.0 };
            (scale(bg, shadow), false)
        }
    }
}
