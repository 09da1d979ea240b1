//! Parity of `promptad::clip::tokenizer` with `open_clip.get_tokenizer('ViT-B-16-plus-240')`.
//!
//! `tests/fixtures/tokenizer_cases.json` is written by `tests/fixtures/make_tokenizer_cases.py`
//! with open_clip 3.3.0 itself (the independent reference). Every case must match exactly; the
//! `known_gaps` entries must differ only in the way `src/clip/tokenizer.rs` documents.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use promptad::clip::tokenizer::{Tokenizer, EOT, SOT};
use serde::Deserialize;

const CONTEXT_LENGTH: usize = 77;

#[derive(Deserialize)]
struct Fixture {
    open_clip_version: String,
    context_length: usize,
    cases: Vec<Case>,
    known_gaps: Vec<Gap>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    kind: String,
    ids: Vec<i64>,
}

#[derive(Deserialize)]
struct Gap {
    text: String,
    kind: String,
    ids: Vec<i64>,
    #[serde(default)]
    ids_without_fix_encoding: Option<Vec<i64>>,
    note: String,
}

#[derive(Deserialize)]
struct Categories {
    state_anomaly: Vec<String>,
    class_mapping: BTreeMap<String, String>,
    datasets: BTreeMap<String, Vec<Category>>,
}

