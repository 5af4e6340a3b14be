//! The shared-memory all-reduce (`dist::NodeBuffer`) under a real `mpirun`: the test relaunches
//! its own binary with 4 ranks, filtered to itself, and the ranks check the sums they get.

use dp_bench::dist::NodeBuffer;
use mpi::topology::{Color, Communicator, SimpleCommunicator};

mod common;

fn under_mpi() -> bool {
    ["PMI_RANK", "OMPI_COMM_WORLD_RANK"].iter().any(|v| std::env::var_os(v).is_some())
}

/// Runs `test` (this file's test of that name) on `n` ranks.
fn relaunch(n: usize, test: &str) {
    let launcher = std::env::var("DP_BENCH_MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let mut cmd = dp_bench::bench::runner::launcher(&launcher, n);
    cmd.arg(std::env::current_exe().unwrap()).args([
        "--exact",
        test,
        "--test-threads",
        "1",
        "--nocapture",
    ]);
    common::run_ok(&mut cmd);
}

/// Rank `rank`'s contribution at element `i`: distinct per rank and element, and exact in f32
/// (small integers), so every sum order gives the same result.
fn value(rank: usize, i: usize) -> f32 {
    ((i * 7 + rank * 13) % 101) as f32 - 50.0
}

/// Fills this rank's buffer, all-reduces twice (the second time from fresh values, as a training
/// step after zeroing would) and checks every element against the sum over ranks.
fn check_sums(buffer: &NodeBuffer, len: usize, world: &SimpleCommunicator) {
    let ranks = world.size() as usize;
    let rank = world.rank() as usize;
    // SAFETY: this rank's buffer of `len` f32, used by nothing else here.
    let mine = unsafe { std::slice::from_raw_parts_mut(buffer.ptr(), len) };
    for round in 0..2 {
        for (i, x) in mine.iter_mut().enumerate() {
            *x = value(rank, i + round);
        }
        assert!(buffer.all_reduce(), "finite sums reported as non-finite");
        for (i, &x) in mine.iter().enumerate() {
            let expect: f32 = (0..ranks).map(|r| value(r, i + round)).sum();
            assert_eq!(x, expect, "rank {rank}, round {round}, element {i} of {len}");
        }
    }
}

/// One rank puts `bad` at element `at`; every rank must hear that the sum is not finite.
fn check_non_finite(buffer: &NodeBuffer, len: usize, world: &SimpleCommunicator) {
    let rank = world.rank() as usize;
    // SAFETY: this rank's buffer of `len` f32, used by nothing else here.
    let mine = unsafe { std::slice::from_raw_parts_mut(buffer.ptr(), len) };
    // The last element lives in the last rank's segment, the first in rank 0's: each bad value
    // is summed by a rank other than the one that holds it.
    for (bad, at, holder) in [(f32::NAN, len - 1, 0), (f32::INFINITY, 0, 3), (-f32::INFINITY, 0, 3)]
    {
        mine.fill(1.0);
        if rank == holder {
            mine[at] = bad;
        }
        assert!(!buffer.all_reduce(), "rank {rank}: {bad} at {at} went unnoticed");
    }
    mine.fill(1.0);
    assert!(buffer.all_reduce(), "rank {rank}: a finite sum after a non-finite one");
}

#[test]
fn ranks_sharing_memory_sum_in_place_within_and_across_groups() {
    if !under_mpi() {
        return relaunch(4, "ranks_sharing_memory_sum_in_place_within_and_across_groups");
    }
    // A failing rank ends the job rather than leaving the others in a collective.
    dp_bench::fault::abort_on_panic();
    let universe = mpi::initialize().unwrap();
    let world = universe.world();
    let rank = world.rank();
    // One host of 4: four segments (the length does not divide evenly, nor fit one piece).
    let len = 10_007;
    let host = NodeBuffer::new(&world, len).expect("4 ranks on one host share memory");
    check_sums(&host, len, &world);
    check_non_finite(&host, len, &world);
    // Two "hosts" of 2 ranks: sums within each, then across them through MPI.
    let pairs = world.split_by_color(Color::with_value(rank / 2)).unwrap();
    let across = NodeBuffer::grouped(&world, pairs, len).expect("equal groups of 2");
    check_sums(&across, len, &world);
    check_non_finite(&across, len, &world);
    // A buffer shorter than the ranks: some segments are empty.
    let pairs = world.split_by_color(Color::with_value(rank / 2)).unwrap();
    let short = NodeBuffer::grouped(&world, pairs, 3).expect("equal groups of 2");
    check_sums(&short, 3, &world);
    // One rank per group shares nothing: every rank declines, so the caller keeps MPI.
    let alone = world.split_by_color(Color::with_value(rank)).unwrap();
    assert!(NodeBuffer::grouped(&world, alone, len).is_none());
    // Groups of unequal size (3 + 1): declined on every rank.
    let uneven = world.split_by_color(Color::with_value(i32::from(rank == 3))).unwrap();
    assert!(NodeBuffer::grouped(&world, uneven, len).is_none());
}
