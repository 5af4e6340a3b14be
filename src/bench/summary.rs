//! The analysis result and its on-disk form, `summary.json` (versioned by `schema`). One owner
//! writes it (`report`); baselines are saved copies of it, read back for comparisons.

use super::stats::{Change, Estimate, Summary as Stats};
use crate::metrics::RunInfo;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub(crate) const SCHEMA: u32 = 1;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn dp_bench() -> String {
    crate::metrics::IMPLEMENTATION.to_string()
}

/// The measured epochs of one configuration, one value per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    pub epochs: Vec<usize>,
    /// Mean over ranks of `training_time` (the seed's rule).
    pub training_time: Vec<f64>,
    /// Max over ranks: the wall time of the epoch.
    pub training_time_max: Vec<f64>,
    /// Sum over ranks of `tokens_per_sec`.
    pub tokens_per_sec: Vec<f64>,
    /// Input positions of the epoch, summed over ranks (padding included). This and the time
    /// split below are empty where the records do not give them.
    #[serde(default)]
    pub tokens: Vec<f64>,
    /// Floating-point operations of the epoch's matrix products, summed over ranks; empty when
    /// the records do not count them (older runs, the PyTorch reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flops: Vec<f64>,
    #[serde(default)]
    pub compute_time: Vec<f64>,
    #[serde(default)]
    pub allreduce_time: Vec<f64>,
    /// Batch collation time (mean over ranks).
    #[serde(default)]
    pub data_time: Vec<f64>,
    /// Time waiting for the slowest rank before the all-reduce (mean over ranks).
    #[serde(default)]
    pub wait_time: Vec<f64>,
    /// `per_rank_time[rank][i]`: each rank's time of measured epoch i.
    pub per_rank_time: Vec<Vec<f64>>,
    /// Mean time of every epoch, warm-up included (for the timeline).
    pub all_epochs_time: Vec<f64>,
    /// The number of the run's first epoch, that of `all_epochs_time[0]` (1 for trainers that
    /// count from 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_epoch: usize,
    /// When each measured epoch started (rank 0, seconds since the Unix epoch); empty when the
    /// records do not say (older runs, the PyTorch reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started_at: Vec<f64>,
    /// Seconds each measured epoch stood stopped while other runs took their turns within it
    /// (mean over ranks; `dp-bench --turn-examples`), not part of `training_time`; empty when
    /// the run took no turns within epochs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused_time: Vec<f64>,
    /// The epochs left out as warm-up: the first of each process (several when a run was
    /// resumed in rounds).
    #[serde(default)]
    pub warmup_epochs: Vec<usize>,
    /// Validation loss and BLEU after each measured epoch (mean over ranks), where recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_loss: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bleu: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeSummary {
    #[serde(flatten)]
    pub stats: Stats,
    /// Mean over epochs of the slowest rank's time.
    pub max_rank_mean: f64,
}

/// One configuration's statistics. What its run does not record (a foreign trainer's records
/// give only time and throughput, unless they carry more) is `None` or, for per-epoch samples,
/// empty: the reports say "not recorded by this run", never a value of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub id: String,
    /// Who trained: `dp-bench`, a reference (`pytorch-ddp`), or a foreign trainer.
    #[serde(default = "dp_bench")]
    pub implementation: String,
    /// The training command, for a configuration the bench ran with `--trainer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub world_size: usize,
    pub global_batch_size: Option<usize>,
    pub local_batch_size: Option<usize>,
    pub threads: Option<usize>,
    pub preset: Option<String>,
    pub dataset: Option<String>,
    pub epochs_measured: usize,
    pub training_time: TimeSummary,
    pub tokens_per_sec: Stats,
    /// Mean all-reduce time as a share of the mean epoch time.
    pub allreduce_share: Option<f64>,
    pub run_dir: String,
    pub samples: Samples,
    /// dp-bench's `run.json` of the run; `None` for a foreign run.
    pub run: Option<RunInfo>,
    /// Model FLOPs utilisation: a rank's model FLOPs per second (`flops_per_rank_per_sec`) as a
    /// share of the device's measured peak (`Summary::peak`); absent where either is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// The most GPU memory any rank's allocator reserved in any epoch, in MiB (GPU runs that
    /// record it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_mb: Option<f64>,
}

impl ConfigSummary {
    /// Whether this is independent copies of a one-rank run (`dp-bench --independent`), read
    /// as one run of as many ranks.
    pub(crate) fn is_independent(&self) -> bool {
        self.copies() > 1
    }

    /// Independent one-rank copies this configuration is (1: an ordinary run).
    pub(crate) fn copies(&self) -> usize {
        self.run.as_ref().map_or(1, |r| r.config.copies)
    }

    /// How the ranks sat on their nodes ([`crate::hosts::describe`]), where they sat on more
    /// than one: "2 nodes × 4 ranks". `None` on one node, or where the run did not record it.
    pub(crate) fn spread(&self) -> Option<String> {
        let run = self.run.as_ref()?;
        let counts = crate::hosts::ranks_per_node(&run.hosts, run.nodes.as_deref());
        (counts.len() > 1).then(|| crate::hosts::describe(&counts))
    }

