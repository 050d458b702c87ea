//! Business hours in a location's time zone: weekly shifts, holidays, closures and DST.
//!
//! A location writes its hours as an [`HoursSpec`] (TOML, as people type it); [`Schedule::from_spec`]
//! checks it once, with errors that name the field, and [`Schedule::status_at`] answers "open or
//! closed at this instant, and until when". Nothing here reads the clock or does IO, so the caller
//! passes the instant in and the same question always gets the same answer.
//!
//! # Meaning of the spec
//!
//! - A weekly range `HH:MM-HH:MM` opens at its start and closes at its end (half-open). `24:00` is
//!   allowed only as an end. An end earlier than the start runs into the next day, so `sun 22:00-06:00`
//!   is open from Sunday 22:00 to Monday 06:00. Ranges that touch (`sat 00:00-24:00`, `sun 00:00-24:00`)
//!   form one contiguous open period, and `closes_at` reports the end of the whole period.
//! - Ranges of the same day may not overlap, because that is almost always a typing mistake. An
//!   overnight range that overlaps the next day's morning is simply unioned with it.
//! - A holiday closes its whole local calendar date, from 00:00 to the next 00:00. An overnight shift
//!   that started the evening before therefore ends at midnight, and an overnight shift that starts on
//!   the holiday opens at midnight, when the holiday ends. This keeps a holiday a plain date that
//!   staff can reason about, whatever shifts surround it.
//! - A closure closes the civil date-times `[from, to)`, on top of the weekly hours and holidays.
//!   When several reasons apply, the closure is reported first, then the holiday, then "outside
//!   hours", so callers hear the most specific reason.
//!
//! # Daylight saving time
//!
//! Every boundary (a range's start and end, a holiday's midnights, a closure's ends) is a civil time
//! that is converted to one instant with jiff's compatible disambiguation; whether a moment is open
//! is then decided by comparing instants. Outside the repeated or skipped hour this is the same as
//! reading the local wall clock. Inside it:
//!
//! - In a spring-forward gap a boundary moves later by the length of the gap (New York's 02:30 on
//!   the change day is 03:30 EDT), so a range lying wholly inside the gap (`02:00-03:00`) is empty
//!   that day, and `01:00-02:30` closes at 03:30 EDT, keeping its length in real time.
//! - In a fall-back fold a boundary takes the first occurrence (01:30 EDT rather than 01:30 EST), so
//!   an open period never closes and reopens when the clock repeats an hour.
//!
//! Reading the wall clock directly would instead close `00:00-01:30` at the first 01:30 and open it
//! again at the repeated 01:00. Because the answer comes from instants, `opens_at` and `closes_at` are exactly the instants at
//! which [`Schedule::status_at`] changes its answer, even around a change.

use std::collections::BTreeMap;

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, ZonedDateTime};
use serde::{Deserialize, Serialize};

/// How far ahead `opens_at` and `closes_at` are searched, in days. A year and a day covers a
/// location that opens only once a year, such as for an annual event.
pub const HORIZON_DAYS: i32 = 366;

const MINUTES_PER_DAY: u16 = 24 * 60;

/// A location's hours as written in the configuration or by `locations add`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursSpec {
    /// An IANA time zone name such as `America/New_York`; all times below are local to it.
    pub time_zone: String,
    #[serde(default)]
    pub weekly: WeeklySpec,
    #[serde(default)]
    pub holidays: Vec<HolidaySpec>,
    #[serde(default)]
    pub closures: Vec<ClosureSpec>,
}

/// The ranges `HH:MM-HH:MM` of each weekday; a day with no ranges is closed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklySpec {
    #[serde(default)]
    pub mon: Vec<String>,
    #[serde(default)]
    pub tue: Vec<String>,
    #[serde(default)]
    pub wed: Vec<String>,
    #[serde(default)]
    pub thu: Vec<String>,
    #[serde(default)]
    pub fri: Vec<String>,
    #[serde(default)]
    pub sat: Vec<String>,
    #[serde(default)]
    pub sun: Vec<String>,
}

impl WeeklySpec {
    /// The same ranges on every day of the week (`every_day(&["00:00-24:00"])`: always open).
    pub fn every_day(ranges: &[&str]) -> Self {
        let day = || ranges.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>();
        WeeklySpec { mon: day(), tue: day(), wed: day(), thu: day(), fri: day(), sat: day(), sun: day() }
    }
}

impl WeeklySpec {
    /// The days in Monday-first order, matching `Weekday::to_monday_zero_offset`.
    fn days(&self) -> [(&'static str, &[String]); 7] {
        [
            ("mon", &self.mon),
            ("tue", &self.tue),
            ("wed", &self.wed),
            ("thu", &self.thu),
            ("fri", &self.fri),
            ("sat", &self.sat),
            ("sun", &self.sun),
        ]
    }
}

/// A whole local calendar date on which the location is closed: one date, or one that recurs
/// every year. Exactly one of `date` and `rule` is given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolidaySpec {
    /// `YYYY-MM-DD` for one date, or `--MM-DD` (ISO 8601's date without a year) for the same
    /// date every year; local to the location.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub date: String,
    /// A yearly rule: `4th thu nov`, `last mon may` (`1st` to `5th` or `last`, a weekday, a
    /// month), or a day relative to Western (Gregorian) Easter Sunday: `easter`, `easter-2`
    /// (Good Friday), `easter+1` (Easter Monday).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What a caller hears when they call on this day, in place of "… is closed right now".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl HolidaySpec {
    /// A holiday from one word of text, as `locations add --holiday` takes it: `YYYY-MM-DD` or
    /// `--MM-DD` is a date, anything else a rule.
    pub fn from_text(text: &str) -> HolidaySpec {
        let text = text.trim();
        if text.starts_with("--") || text.starts_with(|c: char| c.is_ascii_digit()) {
            HolidaySpec { date: text.to_owned(), ..HolidaySpec::default() }
        } else {
            HolidaySpec { rule: Some(text.to_owned()), ..HolidaySpec::default() }
        }
    }

    /// Whether this holiday comes back every year (a `rule` or a `--MM-DD` date).
    pub fn is_recurring(&self) -> bool {
        self.rule.is_some() || self.date.starts_with("--")
    }
}

/// A one-off closure between two local civil date-times, `YYYY-MM-DDTHH:MM`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClosureSpec {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a caller hears during the closure, in place of "… is closed right now".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A field of an [`HoursSpec`] that does not make sense, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HoursError {
    field: String,
    message: String,
}

impl HoursError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// The path of the offending field, such as `weekly.mon[1]` or `closures[0].from`.
    pub fn field(&self) -> &str {
        &self.field
    }
}

/// Why a location is closed at some instant; `message` is what the spec says a caller should
/// hear then, if anything.
#[derive(Debug, Clone, PartialEq)]
pub enum ClosedReason {
    OutsideHours,
    Holiday { name: Option<String>, message: Option<String> },
    Closure { reason: Option<String>, message: Option<String> },
}

/// Whether a location is open at some instant, and until when.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Open until `closes_at`, the end of the contiguous open period. A location that does not
    /// close within [`HORIZON_DAYS`] reports the end of the horizon.
    Open { closes_at: ZonedDateTime },
    /// Closed; `opens_at` is `None` when nothing opens within [`HORIZON_DAYS`].
    Closed { reason: ClosedReason, opens_at: Option<ZonedDateTime> },
}

/// One weekly range in minutes after its day's local midnight; `end` exceeds a day when the
/// range runs overnight.
#[derive(Debug, Clone, Copy)]
struct Shift {
    start: u16,
    end: u16,
}

#[derive(Debug, Clone)]
struct Closure {
    from: Timestamp,
    to: Timestamp,
    reason: Option<String>,
    message: Option<String>,
}

