//! Voicemails in the database: one row per recording a caller left, its
//! transcription when one comes, and whether someone has listened to it.
//!
//! The rows are written with a delivery to the caller's journey
//! (`Delivery::voicemail`, `Delivery::transcription`), in its transaction.
//! Whether and when the location's recipients hear of a voicemail is the
//! journey's decision (`Event::VoicemailRecorded`, `Event::Transcribed`):
//! its `Command::NotifyVoicemail`s go to the outbox like any other command.
//!
//! The recording's URL is kept here and only here: the API streams the audio
//! through with the account's credentials and never shows it.

use serde::Serialize;

use super::sql::{Conn, args};

/// A voicemail as the Record action reported it.
#[derive(Debug, Clone)]
pub struct NewVoicemail {
    pub recording_sid: String,
    pub call_sid: String,
    pub caller: String,
    pub location: Option<String>,
    pub duration_secs: Option<i64>,
    pub recorded_at_ms: i64,
    pub recording_url: String,
}

/// A transcription callback's news.
#[derive(Debug, Clone)]
pub struct Transcription {
    pub recording_sid: String,
    /// `completed` or `failed`, as Twilio says it.
    pub status: String,
    pub text: Option<String>,
}

/// What an entry of the voicemail list is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VoicemailKind {
    /// A recording the caller left.
    Recording,
    /// A callback that ended at closing time (`at_closing =
    /// "voicemail_list"`): staff call the caller back by hand. No recording.
    CallbackRequest,
}

impl VoicemailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VoicemailKind::Recording => "recording",
            VoicemailKind::CallbackRequest => "callback_request",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "recording" => Ok(VoicemailKind::Recording),
            "callback_request" => Ok(VoicemailKind::CallbackRequest),
            other => anyhow::bail!("unknown voicemail kind {other:?}"),
        }
    }
}

/// A callback request's id in the voicemail list: `CB` and the hex of the
/// caller's call SID (one request per call).
pub fn callback_request_id(call_sid: &str) -> String {
    format!("CB{}", call_sid.strip_prefix("CA").unwrap_or(call_sid))
}

/// Whether `id` has the shape of [`callback_request_id`]'s: `CB` and 32 hex digits.
pub fn is_callback_request_id(id: &str) -> bool {
    id.len() == 34 && id.starts_with("CB") && id[2..].chars().all(|c| c.is_ascii_hexdigit())
}

/// A stored voicemail, without its recording's URL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Voicemail {
    /// The recording's SID, or a callback request's id ([`callback_request_id`]).
    pub recording_sid: String,
    pub kind: VoicemailKind,
    pub call_sid: String,
    pub caller: String,
    pub location: Option<String>,
    pub duration_secs: Option<i64>,
    pub recorded_at_ms: i64,
    pub transcription: Option<String>,
    pub listened_at_ms: Option<i64>,
    /// A callback request's: since when the caller waited.
    pub waiting_since_ms: Option<i64>,
}

/// Which voicemails a list shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VoicemailFilter {
    /// `Some(true)`: only listened ones; `Some(false)`: only new ones.
    pub listened: Option<bool>,
    pub location: Option<String>,
    /// After this one (newest first): `(recorded_at_ms, recording_sid)`.
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// Stores a voicemail, and its URL on the caller's `calls` row; false (and
/// nothing written) when it was stored already.
pub(super) async fn insert_in<C: Conn>(c: &mut C, v: &NewVoicemail, now: i64) -> anyhow::Result<bool> {
    let inserted = c
        .execute(
            "INSERT INTO voicemails (recording_sid, call_sid, caller, location, duration_secs, recorded_at_ms,
                 recording_url)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (recording_sid) DO NOTHING",
            args![
                &v.recording_sid,
                &v.call_sid,
                &v.caller,
                &v.location,
                v.duration_secs,
                v.recorded_at_ms,
                &v.recording_url
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(false);
    }
    c.execute(
        "UPDATE calls SET recording_url = $2, updated_at_ms = $3 WHERE call_sid = $1",
        args![&v.call_sid, &v.recording_url, now],
    )
    .await?;
    Ok(true)
}

