//! The seam between the SMTP session and everything SES: parse → resolve → rewrite →
//! upstream, and every outcome turned into the client's reply.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::account::{Quotas, Reservation, Throttle};
use crate::capture::{self, CaptureStore, EventLog, NewCapture, SetSource, SimpleParts};
use crate::config::{AccountLimits, Config, ConfigError, OnUnavailable};
use crate::events::{self, BounceKind, Emitter, Publisher};
use crate::health::{self, Health, Readiness};
use crate::message::{self, Message, Rewrite, Trace};
use crate::metrics::{ConnectionRefusal, Metrics};
use crate::password;
use crate::policy::{Acceptance, Decision, Rejection, SenderLimit, is_mailbox_simulator};
use crate::shared::{SharedCheck, SharedError, SharedStore};
use crate::smtp::reply::{self, Reply};
use crate::smtp::{Event, Handler, SessionConfig, Transaction};
use crate::statistics::{Counts, SendStatistics};
use crate::suppression::{self, SuppressionError, SuppressionList, SuppressionReason};
use crate::tls::TlsInfo;
use crate::upstream::{Delivered, DeliveryError, Envelope, Tagging, Upstream, UpstreamError};

/// Messages larger than this are read and judged on a blocking thread, so a long header
/// (40,000 tags or addresses) never holds up the sessions sharing an async thread.
const INLINE_LIMIT: usize = 256 * 1024;

/// RCPT commands accepted in one transaction (SPEC 2: RCPT 1001+ gets 452 4.5.3), which
/// bounds the envelope's memory; `server.max_recipients` is checked after DATA, as SES does.
pub const RCPT_LIMIT: usize = 1000;

/// How long a failed SMTP AUTH waits before its reply: slows down password guessing.
const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(300);

/// The configuration a message is judged against, and the upstream it then goes to: one
/// immutable snapshot, taken once per message.
struct Snapshot {
    config: Arc<Config>,
    session: Arc<SessionConfig>,
    upstream: Arc<Upstream>,
    /// `[account.shared]`'s store, when configured.
    shared: Option<Arc<SharedStore>>,
}

/// The relay: the live configuration, the account's counters, the upstream, the metrics
/// and the readiness state.
pub struct Relay {
    live: RwLock<Arc<Snapshot>>,
    /// Held by whatever changes the configuration (an API write, a reload), so that there
    /// is one path that swaps the snapshot and changes never race. It holds the file's text
    /// as last looked at, applied or refused.
    changes: tokio::sync::Mutex<Arc<str>>,
    quotas: Quotas,
    /// What GetSendStatistics reports.
    statistics: SendStatistics,
    metrics: Metrics,
    health: Health,
    /// The account's suppression list (shared with the tasks that add to it after a
    /// simulated bounce or complaint).
    suppression: Arc<SuppressionList>,
    events: Publisher,
    /// What was sent (SPEC 10).
    capture: CaptureStore,
}

/// Why a relay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Shared(#[from] SharedError),
    #[error(transparent)]
    Suppression(#[from] SuppressionError),
}

/// A new configuration's parts that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Shared(#[from] SharedError),
}

/// Why a reload left the running configuration as it was.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(
        "{path}: {} cannot change while sesrelay runs (restart it to apply); the running configuration is kept",
        keys.join(", ")
    )]
    Fixed {
        path: String,
        keys: Vec<&'static str>,
    },
    #[error("{path}: the new configuration cannot be set up: {source}")]
    Setup {
        path: String,
        #[source]
        source: SetupError,
    },
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The new configuration is live.
    Applied,
    /// The file reads as when it was last looked at: nothing to do.
    Unchanged,
}

/// A hold on configuration changes ([`Relay::lock_changes`]).
pub struct ChangeGuard<'a> {
    relay: &'a Relay,
    seen: tokio::sync::MutexGuard<'a, Arc<str>>,
}

impl ChangeGuard<'_> {
    /// Makes `config` live: messages whose DATA ends from now on are judged against it and
    /// go to its upstream (built anew only when `[upstream]` changed). Sessions keep the
    /// settings they started with; messages in flight finish on their snapshot.
    pub fn apply(&mut self, config: Config) -> Result<(), SetupError> {
        let current = self.relay.current();
        let upstream = if current.config.upstream == config.upstream {
            Arc::clone(&current.upstream)
        } else {
            Arc::new(Upstream::new(&config.upstream)?)
        };
        let shared = if current.config.account.shared == config.account.shared {
            current.shared.clone()
        } else {
            shared_store(&config)?
        };
        *self.seen = Arc::from(config.source_text());
        self.relay
            .capture
            .configure(config.capture.max_messages, config.capture.max_bytes);
        let next = Arc::new(snapshot(config, upstream, shared));
        let mut guard = self
            .relay
            .live
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = next;
        Ok(())
    }
}

impl Relay {
    /// The relay for `config`, its suppression list read from `account.suppression_file`,
    /// else from the file beside the configuration file ([`suppression::path_for`]). A
    /// configuration that was not read
    /// from a file (no file at `config.path`, as the in-process tests build theirs) keeps
    /// its list in memory only.
    pub fn new(config: Config) -> Result<Relay, RelayError> {
        let upstream = Arc::new(Upstream::new(&config.upstream)?);
        let shared = shared_store(&config)?;
        let capture = CaptureStore::new(config.capture.max_messages, config.capture.max_bytes);
        let suppression = match &config.account.suppression_file {
            Some(file) => SuppressionList::load(file)?,
            None if config.path.is_file() => {
                SuppressionList::load(&suppression::path_for(&config.path))?
            }
            None => SuppressionList::in_memory(),
        };
        let seen = Arc::from(config.source_text());
        let metrics = Metrics::new();
        let events = Publisher::new(metrics.events().clone());
        Ok(Relay {
            live: RwLock::new(Arc::new(snapshot(config, upstream, shared))),
            changes: tokio::sync::Mutex::new(seen),
            quotas: Quotas::new(),
            statistics: SendStatistics::new(),
            metrics,
            health: Health::new(),
            suppression: Arc::new(suppression),
            events,
            capture,
        })
    }

