//! From image files to model inputs and evaluation masks, as PromptAD's data path does it
//! (reference `promptad-official-behaviour.md` §1.2):
//!
//! 1. decode (`cv2.imread`, [`crate::clip::preprocess::decode_rgb`]);
//! 2. resize to 1024×1024 with OpenCV's `INTER_LINEAR` (aspect ratio not kept);
//! 3. bicubic to the model size and normalise ([`crate::clip::preprocess`]).
//!
//! Colour order is RGB everywhere (DESIGN §5). `Compat::Official` feeds *test* images with R and B
//! swapped, as the official test loop does (§9.3), to reproduce its numbers.
//!
//! Masks: grey, `> 0` is defect, nearest-neighbour to 1024 then to the map size (OpenCV
//! `INTER_NEAREST`, [`cv2_nearest_indices`]), as `CLIPDataset` and the evaluation do.
//!
//! Both OpenCV resizes and the Pillow bicubic are byte-identical ports (tests/resize_parity.rs
//! runs them against opencv-python-headless and Pillow).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::DataError;
use crate::clip::preprocess::{decode_grey, decode_rgb, normalized_chw, resize_bicubic};
use crate::clip::ClipError;

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

/// How an image reaches the model size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preprocess {
    /// As the official code and `train` / `score`: OpenCV `INTER_LINEAR` to 1024×1024 (aspect
    /// ratio not kept), then Pillow bicubic to the model size.
    #[default]
    Official,
    /// Pillow bicubic straight to the model size (no 1024×1024 step).
    Direct,
}

