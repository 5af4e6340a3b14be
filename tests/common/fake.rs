//! Run directories with known numbers, written as dp-bench writes them, for the tests of
//! `dp-bench compare`: runs, their epoch records edited, independent copies.

use super::{binary, read_json, run};
use dp_bench::config::{Config, DatasetSpec, DeviceKind, Partition, Precision, Preset};
use dp_bench::metrics::{write_json, EpochRecord, RunInfo};
use std::path::Path;
use std::process::Command;

pub fn config(world_size: usize, preset: Preset) -> Config {
    Config {
        world_size,
        batch_size: 16 * world_size,
        n_epochs: 4,
        learning_rate: 1e-4,
        model_max_length: 128,
        preset,
        dataset: DatasetSpec::Synthetic,
        train_examples: 5000,
        val_examples: 1000,
        test_examples: 100,
        seed: 1234,
        threads: 1,
        device: DeviceKind::Cpu,
        precision: Precision::Fp32,
        partition: Partition::Strided,
        dropout: 0.1,
        benchmark_only: true,
        max_batches: None,
        workdir: Default::default(),
        overwrite: false,
        resume: false,
        epoch_gate: None,
        turn_examples: None,
        rotate_cores: 0,
        collective_timeout: 600,
        independent: false,
        copies: 1,
        copy: 0,
        padding: dp_bench::config::Padding::Fixed,
        bucket_by_length: false,
        cpu_matmul: dp_bench::config::CpuMatmul::Onednn,
        allreduce: dp_bench::config::AllReduce::Shm,
        optimizer_state: dp_bench::config::OptimizerState::Replicated,
        custom_dims: Default::default(),
    }
}

/// A run directory whose rank r trained epoch e in `times[r][e]` seconds on 1000 tokens.
pub fn fake_run(dir: &Path, preset: Preset, times: &[&[f64]]) {
    fake_run_of("dp-bench", dir, preset, times)
}

/// `fake_run` as written by `implementation` (a reference such as `pytorch-ddp`).
pub fn fake_run_of(implementation: &str, dir: &Path, preset: Preset, times: &[&[f64]]) {
    std::fs::create_dir_all(dir).unwrap();
    let c = config(times.len(), preset);
    let info = RunInfo {
        implementation: implementation.into(),
        schema: 1,
        config: c.clone(),
        dims: c.dims(),
        vocab_size: 8000,
        parameters: 1,
        libtorch_version: "2.11.0".into(),
        mpi_library: "MPICH 4".into(),
        host: "h".into(),
        hosts: vec!["h".into(); times.len()],
        nodes: None,
        threads_per_rank: 1,
        cores_per_rank: Some(1),
        device: "cpu".into(),
        crate_version: "0".into(),
        start_time: "2026-01-01T00:00:00Z".into(),
        cpu: "Test CPU, 2 logical cores".into(),
        simd: "avx2".into(),
    };
    write_json(&dir.join("run.json"), &info).unwrap();
    for (rank, epochs) in times.iter().enumerate() {
        for (epoch, &t) in epochs.iter().enumerate() {
            let rec = EpochRecord {
                process_epoch: None,
                epoch,
                rank,
                world_size: times.len(),
                global_batch_size: c.batch_size,
                local_batch_size: 16,
                steps: 10,
                started_at: None,
                paused_time: None,
                training_time: t,
                tokens: 1000,
                tokens_per_sec: 1000.0 / t,
                target_tokens: 100,
                target_tokens_per_sec: 100.0 / t,
                flops: None,
                flops_per_sec: None,
                train_loss: 5.0,
                compute_time: 0.8 * t,
                allreduce_time: 0.1 * t,
                wait_time: 0.01 * t,
                data_time: 0.05 * t,
                max_rss_mb: Some(100.0),
                peak_device_mb: None,
                validation_loss: None,
                bleu: None,
                eval_time: None,
                param_checksum: 1.0,
            };
            write_json(&dir.join(EpochRecord::file_name(rank, epoch)), &rec).unwrap();
        }
    }
}

/// Rewrites each of `fake_run`'s epoch records with `edit`.
pub fn edit_records(dir: &Path, edit: impl Fn(&mut EpochRecord)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if EpochRecord::is_file_name(&name) {
            let mut rec: EpochRecord = serde_json::from_value(read_json(&path)).unwrap();
            edit(&mut rec);
            write_json(&path, &rec).unwrap();
        }
    }
}

/// Marks `fake_run`'s records as written by processes of `per_round` epochs each: a run
/// stopped and resumed (`--resume`) every `per_round` epochs, which warms up again each time.
pub fn in_rounds(dir: &Path, per_round: usize) {
    edit_records(dir, |rec| rec.process_epoch = Some(rec.epoch % per_round));
}

/// Sets when each of `fake_run`'s epochs started: epoch e at `at(e)`, every rank alike.
pub fn started(dir: &Path, at: impl Fn(usize) -> f64) {
    edit_records(dir, |rec| rec.started_at = Some(at(rec.epoch)));
}

/// Independent copies of a one-rank run (`dp-bench --independent`): copy c trained epoch e in
/// `times[c][e]` seconds on 1000 tokens, as `fake_run`'s rank would.
pub fn fake_copies(dir: &Path, times: &[&[f64]]) {
    for (copy, t) in times.iter().enumerate() {
        let d = dir.join(format!("copy{copy}"));
        fake_run(&d, Preset::Tiny, &[t]);
        let mut info = read_json(&d.join("run.json"));
        info["config"]["copies"] = times.len().into();
        write_json(&d.join("run.json"), &info).unwrap();
    }
}

/// One rank's epoch times on a machine whose speed drifts from epoch to epoch (a warm-up first).
pub fn drifting() -> Vec<f64> {
    vec![9.0, 1.0, 1.3, 0.9, 1.6]
}

pub fn compare(dirs: &[&Path], out: &Path) -> std::process::Output {
    run(Command::new(binary()).arg("compare").args(dirs).arg("--out").arg(out))
}

pub fn close(a: &serde_json::Value, b: f64, tol: f64) -> bool {
    (a.as_f64().unwrap_or(f64::NAN) - b).abs() <= tol
}
