//! Webhook connection overrides: the `#ct=…&rt=…&tt=…&rc=…&rp=…` fragment
//! Twilio reads on any webhook URL ("Webhooks connection overrides").
//!
//! - `ct`: connect timeout, 100–10000 ms, default 5000;
//! - `rt`: read timeout, 100–15000 ms, default 15000;
//! - `tt`: total time for every try, 100–15000 ms, default 15000;
//! - `rc`: retries after the first try, 0–5, default 1;
//! - `rp`: which failures are retried: `4xx`, `5xx`, `ct` (the connection
//!   failed), `rt` (no answer in time), `all`; default `ct`;
//! - `e` (edge) and `sni`: accepted, not interpreted here.
//!
//! The fragment is never sent, and the signature leaves it out. The server
//! writes overrides into the URLs it configures; the sandbox obeys them.

/// Splits a webhook URL into what is requested and its fragment.
pub fn split_fragment(url: &str) -> (&str, Option<&str>) {
    match url.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (url, None),
    }
}

/// Which failures a webhook retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub on_4xx: bool,
    pub on_5xx: bool,
    pub on_connect: bool,
    pub on_timeout: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { on_4xx: false, on_5xx: false, on_connect: true, on_timeout: false }
    }
}

/// A webhook URL's connection overrides, with Twilio's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overrides {
    pub connect_ms: u64,
    pub read_ms: u64,
    pub total_ms: u64,
    pub retries: u32,
    pub policy: RetryPolicy,
}

impl Default for Overrides {
    fn default() -> Self {
        Self { connect_ms: 5000, read_ms: 15_000, total_ms: 15_000, retries: 1, policy: RetryPolicy::default() }
    }
}

impl Overrides {
    /// Reads a fragment (`ct=1000&rc=3&rp=5xx,ct`). Returns the overrides and
    /// a warning per value that was ignored.
    pub fn parse(fragment: Option<&str>) -> (Overrides, Vec<String>) {
        let mut o = Overrides::default();
        let mut warnings = Vec::new();
        let Some(fragment) = fragment else { return (o, warnings) };
        for pair in fragment.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let num = |lo: u64, hi: u64| v.parse::<u64>().ok().filter(|n| (lo..=hi).contains(n));
            let ok = match k {
                "ct" => num(100, 10_000).map(|n| o.connect_ms = n).is_some(),
                "rt" => num(100, 15_000).map(|n| o.read_ms = n).is_some(),
                "tt" => num(100, 15_000).map(|n| o.total_ms = n).is_some(),
                "rc" => num(0, 5).map(|n| o.retries = n as u32).is_some(),
                "rp" => match parse_policy(v) {
                    Some(p) => {
                        o.policy = p;
                        true
                    }
                    None => false,
                },
                "e" | "sni" => true,
                _ => false,
            };
            if !ok {
                warnings.push(format!("connection override {pair:?} is not valid; Twilio's default is used"));
            }
        }
        (o, warnings)
    }
}

/// Reads `rp`: comma-separated tokens.
fn parse_policy(v: &str) -> Option<RetryPolicy> {
    let mut p = RetryPolicy { on_4xx: false, on_5xx: false, on_connect: false, on_timeout: false };
    for token in v.split(',').map(str::trim) {
        match token {
            "4xx" => p.on_4xx = true,
            "5xx" => p.on_5xx = true,
            "ct" => p.on_connect = true,
            "rt" => p.on_timeout = true,
            "all" => p = RetryPolicy { on_4xx: true, on_5xx: true, on_connect: true, on_timeout: true },
            _ => return None,
        }
    }
    Some(p)
}

/// Checks overrides as a configuration gives them (without the `#`): an
/// error names the first value Twilio would not accept.
pub fn check(fragment: &str) -> Result<(), String> {
    let (_, warnings) = Overrides::parse(Some(fragment));
    match warnings.into_iter().next() {
        Some(w) => Err(w),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_split() {
        assert_eq!(split_fragment("http://h/x?a=1#rc=2"), ("http://h/x?a=1", Some("rc=2")));
        assert_eq!(split_fragment("http://h/x"), ("http://h/x", None));
    }

    #[test]
    fn defaults_as_twilio_documents() {
        let (o, w) = Overrides::parse(None);
        assert!(w.is_empty());
        assert_eq!((o.connect_ms, o.read_ms, o.total_ms, o.retries), (5000, 15_000, 15_000, 1));
        assert_eq!(o.policy, RetryPolicy { on_4xx: false, on_5xx: false, on_connect: true, on_timeout: false });
    }

    #[test]
    fn values_parse_and_bad_ones_keep_the_default() {
        let (o, w) = Overrides::parse(Some("ct=1000&rt=2000&tt=9000&rc=3&rp=5xx,rt&e=dublin&sni=y"));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((o.connect_ms, o.read_ms, o.total_ms, o.retries), (1000, 2000, 9000, 3));
        assert_eq!(o.policy, RetryPolicy { on_4xx: false, on_5xx: true, on_connect: false, on_timeout: true });
        let (o, _) = Overrides::parse(Some("rp=all"));
        assert!(o.policy.on_4xx && o.policy.on_5xx && o.policy.on_connect && o.policy.on_timeout);
        let (o, w) = Overrides::parse(Some("ct=50&rc=6&rp=5xx,bogus&zz=1&tt=15001"));
        assert_eq!(o, Overrides::default());
        assert_eq!(w.len(), 5, "{w:?}");
        assert!(check("rc=3&rp=ct,5xx").is_ok());
        assert!(check("rc=9").unwrap_err().contains("\"rc=9\""));
    }
}
