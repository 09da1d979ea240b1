//! The gallery of a category: which images to show (the most anomalous defects, the missed
//! defects, the worst false alarms) and their four panels: the image, the ground truth, the
//! anomaly map over the image, and the predicted mask's contour (red) with the ground truth's
//! (green), as anomalib's `ImageVisualizer` draws them.
//!
//! The map is coloured with the turbo colour map: with a pixel threshold, over anomalib's
//! normalised value (the threshold at the middle of the scale); without one, over the raw score
//! in [0, 1].

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage};
use serde::Serialize;

use crate::clip::preprocess::decode_rgb;
use crate::data::prepare::mask;
use crate::data::shard::ImageRecord;
use crate::metrics::PixelCalibration;
use crate::sql::results::ImageResult;

/// Side of a panel, in pixels.
pub const PANEL: u32 = 224;
const PRED_CONTOUR: Rgb<u8> = Rgb([255, 32, 32]);
const TRUTH_CONTOUR: Rgb<u8> = Rgb([40, 230, 70]);

/// The three groups of a category's gallery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Defective images with the highest scores.
    MostAnomalousDefects,
    /// Defective images decided normal (without decisions: the lowest-scored defects).
    MissedDefects,
    /// Normal images decided anomalous (without decisions: the highest-scored normal images).
    FalseAlarms,
}

impl Group {
    pub const ALL: [Group; 3] = [Group::MostAnomalousDefects, Group::MissedDefects, Group::FalseAlarms];

    pub fn title(self, decided: bool) -> &'static str {
        match (self, decided) {
            (Group::MostAnomalousDefects, _) => "most anomalous defects",
            (Group::MissedDefects, true) => "missed defects (decided normal)",
            (Group::MissedDefects, false) => "lowest-scored defects (no decisions: not calibrated)",
            (Group::FalseAlarms, true) => "false alarms (normal images decided anomalous), worst first",
            (Group::FalseAlarms, false) => "highest-scored normal images (no decisions: not calibrated)",
        }
    }
}

/// Up to `per_group` images of each group, each image in one group at most. With `decided`
/// (the run has image decisions), missed defects and false alarms are the wrong decisions;
/// without, the lowest-scored defects and the highest-scored normal images.
pub fn choose(images: &[ImageResult], per_group: usize, decided: bool) -> Vec<(Group, &ImageResult)> {
    fn by_score_desc(mut v: Vec<&ImageResult>) -> Vec<&ImageResult> {
        v.sort_by(|a, b| b.pred_score.total_cmp(&a.pred_score).then_with(|| a.image_id.cmp(&b.image_id)));
        v
    }
    let defects: Vec<&ImageResult> = images.iter().filter(|i| i.gt_label == Some(1)).collect();
    let normals: Vec<&ImageResult> = images.iter().filter(|i| i.gt_label == Some(0)).collect();
    let mut chosen: Vec<(Group, &ImageResult)> = Vec::new();
    let top = by_score_desc(defects.clone());
    chosen.extend(top.iter().take(per_group).map(|i| (Group::MostAnomalousDefects, *i)));
    let mut missed: Vec<&ImageResult> = by_score_desc(defects)
        .into_iter()
        .rev()
        .filter(|i| !decided || i.pred_label == Some(0))
        .filter(|i| !chosen.iter().any(|(_, c)| c.image_id == i.image_id))
        .collect();
    missed.truncate(per_group);
    chosen.extend(missed.into_iter().map(|i| (Group::MissedDefects, i)));
    let alarms = by_score_desc(normals).into_iter().filter(|i| !decided || i.pred_label == Some(1)).take(per_group);
    chosen.extend(alarms.map(|i| (Group::FalseAlarms, i)));
    chosen
}

/// The encoded panels of one gallery entry.
pub struct Panels {
    /// JPEG.
    pub image: Vec<u8>,
    /// PNG, white on black.
    pub truth: Vec<u8>,
    /// JPEG.
    pub overlay: Vec<u8>,
    /// JPEG; `None` without a pixel threshold.
    pub contours: Option<Vec<u8>>,
}

/// Why a panel could not be made (the entry is shown with this note instead).
#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    #[error("{0}")]
    Decode(String),
    #[error("the stored map has {len} values, not {side}×{side}")]
    MapShape { len: usize, side: usize },
    #[error("encoding a panel: {0}")]
    Encode(#[from] image::ImageError),
}

