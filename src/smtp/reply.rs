//! SMTP replies and the catalogue of every fixed reply sesrelay gives.
//!
//! Each reply is a three-digit code, an RFC 3463 enhanced status code and a text. Every
//! fixed text of SPEC.md section 3 is built here and nowhere else, so a `grep` for a reply
//! text lands in this file.

use std::fmt;
use std::io::Write;

/// RFC 5321 4.5.3.1.5: a reply line is at most 512 octets, CRLF included.
const MAX_REPLY_LINE: usize = 512;

/// One SMTP reply: `code enhanced text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: String,
    text: String,
}

impl Reply {
    /// A reply. Replies are 7-bit ASCII: control characters in `text` (CR, LF, NUL...)
    /// become spaces, so that no text taken from a message, the config or an upstream can
    /// break the reply framing, and every other non-ASCII character becomes `?`.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        let mut text: String = text.into();
        if !text.bytes().all(|b| b.is_ascii() && !b.is_ascii_control()) {
            text = text.chars().map(printable_ascii).collect();
        }
        Reply {
            code,
            enhanced: enhanced.chars().map(printable_ascii).collect(),
            text,
        }
    }

    /// A reply relayed from another server: `text` may begin with its own enhanced status
    /// code, which is kept; when it does not, the class default (`2.0.0`, `4.0.0`, `5.0.0`)
    /// is supplied, since ENHANCEDSTATUSCODES is advertised to the client.
    pub fn relayed(code: u16, text: &str) -> Self {
        let text = text.trim();
        if let Some((first, rest)) = text.split_once(' ')
            && is_enhanced_code(first, code)
        {
            return Reply::new(code, first, rest.trim_start());
        }
        if is_enhanced_code(text, code) {
            return Reply::new(code, text, "");
        }
        let class = code / 100;
        Reply::new(code, &format!("{class}.0.0"), text)
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced(&self) -> &str {
        &self.enhanced
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Writes the reply in wire form. A text too long for one 512-octet line is split at
    /// spaces into a multi-line reply (`554-5.7.1 ...` then `554 5.7.1 ...`).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let prefix_len = 4 + if self.enhanced.is_empty() {
            0
        } else {
            self.enhanced.len() + 1
        };
        let room = MAX_REPLY_LINE - 2 - prefix_len;
        let mut lines = Vec::new();
        let mut rest = self.text.as_str();
        while rest.len() > room {
            let cut = floor_char_boundary(rest, room);
            let cut = rest[..cut].rfind(' ').filter(|&i| i > 0).unwrap_or(cut);
            lines.push(&rest[..cut]);
            rest = rest[cut..].trim_start_matches(' ');
        }
        lines.push(rest);
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{}{}", self.code, sep);
            let mut words = [self.enhanced.as_str(), line]
                .into_iter()
                .filter(|w| !w.is_empty());
            if let Some(first) = words.next() {
                out.extend_from_slice(first.as_bytes());
            }
            for word in words {
                out.push(b' ');
                out.extend_from_slice(word.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The reply as one string, without the line ending (for logs and `sesrelay resolve`).
    pub fn to_line(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for word in [self.enhanced.as_str(), self.text.as_str()] {
            if !word.is_empty() {
                write!(f, " {word}")?;
            }
        }
        Ok(())
    }
}

fn printable_ascii(c: char) -> char {
    if c.is_control() {
        ' '
    } else if c.is_ascii() {
        c
    } else {
        '?'
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `class.subject.detail` with the class matching the reply code's first digit.
fn is_enhanced_code(s: &str, code: u16) -> bool {
    let mut parts = s.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    digits(class, 1)
        && class.parse::<u16>().ok() == Some(code / 100)
        && digits(subject, 3)
        && digits(detail, 3)
}

// ---------------------------------------------------------------------------------------
// The catalogue. Protocol replies first, then the SES replies of SPEC.md section 3.
// ---------------------------------------------------------------------------------------

pub fn greeting(hostname: &str) -> Reply {
    // No enhanced code in the greeting (RFC 2034: they come with ENHANCEDSTATUSCODES).
    Reply::new(220, "", format!("{hostname} ESMTP sesrelay"))
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}

pub fn helo(hostname: &str) -> Reply {
    Reply::new(250, "2.0.0", hostname.to_owned())
}

pub fn bye() -> Reply {
    Reply::new(221, "2.0.0", "Bye")
}

pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Ok")
}

pub fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "Ok")
}

pub fn start_data() -> Reply {
    Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
}

pub fn accepted(message_id: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("Ok {message_id}"))
}

