//! The training pass on the CPU, forward and backward written out by hand instead of recorded by
//! autograd: what [`Gpt::forward_backward`] runs there.
//!
//! It computes what autograd computes from [`Gpt::hidden`] and [`Gpt::target_loss_sum`] (same
//! operations, same dropout masks drawn in the same order), but:
//! - no graph is built and no per-node bookkeeping runs: a short-sequence step is hundreds of
//!   small operations, and autograd's cost per operation is a large part of it;
//! - every gradient is written straight into its view of the flat buffer (`mm_out`, the bias
//!   column sums, the LayerNorm kernel), not produced and then added by `AccumulateGrad`;
//! - LayerNorm and GELU run row-wise kernels ([`super::kernels`]); GELU's forward also
//!   yields its derivative, so the backward evaluates no `tanh`;
//! - the MLP, and `c_attn`'s backward behind the heads', run a block of rows at a time, their
//!   (N, 4C) and (N, 3C) intermediates kept in cache ([`super::mlp`],
//!   [`super::attention::backward_through_dense`]);
//! - attention runs head by head while each head's (T, T) weights are in cache, with its causal
//!   softmax and dropout as one row-wise kernel ([`super::attention`]).
//!
//! Each gradient is written once, over whatever the buffer held, except `wte`'s: the LM head
//! writes it and the embedding lookup then adds to it, as in the autograd path.
//!
//! Under `--precision bf16` the same pass runs with bf16 matrix products ([`bf16`]): the weights
//! and each product's input cast to bf16, fp32 results, accumulation and gradients; attention,
//! LayerNorm, GELU, dropout and the loss stay in fp32 (autocast runs GELU and dropout in bf16).

use super::attention::{self, Heads};
use super::dropout::{add_dropped, times_mask, MaskStream};
use super::kernels::{gelu_with_derivative, layer_norm, layer_norm_backward, LayerNormSaved};
use super::{bf16, blas, mlp};
use crate::model::gpt::{affine_backward, dense, Block, Gpt, Products, LN_EPS};
use tch::nn;
use tch::{Device, Kind, Tensor};

/// `x · wᵀ` for `lin`, and its bias still to add. Through BLAS, `linear` copies the bias into the
/// output before the product (`addmm`), a pass over the output that the kernel reading the
/// product next makes unneeded by adding the bias itself; oneDNN adds it within its product.
fn dense_unbiased<'a>(
    lin: &'a nn::Linear,
    x: &Tensor,
    onednn: bool,
) -> (Tensor, Option<&'a Tensor>) {
    match onednn {
        true => (dense(lin, x, onednn), None),
        false => (x.mm(&lin.ws.tr()), lin.bs.as_ref()),
    }
}

/// A dense layer as the pass multiplies by it: in fp32 (BLAS or oneDNN), or in bf16 with its
/// weight cast once a step and fp32 results ([`bf16`], `--precision bf16`).
struct Dense<'a> {
    lin: &'a nn::Linear,
    /// The weight in bf16, for this step's forward and backward; none for fp32 products.
    w16: Option<Tensor>,
    onednn: bool,
}

impl<'a> Dense<'a> {
    fn new(lin: &'a nn::Linear, products: Products) -> Self {
        let w16 = (products == Products::Bf16).then(|| bf16::to_bf16(&lin.ws));
        Dense { lin, w16, onednn: products.onednn() }
    }

    /// Whether the MLP and `c_attn`'s backward run a block of rows at a time through BLAS
    /// ([`mlp`], [`attention::backward_through_dense`]): where there is one and the products
    /// are fp32 ones not through oneDNN.
    fn in_blocks(&self) -> bool {
        self.w16.is_none() && !self.onednn && blas::available()
    }

    /// The rows `x` as this layer's products read them, which is also what its backward
    /// keeps: as they are, or their bf16 copy.
    fn input(&self, x: Tensor) -> Tensor {
        match self.w16 {
            Some(_) => bf16::to_bf16(&x),
            None => x,
        }
    }

    /// `x · wᵀ + b` for rows from [`Dense::input`].
    fn forward(&self, x: &Tensor) -> Tensor {
        match &self.w16 {
            Some(w) => bf16::affine(x, w, self.lin.bs.as_ref()),
            None => dense(self.lin, x, self.onednn),
        }
    }

    /// `x · wᵀ` for rows from [`Dense::input`], and the bias still to add.
    fn forward_unbiased(&self, x: &Tensor) -> (Tensor, Option<&'a Tensor>) {
        match &self.w16 {
            Some(w) => (bf16::affine(x, w, None), self.lin.bs.as_ref()),
            None => dense_unbiased(self.lin, x, self.onednn),
        }
    }

