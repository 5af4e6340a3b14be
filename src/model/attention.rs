//! Causal self-attention with dropout for the hand-written training pass on the CPU
//! ([`super::gpt`]'s `by_hand`), forward and backward, from the (N, 3C) output of `c_attn` to the
//! (N, C) merged heads and back.
//!
//! Head by head ([`super::blas`]): q, k and v of one head are read where they lie in the (N, 3C)
//! rows, its (T, T) scores are computed, turned into weights by the softmax kernel and used while
//! they are in the core's cache, and its output is written into its columns of the (N, C)
//! result. Batched through libtorch instead, every stage is one operation over all B·nh heads:
//! q, k and v are copied into heads, the 4 MB of scores (tiny preset) go through memory between
//! each stage, and the output is copied back. With one rank per core, that traffic is what the
//! ranks share and slow each other on. The batched path remains where libtorch has no `sgemm_`.

use super::blas::{self, Matrix};
use super::dropout::MaskStream;
use super::kernels::{values, values_mut};
use super::softmax::{
    backward_rows, causal_softmax_dropout, causal_softmax_dropout_backward, forward_rows,
};
use tch::{Device, Kind, Tensor};

/// The shape of the attention: B sequences of T positions, nh heads of hs channels.
#[derive(Clone, Copy)]
pub(super) struct Heads {
    pub b: i64,
    pub t: i64,
    pub nh: i64,
    pub hs: i64,
}

impl Heads {
    fn scale(&self) -> f32 {
        1.0 / (self.hs as f32).sqrt()
    }
}

/// What the forward keeps for the backward.
pub(super) struct Saved {
    /// (B·nh, T, T): the weights, and after dropout (none without).
    weights: Tensor,
    dropped: Option<Tensor>,
    /// Batched only: q, k and v split into heads, (B·nh, T, hs) each.
    heads: Option<[Tensor; 3]>,
}

/// `softmax(q·kᵀ/√hs + causal) · v` with dropout `p` on the weights, for the (N, 3C) rows `qkv`
/// (q, k, v side by side, heads within each); returns the heads' outputs merged, (N, C).
pub(super) fn forward(qkv: &Tensor, heads: Heads, p: f64) -> (Tensor, Saved) {
    let stream = MaskStream::for_dropout(p);
    if blas::available() {
        forward_by_head(qkv, heads, stream)
    } else {
        forward_batched(qkv, heads, stream)
    }
}

/// The backward of [`forward`] for the gradient `d_y` (N, C) of its output: the gradient of
/// `qkv`, (N, 3C).
pub(super) fn backward(saved: &Saved, qkv: &Tensor, heads: Heads, d_y: &Tensor) -> Tensor {
    match &saved.heads {
        None => backward_by_head(saved, qkv, heads, d_y),
        Some(split) => backward_batched(saved, split, heads, d_y),
    }
}

/// Offsets into the (N, 3C) rows and (N, C) rows, and the head's index, for head `h` of `b`.
fn offsets(heads: Heads, b: i64, h: i64) -> (usize, usize, usize) {
    let Heads { t, nh, hs, .. } = heads;
    let c = nh * hs;
    ((b * t * 3 * c + h * hs) as usize, (b * t * c + h * hs) as usize, (b * nh + h) as usize)
}

fn forward_by_head(qkv: &Tensor, heads: Heads, stream: Option<MaskStream>) -> (Tensor, Saved) {
    let Heads { b, t, nh, hs } = heads;
    let (n, c) = (b * t, nh * hs);
    let opts = (Kind::Float, Device::Cpu);
    let mut weights = Tensor::empty([b * nh, t, t], opts);
    let mut dropped = stream.map(|_| weights.empty_like());
    let mut y = Tensor::empty([n, c], opts);
    let qkv = values(qkv);
    let (tt, t, hs, c) = ((t * t) as usize, t as usize, hs as usize, c as usize);
    let (ws, ys) = (values_mut(&mut weights), values_mut(&mut y));
    let mut ds = dropped.as_mut().map(values_mut);
    for (bi, h) in (0..b).flat_map(|bi| (0..nh).map(move |h| (bi, h))) {
        let (at, out, i) = offsets(heads, bi, h);
        let (q, k, v) = (&qkv[at..], &qkv[at + c..], &qkv[at + 2 * c..]);
        let w = &mut ws[i * tt..(i + 1) * tt];
        blas::gemm(t, t, hs, Matrix::new(q, 3 * c), Matrix::new(k, 3 * c).t(), w, t);
        let d = ds.as_mut().map(|d| &mut d[i * tt..(i + 1) * tt]);
        forward_rows(w, d, t, heads.scale(), stream, i * tt);
        let d = ds.as_ref().map_or(&*w, |d| &d[i * tt..(i + 1) * tt]);
        blas::gemm(t, hs, t, Matrix::new(d, t), Matrix::new(v, 3 * c), &mut ys[out..], c);
    }
    (y, Saved { weights, dropped, heads: None })
}

