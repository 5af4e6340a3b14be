//! `dp-bench compare` on how multi-rank runs scale, with known numbers: speedups paired epoch by
//! epoch when runs took turns, where a run falls short of linear, and its share of what the
//! cores allow (independent one-rank copies side by side).

mod common;

use common::fake::*;
use common::*;
use dp_bench::config::Preset;
use dp_bench::metrics::{write_json, EpochRecord};

#[test]
fn the_shortfall_from_linear_is_split_into_what_the_records_time() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    // One rank: 90 % compute, 5 % data, the rest unaccounted; the machine drifts by epoch.
    let one = drifting();
    fake_run(&d("ws1"), Preset::Tiny, &[&one]);
    edit_records(&d("ws1"), |rec| {
        let t = rec.training_time;
        (rec.compute_time, rec.data_time, rec.allreduce_time, rec.wait_time) =
            (0.9 * t, 0.05 * t, 0.0, 0.0);
        rec.flops = Some(130e9 * t);
    });
    // Two ranks, each on as many positions as the one rank: efficiency 0.9. Side by side their
    // compute takes 4 % longer, the batches as long; 1 % of their time they wait, 2 % they sum.
    let two: Vec<f64> = one.iter().map(|t| t / 0.9).collect();
    fake_run(&d("ws2"), Preset::Tiny, &[&two, &two]);
    edit_records(&d("ws2"), |rec| {
        let (t, alone) = (rec.training_time, 0.9 * rec.training_time);
        (rec.compute_time, rec.data_time, rec.allreduce_time, rec.wait_time) =
            (0.9 * 1.04 * alone, 0.05 * alone, 0.02 * t, 0.01 * t);
        rec.flops = Some(117e9 * t);
    });
    started(&d("ws1"), |e| 100.0 * e as f64);
    started(&d("ws2"), |e| 100.0 * e as f64 + 50.0);
    let shortfall = |name: &str| {
        let out = d(name);
        let o = compare(&[&d("ws1"), &d("ws2")], &out);
        assert!(o.status.success());
        let s = read_json(&out.join("summary.json"))["speedup"][0]["shortfall"].clone();
        (s, std::fs::read_to_string(out.join("table.md")).unwrap(), o)
    };
    let (s, table, o) = shortfall("paired");
    let terminal = String::from_utf8_lossy(&o.stdout);
    assert!(
        terminal.contains("short of linear: 10.0% of the ranks' time = compute 3.2% + waiting 1.0% + all-reduce 2.0% + data 0.0% + other 3.8%"),
        "{terminal}"
    );
    // The records count their matrix products' operations: the rate a rank.
    assert!(terminal.contains("of the epoch, matrix products 130.0 GFLOP/s a rank"), "{terminal}");
    assert!(terminal.contains("of the epoch, matrix products 117.0 GFLOP/s a rank"), "{terminal}");
    let html = std::fs::read_to_string(d("paired/report/index.html")).unwrap();
    assert!(html.contains("counted from the batches' shapes): 117.0 GFLOP/s a rank"), "{html}");
    assert!(
        html.contains("<table id=shortfall>") && html.contains("<td>ws2_bs32</td><td>10.0%"),
        "{html}"
    );
    assert_eq!(s["pairs"], 4, "{s}");
    // compute (0.936 − 0.9) × 0.9; other: the run's 1 − 0.8424 − 0.01 − 0.02 − 0.045 against
    // the one rank's 0.05 × 0.9.
    let expected =
        [("total", 0.1), ("compute", 0.0324), ("wait", 0.01), ("allreduce", 0.02), ("data", 0.0)];
    for (part, value) in expected.into_iter().chain([("other", 0.0376)]) {
        assert!(close(&s[part]["point"], value, 1e-9), "{part}: {s}");
        // The same split in every pair: no width.
        assert!(close(&s[part]["upper"], value, 1e-9), "{part}: {s}");
    }
    assert!(
        table.contains("| `ws2_bs32` | 10.0 % [10.0, 10.0] | 3.2 % [3.2, 3.2] | 1.0 % [1.0, 1.0] | 2.0 % [2.0, 2.0] | 0.0 % [0.0, 0.0] | 3.8 % [3.8, 3.8] |"),
        "{table}"
    );
    // More positions on the two ranks (dynamic padding deals them unevenly): the one rank's
    // time is scaled up to them, 2.2 / 2 × 0.9 of the run's, so 1 % short of linear.
    edit_records(&d("ws2"), |rec| rec.tokens = 1100);
    let (s, _, _) = shortfall("positions");
    assert!(close(&s["total"]["point"], 0.01, 1e-9), "{s}");
    assert!(close(&s["compute"]["point"], (0.936 - 1.1 * 0.9) * 0.9, 1e-9), "{s}");
    // Runs that did not take turns: the same split from the means, without an interval.
    edit_records(&d("ws2"), |rec| rec.started_at = None);
    let (s, table, _) = shortfall("unpaired");
    assert_eq!(s["pairs"], 0, "{s}");
    assert!(close(&s["total"]["point"], 0.01, 1e-9), "{s}");
    assert!(s["total"]["lower"].is_null(), "{s}");
    assert!(table.contains("(from the means of the runs)"), "{table}");
}

