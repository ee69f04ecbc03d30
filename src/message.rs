//! The message: read its header block (mail-parser) and rewrite it for the upstream.
//!
//! The rewrite touches header lines only: it prepends `Received:` and the resolved
//! `X-SES-*` headers, and cuts out the client's `X-SES-*` lines by their byte ranges.
//! Every other byte (header order and folding, the body, 8-bit bytes) is copied unchanged.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::Range;

use mail_parser::{Address, HeaderName, HeaderValue, MessageParser};

use crate::policy::MessageFacts;

pub const CONFIGURATION_SET_HEADER: &str = "X-SES-CONFIGURATION-SET";
pub const MESSAGE_TAGS_HEADER: &str = "X-SES-MESSAGE-TAGS";

/// Longest header line we write, CRLF excluded (RFC 5322 2.1.1).
const MAX_LINE: usize = 998;

/// Which client `X-SES-*` header a byte range holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SesHeader {
    ConfigurationSet,
    MessageTags,
    Other,
}

/// What the header block says: the facts the policy needs, and where the `X-SES-*`
/// header lines are.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    from: Option<Vec<String>>,
    sender: Vec<String>,
    /// To, Cc and Bcc addresses, for a message submitted without an envelope (the API).
    recipients: Vec<String>,
    configuration_set: Option<String>,
    tags: Option<String>,
    ses_headers: Vec<(Range<usize>, SesHeader)>,
}

impl Inspection {
    /// Reads the header block of `content` (the message as the client sent it).
    pub fn of(content: &[u8]) -> Inspection {
        let mut inspection = Inspection::default();
        let Some(parsed) = MessageParser::new().parse_headers(content) else {
            return inspection;
        };
        let mut from: Option<Vec<String>> = None;
        let mut from_ok = true;
        for header in parsed.headers() {
            let range = header.offset_field as usize..header.offset_end as usize;
            match &header.name {
                HeaderName::From => match addresses(&header.value) {
                    Some(list) => from.get_or_insert_with(Vec::new).extend(list),
                    None => from_ok = false,
                },
                HeaderName::Sender => {
                    if let Some(list) = addresses(&header.value) {
                        inspection.sender.extend(list);
                    }
                }
                HeaderName::To | HeaderName::Cc | HeaderName::Bcc => {
                    if let Some(list) = addresses(&header.value) {
                        inspection.recipients.extend(list);
                    }
                }
                name => {
                    let name = name.as_str();
                    if name.len() < 6 || !name[..6].eq_ignore_ascii_case("x-ses-") {
                        continue;
                    }
                    let value = || {
                        let start = header.offset_start as usize;
                        unfold(content.get(start..range.end).unwrap_or_default())
                    };
                    let kind = if name.eq_ignore_ascii_case(CONFIGURATION_SET_HEADER) {
                        if inspection.configuration_set.is_none() {
                            inspection.configuration_set = Some(value());
                        }
                        SesHeader::ConfigurationSet
                    } else if name.eq_ignore_ascii_case(MESSAGE_TAGS_HEADER) {
                        if inspection.tags.is_none() {
                            inspection.tags = Some(value());
                        }
                        SesHeader::MessageTags
                    } else {
                        SesHeader::Other
                    };
                    inspection.ses_headers.push((range, kind));
                }
            }
        }
        inspection.from = if from_ok { from } else { None };
        inspection
    }

    /// The first address of the From header, if it parses.
    pub fn first_from(&self) -> Option<String> {
        self.from.as_ref()?.first().cloned()
    }

    /// The To, Cc and Bcc addresses, in order.
    pub fn recipients(&self) -> Vec<String> {
        self.recipients.clone()
    }

    /// The policy's view of the message, given its envelope sender (`""` is `<>`).
    pub fn facts(&self, envelope_sender: &str) -> MessageFacts {
        MessageFacts {
            envelope_sender: (!envelope_sender.is_empty()).then(|| envelope_sender.to_owned()),
            from: self.from.clone(),
            sender: self.sender.clone(),
            configuration_set: self.configuration_set.clone(),
            tags: self.tags.clone(),
            api_tags: None,
        }
    }
}

