//! PNG decoding as `cv2.imread` does it (the official dataset read, reference
//! `promptad-official-behaviour.md` §1.2), straight from the `png` crate.
//!
//! What OpenCV does, and the image crate does differently: 16-bit samples become 8-bit by
//! keeping the high byte (libpng's `png_set_strip_16`; the image crate rounds `v / 257`, which
//! differed from cv2 in 15 % of a 16-bit file's bytes), and alpha is dropped, not composited.
//! Palettes (with or without transparency) and 1/2/4-bit grey are expanded. The `eXIf`
//! orientation is returned for the caller to apply, as OpenCV applies it. Skipping the image
//! crate's generic buffer also saves about half a millisecond per 1024² image.
//! `tests/decode_parity.rs` checks every colour type and bit depth, Adam7 and both encoders
//! against `cv2.imread` byte for byte.

use image::metadata::Orientation;
use image::{GrayImage, RgbImage};
use png::{BitDepth, ColorType, Transformations};

use super::ClipError;

/// Whether `bytes` start with the PNG signature.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// The decoder may allocate this much for one image (the `png` crate's default, 64 MiB, is
/// less than a 16-bit 4K frame).
const DECODE_LIMIT_BYTES: usize = 2 << 30;

/// A decoded PNG at 8 bits: grey, grey+alpha, RGB or RGBA, interleaved, as stored (its EXIF
/// orientation not yet applied).
struct Decoded {
    width: u32,
    height: u32,
    channels: usize,
    samples: Vec<u8>,
    orientation: Orientation,
}

fn decode(bytes: &[u8], source_name: &str) -> Result<Decoded, ClipError> {
    let failed = |message: String| ClipError::Image {
        source_name: source_name.to_string(),
        message: format!("cannot decode the PNG ({message}); is the file complete and a PNG?"),
    };
    let mut decoder =
        png::Decoder::new_with_limits(std::io::Cursor::new(bytes), png::Limits { bytes: DECODE_LIMIT_BYTES });
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| failed(e.to_string()))?;
    let size = reader.output_buffer_size().ok_or_else(|| failed("the image is too large to hold".into()))?;
    let mut samples = vec![0u8; size];
    let frame = reader.next_frame(&mut samples).map_err(|e| failed(e.to_string()))?;
    samples.truncate(frame.buffer_size());
    let channels = match reader.output_color_type() {
        (_, depth) if depth != BitDepth::Eight => return Err(failed(format!("{depth:?} samples after expansion"))),
        (ColorType::Grayscale, _) => 1,
        (ColorType::GrayscaleAlpha, _) => 2,
        (ColorType::Rgb, _) => 3,
        (ColorType::Rgba, _) => 4,
        (ColorType::Indexed, _) => return Err(failed("a palette left unexpanded".into())),
    };
    let (width, height) = (frame.width, frame.height);
    // The `eXIf` chunk is a TIFF structure, as OpenCV reads it.
    let orientation = reader
        .info()
        .exif_metadata
        .as_deref()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    // `line_size` may pad rows; with 8-bit samples after expansion it does not.
    if samples.len() != width as usize * height as usize * channels {
        return Err(failed(format!("{} bytes for a {width}×{height} image of {channels} channels", samples.len())));
    }
    Ok(Decoded { width, height, channels, samples, orientation })
}

/// A PNG as RGB8, as `cv2.imread(path, IMREAD_COLOR)` decodes it (channels in RGB order), and
/// the EXIF orientation OpenCV would then apply.
pub fn decode_rgb(bytes: &[u8], source_name: &str) -> Result<(RgbImage, Orientation), ClipError> {
    let Decoded { width, height, channels, samples, orientation } = decode(bytes, source_name)?;
    let rgb = match channels {
        3 => samples,
        4 => samples.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        _ => samples.chunks_exact(channels).flat_map(|p| [p[0]; 3]).collect(),
    };
    Ok((RgbImage::from_raw(width, height, rgb).expect("width·height·3 bytes"), orientation))
}

/// A PNG as one grey channel, as `cv2.imread(path, IMREAD_GRAYSCALE)` reads a mask: a grey
/// file's own samples; a colour file's luma `(4899·R + 9617·G + 1868·B) >> 14` (BT.601 in
/// OpenCV's 14-bit fixed point). For colour files this is not always OpenCV's value (libpng
/// converts in its own way; 0.2 % of a textured 1024² file's pixels differ, by one level), but
/// tests/decode_parity.rs finds the same pixels zero, which is all the mask protocol (`gt > 0`)
/// reads.
pub fn decode_grey(bytes: &[u8], source_name: &str) -> Result<(GrayImage, Orientation), ClipError> {
    let Decoded { width, height, channels, samples, orientation } = decode(bytes, source_name)?;
    let grey = match channels {
        1 => samples,
        2 => samples.chunks_exact(2).map(|p| p[0]).collect(),
        _ => samples
            .chunks_exact(channels)
            .map(|p| ((4899 * p[0] as u32 + 9617 * p[1] as u32 + 1868 * p[2] as u32) >> 14) as u8)
            .collect(),
    };
    Ok((GrayImage::from_raw(width, height, grey).expect("width·height bytes"), orientation))
}
