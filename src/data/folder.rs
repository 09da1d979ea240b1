//! Folder datasets on a local path: the MVTec AD layout and the VisA "1cls" layout
//! (reference `promptad-official-behaviour.md` §9.20), which `promptad synth` also writes.
//!
//! ```text
//! MVTec AD: <root>/<category>/train/good/*.png            VisA 1cls: <root>/<category>/train/good/*.JPG
//!           <root>/<category>/test/<type>/*.png                      <root>/<category>/test/{good,bad}/*.JPG
//!           <root>/<category>/ground_truth/<type>/<stem>_mask.png    <root>/<category>/ground_truth/bad/<stem>.png
//! ```
//! Every defect image must have its mask; a missing one is an error naming both paths.

use std::path::{Path, PathBuf};

use rand::seq::index::sample;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::DataError;

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

/// One image of a folder dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Stable id: `<category>/<split>/<defect type>/<file stem>`.
    pub id: String,
    pub category: String,
    pub split: Split,
    /// `good`, or the defect folder name.
    pub defect_type: String,
    pub image: PathBuf,
    /// Present for every defect image; `None` for good images (an all-zero mask).
    pub mask: Option<PathBuf>,
}

impl Sample {
    /// 1 for a defect image, 0 for a good one (anomalib's `gt_label`).
    pub fn label(&self) -> u8 {
        u8::from(self.defect_type != "good")
    }
}

/// The train (good) and test images of one category, each sorted by path.
#[derive(Debug, Clone)]
pub struct CategoryFolder {
    pub root: PathBuf,
    pub category: String,
    pub train_good: Vec<Sample>,
    pub test: Vec<Sample>,
}

fn sorted_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io { path: dir.to_path_buf(), source })?;
    let mut images: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())))
        .collect();
    images.sort();
    Ok(images)
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<String>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io { path: dir.to_path_buf(), source })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

fn stem(path: &Path) -> String {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string()
}

/// The mask of a defect image: MVTec's `<stem>_mask.<ext>` or VisA's `<stem>.png`.
fn find_mask(root: &Path, category: &str, defect_type: &str, image: &Path) -> Result<PathBuf, DataError> {
    let dir = root.join(category).join("ground_truth").join(defect_type);
    let s = stem(image);
    let candidates = [format!("{s}_mask.png"), format!("{s}.png"), format!("{s}_mask.bmp"), format!("{s}_mask.tif")];
    candidates.iter().map(|c| dir.join(c)).find(|p| p.is_file()).ok_or_else(|| DataError::MissingMask {
        image: image.to_path_buf(),
        expected: dir.join(format!("{s}_mask.png")),
    })
}

/// The categories under `root` (folders that hold a `train/good` folder).
pub fn list_categories(root: &Path) -> Result<Vec<String>, DataError> {
    Ok(sorted_subdirs(root)?.into_iter().filter(|c| root.join(c).join("train").join("good").is_dir()).collect())
}

/// Lists one category: its train/good images and every test image with its mask.
pub fn scan_category(root: &Path, category: &str) -> Result<CategoryFolder, DataError> {
    let dir = root.join(category);
    if !dir.join("train").join("good").is_dir() {
        let available = list_categories(root).unwrap_or_default();
        return Err(DataError::UnknownCategory { root: root.to_path_buf(), category: category.into(), available: available.join(", ") });
    }
    let sample = |split: Split, defect_type: &str, image: PathBuf, mask: Option<PathBuf>| Sample {
        id: format!("{category}/{}/{defect_type}/{}", if split == Split::Train { "train" } else { "test" }, stem(&image)),
        category: category.to_string(),
        split,
        defect_type: defect_type.to_string(),
        image,
        mask,
    };
    let train_good: Vec<Sample> =
        sorted_images(&dir.join("train").join("good"))?.into_iter().map(|p| sample(Split::Train, "good", p, None)).collect();
    let mut test = Vec::new();
    let test_dir = dir.join("test");
    if test_dir.is_dir() {
        for defect_type in sorted_subdirs(&test_dir)? {
            for image in sorted_images(&test_dir.join(&defect_type))? {
                let mask = if defect_type == "good" { None } else { Some(find_mask(root, category, &defect_type, &image)?) };
                test.push(sample(Split::Test, &defect_type, image, mask));
            }
        }
    }
    Ok(CategoryFolder { root: root.to_path_buf(), category: category.to_string(), train_good, test })
}

