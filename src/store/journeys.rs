//! Journeys in the database: an event is delivered to its journey inside the
//! writer's transaction, so the journey, the commands it owes (the outbox)
//! and what the `calls` table shows of it change together or not at all.
//!
//! The store decides nothing: it finds the journey by the event's SIDs (or
//! makes one), calls [`journey::apply`], and writes what comes back. Three
//! commands it carries out itself, in the same transaction: [`Command::WithdrawDial`]
//! and [`Command::WithdrawRedirect`], which only touch the outbox (a dial or a
//! redirect of the caller still pending there is dropped; for a dial the journey
//! hears `DialFailed` at once), and [`Command::ListCallbackRequest`], a row in
//! the voicemail list.

use std::collections::{HashSet, VecDeque};

use anyhow::Context as _;
use jiff::Timestamp;
use sqlx::Row;

use super::StatusRecord;
use super::outbox::{Desk, Handed};
use super::sql::{Arg, Conn, args, insert};
use super::voicemails::{NewVoicemail, Transcription};
use crate::domain::Outcome;
use crate::journey::{self, Answer, Command, Event, Journey, Policy};
use crate::outbox::{Lane, OutboxState};

/// Which journey an event is for.
#[derive(Debug, Clone)]
pub enum Route {
    /// The first of these SIDs that a journey is known by (most telling
    /// first); with `create`, a new journey when none is.
    Keys { keys: Vec<String>, create: bool },
    /// A journey by its id (ticks, the dispatcher's results).
    Id(i64),
}

/// The caller's numbers, for the `calls` row of a journey that begins at
/// `/incoming-call`.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub from: String,
    pub to: String,
}

/// A raw webhook kept for audit.
#[derive(Debug, Clone)]
pub struct Audit {
    pub source: &'static str,
    pub event_type: String,
    pub resource_sid: Option<String>,
    pub payload: String,
}

/// How an outbox row ended, written with the result's event.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: i64,
    pub state: OutboxState,
    pub result: Option<String>,
    pub error: Option<String>,
    /// For a row sent again later: not before this time.
    pub not_before_ms: i64,
}

/// One or more events for one journey, and what to write beside them.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub route: Route,
    pub events: Vec<Event>,
    pub policy: Policy,
    pub caller: Option<NewCall>,
    pub audit: Option<Audit>,
    pub status: Option<StatusRecord>,
    pub finish: Option<Finish>,
    /// A voicemail to keep (`/voicemail-complete`); a second one of the
    /// same recording changes nothing.
    pub voicemail: Option<NewVoicemail>,
    /// A transcription to keep with its voicemail.
    pub transcription: Option<Transcription>,
}

impl Delivery {
    pub fn new(route: Route, events: Vec<Event>, policy: Policy) -> Self {
        Delivery {
            route,
            events,
            policy,
            caller: None,
            audit: None,
            status: None,
            finish: None,
            voicemail: None,
            transcription: None,
        }
    }

    /// Routed by these SIDs, making a journey when none is known by them.
    pub fn to_keys(keys: impl IntoIterator<Item = String>, events: Vec<Event>, policy: Policy) -> Self {
        Delivery::new(Route::Keys { keys: keys.into_iter().collect(), create: true }, events, policy)
    }

    pub fn with_audit(mut self, source: &'static str, event_type: &str, sid: Option<&str>, payload: String) -> Self {
        self.audit =
            Some(Audit { source, event_type: event_type.to_owned(), resource_sid: sid.map(str::to_owned), payload });
        self
    }
}

/// What a delivery did.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The answer to the last of the delivered events (for TwiML).
    pub answer: Answer,
    pub outcome: Outcome,
    /// New outbox rows: the dispatcher has work.
    pub queued: usize,
    /// How many of them are dials (the dispatcher's dial lane; the rest go to its other lane).
    pub queued_dials: usize,
    /// How many of those dials were handed to this instance's dial lane as
    /// they were written (see [`super::Desk`]): the lane need not be woken
    /// for them.
    pub handed: usize,
    pub journey: Option<i64>,
    /// Set when this delivery made the outcome final (for the metrics).
    pub settled: Option<Settled>,
}

/// A journey's outcome became final: what it is, and the journey's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub outcome: Outcome,
    pub location: Option<String>,
}

