//! What the caller and the location hear, in which language and voice. Pure.
//!
//! Every sentence the server speaks is a [`Prompt`] with a name (the key a
//! config file uses), an English text and a Spanish text built in, and the
//! placeholders it may use (`{business}`, `{location}`, …). A [`Language`]
//! is one BCP-47 tag as Twilio's `<Say language>` takes it ("en-US",
//! "es-MX"), its menu key, its voice, and its texts: the built-in set of its
//! primary language (`en`, `es`), with the config's own texts over it. A
//! language with no built-in set must give every prompt.
//!
//! Which language a caller hears: the one they chose at the menu (carried in
//! the `lang` query parameter of every URL the server gives Twilio for their
//! call, and in the journey for the REST redirect), else the number's
//! (`ivr.number_languages`), else, on a number that serves one location, that
//! location's `language`, else the first of `ivr.languages`. The location's
//! leg (the screening prompt) hears the location's language.
//!
//! Which voice: the location's `voice` for prompts in the location's own
//! language, else the language's `voice` (`ivr.voice` for the first
//! language), else none (Twilio's default for the language).

use std::collections::BTreeMap;

use twilio::twiml::Say;

/// One sentence the server may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prompt {
    Welcome,
    WelcomeLocation,
    MenuRetry,
    MenuItem,
    LanguageOffer,
    PleaseHold,
    ClosedNow,
    ClosedHoliday,
    VoicemailOffer,
    NoMessage,
    NoChoice,
    NoChoiceGoodbye,
    CannotConnect,
    CouldNotConnect,
    LocationBusy,
    LocationNoAnswer,
    QueueTimeout,
    ClosedWhileWaiting,
    AllLinesBusy,
    Transferring,
    CouldNotReach,
    Position,
    ExpectedWait,
    WaitUnderMinute,
    WaitOneMinute,
    WaitMinutes,
    WaitOverHour,
    Goodbye,
    NotInService,
    CallerGone,
    Screen,
    ScreenWrongKey,
    UnknownNumber,
    NumberPlus,
    CallbackOffer,
    CallbackBye,
    CallbackScreen,
    CallbackMissed,
    CallbackClosedBye,
}

