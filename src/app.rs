//! Assembles the server: store, REST client, dispatcher and router, on a
//! listener the caller binds (port 0 in tests), until a shutdown future.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::dispatch::{Dispatcher, Notifier};
use crate::http::{self, AppState};
use crate::store::Store;
use crate::timers::Ticker;
use crate::twilio_api::TwilioClient;

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Opens the database, starts the dispatcher and serves on `listener`.
    pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<Server> {
        if !settings.security.validate_signatures {
            tracing::warn!(
                "!!! X-Twilio-Signature checks are OFF ({}). Anyone who can reach this server can forge calls. \
                 Never run like this in production. !!!",
                crate::config::env::INSECURE_SKIP_SIGNATURES
            );
        }
        let store = Store::connect(&settings.database_url).await?;
        let twilio = TwilioClient::new(&settings.twilio).context("building the Twilio client")?;
        let notifier = Notifier::default();
        let state = AppState::new(settings.clone(), store.clone(), notifier.clone());
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);

        let ticker = Ticker::new(store.clone(), notifier.clone(), state.policy());
        let mut t_stop = stopped.clone();
        let tick_task = tokio::spawn(ticker.run(async move {
            let _ = t_stop.wait_for(|s| *s).await;
        }));
        let dispatcher = Dispatcher::new(store, twilio, settings, notifier);
        let mut d_stop = stopped.clone();
        let dispatch_task = tokio::spawn(dispatcher.run(async move {
            let _ = d_stop.wait_for(|s| *s).await;
        }));
        let router = http::router(state.clone());
        let mut s_stop = stopped;
        let task = tokio::spawn(async move {
            http::serve(listener, router, async move {
                let _ = s_stop.wait_for(|s| *s).await;
            })
            .await
            .context("serving HTTP")?;
            dispatch_task.await.context("dispatcher panicked")?;
            tick_task.await.context("the journeys' ticker panicked")?;
            Ok(())
        });
        tracing::info!(%addr, "call-router listening");
        Ok(Server { addr, state, stop, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, drains requests and the dispatcher, and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Runs until `signal` resolves, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