/// Delivers `d` inside the writer's transaction. With a `desk`, the dials
/// it queues at the end go to the dial lane claimed while it has free
/// slots: they come back beside what it did, for the lane once committed.
/// `take_back` gives up a dial that an earlier delivery of the same batch
/// handed over, by its key, for this one to withdraw before the COMMIT.
pub(super) async fn deliver_in<C: Conn>(
    c: &mut C,
    d: &Delivery,
    desk: Option<&Desk>,
    take_back: &mut (impl FnMut(&str) -> Option<Handed> + Send),
    now: i64,
) -> anyhow::Result<(Delivered, Vec<Handed>)> {
    if let Some(a) = &d.audit {
        insert_audit(c, a, now).await?;
    }
    if let Some(s) = &d.status {
        insert_status(c, s, now).await?;
    }
    if let Some(f) = &d.finish {
        super::outbox::finish_in(c, f, now).await?;
    }
    if let Some(v) = &d.voicemail {
        super::voicemails::insert_in(c, v, now).await?;
    }
    if let Some(t) = &d.transcription {
        super::voicemails::transcribed_in(c, t).await?;
    }
    let found = match &d.route {
        Route::Id(id) => load(c, *id).await?.map(|l| (*id, l)),
        Route::Keys { keys, .. } => match find(c, keys).await? {
            Some(id) => load(c, id).await?.map(|l| (id, l)),
            None => None,
        },
    };
    let create = matches!(d.route, Route::Keys { create: true, .. });
    // A new journey gets its row once its events are applied: one INSERT
    // with its state, rather than an empty row first and an UPDATE.
    let (mut held, version, mut journey, stored) = match found {
        Some((id, Loaded { version, journey, json, columns })) => {
            (Held::new(Some((id, version))), version, journey, Some((json, columns)))
        }
        None if create => (Held::new(None), 0, Journey::default(), None),
        None => {
            let nothing = Delivered {
                answer: Answer::Nothing,
                outcome: Outcome::Pending,
                queued: 0,
                queued_dials: 0,
                handed: 0,
                journey: None,
                settled: None,
            };
            return Ok((nothing, Vec::new()));
        }
    };
    let before = journey.outcome();
    let known: HashSet<String> = if version == 0 { HashSet::new() } else { journey.keys().into_iter().collect() };
    let at = Timestamp::from_millisecond(now).context("the clock is out of range")?;

    let originals = d.events.len();
    let mut queue: VecDeque<Event> = d.events.iter().cloned().collect();
    let mut answer = Answer::Nothing;
    let mut n = 0;
    let mut commanded = false;
    while let Some(event) = queue.pop_front() {
        let (next, step) = journey::apply(journey, event, at, &d.policy);
        journey = next;
        n += 1;
        if n == originals {
            answer = step.answer;
        }
        commanded |= !step.commands.is_empty();
        for command in step.commands {
            if matches!(command, Command::WithdrawDial { .. } | Command::WithdrawRedirect { .. })
                && !held.commands.is_empty()
            {
                // What it withdraws may be one of the commands held back.
                held.queue(c, &journey, None, now).await?;
            }
            if let Command::WithdrawDial { reservation, attempt } = &command {
                const WHY: &str = "withdrawn: the reservation ended or the caller left before the dial went out";
                let key = journey::dial_key(reservation, *attempt);
                let withdrawn = super::outbox::withdraw(c, &key, WHY, now).await?
                    || match take_back(&key) {
                        // Handed over by this batch: claimed, but not yet committed nor sent.
                        Some(handed) => {
                            super::outbox::withdraw_handed(c, handed, WHY, now).await?;
                            true
                        }
                        None => false,
                    };
                if withdrawn {
                    queue.push_back(Event::DialFailed { reservation: reservation.clone(), attempt: *attempt });
                }
                continue;
            }
            if let Command::WithdrawRedirect { call, round, kind } = &command {
                const WHY: &str = "withdrawn: the caller no longer needed the redirect when it had not gone out yet";
                if super::outbox::withdraw(c, &journey::redirect_key(call, *round, *kind), WHY, now).await? {
                    tracing::info!(call_sid = %call, ?kind, "a redirect withdrawn: the caller no longer needed it");
                }
                continue;
            }
            if let Command::ListCallbackRequest { call, location, number, since_ms } = &command {
                let id = super::voicemails::callback_request_id(call.as_str());
                if super::voicemails::insert_callback_request_in(
                    c,
                    call.as_str(),
                    location,
                    number.as_str(),
                    *since_ms,
                    now,
                )
                .await?
                {
                    tracing::info!(call_sid = %call, location, voicemail = id, "a callback request is in the voicemail list");
                }
                continue;
            }
            held.commands.push(command);
        }
    }

    let row = held.row;
    // Only here, after every withdrawal, may a dial be handed over: a
    // handed dial is claimed, and a withdrawal no longer stops it. And not
    // by a journey that closed, whose dials' call tokens are taken out below.
    let desk = desk.filter(|_| !journey.is_closed());
    let id = held.queue(c, &journey, desk, now).await?;
    // A delivery that left the journey as it was and owes nothing (a
    // webhook Twilio sent again, a repeated event) writes nothing: its
    // answer comes from the journey as stored.
    let json = if row.is_some() { Some(state_json(&journey)?) } else { None };
    let columns = row.map(|_| Columns::of(&journey));
    // Unchanged also in its columns: a row whose columns an older build
    // worked out otherwise is written again.
    let unchanged = !commanded
        && stored
            .as_ref()
            .is_some_and(|(was, was_columns)| Some(was) == json.as_ref() && Some(was_columns) == columns.as_ref());
    // After the commands: a journey that closed takes the call token out of its dials, these too.
    match (row, json) {
        _ if unchanged => {}
        (Some((id, version)), Some(json)) => {
            let stored = stored.as_ref().map(|(_, columns)| columns);
            let columns = columns.as_ref().context("a row's columns")?;
            save(c, id, version, &json, columns, stored, now).await?
        }
        // A new journey, written just now as it is.
        _ if journey.is_closed() => forget_dial_tokens(c, id, now).await?,
        _ => {}
    }
    let (queued, queued_dials, handed) = (held.queued, held.dials, std::mem::take(&mut held.handed));
    for key in journey.keys().into_iter().filter(|k| !known.contains(k)) {
        let added = c
            .execute(
                "INSERT INTO journey_keys (sid, journey_id) VALUES ($1, $2) ON CONFLICT (sid) DO NOTHING",
                args![&key, id],
            )
            .await?;
        // Two instances that both found no journey for a new call each made
        // one; the second to commit finds the first's keys here. Failing
        // rolls this one back, and the batcher writes it again alone, when
        // it finds the first's journey.
        if added != 1 && version == 0 && c.postgres() {
            return Err(MadeMeanwhile(key).into());
        }
    }
    // The `calls` row shows the journey, which is as it was.
    if !unchanged || d.caller.is_some() {
        project(c, &journey, d.caller.as_ref(), now).await?;
    }
    let outcome = journey.outcome();
    let settled = (!before.is_final() && outcome.is_final())
        .then(|| Settled { outcome, location: journey.summary().location.map(str::to_owned) });
    let delivered =
        Delivered { answer, outcome, queued, queued_dials, handed: handed.len(), journey: Some(id), settled };
    Ok((delivered, handed))
}

/// On PostgreSQL, another writer (another instance's, or another of this
/// one's) made a journey for the same new call while this delivery made one:
/// this delivery's transaction is rolled back and written again
/// (`batch::again_if_raced`), and then finds that journey.
#[derive(Debug, thiserror::Error)]
#[error("another writer made a journey for {0} at the same time; writing this event again")]
pub(super) struct MadeMeanwhile(pub(super) String);

/// The commands a delivery holds back until its journey has a row: a new
/// journey's row is written once, with its state after the delivery's
/// events, unless a withdrawal needs the commands in the outbox before that.
struct Held {
    /// The journey's id and version, once it has a row.
    row: Option<(i64, i64)>,
    commands: Vec<Command>,
    /// How many commands were new to the outbox, and how many of those are dials.
    queued: usize,
    dials: usize,
    /// The dials handed to the dial lane as they were written.
    handed: Vec<Handed>,
}

impl Held {
    fn new(row: Option<(i64, i64)>) -> Self {
        Held { row, commands: Vec::new(), queued: 0, dials: 0, handed: Vec::new() }
    }

