//! One training run, from a validated configuration to a filled run directory: data and
//! tokenizer, model, the epoch loop with evaluation, and the files each rank writes. Every rank
//! runs this with the same configuration; rank 0 alone writes the shared files.

use crate::checkpoint::{self, CheckpointInfo};
use crate::checks;
use crate::config::{AllReduce, Config, DeviceKind};
use crate::data::{self, BatchSource, Example, Tokenizer};
use crate::dist::{self, Communicator};
use crate::eval::{self, Evaluation};
use crate::fault;
use crate::metrics::{self, EpochRecord, RunInfo};
use crate::progress::Progress;
use crate::train::{EpochError, EpochStats, Trainer, Turns};
use crate::UsageError;
use anyhow::Context;
use tch::Device;

pub(crate) const MODEL_FILE: &str = "model.safetensors";

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

/// This rank's place on its host: its index among the host's ranks, and the world ranks of the
/// host's ranks in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlace {
    pub local_rank: usize,
    pub host_ranks: Vec<usize>,
}

impl HostPlace {
    /// A process alone on its host.
    pub fn alone() -> Self {
        HostPlace { local_rank: 0, host_ranks: vec![0] }
    }
}

/// The device of a rank: with CUDA, the GPU of its index among its host's ranks, modulo the GPUs
/// it sees (`dist::gpus`). The ranks exchange their GPUs' UUIDs, and with NCCL two ranks on one
/// GPU are refused on every rank alike; without NCCL they may share.
fn device_of(
    config: &Config,
    comm: &dyn Communicator,
    place: &HostPlace,
) -> anyhow::Result<Device> {
    use dist::gpus;
    match config.device {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => {
            let visible = crate::train::visible_gpus();
            let ids = gpus::visible_ids(visible);
            let mine = gpus::choose(place.local_rank, visible).map(|i| (i, ids[i].clone()));
            let chosen: Vec<_> = (comm.all_gather_bytes(gpus::encode(&mine).as_bytes()))
                .iter()
                .map(|b| gpus::decode(&String::from_utf8_lossy(b)))
                .collect();
            let nccl = config.allreduce == AllReduce::Nccl;
            let gpu = gpus::decide(comm.rank(), &chosen, nccl).map_err(UsageError::from_err)?;
            gpus::set_device(gpu).map_err(|e| anyhow::anyhow!("rank {}: {e}", comm.rank()))?;
            Ok(Device::Cuda(gpu))
        }
    }
}

/// Trains and evaluates as configured, writing metrics into `config.workdir`. `place` is this
/// rank's place among the ranks on its host (which GPU it takes). The loop of named stages:
/// set up; for each epoch: train, evaluate, record, checkpoint; finish.
pub fn run(config: &Config, comm: &dyn Communicator, place: &HostPlace) -> anyhow::Result<()> {
    let rank = comm.rank();
    let device = device_of(config, comm, place)?;
    // Of independent copies, the first speaks for all.
    let progress = Progress::new(rank == 0 && config.copy == 0);
    let Some(run) = set_up(config, comm, place, &progress)? else {
        fault::finished();
        return Ok(());
    };
    let mut trainer = Trainer::new(config, run.tok.vocab_size(), comm, device)?;
    if config.world_size > 1 || config.device == DeviceKind::Cuda {
        progress.note(&data_plane_line(config, trainer.data_plane()));
    }
    write_run_info(config, comm, &run, &trainer, device)?;
    let first_epoch = resume(comm, &mut trainer, &config.workdir, run.resume_from.clone())?;
    announce_resume(config, &progress, first_epoch);
    let mut data = BatchSource::new(config, &run.train, run.tok.pad, rank, device);
    let turns = turns(config, rank);

    for epoch in first_epoch..config.n_epochs {
        if let Some(gate) = &config.epoch_gate {
            release_while_waiting(device);
            let stop = crate::gate::Stop::epoch(epoch);
            if crate::gate::wait(gate, stop, config.gate_rank(rank))? == crate::gate::Gate::End {
                progress.note(&format!("ended by the bench after {epoch} epochs"));
                break;
            }
        }
        let stats =
            train_one_epoch(config, &mut trainer, &mut data, epoch, turns.as_ref(), &progress)?;
        anyhow::ensure!(
            stats.train_loss.is_finite(),
            "epoch {epoch}: the training loss is {} (no target token in the epoch's batches, or \
             training diverged); nothing of this epoch was written",
            stats.train_loss
        );
        let eval = match config.benchmark_only {
            true => None,
            false => Some(evaluate(config, comm, &trainer, &run, epoch, &progress)?),
        };
        let mut record = EpochRecord::new(
            config,
            (rank, epoch, first_epoch),
            &stats,
            eval.as_ref(),
            turns.is_some(),
        );
        if let Device::Cuda(gpu) = device {
            record.peak_device_mb = dist::gpus::peak_reserved_mb(gpu).ok();
        }
        metrics::write_json(&config.workdir.join(EpochRecord::file_name(rank, epoch)), &record)?;
        on_root(comm, || {
            Ok(checkpoint::save(&config.workdir, epoch, &trainer.state(), stats.param_checksum)?)
        })?;
        // The seed's rule: an epoch's throughput is the sum over ranks.
        let mut throughput = [record.tokens_per_sec];
        comm.all_reduce_sum_f64(&mut throughput);
        progress.note(&epoch_line(&record, throughput[0], config.n_epochs));
    }
    on_root(comm, || save_final_weights(&trainer, &config.workdir))?;
    fault::finished();
    Ok(())
}

