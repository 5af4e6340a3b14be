//! The built-in German→English corpus: sentence pairs generated from a small grammar, byte-identical
//! for a seed, with what makes translation more than word substitution: gender and case on
//! articles and adjectives, plural agreement, verb-second order after a fronted phrase, verb-final
//! subordinate clauses, modal verbs with the infinitive at the end, and "nicht" against English
//! do-support. It owns only text generation; splitting into examples is `batching`'s job.

use super::corpus::{Corpus, Pair, SplitSizes};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Gender {
    M,
    F,
    N,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Nom,
    Acc,
    Dat,
}

#[derive(Clone, Copy)]
struct Noun {
    de: &'static str,
    gender: Gender,
    de_pl: &'static str,
    en: &'static str,
    en_pl: &'static str,
}

/// A verb: German 3rd person singular and plural (= infinitive), English 3rd singular and base.
#[derive(Clone, Copy)]
struct Verb {
    de_sg: &'static str,
    de_pl: &'static str,
    en_sg: &'static str,
    en_base: &'static str,
}

/// `Stem|gender|Plural|english|englishes`.
const NOUNS: &str = "\
Hund|m|Hunde|dog|dogs;Katze|f|Katzen|cat|cats;Pferd|n|Pferde|horse|horses;Mann|m|Männer|man|men;\
Frau|f|Frauen|woman|women;Kind|n|Kinder|child|children;Junge|m|Jungen|boy|boys;Mädchen|n|Mädchen|girl|girls;\
Lehrer|m|Lehrer|teacher|teachers;Lehrerin|f|Lehrerinnen|teacher|teachers;Arzt|m|Ärzte|doctor|doctors;\
Bauer|m|Bauern|farmer|farmers;Koch|m|Köche|cook|cooks;Vogel|m|Vögel|bird|birds;Fisch|m|Fische|fish|fish;\
Baum|m|Bäume|tree|trees;Blume|f|Blumen|flower|flowers;Haus|n|Häuser|house|houses;Auto|n|Autos|car|cars;\
Buch|n|Bücher|book|books;Tisch|m|Tische|table|tables;Stuhl|m|Stühle|chair|chairs;Fenster|n|Fenster|window|windows;\
Tür|f|Türen|door|doors;Straße|f|Straßen|street|streets;Stadt|f|Städte|city|cities;Dorf|n|Dörfer|village|villages;\
Garten|m|Gärten|garden|gardens;Park|m|Parks|park|parks;Wald|m|Wälder|forest|forests;Berg|m|Berge|mountain|mountains;\
Fluss|m|Flüsse|river|rivers;See|m|Seen|lake|lakes;Strand|m|Strände|beach|beaches;Brücke|f|Brücken|bridge|bridges;\
Schule|f|Schulen|school|schools;Kirche|f|Kirchen|church|churches;Markt|m|Märkte|market|markets;\
Bahnhof|m|Bahnhöfe|station|stations;Zug|m|Züge|train|trains;Bus|m|Busse|bus|buses;Boot|n|Boote|boat|boats;\
Fahrrad|n|Fahrräder|bicycle|bicycles;Ball|m|Bälle|ball|balls;Hut|m|Hüte|hat|hats;Jacke|f|Jacken|jacket|jackets;\
Hemd|n|Hemden|shirt|shirts;Schuh|m|Schuhe|shoe|shoes;Tasche|f|Taschen|bag|bags;Brief|m|Briefe|letter|letters;\
Zeitung|f|Zeitungen|newspaper|newspapers;Bild|n|Bilder|picture|pictures;Lampe|f|Lampen|lamp|lamps;\
Uhr|f|Uhren|clock|clocks;Schlüssel|m|Schlüssel|key|keys;Flasche|f|Flaschen|bottle|bottles;Glas|n|Gläser|glass|glasses;\
Tasse|f|Tassen|cup|cups;Teller|m|Teller|plate|plates;Apfel|m|Äpfel|apple|apples;Kuchen|m|Kuchen|cake|cakes;\
Brot|n|Brote|bread|breads;Suppe|f|Suppen|soup|soups;Gitarre|f|Gitarren|guitar|guitars;Lied|n|Lieder|song|songs;\
Spiel|n|Spiele|game|games;Freund|m|Freunde|friend|friends;Freundin|f|Freundinnen|friend|friends;\
Nachbar|m|Nachbarn|neighbour|neighbours;Student|m|Studenten|student|students;Studentin|f|Studentinnen|student|students;\
Polizist|m|Polizisten|police officer|police officers;Sänger|m|Sänger|singer|singers;Sängerin|f|Sängerinnen|singer|singers;\
Maler|m|Maler|painter|painters;Fahrer|m|Fahrer|driver|drivers;Kellner|m|Kellner|waiter|waiters;\
Verkäufer|m|Verkäufer|salesman|salesmen;Tourist|m|Touristen|tourist|tourists;Spieler|m|Spieler|player|players;\
Großvater|m|Großväter|grandfather|grandfathers;Großmutter|f|Großmütter|grandmother|grandmothers;\
Bruder|m|Brüder|brother|brothers;Schwester|f|Schwestern|sister|sisters;Vater|m|Väter|father|fathers;\
Mutter|f|Mütter|mother|mothers;Baby|n|Babys|baby|babies;Kuh|f|Kühe|cow|cows;Schaf|n|Schafe|sheep|sheep;\
Maus|f|Mäuse|mouse|mice;Ente|f|Enten|duck|ducks;Hase|m|Hasen|rabbit|rabbits;Bär|m|Bären|bear|bears;\
Wolf|m|Wölfe|wolf|wolves;Fuchs|m|Füchse|fox|foxes;Affe|m|Affen|monkey|monkeys;Löwe|m|Löwen|lion|lions;\
Stein|m|Steine|stone|stones;Wand|f|Wände|wall|walls;Dach|n|Dächer|roof|roofs;Zimmer|n|Zimmer|room|rooms;\
Küche|f|Küchen|kitchen|kitchens;Hotel|n|Hotels|hotel|hotels;Restaurant|n|Restaurants|restaurant|restaurants;\
Laden|m|Läden|shop|shops;Büro|n|Büros|office|offices;Computer|m|Computer|computer|computers;\
Telefon|n|Telefone|telephone|telephones;Kamera|f|Kameras|camera|cameras;Karte|f|Karten|map|maps;\
Koffer|m|Koffer|suitcase|suitcases;Schiff|n|Schiffe|ship|ships;Flugzeug|n|Flugzeuge|plane|planes;\
Insel|f|Inseln|island|islands;Wiese|f|Wiesen|meadow|meadows;Feld|n|Felder|field|fields;Zelt|n|Zelte|tent|tents;\
Decke|f|Decken|blanket|blankets;Kiste|f|Kisten|box|boxes;Korb|m|Körbe|basket|baskets;Puppe|f|Puppen|doll|dolls;\
Drache|m|Drachen|dragon|dragons;König|m|Könige|king|kings;Königin|f|Königinnen|queen|queens;Ritter|m|Ritter|knight|knights";

