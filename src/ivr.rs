//! The caller's experience as pure functions: which TwiML to return, given
//! the settings, the locations and the time. No IO happens here.

use jiff::Timestamp;
use twilio::params::percent_encode;
use twilio::twiml::{
    Dial, DialNoun, Enqueue, Gather, Method, Pause, Play, Prompt, Queue, Record, Redirect, Response, Say, Task, Verb,
};

use crate::config::{NoChoicePolicy, Settings};
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

/// The business's voicemail for a caller who made no menu choice.
pub fn no_choice_voicemail(settings: &Settings, urls: &Urls) -> Response {
    voicemail(settings, urls, None, "Sorry, I still didn't get a choice.")
}

/// The goodbye for a caller who made no menu choice.
pub fn no_choice_goodbye(settings: &Settings) -> Response {
    Response::new()
        .verb(Verb::Say(say(settings, "Sorry, I still didn't get a choice. Please call again. Goodbye.")))
        .verb(Verb::Hangup)
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
        return (voicemail(settings, urls, Some(location), &msg), Routed::Closed);
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
    resp = resp.verb(Verb::Say(say(settings, "Please hold while we connect you."))).verb(Verb::Enqueue(Enqueue {
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

/// A message, then a recording, then goodbye. The recording is transcribed
/// when the location asks for it (`transcribe`), the text posted to
/// `/voicemail-transcription`.
pub fn voicemail(settings: &Settings, urls: &Urls, location: Option<&Location>, message: &str) -> Response {
    let name = location.map_or("", |l| l.name.as_str());
    let transcribe = location.is_some_and(|l| l.spec.transcribe);
    Response::new()
        .verb(Verb::Say(say(settings, message)))
        .verb(Verb::Say(say(settings, "Please leave a message after the tone, and we will call you back.")))
        .verb(Verb::Record(Record {
            action: Some(urls.url("/voicemail-complete", &[("location", name)])),
            method: Some(Method::Post),
            max_length: Some(settings.ivr.voicemail_max_secs),
            timeout: Some(5),
            play_beep: Some(true),
            finish_on_key: Some("#".into()),
            transcribe: transcribe.then_some(true),
            transcribe_callback: transcribe.then(|| urls.url("/voicemail-transcription", &[("location", name)])),
            ..Record::default()
        }))
        .verb(Verb::Say(say(settings, "We did not receive a message. Goodbye.")))
        .verb(Verb::Hangup)
}

/// The voicemail offer after a failed attempt to reach a location.
pub fn fallback(settings: &Settings, urls: &Urls, location: &Location, reason: Outcome) -> Response {
    voicemail(settings, urls, Some(location), &reason.caller_message(&location.display_name))
}

/// What the caller hears while waiting in the queue (the `waitUrl`): the
/// words the journey chose to say, if any (an announcement or a comfort
/// message), then the location's hold music once; Twilio then asks the
/// `waitUrl` again.
pub fn hold(settings: &Settings, location: Option<&Location>, words: Option<&str>) -> Response {
    let mut resp = Response::new();
    if let Some(w) = words {
        resp = resp.verb(Verb::Say(say(settings, w)));
    }
    resp.verb(Verb::Play(Play { url: hold_music(settings, location).to_owned(), loop_count: Some(1) }))
        .verb(Verb::Pause(Pause { length: Some(1) }))
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
pub fn dial_queue(reservation_sid: &str) -> Response {
    Response::new().verb(Verb::Dial(Dial {
        nouns: vec![DialNoun::Queue(Queue { reservation_sid: Some(reservation_sid.to_owned()), ..Queue::default() })],
        ..Dial::default()
    }))
}

/// What the location hears when it answers for a caller who is no longer there.
pub fn caller_gone(settings: &Settings) -> Response {
    Response::new().verb(Verb::Say(say(settings, "Sorry, the caller has already hung up. Goodbye."))).verb(Verb::Hangup)
}

pub fn hangup() -> Response {
    Response::new().verb(Verb::Hangup)
}

pub fn goodbye(settings: &Settings) -> Response {
    Response::new().verb(Verb::Say(say(settings, "Thank you for calling. Goodbye."))).verb(Verb::Hangup)
}

pub fn not_in_service(settings: &Settings) -> Response {
    Response::new().verb(Verb::Say(say(settings, "Sorry, this number is not in service. Goodbye."))).verb(Verb::Hangup)
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
            name: name.into(),
            display_name: Some(format!("{NASTY} {name}")),
            digit: Some(digit.into()),
            numbers: vec!["+12025550143".into()],
            phone: "+14155550123".into(),
            caller_id: None,
            show_caller_number: false,
            lines: 1,
            hours: HoursSpec {
                time_zone: "America/New_York".into(),
                weekly: WeeklySpec::every_day(all),
                ..HoursSpec::default()
            },
            transcribe: false,
            notify_email: Vec::new(),
            notify_webhook: None,
            announce_every_secs: None,
            hold_music: None,
            comfort_messages: Vec::new(),
        })
        .unwrap()
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

    #[test]
    fn every_value_that_reaches_xml_is_escaped_and_survives() {
        let s = settings();
        let urls = Urls { base: &s.public_url };
        let (east, west) = (location("east", "1", true), location("west", "2", false));
        let caller = Caller { number: "+13105550199", call_token: Some(r#"tok&<"en">"#) };
        let now = Timestamp::now();

        let menu = round_trip(&menu(&s, &urls, &[east.clone(), west.clone()], 0));
        assert!(says(&menu).iter().any(|t| t.contains(NASTY)), "{:?}", says(&menu));

        let (open, routed) = route(&s, &urls, "WW0123456789abcdef0123456789abcdef", &east, &caller, now, true);
        assert_eq!(routed, Routed::Enqueued);
        let open = round_trip(&open);
        let enqueue = open.verbs.iter().find_map(|v| if let Verb::Enqueue(e) = v { Some(e) } else { None }).unwrap();
        // The task's JSON survives the XML intact, display name and all.
        let attrs: TaskAttributes = serde_json::from_str(&enqueue.task.as_ref().unwrap().attributes).unwrap();
        assert_eq!(attrs.location, "east");
        assert_eq!(attrs.practice_phone.as_str(), "+14155550123");
        assert!(says(&open).iter().any(|t| t.contains(NASTY)));

        let (closed, routed) = route(&s, &urls, "WW0123456789abcdef0123456789abcdef", &west, &caller, now, true);
        assert_eq!(routed, Routed::Closed);
        assert!(says(&round_trip(&closed)).iter().any(|t| t.contains(NASTY)));

        let hold_twiml = round_trip(&hold(&s, None, None));
        assert!(hold_twiml.verbs.iter().any(|v| matches!(v, Verb::Play(p) if p.url == s.ivr.hold_music_url)));
        // Words first, then the location's own music.
        let mut own = west.clone();
        own.spec.hold_music = Some("https://m.example.com/b.mp3?a=1&b=<2>".into());
        let spoken = round_trip(&hold(&s, Some(&own), Some(NASTY)));
        assert!(matches!(&spoken.verbs[0], Verb::Say(t) if t.text == NASTY), "{spoken:?}");
        assert!(matches!(&spoken.verbs[1], Verb::Play(p) if p.url == "https://m.example.com/b.mp3?a=1&b=<2>"));
        assert_eq!(hold_music(&s, Some(&west)), s.ivr.hold_music_url);

        for outcome in Outcome::ALL {
            assert!(says(&round_trip(&fallback(&s, &urls, &west, outcome))).iter().any(|t| t.contains(NASTY)));
        }
        round_trip(&dial_queue("WR0123456789abcdef0123456789abcdef"));
        round_trip(&goodbye(&s));
        round_trip(&not_in_service(&s));
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
}
