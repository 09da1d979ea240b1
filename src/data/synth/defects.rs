//! Defects: one sampler per defect type (and category, where they differ) that draws a candidate
//! rendering, either an overlay blended onto the base rendering or the scene rebuilt with the
//! defect in it, and how a candidate becomes the defective rendering and its exact mask.

use std::f32::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::camera::Pose;
use super::catalog::{Category, DefectKind};
use super::geometry::LIGHT;
use super::geometry::{mix, mul, scale, v2, Rgb, CENTRE, V2};
use super::noise::{signed, uniform, value_noise};
use super::objects::{Bracket, Washer};
use super::pcb::{Component, Part, BEIGE, BLACK_CHIP};
use super::scene::{render_scene, Base, Scene};
use super::shapes::{curve, jagged, rasterize, taper, Blob, Stroke};
use super::CHANGE_EPS;

/// Everything a defect sampler may look at.
pub(super) struct Ctx<'a> {
    pub(super) cat: Category,
    pub(super) n: usize,
    pub(super) pose: Pose,
    pub(super) scene: &'a Scene,
    pub(super) base: &'a Base,
}

impl Ctx<'_> {
    pub(super) fn size(&self) -> f32 {
        self.n as f32
    }

    /// A pixel position fully on the part, away from the border.
    pub(super) fn anchor(&self, rng: &mut ChaCha8Rng, margin: f32) -> V2 {
        let n = self.size();
        let mut p = v2(n * 0.5, n * 0.5);
        for _ in 0..1000 {
            p = v2(uniform(rng, margin * n, (1.0 - margin) * n), uniform(rng, margin * n, (1.0 - margin) * n));
            let i = (p.y as usize).min(self.n - 1) * self.n + (p.x as usize).min(self.n - 1);
            if self.base.part[i] >= 1.0 {
                break;
            }
        }
        p
    }

    /// Object point of a pixel position.
    pub(super) fn to_object(&self, p: V2) -> V2 {
        self.pose.to_object(p * (1.0 / self.size()))
    }
}

/// A defect as a candidate rendering (before lighting and noise); the mask is derived from it.
pub(super) enum Candidate {
    /// Blend towards `target` by `alpha` (both full size; target is read where alpha > 0).
    Overlay { alpha: Vec<f32>, target: Vec<Rgb> },
    /// The scene with the defect built in.
    Scene(Scene),
}

pub(super) fn overlay(n: usize) -> (Vec<f32>, Vec<Rgb>) {
    (vec![0.0; n * n], vec![[0.0; 3]; n * n])
}

/// For every pixel with alpha > 0: target = f(base colour, pixel position, alpha index).
pub(super) fn fill_target(alpha: &[f32], target: &mut [Rgb], base: &Base, n: usize, f: impl Fn(Rgb, V2, usize) -> Rgb) {
    for (i, a) in alpha.iter().enumerate() {
        if *a > 0.0 {
            let p = v2((i % n) as f32 + 0.5, (i / n) as f32 + 0.5);
            target[i] = f(base.rgb[i], p, i);
        }
    }
}

