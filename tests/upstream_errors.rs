//! What a client sees when the upstream refuses, defers, is unreachable or too slow, and
//! the implicit-TLS (smtps://) upstream.

mod common;

use std::sync::Arc;

use common::{Capture, Client, Relay, Script, standard_config};

const MESSAGE: &[u8] = b"From: joe@example.com\r\nSubject: x\r\n\r\nbody\r\n";

async fn one_message(relay: &Relay, to: &[&str]) -> String {
    let mut c = Client::ready(relay.addr).await;
    c.mail("joe@example.com", to, MESSAGE).await
}

/// The client's reply to DATA when the upstream answers the message with `upstream_reply`.
async fn client_reply_when_upstream_says(upstream_reply: &str) -> String {
    let upstream = Capture::start(Script {
        data: upstream_reply.into(),
        ..Script::default()
    })
    .await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;
    let reply = one_message(&relay, &["a@example.net"]).await;
    relay.stop().await;
    reply
}

#[tokio::test]
async fn upstream_refusals_pass_through() {
    let rows = [
        // permanent
        (
            "554 5.7.1 Message rejected: upstream says no",
            "554 5.7.1 Message rejected: upstream says no",
        ),
        // transient stays transient
        ("451 4.3.0 Try again later", "451 4.3.0 Try again later"),
        // without an enhanced code, the class default is added
        ("550 mailbox unavailable", "550 5.0.0 mailbox unavailable"),
        ("452 too busy", "452 4.0.0 too busy"),
    ];
    for (upstream_reply, client_reply) in rows {
        assert_eq!(
            client_reply_when_upstream_says(upstream_reply).await,
            client_reply
        );
    }
}

#[tokio::test]
async fn one_refused_recipient_fails_the_whole_message() {
    let mut script = Script::default();
    script.rcpt.insert(
        "gone@example.net".into(),
        "550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown".into(),
    );
    let upstream = Capture::start(script).await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;
    assert_eq!(
        one_message(&relay, &["a@example.net", "gone@example.net"]).await,
        "550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown"
    );
    // Nothing was half-forwarded: the upstream saw no DATA.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(upstream.messages().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_451() {
    // A port that was just free: nothing listens there.
    let port = common::peers::free_port();
    let relay = Relay::start(&standard_config(&format!("smtp://127.0.0.1:{port}"))).await;
    assert_eq!(
        one_message(&relay, &["a@example.net"]).await,
        "451 4.4.1 Upstream unavailable, try again later"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_silent_upstream_times_out_with_451() {
    let upstream = Capture::start(Script {
        hang_after_data: true,
        ..Script::default()
    })
    .await;
    let config =
        standard_config(&upstream.url()).replace("[upstream]\n", "[upstream]\ntimeout = \"1s\"\n");
    let relay = Relay::start(&config).await;
    assert_eq!(
        one_message(&relay, &["a@example.net"]).await,
        "451 4.4.1 Upstream unavailable, try again later"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_timed_out_connection_is_never_reused() {
    // The first reply comes late: the relay has given up and must not read it as the
    // answer to anything else.
    let upstream = Capture::start(Script {
        slow_first_reply: Some(std::time::Duration::from_secs(2)),
        data: "250 2.0.0 queued".into(),
        ..Script::default()
    })
    .await;
    let config =
        standard_config(&upstream.url()).replace("[upstream]\n", "[upstream]\ntimeout = \"1s\"\n");
    let relay = Relay::start(&config).await;
    assert_eq!(
        one_message(&relay, &["a@example.net"]).await,
        "451 4.4.1 Upstream unavailable, try again later"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut c = Client::ready(relay.addr).await;
    for i in 0..3 {
        let reply = c
            .mail("joe@example.com", &[&format!("r{i}@example.net")], MESSAGE)
            .await;
        assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    }
    let got = upstream.wait_for(4).await;
    let rcpts: Vec<&str> = got.iter().map(|m| m.rcpt_to[0].as_str()).collect();
    assert_eq!(
        rcpts,
        [
            "a@example.net",
            "r0@example.net",
            "r1@example.net",
            "r2@example.net"
        ]
    );
    // One connection for the abandoned message, one (pooled) for the three after it.
    assert_eq!(upstream.connections(), 2);
    relay.stop().await;
}

#[tokio::test]
async fn smtps_upstream_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(
        {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p
        },
        rcgen::KeyPair::generate().unwrap(),
    )
    .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();

    let server_config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let upstream = Capture::start_with(Script::default(), Some(acceptor)).await;

    let url = format!("smtps://127.0.0.1:{}", upstream.addr.port());
    let config = standard_config(&url).replace(
        "[upstream]\n",
        &format!("[upstream]\nca_file = \"{}\"\n", ca_path.display()),
    );
    let relay = Relay::start(&config).await;
    let reply = one_message(&relay, &["a@example.net"]).await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let got = upstream.wait_for(1).await;
    assert!(got[0].content.ends_with(MESSAGE));
    relay.stop().await;

    // Without the CA the certificate is not trusted: the upstream is unavailable.
    let relay = Relay::start(&standard_config(&url)).await;
    assert_eq!(
        one_message(&relay, &["a@example.net"]).await,
        "451 4.4.1 Upstream unavailable, try again later"
    );
    relay.stop().await;
}
