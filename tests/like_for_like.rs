//! Comparisons of one device with N give every rank the same share of the machine: the course's
//! two commands, run as they are written, compare like with like by default, and runs whose ranks
//! got different resources are flagged in every report, with the fix.

mod common;

use common::fake::{compare, fake_run};
use common::{mpirun, read_json, run_ok};
use dp_bench::config::Preset;
use dp_bench::metrics::write_json;
use std::path::Path;

/// The course's commands (smaller: 320 examples, 3 epochs, no evaluation), each into its own
/// workdir, then `compare`: one rank against two, one thread each, and nothing flagged.
#[test]
fn the_course_commands_compare_one_device_with_two_on_equal_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws1, ws2, out) = (tmp.path().join("ws1"), tmp.path().join("ws2"), tmp.path().join("out"));
    let course = |n: usize, batch: &str, dir: &Path| {
        let size = n.to_string();
        let mut cmd = mpirun(n);
        cmd.args(["--world_size", &size, "--batch_size", batch, "--n_epochs", "3"])
            .args(["--train-examples", "320", "--benchmark-only", "--workdir"])
            .arg(dir);
        run_ok(&mut cmd)
    };
    let first = course(1, "64", &ws1);
    let said = String::from_utf8_lossy(&first.stderr).into_owned()
        + &String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("each rank: 1 intra-op thread on the CPU"), "{said}");
    course(2, "128", &ws2);
    for dir in [&ws1, &ws2] {
        assert_eq!(read_json(&dir.join("run.json"))["threads_per_rank"], 1, "{}", dir.display());
    }
    let o = compare(&[&ws1, &ws2], &out);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&out.join("summary.json"));
    let ids: Vec<&str> =
        s["configs"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ws1_bs64", "ws2_bs128"], "no thread counts in the ids: they are equal");
    let speedup = &s["speedup"][0];
    assert_eq!(speedup["reference"], "ws1_bs64");
    assert!(speedup.get("unlike").is_none(), "{speedup}");
    assert!(!text.contains("like for like"), "{text}");
}

/// One rank with two threads and free to use two cores against two ranks with one thread each,
/// bound: the speedup is labelled, and the terminal, table.md and the HTML report each name the
/// differences and the fix.
#[test]
fn mixed_runs_are_flagged_in_every_report() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    fake_run(&d("ws1"), Preset::Tiny, &[&[9.0, 1.0, 1.0, 1.0]]);
    fake_run(&d("ws2"), Preset::Tiny, &[&[9.0, 0.6, 0.6, 0.6], &[9.0, 0.6, 0.6, 0.6]]);
    let mut info = read_json(&d("ws1").join("run.json"));
    info["config"]["threads"] = 2.into();
    info["threads_per_rank"] = 2.into();
    info["cores_per_rank"] = 2.into();
    write_json(&d("ws1").join("run.json"), &info).unwrap();

    let o = compare(&[&d("ws1"), &d("ws2")], &d("out"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = read_json(&d("out").join("summary.json"));
    let unlike: Vec<&str> = s["speedup"][0]["unlike"]
        .as_array()
        .expect("the differences, in summary.json")
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        unlike,
        [
            "threads per rank: 2 in `ws1_bs16_t2`, 1 in `ws2_bs32_t1`",
            "cores each rank could run on: 2 in `ws1_bs16_t2`, 1 in `ws2_bs32_t1`"
        ]
    );
    let terminal = String::from_utf8_lossy(&o.stdout);
    assert!(terminal.contains("speedup over ws1_bs16_t2 (NOT like for like)"), "{terminal}");
    assert!(terminal.contains("WARNING: not like for like (threads per rank: 2"), "{terminal}");
    let table = std::fs::read_to_string(d("out").join("table.md")).unwrap();
    assert!(table.contains("⚠ |"), "the speedup is marked in the table:\n{table}");
    assert!(table.contains("**Not like for like** (⚠): `ws2_bs32_t1` against"), "{table}");
    let html = std::fs::read_to_string(d("out").join("report/index.html")).unwrap();
    assert!(html.contains("<div id=unlike"), "the HTML report names them");
    assert!(html.contains("threads per rank: 2 in"), "the HTML report names them");
    for (name, text) in [("terminal", terminal.as_ref()), ("table.md", &table), ("html", &html)] {
        assert!(text.contains("rerun both with the same --threads"), "{name} names the fix");
    }
}