/// A holiday's name and message.
#[derive(Debug, Clone, PartialEq)]
struct Named {
    name: Option<String>,
    message: Option<String>,
}

/// A holiday that comes back every year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    /// The same month and day; `--02-29` only in leap years.
    Yearly { month: i8, day: i8 },
    /// The `nth` (1 to 5, or -1 for the last) `weekday` of `month`; a year without a fifth one
    /// has no holiday.
    NthWeekday { nth: i8, weekday: Weekday, month: i8 },
    /// `offset` days after Western Easter Sunday (computed by the `computus` crate).
    Easter { offset: i16 },
}

/// The furthest an Easter rule may be from Easter Sunday, in days: enough for every movable
/// feast in use (Septuagesima is -63, Corpus Christi +60) with room to spare.
pub const EASTER_MAX_OFFSET: i16 = 200;

impl Recurrence {
    /// The date this recurrence falls on in `year`, if it does.
    pub fn date_in(self, year: i16) -> Option<Date> {
        match self {
            Recurrence::Yearly { month, day } => Date::new(year, month, day).ok(),
            Recurrence::NthWeekday { nth, weekday, month } => {
                Date::new(year, month, 1).ok()?.nth_weekday_of_month(nth, weekday).ok()
            }
            Recurrence::Easter { offset } => {
                let easter = computus::gregorian(i32::from(year)).ok()?;
                let sunday = Date::new(year, easter.month as i8, easter.day as i8).ok()?;
                add_days(sunday, i32::from(offset))
            }
        }
    }

    /// Whether this recurrence falls on `date`.
    fn falls_on(self, date: Date) -> bool {
        match self {
            // An Easter rule far from Easter lands in the year before or after.
            Recurrence::Easter { .. } => {
                (-1..=1).any(|n| date.year().checked_add(n).and_then(|y| self.date_in(y)) == Some(date))
            }
            _ => self.date_in(date.year()) == Some(date),
        }
    }

    /// The rule in the form `rule =` takes (`4th thu nov`, `easter-2`), or `--MM-DD`.
    pub fn to_rule_text(self) -> String {
        match self {
            Recurrence::Yearly { month, day } => format!("--{month:02}-{day:02}"),
            Recurrence::NthWeekday { nth, weekday, month } => {
                let nth = match nth {
                    1 => "1st",
                    2 => "2nd",
                    3 => "3rd",
                    4 => "4th",
                    5 => "5th",
                    _ => "last",
                };
                let day = WEEKDAYS.iter().find(|(_, w)| *w == weekday).map_or("?", |(n, _)| n);
                format!("{nth} {day} {}", MONTHS[(month - 1) as usize])
            }
            Recurrence::Easter { offset: 0 } => "easter".to_owned(),
            Recurrence::Easter { offset } => format!("easter{offset:+}"),
        }
    }
}

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/// Parses a `rule`: `NTH WEEKDAY MONTH` or `easter[+-N]`, case-insensitive. Weekdays and months
/// may be written in full or by their first three letters.
pub fn parse_rule(text: &str) -> Result<Recurrence, String> {
    let lower = text.trim().to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("easter") {
        let rest = rest.trim();
        let offset = if rest.is_empty() {
            0
        } else {
            let (sign, digits) = if let Some(d) = rest.strip_prefix('+') {
                (1, d.trim())
            } else if let Some(d) = rest.strip_prefix('-') {
                (-1, d.trim())
            } else {
                return Err(format!("{text:?} is not easter, easter+N or easter-N"));
            };
            let n: i16 = digits
                .parse()
                .ok()
                .filter(|n| (0..=EASTER_MAX_OFFSET).contains(n) && digits.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("{text:?}: N must be a whole number of days from 0 to {EASTER_MAX_OFFSET}"))?;
            sign * n
        };
        return Ok(Recurrence::Easter { offset });
    }
    let words: Vec<&str> = lower.split_whitespace().collect();
    let [nth, weekday, month] = words[..] else {
        return Err(format!("{text:?} is not NTH WEEKDAY MONTH (such as \"4th thu nov\") or easter[+-N]"));
    };
    let nth = match nth {
        "1st" | "first" => 1,
        "2nd" | "second" => 2,
        "3rd" | "third" => 3,
        "4th" | "fourth" => 4,
        "5th" | "fifth" => 5,
        "last" => -1,
        _ => return Err(format!("{text:?}: {nth:?} is not 1st, 2nd, 3rd, 4th, 5th or last")),
    };
    let named = |word: &str, short: &str, full: &[&str]| word == short || full.contains(&word);
    const FULL_DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    let weekday = WEEKDAYS
        .iter()
        .zip(FULL_DAYS)
        .find(|((short, _), full)| named(weekday, short, &[full]))
        .map(|((_, w), _)| *w)
        .ok_or_else(|| format!("{text:?}: {weekday:?} is not a weekday (mon..sun)"))?;
    const FULL_MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let month = MONTHS
        .iter()
        .zip(FULL_MONTHS)
        .position(|(short, full)| named(month, short, &[full]))
        .ok_or_else(|| format!("{text:?}: {month:?} is not a month (jan..dec)"))?;
    Ok(Recurrence::NthWeekday { nth, weekday, month: month as i8 + 1 })
}

/// Parses `--MM-DD`, a date without a year; any day that exists in a leap year is accepted.
fn parse_yearly(s: &str) -> Option<Recurrence> {
    let b = s.as_bytes();
    let shaped =
        b.len() == 7 && b.starts_with(b"--") && b[4] == b'-' && [2, 3, 5, 6].iter().all(|&i| b[i].is_ascii_digit());
    if !shaped {
        return None;
    }
    let (month, day) = (s[2..4].parse().ok()?, s[5..7].parse().ok()?);
    Date::new(2024, month, day).ok()?;
    Some(Recurrence::Yearly { month, day })
}

/// Checked business hours, ready to answer questions about instants.
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: TimeZone,
    tz_name: String,
    /// Indexed by `Weekday::to_monday_zero_offset`.
    weekly: [Vec<Shift>; 7],
    holidays: BTreeMap<Date, Named>,
    /// Checked after the dated holidays, so a dated holiday's name wins on a shared date.
    recurring: Vec<(Recurrence, Named)>,
    closures: Vec<Closure>,
}

impl Schedule {
    /// Checks a spec; the error names the first field that is wrong.
    pub fn from_spec(spec: &HoursSpec) -> Result<Schedule, HoursError> {
        let tz = TimeZone::get(&spec.time_zone)
            .map_err(|_| HoursError::new("time_zone", format!("unknown IANA time zone {:?}", spec.time_zone)))?;
        let tz_name = tz.iana_name().unwrap_or(&spec.time_zone).to_owned();

        let mut weekly: [Vec<Shift>; 7] = Default::default();
        for (slot, (day, ranges)) in weekly.iter_mut().zip(spec.weekly.days()) {
            *slot = parse_day(day, ranges)?;
        }

        let mut holidays = BTreeMap::new();
        let mut recurring = Vec::new();
        for (i, h) in spec.holidays.iter().enumerate() {
            let named = Named { name: h.name.clone(), message: h.message.clone() };
            match (h.date.as_str(), &h.rule) {
                ("", None) => return Err(HoursError::new(format!("holidays[{i}]"), "needs a date or a rule")),
                (_, Some(_)) if !h.date.is_empty() => {
                    return Err(HoursError::new(format!("holidays[{i}]"), "has both a date and a rule; keep one"));
                }
                (_, Some(rule)) => {
                    let rule = parse_rule(rule).map_err(|m| HoursError::new(format!("holidays[{i}].rule"), m))?;
                    recurring.push((rule, named));
                }
                (date, None) => {
                    if let Some(yearly) = parse_yearly(date) {
                        recurring.push((yearly, named));
                    } else {
                        let date = parse_date(date).ok_or_else(|| {
                            HoursError::new(
                                format!("holidays[{i}].date"),
                                format!("{date:?} is not YYYY-MM-DD or --MM-DD"),
                            )
                        })?;
                        holidays.insert(date, named);
                    }
                }
            }
        }

        let mut closures = Vec::new();
        for (i, c) in spec.closures.iter().enumerate() {
            let parse = |name: &str, s: &str| {
                parse_datetime(s).ok_or_else(|| {
                    HoursError::new(format!("closures[{i}].{name}"), format!("{s:?} is not YYYY-MM-DDTHH:MM"))
                })
            };
            let (from, to) = (parse("from", &c.from)?, parse("to", &c.to)?);
            if to < from {
                return Err(HoursError::new(format!("closures[{i}]"), "to is before from"));
            }
            if to == from {
                return Err(HoursError::new(format!("closures[{i}]"), "from and to are equal"));
            }
            let convert = |dt: DateTime| {
                tz.to_ambiguous_timestamp(dt)
                    .compatible()
                    .map_err(|e| HoursError::new(format!("closures[{i}]"), format!("cannot be placed in time: {e}")))
            };
            closures.push(Closure {
                from: convert(from)?,
                to: convert(to)?,
                reason: c.reason.clone(),
                message: c.message.clone(),
            });
        }

        Ok(Schedule { tz, tz_name, weekly, holidays, recurring, closures })
    }

