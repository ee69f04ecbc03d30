//! The SMTP upstream: lettre's pooled async transport over rustls.
//!
//! lettre stuffs dots only after CRLF and always ends DATA with `CRLF.CRLF`; sesrelay's
//! DATA reader has already turned every line ending into CRLF, and the final CRLF of the
//! message is handed over as lettre's own, so the upstream receives the bytes unchanged.
//! lettre sends the whole envelope and stops at the first refusal: a recipient the
//! upstream refuses fails the whole message, with that reply.

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{
    DeliveryError, Envelope, UpstreamError, UpstreamSettings, UpstreamTarget, UpstreamTls,
};
use crate::smtp::reply::{self, Reply};

pub struct SmtpUpstream {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for SmtpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUpstream").finish_non_exhaustive()
    }
}

impl SmtpUpstream {
    pub fn new(settings: &UpstreamSettings) -> Result<SmtpUpstream, UpstreamError> {
        let UpstreamTarget::Smtp { host, port, tls } = &settings.target else {
            unreachable!("SmtpUpstream::new is called for smtp targets only");
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
            .port(*port)
            .timeout(Some(settings.timeout))
            .hello_name(ClientId::Domain(settings.hello_name.clone()))
            .pool_config(PoolConfig::new().max_size(16));
        if *tls != UpstreamTls::None {
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
            let params = params
                .build_rustls()
                .map_err(|e| UpstreamError::Tls(e.to_string()))?;
            builder = builder.tls(match tls {
                UpstreamTls::Opportunistic => Tls::Opportunistic(params),
                UpstreamTls::Required => Tls::Required(params),
                UpstreamTls::Wrapper => Tls::Wrapper(params),
                UpstreamTls::None => Tls::None,
            });
        } else {
            builder = builder.tls(Tls::None);
        }
        if let Some((user, password)) = &settings.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(SmtpUpstream {
            transport: builder.build(),
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
        match self.transport.send_raw(&lettre_envelope, body).await {
            Ok(response) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            Err(e) => Err(classify(&e)),
        }
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
