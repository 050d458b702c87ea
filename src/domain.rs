//! Domain types checked where data enters: locations, task attributes, outcomes.
//!
//! A `LocationSpec` is what a person writes (config file, import file, CLI
//! flags). `Location` is the checked form the rest of the program uses: its
//! phones are E.164 numbers that exist in their country's numbering plan, its
//! hours are a parsed `Schedule`. Nothing unchecked travels inward.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use twilio::E164;
use twilio::sid::CallSid;

use crate::hours::{HoursSpec, Schedule};

/// Why a location was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LocationError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> LocationError {
    LocationError { field: field.into(), message: message.into() }
}

/// A location as written in a config or import file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationSpec {
    /// A short identifier: lowercase letters, digits, `-` and `_`. It is what
    /// the workflow routes on, so it never changes once provisioned.
    pub name: String,
    /// What callers hear; defaults to the name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The menu digit, when a number serves several locations.
    #[serde(default)]
    pub digit: Option<String>,
    /// The Twilio numbers that serve this location.
    pub numbers: Vec<String>,
    /// The location's ordinary phone line. Empty when `phones` lists them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phone: String,
    /// Several phones, rung as `ring` says (in order by default): instead of
    /// `phone`, never together with it. 1 to [`MAX_PHONES`], no repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    /// How the phones are rung when there are several.
    #[serde(default, skip_serializing_if = "Ring::is_in_order")]
    pub ring: Ring,
    /// The number the outbound leg shows; defaults to the first Twilio number.
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Show the caller's own number to the location, using the inbound
    /// call's `CallToken` (Twilio refuses an unverified `From` otherwise).
    #[serde(default)]
    pub show_caller_number: bool,
    /// How many calls the location can take at once.
    #[serde(default = "one")]
    pub lines: u32,
    pub hours: HoursSpec,
    /// Have Twilio transcribe the location's voicemails; the text is kept
    /// and sent with the notifications.
    #[serde(default)]
    pub transcribe: bool,
    /// Who gets an email for each voicemail left for the location.
    #[serde(default)]
    pub notify_email: Vec<String>,
    /// Where a signed JSON notification of each voicemail is posted
    /// (`https://…`; `http://` only to loopback).
    #[serde(default)]
    pub notify_webhook: Option<String>,
    /// Screening: the location's leg hears who is calling and presses 1 to
    /// take the call; no key (or a hang-up) counts as not answered. Off when
    /// the key is missing, so existing configs keep their behaviour; new
    /// configs (the example, `locations add`) write `true`.
    #[serde(default)]
    pub screening: bool,
    /// How long the screening prompt waits for a key (default
    /// [`DEFAULT_SCREENING_TIMEOUT_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screening_timeout_secs: Option<u32>,
    /// Say the caller's name (Twilio's `CallerName`, when it has one) in the
    /// screening prompt, before the number.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub screening_caller_name: bool,
    /// Answering-machine detection on the location's leg. Default: on without
    /// screening (it is what keeps callers from the location's voicemail),
    /// off with screening (a machine never presses 1). Off needs screening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amd: Option<bool>,
    /// Announce a waiting caller's place and expected wait on entry and then
    /// every this many seconds; 0: never. Unset: `ivr.announce_every_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce_every_secs: Option<u32>,
    /// The hold music's URL (`https://…`). Unset: `ivr.hold_music_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_music: Option<String>,
    /// Said to a waiting caller in turn, one at a time: half-way between
    /// announcements, or every minute without them. One entry is a single
    /// message said again each time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comfort_messages: Vec<String>,
    /// Another location (by name) that takes this location's callers: on
    /// arrival when this one is closed or all its lines are busy, and after
    /// `overflow_after_secs` in the queue when that is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
    /// Seconds a caller waits for this location before TaskRouter offers the
    /// call to the overflow location instead (its workflow target timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow_after_secs: Option<u32>,
    /// The location's language (a tag of `ivr.languages`): callers of a
    /// number that serves only this location hear it first, and its
    /// screening prompt is said in it. Unset: the business's first language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The `<Say voice>` for prompts in the location's language. Unset: the
    /// language's voice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// The location's name and comfort messages in other languages, by tag.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translations: BTreeMap<String, LocationText>,
    /// Callback instead of waiting: a waiting caller may press 1 to hang up
    /// and keep their place; the location is screened first, then the caller
    /// is dialled back. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackSpec>,
    /// What a caller still waiting in the queue at closing time gets (with
    /// no location leg ringing or answered): voicemail (the default), a
    /// callback at the next opening (needs `callback`), or the overflow
    /// location's queue (needs `overflow`).
    #[serde(default, skip_serializing_if = "ClosingPolicy::is_voicemail")]
    pub closing_policy: ClosingPolicy,
}

/// A location's closing policy for callers still waiting at closing time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosingPolicy {
    /// The location's voicemail (`closed_while_waiting`).
    #[default]
    Voicemail,
    /// "We have closed for now; we will call you back when we open": the
    /// caller hangs up and keeps their place, as if they had pressed 1 for a
    /// callback; voicemail for a withheld number.
    Callback,
    /// "We have closed for now; we are transferring you to South Clinic":
    /// the caller leaves this location's queue for its `overflow` location's,
    /// when that one is open at closing time; else voicemail.
    Overflow,
}

impl ClosingPolicy {
    fn is_voicemail(&self) -> bool {
        *self == ClosingPolicy::Voicemail
    }
}

