//! The publisher: a message's records to its set's destinations, off the mail path.
//!
//! [`Publisher::publish`] never waits and never fails: it picks the destinations whose
//! `matching_event_types` take the record, and hands the record to one worker per sink
//! (an HTTP endpoint, a file) through that worker's bounded queue. A full queue drops the
//! record and counts it; the 250 the client gets never waits on a sink. CloudWatch
//! destinations are counters in `/metrics`, moved at once.
//!
//! | SES destination | mapped in `[events]` | sink |
//! |---|---|---|
//! | SNS topic | `[events.sns."ARN"] endpoints` | SNS HTTP notifications POSTed to each endpoint |
//! | EventBridge bus | `[events.eventbridge."ARN"] endpoints` | EventBridge events POSTed to each endpoint |
//! | Firehose stream | `[events.firehose."ARN"] dir` | JSON lines in `<dir>/<stream name>.jsonl` |
//! | any of those | not mapped | JSON lines in `<events.dir>/<set>/<destination>.jsonl` |
//! | CloudWatch | — | `sesrelay_cloudwatch_events_total` |
//!
//! HTTP sinks retry as SNS's delivery policy does in spirit: a few quick retries, then
//! backoff to a few seconds, then the record is dropped ([`RetryPolicy`]). Records live in
//! memory only: those still queued when the process dies are lost; at shutdown the queues
//! get [`SHUTDOWN_GRACE`] to empty.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use sha2::Digest as _;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::http::HttpSender;
use super::record::{
    Bounce, BounceKind, Complaint, Delivery, Event, Mail, Record, SIMULATOR_USER_AGENT,
    iso8601_millis, iso8601_seconds,
};
use super::{CloudWatchDimension, DestinationTarget, DimensionValueSource, EventType, Simulated};
use crate::config::Config;
use crate::metrics::EventCounters;

/// `delivery.smtpResponse` of the mailbox simulator's deliveries.
pub const SIMULATOR_RESPONSE: &str = "250 2.6.0 Message received";

/// Records waiting for one sink at most; more are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 1000;

/// At shutdown, how long the queues get to empty before what is left is dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Sets of dimension values one CloudWatch destination counts at most; further values are
/// counted under the dimensions' default values.
pub const MAX_LABEL_SETS: usize = 1000;

/// A CloudWatch dimension value longer than this (in characters) is cut.
const MAX_LABEL_VALUE: usize = 256;

/// The SNS notification's `Signature`: base64, as SNS's is, of a sentence saying what it is.
static SIGNATURE: LazyLock<String> = LazyLock::new(|| {
    base64::engine::general_purpose::STANDARD.encode(
        "sesrelay does not sign SNS notifications: this is not an AWS signature, and it verifies against nothing",
    )
});

/// What an HTTP sink does with a record its endpoint does not take (a connection refused,
/// no answer within `attempt_timeout`, an answer other than 2xx): it waits each delay in
/// turn and tries again, then drops the record. The default: three quick retries 100 ms
/// apart, then 0.5 s, 1 s, 2 s, 4 s, 4 s: eight retries, some 12 s of waiting plus the
/// attempts (at most 5 s each), after which the record is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub delays: Vec<Duration>,
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        let ms = Duration::from_millis;
        RetryPolicy {
            delays: vec![
                ms(100),
                ms(100),
                ms(100),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(4000),
            ],
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// The kinds of sink, as the metrics label them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    Sns,
    EventBridge,
    Firehose,
    /// JSON lines of a destination without a mapping.
    File,
    CloudWatch,
}

impl SinkKind {
    /// The `sink` label (one of [`crate::metrics::EVENT_SINKS`]).
    pub fn label(self) -> &'static str {
        match self {
            SinkKind::Sns => "sns",
            SinkKind::EventBridge => "eventbridge",
            SinkKind::Firehose => "firehose",
            SinkKind::File => "file",
            SinkKind::CloudWatch => "cloudwatch",
        }
    }
}

