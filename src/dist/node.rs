//! Gradient all-reduce through memory that the ranks of one host share.
//!
//! `MPI_Allreduce` between processes of one host copies every byte several times: into a shared
//! cell, out of it, reduced, and back for the all-gather. Here each rank's flat gradient buffer
//! lives in an MPI-3 shared window (`MPI_Win_allocate_shared`), so every rank can read every
//! other rank's gradients directly. Local rank `l` of `L` owns one `1/L` segment: it sums that
//! segment over the `L` buffers (in local-rank order) and writes the sum into all of them — one
//! pass that reads and writes each byte once, both cores at once, between two node barriers.
//!
//! Across hosts the layering is the usual hierarchical one: after the on-host sum, each local
//! rank all-reduces its own segment with the ranks of the same local rank on the other hosts
//! (plain MPI, so any fabric MPI knows), then copies it into its neighbours' buffers. Hosts must
//! run equally many ranks; otherwise, and with one rank per host, [`NodeBuffer::new`] declines and
//! the caller keeps `MPI_Allreduce`.

use super::Mpi;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Color, Communicator as _, SimpleCommunicator};
use mpi::traits::CommunicatorCollectives;

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
}

impl NodeBuffer {
    /// A buffer of `len` f32 for each rank, zeroed, shared by the ranks of each host. Collective
    /// over `world`; every rank gets `Some` or every rank gets `None` (one rank per host, or hosts
    /// with unequal rank counts).
    ///
    /// The window is never freed: freeing is collective, and a rank that stops with an error must
    /// not wait for the others to free theirs (`mpirun` ends the job when it exits). The gradient
    /// tensors viewing it stay valid for the life of the process.
    pub fn new(world: &SimpleCommunicator, len: usize) -> Option<Self> {
        Self::grouped(world, world.split_shared(world.rank()), len)
    }

    /// As [`NodeBuffer::new`], with the ranks grouped by `node` (a split of `world` whose ranks
    /// share memory) in place of hosts: tests run the across-hosts path on one host this way.
    pub fn grouped(
        world: &SimpleCommunicator,
        node: SimpleCommunicator,
        len: usize,
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
        // Each rank's buffer, then its non-finite flag.
        let bytes = (len + 1) * 4;
        let mut base: *mut f32 = std::ptr::null_mut();
        let mut win: ffi::MPI_Win = unsafe { std::mem::zeroed() };
        // SAFETY: plain MPI-3 calls on a live communicator; `base` receives this rank's segment
        // and the shared queries every other rank's, all valid until MPI_Finalize (never freed).
        let buffers = unsafe {
            check(ffi::MPI_Win_allocate_shared(
                bytes as ffi::MPI_Aint,
                4,
                ffi::RSMPI_INFO_NULL,
                node.as_raw(),
                (&mut base as *mut *mut f32).cast(),
                &mut win,
            ));
            let buffers: Vec<*mut f32> = (0..local_size)
                .map(|r| {
                    let (mut size, mut unit) = (0 as ffi::MPI_Aint, 0);
                    let mut ptr: *mut f32 = std::ptr::null_mut();
                    check(ffi::MPI_Win_shared_query(
                        win,
                        r,
                        &mut size,
                        &mut unit,
                        (&mut ptr as *mut *mut f32).cast(),
                    ));
                    assert_eq!(size as usize, bytes, "shared window of the wrong size");
                    ptr
                })
                .collect();
            // One passive-target epoch for the window's whole life: MPI_Win_sync then orders
            // this rank's loads and stores against the other ranks' around each barrier.
            check(ffi::MPI_Win_lock_all(ffi::MPI_MODE_NOCHECK as i32, win));
            buffers
        };
        let this = NodeBuffer { node, cross, win, buffers, len };
        // SAFETY: this rank's own segment of `len` f32, which no rank reads before the barrier.
        unsafe { std::ptr::write_bytes(this.ptr(), 0, len + 1) };
        this.sync();
        Some(this)
    }

    /// This rank's buffer.
    pub fn ptr(&self) -> *mut f32 {
        self.buffers[self.node.rank() as usize]
    }

    /// Barrier of the host's ranks that also orders memory: everything written to any buffer
    /// before it is visible to every rank after it.
    fn sync(&self) {
        // SAFETY: `win` is a live window in a lock_all epoch.
        unsafe { check(ffi::MPI_Win_sync(self.win)) };
        self.node.barrier();
        unsafe { check(ffi::MPI_Win_sync(self.win)) };
    }

    /// Sums the ranks' buffers element-wise, leaving the sum in every rank's buffer, and says
    /// whether every summed value is finite (checked as each segment is summed, so the trainer's
    /// divergence check costs no second pass). Collective over all ranks; no rank may touch its
    /// buffer during the call.
    pub fn all_reduce(&self) -> bool {
        let local = self.node.rank() as usize;
        let ranks = self.buffers.len();
        let (lo, hi) = (self.len * local / ranks, self.len * (local + 1) / ranks);
        self.sync();
        // SAFETY: between the two barriers, segment [lo, hi) of every buffer is read and written
        // by this rank alone (the other ranks own the other segments).
        let mut segments: Vec<&mut [f32]> = self
            .buffers
            .iter()
            .map(|&b| unsafe { std::slice::from_raw_parts_mut(b.add(lo), hi - lo) })
            .collect();
        let finite = match &self.cross {
            None => sum_into_all(&mut segments),
            Some(cross) => {
                let (first, rest) = segments.split_at_mut(1);
                sum_into_first(first[0], rest);
                // The host's sum of this segment, summed over hosts, then handed to neighbours.
                super::mpi_in_pieces(cross, first[0], super::ALLREDUCE_CHUNK);
                for other in rest {
                    other.copy_from_slice(first[0]);
                }
                all_finite(first[0])
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

/// Sums `segments` element-wise in order and writes the sum into each of them; whether every
/// sum is finite.
fn sum_into_all(segments: &mut [&mut [f32]]) -> bool {
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
        for s in segments.iter_mut() {
            s[start..start + n].copy_from_slice(sum);
        }
    }
    finite
}

/// Adds `rest` element-wise into `first`, in order.
fn sum_into_first(first: &mut [f32], rest: &[&mut [f32]]) {
    for start in (0..first.len()).step_by(PIECE) {
        let end = (start + PIECE).min(first.len());
        for s in rest {
            add(&mut first[start..end], &s[start..end]);
        }
    }
}

fn add(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Whether no element of `x` is a NaN or an infinity: their exponent bits are all ones. The
/// largest exponent over 16 independent lanes, so the loop vectorises.
fn all_finite(x: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    let mut lanes = [0u32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(0, |m, v| m.max(v.to_bits() & EXPONENT));
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = (*l).max(v.to_bits() & EXPONENT);
        }
    }
    lanes.iter().fold(tail, |m, &l| m.max(l)) != EXPONENT
}

fn check(rc: i32) {
    assert_eq!(rc, 0, "MPI call failed with code {rc}");
}
