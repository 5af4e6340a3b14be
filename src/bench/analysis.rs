//! The analysis pipeline: run directories in (`run_data`), a `Summary` out. Checks that the runs
//! can be compared, names them, computes the statistics of their samples (time = mean over
//! ranks, also the max; throughput = sum over ranks), the speedups and where runs fall short of
//! linear. Reports only consume the `Summary`.

use super::run_data::RunData;
use super::stats::{self, Estimate, Summary as Stats};
use super::summary::{
    ConfigSummary, OfIndependent, Samples, Shortfall, SpeedupSummary, Summary, TimeSummary,
    VersusSummary, SCHEMA,
};
use crate::config::{Config, Partition};
use crate::metrics::{RunInfo, RUN_FILE};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("{0} is not a run directory: it holds neither dp-bench's {RUN_FILE} nor epoch records (rank{{r}}_results_epoch{{e}}.json); run `mpirun -n N dp-bench --workdir {0}`, or point at the directory your trainer wrote (docs/records.md)")]
    NotARun(PathBuf),
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{dir}: epoch {epoch} lacks the record of rank {rank} (an interrupted run?)")]
    MissingRecord { dir: PathBuf, epoch: usize, rank: usize },
    #[error("{dir} mixes the records of more than one run: {what}. Each run needs its own workdir: rerun each configuration into a directory of its own (and move its records out before the next run when the trainer always writes ./workdir)")]
    Mixed { dir: PathBuf, what: String },
    #[error("{dir}: {measured} measured epochs after {warmup} warm-up; at least 2 are needed for an interval: train more epochs, or lower --warmup")]
    TooFewEpochs { dir: PathBuf, measured: usize, warmup: usize },
    #[error("cannot compare {a} and {b}: they differ in {what} ({va} vs {vb}); compare runs of the same workload")]
    Inconsistent { a: PathBuf, b: PathBuf, what: &'static str, va: String, vb: String },
    #[error("{a} and {b} are both named {id} (the same configuration, or directories of one name): pass each configuration once, or name them apart with --label DIR=NAME")]
    Duplicate { a: PathBuf, b: PathBuf, id: String },
    #[error("nothing to compare: pass at least one run directory")]
    Empty,
}

