//! One call leg: rings a simulated phone or answers a simulated caller,
//! fetches TwiML with signed requests and runs it verb by verb in virtual
//! time, sending status callbacks as it goes.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use twilio::Params;
use twilio::twiml::{self, Dial, DialNoun, Enqueue, Method, Prompt, Verb};

use super::Source;
use super::phone::{self, Ring};
use crate::clock::{VMs, rfc2822};
use crate::engine;
use crate::state::{Call, Heard, TaskStatus};
use crate::webhook::Hook;
use crate::{LegCmd, Shared};

/// A wait long enough to mean "until something happens".
const FOREVER_MS: u64 = 365 * 86_400 * 1000;
/// What a caller hears when a call's TwiML cannot be fetched or run.
pub(crate) const APPLICATION_ERROR: &str = "We are sorry, an application error has occurred. Goodbye.";
/// Documents one call may fetch back to back with nothing heard between
/// them, so a redirect loop cannot spin forever. A caller on hold polling a
/// `waitUrl` that plays music is no loop: each poll plays something.
const MAX_DOCUMENTS: u32 = 100;

/// Why a leg stopped doing what it was doing.
#[derive(Debug)]
pub(super) enum Stop {
    Hangup(&'static str),
    Redirect(Source),
    Bridge(String),
    PeerEnded,
    Leave,
    Reject(&'static str),
    Fail(u32, String),
}

/// The next document to fetch, with the parameters the fetch adds.
pub(super) struct Next {
    pub src: Source,
    pub extra: Params,
}

impl Next {
    fn plain(src: Source) -> Self {
        Self { src, extra: Params::new() }
    }
}

/// A document to fetch while queued, with its own parameters.
#[derive(Clone)]
struct WaitNext {
    url: String,
    method: String,
    extra: Params,
}

impl WaitNext {
    fn plain(url: String, method: String) -> Self {
        WaitNext { url, method, extra: Params::new() }
    }
}

/// Where a waitUrl document sends the queued caller next.
enum WaitTurn {
    /// `<Redirect>`: the new waitUrl.
    Redirect(String, String),
    /// A `<Gather>` got digits: its action, once.
    Gathered(WaitNext),
}

/// Where a leg sends its status callbacks.
pub(super) struct StatusCb {
    pub url: String,
    pub method: String,
    pub events: Vec<String>,
}

/// Work for a leg's status-callback sender.
pub(super) enum CbJob {
    Send(Params),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// How an outbound-api leg was asked to ring.
pub(super) struct Outbound {
    /// When the account's calls-per-second queue lets the call out.
    pub dial_at: VMs,
    pub first: Source,
    pub timeout_secs: u64,
    pub machine_detection: Option<String>,
    pub amd_timeout_secs: u64,
}

pub(super) struct Leg {
    pub sh: Arc<Shared>,
    pub sid: String,
    pub rx: mpsc::UnboundedReceiver<LegCmd>,
    pub base: Params,
    pub doc_url: String,
    pub inputs: VecDeque<String>,
    /// When the simulated party hangs up unless bridged first.
    pub hangup_at: Option<VMs>,
    pub talk_secs: Option<u64>,
    pub cb: Option<StatusCb>,
    pub cb_tx: Option<mpsc::UnboundedSender<CbJob>>,
    pub seq: u32,
    pub status: &'static str,
    /// Set while waiting to be bridged (in `<Enqueue>`, or a dequeuing leg
    /// waiting for its caller): only then may a bridge arrive.
    pub in_queue: bool,
    /// Documents fetched since the caller last heard something (or waited).
    pub documents: u32,
    /// The number's `VoiceFallbackUrl` and its method, for an inbound call.
    pub fallback: Option<(String, String)>,
}

fn resolve(base: &str, rel: &str) -> String {
    if rel.starts_with("http://") || rel.starts_with("https://") {
        return rel.to_owned();
    }
    let Some((scheme, rest)) = base.split_once("://") else { return rel.to_owned() };
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..host_end]);
    if rel.starts_with('/') {
        return format!("{origin}{rel}");
    }
    let path = rest[host_end..].split(['?', '#']).next().unwrap_or("/");
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{origin}{dir}/{rel}")
}

fn method_str(m: Option<Method>) -> String {
    match m {
        Some(Method::Get) => "GET".into(),
        _ => "POST".into(),
    }
}

/// Virtual time to speak `text` (about 15 characters a second, at least 1 s).
fn say_ms(text: &str, loops: Option<u32>) -> u64 {
    let once = (text.chars().count() as u64 * 1000 / 15).max(1000);
    once * u64::from(loop_count(loops))
}

/// `loop="0"` means "until interrupted"; it is capped at an hour.
fn loop_count(l: Option<u32>) -> u32 {
    match l {
        Some(0) => 360,
        Some(n) => n.min(1000),
        None => 1,
    }
}

/// Every `<Play>` clip is taken to last 10 virtual seconds.
const PLAY_MS: u64 = 10_000;

/// How long a `<Play>` takes: every file lasts `PLAY_MS`.
fn play_ms(p: &twiml::Play) -> u64 {
    PLAY_MS * u64::from(loop_count(p.loop_count))
}

/// How long a `<Pause>` takes (Twilio's default is one second).
fn pause_ms(p: &twiml::Pause) -> u64 {
    u64::from(p.length.unwrap_or(1)) * 1000
}

/// The digits a `<Gather>` reports for what was pressed: up to its
/// `finishOnKey` (`#` by default), at most `numDigits`.
fn gathered(g: &twiml::Gather, mut digits: String) -> String {
    let key = g.finish_on_key.clone().unwrap_or_else(|| "#".into());
    if let Some(k) = key.chars().next()
        && let Some(i) = digits.find(k)
    {
        digits.truncate(i);
    }
    if let Some(n) = g.num_digits {
        digits = digits.chars().take(n as usize).collect();
    }
    digits
}

/// How a `<Dial>` ended: (`DialCallStatus`, the other leg), or why this leg
/// stopped meanwhile (and the other leg).
type DialOutcome = Result<(&'static str, Option<String>), (Stop, Option<String>)>;

/// The answered child leg of a `<Dial><Number>`, as its whisper sees it.
struct ChildCall<'a> {
    sid: &'a str,
    from: &'a str,
    to: &'a str,
    /// The phone's keypresses, one entry per `<Gather>`.
    digits: Option<&'a str>,
}

fn prompt_ms(p: &Prompt) -> u64 {
    match p {
        Prompt::Say(s) => say_ms(&s.text, s.loop_count),
        Prompt::Play(p) => play_ms(p),
        Prompt::Pause(p) => pause_ms(p),
    }
}

impl Leg {
    fn now(&self) -> VMs {
        self.sh.clock.now_ms()
    }

    fn update(&self, f: impl FnOnce(&mut Call, VMs)) {
        self.sh.with(|st, now| {
            if let Some(c) = st.calls.get_mut(&self.sid) {
                f(c, now);
                c.updated = now;
            }
        });
    }

    fn note(&self, what: impl Into<String>) {
        let what = what.into();
        self.update(|c, now| c.note(now, what));
    }

