//! Tensor ↔ slice: a contiguous f32 CPU tensor's values as a Rust slice, for the code that reads
//! or writes them in place (the CPU training pass and the all-reduces). The one place that
//! checks what such a tensor must be and that holds the raw-pointer casts.

use tch::{Device, Kind, Tensor};

/// Panics unless `t` is a contiguous f32 CPU tensor: the only kind whose memory is one run of
/// `numel` f32 values that the host can address.
pub fn check(t: &Tensor) {
    assert!(
        t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous(),
        "a contiguous f32 CPU tensor, not {:?} {:?} {:?}",
        t.device(),
        t.kind(),
        t.size()
    );
}

/// A contiguous f32 CPU tensor's values.
pub fn values(t: &Tensor) -> &[f32] {
    check(t);
    // SAFETY: a contiguous f32 CPU tensor, borrowed (and so alive) for the slice's lifetime; it
    // is only read through the slice.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// A fresh (or exclusively owned) contiguous f32 CPU tensor's values, to write.
pub(crate) fn values_mut(t: &mut Tensor) -> &mut [f32] {
    check(t);
    // SAFETY: as `values`, and `t` is borrowed mutably for the slice's lifetime.
    unsafe { as_mut_slice(t) }
}

/// A contiguous f32 CPU tensor as a mutable slice, where `t` may be a shallow clone of a tensor
/// that other handles (or other ranks, through shared memory) also reach.
///
/// # Safety
/// `t` must be a contiguous CPU float tensor that outlives the slice and that nothing else reads
/// or writes while the slice is alive.
pub(crate) unsafe fn as_mut_slice(t: &mut Tensor) -> &mut [f32] {
    debug_assert!(t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous());
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel())
}
