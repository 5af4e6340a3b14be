//! Gradient all-reduce between 2 MPI ranks, in bytes per second: a bare in-place `MPI_Allreduce`
//! of one buffer; dp-bench's flat gradient buffer as the trainer sums it (`FlatGrads::all_reduce`:
//! in memory the two ranks share); the same buffer through `MPI_Allreduce` in pieces of
//! `ALLREDUCE_CHUNK` and in one call; and one in-place call per parameter (the course's reference
//! solution), for the parameter lists of the tiny, small and gpt2 presets.
//!
//! `cargo bench` starts this binary alone; it then relaunches itself under `mpirun -n 2`. Rank 0
//! runs criterion; before each timed batch it broadcasts what to run and how often, and both
//! ranks run that many collectives in lockstep, so only the collectives are timed.
//!
//! On GPUs (`-- --device cuda`, or auto where libtorch sees at least two) each rank takes its own
//! GPU and the bench times, per preset: the flat buffer summed by NCCL as the trainer does it
//! (`nccl`), one `ncclAllReduce` of a plain buffer of the same size (`bare_nccl`), and the flat
//! buffer staged through host memory the ranks share (`staged`), with nccl-tests' algorithm and
//! bus bandwidths. One GPU cannot hold two NCCL ranks: the bench then says so and skips.

use criterion::{BenchmarkId, Criterion, Throughput};
use dp_bench::bench::device::{criterion_device, visible_gpus, DEVICE_VAR};
use dp_bench::bench::runner::{self, launcher};
use dp_bench::config::{AllReduce, DeviceKind, Preset};
use dp_bench::dist::{all_reduce_per_parameter, Communicator, FlatGrads, Mpi, ALLREDUCE_CHUNK};
use dp_bench::model::{Gpt, GptConfig};
use std::time::{Duration, Instant};
use tch::{nn, Device, Tensor};

/// How long one NCCL sum may take before the bench's rank gives up (as `dp-bench`'s default).
const NCCL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

const VARIANTS: [&str; 5] = ["bare", "flat", "flat_mpi", "flat_one_call", "per_param"];
const STOP: f32 = -1.0;

/// The gradients of one preset's parameter list, set up identically on both ranks.
struct Grads {
    name: &'static str,
    _vs: nn::VarStore,
    vars: Vec<Tensor>,
    flat: FlatGrads,
    bare: Vec<f32>,
}

impl Grads {
    fn new(name: &'static str, preset: Preset, vocab: i64, comm: &Mpi) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Gpt::new(&vs.root(), GptConfig::new(preset.dims(), vocab, 0.0));
        let vars = vs.trainable_variables();
        let flat = FlatGrads::new(&vars, comm, AllReduce::Shm);
        assert!(flat.is_shared(), "2 ranks on one host share memory");
        let n = flat.buffer().numel();
        Grads { name, _vs: vs, vars, flat, bare: vec![0.0; n] }
    }

    fn run(&mut self, variant: usize, comm: &dyn Communicator) {
        match variant {
            0 => comm.all_reduce_sum_f32_in_place(&mut self.bare),
            1 => assert_eq!(self.flat.all_reduce(comm), Some(true), "zero gradients sum finite"),
            2 => self.flat.all_reduce_mpi(comm, ALLREDUCE_CHUNK),
            3 => self.flat.all_reduce_mpi(comm, usize::MAX),
            _ => all_reduce_per_parameter(comm, &self.vars),
        }
    }
}

fn presets(comm: &Mpi) -> Vec<Grads> {
    vec![
        Grads::new("tiny", Preset::Tiny, 8000, comm),
        Grads::new("small", Preset::Small, 8000, comm),
        Grads::new("gpt2", Preset::Gpt2, 50257, comm),
    ]
}

