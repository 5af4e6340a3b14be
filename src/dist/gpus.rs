//! Which GPU each rank takes, identified by UUID. A rank takes the GPU of its local rank among
//! those it sees (its index modulo their count). Launchers that give each rank its own
//! `CUDA_VISIBLE_DEVICES` (`srun --gpus-per-task=1`) show every rank one GPU, index 0, but
//! different ones: so the ranks exchange their GPUs' UUIDs over MPI at start-up, and only ranks
//! that really hold the same GPU are refused where NCCL needs one GPU a rank.
//!
//! UUIDs come from the CUDA driver (`cuDeviceGetUuid_v2`, through `libcuda.so.1`, in the order
//! `CUDA_VISIBLE_DEVICES` gives, as libtorch's indices); where the driver cannot say, a GPU is
//! named by host and index, which is what ranks that see all of a host's GPUs share.

use super::nccl::symbol;
use std::ffi::c_int;

/// Ranks that cannot each have a GPU.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuShareError {
    #[error(
        "--device cuda but libtorch sees no CUDA device: use --device cpu or run on a GPU machine"
    )]
    NoGpu,
    #[error(
        "ranks {} would share GPU {gpu} ({id}), and NCCL needs one GPU per rank: launch at most \
         one rank per GPU (or give each rank its own with CUDA_VISIBLE_DEVICES), or use \
         --allreduce mpi to try multi-rank code on one GPU (gradients summed through host memory)",
        list(ranks)
    )]
    Shared { ranks: Vec<usize>, gpu: usize, id: String },
}

/// The GPU index, among those it sees, of the rank `local_rank` of its host: `None` without one.
pub fn choose(local_rank: usize, visible: usize) -> Option<usize> {
    (visible > 0).then(|| local_rank % visible)
}

/// Decides, the same on every rank, whether the ranks' GPUs may be used: `chosen[r]` is rank r's
/// GPU (its index and id; `None` where it sees none). Without NCCL ranks may share a GPU; with
/// it, the first GPU held by two ranks is refused, naming them all.
pub fn decide(
    rank: usize,
    chosen: &[Option<(usize, String)>],
    nccl: bool,
) -> Result<usize, GpuShareError> {
    let Some((index, _)) = chosen.get(rank).cloned().flatten() else {
        return Err(GpuShareError::NoGpu);
    };
    if nccl {
        for (first, choice) in chosen.iter().enumerate() {
            let Some((gpu, id)) = choice else { continue };
            let ranks: Vec<usize> = (first..chosen.len())
                .filter(|&r| chosen[r].as_ref().is_some_and(|(_, other)| other == id))
                .collect();
            if ranks.len() > 1 {
                return Err(GpuShareError::Shared { ranks, gpu: *gpu, id: id.clone() });
            }
        }
    }
    Ok(index)
}

extern "C" {
    fn dp_bench_set_cuda_device(index: c_int) -> *mut std::ffi::c_char;
    fn dp_bench_cuda_empty_cache() -> *mut std::ffi::c_char;
    fn dp_bench_cuda_peak_reserved(index: c_int, bytes: *mut i64) -> *mut std::ffi::c_char;
    fn dp_bench_cuda_memory_info(
        index: c_int,
        free: *mut i64,
        total: *mut i64,
    ) -> *mut std::ffi::c_char;
}

/// GPU `index`'s free and total memory in bytes, as the driver reports them now.
pub fn memory_info(index: usize) -> Result<(u64, u64), String> {
    let (mut free, mut total) = (0i64, 0i64);
    // SAFETY: the C++ side catches every exception and writes two int64.
    outcome(unsafe { dp_bench_cuda_memory_info(index as c_int, &mut free, &mut total) })?;
    Ok((free.max(0) as u64, total.max(0) as u64))
}

/// The first line of the C++ side's error message, freed; `Ok` where there was none.
fn outcome(err: *mut std::ffi::c_char) -> Result<(), String> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: non-null, NUL-terminated, malloc'd by strdup; freed once, after copying.
    let message = unsafe { std::ffi::CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { libc::free(err.cast()) };
    Err(message.lines().next().unwrap_or("").to_string())
}

