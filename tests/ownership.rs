//! Nothing lost, nothing hung: a run owns its workdir, results are never replaced without
//! `--resume` or `--overwrite`, no subcommand writes over a run's files, and what cannot be
//! trained or computed is refused at once. Each case asserts the exit status, the message's key
//! words, a bounded time, and that the workdir's files are byte for byte what they were.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd`, which must end within `limit`, and returns its output.
fn bounded(cmd: &mut Command, limit: Duration) -> Output {
    let start = Instant::now();
    let out = run(cmd);
    assert!(start.elapsed() < limit, "took {:?}, more than {limit:?}", start.elapsed());
    out
}

fn refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

const QUICK: [&str; 5] = ["--benchmark-only", "--n-epochs", "2", "--max-batches", "1"];

/// A finished two-epoch run in a fresh directory.
fn finished_run() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    run_ok(Command::new(binary()).args(small_run(dir.path())).args(QUICK));
    dir
}

#[test]
fn finished_results_are_never_replaced_without_resume_or_overwrite() {
    let dir = finished_run();
    let before = snapshot(dir.path());
    // The same configuration again, and fewer epochs (another configuration): both refused,
    // nothing touched.
    let cases: [(&[&str], &[&str]); 2] = [
        (&[], &["holds this configuration's results", "--resume", "--overwrite"]),
        (&["--n-epochs", "1"], &["n_epochs: 2 → 1", "--overwrite"]),
    ];
    for (extra, needles) in cases {
        let mut cmd = Command::new(binary());
        cmd.args(small_run(dir.path())).args(QUICK).args(extra);
        let out = bounded(&mut cmd, Duration::from_secs(60));
        refused(&out, needles);
        assert_eq!(snapshot(dir.path()), before, "refused with {extra:?}, yet files changed");
    }
    // --resume with nothing left to do: exit 0, and not a byte changed (run.json included).
    for epochs in ["2", "1"] {
        let mut cmd = Command::new(binary());
        cmd.args(small_run(dir.path())).args(QUICK).args(["--resume", "--n-epochs", epochs]);
        let out = bounded(&mut cmd, Duration::from_secs(60));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("nothing to do, nothing changed"), "{said}");
        assert_eq!(snapshot(dir.path()), before, "--resume --n-epochs {epochs} changed files");
    }
    // --overwrite says what to do with them.
    run_ok(Command::new(binary()).args(small_run(dir.path())).args(QUICK).arg("--overwrite"));
}

