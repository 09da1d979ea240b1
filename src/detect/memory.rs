//! Vision-guided memory: nearest-neighbour cosine distance of each test patch to the patches of
//! the k normal shots (reference `promptad-official-behaviour.md` §7.1).
//!
//! `s(f) = min_r (1 − f·r) / 2` over every memory patch `r`, no positional restriction, one bank
//! per tapped layer, and `V = mean over banks`. For unit vectors the minimum distance is one
//! matrix product and a max per bank, batched over images; the bank is visited in chunks so that
//! memory stays bounded for large k.

use tch::{Kind, Tensor};

use super::DetectError;

/// Memory rows compared per matrix product: bounds the `[B·P, chunk]` similarity block.
pub const MEMORY_CHUNK: i64 = 8192;

#[derive(Debug)]
pub struct VisualMemory {
    /// The vision blocks the banks were tapped at, in bank order (the artifact's `detect.taps`).
    pub taps: Vec<usize>,
    /// One bank per memory tap, each `[k·P, width]`, L2-normalised rows (`feature_gallery1/2`).
    pub banks: Vec<Tensor>,
}

impl VisualMemory {
    /// From the normalised taps of the k shots, each `[k, P, width]`, tapped at blocks `taps`.
    pub fn from_taps(taps: &[usize], features: &[Tensor]) -> Self {
        Self {
            taps: taps.to_vec(),
            banks: features.iter().map(|t| t.reshape([-1, *t.size().last().expect("taps are [k, P, W]")])).collect(),
        }
    }

    /// Test features tapped at blocks `requested` can be compared with this memory only if they
    /// are the blocks the memory was built from, in the same order.
    pub fn check_taps(&self, requested: &[usize]) -> Result<(), DetectError> {
        if requested != self.taps.as_slice() || self.banks.len() != self.taps.len() {
            return Err(DetectError::TapMismatch {
                memory: self.taps.clone(),
                banks: self.banks.len(),
                requested: requested.to_vec(),
            });
        }
        Ok(())
    }

    /// `V`, `[B, P]`: the mean over banks of the nearest-neighbour cosine distance / 2. `taps`
    /// are the normalised test taps, in bank order, each `[B, P, width]` (their blocks checked
    /// with [`VisualMemory::check_taps`]; a different count here is a bug).
    pub fn distance(&self, taps: &[Tensor]) -> Tensor {
        assert_eq!(taps.len(), self.banks.len(), "one test tap per memory bank");
        let per_bank: Vec<Tensor> =
            taps.iter().zip(&self.banks).map(|(tap, bank)| nearest_distance(tap, bank)).collect();
        Tensor::stack(&per_bank, 0).mean_dim(0, false, Kind::Float)
    }
}

/// `min_r (1 − f·r) / 2` for every row of `queries` (`[B, P, W]`) against `bank` (`[K, W]`).
pub fn nearest_distance(queries: &Tensor, bank: &Tensor) -> Tensor {
    let (b, p, w) = queries.size3().expect("queries are [B, P, W]");
    let flat = queries.reshape([b * p, w]).to_kind(bank.kind());
    let rows = bank.size()[0];
    let mut best: Option<Tensor> = None;
    let mut start = 0;
    while start < rows {
        let len = MEMORY_CHUNK.min(rows - start);
        let similarity = flat.matmul(&bank.narrow(0, start, len).tr()).amax([-1], false);
        best = Some(match best {
            None => similarity,
            Some(b) => b.maximum(&similarity),
        });
        start += len;
    }
    let best = best.expect("the memory bank is not empty");
    let distance: Tensor = (1.0 - best.to_kind(Kind::Float)) / 2.0;
    distance.view([b, p])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::l2_normalize;
    use tch::Device;

    #[test]
    fn a_config_whose_taps_differ_from_the_memory_is_a_typed_error_naming_both() {
        let shots = Tensor::randn([1, 4, 8], (Kind::Float, Device::Cpu));
        let memory = VisualMemory::from_taps(&[3, 8], &[shots.shallow_clone(), shots]);
        assert!(memory.check_taps(&[3, 8]).is_ok());
        for requested in [vec![3, 9], vec![8, 3], vec![3], vec![3, 8, 11]] {
            let err = memory.check_taps(&requested).unwrap_err();
            assert!(
                matches!(&err, DetectError::TapMismatch { memory, requested: r, .. } if memory == &[3, 8] && r == &requested),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("[3, 8]") && text.contains(&format!("{requested:?}")), "{text}");
            assert!(text.contains("retrain"), "says what to do: {text}");
        }
    }

    #[test]
    fn matches_the_brute_force_minimum_across_chunks() {
        tch::manual_seed(3);
        let queries = l2_normalize(&Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu)));
        let bank = l2_normalize(&Tensor::randn([MEMORY_CHUNK + 17, 8], (Kind::Float, Device::Cpu)));
        let got = nearest_distance(&queries, &bank);
        for b in 0..2 {
            for p in 0..5 {
                let q = queries.get(b).get(p);
                let distances: Tensor = (1.0 - bank.matmul(&q)) / 2.0;
                let brute = distances.min().double_value(&[]);
                assert!((got.double_value(&[b, p]) - brute).abs() < 1e-6);
            }
        }
        // A query that is in the bank has distance 0.
        let inside = bank.narrow(0, MEMORY_CHUNK + 3, 1).view([1, 1, 8]);
        assert!(nearest_distance(&inside, &bank).double_value(&[0, 0]).abs() < 1e-6);
    }
}
