//! The PyTorch reference in the data_parallel bench: `scripts/torch_reference.py` (eager on one
//! process, DDP on N) trained on the token ids of dp-bench's first run, after dp-bench's
//! configurations, each under its share of the time budget and the bench's stopping rule on its
//! mean epoch time (`sampling`).

use super::plan::{BenchArgs, Planned};
use super::run_data::RunData;
use super::runner::bound;
use super::sampling::{self, Ended};
use super::stats;
use indicatif::ProgressBar;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// When a reference run stops: after `share` of time, or once its mean epoch time's interval is
/// within `target_width`, after `sampling::REFERENCE_MIN_EPOCHS` measured epochs either way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopping {
    pub share: Duration,
    pub target_width: f64,
    pub warmup: usize,
    pub level: f64,
}

/// The PyTorch reference for each configuration that has one, on the token ids of dp-bench's
/// first run (so both do the same work): its runs join `runs`, its failures `failures`.
/// `(binary, root, python)`: `dp-bench`, the project root and the reference's interpreter.
pub(crate) fn run_references(
    args: &BenchArgs,
    (binary, root, python): (&Path, &Path, &Path),
    (plan, runs_dir): (&[Planned], &Path),
    budget: Option<Duration>,
    (runs, failures): (&mut Vec<RunData>, &mut Vec<String>),
    bar: &ProgressBar,
) {
    let Some(ours) = runs.first().map(|r| r.dir.clone()) else { return };
    let exported = Command::new(binary)
        .arg("export-examples")
        .arg("--workdir")
        .arg(&ours)
        .arg("--out")
        .arg(ours.join("examples.json"))
        .status();
    let planned: Vec<(&Planned, bool)> = plan
        .iter()
        .filter(|p| p.reference)
        .flat_map(|p| args.reference_variants().iter().map(move |&c| (p, c)))
        .collect();
    let stopping = budget.map(|b| Stopping {
        share: b.mul_f64(sampling::REFERENCE_SHARE / planned.len().max(1) as f64),
        target_width: args.target_width,
        warmup: args.run.warmup,
        level: args.run.confidence,
    });
    let compile_missing = planned.iter().any(|&(_, c)| c).then(|| compile_prerequisites(python));
    for (p, compile) in planned {
        let name = format!("pytorch{}_{}", if compile { "-compiled" } else { "" }, p.id);
        if let Some(Err(missing)) = compile_missing.as_ref().filter(|_| compile) {
            bar.suspend(|| eprintln!("data_parallel/{name}: skipped: {missing}"));
            continue;
        }
        let dir = runs_dir.join(&name);
        let result = match &exported {
            Ok(s) if s.success() => {
                let epochs = args.reference_epochs();
                run_reference(python, root, (&ours, p, epochs, compile), &dir, stopping, bar)
            }
            other => Err(anyhow::anyhow!("exporting the examples failed: {other:?}")),
        };
        match result.and_then(|()| Ok(RunData::load(&dir)?)) {
            Ok(run) => runs.push(run),
            Err(e) => {
                bar.suspend(|| eprintln!("data_parallel/{name}: FAILED: {e:#}"));
                failures.push(name);
            }
        }
    }
}

/// What torch.compile needs at its first use and checks only then: a C compiler (Inductor's
/// C++ kernels on CPUs, Triton's launcher on GPUs; `CC`, else `cc` or `gcc` on PATH) and
/// Python's headers (`Python.h`) for `python`. An error says which is missing and the fix.
pub(crate) fn compile_prerequisites(python: &Path) -> Result<(), String> {
    prerequisites(std::env::var("CC").ok(), python)
}

/// [`compile_prerequisites`] with `cc` as the `CC` variable.
fn prerequisites(cc: Option<String>, python: &Path) -> Result<(), String> {
    let cc = cc.filter(|c| !c.is_empty());
    let compiler = match &cc {
        Some(c) => super::runner::find_program(c),
        None => ["cc", "gcc"].into_iter().find_map(super::runner::find_program),
    };
    if compiler.is_none() {
        return Err(format!(
            "torch.compile needs a C compiler and finds none ({}): install gcc (apt install \
             build-essential)",
            cc.map_or("no cc or gcc on PATH".into(), |c| format!("CC={c} is not found"))
        ));
    }
    let probe = "import os, sysconfig; \
                 print(os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))";
    let headers = Command::new(python).args(["-c", probe]).output();
    match headers {
        Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "True" => Ok(()),
        _ => Err(format!(
            "torch.compile needs Python's headers and {} has none (no Python.h): install them \
             (apt install python3-dev)",
            python.display()
        )),
    }
}