/// An RGB image at the model input size (`size × size`), by `preprocess`.
pub fn prepare_rgb(image: &RgbImage, size: u32, preprocess: Preprocess) -> RgbImage {
    match preprocess {
        // cv2.resize to the size an image already has is a copy (OpenCV returns early; our taps
        // are then (2048, 0), the identity): skip it.
        Preprocess::Official if image.dimensions() == (DATASET_SIZE, DATASET_SIZE) => resize_bicubic(image, size, size),
        Preprocess::Official => resize_bicubic(&resize_bilinear_cv2(image, DATASET_SIZE, DATASET_SIZE), size, size),
        Preprocess::Direct => resize_bicubic(image, size, size),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A k-shot image (memory and training): RGB in every mode.
    Shot,
    /// An image to score.
    Test,
}

/// OpenCV `cv2.resize(src, (width, height))` (`INTER_LINEAR`) on u8 RGB, byte-identical to
/// OpenCV 4.x/5.0 ([`cv2_resize_linear`]).
pub fn resize_bilinear_cv2(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let out = cv2_resize_linear(image.as_raw(), w, h, 3, width as usize, height as usize);
    RgbImage::from_raw(width, height, out).expect("buffer has width·height·3 bytes")
}

/// OpenCV's fixed-point scale for the linear coefficients (`INTER_RESIZE_COEF_SCALE`, 11 bits).
const CV_COEF_SCALE: f32 = 2048.0;

/// OpenCV's linear tap of one output index: `fx = (float)((d + 0.5)·scale − 0.5)` in double then
/// float, `s = floor(fx)`, `fx −= s` in float, weights `saturate_cast<short>((1−fx)·2048)` and
/// `saturate_cast<short>(fx·2048)` (round half to even, each on its own: they may sum to 2047 or
/// 2049). `scale` is `1 / (dst / src)` as OpenCV computes it, not `src / dst`.
fn cv2_linear_tap(d: usize, scale: f64) -> (i64, i32, i32) {
    let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
    let s = f.floor();
    let frac = f - s;
    (s as i64, ((1.0 - frac) * CV_COEF_SCALE).round_ties_even() as i32, (frac * CV_COEF_SCALE).round_ties_even() as i32)
}

/// `cv2.resize(src, (dst_w, dst_h), interpolation=INTER_LINEAR)` on interleaved u8 with
/// `channels` channels, byte-identical to OpenCV (`modules/imgproc/src/resize.cpp`, checked
/// against opencv-python-headless 5.0.0 and 4.10 in `tests/resize_parity.rs`):
///
/// - same size: a copy; scale exactly 2 on both axes: OpenCV substitutes `INTER_AREA`
///   (`is_area_fast`), i.e. the 2×2 mean `(a + b + c + d + 2) >> 2`;
/// - horizontal taps clamped at the borders (`sx < 0` → 0, `sx ≥ w − 1` → `w − 1`, weight 0 on
///   the second tap); vertical taps keep their weights and clamp the row indices instead;
/// - horizontal pass in int (`S[x]·a0 + S[x+cn]·a1`), vertical pass as OpenCV's u8
///   `VResizeLinear` specialisation does it on every element, SIMD lanes and scalar tail alike:
///   `(((b0·(S0 >> 4)) >> 16) + ((b1·(S1 >> 4)) >> 16) + 2) >> 2` (not `(S0·b0 + S1·b1 + 2²¹) >> 22`,
///   which differs by one on some pixels).
pub fn cv2_resize_linear(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    channels: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), src_w * src_h * channels, "source buffer is width·height·channels bytes");
    if (src_w, src_h) == (dst_w, dst_h) {
        return src.to_vec();
    }
    let (scale_x, scale_y) = (1.0 / (dst_w as f64 / src_w as f64), 1.0 / (dst_h as f64 / src_h as f64));
    let is_integer = |s: f64| (s - s.round_ties_even()).abs() < f64::EPSILON;
    if is_integer(scale_x)
        && is_integer(scale_y)
        && scale_x.round_ties_even() == 2.0
        && scale_y.round_ties_even() == 2.0
    {
        return area_fast_2x2(src, src_w, channels, dst_w, dst_h);
    }
    let cn = channels;
    let row_len = dst_w * cn;
    // Horizontal taps per output element: left source element, offset of the right one, weights.
    let mut x_first = Vec::with_capacity(row_len);
    let mut x_step = Vec::with_capacity(row_len);
    let mut x_w0 = Vec::with_capacity(row_len);
    let mut x_w1 = Vec::with_capacity(row_len);
    for dx in 0..dst_w {
        let (mut sx, mut a0, mut a1) = cv2_linear_tap(dx, scale_x);
        if sx < 0 {
            (sx, a0, a1) = (0, 2048, 0);
        }
        if sx >= src_w as i64 - 1 {
            (sx, a0, a1) = (src_w as i64 - 1, 2048, 0);
        }
        // At the right border the second weight is 0; point it at the same pixel to stay in bounds.
        let step = if sx as usize + 1 < src_w { cn } else { 0 };
        for c in 0..cn {
            x_first.push(sx as usize * cn + c);
            x_step.push(step);
            x_w0.push(a0);
            x_w1.push(a1);
        }
    }
    let horizontal = |row: usize, out: &mut [i32]| {
        let s = &src[row * src_w * cn..(row + 1) * src_w * cn];
        let taps = x_first.iter().zip(&x_step).zip(x_w0.iter().zip(&x_w1));
        for (o, ((&first, &step), (&a0, &a1))) in out.iter_mut().zip(taps) {
            *o = s[first] as i32 * a0 + s[first + step] as i32 * a1;
        }
    };
    let clip_row = |r: i64| r.clamp(0, src_h as i64 - 1) as usize;
    let mut out = vec![0u8; row_len * dst_h];
    // Two cached horizontal rows, as OpenCV's ring buffer (tagged by their source row).
    let (mut rows, mut tags) = ([vec![0i32; row_len], vec![0i32; row_len]], [usize::MAX; 2]);
    for (dy, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        let (sy, b0, b1) = cv2_linear_tap(dy, scale_y);
        let want = [clip_row(sy), clip_row(sy + 1)];
        if tags[0] != want[0] {
            if tags[1] == want[0] {
                rows.swap(0, 1);
                tags.swap(0, 1);
            } else {
                horizontal(want[0], &mut rows[0]);
                tags[0] = want[0];
            }
        }
        if tags[1] != want[1] {
            if want[1] == want[0] {
                let [first, second] = &mut rows;
                second.copy_from_slice(first);
            } else {
                horizontal(want[1], &mut rows[1]);
            }
            tags[1] = want[1];
        }
        for ((o, &s0), &s1) in out_row.iter_mut().zip(&rows[0]).zip(&rows[1]) {
            let v = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2;
            *o = v.clamp(0, 255) as u8;
        }
    }
    out
}

/// OpenCV's `resizeAreaFast` for a factor of exactly 2: the rounded mean of each 2×2 block.
fn area_fast_2x2(src: &[u8], src_w: usize, cn: usize, dst_w: usize, dst_h: usize) -> Vec<u8> {
    let stride = src_w * cn;
    let mut out = vec![0u8; dst_w * dst_h * cn];
    for (dy, out_row) in out.chunks_exact_mut(dst_w * cn).enumerate() {
        let (r0, r1) = (&src[2 * dy * stride..][..stride], &src[(2 * dy + 1) * stride..][..stride]);
        for dx in 0..dst_w {
            for c in 0..cn {
                let (a, b) = (2 * dx * cn + c, (2 * dx + 1) * cn + c);
                let sum = r0[a] as u32 + r0[b] as u32 + r1[a] as u32 + r1[b] as u32;
                out_row[dx * cn + c] = ((sum + 2) >> 2) as u8;
            }
        }
    }
    out
}

