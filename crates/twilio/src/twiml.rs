//! TwiML: one type per verb, each rendering itself and parsing itself.
//!
//! The server renders with [`Response::to_xml`] (quick-xml escapes every
//! text and attribute value); the sandbox parses with [`Response::parse`]
//! (roxmltree, which refuses DTDs). Round-trip tests keep the two in step.
//! Nesting rules are in the types where they are cheap: a `Gather` holds only
//! prompts (`Say`, `Play`, `Pause`), a `Dial` holds nouns, an `Enqueue` an
//! optional `Task`.

use std::io::Cursor;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

/// Why a TwiML document was refused. The sandbox fails the call with
/// Twilio's error 12100 for any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwimlError {
    #[error("document is not well-formed XML: {0}")]
    Xml(String),
    #[error("root element must be <Response>, found <{0}>")]
    Root(String),
    #[error("<{parent}> may not contain <{child}>")]
    Nesting { parent: String, child: String },
    #[error("unknown verb <{0}>")]
    UnknownVerb(String),
    #[error("<{verb}> attribute {attr}={value:?} is invalid")]
    Attribute { verb: String, attr: &'static str, value: String },
    #[error("<{0}> needs text content")]
    Empty(String),
}

/// HTTP method of a TwiML callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    Get,
    #[default]
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
    fn parse(verb: &str, s: &str) -> Result<Self, TwimlError> {
        match s.to_ascii_uppercase().as_str() {
            "GET" => Ok(Method::Get),
            "POST" => Ok(Method::Post),
            _ => Err(TwimlError::Attribute { verb: verb.into(), attr: "method", value: s.into() }),
        }
    }
}

/// A whole TwiML document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Response {
    pub verbs: Vec<Verb>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verb {
    Say(Say),
    Play(Play),
    Pause(Pause),
    Gather(Gather),
    Redirect(Redirect),
    Hangup,
    Reject(Reject),
    Record(Record),
    Enqueue(Enqueue),
    Leave,
    Dial(Dial),
}

/// What a `Gather` may say while it waits for digits.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Say(Say),
    Play(Play),
    Pause(Pause),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Say {
    pub text: String,
    pub voice: Option<String>,
    pub language: Option<String>,
    pub loop_count: Option<u32>,
}

