//! Data: corpora (built-in and on disk), the tokenizer, examples and batches, and the split of
//! training examples across ranks.

pub mod batching;
pub mod corpus;
mod lexicon;
pub mod partition;
pub mod synthetic;
pub mod tokenizer;

pub use batching::{collate, padded_len, Batch, Example};
pub use corpus::{Corpus, Pair, SplitSizes};
pub use partition::{Schedule, SpeedDeal};
pub use tokenizer::Tokenizer;

use crate::config::{Config, DatasetSpec};

/// Loads the configured corpus: the built-in one from the seed, or files from disk.
pub fn load_corpus(config: &Config) -> Result<Corpus, corpus::CorpusError> {
    let sizes = SplitSizes {
        train: config.train_examples,
        val: config.val_examples,
        test: config.test_examples,
    };
    match &config.dataset {
        DatasetSpec::Synthetic => Ok(synthetic::generate(config.seed, sizes)),
        DatasetSpec::Path(path) => corpus::load_path(path, sizes),
    }
}
