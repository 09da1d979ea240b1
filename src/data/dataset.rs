//! A dataset at any URL, folder layout or image shards, seen the same way by training and
//! scoring: the normal training images of a category, and its images to score cut into
//! deterministic work units (one per shard; for a folder, runs of `rows_per_unit` sorted images).

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use super::folder::{list_categories, scan_category, Sample, Split};
use super::shard::{list_shards, ImageRecord, ShardInfo, ShardReader, SHARD_LIST};
use super::synth;
use super::DataError;
use crate::store::Location;

type Result<T, E = DataError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub enum Dataset {
    /// MVTec AD / VisA 1cls folders (what `promptad synth` writes).
    Folder(Location),
    /// Parquet image shards (what `promptad shard` writes).
    Shards(Location),
}

/// A piece of scoring work: the images of one shard, or of one run of folder images.
#[derive(Debug, Clone)]
pub struct WorkUnit {
    pub category: String,
    /// Unique within the category: `<split>-<nnnnn>`; names the output files.
    pub name: String,
    pub images: usize,
    pub source: UnitSource,
}

#[derive(Debug, Clone)]
pub enum UnitSource {
    Files(Vec<Sample>),
    Shard(ShardInfo),
}

impl Dataset {
    /// Opens the dataset at `url`: shards if it holds `_shards.json` or `category=*` folders,
    /// else a folder dataset. An unreachable store or an empty location is an error naming it.
    pub fn open(url: &str) -> Result<Self> {
        let root = Location::parse(url)?;
        root.check_reachable()?;
        let folders = root.list_dirs("")?;
        if folders.iter().any(|d| d.starts_with("category=")) || root.exists(SHARD_LIST)? {
            return Ok(Self::Shards(root));
        }
        if folders.is_empty() {
            return Err(DataError::NoDataset { url: root.url().to_string() });
        }
        Ok(Self::Folder(root))
    }

    pub fn location(&self) -> &Location {
        match self {
            Self::Folder(root) | Self::Shards(root) => root,
        }
    }

    pub fn categories(&self) -> Result<Vec<String>> {
        Ok(match self {
            Self::Folder(root) => list_categories(root)?,
            Self::Shards(root) => {
                let mut categories: Vec<String> = list_shards(root)?.into_iter().map(|s| s.category).collect();
                categories.sort();
                categories.dedup();
                categories
            }
        })
    }

    /// The error for a category the dataset does not hold, listing the ones it does.
    pub fn unknown_category(&self, category: &str) -> DataError {
        let available = self.categories().map(|c| c.join(", ")).unwrap_or_default();
        DataError::UnknownCategory { root: self.location().url().to_string(), category: category.into(), available }
    }

    /// The prompts of `category` as `promptad synth` describes it in the dataset's `synth.json`:
    /// its object name and manual anomaly states ([`synth::prompt_name`],
    /// [`synth::anomaly_states`]). `None` when the dataset has no `synth.json` or it does not
    /// list the category.
    pub fn synth_prompts(&self, category: &str) -> Result<Option<(String, Vec<String>)>> {
        let root = self.location();
        let Some(bytes) = root.get_if_exists(synth::SUMMARY_FILE)? else { return Ok(None) };
        let summary: synth::SynthSummary = serde_json::from_slice(&bytes)
            .map_err(|source| DataError::BadSynthSummary { url: root.url_of(synth::SUMMARY_FILE), source })?;
        Ok(summary.category(category).map(|c| {
            let defect_types: Vec<&str> = c.defects.iter().map(|d| d.defect_type.as_str()).collect();
            (synth::prompt_name(&c.name), synth::anomaly_states(&defect_types))
        }))
    }

    /// The normal training images of `category` (metadata only), sorted by id.
    pub fn train_good(&self, category: &str) -> Result<Vec<Sample>> {
        match self {
            Self::Folder(root) => Ok(scan_category(root, category)?.train_good),
            Self::Shards(root) => {
                let shards = self.category_shards(category, |split| split == "train")?;
                let mut samples = Vec::new();
                for shard in &shards {
                    for batch in ShardReader::open(root, &shard.path, 1024, false)? {
                        for r in batch? {
                            if r.gt_label == Some(0) || r.defect_type.as_deref() == Some("good") {
                                samples.push(Sample {
                                    id: r.image_id,
                                    category: r.category,
                                    split: Split::Train,
                                    defect_type: "good".into(),
                                    image: r.source_uri,
                                    mask: None,
                                });
                            }
                        }
                    }
                }
                samples.sort_by(|a, b| a.id.cmp(&b.id));
                if samples.is_empty() {
                    return Err(DataError::NoTrainImages { category: category.into(), url: root.url().into() });
                }
                Ok(samples)
            }
        }
    }