/// Where one worker sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Http(String),
    File(PathBuf),
}

/// One record as its sink sends it: the body (an HTTP request's, or one line) and the
/// request's headers.
struct Job {
    body: Bytes,
    headers: Vec<(&'static str, String)>,
}

struct Worker {
    queue: mpsc::Sender<Job>,
    /// Records handed to the worker and not yet published or dropped.
    pending: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Workers {
    closed: bool,
    running: HashMap<(SinkKind, Target), Worker>,
}

/// Sets of CloudWatch dimension values seen.
type LabelSets = HashSet<Vec<String>>;

struct Inner {
    counters: EventCounters,
    retry: RetryPolicy,
    workers: Mutex<Workers>,
    /// The sets of dimension values each CloudWatch destination (set, destination) counts.
    cloudwatch: Mutex<HashMap<(String, String), LabelSets>>,
}

/// The relay's event publisher (`relay.events()`).
pub struct Publisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(counters: EventCounters) -> Publisher {
        Publisher::with_retry(counters, RetryPolicy::default())
    }

    pub fn with_retry(counters: EventCounters, retry: RetryPolicy) -> Publisher {
        Publisher {
            inner: Arc::new(Inner {
                counters,
                retry,
                workers: Mutex::new(Workers::default()),
                cloudwatch: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The events of one message accepted with the set `mail` names, published against
    /// `config` (the snapshot the message was judged against). Build the [`Mail`] only
    /// when [`super::has_destinations`] says the set has any.
    pub fn emitter(&self, config: Arc<Config>, mail: Mail) -> Emitter {
        Emitter {
            inner: Arc::clone(&self.inner),
            config,
            mail: Arc::new(mail),
            log: None,
        }
    }

    /// Hands `record` to the sinks of the destinations of its set that take its type.
    /// Never waits.
    pub fn publish(&self, config: &Config, record: &Record) {
        let _ = self.inner.publish(config, record);
    }

    /// Records handed to the workers and not yet published or dropped.
    pub fn pending(&self) -> usize {
        let workers = self.inner.lock_workers();
        workers
            .running
            .values()
            .map(|w| w.pending.load(Ordering::SeqCst))
            .sum()
    }

    /// Stops taking records (later ones are dropped and counted) and gives the queues
    /// `grace` to empty; the records still queued after it are dropped and counted.
    pub async fn close(&self, grace: Duration) {
        let workers: Vec<((SinkKind, Target), Worker)> = {
            let mut workers = self.inner.lock_workers();
            workers.closed = true;
            workers.running.drain().collect()
        };
        let deadline = tokio::time::Instant::now() + grace;
        let mut tasks = Vec::with_capacity(workers.len());
        for ((kind, target), worker) in workers {
            // Without its sender, the worker ends once its queue is empty.
            drop(worker.queue);
            tasks.push((kind, target, worker.pending, worker.task));
        }
        for (kind, target, pending, mut task) in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let lost = pending.swap(0, Ordering::SeqCst) as u64;
                if lost > 0 {
                    self.inner.counters.dropped(kind.label(), lost);
                    tracing::warn!(
                        sink = kind.label(), target = ?target, records = lost,
                        "event records dropped at shutdown: the sink did not take them in time"
                    );
                }
            }
        }
    }
}

/// The events of one accepted message, published as they happen: what the relay (and
/// whatever else judges recipients, such as the suppression list) calls. Each call makes
/// one record; the calls with recipients do nothing for an empty list.
pub struct Emitter {
    inner: Arc<Inner>,
    config: Arc<Config>,
    mail: Arc<Mail>,
    /// The captured message's events (SPEC 10): one entry per record and destination
    /// that took it.
    log: Option<crate::capture::EventLog>,
}

impl Emitter {
    /// Also appends each published record to `log` (the capture store's events).
    pub fn with_log(mut self, log: crate::capture::EventLog) -> Emitter {
        self.log = Some(log);
        self
    }

    pub fn mail(&self) -> &Mail {
        &self.mail
    }

    /// `Send`: the message was accepted (one record per message, all its recipients).
    pub fn send(&self) {
        self.emit(Event::Send);
    }

    /// `Delivery` to `recipients`: the receiving server answered `smtp_response`; the
    /// relay sent from `outgoing_ip` (the record's `ses:outgoing-ip`).
    pub fn delivery(&self, recipients: &[String], smtp_response: &str, outgoing_ip: IpAddr) {
        if recipients.is_empty() {
            return;
        }
        let hostname = &self.config.server.hostname;
        self.emit(Event::Delivery(Delivery::new(
            &self.mail,
            recipients,
            smtp_response,
            hostname,
            outgoing_ip,
        )));
    }

    /// `Bounce` of `recipients`, of the kind given (e.g. [`BounceKind::Suppressed`] for
    /// recipients on the suppression list); the record's `feedbackId`, `None` (and no
    /// record) for no recipients.
    pub fn bounce(&self, recipients: &[String], kind: &BounceKind) -> Option<String> {
        if recipients.is_empty() {
            return None;
        }
        let hostname = &self.config.server.hostname;
        let bounce = Bounce::new(&self.mail, recipients, kind, hostname);
        let feedback_id = bounce.feedback_id.clone();
        self.emit(Event::Bounce(bounce));
        Some(feedback_id)
    }

    /// `Complaint` (abuse) by `recipients`, reported by `user_agent`; the record's
    /// `feedbackId`, `None` (and no record) for no recipients.
    pub fn complaint(&self, recipients: &[String], user_agent: &str) -> Option<String> {
        if recipients.is_empty() {
            return None;
        }
        let complaint = Complaint::new(&self.mail, recipients, user_agent);
        let feedback_id = complaint.feedback_id.clone();
        self.emit(Event::Complaint(complaint));
        Some(feedback_id)
    }

    /// The mailbox simulator's events for those of `recipients` that are its mailboxes
    /// ([`super::simulated`]): Delivery for `success@`, `ooto@` and `complaint@` (answered
    /// [`SIMULATOR_RESPONSE`]), Bounce (General, user unknown) for `bounce@` and unknown
    /// mailboxes, Bounce (OnAccountSuppressionList) for `suppressionlist@`, then Complaint
    /// for `complaint@`. One record per kind, listing its recipients.
    pub fn simulate(&self, recipients: &[String]) {
        let of = |kinds: &[Simulated]| -> Vec<String> {
            recipients
                .iter()
                .filter(|r| super::simulated(r).is_some_and(|k| kinds.contains(&k)))
                .cloned()
                .collect()
        };
        let localhost = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        self.delivery(
            &of(&[Simulated::Success, Simulated::Ooto, Simulated::Complaint]),
            SIMULATOR_RESPONSE,
            localhost,
        );
        self.bounce(
            &of(&[Simulated::Bounce, Simulated::Unknown]),
            &BounceKind::UserUnknown,
        );
        self.bounce(&of(&[Simulated::SuppressionList]), &BounceKind::Suppressed);
        self.complaint(&of(&[Simulated::Complaint]), SIMULATOR_USER_AGENT);
    }

    fn emit(&self, event: Event) {
        let record = Record {
            mail: Arc::clone(&self.mail),
            event,
        };
        let taken = self.inner.publish(&self.config, &record);
        if let Some(log) = &self.log {
            let set = record.mail.configuration_set();
            let summary = summary(&record.event);
            let time = std::time::SystemTime::now();
            for destination in taken {
                log.push(crate::capture::CapturedEvent {
                    event_type: record.event_type().record_name().to_owned(),
                    time,
                    destination: format!("{set}/{destination}"),
                    summary: summary.clone(),
                });
            }
        }
    }
}

/// One line about an event, for the captured message's timeline.
fn summary(event: &Event) -> String {
    match event {
        Event::Send => "accepted for sending".to_owned(),
        Event::Delivery(d) => format!("{}: {}", d.recipients.join(", "), d.smtp_response),
        Event::Bounce(b) => {
            let who: Vec<&str> = b
                .bounced_recipients
                .iter()
                .map(|r| r.email_address.as_str())
                .collect();
            format!(
                "{} ({}): {}",
                b.bounce_type,
                b.bounce_sub_type,
                who.join(", ")
            )
        }
        Event::Complaint(c) => {
            let who: Vec<&str> = c
                .complained_recipients
                .iter()
                .map(|r| r.email_address.as_str())
                .collect();
            format!(
                "complaint ({}): {}",
                c.complaint_feedback_type,
                who.join(", ")
            )
        }
    }
}

impl Inner {
    fn lock_workers(&self) -> std::sync::MutexGuard<'_, Workers> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `record` to its destinations; the names of those that took it.
    fn publish<'c>(&self, config: &'c Config, record: &Record) -> Vec<&'c str> {
        let mut taken = Vec::new();
        let set = record.mail.configuration_set();
        let Some(set_record) = config.resources.configuration_sets.get(set) else {
            return taken;
        };
        let event_type = record.event_type();
        let mut json: Option<Bytes> = None;
        let mut record_json = || {
            json.get_or_insert_with(|| Bytes::from(record.to_json()))
                .clone()
        };
        for (name, destination) in &set_record.event_destinations {
            if !destination.takes(event_type) {
                continue;
            }
            taken.push(name.as_str());
            let unmapped = || Target::File(default_file(&config.events.dir, set, name));
            match &destination.target {
                DestinationTarget::CloudWatch { dimensions } => {
                    self.count(set, name, event_type, dimensions, &record.mail);
                }
                DestinationTarget::Sns { topic_arn } => match mapped(&config.events.sns, topic_arn)
                {
                    Some(endpoints) => {
                        let message_id = uuid::Uuid::new_v4().to_string();
                        let json = record_json();
                        for url in endpoints {
                            let job = sns_notification(topic_arn, url, &message_id, &json);
                            self.enqueue(SinkKind::Sns, Target::Http(url.clone()), job);
                        }
                    }
                    None => self.enqueue(SinkKind::File, unmapped(), line(record_json())),
                },
                DestinationTarget::EventBridge { event_bus_arn } => {
                    match mapped(&config.events.eventbridge, event_bus_arn) {
                        Some(endpoints) => {
                            let body = eventbridge_event(config, set, record);
                            for url in endpoints {
                                let job = Job {
                                    body: body.clone(),
                                    headers: vec![(
                                        "content-type",
                                        "application/json; charset=utf-8".to_owned(),
                                    )],
                                };
                                self.enqueue(SinkKind::EventBridge, Target::Http(url.clone()), job);
                            }
                        }
                        None => self.enqueue(SinkKind::File, unmapped(), line(record_json())),
                    }
                }
                DestinationTarget::Firehose {
                    delivery_stream_arn,
                    ..
                } => match config.events.firehose.get(delivery_stream_arn) {
                    Some(dir) => {
                        let file = format!("{}.jsonl", file_name(stream_name(delivery_stream_arn)));
                        let target = Target::File(dir.join(file));
                        self.enqueue(SinkKind::Firehose, target, line(record_json()));
                    }
                    None => self.enqueue(SinkKind::File, unmapped(), line(record_json())),
                },
            }
        }
        taken
    }

