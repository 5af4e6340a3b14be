//! Epoch gates: several runs side by side, taking turns epoch by epoch.
//!
//! A benchmark that compares configurations on a machine whose speed drifts wants their epochs
//! close together in time, so that the drift falls on both alike and epoch `j` of one can be
//! compared with epoch `j` of the other. Restarting processes to take turns costs a warm-up epoch
//! each time. Instead every run starts at once and each rank waits, before each epoch, at a gate
//! in a directory that a controller (the `data_parallel` bench) opens:
//!
//! - the rank says it is there: it creates `ready-epoch{e}.rank{r}`;
//! - it sleeps until `open-epoch{e}` exists, then trains the epoch.
//!
//! With turns within the epoch (`dp-bench --turn-examples N`), the ranks also stop every N
//! examples of the epoch, at part `p` of it: `ready-epoch{e}.part{p}.rank{r}`, then
//! `open-epoch{e}.part{p}`. Runs then alternate every few seconds instead of every epoch, so even
//! a spell of slowness shorter than an epoch falls on all of them alike; the time a rank spends
//! stopped is not part of its epoch's training time.
//!
//! Before an epoch the controller may instead end the run: `end-epoch{e}` tells every rank to
//! train no more epochs and finish as if the run had been asked for `e` (the bench stops sampling
//! once its intervals are narrow enough or its time is spent).
//!
//! A rank waits asleep (one file check every 20 ms, ~0.01 % of a core per waiting rank), so the
//! waiting runs take next to nothing from the one that trains. The controller writes `controller` (`host\tpid`) into the
//! directory; a rank on the same host stops with an error when that process is gone, rather than
//! wait forever for a gate nobody will open.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a run stops: before part `part` of epoch `epoch` (part 0 is the epoch's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub epoch: usize,
    pub part: usize,
}

impl Stop {
    pub fn epoch(epoch: usize) -> Self {
        Stop { epoch, part: 0 }
    }

    fn name(self) -> String {
        match self.part {
            0 => format!("epoch{}", self.epoch),
            p => format!("epoch{}.part{p}", self.epoch),
        }
    }
}

/// The controller's side and the ranks' side agree on these names.
pub(crate) fn ready_file(dir: &Path, stop: Stop, rank: usize) -> PathBuf {
    dir.join(format!("ready-{}.rank{rank}", stop.name()))
}

pub(crate) fn open_file(dir: &Path, stop: Stop) -> PathBuf {
    dir.join(format!("open-{}", stop.name()))
}

pub(crate) fn end_file(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("end-epoch{epoch}"))
}

pub(crate) fn controller_file(dir: &Path) -> PathBuf {
    dir.join("controller")
}

/// How often a waiting rank looks for its gate, and for its controller.
const POLL: Duration = Duration::from_millis(20);
const CONTROLLER_CHECK: Duration = Duration::from_millis(500);

/// What a rank finds at a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go on.
    Open,
    /// Before an epoch: train no more epochs.
    End,
}

/// Waits at the gate of `stop` in `dir` as `rank`, until it opens or, before an epoch, the
/// controller ends the run there.
pub fn wait(dir: &Path, stop: Stop, rank: usize) -> anyhow::Result<Gate> {
    let ready = ready_file(dir, stop, rank);
    std::fs::write(&ready, b"")
        .map_err(|e| anyhow::anyhow!("epoch gate: cannot write {}: {e}", ready.display()))?;
    let open = open_file(dir, stop);
    let end = (stop.part == 0).then(|| end_file(dir, stop.epoch));
    let mut since_check = Duration::ZERO;
    while !open.exists() {
        if end.as_ref().is_some_and(|e| e.exists()) {
            return Ok(Gate::End);
        }
        std::thread::sleep(POLL);
        since_check += POLL;
        if since_check >= CONTROLLER_CHECK {
            since_check = Duration::ZERO;
            if let Some(pid) = gone_controller(dir) {
                anyhow::bail!(
                    "epoch gate {}: its controller (pid {pid}) has exited without opening it",
                    open.display()
                );
            }
        }
    }
    Ok(Gate::Open)
}

