//! Fault injection: rules that make the sandbox fail the way Twilio and the
//! network between Twilio and a server fail.
//!
//! A rule matches requests by where they go (`rest`: requests the sandbox
//! answers on its REST API; `webhook`: requests the sandbox sends to a
//! server), an optional method and a path pattern (`*` matches any run of
//! characters), an optional window of virtual time, and a share of the
//! matching requests. Each rule draws from its own seeded random generator,
//! so the same sequence of matching requests meets the same faults on every
//! run. Rules apply from the next request on; the first matching rule that
//! fires decides.
//!
//! The decisions are pure; the HTTP rim (`api::dispatch` for REST, the
//! webhook sender in `lib.rs`) carries them out.

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::clock::VMs;

/// Which side of the sandbox a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// Requests the sandbox answers (`/2010-04-01/…`, `/v1/…`).
    Rest,
    /// Requests the sandbox sends: TwiML fetches, status callbacks, events.
    Webhook,
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// REST: answer this status with Twilio's error body, without acting.
    /// A 429 carries `Retry-After` (seconds, default 1).
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_secs: Option<u64>,
    },
    /// REST: act, then answer after `delay_ms` virtual milliseconds.
    Delay { delay_ms: u64 },
    /// REST: act, then reset the connection instead of answering: the
    /// client cannot tell whether the request took effect.
    Reset,
    /// REST: act, then answer this 5xx with Twilio's error body instead of
    /// the result: a create whose answer was lost although it took effect.
    StatusAfterActing { status: u16 },
    /// Webhook: deliver the request twice.
    Duplicate,
    /// Webhook: deliver it `delay_ms` virtual milliseconds late. Callbacks
    /// and events sent after it are not held up, so it arrives out of order.
    Late { delay_ms: u64 },
    /// Webhook: the request is lost; the receiver never sees it, and the
    /// sandbox gives up on it (a TwiML fetch fails).
    Drop,
    /// Webhook: the target refuses connections (an outage). Checked on every
    /// attempt, so a retry after the window succeeds.
    Refuse,
}

impl Fault {
    fn side(&self) -> On {
        match self {
            Fault::Status { .. } | Fault::StatusAfterActing { .. } | Fault::Delay { .. } | Fault::Reset => On::Rest,
            Fault::Duplicate | Fault::Late { .. } | Fault::Drop | Fault::Refuse => On::Webhook,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "status",
            Fault::Delay { .. } => "delay",
            Fault::Reset => "reset",
            Fault::StatusAfterActing { .. } => "status_after_acting",
            Fault::Duplicate => "duplicate",
            Fault::Late { .. } => "late",
            Fault::Drop => "drop",
            Fault::Refuse => "refuse",
        }
    }
}

fn all() -> f64 {
    1.0
}

/// A fault rule as the control API and scenario files write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub on: On,
    /// `GET`, `POST`, `DELETE`; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A path pattern (`/2010-04-01/Accounts/*/Calls.json`, `/tr-event-handler`);
    /// any path when absent. The query and fragment are not part of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The share of matching requests that fail, 0 to 1.
    #[serde(default = "all")]
    pub share: f64,
    #[serde(flatten)]
    pub fault: Fault,
    /// Active from this virtual millisecond (since the sandbox started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<VMs>,
    /// Active until this virtual millisecond (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ms: Option<VMs>,
    /// Fires at most this many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Seeds this rule's draws; by default the sandbox's seed and the rule's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Every key a rule may have (serde cannot refuse unknown keys in a
/// flattened struct, and a misspelt `share` must not mean "every request").
const KEYS: [&str; 12] = [
    "on",
    "method",
    "path",
    "share",
    "fault",
    "status",
    "retry_after_secs",
    "delay_ms",
    "from_ms",
    "to_ms",
    "limit",
    "seed",
];

