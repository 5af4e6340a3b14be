//! A block's MLP, `c_proj(GELU(c_fc(h)))`, forward and backward for the hand-written training
//! pass on the CPU ([`super::pass`]), through BLAS ([`super::blas`]) a block of rows
//! at a time.
//!
//! The MLP's (N, 4C) intermediates are the step's largest besides the attention weights: `c_fc`'s
//! product before GELU, and in the backward GELU's input gradient and then `c_fc`'s output
//! gradient, 4 MB each for the tiny preset's 2048 rows. As whole-matrix operations, each is
//! written to memory and read back by the next one (the output gradient three times: its weight
//! gradient, its bias gradient, the input gradient). Here they exist one block of rows at a time,
//! in a buffer that stays in the core's L2 cache between the products that make and use it; only
//! GELU's output and derivative, which the backward needs, go to memory. With one rank per core,
//! that memory traffic is what the ranks share and slow each other on.
//! - `c_fc`'s bias is added by the GELU kernel, and its gradient summed while the output gradient
//!   is made; its gradients are summed over the blocks ([`super::blocked`]).
//! - `c_proj`'s weight and bias gradients read the whole of GELU's output once, as one product.

use super::blas::{self, Matrix};
use super::blocked::{block_rows, DenseBackward};
use super::kernels::gelu_rows;
use crate::model::gpt::write_parameter_grads;
use crate::simd::vectorised;
use crate::slices::{values, values_mut};
use tch::{nn, Device, Kind, Tensor};

/// What the forward keeps for the backward: GELU's output (as `c_proj` reads it: fp32, or bf16
/// under `--precision bf16`) and its derivative, (N, 4C) each.
pub(super) struct Saved {
    pub gelu: Tensor,
    pub gelu_grad: Tensor,
}

/// `GELU(h · c_fcᵀ + b) · c_projᵀ` for the (N, C) rows `h`, without `c_proj`'s bias (the caller
/// adds it with the residual), and what the backward needs.
pub(super) fn forward(fc: &nn::Linear, proj: &nn::Linear, h: &Tensor) -> (Tensor, Saved) {
    let hidden = fc.ws.size()[0] as usize;
    forward_in_blocks(fc, proj, h, block_rows(hidden))
}

fn forward_in_blocks(
    fc: &nn::Linear,
    proj: &nn::Linear,
    h: &Tensor,
    rows: usize,
) -> (Tensor, Saved) {
    let (n, c) = h.size2().expect("(N, C) rows");
    let hidden = fc.ws.size()[0];
    let opts = (Kind::Float, Device::Cpu);
    let (mut gelu, mut gelu_grad) =
        (Tensor::empty([n, hidden], opts), Tensor::empty([n, hidden], opts));
    let mut out = Tensor::empty([n, c], opts);
    let (n, c, hidden) = (n as usize, c as usize, hidden as usize);
    let b_fc = values(fc.bs.as_ref().expect("c_fc with a bias"));
    let (w_fc, w_proj) = (values(&fc.ws), values(&proj.ws)); // (4C, C), (C, 4C)
    let (hs, gs, ds, os) =
        (values(h), values_mut(&mut gelu), values_mut(&mut gelu_grad), values_mut(&mut out));
    let mut f = vec![0f32; rows.min(n) * hidden];
    for start in (0..n).step_by(rows) {
        let m = rows.min(n - start);
        let f = &mut f[..m * hidden];
        blas::gemm(
            m,
            hidden,
            c,
            Matrix::new(&hs[start * c..], c),
            Matrix::new(w_fc, c).t(),
            f,
            hidden,
        );
        let g = &mut gs[start * hidden..][..m * hidden];
        gelu_rows(f, b_fc, g, &mut ds[start * hidden..][..m * hidden]);
        let g = Matrix::new(g, hidden);
        blas::gemm(m, c, hidden, g, Matrix::new(w_proj, hidden).t(), &mut os[start * c..], c);
    }
    (out, Saved { gelu, gelu_grad })
}

/// The backward of [`forward`] for the gradient `d_out` (N, C) of its output, `h` its input:
/// writes `c_fc`'s and `c_proj`'s weight and bias gradients over theirs and returns `h`'s.
pub(super) fn backward(
    fc: &nn::Linear,
    proj: &nn::Linear,
    h: &Tensor,
    saved: &Saved,
    d_out: &Tensor,
) -> Tensor {
    let hidden = fc.ws.size()[0] as usize;
    backward_in_blocks(fc, proj, h, saved, d_out, block_rows(hidden))
}

