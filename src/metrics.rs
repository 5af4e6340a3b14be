//! What a run leaves behind: per-rank epoch records (`rank{r}_results_epoch{e}.json`), rank 0's
//! `run.json`, and the rules of the run directory — every file written atomically, and a workdir
//! holding another configuration's results refused unless `--overwrite`. The analysis reads these
//! files; it never reaches into the trainer.

use crate::config::{Config, ModelDims};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) const RUN_FILE: &str = "run.json";
pub(crate) const RUN_SCHEMA: u32 = 1;

/// One rank's measurements of one epoch (WORKLOAD.md, "Metrics").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Epochs this process had trained before this one: 0 for the first epoch after the start
    /// or a `--resume`, which also builds libtorch's kernels and warms the allocator. Records
    /// without it (older runs, the PyTorch reference) count from the run's first epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_epoch: Option<usize>,
    pub rank: usize,
    pub world_size: usize,
    pub global_batch_size: usize,
    pub local_batch_size: usize,
    pub steps: usize,
    /// When this rank's training loop started, in seconds since the Unix epoch: it places
    /// epochs of different runs in time (the analysis pairs epochs that took turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// Wall seconds of this rank's training loop: first batch fetched to last optimiser step
    /// done, device synchronised (less `paused_time`).
    pub training_time: f64,
    /// Seconds the loop stood stopped at gates within the epoch, while other runs took their
    /// turns (`dp-bench --turn-examples`); not part of `training_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_time: Option<f64>,
    /// Input positions fed to the model on this rank, padding included.
    pub tokens: u64,
    pub tokens_per_sec: f64,
    pub target_tokens: u64,
    pub target_tokens_per_sec: f64,
    /// Floating-point operations of this rank's matrix products in the epoch (forward and
    /// backward, from the batches' shapes; see `GptConfig::step_flops`), and per second of
    /// `training_time`. Absent in older records and the PyTorch reference's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops_per_sec: Option<f64>,
    /// Mean training loss over the epoch, weighted by target tokens over all ranks.
    pub train_loss: f64,
    /// Forward, backward and optimiser time within `training_time`.
    pub compute_time: f64,
    /// Gradient synchronisation time within `training_time`.
    pub allreduce_time: f64,
    /// Waiting for the slowest rank before the all-reduce (load imbalance) within
    /// `training_time`.
    #[serde(default)]
    pub wait_time: f64,
    /// Batch collation (padding, index building, host-to-device copy) within `training_time`.
    #[serde(default)]
    pub data_time: f64,
    /// Peak resident memory of this rank's process so far, in MiB (Linux `VmHWM`).
    #[serde(default)]
    pub max_rss_mb: Option<f64>,
    /// The most GPU memory libtorch's allocator reserved on this rank's GPU during the epoch, in
    /// MiB (absent on CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_mb: Option<f64>,
    pub validation_loss: Option<f64>,
    pub bleu: Option<f64>,
    /// Seconds spent on validation loss and test translation after the epoch.
    pub eval_time: Option<f64>,
    pub param_checksum: f64,
}

impl EpochRecord {
    /// Rank `rank`'s record of epoch `epoch` of `config`'s run: what its training loop measured
    /// (`stats`), the evaluation after it where one ran, and `first_epoch`, the epoch this
    /// process started at. `turns`: whether the run took turns within epochs (so its time
    /// stopped is recorded).
    pub fn new(
        config: &Config,
        (rank, epoch, first_epoch): (usize, usize, usize),
        stats: &crate::train::EpochStats,
        eval: Option<&crate::eval::Evaluation>,
        turns: bool,
    ) -> Self {
        let per_sec = |n: f64| n / stats.training_time;
        EpochRecord {
            epoch,
            process_epoch: Some(epoch - first_epoch),
            rank,
            world_size: config.world_size,
            global_batch_size: config.batch_size,
            local_batch_size: config.local_batch_size(),
            steps: stats.steps,
            started_at: Some(stats.started_at),
            training_time: stats.training_time,
            paused_time: turns.then_some(stats.paused_time),
            tokens: stats.tokens,
            tokens_per_sec: per_sec(stats.tokens as f64),
            target_tokens: stats.target_tokens,
            target_tokens_per_sec: per_sec(stats.target_tokens as f64),
            flops: Some(stats.flops),
            flops_per_sec: Some(per_sec(stats.flops)),
            train_loss: stats.train_loss,
            compute_time: stats.compute_time,
            allreduce_time: stats.allreduce_time,
            wait_time: stats.wait_time,
            data_time: stats.data_time,
            max_rss_mb: max_rss_mb(),
            peak_device_mb: None,
            validation_loss: eval.map(|e| e.validation_loss),
            bleu: eval.map(|e| e.bleu),
            eval_time: eval.map(|e| e.seconds),
            param_checksum: stats.param_checksum,
        }
    }

