//! The message, owned once: the bytes DATA produced, its header block read once, and the
//! rewrite for the upstream as a new head plus ranges of the original.
//!
//! A [`Message`] holds the content as shared [`Bytes`] (the DATA buffer itself, not a
//! copy). Reading it finds what the policy needs (From, Sender, Return-Path, the first
//! `X-SES-CONFIGURATION-SET` and `X-SES-MESSAGE-TAGS`) in one linear pass over the header
//! block. [`Forwarded`] is the accepted message as the upstream gets it: a small new head
//! (`Received:` and the resolved `X-SES-*` headers), then the original header block without
//! the client's `X-SES-*` lines, then the body, all handed out as slices of the original
//! by [`Forwarded::parts`]; nothing is copied.
//!
//! The header block is everything up to the first empty line. Each line is a field (a name
//! before a colon), a continuation (it begins with a space or tab) or a line that is
//! neither, which is kept and ignored. Every From, Sender and Return-Path in the block is
//! checked, so no header hides from the check behind a malformed line.

mod address;
pub mod encoded_word;

use crate::tls::TlsInfo;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::Range;

use bytes::Bytes;

pub use address::{AddressError, Mailbox, parse_address_list, parse_return_path};

use crate::policy::MessageFacts;

pub const CONFIGURATION_SET_HEADER: &str = "X-SES-CONFIGURATION-SET";
pub const MESSAGE_TAGS_HEADER: &str = "X-SES-MESSAGE-TAGS";

/// Longest header line we write, CRLF excluded (RFC 5322 2.1.1).
const MAX_LINE: usize = 998;
/// The body is handed to the upstream in slices of at most this size.
const BODY_CHUNK: usize = 64 * 1024;

/// One header field of the block: the whole field (folded lines and final CRLF included),
/// its name and its value (after the colon, before the final CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    whole: Range<usize>,
    name: Range<usize>,
    value: Range<usize>,
}

/// Where the header block ends: the offset just after its empty line (the body's start),
/// or the content's length when there is no empty line.
fn header_end(content: &[u8]) -> usize {
    let mut pos = 0;
    while pos < content.len() {
        let end = match content[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i + 1,
            None => content.len(),
        };
        let line = &content[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return end;
        }
        pos = end;
    }
    content.len()
}

/// The fields of the header block `head` (as returned by [`header_end`], empty line
/// included), starting at `pos`; lines that are neither fields nor continuations are
/// skipped, and an empty line ends the block.
struct Fields<'a> {
    head: &'a [u8],
    pos: usize,
}

impl Fields<'_> {
    fn line_end(&self, from: usize) -> usize {
        match self.head[from..].iter().position(|&b| b == b'\n') {
            Some(i) => from + i + 1,
            None => self.head.len(),
        }
    }
}

impl Iterator for Fields<'_> {
    type Item = Field;

    fn next(&mut self) -> Option<Field> {
        loop {
            if self.pos >= self.head.len() {
                return None;
            }
            let start = self.pos;
            let mut end = self.line_end(start);
            let line = &self.head[start..end];
            if line == b"\r\n" || line == b"\n" {
                self.pos = self.head.len();
                return None;
            }
            // Continuation lines belong to this line.
            while end < self.head.len() && matches!(self.head[end], b' ' | b'\t') {
                end = self.line_end(end);
            }
            self.pos = end;
            if matches!(line.first(), Some(b' ' | b'\t')) {
                continue; // a continuation with no field before it
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue; // not a field
            };
            let mut name_end = start + colon;
            while name_end > start && matches!(self.head[name_end - 1], b' ' | b'\t') {
                name_end -= 1;
            }
            let mut value_end = end;
            if self.head[..value_end].ends_with(b"\n") {
                value_end -= 1;
            }
            if self.head[..value_end].ends_with(b"\r") {
                value_end -= 1;
            }
            return Some(Field {
                whole: start..end,
                name: start..name_end,
                value: (start + colon + 1).min(value_end)..value_end,
            });
        }
    }
}

