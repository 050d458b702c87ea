//! Twilio's wire formats, shared by the call-router server and its sandbox.
//!
//! Everything here is pure: no IO, no clocks, no global state. The server uses
//! this crate to render TwiML and to validate `X-Twilio-Signature`; the sandbox
//! uses it to parse that TwiML and to sign its callbacks. Keeping both sides on
//! one implementation is what lets round-trip tests hold them together.
//!
//! # Layout
//! - [`sid`]: typed resource identifiers (`CA…`, `WR…`), two letters and 32 hex digits.
//! - [`e164`]: a phone number in E.164 form.
//! - [`signature`]: `X-Twilio-Signature` computation and validation.
//! - [`twiml`]: one type per TwiML verb, rendered with quick-xml and parsed with roxmltree.
//! - [`error`]: Twilio's REST error body.
//! - [`params`]: ordered form parameters as Twilio sends them (repeated keys allowed).
//! - [`overrides`]: webhook connection overrides (`#ct=…&rc=…&rp=…`).

pub mod e164;
pub mod error;
pub mod overrides;
pub mod params;
pub mod sid;
pub mod signature;
pub mod twiml;

pub use e164::E164;
pub use error::ErrorBody;
pub use params::Params;