    /// The account's suppression list.
    pub fn suppression(&self) -> &SuppressionList {
        &self.suppression
    }

    /// Waits for the other changes to finish and holds off new ones until dropped.
    pub async fn lock_changes(&self) -> ChangeGuard<'_> {
        ChangeGuard {
            relay: self,
            seen: self.changes.lock().await,
        }
    }

    /// Reads the configuration file again and makes it live, or keeps the running one and
    /// says why: an invalid file, a change to a key that cannot change while running
    /// ([`Config::fixed_changes`]), an upstream that cannot be set up. Nothing is ever
    /// half-applied. Unless `force`, a file that reads as it did when last looked at
    /// (applied, or refused) is left alone: the directory watcher sees every write, the
    /// API's own included.
    pub async fn reload(&self, force: bool) -> Result<Reloaded, ReloadError> {
        let mut changes = self.lock_changes().await;
        let live = self.config();
        let path = live.path.clone();
        let shown = path.display().to_string();
        let result = async {
            let text =
                tokio::fs::read_to_string(&path)
                    .await
                    .map_err(|source| ConfigError::Read {
                        path: shown.clone(),
                        source,
                    })?;
            if !force && *text == **changes.seen {
                return Ok(Reloaded::Unchanged);
            }
            *changes.seen = Arc::from(text.as_str());
            // The secrets are the running configuration's (the environment of a running
            // process does not change); a variable it does not know is read afresh.
            let lookup = |var: &str| {
                live.resolved_secret(var)
                    .map(str::to_owned)
                    .or_else(|| crate::config::env_lookup(var))
            };
            let next = Config::parse(&text, &path)?.resolve_secrets(&lookup)?;
            next.check_files()?;
            let keys = live.fixed_changes(&next);
            if !keys.is_empty() {
                return Err(ReloadError::Fixed {
                    path: shown.clone(),
                    keys,
                });
            }
            changes.apply(next).map_err(|source| ReloadError::Setup {
                path: shown.clone(),
                source,
            })?;
            Ok(Reloaded::Applied)
        }
        .await;
        match &result {
            Ok(Reloaded::Applied) => {
                self.metrics.reload(true);
                tracing::info!(path = %shown, "configuration reloaded");
                for warning in self.config().warnings() {
                    tracing::warn!("{warning}");
                }
            }
            Ok(Reloaded::Unchanged) => {}
            Err(e) => {
                self.metrics.reload(false);
                tracing::error!(error = %e, "configuration not reloaded: the running one is kept");
            }
        }
        result
    }

    /// The metrics registry (`GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The event publisher: the records of the messages whose sets have event
    /// destinations go through it (SPEC 8).
    pub fn events(&self) -> &Publisher {
        &self.events
    }

    /// The captured messages (SPEC 10).
    pub fn capture(&self) -> &CaptureStore {
        &self.capture
    }

    /// The readiness state: draining, and the last upstream check.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// What `/healthz/ready` answers now: draining, or the state of the live upstream
    /// (checked at most every [`health::CHECK_TTL`]).
    pub async fn readiness(&self) -> Readiness {
        let snapshot = self.current();
        let upstream = Arc::clone(&snapshot.upstream);
        let readiness = self
            .health
            .readiness(|| async move { upstream.probe(health::PROBE_TIMEOUT).await })
            .await;
        match (&readiness, &snapshot.shared) {
            (Readiness::Ready, Some(store)) => match store.ping().await {
                Ok(()) => Readiness::Ready,
                Err(e) if store.settings.on_unavailable == OnUnavailable::Closed => {
                    Readiness::SharedUnavailable(e)
                }
                Err(e) => Readiness::Degraded(e),
            },
            _ => readiness,
        }
    }

    /// Whether `[account.shared]` is configured, and its store then.
    pub fn shared_store(&self) -> Option<Arc<SharedStore>> {
        self.current().shared.clone()
    }

    /// Recipients counted against the account's 24-hour quota now (`SentLast24Hours`): by
    /// every replica when the account is shared (this replica's own count when Redis does
    /// not answer).
    pub async fn sent_last_24_hours(&self) -> u64 {
        let snapshot = self.current();
        if let Some(store) = &snapshot.shared {
            match store.sent_last_24_hours(&snapshot.config.account).await {
                Ok(total) => return total,
                Err(e) => {
                    tracing::debug!(error = %e, "SentLast24Hours: Redis did not answer, this replica's own count is shown");
                }
            }
        }
        self.quotas.sent_last_24_hours()
    }

    /// Counts `recipients` against the account's limits: on Redis when the account is
    /// shared, else (or when Redis does not answer and `on_unavailable` says so) here.
    async fn reserve(&self, snapshot: &Snapshot, recipients: u64) -> Result<Hold, Refusal> {
        let limits = &snapshot.config.account;
        let here = |limits: &AccountLimits| {
            self.quotas
                .reserve(limits, recipients)
                .map(Hold::Local)
                .map_err(Refusal::Throttled)
        };
        let Some(store) = &snapshot.shared else {
            self.metrics.account_check("local");
            return here(limits);
        };
        if recipients == 0 {
            return Ok(Hold::Uncounted);
        }
        match store.reserve(limits, recipients).await {
            SharedCheck::Reserved { minute } => {
                self.metrics.account_check("shared");
                Ok(Hold::Shared {
                    store: Arc::clone(store),
                    recipients,
                    minute,
                })
            }
            SharedCheck::Throttled(throttle) => {
                self.metrics.account_check("shared");
                Err(Refusal::Throttled(throttle))
            }
            SharedCheck::Unavailable(e) => match store.settings.on_unavailable {
                OnUnavailable::Local => {
                    self.metrics.account_check("local_share");
                    tracing::debug!(error = %e, "Redis unavailable: this replica's share of the limits");
                    here(&limits.share(store.settings.replicas))
                }
                OnUnavailable::Closed => {
                    self.metrics.account_check("closed");
                    Err(Refusal::QuotasUnavailable)
                }
                OnUnavailable::Open => {
                    self.metrics.account_check("open");
                    Ok(Hold::Uncounted)
                }
            },
        }
    }

    /// Gives back what `hold` counted: the upstream did not take the message.
    async fn refund(&self, config: &Config, hold: Hold) {
        match hold {
            Hold::Local(reservation) => self.quotas.refund(reservation),
            Hold::Shared {
                store,
                recipients,
                minute,
            } => {
                if let Err(e) = store.refund(&config.account, recipients, minute).await {
                    tracing::warn!(error = %e, recipients, "Redis did not take back a refused message's recipients");
                }
            }
            Hold::Uncounted => {}
        }
    }

    /// The sends counted in 15-minute intervals (SES v1's GetSendStatistics).
    pub fn statistics(&self) -> &SendStatistics {
        &self.statistics
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

/// The shared store `config` asks for, if any.
fn shared_store(config: &Config) -> Result<Option<Arc<SharedStore>>, SharedError> {
    config
        .account
        .shared
        .as_ref()
        .map(|settings| SharedStore::new(settings).map(Arc::new))
        .transpose()
}

fn snapshot(config: Config, upstream: Arc<Upstream>, shared: Option<Arc<SharedStore>>) -> Snapshot {
    let session = SessionConfig {
        hostname: config.server.hostname.clone(),
        max_message_size: config.server.max_message_size,
        // The session caps RCPT at 1000 (452 4.5.3); the configured limit is SES's, answered
        // after DATA (see `Relay::submit`).
        max_recipients: RCPT_LIMIT,
        idle_timeout: config.server.idle_timeout,
        trusted_networks: config.server.trusted_networks.clone(),
        auth_enabled: config.auth.is_some(),
        auth_failure_delay: AUTH_FAILURE_DELAY,
        require_tls: config.tls.as_ref().is_some_and(|tls| tls.require),
    };
    Snapshot {
        config: Arc::new(config),
        session: Arc::new(session),
        upstream,
        shared,
    }
}

/// The SMTP reply for a policy rejection (SPEC.md section 3).
pub fn rejection_reply(rejection: &Rejection) -> Reply {
    let message = rejection.message();
    match rejection {
        Rejection::TooManyRecipients(_) => reply::recipient_count_exceeded(&message),
        Rejection::MissingFrom
        | Rejection::InvalidTag(_)
        | Rejection::InvalidAddress(_)
        | Rejection::DuplicateHeader(_) => reply::transaction_failed(&message),
        Rejection::NotVerified { .. } => reply::not_verified(&message),
        Rejection::ConfigurationSetDoesNotExist(_)
        | Rejection::DefaultConfigurationSetDeleted(_) => {
            reply::configuration_set_missing(&message)
        }
        Rejection::SendingPaused(_) | Rejection::AccountSendingPaused => {
            reply::sending_paused(&message)
        }
        Rejection::SenderNotAllowed { .. } => reply::sender_not_allowed(&message),
    }
}

/// What one submission adds to the send statistics ([`crate::statistics`]).
fn statistics_counts(recipients: &[String], result: &Result<String, Refusal>) -> Counts {
    let all = recipients.len() as u64;
    match result {
        Ok(_) => {
            let simulated = |kinds: &[events::Simulated]| {
                recipients
                    .iter()
                    .filter(|r| events::simulated(r).is_some_and(|s| kinds.contains(&s)))
                    .count() as u64
            };
            Counts {
                delivery_attempts: all,
                bounces: simulated(&[
                    events::Simulated::Bounce,
                    events::Simulated::SuppressionList,
                ]),
                complaints: simulated(&[events::Simulated::Complaint]),
                rejects: 0,
            }
        }
        Err(Refusal::Rejected(_)) => Counts {
            rejects: 1,
            ..Counts::default()
        },
        Err(Refusal::Upstream(e)) if e.is_permanent() => Counts {
            delivery_attempts: all,
            bounces: all,
            ..Counts::default()
        },
        Err(_) => Counts::default(),
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

/// A new message id in SES's form (SPEC 4.6): 4 hex digits of region prefix (`0100`
/// us-east-1, `0101` us-west-2, `0102` eu-west-1, `0107` eu-central-1, else `0100`), 12 hex
/// digits of Unix milliseconds, `-`, a random UUID, `-000000`. Applications parse it with
/// regexes such as `^250 Ok ([0-9a-f-]{16,})$`.
pub fn new_message_id(region: &str) -> String {
    let prefix = match region.to_ascii_lowercase().as_str() {
        "us-west-2" => "0101",
        "eu-west-1" => "0102",
        "eu-central-1" => "0107",
        _ => "0100",
    };
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        & 0xffff_ffff_ffff;
    format!(
        "{prefix}{millis:012x}-{}-000000",
        uuid::Uuid::new_v4().hyphenated()
    )
}

/// The protocol name of the `Received:` header (RFC 3848): `SMTP` after HELO, else
/// `ESMTP` with `S` for TLS and `A` for an authenticated client.
pub fn received_protocol(esmtp: bool, tls: bool, authenticated: bool) -> &'static str {
    match (esmtp, tls, authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, false, true) => "ESMTPA",
        (true, true, false) => "ESMTPS",
        (true, true, true) => "ESMTPSA",
    }
}

/// What `[auth]` lets `username` send from at the moment: `None` when the user has no
/// `allowed_senders`; a user no longer in the configuration may send from nothing.
fn sender_limit(config: &Config, username: &str) -> Option<SenderLimit> {
    let user = config.auth.as_ref().and_then(|auth| auth.user(username));
    let allowed = match user {
        Some(user) => user.allowed_senders.clone()?,
        None => Vec::new(),
    };
    Some(SenderLimit {
        username: username.to_owned(),
        allowed,
    })
}

/// One message to judge and forward, from an SMTP session or the API.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The message id, when the caller chose it (the API's Simple messages name it in
    /// their Message-ID); otherwise a new one is made.
    pub id: Option<String>,
    pub peer: IpAddr,
    /// The HELO/EHLO name (the API uses the client's address).
    pub helo: String,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA` ([`received_protocol`]) or `HTTP`,
    /// for the `Received:` header.
    pub protocol: &'static str,
    /// The SMTP AUTH user: limited by its `allowed_senders`, named in the log (never in
    /// the message).
    pub auth_user: Option<String>,
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
    /// What a Simple API send was made of, for the capture store's LocalStack view.
    pub simple: Option<SimpleParts>,
}

/// Why a submission was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The SES rules refused it.
    Rejected(Rejection),
    /// The account's sending rate or 24-hour quota would be passed.
    Throttled(Throttle),
    /// The upstream did not take it.
    Upstream(DeliveryError),
    /// The account is shared, Redis did not answer, and `on_unavailable = "closed"`.
    QuotasUnavailable,
}

/// Recipients counted for one accepted message, to give back if the upstream refuses it.
enum Hold {
    /// In this process's counters.
    Local(Reservation),
    /// On Redis, in the minute bucket `minute`.
    Shared {
        store: Arc<SharedStore>,
        recipients: u64,
        minute: i64,
    },
    /// Not counted (no recipient to count, or Redis away with `on_unavailable = "open"`).
    Uncounted,
}

impl Refusal {
    /// The SMTP reply for this refusal.
    pub fn reply(&self) -> Reply {
        match self {
            Refusal::Rejected(rejection) => rejection_reply(rejection),
            Refusal::Throttled(throttle) => reply::throttled(&throttle.to_string()),
            Refusal::Upstream(e) => delivery_reply(e),
            Refusal::QuotasUnavailable => reply::quotas_unavailable(),
        }
    }

    /// A short stable code for metrics and logs: the rejection's ([`Rejection::code`]),
    /// `throttled_rate`, `throttled_quota`, or `upstream_` and the delivery error's class.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Rejected(rejection) => rejection.code(),
            Refusal::Throttled(Throttle::Rate) => "throttled_rate",
            Refusal::Throttled(Throttle::Quota) => "throttled_quota",
            Refusal::QuotasUnavailable => "quotas_unavailable",
            Refusal::Upstream(e) => match e {
                DeliveryError::Refused { .. } => "upstream_refused",
                DeliveryError::Unavailable(_) => "upstream_unavailable",
                DeliveryError::LocalIo(_) => "upstream_local_io",
                DeliveryError::Needs8BitMime => "upstream_needs_8bitmime",
                DeliveryError::BadAddress(_) => "upstream_bad_address",
            },
        }
    }

    /// True when sending the same message again cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Refusal::Rejected(_) => true,
            Refusal::Throttled(_) | Refusal::QuotasUnavailable => false,
            Refusal::Upstream(e) => e.is_permanent(),
        }
    }
}

impl Relay {
    /// Judges one message against the current configuration and forwards it; `Ok` holds
    /// the message id, given only once the upstream has accepted. Every outcome is counted
    /// in the metrics and logged in one line ([`Outcome`]).
    ///
    /// The mailbox simulator's recipients are never forwarded: a message for them alone is
    /// accepted without the upstream. A message accepted with a set that has event
    /// destinations publishes its events (SPEC 8) once the outcome is known: Send, then
    /// Delivery when the upstream took it, or Bounce when the upstream refused it for good
    /// (the client got the upstream's 5xx); a temporary failure (4xx, upstream unreachable)
    /// publishes nothing, since the client sends again. The simulator's recipients get the
    /// events of their names.
    pub async fn submit(&self, submission: Submission) -> Result<String, Refusal> {
        let recipients = submission.rcpt_to.clone();
        let result = self.submit_counted(submission).await;
        self.statistics.add(
            std::time::SystemTime::now(),
            statistics_counts(&recipients, &result),
        );
        result
    }

    /// [`Relay::submit`] but for the statistics.
    async fn submit_counted(&self, submission: Submission) -> Result<String, Refusal> {
        let started = Instant::now();
        let accepted_at = time::OffsetDateTime::now_utc();
        let snapshot = self.current();
        let config = Arc::clone(&snapshot.config);
        let Submission {
            id,
            peer,
            helo,
            protocol,
            auth_user,
            tls,
            mail_from,
            rcpt_to,
            message,
            configuration_set,
            tags,
            simple,
        } = submission;
        let capturing = self.capture.enabled();
        let received_raw = capturing.then(|| capture::RawMessage::received(message.content()));
        let event_log = EventLog::new();
        let operation = events::record::ses_operation(protocol, id.is_some());
        let id = id.unwrap_or_else(|| new_message_id(&config.server.region));
        let size = message.len();
        self.metrics.received(size);
        let limit = auth_user
            .as_deref()
            .and_then(|username| sender_limit(&config, username));
        let large = message.len() > INLINE_LIMIT;
        let judge = {
            let config = Arc::clone(&config);
            let mail_from = mail_from.clone();
            let recipients = rcpt_to.clone();
            let id = id.clone();
            let caller = auth_user.clone();
            move || {
                let mut facts = message.facts(&mail_from);
                facts.recipients = recipients;
                if let Some(set) = configuration_set {
                    facts.configuration_set = Some(set);
                    facts.set_from_api = true;
                }
                facts.api_tags = tags;
                facts.sender_limit = limit;
                let from = facts.from.as_deref().unwrap_or_default().join(", ");
                let resolution = config.policy.resolve_traced(&facts);
                let (decision, chosen) = (resolution.decision, resolution.set);
                // The `mail` of the message's event records, read from its header block
                // here (off the async threads for a large message), when its set has
                // destinations.
                let mail = match &decision {
                    Decision::Accept(Acceptance {
                        configuration_set: Some(set),
                        tags,
                        ..
                    }) if events::has_destinations(&config, set) => Some(events::Mail::new(
                        &config,
                        &events::Origin {
                            message_id: &id,
                            timestamp: accepted_at,
                            envelope_sender: &mail_from,
                            recipients: &facts.recipients,
                            message: &message,
                            configuration_set: set,
                            tags,
                            operation,
                            source_ip: peer,
                            caller_identity: caller.as_deref(),
                        },
                    )),
                    _ => None,
                };
                (decision, message, from, mail, chosen)
            }
        };
        let (decision, message, from, mail, chosen) = if large {
            match tokio::task::spawn_blocking(judge).await {
                Ok(judged) => judged,
                Err(e) => {
                    tracing::error!(%id, error = %e, "the policy task failed");
                    let refusal = Refusal::Upstream(DeliveryError::LocalIo(e.to_string()));
                    self.metrics.rejected(refusal.reason());
                    return Err(refusal);
                }
            }
        } else {
            judge()
        };
        let outcome = Outcome {
            id: &id,
            client: peer,
            protocol,
            user: auth_user.as_deref(),
            mail_from: &mail_from,
            from: &from,
            rcpts: rcpt_to.len(),
            size,
            started,
        };
        // The capture store's record, finished at each outcome below (SPEC 10).
        let (set_name, set_source, identity) = match &chosen {
            Some((set, reason)) => {
                let (source, identity) = set_source(reason);
                (set.clone(), source, identity)
            }
            None => (None, SetSource::None, None),
        };
        let mut draft = received_raw.map(|raw| NewCapture {
            id: id.clone(),
            time: std::time::SystemTime::now(),
            protocol,
            client: peer.to_canonical(),
            user: auth_user.clone(),
            mail_from: mail_from.clone(),
            rcpt_to: rcpt_to.clone(),
            outcome: capture::Outcome::Rejected,
            reply: String::new(),
            configuration_set: set_name,
            set_source,
            identity,
            tags: Vec::new(),
            size,
            simple,
            raw,
            events: event_log.clone(),
        });
        let mut keep = |outcome: capture::Outcome,
                        reply: String,
                        tags: Option<&[(String, String)]>,
                        raw: Option<capture::RawMessage>,
                        ses_id: Option<&str>| {
            if let Some(mut draft) = draft.take() {
                if let Some(ses_id) = ses_id {
                    draft.id = ses_id.to_owned();
                }
                draft.outcome = outcome;
                draft.reply = reply;
                if let Some(tags) = tags {
                    draft.tags = tags.to_vec();
                }
                if let Some(raw) = raw {
                    draft.raw = raw;
                }
                self.capture.record(draft);
            }
        };
        let acceptance = match decision {
            Decision::Accept(acceptance) => acceptance,
            Decision::Reject(rejection) => {
                let refusal = Refusal::Rejected(rejection);
                self.metrics.rejected(refusal.reason());
                outcome.rejected(&refusal);
                keep(
                    capture::Outcome::Rejected,
                    refusal.reply().to_line(),
                    None,
                    None,
                    None,
                );
                return Err(refusal);
            }
        };
        // The account's quotas count the recipients SES would count: the mailbox simulator's
        // are free.
        let counted = rcpt_to
            .iter()
            .filter(|r| !is_mailbox_simulator(&r.to_ascii_lowercase()))
            .count() as u64;
        let reservation = match self.reserve(&snapshot, counted).await {
            Ok(reservation) => reservation,
            Err(refusal) => {
                self.metrics.rejected(refusal.reason());
                outcome.throttled(&acceptance, &refusal);
                keep(
                    capture::Outcome::Rejected,
                    refusal.reply().to_line(),
                    Some(&acceptance.tags),
                    None,
                    None,
                );
                return Err(refusal);
            }
        };
        // The message's events, when its set has destinations: the emitter is made once
        // the message's id is final (SES's, when the upstream gives one).
        let new_emitter = |mail: Option<events::Mail>| {
            mail.map(|mail| {
                let emitter = self.events.emitter(Arc::clone(&config), mail);
                if capturing {
                    emitter.with_log(event_log.clone())
                } else {
                    emitter
                }
            })
        };
        // The mailbox simulator's recipients never reach the upstream.
        let (simulated, forwarded_to): (Vec<String>, Vec<String>) = rcpt_to
            .iter()
            .cloned()
            .partition(|r| events::simulated(r).is_some());
        // Recipients on the suppression list (for the reasons in force for the set) are
        // dropped from the upstream's envelope; the message is still accepted.
        let set = acceptance.configuration_set.clone();
        let (suppressed, forwarded_to): (Vec<String>, Vec<String>) = forwarded_to
            .into_iter()
            .partition(|r| self.suppression.suppresses(r, set.as_deref()).is_some());
        if !suppressed.is_empty() {
            tracing::info!(%id, suppressed = suppressed.join(", "), "recipients on the suppression list: not forwarded");
        }
        // What becomes of the recipients kept from the upstream, once the message is
        // settled (accepted, or refused for good), after its Send: called once, with or
        // without event destinations.
        let settle_unforwarded = |emitter: Option<&Emitter>| {
            if let Some(emitter) = emitter {
                emitter.simulate(&simulated);
                emitter.bounce(&suppressed, &BounceKind::Suppressed);
            }
            self.suppress_simulated(&id, set.as_deref(), &simulated);
        };
        if forwarded_to.is_empty() {
            let emitter = new_emitter(mail);
            if let Some(emitter) = &emitter {
                emitter.send();
            }
            settle_unforwarded(emitter.as_ref());
            self.metrics
                .accepted(acceptance.configuration_set.as_deref());
            outcome.accepted(
                &acceptance,
                "none (no recipient for the upstream: mailbox simulator or suppression list)",
            );
            keep(
                capture::Outcome::Forwarded,
                reply::accepted(&id).to_line(),
                Some(&acceptance.tags),
                None,
                None,
            );
            return Ok(id);
        }
        let received = message::received_header(&Trace {
            helo: &helo,
            peer: peer.to_canonical(),
            protocol,
            tls: tls.as_ref(),
            hostname: &config.server.hostname,
            id: &id,
            recipient: match forwarded_to.as_slice() {
                [only] => Some(only.as_str()),
                _ => None,
            },
            date: &message::rfc5322_now(),
        });
        // The SES API takes the set and tags as parameters; the message then carries none
        // of sesrelay's X-SES-* headers (the client's own are always removed).
        let in_headers = snapshot.upstream.tags_in_headers();
        let from_header = (mail_from.is_empty() && !in_headers)
            .then(|| message.first_from())
            .flatten();
        let forwarded = message.forward(&Rewrite {
            received: &received,
            configuration_set: acceptance
                .configuration_set
                .as_deref()
                .filter(|_| in_headers),
            tags: if in_headers { &acceptance.tags } else { &[] },
            strip_ses_headers: config.strip_ses_headers,
        });
        let tagging = Tagging {
            configuration_set: acceptance.configuration_set.as_deref(),
            tags: &acceptance.tags,
            from_header: from_header.as_deref(),
        };
        // The copy the capture store keeps: made once, only when capture is on.
        let forwarded_raw = capturing.then(|| capture::RawMessage::forwarded(&forwarded));
        let envelope = Envelope {
            mail_from: mail_from.clone(),
            rcpt_to: forwarded_to,
        };
        let delivery_started = Instant::now();
        let delivered = snapshot
            .upstream
            .deliver(&id, &envelope, forwarded, &tagging)
            .await;
        self.metrics
            .delivery(delivery_started.elapsed(), delivered.as_ref().map(|_| ()));
        match delivered {
            Ok(delivered) => {
                // SES's id, when the upstream gave one, is the message's id from here on:
                // the client's 250, the events, the capture store. The log keeps both.
                let ses_id = delivered.ses_message_id.as_deref();
                let final_id = ses_id.unwrap_or(&id);
                let emitter = new_emitter(mail.map(|mut mail| {
                    mail.set_message_id(final_id);
                    mail
                }));
                if let Some(emitter) = &emitter {
                    emitter.send();
                    emitter.delivery(
                        &envelope.rcpt_to,
                        &smtp_response(&delivered.reply),
                        outgoing_ip(&config),
                    );
                }
                settle_unforwarded(emitter.as_ref());
                self.metrics
                    .accepted(acceptance.configuration_set.as_deref());
                outcome.accepted_by(&acceptance, &delivered.reply, ses_id);
                keep(
                    capture::Outcome::Forwarded,
                    reply::accepted(final_id).to_line(),
                    Some(&acceptance.tags),
                    forwarded_raw,
                    ses_id,
                );
                Ok(final_id.to_owned())
            }
            Err(e) => {
                let emitter = new_emitter(mail);
                if e.is_permanent() {
                    if let Some(emitter) = &emitter {
                        emitter.send();
                        let reply = delivery_reply(&e).to_line();
                        emitter.bounce(&envelope.rcpt_to, &BounceKind::Refused { reply });
                    }
                    settle_unforwarded(emitter.as_ref());
                }
                self.refund(&config, reservation).await;
                let refusal = Refusal::Upstream(e);
                self.metrics.rejected(refusal.reason());
                outcome.upstream_failed(&acceptance, &refusal);
                keep(
                    capture::Outcome::UpstreamRefused,
                    refusal.reply().to_line(),
                    Some(&acceptance.tags),
                    None,
                    None,
                );
                Err(refusal)
            }
        }
    }

    /// SES's automatic suppression after a simulated bounce or complaint: the address goes
    /// on the list when the reasons in force for `set` include it. Done in the background:
    /// it writes the list's file, and the client's reply never waits for that.
    fn suppress_simulated(&self, id: &str, set: Option<&str>, simulated: &[String]) {
        let additions: Vec<(String, SuppressionReason)> = simulated
            .iter()
            .filter_map(|address| {
                let reason = match events::simulated(address)? {
                    events::Simulated::Bounce | events::Simulated::Unknown => {
                        SuppressionReason::Bounce
                    }
                    events::Simulated::Complaint => SuppressionReason::Complaint,
                    _ => return None,
                };
                Some((address.clone(), reason))
            })
            .filter(|(_, reason)| {
                self.suppression
                    .suppressed_reasons_for(set)
                    .contains(reason)
            })
            .collect();
        if additions.is_empty() {
            return;
        }
        let list = Arc::clone(&self.suppression);
        let (id, set) = (id.to_owned(), set.map(str::to_owned));
        tokio::spawn(async move {
            for (address, reason) in additions {
                let feedback = events::record::new_feedback_id(&id);
                if let Err(e) = list
                    .add_from_event(&address, reason, set.as_deref(), Some(&id), Some(&feedback))
                    .await
                {
                    tracing::warn!(%address, error = %e, "cannot add the address to the suppression list");
                }
            }
        });
    }

    /// Sends a message sesrelay wrote itself (a verification request) straight to the
    /// upstream: no policy, no rewrite.
    pub async fn send_direct(
        &self,
        envelope: &Envelope,
        content: Vec<u8>,
    ) -> Result<Delivered, DeliveryError> {
        let snapshot = self.current();
        let id = new_message_id(&snapshot.config.server.region);
        let forwarded = Message::parse(content).forward(&Rewrite {
            received: "",
            configuration_set: None,
            tags: &[],
            strip_ses_headers: false,
        });
        let started = Instant::now();
        let result = snapshot
            .upstream
            .deliver(&id, envelope, forwarded, &Tagging::default())
            .await;
        self.metrics
            .delivery(started.elapsed(), result.as_ref().map(|_| ()));
        match &result {
            Ok(ack) => {
                tracing::info!(%id, from = %envelope.mail_from, upstream = %ack.reply, "message of sesrelay's own sent")
            }
            Err(e) => {
                tracing::warn!(%id, from = %envelope.mail_from, error = %e, "message of sesrelay's own not sent")
            }
        }
        result
    }
}

/// The capture store's source of a set, and the identity that decided.
fn set_source(reason: &crate::policy::SetReason) -> (SetSource, Option<String>) {
    use crate::policy::SetReason;
    match reason {
        SetReason::Header => (SetSource::Header, None),
        SetReason::ApiParameter => (SetSource::ApiParameter, None),
        SetReason::Default { identity } if identity.contains('@') => {
            (SetSource::AddressDefault, Some(identity.clone()))
        }
        SetReason::Default { identity } => (SetSource::DomainDefault, Some(identity.clone())),
        SetReason::NoDefault { identity } => (SetSource::None, identity.clone()),
    }
}

/// `delivery.smtpResponse` for the upstream's acknowledgement: its reply as it gave it;
/// a `dir:` upstream, which gives none, is `250 2.0.0 Ok: written to <file>`.
fn smtp_response(ack: &str) -> String {
    let is_reply = ack.len() >= 4
        && ack.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        && matches!(ack.as_bytes()[3], b' ' | b'-');
    if is_reply {
        ack.to_owned()
    } else {
        format!("250 2.0.0 Ok: {ack}")
    }
}

/// `ses:outgoing-ip` of a Delivery record: the upstream's address when the configuration
/// gives it as one, else 127.0.0.1.
fn outgoing_ip(config: &Config) -> IpAddr {
    match &config.upstream.target {
        crate::upstream::UpstreamTarget::Smtp { host, .. } => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        crate::upstream::UpstreamTarget::Ses(_) | crate::upstream::UpstreamTarget::Dir(_) => {
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
    }
}

/// One message's outcome line: every outcome (forwarded, rejected, throttled, not taken
/// by the upstream) is logged once, with the same fields wherever they are known:
///
/// `outcome`, `id`, `client` (IP address), `protocol`, `user` (the AUTH user, when there is
/// one), `mail_from` (the envelope sender, empty for `<>`), `from` (the From header's
/// addresses), `configuration_set` (when one resolved), `set_reason` (`header`, `address
/// default`, `domain default`, `none`), `identity` (the verified identity whose default
/// decided, or that has none), `tags` (`name=value, ...` as in `X-SES-MESSAGE-TAGS`),
/// `rcpts`, `size` (bytes as received), `upstream` (its reply or error), `reason` (the
/// refusal's code, as in the metrics), `reply` (what the client was told), `latency_ms`
/// (from the complete message to the outcome, upstream included).
struct Outcome<'a> {
    id: &'a str,
    client: IpAddr,
    protocol: &'static str,
    user: Option<&'a str>,
    mail_from: &'a str,
    from: &'a str,
    rcpts: usize,
    size: usize,
    started: Instant,
}

