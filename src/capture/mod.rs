//! What was sent (SPEC.md section 10): every outcome of [`crate::relay::Relay::submit`]
//! kept in a bounded in-memory store, for the capture API and the pages.
//!
//! The store holds at most `[capture] max_messages` records (the oldest dropped first)
//! and at most `max_bytes` of raw message bodies: past it, the oldest bodies are evicted
//! and their records stay, without raw bytes. `max_messages = 0` turns capture off.

mod search;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::broadcast;

pub use search::Query;

/// Records kept when `[capture] max_messages` is not set.
pub const DEFAULT_MAX_MESSAGES: usize = 1000;
/// Raw bytes kept when `[capture] max_bytes` is not set: 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What became of a captured message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream took it (or, for mailbox-simulator and suppressed recipients only,
    /// sesrelay accepted it without the upstream).
    Forwarded,
    /// The SES rules (or the account's sending limits) refused it.
    Rejected,
    /// The upstream refused it, for good or for now.
    UpstreamRefused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Rejected => "rejected",
            Outcome::UpstreamRefused => "upstream-refused",
        }
    }
}

/// Where a message's configuration set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetSource {
    /// The `X-SES-CONFIGURATION-SET` header.
    Header,
    /// The API's `ConfigurationSetName`.
    ApiParameter,
    /// The default set of a verified address.
    AddressDefault,
    /// The default set of a verified domain.
    DomainDefault,
    /// No set (or not known: the message was refused before its set was resolved).
    None,
}

impl SetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SetSource::Header => "header",
            SetSource::ApiParameter => "api-parameter",
            SetSource::AddressDefault => "address-default",
            SetSource::DomainDefault => "domain-default",
            SetSource::None => "none",
        }
    }
}

/// One event record published for a captured message, to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedEvent {
    /// `Send`, `Delivery`, `Bounce`, `Complaint`.
    pub event_type: String,
    pub time: SystemTime,
    /// `<configuration set>/<event destination>`.
    pub destination: String,
    /// A short line: the recipients, and the response or bounce type.
    pub summary: String,
}

/// What a Simple API send was made of (LocalStack's record of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleParts {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Every recipient the request named (To, then Cc, then Bcc).
    pub destination: Vec<String>,
    /// The request's `Destination`.
    pub to_addresses: Vec<String>,
    pub cc_addresses: Vec<String>,
    pub bcc_addresses: Vec<String>,
}

/// A message's headers (name and unfolded value, in order) and its text and HTML parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// The events of one message, shared by the publisher (which appends) and its record.
#[derive(Debug, Clone, Default)]
pub struct EventLog(Arc<Mutex<Vec<CapturedEvent>>>);

impl EventLog {
    pub fn new() -> EventLog {
        EventLog::default()
    }

