//! `twiml::Response::parse` reads the TwiML our webhooks return (the sandbox
//! parses it as Twilio would), so it sees whatever a handler can render.
//!
//! Properties: parsing never panics; whatever parses renders with `to_xml`
//! to a document that parses back to an equal `Response` (the types derive
//! `PartialEq`), and rendering that again gives the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twilio::twiml::Response;

fuzz_target!(|xml: &str| {
    let Ok(response) = Response::parse(xml) else {
        return;
    };
    let rendered = response.to_xml();
    let back = match Response::parse(&rendered) {
        Ok(back) => back,
        Err(e) => panic!("to_xml rendered a document parse refuses ({e}):\n{rendered}\nfrom {response:?}"),
    };
    assert_eq!(back, response, "round trip changed the document; rendered:\n{rendered}");
    assert_eq!(back.to_xml(), rendered, "rendering is not stable");
});
