//! What of a batch's maps leaves the device: the stored (u16) values, computed where the model
//! ran, and only the parts a run needs (reference DESIGN §4 for the stored form).
//!
//! A 400 × 400 fp32 map is 640 KB; across PCIe, for a GPU that scores thousands of images a
//! second, that is the bottleneck, and the host would then spend its cores quantising. So the
//! quantisation, the maximum, the pixel decisions and the histograms of images without defect
//! pixels are tensor operations on the maps' device, and an image's u16 values cross to the host
//! only when something there needs each pixel: a `--maps full` run, or the connected components of
//! a defect mask (AUPRO's regions). An unlabelled image in a compact run sends nothing but its
//! scores and its 15 × 15 grid.
//!
//! Every function here is exact: the same integers as [`crate::metrics::quantize::quantize`] and
//! [`crate::metrics::stats::ImageStats::from_map`] on the host (tests below, on the CPU device).

use tch::{Kind, Tensor};

use crate::metrics::quantize::{SCORE_LEVELS, SCORE_MAX};

/// libtorch has no u16: stored values cross to the host as Int16 holding `q − 32768`.
const OFFSET: i64 = 32768;

/// [`crate::metrics::quantize::quantize`] of every value of fp32 maps, on their device:
/// `clamp(floor(v · 65535 + ½), 0, 65535)` in fp64, NaN → 0, as Int (i32) `[B, H, W]`. For
/// `v ∈ [0, 1]` that is rounding halves away from zero, and it is exact: an fp32 times 65535
/// needs 40 bits and adding ½ to it is exact in fp64's 53; values outside [0, 1] clamp as
/// `quantize` clamps them. In place on one fp64 copy (fresh buffers per step cost more than
/// the arithmetic on a CPU).
pub fn quantize_maps(maps: &Tensor) -> Tensor {
    let mut scaled = maps.to_kind(Kind::Double);
    let _ = scaled.g_mul_scalar_(SCORE_MAX as f64);
    let _ = scaled.g_add_scalar_(0.5);
    let _ = scaled.floor_();
    let _ = scaled.clamp_(0.0, SCORE_MAX as f64);
    let _ = scaled.nan_to_num_(0.0, None, None);
    scaled.to_kind(Kind::Int)
}

/// Maps of [`quantize_maps`]'s form on the host, each image's stored values row-major; the
/// transfer is Int16 (half the bytes of i32 over PCIe).
pub fn host_values(quantized: &Tensor) -> Result<Vec<Vec<u16>>, tch::TchError> {
    let (b, _, _) = quantized.size3()?;
    let offset = (quantized - OFFSET).to_kind(Kind::Int16).to_device(tch::Device::Cpu);
    (0..b)
        .map(|i| {
            let values: Vec<i16> = Vec::try_from(offset.get(i).flatten(0, -1))?;
            Ok(values.into_iter().map(|v| (v as i32 + OFFSET as i32) as u16).collect())
        })
        .collect()
}

/// Per image of `quantized` (`[B, H, W]`, [`quantize_maps`]'s form), the pixels whose stored
/// value is at least `threshold_q`: `[B]` Int64.
pub fn count_at_least(quantized: &Tensor, threshold_q: u16) -> Tensor {
    quantized.ge(threshold_q as i64).sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Int64)
}

/// The histogram of one image's stored values, sparse: the values that occur, ascending, and
/// how many pixels hold each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SparseHistogram {
    pub bins: Vec<u16>,
    pub counts: Vec<u64>,
}

/// The [`SparseHistogram`] of each image of `quantized` (`[B, H, W]`, [`quantize_maps`]'s
/// form): a `bincount` per image on the device (65,536 bins, which stay in a CPU's cache where
/// one count over the batch would not), then only the non-empty bins cross to the host. For an
/// image without defect pixels this is its whole metric statistics (every pixel is background).
pub fn histograms(quantized: &Tensor) -> Result<Vec<SparseHistogram>, tch::TchError> {
    let (b, _, _) = quantized.size3()?;
    let levels = SCORE_LEVELS as i64;
    let dense: Vec<Tensor> = (0..b).map(|i| quantized.get(i).flatten(0, -1).bincount::<Tensor>(None, levels)).collect();
    let dense = Tensor::stack(&dense, 0).flatten(0, -1);
    // Row-major, hence ascending in (image, value).
    let nonzero = dense.nonzero().squeeze_dim(1);
    let counts: Vec<i64> = Vec::try_from(dense.index_select(0, &nonzero).to_device(tch::Device::Cpu))?;
    let flat: Vec<i64> = Vec::try_from(nonzero.to_device(tch::Device::Cpu))?;
    let mut out = vec![SparseHistogram::default(); b as usize];
    for (index, count) in flat.into_iter().zip(counts) {
        let histogram = &mut out[(index / levels) as usize];
        histogram.bins.push((index % levels) as u16);
        histogram.counts.push(count as u64);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::quantize::quantize;
    use crate::metrics::stats::ImageStats;
    use tch::Device;

    /// fp32 maps with the edge values of [`quantize`] and random ones, `[2, 6, 7]`.
    fn maps() -> Tensor {
        let mut values: Vec<f32> = vec![
            0.0,
            1.0,
            -3.0,
            7.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.5,
            1.4 / 65535.0,
            1.6 / 65535.0,
            // Halfway between two stored values, and one ulp either side.
            (0.5f64 / 65535.0) as f32,
            f32::from_bits(((0.5f64 / 65535.0) as f32).to_bits() + 1),
            f32::from_bits(((0.5f64 / 65535.0) as f32).to_bits() - 1),
            (32767.5f64 / 65535.0) as f32,
        ];
        tch::manual_seed(5);
        let random: Vec<f32> =
            Vec::try_from(Tensor::rand([84 - values.len() as i64], (Kind::Float, Device::Cpu))).expect("fp32");
        values.extend(random);
        Tensor::from_slice(&values).view([2, 6, 7])
    }

    #[test]
    fn quantize_maps_is_the_host_quantize_for_every_value() {
        let maps = maps();
        let on_device = host_values(&quantize_maps(&maps)).unwrap().concat();
        let host: Vec<f32> = Vec::try_from(maps.flatten(0, -1)).unwrap();
        let want: Vec<u16> = host.iter().map(|&v| quantize(v as f64)).collect();
        assert_eq!(on_device, want);
        // Every stored value survives the Int16 transfer, the ends included.
        let all = Tensor::arange(SCORE_LEVELS as i64, (Kind::Double, Device::Cpu)) / SCORE_MAX as f64;
        let back = host_values(&quantize_maps(&all.view([1, 256, 256]).to_kind(Kind::Float))).unwrap();
        assert_eq!(back[0], (0..=u16::MAX).collect::<Vec<_>>());
    }

    #[test]
    fn counts_and_histograms_match_the_host_statistics() {
        let maps = maps();
        let quantized = quantize_maps(&maps);
        let histograms = histograms(&quantized).unwrap();
        let counts: Vec<i64> = Vec::try_from(count_at_least(&quantized, 40000)).unwrap();
        for (i, values) in host_values(&quantized).unwrap().into_iter().enumerate() {
            let histogram = histograms[i].clone();
            assert_eq!(
                ImageStats::background_only(histogram.bins, histogram.counts).unwrap(),
                ImageStats::from_map(&values, &[false; 42], 7, 6).unwrap()
            );
            assert_eq!(counts[i], values.iter().filter(|&&q| q >= 40000).count() as i64);
        }
    }
}
