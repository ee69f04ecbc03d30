//! The admin listener under hostile and careless clients (SPEC 6 and 9): bodies are not read
//! before the signature's head is judged, connections are capped and timed out, shutdown
//! never waits on slow clients (also as the real binary under `ulimit -n 256`), web pages
//! cannot drive the API, and the API refuses names and tags nothing can use.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sesrelay::admin::{self, AdminState, Limits};
use sesrelay::config::{AccessKey, Config};
use sesrelay::relay::Relay;
use sesrelay::server::Server;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

mod common;

use common::peers::{RelayProcess, Running};

const KEY_ID: &str = "AKIDHARDENING";
const SECRET: &str = "hardening-test-secret-0123456789";

/// A config file in a temporary directory: SMTP and admin on port 0, a `dir:` upstream.
fn config_in(dir: &Path, extra: &str) -> Config {
    let text = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
region = "us-east-1"

[admin]
listen = "127.0.0.1:0"
public_url = "http://relay.example.test:8080"

[upstream]
url = "dir:{}"

[identities."example.com"]
verified = true
{extra}"#,
        dir.join("outbox").display()
    );
    let path = dir.join("sesrelay.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).expect("a valid config")
}

/// A relay in this process, as `serve` runs it.
struct Api {
    dir: tempfile::TempDir,
    admin: SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Api {
    async fn start(keys: bool) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path(), "");
        if keys && let Some(admin) = config.admin.as_mut() {
            admin.access_keys = vec![AccessKey {
                id: KEY_ID.to_owned(),
                secret: SECRET.to_owned(),
            }];
        }
        let server = Server::bind(config).await.expect("binds");
        let admin = server.admin_addr().expect("an admin listener");
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        Api {
            dir,
            admin,
            stop,
            done,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), self.done)
            .await
            .expect("stops")
            .unwrap();
    }

    /// Messages the `dir:` upstream holds.
    fn outbox_count(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("outbox")).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .count()
        })
    }

    /// One request with `Connection: close`, Host the listener's address, a JSON body.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.admin,
            body.len()
        );
        exchange(self.admin, request.as_bytes()).await
    }
}

/// Only the admin listener, with explicit bounds.
struct Listener {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Listener {
    async fn start(limits: Limits) -> Listener {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "");
        let relay = Arc::new(Relay::new(config).expect("a relay"));
        let state = AdminState::new(relay).expect("admin state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(admin::serve_with(listener, state, stopped, limits));
        Listener {
            _dir: dir,
            addr,
            stop,
            done,
        }
    }
}

fn short_limits() -> Limits {
    Limits {
        max_connections: 4,
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        large_body_timeout: Duration::from_millis(300),
        shutdown_grace: Duration::from_millis(200),
    }
}

/// A response: status, `x-amzn-ErrorType`, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    code: String,
    body: String,
}

impl Reply {
    fn parse(raw: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let code = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("x-amzn-ErrorType")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        Reply {
            status,
            code,
            body: body.to_owned(),
        }
    }

    fn message(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Sends `request` and reads the response until the server closes (at most 5 s).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    Reply::parse(&read_until_close(&mut stream, Duration::from_secs(5)).await)
}

/// What arrives until the server closes; fails the test after `limit`.
async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server answers and closes in time");
    raw
}

