//! When the data_parallel bench stops sampling. Its configurations take turns epoch by epoch;
//! after every round it looks at the speedups measured so far and stops when the widest interval
//! is as narrow as asked (`--target-width`), or when its time (`--time-budget`) is spent, but
//! never before `MIN_PAIRS` measured epoch pairs. The PyTorch reference, which runs after, gets
//! its share of the budget and the same rule on its mean epoch time.
//!
//! Stopping when an interval is narrow enough makes the intervals a little less likely to hold
//! the truth than their nominal level (a run whose early epochs happen to agree stops early):
//! `stopping_keeps_the_intervals_coverage_near_nominal` measures by how much on synthetic paired
//! samples, and BENCHMARKS.md reports it.

use super::analysis;
use super::plan::{BenchArgs, Planned};
use super::run_data::RunData;
use super::stats::Estimate;
use super::summary::Summary;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// Measured epoch pairs before any rule may stop sampling. An interval from a few pairs that
/// happen to agree looks narrow without being so: waiting for 5 keeps the coverage of the
/// intervals the rule stops on at 0.93 where 3 let it fall to 0.91 (the test below).
pub const MIN_PAIRS: usize = 5;

/// Measured epochs of each reference run before the rule may stop it. Its runs are slower per
/// epoch and compared by their means (Fieller), not in pairs: two give an interval.
pub const REFERENCE_MIN_EPOCHS: usize = 2;

/// The reference's share of the time budget when it runs (dp-bench's configurations take the
/// rest): enough for a warm-up and `REFERENCE_MIN_EPOCHS` of eager and DDP on 2 cores.
pub const REFERENCE_SHARE: f64 = 0.25;

/// What stopped sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Every interval was as narrow as the target.
    Precision,
    /// The time budget was spent (or would have been by another round).
    Budget,
    /// The configurations trained the most epochs they were launched for.
    EpochLimit,
}

/// How sampling went, for the reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub ended_by: Ended,
    /// Relative half-width of the widest speedup interval when sampling ended.
    pub widest: f64,
    pub target_width: f64,
    pub budget_s: f64,
    /// Seconds dp-bench's configurations took, start to end.
    pub elapsed_s: f64,
    /// Measured epoch pairs.
    pub pairs: usize,
    /// Measured epochs of dp-bench's configurations (each trains as many): with one
    /// configuration, what there is in place of pairs. 0 in files written before it was kept.
    #[serde(default)]
    pub epochs: usize,
}

impl Sampling {
    /// One sentence: what ended sampling, after how many pairs and how long.
    pub fn sentence(&self) -> String {
        let widest = format!("±{:.1} %", self.widest * 100.0);
        let target = format!("±{:.1} %", self.target_width * 100.0);
        let elapsed = clock(self.elapsed_s);
        if self.pairs == 0 {
            // One configuration (one world size, as on a machine with one GPU): no speedup, so
            // nothing narrows but the budget and the epochs.
            let why = match self.ended_by {
                Ended::Budget => format!("the time budget ({}) was spent", clock(self.budget_s)),
                Ended::Precision | Ended::EpochLimit => {
                    "one configuration, no speedup interval to narrow".to_string()
                }
            };
            return format!(
                "Sampling ended after {} measured epochs in {elapsed}: {why}.",
                self.epochs
            );
        }
        let why = match self.ended_by {
            Ended::Precision => format!("every speedup's interval within {target} (widest {widest})"),
            Ended::Budget => format!(
                "the time budget ({}) was spent, the widest speedup interval {widest} (target {target})",
                clock(self.budget_s)
            ),
            Ended::EpochLimit => {
                format!("the most epochs allowed, the widest speedup interval {widest} (target {target})")
            }
        };
        format!("Sampling ended after {} measured epoch pairs in {elapsed}: {why}.", self.pairs)
    }
}

/// `m:ss`.
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// An estimate's relative half-width, `(upper − lower) / 2 / point`; infinite when a bound could
/// not be computed.
pub fn half_width(e: &Estimate) -> f64 {
    let w = (e.upper - e.lower) / 2.0 / e.point;
    if w.is_finite() {
        w
    } else {
        f64::INFINITY
    }
}

