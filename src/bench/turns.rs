//! Runs that take turns, epoch by epoch: every run starts at once, and each waits before each
//! epoch at a gate (`crate::gate`) that this controller opens for one run at a time — epoch 0 of
//! each run, then epoch 1 of each, and so on. Runs that also stop within epochs
//! (`--turn-examples`) take turns part by part: part 0 of epoch 0 of each, part 1 of each, …, then
//! epoch 1; a run whose epoch has fewer parts sits the rest of the epoch's turns out. The
//! machine's drift in speed then falls on every run alike, and epoch `j` of one run is comparable
//! with epoch `j` of another (the analysis pairs them), at the cost of one warm-up epoch per run,
//! not one per turn.

use crate::gate::{Controller, Stop};
use indicatif::ProgressBar;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

/// One run: `command` (a launcher of `ranks` ranks, without `--epoch-gate`), gated in `gate`.
pub struct Turn {
    pub id: String,
    pub ranks: usize,
    pub command: Command,
    pub gate: PathBuf,
}

struct Running {
    id: String,
    ranks: usize,
    child: Child,
    gate: Controller,
    errors: Option<JoinHandle<Vec<String>>>,
    lines: Option<JoinHandle<()>>,
    failed: Option<anyhow::Error>,
    /// Longest wait for one turn (or for the run to reach its first gate).
    stall: Duration,
}

/// How runs take turns.
#[derive(Debug, Clone, Copy)]
pub struct TurnOptions {
    /// Epochs of every run.
    pub epochs: usize,
    /// Stop within epochs every this many examples (`dp-bench --turn-examples`); `None`, turns
    /// only between epochs.
    pub turn_examples: Option<usize>,
    /// A run that makes no progress for this long — does not reach its next gate or end — is
    /// stopped and reported as stalled, so a hung rank cannot hold the others forever.
    pub stall_timeout: Duration,
}

/// The benches' options for taking turns (flattened into each bench's own).
#[derive(Debug, Clone, clap::Args)]
pub struct TurnArgs {
    /// Within each epoch, the runs also take turns every N training examples (`dp-bench
    /// --turn-examples`: 20 steps of a batch of 16, 10 of 32), so a slow spell of the machine
    /// shorter than an epoch falls on all of them alike; time stopped is not training time.
    /// 0: turns only between epochs
    #[arg(long, default_value_t = 320, value_name = "N")]
    pub turn_examples: usize,
    /// Stop a run that makes no progress for this many seconds (does not finish its turn, or
    /// does not start) and report it as stalled; the others go on
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub stall_timeout: u64,
}

impl TurnArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.stall_timeout > 0, "--stall-timeout must be at least 1 second");
        Ok(())
    }

    /// How runs of `epochs` epochs take turns.
    pub fn options(&self, epochs: usize) -> TurnOptions {
        TurnOptions {
            epochs,
            turn_examples: Some(self.turn_examples).filter(|&n| n > 0),
            stall_timeout: Duration::from_secs(self.stall_timeout),
        }
    }
}

/// Starts `command` with its output read by two threads: one advancing `bar` on each `epoch …`
/// line of standard output, one collecting standard error (returned when the child has exited).
pub(crate) fn spawn_reporting(
    mut command: Command,
    id: &str,
    bar: &ProgressBar,
) -> anyhow::Result<(Child, JoinHandle<Vec<String>>, JoinHandle<()>)> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("{id}: cannot start {program}: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        std::io::BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>()
    });
    let stdout = child.stdout.take().expect("piped");
    let bar = bar.clone();
    let lines = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("epoch ") {
                bar.inc(1);
            }
        }
    });
    Ok((child, errors, lines))
}

/// Where a run stopped after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turned {
    /// At the next part of the same epoch.
    More,
    /// At the next epoch, or, after its last, ended.
    EpochDone,
}

/// How often the controller looks at its runs.
const POLL: Duration = Duration::from_millis(20);

