//! The values a configuration chooses among: model presets and dimensions, partitions, padding,
//! matrix-product kernels, all-reduce and optimiser-state placement, devices and datasets, each
//! written as the command line spells it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Model size presets from WORKLOAD.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Tiny,
    Small,
    Gpt2,
}

/// The dimensions of a GPT-2 model; `vocab_size` is filled in once the tokenizer is trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelDims {
    pub n_layer: i64,
    pub n_embd: i64,
    pub n_head: i64,
    pub n_positions: i64,
}

impl Preset {
    /// WORKLOAD.md's preset table.
    pub fn dims(self) -> ModelDims {
        let (n_layer, n_embd, n_head, n_positions) = match self {
            Preset::Tiny => (2, 128, 4, 128),
            Preset::Small => (4, 256, 4, 128),
            Preset::Gpt2 => (12, 768, 12, 1024),
        };
        ModelDims { n_layer, n_embd, n_head, n_positions }
    }

    /// Tokenizer vocabulary cap (WORKLOAD.md: 8000 for tiny/small, GPT-2's 50257 for gpt2).
    pub(crate) fn vocab_cap(self) -> usize {
        match self {
            Preset::Tiny | Preset::Small => 8000,
            Preset::Gpt2 => 50257,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::Gpt2 => "gpt2",
        })
    }
}

/// Model dimensions that replace the preset's (a custom model); `None` keeps the preset's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::Args)]
pub struct CustomDims {
    /// Custom model: transformer blocks [default: the preset's]
    #[arg(long)]
    pub n_layer: Option<i64>,
    /// Custom model: embedding width, a multiple of --n-head [default: the preset's]
    #[arg(long)]
    pub n_embd: Option<i64>,
    /// Custom model: attention heads [default: the preset's]
    #[arg(long)]
    pub n_head: Option<i64>,
    /// Custom model: rows of the position table, at least --model-max-length [default: the
    /// preset's]
    #[arg(long)]
    pub n_positions: Option<i64>,
}

/// How the shuffled training set is split across ranks (WORKLOAD.md, "Partitioning").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Partition {
    /// Rank r takes shuffled positions r, r+N, r+2N, …: step k of N ranks sees exactly the
    /// examples of step k of one rank with the same global batch.
    Strided,
    /// The original DataPartitioner: N consecutive slices of the shuffled order.
    Contiguous,
    /// Strided's global batches, each dealt to the ranks so that their work is as even as
    /// possible (B/N examples each; the target tokens, plus the sequence lengths under dynamic
    /// padding): the same global batches and gradients, less waiting for the slowest rank.
    Balanced,
    /// Strided's global batches, each dealt at run time in proportion to how fast each rank has
    /// been computing (its recent steps' work per second, exchanged at the step's barrier): a rank
    /// that its host slows gets fewer examples. The same global batches and gradients; the deal,
    /// and so which rank's dropout stream masks an example, depends on timing.
    Adaptive,
}

/// Writes an option value as the command line spells it (`balanced`, `onednn`, …).
fn write_value_name<T: clap::ValueEnum>(value: &T, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let name = value.to_possible_value().expect("no skipped variants");
    f.write_str(name.get_name())
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

/// How a batch's sequences are padded (WORKLOAD.md, "Task and examples").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// Every sequence padded to `model_max_length`, as the original script: what the benchmark
    /// compares.
    #[default]
    Fixed,
    /// Padded to the longest sequence of the batch. Padding is on the right and attention is
    /// causal, so the loss is the same function of the same numbers; only the work shrinks.
    Dynamic,
}

/// Which kernels multiply matrices on the CPU. PyTorch's wheels bring two libraries: MKL's BLAS,
/// which libtorch calls for `matmul` and `linear`, and oneDNN. On CPUs that MKL does not
/// recognise as Intel's (AMD EPYC, for one) MKL runs its AVX2 kernels even where the CPU has
/// AVX-512, and oneDNN's fp32 kernels are about twice as fast; on Intel CPUs MKL runs AVX-512
/// itself and oneDNN only adds copies into and out of its own layout (BENCHMARKS.md). Both
/// compute in fp32; only the order of the sums differs. GPUs always use cuBLAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CpuMatmul {
    /// BLAS on Intel CPUs, oneDNN on others (resolved when the configuration is made, so
    /// `run.json` records the kernels that ran).
    #[default]
    Auto,
    /// oneDNN, when libtorch was built with it (otherwise BLAS).
    Onednn,
    /// libtorch's BLAS (MKL in PyTorch's x86 wheels).
    Blas,
}

impl CpuMatmul {
    /// What runs before this option existed: BLAS.
    pub(super) fn legacy() -> Self {
        CpuMatmul::Blas
    }

    /// `Auto` made concrete for this machine's CPU: BLAS where MKL takes its own fast paths
    /// (an Intel CPU), oneDNN elsewhere.
    pub(crate) fn resolve(self) -> Self {
        match self {
            CpuMatmul::Auto if cpu_vendor().as_deref() == Some("GenuineIntel") => CpuMatmul::Blas,
            CpuMatmul::Auto => CpuMatmul::Onednn,
            concrete => concrete,
        }
    }
}

