//! One training step (forward, loss, backward, optimiser) per preset, on one rank and
//! one thread, with criterion. Throughput is input positions per second. The gpt2 preset (124M
//! parameters) is skipped under `--quick` on CPUs. `-- --device cpu|cuda|auto` (or
//! `DP_BENCH_DEVICE`) picks the device: auto is GPU 0 when libtorch sees one, where gpt2 runs at
//! 64 examples a step.

use clap::Parser;
use criterion::{BenchmarkId, Criterion, Throughput};
use dp_bench::bench::device::{criterion_device, device_kind, visible_gpus};
use dp_bench::bench::{report, runner};
use dp_bench::cli::TrainArgs;
use dp_bench::config::DeviceKind;
use dp_bench::data::{collate, Example};
use dp_bench::dist::Solo;
use dp_bench::train::Trainer;
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
    }
    group.finish();
}

fn main() {
    let device = criterion_device()
        .and_then(|choice| device_kind(choice, visible_gpus()))
        .unwrap_or_else(|e| {
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
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = report::write_index(&runner::criterion_dir(root)) {
        eprintln!("train_step: could not update the report index: {e:#}");
    }
}