    /// Puts `job` on the queue of the worker for `target`, starting the worker if needed;
    /// drops it (counted) when the queue is full or the publisher is closed.
    fn enqueue(&self, kind: SinkKind, target: Target, mut job: Job) {
        let mut workers = self.lock_workers();
        if workers.closed {
            self.counters.dropped(kind.label(), 1);
            return;
        }
        let key = (kind, target);
        // A second round only when the worker had ended (it cannot, unless it panicked).
        for _ in 0..2 {
            if !workers.running.contains_key(&key) {
                let Some(worker) = self.spawn(kind, &key.1) else {
                    break;
                };
                workers.running.insert(key.clone(), worker);
            }
            let Some(worker) = workers.running.get(&key) else {
                break;
            };
            worker.pending.fetch_add(1, Ordering::SeqCst);
            match worker.queue.try_send(job) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    worker.pending.fetch_sub(1, Ordering::SeqCst);
                    self.counters.dropped(kind.label(), 1);
                    tracing::debug!(sink = kind.label(), target = ?key.1, "event record dropped: the sink's queue is full");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    worker.pending.fetch_sub(1, Ordering::SeqCst);
                    workers.running.remove(&key);
                    job = back;
                }
            }
        }
        self.counters.dropped(kind.label(), 1);
    }

    /// A worker for `target`, or `None` outside a tokio runtime.
    fn spawn(&self, kind: SinkKind, target: &Target) -> Option<Worker> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let pending = Arc::new(AtomicUsize::new(0));
        let counters = self.counters.clone();
        let task = match target {
            Target::Http(url) => runtime.spawn(http_worker(
                url.clone(),
                kind,
                jobs,
                Arc::clone(&pending),
                counters,
                self.retry.clone(),
            )),
            Target::File(path) => runtime.spawn(file_worker(
                path.clone(),
                kind,
                jobs,
                Arc::clone(&pending),
                counters,
            )),
        };
        Some(Worker {
            queue,
            pending,
            task,
        })
    }

    /// Counts one event of a CloudWatch destination.
    fn count(
        &self,
        set: &str,
        destination: &str,
        event_type: EventType,
        dimensions: &[CloudWatchDimension],
        mail: &Mail,
    ) {
        let mut values: Vec<String> = dimensions
            .iter()
            .map(|d| dimension_value(d, mail))
            .collect();
        {
            let mut seen = self
                .cloudwatch
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let known = seen
                .entry((set.to_owned(), destination.to_owned()))
                .or_default();
            if !known.contains(&values) {
                if known.len() >= MAX_LABEL_SETS {
                    values = dimensions.iter().map(|d| clip(&d.default_value)).collect();
                }
                known.insert(values.clone());
            }
        }
        let mut labels = vec![
            ("configuration_set".to_owned(), set.to_owned()),
            ("destination".to_owned(), destination.to_owned()),
            ("event_type".to_owned(), event_type.record_name().to_owned()),
        ];
        labels.extend(label_names(dimensions).into_iter().zip(values));
        self.counters.cloudwatch(labels);
        self.counters.published(SinkKind::CloudWatch.label(), 1);
    }
}

