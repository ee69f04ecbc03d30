//! The SMTP dialogue over real sockets, with a raw client: replies, limits, hostile input.

mod common;

use std::time::Duration;

use common::{Capture, Client, Relay, Script, standard_config};

async fn relay_with(extra_server: &str) -> (Relay, Capture) {
    let upstream = Capture::start(Script::default()).await;
    let config = standard_config(&upstream.url()).replacen(
        "[server]\n",
        &format!("[server]\n{extra_server}\n"),
        1,
    );
    (Relay::start(&config).await, upstream)
}

#[tokio::test]
async fn greeting_and_ehlo_advertise_the_extensions() {
    let (relay, _up) = relay_with("hostname = \"relay.example\"\nmax_message_size = 1000").await;
    let (mut c, greeting) = Client::connect(relay.addr).await;
    assert_eq!(greeting, "220 relay.example ESMTP sesrelay");
    assert_eq!(
        c.cmd("EHLO client.test").await,
        "250-relay.example\n250-PIPELINING\n250-SIZE 1000\n250-8BITMIME\n250 ENHANCEDSTATUSCODES"
    );
    assert_eq!(c.cmd("HELO client.test").await, "250 2.0.0 relay.example");
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok");
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 Ok");
    assert_eq!(
        c.cmd("VRFY joe").await,
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
    );
    assert!(c.cmd("HELP").await.starts_with("214 2.0.0 "));
    assert_eq!(
        c.cmd("EXPN list").await,
        "502 5.5.1 Error: command not implemented"
    );
    assert_eq!(
        c.cmd("STARTTLS").await,
        "502 5.5.1 Error: command not implemented"
    );
    assert_eq!(
        c.cmd("BDAT 10 LAST").await,
        "502 5.5.1 Error: command not implemented"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN AGEAYg==").await,
        "503 5.5.1 Error: authentication not enabled"
    );
    assert_eq!(
        c.cmd("FOO").await,
        "500 5.5.2 Error: command not recognized"
    );
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    assert!(c.is_closed().await);
    relay.stop().await;
}

#[tokio::test]
async fn commands_out_of_sequence() {
    let (relay, _up) = relay_with("").await;
    let (mut c, _) = Client::connect(relay.addr).await;
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com>").await,
        "503 5.5.1 Error: send HELO/EHLO first"
    );
    assert_eq!(c.cmd("EHLO x").await.lines().count(), 5);
    assert_eq!(
        c.cmd("RCPT TO:<a@example.net>").await,
        "503 5.5.1 Error: need MAIL command"
    );
    assert_eq!(c.cmd("DATA").await, "503 5.5.1 Error: need MAIL command");
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>").await, "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com>").await,
        "503 5.5.1 Error: nested MAIL command"
    );
    assert_eq!(c.cmd("DATA").await, "503 5.5.1 Error: need RCPT command");
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<a@example.net>").await,
        "503 5.5.1 Error: need MAIL command"
    );
    relay.stop().await;
}

#[tokio::test]
async fn syntax_and_parameters() {
    let (relay, _up) = relay_with("").await;
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(
        c.cmd("MAIL FROM:joe@example.com").await,
        "501 5.5.4 Syntax: MAIL FROM:<reverse-path> [parameters]"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com> SMTPUTF8").await,
        "555 5.5.4 Unsupported option: SMTPUTF8"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com> RET=HDRS").await,
        "555 5.5.4 Unsupported option: RET"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com> BODY=BINARYMIME").await,
        "555 5.5.4 Unsupported option: BODY=BINARYMIME"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com> SIZE=abc").await,
        "501 5.5.4 Bad SIZE parameter syntax"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<jöe@example.com>").await,
        "553 5.6.7 Non-ASCII addresses are not supported (no SMTPUTF8)"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<not an address>").await.split(' ').next(),
        Some("501")
    );
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com> BODY=8BITMIME SIZE=100")
            .await,
        "250 2.1.0 Ok"
    );
    assert_eq!(
        c.cmd("RCPT TO:<postmaster>").await,
        "501 5.1.3 Bad recipient address syntax"
    );
    assert_eq!(
        c.cmd("RCPT TO:<a@example.net> NOTIFY=NEVER").await,
        "555 5.5.4 Unsupported option: NOTIFY"
    );
    assert_eq!(c.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    relay.stop().await;
}