    /// Up to `max` open periods that start after `t`, in order, each as
    /// (opens, closes); fewer when nothing more opens within [`HORIZON_DAYS`].
    /// A period that does not close within the horizon ends the list.
    pub fn open_periods_after(&self, t: Timestamp, max: usize) -> Vec<(Timestamp, Timestamp)> {
        let mut periods = Vec::new();
        let mut at = t;
        // Open at `t`: the periods after this one.
        if let Status::Open { closes_at } = self.status_at(at) {
            at = closes_at.timestamp();
        }
        while periods.len() < max {
            let Status::Closed { opens_at: Some(opens), .. } = self.status_at(at) else { break };
            let opens = opens.timestamp();
            let Status::Open { closes_at } = self.status_at(opens) else { break };
            let closes = closes_at.timestamp();
            periods.push((opens, closes));
            if closes <= opens {
                break;
            }
            at = closes;
        }
        periods
    }

    /// The time of day at `t` on the location's clock ("10:32").
    pub fn clock_time(&self, t: Timestamp) -> String {
        let dt = self.tz.to_datetime(t);
        format!("{:02}:{:02}", dt.hour(), dt.minute())
    }

    /// The IANA name of the location's time zone.
    pub fn time_zone_name(&self) -> &str {
        &self.tz_name
    }

    /// Whether the location is open at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        self.closed_reason(now).is_none()
    }

    /// Why the location is closed at `now`, or `None` when it is open; cheaper than
    /// [`Schedule::status_at`], which also looks for the next change.
    pub fn closed_at(&self, now: Timestamp) -> Option<ClosedReason> {
        self.closed_reason(now)
    }

    /// Whether the location is open at `now`, and when that next changes.
    pub fn status_at(&self, now: Timestamp) -> Status {
        let reason = self.closed_reason(now);
        let next = self.next_change(now, reason.is_none());
        let zoned = |t: Timestamp| ZonedDateTime::new(t, self.tz.clone());
        match reason {
            None => Status::Open { closes_at: zoned(next.unwrap_or_else(|horizon| horizon)) },
            Some(reason) => Status::Closed { reason, opens_at: next.ok().map(zoned) },
        }
    }

    /// Why the location is closed at `t`, or `None` when it is open.
    fn closed_reason(&self, t: Timestamp) -> Option<ClosedReason> {
        if let Some(c) = self.closures.iter().find(|c| c.from <= t && t < c.to) {
            return Some(ClosedReason::Closure { reason: c.reason.clone(), message: c.message.clone() });
        }
        let local = self.tz.to_datetime(t).date();
        // A neighbouring date is checked too because, around a DST change, the instants of a date's
        // midnights need not match the date `t` reads as.
        for day in (-1..=1).filter_map(|n| add_days(local, n)) {
            if let Some(named) = self.holiday_on(day) {
                let (start, end) = (self.instant(day, 0), self.instant(day, MINUTES_PER_DAY));
                if start.is_some_and(|s| s <= t) && end.is_none_or(|e| t < e) {
                    return Some(ClosedReason::Holiday { name: named.name.clone(), message: named.message.clone() });
                }
            }
        }
        // An overnight range of yesterday can still be running; older days cannot reach `t`.
        let open = (-2..=1)
            .filter_map(|n| add_days(local, n))
            .flat_map(|day| self.shift_instants(day))
            .any(|(start, end)| start <= t && t < end);
        if open { None } else { Some(ClosedReason::OutsideHours) }
    }

    /// The first instant after `now` at which openness differs from `open_now`, or `Err` with the
    /// end of the search horizon when there is none.
    ///
    /// Openness only changes at a boundary, so the search walks day by day through the boundaries
    /// that fall in each local day (ranges of that day and the one before, holiday midnights,
    /// closures) and checks each in order.
    fn next_change(&self, now: Timestamp, open_now: bool) -> Result<Timestamp, Timestamp> {
        let first = self.tz.to_datetime(now).date();
        let mut day = add_days(first, -1).unwrap_or(first);
        let mut window_start = now;
        for _ in 0..=HORIZON_DAYS + 1 {
            let Some(next_day) = add_days(day, 1) else { break };
            let Some(window_end) = self.instant(next_day, 0) else {
                break;
            };
            let mut candidates: Vec<Timestamp> = Vec::new();
            for d in [add_days(day, -1), Some(day)].into_iter().flatten() {
                candidates.extend(self.shift_instants(d).flat_map(|(s, e)| [s, e]));
                if self.holiday_on(d).is_some() {
                    candidates.extend(self.instant(d, 0));
                    candidates.extend(self.instant(d, MINUTES_PER_DAY));
                }
            }
            candidates.extend(self.closures.iter().flat_map(|c| [c.from, c.to]));
            candidates.retain(|&c| c > now && c >= window_start && c < window_end);
            candidates.sort();
            candidates.dedup();
            if let Some(&change) = candidates.iter().find(|&&c| self.closed_reason(c).is_none() != open_now) {
                return Ok(change);
            }
            window_start = window_start.max(window_end);
            day = next_day;
        }
        Err(window_start)
    }

    /// The holiday on local `date`, dated or recurring.
    fn holiday_on(&self, date: Date) -> Option<&Named> {
        self.holidays.get(&date).or_else(|| self.recurring.iter().find(|(r, _)| r.falls_on(date)).map(|(_, n)| n))
    }

    /// Whether the spec's dated holidays and closures are all over at `now`, so the calendar has
    /// probably not been kept up: `true` only when there is at least one and no recurring
    /// holiday (a recurring holiday is never in the past). Returns the last day that was closed.
    pub fn calendar_ended_before(&self, now: Timestamp) -> Option<Date> {
        if !self.recurring.is_empty() || (self.holidays.is_empty() && self.closures.is_empty()) {
            return None;
        }
        let holidays = self.holidays.keys().map(|&d| (self.instant(d, MINUTES_PER_DAY), d));
        let closures = self.closures.iter().map(|c| (Some(c.to), self.tz.to_datetime(c.to).date()));
        let mut last = None;
        for (end, date) in holidays.chain(closures) {
            if end.is_none_or(|e| e > now) {
                return None;
            }
            last = last.max(Some(date));
        }
        last
    }

    /// A warning for a calendar that has not been kept up (see [`Schedule::calendar_ended_before`]),
    /// such as `every dated holiday and closure is in the past (the last on 2025-12-26)`.
    pub fn past_calendar_warning(&self, now: Timestamp) -> Option<String> {
        self.calendar_ended_before(now).map(|last| {
            format!(
                "every dated holiday and closure is in the past (the last on {last}); \
                 add this year's, or make the yearly ones recurring (--MM-DD or a rule)"
            )
        })
    }

    /// The instants of `date`'s weekly ranges; a range the DST gap makes empty yields nothing.
    fn shift_instants(&self, date: Date) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        let shifts = &self.weekly[date.weekday().to_monday_zero_offset() as usize];
        shifts.iter().filter_map(move |s| {
            let (start, end) = (self.instant(date, s.start)?, self.instant(date, s.end)?);
            (start < end).then_some((start, end))
        })
    }

    /// The instant `minute` minutes after `date`'s local midnight (at most two days), using
    /// compatible disambiguation; `None` only at the edges of jiff's supported range.
    fn instant(&self, date: Date, minute: u16) -> Option<Timestamp> {
        let date = add_days(date, i32::from(minute / MINUTES_PER_DAY))?;
        let minute = minute % MINUTES_PER_DAY;
        let dt = date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
        self.tz.to_ambiguous_timestamp(dt).compatible().ok()
    }
}