    fn send_to(&self, peer: &str, cmd: LegCmd) -> bool {
        let legs = self.sh.legs.lock().unwrap_or_else(|e| e.into_inner());
        legs.get(peer).is_some_and(|tx| tx.send(cmd).is_ok())
    }

    /// Says or plays one prompt to this leg's party: notes what they heard
    /// (when it began) and takes as long as it lasts.
    async fn hear(&mut self, p: &Prompt) -> Result<(), Stop> {
        let heard = match p {
            Prompt::Say(s) => Some(("say", s.text.clone(), s.language.clone(), s.voice.clone())),
            Prompt::Play(p) => Some(("play", p.url.clone(), None, None)),
            Prompt::Pause(_) => None,
        };
        if let Some((verb, what, language, voice)) = heard {
            self.update(|c, now| c.heard.push(Heard { at_ms: now, verb, what, language, voice }));
        }
        self.wait(prompt_ms(p)).await
    }

    /// Waits `ms` virtual milliseconds unless a command or the party's
    /// hang-up comes first.
    pub(super) async fn wait(&mut self, ms: u64) -> Result<(), Stop> {
        if ms > 0 {
            self.documents = 0;
        }
        let until = self.now().saturating_add(ms);
        let mut stop = self.sh.shutdown.clone();
        loop {
            let deadline = match self.hangup_at {
                Some(h) if h < until => h,
                _ => until,
            };
            tokio::select! {
                biased;
                cmd = self.rx.recv() => match cmd {
                    Some(LegCmd::Hangup { status }) => return Err(Stop::Hangup(status)),
                    Some(LegCmd::Redirect(s)) => return Err(Stop::Redirect(s)),
                    Some(LegCmd::Bridge { peer }) => {
                        if self.in_queue {
                            return Err(Stop::Bridge(peer));
                        }
                        // Not waiting in a queue: refuse, so the agent leg does not wait forever.
                        self.send_to(&peer, LegCmd::PeerEnded);
                    }
                    Some(LegCmd::PeerEnded) => return Err(Stop::PeerEnded),
                    None => {
                        self.sh.clock.sleep_until(deadline).await;
                        return if deadline < until { Err(Stop::Hangup("completed")) } else { Ok(()) };
                    }
                },
                _ = crate::until_shutdown(&mut stop) => return Err(Stop::Hangup("completed")),
                _ = self.sh.clock.sleep_until(deadline) => {
                    if deadline < until || self.hangup_at == Some(deadline) {
                        self.note("party hung up");
                        return Err(Stop::Hangup("completed"));
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Sends a status callback if the event was asked for.
    async fn status_callback(&mut self, event: &str, status: &str, sip: Option<u16>) {
        let Some(cb) = &self.cb else { return };
        if !cb.events.iter().any(|e| e == event) {
            return;
        }
        let (url, method) = (cb.url.clone(), cb.method.clone());
        let (duration, ts) = self.sh.with(|st, now| {
            let d = st.calls.get(&self.sid).and_then(|c| c.answered.map(|a| now.saturating_sub(a) / 1000)).unwrap_or(0);
            (d, now)
        });
        let mut p = self.base.clone();
        p.push("CallStatus", status)
            .push("SequenceNumber", self.seq.to_string())
            .push("Timestamp", rfc2822(self.sh.clock.wall(ts)))
            .push("CallbackSource", "call-progress-events");
        if event == "completed" {
            p.push("CallDuration", duration.to_string()).push("Duration", duration.div_ceil(60).to_string());
        }
        p.push_opt("SipResponseCode", sip.map(|s| s.to_string()));
        self.seq += 1;
        // Like Twilio, the call does not wait for its status callbacks; they
        // go out in order from the leg's own sender task.
        let tx = self.cb_tx.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<CbJob>();
            let sh = self.sh.clone();
            tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    match job {
                        CbJob::Send(p) => {
                            // A failed status callback is logged (the request log) and the call goes on.
                            let _ = sh.webhook(Hook::Notify, &method, &url, &p).await;
                        }
                        CbJob::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
            tx
        });
        let _ = tx.send(CbJob::Send(p));
    }

    /// Posts the recording's transcription to `callback` a while after the
    /// recording ends ([`TRANSCRIBE_MS`], whether or not the call goes on),
    /// with Twilio's parameters. Twilio transcribes 2 s to 120 s; outside
    /// that the status is `failed` and there is no text.
    fn transcribe_later(&self, callback: String, recording_sid: &str, recording_url: &str, secs: u64) {
        let sh = self.sh.clone();
        let mut p = Params::new();
        for (k, v) in self.base.iter().filter(|(k, _)| *k != "CallToken") {
            p.push(k, v);
        }
        let (sid, ok) = self.sh.with(|st, _| (st.sid("TR"), (2..=120).contains(&secs)));
        let from = self.base.get("From").unwrap_or("an unknown number").to_owned();
        p.push("TranscriptionSid", &sid)
            .push("TranscriptionStatus", if ok { "completed" } else { "failed" })
            .push("TranscriptionType", "fast")
            .push(
                "TranscriptionUrl",
                format!("{}/2010-04-01/Accounts/{}/Transcriptions/{sid}", sh.base_url, sh.config.account_sid),
            )
            .push("RecordingSid", recording_sid)
            .push("RecordingUrl", recording_url);
        if ok {
            p.push("TranscriptionText", transcription_text(&from, secs));
        }
        tokio::spawn(async move {
            sh.clock.sleep(TRANSCRIBE_MS).await;
            // A failed callback is in the request log; nothing waits on it.
            let _ = sh.webhook(Hook::Notify, "POST", &callback, &p).await;
        });
    }

    /// Waits until every queued status callback has been sent.
    async fn flush_callbacks(&mut self) {
        if let Some(tx) = self.cb_tx.take() {
            let (done, wait) = tokio::sync::oneshot::channel();
            if tx.send(CbJob::Flush(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }

    fn set_status(&mut self, status: &'static str) {
        self.status = status;
        self.update(|c, now| {
            c.status = status.into();
            c.note(now, format!("status {status}"));
            if status == "in-progress" && c.answered.is_none() {
                c.answered = Some(now);
            }
        });
    }

    /// Fetches and parses the next document. A URL that fails (no answer,
    /// an error status, TwiML that does not parse) falls back to the
    /// number's `VoiceFallbackUrl`, when there is one, with `ErrorCode` and
    /// `ErrorUrl` added, as Twilio does.
    async fn fetch(&mut self, next: &Next) -> Result<twiml::Response, Stop> {
        self.documents += 1;
        if self.documents > MAX_DOCUMENTS {
            return Err(Stop::Fail(
                11200,
                format!("more than {MAX_DOCUMENTS} TwiML documents fetched with nothing heard between them"),
            ));
        }
        let (url, method) = match &next.src {
            Source::Twiml(t) => {
                return twiml::Response::parse(t)
                    .map_err(|e| Stop::Fail(12100, format!("Document parse failure: {e}")));
            }
            Source::Url { url, method } => (resolve(&self.doc_url, url), method.clone()),
        };
        let (code, msg) = match self.fetch_url(&url, &method, &next.extra).await {
            Ok(doc) => return Ok(doc),
            Err(e) => e,
        };
        let Some((fallback, fallback_method)) = self.fallback.clone().filter(|(f, _)| *f != url) else {
            return Err(Stop::Fail(code, msg));
        };
        self.note(format!("error {code}: {msg}; requesting the fallback URL"));
        let mut extra = next.extra.clone();
        extra.push("ErrorCode", code.to_string()).push("ErrorUrl", twilio::overrides::split_fragment(&url).0);
        self.fetch_url(&fallback, &fallback_method, &extra).await.map_err(|(code, msg)| Stop::Fail(code, msg))
    }

    /// One TwiML request: the answer parsed, or Twilio's error code and message.
    async fn fetch_url(&mut self, url: &str, method: &str, extra: &Params) -> Result<twiml::Response, (u32, String)> {
        let mut p = self.base.clone();
        let status = if self.status == "ringing" { "ringing" } else { "in-progress" };
        p.push("CallStatus", status);
        for (k, v) in extra.iter() {
            p.push(k, v);
        }
        let shown = twilio::overrides::split_fragment(url).0;
        let body = match self.sh.webhook(Hook::Document, method, url, &p).await {
            Ok((s, body)) if (200..300).contains(&s) => {
                self.doc_url = url.to_owned();
                body
            }
            Ok((s, _)) => return Err((11200, format!("HTTP retrieval failure: {shown} answered {s}"))),
            Err(e) => return Err((e.code(), format!("HTTP retrieval failure: {shown}: {e}"))),
        };
        twiml::Response::parse(&body).map_err(|e| (12100, format!("Document parse failure: {e}")))
    }

    /// Runs documents until the call ends; returns the final status.
    pub(super) async fn run_documents(&mut self, first: Next) -> &'static str {
        let mut next = first;
        loop {
            let doc = match self.fetch(&next).await {
                Ok(d) => d,
                Err(stop) => return self.stopped(stop).await,
            };
            // An inbound call is answered by its first verb, unless that verb rejects it.
            if self.status == "ringing" && !matches!(doc.verbs.first(), Some(Verb::Reject(_))) {
                self.set_status("in-progress");
            }
            match self.exec(doc).await {
                Ok(None) => return "completed",
                Ok(Some(n)) => next = n,
                Err(Stop::Redirect(src)) => next = Next::plain(src),
                Err(stop) => return self.stopped(stop).await,
            }
        }
    }

    /// The final status of a leg that stopped. A call that failed on its
    /// TwiML hears Twilio's application-error announcement first (an inbound
    /// call is answered for it), then ends `completed` with the error recorded.
    async fn stopped(&mut self, stop: Stop) -> &'static str {
        match stop {
            Stop::Hangup(s) => s,
            Stop::Reject(s) => s,
            Stop::Fail(code, msg) => {
                tracing::info!(call_sid = %self.sid, code, %msg, "call failed on its TwiML");
                self.update(|c, now| {
                    c.error_code = Some(code);
                    c.error_message = Some(msg.clone());
                    c.note(now, format!("error {code}: {msg}"));
                });
                if self.status == "ringing" {
                    self.set_status("in-progress");
                }
                self.note(format!("said: {APPLICATION_ERROR}"));
                match self.wait(say_ms(APPLICATION_ERROR, None)).await {
                    Err(Stop::Hangup(s)) => s,
                    _ => "completed",
                }
            }
            Stop::Redirect(_) | Stop::Bridge(_) | Stop::PeerEnded | Stop::Leave => "completed",
        }
    }

    /// A `<Gather>`: its prompts, then the phone's next keypress 1 s later
    /// (noted with `where_`), as the action's `Digits`; with none left it
    /// waits its `timeout` and the document goes on (`None`).
    async fn gather(&mut self, g: &twiml::Gather, where_: &str) -> Result<Option<Params>, Stop> {
        for p in &g.prompts {
            self.hear(p).await?;
        }
        let Some(digits) = self.inputs.pop_front() else {
            self.wait(u64::from(g.timeout.unwrap_or(5)) * 1000).await?;
            return Ok(None);
        };
        self.wait(1000).await?;
        let digits = gathered(g, digits);
        self.note(format!("pressed {digits}{where_}"));
        let mut extra = Params::new();
        extra.push("Digits", digits);
        Ok(Some(extra))
    }

    /// Runs one document's verbs. `Ok(Some)` moves to another document.
    async fn exec(&mut self, doc: twiml::Response) -> Result<Option<Next>, Stop> {
        for verb in doc.verbs {
            match verb {
                Verb::Say(s) => self.hear(&Prompt::Say(s)).await?,
                Verb::Play(p) => self.hear(&Prompt::Play(p)).await?,
                Verb::Pause(p) => self.wait(pause_ms(&p)).await?,
                Verb::Gather(g) => {
                    if let Some(extra) = self.gather(&g, "").await? {
                        let url = g.action.clone().unwrap_or_else(|| self.doc_url.clone());
                        return Ok(Some(Next { src: Source::Url { url, method: method_str(g.method) }, extra }));
                    }
                }
                Verb::Redirect(r) => {
                    return Ok(Some(Next::plain(Source::Url { url: r.url, method: method_str(r.method) })));
                }
                Verb::Hangup => return Err(Stop::Hangup("completed")),
                Verb::Reject(r) => {
                    let status = if r.reason.as_deref() == Some("busy") { "busy" } else { "no-answer" };
                    return Err(Stop::Reject(status));
                }
                Verb::Record(r) => {
                    self.wait(500).await?;
                    let secs = u64::from(r.max_length.unwrap_or(3600).min(5));
                    self.wait(secs * 1000).await?;
                    let (rec_sid, url) = self.sh.with(|st, now| {
                        let sid = st.sid("RE");
                        st.recordings.insert(
                            sid.clone(),
                            crate::state::Recording {
                                sid: sid.clone(),
                                call_sid: self.sid.clone(),
                                duration_secs: secs,
                                created: now,
                            },
                        );
                        let url = format!(
                            "{}/2010-04-01/Accounts/{}/Recordings/{sid}",
                            self.sh.base_url, self.sh.config.account_sid
                        );
                        if let Some(c) = st.calls.get_mut(&self.sid) {
                            c.recording_url = Some(url.clone());
                            c.note(now, format!("recorded {secs}s"));
                        }
                        (sid, url)
                    });
                    // `transcribeCallback` implies `transcribe`, as on Twilio.
                    if let Some(cb) = r.transcribe_callback.clone().filter(|_| r.transcribe != Some(false)) {
                        self.transcribe_later(cb, &rec_sid, &url, secs);
                    }
                    let mut extra = Params::new();
                    extra
                        .push("RecordingUrl", url)
                        .push("RecordingSid", rec_sid)
                        .push("RecordingDuration", secs.to_string());
                    let url = r.action.clone().unwrap_or_else(|| self.doc_url.clone());
                    return Ok(Some(Next { src: Source::Url { url, method: method_str(r.method) }, extra }));
                }
                Verb::Enqueue(e) => {
                    if let Some(next) = self.enqueue(e).await? {
                        return Ok(Some(next));
                    }
                }
                Verb::Leave => {}
                Verb::Dial(d) => {
                    if let Some(next) = self.dial(d).await? {
                        return Ok(Some(next));
                    }
                }
            }
        }
        Ok(None)
    }

    // -- Enqueue ---------------------------------------------------------------

    async fn enqueue(&mut self, e: Enqueue) -> Result<Option<Next>, Stop> {
        let enqueued = self.now();
        let joined = match &e.workflow_sid {
            Some(_) => self.create_task(&e).map(|(task, queue)| (Some(task), queue)).map_err(|m| ("error", m)),
            None => self.join_named(&e).map(|queue| (None, queue)),
        };
        let (task, queue_sid) = match joined {
            Ok(v) => v,
            Err((result, msg)) => {
                self.note(format!("enqueue failed: {msg}"));
                self.update(|c, _| c.queue_result = Some(result.into()));
                return self.queue_exit(&e, result, String::new(), 0).await;
            }
        };
        self.update(|c, now| {
            c.task_sid = task.clone();
            c.enqueued = Some(now);
            match &task {
                Some(t) => c.note(now, format!("enqueued as task {t}")),
                None => c.note(now, format!("enqueued in queue {queue_sid}")),
            }
        });
        self.in_queue = true;
        let outcome = self.hold(&e, task.as_deref(), &queue_sid, enqueued).await;
        self.in_queue = false;
        if task.is_none() {
            self.sh.with(|st, _| st.leave_queue(&queue_sid, &self.sid));
        }
        let queue_secs = self.now().saturating_sub(enqueued) / 1000;
        let queue_ms = self.now().saturating_sub(enqueued);
        // All of the call's time in queues, when it was enqueued again (moved
        // to another location's queue, say).
        self.update(|c, _| c.queue_time_ms = Some(c.queue_time_ms.unwrap_or(0) + queue_ms));
        let (result, then) = match outcome {
            Stop::Bridge(peer) => match self.before_bridge(&queue_sid, enqueued, &peer).await {
                // Tell the dequeuing leg that the parties are connected now.
                Ok(()) if self.send_to(&peer, LegCmd::Bridge { peer: self.sid.clone() }) => {
                    self.bridged(task.as_deref(), peer).await
                }
                Ok(()) => {
                    if let Some(t) = &task {
                        let fx = self.sh.with(|st, now| engine::wrapup(st, now, t));
                        self.sh.apply(fx);
                    }
                    ("bridging-in-process", None)
                }
                Err(stop) => {
                    // Dequeued, but gone before the parties were connected.
                    self.send_to(&peer, LegCmd::PeerEnded);
                    if let Some(t) = &task {
                        let fx = self.sh.with(|st, now| engine::wrapup(st, now, t));
                        self.sh.apply(fx);
                    }
                    let then = match stop {
                        Stop::PeerEnded => None,
                        other => Some(other),
                    };
                    ("bridging-in-process", then)
                }
            },
            Stop::Leave => ("leave", None),
            Stop::Hangup(s) => ("hangup", Some(Stop::Hangup(s))),
            Stop::Redirect(src) => ("redirected", Some(Stop::Redirect(src))),
            Stop::Fail(code, msg) => ("system-error", Some(Stop::Fail(code, msg))),
            other => ("error", Some(other)),
        };
        if let Some(task_sid) = task.as_deref()
            && !matches!(result, "bridged" | "bridging-in-process")
        {
            // The caller left the queue: TaskRouter cancels a task still waiting.
            let fx = self.sh.with(|st, now| {
                let open = st
                    .tasks
                    .get(task_sid)
                    .is_some_and(|t| matches!(t.status, TaskStatus::Pending | TaskStatus::Reserved));
                if open {
                    let reason = format!("caller left the queue ({result})");
                    engine::update_task(st, now, task_sid, Some("canceled"), Some(&reason), None).ok()
                } else {
                    None
                }
            });
            if let Some(fx) = fx {
                self.sh.apply(fx);
            }
        }
        self.update(|c, now| {
            c.queue_result = Some(result.into());
            c.note(now, format!("left queue: {result}"));
        });
        match then {
            Some(stop @ (Stop::Hangup(_) | Stop::Redirect(_))) => {
                // The action is still requested, but its TwiML is not run:
                // the caller is gone, or the redirect decides what runs next.
                if let Ok(Some(next)) = self.queue_exit(&e, result, queue_sid, queue_secs).await {
                    let _ = self.fetch(&next).await;
                }
                Err(stop)
            }
            Some(other) => Err(other),
            None => self.queue_exit(&e, result, queue_sid, queue_secs).await,
        }
    }

    /// Calls the Enqueue `action` (or moves on to the next verb without one).
    async fn queue_exit(
        &mut self,
        e: &Enqueue,
        result: &str,
        queue_sid: String,
        secs: u64,
    ) -> Result<Option<Next>, Stop> {
        let Some(action) = &e.action else { return Ok(None) };
        let mut extra = Params::new();
        extra.push("QueueResult", result);
        if !queue_sid.is_empty() {
            // Only for a call that was actually enqueued (Twilio's <Enqueue> reference).
            extra.push("QueueSid", queue_sid).push("QueueTime", secs.to_string());
        }
        Ok(Some(Next { src: Source::Url { url: action.clone(), method: method_str(e.method) }, extra }))
    }

    /// Joins the queue named by `<Enqueue>`'s text, created on first use;
    /// returns its SID, or the `QueueResult` and why it failed.
    fn join_named(&mut self, e: &Enqueue) -> Result<String, (&'static str, String)> {
        let name = e.queue_name.as_deref().map(str::trim).filter(|n| !n.is_empty());
        let name = name.ok_or(("error", "<Enqueue> has neither a queue name nor a workflowSid".to_owned()))?;
        if name.chars().count() > 64 {
            return Err(("error", format!("queue name {name:?} is longer than 64 characters")));
        }
        self.sh
            .with(|st, now| st.join_queue(name, &self.sid, now))
            .ok_or(("queue-full", format!("queue {name:?} is full")))
    }

    fn create_task(&mut self, e: &Enqueue) -> Result<(String, String), String> {
        let workflow = e.workflow_sid.clone().ok_or("no workflowSid")?;
        let task = e.task.clone().unwrap_or_default();
        let raw = if task.attributes.trim().is_empty() { "{}" } else { task.attributes.as_str() };
        let mut attrs: Value = serde_json::from_str(raw).map_err(|e| format!("Task is not JSON: {e}"))?;
        let obj = attrs.as_object_mut().ok_or("Task is not a JSON object")?;
        for (k, v) in [
            ("call_sid", self.base.get("CallSid")),
            ("account_sid", self.base.get("AccountSid")),
            ("from", self.base.get("From")),
            ("to", self.base.get("To")),
            ("caller", self.base.get("Caller")),
            ("called", self.base.get("Called")),
            ("direction", self.base.get("Direction")),
            ("api_version", Some("2010-04-01")),
            ("call_status", Some("in-progress")),
        ] {
            if let Some(v) = v {
                obj.entry(k).or_insert_with(|| Value::String(v.to_owned()));
            }
        }
        let attrs = attrs.to_string();
        let (task_sid, ws, fx) = self.sh.with(|st, now| {
            let ws = st.workflows.get(&workflow).map(|w| w.workspace_sid.clone()).ok_or("unknown workflowSid")?;
            let timeout = task.timeout.map(u64::from);
            let (sid, fx) =
                engine::create_task(st, now, &ws, &workflow, &attrs, task.priority, timeout).map_err(|e| e.message)?;
            st.call_by_task.insert(sid.clone(), self.sid.clone());
            Ok::<_, String>((sid, ws, fx))
        })?;
        self.sh.apply(fx);
        Ok((task_sid, format!("QU{}", ws.get(2..).unwrap_or_default())))
    }

    /// The caller's place in its queue and the queue's size: among the
    /// workspace's waiting tasks for a TaskRouter caller, among the members
    /// of a named queue otherwise.
    fn queue_position(&self, task: Option<&str>, queue_sid: &str) -> (usize, usize) {
        self.sh.with(|st, _| {
            let (pos, size) = match task {
                Some(task_sid) => {
                    let pending =
                        st.tasks.get(task_sid).and_then(|t| st.workspaces.get(&t.workspace_sid)).map(|w| &w.pending);
                    (pending.and_then(|p| p.iter().position(|t| t == task_sid)), pending.map_or(0, Vec::len))
                }
                None => {
                    let members = st.call_queues.get(queue_sid).map(|q| &q.members);
                    (members.and_then(|m| m.iter().position(|(c, _)| *c == self.sid)), members.map_or(0, Vec::len))
                }
            };
            (pos.map_or(1, |i| i + 1), size.max(1))
        })
    }

    /// Plays the waitUrl until the call leaves the queue; returns why it left.
    /// A `<Gather>` that got digits there fetches its action once, with
    /// `Digits` and the queue's parameters, and runs that document in the
    /// queue too; then the waitUrl loop goes on.
    async fn hold(&mut self, e: &Enqueue, task: Option<&str>, queue_sid: &str, enqueued: VMs) -> Stop {
        let mut wait_url = e.wait_url.clone().map(|u| (u, method_str(e.wait_url_method)));
        let mut gathered: Option<WaitNext> = None;
        loop {
            let started = self.now();
            let once = gathered.take();
            let result =
                match once.clone().or_else(|| wait_url.clone().map(|(url, method)| WaitNext::plain(url, method))) {
                    None => self.wait(FOREVER_MS).await,
                    Some(fetch) => {
                        let (pos, size) = self.queue_position(task, queue_sid);
                        let mut extra = fetch.extra.clone();
                        extra
                            .push("QueueSid", queue_sid)
                            .push("QueuePosition", pos.to_string())
                            .push("QueueTime", (self.now().saturating_sub(enqueued) / 1000).to_string())
                            .push("AvgQueueTime", "0")
                            .push("CurrentQueueSize", size.to_string())
                            .push("MaxQueueSize", crate::state::DEFAULT_QUEUE_SIZE.to_string());
                        let next =
                            Next { src: Source::Url { url: fetch.url.clone(), method: fetch.method.clone() }, extra };
                        let saved = self.doc_url.clone();
                        let doc = self.fetch(&next).await;
                        let r = match doc {
                            Ok(doc) => self.exec_wait(doc).await.map(|next| match next {
                                Some(WaitTurn::Redirect(url, method)) => wait_url = Some((url, method)),
                                Some(WaitTurn::Gathered(g)) => gathered = Some(g),
                                None => {}
                            }),
                            // A broken gather action: back to the waitUrl.
                            Err(Stop::Fail(code, msg)) if once.is_some() => {
                                self.note(format!("gather action error {code}: {msg}"));
                                Ok(())
                            }
                            Err(Stop::Fail(code, msg)) => {
                                // A broken waitUrl leaves the caller in silence, still queued.
                                self.note(format!("waitUrl error {code}: {msg}"));
                                wait_url = None;
                                Ok(())
                            }
                            Err(s) => Err(s),
                        };
                        self.doc_url = saved;
                        r
                    }
                };
            match result {
                Ok(()) if gathered.is_some() => {}
                Ok(()) => {
                    // Keep re-fetching, but never faster than once a virtual second.
                    let spent = self.now().saturating_sub(started);
                    if spent < 1000
                        && let Err(s) = self.wait(1000 - spent).await
                    {
                        return s;
                    }
                }
                Err(s) => return s,
            }
        }
    }

    /// Runs a waitUrl document: prompts, `Gather`, `Leave`, `Hangup`,
    /// `Redirect`. A `Gather` with no keypress left waits its `timeout` and
    /// falls through, as on a call.
    async fn exec_wait(&mut self, doc: twiml::Response) -> Result<Option<WaitTurn>, Stop> {
        for verb in doc.verbs {
            match verb {
                Verb::Say(s) => self.hear(&Prompt::Say(s)).await?,
                Verb::Play(p) => self.hear(&Prompt::Play(p)).await?,
                Verb::Pause(p) => self.wait(pause_ms(&p)).await?,
                Verb::Gather(g) => {
                    if let Some(extra) = self.gather(&g, " in the queue").await? {
                        let url =
                            g.action.as_deref().map_or_else(|| self.doc_url.clone(), |a| resolve(&self.doc_url, a));
                        return Ok(Some(WaitTurn::Gathered(WaitNext { url, method: method_str(g.method), extra })));
                    }
                }
                Verb::Leave => return Err(Stop::Leave),
                Verb::Hangup => return Err(Stop::Hangup("completed")),
                Verb::Redirect(r) => {
                    return Ok(Some(WaitTurn::Redirect(resolve(&self.doc_url, &r.url), method_str(r.method))));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Runs the dequeuing leg's `<Queue url>` on this caller before the
    /// bridge (Twilio allows `Play`, `Say`, `Pause` and `Redirect` there),
    /// with `QueueSid`, `QueueTime` and `DequeingCallSid`.
    async fn before_bridge(&mut self, queue_sid: &str, enqueued: VMs, peer: &str) -> Result<(), Stop> {
        let Some((url, method)) = self.sh.with(|st, _| st.bridge_urls.remove(&self.sid)) else {
            return Ok(());
        };
        let saved = self.doc_url.clone();
        let mut next = Some((url, method));
        let mut documents = 0;
        let mut outcome = Ok(());
        while let Some((url, method)) = next.take() {
            documents += 1;
            if documents > 20 {
                self.note("<Queue url> redirected more than 20 times");
                break;
            }
            let mut extra = Params::new();
            extra
                .push("QueueSid", queue_sid)
                .push("QueueTime", (self.now().saturating_sub(enqueued) / 1000).to_string())
                .push("DequeingCallSid", peer);
            match self.fetch(&Next { src: Source::Url { url, method }, extra }).await {
                Ok(doc) => match self.exec_wait(doc).await {
                    Ok(Some(WaitTurn::Redirect(url, method))) => next = Some((url, method)),
                    Ok(Some(WaitTurn::Gathered(_))) => self.note("<Queue url> may not gather"),
                    Ok(None) => {}
                    Err(Stop::Leave) => {}
                    Err(stop) => {
                        outcome = Err(stop);
                        break;
                    }
                },
                Err(Stop::Fail(code, msg)) => self.note(format!("<Queue url> error {code}: {msg}")),
                Err(stop) => {
                    outcome = Err(stop);
                    break;
                }
            }
        }
        self.doc_url = saved;
        outcome
    }

    /// The caller is bridged to `peer` until one side hangs up; a TaskRouter
    /// caller's task then wraps up.
    async fn bridged(&mut self, task_sid: Option<&str>, peer: String) -> (&'static str, Option<Stop>) {
        self.hangup_at = None;
        self.update(|c, now| {
            c.linked_leg = Some(peer.clone());
            c.bridge_start = Some(now);
            c.note(now, format!("bridged with {peer}"));
        });
        let outcome = self.wait(FOREVER_MS).await;
        self.update(|c, now| {
            c.bridge_end = Some(now);
            c.note(now, "bridge ended");
        });
        if let Some(task_sid) = task_sid {
            let fx = self.sh.with(|st, now| engine::wrapup(st, now, task_sid));
            self.sh.apply(fx);
        }
        match outcome {
            Err(Stop::PeerEnded) | Ok(()) => ("bridged", None),
            Err(other) => {
                self.send_to(&peer, LegCmd::PeerEnded);
                ("bridged", Some(other))
            }
        }
    }

    // -- Dial ------------------------------------------------------------------

    async fn dial(&mut self, d: Dial) -> Result<Option<Next>, Stop> {
        let started = self.now();
        let queue = d.nouns.iter().find_map(|n| match n {
            DialNoun::Queue(q) => Some(q.clone()),
            DialNoun::Number(_) => None,
        });
        let number = d
            .nouns
            .iter()
            .find_map(|n| match n {
                DialNoun::Number(n) => Some(n.clone()),
                DialNoun::Queue(_) => None,
            })
            .or_else(|| d.number_text.clone().map(|number| twiml::Number { number, ..Default::default() }));
        let outcome = match (queue, number) {
            (Some(q), _) => match q.reservation_sid.as_deref() {
                Some(res) => self.dial_queue(res, q.url.as_deref()).await,
                None => self.dial_named_queue(&q, &d).await,
            },
            (None, Some(n)) => self.dial_number(&n, &d).await,
            (None, None) => Ok(("failed", None)),
        };
        let (status, peer, stop) = match outcome {
            Ok((s, p)) => (s, p, None),
            Err((stop, p)) => ("completed", p, Some(stop)),
        };
        let secs = self.now().saturating_sub(started) / 1000;
        self.note(format!("dial ended: {status}"));
        let next = d.action.as_ref().map(|action| {
            let mut extra = Params::new();
            extra.push("DialCallStatus", status).push("DialCallDuration", secs.to_string());
            extra.push_opt("DialCallSid", peer.clone());
            extra.push("DialBridged", (status == "completed").to_string());
            Next { src: Source::Url { url: action.clone(), method: method_str(d.method) }, extra }
        });
        match stop {
            Some(Stop::Hangup(s)) => {
                // Twilio still requests the action after a hang-up, and ignores its TwiML.
                if let Some(n) = &next {
                    let _ = self.fetch(n).await;
                }
                Err(Stop::Hangup(s))
            }
            Some(other) => Err(other),
            None => Ok(next),
        }
    }

    /// Accepts the reservation and bridges to the enqueued caller.
    async fn dial_queue(&mut self, res: &str, url: Option<&str>) -> DialOutcome {
        let accepted = self.sh.with(|st, now| {
            let fx = engine::update_reservation(st, now, res, "accepted", None).map_err(|e| e.message)?;
            let task = st.reservations.get(res).map(|r| r.task_sid.clone()).unwrap_or_default();
            let caller = st.call_by_task.get(&task).cloned();
            Ok::<_, String>((fx, task, caller))
        });
        let (fx, task, caller) = match accepted {
            Ok(v) => v,
            Err(msg) => {
                self.note(format!(
                    "error 14215 (Dial->Queue: invalid ReservationSid, unable to dequeue): {res}: {msg}"
                ));
                return Ok(("failed", None));
            }
        };
        self.sh.apply(fx);
        let Some(caller) = caller else { return Ok(("failed", None)) };
        match self.bridge_to(&caller, url, Some((&task, res))).await {
            Some(outcome) => outcome,
            None => {
                // The caller is gone: the accepted task has nothing to bridge.
                let fx = self.sh.with(|st, now| engine::wrapup(st, now, &task));
                self.sh.apply(fx);
                Ok(("failed", None))
            }
        }
    }

    /// Bridges the oldest caller waiting in a named queue. An empty queue is
    /// waited on until someone joins or the `<Dial>` times out (`no-answer`);
    /// a queue that does not exist fails the dial (Twilio's `<Queue>` reference).
    async fn dial_named_queue(&mut self, q: &twiml::Queue, d: &Dial) -> DialOutcome {
        let name = q.name.trim();
        let until = self.now().saturating_add(u64::from(d.timeout.unwrap_or(30)) * 1000);
        loop {
            match self.sh.with(|st, _| st.pop_queue(name)) {
                None => {
                    self.note(format!("<Dial><Queue>: no queue named {name:?}"));
                    return Ok(("failed", None));
                }
                Some(Some((_, caller, _))) => {
                    if let Some(outcome) = self.bridge_to(&caller, q.url.as_deref(), None).await {
                        return outcome;
                    }
                    // That caller had just gone: try the next one.
                }
                Some(None) => {
                    let left = until.saturating_sub(self.now());
                    if left == 0 {
                        return Ok(("no-answer", None));
                    }
                    if let Err(stop) = self.wait(left.min(1000)).await {
                        return Err((stop, None));
                    }
                }
            }
        }
    }

    /// Bridges this leg to a waiting caller until one side hangs up. The
    /// caller first runs `url` (a `<Queue url>`), then answers with a bridge
    /// of its own: only then does the conversation start. `None` if the caller
    /// was already gone.
    async fn bridge_to(
        &mut self,
        caller: &str,
        url: Option<&str>,
        reservation: Option<(&str, &str)>,
    ) -> Option<DialOutcome> {
        if let Some(u) = url {
            let u = resolve(&self.doc_url, u);
            self.sh.with(|st, _| st.bridge_urls.insert(caller.to_owned(), (u, "POST".to_owned())));
        }
        if !self.send_to(caller, LegCmd::Bridge { peer: self.sid.clone() }) {
            self.sh.with(|st, _| st.bridge_urls.remove(caller));
            return None;
        }
        let caller = caller.to_owned();
        self.in_queue = true;
        let connected = self.wait(FOREVER_MS).await;
        self.in_queue = false;
        match connected {
            Err(Stop::Bridge(_)) => {}
            // The caller refused (it had already left the queue) or hung up before the bridge.
            Err(Stop::PeerEnded) | Ok(()) => {
                self.sh.with(|st, _| st.bridge_urls.remove(&caller));
                return Some(Ok(("failed", Some(caller))));
            }
            Err(stop) => {
                self.sh.with(|st, _| st.bridge_urls.remove(&caller));
                self.send_to(&caller, LegCmd::PeerEnded);
                return Some(Err((stop, Some(caller))));
            }
        }
        self.update(|c, now| {
            c.linked_leg = Some(caller.clone());
            if let Some((task, res)) = reservation {
                c.task_sid = Some(task.to_owned());
                c.reservation_sid = Some(res.to_owned());
            }
            c.bridge_start = Some(now);
            c.note(now, format!("bridged with {caller}"));
        });
        let talk = self.talk_secs.map_or(FOREVER_MS, |t| t.saturating_mul(1000));
        let outcome = self.wait(talk).await;
        self.update(|c, now| {
            c.bridge_end = Some(now);
            c.note(now, "bridge ended");
        });
        Some(match outcome {
            Err(Stop::PeerEnded) => Ok(("completed", Some(caller))),
            Ok(()) => {
                self.note("person hung up");
                self.send_to(&caller, LegCmd::PeerEnded);
                Err((Stop::Hangup("completed"), Some(caller)))
            }
            Err(stop) => {
                self.send_to(&caller, LegCmd::PeerEnded);
                Err((stop, Some(caller)))
            }
        })
    }

    /// Rings a simulated phone as a child leg; a `url` on `<Number>` runs on
    /// the child once it answers, before the bridge.
    async fn dial_number(&mut self, n: &twiml::Number, d: &Dial) -> DialOutcome {
        let number = n.number.as_str();
        let from = d.caller_id.clone().or_else(|| self.base.get("To").map(str::to_owned)).unwrap_or_default();
        let timeout = u64::from(d.timeout.unwrap_or(30));
        let (child, behaviour) = self.sh.with(|st, now| {
            let sid = st.sid("CA");
            let mut c = new_call(&sid, &from, number, "outbound-dial", now);
            c.parent_call_sid = Some(self.sid.clone());
            c.status = "ringing".into();
            c.start = Some(now);
            st.calls.insert(sid.clone(), c);
            (sid, st.behaviour(number))
        });
        let set = |sh: &Shared, status: &str, answered_by: Option<&str>| {
            sh.with(|st, now| {
                if let Some(c) = st.calls.get_mut(&child) {
                    c.status = status.into();
                    c.updated = now;
                    c.note(now, format!("status {status}"));
                    if status == "in-progress" {
                        c.answered = Some(now);
                        c.answered_by = answered_by.map(str::to_owned);
                    }
                    if c.is_final() {
                        c.end = Some(now);
                    }
                }
            });
            if matches!(status, "completed" | "busy" | "no-answer" | "failed" | "canceled") {
                sh.call_ended(&child);
            }
        };
        let ring = phone::ring(&behaviour, timeout);
        let (after, final_status) = match &ring {
            Ring::Answer { after_ms, .. } => (*after_ms, None),
            Ring::Busy { after_ms } => (*after_ms, Some("busy")),
            Ring::NoAnswer => (timeout * 1000, Some("no-answer")),
            Ring::Fail { after_ms } => (*after_ms, Some("failed")),
        };
        if let Err(stop) = self.wait(after).await {
            set(&self.sh, "canceled", None);
            return Err((stop, Some(child)));
        }
        if let Some(s) = final_status {
            set(&self.sh, s, None);
            return Ok((s, Some(child)));
        }
        let (machine, talk, digits) = match ring {
            Ring::Answer { machine, talk_secs, digits, .. } => (machine, talk_secs.unwrap_or(20), digits),
            _ => (false, 0, None),
        };
        set(&self.sh, "in-progress", Some(if machine { "machine_start" } else { "human" }));
        if let Some(url) = &n.url {
            let child_call = ChildCall { sid: &child, from: &from, to: number, digits: digits.as_deref() };
            match self.whisper(&child_call, url).await {
                Ok(true) => {}
                Ok(false) => {
                    // The called party hung up before the bridge: it never took the call.
                    set(&self.sh, "completed", None);
                    return Ok(("no-answer", Some(child)));
                }
                Err(stop) => {
                    set(&self.sh, "completed", None);
                    return Err((stop, Some(child)));
                }
            }
        }
        self.update(|c, now| {
            c.linked_leg = Some(child.clone());
            c.bridge_start = Some(now);
        });
        let r = self.wait(talk.saturating_mul(1000)).await;
        self.update(|c, now| c.bridge_end = Some(now));
        set(&self.sh, "completed", None);
        match r {
            Ok(()) => Ok(("completed", Some(child))),
            Err(stop) => Err((stop, Some(child))),
        }
    }

    /// Runs a `<Number url>` document on the answered child leg, with the
    /// child's call parameters, while the caller still hears ringing: prompts,
    /// `Gather` (answered with the phone's digits), `Redirect`, `Hangup`.
    /// Returns whether the child is still there to be bridged. A document that
    /// cannot be fetched or parsed ends the child leg.
    async fn whisper(&mut self, child: &ChildCall<'_>, url: &str) -> Result<bool, Stop> {
        let mut inputs = phone::gather_inputs(child.digits);
        let mut base = Params::new();
        base.push("AccountSid", self.sh.config.account_sid.as_str())
            .push("ApiVersion", "2010-04-01")
            .push("CallSid", child.sid)
            .push("ParentCallSid", &self.sid)
            .push("From", child.from)
            .push("Caller", child.from)
            .push("To", child.to)
            .push("Called", child.to)
            .push("Direction", "outbound-dial")
            .push("CallStatus", "in-progress");
        let mut doc_url = resolve(&self.doc_url, url);
        let mut next = Some((doc_url.clone(), "POST".to_owned(), Params::new()));
        let mut documents = 0;
        while let Some((url, method, extra)) = next.take() {
            documents += 1;
            if documents > 20 {
                self.note("whisper: more than 20 documents");
                return Ok(false);
            }
            let mut p = base.clone();
            for (k, v) in extra.iter() {
                p.push(k, v);
            }
            let body = match self.sh.webhook(Hook::Document, &method, &url, &p).await {
                Ok((s, body)) if (200..300).contains(&s) => body,
                Ok((s, _)) => {
                    self.note(format!("whisper error 11200: {url} answered {s}"));
                    return Ok(false);
                }
                Err(e) => {
                    self.note(format!("whisper error {}: {url}: {e}", e.code()));
                    return Ok(false);
                }
            };
            doc_url = url;
            let doc = match twiml::Response::parse(&body) {
                Ok(d) => d,
                Err(e) => {
                    self.note(format!("whisper error 12100: {e}"));
                    return Ok(false);
                }
            };
            for verb in doc.verbs {
                match verb {
                    Verb::Say(s) => self.wait(say_ms(&s.text, s.loop_count)).await?,
                    Verb::Play(p) => self.wait(play_ms(&p)).await?,
                    Verb::Pause(p) => self.wait(pause_ms(&p)).await?,
                    Verb::Gather(g) => {
                        for p in &g.prompts {
                            self.wait(prompt_ms(p)).await?;
                        }
                        if let Some(digits) = inputs.pop_front() {
                            self.wait(1000).await?;
                            let digits = gathered(&g, digits);
                            self.note(format!("called party pressed {digits}"));
                            let mut extra = Params::new();
                            extra.push("Digits", digits);
                            let action = g.action.as_deref().map_or_else(|| doc_url.clone(), |a| resolve(&doc_url, a));
                            next = Some((action, method_str(g.method), extra));
                            break;
                        }
                        self.wait(u64::from(g.timeout.unwrap_or(5)) * 1000).await?;
                    }
                    Verb::Redirect(r) => {
                        next = Some((resolve(&doc_url, &r.url), method_str(r.method), Params::new()));
                        break;
                    }
                    Verb::Hangup | Verb::Reject(_) => {
                        self.note("called party hung up during the whisper");
                        return Ok(false);
                    }
                    // <Dial> is not allowed here; the rest means nothing before a bridge.
                    _ => {}
                }
            }
        }
        Ok(true)
    }

    // -- whole legs ------------------------------------------------------------

    /// Ends the leg: final status, callbacks, bookkeeping.
    pub(super) async fn finish(mut self, status: &'static str, sip: Option<u16>) {
        self.status = status;
        self.update(|c, now| {
            c.status = status.into();
            c.end = Some(now);
            c.note(now, format!("ended {status}"));
        });
        self.sh.legs.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.sid);
        self.status_callback("completed", status, sip).await;
        // A final summary implies every status callback has been delivered.
        self.flush_callbacks().await;
        self.sh.call_ended(&self.sid);
    }

    /// An outbound-api call: ring, answer (with AMD), run TwiML.
    pub(super) async fn run_outbound(mut self, o: Outbound) {
        let mut first = o.first;
        // Queued at the account's rate: `initiated` comes when it is dialled.
        loop {
            let left = o.dial_at.saturating_sub(self.now());
            if left == 0 {
                break;
            }
            match self.wait(left).await {
                Ok(()) => break,
                Err(Stop::Redirect(src)) => first = src,
                Err(Stop::Hangup(_)) => return self.finish("canceled", None).await,
                Err(_) => {}
            }
        }
        // It left the account's queue at its slot, however late this task woke.
        let start = o.dial_at.min(self.now());
        self.update(|c, _| c.start = Some(start));
        self.status_callback("initiated", "initiated", None).await;
        self.set_status("ringing");
        self.status_callback("ringing", "ringing", None).await;
        let to = self.base.get("To").unwrap_or_default().to_owned();
        let behaviour = self.sh.with(|st, _| st.behaviour(&to));
        let ring = phone::ring(&behaviour, o.timeout_secs);
        let wait = match &ring {
            Ring::Answer { after_ms, .. } | Ring::Busy { after_ms } | Ring::Fail { after_ms } => *after_ms,
            Ring::NoAnswer => o.timeout_secs * 1000,
        };
        // A redirect before answer only changes what runs on answer.
        let until = self.now() + wait;
        loop {
            let left = until.saturating_sub(self.now());
            match self.wait(left).await {
                Ok(()) => break,
                Err(Stop::Redirect(src)) => first = src,
                Err(Stop::Hangup(s)) => {
                    let status = if s == "completed" { "canceled" } else { s };
                    return self.finish(status, Some(487)).await;
                }
                Err(_) => {}
            }
        }
        let (machine, talk, digits, greeting_ms) = match ring {
            Ring::Busy { .. } => return self.finish("busy", Some(486)).await,
            Ring::NoAnswer => return self.finish("no-answer", Some(480)).await,
            Ring::Fail { .. } => return self.finish("failed", Some(500)).await,
            Ring::Answer { machine, talk_secs, digits, greeting_ms, .. } => (machine, talk_secs, digits, greeting_ms),
        };
        self.talk_secs = talk;
        self.inputs = phone::gather_inputs(digits.as_deref());
        self.set_status("in-progress");
        if let Some(mode) = &o.machine_detection {
            let detect = if machine { phone::AMD_MACHINE_MS } else { phone::AMD_HUMAN_MS };
            let mut answered_by = if machine { "machine_start" } else { "human" };
            let mut delay = detect;
            if delay > o.amd_timeout_secs * 1000 {
                delay = o.amd_timeout_secs * 1000;
                answered_by = "unknown";
            } else if machine && mode == "DetectMessageEnd" {
                delay = greeting_ms.max(detect);
                answered_by = "machine_end_beep";
            }
            if let Err(stop) = self.wait(delay).await {
                let s = self.stopped(stop).await;
                return self.finish(s, None).await;
            }
            self.base.push("AnsweredBy", answered_by);
            self.update(|c, now| {
                c.answered_by = Some(answered_by.into());
                c.note(now, format!("AMD: {answered_by}"));
            });
        }
        self.status_callback("answered", "in-progress", None).await;
        let status = self.run_documents(Next::plain(first)).await;
        self.finish(status, None).await;
    }

    /// An inbound call from a simulated caller to a Twilio number.
    pub(super) async fn run_inbound(mut self, voice_url: String, method: String) {
        self.update(|c, now| c.start = Some(now));
        self.status = "ringing";
        let status = self.run_documents(Next::plain(Source::Url { url: voice_url, method })).await;
        self.finish(status, None).await;
    }
}

/// A new call record.
/// How long after a recording its transcription callback comes (virtual ms).
pub(crate) const TRANSCRIBE_MS: VMs = 15_000;

/// What the sandbox's transcriber hears a simulated caller say.
pub(crate) fn transcription_text(from: &str, secs: u64) -> String {
    format!("Hello, this is {from}. I am calling about my appointment. Please call me back. ({secs} seconds)")
}

pub(super) fn new_call(sid: &str, from: &str, to: &str, direction: &str, now: VMs) -> Call {
    Call {
        sid: sid.into(),
        parent_call_sid: None,
        from: from.into(),
        to: to.into(),
        status: "queued".into(),
        direction: direction.into(),
        answered_by: None,
        phone_number_sid: None,
        created: now,
        updated: now,
        start: None,
        answered: None,
        end: None,
        queue_time_ms: None,
        enqueued: None,
        bridge_start: None,
        bridge_end: None,
        linked_leg: None,
        task_sid: None,
        reservation_sid: None,
        recording_url: None,
        error_code: None,
        error_message: None,
        queue_result: None,
        timeline: vec![(now, "created".into())],
        heard: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn resolves_relative_urls() {
        assert_eq!(resolve("http://h:1/a/b?x=1", "/c"), "http://h:1/c");
        assert_eq!(resolve("http://h:1/a/b?x=1", "c?y=2"), "http://h:1/a/c?y=2");
        assert_eq!(resolve("http://h:1/a", "https://o/x"), "https://o/x");
    }
}
