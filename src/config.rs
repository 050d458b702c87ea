//! Settings: a TOML file, then environment variables, validated once at start.
//!
//! Every field has a default that is right for local use except the
//! credentials and the public URL. A bad value fails start-up with a message
//! that names the field (`dialing.ring_timeout_secs: …`), never later in the
//! middle of a call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use twilio::sid::{AccountSid, WorkflowSid, WorkspaceSid};

use crate::domain::LocationSpec;

/// A configuration problem, naming the field it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The IO error is part of the message and deliberately not a `source`, so that an
    // error chain printed with `{:#}` does not say it twice.
    #[error("cannot read config file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// What `answered_by` results other than `human` lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredByPolicy {
    /// Bridge the caller to whoever or whatever answered.
    Bridge,
    /// Hang up on the location and send the caller to voicemail.
    Hangup,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The URL Twilio reaches this server at; signatures are computed over it.
    pub public_url: String,
    pub listen: SocketAddr,
    /// Where `/metrics` is served on its own (`metrics_listen`); when unset,
    /// it is on the main router with the webhooks.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a stopping server waits for webhooks in flight and the
    /// dispatcher's running actions before it cuts them (`drain_secs`).
    pub drain_secs: u64,
    /// How often the reconciler compares Twilio's tasks and calls with the
    /// journeys (`reconcile_secs`); it also runs at start-up.
    pub reconcile_secs: u64,
    pub database_url: String,
    /// The database connection pool (`[database]`).
    pub database: crate::store::PoolSettings,
    pub twilio: TwilioSettings,
    pub security: SecuritySettings,
    pub dialing: DialingSettings,
    pub ivr: IvrSettings,
    pub provision: ProvisionSettings,
    /// The history API and the dashboard (`[admin]`).
    pub admin: AdminSettings,
    /// How voicemail notifications are sent (`[notifications]`).
    pub notifications: NotificationSettings,
    /// Locations declared in the file; `provision` and `locations import`
    /// copy them into the database, which is what `serve` reads.
    pub locations: Vec<LocationSpec>,
    /// The business clock hours are read at (see [`crate::clock`]). Always
    /// the wall clock when loaded: no file or environment variable sets it,
    /// only tests and the demo, which build their settings in code.
    pub clock: crate::clock::Clock,
}

#[derive(Debug, Clone)]
pub struct TwilioSettings {
    pub account_sid: AccountSid,
    pub auth_token: SecretString,
    /// Core API base, `https://api.twilio.com` or the sandbox.
    pub api_base_url: String,
    /// TaskRouter base, `https://taskrouter.twilio.com` or the sandbox.
    pub taskrouter_base_url: String,
    /// Set by hand, or left empty for `provision` to fill in the database.
    pub workspace_sid: Option<WorkspaceSid>,
    pub workflow_sid: Option<WorkflowSid>,
    pub request_timeout_ms: u64,
    /// The roots HTTPS to Twilio (and to notification webhooks) trusts.
    pub tls_roots: TlsRoots,
}

/// The roots an HTTPS client to the internet (Twilio's API, notification webhooks) trusts
/// (`twilio.tls_roots`, or [`env::TLS_ROOTS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsRoots {
    /// Mozilla's root store, built into the binary (webpki-roots): nothing to read or parse
    /// when a client is built. Twilio's API and public webhooks have certificates from
    /// public CAs.
    #[default]
    Mozilla,
    /// The system's store, with `SSL_CERT_FILE` and `SSL_CERT_DIR` (rustls-platform-verifier),
    /// for a TLS-inspecting proxy's or a private CA's roots: read and parsed when a client is
    /// built, ~12 ms of CPU for the ~150 roots of Debian's store, which a starting server
    /// spent beside its first webhooks.
    System,
}

impl TlsRoots {
    fn parse(value: &str) -> Result<TlsRoots, String> {
        match value.trim() {
            "mozilla" => Ok(TlsRoots::Mozilla),
            "system" => Ok(TlsRoots::System),
            other => Err(format!("must be \"mozilla\" or \"system\", not {other:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SecuritySettings {
    pub validate_signatures: bool,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct DialingSettings {
    /// How long the location's phone rings (Twilio's `Timeout`).
    pub ring_timeout_secs: u32,
    pub machine_detection_speech_threshold_ms: u32,
    /// How long answering-machine detection may take (`MachineDetectionTimeout`).
    pub machine_detection_timeout_secs: u32,
    pub on_machine: AnsweredByPolicy,
    pub on_unknown: AnsweredByPolicy,
}

#[derive(Debug, Clone)]
pub struct IvrSettings {
    pub business_name: String,
    pub hold_music_url: String,
    pub voice: Option<String>,
    pub menu_attempts: u32,
    pub menu_timeout_secs: u32,
    pub voicemail_max_secs: u32,
    /// Seconds a caller may wait in the queue before being offered voicemail.
    pub max_queue_secs: u32,
    /// Where a caller goes who made no valid menu choice in `menu_attempts`.
    pub on_no_choice: NoChoicePolicy,
    /// Announce a waiting caller's place and expected wait on entry and then
    /// every this many seconds, at locations that do not set their own
    /// `announce_every_secs`; 0 (the default): never.
    pub announce_every_secs: u32,
    /// The languages callers hear, the first by default (`ivr.languages`,
    /// `ivr.number_languages` and the `[language.TAG]` tables; see
    /// `crate::prompts`).
    pub languages: crate::prompts::Languages,
}

/// What the menu does once its attempts are used up without a valid choice
/// (`ivr.on_no_choice`: `"voicemail"`, `"goodbye"` or `"location:NAME"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NoChoicePolicy {
    /// The business's voicemail, with no location (the default).
    #[default]
    Voicemail,
    /// A goodbye, then hang up.
    Goodbye,
    /// This location, when the number's menu offers it; the business's
    /// voicemail otherwise.
    Location(String),
}

impl NoChoicePolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "voicemail" => Ok(NoChoicePolicy::Voicemail),
            "goodbye" => Ok(NoChoicePolicy::Goodbye),
            other => match other.strip_prefix("location:").map(str::trim) {
                Some(name) if !name.is_empty() => Ok(NoChoicePolicy::Location(name.to_owned())),
                _ => Err(format!("{other:?} is not a policy: use \"voicemail\", \"goodbye\" or \"location:NAME\"")),
            },
        }
    }
}

/// The history API (`/api/`) and the dashboard.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// The bearer token for `/api/` and the dashboard's login
    /// (`admin.token` or `CALL_ROUTER_ADMIN_TOKEN`). When unset, both are off.
    pub token: Option<SecretString>,
}

/// Voicemail notifications: the SMTP relay for emails and the secret that
/// signs webhook notifications (`[notifications]`).
#[derive(Debug, Clone, Default)]
pub struct NotificationSettings {
    /// Needed when any location has `notify_email`.
    pub smtp: Option<SmtpSettings>,
    /// The HMAC-SHA256 key of `X-Call-Router-Signature`; needed when any
    /// location has `notify_webhook` (`notifications.webhook_secret` or
    /// `CALL_ROUTER_WEBHOOK_SECRET`).
    pub webhook_secret: Option<SecretString>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain, upgraded with STARTTLS, which is required (port 587).
    Starttls,
    /// No encryption: only to a relay on loopback (tests, a local MTA).
    None,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub server: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// The `From` address.
    pub from: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// How long one delivery may take.
    pub timeout_secs: u64,
}