#[test]
fn independent_one_rank_runs_are_read_as_one_run_and_give_each_run_its_share_of_the_ceiling() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    // The machine drifts by epoch. Two ranks reach 0.9 of linear; two independent one-rank runs
    // side by side, which exchange nothing, each take 1/0.95 of one rank's time alone.
    let one = drifting();
    let two: Vec<f64> = one.iter().map(|t| t / 0.9).collect();
    let copy: Vec<f64> = one.iter().map(|t| t / 0.95).collect();
    fake_run(&d("ws1"), Preset::Tiny, &[&one]);
    fake_run(&d("ws2"), Preset::Tiny, &[&two, &two]);
    fake_copies(&d("ind"), &[&copy, &copy]);
    started(&d("ws1"), |e| 100.0 * e as f64);
    started(&d("ws2"), |e| 100.0 * e as f64 + 50.0);
    for c in ["ind/copy0", "ind/copy1"] {
        started(&d(c), |e| 100.0 * e as f64 + 25.0);
    }
    let o = compare(&[&d("ws1"), &d("ws2"), &d("ind")], &d("out"));
    assert!(o.status.success());
    let summary = read_json(&d("out/summary.json"));
    let ids: Vec<&str> =
        summary["configs"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ws1_bs16", "ws2_bs32", "ws2_bs32_independent"]);
    let ind = &summary["configs"][2];
    assert_eq!(
        (ind["world_size"].as_u64(), ind["global_batch_size"].as_u64()),
        (Some(2), Some(32))
    );
    let speedup = |id: &str| {
        summary["speedup"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap().clone()
    };
    // The copies' efficiency is the ceiling; the run's share of it is paired epoch by epoch.
    let ceiling = speedup("ws2_bs32_independent");
    assert!(close(&ceiling["efficiency"], 0.95, 1e-9), "{ceiling}");
    assert!(ceiling["of_independent"].is_null(), "{ceiling}");
    let share = speedup("ws2_bs32")["of_independent"].clone();
    assert_eq!(share["id"], "ws2_bs32_independent");
    for bound in ["point", "lower", "upper"] {
        assert!(close(&share["tokens_per_sec"][bound], 0.9 / 0.95, 1e-9), "{share}");
    }
    let terminal = String::from_utf8_lossy(&o.stdout);
    assert!(
        terminal.contains("of what the cores allow: [0.947× 0.947× 0.947×] of the throughput of ws2_bs32_independent"),
        "{terminal}"
    );
    assert!(terminal.contains("2 independent 1-rank runs side by side, no communication"));
    let table = std::fs::read_to_string(d("out/table.md")).unwrap();
    assert!(
        table.contains("`ws2_bs32` ÷ `ws2_bs32_independent` **0.947×** [0.947, 0.947]"),
        "{table}"
    );
    assert!(table.contains("| `ws2_bs32_independent` | dp-bench, independent 1-rank runs | 2 |"));
    let html = std::fs::read_to_string(d("out/report/index.html")).unwrap();
    assert!(html.contains("<table id=ceiling>") && html.contains("<td>ws2_bs32_independent</td>"));
    // A copy that stopped early, or that trained another workload, is refused by name.
    std::fs::remove_file(d("ind/copy1").join(EpochRecord::file_name(0, 4))).unwrap();
    let o = compare(&[&d("ws1"), &d("ind")], &d("short"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("copy1: epoch 4 lacks the record"), "{err}");
    fake_copies(&d("ind"), &[&copy, &copy]);
    let mut info = read_json(&d("ind/copy1/run.json"));
    info["config"]["preset"] = "small".into();
    write_json(&d("ind/copy1/run.json"), &info).unwrap();
    let o = compare(&[&d("ws1"), &d("ind")], &d("other"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("they differ in configuration"), "{err}");
    // An ordinary run that sits in a `copy0` does not make its parent a run.
    fake_run(&d("lone/copy0"), Preset::Tiny, &[&one]);
    let o = compare(&[&d("ws1"), &d("lone")], &d("lone_out"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("is not a run directory"), "{err}");
}

#[test]
fn runs_that_took_turns_epoch_by_epoch_are_paired_and_the_pairs_take_out_the_drift() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    // The machine's speed drifts from epoch to epoch; two ranks, each on the same number of
    // tokens per epoch as the one rank (twice the work), always take 1/0.9 of its time:
    // efficiency 0.9 throughout.
    let one = drifting();
    let two: Vec<f64> = one.iter().map(|t| t / 0.9).collect();
    fake_run(&d("ws1"), Preset::Tiny, &[&one]);
    fake_run(&d("ws2"), Preset::Tiny, &[&two, &two]);
    let analyse = |name: &str| {
        let out = d(name);
        assert!(compare(&[&d("ws1"), &d("ws2")], &out).status.success());
        read_json(&out.join("summary.json"))["speedup"][0].clone()
    };
    // Without start times the means are compared (Fieller): the drift widens the interval.
    let unpaired = analyse("unpaired");
    assert_eq!(unpaired["paired_epochs"], 0);
    assert!(close(&unpaired["efficiency"], 0.9, 1e-9), "{unpaired}");
    let width = |s: &serde_json::Value| {
        s["efficiency_interval"]["upper"].as_f64().unwrap()
            - s["efficiency_interval"]["lower"].as_f64().unwrap()
    };
    assert!(width(&unpaired) > 0.2, "{unpaired}");
    // Epochs that took turns (ws1 epoch e at 100e, ws2's at 100e + 50): paired, and the shared
    // drift is gone.
    started(&d("ws1"), |e| 100.0 * e as f64);
    started(&d("ws2"), |e| 100.0 * e as f64 + 50.0);
    let paired = analyse("paired");
    assert_eq!(paired["paired_epochs"], 4, "{paired}");
    assert!(close(&paired["efficiency"], 0.9, 1e-9), "{paired}");
    assert!(width(&paired) < 1e-9, "{paired}");
    let table = std::fs::read_to_string(d("paired/table.md")).unwrap();
    assert!(table.contains("taking turns epoch by epoch; their speedups"), "{table}");
    // Turns within epochs too: each run says how long it stood stopped, and the table says so.
    edit_records(&d("ws1"), |rec| rec.paused_time = Some(0.5 + rec.epoch as f64));
    edit_records(&d("ws2"), |rec| rec.paused_time = Some(0.25 * (1 + rec.rank) as f64));
    let paired = analyse("within");
    assert_eq!(paired["paired_epochs"], 4, "{paired}");
    let summary = read_json(&d("within/summary.json"));
    let paused = |i: usize| summary["configs"][i]["samples"]["paused_time"].clone();
    assert_eq!(paused(0), serde_json::json!([1.5, 2.5, 3.5, 4.5]), "measured epochs only");
    assert_eq!(paused(1), serde_json::json!([0.375, 0.375, 0.375, 0.375]), "mean over ranks");
    let table = std::fs::read_to_string(d("within/table.md")).unwrap();
    assert!(table.contains("epoch by epoch and within epochs (the time a run"), "{table}");
    // Overlapping in time (ws2's epoch 1 starts before ws1's epoch 1): not paired.
    started(&d("ws2"), |e| 100.0 * e as f64 + if e == 2 { -150.0 } else { 50.0 });
    assert_eq!(analyse("overlapping")["paired_epochs"], 0);
}