fn backward_in_blocks(
    fc: &nn::Linear,
    proj: &nn::Linear,
    h: &Tensor,
    saved: &Saved,
    d_out: &Tensor,
    rows: usize,
) -> Tensor {
    let (n, c) = h.size2().expect("(N, C) rows");
    write_parameter_grads(&saved.gelu, d_out, &proj.ws, proj.bs.as_ref());
    let mut d_h = Tensor::empty([n, c], (Kind::Float, Device::Cpu));
    let (n, c, hidden) = (n as usize, c as usize, fc.ws.size()[0] as usize);
    let w_proj = values(&proj.ws);
    let (hs, dos, derivative) = (values(h), values(d_out), values(&saved.gelu_grad));
    let dhs = values_mut(&mut d_h);
    let mut c_fc = DenseBackward::new(fc);
    let mut d_f = vec![0f32; rows.min(n) * hidden];
    for start in (0..n).step_by(rows) {
        let m = rows.min(n - start);
        let d_f = &mut d_f[..m * hidden];
        // d GELU = d out · c_proj, then times GELU's derivative: d f
        let d_out = Matrix::new(&dos[start * c..], c);
        blas::gemm(m, hidden, c, d_out, Matrix::new(w_proj, hidden), d_f, hidden);
        let derivative = &derivative[start * hidden..][..m * hidden];
        times_and_column_sums(d_f, derivative, c_fc.block_sums());
        c_fc.add_summed(d_f, &hs[start * c..][..m * c], &mut dhs[start * c..][..m * c]);
    }
    c_fc.finish();
    d_h
}

vectorised! {
    /// Multiplies the rows of `d` by `factor` element by element, adding each column's products
    /// into `sums` (one per column).
    fn times_and_column_sums(d: &mut [f32], factor: &[f32], sums: &mut [f32]) {
        let c = sums.len().max(1);
        for (d, factor) in d.chunks_exact_mut(c).zip(factor.chunks_exact(c)) {
            for ((d, &f), s) in d.iter_mut().zip(factor).zip(sums.iter_mut()) {
                *d *= f;
                *s += *d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against libtorch under autograd (`linear`, `gelu("tanh")`, `linear`), forward and every
    /// gradient, over several blocks with a partial last one and as one block.
    #[test]
    fn matches_libtorch_in_blocks_and_whole() {
        if !blas::available() {
            eprintln!("no sgemm_ in this libtorch: the by-hand pass runs the MLP through libtorch");
            return;
        }
        let (n, c) = (30, 8);
        let vs = nn::VarStore::new(Device::Cpu);
        let fc = nn::linear(vs.root() / "fc", c, 4 * c, Default::default());
        let proj = nn::linear(vs.root() / "proj", 4 * c, c, Default::default());
        tch::no_grad(|| {
            for b in [&fc.bs, &proj.bs] {
                let _ = b.as_ref().unwrap().shallow_clone().normal_(0.0, 0.5);
            }
        });
        let opts = (Kind::Float, Device::Cpu);
        let h = Tensor::randn([n, c], opts).set_requires_grad(true);
        let d_out = Tensor::randn([n, c], opts);
        let full = h.apply(&fc).gelu("tanh").apply(&proj);
        (&full * &d_out).sum(Kind::Float).backward();
        let expected = full.detach() - proj.bs.as_ref().unwrap(); // without c_proj's bias
        let params = [&fc.ws, fc.bs.as_ref().unwrap(), &proj.ws, proj.bs.as_ref().unwrap()];
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad().copy()).collect();
        let d_h = h.grad().copy();

        let _guard = tch::no_grad_guard();
        let h = h.detach();
        for rows in [7, 30, 64] {
            for p in params {
                let _ = p.grad().fill_(f64::NAN); // written over, never read
            }
            let (out, saved) = forward_in_blocks(&fc, &proj, &h, rows);
            assert!(out.allclose(&expected, 1e-5, 1e-5, false), "output, {rows} rows a block");
            let ours = backward_in_blocks(&fc, &proj, &h, &saved, &d_out, rows);
            assert!(ours.allclose(&d_h, 1e-5, 1e-5, false), "input gradient, {rows} rows");
            for (i, (p, g)) in params.iter().zip(&grads).enumerate() {
                assert!(p.grad().allclose(g, 1e-5, 1e-5, false), "gradient {i}, {rows} rows");
            }
        }
    }
}
