//! Anomaly maps at the evaluation size: bilinear up-sampling and scipy's Gaussian filter
//! (reference `promptad-official-behaviour.md` §7.3–§7.4).

use tch::{Kind, Tensor};

/// `F.interpolate(x, size, mode='bilinear', align_corners=False)` of `[B, g, g]` grids to
/// `[B, size, size]`.
pub fn upsample_bilinear(grid: &Tensor, size: i64) -> Tensor {
    grid.unsqueeze(1).to_kind(Kind::Float).upsample_bilinear2d([size, size], false, None, None).squeeze_dim(1)
}

/// The anomaly map of patch-level evidence `[B, g, g]`: up-sampled to `[B, size, size]`, then
/// smoothed (§7.4). A deterministic function of the grid, which is why compact maps store the grid.
///
/// Both steps are linear and separable, so the map is `S · grid · Sᵀ` with the `[size, g]`
/// operator `S = G · U` ([`map_operator`]): two small matrix products per image in fp64 instead of
/// a 400² up-sampling and two 33-tap convolutions (the same numbers up to fp64 rounding; see the
/// tests against [`upsample_bilinear`] + the direct `gaussian_filter`, kept as their reference).
pub fn smooth_map(grid: &Tensor, size: i64, sigma: f64) -> Tensor {
    let (_, g, g2) = grid.size3().expect("grids are [B, g, g]");
    assert_eq!(g, g2, "grids are square");
    let s = map_operator(g, size, sigma, grid.device());
    s.matmul(&grid.to_kind(Kind::Double)).matmul(&s.tr()).to_kind(Kind::Float)
}

/// `U`, `[size, g]`: `F.interpolate(mode='bilinear', align_corners=False)` along one axis as a
/// matrix. The weights are computed in fp32 as PyTorch's CPU and CUDA kernels compute them
/// (source index `(i + ½)·g/size − ½`, clamped at 0).
fn upsample_operator(g: i64, size: i64) -> Vec<f64> {
    let scale = g as f32 / size as f32;
    let mut u = vec![0f64; (size * g) as usize];
    for i in 0..size {
        let source = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (source as i64).min(g - 1);
        let i1 = (i0 + 1).min(g - 1);
        let l1 = source - i0 as f32;
        let l0 = 1.0 - l1;
        u[(i * g + i0) as usize] += l0 as f64;
        u[(i * g + i1) as usize] += l1 as f64;
    }
    u
}

/// `G`, `[n, n]`: scipy's 1-D `gaussian_filter(sigma, truncate=4, mode='reflect')` as a matrix,
/// the half-sample-symmetric padding folded into the weights.
fn gaussian_operator(n: i64, sigma: f64) -> Vec<f64> {
    let kernel = gaussian_kernel(sigma);
    let r = (kernel.len() / 2) as i64;
    let mut g = vec![0f64; (n * n) as usize];
    for i in 0..n {
        for (k, w) in kernel.iter().enumerate() {
            let mut j = i + k as i64 - r;
            // Reflect until inside (once for r < n, the maps' case).
            while j < 0 || j >= n {
                j = if j < 0 { -j - 1 } else { 2 * n - j - 1 };
            }
            g[(i * n + j) as usize] += w;
        }
    }
    g
}

/// `S = G · U`, `[size, g]` fp64 on `device`: the grid-to-map operator of [`smooth_map`].
pub fn map_operator(g: i64, size: i64, sigma: f64, device: tch::Device) -> Tensor {
    let u = Tensor::from_slice(&upsample_operator(g, size)).view([size, g]);
    let gauss = Tensor::from_slice(&gaussian_operator(size, sigma)).view([size, size]);
    gauss.matmul(&u).to_device(device)
}

/// Why a stored grid cannot be turned back into its map.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RebuildError {
    #[error("a stored grid of {len} values is not {side}×{side}")]
    GridShape { len: usize, side: i64 },
    #[error("a {size}×{size} map is too small for a Gaussian of σ = {sigma} (radius {radius})")]
    MapSize { size: i64, sigma: f64, radius: i64 },
}

/// The stored (u16) map of one image rebuilt on the CPU from its stored grid (`side²` values,
/// row-major): what `--maps compact` leaves out, recomputed by the scoring code itself.
pub fn rebuild_quantized(grid: &[f32], side: i64, size: i64, sigma: f64) -> Result<Vec<u16>, RebuildError> {
    if side <= 0 || grid.len() as i64 != side * side {
        return Err(RebuildError::GridShape { len: grid.len(), side });
    }
    let radius = (gaussian_kernel(sigma).len() / 2) as i64;
    // Written so that a NaN sigma fails too.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    let bad_sigma = !(sigma > 0.0);
    if bad_sigma || size <= radius {
        return Err(RebuildError::MapSize { size, sigma, radius });
    }
    let grid = Tensor::from_slice(grid).view([1, side, side]);
    let map: Vec<f32> = Vec::try_from(smooth_map(&grid, size, sigma).flatten(0, -1)).expect("a CPU fp32 map");
    Ok(map.into_iter().map(|v| crate::metrics::quantize::quantize(v as f64)).collect())
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
#[cfg(test)]
fn pad_symmetric_last(x: &Tensor, r: i64) -> Tensor {
    let n = *x.size().last().expect("at least 1-D");
    let left = x.narrow(-1, 0, r).flip([-1]);
    let right = x.narrow(-1, n - r, r).flip([-1]);
    Tensor::cat(&[left, x.shallow_clone(), right], -1)
}

/// `scipy.ndimage.gaussian_filter(map, sigma)` of each `[H, W]` map in `[B, H, W]`: separable, in
/// fp64 like scipy's accumulation, then back to fp32. The maps must be wider than the kernel
/// radius (16 for σ = 4). The reference [`smooth_map`] is tested against (the scoring path
/// computes the same map as one operator).
#[cfg(test)]
fn gaussian_filter(maps: &Tensor, sigma: f64) -> Tensor {
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
    fn the_operator_is_upsampling_then_the_gaussian() {
        // Random grids of the two backbones' sides, at the reference map size and at small ones.
        for (g, size) in [(15, 400), (14, 224), (15, 40), (7, 33)] {
            let grid = Tensor::rand([3, g, g], (Kind::Float, Device::Cpu));
            let direct = gaussian_filter(&upsample_bilinear(&grid, size), 4.0);
            let via_operator = smooth_map(&grid, size, 4.0);
            assert_eq!(via_operator.size(), [3, size, size]);
            let worst = (direct - via_operator).abs().max().double_value(&[]);
            assert!(worst < 1e-6, "g {g}, size {size}: max |Δ| {worst}");
        }
    }

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
