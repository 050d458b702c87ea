//! Reads the events of an iCalendar file (RFC 5545) that a business's closed days can be made
//! of: all-day events, timed events, and yearly repeats that a fixed date or an "nth weekday of
//! a month" can say.
//!
//! The file is untrusted (a file someone exported, or a URL), so [`parse`] never panics, and a
//! file it cannot read is refused with the line number of the problem. Events it can read but
//! that mean something a business calendar here cannot say (a weekly repeat, a repeat with an
//! end, an exception to a repeat) are not guessed at: each is listed in [`Calendar::skipped`]
//! with its line and the reason, for the person importing to see.
//!
//! What is read of a `VEVENT`: `DTSTART` (required), `DTEND` or `DURATION`, `SUMMARY`,
//! `RRULE`, `STATUS`, `RECURRENCE-ID`, `EXDATE` and `RDATE`. Everything else, and every other
//! component (`VTIMEZONE`, `VTODO`, `VALARM`…), is ignored. Times keep the form they were
//! written in ([`Time`]); placing them in a time zone is the caller's business.

use jiff::civil::{Date, DateTime, Weekday};

/// The most events a file may hold; a business calendar has a few dozen.
pub const MAX_EVENTS: usize = 10_000;

/// The deepest nesting of `BEGIN` blocks accepted (a calendar, an event, an alarm: 3).
const MAX_DEPTH: usize = 8;

/// A file that could not be read, and the (1-based) line where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError { line, message: message.into() }
}

/// The events read from a file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Calendar {
    pub events: Vec<Event>,
    pub skipped: Vec<Skipped>,
}

/// An event that was read but not used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The line of its `BEGIN:VEVENT`.
    pub line: usize,
    pub summary: Option<String>,
    pub why: String,
}

/// One event, as a span of dates, a span of time, or a yearly repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The line of its `BEGIN:VEVENT`.
    pub line: usize,
    /// `SUMMARY`, unescaped, with line breaks made spaces.
    pub summary: Option<String>,
    pub when: When,
}

#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// All-day: the dates from `first` to `last`, both included.
    Days { first: Date, last: Date },
    /// From `start` until `end` (exclusive); `end` is after `start` when both are in one form.
    Timed { start: Time, end: Time },
    /// An all-day event that repeats every year.
    Yearly(Yearly),
}

/// A yearly repeat of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Yearly {
    /// The same month and day every year.
    Date { month: i8, day: i8 },
    /// The `nth` (1 to 5, or -1 for the last) `weekday` of `month`.
    NthWeekday { nth: i8, weekday: Weekday, month: i8 },
}

/// A date-time as the file wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum Time {
    /// No zone: the reader's local time.
    Floating(DateTime),
    /// A `Z` suffix: UTC.
    Utc(DateTime),
    /// A `TZID` parameter, which may or may not be an IANA name.
    Zoned { time: DateTime, tzid: String },
}

/// One content line after unfolding: `NAME;PARAM=VALUE:VALUE`.
#[derive(Debug)]
struct Property<'a> {
    line: usize,
    name: String,
    params: Vec<(String, String)>,
    value: &'a str,
}

