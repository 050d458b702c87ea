//! `X-Twilio-Signature`: how Twilio signs the requests it sends.
//!
//! For a form POST the signed string is the full URL followed by every
//! parameter name and value, names sorted, a repeated name's values
//! de-duplicated and sorted. For a JSON body the URL carries a `bodySHA256`
//! query parameter holding the hex SHA-256 of the body, and only the URL is
//! signed. The MAC is HMAC-SHA1 keyed with the account's auth token, in
//! base64.
//!
//! A configured webhook URL may end in a `#fragment`: Twilio reads its
//! connection overrides there (`#rc=2&rp=ct,5xx`). The fragment is never
//! sent, and Twilio leaves it out of the signed URL, so [`signed_url`] drops
//! it and [`sign`], [`validate_form`] and [`validate_json`] all go through
//! it: a configured URL can be passed as it is, fragment and all, and the
//! server's own URL (public URL, path and query) validates the same request.
//!
//! Proxies and load balancers add or strip default ports and re-encode query
//! strings, so validation accepts the variants Twilio's own libraries accept:
//! the URL as given, with its default port added, with its port removed, and
//! each of those with the query string re-encoded.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::params::{decode_component, percent_encode};

type HmacSha1 = Hmac<Sha1>;

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Twilio-Signature header is missing")]
    Missing,
    #[error("the X-Twilio-Signature header does not match the request")]
    Mismatch,
    #[error("the URL has no bodySHA256 query parameter, or it does not match the body's SHA-256")]
    BodyHashMismatch,
}

/// Computes the signature of a form request to `url` with `params`, as
/// Twilio does: over [`signed_url`], so a fragment does not count.
pub fn sign<'a>(auth_token: &[u8], url: &str, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mac = mac_for(auth_token, signed_url(url), params);
    BASE64.encode(mac.finalize().into_bytes())
}

/// Computes the signature of a JSON request: the URL must already carry
/// `bodySHA256` in its query (see [`body_sha256`] and [`append_query`]).
pub fn sign_url(auth_token: &[u8], url: &str) -> String {
    sign(auth_token, url, std::iter::empty())
}

/// The part of a webhook URL that Twilio signs: everything before the first
/// `#`. The fragment holds connection overrides; it is never sent with the
/// request and is not part of the signature.
pub fn signed_url(url: &str) -> &str {
    url.split_once('#').map_or(url, |(before, _)| before)
}

/// `url` with `query` (already encoded, `k=v&k=v`) added to its query string,
/// before any `#fragment`, so that a parameter added to a configured URL
/// (a GET's parameters, `bodySHA256`) lands in the part that is sent and
/// signed rather than in the connection overrides.
pub fn append_query(url: &str, query: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len() + query.len() + 1);
    out.push_str(base);
    if !query.is_empty() {
        match base.split_once('?') {
            None => out.push('?'),
            Some((_, q)) if !q.is_empty() && !q.ends_with('&') => out.push('&'),
            Some(_) => {}
        }
        out.push_str(query);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// The hex SHA-256 of a body, as Twilio puts it in `bodySHA256`.
pub fn body_sha256(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn mac_for<'a>(auth_token: &[u8], url: &str, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> HmacSha1 {
    mac_over(keyed(auth_token), url, &sorted(params))
}

/// An HMAC keyed with the auth token, to clone for each URL tried.
fn keyed(auth_token: &[u8]) -> HmacSha1 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha1::new_from_slice(auth_token).expect("HMAC takes any key length")
}

/// The parameters in the order the signature covers them: sorted, each pair once.
fn sorted<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    let mut pairs: Vec<(&str, &str)> = params.into_iter().collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

fn mac_over(mut mac: HmacSha1, url: &str, pairs: &[(&str, &str)]) -> HmacSha1 {
    mac.update(url.as_bytes());
    for (k, v) in pairs {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

/// Checks a form request's signature. `url` is the full URL Twilio requested,
/// as the server's public URL plus the request's path and query; a
/// configured URL with a `#fragment` gives the same answer (see
/// [`signed_url`]).
pub fn validate_form<'a>(
    auth_token: &[u8],
    url: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let expected = BASE64.decode(signature.trim()).map_err(|_| SignatureError::Mismatch)?;
    let (key, pairs) = (keyed(auth_token), sorted(params));
    // verify_slice compares in constant time.
    let signs = |candidate: &str| mac_over(key.clone(), candidate, &pairs).verify_slice(&expected).is_ok();
    // The URL as it came is nearly always the one: the variants (a port
    // added or dropped, the query encoded again) are made only when it is not.
    let url = signed_url(url);
    if signs(url) || url_variants(url).iter().skip(1).any(|candidate| signs(candidate)) {
        return Ok(());
    }
    Err(SignatureError::Mismatch)
}

/// Checks a JSON request: the URL signature, then the body against the
/// `bodySHA256` query parameter. The signature covers only the URL, so a URL
/// without `bodySHA256` would leave the body unauthenticated: it is refused.
pub fn validate_json(auth_token: &[u8], url: &str, body: &[u8], signature: Option<&str>) -> Result<(), SignatureError> {
    validate_form(auth_token, url, std::iter::empty(), signature)?;
    let expected = query_param(url, "bodySHA256").ok_or(SignatureError::BodyHashMismatch)?;
    // Both are public digests; a plain comparison leaks nothing secret.
    if !body_sha256(body).eq_ignore_ascii_case(&expected) {
        return Err(SignatureError::BodyHashMismatch);
    }
    Ok(())
}

/// The first value of a query parameter, decoded. A `?` inside the fragment
/// does not start a query.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = signed_url(url).split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k.as_bytes()) == name).then(|| decode_component(v.as_bytes()))
    })
}

