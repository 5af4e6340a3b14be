//! GPT-2 (Radford et al. 2019; layout after nanoGPT): pre-LayerNorm blocks, fused causal
//! self-attention, GELU(tanh) MLP, learned positions, LM head tied to `wte`. Parameter names follow
//! GPT-2 checkpoints (`wte`, `wpe`, `h.N.attn.c_attn`, `ln_f`).

mod config;
mod pass;

pub use config::GptConfig;
use config::INIT_STD;

use super::cpu::{self, dropout::dropout};
use crate::config::{CpuMatmul, Precision};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

fn linear(p: nn::Path, input: i64, output: i64, stdev: f64) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, input, output, cfg)
}

/// `x · wᵀ + b` over the last dimension of `x`. With `onednn` (CPU only), through oneDNN's inner
/// product (`cpu::onednn`).
fn affine(x: &Tensor, w: &Tensor, b: Option<&Tensor>, onednn: bool) -> Tensor {
    match onednn && x.numel() > 0 {
        true => cpu::onednn::affine(x, w, b),
        false => x.linear(w, b),
    }
}

/// `x · wᵀ` as the model computes it on `x`'s device: with `onednn` (CPU) through oneDNN, else
/// libtorch's product (BLAS on CPUs, cuBLAS on GPUs). For measuring the device's peak rate.
pub(crate) fn product_for_peak(x: &Tensor, w: &Tensor, onednn: bool) -> Tensor {
    affine(x, w, None, onednn && x.device() == Device::Cpu && tch::utils::has_mkldnn())
}

/// The backward of [`affine`] for the output gradient `dy` (N, out) of the rows `x` (N, in):
/// writes `w`'s gradient (and `b`'s) over whatever it held — a product that does not read back
/// the old values — and returns `x`'s (N, in).
pub(super) fn affine_backward(
    x: &Tensor,
    dy: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    onednn: bool,
) -> Tensor {
    assert!(w.grad().defined(), "the model's gradients must exist before a step");
    if onednn {
        return cpu::onednn::affine_backward(x, dy, w, b);
    }
    write_parameter_grads(x, dy, w, b);
    dy.mm(w)
}

/// Writes the gradients of `x · wᵀ + b`'s parameters for the output gradient `dy` (N, out) of
/// the rows `x` (N, in) over whatever they held: `dyᵀ · x` into `w`'s, `dy`'s column sums into
/// `b`'s.
pub(super) fn write_parameter_grads(x: &Tensor, dy: &Tensor, w: &Tensor, b: Option<&Tensor>) {
    let _ = dy.tr().mm_out(&w.grad(), x);
    if let Some(b) = b {
        let _ = dy.sum_intlist_out(&b.grad(), &[0i64][..], false, Kind::Float);
    }
}

pub(super) fn dense(lin: &nn::Linear, x: &Tensor, onednn: bool) -> Tensor {
    affine(x, &lin.ws, lin.bs.as_ref(), onednn)
}

/// `x · wᵀ + b` in bf16, as autocast runs `linear`: the operands cast to bf16 (autograd casts
/// the gradients back, so the fp32 parameters receive fp32 gradients), a bf16 result.
fn affine_bf16(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let bf16 = |t: &Tensor| t.to_kind(Kind::BFloat16);
    bf16(x).linear(&bf16(w), b.map(bf16).as_ref())
}

/// How the model's matrix products run, one way for the whole model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Products {
    /// libtorch's fp32 product: BLAS on CPUs, cuBLAS on GPUs (TF32 there with `--precision
    /// tf32`).
    Libtorch,
    /// oneDNN's inner product (CPU, `--cpu-matmul onednn`, built into libtorch).
    OneDnn,
    /// bf16 operands and result, as autocast runs `linear` (`--precision bf16`).
    Bf16,
}

impl Products {
    fn of(config: &GptConfig, device: Device) -> Self {
        if config.precision == Precision::Bf16 {
            Products::Bf16
        } else if config.matmul.resolve() == CpuMatmul::Onednn
            && device == Device::Cpu
            && tch::utils::has_mkldnn()
        {
            Products::OneDnn
        } else {
            Products::Libtorch
        }
    }

    pub(super) fn onednn(self) -> bool {
        self == Products::OneDnn
    }
}

/// `lin` applied to `x` as `products` says: what the layers' forward passes call.
fn product(lin: &nn::Linear, x: &Tensor, products: Products) -> Tensor {
    match products {
        Products::Bf16 => affine_bf16(x, &lin.ws, lin.bs.as_ref()),
        _ => dense(lin, x, products.onednn()),
    }
}

