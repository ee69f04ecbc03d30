//! Regressions for hostile messages: each test sends over a real socket and asserts both
//! the reply and what reached the upstream (nothing, or exactly the message).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Capture, Client, Relay, Script, header, standard_config};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

async fn relay_with_capture() -> (Relay, Capture) {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;
    (relay, upstream)
}

/// Defect 1: a header name with a multibyte character once panicked the session.
#[tokio::test]
async fn a_multibyte_header_name_gets_an_answer_and_the_message_goes_through() {
    let (relay, upstream) = relay_with_capture().await;
    let mut c = Client::ready(relay.addr).await;
    let message =
        "abcde\u{e9}: x\r\nx-ses-\u{e9}: y\r\nFrom: joe@example.com\r\nSubject: s\r\n\r\nbody\r\n";
    let reply = c
        .mail("joe@example.com", &["r@example.net"], message.as_bytes())
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let got = upstream.wait_for(1).await;
    let (_, rest) = common::after_prepended(&got[0].content);
    assert_eq!(
        rest,
        "abcde\u{e9}: x\r\nx-ses-\u{e9}: y\r\nFrom: joe@example.com\r\nSubject: s\r\n\r\nbody\r\n"
            .as_bytes()
    );
    // The session lives on.
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok");
    relay.stop().await;
}

/// Defect 2: 40,000 tags are judged in linear time, and the message is forwarded whole.
#[tokio::test]
async fn forty_thousand_tags_are_forwarded() {
    let (relay, upstream) = relay_with_capture().await;
    let mut tags = String::new();
    for i in 0..40_000 {
        tags.push_str(&format!("t{i}=v{i}, "));
    }
    let message = format!(
        "From: joe@example.com\r\nX-SES-MESSAGE-TAGS: {tags}\r\nSubject: s\r\n\r\nbody\r\n"
    );
    let mut big = Client::ready(relay.addr).await;
    let reply = big
        .mail("joe@example.com", &["r@example.net"], message.as_bytes())
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let got = upstream.wait_for(1).await;
    // One header, folded over many lines of at most 998 octets.
    let text = String::from_utf8_lossy(&got[0].content).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap();
    assert!(head.split("\r\n").all(|line| line.len() <= 998));
    assert_eq!(header(&got[0].content, "X-SES-MESSAGE-TAGS").len(), 1);
    let start = head.find("X-SES-MESSAGE-TAGS: ").unwrap() + "X-SES-MESSAGE-TAGS: ".len();
    let value: String = head[start..]
        .split("\r\n")
        .take_while(|l| !l.contains(':') || l.starts_with(' '))
        .collect::<Vec<_>>()
        .join("\r\n")
        .replace("\r\n ", " ");
    let items: Vec<&str> = value.split(", ").collect();
    // The client's 40,000 and the set's own `team=growth` (marketing is joe's default).
    assert_eq!(items.len(), 40_001);
    assert_eq!(items[0], "t0=v0");
    assert_eq!(items[40_000], "team=growth");
    relay.stop().await;
}

/// Defect 2: 40,000 unverified addresses are listed in one reply line of at most 512
/// octets, cut at a mailbox and ended with `...`, as SES does.
#[tokio::test]
async fn forty_thousand_unverified_addresses_give_one_short_line() {
    let (relay, upstream) = relay_with_capture().await;
    let mut from = String::new();
    for i in 0..40_000 {
        from.push_str(&format!("u{i}@unverified.test, "));
    }
    let message = format!("From: {from}\r\nSubject: s\r\n\r\nbody\r\n");
    let mut c = Client::ready(relay.addr).await;
    let reply = c
        .mail("joe@example.com", &["r@example.net"], message.as_bytes())
        .await;
    assert!(!reply.contains('\n'), "one line: {}", &reply[..200]);
    assert!(reply.len() + 2 <= 512, "{} octets", reply.len());
    assert!(
        reply.starts_with(
            "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: u0@unverified.test, u1@unverified.test, "
        ),
        "{reply}"
    );
    assert!(reply.ends_with("@unverified.test..."), "{reply}");
    assert!(upstream.messages().is_empty());
    relay.stop().await;
}

/// Defect 6: a Sender written with comments or spaces is read, not skipped.
#[tokio::test]
async fn senders_with_comments_or_spaces_are_checked() {
    let (relay, upstream) = relay_with_capture().await;
    let mut c = Client::ready(relay.addr).await;
    for sender in [
        "evil(comment)@attacker.com",
        "evil @ attacker.com",
        "evil@ attacker.com",
    ] {
        let message = format!("From: joe@example.com\r\nSender: {sender}\r\n\r\nbody\r\n");
        let reply = c
            .mail("joe@example.com", &["r@example.net"], message.as_bytes())
            .await;
        assert_eq!(
            reply,
            "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: evil@attacker.com",
            "Sender: {sender}"
        );
    }
    // With a display name, the mailbox is listed as JavaMail prints it.
    let reply = c
        .mail(
            "joe@example.com",
            &["r@example.net"],
            b"From: joe@example.com\r\nSender: Evil <evil (c) @ attacker.com>\r\n\r\nbody\r\n",
        )
        .await;
    assert_eq!(
        reply,
        "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: Evil <evil@attacker.com>"
    );
    assert!(upstream.messages().is_empty());
    relay.stop().await;
}

