//! Another trainer's results: `dp-bench compare` on directories of the course's
//! `rank{r}_results_epoch{e}.json` (no run.json), mixed with dp-bench's own runs; the bad and
//! mixed directories it refuses; scripts/dp_records.py, the record writer for Python trainers;
//! and `cargo bench --bench data_parallel -- --trainer` running a real PyTorch DDP trainer.

mod common;

use common::fake::fake_run;
use common::{binary, read_json, run, snapshot};
use dp_bench::bench::plan::BenchArgs;
use dp_bench::config::Preset;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

fn compare(dirs: &[&Path], out: &Path, extra: &[&str]) -> Output {
    run(Command::new(binary()).arg("compare").args(dirs).arg("--out").arg(out).args(extra))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `record` as rank `rank`'s record of epoch `epoch`, modified at `at` seconds.
fn write(dir: &Path, rank: usize, epoch: usize, record: &Value, at: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("rank{rank}_results_epoch{epoch}.json"));
    std::fs::write(&path, record.to_string()).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(at)).unwrap();
}

/// A course-format run: `times[r][e]` seconds and `tps[r][e]` tokens/s for rank r's epoch
/// `first + e`, the assignment's four keys and nothing else, one epoch a minute from `t0`.
fn course_run(dir: &Path, first: usize, times: &[Vec<f64>], tps: &[Vec<f64>], t0: u64) {
    for (r, (ts, ps)) in times.iter().zip(tps).enumerate() {
        for (e, (t, p)) in ts.iter().zip(ps).enumerate() {
            let record = json!({
                "training_time": t, "tokens_per_sec": p,
                "validation_loss": 3.0 - e as f64 * 0.1, "bleu": e as f64,
            });
            write(dir, r, first + e, &record, t0 + 60 * e as u64);
        }
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn the_course_results_compare_as_the_course_aggregates_them_with_intervals() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws1, ws2, out) = (tmp.path().join("ws1"), tmp.path().join("ws2"), tmp.path().join("rep"));
    let t1 = vec![vec![50.0, 40.2, 39.8, 40.5, 40.1, 39.9]];
    let p1 = vec![vec![600.0, 745.0, 752.0, 740.0, 748.0, 751.0]];
    let t2 =
        vec![vec![30.0, 21.0, 21.4, 20.8, 21.2, 21.1], vec![30.5, 21.3, 21.2, 21.0, 21.5, 21.0]];
    let p2 = vec![
        vec![500.0, 710.0, 700.0, 720.0, 705.0, 708.0],
        vec![490.0, 700.0, 702.0, 711.0, 698.0, 709.0],
    ];
    // 0-based epochs (the course's) and 1-based ones, whose first epoch is the warm-up too.
    course_run(&ws1, 0, &t1, &p1, 1_000);
    course_run(&ws2, 1, &t2, &p2, 5_000);
    let o = compare(&[&ws1, &ws2], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("data_parallel/ws2") && text.contains("speedup over ws1"), "{text}");
    assert!(text.contains("all-reduce time not recorded by this run"), "{text}");

    // The course's aggregation: warm-up epoch dropped, time averaged over ranks then epochs,
    // throughput summed over ranks then averaged.
    let course_time = |t: &[Vec<f64>]| {
        mean(
            &(1..t[0].len())
                .map(|e| mean(&t.iter().map(|r| r[e]).collect::<Vec<_>>()))
                .collect::<Vec<_>>(),
        )
    };
    let course_tps = |p: &[Vec<f64>]| {
        mean(&(1..p[0].len()).map(|e| p.iter().map(|r| r[e]).sum::<f64>()).collect::<Vec<_>>())
    };
    let s = read_json(&out.join("summary.json"));
    let config = |i: usize| &s["configs"][i];
    for (i, (t, p)) in [(&t1, &p1), (&t2, &p2)].into_iter().enumerate() {
        let c = config(i);
        assert!((c["training_time"]["mean"].as_f64().unwrap() - course_time(t)).abs() < 1e-9);
        assert!((c["tokens_per_sec"]["mean"].as_f64().unwrap() - course_tps(p)).abs() < 1e-9);
        assert!(c["training_time"]["lower"].as_f64() < c["training_time"]["mean"].as_f64());
        assert_eq!(c["epochs_measured"], 5);
        assert_eq!(c["implementation"], "own trainer");
        // Nothing the records lack is made up.
        for key in ["global_batch_size", "threads", "preset", "run", "allreduce_share"] {
            assert!(c[key].is_null(), "{key}: {}", c[key]);
        }
        assert!(c["samples"]["compute_time"].as_array().unwrap().is_empty());
        assert_eq!(c["samples"]["bleu"].as_array().unwrap().len(), 5, "optional keys are used");
    }
    assert_eq!(config(1)["samples"]["epochs"], json!([2, 3, 4, 5, 6]));
    let speedup = &s["speedup"][0];
    assert_eq!((speedup["id"].as_str(), speedup["reference"].as_str()), (Some("ws2"), Some("ws1")));
    let ratio = speedup["training_time"]["point"].as_f64().unwrap();
    assert!((ratio - course_time(&t1) / course_time(&t2)).abs() < 1e-9);
    assert!(speedup["efficiency_interval"]["lower"].as_f64() < speedup["efficiency"].as_f64());
    for f in ["report/index.html", "table.md", "figures/training_time_comparison.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(html.contains("not recorded by this run"));
}

#[test]
fn dp_bench_runs_and_another_trainers_mix_in_one_comparison_under_their_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours1");
    fake_run(&ours, Preset::Tiny, &[&[3.0, 1.0, 1.02, 0.98, 1.01]]);
    let theirs = tmp.path().join("workdir_ws2");
    course_run(
        &theirs,
        0,
        &[vec![3.0, 0.6, 0.61, 0.59, 0.6], vec![3.0, 0.61, 0.6, 0.6, 0.59]],
        &[vec![900.0; 5], vec![905.0; 5]],
        100,
    );
    let out = tmp.path().join("rep");
    let o = compare(
        &[&ours, &theirs],
        &out,
        &["--label", &format!("{}=pytorch ws2", theirs.display())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["configs"][0]["id"], "ws1_bs16");
    assert_eq!(s["configs"][1]["id"], "pytorch ws2");
    assert_eq!(s["reference"], "ws1_bs16");
    assert!(!s["configs"][0]["run"].is_null() && s["configs"][1]["run"].is_null());
    // A label for a directory not given, or without a name, is bad input.
    for bad in ["elsewhere=x", "noequals", &format!("{}=", theirs.display())] {
        let o = compare(&[&ours, &theirs], &tmp.path().join("bad"), &["--label", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains("--label"), "{}", stderr(&o));
    }
    // Two foreign runs with one directory name need labels.
    let (a, b) = (tmp.path().join("a/ws2"), tmp.path().join("b/ws2"));
    for d in [&a, &b] {
        course_run(d, 0, &[vec![1.0, 1.0, 1.1, 1.0]], &[vec![5.0; 4]], 100);
    }
    let o = compare(&[&a, &b], &tmp.path().join("dup"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--label DIR=NAME"), "{}", stderr(&o));
}

/// What spoils a good run directory in one of the bad cases.
type Spoil = Box<dyn Fn(&Path)>;

#[test]
fn bad_and_mixed_directories_are_refused_naming_the_file_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("ws1");
    course_run(&good, 0, &[vec![2.0, 1.0, 1.1, 1.0]], &[vec![5.0; 4]], 100);
    let two = |dir: &Path| {
        course_run(
            dir,
            0,
            &[vec![2.0, 0.5, 0.6, 0.5], vec![2.0, 0.5, 0.5, 0.6]],
            &[vec![5.0; 4], vec![5.0; 4]],
            100,
        )
    };
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "not JSON",
            Box::new(|d: &Path| {
                std::fs::write(d.join("rank1_results_epoch2.json"), "{oops").unwrap()
            }),
            "rank1_results_epoch2.json",
        ),
        (
            "a missing rank",
            Box::new(|d: &Path| std::fs::remove_file(d.join("rank1_results_epoch3.json")).unwrap()),
            "rank1_results_epoch3.json",
        ),
        (
            "a zero time",
            Box::new(|d: &Path| {
                write(d, 0, 2, &json!({"training_time": 0, "tokens_per_sec": 5}), 220)
            }),
            "training_time is 0",
        ),
        (
            "a negative time",
            Box::new(|d: &Path| {
                write(d, 1, 1, &json!({"training_time": -0.5, "tokens_per_sec": 5}), 160)
            }),
            "training_time is -0.5",
        ),
        (
            "a zero throughput",
            Box::new(|d: &Path| {
                write(d, 1, 1, &json!({"training_time": 1, "tokens_per_sec": 0}), 160)
            }),
            "tokens_per_sec is 0",
        ),
        (
            "too few epochs",
            Box::new(|d: &Path| {
                for r in 0..2 {
                    std::fs::remove_file(d.join(format!("rank{r}_results_epoch3.json"))).unwrap();
                    std::fs::remove_file(d.join(format!("rank{r}_results_epoch2.json"))).unwrap()
                }
            }),
            "at least 2 are needed",
        ),
        // The course's documented layout: the 1-rank run after the 2-rank run, into one workdir.
        (
            "two runs in one workdir",
            Box::new(|d: &Path| {
                course_run(d, 0, &[vec![3.0, 1.0, 1.1, 1.0]], &[vec![5.0; 4]], 9_000)
            }),
            "needs its own workdir",
        ),
    ];
    for (what, spoil, expect) in cases {
        let dir = tmp.path().join(what.replace(' ', "_"));
        two(&dir);
        spoil(&dir);
        let before = snapshot(&dir);
        let out = tmp.path().join(format!("out_{}", what.replace(' ', "_")));
        let o = compare(&[&good, &dir], &out, &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            err.contains(&dir.display().to_string()),
            "{what}: the directory or file named: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        assert!(!out.exists(), "{what}: nothing written");
        assert_eq!(snapshot(&dir), before, "{what}: the records untouched");
    }
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = compare(&[&good, &empty], &tmp.path().join("o"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a run directory"), "{}", stderr(&o));
}

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn dp_records_writes_what_compare_reads_and_refuses_what_it_would_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let code = format!(
        r#"
import math, sys
sys.path.insert(0, {scripts:?})
import dp_records as d
w = {dir:?}
for e in range(4):
    for r in range(2):
        d.write_epoch(w, r, e, 1.5 + e, 1000.0, validation_loss=math.nan if e == 3 else 2.5,
                      bleu=12.0, tokens=1500, compute_time=1.0, allreduce_time=0.25,
                      wait_time=0.05, data_time=0.1, world_size=2, global_batch_size=64)
for bad in [dict(training_time=0), dict(tokens_per_sec=math.inf), dict(tokens=-1), dict(gpus=3)]:
    args = dict(training_time=1.0, tokens_per_sec=1.0)
    args.update(bad)
    try:
        d.write_epoch(w, 0, 9, **args)
        sys.exit(f"accepted {{bad}}")
    except (ValueError, TypeError) as e:
        print("refused:", e)
"#,
        scripts = script("scripts").display().to_string(),
        dir = tmp.path().join("run").display().to_string(),
    );
    let o = run(Command::new(python()).arg("-c").arg(&code));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).matches("refused:").count(), 4);
    let dir = tmp.path().join("run");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        8,
        "no temporary left, nothing written for a refused record: {names:?}"
    );
    let last = read_json(&dir.join("rank1_results_epoch3.json"));
    assert!(last["validation_loss"].is_null(), "NaN is written as null");
    // The optional keys unlock the time split and the global batch.
    let out = tmp.path().join("rep");
    let o = compare(&[&dir], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = &read_json(&out.join("summary.json"))["configs"][0];
    assert_eq!((c["world_size"].as_u64(), c["global_batch_size"].as_u64()), (Some(2), Some(64)));
    assert!((c["allreduce_share"].as_f64().unwrap() - 0.25 / 3.5).abs() < 1e-9);
    assert_eq!(c["samples"]["compute_time"].as_array().unwrap().len(), 3);
}

/// `cargo bench --bench data_parallel -- --trainer …` with `args`, written under `root`.
fn trainer_bench(root: &Path, args: &[&str]) -> anyhow::Result<dp_bench::bench::summary::Summary> {
    use clap::Parser;
    let args = BenchArgs::try_parse_from(["data_parallel"].iter().chain(args)).unwrap();
    dp_bench::bench::runner::run_bench(&args, Path::new(binary()), root)
}

#[test]
fn the_bench_runs_a_pytorch_ddp_trainer_at_each_world_size_and_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, cwd) = (tmp.path().join("root"), tmp.path().join("course"));
    std::fs::create_dir_all(&cwd).unwrap();
    // As the course's script: it writes ./workdir where it runs, with no flag to change it.
    let command = format!(
        "cd {} && {} {} --world_size {{world_size}} --batch_size {{batch_size}} --n_epochs {{epochs}}",
        cwd.display(),
        python().display(),
        script("tests/fixtures/ddp_trainer.py").display()
    );
    let workdir = cwd.join("workdir");
    let flags =
        ["--trainer", &command, "--trainer-dir", workdir.to_str().unwrap(), "--epochs", "3"];
    let summary = trainer_bench(&root, &flags).unwrap();
    let ids: Vec<&str> = summary.configs.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["ws1_bs16", "ws2_bs32"]);
    assert_eq!(summary.speedup.len(), 1);
    let c = &summary.configs[1];
    assert_eq!((c.world_size, c.global_batch_size, c.epochs_measured), (2, Some(32), 2));
    assert!(c.command.as_deref().unwrap().contains("--world_size 2 --batch_size 32 --n_epochs 3"));
    assert!(c.run.is_none() && c.implementation == "own trainer");
    // Everything the command wrote moved into the run directory; its ./workdir is gone.
    let run_dir = root.join("target/criterion/data_parallel/runs/ws2_bs32");
    for f in ["rank1_results_epoch2.json", "rank1_gen_epoch2.json", "config.json", "trainer.log"] {
        assert!(run_dir.join(f).is_file(), "{f}");
    }
    assert!(!workdir.exists());
    assert!(root.join("target/criterion/data_parallel/report/index.html").is_file());

    // A trainer directory that holds the user's files is refused before anything runs.
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::write(workdir.join("notes.txt"), "mine").unwrap();
    let e = trainer_bench(&root, &flags).unwrap_err().to_string();
    assert!(e.contains("is not empty") && e.contains("workdir"), "{e}");
    assert_eq!(std::fs::read_to_string(workdir.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn a_trainer_that_fails_fails_its_configuration_with_its_output() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    // World size 2 fails; world size 1 writes its records and is analysed all the same.
    let command = format!(
        "if [ {{world_size}} = 2 ]; then echo 'CUDA error: out of memory'; exit 3; fi; \
         {} -c 'import sys; sys.path.insert(0, \"{}\"); import dp_records as d; \
         [d.write_epoch(\"{{workdir}}\", 0, e, 1.0 + e / 10, 100.0) for e in range(3)]'",
        python().display(),
        script("scripts").display()
    );
    let e =
        trainer_bench(&root, &["--trainer", &command, "--epochs", "3"]).unwrap_err().to_string();
    assert!(e.contains("configurations failed: ws2_bs32"), "{e}");
    let summary = read_json(&root.join("target/criterion/data_parallel/summary.json"));
    assert_eq!(summary["configs"][0]["id"], "ws1_bs16");
    let log = std::fs::read_to_string(
        root.join("target/criterion/data_parallel/runs/ws2_bs32/trainer.log"),
    )
    .unwrap();
    assert!(log.contains("out of memory"));
    // A command that writes nothing fails with the reason.
    let e = trainer_bench(&root, &["--trainer", "true {world_size}", "--epochs", "3"]).unwrap_err();
    assert!(e.to_string().contains("every configuration failed"), "{e}");
}
