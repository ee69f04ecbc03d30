//! Regression tests for the SMTP findings of the hardening review, over real sockets: each
//! checks the reply the client gets and what reached the upstream (nothing, or exactly the
//! message).

mod common;

use std::time::{Duration, Instant};

use common::peers::RelayProcess;
use common::{Capture, Client, Relay, Script, header, standard_config};

/// How long to wait before concluding that nothing more reaches the upstream.
const QUIET: Duration = Duration::from_millis(200);

async fn relay_with(extra_server: &str, script: Script) -> (Relay, Capture) {
    let upstream = Capture::start(script).await;
    let config = standard_config(&upstream.url()).replacen(
        "[server]\n",
        &format!("[server]\n{extra_server}\n"),
        1,
    );
    (Relay::start(&config).await, upstream)
}

async fn nothing_upstream(upstream: &Capture) {
    tokio::time::sleep(QUIET).await;
    assert!(
        upstream.messages().is_empty(),
        "a message reached the upstream"
    );
}

/// Defect 9: `idle_timeout` bounds a whole command line, not each read.
#[tokio::test]
async fn a_trickled_command_line_is_cut_by_idle_timeout() {
    let (relay, upstream) = relay_with("idle_timeout = \"400ms\"", Script::default()).await;
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>").await, "250 2.1.0 Ok");
    let started = Instant::now();
    // One byte every 100 ms: each read is well within idle_timeout, the line is not.
    for &b in b"RCPT TO:<a@example.net>\r\n" {
        if !c.try_send(&[b]).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.reply().await,
        "451 4.4.2 Timeout waiting for data from client"
    );
    assert!(c.is_closed().await);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "cut after {elapsed:?}"
    );
    nothing_upstream(&upstream).await;
    relay.stop().await;
}

/// Defect 9: after SIGTERM a client sending one DATA byte at a time cannot hold the
/// process: at `shutdown_timeout` it gets 421 4.3.2, its message is discarded, and the
/// process exits.
#[tokio::test]
async fn a_slow_data_client_is_cut_at_shutdown_timeout_and_the_process_exits() {
    let upstream = Capture::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = standard_config(&upstream.url()).replacen(
        "[server]\n",
        "[server]\nshutdown_timeout = \"500ms\"\nidle_timeout = \"10s\"\n",
        1,
    );
    let mut relay = RelayProcess::start_in(dir.path(), &config);
    let mut c = Client::ready(relay.smtp_addr()).await;
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>").await, "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"From: joe@example.com\r\nSubject: slow\r\n\r\n")
        .await;
    // An idle session beside it gets its 421 at once.
    let mut idle = Client::ready(relay.smtp_addr()).await;

    relay.process.signal("TERM");
    let signalled = Instant::now();
    assert_eq!(
        idle.reply().await,
        "421 4.3.2 sesrelay.local Service shutting down, closing transmission channel"
    );
    let trickle = async {
        for _ in 0..40 {
            if !c.try_send(b"x").await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if signalled.elapsed() > Duration::from_millis(300) {
                break;
            }
        }
        c
    };
    let mut c = trickle.await;
    assert_eq!(
        c.reply().await,
        "421 4.3.2 sesrelay.local Service shutting down, closing transmission channel"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = relay.process.wait_exit(Duration::from_secs(3));
        (status, relay)
    })
    .await
    .unwrap();
    let (status, relay) = status;
    let elapsed = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running: {}", relay.log()));
    assert!(status.success(), "{status}: {}", relay.log());
    // 500 ms of shutdown_timeout, and a margin for the last writes.
    assert!(
        elapsed < Duration::from_millis(2500),
        "exited after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(450),
        "exited after {elapsed:?}"
    );
    assert!(c.is_closed().await);
    nothing_upstream(&upstream).await;
}

