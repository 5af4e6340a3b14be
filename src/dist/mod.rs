//! Distribution at the edges: a small `Communicator` trait (MPI in the binary, a one-process
//! stand-in for tests and plain runs), the flat gradient buffer that is all-reduced in ONE call per
//! step, and the start-up broadcast of rank 0's parameters.

use crate::config::AllReduce;
use crate::slices::as_mut_slice;
use mpi::collective::SystemOperation;
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::datatype::PartitionMut;
use mpi::topology::Communicator as _;
use mpi::topology::SimpleCommunicator;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

pub mod gpus;
pub mod nccl;
mod node;
pub use node::NodeBuffer;

/// The collectives the trainer needs. Every rank calls each one in the same order.
pub trait Communicator {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    fn barrier(&self);
    /// Element-wise sum over ranks of `send`, into `recv` on every rank.
    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]);
    /// Element-wise sum over ranks of `buf`, in place (`MPI_IN_PLACE`: no second buffer, no copy).
    fn all_reduce_sum_f32_in_place(&self, buf: &mut [f32]);
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum_f64(&self, values: &mut [f64]);
    fn broadcast_f32(&self, buf: &mut [f32], root: usize);
    /// Every rank's bytes, indexed by rank, on every rank.
    fn all_gather_bytes(&self, mine: &[u8]) -> Vec<Vec<u8>>;
    /// The MPI library's own version string ("none" without MPI).
    fn library_version(&self) -> String;
    /// A shared-memory buffer of `len` f32 per rank for the ranks of each host, and one region
    /// of `host_len` f32 per host (collective); `None` where ranks share no memory.
    fn node_buffer(&self, _len: usize, _host_len: usize) -> Option<NodeBuffer> {
        None
    }
}

/// One process, no MPI: the collectives are identities.
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn barrier(&self) {}
    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn all_reduce_sum_f32_in_place(&self, _buf: &mut [f32]) {}
    fn all_reduce_sum_f64(&self, _values: &mut [f64]) {}
    fn broadcast_f32(&self, _buf: &mut [f32], _root: usize) {}
    fn all_gather_bytes(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        vec![mine.to_vec()]
    }
    fn library_version(&self) -> String {
        "none".into()
    }
}