    pub fn file_name(rank: usize, epoch: usize) -> String {
        format!("rank{rank}_results_epoch{epoch}.json")
    }

    /// Whether `name` is the name of an epoch record (`rank{r}_results_epoch{e}.json`).
    pub fn is_file_name(name: &str) -> bool {
        Self::rank_epoch(name).is_some()
    }

    /// `(rank, epoch)` of an epoch record's file name.
    pub fn rank_epoch(name: &str) -> Option<(usize, usize)> {
        parse_rank_epoch(name, "_results_epoch")
    }
}

/// `(rank, epoch)` of a per-rank, per-epoch file `rank{r}{infix}{e}.json`.
fn parse_rank_epoch(name: &str, infix: &str) -> Option<(usize, usize)> {
    let (rank, epoch) = name.strip_prefix("rank")?.strip_suffix(".json")?.split_once(infix)?;
    Some((rank.parse().ok()?, epoch.parse().ok()?))
}

/// The epoch of a file a run writes per rank and epoch (records and translations).
fn result_file_epoch(name: &str) -> Option<usize> {
    parse_rank_epoch(name, "_results_epoch")
        .or_else(|| parse_rank_epoch(name, "_gen_epoch"))
        .map(|(_, e)| e)
}

/// Peak resident set size of this process in MiB, from `/proc/self/status` (`None` off Linux).
pub fn max_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Rank 0's description of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub schema: u32,
    /// Who trained: `dp-bench`, or a reference implementation (`pytorch-eager`, `pytorch-ddp`,
    /// `pytorch-per-param` from scripts/torch_reference.py) measured on the same workload.
    #[serde(default = "ours")]
    pub implementation: String,
    pub config: Config,
    pub dims: ModelDims,
    pub vocab_size: usize,
    pub parameters: i64,
    pub libtorch_version: String,
    pub mpi_library: String,
    /// Host name of rank 0.
    pub host: String,
    /// Host name of each rank, by rank.
    pub hosts: Vec<String>,
    /// Each rank's MPI node, by rank: the lowest world rank among the ranks that share its
    /// memory (`hosts::RankPlace::node`). Absent in older files and the reference's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<usize>>,
    pub threads_per_rank: usize,
    /// Cores rank 0 could run on, by its affinity: 1 when bound to a core (or, with
    /// `--rotate-cores`, pinned to one core at a time). Absent in older files and the reference's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores_per_rank: Option<usize>,
    pub device: String,
    pub crate_version: String,
    pub start_time: String,
    /// Rank 0's CPU: its model name and logical cores (`cpu_description`); empty in files
    /// written before it was recorded.
    #[serde(default)]
    pub cpu: String,
    /// The build of dp-bench's own CPU loops that ran (`portable`, `avx2` or `avx512`: the CPU's
    /// widest, or `DP_BENCH_SIMD`'s cap); absent in older files and the reference's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub simd: String,
}

/// This host's CPU as `/proc/cpuinfo` names it, with its logical cores (not only those this
/// process may use): `Intel(R) Xeon(R) Processor, 2 logical cores`. Empty where unknown.
pub(crate) fn cpu_description() -> String {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return String::new();
    };
    let field = |line: &str, key: &str| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    };
    let model = info.lines().find_map(|l| field(l, "model name")).unwrap_or_default();
    let cores = info.lines().filter(|l| field(l, "processor").is_some()).count();
    match (model.is_empty(), cores) {
        (true, 0) => String::new(),
        (true, n) => format!("{n} logical cores"),
        (false, 0) => model,
        (false, n) => format!("{model}, {n} logical cores"),
    }
}

fn ours() -> String {
    IMPLEMENTATION.to_string()
}

pub(crate) const IMPLEMENTATION: &str = "dp-bench";

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader (or a crash)
/// never sees half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    #[error("cannot use workdir {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("workdir {path} holds results of a different configuration ({diff}): pass another --workdir, or --overwrite to replace them")]
    OtherConfig { path: PathBuf, diff: String },
    #[error("workdir {path} holds results without a readable {RUN_FILE} ({reason}): pass another --workdir, or --overwrite to replace them")]
    Unknown { path: PathBuf, reason: String },
    #[error("workdir {path} holds this configuration's results ({what}): --resume to go on from its last checkpoint, --overwrite to replace them, or pass another --workdir")]
    HasResults { path: PathBuf, what: String },
    #[error("nothing to resume in {path}: it holds no {RUN_FILE}; run without --resume")]
    NothingToResume { path: PathBuf },
    #[error("workdir {path} holds an ordinary run's results, which would hide the copies of --independent (in its copy0, copy1, …) from `dp-bench compare`: pass another --workdir, or --overwrite to replace them")]
    NotForCopies { path: PathBuf },
}

