//! Voicemail notifications: what to send for a new voicemail, and sending it.
//!
//! Each of a location's recipients (`notify_email`, `notify_webhook`) is one
//! outbox command ([`Command::NotifyVoicemail`]), owed by the caller's
//! journey once the voicemail is recorded and its transcription came (or was
//! not worth waiting for any longer); the dispatcher sends it, again after a
//! back-off when it fails for a reason that may pass, and records a failure
//! that will not pass (a refused address, a 4xx) without retrying.
//!
//! The webhook's body is JSON ([`Payload`]) signed with the configured
//! secret: `X-Call-Router-Timestamp: <unix seconds>` and
//! `X-Call-Router-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`,
//! so a receiver can refuse a replay of an old body as well as a forged one
//! (see README, "Voicemail notifications"). Emails go over SMTP (lettre),
//! plain only to loopback, else STARTTLS or TLS.
//!
//! Neither carries the recording's URL: the dashboard link is the way to
//! the audio, which the server streams with the account's credentials.

use std::time::Duration;

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;

use crate::config::{NotificationSettings, SmtpSecurity, SmtpSettings};
use crate::domain::Location;
use crate::journey::NotifyChannel;
use crate::store::Voicemail;

/// The signature header: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Call-Router-Signature";
/// The timestamp header: Unix seconds, part of the signed material.
pub const TIMESTAMP_HEADER: &str = "X-Call-Router-Timestamp";
/// The event's name, also in the body.
pub const EVENT_HEADER: &str = "X-Call-Router-Event";
pub const EVENT: &str = "voicemail.recorded";

/// How long a webhook receiver has to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Who hears of a voicemail left for `location`: each `notify_email`, then
/// the `notify_webhook`.
pub fn recipients(location: &Location) -> Vec<NotifyChannel> {
    let spec = &location.spec;
    let emails = spec.notify_email.iter().map(|to| NotifyChannel::Email { to: to.clone() });
    let webhook = spec.notify_webhook.iter().map(|url| NotifyChannel::Webhook { url: url.clone() });
    emails.chain(webhook).collect()
}

/// The webhook's JSON body. Times are RFC 3339: `recorded_at` in UTC,
/// `recorded_at_local` in the location's time zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    pub event: &'static str,
    pub recording_sid: String,
    pub call_sid: String,
    pub caller: String,
    pub location: Option<String>,
    pub location_display_name: Option<String>,
    pub time_zone: Option<String>,
    pub recorded_at: String,
    pub recorded_at_local: Option<String>,
    pub duration_secs: Option<i64>,
    pub transcription: Option<String>,
    pub dashboard_url: String,
}

impl Payload {
    pub fn new(v: &Voicemail, location: Option<&Location>, public_url: &str) -> Self {
        let at = Timestamp::from_millisecond(v.recorded_at_ms).unwrap_or(Timestamp::UNIX_EPOCH);
        let zone = location.and_then(|l| jiff::tz::TimeZone::get(l.schedule.time_zone_name()).ok());
        Payload {
            event: EVENT,
            recording_sid: v.recording_sid.clone(),
            call_sid: v.call_sid.clone(),
            caller: v.caller.clone(),
            location: v.location.clone(),
            location_display_name: location.map(|l| l.display_name.clone()),
            time_zone: location.map(|l| l.schedule.time_zone_name().to_owned()),
            recorded_at: rfc3339_ms(v.recorded_at_ms),
            recorded_at_local: zone
                .map(|z| jiff::ZonedDateTime::new(at, z).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()),
            duration_secs: v.duration_secs,
            transcription: v.transcription.clone(),
            dashboard_url: format!("{public_url}/dashboard"),
        }
    }

    /// The email's subject and text.
    pub fn email(&self) -> (String, String) {
        let place = self.location_display_name.as_deref().or(self.location.as_deref()).unwrap_or("your business");
        let subject = format!("Voicemail from {} for {place}", self.caller);
        let zone = self.time_zone.as_deref().map(jiff::tz::TimeZone::get);
        let when = match (zone, self.recorded_at.parse::<Timestamp>()) {
            (Some(Ok(z)), Ok(at)) => jiff::ZonedDateTime::new(at, z).strftime("%A %d %B %Y, %H:%M %Z").to_string(),
            _ => format!("{} (UTC)", self.recorded_at),
        };
        let mut text = format!("New voicemail for {place}.\n\nFrom: {}\nWhen: {when}\n", self.caller);
        if let Some(secs) = self.duration_secs {
            text.push_str(&format!("Length: {secs} s\n"));
        }
        if let Some(t) = &self.transcription {
            text.push_str(&format!("\nTranscription:\n{t}\n"));
        }
        text.push_str(&format!("\nListen to it on the dashboard: {}\n", self.dashboard_url));
        (subject, text)
    }
}

