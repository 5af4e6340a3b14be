//! One training step (forward, loss, backward, optimiser) per preset, on one rank and
//! one thread, with criterion. Throughput is input positions per second. Beside each step, the
//! optimiser's update of that preset's parameters alone (`adamw`: dp-bench's, libtorch's fused
//! kernel on every device), against the same rule as the nine libtorch ops a tch user would
//! write (`adamw_libtorch_ops`); throughput is parameters per second. The gpt2 preset (124M
//! parameters) is skipped under `--quick` on CPUs. `-- --device cpu|cuda|auto` (or
//! `DP_BENCH_DEVICE`) picks the device: auto is GPU 0 when libtorch sees one, where gpt2 runs at
//! 64 examples a step.

use clap::Parser;
use criterion::{BenchmarkId, Criterion, Throughput};
use dp_bench::bench::device::{criterion_device, visible_gpus};
use dp_bench::bench::{report, runner};
use dp_bench::cli::TrainArgs;
use dp_bench::config::DeviceKind;
use dp_bench::data::{collate, Example};
use dp_bench::dist::Solo;
use dp_bench::optim::{AdamW, AdamWConfig};
use dp_bench::train::{synchronize, Trainer};
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

/// Random examples with a source half and a target half, `len` tokens each.
fn examples(n: usize, len: usize, vocab: i64) -> Vec<Example> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    (0..n)
        .map(|_| Example {
            ids: (0..len).map(|_| rng.random_range(3..vocab)).collect(),
            prompt_len: len / 2,
        })
        .collect()
}

fn bench(c: &mut Criterion, device: Device) {
    dp_bench::bench::plot::register_font();
    tch::set_num_threads(1);
    let quick = std::env::args().any(|a| a == "--quick");
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    let gpt2_batch = if device.is_cuda() { 64 } else { 2 };
    for (preset, batch, vocab) in
        [("tiny", 16, 8000), ("small", 16, 8000), ("gpt2", gpt2_batch, 50257)]
    {
        if quick && preset == "gpt2" && !device.is_cuda() {
            eprintln!("train_step/gpt2: skipped under --quick");
            continue;
        }
        // The command line's own defaults, so the bench trains what `dp-bench` trains.
        let args = TrainArgs::parse_from([
            "dp-bench",
            "--preset",
            preset,
            "--batch-size",
            &batch.to_string(),
            "--device",
            if device.is_cuda() { "cuda" } else { "cpu" },
        ]);
        let mut config = args.into_config(1, 1);
        config.threads = 1;
        let data = examples(batch, 60, vocab);
        let mut trainer = Trainer::new(&config, vocab as usize, &Solo, device).unwrap();
        let refs: Vec<&Example> = data.iter().collect();
        let b = collate(&refs, 0, config.model_max_length, device);
        let mut loss = Tensor::zeros([], (Kind::Double, device));
        group.throughput(Throughput::Elements(b.tokens as u64));
        group.bench_function(BenchmarkId::new("step", preset), |bench| {
            bench.iter(|| trainer.step(&b, b.target_tokens, false, &mut loss).expect("finite"))
        });
        let numel = trainer.numel();
        drop(trainer);
        bench_adamw(&mut group, preset, numel as i64, device);
    }
    group.finish();
}

/// The optimiser's update of `n` parameters on `device`: dp-bench's, and the same rule as
/// libtorch ops, each timed to the end of its device work.
fn bench_adamw(
    group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    preset: &str,
    n: i64,
    device: Device,
) {
    let _guard = tch::no_grad_guard();
    let config = AdamWConfig::workload(1e-4);
    let params = Tensor::randn([n], (Kind::Float, device)) * 0.02;
    let grad = Tensor::randn([n], (Kind::Float, device)) * 1e-3;
    group.throughput(Throughput::Elements(n as u64));
    let mut opt = AdamW::new(&[params.copy()], config);
    group.bench_function(BenchmarkId::new("adamw", preset), |bench| {
        bench.iter(|| {
            opt.step(&grad);
            synchronize(device);
        })
    });
    drop(opt);
    let mut ops = LibtorchOpsAdamW::new(params, config);
    group.bench_function(BenchmarkId::new("adamw_libtorch_ops", preset), |bench| {
        bench.iter(|| {
            ops.step(&grad);
            synchronize(device);
        })
    });
}

/// torch.optim.AdamW's rule (decoupled decay, bias-corrected moments) as the in-place libtorch
/// ops a tch user would write over one flat buffer: nine passes, one scratch buffer.
struct LibtorchOpsAdamW {
    config: AdamWConfig,
    params: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    scratch: Tensor,
    steps: i32,
}

impl LibtorchOpsAdamW {
    fn new(params: Tensor, config: AdamWConfig) -> Self {
        let zeros = || Tensor::zeros_like(&params);
        let (exp_avg, exp_avg_sq, scratch) = (zeros(), zeros(), zeros());
        LibtorchOpsAdamW { config, params, exp_avg, exp_avg_sq, scratch, steps: 0 }
    }

    fn step(&mut self, grad: &Tensor) {
        let AdamWConfig { lr, beta1, beta2, eps, weight_decay } = self.config;
        self.steps += 1;
        let bias1 = 1.0 - beta1.powi(self.steps);
        let bias2_sqrt = (1.0 - beta2.powi(self.steps)).sqrt();
        let _ = self.params.g_mul_scalar_(1.0 - lr * weight_decay);
        let _ = self.exp_avg.lerp_(grad, 1.0 - beta1);
        let _ = grad.mul_out(&self.scratch, grad);
        let _ = self.exp_avg_sq.lerp_(&self.scratch, 1.0 - beta2);
        // params -= lr/bias1 · m / (√v / √bias2 + eps)
        let _ = self.exp_avg_sq.sqrt_out(&self.scratch);
        let _ = self.scratch.g_mul_scalar_(1.0 / bias2_sqrt);
        let _ = self.scratch.g_add_scalar_(eps);
        let _ = self.scratch.g_mul_scalar_(-bias1 / lr);
        let _ = self.params.addcdiv_(&self.exp_avg, &self.scratch);
    }
}

fn main() {
    let device = criterion_device(visible_gpus()).unwrap_or_else(|e| {
        eprintln!("train_step: error: {e:#}");
        std::process::exit(2)
    });
    let device = match device {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Cuda => Device::Cuda(0),
    };
    eprintln!("train_step: on {device:?}");
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, device);
    c.final_summary();
    let root = dp_bench::bench::project_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    if let Err(e) = report::write_index(&runner::criterion_dir(&root)) {
        eprintln!("train_step: could not update the report index: {e:#}");
    }
}
