//! Helpers shared by the integration tests: the real `dp-bench` binary, launched directly or with
//! a real `mpirun`, on small real workloads.
#![allow(dead_code)]

pub mod fake;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_dp-bench")
}

/// `mpirun -n N` (MPICH by default; `DP_BENCH_MPIRUN` picks another launcher). Open MPI needs
/// permission to run as root and to place more ranks than cores.
pub fn mpirun(n: usize) -> Command {
    let launcher = std::env::var("DP_BENCH_MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let mut cmd = dp_bench::bench::runner::launcher(&launcher, n);
    cmd.arg(binary());
    cmd
}

/// Flags of a small, quick run: tiny preset, few examples, one thread per rank.
pub fn small_run(workdir: &Path) -> Vec<String> {
    [
        "--train-examples",
        "64",
        "--val-examples",
        "32",
        "--test-examples",
        "8",
        "--threads",
        "1",
        "--n-epochs",
        "2",
        "--batch-size",
        "16",
        "--workdir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([workdir.display().to_string()])
    .collect()
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("launching dp-bench");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "dp-bench failed: {:?}", out.status);
    out
}

pub fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn results(dir: &Path, rank: usize, epoch: usize) -> Value {
    read_json(&dir.join(format!("rank{rank}_results_epoch{epoch}.json")))
}

pub fn multi30k() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/multi30k")
}

/// Record fields that measure time or memory, which no two runs share.
fn is_timing(key: &str) -> bool {
    key.ends_with("_time")
        || key.ends_with("_per_sec")
        || key == "max_rss_mb"
        || key == "started_at"
}

/// An epoch record without the fields that measure time or memory, or say which process
/// trained it (`process_epoch`: a resumed run restarts it).
pub fn without_timings(record: Value) -> Value {
    let mut map = record.as_object().expect("a record is an object").clone();
    map.retain(|k, _| !is_timing(k) && k != "process_epoch");
    Value::Object(map)
}

/// Every file under `dir` (recursively) with its bytes, to show that nothing changed.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}
