//! GPU choices through the real binary: what is refused, with exit status 2 and the fix named,
//! before anything is written. Where libtorch sees no GPU (CI), the GPU itself is refused too.

mod common;

use common::*;
use std::process::{Command, Output};

fn assert_refused(out: &Output, needle: &str, workdir: &std::path::Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!workdir.join("run.json").exists(), "nothing is written");
}

#[test]
fn gpu_only_choices_are_refused_on_cpus() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w");
    let cpu = |extra: &[&str]| run(Command::new(binary()).args(small_run(&w)).args(extra));
    assert_refused(&cpu(&["--allreduce", "nccl"]), "--allreduce nccl sums GPU buffers", &w);
    assert_refused(&cpu(&["--precision", "tf32"]), "it needs --device cuda", &w);
}

/// bf16 on the CPU: trained where the CPU multiplies bf16 in hardware (AMX-BF16 or
/// AVX512-BF16, as `lscpu` lists them), refused with the CPU named elsewhere.
#[test]
fn bf16_on_a_cpu_trains_where_it_has_bf16_hardware_and_is_refused_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w");
    let out = run(Command::new(binary()).args(small_run(&w)).args(["--precision", "bf16"]));
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = flags.contains(" amx_bf16") || flags.contains(" avx512_bf16");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if hardware {
        assert!(out.status.success(), "{stderr}");
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.join("run.json")).unwrap()).unwrap();
        assert_eq!(info["config"]["precision"], "bf16");
        let record = std::fs::read(w.join("rank0_results_epoch1.json")).unwrap();
        let loss = serde_json::from_slice::<serde_json::Value>(&record).unwrap()["train_loss"]
            .as_f64()
            .unwrap();
        assert!(loss.is_finite() && loss > 0.0, "train loss {loss}");
    } else {
        assert_refused(&out, "needs bf16 products in hardware (AMX-BF16 or AVX512-BF16)", &w);
        assert_refused(&out, "--precision fp32", &w);
    }
}

#[test]
fn an_nccl_that_does_not_load_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w");
    let out = run(Command::new(binary())
        .args(small_run(&w))
        .args(["--device", "cuda", "--allreduce", "nccl"])
        .env("DP_BENCH_NCCL", "/no/such/libnccl.so.2"));
    assert_refused(&out, "cannot load NCCL from /no/such/libnccl.so.2", &w);
    assert_refused(&out, "point DP_BENCH_NCCL at a libnccl.so.2", &w);
}

#[test]
fn cuda_without_a_gpu_is_refused() {
    if tch::Cuda::is_available() {
        eprintln!("libtorch sees a GPU: nothing to refuse here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w");
    for allreduce in ["auto", "nccl", "mpi"] {
        let out = run(Command::new(binary()).args(small_run(&w)).args([
            "--device",
            "cuda",
            "--allreduce",
            allreduce,
        ]));
        assert_refused(&out, "libtorch sees no CUDA device: use --device cpu", &w);
    }
}

#[test]
fn the_reference_refuses_gpu_choices_it_cannot_run() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_reference.py");
    let dir = tempfile::tempdir().unwrap();
    let reference = |extra: &[&str]| {
        let mut cmd = Command::new(&python);
        cmd.arg(&script).args(["--examples", "x.json", "--template", "run.json", "--workdir"]);
        run(cmd.arg(dir.path().join("w")).args(extra))
    };
    let w = dir.path().join("w");
    assert_refused(
        &reference(&["--precision", "tf32"]),
        "--precision tf32 needs --device cuda",
        &w,
    );
    if !tch::Cuda::is_available() {
        let out = reference(&["--device", "cuda"]);
        assert_refused(&out, "torch sees no CUDA device: use --device cpu", &w);
    }
}
