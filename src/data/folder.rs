//! Folder datasets on a local path: the MVTec AD layout and the VisA "1cls" layout
//! (reference `promptad-official-behaviour.md` §9.20), which `promptad synth` also writes.
//!
//! ```text
//! MVTec AD: <root>/<category>/train/good/*.png            VisA 1cls: <root>/<category>/train/good/*.JPG
//!           <root>/<category>/test/<type>/*.png                      <root>/<category>/test/{good,bad}/*.JPG
//!           <root>/<category>/ground_truth/<type>/<stem>_mask.png    <root>/<category>/ground_truth/bad/<stem>.png
//! ```
//! Every defect image must have its mask; a missing one is an error naming both paths.

use std::collections::BTreeMap;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::DataError;
use crate::store::Location;

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
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
    /// The image, relative to the dataset root (`bottle/test/good/000.png`).
    pub image: String,
    /// The mask, relative to the dataset root; present for every defect image, `None` for good
    /// images (an all-zero mask).
    pub mask: Option<String>,
}

impl Sample {
    /// 1 for a defect image, 0 for a good one (anomalib's `gt_label`).
    pub fn label(&self) -> u8 {
        u8::from(self.defect_type != "good")
    }

    pub fn file_name(&self) -> &str {
        self.image.rsplit('/').next().unwrap_or(&self.image)
    }
}

/// The train (good) and test images of one category, each sorted by path.
#[derive(Debug, Clone)]
pub struct CategoryFolder {
    pub root: Location,
    pub category: String,
    pub train_good: Vec<Sample>,
    pub test: Vec<Sample>,
}

