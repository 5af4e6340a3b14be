//! The data_parallel bench's options (`BenchArgs`) and the configurations they plan: world
//! sizes, partitions, the independent copies, and each run's `dp-bench` arguments.

use super::analysis;
use super::device::{device_kind, device_plan, visible_gpus, DeviceChoice, DevicePlan, Given};
use super::report;
use super::runner::Launcher;
use super::sampling;
use super::trainer::TrainerRun;
use super::turns::TurnArgs;
use crate::config::{DeviceKind, Partition, Precision};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// The default time budget of the bench: about ten minutes on a 2-core machine.
const DEFAULT_BUDGET: Duration = Duration::from_secs(600);

/// Options of `cargo bench --bench data_parallel -- [OPTIONS] [FILTER]`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "data_parallel",
    about = "Single- vs multi-device data-parallel training benchmark"
)]
pub struct BenchArgs {
    /// Smaller workload for CI (512 examples, 1 warm-up + 3 measured epochs, the reference too;
    /// no time budget)
    #[arg(long, env = "DP_BENCH_QUICK")]
    pub quick: bool,
    /// Time for the whole bench, the PyTorch reference included (10m, 90s, 1h30m): the
    /// configurations take turns epoch by epoch until every speedup's interval is within
    /// --target-width or the time is spent, after at least 5 measured epoch pairs; the reference
    /// gets 25 % of it and the same rule on its mean epoch time. 0: no budget, every run trains
    /// --epochs epochs [default: 10m; none with --quick, or across hosts, where configurations
    /// run one after another]
    #[arg(long, value_parser = sampling::parse_duration, value_name = "DURATION")]
    pub time_budget: Option<Duration>,
    /// Under the time budget, stop once every speedup's interval is within ± this share of its
    /// value (0.01: ±1 %)
    #[arg(long, default_value_t = 0.01, value_name = "SHARE")]
    pub target_width: f64,
    /// World sizes to compare, each run with global batch = per-device batch × world size
    /// [default: 1,2 on CPUs; on GPUs 1, 2, 4, … up to the GPU count; across hosts 1, 2, 4, …
    /// up to what the launcher's allocation or hostfile offers]
    #[arg(long, value_delimiter = ',')]
    pub world_sizes: Option<Vec<usize>>,
    /// cpu, cuda (one rank a GPU, gradients summed by NCCL) or auto (cuda when libtorch sees a
    /// GPU)
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Number formats of every run and of the reference, as `dp-bench --precision` (tf32 and
    /// bf16 on GPUs)
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Also run the PyTorch reference through torch.compile (a further row per world size)
    #[arg(long)]
    pub reference_compile: bool,
    /// How each global batch is split over the ranks (as `dp-bench --partition`): adaptive deals
    /// each step's examples in proportion to the ranks' measured speeds, balanced evens out their
    /// work at equal speeds; neither changes any step's examples. A list (`adaptive,balanced`)
    /// runs each multi-rank configuration once per partition, side by side with the others;
    /// the first keeps the plain id (`ws2_bs32`), the others get theirs appended
    /// (`ws2_bs32_balanced`), and the PyTorch reference runs once per world size
    #[arg(long, value_enum, value_delimiter = ',', default_value = "adaptive")]
    pub partition: Vec<Partition>,
    /// `synthetic` or a corpus path (as `dp-bench --dataset`)
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    /// Training examples per epoch [default: 1280 under a time budget, so that more epoch pairs
    /// fit in it; 5000 without one; 512 with --quick]
    #[arg(long)]
    pub train_examples: Option<usize>,
    /// Epochs per configuration, warm-up included; under a time budget, the most. The
    /// configurations run side by side and take turns epoch by epoch (ws1 epoch 0, ws2 epoch 0,
    /// ws1 epoch 1, …; `dp-bench --epoch-gate`), so the machine's drift in speed over minutes
    /// falls on every configuration alike and the speedups pair epoch j of each [default: 60
    /// under a time budget, 13 without one, 4 with --quick]
    #[arg(long)]
    pub epochs: Option<usize>,
    #[command(flatten)]
    pub run: super::RunArgs,
    #[command(flatten)]
    pub turns: TurnArgs,
    /// Keep the 1-rank configurations on the first core. By default (with --turn-examples and
    /// one thread) they run each part of an epoch on the next of the cores the largest
    /// configuration's ranks are bound to (`dp-bench --rotate-cores N`), so the baseline samples
    /// every core that the multi-rank configurations use, as they do
    #[arg(long)]
    pub baseline_on_first_core: bool,
    /// Epochs of each PyTorch reference run, warm-up included (it runs after dp-bench's, on its
    /// own); under a time budget, the most [default: 30 under a time budget, 6 without one, 4
    /// with --quick]
    #[arg(long)]
    pub reference_epochs: Option<usize>,
    /// Save this run's summary as baseline NAME
    #[arg(long)]
    pub save_baseline: Option<String>,
    /// Compare against baseline NAME
    #[arg(long)]
    pub baseline: Option<String>,
    /// With --baseline: exit with status 1, naming each configuration, its change with its
    /// interval and p-value, when criterion's verdict on its throughput or epoch time is
    /// "regressed" (a CI gate)
    #[arg(long, requires = "baseline")]
    pub fail_on_regression: bool,
    /// Skip the PyTorch reference (scripts/torch_reference.py: eager on one rank, DDP on more)
    #[arg(long)]
    pub no_reference: bool,
    /// Skip the cores' ceiling. By default each world size N > 1 also runs as N independent
    /// one-rank runs side by side, talking to no other (`dp-bench --independent`, id
    /// `ws{N}_bs{N·b}_independent`): they share caches, memory bandwidth and power as N ranks
    /// do, so their efficiency is the most any N-rank run can reach on these cores, and each
    /// N-rank run is also given as a share of it
    #[arg(long)]
    pub no_independent: bool,
    /// Python with torch for the reference [default: .venv/bin/python]
    #[arg(long, env = "DP_BENCH_PYTHON")]
    pub python: Option<PathBuf>,
    /// Replace the table between the `<!-- dp-bench data_parallel table: begin/end -->` lines
    /// of this Markdown file (e.g. BENCHMARKS.md) with this run's, when every configuration ran
    #[arg(long, value_name = "FILE")]
    pub update_doc: Option<PathBuf>,
    /// Benchmark your own training command instead of dp-bench: run once per world size, one
    /// after another, with {world_size}, {batch_size} (global), {per_device_batch}, {epochs}
    /// and {workdir} filled in; it launches its own processes and writes
    /// rank{r}_results_epoch{e}.json per rank and epoch (docs/records.md). No time budget: each
    /// run trains --epochs epochs [default: 13; 4 with --quick]
    #[arg(long, value_name = "CMD", help_heading = "Your own trainer")]
    pub trainer: Option<String>,
    /// Where the --trainer command writes its records when it does not take {workdir} (e.g.
    /// ./workdir): it must be absent or empty before each run, and what the command wrote there
    /// is moved into the configuration's run directory after it [default: the {workdir} given]
    #[arg(long, value_name = "DIR", requires = "trainer", help_heading = "Your own trainer")]
    pub trainer_dir: Option<PathBuf>,
    /// Run only configurations whose id contains this text
    pub filter: Option<String>,
}

/// One configuration to run.
#[derive(Debug, Clone)]
pub struct Planned {
    pub id: String,
    pub world_size: usize,
    pub args: Vec<String>,
    /// The PyTorch reference runs for this configuration (one per world size).
    pub reference: bool,
}

impl BenchArgs {
    /// The launcher, its words split ([`Launcher::lenient`]: one that does not split is refused
    /// by [`BenchArgs::check_machine`]).
    pub(crate) fn launcher(&self) -> Launcher {
        Launcher::lenient(&self.run.mpirun)
    }

