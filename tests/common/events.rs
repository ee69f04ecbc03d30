//! Event publishing in tests: one validator of SES's record shapes (SES-BEHAVIOUR.md,
//! "Event publishing") and of the SNS and EventBridge envelopes around them, a real HTTP
//! receiver that captures what sesrelay posts (and can answer 500 or never answer), and a
//! relay started with event destinations set in code.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use sesrelay::config::Config;
use sesrelay::events::{DestinationTarget, EventDestination, EventType};
use sesrelay::server::Server;
use tokio::sync::{Notify, watch};

// ---------------------------------------------------------------------------------------
// The validator.
// ---------------------------------------------------------------------------------------

/// `2026-11-26T13:29:38.000Z`.
pub fn is_iso_millis(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

/// SES's message (and feedback) id form: 16 lower-case hex digits, `-`, a UUID, `-000000`.
pub fn is_ses_id(s: &str) -> bool {
    let Some((head, rest)) = s.split_at_checked(16) else {
        return false;
    };
    head.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && rest
            .strip_prefix('-')
            .and_then(|r| r.strip_suffix("-000000"))
            .is_some_and(|uuid| uuid.len() == 36 && uuid::Uuid::parse_str(uuid).is_ok())
}

fn object<'a>(v: &'a Value, what: &str) -> &'a Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"))
}

fn string<'a>(o: &'a Map<String, Value>, key: &str, what: &str) -> &'a str {
    o.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}.{key} is not a string: {o:?}"))
}

fn strings<'a>(v: &'a Value, what: &str) -> Vec<&'a str> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what} holds a non-string: {v}"))
        })
        .collect()
}

/// Only these keys: the required ones must be there, the optional ones may be.
fn keys(o: &Map<String, Value>, required: &[&str], optional: &[&str], what: &str) {
    for key in required {
        assert!(o.contains_key(*key), "{what} lacks {key}: {o:?}");
    }
    for key in o.keys() {
        assert!(
            required.contains(&key.as_str()) || optional.contains(&key.as_str()),
            "{what} has an unexpected key {key}: {o:?}"
        );
    }
}

fn address(s: &str, what: &str) {
    assert!(
        s.contains('@') && !s.contains(['<', '>', ' ']),
        "{what} is not a bare address: {s:?}"
    );
}

