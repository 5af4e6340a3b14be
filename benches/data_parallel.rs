//! `cargo bench`: how much faster is data-parallel training on N devices than on one, and how sure
//! are we? Each configuration runs as its own `mpirun -n N dp-bench …`; see `dp_bench::bench`.
//! Options go after `--`: `cargo bench --bench data_parallel -- --help`.

use clap::Parser;
use dp_bench::bench::runner::{run_bench, BenchArgs};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    // Bad options are bad input: one line, exit status 2, nothing run.
    if let Err(e) = args.validate() {
        eprintln!("data_parallel: error: {e:#}");
        return ExitCode::from(2);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match run_bench(&args, Path::new(env!("CARGO_BIN_EXE_dp-bench")), root) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("data_parallel: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
