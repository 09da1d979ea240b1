//! `promptad::data::synth` through its public API: the MVTec AD layout on disk, masks against the
//! defect-free renderings, determinism, variation among normal images, and the refusals.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, RgbImage};
use promptad::data::synth::{
    self, categories, generate, image_seed, read_summary, render, render_good, ImageEncoding, SynthConfig, SynthError,
    SynthSummary, MAX_DEFECT_AREA, MIN_DEFECT_AREA,
};

const SIZE: u32 = 96;

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        image_size: SIZE,
        train_good: 2,
        test_good: 2,
        test_defective_per_type: 2,
        ..SynthConfig::default()
    }
}

/// All files under `root`, relative, sorted.
fn files(root: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// The files the MVTec AD layout requires for `summary`, and nothing else.
fn expected_files(summary: &SynthSummary) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::from([PathBuf::from("synth.json")]);
    for cat in &summary.categories {
        let dir = PathBuf::from(&cat.name);
        for i in 0..cat.train_good {
            out.insert(dir.join(format!("train/good/{i:03}.png")));
        }
        for i in 0..cat.test_good {
            out.insert(dir.join(format!("test/good/{i:03}.png")));
        }
        for d in &cat.defects {
            for i in 0..d.count {
                out.insert(dir.join(format!("test/{}/{i:03}.png", d.defect_type)));
                out.insert(dir.join(format!("ground_truth/{}/{i:03}_mask.png", d.defect_type)));
            }
        }
    }
    out
}

fn open_rgb(path: &Path) -> RgbImage {
    match image::open(path).unwrap() {
        DynamicImage::ImageRgb8(img) => img,
        other => panic!("{}: expected 8-bit RGB, got {:?}", path.display(), other.color()),
    }
}

fn open_mask(path: &Path) -> GrayImage {
    match image::open(path).unwrap() {
        DynamicImage::ImageLuma8(img) => img,
        other => panic!("{}: expected 8-bit grey, got {:?}", path.display(), other.color()),
    }
}

/// Square dilation by `r` pixels.
fn dilate(mask: &GrayImage, r: i64) -> GrayImage {
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        let (x, y) = (x as i64, y as i64);
        for yy in (y - r).max(0)..=(y + r).min(h - 1) {
            for xx in (x - r).max(0)..=(x + r).min(w - 1) {
                if mask.get_pixel(xx as u32, yy as u32).0[0] != 0 {
                    return image::Luma([255]);
                }
            }
        }
        image::Luma([0])
    })
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>() / a.as_raw().len() as f64
}

#[test]
fn writes_exactly_the_mvtec_layout_with_exact_masks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("synth");
    let config = small(11);
    let mut calls = 0usize;
    let summary = generate(&config, &root, || calls += 1).unwrap();

    assert_eq!(summary, read_summary(&root).unwrap(), "synth.json holds the returned summary");
    assert_eq!(calls, synth::planned_images(&config).unwrap());
    let names: Vec<&str> = summary.categories.iter().map(|c| c.name.as_str()).collect();
    let builtin: Vec<&str> = categories().iter().map(|c| c.name).collect();
    assert_eq!(names, builtin, "all built-in categories by default");
    assert_eq!(files(&root), expected_files(&summary), "exactly the MVTec AD files, no leftovers");

    let total = (SIZE * SIZE) as f64;
    for cat in &summary.categories {
        let info = categories().into_iter().find(|c| c.name == cat.name).unwrap();
        let types: Vec<&str> = cat.defects.iter().map(|d| d.defect_type.as_str()).collect();
        assert_eq!(types, info.defect_types);
        assert_eq!((cat.train_good, cat.test_good), (2, 2));
        let dir = root.join(&cat.name);
        for split in ["train/good", "test/good"] {
            for i in 0..2 {
                let img = open_rgb(&dir.join(format!("{split}/{i:03}.png")));
                assert_eq!(img.dimensions(), (SIZE, SIZE));
                assert_eq!(img, render_good(&cat.name, image_seed(11, &cat.name, split, i), SIZE).unwrap());
            }
        }
        for d in &cat.defects {
            assert_eq!(d.count, 2);
            let mut areas = Vec::new();
            for i in 0..d.count {
                let img = open_rgb(&dir.join(format!("test/{}/{i:03}.png", d.defect_type)));
                let mask = open_mask(&dir.join(format!("ground_truth/{}/{i:03}_mask.png", d.defect_type)));
                assert_eq!(img.dimensions(), (SIZE, SIZE));
                assert_eq!(mask.dimensions(), (SIZE, SIZE));
                assert!(
                    mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255),
                    "{}/{}: mask not binary",
                    cat.name,
                    d.defect_type
                );
                let area = mask.pixels().filter(|p| p.0[0] == 255).count() as f64 / total;
                assert!(
                    (MIN_DEFECT_AREA..=MAX_DEFECT_AREA).contains(&area),
                    "{}/{}/{i}: mask area {area} outside the documented bounds",
                    cat.name,
                    d.defect_type
                );
                areas.push(area);

                // The file is the rendering of its seed, and differs from the defect-free
                // rendering only inside the (slightly dilated) mask.
                let seed = image_seed(11, &cat.name, &format!("test/{}", d.defect_type), i);
                let r = render(&cat.name, &d.defect_type, seed, SIZE).unwrap();
                assert_eq!(img, r.defective);
                assert_eq!(mask, r.mask);
                let grown = dilate(&mask, 2);
                for (x, y, p) in img.enumerate_pixels() {
                    if grown.get_pixel(x, y).0[0] == 0 {
                        assert_eq!(
                            p,
                            r.clean.get_pixel(x, y),
                            "{}/{}/{i}: change outside the mask",
                            cat.name,
                            d.defect_type
                        );
                    }
                }
            }
            let lo = areas.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = areas.iter().copied().fold(0.0, f64::max);
            assert_eq!((d.min_area_fraction, d.max_area_fraction), (Some(lo), Some(hi)));
        }
    }
}