/// Draws one candidate of defect type `kind` for the scene of `ctx`. Each sampler draws from
/// `rng` in a fixed order, so the seed fixes the defect. Overlays on a washer or bracket are
/// clipped to the part.
pub(super) fn sample_defect(ctx: &Ctx, kind: DefectKind, rng: &mut ChaCha8Rng) -> Candidate {
    let clip_to_part = ctx.cat.is_object() && ctx.cat != Category::Pcb;
    let margin = if ctx.cat.is_object() { 0.08 } else { 0.15 };
    let candidate = match (kind, ctx.cat) {
        (DefectKind::Scratch, _) => scratch(ctx, rng, margin),
        (DefectKind::Crack, _) => crack(ctx, rng, margin),
        (DefectKind::Hole, _) => hole(ctx, rng, margin),
        (DefectKind::Stain, _) => stain(ctx, rng, margin),
        (DefectKind::ExtraPart, Category::Weave) => foreign_fibre(ctx, rng, margin),
        (DefectKind::ExtraPart, Category::Pcb) if rng.random_bool(0.5) => stray_component(ctx, rng, margin),
        (DefectKind::ExtraPart, _) => particle(ctx, rng, margin),
        (DefectKind::MissingPart, Category::Grid) => torn_wires(ctx, rng, margin),
        (DefectKind::Misplacement, Category::Grid) => bent_wires(ctx, rng, margin),
        (DefectKind::MissingPart, Category::Washer) => washer_notch(ctx, rng),
        (DefectKind::MissingPart, Category::Bracket) => chipped_edge(ctx, rng),
        (DefectKind::MissingPart, Category::Pcb) => missing_component(ctx, rng),
        (DefectKind::Misplacement, Category::Pcb) => misplaced_component(ctx, rng),
        (kind, cat) => unreachable!("{} has no {} defect", cat.name(), kind.name()),
    };
    match candidate {
        Candidate::Overlay { mut alpha, target } if clip_to_part => {
            for (a, p) in alpha.iter_mut().zip(&ctx.base.part) {
                *a *= p;
            }
            Candidate::Overlay { alpha, target }
        }
        other => other,
    }
}

/// A thin curved line, brighter (polished) or darker than the surface, tapering at both ends.
fn scratch(ctx: &Ctx, rng: &mut ChaCha8Rng, margin: f32) -> Candidate {
    let n = ctx.n;
    let s = ctx.size();
    let anchor = ctx.anchor(rng, margin);
    let length = s * uniform(rng, 0.15, 0.42);
    let w = (s * uniform(rng, 0.0025, 0.006)).max(0.55);
    let points = curve(rng, anchor, length, 0.25);
    let half = taper(points.len(), w, 0.35);
    let (mut alpha, mut target) = overlay(n);
    rasterize(&Stroke { points, half }, n, &mut alpha);
    let contrast = uniform(rng, 0.2, 0.85);
    let bright = rng.random_bool(0.6);
    fill_target(&alpha, &mut target, ctx.base, n, |b, _, _| {
        if bright {
            mix(b, [0.97, 0.97, 0.95], contrast)
        } else {
            scale(b, 1.0 - 0.75 * contrast)
        }
    });
    Candidate::Overlay { alpha, target }
}

/// A jagged dark line with one to three branches.
fn crack(ctx: &Ctx, rng: &mut ChaCha8Rng, margin: f32) -> Candidate {
    let n = ctx.n;
    let s = ctx.size();
    let anchor = ctx.anchor(rng, margin);
    let length = s * uniform(rng, 0.14, 0.32);
    let step = s * 0.025;
    let angle = uniform(rng, 0.0, 2.0 * PI);
    let w = (s * uniform(rng, 0.003, 0.007)).max(0.6);
    let start = anchor - V2::unit(angle) * (length * 0.5);
    let main = jagged(rng, start, angle, length, step);
    let (mut alpha, mut target) = overlay(n);
    let half = taper(main.len(), w, 0.3);
    for _ in 0..rng.random_range(1..=3u32) {
        let k = rng.random_range(1..main.len() - 1);
        let branch_angle = angle + signed(rng, 0.4, 1.1);
        let branch_length = length * uniform(rng, 0.2, 0.45);
        let branch = jagged(rng, main[k], branch_angle, branch_length, step * 0.8);
        let root = half[k] * 0.8;
        let bh = (0..branch.len()).map(|j| root * (1.0 - 0.7 * j as f32 / (branch.len() - 1) as f32)).collect();
        rasterize(&Stroke { points: branch, half: bh }, n, &mut alpha);
    }
    rasterize(&Stroke { points: main, half }, n, &mut alpha);
    let depth = uniform(rng, 0.25, 0.9);
    fill_target(&alpha, &mut target, ctx.base, n, |b, _, _| scale(b, 1.0 - depth));
    Candidate::Overlay { alpha, target }
}

