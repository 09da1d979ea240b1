//! From image files to model inputs and evaluation masks, as PromptAD's data path does it
//! (reference `promptad-official-behaviour.md` §1.2):
//!
//! 1. decode (`cv2.imread`), 2. resize to 1024×1024 with OpenCV's `INTER_LINEAR` (aspect ratio
//! not kept), 3. bicubic to the model size and normalise ([`crate::clip::preprocess`]).
//!
//! Colour order is RGB everywhere (DESIGN §5). `Compat::Official` feeds *test* images with R and B
//! swapped, as the official test loop does (§9.3), to reproduce its numbers.
//!
//! Masks: grey, `> 0` is defect, nearest-neighbour to 1024 then to the map size (OpenCV
//! `INTER_NEAREST`: source index `floor(i · src / dst)`), as `CLIPDataset` and the evaluation do.

use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use super::DataError;
use crate::clip::preprocess::{decode_rgb, normalized_chw, resize_bicubic};

/// The intermediate size of `CLIPDataset.__getitem__` (`cv2.resize(img, (1024, 1024))`).
pub const DATASET_SIZE: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compat {
    /// RGB for shots and test images alike.
    #[default]
    Rgb,
    /// The official test path: test images reach the model in BGR.
    Official,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A k-shot image (memory and training): RGB in every mode.
    Shot,
    /// An image to score.
    Test,
}

/// OpenCV `cv2.resize(..., INTER_LINEAR)` on u8 RGB, reproducing its fixed-point arithmetic:
/// half-pixel centres, edge clamping, 11-bit coefficients, rounding `(v + 2^21) >> 22`.
pub fn resize_bilinear_cv2(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        return image.clone();
    }
    const SCALE: i64 = 2048;
    let taps = |dst: u32, src: u32| -> Vec<(usize, i64)> {
        let ratio = src as f64 / dst as f64;
        (0..dst)
            .map(|d| {
                let f = (d as f64 + 0.5) * ratio - 0.5;
                let mut s = f.floor() as i64;
                let mut frac = f - s as f64;
                if s < 0 {
                    s = 0;
                    frac = 0.0;
                }
                if s >= src as i64 - 1 {
                    s = src as i64 - 1;
                    frac = 0.0;
                }
                (s as usize, ((1.0 - frac) * SCALE as f64).round() as i64)
            })
            .collect()
    };
    let (xs, ys) = (taps(width, image.width()), taps(height, image.height()));
    let (sw, sh) = (image.width() as usize, image.height() as usize);
    let src = image.as_raw();
    let mut out = vec![0u8; width as usize * height as usize * 3];
    for (y, &(sy, wy0)) in ys.iter().enumerate() {
        let sy1 = (sy + 1).min(sh - 1);
        for (x, &(sx, wx0)) in xs.iter().enumerate() {
            let sx1 = (sx + 1).min(sw - 1);
            for c in 0..3 {
                let p = |yy: usize, xx: usize| src[(yy * sw + xx) * 3 + c] as i64;
                let top = p(sy, sx) * wx0 + p(sy, sx1) * (SCALE - wx0);
                let bottom = p(sy1, sx) * wx0 + p(sy1, sx1) * (SCALE - wx0);
                let v = (top * wy0 + bottom * (SCALE - wy0) + (1 << 21)) >> 22;
                out[(y * width as usize + x) * 3 + c] = v.clamp(0, 255) as u8;
            }
        }
    }
    RgbImage::from_raw(width, height, out).expect("buffer has width·height·3 bytes")
}

/// Decoded bytes to the normalised CHW model input (`3·size·size` floats).
pub fn model_input(bytes: &[u8], source: &str, size: u32, compat: Compat, role: Role) -> Result<Vec<f32>, DataError> {
    let image =
        decode_rgb(bytes, source).map_err(|e| DataError::Image { path: source.to_string(), message: e.to_string() })?;
    let image = resize_bicubic(&resize_bilinear_cv2(&image, DATASET_SIZE, DATASET_SIZE), size, size);
    Ok(normalized_chw(&image, compat == Compat::Official && role == Role::Test))
}

/// Nearest-neighbour source indices of OpenCV `INTER_NEAREST`, composed over the two resizes
/// (source → 1024 → `dst`).
fn nearest_indices(src: u32, dst: u32) -> Vec<usize> {
    let once = |from: u32, to: u32, i: u32| ((i as u64 * from as u64) / to as u64).min(from as u64 - 1) as u32;
    (0..dst).map(|i| once(src, DATASET_SIZE, once(DATASET_SIZE, dst, i)) as usize).collect()
}

/// A binary mask at `size × size` (row-major, `true` = defect) from mask image bytes.
pub fn mask(bytes: &[u8], source: &str, size: u32) -> Result<Vec<bool>, DataError> {
    let grey: GrayImage = image::load_from_memory(bytes)
        .map_err(|e| DataError::Image { path: source.to_string(), message: format!("cannot decode mask ({e})") })?
        .to_luma8();
    let (xs, ys) = (nearest_indices(grey.width(), size), nearest_indices(grey.height(), size));
    Ok(ys
        .iter()
        .flat_map(|&y| xs.iter().map(move |&x| (y, x)))
        .map(|(y, x)| grey.get_pixel(x as u32, y as u32)[0] > 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::preprocess::{OPENAI_MEAN, OPENAI_STD};

    #[test]
    fn bilinear_matches_opencv_by_hand() {
        // 2×1 → 4×1: OpenCV gives [a, a + (b-a)/4, a + 3(b-a)/4, b] (half-pixel centres, clamped).
        let image = RgbImage::from_raw(2, 1, vec![0, 0, 0, 200, 100, 40]).unwrap();
        let out = resize_bilinear_cv2(&image, 4, 1);
        let red: Vec<u8> = out.pixels().map(|p| p[0]).collect();
        assert_eq!(red, vec![0, 50, 150, 200]);
        let blue: Vec<u8> = out.pixels().map(|p| p[2]).collect();
        assert_eq!(blue, vec![0, 10, 30, 40]);
    }

    #[test]
    fn official_compat_swaps_test_images_only() {
        let mut png = Vec::new();
        RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 0]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let shot = model_input(&png, "a.png", 2, Compat::Official, Role::Shot).unwrap();
        let test = model_input(&png, "a.png", 2, Compat::Official, Role::Test).unwrap();
        let red = (1.0 - OPENAI_MEAN[0]) / OPENAI_STD[0];
        assert!((shot[0] - red).abs() < 1e-6);
        assert!((test[8] - (1.0 - OPENAI_MEAN[2]) / OPENAI_STD[2]).abs() < 1e-6, "blue plane holds the red channel");
        assert_eq!(model_input(&png, "a.png", 2, Compat::Rgb, Role::Test).unwrap(), shot);
    }

    #[test]
    fn mask_is_binarised_and_resized_nearest() {
        let mut grey = GrayImage::new(4, 4);
        // OpenCV nearest samples source column floor(i · 4 / 2): 0 and 2.
        grey.put_pixel(2, 0, image::Luma([7]));
        grey.put_pixel(3, 1, image::Luma([9]));
        let mut png = Vec::new();
        grey.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let m = mask(&png, "m.png", 2).unwrap();
        assert_eq!(m, vec![false, true, false, false]);
        assert!(mask(b"nope", "m.png", 2).unwrap_err().to_string().contains("m.png"));
    }
}
