//! Demo scenarios: the TOML format, its checks, the built-in example
//! business, and the expansion of caller groups into planned calls. Pure.
//!
//! # Format
//!
//! ```toml
//! description = "One person answers"        # optional, printed above the report
//! spare_numbers = ["+12025550199"]          # numbers the business owns that serve no location
//!
//! [server]                                  # optional overrides of the server's settings
//! ring_timeout_secs = 20                    # how long the location's phone rings
//! max_queue_secs = 300                      # how long a caller may wait in the queue
//! menu_timeout_secs = 5                     # how long the menu waits for a digit
//! announce_every_secs = 30                  # tell waiting callers their place and wait (0: never)
//! business_name = "Acme"                    # what the menu's welcome calls the business
//! languages = ["en-US", "es-MX"]            # the languages callers hear, the first by default
//! voices = { es-MX = "Polly.Mia" }          # each language's voice
//!
//! # The business. Leave out every [[locations]] table to use the built-in
//! # example business (see `example_business`).
//! [[locations]]
//! name = "north"                            # a-z, 0-9, - and _
//! display_name = "North clinic"             # optional
//! digit = "1"                               # menu digit, needed when a number serves several locations
//! numbers = ["+12025550143"]                # the Twilio numbers that serve it (bought in the sandbox)
//! phone = "+14155550101"                    # the location's own line (simulated by the sandbox)
//! phones = ["+14155550101", "+14155550111"]   # or several (up to 5), rung in order; not with `phone`
//! lines = 1                                 # calls it can take at once
//! open = "always"                           # "always" (default) or "never" (closed: after hours)
//! closes_in_secs = 400                      # open at first, closes this long after the first dial
//!                                           # (one location per scenario; not with `open = "never"` or `hours`)
//! overflow = "south"                        # the location that takes its callers when closed or busy
//! overflow_after_secs = 20                  # …and after this long in its queue
//! closing_policy = "overflow"               # callers still waiting at closing: voicemail (default), callback, overflow
//! screening = false                         # the location hears who calls and presses 1 to accept
//! screening_timeout_secs = 8                # how long the prompt waits for a key
//! amd = true                                # answering-machine detection (default: on unless screening)
//! language = "es-MX"                        # its language (one of `languages`); voice = "Polly.Lupe"
//! translations = { en-US = { display_name = "North clinic" } }   # its name in other languages
//! # hours = { time_zone = "America/New_York", weekly = { mon = ["08:00-17:00"] } }   # or real hours
//!
//! # How each location's phone behaves; a location without an entry has a
//! # person answer after 2 rings and talk for 30 s.
//! [phones.north]
//! answer = "person"                         # person | voicemail | busy | no_answer | fail
//! rings = 2                                 # person, voicemail: rings before picking up
//! talk_secs = 30                            # person: how long they talk
//! digits = "1"                              # person: keys pressed at prompts (screening), one entry per prompt
//! greeting_secs = 3                         # voicemail: how long its greeting speaks
//! [phones."north/2"]                        # the second of north's `phones`, and so on
//!
//! # The callers. Times are virtual (sandbox) seconds.
//! [[callers]]
//! location = "north"                        # dial this location's number and press its digit…
//! # to = "+12025550143"                     # …or dial a number and press `digits` yourself
//! # digits = "1"
//! from = "+13105550100"                     # optional; numbered automatically
//! patience_secs = 600                       # the caller hangs up after this long without a person
//! start_at = 0.0                            # when the caller dials, after the start
//! count = 1                                 # this many identical callers (a burst)
//! burst = false                             # true: `--calls N` sets `count`
//! expect = "connected"                      # optional: the outcome this caller must end with
//! expect_location = "north"                 # optional: the location the call must end at (overflow)
//! expect_heard = ["Gracias por llamar a Acme."]  # optional: whole sentences the caller must hear
//!
//! # Faults the sandbox injects while the callers call (see the sandbox's
//! # `faults` module for every key). Times count from the first caller's dial.
//! [[faults]]
//! on = "rest"                               # rest: the server's requests to Twilio; webhook: Twilio's to the server
//! method = "POST"                           # optional
//! path = "/2010-04-01/Accounts/*/Calls.json" # optional; `*` matches anything
//! share = 0.1                               # the share of matching requests hit (default 1)
//! fault = "reset"                           # rest: status (+ status, retry_after_secs), delay (+ delay_ms), reset
//!                                           # webhook: duplicate, late (+ delay_ms), drop, refuse
//! # from_ms = 0, to_ms = 5000, limit = 3, seed = 42  (optional window, cap and seed)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use jiff::Timestamp;

use crate::clock::Clock;
use crate::domain::{LocationSpec, Outcome, check_unique};
use crate::hours::{ClosureSpec, HoursSpec, WeeklySpec};

/// A problem with a scenario, naming the field (`callers[2].expect`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    #[error("{source_name}: {message}")]
    Parse { source_name: String, message: String },
    #[error("{source_name}: {field}: {message}")]
    Invalid { source_name: String, field: String, message: String },
}

/// The most callers one scenario may place.
pub const MAX_CALLS: u32 = 2000;

/// A checked scenario, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file name or built-in name it came from.
    pub name: String,
    pub description: Option<String>,
    /// Twilio numbers the business owns that serve no location: callers
    /// to them hear that the number is not in service.
    pub spare_numbers: Vec<String>,
    pub server: ServerOverrides,
    pub locations: Vec<LocationSpec>,
    /// Each location's phone, by location name (its first phone) and
    /// `name/k` (its k-th, from 2); every location's first phone has one.
    pub phones: BTreeMap<String, Behaviour>,
    pub callers: Vec<CallerGroup>,
    /// Fault rules for the sandbox; windows count from the first dial.
    pub faults: Vec<sandbox::faults::Rule>,
    /// The location that closes while callers call (`closes_in_secs`), if any.
    pub closes: Option<Closes>,
}