/// Checks one record against SES's shapes: every required field, its type and format, in
/// `mail` and in the member of its `eventType`; no field SES does not write. Returns the
/// event type.
pub fn validate_record(record: &Value) -> EventType {
    let r = object(record, "record");
    let name = string(r, "eventType", "record");
    let event_type = EventType::ALL
        .into_iter()
        .find(|t| t.record_name() == name)
        .unwrap_or_else(|| panic!("unknown eventType {name:?}"));
    let member = event_type.record_member();
    keys(r, &["eventType", "mail", member], &[], "record");

    // mail
    let mail = object(&r["mail"], "mail");
    keys(
        mail,
        &[
            "timestamp",
            "source",
            "sourceArn",
            "sendingAccountId",
            "messageId",
            "destination",
            "headersTruncated",
            "headers",
            "commonHeaders",
            "tags",
        ],
        &[],
        "mail",
    );
    assert!(
        is_iso_millis(string(mail, "timestamp", "mail")),
        "mail.timestamp {mail:?}"
    );
    address(string(mail, "source", "mail"), "mail.source");
    let account = string(mail, "sendingAccountId", "mail");
    assert!(
        account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()),
        "mail.sendingAccountId {account:?}"
    );
    let arn = string(mail, "sourceArn", "mail");
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    assert!(
        parts.len() == 6
            && parts[..3] == ["arn", "aws", "ses"]
            && !parts[3].is_empty()
            && parts[3] == parts[3].to_ascii_lowercase()
            && parts[4] == account
            && parts[5]
                .strip_prefix("identity/")
                .is_some_and(|i| !i.is_empty()),
        "mail.sourceArn {arn:?}"
    );
    assert!(
        is_ses_id(string(mail, "messageId", "mail")),
        "mail.messageId {mail:?}"
    );
    let destination = strings(&mail["destination"], "mail.destination");
    assert!(!destination.is_empty(), "mail.destination is empty");
    for d in &destination {
        address(d, "mail.destination[]");
    }
    assert!(
        mail["headersTruncated"].is_boolean(),
        "mail.headersTruncated {mail:?}"
    );
    let headers = mail["headers"]
        .as_array()
        .expect("mail.headers is an array");
    for h in headers {
        let h = object(h, "mail.headers[]");
        keys(h, &["name", "value"], &[], "mail.headers[]");
        assert!(
            !string(h, "name", "header").is_empty(),
            "a header without a name"
        );
        string(h, "value", "header");
    }
    let common = object(&mail["commonHeaders"], "mail.commonHeaders");
    keys(
        common,
        &["from", "date", "messageId"],
        &["to", "cc", "bcc", "replyTo", "returnPath", "subject"],
        "mail.commonHeaders",
    );
    for list in ["from", "to", "cc", "bcc", "replyTo"] {
        if let Some(v) = common.get(list) {
            let items = strings(v, list);
            assert!(!items.is_empty(), "commonHeaders.{list} is empty");
            assert!(
                items.iter().all(|i| i.contains('@')),
                "commonHeaders.{list}: {items:?}"
            );
        }
    }
    for field in ["date", "messageId", "subject", "returnPath"] {
        if common.contains_key(field) {
            string(common, field, "mail.commonHeaders");
        }
    }
    let tags = object(&mail["tags"], "mail.tags");
    for (name, values) in tags {
        let values = strings(values, name);
        assert_eq!(values.len(), 1, "tag {name}: {values:?}");
    }
    let tag = |name: &str| tags.get(name).and_then(|v| v[0].as_str());
    assert!(
        matches!(
            tag("ses:operation"),
            Some("SendSmtpEmail" | "SendEmail" | "SendRawEmail")
        ),
        "ses:operation {tags:?}"
    );
    assert!(
        tag("ses:configuration-set").is_some_and(|s| !s.is_empty()),
        "{tags:?}"
    );
    assert!(
        tag("ses:source-ip").is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
        "{tags:?}"
    );
    assert!(
        tag("ses:from-domain").is_some_and(|d| !d.is_empty() && !d.contains('@')),
        "{tags:?}"
    );
    if let Some(user) = tag("ses:caller-identity") {
        assert!(!user.is_empty());
    }
    let outgoing = tag("ses:outgoing-ip");
    if event_type == EventType::Delivery {
        assert!(
            outgoing.is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
            "ses:outgoing-ip {tags:?}"
        );
    } else {
        assert!(
            outgoing.is_none(),
            "ses:outgoing-ip outside a Delivery: {tags:?}"
        );
    }

    // The event's member.
    let recipients_of = |v: &Value, what: &str| {
        let items = v
            .as_array()
            .unwrap_or_else(|| panic!("{what} is not an array"));
        assert!(!items.is_empty(), "{what} is empty");
        items.clone()
    };
    let in_destination = |a: &str| {
        assert!(
            destination.iter().any(|d| d.eq_ignore_ascii_case(a)),
            "{a} is not in mail.destination {destination:?}"
        );
    };
    let m = object(&r[member], member);
    match event_type {
        EventType::Send => assert!(m.is_empty(), "send is not {{}}: {m:?}"),
        EventType::Delivery => {
            keys(
                m,
                &[
                    "timestamp",
                    "processingTimeMillis",
                    "recipients",
                    "smtpResponse",
                    "reportingMTA",
                ],
                &[],
                "delivery",
            );
            assert!(is_iso_millis(string(m, "timestamp", "delivery")));
            assert!(
                m["processingTimeMillis"].is_u64(),
                "processingTimeMillis {m:?}"
            );
            for rcpt in recipients_of(&m["recipients"], "delivery.recipients") {
                let rcpt = rcpt.as_str().expect("a recipient string");
                in_destination(rcpt);
            }
            let response = string(m, "smtpResponse", "delivery");
            assert!(
                response.starts_with('2') && response.as_bytes().get(3) == Some(&b' '),
                "smtpResponse {response:?}"
            );
            assert!(!string(m, "reportingMTA", "delivery").is_empty());
        }
        EventType::Bounce => {
            keys(
                m,
                &[
                    "bounceType",
                    "bounceSubType",
                    "bouncedRecipients",
                    "timestamp",
                    "feedbackId",
                ],
                &["reportingMTA"],
                "bounce",
            );
            assert!(matches!(
                string(m, "bounceType", "bounce"),
                "Permanent" | "Transient" | "Undetermined"
            ));
            assert!(matches!(
                string(m, "bounceSubType", "bounce"),
                "General"
                    | "NoEmail"
                    | "Suppressed"
                    | "OnAccountSuppressionList"
                    | "Undetermined"
                    | "MailboxFull"
                    | "MessageTooLarge"
                    | "ContentRejected"
                    | "AttachmentRejected"
            ));
            for rcpt in recipients_of(&m["bouncedRecipients"], "bounce.bouncedRecipients") {
                let rcpt = object(&rcpt, "bouncedRecipients[]").clone();
                keys(
                    &rcpt,
                    &["emailAddress", "action", "status", "diagnosticCode"],
                    &[],
                    "bouncedRecipients[]",
                );
                in_destination(string(&rcpt, "emailAddress", "bouncedRecipients[]"));
                assert_eq!(string(&rcpt, "action", "bouncedRecipients[]"), "failed");
                let status = string(&rcpt, "status", "bouncedRecipients[]");
                let parts: Vec<&str> = status.split('.').collect();
                assert!(
                    parts.len() == 3
                        && matches!(parts[0], "4" | "5")
                        && parts
                            .iter()
                            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
                    "status {status:?}"
                );
                assert!(!string(&rcpt, "diagnosticCode", "bouncedRecipients[]").is_empty());
            }
            assert!(is_iso_millis(string(m, "timestamp", "bounce")));
            assert!(
                is_ses_id(string(m, "feedbackId", "bounce")),
                "feedbackId {m:?}"
            );
            if m.contains_key("reportingMTA") {
                assert!(string(m, "reportingMTA", "bounce").starts_with("dsn; "));
            }
        }
        EventType::Complaint => {
            keys(
                m,
                &["complainedRecipients", "timestamp", "feedbackId"],
                &[
                    "userAgent",
                    "complaintFeedbackType",
                    "arrivalDate",
                    "complaintSubType",
                ],
                "complaint",
            );
            for rcpt in recipients_of(&m["complainedRecipients"], "complaint.complainedRecipients")
            {
                let rcpt = object(&rcpt, "complainedRecipients[]").clone();
                keys(&rcpt, &["emailAddress"], &[], "complainedRecipients[]");
                in_destination(string(&rcpt, "emailAddress", "complainedRecipients[]"));
            }
            assert!(is_iso_millis(string(m, "timestamp", "complaint")));
            assert!(is_ses_id(string(m, "feedbackId", "complaint")));
            if let Some(kind) = m.get("complaintFeedbackType") {
                assert!(matches!(
                    kind.as_str(),
                    Some("abuse" | "auth-failure" | "fraud" | "not-spam" | "other" | "virus")
                ));
            }
            if m.contains_key("arrivalDate") {
                assert!(is_iso_millis(string(m, "arrivalDate", "complaint")));
            }
        }
        other => panic!("sesrelay does not produce {other:?} records"),
    }
    event_type
}

