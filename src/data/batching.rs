//! From sentence pairs to model input: one example is `tok(src) + <eos_de> + tok(tgt) + <eos_en>`
//! cut to `model_max_length + 1` tokens; a batch is those examples right-padded to a fixed length,
//! with the flat positions whose label is a target token (the only ones the loss looks at).

use super::corpus::Pair;
use super::tokenizer::Tokenizer;
use crate::config::Padding;
use tch::{Device, Tensor};

/// One tokenised training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids, at most `model_max_length + 1` of them.
    pub ids: Vec<i64>,
    /// Length of `tok(src) + <eos_de>`: ids from here on are targets.
    pub prompt_len: usize,
}

impl Example {
    pub(crate) fn encode(tok: &Tokenizer, pair: &Pair, max_len: usize) -> Self {
        let mut ids = tok.encode(&pair.de);
        ids.push(tok.eos_de);
        let prompt_len = ids.len();
        ids.extend(tok.encode(&pair.en));
        ids.push(tok.eos_en);
        ids.truncate(max_len + 1);
        Example { ids, prompt_len }
    }

    /// Input positions whose label is a target token: `ids[i + 1]` with `i + 1 >= prompt_len`.
    pub(crate) fn target_positions(&self) -> std::ops::Range<usize> {
        let end = self.ids.len().saturating_sub(1);
        self.prompt_len.saturating_sub(1).min(end)..end
    }

    pub fn target_tokens(&self) -> usize {
        self.target_positions().len()
    }
}

/// A collated batch on a device.
#[derive(Debug)]
pub struct Batch {
    /// (b, T) input ids, right-padded with `<pad>`.
    pub inputs: Tensor,
    /// (n,) flat indices into the (b·T) positions whose label is a target token.
    pub target_index: Tensor,
    /// (n,) the labels at those positions.
    pub target_labels: Tensor,
    pub examples: usize,
    /// Input positions fed to the model, padding included (the original's token count).
    pub tokens: usize,
    pub target_tokens: usize,
}

/// The input positions a batch of `examples` is padded to: `max_len` (fixed), or the longest
/// example's inputs (dynamic).
pub(crate) fn padded_len(examples: &[&Example], padding: Padding, max_len: usize) -> usize {
    match padding {
        Padding::Fixed => max_len,
        Padding::Dynamic => examples
            .iter()
            .map(|e| e.ids.len().saturating_sub(1))
            .max()
            .unwrap_or(1)
            .clamp(1, max_len),
    }
}

/// Pads `examples` to `seq_len` input positions (fixed padding: `model_max_length`).
pub fn collate(examples: &[&Example], pad: i64, seq_len: usize, device: Device) -> Batch {
    let b = examples.len();
    let mut inputs = vec![pad; b * seq_len];
    let mut index = Vec::new();
    let mut labels = Vec::new();
    for (row, ex) in examples.iter().enumerate() {
        let n = (ex.ids.len() - 1).min(seq_len);
        inputs[row * seq_len..row * seq_len + n].copy_from_slice(&ex.ids[..n]);
        for i in ex.target_positions().filter(|&i| i < seq_len) {
            index.push((row * seq_len + i) as i64);
            labels.push(ex.ids[i + 1]);
        }
    }
    let target_tokens = index.len();
    Batch {
        inputs: Tensor::from_slice(&inputs).view([b as i64, seq_len as i64]).to(device),
        target_index: Tensor::from_slice(&index).to(device),
        target_labels: Tensor::from_slice(&labels).to(device),
        examples: b,
        tokens: b * seq_len,
        target_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[i64], prompt_len: usize) -> Example {
        Example { ids: ids.to_vec(), prompt_len }
    }

    #[test]
    fn targets_are_english_and_eos_en() {
        // src = [10, 11], eos_de = 1, tgt = [20], eos_en = 2
        let e = ex(&[10, 11, 1, 20, 2], 3);
        // inputs [10 11 1 20], labels [11 1 20 2]: positions 2 and 3 predict 20 and <eos_en>.
        assert_eq!(e.target_positions(), 2..4);
        let b = collate(&[&e, &e], 0, 6, Device::Cpu);
        assert_eq!(b.inputs.size(), vec![2, 6]);
        assert_eq!(Vec::<i64>::try_from(&b.inputs.get(0)).unwrap(), vec![10, 11, 1, 20, 0, 0]);
        assert_eq!(Vec::<i64>::try_from(&b.target_index).unwrap(), vec![2, 3, 8, 9]);
        assert_eq!(Vec::<i64>::try_from(&b.target_labels).unwrap(), vec![20, 2, 20, 2]);
        assert_eq!((b.tokens, b.target_tokens), (12, 4));
    }

    #[test]
    fn dynamic_padding_keeps_every_target() {
        let (a, b) = (ex(&[10, 11, 1, 20, 2], 3), ex(&[10, 1, 20, 21, 22, 2], 2));
        assert_eq!(padded_len(&[&a, &b], Padding::Dynamic, 128), 5);
        assert_eq!(padded_len(&[&a, &b], Padding::Dynamic, 4), 4);
        assert_eq!(padded_len(&[&a, &b], Padding::Fixed, 128), 128);
        let fixed = collate(&[&a, &b], 0, 128, Device::Cpu);
        let dynamic = collate(&[&a, &b], 0, 5, Device::Cpu);
        assert_eq!(fixed.target_labels, dynamic.target_labels);
        assert_eq!((fixed.target_tokens, dynamic.tokens), (dynamic.target_tokens, 10));
        // The same positions, renumbered for the shorter rows.
        assert_eq!(Vec::<i64>::try_from(&dynamic.target_index).unwrap(), vec![2, 3, 6, 7, 8, 9]);
    }

    #[test]
    fn truncated_source_leaves_no_targets() {
        let e = ex(&[5, 5, 5, 5], 9);
        assert_eq!(e.target_tokens(), 0);
        assert_eq!(collate(&[&e], 0, 3, Device::Cpu).target_tokens, 0);
    }
}