/// Hands the memory libtorch's caching allocator holds but does not use back to the driver: a
/// rank does so before it waits at a gate, so that configurations taking turns on one GPU hold
/// only their live tensors (parameters, gradients, optimiser state) while they wait, not the
/// cached activations of their last step.
pub fn release_cached_memory() -> Result<(), String> {
    // SAFETY: the C++ side catches every exception.
    outcome(unsafe { dp_bench_cuda_empty_cache() })
}

/// The most memory libtorch reserved on GPU `index` since the last reading, in MiB; the peak
/// starts again from what is reserved now.
pub fn peak_reserved_mb(index: usize) -> Result<f64, String> {
    let mut bytes = 0i64;
    // SAFETY: the C++ side catches every exception and writes one int64.
    outcome(unsafe { dp_bench_cuda_peak_reserved(index as c_int, &mut bytes) })?;
    Ok(bytes as f64 / (1024.0 * 1024.0))
}

/// Makes GPU `index` this thread's current CUDA device through libtorch (c10's device guard,
/// `cuda_device.cpp`), before the rank's first CUDA allocation: libtorch's record of the device
/// and the runtime's agree, and no context or tensor lands on GPU 0 by default.
pub fn set_device(index: usize) -> Result<(), String> {
    let index = c_int::try_from(index).map_err(|_| format!("GPU index {index} is too large"))?;
    // SAFETY: the C++ side catches every exception.
    outcome(unsafe { dp_bench_set_cuda_device(index) })
        .map_err(|e| format!("making GPU {index} the current device failed: {e}"))
}

/// A rank's choice as it travels between ranks: "index\tid", empty for none.
pub fn encode(choice: &Option<(usize, String)>) -> String {
    choice.as_ref().map_or(String::new(), |(i, id)| format!("{i}\t{id}"))
}

pub fn decode(text: &str) -> Option<(usize, String)> {
    let (i, id) = text.split_once('\t')?;
    Some((i.parse().ok()?, id.to_string()))
}

/// The ids of the `visible` GPUs this process sees: their UUIDs where the driver gives them
/// (as many as libtorch counts), else "cuda:INDEX on HOST".
pub fn visible_ids(visible: usize) -> Vec<String> {
    if let Some(uuids) = driver_uuids().filter(|u| u.len() == visible) {
        return uuids;
    }
    let host = crate::hosts::host_name();
    (0..visible).map(|i| format!("cuda:{i} on {host}")).collect()
}

/// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as nvidia-smi writes a UUID.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex =
        |r: std::ops::Range<usize>| bytes[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("GPU-{}-{}-{}-{}-{}", hex(0..4), hex(4..6), hex(6..8), hex(8..10), hex(10..16))
}

/// The UUIDs of the GPUs the CUDA driver shows this process, in its order; `None` without a
/// driver (a CPU machine) or where it fails.
fn driver_uuids() -> Option<Vec<String>> {
    // SAFETY: dlopen with a NUL-terminated name; the library, if any, stays loaded.
    let handle =
        unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return None;
    }
    type Init = unsafe extern "C" fn(u32) -> c_int;
    type Count = unsafe extern "C" fn(*mut c_int) -> c_int;
    type Get = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type Uuid = unsafe extern "C" fn(*mut [u8; 16], c_int) -> c_int;
    // SAFETY: each type is the function's signature in cuda.h (CUresult is an int, CUdevice an
    // int, CUuuid 16 bytes).
    unsafe {
        let init: Init = symbol(handle, "cuInit").ok()?;
        let count: Count = symbol(handle, "cuDeviceGetCount").ok()?;
        let get: Get = symbol(handle, "cuDeviceGet").ok()?;
        let uuid: Uuid = symbol(handle, "cuDeviceGetUuid_v2")
            .or_else(|_| symbol(handle, "cuDeviceGetUuid"))
            .ok()?;
        if init(0) != 0 {
            return None;
        }
        let mut n = 0;
        if count(&mut n) != 0 {
            return None;
        }
        (0..n)
            .map(|i| {
                let (mut dev, mut bytes) = (0, [0u8; 16]);
                (get(&mut dev, i) == 0 && uuid(&mut bytes, dev) == 0).then(|| format_uuid(&bytes))
            })
            .collect()
    }
}

