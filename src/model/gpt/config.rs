//! The model's configuration and what follows from it without building the model: its
//! parameter count, and the floating-point operations of a training step's matrix products.

use crate::config::{CpuMatmul, ModelDims, Precision};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptConfig {
    pub dims: ModelDims,
    pub vocab_size: i64,
    pub dropout: f64,
    pub matmul: CpuMatmul,
    /// fp32 or bf16 mixed precision (tf32 is cuBLAS's choice, not the model's).
    pub precision: Precision,
}

/// GPT-2 init: N(0, 0.02) weights, zero biases.
pub(super) const INIT_STD: f64 = 0.02;

impl GptConfig {
    /// A model with the default CPU matrix kernels.
    pub fn new(dims: ModelDims, vocab_size: i64, dropout: f64) -> Self {
        GptConfig {
            dims,
            vocab_size,
            dropout,
            matmul: CpuMatmul::default(),
            precision: Precision::Fp32,
        }
    }

    /// Trainable parameters of the model, without building it: `wte` and `wpe`, per block two
    /// LayerNorms (4C), `c_attn` (3C² + 3C), `c_proj` (C² + C), `c_fc` (4C² + 4C), the MLP's
    /// `c_proj` (4C² + C), and `ln_f`; the head is tied to `wte`.
    pub fn parameters(&self) -> u64 {
        let d = self.dims;
        let (c, v) = (d.n_embd as u64, self.vocab_size as u64);
        (v + d.n_positions as u64) * c + d.n_layer as u64 * (12 * c * c + 13 * c) + 2 * c
    }

    /// Floating-point operations of the matrix products of one training step (forward and
    /// backward) on `sequences` sequences of `seq_len` positions with `targets` loss positions:
    /// 6 per position and weight of the blocks' four matrices (12C² a layer), 12·T²·C per layer
    /// and sequence for attention's two (T, T) products over whole squares, and 6·C·V per target
    /// for the tied head, which runs only where the loss is. The usual count behind model FLOPs
    /// utilisation; LayerNorm, softmax, GELU and the optimiser are left out.
    pub(crate) fn step_flops(&self, sequences: usize, seq_len: usize, targets: usize) -> f64 {
        let d = self.dims;
        let (c, layers, v) = (d.n_embd as f64, d.n_layer as f64, self.vocab_size as f64);
        let (b, t) = (sequences as f64, seq_len as f64);
        layers * (6.0 * 12.0 * c * c * b * t + 12.0 * t * t * c * b) + 6.0 * c * v * targets as f64
    }

    /// GPT-2: residual projections scaled by 1/√(2·n_layer).
    pub(super) fn residual_std(&self) -> f64 {
        INIT_STD / (2.0 * self.dims.n_layer as f64).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;
    use crate::model::Gpt;
    use tch::{nn, Device};

    #[test]
    fn step_flops_count_the_model_s_own_matrices() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Gpt::new(&vs.root(), GptConfig::new(Preset::Tiny.dims(), 100, 0.1));
        // 2 flops per multiply-add, forward and the backward's two products: 6 per weight of
        // every block matrix (the 2-D weights under `h.`) and position.
        let block_weights: i64 = vs
            .variables()
            .iter()
            .filter(|(name, w)| name.starts_with("h.") && w.dim() == 2)
            .map(|(_, w)| w.numel() as i64)
            .sum();
        let (b, t, targets, c) = (3.0, 17.0, 20.0, 128.0);
        // Per layer (2) and sequence: q·kᵀ and the weights times v, 2·T²·C each, 3 times over.
        let attention = 2.0 * 3.0 * 2.0 * (2.0 * t * t * c) * b;
        let head = 6.0 * 100.0 * c * targets;
        let expected = 6.0 * block_weights as f64 * b * t + attention + head;
        assert_eq!(m.config.step_flops(3, 17, 20), expected);
    }
}
