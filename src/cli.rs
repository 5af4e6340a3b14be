//! The command line: flags (kebab-case, with the seed script's underscore spellings as aliases),
//! their defaults, and the entry point that starts MPI, builds the `Config` and reports errors
//! once, as one line, with exit status 2 for bad input.

use crate::config::{
    AllReduce, Config, CpuMatmul, CustomDims, DatasetSpec, DeviceKind, OptimizerState, Padding,
    Partition, Preset,
};
use crate::dist::{Communicator, Mpi};
use crate::UsageError;
use clap::{Args, Parser, Subcommand};
use mpi::topology::Communicator as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Data-parallel GPT-2 translation training over MPI, with per-rank epoch metrics.
///
/// Launch one process per device with `mpirun -n N dp-bench …`; without mpirun it runs as one
/// rank. Each rank writes `rank{r}_results_epoch{e}.json` into the workdir after every epoch, and
/// rank 0 writes `run.json`. `dp-bench compare DIR…` analyses run directories.
#[derive(Debug, Parser)]
#[command(
    name = "dp-bench",
    version,
    about,
    long_about,
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Analyse run directories that already exist (from `mpirun … dp-bench --workdir DIR`):
    /// statistics, speedups with intervals, figures, summary.json and an HTML report
    Compare(CompareArgs),
    /// Corpus BLEU of a hypothesis file against reference files, as `sacrebleu REF < HYP`
    Bleu(BleuArgs),
    /// Translate German lines from stdin to English with a trained run's final weights
    Translate(TranslateArgs),
    /// Internal: the per-host sentinel that names a rank that died without a word
    #[command(hide = true)]
    Watch(WatchArgs),
    /// Write a run's tokenised training examples as JSON (for scripts/torch_reference.py)
    ExportExamples(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run directory (its run.json and tokenizer.json)
    #[arg(long, default_value = "workdir")]
    pub workdir: PathBuf,
    /// Where the JSON goes
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[arg(long)]
    pub workdir: PathBuf,
    #[arg(long)]
    pub host: String,
    /// rank:pid pairs, comma-separated
    #[arg(long)]
    pub ranks: String,
}

#[derive(Debug, Args)]
pub struct BleuArgs {
    /// Hypotheses, one sentence a line
    #[arg(long)]
    pub hyp: PathBuf,
    /// References, line-aligned with the hypotheses; repeat for several references
    #[arg(long = "ref", required = true)]
    pub refs: Vec<PathBuf>,
    /// Print sacreBLEU's JSON (`sacrebleu -f json`) instead of its text line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// A run directory (its run.json, tokenizer.json and final weights)
    #[arg(long, default_value = "workdir")]
    pub workdir: PathBuf,
    /// Weights to use instead of the run's final model.safetensors
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Intra-op threads
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run directories, one per configuration (the one with world size 1 is the reference)
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Leading epochs of each run excluded from the statistics
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Confidence level of every interval
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Where summary.json, report/index.html and figures/ go
    #[arg(long, default_value = "dp-bench-report")]
    pub out: PathBuf,
    /// A summary.json to compare against (e.g. a saved baseline)
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Replace the table between the `<!-- dp-bench data_parallel table: begin/end -->` lines
    /// of this Markdown file (e.g. BENCHMARKS.md) with these runs' (also in OUT/table.md)
    #[arg(long, value_name = "FILE")]
    pub update_doc: Option<PathBuf>,
}

