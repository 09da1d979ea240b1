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

use std::f32::consts::PI;
use std::ops::{Add, Mul, Sub};
use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

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

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

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
    /// Write into a non-empty root: remove `synth.json` and the directories of the generated
    /// categories first (other entries are left alone). Without it a non-empty root is refused.
    #[serde(skip)]
    pub overwrite: bool,
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

/// Generates the dataset of `config` under `root` (created if missing; see the module docs for
/// the layout). `on_image` is called once per image written, from the calling thread. Files are
/// written under temporary names and renamed, so none is ever half-written; `synth.json` comes
/// last. A non-empty `root` is refused unless `config.overwrite`.
pub fn generate(config: &SynthConfig, root: &Path, mut on_image: impl FnMut()) -> Result<SynthSummary, SynthError> {
    let cats = validate(config)?;
    prepare_root(root, &cats, config.overwrite)?;

    // Directories first (sequentially), then every image as an independent job.
    let mut jobs = Vec::new();
    for &cat in &cats {
        let dir = root.join(cat.name());
        let mut split = |sub: &str, defect: Option<DefectKind>, count: usize| -> Result<(), SynthError> {
            let images = dir.join(sub);
            create_dir(&images)?;
            let masks = match defect {
                Some(kind) => {
                    let masks = dir.join("ground_truth").join(kind.name());
                    create_dir(&masks)?;
                    Some(masks)
                }
                None => None,
            };
            for index in 0..count {
                jobs.push(Job {
                    cat,
                    defect,
                    seed: image_seed(config.seed, cat.name(), sub, index),
                    image: images.join(format!("{index:03}.png")),
                    mask: masks.as_ref().map(|m| m.join(format!("{index:03}_mask.png"))),
                });
            }
            Ok(())
        };
        split("train/good", None, config.train_good)?;
        split("test/good", None, config.test_good)?;
        for &kind in cat.defects() {
            split(&format!("test/{}", kind.name()), Some(kind), config.test_defective_per_type)?;
        }
    }

    let size = config.image_size;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let areas: Vec<Option<f64>> = std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            jobs.par_iter()
                .map_with(tx, |tx, job| {
                    let area = run_job(job, size)?;
                    let _ = tx.send(());
                    Ok(area)
                })
                .collect::<Result<Vec<_>, SynthError>>()
        });
        for () in rx {
            on_image();
        }
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;

    // Areas come back in job order, which follows the loops above.
    let mut areas = areas.into_iter();
    let mut summaries = Vec::new();
    for &cat in &cats {
        for _ in 0..config.train_good + config.test_good {
            areas.next();
        }
        let mut defects = Vec::new();
        for &kind in cat.defects() {
            let mut range: Option<(f64, f64)> = None;
            for _ in 0..config.test_defective_per_type {
                let a = areas.next().flatten().expect("defect jobs report their area");
                range = Some(range.map_or((a, a), |(lo, hi)| (lo.min(a), hi.max(a))));
            }
            defects.push(DefectSummary {
                defect_type: kind.name().to_string(),
                count: config.test_defective_per_type,
                min_area_fraction: range.map(|r| r.0),
                max_area_fraction: range.map(|r| r.1),
            });
        }
        let info = cat.info();
        summaries.push(CategorySummary {
            name: info.name.to_string(),
            kind: info.kind.to_string(),
            description: info.description.to_string(),
            train_good: config.train_good,
            test_good: config.test_good,
            defects,
        });
    }
    let mut written = config.clone();
    written.categories = cats.iter().map(|c| c.name().to_string()).collect();
    let summary = SynthSummary { format: SUMMARY_FORMAT.to_string(), config: written, categories: summaries };
    let path = root.join(SUMMARY_FILE);
    let mut json = serde_json::to_vec_pretty(&summary).map_err(|source| SynthError::Json {
        what: "serializing",
        path: path.clone(),
        source,
    })?;
    json.push(b'\n');
    write_atomic(&path, &json)?;
    tracing::debug!(root = %root.display(), categories = summary.categories.len(), "synthetic dataset written");
    Ok(summary)
}

// ---------------------------------------------------------------------------------------------
// Generation plumbing
// ---------------------------------------------------------------------------------------------

