//! Voice webhooks: the caller's leg (incoming call, menu, hold, queue exit,
//! voicemail) and the location's leg (dial-queue, status callbacks).

use axum::extract::State;
use twilio::sid::{CallSid, RecordingSid, ReservationSid, TaskSid};

use super::{AppState, TwiML, TwilioRequest, WebhookError};
use crate::announce;
use crate::domain::{Location, Outcome};
use crate::ivr::{self, Caller, Choice, Routed};
use crate::journey::{Answer, AnsweredBy, CallStatus, Event, QueueResult, ReservationStatus, ScreenKey};
use crate::prompts::Language;
use crate::store::{Delivered, Delivery, NewCall, NewVoicemail, Route, StatusRecord, Transcription};

/// A SID parameter (body, else query) of the given type, or a 400 naming it.
pub(super) fn sid_param<T: std::str::FromStr>(req: &TwilioRequest, key: &str) -> Result<T, WebhookError> {
    let v = req.require(key)?;
    v.parse().map_err(|_| WebhookError::BadRequest(format!("{key} {v:?} is not a SID")))
}

/// Delivers to the journey and wakes the dispatcher's lanes that commands were queued for.
pub(super) async fn deliver(state: &AppState, d: Delivery) -> Result<Delivered, WebhookError> {
    let done = state.store().deliver(d).await?;
    state.notifier().delivered(&done);
    Ok(done)
}

/// Delivers events about the caller's own leg.
async fn caller_events(state: &AppState, call: &CallSid, events: Vec<Event>) -> Result<Delivered, WebhookError> {
    deliver(state, Delivery::to_keys([call.to_string()], events, state.policy())).await
}

/// The caller's language: the `lang` parameter our URLs carry once the
/// caller is past the first answer, else the number's, else `location`'s
/// (see `crate::prompts`).
fn caller_language<'a>(state: &'a AppState, req: &TwilioRequest, location: Option<&Location>) -> &'a Language {
    state.settings().ivr.languages.for_caller(
        req.query.get("lang"),
        req.get("To"),
        location.and_then(|l| l.spec.language.as_deref()),
    )
}

/// The language a location's own leg hears: the location's, else the business's first.
fn location_language<'a>(state: &'a AppState, location: Option<&Location>) -> &'a Language {
    state.settings().ivr.languages.for_caller(location.and_then(|l| l.spec.language.as_deref()), None, None)
}

/// The phone number's voice URL: greet, check hours, offer a menu or enqueue.
pub(super) async fn incoming_call(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call: CallSid = sid_param(&req, "CallSid")?;
    let to = req.require("To")?;
    let from = req.get("From").unwrap_or("anonymous");
    let locations = state.store().locations_for_number(to).await?;
    let settings = state.settings();
    let mut events = vec![Event::CallerArrived { call: call.clone() }];
    let twiml = match locations.as_slice() {
        [] => {
            tracing::warn!(to, "call to a number that serves no location");
            events.push(Event::CallerTurnedAway { outcome: Outcome::NotInService, location: None });
            let lang = caller_language(&state, &req, None);
            TwiML(ivr::not_in_service(&ivr::speaker(settings, lang, None)))
        }
        // Several languages: the caller may choose one before they are routed.
        [only] if settings.ivr.languages.offers_choice() => {
            let lang = caller_language(&state, &req, Some(only));
            TwiML(ivr::language_gate(settings, &state.urls(), only, &ivr::speaker(settings, lang, Some(only))))
        }
        [only] => {
            let lang = caller_language(&state, &req, Some(only));
            let (twiml, routed) = route_to(&state, &req, only, true, lang).await?;
            events.extend(routed);
            twiml
        }
        several => {
            let lang = caller_language(&state, &req, None);
            TwiML(ivr::menu(settings, &state.urls(), several, 0, &ivr::speaker(settings, lang, None)))
        }
    };
    let mut d = Delivery::to_keys([call.to_string()], events, state.policy());
    d.caller = Some(NewCall { from: from.to_owned(), to: to.to_owned() });
    deliver(&state, d).await?;
    Ok(twiml)
}

