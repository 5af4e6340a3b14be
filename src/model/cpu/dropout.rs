//! Dropout with masks drawn by a fast counter-based generator on the CPU.
//!
//! libtorch draws a CPU dropout mask with `bernoulli_`, which runs MKL's vectorised generator only
//! on Intel CPUs; everywhere else it is a serial loop calling the Mersenne Twister once per
//! element. On this project's AMD machine that was a fifth of a training step (the attention
//! weights alone are B·heads·T² elements per layer). Here the mask is the SplitMix64 stream —
//! output `i` is a bijective mix of `key + (i + 1)·γ`, so every element is computed on its own
//! and the loop vectorises — with each 64-bit output giving two elements' 32-bit draws. The
//! key comes from torch's global generator, so `tch::manual_seed` still fixes every mask.
//! GPUs keep libtorch's dropout (its fused kernel is fast there).

use super::kernels::column_bias;
use crate::simd::vectorised;
use crate::slices::{values, values_mut};
use tch::{Device, Kind, Tensor};

/// `x` with each element zeroed with probability `p` and the rest scaled by `1 / (1 - p)`, when
/// `train`; `x` itself otherwise. As `Tensor::dropout`; gradients flow through the mask.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        return x.shallow_clone();
    }
    if x.device() != Device::Cpu || x.kind() != Kind::Float || p >= 1.0 {
        return x.dropout(p, train);
    }
    x * mask(&x.size(), p)
}

/// A dropout mask of `shape`: 0 with probability `p`, `1 / (1 - p)` otherwise, from a key drawn
/// from torch's global generator.
pub(crate) fn mask(shape: &[i64], p: f64) -> Tensor {
    let stream = MaskStream::draw(p);
    let mut out = Tensor::empty(shape, (Kind::Float, Device::Cpu));
    fill(values_mut(&mut out), stream);
    out
}

/// One dropout mask, as a stream of elements that can be computed in any order: element `i` of
/// the mask is a function of the key and `i` alone. So a kernel can draw the part of a mask it
/// needs where it needs it, and get what [`mask`] would have filled in.
#[derive(Clone, Copy)]
pub(super) struct MaskStream {
    key: u64,
    /// An element is dropped when its 32-bit draw is below this: probability threshold / 2³²,
    /// within 2⁻³² of `p`.
    threshold: u32,
    /// What a kept element is: `1 / (1 - p)`.
    scale: f32,
}

impl MaskStream {
    /// A new mask for dropout probability `p`, keyed from torch's global generator, so that
    /// `tch::manual_seed` fixes it.
    pub(super) fn draw(p: f64) -> Self {
        assert!((0.0..1.0).contains(&p), "dropout probability {p} must be in [0, 1)");
        let key =
            Tensor::randint(i64::MAX, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]) as u64;
        Self::new(key, p)
    }

    /// [`MaskStream::draw`] for dropout `p`, or none where nothing is dropped (`p` = 0).
    pub(super) fn for_dropout(p: f64) -> Option<Self> {
        (p > 0.0).then(|| Self::draw(p))
    }

    pub(super) fn new(key: u64, p: f64) -> Self {
        let threshold = (p * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
        MaskStream { key, threshold, scale: (1.0 / (1.0 - p)) as f32 }
    }

    /// What a kept element of the mask is: `1 / (1 - p)`.
    pub(super) fn keep(&self) -> f32 {
        self.scale
    }

    /// Writes elements `start..start + out.len()` of the mask into `out`. Inlined into each
    /// caller, so that it vectorises with the caller's instructions.
    #[inline(always)]
    pub(super) fn fill_at(&self, out: &mut [f32], start: usize) {
        // Each 64-bit output gives two elements: the low half the even one.
        let (mut out, mut start) = (out, start);
        if start % 2 == 1 {
            let Some((first, rest)) = out.split_first_mut() else { return };
            *first = self.pick((splitmix64(self.key, start as u64 / 2) >> 32) as u32);
            (out, start) = (rest, start + 1);
        }
        // Output c + j of the stream keyed `key` is output j of the one keyed `key + c·γ`.
        let key = self.key.wrapping_add((start as u64 / 2).wrapping_mul(GAMMA));
        let mut blocks = out.chunks_exact_mut(BLOCK);
        let mut counter = 0u64;
        for block in &mut blocks {
            let mut h = [0u64; BLOCK / 2];
            for (j, h) in h.iter_mut().enumerate() {
                *h = splitmix64(key, counter + j as u64);
            }
            for (pair, h) in block.chunks_exact_mut(2).zip(h) {
                pair[0] = self.pick(h as u32);
                pair[1] = self.pick((h >> 32) as u32);
            }
            counter += (BLOCK / 2) as u64;
        }
        for (j, pair) in blocks.into_remainder().chunks_mut(2).enumerate() {
            let h = splitmix64(key, counter + j as u64);
            pair[0] = self.pick(h as u32);
            if let Some(second) = pair.get_mut(1) {
                *second = self.pick((h >> 32) as u32);
            }
        }
    }

    #[inline(always)]
    fn pick(&self, draw: u32) -> f32 {
        if draw < self.threshold {
            0.0
        } else {
            self.scale
        }
    }
}