/// The keys on which two configurations differ, as `key: old → new`.
fn config_diff(old: &serde_json::Value, new: &serde_json::Value) -> String {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return "unreadable configuration".into();
    };
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| v.map_or("-".into(), |v| v.to_string());
            format!("{k}: {} → {}", show(old.get(k)), show(new.get(k)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `dir` is a run directory: it holds a `run.json` or epoch records.
pub(crate) fn is_run_dir(dir: &Path) -> bool {
    dir.join(RUN_FILE).exists() || result_files(dir).is_ok_and(|r| !r.is_empty())
}

/// Whether a file of this name in a run directory is one of the run's own: its `run.json`,
/// epoch records, checkpoints, tokenizer, final weights or lock.
fn is_run_file(name: &str) -> bool {
    name == RUN_FILE
        || result_file_epoch(name).is_some()
        || name.starts_with("checkpoint")
        || name == crate::run::MODEL_FILE
        || name.starts_with("tokenizer.")
        || name == crate::lock::LOCK_FILE
}

/// Refuses an output of a subcommand (`what`, e.g. "--out") that would replace one of a run's
/// own files ([`is_run_file`] in a run directory); other files beside them are the user's
/// business (the bench keeps `examples.json` there).
pub(crate) fn refuse_run_output(path: &Path, what: &str) -> anyhow::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if is_run_file(&name) && is_run_dir(parent) {
        return Err(crate::UsageError::error(format!(
            "{what} {}: that is a file of the run in {}, which would be replaced: write \
             elsewhere",
            path.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// The result files in `dir` (epoch records and generation samples), each with its epoch.
fn result_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, usize)>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.path(), result_file_epoch(&e.file_name().to_string_lossy())?)))
        .collect())
}