/// Fields that must agree for epoch times of two runs to be comparable.
fn workload_fields(c: &Config) -> [(&'static str, String); 7] {
    [
        ("preset", c.preset.to_string()),
        ("precision", c.precision.to_string()),
        ("dataset", c.dataset.to_string()),
        ("train_examples", c.train_examples.to_string()),
        ("model_max_length", c.model_max_length.to_string()),
        ("device", format!("{:?}", c.device)),
        ("max_batches", format!("{:?}", c.max_batches)),
    ]
}

/// What a reader of a comparison should know that the numbers do not say: runs that differ in
/// seed or vocabulary (both change the work a little, neither makes it another workload), and
/// a comparison of one-rank runs only, whose "speedup" is a ratio and not scaling.
pub fn notes(runs: &[RunData], summary: &Summary) -> Vec<String> {
    let mut notes = Vec::new();
    let described: Vec<(&RunData, &RunInfo)> =
        runs.iter().filter_map(|r| Some((r, r.info()?))).collect();
    // `what` differs between the runs, and so does `also` of what each trains.
    let differing = |what: &str, also: &str, value: &dyn Fn(&RunInfo) -> String| {
        let mut values: Vec<String> = described.iter().map(|(_, i)| value(i)).collect();
        values.dedup();
        (values.len() > 1).then(|| {
            let each: Vec<String> = (described.iter())
                .map(|(r, i)| format!("{} {}", r.dir.display(), value(i)))
                .collect();
            format!(
                "the runs differ in {what} ({}): each also trains a different {also}",
                each.join(", ")
            )
        })
    };
    notes.extend(differing("seed", "initialisation and dropout", &|i| i.config.seed.to_string()));
    notes.extend(differing("vocabulary", "tokenisation", &|i| format!("{} tokens", i.vocab_size)));
    let one_rank = summary.configs.iter().all(|c| c.world_size == 1);
    if summary.configs.len() > 1 && one_rank {
        if let Some(reference) = &summary.reference {
            notes.push(format!(
                "every run has 1 rank: {reference} is the reference, and another run's speedup \
                 over it is a ratio of two one-rank runs; its \"efficiency\" is not scaling"
            ));
        }
    }
    notes
}

/// Refuses runs that do not measure the same workload, and two runs under one name. A foreign
/// run records no workload, so only dp-bench's runs are checked against each other.
pub(crate) fn check_comparable(runs: &[RunData]) -> Result<(), AnalysisError> {
    runs.first().ok_or(AnalysisError::Empty)?;
    let described: Vec<(&RunData, &Config)> =
        runs.iter().filter_map(|r| Some((r, r.config()?))).collect();
    if let Some(&(first, fc)) = described.first() {
        for &(other, oc) in &described[1..] {
            for ((what, va), (_, vb)) in workload_fields(fc).into_iter().zip(workload_fields(oc)) {
                if va != vb {
                    return Err(AnalysisError::Inconsistent {
                        a: first.dir.clone(),
                        b: other.dir.clone(),
                        what,
                        va,
                        vb,
                    });
                }
            }
        }
    }
    let ids = config_ids(runs);
    for i in 0..runs.len() {
        for j in i + 1..runs.len() {
            if ids[i] == ids[j] {
                return Err(AnalysisError::Duplicate {
                    a: runs[i].dir.clone(),
                    b: runs[j].dir.clone(),
                    id: ids[i].clone(),
                });
            }
        }
    }
    Ok(())
}

/// What ends the id of independent copies of a one-rank run (`dp-bench --independent`).
pub(crate) const INDEPENDENT: &str = "_independent";

/// `ws{N}_bs{B}`, or `ws{N}_bs{B}_{partition}` for a multi-rank run split otherwise than the
/// first configuration of its kind (which keeps the plain id): the bench names the
/// configurations of `--partition adaptive,balanced` so, and `config_ids` reads them back so.
pub(crate) fn config_id(
    world_size: usize,
    batch_size: usize,
    other_split: Option<Partition>,
) -> String {
    match other_split {
        None => format!("ws{world_size}_bs{batch_size}"),
        Some(partition) => format!("ws{world_size}_bs{batch_size}_{partition}"),
    }
}

/// Each run's name in the reports: its label where it has one (`--label`; a foreign run's
/// directory name), otherwise [`config_id`] (`ws2_bs32_adaptive` for a multi-rank dp-bench run
/// split otherwise than the first such run, `ws2_bs32_independent` for independent copies of a
/// one-rank run), with `_t{T}` when the runs differ in threads per rank, prefixed by the
/// implementation when it is a reference (`pytorch-ddp_ws2_bs32`).
pub(crate) fn config_ids(runs: &[RunData]) -> Vec<String> {
    let threads: Vec<usize> = runs.iter().filter_map(|r| Some(r.config()?.threads)).collect();
    let threads_vary = threads.windows(2).any(|w| w[0] != w[1]);
    let split = |r: &RunData| {
        let c = r.config()?;
        let ours = r.implementation() == crate::metrics::IMPLEMENTATION;
        (ours && c.world_size > 1 && c.copies == 1).then_some(c.partition)
    };
    let plain = runs.iter().find_map(split);
    runs.iter()
        .map(|r| {
            if let Some(label) = &r.label {
                return label.clone();
            }
            let Some(c) = r.config() else {
                return format!("{}_ws{}", r.implementation(), r.world_size());
            };
            let other_split = split(r).filter(|&p| Some(p) != plain);
            let mut id = config_id(c.world_size, c.batch_size, other_split);
            if c.copies > 1 {
                id += INDEPENDENT;
            }
            if c.precision != crate::config::Precision::Fp32 {
                id += &format!("_{}", c.precision);
            }
            if r.implementation() != crate::metrics::IMPLEMENTATION {
                id = format!("{}_{id}", r.implementation());
            }
            if threads_vary {
                id += &format!("_t{}", c.threads);
            }
            id
        })
        .collect()
}

/// Statistics of every run, and each run's speedup over the one-device run (Fieller intervals).
pub fn analyse(runs: &[RunData], warmup: usize, level: f64) -> Result<Summary, AnalysisError> {
    check_comparable(runs)?;
    let ids = config_ids(runs);
    let mut configs = Vec::with_capacity(runs.len());
    for (run, id) in runs.iter().zip(&ids) {
        let samples = run.samples(warmup)?;
        let c = run.config();
        let time = Stats::of(&samples.training_time, level);
        let world_size = run.world_size();
        let global_batch_size = run.global_batch_size();
        configs.push(ConfigSummary {
            id: id.clone(),
            implementation: run.implementation().to_string(),
            command: run.command().map(String::from),
            world_size,
            global_batch_size,
            local_batch_size: match c {
                Some(c) => Some(c.local_batch_size()),
                None => global_batch_size.map(|b| b / world_size),
            },
            threads: c.map(|c| c.threads),
            preset: c.map(|c| c.preset.to_string()),
            dataset: c.map(|c| c.dataset.to_string()),
            epochs_measured: samples.training_time.len(),
            training_time: TimeSummary {
                stats: time,
                max_rank_mean: stats::mean(&samples.training_time_max),
            },
            tokens_per_sec: Stats::of(&samples.tokens_per_sec, level),
            allreduce_share: (!samples.allreduce_time.is_empty())
                .then(|| stats::mean(&samples.allreduce_time) / time.mean),
            run_dir: run.dir.display().to_string(),
            run: run.info().cloned(),
            samples,
            mfu: None,
            peak_device_mb: run.peak_device_mb(),
        });
    }
    // Speedups are within an implementation: each run against the one-device run of its own
    // implementation. Across implementations, the same world size and batch are compared.
    // (PyTorch's eager one-process run is the reference of its DDP and per-parameter runs.)
    let family = |imp: &str| if imp.starts_with("pytorch-") { "pytorch" } else { imp }.to_string();
    let one_device = |imp: &str| {
        configs.iter().position(|c| c.world_size == 1 && family(&c.implementation) == family(imp))
    };
    // dp-bench's one-device run where there is one, else the first one-device run.
    let reference = one_device(crate::metrics::IMPLEMENTATION)
        .or_else(|| configs.iter().position(|c| c.world_size == 1));
    let speedup = configs
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let r = one_device(&c.implementation).filter(|&r| r != i)?;
            let mut s = speedup_of(&configs[r], c, level);
            s.of_independent = independent_of(&configs, c).map(|ind| share_of(c, ind, level));
            Some(s)
        })
        .collect();
    let versus = configs
        .iter()
        .filter(|c| c.implementation != crate::metrics::IMPLEMENTATION)
        .filter_map(|theirs| {
            let ours = configs.iter().find(|o| {
                o.implementation == crate::metrics::IMPLEMENTATION
                    && !o.is_independent()
                    && (o.world_size, o.global_batch_size, o.threads)
                        == (theirs.world_size, theirs.global_batch_size, theirs.threads)
            })?;
            Some(VersusSummary {
                ours: ours.id.clone(),
                theirs: theirs.id.clone(),
                tokens_per_sec: stats::ratio_estimate(
                    &ours.samples.tokens_per_sec,
                    &theirs.samples.tokens_per_sec,
                    level,
                ),
            })
        })
        .collect();
    Ok(Summary {
        schema: SCHEMA,
        confidence_level: level,
        warmup_epochs: warmup,
        interval_method: "student-t for means; Fieller (Welch df) for ratios of means; speedups \
                          of runs that took turns epoch by epoch: student-t on the per-pair log \
                          ratios"
            .into(),
        reference: reference.map(|r| configs[r].id.clone()),
        configs,
        speedup,
        versus,
        sampling: None,
        peak: None,
    })
}

