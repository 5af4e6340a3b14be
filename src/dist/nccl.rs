//! NCCL, loaded at run time: the GPU data plane of `--allreduce nccl`. MPI sets the ranks up and
//! carries NCCL's unique id from rank 0 to the others (as Horovod does); NCCL then sums the flat
//! gradient buffer on the GPUs, one in-place `ncclAllReduce` per step, enqueued on the CUDA null
//! stream, which libtorch's work before it is queued on.
//!
//! The library is opened with `dlopen` (`libnccl.so.2`, which PyTorch's CUDA wheels ship and
//! libtorch_cuda already loads; `DP_BENCH_NCCL` names another), so nothing about NCCL is needed
//! to build dp-bench, and CPU builds and runs never touch it.

use super::Communicator;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tch::{Kind, Tensor};

/// The environment variable that names the NCCL library to load instead of `libnccl.so.2`.
pub const LIBRARY_VAR: &str = "DP_BENCH_NCCL";
/// The library loaded when `DP_BENCH_NCCL` is not set.
pub const DEFAULT_LIBRARY: &str = "libnccl.so.2";

/// `ncclUniqueId`: 128 opaque bytes that rank 0 makes and every rank joins with.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    internal: [u8; 128],
}

type RawComm = *mut c_void;
/// `ncclFloat32` and `ncclSum` of `nccl.h`.
const NCCL_FLOAT32: c_int = 7;
const NCCL_SUM: c_int = 0;
/// `ncclInProgress`: a non-blocking call still under way, not an error.
const NCCL_IN_PROGRESS: i32 = 7;
/// `ncclTimeout`: a collective or a connection passed its time limit (nccl.h 2.2x).
pub(crate) const NCCL_TIMEOUT: i32 = 8;

/// The entry points dp-bench calls, resolved from the loaded library.
struct Api {
    get_version: unsafe extern "C" fn(*mut c_int) -> c_int,
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> c_int,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        RawComm,
        *mut c_void,
    ) -> c_int,
    comm_destroy: unsafe extern "C" fn(RawComm) -> c_int,
    comm_abort: unsafe extern "C" fn(RawComm) -> c_int,
    comm_get_async_error: unsafe extern "C" fn(RawComm, *mut c_int) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
}

/// A loaded NCCL library.
pub struct Nccl {
    api: Api,
    /// What was opened (`libnccl.so.2` or `DP_BENCH_NCCL`'s value).
    pub path: String,
    /// `ncclGetVersion`'s code: major × 10000 + minor × 100 + patch (NCCL ≥ 2.9).
    pub version_code: i32,
}

/// NCCL could not be loaded: the message names the library and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "--allreduce nccl: cannot load NCCL from {path}: {reason}: install PyTorch's CUDA wheels \
     (they ship libnccl.so.2; scripts/setup.sh does), point {LIBRARY_VAR} at a libnccl.so.2, or \
     use --allreduce shm or mpi"
)]
pub struct LoadError {
    pub path: String,
    pub reason: String,
}

/// An NCCL call that failed: the call, NCCL's result code and its description.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{call} failed: NCCL error {code} ({name}: {description})")]
pub struct NcclError {
    pub call: &'static str,
    pub code: i32,
    pub name: &'static str,
    pub description: String,
}

/// `ncclResult_t`'s names, by code.
fn result_name(code: i32) -> &'static str {
    match code {
        0 => "ncclSuccess",
        1 => "ncclUnhandledCudaError",
        2 => "ncclSystemError",
        3 => "ncclInternalError",
        4 => "ncclInvalidArgument",
        5 => "ncclInvalidUsage",
        6 => "ncclRemoteError",
        NCCL_IN_PROGRESS => "ncclInProgress",
        NCCL_TIMEOUT => "ncclTimeout",
        _ => "unknown result",
    }
}

/// The last `dlerror()` message.
fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call.
    let e = unsafe { libc::dlerror() };
    match e.is_null() {
        true => "unknown dlopen error".into(),
        // SAFETY: checked non-null above; copied before any other dl* call.
        false => unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned(),
    }
}

/// The symbol `name` of `handle` as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the C signature of `name`.
pub(super) unsafe fn symbol<F: Copy>(handle: *mut c_void, name: &str) -> Result<F, String> {
    let cname = CString::new(name).expect("no NUL in a symbol name");
    let ptr = libc::dlsym(handle, cname.as_ptr());
    if ptr.is_null() {
        return Err(format!("no symbol {name}: {}", dl_error()));
    }
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    Ok(std::mem::transmute_copy(&ptr))
}

