//! `dp-bench compare` on run directories with known numbers: the statistics, the speedup, the
//! refusals, and the HTML report rendered by headless Chromium.

mod common;

use common::fake::*;
use common::*;
use dp_bench::config::Preset;
use dp_bench::metrics::write_json;
use std::path::Path;
use std::process::Command;

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

    // A bf16 run is not the same workload as an fp32 one.
    let bf16 = tmp.path().join("bf16");
    fake_run(&bf16, Preset::Tiny, &[&[1.0, 0.6, 0.5, 0.55], &[1.0, 0.6, 0.5, 0.55]]);
    let mut info = read_json(&bf16.join("run.json"));
    info["config"]["precision"] = "bf16".into();
    std::fs::write(bf16.join("run.json"), info.to_string()).unwrap();
    let o = compare(&[&one, &bf16], &out);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("differ in precision (fp32 vs bf16)"), "{err}");

    std::fs::write(small.join("rank1_results_epoch2.json"), "{\"epoch\": 2,").unwrap();
    let o = compare(&[&small], &out);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rank1_results_epoch2.json") && err.contains("not an epoch record"),
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
    use dp_bench::bench::{padding, run_data::RunData};
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

/// What the numbers do not say is said: runs of different seeds, and a comparison of one-rank
/// runs only, whose speedup is a ratio and not scaling; a resumed run's extra warm-up epoch; a
/// GPU run's peak device memory.
#[test]
fn compare_notes_seeds_one_rank_comparisons_and_resumed_warmups() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    fake_run(&d("a"), Preset::Tiny, &[&[9.0, 1.0, 1.0, 1.0]]);
    fake_run(&d("b"), Preset::Tiny, &[&[9.0, 1.1, 1.1, 1.1]]);
    let mut info = read_json(&d("b").join("run.json"));
    info["config"]["seed"] = 7.into();
    std::fs::write(d("b").join("run.json"), info.to_string()).unwrap();
    let label = format!("{}=other", d("b").display());
    let o = run(Command::new(binary())
        .arg("compare")
        .args([d("a"), d("b")])
        .args(["--label", &label, "--out"])
        .arg(d("out")));
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("note: the runs differ in seed") && stderr.contains(" 7"), "{stderr}");
    assert!(stderr.contains("every run has 1 rank: ws1_bs16 is the reference"), "{stderr}");
    assert!(stderr.contains("is not scaling"), "{stderr}");

    // A run resumed at epoch 3: its epoch 3 is a process's first, dropped as warm-up too.
    fake_run(&d("c"), Preset::Tiny, &[&[9.0, 1.0, 1.0, 9.0, 1.0, 1.0]]);
    for epoch in 0..6 {
        let path = d("c").join(format!("rank0_results_epoch{epoch}.json"));
        let mut rec = read_json(&path);
        rec["process_epoch"] = (if epoch < 3 { epoch } else { epoch - 3 }).into();
        rec["peak_device_mb"] = (1000.0 + 200.0 * epoch as f64).into(); // as a GPU run records
        std::fs::write(&path, rec.to_string()).unwrap();
    }
    let o = compare(&[&d("c")], &d("out2"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("4 measured epochs (epochs 0, 3 dropped as warm-up"), "{stdout}");
    assert!(stdout.contains("peak GPU memory 2000 MiB a rank"), "{stdout}");
    let summary = read_json(&d("out2").join("summary.json"));
    assert_eq!(summary["configs"][0]["peak_device_mb"], 2000.0);
}