/// The menu's `Gather` action (and its no-input redirect).
pub(super) async fn menu(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call: CallSid = sid_param(&req, "CallSid")?;
    let to = req.require("To")?;
    let attempt: u32 = req.query.get("attempt").and_then(|a| a.parse().ok()).unwrap_or(0).min(10);
    let locations = state.store().locations_for_number(to).await?;
    let settings = state.settings();
    if locations.is_empty() {
        caller_events(&state, &call, vec![Event::CallerTurnedAway { outcome: Outcome::NotInService, location: None }])
            .await?;
        let lang = caller_language(&state, &req, None);
        return Ok(TwiML(ivr::not_in_service(&ivr::speaker(settings, lang, None))));
    }
    let digits = req.params.get("Digits");
    let ivr_settings = &settings.ivr;
    // The language gate of a number that serves one location (`greeted`).
    let gate = match locations.as_slice() {
        [only] if req.query.get("greeted").is_some() => Some(only),
        _ => None,
    };
    if let Some(lang) = ivr::language_key(&ivr_settings.languages, &locations, digits) {
        // A language's key: the same menu (or greeting) again, in that language.
        tracing::info!(language = %lang.tag, "the caller chose a language");
        let twiml = match gate {
            Some(only) => ivr::language_gate(settings, &state.urls(), only, &ivr::speaker(settings, lang, Some(only))),
            None => ivr::menu(settings, &state.urls(), &locations, 0, &ivr::speaker(settings, lang, None)),
        };
        return Ok(TwiML(twiml));
    }
    let lang = caller_language(&state, &req, gate);
    if let Some(only) = gate {
        let (twiml, events) = route_to(&state, &req, only, false, lang).await?;
        caller_events(&state, &call, events).await?;
        return Ok(twiml);
    }
    let sp = ivr::speaker(settings, lang, None);
    let choice = ivr::choose(&locations, digits, attempt, ivr_settings.menu_attempts, &ivr_settings.on_no_choice);
    let no_choice = || vec![Event::CallerTurnedAway { outcome: Outcome::NoChoice, location: None }];
    match choice {
        Choice::Location(i) => {
            let (twiml, events) = route_to(&state, &req, &locations[i], false, lang).await?;
            caller_events(&state, &call, events).await?;
            Ok(twiml)
        }
        Choice::Retry { attempt } => Ok(TwiML(ivr::menu(settings, &state.urls(), &locations, attempt, &sp))),
        Choice::Voicemail => {
            if let crate::config::NoChoicePolicy::Location(name) = &ivr_settings.on_no_choice {
                tracing::warn!(location = %name, to = %to, "ivr.on_no_choice names a location this number's menu does not offer; business voicemail instead");
            }
            tracing::info!("no menu choice; business voicemail");
            caller_events(&state, &call, no_choice()).await?;
            Ok(TwiML(ivr::no_choice_voicemail(settings, &state.urls(), &sp)))
        }
        Choice::Goodbye => {
            tracing::info!("no menu choice; goodbye");
            caller_events(&state, &call, no_choice()).await?;
            Ok(TwiML(ivr::no_choice_goodbye(&sp)))
        }
    }
}

/// The TwiML for a caller sent to `location`, and the event it is for the journey.
async fn route_to(
    state: &AppState,
    req: &TwilioRequest,
    location: &Location,
    greet: bool,
    lang: &Language,
) -> Result<(TwiML, Vec<Event>), WebhookError> {
    let sp = ivr::speaker(state.settings(), lang, Some(location));
    let Some(workflow) = state.workflow_sid().await? else {
        // Not provisioned yet. A 503 would make Twilio play its "application error" to the
        // caller; voicemail still works without TaskRouter, so offer that.
        tracing::error!(location = %location.name, "no workflow SID: run `call-router provision`; caller offered voicemail");
        let msg = sp.text(crate::prompts::Prompt::CannotConnect, &[]);
        let twiml = TwiML(ivr::voicemail(state.settings(), &state.urls(), Some(location), &msg, &sp));
        let away = Event::CallerTurnedAway { outcome: Outcome::DialFailed, location: Some(location.name.clone()) };
        return Ok((twiml, vec![away]));
    };
    let caller = Caller {
        number: req.get("From").unwrap_or("anonymous"),
        call_token: req.get("CallToken"),
        name: req.get("CallerName"),
    };
    // Business time: hours are read at it, and its closing time is turned back into wall time
    // for the journey, whose timers run on the wall clock.
    let clock = state.clock();
    let now = clock.now();
    let overflow = overflow_of(state, location).await;
    // Where the overflow location's own callers go on to: a caller sent there carries it.
    let then = match &overflow {
        Some((o, _)) => overflow_location(state, o).await,
        None => None,
    };
    let overflow = overflow.as_ref().map(|(o, busy)| ivr::Overflow { location: o, busy: *busy, then: then.as_ref() });
    let (twiml, routed) =
        ivr::route(state.settings(), &state.urls(), workflow.as_str(), location, overflow, &caller, now, greet, &sp);
    tracing::info!(location = %location.name, ?routed, "caller routed");
    // The language is kept for the fallback after a REST redirect, when there is a choice to keep.
    let language = state.settings().ivr.languages.offers_choice().then(|| lang.tag.clone());
    let enqueued = |l: &Location| {
        let mut events = vec![Event::CallerEnqueued { location: l.name.clone(), language: language.clone() }];
        // Hours are checked again while the caller waits: the journey acts at closing time.
        if let crate::hours::Status::Open { closes_at } = l.schedule.status_at(now) {
            // A callback that may wait for the next opening needs to know when that is.
            let waits = l.spec.callback.is_some_and(|c| c.at_closing == crate::domain::AtClosing::NextOpening);
            let later = match waits {
                true => l.schedule.open_periods_after(closes_at.timestamp(), crate::journey::MAX_LATER_OPENINGS),
                false => Vec::new(),
            };
            let later = later
                .into_iter()
                .map(|(o, c)| crate::journey::OpenPeriod {
                    opens_at_ms: clock.wall_ms(o),
                    closes_at_ms: clock.wall_ms(c),
                })
                .collect();
            // The closing policy's callback, for a caller who can be called back.
            let callback = match (l.spec.closing_policy, l.spec.callback, twilio::E164::parse(caller.number)) {
                (crate::domain::ClosingPolicy::Callback, Some(cb), Ok(number)) if waits => {
                    Some(crate::journey::ClosingCallback { number, tries: cb.tries })
                }
                _ => None,
            };
            // The closing policy's overflow location, when it is open at closing time.
            // (`l` is the chosen location, or its overflow location on arrival: then its own.)
            let to = match overflow {
                Some(o) if l.name == location.name => Some(o.location),
                Some(o) => o.then.filter(|t| t.name != location.name),
                None => None,
            };
            let overflow = match (l.spec.closing_policy, to) {
                (crate::domain::ClosingPolicy::Overflow, Some(to)) => {
                    match to.schedule.status_at(closes_at.timestamp()) {
                        crate::hours::Status::Open { closes_at: then } => Some(crate::journey::ClosingOverflow {
                            location: to.name.clone(),
                            closes_at_ms: Some(clock.wall_ms(then.timestamp())),
                        }),
                        crate::hours::Status::Closed { .. } => None,
                    }
                }
                _ => None,
            };
            events.push(Event::ClosingTime { at_ms: clock.wall_ms(closes_at.timestamp()), later, callback, overflow });
        }
        events
    };
    let events = match routed {
        Routed::Closed => {
            vec![Event::CallerTurnedAway { outcome: Outcome::AfterHours, location: Some(location.name.clone()) }]
        }
        Routed::Enqueued => enqueued(location),
        Routed::Overflowed { .. } => enqueued(overflow.map_or(location, |o| o.location)),
    };
    Ok((TwiML(twiml), events))
}