#[test]
fn a_second_run_into_a_workdir_in_use_is_refused_with_the_holder_named() {
    let dir = tempfile::tempdir().unwrap();
    // The first run trains for a while: enough epochs for the second to meet it.
    let mut first = Command::new(binary())
        .args(small_run(dir.path()))
        .args(["--benchmark-only", "--n-epochs", "200", "--seed", "1234"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.path().join(".dp-bench.lock");
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|l| l.starts_with("pid ")) {
        assert!(start.elapsed() < Duration::from_secs(60), "the first run never took its lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    for extra in [&["--seed", "7"][..], &["--seed", "1234", "--resume"][..]] {
        let mut cmd = Command::new(binary());
        cmd.args(small_run(dir.path())).args(["--benchmark-only", "--n-epochs", "200"]);
        let out = bounded(cmd.args(extra), Duration::from_secs(60));
        refused(&out, &["is in use by pid", &format!("pid {} on ", first.id()), "--workdir"]);
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // What the killed run left is taken over, and named, by the next run.
    let mut cmd = Command::new(binary());
    cmd.args(small_run(dir.path())).args(QUICK).args(["--seed", "1234", "--overwrite"]);
    let out = run_ok(&mut cmd);
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ended without releasing this workdir"), "{said}");
    assert_eq!(read_json(&dir.path().join("run.json"))["config"]["seed"], 1234);
}

#[test]
fn no_subcommand_writes_over_a_runs_files() {
    let dir = finished_run();
    let before = snapshot(dir.path());
    let export = |out: &Path| {
        let mut cmd = Command::new(binary());
        cmd.args(["export-examples", "--workdir"]).arg(dir.path()).arg("--out").arg(out);
        bounded(&mut cmd, Duration::from_secs(60))
    };
    for own in ["run.json", "rank0_results_epoch0.json", "tokenizer.json"] {
        refused(&export(&dir.path().join(own)), &["a file of the run in", "write elsewhere"]);
    }
    refused(&export(&dir.path().join("no/such/folder/x.json")), &["does not exist"]);
    let mut cmd = Command::new(binary());
    cmd.args(["compare"]).arg(dir.path()).arg("--out").arg(dir.path());
    refused(&bounded(&mut cmd, Duration::from_secs(60)), &["run directories compared"]);
    let other = finished_run();
    let mut cmd = Command::new(binary());
    cmd.args(["compare"]).arg(other.path()).arg("--out").arg(dir.path());
    refused(&bounded(&mut cmd, Duration::from_secs(60)), &["is a run directory"]);
    assert_eq!(snapshot(dir.path()), before);
    // Beside the run's files, an export is the user's business (the bench keeps one there).
    assert!(export(&dir.path().join("examples.json")).status.success());
}

#[test]
fn translate_takes_checkpoints_and_names_what_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(Command::new(binary()).args(small_run(dir.path())).args([
        "--n-epochs",
        "1",
        "--max-batches",
        "1",
    ]));
    let translate = |weights: Option<&Path>, input: &[u8]| {
        let mut cmd = Command::new(binary());
        cmd.args(["translate", "--workdir"]).arg(dir.path());
        if let Some(w) = weights {
            cmd.arg("--checkpoint").arg(w);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let final_weights = translate(None, b"ein Hund\n");
    assert!(final_weights.status.success(), "{}", String::from_utf8_lossy(&final_weights.stderr));
    let checkpoint = dir.path().join("checkpoint-epoch0.safetensors");
    let from_checkpoint = translate(Some(&checkpoint), b"ein Hund\n");
    assert!(from_checkpoint.status.success());
    assert_eq!(
        from_checkpoint.stdout, final_weights.stdout,
        "the last checkpoint is the final model"
    );
    refused(&translate(None, b"\xff\xfe not text\n"), &["stdin", "UTF-8"]);
    // Weights of another model: a small-preset run's.
    let other = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(binary())
            .args(small_run(other.path()))
            .args(QUICK)
            .args(["--preset", "small"]),
    );
    for weights in ["model.safetensors", "checkpoint-epoch1.safetensors"] {
        let out = translate(Some(&other.path().join(weights)), b"ein Hund\n");
        refused(&out, &[weights, "this run's model.safetensors"]);
    }
}

#[test]
fn what_cannot_train_or_run_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w");
    // No target token survives --model-max-length 8 of twenty-word sentences.
    let long = "wort ".repeat(20) + "\n";
    let data = tempfile::tempdir().unwrap();
    for split in ["train", "val", "test"] {
        std::fs::write(data.path().join(format!("{split}.de")), long.repeat(70)).unwrap();
        std::fs::write(data.path().join(format!("{split}.en")), long.repeat(70)).unwrap();
    }
    let mut cmd = Command::new(binary());
    cmd.args(small_run(&w)).args(QUICK).arg("--dataset").arg(data.path());
    let out = bounded(cmd.args(["--model-max-length", "8"]), Duration::from_secs(60));
    refused(&out, &["keeps a target token", "--model-max-length 8", "0/0"]);
    assert!(!w.join("run.json").exists());
    // Threads beyond the cores: refused at once, not spawned.
    let mut cmd = Command::new(binary());
    let out =
        bounded(cmd.args(small_run(&w)).args(["--threads", "100000"]), Duration::from_secs(20));
    refused(&out, &["--threads 100000", "lower --threads"]);
    // An empty test set has no BLEU.
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("bleu").arg("--hyp").arg(&empty).arg("--ref").arg(&empty);
    let out = bounded(&mut cmd, Duration::from_secs(20));
    refused(&out, &["empty test set"]);
}

#[test]
fn the_bench_bounds_its_plan_before_anything_starts() {
    use clap::Parser;
    use dp_bench::bench::plan::BenchArgs;
    let refusal = |args: &[&str]| {
        let parsed = BenchArgs::try_parse_from(["data_parallel"].iter().chain(args)).unwrap();
        parsed.validate().and_then(|_| parsed.check_machine()).unwrap_err().to_string()
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    let err = refusal(&["--world-sizes", "0,1"]);
    assert!(err.contains("0 ranks cannot train"), "{err}");
    let too_many = (cores + 1).to_string();
    let err = refusal(&["--world-sizes", &format!("1,{too_many}")]);
    assert!(
        err.contains(&format!("{too_many} ranks")) && err.contains("lower the world sizes"),
        "{err}"
    );
    let err = refusal(&["--world-sizes", "1", "--batch", "64", "--train-examples", "32"]);
    assert!(err.contains("64 examples a step") && err.contains("--train-examples"), "{err}");
    let err = refusal(&["--world-sizes", "1", "--mpirun", "/no/such/mpirun"]);
    assert!(
        err.contains("\"/no/such/mpirun\" is not found") && err.contains("DP_BENCH_MPIRUN"),
        "{err}"
    );
}

#[test]
fn records_are_checked_before_any_statistics() {
    let dir = finished_run();
    let out = tempfile::tempdir().unwrap();
    let record = dir.path().join("rank0_results_epoch1.json");
    let good = std::fs::read(&record).unwrap();
    let cases: [(&str, serde_json::Value, &str); 3] = [
        ("global_batch_size", 32.into(), "run.json says batch_size 16"),
        ("tokens_per_sec", 0.into(), "tokens_per_sec"),
        ("training_time", (-1.5).into(), "training_time"),
    ];
    for (key, value, needle) in cases {
        let mut rec: serde_json::Value = serde_json::from_slice(&good).unwrap();
        rec[key] = value;
        std::fs::write(&record, rec.to_string()).unwrap();
        let before = snapshot(dir.path());
        let mut cmd = Command::new(binary());
        cmd.arg("compare").arg(dir.path()).arg("--out").arg(out.path().join(key));
        let o = bounded(&mut cmd, Duration::from_secs(30));
        refused(&o, &["rank0_results_epoch1.json", needle]);
        assert_eq!(snapshot(dir.path()), before);
        assert!(!out.path().join(key).exists(), "nothing written for {key}");
    }
}
