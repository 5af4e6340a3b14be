//! The one typed configuration of a training run: model presets, data sizes, distribution and
//! measurement options, and `validate()`, which every entry point calls before any work starts.
//! It owns no I/O; the command line (`cli`) builds it and the run directory (`metrics`) stores it.

mod choices;

pub use choices::{
    AllReduce, CpuMatmul, CustomDims, DatasetSpec, DeviceKind, ModelDims, OptimizerState, Padding,
    Partition, Precision, Preset,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Headings of `dp-bench --help`, one per group of flags.
const MODEL: &str = "Model";
const DATA: &str = "Data";
const TRAINING: &str = "Training";
const DISTRIBUTION: &str = "Distribution";
const MEASUREMENT: &str = "Measurement";
const TURNS: &str = "Benchmark plumbing (set by `cargo bench`)";

/// A count that the command line may leave to the run (`auto`): replaced by
/// [`Config::resolve`] once MPI is up.
pub(crate) const AUTO: usize = usize::MAX;

/// `auto` or a whole number (validated later, so `0` gets the message that names its flag).
fn count_or_auto(s: &str) -> Result<usize, String> {
    match s {
        "auto" => Ok(AUTO),
        _ => s.parse().map_err(|e| format!("{e}: a whole number, or auto")),
    }
}

/// Everything that defines a training run, and the command line's training flags: each field
/// is its flag (kebab-case, with the seed script's underscore spellings as aliases), under the
/// heading of its group in `--help`. Two runs with equal `Config`s (less `workdir` and
/// `overwrite`) do the same work. [`Config::resolve`] fills in what the command line leaves to
/// the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct Config {
    /// Number of ranks; must equal the MPI world size [default: the MPI world size]
    #[arg(long, alias = "world_size", help_heading = DISTRIBUTION, default_value = "auto", hide_default_value = true, value_parser = count_or_auto)]
    pub world_size: usize,
    /// GLOBAL batch size: each of the N ranks takes batch-size / N examples per step
    #[arg(long, alias = "batch_size", help_heading = TRAINING, default_value_t = 64)]
    pub batch_size: usize,
    /// Training epochs (the first is warm-up for the benchmark statistics)
    #[arg(long, alias = "n_epochs", help_heading = TRAINING, default_value_t = 10)]
    pub n_epochs: usize,
    /// AdamW learning rate
    #[arg(long, alias = "learning_rate", help_heading = TRAINING, default_value_t = 1e-4)]
    pub learning_rate: f64,
    /// Sequence length: examples are cut to this many input positions and padded to it
    #[arg(long, alias = "model_max_length", help_heading = MODEL, default_value_t = 128)]
    pub model_max_length: usize,
    /// Model size: tiny (2×128), small (4×256) or gpt2 (12×768)
    #[arg(long, value_enum, help_heading = MODEL, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    #[serde(default)]
    #[command(flatten)]
    pub custom_dims: CustomDims,
    /// `synthetic` (built-in German→English corpus from the seed), a directory of
    /// train/val/test .de/.en files (optionally .gz; Multi30k and IWSLT14 layouts), or a
    /// JSON-lines file of {"translation": {"de": …, "en": …}} records
    #[arg(long, help_heading = DATA, default_value = "synthetic")]
    pub dataset: DatasetSpec,
    /// Training pairs taken from the start of the train split
    #[arg(long, alias = "train_examples", help_heading = DATA, default_value_t = 5000)]
    pub train_examples: usize,
    /// Validation pairs (validation loss)
    #[arg(long, alias = "val_examples", help_heading = DATA, default_value_t = 1000)]
    pub val_examples: usize,
    /// Test pairs (greedy translation and BLEU)
    #[arg(long, alias = "test_examples", help_heading = DATA, default_value_t = 100)]
    pub test_examples: usize,
    /// Seed of the corpus, the shuffle, the initial weights and dropout
    #[arg(long, help_heading = TRAINING, default_value_t = 1234)]
    pub seed: u64,
    /// Intra-op threads per rank. The same whatever the world size, so that runs of 1 and N
    /// ranks give each rank the same share of the machine and compare one device with N; `auto`
    /// gives each rank the host's cores divided by the ranks on the host
    #[arg(long, help_heading = DISTRIBUTION, default_value = "1", value_parser = count_or_auto)]
    pub threads: usize,
    /// cpu, or cuda (each rank uses the GPU of its index among its host's ranks; with NCCL
    /// every rank needs a GPU of its own)
    #[arg(long, value_enum, help_heading = DISTRIBUTION, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Number formats: fp32 (the workload's), tf32 (fp32 tensors, TF32 tensor-core matrix
    /// products) or bf16 (mixed precision: fp32 parameters, gradients and optimiser state, bf16
    /// matrix products and attention). tf32 and bf16 need --device cuda
    #[serde(default)]
    #[arg(long, value_enum, help_heading = TRAINING, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// How training examples are split across ranks: strided (N ranks see the same examples per
    /// step as one rank), balanced (strided's steps, each dealt to even out the ranks' work),
    /// adaptive (dealt in proportion to each rank's measured speed) or contiguous (the original
    /// DataPartitioner)
    #[arg(long, value_enum, help_heading = DISTRIBUTION, default_value_t = Partition::Strided)]
    pub partition: Partition,
    /// fixed (every sequence padded to --model-max-length, as the original) or dynamic (to the
    /// longest sequence of each rank's batch: the same loss, less work)
    #[serde(default)]
    #[arg(long, value_enum, help_heading = DATA, default_value_t = Padding::Fixed)]
    pub padding: Padding,
    /// With --padding dynamic: form each global batch from examples of similar length (all
    /// examples sorted by length, cut into batches, batches shuffled with the seed), so batches
    /// carry little padding
    #[serde(default)]
    #[arg(long, help_heading = DATA)]
    pub bucket_by_length: bool,
    /// Matrix products on the CPU: onednn (oneDNN's fp32 kernels; AVX-512 wherever the CPU has
    /// it), blas (libtorch's BLAS: MKL, which runs AVX2 kernels on AMD CPUs) or auto (blas on
    /// Intel CPUs, onednn elsewhere)
    #[serde(default = "CpuMatmul::legacy")]
    #[arg(long, value_enum, help_heading = MODEL, default_value_t = CpuMatmul::Auto)]
    pub cpu_matmul: CpuMatmul,
    /// How ranks sum gradients: shm (the ranks of a host in memory they share, MPI between
    /// hosts), mpi (MPI_Allreduce of the flat buffer in 4 MiB pieces), nccl (on the GPUs, one
    /// ncclAllReduce a step; needs --device cuda) or auto (nccl on GPUs where NCCL loads, shm
    /// otherwise)
    #[serde(default = "AllReduce::legacy")]
    #[arg(long, value_enum, help_heading = DISTRIBUTION, default_value_t = AllReduce::Auto)]
    pub allreduce: AllReduce,
    /// Where parameters and AdamW moments live: sharded (one copy per host in shared memory, each
    /// rank updating its own part, as ZeRO stage 1; needs --allreduce shm and the CPU, else
    /// replicated) or replicated (a copy and the whole update on every rank)
    #[serde(default = "OptimizerState::legacy")]
    #[arg(long, value_enum, help_heading = DISTRIBUTION, default_value_t = OptimizerState::Sharded)]
    pub optimizer_state: OptimizerState,
    /// Dropout on embeddings, attention weights and residual branches
    #[arg(long, help_heading = MODEL, default_value_t = 0.1)]
    pub dropout: f64,
    /// Skip validation loss and BLEU (training time only)
    #[arg(long, alias = "benchmark_only", help_heading = MEASUREMENT)]
    pub benchmark_only: bool,
    /// Train at most this many steps per epoch
    #[arg(long, alias = "max_batches", help_heading = MEASUREMENT)]
    pub max_batches: Option<usize>,
    /// Directory for metrics, the tokenizer and the final weights
    #[serde(skip)]
    #[arg(long, help_heading = MEASUREMENT, default_value = "workdir")]
    pub workdir: PathBuf,
    /// Replace the results of a different configuration in the workdir
    #[serde(skip)]
    #[arg(long, help_heading = MEASUREMENT, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Continue a stopped run in the workdir from its last completed epoch (its checkpoint); the
    /// configuration must match, except --n-epochs, which may grow
    #[serde(skip)]
    #[arg(long, help_heading = MEASUREMENT)]
    pub resume: bool,
    /// Before each epoch, wait until the file `open-epoch{E}` exists in DIR (after creating
    /// `ready-epoch{E}.rank{R}` there). E counts from 0 over the whole run, so a run continued
    /// with --resume first waits at the epoch it continues from. The benches run their
    /// configurations side by side this way, taking turns
    #[serde(skip)]
    #[arg(long, value_name = "DIR", help_heading = TURNS)]
    pub epoch_gate: Option<PathBuf>,
    /// With --epoch-gate, also stop at a gate every N examples of the epoch (whole steps: N ÷
    /// --batch-size, at least one), `open-epoch{E}.part{P}`, so that runs take turns within
    /// epochs. Time stopped is not training time
    #[serde(skip)]
    #[arg(long, value_name = "N", requires = "epoch_gate", help_heading = TURNS)]
    pub turn_examples: Option<usize>,
    /// With --turn-examples on one rank and one thread: run each part of an epoch on the next of
    /// the first N cores that the process may use (part p of epoch e on the ((e × parts + p) mod
    /// N)-th), the cores `mpirun -bind-to core` gives N ranks, so that a 1-rank baseline samples
    /// every core an N-rank run uses, not only the first
    #[serde(skip)]
    #[arg(long, value_name = "N", requires = "turn_examples", help_heading = TURNS, default_value_t = 0, hide_default_value = true)]
    pub rotate_cores: usize,
    /// Every MPI rank trains this run as a one-rank run of its own, talking to no other:
    /// `mpirun -n N dp-bench --independent …` trains N independent copies side by side, copy R
    /// into WORKDIR/copyR. They share the host's caches, memory bandwidth and power as N ranks
    /// do but exchange nothing, so their summed throughput ÷ N × one rank's alone is the most
    /// data-parallel training can reach on those cores. `dp-bench compare` reads WORKDIR as one
    /// run of N ranks (`ws{N}_bs{N·B}_independent`) and gives each N-rank run's share of it
    #[serde(skip)]
    #[arg(long, conflicts_with = "world_size", help_heading = TURNS)]
    pub independent: bool,
    /// Seconds an NCCL all-reduce may take before the rank aborts the communicator and the job
    /// ends with a line naming the timeout (a peer that died inside a collective often raises
    /// no NCCL error between GPUs of one host); as PyTorch's NCCL timeout
    #[serde(skip)]
    #[arg(long, value_name = "SECS", help_heading = MEASUREMENT, default_value_t = 600)]
    pub collective_timeout: u64,
    /// Independent copies of this one-rank run side by side, one per MPI rank, none talking to
    /// another (`--independent`, each into [`Config::copy_dir`]); 1 for an ordinary run.
    #[serde(default = "one_copy")]
    #[arg(skip = 1usize)]
    pub copies: usize,
    /// Which of the `copies` this process trains (its MPI rank); 0 in an ordinary run.
    #[serde(skip)]
    #[arg(skip)]
    pub copy: usize,
}

