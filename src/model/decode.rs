//! Batched greedy decoding with a per-layer key/value cache. Prompts of different lengths are
//! left-padded; pad keys are masked out and positions count real tokens only, so each sentence
//! decodes exactly as it would alone.

use super::gpt::{Gpt, KvCache};
use tch::{Device, Kind, Tensor};

/// Greedy continuation of each prompt until `eos` or until its prompt plus output reach
/// `max_total` tokens (at most the model's positions). Returns the generated ids of each prompt
/// without the final `eos`.
pub fn greedy_decode(
    model: &Gpt,
    prompts: &[Vec<i64>],
    eos: i64,
    pad: i64,
    max_total: usize,
) -> Vec<Vec<i64>> {
    let _guard = tch::no_grad_guard();
    let b = prompts.len();
    let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if b == 0 || p == 0 || p >= max_total {
        return vec![Vec::new(); b];
    }
    let device = model.device();
    let mut ids = vec![pad; b * p];
    let mut valid = vec![false; b * p];
    let mut positions = vec![0i64; b * p];
    for (row, prompt) in prompts.iter().enumerate() {
        let offset = p - prompt.len();
        for (j, &id) in prompt.iter().enumerate() {
            ids[row * p + offset + j] = id;
            valid[row * p + offset + j] = true;
            positions[row * p + offset + j] = j as i64;
        }
    }
    let (bi, pi) = (b as i64, p as i64);
    let idx = Tensor::from_slice(&ids).view([bi, pi]).to(device);
    let pos = Tensor::from_slice(&positions).view([bi, pi]).to(device);
    let mut keys_valid = Tensor::from_slice(&valid).view([bi, pi]).to(device); // (B, P)
                                                                               // A query may see earlier real tokens; a pad query sees itself, so no row is all-masked (NaN).
    let causal = Tensor::ones([pi, pi], (Kind::Bool, device)).tril(0);
    let eye = Tensor::eye(pi, (Kind::Bool, device));
    let mask = causal.logical_and(&keys_valid.view([bi, 1, 1, pi]).logical_or(&eye)); // (B, 1, P, P)

    let mut cache = KvCache::new(model.config.dims.n_layer as usize);
    let hidden = model.hidden_cached(&idx, &pos, &mask, &mut cache);
    let mut next = model.logits(&hidden.select(1, pi - 1)).argmax(-1, false); // (B,)
    let mut next_pos =
        Tensor::from_slice(&prompts.iter().map(|q| q.len() as i64).collect::<Vec<_>>()).to(device);

    let min_len = prompts.iter().map(Vec::len).min().unwrap_or(0);
    let last_position = model.config.dims.n_positions.min(max_total as i64) - 1;
    let mut out = vec![Vec::new(); b];
    let mut done = vec![false; b];
    for _ in 0..max_total - min_len {
        let tokens = Vec::<i64>::try_from(&next.to(Device::Cpu)).expect("argmax gives int64");
        for (row, &t) in tokens.iter().enumerate() {
            if done[row] {
                continue;
            }
            if t == eos {
                done[row] = true;
            } else {
                out[row].push(t);
                done[row] = prompts[row].len() + out[row].len() >= max_total;
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        keys_valid = Tensor::cat(&[keys_valid, Tensor::ones([bi, 1], (Kind::Bool, device))], 1);
        let tk = keys_valid.size()[1];
        let step_mask = keys_valid.view([bi, 1, 1, tk]);
        // Finished rows keep being fed (their output is ignored); keep their positions in range.
        let pos = next_pos.clamp_max(last_position).view([bi, 1]);
        let hidden = model.hidden_cached(&next.view([bi, 1]), &pos, &step_mask, &mut cache);
        next = model.logits(&hidden.select(1, 0)).argmax(-1, false);
        next_pos += 1;
    }
    out
}

/// Greedy decoding of one prompt without a cache: the whole sequence runs again for every new
/// token (what the original script did). The reference `greedy_decode` is checked against.
pub fn greedy_decode_uncached(model: &Gpt, prompt: &[i64], eos: i64, max_total: usize) -> Vec<i64> {
    let _guard = tch::no_grad_guard();
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    while seq.len() < max_total {
        let idx = Tensor::from_slice(&seq).view([1, -1]).to(model.device());
        let h = model.hidden(&idx, false);
        let t = model.logits(&h.select(1, -1)).argmax(-1, false).int64_value(&[0]);
        if t == eos {
            break;
        }
        out.push(t);
        seq.push(t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;
    use crate::model::GptConfig;
    use tch::nn;

    fn uncached(model: &Gpt, prompt: &[i64], eos: i64, max_total: usize) -> Vec<i64> {
        greedy_decode_uncached(model, prompt, eos, max_total)
    }

    #[test]
    fn batched_cached_equals_one_by_one_uncached() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = GptConfig::new(Preset::Tiny.dims(), 30, 0.0);
        let m = Gpt::new(&vs.root(), cfg);
        let prompts = vec![vec![1, 2, 3, 4, 5], vec![7], vec![9, 8, 7]];
        let batched = greedy_decode(&m, &prompts, 0, 29, 20);
        for (prompt, got) in prompts.iter().zip(&batched) {
            assert_eq!(got, &uncached(&m, prompt, 0, 20), "prompt {prompt:?}");
        }
        assert!(batched.iter().any(|o| !o.is_empty()));
    }
}
