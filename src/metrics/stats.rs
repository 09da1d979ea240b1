//! [`ImageStats`]: the per-image sufficient statistics of pixel AUROC and AUPRO (the rows of the
//! `metric_stats` table), and their exact, order-free merge.
//!
//! For one image, from its stored map (`u16`, see [`super::quantize`]) and its binary mask, and for
//! every stored score value `b` that occurs in the image (sparse: only non-empty bins, ascending):
//!
//! - `bg_count[b]`: background pixels (mask 0) with value `b`;
//! - `fg_count[b]`: defect pixels (mask 1) with value `b`;
//! - `region_weight[b]`: Σ over defect pixels with value `b` of `ω(|r|)`, where `r` is the pixel's
//!   8-connected ground-truth region (computed inside the image; regions never cross images) and
//!   `ω(n) = round(2^80 / n)` is `1/n` in fixed point with 80 fractional bits ([`pixel_weight`]);
//! - `n_regions`: the number of regions.
//!
//! Pixel AUROC needs `bg_count`/`fg_count`; AUPRO needs `bg_count`, `region_weight` and
//! `n_regions` (PRO at threshold t = Σ_{b ≥ t} region_weight[b] / (2^80 · Σ n_regions); anomalib
//! ≥ 2.3 `metrics/aupro.py` step 2 gives each pixel of region r the weight 1/(|r|·R)).
//!
//! **Exact merge.** Every field is an integer, so adding the statistics of any subset of images
//! in any order, split any way, gives bit-identical sums, and the metrics computed from them are
//! bit-identical too. The fixed point is defined per *pixel*, so the weight of a bin is the same
//! integer whether it is summed per pixel (the in-memory reference, `aupro::aupro`) or per
//! region and bin: the merged statistics reproduce the reference run on the dequantised scores
//! bit for bit. Versus the real number 1/|r|, a region's total weight is off by at most
//! |r| · 2^-81 relative, below 2^-49 for any region up to 2^32 pixels.
//! Sums are checked: a weight sum above 10^38 − 1 (the Decimal128(38, 0) range of the Arrow form,
//! reached only past ~8·10^13 regions) is an [`MetricError::Overflow`], never a wrap-around.
//!
//! **Exactness versus float scores.** The statistics are exact for the stored (quantised)
//! scores. Quantising can only merge distinct float scores into one bin, so for AUROC
//! (ecosystem.md §2.1) |AUROC_float − AUROC_stored| ≤ ½ · Σ_b p_b · n_b / (P · N), the most that
//! re-ordering the pairs tied inside a bin can change: [`auroc_tie_bound`].

use image::{GrayImage, Luma};
use imageproc::region_labelling::{connected_components, Connectivity};

use super::curve::{BinaryLevel, ProLevel};
use super::error::{MetricError, UndefinedReason};
use super::quantize::SCORE_LEVELS;

/// Fractional bits of the region-weight fixed point: a weight of `2^80` is one whole region.
pub const REGION_WEIGHT_SHIFT: u32 = 80;

/// The largest weight sum a stats value may hold: 10^38 − 1, the Decimal128(38, 0) range.
pub const REGION_WEIGHT_MAX: u128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// `ω(n) = round(2^80 / n)`: the weight of one pixel of a region of `n` pixels (n ≥ 1).
pub fn pixel_weight(region_size: u64) -> u128 {
    debug_assert!(region_size > 0);
    let n = region_size.max(1) as u128;
    ((1u128 << REGION_WEIGHT_SHIFT) + n / 2) / n
}

/// A mask pixel: `bool` or `u8` (non-zero = defect).
pub trait MaskValue: Copy {
    fn is_defect(self) -> bool;
}

impl MaskValue for bool {
    fn is_defect(self) -> bool {
        self
    }
}

impl MaskValue for u8 {
    fn is_defect(self) -> bool {
        self != 0
    }
}

