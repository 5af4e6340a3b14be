//! One training run, from a validated configuration to a filled run directory: data and
//! tokenizer, model, the epoch loop with evaluation, and the files each rank writes. Every rank
//! runs this with the same configuration; rank 0 alone writes the shared files.

use crate::checkpoint::{self, CheckpointInfo};
use crate::config::{Config, DeviceKind};
use crate::data::{self, Example, Tokenizer};
use crate::dist::{self, Communicator};
use crate::eval::{self, bleu};
use crate::fault;
use crate::metrics::{self, EpochRecord, RunInfo};
use crate::progress::Progress;
use crate::train::{EpochError, Trainer};
use crate::UsageError;
use anyhow::Context;
use std::time::Instant;
use tch::Device;

pub const MODEL_FILE: &str = "model.safetensors";

/// Runs `f` on rank 0 and shares its outcome: an error there becomes an error on every rank, so
/// no rank waits in a collective for a rank that gave up.
pub(crate) fn on_root<T>(
    comm: &dyn Communicator,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    let result = if comm.rank() == 0 { Some(f()) } else { None };
    let failed = matches!(result, Some(Err(_)));
    let mut flag = [if failed { 1.0 } else { 0.0 }];
    comm.all_reduce_sum_f64(&mut flag);
    match result {
        Some(r) => r.map(Some),
        None if flag[0] > 0.0 => Err(UsageError::quiet_error("rank 0 failed during set-up")),
        None => Ok(None),
    }
}