/// Name, placeholders, English, Spanish.
type Entry = (Prompt, &'static str, &'static [&'static str], &'static str, &'static str);

/// The catalogue: every prompt's config name, placeholders and built-in texts.
const CATALOGUE: &[Entry] = &[
    (
        Prompt::Welcome,
        "welcome",
        &["business"],
        "Thank you for calling {business}.",
        "Gracias por llamar a {business}.",
    ),
    (
        Prompt::WelcomeLocation,
        "welcome_location",
        &["location"],
        "Thank you for calling {location}.",
        "Gracias por llamar a {location}.",
    ),
    (Prompt::MenuRetry, "menu_retry", &[], "Sorry, I didn't get that.", "Perdón, no le entendí."),
    (
        Prompt::MenuItem,
        "menu_item",
        &["location", "digit"],
        "For {location}, press {digit}.",
        "Para {location}, oprima {digit}.",
    ),
    (
        Prompt::LanguageOffer,
        "language_offer",
        &["digit"],
        "For English, press {digit}.",
        "Para español, oprima {digit}.",
    ),
    (
        Prompt::AllLinesBusy,
        "all_lines_busy",
        &["location"],
        "All of {location}'s lines are busy.",
        "Todas las líneas de {location} están ocupadas.",
    ),
    (
        Prompt::Transferring,
        "transferring",
        &["location"],
        "We are transferring you to {location}.",
        "Lo estamos transfiriendo a {location}.",
    ),
    (
        Prompt::PleaseHold,
        "please_hold",
        &[],
        "Please hold while we connect you.",
        "Por favor, espere mientras lo comunicamos.",
    ),
    (
        Prompt::ClosedNow,
        "closed_now",
        &["location"],
        "{location} is closed right now.",
        "{location} está cerrado en este momento.",
    ),
    (
        Prompt::ClosedHoliday,
        "closed_holiday",
        &["location", "holiday"],
        "{location} is closed today for {holiday}.",
        "{location} está cerrado hoy por {holiday}.",
    ),
    (
        Prompt::VoicemailOffer,
        "voicemail_offer",
        &[],
        "Please leave a message after the tone, and we will call you back.",
        "Por favor, deje un mensaje después del tono y le devolveremos la llamada.",
    ),
    (
        Prompt::NoMessage,
        "no_message",
        &[],
        "We did not receive a message. Goodbye.",
        "No recibimos ningún mensaje. Adiós.",
    ),
    (
        Prompt::NoChoice,
        "no_choice",
        &[],
        "Sorry, I still didn't get a choice.",
        "Perdón, todavía no recibí una opción.",
    ),
    (
        Prompt::NoChoiceGoodbye,
        "no_choice_goodbye",
        &[],
        "Sorry, I still didn't get a choice. Please call again. Goodbye.",
        "Perdón, todavía no recibí una opción. Por favor, vuelva a llamar. Adiós.",
    ),
    (
        Prompt::CannotConnect,
        "cannot_connect",
        &[],
        "Sorry, we cannot connect your call right now.",
        "Lo sentimos, no podemos comunicarlo en este momento.",
    ),
    (
        Prompt::CouldNotConnect,
        "could_not_connect",
        &[],
        "Sorry, we could not connect your call.",
        "Lo sentimos, no pudimos comunicar su llamada.",
    ),
    (
        Prompt::LocationBusy,
        "location_busy",
        &["location"],
        "Sorry, {location} is on another call.",
        "Lo sentimos, {location} está atendiendo otra llamada.",
    ),
    (
        Prompt::LocationNoAnswer,
        "location_no_answer",
        &["location"],
        "Sorry, nobody at {location} could take your call.",
        "Lo sentimos, nadie en {location} pudo atender su llamada.",
    ),
    (
        Prompt::QueueTimeout,
        "queue_timeout",
        &["location"],
        "Sorry, {location} could not take your call in time.",
        "Lo sentimos, {location} no pudo atender su llamada a tiempo.",
    ),
    (
        Prompt::ClosedWhileWaiting,
        "closed_while_waiting",
        &["location"],
        "Sorry, {location} has closed for now.",
        "Lo sentimos, {location} acaba de cerrar.",
    ),
    (
        Prompt::CouldNotReach,
        "could_not_reach",
        &["location"],
        "Sorry, we could not reach {location}.",
        "Lo sentimos, no pudimos comunicarnos con {location}.",
    ),
    (
        Prompt::Position,
        "position",
        &["position"],
        "You are caller number {position}.",
        "Usted es la persona número {position} en la fila.",
    ),
    (
        Prompt::ExpectedWait,
        "expected_wait",
        &["wait"],
        "The expected wait is {wait}.",
        "El tiempo de espera estimado es de {wait}.",
    ),
    (Prompt::WaitUnderMinute, "wait_under_minute", &[], "less than a minute", "menos de un minuto"),
    (Prompt::WaitOneMinute, "wait_one_minute", &[], "about 1 minute", "aproximadamente 1 minuto"),
    (Prompt::WaitMinutes, "wait_minutes", &["minutes"], "about {minutes} minutes", "aproximadamente {minutes} minutos"),
    (Prompt::WaitOverHour, "wait_over_hour", &[], "more than an hour", "más de una hora"),
    (Prompt::Goodbye, "goodbye", &[], "Thank you for calling. Goodbye.", "Gracias por llamar. Adiós."),
    (
        Prompt::NotInService,
        "not_in_service",
        &[],
        "Sorry, this number is not in service. Goodbye.",
        "Lo sentimos, este número no está en servicio. Adiós.",
    ),
    (
        Prompt::CallerGone,
        "caller_gone",
        &[],
        "Sorry, the caller has already hung up. Goodbye.",
        "Lo sentimos, la persona que llamaba ya colgó. Adiós.",
    ),
    (
        Prompt::Screen,
        "screen",
        &["location", "from"],
        "Call for {location} from {from}. Press 1 to accept, or hang up.",
        "Llamada para {location} de {from}. Oprima 1 para aceptar, o cuelgue.",
    ),
    (Prompt::ScreenWrongKey, "screen_wrong_key", &[], "Sorry, that was not 1.", "Perdón, eso no fue 1."),
    (Prompt::UnknownNumber, "unknown_number", &[], "an unknown number", "un número desconocido"),
    (Prompt::NumberPlus, "number_plus", &[], "plus", "más"),
    (
        Prompt::CallbackOffer,
        "callback_offer",
        &[],
        "To hang up and keep your place in line, press 1. We will call you back at this number.",
        "Para colgar y conservar su lugar en la fila, oprima 1. Le devolveremos la llamada a este número.",
    ),
    (
        Prompt::CallbackBye,
        "callback_bye",
        &["number"],
        "Thank you. We will call you back at {number} when it is your turn. Goodbye.",
        "Gracias. Le devolveremos la llamada al {number} cuando sea su turno. Adiós.",
    ),
    (
        Prompt::CallbackScreen,
        "callback_screen",
        &["location", "from", "since"],
        "Callback for {location}: {from}, waiting since {since}. Press 1 to call them now.",
        "Devolución de llamada para {location}: {from}, en espera desde las {since}. Oprima 1 para llamar ahora.",
    ),
    (
        Prompt::CallbackMissed,
        "callback_missed",
        &[],
        "The caller did not answer. Goodbye.",
        "La persona no contestó. Adiós.",
    ),
    (
        Prompt::CallbackClosedBye,
        "callback_closed_bye",
        &["location", "number"],
        "{location} has closed for now. We will call you back at {number} when we open, and you keep your place in line. Goodbye.",
        "{location} ha cerrado por ahora. Le devolveremos la llamada al {number} cuando abramos, y conserva su lugar en la fila. Adiós.",
    ),
];

fn entry(p: Prompt) -> &'static Entry {
    CATALOGUE.iter().find(|e| e.0 == p).expect("every prompt is in the catalogue")
}

impl Prompt {
    /// Its name in a config file (`[language.es-MX.prompts] welcome = "…"`).
    pub fn name(self) -> &'static str {
        entry(self).1
    }

    /// The placeholders its text may use.
    pub fn placeholders(self) -> &'static [&'static str] {
        entry(self).2
    }

    pub fn parse(name: &str) -> Option<Prompt> {
        CATALOGUE.iter().find(|e| e.1 == name).map(|e| e.0)
    }

    pub fn all() -> impl Iterator<Item = Prompt> {
        CATALOGUE.iter().map(|e| e.0)
    }
}

