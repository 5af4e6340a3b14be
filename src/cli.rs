//! The command line: flags (kebab-case, with the seed script's underscore spellings as aliases),
//! their defaults, and the entry point that starts MPI, builds the `Config` and reports errors
//! once, as one line, with exit status 2 for bad input.

use crate::config::Config;
use crate::dist::{Communicator, Mpi};
use crate::UsageError;
use clap::{Args, Parser, Subcommand};
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
    /// Internal: where the ranks of a launch sit (host, MPI node) and whether each sees a file
    /// (the bench asks before runs across hosts)
    #[command(hide = true)]
    Places(PlacesArgs),
}

#[derive(Debug, Args)]
pub struct PlacesArgs {
    /// A file the launching machine wrote
    #[arg(long)]
    pub token: PathBuf,
    /// What it holds
    #[arg(long)]
    pub expect: String,
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
    /// Decimals of the score, as `sacrebleu --width`
    #[arg(long, short = 'w', default_value_t = 1)]
    pub width: usize,
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
    /// Run directories, one per configuration (the one with world size 1 is the reference):
    /// dp-bench's, or any trainer's `rank{r}_results_epoch{e}.json` files (docs/records.md)
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Name a run in the reports (default: a dp-bench run's configuration id, another
    /// trainer's directory name); repeat for more runs
    #[arg(long, value_name = "DIR=NAME")]
    pub label: Vec<String>,
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
    /// With --baseline: exit with status 1, naming each configuration, its change with its
    /// interval and p-value, when criterion's verdict on its throughput or epoch time is
    /// "regressed" (a CI gate)
    #[arg(long, requires = "baseline")]
    pub fail_on_regression: bool,
    /// Replace the table between the `<!-- dp-bench data_parallel table: begin/end -->` lines
    /// of this Markdown file (e.g. BENCHMARKS.md) with these runs' (also in OUT/table.md)
    #[arg(long, value_name = "FILE")]
    pub update_doc: Option<PathBuf>,
}

/// Training flags (the default command): the fields of [`Config`], grouped under headings.
/// Also a parser of its own, so benches and tests build a `Config` from the command line's
/// defaults.
#[derive(Debug, Parser)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: Config,
}

impl TrainArgs {
    /// The configuration for an MPI world of `mpi_size` ranks, `local_ranks` of them on this host.
    pub fn into_config(self, mpi_size: usize, local_ranks: usize) -> Config {
        self.config.resolve(mpi_size, local_ranks)
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
    if let Err(e) = crate::simd::requested() {
        eprintln!("dp-bench: error: {e}");
        return ExitCode::from(2);
    }
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
    let place = crate::hosts::host_place(&world);
    let comm = Mpi { world };
    let rank = comm.rank();
    let config = args.into_config(comm.size(), place.host_ranks.len());
    let trained = match config.independent {
        false => train(&config, &comm, &place),
        true => train_copy(config, &comm, &place),
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
    place: &crate::run::HostPlace,
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
    train(&config, &crate::dist::Solo, place)
}

fn train(
    config: &Config,
    comm: &dyn Communicator,
    place: &crate::run::HostPlace,
) -> anyhow::Result<()> {
    config.validate().map_err(UsageError::from_err)?;
    config.validate_world(comm.size()).map_err(UsageError::from_err)?;
    if config.allreduce == crate::config::AllReduce::Nccl {
        crate::dist::nccl::library().map_err(UsageError::from_err)?;
    }
    if config.precision == crate::config::Precision::Tf32 {
        // libtorch reads it once, at the first fp32 matrix product on a GPU, which is later.
        std::env::set_var(crate::TF32_VAR, "1");
    }
    tch::set_num_threads(config.threads as i32);
    tch::set_num_interop_threads(1);
    crate::run::run(config, comm, place)
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