/// 8-connected regions of a row-major `width × height` mask: per pixel its region label
/// (0 = background, regions 1..=n) and per label its size (`sizes[0]` = background pixels).
/// Uses `imageproc::region_labelling::connected_components` with `Connectivity::Eight`, the
/// connectivity of anomalib (`cv2.connectedComponents`) and of the MVTec reference
/// (`scipy.ndimage.label` with a 3×3 structure).
pub fn label_regions<M: MaskValue>(
    mask: &[M],
    width: usize,
    height: usize,
) -> Result<(Vec<u32>, Vec<u64>), MetricError> {
    if width.checked_mul(height) != Some(mask.len()) {
        return Err(MetricError::Shape { what: "mask", len: mask.len(), width, height });
    }
    if mask.is_empty() {
        return Ok((Vec::new(), vec![0]));
    }
    let (w, h) = match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err(MetricError::Shape { what: "mask", len: mask.len(), width, height }),
    };
    // A mask without a defect pixel (every good image) has no region to label.
    if !mask.iter().any(|m| m.is_defect()) {
        return Ok((vec![0; mask.len()], vec![mask.len() as u64]));
    }
    let raw: Vec<u8> = mask.iter().map(|&m| if m.is_defect() { 255 } else { 0 }).collect();
    let image = GrayImage::from_raw(w, h, raw).expect("length checked above");
    let labelled = connected_components(&image, Connectivity::Eight, Luma([0u8]));
    let labels = labelled.into_raw();
    let max = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut sizes = vec![0u64; max + 1];
    for &l in &labels {
        sizes[l as usize] += 1;
    }
    Ok((labels, sizes))
}

/// Per-image sufficient statistics; see the module documentation. Invariants: `bins` strictly
/// ascending; the four vectors have equal lengths; a bin with no defect pixel has weight 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageStats {
    bins: Vec<u16>,
    bg_count: Vec<u64>,
    fg_count: Vec<u64>,
    region_weight: Vec<u128>,
    n_regions: u64,
}

impl ImageStats {
    /// The statistics of one image from its stored map and its mask (same `width × height`,
    /// row-major).
    pub fn from_map<M: MaskValue>(
        map: &[u16],
        mask: &[M],
        width: usize,
        height: usize,
    ) -> Result<ImageStats, MetricError> {
        if width.checked_mul(height) != Some(map.len()) {
            return Err(MetricError::Shape { what: "map", len: map.len(), width, height });
        }
        let (labels, sizes) = label_regions(mask, width, height)?;
        let n_regions = sizes.iter().skip(1).filter(|&&s| s > 0).count() as u64;
        let weights: Vec<u128> = sizes.iter().map(|&s| if s > 0 { pixel_weight(s) } else { 0 }).collect();
        // A dense histogram over every stored level (65,536), then its non-empty bins in order:
        // linear in the pixels, where sorting them was not.
        let mut bg = vec![0u64; SCORE_LEVELS];
        let mut fg = vec![0u64; SCORE_LEVELS];
        let mut weight = vec![0u128; if n_regions > 0 { SCORE_LEVELS } else { 0 }];
        for (&q, &label) in map.iter().zip(&labels) {
            if label == 0 {
                bg[q as usize] += 1;
            } else {
                fg[q as usize] += 1;
                weight[q as usize] += weights[label as usize];
            }
        }
        let mut stats = ImageStats { n_regions, ..ImageStats::default() };
        for q in 0..SCORE_LEVELS {
            if bg[q] + fg[q] > 0 {
                stats.bins.push(q as u16);
                stats.bg_count.push(bg[q]);
                stats.fg_count.push(fg[q]);
                stats.region_weight.push(if fg[q] > 0 { weight[q] } else { 0 });
            }
        }
        Ok(stats)
    }

    /// The statistics of an image without defect pixels, from the histogram of its stored map
    /// (`bins` ascending, `counts` the pixels holding each): every pixel is background, so this
    /// is [`ImageStats::from_map`] with an empty mask (scoring builds it from a histogram made on
    /// the model's device, `detect::stored::histograms`).
    pub fn background_only(bins: Vec<u16>, counts: Vec<u64>) -> Result<ImageStats, MetricError> {
        let n = bins.len();
        ImageStats::from_parts(bins, counts, vec![0; n], vec![0; n], 0)
    }