/// A location's callback policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackSpec {
    /// The offer is said from this many seconds in the queue on (a key
    /// press works at any time).
    #[serde(default = "default_offer_after")]
    pub offer_after_secs: u32,
    /// How many times the caller is called back before `callback_no_answer`.
    #[serde(default = "default_callback_tries")]
    pub tries: u32,
    /// What a callback still waiting when the location closes does. It never
    /// rings after closing either way.
    #[serde(default, skip_serializing_if = "AtClosing::is_next_opening")]
    pub at_closing: AtClosing,
}

impl Default for CallbackSpec {
    fn default() -> Self {
        CallbackSpec {
            offer_after_secs: default_offer_after(),
            tries: default_callback_tries(),
            at_closing: AtClosing::default(),
        }
    }
}

/// A callback's fate at closing time, when no location leg is in play.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtClosing {
    /// Its task is canceled and a new one, keeping the caller's place, is
    /// created when the location next opens (within [`crate::hours::HORIZON_DAYS`]).
    #[default]
    NextOpening,
    /// It ends as `callback_canceled`, listed for staff in `/api/calls`.
    Cancel,
    /// It ends as `callback_canceled`, and a callback request (whom to call,
    /// waiting since when) goes to the location's voicemail list, for staff
    /// to call back by hand.
    VoicemailList,
}

impl AtClosing {
    fn is_next_opening(&self) -> bool {
        *self == AtClosing::NextOpening
    }
}

fn default_offer_after() -> u32 {
    60
}

fn default_callback_tries() -> u32 {
    2
}

/// The callback side of a callback task's [`TaskAttributes`]: whom to call
/// back, since when they have waited, and which of the callback's tasks it
/// is (its round, from 1; 0 in a task written before rounds were), by which
/// a create whose answer was lost is looked up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAttributes {
    pub number: E164,
    #[serde(rename = "sinceMs")]
    pub since_ms: i64,
    #[serde(default)]
    pub round: u32,
}

/// What a location says in one more language.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comfort_messages: Vec<String>,
}

fn one() -> u32 {
    1
}

/// The most phones a location may have.
pub const MAX_PHONES: usize = 5;

/// How a location with several phones rings them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ring {
    /// One after the other: the next phone only once the one before ended
    /// without a person taking the call.
    #[default]
    InOrder,
    /// Every phone at once; the first person to take the call wins.
    AllAtOnce,
}

impl Ring {
    pub fn is_in_order(&self) -> bool {
        *self == Ring::InOrder
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Ring::InOrder => "in_order",
            Ring::AllAtOnce => "all_at_once",
        }
    }
}

/// The screening prompt's wait for a key unless configured.
pub const DEFAULT_SCREENING_TIMEOUT_SECS: u32 = 8;

/// How a location screens its calls, carried in the task's attributes to
/// the journey (see `journey::DialTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screening {
    #[serde(rename = "timeoutSecs")]
    pub timeout_secs: u32,
    /// Say the caller's name when Twilio gave one.
    #[serde(rename = "sayName", default)]
    pub say_name: bool,
}

impl LocationSpec {
    /// A location with what every one must have, and every option at its
    /// default (one line, no screening, no overflow, …); set others with
    /// struct update syntax.
    pub fn new(name: &str, numbers: &[&str], phone: &str, hours: HoursSpec) -> Self {
        LocationSpec {
            name: name.into(),
            display_name: None,
            digit: None,
            numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
            phone: phone.into(),
            phones: Vec::new(),
            ring: Ring::InOrder,
            caller_id: None,
            show_caller_number: false,
            lines: 1,
            hours,
            transcribe: false,
            notify_email: Vec::new(),
            notify_webhook: None,
            screening: false,
            screening_timeout_secs: None,
            screening_caller_name: false,
            amd: None,
            announce_every_secs: None,
            hold_music: None,
            comfort_messages: Vec::new(),
            overflow: None,
            overflow_after_secs: None,
            language: None,
            voice: None,
            translations: BTreeMap::new(),
            callback: None,
            closing_policy: ClosingPolicy::Voicemail,
        }
    }

    /// The location's screening, when on.
    pub fn screening(&self) -> Option<Screening> {
        self.screening.then(|| Screening {
            timeout_secs: self.screening_timeout_secs.unwrap_or(DEFAULT_SCREENING_TIMEOUT_SECS),
            say_name: self.screening_caller_name,
        })
    }

    /// The phones as written: `phones`, else `phone` (empty when neither is set).
    pub fn phone_list(&self) -> Vec<&str> {
        if self.phones.is_empty() && !self.phone.is_empty() {
            vec![self.phone.as_str()]
        } else {
            self.phones.iter().map(String::as_str).collect()
        }
    }

    /// Whether the location's leg is dialled with answering-machine detection.
    pub fn amd(&self) -> bool {
        self.amd.unwrap_or(!self.screening)
    }
}

/// Checks an E.164 number's shape and that its country's numbering plan
/// assigns it.
pub fn checked_phone(field: &str, raw: &str) -> Result<E164, LocationError> {
    let e164 = E164::parse(raw).map_err(|e| err(field, e.to_string()))?;
    let parsed = phonenumber::parse(None, e164.as_str())
        .map_err(|e| err(field, format!("{raw:?} is not a phone number: {e}")))?;
    if !phonenumber::is_valid(&parsed) {
        return Err(err(field, format!("{raw:?} is not a valid number in its country's numbering plan")));
    }
    Ok(e164)
}

/// A checked location.
#[derive(Debug, Clone)]
pub struct Location {
    pub name: String,
    pub display_name: String,
    pub digit: Option<char>,
    pub numbers: Vec<E164>,
    /// The first of `phones`.
    pub phone: E164,
    /// Every phone of the location, in the order they are rung (at least one).
    pub phones: Vec<E164>,
    pub ring: Ring,
    pub caller_id: E164,
    pub show_caller_number: bool,
    pub lines: u32,
    pub schedule: Schedule,
    /// The spec it was built from, kept for storage and export.
    pub spec: LocationSpec,
}

