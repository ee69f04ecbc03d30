//! Where accepted mail goes: an SMTP server or a directory.
//!
//! An upstream knows envelopes and bytes, nothing of configuration sets or of the client's
//! SMTP dialogue. It takes ownership of the [`Forwarded`] message and streams its parts;
//! its failures are typed ([`DeliveryError`]) and the relay alone turns them into replies.

mod dir;
mod smtp;

use std::path::PathBuf;
use std::time::Duration;

pub use dir::DirUpstream;
pub use smtp::SmtpUpstream;

use crate::message::Forwarded;

/// How to reach the upstream (the `[upstream]` section). Its `Debug` never shows the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub target: UpstreamTarget,
    /// Username and password for upstream AUTH.
    pub credentials: Option<(String, String)>,
    /// The longest one delivery may take, from connecting to the final reply.
    pub timeout: Duration,
    /// Extra PEM root certificates to trust for the upstream's TLS.
    pub ca_file: Option<PathBuf>,
    /// The name sesrelay gives in its EHLO to the upstream.
    pub hello_name: String,
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("target", &self.target)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .field("hello_name", &self.hello_name)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    Smtp {
        host: String,
        port: u16,
        tls: UpstreamTls,
    },
    /// One `.eml` file per message in this directory.
    Dir(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Plain SMTP, never STARTTLS (`?tls=none`).
    None,
    /// STARTTLS when the upstream offers it (`smtp://`).
    Opportunistic,
    /// STARTTLS or fail (`smtp://...?tls=required`).
    Required,
    /// Implicit TLS (`smtps://`).
    Wrapper,
}

/// The SMTP envelope, passed on unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path; empty for the null sender `<>`.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}

/// A delivery that did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The upstream answered with this refusal (4xx or 5xx), to the message or to one of
    /// its commands. `text` is the reply's text (with its enhanced code, if it gave one).
    #[error("upstream refused: {code} {text}")]
    Refused { code: u16, text: String },
    /// The upstream could not be reached or talked to: connect, TLS, AUTH, a broken or
    /// desynchronised connection, a reply that is not SMTP, a timeout.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The message could not be written locally (`dir:`).
    #[error("local I/O error: {0}")]
    LocalIo(String),
    /// The message has 8-bit bytes and the upstream does not offer 8BITMIME.
    #[error("the upstream does not accept 8-bit content (no 8BITMIME)")]
    Needs8BitMime,
    /// An envelope address the upstream cannot be given (not ASCII, or malformed).
    #[error("address the upstream cannot be given: {0}")]
    BadAddress(String),
}

impl DeliveryError {
    /// True when trying again cannot help (a 5xx, 8-bit content, a bad address).
    pub fn is_permanent(&self) -> bool {
        match self {
            DeliveryError::Refused { code, .. } => *code >= 500,
            DeliveryError::Needs8BitMime | DeliveryError::BadAddress(_) => true,
            DeliveryError::Unavailable(_) | DeliveryError::LocalIo(_) => false,
        }
    }

    /// A short stable name of the kind of failure, for metrics: `refused`, `unavailable`,
    /// `local_io`, `needs_8bitmime`, `bad_address`.
    pub fn class(&self) -> &'static str {
        match self {
            DeliveryError::Refused { .. } => "refused",
            DeliveryError::Unavailable(_) => "unavailable",
            DeliveryError::LocalIo(_) => "local_io",
            DeliveryError::Needs8BitMime => "needs_8bitmime",
            DeliveryError::BadAddress(_) => "bad_address",
        }
    }
}

/// An upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot read upstream.ca_file {path}: {source}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot create the upstream directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The configured upstream.
#[derive(Debug)]
pub enum Upstream {
    Smtp(SmtpUpstream),
    Dir(DirUpstream),
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
        Ok(match &settings.target {
            UpstreamTarget::Smtp { .. } => Upstream::Smtp(SmtpUpstream::new(settings)?),
            UpstreamTarget::Dir(path) => Upstream::Dir(DirUpstream::new(path)?),
        })
    }

    /// Hands one message over, taking ownership of it; `Ok` carries the upstream's
    /// acknowledgement, for the log.
    pub async fn deliver(
        &self,
        id: &str,
        envelope: &Envelope,
        message: Forwarded,
    ) -> Result<String, DeliveryError> {
        for address in std::iter::once(&envelope.mail_from)
            .filter(|a| !a.is_empty())
            .chain(&envelope.rcpt_to)
        {
            if !Upstream::accepts_address(address) {
                return Err(DeliveryError::BadAddress(address.clone()));
            }
        }
        match self {
            Upstream::Smtp(u) => u.deliver(envelope, message).await,
            Upstream::Dir(u) => u.deliver(id, envelope, message).await,
        }
    }

    /// Checks that the upstream can take mail now, without sending any: `smtp://` and
    /// `smtps://` connect (with TLS and AUTH as configured), EHLO and QUIT within `limit`;
    /// `dir:` creates and removes a file in the directory.
    pub async fn probe(&self, limit: Duration) -> Result<(), DeliveryError> {
        match self {
            Upstream::Smtp(u) => u.probe(limit).await,
            Upstream::Dir(u) => u.probe().await,
        }
    }

    /// Whether `address` can be given to the upstream in MAIL FROM or RCPT TO: ASCII,
    /// `local@domain` as RFC 5321 writes it.
    pub fn accepts_address(address: &str) -> bool {
        address.is_ascii()
            && address.len() <= 254
            && !address
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || b == b'<' || b == b'>')
            && address.parse::<lettre::Address>().is_ok()
    }
}