    /// The rate of one rank's matrix products over the measured epochs (operations ÷ the
    /// ranks' time), when the records count them.
    pub(crate) fn flops_per_rank_per_sec(&self) -> Option<f64> {
        let s = &self.samples;
        (!s.flops.is_empty()).then(|| {
            let time: f64 = s.training_time.iter().sum::<f64>() * self.world_size as f64;
            s.flops.iter().sum::<f64>() / time
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedupSummary {
    pub id: String,
    /// The one-device configuration of the same implementation this is relative to.
    #[serde(default)]
    pub reference: String,
    pub world_size: usize,
    /// Reference epoch time ÷ this epoch time.
    pub training_time: Estimate,
    /// This throughput ÷ reference throughput.
    pub tokens_per_sec: Estimate,
    /// Throughput speedup ÷ (world size ÷ reference world size).
    pub efficiency: f64,
    pub efficiency_interval: Estimate,
    /// Epoch pairs the three estimates come from when the two runs took turns epoch by epoch
    /// (`stats::paired_ratio`); 0 when they come from the two runs' means (Fieller).
    #[serde(default)]
    pub paired_epochs: usize,
    /// Where the run falls short of linear scaling; dp-bench's own runs only (their records
    /// split each epoch's time; the reference's would put its overlapped communication under
    /// compute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<Shortfall>,
    /// Against as many independent one-rank runs side by side, when those ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of_independent: Option<OfIndependent>,
    /// How this run's ranks got other resources than the reference's (threads per rank, the
    /// cores each could run on), one sentence each: then the speedup does not compare one device with N
    /// alone. Empty for a like-for-like comparison.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlike: Vec<String>,
}

impl SpeedupSummary {
    /// What the reports say after the differences of a comparison that is not like for like.
    pub(crate) const UNLIKE_FIX: &'static str = "The speedup mixes the change in devices with a \
        change in what each rank gets: rerun both with the same --threads (default 1), --device \
        and binding (the bench binds each rank to a core)";
}

/// A multi-rank run's summed throughput against that of as many independent one-rank runs side
/// by side (`dp-bench --independent`; configuration `id`): its share of what the cores allow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfIndependent {
    pub id: String,
    pub tokens_per_sec: Estimate,
}

impl OfIndependent {
    /// What the reports say about the independent runs.
    pub(crate) const NOTE: &'static str =
        "A configuration ending in `_independent` is as many 1-rank \
        runs side by side as its ranks, each training the 1-rank run's batches on its own core, \
        none talking to another. They share the machine's caches, memory bandwidth and power as \
        the ranks do, so their efficiency is the most a run of that many ranks can reach on \
        these cores, and a run's throughput ÷ theirs is its share of that ceiling.";
}

/// Where a run of N ranks falls short of linear scaling against its one-rank reference: the
/// rank-seconds it spends beyond the reference's time for the same work (scaled by the positions
/// each trained), split by what the epoch records time, each as a share of the run's
/// rank-seconds. The parts add up to `total`, which is one minus the efficiency in time (the
/// table's efficiency is in summed tokens/s, the same up to the ranks' unequal epoch times).
/// Per epoch pair and then the mean with its Student-t interval when the runs took turns
/// (`pairs` > 0); from the means of the two runs, without an interval, otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shortfall {
    pub pairs: usize,
    pub total: Estimate,
    /// Forward, backward and optimiser: what the ranks computing side by side take beyond what
    /// one rank alone takes (the machine's shared caches and memory; less any work the ranks
    /// split, such as a sharded optimiser update).
    pub compute: Estimate,
    /// Blocked at the step's barrier for the slowest rank (imbalance, jitter).
    pub wait: Estimate,
    /// Summing the gradients.
    pub allreduce: Estimate,
    /// Preparing batches.
    pub data: Estimate,
    /// The rest of the epoch's time.
    pub other: Estimate,
}

impl Shortfall {
    /// What the reports say about the split, after the sentence that introduces it.
    pub(crate) const NOTE: &'static str =
        "Compute is the forward, backward and optimiser taking longer \
        side by side than alone (the machine's shared caches and memory), less the optimiser work \
        the ranks split; waiting is the time at each step's barrier for the slowest rank.";

    /// The parts, named as the reports name them, in the order they add up.
    pub fn parts(&self) -> [(&'static str, Estimate); 5] {
        [
            ("compute", self.compute),
            ("waiting", self.wait),
            ("all-reduce", self.allreduce),
            ("data", self.data),
            ("other", self.other),
        ]
    }
}

/// A configuration's change against a saved baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineChange {
    pub id: String,
    pub training_time: Change,
    pub tokens_per_sec: Change,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema: u32,
    pub confidence_level: f64,
    pub warmup_epochs: usize,
    pub interval_method: String,
    /// Id of the one-device configuration that speedups are relative to.
    pub reference: Option<String>,
    pub configs: Vec<ConfigSummary>,
    pub speedup: Vec<SpeedupSummary>,
    /// dp-bench against each reference implementation's run of the same world size and batch.
    #[serde(default)]
    pub versus: Vec<VersusSummary>,
    /// How the bench's sampling ended (its time budget and precision target); absent from
    /// `dp-bench compare`'s summaries and the bench's fixed-size runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<super::sampling::Sampling>,
    /// The matrix-product peak of one rank's device, measured at the start of the bench.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<super::device::Peak>,
}

/// dp-bench's throughput ÷ a reference implementation's, on the same workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersusSummary {
    pub ours: String,
    pub theirs: String,
    pub tokens_per_sec: Estimate,
}

impl Summary {
    /// Gives each configuration its model FLOPs utilisation against `peak`.
    pub fn set_peak(&mut self, peak: super::device::Peak) {
        for c in &mut self.configs {
            c.mfu = c.flops_per_rank_per_sec().map(|r| super::device::mfu(r, &peak));
        }
        self.peak = Some(peak);
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let s: Summary = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a dp-bench summary ({e})", path.display()))?;
        anyhow::ensure!(
            s.schema == SCHEMA,
            "{}: summary schema {} (this dp-bench reads {SCHEMA})",
            path.display(),
            s.schema
        );
        Ok(s)
    }
}
