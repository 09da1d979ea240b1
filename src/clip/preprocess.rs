//! Image decoding and CLIP preprocessing.
//!
//! PromptAD's transform (reference `promptad-official-behaviour.md` §1.2, `PromptAD.__init__`):
//! `Resize((S, S), BICUBIC)` on a PIL image (aspect ratio not kept), `CenterCrop(S)` (a no-op
//! after that), `ToTensor`, `Normalize(OpenAI mean, std)`.
//!
//! The resize is a byte-exact port of Pillow's `BICUBIC` resampling (`libImaging/Resample.c`
//! of Pillow 13): the a = −0.5 cubic, support widened by the scale when shrinking, 22-bit
//! fixed-point weights, an 8-bit intermediate between the passes, and Pillow's rule for which
//! pass runs first ([`pillow_resize_bicubic`]). `tests/clip_parity.rs`
//! (`preprocess_matches_pillow_bicubic`) checks it byte for byte against the venv's Pillow on
//! MVTec and VisA sizes, both ways, and on odd anisotropic sizes. (`fast_image_resize`'s
//! Catmull-Rom, with 16-bit weights like Pillow-SIMD, was up to 3 u8 steps off.)

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
    // `into_rgb8` keeps an RGB8 image's buffer (most PNG and JPEG files) instead of copying it.
    Ok(image.into_rgb8())
}