vectorised! {
    /// Fills `out` with the whole mask of `stream`.
    fn fill(out: &mut [f32], stream: MaskStream) {
        stream.fill_at(out, 0)
    }
}

/// `x · mask` for the mask of `stream` (`x` itself without one), the mask drawn as it is used
/// and never stored: dropout, and the gradient through it.
pub(super) fn times_mask(x: &Tensor, stream: Option<MaskStream>) -> Tensor {
    let Some(stream) = stream else { return x.shallow_clone() };
    let mut out = x.empty_like();
    times_mask_elements(values(x), values_mut(&mut out), stream);
    out
}

vectorised! {
    fn times_mask_elements(x: &[f32], out: &mut [f32], stream: MaskStream) {
        let mut mask = [0f32; 256];
        for (i, (x, out)) in x.chunks(256).zip(out.chunks_mut(256)).enumerate() {
            let mask = &mut mask[..x.len()];
            stream.fill_at(mask, i * 256);
            for ((o, &x), &m) in out.iter_mut().zip(x).zip(&*mask) {
                *o = x * m;
            }
        }
    }
}

/// `x + (y + bias) · mask`: the residual add after dropout of a layer's output `y` (N, C) whose
/// bias (C) is still to be added (see `pass`'s `dense_unbiased`), with the mask of `stream`
/// (none: no dropout) drawn in the same pass. One pass over three (N, C) matrices, where
/// libtorch's `addmm` bias copy, the mask written and `addcmul` made four.
pub(super) fn add_dropped(
    x: &Tensor,
    y: &Tensor,
    bias: Option<&Tensor>,
    stream: Option<MaskStream>,
) -> Tensor {
    assert!(x.size() == y.size(), "x and y of one shape");
    let bias = column_bias(x, bias);
    let mut out = x.empty_like();
    add_dropped_rows(values(x), values(y), &bias, values_mut(&mut out), stream);
    out
}

vectorised! {
    fn add_dropped_rows(
        x: &[f32],
        y: &[f32],
        bias: &[f32],
        out: &mut [f32],
        stream: Option<MaskStream>,
    ) {
        let c = bias.len().max(1);
        let mut mask = vec![1f32; c];
        let rows = x.chunks_exact(c).zip(y.chunks_exact(c)).zip(out.chunks_exact_mut(c));
        for (r, ((x, y), out)) in rows.enumerate() {
            if let Some(stream) = stream {
                stream.fill_at(&mut mask, r * c);
            }
            for ((((o, &x), &y), &b), &m) in out.iter_mut().zip(x).zip(y).zip(bias).zip(&mask) {
                *o = x + (y + b) * m;
            }
        }
    }
}

/// Elements per block: eight 64-bit outputs of two draws each, computed side by side.
const BLOCK: usize = 16;

