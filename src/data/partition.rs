//! Which training examples each rank sees at each step (WORKLOAD.md, "Partitioning"). Pure index
//! arithmetic: the shuffle, the strided and contiguous splits, and the step schedule that every
//! rank computes identically, so each knows the whole global batch of a step without talking.

use crate::config::Partition;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Example indices `0..n` shuffled once with the seed; the same order every epoch.
pub(crate) fn shuffled_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// Length-bucketed order (fairseq's `ordered_indices` and batch sampler): `order` sorted by
/// length (stable, so ties keep the seed's order), cut into global batches, and the full batches
/// shuffled with the seed; the last partial batch stays last. Batches then hold examples of
/// nearly equal length, so dynamic padding pads little, and every batch's example set is fixed by
/// the seed. (Sorting windows of 50 batches instead, torchtext's pool, left 2.4 % more positions
/// on Multi30k: 149,304 against 145,848 for 5000 examples.)
pub fn bucketed(order: &[usize], lengths: &[usize], global_batch: usize, seed: u64) -> Vec<usize> {
    let mut sorted = order.to_vec();
    sorted.sort_by_key(|&i| lengths[i]);
    let full = sorted.len() / global_batch * global_batch;
    let mut batches: Vec<&[usize]> = sorted[..full].chunks(global_batch).collect();
    batches.shuffle(&mut ChaCha8Rng::seed_from_u64(seed.wrapping_add(1)));
    let mut out = batches.concat();
    out.extend_from_slice(&sorted[full..]);
    out
}

/// `steps[k][r]`: the example indices rank `r` trains on at step `k`. Every rank takes part in
/// every step (a rank may get an empty last batch), so the collectives stay matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub steps: Vec<Vec<Vec<usize>>>,
}

impl Schedule {
    /// Builds the schedule for `n` examples, `world` ranks and a global batch of `global_batch`
    /// (a multiple of `world`). The last partial batch is kept. With `bucket_lengths` (each
    /// example's length), global batches are length-bucketed (`bucketed`).
    pub fn new(
        n: usize,
        seed: u64,
        partition: Partition,
        world: usize,
        global_batch: usize,
        bucket_lengths: Option<&[usize]>,
    ) -> Self {
        assert!(world > 0 && global_batch.is_multiple_of(world), "validated by Config");
        let mut order = shuffled_order(n, seed);
        if let Some(lengths) = bucket_lengths {
            order = bucketed(&order, lengths, global_batch, seed);
        }
        let local = global_batch / world;
        let steps = match partition {
            Partition::Strided | Partition::Balanced | Partition::Adaptive => order
                .chunks(global_batch)
                .map(|global| {
                    (0..world)
                        .map(|r| global.iter().skip(r).step_by(world).copied().collect())
                        .collect()
                })
                .collect(),
            Partition::Contiguous => {
                // N consecutive slices whose sizes differ by at most one, so nothing is dropped.
                let slices: Vec<&[usize]> =
                    (0..world).map(|r| &order[r * n / world..(r + 1) * n / world]).collect();
                let n_steps = slices.iter().map(|s| s.len().div_ceil(local)).max().unwrap_or(0);
                (0..n_steps)
                    .map(|k| {
                        slices
                            .iter()
                            .map(|s| s.iter().skip(k * local).take(local).copied().collect())
                            .collect()
                    })
                    .collect()
            }
        };
        Schedule { steps }
    }