    /// Builds a value from its parts, checking the invariants (the Arrow reader uses this).
    pub fn from_parts(
        bins: Vec<u16>,
        bg_count: Vec<u64>,
        fg_count: Vec<u64>,
        region_weight: Vec<u128>,
        n_regions: u64,
    ) -> Result<ImageStats, MetricError> {
        let invalid = |reason: String| Err(MetricError::InvalidStats { reason });
        let n = bins.len();
        if bg_count.len() != n || fg_count.len() != n || region_weight.len() != n {
            return invalid(format!(
                "bins, bg_count, fg_count and region_weight differ in length ({n}, {}, {}, {})",
                bg_count.len(),
                fg_count.len(),
                region_weight.len()
            ));
        }
        if let Some(w) = bins.windows(2).find(|w| w[0] >= w[1]) {
            return invalid(format!("bins are not strictly ascending ({} then {})", w[0], w[1]));
        }
        for i in 0..n {
            if region_weight[i] > REGION_WEIGHT_MAX {
                return invalid(format!("region_weight of bin {} exceeds 10^38 - 1", bins[i]));
            }
            if (fg_count[i] == 0) != (region_weight[i] == 0) {
                return invalid(format!(
                    "bin {} has {} defect pixels but region weight {}",
                    bins[i], fg_count[i], region_weight[i]
                ));
            }
        }
        let has_defects = fg_count.iter().any(|&c| c > 0);
        if has_defects != (n_regions > 0) {
            return invalid(format!("{n_regions} regions but defect pixels present: {has_defects}"));
        }
        Ok(ImageStats { bins, bg_count, fg_count, region_weight, n_regions })
    }

    /// Non-empty score bins (stored values), ascending.
    pub fn bins(&self) -> &[u16] {
        &self.bins
    }
    /// Background pixels per bin.
    pub fn bg_count(&self) -> &[u64] {
        &self.bg_count
    }
    /// Defect pixels per bin.
    pub fn fg_count(&self) -> &[u64] {
        &self.fg_count
    }
    /// Σ ω(|r|) per bin, in units of 2^-80 ([`pixel_weight`]).
    pub fn region_weight(&self) -> &[u128] {
        &self.region_weight
    }
    /// Number of 8-connected ground-truth regions.
    pub fn n_regions(&self) -> u64 {
        self.n_regions
    }
    /// Background pixels in total (N of pixel AUROC, the FPR denominator of AUPRO).
    pub fn n_background(&self) -> u64 {
        self.bg_count.iter().sum()
    }
    /// Defect pixels in total (P of pixel AUROC).
    pub fn n_defect(&self) -> u64 {
        self.fg_count.iter().sum()
    }

    /// Adds `other` into `self` (a sorted merge of the sparse bins; integer sums, checked).
    pub fn merge(&mut self, other: &ImageStats) -> Result<(), MetricError> {
        let mut sum = StatsSum::new();
        sum.add(self)?;
        sum.add(other)?;
        *self = sum.finish()?;
        Ok(())
    }

    /// The sum of many statistics, in any order.
    pub fn sum<'a>(items: impl IntoIterator<Item = &'a ImageStats>) -> Result<ImageStats, MetricError> {
        let mut sum = StatsSum::new();
        for s in items {
            sum.add(s)?;
        }
        sum.finish()
    }

    /// Grouped thresholds for pixel AUROC, highest score first: (background, defect) per bin.
    pub fn binary_levels(&self) -> impl Iterator<Item = BinaryLevel> + '_ {
        (0..self.bins.len()).rev().map(|i| BinaryLevel { negatives: self.bg_count[i], positives: self.fg_count[i] })
    }

    /// Grouped thresholds for AUPRO, highest score first: (background, region weight) per bin.
    pub fn pro_levels(&self) -> impl Iterator<Item = ProLevel> + '_ {
        (0..self.bins.len()).rev().map(|i| ProLevel { background: self.bg_count[i], weight: self.region_weight[i] })
    }

    /// Heap bytes held (capacity, not length).
    pub fn heap_size(&self) -> usize {
        self.bins.capacity() * 2
            + (self.bg_count.capacity() + self.fg_count.capacity()) * 8
            + self.region_weight.capacity() * 16
    }
}