/// Tags as `X-SES-MESSAGE-TAGS` writes them.
fn tags_text(tags: &[(String, String)]) -> String {
    let mut text = String::new();
    for (i, (name, value)) in tags.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(name);
        text.push('=');
        text.push_str(value);
    }
    text
}

impl Outcome<'_> {
    fn latency_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn accepted(&self, acceptance: &Acceptance, upstream: &str) {
        self.accepted_by(acceptance, upstream, None);
    }

    /// Accepted by the upstream, which gave the message `ses_id` (the `ses_message_id`
    /// field; the client was given that id).
    fn accepted_by(&self, acceptance: &Acceptance, upstream: &str, ses_id: Option<&str>) {
        let (set_reason, identity) = acceptance.reason.describe();
        tracing::info!(
            outcome = "accepted", id = self.id, ses_message_id = ses_id, client = %self.client,
            protocol = self.protocol, user = self.user, mail_from = self.mail_from,
            from = self.from, configuration_set = acceptance.configuration_set.as_deref(),
            set_reason, identity, tags = %tags_text(&acceptance.tags), rcpts = self.rcpts,
            size = self.size, upstream, latency_ms = self.latency_ms(), "message forwarded"
        );
    }

    fn rejected(&self, refusal: &Refusal) {
        tracing::info!(
            outcome = "rejected", id = self.id, client = %self.client, protocol = self.protocol,
            user = self.user, mail_from = self.mail_from, from = self.from,
            rcpts = self.rcpts, size = self.size, reason = refusal.reason(),
            reply = %refusal.reply(), latency_ms = self.latency_ms(), "message rejected"
        );
    }

    fn throttled(&self, acceptance: &Acceptance, refusal: &Refusal) {
        let (set_reason, identity) = acceptance.reason.describe();
        tracing::info!(
            outcome = "throttled", id = self.id, client = %self.client, protocol = self.protocol,
            user = self.user, mail_from = self.mail_from, from = self.from,
            configuration_set = acceptance.configuration_set.as_deref(), set_reason, identity,
            tags = %tags_text(&acceptance.tags), rcpts = self.rcpts, size = self.size,
            reason = refusal.reason(), reply = %refusal.reply(),
            latency_ms = self.latency_ms(), "message throttled"
        );
    }

    fn upstream_failed(&self, acceptance: &Acceptance, refusal: &Refusal) {
        let (set_reason, identity) = acceptance.reason.describe();
        let upstream = match refusal {
            Refusal::Upstream(e) => e.to_string(),
            other => other.reason().to_owned(),
        };
        tracing::warn!(
            outcome = "upstream_failure", id = self.id, client = %self.client,
            protocol = self.protocol, user = self.user, mail_from = self.mail_from,
            from = self.from, configuration_set = acceptance.configuration_set.as_deref(),
            set_reason, identity, tags = %tags_text(&acceptance.tags), rcpts = self.rcpts,
            size = self.size, upstream, reason = refusal.reason(), reply = %refusal.reply(),
            latency_ms = self.latency_ms(), "upstream did not take the message"
        );
    }
}

