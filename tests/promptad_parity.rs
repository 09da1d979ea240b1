//! PromptAD against an independent Python reference written from the reference document
//! (`tests/fixtures/make_promptad_fixtures.py`), on a small random CLIP with the full vocabulary,
//! the same weights and the same injected initial context vectors, from the same image files
//! (the reference preprocesses them with cv2 and Pillow): model inputs, prompt assembly and token
//! ids, the three losses and their gradients, SGD steps, the prototypes after 3 steps, the memory
//! distances, and every score and map, in fp32.

mod common;

use std::collections::HashMap;

use common::{assert_close, read_tensors, run_python};
use promptad::clip::{Clip, ModelConfig, Precision};
use promptad::data::prepare::{model_input, Compat, Role};
use promptad::detect::fusion::{anomaly_probability, harmonic_fusion};
use promptad::detect::memory::VisualMemory;
use promptad::detect::{DetectConfig, Detector, Guidance};
use promptad::pipeline::train::InitPrompts;
use promptad::prompt::categories::Catalog;
use promptad::prompt::learner::{PromptConfig, PromptLearner};
use promptad::prompt::train::{losses, text_prototypes, TrainConfig, Trainer};
use tch::{Device, Tensor};

const TAPS: [usize; 2] = [1, 3];

struct Fixture {
    _dir: tempfile::TempDir,
    clip: Clip,
    reference: HashMap<String, Tensor>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    run_python("make_promptad_fixtures.py", &[dir.path().to_str().unwrap()]);
    let config = ModelConfig::from_file(&dir.path().join("config.json")).unwrap();
    let clip = Clip::load(config, &dir.path().join("weights.safetensors"), Device::Cpu, Precision::Fp32).unwrap();
    let reference = read_tensors(&dir.path().join("reference.safetensors"));
    Fixture { _dir: dir, clip, reference }
}

/// One head end to end up to its prototypes; returns them.
fn check_head(f: &Fixture, head: &str, category: &str, config: PromptConfig, features: &Tensor) -> Tensor {
    let r = |key: &str| &f.reference[&format!("{head}.{key}")];
    let category = Catalog::builtin().resolve(category, None, None).unwrap();
    let mut learner = PromptLearner::new(&f.clip, &category, config).unwrap();
    let (tn, tm, tl) = learner.tokens();
    assert_close(&format!("{head} tokens normal"), tn, r("tokens_normal"), 0.0);
    assert_close(&format!("{head} tokens manual"), tm, r("tokens_map"), 0.0);
    assert_close(&format!("{head} tokens learnable"), tl, r("tokens_lap"), 0.0);
    learner.set_context(r("normal_ctx_init"), r("abnormal_ctx_init")).unwrap();
    let (normal, manual, learnable) = learner.forward();
    assert_close(&format!("{head} prompts normal"), &normal.embeddings, r("prompts_normal"), 1e-7);
    assert_close(&format!("{head} prompts manual"), &manual.embeddings, r("prompts_map"), 1e-7);
    assert_close(&format!("{head} prompts learnable"), &learnable.embeddings, r("prompts_lap"), 1e-7);

    let train_config = TrainConfig::default();
    let step0 = losses(&f.clip, &learner, features, &train_config).unwrap();
    assert_close(&format!("{head} contrastive loss"), &step0.contrastive, r("loss_ce"), 1e-5);
    assert_close(&format!("{head} EAM loss"), &step0.eam, r("loss_eam"), 1e-5);
    assert_close(&format!("{head} alignment loss"), &step0.align, r("loss_align"), 1e-6);
    assert_close(&format!("{head} total loss"), &step0.total, r("loss_total"), 1e-5);
    step0.total.backward();
    assert_close(&format!("{head} d loss / d normal ctx"), &learner.normal_ctx.grad(), r("grad_normal_ctx"), 1e-4);
    assert_close(&format!("{head} d loss / d anomaly ctx"), &learner.anomaly_ctx.grad(), r("grad_abnormal_ctx"), 1e-4);
    let _ = learner.normal_ctx.grad().zero_();
    let _ = learner.anomaly_ctx.grad().zero_();

    let mut trainer = Trainer::new(&learner, &train_config).unwrap();
    let mut history = Vec::new();
    for step in 0..3 {
        history.push(trainer.step(&f.clip, &learner, features).unwrap());
        if step == 0 {
            assert_close(&format!("{head} normal ctx after 1 step"), &learner.normal_ctx, r("normal_ctx_step1"), 1e-6);
            assert_close(
                &format!("{head} anomaly ctx after 1 step"),
                &learner.anomaly_ctx,
                r("abnormal_ctx_step1"),
                1e-6,
            );
        }
    }
    assert_close(
        &format!("{head} losses of steps 0-2"),
        &Tensor::from_slice(&history).to_kind(tch::Kind::Float),
        r("losses"),
        1e-4,
    );
    assert_close(&format!("{head} normal ctx after 3 steps"), &learner.normal_ctx, r("normal_ctx_step3"), 1e-5);
    assert_close(&format!("{head} anomaly ctx after 3 steps"), &learner.anomaly_ctx, r("abnormal_ctx_step3"), 1e-5);
    let prototypes = text_prototypes(&f.clip, &learner).unwrap();
    assert_close(&format!("{head} prototypes after 3 steps"), &prototypes, r("text_features"), 1e-4);
    prototypes
}

