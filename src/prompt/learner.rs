//! The prompt learner: learnable normal context and learnable anomaly context spliced between
//! fixed token embeddings (PromptAD's "semantic concatenation").
//!
//! Mirrors `PromptAD/model.py` `PromptLearner` (reference `promptad-official-behaviour.md`
//! §3.2–§3.4):
//! - normal prompts (N): `[SOS] ctx_n[p] [name . EOT pad]` from `"N N N N {name}."`;
//! - manual anomaly prompts (MAP, N·M, state-major): prompt `i` is `[SOS] ctx_n[i mod N] [state_{i div N}(name) . EOT ...]`;
//! - learnable anomaly prompts (LAP, N·L): prompt `i` is `[SOS] ctx_n[i mod N] ctx_a[i mod L] [name . EOT ...]`,
//!   the anomaly token sitting *before* the object name, as the code does (§9.8).
//!
//! The context vectors live in their own `VarStore`: the only parameters the optimiser sees.

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use super::categories::Category;
use super::PromptError;
use crate::clip::tokenizer::Tokenizer;
use crate::clip::Clip;

/// Sizes of one prompt set. Defaults are the official image-level ones (`train_cls.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// N: number of normal prompts (3 image-level, 1 pixel-level).
    pub n_normal: i64,
    /// L: number of learnable anomaly prompts.
    pub n_learnable_anomaly: i64,
    /// E_N: learnable normal context tokens per prompt.
    pub n_ctx: i64,
    /// E_A: learnable anomaly tokens per prompt.
    pub n_ctx_anomaly: i64,
    /// Use the manual anomaly prompts (ablation switch; official: true).
    pub manual_anomaly: bool,
    /// Use the learnable anomaly prompts (ablation switch; official: true).
    pub learnable_anomaly: bool,
}

impl PromptConfig {
    /// `train_cls.py`: N = 3, L = 4, E_N = 4, E_A = 1.
    pub fn image_level() -> Self {
        Self {
            n_normal: 3,
            n_learnable_anomaly: 4,
            n_ctx: 4,
            n_ctx_anomaly: 1,
            manual_anomaly: true,
            learnable_anomaly: true,
        }
    }

    /// `train_seg.py`: N = 1, otherwise as image level.
    pub fn pixel_level() -> Self {
        Self { n_normal: 1, ..Self::image_level() }
    }
}

/// The prompt strings, in the official order (reference §3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptStrings {
    pub normal: Vec<String>,
    pub manual_anomaly: Vec<String>,
    pub learnable_anomaly: Vec<String>,
}

/// `"N N N N "` for 4 context tokens: the placeholders the context replaces.
fn placeholder(letter: &str, count: i64) -> String {
    (0..count).map(|_| format!("{letter} ")).collect()
}

pub fn prompt_strings(category: &Category, config: &PromptConfig) -> PromptStrings {
    let prefix = placeholder("N", config.n_ctx);
    let normal = vec![format!("{prefix}{}.", category.name); config.n_normal as usize];
    let manual_anomaly = if config.manual_anomaly {
        category
            .anomaly_states
            .iter()
            .flat_map(|state| {
                let text = format!("{prefix}{}.", state.replacen("{}", &category.name, 1));
                std::iter::repeat_n(text, config.n_normal as usize)
            })
            .collect()
    } else {
        Vec::new()
    };
    let learnable_anomaly = if config.learnable_anomaly {
        let text = format!("{prefix}{}{}.", placeholder("A", config.n_ctx_anomaly), category.name);
        vec![text; (config.n_normal * config.n_learnable_anomaly) as usize]
    } else {
        Vec::new()
    };
    PromptStrings { normal, manual_anomaly, learnable_anomaly }
}

/// Assembled prompt embeddings with the token ids that locate each row's EOT.
pub struct PromptBatch {
    pub embeddings: Tensor,
    pub tokens: Tensor,
}

pub struct PromptLearner {
    pub config: PromptConfig,
    pub strings: PromptStrings,
    pub vs: nn::VarStore,
    /// `[N, E_N, width]`, N(0, 0.02²) at init.
    pub normal_ctx: Tensor,
    /// `[L, E_A, width]`, N(0, 0.02²) at init.
    pub anomaly_ctx: Tensor,
    sos: Tensor,
    normal_suffix: Tensor,
    /// One suffix per manual state, `[M, 77 - 1 - E_N, width]`.
    manual_suffixes: Tensor,
    learnable_suffix: Tensor,
    tokens_normal: Tensor,
    tokens_manual: Tensor,
    tokens_learnable: Tensor,
}