/// GPT-2's LayerNorm epsilon.
pub(super) const LN_EPS: f64 = 1e-5;

fn layer_norm(p: nn::Path, n_embd: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![n_embd], nn::LayerNormConfig { eps: LN_EPS, ..Default::default() })
}

/// Per-layer keys and values of the positions decoded so far: each (B, nh, T, hs).
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        KvCache { layers: (0..n_layer).map(|_| None).collect() }
    }
}

/// How attention is masked: causal (training, full sequences) or an explicit boolean mask
/// (B, 1, Tq, Tk), true = may attend (batched decoding with left padding).
#[derive(Clone, Copy)]
pub enum Mask<'a> {
    Causal,
    Explicit(&'a Tensor),
}

#[derive(Debug)]
pub(super) struct CausalSelfAttention {
    pub(super) c_attn: nn::Linear,
    pub(super) c_proj: nn::Linear,
    pub(super) n_head: i64,
    pub(super) dropout: f64,
    /// Also says whether attention runs in bf16.
    pub(super) products: Products,
}

impl CausalSelfAttention {
    fn new(p: nn::Path, cfg: &GptConfig, products: Products) -> Self {
        let c = cfg.dims.n_embd;
        CausalSelfAttention {
            c_attn: linear(&p / "c_attn", c, 3 * c, INIT_STD),
            c_proj: linear(&p / "c_proj", c, c, cfg.residual_std()),
            n_head: cfg.dims.n_head,
            dropout: cfg.dropout,
            products,
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: Mask,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        train: bool,
    ) -> Tensor {
        let (b, t, c) = x.size3().expect("(B, T, C) input");
        let hs = c / self.n_head;
        let qkv = product(&self.c_attn, x, self.products).split(c, 2); // 3 × (B, T, C)
        let heads = |t_: &Tensor| t_.view([b, t, self.n_head, hs]).transpose(1, 2); // (B, nh, T, hs)
        let (q, mut k, mut v) = (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]));
        if let Some(slot) = cache {
            if let Some((k0, v0)) = slot.as_ref() {
                k = Tensor::cat(&[k0, &k], 2);
                v = Tensor::cat(&[v0, &v], 2);
            }
            *slot = Some((k.shallow_clone(), v.shallow_clone()));
        }
        let p = if train { self.dropout } else { 0.0 };
        // libtorch's attention with dropout on the CPU is its unfused "math" path; the same
        // steps here draw the mask with the fast generator.
        let by_hand = p > 0.0 && x.device() == Device::Cpu && self.products != Products::Bf16;
        let y = match mask {
            Mask::Causal if by_hand => cpu::reference::causal_attention_with_dropout(&q, &k, &v, p),
            Mask::Causal => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                p,
                true,
                None,
                false,
            ),
            Mask::Explicit(m) => {
                Tensor::scaled_dot_product_attention(&q, &k, &v, Some(m), p, false, None, false)
            }
        }; // (B, nh, T, hs)
        let y = y.transpose(1, 2).contiguous().view([b, t, c]); // (B, T, C)
        dropout(&product(&self.c_proj, &y, self.products), p, train)
    }
}

#[derive(Debug)]
pub(super) struct Mlp {
    pub(super) c_fc: nn::Linear,
    pub(super) c_proj: nn::Linear,
    pub(super) dropout: f64,
    pub(super) products: Products,
}

