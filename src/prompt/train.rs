//! Prompt training, as `train_cls.py` / `train_seg.py` run it (reference
//! `promptad-official-behaviour.md` §6): every shot in one batch, one SGD step per epoch, 100
//! epochs, SGD(lr 0.002, momentum 0.9, weight decay 5e-4) with cosine decay to 1e-5, visual
//! features computed once without gradients. The model after the last step is the model: there
//! is no selection on test data (DESIGN §5).

use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor};

use super::learner::{PromptFeatures, PromptLearner};
use super::loss::{alignment_loss, contrastive_loss, eam_loss, prototypes};
use super::PromptError;
use crate::clip::Clip;
use crate::stop::StopToken;

/// Which of PromptAD's two prompt sets is trained (two separate runs in the official code, §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// `train_cls.py`: N = 3, trained on the global feature `g`.
    Image,
    /// `train_seg.py`: N = 1, trained on the V-V patch tokens `T`.
    Pixel,
}

impl Head {
    pub const BOTH: [Head; 2] = [Head::Image, Head::Pixel];

    /// The head's name: the prefix of its tensors in an artifact (`image.prototypes`).
    pub fn name(self) -> &'static str {
        match self {
            Head::Image => "image",
            Head::Pixel => "pixel",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: usize,
    pub lr: f64,
    pub lr_min: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// λ on the alignment loss.
    pub lambda_align: f64,
    pub eam_margin: f64,
    /// The EAM loss term (ablation switch; official: true).
    pub eam: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            lr: 0.002,
            lr_min: 1e-5,
            momentum: 0.9,
            weight_decay: 5e-4,
            lambda_align: 0.001,
            eam_margin: 0.0,
            eam: true,
        }
    }
}

impl TrainConfig {
    /// `CosineAnnealingLR(T_max = steps, eta_min)`, stepped once per step: the rate of step `e`.
    pub fn lr_at(&self, step: usize) -> f64 {
        let progress = step as f64 / self.steps.max(1) as f64;
        self.lr_min + (self.lr - self.lr_min) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
    }
}

/// The loss terms of one step (all scalars).
pub struct Losses {
    pub contrastive: Tensor,
    pub eam: Tensor,
    pub align: Tensor,
    pub total: Tensor,
}

/// The losses of the current prompts on fixed, L2-normalised visual features: `[B, E]` for the
/// image head, `[B, P, E]` for the pixel head.
pub fn losses(
    clip: &Clip,
    learner: &PromptLearner,
    features: &Tensor,
    config: &TrainConfig,
) -> Result<Losses, PromptError> {
    let text = PromptFeatures::encode(clip, learner)?;
    let anomaly = text.anomaly();
    let (wn, wa) = prototypes(&text.normal, &anomaly);
    let t = clip.logit_scale_raw();
    let contrastive = contrastive_loss(features, &wn, &anomaly, t);
    let zero = || Tensor::zeros([], (Kind::Float, features.device()));
    let eam = if config.eam { eam_loss(features, &wn, &wa, config.eam_margin) } else { zero() };
    let align = if text.manual_anomaly.size()[0] > 0 && text.learnable_anomaly.size()[0] > 0 {
        alignment_loss(&text.manual_anomaly, &text.learnable_anomaly)
    } else {
        zero()
    };
    let total = &contrastive + &eam + &align * config.lambda_align;
    Ok(Losses { contrastive, eam, align, total })
}

/// What a training run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// Total loss before each step.
    pub losses: Vec<f64>,
    pub seconds: f64,
}

/// The optimiser state of one training run, stepped one SGD step at a time.
pub struct Trainer {
    optimizer: tch::nn::Optimizer,
    config: TrainConfig,
    step: usize,
}

impl Trainer {
    pub fn new(learner: &PromptLearner, config: &TrainConfig) -> Result<Self, PromptError> {
        let sgd = tch::nn::Sgd { momentum: config.momentum, dampening: 0.0, wd: config.weight_decay, nesterov: false };
        let optimizer =
            sgd.build(&learner.vs, config.lr).map_err(|e| PromptError::Config(format!("optimizer: {e}")))?;
        Ok(Self { optimizer, config: config.clone(), step: 0 })
    }

    /// One step at the scheduled rate; returns the total loss before the update.
    pub fn step(&mut self, clip: &Clip, learner: &PromptLearner, features: &Tensor) -> Result<f64, PromptError> {
        self.optimizer.set_lr(self.config.lr_at(self.step));
        let losses = losses(clip, learner, features, &self.config)?;
        let total = losses.total.double_value(&[]);
        if !total.is_finite() {
            return Err(PromptError::Diverged { step: self.step, loss: total });
        }
        self.optimizer.backward_step(&losses.total);
        self.step += 1;
        Ok(total)
    }
}

/// Runs `config.steps` SGD steps on the learner's context vectors. `on_step(step, total_loss)`
/// reports progress; `stop` is checked before every step (a stopped run returns
/// [`PromptError::Stopped`] and leaves the learner half-trained, for the caller to discard).
pub fn train(
    clip: &Clip,
    learner: &mut PromptLearner,
    features: &Tensor,
    config: &TrainConfig,
    stop: &StopToken,
    mut on_step: impl FnMut(usize, f64),
) -> Result<TrainReport, PromptError> {
    let started = std::time::Instant::now();
    let features = features.detach();
    let mut trainer = Trainer::new(learner, config)?;
    let mut history = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        stop.check()?;
        let total = trainer.step(clip, learner, &features)?;
        history.push(total);
        on_step(step, total);
    }
    Ok(TrainReport { losses: history, seconds: started.elapsed().as_secs_f64() })
}

/// The prototypes the trained prompts give (reference §3.6), `[2, E]`, `[normal, anomaly]`.
pub fn text_prototypes(clip: &Clip, learner: &PromptLearner) -> Result<Tensor, PromptError> {
    tch::no_grad(|| Ok(PromptFeatures::encode(clip, learner)?.prototypes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_matches_the_reference_formula() {
        // lr_e = 1e-5 + (0.002 - 1e-5)(1 + cos(π e / 100)) / 2 (reference §6).
        let c = TrainConfig::default();
        assert_eq!(c.lr_at(0), 0.002);
        assert!((c.lr_at(50) - (1e-5 + (0.002 - 1e-5) / 2.0)).abs() < 1e-15);
        assert!(
            (c.lr_at(99) - (1e-5 + (0.002 - 1e-5) * (1.0 + (std::f64::consts::PI * 0.99).cos()) / 2.0)).abs() < 1e-15
        );
    }
}