/// The endpoints an ARN is mapped to, when it is mapped to any.
fn mapped<'a>(map: &'a BTreeMap<String, Vec<String>>, arn: &str) -> Option<&'a [String]> {
    map.get(arn).map(Vec::as_slice).filter(|e| !e.is_empty())
}

fn line(json: Bytes) -> Job {
    Job {
        body: json,
        headers: Vec::new(),
    }
}

/// `<dir>/<set>/<destination>.jsonl`, each name made safe as a file name.
pub fn default_file(dir: &Path, set: &str, destination: &str) -> PathBuf {
    dir.join(file_name(set))
        .join(format!("{}.jsonl", file_name(destination)))
}

/// `name` as one path component: `[A-Za-z0-9._-]` kept, anything else `_`; never empty,
/// `.` or `..`.
fn file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        "_".repeat(safe.len().max(1))
    } else {
        safe
    }
}

/// The stream's name in a Firehose ARN (`...:deliverystream/NAME`).
fn stream_name(arn: &str) -> &str {
    arn.rsplit_once('/')
        .or_else(|| arn.rsplit_once(':'))
        .map_or(arn, |(_, name)| name)
}

/// The region field of an ARN (`arn:aws:sns:REGION:...`); `us-east-1` when it has none.
fn arn_region(arn: &str) -> &str {
    arn.split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
        .unwrap_or("us-east-1")
}

