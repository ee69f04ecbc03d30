//! Test peers: a capturing SMTP upstream written independently of sesrelay's own session
//! code, a raw SMTP client for scripted dialogues, and a relay started on port 0.

#![allow(dead_code)]

pub mod aws;
pub mod events;
pub mod peers;
pub mod python;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sesrelay::config::Config;
use sesrelay::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// A relay running in this process.
pub struct Relay {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts sesrelay on 127.0.0.1:0 with `config` (TOML without `server.listen`). Unless
    /// the config says otherwise, `shutdown_timeout` is 2 s, so that [`Relay::stop`] never
    /// waits long for a session a test left open.
    pub async fn start(config: &str) -> Relay {
        let text = format!("{config}\n");
        let mut server = "[server]\nlisten = [\"127.0.0.1:0\"]".to_owned();
        if !text.contains("shutdown_timeout") {
            server.push_str("\nshutdown_timeout = \"2s\"");
        }
        let text = if text.contains("[server]") {
            text.replacen("[server]", &server, 1)
        } else {
            format!("{server}\n{text}")
        };
        let config = Config::parse(&text, Path::new("test.toml")).expect("test config is valid");
        let server = Server::bind(config).await.expect("relay binds");
        let addr = server.local_addrs()[0];
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        Relay { addr, stop, done }
    }

    /// Signals shutdown and waits for the relay to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("relay stops within 10s")
            .expect("relay task");
    }
}

/// A server of this process started on a configuration as it is (its listeners as the
/// configuration gives them, usually port 0), with what tests reach it by.
pub struct Served {
    pub smtp: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub relay: Arc<sesrelay::relay::Relay>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Binds and runs `config`.
    pub async fn start(config: Config) -> Served {
        let server = Server::bind(config).await.expect("binds");
        let smtp = server.local_addrs()[0];
        let admin = server.admin_addr();
        let relay = Arc::clone(server.relay());
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        Served {
            smtp,
            admin,
            relay,
            stop,
            done,
        }
    }

    /// Binds and runs the configuration file at `path`.
    pub async fn load(path: &Path) -> Served {
        Served::start(Config::load(path).expect("valid config")).await
    }

    /// `http://<admin listener>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.admin.expect("an admin listener"))
    }

    /// Signals shutdown and waits (at most 10 s) for the server to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("stops within 10s")
            .expect("server task");
    }
}

/// The identity table most tests use, with `url` as the upstream.
pub fn standard_config(url: &str) -> String {
    format!(
        r#"
[server]
region = "us-east-1"
max_recipients = 50

[upstream]
url = "{url}"

[configuration_sets.transactional]
[configuration_sets.marketing]
tags = {{ team = "growth" }}
[configuration_sets.paused]
sending_enabled = false

[identities."example.com"]
verified = true
default_configuration_set = "transactional"

[identities."joe@example.com"]
verified = true
default_configuration_set = "marketing"

[identities."legacy.example.org"]
verified = true
default_configuration_set = "retired"

[identities."quiet.example.com"]
verified = true
default_configuration_set = "paused"
"#
    )
}

// ---------------------------------------------------------------------------------------
// The capturing upstream.
// ---------------------------------------------------------------------------------------

/// One transaction the upstream received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The DATA bytes as they came over the wire, dot-stuffed, without the final `.` line.
    pub wire: Vec<u8>,
    /// The message after dot-unstuffing.
    pub content: Vec<u8>,
}

/// How the upstream answers.
#[derive(Debug, Clone)]
pub struct Script {
    /// Replies to RCPT TO for particular addresses (default `250 2.1.5 Ok`).
    pub rcpt: HashMap<String, String>,
    /// Reply after the message (default `250 2.0.0 queued`).
    pub data: String,
    /// Stop answering after the message (to provoke a timeout).
    pub hang_after_data: bool,
    /// Answer the first message only after this delay.
    pub slow_first_reply: Option<Duration>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            rcpt: HashMap::new(),
            data: "250 2.0.0 queued as CAPTURE".to_owned(),
            hang_after_data: false,
            slow_first_reply: None,
        }
    }
}

pub struct Capture {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Captured>>>,
    arrived: Arc<Notify>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Capture {
    pub async fn start(script: Script) -> Capture {
        Capture::start_with(script, None).await
    }

    /// With `tls`, every connection is wrapped in implicit TLS (SMTPS).
    pub async fn start_with(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> Capture {
        Capture::start_on("127.0.0.1:0", script, tls).await
    }

    /// Listening on `addr` (a port a test chose before the upstream was there).
    pub async fn start_on(
        addr: &str,
        script: Script,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Capture {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, n, count) = (
            Arc::clone(&received),
            Arc::clone(&arrived),
            Arc::clone(&connections),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (script, r, n, tls) =
                    (script.clone(), Arc::clone(&r), Arc::clone(&n), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = serve_capture(stream, &script, &r, &n).await;
                            }
                        }
                        None => {
                            let _ = serve_capture(stream, &script, &r, &n).await;
                        }
                    }
                });
            }
        });
        Capture {
            addr,
            received,
            arrived,
            connections,
        }
    }

    /// How many connections the upstream has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    pub fn messages(&self) -> Vec<Captured> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` messages have arrived (at most 10 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Captured> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {n} messages upstream, got {}",
                    self.messages().len()
                );
            }
        }
    }
}

