//! Row-wise CPU kernels for the hand-written training pass ([`super::pass`]): the
//! LayerNorm forward that keeps what its backward needs, that backward (libtorch exports no
//! `native_layer_norm_backward` to tch), and GPT-2's tanh GELU with its derivative in one pass,
//! so that the backward pass evaluates no `tanh` (libtorch's GELU and its backward each call
//! SLEEF's 1-ulp `tanh`, ~7 % of a short-sequence step). Each loop is written to vectorise:
//! reductions keep [`LANES`] independent accumulators, and the exponential is branch-free.

use crate::simd::vectorised;
use crate::slices::{values, values_mut};
use std::borrow::Cow;
use tch::{Device, Kind, Tensor};

/// Lanes of a running sum or maximum: independent accumulators, so the loops vectorise.
pub(super) const LANES: usize = 16;

/// `e^x` for x ≤ 0, to about 2 ulp, branch-free and cast-free so that it vectorises:
/// x = k·ln 2 + r with |r| ≤ ln 2 / 2, e^r by its Taylor polynomial to degree 7, 2^k through the
/// exponent bits. Below −87 (where e^x leaves the normal floats) it returns e^−87 ≈ 1.6e-38, which
/// a softmax over a sum ≥ 1 cannot tell from 0.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that k · LN2_HI is exact.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 · 2²³ rounds to the nearest integer in the default rounding mode.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let shifted = x * LOG2E + ROUND;
    let k = shifted - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // `shifted`'s low mantissa bits hold k (two's complement) on top of ROUND's bits: 2^k from
    // them by integer adds and a shift, which vectorise (a float-to-int cast is saturating in
    // Rust and would be done one lane at a time).
    p * f32::from_bits(shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23)
}

/// `(1 + tanh(u), 1 − tanh(u))`, each without cancellation: with `e = e^(−2|u|)`, the one on
/// `u`'s side is `2 / (1 + e)` and the other `2e / (1 + e)`.
#[inline(always)]
fn one_plus_minus_tanh(u: f32) -> (f32, f32) {
    let e = exp(-2.0 * u.abs());
    let big = 2.0 / (1.0 + e);
    let small = big * e;
    if u < 0.0 {
        (small, big)
    } else {
        (big, small)
    }
}

/// `bias`'s values, one per column of `x` (its last dimension), or zeros where there is none:
/// for the kernels that add a product's bias on their own pass over it.
pub(super) fn column_bias<'a>(x: &Tensor, bias: Option<&'a Tensor>) -> Cow<'a, [f32]> {
    let cols = x.size().last().map_or(1, |&c| c as usize);
    let bias = bias.map_or_else(|| Cow::Owned(vec![0f32; cols]), |b| Cow::Borrowed(values(b)));
    assert_eq!(bias.len(), cols, "one bias per column");
    bias
}

/// What [`layer_norm`] keeps for [`layer_norm_backward`]: the normalised rows `(x − μ) / σ`
/// (N, C) and `1 / σ` per row (N).
pub(super) struct LayerNormSaved {
    xhat: Tensor,
    rstd: Vec<f32>,
}

/// LayerNorm over the last dimension of the contiguous (N, C) `x`, as `nn::LayerNorm` with `eps`:
/// `(x − μ) / √(σ² + eps) · w + b`, with the biased variance.
pub(super) fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> (Tensor, LayerNormSaved) {
    let (n, c) = x.size2().expect("an (N, C) matrix");
    let mut out = Tensor::empty([n, c], (Kind::Float, Device::Cpu));
    let mut xhat = Tensor::empty([n, c], (Kind::Float, Device::Cpu));
    let mut rstd = vec![0f32; n as usize];
    let (o, h) = (values_mut(&mut out), values_mut(&mut xhat));
    let (x, w, b) = (values(x), values(w), values(b));
    layer_norm_rows(x, w, b, eps, o, h, &mut rstd);
    (out, LayerNormSaved { xhat, rstd })
}

vectorised! {
    fn layer_norm_rows(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        eps: f32,
        out: &mut [f32],
        xhat: &mut [f32],
        rstd: &mut [f32],
    ) {
        let c = w.len();
        let rows = x.chunks_exact(c).zip(out.chunks_exact_mut(c)).zip(xhat.chunks_exact_mut(c));
        for (((x, out), xhat), rstd) in rows.zip(rstd) {
            let mean = sum(x) / c as f32;
            for (h, &x) in xhat.iter_mut().zip(x) {
                *h = x - mean;
            }
            let var = sum_of_products(xhat, xhat) / c as f32;
            *rstd = 1.0 / (var + eps).sqrt();
            for (((o, h), &w), &b) in out.iter_mut().zip(xhat.iter_mut()).zip(w).zip(b) {
                *h *= *rstd;
                *o = *h * w + b;
            }
        }
    }
}

