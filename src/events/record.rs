//! Event records in SES's own format (SES Developer Guide, "Contents of event data that
//! Amazon SES publishes"; SES-BEHAVIOUR.md, "Event publishing").
//!
//! A record is `{"eventType": ..., "mail": {...}, "<member>": {...}}`. The `mail` object
//! is the same in every record of one message ([`Mail`], built once when the message is
//! accepted); the member says what happened ([`Event`]). Delivery records add the tag
//! `ses:outgoing-ip`, as SES's do.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde::ser::SerializeMap;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use super::EventType;
use crate::config::Config;
use crate::message::{Message, encoded_word, parse_address_list, parse_return_path, unfold};

/// `mail.headers` stops past this many bytes of names and values, with
/// `headersTruncated: true` (SES: "truncated past 10 KB").
pub const HEADERS_LIMIT: usize = 10 * 1024;

/// Each list of `mail.commonHeaders` (from, to, ...) stops past this many bytes: sesrelay's
/// own bound, so that a header of 40,000 addresses does not make a record of megabytes.
pub const COMMON_LIST_LIMIT: usize = 10 * 1024;

/// SES's diagnostic for a recipient on the account's suppression list.
pub const SUPPRESSED_DIAGNOSTIC: &str = "Amazon SES did not send the message to this address because it is on the suppression list for your account. For more information about removing addresses from the suppression list, see the Amazon SES Developer Guide at https://docs.aws.amazon.com/ses/latest/DeveloperGuide/sending-email-suppression-list.html";

/// The mailbox simulator's complaint `userAgent`.
pub const SIMULATOR_USER_AGENT: &str = "Amazon SES Mailbox Simulator";

