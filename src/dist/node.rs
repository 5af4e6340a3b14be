//! Gradient all-reduce through memory that the ranks of one host share.
//!
//! `MPI_Allreduce` between processes of one host copies every byte several times: into a shared
//! cell, out of it, reduced, and back for the all-gather. Here each rank's flat gradient buffer
//! lives in an MPI-3 shared window (`MPI_Win_allocate_shared`), so every rank can read every
//! other rank's gradients directly. Local rank `l` of `L` owns one `1/L` segment: it sums that
//! segment over the `L` buffers (in local-rank order) and writes the sum into all of them — one
//! pass that reads and writes each byte once, both cores at once, between two node barriers.
//!
//! For the sharded optimiser, [`NodeBuffer::reduce_scatter`] writes the sum only where it is
//! computed (each rank's own segment), and the window also holds one region per host
//! ([`NodeBuffer::host_region`]) where the host's ranks keep a single copy of the parameters and
//! AdamW moments.
//!
//! Across hosts the layering is the usual hierarchical one: after the on-host sum, each local
//! rank all-reduces its own segment with the ranks of the same local rank on the other hosts
//! (plain MPI, so any fabric MPI knows), then copies it into its neighbours' buffers. Hosts must
//! run equally many ranks; otherwise, and with one rank per host, [`NodeBuffer::new`] declines and
//! the caller keeps `MPI_Allreduce`.

use super::Mpi;
use crate::simd::{all_finite, vectorised};
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Color, Communicator as _, SimpleCommunicator};
use mpi::traits::CommunicatorCollectives;
use std::ops::Range;

/// Elements summed at a time: a piece of every buffer stays in L1 while it is summed and
/// written back.
const PIECE: usize = 2048;

/// One flat f32 buffer per rank of a host, in memory all of them can read and write.
pub struct NodeBuffer {
    /// The ranks of this host.
    node: SimpleCommunicator,
    /// The ranks of the same local rank on the other hosts; `None` on a single host.
    cross: Option<Mpi>,
    win: ffi::MPI_Win,
    /// Every local rank's buffer, indexed by local rank; element `len` of each is a flag: 1.0
    /// when the rank's summed segment held a NaN or an infinity.
    buffers: Vec<*mut f32>,
    len: usize,
    /// One region of `host_len` f32 for the whole host (in local rank 0's part of the window).
    host: *mut f32,
    host_len: usize,
}

impl NodeBuffer {
    /// A buffer of `len` f32 for each rank, zeroed, shared by the ranks of each host. Collective
    /// over `world`; every rank gets `Some` or every rank gets `None` (one rank per host, or hosts
    /// with unequal rank counts).
    ///
    /// The window is never freed: freeing is collective, and a rank that stops with an error must
    /// not wait for the others to free theirs (`mpirun` ends the job when it exits). The gradient
    /// tensors viewing it stay valid for the life of the process.
    ///
    /// With `host_len > 0` the host also gets one region of `host_len` f32, zeroed, that all its
    /// ranks share ([`NodeBuffer::host_region`]): the sharded optimiser keeps its state there.
    pub fn new(world: &SimpleCommunicator, len: usize, host_len: usize) -> Option<Self> {
        Self::grouped(world, world.split_shared(world.rank()), len, host_len)
    }

    /// As [`NodeBuffer::new`], with the ranks grouped by `node` (a split of `world` whose ranks
    /// share memory) in place of hosts: tests run the across-hosts path on one host this way.
    pub fn grouped(
        world: &SimpleCommunicator,
        node: SimpleCommunicator,
        len: usize,
        host_len: usize,
    ) -> Option<Self> {
        let local = node.rank();
        let local_size = node.size();
        // Every rank must agree: the smallest and largest group, in one all-reduce.
        let mine = [local_size, -local_size];
        let mut extremes = [0i32; 2];
        world.all_reduce_into(
            &mine[..],
            &mut extremes[..],
            mpi::collective::SystemOperation::max(),
        );
        if extremes[0] != -extremes[1] || local_size < 2 {
            return None;
        }
        let cross = world
            .split_by_color_with_key(Color::with_value(local), world.rank())
            .filter(|c| c.size() > 1)
            .map(|world| Mpi { world });
        // Each rank's buffer, then its non-finite flag; local rank 0's, then the host's region.
        let size = |r: i32| len + 1 + if r == 0 { host_len } else { 0 };
        let (win, buffers) = allocate(&node, size(local), size);
        // SAFETY: local rank 0's part of the window holds `host_len` f32 after its buffer.
        let host = unsafe { buffers[0].add(len + 1) };
        let this = NodeBuffer { node, cross, win, buffers, len, host, host_len };
        // SAFETY: this rank's own part of the window, which no rank reads before the barrier.
        unsafe { std::ptr::write_bytes(this.ptr(), 0, size(local)) };
        this.sync();
        Some(this)
    }

    /// This rank's buffer.
    pub fn ptr(&self) -> *mut f32 {
        self.buffers[self.node.rank() as usize]
    }

    /// The ranks sharing this buffer (the host's).
    pub fn group_size(&self) -> usize {
        self.buffers.len()
    }

    /// The host's shared region and its length in f32 (length 0 unless asked for).
    pub(crate) fn host_region(&self) -> (*mut f32, usize) {
        (self.host, self.host_len)
    }

    /// The elements whose sum this rank computes: its `1/L` of the buffer.
    pub fn segment(&self) -> Range<usize> {
        let (local, ranks) = (self.node.rank() as usize, self.buffers.len());
        self.len * local / ranks..self.len * (local + 1) / ranks
    }

