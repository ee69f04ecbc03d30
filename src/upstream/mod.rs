//! Where accepted mail goes: an SMTP server, the SES API, or a directory.
//!
//! An upstream knows envelopes and bytes, and the set and tags the relay resolved only to
//! pass them on (the SES API takes them as parameters, the others find them in the
//! message's headers); nothing of the client's SMTP dialogue. It takes ownership of the [`Forwarded`] message and streams its parts;
//! its failures are typed ([`DeliveryError`]) and the relay alone turns them into replies.

mod dir;
mod ses;
mod smtp;

use std::path::PathBuf;
use std::time::Duration;

pub use dir::DirUpstream;
pub use ses::SesUpstream;
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
    /// How the SES API upstream finds its AWS credentials.
    pub ses: SesCredentials,
}

/// `upstream.profile` and `upstream.role_arn`: where the AWS SDK's default credential
/// chain starts (a named profile of the shared config files) and a role to assume with
/// what it finds. Names only; the secrets stay where the chain finds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SesCredentials {
    pub profile: Option<String>,
    pub role_arn: Option<String>,
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
            .field("ses", &self.ses)
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
    /// The SES v2 API (`SendEmail`).
    Ses(SesEndpoint),
    /// One `.eml` file per message in this directory.
    Dir(PathBuf),
}

/// Where the SES API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SesEndpoint {
    /// `ses://REGION`: the region's standard endpoint, found by the SDK.
    Standard { region: String },
    /// `ses+https://HOST[:PORT]` or `ses+http://HOST:PORT`: this endpoint (a VPC or FIPS
    /// endpoint, a test double), requests signed for `region`.
    Explicit { url: String, region: String },
}

impl SesEndpoint {
    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        match self {
            SesEndpoint::Standard { region } | SesEndpoint::Explicit { region, .. } => region,
        }
    }

    /// The explicit endpoint's URL (`https://HOST[:PORT]`), if one was given.
    pub fn url(&self) -> Option<&str> {
        match self {
            SesEndpoint::Standard { .. } => None,
            SesEndpoint::Explicit { url, .. } => Some(url),
        }
    }
}

/// What the relay resolved for a message, beside its envelope: the SES API upstream sends
/// them as `ConfigurationSetName` and `EmailTags` (and the From header's address as
/// `FromEmailAddress` for the null sender); the other upstreams find the set and tags in
/// the message's `X-SES-*` headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tagging<'a> {
    pub configuration_set: Option<&'a str>,
    pub tags: &'a [(String, String)],
    /// The first From address, bare.
    pub from_header: Option<&'a str>,
}

/// A delivery that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The upstream's acknowledgement as it gave it (for the log and `Delivery` events):
    /// an SMTP upstream's final reply, `250 Ok <id>` for the SES API, `written to <file>`
    /// for `dir:`.
    pub reply: String,
    /// The id SES gave the message: the SES API's MessageId, or the id in an SMTP
    /// upstream's `250 Ok <id>` when it has SES's form (SES's SMTP endpoint, another
    /// sesrelay). SES's own events carry it, so the client is given it.
    pub ses_message_id: Option<String>,
}

impl Delivered {
    /// An acknowledgement, with the SES message id it holds, if any.
    pub fn from_reply(reply: String) -> Delivered {
        let ses_message_id = ses_message_id_in(&reply).map(str::to_owned);
        Delivered {
            reply,
            ses_message_id,
        }
    }
}

/// The SES message id in an SMTP reply `250 [2.0.0] Ok <id>`, when it has SES's form: 16
/// hex digits, `-`, a UUID, `-`, 6 hex digits (`0100018c3a4b5c6d-5f1e2d3c-4b5a-4697-8877-
/// 665544332211-000000`).
pub fn ses_message_id_in(reply: &str) -> Option<&str> {
    let mut words = reply.split_ascii_whitespace();
    if words.next()? != "250" {
        return None;
    }
    let mut word = words.next()?;
    if word.starts_with("2.") {
        word = words.next()?;
    }
    if !word.eq_ignore_ascii_case("ok") {
        return None;
    }
    let id = words.next()?;
    let groups: Vec<&str> = id.split('-').collect();
    let lengths = [16, 8, 4, 4, 4, 12, 6];
    let ses_form = groups.len() == lengths.len()
        && groups.iter().zip(lengths).all(|(group, len)| {
            group.len() == len
                && group
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    ses_form.then_some(id)
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
    Ses(SesUpstream),
    Dir(DirUpstream),
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
        Ok(match &settings.target {
            UpstreamTarget::Smtp { .. } => Upstream::Smtp(SmtpUpstream::new(settings)?),
            UpstreamTarget::Ses(endpoint) => Upstream::Ses(SesUpstream::new(settings, endpoint)?),
            UpstreamTarget::Dir(path) => Upstream::Dir(DirUpstream::new(path)?),
        })
    }

    /// Whether the message must carry the resolved set and tags in `X-SES-*` headers: not
    /// for the SES API, which takes them as parameters ([`Tagging`]).
    pub fn tags_in_headers(&self) -> bool {
        !matches!(self, Upstream::Ses(_))
    }

    /// Hands one message over, taking ownership of it; `Ok` carries the upstream's
    /// acknowledgement.
    pub async fn deliver(
        &self,
        id: &str,
        envelope: &Envelope,
        message: Forwarded,
        tagging: &Tagging<'_>,
    ) -> Result<Delivered, DeliveryError> {
        for address in std::iter::once(&envelope.mail_from)
            .filter(|a| !a.is_empty())
            .chain(&envelope.rcpt_to)
        {
            if !Upstream::accepts_address(address) {
                return Err(DeliveryError::BadAddress(address.clone()));
            }
        }
        match self {
            Upstream::Smtp(u) => u
                .deliver(envelope, message)
                .await
                .map(Delivered::from_reply),
            Upstream::Ses(u) => u.deliver(envelope, message, tagging).await,
            Upstream::Dir(u) => u
                .deliver(id, envelope, message)
                .await
                .map(|reply| Delivered {
                    reply,
                    ses_message_id: None,
                }),
        }
    }

    /// Checks that the upstream can take mail now, without sending any: `smtp://` and
    /// `smtps://` connect (with TLS and AUTH as configured), EHLO and QUIT within `limit`;
    /// `ses:` calls GetAccount (the endpoint and the credentials, cached 30 s);
    /// `dir:` creates and removes a file in the directory.
    pub async fn probe(&self, limit: Duration) -> Result<(), DeliveryError> {
        match self {
            Upstream::Smtp(u) => u.probe(limit).await,
            Upstream::Ses(u) => u.probe(limit).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_ids_are_read_from_250_replies() {
        let id = "0100018c3a4b5c6d-5f1e2d3c-4b5a-4697-8877-665544332211-000000";
        for reply in [
            format!("250 Ok {id}"),
            format!("250 2.0.0 Ok {id}"),
            format!("250 OK {id} queued"),
        ] {
            assert_eq!(ses_message_id_in(&reply), Some(id), "{reply}");
        }
        for reply in [
            "250 2.0.0 Ok: queued as 4Xk2".to_owned(),
            format!("251 Ok {id}"),
            format!("250 Queued {id}"),
            format!("250 Ok {}", id.to_ascii_uppercase()),
            "250 Ok 0100018c3a4b5c6d-5f1e2d3c-4b5a-4697-8877-665544332211".to_owned(),
            "250 Ok".to_owned(),
            String::new(),
        ] {
            assert_eq!(ses_message_id_in(&reply), None, "{reply}");
        }
    }
}