pub fn vrfy() -> Reply {
    Reply::new(
        252,
        "2.5.0",
        "Cannot VRFY user, but will accept message and attempt delivery",
    )
}

pub fn help() -> Reply {
    Reply::new(
        214,
        "2.0.0",
        "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
    )
}

pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Line too long")
}

pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.2", "Error: command not recognized")
}

pub fn not_implemented() -> Reply {
    Reply::new(502, "5.5.1", "Error: command not implemented")
}

pub fn ready_to_start_tls() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}

/// STARTTLS under TLS (Postfix's text and code).
pub fn tls_already_active() -> Reply {
    Reply::new(554, "5.5.1", "Error: TLS already active")
}

pub fn must_start_tls() -> Reply {
    Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
}

pub fn auth_not_enabled() -> Reply {
    Reply::new(503, "5.5.1", "Error: authentication not enabled")
}

// SMTP AUTH (RFC 4954).

/// `334 <challenge>`: the base64 challenge of a SASL exchange (no enhanced code).
pub fn auth_challenge(challenge: &str) -> Reply {
    Reply::new(334, "", challenge)
}

pub fn auth_succeeded() -> Reply {
    Reply::new(235, "2.7.0", "Authentication successful")
}

pub fn auth_failed() -> Reply {
    Reply::new(535, "5.7.8", "Authentication Credentials Invalid")
}

/// The third failed AUTH of a session: the connection is closed.
pub fn auth_too_many_failures() -> Reply {
    Reply::new(
        421,
        "4.7.0",
        "Too many authentication failures, closing connection",
    )
}

/// The client answered a challenge with `*`.
pub fn auth_cancelled() -> Reply {
    Reply::new(501, "5.7.0", "Authentication cancelled")
}

pub fn auth_bad_base64() -> Reply {
    Reply::new(501, "5.5.2", "Cannot decode response")
}

pub fn auth_unsupported_mechanism() -> Reply {
    Reply::new(504, "5.5.4", "Unsupported authentication mechanism")
}

pub fn already_authenticated() -> Reply {
    Reply::new(503, "5.5.1", "Error: already authenticated")
}

pub fn auth_in_transaction() -> Reply {
    Reply::new(503, "5.5.1", "Error: MAIL transaction in progress")
}

/// MAIL from a client outside `trusted_networks` that has not authenticated.
pub fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Authentication required")
}

pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Syntax: {usage}"))
}

pub fn bad_parameter(param: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Bad {param} parameter syntax"))
}

pub fn unsupported_parameter(param: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported option: {param}"))
}

pub fn bad_sender_syntax() -> Reply {
    Reply::new(501, "5.1.7", "Bad sender address syntax")
}

pub fn bad_recipient_syntax() -> Reply {
    Reply::new(501, "5.1.3", "Bad recipient address syntax")
}

pub fn non_ascii_address() -> Reply {
    Reply::new(
        553,
        "5.6.7",
        "Non-ASCII addresses are not supported (no SMTPUTF8)",
    )
}

pub fn need_helo() -> Reply {
    Reply::new(503, "5.5.1", "Error: send HELO/EHLO first")
}

pub fn nested_mail() -> Reply {
    Reply::new(503, "5.5.1", "Error: nested MAIL command")
}

pub fn need_mail() -> Reply {
    Reply::new(503, "5.5.1", "Error: need MAIL command")
}

pub fn need_rcpt() -> Reply {
    Reply::new(503, "5.5.1", "Error: need RCPT command")
}

pub fn data_argument() -> Reply {
    Reply::new(501, "5.5.4", "Syntax: DATA")
}

pub fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3", "Too many recipients")
}

pub fn message_too_long() -> Reply {
    Reply::new(552, "5.3.4", "Message is too long.")
}

pub fn too_many_connections() -> Reply {
    Reply::new(421, "4.7.0", "Too many concurrent SMTP connections")
}

pub fn too_many_errors() -> Reply {
    Reply::new(421, "4.7.0", "Too many errors, closing connection")
}

/// The in-flight budget (`server.max_inflight_bytes`) had no room for the message.
pub fn insufficient_resources() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system resources")
}

pub fn idle_timeout() -> Reply {
    Reply::new(451, "4.4.2", "Timeout waiting for data from client")
}

pub fn access_denied() -> Reply {
    Reply::new(554, "5.7.1", "Access denied")
}

pub fn shutting_down(hostname: &str) -> Reply {
    Reply::new(
        421,
        "4.3.2",
        format!("{hostname} Service shutting down, closing transmission channel"),
    )
}

pub fn local_error() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Error: local error in processing, try again later",
    )
}