/// The built-in sets, by primary language subtag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltIn {
    English,
    Spanish,
}

impl BuiltIn {
    /// The built-in set for a tag's primary language (`es-MX` → Spanish).
    pub fn of(tag: &str) -> Option<BuiltIn> {
        match tag.split('-').next().unwrap_or_default() {
            "en" => Some(BuiltIn::English),
            "es" => Some(BuiltIn::Spanish),
            _ => None,
        }
    }

    fn text(self, p: Prompt) -> &'static str {
        let e = entry(p);
        match self {
            BuiltIn::English => e.3,
            BuiltIn::Spanish => e.4,
        }
    }
}

/// Checks a BCP-47 tag's shape as Twilio's `<Say language>` takes it: a
/// primary language of 2-3 lowercase letters, then optionally a region of
/// two capitals or three digits ("en-US", "es-MX", "es-419", "cmn-CN").
pub fn check_tag(tag: &str) -> Result<(), String> {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or_default();
    let region = parts.next();
    let ok = (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_lowercase())
        && region.is_none_or(|r| {
            (r.len() == 2 && r.chars().all(|c| c.is_ascii_uppercase()))
                || (r.len() == 3 && r.chars().all(|c| c.is_ascii_digit()))
        })
        && parts.next().is_none();
    if ok { Ok(()) } else { Err(format!("{tag:?} is not a language tag like \"en-US\" or \"es-MX\"")) }
}