impl Nccl {
    /// Opens the NCCL at `path` (a file name the loader searches for, or a path). The library
    /// stays loaded for the life of the process.
    pub fn open(path: &str) -> Result<Nccl, LoadError> {
        let err = |reason: String| LoadError { path: path.to_string(), reason };
        let cpath = CString::new(path).map_err(|_| err("a NUL in the path".into()))?;
        // SAFETY: a valid C string; a library already loaded (libtorch_cuda's NCCL) is returned
        // as it is.
        let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(err(dl_error()));
        }
        // SAFETY: each type is the function's signature in nccl.h (2.x).
        let api = unsafe {
            (|| -> Result<Api, String> {
                Ok(Api {
                    get_version: symbol(handle, "ncclGetVersion")?,
                    get_unique_id: symbol(handle, "ncclGetUniqueId")?,
                    comm_init_rank: symbol(handle, "ncclCommInitRank")?,
                    all_reduce: symbol(handle, "ncclAllReduce")?,
                    comm_destroy: symbol(handle, "ncclCommDestroy")?,
                    comm_abort: symbol(handle, "ncclCommAbort")?,
                    comm_get_async_error: symbol(handle, "ncclCommGetAsyncError")?,
                    get_error_string: symbol(handle, "ncclGetErrorString")?,
                })
            })()
        }
        .map_err(err)?;
        let mut version = 0;
        // SAFETY: writes one int.
        let rc = unsafe { (api.get_version)(&mut version) };
        if rc != 0 || version < 20900 {
            return Err(err(format!("ncclGetVersion gave {version} (rc {rc}): NCCL 2.9 or newer")));
        }
        Ok(Nccl { api, path: path.to_string(), version_code: version })
    }

    /// "2.28.9".
    pub fn version(&self) -> String {
        let v = self.version_code;
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    }

    fn check(&self, call: &'static str, code: c_int) -> Result<(), NcclError> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
        let description = unsafe { CStr::from_ptr((self.api.get_error_string)(code)) }
            .to_string_lossy()
            .into_owned();
        Err(NcclError { call, code, name: result_name(code), description })
    }

    /// A fresh unique id (rank 0 makes it; the others receive it).
    pub fn unique_id(&self) -> Result<UniqueId, NcclError> {
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: writes the 128-byte id.
        self.check("ncclGetUniqueId", unsafe { (self.api.get_unique_id)(&mut id) })?;
        Ok(id)
    }
}

