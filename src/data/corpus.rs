//! Parallel German→English text: the three splits and their loaders. Owns reading corpora from
//! disk (directories of parallel files, optionally gzipped, and JSON lines) and checking them;
//! the built-in corpus lives in `synthetic`, tokenisation in `tokenizer`.

use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// One translation pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub de: String,
    pub en: String,
}

impl Pair {
    pub fn new(de: impl Into<String>, en: impl Into<String>) -> Self {
        Pair { de: de.into(), en: en.into() }
    }
}

/// The first `train_examples`, `val_examples` and `test_examples` pairs of each split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    pub train: Vec<Pair>,
    pub val: Vec<Pair>,
    pub test: Vec<Pair>,
}

/// How many pairs to take from each split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSizes {
    pub train: usize,
    pub val: usize,
    pub test: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("dataset {0} does not exist: pass a directory of train/val/test .de/.en files, a .jsonl file, or `synthetic`")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: invalid UTF-8: fix the file's encoding (UTF-8 expected)")]
    Utf8 { path: PathBuf, line: usize },
    #[error("{de} has {de_lines} lines but {en} has {en_lines}: parallel files must have equal line counts")]
    LineCount { de: PathBuf, de_lines: usize, en: PathBuf, en_lines: usize },
    #[error("no {split} split in {dir}: expected {expected}")]
    NoSplit { split: &'static str, dir: PathBuf, expected: String },
    #[error("{path}:{line}: malformed JSON line ({reason}): expected {{\"translation\": {{\"de\": …, \"en\": …}}}}")]
    Json { path: PathBuf, line: usize, reason: String },
    #[error("{path} holds no pairs")]
    Empty { path: PathBuf },
    #[error("{path} has {have} pairs, fewer than the {need} asked for ({what})")]
    TooFew { path: PathBuf, have: usize, need: usize, what: &'static str },
}

/// File stems accepted for each split (Multi30k, fairseq IWSLT14 and Hugging Face names).
const TRAIN_NAMES: &[&str] = &["train"];
const VAL_NAMES: &[&str] = &["val", "valid", "validation", "dev"];
const TEST_NAMES: &[&str] = &["test", "test_2016_flickr", "test2016"];

/// Loads a corpus from a directory of parallel files or a JSON-lines file.
pub(crate) fn load_path(path: &Path, sizes: SplitSizes) -> Result<Corpus, CorpusError> {
    if !path.exists() {
        return Err(CorpusError::Missing(path.to_path_buf()));
    }
    if path.is_file() {
        return load_single_jsonl(path, sizes);
    }
    Ok(Corpus {
        train: load_split(path, "train", TRAIN_NAMES, sizes.train)?,
        val: load_split(path, "validation", VAL_NAMES, sizes.val)?,
        test: load_split(path, "test", TEST_NAMES, sizes.test)?,
    })
}

/// The first `limit` pairs of one split of a directory: `{stem}.de/.en`, their `.gz` forms, or
/// `{stem}.jsonl`. A split of which nothing is asked (`limit` 0) may be missing.
fn load_split(
    dir: &Path,
    split: &'static str,
    stems: &[&str],
    limit: usize,
) -> Result<Vec<Pair>, CorpusError> {
    for stem in stems {
        for ext in ["", ".gz"] {
            let de = dir.join(format!("{stem}.de{ext}"));
            let en = dir.join(format!("{stem}.en{ext}"));
            if de.is_file() && en.is_file() {
                return read_parallel(&de, &en, limit);
            }
        }
        let jsonl = dir.join(format!("{stem}.jsonl"));
        if jsonl.is_file() {
            let mut pairs = read_jsonl(&jsonl)?;
            pairs.truncate(limit);
            return Ok(pairs);
        }
    }
    if limit == 0 {
        return Ok(Vec::new());
    }
    let expected = stems
        .iter()
        .map(|s| format!("{s}.de + {s}.en (or .gz, or {s}.jsonl)"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(CorpusError::NoSplit { split, dir: dir.to_path_buf(), expected })
}

/// Reads two line-aligned files completely (to check their line counts) and keeps the first
/// `limit` pairs.
fn read_parallel(de: &Path, en: &Path, limit: usize) -> Result<Vec<Pair>, CorpusError> {
    let de_lines = read_lines(de)?;
    let en_lines = read_lines(en)?;
    if de_lines.len() != en_lines.len() {
        return Err(CorpusError::LineCount {
            de: de.to_path_buf(),
            de_lines: de_lines.len(),
            en: en.to_path_buf(),
            en_lines: en_lines.len(),
        });
    }
    if de_lines.is_empty() {
        return Err(CorpusError::Empty { path: de.to_path_buf() });
    }
    Ok(de_lines.into_iter().zip(en_lines).take(limit).map(|(de, en)| Pair { de, en }).collect())
}

fn open(path: &Path) -> Result<Box<dyn BufRead>, CorpusError> {
    let file = std::fs::File::open(path)
        .map_err(|source| CorpusError::Io { path: path.to_path_buf(), source })?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::new(reader)))
}

/// All lines of a text file (gzip when named `.gz`), without line endings.
pub fn read_lines(path: &Path) -> Result<Vec<String>, CorpusError> {
    let mut reader = open(path)?;
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| CorpusError::Io { path: path.to_path_buf(), source })?;
        if n == 0 {
            break;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let line = String::from_utf8(std::mem::take(&mut buf))
            .map_err(|_| CorpusError::Utf8 { path: path.to_path_buf(), line: lines.len() + 1 })?;
        lines.push(line);
    }
    Ok(lines)
}

