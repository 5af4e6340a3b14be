//! Runs a benchmark: each configuration as its own `mpirun -n N dp-bench …` into its own run
//! directory, with a progress bar over all epochs, then the analysis and every report. Used by
//! the `data_parallel` bench target; `compare` reuses the analysis and reports on existing runs.

use super::analysis;
use super::device::measure_peak;
use super::plan::{BenchArgs, Planned};
use super::report::{self, Outputs, Publish};
use super::run_data::RunData;
use super::sampling::{self, Ended, Sampler, Sampling};
use super::summary::Summary;
use super::turns::{run_in_turns, run_one_after_another, Turn};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The options that name a hostfile, and those that list hosts, as MPICH's and Open MPI's
/// launchers spell them.
pub(crate) const HOSTFILE: [&str; 5] =
    ["-f", "-hostfile", "--hostfile", "-machinefile", "--machinefile"];
pub(crate) const HOST_LIST: [&str; 4] = ["-hosts", "--hosts", "-host", "--host"];

/// A launcher as written (`--launcher 'mpirun -f hosts'`, `--launcher srun`), its words split as
/// a shell splits them: the program, then the options that place ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct Launcher {
    words: Vec<String>,
}

impl Launcher {
    pub fn parse(spec: &str) -> anyhow::Result<Launcher> {
        let words = shlex::split(spec).filter(|w| !w.is_empty()).ok_or_else(|| {
            anyhow::anyhow!(
                "--launcher {spec:?} does not split into words as a shell would (an unclosed \
                 quote?): write it as you would type it, e.g. 'mpirun -f hosts'"
            )
        })?;
        Ok(Launcher { words })
    }

    /// [`Launcher::parse`], or, for a spec that does not split (refused by [`check_launcher`]
    /// before any command is made), the spec as one word.
    pub(crate) fn lenient(spec: &str) -> Launcher {
        Launcher::parse(spec).unwrap_or(Launcher { words: vec![spec.to_string()] })
    }

    fn program(&self) -> &str {
        &self.words[0]
    }

    fn named(&self, name: &str) -> bool {
        Path::new(self.program()).file_name().is_some_and(|n| n == name)
    }

    /// The value given to the first of `names` among the launcher's options, as the next word
    /// (`-f hosts`) or after `=` (`--hostfile=hosts`).
    pub(crate) fn value(&self, names: &[&str]) -> Option<&str> {
        let words = &self.words[1..];
        words.iter().enumerate().find_map(|(i, w)| {
            names.iter().find_map(|name| match w.strip_prefix(name) {
                Some("") => words.get(i + 1).map(String::as_str),
                Some(rest) => rest.strip_prefix('='),
                None => None,
            })
        })
    }

    /// Slurm's `srun`, which counts ranks as tasks.
    pub fn is_srun(&self) -> bool {
        self.named("srun")
    }

    /// Whether it may place ranks on hosts other than this one: `srun` (an allocation), or an
    /// MPI launcher given hosts or a hostfile. Ranks elsewhere are neither bound to this
    /// machine's cores nor limited by them.
    pub fn spans_hosts(&self) -> bool {
        self.is_srun() || self.value(&HOSTFILE).is_some() || self.value(&HOST_LIST).is_some()
    }

    /// The command that starts `n` ranks, the rank count spelled as this launcher spells it:
    /// `--ntasks=N` for srun (with the PMI it lists, asked with `srun --mpi=list`), `-n N` for
    /// mpirun and mpiexec (Open MPI also told it may run as root and place more ranks than
    /// cores).
    pub fn command(&self, n: usize) -> Command {
        let mut cmd = Command::new(self.program());
        cmd.args(&self.words[1..]);
        if self.is_srun() {
            if let Some(pmi) = srun_pmi(self.program()) {
                cmd.arg(format!("--mpi={pmi}"));
            }
            cmd.arg(format!("--ntasks={n}"));
            return cmd;
        }
        let version = Command::new(self.program()).arg("--version").output();
        if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Open MPI")) {
            cmd.args(["--allow-run-as-root", "--oversubscribe"]);
        }
        cmd.arg("-n").arg(n.to_string());
        cmd
    }
}