/// The location's overflow location, if it has one that exists. A failed
/// read only means none.
async fn overflow_location(state: &AppState, location: &Location) -> Option<Location> {
    let name = location.spec.overflow.as_deref()?;
    match state.store().location(name).await {
        Ok(Some(o)) => Some(o),
        Ok(None) => {
            tracing::warn!(location = %location.name, overflow = name, "the overflow location does not exist; not used");
            None
        }
        Err(e) => {
            tracing::warn!(location = %location.name, error = %crate::telemetry::chain(e.as_ref()), "could not read the overflow location; not used");
            None
        }
    }
}

/// The location's overflow location, and whether every line here is in use
/// with one free there. A failed read, or an overflow location that is gone,
/// only means no overflow: the caller is routed as if there were none.
async fn overflow_of(state: &AppState, location: &Location) -> Option<(Location, bool)> {
    let overflow = overflow_location(state, location).await?;
    let in_use = match state.store().live_callers(crate::stats::MAX_OPEN).await {
        Ok(live) => live,
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "could not count the lines in use; no overflow for busy lines");
            Vec::new()
        }
    };
    let bridged = |l: &Location| in_use.iter().find(|(n, _, _)| *n == l.name).map_or(0, |(_, _, b)| *b);
    let busy = bridged(location) >= i64::from(location.lines) && bridged(&overflow) < i64::from(overflow.lines);
    Some((overflow, busy))
}

/// The queue's `waitUrl`: hold music, after the caller's place and expected
/// wait or a comfort message when the journey says so, until the journey
/// says the caller should leave (waited too long, or settled elsewhere with
/// the REST redirect overdue).
pub(super) async fn hold(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call: CallSid = sid_param(&req, "CallSid")?;
    let queue_time_secs: u32 = req.get("QueueTime").and_then(|t| t.parse().ok()).unwrap_or(0);
    // The location only changes what the caller hears: a failed read plays the
    // business's hold music rather than fail the waitUrl (after a failed waitUrl,
    // Twilio leaves the caller in silence and never asks again).
    let location = location_of(&state, &req).await.unwrap_or_else(|e| {
        tracing::warn!(error = %crate::telemetry::chain(&e), "could not read the caller's location; the business's hold music");
        None
    });
    let settings = state.settings();
    let lang = caller_language(&state, &req, location.as_ref());
    let sp = ivr::speaker(settings, lang, location.as_ref());
    let comforts = location.as_ref().map_or(&[][..], |l| l.comfort_messages_in(&lang.tag));
    // A callback needs a number to call back.
    let can_call_back = req.get("From").is_some_and(|f| twilio::E164::parse(f).is_ok());
    let event = Event::Hold {
        queue: req.query.get("location").map(str::to_owned),
        queue_time_secs,
        announce_every_secs: ivr::announce_every_secs(settings, location.as_ref()),
        comfort: !comforts.is_empty(),
        callback_after_secs: location
            .as_ref()
            .and_then(|l| l.spec.callback)
            .filter(|_| can_call_back)
            .map(|c| c.offer_after_secs),
    };
    let done = caller_events(&state, &call, vec![event]).await?;
    let (words, callback) = match done.answer {
        Answer::Leave => {
            tracing::info!(queue_time_secs, outcome = %done.outcome, "the caller leaves the queue");
            return Ok(TwiML(twilio::twiml::Response::new().verb(twilio::twiml::Verb::Leave)));
        }
        Answer::Hold { announce: true, callback, .. } => {
            let words = match &location {
                Some(l) => announcement(&state, &call, l, lang).await,
                None => None,
            };
            (words, callback)
        }
        Answer::Hold { comfort: Some(n), callback, .. } if !comforts.is_empty() => {
            (Some(comforts[n as usize % comforts.len()].trim().to_owned()), callback)
        }
        Answer::Hold { callback, .. } => (None, callback),
        _ => (None, None),
    };
    Ok(TwiML(match callback {
        Some(offer) => {
            let mut q: Vec<(&str, &str)> =
                ["location", "lang"].iter().filter_map(|k| req.query.get(k).map(|v| (*k, v))).collect();
            q.dedup();
            let action = state.urls().url("/callback-choice", &q);
            ivr::hold_with_callback(settings, location.as_ref(), words.as_deref(), offer, &action, &sp)
        }
        None => ivr::hold(settings, location.as_ref(), words.as_deref(), &sp),
    }))
}

