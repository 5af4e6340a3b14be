//! dp-bench: measures what data-parallel training buys. A GPT-2 translation model trained with
//! libtorch (`tch`), one MPI rank per device, gradients averaged with one all-reduce per step, and
//! honest per-rank epoch metrics. Data flows one way:
//! `Config → Corpus → Tokenizer → Batches (per rank) → Model → Step → EpochRecord → run directory`.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod dist;
pub mod eval;
pub mod fault;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod progress;
pub mod run;
pub mod train;

/// mimalloc for the whole process, libtorch included (its `override` feature exports `malloc`
/// and `free` from the binary, so libtorch's C++ allocations resolve to it too). A training step
/// allocates and frees hundreds of activation-sized tensors; glibc's allocator spent ~8 % of a
/// step in `_int_malloc` and page faults on them, and mimalloc reuses the memory (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The libtorch version the binary was built against (read from the torch package by build.rs).
pub const LIBTORCH_VERSION: &str = env!("DP_BENCH_LIBTORCH_VERSION");

/// Bad input: reported as one line, exit status 2. `quiet` errors are consequences of an error
/// another rank already reported.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
    pub quiet: bool,
}

impl UsageError {
    pub fn error(message: impl Into<String>) -> anyhow::Error {
        UsageError { message: message.into(), quiet: false }.into()
    }

    pub fn quiet_error(message: impl Into<String>) -> anyhow::Error {
        UsageError { message: message.into(), quiet: true }.into()
    }

    pub fn from_err(e: impl std::fmt::Display) -> anyhow::Error {
        Self::error(e.to_string())
    }
}