/// The addresses of a From or Sender header; `None` if a mailbox has no usable address.
fn addresses(value: &HeaderValue<'_>) -> Option<Vec<String>> {
    let mailboxes: Vec<&mail_parser::Addr<'_>> = match value {
        HeaderValue::Address(Address::List(list)) => list.iter().collect(),
        HeaderValue::Address(Address::Group(groups)) => {
            groups.iter().flat_map(|g| g.addresses.iter()).collect()
        }
        _ => return None,
    };
    let mut out = Vec::with_capacity(mailboxes.len());
    for mailbox in mailboxes {
        let address = mailbox.address.as_deref()?.trim();
        let (local, domain) = address.rsplit_once('@')?;
        if local.is_empty() || domain.is_empty() || address.chars().any(char::is_whitespace) {
            return None;
        }
        out.push(address.to_owned());
    }
    (!out.is_empty()).then_some(out)
}

/// A header value with its line breaks removed and its ends trimmed.
fn unfold(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.replace(['\r', '\n'], "").trim().to_owned()
}

/// `bytes` with every line ending made CRLF (a bare LF gains its CR), ending in CRLF: what
/// the SMTP DATA reader produces, for a message that came another way (the API).
pub fn crlf_line_endings(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
    let mut previous = 0u8;
    for &b in bytes {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    if !out.ends_with(b"\r\n") {
        if out.ends_with(b"\r") {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// How to rewrite one accepted message.
#[derive(Debug, Clone)]
pub struct Rewrite<'a> {
    /// The complete `Received:` header, CRLF included (see [`received_header`]).
    pub received: &'a str,
    pub configuration_set: Option<&'a str>,
    pub tags: &'a [(String, String)],
    /// Remove every `X-SES-*` header and add none.
    pub strip_ses_headers: bool,
}

/// The message as the upstream gets it.
pub fn rewrite(content: &[u8], inspection: &Inspection, rw: &Rewrite<'_>) -> Vec<u8> {
    let mut head = String::with_capacity(512);
    head.push_str(rw.received);
    if !rw.strip_ses_headers {
        if let Some(set) = rw.configuration_set {
            let _ = write!(head, "{CONFIGURATION_SET_HEADER}: {set}\r\n");
        }
        if !rw.tags.is_empty() {
            head.push_str(&tags_header(rw.tags));
        }
    }
    let mut out = Vec::with_capacity(head.len() + content.len());
    out.extend_from_slice(head.as_bytes());
    let mut copied = 0;
    for (range, kind) in &inspection.ses_headers {
        let remove = rw.strip_ses_headers || *kind != SesHeader::Other;
        if remove && range.start >= copied && range.end <= content.len() {
            out.extend_from_slice(&content[copied..range.start]);
            copied = range.end;
        }
    }
    out.extend_from_slice(&content[copied..]);
    out
}

/// `X-SES-MESSAGE-TAGS: a=b, c=d`, folded after a comma when a line would pass 998 octets.
fn tags_header(tags: &[(String, String)]) -> String {
    let mut header = format!("{MESSAGE_TAGS_HEADER}:");
    let mut line_len = header.len();
    for (i, (name, value)) in tags.iter().enumerate() {
        let item = format!("{name}={value}");
        let sep = if i == 0 { "" } else { "," };
        if line_len + sep.len() + 1 + item.len() > MAX_LINE {
            header.push_str(sep);
            header.push_str("\r\n ");
            line_len = 1;
        } else {
            header.push_str(sep);
            header.push(' ');
            line_len += sep.len() + 1;
        }
        header.push_str(&item);
        line_len += item.len();
    }
    header.push_str("\r\n");
    header
}

/// What the `Received:` trace header records (RFC 5321 4.4).
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    /// The name the client gave in HELO/EHLO.
    pub helo: &'a str,
    pub peer: IpAddr,
    /// `ESMTP` after EHLO, `SMTP` after HELO.
    pub protocol: &'a str,
    pub hostname: &'a str,
    pub id: &'a str,
    /// The recipient, when there is exactly one.
    pub recipient: Option<&'a str>,
    /// RFC 5322 date-time.
    pub date: &'a str,
}

pub fn received_header(t: &Trace<'_>) -> String {
    let peer = match t.peer {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    let helo: String = t
        .helo
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_:[]".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    let mut h = format!(
        "Received: from {helo} ({peer})\r\n\tby {} (sesrelay) with {} id {}",
        t.hostname, t.protocol, t.id
    );
    match t.recipient {
        Some(rcpt) => {
            let _ = write!(h, "\r\n\tfor <{rcpt}>; {}\r\n", t.date);
        }
        None => {
            let _ = write!(h, ";\r\n\t{}\r\n", t.date);
        }
    }
    h
}

/// The current time as an RFC 5322 date-time (`Thu, 26 Nov 2026 13:14:42 +0000`).
pub fn rfc5322_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED: &str = "Received: test\r\n";

    fn rw<'a>(set: Option<&'a str>, tags: &'a [(String, String)], strip: bool) -> Rewrite<'a> {
        Rewrite {
            received: RECEIVED,
            configuration_set: set,
            tags,
            strip_ses_headers: strip,
        }
    }

    #[test]
    fn facts_from_headers() {
        let m = b"From: Joe <joe@example.com>, ann@example.com\r\nSender: s@example.com\r\n\
X-SES-CONFIGURATION-SET:  first\r\n  folded \r\nX-Ses-Configuration-Set: second\r\n\
x-ses-message-tags: a=b,\r\n c=d\r\nX-SES-MESSAGE-TAGS: z=z\r\n\r\nbody\r\n";
        let f = Inspection::of(m).facts("bounce@example.com");
        assert_eq!(
            f.from,
            Some(vec!["joe@example.com".into(), "ann@example.com".into()])
        );
        assert_eq!(f.sender, vec!["s@example.com".to_string()]);
        assert_eq!(f.configuration_set.as_deref(), Some("first  folded"));
        assert_eq!(f.tags.as_deref(), Some("a=b, c=d"));
        assert_eq!(f.envelope_sender.as_deref(), Some("bounce@example.com"));
        assert_eq!(Inspection::of(m).facts("").envelope_sender, None);
    }

    #[test]
    fn from_that_does_not_parse() {
        for m in [
            &b"Subject: x\r\n\r\nbody"[..],
            b"From: not an address\r\n\r\n",
            b"From: undisclosed-recipients:;\r\n\r\n",
            b"From: <>\r\n\r\n",
            b"From: a@x.com\r\nFrom: garbage\r\n\r\n",
            b"\r\nFrom: a@x.com\r\n\r\n",
            b"",
        ] {
            assert_eq!(
                Inspection::of(m).facts("").from,
                None,
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
        let two = Inspection::of(b"From: a@x.com\r\nFrom: b@y.com\r\n\r\n").facts("");
        assert_eq!(two.from, Some(vec!["a@x.com".into(), "b@y.com".into()]));
    }

    #[test]
    fn rewrite_replaces_ses_headers_and_keeps_every_other_byte() {
        let m = b"From: joe@example.com\r\nX-SES-CONFIGURATION-SET: client\r\nSubject: a\r\n folded\r\n\
X-SES-SOURCE-ARN: arn\r\nX-SES-MESSAGE-TAGS: a=b\r\n\r\n.body \xff\r\n";
        let i = Inspection::of(m);
        let tags = vec![
            ("a".to_string(), "b".to_string()),
            ("t".to_string(), "u".to_string()),
        ];
        let out = rewrite(m, &i, &rw(Some("resolved"), &tags, false));
        assert_eq!(
            out,
            b"Received: test\r\nX-SES-CONFIGURATION-SET: resolved\r\nX-SES-MESSAGE-TAGS: a=b, t=u\r\n\
From: joe@example.com\r\nSubject: a\r\n folded\r\nX-SES-SOURCE-ARN: arn\r\n\r\n.body \xff\r\n"
                .to_vec()
        );
    }

    #[test]
    fn rewrite_without_set_or_tags_adds_nothing() {
        let m = b"From: joe@example.com\r\nX-SES-CONFIGURATION-SET: client\r\n\r\nbody\r\n";
        let out = rewrite(m, &Inspection::of(m), &rw(None, &[], false));
        assert_eq!(
            out,
            b"Received: test\r\nFrom: joe@example.com\r\n\r\nbody\r\n".to_vec()
        );
    }

    #[test]
    fn strip_removes_every_ses_header() {
        let m = b"X-SES-SOURCE-ARN: arn\r\nFrom: joe@example.com\r\nx-ses-configuration-set: c\r\n\r\nX-SES-IN-BODY: kept\r\n";
        let tags = vec![("a".to_string(), "b".to_string())];
        let out = rewrite(m, &Inspection::of(m), &rw(Some("resolved"), &tags, true));
        assert_eq!(
            out,
            b"Received: test\r\nFrom: joe@example.com\r\n\r\nX-SES-IN-BODY: kept\r\n".to_vec()
        );
    }

    #[test]
    fn long_tag_lists_are_folded() {
        let tags: Vec<(String, String)> = (0..10)
            .map(|i| (format!("name{i}"), "v".repeat(200)))
            .collect();
        let h = tags_header(&tags);
        assert!(h.split("\r\n").all(|l| l.len() <= MAX_LINE));
        let unfolded = h.replace("\r\n ", " ");
        assert_eq!(unfolded.matches(", ").count(), 9);
    }

    #[test]
    fn received_trace() {
        let t = Trace {
            helo: "client.example (evil)\r\n",
            peer: "127.0.0.1".parse().unwrap(),
            protocol: "ESMTP",
            hostname: "sesrelay.local",
            id: "abc",
            recipient: Some("r@example.com"),
            date: "Thu, 26 Nov 2026 13:14:42 +0000",
        };
        assert_eq!(
            received_header(&t),
            "Received: from client.example??evil??? ([127.0.0.1])\r\n\tby sesrelay.local (sesrelay) with ESMTP id abc\r\n\tfor <r@example.com>; Thu, 26 Nov 2026 13:14:42 +0000\r\n"
        );
        let t = Trace {
            recipient: None,
            peer: "::1".parse().unwrap(),
            helo: "h",
            ..t
        };
        assert!(received_header(&t).contains("from h ([IPv6:::1])"));
        assert!(received_header(&t).ends_with("id abc;\r\n\tThu, 26 Nov 2026 13:14:42 +0000\r\n"));
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(crlf_line_endings(b"a\nb\r\nc"), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf_line_endings(b"a\r\n"), b"a\r\n");
        assert_eq!(crlf_line_endings(b"a\rb\r"), b"a\rb\r\n");
        assert_eq!(crlf_line_endings(b""), b"\r\n");
    }

    #[test]
    fn recipients_and_first_from() {
        let i = Inspection::of(b"From: a@x.com, b@x.com\r\nTo: t@y.com\r\nCc: c@y.com, d@y.com\r\nBcc: e@y.com\r\n\r\n");
        assert_eq!(i.first_from().as_deref(), Some("a@x.com"));
        assert_eq!(i.recipients(), ["t@y.com", "c@y.com", "d@y.com", "e@y.com"]);
    }

    #[test]
    fn date_format() {
        let d = rfc5322_now();
        assert!(d.ends_with("+0000"), "{d}");
        assert_eq!(d.as_bytes()[3], b',');
    }
}
