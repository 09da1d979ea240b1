//! Prompt-guided probabilities and their fusion with the visual distances (reference
//! `promptad-official-behaviour.md` §7.2–§7.4).

use tch::{Kind, Tensor};

/// `softmax(t · f @ TFᵀ)[..., 1]`: the anomaly probability of normalised features `f` (`[.., E]`)
/// against the prototypes `[normal, anomaly]` (`[2, E]`). `t` is the raw logit scale (§9.4).
pub fn anomaly_probability(features: &Tensor, prototypes: &Tensor, t: f64) -> Tensor {
    (features.matmul(&prototypes.tr()) * t).softmax(-1, Kind::Float).select(-1, 1)
}

/// `1 / (1/a + 1/b)`: half the harmonic mean, PromptAD's fusion of textual and visual scores
/// (§9.15). A zero on either side gives 0, as in the official code.
pub fn harmonic_fusion(a: &Tensor, b: &Tensor) -> Tensor {
    (a.reciprocal() + b.reciprocal()).reciprocal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        let a = Tensor::from_slice(&[0.5f32, 0.2, 0.0]);
        let b = Tensor::from_slice(&[0.5f32, 0.6, 0.7]);
        let got: Vec<f32> = Vec::try_from(harmonic_fusion(&a, &b)).unwrap();
        assert_eq!(got, vec![0.25, 1.0 / (5.0 + 1.0 / 0.6), 0.0]);

        let protos = Tensor::from_slice(&[1f32, 0., 0., 1.]).view([2, 2]);
        let f = Tensor::from_slice(&[0.6f32, 0.8]).view([1, 2]);
        let t = 4.6;
        let want = 1.0 / (1.0 + f64::exp(t * (0.6 - 0.8)));
        assert!((anomaly_probability(&f, &protos, t).double_value(&[0]) - want).abs() < 1e-6);
    }
}
