//! `dp-bench compare` on run directories with known numbers: the statistics, the speedup, the
//! refusals, and the HTML report rendered by headless Chromium.

mod common;

use common::*;
use dp_bench::config::{Config, DatasetSpec, DeviceKind, Partition, Preset};
use dp_bench::metrics::{write_json, EpochRecord, RunInfo};
use std::path::Path;
use std::process::Command;

fn config(world_size: usize, preset: Preset) -> Config {
    Config {
        world_size,
        batch_size: 16 * world_size,
        n_epochs: 4,
        learning_rate: 1e-4,
        model_max_length: 128,
        preset,
        dataset: DatasetSpec::Synthetic,
        train_examples: 5000,
        val_examples: 1000,
        test_examples: 100,
        seed: 1234,
        threads: 1,
        device: DeviceKind::Cpu,
        partition: Partition::Strided,
        dropout: 0.1,
        benchmark_only: true,
        max_batches: None,
        workdir: Default::default(),
        overwrite: false,
        resume: false,
        epoch_gate: None,
        turn_examples: None,
        rotate_cores: 0,
        copies: 1,
        copy: 0,
        padding: dp_bench::config::Padding::Fixed,
        bucket_by_length: false,
        cpu_matmul: dp_bench::config::CpuMatmul::Onednn,
        allreduce: dp_bench::config::AllReduce::Shm,
        optimizer_state: dp_bench::config::OptimizerState::Replicated,
        custom_dims: Default::default(),
    }
}

/// A run directory whose rank r trained epoch e in `times[r][e]` seconds on 1000 tokens.
fn fake_run(dir: &Path, preset: Preset, times: &[&[f64]]) {
    fake_run_of("dp-bench", dir, preset, times)
}

/// `fake_run` as written by `implementation` (a reference such as `pytorch-ddp`).
fn fake_run_of(implementation: &str, dir: &Path, preset: Preset, times: &[&[f64]]) {
    std::fs::create_dir_all(dir).unwrap();
    let c = config(times.len(), preset);
    let info = RunInfo {
        implementation: implementation.into(),
        schema: 1,
        config: c.clone(),
        dims: c.dims(),
        vocab_size: 8000,
        parameters: 1,
        libtorch_version: "2.11.0".into(),
        mpi_library: "MPICH 4".into(),
        host: "h".into(),
        hosts: vec!["h".into(); times.len()],
        threads_per_rank: 1,
        device: "cpu".into(),
        crate_version: "0".into(),
        start_time: "2026-01-01T00:00:00Z".into(),
        cpu: "Test CPU, 2 logical cores".into(),
    };
    write_json(&dir.join("run.json"), &info).unwrap();
    for (rank, epochs) in times.iter().enumerate() {
        for (epoch, &t) in epochs.iter().enumerate() {
            let rec = EpochRecord {
                process_epoch: None,
                epoch,
                rank,
                world_size: times.len(),
                global_batch_size: c.batch_size,
                local_batch_size: 16,
                steps: 10,
                started_at: None,
                paused_time: None,
                training_time: t,
                tokens: 1000,
                tokens_per_sec: 1000.0 / t,
                target_tokens: 100,
                target_tokens_per_sec: 100.0 / t,
                flops: None,
                flops_per_sec: None,
                train_loss: 5.0,
                compute_time: 0.8 * t,
                allreduce_time: 0.1 * t,
                wait_time: 0.01 * t,
                data_time: 0.05 * t,
                max_rss_mb: Some(100.0),
                validation_loss: None,
                bleu: None,
                eval_time: None,
                param_checksum: 1.0,
            };
            write_json(&dir.join(EpochRecord::file_name(rank, epoch)), &rec).unwrap();
        }
    }
}

/// Rewrites each of `fake_run`'s epoch records with `edit`.
fn edit_records(dir: &Path, edit: impl Fn(&mut EpochRecord)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if EpochRecord::is_file_name(&name) {
            let mut rec: EpochRecord = serde_json::from_value(read_json(&path)).unwrap();
            edit(&mut rec);
            write_json(&path, &rec).unwrap();
        }
    }
}

/// Marks `fake_run`'s records as written by processes of `per_round` epochs each: a run
/// stopped and resumed (`--resume`) every `per_round` epochs, which warms up again each time.
fn in_rounds(dir: &Path, per_round: usize) {
    edit_records(dir, |rec| rec.process_epoch = Some(rec.epoch % per_round));
}