    /// Re-deals every step's examples among the ranks so each rank's summed `cost` is as even as
    /// possible, each keeping its number of examples: the longest-processing-time rule (costliest
    /// example first, to the rank with the least work that still has room). The examples of a
    /// step, and so the summed gradient, do not change. Deterministic: ties keep index order.
    pub(crate) fn balance(&mut self, cost: impl Fn(usize) -> u64) {
        for step in &mut self.steps {
            let room: Vec<usize> = step.iter().map(Vec::len).collect();
            let mut examples: Vec<usize> = step.iter().flatten().copied().collect();
            examples.sort_by_key(|&i| (std::cmp::Reverse(cost(i)), i));
            let mut load = vec![0u64; step.len()];
            let mut dealt: Vec<Vec<usize>> = room.iter().map(|&n| Vec::with_capacity(n)).collect();
            for i in examples {
                let r = (0..step.len())
                    .filter(|&r| dealt[r].len() < room[r])
                    .min_by_key(|&r| (load[r], r))
                    .expect("the step has room for each of its examples");
                load[r] += cost(i);
                dealt[r].push(i);
            }
            *step = dealt;
        }
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// All example indices of one rank, in the order it sees them.
    #[cfg(test)]
    pub(crate) fn rank_examples(&self, rank: usize) -> Vec<usize> {
        self.steps.iter().flat_map(|s| s[rank].iter().copied()).collect()
    }
}

/// Per-rank speed estimates for `Partition::Adaptive`, and the deal they make. Every rank holds
/// the same estimates (built from the same exchanged timings by the same arithmetic), so every
/// rank computes the same deal without further communication.
#[derive(Debug, Clone)]
pub struct SpeedDeal {
    /// Work per second of each rank, smoothed; `None` until the first observation.
    speeds: Option<Vec<f64>>,
}

impl SpeedDeal {
    /// Weight of the newest observation in the moving average. The Xeon VM's cores switch
    /// between a fast and a ~15 % slower state that lasts from a few steps to minutes; replaying
    /// two 2-rank traces of it (BENCHMARKS.md), weights 0.25, 0.5 and 0.75 left 3.9, 3.5, 3.5 %
    /// and 2.2, 1.9, 1.7 % of the step waiting. A half follows a switch within two steps and
    /// keeps one odd step from moving the deal all the way.
    const SMOOTHING: f64 = 0.5;
    /// No rank is dealt as if it were slower than this share of the fastest: bounds what one
    /// mismeasured step can do, and keeps every rank in the work (so it keeps being measured).
    const FLOOR: f64 = 0.25;

    pub fn new() -> Self {
        SpeedDeal { speeds: None }
    }

    /// The estimates so far (work per second, by rank).
    #[cfg(test)]
    pub(crate) fn speeds(&self) -> Option<&[f64]> {
        self.speeds.as_deref()
    }

    /// Deals the examples of one step (`step`, as the schedule holds them) to the ranks so that
    /// each rank's summed `cost` divided by its speed is as even as possible: costliest example
    /// first, each to the rank that would finish it soonest. Before any observation, speeds are
    /// equal. Every rank gets an example while the step has one per rank. Deterministic: ties go
    /// to the lower rank and the lower index. Returns each rank's examples and their summed cost
    /// (what `observe` takes as the rank's work).
    pub(crate) fn deal(
        &self,
        step: &[Vec<usize>],
        cost: impl Fn(usize) -> u64,
    ) -> (Vec<Vec<usize>>, Vec<u64>) {
        let world = step.len();
        let fastest = self.speeds.as_ref().map_or(1.0, |s| s.iter().cloned().fold(0.0, f64::max));
        let speed = |r: usize| {
            self.speeds
                .as_ref()
                .map_or(1.0, |s| s[r].max(Self::FLOOR * fastest))
                .max(f64::MIN_POSITIVE)
        };
        let mut examples: Vec<usize> = step.iter().flatten().copied().collect();
        examples.sort_by_key(|&i| (std::cmp::Reverse(cost(i)), i));
        let mut load = vec![0u64; world];
        let mut dealt: Vec<Vec<usize>> = vec![Vec::new(); world];
        let mut empty = world.min(examples.len());
        for (k, &i) in examples.iter().enumerate() {
            // Once only as many examples are left as ranks without one, those ranks get them.
            let must_fill = examples.len() - k <= empty;
            let r = (0..world)
                .filter(|&r| !must_fill || dealt[r].is_empty())
                .min_by(|&a, &b| {
                    let finish = |r: usize| (load[r] + cost(i)) as f64 / speed(r);
                    finish(a).total_cmp(&finish(b)).then(a.cmp(&b))
                })
                .expect("at least one rank");
            if dealt[r].is_empty() {
                empty -= 1;
            }
            load[r] += cost(i);
            dealt[r].push(i);
        }
        (dealt, load)
    }

