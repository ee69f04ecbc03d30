//! The seam between the SMTP session and everything SES: parse → resolve → rewrite →
//! upstream, and every outcome turned into the client's reply.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::message::{self, Message, Rewrite, Trace};
use crate::policy::{Decision, Rejection};
use crate::smtp::reply::{self, Reply};
use crate::smtp::{Handler, SessionConfig, Transaction};
use crate::tls::TlsInfo;
use crate::upstream::{DeliveryError, Envelope, Upstream, UpstreamError};

/// Messages larger than this are read and judged on a blocking thread, so a long header
/// (40,000 tags or addresses) never holds up the sessions sharing an async thread.
const INLINE_LIMIT: usize = 256 * 1024;

/// The configuration a message is judged against: one immutable snapshot.
struct Snapshot {
    config: Arc<Config>,
    session: Arc<SessionConfig>,
}

/// The relay: the live configuration and the upstream.
pub struct Relay {
    live: RwLock<Arc<Snapshot>>,
    upstream: Upstream,
}

impl Relay {
    pub fn new(config: Config) -> Result<Relay, UpstreamError> {
        let upstream = Upstream::new(&config.upstream)?;
        Ok(Relay {
            live: RwLock::new(Arc::new(snapshot(config))),
            upstream,
        })
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.current().config)
    }

    fn current(&self) -> Arc<Snapshot> {
        let guard = self
            .live
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&guard)
    }
}

fn snapshot(config: Config) -> Snapshot {
    let session = SessionConfig {
        hostname: config.server.hostname.clone(),
        max_message_size: config.server.max_message_size,
        max_recipients: config.server.max_recipients,
        idle_timeout: config.server.idle_timeout,
        trusted_networks: config.server.trusted_networks.clone(),
        require_tls: config.tls.as_ref().is_some_and(|tls| tls.require),
    };
    Snapshot {
        config: Arc::new(config),
        session: Arc::new(session),
    }
}

/// The SMTP reply for a policy rejection (SPEC.md section 3).
pub fn rejection_reply(rejection: &Rejection) -> Reply {
    let message = rejection.message();
    match rejection {
        Rejection::MissingFrom | Rejection::InvalidTag(_) | Rejection::InvalidAddress(_) => {
            reply::transaction_failed(&message)
        }
        Rejection::NotVerified { .. } => reply::not_verified(&message),
        Rejection::ConfigurationSetDoesNotExist(_)
        | Rejection::DefaultConfigurationSetDeleted(_) => {
            reply::configuration_set_missing(&message)
        }
        Rejection::SendingPaused(_) => reply::sending_paused(&message),
    }
}

/// The SMTP reply for a delivery that did not happen: the upstream's own refusal passes
/// through (4xx stays 4xx); everything else gets sesrelay's reply for its kind.
pub fn delivery_reply(e: &DeliveryError) -> Reply {
    match e {
        DeliveryError::Refused { code, text } => Reply::relayed(*code, text),
        DeliveryError::Unavailable(_) => reply::upstream_unavailable(),
        DeliveryError::LocalIo(_) => reply::local_error(),
        DeliveryError::Needs8BitMime => reply::upstream_no_8bitmime(),
        DeliveryError::BadAddress(_) => reply::bad_recipient_syntax(),
    }
}

/// Reads a message's header block, on a blocking thread when the message is large.
pub async fn read_message(content: Vec<u8>) -> Message {
    if content.len() <= INLINE_LIMIT {
        return Message::parse(content);
    }
    let shared = bytes::Bytes::from(content);
    let copy = shared.clone(); // a second handle on the same bytes, not a copy
    match tokio::task::spawn_blocking(move || Message::parse(copy)).await {
        Ok(message) => message,
        Err(_) => Message::parse(shared),
    }
}

/// A new message id: a UUIDv7 (time-ordered, random) in 32 hex digits.
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The `with` word of the `Received:` header (RFC 3848): `SMTP` after HELO; after EHLO
/// `ESMTP`, with `S` under TLS and `A` once authenticated.
pub fn protocol(esmtp: bool, tls: bool, authenticated: bool) -> &'static str {
    match (esmtp, tls, authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    }
}

