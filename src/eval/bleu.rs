//! BLEU exactly as sacreBLEU 2.x computes it with its defaults: 13a tokenisation, n-grams up to 4,
//! `exp` smoothing, brevity penalty against the closest reference length, score 0–100; corpus
//! BLEU (sacreBLEU's `corpus_bleu`) and sentence BLEU (`sentence_bleu`, effective order). Pure
//! functions; `tests/bleu_sacrebleu.rs` checks them against the Python package.

use regex::Regex;
use std::collections::HashMap;
use std::sync::LazyLock;

const MAX_ORDER: usize = 4;

/// Python's `str.isspace`: Unicode White_Space plus the information separators U+001C–U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()`.
fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// sacreBLEU's `13a` tokenizer (mteval-v13a): drop `<skipped>` and hyphenated line breaks,
/// unescape four HTML entities, then split off punctuation and symbols, periods and commas unless
/// they sit between digits, and dashes after digits.
pub(crate) fn tokenize_13a(line: &str) -> String {
    static RULES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"([\{-~\[-` -&\(-\+:-@/])", " $1 "),
            (r"([^0-9])([\.,])", "$1 $2 "),
            (r"([\.,])([^0-9])", " $1 $2"),
            (r"([0-9])(-)", "$1 $2 "),
        ]
        .into_iter()
        .map(|(re, rep)| (Regex::new(re).expect("valid regex"), rep))
        .collect()
    });
    let mut s = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut s = format!(" {s} ");
    for (re, rep) in RULES.iter() {
        s = re.replace_all(&s, *rep).into_owned();
    }
    py_split(&s).collect::<Vec<_>>().join(" ")
}

/// sacreBLEU's preprocessing of a segment: `tokenize(segment.rstrip())`.
fn preprocess(segment: &str) -> String {
    tokenize_13a(segment.trim_end_matches(is_py_space))
}

fn ngrams<'a>(tokens: &'a [&'a str], n: usize) -> HashMap<&'a [&'a str], usize> {
    let mut counts = HashMap::new();
    for w in tokens.windows(n) {
        *counts.entry(w).or_insert(0) += 1;
    }
    counts
}

/// Sufficient statistics: matches and totals per n-gram order, and the two lengths.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BleuStats {
    pub correct: [usize; MAX_ORDER],
    pub total: [usize; MAX_ORDER],
    pub sys_len: usize,
    pub ref_len: usize,
}

/// A BLEU score with what sacreBLEU reports beside it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bleu {
    pub score: f64,
    pub precisions: [f64; MAX_ORDER],
    pub brevity_penalty: f64,
    pub sys_len: usize,
    pub ref_len: usize,
}

impl BleuStats {
    /// Statistics of one hypothesis against its references.
    pub fn of(hyp: &str, refs: &[&str]) -> Self {
        let hyp_tok = preprocess(hyp);
        let hyp_words: Vec<&str> = hyp_tok.split(' ').filter(|w| !w.is_empty()).collect();
        let ref_toks: Vec<String> = refs.iter().map(|r| preprocess(r)).collect();
        let ref_words: Vec<Vec<&str>> =
            ref_toks.iter().map(|r| r.split(' ').filter(|w| !w.is_empty()).collect()).collect();
        let h = hyp_words.len();
        let mut stats = BleuStats { sys_len: h, ..Default::default() };
        // The closest reference length; ties go to the shorter reference.
        stats.ref_len =
            ref_words.iter().map(Vec::len).min_by_key(|&l| (l.abs_diff(h), l)).unwrap_or(0);
        for n in 1..=MAX_ORDER {
            let hyp_counts = ngrams(&hyp_words, n);
            let mut max_ref: HashMap<&[&str], usize> = HashMap::new();
            for r in &ref_words {
                for (g, c) in ngrams(r, n) {
                    let e = max_ref.entry(g).or_insert(0);
                    *e = (*e).max(c);
                }
            }
            stats.total[n - 1] = h.saturating_sub(n - 1);
            stats.correct[n - 1] =
                hyp_counts.iter().map(|(g, &c)| c.min(max_ref.get(g).copied().unwrap_or(0))).sum();
        }
        stats
    }

    pub fn add(&mut self, other: &BleuStats) {
        for n in 0..MAX_ORDER {
            self.correct[n] += other.correct[n];
            self.total[n] += other.total[n];
        }
        self.sys_len += other.sys_len;
        self.ref_len += other.ref_len;
    }