/// The independent copies of a one-rank run (`dp-bench --independent`) that are as many as
/// `c`'s ranks, with as many threads, when `c` is a multi-rank run of dp-bench's and they ran.
fn independent_of<'a>(
    configs: &'a [ConfigSummary],
    c: &ConfigSummary,
) -> Option<&'a ConfigSummary> {
    let ours = |x: &ConfigSummary| x.implementation == crate::metrics::IMPLEMENTATION;
    if !ours(c) || c.world_size < 2 || c.is_independent() {
        return None;
    }
    configs.iter().find(|x| ours(x) && x.copies() == c.world_size && x.threads == c.threads)
}

/// `c`'s summed throughput ÷ that of `independent`, its share of what the cores allow: paired
/// epoch by epoch when the two took turns, from their means (Fieller) otherwise.
fn share_of(c: &ConfigSummary, independent: &ConfigSummary, level: f64) -> OfIndependent {
    let (a, b) = (&c.samples.tokens_per_sec, &independent.samples.tokens_per_sec);
    let tokens_per_sec = took_turns(&c.samples, &independent.samples)
        .then(|| stats::paired_ratio(a, b, level))
        .flatten()
        .unwrap_or_else(|| stats::ratio_estimate(a, b, level));
    OfIndependent { id: independent.id.clone(), tokens_per_sec }
}

