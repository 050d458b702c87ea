//! The business clock: the time at which business hours, holidays, closures,
//! "open now" and "next change" are read. Pure.
//!
//! In production it is the wall clock ([`Clock::WALL`]). Tests and the demo may
//! start a server whose business clock runs a fixed offset ahead of (or behind)
//! the wall clock, so that a location closes a few seconds after start although
//! hours are written in whole minutes. The offset is set only by code that builds
//! [`crate::config::Settings`] (`Settings::clock`): no config file or environment
//! variable reaches it.
//!
//! Everything else keeps the wall clock: the journeys, their timers, the outbox,
//! the database's times. A time read from the hours is turned back into wall
//! time ([`Clock::wall_ms`]) before the journey sees it, so "closes at business
//! time T" becomes "acts at wall time T − offset".

use jiff::Timestamp;

/// The largest offset a clock may have, either way: about 100 years, so that the
/// business time of any present-day wall time is a valid timestamp.
pub const MAX_OFFSET_MS: i64 = 100 * 366 * 86_400_000;

/// Wall time plus a fixed offset. Cheap to copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    /// The wall clock: what production always uses.
    pub const WALL: Clock = Clock { offset_ms: 0 };

    /// A business clock `offset_ms` ahead of the wall clock (behind when
    /// negative), clamped to ±[`MAX_OFFSET_MS`]. For tests and demos only.
    pub fn offset_by_ms(offset_ms: i64) -> Clock {
        Clock { offset_ms: offset_ms.clamp(-MAX_OFFSET_MS, MAX_OFFSET_MS) }
    }

    /// A business clock that reads `business` at wall time `wall`.
    pub fn reading(business: Timestamp, wall: Timestamp) -> Clock {
        Clock::offset_by_ms(business.as_millisecond().saturating_sub(wall.as_millisecond()))
    }

    /// How far ahead of the wall clock the business clock runs, in ms.
    pub fn offset_ms(self) -> i64 {
        self.offset_ms
    }

    /// Whether this is the wall clock.
    pub fn is_wall(self) -> bool {
        self.offset_ms == 0
    }

    /// The business time now.
    pub fn now(self) -> Timestamp {
        self.business(Timestamp::now())
    }

    /// The business time at wall time `wall` (to the millisecond).
    pub fn business(self, wall: Timestamp) -> Timestamp {
        if self.is_wall() {
            return wall;
        }
        Timestamp::from_millisecond(wall.as_millisecond().saturating_add(self.offset_ms)).unwrap_or(wall)
    }

    /// The wall time, in ms since the epoch, at which the business clock reads
    /// `business`: the journey's time base.
    pub fn wall_ms(self, business: Timestamp) -> i64 {
        business.as_millisecond().saturating_sub(self.offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_wall_clock_changes_nothing() {
        let t = ts("2026-06-01T16:59:30.123Z");
        assert!(Clock::WALL.is_wall());
        assert_eq!(Clock::default(), Clock::WALL);
        assert_eq!(Clock::WALL.business(t), t);
        assert_eq!(Clock::WALL.wall_ms(t), t.as_millisecond());
        let before = Timestamp::now();
        let now = Clock::WALL.now();
        assert!(now >= before && now <= Timestamp::now());
    }

    #[test]
    fn closing_at_business_time_t_is_wall_time_t_minus_the_offset() {
        let wall = ts("2026-06-01T10:00:07Z");
        // The business clock reads 16:59:55 at that wall time: closing at 17:00
        // is 5 s of wall time away.
        let clock = Clock::reading(ts("2026-06-01T16:59:55Z"), wall);
        assert_eq!(clock.offset_ms(), (6 * 3600 + 59 * 60 + 48) * 1000);
        assert_eq!(clock.business(wall), ts("2026-06-01T16:59:55Z"));
        let closes = ts("2026-06-01T17:00:00Z");
        assert_eq!(clock.wall_ms(closes), wall.as_millisecond() + 5_000);
        // Behind the wall clock works the same way.
        let behind = Clock::offset_by_ms(-90_000);
        assert_eq!(behind.business(wall), ts("2026-06-01T09:58:37Z"));
        assert_eq!(behind.wall_ms(ts("2026-06-01T09:58:37Z")), wall.as_millisecond());
    }

    #[test]
    fn offsets_are_clamped_so_business_time_stays_a_timestamp() {
        assert_eq!(Clock::offset_by_ms(i64::MAX).offset_ms(), MAX_OFFSET_MS);
        assert_eq!(Clock::offset_by_ms(i64::MIN).offset_ms(), -MAX_OFFSET_MS);
        let wall = ts("2026-06-01T00:00:00Z");
        for clock in [Clock::offset_by_ms(i64::MAX), Clock::offset_by_ms(i64::MIN)] {
            let business = clock.business(wall);
            assert_ne!(business, wall, "{clock:?}");
            assert_eq!(clock.wall_ms(business), wall.as_millisecond());
        }
    }

    proptest::proptest! {
        /// Business time and back is the identity, for any offset and wall time in range.
        #[test]
        fn wall_to_business_and_back(offset in -MAX_OFFSET_MS..=MAX_OFFSET_MS, wall in 0i64..4_102_444_800_000) {
            let clock = Clock::offset_by_ms(offset);
            let wall_ts = Timestamp::from_millisecond(wall).unwrap();
            let business = clock.business(wall_ts);
            proptest::prop_assert_eq!(business.as_millisecond(), wall + offset);
            proptest::prop_assert_eq!(clock.wall_ms(business), wall);
        }
    }
}
