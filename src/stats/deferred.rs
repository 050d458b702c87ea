//! A recorder that can be installed before the real one is built.
//!
//! Building Prometheus's recorder calibrates its clock (quanta's, against the
//! TSC), which takes from 0.6 ms to its 200 ms limit on a busy virtual
//! machine, and one start in four hit the limit here. [`Deferred`] is
//! installed at once and costs nothing to build; the real recorder is built
//! on a thread of its own and handed over with [`Deferred::ready`]. What is
//! recorded before then is kept, in the order it came, and passed on at the
//! hand-over, so the first webhooks' figures are not lost and do not wait.

use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Level, Metadata, Recorder, SharedString,
    Unit,
};

/// At most this many registrations are kept before the hand-over (the
/// macros register on every use); later ones are dropped. Only a recorder
/// that never arrives could reach it.
const MAX_EARLY: usize = 100_000;

pub(super) struct Deferred<R> {
    inner: OnceLock<R>,
    early: Mutex<Vec<Early>>,
}

/// Something recorded before the hand-over.
enum Early {
    Describe(Kind, KeyName, Option<Unit>, SharedString),
    Counter(Arc<Pending<Counter, CounterOp>>),
    Gauge(Arc<Pending<Gauge, GaugeOp>>),
    Histogram(Arc<Pending<Histogram, f64>>),
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Clone, Copy)]
enum CounterOp {
    Increment(u64),
    Absolute(u64),
}

#[derive(Clone, Copy)]
enum GaugeOp {
    Increment(f64),
    Decrement(f64),
    Set(f64),
}

/// A handle registered before the hand-over: its operations wait in a list,
/// and go straight to the real handle once there is one.
struct Pending<H, Op> {
    key: Key,
    state: Mutex<State<H, Op>>,
}

enum State<H, Op> {
    Waiting(Vec<Op>),
    Live(H),
}

impl<H, Op> Pending<H, Op> {
    fn new(key: &Key) -> Arc<Self> {
        Arc::new(Pending { key: key.clone(), state: Mutex::new(State::Waiting(Vec::new())) })
    }

    /// Applies `op` to the real handle, or keeps it for later.
    fn apply(&self, op: Op, to: impl FnOnce(&H, Op)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            State::Waiting(ops) => ops.push(op),
            State::Live(h) => to(h, op),
        }
    }

    /// The hand-over: what waited goes to `live`, and so does what comes after.
    fn resolve(&self, live: H, to: impl Fn(&H, Op)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Waiting(ops) = std::mem::replace(&mut *state, State::Live(live)) {
            let State::Live(h) = &*state else { unreachable!("just set") };
            for op in ops {
                to(h, op);
            }
        }
    }
}

fn counter_op(c: &Counter, op: CounterOp) {
    match op {
        CounterOp::Increment(v) => c.increment(v),
        CounterOp::Absolute(v) => c.absolute(v),
    }
}

fn gauge_op(g: &Gauge, op: GaugeOp) {
    match op {
        GaugeOp::Increment(v) => g.increment(v),
        GaugeOp::Decrement(v) => g.decrement(v),
        GaugeOp::Set(v) => g.set(v),
    }
}

impl CounterFn for Pending<Counter, CounterOp> {
    fn increment(&self, value: u64) {
        self.apply(CounterOp::Increment(value), counter_op);
    }
    fn absolute(&self, value: u64) {
        self.apply(CounterOp::Absolute(value), counter_op);
    }
}

impl GaugeFn for Pending<Gauge, GaugeOp> {
    fn increment(&self, value: f64) {
        self.apply(GaugeOp::Increment(value), gauge_op);
    }
    fn decrement(&self, value: f64) {
        self.apply(GaugeOp::Decrement(value), gauge_op);
    }
    fn set(&self, value: f64) {
        self.apply(GaugeOp::Set(value), gauge_op);
    }
}

impl HistogramFn for Pending<Histogram, f64> {
    fn record(&self, value: f64) {
        self.apply(value, |h, v| h.record(v));
    }
}

