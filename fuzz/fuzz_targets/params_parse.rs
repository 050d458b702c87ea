//! `Params::parse` takes every webhook body Twilio (or anyone) POSTs to us.
//!
//! Properties: parsing never panics; one pair per non-empty `&`-separated
//! part; `encode` emits only unreserved bytes, `%`, `=` and `&`; and parsing
//! the encoding gives back exactly the same pairs, repeats and order included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twilio::Params;

fuzz_target!(|body: &[u8]| {
    let params = Params::parse(body);

    let parts = body.split(|&b| b == b'&').filter(|part| !part.is_empty()).count();
    assert_eq!(params.len(), parts, "one pair per non-empty part");

    let encoded = params.encode();
    assert!(
        encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%=&".contains(&b)),
        "encode left a byte unescaped: {encoded:?}"
    );

    let back = Params::parse(encoded.as_bytes());
    assert_eq!(back, params, "parse(encode(p)) != p for encoding {encoded:?}");
    assert_eq!(back.encode(), encoded, "encoding is not stable");

    // `get` is the first value of a key, `get_all` every value in order.
    for (key, _) in params.iter() {
        let all: Vec<&str> = params.get_all(key).collect();
        assert!(!all.is_empty());
        assert_eq!(params.get(key), all.first().copied());
    }
});