/// Training flags (the default command). Also a parser of its own, so benches and tests build a
/// `Config` from the command line's defaults.
#[derive(Debug, Parser)]
pub struct TrainArgs {
    /// Number of ranks; must equal the MPI world size [default: the MPI world size]
    #[arg(long, alias = "world_size")]
    pub world_size: Option<usize>,
    /// GLOBAL batch size: each of the N ranks takes batch-size / N examples per step
    #[arg(long, alias = "batch_size", default_value_t = 64)]
    pub batch_size: usize,
    /// Training epochs (the first is warm-up for the benchmark statistics)
    #[arg(long, alias = "n_epochs", default_value_t = 10)]
    pub n_epochs: usize,
    /// AdamW learning rate
    #[arg(long, alias = "learning_rate", default_value_t = 1e-4)]
    pub learning_rate: f64,
    /// Sequence length: examples are cut to this many input positions and padded to it
    #[arg(long, alias = "model_max_length", default_value_t = 128)]
    pub model_max_length: usize,
    /// Model size: tiny (2×128), small (4×256) or gpt2 (12×768)
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    #[command(flatten)]
    pub custom_dims: CustomDims,
    /// `synthetic` (built-in German→English corpus from the seed), a directory of
    /// train/val/test .de/.en files (optionally .gz; Multi30k and IWSLT14 layouts), or a JSON-lines
    /// file of {"translation": {"de": …, "en": …}} records
    #[arg(long, default_value = "synthetic")]
    pub dataset: DatasetSpec,
    /// Training pairs taken from the start of the train split
    #[arg(long, alias = "train_examples", default_value_t = 5000)]
    pub train_examples: usize,
    /// Validation pairs (validation loss)
    #[arg(long, alias = "val_examples", default_value_t = 1000)]
    pub val_examples: usize,
    /// Test pairs (greedy translation and BLEU)
    #[arg(long, alias = "test_examples", default_value_t = 100)]
    pub test_examples: usize,
    /// Directory for metrics, the tokenizer and the final weights
    #[arg(long, default_value = "workdir")]
    pub workdir: PathBuf,
    /// Seed of the corpus, the shuffle, the initial weights and dropout
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Intra-op threads per rank [default: the host's cores divided by the ranks on the host]
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, or cuda (rank r uses its node-local GPU r mod count)
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// How training examples are split across ranks: strided (N ranks see the same examples per
    /// step as one rank), balanced (strided's steps, each dealt to even out the ranks' work),
    /// adaptive (dealt in proportion to each rank's measured speed) or contiguous (the original
    /// DataPartitioner)
    #[arg(long, value_enum, default_value_t = Partition::Strided)]
    pub partition: Partition,
    /// fixed (every sequence padded to --model-max-length, as the original) or dynamic (to the
    /// longest sequence of each rank's batch: the same loss, less work)
    #[arg(long, value_enum, default_value_t = Padding::Fixed)]
    pub padding: Padding,
    /// With --padding dynamic: form each global batch from examples of similar length (all
    /// examples sorted by length, cut into batches, batches shuffled with the seed), so batches
    /// carry little padding
    #[arg(long)]
    pub bucket_by_length: bool,
    /// Matrix products on the CPU: onednn (oneDNN's fp32 kernels; AVX-512 wherever the CPU has
    /// it), blas (libtorch's BLAS: MKL, which runs AVX2 kernels on AMD CPUs) or auto (blas on
    /// Intel CPUs, onednn elsewhere)
    #[arg(long, value_enum, default_value_t = CpuMatmul::Auto)]
    pub cpu_matmul: CpuMatmul,
    /// How ranks sum gradients: shm (the ranks of a host in memory they share, MPI between hosts)
    /// or mpi (MPI_Allreduce of the flat buffer in 4 MiB pieces)
    #[arg(long, value_enum, default_value_t = AllReduce::Shm)]
    pub allreduce: AllReduce,
    /// Where parameters and AdamW moments live: sharded (one copy per host in shared memory, each
    /// rank updating its own part, as ZeRO stage 1; needs --allreduce shm and the CPU, else
    /// replicated) or replicated (a copy and the whole update on every rank)
    #[arg(long, value_enum, default_value_t = OptimizerState::Sharded)]
    pub optimizer_state: OptimizerState,
    /// Dropout on embeddings, attention weights and residual branches
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    /// Skip validation loss and BLEU (training time only)
    #[arg(long, alias = "benchmark_only")]
    pub benchmark_only: bool,
    /// Train at most this many steps per epoch
    #[arg(long, alias = "max_batches")]
    pub max_batches: Option<usize>,
    /// Replace the results of a different configuration in the workdir
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Continue a stopped run in the workdir from its last completed epoch (its checkpoint); the
    /// configuration must match, except --n-epochs, which may grow
    #[arg(long)]
    pub resume: bool,
    /// Before each epoch, wait until the file `open-epoch{E}` exists in DIR (after creating
    /// `ready-epoch{E}.rank{R}` there). E counts from 0 over the whole run, so a run continued
    /// with --resume first waits at the epoch it continues from. The benches run their
    /// configurations side by side this way, taking turns
    #[arg(long, value_name = "DIR")]
    pub epoch_gate: Option<PathBuf>,
    /// With --epoch-gate, also stop at a gate every N examples of the epoch (whole steps: N ÷
    /// --batch-size, at least one), `open-epoch{E}.part{P}`, so that runs take turns within
    /// epochs. Time stopped is not training time
    #[arg(long, value_name = "N", requires = "epoch_gate")]
    pub turn_examples: Option<usize>,
    /// With --turn-examples on one rank and one thread: run each part of an epoch on the next of
    /// the first N cores that the process may use (part p of epoch e on the ((e × parts + p) mod
    /// N)-th), the cores `mpirun -bind-to core` gives N ranks, so that a 1-rank baseline samples
    /// every core an N-rank run uses, not only the first
    #[arg(long, value_name = "N", requires = "turn_examples")]
    pub rotate_cores: Option<usize>,
    /// Every MPI rank trains this run as a one-rank run of its own, talking to no other:
    /// `mpirun -n N dp-bench --independent …` trains N independent copies side by side, copy R
    /// into WORKDIR/copyR. They share the host's caches, memory bandwidth and power as N ranks
    /// do but exchange nothing, so their summed throughput ÷ N × one rank's alone is the most
    /// data-parallel training can reach on those cores. `dp-bench compare` reads WORKDIR as one
    /// run of N ranks (`ws{N}_bs{N·B}_independent`) and gives each N-rank run's share of it
    #[arg(long, conflicts_with = "world_size")]
    pub independent: bool,
}

impl TrainArgs {
    /// The configuration for an MPI world of `mpi_size` ranks, `local_ranks` of them on this host.
    pub fn into_config(self, mpi_size: usize, local_ranks: usize) -> Config {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            world_size: self.world_size.unwrap_or(if self.independent { 1 } else { mpi_size }),
            batch_size: self.batch_size,
            n_epochs: self.n_epochs,
            learning_rate: self.learning_rate,
            model_max_length: self.model_max_length,
            preset: self.preset,
            custom_dims: self.custom_dims,
            dataset: self.dataset,
            train_examples: self.train_examples,
            val_examples: self.val_examples,
            test_examples: self.test_examples,
            seed: self.seed,
            threads: self.threads.unwrap_or((cores / local_ranks.max(1)).max(1)),
            device: self.device,
            partition: self.partition,
            padding: self.padding,
            bucket_by_length: self.bucket_by_length,
            cpu_matmul: self.cpu_matmul.resolve(),
            allreduce: self.allreduce,
            optimizer_state: self.optimizer_state,
            dropout: self.dropout,
            benchmark_only: self.benchmark_only,
            max_batches: self.max_batches,
            workdir: self.workdir,
            overwrite: self.overwrite,
            resume: self.resume,
            epoch_gate: self.epoch_gate,
            turn_examples: self.turn_examples,
            rotate_cores: self.rotate_cores.unwrap_or(0),
            copies: if self.independent { mpi_size } else { 1 },
            copy: 0,
        }
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    keep_onednn_kernels();
    crate::keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            eprintln!("dp-bench: error: {}", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(cmd) => match crate::commands::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&e, 0),
        },
        None => train_main(cli.train),
    }
}

