//! dp-bench's own CPU loops (the training pass's kernels, the gradient sums, the AdamW update)
//! are compiled portably, for AVX2 and for AVX-512, and the CPU's widest runs; `DP_BENCH_SIMD`
//! caps it. No build lets the compiler reorder or contract float arithmetic, so each must train
//! the same model bit for bit.

mod common;

use common::*;
use std::process::Command;

/// Trains the small run with `DP_BENCH_SIMD=cap`: the build run.json names, and rank 0's epoch
/// records without their timings.
fn train(cap: &str) -> (String, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w");
    run_ok(Command::new(binary()).args(small_run(&w)).env("DP_BENCH_SIMD", cap));
    let simd = read_json(&w.join("run.json"))["simd"].as_str().expect("simd recorded").to_string();
    (simd, (0..2).map(|epoch| without_timings(results(&w, 0, epoch))).collect())
}

const BUILDS: [&str; 3] = ["portable", "avx2", "avx512"];

/// The widest build this CPU can run, by its own feature flags.
fn widest() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512dq") && has!("avx512vl") {
            return 2;
        }
        if has!("avx2") && has!("fma") {
            return 1;
        }
    }
    0
}

#[test]
fn every_simd_build_trains_bit_for_bit_alike() {
    let (_, expected) = train("portable");
    for (k, cap) in BUILDS.iter().enumerate() {
        let (simd, records) = train(cap);
        // A cap above the CPU's widest runs the widest.
        assert_eq!(simd, BUILDS[k.min(widest())], "DP_BENCH_SIMD={cap}");
        assert_eq!(records, expected, "{simd} trained another model than portable");
    }
    eprintln!("builds compared: {:?}", &BUILDS[..=widest()]);
}

#[test]
fn an_unknown_simd_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w");
    let out = run(Command::new(binary()).args(small_run(&w)).env("DP_BENCH_SIMD", "sse9"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("use portable, avx2 or avx512"), "{stderr}");
    assert!(!w.join("run.json").exists(), "nothing is written");
}