    /// sacreBLEU's `compute_bleu` with `exp` smoothing; `effective_order` averages only over the
    /// orders the hypothesis has n-grams of (sacreBLEU's sentence BLEU does).
    pub fn score(&self, effective_order: bool) -> Bleu {
        let bp = if self.sys_len < self.ref_len {
            if self.sys_len > 0 {
                (1.0 - self.ref_len as f64 / self.sys_len as f64).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        let mut b = Bleu {
            score: 0.0,
            precisions: [0.0; MAX_ORDER],
            brevity_penalty: bp,
            sys_len: self.sys_len,
            ref_len: self.ref_len,
        };
        // sacreBLEU stops early when not even one unigram matches (its issue #141).
        if self.correct[0] == 0 {
            return b;
        }
        let mut order = MAX_ORDER;
        let mut smooth = 1.0;
        for n in 0..MAX_ORDER {
            if self.total[n] == 0 {
                break;
            }
            if effective_order {
                order = n + 1;
            }
            b.precisions[n] = if self.correct[n] == 0 {
                smooth *= 2.0;
                100.0 / (smooth * self.total[n] as f64)
            } else {
                100.0 * self.correct[n] as f64 / self.total[n] as f64
            };
        }
        let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        let mean_log = b.precisions[..order].iter().map(|&p| log(p)).sum::<f64>() / order as f64;
        b.score = bp * mean_log.exp();
        b
    }
}

impl Bleu {
    /// sacreBLEU's verbose part: `83.3/40.0/25.0/8.3 (BP = 1.000 ratio = 1.000 hyp_len = 12 ref_len = 12)`.
    pub(crate) fn verbose(&self) -> String {
        let p: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        let ratio = if self.ref_len > 0 { self.sys_len as f64 / self.ref_len as f64 } else { 0.0 };
        format!(
            "{} (BP = {:.3} ratio = {ratio:.3} hyp_len = {} ref_len = {})",
            p.join("/"),
            self.brevity_penalty,
            self.sys_len,
            self.ref_len
        )
    }
}

/// The signature of our defaults, in sacreBLEU's format.
pub(crate) fn signature(nrefs: usize) -> String {
    format!(
        "nrefs:{nrefs}|case:mixed|eff:no|tok:13a|smooth:exp|version:dp-bench-{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Corpus BLEU of `hyps` against reference streams `refs` (`refs[k][i]` is the k-th reference of
/// hypothesis i), as `sacrebleu.corpus_bleu(hyps, refs)`.
pub fn corpus_bleu_multi(hyps: &[String], refs: &[Vec<String>]) -> Bleu {
    let mut stats = BleuStats::default();
    for (i, h) in hyps.iter().enumerate() {
        let r: Vec<&str> = refs.iter().map(|stream| stream[i].as_str()).collect();
        stats.add(&BleuStats::of(h, &r));
    }
    stats.score(false)
}

/// Corpus BLEU of hypotheses against one reference each.
pub fn corpus_bleu(hyps: &[String], refs: &[String]) -> Bleu {
    corpus_bleu_multi(hyps, std::slice::from_ref(&refs.to_vec()))
}

/// Sentence BLEU, as `sacrebleu.sentence_bleu(hyp, refs)` (effective order).
pub fn sentence_bleu(hyp: &str, refs: &[&str]) -> Bleu {
    BleuStats::of(hyp, refs).score(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_like_13a() {
        assert_eq!(tokenize_13a("Hello, world!"), "Hello , world !");
        assert_eq!(tokenize_13a("It costs 3,000.50 dollars."), "It costs 3,000.50 dollars .");
        assert_eq!(tokenize_13a("a &quot;b&quot; 1-2"), "a \" b \" 1 - 2");
    }

    #[test]
    fn perfect_and_disjoint() {
        let s = "the quick brown fox jumps over the lazy dog".to_string();
        assert!(
            (corpus_bleu(std::slice::from_ref(&s), std::slice::from_ref(&s)).score - 100.0).abs()
                < 1e-9
        );
        let zero = corpus_bleu(&["a b c d e".into()], &["v w x y z".into()]);
        assert_eq!(zero.score, 0.0);
        assert_eq!(corpus_bleu(&[String::new()], &[s]).score, 0.0);
    }

    #[test]
    fn hand_computed_with_brevity_penalty() {
        // hyp "the cat sat" vs ref "the cat sat down": p1 = 3/3, p2 = 2/2, p3 = 1/1, p4: no
        // 4-grams in the hypothesis (total 0) → the loop stops, p4 = 0, log → -huge → score ≈ 0.
        let b = corpus_bleu(&["the cat sat".into()], &["the cat sat down".into()]);
        assert_eq!(b.precisions[..3], [100.0, 100.0, 100.0]);
        assert!(b.score < 1e-6);
        // sacreBLEU: 'Hello, world! It costs 3,000.50 dollars.' against
        // 'Hello world, it costs 3,000.50 dollars!' = 21.93, 77.8/25.0/14.3/8.3.
        let b = corpus_bleu(
            &["Hello, world! It costs 3,000.50 dollars.".into()],
            &["Hello world, it costs 3,000.50 dollars!".into()],
        );
        assert!((b.score - 21.93).abs() < 0.005, "{b:?}");
        // Five tokens against six: every precision 100, BP = exp(1 - 6/5).
        let b = corpus_bleu(&["a b c d e".into()], &["a b c d e f".into()]);
        assert!((b.score - 100.0 * (1.0f64 - 6.0 / 5.0).exp()).abs() < 1e-9);
    }
}
