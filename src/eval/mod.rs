//! Evaluation after an epoch: validation loss over every validation example and greedy test
//! translations scored with BLEU, both sharded over ranks (rank r takes examples r, r+N, …) and
//! combined with collectives, so N ranks evaluate N times faster and all report the same numbers.

pub mod bleu;

use crate::config::Padding;
use crate::data::{collate, padded_len, partition::eval_shard, Example, Pair, Tokenizer};
use crate::dist::Communicator;
use crate::model::{greedy_decode, Gpt};
use serde::{Deserialize, Serialize};

/// What the evaluation after an epoch found, the same on every rank.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub validation_loss: f64,
    /// Corpus BLEU of the test translations.
    pub bleu: f64,
    /// Seconds the evaluation took.
    pub seconds: f64,
    pub translations: Vec<Translation>,
}

/// The evaluation after an epoch: the validation loss over `val` and greedy translations of
/// `test` scored with BLEU, `on_item` told of each example and sentence done.
pub(crate) fn evaluate(
    model: &Gpt,
    tok: &Tokenizer,
    (val, test): (&[Example], &[Pair]),
    max_len: usize,
    comm: &dyn Communicator,
    mut on_item: impl FnMut(usize),
) -> Evaluation {
    let start = std::time::Instant::now();
    let validation_loss = validation_loss(model, val, tok.pad, max_len, comm, &mut on_item);
    let translations = translate_all(model, tok, test, max_len, comm, &mut on_item);
    let hyps: Vec<String> = translations.iter().map(|t| t.hypothesis.clone()).collect();
    let refs: Vec<String> = translations.iter().map(|t| t.reference.clone()).collect();
    Evaluation {
        validation_loss,
        bleu: bleu::corpus_bleu(&hyps, &refs).score,
        seconds: start.elapsed().as_secs_f64(),
        translations,
    }
}

/// Examples per evaluation forward pass.
const EVAL_BATCH: usize = 64;
/// Sentences decoded together.
const DECODE_BATCH: usize = 32;

/// Mean target-token loss over all of `examples` (dropout off), identical on every rank. Batches
/// are padded dynamically whatever the training padding: right padding under causal attention
/// changes no target position's loss, and evaluation is not what the benchmark times.
pub fn validation_loss(
    model: &Gpt,
    examples: &[Example],
    pad: i64,
    seq_len: usize,
    comm: &dyn Communicator,
    mut on_batch: impl FnMut(usize),
) -> f64 {
    let _guard = tch::no_grad_guard();
    let shard = eval_shard(examples.len(), comm.size(), comm.rank());
    let mut sums = [0.0f64; 2]; // [summed loss, target tokens]
    for chunk in shard.chunks(EVAL_BATCH) {
        let batch: Vec<&Example> = chunk.iter().map(|&i| &examples[i]).collect();
        let len = padded_len(&batch, Padding::Dynamic, seq_len);
        let b = collate(&batch, pad, len, model.device());
        if b.target_tokens > 0 {
            let hidden = model.hidden(&b.inputs, false);
            let loss = model.target_loss_sum(&hidden, &b.target_index, &b.target_labels);
            sums[0] += loss.double_value(&[]);
            sums[1] += b.target_tokens as f64;
        }
        on_batch(chunk.len());
    }
    comm.all_reduce_sum_f64(&mut sums);
    if sums[1] > 0.0 {
        sums[0] / sums[1]
    } else {
        f64::NAN
    }
}

/// One test sentence and its greedy translation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Translation {
    pub source: String,
    pub reference: String,
    pub hypothesis: String,
}

/// The decoding prompt `tok(src) + <eos_de>`, with the source cut so that at least a quarter of
/// the context is left for the translation.
pub fn prompt(tok: &Tokenizer, src: &str, max_len: usize) -> Vec<i64> {
    let mut ids = tok.encode(src);
    ids.truncate(max_len - max_len / 4 - 1);
    ids.push(tok.eos_de);
    ids
}

/// Greedy translations of every pair, decoded shard by shard and gathered, in input order, on
/// every rank.
pub(crate) fn translate_all(
    model: &Gpt,
    tok: &Tokenizer,
    pairs: &[Pair],
    max_len: usize,
    comm: &dyn Communicator,
    mut on_batch: impl FnMut(usize),
) -> Vec<Translation> {
    let shard = eval_shard(pairs.len(), comm.size(), comm.rank());
    let mut mine: Vec<(usize, String)> = Vec::with_capacity(shard.len());
    for chunk in shard.chunks(DECODE_BATCH) {
        let prompts: Vec<Vec<i64>> =
            chunk.iter().map(|&i| prompt(tok, &pairs[i].de, max_len)).collect();
        let outputs = greedy_decode(model, &prompts, tok.eos_en, tok.pad, max_len);
        mine.extend(chunk.iter().zip(outputs).map(|(&i, ids)| (i, tok.decode(&ids))));
        on_batch(chunk.len());
    }
    let bytes = serde_json::to_vec(&mine).expect("strings serialise");
    let mut hyps = vec![String::new(); pairs.len()];
    for part in comm.all_gather_bytes(&bytes) {
        let part: Vec<(usize, String)> =
            serde_json::from_slice(&part).expect("gathered from ranks");
        for (i, h) in part {
            hyps[i] = h;
        }
    }
    pairs
        .iter()
        .zip(hyps)
        .map(|(p, h)| Translation { source: p.de.clone(), reference: p.en.clone(), hypothesis: h })
        .collect()
}