/// Whether the measured epochs of `a` and `b` took turns: as many of each, and epoch `j` of both
/// ran (in either order) after epoch `j - 1` of both. Such epochs pair up for the speedups.
pub fn took_turns(a: &Samples, b: &Samples) -> bool {
    let (sa, sb) = (&a.started_at, &b.started_at);
    sa.len() >= 2
        && sa.len() == sb.len()
        && sa.len() == a.training_time.len()
        && sb.len() == b.training_time.len()
        && (1..sa.len()).all(|j| sa[j - 1].max(sb[j - 1]) < sa[j].min(sb[j]))
}

fn speedup_of(reference: &ConfigSummary, c: &ConfigSummary, level: f64) -> SpeedupSummary {
    let (rs, cs) = (&reference.samples, &c.samples);
    // Paired when the runs took turns (and every value is positive); the means otherwise.
    let pairs = took_turns(rs, cs)
        .then(|| {
            let time = stats::paired_ratio(&rs.training_time, &cs.training_time, level)?;
            let tps = stats::paired_ratio(&cs.tokens_per_sec, &rs.tokens_per_sec, level)?;
            Some((time, tps))
        })
        .flatten();
    let paired = pairs.is_some();
    let (time, tps) = pairs.unwrap_or_else(|| {
        (
            stats::ratio_estimate(&rs.training_time, &cs.training_time, level),
            stats::ratio_estimate(&cs.tokens_per_sec, &rs.tokens_per_sec, level),
        )
    });
    let n = c.world_size as f64 / reference.world_size as f64;
    SpeedupSummary {
        id: c.id.clone(),
        reference: reference.id.clone(),
        world_size: c.world_size,
        training_time: time,
        tokens_per_sec: tps,
        efficiency: tps.point / n,
        efficiency_interval: Estimate {
            point: tps.point / n,
            lower: tps.lower / n,
            upper: tps.upper / n,
        },
        paired_epochs: if paired { cs.training_time.len() } else { 0 },
        shortfall: shortfall_of(reference, c, paired, level),
        of_independent: None,
        unlike: unlike(reference, c),
    }
}

