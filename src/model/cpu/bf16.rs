//! bf16 matrix products with fp32 results, for the hand-written pass under `--precision bf16`
//! on CPUs with bf16 hardware: MKL's `cblas_gemm_bf16bf16f32` (exported by the x86-64 libtorch
//! builds, AMX or AVX512-BF16 inside), which multiplies bf16 operands, accumulates in fp32 and
//! writes fp32. Autocast's `linear` instead writes a bf16 result that the next operation reads
//! back and widens; here the fp32 result goes straight to the pass's fp32 kernels (bias,
//! GELU, residual, dropout), and each weight gradient is written once, in fp32, over its slot of
//! the gradient buffer. Operands are cast to bf16 once: a layer's weight once a step, an input
//! once, kept for the backward.

use std::ffi::c_int;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// `cblas_gemm_bf16bf16f32`'s signature (LP64; MKL_BF16 is the 16-bit pattern).
type GemmBf16 = unsafe extern "C" fn(
    layout: c_int,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const u16,
    lda: c_int,
    b: *const u16,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
);

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

fn gemm_bf16() -> Option<GemmBf16> {
    static GEMM: OnceLock<Option<GemmBf16>> = OnceLock::new();
    *GEMM.get_or_init(|| {
        // SAFETY: the address of MKL's function of that name, whose signature is MKL's.
        super::blas::symbol(c"cblas_gemm_bf16bf16f32")
            .map(|f| unsafe { std::mem::transmute::<*mut libc::c_void, GemmBf16>(f) })
    })
}

/// Whether the pass can multiply in bf16 by hand: the loaded libtorch exports MKL's bf16 product.
pub(crate) fn available() -> bool {
    gemm_bf16().is_some()
}

/// `t` in bf16, contiguous (a copy).
pub(in crate::model) fn to_bf16(t: &Tensor) -> Tensor {
    t.to_kind(Kind::BFloat16).contiguous()
}

/// A contiguous bf16 matrix's rows and columns.
fn dims(t: &Tensor) -> (usize, usize) {
    assert_eq!(t.kind(), Kind::BFloat16, "a bf16 operand");
    assert!(t.is_contiguous(), "a contiguous operand");
    let (r, c) = t.size2().expect("a matrix");
    (r as usize, c as usize)
}

/// `c = op(a) · op(b) + beta · c` for the contiguous bf16 `a`, `b` and the contiguous fp32 `c`
/// (m × n), `op` transposing where asked.
fn product(a: &Tensor, ta: bool, b: &Tensor, tb: bool, beta: f32, c: &mut Tensor) {
    let ((ar, ac), (br, bc)) = (dims(a), dims(b));
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if tb { (bc, br) } else { (br, bc) };
    assert_eq!(k, kb, "inner dimensions differ");
    assert!(c.kind() == Kind::Float && c.is_contiguous() && c.device() == Device::Cpu);
    assert_eq!(c.size(), [m as i64, n as i64], "an m × n result");
    let gemm = gemm_bf16().expect("MKL's cblas_gemm_bf16bf16f32 in the loaded libtorch");
    let int = |x: usize| c_int::try_from(x).expect("a dimension that fits a C int");
    let flag = |t: bool| if t { TRANS } else { NO_TRANS };
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: each operand is a contiguous CPU matrix of the asserted shape, so the leading
    // dimensions are their row lengths and MKL addresses nothing outside them; `c` is
    // exclusively borrowed.
    unsafe {
        gemm(
            ROW_MAJOR,
            flag(ta),
            flag(tb),
            int(m),
            int(n),
            int(k),
            1.0,
            a.data_ptr() as *const u16,
            int(ac.max(1)),
            b.data_ptr() as *const u16,
            int(bc.max(1)),
            beta,
            c.data_ptr() as *mut f32,
            int(n),
        )
    }
}

/// `x · wᵀ (+ b)` in fp32 for the bf16 rows `x` (N, in) and weight `w` (out, in): the bias, if
/// any, copied into the result first and the product added to it.
pub(in crate::model) fn affine(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let (n, out) = (x.size()[0], w.size()[0]);
    let mut y = match b {
        Some(b) => b.expand([n, out], false).contiguous(),
        None => Tensor::empty([n, out], (Kind::Float, Device::Cpu)),
    };
    product(x, false, w, true, if b.is_some() { 1.0 } else { 0.0 }, &mut y);
    y
}