#[tokio::test]
async fn pipelined_commands_in_one_write() {
    let (relay, upstream) = relay_with("").await;
    let (mut c, _) = Client::connect(relay.addr).await;
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<joe@example.com>\r\nRCPT TO:<a@example.net>\r\n\
RCPT TO:<bad address>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
    )
    .await;
    assert!(c.reply().await.ends_with("250 ENHANCEDSTATUSCODES"));
    assert_eq!(c.reply().await, "250 2.1.0 Ok");
    assert_eq!(c.reply().await, "250 2.1.5 Ok");
    assert!(c.reply().await.starts_with("501 "));
    assert_eq!(c.reply().await, "250 2.1.5 Ok");
    assert_eq!(c.reply().await, "354 End data with <CR><LF>.<CR><LF>");
    // The message, its end and the next transaction in one write too.
    c.send(
        b"From: joe@example.com\r\n\r\none\r\n.\r\nMAIL FROM:<joe@example.com>\r\n\
RCPT TO:<c@example.net>\r\nDATA\r\n",
    )
    .await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok "));
    assert_eq!(c.reply().await, "250 2.1.0 Ok");
    assert_eq!(c.reply().await, "250 2.1.5 Ok");
    assert_eq!(c.reply().await, "354 End data with <CR><LF>.<CR><LF>");
    c.send(b"From: joe@example.com\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok "));
    assert_eq!(c.reply().await, "221 2.0.0 Bye");
    let got = upstream.wait_for(2).await;
    assert_eq!(got[0].rcpt_to, ["a@example.net", "b@example.net"]);
    assert_eq!(got[1].rcpt_to, ["c@example.net"]);
    relay.stop().await;
}

/// SES accepts every RCPT and refuses the message after DATA when it has more than 50
/// recipients; RCPT 1001 and beyond get 452 4.5.3 (memory stays bounded).
#[tokio::test]
async fn recipient_count_is_answered_after_data_as_ses_does() {
    let (relay, upstream) = relay_with("").await;
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>").await, "250 2.1.0 Ok");
    let mut rcpts = String::new();
    for i in 1..=1001 {
        rcpts.push_str(&format!("RCPT TO:<r{i}@example.net>\r\n"));
    }
    c.send(rcpts.as_bytes()).await;
    for _ in 1..=1000 {
        assert_eq!(c.reply().await, "250 2.1.5 Ok");
    }
    assert_eq!(c.reply().await, "452 4.5.3 Too many recipients");
    assert_eq!(c.cmd("DATA").await.split(' ').next(), Some("354"));
    c.send(b"From: joe@example.com\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(
        c.reply().await,
        "554 5.5.3 Transaction failed: Recipient count exceeds 50."
    );
    // Exactly 50 passes.
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>").await, "250 2.1.0 Ok");
    for i in 1..=50 {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<r{i}@example.net>")).await,
            "250 2.1.5 Ok"
        );
    }
    assert_eq!(c.cmd("DATA").await.split(' ').next(), Some("354"));
    c.send(b"From: joe@example.com\r\n\r\nhi\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok "));
    let got = upstream.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to.len(), 50);
    relay.stop().await;
}

#[tokio::test]
async fn oversized_message_is_read_to_the_end_then_refused() {
    let (relay, upstream) = relay_with("max_message_size = 1000").await;
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com> SIZE=1001").await,
        "552 5.3.4 Message is too long."
    );
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com> SIZE=1000").await,
        "250 2.1.0 Ok"
    );
    assert_eq!(c.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"From: joe@example.com\r\n\r\n").await;
    for _ in 0..100 {
        c.send(&[b'y'; 80]).await;
        c.send(b"\r\n").await;
    }
    // A line that looks like a command inside the oversized body stays content.
    c.send(b"QUIT\r\n.\r\n").await;
    assert_eq!(c.reply().await, "552 5.3.4 Message is too long.");
    // The session is in step: the next transaction works.
    let ok = c
        .mail(
            "joe@example.com",
            &["a@example.net"],
            b"From: joe@example.com\r\n\r\nsmall\r\n",
        )
        .await;
    assert!(ok.starts_with("250 2.0.0 Ok "), "{ok}");
    let got = upstream.wait_for(1).await;
    assert!(got[0].content.ends_with(b"small\r\n"));
    assert_eq!(upstream.messages().len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn bare_lf_cannot_smuggle_a_second_message() {
    let (relay, upstream) = relay_with("").await;
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>").await, "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(
        b"From: joe@example.com\r\n\r\nfirst\n.\nMAIL FROM:<joe@example.com>\r\n\
RCPT TO:<victim@example.net>\r\nDATA\r\nFrom: joe@example.com\r\n\r\nsmuggled\r\n\r.\r\n\
still content\r\n.\r\n",
    )
    .await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok "));
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    let got = upstream.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.messages().len(), 1, "exactly one message upstream");
    assert_eq!(got[0].rcpt_to, ["a@example.net"]);
    let content = String::from_utf8_lossy(&got[0].content).into_owned();
    assert!(
        content.ends_with(
            "\r\n\r\nfirst\r\n.\r\nMAIL FROM:<joe@example.com>\r\nRCPT TO:<victim@example.net>\r\n\
DATA\r\nFrom: joe@example.com\r\n\r\nsmuggled\r\n\r\n.\r\nstill content\r\n"
        ),
        "{content:?}"
    );
    // No bare LF or bare CR went upstream, and the lone dots were stuffed on the wire.
    assert!(
        !got[0]
            .wire
            .windows(2)
            .any(|w| (w[1] == b'\n') != (w[0] == b'\r'))
    );
    assert!(String::from_utf8_lossy(&got[0].wire).contains("\r\n..\r\nMAIL FROM"));
    relay.stop().await;
}