#[derive(Deserialize)]
struct Category {
    key: String,
    name: String,
    suffixes: Vec<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_fixture() -> Fixture {
    let path = root().join("tests/fixtures/tokenizer_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_categories() -> Categories {
    let path = root().join("assets/categories.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Python `str.format` with a single `{}` (all PromptAD state templates have exactly one).
fn format_state(state: &str, name: &str) -> String {
    assert_eq!(state.matches("{}").count(), 1, "template {state:?}");
    state.replacen("{}", name, 1)
}

/// The prompt strings PromptAD builds for one category (promptad-official-behaviour.md §3.3),
/// one copy each: normal, manual abnormal (state-major), learnable abnormal.
fn prompts(cats: &Categories, c: &Category) -> (String, Vec<String>, String) {
    let normal = format!("N N N N {}.", c.name);
    let manual = cats
        .state_anomaly
        .iter()
        .chain(&c.suffixes)
        .map(|s| format!("N N N N {}.", format_state(s, &c.name)))
        .collect();
    let learnable = format!("N N N N A {}.", c.name);
    (normal, manual, learnable)
}

#[test]
fn matches_open_clip_on_every_case() {
    let fx = load_fixture();
    assert_eq!(fx.context_length, CONTEXT_LENGTH);
    assert!(fx.cases.len() >= 200, "only {} cases", fx.cases.len());
    let tk = Tokenizer::global();
    let mut failures = Vec::new();
    for case in &fx.cases {
        let got = tk.tokenize(&case.text, CONTEXT_LENGTH);
        if got != case.ids {
            failures.push(format!(
                "[{}] text={:?}\n    rust     ={:?}\n    open_clip={:?}",
                case.kind, case.text, got, case.ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from open_clip {}:\n{}",
        failures.len(),
        fx.cases.len(),
        fx.open_clip_version,
        failures.join("\n")
    );
}

#[test]
fn batch_equals_single() {
    let fx = load_fixture();
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.text.as_str()).collect();
    let batch = Tokenizer::global().tokenize_batch(&texts, CONTEXT_LENGTH);
    assert_eq!(batch.len(), texts.len());
    for (row, case) in batch.iter().zip(&fx.cases) {
        assert_eq!(row, &case.ids, "text={:?}", case.text);
    }
}

#[test]
fn known_gaps_differ_only_as_documented() {
    let fx = load_fixture();
    let tk = Tokenizer::global();
    let mut failures = Vec::new();
    for gap in &fx.known_gaps {
        let got = tk.tokenize(&gap.text, CONTEXT_LENGTH);
        match gap.kind.as_str() {
            // No mojibake repair: we must equal open_clip run with ftfy fix_encoding=False.
            "mojibake" => {
                let want = gap.ids_without_fix_encoding.as_ref().expect("ids_without_fix_encoding");
                if &got != want {
                    failures.push(format!(
                        "[mojibake] text={:?} ({})\n    rust                       ={:?}\n    open_clip, fix_encoding=False={:?}",
                        gap.text, gap.note, got, want
                    ));
                }
                if got == gap.ids {
                    failures.push(format!(
                        "[mojibake] text={:?}: no longer differs from open_clip; move it to cases",
                        gap.text
                    ));
                }
            }
            // Characters newer than Python 3.11's Unicode 14: the difference is real.
            "unicode_version" => {
                if got == gap.ids {
                    failures.push(format!(
                        "[unicode_version] text={:?} ({}): no longer differs from open_clip {:?}",
                        gap.text, gap.note, gap.ids
                    ));
                }
            }
            other => failures.push(format!("unknown gap kind {other:?} for {:?}", gap.text)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// M = len(state_anomaly) + len(class_state_abnormal[key]), promptad-official-behaviour.md §4.
#[test]
fn promptad_prompt_counts() {
    let expected_m: [(&str, &str, usize); 27] = [
        ("mvtec", "carpet", 14),
        ("mvtec", "grid", 14),
        ("mvtec", "leather", 13),
        ("mvtec", "tile", 13),
        ("mvtec", "wood", 12),
        ("mvtec", "bottle", 11),
        ("mvtec", "cable", 13),
        ("mvtec", "capsule", 13),
        ("mvtec", "hazelnut", 12),
        ("mvtec", "metal_nut", 12),
        ("mvtec", "pill", 14),
        ("mvtec", "screw", 11),
        ("mvtec", "toothbrush", 10),
        ("mvtec", "transistor", 12),
        ("mvtec", "zipper", 14),
        ("visa", "candle", 15),
        ("visa", "capsules", 13),
        ("visa", "cashew", 13),
        ("visa", "chewinggum", 13),
        ("visa", "fryum", 14),
        ("visa", "macaroni1", 13),
        ("visa", "macaroni2", 13),
        ("visa", "pcb1", 12),
        ("visa", "pcb2", 12),
        ("visa", "pcb3", 12),
        ("visa", "pcb4", 15),
        ("visa", "pipe_fryum", 14),
    ];
    let cats = load_categories();
    assert_eq!(cats.state_anomaly.len(), 8);
    let n_generic = cats.state_anomaly.len();
    let mut got: Vec<(&str, &str, usize)> = Vec::new();
    for d in ["mvtec", "visa"] {
        for c in &cats.datasets[d] {
            got.push((d, c.key.as_str(), n_generic + c.suffixes.len()));
        }
    }
    assert_eq!(got, expected_m.to_vec(), "categories (in dataset order) and M");
    for ds in cats.datasets.values() {
        for c in ds {
            assert_eq!(c.name, cats.class_mapping.get(&c.key).cloned().unwrap_or_else(|| c.key.clone()), "{}", c.key);
            let (_, manual, _) = prompts(&cats, c);
            assert_eq!(manual.len(), cats.state_anomaly.len() + c.suffixes.len());
        }
    }
    // §3.4 "Counts (verified)": bottle image-level run (N=3, L=4): normal 3, MAP 33, LAP 12;
    // metal_nut pixel-level run (N=1, L=4): 1, 12, 4.
    let find = |key: &str| cats.datasets.values().flatten().find(|c| c.key == key).expect(key);
    for (key, n, l, want) in [("bottle", 3, 4, (3, 33, 12)), ("metal_nut", 1, 4, (1, 12, 4))] {
        let (_, manual, _) = prompts(&cats, find(key));
        assert_eq!((n, n * manual.len(), n * l), want, "{key}");
    }
    // Verbatim quirks of ad_prompts.py.
    let fryum = find("fryum");
    assert_eq!(fryum.suffixes.iter().filter(|s| *s == "{} with colour spot").count(), 2);
    assert!(find("metal_nut").suffixes.contains(&"{} with a bent shape ".to_string()));
    assert!(find("candle").suffixes.contains(&"{} with foreign particals".to_string()));
}

/// Every prompt PromptAD builds is in the fixture, and has the layout the prompt learner relies on
/// (promptad-official-behaviour.md §3.4): SOT, four "N" (333), for LAP an "A" (320), the class
/// tokens, "." (269), EOT, zero padding.
#[test]
fn every_promptad_prompt_is_covered_and_well_formed() {
    let fx = load_fixture();
    let covered: HashSet<&str> = fx.cases.iter().map(|c| c.text.as_str()).collect();
    let cats = load_categories();
    let tk = Tokenizer::global();
    let mut missing = Vec::new();
    for c in cats.datasets.values().flatten() {
        let (normal, manual, learnable) = prompts(&cats, c);
        for (text, lap) in
            std::iter::once((&normal, false)).chain(manual.iter().map(|m| (m, false))).chain([(&learnable, true)])
        {
            if !covered.contains(text.as_str()) {
                missing.push(text.clone());
            }
            let ids = tk.tokenize(text, CONTEXT_LENGTH);
            let eot = ids.iter().position(|&x| x == EOT).expect("EOT");
            assert_eq!(&ids[..5], &[SOT, 333, 333, 333, 333], "{text:?}");
            if lap {
                assert_eq!(ids[5], 320, "{text:?}");
            }
            assert_eq!(ids[eot - 1], 269, "{text:?} ends with '.'");
            assert!(ids[eot + 1..].iter().all(|&x| x == 0), "{text:?}");
            assert!(eot < CONTEXT_LENGTH - 1, "{text:?} is not truncated");
        }
    }
    assert!(missing.is_empty(), "prompts missing from tokenizer_cases.json: {missing:?}");
    // Examples quoted in §3.4.
    assert_eq!(&tk.tokenize("N N N N bottle.", CONTEXT_LENGTH)[..9], &[SOT, 333, 333, 333, 333, 5392, 269, EOT, 0]);
    assert_eq!(&tk.tokenize("N N N N A bottle.", CONTEXT_LENGTH)[..9], &[SOT, 333, 333, 333, 333, 320, 5392, 269, EOT]);
    // The trailing space of '{} with a bent shape ' disappears in tokenisation (§4 notes).
    assert_eq!(
        tk.tokenize("N N N N metal nut with a bent shape .", CONTEXT_LENGTH),
        tk.tokenize("N N N N metal nut with a bent shape.", CONTEXT_LENGTH)
    );
}