/// The SNS HTTP notification of `json` from `topic_arn` to the subscriber at `url`.
fn sns_notification(topic_arn: &str, url: &str, message_id: &str, json: &Bytes) -> Job {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Notification<'a> {
        #[serde(rename = "Type")]
        kind: &'static str,
        message_id: &'a str,
        topic_arn: &'a str,
        subject: &'static str,
        message: &'a str,
        timestamp: String,
        signature_version: &'static str,
        signature: &'a str,
        #[serde(rename = "SigningCertURL")]
        signing_cert_url: String,
        #[serde(rename = "UnsubscribeURL")]
        unsubscribe_url: String,
    }
    let region = arn_region(topic_arn);
    // A subscription ARN of SNS's form, the same for the same topic and endpoint.
    let digest = sha2::Sha256::digest(format!("{topic_arn}\n{url}").as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    let subscription_arn = format!(
        "{topic_arn}:{}",
        uuid::Builder::from_random_bytes(id).into_uuid()
    );
    let notification = Notification {
        kind: "Notification",
        message_id,
        topic_arn,
        subject: "Amazon SES Email Event Notification",
        message: std::str::from_utf8(json).unwrap_or_default(),
        timestamp: iso8601_millis(OffsetDateTime::now_utc()),
        signature_version: "1",
        signature: &SIGNATURE,
        signing_cert_url: format!(
            "https://sns.{region}.amazonaws.com/SimpleNotificationService-sesrelay-not-signed.pem"
        ),
        unsubscribe_url: format!(
            "https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={subscription_arn}"
        ),
    };
    let body = serde_json::to_vec(&notification).unwrap_or_default();
    Job {
        body: Bytes::from(body),
        headers: vec![
            ("content-type", "text/plain; charset=UTF-8".to_owned()),
            ("x-amz-sns-message-type", "Notification".to_owned()),
            ("x-amz-sns-message-id", message_id.to_owned()),
            ("x-amz-sns-topic-arn", topic_arn.to_owned()),
            ("x-amz-sns-subscription-arn", subscription_arn),
            (
                "user-agent",
                "Amazon Simple Notification Service Agent".to_owned(),
            ),
        ],
    }
}