/// Which client `X-SES-*` header a field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SesHeader {
    ConfigurationSet,
    MessageTags,
    Other,
}

/// A field name as it is matched: without control characters or white space, which no
/// header name may hold (RFC 5322 2.2). An upstream that drops such bytes would read
/// `\0Sender:` as `Sender:`, so the checks read it so too; the bytes forwarded are the
/// original ones.
fn matching_name(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if name.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80) {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(
            name.iter()
                .copied()
                .filter(|b| b.is_ascii_graphic() || *b >= 0x80)
                .collect(),
        )
    }
}

fn ses_header(name: &[u8]) -> Option<SesHeader> {
    let name = matching_name(name);
    let name = name.as_ref();
    let prefix = name.get(..6)?;
    if !prefix.eq_ignore_ascii_case(b"x-ses-") {
        return None;
    }
    Some(
        if name.eq_ignore_ascii_case(CONFIGURATION_SET_HEADER.as_bytes()) {
            SesHeader::ConfigurationSet
        } else if name.eq_ignore_ascii_case(MESSAGE_TAGS_HEADER.as_bytes()) {
            SesHeader::MessageTags
        } else {
            SesHeader::Other
        },
    )
}

/// What the header block says, read once.
#[derive(Debug, Clone, Default)]
struct Facts {
    /// From's mailboxes; `None` when there is no From header.
    from: Option<Vec<Mailbox>>,
    sender: Vec<Mailbox>,
    return_path: Vec<Mailbox>,
    /// To, Cc and Bcc, for a message submitted without an envelope (the API).
    recipients: Vec<String>,
    /// The first address header that could not be read, with its error.
    address_error: Option<AddressError>,
    configuration_set: Option<String>,
    tags: Option<String>,
    /// The first header of SES's single-occurrence list that appears twice, as SES spells it.
    duplicate: Option<&'static str>,
}

/// The headers that may appear only once (SES Developer Guide, "Amazon SES header
/// fields"), spelled as SES spells them in its `Duplicate header '<name>'` reply. To and Cc
/// may repeat.
const SINGLE_OCCURRENCE: [&str; 59] = [
    "Accept-Language",
    "acceptLanguage",
    "Archived-At",
    "Auto-Submitted",
    "Bounces-to",
    "Comments",
    "Content-Alternative",
    "Content-Base",
    "Content-Class",
    "Content-Description",
    "Content-Disposition",
    "Content-Duration",
    "Content-ID",
    "Content-Language",
    "Content-Length",
    "Content-Location",
    "Content-MD5",
    "Content-Transfer-Encoding",
    "Content-Type",
    "Date",
    "Delivered-To",
    "Disposition-Notification-Options",
    "Disposition-Notification-To",
    "DKIM-Signature",
    "DomainKey-Signature",
    "Errors-To",
    "From",
    "Importance",
    "In-Reply-To",
    "Keywords",
    "List-Archive",
    "List-Help",
    "List-Id",
    "List-Owner",
    "List-Post",
    "List-Subscribe",
    "List-Unsubscribe",
    "Message-Context",
    "Message-ID",
    "MIME-Version",
    "Organization",
    "Original-From",
    "Original-Message-ID",
    "Original-Recipient",
    "Original-Subject",
    "Precedence",
    "Priority",
    "References",
    "Reply-To",
    "Return-Path",
    "Return-Receipt-To",
    "Sender",
    "Solicitation",
    "Sensitivity",
    "Subject",
    "Thread-Index",
    "Thread-Topic",
    "User-Agent",
    "VBR-Info",
];

/// The index of `name` in [`SINGLE_OCCURRENCE`] (case-insensitive), in constant time.
fn single_occurrence(name: &[u8]) -> Option<usize> {
    static INDEX: std::sync::OnceLock<std::collections::HashMap<Vec<u8>, usize>> =
        std::sync::OnceLock::new();
    let index = INDEX.get_or_init(|| {
        SINGLE_OCCURRENCE
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_ascii_lowercase().into_bytes(), i))
            .collect()
    });
    // Lower-cased on the stack: no allocation per header field.
    let mut lower = [0u8; 40];
    let lower = lower.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    index.get(&*lower).copied()
}

