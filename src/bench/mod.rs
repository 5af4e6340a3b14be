//! The benchmark harness behind `cargo bench` and `dp-bench compare`, split as criterion is:
//! `stats` is pure maths on samples, `records` and `run_data` read run directories (any
//! trainer's), `analysis` turns them into a `summary::Summary`,
//! `plot` and `report` only consume summaries, `plan` turns the bench's options into
//! configurations (`device` and, across hosts, `hosts` say on what), and `runner` launches
//! them.

pub mod allreduce;
pub mod analysis;
pub mod device;
pub mod format;
pub mod hosts;
pub mod padding;
pub mod plan;
pub mod plot;
pub mod records;
pub mod reference;
pub mod report;
pub mod run_data;
pub mod runner;
pub mod sampling;
pub mod stats;
pub mod summary;
pub mod trainer;
pub mod turns;

use std::path::{Path, PathBuf};
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
    /// What starts a configuration's ranks, written as you would type it: `mpirun`,
    /// `'mpirun -f hosts'`, `srun` inside an allocation (the rank count is added as that
    /// launcher spells it) [env: DP_BENCH_LAUNCHER, or DP_BENCH_MPIRUN]
    #[arg(long = "launcher", visible_alias = "mpirun", env = "DP_BENCH_LAUNCHER", default_value_t = default_launcher())]
    pub mpirun: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// `DP_BENCH_MPIRUN` (the launcher's older name) where set, else `mpirun`.
fn default_launcher() -> String {
    std::env::var("DP_BENCH_MPIRUN")
        .ok()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "mpirun".into())
}

/// Where a bench executable finds `dp-bench` (`DP_BENCH_BIN`) and the project root
/// (`DP_BENCH_ROOT`: `scripts/`, and where `target/criterion` and `submit/` are written), for an
/// executable carried to a machine without cargo, where the paths fixed when it was compiled do
/// not exist. Unset, those paths.
pub const BIN_VAR: &str = "DP_BENCH_BIN";
pub const ROOT_VAR: &str = "DP_BENCH_ROOT";

/// The path in `var`, or `compiled` where it is unset.
fn overridden(var: &str, compiled: &Path) -> PathBuf {
    std::env::var_os(var).map_or_else(|| compiled.to_path_buf(), PathBuf::from)
}

/// The project root the bench writes under: [`ROOT_VAR`], or `compiled`.
pub fn project_root(compiled: &Path) -> PathBuf {
    overridden(ROOT_VAR, compiled)
}

/// `binary` and `root` as [`BIN_VAR`] and [`ROOT_VAR`] override them; an error naming the
/// variable to set when either does not exist.
pub fn locations(binary: &Path, root: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let pick = |var: &str, compiled: &Path, what: &str| {
        let path = overridden(var, compiled);
        match path.exists() {
            true => Ok(path),
            false => Err(anyhow::anyhow!(
                "{what} {} does not exist: set {var} to where it is on this machine",
                path.display()
            )),
        }
    };
    Ok((pick(BIN_VAR, binary, "dp-bench")?, pick(ROOT_VAR, root, "the project root")?))
}

/// The `main` of a harness-less bench that launches `dp-bench` runs: options come from the
/// command line after `--`; bad options are bad input (one line, exit status 2, nothing run), as
/// is a [`crate::UsageError`] from the run; a failed bench is one line and exit status 1. `binary` is `dp-bench`, `root` the project root,
/// both as compiled unless [`locations`] overrides them.
pub fn bench_main<A: clap::Parser, T>(
    name: &str,
    validate: impl FnOnce(&A) -> anyhow::Result<()>,
    run: impl FnOnce(&A, &Path, &Path) -> anyhow::Result<T>,
    binary: &Path,
    root: &Path,
) -> ExitCode {
    let args = A::parse();
    let (binary, root) =
        match locations(binary, root).and_then(|places| validate(&args).map(|()| places)) {
            Ok(places) => places,
            Err(e) => {
                eprintln!("{name}: error: {e:#}");
                return ExitCode::from(2);
            }
        };
    match run(&args, &binary, &root) {
        Ok(_) => ExitCode::SUCCESS,
        // Found wanting only once it ran (a runs directory the hosts do not share): bad input.
        Err(e) if e.is::<crate::UsageError>() => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As compiled, where they exist; a missing one names the variable that fixes it. (The
    /// variables themselves are not set here: tests share the environment.)
    #[test]
    fn a_bench_finds_dp_bench_and_the_root_or_says_what_to_set() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let here = root.join("Cargo.toml");
        assert_eq!(locations(&here, root).unwrap(), (here.clone(), root.to_path_buf()));
        let gone = root.join("no/such/dp-bench");
        let e = locations(&gone, root).unwrap_err().to_string();
        assert!(e.contains("no/such/dp-bench does not exist: set DP_BENCH_BIN"), "{e}");
        let e = locations(&here, &root.join("no/such/root")).unwrap_err().to_string();
        assert!(e.contains("set DP_BENCH_ROOT to where it is on this machine"), "{e}");
        assert_eq!(project_root(root), root);
    }
}