/// The NCCL of this process: `DP_BENCH_NCCL`'s library, or `libnccl.so.2`; loaded once.
pub fn library() -> Result<&'static Nccl, LoadError> {
    static LIB: OnceLock<Result<Nccl, LoadError>> = OnceLock::new();
    LIB.get_or_init(|| {
        let path = std::env::var(LIBRARY_VAR).unwrap_or_else(|_| DEFAULT_LIBRARY.to_string());
        Nccl::open(&path)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Makes GPU `gpu` the calling thread's current CUDA device (NCCL joins a communicator on the
/// current device), through the CUDA runtime libtorch_cuda loaded.
fn set_cuda_device(gpu: usize) -> Result<(), String> {
    // SAFETY: `cudaError_t cudaSetDevice(int)`, looked up among the loaded libraries.
    let set: unsafe extern "C" fn(c_int) -> c_int =
        unsafe { symbol(libc::RTLD_DEFAULT, "cudaSetDevice") }
            .map_err(|e| format!("the CUDA runtime is not loaded ({e})"))?;
    // SAFETY: a plain runtime call.
    match unsafe { set(gpu as c_int) } {
        0 => Ok(()),
        rc => Err(format!("cudaSetDevice({gpu}) failed with CUDA error {rc}")),
    }
}

/// One rank's membership in an NCCL communicator over all ranks, on its GPU. A watchdog thread
/// polls NCCL's asynchronous errors while the communicator lives (as PyTorch's does): a peer
/// that vanished mid-collective makes it abort the communicator, say so, and end this rank, so
/// no rank spins in a collective that can never finish.
pub struct NcclComm {
    lib: &'static Nccl,
    comm: RawComm,
    ranks: usize,
    stop: Arc<AtomicBool>,
    /// When the collective in flight began ([`clock_ms`]), 0 when none is.
    started: Arc<AtomicU64>,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

/// Why joining the communicator failed, on this rank or another.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Nccl(#[from] NcclError),
    #[error("rank {rank}: {message}")]
    Device { rank: usize, message: String },
    #[error("rank 0 could not make NCCL's unique id")]
    NoId,
    #[error("another rank could not prepare its GPU for NCCL (it said why)")]
    Elsewhere,
}

impl NcclComm {
    /// Joins every rank of `world` into one communicator, this rank on GPU `gpu`. Collective:
    /// rank 0 makes the unique id and MPI gives it to all; the ranks agree that each could
    /// select its GPU before any enters `ncclCommInitRank` (which waits for all of them).
    pub fn bootstrap(
        world: &dyn Communicator,
        lib: &'static Nccl,
        gpu: usize,
        limit: Duration,
    ) -> Result<NcclComm, BootstrapError> {
        let rank = world.rank();
        let mine = match rank {
            0 => lib.unique_id().map(|id| id.internal.to_vec()),
            _ => Ok(Vec::new()),
        };
        let ids = world.all_gather_bytes(mine.as_deref().unwrap_or(&[]));
        mine?;
        let mut id = UniqueId { internal: [0; 128] };
        if ids[0].len() != id.internal.len() {
            return Err(BootstrapError::NoId);
        }
        id.internal.copy_from_slice(&ids[0]);
        let ready = set_cuda_device(gpu);
        let mut failed = [f64::from(u8::from(ready.is_err()))];
        world.all_reduce_sum_f64(&mut failed);
        if let Err(message) = ready {
            return Err(BootstrapError::Device { rank, message });
        }
        if failed[0] > 0.0 {
            return Err(BootstrapError::Elsewhere);
        }
        let mut comm: RawComm = std::ptr::null_mut();
        let ranks = world.size();
        // SAFETY: `comm` receives the communicator; the id is passed by value as nccl.h's struct.
        let rc = unsafe { (lib.api.comm_init_rank)(&mut comm, ranks as c_int, id, rank as c_int) };
        lib.check("ncclCommInitRank", rc)?;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let watch = Watch { rank, stop: stop.clone(), started: started.clone(), limit };
        let watchdog = Some(spawn_watchdog(lib, comm, watch));
        Ok(NcclComm { lib, comm, ranks, stop, started, watchdog })
    }

    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// Enqueues the sum over ranks of the `count` f32 at `ptr` (device memory of this rank's GPU),
    /// in place, on the CUDA null stream: after the work queued before it, before the work
    /// queued after it. Returns once enqueued; synchronise the device to wait for it.
    ///
    /// # Safety
    /// `ptr` must point to `count` f32 on this communicator's GPU that nothing frees or writes
    /// outside the null stream until the sum is done.
    pub unsafe fn all_reduce_sum_f32(&self, ptr: *mut f32, count: usize) -> Result<(), NcclError> {
        let rc = (self.lib.api.all_reduce)(
            ptr.cast_const().cast(),
            ptr.cast(),
            count,
            NCCL_FLOAT32,
            NCCL_SUM,
            self.comm,
            std::ptr::null_mut(),
        );
        self.lib.check("ncclAllReduce", rc)
    }

    /// Sums `t` (a contiguous f32 tensor on this communicator's GPU) over the ranks, in place,
    /// and waits for the sum: the device is synchronised before this returns, so `t` is never
    /// freed or written while NCCL still works on it.
    pub fn sum_in_place(&self, t: &Tensor) -> Result<(), NcclError> {
        assert!(
            t.device().is_cuda() && t.kind() == Kind::Float && t.is_contiguous(),
            "NCCL sums a contiguous f32 GPU tensor, not {:?} {:?}",
            t.device(),
            t.kind()
        );
        // Timed by the watchdog from here until the device has finished the sum.
        self.started.store(clock_ms().max(1), Ordering::SeqCst);
        // SAFETY: `t`'s `numel` f32 on the GPU, borrowed until the device is synchronised below.
        let queued = unsafe { self.all_reduce_sum_f32(t.data_ptr().cast(), t.numel()) };
        if queued.is_ok() {
            crate::train::synchronize(t.device());
        }
        self.started.store(0, Ordering::SeqCst);
        queued
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.thread().unpark();
            let _ = watchdog.join();
        }
        // SAFETY: the communicator is not used after this: its watchdog has ended.
        unsafe { (self.lib.api.comm_destroy)(self.comm) };
    }
}

/// The raw communicator, sent to the watchdog thread.
struct SendComm(RawComm);
// SAFETY: NCCL allows ncclCommGetAsyncError and ncclCommAbort from another thread.
unsafe impl Send for SendComm {}

/// How often the watchdog asks NCCL for asynchronous errors.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Milliseconds since the first call in this process: the clock collectives are timed by.
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// Whether a collective that began at `started` ms ([`clock_ms`]; 0 = none in flight) has run
/// past `limit` at `now` ms.
fn overdue(started: u64, now: u64, limit: Duration) -> bool {
    started != 0 && now.saturating_sub(started) > limit.as_millis() as u64
}

/// What the watchdog of one rank's communicator watches.
struct Watch {
    rank: usize,
    stop: Arc<AtomicBool>,
    started: Arc<AtomicU64>,
    limit: Duration,
}

/// The watchdog of `comm`: until `stop` is set (and the thread unparked), every `WATCH_EVERY`
/// it asks NCCL for an asynchronous error and times the collective in flight against the
/// limit (`--collective-timeout`); either ends the rank after aborting the communicator, which
/// ends its kernels.
fn spawn_watchdog(lib: &'static Nccl, comm: RawComm, watch: Watch) -> std::thread::JoinHandle<()> {
    let comm = SendComm(comm);
    std::thread::spawn(move || {
        let comm = comm;
        let Watch { rank, stop, started, limit } = watch;
        while !stop.load(Ordering::SeqCst) {
            std::thread::park_timeout(WATCH_EVERY);
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let mut state = 0;
            // SAFETY: a live communicator: it is destroyed only after this thread has ended.
            let rc = unsafe { (lib.api.comm_get_async_error)(comm.0, &mut state) };
            let failed = match lib.check("NCCL", if rc != 0 { rc } else { state }) {
                Err(e) if e.code != NCCL_IN_PROGRESS => Some(e.to_string()),
                _ if overdue(started.load(Ordering::SeqCst), clock_ms(), limit) => Some(format!(
                    "{} (code {NCCL_TIMEOUT}): an all-reduce has not finished in {} s \
                     (--collective-timeout); a peer rank is likely gone",
                    result_name(NCCL_TIMEOUT),
                    limit.as_secs()
                )),
                _ => None,
            };
            if let Some(why) = failed {
                // SAFETY: aborting frees the communicator's resources and ends its kernels.
                unsafe { (lib.api.comm_abort)(comm.0) };
                crate::fault::ended_by_peer(rank, &why);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_named_with_the_fix() {
        let e = Nccl::open("/nonexistent/libnccl.so.2").err().expect("no such library");
        let text = e.to_string();
        assert!(text.contains("/nonexistent/libnccl.so.2"), "{text}");
        assert!(text.contains(LIBRARY_VAR) && text.contains("--allreduce shm or mpi"), "{text}");
    }

    #[test]
    fn a_library_without_nccl_is_refused() {
        // libc is loadable but has no ncclGetVersion.
        let e = Nccl::open("libc.so.6").err().expect("not NCCL");
        assert!(e.reason.contains("ncclGetVersion"), "{}", e.reason);
    }

    #[test]
    fn the_wheels_nccl_loads_and_makes_unique_ids() {
        // PyTorch's CUDA wheels (scripts/setup.sh) ship libnccl.so.2, and libtorch_cuda loads it.
        let lib = library().expect("libnccl.so.2 from the venv's PyTorch");
        assert!(lib.version_code >= 20900 && lib.version().starts_with("2."), "{}", lib.version());
        let (a, b) = (lib.unique_id().unwrap(), lib.unique_id().unwrap());
        assert!(a.internal.iter().any(|&x| x != 0), "an id has content");
        assert_ne!(a.internal, b.internal, "each id is fresh");
    }

    #[test]
    fn joining_needs_a_gpu_and_one_gpu_holds_a_one_rank_communicator() {
        let lib = library().expect("libnccl.so.2 from the venv's PyTorch");
        let solo = &crate::dist::Solo;
        let limit = Duration::from_secs(60);
        match (tch::Cuda::is_available(), NcclComm::bootstrap(solo, lib, 0, limit)) {
            (false, Err(BootstrapError::Device { rank: 0, message })) => {
                assert!(message.contains("cudaSetDevice(0) failed"), "{message}");
            }
            (true, Ok(comm)) => {
                assert_eq!(comm.ranks(), 1);
                // The data plane's own check: a one-element sum over one rank.
                crate::dist::nccl_data_plane(solo, tch::Device::Cuda(0), limit).expect("NCCL");
            }
            (gpu, other) => panic!("libtorch sees a GPU: {gpu}; joining gave {:?}", other.err()),
        }
    }

    #[test]
    fn a_collective_is_overdue_only_past_its_limit_while_in_flight() {
        let limit = Duration::from_secs(600);
        assert!(!overdue(0, 10_000_000, limit), "nothing in flight");
        assert!(!overdue(1_000, 601_000, limit), "exactly at the limit");
        assert!(overdue(1_000, 601_001, limit), "past it");
        assert!(!overdue(5_000, 1_000, limit), "a clock read before the start");
        assert!(clock_ms() <= clock_ms(), "the clock does not go back");
    }

    #[test]
    fn result_codes_have_their_names() {
        assert_eq!(result_name(5), "ncclInvalidUsage");
        assert_eq!(result_name(7), "ncclInProgress");
        assert_eq!(result_name(8), "ncclTimeout");
        assert_eq!(result_name(99), "unknown result");
    }
}
