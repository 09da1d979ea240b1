//! Anomaly maps at the evaluation size: bilinear up-sampling and scipy's Gaussian filter
//! (reference `promptad-official-behaviour.md` §7.3–§7.4).

use tch::{Kind, Tensor};

/// `F.interpolate(x, size, mode='bilinear', align_corners=False)` of `[B, g, g]` grids to
/// `[B, size, size]`.
pub fn upsample_bilinear(grid: &Tensor, size: i64) -> Tensor {
    grid.unsqueeze(1).to_kind(Kind::Float).upsample_bilinear2d([size, size], false, None, None).squeeze_dim(1)
}

/// The 1-D kernel of `scipy.ndimage.gaussian_filter(sigma, truncate=4.0)`: radius
/// `int(truncate·σ + 0.5)` (16 taps each side for σ = 4), weights `exp(−x²/2σ²)` summing to 1.
pub fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let weights: Vec<f64> = (-radius..=radius).map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

/// Pads the last dimension by `r` with scipy's `mode='reflect'` (half-sample symmetric:
/// `d c b a | a b c d | d c b a`, the edge sample repeated), which torch's `reflect` is not.
fn pad_symmetric_last(x: &Tensor, r: i64) -> Tensor {
    let n = *x.size().last().expect("at least 1-D");
    let left = x.narrow(-1, 0, r).flip([-1]);
    let right = x.narrow(-1, n - r, r).flip([-1]);
    Tensor::cat(&[left, x.shallow_clone(), right], -1)
}

/// `scipy.ndimage.gaussian_filter(map, sigma)` of each `[H, W]` map in `[B, H, W]`: separable, in
/// fp64 like scipy's accumulation, then back to fp32. The maps must be wider than the kernel
/// radius (16 for σ = 4).
pub fn gaussian_filter(maps: &Tensor, sigma: f64) -> Tensor {
    let kernel = gaussian_kernel(sigma);
    let r = (kernel.len() / 2) as i64;
    let (_, h, w) = maps.size3().expect("maps are [B, H, W]");
    assert!(h > r && w > r, "maps of {h}×{w} are too small for a Gaussian of radius {r}");
    let k = Tensor::from_slice(&kernel).to_device(maps.device());
    let x = maps.to_kind(Kind::Double).unsqueeze(1); // [B, 1, H, W]
    let along_w = pad_symmetric_last(&x, r).conv2d(&k.view([1, 1, 1, -1]), None::<&Tensor>, [1], [0], [1], 1);
    let along_h = pad_symmetric_last(&along_w.transpose(2, 3), r).conv2d(
        &k.view([1, 1, 1, -1]),
        None::<&Tensor>,
        [1],
        [0],
        [1],
        1,
    );
    along_h.transpose(2, 3).squeeze_dim(1).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn kernel_is_scipys_33_taps() {
        let k = gaussian_kernel(4.0);
        assert_eq!(k.len(), 33);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((k[16] / k[0] - (256.0f64 / 32.0).exp()).abs() < 1e-6);
    }

    #[test]
    fn filter_keeps_constants_and_mass_and_reflects_at_edges() {
        let c = Tensor::full([1, 40, 40], 0.3, (Kind::Float, Device::Cpu));
        assert!((gaussian_filter(&c, 4.0) - 0.3).abs().max().double_value(&[]) < 1e-6);
        // An impulse far from the border keeps its mass; at the border the reflected mass stays
        // inside (symmetric padding), so the sum is preserved there too.
        for pos in [20, 0] {
            let x = Tensor::zeros([1, 40, 40], (Kind::Float, Device::Cpu));
            let _ = x.get(0).get(pos).get(20).fill_(1.0);
            let y = gaussian_filter(&x, 4.0);
            assert!((y.sum(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-5, "mass at row {pos}");
        }
    }
}
