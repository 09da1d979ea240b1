//! JPEG decoding against OpenCV and Pillow (libjpeg-turbo), byte for byte
//! (`tests/fixtures/make_jpeg_cases.py`): the official dataset read `cv2.imread(IMREAD_COLOR)`
//! and its mask read `cv2.imread(IMREAD_GRAYSCALE)`, on baseline and progressive files, every
//! chroma subsampling, grey, restart markers and odd sizes.

mod common;

use common::{read_tensors, run_python};
use promptad::clip::jpeg::decode_grey;
use promptad::clip::preprocess::decode_rgb;

#[test]
fn jpegs_decode_as_opencv_decodes_them() {
    let dir = tempfile::tempdir().unwrap();
    run_python("make_jpeg_cases.py", &[dir.path().to_str().unwrap()]);
    let tensors = read_tensors(&dir.path().join("cases.safetensors"));
    let mut cases: Vec<&str> = tensors.keys().filter_map(|k| k.strip_suffix(".rgb")).collect();
    cases.sort();
    assert!(cases.len() >= 9, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let path = dir.path().join(format!("{case}.jpg"));
        let bytes = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        for (what, got) in [
            ("rgb", decode_rgb(&bytes, &name).unwrap().into_raw()),
            ("grey", decode_grey(&bytes, &name).unwrap().expect("not CMYK").into_raw()),
        ] {
            let want = Vec::<u8>::try_from(tensors[&format!("{case}.{what}")].flatten(0, -1)).unwrap();
            let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            eprintln!("{case} {what}: {differing} of {} bytes differ", want.len());
            if differing > 0 || got.len() != want.len() {
                failures.push(format!("{case} {what}: {differing} bytes differ, {} vs {} long", got.len(), want.len()));
            }
        }
    }
    assert!(failures.is_empty(), "JPEG decoding differs from cv2.imread: {failures:?}");
}