/// The hold `<Gather>`'s action: 1 takes the callback (the journey says
/// whether it may), and the caller leaves the queue; any other key, or a
/// callback the journey refuses, goes on holding.
pub(super) async fn callback_choice(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call: CallSid = sid_param(&req, "CallSid")?;
    let digits = req.get("Digits").unwrap_or_default();
    let location = location_of(&state, &req).await?;
    let policy = location.as_ref().and_then(|l| l.spec.callback);
    let number = req.get("From").and_then(|f| twilio::E164::parse(f).ok());
    let (Some(policy), Some(number), "1") = (policy, number, digits) else {
        tracing::info!(digits, "no callback: the caller holds on");
        return Ok(TwiML(ivr::empty()));
    };
    let wait_for_opening = policy.at_closing == crate::domain::AtClosing::NextOpening;
    let to_list = policy.at_closing == crate::domain::AtClosing::VoicemailList;
    let event = Event::CallbackChosen { number, tries: policy.tries, wait_for_opening, to_list };
    let d = Delivery::to_keys([call.to_string()], vec![event], state.policy()).with_audit(
        "voice",
        "callback.chosen",
        Some(call.as_str()),
        req.to_json(),
    );
    let done = deliver(&state, d).await?;
    Ok(TwiML(match done.answer {
        Answer::Leave => {
            tracing::info!("the caller chose a callback and leaves the queue");
            twilio::twiml::Response::new().verb(twilio::twiml::Verb::Leave)
        }
        _ => {
            tracing::info!(outcome = %done.outcome, "callback refused: the caller holds on");
            ivr::empty()
        }
    }))
}

/// The caller's place in `location`'s queue and the expected wait, in words
/// (`crate::announce`). A failed read says nothing rather than fail the
/// hold music: the caller still waits.
async fn announcement(state: &AppState, call: &CallSid, location: &Location, lang: &Language) -> Option<String> {
    let read = async {
        let Some(standing) = state.store().standing(call.as_str(), location.lines).await? else {
            return anyhow::Ok(None);
        };
        let since = crate::store::now_ms().saturating_sub(announce::SAMPLE_WINDOW_MS);
        let handled = state.store().handle_times(&location.name, since, announce::SAMPLE_CALLS).await?;
        let wait = announce::expected_wait_secs(standing, &handled);
        tracing::info!(
            position = standing.position(),
            in_use = standing.in_use,
            samples = handled.len(),
            wait_secs = wait,
            "announcing the caller's place"
        );
        Ok(lang.announcement(Some(standing.position()), wait))
    };
    read.await.unwrap_or_else(|e| {
        tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "could not read the caller's place; hold music only");
        None
    })
}

/// The `Enqueue` action: the caller's leg left the queue.
pub(super) async fn enqueue_action(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call: CallSid = sid_param(&req, "CallSid")?;
    let raw = req.get("QueueResult");
    let result = QueueResult::parse(raw);
    let queue = req.query.get("location").map(str::to_owned);
    let mut d = Delivery::to_keys([call.to_string()], vec![Event::QueueExit { result, queue }], state.policy());
    d = d.with_audit("voice", &format!("queue.{}", raw.unwrap_or("error")), Some(call.as_str()), req.to_json());
    let done = deliver(&state, d).await?;
    // Twilio sends the seconds the caller spent in the queue; our action URL
    // names the location (a Studio flow's may not).
    if let Some(secs) = req.get("QueueTime").and_then(|t| t.parse::<u32>().ok()) {
        crate::stats::queue_wait(req.query.get("location"), f64::from(secs));
    }
    let settings = state.settings();
    Ok(TwiML(match done.answer {
        Answer::Goodbye => ivr::goodbye(&ivr::speaker(settings, caller_language(&state, &req, None), None)),
        Answer::CallbackBye { number, closed } => {
            let location = location_of(&state, &req).await.ok().flatten();
            let lang = caller_language(&state, &req, location.as_ref());
            let sp = ivr::speaker(settings, lang, location.as_ref());
            let closed = location.as_ref().filter(|_| closed).map(|l| l.display_name_in(&lang.tag));
            ivr::callback_bye(number.as_str(), closed, &sp)
        }
        Answer::TransferAtClosing { from, to } => transfer_at_closing(&state, &req, &from, &to).await?,
        Answer::Fallback { location, reason } => {
            // `leave` follows our `<Leave>`, `redirected` our REST redirect; anything
            // else took the caller out of the queue without us.
            if !matches!(result, QueueResult::Leave | QueueResult::Redirected) {
                tracing::warn!(queue_result = raw, "caller left the queue unexpectedly");
            }
            let name = location.or_else(|| req.query.get("location").map(str::to_owned));
            let location = match name {
                Some(n) => state.store().location(&n).await?,
                None => None,
            };
            fallback(&state, &req, location.as_ref(), reason)
        }
        _ => ivr::empty(),
    }))
}