/// MPI's world communicator (rsmpi).
pub struct Mpi {
    pub world: SimpleCommunicator,
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn barrier(&self) {
        self.world.barrier();
    }
    fn all_reduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) {
        self.world.all_reduce_into(send, recv, SystemOperation::sum());
    }
    fn all_reduce_sum_f32_in_place(&self, buf: &mut [f32]) {
        all_reduce_in_place(&self.world, buf);
    }
    fn all_reduce_sum_f64(&self, values: &mut [f64]) {
        let send = values.to_vec();
        self.world.all_reduce_into(&send[..], values, SystemOperation::sum());
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) {
        self.world.process_at_rank(root as i32).broadcast_into(buf);
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        let n = self.size();
        let mut counts = vec![0i32; n];
        self.world.all_gather_into(&(mine.len() as i32), &mut counts[..]);
        let displs: Vec<i32> =
            counts.iter().scan(0, |acc, &c| Some(std::mem::replace(acc, *acc + c))).collect();
        let mut buf = vec![0u8; counts.iter().sum::<i32>() as usize];
        let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
        self.world.all_gather_varcount_into(mine, &mut part);
        counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
            .collect()
    }
    fn library_version(&self) -> String {
        mpi::environment::library_version()
            .map(|v| {
                v.lines().next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .unwrap_or_else(|_| "unknown".into())
    }
    fn node_buffer(&self, len: usize, host_len: usize) -> Option<NodeBuffer> {
        NodeBuffer::new(&self.world, len, host_len)
    }
}

/// Element-wise sum over the ranks of `comm` of `buf`, in place (`MPI_IN_PLACE`: no second
/// buffer, no copy, where the library's `MPI_IN_PLACE` is known).
fn all_reduce_in_place(comm: &SimpleCommunicator, buf: &mut [f32]) {
    let Some(in_place) = mpi_in_place() else {
        let send = buf.to_vec();
        return comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
    };
    use mpi::raw::AsRaw;
    // SAFETY: `buf` is a valid, exclusively borrowed f32 buffer of `buf.len()` elements, and
    // `in_place` is this MPI library's MPI_IN_PLACE; every rank passes the same count.
    let rc = unsafe {
        mpi::ffi::MPI_Allreduce(
            in_place,
            buf.as_mut_ptr().cast(),
            buf.len() as i32,
            mpi::ffi::RSMPI_FLOAT,
            mpi::ffi::RSMPI_SUM,
            comm.as_raw(),
        )
    };
    assert_eq!(rc, 0, "MPI_Allreduce failed with code {rc}");
}

/// This MPI library's `MPI_IN_PLACE`, which rsmpi 0.8 does not expose: the MPICH family (MPICH,
/// Intel MPI, MVAPICH) defines it as `(void *) -1`, Open MPI as `(void *) 1`. `None` for a library
/// of neither family, which then gets a copy and the two-buffer call.
fn mpi_in_place() -> Option<*const std::ffi::c_void> {
    static IN_PLACE: std::sync::OnceLock<Option<isize>> = std::sync::OnceLock::new();
    let value = *IN_PLACE.get_or_init(|| {
        let version = mpi::environment::library_version().unwrap_or_default();
        if version.contains("Open MPI") {
            Some(1)
        } else if ["MPICH", "Intel(R) MPI", "MVAPICH"].iter().any(|f| version.contains(f)) {
            Some(-1)
        } else {
            None
        }
    });
    value.map(|v| v as *const std::ffi::c_void)
}

/// Elements per `MPI_Allreduce` of the flat buffer (4 MiB of f32): large enough that per-call
/// latency vanishes, small enough that a piece stays in cache while MPI reduces it —
/// `benches/allreduce.rs` measures one call over the whole buffer against these pieces.
pub const ALLREDUCE_CHUNK: usize = 1 << 20;

/// Every parameter's gradient is a view into one flat buffer, so synchronising gradients is an
/// in-place all-reduce of that buffer — no gather into a send buffer, no scatter back. With
/// `AllReduce::Shm` the buffer (or, for GPU gradients, its host staging copy) lives in memory the
/// host's ranks share, and they sum it among themselves ([`NodeBuffer`]).
pub struct FlatGrads {
    flat: Tensor,
    /// CPU staging for MPI when the gradients live on a GPU.
    host: Option<Tensor>,
    /// The shared memory behind `flat` (CPU) or `host` (GPU), when there is one.
    shared: Option<Rc<NodeBuffer>>,
    /// NCCL's communicator, when the GPUs sum `flat` themselves (`--allreduce nccl`).
    nccl: Option<nccl::NcclComm>,
}

/// The NCCL communicator of every rank of `comm`, each on its GPU `device`, checked with one sum
/// (each rank adds 1; every rank must read the world size) before training trusts it. Collective.
pub fn nccl_data_plane(
    comm: &dyn Communicator,
    device: Device,
    limit: std::time::Duration,
) -> anyhow::Result<nccl::NcclComm> {
    let Device::Cuda(gpu) = device else {
        return Err(crate::UsageError::from_err(crate::config::ConfigError::NcclOnCpu));
    };
    let lib = nccl::library().map_err(crate::UsageError::from_err)?;
    let nccl = nccl::NcclComm::bootstrap(comm, lib, gpu, limit)?;
    let ones = Tensor::ones([1], (Kind::Float, device));
    nccl.sum_in_place(&ones)?;
    let sum = ones.double_value(&[0]);
    anyhow::ensure!(
        sum == comm.size() as f64,
        "NCCL's check sum over {} ranks gave {sum}: the communicator is broken",
        comm.size()
    );
    Ok(nccl)
}

/// The shared-memory buffer for `len` gradients (and `host_len` f32 per host) that `allreduce`
/// asks for, where the ranks of a host can share one. Collective.
pub(crate) fn gradient_node_buffer(
    comm: &dyn Communicator,
    allreduce: AllReduce,
    len: usize,
    host_len: usize,
) -> Option<Rc<NodeBuffer>> {
    match allreduce {
        AllReduce::Shm if comm.size() > 1 => comm.node_buffer(len, host_len).map(Rc::new),
        _ => None,
    }
}

impl FlatGrads {
    /// Points the `.grad` of each of `vars` into a fresh zeroed flat buffer. Collective.
    pub fn new(vars: &[Tensor], comm: &dyn Communicator, allreduce: AllReduce) -> Self {
        let total = vars.iter().map(|v| v.numel()).sum();
        Self::with_shared(vars, gradient_node_buffer(comm, allreduce, total, 0))
    }

    /// As [`FlatGrads::new`], in `shared` where there is one (its buffers must hold one f32 per
    /// parameter value).
    pub(crate) fn with_shared(vars: &[Tensor], shared: Option<Rc<NodeBuffer>>) -> Self {
        Self::build(vars, shared, None)
    }

    /// Points the `.grad` of each of `vars` (on `nccl`'s GPU) into a fresh zeroed flat buffer
    /// there, which `nccl` sums in place: nothing is staged through host memory.
    pub fn with_nccl(vars: &[Tensor], nccl: nccl::NcclComm) -> Self {
        Self::build(vars, None, Some(nccl))
    }

    fn build(
        vars: &[Tensor],
        shared: Option<Rc<NodeBuffer>>,
        nccl: Option<nccl::NcclComm>,
    ) -> Self {
        let device = vars.first().map_or(Device::Cpu, |v| v.device());
        assert!(nccl.is_none() || device.is_cuda(), "NCCL sums GPU buffers");
        let total: i64 = vars.iter().map(|v| v.numel() as i64).sum();
        // SAFETY: the window holds `total` f32 and is never freed (see `NodeBuffer::new`).
        let shared_tensor = shared.as_ref().map(|s| unsafe {
            Tensor::from_blob(s.ptr().cast(), &[total], &[1], Kind::Float, Device::Cpu)
        });
        let (flat, host) = match (device, shared_tensor) {
            (Device::Cpu, Some(t)) => (t, None),
            (Device::Cpu, None) => (Tensor::zeros([total], (Kind::Float, device)), None),
            _ if nccl.is_some() => (Tensor::zeros([total], (Kind::Float, device)), None),
            (_, staging) => (
                Tensor::zeros([total], (Kind::Float, device)),
                Some(staging.unwrap_or_else(|| Tensor::zeros([total], (Kind::Float, Device::Cpu)))),
            ),
        };
        // Autograd accumulates into an existing `.grad` in place, so once each gradient is a view
        // of `flat`, every backward pass writes straight into it. First make the gradients exist.
        let zero: Tensor = vars.iter().map(|v| v.sum(Kind::Float) * 0.0).sum();
        zero.backward();
        for (v, view) in vars.iter().zip(views(&flat, vars)) {
            v.grad().set_data(&view);
        }
        FlatGrads { flat, host, shared, nccl }
    }

    /// Which data plane sums the gradients.
    pub fn data_plane(&self) -> &'static str {
        match (&self.nccl, &self.shared, &self.host) {
            (Some(_), _, _) => "NCCL on the GPUs",
            (None, Some(_), Some(_)) => "host memory the ranks share (staged from the GPU)",
            (None, Some(_), None) => "memory the host's ranks share",
            (None, None, Some(_)) => "MPI (staged through host memory)",
            (None, None, None) => "MPI",
        }
    }

    pub fn zero(&mut self) {
        let _ = self.flat.zero_();
    }

    /// The buffer all gradients live in.
    pub fn buffer(&self) -> &Tensor {
        &self.flat
    }

    pub fn bytes(&self) -> usize {
        self.flat.numel() * 4
    }

    /// Whether the ranks of a host sum the gradients in shared memory.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Sums the gradients over ranks, in place: by NCCL on the GPUs where it has a communicator
    /// over several ranks, in shared memory where there is some, otherwise with `MPI_Allreduce`
    /// in `ALLREDUCE_CHUNK` pieces. Returns whether every summed value is
    /// finite where the sum read them on its way (in shared memory; the same answer on every
    /// rank), and `None` where nothing did (one rank, NCCL's or MPI's sum): then the update checks them
    /// as it reads them ([`crate::optim::AdamW::step_if_finite`]), rather than a pass of its own.
    pub fn all_reduce(&mut self, comm: &dyn Communicator) -> Option<bool> {
        if let Some(nccl) = self.nccl.as_ref().filter(|n| n.ranks() > 1) {
            // Done, not only enqueued, when it returns: the step's clock reads the sum done.
            if let Err(e) = nccl.sum_in_place(&self.flat) {
                panic!("summing the gradients: {e}");
            }
            return None;
        }
        if let Some(shared) = self.shared.clone() {
            let mut finite = true;
            self.all_reduce_with(comm, |_| finite = shared.all_reduce());
            return Some(finite);
        }
        self.all_reduce_with(comm, |buf| mpi_in_pieces(comm, buf, ALLREDUCE_CHUNK));
        None
    }

    /// Sums the gradients over ranks only in this rank's segment of the shared buffer
    /// ([`NodeBuffer::reduce_scatter`]), for the sharded optimiser; whether every summed value
    /// (of every segment) is finite. Needs CPU gradients in shared memory.
    pub fn reduce_scatter(&mut self) -> bool {
        let shared = self.shared.as_ref().expect("gradients in shared memory");
        assert!(self.host.is_none(), "reduce_scatter needs CPU gradients");
        shared.reduce_scatter()
    }

    /// Sums the gradients over ranks with `MPI_Allreduce` in pieces of `chunk` elements, even
    /// where they are in shared memory (what `benches/allreduce.rs` compares).
    pub fn all_reduce_mpi(&mut self, comm: &dyn Communicator, chunk: usize) {
        self.all_reduce_with(comm, |buf| mpi_in_pieces(comm, buf, chunk))
    }

    /// Runs `reduce` on the host copy of the gradients.
    fn all_reduce_with(&mut self, comm: &dyn Communicator, reduce: impl FnOnce(&mut [f32])) {
        if comm.size() == 1 {
            return;
        }
        let buf = match &mut self.host {
            Some(host) => {
                host.copy_(&self.flat);
                host
            }
            None => &mut self.flat,
        };
        // SAFETY: a contiguous CPU f32 buffer owned by `self`, used by this call alone.
        reduce(unsafe { as_mut_slice(buf) });
        if let Some(host) = &self.host {
            self.flat.copy_(host);
        }
    }
}