impl Rule {
    /// Reads and checks a rule from JSON, refusing unknown keys.
    pub fn from_json(v: serde_json::Value) -> Result<Rule, String> {
        let obj = v.as_object().ok_or("a fault rule is a JSON object")?;
        if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!("unknown key {k:?} (known: {})", KEYS.join(", ")));
        }
        let rule: Rule = serde_json::from_value(v).map_err(|e| e.to_string())?;
        rule.check()?;
        Ok(rule)
    }

    /// Checks a rule, naming what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.share) {
            return Err(format!("share must be between 0 and 1, not {}", self.share));
        }
        if self.fault.side() != self.on {
            let on = match self.on {
                On::Rest => "rest",
                On::Webhook => "webhook",
            };
            return Err(format!(
                "fault {:?} does not apply to {on} requests (rest: status, status_after_acting, delay, reset; webhook: duplicate, late, drop, refuse)",
                self.fault.name()
            ));
        }
        if let Fault::Status { status, .. } = self.fault
            && !(400..=599).contains(&status)
        {
            return Err(format!("status must be a 4xx or 5xx code, not {status}"));
        }
        // A 4xx says Twilio did not act; only a server error can hide that it did.
        if let Fault::StatusAfterActing { status } = self.fault
            && !(500..=599).contains(&status)
        {
            return Err(format!("status_after_acting needs a 5xx status, not {status}"));
        }
        if let Some(m) = &self.method
            && !matches!(m.to_ascii_uppercase().as_str(), "GET" | "POST" | "DELETE" | "PUT")
        {
            return Err(format!("method must be GET, POST, PUT or DELETE, not {m:?}"));
        }
        if let (Some(f), Some(t)) = (self.from_ms, self.to_ms)
            && t <= f
        {
            return Err(format!("to_ms ({t}) must be after from_ms ({f})"));
        }
        if self.path.as_deref().is_some_and(|p| !p.starts_with('/') && p != "*") {
            return Err("path must start with '/' (or be \"*\")".into());
        }
        Ok(())
    }

    fn matches(&self, method: &str, path: &str, now: VMs) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path.as_deref().is_none_or(|p| glob(p, path))
            && self.from_ms.is_none_or(|f| now >= f)
            && self.to_ms.is_none_or(|t| now < t)
    }
}

/// `*` matches any run of characters (slashes included); everything else is literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A fault that fired, with the rule that fired it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub rule: u64,
    pub fault: Fault,
}

impl Fired {
    /// How the request log names it: `reset (rule 2)`.
    pub fn label(&self) -> String {
        format!("{} (rule {})", self.fault.name(), self.rule)
    }
}

struct Active {
    id: u64,
    rule: Rule,
    rng: StdRng,
    matched: u64,
    fired: u64,
}

/// The active rules, behind one mutex (held only to decide).
pub struct Faults {
    seed: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    rules: Vec<Active>,
}