    /// Puts the held commands into the outbox, after the journey's row
    /// (written now, with its state as it is, if it has none yet); the
    /// journey's id. Dials go to `desk`'s lane while it has free slots.
    async fn queue<C: Conn>(
        &mut self,
        c: &mut C,
        journey: &Journey,
        desk: Option<&Desk>,
        now: i64,
    ) -> anyhow::Result<i64> {
        let id = match self.row {
            Some((id, _)) => id,
            None => {
                let id = insert_new(c, journey, now).await?;
                self.row = Some((id, 1));
                id
            }
        };
        for command in self.commands.drain(..) {
            let slot = match desk {
                Some(desk) if Lane::of(&command) == Lane::Dial => desk.slot().map(|slot| (desk, slot)),
                _ => None,
            };
            if let Some((desk, slot)) = slot {
                if let Some(handed) = super::outbox::insert_handed(c, &command, id, desk, slot, now).await? {
                    self.handed.push(handed);
                    self.queued += 1;
                    self.dials += 1;
                }
                continue;
            }
            if super::outbox::insert_command(c, &command, Some(id), now).await? {
                self.queued += 1;
                self.dials += usize::from(Lane::of(&command) == Lane::Dial);
            }
        }
        Ok(id)
    }
}

/// On PostgreSQL, locks every journey that `deliveries` go to, lowest id
/// first, before the batch writes anything. Two instances' writers each
/// lock the journeys of a batch as they come; two batches that share two
/// journeys in opposite orders wait for each other until PostgreSQL's
/// deadlock check (`deadlock_timeout`, 1 s) fails one, and every webhook in
/// both waits that long (the two-instance test saw webhooks time out). Taken
/// in one order, the second batch waits only for the first's COMMIT. The
/// delivery's own `FOR UPDATE` then finds the lock already held; a journey
/// another instance makes meanwhile is locked there, as before.
pub(super) async fn lock_in_order<'a, C: Conn>(
    c: &mut C,
    deliveries: impl Iterator<Item = &'a Delivery>,
) -> anyhow::Result<()> {
    let mut ids = std::collections::BTreeSet::new();
    for d in deliveries {
        match &d.route {
            Route::Id(id) => {
                ids.insert(*id);
            }
            Route::Keys { keys, .. } => {
                if let Some(id) = find(c, keys).await? {
                    ids.insert(id);
                }
            }
        }
    }
    for id in ids {
        c.fetch_optional("SELECT id FROM journeys WHERE id = $1 FOR UPDATE", args![id]).await?;
    }
    Ok(())
}

/// Keeps a raw webhook.
pub(super) async fn insert_audit<C: Conn>(c: &mut C, a: &Audit, now: i64) -> anyhow::Result<()> {
    c.execute(
        "INSERT INTO events (source, event_type, resource_sid, payload, received_at_ms) VALUES ($1, $2, $3, $4, $5)",
        args![a.source, &a.event_type, &a.resource_sid, &*without_call_tokens(&a.payload), now],
    )
    .await?;
    Ok(())
}

/// Keeps one status callback of an outbound leg.
async fn insert_status<C: Conn>(c: &mut C, s: &StatusRecord, now: i64) -> anyhow::Result<()> {
    c.execute(
        "INSERT INTO call_statuses (call_sid, inbound_call_sid, status, sequence_number, call_duration,
             answered_by, sip_response_code, received_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        args![
            &s.call_sid,
            &s.inbound_call_sid,
            &s.status,
            s.sequence_number,
            s.call_duration,
            &s.answered_by,
            s.sip_response_code,
            now
        ],
    )
    .await?;
    Ok(())
}

/// The journey known by the first of `keys` that one is known by.
async fn find<C: Conn>(c: &mut C, keys: &[String]) -> anyhow::Result<Option<i64>> {
    for key in keys {
        if let Some(r) = c.fetch_optional("SELECT journey_id FROM journey_keys WHERE sid = $1", args![key]).await? {
            return Ok(Some(r.int(0)?));
        }
    }
    Ok(None)
}

/// A journey's row as read before a delivery.
struct Loaded {
    version: i64,
    journey: Journey,
    /// The JSON `journey` was read from.
    json: String,
    columns: Columns,
}

/// The columns a journey's row keeps beside its state, for the queries that
/// find journeys without reading their state (wake-ups, the queue's
/// positions, the reconciler's stale journeys).
#[derive(Debug, PartialEq)]
struct Columns {
    wake_at_ms: Option<i64>,
    closed: bool,
    degraded: bool,
    location: Option<String>,
    caller_state: Option<String>,
    waiting_since_ms: Option<i64>,
}

/// Which UPDATE a journey's row needs (see [`save`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Update {
    /// The state; every column already says what it says.
    State,
    /// The state and the wake-up time.
    StateAndWake,
    /// The state and every column.
    All,
}

impl Columns {
    /// What `journey`'s row should say.
    fn of(journey: &Journey) -> Columns {
        Columns {
            wake_at_ms: journey.wake_at().map(|t| t.as_millisecond()),
            closed: journey.is_closed(),
            degraded: journey.degraded(),
            location: journey.queue_location().map(str::to_owned),
            caller_state: Some(journey.caller_state().as_str().to_owned()),
            waiting_since_ms: journey.waiting_since_ms(),
        }
    }

    /// A row's state `json`, these columns and the time `now`, in the order
    /// the INSERT and the full UPDATE bind them.
    fn args<'a>(&'a self, json: &'a str, now: i64) -> [Arg<'a>; 8] {
        [
            Arg::from(json),
            Arg::from(self.wake_at_ms),
            Arg::from(i64::from(self.closed)),
            Arg::from(i64::from(self.degraded)),
            Arg::from(now),
            Arg::from(&self.location),
            Arg::from(&self.caller_state),
            Arg::from(self.waiting_since_ms),
        ]
    }

    /// The UPDATE that makes a row whose columns are these say `new`.
    fn update_to(&self, new: &Columns) -> Update {
        // Every field by name: a column added later must be placed here.
        let Columns { wake_at_ms, closed, degraded, location, caller_state, waiting_since_ms } = self;
        let rest_same = *closed == new.closed
            && *degraded == new.degraded
            && *location == new.location
            && *caller_state == new.caller_state
            && *waiting_since_ms == new.waiting_since_ms;
        match (rest_same, *wake_at_ms == new.wake_at_ms) {
            (true, true) => Update::State,
            (true, false) => Update::StateAndWake,
            (false, _) => Update::All,
        }
    }
}