    /// The bytes of `samples` (from [`Dataset::train_good`]), in the same order.
    pub fn load(&self, samples: &[Sample]) -> Result<Vec<ImageRecord>> {
        match self {
            Self::Folder(root) => samples.par_iter().map(|s| fetch(root, s)).collect(),
            Self::Shards(root) => {
                // Samples may come from several categories; each is looked up in its own
                // category's training shards (ids are unique within a category only).
                let mut wanted: BTreeMap<&str, HashMap<&str, usize>> = BTreeMap::new();
                for (i, s) in samples.iter().enumerate() {
                    wanted.entry(s.category.as_str()).or_default().insert(s.id.as_str(), i);
                }
                let mut found: Vec<Option<ImageRecord>> = vec![None; samples.len()];
                for (category, ids) in &mut wanted {
                    for shard in self.category_shards(category, |split| split == "train")? {
                        for batch in ShardReader::open(root, &shard.path, 64, true)? {
                            for record in batch? {
                                if let Some(i) = ids.remove(record.image_id.as_str()) {
                                    found[i] = Some(record);
                                }
                            }
                        }
                        if ids.is_empty() {
                            break;
                        }
                    }
                }
                found
                    .into_iter()
                    .zip(samples)
                    .map(|(r, s)| r.ok_or_else(|| DataError::Vanished { image: s.id.clone(), url: root.url().into() }))
                    .collect()
            }
        }
    }

    /// The images of `category` to score, cut into work units in a fixed order. For shards:
    /// one unit per shard of every split but `train`; for folders: the test split in runs of
    /// `rows_per_unit`.
    pub fn test_units(&self, category: &str, rows_per_unit: usize) -> Result<Vec<WorkUnit>> {
        match self {
            Self::Folder(root) => {
                let test = scan_category(root, category)?.test;
                Ok(test
                    .chunks(rows_per_unit.max(1))
                    .enumerate()
                    .map(|(i, chunk)| WorkUnit {
                        category: category.into(),
                        name: format!("test-{i:05}"),
                        images: chunk.len(),
                        source: UnitSource::Files(chunk.to_vec()),
                    })
                    .collect())
            }
            Self::Shards(_) => Ok(self
                .category_shards(category, |split| split != "train")?
                .into_iter()
                .map(|s| WorkUnit {
                    category: category.into(),
                    name: s.unit_name(),
                    images: s.rows,
                    source: UnitSource::Shard(s),
                })
                .collect()),
        }
    }

    /// The records (image and mask bytes) of the images `ids` of `category`'s images to score,
    /// in no particular order; an id the dataset does not hold is left out. A folder dataset
    /// fetches just those files; shards are scanned for the ids first (ids and labels only),
    /// then only the shards holding one are read with their bytes.
    pub fn test_records(&self, category: &str, ids: &[String]) -> Result<Vec<ImageRecord>> {
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        match self {
            Self::Folder(root) => {
                let test = scan_category(root, category)?.test;
                let chosen: Vec<&Sample> = test.iter().filter(|s| wanted.contains(s.id.as_str())).collect();
                chosen.par_iter().map(|s| fetch(root, s)).collect()
            }
            Self::Shards(root) => {
                let mut records = Vec::new();
                for shard in self.category_shards(category, |split| split != "train")? {
                    let mut holds = false;
                    for batch in ShardReader::open(root, &shard.path, 1024, false)? {
                        holds |= batch?.iter().any(|r| wanted.contains(r.image_id.as_str()));
                    }
                    if !holds {
                        continue;
                    }
                    for batch in ShardReader::open(root, &shard.path, 64, true)? {
                        records.extend(batch?.into_iter().filter(|r| wanted.contains(r.image_id.as_str())));
                    }
                }
                Ok(records)
            }
        }
    }

    fn category_shards(&self, category: &str, split: impl Fn(&str) -> bool) -> Result<Vec<ShardInfo>> {
        let Self::Shards(root) = self else { unreachable!("shards only") };
        let all = list_shards(root)?;
        if !all.iter().any(|s| s.category == category) {
            return Err(self.unknown_category(category));
        }
        let mut shards: Vec<ShardInfo> =
            all.into_iter().filter(|s| s.category == category && split(&s.split)).collect();
        shards.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(shards)
    }

