//! The built-in German→English corpus: sentence pairs generated from a small grammar, byte-identical
//! for a seed, with what makes translation more than word substitution: gender and case on
//! articles and adjectives, plural agreement, verb-second order after a fronted phrase, verb-final
//! subordinate clauses, modal verbs with the infinitive at the end, and "nicht" against English
//! do-support. It owns only text generation; splitting into examples is `batching`'s job.

use super::corpus::{Corpus, Pair, SplitSizes};
use super::lexicon::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

/// A phrase in both languages.
#[derive(Default, Clone)]
struct Both {
    de: Vec<String>,
    en: Vec<String>,
}

impl Both {
    fn push(&mut self, de: &str, en: &str) {
        self.de.push(de.to_string());
        self.en.push(en.to_string());
    }
    fn extend(&mut self, other: &Both) {
        self.de.extend(other.de.iter().cloned());
        self.en.extend(other.en.iter().cloned());
    }
}

/// A clause before word order is decided: conjugated verb, its infinitive (German, English).
struct Clause {
    subject: NounPhrase,
    verb: Both,
    infinitive: (String, String),
    object: Both,
    pp: Both,
}

struct NounPhrase {
    words: Both,
    plural: bool,
}

/// Definite article and its adjective ending (weak declension), by case and gender.
fn definite(case: Case, g: Gender, plural: bool) -> (&'static str, &'static str) {
    if plural {
        return (if case == Case::Dat { "den" } else { "die" }, "en");
    }
    match (case, g) {
        (Case::Nom, Gender::M) => ("der", "e"),
        (Case::Acc, Gender::M) => ("den", "en"),
        (Case::Dat, Gender::M | Gender::N) => ("dem", "en"),
        (Case::Dat, Gender::F) => ("der", "en"),
        (_, Gender::F) => ("die", "e"),
        (_, Gender::N) => ("das", "e"),
    }
}

/// Indefinite article and its adjective ending (mixed declension).
fn indefinite(case: Case, g: Gender) -> (&'static str, &'static str) {
    match (case, g) {
        (Case::Nom, Gender::M) => ("ein", "er"),
        (Case::Acc, Gender::M) => ("einen", "en"),
        (Case::Dat, Gender::M | Gender::N) => ("einem", "en"),
        (Case::Dat, Gender::F) => ("einer", "en"),
        (_, Gender::F) => ("eine", "e"),
        (_, Gender::N) => ("ein", "es"),
    }
}

/// Dative plural adds -n unless the plural already ends in -n or -s (Männern, Katzen, Autos).
fn dative_plural(word: &str) -> String {
    if word.ends_with('n') || word.ends_with('s') {
        word.to_string()
    } else {
        format!("{word}n")
    }
}

fn a_or_an(next: &str) -> &'static str {
    if next.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

struct Generator {
    lex: Lexicon,
    rng: ChaCha8Rng,
}

impl Generator {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn noun_phrase(&mut self, case: Case) -> NounPhrase {
        let noun = self.lex.nouns[self.rng.random_range(0..self.lex.nouns.len())];
        let adjective = if self.chance(0.45) {
            Some(self.lex.adjectives[self.rng.random_range(0..self.lex.adjectives.len())])
        } else {
            None
        };
        let kind = self.rng.random_range(0..4);
        let plural = kind >= 2;
        let de_noun = match (plural, case) {
            (false, _) => noun.de.to_string(),
            (true, Case::Dat) => dative_plural(noun.de_pl),
            (true, _) => noun.de_pl.to_string(),
        };
        let en_noun = if plural { noun.en_pl } else { noun.en };
        let (de_det, ending, en_det) = match kind {
            0 => {
                let (d, e) = definite(case, noun.gender, false);
                (d.to_string(), e, "the".to_string())
            }
            1 => {
                let (d, e) = indefinite(case, noun.gender);
                let next = adjective.map_or(en_noun, |a| a.1);
                (d.to_string(), e, a_or_an(next).to_string())
            }
            2 => {
                let (d, e) = definite(case, noun.gender, true);
                (d.to_string(), e, "the".to_string())
            }
            _ => {
                // Number + plural without article: strong declension.
                let (de, en) = *self.pick(NUMBERS);
                (de.to_string(), if case == Case::Dat { "en" } else { "e" }, en.to_string())
            }
        };
        let mut words = Both::default();
        words.push(&de_det, &en_det);
        if let Some((stem, en)) = adjective {
            // Stems ending in -e take only the consonant of the ending (leise → leisen).
            let de_adj = match stem.strip_suffix('e') {
                Some(s) => format!("{s}e{}", &ending[1..]),
                None => format!("{stem}{ending}"),
            };
            words.push(&de_adj, en);
        }
        words.push(&de_noun, en_noun);
        NounPhrase { words, plural }
    }

