//! A local Twilio-compatible emulator of the Voice and TaskRouter APIs.

pub mod expr;