/// The model inputs of `images/<split>_<i>.png` by our data path (what `train` and `score` call).
fn inputs_from_files(f: &Fixture, split: &str, role: Role) -> Tensor {
    let size = f.clip.visual.image_size();
    let dir = f._dir.path().join("images");
    let mut inputs = Vec::new();
    for i in 0.. {
        let path = dir.join(format!("{split}_{i}.png"));
        let Ok(bytes) = std::fs::read(&path) else { break };
        inputs.extend(model_input(&bytes, &path.display().to_string(), size as u32, Compat::Rgb, role).unwrap());
    }
    let n = inputs.len() as i64 / (3 * size * size);
    Tensor::from_slice(&inputs).view([n, 3, size, size])
}

#[test]
fn promptad_matches_the_python_reference() {
    // From the image files: the reference preprocesses them with cv2 and Pillow as the official
    // code does, we with our ports; everything downstream starts from our own inputs.
    let f = fixture();
    let r = |key: &str| &f.reference[key];
    let train_images = inputs_from_files(&f, "train", Role::Shot);
    let test_images = inputs_from_files(&f, "test", Role::Test);
    assert_close("train model inputs from files (cv2 + Pillow)", &train_images, r("train_images"), 0.0);
    assert_close("test model inputs from files (cv2 + Pillow)", &test_images, r("test_images"), 0.0);
    let encode = |images: &Tensor| tch::no_grad(|| f.clip.visual.forward_vv(images, &TAPS).unwrap().normalized());
    let train = encode(&train_images);
    let test = encode(&test_images);
    for (split, features) in [("train", &train), ("test", &test)] {
        assert_close(&format!("{split} global"), &features.global, r(&format!("{split}.global")), 1e-5);
        assert_close(&format!("{split} tokens"), &features.patch_tokens, r(&format!("{split}.tokens")), 1e-5);
        assert_close(&format!("{split} tap 1"), &features.taps[0], r(&format!("{split}.tap_1")), 1e-5);
        assert_close(&format!("{split} tap 3"), &features.taps[1], r(&format!("{split}.tap_3")), 1e-5);
    }

    let image_prototypes = check_head(&f, "cls", "bottle", PromptConfig::image_level(), &train.global);
    let pixel_prototypes = check_head(&f, "seg", "metal_nut", PromptConfig::pixel_level(), &train.patch_tokens);

    let memory = VisualMemory::from_taps(&TAPS, &train.taps);
    assert_close("memory bank 1", &memory.banks[0], r("memory.r1"), 1e-6);
    assert_close("memory bank 2", &memory.banks[1], r("memory.r2"), 1e-6);
    let visual = memory.distance(&test.taps);
    assert_close("visual distance V", &visual, r("test.visual_distance"), 1e-6);

    let t = f.clip.logit_scale_raw();
    let patch_prob = anomaly_probability(&test.patch_tokens, &pixel_prototypes, t);
    assert_close("patch probabilities", &patch_prob, r("seg.patch_prob"), 1e-5);
    assert_close("fused grid map", &harmonic_fusion(&patch_prob, &visual), r("seg.fused"), 1e-5);

    let detector = Detector {
        clip: &f.clip,
        memory,
        image_prototypes,
        pixel_prototypes,
        config: DetectConfig { taps: TAPS.to_vec(), ..DetectConfig::default() },
    };
    let detection = detector.detect(&test_images).unwrap();
    assert_close("image text score", &detection.text_score, r("cls.text_score"), 1e-5);
    let visual_max = r("cls.visual_map").amax([1, 2], false);
    assert_close("max of the 400×400 visual map", &detection.visual_max, &visual_max, 1e-6);
    assert_close("image score", &detection.image_score, r("cls.image_score"), 1e-5);
    assert_close("pixel map (400×400, Gaussian σ=4)", &detection.map, r("seg.map"), 1e-5);

    // The ablations use the same pieces: vision-only is the smoothed visual map and its max.
    let vision_only =
        Detector { config: DetectConfig { guidance: Guidance::VisionOnly, ..detector.config.clone() }, ..detector };
    let ablation = vision_only.detect(&test_images).unwrap();
    assert_close("vision-only image score", &ablation.image_score, &visual_max, 1e-6);
}

