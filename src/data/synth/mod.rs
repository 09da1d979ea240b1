//! A synthetic anomaly-detection dataset in the MVTec AD layout, with known defects and exact
//! pixel masks: the project's test data and the data of `promptad demo`.
//!
//! # Layout
//!
//! For each category, exactly as MVTec AD:
//!
//! ```text
//! <root>/<category>/train/good/000.png ...
//! <root>/<category>/test/good/000.png ...
//! <root>/<category>/test/<defect_type>/000.png ...
//! <root>/<category>/ground_truth/<defect_type>/000_mask.png ...
//! <root>/synth.json
//! ```
//!
//! Images are 8-bit RGB PNGs of `image_size × image_size`; masks are 8-bit grey PNGs of the same
//! size, 0 for background and 255 for defect; good images have no mask. `synth.json` holds a
//! [`SynthSummary`]: the config and, per category, the defect types, their counts and the range of
//! their mask areas. It is written last: a directory without it is incomplete.
//!
//! # Categories
//!
//! | category  | kind    | what                                         | defect types                                |
//! |-----------|---------|----------------------------------------------|---------------------------------------------|
//! | `weave`   | texture | plain-woven fabric                           | hole, stain, extra_part (foreign fibre)     |
//! | `marble`  | texture | veined stone, a smooth noise texture         | crack, scratch, stain, hole (pit)           |
//! | `grid`    | texture | woven metal mesh on a dark backing           | missing_part (torn wires), extra_part (debris), misplacement (bent wires) |
//! | `washer`  | object  | machined steel ring on a table               | scratch, crack, missing_part (notch), stain |
//! | `bracket` | object  | L-shaped zinc plate with three holes         | hole (dent), missing_part (chipped edge), scratch |
//! | `pcb`     | object  | circuit board with ICs, chip parts, capacitors | missing_part, extra_part (solder, stray part), misplacement, scratch |
//!
//! # Variation
//!
//! Normal images differ among themselves the way photographs of one product do: each has its own
//! small rotation (±3–4°), shift (±2–3 %) and scale (±3 %), texture phase (a different piece of the
//! fabric, stone or mesh; machining marks; background), component placement tolerance (pcb),
//! lighting (gain ±12 %, a linear gradient, vignetting, a slight colour tint) and sensor noise
//! (σ 1.5–4.5 grey levels). "Any difference from the shots" is therefore no detector.
//!
//! Defects are local: each mask covers between [`MIN_DEFECT_AREA`] and [`MAX_DEFECT_AREA`] of the
//! image, and their contrast is drawn from a range that includes faint ones (a stain a few grey
//! levels deep, a scratch a little brighter than the metal).
//!
//! # Masks
//!
//! An image is rendered once without and once with its defect, before lighting and noise, which
//! are then applied identically to both. The mask is exactly the set of pixels the defect changed
//! there (by at least half a grey level), so the defective image equals its defect-free rendering
//! outside the mask, byte for byte; [`render`] returns both renderings and the mask so that this is
//! testable. At least [`MIN_VISIBLE_FRACTION`] of the mask's pixels differ in the 8-bit output.
//!
//! # Determinism
//!
//! Every image has its own ChaCha8 generator seeded from (seed, category, split, index), so the
//! output depends on the config only, not on thread scheduling: the same config gives
//! byte-identical files.
//!
//! # Files
//!
//! This file holds the public API (config, summaries, [`render`], [`render_good`]) and
//! `render_image`, which puts one image together. The rest, in the order an image is made:
//! `catalog` (categories and defect types), `camera` (pose, lighting, sensor noise), `scene`
//! (what the camera sees, and its antialiased rendering) with `textures`, `objects` and `pcb`
//! (one scene per category), `defects` (one sampler per defect type, and the exact mask) with
//! `shapes` (strokes and blobs that overlay defects are drawn with), and `output` ([`generate`]:
//! the dataset on disk). `geometry` and `noise` are the small maths all of them share.

mod camera;
mod catalog;
mod defects;
mod geometry;
mod noise;
mod objects;
mod output;
mod pcb;
mod scene;
mod shapes;
mod textures;