impl LocationSpec {
    /// Checks every field; see [`Location::from_spec`].
    pub fn validate(&self) -> Result<(), LocationError> {
        Location::from_spec(self.clone()).map(drop)
    }

    /// Checks every field except the numbering-plan lookup: each phone's
    /// E.164 shape, the name, digit, lines and hours. Cheap, so it runs where
    /// a config file is loaded; [`LocationSpec::validate`] (everything) runs
    /// where a location is stored, which is before any of its numbers is used.
    pub fn validate_shape(&self) -> Result<(), LocationError> {
        Location::build_checked(self.clone(), false).map(drop)
    }
}

impl Location {
    /// Checks every field, including that each phone number is assigned in
    /// its country's numbering plan.
    pub fn from_spec(spec: LocationSpec) -> Result<Self, LocationError> {
        Self::build_checked(spec, true)
    }

    /// Rebuilds a location that was checked when it was stored, without the
    /// numbering-plan lookup (which is slow on the first call).
    pub fn from_stored(spec: LocationSpec) -> Result<Self, LocationError> {
        Self::build_checked(spec, false)
    }

    fn build_checked(spec: LocationSpec, check_numbering: bool) -> Result<Self, LocationError> {
        let phone_check = |field: &str, raw: &str| {
            if check_numbering {
                checked_phone(field, raw)
            } else {
                E164::parse(raw).map_err(|e| err(field, e.to_string()))
            }
        };
        let name = spec.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(err("name", format!("{:?} must be 1-64 characters of a-z, 0-9, - and _", spec.name)));
        }
        let digit = match spec.digit.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) if d.len() == 1 && d.as_bytes()[0].is_ascii_digit() => d.chars().next(),
            Some(d) => return Err(err("digit", format!("{d:?} must be a single digit 0-9"))),
        };
        if spec.numbers.is_empty() {
            return Err(err("numbers", "at least one Twilio number must serve the location"));
        }
        let numbers = spec
            .numbers
            .iter()
            .enumerate()
            .map(|(i, n)| phone_check(&format!("numbers[{i}]"), n))
            .collect::<Result<Vec<_>, _>>()?;
        let phones = match (spec.phone.trim().is_empty(), spec.phones.is_empty()) {
            (false, false) => {
                return Err(err("phones", "set `phone` or `phones`, not both"));
            }
            (true, true) => return Err(err("phone", "a location needs a phone: `phone`, or `phones` for several")),
            (false, true) => vec![phone_check("phone", &spec.phone)?],
            (true, false) => {
                if spec.phones.len() > MAX_PHONES {
                    return Err(err("phones", format!("{} phones; at most {MAX_PHONES}", spec.phones.len())));
                }
                let mut checked: Vec<E164> = Vec::new();
                for (i, raw) in spec.phones.iter().enumerate() {
                    let p = phone_check(&format!("phones[{i}]"), raw)?;
                    if checked.contains(&p) {
                        return Err(err(format!("phones[{i}]"), format!("{p} is listed twice")));
                    }
                    checked.push(p);
                }
                checked
            }
        };
        let phone = phones[0].clone();
        let caller_id = match &spec.caller_id {
            Some(c) => phone_check("caller_id", c)?,
            None => numbers[0].clone(),
        };
        if !(1..=MAX_LINES).contains(&spec.lines) {
            return Err(err(
                "lines",
                format!(
                    "{} must be between 1 and {MAX_LINES} (TaskRouter holds at most {WORKER_CAPACITY_MAX} calls \
                     per worker; provision serves a location with up to {} workers)",
                    spec.lines,
                    MAX_LINES / WORKER_CAPACITY_MAX
                ),
            ));
        }
        let schedule = Schedule::from_spec(&spec.hours).map_err(|e| err("hours", e.to_string()))?;
        for (i, address) in spec.notify_email.iter().enumerate() {
            check_email(address).map_err(|m| err(format!("notify_email[{i}]"), m))?;
        }
        if let Some(url) = &spec.notify_webhook {
            check_webhook_url(url).map_err(|m| err("notify_webhook", m))?;
        }
        if let Some(t) = spec.screening_timeout_secs
            && !(3..=30).contains(&t)
        {
            return Err(err("screening_timeout_secs", format!("{t} must be between 3 and 30")));
        }
        if spec.amd == Some(false) && !spec.screening {
            return Err(err(
                "amd",
                "answering-machine detection may be off only with screening = true: without either, a voicemail greeting would be bridged to the caller",
            ));
        }
        if let Some(every) = spec.announce_every_secs {
            check_announce_every(every).map_err(|m| err("announce_every_secs", m))?;
        }
        if let Some(url) = &spec.hold_music {
            check_hold_music(url).map_err(|m| err("hold_music", m))?;
        }
        check_comfort("comfort_messages", &spec.comfort_messages)?;
        if let Some(tag) = &spec.language {
            crate::prompts::check_tag(tag).map_err(|m| err("language", m))?;
        }
        if let Some(voice) = &spec.voice {
            crate::prompts::check_voice(voice).map_err(|m| err("voice", m))?;
        }
        for (tag, text) in &spec.translations {
            crate::prompts::check_tag(tag).map_err(|m| err(format!("translations.{tag}"), m))?;
            check_comfort(&format!("translations.{tag}.comfort_messages"), &text.comfort_messages)?;
        }
        if let Some(cb) = spec.callback {
            if cb.offer_after_secs > 3600 {
                return Err(err(
                    "callback.offer_after_secs",
                    format!("{} must be at most 3600 seconds", cb.offer_after_secs),
                ));
            }
            if !(1..=5).contains(&cb.tries) {
                return Err(err("callback.tries", format!("{} must be between 1 and 5", cb.tries)));
            }
        }
        if spec.closing_policy == ClosingPolicy::Callback {
            match spec.callback {
                None => return Err(err("closing_policy", "\"callback\" needs `callback` set for the location")),
                Some(cb) if cb.at_closing != AtClosing::NextOpening => {
                    return Err(err(
                        "closing_policy",
                        "\"callback\" needs callback.at_closing = \"next_opening\": a callback made at closing time waits for the opening",
                    ));
                }
                Some(_) => {}
            }
        }
        if spec.closing_policy == ClosingPolicy::Overflow && spec.overflow.is_none() {
            return Err(err("closing_policy", "\"overflow\" needs `overflow`, the location to transfer to"));
        }
        match (&spec.overflow, spec.overflow_after_secs) {
            (Some(o), _) if o.trim() == name => {
                return Err(err("overflow", "a location cannot overflow to itself"));
            }
            (None, Some(_)) => return Err(err("overflow_after_secs", "needs `overflow`, the location to overflow to")),
            (_, Some(t)) if !(10..=3600).contains(&t) => {
                return Err(err("overflow_after_secs", format!("{t} must be between 10 and 3600 seconds")));
            }
            _ => {}
        }
        Ok(Location {
            name: name.to_owned(),
            display_name: spec.display_name.clone().filter(|d| !d.trim().is_empty()).unwrap_or_else(|| name.to_owned()),
            digit,
            numbers,
            phone,
            phones,
            ring: spec.ring,
            caller_id,
            show_caller_number: spec.show_caller_number,
            lines: spec.lines,
            schedule,
            spec,
        })
    }
}