#[test]
fn half_precision_training_stays_close_to_fp32() {
    // fp16/bf16 backbones (LayerNorm and the prompt context stay fp32): the losses of 3 steps and
    // the resulting prototypes against the fp32 reference.
    let dir = tempfile::tempdir().unwrap();
    run_python("make_promptad_fixtures.py", &[dir.path().to_str().unwrap()]);
    let reference = read_tensors(&dir.path().join("reference.safetensors"));
    let category = Catalog::builtin().resolve("bottle", None, None).unwrap();
    for precision in [Precision::Bf16, Precision::Fp16] {
        let config = ModelConfig::from_file(&dir.path().join("config.json")).unwrap();
        let clip = Clip::load(config, &dir.path().join("weights.safetensors"), Device::Cpu, precision).unwrap();
        let features = tch::no_grad(|| {
            clip.visual
                .forward_vv(&reference["train_images"], &TAPS)
                .unwrap()
                .normalized()
                .global
                .to_kind(tch::Kind::Float)
        });
        let mut learner = PromptLearner::new(&clip, &category, PromptConfig::image_level()).unwrap();
        learner.set_context(&reference["cls.normal_ctx_init"], &reference["cls.abnormal_ctx_init"]).unwrap();
        let mut trainer = Trainer::new(&learner, &TrainConfig::default()).unwrap();
        let losses: Vec<f64> = (0..3).map(|_| trainer.step(&clip, &learner, &features).unwrap()).collect();
        let want: Vec<f64> = Vec::try_from(reference["cls.losses"].to_kind(tch::Kind::Double)).unwrap();
        for (got, want) in losses.iter().zip(&want) {
            assert!((got - want).abs() < 0.05 * want.abs(), "{precision}: losses {losses:?} vs fp32 {want:?}");
        }
        let prototypes = text_prototypes(&clip, &learner).unwrap();
        let cos = (prototypes * &reference["cls.text_features"]).sum_dim_intlist(-1, false, tch::Kind::Float);
        let min_cos = cos.min().double_value(&[]);
        eprintln!("{precision}: losses {losses:?} (fp32 {want:?}), prototype cosine to fp32 >= {min_cos:.5}");
        assert!(min_cos > 0.99, "{precision}: prototype cosine {min_cos}");
    }
}

#[test]
fn init_prompts_file_reproduces_the_reference_steps() {
    // `train --init-prompts FILE`: the reference's initial contexts under the artifact's tensor
    // names; after 3 SGD steps both heads' contexts match the reference's.
    let f = fixture();
    let r = |key: &str| &f.reference[key];
    let file = f._dir.path().join("init.safetensors");
    let named = [
        ("image.normal_ctx", r("cls.normal_ctx_init")),
        ("image.anomaly_ctx", r("cls.abnormal_ctx_init")),
        ("pixel.normal_ctx", r("seg.normal_ctx_init")),
        ("pixel.anomaly_ctx", r("seg.abnormal_ctx_init")),
    ];
    Tensor::write_safetensors(&named, &file).unwrap();
    let init = InitPrompts::load(file.to_str().unwrap()).unwrap();
    assert_eq!(init.record.kind, "file");
    assert_eq!(init.record.sha256.len(), 64);
    let features = tch::no_grad(|| {
        f.clip.visual.forward_vv(&inputs_from_files(&f, "train", Role::Shot), &TAPS).unwrap().normalized()
    });
    for (prefix, head, category, config, visual) in [
        ("image", "cls", "bottle", PromptConfig::image_level(), &features.global),
        ("pixel", "seg", "metal_nut", PromptConfig::pixel_level(), &features.patch_tokens),
    ] {
        let category = Catalog::builtin().resolve(category, None, None).unwrap();
        let mut learner = PromptLearner::new(&f.clip, &category, config).unwrap();
        init.apply(prefix, &mut learner).unwrap();
        let mut trainer = Trainer::new(&learner, &TrainConfig::default()).unwrap();
        for _ in 0..3 {
            trainer.step(&f.clip, &learner, visual).unwrap();
        }
        let step3 = |k: &str| &f.reference[&format!("{head}.{k}_step3")];
        assert_close(&format!("{prefix} normal ctx after 3 steps"), &learner.normal_ctx, step3("normal_ctx"), 1e-6);
        assert_close(&format!("{prefix} anomaly ctx after 3 steps"), &learner.anomaly_ctx, step3("abnormal_ctx"), 1e-6);
    }
}