async fn location_of(state: &AppState, req: &TwilioRequest) -> Result<Option<Location>, WebhookError> {
    match req.query.get("location") {
        Some(name) => Ok(state.store().location(name).await?),
        None => Ok(None),
    }
}

/// The `<Queue url>` of a bridge to the overflow location: what the caller
/// hears just before it.
pub(super) async fn transfer_notice(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let to = location_of(&state, &req).await?;
    let lang = caller_language(&state, &req, None);
    let sp = ivr::speaker(state.settings(), lang, None);
    Ok(TwiML(ivr::transfer_notice(&sp, to.as_ref())))
}

/// The caller, out of `from`'s queue at its closing time, to `to`'s queue
/// (the closing policy `overflow`). Voicemail at `from` when either location
/// is gone or there is no workflow; a failed read is an error (Twilio then
/// plays its fallback), not a lost caller.
async fn transfer_at_closing(
    state: &AppState,
    req: &TwilioRequest,
    from: &str,
    to: &str,
) -> Result<twilio::twiml::Response, WebhookError> {
    let store = state.store();
    let (from, to) = (store.location(from).await?, store.location(to).await?);
    let workflow = state.workflow_sid().await?;
    let (Some(from_l), Some(to_l), Some(workflow)) = (from.as_ref(), to, workflow) else {
        tracing::warn!("cannot transfer at closing time (a location or the workflow is gone); voicemail");
        // The journey hears where the caller went instead.
        let call: CallSid = sid_param(req, "CallSid")?;
        let away = Event::CallerTurnedAway {
            outcome: Outcome::ClosedWhileWaiting,
            location: from.as_ref().map(|l| l.name.clone()),
        };
        caller_events(state, &call, vec![away]).await?;
        return Ok(fallback(state, req, from.as_ref(), Outcome::ClosedWhileWaiting));
    };
    let lang = caller_language(state, req, Some(from_l));
    let sp = ivr::speaker(state.settings(), lang, Some(from_l));
    let caller =
        Caller { number: req.get("From").unwrap_or("anonymous"), call_token: None, name: req.get("CallerName") };
    tracing::info!(from = %from_l.name, to = %to_l.name, "closed while waiting: the caller moves to the overflow location's queue");
    let then = overflow_location(state, &to_l).await;
    let urls = state.urls();
    let transfer = ivr::ClosingTransfer { from: from_l, to: &to_l, then: then.as_ref() };
    Ok(ivr::transfer_at_closing(state.settings(), &urls, workflow.as_str(), transfer, &caller, &sp))
}

/// Where the caller is redirected after a failed attempt to reach the location.
pub(super) async fn caller_fallback(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let reason = req.query.get("reason").and_then(Outcome::parse).unwrap_or(Outcome::DialFailed);
    // Closed at `location`: to the overflow location's queue (the closing policy), unless the
    // journey says otherwise (the redirect came late, after the call was connected, say).
    if req.query.get("transfer").is_some() {
        let call: CallSid = sid_param(&req, "CallSid")?;
        let done = caller_events(&state, &call, vec![Event::TransferAsked]).await?;
        return Ok(TwiML(match done.answer {
            Answer::TransferAtClosing { from, to } => transfer_at_closing(&state, &req, &from, &to).await?,
            Answer::Goodbye => ivr::goodbye(&ivr::speaker(state.settings(), caller_language(&state, &req, None), None)),
            Answer::Fallback { location, reason } => {
                tracing::warn!(outcome = %done.outcome, "a transfer redirect after the call settled: voicemail");
                let location = match location {
                    Some(n) => state.store().location(&n).await?,
                    None => None,
                };
                fallback(&state, &req, location.as_ref(), reason)
            }
            _ => ivr::empty(),
        }));
    }
    let location = location_of(&state, &req).await?;
    // A callback made at closing time (the closing policy): the goodbye, not voicemail.
    let number = req.get("From").and_then(|f| twilio::E164::parse(f).ok());
    if let (Some("1"), Some(number), Some(l)) = (req.query.get("callback"), number, location.as_ref()) {
        let lang = caller_language(&state, &req, Some(l));
        let sp = ivr::speaker(state.settings(), lang, Some(l));
        return Ok(TwiML(ivr::callback_bye(number.as_str(), Some(l.display_name_in(&lang.tag)), &sp)));
    }
    Ok(TwiML(fallback(&state, &req, location.as_ref(), reason)))
}

