//! `cargo bench`: how much faster is data-parallel training on N devices than on one, and how sure
//! are we? Each configuration runs as its own `mpirun -n N dp-bench …`; see `dp_bench::bench`.
//! Options go after `--`: `cargo bench --bench data_parallel -- --help`.

use dp_bench::bench::bench_main;
use dp_bench::bench::plan::BenchArgs;
use dp_bench::bench::runner::run_bench;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    bench_main(
        "data_parallel",
        |args: &BenchArgs| args.validate().and_then(|()| args.check_machine()),
        run_bench,
        Path::new(env!("CARGO_BIN_EXE_dp-bench")),
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}
