//! Data: corpora (built-in and on disk), the tokenizer, examples and batches, the split of
//! training examples across ranks, and each rank's batch source.

pub mod batching;
pub mod corpus;
mod lexicon;
pub mod partition;
pub mod source;
pub mod synthetic;
pub mod tokenizer;

pub(crate) use batching::padded_len;
pub use batching::{collate, Batch, Example};
pub use corpus::{Corpus, Pair, SplitSizes};
pub use partition::{Schedule, SpeedDeal};
pub use source::{BatchSource, Step};
pub use tokenizer::Tokenizer;

use crate::config::{Config, DatasetSpec};

/// Loads the configured corpus: the built-in one from the seed, or files from disk. With
/// `--benchmark-only`, which evaluates nothing, no validation or test example is read, so a
/// corpus with only a training split will do.
pub(crate) fn load_corpus(config: &Config) -> Result<Corpus, corpus::CorpusError> {
    let evaluated = |n: usize| if config.benchmark_only { 0 } else { n };
    let sizes = SplitSizes {
        train: config.train_examples,
        val: evaluated(config.val_examples),
        test: evaluated(config.test_examples),
    };
    match &config.dataset {
        DatasetSpec::Synthetic => Ok(synthetic::generate(config.seed, sizes)),
        DatasetSpec::Path(path) => corpus::load_path(path, sizes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corpus_with_only_a_training_split_does_for_benchmark_only_runs() {
        let dir = tempfile::tempdir().unwrap();
        for ext in ["de", "en"] {
            std::fs::write(dir.path().join(format!("train.{ext}")), "a\nb\nc\n").unwrap();
        }
        let mut config = crate::config::tests::tiny_config();
        config.dataset = DatasetSpec::Path(dir.path().to_path_buf());
        let err = load_corpus(&config).unwrap_err();
        assert!(err.to_string().contains("no validation split"), "{err}");
        config.benchmark_only = true;
        let corpus = load_corpus(&config).unwrap();
        assert_eq!((corpus.train.len(), corpus.val.len(), corpus.test.len()), (3, 0, 0));
    }
}