/// SPEC 3: each unverified mailbox as JavaMail prints it (display name unfolded, quoted
/// only where it must be), the envelope sender bare, each once, in order.
#[tokio::test]
async fn unverified_mailboxes_are_listed_as_javamail_prints_them() {
    let (relay, upstream) = relay_with_capture().await;
    let mut c = Client::ready(relay.addr).await;
    let reply = c
        .mail(
            "bounce@unverified.test",
            &["r@example.net"],
            b"From: \"Joe Bloggs\" <joe@unverified.test>, \"Bloggs,\r\n Ann\" <ann@unverified.test>\r\nSender: joe@unverified.test\r\n\r\nbody\r\n",
        )
        .await;
    assert_eq!(
        reply,
        "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: Joe Bloggs <joe@unverified.test>, \"Bloggs, Ann\" <ann@unverified.test>, bounce@unverified.test"
    );
    assert!(upstream.messages().is_empty());
    relay.stop().await;
}

/// SPEC 3: a display name in RFC 2047 encoded-words is listed decoded (adjacent words
/// joined without their white space); what is not ASCII shows as `?` in the 7-bit reply.
#[tokio::test]
async fn encoded_display_names_are_listed_decoded() {
    let (relay, upstream) = relay_with_capture().await;
    let mut c = Client::ready(relay.addr).await;
    let reply = c
        .mail(
            "joe@unverified.test",
            &["r@example.net"],
            b"From: =?UTF-8?B?Sm9lIEJsb2dncw==?= <joe@unverified.test>,\r\n =?utf-8?Q?=C3=89lise?=\r\n =?ISO-8859-1?Q?_L=E9e?= <elise@unverified.test>, =?UTF-8?Q?Bloggs=2C_Ann?= <ann@unverified.test>\r\n\r\nbody\r\n",
        )
        .await;
    assert_eq!(
        reply,
        "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: Joe Bloggs <joe@unverified.test>, ?lise L?e <elise@unverified.test>, \"Bloggs, Ann\" <ann@unverified.test>"
    );
    assert!(upstream.messages().is_empty());
    relay.stop().await;
}

/// Defect 6: a mailbox that still cannot be read fails the message; Return-Path is checked.
#[tokio::test]
async fn unreadable_mailboxes_fail_and_return_path_is_checked() {
    let (relay, upstream) = relay_with_capture().await;
    let mut c = Client::ready(relay.addr).await;
    for (headers, expected) in [
        (
            "From: not an address\r\n",
            "554 5.6.0 Transaction failed: Local address contains control or whitespace",
        ),
        (
            "From: joe@example.com, garbage\r\n",
            "554 5.6.0 Transaction failed: Missing final '@domain'",
        ),
        (
            "X-Note: no From at all\r\n",
            "554 5.6.0 Transaction failed: Missing required header 'From'.",
        ),
        (
            "From: joe@example.com\r\nSender: evil\r\n",
            "554 5.6.0 Transaction failed: Missing final '@domain'",
        ),
        (
            "From: joe@example.com\r\nSender: <evil@attacker.com\r\n",
            "554 5.6.0 Transaction failed: Missing '>'",
        ),
        (
            "From: joe@example.com\r\nSender: ev il@attacker.com\r\n",
            "554 5.6.0 Transaction failed: Local address contains control or whitespace",
        ),
        (
            "From: joe@example.com\r\nReturn-Path: <bounce@attacker.com>\r\n",
            "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: bounce@attacker.com",
        ),
        (
            // A NUL in the name does not hide the header from the check.
            "From: joe@example.com\r\n\0Sender: s@attacker.com\r\n",
            "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: s@attacker.com",
        ),
        (
            // A Sender behind a line that is not a header field is still seen.
            "From: joe@example.com\r\nnot a header field\r\nSender: s@attacker.com\r\n",
            "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: s@attacker.com",
        ),
    ] {
        let message = format!("{headers}Subject: s\r\n\r\nbody\r\n");
        let reply = c
            .mail("joe@example.com", &["r@example.net"], message.as_bytes())
            .await;
        assert_eq!(reply, expected, "{headers:?}");
    }
    // A null Return-Path is no address to check.
    let reply = c
        .mail(
            "joe@example.com",
            &["r@example.net"],
            b"From: joe@example.com\r\nReturn-Path: <>\r\n\r\nbody\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let got = upstream.wait_for(1).await;
    assert_eq!(got.len(), 1);
    relay.stop().await;
}

/// An upstream that answers the first message with its 250 plus one line nobody asked
/// for, `extra_delay` after it, and every later message with 554.
async fn chatty_upstream(extra_delay: Option<Duration>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}?tls=none", listener.local_addr().unwrap());
    let messages = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&messages);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut s = BufReader::new(stream);
                s.write_all(b"220 chatty ESMTP\r\n").await?;
                let mut line = String::new();
                loop {
                    line.clear();
                    if s.read_line(&mut line).await? == 0 {
                        return Ok::<(), std::io::Error>(());
                    }
                    let upper = line.trim_end().to_ascii_uppercase();
                    if upper.starts_with("EHLO") {
                        s.write_all(b"250-chatty\r\n250 8BITMIME\r\n").await?;
                    } else if upper == "DATA" {
                        s.write_all(b"354 go\r\n").await?;
                        loop {
                            line.clear();
                            if s.read_line(&mut line).await? == 0 {
                                return Ok(());
                            }
                            if line == ".\r\n" {
                                break;
                            }
                        }
                        if count.fetch_add(1, Ordering::SeqCst) == 0 {
                            match extra_delay {
                                None => {
                                    s.write_all(b"250 2.0.0 first\r\n250 2.0.0 extra\r\n")
                                        .await?
                                }
                                Some(delay) => {
                                    s.write_all(b"250 2.0.0 first\r\n").await?;
                                    tokio::time::sleep(delay).await;
                                    s.write_all(b"250 2.0.0 extra\r\n").await?;
                                }
                            }
                        } else {
                            s.write_all(b"554 5.7.1 refused by policy\r\n").await?;
                        }
                    } else if upper == "QUIT" {
                        s.write_all(b"221 bye\r\n").await?;
                        return Ok(());
                    } else {
                        s.write_all(b"250 2.0.0 ok\r\n").await?;
                    }
                }
            });
        }
    });
    (url, messages)
}

