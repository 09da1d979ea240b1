//! The three training losses, exactly as `train_cls.py` / `train_seg.py` compute them
//! (reference `promptad-official-behaviour.md` §5). `t` is the *raw* stored logit scale (§9.4).

use tch::{Kind, Tensor};

use crate::clip::l2_normalize;

/// Normal prototype `wn = l2norm(mean Fn)` and anomaly prototype `wa = l2norm(mean Fa)`, `[1, E]`.
pub fn prototypes(normal: &Tensor, anomaly: &Tensor) -> (Tensor, Tensor) {
    let wn = l2_normalize(&normal.mean_dim(0, true, Kind::Float));
    let wa = l2_normalize(&anomaly.mean_dim(0, true, Kind::Float));
    (wn, wa)
}

/// Contrastive loss: cross-entropy of `t · [z·wn, z·Fa_n]` towards class 0 (normal), averaged
/// over every feature vector. `features` is `[B, E]` (image level, global features) or
/// `[B, P, E]` (pixel level, patch tokens); `anomaly` holds the raw features of every anomaly
/// prompt, normalised here one by one.
pub fn contrastive_loss(features: &Tensor, wn: &Tensor, anomaly: &Tensor, t: f64) -> Tensor {
    let negatives = l2_normalize(anomaly);
    let logits = Tensor::cat(&[features.matmul(&wn.tr()), features.matmul(&negatives.tr())], -1) * t;
    logits.log_softmax(-1, Kind::Float).select(-1, 0).neg().mean(Kind::Float)
}

/// Explicit anomaly margin (EAM), `TripletLoss(margin)` on the squared L2 distances:
/// `relu(‖z − wn‖² − ‖z − wa‖² + margin)`. The official `TripletLoss` sums over `dim = 1`; for a
/// `[B, E]` anchor that is the channel axis (one hinge per image), for a `[B, P, E]` anchor it is the
/// *token* axis, giving one hinge per (image, channel) over token-summed differences. Both are
/// reproduced as the code computes them, then averaged.
pub fn eam_loss(features: &Tensor, wn: &Tensor, wa: &Tensor, margin: f64) -> Tensor {
    let to_normal = (features - wn).square().sum_dim_intlist(1, false, Kind::Float);
    let to_anomaly = (features - wa).square().sum_dim_intlist(1, false, Kind::Float);
    (to_normal - to_anomaly + margin).relu().mean(Kind::Float)
}

/// Alignment of manual and learnable anomaly prompts: `‖mean l2norm(Fm) − mean l2norm(Fl)‖²`.
pub fn alignment_loss(manual: &Tensor, learnable: &Tensor) -> Tensor {
    let m = l2_normalize(manual).mean_dim(0, false, Kind::Float);
    let l = l2_normalize(learnable).mean_dim(0, false, Kind::Float);
    (m - l).square().sum(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn unit(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        l2_normalize(&Tensor::from_slice(&flat).view([rows.len() as i64, 2]))
    }

    #[test]
    fn image_eam_is_the_hinge_on_cosines_for_unit_vectors() {
        // Reference §5: for unit vectors, relu(‖z−wn‖² − ‖z−wa‖²) = relu(2 z·wa − 2 z·wn).
        let z = unit(&[[1.0, 0.2], [0.1, 1.0], [-1.0, 0.3]]);
        let wn = unit(&[[1.0, 0.0]]);
        let wa = unit(&[[0.0, 1.0]]);
        let got = eam_loss(&z, &wn, &wa, 0.0).double_value(&[]);
        let want = ((z.matmul(&wa.tr()) - z.matmul(&wn.tr())) * 2.0).relu().mean(Kind::Float).double_value(&[]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!(got > 0.0);
    }

    #[test]
    fn pixel_eam_sums_over_tokens_before_the_hinge() {
        // Two tokens whose per-token hinges differ in sign: the token-summed form cancels them.
        let t = Tensor::from_slice(&[1f32, 0., 0., 1.]).view([1, 2, 2]);
        let wn = Tensor::from_slice(&[1f32, 0.]).view([1, 2]);
        let wa = Tensor::from_slice(&[0f32, 1.]).view([1, 2]);
        let token_summed = eam_loss(&t, &wn, &wa, 0.0).double_value(&[]);
        assert_eq!(token_summed, 0.0);
        let per_token = ((&t - &wn).square().sum_dim_intlist(-1, false, Kind::Float)
            - (&t - &wa).square().sum_dim_intlist(-1, false, Kind::Float))
        .relu()
        .mean(Kind::Float)
        .double_value(&[]);
        assert!(per_token > 0.0, "the test case must tell the two forms apart");
    }

    #[test]
    fn contrastive_loss_by_hand() {
        // One feature, one anomaly prompt: CE = -log(e^{t·a} / (e^{t·a} + e^{t·b})).
        let z = unit(&[[1.0, 0.0]]);
        let wn = unit(&[[0.6, 0.8]]);
        let anomaly = Tensor::from_slice(&[0f32, 3.]).view([1, 2]);
        let t: f64 = 4.6052;
        let (a, b) = (0.6 * t, 0.0 * t);
        let want = -(a.exp() / (a.exp() + f64::exp(b))).ln();
        let got = contrastive_loss(&z, &wn, &anomaly, t).double_value(&[]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let _ = Device::Cpu;
    }

    #[test]
    fn alignment_by_hand() {
        let manual = Tensor::from_slice(&[2f32, 0., 0., 5.]).view([2, 2]); // normalised: (1,0), (0,1)
        let learnable = Tensor::from_slice(&[1f32, 0.]).view([1, 2]);
        // mean manual = (0.5, 0.5); learnable = (1, 0); squared distance 0.25 + 0.25.
        assert!((alignment_loss(&manual, &learnable).double_value(&[]) - 0.5).abs() < 1e-6);
    }
}
