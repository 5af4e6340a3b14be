//! Matrix products through oneDNN (`--cpu-matmul onednn`, the default on CPUs that MKL does not
//! take its fast paths on): the inner product and its backward. oneDNN's tensors live in its own
//! layout, so inputs go in and results come out through a copy; autograd knows both ops.

use tch::Tensor;

/// `x · wᵀ + b` over the last dimension of the non-empty `x`, in oneDNN.
pub(in crate::model) fn affine(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let mut shape = x.size();
    let k = shape.pop().expect("a matrix or more");
    shape.push(w.size()[0]);
    strided(to_onednn(&x.reshape([-1, k])).mkldnn_linear(w, b)).view(shape.as_slice())
}

/// The backward of [`affine`] for the output gradient `dy` (N, out) of the rows `x` (N, in):
/// writes `w`'s gradient (and `b`'s) over whatever it held and returns `x`'s (N, in).
pub(in crate::model) fn affine_backward(
    x: &Tensor,
    dy: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Tensor {
    let dy = to_onednn(dy);
    let (gw, gb) = to_onednn(x).mkldnn_linear_backward_weights(&dy, w, b.is_some());
    w.grad().copy_(&strided(gw));
    if let Some(b) = b {
        b.grad().copy_(&strided(gb));
    }
    strided(Tensor::mkldnn_linear_backward_input(x.size(), &dy, w))
}

/// `t` in oneDNN's layout (a copy).
fn to_onednn(t: &Tensor) -> Tensor {
    t.f_to_mkldnn(None).expect("oneDNN takes contiguous f32 CPU tensors")
}

/// `t` as an ordinary strided tensor: oneDNN ops return their own layout or not, depending on
/// the op and the libtorch version.
fn strided(t: Tensor) -> Tensor {
    if t.is_mkldnn() {
        t.to_dense(None, false)
    } else {
        t
    }
}