/// The voicemail offer after a failure, in the caller's language.
fn fallback(
    state: &AppState,
    req: &TwilioRequest,
    location: Option<&Location>,
    reason: Outcome,
) -> twilio::twiml::Response {
    let settings = state.settings();
    let sp = ivr::speaker(settings, caller_language(state, req, location), location);
    match location {
        Some(l) => ivr::fallback(settings, &state.urls(), l, reason, &sp),
        None => {
            let msg = sp.text(crate::prompts::Prompt::CouldNotConnect, &[]);
            ivr::voicemail(settings, &state.urls(), None, &msg, &sp)
        }
    }
}

/// The `Record` action: the caller's journey hears of the voicemail (it owes
/// the notifications), the voicemail is stored in the same transaction, and
/// the caller hears goodbye. The recording's URL is kept for the server's own
/// fetch and never logged above debug level.
pub(super) async fn voicemail_complete(
    State(state): State<AppState>,
    req: TwilioRequest,
) -> Result<TwiML, WebhookError> {
    let call_sid = sid_param::<CallSid>(&req, "CallSid")?;
    let lang = caller_language(&state, &req, None);
    let goodbye = || Ok(TwiML(ivr::goodbye(&ivr::speaker(state.settings(), lang, None))));
    let Some(url) = req.get("RecordingUrl").filter(|u| !u.is_empty()) else {
        return goodbye();
    };
    let Some(recording) = req.get("RecordingSid").and_then(|s| s.parse::<RecordingSid>().ok()) else {
        // Without its SID the recording cannot be listed or fetched by it;
        // keep the URL on the call as before.
        state.store().set_recording(call_sid.as_str(), url).await?;
        tracing::warn!("voicemail recorded without a RecordingSid; kept on the call only");
        return goodbye();
    };
    let location = location_of(&state, &req).await?;
    let duration_secs = req.get("RecordingDuration").and_then(|d| d.trim().parse::<u32>().ok());
    let event = Event::VoicemailRecorded {
        recording: recording.to_string(),
        duration_secs,
        recipients: location.as_ref().map(crate::notify::recipients).unwrap_or_default(),
        transcribe: location.as_ref().is_some_and(|l| l.spec.transcribe),
    };
    let voicemail = NewVoicemail {
        recording_sid: recording.to_string(),
        call_sid: call_sid.to_string(),
        caller: req.get("From").or_else(|| req.get("Caller")).unwrap_or("anonymous").to_owned(),
        location: location.as_ref().map(|l| l.name.clone()),
        duration_secs: duration_secs.map(i64::from),
        recorded_at_ms: crate::store::now_ms(),
        recording_url: url.to_owned(),
    };
    let mut d = Delivery::to_keys([call_sid.to_string(), recording.to_string()], vec![event], state.policy());
    d.voicemail = Some(voicemail);
    let done = deliver(&state, d).await?;
    tracing::info!(recording_sid = %recording, duration_secs, notifications = done.queued, "voicemail recorded");
    tracing::debug!(recording_url = url, "voicemail recording");
    goodbye()
}

/// The `Record` verb's `transcribeCallback`: keep the text, and tell the
/// caller's journey, which lets the voicemail's notifications go.
pub(super) async fn voicemail_transcription(
    State(state): State<AppState>,
    req: TwilioRequest,
) -> Result<TwiML, WebhookError> {
    let recording: RecordingSid = sid_param(&req, "RecordingSid")?;
    let status = req.get("TranscriptionStatus").unwrap_or("completed").to_owned();
    let text = req.get("TranscriptionText").map(str::trim).filter(|t| !t.is_empty() && status == "completed");
    let t =
        Transcription { recording_sid: recording.to_string(), status: status.clone(), text: text.map(str::to_owned) };
    // Found by its recording, or by the caller's call when the callbacks crossed.
    let mut keys = vec![recording.to_string()];
    keys.extend(req.get("CallSid").and_then(|c| c.parse::<CallSid>().ok()).map(|c| c.to_string()));
    let event = Event::Transcribed { recording: recording.to_string() };
    let mut d = Delivery::new(Route::Keys { keys, create: false }, vec![event], state.policy());
    d.transcription = Some(t);
    let done = deliver(&state, d).await?;
    if done.journey.is_some() {
        tracing::info!(recording_sid = %recording, status, notifications = done.queued, "voicemail transcribed");
    } else {
        tracing::warn!(recording_sid = %recording, status, "transcription of an unknown call; kept if its voicemail is");
    }
    Ok(TwiML(ivr::empty()))
}

/// The reservation a location leg was placed for: `reservationSid` in its
/// URLs, or `queue` in those of the Node version this replaces (so legs it
/// placed before a cut-over are still bridged).
fn leg_reservation(req: &TwilioRequest) -> Result<ReservationSid, WebhookError> {
    let key = if req.query.get("reservationSid").is_some() { "reservationSid" } else { "queue" };
    if req.query.get(key).is_none() {
        return Err(WebhookError::BadRequest("missing parameter reservationSid".into()));
    }
    let sid: ReservationSid = sid_param(req, key)?;
    tracing::Span::current().record("reservation_sid", sid.as_str());
    Ok(sid)
}

