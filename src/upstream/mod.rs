//! Where accepted mail goes: an SMTP server (lettre's pooled transport) or a directory.
//!
//! An upstream knows envelopes and bytes, nothing of configuration sets. Its failures are
//! typed: [`DeliveryError::Permanent`] or [`DeliveryError::Transient`], each carrying the
//! reply the client should get.

mod dir;
mod smtp;

use std::path::PathBuf;
use std::time::Duration;

pub use dir::DirUpstream;
pub use smtp::SmtpUpstream;

use crate::smtp::reply::Reply;

/// How to reach the upstream (the `[upstream]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The upstream refused the message for good (5xx).
    #[error("permanent failure: {0}")]
    Permanent(Reply),
    /// Try again later (4xx, unreachable, timed out, local I/O).
    #[error("transient failure: {0}")]
    Transient(Reply),
}

impl DeliveryError {
    /// The reply the SMTP client gets.
    pub fn reply(&self) -> &Reply {
        match self {
            DeliveryError::Permanent(r) | DeliveryError::Transient(r) => r,
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

    /// Hands one message over; `Ok` carries the upstream's acknowledgement, for the log.
    /// `message` ends with CRLF.
    pub async fn deliver(
        &self,
        id: &str,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<String, DeliveryError> {
        match self {
            Upstream::Smtp(u) => u.deliver(envelope, message).await,
            Upstream::Dir(u) => u.deliver(id, envelope, message).await,
        }
    }

    /// Whether `address` can be given to the upstream in MAIL FROM or RCPT TO.
    pub fn accepts_address(address: &str) -> bool {
        address.parse::<lettre::Address>().is_ok()
    }
}
