//! `scripts/gpu_checks.sh` dry-run on a machine without a GPU: each part runs every one of its
//! checks, each fails at once with dp-bench's or torch's refusal and writes its line, and the
//! part exits 1 — so on a GPU machine a part that fails says which check and why, and on one
//! without a GPU nothing hangs. (What passes on a GPU can only be seen there.)

mod common;

use common::binary;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn each_part_of_the_gpu_checks_fails_fast_without_a_gpu() {
    if tch::Cuda::is_available() {
        eprintln!("libtorch sees a GPU: the dry run is for machines without one");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(binary()).parent().unwrap().to_path_buf();
    // dp-bench and the .venv's python3 (with torch) on PATH, as on a GPU machine.
    let path = std::env::join_paths(
        [bin_dir, root.join(".venv/bin")]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let expected: [(&str, &[&str]); 3] = [
        ("1", &["dp-bench-fp32"]),
        ("2", &["dp-bench-tf32", "dp-bench-bf16", "pytorch-eager-fp32", "pytorch-eager-bf16"]),
        ("3", &["pytorch-compiled-bf16", "out-of-memory"]),
    ];
    for (part, checks) in expected {
        let out = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let status = Command::new("bash")
            .arg(root.join("scripts/gpu_checks.sh"))
            .arg(out.path())
            .arg(part)
            .env("PATH", &path)
            .env_remove("DATA_PARALLEL_BENCH")
            .env_remove("PRECISION_TEST")
            .env_remove("TRAIN_STEP_BENCH")
            .output()
            .unwrap();
        let took = start.elapsed();
        let lines = std::fs::read_to_string(out.path().join("checks.txt")).unwrap_or_default();
        assert_eq!(status.status.code(), Some(1), "part {part}: {lines}");
        assert!(took < Duration::from_secs(180), "part {part} took {took:?}");
        for check in checks {
            let line = lines.lines().find(|l| l.contains(&format!(" {check} ")));
            let line = line.unwrap_or_else(|| panic!("part {part}: no line for {check}: {lines}"));
            assert!(line.starts_with("FAILED"), "part {part}: {line}");
            let refusal = ["no CUDA device", "torch sees no CUDA device"];
            assert!(refusal.iter().any(|r| line.contains(r)), "part {part}, why: {line}");
        }
        let gpu = std::fs::read_to_string(out.path().join("gpu.txt")).unwrap();
        assert!(gpu.contains("GPUs torch sees: 0"), "{gpu}");
    }
    let bad = Command::new("bash")
        .arg(root.join("scripts/gpu_checks.sh"))
        .args(["/tmp/unused", "4"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("PART must be 1, 2, 3 or all"));
}