/// A pit: a dark irregular disc, darker on the side away from the light, with a raised, frayed rim.
fn hole(ctx: &Ctx, rng: &mut ChaCha8Rng, margin: f32) -> Candidate {
    let n = ctx.n;
    let s = ctx.size();
    let anchor = ctx.anchor(rng, margin);
    let r = s * uniform(rng, 0.022, 0.06);
    let rim = uniform(rng, 1.2, 1.45);
    let inner = Blob::sample(rng, anchor, r, 0.25);
    let outer = Blob { centre: inner.centre, radius: r * rim, harmonics: inner.harmonics };
    let (mut alpha, mut target) = overlay(n);
    rasterize(&outer, n, &mut alpha);
    let dark = match ctx.cat {
        Category::Weave => [0.08, 0.06, 0.05],
        _ => [0.05, 0.05, 0.06],
    };
    let depth = uniform(rng, 0.4, 1.0);
    let lift = uniform(rng, 0.1, 0.35);
    let salt = rng.random::<u32>();
    fill_target(&alpha, &mut target, ctx.base, n, |b, p, _| {
        let rel = inner.rel(p);
        if rel < 1.0 {
            // Darker towards the far side from the light: a pit, not a flat disc.
            let side = 0.5 + 0.5 * ((p - anchor) * (1.0 / r)).dot(LIGHT).clamp(-1.0, 1.0);
            mix(b, scale(dark, 0.7 + 0.6 * side), depth)
        } else {
            let fray = 0.7 + 0.6 * value_noise(p * (6.0 / r), salt);
            mix(b, [1.0, 1.0, 1.0], lift * fray)
        }
    });
    Candidate::Overlay { alpha, target }
}

/// A soft tinted blob with a tide mark at its rim and mottling inside.
fn stain(ctx: &Ctx, rng: &mut ChaCha8Rng, margin: f32) -> Candidate {
    let n = ctx.n;
    let s = ctx.size();
    let anchor = ctx.anchor(rng, margin);
    let r = s * uniform(rng, 0.035, 0.1);
    let blob = Blob::sample(rng, anchor, r, 0.35);
    let (mut alpha, mut target) = overlay(n);
    rasterize(&blob, n, &mut alpha);
    let tints: [Rgb; 5] =
        [[0.80, 0.62, 0.42], [0.55, 0.55, 0.58], [0.95, 0.85, 0.45], [0.85, 0.50, 0.35], [0.70, 0.78, 0.95]];
    let tint = tints[rng.random_range(0..tints.len())];
    let strength = uniform(rng, 0.25, 0.9);
    let salt = rng.random::<u32>();
    // Alpha: coverage × strength × (tide mark at the rim + mottling inside).
    for (i, a) in alpha.iter_mut().enumerate() {
        if *a > 0.0 {
            let p = v2((i % n) as f32 + 0.5, (i / n) as f32 + 0.5);
            let rel = blob.rel(p).min(1.0);
            let tide = 0.6 + 0.4 * (-((rel - 0.88) / 0.1).powi(2)).exp();
            let mottle = 0.8 + 0.4 * value_noise(p * (3.0 / r), salt);
            *a *= (strength * tide * mottle).min(1.0);
        }
    }
    fill_target(&alpha, &mut target, ctx.base, n, |b, _, _| mul(b, tint));
    Candidate::Overlay { alpha, target }
}

/// weave: a foreign fibre lying on the fabric.
fn foreign_fibre(ctx: &Ctx, rng: &mut ChaCha8Rng, margin: f32) -> Candidate {
    let n = ctx.n;
    let s = ctx.size();
    // A foreign fibre lying on the fabric.
    let anchor = ctx.anchor(rng, margin);
    let length = s * uniform(rng, 0.2, 0.45);
    let w = (s * uniform(rng, 0.004, 0.008)).max(0.7);
    let points = curve(rng, anchor, length, 0.45);
    let half = taper(points.len(), w, 0.6);
    let stroke = Stroke { points, half };
    let (mut alpha, mut target) = overlay(n);
    rasterize(&stroke, n, &mut alpha);
    let colours: [Rgb; 4] = [[0.12, 0.16, 0.38], [0.55, 0.10, 0.10], [0.10, 0.10, 0.10], [0.95, 0.95, 0.93]];
    let colour = colours[rng.random_range(0..colours.len())];
    let opacity = uniform(rng, 0.35, 1.0);
    for a in alpha.iter_mut() {
        *a *= opacity;
    }
    fill_target(&alpha, &mut target, ctx.base, n, |_, _, _| colour);
    Candidate::Overlay { alpha, target }
}

