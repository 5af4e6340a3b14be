//! The real binary under a real `mpirun`: complete, consistent per-rank metrics, and data
//! parallelism that is exactly big-batch training.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

const RECORD_KEYS: &[&str] = &[
    "training_time",
    "tokens_per_sec",
    "validation_loss",
    "bleu",
    "epoch",
    "rank",
    "world_size",
    "global_batch_size",
    "local_batch_size",
    "steps",
    "tokens",
    "target_tokens",
    "target_tokens_per_sec",
    "train_loss",
    "compute_time",
    "allreduce_time",
    "param_checksum",
];

#[test]
fn two_ranks_write_complete_and_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(mpirun(2).args(small_run(dir.path())));
    let run = read_json(&dir.path().join("run.json"));
    let dim = |key: &str| run["dims"][key].as_f64().unwrap();
    let (c, layers, vocab) = (dim("n_embd"), dim("n_layer"), run["vocab_size"].as_f64().unwrap());
    for epoch in 0..2 {
        let (r0, r1) = (results(dir.path(), 0, epoch), results(dir.path(), 1, epoch));
        for (rank, r) in [(0, &r0), (1, &r1)] {
            for key in RECORD_KEYS {
                assert!(r.get(key).is_some(), "rank {rank} epoch {epoch} lacks {key}");
            }
            assert_eq!(r["rank"], rank);
            assert_eq!(r["world_size"], 2);
            assert_eq!(r["local_batch_size"], 8);
            // 64 examples / global batch 16 = 4 steps of 8 examples × 128 positions per rank.
            assert_eq!(r["steps"], 4);
            assert_eq!(r["tokens"], 4 * 8 * 128);
            let time = r["training_time"].as_f64().unwrap();
            let tps = r["tokens_per_sec"].as_f64().unwrap();
            assert!(time > 0.0 && (tps * time - 4096.0).abs() < 1e-6);
            let parts = r["compute_time"].as_f64().unwrap()
                + r["allreduce_time"].as_f64().unwrap()
                + r["data_time"].as_f64().unwrap();
            assert!(r["max_rss_mb"].as_f64().unwrap() > 10.0);
            assert!(parts <= time, "compute + all-reduce exceed the epoch time");
            // The matrix products' operations, from the record's own counts: every sequence
            // padded to 128, so attention's squares are 128 × the positions.
            let (tokens, targets) = (4096.0, r["target_tokens"].as_f64().unwrap());
            let flops = layers * (72.0 * c * c * tokens + 12.0 * 128.0 * c * tokens)
                + 6.0 * c * vocab * targets;
            let recorded = r["flops"].as_f64().unwrap();
            assert!((recorded / flops - 1.0).abs() < 1e-12, "{recorded} against {flops}");
            let rate = r["flops_per_sec"].as_f64().unwrap();
            assert!((rate * time / flops - 1.0).abs() < 1e-9);
            let bleu = r["bleu"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&bleu));
            assert!(r["validation_loss"].as_f64().unwrap().is_finite());
        }
        // Ranks hold the same parameters and report the same evaluation.
        for key in ["param_checksum", "validation_loss", "bleu", "train_loss"] {
            assert_eq!(r0[key], r1[key], "{key} differs between ranks in epoch {epoch}");
        }
        let gen = read_json(&dir.path().join(format!("rank0_gen_epoch{epoch}.json")));
        assert_eq!(gen.as_array().unwrap().len(), 8);
        assert!(gen[0]["source"].is_string() && gen[0]["hypothesis"].is_string());
    }
    assert_ne!(
        results(dir.path(), 0, 0)["param_checksum"],
        results(dir.path(), 0, 1)["param_checksum"]
    );
    assert_eq!(run["config"]["world_size"], 2);
    assert_eq!(run["hosts"].as_array().unwrap().len(), 2);
    assert!(run["libtorch_version"].as_str().unwrap().starts_with("2.11.0"));
    assert!(run["mpi_library"].as_str().unwrap().len() > 3);
    assert!(run["vocab_size"].as_u64().unwrap() > 100);
    assert!(dir.path().join("tokenizer.json").is_file());
    assert!(dir.path().join("model.safetensors").is_file());
    translations_match_the_trained_model(dir.path());
}

