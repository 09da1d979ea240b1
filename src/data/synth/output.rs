//! Writing a dataset to disk: [`generate`] renders every image as an independent job (in
//! parallel), writes each image under a temporary name and renames it into place, and writes
//! `synth.json` last.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::catalog::{Category, DefectKind};
use super::{
    image_seed, render_image, validate, CategorySummary, DefectSummary, ImageEncoding, SynthConfig, SynthError,
    SynthSummary, SUMMARY_FILE, SUMMARY_FORMAT,
};

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
                    image: images.join(format!("{index:03}.{}", config.encoding.extension())),
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

    let (size, encoding) = (config.image_size, config.encoding);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let areas: Vec<Option<f64>> = std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            jobs.par_iter()
                .map_with(tx, |tx, job| {
                    let area = run_job(job, size, encoding)?;
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

struct Job {
    cat: Category,
    defect: Option<DefectKind>,
    seed: u64,
    image: PathBuf,
    mask: Option<PathBuf>,
}

/// Renders and writes one job; returns the mask area fraction of a defective image.
fn run_job(job: &Job, size: u32, encoding: ImageEncoding) -> Result<Option<f64>, SynthError> {
    let (clean, defect) = render_image(job.cat, job.defect, job.seed, size)?;
    match (defect, &job.mask) {
        (Some((defective, mask)), Some(mask_path)) => {
            write_image(&job.image, &defective, encoding)?;
            write_png(mask_path, &mask)?;
            let area = mask.pixels().filter(|p| p.0[0] != 0).count() as f64 / (size as f64 * size as f64);
            Ok(Some(area))
        }
        _ => {
            write_image(&job.image, &clean, encoding)?;
            Ok(None)
        }
    }
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
    write_image(path, image, ImageEncoding::Png)
}

fn write_image<P, C>(path: &Path, image: &image::ImageBuffer<P, C>, encoding: ImageEncoding) -> Result<(), SynthError>
where
    P: image::PixelWithColorType<Subpixel = u8>,
    C: std::ops::Deref<Target = [u8]>,
{
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    let (raw, w, h) = (image.as_raw(), image.width(), image.height());
    match encoding {
        ImageEncoding::Png => image::codecs::png::PngEncoder::new(&mut bytes).write_image(raw, w, h, P::COLOR_TYPE),
        ImageEncoding::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).write_image(raw, w, h, P::COLOR_TYPE)
        }
    }
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