fn tokenize(texts: &[String], context: i64, device: tch::Device) -> Tensor {
    let ids: Vec<i64> = Tokenizer::global().tokenize_batch(texts, context as usize).concat();
    Tensor::from_slice(&ids).view([texts.len() as i64, context]).to_device(device)
}

impl PromptLearner {
    /// Builds the prompts of `category` on `clip`'s text tower; context vectors are drawn from
    /// N(0, 0.02²) with tch's generator (seed it with `tch::manual_seed` for reproducibility).
    pub fn new(clip: &Clip, category: &Category, config: PromptConfig) -> Result<Self, PromptError> {
        if config.n_normal < 1
            || config.n_ctx < 1
            || (config.learnable_anomaly && (config.n_learnable_anomaly < 1 || config.n_ctx_anomaly < 1))
        {
            return Err(PromptError::Config(format!("prompt sizes must be positive: {config:?}")));
        }
        if !config.manual_anomaly && !config.learnable_anomaly {
            return Err(PromptError::Config(
                "at least one of the manual and learnable anomaly prompt sets is needed".into(),
            ));
        }
        let strings = prompt_strings(category, &config);
        let device = clip.device;
        let context = clip.text.context_length();
        let width = clip.text.width();
        let tokens_normal = tokenize(&strings.normal, context, device);
        let tokens_learnable = tokenize(&strings.learnable_anomaly, context, device);
        let tokens_manual = tokenize(&strings.manual_anomaly, context, device);
        let check_fits = |tokens: &Tensor, used: i64, what: &str| -> Result<(), PromptError> {
            if tokens.size()[0] > 0 && i64::try_from(tokens.argmax(-1, false).min()).unwrap_or(0) <= used {
                return Err(PromptError::Config(format!(
                    "{what} prompts are truncated: the context is longer than the text encoder"
                )));
            }
            Ok(())
        };
        check_fits(&tokens_normal, config.n_ctx, "normal")?;

        let embed = |tokens: &Tensor| -> Result<Tensor, PromptError> {
            if tokens.size()[0] == 0 {
                return Ok(Tensor::zeros([0, context, width], (Kind::Float, device)));
            }
            Ok(tch::no_grad(|| clip.text.token_embeddings(tokens))?.to_kind(Kind::Float))
        };
        let after_ctx = 1 + config.n_ctx;
        let normal_embeddings = embed(&tokens_normal.narrow(0, 0, 1))?;
        let sos = normal_embeddings.narrow(1, 0, 1);
        let normal_suffix = normal_embeddings.narrow(1, after_ctx, context - after_ctx);
        // One row per state: the manual strings repeat each state N times.
        let manual_suffixes = if config.manual_anomaly {
            let states = Tensor::arange_start_step(0, tokens_manual.size()[0], config.n_normal, (Kind::Int64, device));
            embed(&tokens_manual.index_select(0, &states))?.narrow(1, after_ctx, context - after_ctx)
        } else {
            Tensor::zeros([0, context - after_ctx, width], (Kind::Float, device))
        };
        let after_anomaly = after_ctx + config.n_ctx_anomaly;
        let learnable_suffix = if config.learnable_anomaly {
            embed(&tokens_learnable.narrow(0, 0, 1))?.narrow(1, after_anomaly, context - after_anomaly)
        } else {
            Tensor::zeros([0, context - after_anomaly, width], (Kind::Float, device))
        };

        let vs = nn::VarStore::new(device);
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let normal_ctx = vs.root().var("normal_ctx", &[config.n_normal, config.n_ctx, width], init);
        let anomaly_ctx =
            vs.root().var("anomaly_ctx", &[config.n_learnable_anomaly, config.n_ctx_anomaly, width], init);
        Ok(Self {
            config,
            strings,
            vs,
            normal_ctx,
            anomaly_ctx,
            sos,
            normal_suffix,
            manual_suffixes,
            learnable_suffix,
            tokens_normal,
            tokens_manual,
            tokens_learnable,
        })
    }