/// A journey's row.
async fn load<C: Conn>(c: &mut C, id: i64) -> anyhow::Result<Option<Loaded>> {
    // On PostgreSQL another instance may deliver to the same journey at the
    // same time: the row lock makes the second wait for the first's COMMIT
    // and then read what it wrote. (SQLite's writer is alone.)
    let sql = if c.postgres() {
        "SELECT version, state_json, wake_at_ms, closed, degraded, location, caller_state, waiting_since_ms
         FROM journeys WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT version, state_json, wake_at_ms, closed, degraded, location, caller_state, waiting_since_ms
         FROM journeys WHERE id = $1"
    };
    let Some(row) = c.fetch_optional(sql, args![id]).await? else {
        return Ok(None);
    };
    let json = row.text(1)?;
    let journey = serde_json::from_str(&json).with_context(|| format!("journey {id} does not parse"))?;
    let columns = Columns {
        wake_at_ms: row.opt_int(2)?,
        closed: row.int(3)? != 0,
        degraded: row.int(4)? != 0,
        location: row.opt_text(5)?,
        caller_state: row.opt_text(6)?,
        waiting_since_ms: row.opt_int(7)?,
    };
    Ok(Some(Loaded { version: row.int(0)?, journey, json, columns }))
}

/// A new journey's row, at version 1, as [`save`] would leave it; its id.
async fn insert_new<C: Conn>(c: &mut C, journey: &Journey, now: i64) -> anyhow::Result<i64> {
    let columns = Columns::of(journey);
    let id = c
        .insert_id(
            insert!(
                "INSERT INTO journeys (state_json, version, wake_at_ms, closed, degraded, created_at_ms, updated_at_ms,
                     location, caller_state, waiting_since_ms)
                 VALUES ($1, 1, $2, $3, $4, $5, $5, $6, $7, $8)"
            ),
            &columns.args(&state_json(journey)?, now),
        )
        .await?;
    id.context("no id for a new journey")
}

/// What a journey's row keeps of it. A call token is kept only while the
/// call may still be dialled: once the journey is closed it leaves the
/// journey (and its sent dials: [`forget_dial_tokens`]).
fn state_json(journey: &Journey) -> serde_json::Result<String> {
    if journey.is_closed() {
        serde_json::to_string(&journey.without_call_tokens())
    } else {
        serde_json::to_string(journey)
    }
}

/// Writes a journey's row, its state `json` (from [`state_json`]) and its
/// `columns` ([`Columns::of`]), over version `version`, whose columns were
/// `stored`.
///
/// On SQLite an UPDATE that names an indexed column moves the row's entry in
/// that index (a delete and an insert, each dirtying a page) even when the
/// value is the same. Most deliveries change none of the queue's columns,
/// and many not the wake-up time, so those are named only when they changed.
/// (PostgreSQL compares the values itself; there it saves only the binding.)
async fn save<C: Conn>(
    c: &mut C,
    id: i64,
    version: i64,
    json: &str,
    columns: &Columns,
    stored: Option<&Columns>,
    now: i64,
) -> anyhow::Result<()> {
    if columns.closed {
        forget_dial_tokens(c, id, now).await?;
    }
    let update = stored.map_or(Update::All, |s| s.update_to(columns));
    let done = match update {
        Update::State => {
            c.execute(
                "UPDATE journeys SET state_json = $3, version = $2 + 1, updated_at_ms = $4
                 WHERE id = $1 AND version = $2",
                args![id, version, json, now],
            )
            .await?
        }
        Update::StateAndWake => {
            c.execute(
                "UPDATE journeys SET state_json = $3, version = $2 + 1, wake_at_ms = $4, updated_at_ms = $5
                 WHERE id = $1 AND version = $2",
                args![id, version, json, columns.wake_at_ms, now],
            )
            .await?
        }
        Update::All => {
            c.execute(
                "UPDATE journeys SET state_json = $3, version = $2 + 1, wake_at_ms = $4, closed = $5, degraded = $6,
                     updated_at_ms = $7, location = $8, caller_state = $9, waiting_since_ms = $10
                 WHERE id = $1 AND version = $2",
                &[&args![id, version][..], &columns.args(json, now)].concat(),
            )
            .await?
        }
    };
    anyhow::ensure!(done == 1, "journey {id} changed under us (version {version})");
    Ok(())
}

/// Takes the `CallToken` out of the journey's dials (their payloads are the
/// only other place it is kept). A closed journey has no dial in flight, so
/// a dial row still pending is one it withdrew or no longer wants: it loses
/// the token too.
async fn forget_dial_tokens<C: Conn>(c: &mut C, journey_id: i64, now: i64) -> anyhow::Result<()> {
    let rows = c
        .fetch(
            "SELECT id, payload FROM outbox
             WHERE journey_id = $1 AND kind = 'dial' AND payload LIKE '%\"call_token\":\"%'",
            args![journey_id],
        )
        .await?;
    for r in rows {
        let id = r.int(0)?;
        let mut command: Command =
            serde_json::from_str(&r.text(1)?).with_context(|| format!("outbox row {id} payload"))?;
        if let Command::Dial { target, .. } = &mut command {
            target.call_token = None;
        }
        let payload = serde_json::to_string(&command)?;
        c.execute("UPDATE outbox SET payload = $2, updated_at_ms = $3 WHERE id = $1", args![id, &payload, now]).await?;
    }
    Ok(())
}

/// A webhook's parameters as the audit log keeps them: without the caller's
/// `CallToken`, at the top level or inside the task's attributes
/// (`TaskAttributes`' `callToken`). A payload that is not a JSON object is
/// kept as it is.
pub(super) fn without_call_tokens(payload: &str) -> std::borrow::Cow<'_, str> {
    if !payload.contains("CallToken") && !payload.contains("callToken") {
        return payload.into();
    }
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str::<serde_json::Value>(payload) else {
        return payload.into();
    };
    map.remove("CallToken");
    map.remove("callToken");
    for value in map.values_mut() {
        let serde_json::Value::String(text) = value else { continue };
        if !text.contains("callToken") {
            continue;
        }
        if let Ok(serde_json::Value::Object(mut inner)) = serde_json::from_str::<serde_json::Value>(text) {
            inner.remove("callToken");
            *text = serde_json::Value::Object(inner).to_string();
        }
    }
    serde_json::Value::Object(map).to_string().into()
}

