//! What the data_parallel bench runs on: the device plan (`--device cpu|cuda|auto` and the
//! defaults that follow from it), and the device's measured matrix-product peak, against which
//! each configuration's model FLOPs utilisation (MFU) is given.

use super::hosts::Offer;
use crate::config::{DeviceKind, Precision};
pub use crate::train::visible_gpus;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// `--device` of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceChoice {
    /// cuda when libtorch sees a GPU, else cpu.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// The devices and the defaults a bench runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePlan {
    pub device: DeviceKind,
    /// GPUs libtorch sees (0 on CPUs).
    pub gpus: usize,
    pub world_sizes: Vec<usize>,
    pub preset: String,
    /// Examples per rank and step.
    pub batch: usize,
    /// What the launcher's allocation or hostfile offers, when it spans hosts and says.
    pub offer: Option<Offer>,
}

/// The model preset and examples per rank and step on CPUs, unless the command line says.
pub const CPU_PRESET: &str = "tiny";
pub const CPU_BATCH: usize = 16;

/// What the command line gave, `None` where it left the choice to the device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given<'a> {
    pub world_sizes: Option<&'a [usize]>,
    pub preset: Option<&'a str>,
    pub batch: Option<usize>,
    /// What the launcher offers across hosts ([`super::hosts::offer`]).
    pub offer: Option<&'a Offer>,
    /// Whether the launcher may place ranks on other hosts: then world sizes are not limited by
    /// the GPUs seen here.
    pub spans_hosts: bool,
}

/// World sizes 1, 2, 4, … up to `n`.
pub fn doubling(n: usize) -> Vec<usize> {
    std::iter::successors(Some(1), |k| Some(k * 2)).take_while(|&k| k <= n).collect()
}

/// The plan for `choice` with `gpus` GPUs visible. On CPUs: world sizes 1 and 2, the tiny
/// preset, 16 examples per rank. On GPUs: one rank per GPU at world sizes 1, 2, 4, … up to the
/// GPU count, the gpt2 preset and 64 examples per GPU, so that a step is long enough to time.
/// Across hosts, the world sizes go up to what the launcher offers instead (on either device).
/// Whatever the command line gave stays; world sizes beyond the offer, or on one host beyond its
/// GPUs, are refused (NCCL needs a GPU per rank).
pub fn device_plan(choice: DeviceChoice, gpus: usize, given: Given) -> anyhow::Result<DevicePlan> {
    let device = device_kind(choice, gpus)?;
    let offered = given.offer.map(|o| o.devices);
    let (world_sizes, preset, batch) = match device {
        DeviceKind::Cpu => (offered.map_or(vec![1, 2], doubling), CPU_PRESET, CPU_BATCH),
        DeviceKind::Cuda => (doubling(offered.unwrap_or(gpus)), "gpt2", 64),
    };
    let world_sizes = given.world_sizes.map_or(world_sizes, <[usize]>::to_vec);
    if let Some(offer) = given.offer {
        if let Some(&n) = world_sizes.iter().find(|&&n| n > offer.devices) {
            anyhow::bail!(
                "--world-sizes: {n} ranks, and the launcher's {} has room for {}: lower it (at \
                 most {}) or {}",
                offer.source,
                offer.devices,
                offer.devices,
                offer.more
            );
        }
    }
    if device == DeviceKind::Cuda && !given.spans_hosts {
        if let Some(&n) = world_sizes.iter().find(|&&n| n > gpus) {
            anyhow::bail!(
                "--world-sizes: {n} ranks need {n} GPUs (one each, as NCCL requires), libtorch \
                 sees {gpus}: lower it (at most {gpus})"
            );
        }
    }
    Ok(DevicePlan {
        device,
        gpus,
        world_sizes,
        preset: given.preset.unwrap_or(preset).to_string(),
        batch: given.batch.unwrap_or(batch),
        offer: given.offer.cloned(),
    })
}

impl DevicePlan {
    /// The line a bench prints before it starts.
    pub fn describe(&self) -> String {
        let on = match self.device {
            DeviceKind::Cpu => "CPU cores (one rank a core)".to_string(),
            DeviceKind::Cuda => format!("GPUs (one rank a GPU; libtorch sees {})", self.gpus),
        };
        let sizes: Vec<String> = self.world_sizes.iter().map(usize::to_string).collect();
        let offer = match &self.offer {
            Some(o) => {
                format!(" (up to the {} ranks the launcher offers: {})", o.devices, o.source)
            }
            None => String::new(),
        };
        format!(
            "on {on}: world sizes {}{offer}, preset {}, {} examples per rank and step",
            sizes.join(", "),
            self.preset,
            self.batch
        )
    }
}

/// The environment variable that carries `--device` to the criterion benches.
pub const DEVICE_VAR: &str = "DP_BENCH_DEVICE";