impl Property<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads a calendar. Errors name the line; see the module docs for what is read.
pub fn parse(text: &str) -> Result<Calendar, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = unfold(text)?;
    let mut calendar = Calendar::default();
    // (component, line of its BEGIN)
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut event: Vec<Property> = Vec::new();
    let mut seen_calendar = false;
    for (line, content) in &lines {
        let (line, content) = (*line, content.as_str());
        if content.trim().is_empty() {
            continue;
        }
        if !seen_calendar {
            if !content.trim().eq_ignore_ascii_case("BEGIN:VCALENDAR") {
                return Err(error(line, "not an iCalendar file: it must start with BEGIN:VCALENDAR"));
            }
            seen_calendar = true;
        }
        let prop = property(line, content)?;
        match prop.name.as_str() {
            "BEGIN" => {
                let component = prop.value.trim().to_ascii_uppercase();
                if component.is_empty() {
                    return Err(error(line, "BEGIN without a component name"));
                }
                if stack.is_empty() && component != "VCALENDAR" {
                    return Err(error(line, format!("BEGIN:{component} outside BEGIN:VCALENDAR")));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(error(line, format!("components nested more than {MAX_DEPTH} deep")));
                }
                if component == "VEVENT" {
                    if stack.iter().any(|(c, _)| c == "VEVENT") {
                        return Err(error(line, "BEGIN:VEVENT inside another VEVENT"));
                    }
                    event.clear();
                }
                stack.push((component, line));
            }
            "END" => {
                let component = prop.value.trim().to_ascii_uppercase();
                let Some((open, begin)) = stack.pop() else {
                    return Err(error(line, format!("END:{component} without a BEGIN")));
                };
                if open != component {
                    return Err(error(line, format!("END:{component} where END:{open} was expected")));
                }
                if component == "VEVENT" {
                    if calendar.events.len() + calendar.skipped.len() >= MAX_EVENTS {
                        return Err(error(line, format!("more than {MAX_EVENTS} events")));
                    }
                    match read_event(begin, &event)? {
                        Ok(e) => calendar.events.push(e),
                        Err(s) => calendar.skipped.push(s),
                    }
                    event.clear();
                }
            }
            _ => {
                // Only the event's own properties, not those of an alarm inside it.
                if stack.last().is_some_and(|(c, _)| c == "VEVENT") {
                    event.push(prop);
                }
            }
        }
    }
    if let Some((component, line)) = stack.last() {
        return Err(error(*line, format!("BEGIN:{component} is never closed")));
    }
    if !seen_calendar {
        return Err(error(1, "not an iCalendar file: it is empty"));
    }
    Ok(calendar)
}

/// Joins folded lines (a line starting with a space or tab continues the one before) and
/// numbers each logical line by the physical line it starts on.
fn unfold(text: &str) -> Result<Vec<(usize, String)>, ParseError> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix([' ', '\t']) {
            match out.last_mut() {
                Some((_, last)) => last.push_str(rest),
                None => return Err(error(i + 1, "a continuation line with nothing before it")),
            }
        } else {
            out.push((i + 1, raw.to_owned()));
        }
    }
    Ok(out)
}

/// Splits a content line into its name, parameters and value.
fn property(line: usize, content: &str) -> Result<Property<'_>, ParseError> {
    let name_end = content.find([';', ':']).ok_or_else(|| error(line, "a line with no ':' before its value"))?;
    let name = &content[..name_end];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(error(line, format!("{:?} is not a property name", truncate(name))));
    }
    let mut params = Vec::new();
    let mut rest = &content[name_end..];
    while let Some(after) = rest.strip_prefix(';') {
        let eq = after.find('=').ok_or_else(|| error(line, "a parameter with no '='"))?;
        let pname = after[..eq].to_ascii_uppercase();
        if pname.is_empty() || !pname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(error(line, format!("{:?} is not a parameter name", truncate(&pname))));
        }
        let mut value = &after[eq + 1..];
        let mut pvalue = String::new();
        // A value is a comma-separated list of plain or "quoted" texts.
        loop {
            if let Some(quoted) = value.strip_prefix('"') {
                let close = quoted.find('"').ok_or_else(|| error(line, "a quoted parameter value is not closed"))?;
                pvalue.push_str(&quoted[..close]);
                value = &quoted[close + 1..];
            } else {
                let end = value.find([';', ':', ',']).unwrap_or(value.len());
                pvalue.push_str(&value[..end]);
                value = &value[end..];
            }
            match value.strip_prefix(',') {
                Some(more) => {
                    pvalue.push(',');
                    value = more;
                }
                None => break,
            }
        }
        params.push((pname, pvalue));
        rest = value;
    }
    let value = rest.strip_prefix(':').ok_or_else(|| error(line, "a line with no ':' before its value"))?;
    Ok(Property { line, name: name.to_ascii_uppercase(), params, value })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A moment as written: a date (all day) or a date-time.
#[derive(Debug, Clone, PartialEq)]
enum Moment {
    Day(Date),
    At(Time),
}