/// The PMI `srun` should give MPI ranks, from what `srun --mpi=list` says it has: pmi2 (MPICH's)
/// before pmix (Open MPI's); none where it lists neither (or cannot be asked).
fn srun_pmi(srun: &str) -> Option<&'static str> {
    let out = Command::new(srun).arg("--mpi=list").output().ok()?;
    let listed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let has = |name: &str| listed.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == name);
    ["pmi2", "pmix"].into_iter().find(|p| has(p))
}

/// The launcher command for `n` ranks, from `--launcher`'s words ([`Launcher::lenient`]).
pub fn launcher(spec: &str, n: usize) -> Command {
    Launcher::lenient(spec).command(n)
}

/// Where a shell would find the program `name`: a path when it holds a `/` (relative to the
/// current directory), else the first executable file of that name on `PATH`.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        return Some(PathBuf::from(name)).filter(|p| runnable(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| runnable(p))
}

/// Refuses a launcher that does not split into words or whose program is not there, naming
/// where it came from and the fix.
pub(crate) fn check_launcher(spec: &str) -> anyhow::Result<Launcher> {
    let launcher = Launcher::parse(spec)?;
    anyhow::ensure!(
        find_program(launcher.program()).is_some(),
        "the launcher {:?} is not found (--launcher or --mpirun, or DP_BENCH_LAUNCHER or \
         DP_BENCH_MPIRUN): install MPICH (scripts/setup.sh does) or name an mpirun, mpiexec or \
         srun",
        launcher.program()
    );
    Ok(launcher)
}

/// The reference's interpreter named by `--python` (or `DP_BENCH_PYTHON`), found as a shell
/// would find it — `python3` through `PATH`, `.venv/bin/python` from here — and able to
/// `import torch`; otherwise an error naming it, never a silently skipped reference.
pub(crate) fn check_python(named: &Path) -> anyhow::Result<PathBuf> {
    let name = named.to_string_lossy();
    let found = find_program(&name).ok_or_else(|| {
        anyhow::anyhow!(
            "--python {name:?} (or DP_BENCH_PYTHON) is not found: name an interpreter on PATH \
             or its path (scripts/setup.sh makes .venv/bin/python), or pass --no-reference"
        )
    })?;
    let out = Command::new(&found).args(["-c", "import torch"]).output();
    let why = match out {
        Ok(o) if o.status.success() => return Ok(found),
        Ok(o) => String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_string(),
        Err(e) => e.to_string(),
    };
    anyhow::bail!(
        "--python {name:?} ({}) cannot import torch ({why}): install torch into it, name the \
         interpreter that has it (.venv/bin/python), or pass --no-reference",
        found.display()
    )
}

/// Whether `n` ranks of `threads` intra-op threads get cores of their own (`threads` each) and
/// are bound to them: CPU ranks, where there are enough cores. A GPU rank is not: it shares its
/// core with NCCL's proxy thread and, compiled, Inductor's workers, which a binding to one core
/// would starve.
pub(crate) fn bound(n: usize, threads: usize, cpu: bool) -> bool {
    cpu && n * threads.max(1) <= std::thread::available_parallelism().map_or(1, |c| c.get())
}

