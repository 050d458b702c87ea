//! TaskRouter expressions (workflow filters, `target_workers`) come from API
//! requests to the sandbox, so the parser sees untrusted text.
//!
//! Properties: parsing and evaluation never panic; surrounding whitespace
//! and a pair of parentheses change nothing; `NOT (e)` evaluates to the
//! opposite of `e` whenever it parses.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sandbox::expr::{Context, Expr};
use serde_json::{Value, json};

static TASK: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "location": "north", "type": "Support", "priority": 5, "ratio": 2.5, "vip": true,
        "langs": ["en", "es", 3], "customer": {"tier": {"name": "gold"}}, "note": "call me back",
        "nothing": null, "callerID": "+14155550123", "call_sid": "CA0123456789abcdef0123456789abcdef",
    })
});
static WORKER: LazyLock<Value> = LazyLock::new(
    || json!({"id": "WK2", "location": "north", "skills": ["es", "billing"], "level": 3, "langs": [["nested"]]}),
);

/// Evaluates under the three shapes of context the sandbox uses.
fn eval_all(expr: &Expr) -> [bool; 3] {
    let filter = Context { attributes: &TASK, task: Some(&TASK), worker: None };
    let target = Context { attributes: &WORKER, task: Some(&TASK), worker: Some(&WORKER) };
    let bare = Context { attributes: &TASK, task: None, worker: None };
    [expr.eval(&filter), expr.eval(&target), expr.eval(&bare)]
}

fuzz_target!(|src: &str| {
    let Ok(expr) = Expr::parse(src) else {
        return;
    };
    let results = eval_all(&expr);

    // Whitespace around the expression is insignificant (when the result
    // still fits the length limit).
    if let Ok(spaced) = Expr::parse(&format!(" {src}\n")) {
        assert_eq!(spaced, expr, "surrounding whitespace changed the parse");
    }
    if let Ok(grouped) = Expr::parse(&format!("({src})")) {
        assert_eq!(eval_all(&grouped), results, "parentheses changed the result");
    }
    if let Ok(negated) = Expr::parse(&format!("NOT ({src})")) {
        assert_eq!(eval_all(&negated), results.map(|r| !r), "NOT did not invert the result");
    }
});