#[derive(Deserialize)]
struct JsonRecord {
    translation: JsonPair,
}

#[derive(Deserialize)]
struct JsonPair {
    de: String,
    en: String,
}

/// Every record of a JSON-lines file; blank lines are skipped.
fn read_jsonl(path: &Path) -> Result<Vec<Pair>, CorpusError> {
    let lines = read_lines(path)?;
    let mut pairs = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: JsonRecord = serde_json::from_str(line).map_err(|e| CorpusError::Json {
            path: path.to_path_buf(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        pairs.push(Pair { de: record.translation.de, en: record.translation.en });
    }
    if pairs.is_empty() {
        return Err(CorpusError::Empty { path: path.to_path_buf() });
    }
    Ok(pairs)
}

/// A single JSON-lines file is cut into consecutive, disjoint train, validation and test parts.
fn load_single_jsonl(path: &Path, sizes: SplitSizes) -> Result<Corpus, CorpusError> {
    let pairs = read_jsonl(path)?;
    let need = sizes.train + sizes.val + sizes.test;
    if pairs.len() < need {
        return Err(CorpusError::TooFew {
            path: path.to_path_buf(),
            have: pairs.len(),
            need,
            what: "train + val + test examples, taken consecutively from one file",
        });
    }
    let mut it = pairs.into_iter();
    Ok(Corpus {
        train: it.by_ref().take(sizes.train).collect(),
        val: it.by_ref().take(sizes.val).collect(),
        test: it.take(sizes.test).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    fn write_gz(path: &Path, text: &str) {
        let mut enc = GzEncoder::new(std::fs::File::create(path).unwrap(), Default::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
    }

    const SIZES: SplitSizes = SplitSizes { train: 1000, val: 1000, test: 1000 };

    #[test]
    fn reads_multi30k_from_shared() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/multi30k");
        let c = load_path(&dir, SplitSizes { train: 5000, val: 1000, test: 100 }).unwrap();
        assert_eq!((c.train.len(), c.val.len(), c.test.len()), (5000, 1000, 100));
        assert!(c.train[0].de.starts_with("Zwei junge weiße Männer"), "{:?}", c.train[0]);
        assert!(c.train[0].en.starts_with("Two young, White males"), "{:?}", c.train[0]);
    }

    #[test]
    fn reads_plain_and_gz_with_iwslt_names() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("train.de"), "ein Hund\nzwei Katzen\n");
        write(&dir.path().join("train.en"), "a dog\r\ntwo cats\r\n");
        write_gz(&dir.path().join("valid.de.gz"), "der Mann\n");
        write_gz(&dir.path().join("valid.en.gz"), "the man\n");
        write(&dir.path().join("test.de"), "die Frau");
        write(&dir.path().join("test.en"), "the woman");
        let c = load_path(dir.path(), SIZES).unwrap();
        assert_eq!(
            c.train,
            vec![Pair::new("ein Hund", "a dog"), Pair::new("zwei Katzen", "two cats")]
        );
        assert_eq!(c.val, vec![Pair::new("der Mann", "the man")]);
        assert_eq!(c.test, vec![Pair::new("die Frau", "the woman")]);
    }

    #[test]
    fn mismatched_line_counts_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("train.de"), "a\nb\nc\n");
        write(&dir.path().join("train.en"), "a\nb\n");
        let err = load_path(dir.path(), SIZES).unwrap_err();
        assert!(matches!(err, CorpusError::LineCount { de_lines: 3, en_lines: 2, .. }), "{err}");
    }

    #[test]
    fn invalid_utf8_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.de"), b"gut\n\xff\xfe\n").unwrap();
        write(&dir.path().join("train.en"), "good\nbad\n");
        let err = load_path(dir.path(), SIZES).unwrap_err();
        assert!(matches!(err, CorpusError::Utf8 { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("train.de:2"), "{err}");
    }

    #[test]
    fn truncated_gz_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.de.gz");
        write_gz(&p, &"ein langer Satz\n".repeat(200));
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(read_lines(&p), Err(CorpusError::Io { .. })));
    }

    #[test]
    fn json_lines_directory_and_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |de: &str, en: &str| {
            format!("{{\"translation\": {{\"de\": \"{de}\", \"en\": \"{en}\"}}}}\n")
        };
        let body = [rec("eins", "one"), rec("zwei", "two"), rec("drei", "three")].concat();
        for split in ["train", "validation", "test"] {
            write(&dir.path().join(format!("{split}.jsonl")), &body);
        }
        let c = load_path(dir.path(), SplitSizes { train: 2, val: 1, test: 5 }).unwrap();
        assert_eq!(c.train, vec![Pair::new("eins", "one"), Pair::new("zwei", "two")]);
        assert_eq!(c.val.len(), 1);
        assert_eq!(c.test.len(), 3);

        let single = dir.path().join("all.jsonl");
        write(&single, &body);
        let c = load_path(&single, SplitSizes { train: 1, val: 1, test: 1 }).unwrap();
        assert_eq!(c.test, vec![Pair::new("drei", "three")]);
        assert!(load_path(&single, SplitSizes { train: 3, val: 1, test: 1 }).is_err());
    }

    #[test]
    fn malformed_json_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data.jsonl");
        write(&p, "{\"translation\": {\"de\": \"a\", \"en\": \"b\"}}\n{\"de\": \"x\"}\n");
        let err = load_path(&p, SplitSizes { train: 1, val: 0, test: 0 }).unwrap_err();
        assert!(matches!(err, CorpusError::Json { line: 2, .. }), "{err}");
    }

    #[test]
    fn missing_path_and_missing_split() {
        assert!(matches!(
            load_path(Path::new("/no/such/corpus"), SIZES),
            Err(CorpusError::Missing(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("train.de"), "a\n");
        write(&dir.path().join("train.en"), "a\n");
        let err = load_path(dir.path(), SIZES).unwrap_err();
        assert!(matches!(err, CorpusError::NoSplit { split: "validation", .. }), "{err}");
        // A split of which nothing is asked may be missing; the training split may not.
        let train_only = load_path(dir.path(), SplitSizes { train: 5, val: 0, test: 0 }).unwrap();
        assert_eq!(
            (train_only.train.len(), train_only.val.len(), train_only.test.len()),
            (1, 0, 0)
        );
        let empty = tempfile::tempdir().unwrap();
        let err = load_path(empty.path(), SplitSizes { train: 1, val: 0, test: 0 }).unwrap_err();
        assert!(matches!(err, CorpusError::NoSplit { split: "train", .. }), "{err}");
    }
}