/// pcb (half of its extra parts): a stray chip part dropped on the board.
fn stray_component(ctx: &Ctx, rng: &mut ChaCha8Rng, margin: f32) -> Candidate {
    // A stray chip part dropped on the board.
    let anchor = ctx.anchor(rng, margin);
    let hx = uniform(rng, 0.035, 0.05);
    let part = Component::new(
        Part::Chip { hx, hy: hx * 0.48, body: if rng.random_bool(0.5) { BEIGE } else { BLACK_CHIP } },
        ctx.to_object(anchor),
        uniform(rng, 0.0, PI),
    );
    let mut scene = ctx.scene.clone();
    if let Scene::Pcb(pcb) = &mut scene {
        pcb.placed.push(Some(part));
    }
    Candidate::Scene(scene)
}

/// A particle shaded as a lump: a solder blob (pcb) or debris (elsewhere).
fn particle(ctx: &Ctx, rng: &mut ChaCha8Rng, margin: f32) -> Candidate {
    let n = ctx.n;
    let s = ctx.size();
    // A particle: solder blob (pcb) or debris (elsewhere), shaded as a lump.
    let anchor = ctx.anchor(rng, margin);
    let solder = ctx.cat == Category::Pcb;
    let r = s * if solder { uniform(rng, 0.026, 0.045) } else { uniform(rng, 0.025, 0.055) };
    let blob = Blob::sample(rng, anchor, r, if solder { 0.12 } else { 0.4 });
    let (mut alpha, mut target) = overlay(n);
    rasterize(&blob, n, &mut alpha);
    let colour = if solder {
        [0.82, 0.82, 0.84]
    } else {
        let debris: [Rgb; 3] = [[0.40, 0.30, 0.20], [0.55, 0.52, 0.48], [0.30, 0.22, 0.12]];
        debris[rng.random_range(0..debris.len())]
    };
    let salt = rng.random::<u32>();
    fill_target(&alpha, &mut target, ctx.base, n, |_, p, _| {
        let d = (p - anchor) * (1.0 / r);
        let light = 0.75 + 0.35 * d.dot(LIGHT).clamp(-1.0, 1.0);
        let spec = if solder { 0.6 * (-((d - LIGHT * 0.4).len() / 0.25).powi(2)).exp() } else { 0.0 };
        let grain = if solder { 1.0 } else { 0.8 + 0.4 * value_noise(p * (4.0 / r), salt) };
        let c = scale(colour, light * grain);
        [c[0] + spec, c[1] + spec, c[2] + spec]
    });
    Candidate::Overlay { alpha, target }
}

/// grid: wires removed inside a disc, showing the backing.
fn torn_wires(ctx: &Ctx, rng: &mut ChaCha8Rng, margin: f32) -> Candidate {
    let anchor = ctx.anchor(rng, margin);
    let mut scene = ctx.scene.clone();
    if let Scene::Grid(g) = &mut scene {
        g.tear = Some((ctx.to_object(anchor), uniform(rng, 0.045, 0.1)));
    }
    Candidate::Scene(scene)
}