/// LayerNorm's backward for the output gradient `dy` (N, C): adds the input's gradient into
/// `dx` (N, C) and writes the weight's and bias's gradients over `w_grad` and `b_grad` (C each).
/// Per row, with `g = dy · w`: `dx = (g − mean(g) − x̂ · mean(g · x̂)) / σ`.
pub(super) fn layer_norm_backward(
    dy: &Tensor,
    saved: &LayerNormSaved,
    w: &Tensor,
    dx: &mut Tensor,
    w_grad: &mut Tensor,
    b_grad: &mut Tensor,
) {
    let c = w.numel();
    let (mut dw, mut db) = (vec![0f32; c], vec![0f32; c]);
    let (dy, xhat, w) = (values(dy), values(&saved.xhat), values(w));
    let dx = values_mut(dx);
    layer_norm_backward_rows(dy, xhat, &saved.rstd, w, dx, &mut dw, &mut db);
    values_mut(w_grad).copy_from_slice(&dw);
    values_mut(b_grad).copy_from_slice(&db);
}

vectorised! {
    fn layer_norm_backward_rows(
        dy: &[f32],
        xhat: &[f32],
        rstd: &[f32],
        w: &[f32],
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let c = w.len();
        let mut g = vec![0f32; c];
        let rows = dy.chunks_exact(c).zip(xhat.chunks_exact(c)).zip(dx.chunks_exact_mut(c));
        for (((dy, xhat), dx), &rstd) in rows.zip(rstd) {
            for ((((g, &dy), &h), &w), (dw, db)) in
                g.iter_mut().zip(dy).zip(xhat).zip(w).zip(dw.iter_mut().zip(db.iter_mut()))
            {
                *g = dy * w;
                *dw += dy * h;
                *db += dy;
            }
            let mean_g = sum(&g) / c as f32;
            let mean_gh = sum_of_products(&g, xhat) / c as f32;
            for ((dx, &g), &h) in dx.iter_mut().zip(&g).zip(xhat) {
                *dx += (g - mean_g - h * mean_gh) * rstd;
            }
        }
    }
}

#[inline(always)]
pub(super) fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l += x;
        }
    }
    tail + total(lanes)
}

#[inline(always)]
pub(super) fn sum_of_products(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(a, b)| a * b).sum();
    for (ca, cb) in ca.zip(cb) {
        for ((l, &a), &b) in lanes.iter_mut().zip(ca).zip(cb) {
            *l += a * b;
        }
    }
    tail + total(lanes)
}

/// The lanes combined by `op` as a tree, halving the lanes at each level: four dependent
/// vector operations instead of fifteen scalar ones one after another (a row's reductions are
/// on its critical path, and for short rows they were most of its time).
#[inline(always)]
pub(super) fn reduce(mut lanes: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut half = LANES;
    while half > 1 {
        half /= 2;
        for i in 0..half {
            lanes[i] = op(lanes[i], lanes[i + half]);
        }
    }
    lanes[0]
}

/// The sum of the lanes, as a tree ([`reduce`]).
#[inline(always)]
pub(super) fn total(lanes: [f32; LANES]) -> f32 {
    reduce(lanes, |a, b| a + b)
}

/// The largest of `x`, −∞ for none.
#[inline(always)]
pub(super) fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = l.max(x);
        }
    }
    tail.max(reduce(lanes, f32::max))
}

/// √(2/π) and the cubic's coefficient of GPT-2's GELU (Hendrycks & Gimpel 2016, eq. in §2).
const GELU_BETA: f32 = 0.797_884_6;
const GELU_KAPPA: f32 = 0.044_715;

/// GELU with the tanh approximation, `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`, of
/// a contiguous f32 CPU tensor plus `bias` along its last dimension, if any, and its derivative
/// at each element (for the backward pass to multiply by), both from one `tanh` per element.
pub(super) fn gelu_with_derivative(x: &Tensor, bias: Option<&Tensor>) -> (Tensor, Tensor) {
    let mut y = Tensor::empty(x.size(), (Kind::Float, Device::Cpu));
    let mut d = Tensor::empty(x.size(), (Kind::Float, Device::Cpu));
    let bias = column_bias(x, bias);
    let (xs, ys, ds) = (values(x), values_mut(&mut y), values_mut(&mut d));
    gelu_rows(xs, &bias, ys, ds);
    (y, d)
}