/// `launcher` with each rank bound to `threads` cores of its own where [`bound`]: CPU ranks
/// that the scheduler moves around lose their caches and meet each other on one core (measured:
/// ~4 % off a 2-rank epoch here, see BENCHMARKS.md). MPICH spells `threads` cores a rank
/// `-bind-to core:T`, Open MPI `--map-by slot:PE=T --bind-to core`.
pub(crate) fn bound_launcher(spec: &str, n: usize, threads: usize, cpu: bool) -> Command {
    let launcher = Launcher::lenient(spec);
    let mut cmd = launcher.command(n);
    // Never a binding that names this machine's cores when ranks may run elsewhere.
    if bound(n, threads, cpu) && !launcher.spans_hosts() {
        let open_mpi = cmd.get_args().any(|a| a == "--allow-run-as-root");
        match (open_mpi, threads.max(1)) {
            (true, 1) => cmd.args(["--bind-to", "core"]),
            (true, t) => cmd.args(["--map-by", &format!("slot:PE={t}"), "--bind-to", "core"]),
            (false, 1) => cmd.args(["-bind-to", "core"]),
            (false, t) => cmd.args(["-bind-to", &format!("core:{t}")]),
        };
    }
    cmd
}

/// Where `cargo bench` writes: `target/criterion` (honouring `CARGO_TARGET_DIR`).
pub fn criterion_dir(manifest_dir: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("target"))
        .join("criterion")
}

/// dp-bench's configurations, side by side and taking turns, under `budget` when there is one:
/// the runs that finished (in the plan's order), the ids of those that failed, and how sampling
/// ended.
fn run_configurations(
    args: &BenchArgs,
    binary: &Path,
    (plan, runs_dir): (&[Planned], &Path),
    budget: Option<Duration>,
    bar: &ProgressBar,
) -> (Vec<RunData>, Vec<String>, Option<(Ended, Duration)>) {
    let turns = plan
        .iter()
        .map(|p| {
            let cpu = p.args.windows(2).all(|w| !(w[0] == "--device" && w[1] == "cuda"));
            let mut command = bound_launcher(&args.run.mpirun, p.world_size, args.run.threads, cpu);
            command.arg(binary).args(&p.args).arg("--workdir").arg(runs_dir.join(&p.id));
            Turn {
                id: p.id.clone(),
                ranks: p.world_size,
                command,
                gate: runs_dir.join(format!(".gate-{}", p.id)),
            }
        })
        .collect();
    let mut sampler = budget.map(|b| Sampler::new(args, (plan, runs_dir), b, bar));
    let mut go_on = |epoch: usize| sampler.as_mut().is_none_or(|s| s.go_on(epoch));
    let options = args.turns.options(args.epochs());
    let outcomes = match args.spans_hosts() {
        true => run_one_after_another(turns, options.stall_timeout, bar),
        false => run_in_turns(turns, &options, bar, &mut go_on),
    };
    let ended = sampler.map(Sampler::finish);
    let (mut runs, mut failures) = (Vec::new(), Vec::new());
    for (id, outcome) in outcomes {
        if let Err(e) = outcome {
            bar.suspend(|| eprintln!("data_parallel/{id}: FAILED: {e:#}"));
            failures.push(id);
        }
    }
    for p in plan {
        if failures.contains(&p.id) {
            continue;
        }
        match RunData::load(&runs_dir.join(&p.id)) {
            Ok(run) => runs.push(run),
            Err(e) => {
                bar.suspend(|| eprintln!("data_parallel/{}: FAILED: {e:#}", p.id));
                failures.push(p.id.clone());
            }
        }
    }
    (runs, failures, ended)
}

