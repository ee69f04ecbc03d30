//! Header inspection and rewrite (`message`, SPEC 4 and 5) on an arbitrary message.
//!
//! Kept to this one file, against the message module's public API of the day, so that it
//! follows that API easily. Checks: no panic on any bytes (8-bit header names, multibyte
//! characters at any offset, bare CR, NUL, unterminated headers); the rewrite only cuts
//! header lines: the body after the first blank line reaches the upstream unchanged, and
//! the output is the new head plus at most the original bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesrelay::message::{Inspection, Rewrite, rewrite};

const RECEIVED: &str = "Received: from fuzz.example ([127.0.0.1])\r\n\tby sesrelay.local with ESMTP id fuzz;\r\n\tThu, 1 Jan 2026 00:00:00 +0000\r\n";

fuzz_target!(|content: &[u8]| {
    let inspection = Inspection::of(content);
    let _ = inspection.first_from();
    let _ = inspection.recipients();
    let _ = inspection.facts("bounce@example.com");
    let _ = inspection.facts("");

    let tags = [
        ("campaign".to_owned(), "fuzz".to_owned()),
        ("team".to_owned(), "growth".to_owned()),
    ];
    let body = content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &content[i + 2..]);
    for strip_ses_headers in [false, true] {
        let rw = Rewrite {
            received: RECEIVED,
            configuration_set: Some("transactional"),
            tags: &tags,
            strip_ses_headers,
        };
        let out = rewrite(content, &inspection, &rw);
        assert!(
            out.starts_with(RECEIVED.as_bytes()),
            "the Received header is not first"
        );
        assert!(
            out.len() <= content.len() + 1024,
            "the rewrite grew the message by {} octets",
            out.len().saturating_sub(content.len())
        );
        if let Some(body) = body {
            assert!(out.ends_with(body), "the rewrite changed the body");
        }
    }
});