/// Reads one response head and as much body as arrives with it (the connection may stay
/// open).
async fn read_response(stream: &mut TcpStream, limit: Duration) -> Reply {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    tokio::time::timeout(limit, async {
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        // The short error body follows at once.
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
        {
            raw.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a response in time");
    Reply::parse(&raw)
}

// ---------------------------------------------------------------------------------------
// SigV4, signed here the way botocore signs.
// ---------------------------------------------------------------------------------------

fn amz_date(t: SystemTime) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::from(t).format(&format).unwrap()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The `Authorization` value for a request with headers content-type, host, x-amz-date.
fn authorization(method: &str, path: &str, host: &str, date: &str, body: &[u8]) -> String {
    let day = &date[..8];
    let canonical = format!(
        "{method}\n{path}\n\ncontent-type:application/json\nhost:{host}\nx-amz-date:{date}\n\ncontent-type;host;x-amz-date\n{}",
        hex::encode(Sha256::digest(body))
    );
    let scope = format!("{day}/us-east-1/ses/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{SECRET}").as_bytes(), day);
    for part in ["us-east-1", "ses", "aws4_request"] {
        key = hmac(&key, part);
    }
    format!(
        "AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, SignedHeaders=content-type;host;x-amz-date, Signature={}",
        hex::encode(hmac(&key, &to_sign))
    )
}

// ---------------------------------------------------------------------------------------
// Defect 3: the signature's head before the body.
// ---------------------------------------------------------------------------------------

/// The head of a 50 MiB send-email upload, with `extra` header lines.
fn huge_upload_head(addr: SocketAddr, extra: &str) -> String {
    format!(
        "POST /v2/email/outbound-emails HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
        50 * 1024 * 1024
    )
}

/// Sends `head` and 64 KiB of a declared 50 MiB body, then reads the answer without
/// sending more: it can only come before the body was read.
async fn answer_to_partial_upload(addr: SocketAddr, head: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 64 * 1024]).await.unwrap();
    read_response(&mut stream, Duration::from_secs(3)).await
}

#[tokio::test]
async fn unsigned_huge_uploads_are_refused_without_reading_the_body() {
    let api = Api::start(true).await;
    let now = amz_date(SystemTime::now());
    let day = &now[..8];

    let reply = answer_to_partial_upload(api.admin, &huge_upload_head(api.admin, "")).await;
    assert_eq!(
        (reply.status, reply.code.as_str(), reply.message().as_str()),
        (
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token"
        )
    );

    let unknown = format!(
        "X-Amz-Date: {now}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIDOTHER/{day}/us-east-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature={}\r\n",
        "0".repeat(64)
    );
    let reply = answer_to_partial_upload(api.admin, &huge_upload_head(api.admin, &unknown)).await;
    assert_eq!(
        (reply.status, reply.code.as_str()),
        (403, "UnrecognizedClientException")
    );

    let wrong_service = format!(
        "X-Amz-Date: {now}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={KEY_ID}/{day}/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature={}\r\n",
        "0".repeat(64)
    );
    let reply =
        answer_to_partial_upload(api.admin, &huge_upload_head(api.admin, &wrong_service)).await;
    assert_eq!(
        (reply.status, reply.code.as_str()),
        (403, "InvalidSignatureException")
    );

    let old = amz_date(SystemTime::now() - Duration::from_secs(3600));
    let stale = format!(
        "X-Amz-Date: {old}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={KEY_ID}/{}/us-east-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature={}\r\n",
        &old[..8],
        "0".repeat(64)
    );
    let reply = answer_to_partial_upload(api.admin, &huge_upload_head(api.admin, &stale)).await;
    assert_eq!(
        (reply.status, reply.code.as_str()),
        (403, "InvalidSignatureException")
    );
    assert!(
        reply.message().starts_with("Signature expired"),
        "{reply:?}"
    );

    for payload in ["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"] {
        let unsigned = format!(
            "X-Amz-Date: {now}\r\nX-Amz-Content-SHA256: {payload}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={KEY_ID}/{day}/us-east-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature={}\r\n",
            "0".repeat(64)
        );
        let reply =
            answer_to_partial_upload(api.admin, &huge_upload_head(api.admin, &unsigned)).await;
        assert_eq!(
            (reply.status, reply.code.as_str()),
            (403, "InvalidSignatureException"),
            "{payload}"
        );
        assert!(reply.message().contains("signed payload"), "{reply:?}");
    }
    assert_eq!(api.outbox_count(), 0);
    api.stop().await;
}