    /// Barrier of the host's ranks that also orders memory: everything written to the window
    /// before it is visible to every rank after it.
    pub fn sync(&self) {
        // SAFETY: `win` is a live window in a lock_all epoch.
        unsafe { check(ffi::MPI_Win_sync(self.win)) };
        self.node.barrier();
        // SAFETY: as above.
        unsafe { check(ffi::MPI_Win_sync(self.win)) };
    }

    /// Sums the ranks' buffers element-wise, leaving the sum in every rank's buffer, and says
    /// whether every summed value is finite (checked as each segment is summed, so the trainer's
    /// divergence check costs no second pass). Collective over all ranks; no rank may touch its
    /// buffer during the call.
    pub fn all_reduce(&self) -> bool {
        self.reduce(true)
    }

    /// As [`NodeBuffer::all_reduce`], but the sum is written only where it is computed: after
    /// it, this rank's buffer holds the sum in [`NodeBuffer::segment`] (and its own gradients,
    /// or partial sums, elsewhere). Half the writes of `all_reduce` on two ranks, for an
    /// optimiser that updates only this rank's segment.
    pub fn reduce_scatter(&self) -> bool {
        self.reduce(false)
    }

    fn reduce(&self, everywhere: bool) -> bool {
        let local = self.node.rank() as usize;
        let Range { start: lo, end: hi } = self.segment();
        self.sync();
        // SAFETY: between the two barriers, segment [lo, hi) of every buffer is read and written
        // by this rank alone (the other ranks own the other segments).
        let mut segments: Vec<&mut [f32]> = self
            .buffers
            .iter()
            .map(|&b| unsafe { std::slice::from_raw_parts_mut(b.add(lo), hi - lo) })
            .collect();
        let finite = match &self.cross {
            None => sum_into(&mut segments, |r| everywhere || r == local),
            Some(cross) => {
                sum_into(&mut segments, |r| r == local);
                // The host's sum of this segment, summed over hosts, then handed to neighbours.
                let (before, rest) = segments.split_at_mut(local);
                let (mine, after) = rest.split_first_mut().expect("this rank's segment");
                super::mpi_in_pieces(cross, mine, super::ALLREDUCE_CHUNK);
                if everywhere {
                    before.iter_mut().chain(after).for_each(|s| s.copy_from_slice(mine));
                }
                all_finite(mine)
            }
        };
        // SAFETY: this rank's own flag slot; the others read it only after the barrier.
        unsafe { *self.ptr().add(self.len) = if finite { 0.0 } else { 1.0 } };
        self.sync();
        // SAFETY: every rank wrote its flag before the barrier and writes it again only after
        // the next call's first barrier.
        self.buffers.iter().all(|&b| unsafe { *b.add(self.len) } == 0.0)
    }
}

vectorised! {
    /// Sums `segments` element-wise in order and writes the sum into those `write` picks (by
    /// index); whether every sum is finite.
    fn sum_into(segments: &mut [&mut [f32]], write: impl Fn(usize) -> bool) -> bool {
        let mut sum = [0f32; PIECE];
        let mut finite = true;
        let len = segments[0].len();
        for start in (0..len).step_by(PIECE) {
            let n = PIECE.min(len - start);
            let sum = &mut sum[..n];
            sum.copy_from_slice(&segments[0][start..start + n]);
            for s in segments[1..].iter() {
                add(sum, &s[start..start + n]);
            }
            finite &= all_finite(sum);
            for (_, s) in segments.iter_mut().enumerate().filter(|(r, _)| write(*r)) {
                s[start..start + n].copy_from_slice(sum);
            }
        }
        finite
    }
}

#[inline(always)]
fn add(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// A shared window over `node` in which this rank holds `mine` f32 and local rank `r` holds
/// `size(r)`; every rank's pointer, by local rank. The window is never freed (see
/// [`NodeBuffer::new`]) and stays in one passive-target epoch for its whole life, so
/// `MPI_Win_sync` orders this rank's loads and stores against the other ranks' around barriers.
fn allocate(
    node: &SimpleCommunicator,
    mine: usize,
    size: impl Fn(i32) -> usize,
) -> (ffi::MPI_Win, Vec<*mut f32>) {
    let mut base: *mut f32 = std::ptr::null_mut();
    // SAFETY: `MPI_Win` is a plain C handle (an integer in MPICH, a pointer in Open MPI), for
    // which all-zero bytes are a valid, if meaningless, value; MPI_Win_allocate_shared below
    // overwrites it before it is used.
    let mut win: ffi::MPI_Win = unsafe { std::mem::zeroed() };
    // SAFETY: plain MPI-3 calls on a live communicator; `base` receives this rank's segment and
    // the shared queries every other rank's, all valid until MPI_Finalize (never freed).
    unsafe {
        check(ffi::MPI_Win_allocate_shared(
            (mine * 4) as ffi::MPI_Aint,
            4,
            ffi::RSMPI_INFO_NULL,
            node.as_raw(),
            (&mut base as *mut *mut f32).cast(),
            &mut win,
        ));
        let buffers = (0..node.size())
            .map(|r| {
                let (mut bytes, mut unit) = (0 as ffi::MPI_Aint, 0);
                let mut ptr: *mut f32 = std::ptr::null_mut();
                check(ffi::MPI_Win_shared_query(
                    win,
                    r,
                    &mut bytes,
                    &mut unit,
                    (&mut ptr as *mut *mut f32).cast(),
                ));
                assert_eq!(bytes as usize, size(r) * 4, "shared window of the wrong size");
                ptr
            })
            .collect();
        check(ffi::MPI_Win_lock_all(ffi::MPI_MODE_NOCHECK as i32, win));
        (win, buffers)
    }
}

fn check(rc: i32) {
    assert_eq!(rc, 0, "MPI call failed with code {rc}");
}
