//! BLEU against the Python `sacrebleu` package installed in `.venv` by scripts/setup.sh: many
//! generated hypothesis/reference sets (empty lines, punctuation, HTML entities, Unicode, numbers,
//! very short and very long sentences, perfect and zero matches, several references) and the real
//! Multi30k test references against perturbed copies of themselves. Corpus and sentence scores
//! must agree to 1e-6. A missing sacrebleu fails the test: it does not skip.

mod common;

use dp_bench::data::corpus::read_lines;
use dp_bench::eval::bleu::{corpus_bleu_multi, sentence_bleu};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Clone)]
struct Case {
    hyps: Vec<String>,
    refs: Vec<Vec<String>>,
}

const SCRIPT: &str = r#"
import json, sys, sacrebleu
out = []
for case in json.load(sys.stdin):
    refs = case["refs"]
    corpus = sacrebleu.corpus_bleu(case["hyps"], refs).score
    sents = [sacrebleu.sentence_bleu(h, [r[i] for r in refs]).score for i, h in enumerate(case["hyps"])]
    out.append({"corpus": corpus, "sentences": sents})
json.dump(out, sys.stdout)
"#;

/// Scores of every case according to sacreBLEU.
fn sacrebleu(cases: &[Case]) -> Vec<Value> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh", python.display()));
    let input: Vec<Value> = cases.iter().map(|c| json!({"hyps": c.hyps, "refs": c.refs})).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sacrebleu failed (is it installed in .venv? run scripts/setup.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn check(cases: &[Case]) {
    let expected = sacrebleu(cases);
    assert_eq!(expected.len(), cases.len());
    for (k, (case, exp)) in cases.iter().zip(&expected).enumerate() {
        let ours = corpus_bleu_multi(&case.hyps, &case.refs).score;
        let theirs = exp["corpus"].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() <= 1e-6,
            "case {k}: corpus BLEU {ours} vs sacrebleu {theirs}\nhyps {:?}\nrefs {:?}",
            case.hyps,
            case.refs
        );
        for (i, h) in case.hyps.iter().enumerate() {
            let refs: Vec<&str> = case.refs.iter().map(|r| r[i].as_str()).collect();
            let ours = sentence_bleu(h, &refs).score;
            let theirs = exp["sentences"][i].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() <= 1e-6,
                "case {k} sentence {i}: {ours} vs {theirs}: {h:?} / {refs:?}"
            );
        }
    }
}

const WORDS: &[&str] = &[
    "the", "cat", "dog", "a", "man", "woman", "runs", "sat", "on", "mat", "is", "café", "naïve",
    "Größe", "Straße", "東京", "😀", "über", "ÉCOLE", "x", "it's", "don't", "e-mail", "U.S.A.",
];
const PUNCT: &[&str] = &[
    ",",
    ".",
    "!",
    "?",
    ";",
    ":",
    "\"",
    "'",
    "(",
    ")",
    "-",
    "--",
    "—",
    "&quot;",
    "&amp;",
    "&lt;",
    "&gt;",
    "&apos;",
    "<skipped>",
    "/",
    "$",
    "%",
    "@",
    "#",
    "{",
    "}",
    "[",
    "]",
    "`",
    "~",
    "^",
    "_",
    "|",
    "\\",
    "…",
    "«",
    "»",
    "¿",
];
const NUMBERS: &[&str] =
    &["3,000.50", "1-2", "12.5", "1,5", "2020-10-01", "3.", ".5", "-7", "10-", "42", "0.0.0"];
const SEPARATORS: &[&str] =
    &[" ", " ", " ", " ", "", "  ", "\t", "\u{a0}", "\u{2003}", "\u{1c}", "-\n", "\n"];

fn sentence(rng: &mut ChaCha8Rng, len: usize) -> String {
    let mut s = String::new();
    for i in 0..len {
        if i > 0 {
            s += SEPARATORS[rng.random_range(0..SEPARATORS.len())];
        }
        let pool = match rng.random_range(0..10) {
            0..=5 => WORDS,
            6..=8 => PUNCT,
            _ => NUMBERS,
        };
        s += pool[rng.random_range(0..pool.len())];
    }
    if rng.random_bool(0.2) {
        s += [" ", "\t", "  ", "\u{a0}"][rng.random_range(0..4)];
    }
    s
}

