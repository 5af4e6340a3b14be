//! The benchmark harness behind `cargo bench` and `dp-bench compare`, split as criterion is:
//! `stats` is pure maths on samples, `analysis` turns run directories into a `summary::Summary`,
//! `plot` and `report` only consume summaries, and `runner` launches the configurations.

pub mod allreduce;
pub mod analysis;
pub mod device;
pub mod format;
pub mod padding;
pub mod plot;
pub mod reference;
pub mod report;
pub mod runner;
pub mod sampling;
pub mod stats;
pub mod summary;
pub mod turns;

use std::path::Path;
use std::process::ExitCode;

/// The options shared by the benches that launch `dp-bench` runs (`data_parallel`, `padding`),
/// flattened into each one's own.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Batch size per rank, b (N ranks train global batches of N·b) [default: 16 on CPUs, 64 on
    /// GPUs]
    #[arg(long)]
    pub batch: Option<usize>,
    /// Intra-op threads per rank
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Model preset, as `dp-bench --preset` [default: tiny on CPUs, gpt2 on GPUs]
    #[arg(long)]
    pub preset: Option<String>,
    /// Leading epochs of each run excluded from the statistics
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Confidence level of every interval
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Launcher [env: DP_BENCH_MPIRUN]
    #[arg(long, env = "DP_BENCH_MPIRUN", default_value = "mpirun")]
    pub mpirun: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// The `main` of a harness-less bench that launches `dp-bench` runs: options come from the
/// command line after `--`; bad options are bad input (one line, exit status 2, nothing run); a
/// failed bench is one line and exit status 1. `binary` is `dp-bench`, `root` the project root.
pub fn bench_main<A: clap::Parser, T>(
    name: &str,
    validate: impl FnOnce(&A) -> anyhow::Result<()>,
    run: impl FnOnce(&A, &Path, &Path) -> anyhow::Result<T>,
    binary: &Path,
    root: &Path,
) -> ExitCode {
    let args = A::parse();
    if let Err(e) = validate(&args) {
        eprintln!("{name}: error: {e:#}");
        return ExitCode::from(2);
    }
    match run(&args, binary, root) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