    /// Whether dp-bench's configurations may run on other hosts: then they run one after
    /// another, each launched whole, with no time budget, no epoch gates and no core binding.
    pub fn spans_hosts(&self) -> bool {
        self.trainer.is_none() && self.launcher().spans_hosts()
    }

    /// The time budget of the whole bench, if any: none across hosts, where configurations
    /// cannot take turns.
    pub fn budget(&self) -> Option<Duration> {
        if self.spans_hosts() {
            return None;
        }
        match self.time_budget {
            Some(b) => Some(b).filter(|b| !b.is_zero()),
            None if self.quick => None,
            None => Some(DEFAULT_BUDGET),
        }
    }

    /// A size's default in this bench's mode: `[quick, under a time budget, fixed]`.
    fn by_mode(&self, [quick, budgeted, fixed]: [usize; 3]) -> usize {
        match (self.quick, self.budget()) {
            (true, _) => quick,
            (false, Some(_)) => budgeted,
            (false, None) => fixed,
        }
    }

    /// Epochs per configuration, warm-up included (the most, under a time budget).
    pub fn epochs(&self) -> usize {
        self.epochs.unwrap_or_else(|| self.by_mode([4, 60, 13]))
    }

    /// The time budget of dp-bench's own configurations: none for a `--trainer`, whose runs
    /// cannot take turns.
    pub(crate) fn own_budget(&self) -> Option<Duration> {
        self.budget().filter(|_| self.trainer.is_none())
    }