/// Puts a callback request in the location's voicemail list; false (and
/// nothing written) when this call's is there already.
pub(super) async fn insert_callback_request_in<C: Conn>(
    c: &mut C,
    call_sid: &str,
    location: &str,
    number: &str,
    since_ms: i64,
    now: i64,
) -> anyhow::Result<bool> {
    let inserted = c
        .execute(
            "INSERT INTO voicemails (recording_sid, call_sid, caller, location, recorded_at_ms, recording_url, kind,
                 waiting_since_ms)
             VALUES ($1, $2, $3, $4, $5, '', 'callback_request', $6) ON CONFLICT (recording_sid) DO NOTHING",
            args![&callback_request_id(call_sid), call_sid, number, location, now, since_ms],
        )
        .await?;
    Ok(inserted > 0)
}

/// Keeps a transcription (a failed one later keeps the text). False when no
/// such voicemail is stored.
pub(super) async fn transcribed_in<C: Conn>(c: &mut C, t: &Transcription) -> anyhow::Result<bool> {
    let found = c
        .execute(
            "UPDATE voicemails SET transcription = COALESCE($2, transcription), transcription_status = $3
             WHERE recording_sid = $1",
            args![&t.recording_sid, &t.text, &t.status],
        )
        .await?;
    Ok(found > 0)
}

/// `SELECT … FROM voicemails` followed by the given clause, as a literal.
macro_rules! select_voicemails {
    ($tail:literal) => {
        concat!(
            "SELECT recording_sid, call_sid, caller, location, duration_secs, recorded_at_ms, transcription, ",
            "listened_at_ms, kind, waiting_since_ms FROM voicemails ",
            $tail
        )
    };
}

fn voicemail(r: &super::sql::Row) -> anyhow::Result<Voicemail> {
    Ok(Voicemail {
        recording_sid: r.text(0)?,
        call_sid: r.text(1)?,
        caller: r.text(2)?,
        location: r.opt_text(3)?,
        duration_secs: r.opt_int(4)?,
        recorded_at_ms: r.int(5)?,
        transcription: r.opt_text(6)?,
        listened_at_ms: r.opt_int(7)?,
        kind: VoicemailKind::parse(&r.text(8)?)?,
        waiting_since_ms: r.opt_int(9)?,
    })
}

/// One voicemail.
pub(super) async fn get<C: Conn>(c: &mut C, recording_sid: &str) -> anyhow::Result<Option<Voicemail>> {
    const SQL: &str = select_voicemails!("WHERE recording_sid = $1");
    let row = c.fetch_optional(SQL, args![recording_sid]).await?;
    row.as_ref().map(voicemail).transpose()
}

/// A page of voicemails, newest first.
pub(super) async fn list<C: Conn>(c: &mut C, f: &VoicemailFilter) -> anyhow::Result<Vec<Voicemail>> {
    // One statement for every filter: an absent filter is a value that
    // matches everything ('' location, 0 listened, the largest time).
    const SQL: &str = select_voicemails!(
        "WHERE ($1 = '' OR location = $1)
           AND ($2 = 0 OR ($2 = 1 AND listened_at_ms IS NOT NULL) OR ($2 = 2 AND listened_at_ms IS NULL))
           AND (recorded_at_ms < $3 OR (recorded_at_ms = $3 AND recording_sid < $4))
         ORDER BY recorded_at_ms DESC, recording_sid DESC LIMIT $5"
    );
    let listened: i64 = match f.listened {
        None => 0,
        Some(true) => 1,
        Some(false) => 2,
    };
    let (at, sid) = match &f.after {
        Some((at, sid)) => (*at, sid.as_str()),
        // No SID sorts below '' at i64::MAX, and no voicemail is recorded then.
        None => (i64::MAX, ""),
    };
    let location = f.location.as_deref().unwrap_or("");
    let rows = c.fetch(SQL, args![location, listened, at, sid, f.limit]).await?;
    rows.iter().map(voicemail).collect()
}

/// The recording's URL, for the server's own fetch (none for a callback request).
pub(super) async fn recording_url<C: Conn>(c: &mut C, recording_sid: &str) -> anyhow::Result<Option<String>> {
    let sql = "SELECT recording_url FROM voicemails WHERE recording_sid = $1 AND kind = 'recording'";
    let row = c.fetch_optional(sql, args![recording_sid]).await?;
    row.map(|r| r.text(0)).transpose()
}

