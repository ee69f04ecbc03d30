//! lettre → sesrelay → a capturing upstream, over real sockets: what arrives upstream.

mod common;

use common::{Capture, Client, Relay, Script, after_prepended, header, standard_config};
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

fn client(relay: &Relay) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(relay.addr.port())
        .build()
}

fn envelope(from: &str, to: &[&str]) -> Envelope {
    Envelope::new(
        Some(from.parse().unwrap()),
        to.iter().map(|t| t.parse().unwrap()).collect(),
    )
    .unwrap()
}

/// Sends `content` (which ends with CRLF) with lettre, which adds the final `.` itself.
async fn send(
    relay: &Relay,
    from: &str,
    to: &[&str],
    content: &[u8],
) -> Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error> {
    let body = content.strip_suffix(b"\r\n").unwrap_or(content);
    client(relay).send_raw(&envelope(from, to), body).await
}

#[tokio::test]
async fn forwards_every_byte_and_tags_the_message() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;

    let long_line = "x".repeat(998);
    let mut content = Vec::new();
    content.extend_from_slice(b"From: Joe <joe@example.com>\r\n");
    content.extend_from_slice(b"To: bob@example.net\r\n");
    content.extend_from_slice(
        b"Subject: =?utf-8?q?caf=C3=A9?= and a long subject that is\r\n\tfolded over two lines\r\n",
    );
    content.extend_from_slice(b"X-Custom:   spaced value   \r\n");
    content.extend_from_slice(b"\r\n");
    content.extend_from_slice(b".a line that begins with a dot\r\n");
    content.extend_from_slice(b"..two dots\r\n");
    content.extend_from_slice(b".\r\n");
    content.extend_from_slice("8-bit: café, 日本語\r\n".as_bytes());
    content.extend_from_slice(b"invalid UTF-8: \xff\xfe\r\n");
    content.extend_from_slice(long_line.as_bytes());
    content.extend_from_slice(b"\r\n");
    content.extend_from_slice(b"trailing spaces   \r\n\r\n\r\n");

    let response = send(&relay, "joe@example.com", &["bob@example.net"], &content)
        .await
        .expect("relay accepts");
    let reply_text = response.message().collect::<Vec<_>>().join(" ");
    assert!(reply_text.starts_with("2.0.0 Ok "), "{reply_text}");
    let id = reply_text.trim_start_matches("2.0.0 Ok ").to_owned();

    let got = upstream.wait_for(1).await;
    let (prepended, rest) = after_prepended(&got[0].content);
    assert_eq!(
        rest,
        content.as_slice(),
        "the client's bytes arrive unchanged"
    );
    assert!(prepended.contains(&format!(" id {id}\r\n")), "{prepended}");
    assert!(
        prepended.contains("\tfor <bob@example.net>; "),
        "{prepended}"
    );
    assert!(
        prepended
            .ends_with("X-SES-CONFIGURATION-SET: marketing\r\nX-SES-MESSAGE-TAGS: team=growth\r\n")
    );
    // On the wire the dot lines were stuffed.
    let wire = String::from_utf8_lossy(&got[0].wire);
    assert!(wire.contains("\r\n..a line that begins with a dot\r\n"));
    assert!(wire.contains("\r\n...two dots\r\n"));
    assert_eq!(got[0].mail_from, "joe@example.com");
    assert_eq!(got[0].rcpt_to, ["bob@example.net"]);
    relay.stop().await;
}

#[tokio::test]
async fn the_first_header_set_wins_and_exactly_one_is_forwarded() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;
    let content = b"X-SES-CONFIGURATION-SET:  transactional \r\nFrom: joe@example.com\r\n\
x-ses-configuration-set: marketing\r\nX-SES-MESSAGE-TAGS: campaign=spring, team=web\r\n\
X-SES-MESSAGE-TAGS: ignored=yes\r\nX-SES-SOURCE-ARN: arn:aws:ses:us-east-1:1:identity/example.com\r\n\r\nbody\r\n";
    send(&relay, "joe@example.com", &["r@example.net"], content)
        .await
        .expect("accepted");
    let got = upstream.wait_for(1).await;
    let m = &got[0].content;
    assert_eq!(header(m, "X-SES-CONFIGURATION-SET"), ["transactional"]);
    assert_eq!(
        header(m, "X-SES-MESSAGE-TAGS"),
        ["campaign=spring, team=web"]
    );
    assert_eq!(
        header(m, "X-SES-SOURCE-ARN"),
        ["arn:aws:ses:us-east-1:1:identity/example.com"]
    );
    let (_, rest) = after_prepended(m);
    assert_eq!(
        rest,
        b"From: joe@example.com\r\nX-SES-SOURCE-ARN: arn:aws:ses:us-east-1:1:identity/example.com\r\n\r\nbody\r\n"
    );
    relay.stop().await;
}

#[tokio::test]
async fn set_tags_merge_with_client_tags() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;
    let content =
        b"From: joe+news@example.com\r\nX-SES-MESSAGE-TAGS: campaign=spring\r\n\r\nhi\r\n";
    send(&relay, "joe@example.com", &["r@example.net"], content)
        .await
        .expect("accepted");
    let got = upstream.wait_for(1).await;
    assert_eq!(
        header(&got[0].content, "X-SES-CONFIGURATION-SET"),
        ["marketing"]
    );
    assert_eq!(
        header(&got[0].content, "X-SES-MESSAGE-TAGS"),
        ["campaign=spring, team=growth"]
    );
    relay.stop().await;
}

