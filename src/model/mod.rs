//! GPT-2 as WORKLOAD.md specifies it, in `tch`: the model and the greedy decoder that runs it with
//! a key/value cache. Distribution, losses over batches and optimisers live elsewhere.

mod attention;
mod blas;
mod blocked;
pub mod decode;
pub mod dropout;
pub mod gpt;
mod kernels;
mod mlp;
mod softmax;
mod xent;

pub use decode::{greedy_decode, greedy_decode_uncached};
pub use gpt::{Gpt, GptConfig, KvCache};
