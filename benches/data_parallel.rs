//! `cargo bench`: the seed's comparison — one rank with per-device batch b against two ranks
//! with global batch 2b — each configuration a real `mpirun -n N dp-bench …` into its own run
//! directory, the warm-up epoch dropped, epoch time averaged over ranks and throughput summed.
//! `cargo bench -- --quick` runs a smaller workload. (Confidence intervals, baselines, plots and
//! the HTML report come with the benchmark-harness issue.)

use dp_bench::metrics::{read_records, EpochRecord};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Setup {
    world_size: usize,
    global_batch: usize,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let (examples, epochs) = if quick { ("256", 3) } else { ("1000", 6) };
    let per_device = 16;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dp-bench");
    let mut baseline: Option<(f64, f64)> = None;
    for setup in [
        Setup { world_size: 1, global_batch: per_device },
        Setup { world_size: 2, global_batch: 2 * per_device },
    ] {
        let id = format!("ws{}_bs{}", setup.world_size, setup.global_batch);
        let dir = root.join(&id);
        eprintln!("data_parallel/{id}: running {epochs} epochs of {examples} examples…");
        let status = Command::new("mpirun")
            .args(["-n", &setup.world_size.to_string(), env!("CARGO_BIN_EXE_dp-bench")])
            .args(["--world-size", &setup.world_size.to_string()])
            .args(["--batch-size", &setup.global_batch.to_string()])
            .args(["--n-epochs", &epochs.to_string(), "--train-examples", examples])
            .args(["--threads", "1", "--benchmark-only", "--overwrite"])
            .arg("--workdir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "{id}: dp-bench failed ({status})");
        let (time, tps) = summarise(&dir)?;
        println!(
            "data_parallel/{id:<10} time: {:.3} s ± {:.3}   thrpt: {:.0} ± {:.0} tok/s",
            time.0, time.1, tps.0, tps.1
        );
        match baseline {
            None => baseline = Some((time.0, tps.0)),
            Some((t1, r1)) => println!(
                "data_parallel/{id:<10} speedup: time {:.2}×, throughput {:.2}×, efficiency {:.2}",
                t1 / time.0,
                tps.0 / r1,
                tps.0 / r1 / setup.world_size as f64
            ),
        }
    }
    Ok(())
}

/// (mean, std) of the measured epochs' time (mean over ranks) and throughput (sum over ranks).
fn summarise(dir: &Path) -> anyhow::Result<((f64, f64), (f64, f64))> {
    let records = read_records(dir)?;
    let last = records.iter().map(|r| r.epoch).max().unwrap_or(0);
    let per_epoch: Vec<&[EpochRecord]> =
        records.chunk_by(|a, b| a.epoch == b.epoch).skip(1).collect();
    anyhow::ensure!(per_epoch.len() == last, "{}: missing epochs", dir.display());
    let times: Vec<f64> = per_epoch
        .iter()
        .map(|e| e.iter().map(|r| r.training_time).sum::<f64>() / e.len() as f64)
        .collect();
    let tps: Vec<f64> =
        per_epoch.iter().map(|e| e.iter().map(|r| r.tokens_per_sec).sum()).collect();
    Ok((mean_std(&times), mean_std(&tps)))
}

fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}