#[tokio::test]
async fn strip_ses_headers_removes_them_all() {
    let upstream = Capture::start(Script::default()).await;
    let config = standard_config(&upstream.url())
        .replace("[upstream]\n", "[upstream]\nstrip_ses_headers = true\n");
    let relay = Relay::start(&config).await;
    let content = b"From: joe@example.com\r\nX-SES-CONFIGURATION-SET: transactional\r\n\
X-SES-SOURCE-ARN: arn\r\nSubject: s\r\n\r\nX-SES-IN-BODY: stays\r\n";
    send(&relay, "joe@example.com", &["r@example.net"], content)
        .await
        .expect("accepted");
    let got = upstream.wait_for(1).await;
    let (prepended, rest) = after_prepended(&got[0].content);
    assert!(!prepended.contains("X-SES"), "{prepended}");
    assert_eq!(
        rest,
        b"From: joe@example.com\r\nSubject: s\r\n\r\nX-SES-IN-BODY: stays\r\n"
    );
    relay.stop().await;
}

#[tokio::test]
async fn the_envelope_passes_unchanged_and_null_senders_are_relayed() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;
    let mut c = Client::ready(relay.addr).await;
    let reply = c
        .mail(
            "bounces+x@example.com",
            &["a@example.net", "B@Example.NET", "a@example.net"],
            b"From: ann@example.com\r\n\r\nhello\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let reply = c
        .mail(
            "",
            &["dsn@example.net"],
            b"From: mailer-daemon@example.com\r\n\r\nbounce\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let got = upstream.wait_for(2).await;
    assert_eq!(got[0].mail_from, "bounces+x@example.com");
    assert_eq!(
        got[0].rcpt_to,
        ["a@example.net", "B@Example.NET", "a@example.net"]
    );
    assert!(
        !String::from_utf8_lossy(&got[0].content).contains("\tfor <"),
        "no `for` clause with several recipients"
    );
    assert_eq!(got[1].mail_from, "");
    assert_eq!(got[1].rcpt_to, ["dsn@example.net"]);
    relay.stop().await;
}

#[tokio::test]
async fn rejected_messages_are_never_forwarded() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;
    let mut c = Client::ready(relay.addr).await;
    let rows: [(&str, &[u8], &str); 6] = [
        (
            "joe@example.com",
            b"From: someone@unverified.test\r\n\r\nx\r\n",
            "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: someone@unverified.test",
        ),
        (
            "bounce@elsewhere.test",
            b"From: joe@example.com\r\nSender: s@other.test\r\n\r\nx\r\n",
            "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: s@other.test, bounce@elsewhere.test",
        ),
        (
            "a@legacy.example.org",
            b"From: a@legacy.example.org\r\n\r\nx\r\n",
            "554 5.3.0 Configuration Set does not exist: Configuration set <retired> does not exist.",
        ),
        (
            "joe@example.com",
            b"From: joe@example.com\r\nX-SES-CONFIGURATION-SET: nosuch\r\n\r\nx\r\n",
            "554 5.3.0 Configuration Set does not exist: Configuration set <nosuch> does not exist.",
        ),
        (
            "a@quiet.example.com",
            b"From: a@quiet.example.com\r\n\r\nx\r\n",
            "554 5.7.1 Message rejected: Sending paused for this configuration set.",
        ),
        (
            "joe@example.com",
            b"Subject: no from\r\n\r\nx\r\n",
            "554 5.6.0 Transaction failed: Missing required header 'From'.",
        ),
    ];
    for (mail_from, content, expected) in rows {
        assert_eq!(
            c.mail(mail_from, &["r@example.net"], content).await,
            expected
        );
    }
    let bad_tag = c
        .mail(
            "joe@example.com",
            &["r@example.net"],
            b"From: joe@example.com\r\nX-SES-MESSAGE-TAGS: campaign=a b\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(
        bad_tag,
        "554 5.6.0 Transaction failed: Invalid tag value <a b>: only alphanumeric ASCII characters, '_',  '-' , '.', '@' are allowed."
    );
    // The session goes on, and only the good message reaches the upstream.
    let ok = c
        .mail(
            "joe@example.com",
            &["r@example.net"],
            b"From: joe@example.com\r\n\r\nfine\r\n",
        )
        .await;
    assert!(ok.starts_with("250 2.0.0 Ok "), "{ok}");
    let got = upstream.wait_for(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(upstream.messages().len(), 1);
    assert!(got[0].content.ends_with(b"\r\n\r\nfine\r\n"));
    relay.stop().await;
}

#[tokio::test]
async fn dir_upstream_writes_one_file_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outbox");
    let relay = Relay::start(&standard_config(&format!("dir:{}", out.display()))).await;
    let content = b"From: joe@example.com\r\nSubject: to a file\r\n\r\n\xc3\xa9\r\n.\r\n".to_vec();
    // lettre stuffs the lone "." line; the relay unstuffs it.
    let response = send(
        &relay,
        "joe@example.com",
        &["r@example.net", "s@example.net"],
        &content,
    )
    .await
    .expect("accepted");
    let text = response.message().collect::<Vec<_>>().join(" ");
    let id = text.trim_start_matches("2.0.0 Ok ");
    let eml = std::fs::read(out.join(format!("{id}.eml"))).expect("the .eml file");
    let (prepended, rest) = after_prepended(&eml);
    assert_eq!(rest, content.as_slice());
    assert!(prepended.contains("X-SES-CONFIGURATION-SET: marketing\r\n"));
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("{id}.envelope.json"))).unwrap())
            .unwrap();
    assert_eq!(
        envelope,
        serde_json::json!({"mail_from": "joe@example.com", "rcpt_to": ["r@example.net", "s@example.net"]})
    );
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    relay.stop().await;
}