    /// The backward for the output gradient `dy` (N, out) of the rows `x` the forward read:
    /// writes the weight's and bias's gradients over theirs and returns `x`'s (N, in), fp32.
    fn backward(&self, x: &Tensor, dy: &Tensor) -> Tensor {
        let Some(w) = &self.w16 else {
            return affine_backward(x, dy, &self.lin.ws, self.lin.bs.as_ref(), self.onednn);
        };
        bf16::affine_backward(x, dy, &self.lin.ws, w, self.lin.bs.as_ref())
    }
}

/// A block's four dense layers for one step.
struct BlockDense<'a> {
    c_attn: Dense<'a>,
    attn_proj: Dense<'a>,
    c_fc: Dense<'a>,
    mlp_proj: Dense<'a>,
}

/// LayerNorm's affine parameters.
fn ln_params(ln: &nn::LayerNorm) -> (&Tensor, &Tensor) {
    let w = ln.ws.as_ref().expect("LayerNorm with a weight");
    (w, ln.bs.as_ref().expect("LayerNorm with a bias"))
}

fn ln_forward(ln: &nn::LayerNorm, x: &Tensor) -> (Tensor, LayerNormSaved) {
    let (w, b) = ln_params(ln);
    layer_norm(x, w, b, LN_EPS as f32)
}

/// Adds the LayerNorm's input gradient for `dy` into `dx`; writes its parameters' gradients.
fn ln_backward(ln: &nn::LayerNorm, saved: &LayerNormSaved, dy: &Tensor, dx: &mut Tensor) {
    let (w, b) = ln_params(ln);
    layer_norm_backward(dy, saved, w, dx, &mut w.grad(), &mut b.grad());
}

/// The shape of a batch: B sequences of T positions, N = B·T rows.
#[derive(Clone, Copy)]
struct Shape {
    b: i64,
    t: i64,
}

/// What a block's forward keeps for its backward. (N, C) unless noted. The inputs of products
/// (`h1`, `y`, `h2`, GELU's output) are kept as the products read them ([`Dense::input`]):
/// in bf16 under `--precision bf16`.
struct BlockSaved {
    ln_1: LayerNormSaved,
    h1: Tensor,
    /// `c_attn`'s output (N, 3C): q, k and v.
    qkv: Tensor,
    attention: attention::Saved,
    /// The heads' outputs, merged.
    y: Tensor,
    proj_mask: Option<MaskStream>,
    ln_2: LayerNormSaved,
    h2: Tensor,
    /// GELU's output and derivative, (N, 4C).
    gelus: mlp::Saved,
    mlp_mask: Option<MaskStream>,
}

impl Block {
    /// The block's dense layers for a step in `products`.
    fn dense(&self, products: Products) -> BlockDense<'_> {
        let (attn, mlp) = (&self.attn, &self.mlp);
        BlockDense {
            c_attn: Dense::new(&attn.c_attn, products),
            attn_proj: Dense::new(&attn.c_proj, products),
            c_fc: Dense::new(&mlp.c_fc, products),
            mlp_proj: Dense::new(&mlp.c_proj, products),
        }
    }

    /// The MLP on the rows `h` (N, C): its output without `c_proj`'s bias (for the residual's
    /// kernel to add), that bias, what the backward needs, and `h` as `c_fc`'s backward reads it.
    fn mlp_forward<'a>(
        &self,
        d: &BlockDense<'a>,
        h: Tensor,
    ) -> (Tensor, Option<&'a Tensor>, mlp::Saved, Tensor) {
        let mlp = &self.mlp;
        if d.c_fc.in_blocks() {
            let (out, saved) = mlp::forward(&mlp.c_fc, &mlp.c_proj, &h);
            return (out, d.mlp_proj.lin.bs.as_ref(), saved, h);
        }
        let h = d.c_fc.input(h);
        let (f, bias) = d.c_fc.forward_unbiased(&h); // (N, 4C)
        let (gelu, gelu_grad) = gelu_with_derivative(&f, bias);
        let gelu = d.mlp_proj.input(gelu);
        let (out, bias) = d.mlp_proj.forward_unbiased(&gelu);
        (out, bias, mlp::Saved { gelu, gelu_grad }, h)
    }

    /// The block on the rows `x` (N, C) of a batch of `shape`, with dropout `p`.
    fn forward_saving(
        &self,
        d: &BlockDense,
        x: &Tensor,
        shape: Shape,
        p: f64,
    ) -> (Tensor, BlockSaved) {
        let (_, c) = x.size2().expect("(N, C) rows");
        let (Shape { b, t }, nh) = (shape, self.attn.n_head);
        let heads = Heads { b, t, nh, hs: c / nh };
        let (h1, ln_1) = ln_forward(&self.ln_1, x);
        let h1 = d.c_attn.input(h1);
        let qkv = d.c_attn.forward(&h1); // (N, 3C)
        let (y, attention) = attention::forward(&qkv, heads, p); // (N, C)
        let y = d.attn_proj.input(y);
        let (proj, bias) = d.attn_proj.forward_unbiased(&y);
        let proj_mask = MaskStream::for_dropout(p);
        let x1 = add_dropped(x, &proj, bias, proj_mask);

        let (h2, ln_2) = ln_forward(&self.ln_2, &x1);
        let (out, bias, gelus, h2) = self.mlp_forward(d, h2);
        let mlp_mask = MaskStream::for_dropout(p);
        let x2 = add_dropped(&x1, &out, bias, mlp_mask);
        let saved =
            BlockSaved { ln_1, h1, qkv, attention, y, proj_mask, ln_2, h2, gelus, mlp_mask };
        (x2, saved)
    }

    /// Turns `dx` (N, C), the gradient of the block's output, into that of its input, writing
    /// the block's parameter gradients on the way.
    fn backward(&self, d: &BlockDense, s: &BlockSaved, shape: Shape, dx: &mut Tensor) {
        let (attn, mlp) = (&self.attn, &self.mlp);
        let (_, c) = dx.size2().expect("(N, C) rows");
        let (Shape { b, t }, nh) = (shape, attn.n_head);
        let heads = Heads { b, t, nh, hs: c / nh };
        // x2 = x1 + dropout(c_proj(gelu(c_fc(ln_2(x1)))))
        let d_out = times_mask(dx, s.mlp_mask);
        let d_h2 = if d.c_fc.in_blocks() {
            mlp::backward(&mlp.c_fc, &mlp.c_proj, &s.h2, &s.gelus, &d_out)
        } else {
            let mut d_gelu = d.mlp_proj.backward(&s.gelus.gelu, &d_out);
            let d_f = d_gelu.g_mul_(&s.gelus.gelu_grad);
            d.c_fc.backward(&s.h2, &d_f)
        };
        ln_backward(&self.ln_2, &s.ln_2, &d_h2, dx);

        // x1 = x + dropout(c_proj(attention(c_attn(ln_1(x)))))
        let d_proj = times_mask(dx, s.proj_mask);
        let d_y = d.attn_proj.backward(&s.y, &d_proj);
        let d_h1 = if d.c_attn.in_blocks() {
            attention::backward_through_dense(
                &s.attention,
                &s.qkv,
                heads,
                &d_y,
                &attn.c_attn,
                &s.h1,
            )
        } else {
            let d_qkv = attention::backward(&s.attention, &s.qkv, heads, &d_y); // (N, 3C)
            d.c_attn.backward(&s.h1, &d_qkv)
        };
        ln_backward(&self.ln_1, &s.ln_1, &d_h1, dx);
    }
}