const ISO_MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
const ISO_SECONDS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `2026-11-26T13:29:38.000Z`: ISO 8601 in UTC with milliseconds, as SES writes its
/// timestamps.
pub fn iso8601_millis(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(ISO_MILLIS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// `2026-11-26T13:29:38Z`: EventBridge's `time`.
pub fn iso8601_seconds(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(ISO_SECONDS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// What a record says about the message besides its headers: who sent it, how, with which
/// set and tags. The relay fills it in when the policy has accepted the message.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The id the client got (the 250's, the API's `MessageId`).
    pub message_id: &'a str,
    /// When the relay took the message.
    pub timestamp: OffsetDateTime,
    /// The envelope sender; `""` for `<>`.
    pub envelope_sender: &'a str,
    /// The envelope recipients, all of them (the mailbox simulator's included).
    pub recipients: &'a [String],
    pub message: &'a Message,
    pub configuration_set: &'a str,
    /// The message tags the relay forwards (the client's, then the set's).
    pub tags: &'a [(String, String)],
    /// `ses:operation`: `SendSmtpEmail`, `SendEmail`, `SendRawEmail` ([`ses_operation`]).
    pub operation: &'static str,
    /// `ses:source-ip`: the client's address.
    pub source_ip: IpAddr,
    /// `ses:caller-identity`: the SMTP AUTH user, when there is one.
    pub caller_identity: Option<&'a str>,
}

/// `ses:operation` for a message that came by `protocol` (`HTTP` for the API, an SMTP
/// protocol name otherwise): `SendSmtpEmail` over SMTP; over the API `SendEmail` for a
/// Simple message (the API chooses its id: `id_chosen`) and `SendRawEmail` for a Raw one.
pub fn ses_operation(protocol: &str, id_chosen: bool) -> &'static str {
    match (protocol, id_chosen) {
        ("HTTP", true) => "SendEmail",
        ("HTTP", false) => "SendRawEmail",
        _ => "SendSmtpEmail",
    }
}

/// One header field of `mail.headers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// `mail.commonHeaders`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommonHeaders {
    pub from: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_path: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    pub date: String,
    pub message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// The `mail` object of every record of one message.
#[derive(Debug, Clone)]
pub struct Mail {
    timestamp: String,
    source: String,
    source_arn: String,
    sending_account_id: String,
    message_id: String,
    destination: Vec<String>,
    headers_truncated: bool,
    headers: Vec<Header>,
    common_headers: CommonHeaders,
    /// `mail.tags` in order: SES's automatic `ses:*` tags, then the message's.
    tags: Vec<(String, Vec<String>)>,
    configuration_set: String,
    /// When the relay took the message, for `processingTimeMillis`.
    started: Instant,
}

impl Mail {
    /// The `mail` object of a message accepted with `origin.configuration_set`, against
    /// `config` (the region, `[events] account_id`, the identities).
    pub fn new(config: &Config, origin: &Origin<'_>) -> Mail {
        let (headers, headers_truncated, mut common) = read_headers(origin.message);
        if common.date.is_empty() {
            common.date = origin
                .timestamp
                .format(&time::format_description::well_known::Rfc2822)
                .unwrap_or_default();
        }
        if common.message_id.is_empty() {
            common.message_id = origin.message_id.to_owned();
        }
        let first_from = origin.message.first_from();
        let source = if origin.envelope_sender.is_empty() {
            first_from.clone().unwrap_or_default()
        } else {
            origin.envelope_sender.to_owned()
        };
        let region = config.server.region.to_ascii_lowercase();
        let account = &config.events.account_id;
        let source_arn = format!(
            "arn:aws:ses:{region}:{account}:identity/{}",
            source_identity(config, &source)
        );
        let mut tags: Vec<(String, Vec<String>)> = vec![
            ("ses:operation".into(), vec![origin.operation.to_owned()]),
            (
                "ses:configuration-set".into(),
                vec![origin.configuration_set.to_owned()],
            ),
            (
                "ses:source-ip".into(),
                vec![origin.source_ip.to_canonical().to_string()],
            ),
        ];
        if let Some(domain) = first_from
            .as_deref()
            .and_then(|from| from.rsplit_once('@'))
            .map(|(_, domain)| domain.to_ascii_lowercase())
        {
            tags.push(("ses:from-domain".into(), vec![domain]));
        }
        if let Some(user) = origin.caller_identity {
            tags.push(("ses:caller-identity".into(), vec![user.to_owned()]));
        }
        for (name, value) in origin.tags {
            // The automatic tags keep their values; a name appears once.
            if !tags.iter().any(|(n, _)| n == name) {
                tags.push((name.clone(), vec![value.clone()]));
            }
        }
        Mail {
            timestamp: iso8601_millis(origin.timestamp),
            source,
            source_arn,
            sending_account_id: account.clone(),
            message_id: origin.message_id.to_owned(),
            destination: origin.recipients.to_vec(),
            headers_truncated,
            headers,
            common_headers: common,
            tags,
            configuration_set: origin.configuration_set.to_owned(),
            started: Instant::now(),
        }
    }

    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The message's id became another (SES's, given by the upstream) before any record.
    pub fn set_message_id(&mut self, id: &str) {
        id.clone_into(&mut self.message_id);
    }

    pub fn configuration_set(&self) -> &str {
        &self.configuration_set
    }

    pub fn destination(&self) -> &[String] {
        &self.destination
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    pub fn common_headers(&self) -> &CommonHeaders {
        &self.common_headers
    }

    /// The value of tag `name` (automatic `ses:*` tags included).
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    }

    /// The first header field `name` (case-insensitive) among `mail.headers`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Milliseconds since the relay took the message.
    fn processing_millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn feedback_id(&self) -> String {
        new_feedback_id(&self.message_id)
    }
}

/// A new `feedbackId` for a bounce or complaint of message `message_id`, in SES's form:
/// the message id's region prefix, now in Unix milliseconds, a random UUID, `-000000`.
pub fn new_feedback_id(message_id: &str) -> String {
    let prefix = message_id
        .get(..4)
        .filter(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or("0100");
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        & 0xffff_ffff_ffff;
    format!(
        "{prefix}{millis:012x}-{}-000000",
        uuid::Uuid::new_v4().hyphenated()
    )
}

/// The identity `sourceArn` names: the most specific verified identity covering `source`,
/// as the configuration writes it; the address itself when none does.
fn source_identity(config: &Config, source: &str) -> String {
    match config.policy.identities.verified_covering(source).next() {
        Some((name, _)) => config
            .resources
            .identities
            .get(&name)
            .map_or(name, |record| record.name.clone()),
        None => source.to_owned(),
    }
}

/// `mail.headers` (truncated past [`HEADERS_LIMIT`]), whether they were truncated, and
/// `mail.commonHeaders` without its defaults (date, messageId). One pass over the block.
fn read_headers(message: &Message) -> (Vec<Header>, bool, CommonHeaders) {
    let mut headers = Vec::new();
    let mut size = 0usize;
    let mut truncated = false;
    let mut common = CommonHeaders::default();
    for (name, value) in message.header_fields() {
        let name = String::from_utf8_lossy(name);
        if !truncated {
            let text = unfold(value);
            size = size.saturating_add(name.len() + text.len());
            if size > HEADERS_LIMIT {
                truncated = true;
            } else {
                headers.push(Header {
                    name: name.clone().into_owned(),
                    value: text,
                });
            }
        }
        let list = match name.to_ascii_lowercase().as_str() {
            "from" => &mut common.from,
            "reply-to" => &mut common.reply_to,
            "to" => &mut common.to,
            "cc" => &mut common.cc,
            "bcc" => &mut common.bcc,
            "return-path" => {
                if common.return_path.is_none()
                    && let Ok(Some(mailbox)) = parse_return_path(value)
                {
                    common.return_path = Some(mailbox.address);
                }
                continue;
            }
            "date" => {
                if common.date.is_empty() {
                    common.date = unfold(value);
                }
                continue;
            }
            "message-id" => {
                if common.message_id.is_empty() {
                    common.message_id = unfold(value);
                }
                continue;
            }
            "subject" => {
                if common.subject.is_none() {
                    common.subject = Some(encoded_word::decode(&unfold(value)).into_owned());
                }
                continue;
            }
            _ => continue,
        };
        let mut used: usize = list.iter().map(String::len).sum();
        for mailbox in parse_address_list(value).unwrap_or_default() {
            let shown = mailbox.shown();
            used = used.saturating_add(shown.len());
            if used > COMMON_LIST_LIMIT {
                break;
            }
            list.push(shown);
        }
    }
    (headers, truncated, common)
}

/// `bounce.bounceType` and `bounceSubType`, and each recipient's status and diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceKind {
    /// The upstream refused the message for good: its reply (`550 5.1.1 ...`).
    /// Permanent, General.
    Refused { reply: String },
    /// A mailbox that does not exist (the simulator's `bounce@`): Permanent, General,
    /// `smtp; 550 5.1.1 user unknown`.
    UserUnknown,
    /// On the account's suppression list (the simulator's `suppressionlist@`, or a
    /// suppressed recipient): Permanent, OnAccountSuppressionList.
    Suppressed,
}

/// `bounce.bouncedRecipients[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BouncedRecipient {
    pub email_address: String,
    pub action: &'static str,
    pub status: String,
    pub diagnostic_code: String,
}