fn one_copy() -> usize {
    1
}

/// A configuration that cannot run, with the fix in the message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("--world-size {given} does not match the MPI world size {mpi}: launch with `mpirun -n {given}` or pass --world-size {mpi}")]
    WorldSizeMismatch { given: usize, mpi: usize },
    #[error("--batch-size must be at least 1")]
    ZeroBatch,
    #[error("--batch-size {batch} is not divisible by the world size {world}: use a multiple of {world}")]
    BatchNotDivisible { batch: usize, world: usize },
    #[error("--n-epochs must be at least 1")]
    ZeroEpochs,
    #[error("--threads {threads}: this process may use {cores} cores, so at most {cores} threads can run at once: lower --threads (or leave it to auto)")]
    TooManyThreads { threads: usize, cores: usize },
    #[error("--collective-timeout must be at least 1 second")]
    ZeroCollectiveTimeout,
    #[error("--threads must be at least 1")]
    ZeroThreads,
    #[error("--train-examples must be at least 1")]
    ZeroTrain,
    #[error("--model-max-length {len} must be between 2 and the model's {positions} positions: shorten it, or raise --n-positions")]
    MaxLength { len: usize, positions: i64 },
    #[error("--{name} {value} must be at least 1")]
    NonPositiveDim { name: &'static str, value: i64 },
    #[error("--n-embd {n_embd} is not divisible by --n-head {n_head}: each head takes n_embd / n_head dimensions; pick a multiple of {n_head}")]
    HeadsDontDivide { n_embd: i64, n_head: i64 },
    #[error("--dropout {0} must be in [0, 1)")]
    Dropout(f64),
    #[error("--learning-rate {0} must be positive and finite")]
    LearningRate(f64),
    #[error("--max-batches must be at least 1")]
    ZeroMaxBatches,
    #[error(
        "--bucket-by-length only pays with --padding dynamic: add it, or drop --bucket-by-length"
    )]
    BucketWithoutDynamic,
    #[error("--epoch-gate {0}: not a directory (whoever opens the gates creates it first)")]
    NoGateDir(PathBuf),
    #[error("--turn-examples must be at least 1")]
    ZeroTurnExamples,
    #[error("--rotate-cores moves one thread of one rank between cores: it needs --world-size 1 and --threads 1")]
    RotateNotAlone,
    #[error("--independent trains one copy of a one-rank run per MPI rank: launch at least 2 (`mpirun -n 2 dp-bench --independent …`)")]
    IndependentAlone,
    #[error("--independent copies a one-rank run, each rank on its own core: drop --world-size and --rotate-cores")]
    IndependentNotOneRank,
    #[error("--allreduce nccl sums GPU buffers: it needs --device cuda (on CPUs use --allreduce shm or mpi)")]
    NcclOnCpu,
    #[error(
        "--precision tf32 is a GPU's tensor-core format: it needs --device cuda (CPUs train in fp32, or bf16 where they have bf16 hardware)"
    )]
    Tf32OnCpu,
    #[error(
        "--precision bf16 on a CPU needs bf16 products in hardware (AMX-BF16 or AVX512-BF16), which this CPU ({0}) lacks: libtorch would emulate them slower than fp32. Use --precision fp32 here, or a CPU that lists amx_bf16 or avx512_bf16 in lscpu"
    )]
    Bf16WithoutHardware(String),
}