/// Binds the calling thread to `core` of this host (`sched_setaffinity`): a one-rank run that
/// takes turns moves to the next core at each stop (`dp-bench --rotate-cores`).
pub(crate) fn pin_to_core(core: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it (`core` is checked
    // against its capacity), and sched_setaffinity reads exactly its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if core >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How many cores this thread may run on now, by its affinity mask: 1 when `mpirun -bind-to core`
/// bound it to one; `None` where the mask cannot be read.
pub(crate) fn affinity_cores() -> Option<usize> {
    // SAFETY: sched_getaffinity writes exactly one cpu_set_t of the size it is given, and
    // CPU_COUNT reads that set.
    unsafe {
        let mut mine: libc::cpu_set_t = std::mem::zeroed();
        match libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut mine) {
            0 => usize::try_from(libc::CPU_COUNT(&mine)).ok(),
            _ => None,
        }
    }
}

/// The host's online cores that this process may run on (a batch system's cpuset can leave some
/// out): each is tried in turn, and the calling thread's cores are restored.
pub(crate) fn usable_cores() -> Vec<usize> {
    // SAFETY: sysconf has no preconditions; sched_getaffinity and sched_setaffinity read and
    // write exactly one cpu_set_t of the size they are given.
    unsafe {
        let online = usize::try_from(libc::sysconf(libc::_SC_NPROCESSORS_ONLN)).unwrap_or(1);
        let size = std::mem::size_of::<libc::cpu_set_t>();
        let mut mine: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut mine) != 0 {
            return vec![0];
        }
        let usable: Vec<usize> = (0..online).filter(|&c| pin_to_core(c).is_ok()).collect();
        libc::sched_setaffinity(0, size, &mine);
        usable
    }
}

/// The calling thread's core now.
#[cfg(test)]
pub(crate) fn current_core() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// The controller's pid when it ran on this host and has exited.
fn gone_controller(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(controller_file(dir)).ok()?;
    let (host, pid) = text.trim().split_once('\t')?;
    let pid: u32 = pid.parse().ok()?;
    let here = crate::hosts::host_name();
    (host == here && !Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

/// The controller's side: a fresh gate directory for one run, owned by this process.
pub struct Controller {
    pub dir: PathBuf,
}

impl Controller {
    /// Creates (or empties) `dir` and signs it with this process.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let host = crate::hosts::host_name();
        std::fs::write(controller_file(dir), format!("{host}\t{}\n", std::process::id()))?;
        Ok(Controller { dir: dir.to_path_buf() })
    }

    /// Whether all `ranks` ranks wait at the gate of `stop`.
    pub(crate) fn all_ready(&self, stop: Stop, ranks: usize) -> bool {
        (0..ranks).all(|r| ready_file(&self.dir, stop, r).exists())
    }

    pub fn open(&self, stop: Stop) -> std::io::Result<()> {
        std::fs::write(open_file(&self.dir, stop), b"")
    }

    /// Ends the run before epoch `epoch`: its ranks train no more epochs.
    pub fn end(&self, epoch: usize) -> std::io::Result<()> {
        std::fs::write(end_file(&self.dir, epoch), b"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rank_waits_until_the_gate_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let gate = Controller::new(&tmp.path().join("gate")).unwrap();
        let dir = gate.dir.clone();
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = opened.clone();
        let rank = std::thread::spawn(move || {
            assert_eq!(wait(&dir, Stop { epoch: 3, part: 2 }, 1).unwrap(), Gate::Open);
            seen.load(std::sync::atomic::Ordering::SeqCst)
        });
        let stop = Stop { epoch: 3, part: 2 };
        while !ready_file(&gate.dir, stop, 1).exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!gate.all_ready(stop, 2), "rank 0 never came");
        std::thread::sleep(Duration::from_millis(30));
        assert!(!rank.is_finished(), "the rank went through a closed gate");
        gate.open(Stop::epoch(3)).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(!rank.is_finished(), "the rank went through another part's gate");
        opened.store(true, std::sync::atomic::Ordering::SeqCst);
        gate.open(stop).unwrap();
        assert!(rank.join().unwrap(), "the rank went on only after the gate opened");
    }

    #[test]
    fn a_rank_told_to_end_before_an_epoch_trains_no_more() {
        let tmp = tempfile::tempdir().unwrap();
        let gate = Controller::new(&tmp.path().join("gate")).unwrap();
        let dir = gate.dir.clone();
        let rank = std::thread::spawn(move || wait(&dir, Stop::epoch(4), 0).unwrap());
        while !gate.all_ready(Stop::epoch(4), 1) {
            std::thread::sleep(Duration::from_millis(1));
        }
        gate.end(5).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(!rank.is_finished(), "the end of another epoch ended this one");
        gate.end(4).unwrap();
        assert_eq!(rank.join().unwrap(), Gate::End);
    }

    #[test]
    fn pinning_moves_the_calling_thread_to_the_core() {
        // On a thread of its own, so the test harness's threads keep their cores.
        std::thread::spawn(|| {
            let cores = usable_cores();
            assert!(!cores.is_empty());
            for &core in cores.iter().rev() {
                pin_to_core(core).unwrap();
                assert_eq!(current_core(), Some(core));
            }
            assert!(pin_to_core(1 << 20).is_err(), "a core beyond any set");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_rank_stops_when_its_controller_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // A pid that has exited: a child that is waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let host = crate::hosts::host_name();
        std::fs::write(controller_file(dir), format!("{host}\t{pid}\n")).unwrap();
        let err = wait(dir, Stop::epoch(0), 0).unwrap_err().to_string();
        assert!(err.contains(&format!("controller (pid {pid}) has exited")), "{err}");
        assert!(ready_file(dir, Stop::epoch(0), 0).exists());
    }
}