/// grid: wires displaced inside a disc.
fn bent_wires(ctx: &Ctx, rng: &mut ChaCha8Rng, margin: f32) -> Candidate {
    let anchor = ctx.anchor(rng, margin);
    let mut scene = ctx.scene.clone();
    if let Scene::Grid(g) = &mut scene {
        let r = uniform(rng, 0.06, 0.13);
        let d = V2::unit(uniform(rng, 0.0, 2.0 * PI)) * (g.period * uniform(rng, 0.3, 0.6));
        g.bend = Some((ctx.to_object(anchor), r, d));
    }
    Candidate::Scene(scene)
}

/// washer: material missing at the outer or inner edge.
fn washer_notch(ctx: &Ctx, rng: &mut ChaCha8Rng) -> Candidate {
    let mut scene = ctx.scene.clone();
    if let Scene::Washer(w) = &mut scene {
        let phi = uniform(rng, 0.0, 2.0 * PI);
        let outer = rng.random_bool(0.65);
        let (edge, r) =
            if outer { (Washer::R_OUT, uniform(rng, 0.04, 0.09)) } else { (Washer::R_IN, uniform(rng, 0.035, 0.07)) };
        let c = CENTRE + V2::unit(phi) * (edge + signed(rng, 0.0, 0.3) * r);
        w.notch = Some((c, r));
    }
    Candidate::Scene(scene)
}

/// bracket: a chip out of a corner or an edge.
fn chipped_edge(ctx: &Ctx, rng: &mut ChaCha8Rng) -> Candidate {
    let mut scene = ctx.scene.clone();
    if let Scene::Bracket(b) = &mut scene {
        let p = Bracket::OUTLINE[rng.random_range(0..Bracket::OUTLINE.len())];
        let c = p + v2(uniform(rng, -0.02, 0.02), uniform(rng, -0.02, 0.02));
        b.chip = Some((c, uniform(rng, 0.04, 0.085)));
    }
    Candidate::Scene(scene)
}

/// pcb: one component not placed.
fn missing_component(ctx: &Ctx, rng: &mut ChaCha8Rng) -> Candidate {
    let mut scene = ctx.scene.clone();
    if let Scene::Pcb(pcb) = &mut scene {
        let k = rng.random_range(0..pcb.placed.len());
        pcb.placed[k] = None;
    }
    Candidate::Scene(scene)
}

/// pcb: one component shifted, rotated, or both.
fn misplaced_component(ctx: &Ctx, rng: &mut ChaCha8Rng) -> Candidate {
    let mut scene = ctx.scene.clone();
    if let Scene::Pcb(pcb) = &mut scene {
        let k = rng.random_range(0..pcb.placed.len());
        if let Some(c) = &mut pcb.placed[k] {
            let mode = rng.random_range(0..3u32);
            if mode != 1 {
                let reach = (c.extent() * 0.5).clamp(0.025, 0.06);
                c.centre = c.centre + V2::unit(uniform(rng, 0.0, 2.0 * PI)) * (reach * uniform(rng, 0.6, 1.0));
            }
            if mode != 0 {
                c.angle += signed(rng, 0.12, 0.45);
            }
        }
    }
    Candidate::Scene(scene)
}

/// Applies a candidate to `base`: the defective base rendering and the mask of changed pixels.
pub(super) fn apply_candidate(candidate: &Candidate, ctx: &Ctx) -> (Vec<Rgb>, Vec<bool>) {
    let n = ctx.n;
    let mut out = ctx.base.rgb.clone();
    let mut mask = vec![false; n * n];
    let mut set = |i: usize, v: Rgb| {
        let b = ctx.base.rgb[i];
        if (0..3).any(|ch| (v[ch] - b[ch]).abs() >= CHANGE_EPS) {
            out[i] = v;
            mask[i] = true;
        }
    };
    match candidate {
        Candidate::Overlay { alpha, target } => {
            for i in 0..n * n {
                if alpha[i] > 0.0 {
                    set(i, mix(ctx.base.rgb[i], target[i], alpha[i]));
                }
            }
        }
        Candidate::Scene(scene) => {
            let other = render_scene(scene, &ctx.pose, n);
            for (i, v) in other.rgb.into_iter().enumerate() {
                set(i, v);
            }
        }
    }
    (out, mask)
}
