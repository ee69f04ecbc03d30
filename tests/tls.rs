//! STARTTLS and implicit TLS over real sockets: lettre as the client, trusting a CA the test
//! makes; raw clients for what a polite client never does (pipelining after STARTTLS,
//! plaintext instead of a ClientHello, a handshake that never comes); certificate reload.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Capture, Client, Script, standard_config};
use lettre::address::Envelope;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sesrelay::config::Config;
use sesrelay::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types};

/// A private CA, and leaf pairs it signs.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sesrelay test CA");
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `localhost` and 127.0.0.1 with `serial`, as PEM (cert, key).
    fn leaf(&self, serial: u64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }
}

/// Writes a pair into `dir` as relay.crt / relay.key (by rename, as renewals do).
fn install(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let cert_path = dir.join("relay.crt");
    let key_path = dir.join("relay.key");
    std::fs::write(dir.join("new.crt"), cert).unwrap();
    std::fs::write(dir.join("new.key"), key).unwrap();
    std::fs::rename(dir.join("new.key"), &key_path).unwrap();
    std::fs::rename(dir.join("new.crt"), &cert_path).unwrap();
    (cert_path, key_path)
}

/// A relay in this process with `[tls]` on the pair in `dir`, one plain and one
/// implicit-TLS listener.
struct TlsRelay {
    addr: SocketAddr,
    tls_addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl TlsRelay {
    async fn start(dir: &Path, upstream: &str, server_extra: &str, tls_extra: &str) -> TlsRelay {
        let config = standard_config(upstream).replacen(
            "[server]\n",
            &format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\n\
                 shutdown_timeout = \"2s\"\n{server_extra}\n"
            ),
            1,
        );
        let config = format!(
            "{config}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{tls_extra}\n",
            dir.join("relay.crt").display(),
            dir.join("relay.key").display()
        );
        let config = Config::parse(&config, Path::new("test.toml")).expect("valid config");
        config.check_files().expect("the pair exists");
        let server = Server::bind(config).await.expect("relay binds");
        let addr = server.local_addrs()[0];
        let tls_addr = server.tls_addrs()[0];
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        TlsRelay {
            addr,
            tls_addr,
            stop,
            done,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("relay stops")
            .unwrap();
    }
}

fn outbox(dir: &Path) -> String {
    format!("dir:{}", dir.join("outbox").display())
}

fn envelope() -> Envelope {
    Envelope::new(
        Some("joe@example.com".parse().unwrap()),
        vec!["bob@example.net".parse().unwrap()],
    )
    .unwrap()
}

fn tls_parameters(ca: &Ca) -> TlsParameters {
    TlsParameters::builder("localhost".to_owned())
        .add_root_certificate(Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build_rustls()
        .unwrap()
}

const MESSAGE: &[u8] =
    b"From: joe@example.com\r\nTo: bob@example.net\r\nSubject: tls\r\n\r\nover TLS";

#[tokio::test]
async fn lettre_starttls_and_implicit_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    install(dir.path(), &ca.leaf(1));
    let upstream = Capture::start(Script::default()).await;
    let relay = TlsRelay::start(dir.path(), &upstream.url(), "", "").await;

    let starttls = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(relay.addr.port())
        .tls(Tls::Required(tls_parameters(&ca)))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let reply = starttls.send_raw(&envelope(), MESSAGE).await.unwrap();
    assert_eq!(reply.code().to_string(), "250");

    let implicit = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(relay.tls_addr.port())
        .tls(Tls::Wrapper(tls_parameters(&ca)))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    implicit.send_raw(&envelope(), MESSAGE).await.unwrap();

    let got = upstream.wait_for(2).await;
    for message in &got {
        let received = String::from_utf8_lossy(&message.content);
        assert!(received.contains("with ESMTPS id "), "{received}");
        assert!(
            received.contains("(version=TLSv1.3 cipher=TLS13_"),
            "{received}"
        );
    }

    // The same CA, a client that does not trust it: the handshake fails.
    let untrusted = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(relay.addr.port())
        .tls(Tls::Required(
            TlsParameters::builder("localhost".to_owned())
                .build_rustls()
                .unwrap(),
        ))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    assert!(untrusted.send_raw(&envelope(), MESSAGE).await.is_err());
    relay.stop().await;
}

/// A TLS client handshake over `tcp`, trusting `ca`, for the name `localhost`.
async fn handshake(ca: &Ca, tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
    let name = pki_types::ServerName::try_from("localhost").unwrap();
    TlsConnector::from(ca.client_config())
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// Reads one complete reply from a buffered stream; "" at EOF.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .expect("reply within 10s")
            .unwrap_or(0);
        if n == 0 {
            return lines.join("\n");
        }
        let line = line.trim_end().to_owned();
        let last = line.len() < 4 || line.as_bytes()[3] == b' ';
        lines.push(line);
        if last {
            return lines.join("\n");
        }
    }
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    install(dir.path(), &ca.leaf(1));
    let relay = TlsRelay::start(dir.path(), &outbox(dir.path()), "", "").await;

