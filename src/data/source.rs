//! A rank's batches, step by step: the schedule of global batches (`partition`), this rank's
//! share of each (dealt by work or by measured speed where the partition says so), padded and
//! on the device. The trainer asks it for step k's batch and, under `--partition adaptive`,
//! hands back how long each rank computed, which the next deal uses.

use super::{collate, padded_len, Batch, Example, Schedule, SpeedDeal};
use crate::config::{Config, Padding, Partition};
use tch::Device;

/// One step of one rank: its share of the global batch, and what the step needs to know of the
/// whole global batch.
pub struct Step {
    pub batch: Batch,
    /// Target tokens of the GLOBAL batch: every rank's loss is divided by it (WORKLOAD.md), so
    /// the ranks' summed gradients are the gradient of the global batch's mean loss.
    pub global_targets: usize,
    /// Positions this rank's sequences are padded to.
    pub seq_len: usize,
}

/// The training batches of one rank.
pub struct BatchSource<'a> {
    examples: &'a [Example],
    schedule: Schedule,
    rank: usize,
    pad: i64,
    max_len: usize,
    padding: Padding,
    device: Device,
    /// `Partition::Adaptive` on more than one rank: the speed estimates that deal each step.
    deal: Option<SpeedDeal>,
    /// Each rank's work in the last step dealt adaptively (what `observe` divides by its time).
    work: Vec<u64>,
}

impl<'a> BatchSource<'a> {
    /// The batches of rank `rank` under `config`'s partition, padding and seed, over `examples`
    /// (the whole training set: every rank knows every global batch).
    pub fn new(
        config: &Config,
        examples: &'a [Example],
        pad: i64,
        rank: usize,
        device: Device,
    ) -> Self {
        let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
        let mut schedule = Schedule::new(
            examples.len(),
            config.seed,
            config.partition,
            config.world_size,
            config.batch_size,
            config.bucket_by_length.then_some(&lengths[..]),
        );
        if config.partition == Partition::Balanced {
            // What varies between examples: the LM head's rows (target tokens) always, and the
            // positions a rank pads to only under dynamic padding.
            let dynamic = config.padding == Padding::Dynamic;
            schedule.balance(|i| {
                let e = &examples[i];
                (e.target_tokens() + if dynamic { e.ids.len() } else { 0 }) as u64
            });
        }
        let adaptive = config.partition == Partition::Adaptive && config.world_size > 1;
        BatchSource {
            examples,
            schedule,
            rank,
            pad,
            max_len: config.model_max_length,
            padding: config.padding,
            device,
            deal: adaptive.then(SpeedDeal::new),
            work: Vec::new(),
        }
    }

    /// Steps of an epoch, at most `max_batches`.
    pub fn steps(&self, max_batches: Option<usize>) -> usize {
        max_batches.map_or(self.schedule.len(), |m| m.min(self.schedule.len()))
    }

    /// Whether the ranks' shares are dealt by their measured speeds, so the trainer must
    /// exchange each step's compute times and hand them to [`BatchSource::observe`].
    pub(crate) fn is_adaptive(&self) -> bool {
        self.deal.is_some()
    }

    /// Step `k`'s batch of this rank, on the device.
    pub fn step(&mut self, k: usize) -> Step {
        let global = &self.schedule.steps[k];
        // Every rank knows the whole global batch, so the normaliser needs no communication.
        let global_targets: usize =
            global.iter().flatten().map(|&i| self.examples[i].target_tokens()).sum();
        let dealt = self.deal.as_ref().map(|deal| deal.deal(global, |i| self.work(i)));
        let shares = match &dealt {
            Some((dealt, _)) => dealt,
            None => global,
        };
        let local: Vec<&Example> = shares[self.rank].iter().map(|&i| &self.examples[i]).collect();
        let seq_len = padded_len(&local, self.padding, self.max_len);
        let batch = collate(&local, self.pad, seq_len, self.device);
        if let Some((_, work)) = dealt {
            self.work = work;
        }
        Step { batch, global_targets, seq_len }
    }

    /// Under the adaptive deal, each rank's compute seconds of the last step (the same on every
    /// rank): the speeds the next deal goes by. Otherwise nothing.
    pub(crate) fn observe(&mut self, rank_seconds: &[f32]) {
        if let Some(deal) = &mut self.deal {
            deal.observe(&self.work, rank_seconds);
        }
    }

    /// What example `i` costs a rank, for the adaptive deal: its padded positions (the blocks)
    /// plus its target tokens (the LM head's rows), which cost about the same per row.
    fn work(&self, i: usize) -> u64 {
        let e = &self.examples[i];
        let positions = match self.padding {
            Padding::Fixed => self.max_len,
            Padding::Dynamic => (e.ids.len() - 1).min(self.max_len),
        };
        (positions + e.target_tokens()) as u64
    }
}