/// `stem|english`; German endings are added by case, gender and article.
const ADJECTIVES: &str = "\
groß|big;klein|small;alt|old;jung|young;neu|new;rot|red;blau|blue;grün|green;gelb|yellow;schwarz|black;\
weiß|white;braun|brown;grau|grey;schön|beautiful;hässlich|ugly;lang|long;kurz|short;schnell|fast;langsam|slow;\
laut|loud;leise|quiet;warm|warm;kalt|cold;nass|wet;trocken|dry;müde|tired;hungrig|hungry;glücklich|happy;\
traurig|sad;freundlich|friendly;stark|strong;schwach|weak;reich|rich;arm|poor;klug|clever;dumm|stupid;\
schwer|heavy;leicht|light;sauber|clean;schmutzig|dirty;billig|cheap;kostbar|precious;lustig|funny;\
wild|wild;ruhig|calm;bunt|colourful;rund|round;fremd|foreign;berühmt|famous;nett|nice;neugierig|curious";

/// `sieht|sehen|sees|see`: transitive verbs, taking an accusative object.
const TRANSITIVE: &str = "\
sieht|sehen|sees|see;kauft|kaufen|buys|buy;liest|lesen|reads|read;findet|finden|finds|find;sucht|suchen|looks for|look for;\
hält|halten|holds|hold;trägt|tragen|carries|carry;malt|malen|paints|paint;kocht|kochen|cooks|cook;isst|essen|eats|eat;\
trinkt|trinken|drinks|drink;braucht|brauchen|needs|need;mag|mögen|likes|like;hat|haben|has|have;nimmt|nehmen|takes|take;\
bringt|bringen|brings|bring;öffnet|öffnen|opens|open;schließt|schließen|closes|close;verkauft|verkaufen|sells|sell;\
baut|bauen|builds|build;wäscht|waschen|washes|wash;füttert|füttern|feeds|feed;besucht|besuchen|visits|visit;\
ruft|rufen|calls|call;zeigt|zeigen|shows|show;fotografiert|fotografieren|photographs|photograph;hört|hören|hears|hear;\
liebt|lieben|loves|love;vergisst|vergessen|forgets|forget;fängt|fangen|catches|catch;wirft|werfen|throws|throw;\
zieht|ziehen|pulls|pull;schiebt|schieben|pushes|push;repariert|reparieren|repairs|repair;beobachtet|beobachten|watches|watch;\
versteckt|verstecken|hides|hide;umarmt|umarmen|hugs|hug;begrüßt|begrüßen|greets|greet;fragt|fragen|asks|ask;\
vermisst|vermissen|misses|miss;teilt|teilen|shares|share;putzt|putzen|cleans|clean;schneidet|schneiden|cuts|cut;\
zeichnet|zeichnen|draws|draw;bemerkt|bemerken|notices|notice;erreicht|erreichen|reaches|reach;verliert|verlieren|loses|lose;\
gewinnt|gewinnen|wins|win;erklärt|erklären|explains|explain;benutzt|benutzen|uses|use;bezahlt|bezahlen|pays for|pay for";

