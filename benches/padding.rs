//! `cargo bench --bench padding`: one rank, Multi30k, fixed against dynamic padding (with and
//! without length buckets); see `dp_bench::bench::padding`. Options go after `--`:
//! `cargo bench --bench padding -- --help`.

use dp_bench::bench::bench_main;
use dp_bench::bench::padding::{run_padding_bench, PaddingArgs};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    bench_main(
        "padding",
        PaddingArgs::validate,
        run_padding_bench,
        Path::new(env!("CARGO_BIN_EXE_dp-bench")),
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}
