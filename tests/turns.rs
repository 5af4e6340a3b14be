//! Runs that take turns epoch by epoch (`dp-bench --epoch-gate`, driven by the bench's
//! controller): real processes, one of them a 2-rank `mpirun` job.

mod common;

use common::*;
use dp_bench::bench::analysis::took_turns;
use dp_bench::bench::run_data::RunData;
use dp_bench::bench::turns::{run_in_turns, Turn, TurnOptions};
use indicatif::ProgressBar;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn options(turn_examples: Option<usize>) -> TurnOptions {
    TurnOptions { epochs: 3, turn_examples, stall_timeout: Duration::from_secs(600) }
}

/// The command of a run of `ranks` ranks, 3 epochs of `steps` steps, in `dir/id`.
fn command(id: &str, ranks: usize, steps: usize, dir: &Path, extra: &[&str]) -> Command {
    let mut command = match ranks {
        1 => Command::new(binary()),
        n => mpirun(n),
    };
    command.args(small_run(&dir.join(id))).args(["--n-epochs", "3"]);
    command.args(["--max-batches", &steps.to_string(), "--benchmark-only"]).args(extra);
    command
}

fn turn(id: &str, ranks: usize, dir: &Path, extra: &[&str]) -> Turn {
    gated(id, ranks, 2, dir, extra)
}

fn gated(id: &str, ranks: usize, steps: usize, dir: &Path, extra: &[&str]) -> Turn {
    let command = command(id, ranks, steps, dir, extra);
    Turn { id: id.into(), ranks, command, gate: dir.join(format!(".gate-{id}")) }
}

/// Start and end (start + training + paused time) of a run's epoch, over its ranks.
fn span(dir: &Path, id: &str, ranks: usize, epoch: usize) -> (f64, f64) {
    let recs: Vec<_> = (0..ranks).map(|r| results(&dir.join(id), r, epoch)).collect();
    let time = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap_or(0.0);
    let start = recs.iter().map(|r| time(r, "started_at")).fold(f64::MAX, f64::min);
    let end = recs
        .iter()
        .map(|r| time(r, "started_at") + time(r, "training_time") + time(r, "paused_time"))
        .fold(0.0, f64::max);
    (start, end)
}

#[test]
fn runs_take_turns_epoch_by_epoch_and_a_failure_stops_only_its_own_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let turns = vec![
        turn("one", 1, dir, &[]),
        turn("bad", 1, dir, &["--batch-size", "65"]),
        turn("two", 2, dir, &[]),
    ];
    let outcomes = run_in_turns(turns, &options(None), &ProgressBar::hidden(), &mut |_| true);
    let ids: Vec<&str> = outcomes.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["one", "bad", "two"], "outcomes in the order given");
    assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0].1);
    assert!(outcomes[2].1.is_ok(), "{:?}", outcomes[2].1);
    let err = format!("{:#}", outcomes[1].1.as_ref().unwrap_err());
    assert!(err.contains("larger than the 64 training examples"), "{err}");

    // Every epoch of one run started after the previous epoch of the other had ended, and
    // the other way round: epoch 0 of one, epoch 0 of two, epoch 1 of one, …
    let start_end = |id: &str, epoch: usize| span(dir, id, if id == "one" { 1 } else { 2 }, epoch);
    for epoch in 0..3 {
        let (one, two) = (start_end("one", epoch), start_end("two", epoch));
        assert!(one.1 <= two.0, "epoch {epoch}: two started before one's ended");
        if epoch > 0 {
            assert!(start_end("two", epoch - 1).1 <= one.0, "epoch {epoch} of one too early");
        }
        assert!(results(&dir.join("one"), 0, epoch).get("paused_time").is_none());
    }
    // The analysis sees it, and pairs the runs' epochs.
    let samples = |id: &str| RunData::load(&dir.join(id)).unwrap().samples(1).unwrap();
    assert!(took_turns(&samples("one"), &samples("two")));
    // The gate directories are gone.
    assert!(!dir.join(".gate-one").exists() && !dir.join(".gate-two").exists());
}