#[test]
fn init_prompts_errors_name_the_key_and_shapes() {
    let f = fixture();
    let dir = f._dir.path();
    let missing = InitPrompts::load(dir.join("nope.safetensors").to_str().unwrap()).err().unwrap().to_string();
    assert!(missing.contains("nope.safetensors") && missing.contains("no such file"), "{missing}");
    let category = Catalog::builtin().resolve("bottle", None, None).unwrap();
    let mut learner = PromptLearner::new(&f.clip, &category, PromptConfig::image_level()).unwrap();
    let width = learner.normal_ctx.size()[2];
    let file = dir.join("bad.safetensors");
    let wrong = Tensor::zeros([2, 4, width], (tch::Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("image.normal_ctx", &wrong)], &file).unwrap();
    let init = InitPrompts::load(file.to_str().unwrap()).unwrap();
    let shape = init.apply("image", &mut learner).unwrap_err().to_string();
    assert!(
        shape.contains("image.normal_ctx")
            && shape.contains(&format!("[2, 4, {width}]"))
            && shape.contains(&format!("[3, 4, {width}]")),
        "{shape}"
    );
    let right = Tensor::zeros([3, 4, width], (tch::Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("image.normal_ctx", &right)], &file).unwrap();
    let init = InitPrompts::load(file.to_str().unwrap()).unwrap();
    let absent = init.apply("image", &mut learner).unwrap_err().to_string();
    assert!(absent.contains("\"image.anomaly_ctx\"") && absent.contains("image.normal_ctx"), "{absent}");
}

#[test]
fn init_prompts_from_an_artifact_is_recorded_by_checksum() {
    use promptad::artifact::random_backbone;
    use promptad::data::synth::{generate, SynthConfig};

    use promptad::pipeline::train::{train_category_from, TrainJob};
    use sha2::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let synth = SynthConfig {
        seed: 3,
        categories: vec!["marble".into()],
        image_size: 96,
        train_good: 2,
        test_good: 1,
        test_defective_per_type: 1,
        overwrite: false,
        ..SynthConfig::default()
    };
    generate(&synth, &data, || {}).unwrap();
    let (clip, backbone) = random_backbone(7, Device::Cpu).unwrap();
    let job = |steps: usize| TrainJob {
        category_name: Some("marble".into()),
        ..TrainJob::official(data.display().to_string(), "marble", 1, 1, steps)
    };
    let location = |p: &std::path::Path| promptad::store::Location::parse(p.to_str().unwrap()).unwrap();
    let first = tmp.path().join("first");
    let a = train_category_from(
        &job(1),
        &clip,
        backbone.clone(),
        &location(&first),
        false,
        &promptad::stop::StopToken::new(),
        None,
        |_, _, _| {},
    )
    .unwrap();
    assert_eq!(a.init_prompts, None);
    let init = InitPrompts::load(first.to_str().unwrap()).unwrap();
    let second = tmp.path().join("second");
    let b = train_category_from(
        &job(0),
        &clip,
        backbone,
        &location(&second),
        false,
        &promptad::stop::StopToken::new(),
        Some(&init),
        |_, _, _| {},
    )
    .unwrap();
    let want = format!("{:x}", sha2::Sha256::digest(std::fs::read(first.join("tensors.safetensors")).unwrap()));
    let record = b.init_prompts.expect("manifest records the warm start");
    assert_eq!((record.kind.as_str(), record.sha256.as_str()), ("artifact", want.as_str()));
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk["init_prompts"]["sha256"], serde_json::Value::String(want));
    // Zero steps: the new artifact's contexts are the ones it started from.
    let (ta, tb) =
        (read_tensors(&first.join("tensors.safetensors")), read_tensors(&second.join("tensors.safetensors")));
    for key in ["image.normal_ctx", "image.anomaly_ctx", "pixel.normal_ctx", "pixel.anomaly_ctx"] {
        assert_close(key, &tb[key], &ta[key], 0.0);
    }
}