use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use camera::{Finish, Look};
use catalog::{Category, DefectKind, CATEGORIES};
use defects::{apply_candidate, sample_defect, Ctx};
use noise::splitmix64;
use scene::{render_scene, Scene};

pub use output::generate;

/// Smallest mask area of a defect, as a fraction of the image area.
pub const MIN_DEFECT_AREA: f64 = 0.002;
/// Largest mask area of a defect, as a fraction of the image area.
pub const MAX_DEFECT_AREA: f64 = 0.08;
/// Smallest fraction of a mask's pixels that differ between the 8-bit defective image and its
/// defect-free rendering.
pub const MIN_VISIBLE_FRACTION: f64 = 0.6;
/// Smallest `image_size`.
pub const MIN_IMAGE_SIZE: u32 = 64;
/// Largest `image_size`.
pub const MAX_IMAGE_SIZE: u32 = 1024;
/// Most images in one directory (names are three digits, as in MVTec AD).
pub const MAX_IMAGES_PER_DIR: usize = 1000;
/// Name of the description file at the dataset root.
pub const SUMMARY_FILE: &str = "synth.json";
/// The `format` of [`SynthSummary`].
pub const SUMMARY_FORMAT: &str = "promptad-synth/1";

/// Tries at placing a defect before giving up.
const MAX_ATTEMPTS: usize = 400;
/// A pixel counts as changed by a defect when a channel moves by at least this (half a grey level).
const CHANGE_EPS: f32 = 0.5 / 255.0;

/// What to generate. `overwrite` is a write option, not part of the dataset: it is not serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Seed of everything random.
    pub seed: u64,
    /// Category names (see [`categories`]); the default is all of them.
    pub categories: Vec<String>,
    /// Width and height of every image, in pixels.
    pub image_size: u32,
    /// Normal images per category in `train/good`.
    pub train_good: usize,
    /// Normal images per category in `test/good`.
    pub test_good: usize,
    /// Defective images per defect type and category in `test/<defect_type>`.
    pub test_defective_per_type: usize,
    /// How the images are encoded (masks are always PNG).
    #[serde(default)]
    pub encoding: ImageEncoding,
    /// Write into a non-empty root: remove `synth.json` and the directories of the generated
    /// categories first (other entries are left alone). Without it a non-empty root is refused.
    #[serde(skip)]
    pub overwrite: bool,
}

/// The file format of generated images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ImageEncoding {
    /// Lossless, `.png` (MVTec AD's format).
    #[default]
    Png,
    /// Baseline JPEG at quality 90, `.jpg` (VisA's format, and most inspection cameras'): the
    /// pixels are the JPEG's, so the defect edges blur slightly against the PNG masks.
    Jpeg,
}

impl ImageEncoding {
    /// The file extension of an image in this encoding.
    pub fn extension(self) -> &'static str {
        match self {
            ImageEncoding::Png => "png",
            ImageEncoding::Jpeg => "jpg",
        }
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            categories: CATEGORIES.iter().map(|c| c.name().to_string()).collect(),
            image_size: 256,
            train_good: 8,
            test_good: 6,
            test_defective_per_type: 3,
            encoding: ImageEncoding::Png,
            overwrite: false,
        }
    }
}

/// Contents of `synth.json`, also returned by [`generate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthSummary {
    /// [`SUMMARY_FORMAT`].
    pub format: String,
    pub config: SynthConfig,
    pub categories: Vec<CategorySummary>,
}

impl SynthSummary {
    /// The summary of one category.
    pub fn category(&self, name: &str) -> Option<&CategorySummary> {
        self.categories.iter().find(|c| c.name == name)
    }
}

/// What was generated for one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategorySummary {
    pub name: String,
    /// `texture` or `object`.
    pub kind: String,
    pub description: String,
    /// Images in `train/good`.
    pub train_good: usize,
    /// Images in `test/good`.
    pub test_good: usize,
    /// One entry per `test/<defect_type>` directory, in generation order.
    pub defects: Vec<DefectSummary>,
}