/// TaskRouter's limit on one worker's capacity on one task channel: "Channel
/// Capacity per Worker", 50, in Twilio's TaskRouter resource limits (a
/// default that Twilio's support may raise per account). `provision` serves
/// a location's `lines` with as many workers as this needs.
pub const WORKER_CAPACITY_MAX: u32 = 50;

/// The most lines a location may have: ten workers of [`WORKER_CAPACITY_MAX`].
/// A location is one ordinary phone line (a hunt group at most); past this it
/// is a contact centre, and every worker costs `provision` a request to read
/// its channel.
pub const MAX_LINES: u32 = 10 * WORKER_CAPACITY_MAX;
fn check_comfort(field: &str, messages: &[String]) -> Result<(), LocationError> {
    if messages.len() > MAX_COMFORT_MESSAGES {
        return Err(err(field, format!("at most {MAX_COMFORT_MESSAGES} messages")));
    }
    for (i, m) in messages.iter().enumerate() {
        let n = m.trim().chars().count();
        if n == 0 || n > MAX_COMFORT_CHARS {
            return Err(err(format!("{field}[{i}]"), format!("must be 1 to {MAX_COMFORT_CHARS} characters")));
        }
    }
    Ok(())
}

impl Location {
    /// The location's name as said in `tag`: its translation, else its display name.
    pub fn display_name_in(&self, tag: &str) -> &str {
        self.spec
            .translations
            .get(tag)
            .and_then(|t| t.display_name.as_deref())
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .unwrap_or(&self.display_name)
    }

    /// The comfort messages in `tag`: its translation's when it has some,
    /// else the location's own.
    pub fn comfort_messages_in(&self, tag: &str) -> &[String] {
        match self.spec.translations.get(tag) {
            Some(t) if !t.comfort_messages.is_empty() => &t.comfort_messages,
            _ => &self.spec.comfort_messages,
        }
    }
}

/// How many comfort messages a location may have, and how long each may be.
pub const MAX_COMFORT_MESSAGES: usize = 20;
pub const MAX_COMFORT_CHARS: usize = 500;

/// An announcement interval: 0 (off), or 15 seconds to an hour.
pub fn check_announce_every(secs: u32) -> Result<(), String> {
    if secs == 0 || (15..=3600).contains(&secs) {
        Ok(())
    } else {
        Err(format!("{secs} must be 0 (off) or between 15 and 3600 seconds"))
    }
}

/// Hold music is fetched by Twilio: an `https://` (or `http://`) URL.
fn check_hold_music(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with(['/', ':']) && !url.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(format!("{url:?} must be an https:// URL Twilio can fetch")),
    }
}

/// A plain check of an email address's shape (`local@domain`, no spaces or
/// angle brackets); the SMTP server has the last word.
fn check_email(address: &str) -> Result<(), String> {
    let bad = || format!("{address:?} is not an email address");
    let (local, domain) = address.rsplit_once('@').ok_or_else(bad)?;
    let forbidden = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"');
    if local.is_empty()
        || domain.is_empty()
        || !domain.contains('.') && domain != "localhost"
        || address.chars().any(forbidden)
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(())
}

/// A notification webhook's URL: `https://`, or `http://` to a loopback
/// address (tests, a local relay).
fn check_webhook_url(url: &str) -> Result<(), String> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    let host_follows = |rest: &str| rest.is_empty() || rest.starts_with([':', '/']);
    if let Some(rest) = url.strip_prefix("https://") {
        if !rest.is_empty() && !rest.starts_with(['/', ':']) && !url.chars().any(char::is_whitespace) {
            return Ok(());
        }
    } else if loopback.iter().any(|p| url.strip_prefix(p).is_some_and(host_follows)) {
        return Ok(());
    }
    Err(format!("{url:?} must be an https:// URL (http:// only to 127.0.0.1, localhost or [::1])"))
}

