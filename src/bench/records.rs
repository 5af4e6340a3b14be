//! Epoch records as the analysis reads them, whoever wrote them: dp-bench's own runs, the PyTorch
//! reference, or any trainer that writes `rank{r}_results_epoch{e}.json` (the course's
//! `run_data_parallel.py`, `scripts/dp_records.py`). A record must give `training_time` and
//! `tokens_per_sec`; every other key is optional, and what it unlocks is listed in
//! docs/records.md. Each number is checked here, before any statistic sees it, and a record
//! that cannot be used is refused with its file, key and value named.
//!
//! Also the directories such trainers leave ([`Foreign`]): world size from the ranks present,
//! epochs from the file names, and the signs that two runs wrote into one directory.

use super::analysis::AnalysisError;
use crate::metrics::EpochRecord;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The file a bench writes beside the records of a configuration that a user's training
/// command produced (`--trainer`): the command and the world size and batch it was given.
pub const TRAINER_FILE: &str = "dp-bench-trainer.json";

/// One rank's epoch. `epoch` and `rank` come from the file name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Record {
    #[serde(skip)]
    pub epoch: usize,
    #[serde(skip)]
    pub rank: usize,
    /// Seconds of this rank's training loop in the epoch (device synchronised).
    pub training_time: f64,
    /// This rank's input positions per second of `training_time`.
    pub tokens_per_sec: f64,
    /// What the record says of itself where it says it: checked against its file name.
    #[serde(default, rename = "epoch")]
    said_epoch: Option<usize>,
    #[serde(default, rename = "rank")]
    said_rank: Option<usize>,
    #[serde(default)]
    pub process_epoch: Option<usize>,
    #[serde(default)]
    pub world_size: Option<usize>,
    #[serde(default)]
    pub global_batch_size: Option<usize>,
    #[serde(default)]
    pub started_at: Option<f64>,
    #[serde(default)]
    pub paused_time: Option<f64>,
    #[serde(default)]
    pub tokens: Option<f64>,
    #[serde(default)]
    pub target_tokens: Option<f64>,
    #[serde(default)]
    pub flops: Option<f64>,
    #[serde(default)]
    pub train_loss: Option<f64>,
    #[serde(default)]
    pub compute_time: Option<f64>,
    #[serde(default)]
    pub allreduce_time: Option<f64>,
    #[serde(default)]
    pub wait_time: Option<f64>,
    #[serde(default)]
    pub data_time: Option<f64>,
    #[serde(default)]
    pub peak_device_mb: Option<f64>,
    #[serde(default)]
    pub validation_loss: Option<f64>,
    #[serde(default)]
    pub bleu: Option<f64>,
    /// Who trained (`pytorch-ddp`, …), where a foreign trainer says.
    #[serde(default)]
    pub implementation: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
}

fn corrupt(path: &Path, reason: impl ToString) -> AnalysisError {
    AnalysisError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() }
}

impl Record {
    /// Whether this epoch is among the first `warmup` of its process, so excluded from samples.
    pub(crate) fn is_warmup(&self, warmup: usize, first_epoch: usize) -> bool {
        self.process_epoch.unwrap_or(self.epoch - first_epoch) < warmup
    }

    /// The record in `path`, named `rank{rank}_results_epoch{epoch}.json`, read and checked.
    pub(crate) fn read(path: &Path, (rank, epoch): (usize, usize)) -> Result<Self, AnalysisError> {
        let bytes = std::fs::read(path).map_err(|e| corrupt(path, e))?;
        let mut record: Record = serde_json::from_slice(&bytes).map_err(|e| {
            let text = String::from_utf8_lossy(&bytes);
            let hint = match ["NaN", "Infinity"].iter().find(|w| text.contains(*w)) {
                Some(w) => format!(
                    "; it holds {w}, which JSON cannot: write finite numbers (null for a value \
                     that has none), as scripts/dp_records.py does"
                ),
                None => String::new(),
            };
            corrupt(path, format!("not an epoch record ({e}){hint}; see docs/records.md"))
        })?;
        (record.rank, record.epoch) = (rank, epoch);
        record.check(path)?;
        Ok(record)
    }