/// Refuses a model whose parameters, gradients and AdamW state (5 f32 copies) alone exceed the
/// memory rank 0's host has available, before anything that size is allocated: such a run would
/// only end in the out-of-memory killer. Activations come on top; this is the floor.
fn check_memory(config: &Config, vocab_size: usize) -> anyhow::Result<()> {
    let dims = config.dims();
    let params = crate::model::GptConfig::new(dims, vocab_size as i64, 0.0).parameters();
    let need = params.saturating_mul(5 * 4);
    let Some(available) = available_memory() else { return Ok(()) };
    if config.device == DeviceKind::Cpu && need > available {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(UsageError::error(format!(
            "the model has {params} parameters: with gradients and AdamW state it needs at least \
             {:.1} GiB, more than the {:.1} GiB this host has available: choose a smaller \
             --preset or --n-embd/--n-layer/--n-positions",
            gib(need),
            gib(available)
        )));
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux); `None` where it cannot be read.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The device of a rank: with CUDA, the `local_rank`-th GPU of its host (round robin).
fn device_of(config: &Config, local_rank: usize) -> anyhow::Result<Device> {
    match config.device {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda if tch::Cuda::is_available() => {
            Ok(Device::Cuda(local_rank % tch::Cuda::device_count() as usize))
        }
        DeviceKind::Cuda => Err(UsageError::error(
            "--device cuda but libtorch sees no CUDA device: use --device cpu or run on a GPU machine",
        )),
    }
}

/// Trains and evaluates as configured, writing metrics into `config.workdir`. `local_rank` is
/// this rank's index among the ranks on its host.
pub fn run(config: &Config, comm: &dyn Communicator, local_rank: usize) -> anyhow::Result<()> {
    let rank = comm.rank();
    let device = device_of(config, local_rank)?;
    let dir = &config.workdir;

    // Of independent copies, the first speaks for all.
    let progress = Progress::new(rank == 0 && config.copy == 0);
    let ranks = match config.copies {
        1 => format!("{} ranks", config.world_size),
        n => format!("{n} independent copies of 1 rank"),
    };
    progress.note(&format!(
        "dp-bench: {ranks}, global batch {}, preset {}, dataset {}, {} epochs → {}",
        config.batch_size,
        config.preset,
        config.dataset,
        config.n_epochs,
        dir.display()
    ));
    let corpus = data::load_corpus(config).map_err(UsageError::from_err)?;
    if corpus.train.len() < config.train_examples {
        progress.note(&format!(
            "note: the train split has {} pairs, fewer than --train-examples {}",
            corpus.train.len(),
            config.train_examples
        ));
    }
    if config.batch_size > corpus.train.len() {
        return Err(UsageError::error(format!(
            "--batch-size {} is larger than the {} training examples: lower it or add examples",
            config.batch_size,
            corpus.train.len()
        )));
    }
    // Only now, with the input checked, may a previous run's results be replaced.
    let resume_from = on_root(comm, || {
        let info = match config.resume {
            true => checkpoint::read_info(dir).map_err(UsageError::from_err)?,
            false => None,
        };
        metrics::prepare_workdir(config, info.as_ref().map(|i| i.epoch))
            .map_err(UsageError::from_err)?;
        if info.is_none() {
            checkpoint::clear(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        Ok(info)
    })?
    .flatten();
    // Rank 0 trains (or reuses) the tokenizer; the others load what it saved.
    on_root(comm, || {
        let (_, trained) = Tokenizer::load_or_train(dir, &corpus.train, config.preset.vocab_cap())?;
        if trained {
            progress.note("trained the tokenizer");
        }
        Ok(())
    })?;
    let hosts = watch_ranks(comm, dir)?;
    let tok = Tokenizer::load(&Tokenizer::path_in(dir))?;
    let encode = |pairs: &[data::Pair]| -> Vec<Example> {
        pairs.iter().map(|p| Example::encode(&tok, p, config.model_max_length)).collect()
    };
    let (train, val) = (encode(&corpus.train), encode(&corpus.val));

    on_root(comm, || check_memory(config, tok.vocab_size()))?;
    let mut trainer = Trainer::new(config, tok.vocab_size(), &train, tok.pad, comm, device)?;
    on_root(comm, || {
        let info = RunInfo {
            schema: metrics::RUN_SCHEMA,
            implementation: metrics::IMPLEMENTATION.to_string(),
            config: config.clone(),
            dims: config.dims(),
            vocab_size: tok.vocab_size(),
            parameters: crate::model::gpt::parameter_count(&trainer.vs),
            libtorch_version: crate::LIBTORCH_VERSION.to_string(),
            mpi_library: comm.library_version(),
            host: hosts[0].clone(),
            hosts,
            threads_per_rank: config.threads,
            device: match device {
                Device::Cuda(i) => format!("cuda:{i}"),
                _ => "cpu".to_string(),
            },
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            start_time: chrono::Utc::now().to_rfc3339(),
            cpu: metrics::cpu_description(),
        };
        metrics::write_json(&dir.join(metrics::RUN_FILE), &info)
    })?;

    let first_epoch = resume(comm, &mut trainer, dir, resume_from)?;
    if config.resume {
        progress.note(&match first_epoch {
            0 => "no epoch had finished: starting at epoch 0".to_string(),
            e if e >= config.n_epochs => {
                format!("all {e} epochs had finished: nothing to do (raise --n-epochs to go on)")
            }
            e => format!("resuming after epoch {} of {}", e - 1, config.n_epochs),
        });
    }
    let steps = trainer.steps_per_epoch(config.max_batches);
    let turns = (config.epoch_gate.clone().zip(config.steps_per_turn())).map(|(dir, steps)| {
        crate::train::Turns {
            dir,
            steps,
            rotate_cores: match config.rotate_cores {
                0 => vec![],
                n => crate::gate::usable_cores().into_iter().take(n).collect(),
            },
            gate_rank: config.gate_rank(rank),
        }
    });
    for epoch in first_epoch..config.n_epochs {
        if let Some(gate) = &config.epoch_gate {
            crate::gate::wait(gate, crate::gate::Stop::epoch(epoch), config.gate_rank(rank))?;
        }
        let bar = progress.bar(steps as u64, &format!("epoch {epoch} train"));
        let mut step = 0;
        fault::at("train", epoch, 0, steps);
        let stats = trainer
            .train_epoch(epoch, config.max_batches, turns.as_ref(), || {
                step += 1;
                fault::at("train", epoch, step, steps);
                bar.inc(1)
            })
            .map_err(|e| {
                let kept = match epoch {
                    0 => "no epoch had finished".to_string(),
                    e => format!("epochs 0–{} are kept in {}", e - 1, dir.display()),
                };
                match e {
                    EpochError::NonFinite(e) => UsageError::error(format!(
                        "training diverged: {e} in epoch {epoch} (loss or gradient is NaN or \
                         infinite); lower --learning-rate; {kept}"
                    )),
                    EpochError::Gate(e) => e.context(format!("in epoch {epoch}; {kept}")),
                }
            })?;
        bar.finish_and_clear();

        let (mut validation_loss, mut bleu_score, mut eval_time) = (None, None, None);
        if !config.benchmark_only {
            fault::at("eval", epoch, 0, 0);
            let start = Instant::now();
            let n = (val.len() + corpus.test.len()) as u64;
            let bar = progress.bar(n, &format!("epoch {epoch} eval"));
            let loss = eval::validation_loss(
                &trainer.model,
                &val,
                tok.pad,
                config.model_max_length,
                comm,
                |k| bar.inc(k as u64),
            );
            let translations = eval::translate_all(
                &trainer.model,
                &tok,
                &corpus.test,
                config.model_max_length,
                comm,
                |k| bar.inc(k as u64),
            );
            bar.finish_and_clear();
            let hyps: Vec<String> = translations.iter().map(|t| t.hypothesis.clone()).collect();
            let refs: Vec<String> = translations.iter().map(|t| t.reference.clone()).collect();
            bleu_score = Some(bleu::corpus_bleu(&hyps, &refs).score);
            validation_loss = Some(loss);
            eval_time = Some(start.elapsed().as_secs_f64());
            if rank == 0 {
                let path = dir.join(format!("rank{rank}_gen_epoch{epoch}.json"));
                metrics::write_json(&path, &translations)?;
            }
        }

        let record = EpochRecord {
            epoch,
            process_epoch: Some(epoch - first_epoch),
            rank,
            world_size: config.world_size,
            global_batch_size: config.batch_size,
            local_batch_size: config.local_batch_size(),
            steps: stats.steps,
            started_at: Some(stats.started_at),
            training_time: stats.training_time,
            paused_time: turns.as_ref().map(|_| stats.paused_time),
            tokens: stats.tokens,
            tokens_per_sec: stats.tokens as f64 / stats.training_time,
            target_tokens: stats.target_tokens,
            target_tokens_per_sec: stats.target_tokens as f64 / stats.training_time,
            flops: Some(stats.flops),
            flops_per_sec: Some(stats.flops / stats.training_time),
            train_loss: stats.train_loss,
            compute_time: stats.compute_time,
            allreduce_time: stats.allreduce_time,
            wait_time: stats.wait_time,
            data_time: stats.data_time,
            max_rss_mb: metrics::max_rss_mb(),
            validation_loss,
            bleu: bleu_score,
            eval_time,
            param_checksum: stats.param_checksum,
        };
        metrics::write_json(&dir.join(EpochRecord::file_name(rank, epoch)), &record)?;
        on_root(comm, || {
            Ok(checkpoint::save(dir, epoch, &trainer.state(), stats.param_checksum)?)
        })?;
        // The seed's rule: an epoch's throughput is the sum over ranks.
        let mut throughput = [record.tokens_per_sec];
        comm.all_reduce_sum_f64(&mut throughput);
        progress.note(&epoch_line(&record, throughput[0], config.n_epochs));
    }
    on_root(comm, || {
        // Written under a temporary name (still .safetensors, which selects the format) and
        // renamed, like every other file of the run.
        let tmp = dir.join(format!(".model.{}.safetensors", std::process::id()));
        trainer
            .vs
            .save(&tmp)
            .and_then(|()| Ok(std::fs::rename(&tmp, dir.join(MODEL_FILE))?))
            .with_context(|| format!("saving the final weights to {}", dir.display()))
    })?;
    fault::finished();
    Ok(())
}

/// Starts fault reporting: this rank's status file, and on each host's first rank the sentinel
/// for that host's ranks. Returns every rank's host name, by rank.
fn watch_ranks(comm: &dyn Communicator, dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let rank = comm.rank();
    fault::open_status(dir, rank)
        .with_context(|| format!("writing a status file into {}", dir.display()))?;
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let mine = format!("{}\t{host}", std::process::id());
    let all: Vec<(i32, String)> = comm
        .all_gather_bytes(mine.as_bytes())
        .into_iter()
        .map(|b| {
            let s = String::from_utf8_lossy(&b).into_owned();
            let (pid, host) = s.split_once('\t').unwrap_or(("0", ""));
            (pid.parse().unwrap_or(0), host.to_string())
        })
        .collect();
    let local: Vec<fault::Watched> = (0..all.len())
        .filter(|&r| all[r].1 == host)
        .map(|r| fault::Watched { rank: r, pid: all[r].0 })
        .collect();
    if comm.size() > 1 && local.first().map(|w| w.rank) == Some(rank) {
        fault::spawn_sentinel(dir, &local, &host)
            .with_context(|| "starting the fault sentinel".to_string())?;
    }
    Ok(all.into_iter().map(|(_, h)| h).collect())
}

/// Loads the checkpoint rank 0 found (`info`) into every rank's trainer; returns the first epoch
/// to train (0 without a checkpoint).
fn resume(
    comm: &dyn Communicator,
    trainer: &mut Trainer,
    dir: &std::path::Path,
    info: Option<CheckpointInfo>,
) -> anyhow::Result<usize> {
    let numel = trainer.numel();
    let loaded = on_root(comm, || match &info {
        Some(info) => Ok(Some(checkpoint::load(dir, info, numel).map_err(UsageError::from_err)?)),
        None => Ok(None),
    })?
    .flatten();
    let next = dist::from_root(comm, info.as_ref().map_or(0.0, |i| i.epoch as f64 + 1.0)) as usize;
    if next == 0 {
        return Ok(0);
    }
    // The other ranks receive rank 0's state into buffers shaped like their own.
    let mut state = loaded.unwrap_or_else(|| trainer.state());
    // Matched by name: a file's tensors need not come back in the order they were saved.
    state.tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, t) in &mut state.tensors {
        dist::broadcast_tensor(comm, t);
    }
    state.steps = dist::from_root(comm, state.steps as f64) as u64;
    trainer.load_state(&state).map_err(|e| anyhow::anyhow!("loading the checkpoint: {e}"))?;
    let expected = dist::from_root(comm, info.map_or(0.0, |i| i.param_checksum));
    // Decided together, so that no rank trains on while another gives up.
    let mut mismatches = [f64::from(u8::from(trainer.param_checksum() != expected))];
    comm.all_reduce_sum_f64(&mut mismatches);
    if mismatches[0] > 0.0 {
        return Err(UsageError::error(format!(
            "the checkpoint in {} does not match its checksum: run without --resume and with \
             --overwrite to start over",
            dir.display()
        )));
    }
    Ok(next)
}

/// The line rank 0 prints after each epoch: its time, and the throughput summed over ranks.
fn epoch_line(r: &EpochRecord, throughput: f64, epochs: usize) -> String {
    let mut line = format!(
        "epoch {}/{}: {:.2} s, {:.0} tok/s over {} ranks, train loss {:.4}",
        r.epoch + 1,
        epochs,
        r.training_time,
        throughput,
        r.world_size,
        r.train_loss
    );
    if let (Some(v), Some(b)) = (r.validation_loss, r.bleu) {
        line += &format!(", val loss {v:.4}, BLEU {b:.2}");
    }
    line
}
