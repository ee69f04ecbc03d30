//! SigV4 verification of admin API requests (`admin::sigv4::verify`, SPEC 6).
//!
//! Input: a request as text, so that the seeds read as requests:
//!
//! ```text
//! METHOD TARGET          (TARGET = path[?query], as received)
//! Header-Name: value     (one per line; lines that are not headers are skipped)
//!                        (an empty line)
//! body...
//! ```
//!
//! It is verified against AWS's published example key at the time of AWS's test suite
//! (so a seed signed there verifies, and mutations start from a valid signature), and
//! again at other times, services and key lists. Checks: no panic; an error has an AWS
//! code, a 400 or 403 status and a message that prints.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use sesrelay::admin::sigv4::{AccessKey, SignedRequest, verify};

/// 2015-08-30T12:36:00Z, the time of AWS's aws-sig-v4-test-suite.
const SUITE_TIME: u64 = 1_440_938_160;

fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &bytes[..i];
            (line.strip_suffix(b"\r").unwrap_or(line), &bytes[i + 1..])
        }
        None => (bytes, &[]),
    }
}

fuzz_target!(|input: &[u8]| {
    let (request_line, mut rest) = split_line(input);
    let Ok(request_line) = std::str::from_utf8(request_line) else {
        return;
    };
    let (method, target) = request_line.split_once(' ').unwrap_or((request_line, "/"));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut headers = HeaderMap::new();
    loop {
        let (line, tail) = split_line(rest);
        rest = tail;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let body = rest;

    let request = SignedRequest {
        method: &method,
        path,
        query,
        headers: &headers,
        body,
    };
    let keys = [
        AccessKey {
            id: "AKIAOTHERKEY00000000".to_owned(),
            secret: "another-secret".to_owned(),
        },
        AccessKey {
            id: "AKIDEXAMPLE".to_owned(),
            secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
        },
    ];
    let times = [
        SUITE_TIME,
        SUITE_TIME + 15 * 60 + 1,
        0,
        4_102_444_800, // 2100-01-01
    ];
    for (i, secs) in times.into_iter().enumerate() {
        let now = UNIX_EPOCH + Duration::from_secs(secs);
        let services: &[&str] = if i == 0 {
            &["service", "ses", ""]
        } else {
            &["service"]
        };
        for service in services {
            for keys in [&keys[..], &[]] {
                check(verify(&request, service, keys, now));
            }
        }
    }
});

fn check(result: Result<&str, sesrelay::admin::sigv4::SigV4Error>) {
    if let Err(e) = result {
        assert!(e.code().ends_with("Exception"));
        assert!(matches!(e.status(), 400 | 403));
        let _ = e.to_string();
    }
}
