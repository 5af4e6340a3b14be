//! Gradient all-reduce between 2 MPI ranks, in bytes per second: a bare in-place `MPI_Allreduce`
//! of one buffer; dp-bench's flat gradient buffer as the trainer sums it (`FlatGrads::all_reduce`:
//! in memory the two ranks share); the same buffer through `MPI_Allreduce` in pieces of
//! `ALLREDUCE_CHUNK` and in one call; and one in-place call per parameter (the course's reference
//! solution), for the parameter lists of the tiny, small and gpt2 presets.
//!
//! `cargo bench` starts this binary alone; it then relaunches itself under `mpirun -n 2`. Rank 0
//! runs criterion; before each timed batch it broadcasts what to run and how often, and both
//! ranks run that many collectives in lockstep, so only the collectives are timed.

use criterion::{BenchmarkId, Criterion, Throughput};
use dp_bench::bench::runner::{self, launcher};
use dp_bench::config::{AllReduce, Preset};
use dp_bench::dist::{all_reduce_per_parameter, Communicator, FlatGrads, Mpi, ALLREDUCE_CHUNK};
use dp_bench::model::{Gpt, GptConfig};
use std::time::{Duration, Instant};
use tch::{nn, Device, Tensor};

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
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let group = runner::criterion_dir(root).join("allreduce");
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
    if let Err(e) = dp_bench::bench::report::write_index(&runner::criterion_dir(root)) {
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

fn main() {
    let under_mpi =
        ["PMI_RANK", "OMPI_COMM_WORLD_RANK"].iter().any(|v| std::env::var_os(v).is_some());
    if !under_mpi {
        let mpirun = std::env::var("DP_BENCH_MPIRUN").unwrap_or_else(|_| "mpirun".into());
        let exe = std::env::current_exe().expect("own path");
        let status = launcher(&mpirun, 2)
            .arg(exe)
            .args(std::env::args().skip(1))
            .status()
            .unwrap_or_else(|e| panic!("cannot start {mpirun}: {e}"));
        std::process::exit(status.code().unwrap_or(1));
    }
    dp_bench::fault::abort_on_panic();
    dp_bench::bench::plot::register_font();
    tch::set_num_threads(1);
    let universe = mpi::initialize().expect("MPI initialises once");
    let comm = Mpi { world: universe.world() };
    if comm.rank() == 0 {
        lead(&comm);
    } else {
        follow(&comm);
    }
}
