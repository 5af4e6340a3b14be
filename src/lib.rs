//! dp-bench: measures what data-parallel training buys. A GPT-2 translation model trained with
//! libtorch (`tch`), one MPI rank per device, gradients averaged with one all-reduce per step, and
//! honest per-rank epoch metrics. Data flows one way:
//! `Config → Corpus → Tokenizer → Batches (per rank) → Model → Step → EpochRecord → run directory`.

pub mod bench;
pub mod checkpoint;
mod checks;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod dist;
pub mod eval;
pub mod fault;
pub mod gate;
pub mod hosts;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod progress;
pub mod run;
mod simd;
pub mod slices;
pub mod train;

/// mimalloc for the whole process, libtorch included (its `override` feature exports `malloc`
/// and `free` from the binary, so libtorch's C++ allocations resolve to it too). A training step
/// allocates and frees hundreds of activation-sized tensors; glibc's allocator spent ~8 % of a
/// step in `_int_malloc` and page faults on them, and mimalloc reuses the memory (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps the memory mimalloc frees for reuse instead of returning it to the OS after 10 ms (its
/// default "purge"): a step frees and reallocates the same activation-sized blocks, and purging
/// them made every step page-fault them back in (~200 k faults and ~1 s of kernel time per
/// 2000-example epoch; ~4 % of the epoch, BENCHMARKS.md). The peak memory is unchanged: what is
/// kept is what the step uses again. `MIMALLOC_PURGE_DELAY` in the environment wins.
pub(crate) fn keep_freed_memory() {
    /// `mi_option_purge_delay` in mimalloc 2 and 3 (`mimalloc.h`).
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mimalloc's documented option setter; -1 means "never purge".
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// The environment variable that makes libtorch run fp32 matrix products on GPUs as TF32
/// (`--precision tf32`); read once, at the first such product.
pub const TF32_VAR: &str = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE";

/// The libtorch version the binary was built against (read from the torch package by build.rs).
pub(crate) const LIBTORCH_VERSION: &str = env!("DP_BENCH_LIBTORCH_VERSION");

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

    pub(crate) fn quiet_error(message: impl Into<String>) -> anyhow::Error {
        UsageError { message: message.into(), quiet: true }.into()
    }

    pub(crate) fn from_err(e: impl std::fmt::Display) -> anyhow::Error {
        Self::error(e.to_string())
    }
}