/// ½ · Σ_b p_b · n_b / (P · N): the largest amount by which pixel AUROC over the unquantised
/// scores can differ from pixel AUROC over these (quantised) statistics. A bin holding p_b defect
/// and n_b background pixels counts each of its p_b · n_b pairs as half a win; with float scores
/// each pair is a win or a loss, so the difference is at most half of the tied pairs.
pub fn auroc_tie_bound(stats: &ImageStats) -> Result<f64, MetricError> {
    let metric = "pixel_auroc";
    let (p, n) = (stats.n_defect(), stats.n_background());
    if p == 0 && n == 0 {
        return Err(MetricError::undefined(metric, UndefinedReason::Empty));
    }
    if p == 0 {
        return Err(MetricError::undefined(metric, UndefinedReason::NoPositives));
    }
    if n == 0 {
        return Err(MetricError::undefined(metric, UndefinedReason::NoNegatives));
    }
    let tied: u128 = stats.fg_count.iter().zip(&stats.bg_count).map(|(&p, &n)| p as u128 * n as u128).sum();
    Ok(tied as f64 / (2.0 * p as f64 * n as f64))
}

/// One bin of a [`StatsSum`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    bin: u16,
    bg: u64,
    fg: u64,
    weight: u128,
}

/// Running sum of many [`ImageStats`]: appends their bins and compacts (sort by bin, add) when
/// the unsorted tail outgrows the sorted head, so adding k values with B bins in total costs
/// O(B log B) and never more than about twice the merged size in memory. Once more bins have been
/// added (repeats counted) than there are stored levels (65,536), it turns into one dense counter
/// per level (2 MiB): from then on adding a value costs O(its bins) and no sort. A scoring run
/// adds thousands of bins per image that fall on the same ~10,000 levels (160 generated images:
/// 1.14 million bins, 10,757 distinct), so the sparse form sorted the same levels again every
/// image or two. A sum of one or two images stays sparse (the accumulators of `pixel_auroc` and
/// `pixel_aupro` hold one per group).
#[derive(Debug, Clone, Default)]
pub struct StatsSum {
    entries: Vec<Entry>,
    sorted: usize,
    dense: Option<Box<DenseBins>>,
    /// Bins added so far, counted with repeats.
    added: u64,
    n_regions: u64,
}

/// Every stored level's sums, and whether any value has held the level (a bin of a value may
/// have zero counts, and stays a bin of the sum, as in the sparse form).
#[derive(Debug, Clone)]
struct DenseBins {
    present: Vec<bool>,
    bg: Vec<u64>,
    fg: Vec<u64>,
    weight: Vec<u128>,
}

impl DenseBins {
    fn new() -> DenseBins {
        let n = super::quantize::SCORE_LEVELS;
        DenseBins { present: vec![false; n], bg: vec![0; n], fg: vec![0; n], weight: vec![0; n] }
    }

    fn add(&mut self, e: Entry) -> Result<(), MetricError> {
        let b = e.bin as usize;
        self.present[b] = true;
        self.bg[b] = add_counts(self.bg[b], e.bg, "bg_count")?;
        self.fg[b] = add_counts(self.fg[b], e.fg, "fg_count")?;
        self.weight[b] = add_weights(self.weight[b], e.weight)?;
        Ok(())
    }
}

fn add_counts(a: u64, b: u64, what: &'static str) -> Result<u64, MetricError> {
    a.checked_add(b).ok_or(MetricError::Overflow { what })
}

fn add_weights(a: u128, b: u128) -> Result<u128, MetricError> {
    a.checked_add(b).filter(|&w| w <= REGION_WEIGHT_MAX).ok_or(MetricError::Overflow { what: "region_weight" })
}

impl StatsSum {
    pub fn new() -> StatsSum {
        StatsSum::default()
    }

    /// Adds one value.
    pub fn add(&mut self, stats: &ImageStats) -> Result<(), MetricError> {
        self.add_parts(
            &stats.bins,
            &stats.bg_count,
            &stats.fg_count,
            stats.region_weight.iter().copied(),
            stats.n_regions,
        )
    }