/// Makes `config.workdir` ready for this run (rank 0 only): creates it, refuses it when it holds
/// results (another configuration's, or this one's without `--resume`) unless `--overwrite`,
/// and clears the result files left behind — with `--overwrite` all of them, with `--resume`
/// those of epochs after `keep_through` (the last checkpointed epoch).
pub(crate) fn prepare_workdir(
    config: &Config,
    keep_through: Option<usize>,
) -> Result<(), WorkdirError> {
    let dir = &config.workdir;
    let io = |source| WorkdirError::Io { path: dir.clone(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    // Fail now, not after an epoch of training, when the directory is not writable.
    write_atomic(&dir.join(".dp-bench-write-test"), b"").map_err(io)?;
    std::fs::remove_file(dir.join(".dp-bench-write-test")).map_err(io)?;

    let results = result_files(dir).map_err(io)?;
    let run_file = dir.join(RUN_FILE);
    if config.resume && !run_file.exists() {
        return Err(WorkdirError::NothingToResume { path: dir.clone() });
    }
    if !config.overwrite && (run_file.exists() || !results.is_empty()) {
        let old: Result<serde_json::Value, String> = std::fs::read(&run_file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
        match old {
            Ok(old) => {
                let mut old = old["config"].clone();
                let mut new = serde_json::to_value(config).expect("config serialises");
                if config.resume {
                    // A resumed run may train for more epochs than the original asked for.
                    for c in [&mut old, &mut new] {
                        c.as_object_mut().map(|o| o.remove("n_epochs"));
                    }
                }
                let diff = config_diff(&old, &new);
                if !diff.is_empty() {
                    return Err(WorkdirError::OtherConfig { path: dir.clone(), diff });
                }
                if !config.resume {
                    let what = match results.iter().map(|(_, e)| e + 1).max() {
                        Some(epochs) => format!("records of {epochs} epochs"),
                        None => format!("a {RUN_FILE}"),
                    };
                    return Err(WorkdirError::HasResults { path: dir.clone(), what });
                }
            }
            Err(reason) => return Err(WorkdirError::Unknown { path: dir.clone(), reason }),
        }
    }
    for (f, epoch) in results {
        if keep_through.is_none_or(|last| epoch > last) {
            std::fs::remove_file(&f).map_err(io)?;
        }
    }
    Ok(())
}

/// Makes `config.workdir` ready for `--independent` copies (rank 0 only), each of which then
/// prepares its own [`Config::copy_dir`] as any run does: creates it, and refuses it when it
/// holds an ordinary run's `run.json` or records, which `dp-bench compare` would read instead of
/// the copies — unless `--overwrite`, which removes them.
pub(crate) fn prepare_copies_dir(config: &Config) -> Result<(), WorkdirError> {
    let dir = &config.workdir;
    let io = |source| WorkdirError::Io { path: dir.clone(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let run_file = Some(dir.join(RUN_FILE)).filter(|f| f.exists());
    let results = result_files(dir).map_err(io)?.into_iter().map(|(f, _)| f);
    let ordinary: Vec<PathBuf> = run_file.into_iter().chain(results).collect();
    if !ordinary.is_empty() && !config.overwrite {
        return Err(WorkdirError::NotForCopies { path: dir.clone() });
    }
    for f in ordinary {
        std::fs::remove_file(&f).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::tiny_config;

    fn config_in(dir: &Path) -> Config {
        let mut c = tiny_config();
        c.workdir = dir.to_path_buf();
        c
    }

    fn fake_run(c: &Config) {
        let info = serde_json::json!({ "config": serde_json::to_value(c).unwrap() });
        write_json(&c.workdir.join(RUN_FILE), &info).unwrap();
        std::fs::write(c.workdir.join("rank0_results_epoch0.json"), "{}").unwrap();
    }

    #[test]
    fn other_configuration_is_refused_unless_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let c = config_in(dir.path());
        prepare_workdir(&c, None).unwrap();
        fake_run(&c);
        let mut other = c.clone();
        other.world_size = 2;
        other.batch_size = 16;
        let err = prepare_workdir(&other, None).unwrap_err().to_string();
        assert!(err.contains("batch_size: 8 → 16") && err.contains("world_size: 1 → 2"), "{err}");
        assert!(dir.path().join("rank0_results_epoch0.json").exists(), "nothing deleted");
        other.overwrite = true;
        prepare_workdir(&other, None).unwrap();
        assert!(!dir.path().join("rank0_results_epoch0.json").exists());
    }

    #[test]
    fn copies_replace_an_ordinary_run_only_with_overwrite_and_keep_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        fake_run(&c);
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        c.copies = 2;
        let err = prepare_copies_dir(&c).unwrap_err().to_string();
        assert!(err.contains("ordinary run's results") && err.contains("--overwrite"), "{err}");
        assert!(
            dir.path().join(RUN_FILE).exists()
                && dir.path().join("rank0_results_epoch0.json").exists()
        );
        c.overwrite = true;
        prepare_copies_dir(&c).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["notes.txt"], "the run's files go, nothing else");
        // A fresh or already-copied directory needs nothing.
        c.overwrite = false;
        prepare_copies_dir(&c).unwrap();
        c.workdir = dir.path().join("new");
        prepare_copies_dir(&c).unwrap();
        assert!(c.workdir.is_dir());
    }

    #[test]
    fn the_same_configuration_is_refused_without_resume_or_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config_in(dir.path());
        fake_run(&c);
        let err = prepare_workdir(&c, None).unwrap_err().to_string();
        assert!(err.contains("records of 1 epochs") && err.contains("--resume"), "{err}");
        assert!(err.contains("--overwrite"), "{err}");
        assert!(dir.path().join("rank0_results_epoch0.json").exists(), "nothing deleted");
        c.resume = true;
        prepare_workdir(&c, Some(0)).unwrap();
        assert!(dir.path().join("rank0_results_epoch0.json").exists(), "kept through epoch 0");
        c.resume = false;
        c.overwrite = true;
        prepare_workdir(&c, None).unwrap();
        assert!(!dir.path().join("rank0_results_epoch0.json").exists());
    }

    #[test]
    fn resume_keeps_checkpointed_epochs_and_may_extend_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let c = config_in(dir.path());
        fake_run(&c);
        for name in
            ["rank0_results_epoch1.json", "rank0_gen_epoch1.json", "rank0_results_epoch2.json"]
        {
            std::fs::write(dir.path().join(name), "{}").unwrap();
        }
        let mut resumed = c.clone();
        resumed.resume = true;
        resumed.n_epochs = 5;
        prepare_workdir(&resumed, Some(1)).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expect = [
            "rank0_gen_epoch1.json",
            "rank0_results_epoch0.json",
            "rank0_results_epoch1.json",
            "run.json",
        ];
        assert_eq!(names, expect);
        resumed.batch_size = 16;
        assert!(matches!(
            prepare_workdir(&resumed, Some(1)),
            Err(WorkdirError::OtherConfig { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        let mut nothing = config_in(empty.path());
        nothing.resume = true;
        assert!(matches!(
            prepare_workdir(&nothing, None),
            Err(WorkdirError::NothingToResume { .. })
        ));
    }

    #[test]
    fn file_names_parse() {
        assert_eq!(parse_rank_epoch("rank12_results_epoch3.json", "_results_epoch"), Some((12, 3)));
        assert_eq!(result_file_epoch("rank0_gen_epoch7.json"), Some(7));
        assert_eq!(result_file_epoch("rank0_results_epochx.json"), None);
        assert!(!EpochRecord::is_file_name("run.json"));
    }

    #[test]
    fn results_without_run_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rank1_results_epoch3.json"), "{}").unwrap();
        let err = prepare_workdir(&config_in(dir.path()), None).unwrap_err();
        assert!(matches!(err, WorkdirError::Unknown { .. }), "{err}");
    }

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("a.json"), b"{}").unwrap();
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }
}