/// The panels of an image from its record (`None`: the dataset could not be read, a grey
/// background stands in) and its stored map of side `side`.
pub fn panels(
    record: Option<&ImageRecord>,
    map: &[u16],
    side: usize,
    pixel: Option<&PixelCalibration>,
) -> Result<Panels, PanelError> {
    if map.len() != side * side {
        return Err(PanelError::MapShape { len: map.len(), side });
    }
    let image = match record {
        Some(r) => {
            let rgb = decode_rgb(&r.image, &r.origin).map_err(|e| PanelError::Decode(e.to_string()))?;
            imageops::resize(&rgb, PANEL, PANEL, FilterType::Triangle)
        }
        None => RgbImage::from_pixel(PANEL, PANEL, Rgb([128, 128, 128])),
    };
    let truth: Vec<bool> = match record.and_then(|r| r.mask.as_ref().map(|m| (r, m))) {
        Some((r, bytes)) => {
            mask(bytes, &format!("{} (mask)", r.origin), PANEL).map_err(|e| PanelError::Decode(e.to_string()))?
        }
        None => vec![false; (PANEL * PANEL) as usize],
    };
    let stored: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_raw(side as u32, side as u32, map.to_vec()).expect("length checked above");
    let q = imageops::resize(&stored, PANEL, PANEL, FilterType::Triangle);
    let colour = |v: u16| {
        let t = pixel.map_or(v as f64 / 65535.0, |p| p.normalize(v));
        let c = colorous::TURBO.eval_continuous(t.clamp(0.0, 1.0));
        [c.r, c.g, c.b]
    };
    let overlay = RgbImage::from_fn(PANEL, PANEL, |x, y| {
        let (base, heat) = (image.get_pixel(x, y).0, colour(q.get_pixel(x, y)[0]));
        Rgb(std::array::from_fn(|c| ((base[c] as u16 + heat[c] as u16) / 2) as u8))
    });
    let contours = pixel.map(|p| {
        let predicted: Vec<bool> = q.pixels().map(|v| p.is_anomalous(v[0])).collect();
        let mut drawn = image.clone();
        for (mask, colour) in [(&truth, TRUTH_CONTOUR), (&predicted, PRED_CONTOUR)] {
            for (x, y) in contour(mask, PANEL as usize) {
                drawn.put_pixel(x as u32, y as u32, colour);
            }
        }
        drawn
    });
    let truth = GrayImage::from_fn(PANEL, PANEL, |x, y| Luma([if truth[(y * PANEL + x) as usize] { 255 } else { 0 }]));
    Ok(Panels {
        image: jpeg(&image)?,
        truth: png(&truth)?,
        overlay: jpeg(&overlay)?,
        contours: contours.as_ref().map(jpeg).transpose()?,
    })
}

/// The pixels of `mask` (`side × side`, row-major) with a 4-neighbour outside it (or on the
/// border of the image): its contour, one pixel wide.
fn contour(mask: &[bool], side: usize) -> Vec<(usize, usize)> {
    let inside = |x: isize, y: isize| {
        x >= 0 && y >= 0 && (x as usize) < side && (y as usize) < side && mask[y as usize * side + x as usize]
    };
    let mut points = Vec::new();
    for y in 0..side {
        for x in 0..side {
            let (xi, yi) = (x as isize, y as isize);
            if mask[y * side + x]
                && !(inside(xi - 1, yi) && inside(xi + 1, yi) && inside(xi, yi - 1) && inside(xi, yi + 1))
            {
                points.push((x, y));
            }
        }
    }
    points
}

fn jpeg(image: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 88).encode_image(image)?;
    Ok(bytes)
}

fn png(image: &GrayImage) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, gt: i8, score: f64, pred: Option<i8>) -> ImageResult {
        ImageResult {
            image_id: id.into(),
            defect_type: None,
            gt_label: Some(gt),
            image_path: String::new(),
            pred_score: score,
            pred_label: pred,
            anomalous_pixels: None,
            model_version: "m".into(),
            calibration_version: None,
        }
    }

    #[test]
    fn groups_follow_the_decisions() {
        let images = [
            result("d1", 1, 0.9, Some(1)),
            result("d2", 1, 0.2, Some(0)),
            result("d3", 1, 0.6, Some(1)),
            result("n1", 0, 0.7, Some(1)),
            result("n2", 0, 0.1, Some(0)),
        ];
        let ids = |chosen: Vec<(Group, &ImageResult)>, g: Group| -> Vec<String> {
            chosen.into_iter().filter(|(c, _)| *c == g).map(|(_, i)| i.image_id.clone()).collect()
        };
        let decided = choose(&images, 1, true);
        assert_eq!(ids(decided.clone(), Group::MostAnomalousDefects), ["d1"]);
        assert_eq!(ids(decided.clone(), Group::MissedDefects), ["d2"]);
        assert_eq!(ids(decided, Group::FalseAlarms), ["n1"]);
        // Without decisions: the lowest-scored defects and the highest-scored normal images,
        // never an image twice.
        let undecided = choose(&images, 2, false);
        assert_eq!(ids(undecided.clone(), Group::MostAnomalousDefects), ["d1", "d3"]);
        assert_eq!(ids(undecided.clone(), Group::MissedDefects), ["d2"]);
        assert_eq!(ids(undecided, Group::FalseAlarms), ["n1", "n2"]);
    }

    #[test]
    fn contour_is_the_inner_border() {
        // a 3×3 block inside 5×5: its 8 border pixels, not its centre
        let mask: Vec<bool> = (0..25).map(|i| (1..4).contains(&(i % 5)) && (1..4).contains(&(i / 5))).collect();
        let points = contour(&mask, 5);
        assert_eq!(points.len(), 8);
        assert!(!points.contains(&(2, 2)));
    }
}