vectorised! {
    /// [`gelu_with_derivative`] on rows of `bias.len()` values in slices.
    pub(super) fn gelu_rows(x: &[f32], bias: &[f32], y: &mut [f32], d: &mut [f32]) {
        let c = bias.len().max(1);
        let rows = x.chunks_exact(c).zip(y.chunks_exact_mut(c)).zip(d.chunks_exact_mut(c));
        for ((x, y), d) in rows {
            for (((&x, &b), y), d) in x.iter().zip(bias).zip(y).zip(d) {
                let x = x + b;
                let x2 = x * x;
                let (plus, minus) = one_plus_minus_tanh(GELU_BETA * (x + GELU_KAPPA * x2 * x));
                let half_x = 0.5 * x;
                *y = half_x * plus;
                *d = 0.5 * plus
                    + half_x * (plus * minus) * GELU_BETA * (1.0 + 3.0 * GELU_KAPPA * x2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (ours, exact) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - exact) / exact).abs());
        }
        // f32 has 2^-23 ≈ 1.2e-7 relative spacing.
        assert!(worst < 3.0 * 1.2e-7, "relative error up to {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 2e-38);
    }

    #[test]
    fn one_plus_minus_tanh_is_within_4e7_relative_of_libm() {
        let mut worst = 0f64;
        for u in (-100_000..=100_000).map(|i| i as f32 * 1e-4) {
            let (plus, minus) = one_plus_minus_tanh(u);
            let t = (u as f64).tanh();
            for (ours, exact) in [(plus as f64, 1.0 + t), (minus as f64, 1.0 - t)] {
                worst = worst.max(((ours - exact) / exact).abs());
            }
        }
        assert!(worst < 4e-7, "relative error up to {worst}");
        assert_eq!(one_plus_minus_tanh(0.0), (1.0, 1.0));
        assert_eq!(one_plus_minus_tanh(100.0).0, 2.0);
        assert_eq!(one_plus_minus_tanh(-100.0).1, 2.0);
    }

    /// Values and gradients against libtorch's LayerNorm and GELU under autograd, on rows longer
    /// than a lane multiple.
    #[test]
    fn layer_norm_and_gelu_match_libtorch() {
        let opts = (Kind::Float, Device::Cpu);
        let (n, c) = (5, 37);
        let x = (Tensor::randn([n, c], opts) * 3.0 + 1.0).set_requires_grad(true);
        let w = Tensor::randn([c], opts).set_requires_grad(true);
        let b = Tensor::randn([c], opts).set_requires_grad(true);
        let dy = Tensor::randn([n, c], opts);
        let expected = x.layer_norm([c], Some(&w), Some(&b), 1e-5, false);
        let loss = (&expected * &dy).sum(Kind::Float);
        let grads = Tensor::run_backward(&[loss], &[&x, &w, &b], false, false);
        let g = Tensor::linspace(-12.0, 12.0, 4001, opts).set_requires_grad(true);
        let expected_gelu = g.gelu("tanh");
        let gelu_grad =
            Tensor::run_backward(&[expected_gelu.sum(Kind::Float)], &[&g], false, false);

        let _guard = tch::no_grad_guard();
        let (out, saved) = layer_norm(&x.detach(), &w, &b, 1e-5);
        assert!(out.allclose(&expected, 1e-5, 1e-5, false), "LayerNorm values");
        let mut dx = Tensor::ones([n, c], opts); // added to
        let (mut dw, mut db) = (Tensor::full([c], 7.0, opts), Tensor::full([c], 7.0, opts));
        layer_norm_backward(&dy, &saved, &w, &mut dx, &mut dw, &mut db);
        assert!((dx - 1.0).allclose(&grads[0], 1e-4, 1e-5, false), "input gradient");
        assert!(dw.allclose(&grads[1], 1e-4, 1e-5, false), "weight gradient, written over 7s");
        assert!(db.allclose(&grads[2], 1e-4, 1e-5, false), "bias gradient, written over 7s");

        let (y, d) = gelu_with_derivative(&g.detach(), None);
        assert!(y.allclose(&expected_gelu, 1e-6, 1e-6, false), "GELU values");
        // With a bias per column, added first.
        let rows = Tensor::randn([6, 40], opts) * 3.0;
        let bias = Tensor::randn([40], opts);
        let (biased, _) = gelu_with_derivative(&rows, Some(&bias));
        let expected_biased = (&rows + &bias).gelu("tanh");
        assert!(biased.allclose(&expected_biased, 1e-6, 1e-6, false), "GELU of x + bias");
        // libtorch's f32 `tanh` puts 1 + tanh in steps of 6e-8 near −1, which the derivative
        // multiplies by ~9 around x = −5; ours computes 1 ± tanh without that cancellation.
        assert!(d.allclose(&gelu_grad[0], 1e-5, 2e-6, false), "GELU derivative");
    }
}
