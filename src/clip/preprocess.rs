//! Image decoding and CLIP preprocessing.
//!
//! PromptAD's transform (reference `promptad-official-behaviour.md` §1.2, `PromptAD.__init__`):
//! `Resize((S, S), BICUBIC)` on a PIL image (aspect ratio not kept), `CenterCrop(S)` (a no-op
//! after that), `ToTensor`, `Normalize(OpenAI mean, std)`.
//!
//! The resize is `fast_image_resize`'s convolution with the Catmull-Rom kernel (a = -0.5, support 2
//! widened by the scale factor when shrinking), the same filter and antialiasing scheme as Pillow's
//! `BICUBIC`, on u8 with rounding. Measured against Pillow 12 in `tests/clip_parity.rs`
//! (`preprocess_matches_pillow_bicubic`): most pixels are identical, none differs by more than
//! one u8 step (0.015 after normalisation). A same-size resize is skipped, as Pillow skips it.

use image::RgbImage;
use tch::{Kind, Tensor};

use super::ClipError;

/// OpenAI CLIP normalisation (`open_clip/constants.py` `OPENAI_DATASET_MEAN` / `_STD`).
pub const OPENAI_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const OPENAI_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Decodes PNG/JPEG/BMP/TIFF bytes to RGB8 (grey and RGBA are converted, as PIL `.convert('RGB')`).
/// `source_name` (a path or URL) only labels the error.
pub fn decode_rgb(bytes: &[u8], source_name: &str) -> Result<RgbImage, ClipError> {
    let image = image::load_from_memory(bytes).map_err(|e| ClipError::Image {
        source_name: source_name.to_string(),
        message: format!("cannot decode ({e}); is it a PNG, JPEG, BMP or TIFF image?"),
    })?;
    Ok(image.to_rgb8())
}

pub fn read_rgb(path: &std::path::Path) -> Result<RgbImage, ClipError> {
    let bytes = std::fs::read(path).map_err(|e| ClipError::Image {
        source_name: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    decode_rgb(&bytes, &path.display().to_string())
}

/// Pillow-style bicubic resize to `width × height` (aspect ratio not kept).
pub fn resize_bicubic(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    if image.dimensions() == (width, height) {
        return image.clone();
    }
    use fast_image_resize as fr;
    let src = fr::images::Image::from_vec_u8(image.width(), image.height(), image.as_raw().clone(), fr::PixelType::U8x3)
        .expect("an RgbImage buffer holds width·height·3 bytes");
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom));
    fr::Resizer::new().resize(&src, &mut dst, &options).expect("U8x3 to U8x3 resize is supported");
    RgbImage::from_raw(width, height, dst.into_vec()).expect("resized buffer has the requested size")
}

/// Resized RGB8 images to a normalised `[B, 3, S, S]` fp32 tensor on the CPU.
pub fn to_normalized_tensor(images: &[RgbImage], size: u32) -> Tensor {
    let plane = (size * size) as usize;
    let mut data = vec![0f32; images.len() * 3 * plane];
    for (b, image) in images.iter().enumerate() {
        let resized = resize_bicubic(image, size, size);
        let out = &mut data[b * 3 * plane..(b + 1) * 3 * plane];
        for (i, pixel) in resized.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (pixel[c] as f32 / 255.0 - OPENAI_MEAN[c]) / OPENAI_STD[c];
            }
        }
    }
    Tensor::from_slice(&data).view([images.len() as i64, 3, size as i64, size as i64]).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_is_openai_mean_std_in_chw_order() {
        // A single pixel of (255, 0, 128): channel c of the tensor is (v/255 - mean[c]) / std[c].
        let image = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 128]));
        let t = to_normalized_tensor(&[image], 1);
        let got: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap();
        let want = [(1.0 - OPENAI_MEAN[0]) / OPENAI_STD[0], (0.0 - OPENAI_MEAN[1]) / OPENAI_STD[1], (128.0 / 255.0 - OPENAI_MEAN[2]) / OPENAI_STD[2]];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn corrupt_bytes_name_the_source() {
        let err = decode_rgb(b"\x89PNG\r\n\x1a\nnot really", "s3://bucket/a.png").unwrap_err().to_string();
        assert!(err.contains("s3://bucket/a.png") && err.contains("cannot decode"), "{err}");
    }
}