/// The whole benchmark: run, analyse, report. `binary` is `dp-bench`, `root` the project root.
/// The machine was checked before ([`BenchArgs::check_machine`], with the arguments in the
/// bench's `main`, so that a refusal exits 2): its launcher, its interpreter's torch (an import
/// of a few seconds) and its cores are not asked again here.
pub fn run_bench(args: &BenchArgs, binary: &Path, root: &Path) -> anyhow::Result<Summary> {
    args.validate()?;
    if let Some(command) = &args.trainer {
        return run_trainer_bench(args, command, root);
    }
    let devices = args.devices()?;
    let plan = args.plan(&devices);
    anyhow::ensure!(!plan.is_empty(), "no configuration matches the filter {:?}", args.filter);
    let out_dir = criterion_dir(root).join("data_parallel");
    let runs_dir = out_dir.join("runs");
    // A named interpreter was checked with the machine, and is found as it was there; the
    // default may be absent (skipped).
    let python = match &args.python {
        Some(named) => find_program(&named.to_string_lossy()).unwrap_or_else(|| named.clone()),
        None => root.join(".venv/bin/python"),
    };
    let reference = !args.no_reference && python.exists();
    let variants = args.reference_variants().len();
    let references =
        if reference { variants * plan.iter().filter(|p| p.reference).count() } else { 0 };
    let budget = args.budget();
    println!("data_parallel: {}", devices.describe());
    // Measured before any run starts, on an idle device.
    let peak = measure_peak(devices.device, args.precision);
    println!(
        "data_parallel: matrix-product peak {:.1} GFLOP/s ({}), what MFU is a share of",
        peak.flops_per_sec / 1e9,
        peak.measured
    );
    if let Some(b) = budget {
        println!(
            "data_parallel: a time budget of {} ({} for the PyTorch reference), sampling until \
             every speedup's interval is within ±{:.1} %; epochs of {} examples, so that more \
             epoch pairs fit in it",
            sampling::clock(b.as_secs_f64()),
            if reference {
                format!("{:.0} %", sampling::REFERENCE_SHARE * 100.0)
            } else {
                "none".into()
            },
            args.target_width * 100.0,
            args.train_examples()
        );
    }
    if args.spans_hosts() {
        across_hosts(args, binary, &plan, &runs_dir)?;
    }
    let epochs = plan.len() * args.epochs() + references * args.reference_epochs();
    let bar = epoch_bar(epochs);
    let ours_budget = budget.map(|b| match reference {
        true => b.mul_f64(1.0 - sampling::REFERENCE_SHARE),
        false => b,
    });
    // A configuration that fails is reported with its reason; the others are still analysed.
    let (mut runs, mut failures, ended) =
        run_configurations(args, binary, (&plan, &runs_dir), ours_budget, &bar);
    if reference {
        let paths = (binary, root, python.as_path());
        let out = (&mut runs, &mut failures);
        super::reference::run_references(args, paths, (&plan, &runs_dir), budget, out, &bar);
    } else if !args.no_reference {
        eprintln!("data_parallel: no {} for the PyTorch reference: skipped", python.display());
    }
    bar.finish_and_clear();
    anyhow::ensure!(!runs.is_empty(), "every configuration failed: {}", failures.join(", "));
    let mut summary = analysis::analyse(&runs, args.run.warmup, args.run.confidence)?;
    summary.set_peak(peak);
    summary.sampling = ended.zip(budget).map(|((ended_by, elapsed), budget)| Sampling {
        ended_by,
        widest: sampling::widest(&summary),
        target_width: args.target_width,
        budget_s: budget.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        pairs: summary.speedup.iter().map(|s| s.paired_epochs).max().unwrap_or(0),
        epochs: (summary.configs.iter())
            .filter(|c| c.implementation == crate::metrics::IMPLEMENTATION)
            .map(|c| c.epochs_measured)
            .max()
            .unwrap_or(0),
    });
    publish(args, root, &summary, &failures)?;
    Ok(summary)
}

/// Before configurations run across hosts: every rank of the largest must see the runs
/// directory ([`super::hosts::check_shared`], refused otherwise), and where they sit is said.
fn across_hosts(
    args: &BenchArgs,
    binary: &Path,
    plan: &[Planned],
    runs_dir: &Path,
) -> anyhow::Result<()> {
    let largest = plan.iter().map(|p| p.world_size).max().unwrap_or(1);
    let places = super::hosts::check_shared(&args.launcher(), binary, runs_dir, largest)?;
    let hosts: Vec<String> = places.iter().map(|p| p.host.clone()).collect();
    let nodes: Vec<usize> = places.iter().map(|p| p.node).collect();
    let names: Vec<&str> = crate::hosts::tally(hosts.iter().map(|h| (h.as_str(), 1)))
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    println!(
        "data_parallel: across hosts (`{}`): {largest} ranks sit on {} ({}), and all see {}; the \
         configurations run one after another, each launched whole, with no time budget",
        args.run.mpirun,
        crate::hosts::describe(&crate::hosts::ranks_per_node(&hosts, Some(&nodes))),
        names.join(", "),
        runs_dir.display()
    );
    Ok(())
}