pub fn read_rgb(path: &std::path::Path) -> Result<RgbImage, ClipError> {
    let bytes = std::fs::read(path).map_err(|e| ClipError::Image {
        source_name: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    decode_rgb(&bytes, &path.display().to_string())
}

/// Pillow's bicubic filter (`Resample.c` `bicubic_filter`, a = −0.5, support 2).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `PRECISION_BITS` for 8-bit images (`32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;

/// One pass's taps: for output sample `i`, `len[i]` weights starting at source index `first[i]`,
/// stored flat at `weights[i·ksize..]`.
struct Taps {
    first: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` of Pillow's `Resample.c`: the filter widened by
/// the scale when shrinking (antialiasing), evaluated at `(x + xmin − center + 0.5) · (1 /
/// filterscale)` (a product with the reciprocal, as Pillow does, not a division), normalised by
/// the sequential sum, rounded half away from zero to 22-bit fixed point.
fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filter_scale = 1.0 / filter_scale;
    let mut taps = Taps { first: Vec::new(), len: Vec::new(), ksize, weights: vec![0; out_size * ksize] };
    let mut raw = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut total = 0.0;
        for (x, r) in raw[..n].iter_mut().enumerate() {
            *r = bicubic((x as f64 + xmin as f64 - center + 0.5) * inv_filter_scale);
            total += *r;
        }
        for (w, &r) in taps.weights[xx * ksize..][..n].iter_mut().zip(&raw[..n]) {
            let r = if total != 0.0 { r / total } else { r };
            let fixed = r * (1u64 << PRECISION_BITS) as f64;
            *w = (if r < 0.0 { -0.5 + fixed } else { 0.5 + fixed }) as i32;
        }
        taps.first.push(xmin);
        taps.len.push(n);
    }
    taps
}

/// `clip8`: fixed-point accumulator to u8.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `ImagingResampleHorizontal_8bpc` on interleaved u8 (`cn` channels).
fn horizontal_pass(src: &[u8], in_w: usize, rows: usize, cn: usize, out_w: usize) -> Vec<u8> {
    match cn {
        1 => horizontal_pass_of::<1>(src, in_w, rows, out_w),
        3 => horizontal_pass_rgb(src, in_w, rows, out_w),
        2 => horizontal_pass_of::<2>(src, in_w, rows, out_w),
        4 => horizontal_pass_of::<4>(src, in_w, rows, out_w),
        _ => unreachable!("checked by pillow_resize_bicubic"),
    }
}

/// [`horizontal_pass`] for `CN` channels known at compile time: the accumulators live in
/// registers (the pass is the costliest step of preprocessing a large image).
fn horizontal_pass_of<const CN: usize>(src: &[u8], in_w: usize, rows: usize, out_w: usize) -> Vec<u8> {
    let t = taps(in_w, out_w);
    let mut out = vec![0u8; out_w * rows * CN];
    for (line, out_line) in src.chunks_exact(in_w * CN).zip(out.chunks_exact_mut(out_w * CN)).take(rows) {
        for (xx, o) in out_line.chunks_exact_mut(CN).enumerate() {
            let mut acc = [HALF; CN];
            let weights = &t.weights[xx * t.ksize..][..t.len[xx]];
            let pixels = &line[t.first[xx] * CN..][..t.len[xx] * CN];
            for (&w, p) in weights.iter().zip(pixels.chunks_exact(CN)) {
                for c in 0..CN {
                    acc[c] += p[c] as i32 * w;
                }
            }
            for c in 0..CN {
                o[c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// [`horizontal_pass_of`] for RGB, in four lanes: each tap reads its pixel and the next byte, so
/// the sums are one 4-wide multiply-add (the fourth lane is ignored). The last tap of an output
/// pixel reads three bytes, since the byte after it may be past the line. Integer sums, so the
/// order of the lanes cannot change a result.
fn horizontal_pass_rgb(src: &[u8], in_w: usize, rows: usize, out_w: usize) -> Vec<u8> {
    let t = taps(in_w, out_w);
    let mut out = vec![0u8; out_w * rows * 3];
    for (line, out_line) in src.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)).take(rows) {
        for (xx, o) in out_line.chunks_exact_mut(3).enumerate() {
            let len = t.len[xx];
            if len == 0 {
                o.fill(clip8(HALF));
                continue;
            }
            let weights = &t.weights[xx * t.ksize..][..len];
            let pixels = &line[t.first[xx] * 3..][..len * 3];
            let mut acc = [HALF; 4];
            for (k, &w) in weights[..len - 1].iter().enumerate() {
                let p: &[u8; 4] = pixels[3 * k..3 * k + 4].try_into().expect("four bytes");
                for c in 0..4 {
                    acc[c] += p[c] as i32 * w;
                }
            }
            let (w, p) = (weights[len - 1], &pixels[3 * (len - 1)..]);
            for c in 0..3 {
                o[c] = clip8(acc[c] + p[c] as i32 * w);
            }
        }
    }
    out
}

/// Pillow's `ImagingResampleVertical_8bpc` on interleaved u8 rows of `row_len` bytes.
fn vertical_pass(src: &[u8], in_h: usize, row_len: usize, out_h: usize) -> Vec<u8> {
    let t = taps(in_h, out_h);
    let mut out = vec![0u8; row_len * out_h];
    let mut acc = vec![0i32; row_len];
    for (yy, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        acc.fill(HALF);
        let weights = &t.weights[yy * t.ksize..][..t.len[yy]];
        for (k, &w) in weights.iter().enumerate() {
            let row = &src[(t.first[yy] + k) * row_len..][..row_len];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as i32 * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Pillow's `Image.resize((dst_w, dst_h), Image.BICUBIC)` (no `reducing_gap`, as torchvision's
/// `Resize` calls it) on interleaved u8 with `channels` channels, byte-identical to Pillow 13
/// (`Resample.c` `ImagingResampleInner`): each pass skipped when its dimension does not change,
/// and Pillow's pass order: the vertical pass runs first when the height shrinks by more than
/// twice as many pixels as the width (`in_h − h > 0 && in_h − h > 2·(in_w − w)`), otherwise the
/// horizontal one. Each pass rounds to u8.
pub fn pillow_resize_bicubic(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    channels: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), src_w * src_h * channels, "source buffer is width·height·channels bytes");
    // Pillow's 8-bit resampling handles 1 to 4 bands; so does this port.
    assert!((1..=4).contains(&channels), "{channels} channels: Pillow resamples 1 to 4 bands of 8 bits");
    let (need_h, need_v) = (dst_w != src_w, dst_h != src_h);
    let shrink_y = src_h as i64 - dst_h as i64;
    let horizontal_first = !(shrink_y > 0 && shrink_y > (src_w as i64 - dst_w as i64) * 2);
    // The source is only copied when neither pass runs.
    let mut current = std::borrow::Cow::Borrowed(src);
    if horizontal_first {
        if need_h {
            current = horizontal_pass(&current, src_w, src_h, channels, dst_w).into();
        }
        if need_v {
            current = vertical_pass(&current, src_h, dst_w * channels, dst_h).into();
        }
    } else {
        if need_v {
            current = vertical_pass(&current, src_h, src_w * channels, dst_h).into();
        }
        if need_h {
            current = horizontal_pass(&current, src_w, dst_h, channels, dst_w).into();
        }
    }
    current.into_owned()
}

/// [`pillow_resize_bicubic`] on an RGB image.
pub fn resize_bicubic(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let out = pillow_resize_bicubic(image.as_raw(), w, h, 3, width as usize, height as usize);
    RgbImage::from_raw(width, height, out).expect("resized buffer has the requested size")
}

/// `ToTensor` + `Normalize(OpenAI mean, std)` of one image: planar CHW floats. With
/// `swap_red_blue` the image is read as BGR (the official test path, `--compat official`).
pub fn normalized_chw(image: &RgbImage, swap_red_blue: bool) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            let value = pixel[if swap_red_blue { 2 - c } else { c }] as f32 / 255.0;
            out[c * plane + i] = (value - OPENAI_MEAN[c]) / OPENAI_STD[c];
        }
    }
    out
}

/// Resized RGB8 images to a normalised `[B, 3, S, S]` fp32 tensor on the CPU.
pub fn to_normalized_tensor(images: &[RgbImage], size: u32) -> Tensor {
    let data: Vec<f32> =
        images.iter().flat_map(|image| normalized_chw(&resize_bicubic(image, size, size), false)).collect();
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
        let want = [
            (1.0 - OPENAI_MEAN[0]) / OPENAI_STD[0],
            (0.0 - OPENAI_MEAN[1]) / OPENAI_STD[1],
            (128.0 / 255.0 - OPENAI_MEAN[2]) / OPENAI_STD[2],
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn corrupt_bytes_name_the_source() {
        let err = decode_rgb(b"\x89PNG\r\n\x1a\nnot really", "s3://bucket/a.png").unwrap_err().to_string();
        assert!(err.contains("s3://bucket/a.png") && err.contains("cannot decode"), "{err}");
    }

    #[test]
    fn the_four_lane_rgb_pass_equals_the_per_channel_one() {
        // Byte-noise rows (every tap matters), shrinking and enlarging, odd sizes; the
        // per-channel pass is the one tests/resize_parity.rs checks against Pillow.
        let mut state = 12345u32;
        for (in_w, out_w, rows) in [(1024, 240, 3), (37, 5, 2), (5, 37, 2), (240, 240, 1), (2, 1, 4), (1, 3, 2)] {
            let src: Vec<u8> = (0..in_w * rows * 3)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 24) as u8
                })
                .collect();
            assert_eq!(
                horizontal_pass_rgb(&src, in_w, rows, out_w),
                horizontal_pass_of::<3>(&src, in_w, rows, out_w),
                "{in_w} -> {out_w}"
            );
        }
    }
}
