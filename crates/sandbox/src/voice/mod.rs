//! Call legs: the Calls resource's behaviour, the TwiML interpreter and
//! simulated phones.

pub(crate) mod api;

/// Where a leg's next TwiML comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Url { url: String, method: String },
    Twiml(String),
}