/// One message to judge and forward, from an SMTP session or the API.
#[derive(Debug, Clone)]
pub struct Submission {
    pub peer: IpAddr,
    /// The HELO/EHLO name (the API uses the client's address).
    pub helo: String,
    /// `ESMTP`, `ESMTPS`, `SMTP` or `HTTP`, for the `Received:` header (see [`protocol`]).
    pub protocol: &'static str,
    /// What TLS negotiated, when the message came over TLS.
    pub tls: Option<TlsInfo>,
    /// The reverse path; empty for `<>`.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message, its header block read once.
    pub message: Message,
    /// A set named beside the message (the API's `ConfigurationSetName`): it overrides the
    /// `X-SES-CONFIGURATION-SET` header.
    pub configuration_set: Option<String>,
    /// Tags given beside the message (the API's `EmailTags`): used instead of the header's.
    pub tags: Option<Vec<(String, String)>>,
}

/// Why a submission was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The SES rules refused it.
    Rejected(Rejection),
    /// The upstream did not take it.
    Upstream(DeliveryError),
}

impl Refusal {
    /// The SMTP reply for this refusal.
    pub fn reply(&self) -> Reply {
        match self {
            Refusal::Rejected(rejection) => rejection_reply(rejection),
            Refusal::Upstream(e) => delivery_reply(e),
        }
    }

    /// True when sending the same message again cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Refusal::Rejected(_) => true,
            Refusal::Upstream(e) => e.is_permanent(),
        }
    }
}

impl Relay {
    /// Replaces the live configuration: messages whose DATA ends from now on are judged
    /// against `config`. The upstream stays as it was built at start.
    pub fn replace_config(&self, config: Config) {
        let next = Arc::new(snapshot(config));
        let mut guard = self
            .live
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = next;
    }

    /// Judges one message against the current configuration and forwards it; `Ok` holds
    /// the message id, given only once the upstream has accepted.
    pub async fn submit(&self, submission: Submission) -> Result<String, Refusal> {
        let config = self.config();
        let id = new_message_id();
        let Submission {
            peer,
            helo,
            protocol,
            tls,
            mail_from,
            rcpt_to,
            message,
            configuration_set,
            tags,
        } = submission;
        let large = message.len() > INLINE_LIMIT;
        let judge = {
            let config = Arc::clone(&config);
            let mail_from = mail_from.clone();
            move || {
                let mut facts = message.facts(&mail_from);
                if let Some(set) = configuration_set {
                    facts.configuration_set = Some(set);
                }
                facts.api_tags = tags;
                (config.policy.resolve(&facts), message)
            }
        };
        let (decision, message) = if large {
            match tokio::task::spawn_blocking(judge).await {
                Ok(judged) => judged,
                Err(e) => {
                    tracing::error!(%id, error = %e, "the policy task failed");
                    return Err(Refusal::Upstream(DeliveryError::LocalIo(e.to_string())));
                }
            }
        } else {
            judge()
        };
        let acceptance = match decision {
            Decision::Accept(acceptance) => acceptance,
            Decision::Reject(rejection) => {
                tracing::info!(
                    %id, %peer, protocol, from = %mail_from, rcpts = rcpt_to.len(),
                    reply = %rejection_reply(&rejection), "message rejected"
                );
                return Err(Refusal::Rejected(rejection));
            }
        };
        let received = message::received_header(&Trace {
            helo: &helo,
            peer: peer.to_canonical(),
            protocol,
            tls: tls.as_ref(),
            hostname: &config.server.hostname,
            id: &id,
            recipient: match rcpt_to.as_slice() {
                [only] => Some(only.as_str()),
                _ => None,
            },
            date: &message::rfc5322_now(),
        });
        let size = message.len();
        let forwarded = message.forward(&Rewrite {
            received: &received,
            configuration_set: acceptance.configuration_set.as_deref(),
            tags: &acceptance.tags,
            strip_ses_headers: config.strip_ses_headers,
        });
        let envelope = Envelope { mail_from, rcpt_to };
        let set = acceptance.configuration_set.as_deref().unwrap_or("-");
        match self.upstream.deliver(&id, &envelope, forwarded).await {
            Ok(ack) => {
                tracing::info!(
                    %id, %peer, protocol, from = %envelope.mail_from,
                    rcpts = envelope.rcpt_to.len(), size, configuration_set = %set,
                    upstream = %ack, "message forwarded"
                );
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(
                    %id, %peer, protocol, from = %envelope.mail_from,
                    rcpts = envelope.rcpt_to.len(), configuration_set = %set, error = %e,
                    reply = %delivery_reply(&e), "upstream did not take the message"
                );
                Err(Refusal::Upstream(e))
            }
        }
    }

