//! Corpus BLEU following sacreBLEU's defaults: 13a tokenisation, n-grams up to 4, `exp`
//! smoothing, brevity penalty against the closest reference length, score 0–100. Pure functions.

use regex::Regex;
use std::collections::HashMap;
use std::sync::LazyLock;

const MAX_ORDER: usize = 4;

/// sacreBLEU's `13a` tokenizer (mteval-v13a): unescape a few HTML entities, then split off
/// punctuation, and periods and commas unless they sit between digits, and dashes after digits.
pub fn tokenize_13a(line: &str) -> String {
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
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ngrams(tokens: &[&str], n: usize) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w.iter().map(|s| s.to_string()).collect()).or_insert(0) += 1;
        }
    }
    counts
}

/// Sufficient statistics of a corpus: matches and totals per order, and the two lengths.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BleuStats {
    pub correct: [usize; MAX_ORDER],
    pub total: [usize; MAX_ORDER],
    pub sys_len: usize,
    pub ref_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bleu {
    pub score: f64,
    pub precisions: [f64; MAX_ORDER],
    pub brevity_penalty: f64,
    pub sys_len: usize,
    pub ref_len: usize,
}

impl BleuStats {
    /// Adds one hypothesis with its references.
    pub fn add(&mut self, hyp: &str, refs: &[&str]) {
        let hyp_tok = tokenize_13a(hyp);
        let hyp_words: Vec<&str> = hyp_tok.split_whitespace().collect();
        let ref_toks: Vec<String> = refs.iter().map(|r| tokenize_13a(r)).collect();
        let ref_words: Vec<Vec<&str>> =
            ref_toks.iter().map(|r| r.split_whitespace().collect()).collect();
        // Closest reference length; ties go to the shorter one.
        let h = hyp_words.len();
        self.ref_len +=
            ref_words.iter().map(|r| r.len()).min_by_key(|&l| (l.abs_diff(h), l)).unwrap_or(0);
        self.sys_len += h;
        for n in 1..=MAX_ORDER {
            let hyp_counts = ngrams(&hyp_words, n);
            let mut max_ref: HashMap<Vec<String>, usize> = HashMap::new();
            for r in &ref_words {
                for (g, c) in ngrams(r, n) {
                    let e = max_ref.entry(g).or_insert(0);
                    *e = (*e).max(c);
                }
            }
            self.total[n - 1] += h.saturating_sub(n - 1);
            self.correct[n - 1] += hyp_counts
                .iter()
                .map(|(g, &c)| c.min(max_ref.get(g).copied().unwrap_or(0)))
                .sum::<usize>();
        }
    }

    pub fn score(&self) -> Bleu {
        let mut precisions = [0.0; MAX_ORDER];
        let bp = if self.sys_len == 0 {
            0.0
        } else if self.sys_len < self.ref_len {
            (1.0 - self.ref_len as f64 / self.sys_len as f64).exp()
        } else {
            1.0
        };
        // sacreBLEU stops early when not even one unigram matches (its issue #141).
        if self.sys_len == 0 || self.correct[0] == 0 {
            return Bleu {
                score: 0.0,
                precisions,
                brevity_penalty: bp,
                sys_len: self.sys_len,
                ref_len: self.ref_len,
            };
        }
        let mut smooth = 1.0;
        for (p, (&correct, &total)) in
            precisions.iter_mut().zip(self.correct.iter().zip(&self.total))
        {
            if total == 0 {
                break;
            }
            *p = if correct == 0 {
                smooth *= 2.0;
                100.0 / (smooth * total as f64)
            } else {
                100.0 * correct as f64 / total as f64
            };
        }
        let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        let mean_log = precisions.iter().map(|&p| log(p)).sum::<f64>() / MAX_ORDER as f64;
        Bleu {
            score: bp * mean_log.exp(),
            precisions,
            brevity_penalty: bp,
            sys_len: self.sys_len,
            ref_len: self.ref_len,
        }
    }
}

/// Corpus BLEU of hypotheses against one reference each.
pub fn corpus_bleu(hyps: &[String], refs: &[String]) -> Bleu {
    let mut stats = BleuStats::default();
    for (h, r) in hyps.iter().zip(refs) {
        stats.add(h, &[r.as_str()]);
    }
    stats.score()
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