fn mpi_in_pieces(comm: &dyn Communicator, buf: &mut [f32], chunk: usize) {
    for piece in buf.chunks_mut(chunk.max(1)) {
        comm.all_reduce_sum_f32_in_place(piece);
    }
}

/// One all-reduce per parameter gradient, as the course assignment's reference solution does
/// (`dist.all_reduce(param.grad.data)` in a loop, in place). Kept only to measure what the flat
/// buffer buys (`benches/allreduce.rs`).
pub fn all_reduce_per_parameter(comm: &dyn Communicator, vars: &[Tensor]) {
    for v in vars {
        let mut grad = v.grad();
        // SAFETY: a contiguous CPU f32 gradient, used by this call alone.
        comm.all_reduce_sum_f32_in_place(unsafe { as_mut_slice(&mut grad) });
    }
}

/// Makes every rank's parameters equal to rank 0's.
pub(crate) fn broadcast_parameters(comm: &dyn Communicator, vars: &[Tensor]) {
    if comm.size() == 1 {
        return;
    }
    let _guard = tch::no_grad_guard();
    let mut flat = Tensor::cat(&vars.iter().map(|v| v.flatten(0, -1)).collect::<Vec<_>>(), 0)
        .to(Device::Cpu)
        .contiguous();
    broadcast_tensor(comm, &mut flat);
    for (v, view) in vars.iter().zip(views(&flat, vars)) {
        v.shallow_clone().copy_(&view);
    }
}