/// The `bounce` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bounce {
    pub bounce_type: &'static str,
    pub bounce_sub_type: &'static str,
    pub bounced_recipients: Vec<BouncedRecipient>,
    pub timestamp: String,
    pub feedback_id: String,
    #[serde(rename = "reportingMTA")]
    pub reporting_mta: String,
}

impl Bounce {
    /// A bounce of `recipients` of `mail`, reported by `hostname`.
    pub fn new(mail: &Mail, recipients: &[String], kind: &BounceKind, hostname: &str) -> Bounce {
        let (sub_type, status, diagnostic) = match kind {
            BounceKind::Refused { reply } => (
                "General",
                enhanced_status(reply).unwrap_or("5.0.0").to_owned(),
                format!("smtp; {reply}"),
            ),
            BounceKind::UserUnknown => (
                "General",
                "5.1.1".to_owned(),
                "smtp; 550 5.1.1 user unknown".to_owned(),
            ),
            BounceKind::Suppressed => (
                "OnAccountSuppressionList",
                "5.1.1".to_owned(),
                SUPPRESSED_DIAGNOSTIC.to_owned(),
            ),
        };
        Bounce {
            bounce_type: "Permanent",
            bounce_sub_type: sub_type,
            bounced_recipients: recipients
                .iter()
                .map(|r| BouncedRecipient {
                    email_address: r.clone(),
                    action: "failed",
                    status: status.clone(),
                    diagnostic_code: diagnostic.clone(),
                })
                .collect(),
            timestamp: iso8601_millis(OffsetDateTime::now_utc()),
            feedback_id: mail.feedback_id(),
            reporting_mta: format!("dsn; {hostname}"),
        }
    }
}