/// Sets when each of `fake_run`'s epochs started: epoch e at `at(e)`, every rank alike.
fn started(dir: &Path, at: impl Fn(usize) -> f64) {
    edit_records(dir, |rec| rec.started_at = Some(at(rec.epoch)));
}

/// Independent copies of a one-rank run (`dp-bench --independent`): copy c trained epoch e in
/// `times[c][e]` seconds on 1000 tokens, as `fake_run`'s rank would.
fn fake_copies(dir: &Path, times: &[&[f64]]) {
    for (copy, t) in times.iter().enumerate() {
        let d = dir.join(format!("copy{copy}"));
        fake_run(&d, Preset::Tiny, &[t]);
        let mut info = read_json(&d.join("run.json"));
        info["config"]["copies"] = times.len().into();
        write_json(&d.join("run.json"), &info).unwrap();
    }
}

/// One rank's epoch times on a machine whose speed drifts from epoch to epoch (a warm-up first).
fn drifting() -> Vec<f64> {
    vec![9.0, 1.0, 1.3, 0.9, 1.6]
}

fn compare(dirs: &[&Path], out: &Path) -> std::process::Output {
    run(Command::new(binary()).arg("compare").args(dirs).arg("--out").arg(out))
}

fn close(a: &serde_json::Value, b: f64, tol: f64) -> bool {
    (a.as_f64().unwrap_or(f64::NAN) - b).abs() <= tol
}

#[test]
fn reference_runs_scale_against_their_own_one_device_run_and_are_compared_with_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    fake_run(&d("ws1"), Preset::Tiny, &[&[9.0, 1.0, 1.0, 1.0]]);
    fake_run(&d("ws2"), Preset::Tiny, &[&[9.0, 0.5, 0.5, 0.5], &[9.0, 0.5, 0.5, 0.5]]);
    fake_run_of("pytorch-eager", &d("pt1"), Preset::Tiny, &[&[9.0, 1.5, 1.5, 1.5]]);
    let pt2: &[&[f64]] = &[&[9.0, 1.0, 1.0, 1.0], &[9.0, 1.0, 1.0, 1.0]];
    fake_run_of("pytorch-ddp", &d("pt2"), Preset::Tiny, pt2);
    let out = d("out");
    let o = compare(&[&d("ws1"), &d("ws2"), &d("pt1"), &d("pt2")], &out);
    assert!(o.status.success());
    let s = read_json(&out.join("summary.json"));
    let speedup = s["speedup"].as_array().unwrap();
    let ddp = speedup.iter().find(|x| x["id"] == "pytorch-ddp_ws2_bs32").unwrap();
    assert_eq!(ddp["reference"], "pytorch-eager_ws1_bs16");
    assert!(close(&ddp["tokens_per_sec"]["point"], 3.0, 1e-9), "{ddp}");
    let versus = s["versus"].as_array().unwrap();
    assert_eq!(versus.len(), 2);
    assert_eq!(versus[0]["theirs"], "pytorch-eager_ws1_bs16");
    assert!(close(&versus[0]["tokens_per_sec"]["point"], 1.5, 1e-9), "{}", versus[0]);
    assert!(close(&versus[1]["tokens_per_sec"]["point"], 2.0, 1e-9), "{}", versus[1]);
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(html.contains("dp-bench against the PyTorch reference"));
    // The reference's records do not split its time as dp-bench's do (DDP's all-reduce runs
    // inside its backward): no shortfall for it, one for dp-bench's 2-rank run — negative, as
    // its efficiency is 2.
    assert!(ddp.get("shortfall").is_none(), "{ddp}");
    let ours = speedup.iter().find(|x| x["id"] == "ws2_bs32").unwrap();
    assert!(close(&ours["shortfall"]["total"]["point"], -1.0, 1e-9), "{ours}");
}

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
    assert!(!o.status.success() && err.contains("is not a dp-bench run directory"), "{err}");
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

