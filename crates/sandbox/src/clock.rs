//! Virtual time: the one place that turns virtual seconds into real sleeps.
//!
//! Every duration the sandbox simulates (rings, prompts, reservation
//! timeouts, task TTLs, talk time) is virtual. The clock runs `time_scale`
//! virtual seconds per real second on top of tokio's clock, so tests can also
//! pause tokio's time and still see the same behaviour.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

/// Virtual milliseconds since the sandbox started.
pub type VMs = u64;

#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    wall_start: Timestamp,
    scale: f64,
}

impl Clock {
    /// A clock that starts now. A non-positive or non-finite scale is taken
    /// as real time, since it could never advance otherwise.
    pub fn new(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 { scale } else { 1.0 };
        Self { start: Instant::now(), wall_start: Timestamp::now(), scale }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Virtual milliseconds elapsed since start.
    pub fn now_ms(&self) -> VMs {
        (self.start.elapsed().as_secs_f64() * self.scale * 1000.0) as VMs
    }

    /// The wall-clock time a virtual instant stands for.
    pub fn wall(&self, at: VMs) -> Timestamp {
        let ms = i64::try_from(at).unwrap_or(i64::MAX / 2);
        self.wall_start.checked_add(jiff::SignedDuration::from_millis(ms)).unwrap_or(self.wall_start)
    }

    pub fn wall_now(&self) -> Timestamp {
        self.wall(self.now_ms())
    }

    /// The real duration of `virtual_ms` virtual milliseconds.
    pub fn real(&self, virtual_ms: VMs) -> Duration {
        Duration::try_from_secs_f64(virtual_ms as f64 / 1000.0 / self.scale).unwrap_or(Duration::MAX)
    }

    /// Sleeps for a virtual duration.
    pub async fn sleep(&self, virtual_ms: VMs) {
        self.sleep_until(self.now_ms().saturating_add(virtual_ms)).await;
    }

    /// Sleeps until a virtual instant (returns at once if it has passed).
    pub async fn sleep_until(&self, at: VMs) {
        let real = Duration::try_from_secs_f64(at as f64 / 1000.0 / self.scale).unwrap_or(Duration::MAX);
        match self.start.checked_add(real) {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            // Further away than the clock can express: never.
            None => std::future::pending().await,
        }
    }
}

/// RFC 2822, as the core (2010-04-01) API writes dates.
pub fn rfc2822(ts: Timestamp) -> String {
    ts.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// ISO 8601 in UTC, as TaskRouter writes dates.
pub fn iso8601(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn virtual_time_runs_at_scale() {
        let c = Clock::new(1000.0);
        c.sleep(120_000).await;
        let now = c.now_ms();
        assert!((120_000..121_000).contains(&now), "{now}");
        assert!(c.start.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn formats() {
        let ts: Timestamp = "2026-11-25T03:20:30Z".parse().unwrap();
        assert_eq!(rfc2822(ts), "Wed, 25 Nov 2026 03:20:30 +0000");
        assert_eq!(iso8601(ts), "2026-11-25T03:20:30Z");
    }
}
