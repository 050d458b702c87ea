//! `X-Twilio-Signature` validation runs on every webhook before anything
//! else, on a URL, form parameters, a header and a body that are all
//! attacker-controlled.
//!
//! The input is split on `\n` into: auth token, URL, form body (decoded with
//! `Params::parse`), signature header, and the rest as a JSON body. So a seed
//! is readable text, one field a line.
//!
//! Properties: nothing panics; a missing header is `Missing`; `sign` then
//! `validate_form` succeeds, whatever the parameter order; the same signature
//! under another token is refused; a `#fragment` (connection overrides) is not
//! signed, so the URL with or without one validates the same signature; a
//! JSON URL (`bodySHA256` added to its query, before any fragment) signed with
//! `sign_url` validates with its body and is refused with another body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twilio::Params;
use twilio::signature::{
    SignatureError, append_query, body_sha256, query_param, sign, sign_url, signed_url, validate_form, validate_json,
};

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(5, |&b| b == b'\n');
    let token = fields.next().unwrap_or_default();
    let url = String::from_utf8_lossy(fields.next().unwrap_or_default());
    let params = Params::parse(fields.next().unwrap_or_default());
    let header = fields.next().map(String::from_utf8_lossy);
    let body = fields.next().unwrap_or_default();

    // Arbitrary headers: any answer is fine, a panic is not.
    let _ = validate_form(token, &url, params.iter(), header.as_deref());
    let _ = validate_json(token, &url, body, header.as_deref());
    let _ = query_param(&url, "bodySHA256");

    assert_eq!(validate_form(token, &url, params.iter(), None), Err(SignatureError::Missing));
    assert_eq!(validate_json(token, &url, body, None), Err(SignatureError::Missing));

    // What we sign, we accept, in any parameter order.
    let sig = sign(token, &url, params.iter());
    assert_eq!(validate_form(token, &url, params.iter(), Some(&sig)), Ok(()), "own signature refused: {sig}");
    let reversed: Vec<(&str, &str)> = params.iter().collect::<Vec<_>>().into_iter().rev().collect();
    assert_eq!(sign(token, &url, reversed.iter().copied()), sig, "signature depends on parameter order");
    assert_eq!(validate_form(token, &url, reversed.iter().copied(), Some(&sig)), Ok(()));

    // The fragment is not signed: dropping it, or replacing it with
    // connection overrides, changes nothing.
    let bare = signed_url(&url);
    assert_eq!(sign(token, bare, params.iter()), sig, "the fragment changed the signature");
    assert_eq!(validate_form(token, bare, params.iter(), Some(&sig)), Ok(()));
    let overridden = format!("{bare}#rc=2&rp=ct,5xx");
    assert_eq!(validate_form(token, &overridden, params.iter(), Some(&sig)), Ok(()));

    // Another token (not a zero-padding of this one, which HMAC treats as
    // the same key) must not validate it.
    let mut other = token.to_vec();
    other.push(b'x');
    assert_eq!(validate_form(&other, &url, params.iter(), Some(&sig)), Err(SignatureError::Mismatch));

    // JSON: add bodySHA256 to the query (before any fragment, which is
    // neither sent nor signed) when the URL has none of its own.
    if query_param(&url, "bodySHA256").is_none() {
        let hash = body_sha256(body);
        let json_url = append_query(&url, &format!("bodySHA256={hash}"));
        let sig = sign_url(token, &json_url);
        assert_eq!(validate_json(token, &json_url, body, Some(&sig)), Ok(()), "own JSON signature refused");
        if query_param(&json_url, "bodySHA256").as_deref() == Some(hash.as_str()) {
            let mut tampered = body.to_vec();
            tampered.push(b' ');
            assert_eq!(validate_json(token, &json_url, &tampered, Some(&sig)), Err(SignatureError::BodyHashMismatch));
        }
    }
});
