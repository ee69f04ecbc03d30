//! SMTP AUTH over real sockets: lettre and a raw client against the relay on loopback
//! (where AUTH is offered without TLS), `trusted_networks` set elsewhere so that loopback
//! clients must authenticate, and a capturing upstream that must see nothing refused.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Capture, Client, Relay, Script, after_prepended, standard_config};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// The argon2id hash of "example-password" (as in config/sesrelay.toml).
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZZy8ycXBpjzW3l85dieeVw$vK1SwTgfDspKgKcxMzy82TwfDbBKwxY4Ma6WI/yoBY8";
const PASSWORD: &str = "example-password";

/// The standard identity table; loopback is not trusted; users `app` (no limit) and
/// `limited` (example.com and joe@example.org only).
async fn relay() -> (Relay, Capture) {
    let upstream = Capture::start(Script::default()).await;
    let config = standard_config(&upstream.url()).replacen(
        "[server]\n",
        "[server]\ntrusted_networks = [\"10.0.0.0/8\"]\n",
        1,
    ) + &format!(
        "\n[auth]\nusers = [\n  {{ username = \"app\", password_hash = \"{HASH}\" }},\n  \
         {{ username = \"limited\", password_hash = \"{HASH}\", \
         allowed_senders = [\"example.com\", \"joe@example.org\"] }},\n]\n"
    );
    (Relay::start(&config).await, upstream)
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn plain(user: &str, password: &str) -> String {
    b64(format!("\0{user}\0{password}").as_bytes())
}

async fn lettre_send(relay: &Relay, mechanism: Mechanism, user: &str, password: &str) -> String {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(relay.addr.port())
        .credentials(Credentials::new(user.into(), password.into()))
        .authentication(vec![mechanism])
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let envelope = Envelope::new(
        Some("ann@example.com".parse().unwrap()),
        vec!["bob@example.net".parse().unwrap()],
    )
    .unwrap();
    match transport
        .send_raw(
            &envelope,
            b"From: ann@example.com\r\nTo: bob@example.net\r\nSubject: s\r\n\r\nbody",
        )
        .await
    {
        Ok(response) => format!(
            "{} {}",
            response.code(),
            response.message().collect::<Vec<_>>().join(" ")
        ),
        Err(e) => format!("error: {e}"),
    }
}

#[tokio::test]
async fn lettre_sends_with_auth_plain_and_login() {
    let (relay, upstream) = relay().await;
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let reply = lettre_send(&relay, mechanism, "app", PASSWORD).await;
        assert!(reply.starts_with("250 2.0.0 Ok "), "{mechanism:?}: {reply}");
    }
    let got = upstream.wait_for(2).await;
    assert_eq!(got.len(), 2);
    for message in &got {
        let (prepended, _) = after_prepended(&message.content);
        assert!(prepended.contains(" with ESMTPA id "), "{prepended}");
        assert!(
            !prepended.contains("app"),
            "the user is never named: {prepended}"
        );
    }
    let reply = lettre_send(&relay, Mechanism::Plain, "app", "wrong").await;
    assert!(reply.contains("535"), "{reply}");
    assert_eq!(upstream.messages().len(), 2);
    relay.stop().await;
}

#[tokio::test]
async fn ehlo_offers_auth_and_mail_needs_it() {
    let (relay, upstream) = relay().await;
    let (mut c, greeting) = Client::connect(relay.addr).await;
    assert!(
        greeting.starts_with("220 "),
        "not refused at connect: {greeting}"
    );
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.ends_with("\n250 AUTH PLAIN LOGIN"), "{ehlo}");
    assert_eq!(
        c.cmd("MAIL FROM:<ann@example.com>").await,
        "530 5.7.0 Authentication required"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("app", PASSWORD)))
            .await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("app", PASSWORD)))
            .await,
        "503 5.5.1 Error: already authenticated"
    );
    let reply = c
        .mail(
            "ann@example.com",
            &["bob@example.net"],
            b"From: ann@example.com\r\n\r\nx\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    assert_eq!(upstream.wait_for(1).await.len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn auth_before_helo_and_during_a_transaction_is_503() {
    let (relay, _upstream) = relay().await;
    let (mut c, _) = Client::connect(relay.addr).await;
    assert_eq!(
        c.cmd("AUTH LOGIN").await,
        "503 5.5.1 Error: send HELO/EHLO first"
    );
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64(b"app")).await, "334 UGFzc3dvcmQ6");
    assert_eq!(
        c.cmd(&b64(PASSWORD.as_bytes())).await,
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(c.cmd("MAIL FROM:<ann@example.com>").await, "250 2.1.0 Ok");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("app", PASSWORD)))
            .await,
        "503 5.5.1 Error: already authenticated"
    );
    relay.stop().await;

    // A trusted client in a transaction, not yet authenticated.
    let upstream = Capture::start(Script::default()).await;
    let hash_config = standard_config(&upstream.url())
        + &format!("\n[auth]\nusers = [{{ username = \"app\", password_hash = \"{HASH}\" }}]\n");
    let relay = Relay::start(&hash_config).await;
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<ann@example.com>").await, "250 2.1.0 Ok");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("app", PASSWORD)))
            .await,
        "503 5.5.1 Error: MAIL transaction in progress"
    );
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 Ok");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("app", PASSWORD)))
            .await,
        "235 2.7.0 Authentication successful"
    );
    relay.stop().await;
}

