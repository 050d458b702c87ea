//! The caller's experience as pure functions: which TwiML to return, given
//! the settings, the locations and the time. No IO happens here.

use jiff::Timestamp;
use twilio::params::percent_encode;
use twilio::twiml::{
    Dial, DialNoun, Enqueue, Gather, Method, Number, Pause, Play, Prompt, Queue, Record, Redirect, Response, Task, Verb,
};

use crate::config::{NoChoicePolicy, Settings};
use crate::domain::{Location, Outcome, OverflowAttributes, TaskAttributes};
use crate::hours::ClosedReason;
use crate::prompts::{Language, Languages, Prompt as P, Speaker};

/// Builds absolute URLs on the public base with percent-encoded query values,
/// so a `+` in an E.164 number arrives as `+`, not as a space.
#[derive(Debug, Clone)]
pub struct Urls<'a> {
    pub base: &'a str,
}

impl Urls<'_> {
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut out = format!("{}{}", self.base, path);
        for (i, (k, v)) in query.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&percent_encode(k));
            out.push('=');
            out.push_str(&percent_encode(v));
        }
        out
    }
}

/// What the caller chose at the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// A location by its index in the list.
    Location(usize),
    /// Ask again; `attempt` is the number of the next attempt.
    Retry { attempt: u32 },
    /// The attempts are used up, and the policy says voicemail.
    Voicemail,
    /// The attempts are used up, and the policy says goodbye.
    Goodbye,
}

/// Interprets menu digits. Missing or invalid input repeats the menu until
/// `max_attempts` is used up; then `on_no_choice` decides, so that no caller
/// is left at a menu forever, nor sent to a location they did not choose
/// unless the business said so. A policy location that this number's menu
/// does not offer falls back to voicemail.
pub fn choose(
    locations: &[Location],
    digits: Option<&str>,
    attempt: u32,
    max_attempts: u32,
    on_no_choice: &NoChoicePolicy,
) -> Choice {
    let pressed = digits.map(str::trim).and_then(|d| d.chars().next());
    if let Some(i) = pressed.and_then(|d| locations.iter().position(|l| l.digit == Some(d))) {
        return Choice::Location(i);
    }
    if attempt + 1 < max_attempts {
        return Choice::Retry { attempt: attempt + 1 };
    }
    match on_no_choice {
        NoChoicePolicy::Voicemail => Choice::Voicemail,
        NoChoicePolicy::Goodbye => Choice::Goodbye,
        NoChoicePolicy::Location(name) => {
            locations.iter().position(|l| &l.name == name).map_or(Choice::Voicemail, Choice::Location)
        }
    }
}

/// The language a menu key switches the caller to: a language's key that is
/// not the digit of a location on this number (a location's digit wins).
pub fn language_key<'a>(
    languages: &'a Languages,
    locations: &[Location],
    digits: Option<&str>,
) -> Option<&'a Language> {
    let pressed = digits.map(str::trim).and_then(|d| d.chars().next())?;
    if locations.iter().any(|l| l.digit == Some(pressed)) {
        return None;
    }
    languages.by_key(pressed)
}

/// The `lang` query parameter that carries the caller's language through
/// their later webhooks; none when the business speaks one language (the
/// URLs stay as they were before languages).
pub fn lang_param<'a>(settings: &Settings, sp: &Speaker<'a>) -> Option<(&'static str, &'a str)> {
    settings.ivr.languages.offers_choice().then_some(("lang", sp.lang.tag.as_str()))
}

/// Who speaks `lang` for `location`: the location's voice in its own
/// language (its `language`, else the business's first), else the language's.
pub fn speaker<'a>(settings: &'a Settings, lang: &'a Language, location: Option<&'a Location>) -> Speaker<'a> {
    let default = settings.ivr.languages.default_language().tag.as_str();
    match location {
        Some(l) => Speaker::new(lang, Some(l.spec.language.as_deref().unwrap_or(default)), l.spec.voice.as_deref()),
        None => Speaker::new(lang, None, None),
    }
}

/// The business's voicemail for a caller who made no menu choice.
pub fn no_choice_voicemail(settings: &Settings, urls: &Urls, sp: &Speaker) -> Response {
    voicemail(settings, urls, None, &sp.text(P::NoChoice, &[]), sp)
}

/// The goodbye for a caller who made no menu choice.
pub fn no_choice_goodbye(sp: &Speaker) -> Response {
    Response::new().verb(Verb::Say(sp.say(P::NoChoiceGoodbye, &[]))).verb(Verb::Hangup)
}

/// The other languages' offers ("Para español, oprima 9."), each in its own
/// language and voice.
fn language_offers(settings: &Settings, sp: &Speaker) -> Vec<Prompt> {
    let languages = &settings.ivr.languages;
    languages
        .all()
        .iter()
        .filter(|l| l.tag != sp.lang.tag)
        .filter_map(|l| {
            let key = l.key?.to_string();
            Some(Prompt::Say(Speaker::new(l, None, None).say(P::LanguageOffer, &[("digit", &key)])))
        })
        .collect()
}

/// The menu for a number that serves several locations, in the caller's
/// language, with the other languages offered at the end.
pub fn menu(settings: &Settings, urls: &Urls, locations: &[Location], attempt: u32, sp: &Speaker) -> Response {
    let mut prompts = Vec::new();
    if attempt == 0 {
        prompts.push(Prompt::Say(sp.say(P::Welcome, &[("business", &sp.lang.business_name)])));
    } else {
        prompts.push(Prompt::Say(sp.say(P::MenuRetry, &[])));
    }
    for l in locations {
        if let Some(d) = l.digit {
            let item = [("location", l.display_name_in(&sp.lang.tag)), ("digit", &d.to_string())];
            prompts.push(Prompt::Say(sp.say(P::MenuItem, &item)));
        }
    }
    prompts.extend(language_offers(settings, sp));
    let attempt = attempt.to_string();
    let mut query = vec![("attempt", attempt.as_str())];
    query.extend(lang_param(settings, sp));
    menu_gather(settings, urls.url("/menu", &query), prompts)
}

/// One key, said `prompts` first, posted to `action`; with no key, the same
/// `action` without `Digits` (counted as an attempt).
fn menu_gather(settings: &Settings, action: String, prompts: Vec<Prompt>) -> Response {
    Response::new()
        .verb(Verb::Gather(Gather {
            action: Some(action.clone()),
            method: Some(Method::Post),
            num_digits: Some(1),
            timeout: Some(settings.ivr.menu_timeout_secs),
            input: Some("dtmf".into()),
            prompts,
            ..Gather::default()
        }))
        // Reached only when the caller pressed nothing: counts as an attempt.
        .verb(Verb::Redirect(Redirect { url: action, method: Some(Method::Post) }))
}

/// The greeting of a number that serves one location when the business
/// speaks several languages: the location's welcome and the other
/// languages' offers, waiting `menu_timeout_secs` for a key; the `/menu`
/// action then sends the caller on to the location, in the language chosen.
pub fn language_gate(settings: &Settings, urls: &Urls, location: &Location, sp: &Speaker) -> Response {
    let mut prompts =
        vec![Prompt::Say(sp.say(P::WelcomeLocation, &[("location", location.display_name_in(&sp.lang.tag))]))];
    prompts.extend(language_offers(settings, sp));
    menu_gather(settings, urls.url("/menu", &[("attempt", "0"), ("lang", &sp.lang.tag), ("greeted", "1")]), prompts)
}

