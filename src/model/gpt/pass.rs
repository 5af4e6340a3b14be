//! One training pass of [`Gpt`]: written out by hand on the CPU (`model::cpu`), through autograd
//! elsewhere, and the tied LM head's part, which both share.

use super::{affine_backward, Gpt, Mask, Products};
use crate::model::cpu;
use tch::{nn, Device, Kind, Tensor};

impl Gpt {
    /// The gradients autograd adds to in [`Gpt::forward_backward_autograd`]: all but `wte`'s.
    fn added_grads(&self) -> Vec<Tensor> {
        fn dense(l: &nn::Linear) -> [Option<&Tensor>; 2] {
            [Some(&l.ws), l.bs.as_ref()]
        }
        fn norm(l: &nn::LayerNorm) -> [Option<&Tensor>; 2] {
            [l.ws.as_ref(), l.bs.as_ref()]
        }
        let blocks = self.h.iter().flat_map(|b| {
            [norm(&b.ln_1), dense(&b.attn.c_attn), dense(&b.attn.c_proj)]
                .into_iter()
                .chain([norm(&b.ln_2), dense(&b.mlp.c_fc), dense(&b.mlp.c_proj)])
                .flatten()
        });
        [Some(&self.wpe.ws)]
            .into_iter()
            .chain(blocks)
            .chain(norm(&self.ln_f))
            .flatten()
            .map(|t| t.grad())
            .collect()
    }

    /// One training pass over the full sequences `idx` (B, T): the forward pass with dropout,
    /// `target_loss_sum`, and the backward pass of `scale ×` it, which writes every gradient of
    /// the model over what its buffer held. The gradients must exist (`dist::FlatGrads` makes
    /// them). Returns the unscaled sum.
    ///
    /// On the CPU the pass is written out by hand (`model::cpu`): no autograd graph, and each
    /// gradient written once. Elsewhere autograd runs it, after zeroing the gradients it adds
    /// to, with both ends of the tied `wte` done by hand: the LM head writes `wte`'s gradient
    /// (`Gpt::head_backward`) and the embedding lookup then adds to it.
    pub fn forward_backward(
        &self,
        idx: &Tensor,
        index: &Tensor,
        labels: &Tensor,
        scale: f64,
    ) -> Tensor {
        match self.device() {
            Device::Cpu if self.products != Products::Bf16 || cpu::bf16::available() => {
                self.forward_backward_by_hand(idx, index, labels, scale)
            }
            _ => self.forward_backward_autograd(idx, index, labels, scale),
        }
    }

    /// [`Gpt::forward_backward`] through autograd. The embedding: the looked-up rows are a leaf
    /// of the graph, and their (B·T, C) gradient is added into `wte`'s gradient row by row, where
    /// autograd would fill a (V, C) zero matrix, add the rows into it, and then add all of it to
    /// the gradient.
    pub(in crate::model) fn forward_backward_autograd(
        &self,
        idx: &Tensor,
        index: &Tensor,
        labels: &Tensor,
        scale: f64,
    ) -> Tensor {
        for mut g in self.added_grads() {
            let _ = g.zero_();
        }
        let c = self.config.dims.n_embd;
        let (b, t) = idx.size2().expect("a (B, T) batch of token ids");
        let ids = idx.flatten(0, -1);
        let tok =
            self.wte.ws.detach().index_select(0, &ids).view([b, t, c]).set_requires_grad(true);
        let pos = Tensor::arange(t, (Kind::Int64, self.device())).unsqueeze(0); // (1, T)
        let hidden = self.run_embedded(&tok, &pos, Mask::Causal, None, true);
        let rows = hidden.view([-1, c]).index_select(0, index); // (n, C)
        let (grad_rows, loss) = {
            let _guard = tch::no_grad_guard();
            self.head_backward(&rows.detach(), labels, scale)
        };
        (&rows * grad_rows).sum(Kind::Float).backward();
        let _guard = tch::no_grad_guard();
        let _ = self.wte.ws.grad().index_add_(0, &ids, &tok.grad().view([-1, c]));
        loss
    }

    /// The tied LM head's part of a training pass on the final hidden states `x` (n, C) at the
    /// target positions: returns their gradient and the unscaled summed loss. The gradient of
    /// cross-entropy w.r.t. the logits is `softmax − one-hot`, so it is written over the (n, V)
    /// logits in place instead of autograd keeping them, their log-softmax and a zero-filled
    /// gradient alive; the head's weight gradient is written straight over `wte`'s gradient,
    /// whatever that held (nothing zeroes `wte`'s 71 % of tiny's buffer).
    pub(in crate::model) fn head_backward(
        &self,
        x: &Tensor,
        labels: &Tensor,
        scale: f64,
    ) -> (Tensor, Tensor) {
        let w = &self.wte.ws;
        // bf16 products with fp32 results on a CPU: the operands cast once.
        let bf16 = self.products == Products::Bf16;
        let bf16_operands = (bf16 && x.device() == Device::Cpu && cpu::bf16::available())
            .then(|| (cpu::bf16::to_bf16(x), cpu::bf16::to_bf16(w)));
        // The gradient over the logits in place: scale · (softmax − one-hot).
        let mut g = match &bf16_operands {
            Some((x16, w16)) => cpu::bf16::affine(x16, w16, None),
            None => self.logits(x).to_kind(Kind::Float).contiguous(), // (n, V), fp32 as autocast's loss
        };
        let loss = if g.device() == Device::Cpu {
            let labels = Vec::<i64>::try_from(labels).expect("int64 labels");
            let loss =
                crate::model::cpu::xent::loss_and_gradient_in_place(&mut g, &labels, scale as f32);
            Tensor::from(loss as f32)
        } else {
            // One row-wise log-softmax pass (as cross_entropy), then exp, scale, one-hot.
            g = g.log_softmax(1, Kind::Float);
            let labels = labels.view([-1, 1]);
            let picked = g.gather(1, &labels, false); // (n, 1)
            let _ = g.exp_().g_mul_scalar_(scale);
            let _ = g.scatter_add_(1, &labels, &Tensor::full_like(&picked, -scale));
            -picked.sum(Kind::Float)
        };
        if let Some((x16, w16)) = &bf16_operands {
            return (cpu::bf16::affine_backward(x16, &g, w, w16, None), loss);
        }
        if bf16 {
            // The head's two backward products in bf16, as autocast's: `wte`'s gradient
            // written over in fp32, the rows' gradient left in bf16.
            let bf16 = |t: &Tensor| t.to_kind(Kind::BFloat16);
            let (g16, x16, w16) = (bf16(&g), bf16(x), bf16(w));
            w.grad().copy_(&g16.tr().mm(&x16));
            return (g16.mm(&w16), loss);
        }
        // Written over `wte`'s gradient, not added to it.
        let grad_rows = affine_backward(x, &g, w, None, self.products.onednn());
        (grad_rows, loss)
    }
}
