//! The SMTP upstream: lettre's async SMTP client over rustls, with a small pool of idle
//! connections kept by sesrelay itself.
//!
//! Why not lettre's own pooled transport: its async client has no I/O timeout beyond the
//! connect, so a delivery has to be bounded from outside, by dropping it. lettre's pool
//! would then recycle the abandoned connection in the middle of a transaction, and the next
//! message on it would read the previous one's replies. Here a timed-out delivery owns its
//! connection, and dropping it closes the socket; only a connection that has just finished
//! a transaction cleanly goes back to the pool, and a parked one must answer NOOP before it
//! is used again.
//!
//! sesrelay opens the TCP connection itself, to set TCP_NODELAY: lettre writes the message
//! and the final `.` in two writes, which Nagle's algorithm would otherwise hold back until
//! the upstream's delayed ACK (some 40 ms a message). STARTTLS is lettre's; implicit TLS is
//! done here with tokio-rustls, trusting the same roots (Mozilla's, plus `ca_file`).
//!
//! lettre stuffs dots only after CRLF and always ends DATA with `CRLF.CRLF`; sesrelay's
//! DATA reader has already turned every line ending into CRLF, and the final CRLF of the
//! message is handed over as lettre's own, so the upstream receives the bytes unchanged.
//! lettre sends the whole envelope and stops at the first refusal: a recipient the
//! upstream refuses fails the whole message, with that reply.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::{
    DeliveryError, Envelope, UpstreamError, UpstreamSettings, UpstreamTarget, UpstreamTls,
};
use crate::smtp::reply::{self, Reply};

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;
/// A parked connection older than this is closed rather than reused.
const MAX_IDLE_TIME: Duration = Duration::from_secs(60);

pub struct SmtpUpstream {
    host: String,
    port: u16,
    tls: UpstreamTls,
    /// For STARTTLS (lettre's).
    tls_parameters: Option<TlsParameters>,
    /// For implicit TLS (smtps://).
    tls_connector: Option<(TlsConnector, ServerName<'static>)>,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
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
            unreachable!("SmtpUpstream::new is called for smtp targets only");
        };
        let extra_roots = match &settings.ca_file {
            Some(path) => std::fs::read(path).map_err(|source| UpstreamError::CaFile {
                path: path.display().to_string(),
                source,
            })?,
            None => Vec::new(),
        };
        let tls_error = |e: &dyn std::fmt::Display| UpstreamError::Tls(e.to_string());
        let (tls_parameters, tls_connector) = match tls {
            UpstreamTls::None => (None, None),
            UpstreamTls::Opportunistic | UpstreamTls::Required => {
                let mut params = TlsParameters::builder(host.clone());
                if !extra_roots.is_empty() {
                    params = params.add_root_certificate(
                        Certificate::from_pem(&extra_roots).map_err(|e| tls_error(&e))?,
                    );
                }
                (
                    Some(params.build_rustls().map_err(|e| tls_error(&e))?),
                    None,
                )
            }
            UpstreamTls::Wrapper => {
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
                let name = ServerName::try_from(host.clone()).map_err(|e| tls_error(&e))?;
                (None, Some((TlsConnector::from(Arc::new(config)), name)))
            }
        };
        Ok(SmtpUpstream {
            host: host.clone(),
            port: *port,
            tls: *tls,
            tls_parameters,
            tls_connector,
            hello: ClientId::Domain(settings.hello_name.clone()),
            credentials: settings
                .credentials
                .as_ref()
                .map(|(user, password)| Credentials::new(user.clone(), password.clone())),
            timeout: settings.timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub async fn deliver(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<String, DeliveryError> {
        let from = if envelope.mail_from.is_empty() {
            None
        } else {
            Some(parse_address(
                &envelope.mail_from,
                reply::bad_sender_syntax,
            )?)
        };
        let to = envelope
            .rcpt_to
            .iter()
            .map(|r| parse_address(r, reply::bad_recipient_syntax))
            .collect::<Result<Vec<_>, _>>()?;
        let lettre_envelope = lettre::address::Envelope::new(from, to)
            .map_err(|_| DeliveryError::Permanent(reply::need_rcpt()))?;
        // lettre adds CRLF.CRLF itself: give it the message without its final CRLF.
        let body = message.strip_suffix(b"\r\n").unwrap_or(message);

        let transaction = async {
            let mut conn = self.checkout().await?;
            let result = conn.send(&lettre_envelope, body).await;
            if result.is_ok() && !conn.has_broken() {
                self.park(conn);
            } else {
                conn.abort().await;
            }
            result.map_err(Failure::Smtp)
        };
        match tokio::time::timeout(self.timeout, transaction).await {
            Ok(Ok(response)) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Ok(Err(Failure::Smtp(e))) => Err(classify(&e)),
            Ok(Err(Failure::Io(e))) => {
                tracing::warn!(error = %e, "upstream unavailable");
                Err(DeliveryError::Transient(reply::upstream_unavailable()))
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "upstream timed out");
                Err(DeliveryError::Transient(reply::upstream_unavailable()))
            }
        }
    }

    /// A parked connection that still answers NOOP, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, Failure> {
        loop {
            let parked = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((mut conn, since)) = parked else {
                return self.connect().await;
            };
            if since.elapsed() < MAX_IDLE_TIME && conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    fn park(&self, conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
        // Beyond MAX_IDLE the connection is dropped, which closes it.
    }

    /// Connects (TCP_NODELAY), upgrades to TLS as configured, and authenticates.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Failure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(Failure::Io)?;
        tcp.set_nodelay(true).map_err(Failure::Io)?;
        let stream: Box<dyn AsyncTokioStream> = match &self.tls_connector {
            Some((connector, name)) => Box::new(ImplicitTls(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(Failure::Io)?,
            )),
            None => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await?;
        if let Some(params) = &self.tls_parameters {
            let upgrade = self.tls == UpstreamTls::Required || conn.can_starttls();
            if upgrade {
                conn.starttls(params.clone(), &self.hello).await?;
            }
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(conn)
    }
}

/// Why a transaction failed: the SMTP exchange, or the connection beneath it.
enum Failure {
    Smtp(SmtpError),
    Io(io::Error),
}

impl From<SmtpError> for Failure {
    fn from(e: SmtpError) -> Self {
        Failure::Smtp(e)
    }
}

/// An implicit-TLS connection, as lettre's transport trait wants it.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The session accepts only addresses lettre can send (see `Upstream::accepts_address`),
/// so a failure here means a bug, answered as a syntax error rather than a panic.
fn parse_address(address: &str, refusal: fn() -> Reply) -> Result<lettre::Address, DeliveryError> {
    address
        .parse()
        .map_err(|_| DeliveryError::Permanent(refusal()))
}

/// Maps a lettre error to the client's reply: the upstream's own 4xx/5xx passes through;
/// anything else means the upstream could not be reached or talked to.
fn classify(e: &SmtpError) -> DeliveryError {
    if let Some(code) = e.status() {
        let code = u16::from(code);
        let text = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let reply = Reply::relayed(code, &text);
        return if e.is_permanent() {
            DeliveryError::Permanent(reply)
        } else {
            DeliveryError::Transient(reply)
        };
    }
    let detail = e.to_string();
    tracing::warn!(error = %detail, "upstream unavailable");
    if e.is_client() && detail.contains("8BITMIME") {
        return DeliveryError::Permanent(reply::upstream_no_8bitmime());
    }
    DeliveryError::Transient(reply::upstream_unavailable())
}