/// With the trained weights: `dp-bench translate` reproduces the last epoch's test translations,
/// and cached decoding gives exactly the tokens of uncached decoding.
fn translations_match_the_trained_model(dir: &Path) {
    use dp_bench::data::Tokenizer;
    use dp_bench::eval::prompt;
    use dp_bench::metrics::RunInfo;
    use dp_bench::model::{greedy_decode, greedy_decode_uncached, Gpt, GptConfig};
    use std::io::Write;

    let gen = read_json(&dir.join("rank0_gen_epoch1.json"));
    let gen = gen.as_array().unwrap();
    let sources: Vec<&str> = gen.iter().map(|t| t["source"].as_str().unwrap()).collect();
    let mut child = std::process::Command::new(binary())
        .args(["translate", "--workdir"])
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(sources.join("\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<String> =
        String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect();
    let expected: Vec<&str> = gen.iter().map(|t| t["hypothesis"].as_str().unwrap()).collect();
    assert_eq!(lines, expected);

    let info: RunInfo = serde_json::from_value(read_json(&dir.join("run.json"))).unwrap();
    let tok = Tokenizer::load(&dir.join("tokenizer.json")).unwrap();
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let cfg = GptConfig::new(info.dims, info.vocab_size as i64, 0.0);
    let model = Gpt::new(&vs.root(), cfg);
    vs.load(dir.join("model.safetensors")).unwrap();
    let prompts: Vec<Vec<i64>> = sources.iter().map(|s| prompt(&tok, s, 128)).collect();
    let cached = greedy_decode(&model, &prompts, tok.eos_en, tok.pad, 128);
    assert!(cached.iter().any(|o| !o.is_empty()));
    for (p, c) in prompts.iter().zip(&cached) {
        assert_eq!(c, &greedy_decode_uncached(&model, p, tok.eos_en, 128));
    }
}

fn weights(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("model.safetensors")).unwrap().into_iter().collect()
}

/// Largest norm-wise relative difference ‖a − b‖ / ‖a‖ over all parameter tensors.
fn max_relative_difference(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(name, x)| {
            let y = &b[name];
            let (x, y) = if name.ends_with("attn.c_attn.bias") {
                // Softmax ignores a constant added to every key score, so the loss does not depend
                // on the key bias: its gradient is float noise, which Adam scales up to ±lr steps
                // in either run. Compare the query and value biases; the model's outputs, checked
                // through the validation loss, cover the key bias.
                let c = x.size()[0] / 3;
                let qv = |t: &Tensor| Tensor::cat(&[t.narrow(0, 0, c), t.narrow(0, 2 * c, c)], 0);
                (qv(x), qv(y))
            } else {
                (x.shallow_clone(), y.shallow_clone())
            };
            let diff = (&x - &y).norm().double_value(&[]);
            diff / x.norm().double_value(&[]).max(1e-12)
        })
        .fold(0.0, f64::max)
}

#[test]
fn n_ranks_equal_one_rank_with_the_same_global_batch() {
    // 45 examples with global batch 12: 4 steps, the last with 9 examples (5 + 4 on 2 ranks,
    // 3 + 3 + 3 on 3, 3 + 2 + 2 + 2 on 4). Ranks beyond the cores are oversubscribed. Dynamic
    // padding pads each rank's share to its own longest example, which must change nothing but
    // float rounding.
    let flags = |dir: &Path, padding: &str| {
        let mut f = small_run(dir);
        f.extend(
            ["--train-examples", "45", "--batch-size", "12", "--n-epochs", "2", "--dropout", "0"]
                .map(String::from),
        );
        f.extend(["--padding".to_string(), padding.to_string()]);
        f
    };
    let one = tempfile::tempdir().unwrap();
    run_ok(mpirun(1).args(flags(one.path(), "fixed")));
    let a = weights(one.path());
    // Gradients are summed in shared memory (the default) and, once each, by MPI_Allreduce; the
    // optimiser is replicated (the default) or sharded over the ranks of the host.
    for (n, padding, partition, allreduce, optimizer) in [
        (2, "fixed", "strided", "shm", "replicated"),
        (2, "fixed", "strided", "shm", "sharded"),
        (2, "fixed", "strided", "mpi", "replicated"),
        (3, "fixed", "strided", "shm", "sharded"),
        (4, "fixed", "strided", "shm", "replicated"),
        (3, "fixed", "balanced", "shm", "replicated"),
        (1, "dynamic", "strided", "shm", "sharded"),
        (2, "dynamic", "strided", "shm", "replicated"),
        (4, "dynamic", "strided", "mpi", "sharded"),
        (2, "dynamic", "balanced", "shm", "sharded"),
        (2, "fixed", "adaptive", "shm", "replicated"),
        (3, "dynamic", "adaptive", "mpi", "sharded"),
    ] {
        let many = tempfile::tempdir().unwrap();
        run_ok(mpirun(n).args(flags(many.path(), padding)).args([
            "--partition",
            partition,
            "--allreduce",
            allreduce,
            "--optimizer-state",
            optimizer,
        ]));
        let rel = max_relative_difference(&a, &weights(many.path()));
        assert!(
            rel < 1e-5,
            "{n} ranks, {padding} padding, {allreduce}, {optimizer}: max relative difference {rel}"
        );
        for epoch in 0..2 {
            let r1 = results(one.path(), 0, epoch);
            let rn: Vec<_> = (0..n).map(|r| results(many.path(), r, epoch)).collect();
            assert_eq!(r1["steps"], 4);
            for key in ["validation_loss", "train_loss"] {
                let (x, y) = (r1[key].as_f64().unwrap(), rn[0][key].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-5 * x.abs(),
                    "{n} ranks, {padding} padding, epoch {epoch} {key}: {x} vs {y}"
                );
            }
            // Every rank holds exactly the same parameters after every epoch.
            assert!(rn.iter().all(|r| r["param_checksum"] == rn[0]["param_checksum"]), "{n} ranks");
            if padding == "dynamic" {
                assert!(rn[0]["tokens"].as_u64() < r1["tokens"].as_u64(), "dynamic pads less");
            }
        }
    }
    // The comparison is not vacuous: a different global batch gives different parameters.
    let other = tempfile::tempdir().unwrap();
    let mut f = flags(other.path(), "fixed");
    f.extend(["--batch-size", "24"].map(String::from));
    run_ok(mpirun(1).args(f));
    assert!(max_relative_difference(&a, &weights(other.path())) > 1e-3);
}