/// Checks an SNS HTTP notification (headers and body) and returns its record, validated.
pub fn validate_sns(request: &Received, topic_arn: &str) -> Value {
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.header("x-amz-sns-message-type"),
        Some("Notification")
    );
    assert_eq!(request.header("x-amz-sns-topic-arn"), Some(topic_arn));
    assert_eq!(
        request.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    let body: Value = serde_json::from_str(&request.body).expect("the notification is JSON");
    let n = object(&body, "notification");
    keys(
        n,
        &[
            "Type",
            "MessageId",
            "TopicArn",
            "Subject",
            "Message",
            "Timestamp",
            "SignatureVersion",
            "Signature",
            "SigningCertURL",
            "UnsubscribeURL",
        ],
        &[],
        "notification",
    );
    assert_eq!(n["Type"], "Notification");
    assert_eq!(n["TopicArn"], topic_arn);
    assert_eq!(n["Subject"], "Amazon SES Email Event Notification");
    assert_eq!(
        request.header("x-amz-sns-message-id"),
        n["MessageId"].as_str()
    );
    assert!(uuid::Uuid::parse_str(string(n, "MessageId", "notification")).is_ok());
    assert!(is_iso_millis(string(n, "Timestamp", "notification")));
    assert_eq!(n["SignatureVersion"], "1");
    assert!(string(n, "SigningCertURL", "notification").starts_with("https://sns."));
    assert!(string(n, "UnsubscribeURL", "notification").contains("Action=Unsubscribe"));
    let record: Value = serde_json::from_str(string(n, "Message", "notification"))
        .expect("Message is a record as a JSON string");
    validate_record(&record);
    record
}