impl fmt::Display for CpuMatmul {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

/// The CPU's vendor string (`GenuineIntel`, `AuthenticAMD`, …), where the architecture has one.
fn cpu_vendor() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaf 0 exists on every x86-64 CPU; the vendor is EBX, EDX, ECX in that order.
        // (`__cpuid` is safe to call in newer Rust; the block is for the versions where it is not.)
        #[allow(unused_unsafe)]
        // SAFETY: CPUID is available on every x86-64 CPU and leaf 0 on every one of those; the
        // instruction only reads identification registers.
        let r = unsafe { std::arch::x86_64::__cpuid(0) };
        let bytes: Vec<u8> = [r.ebx, r.edx, r.ecx].iter().flat_map(|w| w.to_le_bytes()).collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// How the ranks sum their gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AllReduce {
    /// NCCL on GPUs when it loads, shm otherwise (resolved when the configuration is made, so
    /// `run.json` records what ran).
    #[default]
    Auto,
    /// The ranks of a host sum in memory they share (an MPI-3 shared window; one read and one
    /// write of each byte), then MPI between hosts. Plain MPI where ranks share no memory. GPU
    /// gradients are staged through host memory.
    Shm,
    /// `MPI_Allreduce` of the flat gradient buffer, in 4 MiB pieces (staged through host memory
    /// on GPUs).
    Mpi,
    /// NCCL on the GPUs (`--device cuda`): one in-place `ncclAllReduce` of the flat buffer a
    /// step, MPI only to set the communicator up. NCCL is loaded at run time
    /// (`dist::nccl`).
    Nccl,
}

impl AllReduce {
    /// What runs before this option existed: MPI.
    pub(super) fn legacy() -> Self {
        AllReduce::Mpi
    }

    /// `Auto` made concrete for `device`: NCCL on GPUs when `nccl_loads()`, shm otherwise
    /// (NCCL is not looked for on CPUs).
    pub(crate) fn resolve(self, device: DeviceKind, nccl_loads: impl FnOnce() -> bool) -> Self {
        match (self, device) {
            (AllReduce::Auto, DeviceKind::Cuda) if nccl_loads() => AllReduce::Nccl,
            (AllReduce::Auto, _) => AllReduce::Shm,
            (concrete, _) => concrete,
        }
    }
}

impl fmt::Display for AllReduce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

/// The number formats of training (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// fp32 throughout (WORKLOAD.md's contract).
    #[default]
    Fp32,
    /// fp32 tensors, matrix products on TF32 tensor cores (GPUs only).
    Tf32,
    /// Mixed precision as PyTorch's autocast does it: fp32 parameters, gradients and AdamW
    /// state; matrix products and attention in bf16; LayerNorm, softmax and the loss in fp32
    /// (GPUs only).
    Bf16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

/// Where the optimiser's state (parameters and AdamW moments) lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerState {
    /// One copy per host, in memory the host's ranks share, each rank updating its own segment
    /// (ZeRO stage 1 within a host). Applies where gradients are summed in shared memory
    /// (`--allreduce shm`, CPU, two or more ranks a host); elsewhere the state is replicated.
    /// A host holds one copy of the state instead of one per rank, and streams it once per step
    /// instead of once per rank: 2-rank epochs ~1.5 % shorter on the 2-core bench machine, whose
    /// cores slow each other through memory (BENCHMARKS.md).
    #[default]
    Sharded,
    /// A full copy on every rank, every rank doing the whole update.
    Replicated,
}

impl OptimizerState {
    /// What runs before `sharded` became the default: replicated.
    pub(super) fn legacy() -> Self {
        OptimizerState::Replicated
    }
}

/// The kind of device each rank trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

/// Where the parallel text comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetSpec {
    /// The built-in German→English corpus, generated from the seed.
    Synthetic,
    /// A directory of parallel files or a JSON-lines file.
    Path(PathBuf),
}

impl std::str::FromStr for DatasetSpec {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "synthetic" { DatasetSpec::Synthetic } else { DatasetSpec::Path(s.into()) })
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetSpec::Synthetic => f.write_str("synthetic"),
            DatasetSpec::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_allreduce_is_nccl_on_gpus_where_it_loads() {
        use AllReduce::*;
        assert_eq!(Auto.resolve(DeviceKind::Cuda, || true), Nccl);
        assert_eq!(Auto.resolve(DeviceKind::Cuda, || false), Shm);
        assert_eq!(Auto.resolve(DeviceKind::Cpu, || true), Shm);
        assert_eq!(Mpi.resolve(DeviceKind::Cuda, || true), Mpi, "a choice stays");
        assert_eq!(Nccl.to_string(), "nccl");
    }

    #[test]
    fn auto_matmul_resolves_by_vendor_and_concrete_choices_stay() {
        let vendor = cpu_vendor();
        let want = if vendor.as_deref() == Some("GenuineIntel") {
            CpuMatmul::Blas
        } else {
            CpuMatmul::Onednn
        };
        assert_eq!(CpuMatmul::Auto.resolve(), want, "vendor {vendor:?}");
        assert_eq!(CpuMatmul::Onednn.resolve(), CpuMatmul::Onednn);
        assert_eq!(CpuMatmul::Blas.resolve(), CpuMatmul::Blas);
        #[cfg(target_arch = "x86_64")]
        assert!(vendor.is_some_and(|v| v.len() == 12), "CPUID's vendor is 12 bytes");
    }
}