    /// A dative prepositional phrase, with German contractions (in dem → im).
    fn prepositional_phrase(&mut self) -> Both {
        let (de_prep, en_prep, contraction) = *self.pick(PREPOSITIONS);
        let np = self.noun_phrase(Case::Dat);
        let mut pp = Both::default();
        if !contraction.is_empty() && np.words.de[0] == "dem" {
            pp.de.push(contraction.to_string());
            pp.de.extend(np.words.de[1..].iter().cloned());
        } else {
            pp.de.push(de_prep.to_string());
            pp.de.extend(np.words.de.iter().cloned());
        }
        pp.en.push(en_prep.to_string());
        pp.en.extend(np.words.en.iter().cloned());
        pp
    }

    /// The parts of a clause, in a neutral order; `main_clause`/`sub_clause` place the verb.
    fn clause_parts(&mut self) -> Clause {
        let subject = self.noun_phrase(Case::Nom);
        let transitive = self.chance(0.65);
        let verb = if transitive {
            self.lex.transitive[self.rng.random_range(0..self.lex.transitive.len())]
        } else {
            self.lex.intransitive[self.rng.random_range(0..self.lex.intransitive.len())]
        };
        let mut v = Both::default();
        if subject.plural {
            v.push(verb.de_pl, verb.en_base);
        } else {
            v.push(verb.de_sg, verb.en_sg);
        }
        let infinitive = (verb.de_pl.to_string(), verb.en_base.to_string());
        let object = if transitive { self.noun_phrase(Case::Acc).words } else { Both::default() };
        let pp = if self.chance(0.45) { self.prepositional_phrase() } else { Both::default() };
        Clause { subject, verb: v, infinitive, object, pp }
    }

    /// A main clause, optionally opened by an adverb (then German puts the verb second) or with a
    /// modal verb (then the German infinitive goes to the end).
    fn main_clause(&mut self, allow_front: bool) -> Both {
        let Clause { subject, verb, infinitive, object, pp } = self.clause_parts();
        let mut out = Both::default();
        let style = self.rng.random_range(0..10);
        if allow_front && style < 3 {
            // Heute sieht der Hund die Katze. / Today the dog sees the cat.
            let (de, en) = *self.pick(ADVERBS);
            out.de.push(de.to_string());
            out.de.extend(verb.de.iter().cloned());
            out.de.extend(subject.words.de.iter().cloned());
            out.de.extend(object.de.iter().cloned());
            out.de.extend(pp.de.iter().cloned());
            out.en.push(en.to_string());
            out.en.extend(subject.words.en.iter().cloned());
            out.en.extend(verb.en.iter().cloned());
            out.en.extend(object.en.iter().cloned());
            out.en.extend(pp.en.iter().cloned());
        } else if style < 5 {
            // Der Hund will die Katze sehen. / The dog wants to see the cat.
            let modal = self.lex.modals[self.rng.random_range(0..self.lex.modals.len())];
            let (de_modal, en_modal) = if subject.plural {
                (modal.de_pl, modal.en_base)
            } else {
                (modal.de_sg, modal.en_sg)
            };
            out.extend(&subject.words);
            out.de.push(de_modal.to_string());
            out.de.extend(object.de.iter().cloned());
            out.de.extend(pp.de.iter().cloned());
            out.de.push(infinitive.0);
            out.en.push(en_modal.to_string());
            out.en.push(infinitive.1);
            out.en.extend(object.en.iter().cloned());
            out.en.extend(pp.en.iter().cloned());
        } else if style < 6 && pp.de.is_empty() {
            // Der Hund sieht die Katze nicht. / The dog does not see the cat.
            out.extend(&subject.words);
            out.de.extend(verb.de.iter().cloned());
            out.de.extend(object.de.iter().cloned());
            out.de.push("nicht".into());
            out.en.push(if subject.plural { "do not" } else { "does not" }.into());
            out.en.push(infinitive.1);
            out.en.extend(object.en.iter().cloned());
        } else {
            out.extend(&subject.words);
            out.extend(&verb);
            out.extend(&object);
            out.extend(&pp);
        }
        out
    }

    /// A subordinate clause: German verb last, English order unchanged.
    fn sub_clause(&mut self) -> Both {
        let (de_conj, en_conj) = *self.pick(CONJUNCTIONS);
        let Clause { subject, verb, object, pp, .. } = self.clause_parts();
        let mut out = Both::default();
        out.push(de_conj, en_conj);
        out.de.extend(subject.words.de.iter().cloned());
        out.de.extend(object.de.iter().cloned());
        out.de.extend(pp.de.iter().cloned());
        out.de.extend(verb.de.iter().cloned());
        out.en.extend(subject.words.en.iter().cloned());
        out.en.extend(verb.en.iter().cloned());
        out.en.extend(object.en.iter().cloned());
        out.en.extend(pp.en.iter().cloned());
        out
    }