impl CategorySummary {
    /// Defective test images over all defect types.
    pub fn test_defective(&self) -> usize {
        self.defects.iter().map(|d| d.count).sum()
    }
}

/// One defect type of a category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefectSummary {
    /// Directory name under `test/` and `ground_truth/`.
    pub defect_type: String,
    /// Images (and masks) of this type.
    pub count: usize,
    /// Smallest mask area over these images, as a fraction of the image area (`None` if no image).
    pub min_area_fraction: Option<f64>,
    /// Largest mask area over these images, as a fraction of the image area.
    pub max_area_fraction: Option<f64>,
}

/// A built-in category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryInfo {
    pub name: &'static str,
    /// `texture` or `object`.
    pub kind: &'static str,
    pub description: &'static str,
    pub defect_types: Vec<&'static str>,
}

/// One image rendered with and without its defect (see the module docs, "Masks").
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The image without the defect: identical to the good image of the same seed.
    pub clean: RgbImage,
    /// The same image with the defect.
    pub defective: RgbImage,
    /// 255 where the defect changed the image, 0 elsewhere.
    pub mask: GrayImage,
}

/// Errors of [`generate`] and [`render`].
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unknown synth category {name:?}; available: {}", available.join(", "))]
    UnknownCategory { name: String, available: Vec<String> },
    #[error("synth category {category} has no defect type {defect:?}; its defect types: {}", available.join(", "))]
    UnknownDefect { category: String, defect: String, available: Vec<String> },
    #[error("invalid synth config: {0}")]
    InvalidConfig(String),
    #[error("{} is not empty (pass overwrite / --overwrite to replace the generated categories in it)", .0.display())]
    NotEmpty(PathBuf),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("{what} {}", path.display())]
    Json {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not place a {defect} defect on {category} (image seed {seed}) within the area and visibility bounds in {MAX_ATTEMPTS} attempts")]
    Placement { category: &'static str, defect: &'static str, seed: u64 },
}

/// The object name a generated category is prompted with: its name with spaces for `_`.
pub fn prompt_name(category: &str) -> String {
    category.replace('_', " ")
}

/// The manual anomaly states of a generated category: `"{} with <defect type>"` for each of its
/// defect types, with spaces for `_` (what `promptad demo` and a spec with `catalog = "synth"`
/// train with).
pub fn anomaly_states<S: AsRef<str>>(defect_types: &[S]) -> Vec<String> {
    defect_types.iter().map(|d| format!("{{}} with {}", d.as_ref().replace('_', " "))).collect()
}

/// The built-in categories, in their default order.
pub fn categories() -> Vec<CategoryInfo> {
    CATEGORIES.iter().map(|c| c.info()).collect()
}

/// Number of images (a defective image and its mask count once) that `config` generates.
pub fn planned_images(config: &SynthConfig) -> Result<usize, SynthError> {
    let cats = validate(config)?;
    Ok(cats
        .iter()
        .map(|c| config.train_good + config.test_good + c.defects().len() * config.test_defective_per_type)
        .sum())
}

/// Renders one defective image of `category` with defect type `defect`, together with its
/// defect-free rendering and mask. `seed` fixes everything (the same seed gives the same images).
pub fn render(category: &str, defect: &str, seed: u64, size: u32) -> Result<Rendered, SynthError> {
    let cat = Category::parse(category)?;
    let kind = cat.defect(defect)?;
    check_size(size)?;
    let (clean, defect) = render_image(cat, Some(kind), seed, size)?;
    let (defective, mask) = defect.expect("a defect was asked for");
    Ok(Rendered { clean, defective, mask })
}

/// Renders one normal image of `category`; equal to `render(category, _, seed, size).clean`.
pub fn render_good(category: &str, seed: u64, size: u32) -> Result<RgbImage, SynthError> {
    let cat = Category::parse(category)?;
    check_size(size)?;
    Ok(render_image(cat, None, seed, size)?.0)
}