/// The k normal shots: the images named in `explicit` (file name or stem), or k drawn without
/// replacement from the sorted list by a generator seeded with `seed`, in list order.
pub fn select_shots(train_good: &[Sample], k: usize, seed: u64, explicit: Option<&[String]>) -> Result<Vec<Sample>, DataError> {
    let category = train_good.first().map(|s| s.category.clone()).unwrap_or_default();
    if let Some(names) = explicit {
        return names
            .iter()
            .map(|name| {
                train_good
                    .iter()
                    .find(|s| s.image.file_name().and_then(|f| f.to_str()) == Some(name.as_str()) || stem(&s.image) == *name)
                    .cloned()
                    .ok_or_else(|| DataError::UnknownShot { category: category.clone(), name: name.clone() })
            })
            .collect();
    }
    if k == 0 || k > train_good.len() {
        return Err(DataError::NotEnoughShots { category, k, available: train_good.len() });
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = sample(&mut rng, train_good.len(), k).into_vec();
    chosen.sort_unstable();
    Ok(chosen.into_iter().map(|i| train_good[i].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    fn mvtec_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("bottle");
        for i in 0..5 {
            touch(&c.join(format!("train/good/{i:03}.png")));
        }
        touch(&c.join("test/good/000.png"));
        touch(&c.join("test/broken_large/000.png"));
        touch(&c.join("ground_truth/broken_large/000_mask.png"));
        dir
    }

    #[test]
    fn scans_the_mvtec_layout() {
        let dir = mvtec_tree();
        let folder = scan_category(dir.path(), "bottle").unwrap();
        assert_eq!(folder.train_good.len(), 5);
        assert_eq!(folder.test.iter().map(|s| (s.id.as_str(), s.label())).collect::<Vec<_>>(), [("bottle/test/broken_large/000", 1), ("bottle/test/good/000", 0)]);
        assert!(folder.test[0].mask.as_ref().unwrap().ends_with("ground_truth/broken_large/000_mask.png"));
    }

    #[test]
    fn missing_mask_and_unknown_category_are_named() {
        let dir = mvtec_tree();
        std::fs::remove_file(dir.path().join("bottle/ground_truth/broken_large/000_mask.png")).unwrap();
        let err = scan_category(dir.path(), "bottle").unwrap_err().to_string();
        assert!(err.contains("test/broken_large/000.png") && err.contains("000_mask.png"), "{err}");
        let err = scan_category(dir.path(), "cable").unwrap_err().to_string();
        assert!(err.contains("cable") && err.contains("bottle"), "{err}");
    }

    #[test]
    fn shots_are_deterministic_sorted_and_bounded() {
        let dir = mvtec_tree();
        let folder = scan_category(dir.path(), "bottle").unwrap();
        let a = select_shots(&folder.train_good, 3, 7, None).unwrap();
        assert_eq!(a, select_shots(&folder.train_good, 3, 7, None).unwrap());
        assert!(a.windows(2).all(|w| w[0].image < w[1].image));
        let others: Vec<_> = (0..20).map(|s| select_shots(&folder.train_good, 3, s, None).unwrap()).collect();
        assert!(others.iter().any(|o| *o != a), "different seeds must be able to choose differently");
        let err = select_shots(&folder.train_good, 6, 0, None).unwrap_err().to_string();
        assert!(err.contains("6") && err.contains("5"), "{err}");
        let named = select_shots(&folder.train_good, 0, 0, Some(&["004".into(), "001.png".into()])).unwrap();
        assert_eq!(named.iter().map(|s| stem(&s.image)).collect::<Vec<_>>(), ["004", "001"]);
        assert!(select_shots(&folder.train_good, 0, 0, Some(&["999".into()])).is_err());
    }
}