/// Checks what no single location can: unique names, every `overflow`
/// naming one of them, and for every number that serves several locations,
/// a distinct digit for each.
pub fn check_unique(specs: &[LocationSpec]) -> Result<(), LocationError> {
    let mut names = BTreeSet::new();
    for s in specs {
        if !names.insert(s.name.trim()) {
            return Err(err("name", format!("{:?} is used by two locations", s.name)));
        }
    }
    for s in specs {
        if let Some(o) = &s.overflow
            && !names.contains(o.trim())
        {
            return Err(err("overflow", format!("location {:?} overflows to {o:?}, which does not exist", s.name)));
        }
    }
    let mut by_number: BTreeMap<String, Vec<&LocationSpec>> = BTreeMap::new();
    for s in specs {
        for n in &s.numbers {
            let key = E164::parse(n).map(|e| e.to_string()).unwrap_or_else(|_| n.clone());
            by_number.entry(key).or_default().push(s);
        }
    }
    for (number, locs) in by_number {
        if locs.len() < 2 {
            continue;
        }
        let mut digits = BTreeMap::new();
        for l in locs {
            let d = l.digit.as_deref().map(str::trim).filter(|d| !d.is_empty()).ok_or_else(|| {
                err("digit", format!("location {:?} shares {number} with others, so it needs a menu digit", l.name))
            })?;
            if let Some(other) = digits.insert(d.to_owned(), &l.name) {
                return Err(err("digit", format!("digit {d} on {number} is used by both {other:?} and {:?}", l.name)));
            }
        }
    }
    Ok(())
}

/// The JSON of the `<Task>` noun, as TaskRouter hands it back in
/// `TaskAttributes`. Field names are the ones the Node version's Studio flow
/// and functions used, so existing workflows keep routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAttributes {
    pub location: String,
    #[serde(rename = "practicePhone")]
    pub practice_phone: E164,
    /// Every phone of the location, in order, when it has more than one
    /// (`practicePhone` is the first).
    #[serde(rename = "practicePhones", default, skip_serializing_if = "Vec::is_empty")]
    pub practice_phones: Vec<E164>,
    /// `all_at_once` when those phones ring together (absent: in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<Ring>,
    /// The number the outbound leg shows.
    #[serde(rename = "callerID")]
    pub caller_id: E164,
    /// The caller's own number, as Twilio gave it (may be "anonymous").
    #[serde(default)]
    pub caller: Option<String>,
    /// Present when the location shows the caller's number.
    #[serde(rename = "callToken", default, skip_serializing_if = "Option::is_none")]
    pub call_token: Option<String>,
    /// Added by Twilio to tasks created by `<Enqueue>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<CallSid>,
    /// The caller's name from Twilio's `CallerName`, kept only when the
    /// location says it in its screening prompt.
    #[serde(rename = "callerName", default, skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<String>,
    /// The location screens its calls (absent: it does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screening: Option<Screening>,
    /// Whether the location's leg is dialled with answering-machine
    /// detection (absent: it is, as before screening existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amd: Option<bool>,
    /// The location's overflow location, for the reservations its worker
    /// gets once the workflow moves the task there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<OverflowAttributes>,
    /// A callback's task (created by us, not by `<Enqueue>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackAttributes>,
    /// The location that closed while the caller waited in its queue and
    /// transferred them here (its closing policy `overflow`).
    #[serde(rename = "transferredFrom", default, skip_serializing_if = "Option::is_none")]
    pub transferred_from: Option<String>,
}

/// The overflow location's side of [`TaskAttributes`]: where a reservation
/// of its worker dials, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowAttributes {
    pub location: String,
    #[serde(rename = "practicePhone")]
    pub practice_phone: E164,
    #[serde(rename = "practicePhones", default, skip_serializing_if = "Vec::is_empty")]
    pub practice_phones: Vec<E164>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<Ring>,
    #[serde(rename = "callerID")]
    pub caller_id: E164,
    #[serde(rename = "callToken", default, skip_serializing_if = "Option::is_none")]
    pub call_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screening: Option<Screening>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amd: Option<bool>,
}

/// How a caller's call ended. Every call reaches one of these; `Pending`
/// only while it is still under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still under way.
    Pending,
    /// A person at the location answered and talked to the caller.
    Connected,
    /// The location's line was busy; the caller was offered voicemail.
    LocationBusy,
    /// The location did not answer in time; the caller was offered voicemail.
    LocationNoAnswer,
    /// An answering machine answered at the location; the caller was offered voicemail.
    LocationVoicemail,
    /// The outbound call could not be placed or failed.
    DialFailed,
    /// The caller hung up before being connected.
    CallerHungUp,
    /// The location was closed; the caller was offered voicemail.
    AfterHours,
    /// The dialled number serves no location.
    NotInService,
    /// The caller waited longer than the queue allows.
    QueueTimeout,
    /// Twilio took the call but the server never heard of it (it was down or
    /// unreachable): the caller heard Twilio's application error or the
    /// number's fallback. Recorded by the reconciler, so an operator can
    /// count the callers an outage cost.
    Missed,
    /// The caller made no valid menu choice in the attempts allowed, and the
    /// menu's policy (`ivr.on_no_choice`) sent them to the business's
    /// voicemail or said goodbye.
    NoChoice,
    /// The location closed while the caller was waiting for it, with no leg
    /// of theirs ringing or answered: the caller was offered voicemail.
    ClosedWhileWaiting,
    /// The caller chose to be called back; the location accepted and the
    /// caller answered.
    CallbackConnected,
    /// The caller chose to be called back and did not answer in the tries
    /// the location allows.
    CallbackNoAnswer,
    /// The caller chose to be called back, and the location closed (or the
    /// callback's task ended) before anyone could call them.
    CallbackCanceled,
}