async fn serve_capture<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    script: &Script,
    received: &Mutex<Vec<Captured>>,
    arrived: &Notify,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    stream.write_all(b"220 capture ESMTP\r\n").await?;
    let mut mail_from = String::new();
    let mut rcpt_to = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if stream.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let upper = text.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-capture\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000".to_owned()
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            "250 2.0.0 Ok".to_owned()
        } else if upper.starts_with("RSET") {
            mail_from.clear();
            rcpt_to.clear();
            "250 2.0.0 Ok".to_owned()
        } else if upper.starts_with("MAIL FROM:") {
            mail_from = angle(&text);
            rcpt_to.clear();
            "250 2.1.0 Ok".to_owned()
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = angle(&text);
            match script.rcpt.get(&rcpt) {
                Some(reply) => reply.clone(),
                None => {
                    rcpt_to.push(rcpt);
                    "250 2.1.5 Ok".to_owned()
                }
            }
        } else if upper == "DATA" {
            stream.write_all(b"354 go ahead\r\n").await?;
            let mut wire = Vec::new();
            loop {
                line.clear();
                if stream.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                if line == b".\r\n" {
                    break;
                }
                wire.extend_from_slice(&line);
            }
            let mut content = Vec::with_capacity(wire.len());
            for l in wire.split_inclusive(|&b| b == b'\n') {
                content.extend_from_slice(l.strip_prefix(b".").unwrap_or(l));
            }
            let first = received.lock().unwrap().is_empty();
            received.lock().unwrap().push(Captured {
                mail_from: std::mem::take(&mut mail_from),
                rcpt_to: std::mem::take(&mut rcpt_to),
                wire,
                content,
            });
            arrived.notify_waiters();
            if script.hang_after_data {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if let (true, Some(delay)) = (first, script.slow_first_reply) {
                tokio::time::sleep(delay).await;
            }
            script.data.clone()
        } else if upper.starts_with("QUIT") {
            stream.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.1 not here".to_owned()
        };
        stream.write_all(format!("{reply}\r\n").as_bytes()).await?;
        stream.flush().await?;
    }
}

fn angle(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_owned()
}

// ---------------------------------------------------------------------------------------
// A raw SMTP client, for dialogues no polite client would have.
// ---------------------------------------------------------------------------------------

pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    /// Connects and returns the client with the greeting read.
    pub async fn connect(addr: SocketAddr) -> (Client, String) {
        let stream = TcpStream::connect(addr).await.expect("connect to relay");
        let mut client = Client {
            stream: BufReader::new(stream),
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Connects, reads the greeting and says EHLO.
    pub async fn ready(addr: SocketAddr) -> Client {
        let (mut c, greeting) = Client::connect(addr).await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        let ehlo = c.cmd("EHLO client.test").await;
        assert!(ehlo.starts_with("250"), "{ehlo}");
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("write");
    }

    /// Sends `bytes` if the server still reads; false once it has closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.get_mut().write_all(bytes).await.is_ok()
    }

    /// Reads one complete (possibly multi-line) reply; its lines are joined with "\n".
    /// An empty string means the connection was closed.
    pub async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(15), self.stream.read_line(&mut line))
                .await
                .expect("reply within 15s")
                .expect("read");
            if n == 0 {
                return lines.join("\n");
            }
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            let last = line.len() < 4 || line.as_bytes()[3] == b' ';
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends MAIL, RCPT(s) and DATA, then `content` followed by `.`; returns the final reply.
    pub async fn mail(&mut self, from: &str, to: &[&str], content: &[u8]) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert!(r.starts_with("250"), "MAIL: {r}");
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(r.starts_with("250"), "RCPT: {r}");
        }
        let r = self.cmd("DATA").await;
        assert!(r.starts_with("354"), "DATA: {r}");
        self.send(content).await;
        self.send(b".\r\n").await;
        self.reply().await
    }

    /// True when the server has closed the connection.
    pub async fn is_closed(&mut self) -> bool {
        let mut buf = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_line(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Splits a forwarded message into what sesrelay prepended (`Received:`, always three
/// lines, then the `X-SES-*` lines it added) and the client's message after it.
pub fn after_prepended(content: &[u8]) -> (&str, &[u8]) {
    assert!(
        content.starts_with(b"Received: "),
        "no Received: header first"
    );
    let mut end = 0;
    for (i, line) in content.split_inclusive(|&b| b == b'\n').enumerate() {
        let prepended = i < 3
            || line.starts_with(b"X-SES-CONFIGURATION-SET: ")
            || line.starts_with(b"X-SES-MESSAGE-TAGS: ");
        if !prepended {
            break;
        }
        end += line.len();
    }
    (
        std::str::from_utf8(&content[..end]).expect("prepended headers are UTF-8"),
        &content[end..],
    )
}

/// The values of every header `name` in the header block of `content`, in order.
pub fn header(content: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(content);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
    let prefix = format!("{}:", name.to_ascii_lowercase());
    head.split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// SES v1 (Query) requests made by hand.
// ---------------------------------------------------------------------------------------

/// A well-formed SigV4 head for a v1 request made by hand, dated now: the `Authorization`
/// and `X-Amz-Date` values. Without `[admin] access_keys` the listener takes any such
/// credentials (it checks the form and the date, not the signature).
pub fn v1_authorization() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{}/us-east-1/ses/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, Signature={}",
        &amz_date[..8],
        "0".repeat(64)
    );
    (authorization, amz_date)
}
