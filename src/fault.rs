//! When a rank stops, the job ends whole and says once which rank, where, and why.
//!
//! Every rank keeps a one-line status file in the workdir (`.rank{r}.status`: the phase, epoch and
//! step it is in, or how it ended). A rank that can still speak speaks for itself: a panic (libtorch
//! errors, allocation failures inside libtorch) prints the rank and the epoch and aborts, and
//! SIGINT/SIGTERM end the rank with rank 0 saying where the run stopped and what was kept. A rank
//! that cannot (SIGKILL, the out-of-memory killer) is reported by a sentinel: one small process per
//! host (`dp-bench watch`, started by the host's first rank, in its own session so the launcher's
//! clean-up does not take it down) that waits on the host's ranks with pidfds and, when the first
//! of them vanishes without a word, names it from its status file. `mpirun` itself ends the job:
//! this module never launches or kills ranks.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// This rank's number and where it is, for messages from hooks and signal handlers.
static RANK: AtomicUsize = AtomicUsize::new(0);
static EPOCH: AtomicUsize = AtomicUsize::new(usize::MAX);
static STATUS: OnceLock<(File, PathBuf)> = OnceLock::new();
/// What this rank trains ("preset gpt2, 64 examples per rank of global batch 128, 128 positions,
/// bf16"), for the message
/// of a rank that runs out of memory.
static WORK: OnceLock<String> = OnceLock::new();

/// The status of a rank that already said why it stopped.
const REPORTED: &str = "reported";
/// The status of a rank that finished normally.
const DONE: &str = "done";

pub(crate) fn status_path(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!(".rank{rank}.status"))
}

/// Opens this rank's status file in `dir`.
pub(crate) fn open_status(dir: &Path, rank: usize) -> std::io::Result<()> {
    RANK.store(rank, Ordering::Relaxed);
    let file = File::create(status_path(dir, rank))?;
    let _ = STATUS.set((file, dir.to_path_buf()));
    set_status("setup");
    Ok(())
}

fn set_status(line: &str) {
    if let Some((file, _)) = STATUS.get() {
        // One pwrite at offset 0, padded so a shorter line fully replaces a longer one.
        let _ = file.write_all_at(format!("{line:<63}\n").as_bytes(), 0);
    }
}

/// Records that this rank is at `step` of `steps` in epoch `epoch`'s `phase`.
pub fn at(phase: &str, epoch: usize, step: usize, steps: usize) {
    EPOCH.store(epoch, Ordering::Relaxed);
    set_status(&format!("{phase} {epoch} {step} {steps}"));
}

/// Records that this rank stopped with an error it reported itself (or that rank 0 reported for
/// every rank), so the sentinel does not report it as a silent death.
pub fn reported() {
    set_status(REPORTED);
}

/// Records that this rank finished normally.
pub fn finished() {
    set_status(DONE);
}

/// "epoch 3 (train, step 41 of 313)" from a status line, or the line itself.
fn describe(status: &str) -> String {
    match status.split_whitespace().collect::<Vec<_>>()[..] {
        [phase, epoch, _, "0"] => format!("epoch {epoch} ({phase})"),
        [phase, epoch, step, steps] => {
            format!("epoch {epoch} ({phase}, step {step} of {steps})")
        }
        _ => status.trim().to_string(),
    }
}

/// What the workdir keeps when the run stopped in `epoch` (`usize::MAX`: before training).
fn kept(epoch: usize, dir: &Path) -> String {
    match epoch {
        0 | usize::MAX => format!("no epoch had finished; rerun in {}", dir.display()),
        1 => format!("epoch 0 is kept in {}: continue with --resume", dir.display()),
        e => format!("epochs 0–{} are kept in {}: continue with --resume", e - 1, dir.display()),
    }
}

fn current_status() -> String {
    STATUS
        .get()
        .and_then(|(_, dir)| {
            std::fs::read_to_string(status_path(dir, RANK.load(Ordering::Relaxed))).ok()
        })
        .unwrap_or_else(|| "setup".into())
}

/// Records what this rank trains, for the out-of-memory message.
pub(crate) fn set_work(work: String) {
    let _ = WORK.set(work);
}

/// Whether a libtorch error says an allocation failed (CUDA's caching allocator, or the CPU's).
pub(crate) fn is_out_of_memory(message: &str) -> bool {
    message.contains("CUDA out of memory")
        || message.contains("OutOfMemoryError")
        || message.contains("DefaultCPUAllocator: can't allocate memory")
}