/// The enhanced status code of an SMTP reply line (`550 5.1.1 ...` → `5.1.1`).
fn enhanced_status(reply: &str) -> Option<&str> {
    let code = reply.split_whitespace().nth(1)?;
    let mut parts = code.split('.');
    let class = parts.next()?;
    let valid = matches!(class, "2" | "4" | "5")
        && parts.clone().count() == 2
        && parts.all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    valid.then_some(code)
}

/// The `delivery` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub timestamp: String,
    pub processing_time_millis: u64,
    pub recipients: Vec<String>,
    pub smtp_response: String,
    #[serde(rename = "reportingMTA")]
    pub reporting_mta: String,
    /// The tag `ses:outgoing-ip` of the record.
    #[serde(skip)]
    pub outgoing_ip: IpAddr,
}

impl Delivery {
    /// `recipients` of `mail` delivered by `hostname`, the receiving server having answered
    /// `smtp_response`, sent from `outgoing_ip`.
    pub fn new(
        mail: &Mail,
        recipients: &[String],
        smtp_response: &str,
        hostname: &str,
        outgoing_ip: IpAddr,
    ) -> Delivery {
        Delivery {
            timestamp: iso8601_millis(OffsetDateTime::now_utc()),
            processing_time_millis: mail.processing_millis(),
            recipients: recipients.to_vec(),
            smtp_response: smtp_response.to_owned(),
            reporting_mta: hostname.to_owned(),
            outgoing_ip,
        }
    }
}

/// `complaint.complainedRecipients[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplainedRecipient {
    pub email_address: String,
}

/// The `complaint` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Complaint {
    pub complained_recipients: Vec<ComplainedRecipient>,
    pub timestamp: String,
    pub feedback_id: String,
    pub user_agent: String,
    pub complaint_feedback_type: &'static str,
    pub arrival_date: String,
}

impl Complaint {
    /// An `abuse` complaint by `recipients` of `mail`, sent by `user_agent`.
    pub fn new(mail: &Mail, recipients: &[String], user_agent: &str) -> Complaint {
        let now = iso8601_millis(OffsetDateTime::now_utc());
        Complaint {
            complained_recipients: recipients
                .iter()
                .map(|r| ComplainedRecipient {
                    email_address: r.clone(),
                })
                .collect(),
            timestamp: now.clone(),
            feedback_id: mail.feedback_id(),
            user_agent: user_agent.to_owned(),
            complaint_feedback_type: "abuse",
            arrival_date: now,
        }
    }
}

/// What happened to a message: the member of its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Send,
    Delivery(Delivery),
    Bounce(Bounce),
    Complaint(Complaint),
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self {
            Event::Send => EventType::Send,
            Event::Delivery(_) => EventType::Delivery,
            Event::Bounce(_) => EventType::Bounce,
            Event::Complaint(_) => EventType::Complaint,
        }
    }
}