impl Say {
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), ..Self::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Play {
    pub url: String,
    pub loop_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pause {
    /// Seconds; Twilio's default is 1.
    pub length: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gather {
    pub action: Option<String>,
    pub method: Option<Method>,
    /// Seconds to wait for the first (or next) digit; Twilio's default is 5.
    pub timeout: Option<u32>,
    pub num_digits: Option<u32>,
    pub finish_on_key: Option<String>,
    /// `dtmf`, `speech` or `dtmf speech`.
    pub input: Option<String>,
    pub prompts: Vec<Prompt>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Redirect {
    pub url: String,
    pub method: Option<Method>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reject {
    /// `rejected` (the default) or `busy`.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub action: Option<String>,
    pub method: Option<Method>,
    /// Seconds of silence that end the recording; Twilio's default is 5.
    pub timeout: Option<u32>,
    /// Longest recording in seconds; Twilio's default is 3600.
    pub max_length: Option<u32>,
    pub finish_on_key: Option<String>,
    pub play_beep: Option<bool>,
    pub recording_status_callback: Option<String>,
    /// Transcribe the recording (Twilio's `transcribe`; English, 2 s to 2 min).
    pub transcribe: Option<bool>,
    /// Where Twilio posts the transcription (`TranscriptionText`,
    /// `TranscriptionStatus`, …); setting it implies `transcribe`.
    pub transcribe_callback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Enqueue {
    /// The queue name (text content); empty with `workflowSid`.
    pub queue_name: Option<String>,
    pub workflow_sid: Option<String>,
    pub wait_url: Option<String>,
    pub wait_url_method: Option<Method>,
    pub action: Option<String>,
    pub method: Option<Method>,
    pub task: Option<Task>,
}

/// The `<Task>` noun of `<Enqueue>`: the task's attributes as JSON text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Task {
    pub attributes: String,
    pub priority: Option<i64>,
    pub timeout: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dial {
    pub action: Option<String>,
    pub method: Option<Method>,
    /// Seconds to ring before giving up; Twilio's default is 30.
    pub timeout: Option<u32>,
    pub caller_id: Option<String>,
    pub time_limit: Option<u32>,
    /// A bare number as text content (`<Dial>+1415…</Dial>`).
    pub number_text: Option<String>,
    pub nouns: Vec<DialNoun>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DialNoun {
    Number(Number),
    Queue(Queue),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Number {
    pub number: String,
    pub url: Option<String>,
    pub status_callback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Queue {
    /// The queue name; for TaskRouter calls this is often empty.
    pub name: String,
    pub reservation_sid: Option<String>,
    pub url: Option<String>,
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// An element being rendered: a name, attributes in order, and content.
struct El {
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    content: Content,
}

enum Content {
    Empty,
    Text(String),
    Children(Vec<El>),
    /// Text followed by elements (an `Enqueue` with both a queue name and a `Task`).
    TextAndChildren(String, Vec<El>),
}

/// Escapes like quick-xml does, and also writes `\r` (and, in an attribute, `\t` and `\n`) as a character
/// reference: a parser normalizes the literal characters away (`\r` to `\n`, attribute whitespace to spaces).
fn escape(s: &str, attribute: bool) -> String {
    let escaped = quick_xml::escape::escape(s).replace('\r', "&#13;");
    if attribute { escaped.replace('\t', "&#9;").replace('\n', "&#10;") } else { escaped }
}

impl El {
    fn new(name: &'static str) -> Self {
        Self { name, attrs: Vec::new(), content: Content::Empty }
    }
    fn attr(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.attrs.push((name, v.to_string()));
        }
        self
    }
    fn text(mut self, text: &str) -> Self {
        self.content = Content::Text(text.to_owned());
        self
    }
    fn children(mut self, children: Vec<El>) -> Self {
        self.content = if children.is_empty() { Content::Empty } else { Content::Children(children) };
        self
    }

    fn write(&self, w: &mut Writer<Cursor<Vec<u8>>>) -> std::io::Result<()> {
        let mut el = w.create_element(self.name);
        for (k, v) in &self.attrs {
            el = el.with_attribute((k.as_bytes(), escape(v, true).as_bytes()));
        }
        match &self.content {
            Content::Empty => {
                el.write_empty()?;
            }
            Content::Text(t) => {
                el.write_text_content(BytesText::from_escaped(escape(t, false)))?;
            }
            Content::Children(children) => {
                el.write_inner_content(|w| {
                    for c in children {
                        c.write(w)?;
                    }
                    Ok::<(), std::io::Error>(())
                })?;
            }
            Content::TextAndChildren(t, children) => {
                el.write_inner_content(|w| {
                    w.write_event(Event::Text(BytesText::from_escaped(escape(t, false))))?;
                    for c in children {
                        c.write(w)?;
                    }
                    Ok::<(), std::io::Error>(())
                })?;
            }
        }
        Ok(())
    }
}

fn method(m: Option<Method>) -> Option<&'static str> {
    m.map(Method::as_str)
}

impl Say {
    fn el(&self) -> El {
        El::new("Say")
            .attr("voice", self.voice.as_ref())
            .attr("language", self.language.as_ref())
            .attr("loop", self.loop_count)
            .text(&self.text)
    }
}

impl Play {
    fn el(&self) -> El {
        El::new("Play").attr("loop", self.loop_count).text(&self.url)
    }
}

impl Pause {
    fn el(&self) -> El {
        El::new("Pause").attr("length", self.length)
    }
}

impl Prompt {
    fn el(&self) -> El {
        match self {
            Prompt::Say(s) => s.el(),
            Prompt::Play(p) => p.el(),
            Prompt::Pause(p) => p.el(),
        }
    }
}

impl Verb {
    fn el(&self) -> El {
        match self {
            Verb::Say(s) => s.el(),
            Verb::Play(p) => p.el(),
            Verb::Pause(p) => p.el(),
            Verb::Gather(g) => El::new("Gather")
                .attr("input", g.input.as_ref())
                .attr("action", g.action.as_ref())
                .attr("method", method(g.method))
                .attr("timeout", g.timeout)
                .attr("numDigits", g.num_digits)
                .attr("finishOnKey", g.finish_on_key.as_ref())
                .children(g.prompts.iter().map(Prompt::el).collect()),
            Verb::Redirect(r) => El::new("Redirect").attr("method", method(r.method)).text(&r.url),
            Verb::Hangup => El::new("Hangup"),
            Verb::Reject(r) => El::new("Reject").attr("reason", r.reason.as_ref()),
            Verb::Record(r) => El::new("Record")
                .attr("action", r.action.as_ref())
                .attr("method", method(r.method))
                .attr("timeout", r.timeout)
                .attr("maxLength", r.max_length)
                .attr("finishOnKey", r.finish_on_key.as_ref())
                .attr("playBeep", r.play_beep)
                .attr("recordingStatusCallback", r.recording_status_callback.as_ref())
                .attr("transcribe", r.transcribe)
                .attr("transcribeCallback", r.transcribe_callback.as_ref()),
            Verb::Enqueue(e) => {
                let el = El::new("Enqueue")
                    .attr("workflowSid", e.workflow_sid.as_ref())
                    .attr("waitUrl", e.wait_url.as_ref())
                    .attr("waitUrlMethod", method(e.wait_url_method))
                    .attr("action", e.action.as_ref())
                    .attr("method", method(e.method));
                match (&e.task, &e.queue_name) {
                    (Some(t), name) => {
                        let task =
                            El::new("Task").attr("priority", t.priority).attr("timeout", t.timeout).text(&t.attributes);
                        match name {
                            Some(name) => El { content: Content::TextAndChildren(name.clone(), vec![task]), ..el },
                            None => el.children(vec![task]),
                        }
                    }
                    (None, Some(name)) => el.text(name),
                    (None, None) => el,
                }
            }
            Verb::Leave => El::new("Leave"),
            Verb::Dial(d) => {
                let el = El::new("Dial")
                    .attr("action", d.action.as_ref())
                    .attr("method", method(d.method))
                    .attr("timeout", d.timeout)
                    .attr("callerId", d.caller_id.as_ref())
                    .attr("timeLimit", d.time_limit);
                if d.nouns.is_empty() {
                    match &d.number_text {
                        Some(n) => el.text(n),
                        None => el,
                    }
                } else {
                    el.children(
                        d.nouns
                            .iter()
                            .map(|n| match n {
                                DialNoun::Number(n) => El::new("Number")
                                    .attr("url", n.url.as_ref())
                                    .attr("statusCallback", n.status_callback.as_ref())
                                    .text(&n.number),
                                DialNoun::Queue(q) => {
                                    let el = El::new("Queue")
                                        .attr("reservationSid", q.reservation_sid.as_ref())
                                        .attr("url", q.url.as_ref());
                                    if q.name.is_empty() { el } else { el.text(&q.name) }
                                }
                            })
                            .collect(),
                    )
                }
            }
        }
    }
}

impl Response {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a verb (builder style).
    pub fn verb(mut self, v: Verb) -> Self {
        self.verbs.push(v);
        self
    }

    pub fn say(self, text: impl Into<String>) -> Self {
        self.verb(Verb::Say(Say::new(text)))
    }

    /// Renders the document. Every text and attribute value is escaped.
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new(Cursor::new(Vec::with_capacity(256)));
        let root = El::new("Response").children(self.verbs.iter().map(Verb::el).collect());
        // Writing into a Vec cannot fail.
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
            .and_then(|_| root.write(&mut w))
            .expect("writing TwiML into memory cannot fail");
        String::from_utf8(w.into_inner().into_inner()).expect("quick-xml writes UTF-8")
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

type Node<'a, 'i> = roxmltree::Node<'a, 'i>;

fn attr_str(n: Node, name: &str) -> Option<String> {
    n.attribute(name).map(str::to_owned)
}

fn attr_num<T: std::str::FromStr>(n: Node, name: &'static str) -> Result<Option<T>, TwimlError> {
    match n.attribute(name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| TwimlError::Attribute {
            verb: n.tag_name().name().into(),
            attr: name,
            value: v.into(),
        }),
    }
}

fn attr_method(n: Node, name: &'static str) -> Result<Option<Method>, TwimlError> {
    n.attribute(name).map(|v| Method::parse(n.tag_name().name(), v)).transpose()
}

fn attr_bool(n: Node, name: &'static str) -> Result<Option<bool>, TwimlError> {
    match n.attribute(name) {
        None => Ok(None),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(TwimlError::Attribute { verb: n.tag_name().name().into(), attr: name, value: v.into() }),
        },
    }
}

/// The text content of an element, trimmed.
fn text(n: Node) -> String {
    n.children().filter(|c| c.is_text()).filter_map(|c| c.text()).collect::<String>().trim().to_owned()
}

fn elements<'a, 'i>(n: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(|c| c.is_element())
}

fn no_children(n: Node) -> Result<(), TwimlError> {
    match elements(n).next() {
        Some(c) => Err(TwimlError::Nesting { parent: n.tag_name().name().into(), child: c.tag_name().name().into() }),
        None => Ok(()),
    }
}

impl Say {
    fn parse(n: Node) -> Result<Self, TwimlError> {
        no_children(n)?;
        Ok(Say {
            text: text(n),
            voice: attr_str(n, "voice"),
            language: attr_str(n, "language"),
            loop_count: attr_num(n, "loop")?,
        })
    }
}

impl Play {
    fn parse(n: Node) -> Result<Self, TwimlError> {
        no_children(n)?;
        Ok(Play { url: text(n), loop_count: attr_num(n, "loop")? })
    }
}

impl Pause {
    fn parse(n: Node) -> Result<Self, TwimlError> {
        no_children(n)?;
        Ok(Pause { length: attr_num(n, "length")? })
    }
}

impl Verb {
    fn parse(n: Node) -> Result<Self, TwimlError> {
        let name = n.tag_name().name();
        Ok(match name {
            "Say" => Verb::Say(Say::parse(n)?),
            "Play" => Verb::Play(Play::parse(n)?),
            "Pause" => Verb::Pause(Pause::parse(n)?),
            "Gather" => {
                let prompts = elements(n)
                    .map(|c| match c.tag_name().name() {
                        "Say" => Say::parse(c).map(Prompt::Say),
                        "Play" => Play::parse(c).map(Prompt::Play),
                        "Pause" => Pause::parse(c).map(Prompt::Pause),
                        other => Err(TwimlError::Nesting { parent: "Gather".into(), child: other.into() }),
                    })
                    .collect::<Result<_, _>>()?;
                Verb::Gather(Gather {
                    action: attr_str(n, "action"),
                    method: attr_method(n, "method")?,
                    timeout: attr_num(n, "timeout")?,
                    num_digits: attr_num(n, "numDigits")?,
                    finish_on_key: attr_str(n, "finishOnKey"),
                    input: attr_str(n, "input"),
                    prompts,
                })
            }
            "Redirect" => {
                no_children(n)?;
                let url = text(n);
                if url.is_empty() {
                    return Err(TwimlError::Empty("Redirect".into()));
                }
                Verb::Redirect(Redirect { url, method: attr_method(n, "method")? })
            }
            "Hangup" => {
                no_children(n)?;
                Verb::Hangup
            }
            "Leave" => {
                no_children(n)?;
                Verb::Leave
            }
            "Reject" => {
                no_children(n)?;
                let reason = attr_str(n, "reason");
                if let Some(r) = reason.as_ref().filter(|r| *r != "busy" && *r != "rejected") {
                    return Err(TwimlError::Attribute { verb: "Reject".into(), attr: "reason", value: r.clone() });
                }
                Verb::Reject(Reject { reason })
            }
            "Record" => {
                no_children(n)?;
                Verb::Record(Record {
                    action: attr_str(n, "action"),
                    method: attr_method(n, "method")?,
                    timeout: attr_num(n, "timeout")?,
                    max_length: attr_num(n, "maxLength")?,
                    finish_on_key: attr_str(n, "finishOnKey"),
                    play_beep: attr_bool(n, "playBeep")?,
                    recording_status_callback: attr_str(n, "recordingStatusCallback"),
                    transcribe: attr_bool(n, "transcribe")?,
                    transcribe_callback: attr_str(n, "transcribeCallback"),
                })
            }
            "Enqueue" => {
                let mut task = None;
                for c in elements(n) {
                    if c.tag_name().name() != "Task" || task.is_some() {
                        return Err(TwimlError::Nesting {
                            parent: "Enqueue".into(),
                            child: c.tag_name().name().into(),
                        });
                    }
                    no_children(c)?;
                    task = Some(Task {
                        attributes: text(c),
                        priority: attr_num(c, "priority")?,
                        timeout: attr_num(c, "timeout")?,
                    });
                }
                let name = text(n);
                Verb::Enqueue(Enqueue {
                    queue_name: (!name.is_empty()).then_some(name),
                    workflow_sid: attr_str(n, "workflowSid"),
                    wait_url: attr_str(n, "waitUrl"),
                    wait_url_method: attr_method(n, "waitUrlMethod")?,
                    action: attr_str(n, "action"),
                    method: attr_method(n, "method")?,
                    task,
                })
            }
            "Dial" => {
                let nouns = elements(n)
                    .map(|c| match c.tag_name().name() {
                        "Number" => {
                            no_children(c)?;
                            Ok(DialNoun::Number(Number {
                                number: text(c),
                                url: attr_str(c, "url"),
                                status_callback: attr_str(c, "statusCallback"),
                            }))
                        }
                        "Queue" => {
                            no_children(c)?;
                            Ok(DialNoun::Queue(Queue {
                                name: text(c),
                                reservation_sid: attr_str(c, "reservationSid"),
                                url: attr_str(c, "url"),
                            }))
                        }
                        other => Err(TwimlError::Nesting { parent: "Dial".into(), child: other.into() }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let bare = text(n);
                Verb::Dial(Dial {
                    action: attr_str(n, "action"),
                    method: attr_method(n, "method")?,
                    timeout: attr_num(n, "timeout")?,
                    caller_id: attr_str(n, "callerId"),
                    time_limit: attr_num(n, "timeLimit")?,
                    number_text: (nouns.is_empty() && !bare.is_empty()).then_some(bare),
                    nouns,
                })
            }
            other => return Err(TwimlError::UnknownVerb(other.into())),
        })
    }
}

impl Response {
    /// Parses a TwiML document strictly: unknown verbs, bad nesting and
    /// malformed attribute values are errors.
    pub fn parse(xml: &str) -> Result<Self, TwimlError> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| TwimlError::Xml(e.to_string()))?;
        let root = doc.root_element();
        if root.tag_name().name() != "Response" {
            return Err(TwimlError::Root(root.tag_name().name().into()));
        }
        let verbs = elements(root).map(Verb::parse).collect::<Result<_, _>>()?;
        Ok(Response { verbs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Response {
        Response::new()
            .say("Welcome to <Acme> & \"friends\"")
            .verb(Verb::Gather(Gather {
                action: Some("/menu?x=1&y=2".into()),
                num_digits: Some(1),
                timeout: Some(5),
                prompts: vec![Prompt::Say(Say::new("Press 1")), Prompt::Pause(Pause { length: Some(1) })],
                ..Gather::default()
            }))
            .verb(Verb::Enqueue(Enqueue {
                workflow_sid: Some("WW0123456789abcdef0123456789abcdef".into()),
                wait_url: Some("/hold".into()),
                action: Some("/enqueue-action".into()),
                task: Some(Task { attributes: r#"{"location":"north","note":"<&>"}"#.into(), ..Task::default() }),
                ..Enqueue::default()
            }))
            .verb(Verb::Dial(Dial {
                nouns: vec![DialNoun::Queue(Queue {
                    reservation_sid: Some("WR0123456789abcdef0123456789abcdef".into()),
                    ..Queue::default()
                })],
                ..Dial::default()
            }))
            .verb(Verb::Record(Record {
                action: Some("/vm".into()),
                max_length: Some(60),
                play_beep: Some(true),
                ..Record::default()
            }))
            .verb(Verb::Redirect(Redirect { url: "/again".into(), method: Some(Method::Post) }))
            .verb(Verb::Reject(Reject { reason: Some("busy".into()) }))
            .verb(Verb::Pause(Pause::default()))
            .verb(Verb::Play(Play { url: "https://x/y.mp3".into(), loop_count: Some(0) }))
            .verb(Verb::Leave)
            .verb(Verb::Hangup)
    }

    #[test]
    fn round_trips() {
        let doc = sample();
        assert_eq!(Response::parse(&doc.to_xml()).unwrap(), doc);
    }

    #[test]
    fn say_language_and_voice_round_trip() {
        let say = Say {
            text: "Para español, oprima 9.".into(),
            voice: Some("Polly.Mia-Neural".into()),
            language: Some("es-MX".into()),
            loop_count: Some(2),
        };
        let doc = Response::new().verb(Verb::Say(say.clone())).verb(Verb::Gather(Gather {
            prompts: vec![Prompt::Say(Say { loop_count: None, ..say })],
            ..Gather::default()
        }));
        let xml = doc.to_xml();
        assert!(
            xml.contains(r#"<Say voice="Polly.Mia-Neural" language="es-MX" loop="2">Para español, oprima 9.</Say>"#),
            "{xml}"
        );
        assert_eq!(Response::parse(&xml).unwrap(), doc);
    }

    #[test]
    fn escapes_text_and_attributes() {
        let xml = sample().to_xml();
        assert!(
            xml.contains("Welcome to &lt;Acme&gt; &amp; &quot;friends&quot;")
                || xml.contains("Welcome to &lt;Acme&gt; &amp; \"friends\""),
            "{xml}"
        );
        assert!(xml.contains(r#"action="/menu?x=1&amp;y=2""#), "{xml}");
        assert!(xml.contains("&lt;&amp;&gt;"), "{xml}");
        assert!(xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#), "{xml}");
    }

    /// Found by the `twiml_parse` fuzz target: a queue name beside a `<Task>` was dropped on rendering, and
    /// `\r`, tabs and newlines from character references came back as `\n` or spaces.
    #[test]
    fn fuzz_found_documents_round_trip() {
        for xml in [
            "<Response><Enqueue>q<Task/></Enqueue></Response>",
            "<Response><Say>a&#13;b</Say></Response>",
            "<Response><Say voice=\"a&#9;b&#10;c&#13;d\">x</Say></Response>",
        ] {
            let doc = Response::parse(xml).unwrap();
            assert_eq!(Response::parse(&doc.to_xml()).unwrap(), doc, "{xml}");
        }
    }

    #[test]
    fn dial_queue_renders_exactly() {
        let doc = Response::new().verb(Verb::Dial(Dial {
            nouns: vec![DialNoun::Queue(Queue { reservation_sid: Some("WRabc".into()), ..Queue::default() })],
            ..Dial::default()
        }));
        assert_eq!(
            doc.to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Queue reservationSid="WRabc"/></Dial></Response>"#
        );
    }

    #[test]
    fn refuses_bad_documents() {
        for (xml, what) in [
            ("<Response><Say>hi</Say>", "unclosed"),
            ("<Foo/>", "root"),
            ("<Response><Dance/></Response>", "unknown verb"),
            ("<Response><Gather><Dial/></Gather></Response>", "nesting"),
            ("<Response><Gather numDigits=\"x\"/></Response>", "attribute"),
            ("<Response><Redirect/></Response>", "empty redirect"),
            ("<!DOCTYPE x [<!ENTITY a \"b\">]><Response/>", "dtd"),
        ] {
            assert!(Response::parse(xml).is_err(), "{what}: {xml}");
        }
    }

    proptest! {
        #[test]
        fn any_say_text_round_trips(text in "\\PC{0,40}") {
            // XML cannot carry most control characters, and parse trims, so
            // compare on what a document can carry.
            let clean: String = text.chars().filter(|c| !c.is_control()).collect::<String>().trim().to_owned();
            let doc = Response::new().say(clean.clone());
            let back = Response::parse(&doc.to_xml()).unwrap();
            prop_assert_eq!(back, doc);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = Response::parse(&s);
        }
    }
}
