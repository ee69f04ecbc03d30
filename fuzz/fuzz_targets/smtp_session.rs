//! A whole SMTP session (`smtp::session::run`, SPEC 3): arbitrary client bytes in, replies
//! out, against an in-memory handler that accepts every message.
//!
//! Input: one control byte (the pipe's buffer size, the session limits, `[auth]`, an
//! untrusted peer), a second one for TLS (`[tls] require`, a certificate for STARTTLS),
//! then the bytes the client sends before it closes its half of the connection. Checks:
//! - no panic, and the session ends (the clock is virtual: a timeout costs no real time);
//! - every reply line is ASCII, at most 512 octets with its CRLF, no CR or LF inside, and
//!   has the form `NNN[ -]text`; the lines of one multi-line reply share their code;
//! - the first reply is the 220 greeting; the output ends with a complete line;
//! - after `220 2.0.0 Ready to start TLS` only TLS records follow (the bytes the client
//!   pipelined after STARTTLS are never answered in plaintext);
//! - what the handler gets respects the limits: recipients, size, CRLF lines;
//! - with `[auth]` and an untrusted peer, only an authenticated client's message gets
//!   through (AUTH PLAIN/LOGIN as "app" with password "secret" is reachable).
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sesrelay::smtp::{Handler, Reply, SessionConfig, Transaction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_REPLY_LINE: usize = 512;

struct Recorder {
    config: Arc<SessionConfig>,
    /// (recipients, content size, content has only CRLF line ends, authenticated user)
    got: Mutex<Vec<(usize, usize, bool, Option<String>)>>,
}

impl Handler for Recorder {
    fn session_config(&self) -> Arc<SessionConfig> {
        Arc::clone(&self.config)
    }
    fn check_sender(&self, _address: &str) -> Result<(), Reply> {
        Ok(())
    }
    fn check_recipient(&self, _address: &str) -> Result<(), Reply> {
        Ok(())
    }
    async fn deliver(&self, transaction: Transaction) -> Reply {
        let content: &[u8] = transaction.content.as_ref();
        let crlf_only = content
            .iter()
            .enumerate()
            .all(|(i, &b)| b != b'\n' || (i > 0 && content[i - 1] == b'\r'));
        self.got.lock().unwrap().push((
            transaction.rcpt_to.len(),
            content.len(),
            crlf_only,
            transaction.auth_user.clone(),
        ));
        Reply::new(250, "2.0.0", "Ok queued")
    }
    async fn authenticate(&self, username: &str, password: &str) -> bool {
        username == "app" && password == "secret"
    }
}

/// Checks the whole reply stream; panics with the offending line.
fn check_replies(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    assert!(out.ends_with(b"\r\n"), "the output ends inside a line");
    let lines: Vec<&[u8]> = out[..out.len() - 2].split(|&b| b == b'\n').collect();
    let mut continued: Option<&[u8]> = None;
    for (i, line) in lines.iter().enumerate() {
        let text = String::from_utf8_lossy(line);
        // Every piece but the last still has the CR of its CRLF.
        let line = if i + 1 < lines.len() {
            line.strip_suffix(b"\r")
                .unwrap_or_else(|| panic!("line {i} ends in a bare LF: {text:?}"))
        } else {
            line
        };
        assert!(
            line.len() + 2 <= MAX_REPLY_LINE,
            "line {i} is {} octets",
            line.len() + 2
        );
        assert!(line.is_ascii(), "line {i} is not ASCII: {text:?}");
        assert!(
            !line.contains(&b'\r') && !line.contains(&0),
            "line {i} has a CR or NUL inside: {text:?}"
        );
        assert!(
            line.len() >= 3 && line[..3].iter().all(u8::is_ascii_digit),
            "line {i} has no reply code: {text:?}"
        );
        assert!(
            (b'2'..=b'5').contains(&line[0]) && line[1] <= b'5',
            "line {i} has no valid reply code: {text:?}"
        );
        let sep = line.get(3).copied();
        assert!(
            matches!(sep, None | Some(b' ' | b'-')),
            "line {i} has no space or hyphen after its code: {text:?}"
        );
        if let Some(code) = continued {
            assert_eq!(
                code,
                &line[..3],
                "line {i} changes code inside a reply: {text:?}"
            );
        }
        continued = (sep == Some(b'-')).then(|| &line[..3]);
        if i == 0 {
            assert!(
                line.starts_with(b"220"),
                "the first reply is not 220: {text:?}"
            );
        }
    }
    assert!(continued.is_none(), "the last reply is unfinished");
}

const READY_FOR_TLS: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";

/// The reply stream up to and including `220 Ready to start TLS`; what follows must be TLS
/// records (content types 20 to 23), never a plaintext reply.
fn split_at_starttls(out: &[u8]) -> &[u8] {
    let Some(at) = out
        .windows(READY_FOR_TLS.len())
        .position(|w| w == READY_FOR_TLS)
    else {
        return out;
    };
    let (smtp, tls) = out.split_at(at + READY_FOR_TLS.len());
    if let Some(&first) = tls.first() {
        assert!(
            (20..=23).contains(&first),
            "plaintext after STARTTLS: {:?}",
            String::from_utf8_lossy(tls)
        );
    }
    smtp
}

/// A self-signed certificate for STARTTLS, made once per process.
fn certificate() -> Option<Arc<sesrelay::tls::Tls>> {
    static TLS: std::sync::OnceLock<Option<Arc<sesrelay::tls::Tls>>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let (cert, key) = sesrelay::tls::self_signed("fuzz.example").ok()?;
        let dir = std::env::temp_dir().join(format!("sesrelay-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let (cert_path, key_path) = (dir.join("relay.crt"), dir.join("relay.key"));
        std::fs::write(&cert_path, cert).ok()?;
        std::fs::write(&key_path, key).ok()?;
        sesrelay::tls::Tls::load(&cert_path, &key_path).ok()
    })
    .clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    // A second control byte for TLS: 0x01 `[tls] require`, 0x02 a certificate (STARTTLS).
    let Some((&tls_control, client_bytes)) = rest.split_first() else {
        return;
    };
    let pipe_size = 1 << (4 + (control & 0x07)); // 16 .. 2048 octets per read
    let max_message_size = if control & 0x08 == 0 { 1 << 20 } else { 64 };
    let max_recipients = if control & 0x10 == 0 { 50 } else { 2 };
    let auth_enabled = control & 0x40 != 0;
    // Untrusted (with `[auth]` only, else the peer is refused at connect): the loopback
    // peer must AUTH before MAIL.
    let untrusted = auth_enabled && control & 0x80 != 0;
    let handler = Recorder {
        config: Arc::new(SessionConfig {
            hostname: "fuzz.example".to_owned(),
            max_message_size,
            max_recipients,
            idle_timeout: Duration::from_secs(5),
            trusted_networks: vec![
                if untrusted {
                    "10.0.0.0/8"
                } else {
                    "127.0.0.0/8"
                }
                .parse()
                .unwrap(),
            ],
            auth_enabled,
            auth_failure_delay: Duration::from_millis(300),
            // `[tls] require`: MAIL before STARTTLS gets 530 (STARTTLS 502 without a
            // certificate).
            require_tls: tls_control & 0x01 != 0,
        }),
        got: Mutex::new(Vec::new()),
    };
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();

    let output = runtime().block_on(async {
        let (client, server) = tokio::io::duplex(pipe_size);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        // A small budget, so that the 452 path is taken too.
        let budget =
            sesrelay::smtp::InflightBudget::new(if control & 0x20 == 0 { 1 << 22 } else { 100 });
        let (_lifecycle, mut context) = sesrelay::smtp::session::Context::new(budget);
        if tls_control & 0x02 != 0 {
            context.tls = certificate();
        }
        let session = sesrelay::smtp::session::run(server, peer, &handler, context);
        let write = async {
            // The session may close first (QUIT, too many errors): a broken pipe is fine.
            let _ = to_server.write_all(client_bytes).await;
            let _ = to_server.shutdown().await;
        };
        let read = async {
            let mut out = Vec::new();
            let _ = from_server.read_to_end(&mut out).await;
            out
        };
        let bounded = tokio::time::timeout(Duration::from_secs(3600), async {
            let (_, _, out) = tokio::join!(session, write, read);
            out
        });
        bounded.await.expect("the session did not end")
    });

    check_replies(split_at_starttls(&output));
    for (recipients, size, crlf_only, user) in handler.got.lock().unwrap().iter() {
        let (recipients, size, crlf_only) = (*recipients, *size, *crlf_only);
        if untrusted {
            assert_eq!(
                user.as_deref(),
                Some("app"),
                "an untrusted peer sent without AUTH"
            );
        }
        if !auth_enabled {
            assert!(user.is_none(), "AUTH succeeded without [auth]");
        }
        assert!(
            recipients >= 1 && recipients <= max_recipients,
            "{recipients} recipients"
        );
        assert!(
            size <= max_message_size,
            "a message of {size} octets passed the cap"
        );
        assert!(crlf_only, "a message with a bare LF reached the handler");
    }
});
