//! Faults through the real binary under a real `mpirun`: a rank killed mid-epoch, Ctrl-C, SIGTERM,
//! an allocation libtorch cannot make — each ends the whole job with one message naming the rank
//! and the epoch and keeps the finished epochs — and `--resume` continuing a killed run to exactly
//! the numbers of a run that was never interrupted.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Three epochs of 16 steps per rank, with evaluation, so a test can catch a run mid-epoch.
fn run_args(dir: &Path) -> Vec<String> {
    let mut args = small_run(dir);
    for (flag, value) in [("--train-examples", "256"), ("--n-epochs", "3"), ("--dropout", "0.1")] {
        let i = args.iter().position(|a| a == flag);
        match i {
            Some(i) => args[i + 1] = value.to_string(),
            None => args.extend([flag.to_string(), value.to_string()]),
        }
    }
    args
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("launching mpirun")
}

/// Waits for the job; one still running after five minutes hangs, which is the failure these
/// tests exist to catch (the job is killed so the test run ends).
fn finish(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("waiting for mpirun").is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("the job hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("waiting for mpirun");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Waits until rank `rank` reports being in epoch `epoch`'s training loop past its first step.
fn wait_mid_epoch(dir: &Path, rank: usize, epoch: usize) {
    let status = dir.join(format!(".rank{rank}.status"));
    let start = Instant::now();
    loop {
        let line = std::fs::read_to_string(&status).unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["train", e, step, _] = words[..] {
            if e == epoch.to_string() && step.parse::<usize>().unwrap_or(0) >= 2 {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "rank {rank} never reached epoch {epoch}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The pid of rank `rank` of the run writing into `dir` (from /proc: its command line names the
/// workdir, its environment the MPI rank).
fn rank_pid(dir: &Path, rank: usize) -> i32 {
    let dir = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> =
            cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let ours = args.first().is_some_and(|a| a == binary());
        if !ours || args.iter().any(|a| a == "watch") || !args.contains(&dir) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&environ);
        let this_rank = env.split('\0').find_map(|kv| {
            kv.strip_prefix("PMI_RANK=").or_else(|| kv.strip_prefix("OMPI_COMM_WORLD_RANK="))
        });
        if this_rank == Some(&rank.to_string()) {
            return pid;
        }
    }
    panic!("no rank {rank} running for {dir}");
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: sending a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// After a run stopped in epoch 1: epoch 0's records are there, whole, and nothing later or
/// half-written is.
fn assert_kept_epoch_0(dir: &Path) {
    for rank in 0..2 {
        assert_eq!(results(dir, rank, 0)["epoch"], 0);
    }
    let names = names(dir);
    assert!(!names.iter().any(|n| n.contains("epoch1") || n.contains("epoch2")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains(".tmp")), "half-written files: {names:?}");
}

#[test]
fn killed_rank_ends_the_job_and_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (killed, whole) = (tmp.path().join("killed"), tmp.path().join("whole"));

    let child = spawn(mpirun(2).args(run_args(&killed)));
    wait_mid_epoch(&killed, 1, 1);
    signal(rank_pid(&killed, 1), libc::SIGKILL);
    let out = finish(child);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr.lines().find(|l| l.starts_with("dp-bench: rank 1 (pid"));
    let message = message.unwrap_or_else(|| panic!("no message naming rank 1 in {stderr}"));
    assert!(message.contains("died") && message.contains("during epoch 1 (train"), "{message}");
    assert!(message.contains("epoch 0 is kept") && message.contains("--resume"), "{message}");
    assert_kept_epoch_0(&killed);

    let out = run_ok(mpirun(2).args(run_args(&killed)).arg("--resume"));
    let said = [&out.stdout[..], &out.stderr[..]].concat();
    assert!(String::from_utf8_lossy(&said).contains("resuming after epoch 0 of 3"));
    run_ok(mpirun(2).args(run_args(&whole)));
    for rank in 0..2 {
        for epoch in 0..3 {
            let (a, b) = (results(&killed, rank, epoch), results(&whole, rank, epoch));
            assert_eq!(without_timings(a), without_timings(b), "rank {rank} epoch {epoch}");
        }
    }
    // The resumed process's first epoch is marked as such (benches leave it out as warm-up).
    assert_eq!(results(&killed, 0, 1)["process_epoch"], 0);
    assert_eq!(results(&whole, 0, 1)["process_epoch"], 1);
    let weights = |d: &PathBuf| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(weights(&killed) == weights(&whole), "final weights differ bitwise");
}

/// Also runs the optimiser sharded over the two ranks: stopped and resumed, it must end with the
/// weights of an uninterrupted run with the replicated optimiser, bit for bit.
#[test]
fn ctrl_c_stops_cleanly_and_keeps_finished_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let sharded = ["--optimizer-state", "sharded"];
    let child = spawn(mpirun(2).args(run_args(tmp.path())).args(sharded));
    wait_mid_epoch(tmp.path(), 0, 1);
    signal(child.id() as i32, libc::SIGINT);
    let out = finish(child);
    // (mpirun's own exit status after Ctrl-C is the launcher's choice: MPICH's varies.)
    assert!(!tmp.path().join("model.safetensors").exists(), "the run stopped before its end");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dp-bench: stopped by SIGINT during epoch 1 (train"), "{stderr}");
    assert_eq!(
        stderr.matches("dp-bench: stopped").count() + stderr.matches("dp-bench: rank").count(),
        1
    );
    assert_kept_epoch_0(tmp.path());
    run_ok(mpirun(2).args(run_args(tmp.path())).args(sharded).arg("--resume"));
    assert_eq!(results(tmp.path(), 1, 2)["epoch"], 2);
    let whole = tmp.path().join("whole");
    run_ok(mpirun(2).args(run_args(&whole)));
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(weights(tmp.path()) == weights(&whole), "sharded and resumed: final weights differ");
}

#[test]
fn sigterm_to_one_rank_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let child = spawn(mpirun(2).args(run_args(tmp.path())));
    wait_mid_epoch(tmp.path(), 1, 1);
    signal(rank_pid(tmp.path(), 1), libc::SIGTERM);
    let out = finish(child);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dp-bench: rank 1 (pid")
            && stderr.contains("was stopped by SIGTERM during epoch 1"),
        "{stderr}"
    );
    assert_kept_epoch_0(tmp.path());
}

#[test]
fn a_model_larger_than_memory_is_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    // A 2^24-wide embedding table is half a terabyte: refused before anything is allocated, not
    // left to the out-of-memory killer.
    let huge = ["--n-embd", "16777216", "--n-positions", "2", "--model-max-length", "2"];
    let out = finish(spawn(mpirun(2).args(small_run(tmp.path())).args(huge)));
    assert_eq!(out.status.code(), Some(2), "bad input: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("dp-bench: error: ")).collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(errors[0].contains("GiB") && errors[0].contains("--n-embd"), "{}", errors[0]);
    assert!(!stderr.contains("died"), "no rank was killed: {stderr}");
}