/// The shortest webhook secret accepted.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;

/// The shortest admin token accepted: it guards call history.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// What `call-router provision` names the resources it creates.
#[derive(Debug, Clone)]
pub struct ProvisionSettings {
    /// The TaskRouter workspace's FriendlyName; also the prefix that marks
    /// the queues, workers and workflow provision created as its own.
    pub workspace_name: String,
    /// Webhook connection overrides (`rc=3&rp=ct,5xx`) that provision appends
    /// as a `#fragment` to the webhook URLs it sets, so Twilio retries a
    /// webhook that meets a restart; empty: none.
    pub connection_overrides: String,
    /// The numbers' `VoiceFallbackUrl`: where Twilio asks for TwiML when
    /// `/incoming-call` fails (another instance, or a static apology).
    pub voice_fallback_url: Option<String>,
    /// The most lines one TaskRouter worker takes (its voice channel's
    /// capacity); a location with more lines gets several workers. At most,
    /// and by default, TaskRouter's limit `domain::WORKER_CAPACITY_MAX`.
    pub worker_capacity: u32,
}

/// The default [`ProvisionSettings::connection_overrides`]: three retries
/// after a refused connection or a 5xx, within Twilio's 15 s.
pub const DEFAULT_CONNECTION_OVERRIDES: &str = "rc=3&rp=ct,5xx";

impl ProvisionSettings {
    /// A webhook URL as provision sets it: with the overrides' fragment.
    pub fn webhook_url(&self, url: String) -> String {
        if self.connection_overrides.is_empty() { url } else { format!("{url}#{}", self.connection_overrides) }
    }
}