    /// Epochs of each run of a `--trainer` command, warm-up included.
    pub(crate) fn trainer_epochs(&self) -> usize {
        self.epochs.unwrap_or(if self.quick { 4 } else { 13 })
    }

    /// The `--trainer` command's configurations on `devices`, filtered: one per world size,
    /// with global batch = per-device batch × world size.
    pub(crate) fn trainer_plan(&self, devices: &DevicePlan) -> Vec<TrainerRun> {
        devices
            .world_sizes
            .iter()
            .map(|&n| TrainerRun {
                id: analysis::config_id(n, devices.batch * n, None),
                world_size: n,
                global_batch: devices.batch * n,
                epochs: self.trainer_epochs(),
            })
            .filter(|p| self.filter.as_ref().is_none_or(|f| p.id.contains(f.as_str())))
            .collect()
    }

    /// Training examples per epoch.
    pub fn train_examples(&self) -> usize {
        self.train_examples.unwrap_or_else(|| self.by_mode([512, 1280, 5000]))
    }

    /// Over how many cores the 1-rank configurations move, part by part (`dp-bench
    /// --rotate-cores N`): those the largest configuration's ranks are bound to. `None` when they
    /// stay on the first.
    pub(crate) fn baseline_cores(&self, devices: &DevicePlan) -> Option<usize> {
        let largest = devices.world_sizes.iter().copied().max().unwrap_or(1);
        let cores = largest.min(crate::gate::usable_cores().len());
        (devices.device == DeviceKind::Cpu
            && !self.spans_hosts()
            && !self.baseline_on_first_core
            && self.turns.turn_examples > 0
            && self.run.threads == 1
            && cores > 1)
            .then_some(cores)
    }

    /// The devices, world sizes, preset and batch this bench runs with; across hosts, up to
    /// what the launcher's allocation or hostfile offers.
    pub fn devices(&self) -> anyhow::Result<DevicePlan> {
        let gpus = visible_gpus();
        let spans_hosts = self.spans_hosts();
        let offer = match spans_hosts {
            true => {
                let per_host = match device_kind(self.device, gpus)? {
                    DeviceKind::Cpu => 0,
                    DeviceKind::Cuda => gpus,
                };
                super::hosts::offer(&self.launcher(), per_host, &|v| std::env::var(v).ok())?
            }
            false => None,
        };
        let given = Given {
            world_sizes: self.world_sizes.as_deref(),
            preset: self.run.preset.as_deref(),
            batch: self.run.batch,
            offer: offer.as_ref(),
            spans_hosts,
        };
        device_plan(self.device, gpus, given)
    }

    /// The reference's variants for each configuration it runs: eager/DDP, and with
    /// `--reference-compile` also through torch.compile (`true`).
    pub(crate) fn reference_variants(&self) -> &'static [bool] {
        if self.reference_compile {
            &[false, true]
        } else {
            &[false]
        }
    }