/// Checks an EventBridge event and returns its record (`detail`), validated.
pub fn validate_eventbridge(request: &Received, account: &str, set: &str) -> Value {
    assert_eq!(request.method, "POST");
    let body: Value = serde_json::from_str(&request.body).expect("the event is JSON");
    let e = object(&body, "event");
    keys(
        e,
        &[
            "version",
            "id",
            "detail-type",
            "source",
            "account",
            "time",
            "region",
            "resources",
            "detail",
        ],
        &[],
        "event",
    );
    assert_eq!(e["version"], "0");
    assert_eq!(e["source"], "aws.ses");
    assert_eq!(e["account"], account);
    assert!(uuid::Uuid::parse_str(string(e, "id", "event")).is_ok());
    let time = string(e, "time", "event");
    assert!(time.len() == 20 && time.ends_with('Z'), "time {time:?}");
    let region = string(e, "region", "event");
    assert_eq!(
        e["resources"],
        serde_json::json!([format!(
            "arn:aws:ses:{region}:{account}:configuration-set/{set}"
        )])
    );
    let record = e["detail"].clone();
    let event_type = validate_record(&record);
    assert_eq!(e["detail-type"], event_type.detail_type());
    record
}

/// The records of a JSON-lines file (each line validated); none when it does not exist.
pub fn read_lines(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial line in {}",
        path.display()
    );
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("a JSON line");
            validate_record(&record);
            record
        })
        .collect()
}

/// Waits until `path` holds `n` records (at most 10 s).
pub async fn wait_for_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = read_lines(path);
        if records.len() >= n {
            return records;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} holds {} records, not {n}",
            path.display(),
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `eventType` of each record.
pub fn types(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["eventType"].as_str().unwrap_or("?"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The HTTP receiver.
// ---------------------------------------------------------------------------------------

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// Reads the request and never answers.
    Hang,
}

/// One request the receiver read.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The status it was answered with; `None` when it was not answered.
    pub answered: Option<u16>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Clone)]
struct ReceiverState {
    requests: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answer>>,
    arrived: Arc<Notify>,
}