    /// Sends a message sesrelay wrote itself (a verification request) straight to the
    /// upstream: no policy, no rewrite.
    pub async fn send_direct(
        &self,
        envelope: &Envelope,
        content: Vec<u8>,
    ) -> Result<String, DeliveryError> {
        let id = new_message_id();
        let forwarded = Message::parse(content).forward(&Rewrite {
            received: "",
            configuration_set: None,
            tags: &[],
            strip_ses_headers: false,
        });
        let result = self.upstream.deliver(&id, envelope, forwarded).await;
        match &result {
            Ok(ack) => {
                tracing::info!(%id, from = %envelope.mail_from, upstream = %ack, "message of sesrelay's own sent")
            }
            Err(e) => {
                tracing::warn!(%id, from = %envelope.mail_from, error = %e, "message of sesrelay's own not sent")
            }
        }
        result
    }
}

impl Handler for Relay {
    fn session_config(&self) -> Arc<SessionConfig> {
        Arc::clone(&self.current().session)
    }

    fn check_sender(&self, address: &str) -> Result<(), Reply> {
        if Upstream::accepts_address(address) {
            Ok(())
        } else {
            Err(reply::bad_sender_syntax())
        }
    }

    fn check_recipient(&self, address: &str) -> Result<(), Reply> {
        if Upstream::accepts_address(address) {
            Ok(())
        } else {
            Err(reply::bad_recipient_syntax())
        }
    }

    async fn deliver(&self, tx: Transaction) -> Reply {
        // The message's share of the in-flight budget is given back when the upstream is
        // done with it (at the end of this function), not before.
        let _reservation = tx.reservation;
        let submission = Submission {
            peer: tx.peer.ip(),
            helo: tx.helo,
            protocol: protocol(tx.esmtp, tx.tls.is_some(), false),
            tls: tx.tls,
            mail_from: tx.mail_from,
            rcpt_to: tx.rcpt_to,
            message: read_message(tx.content).await,
            configuration_set: None,
            tags: None,
        };
        match self.submit(submission).await {
            Ok(id) => reply::accepted(&id),
            Err(refusal) => refusal.reply(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TagError;

    /// Every reply of SPEC.md section 3 that the policy gives, to the character.
    #[test]
    fn rejection_replies_match_the_spec() {
        let rows = [
            (
                Rejection::NotVerified {
                    region: "LOCAL".into(),
                    addresses: vec!["a@x.com".into(), "b@y.com".into()],
                },
                "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region LOCAL: a@x.com, b@y.com",
            ),
            (
                Rejection::ConfigurationSetDoesNotExist("nosuch".into()),
                "554 5.3.0 Configuration Set does not exist: Configuration set <nosuch> does not exist.",
            ),
            (
                Rejection::DefaultConfigurationSetDeleted("retired".into()),
                "554 5.3.0 Configuration Set does not exist: Configuration set <retired> does not exist.",
            ),
            (
                Rejection::SendingPaused("marketing".into()),
                "554 5.7.1 Message rejected: Sending paused for this configuration set.",
            ),
            (
                Rejection::MissingFrom,
                "554 5.6.0 Transaction failed: Missing required header 'From'.",
            ),
            (
                Rejection::InvalidTag(TagError::InvalidName("a b".into())),
                "554 5.6.0 Transaction failed: Invalid tag name <a b>: only alphanumeric ASCII characters, '_',  '-' are allowed.",
            ),
        ];
        for (rejection, line) in rows {
            assert_eq!(rejection_reply(&rejection).to_line(), line);
        }
    }

    #[test]
    fn message_ids_are_unique_and_ordered() {
        let a = new_message_id();
        let b = new_message_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a < b);
    }
}
