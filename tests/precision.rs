//! bf16 mixed precision against fp32 on the same data: fp32 gradients on fp32 parameters, a loss
//! and gradient close to fp32's, and training that follows fp32's within a stated tolerance. On a
//! GPU when libtorch sees one, else on the CPU: through the hand-written pass with MKL's bf16
//! products where libtorch has them, else the autograd pass with autocast's casts (the command
//! line refuses bf16 on CPUs without bf16 hardware for speed, not for its numerics).

use dp_bench::config::{AllReduce, Precision, Preset};
use dp_bench::dist::{FlatGrads, Solo};
use dp_bench::model::{Gpt, GptConfig};
use dp_bench::optim::{AdamW, AdamWConfig};
use tch::{nn, Device, Kind, Tensor};

/// Steps of the training comparison, and the tolerance of its final loss: bf16 rounds every
/// product's inputs to 8 significant bits, so the losses part by a little each step.
const STEPS: usize = 20;
const FINAL_LOSS_TOLERANCE: f64 = 0.02;

/// Torch's generator is global: the tests of this file seed it, so they take turns.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn device() -> Device {
    Device::cuda_if_available()
}

/// A model of `precision` from seed 0, its flat gradients and its optimiser.
fn model(precision: Precision) -> (nn::VarStore, Gpt, FlatGrads, AdamW) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device());
    let config = GptConfig { precision, ..GptConfig::new(Preset::Tiny.dims(), 64, 0.0) };
    let m = Gpt::new(&vs.root(), config);
    let vars = vs.trainable_variables();
    let grads = FlatGrads::new(&vars, &Solo, AllReduce::Mpi);
    let opt = AdamW::new(&vars, AdamWConfig::workload(1e-3));
    (vs, m, grads, opt)
}

/// A fixed batch: 8 sequences of 24 tokens, the loss at every position but the first's.
fn batch() -> (Tensor, Tensor, Tensor, f64) {
    tch::manual_seed(7);
    let idx = Tensor::randint(64, [8, 24], (Kind::Int64, device()));
    let index = Tensor::arange(8 * 24, (Kind::Int64, device())).view([8, 24]).narrow(1, 0, 23);
    let index = index.flatten(0, -1);
    let labels = idx.narrow(1, 1, 23).flatten(0, -1);
    let targets = labels.numel() as f64;
    (idx, index, labels, 1.0 / targets)
}

#[test]
fn bf16_gives_fp32_gradients_close_to_fp32s() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (idx, index, labels, scale) = batch();
    let (_, fp32, g32, _) = model(Precision::Fp32);
    let (vs, bf16, g16, _) = model(Precision::Bf16);
    let l32 = fp32.forward_backward(&idx, &index, &labels, scale).double_value(&[]) * scale;
    let l16 = bf16.forward_backward(&idx, &index, &labels, scale).double_value(&[]) * scale;
    assert!(vs.trainable_variables().iter().all(|v| v.kind() == Kind::Float), "fp32 parameters");
    assert_eq!(g16.buffer().kind(), Kind::Float, "fp32 gradients in the flat buffer");
    assert!((l16 - l32).abs() < 0.01 * l32, "loss: bf16 {l16} against fp32 {l32}");
    let (a, b) = (g32.buffer(), g16.buffer());
    let norm = |t: &Tensor| t.norm().double_value(&[]);
    let cosine = (a * b).sum(Kind::Double).double_value(&[]) / (norm(a) * norm(b));
    let relative = norm(&(a - b)) / norm(a);
    eprintln!("bf16 vs fp32: loss {l16:.5} / {l32:.5}, gradient cosine {cosine:.5}, relative difference {relative:.4}");
    assert!(cosine > 0.995, "gradient cosine {cosine}");
    assert!(relative < 0.1, "gradient relative difference {relative}");
    assert!(relative > 0.0, "bf16 changed nothing: the products did not run in bf16");
}

#[test]
fn bf16_training_follows_fp32() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (idx, index, labels, scale) = batch();
    let train = |precision| {
        let (_, m, grads, mut opt) = model(precision);
        let losses: Vec<f64> = (0..STEPS)
            .map(|_| {
                let loss = m.forward_backward(&idx, &index, &labels, scale).double_value(&[]);
                opt.step(grads.buffer());
                loss * scale
            })
            .collect();
        losses
    };
    let (l32, l16) = (train(Precision::Fp32), train(Precision::Bf16));
    let (first, last32, last16) = (l32[0], l32[STEPS - 1], l16[STEPS - 1]);
    eprintln!(
        "on {:?}, {STEPS} steps: fp32 loss {first:.4} → {last32:.4}, bf16 → {last16:.4} ({:+.2} % of fp32's)",
        device(),
        (last16 / last32 - 1.0) * 100.0
    );
    assert!(last32 < 0.8 * first, "fp32 learns the batch: {first} → {last32}");
    assert!(
        (last16 - last32).abs() < FINAL_LOSS_TOLERANCE * last32,
        "bf16's loss after {STEPS} steps {last16} is not within {} % of fp32's {last32}",
        FINAL_LOSS_TOLERANCE * 100.0
    );
}