/// Defect 10: a bare CR ends a line like a bare LF: `\r.\r` reaches the upstream as a
/// stuffed dot line, and a header behind a bare CR is a header of its own, seen by the
/// relay (here, the configuration set it names is applied and the header replaced).
#[tokio::test]
async fn bare_cr_is_normalised_before_anything_is_judged_or_forwarded() {
    let (relay, upstream) = relay_with("", Script::default()).await;
    let mut c = Client::ready(relay.addr).await;
    let reply = c
        .mail(
            "ann@example.com",
            &["a@example.net"],
            b"From: ann@example.com\r\nSubject: hidden\rX-SES-CONFIGURATION-SET: marketing\r\n\
\r\nbody\r.\rMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.net>\r\nend\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    let got = upstream.wait_for(1).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(upstream.messages().len(), 1, "exactly one message upstream");
    let message = &got[0];
    assert_eq!(message.mail_from, "ann@example.com");
    assert_eq!(message.rcpt_to, ["a@example.net"]);
    // ann@example.com's default would be `transactional`: the header was seen.
    assert_eq!(
        header(&message.content, "X-SES-CONFIGURATION-SET"),
        ["marketing"]
    );
    assert_eq!(header(&message.content, "Subject"), ["hidden"]);
    assert!(
        message.content.ends_with(
            b"\r\n\r\nbody\r\n.\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.net>\r\nend\r\n"
        ),
        "{:?}",
        String::from_utf8_lossy(&message.content)
    );
    // On the wire: CRLF only, and the lone dot stuffed.
    for (i, &b) in message.wire.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(message.wire.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert_eq!(message.wire.get(i.wrapping_sub(1)), Some(&b'\r')),
            _ => {}
        }
    }
    assert!(String::from_utf8_lossy(&message.wire).contains("\r\nbody\r\n..\r\nMAIL FROM"));
    relay.stop().await;
}

/// Defect 11: a SIZE too large to parse (smtp-proto wraps it) is refused at MAIL.
#[tokio::test]
async fn a_huge_size_is_refused_at_mail() {
    let (relay, upstream) = relay_with("max_message_size = 1000", Script::default()).await;
    let mut c = Client::ready(relay.addr).await;
    for size in [
        "99999999999999999999999",
        "18446744073709551616",
        "18446744073709551615",
        "1001",
    ] {
        assert_eq!(
            c.cmd(&format!("MAIL FROM:<joe@example.com> SIZE={size}"))
                .await,
            "552 5.3.4 Message is too long.",
            "SIZE={size}"
        );
    }
    // Still in step, and the limit itself passes.
    let reply = c
        .mail(
            "joe@example.com",
            &["a@example.net"],
            b"From: joe@example.com\r\n\r\nsmall\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let got = upstream.wait_for(1).await;
    assert!(got[0].content.ends_with(b"\r\n\r\nsmall\r\n"));
    tokio::time::sleep(QUIET).await;
    assert_eq!(upstream.messages().len(), 1);
    relay.stop().await;
}

/// Defect 11: replies are 7-bit ASCII; 8-bit text of an upstream refusal shows as `?`.
#[tokio::test]
async fn an_upstream_refusal_in_8_bit_text_is_relayed_as_ascii() {
    let (relay, upstream) = relay_with(
        "",
        Script {
            data: "554 5.7.1 Refus\u{e9}: contenu interdit \u{2014} \u{1F600}".to_owned(),
            ..Script::default()
        },
    )
    .await;
    let mut c = Client::ready(relay.addr).await;
    let reply = c
        .mail(
            "joe@example.com",
            &["a@example.net"],
            b"From: joe@example.com\r\n\r\nrefused\r\n",
        )
        .await;
    assert_eq!(reply, "554 5.7.1 Refus?: contenu interdit ? ?");
    assert!(reply.is_ascii());
    // The upstream saw the message once (and refused it).
    let got = upstream.wait_for(1).await;
    assert!(got[0].content.ends_with(b"\r\n\r\nrefused\r\n"));
    tokio::time::sleep(QUIET).await;
    assert_eq!(upstream.messages().len(), 1);
    relay.stop().await;
}

/// Defect 8: all DATA buffers together stay under `max_inflight_bytes`; a message that
/// does not fit is read to its end and answered 452 4.3.1, and the room comes back once
/// the message holding it has been handed on.
#[tokio::test]
async fn the_inflight_budget_refuses_what_does_not_fit() {
    let (relay, upstream) = relay_with(
        "max_inflight_bytes = 300000\nmax_message_size = 250000",
        Script::default(),
    )
    .await;
    let body = |fill: u8| {
        let mut content = b"From: joe@example.com\r\n\r\n".to_vec();
        for _ in 0..2_000 {
            content.extend_from_slice(&[fill; 98]);
            content.extend_from_slice(b"\r\n");
        }
        content
    };
    // A declares 200,000 bytes: they are reserved when its DATA begins.
    let mut a = Client::ready(relay.addr).await;
    assert_eq!(
        a.cmd("MAIL FROM:<joe@example.com> SIZE=200000").await,
        "250 2.1.0 Ok"
    );
    assert_eq!(a.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    assert!(a.cmd("DATA").await.starts_with("354"));
    // B's 200,000 bytes cannot be held beside them.
    let mut b = Client::ready(relay.addr).await;
    let reply_b = b
        .mail("joe@example.com", &["b@example.net"], &body(b'b'))
        .await;
    assert_eq!(reply_b, "452 4.3.1 Insufficient system resources");
    a.send(&body(b'a')).await;
    a.send(b".\r\n").await;
    let reply_a = a.reply().await;
    assert!(reply_a.starts_with("250 2.0.0 Ok "), "{reply_a}");
    let got = upstream.wait_for(1).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(upstream.messages().len(), 1, "only A's message upstream");
    assert_eq!(got[0].rcpt_to, ["a@example.net"]);
    assert!(got[0].content.ends_with(&body(b'a')[25..]));
    // A's share was given back: B's retry fits now.
    let retry = b
        .mail("joe@example.com", &["b@example.net"], &body(b'b'))
        .await;
    assert!(retry.starts_with("250 2.0.0 Ok "), "{retry}");
    let got = upstream.wait_for(2).await;
    assert_eq!(got[1].rcpt_to, ["b@example.net"]);
    assert!(got[1].content.ends_with(&body(b'b')[25..]));
    relay.stop().await;
}

/// Defect 11: the error limit counts syntax and sequence errors only, and starts again
/// after each accepted message.
#[tokio::test]
async fn the_error_limit_starts_again_after_an_accepted_message() {
    let (relay, upstream) = relay_with("", Script::default()).await;
    let mut c = Client::ready(relay.addr).await;
    for _ in 0..19 {
        assert_eq!(
            c.cmd("BOGUS").await,
            "500 5.5.2 Error: command not recognized"
        );
    }
    // Refusals of well-formed commands are no errors of the client's.
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>").await, "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    for _ in 0..3 {
        assert_eq!(
            c.cmd("RCPT TO:<j\u{f6}e@example.net>").await,
            "553 5.6.7 Non-ASCII addresses are not supported (no SMTPUTF8)"
        );
    }
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"From: joe@example.com\r\n\r\nfirst\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok "));
    // The count starts again: 19 more errors leave the session open.
    for _ in 0..19 {
        assert_eq!(
            c.cmd("MAIL FROM:joe").await,
            "501 5.5.4 Syntax: MAIL FROM:<reverse-path> [parameters]"
        );
    }
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok");
    assert_eq!(c.cmd("DATA").await, "503 5.5.1 Error: need MAIL command");
    assert_eq!(
        c.reply().await,
        "421 4.7.0 Too many errors, closing connection"
    );
    assert!(c.is_closed().await);
    let got = upstream.wait_for(1).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(upstream.messages().len(), 1);
    assert!(got[0].content.ends_with(b"\r\n\r\nfirst\r\n"));
    relay.stop().await;
}