#[tokio::test]
async fn over_long_command_lines_are_refused_and_skipped() {
    let (relay, _up) = relay_with("").await;
    let mut c = Client::ready(relay.addr).await;
    // 512 octets with CRLF is the limit.
    let ok = format!("NOOP {}\r\n", "a".repeat(512 - 7));
    c.send(ok.as_bytes()).await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok");
    let long = format!("NOOP {}\r\n", "a".repeat(512 - 6));
    c.send(long.as_bytes()).await;
    assert_eq!(c.reply().await, "500 5.5.2 Line too long");
    // Far longer, over several writes, with a command-like tail: one reply, then in step.
    c.send(&[b'M'; 100_000]).await;
    c.send(b"QUIT\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await, "500 5.5.2 Line too long");
    assert_eq!(c.reply().await, "250 2.0.0 Ok");
    relay.stop().await;
}

#[tokio::test]
async fn clients_outside_trusted_networks_are_turned_away() {
    let (relay, _up) = relay_with("trusted_networks = [\"10.0.0.0/8\"]").await;
    let (mut c, greeting) = Client::connect(relay.addr).await;
    assert_eq!(greeting, "554 5.7.1 Access denied");
    assert!(c.is_closed().await);
    relay.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_get_421() {
    let (relay, _up) = relay_with("max_connections = 2").await;
    let (_a, ga) = Client::connect(relay.addr).await;
    let (_b, gb) = Client::connect(relay.addr).await;
    assert!(ga.starts_with("220") && gb.starts_with("220"));
    let (mut c, gc) = Client::connect(relay.addr).await;
    assert_eq!(gc, "421 4.7.0 Too many concurrent SMTP connections");
    assert!(c.is_closed().await);
    drop(_a);
    // The slot comes back once the first session notices the close.
    let mut greeted = String::new();
    for _ in 0..50 {
        let (_d, g) = Client::connect(relay.addr).await;
        greeted = g;
        if greeted.starts_with("220") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(greeted.starts_with("220"), "{greeted}");
    relay.stop().await;
}

#[tokio::test]
async fn idle_clients_are_timed_out() {
    let (relay, _up) = relay_with("idle_timeout = \"300ms\"").await;
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(
        c.reply().await,
        "451 4.4.2 Timeout waiting for data from client"
    );
    assert!(c.is_closed().await);
    // Also in the middle of DATA: nothing is forwarded.
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>").await, "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"From: joe@example.com\r\n\r\npartial").await;
    assert_eq!(
        c.reply().await,
        "451 4.4.2 Timeout waiting for data from client"
    );
    relay.stop().await;
}

#[tokio::test]
async fn too_many_errors_close_the_connection() {
    let (relay, _up) = relay_with("").await;
    let mut c = Client::ready(relay.addr).await;
    for _ in 0..20 {
        assert_eq!(
            c.cmd("BOGUS").await,
            "500 5.5.2 Error: command not recognized"
        );
    }
    assert_eq!(
        c.reply().await,
        "421 4.7.0 Too many errors, closing connection"
    );
    assert!(c.is_closed().await);
    relay.stop().await;
}

#[tokio::test]
async fn shutdown_answers_421_and_finishes_the_message_in_flight() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;
    let mut idle = Client::ready(relay.addr).await;
    let mut busy = Client::ready(relay.addr).await;
    assert_eq!(
        busy.cmd("MAIL FROM:<joe@example.com>").await,
        "250 2.1.0 Ok"
    );
    assert_eq!(busy.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    assert!(busy.cmd("DATA").await.starts_with("354"));
    busy.send(b"From: joe@example.com\r\n\r\nin flight\r\n")
        .await;
    let addr = relay.addr;
    let stopping = tokio::spawn(relay.stop());
    assert_eq!(
        idle.reply().await,
        "421 4.3.2 sesrelay.local Service shutting down, closing transmission channel"
    );
    busy.send(b".\r\n").await;
    assert!(busy.reply().await.starts_with("250 2.0.0 Ok "));
    assert!(busy.reply().await.starts_with("421 4.3.2 "));
    stopping.await.unwrap();
    assert_eq!(upstream.wait_for(1).await.len(), 1);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