/// A time as the API and the notifications write it: RFC 3339 in UTC with
/// milliseconds (`2026-11-29T20:31:07.123Z`).
pub fn rfc3339_ms(ms: i64) -> String {
    let at = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a notification was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// Sending it again would fail the same way (a refused address, a 4xx,
    /// a missing setting): recorded as failed at once.
    pub permanent: bool,
    pub message: String,
}

impl SendError {
    fn permanent(message: impl Into<String>) -> Self {
        SendError { permanent: true, message: message.into() }
    }
    fn transient(message: impl Into<String>) -> Self {
        SendError { permanent: false, message: message.into() }
    }
}

/// Sends notifications; built once by the dispatcher.
pub struct Sender {
    /// Built at the first webhook notification, for a client most servers
    /// never use (with `tls_roots = "system"`, building it reads the
    /// system's root certificates).
    http: std::sync::OnceLock<reqwest::Client>,
    tls_roots: crate::config::TlsRoots,
    webhook_secret: Option<SecretString>,
    smtp: Option<(SmtpSettings, AsyncSmtpTransport<Tokio1Executor>)>,
    public_url: String,
}

impl Sender {
    pub fn new(
        settings: &NotificationSettings,
        public_url: &str,
        tls_roots: crate::config::TlsRoots,
    ) -> anyhow::Result<Self> {
        let smtp =
            settings.smtp.as_ref().map(|s| Ok::<_, anyhow::Error>((s.clone(), smtp_transport(s)?))).transpose()?;
        Ok(Sender {
            http: std::sync::OnceLock::new(),
            tls_roots,
            webhook_secret: settings.webhook_secret.clone(),
            smtp,
            public_url: public_url.to_owned(),
        })
    }

    /// The webhooks' HTTP client, built on first use.
    fn http(&self) -> Result<&reqwest::Client, SendError> {
        if let Some(http) = self.http.get() {
            return Ok(http);
        }
        let built = crate::twilio_api::https_client(self.tls_roots)
            .map_err(|e| SendError::transient(format!("building the webhooks' HTTP client: {e:#}")))?
            .timeout(WEBHOOK_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A redirect would post the signed body somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("call-router/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SendError::transient(format!("building the webhooks' HTTP client: {e}")))?;
        // Two first sends at once build two; the first one set stays.
        Ok(self.http.get_or_init(|| built))
    }

    pub async fn send(
        &self,
        channel: &NotifyChannel,
        voicemail: &Voicemail,
        location: Option<&Location>,
    ) -> Result<(), SendError> {
        let payload = Payload::new(voicemail, location, &self.public_url);
        match channel {
            NotifyChannel::Webhook { url } => self.webhook(url, &payload).await,
            NotifyChannel::Email { to } => self.email(to, &payload).await,
        }
    }

    async fn webhook(&self, url: &str, payload: &Payload) -> Result<(), SendError> {
        let Some(secret) = &self.webhook_secret else {
            return Err(SendError::permanent("no notifications.webhook_secret is configured to sign the webhook"));
        };
        let body = serde_json::to_vec(payload).map_err(|e| SendError::permanent(e.to_string()))?;
        let timestamp = Timestamp::now().as_second();
        let sig = signature(secret.expose_secret().as_bytes(), timestamp, &body);
        let sent = self
            .http()?
            .post(url)
            .header("Content-Type", "application/json")
            .header(EVENT_HEADER, EVENT)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, format!("sha256={sig}"))
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            // Without the URL: it may carry a token of the receiver's.
            Err(e) if e.is_timeout() => return Err(SendError::transient("webhook: no answer in time")),
            Err(e) if e.is_builder() => return Err(SendError::permanent("webhook: the URL is not usable")),
            Err(_) => return Err(SendError::transient("webhook: could not connect or the connection broke")),
        };
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(()),
            408 | 425 | 429 | 500..=599 => Err(SendError::transient(format!("webhook: HTTP {status}"))),
            _ => Err(SendError::permanent(format!("webhook: HTTP {status}"))),
        }
    }

    async fn email(&self, to: &str, payload: &Payload) -> Result<(), SendError> {
        let Some((settings, transport)) = &self.smtp else {
            return Err(SendError::permanent("no notifications.smtp_server is configured to send the email"));
        };
        let from: Mailbox =
            settings.from.parse().map_err(|e| SendError::permanent(format!("smtp_from is not an address: {e}")))?;
        let to: Mailbox = to.parse().map_err(|e| SendError::permanent(format!("{to:?} is not an address: {e}")))?;
        let (subject, text) = payload.email();
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| SendError::permanent(format!("building the email: {e}")))?;
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::permanent(format!("smtp: {e}"))),
            Err(e) => Err(SendError::transient(format!("smtp: {e}"))),
        }
    }
}

