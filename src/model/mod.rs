//! GPT-2 as WORKLOAD.md specifies it, in `tch`: the model and the greedy decoder that runs it with
//! a key/value cache. Distribution, losses over batches and optimisers live elsewhere. The model
//! is device-generic; the CPU's hand-written training pass and kernels live in [`cpu`].

pub mod cpu;
pub mod decode;
pub mod gpt;

pub use decode::{greedy_decode, greedy_decode_uncached};
pub use gpt::{Gpt, GptConfig, KvCache};
