//! `call-router demo --dashboard`: the demo business kept running at a
//! watchable time scale, with callers arriving, for the dashboard to show.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use rand::{Rng as _, SeedableRng as _};

use super::Options;
use super::run::Business;
use super::scenario::Scenario;

/// Where the running dashboard is, and the token it takes.
#[derive(Debug, Clone)]
pub struct DashboardInfo {
    /// `http://127.0.0.1:PORT/dashboard`.
    pub url: String,
    /// A fresh admin token, made for this run.
    pub token: String,
    pub server_url: String,
    pub sandbox_url: String,
    /// The sandbox's made-up credentials, for its control API.
    pub sandbox_account_sid: String,
    pub sandbox_auth_token: String,
}

/// The gap between two callers, in virtual seconds: a caller every 4 to 20 s.
const GAP_VIRTUAL_SECS: (f64, f64) = (4.0, 20.0);

/// A fresh admin token: 32 random hex digits.
pub fn fresh_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the scenario's business with the dashboard on, calls `ready`,
/// then places the scenario's callers over and over (each with its own
/// number), a few virtual seconds apart, until `stop` resolves. Returns how
/// many calls were placed.
pub async fn run_dashboard(
    scenario: Scenario,
    opts: Options,
    ready: impl FnOnce(&DashboardInfo),
    stop: impl Future<Output = ()>,
) -> anyhow::Result<u64> {
    let plan = scenario.plan();
    if plan.is_empty() {
        bail!("scenario {} has no callers to keep arriving", scenario.name);
    }
    let token = fresh_token();
    let business = Business::start(&scenario, &opts, &format!("[admin]\ntoken = {token:?}\n")).await?;
    ready(&DashboardInfo {
        url: format!("{}/dashboard", business.server_url),
        token,
        server_url: business.server_url.clone(),
        sandbox_url: business.sandbox_url.clone(),
        sandbox_account_sid: business.sandbox.account_sid().as_str().to_owned(),
        sandbox_auth_token: business.sandbox.auth_token().to_owned(),
    });

    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let mut placed = 0u64;
    tokio::pin!(stop);
    loop {
        let call = &plan[(placed as usize) % plan.len()];
        let request = sandbox::client::PlaceCall {
            // A new caller each time: +1 310 555 2000, 2001, … (wrapping at 9999).
            from: format!("+1310555{:04}", 2000 + placed % 8000),
            to: call.to.clone(),
            digits: call.digits.clone(),
            patience_secs: Some(u64::from(call.patience_secs)),
        };
        match business.client.place_call(&request).await {
            Ok(sid) => tracing::info!(call_sid = %sid, to = %request.to, "demo: a caller dialled"),
            Err(e) => tracing::warn!("demo: placing a call: {e:#}"),
        }
        placed += 1;
        let gap = rng.random_range(GAP_VIRTUAL_SECS.0..GAP_VIRTUAL_SECS.1) / opts.time_scale;
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(Duration::from_secs_f64(gap)) => {}
        }
    }
    business.stop().await?;
    Ok(placed)
}
