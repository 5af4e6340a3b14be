//! The binding of libtorch's fused AdamW kernel (`at::_fused_adamw_`), compiled from
//! `fused_adamw.cpp` by build.rs because tch 0.24 has no binding for it. Device-generic: libtorch
//! dispatches to its CUDA kernel (one multi-tensor-apply pass) or its CPU one.

use super::AdamWConfig;
use std::ffi::{c_char, c_void, CStr};
use tch::Tensor;

/// tch's tensor handle, an `at::Tensor *` on the C++ side.
type CTensor = *mut c_void;

extern "C" {
    fn dp_bench_fused_adamw(
        params: CTensor,
        grad: CTensor,
        exp_avg: CTensor,
        exp_avg_sq: CTensor,
        step: CTensor,
        found_inf: CTensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
}

/// One AdamW update of `params` and both moments, in place, from `grad` at step `step` (a
/// one-element float tensor holding the step count, 1 on the first update), all on one device.
/// With `found_inf` (one float element there), the kernel reads it and leaves everything as it
/// was when it holds 1. Panics with libtorch's message when the tensors do not fit together,
/// as tch's own ops do.
pub(super) fn fused_adamw(
    [params, grad, exp_avg, exp_avg_sq]: [&Tensor; 4],
    step: &Tensor,
    found_inf: Option<&Tensor>,
    config: &AdamWConfig,
) {
    let AdamWConfig { lr, beta1, beta2, eps, weight_decay } = *config;
    let ptr = |t: &Tensor| t.as_ptr() as CTensor;
    // SAFETY: every pointer is a live tch tensor (an `at::Tensor *`) borrowed for the call; the
    // C++ side changes their values, never the handles, and catches every exception.
    let err = unsafe {
        dp_bench_fused_adamw(
            ptr(params),
            ptr(grad),
            ptr(exp_avg),
            ptr(exp_avg_sq),
            ptr(step),
            found_inf.map_or(std::ptr::null_mut(), ptr),
            lr,
            beta1,
            beta2,
            weight_decay,
            eps,
        )
    };
    if !err.is_null() {
        // SAFETY: a NUL-terminated string from strdup, freed once, here.
        let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
        unsafe { libc::free(err.cast()) };
        panic!("libtorch's fused AdamW: {message}");
    }
}