/// The one line of a rank that ran out of memory `during` a place in the run.
fn out_of_memory_line(rank: usize, during: &str, work: Option<&str>) -> String {
    format!(
        "dp-bench: error: rank {rank} ran out of device memory during {during}{}: lower \
         --batch-size (each rank holds batch-size / world-size examples), --model-max-length, \
         or choose a smaller --preset",
        work.map(|w| format!(" ({w})")).unwrap_or_default()
    )
}

/// Makes a panic print one line naming the rank and the epoch and then abort the process, so
/// `mpirun` ends the whole job instead of the other ranks waiting in a collective.
pub fn abort_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let rank = RANK.load(Ordering::Relaxed);
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        if is_out_of_memory(message) {
            // Bad input, not a bug: exit 2 with what to lower. `mpirun` ends the other ranks.
            eprintln!(
                "{}",
                out_of_memory_line(
                    rank,
                    &describe(&current_status()),
                    WORK.get().map(String::as_str)
                )
            );
            set_status(REPORTED);
            // SAFETY: ends the process at once, as `abort` would, without waiting in MPI.
            unsafe { libc::_exit(2) };
        }
        let place = info.location().map(|l| format!(" [{}:{}]", l.file(), l.line()));
        eprintln!(
            "dp-bench: rank {rank} failed during {}: {}{}",
            describe(&current_status()),
            // libtorch errors arrive Debug-formatted, their C++ stack as escaped "\n frame #…".
            message.lines().next().unwrap_or("").split("\\n").next().unwrap_or(""),
            place.unwrap_or_default()
        );
        set_status(REPORTED);
        std::process::abort();
    }));
}

/// SIGINT and SIGTERM end the rank at once (collectives cannot be left half-way); rank 0 says
/// where the run stopped. Finished epochs are on disk already: every file is written atomically.
pub(crate) fn stop_on_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            let rank = RANK.load(Ordering::Relaxed);
            if rank == 0 {
                let dir = STATUS.get().map_or(PathBuf::from("."), |(_, d)| d.clone());
                eprintln!(
                    "\ndp-bench: stopped by {name} during {}; {}",
                    describe(&current_status()),
                    kept(EPOCH.load(Ordering::Relaxed), &dir)
                );
                set_status(REPORTED);
            } else {
                set_status(&format!("{name} {}", current_status().trim()));
            }
            // SAFETY: ends the process without running destructors or MPI's exit handlers,
            // which would wait for ranks that are stopping too.
            unsafe { libc::_exit(128 + sig) };
        }
    });
    Ok(())
}

/// Ends this rank after NCCL reported an asynchronous error (`message`; the communicator has
/// been aborted): most often a peer rank died inside a collective. One line, then exit 1, so
/// `mpirun` ends the job rather than ranks spinning in a collective that cannot finish.
pub(crate) fn ended_by_peer(rank: usize, message: &str) -> ! {
    let dir = STATUS.get().map_or(PathBuf::from("."), |(_, d)| d.clone());
    eprintln!(
        "dp-bench: rank {rank}: {message} during {} (a peer rank stopped inside a collective?); \
         NCCL's communicator was aborted; {}",
        describe(&current_status()),
        kept(EPOCH.load(Ordering::Relaxed), &dir)
    );
    set_status(REPORTED);
    // SAFETY: ends the process without running destructors or MPI's exit handlers.
    unsafe { libc::_exit(1) }
}

/// A rank on this host that the sentinel watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub rank: usize,
    pub pid: i32,
}

/// Starts the sentinel for this host's ranks (call on the host's first rank only).
pub(crate) fn spawn_sentinel(dir: &Path, ranks: &[Watched], host: &str) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let list: Vec<String> = ranks.iter().map(|w| format!("{}:{}", w.rank, w.pid)).collect();
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("watch")
        .arg("--workdir")
        .arg(dir)
        .arg("--host")
        .arg(host)
        .arg("--ranks")
        .arg(list.join(","))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; it only detaches the child from the launcher's
    // process group, so the launcher's clean-up of the ranks does not also end the sentinel.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()?;
    Ok(())
}