/// Where the ranks of `c` got other resources than those of `reference`, one sentence each:
/// threads per rank, and the cores a rank could run on (its binding) where both runs recorded
/// it. (Runs on different kinds of device are refused outright by `check_comparable`.)
pub(crate) fn unlike(reference: &ConfigSummary, c: &ConfigSummary) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(a), Some(b)) = (&reference.run, &c.run) else {
        return out;
    };
    let mut differ = |what: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{what}: {x} in `{}`, {y} in `{}`", reference.id, c.id));
        }
    };
    differ("threads per rank", a.threads_per_rank.to_string(), b.threads_per_rank.to_string());
    if let (Some(x), Some(y)) = (a.cores_per_rank, b.cores_per_rank) {
        differ("cores each rank could run on", x.to_string(), y.to_string());
    }
    out
}

/// Epoch `i` of `x`, mean over ranks: its time, then the parts the records split it into —
/// compute, waiting, all-reduce, data, and the rest.
fn epoch_parts(x: &Samples, i: usize) -> [f64; 6] {
    let t = x.training_time[i];
    let [c, w, a, d] =
        [&x.compute_time, &x.wait_time, &x.allreduce_time, &x.data_time].map(|v| v[i]);
    [t, c, w, a, d, t - c - w - a - d]
}

/// [`Shortfall`] of `c` against `reference` (both dp-bench's), epoch pair by epoch pair when
/// `paired`, from the means otherwise. `None` when a record lacks the split or the positions.
fn shortfall_of(
    reference: &ConfigSummary,
    c: &ConfigSummary,
    paired: bool,
    level: f64,
) -> Option<Shortfall> {
    let ours = |x: &ConfigSummary| x.implementation == crate::metrics::IMPLEMENTATION;
    let complete = |x: &Samples| {
        let n = x.training_time.len();
        [&x.tokens, &x.compute_time, &x.wait_time, &x.allreduce_time, &x.data_time]
            .iter()
            .all(|v| v.len() == n && v.iter().all(|&v| v.is_finite()))
            && x.tokens.iter().chain(&x.training_time).all(|&v| v > 0.0)
    };
    let (rs, cs) = (&reference.samples, &c.samples);
    if !(ours(reference) && ours(c) && complete(rs) && complete(cs)) {
        return None;
    }
    let (nr, nc) = (reference.world_size as f64, c.world_size as f64);
    // One pair: the reference's rank-seconds scaled to the run's positions, against the run's.
    let shares = |(r, tr): ([f64; 6], f64), (x, tx): ([f64; 6], f64)| {
        let scale = tx / tr;
        std::array::from_fn::<f64, 6, _>(|k| (nc * x[k] - scale * nr * r[k]) / (nc * x[0]))
    };
    let pairs: Vec<[f64; 6]> = if paired {
        (0..cs.training_time.len())
            .map(|j| shares((epoch_parts(rs, j), rs.tokens[j]), (epoch_parts(cs, j), cs.tokens[j])))
            .collect()
    } else {
        let means = |x: &Samples| {
            let per_epoch: Vec<[f64; 6]> =
                (0..x.training_time.len()).map(|i| epoch_parts(x, i)).collect();
            (
                std::array::from_fn(|k| {
                    stats::mean(&per_epoch.iter().map(|p| p[k]).collect::<Vec<_>>())
                }),
                stats::mean(&x.tokens),
            )
        };
        vec![shares(means(rs), means(cs))]
    };
    let part = |k: usize| {
        let values: Vec<f64> = pairs.iter().map(|p| p[k]).collect();
        let s = Stats::of(&values, level);
        match paired {
            true => Estimate { point: s.mean, lower: s.lower, upper: s.upper },
            false => Estimate { point: s.mean, lower: f64::NAN, upper: f64::NAN },
        }
    };
    Some(Shortfall {
        pairs: if paired { pairs.len() } else { 0 },
        total: part(0),
        compute: part(1),
        wait: part(2),
        allreduce: part(3),
        data: part(4),
        other: part(5),
    })
}