impl Outcome {
    pub const ALL: [Outcome; 16] = [
        Outcome::Pending,
        Outcome::Connected,
        Outcome::LocationBusy,
        Outcome::LocationNoAnswer,
        Outcome::LocationVoicemail,
        Outcome::DialFailed,
        Outcome::CallerHungUp,
        Outcome::AfterHours,
        Outcome::NotInService,
        Outcome::QueueTimeout,
        Outcome::Missed,
        Outcome::NoChoice,
        Outcome::ClosedWhileWaiting,
        Outcome::CallbackConnected,
        Outcome::CallbackNoAnswer,
        Outcome::CallbackCanceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Connected => "connected",
            Outcome::LocationBusy => "location_busy",
            Outcome::LocationNoAnswer => "location_no_answer",
            Outcome::LocationVoicemail => "location_voicemail",
            Outcome::DialFailed => "dial_failed",
            Outcome::CallerHungUp => "caller_hung_up",
            Outcome::AfterHours => "after_hours",
            Outcome::NotInService => "not_in_service",
            Outcome::QueueTimeout => "queue_timeout",
            Outcome::Missed => "missed",
            Outcome::NoChoice => "no_choice",
            Outcome::ClosedWhileWaiting => "closed_while_waiting",
            Outcome::CallbackConnected => "callback_connected",
            Outcome::CallbackNoAnswer => "callback_no_answer",
            Outcome::CallbackCanceled => "callback_canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Final outcomes are never overwritten by a later, late event.
    pub fn is_final(self) -> bool {
        self != Outcome::Pending
    }

    /// Why the caller is being sent to voicemail, in words for the caller.
    pub fn caller_message(self, location: &str) -> String {
        match self {
            Outcome::LocationBusy => format!("Sorry, {location} is on another call."),
            Outcome::LocationNoAnswer | Outcome::LocationVoicemail => {
                format!("Sorry, nobody at {location} could take your call.")
            }
            Outcome::QueueTimeout => format!("Sorry, {location} could not take your call in time."),
            Outcome::AfterHours => format!("{location} is closed right now."),
            Outcome::ClosedWhileWaiting => format!("Sorry, {location} has closed for now."),
            _ => format!("Sorry, we could not reach {location}."),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(name: &str, digit: Option<&str>, number: &str) -> LocationSpec {
        LocationSpec {
            digit: digit.map(Into::into),
            ..LocationSpec::new(
                name,
                &[number],
                "+14155550123",
                HoursSpec { time_zone: "America/New_York".into(), ..HoursSpec::default() },
            )
        }
    }

    #[test]
    fn what_a_waiting_caller_hears_is_checked() {
        let mut s = spec("north", None, "+12025550143");
        s.announce_every_secs = Some(60);
        s.hold_music = Some("https://music.example.com/calm.mp3".into());
        s.comfort_messages = vec!["Your call is important to us.".into()];
        assert!(s.validate_shape().is_ok());
        let fails = |f: fn(&mut LocationSpec), field: &str| {
            let mut bad = s.clone();
            f(&mut bad);
            let e = bad.validate_shape().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        };
        fails(|s| s.announce_every_secs = Some(5), "announce_every_secs");
        fails(|s| s.hold_music = Some("ftp://music.example.com/a.mp3".into()), "hold_music");
        fails(|s| s.hold_music = Some("https:// spaced".into()), "hold_music");
        fails(|s| s.comfort_messages = vec!["  ".into()], "comfort_messages[0]");
        fails(|s| s.comfort_messages = vec!["x".into(); 21], "comfort_messages");
        let mut off = s.clone();
        off.announce_every_secs = Some(0);
        assert!(off.validate_shape().is_ok(), "0 turns announcements off");
    }

    #[test]
    fn notification_recipients_are_checked() {
        let mut s = spec("north", None, "+12025550143");
        s.notify_email = vec!["front-desk@example.com".into(), "ops@localhost".into()];
        s.notify_webhook = Some("https://hooks.example.com/voicemail".into());
        Location::from_spec(s.clone()).unwrap();
        s.notify_webhook = Some("http://127.0.0.1:9000/hook".into());
        Location::from_spec(s.clone()).unwrap();
        for bad in ["http://example.com/hook", "ftp://x", "https://", "http://127.0.0.1.evil.com/"] {
            s.notify_webhook = Some(bad.into());
            assert_eq!(Location::from_spec(s.clone()).unwrap_err().field, "notify_webhook", "{bad}");
        }
        s.notify_webhook = None;
        for bad in ["nobody", "a b@example.com", "@example.com", "x@", "<x@example.com>", "x@example"] {
            s.notify_email = vec!["ok@example.com".into(), bad.into()];
            assert_eq!(Location::from_spec(s.clone()).unwrap_err().field, "notify_email[1]", "{bad}");
        }
    }

    #[test]
    fn voicemail_fields_default_when_absent() {
        let toml = r#"
            name = "north"
            numbers = ["+12025550143"]
            phone = "+14155550123"
            hours = { time_zone = "America/New_York" }
        "#;
        let s: LocationSpec = toml::from_str(toml).unwrap();
        assert!(!s.transcribe);
        assert!(s.notify_email.is_empty());
        assert_eq!(s.notify_webhook, None);
    }

    #[test]
    fn valid_location_checks_out() {
        let loc = Location::from_spec(spec("north", Some("1"), "+12025550143")).unwrap();
        assert_eq!(loc.caller_id.as_str(), "+12025550143");
        assert_eq!(loc.display_name, "north");
    }

    #[test]
    fn errors_name_the_field() {
        let mut bad_phone = spec("north", None, "+12025550143");
        bad_phone.phone = "555-1234".into();
        let mut bad_zone = spec("north", None, "+12025550143");
        bad_zone.hours.time_zone = "Mars/Olympus".into();
        let mut bad_digit = spec("north", Some("12"), "+12025550143");
        bad_digit.lines = 1;
        let cases = [
            (spec("North Clinic", None, "+12025550143"), "name"),
            (bad_phone, "phone"),
            (bad_zone, "hours"),
            (bad_digit, "digit"),
            (spec("north", None, "+999"), "numbers[0]"),
        ];
        for (s, field) in cases {
            let e = Location::from_spec(s).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn several_phones_are_checked_in_order() {
        let with = |phone: &str, phones: &[&str]| {
            let mut s = spec("north", None, "+12025550143");
            s.phone = phone.into();
            s.phones = phones.iter().map(|p| (*p).to_owned()).collect();
            Location::from_spec(s)
        };
        let two = with("", &["+14155550101", "+14155550102"]).unwrap();
        let listed: Vec<&str> = two.phones.iter().map(E164::as_str).collect();
        assert_eq!(listed, ["+14155550101", "+14155550102"]);
        assert_eq!(two.phone.as_str(), "+14155550101", "`phone` is the first");
        assert_eq!(with("+14155550101", &[]).unwrap().phones.len(), 1, "the old form is one phone");
        let refused = |phone: &str, phones: &[&str], field: &str, says: &str| {
            let e = with(phone, phones).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.message.contains(says), "{e}");
        };
        refused("+14155550101", &["+14155550102"], "phones", "not both");
        refused("", &[], "phone", "needs a phone");
        refused("", &["+14155550101", "+14155550102", "+14155550101"], "phones[2]", "listed twice");
        refused("", &["+14155550101", "555"], "phones[1]", "");
        let six: Vec<String> = (1..=6).map(|i| format!("+1415555010{i}")).collect();
        let six: Vec<&str> = six.iter().map(String::as_str).collect();
        refused("", &six, "phones", "at most 5");
        assert!(with("", &six[..5]).is_ok());
    }

    #[test]
    fn phones_and_ring_read_from_toml_and_write_back_the_same() {
        let toml = r#"
            name = "north"
            numbers = ["+12025550143"]
            phones = ["+14155550101", "+14155550102"]
            ring = "in_order"
            hours = { time_zone = "America/New_York" }
        "#;
        let s: LocationSpec = toml::from_str(toml).unwrap();
        assert_eq!(s.phone_list(), ["+14155550101", "+14155550102"]);
        assert_eq!(s.ring, Ring::InOrder);
        let back = toml::to_string(&s).unwrap();
        assert!(back.contains("phones") && !back.contains("phone =") && !back.contains("ring"), "{back}");
        assert_eq!(toml::from_str::<LocationSpec>(&back).unwrap(), s);
        let bad = toml.replace("in_order", "round_robin");
        assert!(toml::from_str::<LocationSpec>(&bad).unwrap_err().to_string().contains("ring"));
    }

    #[test]
    fn lines_are_held_to_what_provision_can_serve() {
        let with = |lines: u32| {
            let mut s = spec("north", None, "+12025550143");
            s.lines = lines;
            s.validate_shape()
        };
        assert!(with(1).is_ok());
        assert!(with(WORKER_CAPACITY_MAX + 1).is_ok(), "more than one worker holds is served by several");
        assert!(with(MAX_LINES).is_ok());
        for bad in [0, MAX_LINES + 1] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.field, "lines");
            assert_eq!(
                e.message,
                format!(
                    "{bad} must be between 1 and 500 (TaskRouter holds at most 50 calls per worker; \
                     provision serves a location with up to 10 workers)"
                )
            );
        }
    }

    #[test]
    fn shape_check_leaves_only_the_numbering_plan_to_validate() {
        // The right shape, but area code 555 is assigned to no one.
        let mut unassigned = spec("north", None, "+12025550143");
        unassigned.phone = "+15555550123".into();
        assert_eq!(unassigned.validate_shape(), Ok(()));
        let e = unassigned.validate().unwrap_err();
        assert_eq!(e.field, "phone", "{e}");
        assert!(e.message.contains("numbering plan"), "{e}");
        // Everything else is still refused by the shape check.
        let mut bad_shape = spec("north", None, "+12025550143");
        bad_shape.caller_id = Some("555-1234".into());
        assert_eq!(bad_shape.validate_shape().unwrap_err().field, "caller_id");
        let mut bad_zone = spec("north", None, "+12025550143");
        bad_zone.hours.time_zone = "Mars/Olympus".into();
        assert_eq!(bad_zone.validate_shape().unwrap_err().field, "hours");
    }

    #[test]
    fn shared_number_needs_distinct_digits() {
        let a = spec("a", Some("1"), "+12025550143");
        let b = spec("b", Some("1"), "+12025550143");
        let e = check_unique(&[a.clone(), b]).unwrap_err();
        assert!(e.to_string().contains("digit 1"), "{e}");
        let c = spec("c", None, "+12025550143");
        assert!(check_unique(&[a.clone(), c]).is_err());
        let d = spec("d", Some("2"), "+12025550143");
        assert!(check_unique(&[a.clone(), d]).is_ok());
        assert!(check_unique(&[a.clone(), a]).unwrap_err().to_string().contains("used by two"));
    }

    #[test]
    fn an_overflow_names_another_existing_location() {
        let north = spec("north", Some("1"), "+12025550143");
        let south = spec("south", Some("2"), "+12025550143");
        let to_south = LocationSpec { overflow: Some("south".into()), ..north.clone() };
        assert!(to_south.validate_shape().is_ok());
        assert!(check_unique(&[to_south.clone(), south.clone()]).is_ok());
        let e = check_unique(std::slice::from_ref(&to_south)).unwrap_err();
        assert_eq!(e.field, "overflow", "{e}");
        assert!(e.message.contains("\"south\", which does not exist"), "{e}");
        let to_self = LocationSpec { overflow: Some("north".into()), ..north.clone() };
        assert_eq!(to_self.validate_shape().unwrap_err().field, "overflow");
        let after = |secs| LocationSpec { overflow_after_secs: Some(secs), ..to_south.clone() };
        assert!(after(10).validate_shape().is_ok() && after(3600).validate_shape().is_ok());
        assert_eq!(after(9).validate_shape().unwrap_err().field, "overflow_after_secs");
        let alone = LocationSpec { overflow_after_secs: Some(60), ..north };
        assert_eq!(alone.validate_shape().unwrap_err().field, "overflow_after_secs");
    }

    #[test]
    fn screening_is_off_without_the_key_and_checked_with_it() {
        // A config written before screening existed: unchanged behaviour, AMD on.
        let old = spec("north", None, "+12025550143");
        assert_eq!((old.screening(), old.amd()), (None, true));
        let on = LocationSpec { screening: true, ..old.clone() };
        assert_eq!(on.screening(), Some(Screening { timeout_secs: DEFAULT_SCREENING_TIMEOUT_SECS, say_name: false }));
        assert!(!on.amd(), "screening turns AMD off by default");
        assert!(LocationSpec { amd: Some(true), ..on.clone() }.amd());
        let short = LocationSpec { screening_timeout_secs: Some(2), ..on.clone() };
        assert_eq!(short.validate_shape().unwrap_err().field, "screening_timeout_secs");
        let unprotected = LocationSpec { amd: Some(false), ..old.clone() };
        assert_eq!(unprotected.validate_shape().unwrap_err().field, "amd");
        assert!(LocationSpec { amd: Some(false), ..on }.validate_shape().is_ok());
        // Written back, a spec without screening keeps its old shape.
        let toml = toml::to_string(&old).unwrap();
        assert!(!toml.contains("amd") && !toml.contains("screening_"), "{toml}");
    }

    #[test]
    fn task_attributes_use_the_node_names() {
        let t = TaskAttributes {
            location: "north".into(),
            practice_phone: E164::parse("+14155550123").unwrap(),
            practice_phones: Vec::new(),
            ring: None,
            caller_id: E164::parse("+12025550143").unwrap(),
            caller: Some("+13105550199".into()),
            call_token: None,
            call_sid: None,
            caller_name: None,
            screening: None,
            amd: None,
            overflow: None,
            callback: None,
            transferred_from: None,
        };
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["practicePhone"], "+14155550123");
        assert_eq!(json["callerID"], "+12025550143");
        assert!(json.get("callToken").is_none());
    }

    #[test]
    fn a_callback_policy_is_checked() {
        let north = spec("north", None, "+12025550143");
        let with = |cb: CallbackSpec| LocationSpec { callback: Some(cb), ..north.clone() };
        assert!(with(CallbackSpec::default()).validate_shape().is_ok());
        let e = with(CallbackSpec { tries: 0, ..CallbackSpec::default() }).validate_shape().unwrap_err();
        assert_eq!(e.field, "callback.tries", "{e}");
        let e = with(CallbackSpec { offer_after_secs: 3601, ..CallbackSpec::default() }).validate_shape().unwrap_err();
        assert_eq!(e.field, "callback.offer_after_secs", "{e}");
        let parsed: LocationSpec = toml::from_str(
            r#"name = "north"
numbers = ["+12025550143"]
phone = "+14155550123"
hours = { time_zone = "America/New_York" }
callback = { offer_after_secs = 30 }"#,
        )
        .unwrap();
        assert_eq!(parsed.callback, Some(CallbackSpec { offer_after_secs: 30, ..CallbackSpec::default() }));
        assert_eq!(parsed.callback.unwrap().at_closing, AtClosing::NextOpening, "the default");
        // A closing policy of callback needs a callback that waits for the opening.
        let closing = |cb: Option<CallbackSpec>| {
            LocationSpec { closing_policy: ClosingPolicy::Callback, callback: cb, ..north.clone() }.validate_shape()
        };
        assert!(closing(Some(CallbackSpec::default())).is_ok());
        assert_eq!(closing(None).unwrap_err().field, "closing_policy");
        let cancel = CallbackSpec { at_closing: AtClosing::Cancel, ..CallbackSpec::default() };
        assert!(closing(Some(cancel)).unwrap_err().message.contains("next_opening"));
        assert_eq!(north.closing_policy, ClosingPolicy::Voicemail, "the default");
        let cancel: CallbackSpec = toml::from_str(r#"at_closing = "cancel""#).unwrap();
        assert_eq!(cancel.at_closing, AtClosing::Cancel);
        let listed: CallbackSpec = toml::from_str(r#"at_closing = "voicemail_list""#).unwrap();
        assert_eq!(listed.at_closing, AtClosing::VoicemailList);
        let e = toml::from_str::<CallbackSpec>(r#"at_closing = "never""#).unwrap_err().to_string();
        assert!(e.contains("next_opening") && e.contains("voicemail_list"), "the choices are named: {e}");
        // Written back, the default stays unwritten.
        assert!(!toml::to_string(&CallbackSpec::default()).unwrap().contains("at_closing"));
    }

    #[test]
    fn outcomes_round_trip_through_text() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}