/// Keeps the `calls` row of the journey's caller in step with it.
async fn project<C: Conn>(c: &mut C, journey: &Journey, caller: Option<&NewCall>, now: i64) -> anyhow::Result<()> {
    let Some(call) = journey.caller_sid() else {
        return Ok(());
    };
    let s = journey.summary();
    c.execute(
        "INSERT INTO calls (call_sid, from_number, to_number, location, task_sid, reservation_sid, outbound_call_sid,
             answered_by, outcome, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
         ON CONFLICT (call_sid) DO UPDATE SET
             from_number = COALESCE(NULLIF(excluded.from_number, ''), calls.from_number),
             to_number = COALESCE(NULLIF(excluded.to_number, ''), calls.to_number),
             location = COALESCE(excluded.location, calls.location),
             task_sid = COALESCE(excluded.task_sid, calls.task_sid),
             reservation_sid = COALESCE(excluded.reservation_sid, calls.reservation_sid),
             outbound_call_sid = COALESCE(excluded.outbound_call_sid, calls.outbound_call_sid),
             answered_by = COALESCE(excluded.answered_by, calls.answered_by),
             outcome = excluded.outcome,
             updated_at_ms = excluded.updated_at_ms",
        args![
            call.as_str(),
            caller.map(|c| c.from.as_str()).unwrap_or(""),
            caller.map(|c| c.to.as_str()).unwrap_or(""),
            s.location,
            s.task.map(|t| t.as_str()),
            s.reservation.map(|r| r.as_str()),
            s.leg.map(|l| l.as_str()),
            s.answered_by.map(|a| a.as_str()),
            journey.outcome().as_str(),
            now
        ],
    )
    .await?;
    Ok(())
}

/// Journeys whose wake-up time has come, soonest first.
pub(super) async fn due(pool: &sqlx::AnyPool, now: i64, limit: i64) -> anyhow::Result<Vec<i64>> {
    let rows = sqlx::query("SELECT id FROM journeys WHERE wake_at_ms <= $1 ORDER BY wake_at_ms LIMIT $2")
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
}

impl super::Store {
    /// Delivers events to their journey and writes what it owes, with
    /// whatever else is queued for the writer (group commit); answered after
    /// the COMMIT. See [`deliver_in`].
    pub async fn deliver(&self, delivery: Delivery) -> anyhow::Result<Delivered> {
        let desk = self.desk();
        self.batched(|reply| super::batch::Op::Deliver(Box::new(delivery), desk, reply)).await
    }

    /// Journeys whose wake-up time has come.
    pub async fn due_journeys(&self, now_ms: i64, limit: i64) -> anyhow::Result<Vec<i64>> {
        due(&self.pool, now_ms, limit).await
    }

    /// How many journeys owe a command the dispatcher gave up on.
    pub async fn degraded_journeys(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM journeys WHERE degraded = 1").fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }

    /// Callers waiting in the queue and callers bridged, by location, among at
    /// most `limit` open journeys: (location, waiting, bridged). Counted by
    /// the database from the journeys' `location` and `caller_state` columns
    /// (written beside `state_json`), so no journey is loaded. For the metrics.
    pub async fn live_callers(&self, limit: i64) -> anyhow::Result<Vec<(String, i64, i64)>> {
        Ok(self.live_board(limit).await?.into_iter().map(|l| (l.location, l.waiting, l.bridged)).collect())
    }

    /// Open journeys nothing has touched since `before_ms`, oldest first: the
    /// reconciler asks Twilio about them.
    pub async fn stale_journeys(&self, before_ms: i64, limit: i64) -> anyhow::Result<Vec<(i64, Journey)>> {
        let rows = sqlx::query(
            "SELECT id, state_json FROM journeys WHERE closed = 0 AND updated_at_ms < $1 ORDER BY updated_at_ms
             LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let json: String = r.try_get("state_json")?;
                Ok((id, serde_json::from_str(&json).with_context(|| format!("journey {id} does not parse"))?))
            })
            .collect()
    }

    /// Which of these SIDs some journey is known by.
    pub async fn known_sids(&self, sids: &[String]) -> anyhow::Result<std::collections::HashSet<String>> {
        let mut known = std::collections::HashSet::new();
        for sid in sids {
            let row =
                sqlx::query("SELECT sid FROM journey_keys WHERE sid = $1").bind(sid).fetch_optional(&self.pool).await?;
            if row.is_some() {
                known.insert(sid.clone());
            }
        }
        Ok(known)
    }

    /// A journey's state, as JSON (for inspection and tests).
    pub async fn journey_json(&self, sid: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query(
            "SELECT j.state_json FROM journeys j JOIN journey_keys k ON k.journey_id = j.id WHERE k.sid = $1",
        )
        .bind(sid)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get("state_json")?)).transpose()
    }
}

#[cfg(test)]
mod call_token_tests {
    use super::without_call_tokens;

    #[test]
    fn the_audit_log_keeps_no_call_token() {
        let attrs = r#"{"location":"north","callToken":"tok-123","caller":"+13105550199"}"#;
        let payload =
            serde_json::json!({"CallSid": "CA1", "CallToken": "tok-123", "TaskAttributes": attrs}).to_string();
        let kept = without_call_tokens(&payload);
        assert!(!kept.contains("tok-123"), "{kept}");
        let v: serde_json::Value = serde_json::from_str(&kept).unwrap();
        assert_eq!(v["CallSid"], "CA1");
        let attrs: serde_json::Value = serde_json::from_str(v["TaskAttributes"].as_str().unwrap()).unwrap();
        assert_eq!(attrs["location"], "north");
        assert_eq!(attrs["caller"], "+13105550199");
        // Without a token, the payload is kept byte for byte.
        let plain = r#"{"CallSid":"CA1","TaskAttributes":"{\"location\":\"north\"}"}"#;
        assert_eq!(without_call_tokens(plain), plain);
    }
}

#[cfg(test)]
mod store_tests {
    use std::time::Duration;

    use super::super::testing::{POLICY, after_hours, arrived, connected, created, dials, sid, store};
    use super::super::{NOTIFY_CHANNEL, Store};
    use super::*;
    use crate::journey::ReservationEnd;
    use crate::outbox::Lane;
    use crate::test_backends::Backend;

    on_both_backends!(
        a_reservation_queues_one_dial_however_often_it_arrives,
        a_journey_begins_at_any_event_and_keeps_one_row_per_caller,
        a_dial_still_in_the_outbox_is_withdrawn_when_its_reservation_ends,
        a_dial_queued_and_withdrawn_by_one_delivery_to_a_new_journey_is_never_sent,
        a_delivery_that_changes_nothing_writes_nothing,
        the_queue_columns_are_written_with_the_state,
        every_column_follows_the_state_through_a_call,
        a_row_whose_columns_disagree_with_its_state_is_written_again,
        a_redirect_to_voicemail_still_in_the_outbox_is_withdrawn_once_the_caller_is_out_of_the_queue,
    );