struct Job {
    cat: Category,
    defect: Option<DefectKind>,
    seed: u64,
    image: PathBuf,
    mask: Option<PathBuf>,
}

/// Renders and writes one job; returns the mask area fraction of a defective image.
fn run_job(job: &Job, size: u32) -> Result<Option<f64>, SynthError> {
    let (clean, defect) = render_image(job.cat, job.defect, job.seed, size)?;
    match (defect, &job.mask) {
        (Some((defective, mask)), Some(mask_path)) => {
            write_png(&job.image, &defective)?;
            write_png(mask_path, &mask)?;
            let area = mask.pixels().filter(|p| p.0[0] != 0).count() as f64 / (size as f64 * size as f64);
            Ok(Some(area))
        }
        _ => {
            write_png(&job.image, &clean)?;
            Ok(None)
        }
    }
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

fn prepare_root(root: &Path, cats: &[Category], overwrite: bool) -> Result<(), SynthError> {
    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SynthError + 'a {
        move |source| SynthError::Io { what, path: path.to_path_buf(), source }
    }
    match std::fs::read_dir(root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                if !overwrite {
                    return Err(SynthError::NotEmpty(root.to_path_buf()));
                }
                let summary = root.join(SUMMARY_FILE);
                if summary.exists() {
                    std::fs::remove_file(&summary).map_err(io("removing", &summary))?;
                }
                for cat in cats {
                    let dir = root.join(cat.name());
                    if dir.is_dir() {
                        std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
                    } else if dir.exists() {
                        std::fs::remove_file(&dir).map_err(io("removing", &dir))?;
                    }
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_dir(root),
        Err(e) => Err(io("reading directory", root)(e)),
    }
}

fn create_dir(path: &Path) -> Result<(), SynthError> {
    std::fs::create_dir_all(path).map_err(|source| SynthError::Io {
        what: "creating directory",
        path: path.to_path_buf(),
        source,
    })
}

fn write_png<P, C>(path: &Path, image: &image::ImageBuffer<P, C>) -> Result<(), SynthError>
where
    P: image::PixelWithColorType<Subpixel = u8>,
    C: std::ops::Deref<Target = [u8]>,
{
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(image.as_raw(), image.width(), image.height(), P::COLOR_TYPE)
        .map_err(|source| SynthError::Encode { path: path.to_path_buf(), source })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file next to `path` and renames it to `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::write(&tmp, bytes)
        .map_err(|source| SynthError::Io { what: "writing", path: tmp.clone(), source })
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|source| SynthError::Io {
                what: "renaming into",
                path: path.to_path_buf(),
                source,
            })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Categories and defect types
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Weave,
    Marble,
    Grid,
    Washer,
    Bracket,
    Pcb,
}

const CATEGORIES: [Category; 6] =
    [Category::Weave, Category::Marble, Category::Grid, Category::Washer, Category::Bracket, Category::Pcb];

impl Category {
    fn name(self) -> &'static str {
        match self {
            Category::Weave => "weave",
            Category::Marble => "marble",
            Category::Grid => "grid",
            Category::Washer => "washer",
            Category::Bracket => "bracket",
            Category::Pcb => "pcb",
        }
    }

    fn is_object(self) -> bool {
        matches!(self, Category::Washer | Category::Bracket | Category::Pcb)
    }

    fn description(self) -> &'static str {
        match self {
            Category::Weave => "plain-woven fabric",
            Category::Marble => "veined stone (smooth noise texture)",
            Category::Grid => "woven metal mesh on a dark backing",
            Category::Washer => "machined steel ring on a table",
            Category::Bracket => "L-shaped zinc plate with three holes",
            Category::Pcb => "circuit board with ICs, chip parts and capacitors",
        }
    }

    fn defects(self) -> &'static [DefectKind] {
        use DefectKind::*;
        match self {
            Category::Weave => &[Hole, Stain, ExtraPart],
            Category::Marble => &[Crack, Scratch, Stain, Hole],
            Category::Grid => &[MissingPart, ExtraPart, Misplacement],
            Category::Washer => &[Scratch, Crack, MissingPart, Stain],
            Category::Bracket => &[Hole, MissingPart, Scratch],
            Category::Pcb => &[MissingPart, ExtraPart, Misplacement, Scratch],
        }
    }

    fn info(self) -> CategoryInfo {
        CategoryInfo {
            name: self.name(),
            kind: if self.is_object() { "object" } else { "texture" },
            description: self.description(),
            defect_types: self.defects().iter().map(|d| d.name()).collect(),
        }
    }

    fn parse(name: &str) -> Result<Category, SynthError> {
        CATEGORIES.iter().copied().find(|c| c.name() == name).ok_or_else(|| SynthError::UnknownCategory {
            name: name.to_string(),
            available: CATEGORIES.iter().map(|c| c.name().to_string()).collect(),
        })
    }

    fn defect(self, name: &str) -> Result<DefectKind, SynthError> {
        self.defects().iter().copied().find(|d| d.name() == name).ok_or_else(|| SynthError::UnknownDefect {
            category: self.name().to_string(),
            defect: name.to_string(),
            available: self.defects().iter().map(|d| d.name().to_string()).collect(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DefectKind {
    /// A thin curved line, brighter or darker than the surface.
    Scratch,
    /// A dark blob with a raised rim.
    Hole,
    /// A branching jagged dark line.
    Crack,
    /// A soft tinted blob.
    Stain,
    /// A region or component removed, showing what is under it.
    MissingPart,
    /// A foreign particle, fibre or component.
    ExtraPart,
    /// A component shifted or rotated, or wires bent out of place.
    Misplacement,
}

impl DefectKind {
    fn name(self) -> &'static str {
        match self {
            DefectKind::Scratch => "scratch",
            DefectKind::Hole => "hole",
            DefectKind::Crack => "crack",
            DefectKind::Stain => "stain",
            DefectKind::MissingPart => "missing_part",
            DefectKind::ExtraPart => "extra_part",
            DefectKind::Misplacement => "misplacement",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small maths
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
struct V2 {
    x: f32,
    y: f32,
}

const fn v2(x: f32, y: f32) -> V2 {
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
    fn dot(self, o: V2) -> f32 {
        self.x * o.x + self.y * o.y
    }
    fn len(self) -> f32 {
        self.dot(self).sqrt()
    }
    fn rot(self, angle: f32) -> V2 {
        let (s, c) = angle.sin_cos();
        v2(c * self.x - s * self.y, s * self.x + c * self.y)
    }
    fn perp(self) -> V2 {
        v2(-self.y, self.x)
    }
    fn unit(angle: f32) -> V2 {
        v2(angle.cos(), angle.sin())
    }
    fn abs(self) -> V2 {
        v2(self.x.abs(), self.y.abs())
    }
}

const CENTRE: V2 = v2(0.5, 0.5);

type Rgb = [f32; 3];

fn scale(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn mul(a: Rgb, b: Rgb) -> Rgb {
    [a[0] * b[0], a[1] * b[1], a[2] * b[2]]
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn hash_u32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Uniform in [0, 1) from a lattice point.
fn hash2(ix: i32, iy: i32, salt: u32) -> f32 {
    let h = hash_u32((ix as u32).wrapping_mul(0x9e37_79b1) ^ hash_u32((iy as u32) ^ salt.wrapping_mul(0x85eb_ca77)));
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Smooth value noise in [0, 1].
fn value_noise(p: V2, salt: u32) -> f32 {
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
fn fbm(p: V2, octaves: u32, salt: u32) -> f32 {
    let (mut sum, mut amp, mut norm, mut freq) = (0.0, 0.5, 0.0, 1.0);
    for o in 0..octaves {
        sum += amp * value_noise(p * freq, salt.wrapping_add(o * 1013));
        norm += amp;
        amp *= 0.5;
        freq *= 2.03;
    }
    sum / norm
}

/// Rounded box signed distance (negative inside).
fn sd_box(p: V2, c: V2, half: V2, radius: f32) -> f32 {
    let d = (p - c).abs() - half + v2(radius, radius);
    let outside = v2(d.x.max(0.0), d.y.max(0.0)).len();
    outside + d.x.max(d.y).min(0.0) - radius
}

/// Distance from `p` to segment `a`–`b` and the position along it in [0, 1].
fn segment_distance(p: V2, a: V2, b: V2) -> (f32, f32) {
    let ab = b - a;
    let denom = ab.dot(ab);
    let t = if denom > 0.0 { ((p - a).dot(ab) / denom).clamp(0.0, 1.0) } else { 0.0 };
    ((p - (a + ab * t)).len(), t)
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

fn signed(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    let v = uniform(rng, lo, hi);
    if rng.random_bool(0.5) {
        v
    } else {
        -v
    }
}

fn standard_normal_pair(rng: &mut ChaCha8Rng) -> (f32, f32) {
    let u1 = 1.0 - rng.random::<f32>(); // (0, 1]
    let u2 = rng.random::<f32>();
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (2.0 * PI * u2).sin_cos();
    (r * c, r * s)
}

// ---------------------------------------------------------------------------------------------
// Per-image look: pose, lighting, noise
// ---------------------------------------------------------------------------------------------

/// Where the (unit-square) object lies in the (unit-square) image.
#[derive(Debug, Clone, Copy)]
struct Pose {
    angle: f32,
    scale: f32,
    shift: V2,
}

impl Pose {
    fn to_object(self, u: V2) -> V2 {
        CENTRE + (u - CENTRE - self.shift).rot(-self.angle) * (1.0 / self.scale)
    }
}

struct Look {
    pose: Pose,
    gain: f32,
    tint: Rgb,
    gradient: f32,
    gradient_dir: V2,
    vignette: f32,
    noise_sigma: f32,
}

impl Look {
    fn sample(rng: &mut ChaCha8Rng, cat: Category) -> Look {
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
struct Finish {
    /// Per pixel: gain × tint.
    light: Vec<Rgb>,
    noise: Vec<Rgb>,
}

impl Finish {
    fn new(look: &Look, n: usize, noise_seed: u64) -> Finish {
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

    fn apply(&self, base: &[Rgb], n: usize) -> RgbImage {
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

// ---------------------------------------------------------------------------------------------
// Scenes: what the camera sees before lighting and noise, as a function of object coordinates
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Scene {
    Weave(Weave),
    Marble(Marble),
    Grid(Grid),
    Washer(Washer),
    Bracket(Bracket),
    Pcb(Pcb),
}

impl Scene {
    fn sample(rng: &mut ChaCha8Rng, cat: Category) -> Scene {
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
    fn shade(&self, q: V2) -> (Rgb, bool) {
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
const SAMPLES: [(f32, f32); 4] = [(-0.125, -0.375), (0.375, -0.125), (0.125, 0.375), (-0.375, 0.125)];

/// A rendering before lighting and noise.
struct Base {
    rgb: Vec<Rgb>,
    /// Fraction of each pixel on the part.
    part: Vec<f32>,
}

fn render_scene(scene: &Scene, pose: &Pose, n: usize) -> Base {
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

#[derive(Debug, Clone)]
struct Weave {
    phase: V2,
    period: f32,
    salt: u32,
}

impl Weave {
    const WARP: Rgb = [0.80, 0.70, 0.54];
    const WEFT: Rgb = [0.74, 0.62, 0.47];
    const GAP: Rgb = [0.22, 0.17, 0.12];

    fn shade(&self, q: V2) -> Rgb {
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
struct Marble {
    phase: V2,
    salt: u32,
}

impl Marble {
    fn shade(&self, q: V2) -> Rgb {
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
struct Grid {
    phase: V2,
    period: f32,
    /// Half width of a wire, in periods.
    half_width: f32,
    /// Wires removed inside this disc (object coordinates).
    tear: Option<(V2, f32)>,
    /// Wires displaced inside a disc: (centre, radius, displacement at the centre).
    bend: Option<(V2, f32, V2)>,
    salt: u32,
}

impl Grid {
    const METAL: Rgb = [0.74, 0.76, 0.80];
    const BACKING: Rgb = [0.10, 0.10, 0.11];

    fn shade(&self, q0: V2) -> Rgb {
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

/// Towards the light, in object coordinates.
const LIGHT: V2 = v2(-0.6, -0.8);

#[derive(Debug, Clone)]
struct Washer {
    /// Material removed inside this disc.
    notch: Option<(V2, f32)>,
    rings_phase: f32,
    bg_phase: V2,
    salt: u32,
}

impl Washer {
    const R_OUT: f32 = 0.33;
    const R_IN: f32 = 0.14;
    const STEEL: Rgb = [0.70, 0.71, 0.74];
    const TABLE: Rgb = [0.26, 0.23, 0.20];
    const SHADOW: V2 = v2(0.012, 0.016);

    fn on_ring(&self, q: V2) -> bool {
        let r = (q - CENTRE).len();
        (Self::R_IN..=Self::R_OUT).contains(&r) && self.notch.is_none_or(|(c, nr)| (q - c).len() > nr)
    }

    fn shade(&self, q: V2) -> (Rgb, bool) {
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
struct Bracket {
    /// Material removed inside this disc.
    chip: Option<(V2, f32)>,
    bg_phase: V2,
    brush_phase: f32,
    salt: u32,
}

impl Bracket {
    const ZINC: Rgb = [0.74, 0.75, 0.78];
    const BACKGROUND: Rgb = [0.20, 0.24, 0.30];
    const HOLES: [(V2, f32); 3] = [(v2(0.30, 0.33), 0.055), (v2(0.56, 0.68), 0.05), (v2(0.72, 0.68), 0.045)];
    const SHADOW: V2 = v2(0.014, 0.018);
    /// Corners and edge points of the outline, where a chip may be.
    const OUTLINE: [V2; 9] = [
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

    fn sd(&self, q: V2) -> f32 {
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

    fn shade(&self, q: V2) -> (Rgb, bool) {
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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    /// An IC: body half sizes and pins per long side (pins along ±y).
    Ic { hx: f32, hy: f32, pins: u32 },
    /// A two-terminal chip part (resistor or ceramic capacitor) along x.
    Chip { hx: f32, hy: f32, body: Rgb },
    /// An electrolytic capacitor seen from above.
    Cap { r: f32 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Component {
    part: Part,
    centre: V2,
    angle: f32,
}

impl Component {
    const fn new(part: Part, centre: V2, angle: f32) -> Component {
        Component { part, centre, angle }
    }

    fn local(&self, q: V2) -> V2 {
        (q - self.centre).rot(-self.angle)
    }

    /// Radius of a disc around the centre that holds the component.
    fn extent(&self) -> f32 {
        match self.part {
            Part::Ic { hx, hy, .. } => v2(hx, hy + 0.03).len(),
            Part::Chip { hx, hy, .. } => v2(hx, hy).len(),
            Part::Cap { r } => r,
        }
    }

    /// Whether `q` is farther than `extent() + margin` from the centre (nothing of it there).
    fn far(&self, q: V2, margin: f32) -> bool {
        let d = q - self.centre;
        let r = self.extent() + margin;
        d.dot(d) > r * r
    }

    fn shade(&self, q: V2, salt: u32) -> Option<Rgb> {
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
    fn pad(&self, q: V2) -> bool {
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
    fn silk(&self, q: V2) -> bool {
        let l = self.local(q);
        let w = 0.0045;
        match self.part {
            Part::Ic { hx, hy, .. } => (sd_box(l, v2(0.0, 0.0), v2(hx + 0.02, hy + 0.05), 0.0)).abs() < w,
            Part::Chip { hx, hy, .. } => (sd_box(l, v2(0.0, 0.0), v2(hx + 0.025, hy + 0.02), 0.0)).abs() < w,
            Part::Cap { r } => (l.len() - r * 1.15).abs() < w,
        }
    }
}

const BEIGE: Rgb = [0.78, 0.66, 0.48];
const BLACK_CHIP: Rgb = [0.11, 0.11, 0.12];

const PCB_LAYOUT: [Component; 9] = [
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

const PCB_TRACES: [&[V2]; 8] = [
    &[v2(0.42, 0.245), v2(0.42, 0.18), v2(0.62, 0.18), v2(0.645, 0.22)],
    &[v2(0.24, 0.245), v2(0.24, 0.15), v2(0.12, 0.15), v2(0.12, 0.345)],
    &[v2(0.12, 0.455), v2(0.12, 0.62), v2(0.185, 0.62)],
    &[v2(0.295, 0.62), v2(0.44, 0.62), v2(0.44, 0.60)],
    &[v2(0.46, 0.415), v2(0.46, 0.50), v2(0.56, 0.50), v2(0.59, 0.47)],
    &[v2(0.755, 0.22), v2(0.86, 0.22), v2(0.86, 0.365)],
    &[v2(0.86, 0.475), v2(0.86, 0.68), v2(0.79, 0.68)],
    &[v2(0.57, 0.74), v2(0.50, 0.80), v2(0.35, 0.84)],
];

const PCB_VIAS: [V2; 6] =
    [v2(0.52, 0.25), v2(0.90, 0.56), v2(0.16, 0.88), v2(0.55, 0.90), v2(0.20, 0.50), v2(0.76, 0.50)];
const PCB_MOUNTS: [V2; 4] = [v2(0.06, 0.06), v2(0.94, 0.06), v2(0.06, 0.94), v2(0.94, 0.94)];

#[derive(Debug, Clone)]
struct Pcb {
    /// Components as placed (nominal place plus tolerance); `None` where one is missing.
    placed: Vec<Option<Component>>,
    phase: V2,
    salt: u32,
}

impl Pcb {
    const BOARD: Rgb = [0.07, 0.34, 0.17];
    const TRACE: Rgb = [0.16, 0.48, 0.24];
    const PAD: Rgb = [0.80, 0.77, 0.66];
    const SILK: Rgb = [0.90, 0.90, 0.86];

    fn sample(rng: &mut ChaCha8Rng, phase: V2, salt: u32) -> Pcb {
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

    fn shade(&self, q: V2) -> Rgb {
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

// ---------------------------------------------------------------------------------------------
// Defects
// ---------------------------------------------------------------------------------------------

/// Everything a defect sampler may look at.
struct Ctx<'a> {
    cat: Category,
    n: usize,
    pose: Pose,
    scene: &'a Scene,
    base: &'a Base,
}

impl Ctx<'_> {
    fn size(&self) -> f32 {
        self.n as f32
    }

    /// A pixel position fully on the part, away from the border.
    fn anchor(&self, rng: &mut ChaCha8Rng, margin: f32) -> V2 {
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
    fn to_object(&self, p: V2) -> V2 {
        self.pose.to_object(p * (1.0 / self.size()))
    }
}

/// A defect as a candidate rendering (before lighting and noise); the mask is derived from it.
enum Candidate {
    /// Blend towards `target` by `alpha` (both full size; target is read where alpha > 0).
    Overlay { alpha: Vec<f32>, target: Vec<Rgb> },
    /// The scene with the defect built in.
    Scene(Scene),
}

/// Pixel-space shape with antialiased coverage.
trait Shape {
    /// Inclusive-exclusive pixel bounding box (x0, y0, x1, y1), unclipped.
    fn bbox(&self) -> (f32, f32, f32, f32);
    fn contains(&self, p: V2) -> bool;
}

/// A polyline with a half width at each vertex.
struct Stroke {
    points: Vec<V2>,
    half: Vec<f32>,
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
struct Blob {
    centre: V2,
    radius: f32,
    harmonics: [(f32, f32); 3],
}

impl Blob {
    fn sample(rng: &mut ChaCha8Rng, centre: V2, radius: f32, roughness: f32) -> Blob {
        let mut harmonics = [(0.0, 0.0); 3];
        for (k, h) in harmonics.iter_mut().enumerate() {
            *h = (uniform(rng, 0.0, roughness) / (k as f32 + 1.0), uniform(rng, 0.0, 2.0 * PI));
        }
        Blob { centre, radius, harmonics }
    }

    /// Distance from the centre relative to the local radius (< 1 inside).
    fn rel(&self, p: V2) -> f32 {
        let d = p - self.centre;
        let phi = d.y.atan2(d.x);
        let mut r = 1.0;
        for (k, (amp, ph)) in self.harmonics.iter().enumerate() {
            r += amp * ((k as f32 + 2.0) * phi + ph).sin();
        }
        d.len() / (self.radius * r)
    }

    fn max_radius(&self) -> f32 {
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
fn rasterize(shape: &dyn Shape, n: usize, alpha: &mut [f32]) -> (usize, usize, usize, usize) {
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
fn curve(rng: &mut ChaCha8Rng, anchor: V2, length: f32, bend: f32) -> Vec<V2> {
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
fn jagged(rng: &mut ChaCha8Rng, start: V2, angle: f32, length: f32, step: f32) -> Vec<V2> {
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
fn taper(len: usize, w: f32, ends: f32) -> Vec<f32> {
    (0..len)
        .map(|k| {
            let t = k as f32 / (len - 1).max(1) as f32;
            w * (ends + (1.0 - ends) * (PI * t).sin())
        })
        .collect()
}

fn overlay(n: usize) -> (Vec<f32>, Vec<Rgb>) {
    (vec![0.0; n * n], vec![[0.0; 3]; n * n])
}

/// For every pixel with alpha > 0: target = f(base colour, pixel position, alpha index).
fn fill_target(alpha: &[f32], target: &mut [Rgb], base: &Base, n: usize, f: impl Fn(Rgb, V2, usize) -> Rgb) {
    for (i, a) in alpha.iter().enumerate() {
        if *a > 0.0 {
            let p = v2((i % n) as f32 + 0.5, (i / n) as f32 + 0.5);
            target[i] = f(base.rgb[i], p, i);
        }
    }
}

fn sample_defect(ctx: &Ctx, kind: DefectKind, rng: &mut ChaCha8Rng) -> Candidate {
    let n = ctx.n;
    let s = ctx.size();
    let clip_to_part = ctx.cat.is_object() && ctx.cat != Category::Pcb;
    let margin = if ctx.cat.is_object() { 0.08 } else { 0.15 };
    let candidate = match (kind, ctx.cat) {
        (DefectKind::Scratch, _) => {
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
        (DefectKind::Crack, _) => {
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
        (DefectKind::Hole, _) => {
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
        (DefectKind::Stain, _) => {
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
        (DefectKind::ExtraPart, Category::Weave) => {
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
        (DefectKind::ExtraPart, Category::Pcb) if rng.random_bool(0.5) => {
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
        (DefectKind::ExtraPart, _) => {
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
        (DefectKind::MissingPart, Category::Grid) => {
            let anchor = ctx.anchor(rng, margin);
            let mut scene = ctx.scene.clone();
            if let Scene::Grid(g) = &mut scene {
                g.tear = Some((ctx.to_object(anchor), uniform(rng, 0.045, 0.1)));
            }
            Candidate::Scene(scene)
        }
        (DefectKind::Misplacement, Category::Grid) => {
            let anchor = ctx.anchor(rng, margin);
            let mut scene = ctx.scene.clone();
            if let Scene::Grid(g) = &mut scene {
                let r = uniform(rng, 0.06, 0.13);
                let d = V2::unit(uniform(rng, 0.0, 2.0 * PI)) * (g.period * uniform(rng, 0.3, 0.6));
                g.bend = Some((ctx.to_object(anchor), r, d));
            }
            Candidate::Scene(scene)
        }
        (DefectKind::MissingPart, Category::Washer) => {
            let mut scene = ctx.scene.clone();
            if let Scene::Washer(w) = &mut scene {
                let phi = uniform(rng, 0.0, 2.0 * PI);
                let outer = rng.random_bool(0.65);
                let (edge, r) = if outer {
                    (Washer::R_OUT, uniform(rng, 0.04, 0.09))
                } else {
                    (Washer::R_IN, uniform(rng, 0.035, 0.07))
                };
                let c = CENTRE + V2::unit(phi) * (edge + signed(rng, 0.0, 0.3) * r);
                w.notch = Some((c, r));
            }
            Candidate::Scene(scene)
        }
        (DefectKind::MissingPart, Category::Bracket) => {
            let mut scene = ctx.scene.clone();
            if let Scene::Bracket(b) = &mut scene {
                let p = Bracket::OUTLINE[rng.random_range(0..Bracket::OUTLINE.len())];
                let c = p + v2(uniform(rng, -0.02, 0.02), uniform(rng, -0.02, 0.02));
                b.chip = Some((c, uniform(rng, 0.04, 0.085)));
            }
            Candidate::Scene(scene)
        }
        (DefectKind::MissingPart, Category::Pcb) => {
            let mut scene = ctx.scene.clone();
            if let Scene::Pcb(pcb) = &mut scene {
                let k = rng.random_range(0..pcb.placed.len());
                pcb.placed[k] = None;
            }
            Candidate::Scene(scene)
        }
        (DefectKind::Misplacement, Category::Pcb) => {
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

/// Applies a candidate to `base`: the defective base rendering and the mask of changed pixels.
fn apply_candidate(candidate: &Candidate, ctx: &Ctx) -> (Vec<Rgb>, Vec<bool>) {
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