/// A progress bar over `epochs` epochs.
fn epoch_bar(epochs: usize) -> ProgressBar {
    ProgressBar::new(epochs as u64).with_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:40}] {pos}/{len} epochs {elapsed_precise} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    )
}

/// The bench of the user's own training command (`--trainer`): one run per world size, one
/// after another, then the same analysis and reports as dp-bench's own configurations get.
fn run_trainer_bench(args: &BenchArgs, command: &str, root: &Path) -> anyhow::Result<Summary> {
    let devices = args.devices()?;
    let plan = args.trainer_plan(&devices);
    anyhow::ensure!(!plan.is_empty(), "no configuration matches the filter {:?}", args.filter);
    let runs_dir = criterion_dir(root).join("data_parallel").join("runs");
    println!(
        "data_parallel: your trainer, `{command}`, at world sizes {} ({} per device), {} epochs \
         each, one run after another{}",
        plan.iter().map(|p| p.world_size.to_string()).collect::<Vec<_>>().join(", "),
        devices.batch,
        args.trainer_epochs(),
        if args.time_budget.is_some() {
            " (--time-budget applies to dp-bench's own runs only)"
        } else {
            ""
        }
    );
    let bar = epoch_bar(plan.iter().map(|p| p.epochs).sum());
    let trainer_dir = args.trainer_dir.as_deref();
    let (runs, failures) = super::trainer::run_all(command, trainer_dir, (&plan, &runs_dir), &bar);
    bar.finish_and_clear();
    anyhow::ensure!(!runs.is_empty(), "every configuration failed: {}", failures.join(", "));
    let summary = analysis::analyse(&runs, args.run.warmup, args.run.confidence)?;
    publish(args, root, &summary, &failures)?;
    Ok(summary)
}

