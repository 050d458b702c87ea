//! Holidays and closures from an iCalendar file, for `locations holidays --ical` (pure: the file
//! is read by the caller). `call_router_ical` parses the file; this module turns its events
//! into the location's [`HoursSpec`] entries, in the location's time zone:
//!
//! - an all-day event of one day is a holiday on that date, named by its `SUMMARY`;
//! - an all-day event of several days is a closure from the first day's 00:00 to the day after
//!   the last, with the `SUMMARY` as its reason;
//! - a timed event is a closure between its start and end (rounded out to whole minutes),
//!   converted from UTC or its `TZID` to the location's zone; a floating time is already local;
//! - a yearly repeat of a one-day all-day event is a recurring holiday (`--MM-DD` or a rule
//!   such as `4th thu nov`).
//!
//! Whatever cannot be said that way is left out with a note (see `call_router_ical`).

use ical::{Calendar, Time, When, Yearly};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::hours::{ClosureSpec, HolidaySpec, HoursSpec, Recurrence};

/// The longest name or reason kept from a `SUMMARY`, in characters.
const MAX_NAME_CHARS: usize = 100;

/// What a calendar adds to a location's hours, and notes on what it left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Imported {
    pub holidays: Vec<HolidaySpec>,
    pub closures: Vec<ClosureSpec>,
    pub notes: Vec<String>,
}

/// Turns a parsed calendar into hours entries for a location in `tz`.
pub fn from_calendar(calendar: &Calendar, tz: &TimeZone) -> Imported {
    let mut out = Imported::default();
    for skipped in &calendar.skipped {
        out.notes.push(format!("line {}{}: skipped: {}", skipped.line, quoted(&skipped.summary), skipped.why));
    }
    for event in &calendar.events {
        let name = event.summary.as_ref().map(|s| s.chars().take(MAX_NAME_CHARS).collect::<String>());
        match &event.when {
            When::Yearly(yearly) => {
                let recurrence = match *yearly {
                    Yearly::Date { month, day } => Recurrence::Yearly { month, day },
                    Yearly::NthWeekday { nth, weekday, month } => Recurrence::NthWeekday { nth, weekday, month },
                };
                let text = recurrence.to_rule_text();
                let holiday = if text.starts_with("--") {
                    HolidaySpec { date: text, name, ..HolidaySpec::default() }
                } else {
                    HolidaySpec { rule: Some(text), name, ..HolidaySpec::default() }
                };
                out.holidays.push(holiday);
            }
            When::Days { first, last } if first == last => {
                out.holidays.push(HolidaySpec { date: first.to_string(), name, ..HolidaySpec::default() });
            }
            When::Days { first, last } => match last.tomorrow() {
                Ok(after) => out.closures.push(ClosureSpec {
                    from: civil(first.at(0, 0, 0, 0)),
                    to: civil(after.at(0, 0, 0, 0)),
                    reason: name,
                    message: None,
                }),
                Err(_) => out.notes.push(format!("line {}: skipped: ends outside the calendar", event.line)),
            },
            When::Timed { start, end } => {
                let (from, to) =
                    (local(start, tz, event.line, &mut out.notes), local(end, tz, event.line, &mut out.notes));
                let (Some(from), Some(to)) = (from, to) else {
                    out.notes.push(format!("line {}: skipped: cannot be placed in time", event.line));
                    continue;
                };
                match (floor_minute(from), ceil_minute(to)) {
                    (from, Some(to)) if from < to => {
                        out.closures.push(ClosureSpec { from: civil(from), to: civil(to), reason: name, message: None })
                    }
                    _ => out.notes.push(format!(
                        "line {}{}: skipped: ends at or before its start in the location's time zone",
                        event.line,
                        quoted(&event.summary)
                    )),
                }
            }
        }
    }
    out
}

/// Adds the imported entries that the hours do not have yet (a holiday on the same date or
/// rule, a closure with the same ends); returns how many holidays and closures were added.
pub fn merge(hours: &mut HoursSpec, imported: &Imported) -> (usize, usize) {
    let mut added = (0, 0);
    for h in &imported.holidays {
        if !hours.holidays.iter().any(|old| old.date == h.date && old.rule == h.rule) {
            hours.holidays.push(h.clone());
            added.0 += 1;
        }
    }
    for c in &imported.closures {
        if !hours.closures.iter().any(|old| old.from == c.from && old.to == c.to) {
            hours.closures.push(c.clone());
            added.1 += 1;
        }
    }
    added
}

fn quoted(summary: &Option<String>) -> String {
    summary.as_ref().map_or(String::new(), |s| format!(" ({s:?})"))
}

fn civil(dt: DateTime) -> String {
    dt.strftime("%Y-%m-%dT%H:%M").to_string()
}

fn floor_minute(dt: DateTime) -> DateTime {
    dt.date().at(dt.hour(), dt.minute(), 0, 0)
}

fn ceil_minute(dt: DateTime) -> Option<DateTime> {
    let floor = floor_minute(dt);
    if floor == dt { Some(floor) } else { floor.checked_add(jiff::ToSpan::minute(1)).ok() }
}