/// Makes the contiguous CPU f32 tensor `t` equal to rank 0's on every rank.
pub(crate) fn broadcast_tensor(comm: &dyn Communicator, t: &mut Tensor) {
    // `t` is used by this call alone.
    comm.broadcast_f32(crate::slices::values_mut(t), 0);
}

/// Rank 0's `value`, on every rank.
pub(crate) fn from_root(comm: &dyn Communicator, value: f64) -> f64 {
    let mut v = [if comm.rank() == 0 { value } else { 0.0 }];
    comm.all_reduce_sum_f64(&mut v);
    v[0]
}

/// Consecutive views of `flat`, one shaped like each of `vars`.
pub(crate) fn views(flat: &Tensor, vars: &[Tensor]) -> Vec<Tensor> {
    let mut offset = 0;
    vars.iter()
        .map(|v| {
            let n = v.numel() as i64;
            offset += n;
            flat.narrow(0, offset - n, n).view(v.size().as_slice())
        })
        .collect()
}

/// Sum of all parameters in f64: equal on every rank when the ranks are in sync, and a function
/// of the values alone (a fixed order of its own: 8 lanes, then the lanes in turn), not of where
/// they lie in memory or of how a libtorch build vectorises its reductions — a resumed run
/// compares it with the sum its checkpoint recorded.
pub fn param_checksum(vars: &[Tensor]) -> f64 {
    let _guard = tch::no_grad_guard();
    let mut lanes = [0f64; 8];
    for v in vars {
        let values =
            Vec::<f32>::try_from(v.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))
                .expect("a float tensor");
        let chunks = values.chunks_exact(8);
        for (i, x) in chunks.remainder().iter().enumerate() {
            lanes[i] += f64::from(*x);
        }
        for c in chunks {
            for (l, x) in lanes.iter_mut().zip(c) {
                *l += f64::from(*x);
            }
        }
    }
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    #[test]
    fn the_checksum_depends_on_the_values_only() {
        let values = Tensor::randn([100_003], (Kind::Float, Device::Cpu)) * 1e3;
        let vars = [values.narrow(0, 0, 60_001), values.narrow(0, 60_001, 40_002)];
        // The same values elsewhere in memory, one element off any alignment the first had.
        let elsewhere = Tensor::zeros([100_004], (Kind::Float, Device::Cpu));
        elsewhere.narrow(0, 1, 100_003).copy_(&values);
        let moved = [elsewhere.narrow(0, 1, 60_001), elsewhere.narrow(0, 60_002, 40_002)];
        let sum = param_checksum(&vars);
        assert_eq!(sum.to_bits(), param_checksum(&moved).to_bits());
        let exact = values.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        assert!((sum - exact).abs() <= 1e-9 * exact.abs().max(1.0), "{sum} vs {exact}");
        let _ = elsewhere.narrow(0, 7, 1).fill_(1e6);
        assert_ne!(sum, param_checksum(&moved), "a changed value changes the checksum");
    }

    #[test]
    fn gradients_land_in_the_flat_buffer() {
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root() / "l", 3, 2, Default::default());
        let vars = vs.trainable_variables();
        let mut flat = FlatGrads::new(&vars, &Solo, AllReduce::Shm);
        assert!(!flat.is_shared());
        for _ in 0..2 {
            flat.zero();
            let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]);
            tch::nn::Module::forward(&lin, &x).sum(Kind::Float).backward();
            let expect =
                Tensor::cat(&vars.iter().map(|v| v.grad().flatten(0, -1)).collect::<Vec<_>>(), 0);
            assert!(expect.abs().sum(Kind::Float).double_value(&[]) > 0.0);
            assert!(flat.buffer().equal(&expect), "grads are not views of the buffer");
        }
        assert_eq!(flat.all_reduce(&Solo), None, "one rank reads nothing");
        assert_eq!(flat.bytes(), (3 * 2 + 2) * 4);
    }
}
