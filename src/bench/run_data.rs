//! A run directory as the analysis reads it (`RunData`): dp-bench's (its `run.json`, epoch
//! records, or the copies of an `--independent` run read as one run), or another trainer's
//! records alone (`records::Foreign`), and the samples of its measured epochs. Reading names
//! the file when one is corrupt; `analysis` compares what this yields.

use super::analysis::AnalysisError;
use super::records::{self, Foreign, Record};
use super::summary::Samples;
use crate::config::Config;
use crate::metrics::{RunInfo, RUN_FILE};
use std::path::{Path, PathBuf};

/// Who recorded a run, and so what is known of it beyond its records.
#[derive(Debug, Clone)]
pub enum Source {
    /// dp-bench, or the PyTorch reference (which writes the same files): the run's `run.json`.
    Described(Box<RunInfo>),
    /// Another trainer: what its records (and, for `--trainer`, the bench) say.
    Foreign(Foreign),
}

/// A run directory as read from disk.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    pub source: Source,
    /// The name the reports give the run (`--label`); by default its configuration id, or a
    /// foreign run's directory name.
    pub label: Option<String>,
    /// `records[epoch][rank]`, complete for every epoch present.
    pub epochs: Vec<Vec<Record>>,
}

fn corrupt(path: &Path, reason: impl ToString) -> AnalysisError {
    AnalysisError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() }
}

impl RunData {
    /// The run in `dir`: dp-bench's when it holds a `run.json`; where it holds the copies of an
    /// `--independent` run instead, those copies as one run ([`RunData::merge_copies`]); else
    /// the epoch records another trainer left there ([`Foreign`]).
    pub fn load(dir: &Path) -> Result<Self, AnalysisError> {
        if dir.join(RUN_FILE).is_file() {
            return Self::load_one(dir);
        }
        let first = Config::copy_dir(dir, 0);
        if first.join(RUN_FILE).is_file() {
            let first = Self::load_one(&first)?;
            // An ordinary run that happens to sit in `copy0` does not make `dir` a run.
            let copies = first.config().map_or(1, |c| c.copies);
            if copies > 1 {
                let mut runs = vec![first];
                for copy in 1..copies {
                    runs.push(Self::load_one(&Config::copy_dir(dir, copy))?);
                }
                return Self::merge_copies(dir, runs);
            }
        }
        if !dir.is_dir() {
            return Err(corrupt(dir, "no such directory"));
        }
        let (foreign, epochs) = Foreign::load(dir)?;
        let label = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(RunData { dir: dir.to_path_buf(), source: Source::Foreign(foreign), label, epochs })
    }

    /// N independent copies of a one-rank run (`dp-bench --independent`) as one run of N
    /// ranks, each taking the one-rank run's batch: copy r's records become rank r's, so the
    /// analysis sums their throughput and averages their time as it does a run's ranks'. The
    /// copies must be of one configuration and have the same epochs.
    pub(crate) fn merge_copies(dir: &Path, copies: Vec<RunData>) -> Result<Self, AnalysisError> {
        let n = copies.len();
        let first = &copies[0];
        for other in &copies[1..] {
            if other.config() != first.config() {
                let json = |r: &RunData| serde_json::to_string(&r.config()).unwrap_or_default();
                return Err(AnalysisError::Inconsistent {
                    a: first.dir.clone(),
                    b: other.dir.clone(),
                    what: "configuration",
                    va: json(first),
                    vb: json(other),
                });
            }
        }
        // An interrupted copy lacks the epoch after its last, as a run's rank would.
        let fewest = (0..n).min_by_key(|&r| copies[r].epochs.len()).unwrap_or(0);
        let epochs = copies[fewest].epochs.len();
        if copies.iter().any(|c| c.epochs.len() != epochs) {
            return Err(AnalysisError::MissingRecord {
                dir: copies[fewest].dir.clone(),
                epoch: epochs,
                rank: 0,
            });
        }
        let mut info = first.info().cloned().expect("copies are dp-bench runs");
        info.config.world_size = n;
        info.config.batch_size *= n;
        // Where each copy ran: its host, and its node in the launch that started the copies.
        let infos: Vec<&RunInfo> = copies.iter().filter_map(RunData::info).collect();
        info.hosts = infos.iter().map(|i| i.host.clone()).collect();
        info.nodes = infos.iter().map(|i| i.nodes.as_ref()?.first().copied()).collect();
        let epochs = (0..epochs)
            .map(|e| {
                (0..n)
                    .map(|r| {
                        let mut record = copies[r].epochs[e][0].clone();
                        (record.rank, record.world_size) = (r, Some(n));
                        record
                    })
                    .collect()
            })
            .collect();
        Ok(RunData {
            dir: dir.to_path_buf(),
            source: Source::Described(Box::new(info)),
            label: None,
            epochs,
        })
    }