/// The PyTorch reference of configuration `p` (eager on one rank, DDP on more; through
/// torch.compile with `compile`) into `dir`, on the token ids, device and precision of
/// dp-bench's run in `ours`, for at most `epochs` epochs.
fn run_reference(
    python: &Path,
    root: &Path,
    (ours, p, epochs, compile): (&Path, &Planned, usize, bool),
    dir: &Path,
    stopping: Option<Stopping>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let flag = |name: &str| {
        let i = p.args.iter().position(|a| a == name).expect("planned flag");
        p.args[i + 1].clone()
    };
    let threads: usize = flag("--threads").parse().unwrap_or(1);
    let mode = if p.world_size == 1 { "eager" } else { "ddp" };
    // The script does not clear its directory; samples of an older run must not mix in.
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let stop_file = dir.with_extension("stop");
    let _ = std::fs::remove_file(&stop_file);
    let mut cmd = Command::new(python);
    cmd.arg(root.join("scripts/torch_reference.py"))
        .arg("--examples")
        .arg(ours.join("examples.json"))
        .arg("--template")
        .arg(ours.join(crate::metrics::RUN_FILE))
        .args(["--mode", mode, "--world-size", &p.world_size.to_string()])
        .args(["--batch-size", &flag("--batch-size"), "--n-epochs", &epochs.to_string()])
        .args(["--threads", &flag("--threads")])
        .args(["--device", &flag("--device"), "--precision", &flag("--precision")])
        .args(compile.then_some("--compile"))
        .args(bound(p.world_size, threads, flag("--device") == "cpu").then_some("--bind"))
        .arg("--stop-file")
        .arg(&stop_file)
        .arg("--workdir")
        .arg(dir);
    let id = format!("pytorch-{mode}{}_{}", if compile { "-compiled" } else { "" }, p.id);
    bar.set_prefix(id.clone());
    let start = Instant::now();
    let mut stopped = false;
    let poll = Duration::from_millis(200);
    let (status, errors) = super::turns::run_reporting(cmd, &id, bar, poll, || {
        if let (Some(rule), false) = (stopping, stopped) {
            let times = epoch_times(dir, p.world_size);
            if let Some(ended) = should_stop(&times, start.elapsed(), rule) {
                std::fs::write(&stop_file, format!("{ended:?}\n"))?;
                stopped = true;
            }
        }
        Ok(())
    })?;
    let _ = std::fs::remove_file(&stop_file);
    anyhow::ensure!(status.success(), "{id} failed ({status}): {}", errors.join(" | "));
    Ok(())
}

/// Each finished epoch's time in `dir` (mean over its `ranks` ranks), in order, as far as every
/// rank has written its record.
fn epoch_times(dir: &Path, ranks: usize) -> Vec<f64> {
    let time = |epoch: usize, rank: usize| -> Option<f64> {
        let path = dir.join(crate::metrics::EpochRecord::file_name(rank, epoch));
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        record["training_time"].as_f64()
    };
    (0..)
        .map_while(|e| (0..ranks).map(|r| time(e, r)).sum::<Option<f64>>())
        .map(|sum| sum / ranks as f64)
        .collect()
}

/// The stopping rule for a reference run whose epochs took `times`, `elapsed` since it started:
/// its mean epoch time's interval within the target, or its share of the budget spent (or about
/// to be, by one more epoch).
fn should_stop(times: &[f64], elapsed: Duration, rule: Stopping) -> Option<Ended> {
    let measured = times.get(rule.warmup..).unwrap_or_default();
    let last = Duration::from_secs_f64(times.last().copied().unwrap_or(0.0));
    let widest = match measured.len() {
        0 | 1 => f64::INFINITY,
        _ => {
            let s = stats::Summary::of(measured, rule.level);
            (s.upper - s.lower) / 2.0 / s.mean
        }
    };
    let measured = (measured.len(), sampling::REFERENCE_MIN_EPOCHS);
    sampling::decide(measured, widest, (elapsed, last, rule.share), rule.target_width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_run_stops_on_precision_or_on_its_share_of_the_budget() {
        let rule = Stopping {
            share: Duration::from_secs(100),
            target_width: 0.01,
            warmup: 1,
            level: 0.95,
        };
        // A warm-up epoch, then measured epochs: too few, steady, or scattered.
        let epochs = |measured: &[f64]| [&[9.0][..], measured].concat();
        let least = sampling::REFERENCE_MIN_EPOCHS;
        let few = epochs(&vec![1.0; least - 1]);
        let steady = epochs(&[1.0, 1.0001, 0.9999, 1.0, 1.00005, 0.99995][..least]);
        let scattered = epochs(&[1.0, 1.5, 0.7, 1.2, 0.8, 1.3][..least]);
        let early = Duration::from_secs(10);
        assert_eq!(should_stop(&few, early, rule), None, "too few measured epochs");
        assert_eq!(should_stop(&steady, early, rule), Some(Ended::Precision));
        assert_eq!(should_stop(&scattered, early, rule), None);
        let late = Duration::from_millis(99_500);
        assert_eq!(should_stop(&scattered, late, rule), Some(Ended::Budget));
    }

    #[test]
    fn epoch_times_are_read_as_far_as_every_rank_has_written() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |rank: usize, epoch: usize, t: f64| {
            let path = tmp.path().join(crate::metrics::EpochRecord::file_name(rank, epoch));
            std::fs::write(path, format!("{{\"training_time\": {t}}}")).unwrap();
        };
        write(0, 0, 2.0);
        write(1, 0, 4.0);
        write(0, 1, 1.0);
        assert_eq!(epoch_times(tmp.path(), 2), [3.0], "epoch 1 lacks rank 1");
        write(1, 1, 3.0);
        assert_eq!(epoch_times(tmp.path(), 2), [3.0, 2.0]);
    }

    #[test]
    fn compile_prerequisites_are_checked_and_named() {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        let e = prerequisites(Some("/no/such/cc".into()), &venv).unwrap_err();
        assert!(e.contains("C compiler") && e.contains("CC=/no/such/cc is not found"), "{e}");
        // A compiler there, an interpreter without headers (none at all).
        let e = prerequisites(Some("/bin/sh".into()), Path::new("/no/such/python")).unwrap_err();
        assert!(e.contains("Python.h") && e.contains("python3-dev"), "{e}");
    }
}