/// The SIDs that route a location leg's webhook to its journey.
fn leg_keys(req: &TwilioRequest, reservation: &ReservationSid, leg: &CallSid) -> Vec<String> {
    let mut keys = vec![reservation.to_string(), leg.to_string()];
    keys.extend(["callSid", "taskSid"].iter().filter_map(|k| req.query.get(k)).map(str::to_owned));
    keys
}

/// The events of a location leg's webhook: the task its URL names first (a
/// bare `ReservationSeen`, which only makes them known), so that a journey
/// that never heard `reservation.created` can still cancel the task.
fn leg_events(req: &TwilioRequest, reservation: &ReservationSid, event: Event) -> Vec<Event> {
    let task = req.query.get("taskSid").and_then(|t| t.parse::<TaskSid>().ok());
    let seen = task.map(|task| Event::ReservationSeen {
        task,
        reservation: reservation.clone(),
        status: ReservationStatus::Pending,
    });
    seen.into_iter().chain([event]).collect()
}

fn leg_attempt(req: &TwilioRequest) -> Option<u32> {
    req.query.get("attempt").and_then(|a| a.parse().ok())
}

/// The outbound leg's answer URL: the journey says whether to bridge, or
/// to screen the call first.
pub(super) async fn dial_queue(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let reservation = leg_reservation(&req)?;
    let leg: CallSid = sid_param(&req, "CallSid")?;
    let answered_by = AnsweredBy::parse(req.params.get("AnsweredBy"));
    let keys = leg_keys(&req, &reservation, &leg);
    let event = Event::LegAnswered { reservation: reservation.clone(), attempt: leg_attempt(&req), leg, answered_by };
    let events = leg_events(&req, &reservation, event);
    let done = deliver(&state, Delivery::to_keys(keys, events, state.policy())).await?;
    leg_answer(&state, &req, done, Some(answered_by)).await
}

/// The screening prompt's `Gather` action (and its no-key redirect, without
/// `Digits`): the journey bridges on 1, asks again once after a wrong key,
/// and otherwise counts the location as not answering.
pub(super) async fn screen(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let reservation = leg_reservation(&req)?;
    let leg: CallSid = sid_param(&req, "CallSid")?;
    let prompt: u32 = req.query.get("prompt").and_then(|p| p.parse().ok()).unwrap_or(1);
    let key = ScreenKey::parse(req.params.get("Digits"));
    let keys = leg_keys(&req, &reservation, &leg);
    let event = Event::LegScreened { reservation: reservation.clone(), attempt: leg_attempt(&req), leg, prompt, key };
    let events = leg_events(&req, &reservation, event);
    let d = Delivery::to_keys(keys, events, state.policy()).with_audit(
        "voice",
        &format!("screen.{}", key.as_str()),
        req.get("CallSid"),
        req.to_json(),
    );
    let done = deliver(&state, d).await?;
    tracing::info!(prompt, key = key.as_str(), outcome = %done.outcome, "screening answered");
    leg_answer(&state, &req, done, None).await
}

/// Renders the journey's answer to a location leg's webhook.
async fn leg_answer(
    state: &AppState,
    req: &TwilioRequest,
    done: Delivered,
    answered_by: Option<AnsweredBy>,
) -> Result<TwiML, WebhookError> {
    Ok(TwiML(match done.answer {
        Answer::Bridge { reservation, transfer: None } => ivr::dial_queue(reservation.as_str(), None),
        Answer::Bridge { reservation, transfer: Some(t) } => {
            tracing::info!(to = %t.to, "the caller is bridged to the overflow location");
            let mut q = vec![("location", t.to.as_str())];
            q.extend(t.language.as_deref().map(|l| ("lang", l)));
            let notice = state.urls().url("/transfer-notice", &q);
            ivr::dial_queue(reservation.as_str(), Some(notice))
        }
        Answer::Screen { prompt, location, caller, caller_name, timeout_secs, waiting_since_ms } => {
            // The receptionist hears the location's language.
            let found = state.store().location(&location).await?;
            let lang = location_language(state, found.as_ref());
            let display = found.as_ref().map_or(location.as_str(), |l| l.display_name_in(&lang.tag));
            let text = match waiting_since_ms {
                Some(ms) => {
                    let since = clock_time_at(state.clock(), ms, found.as_ref());
                    ivr::callback_screen_text(display, caller.as_deref(), &since, prompt, lang)
                }
                None => ivr::screen_text(display, caller.as_deref(), caller_name.as_deref(), prompt, lang),
            };
            let sp = ivr::speaker(state.settings(), lang, found.as_ref());
            ivr::screen(&screen_url(state, req, prompt), &text, timeout_secs, &sp)
        }
        Answer::CallBack { reservation, number, from } => {
            tracing::info!(reservation_sid = %reservation, "the location accepted the callback; dialling the caller");
            ivr::call_back(number.as_str(), from.as_str(), &leg_url(state, req, "/callback-dialed", None))
        }
        Answer::Refuse { caller_gone: true } => {
            tracing::info!(outcome = %done.outcome, "the caller is gone; not bridging the location");
            let found = location_of(state, req).await.ok().flatten();
            let lang = location_language(state, found.as_ref());
            ivr::caller_gone(&ivr::speaker(state.settings(), lang, found.as_ref()))
        }
        _ => {
            let answered_by = answered_by.map(AnsweredBy::as_str);
            tracing::info!(answered_by, outcome = %done.outcome, "not bridging this leg");
            ivr::hangup()
        }
    }))
}