/// SplitMix64's increment: the odd integer nearest 2⁶⁴ / φ.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Output `i` of the SplitMix64 generator (Steele, Lea & Flood 2014) seeded with `key`.
#[inline(always)]
fn splitmix64(key: u64, i: u64) -> u64 {
    let mut z = key.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fraction of `mask`'s elements kept, after checking each is 0 or `1 / (1 - p)`.
    fn kept(mask: &[f32], p: f64) -> f64 {
        let scale = (1.0 / (1.0 - p)) as f32;
        assert!(mask.iter().all(|&m| m == 0.0 || m == scale), "values other than 0 and {scale}");
        mask.iter().filter(|&&m| m != 0.0).count() as f64 / mask.len() as f64
    }

    #[test]
    fn masks_keep_each_element_with_probability_one_minus_p() {
        let n = 1 << 20;
        for p in [0.1, 0.5, 0.9] {
            let mut out = vec![0f32; n];
            fill(&mut out, MaskStream::new(42, p));
            // Four standard deviations of the binomial fraction: sqrt(p(1-p)/n) <= 0.0005.
            let rate = kept(&out, p);
            assert!((rate - (1.0 - p)).abs() < 0.002, "p = {p}: kept {rate}");
            // The two draws of one 64-bit output are independent: pairs both kept at (1-p)².
            let both = out.chunks_exact(2).filter(|c| c[0] != 0.0 && c[1] != 0.0).count();
            let both = both as f64 / (n / 2) as f64;
            assert!((both - (1.0 - p).powi(2)).abs() < 0.003, "p = {p}: pairs kept {both}");
            // Neighbouring blocks are not copies of each other.
            let same = out.chunks_exact(BLOCK).zip(out.chunks_exact(BLOCK).skip(1));
            assert!(same.filter(|(a, b)| a == b).count() < n / BLOCK / 4);
        }
    }

    #[test]
    fn a_mask_is_a_prefix_of_its_stream_whatever_its_length() {
        // Lengths around the vectorised block and the two-draw pairs: the remainder is the same
        // stream as the blocks.
        let mut long = vec![0f32; 100];
        fill(&mut long, MaskStream::new(7, 0.3));
        for len in [0, 1, 2, 15, 16, 17, 31, 33, 99] {
            let mut short = vec![0f32; len];
            fill(&mut short, MaskStream::new(7, 0.3));
            assert_eq!(short[..], long[..len], "length {len}");
        }
        // Any stretch of it, from an even or an odd element, drawn on its own: what the
        // attention kernel draws row by row.
        for (start, len) in [(1, 0), (1, 1), (1, 2), (3, 16), (7, 33), (16, 17), (33, 60)] {
            let mut part = vec![0f32; len];
            MaskStream::new(7, 0.3).fill_at(&mut part, start);
            assert_eq!(part[..], long[start..start + len], "elements {start}..+{len}");
        }
        // Whatever instructions the CPU has, the same mask: `fill_at` called here is compiled
        // without AVX-512.
        let mut portable = vec![0f32; 100];
        MaskStream::new(7, 0.3).fill_at(&mut portable, 0);
        assert_eq!(portable, long);
        let mut other_key = vec![0f32; 100];
        fill(&mut other_key, MaskStream::new(8, 0.3));
        assert_ne!(other_key, long);
    }

    /// The fused kernels against the mask filled in whole and libtorch's arithmetic.
    #[test]
    fn times_mask_and_add_dropped_apply_the_streams_mask() {
        let opts = (Kind::Float, Device::Cpu);
        let (n, c) = (9, 40); // 360 elements: more than one of times_mask's chunks
        let (x, y, bias) =
            (Tensor::randn([n, c], opts), Tensor::randn([n, c], opts), Tensor::randn([c], opts));
        let stream = MaskStream::new(3, 0.4);
        let mut m = vec![0f32; (n * c) as usize];
        fill(&mut m, stream);
        let m = Tensor::from_slice(&m).view([n, c]);
        assert!(times_mask(&x, Some(stream)).allclose(&(&x * &m), 0.0, 0.0, false));
        assert!(times_mask(&x, None).equal(&x));
        let expected = &x + (&y + &bias) * &m;
        let ours = add_dropped(&x, &y, Some(&bias), Some(stream));
        assert!(ours.allclose(&expected, 1e-6, 1e-6, false), "with bias and dropout");
        assert!(add_dropped(&x, &y, None, None).allclose(&(&x + &y), 0.0, 0.0, false));
    }

    /// (That `tch::manual_seed` fixes the masks is checked end to end, where no other test
    /// shares torch's generator: a run stopped and resumed with dropout ends bit for bit where
    /// an uninterrupted one does, `tests/faults.rs`.)
    #[test]
    fn each_call_draws_a_new_mask_and_gradients_flow_through_it() {
        let a = mask(&[4, 64], 0.25);
        let b = mask(&[4, 64], 0.25);
        assert!(!a.equal(&b), "a second call draws a new mask");

        let x = Tensor::ones([3, 50], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = dropout(&x, 0.25, true);
        y.sum(Kind::Float).backward();
        // With x = 1, y is the mask itself, and so is the gradient of sum(y).
        assert!(x.grad().equal(&y.detach()));
        let y: Vec<f32> = Vec::try_from(y.detach().flatten(0, -1)).unwrap();
        assert!(kept(&y, 0.25) > 0.5);
        assert!(dropout(&x, 0.25, false).equal(&x), "no dropout outside training");
        assert!(dropout(&x, 0.0, true).equal(&x));
    }
}