    pub(crate) fn reference_epochs(&self) -> usize {
        self.reference_epochs.unwrap_or_else(|| self.by_mode([4, 30, 6]))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.turns.validate()?;
        if let Some(command) = &self.trainer {
            super::trainer::check_command(command)?;
            if let Some(dir) = &self.trainer_dir {
                super::trainer::check_trainer_dir(dir)?;
            }
            anyhow::ensure!(
                self.trainer_epochs() >= self.run.warmup + 2,
                "--epochs {} leaves fewer than 2 measured epochs after --warmup {}",
                self.trainer_epochs(),
                self.run.warmup
            );
        }
        if self.spans_hosts() && self.time_budget.is_some_and(|b| !b.is_zero()) {
            anyhow::bail!(
                "--time-budget: across hosts ({}) the configurations run one after another, each \
                 launched whole, and cannot take turns under a budget: drop it and set --epochs",
                self.run.mpirun
            );
        }
        if let Some(doc) = &self.update_doc {
            report::markdown::check_doc(doc, report::markdown::DocTable::DATA_PARALLEL)?;
        }
        for (flag, epochs) in
            [("--epochs", self.epochs()), ("--reference-epochs", self.reference_epochs())]
        {
            anyhow::ensure!(
                epochs >= self.run.warmup + 2,
                "{flag} {epochs} leaves fewer than 2 measured epochs after --warmup {}: at least \
                 2 are needed for an interval",
                self.run.warmup
            );
        }
        let devices = self.devices()?;
        anyhow::ensure!(!devices.world_sizes.is_empty(), "--world-sizes is empty");
        anyhow::ensure!(
            !devices.world_sizes.contains(&0),
            "--world-sizes: 0 ranks cannot train: each world size is at least 1"
        );
        anyhow::ensure!(devices.batch > 0, "--batch must be positive");
        if devices.device == DeviceKind::Cpu {
            crate::config::cpu_precision(self.precision)?;
        }
        anyhow::ensure!(
            self.target_width > 0.0 && self.target_width < 1.0,
            "--target-width {} must be in (0, 1), e.g. 0.01 for ±1 %",
            self.target_width
        );
        if self.own_budget().is_some() {
            for (flag, epochs, least) in [
                ("--epochs", self.epochs(), sampling::MIN_PAIRS),
                ("--reference-epochs", self.reference_epochs(), sampling::REFERENCE_MIN_EPOCHS),
            ] {
                anyhow::ensure!(
                    epochs >= self.run.warmup + least,
                    "{flag} {epochs}: under a time budget each run needs room for {least} \
                     measured epochs after --warmup {}",
                    self.run.warmup
                );
            }
        }
        anyhow::ensure!(!self.partition.is_empty(), "--partition is empty");
        anyhow::ensure!(
            self.run.confidence > 0.0 && self.run.confidence < 1.0,
            "--confidence must be in (0, 1)"
        );
        Ok(())
    }

    /// Refuses what this machine cannot run, before anything starts: a launcher that is not
    /// there, a `--python` that is not there or lacks torch, more CPU ranks (of `--threads` each) than the cores this process may use, or a
    /// global batch larger than the training examples. (A `--trainer` brings its own.)
    pub fn check_machine(&self) -> anyhow::Result<()> {
        if self.trainer.is_some() {
            return Ok(());
        }
        let launcher = super::runner::check_launcher(&self.run.mpirun)?;
        if let Some(python) = self.python.as_ref().filter(|_| !self.no_reference) {
            super::runner::check_python(python)?;
        }
        let devices = self.devices()?;
        let largest = devices.world_sizes.iter().copied().max().unwrap_or(1);
        if devices.device == DeviceKind::Cpu && !launcher.spans_hosts() {
            let cores = crate::gate::usable_cores().len().max(1);
            let threads = self.run.threads.max(1);
            anyhow::ensure!(
                largest * threads <= cores,
                "--world-sizes: {largest} ranks of {threads} thread(s) need {} cores, and this \
                 process may use {cores}: lower the world sizes (one rank a core)",
                largest * threads
            );
        }
        if devices.device == DeviceKind::Cuda {
            self.check_gpu_memory(&devices)?;
        }
        let (global, examples) = (devices.batch * largest, self.train_examples());
        anyhow::ensure!(
            global <= examples,
            "--world-sizes {largest} × --batch {} = {global} examples a step, more than the {examples} \
             training examples (--train-examples): lower --batch or raise --train-examples",
            devices.batch
        );
        Ok(())
    }