    #[tokio::test]
    async fn on_postgres_a_write_that_queued_a_command_notifies_the_dispatchers() {
        let Some((s, db)) = store(Backend::Postgres).await else { return };
        let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
        listener.listen(NOTIFY_CHANNEL).await.unwrap();
        // A delivery that queues nothing notifies nobody.
        s.deliver(arrived(1)).await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
        assert!(quiet.is_err(), "no notification without a new command: {quiet:?}");
        // reservation.created queues a dial: every listener hears of it at COMMIT.
        assert_eq!(s.deliver(created(1, 1)).await.unwrap().queued, 1);
        let heard = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
        assert_eq!(heard.expect("notified").unwrap().channel(), NOTIFY_CHANNEL);
    }
    async fn a_reservation_queues_one_dial_however_often_it_arrives(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(1)).await.unwrap();
        let first = s.deliver(created(1, 1)).await.unwrap();
        assert_eq!((first.queued, first.queued_dials), (1, 1));
        let again = s.deliver(created(1, 1)).await.unwrap();
        assert_eq!((again.queued, again.journey), (0, first.journey), "the same journey, nothing new owed");
        assert_eq!(
            dials(&s.actions().await.unwrap()),
            [(format!("dial:{}", sid::<twilio::sid::ReservationSid>("WR", 1)).as_str(), OutboxState::Pending)]
        );
        let call = s.call(sid::<twilio::sid::CallSid>("CA", 1).as_str()).await.unwrap().unwrap();
        assert_eq!(call.task_sid, Some(sid::<twilio::sid::TaskSid>("WT", 1).to_string()));
        assert_eq!((call.from_number.as_str(), call.location.as_deref()), ("+14155550100", Some("north")));
        assert_eq!(s.event_count("reservation.created").await.unwrap(), 2, "every delivery is audited");
    }

    async fn a_journey_begins_at_any_event_and_keeps_one_row_per_caller(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        // A Studio flow enqueued the caller: no /incoming-call came first.
        let d = s.deliver(created(2, 2)).await.unwrap();
        assert_eq!(d.queued, 1);
        let d2 = s.deliver(arrived(2)).await.unwrap();
        assert_eq!(d2.journey, d.journey, "found by the caller's SID");
        let calls = s.calls().await.unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].from_number, "+14155550100", "filled in when the caller's webhook came");
    }

    async fn a_dial_still_in_the_outbox_is_withdrawn_when_its_reservation_ends(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(3)).await.unwrap();
        s.deliver(created(3, 3)).await.unwrap();
        let (task, reservation) = (sid("WT", 3), sid::<twilio::sid::ReservationSid>("WR", 3));
        let ended = Event::ReservationEnded { task, reservation: reservation.clone(), why: ReservationEnd::Timeout };
        let d = s.deliver(Delivery::to_keys([reservation.to_string()], vec![ended], POLICY)).await.unwrap();
        assert_eq!(d.queued, 0, "nothing new: the dial is withdrawn, not re-sent");
        assert_dial_withdrawn(&s, &reservation).await;
    }

    /// The reservation's dial was withdrawn before it went out: done, never
    /// claimed, and the journey knows the attempt made no call.
    async fn assert_dial_withdrawn(s: &Store, reservation: &twilio::sid::ReservationSid) {
        let actions = s.actions().await.unwrap();
        let (_, state, why) = actions.iter().find(|(k, _, _)| k.starts_with("dial:")).unwrap();
        assert_eq!(*state, OutboxState::Done, "{actions:?}");
        assert!(why.as_deref().unwrap().starts_with("withdrawn"), "{why:?}");
        assert!(s.claim(Lane::Dial, 10).await.unwrap().is_empty());
        let json = s.journey_json(reservation.as_str()).await.unwrap().unwrap();
        assert!(json.contains("not_placed"), "the journey knows the attempt made no call: {json}");
    }

    async fn a_dial_queued_and_withdrawn_by_one_delivery_to_a_new_journey_is_never_sent(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        // The dial lane has free slots, yet a dial withdrawn by the delivery
        // that queued it is never handed to the lane.
        let mut lane = s.open_desk(std::sync::Arc::new(tokio::sync::Semaphore::new(4)));
        // The journey's first delivery (its row not yet written) carries the
        // reservation and its end: the dial it queues is withdrawn at once.
        let (task, reservation) = (sid("WT", 9), sid::<twilio::sid::ReservationSid>("WR", 9));
        let mut d = arrived(9);
        d.events.extend(created(9, 9).events);
        d.events.push(Event::ReservationEnded { task, reservation: reservation.clone(), why: ReservationEnd::Timeout });
        assert_eq!(s.deliver(d).await.unwrap().handed, 0);
        assert!(lane.try_recv().is_none());
        assert_dial_withdrawn(&s, &reservation).await;
    }

    /// A journey's `location`, `caller_state` and `waiting_since_ms`.
    type QueueColumns = (Option<String>, Option<String>, Option<i64>);

    /// Every journey's `location`, `caller_state` and `waiting_since_ms`
    /// columns as written, each beside the same three read out of its
    /// `state_json`.
    async fn assert_columns_match_the_state(s: &Store, when: &str) -> Vec<QueueColumns> {
        let rows = sqlx::query("SELECT location, caller_state, waiting_since_ms, state_json FROM journeys ORDER BY id")
            .fetch_all(s.pool())
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                let written: QueueColumns = (r.get("location"), r.get("caller_state"), r.get("waiting_since_ms"));
                let json: String = r.get("state_json");
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                let stated: QueueColumns = (
                    v["location"].as_str().map(str::to_owned),
                    v["caller"]["state"].as_str().map(str::to_owned),
                    v["wait"]["since_ms"].as_i64(),
                );
                assert_eq!(written, stated, "{when}: the columns are not what the state says: {json}");
                written
            })
            .collect()
    }

    async fn the_queue_columns_are_written_with_the_state(backend: Backend) {
        use crate::journey::CallStatus;
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(1)).await.unwrap();
        s.deliver(created(1, 1)).await.unwrap();
        let rows = assert_columns_match_the_state(&s, "queued").await;
        assert!(matches!(&rows[..], [(Some(l), Some(c), Some(_))] if l == "north" && c == "queued"), "{rows:?}");
        // A journey that begins at TaskRouter's event: its caller is in the queue.
        s.deliver(created(2, 2)).await.unwrap();
        let rows = assert_columns_match_the_state(&s, "begun by a reservation").await;
        assert_eq!((rows.len(), rows[1].1.as_deref()), (2, Some("queued")), "{rows:?}");
        // The first caller is bridged, the second hangs up, a third is turned away.
        s.deliver(connected(1)).await.unwrap();
        let gone = Event::CallerStatus { status: CallStatus::Completed, sequence: Some(9) };
        let caller: twilio::sid::CallSid = sid("CA", 2);
        s.deliver(Delivery::to_keys([caller.to_string()], vec![gone], POLICY)).await.unwrap();
        s.deliver(after_hours(3, "+14155550103")).await.unwrap();
        let rows = assert_columns_match_the_state(&s, "bridged, gone, turned away").await;
        let states: Vec<Option<&str>> = rows.iter().map(|r| r.1.as_deref()).collect();
        assert_eq!(states, [Some("bridged"), Some("gone"), Some("diverted")], "{rows:?}");
    }

    /// Journey `n`'s row: its version and every column kept beside its
    /// state, asserting that they say what the state says.
    async fn row_as_the_state_says(s: &Store, n: usize, when: &str) -> (i64, Columns) {
        let caller: twilio::sid::CallSid = sid("CA", n);
        let r = sqlx::query(
            "SELECT j.version, j.wake_at_ms, j.closed, j.degraded, j.location, j.caller_state, j.waiting_since_ms,
                 j.state_json
             FROM journeys j JOIN journey_keys k ON k.journey_id = j.id WHERE k.sid = $1",
        )
        .bind(caller.as_str())
        .fetch_one(s.pool())
        .await
        .unwrap();
        let stored = Columns {
            wake_at_ms: r.get("wake_at_ms"),
            closed: r.get::<i64, _>("closed") != 0,
            degraded: r.get::<i64, _>("degraded") != 0,
            location: r.get("location"),
            caller_state: r.get("caller_state"),
            waiting_since_ms: r.get("waiting_since_ms"),
        };
        let json: String = r.get("state_json");
        let journey: Journey = serde_json::from_str(&json).unwrap();
        let stated = Columns::of(&journey);
        assert_eq!(stored, stated, "{when}: the row's columns are not what its state says: {json}");
        (r.get("version"), stored)
    }

    /// Through a call's life, with writes that changed none of the columns,
    /// only the wake-up, and others, every column still says what the state
    /// says (which columns each UPDATE names: `an_update_names_every_column_that_changed`).
    async fn every_column_follows_the_state_through_a_call(backend: Backend) {
        use crate::journey::{AnsweredBy, CallStatus};
        let Some((s, _d)) = store(backend).await else { return };
        let n = 11;
        let (task, reservation, leg): (twilio::sid::TaskSid, twilio::sid::ReservationSid, twilio::sid::CallSid) =
            (sid("WT", n), sid("WR", n), sid("CA", n + 100));
        let caller: twilio::sid::CallSid = sid("CA", n);
        let to_reservation = |event: Event| Delivery::to_keys([reservation.to_string()], vec![event], POLICY);
        let leg_status = |status, sequence| Event::LegStatus {
            reservation: reservation.clone(),
            attempt: Some(1),
            leg: leg.clone(),
            status,
            sequence: Some(sequence),
        };
        let steps: Vec<(&str, Delivery)> = vec![
            ("the caller arrived", arrived(n)),
            ("reserved", created(n, n)),
            // The dial's answer was lost: the journey wakes to look the leg up.
            (
                "the dial's answer lost",
                to_reservation(Event::DialUnknown { reservation: reservation.clone(), attempt: 1 }),
            ),
            (
                "the leg found",
                to_reservation(Event::LegSeen {
                    reservation: reservation.clone(),
                    attempt: Some(1),
                    leg: leg.clone(),
                    status: CallStatus::Queued,
                }),
            ),
            ("ringing", to_reservation(leg_status(CallStatus::Ringing, 1))),
            (
                "answered",
                to_reservation(Event::LegAnswered {
                    reservation: reservation.clone(),
                    attempt: Some(1),
                    leg: leg.clone(),
                    answered_by: AnsweredBy::Human,
                }),
            ),
            (
                "accepted",
                to_reservation(Event::ReservationAccepted { task: task.clone(), reservation: reservation.clone() }),
            ),
            (
                "the caller hung up",
                Delivery::to_keys(
                    [caller.to_string()],
                    vec![Event::CallerStatus { status: CallStatus::Completed, sequence: Some(9) }],
                    POLICY,
                ),
            ),
            ("the leg ended", to_reservation(leg_status(CallStatus::Completed, 3))),
            (
                "wrapped up",
                to_reservation(Event::ReservationCompleted { task: task.clone(), reservation: reservation.clone() }),
            ),
            ("the task completed", to_reservation(Event::TaskCompleted { task: task.clone() })),
        ];
        let (mut version, mut columns) = (0, None::<Columns>);
        let (mut none_changed, mut only_wake) = (0, 0);
        for (when, delivery) in steps {
            s.deliver(delivery).await.unwrap();
            let (v, now) = row_as_the_state_says(&s, n, when).await;
            if let Some(was) = &columns
                && v > version
            {
                none_changed += usize::from(was.update_to(&now) == Update::State);
                only_wake += usize::from(was.update_to(&now) == Update::StateAndWake);
            }
            (version, columns) = (v, Some(now));
        }
        assert_eq!(columns.map(|c| c.closed), Some(true), "the journey closed");
        assert!(none_changed > 0 && only_wake > 0, "both lean writes were made: {none_changed}, {only_wake}");
    }

    /// A delivery that changes nothing still writes a row whose columns do
    /// not say what its state says (as an older build may have left them).
    async fn a_row_whose_columns_disagree_with_its_state_is_written_again(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        let n = 12;
        s.deliver(arrived(n)).await.unwrap();
        s.deliver(created(n, n)).await.unwrap();
        let (version, _) = row_as_the_state_says(&s, n, "reserved").await;
        sqlx::query("UPDATE journeys SET location = 'elsewhere', wake_at_ms = 1").execute(s.pool()).await.unwrap();
        // Twilio asks again about the arrival: the state is as it was.
        let caller: twilio::sid::CallSid = sid("CA", n);
        let again = Delivery::to_keys([caller.to_string()], vec![Event::CallerArrived { call: caller }], POLICY);
        s.deliver(again).await.unwrap();
        let (after, _) = row_as_the_state_says(&s, n, "the arrival again").await;
        assert_eq!(after, version + 1, "written once more");
    }

    #[test]
    fn an_update_names_every_column_that_changed() {
        let base = || Columns {
            wake_at_ms: Some(1_000),
            closed: false,
            degraded: false,
            location: Some("north".into()),
            caller_state: Some("queued".into()),
            waiting_since_ms: Some(500),
        };
        assert_eq!(base().update_to(&base()), Update::State);
        assert_eq!(base().update_to(&Columns { wake_at_ms: None, ..base() }), Update::StateAndWake);
        let others = [
            Columns { closed: true, ..base() },
            Columns { degraded: true, ..base() },
            Columns { location: Some("south".into()), ..base() },
            Columns { location: None, ..base() },
            Columns { caller_state: Some("bridged".into()), ..base() },
            Columns { waiting_since_ms: Some(600), ..base() },
            Columns { closed: true, wake_at_ms: None, ..base() },
        ];
        for new in others {
            assert_eq!(base().update_to(&new), Update::All, "{new:?}");
        }
    }

    async fn a_delivery_that_changes_nothing_writes_nothing(backend: Backend) {
        let Some((s, _d)) = store(backend).await else { return };
        s.deliver(arrived(5)).await.unwrap();
        s.deliver(created(5, 5)).await.unwrap();
        let (reservation, leg) = (sid::<twilio::sid::ReservationSid>("WR", 5), sid::<twilio::sid::CallSid>("CA", 105));
        let placed = Event::DialPlaced { reservation: reservation.clone(), attempt: 1, leg: leg.clone() };
        s.deliver(Delivery::to_keys([reservation.to_string()], vec![placed], POLICY)).await.unwrap();
        let answered = || {
            let event = Event::LegAnswered {
                reservation: reservation.clone(),
                attempt: Some(1),
                leg: leg.clone(),
                answered_by: crate::journey::AnsweredBy::Human,
            };
            Delivery::to_keys([reservation.to_string(), leg.to_string()], vec![event], POLICY)
        };
        let row = || async {
            let row: (i64, i64, String) = sqlx::query_as("SELECT version, updated_at_ms, state_json FROM journeys")
                .fetch_one(s.pool())
                .await
                .unwrap();
            let calls: i64 = sqlx::query_scalar("SELECT updated_at_ms FROM calls").fetch_one(s.pool()).await.unwrap();
            (row, calls)
        };
        // The first answer changes the journey: it is written.
        let before = row().await;
        let first = s.deliver(answered()).await.unwrap();
        assert!(matches!(first.answer, Answer::Bridge { .. }), "{:?}", first.answer);
        let after = row().await;
        assert_eq!(after.0.0, before.0.0 + 1, "the answer is a new version");
        // Twilio asks again: the same answer, and nothing written, not even a time.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let again = s.deliver(answered()).await.unwrap();
        assert_eq!(format!("{:?}", again.answer), format!("{:?}", first.answer));
        assert_eq!((again.queued, again.journey), (0, first.journey));
        assert_eq!(row().await, after, "a repeated webhook leaves the journey's and the call's rows alone");
    }

    /// Caller `n`'s location was busy: the journey owes the redirect to voicemail.
    async fn busy_with_redirect_owed(s: &Store, n: usize) -> String {
        use crate::journey::CallStatus;
        s.deliver(arrived(n)).await.unwrap();
        s.deliver(created(n, n)).await.unwrap();
        let (reservation, leg) =
            (sid::<twilio::sid::ReservationSid>("WR", n), sid::<twilio::sid::CallSid>("CA", n + 100));
        let events = vec![
            Event::DialPlaced { reservation: reservation.clone(), attempt: 1, leg: leg.clone() },
            Event::LegStatus {
                reservation: reservation.clone(),
                attempt: Some(1),
                leg,
                status: CallStatus::Busy,
                sequence: Some(2),
            },
        ];
        let busy = s.deliver(Delivery::to_keys([reservation.to_string()], events, POLICY)).await.unwrap();
        assert!(busy.queued >= 1 && busy.queued_dials == 0, "the redirect and no dial: {busy:?}");
        let key = format!("redirect:{}", sid::<twilio::sid::CallSid>("CA", n));
        let actions = s.actions().await.unwrap();
        assert!(actions.iter().any(|(k, state, _)| *k == key && *state == OutboxState::Pending), "{actions:?}");
        key
    }

    async fn a_redirect_to_voicemail_still_in_the_outbox_is_withdrawn_once_the_caller_is_out_of_the_queue(
        backend: Backend,
    ) {
        let Some((s, _d)) = store(backend).await else { return };
        let hung_up = |n: usize| {
            let caller: twilio::sid::CallSid = sid("CA", n);
            let status = Event::CallerStatus { status: crate::journey::CallStatus::Completed, sequence: Some(9) };
            Delivery::to_keys([caller.to_string()], vec![status], POLICY)
        };
        // Still pending when the caller hangs up (as when `/hold` lets them go
        // by `<Leave>` after the grace): dropped, and never claimed.
        let key = busy_with_redirect_owed(&s, 7).await;
        assert_eq!(s.deliver(hung_up(7)).await.unwrap().queued, 0, "a withdrawal queues nothing");
        let actions = s.actions().await.unwrap();
        let (_, state, why) = actions.iter().find(|(k, _, _)| *k == key).unwrap();
        assert_eq!(*state, OutboxState::Done);
        assert!(why.as_deref().unwrap().starts_with("withdrawn"), "{why:?}");
        let claimed = s.claim(Lane::Other, 10).await.unwrap();
        assert!(!claimed.iter().any(|r| r.key == key), "{claimed:?}");

        // Already claimed by the dispatcher: on its way, it is left alone.
        let key = busy_with_redirect_owed(&s, 8).await;
        let claimed = s.claim(Lane::Other, 10).await.unwrap();
        assert!(claimed.iter().any(|r| r.key == key), "{claimed:?}");
        s.deliver(hung_up(8)).await.unwrap();
        let actions = s.actions().await.unwrap();
        let (_, state, why) = actions.iter().find(|(k, _, _)| *k == key).unwrap();
        assert_eq!((*state, why.as_deref()), (OutboxState::Sending, None));
    }
}