#[test]
fn masks_cover_changed_pixels_and_little_else() {
    for info in categories() {
        for defect in &info.defect_types {
            for seed in [3u64, 1_000_003] {
                let r = render(info.name, defect, seed, SIZE).unwrap();
                let mut inside = 0usize;
                let mut changed_inside = 0usize;
                for (x, y, m) in r.mask.enumerate_pixels() {
                    let changed = r.clean.get_pixel(x, y) != r.defective.get_pixel(x, y);
                    if m.0[0] == 255 {
                        inside += 1;
                        changed_inside += usize::from(changed);
                    } else {
                        assert!(
                            !changed,
                            "{}/{defect} seed {seed}: pixel ({x}, {y}) changed outside the mask",
                            info.name
                        );
                    }
                }
                assert!(inside > 0, "{}/{defect}: empty mask", info.name);
                assert!(
                    changed_inside * 2 >= inside,
                    "{}/{defect} seed {seed}: only {changed_inside} of {inside} mask pixels changed",
                    info.name
                );
            }
        }
    }
}

#[test]
fn same_config_gives_byte_identical_files_and_other_seeds_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig { train_good: 1, test_good: 1, test_defective_per_type: 1, ..small(5) };
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    generate(&config, &a, || {}).unwrap();
    generate(&config, &b, || {}).unwrap();
    generate(&SynthConfig { seed: 6, ..config.clone() }, &c, || {}).unwrap();
    let listing = files(&a);
    assert_eq!(listing, files(&b));
    assert_eq!(listing, files(&c));
    let mut differing = 0;
    for rel in &listing {
        let bytes = std::fs::read(a.join(rel)).unwrap();
        assert!(bytes == std::fs::read(b.join(rel)).unwrap(), "{} differs between identical runs", rel.display());
        let is_image = rel.extension().is_some_and(|e| e == "png") && !rel.to_string_lossy().ends_with("_mask.png");
        if is_image {
            assert_ne!(bytes, std::fs::read(c.join(rel)).unwrap(), "{} equal under another seed", rel.display());
            differing += 1;
        }
    }
    assert!(differing > 0);
}

#[test]
fn normal_images_differ_from_each_other() {
    for info in categories() {
        let images: Vec<RgbImage> =
            (0..4).map(|i| render_good(info.name, image_seed(0, info.name, "train/good", i), SIZE).unwrap()).collect();
        for i in 0..images.len() {
            for j in i + 1..images.len() {
                let d = mean_abs_diff(&images[i], &images[j]);
                assert!(d > 2.0, "{}: train images {i} and {j} nearly equal (mean abs diff {d:.2})", info.name);
            }
        }
    }
}