/// Checks a `<Say voice>`: `man`, `woman`, `alice`, or a named voice such as
/// "Polly.Joanna", "Polly.Mia-Neural" or "Google.es-US-Standard-A".
pub fn check_voice(voice: &str) -> Result<(), String> {
    let named = |prefix: &str| {
        voice.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty() && rest.len() <= 60 && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    if matches!(voice, "man" | "woman" | "alice") || named("Polly.") || named("Google.") {
        Ok(())
    } else {
        Err(format!(
            "{voice:?} is not a voice: use \"man\", \"woman\", \"alice\", or a named voice like \"Polly.Joanna\" or \"Google.es-US-Standard-A\""
        ))
    }
}

/// Checks a configured text for `p`: not empty, at most 500 characters, and
/// only the placeholders `p` has.
pub fn check_text(p: Prompt, text: &str) -> Result<(), String> {
    let n = text.trim().chars().count();
    if n == 0 || n > 500 {
        return Err("must be 1 to 500 characters".into());
    }
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("has a '{' without its '}'".into());
        };
        let name = &after[..close];
        if !p.placeholders().contains(&name) {
            let allowed: Vec<String> = p.placeholders().iter().map(|p| format!("{{{p}}}")).collect();
            let allowed = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
            return Err(format!("{{{name}}} is not a placeholder of this prompt (it has: {allowed})"));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

/// One language the business speaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Language {
    /// The BCP-47 tag, as `<Say language>` gets it.
    pub tag: String,
    /// The menu key that switches a caller to it (none for the first language
    /// when it is the only one).
    pub key: Option<char>,
    /// Its voice, when configured.
    pub voice: Option<String>,
    /// The business's name in it.
    pub business_name: String,
    builtin: Option<BuiltIn>,
    texts: BTreeMap<Prompt, String>,
}

impl Language {
    /// A language from its built-in set and the config's own texts. Every
    /// prompt must have a text: an error names the first one missing.
    pub fn new(
        tag: &str,
        key: Option<char>,
        voice: Option<String>,
        business_name: String,
        own: BTreeMap<Prompt, String>,
    ) -> Result<Self, String> {
        check_tag(tag)?;
        let builtin = BuiltIn::of(tag);
        if builtin.is_none()
            && let Some(missing) = Prompt::all().find(|p| !own.contains_key(p))
        {
            return Err(format!(
                "has no built-in prompts (only en-* and es-* do), so every prompt needs a text; {:?} is missing",
                missing.name()
            ));
        }
        Ok(Language { tag: tag.to_owned(), key, voice, business_name, builtin, texts: own })
    }

    /// Today's English, with `ivr.voice`.
    pub fn english(voice: Option<String>, business_name: String) -> Self {
        Language::new("en-US", None, voice, business_name, BTreeMap::new()).expect("English is built in")
    }

    /// The text of `p` with its placeholders filled from `args`.
    pub fn text(&self, p: Prompt, args: &[(&str, &str)]) -> String {
        let raw = match self.texts.get(&p) {
            Some(t) => t.as_str(),
            None => self.builtin.unwrap_or(BuiltIn::English).text(p),
        };
        fill(raw, args)
    }

    /// A number as it is said in this language: words up to 99 in English
    /// and Spanish, digits otherwise.
    pub fn number(&self, n: u32) -> String {
        match self.builtin {
            Some(BuiltIn::English) => crate::announce::number_words(n),
            Some(BuiltIn::Spanish) => spanish_number(n),
            None => n.to_string(),
        }
    }

    /// The expected wait in words, rounded as `announce::spoken_wait`.
    pub fn spoken_wait(&self, secs: u32) -> String {
        if secs < 60 {
            return self.text(Prompt::WaitUnderMinute, &[]);
        }
        let minutes = secs.div_ceil(60);
        let minutes = if minutes <= 10 { minutes } else { minutes.div_ceil(5) * 5 };
        match minutes {
            1 => self.text(Prompt::WaitOneMinute, &[]),
            m if m <= 60 => self.text(Prompt::WaitMinutes, &[("minutes", &m.to_string())]),
            _ => self.text(Prompt::WaitOverHour, &[]),
        }
    }

    /// The announcement of a waiting caller's place and expected wait;
    /// `None` when there is nothing to say.
    pub fn announcement(&self, position: Option<u32>, wait_secs: Option<u32>) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(p) = position.filter(|&p| p > 0) {
            parts.push(self.text(Prompt::Position, &[("position", &self.number(p))]));
        }
        if let Some(w) = wait_secs {
            parts.push(self.text(Prompt::ExpectedWait, &[("wait", &self.spoken_wait(w))]));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// Replaces each `{name}` of `args` in `raw`; other braces stay.
fn fill(raw: &str, args: &[(&str, &str)]) -> String {
    let mut out = raw.to_owned();
    for (k, v) in args {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Spanish number words from zero to ninety-nine; digits beyond.
pub fn spanish_number(n: u32) -> String {
    const UNITS: [&str; 30] = [
        "cero",
        "uno",
        "dos",
        "tres",
        "cuatro",
        "cinco",
        "seis",
        "siete",
        "ocho",
        "nueve",
        "diez",
        "once",
        "doce",
        "trece",
        "catorce",
        "quince",
        "dieciséis",
        "diecisiete",
        "dieciocho",
        "diecinueve",
        "veinte",
        "veintiuno",
        "veintidós",
        "veintitrés",
        "veinticuatro",
        "veinticinco",
        "veintiséis",
        "veintisiete",
        "veintiocho",
        "veintinueve",
    ];
    const TENS: [&str; 10] =
        ["", "", "", "treinta", "cuarenta", "cincuenta", "sesenta", "setenta", "ochenta", "noventa"];
    match n {
        0..=29 => UNITS[n as usize].into(),
        30..=99 => {
            let (t, o) = ((n / 10) as usize, (n % 10) as usize);
            if o == 0 { TENS[t].into() } else { format!("{} y {}", TENS[t], UNITS[o]) }
        }
        _ => n.to_string(),
    }
}

/// The business's languages: the first is the default.
#[derive(Debug, Clone, PartialEq)]
pub struct Languages {
    list: Vec<Language>,
    /// The language a caller to a number hears first, by E.164 number.
    by_number: BTreeMap<String, usize>,
}

impl Languages {
    /// `list` must not be empty; `by_number` names tags in it.
    pub fn new(list: Vec<Language>, by_number: BTreeMap<String, String>) -> Result<Self, String> {
        if list.is_empty() {
            return Err("at least one language is needed".into());
        }
        let mut numbers = BTreeMap::new();
        for (number, tag) in by_number {
            let i = list
                .iter()
                .position(|l| l.tag == tag)
                .ok_or_else(|| format!("{number}: {tag:?} is not one of ivr.languages"))?;
            numbers.insert(number, i);
        }
        Ok(Languages { list, by_number: numbers })
    }

    /// Only today's English.
    pub fn english(voice: Option<String>, business_name: String) -> Self {
        Languages { list: vec![Language::english(voice, business_name)], by_number: BTreeMap::new() }
    }

    pub fn default_language(&self) -> &Language {
        &self.list[0]
    }

    pub fn all(&self) -> &[Language] {
        &self.list
    }

    pub fn get(&self, tag: &str) -> Option<&Language> {
        self.list.iter().find(|l| l.tag == tag)
    }

    /// The language whose menu key is `key`.
    pub fn by_key(&self, key: char) -> Option<&Language> {
        self.list.iter().find(|l| l.key == Some(key))
    }

    /// Whether a caller can choose among several languages.
    pub fn offers_choice(&self) -> bool {
        self.list.len() > 1
    }

    /// The language a caller hears (see the module's docs): `chosen` (the
    /// `lang` parameter) when it is one of ours, else the number's, else
    /// `location`'s (a number that serves one location), else the default.
    pub fn for_caller(&self, chosen: Option<&str>, number: Option<&str>, location: Option<&str>) -> &Language {
        chosen
            .and_then(|t| self.get(t))
            .or_else(|| number.and_then(|n| self.by_number.get(n)).map(|&i| &self.list[i]))
            .or_else(|| location.and_then(|t| self.get(t)))
            .unwrap_or(self.default_language())
    }
}

/// A language and the voice that speaks it: what every `<Say>` is built from.
#[derive(Debug, Clone, Copy)]
pub struct Speaker<'a> {
    pub lang: &'a Language,
    pub voice: Option<&'a str>,
}

impl<'a> Speaker<'a> {
    /// `lang` as spoken at a location: the location's voice when `lang` is
    /// its own language (`location_lang`, its `language` or the default),
    /// else the language's voice.
    pub fn new(lang: &'a Language, location_lang: Option<&str>, location_voice: Option<&'a str>) -> Self {
        let voice = match (location_voice, location_lang) {
            (Some(v), Some(l)) if l == lang.tag => Some(v),
            _ => lang.voice.as_deref(),
        };
        Speaker { lang, voice }
    }

    /// The text of `p`.
    pub fn text(&self, p: Prompt, args: &[(&str, &str)]) -> String {
        self.lang.text(p, args)
    }

    /// A `<Say>` of any text in this language and voice.
    pub fn say_text(&self, text: impl Into<String>) -> Say {
        Say {
            text: text.into(),
            voice: self.voice.map(str::to_owned),
            language: Some(self.lang.tag.clone()),
            loop_count: None,
        }
    }

    /// A `<Say>` of `p`.
    pub fn say(&self, p: Prompt, args: &[(&str, &str)]) -> Say {
        self.say_text(self.text(p, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spanish() -> Language {
        Language::new("es-MX", Some('9'), Some("Polly.Mia".into()), "Clínicas Acme".into(), BTreeMap::new()).unwrap()
    }

    #[test]
    fn every_prompt_has_a_unique_name_and_texts_that_use_only_its_placeholders() {
        let mut names: Vec<&str> = Prompt::all().map(Prompt::name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate prompt names");
        for p in Prompt::all() {
            assert_eq!(Prompt::parse(p.name()), Some(p));
            for b in [BuiltIn::English, BuiltIn::Spanish] {
                check_text(p, b.text(p)).unwrap_or_else(|e| panic!("{:?} {b:?}: {e}", p.name()));
                // Every placeholder a prompt has is used by the built-in texts.
                for ph in p.placeholders() {
                    assert!(b.text(p).contains(&format!("{{{ph}}}")), "{:?} {b:?} lacks {{{ph}}}", p.name());
                }
            }
        }
    }

    #[test]
    fn english_is_todays_wording() {
        let en = Language::english(None, "Acme".into());
        assert_eq!(en.text(Prompt::Welcome, &[("business", "Acme")]), "Thank you for calling Acme.");
        assert_eq!(en.text(Prompt::MenuItem, &[("location", "North"), ("digit", "1")]), "For North, press 1.");
        assert_eq!(
            en.announcement(Some(3), Some(240)).as_deref(),
            crate::announce::announcement(Some(3), Some(240)).as_deref()
        );
        for secs in [0, 59, 60, 61, 600, 601, 3600, 3601] {
            assert_eq!(en.spoken_wait(secs), crate::announce::spoken_wait(secs), "{secs}");
        }
    }

    #[test]
    fn spanish_is_built_in_and_says_numbers_in_spanish() {
        let es = spanish();
        assert_eq!(es.text(Prompt::LanguageOffer, &[("digit", "9")]), "Para español, oprima 9.");
        assert_eq!(
            es.announcement(Some(3), Some(4 * 60)).as_deref(),
            Some(
                "Usted es la persona número tres en la fila. El tiempo de espera estimado es de aproximadamente 4 minutos."
            )
        );
        assert_eq!(
            es.announcement(None, Some(30)).as_deref(),
            Some("El tiempo de espera estimado es de menos de un minuto.")
        );
        assert_eq!(es.announcement(None, None), None);
        let said: Vec<String> = [1, 16, 21, 22, 30, 31, 45, 99, 100].into_iter().map(spanish_number).collect();
        assert_eq!(
            said,
            [
                "uno",
                "dieciséis",
                "veintiuno",
                "veintidós",
                "treinta",
                "treinta y uno",
                "cuarenta y cinco",
                "noventa y nueve",
                "100"
            ]
        );
    }

    #[test]
    fn a_configured_text_replaces_the_built_in_one() {
        let own = BTreeMap::from([(Prompt::PleaseHold, "Un momento, por favor.".to_owned())]);
        let es = Language::new("es-US", Some('9'), None, "Acme".into(), own).unwrap();
        assert_eq!(es.text(Prompt::PleaseHold, &[]), "Un momento, por favor.");
        assert_eq!(es.text(Prompt::Goodbye, &[]), "Gracias por llamar. Adiós.");
    }

    #[test]
    fn a_language_without_a_built_in_set_needs_every_prompt() {
        let e = Language::new("fr-CA", Some('8'), None, "Acme".into(), BTreeMap::new()).unwrap_err();
        assert!(e.contains("\"welcome\" is missing"), "{e}");
        let all: BTreeMap<Prompt, String> = Prompt::all().map(|p| (p, format!("fr {}", p.name()))).collect();
        let fr = Language::new("fr-CA", Some('8'), None, "Acme".into(), all).unwrap();
        assert_eq!(fr.text(Prompt::Goodbye, &[]), "fr goodbye");
        // No built-in words for numbers: digits.
        assert_eq!(fr.number(3), "3");
    }

    #[test]
    fn tags_voices_and_texts_are_checked() {
        for ok in ["en-US", "es-MX", "es-419", "cmn-CN", "fr"] {
            check_tag(ok).unwrap();
        }
        for bad in ["", "EN-us", "es_MX", "english", "es-MX-x", "es-"] {
            let e = check_tag(bad).unwrap_err();
            assert!(e.contains("is not a language tag like"), "{bad}: {e}");
        }
        for ok in ["alice", "man", "Polly.Joanna", "Polly.Mia-Neural", "Google.es-US-Standard-A"] {
            check_voice(ok).unwrap();
        }
        for bad in ["", "Polly.", "Joanna", "Polly.<x>", "Polly.Jo anna"] {
            assert!(check_voice(bad).unwrap_err().contains("is not a voice"), "{bad}");
        }
        check_text(Prompt::MenuItem, "Para {location}, marque {digit}.").unwrap();
        let e = check_text(Prompt::MenuItem, "Para {locaton}.").unwrap_err();
        assert_eq!(e, "{locaton} is not a placeholder of this prompt (it has: {location}, {digit})");
        assert!(check_text(Prompt::Goodbye, "Adiós {").unwrap_err().contains("without its"));
        assert!(check_text(Prompt::Goodbye, "  ").is_err());
    }

    #[test]
    fn a_callers_language_is_chosen_then_the_numbers_then_the_locations() {
        let langs = Languages::new(
            vec![Language::english(Some("Polly.Joanna".into()), "Acme".into()), spanish()],
            BTreeMap::from([("+12025550100".to_owned(), "es-MX".to_owned())]),
        )
        .unwrap();
        assert_eq!(langs.for_caller(None, None, None).tag, "en-US");
        assert_eq!(langs.for_caller(Some("es-MX"), None, None).tag, "es-MX");
        // A tag that is not ours (an old URL, a changed config) is ignored.
        assert_eq!(langs.for_caller(Some("de-DE"), None, None).tag, "en-US");
        assert_eq!(langs.for_caller(None, Some("+12025550100"), None).tag, "es-MX");
        assert_eq!(langs.for_caller(Some("en-US"), Some("+12025550100"), None).tag, "en-US");
        assert_eq!(langs.for_caller(None, Some("+12025550199"), Some("es-MX")).tag, "es-MX");
        assert_eq!(langs.by_key('9').map(|l| l.tag.as_str()), Some("es-MX"));
        assert!(langs.by_key('1').is_none());
        assert!(Languages::new(vec![spanish()], BTreeMap::from([("+1".into(), "en-US".into())])).is_err());
    }

    #[test]
    fn the_location_voice_speaks_only_its_own_language() {
        let (en, es) = (Language::english(Some("Polly.Joanna".into()), "Acme".into()), spanish());
        let s = Speaker::new(&es, Some("es-MX"), Some("Polly.Lupe"));
        assert_eq!(s.voice, Some("Polly.Lupe"));
        let say = s.say(Prompt::Goodbye, &[]);
        assert_eq!((say.language.as_deref(), say.voice.as_deref()), (Some("es-MX"), Some("Polly.Lupe")));
        // An English caller at a Spanish-speaking location: English's voice.
        assert_eq!(Speaker::new(&en, Some("es-MX"), Some("Polly.Lupe")).voice, Some("Polly.Joanna"));
        assert_eq!(Speaker::new(&es, None, None).voice, Some("Polly.Mia"));
    }

    proptest::proptest! {
        /// Whatever arrives as `lang` (a URL parameter) or as a number, the caller
        /// hears one of the business's languages; a text check never panics.
        #[test]
        fn any_lang_parameter_picks_a_configured_language(chosen in proptest::option::of(".{0,12}"),
                                                          number in proptest::option::of("\\+?[0-9]{0,15}"),
                                                          text in ".{0,80}") {
            let langs = Languages::new(vec![Language::english(None, "Acme".into()), spanish()], BTreeMap::new()).unwrap();
            let got = langs.for_caller(chosen.as_deref(), number.as_deref(), None);
            proptest::prop_assert!(langs.all().iter().any(|l| l.tag == got.tag));
            if chosen.as_deref() != Some("es-MX") {
                proptest::prop_assert_eq!(got.tag.as_str(), "en-US");
            }
            for p in Prompt::all() {
                if check_text(p, &text).is_ok() {
                    // A text that passes fills without leaving any of its placeholders.
                    let filled = Language::new("es-MX", None, None, "A".into(), BTreeMap::from([(p, text.clone())]))
                        .unwrap()
                        .text(p, &p.placeholders().iter().map(|n| (*n, "x")).collect::<Vec<_>>());
                    for n in p.placeholders() {
                        let placeholder = format!("{{{n}}}");
                        proptest::prop_assert!(!filled.contains(&placeholder));
                    }
                }
            }
        }
    }
}
