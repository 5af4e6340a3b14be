//! The lexicon of the built-in corpus: about 330 German–English lexeme pairs (nouns with gender
//! and plurals, adjectives, transitive, intransitive and modal verbs, prepositions, adverbs,
//! conjunctions, numbers). Data only; `synthetic` builds sentences from it.

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Gender {
    M,
    F,
    N,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Case {
    Nom,
    Acc,
    Dat,
}

#[derive(Clone, Copy)]
pub(super) struct Noun {
    pub(super) de: &'static str,
    pub(super) gender: Gender,
    pub(super) de_pl: &'static str,
    pub(super) en: &'static str,
    pub(super) en_pl: &'static str,
}

/// A verb: German 3rd person singular and plural (= infinitive), English 3rd singular and base.
#[derive(Clone, Copy)]
pub(super) struct Verb {
    pub(super) de_sg: &'static str,
    pub(super) de_pl: &'static str,
    pub(super) en_sg: &'static str,
    pub(super) en_base: &'static str,
}

/// `Stem|gender|Plural|english|englishes`.
pub(super) const NOUNS: &str = "\
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
pub(super) const ADJECTIVES: &str = "\
groß|big;klein|small;alt|old;jung|young;neu|new;rot|red;blau|blue;grün|green;gelb|yellow;schwarz|black;\
weiß|white;braun|brown;grau|grey;schön|beautiful;hässlich|ugly;lang|long;kurz|short;schnell|fast;langsam|slow;\
laut|loud;leise|quiet;warm|warm;kalt|cold;nass|wet;trocken|dry;müde|tired;hungrig|hungry;glücklich|happy;\
traurig|sad;freundlich|friendly;stark|strong;schwach|weak;reich|rich;arm|poor;klug|clever;dumm|stupid;\
schwer|heavy;leicht|light;sauber|clean;schmutzig|dirty;billig|cheap;kostbar|precious;lustig|funny;\
wild|wild;ruhig|calm;bunt|colourful;rund|round;fremd|foreign;berühmt|famous;nett|nice;neugierig|curious";

/// `sieht|sehen|sees|see`: transitive verbs, taking an accusative object.
pub(super) const TRANSITIVE: &str = "\
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
pub(super) const INTRANSITIVE: &str = "\
schläft|schlafen|sleeps|sleep;läuft|laufen|runs|run;wartet|warten|waits|wait;spielt|spielen|plays|play;\
arbeitet|arbeiten|works|work;lacht|lachen|laughs|laugh;singt|singen|sings|sing;tanzt|tanzen|dances|dance;\
schwimmt|schwimmen|swims|swim;sitzt|sitzen|sits|sit;steht|stehen|stands|stand;weint|weinen|cries|cry;\
lernt|lernen|learns|learn;wohnt|wohnen|lives|live;träumt|träumen|dreams|dream;springt|springen|jumps|jump;\
ruht|ruhen|rests|rest;liegt|liegen|lies|lie;klettert|klettern|climbs|climb;schreit|schreien|shouts|shout;\
lächelt|lächeln|smiles|smile;reist|reisen|travels|travel;fährt|fahren|drives|drive;fliegt|fliegen|flies|fly";

pub(super) const MODALS: &str = "\
will|wollen|wants to|want to;kann|können|can|can;muss|müssen|must|must;möchte|möchten|would like to|would like to;\
soll|sollen|should|should;darf|dürfen|may|may";

/// Dative prepositions: `german|english|contraction with dem` (empty when none).
pub(super) const PREPOSITIONS: &[(&str, &str, &str)] = &[
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
pub(super) const ADVERBS: &[(&str, &str)] = &[
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

pub(super) const CONJUNCTIONS: &[(&str, &str)] = &[
    ("weil", "because"),
    ("während", "while"),
    ("obwohl", "although"),
    ("wenn", "when"),
    ("bevor", "before"),
    ("nachdem", "after"),
    ("falls", "if"),
    ("sobald", "as soon as"),
];

pub(super) const NUMBERS: &[(&str, &str)] = &[
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

pub(super) struct Lexicon {
    pub(super) nouns: Vec<Noun>,
    pub(super) adjectives: Vec<(&'static str, &'static str)>,
    pub(super) transitive: Vec<Verb>,
    pub(super) intransitive: Vec<Verb>,
    pub(super) modals: Vec<Verb>,
}

pub(super) fn fields(table: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    table.split(';').map(|entry| entry.split('|').collect())
}

pub(super) fn verbs(table: &'static str) -> Vec<Verb> {
    fields(table).map(|f| Verb { de_sg: f[0], de_pl: f[1], en_sg: f[2], en_base: f[3] }).collect()
}

impl Lexicon {
    pub(super) fn new() -> Self {
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
    pub(super) fn size(&self) -> usize {
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
