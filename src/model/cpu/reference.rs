//! Autograd-side reference code for the CPU: what the hand-written pass ([`super::pass`]) is
//! checked against. On the CPU, training runs the hand-written pass and evaluation runs without
//! dropout, so only `Gpt::hidden(…, train = true)` on a CPU model — which the tests use as the
//! reference — reaches this.

use tch::{Device, Kind, Tensor};

/// `softmax(q·kᵀ/√d + causal mask) · v` with dropout `p` on the attention weights, as
/// `scaled_dot_product_attention` computes it without a fused kernel, with the mask drawn by the
/// fast generator ([`super::dropout`]). (B, nh, T, hs) each. The scale goes on `q` (T·hs
/// elements, not T²) and the mask is added (a vectorised pass whose gradient is the identity)
/// rather than filled in.
pub(in crate::model) fn causal_attention_with_dropout(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: f64,
) -> Tensor {
    let (t, s) = (q.size()[2], k.size()[2]);
    let scale = 1.0 / (q.size()[3] as f64).sqrt();
    let future = causal_mask(t, s, q.device());
    let weights = ((q * scale).matmul(&k.transpose(-2, -1)) + future).softmax(-1, Kind::Float);
    super::dropout::dropout(&weights, p, true).matmul(v)
}

/// The additive causal mask (T, S) of T queries that are the last of S keys: −∞ where a query
/// would attend to a later key, 0 elsewhere.
fn causal_mask(t: i64, s: i64, device: Device) -> Tensor {
    Tensor::full([t, s], f64::NEG_INFINITY, (Kind::Float, device)).triu(s - t + 1)
}