fn add_days(date: Date, days: i32) -> Option<Date> {
    date.checked_add(days.days()).ok()
}

/// Parses one day's ranges and refuses empty or overlapping ones.
fn parse_day(day: &str, ranges: &[String]) -> Result<Vec<Shift>, HoursError> {
    let mut shifts: Vec<(usize, Shift)> = Vec::new();
    for (i, text) in ranges.iter().enumerate() {
        let field = || format!("weekly.{day}[{i}]");
        let (start, end) = text.split_once('-').ok_or_else(|| HoursError::new(field(), not_a_range(text)))?;
        let (start, end) = match (parse_hhmm(start), parse_hhmm(end)) {
            (Ok(s), Ok(e)) => (s, e),
            (Err(BadTime::Malformed), _) | (_, Err(BadTime::Malformed)) => {
                return Err(HoursError::new(field(), not_a_range(text)));
            }
            _ => {
                return Err(HoursError::new(field(), format!("{text:?} has a time outside 00:00-24:00")));
            }
        };
        if start == MINUTES_PER_DAY {
            return Err(HoursError::new(field(), format!("{text:?} cannot start at 24:00")));
        }
        if start == end {
            return Err(HoursError::new(field(), format!("{text:?} is empty")));
        }
        // An end before the start is tomorrow's time.
        let end = if end < start { end + MINUTES_PER_DAY } else { end };
        shifts.push((i, Shift { start, end }));
    }
    shifts.sort_by_key(|(_, s)| s.start);
    for pair in shifts.windows(2) {
        let ((i, earlier), (j, later)) = (pair[0], pair[1]);
        if later.start < earlier.end {
            return Err(HoursError::new(
                format!("weekly.{day}[{j}]"),
                format!("{:?} overlaps {:?}", ranges[j], ranges[i]),
            ));
        }
    }
    Ok(shifts.into_iter().map(|(_, s)| s).collect())
}

fn not_a_range(text: &str) -> String {
    format!("{text:?} is not HH:MM-HH:MM")
}

/// Why an `HH:MM` did not parse: the wrong shape, or the right shape with a value out of range.
#[derive(Debug, PartialEq)]
enum BadTime {
    Malformed,
    OutOfRange,
}

/// Parses `HH:MM` into minutes after midnight; `24:00` is accepted so that it can end a range.
fn parse_hhmm(s: &str) -> Result<u16, BadTime> {
    let [h1, h2, b':', m1, m2] = s.as_bytes() else {
        return Err(BadTime::Malformed);
    };
    let digits = [*h1, *h2, *m1, *m2];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(BadTime::Malformed);
    }
    let [h1, h2, m1, m2] = digits.map(|d| u16::from(d - b'0'));
    let (hour, minute) = (h1 * 10 + h2, m1 * 10 + m2);
    let minutes = hour * 60 + minute;
    if minute < 60 && minutes <= MINUTES_PER_DAY { Ok(minutes) } else { Err(BadTime::OutOfRange) }
}

/// Parses exactly `YYYY-MM-DD`; jiff's own parser also accepts longer forms, which would hide
/// typos such as a time pasted after a holiday's date.
fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    Date::new(s[0..4].parse().ok()?, s[5..7].parse().ok()?, s[8..10].parse().ok()?).ok()
}