#[test]
fn refuses_a_non_empty_directory_unless_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("notes.txt"), b"keep me").unwrap();
    let config = SynthConfig { categories: vec!["washer".into()], ..small(1) };
    let err = generate(&config, root, || {}).unwrap_err();
    assert!(matches!(err, SynthError::NotEmpty(_)), "{err}");
    assert!(err.to_string().contains("overwrite"), "{err}");
    assert_eq!(files(root), BTreeSet::from([PathBuf::from("notes.txt")]), "nothing written on refusal");

    generate(&SynthConfig { overwrite: true, ..config.clone() }, root, || {}).unwrap();
    // A second, smaller run replaces the category: no stale images remain.
    let smaller = SynthConfig { overwrite: true, train_good: 1, test_good: 1, test_defective_per_type: 1, ..config };
    let summary = generate(&smaller, root, || {}).unwrap();
    let mut expected = expected_files(&summary);
    expected.insert(PathBuf::from("notes.txt"));
    assert_eq!(files(root), expected);
    assert_eq!(std::fs::read(root.join("notes.txt")).unwrap(), b"keep me");
}

#[test]
fn unknown_category_error_lists_the_available_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig { categories: vec!["weave".into(), "carpet".into()], ..small(0) };
    let err = generate(&config, &dir.path().join("out"), || {}).unwrap_err().to_string();
    assert!(err.contains("\"carpet\""), "{err}");
    for info in categories() {
        assert!(err.contains(info.name), "{err} does not list {}", info.name);
    }
    assert!(!dir.path().join("out").exists(), "nothing created for an invalid config");
}

#[test]
fn subsets_of_categories_are_generated_in_the_given_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig {
        categories: vec!["pcb".into(), "marble".into()],
        train_good: 1,
        test_good: 0,
        test_defective_per_type: 1,
        ..small(2)
    };
    let summary = generate(&config, dir.path(), || {}).unwrap();
    let names: Vec<&str> = summary.categories.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pcb", "marble"]);
    assert_eq!(files(dir.path()), expected_files(&summary));
    assert_eq!(summary.config.categories, ["pcb", "marble"]);
}

#[test]
fn jpeg_images_come_with_png_masks_that_the_dataset_reader_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let (png_root, jpeg_root) = (dir.path().join("png"), dir.path().join("jpeg"));
    let png = SynthConfig { categories: vec!["weave".into()], ..small(4) };
    let jpeg = SynthConfig { encoding: ImageEncoding::Jpeg, ..png.clone() };
    generate(&png, &png_root, || {}).unwrap();
    let summary = generate(&jpeg, &jpeg_root, || {}).unwrap();
    assert_eq!(read_summary(&jpeg_root).unwrap().config.encoding, ImageEncoding::Jpeg);
    // The same layout with .jpg images; masks stay PNG.
    let want: BTreeSet<PathBuf> = expected_files(&summary)
        .into_iter()
        .map(|p| {
            let name = p.to_string_lossy().into_owned();
            if name.ends_with("_mask.png") || name == "synth.json" {
                p
            } else {
                PathBuf::from(name.replace(".png", ".jpg"))
            }
        })
        .collect();
    assert_eq!(files(&jpeg_root), want);
    let images: Vec<PathBuf> = files(&png_root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png") && !p.to_string_lossy().ends_with("_mask.png"))
        .collect();
    assert_eq!(images.len(), 2 + 2 + 2 * 3, "train, test good and defect images");
    for path in images {
        let jpg = jpeg_root.join(path.with_extension("jpg"));
        assert_eq!(&std::fs::read(&jpg).unwrap()[..3], &[0xFF, 0xD8, 0xFF], "{}", jpg.display());
        // Quality 90 of the same rendering: close to the lossless image, not equal to it.
        let diff = mean_abs_diff(&open_rgb(&png_root.join(&path)), &open_rgb(&jpg));
        assert!(diff > 0.0 && diff < 4.0, "{}: mean |Δ| {diff}", path.display());
    }
    // Every defect image is read with its mask, every good one without.
    let dataset = promptad::data::dataset::Dataset::open(jpeg_root.to_str().unwrap()).unwrap();
    let unit = dataset.test_units("weave", 100).unwrap().remove(0);
    let records: Vec<_> = dataset.read_unit(&unit, 100).unwrap().flat_map(|b| b.unwrap()).collect();
    assert_eq!(records.len(), 2 + 2 * 3);
    for record in records {
        assert_eq!(record.mask.is_some(), record.gt_label == Some(1), "{}", record.image_id);
    }
}