/// Refuses a `--precision` this CPU cannot run at speed: tf32 (a GPU format) anywhere, bf16
/// without bf16 hardware (`simd::bf16_products`).
pub(crate) fn cpu_precision(precision: Precision) -> Result<(), ConfigError> {
    precision_on(precision, crate::simd::bf16_products())
}

/// [`cpu_precision`] on a CPU whose bf16 hardware is `bf16` (the feature's name, if any).
fn precision_on(precision: Precision, bf16: Option<&str>) -> Result<(), ConfigError> {
    match (precision, bf16) {
        (Precision::Fp32, _) | (Precision::Bf16, Some(_)) => Ok(()),
        (Precision::Tf32, _) => Err(ConfigError::Tf32OnCpu),
        (Precision::Bf16, None) => Err(ConfigError::Bf16WithoutHardware(cpu_name())),
    }
}

/// This CPU's model name, as the refusals name it.
fn cpu_name() -> String {
    match crate::metrics::cpu_description() {
        d if d.is_empty() => "model unknown".to_string(),
        d => d,
    }
}

impl Config {
    /// Fills in what the command line left to the machine, for an MPI world of `mpi_size` ranks,
    /// `local_ranks` of them on this host: the world size (the MPI world's; 1 for independent
    /// copies, which are as many as the MPI world's ranks), `--threads auto` (the host's cores
    /// divided by its ranks), and `--cpu-matmul auto` made concrete for this CPU.
    pub(crate) fn resolve(mut self, mpi_size: usize, local_ranks: usize) -> Config {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if self.world_size == AUTO {
            self.world_size = if self.independent { 1 } else { mpi_size };
        }
        if self.threads == AUTO {
            self.threads = (cores / local_ranks.max(1)).max(1);
        }
        self.cpu_matmul = self.cpu_matmul.resolve();
        let nccl_loads = || crate::dist::nccl::library().is_ok();
        self.allreduce = self.allreduce.resolve(self.device, nccl_loads);
        self.copies = if self.independent { mpi_size } else { 1 };
        self
    }

