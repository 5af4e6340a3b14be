//! The shared-memory all-reduce (`dist::NodeBuffer`) and the sharded optimiser on it, under a
//! real `mpirun`: the test relaunches its own binary with 4 ranks, filtered to itself, and the
//! ranks check the sums and updates they get.

use dp_bench::dist::NodeBuffer;
use dp_bench::optim::{AdamW, AdamWConfig};
use mpi::topology::{Color, Communicator, SimpleCommunicator};
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

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
    // reduce_scatter: the sum lands in this rank's segment, the rest keeps its own values.
    for (i, x) in mine.iter_mut().enumerate() {
        *x = value(rank, i);
    }
    assert!(buffer.reduce_scatter(), "finite sums reported as non-finite");
    let segment = buffer.segment();
    for (i, &x) in mine.iter().enumerate() {
        let sum: f32 = (0..ranks).map(|r| value(r, i)).sum();
        let expect = if segment.contains(&i) { sum } else { value(rank, i) };
        assert_eq!(x, expect, "rank {rank}, reduce_scatter, element {i} of {len} ({segment:?})");
    }
    // Segments tile the buffer: their lengths over a group's ranks add up to it.
    let mut lengths = [0u64];
    mpi::traits::CommunicatorCollectives::all_reduce_into(
        world,
        &[segment.len() as u64][..],
        &mut lengths[..],
        mpi::collective::SystemOperation::sum(),
    );
    assert_eq!(lengths[0] as usize, len * ranks / buffer.group_size(), "segments of {len}");
}

/// The sharded optimiser gives bit for bit the replicated one's parameters, and its state
/// round-trips through `state`/`load_state`. `make(len, host_len)` builds a fresh buffer.
fn check_sharded_adamw(
    world: &SimpleCommunicator,
    make: impl Fn(usize, usize) -> Option<NodeBuffer>,
) {
    let (ranks, rank) = (world.size() as usize, world.rank() as usize);
    let sizes = [6000, 4007];
    let n: usize = sizes.iter().sum();
    let start = |k: usize| {
        let v: Vec<f32> = (0..sizes[k]).map(|i| value(9, i + 1000 * k) / 64.0).collect();
        Tensor::from_slice(&v)
    };
    let vars = [start(0), start(1)];
    let twins = [start(0), start(1)];
    let node = Rc::new(make(n, 3 * n).expect("ranks share memory"));
    let config = AdamWConfig::workload(1e-2);
    let mut sharded = AdamW::sharded(&vars, config, node.clone());
    let mut replicated = AdamW::new(&twins, config);
    assert!(sharded.is_sharded() && !replicated.is_sharded());
    // SAFETY: the gradient buffer holds `n` f32 and is never freed.
    let mut grad = unsafe {
        Tensor::from_blob(node.ptr().cast(), &[n as i64], &[1], Kind::Float, Device::Cpu)
    };
    let mut saved = None;
    for step in 0..4 {
        let mine: Vec<f32> = (0..n).map(|i| value(rank, i + step) / 8.0).collect();
        grad.copy_(&Tensor::from_slice(&mine));
        assert!(node.reduce_scatter());
        sharded.step(&grad);
        let sum: Vec<f32> =
            (0..n).map(|i| (0..ranks).map(|r| value(r, i + step) / 8.0).sum()).collect();
        replicated.step(&Tensor::from_slice(&sum));
        assert!(
            sharded.params().equal(replicated.params()),
            "rank {rank}, step {step}: sharded and replicated updates differ"
        );
        if step == 1 {
            saved = Some(sharded.state());
        }
    }
    let moved = sharded.params().copy();
    sharded.load_state(saved.as_ref().unwrap()).unwrap();
    let saved_params = &saved.as_ref().unwrap().tensors[0].1;
    assert!(sharded.params().equal(saved_params), "rank {rank}: load_state restored the state");
    assert!(!sharded.params().equal(&moved));
    // The model's variables are views of the shared parameters.
    let flat = Tensor::cat(&[vars[0].shallow_clone(), vars[1].shallow_clone()], 0);
    assert!(flat.equal(sharded.params()));
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
    let host = NodeBuffer::new(&world, len, 0).expect("4 ranks on one host share memory");
    check_sums(&host, len, &world);
    check_non_finite(&host, len, &world);
    // Two "hosts" of 2 ranks: sums within each, then across them through MPI.
    let pairs = || world.split_by_color(Color::with_value(rank / 2)).unwrap();
    let across = NodeBuffer::grouped(&world, pairs(), len, 0).expect("equal groups of 2");
    check_sums(&across, len, &world);
    check_non_finite(&across, len, &world);
    // A buffer shorter than the ranks: some segments are empty.
    let short = NodeBuffer::grouped(&world, pairs(), 3, 0).expect("equal groups of 2");
    check_sums(&short, 3, &world);
    // The sharded optimiser on one host of 4, and on two hosts of 2.
    check_sharded_adamw(&world, |n, host_len| NodeBuffer::new(&world, n, host_len));
    check_sharded_adamw(&world, |n, host_len| NodeBuffer::grouped(&world, pairs(), n, host_len));
    // One rank per group shares nothing: every rank declines, so the caller keeps MPI.
    let alone = world.split_by_color(Color::with_value(rank)).unwrap();
    assert!(NodeBuffer::grouped(&world, alone, len, 0).is_none());
    // Groups of unequal size (3 + 1): declined on every rank.
    let uneven = world.split_by_color(Color::with_value(i32::from(rank == 3))).unwrap();
    assert!(NodeBuffer::grouped(&world, uneven, len, 0).is_none());
}