// ---------------------------------------------------------------------------
// The file as written. Every section and field is optional so that the
// environment can supply it; `Settings::from_raw` decides what is missing.
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    public_url: Option<String>,
    listen: Option<String>,
    metrics_listen: Option<String>,
    drain_secs: Option<u64>,
    reconcile_secs: Option<u64>,
    database_url: Option<String>,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    twilio: RawTwilio,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    dialing: RawDialing,
    #[serde(default)]
    ivr: RawIvr,
    #[serde(default)]
    provision: RawProvision,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    notifications: RawNotifications,
    #[serde(default)]
    locations: Vec<LocationSpec>,
    /// `[language.es-MX]`: a language's key, voice and own texts.
    #[serde(default)]
    language: BTreeMap<String, RawLanguage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLanguage {
    key: Option<String>,
    voice: Option<String>,
    business_name: Option<String>,
    #[serde(default)]
    prompts: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotifications {
    smtp_server: Option<String>,
    smtp_port: Option<u16>,
    smtp_security: Option<SmtpSecurity>,
    smtp_from: Option<String>,
    smtp_username: Option<String>,
    smtp_password: Option<SecretString>,
    smtp_timeout_secs: Option<u64>,
    webhook_secret: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    max_connections: Option<u32>,
    acquire_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvision {
    workspace_name: Option<String>,
    connection_overrides: Option<String>,
    voice_fallback_url: Option<String>,
    worker_capacity: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTwilio {
    account_sid: Option<String>,
    auth_token: Option<SecretString>,
    api_base_url: Option<String>,
    taskrouter_base_url: Option<String>,
    workspace_sid: Option<String>,
    workflow_sid: Option<String>,
    request_timeout_ms: Option<u64>,
    tls_roots: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    validate_signatures: Option<bool>,
    max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDialing {
    ring_timeout_secs: Option<u32>,
    machine_detection_speech_threshold_ms: Option<u32>,
    machine_detection_timeout_secs: Option<u32>,
    on_machine: Option<AnsweredByPolicy>,
    on_unknown: Option<AnsweredByPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIvr {
    business_name: Option<String>,
    hold_music_url: Option<String>,
    voice: Option<String>,
    menu_attempts: Option<u32>,
    menu_timeout_secs: Option<u32>,
    voicemail_max_secs: Option<u32>,
    max_queue_secs: Option<u32>,
    on_no_choice: Option<String>,
    announce_every_secs: Option<u32>,
    languages: Option<Vec<String>>,
    #[serde(default)]
    number_languages: BTreeMap<String, String>,
}

/// The environment variables that override the file.
pub mod env {
    pub const ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
    pub const AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
    pub const PUBLIC_URL: &str = "CALL_ROUTER_PUBLIC_URL";
    pub const LISTEN: &str = "CALL_ROUTER_LISTEN";
    pub const METRICS_LISTEN: &str = "CALL_ROUTER_METRICS_LISTEN";
    pub const DATABASE_URL: &str = "CALL_ROUTER_DATABASE_URL";
    pub const API_BASE_URL: &str = "CALL_ROUTER_TWILIO_API_BASE_URL";
    pub const TASKROUTER_BASE_URL: &str = "CALL_ROUTER_TASKROUTER_BASE_URL";
    pub const WORKSPACE_SID: &str = "CALL_ROUTER_WORKSPACE_SID";
    pub const WORKFLOW_SID: &str = "CALL_ROUTER_WORKFLOW_SID";
    /// The admin token for `/api/` and the dashboard.
    pub const ADMIN_TOKEN: &str = "CALL_ROUTER_ADMIN_TOKEN";
    /// Turns signature checks off. Only for local experiments; logged loudly.
    pub const INSECURE_SKIP_SIGNATURES: &str = "CALL_ROUTER_INSECURE_SKIP_SIGNATURE_CHECK";
    /// The key that signs voicemail webhook notifications.
    pub const WEBHOOK_SECRET: &str = "CALL_ROUTER_WEBHOOK_SECRET";
    pub const SMTP_SERVER: &str = "CALL_ROUTER_SMTP_SERVER";
    pub const SMTP_PORT: &str = "CALL_ROUTER_SMTP_PORT";
    pub const SMTP_USERNAME: &str = "CALL_ROUTER_SMTP_USERNAME";
    pub const SMTP_PASSWORD: &str = "CALL_ROUTER_SMTP_PASSWORD";
    /// `twilio.tls_roots`: which roots HTTPS to Twilio and to webhooks trusts, `mozilla`
    /// (built in, the default) or `system` (see [`super::TlsRoots`]).
    pub const TLS_ROOTS: &str = "CALL_ROUTER_TLS_ROOTS";
}

pub const DEFAULT_API_BASE_URL: &str = "https://api.twilio.com";
pub const DEFAULT_TASKROUTER_BASE_URL: &str = "https://taskrouter.twilio.com";
pub const DEFAULT_HOLD_MUSIC: &str = "http://com.twilio.sounds.music.s3.amazonaws.com/MARKOVICHAMP-Borghestral.mp3";

impl Settings {
    /// Loads `path` (if given), applies the process environment, validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, |k| std::env::var(k).ok())
    }

    /// As [`Settings::load`], with the environment supplied by the caller (tests).
    pub fn load_with_env(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|error| ConfigError::Read { path: p.display().to_string(), error })?;
                Self::parse_raw(&text, &p.display().to_string())?
            }
            None => RawSettings::default(),
        };
        Self::from_raw(raw, env)
    }

    /// Parses TOML text and validates it against the given environment.
    pub fn from_toml(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_raw(Self::parse_raw(text, "<inline>")?, env)
    }

    fn parse_raw(text: &str, path: &str) -> Result<RawSettings, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
    }

    fn from_raw(raw: RawSettings, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let pick = |var: &str, file: Option<String>| env(var).filter(|v| !v.is_empty()).or(file);

        let public_url = pick(env::PUBLIC_URL, raw.public_url).ok_or_else(|| {
            invalid(
                "public_url",
                format!("is required (the URL Twilio reaches this server at; or set {})", env::PUBLIC_URL),
            )
        })?;
        let public_url = validate_base_url("public_url", &public_url)?;

        let listen = pick(env::LISTEN, raw.listen).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let listen = listen
            .parse()
            .map_err(|_| invalid("listen", format!("{listen:?} is not an address like 127.0.0.1:8080")))?;

        let metrics_listen = pick(env::METRICS_LISTEN, raw.metrics_listen)
            .map(|m| {
                m.parse().map_err(|_| invalid("metrics_listen", format!("{m:?} is not an address like 127.0.0.1:9090")))
            })
            .transpose()?;

        let database_url =
            pick(env::DATABASE_URL, raw.database_url).unwrap_or_else(|| "sqlite://call-router.db".to_owned());
        crate::store::Backend::of(&database_url).map_err(|e| invalid("database_url", e.to_string()))?;
        let pool_defaults = crate::store::PoolSettings::default();
        let max_connections = raw.database.max_connections.unwrap_or(pool_defaults.max_connections);
        if !(2..=1000).contains(&max_connections) {
            return Err(invalid("database.max_connections", "must be between 2 and 1000"));
        }
        let acquire_timeout_secs = raw.database.acquire_timeout_secs.unwrap_or(pool_defaults.acquire_timeout.as_secs());
        if !(1..=300).contains(&acquire_timeout_secs) {
            return Err(invalid("database.acquire_timeout_secs", "must be between 1 and 300"));
        }
        let database = crate::store::PoolSettings {
            max_connections,
            acquire_timeout: std::time::Duration::from_secs(acquire_timeout_secs),
        };

        let account_sid = pick(env::ACCOUNT_SID, raw.twilio.account_sid).ok_or_else(|| {
            invalid("twilio.account_sid", format!("is required (set it in the file or {})", env::ACCOUNT_SID))
        })?;
        let account_sid = AccountSid::parse(&account_sid).map_err(|e| invalid("twilio.account_sid", e.to_string()))?;
        let auth_token = env(env::AUTH_TOKEN)
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
            .or(raw.twilio.auth_token)
            .ok_or_else(|| {
                invalid("twilio.auth_token", format!("is required (set it in the file or {})", env::AUTH_TOKEN))
            })?;
        if auth_token.expose_secret().trim().is_empty() {
            return Err(invalid("twilio.auth_token", "is empty"));
        }
        let api_base_url = validate_base_url(
            "twilio.api_base_url",
            &pick(env::API_BASE_URL, raw.twilio.api_base_url).unwrap_or_else(|| DEFAULT_API_BASE_URL.to_owned()),
        )?;
        let taskrouter_base_url = validate_base_url(
            "twilio.taskrouter_base_url",
            &pick(env::TASKROUTER_BASE_URL, raw.twilio.taskrouter_base_url)
                .unwrap_or_else(|| DEFAULT_TASKROUTER_BASE_URL.to_owned()),
        )?;
        let workspace_sid = pick(env::WORKSPACE_SID, raw.twilio.workspace_sid)
            .map(|s| WorkspaceSid::parse(&s).map_err(|e| invalid("twilio.workspace_sid", e.to_string())))
            .transpose()?;
        let workflow_sid = pick(env::WORKFLOW_SID, raw.twilio.workflow_sid)
            .map(|s| WorkflowSid::parse(&s).map_err(|e| invalid("twilio.workflow_sid", e.to_string())))
            .transpose()?;
        let reconcile_secs = raw.reconcile_secs.unwrap_or(60);
        if !(1..=86_400).contains(&reconcile_secs) {
            return Err(invalid("reconcile_secs", "must be between 1 and 86400"));
        }
        let drain_secs = raw.drain_secs.unwrap_or(30);
        if !(1..=3600).contains(&drain_secs) {
            return Err(invalid("drain_secs", "must be between 1 and 3600"));
        }
        let request_timeout_ms = raw.twilio.request_timeout_ms.unwrap_or(10_000);
        if !(100..=120_000).contains(&request_timeout_ms) {
            return Err(invalid("twilio.request_timeout_ms", "must be between 100 and 120000"));
        }

        let tls_roots = pick(env::TLS_ROOTS, raw.twilio.tls_roots)
            .map(|v| TlsRoots::parse(&v).map_err(|e| invalid("twilio.tls_roots", e)))
            .transpose()?
            .unwrap_or_default();

        let skip = env(env::INSECURE_SKIP_SIGNATURES).is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));
        let security = SecuritySettings {
            validate_signatures: raw.security.validate_signatures.unwrap_or(true) && !skip,
            max_body_bytes: raw.security.max_body_bytes.unwrap_or(64 * 1024),
        };
        if !(1024..=10 * 1024 * 1024).contains(&security.max_body_bytes) {
            return Err(invalid("security.max_body_bytes", "must be between 1024 and 10485760"));
        }

        let d = raw.dialing;
        let dialing = DialingSettings {
            ring_timeout_secs: d.ring_timeout_secs.unwrap_or(20),
            machine_detection_speech_threshold_ms: d.machine_detection_speech_threshold_ms.unwrap_or(2400),
            machine_detection_timeout_secs: d.machine_detection_timeout_secs.unwrap_or(30),
            on_machine: d.on_machine.unwrap_or(AnsweredByPolicy::Hangup),
            on_unknown: d.on_unknown.unwrap_or(AnsweredByPolicy::Bridge),
        };
        // Twilio's own limits for these parameters.
        if !(5..=600).contains(&dialing.ring_timeout_secs) {
            return Err(invalid("dialing.ring_timeout_secs", "must be between 5 and 600 (Twilio's Timeout range)"));
        }
        if !(1000..=6000).contains(&dialing.machine_detection_speech_threshold_ms) {
            return Err(invalid("dialing.machine_detection_speech_threshold_ms", "must be between 1000 and 6000"));
        }
        if !(3..=59).contains(&dialing.machine_detection_timeout_secs) {
            return Err(invalid("dialing.machine_detection_timeout_secs", "must be between 3 and 59"));
        }

        let mut i = raw.ivr;
        if let Some(v) = &i.voice {
            crate::prompts::check_voice(v).map_err(|e| invalid("ivr.voice", e))?;
        }
        let business_name = i.business_name.unwrap_or_else(|| "us".to_owned());
        let languages = languages(
            &business_name,
            i.voice.clone(),
            i.languages.take(),
            std::mem::take(&mut i.number_languages),
            raw.language,
            &raw.locations,
        )?;
        let ivr = IvrSettings {
            business_name,
            hold_music_url: i.hold_music_url.unwrap_or_else(|| DEFAULT_HOLD_MUSIC.to_owned()),
            voice: i.voice,
            menu_attempts: i.menu_attempts.unwrap_or(2),
            menu_timeout_secs: i.menu_timeout_secs.unwrap_or(5),
            voicemail_max_secs: i.voicemail_max_secs.unwrap_or(120),
            max_queue_secs: i.max_queue_secs.unwrap_or(300),
            on_no_choice: i
                .on_no_choice
                .as_deref()
                .map(NoChoicePolicy::parse)
                .transpose()
                .map_err(|e| invalid("ivr.on_no_choice", e))?
                .unwrap_or_default(),
            announce_every_secs: i.announce_every_secs.unwrap_or(0),
            languages,
        };
        crate::domain::check_announce_every(ivr.announce_every_secs)
            .map_err(|e| invalid("ivr.announce_every_secs", e))?;
        if let NoChoicePolicy::Location(name) = &ivr.on_no_choice
            && !raw.locations.is_empty()
            && !raw.locations.iter().any(|l| &l.name == name)
        {
            return Err(invalid(
                "ivr.on_no_choice",
                format!("names location {name:?}, which the file does not declare"),
            ));
        }
        if !(1..=5).contains(&ivr.menu_attempts) {
            return Err(invalid("ivr.menu_attempts", "must be between 1 and 5"));
        }
        if !(1..=60).contains(&ivr.menu_timeout_secs) {
            return Err(invalid("ivr.menu_timeout_secs", "must be between 1 and 60"));
        }

        let connection_overrides = raw
            .provision
            .connection_overrides
            .unwrap_or_else(|| DEFAULT_CONNECTION_OVERRIDES.to_owned())
            .trim()
            .trim_start_matches('#')
            .to_owned();
        if !connection_overrides.is_empty() {
            twilio::overrides::check(&connection_overrides)
                .map_err(|e| invalid("provision.connection_overrides", e))?;
        }
        let voice_fallback_url = raw
            .provision
            .voice_fallback_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| validate_webhook_url("provision.voice_fallback_url", u.trim()))
            .transpose()?;
        let provision = ProvisionSettings {
            workspace_name: raw.provision.workspace_name.unwrap_or_else(|| "call-router".to_owned()).trim().to_owned(),
            connection_overrides,
            voice_fallback_url,
            worker_capacity: raw.provision.worker_capacity.unwrap_or(crate::domain::WORKER_CAPACITY_MAX),
        };
        if !(1..=crate::domain::WORKER_CAPACITY_MAX).contains(&provision.worker_capacity) {
            return Err(invalid(
                "provision.worker_capacity",
                format!(
                    "{} must be between 1 and {} (TaskRouter's limit on a worker's voice capacity)",
                    provision.worker_capacity,
                    crate::domain::WORKER_CAPACITY_MAX
                ),
            ));
        }
        // The name prefixes queue, worker and workflow names as
        // `<name>/<location>`, which Twilio limits to 64 characters.
        if provision.workspace_name.is_empty()
            || provision.workspace_name.len() > 32
            || provision.workspace_name.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(invalid(
                "provision.workspace_name",
                "must be 1-32 characters, without '/' or control characters",
            ));
        }

        let admin_token = env(env::ADMIN_TOKEN)
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
            .or(raw.admin.token)
            .filter(|t| !t.expose_secret().is_empty());
        if let Some(t) = &admin_token {
            let t = t.expose_secret();
            if t.len() < MIN_ADMIN_TOKEN_LEN || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "admin.token",
                    format!(
                        "must be at least {MIN_ADMIN_TOKEN_LEN} characters without spaces \
                         (for example the output of `openssl rand -hex 24`)"
                    ),
                ));
            }
        }
        let admin = AdminSettings { token: admin_token };

        // Every field's shape here; the numbering-plan lookup (the first one
        // loads the phone metadata, ~130 ms) where these numbers are put to use:
        // `provision` and `locations import` check them in full before storing
        // them, and `serve`, which reads the stored ones, checks the file's off
        // its start-up path (`Settings::check_location_numbers`).
        for (i, loc) in raw.locations.iter().enumerate() {
            loc.validate_shape().map_err(|e| invalid(format!("locations[{i}] ({})", loc.name), e.to_string()))?;
        }
        crate::domain::check_unique(&raw.locations).map_err(|e| invalid("locations", e.to_string()))?;
        let notifications = notification_settings(raw.notifications, &env, &raw.locations)?;

        Ok(Settings {
            public_url,
            listen,
            metrics_listen,
            drain_secs,
            reconcile_secs,
            database_url,
            database,
            twilio: TwilioSettings {
                account_sid,
                auth_token,
                api_base_url,
                taskrouter_base_url,
                workspace_sid,
                workflow_sid,
                request_timeout_ms,
                tls_roots,
            },
            security,
            dialing,
            ivr,
            provision,
            admin,
            notifications,
            locations: raw.locations,
            clock: crate::clock::Clock::WALL,
        })
    }
}