    fn load_one(dir: &Path) -> Result<Self, AnalysisError> {
        let run_file = dir.join(RUN_FILE);
        let bytes = std::fs::read(&run_file).map_err(|e| corrupt(&run_file, e))?;
        let info: RunInfo = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&run_file, format!("not a dp-bench run.json ({e})")))?;
        let world = info.config.world_size;
        let mut records = Vec::new();
        for (rec, _) in records::read_all(dir)? {
            let batch = info.config.batch_size;
            if let Some(b) = rec.global_batch_size.filter(|&b| b != batch) {
                let path = dir.join(crate::metrics::EpochRecord::file_name(rec.rank, rec.epoch));
                return Err(corrupt(
                    &path,
                    format!("global_batch_size {b}, but run.json says batch_size {batch}"),
                ));
            }
            if rec.world_size.is_some_and(|w| w != world) || rec.rank >= world {
                let path = dir.join(crate::metrics::EpochRecord::file_name(rec.rank, rec.epoch));
                return Err(corrupt(
                    &path,
                    format!(
                        "rank {} of world size {}, but run.json says world size {world}",
                        rec.rank,
                        rec.world_size.map_or("unrecorded".into(), |w| w.to_string())
                    ),
                ));
            }
            records.push(rec);
        }
        let epochs = records::grid(dir, records, world, 0)?;
        Ok(RunData {
            dir: dir.to_path_buf(),
            source: Source::Described(Box::new(info)),
            label: None,
            epochs,
        })
    }

    /// The run's `run.json`; `None` for a foreign run, which says only what its records say.
    pub fn info(&self) -> Option<&RunInfo> {
        match &self.source {
            Source::Described(info) => Some(info),
            Source::Foreign(_) => None,
        }
    }

    /// dp-bench's configuration of the run; `None` for a foreign run.
    pub fn config(&self) -> Option<&Config> {
        self.info().map(|i| &i.config)
    }

    pub fn world_size(&self) -> usize {
        match &self.source {
            Source::Described(i) => i.config.world_size,
            Source::Foreign(f) => f.world_size,
        }
    }

    /// The global batch, where the run records it.
    pub fn global_batch_size(&self) -> Option<usize> {
        match &self.source {
            Source::Described(i) => Some(i.config.batch_size),
            Source::Foreign(f) => f.global_batch_size,
        }
    }

    /// Who trained: `dp-bench`, a reference (`pytorch-ddp`), or what a foreign run's records say.
    pub fn implementation(&self) -> &str {
        match &self.source {
            Source::Described(i) => &i.implementation,
            Source::Foreign(f) => &f.implementation,
        }
    }

    /// The training command, for a configuration the bench ran with `--trainer`.
    pub fn command(&self) -> Option<&str> {
        match &self.source {
            Source::Described(_) => None,
            Source::Foreign(f) => f.command.as_deref(),
        }
    }

    /// The number of the run's first epoch (a foreign trainer may count from 1).
    fn first_epoch(&self) -> usize {
        match &self.source {
            Source::Described(_) => 0,
            Source::Foreign(f) => f.first_epoch,
        }
    }

    /// The most GPU memory any rank reserved in any epoch, where the records say (MiB).
    pub fn peak_device_mb(&self) -> Option<f64> {
        self.epochs.iter().flatten().filter_map(|r| r.peak_device_mb).reduce(f64::max)
    }

    /// Samples of the measured epochs: all but the first `warmup` of each process (a run resumed
    /// in rounds warms up again in each). A quantity enters the samples only where every
    /// measured record gives it; otherwise its samples are empty ("not recorded by this run").
    pub fn samples(&self, warmup: usize) -> Result<Samples, AnalysisError> {
        let first = self.first_epoch();
        let (warm, measured): (Vec<&Vec<Record>>, Vec<&Vec<Record>>) =
            self.epochs.iter().partition(|e| e[0].is_warmup(warmup, first));
        if measured.len() < 2 {
            return Err(AnalysisError::TooFewEpochs {
                dir: self.dir.clone(),
                measured: measured.len(),
                warmup,
            });
        }
        let per = |f: &dyn Fn(&[Record]) -> f64| measured.iter().map(|e| f(e)).collect();
        let n = self.world_size() as f64;
        // The sum (or, `mean`, the mean) over ranks of an optional key, where every record has it.
        let recorded = |key: fn(&Record) -> Option<f64>, mean: bool| -> Vec<f64> {
            measured
                .iter()
                .map(|e| {
                    e.iter().map(key).sum::<Option<f64>>().map(|s| if mean { s / n } else { s })
                })
                .collect::<Option<_>>()
                .unwrap_or_default()
        };
        Ok(Samples {
            epochs: measured.iter().map(|e| e[0].epoch).collect(),
            started_at: measured
                .iter()
                .map(|e| e[0].started_at)
                .collect::<Option<_>>()
                .unwrap_or_default(),
            paused_time: recorded(|r| r.paused_time, true),
            warmup_epochs: warm.iter().map(|e| e[0].epoch).collect(),
            training_time: per(&|e| e.iter().map(|r| r.training_time).sum::<f64>() / n),
            training_time_max: per(&|e| e.iter().map(|r| r.training_time).fold(0.0, f64::max)),
            tokens_per_sec: per(&|e| e.iter().map(|r| r.tokens_per_sec).sum()),
            tokens: recorded(|r| r.tokens, false),
            flops: recorded(|r| r.flops, false),
            compute_time: recorded(|r| r.compute_time, true),
            allreduce_time: recorded(|r| r.allreduce_time, true),
            data_time: recorded(|r| r.data_time, true),
            wait_time: recorded(|r| r.wait_time, true),
            validation_loss: recorded(|r| r.validation_loss, true),
            bleu: recorded(|r| r.bleu, true),
            per_rank_time: (0..self.world_size())
                .map(|r| measured.iter().map(|e| e[r].training_time).collect())
                .collect(),
            first_epoch: first,
            all_epochs_time: self
                .epochs
                .iter()
                .map(|e| e.iter().map(|r| r.training_time).sum::<f64>() / n)
                .collect(),
        })
    }
}