/// `dp-bench watch`: waits until the first watched rank ends; if it ended without a word, says
/// which rank it was and where; returns once every watched rank is gone.
pub(crate) fn sentinel(dir: &Path, host: &str, ranks: &[Watched]) -> anyhow::Result<()> {
    let mut fds: Vec<(Watched, i32)> = Vec::new();
    for &w in ranks {
        // SAFETY: a plain syscall; a negative result means the rank is gone already.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, w.pid, 0) } as i32;
        fds.push((w, fd));
    }
    let mut reported = false;
    while !fds.is_empty() {
        // A rank that was gone before its pidfd could be opened has ended already.
        let mut ended: Vec<Watched> =
            fds.iter().filter(|&&(_, fd)| fd < 0).map(|&(w, _)| w).collect();
        if ended.is_empty() {
            let mut polls: Vec<libc::pollfd> = fds
                .iter()
                .map(|&(_, fd)| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
                .collect();
            // SAFETY: `polls` is a valid array of pollfd for the duration of the call.
            let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
            if n < 0 {
                anyhow::bail!("poll: {}", std::io::Error::last_os_error());
            }
            ended = fds
                .iter()
                .zip(&polls)
                .filter(|(_, p)| p.revents != 0)
                .map(|(&(w, _), _)| w)
                .collect();
        }
        if !reported {
            reported = true;
            // A rank that reports its own end writes its status just before exiting; give the
            // others a moment to do the same before deciding nobody spoke.
            std::thread::sleep(Duration::from_millis(200));
            let status = |rank| {
                std::fs::read_to_string(status_path(dir, rank))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let spoke = ranks.iter().any(|w| status(w.rank) == REPORTED);
            let silent = ended.first().filter(|w| ![REPORTED, DONE].contains(&&*status(w.rank)));
            if let (false, Some(first)) = (spoke, silent) {
                report_death(dir, host, *first, &status(first.rank));
            }
        }
        for w in ended {
            if let Some(i) = fds.iter().position(|(x, _)| *x == w) {
                let (_, fd) = fds.remove(i);
                if fd >= 0 {
                    // SAFETY: closing a descriptor this function opened.
                    unsafe { libc::close(fd) };
                }
            }
        }
    }
    Ok(())
}

/// The one message about `rank`, which ended with status `line` and said nothing.
fn report_death(dir: &Path, host: &str, rank: Watched, line: &str) {
    let (how, place) = match line.split_once(' ') {
        Some((sig @ ("SIGINT" | "SIGTERM"), rest)) => (format!("was stopped by {sig}"), rest),
        _ => (
            "died without an error message (killed, e.g. by SIGKILL or the out-of-memory killer)"
                .to_string(),
            line,
        ),
    };
    let epoch = place.split_whitespace().nth(1).and_then(|e| e.parse().ok()).unwrap_or(usize::MAX);
    eprintln!(
        "dp-bench: rank {} (pid {} on {host}) {how} during {}; the job was stopped; {}",
        rank.rank,
        rank.pid,
        describe(place),
        kept(epoch, dir)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_places() {
        assert_eq!(describe("train 3 41 313"), "epoch 3 (train, step 41 of 313)");
        assert_eq!(describe("setup   \n"), "setup");
        assert_eq!(describe("eval 2 0 0"), "epoch 2 (eval)");
        assert!(kept(0, Path::new("w")).contains("no epoch had finished"));
        assert!(kept(3, Path::new("w")).contains("epochs 0–2 are kept in w"));
    }

    #[test]
    fn out_of_memory_is_recognised_and_names_what_to_lower() {
        let cuda = "Torch(\"CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total \
                    capacity of 139.81 GiB\")";
        assert!(is_out_of_memory(cuda));
        assert!(is_out_of_memory("DefaultCPUAllocator: can't allocate memory: you tried"));
        assert!(!is_out_of_memory("shape '[2, 3]' is invalid for input of size 5"));
        let line = out_of_memory_line(1, "epoch 0 (train, step 3 of 40)", Some("preset gpt2"));
        assert!(line.starts_with("dp-bench: error: rank 1 ran out of device memory"), "{line}");
        assert!(line.contains("(preset gpt2)") && line.contains("lower --batch-size"), "{line}");
    }

    #[test]
    fn sentinel_returns_when_its_ranks_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        std::fs::write(status_path(dir.path(), 0), "done\n").unwrap();
        sentinel(dir.path(), "here", &[Watched { rank: 0, pid }]).unwrap();
    }
}
