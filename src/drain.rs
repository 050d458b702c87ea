//! Stopping without dropping work: the one stop signal the background tasks
//! observe, the count of webhooks in flight for the drain's log lines, and
//! the "closing" mark that makes responses say `Connection: close` before the
//! server shuts its idle keep-alive connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Resolves once the server begins to stop. Cheap to clone; every background
/// task holds one and finishes its current work after it fires.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Waits for the stop signal (at once if it has already been given).
    pub async fn wait(mut self) {
        // An error means the sender is gone, which also means: stop.
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Whether the stop signal has been given.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// The server's background tasks (the dispatcher, and whatever else runs
/// beside the webhooks): spawned with a [`Stop`], stopped together, awaited
/// under one deadline.
#[derive(Debug)]
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Background {
    fn default() -> Self {
        Self { stop: watch::channel(false).0, tasks: Vec::new() }
    }
}

impl Background {
    /// Spawns `task(stop)` under `name` (the name is what a cut drain logs).
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = Stop(self.stop.subscribe());
        self.tasks.push((name, tokio::spawn(task(stop))));
    }

    /// As [`Background::spawn`], but `task` begins at `at`; a stop signal
    /// before then ends it unbegun.
    pub fn spawn_at<F, Fut>(&mut self, name: &'static str, at: tokio::time::Instant, task: F)
    where
        F: FnOnce(Stop) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, move |stop| async move {
            tokio::select! {
                biased;
                _ = stop.clone().wait() => {}
                _ = tokio::time::sleep_until(at) => task(stop).await,
            }
        });
    }

    /// Gives the stop signal and waits for every task until `deadline`;
    /// returns the names of those still running then, which are aborted.
    pub async fn stop(self, deadline: tokio::time::Instant) -> Vec<&'static str> {
        let _ = self.stop.send(true);
        let mut cut = Vec::new();
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "background task failed"),
                Err(_) => {
                    task.abort();
                    cut.push(name);
                }
            }
        }
        cut
    }
}

/// Counts requests: those in flight now, and all served. Cloned into the
/// router's middleware ([`InFlight::layer`]).
#[derive(Clone, Debug, Default)]
pub struct InFlight(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    now: AtomicU64,
    total: AtomicU64,
    closing: AtomicBool,
}

impl InFlight {
    /// Requests whose response has not been produced yet.
    pub fn now(&self) -> u64 {
        self.0.now.load(Ordering::SeqCst)
    }

    /// Requests started since the server started.
    pub fn total(&self) -> u64 {
        self.0.total.load(Ordering::SeqCst)
    }

    /// From now on every response carries `Connection: close`, so a client
    /// learns from its own response that the connection is going away,
    /// instead of sending its next request on a connection the server is
    /// closing (HTTP/1.1's keep-alive race).
    pub fn close_connections(&self) {
        self.0.closing.store(true, Ordering::SeqCst);
    }

    /// A tower layer that counts every request through the service it wraps,
    /// and adds `Connection: close` once [`InFlight::close_connections`] was called.
    pub fn layer(&self) -> CountLayer {
        CountLayer(self.clone())
    }
}

/// Decrements the in-flight count when the request's future finishes or is
/// dropped.
struct Guard(InFlight);

impl Guard {
    fn new(counts: InFlight) -> Self {
        counts.0.now.fetch_add(1, Ordering::SeqCst);
        counts.0.total.fetch_add(1, Ordering::SeqCst);
        Guard(counts)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// See [`InFlight::layer`].
#[derive(Clone, Debug)]
pub struct CountLayer(InFlight);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner, counts: self.0.clone() }
    }
}

/// A service whose requests are counted.
#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    counts: InFlight,
}

impl<S, R, B> tower::Service<R> for Counted<S>
where
    S: tower::Service<R, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let guard = Guard::new(self.counts.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut out = fut.await;
            if let Ok(resp) = &mut out
                && guard.0.0.closing.load(Ordering::SeqCst)
            {
                resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            drop(guard);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Service, ServiceExt as _};

    use super::*;

    #[tokio::test]
    async fn counts_requests_in_flight_and_served() {
        let counts = InFlight::default();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let inner = tower::service_fn(move |n: u32| {
            let released = released.clone();
            async move {
                if n == 1 {
                    let rx = released.lock().await.take().unwrap();
                    let _ = rx.await;
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(n))
            }
        });
        let mut svc = tower::Layer::layer(&counts.layer(), inner);
        let held = tokio::spawn(svc.clone().oneshot(1));
        let open = svc.ready().await.unwrap().call(2).await.unwrap();
        assert_eq!((*open.body(), open.headers().get("connection")), (2, None));
        tokio::time::timeout(Duration::from_secs(5), async {
            while counts.now() != 1 || counts.total() != 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("one request held, two seen");
        counts.close_connections();
        release.send(()).unwrap();
        let closing = held.await.unwrap().unwrap();
        assert_eq!((*closing.body(), closing.headers()["connection"].to_str().unwrap()), (1, "close"));
        assert_eq!((counts.now(), counts.total()), (0, 2));
    }

    #[tokio::test]
    async fn background_tasks_stop_together_and_a_stuck_one_is_cut() {
        let mut bg = Background::default();
        bg.spawn("polite", |stop| stop.wait());
        bg.spawn("stuck", |_stop| std::future::pending());
        let cut = bg.stop(tokio::time::Instant::now() + Duration::from_millis(50)).await;
        assert_eq!(cut, ["stuck"]);
    }

    #[tokio::test]
    async fn a_task_spawned_for_later_begins_then_or_never_if_stopped_first() {
        let began = Arc::new(AtomicU64::new(0));
        let mut bg = Background::default();
        let at = std::time::Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        bg.spawn_at("later", tokio::time::Instant::now() + Duration::from_millis(30), move |stop| async move {
            let _ = tx.send(at.elapsed());
            stop.wait().await;
        });
        let waited = rx.await.unwrap();
        assert!(waited >= Duration::from_millis(30), "begun after {waited:?}, before its delay");
        let count = began.clone();
        bg.spawn_at("never", tokio::time::Instant::now() + Duration::from_secs(60), move |_stop| async move {
            count.fetch_add(1, Ordering::SeqCst);
        });
        let cut = bg.stop(tokio::time::Instant::now() + Duration::from_millis(10)).await;
        assert!(cut.is_empty(), "a task not yet begun stops at once: {cut:?}");
        assert_eq!(began.load(Ordering::SeqCst), 0, "stopped before its delay, never begun");
    }
}