fn backward_by_head(saved: &Saved, qkv: &Tensor, heads: Heads, d_y: &Tensor) -> Tensor {
    let Heads { b, t, nh, hs } = heads;
    let (n, c) = (b * t, nh * hs);
    let mut d_qkv = Tensor::empty([n, 3 * c], (Kind::Float, Device::Cpu));
    let (qkv, d_y, dq) = (values(qkv), values(d_y), values_mut(&mut d_qkv));
    let weights = values(&saved.weights);
    let dropped = saved.dropped.as_ref().map_or(weights, values);
    let (tt, t, hs, c) = ((t * t) as usize, t as usize, hs as usize, c as usize);
    let mut scores = vec![0f32; tt];
    for (bi, h) in (0..b).flat_map(|bi| (0..nh).map(move |h| (bi, h))) {
        let (at, out, i) = offsets(heads, bi, h);
        let (q, k, v) = (&qkv[at..], &qkv[at + c..], &qkv[at + 2 * c..]);
        let (w, d) = (&weights[i * tt..(i + 1) * tt], &dropped[i * tt..(i + 1) * tt]);
        let dy = Matrix::new(&d_y[out..], c);
        // d v = droppedᵀ · d y
        blas::gemm(t, hs, t, Matrix::new(d, t).t(), dy, &mut dq[at + 2 * c..], 3 * c);
        // d dropped = d y · vᵀ, then the scores' gradient in place
        blas::gemm(t, t, hs, dy, Matrix::new(v, 3 * c).t(), &mut scores, t);
        backward_rows(&mut scores, w, d, t, heads.scale());
        let ds = Matrix::new(&scores, t);
        // d q = d scores · k, d k = d scoresᵀ · q
        blas::gemm(t, hs, t, ds, Matrix::new(k, 3 * c), &mut dq[at..], 3 * c);
        blas::gemm(t, hs, t, ds.t(), Matrix::new(q, 3 * c), &mut dq[at + c..], 3 * c);
    }
    d_qkv
}

fn forward_batched(qkv: &Tensor, heads: Heads, stream: Option<MaskStream>) -> (Tensor, Saved) {
    let Heads { b, t, nh, hs } = heads;
    let (n, c) = (b * t, nh * hs);
    let split = qkv.view([b, t, 3, nh, hs]).permute([2, 0, 3, 1, 4]).contiguous(); // (3, B, nh, T, hs)
    let split = split.view([3, b * nh, t, hs]);
    let (q, k, v) = (split.get(0), split.get(1), split.get(2)); // (B·nh, T, hs)
    let mut weights = q.bmm(&k.transpose(1, 2)); // (B·nh, T, T), the softmax once done
    let dropped = causal_softmax_dropout(&mut weights, heads.scale(), stream);
    let y = dropped.as_ref().unwrap_or(&weights).bmm(&v); // (B·nh, T, hs)
    let y = y.view([b, nh, t, hs]).permute([0, 2, 1, 3]).contiguous().view([n, c]);
    (y, Saved { weights, dropped, heads: Some([q, k, v]) })
}

fn backward_batched(saved: &Saved, split: &[Tensor; 3], heads: Heads, d_y: &Tensor) -> Tensor {
    let Heads { b, t, nh, hs } = heads;
    let (n, c) = (b * t, nh * hs);
    let [q, k, v] = split;
    let d_y = d_y.view([b, t, nh, hs]).permute([0, 2, 1, 3]).contiguous().view([b * nh, t, hs]);
    let d_heads = Tensor::empty([3, b * nh, t, hs], (Kind::Float, Device::Cpu));
    let dropped = saved.dropped.as_ref().unwrap_or(&saved.weights);
    let _ = dropped.transpose(1, 2).bmm_out(&d_heads.get(2), &d_y); // d v
    let mut d_scores = d_y.bmm(&v.transpose(1, 2)); // (B·nh, T, T), d dropped for now
    causal_softmax_dropout_backward(&mut d_scores, &saved.weights, dropped, heads.scale());
    let _ = d_scores.bmm_out(&d_heads.get(0), k); // d q
    let _ = d_scores.transpose(1, 2).bmm_out(&d_heads.get(1), q); // d k
    let d_qkv = d_heads.view([3, b, nh, t, hs]).permute([1, 3, 0, 2, 4]).contiguous(); // (B, T, 3, nh, hs)
    d_qkv.view([n, 3 * c])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Head by head and batched agree, forward and backward, with and without dropout (the
    /// same mask stream given to both).
    #[test]
    fn by_head_and_batched_agree() {
        if !blas::available() {
            eprintln!("no sgemm_ in this libtorch: only the batched path runs");
            return;
        }
        let _guard = tch::no_grad_guard();
        let heads = Heads { b: 3, t: 19, nh: 2, hs: 8 };
        let (n, c) = (heads.b * heads.t, heads.nh * heads.hs);
        let opts = (Kind::Float, Device::Cpu);
        let qkv = Tensor::randn([n, 3 * c], opts);
        let d_y = Tensor::randn([n, c], opts);
        for stream in [None, Some(MaskStream::new(99, 0.3))] {
            let (y1, s1) = forward_by_head(&qkv, heads, stream);
            let (y2, s2) = forward_batched(&qkv, heads, stream);
            let p = stream.is_some();
            assert!(y1.allclose(&y2, 1e-5, 1e-6, false), "outputs, dropout {p}");
            assert!(s1.weights.allclose(&s2.weights, 1e-5, 1e-7, false), "weights, dropout {p}");
            assert_eq!(s1.dropped.is_some(), p);
            if let (Some(d1), Some(d2)) = (&s1.dropped, &s2.dropped) {
                assert!(d1.eq(0.0).equal(&d2.eq(0.0)), "the same weights dropped");
                assert!(d1.allclose(d2, 1e-5, 1e-7, false), "dropped weights");
            }
            let d1 = backward(&s1, &qkv, heads, &d_y);
            let d2 = backward(&s2, &qkv, heads, &d_y);
            assert!(d1.allclose(&d2, 1e-4, 1e-5, false), "gradients, dropout {p}");
        }
    }
}