#[tokio::test]
async fn challenge_forms_cancel_and_broken_responses() {
    let (relay, _upstream) = relay().await;
    let mut c = Client::ready(relay.addr).await;
    // PLAIN without an initial response: an empty challenge.
    assert_eq!(c.cmd("AUTH PLAIN").await, "334 ");
    assert_eq!(c.cmd("*").await, "501 5.7.0 Authentication cancelled");
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd("*").await, "501 5.7.0 Authentication cancelled");
    assert_eq!(c.cmd("AUTH PLAIN").await, "334 ");
    assert_eq!(
        c.cmd("not base64!").await,
        "501 5.5.2 Cannot decode response"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN %%%%").await,
        "501 5.5.2 Cannot decode response"
    );
    assert_eq!(
        c.cmd("AUTH CRAM-MD5").await,
        "504 5.5.4 Unsupported authentication mechanism"
    );
    // LOGIN with the username as initial response.
    assert_eq!(
        c.cmd(&format!("AUTH LOGIN {}", b64(b"app"))).await,
        "334 UGFzc3dvcmQ6"
    );
    assert_eq!(c.cmd("*").await, "501 5.7.0 Authentication cancelled");
    // Still not authenticated; the session goes on.
    assert_eq!(
        c.cmd("MAIL FROM:<ann@example.com>").await,
        "530 5.7.0 Authentication required"
    );
    assert_eq!(c.cmd("AUTH PLAIN").await, "334 ");
    assert_eq!(
        c.cmd(&plain("app", PASSWORD)).await,
        "235 2.7.0 Authentication successful"
    );
    relay.stop().await;
}

#[tokio::test]
async fn nul_bytes_and_invalid_utf8_are_bad_credentials() {
    let (relay, _upstream) = relay().await;
    let mut c = Client::ready(relay.addr).await;
    let started = Instant::now();
    // A NUL inside a LOGIN username: refused at once.
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(
        c.cmd(&b64(b"ap\0p")).await,
        "535 5.7.8 Authentication Credentials Invalid"
    );
    // Invalid UTF-8 in a PLAIN password.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64(b"\0app\0\xff\xfe")))
            .await,
        "535 5.7.8 Authentication Credentials Invalid"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "each failure waits"
    );
    relay.stop().await;
}

#[tokio::test]
async fn wrong_passwords_get_535_and_the_third_421() {
    let (relay, _upstream) = relay().await;
    let mut c = Client::ready(relay.addr).await;
    let started = Instant::now();
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("app", "wrong")))
            .await,
        "535 5.7.8 Authentication Credentials Invalid"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    // An unknown user is answered the same way.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("nobody", PASSWORD)))
            .await,
        "535 5.7.8 Authentication Credentials Invalid"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("app", "wrong again")))
            .await,
        "421 4.7.0 Too many authentication failures, closing connection"
    );
    assert!(c.is_closed().await);
    relay.stop().await;
}

#[tokio::test]
async fn allowed_senders_limit_from_and_the_envelope_sender() {
    let (relay, upstream) = relay().await;
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", plain("limited", PASSWORD)))
            .await,
        "235 2.7.0 Authentication successful"
    );
    // Another From (verified, but not this user's).
    let reply = c
        .mail(
            "ann@example.com",
            &["bob@example.net"],
            b"From: x@example.net\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(
        reply,
        "554 5.7.1 Message rejected: User limited is not authorized to send from x@example.net"
    );
    // A subdomain of an allowed domain as the envelope sender.
    let reply = c
        .mail(
            "bounce@quiet.example.com",
            &["bob@example.net"],
            b"From: ann@example.com\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(
        reply,
        "554 5.7.1 Message rejected: User limited is not authorized to send from bounce@quiet.example.com"
    );
    // Allowed: a listed domain.
    let reply = c
        .mail(
            "ann@example.com",
            &["bob@example.net"],
            b"From: Ann <ANN@example.com>\r\n\r\nx\r\n",
        )
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let got = upstream.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        upstream.messages().len(),
        1,
        "nothing refused reached the upstream"
    );
    assert_eq!(got[0].mail_from, "ann@example.com");
    relay.stop().await;
}

/// The commented-out `[auth]` example of the shipped config loads when uncommented, and
/// its hash is that of the documented example password.
#[test]
fn the_shipped_auth_example_works() {
    let text = std::fs::read_to_string("config/sesrelay.toml").unwrap();
    let start = text.find("# [auth]\n").expect("an [auth] example");
    let example: String = text[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
        .collect();
    let config = sesrelay::config::Config::parse(
        &format!("{text}\n{example}"),
        std::path::Path::new("sesrelay.toml"),
    )
    .expect("the example loads");
    let auth = config.auth.expect("[auth]");
    let user = auth.user("app").expect("user app");
    assert!(sesrelay::password::verify(PASSWORD, &user.password_hash));
    assert_eq!(
        user.allowed_senders.as_deref(),
        Some(&["example.com".to_owned(), "joe@example.org".to_owned()][..])
    );
}