impl Mlp {
    fn new(p: nn::Path, cfg: &GptConfig, products: Products) -> Self {
        let c = cfg.dims.n_embd;
        Mlp {
            c_fc: linear(&p / "c_fc", c, 4 * c, INIT_STD),
            c_proj: linear(&p / "c_proj", 4 * c, c, cfg.residual_std()),
            dropout: cfg.dropout,
            products,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let p = if train { self.dropout } else { 0.0 };
        let h = product(&self.c_fc, x, self.products).gelu("tanh");
        dropout(&product(&self.c_proj, &h, self.products), p, train)
    }
}

#[derive(Debug)]
pub(super) struct Block {
    pub(super) ln_1: nn::LayerNorm,
    pub(super) attn: CausalSelfAttention,
    pub(super) ln_2: nn::LayerNorm,
    pub(super) mlp: Mlp,
}

impl Block {
    fn new(p: nn::Path, cfg: &GptConfig, products: Products) -> Self {
        Block {
            ln_1: layer_norm(&p / "ln_1", cfg.dims.n_embd),
            attn: CausalSelfAttention::new(&p / "attn", cfg, products),
            ln_2: layer_norm(&p / "ln_2", cfg.dims.n_embd),
            mlp: Mlp::new(&p / "mlp", cfg, products),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: Mask,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        train: bool,
    ) -> Tensor {
        let x = x + self.attn.forward(&x.apply(&self.ln_1), mask, cache, train);
        &x + self.mlp.forward(&x.apply(&self.ln_2), train)
    }
}

/// The whole model. `hidden*` return the final-LayerNorm states; `logits` applies the tied head.
#[derive(Debug)]
pub struct Gpt {
    pub(super) wte: nn::Embedding,
    pub(super) wpe: nn::Embedding,
    pub(super) h: Vec<Block>,
    pub(super) ln_f: nn::LayerNorm,
    pub config: GptConfig,
    pub(super) products: Products,
}

impl Gpt {
    /// Builds the model under `p` with GPT-2 initialisation from torch's global RNG.
    pub fn new(p: &nn::Path, config: GptConfig) -> Self {
        let d = config.dims;
        assert!(d.n_embd % d.n_head == 0, "n_embd must be divisible by n_head");
        let products = Products::of(&config, p.device());
        let emb = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: INIT_STD },
            ..Default::default()
        };
        Gpt {
            wte: nn::embedding(p / "wte", config.vocab_size, d.n_embd, emb),
            wpe: nn::embedding(p / "wpe", d.n_positions, d.n_embd, emb),
            h: (0..d.n_layer).map(|i| Block::new(p / "h" / i, &config, products)).collect(),
            ln_f: layer_norm(p / "ln_f", d.n_embd),
            config,
            products,
        }
    }

    pub fn device(&self) -> Device {
        self.wte.ws.device()
    }

    /// Hidden states (B, T, C) of full sequences `idx` (B, T) at positions 0..T, causal attention.
    pub fn hidden(&self, idx: &Tensor, train: bool) -> Tensor {
        let t = idx.size()[1];
        let pos = Tensor::arange(t, (Kind::Int64, self.device())).unsqueeze(0); // (1, T)
        self.run(idx, &pos, Mask::Causal, None, train)
    }

    /// Hidden states of `idx` (B, t) at explicit `positions` (B, t) with an explicit attention mask
    /// over the cached plus new keys; appends the new keys and values to `cache`. No dropout.
    pub(crate) fn hidden_cached(
        &self,
        idx: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor {
        self.run(idx, positions, Mask::Explicit(mask), Some(cache), false)
    }

    fn run(
        &self,
        idx: &Tensor,
        positions: &Tensor,
        mask: Mask,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Tensor {
        self.run_embedded(&idx.apply(&self.wte), positions, mask, cache, train)
    }

    /// `run` from the token embeddings `tok` (B, T, C) on.
    fn run_embedded(
        &self,
        tok: &Tensor,
        positions: &Tensor,
        mask: Mask,
        mut cache: Option<&mut KvCache>,
        train: bool,
    ) -> Tensor {
        let p = if train { self.config.dropout } else { 0.0 };
        let pos = positions.apply(&self.wpe); // (B or 1, T, C)
        let mut x = dropout(&(tok + pos), p, train);
        for (i, block) in self.h.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = block.forward(&x, mask, slot, train);
        }
        x.apply(&self.ln_f)
    }

    /// Tied LM head: logits (…, V) of hidden states (…, C).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        match self.products {
            Products::Bf16 => affine_bf16(hidden, &self.wte.ws, None),
            products => affine(hidden, &self.wte.ws, None, products.onednn()),
        }
    }

    /// Summed cross-entropy at the given flat positions of `hidden` (B, T, C). Only those rows go
    /// through the LM head: the loss is the same as over all positions with 0/1 weights.
    pub fn target_loss_sum(&self, hidden: &Tensor, index: &Tensor, labels: &Tensor) -> Tensor {
        let c = self.config.dims.n_embd;
        let rows = hidden.view([-1, c]).index_select(0, index); // (n, C)
        let logits = self.logits(&rows).to_kind(Kind::Float); // the loss in fp32, as autocast's
        logits.cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Sum, -100, 0.0)
    }
}

/// Number of elements over all trainable variables.
pub(crate) fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