/// The URLs a valid signature may have been computed over; `url` has no
/// fragment.
fn url_variants(url: &str) -> Vec<String> {
    fn push(out: &mut Vec<String>, u: String) {
        if !out.contains(&u) {
            out.push(u);
        }
    }
    let mut out = vec![url.to_owned()];
    if let Some(u) = with_default_port(url) {
        push(&mut out, u);
    }
    if let Some(u) = without_port(url) {
        push(&mut out, u);
    }
    for i in 0..out.len() {
        if let Some(r) = reencode_query(&out[i]) {
            push(&mut out, r);
        }
    }
    out
}

/// Splits `scheme://authority/rest` into its parts.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

fn with_default_port(url: &str) -> Option<String> {
    let (scheme, authority, rest) = split_url(url)?;
    let host_part = authority.rsplit('@').next().unwrap_or(authority);
    if host_part
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !host_part.ends_with(']'))
    {
        return None;
    }
    let port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    Some(format!("{scheme}://{authority}:{port}{rest}"))
}

fn without_port(url: &str) -> Option<String> {
    let (scheme, authority, rest) = split_url(url)?;
    let (host, port) = authority.rsplit_once(':')?;
    if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) || host.ends_with('[') {
        return None;
    }
    Some(format!("{scheme}://{host}{rest}"))
}

