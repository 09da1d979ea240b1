//! The OpenCV steps of the data path against opencv-python-headless, byte for byte
//! (`tests/fixtures/make_resize_cases.py`): `cv2.resize` INTER_LINEAR (the official 1024×1024
//! step) and INTER_NEAREST, both ways, on MVTec, VisA and odd sizes, random and smooth images,
//! 3 channels and 1; and evaluation masks by the official protocol.

mod common;

use std::collections::HashMap;

use common::{read_tensors, run_python};
use promptad::data::prepare::{cv2_resize_linear, cv2_resize_nearest, mask};
use tch::Tensor;

/// An image tensor (H×W×C u8) as (bytes, width, height, channels).
fn image(t: &Tensor) -> (Vec<u8>, usize, usize, usize) {
    let s = t.size();
    (Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(), s[1] as usize, s[0] as usize, s[2] as usize)
}

/// Every case of `op`: (case name, input tensor, expected output tensor).
fn cases<'a>(tensors: &'a HashMap<String, Tensor>, op: &str) -> Vec<(String, &'a Tensor, &'a Tensor)> {
    let mut found: Vec<_> = tensors
        .iter()
        .filter_map(|(key, want)| {
            let case = key.strip_suffix(&format!(".{op}"))?;
            let prefix = format!("{case}.source_of_");
            let source = tensors.keys().find_map(|k| k.strip_prefix(&prefix)).expect("case names its input");
            Some((case.to_string(), &tensors[source], want))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// A resize port: (source, width, height, channels, new width, new height) to its bytes.
type Resize = fn(&[u8], usize, usize, usize, usize, usize) -> Vec<u8>;

fn check(op: &str, resize: Resize) {
    let dir = tempfile::tempdir().unwrap();
    run_python("make_resize_cases.py", &[dir.path().to_str().unwrap()]);
    let tensors = read_tensors(&dir.path().join("cases.safetensors"));
    let cases = cases(&tensors, op);
    assert!(cases.len() >= 20, "{op}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, src, want) in &cases {
        let (src, w, h, cn) = image(src);
        let (want, dw, dh, _) = image(want);
        let got = resize(&src, w, h, cn, dw, dh);
        let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        eprintln!("{op} {name}: {differing} of {} bytes differ", want.len());
        if differing > 0 || got.len() != want.len() {
            failures.push(format!("{name}: {differing} bytes"));
        }
    }
    assert!(failures.is_empty(), "{op} differs from OpenCV: {failures:?}");
}

#[test]
fn opencv_linear_resize_is_byte_identical() {
    check("cv2_linear", cv2_resize_linear);
}

#[test]
fn opencv_nearest_resize_is_byte_identical() {
    check("cv2_nearest", cv2_resize_nearest);
}

#[test]
fn masks_follow_the_official_protocol_byte_for_byte() {
    // cv2.imread(GRAYSCALE), gt[gt > 0] = 255, INTER_NEAREST to 1024, then to the map size.
    let dir = tempfile::tempdir().unwrap();
    run_python("make_resize_cases.py", &[dir.path().to_str().unwrap()]);
    let masks = read_tensors(&dir.path().join("masks.safetensors"));
    assert!(masks.len() >= 40);
    for (key, want) in &masks {
        let (name, size) = key.rsplit_once('.').unwrap();
        let path = dir.path().join("masks").join(format!("{name}.png"));
        let got = mask(&std::fs::read(&path).unwrap(), &path.display().to_string(), size.parse().unwrap()).unwrap();
        let want: Vec<bool> = Vec::<u8>::try_from(want.flatten(0, -1)).unwrap().into_iter().map(|v| v > 0).collect();
        let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(got.len(), want.len(), "{key}");
        assert_eq!(differing, 0, "{key}: {differing} mask pixels differ from the official protocol");
    }
}