/// OpenCV `INTER_NEAREST` source indices (`resizeNN`): `min(floor(d · (1 / (dst / src))), src − 1)`
/// in double. The double reciprocal matters: for 840 → 1024 it picks other pixels than the exact
/// integer `floor(d · src / dst)`.
pub fn cv2_nearest_indices(src: usize, dst: usize) -> Vec<usize> {
    let ifx = 1.0 / (dst as f64 / src as f64);
    (0..dst).map(|d| ((d as f64 * ifx).floor() as usize).min(src - 1)).collect()
}

/// `cv2.resize(src, (dst_w, dst_h), interpolation=INTER_NEAREST)` on interleaved u8.
pub fn cv2_resize_nearest(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    channels: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), src_w * src_h * channels, "source buffer is width·height·channels bytes");
    let (xs, ys) = (cv2_nearest_indices(src_w, dst_w), cv2_nearest_indices(src_h, dst_h));
    let mut out = Vec::with_capacity(dst_w * dst_h * channels);
    for &y in &ys {
        let row = &src[y * src_w * channels..(y + 1) * src_w * channels];
        for &x in &xs {
            out.extend_from_slice(&row[x * channels..(x + 1) * channels]);
        }
    }
    out
}

/// Decoded bytes to the normalised CHW model input (`3·size·size` floats).
pub fn model_input(bytes: &[u8], source: &str, size: u32, compat: Compat, role: Role) -> Result<Vec<f32>, DataError> {
    // The decode error already names `source`: move its message over rather than wrapping the
    // whole error (which would name the path twice).
    let image = decode_rgb(bytes, source).map_err(|e| match e {
        ClipError::Image { source_name, message } => DataError::Image { path: source_name, message },
        other => DataError::Image { path: source.to_string(), message: other.to_string() },
    })?;
    let image = prepare_rgb(&image, size, Preprocess::Official);
    Ok(normalized_chw(&image, compat == Compat::Official && role == Role::Test))
}

/// Nearest-neighbour source indices of OpenCV `INTER_NEAREST`, composed over the two resizes
/// (source → 1024 → `dst`), as `CLIPDataset` and the evaluation do them.
fn nearest_indices(src: u32, dst: u32) -> Vec<usize> {
    let to_1024 = cv2_nearest_indices(src as usize, DATASET_SIZE as usize);
    cv2_nearest_indices(DATASET_SIZE as usize, dst as usize).into_iter().map(|i| to_1024[i]).collect()
}

/// A binary mask at `size × size` (row-major, `true` = defect) from mask image bytes.
pub fn mask(bytes: &[u8], source: &str, size: u32) -> Result<Vec<bool>, DataError> {
    let grey = decode_grey(bytes, source).map_err(|e| match e {
        ClipError::Image { source_name, message } => {
            DataError::Image { path: source_name, message: format!("mask: {message}") }
        }
        other => DataError::Image { path: source.to_string(), message: other.to_string() },
    })?;
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
    fn the_dataset_size_step_is_the_identity_at_the_dataset_size() {
        let mut state = 12345u64;
        let pixels: Vec<u8> = (0..DATASET_SIZE * DATASET_SIZE * 3)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        let image = RgbImage::from_raw(DATASET_SIZE, DATASET_SIZE, pixels).unwrap();
        assert!(resize_bilinear_cv2(&image, DATASET_SIZE, DATASET_SIZE) == image);
    }

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
    fn decode_error_names_the_path_once() {
        // Regression: model_input wrapped a ClipError that already names the source into
        // DataError::Image with the path again ("image s3://b/x.png: image s3://b/x.png: ...").
        let err = model_input(b"\x89PNG\r\n\x1a\nnot really", "s3://b/x.png", 4, Compat::Rgb, Role::Shot)
            .unwrap_err()
            .to_string();
        assert_eq!(err.matches("s3://b/x.png").count(), 1, "{err}");
        assert!(err.contains("cannot decode"), "{err}");
    }

    #[test]
    fn nearest_uses_opencvs_double_reciprocal() {
        // 840 → 1024: cv2.resize(np.arange(840, dtype=np.uint16)[None], (1024, 1), INTER_NEAREST)
        // gives 104, 104, 105 at 127, 128, 129 and 209 at 256; the exact floor(d · 840 / 1024)
        // would give 105 at 128 and 210 at 256.
        let ours = cv2_nearest_indices(840, 1024);
        assert_eq!([ours[127], ours[128], ours[129], ours[256]], [104, 104, 105, 209]);
    }

    #[test]
    fn mask_is_binarised_and_resized_nearest() {
        let mut grey = image::GrayImage::new(4, 4);
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
