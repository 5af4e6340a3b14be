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
    // Two ranks check the sum in shared memory (sharded: its reduce-scatter), one rank (and
    // MPI's sum) in the update.
    let cases = [
        (2, "shm", "sharded"),
        (2, "shm", "replicated"),
        (2, "mpi", "replicated"),
        (1, "shm", "sharded"),
    ];
    for (ranks, allreduce, optimizer) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = run(mpirun(ranks).args(small_run(dir.path())).args([
            "--learning-rate",
            "1e10",
            "--allreduce",
            allreduce,
            "--optimizer-state",
            optimizer,
        ]));
        assert_usage_error(&out, "training diverged: non-finite gradient at step");
        assert!(String::from_utf8_lossy(&out.stderr).contains("lower --learning-rate"));
    }
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

/// A directory holding a Multi30k-style corpus whose train split is `de` / `en`.
fn corpus(de: &[u8], en: &[u8]) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    for split in ["train", "val", "test"] {
        std::fs::write(data.path().join(format!("{split}.de")), de).unwrap();
        std::fs::write(data.path().join(format!("{split}.en")), en).unwrap();
    }
    data
}

#[test]
fn every_bad_flag_gets_one_line_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--preset", "huge"], "invalid value 'huge' for '--preset"),
        (&["--n-epochs", "0"], "--n-epochs must be at least 1"),
        (&["--batch-size", "0"], "--batch-size must be at least 1"),
        (&["--threads", "0"], "--threads must be at least 1"),
        (&["--n-embd", "130"], "--n-embd 130 is not divisible by --n-head 4"),
        (&["--n-positions", "64"], "--model-max-length 128 must be between 2 and the model's 64"),
        (&["--bucket-by-length"], "--bucket-by-length only pays with --padding dynamic"),
        (&["--device", "cuda"], "--device cuda but libtorch sees no CUDA device"),
        (&["--resume"], "nothing to resume in"),
        (&["--resume", "--overwrite"], "cannot be used with"),
        (&["--epoch-gate", "/nonexistent/gate"], "--epoch-gate /nonexistent/gate: not a directory"),
        (&["--turn-examples", "64"], "--epoch-gate <DIR>"),
        (&["--epoch-gate", "/tmp", "--turn-examples", "0"], "--turn-examples must be at least 1"),
        (&["--rotate-cores", "2"], "--turn-examples <N>"),
        (
            &[
                "--epoch-gate",
                "/tmp",
                "--turn-examples",
                "16",
                "--rotate-cores",
                "2",
                "--threads",
                "2",
            ],
            "--rotate-cores moves one thread of one rank",
        ),
    ];
    for (flags, needle) in cases {
        if flags == &["--device", "cuda"] && tch::Cuda::is_available() {
            continue;
        }
        let out = run(Command::new(binary()).args(small_run(dir.path())).args(*flags));
        assert_usage_error(&out, needle);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors = stderr.lines().filter(|l| l.contains("error")).count();
        assert_eq!(errors, 1, "one line for {flags:?}: {stderr}");
    }
    assert!(!dir.path().join("run.json").exists(), "bad input wrote nothing");
}

#[test]
fn every_bad_corpus_is_named_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let empty = corpus(b"", b"");
    let bad_utf8 = corpus(b"ein Hund\nzwei \xff Katzen\n", b"a dog\ntwo cats\n");
    let truncated = tempfile::tempdir().unwrap();
    for split in ["train", "val", "test"] {
        let src = multi30k()
            .join(format!("{}.de.gz", if split == "test" { "test_2016_flickr" } else { split }));
        let bytes = std::fs::read(&src).unwrap();
        let dst = |lang: &str| truncated.path().join(format!("{split}.{lang}.gz"));
        std::fs::write(dst("de"), &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(dst("en"), &bytes[..bytes.len() / 2]).unwrap();
    }
    let jsonl = tempfile::NamedTempFile::with_suffix(".jsonl").unwrap();
    let good = r#"{"translation": {"de": "ein Hund", "en": "a dog"}}"#;
    std::fs::write(jsonl.path(), format!("{good}\n{good}\n{{\"translation\": 3}}\n")).unwrap();
    let not_writable = tempfile::NamedTempFile::new().unwrap();

    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["--dataset".into(), path(empty.path())], "holds no pairs".into()),
        (vec!["--dataset".into(), path(bad_utf8.path())], "train.de:2: invalid UTF-8".into()),
        (vec!["--dataset".into(), path(truncated.path())], "train.de.gz".into()),
        (
            vec!["--dataset".into(), path(jsonl.path())],
            format!("{}:3: malformed JSON line", path(jsonl.path())),
        ),
        (
            vec!["--workdir".into(), format!("{}/sub", path(not_writable.path()))],
            "cannot use workdir".into(),
        ),
    ];
    for (flags, needle) in cases {
        let out = run(Command::new(binary()).args(small_run(dir.path())).args(&flags));
        assert_usage_error(&out, &needle);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().filter(|l| l.contains("error")).count(), 1, "{stderr}");
    }
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}