/// The metadata handed to the real recorder for what was registered early
/// (Prometheus's recorder does not read it).
const EARLY_METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl<R: Recorder> Deferred<R> {
    pub(super) const fn new() -> Self {
        Deferred { inner: OnceLock::new(), early: Mutex::new(Vec::new()) }
    }

    /// Hands over to `recorder`: everything recorded so far is passed on, in
    /// order, and everything after goes straight to it. Only the first call
    /// counts; a later one returns its recorder back.
    pub(super) fn ready(&self, recorder: R) -> Result<(), R> {
        let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner.get().is_some() {
            return Err(recorder);
        }
        // Replayed into `recorder` before it is shown to anyone: meanwhile a
        // new recording waits for the lock, so it lands after what came early
        // (a gauge's last `set` stays the last).
        for e in early.drain(..) {
            match e {
                Early::Describe(Kind::Counter, key, unit, text) => recorder.describe_counter(key, unit, text),
                Early::Describe(Kind::Gauge, key, unit, text) => recorder.describe_gauge(key, unit, text),
                Early::Describe(Kind::Histogram, key, unit, text) => recorder.describe_histogram(key, unit, text),
                Early::Counter(p) => p.resolve(recorder.register_counter(&p.key, &EARLY_METADATA), counter_op),
                Early::Gauge(p) => p.resolve(recorder.register_gauge(&p.key, &EARLY_METADATA), gauge_op),
                Early::Histogram(p) => {
                    p.resolve(recorder.register_histogram(&p.key, &EARLY_METADATA), |h, v| h.record(v))
                }
            }
        }
        early.shrink_to_fit();
        self.inner.set(recorder)
    }

    /// The real recorder, once handed over.
    #[cfg(test)]
    fn get(&self) -> Option<&R> {
        self.inner.get()
    }

    /// Runs `now` on the real recorder when there is one; otherwise keeps
    /// what `later` makes (under the lock, so the hand-over cannot slip in
    /// between) and returns `None`.
    fn now_or_later<T>(&self, now: impl FnOnce(&R) -> T, later: impl FnOnce() -> (Early, Option<T>)) -> Option<T> {
        if let Some(inner) = self.inner.get() {
            return Some(now(inner));
        }
        let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(inner) = self.inner.get() {
            return Some(now(inner));
        }
        if early.len() >= MAX_EARLY {
            return None;
        }
        let (kept, handle) = later();
        early.push(kept);
        handle
    }

    fn describe(&self, kind: Kind, key: KeyName, unit: Option<Unit>, text: SharedString) {
        self.now_or_later(
            |inner| match kind {
                Kind::Counter => inner.describe_counter(key.clone(), unit, text.clone()),
                Kind::Gauge => inner.describe_gauge(key.clone(), unit, text.clone()),
                Kind::Histogram => inner.describe_histogram(key.clone(), unit, text.clone()),
            },
            || (Early::Describe(kind, key.clone(), unit, text.clone()), None),
        );
    }
}

impl<R: Recorder> Default for Deferred<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Recorder> Recorder for Deferred<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(Kind::Counter, key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(Kind::Gauge, key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(Kind::Histogram, key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.now_or_later(
            |inner| inner.register_counter(key, metadata),
            || {
                let p = Pending::new(key);
                (Early::Counter(p.clone()), Some(Counter::from_arc(p)))
            },
        )
        .unwrap_or_else(Counter::noop)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.now_or_later(
            |inner| inner.register_gauge(key, metadata),
            || {
                let p = Pending::new(key);
                (Early::Gauge(p.clone()), Some(Gauge::from_arc(p)))
            },
        )
        .unwrap_or_else(Gauge::noop)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.now_or_later(
            |inner| inner.register_histogram(key, metadata),
            || {
                let p = Pending::new(key);
                (Early::Histogram(p.clone()), Some(Histogram::from_arc(p)))
            },
        )
        .unwrap_or_else(Histogram::noop)
    }
}

#[cfg(test)]
mod tests {
    use metrics::{Key, Label, Recorder, Unit};
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    fn key(name: &'static str, location: &'static str) -> Key {
        Key::from_parts(name, vec![Label::new("location", location)])
    }

    const META: Metadata<'static> = Metadata::new("test", Level::INFO, None);

    #[test]
    fn what_is_recorded_before_the_hand_over_is_passed_on_in_order() {
        let deferred: Deferred<metrics_exporter_prometheus::PrometheusRecorder> = Deferred::new();
        deferred.describe_counter("early_total".into(), None, "counted before the recorder".into());
        deferred.describe_histogram("early_seconds".into(), Some(Unit::Seconds), "timed early".into());
        // Two registrations of one counter, as two uses of the macro make.
        deferred.register_counter(&key("early_total", "north"), &META).increment(2);
        deferred.register_counter(&key("early_total", "north"), &META).increment(3);
        let gauge = deferred.register_gauge(&key("early_gauge", "north"), &META);
        gauge.set(10.0);
        gauge.decrement(4.0);
        deferred.register_histogram(&key("early_seconds", "north"), &META).record(0.25);
        assert!(deferred.get().is_none());

        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        assert!(deferred.ready(recorder).is_ok());
        assert!(deferred.ready(PrometheusBuilder::new().build_recorder()).is_err(), "only the first hand-over counts");

        // A handle taken before the hand-over still counts after it, and a new one goes straight through.
        gauge.increment(1.0);
        deferred.register_counter(&key("early_total", "north"), &META).increment(5);
        let text = handle.render();
        assert!(text.contains("# HELP early_total counted before the recorder"), "{text}");
        assert!(text.contains("early_total{location=\"north\"} 10"), "{text}");
        assert!(text.contains("early_gauge{location=\"north\"} 7"), "{text}");
        assert!(text.contains("early_seconds_count{location=\"north\"} 1"), "{text}");
        assert!(text.contains("early_seconds_sum{location=\"north\"} 0.25"), "{text}");
    }
}