/// The device of a criterion bench (`train_step`, `allreduce`) with `gpus` GPUs visible, as
/// [`device_kind`] makes the choice concrete. Criterion's argument parser knows no `--device`:
/// `--device X` after `--` is moved into `DP_BENCH_DEVICE` and the bench re-executed without
/// it; otherwise `DP_BENCH_DEVICE`, or auto.
pub fn criterion_device(gpus: usize) -> anyhow::Result<DeviceKind> {
    use clap::ValueEnum;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--device" || a.starts_with("--device=")) {
        let (value, taken) = match args[i].split_once('=') {
            Some((_, v)) => (v.to_string(), 1),
            None => (args.get(i + 1).cloned().unwrap_or_default(), 2),
        };
        let rest = args[..i].iter().chain(args.iter().skip(i + taken));
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(std::env::current_exe()?)
            .args(rest)
            .env(DEVICE_VAR, value)
            .exec();
        anyhow::bail!("re-executing the bench: {err}");
    }
    let choice = match std::env::var(DEVICE_VAR) {
        Ok(v) => DeviceChoice::from_str(&v, true)
            .map_err(|_| anyhow::anyhow!("--device {v}: expected cpu, cuda or auto"))?,
        Err(_) => DeviceChoice::Auto,
    };
    device_kind(choice, gpus)
}

/// `choice` made concrete with `gpus` GPUs visible: cuda when asked for or (auto) when there is
/// a GPU; refused when asked for without one.
pub fn device_kind(choice: DeviceChoice, gpus: usize) -> anyhow::Result<DeviceKind> {
    Ok(match choice {
        DeviceChoice::Cpu => DeviceKind::Cpu,
        DeviceChoice::Cuda if gpus == 0 => anyhow::bail!(
            "--device cuda but libtorch sees no CUDA device: use --device cpu (or auto), or run on \
             a GPU machine"
        ),
        DeviceChoice::Cuda => DeviceKind::Cuda,
        DeviceChoice::Auto if gpus > 0 => DeviceKind::Cuda,
        DeviceChoice::Auto => DeviceKind::Cpu,
    })
}

/// A device's measured matrix-product rate: what MFU is a share of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Floating-point operations per second of the best kernel measured.
    pub flops_per_sec: f64,
    /// What was measured: "one core, fp32 1024×1024 products (onednn)".
    pub measured: String,
    pub device: String,
    pub precision: Precision,
}

/// The product `x · wᵀ` a kernel computes, and its name.
type Kernel = (&'static str, Box<dyn Fn(&Tensor, &Tensor) -> Tensor>);

/// Measures the matrix-product peak of one rank's device: on CPUs one core (one thread), in fp32
/// through each kernel the model may use (libtorch's BLAS, oneDNN), the faster kept, in bf16
/// through libtorch's product (oneDNN's AMX or AVX512-BF16 kernels); on GPUs
/// GPU 0 in the run's precision (TF32 through `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE`, which this
/// process then keeps). About a second.
pub fn measure_peak(device: DeviceKind, precision: Precision) -> Peak {
    let kind = if precision == Precision::Bf16 { Kind::BFloat16 } else { Kind::Float };
    let (dev, n) = match device {
        DeviceKind::Cpu => (Device::Cpu, 1024),
        DeviceKind::Cuda => {
            if precision == Precision::Tf32 {
                std::env::set_var(crate::TF32_VAR, "1");
            }
            (Device::Cuda(0), 8192)
        }
    };
    let threads = tch::get_num_threads();
    tch::set_num_threads(1);
    let x = Tensor::randn([n, n], (kind, dev));
    let w = Tensor::randn([n, n], (kind, dev));
    let kernels: Vec<Kernel> = match device {
        // bf16 products as the model runs them: libtorch's, which hands them to oneDNN (AMX).
        DeviceKind::Cpu if kind == Kind::BFloat16 => {
            vec![("libtorch", Box::new(|x: &Tensor, w: &Tensor| x.mm(&w.tr())))]
        }
        DeviceKind::Cpu => vec![
            ("blas", Box::new(|x, w| crate::model::gpt::product_for_peak(x, w, false))),
            ("onednn", Box::new(|x, w| crate::model::gpt::product_for_peak(x, w, true))),
        ],
        DeviceKind::Cuda => vec![("cublas", Box::new(|x: &Tensor, w: &Tensor| x.mm(&w.tr())))],
    };
    let flops = 2.0 * (n as f64).powi(3);
    let best = kernels
        .iter()
        .map(|(name, product)| (*name, flops / seconds_per_product(|| product(&x, &w), dev)))
        .fold(("", 0.0), |best, k| if k.1 > best.1 { k } else { best });
    tch::set_num_threads(threads);
    let what = match device {
        DeviceKind::Cpu => format!("one core, {precision}"),
        DeviceKind::Cuda => format!("GPU 0, {precision}"),
    };
    Peak {
        flops_per_sec: best.1,
        measured: format!("{what} {n}×{n} products ({})", best.0),
        device: match device {
            DeviceKind::Cpu => crate::metrics::cpu_description(),
            DeviceKind::Cuda => "cuda:0".to_string(),
        },
        precision,
    }
}

/// The best of a few timings of `product` on `device` (after one untimed call), each long
/// enough to time: seconds per product.
fn seconds_per_product(product: impl Fn() -> Tensor, device: Device) -> f64 {
    let sync = || crate::train::synchronize(device);
    let _ = product();
    sync();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut count = 0;
        while start.elapsed() < Duration::from_millis(100) || count < 2 {
            let _ = product();
            count += 1;
            sync(); // a GPU's product done, not only queued (nothing to wait for on a CPU)
        }
        best = best.min(start.elapsed().as_secs_f64() / count as f64);
    }
    best
}

