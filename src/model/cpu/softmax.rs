//! Causal self-attention's softmax and dropout as one row-wise kernel, forward and backward, for
//! the hand-written training pass ([`super::pass`]).
//!
//! The attention weights are the largest tensors of a short model's step: B·heads·T² floats per
//! layer (4 MB for the tiny preset's 16 × 4 × 128²), far more than a core's L2. As separate
//! libtorch operations — mask added by `baddbmm`, softmax, dropout mask drawn, multiplied,
//! then in the backward mask multiplied, softmax backward, scaled — they stream those megabytes
//! through memory about twenty times per layer and step, and with one rank per core the ranks
//! compete for that bandwidth. Here each row of 128 floats is finished in L1: the forward reads
//! the raw products once and writes the weights and the dropped weights; the backward reads the
//! gradient, the weights and the dropped weights once and writes the scores' gradient in place.
//! - The causal mask is not a tensor: row `i` of each (T, T) matrix sees keys `0..=i`, and the
//!   kernel leaves the rest 0 without computing it.
//! - The dropout mask is drawn row by row as the stream of [`MaskStream`] (the same elements
//!   [`super::dropout::mask`] would have filled in for the whole tensor) and never stored: the
//!   backward needs only the dropped weights, since for `w' = w · m` and the gradient `d` of
//!   `w'`, softmax's backward `w · (g − Σ g·w)` with `g = d · m` is `d · w' − w · Σ d · w'`.

use super::dropout::MaskStream;
use super::kernels::{exp, max, sum_of_products, total, LANES};
use crate::simd::vectorised;
use crate::slices::{values, values_mut};
use tch::Tensor;

/// Over `scores`, the (R, T, T) products `q · kᵀ` of R heads, writes the causal attention
/// weights `softmax(scale · scores)` in place (row `i` over keys `0..=i`, zeros after) and
/// returns them after dropout with the mask `stream` (a new tensor), or none without one.
pub(super) fn causal_softmax_dropout(
    scores: &mut Tensor,
    scale: f32,
    stream: Option<MaskStream>,
) -> Option<Tensor> {
    let t = square_rows(scores);
    let mut dropped = stream.map(|_| scores.empty_like());
    let out = dropped.as_mut().map(values_mut);
    forward_rows(values_mut(scores), out, t, scale, stream, 0);
    dropped
}

/// The backward of [`causal_softmax_dropout`]: turns `d` (R, T, T), the gradient of the dropped
/// weights (of the weights if there was no dropout, and then `dropped` is `weights`), into that
/// of the scores, in place.
pub(super) fn causal_softmax_dropout_backward(
    d: &mut Tensor,
    weights: &Tensor,
    dropped: &Tensor,
    scale: f32,
) {
    let t = square_rows(d);
    assert!(weights.size() == d.size() && dropped.size() == d.size(), "three (R, T, T) tensors");
    backward_rows(values_mut(d), values(weights), values(dropped), t, scale);
}

/// T of an (R, T, T) tensor.
fn square_rows(x: &Tensor) -> usize {
    match x.size()[..] {
        [_, t, s] if t == s => t as usize,
        ref shape => panic!("causal attention over (R, T, T) scores, not {shape:?}"),
    }
}

vectorised! {
    /// [`causal_softmax_dropout`] on (T, T) matrices in slices, `first` the element of the mask
    /// stream where they start.
    pub(super) fn forward_rows(
        scores: &mut [f32],
        dropped: Option<&mut [f32]>,
        t: usize,
        scale: f32,
        stream: Option<MaskStream>,
        first: usize,
    ) {
        assert!(scale > 0.0, "the maximum is taken before scaling");
        // Each row is worked on in a copy padded to whole lanes with −∞ (whose e^x, at most
        // LANES · 1.6e-38, vanishes in a sum ≥ 1): rows of short batches are a few dozen keys,
        // and a ragged end done one element at a time (a scalar `exp` each) cost more than the
        // rest of the row.
        let mut buf = vec![0f32; t.next_multiple_of(LANES)];
        let mut mask = vec![0f32; t.next_multiple_of(LANES) + LANES];
        let mut dropped = dropped.map(|d| d.chunks_exact_mut(t));
        for (r, row) in scores.chunks_exact_mut(t).enumerate() {
            let seen = r % t + 1;
            let width = seen.next_multiple_of(LANES);
            let buf = &mut buf[..width];
            buf[..seen].copy_from_slice(&row[..seen]);
            buf[seen..].fill(f32::NEG_INFINITY);
            // softmax(scale · x) = exp(scale · (x − max x)) / Σ, for scale > 0.
            let top = max(buf);
            let mut lanes = [0f32; LANES];
            for chunk in buf.chunks_exact_mut(LANES) {
                for (l, x) in lanes.iter_mut().zip(chunk) {
                    *x = exp((*x - top) * scale);
                    *l += *x;
                }
            }
            let inverse = 1.0 / total(lanes);
            for (w, &e) in row.iter_mut().zip(&buf[..seen]) {
                *w = e * inverse;
            }
            row[seen..].fill(0.0);
            if let (Some(rows), Some(stream)) = (dropped.as_mut(), stream) {
                let out = rows.next().expect("as many rows as the scores");
                // Drawn from the even element at or before the row's first, in whole blocks.
                let start = first + r * t;
                let even = start - start % 2;
                let mask = &mut mask[..width + LANES];
                stream.fill_at(mask, even);
                let mask = &mask[start - even..][..seen];
                for ((o, &w), &m) in out.iter_mut().zip(&row[..seen]).zip(mask) {
                    *o = w * m;
                }
                out[seen..].fill(0.0);
            }
        }
    }
}