impl Handler for Relay {
    fn observe(&self, event: Event) {
        let metrics = &self.metrics;
        match event {
            Event::Accepted => metrics.connection_accepted(),
            Event::SessionStarted => metrics.session(true),
            Event::SessionEnded => metrics.session(false),
            Event::RefusedMaxConnections => {
                metrics.connection_refused(ConnectionRefusal::MaxConnections);
            }
            Event::RefusedNetwork => metrics.connection_refused(ConnectionRefusal::Network),
            Event::MessageTooLarge => metrics.rejected("too_large"),
            Event::MessageNoRoom => metrics.rejected("inflight_budget"),
        }
    }

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

    /// argon2 verification on a blocking thread. An unknown user is verified against a
    /// dummy hash, so that the time taken does not tell which usernames exist.
    async fn authenticate(&self, username: &str, password: &str) -> bool {
        let config = self.config();
        let (hash, known) = match config.auth.as_ref().and_then(|auth| auth.user(username)) {
            Some(user) => (user.password_hash.clone(), true),
            None => (password::DUMMY_HASH.to_owned(), false),
        };
        let password = password.to_owned();
        let verified =
            tokio::task::spawn_blocking(move || password::verify(&password, &hash)).await;
        verified.unwrap_or(false) && known
    }

    async fn deliver(&self, tx: Transaction) -> Reply {
        // The message's share of the in-flight budget is given back when the upstream is
        // done with it (at the end of this function), not before.
        let _reservation = tx.reservation;
        let submission = Submission {
            id: None,
            peer: tx.peer.ip(),
            helo: tx.helo,
            protocol: received_protocol(tx.esmtp, tx.tls.is_some(), tx.auth_user.is_some()),
            auth_user: tx.auth_user,
            tls: tx.tls,
            mail_from: tx.mail_from,
            rcpt_to: tx.rcpt_to,
            message: read_message(tx.content).await,
            configuration_set: None,
            tags: None,
            simple: None,
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
                Rejection::TooManyRecipients(50),
                "554 5.5.3 Transaction failed: Recipient count exceeds 50.",
            ),
            (
                Rejection::DuplicateHeader("Subject".into()),
                "554 5.6.0 Transaction failed: Duplicate header 'Subject'.",
            ),
            (
                Rejection::InvalidTag(TagError::InvalidName("a b".into())),
                "554 5.6.0 Transaction failed: Invalid tag name <a b>: only alphanumeric ASCII characters, '_',  '-' are allowed.",
            ),
            (
                Rejection::SenderNotAllowed {
                    username: "app".into(),
                    address: "x@example.net".into(),
                },
                "554 5.7.1 Message rejected: User app is not authorized to send from x@example.net",
            ),
            (
                Rejection::AccountSendingPaused,
                "554 5.7.1 Message rejected: Sending paused for this account. For more information, please check the inbox of the email address associated with your AWS account.",
            ),
        ];
        for (rejection, line) in rows {
            assert_eq!(rejection_reply(&rejection).to_line(), line);
        }
    }

    /// SPEC 3: the account's limits answer 454 4.7.0, which a client retries later.
    #[test]
    fn throttling_replies_match_the_spec() {
        let rows = [
            (
                Throttle::Rate,
                "454 4.7.0 Throttling failure: Maximum sending rate exceeded.",
            ),
            (
                Throttle::Quota,
                "454 4.7.0 Throttling failure: Daily message quota exceeded.",
            ),
        ];
        for (throttle, line) in rows {
            let refusal = Refusal::Throttled(throttle);
            assert_eq!(refusal.reply().to_line(), line);
            assert!(!refusal.is_permanent());
        }
    }

    #[test]
    fn received_protocols() {
        assert_eq!(received_protocol(false, false, false), "SMTP");
        assert_eq!(received_protocol(true, false, false), "ESMTP");
        assert_eq!(received_protocol(true, false, true), "ESMTPA");
        assert_eq!(received_protocol(true, true, false), "ESMTPS");
        assert_eq!(received_protocol(true, true, true), "ESMTPSA");
    }

    /// SPEC 4.6: `0100018c3a4b5c6d-5f1e2d3c-4b5a-4697-8877-665544332211-000000`, the
    /// region's prefix, now in Unix milliseconds, a random UUID.
    #[test]
    fn message_ids_have_ses_form() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        for (region, prefix) in [
            ("us-east-1", "0100"),
            ("US-WEST-2", "0101"),
            ("eu-west-1", "0102"),
            ("eu-central-1", "0107"),
            ("local", "0100"),
        ] {
            let id = new_message_id(region);
            assert_eq!(id.len(), 60, "{id}");
            assert!(id.starts_with(prefix), "{id}");
            assert!(id.ends_with("-000000"), "{id}");
            let (head, rest) = id.split_at(16);
            assert!(
                head.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            let millis = u128::from_str_radix(&head[4..], 16).unwrap();
            assert!(millis >= before && millis < before + 60_000, "{id}");
            let uuid = rest
                .strip_prefix('-')
                .and_then(|r| r.strip_suffix("-000000"))
                .unwrap();
            assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
            assert_eq!(&uuid[14..15], "4", "a random (v4) UUID: {id}");
        }
        assert_ne!(new_message_id("local"), new_message_id("local"));
    }
}