/// The screening prompt's action: the leg's own identifiers (as its other
/// URLs carry them) and which asking it answers.
fn screen_url(state: &AppState, req: &TwilioRequest, prompt: u32) -> String {
    leg_url(state, req, "/screen", Some(prompt))
}

/// A URL of ours for a location leg's next webhook: the leg's own
/// identifiers, as its other URLs carry them (and the prompt, for `/screen`).
fn leg_url(state: &AppState, req: &TwilioRequest, path: &str, prompt: Option<u32>) -> String {
    let prompt = prompt.map(|p| p.to_string());
    let mut query: Vec<(&str, &str)> = ["reservationSid", "queue", "taskSid", "attempt", "location", "from", "callSid"]
        .iter()
        .filter_map(|k| req.query.get(k).map(|v| (*k, v)))
        .collect();
    query.extend(prompt.as_deref().map(|p| ("prompt", p)));
    state.urls().url(path, &query)
}

/// A time of day ("10:32") as the location's clock shows it, for the wall
/// time `ms` (read on the business clock).
fn clock_time_at(clock: crate::clock::Clock, ms: i64, location: Option<&Location>) -> String {
    let at = clock.business(jiff::Timestamp::from_millisecond(ms).unwrap_or_default());
    match location {
        Some(l) => l.schedule.clock_time(at),
        None => at.strftime("%H:%M UTC").to_string(),
    }
}

/// The `<Dial>` action of a callback's location leg: whether the caller
/// answered decides the callback (connected, or another try later).
pub(super) async fn callback_dialed(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let reservation = leg_reservation(&req)?;
    let leg: CallSid = sid_param(&req, "CallSid")?;
    let status = req.get("DialCallStatus").unwrap_or("failed");
    let answered = status == "completed";
    let keys = leg_keys(&req, &reservation, &leg);
    let event = Event::CallbackDialed { reservation: reservation.clone(), answered };
    let d = Delivery::to_keys(keys, vec![event], state.policy()).with_audit(
        "voice",
        &format!("callback.{status}"),
        Some(leg.as_str()),
        req.to_json(),
    );
    let done = deliver(&state, d).await?;
    tracing::info!(dial_call_status = status, outcome = %done.outcome, "callback dialled");
    if answered {
        return Ok(TwiML(ivr::hangup()));
    }
    let found = location_of(&state, &req).await.ok().flatten();
    let lang = location_language(&state, found.as_ref());
    let sp = ivr::speaker(state.settings(), lang, found.as_ref());
    Ok(TwiML(ivr::callback_missed(&sp)))
}

/// Status callbacks: of a location leg (its URL names the reservation), or
/// of the caller's own leg (the number's status callback). Every one is kept
/// for audit and delivered to the journey.
pub(super) async fn status_callback(State(state): State<AppState>, req: TwilioRequest) -> Result<TwiML, WebhookError> {
    let call: CallSid = sid_param(&req, "CallSid")?;
    let raw = req.require("CallStatus")?;
    let status =
        CallStatus::parse(raw).ok_or_else(|| WebhookError::BadRequest(format!("CallStatus {raw:?} is not known")))?;
    let num = |k: &str| req.params.get(k).and_then(|v| v.parse::<i64>().ok());
    let sequence = num("SequenceNumber").and_then(|n| u32::try_from(n).ok());
    let is_leg = req.query.get("reservationSid").is_some() || req.query.get("queue").is_some();
    let record = StatusRecord {
        call_sid: call.to_string(),
        inbound_call_sid: req.query.get("callSid").map(str::to_owned),
        status: raw.to_owned(),
        sequence_number: num("SequenceNumber"),
        call_duration: num("CallDuration"),
        answered_by: req.params.get("AnsweredBy").map(str::to_owned),
        sip_response_code: num("SipResponseCode"),
    };
    let mut d = if is_leg {
        let reservation = leg_reservation(&req)?;
        let keys = leg_keys(&req, &reservation, &call);
        let event = Event::LegStatus {
            reservation: reservation.clone(),
            attempt: leg_attempt(&req),
            leg: call,
            status,
            sequence,
        };
        Delivery::to_keys(keys, leg_events(&req, &reservation, event), state.policy())
    } else {
        Delivery::to_keys([call.to_string()], vec![Event::CallerStatus { status, sequence }], state.policy())
    };
    d.status = Some(record);
    let done = deliver(&state, d).await?;
    if done.outcome.is_final() && status.is_final() {
        tracing::debug!(status = raw, outcome = %done.outcome, "leg ended");
    }
    Ok(TwiML(ivr::empty()))
}
