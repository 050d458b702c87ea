//! Twilio's REST error body: `{"code", "message", "more_info", "status"}`.

use serde::{Deserialize, Serialize};

/// The JSON body Twilio returns with every 4xx and 5xx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Twilio's error code, e.g. 20404 for an unknown resource.
    pub code: u32,
    pub message: String,
    /// A link to Twilio's page for the code.
    #[serde(default)]
    pub more_info: String,
    /// The HTTP status, repeated in the body.
    pub status: u16,
}

impl ErrorBody {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), more_info: format!("https://www.twilio.com/docs/errors/{code}"), status }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Twilio error {} (HTTP {}): {} [{}]", self.code, self.status, self.message, self.more_info)
    }
}

/// Codes the project uses by name.
pub mod codes {
    /// The requested resource was not found.
    pub const NOT_FOUND: u32 = 20404;
    /// Authentication failed.
    pub const AUTHENTICATE: u32 = 20003;
    /// Too many requests.
    pub const TOO_MANY_REQUESTS: u32 = 20429;
    /// A required parameter is missing.
    pub const MISSING_PARAMETER: u32 = 21201;
    /// An invalid parameter (generic).
    pub const INVALID_PARAMETER: u32 = 20001;
    /// `To` is not a valid phone number.
    pub const INVALID_TO: u32 = 21211;
    /// `From` is not a valid phone number or not owned / verified.
    pub const INVALID_FROM: u32 = 21212;
    /// `Url` is not a valid URL.
    pub const INVALID_URL: u32 = 21205;
    /// The call is not in progress and cannot be redirected.
    pub const CALL_NOT_IN_PROGRESS: u32 = 21220;
    /// TwiML could not be parsed: the document is invalid.
    pub const TWIML_PARSE: u32 = 12100;
    /// TwiML fetch failed: the URL did not answer with a document.
    pub const HTTP_RETRIEVAL: u32 = 11200;
    /// An invalid TaskRouter expression.
    pub const INVALID_EXPRESSION: u32 = 20001;
    /// A resource with that unique name already exists.
    pub const DUPLICATE: u32 = 20409;
    /// A TaskRouter resource is not in a state that allows the change.
    pub const CONFLICT: u32 = 20001;
}