/// Defect 7: a connection with unread input is never reused, so the next message gets
/// its own reply (554), never the stray 250 (which would lose the message).
#[tokio::test]
async fn a_stray_upstream_line_never_answers_the_next_message() {
    for delay in [None, Some(Duration::from_millis(100))] {
        let (url, messages) = chatty_upstream(delay).await;
        let relay = Relay::start(&standard_config(&url)).await;
        let mut c = Client::ready(relay.addr).await;
        let message = b"From: joe@example.com\r\nSubject: s\r\n\r\nbody\r\n";
        let first = c.mail("joe@example.com", &["r@example.net"], message).await;
        assert!(first.starts_with("250 2.0.0 Ok "), "{first}");
        if let Some(delay) = delay {
            tokio::time::sleep(delay * 2).await;
        }
        let second = c.mail("joe@example.com", &["r@example.net"], message).await;
        assert_eq!(second, "554 5.7.1 refused by policy", "delay {delay:?}");
        assert_eq!(messages.load(Ordering::SeqCst), 2);
        relay.stop().await;
    }
}

/// SPEC 4.6: the 250's id has SES's form, and the `Received:` header carries the same id.
#[tokio::test]
async fn the_accepted_id_has_ses_form_and_is_in_the_trace() {
    let (relay, upstream) = relay_with_capture().await;
    let mut c = Client::ready(relay.addr).await;
    let reply = c
        .mail(
            "joe@example.com",
            &["r@example.net"],
            b"From: joe@example.com\r\nSubject: s\r\n\r\nbody\r\n",
        )
        .await;
    let id = reply.strip_prefix("250 2.0.0 Ok ").expect(&reply);
    assert_eq!(id.len(), 60, "{id}");
    assert!(id.starts_with("0100"), "us-east-1: {id}");
    assert!(id.ends_with("-000000"), "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-'),
        "{id}"
    );
    let got = upstream.wait_for(1).await;
    let text = String::from_utf8_lossy(&got[0].content);
    assert!(text.contains(&format!(" id {id}")), "{text}");
    relay.stop().await;
}

/// SES's single-occurrence headers: a second Subject, From or lower-case dkim-signature is
/// refused with the name as SES spells it; To and Cc may repeat.
#[tokio::test]
async fn duplicate_headers_are_refused_as_ses_refuses_them() {
    let (relay, upstream) = relay_with_capture().await;
    let mut c = Client::ready(relay.addr).await;
    for (headers, name) in [
        (
            "From: joe@example.com\r\nSubject: a\r\nsubject: b\r\n",
            "Subject",
        ),
        ("From: joe@example.com\r\nFrom: joe@example.com\r\n", "From"),
        (
            "dkim-signature: a\r\ndkim-signature: b\r\nFrom: joe@example.com\r\n",
            "DKIM-Signature",
        ),
    ] {
        let message = format!("{headers}\r\nbody\r\n");
        let reply = c
            .mail("joe@example.com", &["r@example.net"], message.as_bytes())
            .await;
        assert_eq!(
            reply,
            format!("554 5.6.0 Transaction failed: Duplicate header '{name}'.")
        );
    }
    let reply = c
        .mail(
            "joe@example.com",
            &["r@example.net"],
            b"From: joe@example.com\r\nTo: a@example.net\r\nTo: b@example.net\r\nCc: c@example.net\r\nCc: d@example.net\r\n\r\nbody\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    assert_eq!(upstream.wait_for(1).await.len(), 1);
    relay.stop().await;
}