impl Gpt {
    /// [`Gpt::forward_backward`] on the CPU; see the module's documentation.
    pub(in crate::model) fn forward_backward_by_hand(
        &self,
        idx: &Tensor,
        index: &Tensor,
        labels: &Tensor,
        scale: f64,
    ) -> Tensor {
        let _guard = tch::no_grad_guard();
        let c = self.config.dims.n_embd;
        let (b, t) = idx.size2().expect("a (B, T) batch of token ids");
        let (n, p, shape) = (b * t, self.config.dropout, Shape { b, t });
        let ids = idx.flatten(0, -1);
        let embedded =
            self.wte.ws.index_select(0, &ids).view([b, t, c]) + self.wpe.ws.narrow(0, 0, t);
        // The mask's values depend only on the element's place in the stream, so (N, C) here
        // draws the same mask as the (B, T, C) of the autograd path.
        let emb_mask = MaskStream::for_dropout(p);
        let mut x = times_mask(&embedded.view([n, c]), emb_mask);
        let dense: Vec<_> = self.h.iter().map(|block| block.dense(self.products)).collect();
        let mut saved = Vec::with_capacity(self.h.len());
        for (block, d) in self.h.iter().zip(&dense) {
            let (next, s) = block.forward_saving(d, &x, shape, p);
            saved.push(s);
            x = next;
        }
        let (hidden, ln_f) = ln_forward(&self.ln_f, &x);
        let (grad_rows, loss) = self.head_backward(&hidden.index_select(0, index), labels, scale);

        let mut d_hidden = Tensor::zeros([n, c], (Kind::Float, Device::Cpu));
        let _ = d_hidden.index_copy_(0, index, &grad_rows);
        let mut dx = Tensor::zeros([n, c], (Kind::Float, Device::Cpu));
        ln_backward(&self.ln_f, &ln_f, &d_hidden, &mut dx);
        for ((block, d), s) in self.h.iter().zip(&dense).zip(&saved).rev() {
            block.backward(d, s, shape, &mut dx);
        }
        let d_embedded = times_mask(&dx, emb_mask); // (N, C)
        let wpe_grad = self.wpe.ws.grad();
        let _ = wpe_grad.narrow(0, t, wpe_grad.size()[0] - t).zero_();
        let _ = d_embedded.view([b, t, c]).sum_intlist_out(
            &wpe_grad.narrow(0, 0, t),
            &[0i64][..],
            false,
            Kind::Float,
        );
        let _ = self.wte.ws.grad().index_add_(0, &ids, &d_embedded);
        loss
    }
}