    /// The plan against the smallest GPU's free memory: on one host every configuration's rank 0
    /// holds GPU 0 at once, all but one of them waiting ([`super::device::check_gpu_memory`]).
    fn check_gpu_memory(&self, devices: &DevicePlan) -> anyhow::Result<()> {
        let preset = <crate::config::Preset as clap::ValueEnum>::from_str(&devices.preset, true)
            .map_err(anyhow::Error::msg)?;
        let (dims, vocab) = (preset.dims(), preset.vocab_cap());
        let parameters = crate::model::GptConfig::new(dims, vocab as i64, 0.0).parameters();
        let need = super::device::rank_memory(parameters, dims, vocab, devices.batch, 128);
        let free = (0..devices.gpus)
            .filter_map(|g| crate::dist::gpus::memory_info(g).ok().map(|(free, _)| free))
            .min();
        match free {
            // Across hosts one configuration runs at a time.
            Some(free) => {
                let at_once = if self.spans_hosts() { 1 } else { self.plan(devices).len() };
                super::device::check_gpu_memory(at_once, need, free)
            }
            None => Ok(()), // not known: the runs will say so if they run out
        }
    }

    /// The configurations on `devices` (this bench's [`BenchArgs::devices`]), filtered: each
    /// world size under each partition, then (unless `--no-independent`) each world size above
    /// one as independent one-rank copies.
    pub(crate) fn plan(&self, devices: &DevicePlan) -> Vec<Planned> {
        let examples = self.train_examples();
        let spans_hosts = self.spans_hosts();
        let (device, precision) = (devices.device.to_string(), self.precision.to_string());
        // What every configuration trains, for `batch` examples per step and rank.
        let workload = |batch: usize| {
            [
                "--batch-size",
                &batch.to_string(),
                "--n-epochs",
                &self.epochs().to_string(),
                "--train-examples",
                &examples.to_string(),
                "--threads",
                &self.run.threads.to_string(),
                "--preset",
                &devices.preset,
                "--device",
                &device,
                "--precision",
                &precision,
                "--dataset",
                &self.dataset,
                "--benchmark-only",
                "--overwrite",
            ]
            .map(String::from)
            .to_vec()
        };
        // One rank has nothing to split: it runs once, under the first partition.
        let partitions = |n: usize| if n == 1 { &self.partition[..1] } else { &self.partition[..] };
        let data_parallel = devices
            .world_sizes
            .iter()
            .flat_map(|&n| partitions(n).iter().enumerate().map(move |(k, &p)| (n, k, p)))
            .map(|(n, k, partition)| {
                let global = devices.batch * n;
                let mut args = workload(global);
                args.extend(["--world-size".into(), n.to_string()]);
                args.extend(["--partition".into(), partition.to_string()]);
                if let Some(cores) = self.baseline_cores(devices).filter(|_| n == 1) {
                    args.extend(["--rotate-cores".into(), cores.to_string()]);
                }
                let id = analysis::config_id(n, global, (k > 0).then_some(partition));
                // The reference starts its ranks on this host: across hosts, one rank only.
                let reference = k == 0 && (n == 1 || !spans_hosts);
                Planned { id, world_size: n, args, reference }
            });
        let independent =
            devices.world_sizes.iter().filter(|&&n| n > 1 && !self.no_independent).map(|&n| {
                let mut args = workload(devices.batch);
                args.push("--independent".into());
                let id = analysis::config_id(n, devices.batch * n, None) + analysis::INDEPENDENT;
                Planned { id, world_size: n, args, reference: false }
            });
        data_parallel
            .chain(independent)
            .filter(|p| self.filter.as_ref().is_none_or(|f| p.id.contains(f.as_str())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(flags: &[&str]) -> Vec<Planned> {
        let args = BenchArgs::parse_from(["data_parallel"].iter().chain(flags));
        args.validate().unwrap();
        args.plan(&args.devices().unwrap())
    }

    fn flag<'a>(p: &'a Planned, name: &str) -> Option<&'a str> {
        p.args.iter().position(|a| a == name).map(|i| p.args[i + 1].as_str())
    }

    #[test]
    fn two_ranks_are_dealt_adaptively_unless_told_and_each_partition_gets_a_run() {
        let ids = |p: &[Planned]| p.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        let default = plan(&["--no-independent"]);
        assert_eq!(ids(&default), ["ws1_bs16", "ws2_bs32"]);
        assert_eq!(flag(&default[1], "--partition"), Some("adaptive"));
        let both = plan(&["--partition", "balanced,adaptive", "--no-independent"]);
        assert_eq!(ids(&both), ["ws1_bs16", "ws2_bs32", "ws2_bs32_adaptive"]);
        assert_eq!(flag(&both[1], "--partition"), Some("balanced"));
        assert!(both.iter().map(|p| p.reference).eq([true, true, false]));
    }

    #[test]
    fn each_world_size_above_one_also_runs_as_independent_one_rank_copies() {
        let p = plan(&["--world-sizes", "1,2,4"]);
        let ids: Vec<&str> = p.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            ["ws1_bs16", "ws2_bs32", "ws4_bs64", "ws2_bs32_independent", "ws4_bs64_independent"]
        );
        let copies = &p[4];
        // Four ranks, each training the one-rank run's batch on its own, with no reference.
        assert_eq!((copies.world_size, copies.reference), (4, false));
        assert_eq!(flag(copies, "--batch-size"), Some("16"));
        assert!(copies.args.iter().any(|a| a == "--independent"));
        assert!(flag(copies, "--world-size").is_none() && flag(copies, "--partition").is_none());
        // Every configuration trains the same examples for as many epochs.
        for f in ["--n-epochs", "--train-examples", "--preset", "--dataset", "--threads"] {
            assert!(p.iter().all(|x| flag(x, f) == flag(&p[0], f)), "{f}");
        }
        assert_eq!(plan(&["ws2"]).len(), 2, "the filter keeps ws2_bs32 and its copies");
    }

