//! The caller's experience as pure functions: which TwiML to return, given
//! the settings, the locations and the time. No IO happens here.

use jiff::Timestamp;
use twilio::params::percent_encode;
use twilio::twiml::{
    Dial, DialNoun, Enqueue, Gather, Method, Pause, Play, Prompt, Queue, Record, Redirect, Response, Say, Task, Verb,
};

use crate::config::Settings;
use crate::domain::{Location, Outcome, TaskAttributes};

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
}

/// Interprets menu digits. Missing or invalid input repeats the menu until
/// `max_attempts` is used up, then routes to the first location (the
/// default), so that no caller is left at a menu forever.
pub fn choose(locations: &[Location], digits: Option<&str>, attempt: u32, max_attempts: u32) -> Choice {
    let pressed = digits.map(str::trim).and_then(|d| d.chars().next());
    if let Some(i) = pressed.and_then(|d| locations.iter().position(|l| l.digit == Some(d))) {
        return Choice::Location(i);
    }
    if attempt + 1 < max_attempts { Choice::Retry { attempt: attempt + 1 } } else { Choice::Location(0) }
}

fn say(settings: &Settings, text: impl Into<String>) -> Say {
    Say { text: text.into(), voice: settings.ivr.voice.clone(), ..Say::default() }
}

/// The menu for a number that serves several locations.
pub fn menu(settings: &Settings, urls: &Urls, locations: &[Location], attempt: u32) -> Response {
    let mut prompts = Vec::new();
    if attempt == 0 {
        prompts.push(Prompt::Say(say(settings, format!("Thank you for calling {}.", settings.ivr.business_name))));
    } else {
        prompts.push(Prompt::Say(say(settings, "Sorry, I didn't get that.")));
    }
    for l in locations {
        if let Some(d) = l.digit {
            prompts.push(Prompt::Say(say(settings, format!("For {}, press {d}.", l.display_name))));
        }
    }
    let action = urls.url("/menu", &[("attempt", &attempt.to_string())]);
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

/// The caller, as the inbound webhook described them.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    pub number: &'a str,
    pub call_token: Option<&'a str>,
}

/// What [`route`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    Enqueued,
    Closed,
}

/// Sends the caller to a chosen location: enqueue when open, voicemail when
/// closed.
pub fn route(
    settings: &Settings,
    urls: &Urls,
    workflow_sid: &str,
    location: &Location,
    caller: &Caller,
    now: Timestamp,
    greet: bool,
) -> (Response, Routed) {
    if !location.schedule.is_open(now) {
        let msg = format!(
            "Thank you for calling {}. {} is closed right now.",
            settings.ivr.business_name, location.display_name
        );
        return (voicemail(settings, urls, &location.name, &msg), Routed::Closed);
    }
    let mut resp = Response::new();
    if greet {
        resp = resp.verb(Verb::Say(say(settings, format!("Thank you for calling {}.", location.display_name))));
    }
    let show_caller = location.show_caller_number && caller.call_token.is_some();
    let attrs = TaskAttributes {
        location: location.name.clone(),
        practice_phone: location.phone.clone(),
        // Twilio only accepts the caller's own number as From together with
        // the inbound call's CallToken.
        caller_id: match (show_caller, twilio::E164::parse(caller.number)) {
            (true, Ok(n)) => n,
            _ => location.caller_id.clone(),
        },
        caller: Some(caller.number.to_owned()),
        call_token: if show_caller { caller.call_token.map(str::to_owned) } else { None },
        call_sid: None,
    };
    let attributes = serde_json::to_string(&attrs).expect("task attributes serialise");
    let q = [("location", location.name.as_str())];
    resp = resp
        .verb(Verb::Say(say(settings, "Please hold while we connect you.")))
        .verb(Verb::Enqueue(Enqueue {
            workflow_sid: Some(workflow_sid.to_owned()),
            wait_url: Some(urls.url("/hold", &q)),
            wait_url_method: Some(Method::Post),
            action: Some(urls.url("/enqueue-action", &q)),
            method: Some(Method::Post),
            task: Some(Task { attributes, ..Task::default() }),
            ..Enqueue::default()
        }));
    (resp, Routed::Enqueued)
}

/// A message, then a recording, then goodbye.
pub fn voicemail(settings: &Settings, urls: &Urls, location: &str, message: &str) -> Response {
    Response::new()
        .verb(Verb::Say(say(settings, message)))
        .verb(Verb::Say(say(settings, "Please leave a message after the tone, and we will call you back.")))
        .verb(Verb::Record(Record {
            action: Some(urls.url("/voicemail-complete", &[("location", location)])),
            method: Some(Method::Post),
            max_length: Some(settings.ivr.voicemail_max_secs),
            timeout: Some(5),
            play_beep: Some(true),
            finish_on_key: Some("#".into()),
            ..Record::default()
        }))
        .verb(Verb::Say(say(settings, "We did not receive a message. Goodbye.")))
        .verb(Verb::Hangup)
}

/// The voicemail offer after a failed attempt to reach a location.
pub fn fallback(settings: &Settings, urls: &Urls, location: &Location, reason: Outcome) -> Response {
    voicemail(settings, urls, &location.name, &reason.caller_message(&location.display_name))
}

/// What the caller hears while waiting in the queue (the `waitUrl`).
pub fn hold(settings: &Settings) -> Response {
    Response::new()
        .verb(Verb::Play(Play { url: settings.ivr.hold_music_url.clone(), loop_count: Some(1) }))
        .verb(Verb::Pause(Pause { length: Some(1) }))
}

/// Bridges the answered outbound leg to the caller waiting on the reservation.
pub fn dial_queue(reservation_sid: &str) -> Response {
    Response::new().verb(Verb::Dial(Dial {
        nouns: vec![DialNoun::Queue(Queue { reservation_sid: Some(reservation_sid.to_owned()), ..Queue::default() })],
        ..Dial::default()
    }))
}

pub fn hangup() -> Response {
    Response::new().verb(Verb::Hangup)
}

pub fn goodbye(settings: &Settings) -> Response {
    Response::new().verb(Verb::Say(say(settings, "Thank you for calling. Goodbye."))).verb(Verb::Hangup)
}

pub fn not_in_service(settings: &Settings) -> Response {
    Response::new()
        .verb(Verb::Say(say(settings, "Sorry, this number is not in service. Goodbye.")))
        .verb(Verb::Hangup)
}

pub fn empty() -> Response {
    Response::new()
}