/// The business's languages from `ivr.languages` (default `["en-US"]`),
/// `ivr.number_languages` and the `[language.TAG]` tables, checked against
/// the file's locations: each language's menu key (default 9, 8, … from the
/// second language on, then the next free one for the first) is no location's
/// digit, and each location's `language` is one of them.
fn languages(
    business_name: &str,
    ivr_voice: Option<String>,
    tags: Option<Vec<String>>,
    number_languages: BTreeMap<String, String>,
    mut tables: BTreeMap<String, RawLanguage>,
    locations: &[LocationSpec],
) -> Result<crate::prompts::Languages, ConfigError> {
    use crate::prompts::{Language, Languages, Prompt};
    let tags = tags.unwrap_or_else(|| vec!["en-US".to_owned()]);
    if tags.is_empty() {
        return Err(invalid("ivr.languages", "must name at least one language, the first being the default"));
    }
    for (n, tag) in tags.iter().enumerate() {
        crate::prompts::check_tag(tag).map_err(|e| invalid(format!("ivr.languages[{n}]"), e))?;
        if tags[..n].contains(tag) {
            return Err(invalid(format!("ivr.languages[{n}]"), format!("{tag:?} is listed twice")));
        }
    }
    if let Some(extra) = tables.keys().find(|t| !tags.contains(t)) {
        return Err(invalid(format!("language.{extra}"), "is not one of ivr.languages"));
    }
    let digits: Vec<(char, &str)> =
        locations.iter().filter_map(|l| Some((l.digit.as_deref()?.trim().chars().next()?, l.name.as_str()))).collect();
    // Keys as written first, so that the defaults go around them.
    let mut keys: Vec<Option<char>> = Vec::new();
    for tag in &tags {
        let field = format!("language.{tag}.key");
        let key = match tables.get(tag).and_then(|t| t.key.as_deref()).map(str::trim) {
            None => None,
            Some(k) if k.len() == 1 && k.as_bytes()[0].is_ascii_digit() => k.chars().next(),
            Some(k) => return Err(invalid(field, format!("{k:?} must be a single digit 0-9"))),
        };
        if let Some(k) = key {
            if keys.contains(&Some(k)) {
                return Err(invalid(field, format!("{k} is another language's key too")));
            }
            if let Some((_, loc)) = digits.iter().find(|(d, _)| *d == k) {
                return Err(invalid(field, format!("{k} is also location {loc:?}'s menu digit")));
            }
        }
        keys.push(key);
    }
    if tags.len() > 1 {
        let order = (1..tags.len()).chain([0]);
        for n in order {
            if keys[n].is_some() {
                continue;
            }
            let free = ('0'..='9')
                .rev()
                .find(|k| !keys.contains(&Some(*k)) && !digits.iter().any(|(d, _)| d == k))
                .ok_or_else(|| invalid(format!("language.{}.key", tags[n]), "no menu digit is left for it"))?;
            keys[n] = Some(free);
        }
    }
    let mut list = Vec::new();
    for (n, tag) in tags.iter().enumerate() {
        let table = tables.remove(tag).unwrap_or_default();
        let field = |f: &str| format!("language.{tag}.{f}");
        let voice = table.voice.or(if n == 0 { ivr_voice.clone() } else { None });
        if let Some(v) = &voice {
            crate::prompts::check_voice(v).map_err(|e| invalid(field("voice"), e))?;
        }
        let mut own = BTreeMap::new();
        for (name, text) in table.prompts {
            let f = field(&format!("prompts.{name}"));
            let p = Prompt::parse(&name).ok_or_else(|| {
                let names: Vec<&str> = Prompt::all().map(Prompt::name).collect();
                invalid(&f, format!("is not a prompt (one of: {})", names.join(", ")))
            })?;
            crate::prompts::check_text(p, &text).map_err(|e| invalid(&f, e))?;
            own.insert(p, text.trim().to_owned());
        }
        let business = table.business_name.unwrap_or_else(|| business_name.to_owned());
        let language =
            Language::new(tag, keys[n], voice, business, own).map_err(|e| invalid(format!("language.{tag}"), e))?;
        list.push(language);
    }
    for (number, tag) in &number_languages {
        twilio::E164::parse(number).map_err(|e| invalid(format!("ivr.number_languages.{number:?}"), e.to_string()))?;
        if !tags.contains(tag) {
            return Err(invalid(
                format!("ivr.number_languages.{number:?}"),
                format!("{tag:?} is not one of ivr.languages"),
            ));
        }
    }
    for (n, l) in locations.iter().enumerate() {
        let field = |f: &str| format!("locations[{n}] ({}).{f}", l.name);
        if let Some(tag) = l.language.as_ref().filter(|t| !tags.contains(t)) {
            return Err(invalid(field("language"), format!("{tag:?} is not one of ivr.languages")));
        }
        if let Some(tag) = l.translations.keys().find(|t| !tags.contains(t)) {
            return Err(invalid(field(&format!("translations.{tag}")), "is not one of ivr.languages"));
        }
    }
    Languages::new(list, number_languages).map_err(|e| invalid("ivr.number_languages", e))
}