    let mut plain = BufReader::new(TcpStream::connect(relay.addr).await.unwrap());
    assert!(read_reply(&mut plain).await.starts_with("220 "));
    plain
        .get_mut()
        .write_all(b"EHLO x\r\nSTARTTLS\r\nNOOP\r\n")
        .await
        .unwrap();
    let ehlo = read_reply(&mut plain).await;
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.ends_with("250 STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(read_reply(&mut plain).await, "220 2.0.0 Ready to start TLS");
    let mut tls = BufReader::new(handshake(&ca, plain.into_inner()).await);
    tls.get_mut().write_all(b"EHLO y\r\n").await.unwrap();
    let first = read_reply(&mut tls).await;
    assert!(first.starts_with("250-"), "{first}");
    assert!(!first.contains("STARTTLS"), "{first}");
    assert!(
        !first.starts_with("250 2.0.0 Ok"),
        "NOOP was executed: {first}"
    );
    // A second STARTTLS under TLS is refused as Postfix does.
    tls.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert_eq!(
        read_reply(&mut tls).await,
        "554 5.5.1 Error: TLS already active"
    );
    tls.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    assert_eq!(read_reply(&mut tls).await, "221 2.0.0 Bye");
    relay.stop().await;
}

#[tokio::test]
async fn require_gives_530_before_starttls_and_the_session_starts_over_after() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    install(dir.path(), &ca.leaf(1));
    let relay = TlsRelay::start(dir.path(), &outbox(dir.path()), "", "require = true").await;

    let mut c = Client::ready(relay.addr).await;
    assert_eq!(
        c.cmd("MAIL FROM:<joe@example.com>").await,
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(c.cmd("STARTTLS extra").await.split(' ').next(), Some("501"));
    c.send(b"QUIT\r\n").await;

    let mut plain = BufReader::new(TcpStream::connect(relay.addr).await.unwrap());
    read_reply(&mut plain).await;
    plain.get_mut().write_all(b"EHLO x\r\n").await.unwrap();
    read_reply(&mut plain).await;
    plain.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert_eq!(read_reply(&mut plain).await, "220 2.0.0 Ready to start TLS");
    let mut tls = BufReader::new(handshake(&ca, plain.into_inner()).await);
    // The EHLO from before TLS is forgotten (RFC 3207 4.2).
    tls.get_mut()
        .write_all(b"MAIL FROM:<joe@example.com>\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_reply(&mut tls).await,
        "503 5.5.1 Error: send HELO/EHLO first"
    );
    tls.get_mut()
        .write_all(b"EHLO y\r\nMAIL FROM:<joe@example.com>\r\n")
        .await
        .unwrap();
    read_reply(&mut tls).await;
    assert_eq!(read_reply(&mut tls).await, "250 2.1.0 Ok");
    relay.stop().await;
}

#[tokio::test]
async fn a_handshake_that_never_comes_is_cut_by_idle_timeout_and_plaintext_closes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    install(dir.path(), &ca.leaf(1));
    let relay = TlsRelay::start(dir.path(), &outbox(dir.path()), "idle_timeout = \"1s\"", "").await;

    // STARTTLS, then silence.
    let started = Instant::now();
    let mut c = Client::ready(relay.addr).await;
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    assert!(c.is_closed().await);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // Implicit TLS, and no ClientHello ever.
    let started = Instant::now();
    let mut silent = TcpStream::connect(relay.tls_addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within 5s")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing is sent before the handshake");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Plaintext SMTP instead of a ClientHello: the connection is closed, no command runs.
    let mut plain = BufReader::new(TcpStream::connect(relay.addr).await.unwrap());
    read_reply(&mut plain).await;
    plain.get_mut().write_all(b"EHLO x\r\n").await.unwrap();
    read_reply(&mut plain).await;
    plain.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert_eq!(read_reply(&mut plain).await, "220 2.0.0 Ready to start TLS");
    let _ = plain
        .get_mut()
        .write_all(b"MAIL FROM:<joe@example.com>\r\nNOOP\r\n")
        .await;
    // Whatever comes back is no SMTP reply (at most a TLS alert), then EOF.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest))
        .await
        .expect("the connection is closed")
        .ok();
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("250") && !rest.contains("530"), "{rest:?}");
    relay.stop().await;
}

#[tokio::test]
async fn an_http_request_on_the_smtp_port_closes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    install(dir.path(), &ca.leaf(1));
    let relay = TlsRelay::start(dir.path(), &outbox(dir.path()), "", "").await;
    for request in [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /send HTTP/1.1\r\nHost: x\r\n\r\n",
        "EHLO x\r\nHost: x\r\nNOOP\r\n",
    ] {
        let mut s = TcpStream::connect(relay.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("closed at once")
            .unwrap();
        assert!(!out.contains("250 2.0.0 Ok"), "{request:?}: {out}");
        assert!(!out.contains("500 "), "{request:?}: {out}");
        assert!(out.starts_with("220 "), "{out}");
    }
    relay.stop().await;
}

