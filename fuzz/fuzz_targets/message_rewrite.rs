//! Header reading and rewrite (`message`, SPEC 4 and 5) on an arbitrary message.
//!
//! Checks: no panic on any bytes (8-bit header names, multibyte characters at any offset,
//! bare CR or LF, NUL, unterminated headers), as given and with CRLF line endings; the
//! rewrite only cuts header lines: the body after the first empty line reaches the upstream
//! unchanged, the output is the new head plus at most the original bytes, the parts are
//! slices of at most 64 KiB after the head, and `len()` is what `parts()` hands out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesrelay::message::{Message, Rewrite, crlf_line_endings};

const RECEIVED: &str = "Received: from fuzz.example ([127.0.0.1])\r\n\tby sesrelay.local with ESMTP id fuzz;\r\n\tThu, 1 Jan 2026 00:00:00 +0000\r\n";

fuzz_target!(|content: &[u8]| {
    check(content.to_vec());
    check(crlf_line_endings(content.to_vec()));
});

fn check(content: Vec<u8>) {
    let message = Message::parse(content.clone());
    let _ = message.first_from();
    let _ = message.recipients();
    let _ = message.facts("bounce@example.com");
    let facts = message.facts("");
    if let Some(from) = &facts.from {
        assert!(from.iter().all(|a| a.contains('@')), "{from:?}");
    }

    let tags = [
        ("campaign".to_owned(), "fuzz".to_owned()),
        ("team".to_owned(), "growth".to_owned()),
    ];
    let body = content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &content[i + 4..]);
    for strip_ses_headers in [false, true] {
        let rw = Rewrite {
            received: RECEIVED,
            configuration_set: Some("transactional"),
            tags: &tags,
            strip_ses_headers,
        };
        let forwarded = message.clone().forward(&rw);
        let out = forwarded.to_vec();
        assert_eq!(out.len(), forwarded.len());
        assert!(
            out.starts_with(RECEIVED.as_bytes()),
            "the Received header is not first"
        );
        assert!(
            out.len() <= content.len() + 1024,
            "the rewrite grew the message by {} octets",
            out.len().saturating_sub(content.len())
        );
        assert!(
            forwarded.parts().skip(1).all(|p| p.len() <= 64 * 1024),
            "a part over 64 KiB"
        );
        if let Some(body) = body {
            assert!(out.ends_with(body), "the rewrite changed the body");
        }
    }
}