/// One message, owned once from the end of DATA to the upstream.
#[derive(Debug, Clone)]
pub struct Message {
    content: Bytes,
    /// The body's start (just after the empty line), or the length when there is none.
    body_start: usize,
    facts: Facts,
}

impl Message {
    /// Reads the header block of `content` (CRLF line endings, as DATA or
    /// [`crlf_line_endings`] produce). Linear in the size of the header block.
    pub fn parse(content: impl Into<Bytes>) -> Message {
        let content: Bytes = content.into();
        let body_start = header_end(&content);
        let head = &content[..body_start];
        let mut facts = Facts::default();
        let fail = |facts: &mut Facts, e: AddressError| {
            facts.address_error.get_or_insert(e);
        };
        let mut seen = 0u64; // a bit per SINGLE_OCCURRENCE entry
        for field in (Fields { head, pos: 0 }) {
            let name = matching_name(&head[field.name.clone()]);
            let name = name.as_ref();
            if let Some(i) = single_occurrence(name) {
                if seen & (1 << i) != 0 {
                    facts.duplicate.get_or_insert(SINGLE_OCCURRENCE[i]);
                }
                seen |= 1 << i;
            }
            let value = &head[field.value.clone()];
            let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            if is("From") {
                match parse_address_list(value) {
                    Ok(list) if list.is_empty() => fail(&mut facts, AddressError::Empty),
                    Ok(list) => facts.from.get_or_insert_with(Vec::new).extend(list),
                    Err(e) => fail(&mut facts, e),
                }
                facts.from.get_or_insert_with(Vec::new);
            } else if is("Sender") {
                match parse_address_list(value) {
                    Ok(list) if list.is_empty() => fail(&mut facts, AddressError::Empty),
                    Ok(list) => facts.sender.extend(list),
                    Err(e) => fail(&mut facts, e),
                }
            } else if is("Return-Path") {
                match parse_return_path(value) {
                    Ok(Some(mailbox)) => facts.return_path.push(mailbox),
                    Ok(None) => {}
                    Err(e) => fail(&mut facts, e),
                }
            } else if is("To") || is("Cc") || is("Bcc") || is("Reply-To") {
                match parse_address_list(value) {
                    Ok(list) if !is("Reply-To") => {
                        facts.recipients.extend(list.into_iter().map(|m| m.address))
                    }
                    Ok(_) => {}
                    Err(e) => fail(&mut facts, e),
                }
            } else {
                match ses_header(name) {
                    Some(SesHeader::ConfigurationSet) if facts.configuration_set.is_none() => {
                        facts.configuration_set = Some(unfold(value));
                    }
                    Some(SesHeader::MessageTags) if facts.tags.is_none() => {
                        facts.tags = Some(unfold(value));
                    }
                    _ => {}
                }
            }
        }
        Message {
            content,
            body_start,
            facts,
        }
    }

    /// The message as received.
    pub fn content(&self) -> &Bytes {
        &self.content
    }

    pub fn len(&self) -> usize {
        self.content.len()
    }

    pub fn is_empty(&self) -> bool {
        self.content.is_empty()
    }

    /// The first address of the From header, if it reads.
    pub fn first_from(&self) -> Option<String> {
        if self.facts.address_error.is_some() {
            return None;
        }
        Some(self.facts.from.as_ref()?.first()?.address.clone())
    }

    /// The To, Cc and Bcc addresses, in order.
    pub fn recipients(&self) -> &[String] {
        &self.facts.recipients
    }