/// The DER of the certificate the server at `addr` presents (implicit TLS).
async fn served(ca: &Ca, addr: SocketAddr) -> Vec<u8> {
    let tls = handshake(ca, TcpStream::connect(addr).await.unwrap()).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pair: &(String, String)) -> Vec<u8> {
    use pki_types::pem::PemObject;
    pki_types::CertificateDer::from_pem_slice(pair.0.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn certificates_reload_when_their_files_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let first = ca.leaf(1);
    install(dir.path(), &first);
    let relay = TlsRelay::start(dir.path(), &outbox(dir.path()), "", "").await;
    assert_eq!(served(&ca, relay.tls_addr).await, der(&first));

    let second = ca.leaf(2);
    install(dir.path(), &second);
    let deadline = Instant::now() + Duration::from_secs(8);
    while served(&ca, relay.tls_addr).await != der(&second) {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken replacement (a key that is not the certificate's): the old pair stays.
    let (cert3, _) = ca.leaf(3);
    let (_, other_key) = ca.leaf(4);
    install(dir.path(), &(cert3, other_key));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(served(&ca, relay.tls_addr).await, der(&second));
    // And garbage in place of both.
    install(dir.path(), &("junk".to_owned(), "junk".to_owned()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(served(&ca, relay.tls_addr).await, der(&second));
    relay.stop().await;
}

#[test]
fn the_cert_command_writes_a_pair_that_loads() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sesrelay"))
            .args(["cert", "--hostname", "relay.test", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(first.status.success(), "{first:?}");
    let cert = out.join("relay.crt");
    let key = out.join("relay.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&cert)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    // The key is PEM PKCS#8 (the file the command wrote in this test's directory).
    {
        use pki_types::pem::PemObject as _;
        pki_types::PrivatePkcs8KeyDer::from_pem_file(&key).expect("a PKCS#8 key in PEM");
    }
    sesrelay::tls::server_config(&cert, &key).expect("the pair serves");
    // An existing pair is kept unless --force.
    let again = run(&[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = run(&["--force"]);
    assert!(forced.status.success(), "{forced:?}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // `check` loads the pair: it passes with this one, and fails on a key that is not its.
    let config = dir.path().join("sesrelay.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten_tls = [\"127.0.0.1:2465\"]\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
             [upstream]\nurl = \"dir:outbox\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sesrelay"))
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("require = false; implicit TLS on 127.0.0.1:2465"),
        "{text}"
    );
    std::fs::write(&key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot serve"), "{err}");
}

/// The argon2id hash of "example-password" (the shipped config's example user).
const APP_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZZy8ycXBpjzW3l85dieeVw$vK1SwTgfDspKgKcxMzy82TwfDbBKwxY4Ma6WI/yoBY8";

/// TLS and AUTH together, as an app configured for SES's SMTP endpoint sends: lettre with
/// STARTTLS (and with implicit TLS) and AUTH LOGIN against a CA the test makes, from a
/// client outside `trusted_networks`. The trace says `ESMTPSA` and never names the user.
#[tokio::test]
async fn lettre_with_tls_and_auth_like_an_app_configured_for_ses() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    install(dir.path(), &ca.leaf(1));
    let upstream = Capture::start(Script::default()).await;
    let auth = format!(
        "\n[auth]\nusers = [{{ username = \"AKIAEXAMPLE\", password_hash = \"{APP_HASH}\", allowed_senders = [\"example.com\"] }}]\n"
    );
    let relay = TlsRelay::start(
        dir.path(),
        &upstream.url(),
        "trusted_networks = [\"10.0.0.0/8\"]",
        &format!("require = true\n{auth}"),
    )
    .await;
    for (port, tls) in [
        (relay.addr.port(), Tls::Required(tls_parameters(&ca))),
        (relay.tls_addr.port(), Tls::Wrapper(tls_parameters(&ca))),
    ] {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .tls(tls)
            .credentials(Credentials::new(
                "AKIAEXAMPLE".to_owned(),
                "example-password".to_owned(),
            ))
            .authentication(vec![Mechanism::Login])
            .timeout(Some(Duration::from_secs(10)))
            .build();
        let reply = transport.send_raw(&envelope(), MESSAGE).await.unwrap();
        assert_eq!(reply.code().to_string(), "250");
    }
    let got = upstream.wait_for(2).await;
    for message in &got {
        let text = String::from_utf8_lossy(&message.content);
        assert!(text.contains("with ESMTPSA id "), "{text}");
        assert!(!text.contains("AKIAEXAMPLE"), "{text}");
    }

    // Plaintext: AUTH before STARTTLS gets 530 under `require = true`.
    let stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    assert!(read_reply(&mut stream).await.starts_with("220 "));
    stream.get_mut().write_all(b"EHLO c\r\n").await.unwrap();
    let ehlo = read_reply(&mut stream).await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    stream
        .get_mut()
        .write_all(b"AUTH PLAIN AEFLSUFFWEFNUExFAGV4YW1wbGUtcGFzc3dvcmQ=\r\nMAIL FROM:<joe@example.com>\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_reply(&mut stream).await,
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(
        read_reply(&mut stream).await,
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(upstream.messages().len(), 2);
    relay.stop().await;
}