/// One record: a message's `mail` and what happened.
#[derive(Debug, Clone)]
pub struct Record {
    pub mail: Arc<Mail>,
    pub event: Event,
}

impl Record {
    pub fn event_type(&self) -> EventType {
        self.event.event_type()
    }

    /// The record as SES writes it: one line of JSON.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail (string keys, no maps of other keys).
        serde_json::to_string(&RecordOut::of(self)).unwrap_or_default()
    }

    /// The record as a JSON value (tests, and sinks that embed it).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(RecordOut::of(self)).unwrap_or_default()
    }
}

/// The record as SES writes it (what [`Record::to_json`] makes), to embed it in another
/// document (EventBridge's `detail`).
impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RecordOut::of(self).serialize(serializer)
    }
}

/// `{}`: the `send` member.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RecordOut<'a> {
    #[serde(rename = "eventType")]
    event_type: &'static str,
    mail: MailOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    send: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<&'a Delivery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bounce: Option<&'a Bounce>,
    #[serde(skip_serializing_if = "Option::is_none")]
    complaint: Option<&'a Complaint>,
}

impl<'a> RecordOut<'a> {
    fn of(record: &'a Record) -> RecordOut<'a> {
        let mail = &record.mail;
        let outgoing_ip = match &record.event {
            Event::Delivery(d) => Some(d.outgoing_ip.to_canonical().to_string()),
            _ => None,
        };
        RecordOut {
            event_type: record.event_type().record_name(),
            mail: MailOut {
                timestamp: &mail.timestamp,
                source: &mail.source,
                source_arn: &mail.source_arn,
                sending_account_id: &mail.sending_account_id,
                message_id: &mail.message_id,
                destination: &mail.destination,
                headers_truncated: mail.headers_truncated,
                headers: &mail.headers,
                common_headers: &mail.common_headers,
                tags: TagsOut {
                    tags: &mail.tags,
                    outgoing_ip,
                },
            },
            send: matches!(record.event, Event::Send).then_some(Empty {}),
            delivery: match &record.event {
                Event::Delivery(d) => Some(d),
                _ => None,
            },
            bounce: match &record.event {
                Event::Bounce(b) => Some(b),
                _ => None,
            },
            complaint: match &record.event {
                Event::Complaint(c) => Some(c),
                _ => None,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MailOut<'a> {
    timestamp: &'a str,
    source: &'a str,
    source_arn: &'a str,
    sending_account_id: &'a str,
    message_id: &'a str,
    destination: &'a [String],
    headers_truncated: bool,
    headers: &'a [Header],
    common_headers: &'a CommonHeaders,
    tags: TagsOut<'a>,
}

/// `mail.tags`: each name with its values, plus `ses:outgoing-ip` in Delivery records.
struct TagsOut<'a> {
    tags: &'a [(String, Vec<String>)],
    outgoing_ip: Option<String>,
}

impl Serialize for TagsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (name, values) in self.tags {
            map.serialize_entry(name, values)?;
        }
        if let Some(ip) = &self.outgoing_ip {
            map.serialize_entry("ses:outgoing-ip", &[ip])?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            r#"
[server]
region = "US-EAST-1"
[upstream]
url = "dir:/nonexistent"
[configuration_sets.marketing]
tags = { team = "growth" }
[identities."Example.com"]
verified = true
"#,
            Path::new("test.toml"),
        )
        .unwrap()
    }

    fn mail_of(content: &[u8], envelope_sender: &str, caller: Option<&str>) -> Mail {
        let message = Message::parse(content.to_vec());
        let recipients = vec!["bob@example.net".to_owned()];
        let tags = vec![("team".to_owned(), "growth".to_owned())];
        Mail::new(
            &config(),
            &Origin {
                message_id: "0100018c3a4b5c6d-5f1e2d3c-4b5a-4697-8877-665544332211-000000",
                timestamp: OffsetDateTime::from_unix_timestamp_nanos(1_795_699_778_123_000_000)
                    .unwrap(),
                envelope_sender,
                recipients: &recipients,
                message: &message,
                configuration_set: "marketing",
                tags: &tags,
                operation: "SendSmtpEmail",
                source_ip: "::ffff:127.0.0.1".parse().unwrap(),
                caller_identity: caller,
            },
        )
    }

    /// The example of SES-BEHAVIOUR.md, field by field.
    #[test]
    fn a_send_record_has_ses_shape() {
        let mail = mail_of(
            b"From: Joe <joe@example.com>\r\nTo: bob@example.net\r\nSubject: =?UTF-8?Q?Hi_there?=\r\nX-SES-MESSAGE-TAGS: team=growth\r\n\r\nbody\r\n",
            "joe@example.com",
            Some("app"),
        );
        let record = Record {
            mail: Arc::new(mail),
            event: Event::Send,
        };
        let v: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        let m = &v["mail"];
        assert_eq!(v["eventType"], "Send");
        assert_eq!(v["send"], serde_json::json!({}));
        assert_eq!(m["timestamp"], "2026-11-26T13:29:38.123Z");
        assert_eq!(m["source"], "joe@example.com");
        assert_eq!(
            m["sourceArn"],
            "arn:aws:ses:us-east-1:000000000000:identity/Example.com"
        );
        assert_eq!(m["sendingAccountId"], "000000000000");
        assert_eq!(m["destination"], serde_json::json!(["bob@example.net"]));
        assert_eq!(m["headersTruncated"], false);
        assert_eq!(
            m["headers"][2],
            serde_json::json!({"name": "Subject", "value": "=?UTF-8?Q?Hi_there?="})
        );
        assert_eq!(m["headers"].as_array().unwrap().len(), 4);
        let common = &m["commonHeaders"];
        assert_eq!(common["from"], serde_json::json!(["Joe <joe@example.com>"]));
        assert_eq!(common["to"], serde_json::json!(["bob@example.net"]));
        assert_eq!(common["subject"], "Hi there");
        assert_eq!(common["messageId"], m["messageId"]);
        assert_eq!(common["date"], "Thu, 26 Nov 2026 13:29:38 +0000");
        assert!(common.get("cc").is_none());
        assert_eq!(
            m["tags"],
            serde_json::json!({
                "ses:operation": ["SendSmtpEmail"],
                "ses:configuration-set": ["marketing"],
                "ses:source-ip": ["127.0.0.1"],
                "ses:from-domain": ["example.com"],
                "ses:caller-identity": ["app"],
                "team": ["growth"],
            })
        );
    }

    #[test]
    fn the_null_sender_makes_the_from_address_the_source() {
        let mail = mail_of(
            b"From: ann@elsewhere.test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\n",
            "",
            None,
        );
        let record = Record {
            mail: Arc::new(mail),
            event: Event::Send,
        };
        let v = record.to_value();
        assert_eq!(v["mail"]["source"], "ann@elsewhere.test");
        // No verified identity covers it: the address itself.
        assert_eq!(
            v["mail"]["sourceArn"],
            "arn:aws:ses:us-east-1:000000000000:identity/ann@elsewhere.test"
        );
        assert_eq!(v["mail"]["commonHeaders"]["messageId"], "<x@y>");
        assert_eq!(
            v["mail"]["commonHeaders"]["date"],
            "Mon, 1 Jan 2024 00:00:00 +0000"
        );
        assert!(v["mail"]["tags"].get("ses:caller-identity").is_none());
    }

    #[test]
    fn headers_past_10_kb_are_truncated() {
        let mut content = b"From: joe@example.com\r\n".to_vec();
        for i in 0..200 {
            content.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "x".repeat(80)).as_bytes());
        }
        content.extend_from_slice(b"Subject: late\r\n\r\n");
        let mail = mail_of(&content, "joe@example.com", None);
        assert!(mail.headers_truncated);
        let size: usize = mail
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum();
        assert!(
            size <= HEADERS_LIMIT && size > HEADERS_LIMIT - 200,
            "{size}"
        );
        // commonHeaders still read the whole block.
        assert_eq!(mail.common_headers.subject.as_deref(), Some("late"));
    }

    #[test]
    fn delivery_bounce_and_complaint_members() {
        let mail = Arc::new(mail_of(
            b"From: joe@example.com\r\n\r\n",
            "joe@example.com",
            None,
        ));
        let rcpts = vec!["bob@example.net".to_owned()];
        let delivery = Record {
            mail: Arc::clone(&mail),
            event: Event::Delivery(Delivery::new(
                &mail,
                &rcpts,
                "250 2.0.0 Ok",
                "relay.test",
                "192.0.2.1".parse().unwrap(),
            )),
        }
        .to_value();
        assert_eq!(delivery["eventType"], "Delivery");
        assert_eq!(delivery["delivery"]["smtpResponse"], "250 2.0.0 Ok");
        assert_eq!(delivery["delivery"]["reportingMTA"], "relay.test");
        assert_eq!(
            delivery["mail"]["tags"]["ses:outgoing-ip"],
            serde_json::json!(["192.0.2.1"])
        );
        assert!(delivery.get("send").is_none());

        let bounce = |kind| {
            Record {
                mail: Arc::clone(&mail),
                event: Event::Bounce(Bounce::new(&mail, &rcpts, &kind, "relay.test")),
            }
            .to_value()
        };
        let refused = bounce(BounceKind::Refused {
            reply: "550 5.7.1 no thanks".into(),
        });
        assert_eq!(refused["bounce"]["bounceType"], "Permanent");
        assert_eq!(refused["bounce"]["bounceSubType"], "General");
        assert_eq!(refused["bounce"]["reportingMTA"], "dsn; relay.test");
        assert_eq!(
            refused["bounce"]["bouncedRecipients"],
            serde_json::json!([{"emailAddress": "bob@example.net", "action": "failed",
                "status": "5.7.1", "diagnosticCode": "smtp; 550 5.7.1 no thanks"}])
        );
        assert!(refused["mail"]["tags"].get("ses:outgoing-ip").is_none());
        let plain = bounce(BounceKind::Refused {
            reply: "554 no".into(),
        });
        assert_eq!(plain["bounce"]["bouncedRecipients"][0]["status"], "5.0.0");
        let unknown = bounce(BounceKind::UserUnknown);
        assert_eq!(
            unknown["bounce"]["bouncedRecipients"][0]["diagnosticCode"],
            "smtp; 550 5.1.1 user unknown"
        );
        let suppressed = bounce(BounceKind::Suppressed);
        assert_eq!(
            suppressed["bounce"]["bounceSubType"],
            "OnAccountSuppressionList"
        );
        let id = suppressed["bounce"]["feedbackId"].as_str().unwrap();
        assert!(id.starts_with("0100") && id.ends_with("-000000") && id.len() == 60);

        let complaint = Record {
            mail: Arc::clone(&mail),
            event: Event::Complaint(Complaint::new(&mail, &rcpts, SIMULATOR_USER_AGENT)),
        }
        .to_value();
        assert_eq!(complaint["eventType"], "Complaint");
        assert_eq!(
            complaint["complaint"]["complainedRecipients"],
            serde_json::json!([{"emailAddress": "bob@example.net"}])
        );
        assert_eq!(complaint["complaint"]["complaintFeedbackType"], "abuse");
    }

    #[test]
    fn operations() {
        assert_eq!(ses_operation("ESMTPA", false), "SendSmtpEmail");
        assert_eq!(ses_operation("HTTP", true), "SendEmail");
        assert_eq!(ses_operation("HTTP", false), "SendRawEmail");
    }
}