/// Intransitive verbs.
const INTRANSITIVE: &str = "\
schläft|schlafen|sleeps|sleep;läuft|laufen|runs|run;wartet|warten|waits|wait;spielt|spielen|plays|play;\
arbeitet|arbeiten|works|work;lacht|lachen|laughs|laugh;singt|singen|sings|sing;tanzt|tanzen|dances|dance;\
schwimmt|schwimmen|swims|swim;sitzt|sitzen|sits|sit;steht|stehen|stands|stand;weint|weinen|cries|cry;\
lernt|lernen|learns|learn;wohnt|wohnen|lives|live;träumt|träumen|dreams|dream;springt|springen|jumps|jump;\
ruht|ruhen|rests|rest;liegt|liegen|lies|lie;klettert|klettern|climbs|climb;schreit|schreien|shouts|shout;\
lächelt|lächeln|smiles|smile;reist|reisen|travels|travel;fährt|fahren|drives|drive;fliegt|fliegen|flies|fly";

const MODALS: &str = "\
will|wollen|wants to|want to;kann|können|can|can;muss|müssen|must|must;möchte|möchten|would like to|would like to;\
soll|sollen|should|should;darf|dürfen|may|may";

/// Dative prepositions: `german|english|contraction with dem` (empty when none).
const PREPOSITIONS: &[(&str, &str, &str)] = &[
    ("in", "in", "im"),
    ("auf", "on", ""),
    ("unter", "under", ""),
    ("neben", "next to", ""),
    ("hinter", "behind", ""),
    ("vor", "in front of", ""),
    ("mit", "with", ""),
    ("bei", "near", "beim"),
    ("an", "at", "am"),
    ("aus", "out of", ""),
    ("von", "from", "vom"),
    ("gegenüber", "opposite", ""),
];

/// Phrases that can open a German main clause (then the verb comes second).
const ADVERBS: &[(&str, &str)] = &[
    ("heute", "today"),
    ("morgen", "tomorrow"),
    ("jetzt", "now"),
    ("oft", "often"),
    ("manchmal", "sometimes"),
    ("später", "later"),
    ("abends", "in the evening"),
    ("morgens", "in the morning"),
    ("am Wochenende", "at the weekend"),
    ("im Sommer", "in summer"),
    ("im Winter", "in winter"),
    ("hier", "here"),
    ("dort", "there"),
    ("plötzlich", "suddenly"),
    ("wieder", "again"),
    ("bald", "soon"),
    ("zuerst", "first"),
    ("danach", "afterwards"),
    ("nachts", "at night"),
    ("am Montag", "on Monday"),
    ("am Freitag", "on Friday"),
];

const CONJUNCTIONS: &[(&str, &str)] = &[
    ("weil", "because"),
    ("während", "while"),
    ("obwohl", "although"),
    ("wenn", "when"),
    ("bevor", "before"),
    ("nachdem", "after"),
    ("falls", "if"),
    ("sobald", "as soon as"),
];

const NUMBERS: &[(&str, &str)] = &[
    ("zwei", "two"),
    ("drei", "three"),
    ("vier", "four"),
    ("fünf", "five"),
    ("sechs", "six"),
    ("sieben", "seven"),
    ("acht", "eight"),
    ("neun", "nine"),
    ("zehn", "ten"),
    ("elf", "eleven"),
    ("zwölf", "twelve"),
];

struct Lexicon {
    nouns: Vec<Noun>,
    adjectives: Vec<(&'static str, &'static str)>,
    transitive: Vec<Verb>,
    intransitive: Vec<Verb>,
    modals: Vec<Verb>,
}

fn fields(table: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    table.split(';').map(|entry| entry.split('|').collect())
}

fn verbs(table: &'static str) -> Vec<Verb> {
    fields(table).map(|f| Verb { de_sg: f[0], de_pl: f[1], en_sg: f[2], en_base: f[3] }).collect()
}

impl Lexicon {
    fn new() -> Self {
        let nouns = fields(NOUNS)
            .map(|f| Noun {
                de: f[0],
                gender: match f[1] {
                    "m" => Gender::M,
                    "f" => Gender::F,
                    _ => Gender::N,
                },
                de_pl: f[2],
                en: f[3],
                en_pl: f[4],
            })
            .collect();
        let adjectives = fields(ADJECTIVES).map(|f| (f[0], f[1])).collect();
        Lexicon {
            nouns,
            adjectives,
            transitive: verbs(TRANSITIVE),
            intransitive: verbs(INTRANSITIVE),
            modals: verbs(MODALS),
        }
    }

    /// Number of distinct German–English lexeme pairs.
    #[cfg(test)]
    fn size(&self) -> usize {
        self.nouns.len()
            + self.adjectives.len()
            + self.transitive.len()
            + self.intransitive.len()
            + self.modals.len()
            + PREPOSITIONS.len()
            + ADVERBS.len()
            + CONJUNCTIONS.len()
            + NUMBERS.len()
    }
}

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
pub fn generate(seed: u64, sizes: SplitSizes) -> Corpus {
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