fn smtp_transport(s: &SmtpSettings) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    type Smtp = AsyncSmtpTransport<Tokio1Executor>;
    let builder = match s.security {
        SmtpSecurity::Tls => Smtp::relay(&s.server)?,
        SmtpSecurity::Starttls => Smtp::starttls_relay(&s.server)?,
        SmtpSecurity::None => Smtp::builder_dangerous(&s.server),
    };
    let mut builder = builder.port(s.port).timeout(Some(Duration::from_secs(s.timeout_secs)));
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().to_owned()));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::Command;

    #[test]
    fn signature_covers_the_timestamp_and_the_body() {
        let secret = b"0123456789abcdef0123";
        let sig = signature(secret, 1_764_444_667, br#"{"event":"voicemail.recorded"}"#);
        assert_eq!(sig.len(), 64);
        assert!(sig.chars().all(|c| c.is_ascii_hexdigit()));
        // An independent computation of HMAC-SHA256 over "<ts>.<body>".
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(br#"1764444667.{"event":"voicemail.recorded"}"#);
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sig, expected);
        assert_ne!(sig, signature(secret, 1_764_444_668, br#"{"event":"voicemail.recorded"}"#));
        assert_ne!(sig, signature(secret, 1_764_444_667, br#"{"event":"voicemail.recorded "}"#));
        assert_ne!(sig, signature(b"another secret", 1_764_444_667, br#"{"event":"voicemail.recorded"}"#));
    }

    #[test]
    fn email_names_the_caller_local_time_transcription_and_dashboard() {
        let spec = crate::domain::LocationSpec {
            display_name: Some("North clinic".into()),
            transcribe: true,
            notify_email: vec!["desk@example.com".into()],
            notify_webhook: Some("https://hooks.example.com/vm".into()),
            ..crate::domain::LocationSpec::new(
                "north",
                &["+12025550143"],
                "+14155550123",
                crate::hours::HoursSpec { time_zone: "America/New_York".into(), ..Default::default() },
            )
        };
        let location = Location::from_stored(spec).unwrap();
        let v = Voicemail {
            recording_sid: "RE0123456789abcdef0123456789abcdef".into(),
            call_sid: "CA0123456789abcdef0123456789abcdef".into(),
            caller: "+13105550199".into(),
            location: Some("north".into()),
            duration_secs: Some(12),
            // 2025-11-29T20:31:07.123Z: 15:31 in New York (EST).
            recorded_at_ms: 1_764_448_267_123,
            transcription: Some("Please call me back about Tuesday.".into()),
            listened_at_ms: None,
            kind: crate::store::VoicemailKind::Recording,
            waiting_since_ms: None,
        };
        let p = Payload::new(&v, Some(&location), "https://router.example.com");
        assert_eq!(p.recorded_at, "2025-11-29T20:31:07.123Z");
        assert_eq!(p.recorded_at_local.as_deref(), Some("2025-11-29T15:31:07-05:00"));
        assert_eq!(p.dashboard_url, "https://router.example.com/dashboard");
        let (subject, text) = p.email();
        assert_eq!(subject, "Voicemail from +13105550199 for North clinic");
        assert!(text.contains("From: +13105550199"), "{text}");
        assert!(text.contains("15:31 EST"), "{text}");
        assert!(text.contains("Please call me back about Tuesday."), "{text}");
        assert!(text.contains("https://router.example.com/dashboard"), "{text}");
        let kinds: Vec<String> = recipients(&location)
            .into_iter()
            .map(|channel| Command::NotifyVoicemail { recording: v.recording_sid.clone(), channel }.key())
            .collect();
        assert_eq!(
            kinds,
            [
                "notify:RE0123456789abcdef0123456789abcdef:email:desk@example.com",
                "notify:RE0123456789abcdef0123456789abcdef:webhook"
            ]
        );
    }

    #[test]
    fn the_webhooks_client_is_built_at_the_first_webhook_not_at_start() {
        let settings = crate::config::NotificationSettings::default();
        let sender = Sender::new(&settings, "https://router.example.com", crate::config::TlsRoots::Mozilla).unwrap();
        assert!(sender.http.get().is_none(), "a start-up built the webhooks' client");
        let first: *const reqwest::Client = sender.http().unwrap();
        let again: *const reqwest::Client = sender.http().unwrap();
        assert!(std::ptr::eq(first, again), "the client is built once");
    }
}