/// GPU memory one rank of a configuration holds, estimated: while it waits at a gate (fp32
/// parameters, gradients and both AdamW moments, and a CUDA context; its cached memory handed
/// back) and while it trains (that and its activations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankMemory {
    pub waiting: u64,
    pub training: u64,
}

/// [`RankMemory`] of a model of `parameters` with `dims`, `vocab` tokens, `batch` sequences of
/// `positions` a rank. Activations: per layer and position about 17·C floats (LayerNorm outputs,
/// q, k, v, the heads' output, the MLP's 4C before and after GELU, dropout masks) and two T-wide
/// rows of attention weights a head; the head's fp32 logits and their gradient at the targets
/// (about half the positions).
pub fn rank_memory(
    parameters: u64,
    dims: crate::config::ModelDims,
    vocab: usize,
    batch: usize,
    positions: usize,
) -> RankMemory {
    const CONTEXT: u64 = 512 << 20;
    let (c, l, nh) = (dims.n_embd as u64, dims.n_layer as u64, dims.n_head as u64);
    let (b, t, v) = (batch as u64, positions as u64, vocab as u64);
    let waiting = 16 * parameters + CONTEXT;
    let layers = b * t * l * (17 * c + 2 * nh * t) * 4;
    let head = b * (t / 2) * v * 8;
    RankMemory { waiting, training: waiting + layers + head }
}

/// Refuses a plan whose `processes` ranks on one GPU (every configuration's rank 0 sits on GPU
/// 0; all but one wait while one trains) need more than the `free` bytes of the smallest GPU.
pub fn check_gpu_memory(processes: usize, need: RankMemory, free: u64) -> anyhow::Result<()> {
    let total = need.training + need.waiting * processes.saturating_sub(1) as u64;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    anyhow::ensure!(
        total <= free,
        "the plan puts {processes} ranks on GPU 0 (one of each configuration), about {:.1} GiB \
         (one training, {:.1} GiB, the others waiting, {:.1} GiB each), and the smallest GPU has \
         {:.1} GiB free: lower --batch, pass fewer --world-sizes, --no-independent, or a smaller \
         --preset",
        gib(total),
        gib(need.training),
        gib(need.waiting),
        gib(free)
    );
    Ok(())
}