/// Marks a voicemail listened (the first time counts). False when unknown.
pub(super) async fn mark_listened<C: Conn>(c: &mut C, recording_sid: &str, now: i64) -> anyhow::Result<bool> {
    let done = c
        .execute(
            "UPDATE voicemails SET listened_at_ms = COALESCE(listened_at_ms, $2) WHERE recording_sid = $1",
            args![recording_sid, now],
        )
        .await?;
    Ok(done > 0)
}

impl super::Store {
    pub async fn voicemail(&self, recording_sid: &str) -> anyhow::Result<Option<Voicemail>> {
        let mut conn = self.pool.acquire().await?;
        get(&mut *conn, recording_sid).await
    }

    /// A page of voicemails, newest first.
    pub async fn voicemails(&self, filter: &VoicemailFilter) -> anyhow::Result<Vec<Voicemail>> {
        let mut conn = self.pool.acquire().await?;
        list(&mut *conn, filter).await
    }

    /// Where Twilio keeps a voicemail's audio; for the server's own fetch
    /// only, never to be shown or logged at info level.
    pub async fn voicemail_recording_url(&self, recording_sid: &str) -> anyhow::Result<Option<String>> {
        let mut conn = self.pool.acquire().await?;
        recording_url(&mut *conn, recording_sid).await
    }