/// The EventBridge event of `record`: `detail` is the record.
fn eventbridge_event(config: &Config, set: &str, record: &Record) -> Bytes {
    #[derive(Serialize)]
    struct EventOut<'a> {
        version: &'static str,
        id: String,
        #[serde(rename = "detail-type")]
        detail_type: &'static str,
        source: &'static str,
        account: &'a str,
        time: String,
        region: String,
        resources: [String; 1],
        detail: &'a Record,
    }
    let region = config.server.region.to_ascii_lowercase();
    let account = &config.events.account_id;
    let event = EventOut {
        version: "0",
        id: uuid::Uuid::new_v4().to_string(),
        detail_type: record.event_type().detail_type(),
        source: "aws.ses",
        account,
        time: iso8601_seconds(OffsetDateTime::now_utc()),
        resources: [format!(
            "arn:aws:ses:{region}:{account}:configuration-set/{set}"
        )],
        region,
        detail: record,
    };
    Bytes::from(serde_json::to_vec(&event).unwrap_or_default())
}

/// The value a dimension takes for `mail`: the message tag or header it names, else its
/// default; at most [`MAX_LABEL_VALUE`] characters.
fn dimension_value(dimension: &CloudWatchDimension, mail: &Mail) -> String {
    let value = match dimension.value_source {
        DimensionValueSource::MessageTag => mail.tag(&dimension.name),
        DimensionValueSource::EmailHeader => mail.header(&dimension.name),
        // Links are not clicked here.
        DimensionValueSource::LinkTag => None,
    };
    clip(
        value
            .filter(|v| !v.is_empty())
            .unwrap_or(&dimension.default_value),
    )
}