/// Model FLOPs utilisation: a rank's model FLOPs per second as a share of the peak.
pub fn mfu(flops_per_rank_per_sec: f64, peak: &Peak) -> f64 {
    flops_per_rank_per_sec / peak.flops_per_sec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_keep_the_cpu_defaults_and_gpus_get_one_rank_each() {
        let cpu = device_plan(DeviceChoice::Auto, 0, Given::default()).unwrap();
        assert_eq!(
            (cpu.device, &cpu.world_sizes[..], &*cpu.preset, cpu.batch),
            (DeviceKind::Cpu, &[1, 2][..], "tiny", 16)
        );
        let plan = |gpus| device_plan(DeviceChoice::Auto, gpus, Given::default()).unwrap();
        assert_eq!(plan(1).world_sizes, [1]);
        assert_eq!(plan(3).world_sizes, [1, 2]);
        assert_eq!(plan(8).world_sizes, [1, 2, 4, 8]);
        assert_eq!(
            (plan(2).device, &*plan(2).preset, plan(2).batch),
            (DeviceKind::Cuda, "gpt2", 64)
        );
        let forced = device_plan(DeviceChoice::Cpu, 8, Given::default()).unwrap();
        assert_eq!(forced.device, DeviceKind::Cpu, "--device cpu on a GPU machine");
        let given = Given {
            world_sizes: Some(&[1, 2]),
            preset: Some("small"),
            batch: Some(8),
            ..Given::default()
        };
        let p = device_plan(DeviceChoice::Cuda, 2, given).unwrap();
        assert_eq!((&p.world_sizes[..], &*p.preset, p.batch), (&[1, 2][..], "small", 8));
        assert!(
            p.describe().contains("world sizes 1, 2, preset small, 8 examples"),
            "{}",
            p.describe()
        );
    }

    #[test]
    fn gpus_that_are_not_there_are_refused() {
        let e = device_plan(DeviceChoice::Cuda, 0, Given::default()).unwrap_err().to_string();
        assert!(e.contains("libtorch sees no CUDA device: use --device cpu"), "{e}");
        let given = Given { world_sizes: Some(&[1, 4]), ..Given::default() };
        let e = device_plan(DeviceChoice::Cuda, 2, given).unwrap_err().to_string();
        assert!(e.contains("4 ranks need 4 GPUs") && e.contains("libtorch sees 2"), "{e}");
    }

    #[test]
    fn across_hosts_the_world_sizes_go_up_to_what_the_launcher_offers() {
        let offer =
            Offer { devices: 16, source: "Slurm job 8: 2 nodes × 8 GPUs".into(), more: "ask" };
        let across = Given { offer: Some(&offer), spans_hosts: true, ..Given::default() };
        let p = device_plan(DeviceChoice::Cuda, 8, across).unwrap();
        assert_eq!(p.world_sizes, [1, 2, 4, 8, 16], "beyond the 8 GPUs seen here");
        assert!(p.describe().contains("up to the 16 ranks the launcher offers: Slurm job 8"));
        let cpu = device_plan(DeviceChoice::Cpu, 0, Given { offer: Some(&offer), ..across });
        assert_eq!(cpu.unwrap().world_sizes, [1, 2, 4, 8, 16]);
        let too_many = Given { world_sizes: Some(&[1, 32]), ..across };
        let e = device_plan(DeviceChoice::Cuda, 8, too_many).unwrap_err().to_string();
        assert!(e.contains("32 ranks") && e.contains("room for 16") && e.contains("ask"), "{e}");
        // Across hosts that do not say how many: the given world sizes stand.
        let unsaid = Given { world_sizes: Some(&[1, 32]), spans_hosts: true, ..Given::default() };
        assert_eq!(device_plan(DeviceChoice::Cuda, 8, unsaid).unwrap().world_sizes, [1, 32]);
    }

    #[test]
    fn the_gpu_plan_is_checked_against_free_memory_on_fake_numbers() {
        use crate::config::Preset;
        let gpt2 = crate::model::GptConfig::new(Preset::Gpt2.dims(), 50257, 0.1);
        let need = rank_memory(gpt2.parameters(), Preset::Gpt2.dims(), 50257, 64, 128);
        let gib = |g: f64| (g * (1u64 << 30) as f64) as u64;
        // 124 M parameters: ~2 GiB of fp32 state and a context while waiting; ~10 GiB training.
        assert!(need.waiting > gib(2.0) && need.waiting < gib(3.0), "{need:?}");
        assert!(need.training > gib(8.0) && need.training < gib(14.0), "{need:?}");
        // Eight GPUs: ws1, 2, 4, 8 and three independent-copy runs share GPU 0.
        assert!(check_gpu_memory(7, need, gib(78.0)).is_ok());
        let e = check_gpu_memory(7, need, gib(20.0)).unwrap_err().to_string();
        assert!(e.contains("7 ranks on GPU 0") && e.contains("20.0 GiB free"), "{e}");
        assert!(e.contains("--no-independent"), "{e}");
        assert!(check_gpu_memory(1, need, need.training).is_ok(), "one run alone, exactly");
    }

    #[test]
    fn the_cpu_peak_is_measured_and_mfu_is_a_share_of_it() {
        let peak = measure_peak(DeviceKind::Cpu, Precision::Fp32);
        // One core of any x86-64 or Arm server does 1–200 GFLOP/s in fp32.
        assert!(peak.flops_per_sec > 1e9 && peak.flops_per_sec < 2e11, "{peak:?}");
        assert!(
            peak.measured.starts_with("one core, fp32 1024×1024 products ("),
            "{}",
            peak.measured
        );
        assert_eq!(mfu(peak.flops_per_sec / 4.0, &peak), 0.25);
        let known = Peak { flops_per_sec: 4e10, ..peak.clone() };
        assert!((mfu(1e10, &known) - 0.25).abs() < 1e-12);
        // bf16 hardware executes bf16 products faster than fp32 ones (AMX ~4×, AVX512-BF16 ~2×).
        if crate::simd::bf16_products().is_some() {
            let bf16 = measure_peak(DeviceKind::Cpu, Precision::Bf16);
            assert!(bf16.measured.starts_with("one core, bf16 1024×1024"), "{}", bf16.measured);
            assert!(bf16.flops_per_sec > 1.3 * peak.flops_per_sec, "{bf16:?} against {peak:?}");
        }
    }
}