#[test]
fn runs_that_differ_only_in_partition_are_told_apart_and_each_scaled_against_one_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    fake_run(&d("ws1"), Preset::Tiny, &[&[9.0, 1.0, 1.0, 1.0]]);
    fake_run(&d("balanced"), Preset::Tiny, &[&[9.0, 0.5, 0.5, 0.5], &[9.0, 0.5, 0.5, 0.5]]);
    fake_run(&d("adaptive"), Preset::Tiny, &[&[9.0, 0.4, 0.4, 0.4], &[9.0, 0.4, 0.4, 0.4]]);
    let set_partition = |dir: &Path, partition: &str| {
        let mut info = read_json(&dir.join("run.json"));
        info["config"]["partition"] = partition.into();
        write_json(&dir.join("run.json"), &info).unwrap();
    };
    set_partition(&d("balanced"), "balanced");
    set_partition(&d("adaptive"), "adaptive");
    let out = d("out");
    let o = compare(&[&d("ws1"), &d("balanced"), &d("adaptive")], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&out.join("summary.json"));
    let ids: Vec<&str> =
        s["configs"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ws1_bs16", "ws2_bs32", "ws2_bs32_adaptive"]);
    let speedup = s["speedup"].as_array().unwrap();
    let adaptive = speedup.iter().find(|x| x["id"] == "ws2_bs32_adaptive").unwrap();
    assert_eq!(adaptive["reference"], "ws1_bs16");
    assert!(close(&adaptive["tokens_per_sec"]["point"], 5.0, 1e-9), "{adaptive}");
}

#[test]
fn the_markdown_table_is_written_and_spliced_into_a_document_between_its_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    fake_run(&d("ws1"), Preset::Tiny, &[&[9.0, 1.0, 1.1, 0.9]]);
    fake_run(&d("ws2"), Preset::Tiny, &[&[9.0, 0.5, 0.55, 0.45], &[9.0, 0.5, 0.55, 0.45]]);
    fake_run_of("pytorch-eager", &d("pt1"), Preset::Tiny, &[&[9.0, 2.0, 2.2, 1.8]]);
    let begin = "<!-- dp-bench data_parallel table: begin -->";
    let end = "<!-- dp-bench data_parallel table: end -->";
    let doc = d("BENCHMARKS.md");
    std::fs::write(&doc, format!("# Numbers\nkept above\n{begin}\nstale\n{end}\nkept below\n"))
        .unwrap();
    let dirs = [d("ws1"), d("ws2"), d("pt1")];
    let compare_into = |out: &str, doc: &Path| {
        let mut cmd = Command::new(binary());
        run(cmd.arg("compare").args(&dirs).arg("--out").arg(d(out)).arg("--update-doc").arg(doc))
    };
    let o = compare_into("out", &doc);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&doc).unwrap();
    let table = std::fs::read_to_string(d("out/table.md")).unwrap();
    assert_eq!(text, format!("# Numbers\nkept above\n{begin}\n{table}{end}\nkept below\n"));
    assert!(table.contains("Test CPU, 2 logical cores"), "{table}");
    // Each fake rank feeds as many tokens as the one-rank run, in half the time: 4× the
    // summed throughput on 2 ranks, efficiency 2.
    assert!(
        table.contains("| `ws2_bs32` | dp-bench | 2 | 500.0 ms [375.8 ms, 624.2 ms]"),
        "{table}"
    );
    assert!(table.contains("| 4.000× ["), "{table}");
    assert!(table.contains("| **2.000** ["), "{table}");
    assert!(table.contains("`ws1_bs16` ÷ `pytorch-eager_ws1_bs16` **2.000×**"), "{table}");

    // A document without the markers is refused before any work and left as it was.
    let plain = d("plain.md");
    std::fs::write(&plain, "# no markers\n").unwrap();
    let o = compare_into("out2", &plain);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no lines"));
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "# no markers\n");
    assert!(!d("out2").exists());
}