/// Turns an event's properties into an [`Event`], a [`Skipped`], or an error for a value that
/// does not parse.
fn read_event(line: usize, props: &[Property]) -> Result<Result<Event, Skipped>, ParseError> {
    let get = |name: &str| props.iter().find(|p| p.name == name);
    let summary = get("SUMMARY").map(|p| unescape(p.value)).filter(|s| !s.is_empty());
    let skip = |why: &str| Ok(Err(Skipped { line, summary: summary.clone(), why: why.to_owned() }));
    if get("STATUS").is_some_and(|p| p.value.trim().eq_ignore_ascii_case("CANCELLED")) {
        return skip("cancelled");
    }
    if get("RECURRENCE-ID").is_some() {
        return skip("changes one occurrence of a repeating event (RECURRENCE-ID), which is not supported");
    }
    let Some(dtstart) = get("DTSTART") else {
        return skip("no DTSTART");
    };
    let start = moment(dtstart)?;
    let end = match (get("DTEND"), get("DURATION")) {
        (Some(_), Some(d)) => return Err(error(d.line, "an event with both DTEND and DURATION")),
        (Some(p), None) => Some(moment(p)?),
        (None, Some(p)) => Some(add_duration(&start, duration(p)?, p.line)?),
        (None, None) => None,
    };
    let when = match (start, end) {
        (Moment::Day(first), None) => When::Days { first, last: first },
        (Moment::Day(first), Some(Moment::Day(end))) => {
            if end <= first {
                return skip("ends on or before the day it starts");
            }
            When::Days { first, last: end.yesterday().map_err(|e| error(line, e.to_string()))? }
        }
        (Moment::At(_), None) => return skip("a timed event with no end (no DTEND or DURATION)"),
        (Moment::At(start), Some(Moment::At(end))) => {
            if let Some(order) = same_form_order(&start, &end)
                && order.is_ge()
            {
                return skip("ends at or before its start");
            }
            When::Timed { start, end }
        }
        (Moment::Day(_), Some(Moment::At(_))) | (Moment::At(_), Some(Moment::Day(_))) => {
            return Err(error(
                get("DTEND").map_or(line, |p| p.line),
                "DTSTART and DTEND are not both dates or both times",
            ));
        }
    };
    if let Some(rrule) = get("RRULE") {
        if get("EXDATE").is_some() || get("RDATE").is_some() {
            return skip("a repeat with exceptions or extra dates (EXDATE, RDATE) is not supported");
        }
        let When::Days { first, last } = when else {
            return skip("a repeating timed event cannot be imported; add its closures one by one");
        };
        if first != last {
            return skip("a repeating event of several days cannot be imported; add it as closures");
        }
        return match yearly(rrule, first)? {
            Ok(rule) => Ok(Ok(Event { line, summary, when: When::Yearly(rule) })),
            Err(why) => skip(&why),
        };
    }
    Ok(Ok(Event { line, summary, when }))
}

/// Orders two times written in the same form; `None` when their forms differ.
fn same_form_order(a: &Time, b: &Time) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Time::Floating(a), Time::Floating(b)) | (Time::Utc(a), Time::Utc(b)) => Some(a.cmp(b)),
        (Time::Zoned { time: a, tzid: x }, Time::Zoned { time: b, tzid: y }) if x == y => Some(a.cmp(b)),
        _ => None,
    }
}

/// Undoes TEXT escaping (`\n`, `\,`, `\;`, `\\`); line breaks become spaces.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n' | 'N') => out.push(' '),
                Some(other) => out.push(other),
                None => {}
            }
        } else if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads `DTSTART`/`DTEND`: `VALUE=DATE` or 8 digits is a date; otherwise a date-time.
