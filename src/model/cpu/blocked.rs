//! A dense layer's backward a block of rows at a time, for the kernels that make its output
//! gradient block by block and keep each block in the core's cache ([`super::mlp`],
//! [`super::attention`]): the block's input gradient at once, the weight and bias gradients
//! summed over the blocks.

use super::blas::{self, Matrix};
use crate::simd::vectorised;
use crate::slices::{values, values_mut};
use tch::{nn, Tensor};

/// Bytes of a block's intermediate: a quarter of a 2 MB L2, leaving room for the operands it
/// meets. On the tiny preset's MLP against whole matrices (2048-row steps), one rank alone ran
/// 1.6 % faster and each of two ranks side by side 2.5 % faster (5 alternating runs); blocks of
/// 128 KB, 1 MB and 2 MB were not better, within this VM's noise.
const BLOCK_BYTES: usize = 512 * 1024;

/// Rows per block for rows of `width` floats (256 for the tiny preset's MLP), at least 32 so that
/// the products stay efficient for wide models.
pub(super) fn block_rows(width: usize) -> usize {
    (BLOCK_BYTES / (4 * width.max(1))).max(32)
}

/// The gradients of `y = x · wᵀ + b` for `lin`, over blocks of rows.
pub(super) struct DenseBackward<'a> {
    /// (out, in)
    weight: &'a [f32],
    weight_grad: Tensor,
    bias_grad: Tensor,
    /// The bias gradient so far, and one block's (the blocks' sums are added in f32).
    sums: Vec<f32>,
    block_sums: Vec<f32>,
    blocks: usize,
}

impl<'a> DenseBackward<'a> {
    pub fn new(lin: &'a nn::Linear) -> Self {
        let bias = lin.bs.as_ref().expect("a layer with a bias");
        let outputs = lin.ws.size()[0] as usize;
        DenseBackward {
            weight: values(&lin.ws),
            weight_grad: lin.ws.grad(),
            bias_grad: bias.grad(),
            sums: vec![0.0; outputs],
            block_sums: vec![0.0; outputs],
            blocks: 0,
        }
    }

    /// Zeroed, for the caller to sum the columns of the next block's output gradient into, where
    /// it makes that gradient; then [`DenseBackward::add_summed`].
    pub(crate) fn block_sums(&mut self) -> &mut [f32] {
        self.block_sums.fill(0.0);
        &mut self.block_sums
    }

    /// Adds the gradients of a block of rows: `dy` their output gradient (m, out), `x` their
    /// input (m, in); writes the input gradient into `dx` (m, in).
    pub fn add(&mut self, dy: &[f32], x: &[f32], dx: &mut [f32]) {
        add_column_sums(dy, self.block_sums());
        self.add_summed(dy, x, dx);
    }

    /// [`DenseBackward::add`] with `dy`'s column sums already in [`DenseBackward::block_sums`].
    pub(crate) fn add_summed(&mut self, dy: &[f32], x: &[f32], dx: &mut [f32]) {
        let outputs = self.sums.len();
        let inputs = self.weight.len() / outputs.max(1);
        let m = dy.len() / outputs.max(1);
        self.sums.iter_mut().zip(&self.block_sums).for_each(|(s, b)| *s += b);
        let (dy, x) = (Matrix::new(dy, outputs), Matrix::new(x, inputs));
        let wg = values_mut(&mut self.weight_grad);
        match self.blocks {
            0 => blas::gemm(outputs, inputs, m, dy.t(), x, wg, inputs),
            _ => blas::gemm_add(outputs, inputs, m, dy.t(), x, wg, inputs),
        }
        blas::gemm(m, inputs, outputs, dy, Matrix::new(self.weight, inputs), dx, inputs);
        self.blocks += 1;
    }

    /// Writes the bias gradient (and a zero weight gradient where there were no rows).
    pub fn finish(mut self) {
        if self.blocks == 0 {
            values_mut(&mut self.weight_grad).fill(0.0);
        }
        values_mut(&mut self.bias_grad).copy_from_slice(&self.sums);
    }
}

vectorised! {
    /// Adds each column of the rows `d` (of `sums.len()` values) into `sums`.
    fn add_column_sums(d: &[f32], sums: &mut [f32]) {
        for row in d.chunks_exact(sums.len().max(1)) {
            sums.iter_mut().zip(row).for_each(|(s, x)| *s += x);
        }
    }
}