/// Logits of full sequences, so a `Gpt` can be used where tch expects a module.
impl Module for Gpt {
    fn forward(&self, idx: &Tensor) -> Tensor {
        self.logits(&self.hidden(idx, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;

    fn model(vocab: i64) -> (nn::VarStore, Gpt) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = GptConfig::new(Preset::Tiny.dims(), vocab, 0.1);
        let m = Gpt::new(&vs.root(), cfg);
        (vs, m)
    }

    #[test]
    fn shapes_names_and_parameter_count() {
        let (vs, m) = model(100);
        let idx = Tensor::randint(100, [3, 17], (Kind::Int64, Device::Cpu));
        assert_eq!(m.hidden(&idx, true).size(), vec![3, 17, 128]);
        assert_eq!(m.forward(&idx).size(), vec![3, 17, 100]);
        let names = vs.variables();
        for n in [
            "wte.weight",
            "wpe.weight",
            "h.0.attn.c_attn.weight",
            "h.1.mlp.c_proj.bias",
            "ln_f.weight",
        ] {
            assert!(names.contains_key(n), "missing {n}");
        }
        // wte + wpe + 2 × (2 LN + c_attn + c_proj + c_fc + c_proj) + ln_f; the head is tied.
        let c = 128;
        let block =
            2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c);
        assert_eq!(parameter_count(&vs), 100 * c + 128 * c + 2 * block + 2 * c);
        assert_eq!(m.config.parameters(), parameter_count(&vs) as u64);
    }

    #[test]
    fn attention_is_causal() {
        let (_vs, m) = model(50);
        let a = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([1, 6]);
        let b = Tensor::from_slice(&[1i64, 2, 3, 9, 9, 9]).view([1, 6]);
        let (ha, hb) = (m.hidden(&a, false), m.hidden(&b, false));
        let same = ha.narrow(1, 0, 3).allclose(&hb.narrow(1, 0, 3), 1e-6, 1e-6, false);
        assert!(same, "changing future tokens changed past states");
        assert!(!ha.narrow(1, 3, 1).allclose(&hb.narrow(1, 3, 1), 1e-6, 1e-6, false));
    }

    #[test]
    fn init_follows_gpt2() {
        let (vs, _m) = model(1000);
        let v = vs.variables();
        let std = |n: &str| v[n].std(true).double_value(&[]);
        assert!((std("h.0.attn.c_attn.weight") - 0.02).abs() < 0.002);
        assert!((std("h.0.mlp.c_proj.weight") - 0.01).abs() < 0.001, "0.02/√(2·2)");
        assert_eq!(v["h.0.attn.c_attn.bias"].abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert_eq!(v["ln_f.weight"].mean(Kind::Float).double_value(&[]), 1.0);
    }

    /// Both training passes — by hand, and autograd with the head done by hand — give
    /// autograd's loss and gradients over `hidden` and `target_loss_sum`, with either kernels.
    /// Without dropout: tests share torch's generator, so masks drawn here could differ between
    /// passes (`tests/training_pass.rs` compares them with dropout, alone in its process).
    #[test]
    fn forward_backward_matches_autograd() {
        type Pass = fn(&Gpt, &Tensor, &Tensor, &Tensor, f64) -> Tensor;
        let passes: [(&str, Pass); 2] = [
            ("by hand", Gpt::forward_backward_by_hand),
            ("autograd", Gpt::forward_backward_autograd),
        ];
        for matmul in [CpuMatmul::Onednn, CpuMatmul::Blas] {
            tch::manual_seed(0);
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = GptConfig { matmul, ..GptConfig::new(Preset::Tiny.dims(), 50, 0.0) };
            let m = Gpt::new(&vs.root(), cfg);
            let vars = vs.trainable_variables();
            let grads = crate::dist::FlatGrads::new(
                &vars,
                &crate::dist::Solo,
                crate::config::AllReduce::Mpi,
            );
            let idx = Tensor::randint(50, [3, 9], (Kind::Int64, Device::Cpu));
            let index = Tensor::from_slice(&[0i64, 4, 5, 13, 26]);
            let labels = Tensor::from_slice(&[3i64, 49, 0, 7, 7]);
            let scale = 1.0 / 7.0;

            let expected = m.target_loss_sum(&m.hidden(&idx, true), &index, &labels);
            (&expected * scale).backward();
            let autograd = grads.buffer().copy();
            for (name, pass) in passes {
                // What the buffer held must not matter: every gradient is overwritten.
                let _ = grads.buffer().shallow_clone().fill_(7.0);
                let loss = pass(&m, &idx, &index, &labels, scale);
                let case = format!("{name}, {matmul:?}");
                assert!(loss.allclose(&expected, 1e-5, 1e-5, false), "{case}: loss");
                let diff = (grads.buffer() - &autograd).abs().max().double_value(&[]);
                assert!(diff < 1e-6, "{case}: gradients differ by {diff}");
            }
            assert!(autograd.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
    }

    /// The pass by hand writes every gradient over what was there (`wte`'s is written by the
    /// head before the embedding adds to it): with 7s left in the buffer, the same gradients as
    /// from zeros.
    #[test]
    fn forward_backward_by_hand_overwrites_the_gradients() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Gpt::new(&vs.root(), GptConfig::new(Preset::Tiny.dims(), 50, 0.0));
        let vars = vs.trainable_variables();
        let grads =
            crate::dist::FlatGrads::new(&vars, &crate::dist::Solo, crate::config::AllReduce::Mpi);
        let idx = Tensor::randint(50, [2, 6], (Kind::Int64, Device::Cpu));
        let (index, labels) = (Tensor::from_slice(&[1i64, 8]), Tensor::from_slice(&[4i64, 9]));
        let run = |fill: f64| {
            let _ = grads.buffer().shallow_clone().fill_(fill);
            let _ = m.forward_backward_by_hand(&idx, &index, &labels, 0.5);
            grads.buffer().copy()
        };
        let (from_zeros, from_sevens) = (run(0.0), run(7.0));
        assert!(from_zeros.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        assert!(from_sevens.equal(&from_zeros));
    }

    /// The attention that draws its own dropout masks is libtorch's causal attention: with a
    /// probability too small to drop anything (its threshold rounds to 0), the same values and
    /// gradients as `scaled_dot_product_attention`; with dropout, some weights vanish.
    #[test]
    fn attention_with_dropout_matches_libtorch_without() {
        let qkv =
            || Tensor::randn([2, 3, 9, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (q, k, v) = (qkv(), qkv(), qkv());
        let ours = cpu::reference::causal_attention_with_dropout(&q, &k, &v, 1e-12);
        let theirs = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        assert!(ours.allclose(&theirs, 1e-5, 1e-6, false));
        let grads = |y: &Tensor| {
            let g = Tensor::run_backward(&[y.sum(Kind::Float)], &[&q, &k, &v], false, false);
            Tensor::cat(&g.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(), 0)
        };
        assert!(grads(&ours).allclose(&grads(&theirs), 1e-4, 1e-5, false));
        let dropped = cpu::reference::causal_attention_with_dropout(&q, &k, &v, 0.5);
        assert!(!dropped.allclose(&theirs, 1e-3, 1e-3, false), "dropout changed nothing");
    }

    #[test]
    fn onednn_and_blas_compute_the_same_model() {
        // One set of weights (tests share torch's RNG, so two seeded inits could differ).
        let weights = nn::VarStore::new(Device::Cpu);
        let _ = Gpt::new(&weights.root(), GptConfig::new(Preset::Tiny.dims(), 60, 0.0));
        let run = |matmul| {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let cfg = GptConfig { matmul, ..GptConfig::new(Preset::Tiny.dims(), 60, 0.0) };
            let m = Gpt::new(&vs.root(), cfg);
            vs.copy(&weights).unwrap();
            let idx = Tensor::arange(2 * 11, (Kind::Int64, Device::Cpu)).view([2, 11]);
            m.forward(&idx)
        };
        let (a, b) = (run(CpuMatmul::Onednn), run(CpuMatmul::Blas));
        assert_eq!(a.size(), vec![2, 11, 60]);
        assert!(a.allclose(&b, 1e-5, 1e-5, false));
    }

    #[test]
    fn target_loss_equals_weighted_full_loss() {
        let (_vs, m) = model(40);
        let idx = Tensor::randint(40, [2, 5], (Kind::Int64, Device::Cpu));
        let labels = Tensor::randint(40, [2, 5], (Kind::Int64, Device::Cpu));
        let h = m.hidden(&idx, false);
        let index = Tensor::from_slice(&[1i64, 2, 7]);
        let sel = m.target_loss_sum(&h, &index, &labels.view([-1]).index_select(0, &index));
        let full = m.logits(&h).view([-1, 40]).cross_entropy_loss::<Tensor>(
            &labels.view([-1]),
            None,
            tch::Reduction::None,
            -100,
            0.0,
        );
        let expect = full.index_select(0, &index).sum(Kind::Float);
        assert!(sel.allclose(&expect, 1e-5, 1e-5, false));
    }
}