    /// The records of `unit` in batches of up to `batch` (a folder unit fetches each batch's
    /// files in parallel; a shard streams row groups).
    pub fn read_unit(
        &self,
        unit: &WorkUnit,
        batch: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<Vec<ImageRecord>>> + Send>> {
        let root = self.location().clone();
        Ok(match &unit.source {
            UnitSource::Shard(shard) => Box::new(ShardReader::open(&root, &shard.path, batch, true)?),
            UnitSource::Files(samples) => {
                let chunks: Vec<Vec<Sample>> = samples.chunks(batch.max(1)).map(<[Sample]>::to_vec).collect();
                Box::new(chunks.into_iter().map(move |chunk| chunk.par_iter().map(|s| fetch(&root, s)).collect()))
            }
        })
    }
}

/// A folder image (and its mask) as a record.
pub fn fetch(root: &Location, sample: &Sample) -> Result<ImageRecord> {
    let image = root.get(&sample.image)?;
    let mask = sample.mask.as_deref().map(|m| root.get(m)).transpose()?;
    Ok(ImageRecord {
        image_id: sample.id.clone(),
        category: sample.category.clone(),
        split: sample.split.as_str().into(),
        defect_type: Some(sample.defect_type.clone()),
        gt_label: Some(sample.label() as i8),
        image,
        mask,
        source_uri: root.url_of(&sample.image),
        origin: root.url_of(&sample.image),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shard::write_shard;
    use bytes::Bytes;

    /// A train record whose bytes say where it belongs: `<category>/<id>`.
    fn record(category: &str, id: &str) -> ImageRecord {
        ImageRecord {
            image_id: id.into(),
            category: category.into(),
            split: "train".into(),
            defect_type: Some("good".into()),
            gt_label: Some(0),
            image: Bytes::from(format!("{category}/{id}")),
            mask: None,
            source_uri: format!("src/{category}/{id}.png"),
            origin: String::new(),
        }
    }

    /// Shards of two categories with the same image ids, written without `_shards.json` (as
    /// another tool would): `a` in two shards of 20 and 3 rows, `b` in one of 5.
    fn two_category_shards(root: &Location) {
        let ids = |range: std::ops::Range<usize>| range.map(|i| format!("{i:03}")).collect::<Vec<_>>();
        for (category, index, ids) in [("a", 0, ids(0..20)), ("a", 1, ids(20..23)), ("b", 0, ids(0..5))] {
            let records = ids.iter().map(|id| Ok(record(category, id))).collect::<Vec<_>>();
            let info = write_shard(root, category, "train", index, records.into_iter()).unwrap();
            assert_eq!(info.rows, ids.len());
        }
        assert!(!root.exists(SHARD_LIST).unwrap());
    }

    #[test]
    fn shards_listed_without_a_shard_list_report_their_row_counts_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(dir.path().to_str().unwrap()).unwrap();
        two_category_shards(&root);
        let mut rows: Vec<(String, usize)> =
            list_shards(&root).unwrap().into_iter().map(|s| (s.path, s.rows)).collect();
        rows.sort();
        assert_eq!(
            rows,
            [
                ("category=a/split=train/part-00000.parquet".to_string(), 20),
                ("category=a/split=train/part-00001.parquet".to_string(), 3),
                ("category=b/split=train/part-00000.parquet".to_string(), 5),
            ]
        );
    }

    #[test]
    fn loading_shots_of_several_categories_reads_each_from_its_own_shards() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(dir.path().to_str().unwrap()).unwrap();
        two_category_shards(&root);
        let dataset = Dataset::open(root.url()).unwrap();
        assert!(matches!(dataset, Dataset::Shards(_)));
        let a = dataset.train_good("a").unwrap();
        let b = dataset.train_good("b").unwrap();
        assert_eq!((a.len(), b.len()), (23, 5));
        // Interleaved, with ids that exist in both categories and one from a's second shard.
        let samples = vec![b[3].clone(), a[3].clone(), a[21].clone(), b[0].clone(), a[0].clone()];
        let loaded = dataset.load(&samples).unwrap();
        let got: Vec<(String, String, Bytes)> = loaded.into_iter().map(|r| (r.category, r.image_id, r.image)).collect();
        let want: Vec<(String, String, Bytes)> = samples
            .iter()
            .map(|s| (s.category.clone(), s.id.clone(), Bytes::from(format!("{}/{}", s.category, s.id))))
            .collect();
        assert_eq!(got, want);
    }
}