fn clip(value: &str) -> String {
    value.chars().take(MAX_LABEL_VALUE).collect()
}

/// The label names of `dimensions`: each name with what Prometheus does not allow made
/// `_`, prefixed `dimension_` when it would start with a digit or `__` or be one of the
/// fixed labels, and made unique with trailing `_`.
pub fn label_names(dimensions: &[CloudWatchDimension]) -> Vec<String> {
    const FIXED: [&str; 3] = ["configuration_set", "destination", "event_type"];
    let mut names: Vec<String> = Vec::with_capacity(dimensions.len());
    for dimension in dimensions {
        let mut name: String = dimension
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || name.starts_with("__")
            || FIXED.contains(&name.as_str())
        {
            name = format!("dimension_{name}");
        }
        while names.contains(&name) {
            name.push('_');
        }
        names.push(name);
    }
    names
}

/// Sends each record to `url`, retrying as `retry` says.
async fn http_worker(
    url: String,
    kind: SinkKind,
    mut jobs: mpsc::Receiver<Job>,
    pending: Arc<AtomicUsize>,
    counters: EventCounters,
    retry: RetryPolicy,
) {
    let mut sender = HttpSender::new(&url, retry.attempt_timeout);
    while let Some(job) = jobs.recv().await {
        let mut retries = retry.delays.iter();
        loop {
            match sender.post(&job.headers, job.body.clone()).await {
                Ok(()) => {
                    counters.published(kind.label(), 1);
                    break;
                }
                Err(e) => match retries.next() {
                    Some(delay) if e.is_retryable() => {
                        counters.retried(kind.label());
                        tracing::debug!(sink = kind.label(), endpoint = %url, error = %e, "event endpoint did not take a record: trying again");
                        tokio::time::sleep(*delay).await;
                    }
                    _ => {
                        counters.dropped(kind.label(), 1);
                        tracing::warn!(sink = kind.label(), endpoint = %url, error = %e, "event record dropped: the endpoint did not take it");
                        break;
                    }
                },
            }
        }
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Appends each record as one line to `path`, flushed as it is written.
async fn file_worker(
    path: PathBuf,
    kind: SinkKind,
    mut jobs: mpsc::Receiver<Job>,
    pending: Arc<AtomicUsize>,
    counters: EventCounters,
) {
    while let Some(job) = jobs.recv().await {
        let mut batch = vec![job];
        while batch.len() < 256 {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let count = batch.len();
        let file = path.clone();
        let (written, error) = tokio::task::spawn_blocking(move || append_lines(&file, &batch))
            .await
            .unwrap_or_else(|e| (0, Some(std::io::Error::other(e.to_string()))));
        counters.published(kind.label(), written as u64);
        if let Some(e) = error {
            let lost = count - written;
            counters.dropped(kind.label(), lost as u64);
            tracing::warn!(sink = kind.label(), path = %path.display(), error = %e, records = lost, "event records dropped: cannot write them");
        }
        pending.fetch_sub(count, Ordering::SeqCst);
    }
}

/// Appends each job's body and a newline to `path` (its directory made if need be), one
/// write per line; how many were written, and the error that stopped it.
fn append_lines(path: &Path, batch: &[Job]) -> (usize, Option<std::io::Error>) {
    use std::io::Write as _;
    let opened = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        });
    let mut file = match opened {
        Ok(file) => file,
        Err(e) => return (0, Some(e)),
    };
    let mut line = Vec::new();
    for (i, job) in batch.iter().enumerate() {
        line.clear();
        line.extend_from_slice(&job.body);
        line.push(b'\n');
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            return (i, Some(e));
        }
    }
    (batch.len(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dimension(name: &str) -> CloudWatchDimension {
        CloudWatchDimension {
            name: name.to_owned(),
            value_source: DimensionValueSource::MessageTag,
            default_value: "none".to_owned(),
        }
    }

    #[test]
    fn dimension_names_become_label_names() {
        let names = label_names(&[
            dimension("ses:configuration-set"),
            dimension("team"),
            dimension("9lives"),
            dimension("__x"),
            dimension("event_type"),
            dimension("ses-configuration-set"),
            dimension(""),
        ]);
        assert_eq!(
            names,
            [
                "ses_configuration_set",
                "team",
                "dimension_9lives",
                "dimension___x",
                "dimension_event_type",
                "ses_configuration_set_",
                "dimension_",
            ]
        );
    }

    #[test]
    fn file_names_stay_in_their_directory() {
        let dir = Path::new("/ev");
        assert_eq!(
            default_file(dir, "marketing", "to-app"),
            Path::new("/ev/marketing/to-app.jsonl")
        );
        assert_eq!(
            default_file(dir, "..", "../../etc/passwd"),
            Path::new("/ev/__/.._.._etc_passwd.jsonl")
        );
        assert_eq!(file_name(""), "_");
        assert_eq!(
            stream_name("arn:aws:firehose:us-east-1:000000000000:deliverystream/ses"),
            "ses"
        );
        assert_eq!(arn_region("arn:aws:sns:eu-west-1:1:t"), "eu-west-1");
        assert_eq!(arn_region("nonsense"), "us-east-1");
    }

    /// Past 1,000 sets of dimension values per destination, values become the defaults.
    #[test]
    fn cloudwatch_label_sets_are_bounded() {
        let mut config = Config::parse(
            "[upstream]\nurl = \"dir:/nonexistent\"\n[configuration_sets.m]\n[identities.\"example.com\"]\nverified = true\n",
            Path::new("test.toml"),
        )
        .unwrap();
        config
            .resources
            .configuration_sets
            .get_mut("m")
            .unwrap()
            .event_destinations
            .insert(
                "cw".into(),
                super::super::EventDestination {
                    enabled: true,
                    matching_event_types: vec![EventType::Send],
                    target: DestinationTarget::CloudWatch {
                        dimensions: vec![dimension("campaign")],
                    },
                },
            );
        let config = Arc::new(config);
        let metrics = crate::metrics::Metrics::new();
        let publisher = Publisher::new(metrics.events().clone());
        let message = crate::message::Message::parse(b"From: a@example.com\r\n\r\n".to_vec());
        for i in 0..MAX_LABEL_SETS + 5 {
            let tags = vec![("campaign".to_owned(), format!("c{i}"))];
            let mail = Mail::new(
                &config,
                &super::super::Origin {
                    message_id: "0100018c3a4b5c6d-5f1e2d3c-4b5a-4697-8877-665544332211-000000",
                    timestamp: OffsetDateTime::now_utc(),
                    envelope_sender: "a@example.com",
                    recipients: &["b@example.net".to_owned()],
                    message: &message,
                    configuration_set: "m",
                    tags: &tags,
                    operation: "SendSmtpEmail",
                    source_ip: "127.0.0.1".parse().unwrap(),
                    caller_identity: None,
                },
            );
            publisher.emitter(Arc::clone(&config), mail).send();
        }
        let page = metrics.encode(false);
        let series: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with("sesrelay_cloudwatch_events_total{"))
            .collect();
        assert_eq!(series.len(), MAX_LABEL_SETS + 1, "{page}");
        assert!(series.contains(&"sesrelay_cloudwatch_events_total{configuration_set=\"m\",destination=\"cw\",event_type=\"Send\",campaign=\"none\"} 5"), "{page}");
        assert!(page.contains("sesrelay_events_published_total{sink=\"cloudwatch\"} 1005"));
    }

    #[test]
    fn the_retry_policy_is_bounded() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delays.len(), 8);
        assert!(
            policy.delays[..3]
                .iter()
                .all(|d| *d <= Duration::from_millis(100))
        );
        let waiting: Duration = policy.delays.iter().sum();
        assert!(waiting < Duration::from_secs(15), "{waiting:?}");
    }
}