    /// The header fields as submitted, in order, `X-SES-*` included: each field's name and
    /// its raw value (after the colon, folding line breaks kept), as slices of the content.
    /// Lines that are not fields are skipped. Nothing is copied; [`unfold`] makes a value
    /// text.
    pub fn header_fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let head = &self.content[..self.body_start];
        (Fields { head, pos: 0 }).map(move |field| (&head[field.name], &head[field.value]))
    }

    /// The policy's view of the message, given its envelope sender (`""` is `<>`).
    pub fn facts(&self, envelope_sender: &str) -> MessageFacts {
        let addresses = |list: &[Mailbox]| list.iter().map(|m| m.address.clone()).collect();
        MessageFacts {
            envelope_sender: (!envelope_sender.is_empty()).then(|| envelope_sender.to_owned()),
            from: self.facts.from.as_deref().map(addresses),
            sender: addresses(&self.facts.sender),
            return_path: addresses(&self.facts.return_path),
            address_error: self.facts.address_error.map(|e| e.to_string()),
            duplicate_header: self.facts.duplicate.map(str::to_owned),
            // The envelope is not the message's: the caller sets its count.
            recipients: Vec::new(),
            shown: self
                .facts
                .from
                .iter()
                .flatten()
                .chain(&self.facts.sender)
                .chain(&self.facts.return_path)
                .filter(|m| m.display_name.is_some())
                .map(|m| (m.address.to_ascii_lowercase(), m.shown()))
                .collect(),
            configuration_set: self.facts.configuration_set.clone(),
            set_from_api: false,
            tags: self.facts.tags.clone(),
            api_tags: None,
            sender_limit: None,
        }
    }

    /// The message as the upstream gets it; the message moves into it.
    pub fn forward(self, rw: &Rewrite<'_>) -> Forwarded {
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
        Forwarded {
            head: head.into_bytes(),
            message: self,
            strip_ses_headers: rw.strip_ses_headers,
        }
    }
}

/// A header value with its line breaks removed and its ends trimmed (RFC 5322 unfolding);
/// bytes that are not UTF-8 become U+FFFD.
pub fn unfold(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.replace(['\r', '\n'], "").trim().to_owned()
}