    /// Adds one value given as parallel slices (validated by the caller).
    pub(crate) fn add_parts(
        &mut self,
        bins: &[u16],
        bg: &[u64],
        fg: &[u64],
        weight: impl Iterator<Item = u128>,
        n_regions: u64,
    ) -> Result<(), MetricError> {
        self.n_regions = self.n_regions.checked_add(n_regions).ok_or(MetricError::Overflow { what: "n_regions" })?;
        let mut entries =
            bins.iter().zip(bg).zip(fg).zip(weight).map(|(((&bin, &bg), &fg), weight)| Entry { bin, bg, fg, weight });
        if let Some(dense) = self.dense.as_mut() {
            return entries.try_for_each(|e| dense.add(e));
        }
        self.entries.extend(entries);
        self.added += bins.len() as u64;
        if self.added > super::quantize::SCORE_LEVELS as u64 {
            let mut dense = Box::new(DenseBins::new());
            for e in std::mem::take(&mut self.entries) {
                dense.add(e)?;
            }
            self.sorted = 0;
            self.dense = Some(dense);
        } else if self.entries.len() - self.sorted > self.sorted.max(4096) {
            self.compact()?;
        }
        Ok(())
    }

    fn compact(&mut self) -> Result<(), MetricError> {
        if self.sorted == self.entries.len() {
            return Ok(());
        }
        self.entries.sort_unstable_by_key(|e| e.bin);
        let mut out: Vec<Entry> = Vec::with_capacity(self.entries.len().min(super::quantize::SCORE_LEVELS));
        for e in self.entries.drain(..) {
            match out.last_mut() {
                Some(last) if last.bin == e.bin => {
                    last.bg = add_counts(last.bg, e.bg, "bg_count")?;
                    last.fg = add_counts(last.fg, e.fg, "fg_count")?;
                    last.weight = add_weights(last.weight, e.weight)?;
                }
                _ => out.push(e),
            }
        }
        self.entries = out;
        self.sorted = self.entries.len();
        Ok(())
    }

    /// The merged statistics so far (the sum stays usable).
    pub fn to_stats(&mut self) -> Result<ImageStats, MetricError> {
        let mut s = ImageStats { n_regions: self.n_regions, ..ImageStats::default() };
        let mut push = |e: Entry| {
            s.bins.push(e.bin);
            s.bg_count.push(e.bg);
            s.fg_count.push(e.fg);
            s.region_weight.push(e.weight);
        };
        match &self.dense {
            Some(d) => (0..d.present.len())
                .filter(|&b| d.present[b])
                .for_each(|b| push(Entry { bin: b as u16, bg: d.bg[b], fg: d.fg[b], weight: d.weight[b] })),
            None => {
                self.compact()?;
                self.entries.iter().for_each(|&e| push(e));
            }
        }
        Ok(s)
    }

    /// The merged statistics.
    pub fn finish(mut self) -> Result<ImageStats, MetricError> {
        self.to_stats()
    }

    /// Bytes held, counting capacity.
    pub fn size(&self) -> usize {
        let dense = self.dense.as_ref().map_or(0, |d| {
            std::mem::size_of::<DenseBins>()
                + d.present.capacity()
                + (d.bg.capacity() + d.fg.capacity()) * 8
                + d.weight.capacity() * 16
        });
        std::mem::size_of::<Self>() + self.entries.capacity() * std::mem::size_of::<Entry>() + dense
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let h = rows.len();
        let w = rows[0].len();
        (rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect(), w, h)
    }

    #[test]
    fn eight_connectivity_joins_diagonals() {
        let (m, w, h) = mask(&["#..#", ".#..", "..#.", "...."]);
        let (_, sizes) = label_regions(&m, w, h).unwrap();
        let mut regions: Vec<u64> = sizes[1..].iter().copied().filter(|&s| s > 0).collect();
        regions.sort();
        // the diagonal (0,0),(1,1),(2,2) is one region, (0,3) alone
        assert_eq!(regions, vec![1, 3]);
        assert_eq!(sizes[0], 12);
    }