/// A location open at the start that closes `in_secs` virtual seconds after the
/// first dial (`closes_in_secs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closes {
    pub location: String,
    pub in_secs: u32,
}

/// How a run makes [`Closes`] happen. Hours are in whole minutes, so the
/// server's business clock ([`Clock`]) is set to read a whole minute at the
/// closing time, and a closure of the location starts at that minute.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosingPlan {
    pub location: String,
    /// The server's business clock: within a minute behind the wall clock.
    pub clock: Clock,
    /// The business time the location closes at (a whole minute).
    pub closes: Timestamp,
    /// The wall time it closes at, in ms since the epoch.
    pub wall_ms: i64,
    /// Real milliseconds from the first dial to the closing.
    pub lead_ms: i64,
}

impl ClosingPlan {
    /// The first dial's wall time, in ms since the epoch.
    pub fn first_dial_ms(&self) -> i64 {
        self.wall_ms - self.lead_ms
    }
}

/// Server settings a scenario may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerOverrides {
    pub ring_timeout_secs: Option<u32>,
    pub max_queue_secs: Option<u32>,
    pub menu_timeout_secs: Option<u32>,
    /// `ivr.announce_every_secs`: tell waiting callers their place and wait.
    pub announce_every_secs: Option<u32>,
    /// `ivr.business_name`: what the menu's welcome calls the business.
    pub business_name: Option<String>,
    /// `ivr.languages`: the languages callers hear, the first by default.
    pub languages: Option<Vec<String>>,
    /// Each language's `<Say voice>` (`[language.TAG] voice`).
    #[serde(default)]
    pub voices: BTreeMap<String, String>,
}

impl ServerOverrides {
    /// The overrides as TOML for the server's settings file.
    pub fn to_settings_toml(&self) -> String {
        let mut out = String::new();
        if let Some(v) = self.ring_timeout_secs {
            out.push_str(&format!("[dialing]\nring_timeout_secs = {v}\n"));
        }
        let mut ivr = String::new();
        if let Some(v) = self.max_queue_secs {
            ivr.push_str(&format!("max_queue_secs = {v}\n"));
        }
        if let Some(v) = self.menu_timeout_secs {
            ivr.push_str(&format!("menu_timeout_secs = {v}\n"));
        }
        if let Some(v) = self.announce_every_secs {
            ivr.push_str(&format!("announce_every_secs = {v}\n"));
        }
        // Strings as TOML strings: Rust's `{:?}` escapes are TOML's basic-string escapes
        // for the text a name or a tag holds.
        if let Some(v) = &self.business_name {
            ivr.push_str(&format!("business_name = {}\n", toml_string(v)));
        }
        if let Some(tags) = &self.languages {
            let list: Vec<String> = tags.iter().map(|t| toml_string(t)).collect();
            ivr.push_str(&format!("languages = [{}]\n", list.join(", ")));
        }
        if !ivr.is_empty() {
            out.push_str("[ivr]\n");
            out.push_str(&ivr);
        }
        for (tag, voice) in &self.voices {
            out.push_str(&format!("[language.{}]\nvoice = {}\n", toml_string(tag), toml_string(voice)));
        }
        out
    }
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// How a location's simulated phone reacts to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// A person picks up after `rings` rings and talks for `talk_secs`,
    /// pressing `digits` (one entry per prompt, comma-separated) when asked
    /// for a key, as at a screening prompt; none: they press nothing.
    Person {
        rings: u32,
        talk_secs: u32,
        digits: Option<String>,
    },
    /// An answering machine picks up after `rings` rings and speaks its
    /// greeting for `greeting_secs` (default 10); it never presses a key.
    Voicemail {
        rings: u32,
        greeting_secs: Option<u32>,
    },
    Busy,
    /// It rings until the caller or the server gives up.
    NoAnswer,
    /// The call cannot be placed (a carrier failure).
    Fail,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::Person { rings: 2, talk_secs: 30, digits: None }
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Behaviour::Person { rings, talk_secs, digits } => {
                write!(f, "a person answers after {rings} rings, talks {talk_secs}s")?;
                match digits {
                    Some(d) => write!(f, ", presses {d}"),
                    None => Ok(()),
                }
            }
            Behaviour::Voicemail { rings, greeting_secs } => {
                write!(f, "voicemail answers after {rings} rings")?;
                match greeting_secs {
                    Some(s) => write!(f, ", greets for {s}s"),
                    None => Ok(()),
                }
            }
            Behaviour::Busy => f.write_str("busy"),
            Behaviour::NoAnswer => f.write_str("rings, nobody answers"),
            Behaviour::Fail => f.write_str("the call fails"),
        }
    }
}

/// Callers that dial alike.
#[derive(Debug, Clone, PartialEq)]
pub struct CallerGroup {
    /// The location they mean to reach, when given by name.
    pub location: Option<String>,
    pub from: Option<String>,
    pub to: String,
    pub digits: Option<String>,
    pub patience_secs: u32,
    /// Virtual milliseconds after the start.
    pub start_at_ms: u64,
    pub count: u32,
    pub burst: bool,
    pub expect: Option<Outcome>,
    pub expect_location: Option<String>,
    /// What the caller must hear said (each a whole `<Say>`), in any order.
    pub expect_heard: Vec<String>,
}

/// One call to place.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCall {
    /// 1-based, in the order of the scenario's callers.
    pub index: usize,
    pub from: String,
    pub to: String,
    pub digits: Option<String>,
    pub patience_secs: u32,
    pub start_at_ms: u64,
    pub location: Option<String>,
    pub expect: Option<Outcome>,
    pub expect_location: Option<String>,
    pub expect_heard: Vec<String>,
}