#[tokio::test]
async fn signed_requests_with_bodies_still_work() {
    let api = Api::start(true).await;
    let body = br#"{"ConfigurationSetName":"signed-set"}"#;
    let path = "/v2/email/configuration-sets";
    let host = api.admin.to_string();
    let date = amz_date(SystemTime::now());
    let auth = authorization("POST", path, &host, &date, body);
    let request = |auth: &str, body: &[u8]| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nX-Amz-Date: {date}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    // The signature over `body` sent with another body: the body is checked once read.
    // (First: the keys live in this process's copy of the configuration, which the first
    // change through the API replaces with the file's.)
    let other = br#"{"ConfigurationSetName":"swapped-set"}"#;
    let reply = exchange(api.admin, &request(&auth, other)).await;
    assert_eq!(
        (reply.status, reply.code.as_str()),
        (403, "InvalidSignatureException")
    );
    let reply = exchange(api.admin, &request(&auth, body)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    api.stop().await;
}

#[tokio::test]
async fn bodies_over_their_route_cap_are_refused_unread() {
    let api = Api::start(false).await;
    // Any operation but send-email: 256 KiB.
    let head = format!(
        "POST /v2/email/configuration-sets HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        api.admin,
        50 * 1024 * 1024
    );
    let reply = answer_to_partial_upload(api.admin, &head).await;
    assert_eq!(
        (reply.status, reply.code.as_str()),
        (413, "RequestEntityTooLarge")
    );
    // send-email: 40 MiB of message as base64 plus 1 MiB; 60 MiB is too much.
    let head = format!(
        "POST /v2/email/outbound-emails HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        api.admin,
        60 * 1024 * 1024
    );
    let reply = answer_to_partial_upload(api.admin, &head).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    // Over the cap without a declared length (chunked): refused once the cap is passed.
    let mut stream = TcpStream::connect(api.admin).await.unwrap();
    let head = format!(
        "POST /v2/email/configuration-sets HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        api.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = [b' '; 64 * 1024];
    for _ in 0..5 {
        let _ = stream.write_all(b"10000\r\n").await;
        let _ = stream.write_all(&chunk).await;
        let _ = stream.write_all(b"\r\n").await;
    }
    let reply = read_response(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    api.stop().await;
}

// ---------------------------------------------------------------------------------------
// Defect 4: connection cap, timeouts, shutdown.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_stalled_head_is_closed_after_the_header_timeout() {
    let listener = Listener::start(short_limits()).await;
    let mut stream = TcpStream::connect(listener.addr).await.unwrap();
    stream
        .write_all(b"GET /v2/email/configuration-sets HTTP/1.1\r\nHost: 127.0.0")
        .await
        .unwrap();
    let started = Instant::now();
    read_until_close(&mut stream, Duration::from_secs(2)).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    // An idle keep-alive connection is closed as well.
    let mut stream = TcpStream::connect(listener.addr).await.unwrap();
    let request = format!(
        "GET /v2/email/configuration-sets HTTP/1.1\r\nHost: {}\r\n\r\n",
        listener.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    read_until_close(&mut stream, Duration::from_secs(2)).await;
    let _ = listener.stop.send(true);
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let listener = Listener::start(short_limits()).await;
    let mut stream = TcpStream::connect(listener.addr).await.unwrap();
    let head = format!(
        "POST /v2/email/configuration-sets HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"Config",
        listener.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, Duration::from_secs(2)).await;
    assert_eq!((reply.status, reply.code.as_str()), (408, "RequestTimeout"));
    let _ = listener.stop.send(true);
}

#[tokio::test]
async fn connections_over_the_cap_get_503_at_once() {
    let limits = Limits {
        header_timeout: Duration::from_millis(600),
        ..short_limits()
    };
    let listener = Listener::start(limits).await;
    let mut stalled = Vec::new();
    for _ in 0..limits.max_connections {
        let mut s = TcpStream::connect(listener.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let request = format!(
        "GET /v2/email/configuration-sets HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        listener.addr
    );
    let started = Instant::now();
    let reply = exchange(listener.addr, request.as_bytes()).await;
    assert_eq!(
        (reply.status, reply.code.as_str()),
        (503, "ServiceUnavailable")
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    // Once the stalled clients are timed out, a slot is free again.
    for s in &mut stalled {
        read_until_close(s, Duration::from_secs(2)).await;
    }
    let reply = exchange(listener.addr, request.as_bytes()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let _ = listener.stop.send(true);
}

#[tokio::test]
async fn shutdown_drops_a_stalled_post_after_the_grace() {
    let limits = Limits {
        body_timeout: Duration::from_secs(60),
        header_timeout: Duration::from_secs(60),
        ..short_limits()
    };
    let listener = Listener::start(limits).await;
    let mut stream = TcpStream::connect(listener.addr).await.unwrap();
    let head = format!(
        "POST /v2/email/configuration-sets HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        listener.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // And an idle keep-alive connection.
    let mut idle = TcpStream::connect(listener.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let _ = listener.stop.send(true);
    tokio::time::timeout(Duration::from_secs(2), listener.done)
        .await
        .expect("the listener stops within its grace")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    read_until_close(&mut stream, Duration::from_secs(1)).await;
    read_until_close(&mut idle, Duration::from_secs(1)).await;
}

/// The `sesrelay` binary under `sh -c 'ulimit -n LIMIT; exec sesrelay serve ...'` on port 0,
/// its stderr drained; the addresses are read from its log.
fn relay_binary(dir: &Path, nofile: Option<u32>) -> (Running, SocketAddr, SocketAddr) {
    let config = dir.join("sesrelay.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_timeout = \"1s\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"dir:{}\"\n",
            dir.join("outbox").display()
        ),
    )
    .unwrap();
    let limit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
    let child = Running::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{limit}exec \"$0\" serve --config \"$1\""))
            .arg(env!("CARGO_BIN_EXE_sesrelay"))
            .arg(&config)
            .stdout(Stdio::null()),
        "sesrelay",
    );
    let wait = Duration::from_secs(15);
    let smtp = child.log.addresses(RelayProcess::SMTP_LINE, 1, wait);
    let admin = child.log.addresses(RelayProcess::ADMIN_LINE, 1, wait);
    assert!(
        smtp.len() == 1 && admin.len() == 1,
        "sesrelay did not report its listeners: {}",
        child.log.text()
    );
    (child, smtp[0], admin[0])
}

/// SIGTERM, then the exit status within `limit`.
fn terminate(child: &mut Running, limit: Duration) -> std::process::ExitStatus {
    child.signal("TERM");
    child
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("sesrelay still runs {limit:?} after SIGTERM"))
}

/// A blocking request with `Connection: close`: the status, or `None` when the
/// connection was closed or reset without one (at most 5 s).
fn blocking_status(addr: SocketAddr, request: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn under_ulimit_256_stalled_admin_clients_never_starve_smtp() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, smtp, admin) = relay_binary(dir.path(), Some(256));
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", child.pid())).unwrap_or_default();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok())
        .collect::<Vec<_>>();
    assert_eq!(open_files, [256, 256], "{limits}");

    let mut stalled = Vec::new();
    for _ in 0..300 {
        if let Ok(mut s) = std::net::TcpStream::connect(admin) {
            let _ = s.write_all(b"POST /v2/email/configuration-sets HTTP/1.1\r\nHost: 127.");
            stalled.push(s);
        }
    }
    assert!(stalled.len() >= 290, "{} connections", stalled.len());
    std::thread::sleep(Duration::from_millis(300));

    let mut s = std::net::TcpStream::connect(smtp).expect("SMTP accepts");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 256];
    let n = s.read(&mut greeting).expect("a greeting");
    let greeting = String::from_utf8_lossy(&greeting[..n]);
    assert!(greeting.starts_with("220 "), "{greeting}");

    let request = format!(
        "GET /v2/email/configuration-sets HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    );
    let status = blocking_status(admin, &request);
    assert!(
        matches!(status, Some(200 | 503)),
        "a fresh admin request got {status:?}"
    );
    let status = terminate(&mut child, Duration::from_secs(3));
    assert!(status.success(), "{status}");
    drop(stalled);
}

#[test]
fn sigterm_with_a_stalled_post_exits_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _smtp, admin) = relay_binary(dir.path(), None);
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.write_all(
        format!(
            "POST /v2/email/configuration-sets HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"Con"
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = terminate(&mut child, Duration::from_secs(3));
    assert!(status.success(), "{status}");
    // shutdown_timeout = 1s: the admin grace is half of it.
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(s);
}

// ---------------------------------------------------------------------------------------
// Defect 5: no cross-site requests, no DNS rebinding.
// ---------------------------------------------------------------------------------------

/// A create-configuration-set request with the given header lines (Host included).
fn create_set_request(name: &str, headers: &str) -> String {
    let body = json!({"ConfigurationSetName": name}).to_string();
    format!(
        "POST /v2/email/configuration-sets HTTP/1.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn bodies_must_be_json() {
    let api = Api::start(false).await;
    let host = format!("Host: {}\r\n", api.admin);
    for content_type in [
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "Content-Type: multipart/form-data; boundary=x\r\n",
        "",
    ] {
        let request = create_set_request("csrf", &format!("{host}{content_type}"));
        let reply = exchange(api.admin, request.as_bytes()).await;
        assert_eq!(
            (reply.status, reply.code.as_str()),
            (415, "BadRequestException"),
            "{content_type:?}"
        );
    }
    let listed = api.call("GET", "/v2/email/configuration-sets", None).await;
    assert!(!listed.body.contains("csrf"), "{listed:?}");
    for (name, content_type) in [
        ("json", "Content-Type: application/json\r\n"),
        (
            "json-charset",
            "Content-Type: Application/JSON; charset=utf-8\r\n",
        ),
        ("amz-json", "Content-Type: application/x-amz-json-1.1\r\n"),
    ] {
        let request = create_set_request(name, &format!("{host}{content_type}"));
        let reply = exchange(api.admin, request.as_bytes()).await;
        assert_eq!(reply.status, 200, "{content_type:?} {reply:?}");
    }
    // The v1 API's form posts to `/` pass when they carry a SigV4 Authorization header
    // (then the access check judges them: without access keys, its form and date), and
    // are refused without one, as AWS refuses an unsigned v1 request (403, in v1's XML).
    let form = "Action=ListIdentities";
    let post = |auth: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            api.admin,
            form.len()
        )
    };
    let reply = exchange(api.admin, post("").as_bytes()).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(
        reply
            .body
            .contains("<Code>MissingAuthenticationToken</Code>"),
        "{reply:?}"
    );
    // A head that is no SigV4 signature (no date, a scope of the wrong day, a signature
    // of one digit) is refused too.
    let reply = exchange(
        api.admin,
        post("Authorization: AWS4-HMAC-SHA256 Credential=x/y/us-east-1/ses/aws4_request, SignedHeaders=host, Signature=0\r\n").as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.body.contains("<Code>IncompleteSignature</Code>"),
        "{reply:?}"
    );
    let (authorization, amz_date) = common::v1_authorization();
    let reply = exchange(
        api.admin,
        post(&format!(
            "Authorization: {authorization}\r\nX-Amz-Date: {amz_date}\r\n"
        ))
        .as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply.body.contains("<ListIdentitiesResponse xmlns="),
        "{reply:?}"
    );
    api.stop().await;
}

#[tokio::test]
async fn foreign_origins_are_refused() {
    let api = Api::start(false).await;
    let host = format!("Host: {}\r\n", api.admin);
    for origin in [
        "http://evil.example",
        "https://127.0.0.1.evil.example",
        "null",
        "http://localhost:1",
    ] {
        let headers = format!("{host}Content-Type: application/json\r\nOrigin: {origin}\r\n");
        let reply = exchange(api.admin, create_set_request("cross", &headers).as_bytes()).await;
        assert_eq!(
            (reply.status, reply.code.as_str()),
            (403, "AccessDeniedException"),
            "{origin}"
        );
    }
    // A GET too: listing is reading.
    let request = format!(
        "GET /v2/email/configuration-sets HTTP/1.1\r\n{host}Origin: http://evil.example\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(exchange(api.admin, request.as_bytes()).await.status, 403);
    // The listener's own origin and public_url's are fine.
    for (name, origin) in [
        ("own", format!("http://{}", api.admin)),
        ("public", "http://relay.example.test:8080".to_owned()),
    ] {
        let headers = format!("{host}Content-Type: application/json\r\nOrigin: {origin}\r\n");
        let reply = exchange(api.admin, create_set_request(name, &headers).as_bytes()).await;
        assert_eq!(reply.status, 200, "{origin} {reply:?}");
    }
    api.stop().await;
}

#[tokio::test]
async fn foreign_hosts_are_refused() {
    let api = Api::start(false).await;
    let get = |host: &str| {
        format!("GET /v2/email/configuration-sets HTTP/1.1\r\n{host}Connection: close\r\n\r\n")
    };
    for host in [
        "Host: evil.example\r\n",
        "Host: evil.example:2580\r\n",
        "Host: localhost.evil.example\r\n",
        "Host: sub.localhost\r\n",
        "Host: 10.1.2.3\r\n",
        "Host: relay.example.test.evil\r\n",
    ] {
        let reply = exchange(api.admin, get(host).as_bytes()).await;
        assert_eq!(
            (reply.status, reply.code.as_str()),
            (403, "AccessDeniedException"),
            "{host:?}"
        );
    }
    // No Host at all (HTTP/1.0).
    let reply = exchange(
        api.admin,
        b"GET /v2/email/configuration-sets HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    // The verification page is behind the same check.
    let reply = exchange(
        api.admin,
        b"GET /verify?token=x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    for host in [
        format!("Host: {}\r\n", api.admin),
        "Host: localhost\r\n".to_owned(),
        "Host: LOCALHOST:9999\r\n".to_owned(),
        "Host: 127.0.0.1\r\n".to_owned(),
        "Host: [::1]:2580\r\n".to_owned(),
        "Host: relay.example.test:8080\r\n".to_owned(),
        "Host: relay.example.test\r\n".to_owned(),
    ] {
        let reply = exchange(api.admin, get(&host).as_bytes()).await;
        assert_eq!(reply.status, 200, "{host:?} {reply:?}");
    }
    api.stop().await;
}

// ---------------------------------------------------------------------------------------
// Defect 11: names and tags nothing can use.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn identities_nothing_can_address_are_refused() {
    let api = Api::start(false).await;
    let long_label = format!("{}.example", "a".repeat(64));
    let long_name = format!("{}.com", ["abcdefghi"; 26].join("."));
    let long_local = format!("{}@example.org", "l".repeat(65));
    for name in [
        "a..b@example.org",
        "example.org.",
        "-bad.example",
        "bad..example",
        ".example.org",
        "joe@example.org.",
        "jo\u{e9}@example.org",
        "joe@1.2.3.4",
        long_label.as_str(),
        long_name.as_str(),
        long_local.as_str(),
    ] {
        let reply = api
            .call(
                "POST",
                "/v2/email/identities",
                Some(&json!({"EmailIdentity": name})),
            )
            .await;
        assert_eq!(
            (reply.status, reply.code.as_str()),
            (400, "BadRequestException"),
            "{name}"
        );
    }
    let listed = api.call("GET", "/v2/email/identities", None).await;
    let listed: Value = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(listed["EmailIdentities"].as_array().map(Vec::len), Some(1));
    let reply = api
        .call(
            "POST",
            "/v2/email/identities",
            Some(&json!({"EmailIdentity": "new.example.org"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    api.stop().await;
}

#[tokio::test]
async fn resource_tags_have_aws_limits() {
    let api = Api::start(false).await;
    let tags = |n: usize, key_len: usize, value_len: usize| -> Value {
        (0..n)
            .map(|i| json!({"Key": format!("{i:0>width$}", width = key_len), "Value": "v".repeat(value_len)}))
            .collect()
    };
    for (what, tags) in [
        ("51 tags", tags(51, 3, 1)),
        ("a 129-character key", tags(1, 129, 1)),
        ("a 257-character value", tags(1, 3, 257)),
        ("an empty key", json!([{"Key": "", "Value": "x"}])),
    ] {
        let reply = api
            .call(
                "POST",
                "/v2/email/configuration-sets",
                Some(&json!({"ConfigurationSetName": "tagged", "Tags": tags})),
            )
            .await;
        assert_eq!(
            (reply.status, reply.code.as_str()),
            (400, "BadRequestException"),
            "{what}"
        );
        let reply = api
            .call(
                "POST",
                "/v2/email/identities",
                Some(&json!({"EmailIdentity": "tagged.example.org", "Tags": tags})),
            )
            .await;
        assert_eq!(reply.status, 400, "{what}");
    }
    let reply = api
        .call(
            "POST",
            "/v2/email/configuration-sets",
            Some(&json!({"ConfigurationSetName": "tagged", "Tags": tags(50, 128, 256)})),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    api.stop().await;
}

#[tokio::test]
async fn send_email_checks_every_address_before_delivery() {
    let api = Api::start(false).await;
    let simple = |from: &str, to: &str| {
        json!({
            "FromEmailAddress": from,
            "Destination": {"ToAddresses": [to]},
            "Content": {"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "Hi"}}}},
        })
    };
    for (from, to) in [
        ("sender@example.com", "j\u{f6}rg@example.net"),
        ("sender@example.com", "a..b@example.net"),
        ("sender@example.com", "rcpt@b\u{fc}cher.example"),
        ("sender@example.com", "rcpt@example.net."),
        ("s\u{e9}nder@example.com", "rcpt@example.net"),
        ("sender..x@example.com", "rcpt@example.net"),
    ] {
        let reply = api
            .call("POST", "/v2/email/outbound-emails", Some(&simple(from, to)))
            .await;
        assert_eq!(
            (reply.status, reply.code.as_str()),
            (400, "BadRequestException"),
            "{from} -> {to}: {reply:?}"
        );
    }
    // Raw content: the addresses come from the message.
    use base64::Engine as _;
    let raw = |from: &str, to: &str| {
        let message = format!("From: {from}\r\nTo: {to}\r\nSubject: x\r\n\r\nbody\r\n");
        json!({"Content": {"Raw": {"Data": base64::engine::general_purpose::STANDARD.encode(message)}}})
    };
    for (from, to) in [
        ("sender@example.com", "j\u{f6}rg@example.net"),
        ("s\u{e9}nder@example.com", "rcpt@example.net"),
    ] {
        let reply = api
            .call("POST", "/v2/email/outbound-emails", Some(&raw(from, to)))
            .await;
        assert_eq!(
            (reply.status, reply.code.as_str()),
            (400, "BadRequestException"),
            "raw {from} -> {to}: {reply:?}"
        );
    }
    assert_eq!(api.outbox_count(), 0);
    let reply = api
        .call(
            "POST",
            "/v2/email/outbound-emails",
            Some(&simple(
                "Sender Name <sender@example.com>",
                "rcpt@example.net",
            )),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(api.outbox_count(), 1);
    api.stop().await;
}
