//! What the set-up stage refuses before training starts, on rank 0: a model too large for the
//! host's memory, and a corpus that leaves nothing to learn.

use crate::config::{Config, DeviceKind};
use crate::data::{self, Example};
use crate::progress::Progress;
use crate::UsageError;

/// Refuses a model whose parameters, gradients and AdamW state (5 f32 copies) alone exceed the
/// memory rank 0's host has available, before anything that size is allocated: such a run would
/// only end in the out-of-memory killer. Activations come on top; this is the floor.
pub(crate) fn memory(config: &Config, vocab_size: usize) -> anyhow::Result<()> {
    let dims = config.dims();
    let params = crate::model::GptConfig::new(dims, vocab_size as i64, 0.0).parameters();
    let need = params.saturating_mul(5 * 4);
    let Some(available) = available_memory() else { return Ok(()) };
    if config.device == DeviceKind::Cpu && need > available {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(UsageError::error(format!(
            "the model has {params} parameters: with gradients and AdamW state it needs at least \
             {:.1} GiB, more than the {:.1} GiB this host has available: choose a smaller \
             --preset or --n-embd/--n-layer/--n-positions",
            gib(need),
            gib(available)
        )));
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux); `None` where it cannot be read.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Counts what training cannot learn from and refuses a corpus that leaves nothing: pairs with
/// an empty side are kept (each still ends in its end-of-sentence token, a target) and counted;
/// examples whose target tokens were all cut off by `--model-max-length` add nothing to the
/// loss and are counted; a split where no example has a target token left would make the loss
/// 0/0, so it is refused before training.
pub(crate) fn examples(
    config: &Config,
    corpus: &data::Corpus,
    train: &[Example],
    val: &[Example],
    progress: &Progress,
) -> anyhow::Result<()> {
    let empty: Vec<usize> = (corpus.train.iter().enumerate())
        .filter(|(_, p)| p.de.trim().is_empty() || p.en.trim().is_empty())
        .map(|(i, _)| i + 1)
        .collect();
    if let Some(first) = empty.first() {
        progress.note(&format!(
            "note: {} of {} training pairs have an empty German or English side (the first is \
             pair {first}); they are kept, each still ending in its end-of-sentence token",
            empty.len(),
            train.len()
        ));
    }
    for (split, examples) in [("training", train), ("validation", val)] {
        let none = examples.iter().filter(|e| e.target_tokens() == 0).count();
        if none == 0 {
            continue;
        }
        if none == examples.len() {
            return Err(UsageError::error(format!(
                "none of the {none} {split} examples keeps a target token within \
                 --model-max-length {}: the loss would be 0/0; raise --model-max-length or use \
                 shorter sentences",
                config.model_max_length
            )));
        }
        progress.note(&format!(
            "note: {none} of {} {split} examples lose every target token to --model-max-length \
             {} and add nothing to the loss",
            examples.len(),
            config.model_max_length
        ));
    }
    Ok(())
}
