//! The training step and the epoch loop, with honest timing. One step, spelled out:
//! `forward; loss; backward (writing every gradient over the last step's); all-reduce
//! gradients; optimiser step`. The loss of each
//! rank is divided by the target tokens of the GLOBAL batch (WORKLOAD.md), so summing the ranks'
//! gradients gives exactly the gradient one rank would compute on the whole global batch.

use crate::config::{AllReduce, Config, OptimizerState};
use crate::data::{Batch, BatchSource};
use crate::dist::{gradient_node_buffer, param_checksum, Communicator, FlatGrads};
use crate::model::Gpt;
use crate::optim::{AdamW, AdamWConfig, AdamWState};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// Waits for queued device work, so the clock measures work done, not work launched.
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// GPUs libtorch sees (0 where it sees none, or has no CUDA).
pub fn visible_gpus() -> usize {
    match tch::Cuda::is_available() {
        true => tch::Cuda::device_count() as usize,
        false => 0,
    }
}

/// The summed gradient of a step held a NaN or an infinity. No non-finite value reached the
/// parameters or the optimiser's state (the update was skipped): training stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diverged;

/// Training diverged at `step` (0-based, within the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("non-finite gradient at step {step} of the epoch")]
pub struct NonFinite {
    pub step: usize,
}

/// Why an epoch stopped short.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    #[error(transparent)]
    NonFinite(#[from] NonFinite),
    /// A stop within the epoch (`Turns`) failed: its controller is gone, or its directory is.
    #[error(transparent)]
    Gate(anyhow::Error),
}

/// Stops within an epoch, where runs take turns (`crate::gate`): before every `steps`-th step
/// (not the first), each rank waits at the gate of that part of the epoch in `dir`, as
/// `gate_rank` (`Config::gate_rank`). With
/// `rotate_cores` (one rank), part `p` of epoch `e` runs on `rotate_cores[(e · parts + p) mod
/// len]`, so the run visits those cores in turn.
#[derive(Debug, Clone)]
pub struct Turns {
    pub dir: std::path::PathBuf,
    pub steps: usize,
    pub rotate_cores: Vec<usize>,
    pub gate_rank: usize,
}

impl Turns {
    /// Moves to part `part`'s core of epoch `epoch` (of `parts` parts), when rotating.
    fn pin(&self, epoch: usize, part: usize, parts: usize) -> Result<(), EpochError> {
        if self.rotate_cores.is_empty() {
            return Ok(());
        }
        let core = self.rotate_cores[(epoch * parts + part) % self.rotate_cores.len()];
        crate::gate::pin_to_core(core)
            .map_err(|e| EpochError::Gate(anyhow::anyhow!("--rotate-cores: core {core}: {e}")))
    }
}

/// Seconds of one step: forward, backward and optimiser; gradient all-reduce.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepTimes {
    pub compute: f64,
    /// Waiting for the slowest rank to arrive (a barrier just before the all-reduce).
    pub wait: f64,
    pub allreduce: f64,
}

/// What one rank measured in one epoch's training loop.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EpochStats {
    pub steps: usize,
    /// Seconds since the Unix epoch when the loop started.
    pub started_at: f64,
    pub training_time: f64,
    pub compute_time: f64,
    pub allreduce_time: f64,
    pub wait_time: f64,
    pub data_time: f64,
    /// Seconds stopped at gates within the epoch (`Turns`): part of the loop's wall time, not of
    /// `training_time`.
    pub paused_time: f64,
    pub tokens: u64,
    pub target_tokens: u64,
    /// Floating-point operations of the epoch's matrix products on this rank
    /// (`GptConfig::step_flops`).
    pub flops: f64,
    /// Mean training loss over the epoch, over all ranks.
    pub train_loss: f64,
    pub param_checksum: f64,
}

/// A model, its optimiser and its flat gradient buffer: what one rank trains. Its batches come
/// from a [`BatchSource`].
pub struct Trainer<'a> {
    pub vs: nn::VarStore,
    pub model: Gpt,
    opt: AdamW,
    grads: FlatGrads,
    seed: u64,
    vars: Vec<Tensor>,
    comm: &'a dyn Communicator,
    /// Each rank's compute seconds of the last step, exchanged at its barrier when the batches
    /// are dealt by speed (`BatchSource::is_adaptive`).
    rank_seconds: Vec<f32>,
}