/// A time from the file as the location's civil time. An unknown `TZID` (Outlook writes
/// Windows names such as "Eastern Standard Time") is read as the location's own zone, with a
/// note; a Mozilla-style `/mozilla.org/…/Europe/London` is looked up by its IANA tail.
fn local(time: &Time, tz: &TimeZone, line: usize, notes: &mut Vec<String>) -> Option<DateTime> {
    let (dt, zone) = match time {
        Time::Floating(dt) => return Some(*dt),
        Time::Utc(dt) => (*dt, TimeZone::UTC),
        Time::Zoned { time, tzid } => {
            let known = std::iter::once(tzid.as_str())
                .chain(tzid.match_indices('/').map(|(i, _)| &tzid[i + 1..]))
                .find_map(|name| TimeZone::get(name).ok());
            match known {
                Some(zone) => (*time, zone),
                None => {
                    let note = format!("line {line}: time zone {tzid:?} is unknown; its times were read as local");
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                    return Some(*time);
                }
            }
        }
    };
    let instant = zone.to_ambiguous_timestamp(dt).compatible().ok()?;
    Some(tz.to_datetime(instant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hours::{Schedule, Status};

    fn import(events: &str, tz: &str) -> Imported {
        let text = format!("BEGIN:VCALENDAR\n{events}\nEND:VCALENDAR\n");
        let calendar = ical::parse(&text).unwrap();
        from_calendar(&calendar, &TimeZone::get(tz).unwrap())
    }

    fn holiday(date: &str, rule: Option<&str>, name: &str) -> HolidaySpec {
        HolidaySpec { date: date.into(), rule: rule.map(Into::into), name: Some(name.into()), message: None }
    }

    #[test]
    fn events_become_holidays_closures_and_rules() {
        let got = import(
            "BEGIN:VEVENT\nSUMMARY:Christmas\nDTSTART;VALUE=DATE:20201225\nRRULE:FREQ=YEARLY\nEND:VEVENT\n\
             BEGIN:VEVENT\nSUMMARY:Thanksgiving\nDTSTART;VALUE=DATE:20201126\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH\n\
             END:VEVENT\n\
             BEGIN:VEVENT\nSUMMARY:Founders Day\nDTSTART;VALUE=DATE:20260601\nEND:VEVENT\n\
             BEGIN:VEVENT\nSUMMARY:Summer break\nDTSTART;VALUE=DATE:20260803\nDTEND;VALUE=DATE:20260815\nEND:VEVENT\n\
             BEGIN:VEVENT\nSUMMARY:Training\nDTSTART:20260310T140000Z\nDTEND:20260310T160030Z\nEND:VEVENT\n\
             BEGIN:VEVENT\nSUMMARY:Team lunch\nDTSTART;TZID=Europe/London:20260311T120000\n\
             DTEND;TZID=Europe/London:20260311T130000\nEND:VEVENT\n\
             BEGIN:VEVENT\nSUMMARY:Inventory\nDTSTART;TZID=Eastern Standard Time:20260312T080000\n\
             DURATION:PT1H\nEND:VEVENT\n\
             BEGIN:VEVENT\nSUMMARY:Weekly meeting\nDTSTART:20260302T090000\nDTEND:20260302T100000\n\
             RRULE:FREQ=WEEKLY\nEND:VEVENT",
            "America/New_York",
        );
        assert_eq!(
            got.holidays,
            [
                holiday("--12-25", None, "Christmas"),
                holiday("", Some("4th thu nov"), "Thanksgiving"),
                holiday("2026-06-01", None, "Founders Day"),
            ]
        );
        let closure = |from: &str, to: &str, reason: &str| ClosureSpec {
            from: from.into(),
            to: to.into(),
            reason: Some(reason.into()),
            message: None,
        };
        assert_eq!(
            got.closures,
            [
                closure("2026-08-03T00:00", "2026-08-15T00:00", "Summer break"),
                // 14:00Z is 10:00 EDT (after the 8 March change); 16:00:30 rounds out to 12:01.
                closure("2026-03-10T10:00", "2026-03-10T12:01", "Training"),
                // London is still on GMT: 12:00 there is 08:00 in New York.
                closure("2026-03-11T08:00", "2026-03-11T09:00", "Team lunch"),
                closure("2026-03-12T08:00", "2026-03-12T09:00", "Inventory"),
            ]
        );
        assert_eq!(got.notes.len(), 2, "{:?}", got.notes);
        assert!(
            got.notes[0].contains("Weekly meeting") && got.notes[0].contains("repeating timed event"),
            "{:?}",
            got.notes
        );
        assert!(got.notes[1].contains("\"Eastern Standard Time\" is unknown"), "{:?}", got.notes);

        // What was imported is a valid spec, and its rules close the right days.
        let mut hours = HoursSpec { time_zone: "America/New_York".into(), ..HoursSpec::default() };
        assert_eq!(merge(&mut hours, &got), (3, 4));
        let schedule = Schedule::from_spec(&hours).unwrap();
        let closed_for = |at: &str| match schedule.status_at(at.parse().unwrap()) {
            Status::Closed { reason: crate::hours::ClosedReason::Holiday { name, .. }, .. } => name,
            other => panic!("{at}: {other:?}"),
        };
        assert_eq!(closed_for("2027-11-25T12:00-05:00").as_deref(), Some("Thanksgiving"));
        assert_eq!(closed_for("2031-12-25T12:00-05:00").as_deref(), Some("Christmas"));
    }

    #[test]
    fn merging_twice_adds_nothing_new() {
        let got = import(
            "BEGIN:VEVENT\nSUMMARY:A\nDTSTART;VALUE=DATE:20260601\nEND:VEVENT\n\
             BEGIN:VEVENT\nSUMMARY:B\nDTSTART:20260310T140000\nDTEND:20260310T150000\nEND:VEVENT",
            "UTC",
        );
        let mut hours = HoursSpec { time_zone: "UTC".into(), ..HoursSpec::default() };
        // An existing holiday on the same date keeps its own name.
        hours.holidays.push(HolidaySpec { date: "2026-06-01".into(), ..HolidaySpec::default() });
        assert_eq!(merge(&mut hours, &got), (0, 1));
        assert_eq!(merge(&mut hours, &got), (0, 0));
        assert_eq!(hours.holidays.len(), 1);
        assert_eq!(hours.closures.len(), 1);
    }
}