impl Running {
    fn start(turn: Turn, options: &TurnOptions, bar: &ProgressBar) -> anyhow::Result<Self> {
        let Turn { id, ranks, mut command, gate } = turn;
        let gate = Controller::new(&gate)
            .map_err(|e| anyhow::anyhow!("{id}: gate directory {}: {e}", gate.display()))?;
        command.arg("--epoch-gate").arg(&gate.dir);
        if let Some(n) = options.turn_examples {
            command.arg("--turn-examples").arg(n.to_string());
        }
        let (child, errors, lines) = spawn_reporting(command, &id, bar)?;
        Ok(Running {
            id,
            ranks,
            child,
            gate,
            errors: Some(errors),
            lines: Some(lines),
            failed: None,
            stall: options.stall_timeout,
        })
    }

    /// Until `check` gives a value; `None` if the run exits successfully first and `may_end`,
    /// an error if it exits otherwise or stalls.
    fn wait_for<T>(
        &mut self,
        what: &str,
        may_end: bool,
        check: impl Fn(&Controller) -> Option<T>,
    ) -> anyhow::Result<Option<T>> {
        let since = std::time::Instant::now();
        loop {
            if let Some(value) = check(&self.gate) {
                return Ok(Some(value));
            }
            if let Some(status) = self.child.try_wait()? {
                if may_end && status.success() {
                    return Ok(None);
                }
                anyhow::bail!("exited ({status}) {what}: {}", self.stderr().join(" | "));
            }
            anyhow::ensure!(
                since.elapsed() < self.stall,
                "stalled {what}: no progress for {:.0} s (the stall timeout), so it was stopped",
                self.stall.as_secs_f64()
            );
            std::thread::sleep(POLL);
        }
    }

    /// One turn, at `stop` of a run of `epochs` epochs: waits for every rank at its gate, opens
    /// it, and waits until the run stops again — at the epoch's next part (`More`), or at the next
    /// epoch, or, after the last, ended (`EpochDone`).
    fn turn(&mut self, stop: Stop, epochs: usize) -> anyhow::Result<Turned> {
        let (ranks, Stop { epoch, part }) = (self.ranks, stop);
        let at = |s: Stop| move |g: &Controller| g.all_ready(s, ranks).then_some(());
        self.wait_for(&format!("before epoch {epoch} part {part}"), false, at(stop))?;
        self.gate.open(stop)?;
        let (next_part, next_epoch) = (Stop { epoch, part: part + 1 }, Stop::epoch(epoch + 1));
        let last = epoch + 1 == epochs;
        let turned = self.wait_for(&format!("in epoch {epoch}"), last, |g| {
            if g.all_ready(next_part, ranks) {
                Some(Turned::More)
            } else {
                (!last && g.all_ready(next_epoch, ranks)).then_some(Turned::EpochDone)
            }
        })?;
        Ok(turned.unwrap_or(Turned::EpochDone))
    }

    /// Ends the run before epoch `epoch`, where every rank waits (`Turned::EpochDone`): its ranks
    /// train no more epochs and the run finishes; waits until it has.
    fn end(&mut self, epoch: usize) -> anyhow::Result<()> {
        let ranks = self.ranks;
        let at = |g: &Controller| g.all_ready(Stop::epoch(epoch), ranks).then_some(());
        self.wait_for(&format!("before epoch {epoch}"), true, at)?;
        self.gate.end(epoch)?;
        // Nothing to wait for but the run's successful exit.
        self.wait_for(&format!("ending before epoch {epoch}"), true, |_| None::<()>)?;
        Ok(())
    }

    /// The run's standard error, once it has exited.
    fn stderr(&mut self) -> Vec<String> {
        self.errors.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }

    /// Records the run's failure and ends it now, so it takes nothing from the others' turns.
    fn fail(&mut self, error: anyhow::Error) {
        self.failed = Some(error);
        terminate(&mut self.child);
    }

    /// Joins the run's reader threads and removes its gate directory.
    fn finish(mut self) -> (String, anyhow::Result<()>) {
        let _ = self.lines.take().map(JoinHandle::join);
        let _ = self.stderr();
        let _ = std::fs::remove_dir_all(&self.gate.dir);
        (self.id, self.failed.map_or(Ok(()), Err))
    }
}

/// Ends `child` unless it has ended: SIGTERM, which mpirun forwards to its ranks (SIGKILL would
/// orphan them), then waits for it.
fn terminate(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        // SAFETY: a signal to our own child, which has not been reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = child.wait();
    }
}

