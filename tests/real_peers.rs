//! Real peers around the real binary: swaks → `sesrelay serve` → Postfix's smtp-sink, and
//! Python's smtplib as a client. `.ci/run` installs swaks and postfix; without them these
//! tests fail and say what to install.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::peers::{RelayProcess, smtp_sink, swaks};
use common::{Capture, Relay, Script, header, standard_config};

/// Starts the sesrelay binary on port 0 with `config` (TOML without server.listen).
fn start_relay(dir: &Path, config: &str) -> (RelayProcess, SocketAddr) {
    let relay = RelayProcess::start_in(dir, config);
    let addr = relay.smtp_addr();
    (relay, addr)
}

/// The dumped messages of smtp-sink in `dir`, waiting until there are `n` of them.
fn dumps(dir: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none_or(|e| e != "toml"))
            .collect();
        files.sort();
        let texts: Vec<String> = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .filter(|t| t.contains("\n\n") || t.contains("\r\n\r\n"))
            .collect();
        if texts.len() >= n || Instant::now() > deadline {
            return texts;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn swaks_to_smtp_sink_through_the_relay() {
    let sink_dir = tempfile::tempdir().unwrap();
    let relay_dir = tempfile::tempdir().unwrap();
    let (_sink, sink_addr) = smtp_sink(sink_dir.path());
    let (_relay, relay_addr) = start_relay(
        relay_dir.path(),
        &standard_config(&format!("smtp://{sink_addr}")),
    );

    // The address default: joe@example.com → marketing, tagged team=growth.
    let out = swaks(
        relay_addr,
        &[
            "--from",
            "joe@example.com",
            "--to",
            "bob@example.net",
            "--header",
            "Subject: smoke",
        ],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    assert!(transcript.contains("<-  250 2.0.0 Ok "), "{transcript}");

    // The header overrides the default; a second header is ignored.
    let out = swaks(
        relay_addr,
        &[
            "--from",
            "ann@example.com",
            "--to",
            "carol@example.net",
            "--add-header",
            "X-SES-CONFIGURATION-SET: transactional",
            "--add-header",
            "X-SES-CONFIGURATION-SET: marketing",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let mut got = dumps(sink_dir.path(), 2);
    assert_eq!(got.len(), 2, "smtp-sink received {} messages", got.len());
    got.sort_by_key(|m| m.contains("bob@example.net"));
    let (carol, bob) = (&got[0], &got[1]);

    // smtp-sink writes LF line endings in its dump files.
    let lines = |m: &str| m.replace("\r\n", "\n");
    let bob = lines(bob);
    assert!(bob.contains("X-Rcpt-Args: <bob@example.net>\n"), "{bob}");
    assert!(bob.contains("X-Mail-Args: <joe@example.com>"), "{bob}");
    assert!(
        bob.contains("\tby sesrelay.local (sesrelay) with ESMTP id "),
        "{bob}"
    );
    assert_eq!(bob.matches("X-SES-CONFIGURATION-SET:").count(), 1, "{bob}");
    assert!(
        bob.contains("\nX-SES-CONFIGURATION-SET: marketing\n"),
        "{bob}"
    );
    assert!(bob.contains("\nX-SES-MESSAGE-TAGS: team=growth\n"), "{bob}");
    assert!(bob.contains("\nSubject: smoke\n"), "{bob}");

    let carol = lines(carol);
    assert_eq!(
        carol.matches("X-SES-CONFIGURATION-SET:").count(),
        1,
        "{carol}"
    );
    assert!(
        carol.contains("\nX-SES-CONFIGURATION-SET: transactional\n"),
        "{carol}"
    );
    assert!(!carol.contains("X-SES-MESSAGE-TAGS"), "{carol}");
}

#[test]
fn swaks_sees_ses_rejections() {
    let relay_dir = tempfile::tempdir().unwrap();
    let out_dir = relay_dir.path().join("outbox");
    let (_relay, relay_addr) = start_relay(
        relay_dir.path(),
        &standard_config(&format!("dir:{}", out_dir.display())),
    );
    let rows = [
        (
            "someone@unverified.test",
            "<** 554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: someone@unverified.test",
        ),
        (
            "a@legacy.example.org",
            "<** 554 5.3.0 Configuration Set does not exist: Configuration set <retired> does not exist.",
        ),
        (
            "a@quiet.example.com",
            "<** 554 5.7.1 Message rejected: Sending paused for this configuration set.",
        ),
    ];
    for (from, expected) in rows {
        let out = swaks(relay_addr, &["--from", from, "--to", "x@example.net"]);
        let transcript = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{transcript}");
        assert!(
            transcript.contains(expected),
            "expected {expected:?} in:\n{transcript}"
        );
    }
    let written = std::fs::read_dir(&out_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "a rejected message was written");
}

#[tokio::test]
async fn python_smtplib_client() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&standard_config(&upstream.url())).await;
    let script = r#"
import smtplib, sys, json
port = int(sys.argv[1])
out = {}
with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
    s.ehlo("python.test")
    out["features"] = sorted(s.esmtp_features)
    msg = "From: joe@example.com\r\nTo: a@example.net\r\nSubject: from python\r\n\r\ncaf\u00e9\r\n.dot line\r\n"
    refused = s.sendmail("joe@example.com", ["a@example.net"], msg.encode("utf-8"), mail_options=["BODY=8BITMIME"])
    out["refused"] = refused
    try:
        s.sendmail("x@nowhere.test", ["a@example.net"], b"From: x@nowhere.test\r\n\r\nx\r\n")
        out["error"] = None
    except smtplib.SMTPDataError as e:
        out["error"] = [e.smtp_code, e.smtp_error.decode()]
print(json.dumps(out))
"#;
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(relay.addr.port().to_string())
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        result["features"],
        serde_json::json!(["8bitmime", "enhancedstatuscodes", "pipelining", "size"])
    );
    assert_eq!(result["refused"], serde_json::json!({}));
    assert_eq!(
        result["error"],
        serde_json::json!([
            554,
            "5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: x@nowhere.test"
        ])
    );
    let got = upstream.wait_for(1).await;
    assert_eq!(
        header(&got[0].content, "X-SES-CONFIGURATION-SET"),
        ["marketing"]
    );
    assert!(
        got[0]
            .content
            .ends_with("\r\n\r\ncafé\r\n.dot line\r\n".as_bytes())
    );
    relay.stop().await;
}

/// swaks with `--auth PLAIN` and `--auth LOGIN` from loopback (AUTH is offered there without
/// TLS), loopback not being in `trusted_networks`: MAIL needs the AUTH.
#[test]
fn swaks_authenticates_with_plain_and_login() {
    // The argon2id hash of "example-password".
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZZy8ycXBpjzW3l85dieeVw$vK1SwTgfDspKgKcxMzy82TwfDbBKwxY4Ma6WI/yoBY8";
    let relay_dir = tempfile::tempdir().unwrap();
    let out_dir = relay_dir.path().join("outbox");
    let config =
        standard_config(&format!("dir:{}", out_dir.display())).replacen(
            "[server]\n",
            "[server]\ntrusted_networks = [\"10.0.0.0/8\"]\n",
            1,
        ) + &format!("\n[auth]\nusers = [{{ username = \"app\", password_hash = \"{HASH}\" }}]\n");
    let (relay, relay_addr) = start_relay(relay_dir.path(), &config);
    let base = ["--from", "ann@example.com", "--to", "bob@example.net"];
    for mechanism in ["PLAIN", "LOGIN"] {
        let mut args = base.to_vec();
        args.extend([
            "--auth",
            mechanism,
            "--auth-user",
            "app",
            "--auth-password",
            "example-password",
        ]);
        let out = swaks(relay_addr, &args);
        let transcript = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mechanism}:\n{transcript}");
        assert!(
            transcript.contains("<~  235 2.7.0 Authentication successful")
                || transcript.contains("<-  235 2.7.0 Authentication successful"),
            "{transcript}"
        );
        assert!(transcript.contains("<-  250 2.0.0 Ok "), "{transcript}");
    }
    // Without AUTH: 530 at MAIL.
    let out = swaks(relay_addr, &base);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        transcript.contains("<** 530 5.7.0 Authentication required"),
        "{transcript}"
    );
    // A wrong password: 535.
    let mut args = base.to_vec();
    args.extend([
        "--auth",
        "LOGIN",
        "--auth-user",
        "app",
        "--auth-password",
        "wrong",
    ]);
    let out = swaks(relay_addr, &args);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        transcript.contains("<** 535 5.7.8 Authentication Credentials Invalid"),
        "{transcript}"
    );

    let written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(written.len(), 2);
    for message in &written {
        assert!(message.contains(" with ESMTPA id "), "{message}");
    }
    let log = relay.log();
    assert!(log.contains("user=app"), "{log}");
    assert!(!log.contains("example-password"), "{log}");
}