    /// Marks a voicemail listened; false when there is none with that SID.
    pub async fn mark_voicemail_listened(&self, recording_sid: &str) -> anyhow::Result<bool> {
        let mut conn = self.writer.acquire().await?;
        mark_listened(&mut *conn, recording_sid, super::now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use crate::config::AnsweredByPolicy;
    use crate::journey::{Event, NotifyChannel, Policy};
    use crate::outbox::Lane;
    use crate::store::{Delivery, NewVoicemail, Store, Transcription, VoicemailFilter};
    use crate::test_backends::{Backend, TestDb};

    const POLICY: Policy = Policy {
        max_queue_secs: 300,
        on_machine: AnsweredByPolicy::Hangup,
        on_unknown: AnsweredByPolicy::Bridge,
        max_dial_attempts: 3,
    };

    async fn store(backend: Backend) -> Option<(Store, TestDb)> {
        let db = backend.database().await?;
        let store = Store::connect(&db.url).await.unwrap();
        Some((store, db))
    }

    fn re(n: usize) -> String {
        format!("RE{n:032x}")
    }

    fn ca(n: usize) -> String {
        format!("CA{n:032x}")
    }

    fn voicemail(n: usize, location: &str, at_ms: i64) -> NewVoicemail {
        let recording_sid = re(n);
        NewVoicemail {
            recording_url: format!("https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/{recording_sid}"),
            recording_sid,
            call_sid: ca(n),
            caller: "+13105550199".into(),
            location: Some(location.into()),
            duration_secs: Some(7),
            recorded_at_ms: at_ms,
        }
    }

    fn recipients() -> Vec<NotifyChannel> {
        vec![
            NotifyChannel::Email { to: "desk@example.com".into() },
            NotifyChannel::Webhook { url: "https://hooks.example.com/vm".into() },
        ]
    }

    /// What `/voicemail-complete` delivers: the caller's journey hears of the
    /// recording, and the row is written with it.
    fn recorded(v: &NewVoicemail, transcribe: bool) -> Delivery {
        let event = Event::VoicemailRecorded {
            recording: v.recording_sid.clone(),
            duration_secs: v.duration_secs.map(|d| d as u32),
            recipients: recipients(),
            transcribe,
        };
        let arrived = Event::CallerArrived { call: v.call_sid.parse().unwrap() };
        let mut d = Delivery::to_keys([v.recording_sid.clone(), v.call_sid.clone()], vec![arrived, event], POLICY);
        d.voicemail = Some(v.clone());
        d
    }

    fn transcribed(n: usize, status: &str, text: Option<&str>) -> Delivery {
        let mut d = Delivery::to_keys([re(n), ca(n)], vec![Event::Transcribed { recording: re(n) }], POLICY);
        d.transcription =
            Some(Transcription { recording_sid: re(n), status: status.into(), text: text.map(str::to_owned) });
        d
    }

    async fn a_voicemail_is_stored_once_with_its_notifications(backend: Backend) {
        let Some((s, _db)) = store(backend).await else { return };
        let v = voicemail(1, "north", 1_000);
        assert_eq!(s.deliver(recorded(&v, false)).await.unwrap().queued, 2);
        // Twilio asks the action again: nothing new, nothing announced twice.
        assert_eq!(s.deliver(recorded(&v, false)).await.unwrap().queued, 0);
        let claimed = s.claim(Lane::Other, 10).await.unwrap();
        let keys: Vec<&str> = claimed.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, [format!("notify:{}:email:desk@example.com", re(1)), format!("notify:{}:webhook", re(1))]);
        assert!(claimed.iter().all(|r| r.journey_id.is_some()), "the journey owes them");
        let got = s.voicemail(&re(1)).await.unwrap().unwrap();
        assert_eq!(
            (got.caller.as_str(), got.location.as_deref(), got.duration_secs, got.recorded_at_ms),
            ("+13105550199", Some("north"), Some(7), 1_000)
        );
        assert_eq!((got.transcription, got.listened_at_ms), (None, None));
        assert_eq!(s.voicemail_recording_url(&re(1)).await.unwrap(), Some(v.recording_url));
        assert_eq!(s.voicemail(&re(2)).await.unwrap(), None);
        assert_eq!(s.voicemail_recording_url(&re(2)).await.unwrap(), None);
    }

    async fn an_empty_recording_is_kept_and_not_announced(backend: Backend) {
        let Some((s, _db)) = store(backend).await else { return };
        let mut v = voicemail(1, "north", 1_000);
        v.duration_secs = Some(0);
        assert_eq!(s.deliver(recorded(&v, false)).await.unwrap().queued, 0);
        assert!(s.claim(Lane::Other, 10).await.unwrap().is_empty());
        assert!(s.voicemail(&re(1)).await.unwrap().is_some());
    }

    async fn notifications_wait_for_the_transcription(backend: Backend) {
        let Some((s, _db)) = store(backend).await else { return };
        let v = voicemail(1, "north", 1_000);
        assert_eq!(s.deliver(recorded(&v, true)).await.unwrap().queued, 0, "held for the transcription");
        assert!(s.claim(Lane::Other, 10).await.unwrap().is_empty());
        // The journey wants a tick when the wait is over.
        let json = s.journey_json(&re(1)).await.unwrap().expect("known by its recording");
        assert!(json.contains("transcript_by_ms"), "{json}");
        assert_eq!(s.deliver(transcribed(1, "completed", Some("Please call me back."))).await.unwrap().queued, 2);
        assert_eq!(s.claim(Lane::Other, 10).await.unwrap().len(), 2, "released by the transcription");
        let got = s.voicemail(&re(1)).await.unwrap().unwrap();
        assert_eq!(got.transcription.as_deref(), Some("Please call me back."));
        // A failed transcription later keeps the text and announces nothing again.
        assert_eq!(s.deliver(transcribed(1, "failed", None)).await.unwrap().queued, 0);
        assert_eq!(s.voicemail(&re(1)).await.unwrap().unwrap().transcription.as_deref(), Some("Please call me back."));
    }

    async fn voicemails_list_newest_first_by_filter_and_page(backend: Backend) {
        let Some((s, _db)) = store(backend).await else { return };
        // Two at the same time: the SID breaks the tie.
        for (n, loc, at) in [(1, "north", 1_000), (2, "south", 2_000), (3, "north", 3_000), (4, "north", 3_000)] {
            s.deliver(recorded(&voicemail(n, loc, at), false)).await.unwrap();
        }
        let sids = |list: Vec<super::Voicemail>| list.into_iter().map(|v| v.recording_sid).collect::<Vec<_>>();
        let filter = |limit| VoicemailFilter { limit, ..VoicemailFilter::default() };
        assert_eq!(sids(s.voicemails(&filter(50)).await.unwrap()), [re(4), re(3), re(2), re(1)]);
        assert!(s.mark_voicemail_listened(&re(3)).await.unwrap());
        let first = s.voicemail(&re(3)).await.unwrap().unwrap().listened_at_ms.unwrap();
        assert!(s.mark_voicemail_listened(&re(3)).await.unwrap(), "again is fine");
        assert_eq!(s.voicemail(&re(3)).await.unwrap().unwrap().listened_at_ms, Some(first), "the first time counts");
        assert!(!s.mark_voicemail_listened(&re(9)).await.unwrap());
        let listened = VoicemailFilter { listened: Some(true), ..filter(50) };
        assert_eq!(sids(s.voicemails(&listened).await.unwrap()), [re(3)]);
        let new = VoicemailFilter { listened: Some(false), ..filter(50) };
        assert_eq!(sids(s.voicemails(&new).await.unwrap()), [re(4), re(2), re(1)]);
        let north = VoicemailFilter { location: Some("north".into()), ..filter(50) };
        assert_eq!(sids(s.voicemails(&north).await.unwrap()), [re(4), re(3), re(1)]);
        let new_north = VoicemailFilter { listened: Some(false), location: Some("north".into()), ..filter(50) };
        assert_eq!(sids(s.voicemails(&new_north).await.unwrap()), [re(4), re(1)]);
        // Pages of two, each after the last one seen.
        let page1 = s.voicemails(&filter(2)).await.unwrap();
        let last = page1.last().map(|v| (v.recorded_at_ms, v.recording_sid.clone()));
        assert_eq!(sids(page1), [re(4), re(3)]);
        let page2 = s.voicemails(&VoicemailFilter { after: last, ..filter(2) }).await.unwrap();
        assert_eq!(sids(page2), [re(2), re(1)]);
    }

    /// A callback still waiting at closing time, by the location's policy
    /// (`to_list`), leaves a callback request in the voicemail list, in the
    /// same transaction as the journey that settles it; once.
    async fn a_callback_ended_at_closing_time_is_listed_as_a_callback_request(backend: Backend) {
        let Some((s, _db)) = store(backend).await else { return };
        let number = twilio::E164::parse("+13105550199").unwrap();
        let chosen =
            |to_list| Event::CallbackChosen { number: number.clone(), tries: 1, wait_for_opening: false, to_list };
        let events = |call: &str, to_list| {
            vec![
                Event::CallerArrived { call: call.parse().unwrap() },
                Event::CallerEnqueued { location: "north".into(), language: None },
                chosen(to_list),
                // Closed already: the callback ends at once.
                Event::ClosingTime { at_ms: 1_000, later: Vec::new(), callback: None, overflow: None },
            ]
        };
        let before = crate::store::now_ms();
        let done = s.deliver(Delivery::to_keys([ca(1)], events(&ca(1), true), POLICY)).await.unwrap();
        assert_eq!(done.outcome, crate::domain::Outcome::CallbackCanceled);
        let id = super::callback_request_id(&ca(1));
        assert!(super::is_callback_request_id(&id), "{id}");
        let v = s.voicemail(&id).await.unwrap().expect("listed");
        assert_eq!(v.kind, super::VoicemailKind::CallbackRequest);
        assert_eq!(
            (v.call_sid.as_str(), v.caller.as_str(), v.location.as_deref()),
            (ca(1).as_str(), "+13105550199", Some("north"))
        );
        assert!(v.recorded_at_ms >= before && v.waiting_since_ms.is_some_and(|w| w >= before), "{v:?}");
        assert_eq!(s.voicemail_recording_url(&id).await.unwrap(), None, "no recording to fetch");
        // Heard again (a retried tick, say): still one.
        s.deliver(Delivery::to_keys([ca(1)], vec![Event::Tick], POLICY)).await.unwrap();
        // Without the policy, the callback only ends.
        s.deliver(Delivery::to_keys([ca(2)], events(&ca(2), false), POLICY)).await.unwrap();
        let all = s.voicemails(&VoicemailFilter { limit: 50, ..VoicemailFilter::default() }).await.unwrap();
        assert_eq!(all.iter().map(|v| v.recording_sid.as_str()).collect::<Vec<_>>(), [id.as_str()]);
        // Marked done like a voicemail is marked listened.
        assert!(s.mark_voicemail_listened(&id).await.unwrap());
    }

    on_both_backends!(
        a_callback_ended_at_closing_time_is_listed_as_a_callback_request,
        a_voicemail_is_stored_once_with_its_notifications,
        an_empty_recording_is_kept_and_not_announced,
        notifications_wait_for_the_transcription,
        voicemails_list_newest_first_by_filter_and_page,
    );
}