/// `bytes` with every line ending made CRLF (a bare LF gains its CR, a bare CR its LF),
/// ending in CRLF: what the SMTP DATA reader produces, for a message that came another way
/// (the API). A message already in that form is returned as it is, without a copy.
pub fn crlf_line_endings(bytes: Vec<u8>) -> Vec<u8> {
    if has_crlf_line_endings(&bytes) {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// True when every CR is followed by LF, every LF follows a CR, and the bytes end in CRLF.
fn has_crlf_line_endings(bytes: &[u8]) -> bool {
    if !bytes.ends_with(b"\r\n") {
        return false;
    }
    let mut previous = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        let bare = match b {
            b'\r' => bytes.get(i + 1) != Some(&b'\n'),
            b'\n' => previous != b'\r',
            _ => false,
        };
        if bare {
            return false;
        }
        previous = b;
    }
    true
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

/// An accepted message as the upstream gets it: the new head, then the original without
/// the client's `X-SES-*` lines. It owns the message; [`Forwarded::parts`] lends slices.
#[derive(Debug)]
pub struct Forwarded {
    head: Vec<u8>,
    message: Message,
    strip_ses_headers: bool,
}

impl Forwarded {
    /// The bytes, in order, as slices: the new head, runs of kept header lines, the body
    /// in chunks of at most 64 KiB. Together they end with CRLF.
    pub fn parts(&self) -> Parts<'_> {
        Parts {
            forwarded: self,
            stage: Stage::Head,
            fields: Fields {
                head: &self.message.content[..self.message.body_start],
                pos: 0,
            },
            run: 0..0,
            body_pos: self.message.body_start,
        }
    }

    /// The size of what [`Forwarded::parts`] hands out.
    pub fn len(&self) -> usize {
        self.parts().map(<[u8]>::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole forwarded message in one buffer, copied once (the capture store's copy).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.len());
        for part in self.parts() {
            out.extend_from_slice(part);
        }
        Bytes::from(out)
    }

    /// The forwarded message as (head, body): the head (the new lines and the kept header
    /// lines) copied, the body a handle on the received bytes, not a copy. Together they
    /// are exactly what [`Forwarded::parts`] hands out.
    pub fn head_and_body(&self) -> (Bytes, Bytes) {
        let body = self.message.content.slice(self.message.body_start..);
        let head_len = self.len() - body.len();
        let mut head = Vec::with_capacity(head_len);
        for part in self.parts() {
            if head.len() >= head_len {
                break;
            }
            head.extend_from_slice(part);
        }
        (Bytes::from(head), body)
    }

    /// The whole forwarded message in one buffer (tests and small messages only).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().flatten().copied().collect()
    }

    fn removes(&self, name: &[u8]) -> bool {
        match ses_header(name) {
            Some(SesHeader::Other) => self.strip_ses_headers,
            Some(_) => true,
            None => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Head,
    Header,
    Body,
}

/// The iterator of [`Forwarded::parts`].
pub struct Parts<'a> {
    forwarded: &'a Forwarded,
    stage: Stage,
    fields: Fields<'a>,
    /// The run of kept header bytes not yet handed out.
    run: Range<usize>,
    body_pos: usize,
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let content: &'a [u8] = &self.forwarded.message.content;
        loop {
            match self.stage {
                Stage::Head => {
                    self.stage = Stage::Header;
                    if !self.forwarded.head.is_empty() {
                        return Some(&self.forwarded.head);
                    }
                }
                Stage::Header => {
                    // Extend the run over kept bytes until a removed field (or the end).
                    match self.fields.next() {
                        Some(field) if self.forwarded.removes(&content[field.name.clone()]) => {
                            // Kept bytes before this field (junk lines included).
                            let kept = self.run.start..field.whole.start;
                            self.run = field.whole.end..field.whole.end;
                            if !kept.is_empty() {
                                return Some(&content[kept]);
                            }
                        }
                        Some(_) => {}
                        None => {
                            self.stage = Stage::Body;
                            let kept = self.run.start..self.forwarded.message.body_start;
                            if !kept.is_empty() {
                                return Some(&content[kept]);
                            }
                        }
                    }
                }
                Stage::Body => {
                    if self.body_pos >= content.len() {
                        return None;
                    }
                    let end = (self.body_pos + BODY_CHUNK).min(content.len());
                    let part = &content[self.body_pos..end];
                    self.body_pos = end;
                    return Some(part);
                }
            }
        }
    }
}

/// `X-SES-MESSAGE-TAGS: a=b, c=d`, folded after a comma when a line would pass 998 octets.
fn tags_header(tags: &[(String, String)]) -> String {
    let mut header = format!("{MESSAGE_TAGS_HEADER}:");
    let mut line_len = header.len();
    for (i, (name, value)) in tags.iter().enumerate() {
        let item_len = name.len() + 1 + value.len();
        let sep = if i == 0 { "" } else { "," };
        header.push_str(sep);
        if line_len + sep.len() + 1 + item_len > MAX_LINE {
            header.push_str("\r\n ");
            line_len = 1;
        } else {
            header.push(' ');
            line_len += sep.len() + 1;
        }
        header.push_str(name);
        header.push('=');
        header.push_str(value);
        line_len += item_len;
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
    /// `ESMTP` after EHLO, `SMTP` after HELO, `ESMTPS` under TLS (RFC 3848).
    pub protocol: &'a str,
    /// What TLS negotiated, written as a comment after the id.
    pub tls: Option<&'a TlsInfo>,
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
    if let Some(tls) = t.tls {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_graphic() && c != '(' && c != ')' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect()
        };
        let _ = write!(
            h,
            "\r\n\t(version={} cipher={})",
            clean(&tls.version),
            clean(&tls.cipher)
        );
    }
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

    fn forward(m: &[u8], rw: &Rewrite<'_>) -> Vec<u8> {
        Message::parse(m.to_vec()).forward(rw).to_vec()
    }

    #[test]
    fn facts_from_headers() {
        let m = b"From: Joe <joe@example.com>, ann@example.com\r\nSender: s@example.com\r\n\
Return-Path: <rp@example.com>\r\n\
X-SES-CONFIGURATION-SET:  first\r\n  folded \r\nX-Ses-Configuration-Set: second\r\n\
x-ses-message-tags: a=b,\r\n c=d\r\nX-SES-MESSAGE-TAGS: z=z\r\n\r\nbody\r\n";
        let f = Message::parse(m.to_vec()).facts("bounce@example.com");
        assert_eq!(
            f.from,
            Some(vec!["joe@example.com".into(), "ann@example.com".into()])
        );
        assert_eq!(f.sender, vec!["s@example.com".to_string()]);
        assert_eq!(f.return_path, vec!["rp@example.com".to_string()]);
        assert_eq!(f.configuration_set.as_deref(), Some("first  folded"));
        assert_eq!(f.tags.as_deref(), Some("a=b, c=d"));
        assert_eq!(f.envelope_sender.as_deref(), Some("bounce@example.com"));
        assert_eq!(f.address_error, None);
        assert_eq!(Message::parse(m.to_vec()).facts("").envelope_sender, None);
    }

    /// Every field in order, X-SES-* included, junk lines skipped, values unfolded on demand.
    #[test]
    fn header_fields_as_submitted() {
        let m = Message::parse(
            b"From: a@x.com\r\nnot a field\r\nSubject: Hi\r\n there\r\nX-SES-MESSAGE-TAGS: a=b\r\n\r\nBody: no\r\n"
                .to_vec(),
        );
        let fields: Vec<(String, String)> = m
            .header_fields()
            .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), unfold(v)))
            .collect();
        assert_eq!(
            fields,
            [
                ("From".to_owned(), "a@x.com".to_owned()),
                ("Subject".to_owned(), "Hi there".to_owned()),
                ("X-SES-MESSAGE-TAGS".to_owned(), "a=b".to_owned()),
            ]
        );
    }

    #[test]
    fn missing_or_unreadable_from() {
        let facts = |m: &[u8]| Message::parse(m.to_vec()).facts("");
        for m in [
            &b"Subject: x\r\n\r\nbody"[..],
            b"\r\nFrom: a@x.com\r\n\r\n",
            b"",
        ] {
            assert_eq!(facts(m).from, None, "{:?}", String::from_utf8_lossy(m));
        }
        for (m, error) in [
            (
                &b"From: not an address\r\n\r\n"[..],
                "Local address contains control or whitespace",
            ),
            (b"From: undisclosed-recipients:;\r\n\r\n", "Empty address"),
            (b"From: <>\r\n\r\n", "Missing local name"),
            (
                b"From: a@x.com\r\nFrom: garbage\r\n\r\n",
                "Missing final '@domain'",
            ),
            (
                b"From: a@x.com\r\nSender: evil\r\n\r\n",
                "Missing final '@domain'",
            ),
            (
                b"From: a@x.com\r\nReturn-Path: <evil@x.com\r\n\r\n",
                "Missing '>'",
            ),
            (
                b"From: a@x.com\r\nCc: ,evil,\r\n\r\n",
                "Missing final '@domain'",
            ),
        ] {
            assert_eq!(
                facts(m).address_error.as_deref(),
                Some(error),
                "{:?}",
                String::from_utf8_lossy(m)
            );
        }
        let two = facts(b"From: a@x.com\r\nFrom: b@y.com\r\n\r\n");
        assert_eq!(two.from, Some(vec!["a@x.com".into(), "b@y.com".into()]));
    }

    #[test]
    fn senders_with_comments_are_read_not_skipped() {
        for sender in [
            "evil(comment)@attacker.com",
            "evil @ attacker.com",
            "evil@ attacker.com",
        ] {
            let m = format!("From: a@x.com\r\nSender: {sender}\r\n\r\n");
            let f = Message::parse(m.into_bytes()).facts("");
            assert_eq!(f.sender, ["evil@attacker.com"], "{sender}");
        }
    }

    #[test]
    fn headers_behind_malformed_lines_are_still_seen() {
        let m = b"Subject: x\r\nnot a field\r\n (continued)\r\nSender: s@evil.test\r\nFrom: a@x.com\r\n\r\n";
        let f = Message::parse(m.to_vec()).facts("");
        assert_eq!(f.sender, ["s@evil.test"]);
        assert_eq!(f.from, Some(vec!["a@x.com".into()]));
    }

    #[test]
    fn duplicate_single_occurrence_headers_are_named_as_ses_spells_them() {
        let dup = |m: &[u8]| Message::parse(m.to_vec()).facts("").duplicate_header;
        assert_eq!(
            dup(b"From: a@x.com\r\nsubject: a\r\nSUBJECT: b\r\n\r\n").as_deref(),
            Some("Subject")
        );
        assert_eq!(
            dup(b"From: a@x.com\r\nFrom: b@x.com\r\n\r\n").as_deref(),
            Some("From")
        );
        assert_eq!(
            dup(b"dkim-signature: a\r\nDKIM-Signature: b\r\nFrom: a@x.com\r\n\r\n").as_deref(),
            Some("DKIM-Signature")
        );
        // To and Cc may repeat; so may headers off the list.
        assert_eq!(
            dup(b"From: a@x.com\r\nTo: b@y.com\r\nTo: c@y.com\r\nCc: d@y.com\r\nCc: e@y.com\r\nX-A: 1\r\nX-A: 2\r\n\r\n"),
            None
        );
        assert_eq!(SINGLE_OCCURRENCE.len(), 59);
    }

    #[test]
    fn control_bytes_in_a_name_do_not_hide_the_header() {
        let m = b"From: a@x.com\r\n\0Sender: s@evil.test\r\nX-SES-\x01CONFIGURATION-SET: c\r\n\r\n";
        let msg = Message::parse(m.to_vec());
        let f = msg.facts("");
        assert_eq!(f.sender, ["s@evil.test"]);
        assert_eq!(f.configuration_set.as_deref(), Some("c"));
        let out = msg.forward(&rw(None, &[], false)).to_vec();
        assert_eq!(
            out,
            b"Received: test\r\nFrom: a@x.com\r\n\0Sender: s@evil.test\r\n\r\n"
        );
    }

    #[test]
    fn multibyte_header_names_do_not_panic() {
        for m in [
            "abcde\u{e9}: x\r\nFrom: a@x.com\r\n\r\n",
            "\u{e9}\u{e9}\u{e9}: x\r\n\r\n",
            "X-SES\u{e9}: x\r\n\r\n",
            "x-ses-\u{e9}: y\r\n\r\n",
        ] {
            check(m.as_bytes());
        }
        // Found by the message_rewrite fuzz target (invalid UTF-8 in a name).
        check(b"c\xfe\xff");
        check(b"x-se\xfe\xff: v\r\n\r\n");
        fn check(m: &[u8]) {
            let msg = Message::parse(m.to_vec());
            let _ = msg.facts("");
            let out = msg.forward(&rw(None, &[], true)).to_vec();
            assert!(out.starts_with(RECEIVED.as_bytes()));
        }
    }

    #[test]
    fn rewrite_replaces_ses_headers_and_keeps_every_other_byte() {
        let m = b"From: joe@example.com\r\nX-SES-CONFIGURATION-SET: client\r\nSubject: a\r\n folded\r\n\
X-SES-SOURCE-ARN: arn\r\nX-SES-MESSAGE-TAGS: a=b\r\n\r\n.body \xff\r\n";
        let tags = vec![
            ("a".to_string(), "b".to_string()),
            ("t".to_string(), "u".to_string()),
        ];
        let out = forward(m, &rw(Some("resolved"), &tags, false));
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
        assert_eq!(
            forward(m, &rw(None, &[], false)),
            b"Received: test\r\nFrom: joe@example.com\r\n\r\nbody\r\n".to_vec()
        );
    }

    #[test]
    fn strip_removes_every_ses_header() {
        let m = b"X-SES-SOURCE-ARN: arn\r\nFrom: joe@example.com\r\nx-ses-configuration-set: c\r\n (folded)\r\n\r\nX-SES-IN-BODY: kept\r\n";
        let tags = vec![("a".to_string(), "b".to_string())];
        assert_eq!(
            forward(m, &rw(Some("resolved"), &tags, true)),
            b"Received: test\r\nFrom: joe@example.com\r\n\r\nX-SES-IN-BODY: kept\r\n".to_vec()
        );
    }

    #[test]
    fn parts_are_slices_and_the_body_is_chunked() {
        let mut m = b"From: joe@example.com\r\n\r\n".to_vec();
        m.extend(std::iter::repeat_n(b'x', 200_000));
        m.extend_from_slice(b"\r\n");
        let f = Message::parse(m.clone()).forward(&rw(None, &[], false));
        let parts: Vec<&[u8]> = f.parts().collect();
        assert!(
            parts
                .iter()
                .all(|p| p.len() <= BODY_CHUNK.max(RECEIVED.len()))
        );
        assert_eq!(f.len(), RECEIVED.len() + m.len());
        let mut expected = RECEIVED.as_bytes().to_vec();
        expected.extend_from_slice(&m);
        assert_eq!(f.to_vec(), expected);
        // For the capture store: the head copied, the body the received bytes themselves.
        let (head, body) = f.head_and_body();
        assert_eq!([&head[..], &body[..]].concat(), expected);
        assert_eq!(body.len(), 200_002);
        let tagged = Message::parse(
            b"X-SES-CONFIGURATION-SET: a\r\nFrom: j@x.test\r\nSubject: s\r\n\r\nbody\r\n".to_vec(),
        )
        .forward(&rw(Some("b"), &[("t".to_owned(), "v".to_owned())], false));
        let (head, body) = tagged.head_and_body();
        assert_eq!([&head[..], &body[..]].concat(), tagged.to_vec());
        assert_eq!(&body[..], b"body\r\n");
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
    fn forty_thousand_tags_and_addresses_are_quick() {
        let mut m = String::from("From: ");
        for i in 0..40_000 {
            m.push_str(&format!("u{i}@example.com, "));
        }
        m.push_str("\r\nX-SES-MESSAGE-TAGS: ");
        for i in 0..40_000 {
            m.push_str(&format!("t{i}=v, "));
        }
        m.push_str("\r\n\r\nbody\r\n");
        let f = Message::parse(m.into_bytes()).facts("");
        assert_eq!(f.from.map(|f| f.len()), Some(40_000));
        assert!(f.tags.is_some());
    }

    #[test]
    fn received_trace() {
        let t = Trace {
            helo: "client.example (evil)\r\n",
            peer: "127.0.0.1".parse().unwrap(),
            protocol: "ESMTP",
            tls: None,
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
        let info = crate::tls::TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        };
        let t = Trace {
            protocol: "ESMTPS",
            tls: Some(&info),
            ..t
        };
        assert!(
            received_header(&t).contains(
                "with ESMTPS id abc\r\n\t(version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384);\r\n"
            ),
            "{}",
            received_header(&t)
        );
    }

    #[test]
    fn line_endings_become_crlf() {
        let crlf = |b: &[u8]| crlf_line_endings(b.to_vec());
        assert_eq!(crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf(b"a\r\n"), b"a\r\n");
        assert_eq!(crlf(b"a\rb\r"), b"a\r\nb\r\n");
        assert_eq!(crlf(b"\r.\r"), b"\r\n.\r\n");
        assert_eq!(crlf(b"a\r\r\n"), b"a\r\n\r\n");
        assert_eq!(crlf(b"\na\r\n"), b"\r\na\r\n");
        assert_eq!(crlf(b""), b"\r\n");
    }

    #[test]
    fn recipients_and_first_from() {
        let m = Message::parse(b"From: a@x.com, b@x.com\r\nTo: t@y.com\r\nCc: c@y.com, d@y.com\r\nBcc: e@y.com\r\n\r\n".to_vec());
        assert_eq!(m.first_from().as_deref(), Some("a@x.com"));
        assert_eq!(m.recipients(), ["t@y.com", "c@y.com", "d@y.com", "e@y.com"]);
    }

    #[test]
    fn date_format() {
        let d = rfc5322_now();
        assert!(d.ends_with("+0000"), "{d}");
        assert_eq!(d.as_bytes()[3], b',');
    }
}