/// The URL (without a fragment) with every query component decoded and
/// re-encoded canonically, which undoes a proxy's `%20` / `+` / case changes.
fn reencode_query(url: &str) -> Option<String> {
    let (head, query) = url.split_once('?')?;
    let mut out = String::from(head);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, v)) => {
                out.push_str(&percent_encode(&decode_component(k.as_bytes())));
                out.push('=');
                out.push_str(&percent_encode(&decode_component(v.as_bytes())));
            }
            None => out.push_str(&percent_encode(&decode_component(pair.as_bytes()))),
        }
    }
    (out != url).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const PARAMS: [(&str, &str); 5] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];

    #[test]
    fn twilio_published_vector() {
        assert_eq!(sign(TOKEN, URL, PARAMS), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert!(validate_form(TOKEN, URL, PARAMS, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")).is_ok());
    }

    #[test]
    fn twilio_published_vector_with_repeated_values() {
        // Twilio's second vector: only these parameters, with Digits given
        // three times out of order and once duplicated.
        let params =
            [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")];
        assert_eq!(sign(TOKEN, URL, params), "IK+Dwps556ElfBT0I3Rgjkr1wJU=");
    }

    #[test]
    fn published_body_hash() {
        assert_eq!(
            body_sha256(br#"{"property": "value", "boolean": true}"#),
            "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
    }

    #[test]
    fn default_port_variants_both_pass() {
        let sig = sign(TOKEN, URL, PARAMS);
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert!(validate_form(TOKEN, with_port, PARAMS, Some(&sig)).is_ok());
        let sig_with_port = sign(TOKEN, with_port, PARAMS);
        assert!(validate_form(TOKEN, URL, PARAMS, Some(&sig_with_port)).is_ok());
        // A non-default port is a different URL once added, but a signature
        // made without it (a proxy stripped it) still passes.
        let odd = "http://localhost:8080/x";
        let sig_no_port = sign(TOKEN, "http://localhost/x", PARAMS);
        assert!(validate_form(TOKEN, odd, PARAMS, Some(&sig_no_port)).is_ok());
    }

    #[test]
    fn query_reencoding_variant_passes() {
        let signed_url = "https://example.com/dial-queue?from=%2B14155550100&name=a%20b";
        let sig = sign(TOKEN, signed_url, PARAMS);
        let seen_url = "https://example.com/dial-queue?from=%2b14155550100&name=a+b";
        assert!(validate_form(TOKEN, seen_url, PARAMS, Some(&sig)).is_ok());
    }

    #[test]
    fn wrong_or_missing_signature_is_refused() {
        assert_eq!(validate_form(TOKEN, URL, PARAMS, None), Err(SignatureError::Missing));
        assert_eq!(
            validate_form(TOKEN, URL, PARAMS, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8x")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(validate_form(TOKEN, URL, PARAMS, Some("not base64!")), Err(SignatureError::Mismatch));
        assert_eq!(
            validate_form(b"54321", URL, PARAMS, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
            Err(SignatureError::Mismatch)
        );
        // A changed parameter value breaks it.
        let mut tampered = PARAMS;
        tampered[4] = ("To", "+18005551213");
        assert_eq!(
            validate_form(TOKEN, URL, tampered, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
            Err(SignatureError::Mismatch)
        );
    }

    /// Connection overrides ride in the fragment, which Twilio neither sends
    /// nor signs: the configured URL, the URL the server sees and Twilio's
    /// published vector all agree.
    #[test]
    fn fragment_is_not_signed() {
        let configured = format!("{URL}#rc=2&rp=ct,5xx");
        assert_eq!(signed_url(&configured), URL);
        assert_eq!(sign(TOKEN, &configured, PARAMS), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        let sig = sign(TOKEN, &configured, PARAMS);
        assert_eq!(validate_form(TOKEN, URL, PARAMS, Some(&sig)), Ok(()));
        assert_eq!(validate_form(TOKEN, &configured, PARAMS, Some(&sig)), Ok(()));
        // A MAC over the whole configured string, fragment included, is not
        // what Twilio sends, and the server does not accept it.
        let with_fragment = BASE64.encode(mac_for(TOKEN, &configured, PARAMS).finalize().into_bytes());
        assert_ne!(with_fragment, sig);
        assert_eq!(validate_form(TOKEN, URL, PARAMS, Some(&with_fragment)), Err(SignatureError::Mismatch));
        assert_eq!(validate_form(TOKEN, &configured, PARAMS, Some(&with_fragment)), Err(SignatureError::Mismatch));
    }

    /// The fuzzer's counterexample: `bodySHA256` appended after a `#` sits in
    /// the fragment, which is neither sent nor signed, so it vouches for no
    /// body. [`append_query`] puts it in the query, where Twilio puts it.
    #[test]
    fn body_sha256_goes_before_the_fragment() {
        let url = "http://localhost:4040/voice/incoming?lo#cation=north%20side";
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = body_sha256(body);
        let json_url = append_query(url, &format!("bodySHA256={hash}"));
        assert_eq!(json_url, format!("http://localhost:4040/voice/incoming?lo&bodySHA256={hash}#cation=north%20side"));
        let sig = sign_url(TOKEN, &json_url);
        assert_eq!(validate_json(TOKEN, &json_url, body, Some(&sig)), Ok(()));
        assert_eq!(validate_json(TOKEN, signed_url(&json_url), body, Some(&sig)), Ok(()));
        assert_eq!(validate_json(TOKEN, &json_url, b"{}", Some(&sig)), Err(SignatureError::BodyHashMismatch));

        let in_fragment = format!("{url}&bodySHA256={hash}");
        assert_eq!(query_param(&in_fragment, "bodySHA256"), None);
        assert_eq!(
            validate_json(TOKEN, &in_fragment, body, Some(&sign_url(TOKEN, &in_fragment))),
            Err(SignatureError::BodyHashMismatch)
        );
    }

    #[test]
    fn query_param_reads_only_the_query() {
        let cases = [
            ("https://h/p?a=1&bodySHA256=ab", Some("ab")),
            ("https://h/p?a=1#bodySHA256=ab", None),
            ("https://h/p#x?bodySHA256=ab", None),
            ("https://h/p?bodySHA256=a%20b#bodySHA256=cd", Some("a b")),
            ("https://h/p", None),
        ];
        for (url, want) in cases {
            assert_eq!(query_param(url, "bodySHA256").as_deref(), want, "{url}");
        }
    }

    #[test]
    fn append_query_keeps_the_fragment_last() {
        let cases = [
            ("https://h/p", "x=1", "https://h/p?x=1"),
            ("https://h/p?a=1", "x=1", "https://h/p?a=1&x=1"),
            ("https://h/p?", "x=1", "https://h/p?x=1"),
            ("https://h/p?a=1&", "x=1", "https://h/p?a=1&x=1"),
            ("https://h/p#rc=2&rp=ct,5xx", "x=1&y=2", "https://h/p?x=1&y=2#rc=2&rp=ct,5xx"),
            ("https://h/p?a=1#rc=2", "x=1", "https://h/p?a=1&x=1#rc=2"),
            ("https://h/p#a?b", "x=1", "https://h/p?x=1#a?b"),
            ("https://h/p?a=1#rc=2", "", "https://h/p?a=1#rc=2"),
        ];
        for (url, query, want) in cases {
            assert_eq!(append_query(url, query), want, "{url} + {query}");
        }
    }

    #[test]
    fn json_body_checked_against_body_sha256() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let url = format!("https://mycompany.com/myapp?bodySHA256={}", body_sha256(body));
        let sig = sign_url(TOKEN, &url);
        assert!(validate_json(TOKEN, &url, body, Some(&sig)).is_ok());
        assert_eq!(validate_json(TOKEN, &url, b"{}", Some(&sig)), Err(SignatureError::BodyHashMismatch));
        // A signed URL without bodySHA256 would vouch for any body.
        let bare = "https://mycompany.com/myapp";
        assert_eq!(
            validate_json(TOKEN, bare, body, Some(&sign_url(TOKEN, bare))),
            Err(SignatureError::BodyHashMismatch)
        );
    }
}