    /// Takes in one step: each rank's dealt `work` (summed cost) and the `seconds` it computed.
    /// A rank with no work or no time keeps its estimate.
    pub(crate) fn observe(&mut self, work: &[u64], seconds: &[f32]) {
        let fresh: Vec<Option<f64>> = work
            .iter()
            .zip(seconds)
            .map(|(&w, &t)| (w > 0 && t > 0.0).then(|| w as f64 / f64::from(t)))
            .collect();
        match &mut self.speeds {
            Some(speeds) => {
                for (s, f) in speeds.iter_mut().zip(&fresh) {
                    if let Some(f) = f {
                        *s += Self::SMOOTHING * (f - *s);
                    }
                }
            }
            None if fresh.iter().all(Option::is_some) => {
                self.speeds = Some(fresh.into_iter().flatten().collect());
            }
            None => {}
        }
    }
}

impl Default for SpeedDeal {
    fn default() -> Self {
        Self::new()
    }
}

/// The shard of `0..n` that rank `rank` of `world` evaluates: `rank, rank + world, …`.
pub(crate) fn eval_shard(n: usize, world: usize, rank: usize) -> Vec<usize> {
    (rank..n).step_by(world).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn check_disjoint_complete(s: &Schedule, n: usize, world: usize) {
        let all: Vec<usize> = (0..world).flat_map(|r| s.rank_examples(r)).collect();
        assert_eq!(all.len(), n, "every example exactly once");
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), n);
        assert!(s.steps.iter().all(|step| step.len() == world));
    }

    #[test]
    fn strided_is_disjoint_complete_and_matches_one_rank() {
        for (n, world, batch) in [(100, 2, 8), (101, 3, 9), (7, 4, 4), (64, 1, 16)] {
            let s = Schedule::new(n, 5, Partition::Strided, world, batch, None);
            check_disjoint_complete(&s, n, world);
            assert_eq!(s.len(), n.div_ceil(batch));
            // Step k of N ranks covers exactly step k of one rank with the same global batch.
            let one = Schedule::new(n, 5, Partition::Strided, 1, batch, None);
            for (k, step) in s.steps.iter().enumerate() {
                let mut union: Vec<usize> = step.iter().flatten().copied().collect();
                let mut single = one.steps[k][0].clone();
                union.sort();
                single.sort();
                assert_eq!(union, single, "step {k} of n={n} world={world}");
            }
        }
    }

    #[test]
    fn balanced_keeps_each_step_and_evens_the_work() {
        let (n, world, batch) = (203, 4, 16);
        let cost = |i: usize| ((i * 37) % 29 + 1) as u64;
        let strided = Schedule::new(n, 9, Partition::Strided, world, batch, None);
        let mut balanced = Schedule::new(n, 9, Partition::Balanced, world, batch, None);
        balanced.balance(cost);
        check_disjoint_complete(&balanced, n, world);
        let spread = |s: &Schedule| -> u64 {
            let step_spread = |step: &Vec<Vec<usize>>| {
                let loads: Vec<u64> =
                    step.iter().map(|r| r.iter().map(|&i| cost(i)).sum()).collect();
                loads.iter().max().unwrap() - loads.iter().min().unwrap()
            };
            s.steps.iter().map(step_spread).sum()
        };
        for (a, b) in strided.steps.iter().zip(&balanced.steps) {
            let (mut x, mut y): (Vec<usize>, Vec<usize>) =
                (a.iter().flatten().copied().collect(), b.iter().flatten().copied().collect());
            x.sort();
            y.sort();
            assert_eq!(x, y, "the same examples in each step");
            assert_eq!(
                a.iter().map(Vec::len).collect::<Vec<_>>(),
                b.iter().map(Vec::len).collect::<Vec<_>>(),
                "each rank keeps its share"
            );
        }
        assert!(
            spread(&balanced) * 4 < spread(&strided),
            "{} vs {}",
            spread(&balanced),
            spread(&strided)
        );
    }

    #[test]
    fn speed_deal_follows_the_measured_speeds() {
        let step: Vec<Vec<usize>> = vec![(0..16).collect(), (16..32).collect()];
        let cost = |i: usize| 100 + (i % 5) as u64; // nearly equal examples
        let sorted = |d: &[Vec<usize>]| {
            let mut all: Vec<usize> = d.iter().flatten().copied().collect();
            all.sort();
            all
        };
        let work = |d: &[Vec<usize>]| -> Vec<u64> {
            d.iter().map(|r| r.iter().map(|&i| cost(i)).sum()).collect()
        };
        let mut deal = SpeedDeal::new();
        // Before any measurement: an even deal of the same examples.
        let (even, w) = deal.deal(&step, cost);
        assert_eq!(sorted(&even), (0..32).collect::<Vec<_>>());
        assert!(even[0].len().abs_diff(even[1].len()) <= 1, "{even:?}");
        assert_eq!(w, work(&even), "the work returned is the dealt examples' cost");
        // Rank 1 takes twice as long for the same work: it gets about a third of the next steps.
        deal.observe(&w, &[w[0] as f32 / 1000.0, 2.0 * w[1] as f32 / 1000.0]);
        let (skewed, w) = deal.deal(&step, cost);
        assert_eq!(sorted(&skewed), (0..32).collect::<Vec<_>>(), "the same examples");
        assert_eq!(w, work(&skewed));
        let share = w[1] as f64 / (w[0] + w[1]) as f64;
        assert!((share - 1.0 / 3.0).abs() < 0.03, "rank 1's share {share}: {skewed:?}");
        // The same estimates give the same deal (every rank computes it on its own).
        assert_eq!(deal.deal(&step, cost).0, skewed);
        // Equal speeds again: the estimates move half of the way per step, back to even.
        for _ in 0..40 {
            let (_, w) = deal.deal(&step, cost);
            deal.observe(&w, &[w[0] as f32 / 1000.0, w[1] as f32 / 1000.0]);
        }
        let s = deal.speeds().unwrap();
        assert!((s[0] / s[1] - 1.0).abs() < 0.01, "{s:?}");
        // A rank measured 100× slower still gets work (the floor: dealt as if a quarter as fast,
        // a fifth of the step), and a rank with no work or no time keeps its estimate.
        let mut deal = SpeedDeal::new();
        deal.observe(&[1000, 10], &[1.0, 1.0]);
        deal.observe(&[1000, 0], &[1.0, 0.0]);
        assert_eq!(deal.speeds().unwrap(), &[1000.0, 10.0]);
        let (floored, _) = deal.deal(&step, cost);
        assert!((6..=7).contains(&floored[1].len()), "{floored:?}");
        // A step with as many examples as ranks gives each rank one, however skewed the speeds.
        let last: Vec<Vec<usize>> = vec![vec![7], vec![9]];
        assert!(deal.deal(&last, cost).0.iter().all(|d| d.len() == 1));
    }

    #[test]
    fn strided_takes_every_nth_position() {
        let s = Schedule::new(10, 3, Partition::Strided, 2, 4, None);
        let order = shuffled_order(10, 3);
        assert_eq!(s.steps[0][0], vec![order[0], order[2]]);
        assert_eq!(s.steps[0][1], vec![order[1], order[3]]);
        assert_eq!(s.steps[2][0], vec![order[8]]);
        assert_eq!(s.steps[2][1], vec![order[9]]);
    }

    #[test]
    fn contiguous_slices_are_consecutive() {
        for (n, world, batch) in [(100, 2, 8), (101, 3, 9), (10, 4, 8)] {
            let s = Schedule::new(n, 9, Partition::Contiguous, world, batch, None);
            check_disjoint_complete(&s, n, world);
            let order = shuffled_order(n, 9);
            let mut start = 0;
            for r in 0..world {
                let mine = s.rank_examples(r);
                assert_eq!(mine[..], order[start..start + mine.len()]);
                start += mine.len();
            }
        }
    }

    #[test]
    fn bucketing_groups_similar_lengths_and_keeps_every_example() {
        let n = 1000;
        let lengths: Vec<usize> = (0..n).map(|i| (i * 37) % 90 + 5).collect();
        let s = Schedule::new(n, 4, Partition::Strided, 2, 16, Some(&lengths));
        check_disjoint_complete(&s, n, 2);
        assert_eq!(s, Schedule::new(n, 4, Partition::Strided, 2, 16, Some(&lengths)));
        let spread = |s: &Schedule| -> usize {
            s.steps
                .iter()
                .map(|step| {
                    let l: Vec<usize> = step.iter().flatten().map(|&i| lengths[i]).collect();
                    l.iter().max().unwrap() - l.iter().min().unwrap()
                })
                .sum()
        };
        // Consecutive runs of one sorted list: their ranges add up to at most the whole range.
        assert!(spread(&s) <= 94 - 5, "{}", spread(&s));
        let plain = Schedule::new(n, 4, Partition::Strided, 2, 16, None);
        assert!(spread(&s) * 50 < spread(&plain), "{} vs {}", spread(&s), spread(&plain));
        assert_ne!(s, Schedule::new(n, 5, Partition::Strided, 2, 16, Some(&lengths)), "the seed");
    }

    #[test]
    fn shuffle_depends_on_seed_only() {
        assert_eq!(shuffled_order(50, 1), shuffled_order(50, 1));
        assert_ne!(shuffled_order(50, 1), shuffled_order(50, 2));
        let mut sorted = shuffled_order(50, 1);
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn eval_shards_cover_everything_once() {
        let all: Vec<usize> = (0..3).flat_map(|r| eval_shard(10, 3, r)).collect();
        assert_eq!(all.len(), 10);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 10);
    }
}