#[test]
fn known_numbers_give_known_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, out) = (tmp.path().join("one"), tmp.path().join("two"), tmp.path().join("out"));
    // Epoch 0 is warm-up. One rank: 4, 5, 6 s. Two ranks: means 2.1, 2.6, 3.1; maxima 2.2, 2.7, 3.2.
    fake_run(&one, Preset::Tiny, &[&[10.0, 4.0, 5.0, 6.0]]);
    fake_run(&two, Preset::Tiny, &[&[6.0, 2.0, 2.5, 3.0], &[6.0, 2.2, 2.7, 3.2]]);
    let o = compare(&[&one, &two], &out);
    assert!(o.status.success());
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["schema"], 1);
    assert_eq!(s["confidence_level"], 0.95);
    let (c1, c2) = (&s["configs"][0], &s["configs"][1]);
    assert_eq!((c1["id"].as_str(), c2["id"].as_str()), (Some("ws1_bs16"), Some("ws2_bs32")));
    assert_eq!(c1["epochs_measured"], 3);
    // mean 5, s = 1, t(0.975, 2) = 4.302653: half width 4.302653 / √3 = 2.484138.
    let t1 = &c1["training_time"];
    assert!(close(&t1["mean"], 5.0, 1e-12) && close(&t1["std_dev"], 1.0, 1e-12));
    assert!(close(&t1["lower"], 5.0 - 2.484138, 1e-5) && close(&t1["upper"], 5.0 + 2.484138, 1e-5));
    let t2 = &c2["training_time"];
    assert!(close(&t2["mean"], 2.6, 1e-12) && close(&t2["max_rank_mean"], 2.7, 1e-12));
    assert!(close(&t2["upper"], 2.6 + 0.5 * 2.484138, 1e-5), "{t2}");
    // Throughput is the sum over ranks: 1000/2 + 1000/2.2 = 954.545… in epoch 1.
    let tps1 = 1000.0 / 2.0 + 1000.0 / 2.2;
    let tps = [tps1, 1000.0 / 2.5 + 1000.0 / 2.7, 1000.0 / 3.0 + 1000.0 / 3.2];
    assert!(close(&c2["tokens_per_sec"]["mean"], tps.iter().sum::<f64>() / 3.0, 1e-9));
    assert!(close(&c2["allreduce_share"], 0.1, 1e-12));
    let sp = &s["speedup"][0];
    assert_eq!(sp["id"], "ws2_bs32");
    assert!(close(&sp["training_time"]["point"], 5.0 / 2.6, 1e-12));
    let lo = sp["training_time"]["lower"].as_f64().unwrap();
    let hi = sp["training_time"]["upper"].as_f64().unwrap();
    assert!(lo < 5.0 / 2.6 && hi > 5.0 / 2.6, "{sp}");
    let one_tps = (1000.0 / 4.0 + 1000.0 / 5.0 + 1000.0 / 6.0) / 3.0;
    let tps_speedup = tps.iter().sum::<f64>() / 3.0 / one_tps;
    assert!(close(&sp["tokens_per_sec"]["point"], tps_speedup, 1e-9));
    assert!(close(&sp["efficiency"], tps_speedup / 2.0, 1e-9));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("data_parallel/ws2_bs32  time:   [")
            && stdout.contains("speedup over ws1_bs16"),
        "{stdout}"
    );
    for f in [
        "training_time_comparison",
        "tokens_per_second_comparison",
        "epoch_timeline",
        "time_breakdown",
    ] {
        assert!(
            out.join(format!("figures/{f}.png")).is_file()
                && out.join(format!("figures/{f}.svg")).is_file()
        );
    }
}

#[test]
fn runs_resumed_in_rounds_leave_out_every_rounds_warm_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, out) = (tmp.path().join("one"), tmp.path().join("two"), tmp.path().join("out"));
    // Rounds of 3 epochs: epochs 0 and 3 start a process and are warm-up (the slow 9s).
    fake_run(&one, Preset::Tiny, &[&[9.0, 4.0, 5.0, 9.0, 6.0, 5.0]]);
    fake_run(
        &two,
        Preset::Tiny,
        &[&[9.0, 2.0, 2.5, 9.0, 3.0, 2.5], &[9.0, 2.0, 2.5, 9.0, 3.0, 2.5]],
    );
    in_rounds(&one, 3);
    in_rounds(&two, 3);
    let o = compare(&[&one, &two], &out);
    assert!(o.status.success());
    let s = read_json(&out.join("summary.json"));
    let (c1, c2) = (&s["configs"][0], &s["configs"][1]);
    assert_eq!(c1["epochs_measured"], 4);
    assert!(close(&c1["training_time"]["mean"], 5.0, 1e-12), "{c1}");
    assert!(close(&c2["training_time"]["mean"], 2.5, 1e-12), "{c2}");
    assert_eq!(c1["samples"]["epochs"], serde_json::json!([1, 2, 4, 5]));
    assert_eq!(c1["samples"]["warmup_epochs"], serde_json::json!([0, 3]));
    // Without the marks the same files are one process: only epoch 0 is warm-up.
    let plain = tmp.path().join("plain");
    fake_run(&plain, Preset::Tiny, &[&[9.0, 4.0, 5.0, 9.0, 6.0, 5.0]]);
    let o = compare(&[&plain], &tmp.path().join("out2"));
    assert!(o.status.success());
    let s = read_json(&tmp.path().join("out2/summary.json"));
    assert_eq!(s["configs"][0]["epochs_measured"], 5);
}

