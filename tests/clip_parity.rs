//! The backbone against open_clip 3.3.0 and against an independent V-V reference
//! (`tests/fixtures/make_clip_fixtures.py`), on random weights: the committed tiny model, and a
//! full-size ViT-B-16-plus-240 generated at test time.

mod common;

use std::path::Path;

use common::{assert_close, fixture, promptad, read_tensors, run_python};
use promptad::clip::preprocess::{pillow_resize_bicubic, read_rgb, resize_bicubic};
use promptad::clip::{Clip, ModelConfig, Precision};
use tch::{Device, Kind, Tensor};

const TINY_TAPS: [usize; 2] = [1, 3];

fn load_tiny(precision: Precision) -> Clip {
    let dir = fixture("clip_tiny");
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    Clip::load(config, &dir.join("weights.safetensors"), Device::Cpu, precision).unwrap()
}

/// Every model output against the references, `tol` on features and `10·tol` on logits
/// (which are scaled by exp(logit_scale) ≈ 14).
fn check_model_outputs(clip: &Clip, reference: &std::collections::HashMap<String, Tensor>, taps: &[usize], tol: f64) {
    let images = &reference["images"];
    let text = &reference["text"];
    tch::no_grad(|| {
        let image_features = clip.visual.encode_image(images).unwrap();
        assert_close("encode_image", &image_features, &reference["image_features"], tol);
        let text_features = clip.text.encode_text(text).unwrap();
        assert_close("encode_text", &text_features, &reference["text_features"], tol);
        let logits = clip.logits_per_image(&image_features, &text_features);
        assert_close("logits_per_image", &logits, &reference["logits_per_image"], 10.0 * tol);
        assert_close("logit_scale (raw)", &clip.logit_scale, &reference["logit_scale"], 0.0);

        let vv = clip.visual.forward_vv(images, taps).unwrap();
        assert_close("V-V global g vs open_clip encode_image", &vv.global, &reference["image_features"], tol);
        assert_close("V-V global g vs V-V reference", &vv.global, &reference["vv_global"], tol);
        assert_close("V-V patch tokens T", &vv.patch_tokens, &reference["vv_patch_tokens"], tol);
        for (k, tap) in taps.iter().zip(&vv.taps) {
            assert_close(&format!("memory tap inside block {k}"), tap, &reference[&format!("vv_tap_{k}")], tol);
        }
    });
}

#[test]
fn tiny_model_matches_open_clip_and_the_vv_reference() {
    let reference = read_tensors(&fixture("clip_tiny/reference.safetensors"));
    let clip = load_tiny(Precision::Fp32);
    check_model_outputs(&clip, &reference, &TINY_TAPS, 1e-5);
    let embeddings = clip.text.token_embeddings(&reference["text"]).unwrap();
    assert_close("token_embedding(text)", &embeddings, &reference["token_embedding"], 0.0);
    // Injected embeddings equal to the token embeddings reproduce encode_text.
    let injected = tch::no_grad(|| clip.text.encode_text_embeddings(&embeddings, &reference["text"]).unwrap());
    assert_close("encode_text_embeddings", &injected, &reference["text_features"], 1e-5);
}

#[test]
fn taps_are_mid_block_not_block_outputs() {
    // The aliasing of reference §2.1: a tap is the residual stream after attention, before the MLP.
    // Block outputs would differ clearly; make sure the test data can tell the two apart.
    let reference = read_tensors(&fixture("clip_tiny/reference.safetensors"));
    let clip = load_tiny(Precision::Fp32);
    let vv = tch::no_grad(|| clip.visual.forward_vv(&reference["images"], &[0]).unwrap());
    let block0_output = reference["vis_block0"].narrow(1, 1, vv.taps[0].size()[1]);
    let diff = common::max_abs_diff(&vv.taps[0], &block0_output);
    assert!(diff > 1e-3, "tap inside block 0 should differ from block 0's output, max |Δ| = {diff}");
}

#[test]
fn half_precision_stays_close_to_fp32() {
    let reference = read_tensors(&fixture("clip_tiny/reference.safetensors"));
    let images = &reference["images"];
    for precision in [Precision::Bf16, Precision::Fp16] {
        let clip = load_tiny(precision);
        let vv = tch::no_grad(|| clip.visual.forward_vv(images, &TINY_TAPS).unwrap()).to_kind(Kind::Float);
        for (what, got, want) in
            [("g", &vv.global, &reference["vv_global"]), ("T", &vv.patch_tokens, &reference["vv_patch_tokens"])]
        {
            let cos = Tensor::cosine_similarity(&got.flatten(0, -1), &want.flatten(0, -1), 0, 1e-12).double_value(&[]);
            eprintln!("{precision} {what}: cosine to fp32 reference {cos:.6}");
            assert!(cos > 0.999, "{precision} {what}: cosine {cos}");
        }
    }
}

