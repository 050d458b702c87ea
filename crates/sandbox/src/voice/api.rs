//! Calls resource entry points (temporary stubs).
use std::sync::Arc;

use crate::Shared;
use crate::api::{ApiResult, Req, bad};

pub(crate) fn create_call(_shared: &Arc<Shared>, _req: &Req) -> ApiResult {
    Err(bad(20001, "not yet"))
}

pub(crate) async fn update_call(_shared: &Arc<Shared>, _sid: &str, _req: &Req) -> ApiResult {
    Err(bad(20001, "not yet"))
}

pub(crate) fn place_inbound(
    _shared: &Arc<Shared>,
    _from: &str,
    _to: &str,
    _digits: Option<String>,
    _patience: u64,
) -> Result<String, twilio::ErrorBody> {
    Err(bad(20001, "not yet"))
}