#[test]
fn inconsistent_or_broken_runs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, small, out) =
        (tmp.path().join("one"), tmp.path().join("small"), tmp.path().join("out"));
    fake_run(&one, Preset::Tiny, &[&[1.0, 1.0, 1.1, 0.9]]);
    fake_run(&small, Preset::Small, &[&[1.0, 0.6, 0.5, 0.55], &[1.0, 0.6, 0.5, 0.55]]);
    let o = compare(&[&one, &small], &out);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("differ in preset (tiny vs small)"), "{err}");
    assert!(!out.join("summary.json").exists());

    let o = compare(&[&one, &one], &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("same configuration"));

    std::fs::write(small.join("rank1_results_epoch2.json"), "{\"epoch\": 2,").unwrap();
    let o = compare(&[&small], &out);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rank1_results_epoch2.json") && err.contains("not a dp-bench epoch record"),
        "{err}"
    );

    std::fs::remove_file(small.join("rank1_results_epoch2.json")).unwrap();
    let o = compare(&[&small], &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("epoch 2 lacks the record of rank 1"));

    std::fs::write(one.join("run.json"), "[]").unwrap();
    let o = compare(&[&one], &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run.json") && err.contains("not a dp-bench run.json"), "{err}");
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, out) = (tmp.path().join("one"), tmp.path().join("two"), tmp.path().join("out"));
    fake_run(&one, Preset::Tiny, &[&[10.0, 4.0, 5.0, 6.0]]);
    fake_run(&two, Preset::Tiny, &[&[6.0, 2.0, 2.5, 3.0], &[6.0, 2.2, 2.7, 3.2]]);
    assert!(compare(&[&one, &two], &out).status.success());
    let page = out.join("report/index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must need no network"
    );
    let profile = tempfile::tempdir().unwrap();
    let dom = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium is installed by scripts/setup.sh");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("data-images-ok=\"4/4\""),
        "images did not render: {}",
        &dom[..dom.len().min(400)]
    );
    assert!(dom.contains("data-table-rows=\"2\""), "summary table did not render");
    assert!(dom.contains("ws2_bs32"));
}

#[test]
fn the_padding_table_gives_each_variant_its_speedup_and_its_work_ratio() {
    use dp_bench::bench::{analysis::RunData, padding};
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    // Each variant's epochs drift alike (×1.1, ×0.9) and take turns; its operations and
    // positions are the same every epoch.
    let variants = [
        ("fixed", 4.0, 2.0e12, 640_000),
        ("dynamic", 2.0, 1.0e12, 243_480),
        ("dynamic_buckets", 1.6, 0.8e12, 145_848),
    ];
    for (k, &(name, t, flops, positions)) in variants.iter().enumerate() {
        fake_run(&d(name), Preset::Tiny, &[&[9.0, t, 1.1 * t, 0.9 * t]]);
        edit_records(&d(name), |rec| (rec.flops, rec.tokens) = (Some(flops), positions));
        started(&d(name), |e| 100.0 * e as f64 + 10.0 * k as f64);
    }
    let runs: Vec<(String, RunData)> =
        variants.iter().map(|v| (v.0.to_string(), RunData::load(&d(v.0)).unwrap())).collect();
    let results = padding::analyse(&runs, 1, 0.95).unwrap();
    let buckets = &results[2];
    assert_eq!(buckets.paired_epochs, 3);
    assert!((buckets.speedup_over_fixed.point - 2.5).abs() < 1e-9, "{buckets:?}");
    assert!((buckets.work_ratio - 2.5).abs() < 1e-12, "{buckets:?}");
    // 0.8 TFLOP over a mean epoch of 1.6 s.
    assert!((buckets.flops_per_sec - 0.5e12).abs() < 1.0, "{buckets:?}");
    assert!((results[1].work_ratio - 2.0).abs() < 1e-12);
    let table = padding::table(&results, &runs[0].1, 0.95);
    assert!(table.contains("3 measured epochs per variant, the variants taking turns"), "{table}");
    assert!(table.contains("5000 training examples of synthetic, batch 16"), "{table}");
    let row = "| **2.50×** [2.50, 2.50] | 145,848 | 800 GFLOP | 500.0 GFLOP/s | 2.50× | 5.0000 |";
    assert!(table.contains("| `dynamic_buckets` | 1.60 s ["), "{table}");
    assert!(table.contains(row), "{table}");
    assert!(table.contains("| 640,000 | 2,000 GFLOP | 500.0 GFLOP/s | — | 5.0000 |"), "{table}");
}