/// Before a rank waits at a gate while other configurations take their turn: on a GPU, the
/// memory its allocator caches goes back to the driver, so that the runs waiting on one GPU hold
/// their live tensors only. (A failure only costs memory, so it is not an error.)
pub(crate) fn release_while_waiting(device: Device) {
    if device.is_cuda() {
        let _ = dist::gpus::release_cached_memory();
    }
}

/// What the set-up stage hands the epoch loop: the data, tokenised, and where a resumed run
/// starts.
struct RunData {
    tok: Tokenizer,
    train: Vec<Example>,
    val: Vec<Example>,
    test: Vec<data::Pair>,
    /// The checkpoint rank 0 found, when resuming.
    resume_from: Option<CheckpointInfo>,
    hosts: Vec<String>,
    /// Each rank's MPI node (`hosts::RankPlace::node`), by rank.
    nodes: Vec<usize>,
    /// The cores this rank may run on (`cores_per_rank`).
    cores: Option<usize>,
    /// Rank 0's hold on the workdir, for the run's lifetime.
    _lock: Option<crate::lock::WorkdirLock>,
}

/// The set-up stage: the corpus checked, the workdir locked and made ready (only now may a
/// previous run's results be replaced), the tokenizer trained or reused, fault reporting
/// started, and the examples encoded. `None` when `--resume` finds every epoch done: then
/// nothing on disk has changed.
fn set_up(
    config: &Config,
    comm: &dyn Communicator,
    place: &HostPlace,
    progress: &Progress,
) -> anyhow::Result<Option<RunData>> {
    let dir = &config.workdir;
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
    let cores = cores_per_rank(config);
    progress.note(&rank_share(config, cores));
    fault::set_work(format!(
        "preset {}, {} examples per rank of global batch {}, {} positions, {}",
        config.preset,
        config.local_batch_size(),
        config.batch_size,
        config.model_max_length,
        config.precision
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
    let root = on_root(comm, || {
        std::fs::create_dir_all(dir)
            .map_err(|e| UsageError::error(format!("cannot use workdir {}: {e}", dir.display())))?;
        let lock = crate::lock::lock(dir).map_err(UsageError::from_err)?;
        if let Some(holder) = &lock.stale {
            progress.note(&format!("note: a run ({holder}) ended without releasing this workdir"));
        }
        let info = match config.resume {
            true => checkpoint::read_info(dir).map_err(UsageError::from_err)?,
            false => None,
        };
        if let Some(done) = info.as_ref().map(|i| i.epoch + 1).filter(|&e| e >= config.n_epochs) {
            progress.note(&format!(
                "all {done} epochs in {} had finished: nothing to do, nothing changed (raise \
                 --n-epochs to go on)",
                dir.display()
            ));
            return Ok(None);
        }
        metrics::prepare_workdir(config, info.as_ref().map(|i| i.epoch))
            .map_err(UsageError::from_err)?;
        if info.is_none() {
            checkpoint::clear(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        Ok(Some((lock, info)))
    })?;
    // Rank 0 alone knows whether anything is left to do (`Some(None)`: nothing); all ranks end.
    let done = matches!(root, Some(None));
    if dist::from_root(comm, f64::from(u8::from(done))) > 0.0 {
        return Ok(None);
    }
    let (lock, resume_from) =
        root.flatten().map_or((None, None), |(lock, info)| (Some(lock), info));
    // Rank 0 trains (or reuses) the tokenizer; the others load what it saved.
    on_root(comm, || {
        let (_, trained) = Tokenizer::load_or_train(dir, &corpus.train, config.preset.vocab_cap())?;
        if trained {
            progress.note("trained the tokenizer");
        }
        Ok(())
    })?;
    let (hosts, nodes) = watch_ranks(comm, place, dir)?;
    let tok = Tokenizer::load(&Tokenizer::path_in(dir))?;
    let encode = |pairs: &[data::Pair]| -> Vec<Example> {
        pairs.iter().map(|p| Example::encode(&tok, p, config.model_max_length)).collect()
    };
    let (train, val) = (encode(&corpus.train), encode(&corpus.val));
    on_root(comm, || checks::memory(config, tok.vocab_size()))?;
    on_root(comm, || checks::examples(config, &corpus, &train, &val, progress))?;
    let test = corpus.test;
    Ok(Some(RunData { tok, train, val, test, resume_from, hosts, nodes, cores, _lock: lock }))
}

/// The cores this rank may run on: one at a time when it rotates over cores itself, else what its
/// affinity allows.
fn cores_per_rank(config: &Config) -> Option<usize> {
    match config.rotate_cores {
        0 => crate::gate::affinity_cores(),
        _ => Some(1),
    }
}

/// What each rank gets (`cores`: those it may run on), said before a run starts: runs that are
/// compared should give every rank the same (`dp-bench compare` flags those that did not).
fn rank_share(config: &Config, cores: Option<usize>) -> String {
    let threads = match config.threads {
        1 => "1 intra-op thread".to_string(),
        n => format!("{n} intra-op threads"),
    };
    let device = match config.device {
        DeviceKind::Cpu => "the CPU",
        DeviceKind::Cuda => "its own GPU",
    };
    let cores = match cores {
        Some(1) => "bound to one core".to_string(),
        Some(n) => format!("free to run on {n} cores (`mpirun -bind-to core` binds each to one)"),
        None => "binding unknown".to_string(),
    };
    format!("each rank: {threads} on {device}, {cores}")
}

/// Which all-reduce runs (`plane`: `FlatGrads::data_plane`), and on GPUs why not NCCL when not.
fn data_plane_line(config: &Config, plane: &str) -> String {
    let mut line = match config.world_size {
        // One rank has nothing to sum; the data plane is joined all the same (a one-rank
        // communicator), which is what a one-GPU run checks.
        1 => format!(
            "one rank, nothing to sum: the data plane, {plane}, is joined alone (--allreduce {})",
            config.allreduce
        ),
        _ => format!("gradients summed by {plane} (--allreduce {})", config.allreduce),
    };
    match dist::nccl::library() {
        Ok(lib) if config.allreduce == AllReduce::Nccl => {
            line += &format!(", NCCL {} from {}", lib.version(), lib.path);
        }
        Err(e) if config.device == DeviceKind::Cuda => {
            line += &format!("; NCCL did not load ({})", e.reason);
        }
        _ => {}
    }
    line
}

/// `cpu` or `cuda:N`, as run.json records a rank's device.
fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    }
}

/// Rank 0 writes `run.json`: the configuration and what it ran on.
fn write_run_info(
    config: &Config,
    comm: &dyn Communicator,
    run: &RunData,
    trainer: &Trainer,
    device: Device,
) -> anyhow::Result<()> {
    on_root(comm, || {
        let info = RunInfo {
            schema: metrics::RUN_SCHEMA,
            implementation: metrics::IMPLEMENTATION.to_string(),
            config: config.clone(),
            dims: config.dims(),
            vocab_size: run.tok.vocab_size(),
            parameters: crate::model::gpt::parameter_count(&trainer.vs),
            libtorch_version: crate::LIBTORCH_VERSION.to_string(),
            mpi_library: comm.library_version(),
            host: run.hosts[0].clone(),
            hosts: run.hosts.clone(),
            nodes: Some(run.nodes.clone()),
            threads_per_rank: config.threads,
            cores_per_rank: run.cores,
            device: device_name(device),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            start_time: chrono::Utc::now().to_rfc3339(),
            cpu: metrics::cpu_description(),
            simd: crate::simd::level().name().to_string(),
        };
        metrics::write_json(&config.workdir.join(metrics::RUN_FILE), &info)
    })
    .map(|_| ())
}

/// With `--resume`, says where training goes on (a run with nothing left to do ended in
/// `set_up`).
fn announce_resume(config: &Config, progress: &Progress, first_epoch: usize) {
    if config.resume {
        progress.note(&match first_epoch {
            0 => "no epoch had finished: starting at epoch 0".to_string(),
            e => format!("resuming after epoch {} of {}", e - 1, config.n_epochs),
        });
    }
}

/// The stops within epochs where runs take turns (`--epoch-gate` with `--turn-examples`).
fn turns(config: &Config, rank: usize) -> Option<Turns> {
    let (dir, steps) = config.epoch_gate.clone().zip(config.steps_per_turn())?;
    Some(Turns {
        dir,
        steps,
        rotate_cores: match config.rotate_cores {
            0 => vec![],
            n => crate::gate::usable_cores().into_iter().take(n).collect(),
        },
        gate_rank: config.gate_rank(rank),
    })
}

/// The training stage of one epoch, with its progress bar and fault points; a divergence or a
/// failed stop becomes an error that says which epochs are kept.
fn train_one_epoch(
    config: &Config,
    trainer: &mut Trainer,
    data: &mut BatchSource,
    epoch: usize,
    turns: Option<&Turns>,
    progress: &Progress,
) -> anyhow::Result<EpochStats> {
    let steps = data.steps(config.max_batches);
    let bar = progress.bar(steps as u64, &format!("epoch {epoch} train"));
    let mut step = 0;
    fault::at("train", epoch, 0, steps);
    let stats = trainer
        .train_epoch(data, epoch, config.max_batches, turns, || {
            step += 1;
            fault::at("train", epoch, step, steps);
            bar.inc(1)
        })
        .map_err(|e| {
            let kept = match epoch {
                0 => "no epoch had finished".to_string(),
                e => format!("epochs 0–{} are kept in {}", e - 1, config.workdir.display()),
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
    Ok(stats)
}

/// The evaluation stage after an epoch; rank 0 keeps the test translations.
fn evaluate(
    config: &Config,
    comm: &dyn Communicator,
    trainer: &Trainer,
    run: &RunData,
    epoch: usize,
    progress: &Progress,
) -> anyhow::Result<Evaluation> {
    fault::at("eval", epoch, 0, 0);
    let n = (run.val.len() + run.test.len()) as u64;
    let bar = progress.bar(n, &format!("epoch {epoch} eval"));
    let data = (&run.val[..], &run.test[..]);
    let evaluation =
        eval::evaluate(&trainer.model, &run.tok, data, config.model_max_length, comm, |k| {
            bar.inc(k as u64)
        });
    bar.finish_and_clear();
    if comm.rank() == 0 {
        let path = config.workdir.join(format!("rank0_gen_epoch{epoch}.json"));
        metrics::write_json(&path, &evaluation.translations)?;
    }
    Ok(evaluation)
}

/// The finishing stage: the final weights, written under a temporary name (still .safetensors,
/// which selects the format) and renamed, like every other file of the run.
fn save_final_weights(trainer: &Trainer, dir: &std::path::Path) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".model.{}.safetensors", std::process::id()));
    trainer
        .vs
        .save(&tmp)
        .and_then(|()| Ok(std::fs::rename(&tmp, dir.join(MODEL_FILE))?))
        .with_context(|| format!("saving the final weights to {}", dir.display()))
}

/// Starts fault reporting: this rank's status file, and on each host's first rank the sentinel
/// for that host's ranks. Returns every rank's host name and MPI node, by rank.
fn watch_ranks(
    comm: &dyn Communicator,
    place: &HostPlace,
    dir: &std::path::Path,
) -> anyhow::Result<(Vec<String>, Vec<usize>)> {
    let rank = comm.rank();
    fault::open_status(dir, rank)
        .with_context(|| format!("writing a status file into {}", dir.display()))?;
    let host = crate::hosts::host_name();
    let mine = format!("{}\t{}\t{host}", std::process::id(), place.host_ranks[0]);
    let all: Vec<(i32, usize, String)> = comm
        .all_gather_bytes(mine.as_bytes())
        .into_iter()
        .map(|b| {
            let s = String::from_utf8_lossy(&b).into_owned();
            let mut words = s.splitn(3, '\t');
            let mut next = || words.next().unwrap_or("");
            let (pid, node) = (next().parse().unwrap_or(0), next().parse().unwrap_or(0));
            (pid, node, next().to_string())
        })
        .collect();
    let local: Vec<fault::Watched> = (0..all.len())
        .filter(|&r| all[r].2 == host)
        .map(|r| fault::Watched { rank: r, pid: all[r].0 })
        .collect();
    if comm.size() > 1 && local.first().map(|w| w.rank) == Some(rank) {
        fault::spawn_sentinel(dir, &local, &host)
            .with_context(|| "starting the fault sentinel".to_string())?;
    }
    Ok(all.into_iter().map(|(_, node, host)| (host, node)).unzip())
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
