//! Runs that take turns epoch by epoch (`dp-bench --epoch-gate`, driven by the bench's
//! controller): real processes, one of them a 2-rank `mpirun` job.

mod common;

use common::*;
use dp_bench::bench::analysis::{took_turns, RunData};
use dp_bench::bench::turns::{run_in_turns, Turn};
use indicatif::ProgressBar;
use std::path::Path;
use std::process::Command;

fn turn(id: &str, ranks: usize, dir: &Path, extra: &[&str]) -> Turn {
    let mut command = match ranks {
        1 => Command::new(binary()),
        n => mpirun(n),
    };
    command.args(small_run(&dir.join(id))).args(["--n-epochs", "3", "--max-batches", "2"]);
    command.args(["--benchmark-only"]).args(extra);
    Turn { id: id.into(), ranks, command, gate: dir.join(format!(".gate-{id}")) }
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
    let outcomes = run_in_turns(turns, 3, &ProgressBar::hidden());
    let ids: Vec<&str> = outcomes.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["one", "bad", "two"], "outcomes in the order given");
    assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0].1);
    assert!(outcomes[2].1.is_ok(), "{:?}", outcomes[2].1);
    let err = format!("{:#}", outcomes[1].1.as_ref().unwrap_err());
    assert!(err.contains("larger than the 64 training examples"), "{err}");

    // Every epoch of one run started after the previous epoch of the other had ended, and
    // the other way round: epoch 0 of one, epoch 0 of two, epoch 1 of one, …
    let start_end = |id: &str, epoch: usize| {
        let ranks = if id == "one" { 1 } else { 2 };
        let recs: Vec<_> = (0..ranks).map(|r| results(&dir.join(id), r, epoch)).collect();
        let start = recs.iter().map(|r| r["started_at"].as_f64().unwrap()).fold(f64::MAX, f64::min);
        let end = recs
            .iter()
            .map(|r| r["started_at"].as_f64().unwrap() + r["training_time"].as_f64().unwrap())
            .fold(0.0, f64::max);
        (start, end)
    };
    for epoch in 0..3 {
        let (one, two) = (start_end("one", epoch), start_end("two", epoch));
        assert!(one.1 <= two.0, "epoch {epoch}: two started before one's ended");
        if epoch > 0 {
            assert!(start_end("two", epoch - 1).1 <= one.0, "epoch {epoch} of one too early");
        }
    }
    // The analysis sees it, and pairs the runs' epochs.
    let samples = |id: &str| RunData::load(&dir.join(id)).unwrap().samples(1).unwrap();
    assert!(took_turns(&samples("one"), &samples("two")));
    // The gate directories are gone.
    assert!(!dir.join(".gate-one").exists() && !dir.join(".gate-two").exists());
}