/// Whether `name` has an image extension (png, jpg, jpeg, bmp, tif, tiff; any case).
pub(crate) fn is_image(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(_, e)| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

pub(crate) fn stem(name: &str) -> &str {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.rsplit_once('.').map_or(file, |(s, _)| s)
}

/// The relative paths of every object under `<root>/<category>/`, sorted.
fn category_files(root: &Location, category: &str) -> Result<Vec<String>, DataError> {
    let objects = root.list(category)?;
    Ok(objects.iter().map(|o| root.relative(&o.location)).collect())
}

/// The categories under `root`: folders that hold at least one `train/good` image. Lists one
/// level, then each candidate's `train/good` folder, never the whole archive.
pub fn list_categories(root: &Location) -> Result<Vec<String>, DataError> {
    let mut categories = Vec::new();
    for folder in root.list_dirs("")? {
        let good = root.list(&format!("{folder}/train/good"))?;
        if good.iter().any(|o| is_image(o.location.as_ref())) {
            categories.push(folder);
        }
    }
    Ok(categories)
}

/// Lists one category: its train/good images and every test image with its mask. The mask of a
/// defect image is MVTec's `ground_truth/<type>/<stem>_mask.<ext>` or VisA's `<stem>.png`.
pub fn scan_category(root: &Location, category: &str) -> Result<CategoryFolder, DataError> {
    let files = category_files(root, category)?;
    let mut train_good = Vec::new();
    let mut test_images: Vec<(String, String)> = Vec::new();
    let mut masks: BTreeMap<(String, String), String> = BTreeMap::new();
    for rel in &files {
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.len() != 4 || !is_image(parts[3]) {
            continue;
        }
        match (parts[1], parts[2]) {
            ("train", "good") => train_good.push(sample(category, Split::Train, "good", rel.clone(), None)),
            ("test", defect_type) => test_images.push((defect_type.to_string(), rel.clone())),
            ("ground_truth", defect_type) => {
                let s = stem(parts[3]);
                let key = s.strip_suffix("_mask").unwrap_or(s);
                // MVTec's `<stem>_mask` wins over a VisA-style `<stem>` if both exist.
                let entry = masks.entry((defect_type.to_string(), key.to_string())).or_insert_with(|| rel.clone());
                if s.ends_with("_mask") {
                    *entry = rel.clone();
                }
            }
            _ => {}
        }
    }
    if train_good.is_empty() {
        let available = list_categories(root).unwrap_or_default();
        return Err(DataError::UnknownCategory {
            root: root.url().to_string(),
            category: category.into(),
            available: available.join(", "),
        });
    }
    let mut test = Vec::with_capacity(test_images.len());
    for (defect_type, image) in test_images {
        let mask = if defect_type == "good" {
            None
        } else {
            let key = (defect_type.clone(), stem(&image).to_string());
            let found = masks.get(&key).cloned().ok_or_else(|| DataError::MissingMask {
                image: root.url_of(&image),
                expected: root.url_of(&format!("{category}/ground_truth/{defect_type}/{}_mask.png", stem(&image))),
            })?;
            Some(found)
        };
        test.push(sample(category, Split::Test, &defect_type, image, mask));
    }
    Ok(CategoryFolder { root: root.clone(), category: category.to_string(), train_good, test })
}

fn sample(category: &str, split: Split, defect_type: &str, image: String, mask: Option<String>) -> Sample {
    Sample {
        id: format!("{category}/{}/{defect_type}/{}", split.as_str(), stem(&image)),
        category: category.to_string(),
        split,
        defect_type: defect_type.to_string(),
        image,
        mask,
    }
}

/// The k normal shots: the images named in `explicit` (file name or stem), or k drawn without
/// replacement from the sorted list by a generator seeded with `seed`, in list order.
pub fn select_shots(
    train_good: &[Sample],
    k: usize,
    seed: u64,
    explicit: Option<&[String]>,
) -> Result<Vec<Sample>, DataError> {
    let category = train_good.first().map(|s| s.category.clone()).unwrap_or_default();
    if let Some(names) = explicit {
        return names
            .iter()
            .map(|name| {
                train_good
                    .iter()
                    .find(|s| s.file_name() == name.as_str() || stem(&s.image) == name)
                    .cloned()
                    .ok_or_else(|| DataError::UnknownShot { category: category.clone(), name: name.clone() })
            })
            .collect();
    }
    if k == 0 || k > train_good.len() {
        return Err(DataError::NotEnoughShots { category, k, available: train_good.len() });
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = rand::seq::index::sample(&mut rng, train_good.len(), k).into_vec();
    chosen.sort_unstable();
    Ok(chosen.into_iter().map(|i| train_good[i].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    fn root(dir: &tempfile::TempDir) -> Location {
        Location::parse(dir.path().to_str().unwrap()).unwrap()
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
        let folder = scan_category(&root(&dir), "bottle").unwrap();
        assert_eq!(folder.train_good.len(), 5);
        assert_eq!(
            folder.test.iter().map(|s| (s.id.as_str(), s.label())).collect::<Vec<_>>(),
            [("bottle/test/broken_large/000", 1), ("bottle/test/good/000", 0)]
        );
        assert_eq!(folder.test[0].mask.as_deref(), Some("bottle/ground_truth/broken_large/000_mask.png"));
        assert_eq!(list_categories(&root(&dir)).unwrap(), ["bottle"]);
    }

    #[test]
    fn missing_mask_and_unknown_category_are_named() {
        let dir = mvtec_tree();
        std::fs::remove_file(dir.path().join("bottle/ground_truth/broken_large/000_mask.png")).unwrap();
        let err = scan_category(&root(&dir), "bottle").unwrap_err().to_string();
        assert!(err.contains("test/broken_large/000.png") && err.contains("000_mask.png"), "{err}");
        let err = scan_category(&root(&dir), "cable").unwrap_err().to_string();
        assert!(err.contains("cable") && err.contains("bottle"), "{err}");
    }

    #[test]
    fn shots_are_deterministic_sorted_and_bounded() {
        let dir = mvtec_tree();
        let folder = scan_category(&root(&dir), "bottle").unwrap();
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