#[test]
fn runs_take_turns_within_epochs_without_changing_what_they_compute() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Every 32 examples: one (batch 16) stops every 2 steps, two (batch 32) every step. One also
    // moves to the next core at each stop.
    let turns = vec![
        gated("one", 1, 4, dir, &["--rotate-cores", "2"]),
        gated("two", 2, 4, dir, &["--batch-size", "32"]),
    ];
    for (id, outcome) in
        run_in_turns(turns, &options(Some(32)), &ProgressBar::hidden(), &mut |_| true)
    {
        assert!(outcome.is_ok(), "{id}: {outcome:?}");
    }
    let ok = command("alone", 1, 4, dir, &[]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    for epoch in 0..3 {
        // Part 0 of one, part 0 of two, part 1 of one (one's last), parts 1–3 of two.
        let (one, two) = (span(dir, "one", 1, epoch), span(dir, "two", 2, epoch));
        assert!(one.0 < two.0 && two.0 < one.1, "epoch {epoch}: two's part 0 not within one's");
        assert!(one.1 <= two.1, "epoch {epoch}: one's last part after two's");
        for (id, rank) in [("one", 0), ("two", 0), ("two", 1)] {
            let rec = results(&dir.join(id), rank, epoch);
            let paused = rec["paused_time"].as_f64().unwrap();
            assert!(paused > 0.0, "{id} rank {rank} epoch {epoch}: never stopped");
        }
        // One's stop lasted at least two's part 0 (one step of its training time).
        let paused = results(&dir.join("one"), 0, epoch)["paused_time"].as_f64().unwrap();
        let two_step = results(&dir.join("two"), 0, epoch)["training_time"].as_f64().unwrap() / 4.0;
        assert!(
            paused > 0.5 * two_step,
            "epoch {epoch}: one paused {paused} s, two's step {two_step}"
        );
        // Stopping (and moving) changes nothing the run computes: the same losses and weights
        // as alone.
        let (gated, alone) =
            (results(&dir.join("one"), 0, epoch), results(&dir.join("alone"), 0, epoch));
        for key in ["train_loss", "param_checksum", "tokens", "steps"] {
            assert_eq!(gated[key], alone[key], "epoch {epoch}: {key}");
        }
    }
    let samples = |id: &str| RunData::load(&dir.join(id)).unwrap().samples(1).unwrap();
    assert!(took_turns(&samples("one"), &samples("two")));
}

#[test]
fn a_run_that_stalls_is_stopped_and_the_others_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Comes to its first gate, then hangs: `$2` is the gate directory (`--epoch-gate DIR`).
    let mut hangs = Command::new("sh");
    hangs.args(["-c", "touch \"$2/ready-epoch0.rank0\"; exec sleep 300", "sh"]);
    let turns = vec![
        Turn { id: "hangs".into(), ranks: 1, command: hangs, gate: dir.join(".gate-hangs") },
        turn("one", 1, dir, &[]),
    ];
    let options = TurnOptions { stall_timeout: Duration::from_secs(3), ..options(None) };
    let started = Instant::now();
    let outcomes = run_in_turns(turns, &options, &ProgressBar::hidden(), &mut |_| true);
    assert!(started.elapsed() < Duration::from_secs(120), "the hung run was waited for");
    let err = format!("{:#}", outcomes[0].1.as_ref().unwrap_err());
    assert!(err.contains("stalled in epoch 0: no progress for 3 s"), "{err}");
    assert!(outcomes[1].1.is_ok(), "{:?}", outcomes[1].1);
    assert!(dir.join("one").join("rank0_results_epoch2.json").exists());
}

/// The controller ends every run between epochs when told to: each trains the epochs it was let
/// train, writes their records and its final weights, and exits successfully.
#[test]
fn runs_end_together_between_epochs_when_the_controller_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let turns =
        vec![turn("one", 1, dir, &["--n-epochs", "9"]), turn("two", 2, dir, &["--n-epochs", "9"])];
    let options = TurnOptions { epochs: 9, ..options(None) };
    let mut asked = Vec::new();
    let outcomes = run_in_turns(turns, &options, &ProgressBar::hidden(), &mut |epoch| {
        asked.push(epoch);
        epoch < 1
    });
    assert_eq!(asked, [0, 1], "asked after each epoch of all runs, until it said no");
    for (id, outcome) in outcomes {
        assert!(outcome.is_ok(), "{id}: {outcome:?}");
        let run = dir.join(&id);
        assert!(results(&run, 0, 1).is_object(), "{id} trained epoch 1");
        assert!(!run.join("rank0_results_epoch2.json").exists(), "{id} trained epoch 2");
        assert!(run.join("model.safetensors").exists(), "{id} finished as a run does");
    }
    let loaded = RunData::load(&dir.join("two")).unwrap();
    assert_eq!(loaded.samples(0).unwrap().training_time.len(), 2);
}