/// "0 and 1", "0, 1 and 2".
fn list(ranks: &[usize]) -> String {
    let names: Vec<String> = ranks.iter().map(usize::to_string).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(i: usize, id: &str) -> Option<(usize, String)> {
        Some((i, id.to_string()))
    }

    #[test]
    fn ranks_are_refused_only_where_they_really_share_a_gpu() {
        // Every rank sees both GPUs and takes its local rank's.
        assert_eq!(choose(1, 2), Some(1));
        let all_visible = [gpu(0, "GPU-a"), gpu(1, "GPU-b")];
        assert_eq!(decide(1, &all_visible, true), Ok(1));
        // One GPU a rank through CUDA_VISIBLE_DEVICES (srun --gpus-per-task=1): each sees one,
        // index 0, but they are different GPUs.
        assert_eq!(choose(3, 1), Some(0));
        let per_task = [gpu(0, "GPU-a"), gpu(0, "GPU-b"), gpu(0, "GPU-c")];
        assert_eq!(decide(2, &per_task, true), Ok(0));
        // Three ranks on two GPUs: ranks 0 and 2 share GPU-a, and every rank says so.
        let three = [gpu(0, "GPU-a"), gpu(1, "GPU-b"), gpu(0, "GPU-a")];
        let refused = GpuShareError::Shared { ranks: vec![0, 2], gpu: 0, id: "GPU-a".into() };
        for rank in 0..3 {
            assert_eq!(decide(rank, &three, true), Err(refused.clone()));
        }
        let text = refused.to_string();
        assert!(text.contains("ranks 0 and 2 would share GPU 0 (GPU-a)"), "{text}");
        assert!(text.contains("--allreduce mpi"), "{text}");
        // Without NCCL they may share; a rank that sees no GPU cannot run.
        assert_eq!(decide(2, &three, false), Ok(0));
        assert_eq!(decide(1, &[gpu(0, "GPU-a"), None], false), Err(GpuShareError::NoGpu));
        assert_eq!(choose(0, 0), None);
    }

    #[test]
    fn the_current_device_is_set_through_libtorch_or_the_failure_named() {
        match (tch::Cuda::is_available(), set_device(0)) {
            (true, Ok(())) => {}
            (false, Err(e)) => assert!(e.contains("making GPU 0 the current device failed"), "{e}"),
            (gpu, other) => panic!("libtorch sees a GPU: {gpu}; setting GPU 0 gave {other:?}"),
        }
        // The allocator holds nothing without a GPU: releasing is a no-op, and no peak is
        // reported where no GPU 0 exists.
        assert_eq!(release_cached_memory(), Ok(()));
        match (tch::Cuda::is_available(), peak_reserved_mb(0)) {
            (true, Ok(mb)) => assert!(mb >= 0.0),
            (false, Err(_)) | (false, Ok(0.0)) => {}
            (gpu, other) => panic!("libtorch sees a GPU: {gpu}; the peak gave {other:?}"),
        }
    }

    #[test]
    fn choices_travel_and_uuids_read_as_nvidia_smi_writes_them() {
        for choice in [gpu(3, "GPU-a"), None] {
            assert_eq!(decode(&encode(&choice)), choice);
        }
        let bytes: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        assert_eq!(format_uuid(&bytes), "GPU-00112233-4455-6677-8899-aabbccddeeff");
        // Without a driver (CPU machines), GPUs are named by index and host.
        if driver_uuids().is_none() {
            assert!(visible_ids(2)[1].starts_with("cuda:1 on "));
        }
        assert_eq!(list(&[1, 2, 3]), "1, 2 and 3");
    }
}
