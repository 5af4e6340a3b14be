//! `cargo bench --bench padding`: one rank, Multi30k, fixed against dynamic padding (with and
//! without length buckets); see `dp_bench::bench::padding`. Options go after `--`:
//! `cargo bench --bench padding -- --help`.

use clap::Parser;
use dp_bench::bench::padding::{run_padding_bench, PaddingArgs};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = PaddingArgs::parse();
    if let Err(e) = args.validate() {
        eprintln!("padding: error: {e:#}");
        return ExitCode::from(2);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match run_padding_bench(&args, Path::new(env!("CARGO_BIN_EXE_dp-bench")), root) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("padding: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
