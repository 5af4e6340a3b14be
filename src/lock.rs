//! A run's hold on its workdir. Rank 0 takes an advisory lock (`flock`) on `.dp-bench.lock` in
//! the workdir for as long as the run lives and writes its pid, host and start time into it; a
//! second run into the same workdir, `--resume` included, is refused with the holder named. The
//! kernel drops the lock when its process ends however it ends, so a lock left by a run that
//! died is taken over (and named); the file is emptied, not removed, when a run ends, since a
//! file removed while another process opens it would let two runs hold two different files.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name in a workdir.
pub const LOCK_FILE: &str = ".dp-bench.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "workdir {path} is in use by {holder}: wait for that run to end, or pass another --workdir"
    )]
    InUse { path: PathBuf, holder: String },
    #[error("cannot lock workdir {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A held workdir lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct WorkdirLock {
    file: File,
    /// Who held the lock before and ended without releasing it, as the lock file named them.
    pub stale: Option<String>,
}

/// Who holds a lock, as its file says: "pid N on HOST since TIME".
fn holder_line() -> String {
    let host = crate::hosts::host_name();
    format!("pid {} on {host} since {}", std::process::id(), chrono::Utc::now().to_rfc3339())
}

/// Takes `dir`'s lock (the directory must exist), or says who holds it.
pub fn lock(dir: &Path) -> Result<WorkdirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io { path: dir.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut before = String::new();
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(err));
        }
        let _ = file.read_to_string(&mut before);
        let holder = match before.trim() {
            "" => "another run (it has not yet named itself)".to_string(),
            h => h.to_string(),
        };
        return Err(LockError::InUse { path: dir.to_path_buf(), holder });
    }
    file.read_to_string(&mut before).map_err(io)?;
    let stale = Some(before.trim().to_string()).filter(|h| !h.is_empty());
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(format!("{}\n", holder_line()).as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(WorkdirLock { file, stale })
}

impl Drop for WorkdirLock {
    fn drop(&mut self) {
        // Emptied while still locked: the next run finds no holder to call stale.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holder_named_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        assert_eq!(first.stale, None);
        let err = lock(dir.path()).unwrap_err().to_string();
        let me = format!("pid {} on ", std::process::id());
        assert!(err.contains("is in use by") && err.contains(&me), "{err}");
        assert!(err.contains("another --workdir"), "{err}");
        drop(first);
        let again = lock(dir.path()).unwrap();
        assert_eq!(again.stale, None, "a lock released on drop is not stale");
    }

    #[test]
    fn a_lock_left_by_a_dead_run_is_taken_over_and_named() {
        let dir = tempfile::tempdir().unwrap();
        // What a killed run leaves: its line in the file, no lock held.
        std::fs::write(dir.path().join(LOCK_FILE), "pid 4242 on elsewhere since then\n").unwrap();
        let taken = lock(dir.path()).unwrap();
        assert_eq!(taken.stale.as_deref(), Some("pid 4242 on elsewhere since then"));
        let line = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(line.starts_with(&format!("pid {} on ", std::process::id())), "{line}");
    }
}
