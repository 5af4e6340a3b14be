//! Bad input through the real binary: one clear line, exit status 2, nothing overwritten.

mod common;

use common::*;
use std::process::{Command, Output};

fn assert_usage_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn world_size_must_match_mpi() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(binary()).args(small_run(dir.path())).args(["--world-size", "2"]));
    assert_usage_error(&out, "does not match the MPI world size 1");
    let out = run(mpirun(2).args(small_run(dir.path())).args(["--world_size", "1"]));
    assert_usage_error(&out, "--world-size 1 does not match the MPI world size 2");
}

#[test]
fn batch_must_divide_by_world_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(mpirun(2).args(small_run(dir.path())).args(["--batch_size", "9"]));
    assert_usage_error(&out, "--batch-size 9 is not divisible by the world size 2");
    let out = run(Command::new(binary()).args(small_run(dir.path())).args(["--batch-size", "65"]));
    assert_usage_error(&out, "larger than the 64 training examples");
}

#[test]
fn bad_dataset_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("train.de"), "a\nb\n").unwrap();
    std::fs::write(data.path().join("train.en"), "a\n").unwrap();
    let out =
        run(Command::new(binary()).args(small_run(dir.path())).arg("--dataset").arg(data.path()));
    assert_usage_error(&out, "has 2 lines but");
    let out =
        run(Command::new(binary()).args(small_run(dir.path())).args(["--dataset", "/no/such/dir"]));
    assert_usage_error(&out, "/no/such/dir does not exist");
}

#[test]
fn divergence_stops_every_rank_at_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(mpirun(2).args(small_run(dir.path())).args(["--learning-rate", "1e10"]));
    assert_usage_error(&out, "training diverged: non-finite gradient at step");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lower --learning-rate"));
}

#[test]
fn workdir_of_another_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let quick = ["--benchmark-only", "--n-epochs", "1", "--max-batches", "1"];
    run_ok(Command::new(binary()).args(small_run(dir.path())).args(quick));
    let first = std::fs::read(dir.path().join("rank0_results_epoch0.json")).unwrap();

    let other = ["--benchmark-only", "--n-epochs", "1", "--max-batches", "1", "--batch-size", "32"];
    let out = run(Command::new(binary()).args(small_run(dir.path())).args(other));
    assert_usage_error(&out, "batch_size: 16 → 32");
    assert_eq!(std::fs::read(dir.path().join("rank0_results_epoch0.json")).unwrap(), first);

    run_ok(Command::new(binary()).args(small_run(dir.path())).args(other).arg("--overwrite"));
    assert_eq!(results(dir.path(), 0, 0)["global_batch_size"], 32);

    // Bad input costs no results, even with --overwrite.
    let out = run(Command::new(binary()).args(small_run(dir.path())).args(quick).args([
        "--overwrite",
        "--dataset",
        "/no/such/dir",
    ]));
    assert_usage_error(&out, "does not exist");
    assert_eq!(results(dir.path(), 0, 0)["global_batch_size"], 32);
}