    /// Every number in range: times and throughput finite and positive, the optional times,
    /// counts and rates finite and not negative, sizes at least one, the record's own epoch and
    /// rank those of its file name.
    fn check(&self, path: &Path) -> Result<(), AnalysisError> {
        let bad = |key: &str, value: String, want: &str| {
            corrupt(path, format!("{key} is {value}: it must be {want}; see docs/records.md"))
        };
        for (key, v) in
            [("training_time", self.training_time), ("tokens_per_sec", self.tokens_per_sec)]
        {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(key, v.to_string(), "a finite number above 0"));
            }
        }
        let optional = [
            ("started_at", self.started_at),
            ("paused_time", self.paused_time),
            ("tokens", self.tokens),
            ("target_tokens", self.target_tokens),
            ("flops", self.flops),
            ("compute_time", self.compute_time),
            ("allreduce_time", self.allreduce_time),
            ("wait_time", self.wait_time),
            ("data_time", self.data_time),
            ("peak_device_mb", self.peak_device_mb),
        ];
        for (key, v) in optional {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(bad(key, v.to_string(), "a finite number, 0 or more"));
            }
        }
        for (key, v) in
            [("world_size", self.world_size), ("global_batch_size", self.global_batch_size)]
        {
            if v == Some(0) {
                return Err(bad(key, "0".into(), "1 or more"));
            }
        }
        for (key, said, named) in
            [("epoch", self.said_epoch, self.epoch), ("rank", self.said_rank, self.rank)]
        {
            if let Some(said) = said.filter(|&s| s != named) {
                return Err(corrupt(
                    path,
                    format!(
                        "its {key} key says {said} but its name says {named}: a record renamed \
                         or moved from another run; restore its name"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Every epoch record in `dir`, read and checked, with its file's modification time.
pub(crate) fn read_all(dir: &Path) -> Result<Vec<(Record, SystemTime)>, AnalysisError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| corrupt(dir, e))? {
        let entry = entry.map_err(|e| corrupt(dir, e))?;
        let Some(at) = EpochRecord::rank_epoch(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let path = entry.path();
        let record = Record::read(&path, at)?;
        let modified =
            entry.metadata().and_then(|m| m.modified()).map_err(|e| corrupt(&path, e))?;
        out.push((record, modified));
    }
    Ok(out)
}

/// `records[epoch - first][rank]` for epochs `first..` and ranks `0..world`, or the first record
/// missing, named by its file.
pub(crate) fn grid(
    dir: &Path,
    records: Vec<Record>,
    world: usize,
    first: usize,
) -> Result<Vec<Vec<Record>>, AnalysisError> {
    let mut by_epoch: BTreeMap<usize, Vec<Option<Record>>> = BTreeMap::new();
    for r in records {
        let slots = by_epoch.entry(r.epoch).or_insert_with(|| vec![None; world]);
        let rank = r.rank;
        slots[rank] = Some(r);
    }
    let last = by_epoch.keys().next_back().copied().unwrap_or(first);
    let mut epochs = Vec::new();
    for epoch in first..=last {
        let mut slots = by_epoch.remove(&epoch).unwrap_or_else(|| vec![None; world]);
        let mut ranks = Vec::with_capacity(world);
        for (rank, slot) in slots.iter_mut().enumerate() {
            ranks.push(slot.take().ok_or_else(|| AnalysisError::MissingRecord {
                dir: dir.to_path_buf(),
                epoch,
                rank,
            })?);
        }
        epochs.push(ranks);
    }
    Ok(epochs)
}

/// What is known of a run that another trainer recorded: no `run.json`, only its records (and,
/// when the bench ran it, the command and what it was given, [`TRAINER_FILE`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Foreign {
    pub world_size: usize,
    pub global_batch_size: Option<usize>,
    /// Who trained, where the records say (`implementation`); otherwise [`Foreign::UNNAMED`].
    pub implementation: String,
    /// The training command, when the bench ran it.
    pub command: Option<String>,
    /// The first epoch's number (0 or 1, as the trainer counts).
    pub first_epoch: usize,
}

/// What the bench records of a configuration that a user's command trained.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct TrainerInfo {
    pub command: String,
    pub world_size: usize,
    pub global_batch_size: usize,
    pub epochs: usize,
}

/// How far apart (seconds) two records' modification times may be out of order before the
/// directory is taken to mix runs: copying a directory (`cp`, `git checkout`) rewrites the
/// times in whatever order it meets the files, within a moment.
const CLOCK_SLACK: f64 = 2.0;

fn mixed(dir: &Path, what: String) -> AnalysisError {
    AnalysisError::Mixed { dir: dir.to_path_buf(), what }
}

impl Foreign {
    /// The name of a trainer whose records do not say who they are.
    pub const UNNAMED: &'static str = "own trainer";

    /// The run in `dir`, a directory of epoch records without dp-bench's `run.json`, and its
    /// records, `[epoch][rank]`.
    pub fn load(dir: &Path) -> Result<(Self, Vec<Vec<Record>>), AnalysisError> {
        let found = read_all(dir)?;
        if found.is_empty() {
            return Err(AnalysisError::NotARun(dir.to_path_buf()));
        }
        let trainer = read_trainer(dir)?;
        let world = found.iter().map(|(r, _)| r.rank + 1).max().unwrap_or(0);
        let name = |rank: usize, epoch: usize| dir.join(EpochRecord::file_name(rank, epoch));
        // Each rank's epochs, read once.
        let mut by_rank = vec![BTreeSet::new(); world];
        for (r, _) in &found {
            by_rank[r.rank].insert(r.epoch);
        }
        let all: BTreeSet<usize> = found.iter().map(|(r, _)| r.epoch).collect();
        let first = *all.iter().next().expect("records found");
        if first > 1 {
            return Err(corrupt(
                &name(0, first),
                format!(
                    "the first epoch recorded is {first}: epochs are counted from 0 or 1, so the \
                     records of the epochs before it are missing"
                ),
            ));
        }
        // A rank that recorded fewer epochs than another: cut short, or another run's.
        for rank in 0..world {
            let own = &by_rank[rank];
            if own.is_empty() {
                return Err(corrupt(
                    &name(rank, first),
                    format!(
                        "rank {rank} recorded nothing while rank {} did: a record file is missing",
                        world - 1
                    ),
                ));
            }
            if own.len() < all.len() {
                let missing = all.difference(own).next().copied().expect("fewer epochs");
                let others: Vec<usize> = (0..world).filter(|&r| by_rank[r] == all).collect();
                return Err(mixed(
                    dir,
                    format!(
                        "rank {rank} recorded epochs {} but rank {} recorded {} ({} is missing): \
                         either the run was cut short, or two runs with different world sizes or \
                         epoch counts wrote into this directory",
                        span(own),
                        others.first().copied().unwrap_or(0),
                        span(&all),
                        name(rank, missing).display()
                    ),
                ));
            }
        }
        let sizes: BTreeSet<usize> = found.iter().filter_map(|(r, _)| r.world_size).collect();
        if let Some(&said) = sizes.iter().find(|&&s| s != world) {
            let (r, _) = found.iter().find(|(r, _)| r.world_size == Some(said)).expect("found");
            return Err(mixed(
                dir,
                format!(
                    "{} says world size {said}, but ranks 0–{} recorded here",
                    name(r.rank, r.epoch).display(),
                    world - 1
                ),
            ));
        }
        let batches: BTreeSet<usize> =
            found.iter().filter_map(|(r, _)| r.global_batch_size).collect();
        if batches.len() > 1 {
            return Err(mixed(
                dir,
                format!("the records give global batch sizes {batches:?}, where one run has one"),
            ));
        }
        check_order(dir, &found)?;
        if let Some(t) = &trainer {
            if t.world_size != world {
                return Err(mixed(
                    dir,
                    format!(
                        "{TRAINER_FILE} says the command ran {} ranks, but ranks 0–{} recorded",
                        t.world_size,
                        world - 1
                    ),
                ));
            }
        }
        let implementation = found
            .iter()
            .find_map(|(r, _)| r.implementation.clone())
            .unwrap_or_else(|| Self::UNNAMED.to_string());
        let records = found.into_iter().map(|(r, _)| r).collect();
        let foreign = Foreign {
            world_size: world,
            global_batch_size: trainer
                .as_ref()
                .map(|t| t.global_batch_size)
                .or_else(|| batches.into_iter().next()),
            implementation,
            command: trainer.map(|t| t.command),
            first_epoch: first,
        };
        Ok((foreign, grid(dir, records, world, first)?))
    }
}

/// `0–9`, or `3` for one epoch (the sets this is given are contiguous or nearly).
fn span(epochs: &BTreeSet<usize>) -> String {
    match (epochs.iter().next(), epochs.iter().next_back()) {
        (Some(a), Some(b)) if a != b => format!("{a}–{b}"),
        (Some(a), _) => a.to_string(),
        _ => "none".into(),
    }
}

/// In one synchronous data-parallel run no rank ends epoch e + 1 before every rank has ended
/// epoch e (each step sums all ranks' gradients), so every record of epoch e is written before
/// any of epoch e + 1. A directory where that fails holds records of different runs (the
/// course's layout writes every run into `./workdir`, and a later run's `rank0_*` files replace
/// an earlier run's).
fn check_order(dir: &Path, found: &[(Record, SystemTime)]) -> Result<(), AnalysisError> {
    let mut by_epoch: BTreeMap<usize, Vec<(usize, SystemTime)>> = BTreeMap::new();
    for (r, t) in found {
        by_epoch.entry(r.epoch).or_default().push((r.rank, *t));
    }
    let epochs: Vec<(&usize, &Vec<(usize, SystemTime)>)> = by_epoch.iter().collect();
    for pair in epochs.windows(2) {
        let ((&e, now), (_, next)) = (pair[0], pair[1]);
        let latest = now.iter().max_by_key(|(_, t)| *t).expect("a record");
        let earliest = next.iter().min_by_key(|(_, t)| *t).expect("a record");
        let ahead = latest.1.duration_since(earliest.1).map_or(0.0, |d| d.as_secs_f64());
        if ahead > CLOCK_SLACK {
            let file = |rank, epoch| EpochRecord::file_name(rank, epoch);
            return Err(mixed(
                dir,
                format!(
                    "{} was written {} after {}, but in one run every rank ends epoch {e} before \
                     any rank ends epoch {}: these are the records of different runs (the later \
                     run's rank0_* files replaced the earlier run's)",
                    file(latest.0, e),
                    super::format::seconds(ahead),
                    file(earliest.0, e + 1),
                    e + 1
                ),
            ));
        }
    }
    Ok(())
}

/// The bench's [`TRAINER_FILE`] in `dir`, when there is one.
fn read_trainer(dir: &Path) -> Result<Option<TrainerInfo>, AnalysisError> {
    let path: PathBuf = dir.join(TRAINER_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| corrupt(&path, e))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| corrupt(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(dir: &Path, rank: usize, epoch: usize, json: &str, at: u64) {
        let path = dir.join(EpochRecord::file_name(rank, epoch));
        std::fs::write(&path, json).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(at)).unwrap();
    }

    fn course(time: f64, tps: f64) -> String {
        format!(
            r#"{{"training_time": {time}, "tokens_per_sec": {tps}, "validation_loss": 3.2, "bleu": 1.5}}"#
        )
    }

    /// A course-format run: `ranks` ranks, epochs `first..first + n`, written one minute apart.
    fn run(dir: &Path, ranks: usize, first: usize, n: usize) {
        for e in first..first + n {
            for r in 0..ranks {
                write(dir, r, e, &course(10.0 + e as f64, 500.0), 1000 + 60 * e as u64);
            }
        }
    }

    fn error(dir: &Path) -> String {
        Foreign::load(dir).unwrap_err().to_string()
    }

    #[test]
    fn course_directories_read_from_zero_or_one_and_ignore_unknown_keys() {
        for first in [0, 1] {
            let dir = tempfile::tempdir().unwrap();
            run(dir.path(), 2, first, 4);
            write(
                dir.path(),
                0,
                first,
                r#"{"training_time": 9, "tokens_per_sec": 1, "gpu": "x"}"#,
                999,
            );
            let (f, epochs) = Foreign::load(dir.path()).unwrap();
            assert_eq!((f.world_size, f.first_epoch, epochs.len()), (2, first, 4));
            assert_eq!((f.global_batch_size, f.command.as_deref()), (None, None));
            assert_eq!(epochs[0][0].training_time, 9.0);
            assert_eq!(epochs[3][1].epoch, first + 3);
            assert_eq!(f.implementation, Foreign::UNNAMED);
        }
    }

    #[test]
    fn bad_numbers_are_named_with_their_file_and_key() {
        for (json, key) in [
            (r#"{"training_time": 0, "tokens_per_sec": 5}"#, "training_time is 0"),
            (r#"{"training_time": -3.5, "tokens_per_sec": 5}"#, "training_time is -3.5"),
            (r#"{"training_time": 1, "tokens_per_sec": 0}"#, "tokens_per_sec is 0"),
            (r#"{"training_time": 1, "tokens_per_sec": 5, "tokens": -1}"#, "tokens is -1"),
            (r#"{"training_time": 1}"#, "missing field `tokens_per_sec`"),
            (r#"{"training_time": "fast", "tokens_per_sec": 5}"#, "invalid type"),
            (r#"{"training_time": NaN, "tokens_per_sec": 5}"#, "holds NaN"),
            ("not json", "not an epoch record"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            run(dir.path(), 1, 0, 3);
            write(dir.path(), 0, 1, json, 1060);
            let e = error(dir.path());
            assert!(e.contains("rank0_results_epoch1.json") && e.contains(key), "{json}: {e}");
        }
    }

    #[test]
    fn missing_ranks_and_epochs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), 2, 0, 4);
        std::fs::remove_file(dir.path().join("rank1_results_epoch3.json")).unwrap();
        let e = error(dir.path());
        assert!(
            e.contains("rank 1 recorded epochs 0–2") && e.contains("rank1_results_epoch3.json"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), 2, 0, 4);
        for r in 0..2 {
            std::fs::remove_file(dir.path().join(EpochRecord::file_name(r, 2))).unwrap();
        }
        let e = error(dir.path());
        assert!(e.contains("epoch 2 lacks the record of rank 0"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), 1, 3, 3);
        assert!(error(dir.path()).contains("first epoch recorded is 3"));
    }

    #[test]
    fn a_later_run_that_replaced_rank_0s_files_is_not_read_as_one_run() {
        // The course's layout: the 2-rank run first, then the 1-rank run into the same workdir.
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), 2, 0, 4);
        for e in 0..4 {
            write(dir.path(), 0, e, &course(20.0, 300.0), 5000 + 60 * e as u64);
        }
        let e = error(dir.path());
        assert!(e.contains("records of different runs") && e.contains("its own workdir"), "{e}");
        // A world size that disagrees with the ranks present.
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), 2, 0, 3);
        write(
            dir.path(),
            1,
            2,
            r#"{"training_time": 1, "tokens_per_sec": 5, "world_size": 4}"#,
            1120,
        );
        assert!(error(dir.path()).contains("says world size 4"));
        // Times within the slack (a copied directory) are one run.
        let dir = tempfile::tempdir().unwrap();
        for e in 0..3 {
            for r in 0..2 {
                write(dir.path(), r, e, &course(1.0, 1.0), 1000 + (2 - e as u64));
            }
        }
        assert!(Foreign::load(dir.path()).is_ok());
    }
}