/// The rule, after a round: with `pairs` measured pairs (at least `min_pairs` before it may
/// stop) whose widest interval is `widest`, `elapsed` since the start and the last round having
/// taken `round`, whether to stop and why. Another round is not started when it would end past
/// the budget.
pub fn decide(
    (pairs, min_pairs): (usize, usize),
    widest: f64,
    (elapsed, round, budget): (Duration, Duration, Duration),
    target_width: f64,
) -> Option<Ended> {
    if pairs < min_pairs {
        return None;
    }
    if widest <= target_width {
        return Some(Ended::Precision);
    }
    (elapsed + round > budget).then_some(Ended::Budget)
}

/// A duration as `--time-budget` takes it: `10m`, `90s`, `1h30m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: write e.g. 10m, 90s or 1h30m");
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let (mut total, mut number) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Decides after each round of epochs whether dp-bench's configurations train another: the time
/// budget and the precision target (`sampling`), and the progress bar's account of both.
pub(crate) struct Sampler<'a> {
    args: &'a BenchArgs,
    plan: &'a [Planned],
    runs_dir: &'a Path,
    /// dp-bench's share of the budget.
    budget: Duration,
    start: Instant,
    last_round: Instant,
    ended: Option<Ended>,
    bar: &'a ProgressBar,
}

impl<'a> Sampler<'a> {
    /// Starts the clock on the configurations of `plan` (run directories in `runs_dir`), which
    /// have `budget`.
    pub(crate) fn new(
        args: &'a BenchArgs,
        (plan, runs_dir): (&'a [Planned], &'a Path),
        budget: Duration,
        bar: &'a ProgressBar,
    ) -> Self {
        let start = Instant::now();
        Sampler { args, plan, runs_dir, budget, start, last_round: start, ended: None, bar }
    }

    /// What ended sampling (the epoch limit when no rule did), and how long it took.
    pub(crate) fn finish(self) -> (Ended, Duration) {
        (self.ended.unwrap_or(Ended::EpochLimit), self.start.elapsed())
    }

    /// After epoch `epoch` of every configuration: whether they train another.
    pub(crate) fn go_on(&mut self, epoch: usize) -> bool {
        let now = Instant::now();
        let round = now - std::mem::replace(&mut self.last_round, now);
        let pairs = (epoch + 1).saturating_sub(self.args.run.warmup);
        let widest = self.widest();
        let elapsed = now - self.start;
        self.bar.set_message(format!(
            "widest interval ±{:.1} % (target ±{:.1} %), {} of {} left",
            widest * 100.0,
            self.args.target_width * 100.0,
            clock(self.budget.saturating_sub(elapsed).as_secs_f64()),
            clock(self.budget.as_secs_f64()),
        ));
        let pairs = (pairs, MIN_PAIRS);
        self.ended = decide(pairs, widest, (elapsed, round, self.budget), self.args.target_width);
        self.ended.is_none()
    }

    /// The relative half-width of the widest speedup interval of the configurations so far.
    fn widest(&self) -> f64 {
        let runs: Vec<RunData> = self
            .plan
            .iter()
            .filter_map(|p| RunData::load(&self.runs_dir.join(&p.id)).ok())
            .collect();
        match analysis::analyse(&runs, self.args.run.warmup, self.args.run.confidence) {
            Ok(summary) => widest(&summary),
            Err(_) => f64::INFINITY,
        }
    }
}

