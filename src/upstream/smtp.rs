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
//! lettre stuffs dots only after CRLF and always ends DATA with `CRLF.CRLF`; sesrelay's
//! DATA reader has already turned every line ending into CRLF, and the final CRLF of the
//! message is handed over as lettre's own, so the upstream receives the bytes unchanged.
//! lettre sends the whole envelope and stops at the first refusal: a recipient the
//! upstream refuses fails the whole message, with that reply.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

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
    tls_parameters: Option<TlsParameters>,
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
        let tls_parameters = if *tls == UpstreamTls::None {
            None
        } else {
            let mut params = TlsParameters::builder(host.clone());
            if let Some(path) = &settings.ca_file {
                let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
                    path: path.display().to_string(),
                    source,
                })?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| UpstreamError::Tls(format!("{}: {e}", path.display())))?;
                params = params.add_root_certificate(cert);
            }
            Some(
                params
                    .build_rustls()
                    .map_err(|e| UpstreamError::Tls(e.to_string()))?,
            )
        };
        Ok(SmtpUpstream {
            host: host.clone(),
            port: *port,
            tls: *tls,
            tls_parameters,
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
            result
        };
        match tokio::time::timeout(self.timeout, transaction).await {
            Ok(Ok(response)) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "upstream timed out");
                Err(DeliveryError::Transient(reply::upstream_unavailable()))
            }
        }
    }

    /// A parked connection that still answers NOOP, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SmtpError> {
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

    /// Connects, upgrades to TLS as configured, and authenticates.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let wrapper = match self.tls {
            UpstreamTls::Wrapper => self.tls_parameters.clone(),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            wrapper,
            None,
        )
        .await?;
        if let Some(params) = &self.tls_parameters {
            let upgrade = match self.tls {
                UpstreamTls::Required => true,
                UpstreamTls::Opportunistic => conn.can_starttls(),
                UpstreamTls::None | UpstreamTls::Wrapper => false,
            };
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