    pub fn push(&self, event: CapturedEvent) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    pub fn snapshot(&self) -> Vec<CapturedEvent> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A captured message, as [`CaptureStore::record`] takes it (the store numbers it).
#[derive(Debug, Clone)]
pub struct NewCapture {
    pub id: String,
    pub time: SystemTime,
    pub protocol: &'static str,
    pub client: IpAddr,
    pub user: Option<String>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub outcome: Outcome,
    pub reply: String,
    pub configuration_set: Option<String>,
    pub set_source: SetSource,
    pub identity: Option<String>,
    pub tags: Vec<(String, String)>,
    pub size: usize,
    pub simple: Option<SimpleParts>,
    /// As forwarded when forwarded, else as received.
    pub raw: RawMessage,
    pub events: EventLog,
}

/// One captured outcome.
#[derive(Debug)]
pub struct Captured {
    pub id: String,
    /// Increases by one per captured message, from 1.
    pub seq: u64,
    pub time: SystemTime,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA` or `HTTP`.
    pub protocol: &'static str,
    pub client: IpAddr,
    /// The SMTP AUTH user.
    pub user: Option<String>,
    /// The reverse path; empty for `<>`.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The From header as written (`Joe <joe@example.com>`), decoded.
    pub from: String,
    /// The To header's mailboxes, each as `Name <address>` or `address`.
    pub to: Vec<String>,
    pub subject: String,
    pub outcome: Outcome,
    /// The SMTP reply line the client got (`250 Ok <id>`, `554 5.7.1 ...`).
    pub reply: String,
    pub configuration_set: Option<String>,
    pub set_source: SetSource,
    /// The verified identity whose default decided (or that has none).
    pub identity: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Bytes as received.
    pub size: usize,
    pub simple: Option<SimpleParts>,
    raw: Mutex<Option<RawMessage>>,
    events: EventLog,
}

/// Messages from this size on are kept as handles on the relay's own buffer, not copies.
const SHARE_FROM: usize = 64 * 1024;

/// A captured message's bytes: a head and a body, so that a forwarded message keeps its
/// rewritten head (small, copied) and shares its body with the relay's own buffer instead
/// of being copied whole (SPEC 9: a message is held about once).
#[derive(Debug, Clone, Default)]
pub struct RawMessage {
    head: Bytes,
    body: Bytes,
}

impl RawMessage {
    /// A message as received. A small one is copied: a handle on the session's buffer
    /// would keep that buffer's whole capacity alive, which for a message grown without
    /// `SIZE=` can be twice its length; a large one is shared (held once).
    pub fn received(content: &Bytes) -> RawMessage {
        if content.len() < SHARE_FROM {
            RawMessage::whole(Bytes::copy_from_slice(content))
        } else {
            RawMessage::whole(content.clone())
        }
    }

    /// A message as forwarded: small, copied in one piece; large, its rewritten head copied
    /// and its body shared with the relay's buffer.
    pub fn forwarded(forwarded: &crate::message::Forwarded) -> RawMessage {
        if forwarded.len() < SHARE_FROM {
            RawMessage::whole(forwarded.to_bytes())
        } else {
            let (head, body) = forwarded.head_and_body();
            RawMessage::new(head, body)
        }
    }

    /// Bytes in one piece.
    pub fn whole(bytes: Bytes) -> RawMessage {
        RawMessage {
            head: bytes,
            body: Bytes::new(),
        }
    }

    /// A head and a body (a message as forwarded).
    pub fn new(head: Bytes, body: Bytes) -> RawMessage {
        RawMessage { head, body }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in one buffer: without a copy when they are in one piece.
    pub fn to_bytes(&self) -> Bytes {
        if self.body.is_empty() {
            return self.head.clone();
        }
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }

    /// The part that holds the header block.
    fn head(&self) -> &[u8] {
        &self.head
    }
}

impl Captured {
    /// The raw bytes (as forwarded, or as received when not forwarded); `None` once
    /// evicted by `max_bytes`.
    pub fn raw(&self) -> Option<Bytes> {
        self.raw
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(RawMessage::to_bytes)
    }

    /// The events published for the message so far.
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.events.snapshot()
    }

    /// The headers and the text and HTML parts; `None` once the raw bytes are evicted.
    pub fn parts(&self) -> Option<Parts> {
        let raw = self.raw()?;
        Some(parse_parts(&raw))
    }

    fn take_raw(&self) -> usize {
        self.raw
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .map_or(0, |raw| raw.len())
    }
}

/// Reads headers and the first text and HTML parts with mail-parser. A text part that
/// mail-parser made from the HTML (or the reverse) is not reported.
pub fn parse_parts(raw: &[u8]) -> Parts {
    let Some(message) = mail_parser::MessageParser::default().parse(raw) else {
        return Parts {
            headers: Vec::new(),
            text: None,
            html: None,
        };
    };
    let headers = message
        .headers()
        .iter()
        .map(|h| {
            let value = raw
                .get(h.offset_start as usize..h.offset_end as usize)
                .map(crate::message::unfold)
                .unwrap_or_default();
            (h.name().to_owned(), value.trim().to_owned())
        })
        .collect();
    let text = message
        .text_body
        .first()
        .and_then(|&id| match &message.part(id)?.body {
            mail_parser::PartType::Text(text) => Some(text.to_string()),
            _ => None,
        });
    let html = message
        .html_body
        .first()
        .and_then(|&id| match &message.part(id)?.body {
            mail_parser::PartType::Html(html) => Some(html.to_string()),
            _ => None,
        });
    Parts {
        headers,
        text,
        html,
    }
}

/// From (as written), To (each mailbox) and Subject, decoded, from the header block.
fn summary_of(raw: &[u8]) -> (String, Vec<String>, String) {
    let Some(message) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return (String::new(), Vec::new(), String::new());
    };
    let mailbox = |a: &mail_parser::Addr<'_>| match (a.name(), a.address()) {
        (Some(name), Some(address)) if !name.is_empty() => format!("{name} <{address}>"),
        (_, Some(address)) => address.to_owned(),
        (Some(name), None) => name.to_owned(),
        (None, None) => String::new(),
    };
    let from = message
        .from()
        .map(|a| a.iter().map(mailbox).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let to = message
        .to()
        .map(|a| a.iter().map(mailbox).collect())
        .unwrap_or_default();
    let subject = message.subject().unwrap_or_default().to_owned();
    (from, to, subject)
}

struct Inner {
    max_messages: usize,
    max_bytes: usize,
    /// Oldest first.
    records: VecDeque<Arc<Captured>>,
    /// The records that may still hold raw bytes, oldest first.
    bodies: VecDeque<Arc<Captured>>,
    /// Raw bytes held.
    bytes: usize,
    next_seq: u64,
}

impl Inner {
    /// Drops the oldest record, and its body. `bodies` lists the records that still hold a
    /// body in the same order as `records`, so the dropped record, when it has one, is the
    /// front of `bodies` too.
    fn drop_oldest(&mut self) {
        if let Some(old) = self.records.pop_front() {
            self.bytes -= old.take_raw();
            if self.bodies.front().is_some_and(|b| Arc::ptr_eq(b, &old)) {
                self.bodies.pop_front();
            }
        }
    }

    fn evict_bodies(&mut self) {
        while self.bytes > self.max_bytes {
            let Some(old) = self.bodies.pop_front() else {
                break;
            };
            self.bytes -= old.take_raw();
        }
    }
}

/// The bounded store of captured messages.
pub struct CaptureStore {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<Captured>>,
}

impl std::fmt::Debug for CaptureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureStore").finish_non_exhaustive()
    }
}

impl Default for CaptureStore {
    fn default() -> Self {
        CaptureStore::new(DEFAULT_MAX_MESSAGES, DEFAULT_MAX_BYTES)
    }
}

impl CaptureStore {
    pub fn new(max_messages: usize, max_bytes: usize) -> CaptureStore {
        let (live, _) = broadcast::channel(256);
        CaptureStore {
            inner: Mutex::new(Inner {
                max_messages,
                max_bytes,
                records: VecDeque::new(),
                bodies: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
            }),
            live,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the bounds (a reload); what is over them goes now.
    pub fn configure(&self, max_messages: usize, max_bytes: usize) {
        let mut inner = self.lock();
        inner.max_messages = max_messages;
        inner.max_bytes = max_bytes;
        while inner.records.len() > max_messages {
            inner.drop_oldest();
        }
        inner.evict_bodies();
    }

    /// False when `max_messages` is 0: nothing is captured.
    pub fn enabled(&self) -> bool {
        self.lock().max_messages > 0
    }

    /// Raw bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Keeps `new` (unless capture is off) and tells the subscribers.
    pub fn record(&self, new: NewCapture) -> Option<Arc<Captured>> {
        let (from, to, subject) = summary_of(new.raw.head());
        let mut inner = self.lock();
        if inner.max_messages == 0 {
            return None;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let keep_raw = new.raw.len() <= inner.max_bytes;
        let captured = Arc::new(Captured {
            id: new.id,
            seq,
            time: new.time,
            protocol: new.protocol,
            client: new.client,
            user: new.user,
            mail_from: new.mail_from,
            rcpt_to: new.rcpt_to,
            from,
            to,
            subject,
            outcome: new.outcome,
            reply: new.reply,
            configuration_set: new.configuration_set,
            set_source: new.set_source,
            identity: new.identity,
            tags: new.tags,
            size: new.size,
            simple: new.simple,
            raw: Mutex::new(keep_raw.then_some(new.raw.clone())),
            events: new.events,
        });
        while inner.records.len() >= inner.max_messages {
            inner.drop_oldest();
        }
        inner.records.push_back(Arc::clone(&captured));
        if keep_raw {
            inner.bytes += new.raw.len();
            inner.bodies.push_back(Arc::clone(&captured));
            inner.evict_bodies();
        }
        drop(inner);
        // No subscriber is not an error.
        let _ = self.live.send(Arc::clone(&captured));
        Some(captured)
    }

    /// Newest first: `limit` records from the `start`th, and how many there are.
    pub fn list(&self, start: usize, limit: usize) -> (usize, Vec<Arc<Captured>>) {
        let inner = self.lock();
        let total = inner.records.len();
        let page = inner
            .records
            .iter()
            .rev()
            .skip(start)
            .take(limit)
            .cloned()
            .collect();
        (total, page)
    }

    /// The record with this id (`latest` is not special here: see [`CaptureStore::latest`]).
    pub fn get(&self, id: &str) -> Option<Arc<Captured>> {
        let inner = self.lock();
        inner.records.iter().rev().find(|c| c.id == id).cloned()
    }

    /// The newest record.
    pub fn latest(&self) -> Option<Arc<Captured>> {
        self.lock().records.back().cloned()
    }

    /// Newest first, the records matching `query` ([`Query`]): `limit` from the
    /// `start`th, and how many match.
    pub fn search(&self, query: &str, start: usize, limit: usize) -> (usize, Vec<Arc<Captured>>) {
        let query = Query::parse(query);
        let all: Vec<Arc<Captured>> = self.lock().records.iter().rev().cloned().collect();
        let matching: Vec<Arc<Captured>> = all.into_iter().filter(|c| query.matches(c)).collect();
        let total = matching.len();
        (
            total,
            matching.into_iter().skip(start).take(limit).collect(),
        )
    }

    /// Forgets every record.
    pub fn delete_all(&self) {
        let mut inner = self.lock();
        inner.records.clear();
        inner.bodies.clear();
        inner.bytes = 0;
    }

    /// Forgets the records with these ids; how many there were.
    pub fn delete(&self, ids: &[String]) -> usize {
        let ids: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut inner = self.lock();
        let before = inner.records.len();
        let mut freed = 0;
        inner.records.retain(|c| {
            if ids.contains(c.id.as_str()) {
                freed += c.take_raw();
                false
            } else {
                true
            }
        });
        inner.bytes -= freed;
        inner.bodies.retain(|c| !ids.contains(c.id.as_str()));
        before - inner.records.len()
    }

    /// Every record captured from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Captured>> {
        self.live.subscribe()
    }

    /// Oldest first, the records captured after the one with id `last_event_id` (for
    /// Server-Sent Events' `Last-Event-ID`); none when that record is no longer kept, as
    /// what came after it cannot be told.
    pub fn since(&self, last_event_id: &str) -> Vec<Arc<Captured>> {
        let inner = self.lock();
        let Some(seq) = inner
            .records
            .iter()
            .find(|c| c.id == last_event_id)
            .map(|c| c.seq)
        else {
            return Vec::new();
        };
        inner
            .records
            .iter()
            .filter(|c| c.seq > seq)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: &str, raw: &str) -> NewCapture {
        NewCapture {
            id: id.to_owned(),
            time: SystemTime::now(),
            protocol: "ESMTP",
            client: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            user: None,
            mail_from: "a@example.com".into(),
            rcpt_to: vec!["b@example.net".into()],
            outcome: Outcome::Forwarded,
            reply: "250 Ok".into(),
            configuration_set: None,
            set_source: SetSource::None,
            identity: None,
            tags: Vec::new(),
            size: raw.len(),
            simple: None,
            raw: RawMessage::whole(Bytes::from(raw.to_owned())),
            events: EventLog::new(),
        }
    }

    const MAIL: &str = "From: Joe <joe@example.com>\r\nTo: a@example.net, B <b@example.net>\r\nSubject: =?UTF-8?Q?H=C3=A9llo?=\r\n\r\nbody\r\n";

    #[test]
    fn keeps_the_newest_records_and_bytes() {
        let store = CaptureStore::new(3, 2 * MAIL.len());
        for i in 0..5 {
            store.record(new(&format!("m{i}"), MAIL));
        }
        let (total, page) = store.list(0, 10);
        assert_eq!(total, 3);
        let ids: Vec<&str> = page.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["m4", "m3", "m2"]);
        assert!(page[0].raw().is_some() && page[1].raw().is_some());
        assert!(page[2].raw().is_none(), "the oldest body goes first");
        assert_eq!(store.bytes(), 2 * MAIL.len());
        assert_eq!(page[0].seq, 5);
        assert_eq!(store.latest().unwrap().id, "m4");
        assert_eq!(store.list(1, 1).1[0].id, "m3");
    }

    #[test]
    fn off_when_max_messages_is_zero() {
        let store = CaptureStore::new(0, 100);
        assert!(!store.enabled());
        assert!(store.record(new("x", MAIL)).is_none());
        assert_eq!(store.list(0, 10).0, 0);
    }

    #[test]
    fn reads_the_summary_and_parts() {
        let store = CaptureStore::default();
        let c = store.record(new("x", MAIL)).unwrap();
        assert_eq!(c.from, "Joe <joe@example.com>");
        assert_eq!(c.to, ["a@example.net", "B <b@example.net>"]);
        assert_eq!(c.subject, "Héllo");
        let parts = c.parts().unwrap();
        assert_eq!(
            parts.headers[0],
            ("From".into(), "Joe <joe@example.com>".into())
        );
        assert_eq!(parts.text.as_deref(), Some("body\r\n"));
        assert_eq!(parts.html, None);
    }

    #[test]
    fn deletes_and_resumes() {
        let store = CaptureStore::new(10, 1000);
        for i in 0..4 {
            store.record(new(&format!("m{i}"), MAIL));
        }
        let after: Vec<String> = store.since("m1").iter().map(|c| c.id.clone()).collect();
        assert_eq!(after, ["m2", "m3"]);
        assert!(store.since("nosuch").is_empty());
        assert_eq!(store.delete(&["m1".into(), "m9".into()]), 1);
        assert!(store.get("m1").is_none());
        assert_eq!(store.bytes(), 3 * MAIL.len());
        store.delete_all();
        assert_eq!(store.list(0, 10).0, 0);
        assert_eq!(store.bytes(), 0);
    }

    /// A record dropped for `max_messages` takes its body along: nothing outlives the
    /// bound (the load benchmark found records kept alive by the list of bodies).
    #[test]
    fn dropped_records_leave_nothing_behind() {
        let store = CaptureStore::new(5, 1 << 20);
        let mut first = None;
        for i in 0..1000 {
            let captured = store.record(new(&format!("m{i}"), MAIL)).unwrap();
            if i == 0 {
                first = Some(Arc::downgrade(&captured));
            }
        }
        assert_eq!(store.list(0, 10).0, 5);
        assert_eq!(store.lock().bodies.len(), 5);
        assert_eq!(store.bytes(), 5 * MAIL.len());
        assert!(
            first.unwrap().upgrade().is_none(),
            "the first record is freed"
        );
    }
}
