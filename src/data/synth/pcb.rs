//! The circuit-board category: a fixed layout of ICs, chip parts and capacitors, each placed
//! with a small tolerance, over traces, vias, pads and silkscreen.

use std::f32::consts::PI;

use rand_chacha::ChaCha8Rng;

use super::geometry::LIGHT;
use super::geometry::{scale, sd_box, segment_distance, v2, Rgb, V2};
use super::noise::{uniform, value_noise};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Part {
    /// An IC: body half sizes and pins per long side (pins along ±y).
    Ic { hx: f32, hy: f32, pins: u32 },
    /// A two-terminal chip part (resistor or ceramic capacitor) along x.
    Chip { hx: f32, hy: f32, body: Rgb },
    /// An electrolytic capacitor seen from above.
    Cap { r: f32 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Component {
    pub(super) part: Part,
    pub(super) centre: V2,
    pub(super) angle: f32,
}

impl Component {
    pub(super) const fn new(part: Part, centre: V2, angle: f32) -> Component {
        Component { part, centre, angle }
    }

    pub(super) fn local(&self, q: V2) -> V2 {
        (q - self.centre).rot(-self.angle)
    }

    /// Radius of a disc around the centre that holds the component.
    pub(super) fn extent(&self) -> f32 {
        match self.part {
            Part::Ic { hx, hy, .. } => v2(hx, hy + 0.03).len(),
            Part::Chip { hx, hy, .. } => v2(hx, hy).len(),
            Part::Cap { r } => r,
        }
    }

    /// Whether `q` is farther than `extent() + margin` from the centre (nothing of it there).
    pub(super) fn far(&self, q: V2, margin: f32) -> bool {
        let d = q - self.centre;
        let r = self.extent() + margin;
        d.dot(d) > r * r
    }

    pub(super) fn shade(&self, q: V2, salt: u32) -> Option<Rgb> {
        if self.far(q, 0.0) {
            return None;
        }
        let l = self.local(q);
        match self.part {
            Part::Ic { hx, hy, pins } => {
                if l.x.abs() <= hx && l.y.abs() <= hy {
                    if (l - v2(-hx + 0.028, -hy + 0.028)).len() < 0.011 {
                        return Some([0.28, 0.28, 0.29]);
                    }
                    let edge = (hx - l.x.abs()).min(hy - l.y.abs()) < 0.006;
                    let s = (0.9 + 0.2 * value_noise(l * 90.0, salt)) * if edge { 1.7 } else { 1.0 };
                    return Some(scale([0.09, 0.09, 0.10], s));
                }
                if l.y.abs() > hy && l.y.abs() <= hy + 0.028 && l.x.abs() < hx {
                    let pitch = 2.0 * hx / pins as f32;
                    let k = ((l.x + hx) / pitch).floor();
                    let cx = -hx + pitch * (k + 0.5);
                    if (l.x - cx).abs() < pitch * 0.28 {
                        let t = (l.y.abs() - hy) / 0.028;
                        return Some(scale([0.80, 0.80, 0.82], 0.8 + 0.2 * t));
                    }
                }
                None
            }
            Part::Chip { hx, hy, body } => {
                if l.x.abs() > hx || l.y.abs() > hy {
                    return None;
                }
                if l.x.abs() > hx * 0.62 {
                    let s = 0.85 + 0.15 * (1.0 - (l.y / hy).abs());
                    Some(scale([0.82, 0.82, 0.84], s))
                } else {
                    let s = 0.9 + 0.15 * (1.0 - (l.y / hy).powi(2));
                    Some(scale(body, s))
                }
            }
            Part::Cap { r } => {
                let rho = l.len();
                if rho >= r {
                    return None;
                }
                if l.x > r * 0.55 {
                    return Some([0.12, 0.14, 0.26]);
                }
                if rho > r * 0.88 {
                    return Some([0.55, 0.56, 0.58]);
                }
                if rho < r * 0.6 && (l.x.abs() < 0.0035 || l.y.abs() < 0.0035) {
                    return Some([0.50, 0.50, 0.52]);
                }
                Some(scale([0.80, 0.81, 0.83], 0.85 + 0.15 * (1.0 - rho / r) + 0.1 * l.dot(LIGHT) / r))
            }
        }
    }

    /// Solder pads of the component at its nominal place.
    pub(super) fn pad(&self, q: V2) -> bool {
        let l = self.local(q);
        match self.part {
            Part::Ic { hx, hy, pins } => {
                if l.y.abs() < hy + 0.004 || l.y.abs() > hy + 0.036 || l.x.abs() > hx {
                    return false;
                }
                let pitch = 2.0 * hx / pins as f32;
                let k = ((l.x + hx) / pitch).floor();
                (l.x - (-hx + pitch * (k + 0.5))).abs() < pitch * 0.34
            }
            Part::Chip { hx, hy, .. } => l.x.abs() > hx * 0.5 && l.x.abs() < hx + 0.012 && l.y.abs() < hy + 0.008,
            Part::Cap { r } => l.y.abs() < r * 0.3 && l.x.abs() > r * 0.35 && l.x.abs() < r * 1.08,
        }
    }

    /// Silkscreen outline of the component at its nominal place.
    pub(super) fn silk(&self, q: V2) -> bool {
        let l = self.local(q);
        let w = 0.0045;
        match self.part {
            Part::Ic { hx, hy, .. } => (sd_box(l, v2(0.0, 0.0), v2(hx + 0.02, hy + 0.05), 0.0)).abs() < w,
            Part::Chip { hx, hy, .. } => (sd_box(l, v2(0.0, 0.0), v2(hx + 0.025, hy + 0.02), 0.0)).abs() < w,
            Part::Cap { r } => (l.len() - r * 1.15).abs() < w,
        }
    }
}

pub(super) const BEIGE: Rgb = [0.78, 0.66, 0.48];
pub(super) const BLACK_CHIP: Rgb = [0.11, 0.11, 0.12];

pub(super) const PCB_LAYOUT: [Component; 9] = [
    Component::new(Part::Ic { hx: 0.13, hy: 0.07, pins: 7 }, v2(0.33, 0.33), 0.0),
    Component::new(Part::Ic { hx: 0.09, hy: 0.09, pins: 5 }, v2(0.68, 0.68), PI / 2.0),
    Component::new(Part::Chip { hx: 0.055, hy: 0.026, body: BEIGE }, v2(0.70, 0.22), 0.0),
    Component::new(Part::Chip { hx: 0.055, hy: 0.026, body: BLACK_CHIP }, v2(0.86, 0.42), PI / 2.0),
    Component::new(Part::Chip { hx: 0.055, hy: 0.026, body: BEIGE }, v2(0.24, 0.62), 0.0),
    Component::new(Part::Chip { hx: 0.05, hy: 0.024, body: BLACK_CHIP }, v2(0.30, 0.84), 0.0),
    Component::new(Part::Chip { hx: 0.05, hy: 0.024, body: BLACK_CHIP }, v2(0.12, 0.40), PI / 2.0),
    Component::new(Part::Cap { r: 0.06 }, v2(0.44, 0.66), 0.0),
    Component::new(Part::Cap { r: 0.05 }, v2(0.62, 0.44), 0.0),
];

pub(super) const PCB_TRACES: [&[V2]; 8] = [
    &[v2(0.42, 0.245), v2(0.42, 0.18), v2(0.62, 0.18), v2(0.645, 0.22)],
    &[v2(0.24, 0.245), v2(0.24, 0.15), v2(0.12, 0.15), v2(0.12, 0.345)],
    &[v2(0.12, 0.455), v2(0.12, 0.62), v2(0.185, 0.62)],
    &[v2(0.295, 0.62), v2(0.44, 0.62), v2(0.44, 0.60)],
    &[v2(0.46, 0.415), v2(0.46, 0.50), v2(0.56, 0.50), v2(0.59, 0.47)],
    &[v2(0.755, 0.22), v2(0.86, 0.22), v2(0.86, 0.365)],
    &[v2(0.86, 0.475), v2(0.86, 0.68), v2(0.79, 0.68)],
    &[v2(0.57, 0.74), v2(0.50, 0.80), v2(0.35, 0.84)],
];

pub(super) const PCB_VIAS: [V2; 6] =
    [v2(0.52, 0.25), v2(0.90, 0.56), v2(0.16, 0.88), v2(0.55, 0.90), v2(0.20, 0.50), v2(0.76, 0.50)];
pub(super) const PCB_MOUNTS: [V2; 4] = [v2(0.06, 0.06), v2(0.94, 0.06), v2(0.06, 0.94), v2(0.94, 0.94)];

#[derive(Debug, Clone)]
pub(super) struct Pcb {
    /// Components as placed (nominal place plus tolerance); `None` where one is missing.
    pub(super) placed: Vec<Option<Component>>,
    pub(super) phase: V2,
    pub(super) salt: u32,
}

impl Pcb {
    pub(super) const BOARD: Rgb = [0.07, 0.34, 0.17];
    pub(super) const TRACE: Rgb = [0.16, 0.48, 0.24];
    pub(super) const PAD: Rgb = [0.80, 0.77, 0.66];
    pub(super) const SILK: Rgb = [0.90, 0.90, 0.86];

    pub(super) fn sample(rng: &mut ChaCha8Rng, phase: V2, salt: u32) -> Pcb {
        let placed = PCB_LAYOUT
            .iter()
            .map(|c| {
                let mut c = *c;
                c.centre = c.centre + v2(uniform(rng, -0.004, 0.004), uniform(rng, -0.004, 0.004));
                c.angle += uniform(rng, -0.025, 0.025);
                Some(c)
            })
            .collect();
        Pcb { placed, phase, salt }
    }

    pub(super) fn shade(&self, q: V2) -> Rgb {
        for c in self.placed.iter().rev().flatten() {
            if let Some(rgb) = c.shade(q, self.salt) {
                return rgb;
            }
        }
        let near = || PCB_LAYOUT.iter().filter(|c| !c.far(q, 0.06));
        if near().any(|c| c.pad(q)) {
            return scale(Self::PAD, 0.92 + 0.12 * value_noise(q * 150.0 + self.phase, self.salt));
        }
        if near().any(|c| c.silk(q)) {
            return Self::SILK;
        }
        for &m in &PCB_MOUNTS {
            let r = (q - m).len();
            if r < 0.024 {
                return [0.05, 0.05, 0.05];
            }
            if r < 0.04 {
                return scale(Self::PAD, 0.9);
            }
        }
        for &v in &PCB_VIAS {
            let r = (q - v).len();
            if r < 0.006 {
                return [0.05, 0.06, 0.05];
            }
            if r < 0.014 {
                return scale(Self::PAD, 0.85);
            }
        }
        let texture = 0.9 + 0.2 * value_noise(q * 60.0 + self.phase, self.salt ^ 0x1f);
        for trace in PCB_TRACES {
            for w in trace.windows(2) {
                if segment_distance(q, w[0], w[1]).0 < 0.0075 {
                    return scale(Self::TRACE, texture);
                }
            }
        }
        scale(Self::BOARD, texture)
    }
}
