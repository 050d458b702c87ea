//! call-router: routes callers on one Twilio number to the right location's phone line.

pub mod hours;
