//! Cross-entropy's loss and its gradient with respect to the logits, row by row in one sweep.
//!
//! For a row `x` of logits with label `y`, the loss is `log Σ exp(x) − x[y]` and its gradient
//! `softmax(x) − one-hot(y)`. libtorch gets there in four passes over the whole (n, V) matrix
//! (log-softmax, exp, scale, scatter), each reading and writing megabytes that no cache holds.
//! Here each row (V = 8000 floats, 32 KB) is read once from memory and finished while it sits in
//! the L1 cache: its maximum, then `exp(x − max)` written in place and summed, then the scale.

use super::kernels::{exp, max, total, LANES};
use crate::simd::vectorised;
use crate::slices::values_mut;
use tch::Tensor;

/// Overwrites each row of the (n, V) f32 CPU matrix `logits` with `scale · (softmax(row) −
/// one-hot(label))` and returns the summed loss `Σ (log Σ exp(row) − row[label])`, in f64.
pub(crate) fn loss_and_gradient_in_place(logits: &mut Tensor, labels: &[i64], scale: f32) -> f64 {
    let (n, v) = logits.size2().expect("an (n, V) matrix");
    assert_eq!(labels.len() as i64, n, "one label per row");
    // A contiguous f32 CPU matrix (checked there).
    rows(values_mut(logits), v as usize, labels, scale)
}

vectorised! {
    fn rows(values: &mut [f32], v: usize, labels: &[i64], scale: f32) -> f64 {
        let mut loss = 0.0;
        for (row, &label) in values.chunks_exact_mut(v.max(1)).zip(labels) {
            loss += row_in_place(row, label as usize, scale);
        }
        loss
    }
}

#[inline(always)]
fn row_in_place(row: &mut [f32], label: usize, scale: f32) -> f64 {
    assert!(label < row.len(), "label {label} outside a row of {}", row.len());
    let picked = row[label];
    let max = max(row);
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, x) in sums.iter_mut().zip(c) {
            *x = exp(*x - max);
            *s += *x;
        }
    }
    let mut sum: f32 = chunks.into_remainder().iter_mut().fold(0.0, |s, x| {
        *x = exp(*x - max);
        s + *x
    });
    sum += total(sums);
    let factor = scale / sum;
    for x in row.iter_mut() {
        *x *= factor;
    }
    row[label] -= scale;
    f64::from(sum).ln() + f64::from(max) - f64::from(picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn matches_libtorch_log_softmax_and_its_gradient() {
        let (n, v) = (7, 8003); // rows longer than a lane multiple
        let logits = Tensor::randn([n, v], (Kind::Float, Device::Cpu)) * 6.0;
        let labels: Vec<i64> = (0..n).map(|i| (i * 1151) % v).collect();
        let label_t = Tensor::from_slice(&labels).view([n, 1]);
        let logp = logits.log_softmax(1, Kind::Float);
        let expected_loss = -logp.gather(1, &label_t, false).sum(Kind::Double).double_value(&[]);
        let scale = 0.25;
        let expected_grad =
            (logp.exp() - Tensor::zeros_like(&logits).scatter_value(1, &label_t, 1.0)) * scale;
        let mut ours = logits.copy();
        let loss = loss_and_gradient_in_place(&mut ours, &labels, scale as f32);
        assert!(
            (loss - expected_loss).abs() < 1e-5 * expected_loss.abs(),
            "{loss} vs {expected_loss}"
        );
        assert!(ours.allclose(&expected_grad, 1e-5, 1e-7, false));
        // Huge logits do not overflow: the maximum is taken out first.
        let mut big = Tensor::from_slice(&[1e30f32, 0.0, -1e30]).view([1, 3]);
        let loss = loss_and_gradient_in_place(&mut big, &[1], 1.0);
        assert_eq!(loss, f64::from(1e30f32), "log-sum-exp of the largest is the largest");
        let g: Vec<f32> = Vec::try_from(big.flatten(0, -1)).unwrap();
        assert!(g[0] == 1.0 && g[1] == -1.0 && g[2].abs() < 1e-30, "{g:?}");
    }
}