/// The caller, as the inbound webhook described them.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    pub number: &'a str,
    pub call_token: Option<&'a str>,
    /// Twilio's `CallerName`, when it looked one up.
    pub name: Option<&'a str>,
}

/// What [`route`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    Enqueued,
    Closed,
    /// Enqueued for the overflow location, named, on arrival: the chosen one
    /// was closed or had every line busy.
    Overflowed {
        to: String,
    },
}

/// The chosen location's overflow location, as the caller's arrival finds it.
#[derive(Debug, Clone, Copy)]
pub struct Overflow<'a> {
    pub location: &'a Location,
    /// Every line of the chosen location is in use, and the overflow
    /// location has one free.
    pub busy: bool,
    /// The overflow location's own overflow location: a caller sent on to
    /// the overflow location carries it in the task, since the workflow
    /// moves that task on after the overflow location's `overflow_after_secs`.
    pub then: Option<&'a Location>,
}

/// Sends the caller to a chosen location: enqueue when open, voicemail when
/// closed. With an overflow location that is open, a caller who finds the
/// chosen one closed or busy is told so and enqueued there instead; one who
/// is enqueued here carries the overflow location in the task, for the
/// workflow's `overflow_after_secs` target.
#[allow(clippy::too_many_arguments)]
pub fn route(
    settings: &Settings,
    urls: &Urls,
    workflow_sid: &str,
    location: &Location,
    overflow: Option<Overflow<'_>>,
    caller: &Caller,
    now: Timestamp,
    greet: bool,
    sp: &Speaker,
) -> (Response, Routed) {
    let tag = sp.lang.tag.as_str();
    let closed = location.schedule.closed_at(now);
    if let Some(o) = overflow.filter(|o| o.location.schedule.closed_at(now).is_none()) {
        let here = location.display_name_in(tag);
        let why = match &closed {
            Some(reason) => Some(closed_message(location, reason, sp)),
            None if o.busy => Some(sp.text(P::AllLinesBusy, &[("location", here)])),
            None => None,
        };
        if let Some(why) = why {
            let resp = greeting(location, greet, sp);
            let there = o.location.display_name_in(tag);
            let notice = format!("{why} {}", sp.text(P::Transferring, &[("location", there)]));
            let resp = enqueue(
                settings,
                urls,
                workflow_sid,
                o.location,
                // Not back to the location the caller chose (closed or busy), nor to itself.
                Side::Arrival(o.then.filter(|t| t.name != o.location.name && t.name != location.name)),
                caller,
                resp.verb(Verb::Say(sp.say_text(notice))),
                sp,
            );
            return (resp, Routed::Overflowed { to: o.location.name.clone() });
        }
    }
    if let Some(reason) = closed {
        let welcome = sp.text(P::Welcome, &[("business", &sp.lang.business_name)]);
        let msg = format!("{welcome} {}", closed_message(location, &reason, sp));
        return (voicemail(settings, urls, Some(location), &msg, sp), Routed::Closed);
    }
    let resp = greeting(location, greet, sp);
    let resp =
        enqueue(settings, urls, workflow_sid, location, Side::Arrival(overflow.map(|o| o.location)), caller, resp, sp);
    (resp, Routed::Enqueued)
}

/// "Thank you for calling North Clinic." when `greet`, else nothing yet.
fn greeting(location: &Location, greet: bool, sp: &Speaker) -> Response {
    let resp = Response::new();
    if !greet {
        return resp;
    }
    resp.verb(Verb::Say(sp.say(P::WelcomeLocation, &[("location", location.display_name_in(&sp.lang.tag))])))
}

/// A location's phones for the task's attributes, when it has more than one
/// (else `practicePhone` says it all, as before).
fn more_phones(location: &Location) -> Vec<twilio::E164> {
    if location.phones.len() > 1 { location.phones.clone() } else { Vec::new() }
}

/// `all_at_once` for a location whose several phones ring together.
fn all_at_once(location: &Location) -> Option<crate::domain::Ring> {
    (location.phones.len() > 1 && location.ring == crate::domain::Ring::AllAtOnce).then_some(location.ring)
}

/// A caller still waiting at `from`'s closing time moves to `to`'s queue
/// (the closing policy `overflow`): "Sorry, North Clinic has closed for now.
/// We are transferring you to South Clinic.", then `<Enqueue>` there with a
/// task `transferredFrom` the closed location, which the caller's journey
/// adopts. The caller's `CallToken` came with the first webhook only, so the
/// new task's leg shows the location's own caller ID.
pub fn transfer_at_closing(
    settings: &Settings,
    urls: &Urls,
    workflow_sid: &str,
    t: ClosingTransfer<'_>,
    caller: &Caller,
    sp: &Speaker,
) -> Response {
    let tag = sp.lang.tag.as_str();
    let closed = sp.text(P::ClosedWhileWaiting, &[("location", t.from.display_name_in(tag))]);
    let notice = format!("{closed} {}", sp.text(P::Transferring, &[("location", t.to.display_name_in(tag))]));
    let resp = Response::new().verb(Verb::Say(sp.say_text(notice)));
    // Not back to the location that just closed, nor to itself.
    let then = t.then.filter(|o| o.name != t.to.name && o.name != t.from.name);
    let side = Side::Transfer { from: &t.from.name, then };
    enqueue(settings, urls, workflow_sid, t.to, side, caller, resp, sp)
}

/// A transfer at closing time: from the closed location to its overflow
/// location, and that one's own overflow location, if any.
#[derive(Debug, Clone, Copy)]
pub struct ClosingTransfer<'a> {
    pub from: &'a Location,
    pub to: &'a Location,
    pub then: Option<&'a Location>,
}

/// How a caller comes to a location's queue: on arrival, or transferred at
/// another location's closing time; each with the location's own overflow
/// location, for the workflow's `overflow_after_secs` target.
#[derive(Debug, Clone, Copy)]
enum Side<'a> {
    Arrival(Option<&'a Location>),
    Transfer { from: &'a str, then: Option<&'a Location> },
}

/// "Please hold", and `<Enqueue>` with the task for `location` (and its
/// overflow location's side of the dial).
#[allow(clippy::too_many_arguments)]
fn enqueue(
    settings: &Settings,
    urls: &Urls,
    workflow_sid: &str,
    location: &Location,
    side: Side<'_>,
    caller: &Caller,
    resp: Response,
    sp: &Speaker,
) -> Response {
    let (overflow, transferred_from) = match side {
        Side::Arrival(o) => (o, None),
        Side::Transfer { from, then } => (then, Some(from.to_owned())),
    };
    let show_caller = |l: &Location| l.show_caller_number && caller.call_token.is_some();
    // Twilio only accepts the caller's own number as From together with the
    // inbound call's CallToken.
    let caller_id = |l: &Location| match (show_caller(l), twilio::E164::parse(caller.number)) {
        (true, Ok(n)) => n,
        _ => l.caller_id.clone(),
    };
    let says_name = |l: &Location| l.spec.screening().is_some_and(|s| s.say_name);
    let attrs = TaskAttributes {
        location: location.name.clone(),
        practice_phone: location.phone.clone(),
        practice_phones: more_phones(location),
        ring: all_at_once(location),
        caller_id: caller_id(location),
        caller: Some(caller.number.to_owned()),
        call_token: if show_caller(location) { caller.call_token.map(str::to_owned) } else { None },
        call_sid: None,
        caller_name: match says_name(location) || overflow.is_some_and(says_name) {
            true => caller.name.map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned),
            false => None,
        },
        screening: location.spec.screening(),
        amd: (!location.spec.amd()).then_some(false),
        callback: None,
        overflow: overflow.map(|o| OverflowAttributes {
            location: o.name.clone(),
            practice_phone: o.phone.clone(),
            practice_phones: more_phones(o),
            ring: all_at_once(o),
            caller_id: caller_id(o),
            call_token: if show_caller(o) { caller.call_token.map(str::to_owned) } else { None },
            screening: o.spec.screening(),
            amd: (!o.spec.amd()).then_some(false),
        }),
        transferred_from,
    };
    let attributes = serde_json::to_string(&attrs).expect("task attributes serialise");
    let mut q = vec![("location", location.name.as_str())];
    q.extend(lang_param(settings, sp));
    resp.verb(Verb::Say(sp.say(P::PleaseHold, &[]))).verb(Verb::Enqueue(Enqueue {
        workflow_sid: Some(workflow_sid.to_owned()),
        wait_url: Some(urls.url("/hold", &q)),
        wait_url_method: Some(Method::Post),
        action: Some(urls.url("/enqueue-action", &q)),
        method: Some(Method::Post),
        task: Some(Task { attributes, ..Task::default() }),
        ..Enqueue::default()
    }))
}

