//! The bench across hosts, end to end on one machine: MPICH's own launcher places ranks on named
//! "hosts" that are this machine (`mpiexec -launcher fork -hosts h1,h2 -ppn 1`), which MPI then
//! treats as two nodes; a stand-in `srun` (tests/fixtures/srun) starts ranks that way, answers
//! `srun --mpi=list`, and can hide the runs directory from every rank but rank 0, as a host that
//! does not mount it would.

mod common;

use clap::Parser;
use common::{binary, read_json};
use dp_bench::bench::plan::BenchArgs;
use dp_bench::bench::summary::Summary;
use std::path::{Path, PathBuf};

const FORK_HOSTS: &str = "mpiexec -launcher fork -hosts h1,h2 -ppn 1";

fn stand_in_srun() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/srun")
}

fn args(flags: &[&str]) -> BenchArgs {
    BenchArgs::try_parse_from(["data_parallel"].iter().chain(flags)).unwrap()
}

/// `cargo bench --bench data_parallel -- FLAGS` at a small size, written under `root`: its
/// checks (as the bench's `main` runs them), then the bench.
fn bench(root: &Path, flags: &[&str]) -> anyhow::Result<Summary> {
    let small = ["--quick", "--epochs", "3", "--train-examples", "256", "--no-reference"];
    let args = args(&[&small[..], flags].concat());
    args.validate()?;
    args.check_machine()?;
    dp_bench::bench::runner::run_bench(&args, Path::new(binary()), root)
}

fn runs(root: &Path) -> PathBuf {
    root.join("target/criterion/data_parallel/runs")
}

/// The 2-rank configuration's ranks sat on two MPI nodes: its run.json and the reports say so.
fn on_two_nodes(root: &Path, summary: &Summary) {
    let info = read_json(&runs(root).join("ws2_bs32/run.json"));
    assert_eq!(info["nodes"], serde_json::json!([0, 1]), "{info}");
    assert_eq!(info["hosts"].as_array().unwrap().len(), 2);
    let ws2 = summary.configs.iter().find(|c| c.id == "ws2_bs32").unwrap();
    assert!(ws2.run.as_ref().unwrap().config.world_size == 2);
    let html =
        std::fs::read_to_string(root.join("target/criterion/data_parallel/report/index.html"))
            .unwrap();
    assert!(html.contains("2 <small>(2 nodes × 1 rank)</small>"), "the report's ranks per node");
    let table = std::fs::read_to_string(root.join("target/criterion/data_parallel/table.md"));
    let table = table.unwrap();
    assert!(table.contains("| 2 (2 nodes × 1 rank) |"), "{table}");
    let s = summary.speedup.iter().find(|s| s.id == "ws2_bs32").unwrap();
    assert!(s.unlike.is_empty(), "like for like across hosts: {:?}", s.unlike);
    assert!(s.world_size == 2 && s.tokens_per_sec.point.is_finite(), "{s:?}");
}

#[test]
fn the_bench_runs_across_two_hosts_with_an_mpi_launcher_given_hosts() {
    let root = tempfile::tempdir().unwrap();
    let summary = bench(root.path(), &["--launcher", FORK_HOSTS]).unwrap();
    let ids: Vec<&str> = summary.configs.iter().map(|c| c.id.as_str()).collect();
    // World sizes up to the two hosts the launcher names, and the cores' ceiling across them.
    assert_eq!(ids, ["ws1_bs16", "ws2_bs32", "ws2_bs32_independent"]);
    on_two_nodes(root.path(), &summary);
    let copies = summary.configs.iter().find(|c| c.id.ends_with("_independent")).unwrap();
    assert_eq!(copies.run.as_ref().unwrap().nodes, Some(vec![0, 1]), "one copy a node");
    // Run one after another: no gate was left, and no time budget was taken.
    assert!(summary.sampling.is_none());
    assert!(!std::fs::read_dir(runs(root.path())).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));
}

#[test]
fn the_bench_runs_through_srun_with_world_sizes_from_the_allocation() {
    // An allocation of two tasks on two nodes, as `salloc -N 2 -n 2` leaves it.
    for (var, value) in
        [("SLURM_JOB_ID", "4242"), ("SLURM_NTASKS", "2"), ("SLURM_JOB_NUM_NODES", "2")]
    {
        std::env::set_var(var, value);
    }
    let srun = stand_in_srun();
    let srun = srun.to_str().unwrap();
    let planned = args(&["--launcher", srun]).devices().unwrap();
    assert_eq!(planned.world_sizes, [1, 2], "from SLURM_NTASKS");
    assert!(planned.describe().contains("Slurm job 4242: 2 tasks (SLURM_NTASKS) on 2 nodes"));
    // A world size the allocation has no room for is refused before anything starts.
    let e = args(&["--launcher", srun, "--world-sizes", "1,4"]).validate().unwrap_err();
    let e = e.to_string();
    assert!(e.contains("4 ranks") && e.contains("room for 2") && e.contains("salloc"), "{e}");
    // Nor does it take a time budget: configurations across hosts cannot take turns.
    let e = args(&["--launcher", srun, "--time-budget", "5m"]).validate().unwrap_err();
    assert!(e.to_string().contains("one after another"), "{e}");

    let root = tempfile::tempdir().unwrap();
    let summary = bench(root.path(), &["--launcher", srun, "--no-independent"]).unwrap();
    let ids: Vec<&str> = summary.configs.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["ws1_bs16", "ws2_bs32"]);
    on_two_nodes(root.path(), &summary);
}

#[test]
fn a_runs_directory_that_a_host_does_not_see_is_refused_before_anything_runs() {
    let root = tempfile::tempdir().unwrap();
    let runs = runs(root.path());
    std::fs::create_dir_all(&runs).unwrap();
    let launcher = format!("{} --fake-unshared={}", stand_in_srun().display(), runs.display());
    let flags = ["--launcher", &launcher, "--world-sizes", "1,2", "--no-independent"];
    let e = bench(root.path(), &flags).unwrap_err();
    assert!(e.is::<dp_bench::UsageError>(), "bad input, exit status 2: {e}");
    let e = e.to_string();
    assert!(
        e.contains("is not the same directory on every host")
            && e.contains("rank 1 on")
            && e.contains("CARGO_TARGET_DIR"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 0, "nothing ran, nothing was left");
}
