//! The SMTP upstream: a small SMTP client of sesrelay's own, with a pool of idle
//! connections.
//!
//! Why not lettre's client (lettre still builds the API's Simple messages): a relay must
//! know, for every reply it reads, which command it answers. lettre reads replies through a
//! buffered reader it does not expose, so an upstream that sends one unsolicited line
//! leaves it in that buffer, and the next message on the connection reads the previous
//! one's replies (a 554 taken for a 250: mail lost). Here the client owns its read buffer:
//! a reply that does not fit the command (a 250 where 354 is due), or any byte left unread
//! after the last expected reply, marks the connection broken, and a parked connection is
//! polled for stray input before it is reused. The client also streams the message: the
//! parts of [`Forwarded`] are dot-stuffed through one 64 KiB buffer, never copied whole.
//!
//! Each delivery is bounded by `upstream.timeout` from outside: the connection belongs to
//! the delivery's future, so a timed-out delivery drops (closes) it, and only a connection
//! that finished a transaction cleanly goes back to the pool.
//!
//! sesrelay opens the TCP connection itself with TCP_NODELAY (the final `.` would
//! otherwise wait for the upstream's delayed ACK, some 40 ms a message). TLS is
//! tokio-rustls: implicit (`smtps://`) or STARTTLS, trusting Mozilla's roots plus `ca_file`.
//! MAIL and RCPT are pipelined when the upstream offers PIPELINING; DATA waits for their
//! replies, so a refused recipient never leaves a half-sent message. A recipient the
//! upstream refuses fails the whole message, with that reply.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::{
    DeliveryError, Envelope, UpstreamError, UpstreamSettings, UpstreamTarget, UpstreamTls,
};
use crate::message::Forwarded;

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;
/// A parked connection older than this is closed rather than reused.
const MAX_IDLE_TIME: Duration = Duration::from_secs(60);
/// A parked connection idle longer than this must answer NOOP before it is used.
const NOOP_AFTER: Duration = Duration::from_secs(2);
/// Longest reply line and whole reply accepted from the upstream.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY: usize = 64 * 1024;
/// The dot-stuffing buffer.
const WRITE_CHUNK: usize = 64 * 1024;
/// How long a probe waits for the upstream's answer to its QUIT.
const QUIT_WAIT: Duration = Duration::from_secs(1);

/// A byte stream to the upstream: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct SmtpUpstream {
    host: String,
    port: u16,
    tls: UpstreamTls,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    hello: String,
    credentials: Option<(String, String)>,
    timeout: Duration,
    idle: Mutex<Vec<(Connection, Instant)>>,
}