/// What a caller hears about why `location` is closed: the holiday's or closure's own
/// `message` when it has one; else the holiday's name ("… is closed today for Christmas Day.");
/// else "… is closed right now.". A closure's `reason` is never spoken: it is a note for staff.
/// A holiday's or closure's own message and name are said as written, in any language.
pub fn closed_message(location: &Location, reason: &ClosedReason, sp: &Speaker) -> String {
    let display = location.display_name_in(&sp.lang.tag);
    match reason {
        ClosedReason::Holiday { message: Some(m), .. } | ClosedReason::Closure { message: Some(m), .. }
            if !m.trim().is_empty() =>
        {
            m.trim().to_owned()
        }
        ClosedReason::Holiday { name: Some(name), .. } if !name.trim().is_empty() => {
            sp.text(P::ClosedHoliday, &[("location", display), ("holiday", name.trim())])
        }
        _ => sp.text(P::ClosedNow, &[("location", display)]),
    }
}

/// A message, then a recording, then goodbye. The recording is transcribed
/// when the location asks for it (`transcribe`), the text posted to
/// `/voicemail-transcription`.
pub fn voicemail(
    settings: &Settings,
    urls: &Urls,
    location: Option<&Location>,
    message: &str,
    sp: &Speaker,
) -> Response {
    let name = location.map_or("", |l| l.name.as_str());
    let transcribe = location.is_some_and(|l| l.spec.transcribe);
    let lang: Vec<(&str, &str)> = lang_param(settings, sp).into_iter().collect();
    Response::new()
        .verb(Verb::Say(sp.say_text(message)))
        .verb(Verb::Say(sp.say(P::VoicemailOffer, &[])))
        .verb(Verb::Record(Record {
            action: Some(urls.url("/voicemail-complete", &[[("location", name)].as_slice(), &lang].concat())),
            method: Some(Method::Post),
            max_length: Some(settings.ivr.voicemail_max_secs),
            timeout: Some(5),
            play_beep: Some(true),
            finish_on_key: Some("#".into()),
            transcribe: transcribe.then_some(true),
            transcribe_callback: transcribe.then(|| urls.url("/voicemail-transcription", &[("location", name)])),
            ..Record::default()
        }))
        .verb(Verb::Say(sp.say(P::NoMessage, &[])))
        .verb(Verb::Hangup)
}

/// The voicemail offer after a failed attempt to reach a location.
pub fn fallback(settings: &Settings, urls: &Urls, location: &Location, reason: Outcome, sp: &Speaker) -> Response {
    voicemail(settings, urls, Some(location), &fallback_message(location, reason, sp), sp)
}

/// Why the caller is offered voicemail instead ("Sorry, … is on another call.").
pub fn fallback_message(location: &Location, reason: Outcome, sp: &Speaker) -> String {
    let prompt = match reason {
        Outcome::LocationBusy => P::LocationBusy,
        Outcome::LocationNoAnswer | Outcome::LocationVoicemail => P::LocationNoAnswer,
        Outcome::QueueTimeout => P::QueueTimeout,
        Outcome::AfterHours => P::ClosedNow,
        Outcome::ClosedWhileWaiting => P::ClosedWhileWaiting,
        _ => P::CouldNotReach,
    };
    sp.text(prompt, &[("location", location.display_name_in(&sp.lang.tag))])
}

/// What the caller hears while waiting in the queue (the `waitUrl`): the
/// words the journey chose to say, if any (an announcement or a comfort
/// message), then the location's hold music once; Twilio then asks the
/// `waitUrl` again.
pub fn hold(settings: &Settings, location: Option<&Location>, words: Option<&str>, sp: &Speaker) -> Response {
    let mut resp = Response::new();
    if let Some(w) = words {
        resp = resp.verb(Verb::Say(sp.say_text(w)));
    }
    resp.verb(Verb::Play(Play { url: hold_music(settings, location).to_owned(), loop_count: Some(1) }))
        .verb(Verb::Pause(Pause { length: Some(1) }))
}

/// The hold document of a caller who may choose a callback: the same words
/// and music inside a one-key `<Gather>` whose action is `action`
/// (`/callback-choice`), so a key at any time reaches it; with `offer`, the
/// offer is said after the words.
pub fn hold_with_callback(
    settings: &Settings,
    location: Option<&Location>,
    words: Option<&str>,
    offer: bool,
    action: &str,
    sp: &Speaker,
) -> Response {
    let mut prompts = Vec::new();
    if let Some(w) = words {
        prompts.push(Prompt::Say(sp.say_text(w)));
    }
    if offer {
        prompts.push(Prompt::Say(sp.say(P::CallbackOffer, &[])));
    }
    prompts.push(Prompt::Play(Play { url: hold_music(settings, location).to_owned(), loop_count: Some(1) }));
    Response::new().verb(Verb::Gather(Gather {
        action: Some(action.to_owned()),
        method: Some(Method::Post),
        num_digits: Some(1),
        timeout: Some(1),
        input: Some("dtmf".into()),
        prompts,
        ..Gather::default()
    }))
}

/// Said to a caller who chose a callback, as they leave the queue; with
/// `closed_location`, to one the closing policy gave a callback at the next
/// opening of that location (its display name).
pub fn callback_bye(number: &str, closed_location: Option<&str>, sp: &Speaker) -> Response {
    let plus = sp.lang.text(P::NumberPlus, &[]);
    let spoken = spoken_number_in(number, &plus).unwrap_or_else(|| number.to_owned());
    let words = match closed_location {
        Some(location) => sp.say(P::CallbackClosedBye, &[("location", location), ("number", &spoken)]),
        None => sp.say(P::CallbackBye, &[("number", &spoken)]),
    };
    Response::new().verb(Verb::Say(words)).verb(Verb::Hangup)
}

/// A callback's location leg, once it pressed 1: it dials the caller from
/// `from` (a number of the account), and `action` (`/callback-dialed`) hears
/// how that went.
pub fn call_back(number: &str, from: &str, action: &str) -> Response {
    Response::new().verb(Verb::Dial(Dial {
        action: Some(action.to_owned()),
        method: Some(Method::Post),
        caller_id: Some(from.to_owned()),
        nouns: vec![DialNoun::Number(Number { number: number.to_owned(), ..Number::default() })],
        ..Dial::default()
    }))
}