    /// Steps between two stops within an epoch (`--turn-examples`), when runs take turns within
    /// epochs: whole global batches, at least one.
    pub(crate) fn steps_per_turn(&self) -> Option<usize> {
        let examples = self.turn_examples.filter(|_| self.epoch_gate.is_some())?;
        Some((examples / self.batch_size).max(1))
    }

    pub fn local_batch_size(&self) -> usize {
        self.batch_size / self.world_size
    }

    /// The run directory of copy `copy` of an `--independent` run into `workdir`.
    pub(crate) fn copy_dir(workdir: &Path, copy: usize) -> PathBuf {
        workdir.join(format!("copy{copy}"))
    }

    /// The rank this process stands at epoch gates as: its own, or in a set of independent
    /// copies (each rank 0 of a run of its own) its copy, so the copies wait as one run's ranks.
    pub(crate) fn gate_rank(&self, rank: usize) -> usize {
        rank + self.copy
    }

    /// The preset's dimensions with any custom ones (`--n-layer` …) in their place.
    pub fn dims(&self) -> ModelDims {
        let mut dims = self.preset.dims();
        let custom = &self.custom_dims;
        dims.n_layer = custom.n_layer.unwrap_or(dims.n_layer);
        dims.n_embd = custom.n_embd.unwrap_or(dims.n_embd);
        dims.n_head = custom.n_head.unwrap_or(dims.n_head);
        dims.n_positions = custom.n_positions.unwrap_or(dims.n_positions);
        dims
    }