impl std::fmt::Debug for SmtpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUpstream")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl SmtpUpstream {
    pub fn new(settings: &UpstreamSettings) -> Result<SmtpUpstream, UpstreamError> {
        let UpstreamTarget::Smtp { host, port, tls } = &settings.target else {
            return Err(UpstreamError::Tls(
                "an SMTP upstream needs an smtp:// or smtps:// URL".to_owned(),
            ));
        };
        let extra_roots = match &settings.ca_file {
            Some(path) => std::fs::read(path).map_err(|source| UpstreamError::CaFile {
                path: path.display().to_string(),
                source,
            })?,
            None => Vec::new(),
        };
        let tls_error = |e: &dyn std::fmt::Display| UpstreamError::Tls(e.to_string());
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in CertificateDer::pem_slice_iter(&extra_roots) {
            let cert = cert.map_err(|e| tls_error(&e))?;
            roots.add(cert).map_err(|e| tls_error(&e))?;
        }
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server_name = ServerName::try_from(host.clone()).map_err(|e| tls_error(&e))?;
        Ok(SmtpUpstream {
            host: host.clone(),
            port: *port,
            tls: *tls,
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            hello: settings.hello_name.clone(),
            credentials: settings.credentials.clone(),
            timeout: settings.timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub async fn deliver(
        &self,
        envelope: &Envelope,
        message: Forwarded,
    ) -> Result<String, DeliveryError> {
        let transaction = async {
            let mut conn = self.checkout().await?;
            let result = conn.transaction(envelope, &message).await;
            match &result {
                // A clean end (accepted or refused by the upstream): reusable when nothing
                // unread is left.
                Ok(_) | Err(DeliveryError::Refused { .. }) if conn.is_clean() => self.park(conn),
                _ => {}
            }
            result
        };
        match tokio::time::timeout(self.timeout, transaction).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Unavailable(format!(
                "no answer within upstream.timeout ({})",
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    /// Checks that the upstream can be reached as a delivery would reach it: a new
    /// connection (implicit TLS, STARTTLS and AUTH as configured) and its EHLO, then QUIT;
    /// all within `limit` (and `upstream.timeout`). No message is sent and the pool is left
    /// alone.
    pub async fn probe(&self, limit: Duration) -> Result<(), DeliveryError> {
        let limit = limit.min(self.timeout);
        let mut conn = match tokio::time::timeout(limit, self.connect()).await {
            Ok(connected) => connected?,
            Err(_) => {
                return Err(DeliveryError::Unavailable(format!(
                    "no answer from {}:{} within {}",
                    self.host,
                    self.port,
                    humantime::format_duration(limit)
                )));
            }
        };
        // A polite goodbye; whether the upstream answers it no longer matters.
        let _ = tokio::time::timeout(QUIT_WAIT, async {
            if conn.command("QUIT").await.is_ok() {
                let _ = conn.read_reply().await;
            }
        })
        .await;
        Ok(())
    }

    /// A parked connection that is still in step, or a new one.
    async fn checkout(&self) -> Result<Connection, DeliveryError> {
        loop {
            let parked = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((mut conn, since)) = parked else {
                return self.connect().await;
            };
            if since.elapsed() >= MAX_IDLE_TIME || conn.has_stray_input() {
                continue; // dropped: closed
            }
            if since.elapsed() >= NOOP_AFTER && conn.noop().await.is_err() {
                continue;
            }
            return Ok(conn);
        }
    }

    fn park(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
        // Beyond MAX_IDLE the connection is dropped, which closes it.
    }

    /// Connects (TCP_NODELAY), greets, upgrades to TLS as configured, authenticates.
    async fn connect(&self) -> Result<Connection, DeliveryError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            DeliveryError::Unavailable(format!("{what} {}:{}: {e}", self.host, self.port))
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unavailable("cannot connect to", &e))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if self.tls == UpstreamTls::Wrapper {
            let tls = self
                .connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| unavailable("TLS with", &e))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut conn = Connection::new(stream);
        conn.expect(&[220]).await?;
        conn.ehlo(&self.hello).await?;
        let starttls = match self.tls {
            UpstreamTls::Required => true,
            UpstreamTls::Opportunistic => conn.extensions.starttls,
            UpstreamTls::None | UpstreamTls::Wrapper => false,
        };
        if starttls {
            conn.command("STARTTLS").await?;
            conn.expect(&[220]).await?;
            if !conn.read_buf.is_empty() {
                // Bytes sent before the TLS handshake would be taken as sent within it.
                return Err(DeliveryError::Unavailable(
                    "the upstream sent data after its STARTTLS reply".to_owned(),
                ));
            }
            let Connection { stream, .. } = conn;
            let tls = self
                .connector
                .connect(self.server_name.clone(), stream)
                .await
                .map_err(|e| unavailable("STARTTLS with", &e))?;
            conn = Connection::new(Box::new(tls));
            conn.ehlo(&self.hello).await?;
        }
        if let Some((user, password)) = &self.credentials {
            conn.auth(user, password).await?;
        }
        Ok(conn)
    }
}

/// What the upstream's EHLO reply offered.
#[derive(Debug, Default, Clone)]
struct Extensions {
    starttls: bool,
    pipelining: bool,
    eight_bit_mime: bool,
    auth_plain: bool,
    auth_login: bool,
}

/// One reply from the upstream.
#[derive(Debug, Clone)]
struct ServerReply {
    code: u16,
    /// The lines' texts, without the code.
    lines: Vec<String>,
}

impl ServerReply {
    /// The text as one line: the lines joined by spaces, an enhanced code repeated on
    /// every line given once.
    fn text(&self) -> String {
        let first_code = self.lines.first().and_then(|l| l.split(' ').next());
        let mut text = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            let mut line = line.as_str();
            if i > 0 {
                text.push(' ');
                if let Some(code) = first_code
                    && code.contains('.')
                    && let Some(rest) = line.strip_prefix(code)
                {
                    line = rest.trim_start();
                }
            }
            text.push_str(line);
        }
        text
    }

    fn refused(&self) -> DeliveryError {
        DeliveryError::Refused {
            code: self.code,
            text: self.text(),
        }
    }
}

/// One connection to the upstream, with the bytes read and not yet consumed.
struct Connection {
    stream: Box<dyn Io>,
    read_buf: Vec<u8>,
    extensions: Extensions,
    /// Set when the connection cannot be trusted to be in step any more.
    broken: bool,
}

impl Connection {
    fn new(stream: Box<dyn Io>) -> Connection {
        Connection {
            stream,
            read_buf: Vec::with_capacity(1024),
            extensions: Extensions::default(),
            broken: false,
        }
    }

    /// In step, with nothing read that no command asked for.
    fn is_clean(&self) -> bool {
        !self.broken && self.read_buf.is_empty()
    }

    /// True when the upstream has sent something (or closed) while the connection was
    /// parked: a reply no command asked for.
    fn has_stray_input(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return true;
        }
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        // Data, the end of the stream or an error: not reusable.
        Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut buf)
            .is_ready()
    }

    fn broken(&mut self, why: impl Into<String>) -> DeliveryError {
        self.broken = true;
        DeliveryError::Unavailable(why.into())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), DeliveryError> {
        let result = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        }
        .await;
        result.map_err(|e| self.broken(format!("write to the upstream failed: {e}")))
    }

    async fn command(&mut self, line: &str) -> Result<(), DeliveryError> {
        self.write(format!("{line}\r\n").as_bytes()).await
    }

    /// Reads one whole reply (all its lines).
    async fn read_reply(&mut self) -> Result<ServerReply, DeliveryError> {
        let mut code = None;
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.read_line().await?;
            total += line.len();
            if total > MAX_REPLY {
                return Err(self.broken("the upstream's reply is too long"));
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let digits = text
                .get(..3)
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
            let (Some(digits), sep) = (digits, text.as_bytes().get(3).copied()) else {
                return Err(self.broken(format!("not an SMTP reply: {text:?}")));
            };
            let this: u16 = digits.parse().unwrap_or(0);
            if !(200..600).contains(&this) || code.is_some_and(|c| c != this) {
                return Err(self.broken(format!("not an SMTP reply: {text:?}")));
            }
            code = Some(this);
            lines.push(text.get(4..).unwrap_or("").to_owned());
            match sep {
                None | Some(b' ') => {
                    return Ok(ServerReply { code: this, lines });
                }
                Some(b'-') => {}
                Some(_) => return Err(self.broken(format!("not an SMTP reply: {text:?}"))),
            }
        }
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, DeliveryError> {
        loop {
            if let Some(i) = self.read_buf.iter().position(|&b| b == b'\n') {
                return Ok(self.read_buf.drain(..=i).collect());
            }
            if self.read_buf.len() > MAX_REPLY_LINE {
                return Err(self.broken("the upstream's reply line is too long"));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) => return Err(self.broken("the upstream closed the connection")),
                Ok(n) => self.read_buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(self.broken(format!("read from the upstream failed: {e}"))),
            }
        }
    }

    /// Reads a reply that must have one of `codes`; a refusal (4xx/5xx) is `Refused`, any
    /// other reply breaks the connection.
    async fn expect(&mut self, codes: &[u16]) -> Result<ServerReply, DeliveryError> {
        let reply = self.read_reply().await?;
        if codes.contains(&reply.code) {
            Ok(reply)
        } else if reply.code >= 400 {
            Err(reply.refused())
        } else {
            Err(self.broken(format!(
                "the upstream answered {} where {codes:?} was due",
                reply.code
            )))
        }
    }

    async fn ehlo(&mut self, hello: &str) -> Result<(), DeliveryError> {
        self.command(&format!("EHLO {hello}")).await?;
        let reply = self.read_reply().await?;
        let lines = match reply.code {
            250 => reply.lines,
            500..=599 => {
                // An old server: HELO, and no extensions.
                self.command(&format!("HELO {hello}")).await?;
                self.expect(&[250]).await?;
                Vec::new()
            }
            _ if reply.code >= 400 => return Err(reply.refused()),
            other => return Err(self.broken(format!("the upstream answered {other} to EHLO"))),
        };
        let mut ext = Extensions::default();
        for line in lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => ext.starttls = true,
                "PIPELINING" => ext.pipelining = true,
                "8BITMIME" => ext.eight_bit_mime = true,
                "AUTH" => {
                    for mechanism in words {
                        match mechanism.to_ascii_uppercase().as_str() {
                            "PLAIN" => ext.auth_plain = true,
                            "LOGIN" => ext.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        self.extensions = ext;
        Ok(())
    }

    /// AUTH PLAIN, else LOGIN. A refusal is the operator's problem, not the message's:
    /// the upstream is unavailable until the credentials are fixed.
    async fn auth(&mut self, user: &str, password: &str) -> Result<(), DeliveryError> {
        let refused = |e: DeliveryError| match e {
            DeliveryError::Refused { code, text } => DeliveryError::Unavailable(format!(
                "the upstream refused sesrelay's credentials: {code} {text}"
            )),
            other => other,
        };
        if self.extensions.auth_plain || !self.extensions.auth_login {
            let token = STANDARD.encode(format!("\0{user}\0{password}"));
            self.command(&format!("AUTH PLAIN {token}")).await?;
            self.expect(&[235]).await.map_err(refused)?;
        } else {
            self.command("AUTH LOGIN").await?;
            self.expect(&[334]).await.map_err(refused)?;
            self.command(&STANDARD.encode(user)).await?;
            self.expect(&[334]).await.map_err(refused)?;
            self.command(&STANDARD.encode(password)).await?;
            self.expect(&[235]).await.map_err(refused)?;
        }
        Ok(())
    }

    async fn noop(&mut self) -> Result<(), DeliveryError> {
        self.command("NOOP").await?;
        self.expect(&[250]).await?;
        if self.read_buf.is_empty() {
            Ok(())
        } else {
            Err(self.broken("the upstream sent more than its NOOP reply"))
        }
    }

    /// One message: MAIL, RCPT (pipelined when offered), DATA, the content, the final
    /// reply. `Ok` is the upstream's acceptance, for the log.
    async fn transaction(
        &mut self,
        envelope: &Envelope,
        message: &Forwarded,
    ) -> Result<String, DeliveryError> {
        let eight_bit = message.parts().any(|p| !p.is_ascii());
        if eight_bit && !self.extensions.eight_bit_mime {
            return Err(DeliveryError::Needs8BitMime);
        }
        let body = if eight_bit { " BODY=8BITMIME" } else { "" };
        let mut commands = Vec::with_capacity(1 + envelope.rcpt_to.len());
        commands.push(format!("MAIL FROM:<{}>{body}\r\n", envelope.mail_from));
        for rcpt in &envelope.rcpt_to {
            commands.push(format!("RCPT TO:<{rcpt}>\r\n"));
        }
        let mut refusal = None;
        if self.extensions.pipelining {
            self.write(commands.concat().as_bytes()).await?;
            for _ in &commands {
                match self.expect(&[250, 251]).await {
                    Ok(_) => {}
                    Err(e @ DeliveryError::Refused { .. }) => {
                        refusal.get_or_insert(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        } else {
            for command in &commands {
                self.write(command.as_bytes()).await?;
                if let Err(e) = self.expect(&[250, 251]).await {
                    refusal = Some(e);
                    break;
                }
            }
        }
        if let Some(refusal) = refusal {
            if matches!(refusal, DeliveryError::Refused { .. }) {
                // Back to a clean state for the next message.
                self.command("RSET").await?;
                self.expect(&[250]).await?;
            }
            return Err(refusal);
        }
        self.command("DATA").await?;
        self.expect(&[354]).await?;
        if !self.read_buf.is_empty() {
            return Err(self.broken("the upstream sent more than its DATA reply"));
        }
        self.write_content(message).await?;
        let reply = self.read_reply().await?;
        match reply.code {
            200..=299 => Ok(format!("{} {}", reply.code, reply.text())),
            400..=599 => Err(reply.refused()),
            other => Err(self.broken(format!(
                "the upstream answered {other} to the end of the message"
            ))),
        }
    }

    /// Writes the message dot-stuffed (RFC 5321 4.5.2) and ends it with `.`, through one
    /// buffer of at most 64 KiB.
    async fn write_content(&mut self, message: &Forwarded) -> Result<(), DeliveryError> {
        let mut out = Vec::with_capacity(WRITE_CHUNK + 1024);
        let mut line_start = true;
        for part in message.parts() {
            let mut rest = part;
            while !rest.is_empty() {
                if line_start && rest[0] == b'.' {
                    out.push(b'.');
                }
                // Up to and including the next LF, in one copy.
                let (line, tail) = match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => rest.split_at(i + 1),
                    None => (rest, &[][..]),
                };
                out.extend_from_slice(line);
                line_start = line.ends_with(b"\n");
                rest = tail;
                if out.len() >= WRITE_CHUNK {
                    self.write(&out).await?;
                    out.clear();
                }
            }
        }
        if !line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.write(&out).await
    }
}