fn moment(p: &Property) -> Result<Moment, ParseError> {
    let v = p.value.trim();
    let as_date = p.param("VALUE").is_some_and(|t| t.eq_ignore_ascii_case("DATE")) || v.len() == 8;
    if as_date {
        return date(v)
            .map(Moment::Day)
            .ok_or_else(|| error(p.line, format!("{}: {:?} is not a date YYYYMMDD", p.name, truncate(v))));
    }
    let bad = || error(p.line, format!("{}: {:?} is not a date-time YYYYMMDDTHHMMSS[Z]", p.name, truncate(v)));
    let (body, utc) = match v.strip_suffix(['Z', 'z']) {
        Some(body) => (body, true),
        None => (v, false),
    };
    let (d, t) = body.split_once(['T', 't']).ok_or_else(bad)?;
    let b = t.as_bytes();
    if b.len() != 6 || !b.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let num = |i: usize| ((b[i] - b'0') * 10 + (b[i + 1] - b'0')) as i8;
    // A leap second (60) is read as 59.
    let (hour, minute, second) = (num(0), num(2), num(4).min(59));
    let time = date(d)
        .filter(|_| hour < 24 && minute < 60)
        .and_then(|d| DateTime::new(d.year(), d.month(), d.day(), hour, minute, second, 0).ok())
        .ok_or_else(bad)?;
    Ok(Moment::At(match (utc, p.param("TZID")) {
        (true, _) => Time::Utc(time),
        (false, Some(tzid)) => Time::Zoned { time, tzid: tzid.to_owned() },
        (false, None) => Time::Floating(time),
    }))
}

/// Parses exactly `YYYYMMDD`.
fn date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Date::new(s[0..4].parse().ok()?, s[4..6].parse().ok()?, s[6..8].parse().ok()?).ok()
}

/// A `DURATION` in days and seconds (`P1D`, `PT2H30M`, `P2W`, `P1DT12H`); never negative.
fn duration(p: &Property) -> Result<(i64, i64), ParseError> {
    let v = p.value.trim();
    let bad = || error(p.line, format!("DURATION: {:?} is not a duration such as P1D or PT2H30M", truncate(v)));
    let body = v.strip_prefix('+').unwrap_or(v);
    if body.starts_with('-') {
        return Err(error(p.line, "DURATION: a negative duration"));
    }
    let body = body.strip_prefix(['P', 'p']).ok_or_else(bad)?;
    let (mut days, mut seconds) = (0i64, 0i64);
    let mut in_time = false;
    let mut number = String::new();
    let mut any = false;
    for c in body.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => in_time = true,
            d if d.is_ascii_digit() => {
                if number.len() >= 9 {
                    return Err(bad());
                }
                number.push(d);
            }
            unit => {
                let n: i64 = number.parse().map_err(|_| bad())?;
                number.clear();
                any = true;
                match (unit, in_time) {
                    ('W', false) => days += n * 7,
                    ('D', false) => days += n,
                    ('H', true) => seconds += n * 3600,
                    ('M', true) => seconds += n * 60,
                    ('S', true) => seconds += n,
                    _ => return Err(bad()),
                }
            }
        }
    }
    if !number.is_empty() || !any {
        return Err(bad());
    }
    Ok((days, seconds))
}

/// The end of an event that starts at `start` and lasts `days` and `seconds`.
fn add_duration(start: &Moment, (days, seconds): (i64, i64), line: usize) -> Result<Moment, ParseError> {
    let too_long = || error(line, "DURATION: the event would end outside the calendar");
    let span = jiff::Span::new().try_days(days).and_then(|s| s.try_seconds(seconds)).map_err(|_| too_long())?;
    Ok(match start {
        Moment::Day(d) => {
            if seconds != 0 {
                return Err(error(line, "DURATION: an all-day event's duration must be whole days"));
            }
            Moment::Day(d.checked_add(span).map_err(|_| too_long())?)
        }
        Moment::At(t) => {
            let add = |dt: &DateTime| dt.checked_add(span).map_err(|_| too_long());
            Moment::At(match t {
                Time::Floating(dt) => Time::Floating(add(dt)?),
                Time::Utc(dt) => Time::Utc(add(dt)?),
                Time::Zoned { time, tzid } => Time::Zoned { time: add(time)?, tzid: tzid.clone() },
            })
        }
    })
}

