//! Runs that take turns, epoch by epoch: every run starts at once, and each waits before each
//! epoch at a gate (`crate::gate`) that this controller opens for one run at a time — epoch 0 of
//! each run, then epoch 1 of each, and so on. The machine's drift in speed over minutes then falls
//! on every run alike, and epoch `j` of one run is comparable with epoch `j` of another (the
//! analysis pairs them), at the cost of one warm-up epoch per run, not one per turn.

use crate::gate::Controller;
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

/// How often the controller looks at its runs.
const POLL: Duration = Duration::from_millis(20);

impl Running {
    fn start(turn: Turn, bar: &ProgressBar) -> anyhow::Result<Self> {
        let Turn { id, ranks, mut command, gate } = turn;
        let gate = Controller::new(&gate)
            .map_err(|e| anyhow::anyhow!("{id}: gate directory {}: {e}", gate.display()))?;
        command.arg("--epoch-gate").arg(&gate.dir);
        let (child, errors, lines) = spawn_reporting(command, &id, bar)?;
        Ok(Running {
            id,
            ranks,
            child,
            gate,
            errors: Some(errors),
            lines: Some(lines),
            failed: None,
        })
    }

    /// Until `done` holds; an error when the run exits first.
    fn wait_for(&mut self, what: &str, done: impl Fn(&Controller) -> bool) -> anyhow::Result<()> {
        loop {
            if done(&self.gate) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("exited ({status}) {what}: {}", self.stderr().join(" | "));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Epoch `epoch` of `epochs`: waits for every rank at its gate, opens it, and waits until
    /// the epoch is done (every rank at the next gate, or, after the last, the run ended).
    fn turn(&mut self, epoch: usize, epochs: usize) -> anyhow::Result<()> {
        let ranks = self.ranks;
        self.wait_for(&format!("before epoch {epoch}"), |g| g.all_ready(epoch, ranks))?;
        self.gate.open(epoch)?;
        if epoch + 1 < epochs {
            return self.wait_for(&format!("in epoch {epoch}"), |g| g.all_ready(epoch + 1, ranks));
        }
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "failed ({status}): {}", self.stderr().join(" | "));
        Ok(())
    }

    /// The run's standard error, once it has exited.
    fn stderr(&mut self) -> Vec<String> {
        self.errors.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }

    /// Ends the run (after a failure of the controller's), and joins its reader threads.
    fn finish(mut self) -> (String, anyhow::Result<()>) {
        if self.failed.is_some() && self.child.try_wait().ok().flatten().is_none() {
            // SIGTERM, which mpirun forwards to its ranks (SIGKILL would orphan them).
            // SAFETY: a signal to our own child, which has not been reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        let _ = self.lines.take().map(JoinHandle::join);
        let _ = self.stderr();
        let _ = std::fs::remove_dir_all(&self.gate.dir);
        (self.id, self.failed.map_or(Ok(()), Err))
    }
}

/// Runs `turns` side by side for `epochs` epochs each, one epoch at a time in the order given;
/// `bar` advances with each finished epoch. A run that fails is reported with its reason; the
/// others go on. Returns each run's id and outcome, in the order given.
pub fn run_in_turns(
    turns: Vec<Turn>,
    epochs: usize,
    bar: &ProgressBar,
) -> Vec<(String, anyhow::Result<()>)> {
    let mut runs: Vec<Result<Running, (String, anyhow::Error)>> = turns
        .into_iter()
        .map(|turn| {
            let id = turn.id.clone();
            Running::start(turn, bar).map_err(|e| (id, e))
        })
        .collect();
    for epoch in 0..epochs {
        for run in runs.iter_mut().flatten().filter(|r| r.failed.is_none()) {
            bar.set_message(run.id.clone());
            if let Err(e) = run.turn(epoch, epochs) {
                run.failed = Some(e);
            }
        }
    }
    runs.into_iter()
        .map(|run| match run {
            Ok(run) => run.finish(),
            Err((id, e)) => (id, Err(e)),
        })
        .collect()
}