/// Parses exactly `YYYY-MM-DDTHH:MM`, with hours 00-23.
fn parse_datetime(s: &str) -> Option<DateTime> {
    let (date, time) = s.split_once('T')?;
    let minutes = parse_hhmm(time).ok().filter(|&m| m < MINUTES_PER_DAY)?;
    Some(parse_date(date)?.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NY: &str = "America/New_York";
    const LONDON: &str = "Europe/London";

    fn day_mut<'a>(weekly: &'a mut WeeklySpec, day: &str) -> &'a mut Vec<String> {
        match day {
            "mon" => &mut weekly.mon,
            "tue" => &mut weekly.tue,
            "wed" => &mut weekly.wed,
            "thu" => &mut weekly.thu,
            "fri" => &mut weekly.fri,
            "sat" => &mut weekly.sat,
            "sun" => &mut weekly.sun,
            other => panic!("no day {other}"),
        }
    }

    /// A spec from a compact weekly text such as `mon 08:00-12:00 13:00-17:00; fri 22:00-06:00`.
    fn spec(tz: &str, weekly: &str) -> HoursSpec {
        let mut hours = HoursSpec { time_zone: tz.into(), ..HoursSpec::default() };
        for day in weekly.split(';').map(str::trim).filter(|d| !d.is_empty()) {
            let mut words = day.split(' ');
            let slot = day_mut(&mut hours.weekly, words.next().unwrap());
            slot.extend(words.map(String::from));
        }
        hours
    }

    fn holiday(date: &str, name: Option<&str>) -> HolidaySpec {
        HolidaySpec { date: date.into(), name: name.map(Into::into), ..HolidaySpec::default() }
    }

    fn rule(rule: &str, name: Option<&str>) -> HolidaySpec {
        HolidaySpec { rule: Some(rule.into()), name: name.map(Into::into), ..HolidaySpec::default() }
    }

    fn closure(from: &str, to: &str, reason: Option<&str>) -> ClosureSpec {
        ClosureSpec { from: from.into(), to: to.into(), reason: reason.map(Into::into), message: None }
    }

    /// An instant written with its offset, so that a repeated hour is unambiguous.
    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The status in one short line, such as `open until 2026-06-01T12:00-04:00`.
    fn show(status: &Status) -> String {
        let at = |z: &ZonedDateTime| z.strftime("%Y-%m-%dT%H:%M%:z").to_string();
        match status {
            Status::Open { closes_at } => format!("open until {}", at(closes_at)),
            Status::Closed { reason, opens_at } => {
                let why = match reason {
                    ClosedReason::OutsideHours => "outside hours".to_owned(),
                    ClosedReason::Holiday { name: None, .. } => "holiday".to_owned(),
                    ClosedReason::Holiday { name: Some(name), .. } => format!("holiday {name:?}"),
                    ClosedReason::Closure { reason: None, .. } => "closure".to_owned(),
                    ClosedReason::Closure { reason: Some(reason), .. } => format!("closure {reason:?}"),
                };
                format!("{why} until {}", opens_at.as_ref().map_or("never".to_owned(), at))
            }
        }
    }

    /// Checks `(now, expected)` rows against one schedule.
    fn check(hours: &HoursSpec, cases: &[(&str, &str)]) {
        let schedule = Schedule::from_spec(hours).unwrap();
        for (now, want) in cases {
            assert_eq!(&show(&schedule.status_at(ts(now))), want, "at {now}");
            assert_eq!(schedule.is_open(ts(now)), want.starts_with("open"), "is_open at {now}");
        }
    }

    #[test]
    fn open_periods_after_list_the_next_openings_in_order() {
        // Weekdays 09:00-17:00 in New York; 2026-06-01 is a Monday; the Tuesday is a holiday.
        let mut hours = spec(NY, "mon 09:00-17:00; tue 09:00-17:00; wed 09:00-17:00; thu 09:00-17:00; fri 09:00-17:00");
        hours.holidays.push(holiday("2026-06-02", Some("Closed")));
        let schedule = Schedule::from_spec(&hours).unwrap();
        let show = |periods: Vec<(Timestamp, Timestamp)>| {
            let tz = TimeZone::get(NY).unwrap();
            periods
                .iter()
                .map(|(o, c)| {
                    let f = |t: &Timestamp| ZonedDateTime::new(*t, tz.clone()).strftime("%a %H:%M").to_string();
                    format!("{}-{}", f(o), f(c))
                })
                .collect::<Vec<_>>()
        };
        // From Monday at closing time: the holiday is skipped.
        let from_closing = schedule.open_periods_after(ts("2026-06-01T17:00-04:00"), 3);
        assert_eq!(show(from_closing), ["Wed 09:00-Wed 17:00", "Thu 09:00-Thu 17:00", "Fri 09:00-Fri 17:00"]);
        // From inside an open period: the periods after it; the weekend is skipped.
        let from_open = schedule.open_periods_after(ts("2026-06-05T10:00-04:00"), 2);
        assert_eq!(show(from_open), ["Mon 09:00-Mon 17:00", "Tue 09:00-Tue 17:00"]);
        assert!(schedule.open_periods_after(ts("2026-06-01T17:00-04:00"), 0).is_empty());
        // Never open: nothing; always open: nothing after the open period.
        let never = Schedule::from_spec(&spec(NY, "")).unwrap();
        assert!(never.open_periods_after(ts("2026-06-01T17:00-04:00"), 3).is_empty());
        let always =
            Schedule::from_spec(&HoursSpec { weekly: WeeklySpec::every_day(&["00:00-24:00"]), ..spec(NY, "") })
                .unwrap();
        assert!(always.open_periods_after(ts("2026-06-01T17:00-04:00"), 3).is_empty());
    }

    /// Split shifts on Monday, all of Tuesday and Wednesday, Friday night into Saturday and Sunday
    /// night into Monday, in New York, where 2026-06-01 is a Monday.
    fn weekly_ny() -> HoursSpec {
        spec(NY, "mon 13:00-17:00 08:00-12:00; tue 00:00-24:00; wed 00:00-24:00; fri 22:00-06:00; sun 20:00-02:00")
    }

    #[test]
    #[rustfmt::skip]
    fn weekly_ranges() {
        assert_eq!(Schedule::from_spec(&weekly_ny()).unwrap().time_zone_name(), NY);
        check(&weekly_ny(), &[
            ("2026-06-01T09:00-04:00", "open until 2026-06-01T12:00-04:00"),
            ("2026-06-01T12:00-04:00", "outside hours until 2026-06-01T13:00-04:00"),
            ("2026-06-01T12:59:59-04:00", "outside hours until 2026-06-01T13:00-04:00"),
            ("2026-06-01T17:00-04:00", "outside hours until 2026-06-02T00:00-04:00"),
            // Tuesday's and Wednesday's 00:00-24:00 are one open period.
            ("2026-06-02T10:00-04:00", "open until 2026-06-04T00:00-04:00"),
            ("2026-06-04T12:00-04:00", "outside hours until 2026-06-05T22:00-04:00"),
            ("2026-06-06T03:00-04:00", "open until 2026-06-06T06:00-04:00"),
            ("2026-06-06T07:00-04:00", "outside hours until 2026-06-07T20:00-04:00"),
            // Sunday night runs into Monday; Monday's own hours start later.
            ("2026-06-07T23:00-04:00", "open until 2026-06-08T02:00-04:00"),
            ("2026-06-08T01:59-04:00", "open until 2026-06-08T02:00-04:00"),
            ("2026-06-08T02:00-04:00", "outside hours until 2026-06-08T08:00-04:00"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn daylight_saving_changes() {
        // (time zone, weekly hours, now, expected)
        let cases = [
            // New York springs forward on 2026-03-08 at 02:00 EST to 03:00 EDT.
            (NY, "sat 22:00-06:00", "2026-03-07T21:00-05:00", "outside hours until 2026-03-07T22:00-05:00"),
            (NY, "sat 22:00-06:00", "2026-03-08T01:59-05:00", "open until 2026-03-08T06:00-04:00"),
            // A start in the gap moves later by the gap's length, as compatible disambiguation does.
            (NY, "sun 02:30-05:00", "2026-03-08T01:00-05:00", "outside hours until 2026-03-08T03:30-04:00"),
            (NY, "sun 02:30-05:00", "2026-03-08T03:10-04:00", "outside hours until 2026-03-08T03:30-04:00"),
            (NY, "sun 01:00-02:30", "2026-03-08T01:30-05:00", "open until 2026-03-08T03:30-04:00"),
            // A range wholly inside the skipped hour is empty that day.
            (NY, "sun 02:00-03:00", "2026-03-08T01:30-05:00", "outside hours until 2026-03-15T02:00-04:00"),
            // New York falls back on 2026-11-01 at 02:00 EDT to 01:00 EST.
            (NY, "sat 22:00-06:00", "2026-10-31T21:00-04:00", "outside hours until 2026-10-31T22:00-04:00"),
            (NY, "sat 22:00-06:00", "2026-11-01T01:30-05:00", "open until 2026-11-01T06:00-05:00"),
            (NY, "sun 01:30-09:00", "2026-11-01T01:45-04:00", "open until 2026-11-01T09:00-05:00"),
            // The repeated 01:15 does not close a period that opened at the first 01:30.
            (NY, "sun 01:30-09:00", "2026-11-01T01:15-05:00", "open until 2026-11-01T09:00-05:00"),
            (NY, "sun 00:00-01:30", "2026-11-01T01:00-04:00", "open until 2026-11-01T01:30-04:00"),
            (NY, "sun 00:00-01:30", "2026-11-01T01:10-05:00", "outside hours until 2026-11-08T00:00-05:00"),
            // London springs forward on 2026-03-29 at 01:00 GMT to 02:00 BST.
            (LONDON, "sat 20:00-04:00", "2026-03-29T00:30+00:00", "open until 2026-03-29T04:00+01:00"),
            (LONDON, "sun 01:30-03:00", "2026-03-29T00:30+00:00", "outside hours until 2026-03-29T02:30+01:00"),
            (LONDON, "sun 00:00-24:00", "2026-03-29T12:00+01:00", "open until 2026-03-30T00:00+01:00"),
            // London falls back on 2026-10-25 at 02:00 BST to 01:00 GMT.
            (LONDON, "sat 18:00-03:00", "2026-10-24T19:00+01:00", "open until 2026-10-25T03:00+00:00"),
            (LONDON, "sun 01:00-01:30", "2026-10-25T01:40+01:00", "outside hours until 2026-11-01T01:00+00:00"),
            (LONDON, "sun 01:00-01:30", "2026-10-25T01:10+00:00", "outside hours until 2026-11-01T01:00+00:00"),
            (LONDON, "sat 09:00-17:00", "2026-10-24T17:00+01:00", "outside hours until 2026-10-31T09:00+00:00"),
        ];
        for (tz, weekly, now, want) in cases {
            check(&spec(tz, weekly), &[(now, want)]);
        }
    }

    #[test]
    #[rustfmt::skip]
    fn holidays_close_their_whole_local_date() {
        let mut hours = weekly_ny();
        hours.holidays = vec![
            holiday("2026-06-02", None),
            holiday("2026-06-06", Some("Founders Day")),
            holiday("2026-06-07", Some("Picnic")),
        ];
        check(&hours, &[
            // opens_at skips the Tuesday holiday.
            ("2026-06-01T17:00-04:00", "outside hours until 2026-06-03T00:00-04:00"),
            ("2026-06-02T10:00-04:00", "holiday until 2026-06-03T00:00-04:00"),
            ("2026-06-03T10:00-04:00", "open until 2026-06-04T00:00-04:00"),
            // Friday's overnight shift ends where Saturday's holiday begins.
            ("2026-06-05T23:00-04:00", "open until 2026-06-06T00:00-04:00"),
            ("2026-06-06T03:00-04:00", "holiday \"Founders Day\" until 2026-06-08T00:00-04:00"),
            // Sunday night's shift, which starts on a holiday, opens when the holiday ends.
            ("2026-06-07T21:00-04:00", "holiday \"Picnic\" until 2026-06-08T00:00-04:00"),
            ("2026-06-08T00:30-04:00", "open until 2026-06-08T02:00-04:00"),
        ]);
    }

    #[test]
    #[rustfmt::skip]
    fn closures_cut_shifts() {
        let mut hours = weekly_ny();
        hours.closures = vec![
            closure("2026-06-01T10:00", "2026-06-01T14:00", Some("staff training")),
            closure("2026-06-03T12:00", "2026-06-05T23:00", None),
        ];
        check(&hours, &[
            ("2026-06-01T09:00-04:00", "open until 2026-06-01T10:00-04:00"),
            ("2026-06-01T11:00-04:00", "closure \"staff training\" until 2026-06-01T14:00-04:00"),
            ("2026-06-01T14:30-04:00", "open until 2026-06-01T17:00-04:00"),
            ("2026-06-03T10:00-04:00", "open until 2026-06-03T12:00-04:00"),
            ("2026-06-04T12:00-04:00", "closure until 2026-06-05T23:00-04:00"),
            ("2026-06-05T23:30-04:00", "open until 2026-06-06T06:00-04:00"),
        ]);
    }

    #[test]
    fn no_hours_and_always_open() {
        check(&spec(LONDON, ""), &[("2026-06-01T12:00Z", "outside hours until never")]);

        let always = spec(
            LONDON,
            &["mon", "tue", "wed", "thu", "fri", "sat", "sun"].map(|d| d.to_owned() + " 00:00-24:00").join(";"),
        );
        let now = ts("2026-06-01T12:00Z");
        let Status::Open { closes_at } = Schedule::from_spec(&always).unwrap().status_at(now) else {
            panic!("24/7 is closed")
        };
        // With no end in sight, closes_at is the end of the horizon.
        assert!(closes_at.timestamp().duration_since(now).as_hours() >= 24 * i64::from(HORIZON_DAYS));
    }

    #[test]
    #[rustfmt::skip]
    fn errors_name_their_field() {
        let with = |holidays: &[&str], closures: &[(&str, &str)]| HoursSpec {
            holidays: holidays.iter().map(|d| holiday(d, None)).collect(),
            closures: closures.iter().map(|(from, to)| closure(from, to, None)).collect(),
            ..spec(NY, "")
        };
        let closed = |from, to| with(&[], &[(from, to)]);
        let cases = [
            (spec("Mars/Olympus", ""), r#"time_zone: unknown IANA time zone "Mars/Olympus""#),
            (spec(NY, "mon 08:00-12:00 13:00-1700"), r#"weekly.mon[1]: "13:00-1700" is not HH:MM-HH:MM"#),
            (spec(NY, "tue 9:00-17:00"), r#"weekly.tue[0]: "9:00-17:00" is not HH:MM-HH:MM"#),
            (spec(NY, "wed 08:00"), r#"weekly.wed[0]: "08:00" is not HH:MM-HH:MM"#),
            (spec(NY, "thu 25:00-26:00"), r#"weekly.thu[0]: "25:00-26:00" has a time outside 00:00-24:00"#),
            (spec(NY, "fri 08:60-09:00"), r#"weekly.fri[0]: "08:60-09:00" has a time outside 00:00-24:00"#),
            (spec(NY, "sat 24:00-02:00"), r#"weekly.sat[0]: "24:00-02:00" cannot start at 24:00"#),
            (spec(NY, "sun 09:00-09:00"), r#"weekly.sun[0]: "09:00-09:00" is empty"#),
            (spec(NY, "mon 08:00-12:00 11:00-13:00"), r#"weekly.mon[1]: "11:00-13:00" overlaps "08:00-12:00""#),
            (spec(NY, "sun 23:00-23:30 22:00-06:00"), r#"weekly.sun[0]: "23:00-23:30" overlaps "22:00-06:00""#),
            (with(&["2026-12-25", "2026-02-30"], &[]),
                r#"holidays[1].date: "2026-02-30" is not YYYY-MM-DD or --MM-DD"#),
            (with(&["2026-12-25T00:00"], &[]),
                r#"holidays[0].date: "2026-12-25T00:00" is not YYYY-MM-DD or --MM-DD"#),
            (with(&["--02-30"], &[]), r#"holidays[0].date: "--02-30" is not YYYY-MM-DD or --MM-DD"#),
            (with(&["--1225"], &[]), r#"holidays[0].date: "--1225" is not YYYY-MM-DD or --MM-DD"#),
            (closed("2026-12-24", "2026-12-27T08:00"), r#"closures[0].from: "2026-12-24" is not YYYY-MM-DDTHH:MM"#),
            (closed("2026-12-24T12:00", "2026-12-27 08:00"),
                r#"closures[0].to: "2026-12-27 08:00" is not YYYY-MM-DDTHH:MM"#),
            (closed("2026-12-24T12:00", "2026-12-27T24:00"),
                r#"closures[0].to: "2026-12-27T24:00" is not YYYY-MM-DDTHH:MM"#),
            (closed("2026-12-27T08:00", "2026-12-24T12:00"), "closures[0]: to is before from"),
            (closed("2026-12-24T12:00", "2026-12-24T12:00"), "closures[0]: from and to are equal"),
        ];
        for (hours, want) in cases {
            let err = Schedule::from_spec(&hours).expect_err(want);
            assert_eq!(err.to_string(), want);
            assert!(want.starts_with(&format!("{}: ", err.field())), "{want} names {}", err.field());
        }
    }

    #[test]
    #[rustfmt::skip]
    fn rule_errors_name_their_field() {
        let with = |holidays: Vec<HolidaySpec>| HoursSpec { holidays, ..spec(NY, "") };
        let ok = holiday("2026-12-25", None);
        let cases = [
            (vec![ok.clone(), ok.clone(), rule("4th thurs nov", None)],
                r#"holidays[2].rule: "4th thurs nov": "thurs" is not a weekday (mon..sun)"#),
            (vec![rule("6th mon may", None)], r#"holidays[0].rule: "6th mon may": "6th" is not 1st, 2nd, 3rd, 4th, 5th or last"#),
            (vec![rule("last mon mai", None)], r#"holidays[0].rule: "last mon mai": "mai" is not a month (jan..dec)"#),
            (vec![rule("thanksgiving", None)],
                r#"holidays[0].rule: "thanksgiving" is not NTH WEEKDAY MONTH (such as "4th thu nov") or easter[+-N]"#),
            (vec![rule("easter*2", None)], r#"holidays[0].rule: "easter*2" is not easter, easter+N or easter-N"#),
            (vec![rule("easter+999", None)],
                r#"holidays[0].rule: "easter+999": N must be a whole number of days from 0 to 200"#),
            (vec![rule("easter+-1", None)],
                r#"holidays[0].rule: "easter+-1": N must be a whole number of days from 0 to 200"#),
            (vec![HolidaySpec::default()], "holidays[0]: needs a date or a rule"),
            (vec![HolidaySpec { date: "--12-25".into(), rule: Some("easter".into()), ..HolidaySpec::default() }],
                "holidays[0]: has both a date and a rule; keep one"),
        ];
        for (holidays, want) in cases {
            let err = Schedule::from_spec(&with(holidays)).expect_err(want);
            assert_eq!(err.to_string(), want);
            assert!(want.starts_with(&format!("{}: ", err.field())), "{want} names {}", err.field());
        }
    }

    #[test]
    #[rustfmt::skip]
    fn recurring_rules_fall_on_the_right_dates() {
        let cases = [
            // (rule, year, expected date or "none")
            ("4th thu nov", 2026, "2026-11-26"),
            ("fourth Thursday November", 2027, "2027-11-25"),
            ("last mon may", 2026, "2026-05-25"),
            ("last monday may", 2027, "2027-05-31"),
            ("1st mon sep", 2026, "2026-09-07"),
            ("3rd mon jan", 2026, "2026-01-19"),
            ("5th fri jan", 2027, "2027-01-29"),
            ("5th fri feb", 2026, "none"),
            // Western Easter: 2026-04-05, 2027-03-28, 2038-04-25 (the latest possible).
            ("easter", 2026, "2026-04-05"),
            ("easter-2", 2026, "2026-04-03"),
            ("Easter + 1", 2027, "2027-03-29"),
            ("easter+49", 2038, "2038-06-13"),
            ("easter-200", 2026, "2025-09-17"),
        ];
        for (text, year, want) in cases {
            let r = parse_rule(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let got = r.date_in(year).map_or("none".to_owned(), |d| d.to_string());
            assert_eq!(got, want, "{text} in {year}");
            if let Some(d) = r.date_in(year) {
                assert!(r.falls_on(d), "{text} falls on {d}");
                // The written-out rule reads back as the same rule.
                assert_eq!(parse_rule(&r.to_rule_text()), Ok(r), "{text}");
            }
        }
        let feb29 = parse_yearly("--02-29").unwrap();
        assert_eq!(feb29.date_in(2028).map(|d| d.to_string()).as_deref(), Some("2028-02-29"));
        assert_eq!(feb29.date_in(2027), None);
        // Outside computus's 1583-9999, Easter simply does not happen.
        assert_eq!(Recurrence::Easter { offset: 0 }.date_in(1200), None);
    }

    #[test]
    #[rustfmt::skip]
    fn recurring_holidays_close_their_dates_every_year() {
        let mut hours = spec(NY, "mon 08:00-17:00; tue 08:00-17:00; wed 08:00-17:00; thu 08:00-17:00; fri 08:00-17:00");
        hours.holidays = vec![
            holiday("--12-25", Some("Christmas Day")),
            rule("4th thu nov", Some("Thanksgiving")),
            rule("easter-2", Some("Good Friday")),
            rule("easter+1", Some("Easter Monday")),
            // A dated holiday on a recurring one's date keeps its own name.
            holiday("2026-12-25", Some("Christmas 2026")),
        ];
        check(&hours, &[
            ("2026-11-26T10:00-05:00", "holiday \"Thanksgiving\" until 2026-11-27T08:00-05:00"),
            ("2026-11-25T16:00-05:00", "open until 2026-11-25T17:00-05:00"),
            ("2026-11-25T18:00-05:00", "outside hours until 2026-11-27T08:00-05:00"),
            ("2026-12-25T10:00-05:00", "holiday \"Christmas 2026\" until 2026-12-28T08:00-05:00"),
            ("2030-12-25T10:00-05:00", "holiday \"Christmas Day\" until 2030-12-26T08:00-05:00"),
            // Good Friday 2027 is 26 March and Easter Monday 29 March: closed across the weekend.
            ("2027-03-25T18:00-04:00", "outside hours until 2027-03-30T08:00-04:00"),
            ("2027-03-29T09:00-04:00", "holiday \"Easter Monday\" until 2027-03-30T08:00-04:00"),
            // Thanksgiving 2027 is 25 November.
            ("2027-11-24T17:30-05:00", "outside hours until 2027-11-26T08:00-05:00"),
        ]);
    }

    #[test]
    fn a_calendar_whose_dates_are_all_past_is_noticed() {
        let now = ts("2026-06-01T12:00Z");
        let ended = |holidays: Vec<HolidaySpec>, closures: Vec<ClosureSpec>| {
            let hours = HoursSpec { holidays, closures, ..spec(NY, "") };
            Schedule::from_spec(&hours).unwrap().calendar_ended_before(now).map(|d| d.to_string())
        };
        let past = || holiday("2025-12-25", None);
        let past_closure = || closure("2026-01-02T08:00", "2026-01-03T08:00", None);
        assert_eq!(ended(vec![past()], vec![past_closure()]), Some("2026-01-03".to_owned()));
        assert_eq!(ended(vec![past()], vec![]), Some("2025-12-25".to_owned()));
        // Nothing dated at all, one entry still ahead (or running), or a recurring one: no warning.
        assert_eq!(ended(vec![], vec![]), None);
        assert_eq!(ended(vec![past(), holiday("2026-12-25", None)], vec![]), None);
        assert_eq!(ended(vec![holiday("2026-06-01", None)], vec![]), None);
        assert_eq!(ended(vec![past()], vec![closure("2026-05-30T08:00", "2026-06-01T09:00", None)]), None);
        assert_eq!(ended(vec![past(), holiday("--12-25", None)], vec![]), None);
        assert_eq!(ended(vec![past(), rule("easter", None)], vec![past_closure()]), None);
        let hours = HoursSpec { holidays: vec![past()], ..spec(NY, "") };
        let warning = Schedule::from_spec(&hours).unwrap().past_calendar_warning(now).unwrap();
        assert!(warning.contains("the last on 2025-12-25"), "{warning}");
    }

    #[test]
    fn parses_the_documented_toml() {
        let text = r#"
            time_zone = "America/New_York"
            weekly = { mon = ["08:00-12:00", "13:00-17:00"], fri = ["22:00-06:00"], sat = ["00:00-24:00"] }
            holidays = [
                { date = "2026-12-24", name = "Christmas Eve" },
                { date = "--12-25", name = "Christmas Day", message = "We are closed for Christmas." },
                { rule = "4th thu nov", name = "Thanksgiving" },
                { rule = "easter+1", name = "Easter Monday" },
            ]
            closures = [
                { from = "2026-12-24T12:00", to = "2026-12-27T08:00", reason = "Dr Ruiz away", message = "Closed." },
            ]
        "#;
        let hours: HoursSpec = toml::from_str(text).unwrap();
        assert_eq!(hours.weekly.mon.len(), 2);
        assert_eq!(hours.holidays[1].name.as_deref(), Some("Christmas Day"));
        assert_eq!(hours.holidays[2].rule.as_deref(), Some("4th thu nov"));
        Schedule::from_spec(&hours).unwrap();
        // What is stored (JSON) reads back the same, and leaves out what was not given.
        let json = serde_json::to_string(&hours).unwrap();
        assert!(!json.contains("null") && !json.contains(r#""date":"""#), "{json}");
        assert_eq!(serde_json::from_str::<HoursSpec>(&json).unwrap(), hours);
        assert!(toml::from_str::<HoursSpec>("time_zone = \"UTC\"\nweekdays = {}").is_err());
    }

    #[test]
    fn the_example_configs_hours_are_valid() {
        let config: toml::Value = toml::from_str(include_str!("../examples/call-router.toml")).unwrap();
        let locations = config["locations"].as_array().unwrap();
        let mut rules = 0;
        for l in locations {
            let hours: HoursSpec = l["hours"].clone().try_into().unwrap();
            rules += hours.holidays.iter().filter(|h| h.is_recurring()).count();
            Schedule::from_spec(&hours).unwrap_or_else(|e| panic!("{}: {e}", l["name"]));
        }
        assert!(rules >= 2, "the example shows recurring holidays");
    }

    /// A random range on the quarter hour, so that ranges often meet each other and the DST hours.
    fn range() -> impl Strategy<Value = String> {
        let hhmm = |q: u16| format!("{:02}:{:02}", q / 4, q % 4 * 15);
        (0u16..=96, 0u16..=96).prop_map(move |(s, e)| format!("{}-{}", hhmm(s), hhmm(e)))
    }

    fn arbitrary_spec() -> impl Strategy<Value = HoursSpec> {
        // Lord Howe shifts by half an hour, and Santiago changes at midnight.
        const ZONES: &[&str] = &[NY, LONDON, "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata", "UTC"];
        let day = || proptest::collection::vec(range(), 0..3);
        let date = || (0i32..420).prop_map(|n| add_days(Date::constant(2026, 1, 1), n).unwrap());
        let days = [day(), day(), day(), day(), day(), day(), day()];
        let closures = proptest::collection::vec((date(), 0i8..24, 1i64..6000), 0..3);
        (proptest::sample::select(ZONES), days, proptest::collection::vec(date(), 0..4), closures).prop_map(
            |(tz, days, holidays, closures)| {
                let mut hours = spec(tz, "");
                for (name, ranges) in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].into_iter().zip(days) {
                    *day_mut(&mut hours.weekly, name) = ranges;
                }
                hours.holidays = holidays.iter().map(|d| holiday(&d.to_string(), None)).collect();
                let civil = |dt: DateTime| dt.strftime("%Y-%m-%dT%H:%M").to_string();
                for (d, hour, minutes) in closures {
                    let from = d.at(hour, 30, 0, 0);
                    let to = from.checked_add(minutes.minutes()).unwrap();
                    hours.closures.push(closure(&civil(from), &civil(to), None));
                }
                hours
            },
        )
    }

    fn arbitrary_recurrence() -> impl Strategy<Value = Recurrence> {
        let weekday = proptest::sample::select(WEEKDAYS.map(|(_, w)| w).to_vec());
        prop_oneof![
            (1i8..=12, 1i8..=31)
                .prop_filter("a day of the month", |(m, d)| Date::new(2024, *m, *d).is_ok())
                .prop_map(|(month, day)| Recurrence::Yearly { month, day }),
            (prop_oneof![1i8..=5, Just(-1)], weekday, 1i8..=12)
                .prop_map(|(nth, weekday, month)| Recurrence::NthWeekday { nth, weekday, month }),
            (-EASTER_MAX_OFFSET..=EASTER_MAX_OFFSET).prop_map(|offset| Recurrence::Easter { offset }),
        ]
    }

    fn rule_spec(r: Recurrence) -> HolidaySpec {
        let text = r.to_rule_text();
        if text.starts_with("--") { holiday(&text, None) } else { rule(&text, None) }
    }

    /// The date of a recurrence in `year`, by counting days rather than by jiff's weekday helpers.
    fn expected_date(r: Recurrence, year: i16) -> Option<Date> {
        match r {
            Recurrence::Yearly { month, day } => Date::new(year, month, day).ok(),
            Recurrence::NthWeekday { nth, weekday, month } => {
                let days: Vec<Date> = (1..=31)
                    .filter_map(|d| Date::new(year, month, d).ok())
                    .filter(|d| d.weekday() == weekday)
                    .collect();
                if nth == -1 { days.last().copied() } else { days.get(nth as usize - 1).copied() }
            }
            Recurrence::Easter { offset } => {
                let e = computus::gregorian(i32::from(year)).ok()?;
                add_days(Date::new(year, e.month as i8, e.day as i8).ok()?, i32::from(offset))
            }
        }
    }

    /// Drops the weekly ranges that random generation made overlapping or empty, one error at a
    /// time, so that most random specs get checked rather than refused.
    fn repaired(hours: HoursSpec) -> Option<Schedule> {
        Schedule::from_spec(&repaired_spec(hours)?).ok()
    }

    fn repaired_spec(mut hours: HoursSpec) -> Option<HoursSpec> {
        loop {
            let err = match Schedule::from_spec(&hours) {
                Ok(_) => return Some(hours),
                Err(err) => err,
            };
            let (day, index) = err.field().strip_prefix("weekly.")?.split_once('[')?;
            let index: usize = index.strip_suffix(']')?.parse().ok()?;
            day_mut(&mut hours.weekly, day).remove(index);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn status_agrees_with_its_own_boundaries(hours in arbitrary_spec(), second in 1_764_000_000i64..1_802_000_000) {
            let Some(s) = repaired(hours) else { return Ok(()) };
            let now = Timestamp::from_second(second).unwrap();
            match s.status_at(now) {
                Status::Closed { opens_at: Some(opens_at), .. } => {
                    prop_assert!(opens_at.timestamp() > now);
                    prop_assert!(s.is_open(opens_at.timestamp()), "closed until {opens_at}, but closed then too");
                }
                Status::Closed { opens_at: None, .. } => {}
                Status::Open { closes_at } => {
                    prop_assert!(closes_at.timestamp() > now);
                    let hours = closes_at.timestamp().duration_since(now).as_hours();
                    let at_horizon = hours >= 24 * i64::from(HORIZON_DAYS);
                    let closes = !s.is_open(closes_at.timestamp());
                    prop_assert!(at_horizon || closes, "open until {closes_at}, but open then too");
                }
            }
        }

        /// A recurring holiday answers exactly as the dated holidays it stands for, written out for
        /// every year the instants and the search horizon can reach.
        #[test]
        fn a_recurring_holiday_is_its_dated_holidays(
            hours in arbitrary_spec(),
            recurrence in arbitrary_recurrence(),
            seconds in proptest::collection::vec(1_764_000_000i64..1_802_000_000, 1..6),
        ) {
            let Some(hours) = repaired_spec(hours) else { return Ok(()) };
            let mut recurring = hours.clone();
            recurring.holidays.push(rule_spec(recurrence));
            // Written out independently of `date_in` for the rules that are not Easter's.
            let mut dated = hours;
            for year in 2024..=2029 {
                if let Some(d) = expected_date(recurrence, year) {
                    dated.holidays.push(holiday(&d.to_string(), None));
                }
            }
            let (recurring, dated) = (Schedule::from_spec(&recurring), Schedule::from_spec(&dated));
            let (Ok(recurring), Ok(dated)) = (recurring, dated) else {
                return Err(TestCaseError::fail("a valid spec with one more holiday is refused"));
            };
            for second in seconds {
                let now = Timestamp::from_second(second).unwrap();
                prop_assert_eq!(show(&recurring.status_at(now)), show(&dated.status_at(now)), "at {}", now);
            }
        }

        #[test]
        fn any_text_is_refused_without_panicking(text in "\\PC{0,14}", tz in "[A-Za-z/_]{0,20}") {
            let mut hours = spec(&tz, "");
            hours.weekly.mon = vec![text.clone()];
            hours.holidays = vec![holiday(&text, None)];
            hours.closures = vec![closure(&text, &text, None)];
            let _ = Schedule::from_spec(&hours);
            hours.holidays = vec![rule(&text, None), rule(&format!("easter{text}"), None)];
            let _ = Schedule::from_spec(&hours);
            let _ = parse_rule(&format!("1st {text}"));
        }

        #[test]
        fn extreme_instants_do_not_panic(second in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second()) {
            let s = Schedule::from_spec(&weekly_ny()).unwrap();
            let _ = s.status_at(Timestamp::from_second(second).unwrap());
            let _ = s.status_at(Timestamp::MIN);
            let _ = s.status_at(Timestamp::MAX);
        }
    }
}