/// `[notifications]` with its environment overrides, checked against what
/// the file's locations ask for (locations added later with `locations add`
/// are checked when a notification is sent, and fail it with a clear error).
fn notification_settings(
    raw: RawNotifications,
    env: &impl Fn(&str) -> Option<String>,
    locations: &[LocationSpec],
) -> Result<NotificationSettings, ConfigError> {
    let pick = |var: &str, file: Option<String>| env(var).filter(|v| !v.is_empty()).or(file);
    let secret = |var: &str, file: Option<SecretString>| {
        env(var).filter(|v| !v.is_empty()).map(SecretString::from).or(file).filter(|s| !s.expose_secret().is_empty())
    };
    let webhook_secret = secret(env::WEBHOOK_SECRET, raw.webhook_secret);
    if let Some(s) = &webhook_secret
        && s.expose_secret().len() < MIN_WEBHOOK_SECRET_LEN
    {
        return Err(invalid(
            "notifications.webhook_secret",
            format!("must be at least {MIN_WEBHOOK_SECRET_LEN} characters (for example `openssl rand -hex 32`)"),
        ));
    }
    if webhook_secret.is_none()
        && let Some(l) = locations.iter().find(|l| l.notify_webhook.is_some())
    {
        return Err(invalid(
            "notifications.webhook_secret",
            format!("is required: location {:?} has notify_webhook (or set {})", l.name, env::WEBHOOK_SECRET),
        ));
    }
    let server = pick(env::SMTP_SERVER, raw.smtp_server).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let smtp = match server {
        None => {
            if let Some(l) = locations.iter().find(|l| !l.notify_email.is_empty()) {
                return Err(invalid(
                    "notifications.smtp_server",
                    format!("is required: location {:?} has notify_email (or set {})", l.name, env::SMTP_SERVER),
                ));
            }
            None
        }
        Some(server) => {
            let security = raw.smtp_security.unwrap_or(SmtpSecurity::Starttls);
            let port = match env(env::SMTP_PORT).filter(|v| !v.is_empty()) {
                Some(p) => {
                    p.parse().map_err(|_| invalid("notifications.smtp_port", format!("{p:?} is not a port number")))?
                }
                None => raw.smtp_port.unwrap_or(match security {
                    SmtpSecurity::Tls => 465,
                    SmtpSecurity::Starttls => 587,
                    SmtpSecurity::None => 25,
                }),
            };
            if port == 0 {
                return Err(invalid("notifications.smtp_port", "must be between 1 and 65535"));
            }
            let loopback = matches!(server.as_str(), "127.0.0.1" | "localhost" | "::1");
            if security == SmtpSecurity::None && !loopback {
                return Err(invalid(
                    "notifications.smtp_security",
                    "\"none\" sends the password and the messages in clear: only to 127.0.0.1, localhost or ::1",
                ));
            }
            let from = raw.smtp_from.map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).ok_or_else(|| {
                invalid("notifications.smtp_from", "is required with smtp_server (the address emails come from)")
            })?;
            if !from.contains('@') || from.chars().any(char::is_whitespace) {
                return Err(invalid("notifications.smtp_from", format!("{from:?} is not an email address")));
            }
            let username = pick(env::SMTP_USERNAME, raw.smtp_username).filter(|u| !u.is_empty());
            let password = secret(env::SMTP_PASSWORD, raw.smtp_password);
            if username.is_some() != password.is_some() {
                return Err(invalid(
                    "notifications.smtp_username",
                    "smtp_username and smtp_password go together: set both or neither",
                ));
            }
            let timeout_secs = raw.smtp_timeout_secs.unwrap_or(30);
            if !(1..=300).contains(&timeout_secs) {
                return Err(invalid("notifications.smtp_timeout_secs", "must be between 1 and 300"));
            }
            Some(SmtpSettings { server, port, security, from, username, password, timeout_secs })
        }
    };
    Ok(NotificationSettings { smtp, webhook_secret })
}