/// oneDNN compiles a kernel for every matrix shape it meets and keeps 1024 of them. Dynamic
/// padding meets more shapes than that in an epoch (sequence lengths × target counts), and
/// recompiling evicted kernels cost ~5 % of an epoch; 16384 keeps every kernel of a run after the
/// first epoch. Set before any thread starts and before oneDNN reads it; the environment wins.
fn keep_onednn_kernels() {
    const VAR: &str = "ONEDNN_PRIMITIVE_CACHE_CAPACITY";
    if std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, "16384");
    }
}

/// clap's message as one line: the error, its tip lines, and a pointer to --help.
fn one_line(rendered: &str) -> String {
    let mut parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(first) = parts.first_mut() {
        *first = first.trim_start_matches("error: ");
    }
    format!("{} (see dp-bench --help)", parts.join(" "))
}

fn train_main(args: TrainArgs) -> ExitCode {
    crate::fault::abort_on_panic();
    if let Err(e) = crate::fault::stop_on_signals() {
        eprintln!("dp-bench: cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    let Some(universe) = mpi::initialize() else {
        eprintln!("dp-bench: MPI was already initialised");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    let host_comm = world.split_shared(0);
    let (local_rank, local_ranks) = (host_comm.rank() as usize, host_comm.size() as usize);
    let comm = Mpi { world };
    let rank = comm.rank();
    let independent = args.independent;
    let config = args.into_config(comm.size(), local_ranks);
    let trained = match independent {
        false => train(&config, &comm, local_rank),
        true => train_copy(config, &comm, local_rank),
    };
    match trained {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e, rank),
    }
}

/// `--independent`: this rank's copy of the one-rank run, alone, into its copy's directory, once
/// rank 0 has made WORKDIR ready for the copies.
fn train_copy(
    mut config: Config,
    world: &dyn Communicator,
    local_rank: usize,
) -> anyhow::Result<()> {
    if config.copies < 2 {
        return Err(UsageError::from_err(crate::config::ConfigError::IndependentAlone));
    }
    config.validate().map_err(UsageError::from_err)?;
    crate::run::on_root(world, || {
        crate::metrics::prepare_copies_dir(&config).map_err(UsageError::from_err)
    })?;
    config.copy = world.rank();
    config.workdir = Config::copy_dir(&config.workdir, config.copy);
    train(&config, &crate::dist::Solo, local_rank)
}

fn train(config: &Config, comm: &dyn Communicator, local_rank: usize) -> anyhow::Result<()> {
    config.validate().map_err(UsageError::from_err)?;
    config.validate_world(comm.size()).map_err(UsageError::from_err)?;
    tch::set_num_threads(config.threads as i32);
    tch::set_num_interop_threads(1);
    crate::run::run(config, comm, local_rank)
}

/// Prints an error once: bad input as one line from rank 0 (every rank saw the same), anything
/// else from the rank it happened on, with its causes.
fn report(e: &anyhow::Error, rank: usize) -> ExitCode {
    crate::fault::reported();
    if let Some(usage) = e.downcast_ref::<UsageError>() {
        if rank == 0 && !usage.quiet {
            eprintln!("dp-bench: error: {}", usage.message);
        }
        return ExitCode::from(2);
    }
    eprintln!("dp-bench: rank {rank}: error: {e:#}");
    ExitCode::FAILURE
}
