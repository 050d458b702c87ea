//! Call legs: the Calls resource's behaviour, the TwiML interpreter and
//! simulated phones.
//!
//! Each leg is one tokio task ([`leg::Leg`]) that fetches TwiML with signed
//! requests and runs it in virtual time. Legs talk to each other and to the
//! API only through [`crate::LegCmd`] messages, so no lock is held while a
//! leg waits.

pub(crate) mod api;
mod leg;
mod phone;

/// Where a leg's next TwiML comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Url { url: String, method: String },
    Twiml(String),
}