    fn sentence(&mut self) -> Pair {
        let words = match self.rng.random_range(0..10) {
            0..=5 => self.main_clause(true),
            6..=7 => {
                // Der Hund schläft, weil die Katze singt.
                let mut s = self.main_clause(true);
                let sub = self.sub_clause();
                push_comma(&mut s);
                s.extend(&sub);
                s
            }
            _ => {
                // Weil die Katze singt, schläft der Hund. (the subordinate clause takes the front
                // position, so the main verb comes right after it)
                let mut s = self.sub_clause();
                push_comma(&mut s);
                let Clause { subject, verb, object, pp, .. } = self.clause_parts();
                s.de.extend(verb.de.iter().cloned());
                s.de.extend(subject.words.de.iter().cloned());
                s.de.extend(object.de.iter().cloned());
                s.de.extend(pp.de.iter().cloned());
                s.en.extend(subject.words.en.iter().cloned());
                s.en.extend(verb.en.iter().cloned());
                s.en.extend(object.en.iter().cloned());
                s.en.extend(pp.en.iter().cloned());
                s
            }
        };
        Pair { de: finish(&words.de), en: finish(&words.en) }
    }
}

fn push_comma(s: &mut Both) {
    for side in [&mut s.de, &mut s.en] {
        if let Some(last) = side.last_mut() {
            last.push(',');
        }
    }
}

/// Joins words, capitalises the first letter and adds the full stop.
fn finish(words: &[String]) -> String {
    let text = words.join(" ");
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
    format!("{first}{}.", chars.as_str())
}

/// FNV-1a: a stable hash (unlike `DefaultHasher`) that routes each sentence to one split.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

const MIN_WORDS: usize = 5;
const MAX_WORDS: usize = 25;

/// Generates the corpus. Sentences come from one seeded stream, duplicates are dropped, and each
/// sentence goes to test, validation or train by a hash of its German side (1 : 1 : 8), so the
/// splits are disjoint and each split is a prefix of a fixed sequence: asking for more training
/// examples never changes the validation or test sets.
pub(crate) fn generate(seed: u64, sizes: SplitSizes) -> Corpus {
    let mut gen = Generator { lex: Lexicon::new(), rng: ChaCha8Rng::seed_from_u64(seed) };
    let mut seen = HashSet::new();
    let mut corpus = Corpus { train: vec![], val: vec![], test: vec![] };
    while corpus.train.len() < sizes.train
        || corpus.val.len() < sizes.val
        || corpus.test.len() < sizes.test
    {
        let pair = gen.sentence();
        let words = |s: &str| s.split_whitespace().count();
        let (de_words, en_words) = (words(&pair.de), words(&pair.en));
        if !(MIN_WORDS..=MAX_WORDS).contains(&de_words)
            || !(MIN_WORDS..=MAX_WORDS).contains(&en_words)
            || !seen.insert(pair.de.clone())
        {
            continue;
        }
        let (split, cap) = match fnv1a(&pair.de) % 10 {
            0 => (&mut corpus.test, sizes.test),
            1 => (&mut corpus.val, sizes.val),
            _ => (&mut corpus.train, sizes.train),
        };
        if split.len() < cap {
            split.push(pair);
        }
    }
    corpus
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: SplitSizes = SplitSizes { train: 20_000, val: 1000, test: 100 };

    #[test]
    fn deterministic_and_seed_dependent() {
        let small = SplitSizes { train: 200, val: 20, test: 20 };
        assert_eq!(generate(7, small), generate(7, small));
        assert_ne!(generate(7, small).train, generate(8, small).train);
    }

    #[test]
    fn large_disjoint_and_prefix_stable() {
        let big = generate(1234, SIZES);
        let de: HashSet<_> =
            big.train.iter().chain(&big.val).chain(&big.test).map(|p| &p.de).collect();
        assert_eq!(de.len(), 21_100, "splits must be disjoint and duplicate-free");
        let small = generate(1234, SplitSizes { train: 500, val: 1000, test: 100 });
        assert_eq!(small.val, big.val);
        assert_eq!(small.test, big.test);
        assert_eq!(small.train[..], big.train[..500]);
    }

    #[test]
    fn sentences_have_the_promised_shape() {
        let c = generate(1234, SplitSizes { train: 2000, val: 0, test: 0 });
        let lengths: Vec<usize> = c.train.iter().map(|p| p.de.split_whitespace().count()).collect();
        assert!(lengths.iter().all(|n| (MIN_WORDS..=MAX_WORDS).contains(n)));
        let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
        assert!((8.0..16.0).contains(&mean), "mean sentence length {mean}");
        assert!(Lexicon::new().size() >= 300);
        // German word order differs: verb-final subordinate clauses and verb-second inversion.
        assert!(c.train.iter().any(|p| p.de.contains("weil") && p.en.contains("because")));
        assert!(c.train.iter().any(|p| p.de.starts_with("Heute") && p.en.starts_with("Today the")));
    }

    #[test]
    fn grammar_examples() {
        assert_eq!(definite(Case::Dat, Gender::F, false), ("der", "en"));
        assert_eq!(indefinite(Case::Nom, Gender::N), ("ein", "es"));
        assert_eq!(dative_plural("Männer"), "Männern");
        assert_eq!(dative_plural("Katzen"), "Katzen");
        assert_eq!(finish(&["über".into(), "alles".into()]), "Über alles.");
    }
}