#[test]
fn embed_cli_writes_the_reference_features() {
    let dir = fixture("clip_tiny");
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("tiny.safetensors");
    let images: Vec<String> = (0..2).map(|i| dir.join(format!("images/image{i}.png")).display().to_string()).collect();
    let weights = dir.join("weights.safetensors");
    let mut args = vec!["embed", "--weights", weights.to_str().unwrap()];
    let config = dir.join("config.json");
    args.extend([
        "--model-config",
        config.to_str().unwrap(),
        "--device",
        "cpu",
        "--taps",
        "1,3",
        "--batch-size",
        "1",
        // The references were computed on the PNGs as they are (at the model size).
        "--preprocess",
        "direct",
        "-o",
        output.to_str().unwrap(),
        "--image",
    ]);
    args.extend(images.iter().map(String::as_str));
    let run = promptad(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let got = read_tensors(&output);
    let reference = read_tensors(&dir.join("reference.safetensors"));
    // The PNGs are at the model's input size, so Pillow's resize is the identity and the whole
    // path (decode, normalise, model) must agree with the Python side.
    assert_close("embed image_global", &got["image_global"], &reference["image_features"], 1e-5);
    assert_close("embed image_patch_tokens", &got["image_patch_tokens"], &reference["vv_patch_tokens"], 1e-5);
    assert_close("embed image_tap_1", &got["image_tap_1"], &reference["vv_tap_1"], 1e-5);
    assert_close("embed image_tap_3", &got["image_tap_3"], &reference["vv_tap_3"], 1e-5);
}

#[test]
fn embed_defaults_to_the_official_data_path() {
    // `embed` without --preprocess takes the data path of train and score (OpenCV to 1024×1024,
    // then Pillow bicubic), so its features equal the model's on `model_input`; `direct` differs.
    use promptad::data::prepare::{model_input, Compat, Role};
    let dir = fixture("clip_tiny");
    let out = tempfile::tempdir().unwrap();
    let png = out.path().join("odd.png");
    let pixels: Vec<u8> = (0..97 * 131 * 3).map(|i| ((i * 7919) % 251) as u8).collect();
    image::RgbImage::from_raw(97, 131, pixels).unwrap().save(&png).unwrap();
    let clip = load_tiny(Precision::Fp32);
    let size = clip.visual.image_size();
    let input = model_input(&std::fs::read(&png).unwrap(), "odd.png", size as u32, Compat::Rgb, Role::Shot).unwrap();
    let want =
        tch::no_grad(|| clip.visual.forward_vv(&Tensor::from_slice(&input).view([1, 3, size, size]), &[1]).unwrap());
    let weights = dir.join("weights.safetensors");
    let config = dir.join("config.json");
    let mut global = Vec::new();
    for preprocess in ["official", "direct"] {
        let output = out.path().join(format!("{preprocess}.safetensors"));
        let run = promptad(&[
            "embed",
            "--weights",
            weights.to_str().unwrap(),
            "--model-config",
            config.to_str().unwrap(),
            "--device",
            "cpu",
            "--taps",
            "1",
            "--preprocess",
            preprocess,
            "-o",
            output.to_str().unwrap(),
            "--image",
            png.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        global.push(read_tensors(&output).remove("image_global").unwrap());
    }
    assert_close("embed (official) vs model_input", &global[0], &want.global, 1e-6);
    let gap = common::max_abs_diff(&global[1], &want.global);
    assert!(gap > 1e-4, "direct should skip the 1024 step and differ, max |Δ| = {gap}");
    let run = promptad(&["embed", "--help"]);
    let help = String::from_utf8_lossy(&run.stdout);
    assert!(help.contains("--preprocess") && help.contains("official") && help.contains("direct"), "{help}");
}

#[test]
fn full_size_vit_b_16_plus_240_matches_open_clip() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    run_python("make_clip_fixtures.py", &["full", dir.path().to_str().unwrap()]);
    eprintln!("full-size fixture generated in {:.1}s", started.elapsed().as_secs_f64());
    let weights = dir.path().join("weights.safetensors");
    let reference = read_tensors(&dir.path().join("reference.safetensors"));

    // Library path: every output, 1e-4 (reference §6.4).
    let clip = Clip::load(ModelConfig::vit_b_16_plus_240(), &weights, Device::Cpu, Precision::Fp32).unwrap();
    assert_eq!(clip.checkpoint.tensors, 302);
    assert_eq!(clip.checkpoint.parameters, 208_377_345);
    check_model_outputs(&clip, &reference, &[3, 8], 1e-4);
    drop(clip);

    // CLI path, with real texts through our tokenizer.
    let texts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("texts.json")).unwrap()).unwrap();
    let output = dir.path().join("embed.safetensors");
    let images: Vec<String> =
        (0..2).map(|i| dir.path().join(format!("images/image{i}.png")).display().to_string()).collect();
    let mut args = vec![
        "embed",
        "--weights",
        weights.to_str().unwrap(),
        "--device",
        "cpu",
        "--preprocess",
        "direct",
        "-o",
        output.to_str().unwrap(),
        "--image",
    ];
    args.extend(images.iter().map(String::as_str));
    args.push("--text");
    args.extend(texts.iter().map(String::as_str));
    let run = promptad(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let got = read_tensors(&output);
    assert_close("embed text_tokens", &got["text_tokens"], &reference["text"], 0.0);
    assert_close("embed text_features", &got["text_features"], &reference["text_features"], 1e-4);
    assert_close("embed image_global", &got["image_global"], &reference["image_features"], 1e-4);
    assert_close("embed image_patch_tokens", &got["image_patch_tokens"], &reference["vv_patch_tokens"], 1e-4);
    assert_close("embed image_tap_3 (M1)", &got["image_tap_3"], &reference["vv_tap_3"], 1e-4);
    assert_close("embed image_tap_8 (M2)", &got["image_tap_8"], &reference["vv_tap_8"], 1e-4);
}

#[test]
fn preprocess_matches_pillow_bicubic() {
    // Byte for byte against the venv's Pillow: the committed cases, then the generated ones
    // (tests/fixtures/make_resize_cases.py): MVTec and VisA sizes to the model size and from the
    // 1024×1024 data step to them, odd anisotropic sizes (where Pillow runs the vertical pass
    // first), random and smooth, 3 channels and 1.
    let reference = read_tensors(&fixture("clip_tiny/preprocess.safetensors"));
    for (name, want) in &reference {
        let (h, w) = (want.size()[0] as u32, want.size()[1] as u32);
        let image = read_rgb(&fixture(&format!("clip_tiny/preprocess/{name}.png"))).unwrap();
        let ours = resize_bicubic(&image, w, h);
        let want = Vec::<u8>::try_from(want.flatten(0, -1)).unwrap();
        let differing = ours.as_raw().iter().zip(&want).filter(|(a, b)| a != b).count();
        eprintln!("{name} {}x{} -> {w}x{h}: {differing} bytes differ", image.width(), image.height());
        assert_eq!(differing, 0, "{name}: resize differs from Pillow on {differing} bytes");
    }
    let dir = tempfile::tempdir().unwrap();
    run_python("make_resize_cases.py", &[dir.path().to_str().unwrap()]);
    let cases = read_tensors(&dir.path().join("cases.safetensors"));
    let bytes = |t: &Tensor| Vec::<u8>::try_from(t.flatten(0, -1)).unwrap();
    let mut checked = 0;
    for (key, want) in &cases {
        let Some(case) = key.strip_suffix(".pil_bicubic") else { continue };
        let prefix = format!("{case}.source_of_");
        let source = cases.keys().find_map(|k| k.strip_prefix(&prefix)).expect("case names its input");
        let (src, s) = (&cases[source], cases[source].size());
        let (d, want) = (want.size(), bytes(want));
        let ours = pillow_resize_bicubic(
            &bytes(src),
            s[1] as usize,
            s[0] as usize,
            s[2] as usize,
            d[1] as usize,
            d[0] as usize,
        );
        let differing = ours.iter().zip(&want).filter(|(a, b)| a != b).count();
        eprintln!("pillow {case}: {differing} of {} bytes differ", want.len());
        assert_eq!((ours.len(), differing), (want.len(), 0), "{case}: resize differs from Pillow");
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} Pillow cases");
}

fn embed_error(args: &[&str]) -> String {
    let run = promptad(args);
    assert!(!run.status.success(), "expected failure for {args:?}");
    String::from_utf8_lossy(&run.stderr).into_owned()
}

fn tiny_args<'a>(weights: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "embed",
        "--weights",
        weights,
        "--model-config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clip_tiny/config.json"),
        "--device",
        "cpu",
        "--taps",
        "1",
        "-o",
        out,
    ]
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = fixture("clip_tiny");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let out = out.to_str().unwrap();
    let image = dir.join("images/image0.png");
    let image = image.to_str().unwrap();
    let weights = dir.join("weights.safetensors");

    // Truncated checkpoint.
    let bytes = std::fs::read(&weights).unwrap();
    let truncated = tmp.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut args = tiny_args(truncated.to_str().unwrap(), out);
    args.extend(["--image", image]);
    let err = embed_error(&args);
    assert!(err.contains("truncated.safetensors") && err.contains("not a readable safetensors"), "{err}");

    // Wrong config for the weights: the built-in full-size config with the tiny weights.
    let err =
        embed_error(&["embed", "--weights", weights.to_str().unwrap(), "--device", "cpu", "-o", out, "--image", image]);
    assert!(err.contains("ln_final.bias: model expects [640], file has [32]"), "{err}");
    assert!(
        err.contains("missing keys") && err.contains("transformer.resblocks.10.attn.in_proj_weight [1920, 640]"),
        "{err}"
    );
    assert!(err.contains("--model-config"), "{err}");

    // Missing and unexpected keys, each named.
    let mut tensors = Tensor::read_safetensors(&weights).unwrap();
    tensors.retain(|(name, _)| name != "visual.ln_post.bias");
    tensors.push(("visual.attn_pool.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))));
    let edited = tmp.path().join("edited.safetensors");
    Tensor::write_safetensors(&tensors, &edited).unwrap();
    let mut args = tiny_args(edited.to_str().unwrap(), out);
    args.extend(["--image", image]);
    let err = embed_error(&args);
    assert!(err.contains("missing keys") && err.contains("visual.ln_post.bias [32]"), "{err}");
    assert!(err.contains("unexpected keys") && err.contains("visual.attn_pool.weight [2]"), "{err}");

    // An image that is not an image.
    let not_image = tmp.path().join("notes.png");
    std::fs::write(&not_image, "this is text").unwrap();
    let mut args = tiny_args(weights.to_str().unwrap(), out);
    args.extend(["--image", not_image.to_str().unwrap()]);
    let err = embed_error(&args);
    assert!(err.contains("notes.png") && err.contains("cannot decode"), "{err}");

    // Text tokenized for CLIP's vocabulary cannot run on the tiny vocabulary of 500.
    let mut args = tiny_args(weights.to_str().unwrap(), out);
    args.extend(["--text", "a photo of a cat"]);
    let err = embed_error(&args);
    assert!(err.contains("ids must lie in [0, 500)"), "{err}");

    // A config that open_clip has but this port does not implement.
    let config = tmp.path().join("timm.json");
    std::fs::write(&config, r#"{"embed_dim": 16, "vision_cfg": {"timm_model_name": "x", "image_size": 64}, "text_cfg": {"context_length": 77, "vocab_size": 500, "width": 32, "heads": 4, "layers": 2}}"#).unwrap();
    let err = embed_error(&[
        "embed",
        "--weights",
        weights.to_str().unwrap(),
        "--model-config",
        config.to_str().unwrap(),
        "-o",
        out,
        "--image",
        image,
    ]);
    assert!(err.contains("timm.json") && err.contains("timm_model_name"), "{err}");

    // Nothing was left behind by any failure.
    assert!(!Path::new(out).exists());
}

#[test]
fn converted_torch_checkpoint_loads_and_matches() {
    // A release-style training checkpoint: {'epoch', 'state_dict'} with DataParallel's `module.`
    // prefix and the attn_mask buffer, pickled by torch.save; scripts/convert_checkpoint.py must
    // turn it into the same weights.
    let dir = fixture("clip_tiny");
    let tmp = tempfile::tempdir().unwrap();
    let pt = tmp.path().join("release.pt");
    let script = format!(
        "import torch; from safetensors.torch import load_file; sd = load_file({:?}); \
         sd = {{'module.' + k: v for k, v in sd.items()}}; sd['module.attn_mask'] = torch.zeros(77, 77); \
         torch.save({{'epoch': 32, 'state_dict': sd}}, {:?})",
        dir.join("weights.safetensors").to_str().unwrap(),
        pt.to_str().unwrap()
    );
    let made = std::process::Command::new(common::python()).args(["-c", &script]).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let converted = tmp.path().join("converted.safetensors");
    let convert = std::process::Command::new(common::python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/convert_checkpoint.py"))
        .args([pt.to_str().unwrap(), converted.to_str().unwrap(), "--model", "none"])
        .output()
        .unwrap();
    assert!(convert.status.success(), "{}", String::from_utf8_lossy(&convert.stderr));
    let config = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let clip = Clip::load(config, &converted, Device::Cpu, Precision::Fp32).unwrap();
    let reference = read_tensors(&dir.join("reference.safetensors"));
    let features = tch::no_grad(|| clip.visual.encode_image(&reference["images"]).unwrap());
    assert_close("encode_image after conversion", &features, &reference["image_features"], 1e-5);

    // The full-size key check refuses the tiny weights, naming what differs.
    let refused = std::process::Command::new(common::python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/convert_checkpoint.py"))
        .args([pt.to_str().unwrap(), tmp.path().join("x.safetensors").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("does not match open_clip model ViT-B-16-plus-240"),
        "{stderr}"
    );
    assert!(!tmp.path().join("x.safetensors").exists());
}