vectorised! {
    /// [`causal_softmax_dropout_backward`] on (T, T) matrices in slices.
    pub(super) fn backward_rows(d: &mut [f32], weights: &[f32], dropped: &[f32], t: usize, scale: f32) {
        let rows = d.chunks_exact_mut(t).zip(weights.chunks_exact(t)).zip(dropped.chunks_exact(t));
        for (r, ((d, w), dropped)) in rows.enumerate() {
            // Whole lanes, as in the forward: past `seen` the weights are 0, and so is `d` once
            // zeroed.
            let seen = r % t + 1;
            let width = seen.next_multiple_of(LANES).min(t);
            d[seen..].fill(0.0);
            let (d, w, dropped) = (&mut d[..width], &w[..width], &dropped[..width]);
            let total = sum_of_products(d, dropped);
            for ((d, &w), &dropped) in d.iter_mut().zip(w).zip(dropped) {
                *d = scale * (*d * dropped - w * total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    const OPTS: (Kind, Device) = (Kind::Float, Device::Cpu);

    /// (T, T), true above the diagonal: the keys a causal row does not see.
    fn future(t: i64) -> Tensor {
        Tensor::ones([t, t], OPTS).triu(1).to_kind(Kind::Bool)
    }

    /// Against libtorch under autograd with the same mask: the additive causal mask, `softmax`,
    /// times the mask, on rows longer and shorter than a lane multiple.
    #[test]
    fn matches_libtorch_forward_and_backward_with_and_without_dropout() {
        for (r, t, p) in [(3, 37, 0.0), (3, 37, 0.3), (2, 128, 0.1), (4, 5, 0.5)] {
            let scale = 0.37f32;
            let scores = (Tensor::randn([r, t, t], OPTS) * 4.0).set_requires_grad(true);
            let d = Tensor::randn([r, t, t], OPTS);
            let additive = Tensor::zeros([t, t], OPTS).masked_fill(&future(t), f64::NEG_INFINITY);
            let weights = (&scores * f64::from(scale) + additive).softmax(-1, Kind::Float);
            let stream = (p > 0.0).then(|| MaskStream::new(1234, p));
            let expected = match stream {
                Some(stream) => {
                    let mut mask = vec![0f32; (r * t * t) as usize];
                    stream.fill_at(&mut mask, 0);
                    &weights * Tensor::from_slice(&mask).view([r, t, t])
                }
                None => weights.shallow_clone(),
            };
            let loss = (&expected * &d).sum(Kind::Float);
            let grad = Tensor::run_backward(&[loss], &[&scores], false, false);

            let _guard = tch::no_grad_guard();
            let mut ours = scores.detach().copy();
            let dropped = causal_softmax_dropout(&mut ours, scale, stream);
            assert!(ours.allclose(&weights, 1e-6, 1e-6, false), "weights, t = {t}, p = {p}");
            assert_eq!(dropped.is_some(), p > 0.0);
            let dropped = dropped.unwrap_or_else(|| ours.shallow_clone());
            assert!(dropped.allclose(&expected, 1e-6, 1e-6, false), "dropped, t = {t}, p = {p}");
            let mut ours_grad = d.copy();
            causal_softmax_dropout_backward(&mut ours_grad, &ours, &dropped, scale);
            let close = ours_grad.allclose(&grad[0], 1e-5, 1e-6, false);
            assert!(close, "the scores' gradient, t = {t}, p = {p}");
        }
    }

    /// The kernels never read what lies above the diagonal, and write zeros there.
    #[test]
    fn the_future_is_zero_whatever_it_held() {
        let (r, t) = (2, 20);
        let nan_future = Tensor::ones([r, t, t], OPTS).masked_fill(&future(t), f64::NAN);
        let mut weights = nan_future.copy();
        let stream = Some(MaskStream::new(5, 0.5));
        let dropped = causal_softmax_dropout(&mut weights, 1.0, stream).expect("dropout");
        let mut d = nan_future.copy();
        causal_softmax_dropout_backward(&mut d, &weights, &dropped, 1.0);
        for x in [&weights, &dropped, &d] {
            assert_eq!(x.isnan().any().int64_value(&[]), 0, "no NaN read");
            assert_eq!(x.masked_select(&future(t)).abs().max().double_value(&[]), 0.0);
        }
        // Equal scores: row i is uniform over its i + 1 keys.
        let row = weights.get(1).get(3);
        assert!(row.narrow(0, 0, 4).allclose(&Tensor::full([4], 0.25, OPTS), 1e-6, 0.0, false));
    }
}