/// The reports of a finished bench, its baseline saved and compared, and its exit status: an
/// error when a configuration failed, or, with `--fail-on-regression`, regressed.
fn publish(
    args: &BenchArgs,
    root: &Path,
    summary: &Summary,
    failures: &[String],
) -> anyhow::Result<()> {
    let out_dir = criterion_dir(root).join("data_parallel");
    let baseline_file = |name: &str| out_dir.join("baselines").join(format!("{name}.json"));
    let baseline = match &args.baseline {
        Some(name) => Some(Summary::read(&baseline_file(name)).map_err(|e| {
            anyhow::anyhow!("baseline {name:?}: {e} (save one with --save-baseline {name})")
        })?),
        None => None,
    };
    let publish = Publish {
        baseline: args.baseline.as_deref().zip(baseline.as_ref()),
        outputs: Outputs { dir: out_dir.clone(), figures: root.join("submit/figures") },
        // The document's table is replaced only by a run in which every configuration ran.
        update_doc: args.update_doc.as_deref().filter(|_| failures.is_empty()),
    };
    let (_, changes) = report::publish(summary, &publish)?;
    report::write_index(&criterion_dir(root))?;
    if let Some(name) = &args.save_baseline {
        let path = baseline_file(name);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        crate::metrics::write_json(&path, summary)?;
        println!("saved baseline {name:?} to {}", path.display());
    }
    println!("figures: {}", publish.outputs.figures.display());
    anyhow::ensure!(
        failures.is_empty(),
        "configurations failed: {}{}",
        failures.join(", "),
        if args.update_doc.is_some() { " (the document's table is left as it was)" } else { "" }
    );
    if args.fail_on_regression {
        report::fail_on_regression(&changes, args.baseline.as_deref().unwrap_or("baseline"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(cmd: &Command) -> Vec<String> {
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|w| w.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_launcher_has_words_and_spells_the_rank_count_its_way() {
        let hostfile = Launcher::parse("mpiexec -f 'my hosts'").unwrap();
        assert!(hostfile.spans_hosts() && !hostfile.is_srun());
        assert_eq!(words(&hostfile.command(4)), ["mpiexec", "-f", "my hosts", "-n", "4"]);
        let fork = "mpiexec -launcher fork -hosts h1,h2 -ppn 1";
        assert!(Launcher::parse(fork).unwrap().spans_hosts());
        assert!(!Launcher::parse("mpirun").unwrap().spans_hosts());
        assert!(Launcher::parse("/opt/slurm/bin/srun --exclusive").unwrap().is_srun());
        // Bound only on this machine: with hosts, no -bind-to naming this machine's cores.
        let here = words(&bound_launcher("mpiexec", 1, 1, true));
        assert!(here.contains(&"-bind-to".to_string()), "{here:?}");
        let there = words(&bound_launcher(fork, 1, 1, true));
        assert!(!there.contains(&"-bind-to".to_string()), "{there:?}");
        assert!(Launcher::parse("  ").is_err() && Launcher::parse("'a").is_err());
    }

    /// A stand-in srun that answers `--mpi=list` as Slurm does: the PMI is found by asking.
    #[test]
    fn srun_is_given_the_pmi_it_lists_and_a_task_count() {
        let dir = tempfile::tempdir().unwrap();
        let srun = dir.path().join("srun");
        let script = "#!/bin/sh\n[ \"$1\" = --mpi=list ] && echo 'MPI plugin types are...' && echo '\tnone' && echo '\tpmi2' && echo '\tpmix'\nexit 0\n";
        std::fs::write(&srun, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&srun, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = format!("{} --exclusive", srun.display());
        let cmd = Launcher::parse(&spec).unwrap().command(3);
        assert_eq!(words(&cmd)[1..], ["--exclusive", "--mpi=pmi2", "--ntasks=3"]);
        assert_eq!(check_launcher(&spec).unwrap(), Launcher::parse(&spec).unwrap());
    }

    #[test]
    fn programs_are_found_as_a_shell_finds_them() {
        assert!(find_program("sh").is_some_and(|p| p.is_absolute()), "sh through PATH");
        assert_eq!(find_program("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_program("no-such-program-anywhere"), None);
        let plain = tempfile::NamedTempFile::new().unwrap();
        let plain = plain.path().to_str().unwrap();
        assert_eq!(find_program(plain), None, "a file that is not executable");
        assert_eq!(find_program(""), None);
        let err = check_python(Path::new("no-such-python")).unwrap_err().to_string();
        assert!(err.contains("\"no-such-python\"") && err.contains("is not found"), "{err}");
        // sh is found, and cannot import torch: named, never skipped.
        let err = check_python(Path::new("sh")).unwrap_err().to_string();
        assert!(err.contains("cannot import torch") && err.contains("--no-reference"), "{err}");
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        if venv.exists() {
            assert_eq!(check_python(&venv).unwrap(), venv);
        }
        assert!(bound(1, 1, true) && !bound(1, 1, false), "CPU ranks are bound, GPU ranks not");
        assert!(!bound(100_000, 1, true), "not more ranks than cores");
        let cores = std::thread::available_parallelism().unwrap().get();
        assert!(bound(1, cores, true) && !bound(2, cores, true), "nor more threads");
        if cores >= 2 {
            // A rank of two threads gets two cores, not one shared by both.
            let two = words(&bound_launcher("mpiexec", 1, 2, true));
            assert!(two.ends_with(&["-bind-to".to_string(), "core:2".to_string()]), "{two:?}");
        }
        let err = check_launcher("'unclosed").unwrap_err().to_string();
        assert!(err.contains("does not split into words"), "{err}");
        let err = check_launcher("no-such-mpirun").unwrap_err().to_string();
        assert!(err.contains("\"no-such-mpirun\" is not found") && err.contains("DP_BENCH_MPIRUN"));
    }
}