/// `[account.shared]` with `on_unavailable = "closed"`, and Redis does not answer.
pub fn quotas_unavailable() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "The account's sending quotas cannot be checked now, try again later",
    )
}

pub fn upstream_unavailable() -> Reply {
    Reply::new(451, "4.4.1", "Upstream unavailable, try again later")
}

pub fn upstream_no_8bitmime() -> Reply {
    Reply::new(
        554,
        "5.6.3",
        "Upstream does not accept 8-bit content (no 8BITMIME)",
    )
}

// SES replies (SPEC.md section 3). `message` is SES's own message text, as the SES API
// would return it; the SMTP reply adds SES's prefix.

/// `554 5.7.1 Message rejected: ...`: SES's `MessageRejected` and its kin.
pub fn message_rejected(message: &str) -> Reply {
    Reply::new(554, "5.7.1", format!("Message rejected: {message}"))
}

/// `554 5.7.1 Message rejected: Email address is not verified. ...`
pub fn not_verified(message: &str) -> Reply {
    message_rejected(message)
}

/// `554 5.3.0 Configuration Set does not exist: Configuration set <NAME> does not exist.`
pub fn configuration_set_missing(message: &str) -> Reply {
    Reply::new(
        554,
        "5.3.0",
        format!("Configuration Set does not exist: {message}"),
    )
}

/// `554 5.7.1 Message rejected: Sending paused for this configuration set.`
pub fn sending_paused(message: &str) -> Reply {
    message_rejected(message)
}

/// `454 4.7.0 Throttling failure: Maximum sending rate exceeded.` (or `Daily message quota
/// exceeded.`): the account's limits, SPEC 4.5.
pub fn throttled(message: &str) -> Reply {
    Reply::new(454, "4.7.0", format!("Throttling failure: {message}"))
}

/// `554 5.7.1 Message rejected: User <username> is not authorized to send from <address>`
/// (`allowed_senders`).
pub fn sender_not_allowed(message: &str) -> Reply {
    message_rejected(message)
}

/// `554 5.5.3 Transaction failed: Recipient count exceeds 50.`
pub fn recipient_count_exceeded(message: &str) -> Reply {
    Reply::new(554, "5.5.3", format!("Transaction failed: {message}"))
}

/// `554 5.6.0 Transaction failed: ...` (missing From, invalid tag).
pub fn transaction_failed(message: &str) -> Reply {
    Reply::new(554, "5.6.0", format!("Transaction failed: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn single_line() {
        assert_eq!(wire(&ok()), "250 2.0.0 Ok\r\n");
        assert_eq!(
            wire(&start_data()),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let r = Reply::new(554, "5.3.0", "a\r\nRCPT TO:<x>");
        assert_eq!(wire(&r), "554 5.3.0 a  RCPT TO:<x>\r\n");
    }

    #[test]
    fn replies_are_ascii() {
        let r = Reply::relayed(550, "5.1.1 caf\u{e9} \u{fffd}\u{7f}x\u{1F600}");
        assert_eq!(wire(&r), "550 5.1.1 caf? ? x?\r\n");
        assert_eq!(
            wire(&greeting("relay.test")),
            "220 relay.test ESMTP sesrelay\r\n"
        );
    }

    #[test]
    fn long_text_becomes_multiline_within_512_octets() {
        let addrs: Vec<String> = (0..60).map(|i| format!("user{i}@example.com")).collect();
        let r = not_verified(&addrs.join(", "));
        let w = wire(&r);
        let lines: Vec<&str> = w.split_inclusive("\r\n").collect();
        assert!(lines.len() > 1);
        for l in &lines[..lines.len() - 1] {
            assert!(l.starts_with("554-5.7.1 "), "{l}");
        }
        assert!(lines.last().unwrap().starts_with("554 5.7.1 "));
        assert!(lines.iter().all(|l| l.len() <= 512));
        let joined: Vec<&str> = lines
            .iter()
            .map(|l| l[10..].trim_end_matches("\r\n"))
            .collect();
        assert_eq!(joined.join(" "), r.text());
    }

    #[test]
    fn relayed_keeps_or_supplies_enhanced_code() {
        let r = Reply::relayed(550, "5.1.1 <x@y>: Recipient address rejected");
        assert_eq!(r.to_line(), "550 5.1.1 <x@y>: Recipient address rejected");
        let r = Reply::relayed(450, "mailbox busy");
        assert_eq!(r.to_line(), "450 4.0.0 mailbox busy");
        // An enhanced code of the wrong class is text, not a code.
        let r = Reply::relayed(550, "4.1.1 odd");
        assert_eq!(r.to_line(), "550 5.0.0 4.1.1 odd");
    }
}
