//! Image decoding against OpenCV, byte for byte: the official dataset read
//! `cv2.imread(IMREAD_COLOR)` and its mask read `cv2.imread(IMREAD_GRAYSCALE)`.
//! JPEG (`tests/fixtures/make_jpeg_cases.py`, Pillow's decode checked equal there): baseline and
//! progressive, every chroma subsampling, grey, restart markers, odd sizes. PNG
//! (`tests/fixtures/make_png_cases.py`): every colour type and bit depth, palettes with
//! transparency, 16 bits, Adam7, OpenCV's and Pillow's encoders.

mod common;

use common::{read_tensors, run_python};
use promptad::clip::preprocess::{decode_grey, decode_rgb};

/// Whether a PNG's colour type (IHDR byte 25) has colour: RGB, palette or RGBA.
fn colour_png(bytes: &[u8]) -> bool {
    bytes[25] & 0b11 != 0
}

/// Runs `script`, decodes each `<case>.<extension>` it wrote in colour and in grey, and compares
/// with its `<case>.rgb` / `<case>.grey` tensors; the failures, named.
fn differences(script: &str, extension: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    run_python(script, &[dir.path().to_str().unwrap()]);
    let tensors = read_tensors(&dir.path().join("cases.safetensors"));
    let mut cases: Vec<&str> = tensors.keys().filter_map(|k| k.strip_suffix(".rgb")).collect();
    cases.sort();
    assert!(cases.len() >= 9, "{script}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let path = dir.path().join(format!("{case}.{extension}"));
        let bytes = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        for (what, got) in [
            ("rgb", decode_rgb(&bytes, &name).map(|image| image.into_raw())),
            ("grey", decode_grey(&bytes, &name).map(|image| image.into_raw())),
        ] {
            let got = match got {
                Ok(got) => got,
                Err(e) => {
                    failures.push(format!("{case} {what}: {e}"));
                    continue;
                }
            };
            let want = Vec::<u8>::try_from(tensors[&format!("{case}.{what}")].flatten(0, -1)).unwrap();
            // A colour PNG's grey is libpng's own conversion, which is not reproduced exactly
            // (src/clip/png.rs); only the mask protocol's `gt > 0` has to agree there.
            let binarised = what == "grey" && extension == "png" && colour_png(&bytes);
            let differing = match binarised {
                true => got.iter().zip(&want).filter(|(a, b)| (**a > 0) != (**b > 0)).count(),
                false => got.iter().zip(&want).filter(|(a, b)| a != b).count(),
            };
            let how = if binarised { " (as gt > 0)" } else { "" };
            eprintln!("{case} {what}{how}: {differing} of {} bytes differ", want.len());
            if differing > 0 || got.len() != want.len() {
                failures.push(format!("{case} {what}: {differing} bytes differ, {} vs {} long", got.len(), want.len()));
            }
        }
    }
    failures
}

#[test]
fn jpegs_decode_as_opencv_decodes_them() {
    let failures = differences("make_jpeg_cases.py", "jpg");
    assert!(failures.is_empty(), "JPEG decoding differs from cv2.imread: {failures:?}");
}

#[test]
fn pngs_decode_as_opencv_decodes_them() {
    let failures = differences("make_png_cases.py", "png");
    assert!(failures.is_empty(), "PNG decoding differs from cv2.imread: {failures:?}");
}