/// What a callback's screening prompt says: "Callback for North Clinic:
/// 3 1 0, 5 5 5, 0 1 0 0, waiting since 10:32. Press 1 to call them now."
/// `since` is the caller's enqueue time in the location's time zone.
pub fn callback_screen_text(
    display_name: &str,
    caller: Option<&str>,
    since: &str,
    prompt: u32,
    lang: &Language,
) -> String {
    let plus = lang.text(P::NumberPlus, &[]);
    let from = caller.and_then(|c| spoken_number_in(c, &plus)).unwrap_or_else(|| lang.text(P::UnknownNumber, &[]));
    let text = lang.text(P::CallbackScreen, &[("location", display_name), ("from", &from), ("since", since)]);
    if prompt > 1 { format!("{} {text}", lang.text(P::ScreenWrongKey, &[])) } else { text }
}

/// The callback task's attributes: the queue's attributes for `location`
/// (so the same worker takes it and the same screening applies, always on),
/// with whom to call back, since when and in which round, and the caller's
/// leg's SID (so its events find the caller's journey, and
/// [`callback_task_query`] finds the task).
pub fn callback_attributes(
    location: &Location,
    call: &str,
    number: &twilio::E164,
    since_ms: i64,
    round: u32,
) -> TaskAttributes {
    TaskAttributes {
        location: location.name.clone(),
        practice_phone: location.phone.clone(),
        practice_phones: more_phones(location),
        ring: all_at_once(location),
        caller_id: location.caller_id.clone(),
        caller: Some(number.as_str().to_owned()),
        call_token: None,
        call_sid: call.parse().ok(),
        caller_name: None,
        // The location always hears who it is calling back, and presses 1.
        screening: Some(location.spec.screening().unwrap_or(crate::domain::Screening {
            timeout_secs: crate::domain::DEFAULT_SCREENING_TIMEOUT_SECS,
            say_name: false,
        })),
        amd: Some(false),
        overflow: None,
        callback: Some(crate::domain::CallbackAttributes { number: number.clone(), since_ms, round }),
        transferred_from: None,
    }
}