/// Drops, swaps and replaces some words of a sentence.
fn perturb(rng: &mut ChaCha8Rng, s: &str) -> String {
    let mut words: Vec<String> = s.split(' ').map(String::from).collect();
    for _ in 0..rng.random_range(0..4) {
        if words.len() < 2 {
            break;
        }
        let n = words.len();
        let i = rng.random_range(0..n);
        match rng.random_range(0..3) {
            0 => {
                words.remove(i);
            }
            1 => words.swap(i, (i + 1) % n),
            _ => words[i] = WORDS[rng.random_range(0..WORDS.len())].to_string(),
        }
    }
    words.join(" ")
}

fn length(rng: &mut ChaCha8Rng) -> usize {
    match rng.random_range(0..10) {
        0 => 0,
        1 => rng.random_range(1..4),
        2 => rng.random_range(80..200),
        _ => rng.random_range(4..30),
    }
}

#[test]
fn generated_cases_agree_with_sacrebleu() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut cases = Vec::new();
    for k in 0..80 {
        let n = rng.random_range(1..15);
        let nrefs = if k % 5 == 0 { rng.random_range(2..4) } else { 1 };
        let refs: Vec<Vec<String>> = (0..nrefs)
            .map(|_| {
                (0..n)
                    .map(|_| {
                        let l = length(&mut rng);
                        sentence(&mut rng, l)
                    })
                    .collect()
            })
            .collect();
        let hyps: Vec<String> = (0..n)
            .map(|i| match k % 4 {
                0 => refs[0][i].clone(),             // perfect
                1 => perturb(&mut rng, &refs[0][i]), // close
                2 => {
                    let l = length(&mut rng);
                    sentence(&mut rng, l)
                } // unrelated
                _ => "zzz qqq ###".repeat(rng.random_range(0..3)), // no match at all
            })
            .collect();
        cases.push(Case { hyps, refs });
    }
    check(&cases);
}

#[test]
fn multi30k_references_against_perturbed_copies() {
    let refs = read_lines(&common::multi30k().join("test_2016_flickr.en.gz")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let hyps: Vec<String> = refs.iter().map(|r| perturb(&mut rng, r)).collect();
    let lowered: Vec<String> = refs.iter().map(|r| r.to_lowercase()).collect();
    let unpunctuated: Vec<String> =
        refs.iter().map(|r| r.trim_end_matches('.').to_string()).collect();
    check(&[
        Case { hyps: hyps.clone(), refs: vec![refs.clone()] },
        Case { hyps: lowered, refs: vec![refs.clone()] },
        Case { hyps: unpunctuated, refs: vec![refs.clone(), hyps] },
        Case { hyps: refs.clone(), refs: vec![refs] },
    ]);
}

/// The score `dp-bench bleu` prints, at sacreBLEU's default width and at `--width 3`, is the
/// one the `sacrebleu` command prints, in text and in JSON.
#[test]
fn the_bleu_command_prints_the_score_at_sacrebleus_width() {
    let dir = tempfile::tempdir().unwrap();
    let (hyp, reference) = (dir.path().join("hyp.txt"), dir.path().join("ref.txt"));
    std::fs::write(&hyp, "the cat sat on the mat\na man rides a red bike .\ntwo dogs play\n")
        .unwrap();
    std::fs::write(
        &reference,
        "the cat sat on a mat\na man is riding a red bike .\ntwo dogs play\n",
    )
    .unwrap();
    let score_of = |out: std::process::Output| -> String {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let after = text.split(" = ").nth(1).unwrap_or_else(|| panic!("no score in {text:?}"));
        after.split_whitespace().next().unwrap().to_string()
    };
    let sacrebleu_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/sacrebleu");
    for width in [None, Some("3")] {
        let mut ours = Command::new(env!("CARGO_BIN_EXE_dp-bench"));
        ours.arg("bleu").arg("--hyp").arg(&hyp).arg("--ref").arg(&reference);
        let mut theirs = Command::new(&sacrebleu_bin);
        theirs.arg(&reference).arg("-i").arg(&hyp);
        if let Some(w) = width {
            ours.args(["--width", w]);
            theirs.args(["--width", w]);
        }
        let ours_text = score_of(ours.output().unwrap());
        let theirs_text = score_of(theirs.arg("-f").arg("text").output().unwrap());
        assert_eq!(ours_text, theirs_text, "width {width:?}");
        assert_eq!(theirs_text.split('.').nth(1).map(str::len), Some(width.map_or(1, |_| 3)));
        let json = |c: &mut Command| -> Value {
            let out = c.output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let (a, b) = (json(ours.arg("--json")), json(theirs.args(["-f", "json"])));
        assert_eq!(a["score"], b["score"], "width {width:?}");
    }
}
