//! Form parameters as Twilio sends and expects them.
//!
//! Twilio bodies are `application/x-www-form-urlencoded` and may repeat a key
//! (`StatusCallbackEvent=initiated&StatusCallbackEvent=ringing`). A map would
//! lose the repeats, so parameters are an ordered list of pairs.

/// An ordered list of form parameters; keys may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Decodes a form body. Undecodable percent escapes are kept literally,
    /// as form decoders do; this never fails.
    pub fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded_parse(body))
    }

    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.push((key.into(), value.into()));
        self
    }

    /// Adds the pair when `value` is `Some`.
    pub fn push_opt(&mut self, key: impl Into<String>, value: Option<impl Into<String>>) -> &mut Self {
        if let Some(v) = value {
            self.0.push((key.into(), v.into()));
        }
        self
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Encodes as a form body with every value percent-encoded.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            percent_encode_into(&mut out, k);
            out.push('=');
            percent_encode_into(&mut out, v);
        }
        out
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.0
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

/// Percent-encodes everything but the unreserved set (RFC 3986), so `+`
/// becomes `%2B` and survives any form or query decoder.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    percent_encode_into(&mut out, s);
    out
}

fn percent_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// Decodes `application/x-www-form-urlencoded`: `+` is a space and `%XX` a
/// byte; invalid escapes pass through unchanged and invalid UTF-8 is replaced.
pub fn form_urlencoded_parse(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut it = part.splitn(2, |&b| b == b'=');
            let k = it.next().unwrap_or_default();
            let v = it.next().unwrap_or_default();
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// Decodes one form component.
pub fn decode_component(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < s.len() => match (hex_val(s[i + 1]), hex_val(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repeated_keys_survive() {
        let p = Params::parse(b"StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&To=%2B14155550100");
        assert_eq!(p.get_all("StatusCallbackEvent").collect::<Vec<_>>(), ["initiated", "ringing"]);
        assert_eq!(p.get("To"), Some("+14155550100"));
    }

    #[test]
    fn plus_is_space_and_bad_escapes_pass_through() {
        let p = Params::parse(b"a=1+2&b=%ZZ&c=%4&d=%");
        assert_eq!(p.get("a"), Some("1 2"));
        assert_eq!(p.get("b"), Some("%ZZ"));
        assert_eq!(p.get("c"), Some("%4"));
        assert_eq!(p.get("d"), Some("%"));
    }

    #[test]
    fn encode_escapes_plus() {
        let mut p = Params::new();
        p.push("From", "+1 415&x=y");
        assert_eq!(p.encode(), "From=%2B1%20415%26x%3Dy");
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(pairs in proptest::collection::vec(("\\PC{0,12}", "\\PC{0,12}"), 0..6)) {
            let p: Params = pairs.iter().filter(|(k, _)| !k.is_empty()).cloned().collect();
            prop_assert_eq!(Params::parse(p.encode().as_bytes()), p);
        }

        #[test]
        fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Params::parse(&body);
        }
    }
}