/// Reads an `RRULE` of an all-day event on `day` as a yearly repeat, or says why it is not one
/// that can be kept (`Ok(Err(why))`).
fn yearly(p: &Property, day: Date) -> Result<Result<Yearly, String>, ParseError> {
    let mut freq = None;
    let (mut by_month, mut by_month_day, mut by_day, mut by_set_pos) = (None, None, None, None);
    for part in p.value.trim().split(';').filter(|s| !s.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| error(p.line, format!("RRULE: {:?} is not KEY=VALUE", truncate(part))))?;
        let value = value.to_ascii_uppercase();
        match key.to_ascii_uppercase().as_str() {
            "FREQ" => freq = Some(value),
            "INTERVAL" if value == "1" => {}
            "WKST" => {}
            "BYMONTH" => by_month = Some(value),
            "BYMONTHDAY" => by_month_day = Some(value),
            "BYDAY" => by_day = Some(value),
            "BYSETPOS" => by_set_pos = Some(value),
            "INTERVAL" | "COUNT" | "UNTIL" => {
                return Ok(Err(format!("RRULE {key}={value}: only repeats every year without end can be imported")));
            }
            other => return Ok(Err(format!("RRULE {other} is not supported"))),
        }
    }
    match freq.as_deref() {
        Some("YEARLY") => {}
        Some(f) => return Ok(Err(format!("RRULE FREQ={f}: only FREQ=YEARLY can be imported"))),
        None => return Err(error(p.line, "RRULE without FREQ")),
    }
    let single = |v: &Option<String>, what: &str| -> Result<Option<i8>, String> {
        match v {
            None => Ok(None),
            Some(v) => {
                v.parse::<i8>().map(Some).map_err(|_| format!("RRULE {what}={v}: only one plain number is supported"))
            }
        }
    };
    let month = match single(&by_month, "BYMONTH") {
        Ok(m) => m.unwrap_or(day.month()),
        Err(why) => return Ok(Err(why)),
    };
    if !(1..=12).contains(&month) {
        return Err(error(p.line, format!("RRULE BYMONTH={month} is not a month")));
    }
    let set_pos = match single(&by_set_pos, "BYSETPOS") {
        Ok(s) => s,
        Err(why) => return Ok(Err(why)),
    };
    match (by_day, single(&by_month_day, "BYMONTHDAY")) {
        (_, Err(why)) => Ok(Err(why)),
        (None, Ok(month_day)) => {
            if set_pos.is_some() {
                return Ok(Err("RRULE BYSETPOS without BYDAY is not supported".into()));
            }
            let day = month_day.unwrap_or(day.day());
            if Date::new(2024, month, day).is_err() {
                return Ok(Err(format!("RRULE: month {month} has no day {day}")));
            }
            Ok(Ok(Yearly::Date { month, day }))
        }
        (Some(_), Ok(Some(_))) => Ok(Err("RRULE with both BYDAY and BYMONTHDAY is not supported".into())),
        (Some(by_day), Ok(None)) => {
            if by_month.is_none() {
                return Ok(Err("RRULE BYDAY without BYMONTH is not supported".into()));
            }
            let digits_end = by_day.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(by_day.len());
            let (ordinal, name) = by_day.split_at(digits_end);
            let weekday = match name {
                "MO" => Weekday::Monday,
                "TU" => Weekday::Tuesday,
                "WE" => Weekday::Wednesday,
                "TH" => Weekday::Thursday,
                "FR" => Weekday::Friday,
                "SA" => Weekday::Saturday,
                "SU" => Weekday::Sunday,
                _ => return Ok(Err(format!("RRULE BYDAY={by_day}: only one weekday is supported"))),
            };
            let ordinal = if ordinal.is_empty() {
                None
            } else {
                match ordinal.trim_start_matches('+').parse::<i8>() {
                    Ok(n) => Some(n),
                    Err(_) => return Ok(Err(format!("RRULE BYDAY={by_day} is not supported"))),
                }
            };
            let nth = match (ordinal, set_pos) {
                (Some(n), None) | (None, Some(n)) => n,
                (None, None) => {
                    return Ok(Err(format!("RRULE BYDAY={by_day}: every {name} of a month is not a holiday")));
                }
                (Some(_), Some(_)) => return Ok(Err("RRULE with both a BYDAY ordinal and BYSETPOS".into())),
            };
            if !(1..=5).contains(&nth) && nth != -1 {
                return Ok(Err(format!("RRULE: the {nth}th {name} is not supported (1 to 5, or -1 for the last)")));
            }
            Ok(Ok(Yearly::NthWeekday { nth, weekday, month }))
        }
    }
}

#[cfg(test)]
mod tests;