/// The backward of [`affine`] for the fp32 output gradient `dy` (N, out) of the bf16 rows `x`
/// (N, in), `w16` being the fp32 parameter `w`'s bf16 copy: writes `dyᵀ · x` over `w`'s gradient
/// (and `dy`'s column sums over `b`'s), in fp32, and returns `dy · w` (N, in), `x`'s gradient.
/// `dy` is cast to bf16 once, for both products.
pub(in crate::model) fn affine_backward(
    x: &Tensor,
    dy: &Tensor,
    w: &Tensor,
    w16: &Tensor,
    b: Option<&Tensor>,
) -> Tensor {
    let dy16 = to_bf16(dy);
    product(&dy16, true, x, false, 0.0, &mut w.grad());
    if let Some(b) = b {
        let _ = dy.sum_intlist_out(&b.grad(), &[0i64][..], false, Kind::Float);
    }
    let mut dx = Tensor::empty([dy.size()[0], w16.size()[1]], (Kind::Float, Device::Cpu));
    product(&dy16, false, w16, false, 0.0, &mut dx);
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against fp32 products of the same bf16 values (exact inputs, so only the summation
    /// order differs).
    #[test]
    fn products_match_fp32_products_of_the_same_values() {
        if !available() {
            eprintln!("no cblas_gemm_bf16bf16f32 in this libtorch: nothing to test");
            return;
        }
        let opts = (Kind::Float, Device::Cpu);
        let bf = |t: Tensor| to_bf16(&t);
        let (x, w, dy) = (
            bf(Tensor::randn([7, 5], opts)),
            bf(Tensor::randn([3, 5], opts)),
            bf(Tensor::randn([7, 3], opts)),
        );
        let b = Tensor::randn([3], opts);
        let f = |t: &Tensor| t.to_kind(Kind::Float);
        let close = |a: &Tensor, e: &Tensor| a.allclose(e, 1e-5, 1e-5, false);
        assert!(close(&affine(&x, &w, Some(&b)), &(f(&x).mm(&f(&w).tr()) + &b)), "affine");
        assert!(close(&affine(&x, &w, None), &f(&x).mm(&f(&w).tr())), "without a bias");
        // The backward onto fp32 parameters whose gradients (views of one flat buffer, as in
        // training) hold NaNs: each is written over.
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let (wp, bp) = (vs.root().var_copy("w", &f(&w)), vs.root().var_copy("b", &b));
        let grads = crate::dist::FlatGrads::new(
            &vs.trainable_variables(),
            &crate::dist::Solo,
            crate::config::AllReduce::Mpi,
        );
        let _ = grads.buffer().shallow_clone().fill_(f64::NAN);
        let dx = affine_backward(&x, &f(&dy), &wp, &w, Some(&bp));
        assert!(close(&wp.grad(), &f(&dy).tr().mm(&f(&x))), "weight gradient over NaNs");
        assert!(close(&bp.grad(), &f(&dy).sum_dim_intlist(0, false, Kind::Float)), "bias");
        assert!(close(&dx, &f(&dy).mm(&f(&w))), "input gradient");
        let empty = bf(Tensor::empty([0, 5], opts));
        assert_eq!(affine(&empty, &w, Some(&b)).size(), [0, 3]);
    }

    /// The hand-written pass in bf16 against autograd's bf16 pass (autocast's casts, bf16
    /// results rounded between operations): the same loss and gradients to bf16's precision.
    #[test]
    fn the_bf16_pass_by_hand_matches_autograd_in_bf16() {
        use crate::config::{Precision, Preset};
        use crate::model::gpt::{Gpt, GptConfig};
        if !available() {
            eprintln!("no cblas_gemm_bf16bf16f32 in this libtorch: nothing to test");
            return;
        }
        tch::manual_seed(0);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let cfg = GptConfig {
            precision: Precision::Bf16,
            ..GptConfig::new(Preset::Tiny.dims(), 50, 0.0)
        };
        let m = Gpt::new(&vs.root(), cfg);
        let vars = vs.trainable_variables();
        let grads =
            crate::dist::FlatGrads::new(&vars, &crate::dist::Solo, crate::config::AllReduce::Mpi);
        let idx = Tensor::randint(50, [3, 9], (Kind::Int64, Device::Cpu));
        let index = Tensor::from_slice(&[0i64, 4, 5, 13, 26]);
        let labels = Tensor::from_slice(&[3i64, 49, 0, 7, 7]);
        let _ = grads.buffer().shallow_clone().fill_(7.0);
        let autograd_loss = m.forward_backward_autograd(&idx, &index, &labels, 0.25);
        let autograd = grads.buffer().copy();
        let _ = grads.buffer().shallow_clone().fill_(7.0);
        let loss = m.forward_backward_by_hand(&idx, &index, &labels, 0.25);
        let ours = grads.buffer().copy();
        let (a, b) = (autograd_loss.double_value(&[]), loss.double_value(&[]));
        assert!((a - b).abs() < 1e-2 * a.abs(), "loss {b} against autograd's {a}");
        let norm = |t: &Tensor| t.norm().double_value(&[]);
        let relative = norm(&(&ours - &autograd)) / norm(&autograd);
        assert!(relative < 2e-2, "gradients differ by {relative} of their norm");
        assert!(norm(&autograd) > 0.0);
    }
}