/// The TaskRouter expression (`EvaluateTaskAttributes`) that finds the task
/// of `call`'s callback `round` made by [`callback_attributes`], whatever its
/// status. `None` for a SID that is not only letters and digits: TaskRouter's
/// strings have no escapes, so nothing else may go between the quotes (a
/// checked [`CallSid`](twilio::sid::CallSid) always is).
pub fn callback_task_query(call: &str, round: u32) -> Option<String> {
    let plain = !call.is_empty() && call.chars().all(|c| c.is_ascii_alphanumeric());
    plain.then(|| format!(r#"call_sid == "{call}" AND callback.round == {round}"#))
}

/// The location's hold music, else the business's.
pub fn hold_music<'a>(settings: &'a Settings, location: Option<&'a Location>) -> &'a str {
    location.and_then(|l| l.spec.hold_music.as_deref()).unwrap_or(&settings.ivr.hold_music_url)
}

/// How often a waiting caller at `location` hears their place (0: never):
/// the location's setting, else the business's.
pub fn announce_every_secs(settings: &Settings, location: Option<&Location>) -> u32 {
    location.and_then(|l| l.spec.announce_every_secs).unwrap_or(settings.ivr.announce_every_secs)
}

/// Bridges the answered outbound leg to the caller waiting on the reservation.
pub fn dial_queue(reservation_sid: &str, caller_hears: Option<String>) -> Response {
    Response::new().verb(Verb::Dial(Dial {
        nouns: vec![DialNoun::Queue(Queue {
            reservation_sid: Some(reservation_sid.to_owned()),
            url: caller_hears,
            ..Queue::default()
        })],
        ..Dial::default()
    }))
}

/// What a waiting caller hears just before the overflow location takes the call.
pub fn transfer_notice(sp: &Speaker, to: Option<&Location>) -> Response {
    let tag = sp.lang.tag.as_str();
    let name = to.map_or_else(|| sp.lang.business_name.clone(), |l| l.display_name_in(tag).to_owned());
    Response::new().verb(Verb::Say(sp.say(P::Transferring, &[("location", &name)])))
}

/// The screening prompt on the location's leg: who is calling for which
/// location, then one key. `action` gets `Digits`; with no key in
/// `timeout_secs` the `Gather` falls through to a redirect to the same
/// action without `Digits`, which the journey reads as not answered.
pub fn screen(action: &str, text: &str, timeout_secs: u32, sp: &Speaker) -> Response {
    Response::new()
        .verb(Verb::Gather(Gather {
            action: Some(action.to_owned()),
            method: Some(Method::Post),
            num_digits: Some(1),
            timeout: Some(timeout_secs),
            input: Some("dtmf".into()),
            prompts: vec![Prompt::Say(sp.say_text(text))],
            ..Gather::default()
        }))
        .verb(Verb::Redirect(Redirect { url: action.to_owned(), method: Some(Method::Post) }))
}

/// What the screening prompt says, its `prompt`th time: "Call for North
/// Clinic from 3 1 0, 5 5 5, 0 1 0 0. Press 1 to accept, or hang up." The
/// caller's name (already checked by the location's option) comes before
/// the number when there is one. In `lang`, the location's language.
pub fn screen_text(
    display_name: &str,
    caller: Option<&str>,
    caller_name: Option<&str>,
    prompt: u32,
    lang: &Language,
) -> String {
    let plus = lang.text(P::NumberPlus, &[]);
    let number = caller.and_then(|c| spoken_number_in(c, &plus));
    let name = caller_name.map(spoken_name).filter(|n| !n.is_empty());
    let from = match (name, number) {
        (Some(n), Some(d)) => format!("{n}, {d}"),
        (Some(n), None) => n,
        (None, Some(d)) => d,
        (None, None) => lang.text(P::UnknownNumber, &[]),
    };
    let text = lang.text(P::Screen, &[("location", display_name), ("from", &from)]);
    if prompt > 1 { format!("{} {text}", lang.text(P::ScreenWrongKey, &[])) } else { text }
}

/// A phone number as text-to-speech should read it: digit by digit, in
/// groups ("3 1 0, 5 5 5, 0 1 0 0" for +13105550100; other countries in
/// threes after "plus"). `None` for a withheld or malformed number.
pub fn spoken_number(raw: &str) -> Option<String> {
    spoken_number_in(raw, "plus")
}

/// As [`spoken_number`], with the word for "plus" in the prompt's language.
pub fn spoken_number_in(raw: &str, plus: &str) -> Option<String> {
    let e164 = twilio::E164::parse(raw.trim()).ok()?;
    let digits: Vec<char> = e164.as_str().trim_start_matches('+').chars().collect();
    let spell = |g: &[char]| g.iter().map(char::to_string).collect::<Vec<_>>().join(" ");
    if digits.len() == 11 && digits[0] == '1' {
        let d = &digits[1..];
        return Some([&d[..3], &d[3..6], &d[6..]].map(spell).join(", "));
    }
    let mut groups: Vec<String> = digits.chunks(3).map(spell).collect();
    // A last group of one digit joins the one before.
    if groups.len() > 1 && groups.last().is_some_and(|g| g.len() == 1) {
        let last = groups.pop().unwrap_or_default();
        if let Some(prev) = groups.last_mut() {
            prev.push(' ');
            prev.push_str(&last);
        }
    }
    Some(format!("{plus} {}", groups.join(", ")))
}

/// A caller name from Twilio's `CallerName` as it may be said: letters,
/// digits, spaces and a few marks, at most 40 characters.
fn spoken_name(raw: &str) -> String {
    let kept: String =
        raw.chars().filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '\'' | '.')).take(40).collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the location hears when it answers for a caller who is no longer there.
pub fn caller_gone(sp: &Speaker) -> Response {
    Response::new().verb(Verb::Say(sp.say(P::CallerGone, &[]))).verb(Verb::Hangup)
}

/// Said to a callback's location leg when the caller did not answer.
pub fn callback_missed(sp: &Speaker) -> Response {
    Response::new().verb(Verb::Say(sp.say(P::CallbackMissed, &[]))).verb(Verb::Hangup)
}

pub fn hangup() -> Response {
    Response::new().verb(Verb::Hangup)
}

pub fn goodbye(sp: &Speaker) -> Response {
    Response::new().verb(Verb::Say(sp.say(P::Goodbye, &[]))).verb(Verb::Hangup)
}

pub fn not_in_service(sp: &Speaker) -> Response {
    Response::new().verb(Verb::Say(sp.say(P::NotInService, &[]))).verb(Verb::Hangup)
}

pub fn empty() -> Response {
    Response::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LocationSpec;
    use crate::hours::{HoursSpec, WeeklySpec};

    /// Every character XML treats specially, and a few that a form decoder would mangle.
    const NASTY: &str = r#"Smith & Sons <"Clinic"> 'O'Brien' +1 ]]> &amp;"#;

    fn settings() -> Settings {
        let text = format!(
            "public_url = \"https://router.example.com/base\"\n[twilio]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
             auth_token = \"t\"\n[ivr]\nbusiness_name = {NASTY:?}\nhold_music_url = \"https://m.example.com/a.mp3?x=1&y=<2>\"\n"
        );
        Settings::from_toml(&text, |_| None).unwrap()
    }

    fn location(name: &str, digit: &str, open: bool) -> Location {
        let all: &[&str] = if open { &["00:00-24:00"] } else { &[] };
        Location::from_spec(LocationSpec {
            display_name: Some(format!("{NASTY} {name}")),
            digit: Some(digit.into()),
            ..LocationSpec::new(
                name,
                &["+12025550143"],
                "+14155550123",
                HoursSpec {
                    time_zone: "America/New_York".into(),
                    weekly: WeeklySpec::every_day(all),
                    ..HoursSpec::default()
                },
            )
        })
        .unwrap()
    }

    fn en(s: &Settings) -> Speaker<'_> {
        speaker(s, s.ivr.languages.default_language(), None)
    }

    fn english() -> &'static Language {
        static EN: std::sync::OnceLock<Language> = std::sync::OnceLock::new();
        EN.get_or_init(|| Language::english(None, "us".into()))
    }

    fn says(r: &Response) -> Vec<String> {
        let mut out = Vec::new();
        for v in &r.verbs {
            match v {
                Verb::Say(s) => out.push(s.text.clone()),
                Verb::Gather(g) => out.extend(g.prompts.iter().filter_map(|p| match p {
                    Prompt::Say(s) => Some(s.text.clone()),
                    _ => None,
                })),
                _ => {}
            }
        }
        out
    }

    /// Renders, parses back with the parser the sandbox uses, and checks the two agree.
    fn round_trip(r: &Response) -> Response {
        let xml = r.to_xml();
        let back = Response::parse(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
        assert_eq!(&back, r, "{xml}");
        back
    }

    /// The task `<Enqueue>` carries in a routed response, if any.
    fn task_of(r: &Response) -> Option<TaskAttributes> {
        r.verbs.iter().find_map(|v| match v {
            Verb::Enqueue(e) => serde_json::from_str(&e.task.as_ref()?.attributes).ok(),
            _ => None,
        })
    }

    #[test]
    fn a_closed_or_busy_location_sends_its_callers_to_the_open_overflow_location() {
        let s = settings();
        let urls = Urls { base: &s.public_url };
        let caller = Caller { number: "+13105550199", call_token: None, name: None };
        let now = Timestamp::now();
        let wf = "WW0123456789abcdef0123456789abcdef";
        let (open_north, closed_north) = (location("north", "1", true), location("north", "1", false));
        let (south, closed_south) = (location("south", "2", true), location("south", "2", false));
        fn over(location: &Location, busy: bool) -> Overflow<'_> {
            Overflow { location, busy, then: None }
        }

        // Closed here, open there: told why, and enqueued there (with no further overflow).
        let (r, routed) = route(&s, &urls, wf, &closed_north, Some(over(&south, false)), &caller, now, true, &en(&s));
        assert_eq!(routed, Routed::Overflowed { to: "south".into() });
        let r = round_trip(&r);
        let heard = says(&r).join(" ");
        assert!(heard.contains("north is closed right now. We are transferring you to"), "{heard}");
        let task = task_of(&r).unwrap();
        assert_eq!((task.location.as_str(), task.overflow), ("south", None));

        // South's own overflow location goes with the task: the workflow moves it on after
        // south's `overflow_after_secs`, and that location's worker dials its own phone.
        let east = location("east", "3", true);
        let onward = Overflow { then: Some(&east), ..over(&south, false) };
        let (r, _) = route(&s, &urls, wf, &closed_north, Some(onward), &caller, now, true, &en(&s));
        let o = task_of(&r).unwrap().overflow.expect("south's overflow location");
        assert_eq!((o.location.as_str(), o.practice_phone.as_str()), ("east", east.phone.as_str()));
        // Never back to north, which the caller found closed.
        let back = Overflow { then: Some(&closed_north), ..over(&south, false) };
        let (r, _) = route(&s, &urls, wf, &closed_north, Some(back), &caller, now, true, &en(&s));
        assert!(task_of(&r).unwrap().overflow.is_none());

        // Every line busy here: the same, with the reason.
        let (r, routed) = route(&s, &urls, wf, &open_north, Some(over(&south, true)), &caller, now, false, &en(&s));
        assert_eq!(routed, Routed::Overflowed { to: "south".into() });
        assert!(says(&r)[0].starts_with(&format!("All of {NASTY} north's lines are busy.")), "{:?}", says(&r));

        // Open and free here: enqueued here, the task carrying the overflow side of the dial.
        let (r, routed) = route(&s, &urls, wf, &open_north, Some(over(&south, false)), &caller, now, false, &en(&s));
        assert_eq!(routed, Routed::Enqueued);
        let task = task_of(&r).unwrap();
        assert_eq!(task.location, "north");
        let o = task.overflow.unwrap();
        assert_eq!((o.location.as_str(), o.practice_phone.as_str()), ("south", south.phone.as_str()));

        // Closed there too: no transfer; a closed location still offers voicemail.
        let (r, routed) =
            route(&s, &urls, wf, &closed_north, Some(over(&closed_south, false)), &caller, now, true, &en(&s));
        assert_eq!(routed, Routed::Closed);
        assert!(task_of(&r).is_none());
        let (_, routed) =
            route(&s, &urls, wf, &open_north, Some(over(&closed_south, true)), &caller, now, true, &en(&s));
        assert_eq!(routed, Routed::Enqueued, "busy here, but the overflow location is closed: wait here");
    }

    #[test]
    fn a_transfer_at_closing_says_why_and_enqueues_at_the_overflow_location_naming_where_from() {
        let s = settings();
        let urls = Urls { base: &s.public_url };
        let caller = Caller { number: "+13105550199", call_token: None, name: None };
        let wf = "WW0123456789abcdef0123456789abcdef";
        let (north, south, east) =
            (location("north", "1", false), location("south", "2", true), location("east", "3", true));
        let t = ClosingTransfer { from: &north, to: &south, then: Some(&east) };
        let r = round_trip(&transfer_at_closing(&s, &urls, wf, t, &caller, &en(&s)));
        let heard = says(&r).join(" ");
        assert!(
            heard.contains(&format!(
                "Sorry, {NASTY} north has closed for now. We are transferring you to {NASTY} south."
            )),
            "{heard}"
        );
        let task = task_of(&r).unwrap();
        assert_eq!((task.location.as_str(), task.transferred_from.as_deref()), ("south", Some("north")));
        assert_eq!(task.overflow.map(|o| o.location).as_deref(), Some("east"), "south's own overflow goes along");
        // Its own overflow being itself, or the location that closed, is no overflow.
        for then in [&south, &north] {
            let t = ClosingTransfer { then: Some(then), ..t };
            assert!(task_of(&transfer_at_closing(&s, &urls, wf, t, &caller, &en(&s))).unwrap().overflow.is_none());
        }
    }

    #[test]
    fn every_value_that_reaches_xml_is_escaped_and_survives() {
        let s = settings();
        let urls = Urls { base: &s.public_url };
        let (east, west) = (location("east", "1", true), location("west", "2", false));
        let caller = Caller { number: "+13105550199", call_token: Some(r#"tok&<"en">"#), name: Some(NASTY) };
        let now = Timestamp::now();

        let menu = round_trip(&menu(&s, &urls, &[east.clone(), west.clone()], 0, &en(&s)));
        assert!(says(&menu).iter().any(|t| t.contains(NASTY)), "{:?}", says(&menu));

        let (open, routed) =
            route(&s, &urls, "WW0123456789abcdef0123456789abcdef", &east, None, &caller, now, true, &en(&s));
        assert_eq!(routed, Routed::Enqueued);
        let open = round_trip(&open);
        let enqueue = open.verbs.iter().find_map(|v| if let Verb::Enqueue(e) = v { Some(e) } else { None }).unwrap();
        // The task's JSON survives the XML intact, display name and all.
        let attrs: TaskAttributes = serde_json::from_str(&enqueue.task.as_ref().unwrap().attributes).unwrap();
        assert_eq!(attrs.location, "east");
        assert_eq!(attrs.practice_phone.as_str(), "+14155550123");
        assert!(says(&open).iter().any(|t| t.contains(NASTY)));

        let (closed, routed) =
            route(&s, &urls, "WW0123456789abcdef0123456789abcdef", &west, None, &caller, now, true, &en(&s));
        assert_eq!(routed, Routed::Closed);
        assert!(says(&round_trip(&closed)).iter().any(|t| t.contains(NASTY)));

        let hold_twiml = round_trip(&hold(&s, None, None, &en(&s)));
        assert!(hold_twiml.verbs.iter().any(|v| matches!(v, Verb::Play(p) if p.url == s.ivr.hold_music_url)));
        // Words first, then the location's own music.
        let mut own = west.clone();
        own.spec.hold_music = Some("https://m.example.com/b.mp3?a=1&b=<2>".into());
        let spoken = round_trip(&hold(&s, Some(&own), Some(NASTY), &en(&s)));
        assert!(matches!(&spoken.verbs[0], Verb::Say(t) if t.text == NASTY), "{spoken:?}");
        assert!(matches!(&spoken.verbs[1], Verb::Play(p) if p.url == "https://m.example.com/b.mp3?a=1&b=<2>"));
        assert_eq!(hold_music(&s, Some(&west)), s.ivr.hold_music_url);

        for outcome in Outcome::ALL {
            assert!(says(&round_trip(&fallback(&s, &urls, &west, outcome, &en(&s)))).iter().any(|t| t.contains(NASTY)));
        }
        round_trip(&dial_queue("WR0123456789abcdef0123456789abcdef", None));
        let text = screen_text(&east.display_name, Some("+13105550199"), Some(NASTY), 1, english());
        assert!(says(&round_trip(&screen("https://r.example.com/screen?a=1&b=2", &text, 8, &en(&s)))).contains(&text));
        round_trip(&goodbye(&en(&s)));
        round_trip(&not_in_service(&en(&s)));
    }

    #[test]
    fn a_caller_hears_why_the_location_is_closed() {
        use crate::hours::{ClosureSpec, HolidaySpec};
        let s = settings();
        let urls = Urls { base: &s.public_url };
        let caller = Caller { number: "+13105550199", call_token: None, name: None };
        let mut spec = location("east", "1", true).spec;
        spec.display_name = Some("East Clinic".into());
        spec.hours.holidays = vec![
            HolidaySpec { rule: Some("4th thu nov".into()), name: Some("Thanksgiving".into()), ..Default::default() },
            HolidaySpec {
                date: "--12-25".into(),
                name: Some("Christmas".into()),
                message: Some("Merry Christmas! We are closed today and open again tomorrow at 8.".into()),
                ..Default::default()
            },
            HolidaySpec { date: "2026-07-03".into(), ..Default::default() },
        ];
        spec.hours.closures = vec![
            ClosureSpec {
                from: "2026-06-01T12:00".into(),
                to: "2026-06-01T14:00".into(),
                reason: Some("Dr Ruiz away".into()),
                message: Some("We are closed for staff training until 2 pm.".into()),
            },
            ClosureSpec {
                from: "2026-06-02T12:00".into(),
                to: "2026-06-02T14:00".into(),
                reason: Some("Dr Ruiz away".into()),
                message: None,
            },
        ];
        let east = Location::from_spec(spec).unwrap();
        let cases = [
            ("2026-11-26T10:00-05:00", "East Clinic is closed today for Thanksgiving."),
            ("2027-12-25T10:00-05:00", "Merry Christmas! We are closed today and open again tomorrow at 8."),
            ("2026-07-03T10:00-04:00", "East Clinic is closed right now."),
            ("2026-06-01T13:00-04:00", "We are closed for staff training until 2 pm."),
            // A closure's reason is a note for staff; without a message the caller hears the default.
            ("2026-06-02T13:00-04:00", "East Clinic is closed right now."),
        ];
        for (at, want) in cases {
            let now: Timestamp = at.parse().unwrap();
            let (twiml, routed) =
                route(&s, &urls, "WW0123456789abcdef0123456789abcdef", &east, None, &caller, now, true, &en(&s));
            assert_eq!(routed, Routed::Closed, "{at}");
            let said = says(&round_trip(&twiml));
            assert_eq!(said[0], format!("Thank you for calling {NASTY}. {want}"), "{at}");
            assert!(!said.iter().any(|t| t.contains("Ruiz")), "{at}: {said:?}");
        }
    }

    #[test]
    fn the_screening_prompt_says_who_calls_in_groups() {
        let text = screen_text("North Clinic", Some("+13105550100"), None, 1, english());
        assert_eq!(text, "Call for North Clinic from 3 1 0, 5 5 5, 0 1 0 0. Press 1 to accept, or hang up.");
        let again = screen_text("North Clinic", Some("+13105550100"), Some("DOE  JANE"), 2, english());
        assert_eq!(
            again,
            "Sorry, that was not 1. Call for North Clinic from DOE JANE, 3 1 0, 5 5 5, 0 1 0 0. Press 1 to accept, or hang up."
        );
        assert!(screen_text("North", Some("anonymous"), None, 1, english()).contains("from an unknown number."));
        assert!(screen_text("North", None, Some("<>&"), 1, english()).contains("from an unknown number."));
        assert_eq!(spoken_number("+442079460958").as_deref(), Some("plus 4 4 2, 0 7 9, 4 6 0, 9 5 8"));
        assert_eq!(spoken_number("+4930123456").as_deref(), Some("plus 4 9 3, 0 1 2, 3 4 5 6"));
        assert_eq!(spoken_number("266696687"), None);

        let s = settings();
        let r = screen("https://r.example.com/screen?prompt=1", &text, 8, &en(&s));
        let Verb::Gather(g) = &r.verbs[0] else { panic!("{r:?}") };
        assert_eq!(
            (g.num_digits, g.timeout, g.action.as_deref()),
            (Some(1), Some(8), Some("https://r.example.com/screen?prompt=1"))
        );
        // No key: the redirect posts the same action without Digits.
        assert!(matches!(&r.verbs[1], Verb::Redirect(x) if x.url == "https://r.example.com/screen?prompt=1"));
    }

    proptest::proptest! {
        /// Whatever Twilio sends as `From` or `CallerName`, the prompt says only
        /// digits, letters and plain marks, and names the location.
        #[test]
        fn the_screening_prompt_takes_any_caller(from in ".{0,24}", name in proptest::option::of(".{0,60}"), digits in "[0-9]{7,15}") {
            for caller in [from.clone(), format!("+{digits}")] {
                let text = screen_text("North", Some(&caller), name.as_deref(), 1, english());
                proptest::prop_assert!(text.starts_with("Call for North from "), "{}", text);
                proptest::prop_assert!(text.ends_with(". Press 1 to accept, or hang up."), "{}", text);
                proptest::prop_assert!(!text.chars().any(|c| c.is_control() || matches!(c, '<' | '>' | '&')), "{}", text);
            }
            if let Some(spoken) = spoken_number(&format!("+{digits}")) {
                let said: String = spoken.chars().filter(char::is_ascii_digit).collect();
                // A North American number is said without its country code.
                proptest::prop_assert!(said == digits || format!("1{said}") == digits, "{} for {}", spoken, digits);
            }
        }
    }

    #[test]
    fn urls_percent_encode_every_query_value() {
        let urls = Urls { base: "https://r.example.com" };
        let u = urls.url("/dial-queue", &[("from", "+14155550123"), ("location", "a b&c=d")]);
        assert_eq!(u, "https://r.example.com/dial-queue?from=%2B14155550123&location=a%20b%26c%3Dd");
        assert_eq!(twilio::signature::query_param(&u, "from").as_deref(), Some("+14155550123"));
        assert_eq!(twilio::signature::query_param(&u, "location").as_deref(), Some("a b&c=d"));
    }

    #[test]
    fn menu_input_repeats_then_follows_the_no_choice_policy() {
        let locs = [location("east", "1", true), location("west", "2", true)];
        let voicemail = NoChoicePolicy::Voicemail;
        let cases: [(Option<&str>, u32, Choice); 7] = [
            (Some("2"), 0, Choice::Location(1)),
            (Some("1"), 1, Choice::Location(0)),
            (Some("9"), 0, Choice::Retry { attempt: 1 }),
            (None, 0, Choice::Retry { attempt: 1 }),
            (None, 1, Choice::Voicemail),
            (Some("9"), 1, Choice::Voicemail),
            (Some(" 2 "), 1, Choice::Location(1)),
        ];
        for (digits, attempt, want) in cases {
            assert_eq!(choose(&locs, digits, attempt, 2, &voicemail), want, "{digits:?} at attempt {attempt}");
        }
        // The other policies apply only once the attempts are used up.
        assert_eq!(choose(&locs, None, 0, 2, &NoChoicePolicy::Goodbye), Choice::Retry { attempt: 1 });
        assert_eq!(choose(&locs, None, 1, 2, &NoChoicePolicy::Goodbye), Choice::Goodbye);
        let west = NoChoicePolicy::Location("west".into());
        assert_eq!(choose(&locs, Some("7"), 1, 2, &west), Choice::Location(1));
        // A location this menu does not offer: voicemail, never another location.
        let elsewhere = NoChoicePolicy::Location("north".into());
        assert_eq!(choose(&locs, None, 1, 2, &elsewhere), Choice::Voicemail);
        assert_eq!(choose(&locs, None, 0, 1, &elsewhere), Choice::Voicemail);
    }

    #[test]
    fn the_no_choice_policy_parses_and_says_what_is_wrong() {
        assert_eq!(NoChoicePolicy::parse("voicemail"), Ok(NoChoicePolicy::Voicemail));
        assert_eq!(NoChoicePolicy::parse(" goodbye "), Ok(NoChoicePolicy::Goodbye));
        assert_eq!(NoChoicePolicy::parse("location: west"), Ok(NoChoicePolicy::Location("west".into())));
        for bad in ["", "location:", "hangup", "Location:west"] {
            let e = NoChoicePolicy::parse(bad).unwrap_err();
            assert!(e.contains("\"voicemail\", \"goodbye\" or \"location:NAME\""), "{bad:?}: {e}");
        }
    }

    fn bilingual() -> Settings {
        let text = "public_url = \"https://r.example.com\"\n[twilio]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
                    auth_token = \"t\"\n[ivr]\nbusiness_name = \"Acme\"\nvoice = \"Polly.Joanna\"\n\
                    languages = [\"en-US\", \"es-MX\"]\n[language.es-MX]\nvoice = \"Polly.Mia\"\n\
                    business_name = \"Clínicas Acme\"\n";
        Settings::from_toml(text, |_| None).unwrap()
    }

    /// Each `<Say>` of a document: text, language, voice.
    fn spoken(r: &Response) -> Vec<(String, Option<String>, Option<String>)> {
        let say = |s: &twilio::twiml::Say| (s.text.clone(), s.language.clone(), s.voice.clone());
        let mut out = Vec::new();
        for v in &r.verbs {
            match v {
                Verb::Say(s) => out.push(say(s)),
                Verb::Gather(g) => out.extend(g.prompts.iter().filter_map(|p| match p {
                    Prompt::Say(s) => Some(say(s)),
                    _ => None,
                })),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn the_menu_is_said_in_the_callers_language_and_offers_the_others_in_theirs() {
        let s = bilingual();
        let urls = Urls { base: &s.public_url };
        let mut east = location("east", "1", true);
        east.spec.translations.insert(
            "es-MX".into(),
            crate::domain::LocationText { display_name: Some("Clínica Este".into()), ..Default::default() },
        );
        let locs = [east, location("west", "2", true)];
        let langs = &s.ivr.languages;
        let (en, es) = (langs.get("en-US").unwrap(), langs.get("es-MX").unwrap());
        let t = |text: &str, lang: &str, voice: &str| (text.to_owned(), Some(lang.to_owned()), Some(voice.to_owned()));

        let menu_en = round_trip(&menu(&s, &urls, &locs, 0, &speaker(&s, en, None)));
        let said = spoken(&menu_en);
        assert_eq!(said[0], t("Thank you for calling Acme.", "en-US", "Polly.Joanna"));
        assert_eq!(said[1], t(&format!("For {NASTY} east, press 1."), "en-US", "Polly.Joanna"));
        assert_eq!(said.last(), Some(&t("Para español, oprima 9.", "es-MX", "Polly.Mia")));
        let Verb::Gather(g) = &menu_en.verbs[0] else { panic!("{menu_en:?}") };
        assert_eq!(twilio::signature::query_param(g.action.as_deref().unwrap(), "lang").as_deref(), Some("en-US"));

        let menu_es = round_trip(&menu(&s, &urls, &locs, 0, &speaker(&s, es, None)));
        let said = spoken(&menu_es);
        assert_eq!(said[0], t("Gracias por llamar a Clínicas Acme.", "es-MX", "Polly.Mia"));
        assert_eq!(said[1], t("Para Clínica Este, oprima 1.", "es-MX", "Polly.Mia"));
        assert_eq!(said.last(), Some(&t("For English, press 8.", "en-US", "Polly.Joanna")));
        assert_eq!(said.len(), 4, "{said:?}");

        // The keys: a language's, unless a location on this number has that digit.
        assert_eq!(language_key(langs, &locs, Some("9")).map(|l| l.tag.as_str()), Some("es-MX"));
        assert_eq!(language_key(langs, &locs, Some("1")), None);
        let eight = [location("north", "8", true)];
        assert_eq!(language_key(langs, &eight, Some("8")), None);
        assert_eq!(language_key(langs, &locs, None), None);
    }

    #[test]
    fn every_prompt_on_a_spanish_callers_path_is_spanish() {
        let s = bilingual();
        let urls = Urls { base: &s.public_url };
        let es = s.ivr.languages.get("es-MX").unwrap();
        let mut east = location("east", "1", true);
        east.display_name = "East".into();
        east.spec.language = Some("es-MX".into());
        east.spec.voice = Some("Polly.Lupe".into());
        let sp = speaker(&s, es, Some(&east));
        let caller = Caller { number: "+13105550199", call_token: None, name: None };
        let (twiml, _) =
            route(&s, &urls, "WW0123456789abcdef0123456789abcdef", &east, None, &caller, Timestamp::now(), true, &sp);
        let twiml = round_trip(&twiml);
        let said: Vec<String> = spoken(&twiml).into_iter().map(|s| s.0).collect();
        assert_eq!(said, ["Gracias por llamar a East.", "Por favor, espere mientras lo comunicamos."]);
        let enqueue = twiml.verbs.iter().find_map(|v| if let Verb::Enqueue(e) = v { Some(e) } else { None }).unwrap();
        for url in [enqueue.wait_url.as_deref().unwrap(), enqueue.action.as_deref().unwrap()] {
            assert_eq!(twilio::signature::query_param(url, "lang").as_deref(), Some("es-MX"), "{url}");
        }
        // The location's own voice speaks its own language.
        assert!(spoken(&twiml).iter().all(|s| s.1.as_deref() == Some("es-MX") && s.2.as_deref() == Some("Polly.Lupe")));

        let docs = [
            fallback(&s, &urls, &east, Outcome::LocationBusy, &sp),
            fallback(&s, &urls, &east, Outcome::QueueTimeout, &sp),
            fallback(&s, &urls, &east, Outcome::ClosedWhileWaiting, &sp),
            hold(&s, Some(&east), es.announcement(Some(2), Some(90)).as_deref(), &sp),
            no_choice_voicemail(&s, &urls, &sp),
            no_choice_goodbye(&sp),
            goodbye(&sp),
            not_in_service(&sp),
            caller_gone(&sp),
            language_gate(&s, &urls, &east, &sp),
        ];
        let english = crate::prompts::Language::english(None, "Acme".into());
        let english_texts: Vec<String> = crate::prompts::Prompt::all().map(|p| english.text(p, &[])).collect();
        for doc in &docs {
            for (text, lang, _) in spoken(&round_trip(doc)) {
                if text == "For English, press 8." {
                    continue;
                }
                assert_eq!(lang.as_deref(), Some("es-MX"), "{text}");
                assert!(!english_texts.contains(&text), "English on a Spanish path: {text}");
            }
        }
        let said: Vec<String> = spoken(&docs[0]).into_iter().map(|s| s.0).collect();
        assert_eq!(said[0], "Lo sentimos, East está atendiendo otra llamada.");
        let said: Vec<String> = spoken(&docs[3]).into_iter().map(|s| s.0).collect();
        assert_eq!(
            said,
            [
                "Usted es la persona número dos en la fila. El tiempo de espera estimado es de aproximadamente 2 minutos."
            ]
        );
        let Verb::Record(r) = &docs[0].verbs[2] else { panic!("{:?}", docs[0]) };
        assert_eq!(twilio::signature::query_param(r.action.as_deref().unwrap(), "lang").as_deref(), Some("es-MX"));

        // The closed message, in Spanish.
        let mut closed = location("west", "2", false);
        closed.display_name = "Oeste".into();
        let (twiml, routed) = route(
            &s,
            &urls,
            "WW0123456789abcdef0123456789abcdef",
            &closed,
            None,
            &caller,
            Timestamp::now(),
            true,
            &speaker(&s, es, Some(&closed)),
        );
        assert_eq!(routed, Routed::Closed);
        assert_eq!(spoken(&twiml)[0].0, "Gracias por llamar a Clínicas Acme. Oeste está cerrado en este momento.");
    }

    #[test]
    fn the_screening_prompt_is_said_in_the_locations_language() {
        let s = bilingual();
        let es = s.ivr.languages.get("es-MX").unwrap();
        assert_eq!(
            screen_text("Clínica Norte", Some("+13105550100"), None, 1, es),
            "Llamada para Clínica Norte de 3 1 0, 5 5 5, 0 1 0 0. Oprima 1 para aceptar, o cuelgue."
        );
        assert_eq!(
            screen_text("Norte", Some("+442079460958"), None, 2, es),
            "Perdón, eso no fue 1. Llamada para Norte de más 4 4 2, 0 7 9, 4 6 0, 9 5 8. Oprima 1 para aceptar, o cuelgue."
        );
        assert!(screen_text("Norte", None, None, 1, es).contains("de un número desconocido."));
    }

    #[test]
    fn a_callback_task_carries_its_round_and_the_query_finds_it_by_call_and_round() {
        let call = "CA0123456789abcdef0123456789abcdef";
        let number = twilio::E164::parse("+13105550100").unwrap();
        let attrs = callback_attributes(&location("north", "1", true), call, &number, 1_000, 2);
        let v = serde_json::to_value(&attrs).unwrap();
        // The query names exactly these two keys.
        assert_eq!(v["call_sid"], call, "{v}");
        assert_eq!(v["callback"]["round"], 2, "{v}");
        assert_eq!(v["callback"]["sinceMs"], 1_000, "{v}");
        assert_eq!(
            callback_task_query(call, 2).as_deref(),
            Some(r#"call_sid == "CA0123456789abcdef0123456789abcdef" AND callback.round == 2"#)
        );
        // A task written before rounds were reads as round 0, found by no query of ours.
        let old: crate::domain::CallbackAttributes =
            serde_json::from_str(r#"{"number":"+13105550100","sinceMs":5}"#).unwrap();
        assert_eq!(old.round, 0);
    }

    #[test]
    fn a_callback_task_query_takes_only_letters_and_digits_between_its_quotes() {
        for bad in
            [r#"CA1" OR call_sid != "x"#, "CA1' OR 1 == 1", "CA1 OR 1 == 1", "CA1)", r"CA\u0022", "CA1\n", "ÇA1", ""]
        {
            assert_eq!(callback_task_query(bad, 1), None, "{bad:?}");
        }
        let sid: twilio::sid::CallSid = "CAffffffffffffffffffffffffffffffff".parse().unwrap();
        assert!(callback_task_query(sid.as_str(), u32::MAX).unwrap().ends_with("callback.round == 4294967295"));
    }
}