/// The seed of image `index` of `split` (`train/good`, `test/good`, `test/<defect_type>`) of
/// `category` in a dataset of seed `seed`.
pub fn image_seed(seed: u64, category: &str, split: &str, index: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in category.bytes().chain([0u8]).chain(split.bytes()).chain([0u8]).chain((index as u64).to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix64(splitmix64(seed) ^ h)
}

/// Reads `<root>/synth.json`.
pub fn read_summary(root: &Path) -> Result<SynthSummary, SynthError> {
    let path = root.join(SUMMARY_FILE);
    let bytes =
        std::fs::read(&path).map_err(|source| SynthError::Io { what: "reading", path: path.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| SynthError::Json { what: "parsing", path, source })
}

fn check_size(size: u32) -> Result<(), SynthError> {
    if !(MIN_IMAGE_SIZE..=MAX_IMAGE_SIZE).contains(&size) {
        return Err(SynthError::InvalidConfig(format!(
            "image_size {size} is outside [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]"
        )));
    }
    Ok(())
}

fn validate(config: &SynthConfig) -> Result<Vec<Category>, SynthError> {
    check_size(config.image_size)?;
    if config.categories.is_empty() {
        return Err(SynthError::InvalidConfig("no categories".into()));
    }
    let mut cats = Vec::new();
    for name in &config.categories {
        let cat = Category::parse(name)?;
        if cats.contains(&cat) {
            return Err(SynthError::InvalidConfig(format!("category {name} is listed twice")));
        }
        cats.push(cat);
    }
    if config.train_good == 0 {
        return Err(SynthError::InvalidConfig("train_good must be at least 1".into()));
    }
    for (what, n) in [
        ("train_good", config.train_good),
        ("test_good", config.test_good),
        ("test_defective_per_type", config.test_defective_per_type),
    ] {
        if n > MAX_IMAGES_PER_DIR {
            return Err(SynthError::InvalidConfig(format!("{what} {n} is over {MAX_IMAGES_PER_DIR}")));
        }
    }
    Ok(cats)
}

/// Renders one image of `cat`: the clean image and, if `defect` is given, the defective image
/// and its mask.
#[allow(clippy::type_complexity)]
fn render_image(
    cat: Category,
    defect: Option<DefectKind>,
    seed: u64,
    size: u32,
) -> Result<(RgbImage, Option<(RgbImage, GrayImage)>), SynthError> {
    let n = size as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let look = Look::sample(&mut rng, cat);
    let scene = Scene::sample(&mut rng, cat);
    let finish = Finish::new(&look, n, splitmix64(seed ^ 0x6e6f_6973_655f_7365));
    let base = render_scene(&scene, &look.pose, n);
    let clean = finish.apply(&base.rgb, n);
    let Some(kind) = defect else {
        return Ok((clean, None));
    };
    let ctx = Ctx { cat, n, pose: look.pose, scene: &scene, base: &base };
    let total = (n * n) as f64;
    for _ in 0..MAX_ATTEMPTS {
        let candidate = sample_defect(&ctx, kind, &mut rng);
        let (rgb, mask) = apply_candidate(&candidate, &ctx);
        let area = mask.iter().filter(|&&m| m).count();
        if !(MIN_DEFECT_AREA..=MAX_DEFECT_AREA).contains(&(area as f64 / total)) {
            continue;
        }
        let defective = finish.apply(&rgb, n);
        let visible =
            mask.iter().zip(defective.pixels().zip(clean.pixels())).filter(|(m, (a, b))| **m && a != b).count();
        if (visible as f64) < MIN_VISIBLE_FRACTION * area as f64 {
            continue;
        }
        let mask = GrayImage::from_raw(size, size, mask.iter().map(|&m| if m { 255 } else { 0 }).collect())
            .expect("n*n bytes");
        return Ok((clean, Some((defective, mask))));
    }
    Err(SynthError::Placement { category: cat.name(), defect: kind.name(), seed })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u32 = 96;

    fn all_kinds() -> Vec<(Category, DefectKind)> {
        CATEGORIES.iter().flat_map(|&c| c.defects().iter().map(move |&d| (c, d))).collect()
    }

    #[test]
    fn every_defect_is_local_visible_and_masked_exactly() {
        let total = (SIZE * SIZE) as f64;
        for (cat, kind) in all_kinds() {
            for seed in 0..4u64 {
                let r = render(cat.name(), kind.name(), seed * 7919 + 1, SIZE).unwrap();
                assert_eq!(r.mask.dimensions(), (SIZE, SIZE));
                assert!(
                    r.mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255),
                    "{} {}: mask not binary",
                    cat.name(),
                    kind.name()
                );
                let area = r.mask.pixels().filter(|p| p.0[0] == 255).count();
                let frac = area as f64 / total;
                assert!(
                    (MIN_DEFECT_AREA..=MAX_DEFECT_AREA).contains(&frac),
                    "{} {} seed {seed}: area {frac}",
                    cat.name(),
                    kind.name()
                );
                let mut changed = 0;
                for (x, y, m) in r.mask.enumerate_pixels() {
                    let differs = r.clean.get_pixel(x, y) != r.defective.get_pixel(x, y);
                    assert!(
                        m.0[0] == 255 || !differs,
                        "{} {}: change outside the mask at ({x}, {y})",
                        cat.name(),
                        kind.name()
                    );
                    changed += usize::from(differs);
                }
                assert!(changed as f64 >= MIN_VISIBLE_FRACTION * area as f64);
            }
        }
    }

    #[test]
    fn clean_rendering_is_the_good_image_of_the_same_seed() {
        for (cat, kind) in all_kinds() {
            let r = render(cat.name(), kind.name(), 42, SIZE).unwrap();
            assert_eq!(r.clean, render_good(cat.name(), 42, SIZE).unwrap(), "{}", cat.name());
        }
    }

    #[test]
    fn rendering_is_deterministic_and_seed_dependent() {
        for cat in CATEGORIES {
            let a = render_good(cat.name(), 5, SIZE).unwrap();
            assert_eq!(a, render_good(cat.name(), 5, SIZE).unwrap());
            let b = render_good(cat.name(), 6, SIZE).unwrap();
            let diff: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>()
                / a.as_raw().len() as f64;
            assert!(diff > 2.0, "{}: normal images too alike (mean abs diff {diff})", cat.name());
        }
    }

    #[test]
    fn image_seeds_differ_by_every_coordinate() {
        let s = image_seed(1, "pcb", "train/good", 0);
        assert_eq!(s, image_seed(1, "pcb", "train/good", 0));
        assert_ne!(s, image_seed(2, "pcb", "train/good", 0));
        assert_ne!(s, image_seed(1, "grid", "train/good", 0));
        assert_ne!(s, image_seed(1, "pcb", "test/good", 0));
        assert_ne!(s, image_seed(1, "pcb", "train/good", 1));
        assert_ne!(image_seed(1, "ab", "c", 0), image_seed(1, "a", "bc", 0));
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = render_good("carpet", 0, SIZE).unwrap_err().to_string();
        assert!(e.contains("carpet") && e.contains("weave") && e.contains("pcb"), "{e}");
        let e = render("weave", "crack", 0, SIZE).unwrap_err().to_string();
        assert!(e.contains("crack") && e.contains("hole") && e.contains("stain"), "{e}");
        assert!(matches!(render_good("weave", 0, 8), Err(SynthError::InvalidConfig(_))));
    }

    #[test]
    fn every_category_has_three_or_four_defect_types_and_both_kinds_exist() {
        let infos = categories();
        assert!(infos.iter().filter(|c| c.kind == "texture").count() >= 3);
        assert!(infos.iter().filter(|c| c.kind == "object").count() >= 3);
        for c in &infos {
            assert!((3..=4).contains(&c.defect_types.len()), "{}", c.name);
        }
    }

    #[test]
    fn config_round_trips_without_overwrite() {
        let config = SynthConfig { overwrite: true, seed: 3, ..SynthConfig::default() };
        let json = serde_json::to_string(&config).unwrap();
        assert!(!json.contains("overwrite"));
        let back: SynthConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, SynthConfig { overwrite: false, ..config });
        let partial: SynthConfig = serde_json::from_str(r#"{"seed": 9}"#).unwrap();
        assert_eq!(partial, SynthConfig { seed: 9, ..SynthConfig::default() });
    }
}