// ---------------------------------------------------------------------------
// The file as written.
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    description: Option<String>,
    #[serde(default)]
    spare_numbers: Vec<String>,
    #[serde(default)]
    server: ServerOverrides,
    #[serde(default)]
    locations: Vec<RawLocation>,
    #[serde(default)]
    phones: BTreeMap<String, RawPhone>,
    #[serde(default)]
    callers: Vec<RawCaller>,
    #[serde(default)]
    faults: Vec<toml::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Open {
    Always,
    Never,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    name: String,
    display_name: Option<String>,
    digit: Option<String>,
    numbers: Vec<String>,
    #[serde(default)]
    phone: String,
    /// Several phones, rung in order (instead of `phone`).
    #[serde(default)]
    phones: Vec<String>,
    #[serde(default = "one")]
    lines: u32,
    open: Option<Open>,
    hours: Option<HoursSpec>,
    closes_in_secs: Option<u32>,
    #[serde(default)]
    screening: bool,
    screening_timeout_secs: Option<u32>,
    #[serde(default)]
    screening_caller_name: bool,
    amd: Option<bool>,
    overflow: Option<String>,
    overflow_after_secs: Option<u32>,
    language: Option<String>,
    voice: Option<String>,
    #[serde(default)]
    translations: BTreeMap<String, crate::domain::LocationText>,
    callback: Option<crate::domain::CallbackSpec>,
    #[serde(default)]
    closing_policy: crate::domain::ClosingPolicy,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PhoneKind {
    Person,
    Voicemail,
    Busy,
    NoAnswer,
    Fail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhone {
    answer: PhoneKind,
    rings: Option<u32>,
    talk_secs: Option<u32>,
    digits: Option<String>,
    greeting_secs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    location: Option<String>,
    to: Option<String>,
    digits: Option<String>,
    from: Option<String>,
    patience_secs: Option<u32>,
    start_at: Option<f64>,
    count: Option<u32>,
    #[serde(default)]
    burst: bool,
    expect: Option<String>,
    expect_location: Option<String>,
    #[serde(default)]
    expect_heard: Vec<String>,
}

/// Opening hours that are open every minute of every day.
pub fn always_open() -> HoursSpec {
    HoursSpec { time_zone: "UTC".into(), weekly: WeeklySpec::every_day(&["00:00-24:00"]), ..HoursSpec::default() }
}

/// Opening hours with no shifts at all: closed now, whatever the time.
pub fn never_open() -> HoursSpec {
    HoursSpec { time_zone: "UTC".into(), ..HoursSpec::default() }
}

/// The example business: `north` (1), `south` (2) and `west` (3) share the
/// main number behind a menu, `east` has its own number, and `harbor` has
/// its own number and no opening hours (always closed).
pub fn example_business() -> Vec<LocationSpec> {
    let loc =
        |name: &str, display: &str, digit: Option<&str>, number: &str, phone: &str, hours: HoursSpec| LocationSpec {
            display_name: Some(display.into()),
            digit: digit.map(Into::into),
            ..LocationSpec::new(name, &[number], phone, hours)
        };
    vec![
        loc("north", "North clinic", Some("1"), MAIN_NUMBER, "+14155550101", always_open()),
        loc("south", "South clinic", Some("2"), MAIN_NUMBER, "+14155550102", always_open()),
        loc("west", "West clinic", Some("3"), MAIN_NUMBER, "+14155550103", always_open()),
        loc("east", "East clinic", None, "+12025550144", "+14155550104", always_open()),
        loc("harbor", "Harbor clinic", None, "+12025550145", "+14155550105", never_open()),
    ]
}

/// The example business's main number, shared by three locations.
pub const MAIN_NUMBER: &str = "+12025550143";

/// The shipped scenarios, by name; `mix` is the default.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("mix", include_str!("../../examples/scenarios/mix.toml")),
    ("happy-path", include_str!("../../examples/scenarios/happy-path.toml")),
    ("busy", include_str!("../../examples/scenarios/busy.toml")),
    ("voicemail", include_str!("../../examples/scenarios/voicemail.toml")),
    ("caller-hangs-up", include_str!("../../examples/scenarios/caller-hangs-up.toml")),
    ("after-hours", include_str!("../../examples/scenarios/after-hours.toml")),
    ("burst", include_str!("../../examples/scenarios/burst.toml")),
    ("unreachable", include_str!("../../examples/scenarios/unreachable.toml")),
    ("queue-timeout", include_str!("../../examples/scenarios/queue-timeout.toml")),
    ("not-in-service", include_str!("../../examples/scenarios/not-in-service.toml")),
    ("faults", include_str!("../../examples/scenarios/faults.toml")),
    ("screening", include_str!("../../examples/scenarios/screening.toml")),
    ("announcements", include_str!("../../examples/scenarios/announcements.toml")),
    ("overflow", include_str!("../../examples/scenarios/overflow.toml")),
    ("languages", include_str!("../../examples/scenarios/languages.toml")),
    ("callback", include_str!("../../examples/scenarios/callback.toml")),
    ("closing", include_str!("../../examples/scenarios/closing.toml")),
    ("phones", include_str!("../../examples/scenarios/phones.toml")),
];

/// A built-in scenario by name.
pub fn built_in(name: &str) -> Option<Scenario> {
    let (name, text) = BUILT_IN.iter().find(|(n, _)| *n == name)?;
    Some(Scenario::parse(text, name).unwrap_or_else(|e| panic!("built-in scenario {name} is invalid: {e}")))
}

impl Scenario {
    /// Parses and checks a scenario; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Parse { source_name: source_name.to_owned(), message: e.to_string() })?;
        let mut scenario = Self::check(raw).map_err(|(field, message)| ScenarioError::Invalid {
            source_name: source_name.to_owned(),
            field,
            message,
        })?;
        scenario.name = source_name.to_owned();
        Ok(scenario)
    }

    fn check(raw: RawScenario) -> Result<Scenario, (String, String)> {
        let bad = |field: String, message: String| (field, message);

        let mut closes: Option<Closes> = None;
        let locations = if raw.locations.is_empty() {
            example_business()
        } else {
            raw.locations
                .into_iter()
                .enumerate()
                .map(|(i, l)| {
                    if let Some(secs) = l.closes_in_secs {
                        let field = format!("locations[{i}].closes_in_secs");
                        if !(1..=3600).contains(&secs) {
                            return Err(bad(field, format!("{secs} must be between 1 and 3600 seconds")));
                        }
                        if l.open == Some(Open::Never) {
                            return Err(bad(field, "a location that is never open cannot close".into()));
                        }
                        if l.hours.is_some() {
                            return Err(bad(
                                field,
                                "give `closes_in_secs` with `open = \"always\"` (the default), not `hours`: \
                                 the demo sets the hours it closes by"
                                    .into(),
                            ));
                        }
                        if let Some(other) = &closes {
                            return Err(bad(
                                field,
                                format!(
                                    "{} closes already; one location per scenario may close (the demo's business \
                                     clock has one offset and hours are in whole minutes)",
                                    other.location
                                ),
                            ));
                        }
                        closes = Some(Closes { location: l.name.clone(), in_secs: secs });
                    }
                    let hours = match (l.open, l.hours) {
                        (Some(_), Some(_)) => {
                            return Err(bad(
                                format!("locations[{i}].hours"),
                                "give `open` or `hours`, not both".into(),
                            ));
                        }
                        (Some(Open::Never), None) => never_open(),
                        (Some(Open::Always) | None, None) => always_open(),
                        (None, Some(h)) => h,
                    };
                    let spec = LocationSpec {
                        name: l.name,
                        display_name: l.display_name,
                        digit: l.digit,
                        numbers: l.numbers,
                        phone: l.phone,
                        phones: l.phones,
                        ring: crate::domain::Ring::InOrder,
                        caller_id: None,
                        show_caller_number: false,
                        lines: l.lines,
                        hours,
                        transcribe: false,
                        notify_email: Vec::new(),
                        notify_webhook: None,
                        screening: l.screening,
                        screening_timeout_secs: l.screening_timeout_secs,
                        screening_caller_name: l.screening_caller_name,
                        amd: l.amd,
                        announce_every_secs: None,
                        hold_music: None,
                        comfort_messages: Vec::new(),
                        overflow: l.overflow,
                        overflow_after_secs: l.overflow_after_secs,
                        language: l.language,
                        voice: l.voice,
                        translations: l.translations,
                        callback: l.callback,
                        closing_policy: l.closing_policy,
                    };
                    spec.validate().map_err(|e| bad(format!("locations[{i}].{}", e.field), e.message))?;
                    Ok(spec)
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        check_unique(&locations).map_err(|e| bad(format!("locations.{}", e.field), e.message))?;

        let mut spare_numbers = Vec::new();
        for (i, n) in raw.spare_numbers.iter().enumerate() {
            let field = format!("spare_numbers[{i}]");
            let e164 = crate::domain::checked_phone(&field, n).map_err(|e| bad(field.clone(), e.message))?;
            if locations.iter().any(|l| l.numbers.iter().any(|m| twilio::E164::parse(m).ok().as_ref() == Some(&e164))) {
                return Err(bad(field, format!("{n} serves a location; a spare number serves none")));
            }
            spare_numbers.push(e164.as_str().to_owned());
        }

        let mut phones = BTreeMap::new();
        for (name, p) in raw.phones {
            let field = |f: &str| format!("phones.{name}.{f}");
            // `north` is north's (first) phone; `north/2` its second, and so on.
            let (location, k) = match name.split_once('/') {
                Some((l, k)) => (l, k.parse::<usize>().ok().filter(|k| *k >= 2)),
                None => (name.as_str(), Some(1)),
            };
            let Some(l) = locations.iter().find(|l| l.name == location) else {
                return Err(bad(format!("phones.{name}"), format!("no location named {location:?}")));
            };
            let count = l.phone_list().len();
            if k.is_none_or(|k| k > count) {
                return Err(bad(
                    format!("phones.{name}"),
                    format!("{location:?} has {count} phone(s): name them {location:?}, then \"{location}/2\" and on"),
                ));
            }
            let rings = p.rings.unwrap_or(2);
            if !(1..=50).contains(&rings) {
                return Err(bad(field("rings"), format!("{rings} must be between 1 and 50")));
            }
            let behaviour = match p.answer {
                PhoneKind::Person => {
                    let talk_secs = p.talk_secs.unwrap_or(30);
                    if !(1..=3600).contains(&talk_secs) {
                        return Err(bad(field("talk_secs"), format!("{talk_secs} must be between 1 and 3600")));
                    }
                    if p.greeting_secs.is_some() {
                        return Err(bad(field("greeting_secs"), "only a voicemail has a greeting".into()));
                    }
                    let digits = match p.digits.as_deref().map(str::trim) {
                        None | Some("") => None,
                        Some(d)
                            if d.split(',').all(|k| {
                                let k = k.trim();
                                !k.is_empty() && k.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#')
                            }) =>
                        {
                            Some(d.to_owned())
                        }
                        Some(d) => {
                            return Err(bad(
                                field("digits"),
                                format!("{d:?} must be keys (0-9, *, #), one entry per prompt, comma-separated"),
                            ));
                        }
                    };
                    Behaviour::Person { rings, talk_secs, digits }
                }
                other => {
                    if p.talk_secs.is_some() {
                        return Err(bad(field("talk_secs"), "only a person (answer = \"person\") talks".into()));
                    }
                    if p.digits.is_some() {
                        return Err(bad(field("digits"), "only a person (answer = \"person\") presses keys".into()));
                    }
                    if p.greeting_secs.is_some() && other != PhoneKind::Voicemail {
                        return Err(bad(field("greeting_secs"), "only a voicemail has a greeting".into()));
                    }
                    match other {
                        PhoneKind::Voicemail => {
                            if let Some(g) = p.greeting_secs
                                && !(1..=120).contains(&g)
                            {
                                return Err(bad(field("greeting_secs"), format!("{g} must be between 1 and 120")));
                            }
                            Behaviour::Voicemail { rings, greeting_secs: p.greeting_secs }
                        }
                        _ if p.rings.is_some() => {
                            return Err(bad(field("rings"), "only person and voicemail pick up after rings".into()));
                        }
                        PhoneKind::Busy => Behaviour::Busy,
                        PhoneKind::NoAnswer => Behaviour::NoAnswer,
                        _ => Behaviour::Fail,
                    }
                }
            };
            phones.insert(name, behaviour);
        }
        for l in &locations {
            phones.entry(l.name.clone()).or_default();
        }

        if raw.callers.is_empty() {
            return Err(bad("callers".into(), "at least one [[callers]] table is needed".into()));
        }
        let mut callers = Vec::new();
        let mut total: u64 = 0;
        for (i, c) in raw.callers.into_iter().enumerate() {
            let field = |f: &str| format!("callers[{i}].{f}");
            let (to, digits) = match (&c.location, c.to) {
                (Some(_), Some(_)) => return Err(bad(field("to"), "give `location` or `to`, not both".into())),
                (None, None) => {
                    return Err(bad(field("location"), "say which location (or number, `to`) to call".into()));
                }
                (None, Some(to)) => {
                    twilio::E164::parse(&to).map_err(|e| bad(field("to"), e.to_string()))?;
                    (to, c.digits)
                }
                (Some(name), None) => {
                    let loc = locations
                        .iter()
                        .find(|l| &l.name == name)
                        .ok_or_else(|| bad(field("location"), format!("no location named {name:?}")))?;
                    let number = loc.numbers[0].clone();
                    let shared = locations.iter().filter(|l| l.numbers.contains(&number)).count() > 1;
                    let digits = c.digits.or_else(|| if shared { loc.digit.clone() } else { None });
                    (number, digits)
                }
            };
            if let Some(d) = &digits
                && (d.is_empty() || !d.chars().all(|ch| ch.is_ascii_digit() || matches!(ch, '*' | '#' | ',')))
            {
                return Err(bad(
                    field("digits"),
                    format!("{d:?} must be keypad digits (0-9, * and #), a comma between menus"),
                ));
            }
            if let Some(from) = &c.from {
                twilio::E164::parse(from).map_err(|e| bad(field("from"), e.to_string()))?;
            }
            let patience_secs = c.patience_secs.unwrap_or(600);
            if !(1..=3600).contains(&patience_secs) {
                return Err(bad(field("patience_secs"), format!("{patience_secs} must be between 1 and 3600")));
            }
            let start_at = c.start_at.unwrap_or(0.0);
            if !(0.0..=3600.0).contains(&start_at) {
                return Err(bad(field("start_at"), format!("{start_at} must be between 0 and 3600 seconds")));
            }
            let count = c.count.unwrap_or(1);
            if !(1..=MAX_CALLS).contains(&count) {
                return Err(bad(field("count"), format!("{count} must be between 1 and {MAX_CALLS}")));
            }
            total += u64::from(count);
            let expect = c
                .expect
                .map(|e| {
                    Outcome::parse(&e).filter(|o| o.is_final()).ok_or_else(|| {
                        let names: Vec<_> = Outcome::ALL.iter().filter(|o| o.is_final()).map(|o| o.as_str()).collect();
                        bad(field("expect"), format!("{e:?} is not an outcome (one of: {})", names.join(", ")))
                    })
                })
                .transpose()?;
            callers.push(CallerGroup {
                location: c.location,
                from: c.from,
                to,
                digits,
                patience_secs,
                start_at_ms: (start_at * 1000.0).round() as u64,
                count,
                burst: c.burst,
                expect,
                expect_location: c.expect_location,
                expect_heard: c.expect_heard,
            });
        }
        if total > u64::from(MAX_CALLS) {
            return Err(bad("callers".into(), format!("{total} calls in all; at most {MAX_CALLS}")));
        }

        let faults = raw
            .faults
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let json = serde_json::to_value(f).map_err(|e| bad(format!("faults[{i}]"), e.to_string()))?;
                sandbox::faults::Rule::from_json(json).map_err(|e| bad(format!("faults[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Scenario {
            name: String::new(),
            description: raw.description,
            spare_numbers,
            server: raw.server,
            locations,
            phones,
            callers,
            faults,
            closes,
        })
    }

    /// How a run closes the scenario's closing location, with the first dial
    /// at wall time `first_dial` and `time_scale` virtual seconds per real one.
    pub fn closing_plan(&self, time_scale: f64, first_dial: Timestamp) -> Option<ClosingPlan> {
        let c = self.closes.as_ref()?;
        let lead_ms = (f64::from(c.in_secs) * 1000.0 / time_scale).round() as i64;
        let wall_ms = first_dial.as_millisecond() + lead_ms;
        // The business clock reads the start of the wall clock's minute at the closing time.
        let closes = Timestamp::from_millisecond(wall_ms.div_euclid(60_000) * 60_000).ok()?;
        let clock = Clock::offset_by_ms(closes.as_millisecond() - wall_ms);
        Some(ClosingPlan { location: c.location.clone(), clock, closes, wall_ms, lead_ms })
    }

    /// The locations as the server gets them: the closing location with a
    /// closure from the plan's closing time, for a day.
    pub fn locations_for(&self, plan: Option<&ClosingPlan>) -> Vec<LocationSpec> {
        let mut locations = self.locations.clone();
        let Some(plan) = plan else { return locations };
        for l in locations.iter_mut().filter(|l| l.name == plan.location) {
            let Ok(tz) = jiff::tz::TimeZone::get(&l.hours.time_zone) else { continue };
            let local = |t: Timestamp| tz.to_datetime(t).strftime("%Y-%m-%dT%H:%M").to_string();
            l.hours.closures.push(ClosureSpec {
                from: local(plan.closes),
                to: local(plan.closes + jiff::SignedDuration::from_hours(24)),
                reason: Some("the demo's closing time (closes_in_secs)".into()),
                message: None,
            });
        }
        locations
    }

    /// Sets how many callers each burst group (`burst = true`) has.
    pub fn scale_bursts(&mut self, calls: u32) -> Result<(), String> {
        if !(1..=MAX_CALLS).contains(&calls) {
            return Err(format!("--calls {calls}: must be between 1 and {MAX_CALLS}"));
        }
        let mut found = false;
        for g in self.callers.iter_mut().filter(|g| g.burst) {
            g.count = calls;
            found = true;
        }
        if !found {
            return Err(format!("--calls: scenario {} has no burst group (`burst = true`) to scale", self.name));
        }
        Ok(())
    }

    /// The Twilio numbers the business uses, each once.
    pub fn numbers(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.locations.iter().flat_map(|l| &l.numbers).collect();
        set.into_iter().cloned().collect()
    }

    /// Every call to place, in order; callers without `from` are numbered
    /// +1310555NNNN from 0100 up, skipping numbers a caller gave.
    pub fn plan(&self) -> Vec<PlannedCall> {
        let taken: BTreeSet<&str> = self.callers.iter().filter_map(|g| g.from.as_deref()).collect();
        let mut next_auto = 100u32;
        let mut auto = || loop {
            let n = format!("+1310555{next_auto:04}");
            next_auto += 1;
            if !taken.contains(n.as_str()) {
                return n;
            }
        };
        let mut out = Vec::new();
        for g in &self.callers {
            for _ in 0..g.count {
                let from = match &g.from {
                    Some(f) if g.count == 1 => f.clone(),
                    _ => auto(),
                };
                out.push(PlannedCall {
                    index: out.len() + 1,
                    from,
                    to: g.to.clone(),
                    digits: g.digits.clone(),
                    patience_secs: g.patience_secs,
                    start_at_ms: g.start_at_ms,
                    location: g.location.clone(),
                    expect: g.expect,
                    expect_location: g.expect_location.clone(),
                    expect_heard: g.expect_heard.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, "test.toml")
    }

    #[test]
    fn every_built_in_scenario_parses_and_expects_outcomes() {
        for (name, _) in BUILT_IN {
            let s = built_in(name).unwrap();
            let plan = s.plan();
            assert!(!plan.is_empty(), "{name}");
            if s.faults.is_empty() {
                assert!(plan.iter().all(|c| c.expect.is_some()), "{name}: every shipped caller states its expectation");
            } else {
                // Which callers a seeded share of faults hits depends on the
                // order of requests, so a faulted scenario's callers expect
                // only to end with an outcome, which the demo always checks.
                assert!(
                    plan.iter().all(|c| c.expect.is_none()),
                    "{name}: faulted callers expect no particular outcome"
                );
            }
        }
    }

    #[test]
    fn faults_are_read_and_checked_naming_the_rule() {
        let s = built_in("faults").unwrap();
        assert_eq!(s.faults.len(), 6);
        assert_eq!(s.faults[0].fault, sandbox::faults::Fault::Reset);
        assert_eq!(s.faults[0].path.as_deref(), Some("/2010-04-01/Accounts/*/Calls.json"));
        let base = "[[callers]]\nlocation = \"north\"\n";
        let err = |faults: &str| Scenario::parse(&format!("{base}{faults}"), "t.toml").unwrap_err().to_string();
        assert!(err("[[faults]]\non = \"rest\"\nfault = \"drop\"\n").starts_with("t.toml: faults[0]: "));
        let e = err(
            "[[faults]]\non = \"webhook\"\nfault = \"drop\"\n[[faults]]\non = \"rest\"\nfault = \"reset\"\nshare = 2.0\n",
        );
        assert!(e.contains("faults[1]") && e.contains("share"), "{e}");
        assert!(
            err("[[faults]]\non = \"rest\"\nfault = \"reset\"\npaths = \"/x\"\n").contains("unknown key \"paths\"")
        );
    }

    #[test]
    fn every_example_file_is_built_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.unwrap().path().file_stem().map(|s| s.to_string_lossy().into_owned()))
            .filter(|stem| stem != "README")
            .collect();
        files.sort();
        let mut names: Vec<String> = BUILT_IN.iter().map(|(n, _)| (*n).to_owned()).collect();
        names.sort();
        assert_eq!(files, names);
    }

    #[test]
    fn the_default_mix_leads_to_four_distinct_outcomes() {
        let s = built_in("mix").unwrap();
        let outcomes: BTreeSet<_> = s.plan().iter().filter_map(|c| c.expect).collect();
        for o in [Outcome::Connected, Outcome::LocationVoicemail, Outcome::LocationBusy, Outcome::CallerHungUp] {
            assert!(outcomes.contains(&o), "{o}");
        }
    }

    #[test]
    fn a_location_name_resolves_to_its_number_and_digit() {
        let s = parse("[[callers]]\nlocation = 'south'\n[[callers]]\nlocation = 'east'").unwrap();
        let plan = s.plan();
        assert_eq!((plan[0].to.as_str(), plan[0].digits.as_deref()), (MAIN_NUMBER, Some("2")));
        assert_eq!((plan[1].to.as_str(), plan[1].digits.as_deref()), ("+12025550144", None));
    }

    #[test]
    fn defaults_fill_in() {
        let s = parse("[[callers]]\nto = '+12025550199'").unwrap();
        assert_eq!(s.locations.len(), 5, "the example business");
        assert_eq!(s.phones["north"], Behaviour::default());
        let c = &s.plan()[0];
        assert_eq!((c.patience_secs, c.start_at_ms, c.expect), (600, 0, None));
        assert_eq!(c.from, "+13105550100");
    }

    #[test]
    fn bursts_expand_with_distinct_callers_and_scale() {
        let text = "[[callers]]\nlocation='east'\nfrom='+13105550100'\n\
                    [[callers]]\nlocation='east'\ncount=3\nburst=true\nstart_at=1.5\nexpect='connected'";
        let mut s = parse(text).unwrap();
        let plan = s.plan();
        assert_eq!(plan.len(), 4);
        let froms: BTreeSet<_> = plan.iter().map(|c| c.from.as_str()).collect();
        assert_eq!(froms.len(), 4, "{froms:?}");
        assert_eq!(plan[3].start_at_ms, 1500);
        assert_eq!(plan[3].index, 4);
        s.name = "t".into();
        s.scale_bursts(10).unwrap();
        assert_eq!(s.plan().len(), 11);
        assert!(s.scale_bursts(0).is_err());
        let mut no_burst = parse("[[callers]]\nlocation='east'").unwrap();
        assert!(no_burst.scale_bursts(5).unwrap_err().contains("burst"));
    }

    #[test]
    fn phones_map_to_behaviours() {
        let cases = [
            ("answer='person'\nrings=3\ntalk_secs=9", Behaviour::Person { rings: 3, talk_secs: 9, digits: None }),
            (
                "answer='person'\ndigits='9, 1'",
                Behaviour::Person { rings: 2, talk_secs: 30, digits: Some("9, 1".into()) },
            ),
            ("answer='voicemail'", Behaviour::Voicemail { rings: 2, greeting_secs: None }),
            ("answer='voicemail'\ngreeting_secs=3", Behaviour::Voicemail { rings: 2, greeting_secs: Some(3) }),
            ("answer='busy'", Behaviour::Busy),
            ("answer='no_answer'", Behaviour::NoAnswer),
            ("answer='fail'", Behaviour::Fail),
        ];
        for (phone, want) in cases {
            let s = parse(&format!("[phones.east]\n{phone}\n[[callers]]\nlocation='east'")).unwrap();
            assert_eq!(s.phones["east"], want, "{phone}");
        }
    }

    #[test]
    fn each_of_a_locations_phones_has_its_behaviour() {
        let s = built_in("phones").unwrap();
        assert_eq!(s.locations[0].phone_list(), ["+14155550180", "+14155550181"]);
        assert_eq!(s.phones["north"], Behaviour::Busy);
        assert_eq!(s.phones["north/2"], Behaviour::Person { rings: 2, talk_secs: 30, digits: None });
        assert_eq!(s.phones["south/3"], Behaviour::NoAnswer);
        let expect: Vec<_> = s.plan().iter().map(|c| c.expect).collect();
        assert_eq!(expect, [Some(Outcome::Connected), Some(Outcome::LocationNoAnswer)]);
    }

    #[test]
    fn own_locations_replace_the_example_business() {
        let text = r#"
[[locations]]
name = "a"
digit = "1"
numbers = ["+12025550150"]
phone = "+14155550150"
[[locations]]
name = "b"
digit = "2"
numbers = ["+12025550150"]
phone = "+14155550151"
open = "never"
[[callers]]
location = "b"
expect = "after_hours"
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.locations.len(), 2);
        assert_eq!(s.locations[1].hours, never_open());
        assert_eq!(s.numbers(), vec!["+12025550150".to_owned()]);
        assert_eq!(s.plan()[0].digits.as_deref(), Some("2"));
        assert_eq!(s.plan()[0].expect, Some(Outcome::AfterHours));
    }

    #[test]
    fn errors_name_the_field() {
        let loc = "[[locations]]\nname='a'\nnumbers=['+12025550150']\nphone='+14155550150'\n";
        let cases = [
            ("", "callers"),
            ("[[callers]]\nlocation='nowhere'", "callers[0].location"),
            ("[[callers]]", "callers[0].location"),
            ("[[callers]]\nlocation='east'\nto='+12025550144'", "callers[0].to"),
            ("[[callers]]\nto='12345'", "callers[0].to"),
            ("[[callers]]\nlocation='east'\nexpect='conected'", "callers[0].expect"),
            ("[[callers]]\nlocation='east'\nexpect='pending'", "callers[0].expect"),
            ("[[callers]]\nlocation='east'\ncount=0", "callers[0].count"),
            ("[[callers]]\nlocation='east'\npatience_secs=0", "callers[0].patience_secs"),
            ("[[callers]]\nlocation='east'\nstart_at=-1.0", "callers[0].start_at"),
            ("[[callers]]\nlocation='east'\ndigits='1a'", "callers[0].digits"),
            ("[[callers]]\nlocation='east'\nfrom='x'", "callers[0].from"),
            ("[[callers]]\nlocation='east'\ncolour='red'", "colour"),
            ("[phones.nowhere]\nanswer='busy'\n[[callers]]\nlocation='east'", "phones.nowhere"),
            (
                "[phones.\"east/2\"]\nanswer='busy'\n[[callers]]\nlocation='east'",
                "phones.east/2: \"east\" has 1 phone(s)",
            ),
            ("[phones.\"east/1\"]\nanswer='busy'\n[[callers]]\nlocation='east'", "phones.east/1"),
            ("[phones.east]\nanswer='busy'\nrings=3\n[[callers]]\nlocation='east'", "phones.east.rings"),
            ("[phones.east]\nanswer='busy'\ntalk_secs=3\n[[callers]]\nlocation='east'", "phones.east.talk_secs"),
            ("[phones.east]\nanswer='shout'\n[[callers]]\nlocation='east'", "answer"),
            ("[server]\nring_secs=3\n[[callers]]\nlocation='east'", "ring_secs"),
            (&format!("{loc}open='never'\nhours={{time_zone='UTC'}}\n[[callers]]\nlocation='a'"), "locations[0].hours"),
            (&format!("{}[[callers]]\nlocation='a'", loc.replace("+14155550150", "555")), "locations[0].phone"),
            (&format!("{loc}{loc}[[callers]]\nlocation='a'"), "locations.name"),
            ("[[callers]]\nlocation='east'\ncount=2000\n[[callers]]\nlocation='east'", "callers"),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("test.toml: "), "{e}");
            assert!(e.contains(field), "want {field:?} in: {e}");
        }
    }

    #[test]
    fn closes_in_secs_is_checked_naming_the_field() {
        let loc = |name: &str, n: u32, extra: &str| {
            format!("[[locations]]\nname='{name}'\nnumbers=['+1202555015{n}']\nphone='+1415555015{n}'\n{extra}\n")
        };
        let callers = "[[callers]]\nlocation='a'\n";
        let cases = [
            (loc("a", 0, "closes_in_secs=0"), "between 1 and 3600"),
            (loc("a", 0, "closes_in_secs=3601"), "between 1 and 3600"),
            (loc("a", 0, "closes_in_secs=10\nopen='never'"), "never open"),
            (loc("a", 0, "closes_in_secs=10\nhours={time_zone='UTC'}"), "not `hours`"),
            (loc("a", 0, "closes_in_secs=10") + &loc("b", 1, "closes_in_secs=20"), "a closes already"),
        ];
        for (text, message) in cases {
            let e = parse(&format!("{text}{callers}")).unwrap_err().to_string();
            assert!(e.contains("closes_in_secs: ") && e.contains(message), "want {message:?} in: {e}");
        }
        let closing = parse(&format!("{}{callers}", loc("a", 0, "closes_in_secs=10"))).unwrap();
        assert_eq!(closing.closes, Some(Closes { location: "a".into(), in_secs: 10 }));
        assert_eq!(built_in("mix").unwrap().closes, None);
    }

    #[test]
    fn a_closing_plan_closes_the_location_that_long_after_the_first_dial() {
        let s = built_in("closing").unwrap();
        let closes = s.closes.clone().unwrap();
        assert_eq!((closes.location.as_str(), closes.in_secs), ("north", 400));
        assert!(s.closing_plan(200.0, Timestamp::now()).is_some());
        assert!(built_in("mix").unwrap().closing_plan(200.0, Timestamp::now()).is_none());
        for (first_dial, time_scale) in
            [("2026-11-30T14:02:17.250Z", 200.0), ("2026-11-30T23:59:59Z", 100.0), ("2026-03-08T06:59:58Z", 1.0)]
        {
            let first_dial: Timestamp = first_dial.parse().unwrap();
            let plan = s.closing_plan(time_scale, first_dial).unwrap();
            let lead_ms = (400_000.0 / time_scale) as i64;
            assert_eq!((plan.lead_ms, plan.first_dial_ms()), (lead_ms, first_dial.as_millisecond()));
            assert_eq!(plan.wall_ms, first_dial.as_millisecond() + lead_ms);
            // The business clock reads the closing minute at the closing time, and is
            // within a minute behind the wall clock.
            assert_eq!(plan.closes.as_millisecond() % 60_000, 0);
            assert_eq!(plan.clock.wall_ms(plan.closes), plan.wall_ms);
            assert!((-59_999..=0).contains(&plan.clock.offset_ms()), "{plan:?}");
            // The server's north: open at the first dial until exactly that minute, closed then.
            let locations = s.locations_for(Some(&plan));
            let north = crate::domain::Location::from_spec(locations[0].clone()).unwrap();
            match north.schedule.status_at(plan.clock.business(first_dial)) {
                crate::hours::Status::Open { closes_at } => assert_eq!(closes_at.timestamp(), plan.closes),
                other => panic!("{other:?}"),
            }
            let at_wall = |ms: i64| plan.clock.business(Timestamp::from_millisecond(ms).unwrap());
            assert!(north.schedule.is_open(at_wall(plan.wall_ms - 1)));
            assert!(!north.schedule.is_open(at_wall(plan.wall_ms)));
            assert!(!north.schedule.is_open(at_wall(plan.wall_ms + 23 * 3_600_000)), "closed for a day");
        }
        // Without a plan, the locations are the scenario's own.
        assert_eq!(s.locations_for(None), s.locations);
    }

    #[test]
    fn spare_numbers_serve_no_location() {
        let s = parse("spare_numbers = ['+12025550199']\n[[callers]]\nto = '+12025550199'").unwrap();
        assert_eq!(s.spare_numbers, ["+12025550199"]);
        for (text, field) in [
            ("spare_numbers = ['+12025550143']\n[[callers]]\nlocation = 'east'", "spare_numbers[0]"),
            ("spare_numbers = ['nope']\n[[callers]]\nlocation = 'east'", "spare_numbers[0]"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn server_overrides_become_settings() {
        let s = parse(
            "[server]\nring_timeout_secs=12\nmax_queue_secs=60\nannounce_every_secs=30\n[[callers]]\nlocation='east'",
        )
        .unwrap();
        let toml = s.server.to_settings_toml();
        assert!(toml.contains("[dialing]\nring_timeout_secs = 12"), "{toml}");
        assert!(toml.contains("[ivr]\nmax_queue_secs = 60\nannounce_every_secs = 30"), "{toml}");
        assert_eq!(ServerOverrides::default().to_settings_toml(), "");
    }
}