    #[test]
    fn from_map_counts_by_hand() {
        // 3×2 map; mask: a 2-pixel region and a 1-pixel region (not touching)
        let map = [5u16, 5, 9, 9, 5, 1];
        let (m, w, h) = mask(&["##.", "..#"]);
        // (0,0),(1,0) region of 2; (2,1) region of 1; but (1,0) and (2,1) touch diagonally!
        let s = ImageStats::from_map(&map, &m, w, h).unwrap();
        assert_eq!(s.n_regions(), 1, "8-connectivity joins (1,0) and (2,1)");
        let third = pixel_weight(3);
        assert_eq!(s.bins(), &[1, 5, 9]);
        assert_eq!(s.bg_count(), &[0, 1, 2]);
        assert_eq!(s.fg_count(), &[1, 2, 0]);
        assert_eq!(s.region_weight(), &[third, 2 * third, 0]);

        let (m, w, h) = mask(&["##.", "...", "..#"]);
        let map = [5u16, 5, 9, 9, 5, 1, 2, 2, 1];
        let s = ImageStats::from_map(&map, &m, w, h).unwrap();
        assert_eq!(s.n_regions(), 2);
        assert_eq!(s.bins(), &[1, 2, 5, 9]);
        assert_eq!(s.fg_count(), &[1, 0, 2, 0]);
        assert_eq!(s.bg_count(), &[1, 2, 1, 2]);
        assert_eq!(s.region_weight(), &[pixel_weight(1), 0, 2 * pixel_weight(2), 0]);
        assert_eq!(pixel_weight(1), 1u128 << 80);
        assert_eq!(pixel_weight(2), 1u128 << 79);
    }