#[test]
fn swaks_over_starttls_and_implicit_tls() {
    let sink_dir = tempfile::tempdir().unwrap();
    let relay_dir = tempfile::tempdir().unwrap();
    let (_sink, sink_addr) = smtp_sink(sink_dir.path());
    let certs = relay_dir.path().join("certs");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_sesrelay"))
        .args(["cert", "--hostname", "localhost", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let config = standard_config(&format!("smtp://{sink_addr}")).replacen(
        "[server]\n",
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\n",
        1,
    ) + &format!(
        "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nrequire = true\n",
        certs.join("relay.crt").display(),
        certs.join("relay.key").display()
    );
    let relay = RelayProcess::start_in(relay_dir.path(), &config);
    let tls_addr = relay.process.log.addresses(
        "listening for SMTP over implicit TLS on",
        1,
        Duration::from_secs(10),
    )[0];
    let message = ["--from", "joe@example.com", "--to", "bob@example.net"];

    // Without TLS, require = true refuses MAIL.
    let out = swaks(relay.smtp_addr(), &message);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{transcript}");
    assert!(
        transcript.contains("530 5.7.0 Must issue a STARTTLS command first"),
        "{transcript}"
    );

    // swaks does not verify the certificate unless told to.
    let out = swaks(relay.smtp_addr(), &[&message[..], &["--tls"]].concat());
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(
        transcript.contains("<-  220 2.0.0 Ready to start TLS"),
        "{transcript}"
    );
    assert!(transcript.contains("<~  250 2.0.0 Ok "), "{transcript}");

    let out = swaks(tls_addr, &[&message[..], &["--tlsc"]].concat());
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    assert!(transcript.contains("<~  250 2.0.0 Ok "), "{transcript}");

    let got = dumps(sink_dir.path(), 2);
    assert_eq!(got.len(), 2, "smtp-sink received {} messages", got.len());
    for m in &got {
        assert!(m.contains(" with ESMTPS id "), "{m}");
        assert!(m.contains("(version=TLSv1."), "{m}");
    }
}