#[test]
fn the_same_seed_twice_gives_identical_metrics_except_times() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_ok(mpirun(2).args(small_run(a.path())));
    run_ok(mpirun(2).args(small_run(b.path())));
    for epoch in 0..2 {
        for rank in 0..2 {
            let x = without_timings(results(a.path(), rank, epoch));
            let y = without_timings(results(b.path(), rank, epoch));
            assert_eq!(x, y, "rank {rank} epoch {epoch}");
        }
        let gen = |d: &Path| std::fs::read(d.join(format!("rank0_gen_epoch{epoch}.json"))).unwrap();
        assert_eq!(gen(a.path()), gen(b.path()));
    }
    assert_eq!(
        std::fs::read(a.path().join("model.safetensors")).unwrap(),
        std::fs::read(b.path().join("model.safetensors")).unwrap()
    );
}

#[test]
fn independent_copies_each_train_the_one_rank_run_exactly() {
    let (one, copies) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_ok(std::process::Command::new(binary()).args(small_run(one.path())));
    let out = run_ok(mpirun(2).arg("--independent").args(small_run(copies.path())));
    // The first copy speaks for both.
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.matches("2 independent copies of 1 rank").count(), 1, "{said}");
    assert!(!copies.path().join("run.json").exists(), "the copies' directory is not a run");
    for copy in 0..2 {
        let dir = copies.path().join(format!("copy{copy}"));
        assert_eq!(read_json(&dir.join("run.json"))["config"]["copies"], 2);
        for epoch in 0..2 {
            let (x, y) = (results(one.path(), 0, epoch), results(&dir, 0, epoch));
            assert_eq!(without_timings(x), without_timings(y), "copy {copy} epoch {epoch}");
        }
        assert_eq!(
            std::fs::read(one.path().join("model.safetensors")).unwrap(),
            std::fs::read(dir.join("model.safetensors")).unwrap()
        );
    }
    // `compare` reads the copies as one run of two ranks, each on the one-rank run's batch.
    let report = copies.path().join("report");
    run_ok(
        std::process::Command::new(binary())
            .args(["compare", "--warmup", "0"])
            .arg(one.path())
            .arg(copies.path())
            .arg("--out")
            .arg(&report),
    );
    let summary = read_json(&report.join("summary.json"));
    let c = &summary["configs"][1];
    assert_eq!(c["id"], "ws2_bs32_independent", "{c}");
    assert_eq!((c["world_size"].as_u64(), c["local_batch_size"].as_u64()), (Some(2), Some(16)));
    assert_eq!(summary["speedup"][0]["id"], "ws2_bs32_independent");
    // An ordinary run's directory is not overwritten by copies unless asked, nor one rank copied.
    let refused = run(mpirun(2).arg("--independent").args(small_run(one.path())));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("holds an ordinary run's results") && err.contains("--overwrite"),
        "{err}"
    );
    assert!(one.path().join("run.json").exists() && !one.path().join("copy0").exists());
    let alone = run(mpirun(1).arg("--independent").args(small_run(copies.path())));
    assert!(!alone.status.success());
    let err = String::from_utf8_lossy(&alone.stderr);
    assert!(err.contains("launch at least 2"), "{err}");
}

#[test]
fn plain_binary_runs_as_one_rank_on_multi30k() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(binary());
    cmd.args(small_run(dir.path())).arg("--dataset").arg(multi30k()).args([
        "--n-epochs",
        "1",
        "--max-batches",
        "2",
    ]);
    run_ok(&mut cmd);
    let r = results(dir.path(), 0, 0);
    assert_eq!(r["world_size"], 1);
    assert_eq!(r["steps"], 2);
    let run = read_json(&dir.path().join("run.json"));
    assert!(run["config"]["dataset"]["path"].as_str().unwrap().ends_with("multi30k"));
    let gen = read_json(&dir.path().join("rank0_gen_epoch0.json"));
    assert_eq!(gen[0]["source"], "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.");
}
