//! Causal self-attention with dropout for the hand-written training pass on the CPU
//! ([`super::pass`]), forward and backward, from the (N, 3C) output of `c_attn` to the
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
use super::blocked::{block_rows, DenseBackward};
use super::dropout::MaskStream;
use super::kernels::LANES;
use super::softmax::{
    backward_rows, causal_softmax_dropout, causal_softmax_dropout_backward, forward_rows,
};
use crate::simd::vectorised;
use crate::slices::{values, values_mut};
use tch::{nn, Device, Kind, Tensor};

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
pub(super) enum Saved {
    /// Head by head: each head's causal weights packed row after row (row `i` its `i + 1` keys
    /// and the zeros after them to whole lanes, [`packed_len`] floats a head, about T²/2), a
    /// dropped weight stored negated. The weights are ≥ 0, so the
    /// sign bit is free to carry the mask, and the dropped weights are `|w| · keep` where the sign
    /// is clear and 0 where it is set, the same product the forward made. A quarter of the
    /// weights and dropped weights as two (T, T) matrices a head, written in the forward and
    /// read in the backward: at T = 128, 2.4 MB a layer of the tiny preset's step instead of 8.4.
    Packed { weights: Tensor, keep: f32 },
    /// Batched: (B·nh, T, T) the weights, and after dropout (none without), and q, k and v split
    /// into heads, (B·nh, T, hs) each.
    Batched { weights: Tensor, dropped: Option<Tensor>, heads: [Tensor; 3] },
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
    match saved {
        Saved::Packed { weights, keep } => backward_by_head(weights, *keep, qkv, heads, d_y),
        Saved::Batched { weights, dropped, heads: split } => {
            backward_batched(weights, dropped.as_ref(), split, heads, d_y)
        }
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
    let mut packed = Tensor::empty([b * nh * packed_len(t as usize) as i64], opts);
    let mut y = Tensor::empty([n, c], opts);
    let qkv = values(qkv);
    let (tt, tri, t, hs, c) =
        ((t * t) as usize, packed_len(t as usize), t as usize, hs as usize, c as usize);
    let (ps, ys) = (values_mut(&mut packed), values_mut(&mut y));
    // One head's (T, T) weights and dropped weights, in the core's cache.
    let mut w = vec![0f32; tt];
    let mut dropped = stream.map(|_| vec![0f32; tt]);
    for (bi, h) in (0..b).flat_map(|bi| (0..nh).map(move |h| (bi, h))) {
        let (at, out, i) = offsets(heads, bi, h);
        let (q, k, v) = (&qkv[at..], &qkv[at + c..], &qkv[at + 2 * c..]);
        blas::gemm(t, t, hs, Matrix::new(q, 3 * c), Matrix::new(k, 3 * c).t(), &mut w, t);
        forward_rows(&mut w, dropped.as_deref_mut(), t, heads.scale(), stream, i * tt);
        let d = dropped.as_deref().unwrap_or(&w);
        pack(&w, d, t, &mut ps[i * tri..(i + 1) * tri]);
        blas::gemm(t, hs, t, Matrix::new(d, t), Matrix::new(v, 3 * c), &mut ys[out..], c);
    }
    let keep = stream.map_or(1.0, |stream| stream.keep());
    (y, Saved::Packed { weights: packed, keep })
}

fn backward_by_head(
    packed: &Tensor,
    keep: f32,
    qkv: &Tensor,
    heads: Heads,
    d_y: &Tensor,
) -> Tensor {
    let (n, c) = (heads.b * heads.t, heads.nh * heads.hs);
    let mut d_qkv = Tensor::empty([n, 3 * c], (Kind::Float, Device::Cpu));
    let (qkv, d_y, packed, dq) = (values(qkv), values(d_y), values(packed), values_mut(&mut d_qkv));
    let mut scratch = HeadScratch::new(heads.t as usize);
    for (bi, h) in (0..heads.b).flat_map(|bi| (0..heads.nh).map(move |h| (bi, h))) {
        backward_head(packed, keep, qkv, heads, d_y, (bi, h), dq, 0, &mut scratch);
    }
    d_qkv
}

/// [`backward`] on through `c_attn`, the dense layer that made `qkv` from the rows `h` (N, C),
/// a group of sequences at a time: each group's (rows, 3C) gradient of `qkv` is made in a buffer
/// that stays in the core's cache and used there for `c_attn`'s gradients ([`super::blocked`]),
/// never written to memory whole. Writes `c_attn`'s weight and bias gradients over theirs and
/// returns `h`'s, (N, C). Head by head only ([`Saved::Packed`], wherever there is a BLAS).
pub(super) fn backward_through_dense(
    saved: &Saved,
    qkv: &Tensor,
    heads: Heads,
    d_y: &Tensor,
    c_attn: &nn::Linear,
    h: &Tensor,
) -> Tensor {
    let rows = block_rows(3 * (heads.nh * heads.hs) as usize);
    let group = (rows / heads.t.max(1) as usize).max(1);
    backward_through_dense_in_groups(saved, qkv, heads, d_y, c_attn, h, group)
}

/// [`backward_through_dense`] `group` sequences at a time.
fn backward_through_dense_in_groups(
    saved: &Saved,
    qkv: &Tensor,
    heads: Heads,
    d_y: &Tensor,
    c_attn: &nn::Linear,
    h: &Tensor,
    group: usize,
) -> Tensor {
    let Saved::Packed { weights: packed, keep } = saved else {
        panic!("attention in blocks runs head by head, where there is a BLAS")
    };
    let Heads { b, t, nh, hs } = heads;
    let (n, c) = ((b * t) as usize, (nh * hs) as usize);
    let mut d_h = Tensor::empty([n as i64, c as i64], (Kind::Float, Device::Cpu));
    let (qkv, d_y, packed, inputs) = (values(qkv), values(d_y), values(packed), values(h));
    let dhs = values_mut(&mut d_h);
    let t = t as usize;
    let mut d_qkv = vec![0f32; group.min(b as usize) * t * 3 * c];
    let mut scratch = HeadScratch::new(t);
    let mut dense = DenseBackward::new(c_attn);
    for first in (0..b as usize).step_by(group) {
        let sequences = group.min(b as usize - first);
        let (rows, row0) = (sequences * t, first * t);
        let d_qkv = &mut d_qkv[..rows * 3 * c];
        for bi in first..first + sequences {
            for h in 0..nh {
                let at = (bi as i64, h);
                backward_head(packed, *keep, qkv, heads, d_y, at, d_qkv, row0, &mut scratch);
            }
        }
        dense.add(d_qkv, &inputs[row0 * c..][..rows * c], &mut dhs[row0 * c..][..rows * c]);
    }
    dense.finish();
    d_h
}

/// One head's (T, T) weights and dropped weights unpacked (zero above the diagonal, which no
/// unpacking writes), and its scores' gradient.
struct HeadScratch {
    weights: Vec<f32>,
    dropped: Vec<f32>,
    scores: Vec<f32>,
}

impl HeadScratch {
    fn new(t: usize) -> Self {
        HeadScratch {
            weights: vec![0.0; t * t],
            dropped: vec![0.0; t * t],
            scores: vec![0.0; t * t],
        }
    }
}

/// The backward of head `h` of sequence `b` (`at`): writes the gradient of its q, k and v into
/// their columns of `d_qkv`, the (·, 3C) rows from row `row0` of the whole.
#[allow(clippy::too_many_arguments)]
fn backward_head(
    packed: &[f32],
    keep: f32,
    qkv: &[f32],
    heads: Heads,
    d_y: &[f32],
    at: (i64, i64),
    d_qkv: &mut [f32],
    row0: usize,
    s: &mut HeadScratch,
) {
    let (t, hs, c) = (heads.t as usize, heads.hs as usize, (heads.nh * heads.hs) as usize);
    let (at, out, i) = offsets(heads, at.0, at.1);
    let (q, k, v) = (&qkv[at..], &qkv[at + c..], &qkv[at + 2 * c..]);
    let dq = &mut d_qkv[at - row0 * 3 * c..];
    let tri = packed_len(t);
    unpack(&packed[i * tri..(i + 1) * tri], keep, t, &mut s.weights, &mut s.dropped);
    let dy = Matrix::new(&d_y[out..], c);
    // d v = droppedᵀ · d y
    blas::gemm(t, hs, t, Matrix::new(&s.dropped, t).t(), dy, &mut dq[2 * c..], 3 * c);
    // d dropped = d y · vᵀ, then the scores' gradient in place
    blas::gemm(t, t, hs, dy, Matrix::new(v, 3 * c).t(), &mut s.scores, t);
    backward_rows(&mut s.scores, &s.weights, &s.dropped, t, heads.scale());
    let ds = Matrix::new(&s.scores, t);
    // d q = d scores · k, d k = d scoresᵀ · q
    blas::gemm(t, hs, t, ds, Matrix::new(k, 3 * c), dq, 3 * c);
    blas::gemm(t, hs, t, ds.t(), Matrix::new(q, 3 * c), &mut dq[c..], 3 * c);
}

/// How much of row `r` of a (T, T) causal matrix is packed: the `r + 1` keys it sees, rounded
/// up to whole lanes (zeros past the diagonal), so that packing and unpacking have no ragged
/// ends, but never past the row.
fn row_width(r: usize, t: usize) -> usize {
    (r + 1).next_multiple_of(LANES).min(t)
}

/// The floats one head's (T, T) causal matrix takes packed: T·(T + 1)/2 and up to LANES − 1 more
/// a row.
fn packed_len(t: usize) -> usize {
    (0..t).map(|r| row_width(r, t)).sum()
}

const SIGN: u32 = 0x8000_0000;

vectorised! {
    /// Packs one head's (T, T) causal `weights` into `packed` ([`packed_len`]), each weight
    /// whose `dropped` value is 0 negated (see [`Saved::Packed`]).
    fn pack(weights: &[f32], dropped: &[f32], t: usize, packed: &mut [f32]) {
        let mut start = 0;
        for r in 0..t {
            let width = row_width(r, t);
            let (w, d) = (&weights[r * t..][..width], &dropped[r * t..][..width]);
            for ((p, &w), &d) in packed[start..][..width].iter_mut().zip(w).zip(d) {
                *p = f32::from_bits(w.to_bits() | if d == 0.0 { SIGN } else { 0 });
            }
            start += width;
        }
    }
}

vectorised! {
    /// Unpacks one head of [`pack`] into its (T, T) weights and dropped weights, `keep` the
    /// value of a kept mask element (1 without dropout). Past each row's packed width (whole
    /// lanes past the diagonal) the matrices are left as they are: zeros, where they were.
    fn unpack(packed: &[f32], keep: f32, t: usize, weights: &mut [f32], dropped: &mut [f32]) {
        let mut start = 0;
        for r in 0..t {
            let width = row_width(r, t);
            let (w, d) = (&mut weights[r * t..][..width], &mut dropped[r * t..][..width]);
            for ((&p, w), d) in packed[start..][..width].iter().zip(w).zip(d) {
                let kept = p.to_bits() & SIGN == 0;
                *w = p.abs();
                *d = if kept { p * keep } else { 0.0 };
            }
            start += width;
        }
    }
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
    (y, Saved::Batched { weights, dropped, heads: [q, k, v] })
}

fn backward_batched(
    weights: &Tensor,
    dropped: Option<&Tensor>,
    split: &[Tensor; 3],
    heads: Heads,
    d_y: &Tensor,
) -> Tensor {
    let Heads { b, t, nh, hs } = heads;
    let (n, c) = (b * t, nh * hs);
    let [q, k, v] = split;
    let d_y = d_y.view([b, t, nh, hs]).permute([0, 2, 1, 3]).contiguous().view([b * nh, t, hs]);
    let d_heads = Tensor::empty([3, b * nh, t, hs], (Kind::Float, Device::Cpu));
    let dropped = dropped.unwrap_or(weights);
    let _ = dropped.transpose(1, 2).bmm_out(&d_heads.get(2), &d_y); // d v
    let mut d_scores = d_y.bmm(&v.transpose(1, 2)); // (B·nh, T, T), d dropped for now
    causal_softmax_dropout_backward(&mut d_scores, weights, dropped, heads.scale());
    let _ = d_scores.bmm_out(&d_heads.get(0), k); // d q
    let _ = d_scores.transpose(1, 2).bmm_out(&d_heads.get(1), q); // d k
    let d_qkv = d_heads.view([3, b, nh, t, hs]).permute([1, 3, 0, 2, 4]).contiguous(); // (B, T, 3, nh, hs)
    d_qkv.view([n, 3 * c])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One head's (T, T) weights and dropped weights from a [`Saved::Packed`], as (B·nh, T, T)
    /// tensors.
    fn unpacked(saved: &Saved, heads: Heads) -> (Tensor, Tensor) {
        let Saved::Packed { weights: packed, keep } = saved else { panic!("head by head") };
        let (r, t) = ((heads.b * heads.nh) as usize, heads.t as usize);
        let (mut w, mut d) = (vec![0f32; r * t * t], vec![0f32; r * t * t]);
        let chunks = w.chunks_exact_mut(t * t).zip(d.chunks_exact_mut(t * t));
        for (i, (w, d)) in chunks.enumerate() {
            unpack(&values(packed)[i * packed_len(t)..][..packed_len(t)], *keep, t, w, d);
        }
        let shape = [r as i64, heads.t, heads.t];
        (Tensor::from_slice(&w).view(shape), Tensor::from_slice(&d).view(shape))
    }

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
            let Saved::Batched { weights, dropped, .. } = &s2 else { panic!("batched") };
            let (w1, d1) = unpacked(&s1, heads);
            assert!(w1.allclose(weights, 1e-5, 1e-7, false), "weights, dropout {p}");
            let d2 = dropped.as_ref().unwrap_or(weights);
            assert_eq!(dropped.is_some(), p);
            assert!(d1.eq(0.0).equal(&d2.eq(0.0)), "the same weights dropped, dropout {p}");
            assert!(d1.allclose(d2, 1e-5, 1e-7, false), "dropped weights, dropout {p}");
            let d1 = backward(&s1, &qkv, heads, &d_y);
            let d2 = backward(&s2, &qkv, heads, &d_y);
            assert!(d1.allclose(&d2, 1e-4, 1e-5, false), "gradients, dropout {p}");
        }
    }

    /// Through `c_attn` a group of sequences at a time, as [`backward`] and then `c_attn`'s
    /// backward in libtorch over all rows: groups that divide the sequences, one that does not,
    /// and one group of all.
    #[test]
    fn through_dense_in_groups_matches_whole_matrices() {
        if !blas::available() {
            eprintln!("no sgemm_ in this libtorch: only the batched path runs");
            return;
        }
        let heads = Heads { b: 6, t: 11, nh: 2, hs: 8 };
        let (n, c) = (heads.b * heads.t, heads.nh * heads.hs);
        let opts = (Kind::Float, Device::Cpu);
        let vs = nn::VarStore::new(Device::Cpu);
        let c_attn = nn::linear(vs.root() / "c_attn", c, 3 * c, Default::default());
        // Gradients to write into.
        Tensor::zeros([1, c], opts).apply(&c_attn).sum(Kind::Float).backward();
        let _guard = tch::no_grad_guard();
        let h = Tensor::randn([n, c], opts);
        let qkv = h.apply(&c_attn);
        let d_y = Tensor::randn([n, c], opts);
        let (_, saved) = forward_by_head(&qkv, heads, Some(MaskStream::new(7, 0.2)));
        let d_qkv = backward(&saved, &qkv, heads, &d_y);
        let expected_h = d_qkv.mm(&c_attn.ws);
        let expected_w = d_qkv.tr().mm(&h);
        let expected_b = d_qkv.sum_dim_intlist(0, false, Kind::Float);
        for group in [1, 2, 4, 6] {
            let _ = c_attn.ws.grad().fill_(f64::NAN); // written over, never read
            let _ = c_attn.bs.as_ref().unwrap().grad().fill_(f64::NAN);
            let d_h =
                backward_through_dense_in_groups(&saved, &qkv, heads, &d_y, &c_attn, &h, group);
            assert!(d_h.allclose(&expected_h, 1e-5, 1e-5, false), "input gradient, group {group}");
            let w = c_attn.ws.grad();
            assert!(w.allclose(&expected_w, 1e-5, 1e-5, false), "weight gradient, group {group}");
            let b = c_attn.bs.as_ref().unwrap().grad();
            assert!(b.allclose(&expected_b, 1e-5, 1e-5, false), "bias gradient, group {group}");
        }
    }

    /// Unpacking gives back, bit for bit, the weights and the dropped weights packed: dropped
    /// and kept, zero weights among them (a kept 0 and a dropped 0 both unpack to 0), at sizes
    /// on and off whole lanes.
    #[test]
    fn pack_then_unpack_is_exact() {
        for (t, keep) in [(1, 1.0f32), (17, 1.25), (33, 1.0 / 0.9), (128, 2.0)] {
            let mut w = vec![0f32; t * t];
            let mut d = vec![0f32; t * t];
            for r in 0..t {
                for j in 0..=r {
                    let x = (r * 31 + j * 7) % 13;
                    // Some weights 0; every third element dropped.
                    w[r * t + j] = if x == 0 { 0.0 } else { x as f32 / 13.0 + 1e-3 * j as f32 };
                    d[r * t + j] = if (r + j) % 3 == 0 { 0.0 } else { w[r * t + j] * keep };
                }
            }
            let mut packed = vec![f32::NAN; packed_len(t)];
            pack(&w, &d, t, &mut packed);
            assert!(packed.iter().all(|p| !p.is_nan()), "every element written, t = {t}");
            let (mut w2, mut d2) = (vec![0f32; t * t], vec![0f32; t * t]);
            unpack(&packed, keep, t, &mut w2, &mut d2);
            let bits = |x: &[f32]| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&w2), bits(&w), "weights, t = {t}");
            assert_eq!(bits(&d2), bits(&d), "dropped weights, t = {t}");
        }
    }
}