/// An HTTP server on 127.0.0.1:0 that keeps every request.
pub struct Receiver {
    pub addr: SocketAddr,
    state: ReceiverState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(answer: Answer) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = ReceiverState {
            requests: Arc::new(Mutex::new(Vec::new())),
            answer: Arc::new(Mutex::new(answer)),
            arrived: Arc::new(Notify::new()),
        };
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// Every request so far, answered or not.
    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The requests answered 2xx so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }

    /// Waits until `n` requests were answered 2xx (at most 15 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_until(|r| {
            r.iter()
                .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
                .count()
                >= n
        })
        .await;
        self.accepted()
    }

    /// Waits until `n` requests arrived, answered or not (at most 15 s).
    pub async fn wait_for_any(&self, n: usize) -> Vec<Received> {
        self.wait_until(|r| r.len() >= n).await;
        self.requests()
    }

    async fn wait_until(&self, done: impl Fn(&[Received]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let notified = self.state.arrived.notified();
            if done(&self.requests()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "the receiver did not get what was awaited: {:#?}",
                    self.requests()
                );
            }
        }
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<ReceiverState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let answer = *state.answer.lock().unwrap();
    let received = Received {
        method: method.to_string(),
        path: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: match answer {
            Answer::Status(status) => Some(status),
            Answer::Hang => None,
        },
    };
    state.requests.lock().unwrap().push(received);
    state.arrived.notify_waiters();
    match answer {
        Answer::Status(status) => axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::OK)
            .into_response(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            axum::http::StatusCode::OK.into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// A relay with event destinations.
// ---------------------------------------------------------------------------------------

/// A destination taking `types` (API names, `SEND`, ...), enabled.
pub fn destination(types: &[&str], target: DestinationTarget) -> EventDestination {
    EventDestination {
        enabled: true,
        matching_event_types: types
            .iter()
            .map(|t| EventType::from_api_name(t).unwrap_or_else(|| panic!("type {t}")))
            .collect(),
        target,
    }
}

pub fn sns(topic_arn: &str) -> DestinationTarget {
    DestinationTarget::Sns {
        topic_arn: topic_arn.to_owned(),
    }
}

pub const ALL_TYPES: [&str; 4] = ["SEND", "DELIVERY", "BOUNCE", "COMPLAINT"];

/// A relay in this process with its admin listener, on a config file in a temporary
/// directory whose `events/` is `[events] dir`.
pub struct EventsRelay {
    pub smtp: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl EventsRelay {
    /// Starts the relay on `config` (TOML without `server.listen` and `[admin]`), after
    /// `setup` has set what the configuration file cannot say yet (event destinations and
    /// `[events]` mappings). `setup` gets the temporary directory too.
    pub async fn start(config: &str, setup: impl FnOnce(&mut Config, &Path)) -> EventsRelay {
        let dir = tempfile::tempdir().unwrap();
        let server = "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_timeout = \"2s\"\n";
        let text = if config.contains("[server]\n") {
            config.replacen("[server]\n", server, 1)
        } else {
            format!("{server}{config}")
        };
        let text = format!("{text}\n[admin]\nlisten = \"127.0.0.1:0\"\n");
        let path = dir.path().join("sesrelay.toml");
        std::fs::write(&path, text).unwrap();
        let mut config = Config::load(&path).expect("valid config");
        config.events.dir = dir.path().join("events");
        setup(&mut config, dir.path());
        let server = Server::bind(config).await.expect("binds");
        let smtp = server.local_addrs()[0];
        let admin = server.admin_addr().expect("an admin listener");
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        EventsRelay {
            smtp,
            admin,
            dir,
            stop,
            done,
        }
    }

    pub fn events_dir(&self) -> PathBuf {
        self.dir.path().join("events")
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(15), self.done)
            .await
            .expect("stops within 15 s")
            .unwrap();
    }

    /// `/metrics`: each sample line's name with labels (as written) → value.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let page = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("/metrics answers")
            .text()
            .await
            .unwrap();
        page.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(series, value)| (series.to_owned(), value.parse().unwrap_or(f64::NAN)))
            .collect()
    }

    /// Waits until the series `series` (name and labels as written) is at least `want`.
    pub async fn wait_for_metric(&self, series: &str, want: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.metrics().await.get(series).copied().unwrap_or(0.0);
            if value >= want {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} is {value}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Adds `destination` as `name` to the set `set` of `config`.
pub fn add_destination(config: &mut Config, set: &str, name: &str, destination: EventDestination) {
    config
        .resources
        .configuration_sets
        .get_mut(set)
        .unwrap_or_else(|| panic!("no set {set}"))
        .event_destinations
        .insert(name.to_owned(), destination);
}
