//! The CPU's own training pass and kernels: everything under this module runs on the CPU only.
//! The rest of `model` is device-generic; on the CPU it calls in here at four points: the
//! training pass (`Gpt::forward_backward` dispatches to [`pass`] by device), matrix products
//! through oneDNN ([`onednn`], when `--cpu-matmul` picks it), dropout masks drawn by a fast
//! generator ([`dropout`], libtorch's elsewhere) and the LM head's cross-entropy sweep ([`xent`]).
//!
//! The pass ([`pass`]) is laid out as llm.c's train_gpt2.c: each layer's forward beside its
//! backward. Its parts: attention head by head ([`attention`], with [`softmax`]'s fused causal
//! softmax and dropout), the MLP a block of rows at a time ([`mlp`], [`blocked`]), the row-wise
//! LayerNorm and GELU ([`kernels`]), BLAS on slices ([`blas`]), and bf16 products with fp32
//! results ([`bf16`]) for `--precision bf16`.

mod attention;
pub(super) mod bf16;
mod blas;
mod blocked;
pub mod dropout;
mod kernels;
mod mlp;
pub(super) mod onednn;
mod pass;
pub(super) mod reference;
mod softmax;
pub(super) mod xent;