impl Settings {
    /// The numbering-plan check of the file's locations that loading leaves
    /// out (see [`LocationSpec::validate_shape`]): every phone number must be
    /// assigned in its country's plan. Slow on its first call in a process.
    pub fn check_location_numbers(&self) -> Result<(), ConfigError> {
        for (i, loc) in self.locations.iter().enumerate() {
            loc.validate().map_err(|e| invalid(format!("locations[{i}] ({})", loc.name), e.to_string()))?;
        }
        Ok(())
    }
}

/// Accepts `http(s)://host[:port][/path]`, returned without a trailing slash.
fn validate_base_url(field: &str, url: &str) -> Result<String, ConfigError> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(field, format!("{url:?} must start with http:// or https://")))?;
    if rest.is_empty() || rest.starts_with('/') || url.contains(['?', '#', ' ']) {
        return Err(invalid(field, format!("{url:?} is not a base URL like https://example.com")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// A full webhook URL (a path, a query and overrides are fine).
fn validate_webhook_url(field: &str, url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(field, format!("{url:?} must start with http:// or https://")))?;
    if rest.is_empty() || rest.starts_with('/') || url.contains(char::is_whitespace) {
        return Err(invalid(field, format!("{url:?} is not a URL like https://example.com/fallback")));
    }
    if let Some((_, fragment)) = url.split_once('#') {
        twilio::overrides::check(fragment).map_err(|e| invalid(field, e))?;
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provision_overrides_and_fallback_are_checked() {
        let s = Settings::from_toml(MIN, no_env).unwrap();
        assert_eq!(s.provision.connection_overrides, DEFAULT_CONNECTION_OVERRIDES);
        assert_eq!(s.provision.webhook_url("https://r/x".into()), "https://r/x#rc=3&rp=ct,5xx");
        assert_eq!(s.provision.voice_fallback_url, None);
        let with = |extra: &str| Settings::from_toml(&format!("{MIN}[provision]\n{extra}\n"), no_env);
        let s = with("connection_overrides = \"#rc=1&ct=1000\"\nvoice_fallback_url = \"https://backup.example.com/incoming-call\"").unwrap();
        assert_eq!(s.provision.connection_overrides, "rc=1&ct=1000");
        assert_eq!(s.provision.voice_fallback_url.as_deref(), Some("https://backup.example.com/incoming-call"));
        let s = with("connection_overrides = \"\"").unwrap();
        assert_eq!(s.provision.webhook_url("https://r/x".into()), "https://r/x", "empty: no fragment");
        let e = with("connection_overrides = \"rc=9\"").unwrap_err().to_string();
        assert!(e.contains("provision.connection_overrides") && e.contains("rc=9"), "{e}");
        let e = with("voice_fallback_url = \"ftp://x\"").unwrap_err().to_string();
        assert!(e.contains("provision.voice_fallback_url"), "{e}");
        let e = with("voice_fallback_url = \"https://x/y#rp=never\"").unwrap_err().to_string();
        assert!(e.contains("rp=never"), "{e}");
    }

    #[test]
    fn a_worker_capacity_is_within_taskrouters_limit() {
        let with = |extra: &str| Settings::from_toml(&format!("{MIN}[provision]\n{extra}\n"), no_env);
        assert_eq!(Settings::from_toml(MIN, no_env).unwrap().provision.worker_capacity, 50);
        assert_eq!(with("worker_capacity = 2").unwrap().provision.worker_capacity, 2);
        for bad in ["worker_capacity = 0", "worker_capacity = 51"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("provision.worker_capacity") && e.contains("between 1 and 50"), "{e}");
        }
    }

    #[test]
    fn a_location_with_more_lines_than_provision_serves_is_refused_at_load() {
        let text = format!(
            "{MIN}[[locations]]\nname = \"north\"\nnumbers = [\"+12025550143\"]\nphone = \"+14155550101\"\n\
             lines = 501\nhours = {{ time_zone = \"UTC\" }}\n"
        );
        let e = Settings::from_toml(&text, no_env).unwrap_err().to_string();
        assert!(e.contains("locations[0] (north)") && e.contains("lines: 501 must be between 1 and 500"), "{e}");
        let ok = text.replace("lines = 501", "lines = 120");
        assert_eq!(Settings::from_toml(&ok, no_env).unwrap().locations[0].lines, 120);
    }

    const MIN: &str = r#"
public_url = "https://router.example.com/"
[twilio]
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "secret-token"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_tls_roots_are_mozillas_unless_the_file_or_the_environment_says_system() {
        let roots = |text: &str, var: Option<&str>| {
            let env = |k: &str| (k == env::TLS_ROOTS).then(|| var.map(str::to_owned)).flatten();
            Settings::from_toml(text, env).map(|s| s.twilio.tls_roots).map_err(|e| e.to_string())
        };
        let in_file = |v: &str| format!("{MIN}tls_roots = \"{v}\"\n");
        assert_eq!(roots(MIN, None), Ok(TlsRoots::Mozilla));
        assert_eq!(roots(&in_file("system"), None), Ok(TlsRoots::System));
        assert_eq!(roots(MIN, Some("system")), Ok(TlsRoots::System));
        assert_eq!(roots(&in_file("system"), Some("mozilla")), Ok(TlsRoots::Mozilla), "the environment wins");
        for bad in [roots(MIN, Some("os")), roots(&in_file("os"), None)] {
            let e = bad.unwrap_err();
            assert!(e.contains("twilio.tls_roots") && e.contains("\"mozilla\" or \"system\", not \"os\""), "{e}");
        }
    }

    #[test]
    fn database_urls_and_pool_settings_are_checked() {
        let s = Settings::from_toml(MIN, no_env).unwrap();
        assert_eq!(s.database_url, "sqlite://call-router.db");
        assert_eq!(s.database, crate::store::PoolSettings::default());
        let with = |top: &str, section: &str| {
            Settings::from_toml(&format!("{top}\n{MIN}[database]\n{section}\n"), no_env).map_err(|e| e.to_string())
        };
        for url in ["postgres://router:pw@db.example.com:5432/calls", "postgresql://db/calls", "sqlite::memory:"] {
            let s = with(&format!("database_url = {url:?}"), "").unwrap();
            assert_eq!(s.database_url, url);
        }
        let s = with("", "max_connections = 20\nacquire_timeout_secs = 3").unwrap();
        assert_eq!((s.database.max_connections, s.database.acquire_timeout), (20, std::time::Duration::from_secs(3)));
        let e = with("database_url = \"mysql://u:secret@h/db\"", "").unwrap_err();
        assert!(e.starts_with("database_url:") && e.contains("postgres://"), "{e}");
        assert!(!e.contains("secret"), "the password is not repeated: {e}");
        let e = with("", "max_connections = 1").unwrap_err();
        assert!(e.starts_with("database.max_connections:"), "{e}");
        let e = with("", "acquire_timeout_secs = 0").unwrap_err();
        assert!(e.starts_with("database.acquire_timeout_secs:"), "{e}");
        let e = with("", "pool = 3").unwrap_err();
        assert!(e.contains("pool"), "unknown keys are refused: {e}");
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let s = Settings::from_toml(MIN, no_env).unwrap();
        assert_eq!(s.public_url, "https://router.example.com");
        assert_eq!(s.twilio.api_base_url, DEFAULT_API_BASE_URL);
        assert!(s.security.validate_signatures);
        assert_eq!(s.dialing.ring_timeout_secs, 20);
        assert_eq!(s.provision.workspace_name, "call-router");
    }

    #[test]
    fn environment_overrides_file() {
        let s = Settings::from_toml(MIN, |k| match k {
            "CALL_ROUTER_PUBLIC_URL" => Some("http://127.0.0.1:9".into()),
            "TWILIO_AUTH_TOKEN" => Some("from-env".into()),
            "CALL_ROUTER_TWILIO_API_BASE_URL" => Some("http://127.0.0.1:7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.public_url, "http://127.0.0.1:9");
        assert_eq!(s.twilio.auth_token.expose_secret(), "from-env");
        assert_eq!(s.twilio.api_base_url, "http://127.0.0.1:7");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'\nauth_token='x'", "public_url"),
            (
                "public_url='ftp://x'\n[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'\nauth_token='x'",
                "public_url",
            ),
            ("public_url='https://x'\n[twilio]\naccount_sid='nope'\nauth_token='x'", "twilio.account_sid"),
            ("public_url='https://x'\n[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'", "twilio.auth_token"),
            (
                "public_url='https://x'\n[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'\nauth_token='x'\n[dialing]\nring_timeout_secs=1",
                "dialing.ring_timeout_secs",
            ),
            (
                "public_url='https://x'\nlisten='nope'\n[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'\nauth_token='x'",
                "listen",
            ),
            (
                "public_url='https://x'\ndrain_secs=0\n[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'\nauth_token='x'",
                "drain_secs",
            ),
            (
                "public_url='https://x'\nmetrics_listen=':9090'\n[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'\nauth_token='x'",
                "metrics_listen",
            ),
            ("public_url='https://x'\nbogus=1", "bogus"),
            (
                "public_url='https://x'\n[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'\nauth_token='x'\n\
                 [ivr]\non_no_choice='hangup'",
                "ivr.on_no_choice: \"hangup\" is not a policy",
            ),
            (
                "public_url='https://x'\n[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'\nauth_token='x'\n\
                 [ivr]\non_no_choice='location:south'\n[[locations]]\nname='north'\nnumbers=['+12025550143']\n\
                 phone='+14155550123'\n[locations.hours]\ntime_zone='America/New_York'",
                "ivr.on_no_choice: names location \"south\", which the file does not declare",
            ),
        ];
        for (text, field) in cases {
            let err = Settings::from_toml(text, no_env).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn a_location_with_several_phones_loads_and_its_errors_name_it() {
        let with = |phones: &str| {
            format!(
                "{MIN}[[locations]]\nname = \"north\"\nnumbers = [\"+12025550143\"]\n{phones}\n\
                 [locations.hours]\ntime_zone = \"America/New_York\"\n"
            )
        };
        let s = Settings::from_toml(&with("phones = [\"+14155550101\", \"+14155550102\"]"), no_env).unwrap();
        assert_eq!(s.locations[0].phone_list(), ["+14155550101", "+14155550102"]);
        s.check_location_numbers().unwrap();
        let cases = [
            (
                "phone = \"+14155550101\"\nphones = [\"+14155550102\"]",
                "locations[0] (north): phones: set `phone` or `phones`, not both",
            ),
            (
                "phones = [\"+14155550101\", \"+14155550101\"]",
                "locations[0] (north): phones[1]: +14155550101 is listed twice",
            ),
            ("phones = []", "locations[0] (north): phone: a location needs a phone"),
            ("phones = [\"+14155550101\"]\nring = \"sometimes\"", "ring"),
        ];
        for (text, want) in cases {
            let e = Settings::from_toml(&with(text), no_env).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn location_numbers_are_checked_by_shape_on_load_and_in_full_on_demand() {
        let with_phone = |phone: &str| {
            format!(
                "{MIN}[[locations]]\nname = \"north\"\nnumbers = [\"+12025550143\"]\nphone = \"{phone}\"\n\
                 [locations.hours]\ntime_zone = \"America/New_York\"\n"
            )
        };
        let s = Settings::from_toml(&with_phone("+14155550123"), no_env).unwrap();
        s.check_location_numbers().unwrap();
        // A malformed number is refused on load, naming the location and field.
        let e = Settings::from_toml(&with_phone("555-1234"), no_env).unwrap_err().to_string();
        assert!(e.contains("locations[0] (north)") && e.contains("phone"), "{e}");
        // A well-formed number no country assigns loads, and the full check refuses it.
        let s = Settings::from_toml(&with_phone("+15555550123"), no_env).unwrap();
        let e = s.check_location_numbers().unwrap_err().to_string();
        assert!(e.contains("locations[0] (north)") && e.contains("phone") && e.contains("numbering plan"), "{e}");
    }

    #[test]
    fn skip_switch_turns_signature_checks_off() {
        let s = Settings::from_toml(MIN, |k| (k == env::INSECURE_SKIP_SIGNATURES).then(|| "1".into())).unwrap();
        assert!(!s.security.validate_signatures);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Settings::from_toml(MIN, no_env).unwrap();
        assert!(!format!("{s:?}").contains("secret-token"));
    }

    #[test]
    fn notifications_are_checked() {
        let with = |section: &str, env: &dyn Fn(&str) -> Option<String>| {
            Settings::from_toml(&format!("{MIN}[notifications]\n{section}\n"), env).map_err(|e| e.to_string())
        };
        let s = with("", &no_env).unwrap();
        assert!(s.notifications.smtp.is_none() && s.notifications.webhook_secret.is_none());
        let s = with(
            "smtp_server = \"smtp.example.com\"\nsmtp_from = \"calls@example.com\"\n\
             smtp_username = \"calls\"\nsmtp_password = \"hunter2-smtp\"\nwebhook_secret = \"0123456789abcdef-file\"",
            &no_env,
        )
        .unwrap();
        let smtp = s.notifications.smtp.as_ref().unwrap();
        assert_eq!((smtp.port, smtp.security), (587, SmtpSecurity::Starttls));
        assert!(!format!("{s:?}").contains("hunter2-smtp") && !format!("{s:?}").contains("abcdef-file"));
        // The environment wins.
        let env = |k: &str| match k {
            "CALL_ROUTER_WEBHOOK_SECRET" => Some("0123456789abcdef-env".to_owned()),
            "CALL_ROUTER_SMTP_PORT" => Some("2525".to_owned()),
            _ => None,
        };
        let s = with("smtp_server = \"smtp.example.com\"\nsmtp_from = \"calls@example.com\"", &env).unwrap();
        assert_eq!(s.notifications.webhook_secret.unwrap().expose_secret(), "0123456789abcdef-env");
        assert_eq!(s.notifications.smtp.unwrap().port, 2525);
        for (section, field) in [
            ("webhook_secret = \"short\"", "notifications.webhook_secret:"),
            ("smtp_server = \"smtp.example.com\"", "notifications.smtp_from:"),
            (
                "smtp_server = \"smtp.example.com\"\nsmtp_from = \"x@example.com\"\nsmtp_username = \"u\"",
                "notifications.smtp_username:",
            ),
            (
                "smtp_server = \"smtp.example.com\"\nsmtp_from = \"x@example.com\"\nsmtp_security = \"none\"",
                "notifications.smtp_security:",
            ),
            ("smtp_host = \"x\"", "smtp_host"),
        ] {
            let e = with(section, &no_env).unwrap_err();
            assert!(e.contains(field), "{section}: {e}");
        }
        // A location that asks for a channel needs its settings.
        let loc = |extra: &str| {
            format!(
                "{MIN}[[locations]]\nname = \"north\"\nnumbers = [\"+12025550143\"]\nphone = \"+14155550123\"\n{extra}\n\
                 hours = {{ time_zone = \"America/New_York\" }}\n"
            )
        };
        let e = Settings::from_toml(&loc("notify_webhook = \"https://hooks.example.com/x\""), no_env).unwrap_err();
        assert!(e.to_string().starts_with("notifications.webhook_secret:"), "{e}");
        let e = Settings::from_toml(&loc("notify_email = [\"desk@example.com\"]"), no_env).unwrap_err();
        assert!(e.to_string().starts_with("notifications.smtp_server:"), "{e}");
        let e = Settings::from_toml(&loc("notify_email = [\"not an address\"]"), no_env).unwrap_err();
        assert!(e.to_string().contains("notify_email[0]"), "{e}");
    }
}

#[cfg(test)]
mod language_tests {
    use super::*;

    const BASE: &str =
        "public_url='https://x'\n[twilio]\naccount_sid='AC0123456789abcdef0123456789abcdef'\nauth_token='x'\n";

    const LOCATION: &str = "[[locations]]\nname='north'\ndigit='1'\nnumbers=['+12025550143']\nphone='+14155550101'\n\
                            hours={time_zone='UTC', weekly={mon=['08:00-17:00']}}\n";

    fn load(extra: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(&format!("{BASE}{extra}"), |_| None)
    }

    #[test]
    fn without_languages_callers_hear_todays_english_in_ivr_voice() {
        let s = load("[ivr]\nvoice='Polly.Joanna'\nbusiness_name='Acme'\n").unwrap();
        let langs = &s.ivr.languages;
        assert_eq!(langs.all().len(), 1);
        let en = langs.default_language();
        assert_eq!((en.tag.as_str(), en.voice.as_deref(), en.key), ("en-US", Some("Polly.Joanna"), None));
        assert!(!langs.offers_choice());
    }

    #[test]
    fn two_languages_need_only_their_tags() {
        let s = load(&format!("[ivr]\nlanguages=['en-US','es-MX']\nvoice='Polly.Joanna'\n{LOCATION}")).unwrap();
        let langs = &s.ivr.languages;
        let tags: Vec<(&str, Option<char>, Option<&str>)> =
            langs.all().iter().map(|l| (l.tag.as_str(), l.key, l.voice.as_deref())).collect();
        // Spanish gets 9, English the next free key; ivr.voice is English's only.
        assert_eq!(tags, [("en-US", Some('8'), Some("Polly.Joanna")), ("es-MX", Some('9'), None)]);
        assert_eq!(
            langs.get("es-MX").unwrap().text(crate::prompts::Prompt::LanguageOffer, &[("digit", "9")]),
            "Para español, oprima 9."
        );
    }

    #[test]
    fn a_language_table_sets_key_voice_name_and_texts() {
        let s = load(
            "[ivr]\nlanguages=['es-MX','en-US']\nnumber_languages={'+12025550100'='en-US'}\n\
             [language.es-MX]\nkey='7'\nvoice='Polly.Mia'\nbusiness_name='Clínicas Acme'\n\
             [language.es-MX.prompts]\nplease_hold='Un momento, por favor.'\n",
        )
        .unwrap();
        let langs = &s.ivr.languages;
        let es = langs.default_language();
        assert_eq!(
            (es.key, es.voice.as_deref(), es.business_name.as_str()),
            (Some('7'), Some("Polly.Mia"), "Clínicas Acme")
        );
        assert_eq!(es.text(crate::prompts::Prompt::PleaseHold, &[]), "Un momento, por favor.");
        assert_eq!(langs.for_caller(None, Some("+12025550100"), None).tag, "en-US");
    }

    #[test]
    fn language_errors_name_the_field() {
        let cases = [
            ("[ivr]\nlanguages=[]\n".to_owned(), "ivr.languages: must name at least one language"),
            ("[ivr]\nlanguages=['en-US','es_MX']\n".into(), "ivr.languages[1]: \"es_MX\" is not a language tag"),
            ("[ivr]\nlanguages=['en-US','en-US']\n".into(), "ivr.languages[1]: \"en-US\" is listed twice"),
            ("[ivr]\nvoice='Joanna'\n".into(), "ivr.voice: \"Joanna\" is not a voice"),
            ("[language.es-MX]\nkey='9'\n".into(), "language.es-MX: is not one of ivr.languages"),
            (
                "[ivr]\nlanguages=['en-US','es-MX']\n[language.es-MX]\nkey='99'\n".into(),
                "language.es-MX.key: \"99\" must be a single digit 0-9",
            ),
            (
                format!("[ivr]\nlanguages=['en-US','es-MX']\n[language.es-MX]\nkey='1'\n{LOCATION}"),
                "language.es-MX.key: 1 is also location \"north\"'s menu digit",
            ),
            (
                "[ivr]\nlanguages=['en-US','es-MX']\n[language.es-MX]\nkey='9'\n[language.en-US]\nkey='9'\n".into(),
                "language.es-MX.key: 9 is another language's key too",
            ),
            (
                "[ivr]\nlanguages=['en-US','es-MX']\n[language.es-MX]\nvoice='Mia'\n".into(),
                "language.es-MX.voice: \"Mia\" is not a voice",
            ),
            (
                "[ivr]\nlanguages=['en-US','es-MX']\n[language.es-MX.prompts]\nwelcom='Hola'\n".into(),
                "language.es-MX.prompts.welcom: is not a prompt (one of: welcome,",
            ),
            (
                "[ivr]\nlanguages=['en-US','es-MX']\n[language.es-MX.prompts]\nmenu_item='Para {lugar}'\n".into(),
                "language.es-MX.prompts.menu_item: {lugar} is not a placeholder",
            ),
            ("[ivr]\nlanguages=['en-US','fr-CA']\n".into(), "language.fr-CA: has no built-in prompts"),
            (
                "[ivr]\nnumber_languages={'+12025550100'='es-MX'}\n".into(),
                "ivr.number_languages.\"+12025550100\": \"es-MX\" is not one of ivr.languages",
            ),
            (
                format!("{LOCATION}language='es-MX'\n"),
                "locations[0] (north).language: \"es-MX\" is not one of ivr.languages",
            ),
            (format!("{LOCATION}voice='x'\n"), "locations[0] (north): voice: \"x\" is not a voice"),
            (
                format!("{LOCATION}translations={{fr-CA={{display_name='Nord'}}}}\n"),
                "locations[0] (north).translations.fr-CA: is not one of ivr.languages",
            ),
        ];
        for (extra, want) in cases {
            let e = load(&extra).unwrap_err().to_string();
            assert!(e.contains(want), "{extra}\n  wanted: {want}\n  got:    {e}");
        }
    }
}
