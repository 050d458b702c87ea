//! `TaskAttributes` is the JSON TaskRouter hands back in every reservation
//! and task event (`TaskAttributes=` form field), so its deserializer sees
//! whatever arrives on the events webhook.
//!
//! Properties: deserializing never panics; what deserializes serializes to
//! JSON that deserializes to an equal value, and that serialization is stable.
#![no_main]

use call_router::domain::TaskAttributes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|json: &[u8]| {
    let Ok(attrs) = serde_json::from_slice::<TaskAttributes>(json) else {
        return;
    };
    let text = serde_json::to_string(&attrs).expect("TaskAttributes serializes");
    let back: TaskAttributes = match serde_json::from_str(&text) {
        Ok(back) => back,
        Err(e) => panic!("serialized TaskAttributes do not deserialize ({e}): {text}"),
    };
    assert_eq!(back, attrs, "round trip changed the attributes: {text}");
    assert_eq!(serde_json::to_string(&back).expect("serializes"), text, "serialization is not stable");
});