/// Runs `command` to its end, its output reported as [`spawn_reporting`] does, calling `watch`
/// every `poll` while it runs. An error from `watch` stops the run ([`terminate`]) and is
/// returned; otherwise the run's exit status and standard error.
pub(crate) fn run_reporting(
    command: Command,
    id: &str,
    bar: &ProgressBar,
    poll: Duration,
    mut watch: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(std::process::ExitStatus, Vec<String>)> {
    let (mut child, errors, lines) = spawn_reporting(command, id, bar)?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Ok(status);
        }
        if let Err(e) = watch() {
            terminate(&mut child);
            break Err(e);
        }
        std::thread::sleep(poll);
    };
    let _ = lines.join();
    let errors = errors.join().unwrap_or_default();
    Ok((status?, errors))
}

/// Runs `turns` one after another, each launched whole and never stopped at a gate: runs across
/// hosts, whose ranks may not see this machine's gates in time. `bar` advances with each
/// finished epoch; a run with no finished epoch for `stall` is stopped and reported as stalled.
/// Returns each run's id and outcome, in the order given.
pub fn run_one_after_another(
    turns: Vec<Turn>,
    stall: Duration,
    bar: &ProgressBar,
) -> Vec<(String, anyhow::Result<()>)> {
    let whole = |turn: Turn| -> anyhow::Result<()> {
        bar.set_prefix(turn.id.clone());
        let (mut epochs, mut since) = (bar.position(), std::time::Instant::now());
        let (status, errors) = run_reporting(turn.command, &turn.id, bar, POLL, || {
            if bar.position() != epochs {
                (epochs, since) = (bar.position(), std::time::Instant::now());
            }
            anyhow::ensure!(
                since.elapsed() < stall,
                "stalled: no epoch finished for {:.0} s (the stall timeout), so it was stopped",
                stall.as_secs_f64()
            );
            Ok(())
        })?;
        anyhow::ensure!(status.success(), "exited ({status}): {}", errors.join(" | "));
        Ok(())
    };
    turns.into_iter().map(|turn| (turn.id.clone(), whole(turn))).collect()
}

/// Runs `turns` side by side for up to `options.epochs` epochs each, one epoch at a time in the
/// order given — with `options.turn_examples`, one part of an epoch at a time; `bar` advances
/// with each finished epoch. After every epoch of all runs, `go_on(epoch)` says whether they
/// train another; when it says no, every run ends there. A run that fails or stalls is stopped
/// and reported with its reason; the others go on. Returns each run's id and outcome, in the
/// order given.
pub fn run_in_turns(
    turns: Vec<Turn>,
    options: &TurnOptions,
    bar: &ProgressBar,
    go_on: &mut dyn FnMut(usize) -> bool,
) -> Vec<(String, anyhow::Result<()>)> {
    let epochs = options.epochs;
    let mut runs: Vec<Result<Running, (String, anyhow::Error)>> = turns
        .into_iter()
        .map(|turn| {
            let id = turn.id.clone();
            Running::start(turn, options, bar).map_err(|e| (id, e))
        })
        .collect();
    for epoch in 0..epochs {
        // Part by part, each run's part in turn, until every run has finished the epoch.
        let mut in_epoch: Vec<bool> = runs.iter().map(|r| r.is_ok()).collect();
        for part in 0.. {
            let mut any = false;
            for (run, going) in runs.iter_mut().zip(&mut in_epoch) {
                let Ok(run) = run else { continue };
                if !*going || run.failed.is_some() {
                    continue;
                }
                bar.set_prefix(run.id.clone());
                match run.turn(Stop { epoch, part }, epochs) {
                    Ok(Turned::More) => any = true,
                    Ok(Turned::EpochDone) => *going = false,
                    Err(e) => run.fail(e),
                }
            }
            if !any {
                break;
            }
        }
        if epoch + 1 < epochs && !go_on(epoch) {
            for run in runs.iter_mut().flatten().filter(|r| r.failed.is_none()) {
                if let Err(e) = run.end(epoch + 1) {
                    run.fail(e);
                }
            }
            break;
        }
    }
    runs.into_iter()
        .map(|run| match run {
            Ok(run) => run.finish(),
            Err((id, e)) => (id, Err(e)),
        })
        .collect()
}