/// Thousands of connections at once: those over `max_connections` get `421 4.7.0` and are
/// closed, and the relay stays responsive: a new client afterwards sends a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_meet_the_cap_and_the_relay_stays_responsive() {
    // The test holds both ends of every connection: make room for them.
    sesrelay::fdlimit::raise_nofile_limit();
    let (relay, upstream) = relay_with("max_connections = 100", Script::default()).await;
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..1500 {
        if i % 100 == 0 {
            // Let the relay drain its accept queue, so that no SYN is dropped (the client
            // would retry it only a second later).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Connected one after another, held all at once.
        let stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
        clients.spawn(async move {
            let mut reader = tokio::io::BufReader::new(stream);
            let mut line = String::new();
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line),
            )
            .await;
            (line, Some(reader))
        });
    }
    let mut greeted = 0;
    let mut refused = 0;
    let mut other = Vec::new();
    let mut open = Vec::new();
    while let Some(result) = clients.join_next().await {
        let (line, stream) = result.unwrap();
        if line.starts_with("220 ") {
            greeted += 1;
        } else if line.starts_with("421 4.7.0 Too many concurrent SMTP connections") {
            refused += 1;
        } else {
            other.push(line);
        }
        open.extend(stream);
    }
    assert_eq!(greeted, 100, "{refused} refused");
    assert_eq!(refused, 1400, "{} others: {:?}", other.len(), other.first());
    drop(open);
    // Every slot comes back; a new client is served.
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        let (mut c, greeting) = Client::connect(relay.addr).await;
        if greeting.starts_with("220 ") {
            assert!(c.cmd("EHLO client.test").await.starts_with("250"));
            break c
                .mail(
                    "joe@example.com",
                    &["r@example.net"],
                    b"From: joe@example.com\r\nSubject: after\r\n\r\nbody\r\n",
                )
                .await;
        }
        assert!(Instant::now() < deadline, "still refused: {greeting}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    assert_eq!(upstream.wait_for(1).await.len(), 1);
    relay.stop().await;
}