    /// Replaces the context vectors (parity tests inject the reference's initial values).
    pub fn set_context(&mut self, normal_ctx: &Tensor, anomaly_ctx: &Tensor) -> Result<(), PromptError> {
        for (what, var, value) in
            [("normal_ctx", &self.normal_ctx, normal_ctx), ("anomaly_ctx", &self.anomaly_ctx, anomaly_ctx)]
        {
            if var.size() != value.size() {
                return Err(PromptError::Config(format!(
                    "{what} has shape {:?}, expected {:?}",
                    value.size(),
                    var.size()
                )));
            }
        }
        tch::no_grad(|| {
            self.normal_ctx.shallow_clone().copy_(normal_ctx);
            self.anomaly_ctx.shallow_clone().copy_(anomaly_ctx);
        });
        Ok(())
    }

    /// `PromptLearner.forward()`: the three prompt sets, each `[P, 77, width]`.
    pub fn forward(&self) -> (PromptBatch, PromptBatch, PromptBatch) {
        let n = self.config.n_normal;
        let device = self.normal_ctx.device();
        let rows = |count: i64| Tensor::arange(count, (Kind::Int64, device));
        let sos = |count: i64| self.sos.expand([count, -1, -1], false);
        let normal =
            Tensor::cat(&[sos(n), self.normal_ctx.shallow_clone(), self.normal_suffix.expand([n, -1, -1], false)], 1);

        let m = self.tokens_manual.size()[0];
        let manual = Tensor::cat(
            &[
                sos(m),
                self.normal_ctx.index_select(0, &rows(m).remainder(n)),
                self.manual_suffixes.index_select(0, &rows(m).floor_divide_scalar(n)),
            ],
            1,
        );
        let l = self.tokens_learnable.size()[0];
        let learnable = Tensor::cat(
            &[
                sos(l),
                self.normal_ctx.index_select(0, &rows(l).remainder(n)),
                self.anomaly_ctx.index_select(0, &rows(l).remainder(self.config.n_learnable_anomaly)),
                self.learnable_suffix.expand([l, -1, -1], false),
            ],
            1,
        );
        (
            PromptBatch { embeddings: normal, tokens: self.tokens_normal.shallow_clone() },
            PromptBatch { embeddings: manual, tokens: self.tokens_manual.shallow_clone() },
            PromptBatch { embeddings: learnable, tokens: self.tokens_learnable.shallow_clone() },
        )
    }

    pub fn tokens(&self) -> (&Tensor, &Tensor, &Tensor) {
        (&self.tokens_normal, &self.tokens_manual, &self.tokens_learnable)
    }
}

/// Raw (un-normalised) text features of the three prompt sets.
pub struct PromptFeatures {
    pub normal: Tensor,
    pub manual_anomaly: Tensor,
    pub learnable_anomaly: Tensor,
}

impl PromptFeatures {
    /// Encodes all prompts in one text-tower batch (one pass instead of three).
    pub fn encode(clip: &Clip, learner: &PromptLearner) -> Result<Self, PromptError> {
        let (normal, manual, learnable) = learner.forward();
        let sizes = [normal.tokens.size()[0], manual.tokens.size()[0], learnable.tokens.size()[0]];
        let embeddings = Tensor::cat(&[normal.embeddings, manual.embeddings, learnable.embeddings], 0);
        let tokens = Tensor::cat(&[normal.tokens, manual.tokens, learnable.tokens], 0);
        let features = clip.text.encode_text_embeddings(&embeddings, &tokens)?.to_kind(Kind::Float);
        let parts = features.split_with_sizes(sizes, 0);
        let mut parts = parts.into_iter();
        Ok(Self {
            normal: parts.next().unwrap(),
            manual_anomaly: parts.next().unwrap(),
            learnable_anomaly: parts.next().unwrap(),
        })
    }

    /// All anomaly features, MAP then LAP: `Fa` of reference §5.
    pub fn anomaly(&self) -> Tensor {
        Tensor::cat(&[&self.manual_anomaly, &self.learnable_anomaly], 0)
    }

    /// The text prototypes of reference §3.6: `l2norm(stack[mean(Fn), mean(Fa)])`, `[2, E]`,
    /// ordered `[normal, anomaly]`. Means are of un-normalised features.
    pub fn prototypes(&self) -> Tensor {
        let normal = self.normal.mean_dim(0, false, Kind::Float);
        let anomaly = self.anomaly().mean_dim(0, false, Kind::Float);
        crate::clip::l2_normalize(&Tensor::stack(&[normal, anomaly], 0))
    }
}