impl<'a> Trainer<'a> {
    /// Builds the model from the seed, makes every rank start from rank 0's parameters, and
    /// points the gradients into the flat buffer.
    pub fn new(
        config: &Config,
        vocab_size: usize,
        comm: &'a dyn Communicator,
        device: Device,
    ) -> anyhow::Result<Self> {
        tch::manual_seed(config.seed as i64);
        let vs = nn::VarStore::new(device);
        let gpt_config = crate::model::GptConfig {
            dims: config.dims(),
            vocab_size: vocab_size as i64,
            dropout: config.dropout,
            matmul: config.cpu_matmul,
            precision: config.precision,
        };
        let model = Gpt::new(&vs.root(), gpt_config);
        let vars = vs.trainable_variables();
        crate::dist::broadcast_parameters(comm, &vars);
        let adamw = AdamWConfig::workload(config.learning_rate);
        let numel = vars.iter().map(|v| v.numel()).sum();
        let shard = config.optimizer_state == OptimizerState::Sharded && device == Device::Cpu;
        let node = gradient_node_buffer(comm, config.allreduce, numel, 3 * numel * shard as usize);
        let grads = match config.allreduce {
            AllReduce::Nccl => {
                let limit = std::time::Duration::from_secs(config.collective_timeout);
                FlatGrads::with_nccl(&vars, crate::dist::nccl_data_plane(comm, device, limit)?)
            }
            _ => FlatGrads::with_shared(&vars, node.clone()),
        };
        let opt = match node.filter(|_| shard) {
            Some(node) => AdamW::sharded(&vars, adamw, node),
            None => AdamW::new(&vars, adamw),
        };
        Ok(Trainer {
            rank_seconds: vec![0.0; config.world_size],
            vs,
            model,
            opt,
            grads,
            seed: config.seed,
            vars,
            comm,
        })
    }

    /// One training step on this rank's share `batch` of a global batch with `global_targets`
    /// target tokens; adds the summed (unnormalised) loss to `loss_sum`. Every rank must call it,
    /// even with an empty share, because the all-reduce is collective. With `exchange_times`,
    /// the barrier before the all-reduce also gives every rank each rank's compute seconds
    /// (`Trainer::rank_seconds`), for batches dealt by speed.
    pub fn step(
        &mut self,
        batch: &Batch,
        global_targets: usize,
        exchange_times: bool,
        loss_sum: &mut Tensor,
    ) -> Result<StepTimes, Diverged> {
        let device = self.model.device();
        let t0 = Instant::now();
        if batch.target_tokens > 0 {
            // Forward, loss at the target positions, backward, which writes every gradient over
            // the last step's (so nothing zeroes them first). Normalised by the GLOBAL batch's
            // target tokens, so the all-reduced SUM of the ranks' gradients is the gradient of the
            // mean loss over the global batch.
            let loss = self.model.forward_backward(
                &batch.inputs,
                &batch.target_index,
                &batch.target_labels,
                1.0 / global_targets as f64,
            );
            *loss_sum += loss.to_kind(Kind::Double);
        } else {
            self.grads.zero();
        }
        synchronize(device);
        let t_wait = Instant::now();
        // Imbalance made visible: the barrier ends when the slowest rank is done computing, so
        // the all-reduce after it times the transfer alone. Dealing adaptively, the barrier is a
        // small all-reduce that also tells every rank how long each rank computed.
        if exchange_times {
            self.rank_seconds.fill(0.0);
            self.rank_seconds[self.comm.rank()] = (t_wait - t0).as_secs_f32();
            self.comm.all_reduce_sum_f32_in_place(&mut self.rank_seconds);
        } else if self.comm.size() > 1 {
            self.comm.barrier();
        }
        let t1 = Instant::now();
        let finite = match self.opt.is_sharded() {
            true => Some(self.grads.reduce_scatter()),
            false => self.grads.all_reduce(self.comm),
        };
        let t2 = Instant::now();
        // Every rank holds the same reduced gradient (and reaches the same verdict on it), so
        // every rank stops at the same step before a non-finite value reaches the parameters.
        let updated = match finite {
            Some(false) => false,
            Some(true) => {
                self.opt.step(self.grads.buffer());
                true
            }
            None => self.opt.step_if_finite(self.grads.buffer()),
        };
        if !updated {
            return Err(Diverged);
        }
        synchronize(device);
        let t3 = Instant::now();
        Ok(StepTimes {
            compute: (t_wait - t0).as_secs_f64() + (t3 - t2).as_secs_f64(),
            wait: (t1 - t_wait).as_secs_f64(),
            allreduce: (t2 - t1).as_secs_f64(),
        })
    }