/// A rule as `GET /sandbox/faults` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub id: u64,
    #[serde(flatten)]
    pub rule: Rule,
    /// Requests that matched the rule while it was active.
    pub matched: u64,
    /// Requests it failed.
    pub fired: u64,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Self { seed, inner: Mutex::new(Inner { next_id: 1, rules: Vec::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds checked rules; returns their ids. Nothing is added if one is invalid.
    pub fn add(&self, rules: Vec<Rule>) -> Result<Vec<u64>, String> {
        for (i, r) in rules.iter().enumerate() {
            r.check().map_err(|e| format!("rules[{i}]: {e}"))?;
        }
        let mut inner = self.lock();
        let mut ids = Vec::new();
        for rule in rules {
            let id = inner.next_id;
            inner.next_id += 1;
            let seed = rule.seed.unwrap_or_else(|| self.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            inner.rules.push(Active { id, rule, rng: StdRng::seed_from_u64(seed), matched: 0, fired: 0 });
            ids.push(id);
        }
        Ok(ids)
    }

    /// Removes one rule (false if there is none with that id), or all.
    pub fn remove(&self, id: Option<u64>) -> bool {
        let mut inner = self.lock();
        match id {
            None => {
                inner.rules.clear();
                true
            }
            Some(id) => {
                let before = inner.rules.len();
                inner.rules.retain(|r| r.id != id);
                inner.rules.len() != before
            }
        }
    }

    pub fn list(&self) -> Vec<RuleStatus> {
        self.lock()
            .rules
            .iter()
            .map(|a| RuleStatus { id: a.id, rule: a.rule.clone(), matched: a.matched, fired: a.fired })
            .collect()
    }

    /// Whether a request meets a fault, and which. `refuse` rules are left
    /// out unless `refuse_only`, and are the only ones checked then: they are
    /// decided per connection attempt, the rest once per request.
    fn decide(&self, on: On, method: &str, path: &str, now: VMs, refuse_only: bool) -> Option<Fired> {
        let mut inner = self.lock();
        for a in inner.rules.iter_mut() {
            if a.rule.on != on || (a.rule.fault == Fault::Refuse) != refuse_only {
                continue;
            }
            if !a.rule.matches(method, path, now) || a.rule.limit.is_some_and(|l| a.fired >= l) {
                continue;
            }
            a.matched += 1;
            // One draw per matching request, fired or not, keeps runs repeatable.
            let draw: f64 = a.rng.random();
            if draw < a.rule.share {
                a.fired += 1;
                return Some(Fired { rule: a.id, fault: a.rule.fault.clone() });
            }
        }
        None
    }

    /// The fault, if any, for a REST request the sandbox is answering.
    pub fn rest(&self, method: &str, path: &str, now: VMs) -> Option<Fired> {
        if !path.starts_with("/2010-04-01/") && !path.starts_with("/v1/") {
            return None;
        }
        self.decide(On::Rest, method, path, now, false)
    }

    /// The fault, if any, for a webhook the sandbox is about to send
    /// (`duplicate`, `late` or `drop`), decided once per webhook.
    pub fn webhook(&self, method: &str, path: &str, now: VMs) -> Option<Fired> {
        self.decide(On::Webhook, method, path, now, false)
    }

    /// Whether one connection attempt to a webhook target is refused.
    pub fn refused(&self, method: &str, path: &str, now: VMs) -> Option<Fired> {
        self.decide(On::Webhook, method, path, now, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob("/2010-04-01/Accounts/*/Calls.json", "/2010-04-01/Accounts/AC1/Calls.json"));
        assert!(!glob("/2010-04-01/Accounts/*/Calls.json", "/2010-04-01/Accounts/AC1/Calls/CA1.json"));
        assert!(glob("*", "/anything/at/all"));
        assert!(glob("/v1/*/Tasks/*", "/v1/Workspaces/WS1/Tasks/WT1"));
        assert!(glob("/status-callback", "/status-callback"));
        assert!(!glob("/status-callback", "/status-callbacks"));
        assert!(glob("/a*b*c", "/abc"));
        assert!(!glob("/a*b*c", "/acb"));
        assert!(!glob("/ab*ba", "/aba"), "the prefix and suffix may not overlap");
    }

    #[test]
    fn rules_are_checked() {
        let bad = |j: &str| rule(j).check().unwrap_err();
        assert!(bad(r#"{"on":"rest","fault":"drop"}"#).contains("does not apply to rest"));
        assert!(bad(r#"{"on":"webhook","fault":"reset"}"#).contains("does not apply to webhook"));
        assert!(bad(r#"{"on":"rest","fault":"status","status":200}"#).contains("4xx or 5xx"));
        assert!(bad(r#"{"on":"rest","fault":"status_after_acting","status":404}"#).contains("needs a 5xx"));
        assert!(bad(r#"{"on":"webhook","fault":"status_after_acting","status":500}"#).contains("does not apply"));
        assert!(bad(r#"{"on":"rest","fault":"reset","share":1.5}"#).contains("share"));
        assert!(bad(r#"{"on":"webhook","fault":"refuse","from_ms":5,"to_ms":5}"#).contains("after from_ms"));
        assert!(bad(r#"{"on":"rest","fault":"reset","path":"Calls.json"}"#).contains("start with '/'"));
        let json = |j: &str| serde_json::from_str::<serde_json::Value>(j).unwrap();
        assert!(
            Rule::from_json(json(r#"{"on":"rest","fault":"reset","shares":0.1}"#)).unwrap_err().contains("\"shares\"")
        );
        assert!(Rule::from_json(json(r#"{"on":"rest","fault":"drop"}"#)).is_err());
        assert!(Rule::from_json(json(r#"{"on":"rest","fault":"explode"}"#)).is_err());
        let r = Rule::from_json(json(r#"{"on":"rest","fault":"status","status":429,"retry_after_secs":2}"#)).unwrap();
        assert_eq!(r.fault, Fault::Status { status: 429, retry_after_secs: Some(2) });
        let r = Rule::from_json(json(r#"{"on":"rest","fault":"status_after_acting","status":503}"#)).unwrap();
        assert_eq!(r.fault, Fault::StatusAfterActing { status: 503 });
        let f = Faults::new(1);
        let err = f.add(vec![rule(r#"{"on":"rest","fault":"reset"}"#), rule(r#"{"on":"rest","fault":"drop"}"#)]);
        assert!(err.unwrap_err().starts_with("rules[1]: "));
        assert!(f.list().is_empty(), "an invalid batch adds nothing");
    }

    #[test]
    fn a_share_fires_about_that_often_and_repeats_with_the_seed() {
        let run = |seed| {
            let f = Faults::new(seed);
            f.add(vec![rule(r#"{"on":"rest","method":"POST","path":"/2010-04-01/Accounts/*/Calls.json","share":0.1,"fault":"reset"}"#)]).unwrap();
            let fired: Vec<bool> =
                (0..2000).map(|i| f.rest("POST", "/2010-04-01/Accounts/AC1/Calls.json", i).is_some()).collect();
            // Other methods and paths neither match nor draw.
            assert!(f.rest("GET", "/2010-04-01/Accounts/AC1/Calls.json", 0).is_none());
            assert!(f.rest("POST", "/sandbox/calls", 0).is_none());
            (fired, f.list())
        };
        let (a, status) = run(7);
        let n = a.iter().filter(|x| **x).count();
        assert!((140..=260).contains(&n), "{n} of 2000 at 10%");
        assert_eq!((status[0].matched, status[0].fired), (2000, n as u64));
        assert_eq!(run(7).0, a, "the same seed, the same faults");
        assert_ne!(run(8).0, a, "another seed, other faults");
    }

    #[test]
    fn windows_limits_and_order() {
        let f = Faults::new(1);
        f.add(vec![
            rule(r#"{"on":"webhook","path":"/tr-event-handler","fault":"refuse","from_ms":1000,"to_ms":2000}"#),
            rule(r#"{"on":"webhook","fault":"duplicate","limit":2}"#),
            rule(r#"{"on":"webhook","fault":"drop"}"#),
        ])
        .unwrap();
        assert!(f.refused("POST", "/tr-event-handler", 999).is_none());
        assert_eq!(f.refused("POST", "/tr-event-handler", 1000).map(|x| x.rule), Some(1));
        assert!(f.refused("POST", "/tr-event-handler", 2000).is_none());
        assert!(f.refused("POST", "/status-callback", 1500).is_none());
        // Per request: refuse rules are not consulted; the first firing rule wins.
        let got: Vec<_> = (0..4).map(|_| f.webhook("POST", "/x", 1500).map(|x| x.fault)).collect();
        assert_eq!(got, [Some(Fault::Duplicate), Some(Fault::Duplicate), Some(Fault::Drop), Some(Fault::Drop)]);
        assert!(f.remove(Some(3)));
        assert!(!f.remove(Some(3)));
        assert!(f.webhook("POST", "/x", 1500).is_none());
        f.remove(None);
        assert!(f.list().is_empty());
    }
}