    /// Checks everything that can be checked before data or MPI are touched, except the MPI world
    /// size, which `validate_world` checks once MPI is up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 {
            return Err(ConfigError::ZeroBatch);
        }
        if !self.batch_size.is_multiple_of(self.world_size) {
            return Err(ConfigError::BatchNotDivisible {
                batch: self.batch_size,
                world: self.world_size,
            });
        }
        if self.n_epochs == 0 {
            return Err(ConfigError::ZeroEpochs);
        }
        if self.threads == 0 {
            return Err(ConfigError::ZeroThreads);
        }
        if self.collective_timeout == 0 {
            return Err(ConfigError::ZeroCollectiveTimeout);
        }
        let cores = crate::gate::usable_cores().len().max(1);
        if self.threads != AUTO && self.threads > cores {
            return Err(ConfigError::TooManyThreads { threads: self.threads, cores });
        }
        if self.train_examples == 0 {
            return Err(ConfigError::ZeroTrain);
        }
        let dims = self.dims();
        for (name, value) in [
            ("n-layer", dims.n_layer),
            ("n-embd", dims.n_embd),
            ("n-head", dims.n_head),
            ("n-positions", dims.n_positions),
        ] {
            if value < 1 {
                return Err(ConfigError::NonPositiveDim { name, value });
            }
        }
        if dims.n_embd % dims.n_head != 0 {
            return Err(ConfigError::HeadsDontDivide { n_embd: dims.n_embd, n_head: dims.n_head });
        }
        let positions = dims.n_positions;
        if self.model_max_length < 2 || self.model_max_length as i64 > positions {
            return Err(ConfigError::MaxLength { len: self.model_max_length, positions });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ConfigError::Dropout(self.dropout));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(ConfigError::LearningRate(self.learning_rate));
        }
        if self.max_batches == Some(0) {
            return Err(ConfigError::ZeroMaxBatches);
        }
        if self.bucket_by_length && self.padding != Padding::Dynamic {
            return Err(ConfigError::BucketWithoutDynamic);
        }
        if let Some(gate) = self.epoch_gate.as_ref().filter(|g| !g.is_dir()) {
            return Err(ConfigError::NoGateDir(gate.clone()));
        }
        if self.turn_examples == Some(0) {
            return Err(ConfigError::ZeroTurnExamples);
        }
        if self.rotate_cores > 0 && (self.world_size != 1 || self.threads != 1) {
            return Err(ConfigError::RotateNotAlone);
        }
        if self.copies > 1 && (self.world_size != 1 || self.rotate_cores > 0) {
            return Err(ConfigError::IndependentNotOneRank);
        }
        if self.device == DeviceKind::Cpu {
            if self.allreduce == AllReduce::Nccl {
                return Err(ConfigError::NcclOnCpu);
            }
            cpu_precision(self.precision)?;
        }
        Ok(())
    }

    pub(crate) fn validate_world(&self, mpi_world_size: usize) -> Result<(), ConfigError> {
        if self.world_size != mpi_world_size {
            return Err(ConfigError::WorldSizeMismatch {
                given: self.world_size,
                mpi: mpi_world_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tiny_config() -> Config {
        Config {
            world_size: 1,
            batch_size: 8,
            n_epochs: 1,
            learning_rate: 1e-4,
            model_max_length: 128,
            preset: Preset::Tiny,
            custom_dims: CustomDims::default(),
            dataset: DatasetSpec::Synthetic,
            train_examples: 64,
            val_examples: 16,
            test_examples: 4,
            seed: 1234,
            threads: 1,
            device: DeviceKind::Cpu,
            precision: Precision::Fp32,
            partition: Partition::Strided,
            padding: Padding::Fixed,
            bucket_by_length: false,
            cpu_matmul: CpuMatmul::Auto.resolve(),
            allreduce: AllReduce::Shm,
            optimizer_state: OptimizerState::Sharded,
            dropout: 0.0,
            benchmark_only: false,
            max_batches: None,
            workdir: PathBuf::from("workdir"),
            overwrite: false,
            resume: false,
            epoch_gate: None,
            turn_examples: None,
            rotate_cores: 0,
            collective_timeout: 600,
            independent: false,
            copies: 1,
            copy: 0,
        }
    }

    #[test]
    fn batch_must_divide_by_world() {
        let mut c = tiny_config();
        c.world_size = 3;
        c.batch_size = 8;
        assert_eq!(c.validate(), Err(ConfigError::BatchNotDivisible { batch: 8, world: 3 }));
        c.batch_size = 9;
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.local_batch_size(), 3);
    }

    #[test]
    fn rejects_nonsense() {
        let mut c = tiny_config();
        c.n_epochs = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroEpochs));
        let mut c = tiny_config();
        c.model_max_length = 129;
        assert!(matches!(c.validate(), Err(ConfigError::MaxLength { .. })));
        let mut c = tiny_config();
        c.custom_dims.n_embd = Some(130);
        assert_eq!(c.validate(), Err(ConfigError::HeadsDontDivide { n_embd: 130, n_head: 4 }));
        c.custom_dims.n_head = Some(5);
        assert_eq!(c.dims().n_layer, 2);
        assert_eq!(c.validate(), Ok(()));
        c.custom_dims.n_positions = Some(64);
        assert!(matches!(c.validate(), Err(ConfigError::MaxLength { len: 128, positions: 64 })));
        let mut c = tiny_config();
        c.threads = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroThreads));
        assert!(tiny_config().validate_world(2).is_err());
        // Independent copies copy a one-rank run, each staying on its own core.
        let mut c = tiny_config();
        c.copies = 2;
        assert_eq!(c.validate(), Ok(()));
        assert_eq!((c.gate_rank(0), Config { copy: 1, ..c.clone() }.gate_rank(0)), (0, 1));
        for broken in [Config { world_size: 2, ..c.clone() }, Config { rotate_cores: 2, ..c }] {
            assert_eq!(broken.validate(), Err(ConfigError::IndependentNotOneRank));
        }
    }

    #[test]
    fn gpu_choices_are_refused_on_cpus() {
        let c = Config { allreduce: AllReduce::Nccl, ..tiny_config() };
        assert_eq!(c.validate(), Err(ConfigError::NcclOnCpu));
        let c = Config { precision: Precision::Tf32, ..tiny_config() };
        assert_eq!(c.validate(), Err(ConfigError::Tf32OnCpu));
        let c = Config { collective_timeout: 0, ..tiny_config() };
        assert_eq!(c.validate(), Err(ConfigError::ZeroCollectiveTimeout));
        // bf16 as this CPU allows it.
        let c = Config { precision: Precision::Bf16, ..tiny_config() };
        let expected = match crate::simd::bf16_products() {
            Some(_) => Ok(()),
            None => Err(ConfigError::Bf16WithoutHardware(cpu_name())),
        };
        assert_eq!(c.validate(), expected);
        let gpu = Config { device: DeviceKind::Cuda, ..tiny_config() };
        for precision in [Precision::Tf32, Precision::Bf16] {
            let c = Config { precision, allreduce: AllReduce::Nccl, ..gpu.clone() };
            assert_eq!(c.validate(), Ok(()), "validated before any GPU is looked for");
        }
        // And as any CPU would.
        for hardware in ["AMX-BF16", "AVX512-BF16"] {
            assert_eq!(precision_on(Precision::Bf16, Some(hardware)), Ok(()));
            assert_eq!(precision_on(Precision::Tf32, Some(hardware)), Err(ConfigError::Tf32OnCpu));
        }
        let refused = precision_on(Precision::Bf16, None).unwrap_err().to_string();
        assert!(refused.contains(&cpu_name()) && refused.contains("--precision fp32"), "{refused}");
        assert_eq!(precision_on(Precision::Fp32, None), Ok(()));
        let auto = Config { allreduce: AllReduce::Auto, ..tiny_config() };
        assert_eq!(auto.resolve(1, 1).allreduce, AllReduce::Shm, "auto is shm on CPUs");
    }
}