    /// Which data plane sums the gradients (`FlatGrads::data_plane`).
    pub fn data_plane(&self) -> &'static str {
        self.grads.data_plane()
    }

    /// Number of parameter values.
    pub fn numel(&self) -> usize {
        self.opt.params().numel()
    }

    pub fn param_checksum(&self) -> f64 {
        param_checksum(&self.vars)
    }

    /// The optimiser's state (parameters included) for a checkpoint.
    pub fn state(&self) -> AdamWState {
        self.opt.state()
    }

    /// Continues from a checkpointed state: every rank loads rank 0's.
    pub fn load_state(&mut self, state: &AdamWState) -> Result<(), String> {
        self.opt.load_state(state)
    }

    /// Trains epoch `epoch`. `training_time` runs from the first batch fetched to the last optimiser
    /// step done, between barriers, with the device synchronised before each clock reading; with
    /// `turns`, less the time stopped at its gates (each stop ends with a barrier, so the ranks
    /// go on together).
    pub(crate) fn train_epoch(
        &mut self,
        data: &mut BatchSource,
        epoch: usize,
        max_batches: Option<usize>,
        turns: Option<&Turns>,
        mut on_step: impl FnMut(),
    ) -> Result<EpochStats, EpochError> {
        let device = self.model.device();
        let rank = self.comm.rank();
        let steps = data.steps(max_batches);
        let mut stats = EpochStats { steps, ..Default::default() };
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut global_targets_total = 0usize;
        // Dropout masks differ between ranks, as they would between the examples of one batch,
        // and are seeded per epoch, so a run resumed at an epoch boundary draws the same masks
        // as one that never stopped.
        tch::manual_seed(dropout_seed(self.seed, rank, epoch));
        let parts = turns.map_or(1, |t| steps.div_ceil(t.steps));
        if let Some(turns) = turns {
            turns.pin(epoch, 0, parts)?;
        }

        self.comm.barrier();
        let start = Instant::now();
        stats.started_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for k in 0..steps {
            if let Some(turns) = turns.filter(|t| k > 0 && k % t.steps == 0) {
                synchronize(device);
                crate::run::release_while_waiting(device);
                let stopped = Instant::now();
                let stop = crate::gate::Stop { epoch, part: k / turns.steps };
                // Within an epoch a gate only opens (a run ends only between epochs).
                crate::gate::wait(&turns.dir, stop, turns.gate_rank).map_err(EpochError::Gate)?;
                turns.pin(epoch, stop.part, parts)?;
                self.comm.barrier();
                stats.paused_time += stopped.elapsed().as_secs_f64();
            }
            let t_data = Instant::now();
            let step = data.step(k);
            stats.data_time += t_data.elapsed().as_secs_f64();

            let times = self
                .step(&step.batch, step.global_targets, data.is_adaptive(), &mut loss_sum)
                .map_err(|Diverged| NonFinite { step: k })?;
            data.observe(&self.rank_seconds);
            stats.compute_time += times.compute;
            stats.allreduce_time += times.allreduce;
            stats.wait_time += times.wait;
            let batch = &step.batch;
            stats.tokens += batch.tokens as u64;
            stats.target_tokens += batch.target_tokens as u64;
            stats.flops +=
                self.model.config.step_flops(batch.examples, step.seq_len, batch.target_tokens);
            global_targets_total += step.global_targets;
            on_step();
        }
        synchronize(device);
        stats.training_time = start.elapsed().as_secs_f64() - stats.paused_time;
        self.comm.barrier();

        let mut total_loss = [loss_sum.double_value(&[])];
        self.comm.all_reduce_sum_f64(&mut total_loss);
        stats.train_loss = total_loss[0] / global_targets_total as f64;
        stats.param_checksum = param_checksum(&self.vars);
        Ok(stats)
    }
}

/// The seed of rank `rank`'s dropout masks in epoch `epoch`.
fn dropout_seed(seed: u64, rank: usize, epoch: usize) -> i64 {
    (seed as i64).wrapping_add(1 + rank as i64).wrapping_add((epoch as i64) << 24)
}