    #[test]
    fn the_one_rank_baseline_rotates_cores_only_when_it_takes_turns_on_one_thread() {
        let rotates = |flags: &[&str]| {
            let p = plan(flags);
            assert!(flag(p.last().unwrap(), "--rotate-cores").is_none(), "ranks never rotate");
            flag(&p[0], "--rotate-cores").map(|n| n.parse::<usize>().unwrap())
        };
        // Over the cores that the 2-rank configuration's ranks are bound to, where there are two.
        let two = (crate::gate::usable_cores().len() > 1).then_some(2);
        assert_eq!(rotates(&[]), two);
        assert_eq!(rotates(&["--world-sizes", "1,2"]), two);
        assert_eq!(rotates(&["--baseline-on-first-core"]), None);
        assert_eq!(rotates(&["--turn-examples", "0"]), None);
        assert_eq!(rotates(&["--threads", "2"]), None);
    }

    #[test]
    fn across_hosts_the_reference_runs_one_rank_only_and_nothing_takes_turns() {
        let across = ["--launcher", "mpiexec -launcher fork -hosts h1,h2 -ppn 1"];
        let p = plan(&across);
        // The reference starts its ranks on this host: it cannot be the 2-rank comparison.
        assert!(p.iter().map(|p| p.reference).eq([true, false, false]));
        assert!(flag(&p[0], "--rotate-cores").is_none(), "the baseline is not moved over cores");
        let args = BenchArgs::parse_from(["data_parallel"].iter().chain(&across));
        assert!(args.spans_hosts() && args.budget().is_none(), "no budget: no turns");
        assert_eq!((args.epochs(), args.train_examples()), (13, 5000), "the fixed plan");
        let trainer = ["--trainer", "python train.py {world_size}"];
        let own = BenchArgs::parse_from(["data_parallel"].iter().chain(&across).chain(&trainer));
        assert!(!own.spans_hosts(), "a --trainer starts its own ranks");
    }

    #[test]
    fn the_time_budget_and_the_sizes_follow_the_mode() {
        let sizes = |flags: &[&str]| {
            let a = BenchArgs::parse_from(["data_parallel"].iter().chain(flags));
            (a.budget().map(|b| b.as_secs()), a.epochs(), a.train_examples(), a.reference_epochs())
        };
        assert_eq!(sizes(&[]), (Some(600), 60, 1280, 30), "the default: ten minutes");
        assert_eq!(sizes(&["--quick"]), (None, 4, 512, 4), "CI's size, no budget");
        assert_eq!(sizes(&["--time-budget", "0"]), (None, 13, 5000, 6), "the fixed plan");
        assert_eq!(sizes(&["--time-budget", "1h", "--epochs", "90"]), (Some(3600), 90, 1280, 30));
        let gate = BenchArgs::try_parse_from(["data_parallel", "--fail-on-regression"]);
        assert!(gate.unwrap_err().to_string().contains("--baseline"), "the gate needs a baseline");
        let narrow = BenchArgs::parse_from(["data_parallel", "--target-width", "0"]);
        assert!(narrow.validate().is_err());
    }
}
