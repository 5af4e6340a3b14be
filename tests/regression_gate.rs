//! The CI gate: `--fail-on-regression` with a baseline exits non-zero, naming the configuration,
//! its change with its interval and its p-value, when criterion's verdict is "regressed", and
//! leaves the exit status alone otherwise. On run directories with known numbers.

mod common;

use common::fake::fake_run;
use common::{binary, run};
use dp_bench::config::Preset;
use std::path::Path;
use std::process::{Command, Output};

fn compare(dirs: &[&Path], out: &Path, extra: &[&str]) -> Output {
    run(Command::new(binary()).arg("compare").args(dirs).arg("--out").arg(out).args(extra))
}

#[test]
fn a_regression_fails_the_gate_and_a_steady_run_passes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    let ws1: &[f64] = &[9.0, 1.0, 1.02, 0.98, 1.01, 0.99];
    let ws2: &[f64] = &[9.0, 0.55, 0.56, 0.54, 0.55, 0.56];
    fake_run(&d("ws1"), Preset::Tiny, &[ws1]);
    fake_run(&d("ws2"), Preset::Tiny, &[ws2, ws2]);
    let saved = compare(&[&d("ws1"), &d("ws2")], &d("before"), &[]);
    assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
    let baseline = d("before").join("summary.json");
    let gate = ["--baseline", baseline.to_str().unwrap(), "--fail-on-regression"];

    // The same numbers again: no verdict is "regressed", and the gate passes.
    let steady = compare(&[&d("ws1"), &d("ws2")], &d("steady"), &gate);
    assert!(steady.status.success(), "{}", String::from_utf8_lossy(&steady.stderr));

    // The 2-rank run 20 % slower: its epoch time and throughput regressed, and the gate fails.
    let slower: Vec<f64> = ws2.iter().map(|t| t * 1.2).collect();
    fake_run(&d("ws2_slow"), Preset::Tiny, &[&slower, &slower]);
    let o = compare(&[&d("ws1"), &d("ws2_slow")], &d("slow"), &gate);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stdout));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("regressed against baseline"), "{err}");
    assert!(err.contains("ws2_bs32 throughput -16.67% ["), "the change and its interval: {err}");
    assert!(err.contains("ws2_bs32 epoch time +20.00% ["), "{err}");
    assert!(err.contains("(p = 0.0"), "the p-value: {err}");
    assert!(!err.contains("ws1_bs16"), "the unchanged run is not named: {err}");
    // The reports were written all the same, and without the flag the exit status is unchanged.
    assert!(d("slow").join("summary.json").is_file());
    let without = compare(&[&d("ws1"), &d("ws2_slow")], &d("slow2"), &gate[..2]);
    assert!(without.status.success(), "{}", String::from_utf8_lossy(&without.stderr));

    // The gate needs a baseline.
    let alone = compare(&[&d("ws1"), &d("ws2")], &d("alone"), &["--fail-on-regression"]);
    assert_eq!(alone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&alone.stderr).contains("--baseline"));
}
