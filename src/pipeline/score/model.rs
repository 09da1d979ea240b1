//! Stage 3, model: the detector on a batch, then on its device the quantised maps, their
//! maxima, decisions and histograms ([`crate::detect::stored`]); back to the host come the
//! scores, the grids and only the parts of the stored maps each image needs ([`MapNeed`]).

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::data::shard::ImageRecord;
use crate::detect::stored::{count_at_least, histograms, host_values, quantize_maps, SparseHistogram};
use crate::detect::Detector;
use crate::runtime::thread_cpu::model_threads_cpu_seconds;
use crate::sink::MapsMode;

use super::{ScoreError, StageSeconds};

/// A decoded image: its record, its model input and its mask at the map size (`None`: unlabelled).
pub(super) type Decoded = (ImageRecord, (Vec<f32>, Option<Vec<bool>>));

/// What of an image's stored map the host needs ([`crate::detect::stored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapNeed {
    /// Nothing: an unlabelled image of a compact or none run.
    Nothing,
    /// Its histogram, which is its whole statistics: a labelled image without defect pixels.
    Histogram,
    /// Every stored value: a full run, or an image with defect pixels (AUPRO's regions are
    /// connected components of the mask, per pixel).
    Values,
}

impl MapNeed {
    fn of(mode: MapsMode, record: &ImageRecord, gt: Option<&[bool]>) -> MapNeed {
        let labelled = record.gt_label.is_some() && gt.is_some();
        if mode == MapsMode::Full || (labelled && gt.is_some_and(|m| m.iter().any(|&d| d))) {
            MapNeed::Values
        } else if labelled {
            MapNeed::Histogram
        } else {
            MapNeed::Nothing
        }
    }
}

/// What of an image's stored map came back from the device, by its [`MapNeed`].
pub(super) enum StoredPart {
    Nothing,
    Histogram(SparseHistogram),
    Values(Vec<u16>),
}

/// The model's outputs for a batch, on the host.
pub(super) struct ScoredBatch {
    pub(super) image_score: Vec<f64>,
    pub(super) text_score: Vec<f64>,
    pub(super) visual_max: Vec<f64>,
    /// The maximum of each fp32 map.
    pub(super) max_pixel: Vec<f64>,
    /// Per image, its pixels at or above the calibration's pixel threshold.
    pub(super) anomalous_pixels: Option<Vec<i64>>,
    pub(super) stored: Vec<StoredPart>,
    /// `[g, g]` per image, fp32: the evidence the maps are made of (empty for `--maps none`).
    pub(super) grids: Vec<Vec<f32>>,
    pub(super) grid_side: i32,
}

/// What the model stage brings back to the host for a batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Needs {
    pub(super) maps: MapsMode,
    pub(super) pixel_threshold: Option<u16>,
}

/// Stage 3: the detector on a batch of decoded images, and the stored maps' parts each image
/// needs ([`MapNeed`]), computed on the device; the backbone's share of the time (and, with
/// `time_forward_cpu`, of the model threads' CPU) is added to `seconds`.
pub(super) fn score_batch(
    detector: &Detector,
    good: &[Decoded],
    size: u32,
    needs: Needs,
    time_forward_cpu: bool,
    seconds: &mut StageSeconds,
) -> Result<ScoredBatch, ScoreError> {
    let flat: Vec<f32> = good.iter().flat_map(|(_, (input, _))| input.iter().copied()).collect();
    let batch = Tensor::from_slice(&flat).view([good.len() as i64, 3, size as i64, size as i64]);
    let model_cpu = || if time_forward_cpu { model_threads_cpu_seconds() } else { 0.0 };
    let (started, cpu) = (Instant::now(), model_cpu());
    let features = detector.features(&batch)?;
    if let Device::Cuda(index) = detector.clip.device {
        tch::Cuda::synchronize(index as i64);
    }
    seconds.backbone += started.elapsed().as_secs_f64();
    seconds.backbone_cpu += model_cpu() - cpu;
    tch::no_grad(|| {
        let detection = detector.detect_features(&features.global, &features.patch_tokens, &features.taps);
        let to_host = |t: &Tensor| t.to_device(Device::Cpu);
        let to_vec =
            |t: &Tensor| -> Result<Vec<f64>, ScoreError> { Ok(Vec::try_from(to_host(t).to_kind(Kind::Double))?) };
        let wanted: Vec<MapNeed> =
            good.iter().map(|(record, (_, gt))| MapNeed::of(needs.maps, record, gt.as_deref())).collect();
        // The nightly case (unlabelled, compact, no calibration) quantises nothing.
        let quantized = (needs.pixel_threshold.is_some() || wanted.iter().any(|&n| n != MapNeed::Nothing))
            .then(|| quantize_maps(&detection.map));
        let pick = |need: MapNeed| -> Option<(Vec<usize>, Tensor)> {
            let quantized = quantized.as_ref()?;
            let images: Vec<usize> = (0..wanted.len()).filter(|&i| wanted[i] == need).collect();
            let index: Vec<i64> = images.iter().map(|&i| i as i64).collect();
            match images.len() {
                0 => None,
                n if n == wanted.len() => Some((images, quantized.shallow_clone())),
                _ => {
                    Some((images, quantized.index_select(0, &Tensor::from_slice(&index).to_device(quantized.device()))))
                }
            }
        };
        let mut stored: Vec<StoredPart> = wanted.iter().map(|_| StoredPart::Nothing).collect();
        if let Some((images, selected)) = pick(MapNeed::Values) {
            for (&i, values) in images.iter().zip(host_values(&selected)?) {
                stored[i] = StoredPart::Values(values);
            }
        }
        if let Some((images, selected)) = pick(MapNeed::Histogram) {
            for (&i, histogram) in images.iter().zip(histograms(&selected)?) {
                stored[i] = StoredPart::Histogram(histogram);
            }
        }
        let grid_side = detection.grid_map.size()[1] as i32;
        let grids = if needs.maps == MapsMode::None {
            Vec::new()
        } else {
            let grids = to_host(&detection.grid_map.to_kind(Kind::Float));
            (0..good.len() as i64).map(|i| Vec::try_from(grids.get(i).flatten(0, -1))).collect::<Result<_, _>>()?
        };
        Ok(ScoredBatch {
            image_score: to_vec(&detection.image_score)?,
            text_score: to_vec(&detection.text_score)?,
            visual_max: to_vec(&detection.visual_max)?,
            max_pixel: to_vec(&detection.map.amax([1, 2], false))?,
            anomalous_pixels: match (needs.pixel_threshold, &quantized) {
                (Some(t), Some(q)) => Some(Vec::try_from(to_host(&count_at_least(q, t)))?),
                _ => None,
            },
            stored,
            grids,
            grid_side,
        })
    })
}