/// The relative half-width of the widest interval among dp-bench's speedups in `summary`.
pub(crate) fn widest(summary: &Summary) -> f64 {
    summary
        .speedup
        .iter()
        .filter(|s| {
            summary
                .configs
                .iter()
                .any(|c| c.id == s.id && c.implementation == crate::metrics::IMPLEMENTATION)
        })
        .map(|s| half_width(&s.tokens_per_sec))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::paired_ratio;
    use rand::{Rng, SeedableRng};

    /// What the reports say ended sampling, with pairs and with one configuration (no pairs).
    #[test]
    fn the_sentence_names_what_ended_sampling() {
        let sampling = |ended_by, pairs, epochs| Sampling {
            ended_by,
            widest: if pairs > 0 { 0.022 } else { 0.0 },
            target_width: 0.01,
            budget_s: 600.0,
            elapsed_s: 450.0,
            pairs,
            epochs,
        };
        assert_eq!(
            sampling(Ended::Budget, 19, 19).sentence(),
            "Sampling ended after 19 measured epoch pairs in 7:30: the time budget (10:00) was \
             spent, the widest speedup interval ±2.2 % (target ±1.0 %)."
        );
        assert_eq!(
            sampling(Ended::Precision, 0, 5).sentence(),
            "Sampling ended after 5 measured epochs in 7:30: one configuration, no speedup \
             interval to narrow."
        );
        assert_eq!(
            sampling(Ended::Budget, 0, 9).sentence(),
            "Sampling ended after 9 measured epochs in 7:30: the time budget (10:00) was spent."
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "m", "10x", "1.5m", "10m3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_rule_waits_for_enough_pairs_then_stops_on_precision_or_budget() {
        let s = Duration::from_secs;
        let (budget, enough) = ((s(100), s(10), s(600)), MIN_PAIRS);
        assert_eq!(
            decide((enough - 1, enough), 0.001, budget, 0.01),
            None,
            "too few pairs, however narrow"
        );
        assert_eq!(decide((enough, enough), 0.009, budget, 0.01), Some(Ended::Precision));
        assert_eq!(decide((enough, enough), 0.02, budget, 0.01), None);
        assert_eq!(
            decide((enough, enough), 0.02, (s(591), s(10), s(600)), 0.01),
            Some(Ended::Budget)
        );
        assert_eq!(decide((enough, enough), f64::INFINITY, (s(590), s(10), s(600)), 0.01), None);
    }

    /// Draws `n` epoch pairs whose throughput ratio is `ratio` times log-normal noise of `sigma`
    /// on a machine whose speed drifts from epoch to epoch (the same drift on both runs of a pair),
    /// and returns the two runs' throughputs.
    fn pairs(rng: &mut impl Rng, n: usize, ratio: f64, sigma: f64) -> (Vec<f64>, Vec<f64>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let drift = (0.05 * normal(rng)).exp();
            b.push(1000.0 * drift * (sigma / 2.0_f64.sqrt() * normal(rng)).exp());
            a.push(ratio * 1000.0 * drift * (sigma / 2.0_f64.sqrt() * normal(rng)).exp());
        }
        (a, b)
    }

    /// A standard normal draw (Box–Muller).
    fn normal(rng: &mut impl Rng) -> f64 {
        let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Coverage of the paired speedup's 95 % interval on synthetic samples with a known ratio:
    /// sampling a fixed number of pairs, and sampling until the interval is within the target
    /// (or a round budget is spent) as the bench does.
    fn coverage(trials: usize, sequential: bool) -> f64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (ratio, sigma, target, most) = (1.9, 0.02, 0.01, 24);
        let mut held = 0;
        for _ in 0..trials {
            let (a, b) = pairs(&mut rng, most, ratio, sigma);
            let mut n = most;
            if sequential {
                n = (MIN_PAIRS..=most)
                    .find(|&k| {
                        let e = paired_ratio(&a[..k], &b[..k], 0.95).expect("positive samples");
                        half_width(&e) <= target
                    })
                    .unwrap_or(most);
            }
            let e = paired_ratio(&a[..n], &b[..n], 0.95).expect("positive samples");
            held += usize::from(e.lower <= ratio && ratio <= e.upper);
        }
        held as f64 / trials as f64
    }

    /// With a fixed number of pairs the interval holds the true ratio 95 % of the time; stopping
    /// as soon as it is narrow enough lowers that a little (0.927 here), not below 92 %.
    #[test]
    fn stopping_keeps_the_intervals_coverage_near_nominal() {
        let (fixed, sequential) = (coverage(4000, false), coverage(4000, true));
        println!("coverage of the 95 % interval: fixed {fixed:.3}, stopping on precision {sequential:.3}");
        assert!((0.935..=0.965).contains(&fixed), "fixed {fixed}");
        assert!(sequential >= 0.92 && sequential <= fixed + 0.01, "sequential {sequential}");
    }
}
