//! The byte-level BPE tokenizer (Hugging Face `tokenizers`), trained on the training pairs of both
//! languages, with the special tokens of WORKLOAD.md. Owns training, saving next to a fingerprint
//! of what it was trained on, and reuse; it knows nothing about examples or batches.

use super::corpus::Pair;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, NormalizerWrapper, TokenizerBuilder};

pub(crate) const EOS_DE: &str = "<eos_de>";
pub(crate) const EOS_EN: &str = "<eos_en>";
pub(crate) const PAD: &str = "<pad>";

const TOKENIZER_FILE: &str = "tokenizer.json";
const FINGERPRINT_FILE: &str = "tokenizer.meta.json";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer: {0}")]
    Library(String),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0} lacks the special token {1}")]
    MissingSpecial(String, &'static str),
}

fn lib_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Library(e.to_string())
}

/// What a saved tokenizer was trained on; a mismatch means it must be trained again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub vocab_cap: usize,
    pub pairs: usize,
    pub text_hash: String,
}

impl Fingerprint {
    pub fn of(pairs: &[Pair], vocab_cap: usize) -> Self {
        // FNV-1a over every sentence with separators: stable across runs and platforms.
        let mut h: u64 = 0xcbf29ce484222325;
        for p in pairs {
            for b in p.de.bytes().chain([0]).chain(p.en.bytes()).chain([1]) {
                h = (h ^ b as u64).wrapping_mul(0x100000001b3);
            }
        }
        Fingerprint { vocab_cap, pairs: pairs.len(), text_hash: format!("{h:016x}") }
    }
}

/// A trained tokenizer and the ids of its special tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub eos_de: i64,
    pub eos_en: i64,
    pub pad: i64,
}

impl Tokenizer {
    /// Trains byte-level BPE on the German and English sides of `pairs`.
    pub fn train(pairs: &[Pair], vocab_cap: usize) -> Result<Self, TokenizerError> {
        let specials = [EOS_DE, EOS_EN, PAD].map(|t| AddedToken::from(t, true)).to_vec();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_cap)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tk = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None::<NormalizerWrapper>)
            .with_pre_tokenizer(Some(ByteLevel::default()))
            .with_post_processor(Some(ByteLevel::default()))
            .with_decoder(Some(ByteLevel::default()))
            .build()
            .map_err(lib_err)?;
        let text = pairs.iter().flat_map(|p| [p.de.as_str(), p.en.as_str()]);
        tk.train(&mut trainer, text).map_err(lib_err)?;
        Self::from_inner(tokenizers::Tokenizer::from(tk), "trained tokenizer")
    }

    fn from_inner(inner: tokenizers::Tokenizer, what: &str) -> Result<Self, TokenizerError> {
        let id = |t: &'static str| {
            inner
                .token_to_id(t)
                .map(i64::from)
                .ok_or_else(|| TokenizerError::MissingSpecial(what.to_string(), t))
        };
        Ok(Tokenizer { eos_de: id(EOS_DE)?, eos_en: id(EOS_EN)?, pad: id(PAD)?, inner })
    }

    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(lib_err)?;
        Self::from_inner(inner, &path.display().to_string())
    }

    /// Writes the tokenizer atomically (temporary file, then rename).
    pub(crate) fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        let tmp = path.with_extension("json.tmp");
        self.inner.save(&tmp, false).map_err(lib_err)?;
        std::fs::rename(&tmp, path)
            .map_err(|source| TokenizerError::Io { path: path.into(), source })
    }

    /// Loads `dir/tokenizer.json` when its fingerprint matches `pairs`, else trains and saves one.
    /// Returns the tokenizer and whether it was trained now.
    pub(crate) fn load_or_train(
        dir: &Path,
        pairs: &[Pair],
        vocab_cap: usize,
    ) -> Result<(Self, bool), TokenizerError> {
        let fingerprint = Fingerprint::of(pairs, vocab_cap);
        let (tok_path, meta_path) = (dir.join(TOKENIZER_FILE), dir.join(FINGERPRINT_FILE));
        let saved: Option<Fingerprint> =
            std::fs::read(&meta_path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if saved.as_ref() == Some(&fingerprint) && tok_path.is_file() {
            return Ok((Self::load(&tok_path)?, false));
        }
        let tok = Self::train(pairs, vocab_cap)?;
        tok.save(&tok_path)?;
        let json = serde_json::to_vec_pretty(&fingerprint).expect("fingerprint serialises");
        crate::metrics::write_atomic(&meta_path, &json)
            .map_err(|source| TokenizerError::Io { path: meta_path, source })?;
        Ok((tok, true))
    }

    /// Default path of the tokenizer in a run directory.
    pub(crate) fn path_in(dir: &Path) -> std::path::PathBuf {
        dir.join(TOKENIZER_FILE)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of a sentence, without special tokens.
    pub(crate) fn encode(&self, text: &str) -> Vec<i64> {
        let enc = self.inner.encode(text, false).expect("byte-level BPE encodes any text");
        enc.get_ids().iter().map(|&i| i64::from(i)).collect()
    }

    /// Text of token ids; special tokens are dropped.
    pub(crate) fn decode(&self, ids: &[i64]) -> String {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let text = self.inner.decode(&ids, true).expect("ids come from this tokenizer");
        text.trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{synthetic, SplitSizes};

    fn pairs() -> Vec<Pair> {
        synthetic::generate(1, SplitSizes { train: 300, val: 0, test: 0 }).train
    }

    #[test]
    fn round_trip_and_specials() {
        let tok = Tokenizer::train(&pairs(), 8000).unwrap();
        for text in ["Der große Hund sieht die Katze.", "Zwölf Äpfel, naïve café — 42!", "über"]
        {
            assert_eq!(tok.decode(&tok.encode(text)), text);
        }
        let ids = [tok.encode("ein Hund"), vec![tok.eos_de], tok.encode("a dog"), vec![tok.eos_en]]
            .concat();
        assert_eq!(tok.decode(&ids), "ein Hund a dog");
        let specials = [tok.eos_de, tok.eos_en, tok.pad];
        assert!(specials.iter().all(|&s| s >= 0 && (s as usize) < tok.vocab_size()));
        assert_eq!(specials.iter().collect::<std::collections::HashSet<_>>().len(), 3);
        // BPE merges make frequent words single tokens.
        assert!(tok.encode("Hund").len() <= 2);
        assert!(tok.vocab_size() <= 8000);
    }

    #[test]
    fn reused_when_fingerprint_matches() {
        let dir = tempfile::tempdir().unwrap();
        let p = pairs();
        let (a, trained) = Tokenizer::load_or_train(dir.path(), &p, 1000).unwrap();
        assert!(trained);
        let (b, trained) = Tokenizer::load_or_train(dir.path(), &p, 1000).unwrap();
        assert!(!trained);
        assert_eq!(a.encode("Die Katze schläft."), b.encode("Die Katze schläft."));
        let (_, trained) = Tokenizer::load_or_train(dir.path(), &p[..100], 1000).unwrap();
        assert!(trained, "different training text must retrain");
    }
}