    #[test]
    fn u8_masks_and_shape_errors() {
        let s1 = ImageStats::from_map(&[1, 2, 3, 4], &[0u8, 7, 0, 0], 2, 2).unwrap();
        let s2 = ImageStats::from_map(&[1, 2, 3, 4], &[false, true, false, false], 2, 2).unwrap();
        assert_eq!(s1, s2);
        assert_eq!(
            ImageStats::from_map(&[1, 2, 3], &[false; 4], 2, 2),
            Err(MetricError::Shape { what: "map", len: 3, width: 2, height: 2 })
        );
        assert_eq!(
            ImageStats::from_map(&[1, 2, 3, 4], &[false; 3], 2, 2),
            Err(MetricError::Shape { what: "mask", len: 3, width: 2, height: 2 })
        );
        let empty = ImageStats::from_map::<bool>(&[], &[], 0, 0).unwrap();
        assert_eq!(empty, ImageStats::default());
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    fn random_stats(seed: &mut u64, n: usize) -> Vec<ImageStats> {
        (0..n)
            .map(|_| {
                let (w, h) = (3 + lcg(seed) as usize % 9, 3 + lcg(seed) as usize % 9);
                let map: Vec<u16> = (0..w * h).map(|_| (lcg(seed) % 40) as u16 * 1600).collect();
                let mask: Vec<bool> = (0..w * h).map(|_| lcg(seed).is_multiple_of(4)).collect();
                ImageStats::from_map(&map, &mask, w, h).unwrap()
            })
            .collect()
    }

    #[test]
    fn merge_law_any_order_any_split() {
        let mut seed = 7;
        let items = random_stats(&mut seed, 40);
        let all = ImageStats::sum(&items).unwrap();
        // pairwise merge, reversed order
        let mut acc = ImageStats::default();
        for s in items.iter().rev() {
            acc.merge(s).unwrap();
        }
        assert_eq!(acc, all);
        // split in three uneven parts, merge the partial sums
        let parts = [&items[..3], &items[3..29], &items[29..]];
        let partial: Vec<ImageStats> = parts.iter().map(|p| ImageStats::sum(p.iter()).unwrap()).collect();
        assert_eq!(ImageStats::sum(partial.iter().rev()).unwrap(), all);
        // totals are the totals of the parts
        assert_eq!(all.n_regions(), items.iter().map(|s| s.n_regions()).sum::<u64>());
        assert_eq!(all.n_background(), items.iter().map(|s| s.n_background()).sum::<u64>());
        assert!(all.bins().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn many_values_trigger_compaction() {
        let mut seed = 99;
        let items = random_stats(&mut seed, 800);
        let mut sum = StatsSum::new();
        for s in &items {
            sum.add(s).unwrap();
        }
        let a = sum.finish().unwrap();
        let mut b = ImageStats::default();
        for s in &items {
            b.merge(s).unwrap();
        }
        assert_eq!(a, b);
    }

    #[test]
    fn from_parts_rejects_bad_values() {
        assert!(ImageStats::from_parts(vec![1, 1], vec![1, 1], vec![0, 0], vec![0, 0], 0).is_err());
        assert!(ImageStats::from_parts(vec![1], vec![1, 1], vec![0], vec![0], 0).is_err());
        assert!(ImageStats::from_parts(vec![1], vec![0], vec![1], vec![0], 1).is_err());
        assert!(ImageStats::from_parts(vec![1], vec![0], vec![1], vec![1 << 80], 0).is_err());
        assert!(ImageStats::from_parts(vec![1], vec![0], vec![1], vec![REGION_WEIGHT_MAX + 1], 1).is_err());
        assert!(ImageStats::from_parts(vec![1, 2], vec![3, 0], vec![0, 1], vec![0, 1 << 80], 1).is_ok());
    }

    #[test]
    fn weight_overflow_is_an_error() {
        let big = ImageStats::from_parts(vec![7], vec![0], vec![1], vec![REGION_WEIGHT_MAX - 1], 1).unwrap();
        let mut acc = big.clone();
        assert_eq!(acc.merge(&big), Err(MetricError::Overflow { what: "region_weight" }));
    }

    #[test]
    fn tie_bound_by_hand() {
        // bins: (bg 2, fg 1), (bg 1, fg 0), (bg 0, fg 3): P = 4, N = 3, tied pairs = 2
        let s = ImageStats::from_parts(vec![1, 2, 3], vec![2, 1, 0], vec![1, 0, 3], vec![1, 0, 3], 1).unwrap();
        assert_eq!(auroc_tie_bound(&s).unwrap(), 2.0 / (2.0 * 4.0 * 3.0));
        let none = ImageStats::from_parts(vec![1], vec![2], vec![0], vec![0], 0).unwrap();
        assert_eq!(
            auroc_tie_bound(&none),
            Err(MetricError::Undefined { metric: "pixel_auroc", reason: UndefinedReason::NoPositives })
        );
    }

    /// Values with thousands of bins each, so that the sum turns dense part way: the same
    /// statistics as merging them pairwise (which never holds more than two values), before and
    /// after the switch, and overflows are still caught once dense.
    #[test]
    fn a_sum_past_the_number_of_levels_turns_dense_and_stays_exact() {
        let mut seed = 5;
        let items: Vec<ImageStats> = (0..30)
            .map(|_| {
                let (w, h) = (100, 100);
                let map: Vec<u16> = (0..w * h).map(|_| (lcg(&mut seed) % 65536) as u16).collect();
                let mask: Vec<bool> = (0..w * h).map(|_| lcg(&mut seed).is_multiple_of(5)).collect();
                ImageStats::from_map(&map, &mask, w, h).unwrap()
            })
            .collect();
        let mut sum = StatsSum::new();
        let mut pairwise = ImageStats::default();
        for (i, s) in items.iter().enumerate() {
            sum.add(s).unwrap();
            pairwise.merge(s).unwrap();
            if [0, 15, items.len() - 1].contains(&i) {
                assert_eq!(sum.to_stats().unwrap(), pairwise, "after {} values", i + 1);
            }
        }
        assert!(sum.dense.is_some(), "{} entries", sum.entries.len());
        assert!(sum.size() > 2 << 20, "{}", sum.size());
        // A bin with zero counts stays a bin, as in the sparse form.
        let empty_bin = ImageStats::from_parts(vec![3], vec![0], vec![0], vec![0], 0).unwrap();
        let mut with_empty = pairwise.clone();
        with_empty.merge(&empty_bin).unwrap();
        sum.add(&empty_bin).unwrap();
        assert_eq!(sum.to_stats().unwrap(), with_empty);
        // Half the range and one: the first fits beside the images' own weight of bin 7 (at most
        // 2^80 per pixel), the second cannot.
        let big = ImageStats::from_parts(vec![7], vec![0], vec![1], vec![REGION_WEIGHT_MAX / 2 + 1], 1).unwrap();
        sum.add(&big).unwrap();
        assert_eq!(sum.add(&big), Err(MetricError::Overflow { what: "region_weight" }));
    }
}