/// Rank 0: criterion, telling rank 1 what to run before each timed batch.
fn lead(comm: &Mpi) {
    let mut grads = presets(comm);
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("allreduce");
    group.sample_size(10).warm_up_time(Duration::from_millis(500));
    for (p, g) in grads.iter_mut().enumerate() {
        group.throughput(Throughput::Bytes(g.flat.bytes() as u64));
        for (v, variant) in VARIANTS.iter().enumerate() {
            group.bench_function(BenchmarkId::new(*variant, g.name), |b| {
                b.iter_custom(|iters| {
                    let mut order = [p as f32, v as f32, iters as f32];
                    comm.broadcast_f32(&mut order, 0);
                    comm.barrier();
                    let start = Instant::now();
                    for _ in 0..iters {
                        g.run(v, comm);
                    }
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
    let mut stop = [STOP, 0.0, 0.0];
    comm.broadcast_f32(&mut stop, 0);
    c.final_summary();
    let root = dp_bench::bench::project_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    let group = runner::criterion_dir(&root).join("allreduce");
    let sizes: Vec<(&str, u64)> = grads.iter().map(|g| (g.name, g.flat.bytes() as u64)).collect();
    match dp_bench::bench::allreduce::summarise(&group, &sizes, 0.95) {
        Ok(summaries) => {
            summaries.iter().for_each(|s| println!("{}", dp_bench::bench::allreduce::render(s)));
            let path = group.join("summary.json");
            match dp_bench::metrics::write_json(&path, &summaries) {
                Ok(()) => println!("summary: {}", path.display()),
                Err(e) => eprintln!("allreduce: could not write {}: {e:#}", path.display()),
            }
        }
        // A filtered run (`cargo bench --bench allreduce -- tiny/flat`) lacks some variants.
        Err(e) => eprintln!("allreduce: no summary: {e:#}"),
    }
    if let Err(e) = dp_bench::bench::report::write_index(&runner::criterion_dir(&root)) {
        eprintln!("allreduce: could not update the report index: {e:#}");
    }
}

/// Other ranks: run what rank 0 asks for until it says stop.
fn follow(comm: &Mpi) {
    let mut grads = presets(comm);
    loop {
        let mut order = [0f32; 3];
        comm.broadcast_f32(&mut order, 0);
        if order[0] == STOP {
            return;
        }
        comm.barrier();
        for _ in 0..order[2] as u64 {
            grads[order[0] as usize].run(order[1] as usize, comm);
        }
    }
}

/// Seconds of one call of `op` on every rank, timed by rank 0: the median of 5 samples of 20
/// calls each, after 5 untimed calls; every rank synchronises its GPU before each clock reading.
fn time_gpu(comm: &Mpi, device: Device, mut op: impl FnMut()) -> f64 {
    let sync = || dp_bench::train::synchronize(device);
    (0..5).for_each(|_| op());
    sync();
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            comm.barrier();
            let start = Instant::now();
            (0..20).for_each(|_| op());
            sync();
            comm.barrier();
            start.elapsed().as_secs_f64() / 20.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

/// The GPU comparison: each rank on its own GPU, per preset.
fn gpu_main(comm: &Mpi) {
    let device = Device::Cuda(comm.rank());
    let n = comm.size() as f64;
    let mut rows = Vec::new();
    for (name, preset, vocab) in [
        ("tiny", Preset::Tiny, 8000),
        ("small", Preset::Small, 8000),
        ("gpt2", Preset::Gpt2, 50257),
    ] {
        let vs = nn::VarStore::new(device);
        let _model = Gpt::new(&vs.root(), GptConfig::new(preset.dims(), vocab, 0.0));
        let vars = vs.trainable_variables();
        let nccl = dp_bench::dist::nccl_data_plane(comm, device, NCCL_TIMEOUT).expect("NCCL");
        let mut flat = FlatGrads::with_nccl(&vars, nccl);
        let nccl = time_gpu(comm, device, || {
            flat.all_reduce(comm);
        });
        let bytes = flat.bytes();
        drop(flat);
        let bare = dp_bench::dist::nccl_data_plane(comm, device, NCCL_TIMEOUT).expect("NCCL");
        let buffer = Tensor::zeros([(bytes / 4) as i64], (tch::Kind::Float, device));
        let bare_time = time_gpu(comm, device, || {
            // SAFETY: a live f32 buffer on this rank's GPU; the timing loop synchronises.
            unsafe { bare.all_reduce_sum_f32(buffer.data_ptr().cast(), bytes / 4) }.expect("NCCL");
        });
        let mut staged = FlatGrads::new(&vars, comm, AllReduce::Shm);
        let staged_time = time_gpu(comm, device, || {
            staged.all_reduce(comm);
        });
        // nccl-tests: algorithm bandwidth = bytes / time; bus bandwidth = that × 2(n−1)/n.
        let bw = |t: f64| (bytes as f64 / t / 1e9, bytes as f64 / t / 1e9 * 2.0 * (n - 1.0) / n);
        if comm.rank() == 0 {
            let cell = |label: &str, t: f64| {
                let (alg, bus) = bw(t);
                format!("{label} {:.3} ms (algbw {alg:.1} GB/s, busbw {bus:.1} GB/s)", t * 1e3)
            };
            println!(
                "allreduce/gpu {name:<6} {:>7.1} MB: {} | {} | {}; nccl ÷ bare {:.2}×",
                bytes as f64 / 1e6,
                cell("nccl", nccl),
                cell("bare_nccl", bare_time),
                cell("staged", staged_time),
                nccl / bare_time
            );
            rows.push(serde_json::json!({
                "preset": name, "bytes": bytes, "ranks": comm.size(),
                "nccl_s": nccl, "bare_nccl_s": bare_time, "staged_s": staged_time,
                "nccl_busbw_gb_s": bw(nccl).1, "bare_nccl_busbw_gb_s": bw(bare_time).1,
                "nccl_over_bare": nccl / bare_time,
            }));
        }
    }
    if comm.rank() == 0 {
        let root = dp_bench::bench::project_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
        let path = runner::criterion_dir(&root).join("allreduce").join("gpu_summary.json");
        let written = std::fs::create_dir_all(path.parent().expect("a directory"))
            .map_err(anyhow::Error::from)
            .and_then(|()| dp_bench::metrics::write_json(&path, &rows));
        match written {
            Ok(()) => println!("summary: {}", path.display()),
            Err(e) => eprintln!("allreduce: could not write {}: {e:#}", path.display()),
        }
    }
}

fn main() {
    let under_mpi =
        ["PMI_RANK", "OMPI_COMM_WORLD_RANK"].iter().any(|v| std::env::var_os(v).is_some());
    let gpus = visible_gpus();
    let device = criterion_device(gpus).unwrap_or_else(|e| {
        eprintln!("allreduce: error: {e:#}");
        std::process::exit(2)
    });
    // Auto with one GPU compares on the CPU; asked for, one GPU is not enough.
    let device = match (device, gpus) {
        (DeviceKind::Cuda, 1) if std::env::var(DEVICE_VAR).is_ok_and(|v| v == "cuda") => {
            println!(
                "allreduce: --device cuda compares NCCL between 2 ranks on a GPU each, and \
                 libtorch sees 1 GPU (NCCL refuses two ranks on one): skipped"
            );
            return;
        }
        (DeviceKind::Cuda, 1) => DeviceKind::Cpu,
        (d, _) => d,
    };
    if !under_mpi {
        let mpirun = std::env::var("DP_BENCH_MPIRUN").unwrap_or_else(|_| "mpirun".into());
        let exe = std::env::current_exe().expect("own path");
        let status = launcher(&mpirun, 2)
            .arg(exe)
            .args(std::env::args().skip(1))
            .env(DEVICE_VAR, device.to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot start {mpirun}: {e}"));
        std::process::exit(status.code().unwrap_or(1));
    }
    dp_bench::fault::abort_on_panic();
    dp_bench::bench::plot::register_font();
    tch::set_num_threads(1);
    let universe = mpi::initialize().expect("MPI initialises once");
    let comm = Mpi { world: universe.world() };
    if device == DeviceKind::Cuda {
        return gpu_main(&comm);
    }
    if comm.rank() == 0 {
        lead(&comm);
    } else {
        follow(&comm);
    }
}
