//! The configuration file: TOML → a validated [`Config`].
//!
//! Parsing happens in two steps. serde reads the file into `Raw*` structs whose values keep
//! their byte spans (`toml::Spanned`); unknown keys and wrong types are caught there. Then
//! each value is checked and turned into its runtime type. Every error names the file, the
//! line and column, and the dotted key (`server.max_recipients`), so an operator never has
//! to guess where a problem is.
//!
//! [`Config::parse`] is pure: it reads neither the environment nor other files. What lies
//! outside the text is looked up in a step of its own, [`Config::resolve_secrets`] (the
//! secrets that `*_env` keys name), and [`Config::load`] does both for the real process.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::events::{
    CloudWatchDimension, DestinationTarget, DimensionValueSource, EventDestination, EventType,
    EventsConfig, MAX_DESTINATIONS_PER_SET,
};
use crate::policy::{
    AccountRules, ConfigurationSet, Identity, IdentityTable, Policy,
    is_valid_configuration_set_name, validate_tag,
};
use crate::upstream::{SesCredentials, SesEndpoint, UpstreamSettings, UpstreamTarget, UpstreamTls};

/// Default path when neither `--config` nor `$SESRELAY_CONFIG` is given.
pub const DEFAULT_PATH: &str = "config/sesrelay.toml";

/// The range of an integer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntegerRange {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    /// The largest value in words, for sizes (" (1 GiB)"), or "".
    pub note: &'static str,
}

/// Every integer key and its range; values outside are refused at load. The caps keep
/// every later use in range (a semaphore's permits, a size sum, an allocation).
pub const INTEGER_RANGES: &[IntegerRange] = &[
    IntegerRange {
        key: "server.max_message_size",
        min: 1,
        max: 1 << 30,
        note: " (1 GiB)",
    },
    IntegerRange {
        key: "server.max_recipients",
        min: 1,
        // SPEC 3: a message takes at most 1000 RCPT, whatever this says.
        max: 1000,
        note: "",
    },
    IntegerRange {
        key: "server.max_connections",
        min: 1,
        max: 1_000_000,
        note: "",
    },
    IntegerRange {
        key: "server.max_inflight_bytes",
        min: 1,
        max: 64 << 30,
        note: " (64 GiB)",
    },
    IntegerRange {
        key: "capture.max_messages",
        min: 0,
        max: 1_000_000,
        note: "",
    },
    IntegerRange {
        key: "capture.max_bytes",
        min: 0,
        max: 16 << 30,
        note: " (16 GiB)",
    },
    IntegerRange {
        key: "account.max_24_hour_send",
        min: 0,
        max: MAX_24_HOUR_SEND,
        note: "",
    },
];

/// The largest `account.max_24_hour_send` (recipients per 24 hours).
pub const MAX_24_HOUR_SEND: u64 = 1_000_000_000;

/// The largest `account.max_send_rate` (recipients per second).
pub const MAX_SEND_RATE: f64 = 1_000_000.0;

/// The sandbox's quotas when `[account]` does not give its own (SES: 1 per second, 200 per
/// 24 hours).
pub const SANDBOX_SEND_RATE: f64 = 1.0;
pub const SANDBOX_24_HOUR_SEND: u64 = 200;

/// At most this many resource tags on one identity or configuration set, as AWS allows.
pub const MAX_RESOURCE_TAGS: usize = 50;

/// The range of a duration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    pub min: Duration,
    pub max: Duration,
    /// The limits as written in the error message.
    pub min_text: &'static str,
    pub max_text: &'static str,
}

/// `server.idle_timeout`, `server.shutdown_timeout` and `upstream.timeout`: 1ms to 24h.
/// `account.shared.timeout`: 1ms to 10s (a shared limiter slower than that defeats itself).
pub const SHARED_TIMEOUT_RANGE: DurationRange = DurationRange {
    min: Duration::from_millis(1),
    max: Duration::from_secs(10),
    min_text: "1ms",
    max_text: "10s",
};

pub const TIMEOUT_RANGE: DurationRange = DurationRange {
    min: Duration::from_millis(1),
    max: Duration::from_secs(24 * 3600),
    min_text: "1ms",
    max_text: "24h",
};

/// `verification.link_ttl`: 1s to 365d.
pub const LINK_TTL_RANGE: DurationRange = DurationRange {
    min: Duration::from_secs(1),
    max: Duration::from_secs(365 * 24 * 3600),
    min_text: "1s",
    max_text: "365d",
};

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}{sep}{message}", sep = if key.is_empty() { "" } else { ": " })]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        /// The dotted key the error is about (empty for a TOML syntax error).
        key: String,
        message: String,
    },
}

/// The `[server]` section.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub hostname: String,
    pub listen: Vec<SocketAddr>,
    pub listen_tls: Vec<SocketAddr>,
    pub region: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// Budget for all message bytes held at once (SPEC 9); past it DATA gets 452 4.3.1.
    pub max_inflight_bytes: u64,
    /// After SIGTERM, sessions still open after this long get 421 4.3.2 and are closed.
    pub shutdown_timeout: Duration,
    pub trusted_networks: Vec<IpNet>,
}

/// The limits of `[account]` (SPEC 4.5): recipients per second and per sliding 24 hours;
/// 0 is no limit. Its switches (`sandbox`, `sending_enabled`) are rules of the policy
/// ([`crate::policy::AccountRules`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountLimits {
    pub max_send_rate: f64,
    pub max_24_hour_send: u64,
    /// `account.suppression_file`: where the suppression list is kept; `None`: beside the
    /// configuration file (`<stem>.suppression.json`).
    pub suppression_file: Option<PathBuf>,
    /// `[account.shared]`: the quotas and idempotency keys replicas share on Redis.
    pub shared: Option<SharedAccountConfig>,
}

impl AccountLimits {
    /// One replica's share of the limits (each divided by `replicas`), for when the shared
    /// store is away (`on_unavailable = "local"`). A limit of 0 (none) stays 0; a share is
    /// never below one recipient.
    pub fn share(&self, replicas: u32) -> AccountLimits {
        let replicas = replicas.max(1);
        AccountLimits {
            max_send_rate: if self.max_send_rate > 0.0 {
                self.max_send_rate / f64::from(replicas)
            } else {
                0.0
            },
            max_24_hour_send: if self.max_24_hour_send > 0 {
                (self.max_24_hour_send / u64::from(replicas)).max(1)
            } else {
                0
            },
            suppression_file: self.suppression_file.clone(),
            shared: None,
        }
    }
}

/// `[account.shared]` (SPEC 12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAccountConfig {
    /// `redis://[user:password@]host[:port][/db]` (or `rediss://` is refused: not built).
    pub redis_url: String,
    /// Prefixed to every key sesrelay writes.
    pub key_prefix: String,
    /// The longest one Redis call may take before the relay does what `on_unavailable`
    /// says.
    pub timeout: Duration,
    pub on_unavailable: OnUnavailable,
    /// How many replicas share the account: each enforces `1/replicas` of the limits when
    /// Redis is away and `on_unavailable = "local"`.
    pub replicas: u32,
}

/// What a replica does when the shared store does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Count locally, against this replica's share of the limits.
    Local,
    /// Refuse with `451 4.3.0` (the client tries again later).
    Closed,
    /// Accept without counting.
    Open,
}

impl std::fmt::Display for OnUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnUnavailable::Local => "local",
            OnUnavailable::Closed => "closed",
            OnUnavailable::Open => "open",
        })
    }
}

/// A validated configuration: one immutable snapshot of everything the relay applies.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    pub policy: Policy,
    /// `[account]`'s quotas.
    pub account: AccountLimits,
    /// `[events]`: where event records go.
    pub events: EventsConfig,
    pub upstream: UpstreamSettings,
    /// `[upstream] strip_ses_headers`: remove every `X-SES-*` header instead of setting them.
    pub strip_ses_headers: bool,
    /// `[admin]`: the HTTP listener for the SES v2 API; none without the section.
    pub admin: Option<AdminConfig>,
    pub verification: VerificationConfig,
    /// What the SES API reports beside the policy: names as written, tokens, resource tags.
    pub resources: Resources,
    /// `[auth]`: the users who may AUTH; none without the section.
    pub auth: Option<AuthConfig>,
    /// `[capture]`: how much of what was sent is kept (SPEC 10).
    pub capture: CaptureConfig,
    /// The secrets the file names by environment variable, and their values once resolved.
    secrets: Secrets,
    /// Where `upstream.ca_file` is written, for the error when the file is missing.
    ca_file_at: Option<Location>,
    /// `[tls]`: the certificate and key for STARTTLS and `listen_tls`; none without the
    /// section.
    pub tls: Option<TlsConfig>,
    /// Where `tls.cert` and `tls.key` are written, for the error when a file is missing.
    tls_at: Option<(Location, Location)>,
    /// The text the configuration was read from: a reload whose file reads the same is
    /// not a change.
    source: std::sync::Arc<str>,
}

/// The `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
    /// MAIL and AUTH before STARTTLS get `530 5.7.0 Must issue a STARTTLS command first`.
    pub require: bool,
}

/// Where a key is written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    key: String,
    line: usize,
    column: usize,
}

/// A secret that the file names by environment variable (a `*_env` key).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretRef {
    var: String,
    at: Location,
    purpose: SecretPurpose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SecretPurpose {
    /// `upstream.password_env`: the password of `username` for upstream AUTH.
    UpstreamPassword { username: String },
    /// `admin.access_keys[i].secret_env`: the secret of access key `id`.
    AccessKey { id: String },
    /// `verification.secret_env`: the HMAC key of verification links.
    LinkKey,
}

/// The secrets a configuration names, and their values once resolved.
#[derive(Clone, Default)]
struct Secrets {
    refs: Vec<SecretRef>,
    /// Variable name → value, for every resolved reference.
    values: BTreeMap<String, String>,
}

/// Debug output shows which variables are named, never their values.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field(
                "vars",
                &self.refs.iter().map(|r| r.var.as_str()).collect::<Vec<_>>(),
            )
            .field("resolved", &self.values.len())
            .finish()
    }
}

/// The `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Base of the links in verification messages.
    pub public_url: String,
    /// With keys, every API request must carry a SigV4 signature by one of them; without,
    /// only loopback clients are served. Empty until [`Config::resolve_secrets`] has run, so
    /// a configuration whose secrets are unresolved serves loopback clients only.
    pub access_keys: Vec<AccessKey>,
    /// `false`: the listener serves only `/healthz/*`, `/metrics` and the pages (no SES API,
    /// no verification links).
    pub api: bool,
    /// Who may see the pages and the capture API when `access_keys` is set (HTTP Basic
    /// auth); with access keys and no users, nobody may.
    pub ui_users: Vec<UiUser>,
}

/// The `[capture]` section: the bounds of the captured-mail store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Records kept, oldest dropped first; 0 turns capture off.
    pub max_messages: usize,
    /// Raw bytes kept; past it the oldest bodies go, their records stay.
    pub max_bytes: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            max_messages: crate::capture::DEFAULT_MAX_MESSAGES,
            max_bytes: crate::capture::DEFAULT_MAX_BYTES,
        }
    }
}

/// One user of `[admin] ui_users`: HTTP Basic auth for the pages and the capture API.
#[derive(Clone, PartialEq, Eq)]
pub struct UiUser {
    pub username: String,
    /// An argon2id PHC string, checked to parse at load.
    pub password_hash: String,
}

/// Debug output never shows the password hash.
impl std::fmt::Debug for UiUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiUser")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// An access key of `[admin] access_keys`, its secret resolved from the variable
/// `secret_env` names (see [`Config::resolve_secrets`]).
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

/// Debug output never shows the secret.
impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The `[auth]` section: who may authenticate with SMTP AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// At least one; usernames are unique.
    pub users: Vec<AuthUser>,
}

impl AuthConfig {
    /// The user with exactly this name (usernames are compared as written).
    pub fn user(&self, username: &str) -> Option<&AuthUser> {
        self.users.iter().find(|u| u.username == username)
    }
}

/// One user of `[auth] users`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub username: String,
    /// An argon2id PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), checked to
    /// parse at load.
    pub password_hash: String,
    /// The addresses and domains this user may send from (From, Sender and the envelope
    /// sender); `None`: any the policy allows.
    pub allowed_senders: Option<Vec<String>>,
}

/// Debug output never shows the password hash.
impl std::fmt::Debug for AuthUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthUser")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("allowed_senders", &self.allowed_senders)
            .finish()
    }
}

/// The `[verification]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationConfig {
    /// From of verification messages.
    pub sender: String,
    pub link_ttl: Duration,
    /// The HMAC key for verification links, from the variable `secret_env` names (set by
    /// [`Config::resolve_secrets`]); `None`: a key generated once and kept beside the
    /// config file.
    pub secret: Option<Vec<u8>>,
    /// DNS server for `_amazonses` TXT lookups; `None`: the system's resolvers.
    pub dns_resolver: Option<SocketAddr>,
}

/// API-visible details of identities and sets, keyed by lower-cased name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub identities: BTreeMap<String, IdentityRecord>,
    pub configuration_sets: BTreeMap<String, SetRecord>,
}

/// What an identity is, decided once at load from its name ([`IdentityKind::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentityKind {
    /// An email address, `joe@example.com`.
    Address,
    /// A domain name, `example.com`: it covers the addresses of its subdomains too.
    Domain,
}

impl IdentityKind {
    /// The kind of identity `name` is, or `None` when it is neither an email address nor a
    /// domain name. The one place that tells them apart.
    pub fn of(name: &str) -> Option<IdentityKind> {
        if is_address(name) {
            Some(IdentityKind::Address)
        } else if is_domain(name) {
            Some(IdentityKind::Domain)
        } else {
            None
        }
    }

    /// SES's `IdentityType`.
    pub fn ses_type(self) -> &'static str {
        match self {
            IdentityKind::Address => "EMAIL_ADDRESS",
            IdentityKind::Domain => "DOMAIN",
        }
    }

    /// `address` or `domain`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Address => "address",
            IdentityKind::Domain => "domain",
        }
    }
}

impl std::fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an identity proves itself, by kind. In the file: `verification_token` for a domain,
/// `link_nonce` for an address (which also accepts `verification_token`, its older name).
#[derive(Clone, PartialEq, Eq)]
pub enum Verification {
    /// An address is verified by opening the link sent to it; the link carries this nonce,
    /// and a link whose nonce is not the identity's current one verifies nothing. A secret:
    /// never shown.
    Address { link_nonce: Option<String> },
    /// A domain is verified once TXT `_amazonses.<domain>` holds this token. Public: SES
    /// shows it for the operator to publish.
    Domain { dns_token: Option<String> },
}

impl Verification {
    pub fn kind(&self) -> IdentityKind {
        match self {
            Verification::Address { .. } => IdentityKind::Address,
            Verification::Domain { .. } => IdentityKind::Domain,
        }
    }
}

/// Debug output never shows a link nonce.
impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verification::Address { link_nonce } => f
                .debug_struct("Address")
                .field("link_nonce", &link_nonce.as_ref().map(|_| "<redacted>"))
                .finish(),
            Verification::Domain { dns_token } => f
                .debug_struct("Domain")
                .field("dns_token", dns_token)
                .finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    /// The name as written in the file.
    pub name: String,
    /// The kind, with what verifies it.
    pub verification: Verification,
    pub resource_tags: BTreeMap<String, String>,
}

impl IdentityRecord {
    pub fn kind(&self) -> IdentityKind {
        self.verification.kind()
    }

    /// A domain's DNS token; `None` for an address.
    pub fn dns_token(&self) -> Option<&str> {
        match &self.verification {
            Verification::Domain { dns_token } => dns_token.as_deref(),
            Verification::Address { .. } => None,
        }
    }

    /// An address's link nonce; `None` for a domain.
    pub fn link_nonce(&self) -> Option<&str> {
        match &self.verification {
            Verification::Address { link_nonce } => link_nonce.as_deref(),
            Verification::Domain { .. } => None,
        }
    }
}

/// An unverified domain and the token its TXT record `_amazonses.<name>` must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingDomain<'a> {
    /// Lower-cased.
    pub name: &'a str,
    pub token: &'a str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRecord {
    pub resource_tags: BTreeMap<String, String>,
    /// `[configuration_sets.NAME.event_destinations.DEST]`: where the set's events go.
    pub event_destinations: BTreeMap<String, EventDestination>,
}

/// The process environment as a secret lookup: `std::env::var`, `None` when a variable is
/// unset or not UTF-8.
pub fn env_lookup(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

impl Config {
    /// Reads and validates the file at `path`, with its secrets from the environment and
    /// the files it names checked: what `serve`, `check` and `resolve` use.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &env_lookup)
    }

    /// [`Config::load`] with the secrets looked up in `lookup` instead of the environment.
    pub fn load_with(
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config = Config::parse(&text, path)?.resolve_secrets(lookup)?;
        config.check_files()?;
        Ok(config)
    }

    /// Validates `text`; `path` is used in error messages and kept in the result. Pure: no
    /// environment, no files. The secrets the text names are left unresolved (no upstream
    /// credentials, no access keys, no link key) until [`Config::resolve_secrets`].
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let source = Source { text, path };
        let raw: RawConfig = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
        let mut config = source.build(raw)?;
        config.source = std::sync::Arc::from(text);
        Ok(config)
    }

    /// The text this configuration was read from.
    pub fn source_text(&self) -> &str {
        &self.source
    }

    /// The keys whose values differ between `self` (running) and `next` but cannot change
    /// while the relay runs: listeners are bound, and the connection limits, the in-flight
    /// budget, the TLS files, the link key and the DNS resolver are set up, at start.
    /// Everything else applies to the next session or message.
    pub fn fixed_changes(&self, next: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |key: &'static str, same: bool| {
            if !same {
                changed.push(key);
            }
        };
        check("server.listen", self.server.listen == next.server.listen);
        check(
            "server.listen_tls",
            self.server.listen_tls == next.server.listen_tls,
        );
        check(
            "server.max_connections",
            self.server.max_connections == next.server.max_connections,
        );
        check(
            "server.max_inflight_bytes",
            self.server.max_inflight_bytes == next.server.max_inflight_bytes,
        );
        check(
            "server.shutdown_timeout",
            self.server.shutdown_timeout == next.server.shutdown_timeout,
        );
        let tls_files = |c: &Config| c.tls.as_ref().map(|t| (t.cert.clone(), t.key.clone()));
        check("tls", tls_files(self) == tls_files(next));
        let admin_listen = |c: &Config| c.admin.as_ref().map(|a| a.listen);
        check("admin.listen", admin_listen(self) == admin_listen(next));
        check(
            "verification.secret_env",
            self.verification.secret == next.verification.secret,
        );
        check(
            "account.suppression_file",
            self.account.suppression_file == next.account.suppression_file,
        );
        check(
            "verification.dns_resolver",
            self.verification.dns_resolver == next.verification.dns_resolver,
        );
        changed
    }

    /// Looks up every secret the file names (`upstream.password_env`,
    /// `admin.access_keys[].secret_env`, `verification.secret_env`) in `lookup`, which maps
    /// a variable's name to its value, and puts the values where the relay uses them. A
    /// variable that `lookup` does not know, or whose value cannot serve, is an error
    /// naming the key that names it.
    pub fn resolve_secrets(
        mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut values = BTreeMap::new();
        let mut access_keys = Vec::new();
        for secret in &self.secrets.refs {
            let value = lookup(&secret.var);
            let value = match &secret.purpose {
                SecretPurpose::UpstreamPassword { username } => {
                    let password = value.ok_or_else(|| {
                        self.error_at(
                            &secret.at,
                            format!(
                                "the environment variable {} is not set (or is not UTF-8)",
                                secret.var
                            ),
                        )
                    })?;
                    self.upstream.credentials = Some((username.clone(), password.clone()));
                    password
                }
                SecretPurpose::AccessKey { id } => {
                    let key = value.filter(|v| !v.is_empty()).ok_or_else(|| {
                        self.error_at(
                            &secret.at,
                            format!(
                                "the environment variable {} is not set (or is empty or not UTF-8)",
                                secret.var
                            ),
                        )
                    })?;
                    access_keys.push(AccessKey {
                        id: id.clone(),
                        secret: key.clone(),
                    });
                    key
                }
                SecretPurpose::LinkKey => {
                    let key = value.filter(|v| v.len() >= 16).ok_or_else(|| {
                        self.error_at(
                            &secret.at,
                            format!(
                                "the environment variable {} must hold a secret of at least 16 characters",
                                secret.var
                            ),
                        )
                    })?;
                    self.verification.secret = Some(key.clone().into_bytes());
                    key
                }
            };
            values.insert(secret.var.clone(), value);
        }
        if let Some(admin) = &mut self.admin {
            admin.access_keys = access_keys;
        }
        self.secrets.values = values;
        Ok(self)
    }

    /// True when every secret the file names has its value (or it names none).
    pub fn secrets_resolved(&self) -> bool {
        self.secrets
            .refs
            .iter()
            .all(|r| self.secrets.values.contains_key(&r.var))
    }

    /// The value resolved for the variable `var`, if this configuration names it: lets a
    /// configuration re-read from the file take the running one's secrets.
    pub fn resolved_secret(&self, var: &str) -> Option<&str> {
        self.secrets.values.get(var).map(String::as_str)
    }

    /// Checks that the files the configuration names exist (`upstream.ca_file`,
    /// `tls.cert`, `tls.key`).
    pub fn check_files(&self) -> Result<(), ConfigError> {
        if let (Some(path), Some(at)) = (&self.upstream.ca_file, &self.ca_file_at)
            && !path.is_file()
        {
            return Err(self.error_at(at, format!("{} is not a readable file", path.display())));
        }
        if let (Some(tls), Some((cert_at, key_at))) = (&self.tls, &self.tls_at) {
            for (path, at) in [(&tls.cert, cert_at), (&tls.key, key_at)] {
                if !path.is_file() {
                    return Err(self.error_at(
                        at,
                        format!(
                            "{} is not a readable file (`sesrelay cert --hostname NAME` makes a \
                             development pair)",
                            path.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn error_at(&self, at: &Location, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            line: at.line,
            column: at.column,
            key: at.key.clone(),
            message,
        }
    }

    /// The identity `name` (compared case-insensitively): its rules and its record.
    pub fn identity(&self, name: &str) -> Option<(&Identity, &IdentityRecord)> {
        let identity = self.policy.identities.get(name)?;
        let record = self.resources.identities.get(&name.to_ascii_lowercase())?;
        Some((identity, record))
    }

    /// Every identity in name order (lower-cased), with its rules and its record.
    pub fn identities(&self) -> impl Iterator<Item = (&str, &Identity, &IdentityRecord)> {
        self.policy
            .identities
            .iter()
            .filter_map(|(name, identity)| {
                let record = self.resources.identities.get(name)?;
                Some((name, identity, record))
            })
    }

    /// The unverified domains that have a token, in name order: what a DNS check looks for.
    pub fn pending_domains(&self) -> impl Iterator<Item = PendingDomain<'_>> {
        self.identities().filter_map(|(name, identity, record)| {
            let token = record.dns_token().filter(|_| !identity.verified)?;
            Some(PendingDomain { name, token })
        })
    }

    /// One line per identity whose default names a set that does not exist (a deleted set).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .policy
            .deleted_set_defaults()
            .map(|(identity, set)| {
                format!(
                    "identity {identity}: default configuration set {set} does not exist \
                     (deleted set); mail that resolves to it is rejected with 554 5.3.0"
                )
            })
            .collect();
        if let Some(admin) = &self.admin
            && !admin.access_keys.is_empty()
            && admin.ui_users.is_empty()
            && self.capture.max_messages > 0
        {
            warnings.push(
                "[admin] access_keys is set and ui_users is empty: the pages and the capture \
                 API answer 401 to everyone"
                    .to_owned(),
            );
        }
        warnings
    }
}

// ---------------------------------------------------------------------------------------
// The file as serde reads it.
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    policy: RawPolicy,
    tls: Option<RawTls>,
    auth: Option<Spanned<RawAuth>>,
    upstream: RawUpstream,
    #[serde(default)]
    configuration_sets: BTreeMap<Spanned<String>, RawConfigurationSet>,
    #[serde(default)]
    identities: BTreeMap<Spanned<String>, RawIdentity>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    verification: RawVerification,
    #[serde(default)]
    account: RawAccount,
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    capture: RawCapture,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    max_messages: Option<Spanned<i64>>,
    max_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUiUser {
    username: Spanned<String>,
    password_hash: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    account_id: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    #[serde(default)]
    sns: BTreeMap<Spanned<String>, RawEndpoints>,
    #[serde(default)]
    eventbridge: BTreeMap<Spanned<String>, RawEndpoints>,
    #[serde(default)]
    firehose: BTreeMap<Spanned<String>, RawFirehose>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoints {
    endpoints: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFirehose {
    dir: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEventDestination {
    enabled: Option<bool>,
    matching_event_types: Option<Spanned<Vec<Spanned<String>>>>,
    sns_topic_arn: Option<Spanned<String>>,
    event_bus_arn: Option<Spanned<String>>,
    firehose_stream_arn: Option<Spanned<String>>,
    iam_role_arn: Option<Spanned<String>>,
    cloudwatch: Option<Spanned<Vec<RawDimension>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDimension {
    name: Spanned<String>,
    value_source: Spanned<String>,
    default_value: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    sandbox: Option<bool>,
    max_send_rate: Option<Spanned<RawNumber>>,
    max_24_hour_send: Option<Spanned<i64>>,
    sending_enabled: Option<bool>,
    suppression_file: Option<Spanned<String>>,
    shared: Option<RawShared>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShared {
    redis_url: Spanned<String>,
    key_prefix: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    on_unavailable: Option<Spanned<String>>,
    replicas: Option<Spanned<i64>>,
}

/// A TOML integer or float (`max_send_rate = 14` and `= 0.5` both read).
struct RawNumber(f64);

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawNumber, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawNumber, E> {
                Ok(RawNumber(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawNumber, E> {
                Ok(RawNumber(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawNumber, E> {
                Ok(RawNumber(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    access_keys: Option<Vec<RawAccessKey>>,
    api: Option<bool>,
    ui_users: Option<Vec<RawUiUser>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessKey {
    id: Spanned<String>,
    secret_env: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    users: Spanned<Vec<RawAuthUser>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthUser {
    username: Spanned<String>,
    password_hash: Spanned<String>,
    allowed_senders: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerification {
    sender: Option<Spanned<String>>,
    link_ttl: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    dns_resolver: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    hostname: Option<Spanned<String>>,
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    listen_tls: Option<Spanned<Vec<Spanned<String>>>>,
    region: Option<Spanned<String>>,
    max_message_size: Option<Spanned<i64>>,
    max_recipients: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    idle_timeout: Option<Spanned<String>>,
    max_inflight_bytes: Option<Spanned<i64>>,
    shutdown_timeout: Option<Spanned<String>>,
    trusted_networks: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
    require: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    require_verified_sender: Option<bool>,
    inherit_domain_default: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Spanned<String>,
    username: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    strip_ses_headers: Option<bool>,
    timeout: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    role_arn: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfigurationSet {
    sending_enabled: Option<bool>,
    event_destinations: Option<Spanned<BTreeMap<Spanned<String>, RawEventDestination>>>,
    tags: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    resource_tags: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    verified: Option<bool>,
    default_configuration_set: Option<Spanned<String>>,
    /// A domain's DNS token; on an address, the older name of `link_nonce`.
    verification_token: Option<Spanned<String>>,
    link_nonce: Option<Spanned<String>>,
    resource_tags: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

// ---------------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------------

struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Source<'_> {
    fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    fn location(&self, span: Range<usize>, key: impl Into<String>) -> Location {
        let (line, column) = line_column(self.text, span.start);
        Location {
            key: key.into(),
            line,
            column,
        }
    }

    /// A serde/TOML error: its span is looked up in the document to name the key.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end_matches('\n');
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            // The span is the table that lacks the field; empty for the top level.
            let key = match key_at(self.text, span.start) {
                table if !span.is_empty() && !table.is_empty() => format!("{table}.{field}"),
                _ => field.to_owned(),
            };
            return self.error(span, key, "missing required key");
        }
        let key = key_at(self.text, span.start);
        let message = match message.strip_prefix("unknown field ") {
            // "unknown field `foo`, expected `a` or `b`"
            Some(rest) => match rest.split_once(", ") {
                Some((_, expected)) => format!("unknown key; {expected}"),
                None => "unknown key".to_owned(),
            },
            None => message
                .replace("expected i64", "expected an integer")
                .replace("expected a boolean", "expected true or false"),
        };
        if key.is_empty() && !span.is_empty() {
            // A syntax error such as a duplicate key: quote the text it is about.
            let quoted = self.text.get(span.clone()).unwrap_or_default();
            if !quoted.is_empty() && !quoted.contains('\n') && quoted.len() <= 64 {
                return self.error(span, "", format!("{message}: `{quoted}`"));
            }
        }
        self.error(span, key, message)
    }

    fn build(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut secrets = Secrets::default();
        let (tls, tls_at) = match raw.tls {
            Some(tls) => {
                let (tls, at) = self.tls(tls)?;
                (Some(tls), Some(at))
            }
            None => (None, None),
        };
        let server = self.server(raw.server, tls.is_some())?;
        let strip_ses_headers = raw.upstream.strip_ses_headers.unwrap_or(false);
        let ca_file_at = raw
            .upstream
            .ca_file
            .as_ref()
            .map(|f| self.location(f.span(), "upstream.ca_file"));
        let upstream = self.upstream(raw.upstream, &server.hostname, &mut secrets.refs)?;
        let admin = match raw.admin {
            Some(admin) => Some(self.admin(admin, &mut secrets.refs)?),
            None => None,
        };
        let verification =
            self.verification(raw.verification, &server.hostname, &mut secrets.refs)?;
        let (account_rules, account) = self.account(raw.account)?;
        let events = self.events(raw.events)?;
        let (policy, resources) = self.policy(
            raw.policy,
            raw.configuration_sets,
            raw.identities,
            &server.region,
            server.max_recipients,
            account_rules,
        )?;
        let auth = match raw.auth {
            Some(auth) => Some(self.auth(auth.into_inner())?),
            None => None,
        };
        let capture = CaptureConfig {
            max_messages: to_usize(self.integer(
                raw.capture.max_messages,
                "capture.max_messages",
                crate::capture::DEFAULT_MAX_MESSAGES as u64,
            )?),
            max_bytes: to_usize(self.integer(
                raw.capture.max_bytes,
                "capture.max_bytes",
                crate::capture::DEFAULT_MAX_BYTES as u64,
            )?),
        };
        Ok(Config {
            path: self.path.to_owned(),
            server,
            policy,
            account,
            events,
            upstream,
            strip_ses_headers,
            admin,
            verification,
            resources,
            auth,
            capture,
            secrets,
            ca_file_at,
            tls,
            tls_at,
            source: std::sync::Arc::from(""),
        })
    }

    fn auth(&self, raw: RawAuth) -> Result<AuthConfig, ConfigError> {
        if raw.users.get_ref().is_empty() {
            return Err(self.error(
                raw.users.span(),
                "auth.users",
                "[auth] needs at least one user; remove the section to turn AUTH off",
            ));
        }
        let mut users: Vec<AuthUser> = Vec::new();
        for (i, user) in raw.users.into_inner().into_iter().enumerate() {
            let taken = users.iter().any(|u| u.username == *user.username.get_ref());
            self.credentials(
                &format!("auth.users[{i}]"),
                &user.username,
                &user.password_hash,
                taken,
            )?;
            let allowed_senders = match user.allowed_senders {
                None => None,
                Some(list) => {
                    let mut allowed = Vec::with_capacity(list.len());
                    for (j, item) in list.into_iter().enumerate() {
                        let value = item.get_ref();
                        let ok = if value.contains('@') {
                            is_address(value)
                        } else {
                            is_domain(value)
                        };
                        if !ok {
                            return Err(self.error(
                                item.span(),
                                format!("auth.users[{i}].allowed_senders[{j}]"),
                                format!("{value:?} is neither an address nor a domain"),
                            ));
                        }
                        allowed.push(value.to_ascii_lowercase());
                    }
                    Some(allowed)
                }
            };
            users.push(AuthUser {
                username: user.username.into_inner(),
                password_hash: user.password_hash.into_inner(),
                allowed_senders,
            });
        }
        Ok(AuthConfig { users })
    }

    /// A user's name and password hash (`[auth] users`, `[admin] ui_users`): a name of
    /// 1-256 characters, none a control character, not `taken`; an argon2id hash.
    fn credentials(
        &self,
        key: &str,
        username: &Spanned<String>,
        password_hash: &Spanned<String>,
        taken: bool,
    ) -> Result<(), ConfigError> {
        let name = username.get_ref();
        if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
            return Err(self.error(
                username.span(),
                format!("{key}.username"),
                "a username is 1-256 characters, none of them a control character",
            ));
        }
        if taken {
            return Err(self.error(
                username.span(),
                format!("{key}.username"),
                format!("user {name:?} is listed twice"),
            ));
        }
        if !crate::password::is_argon2id_hash(password_hash.get_ref()) {
            return Err(self.error(
                password_hash.span(),
                format!("{key}.password_hash"),
                "not an argon2id hash (\"$argon2id$v=19$m=...\"); make one with \
                 `sesrelay hash-password`",
            ));
        }
        Ok(())
    }

    /// `[tls]`; whether the files exist is checked by `Config::check_files`.
    fn tls(&self, raw: RawTls) -> Result<(TlsConfig, (Location, Location)), ConfigError> {
        for (value, key) in [(&raw.cert, "tls.cert"), (&raw.key, "tls.key")] {
            if value.get_ref().is_empty() {
                return Err(self.error(value.span(), key, "a file path is needed here"));
            }
        }
        let cert_at = self.location(raw.cert.span(), "tls.cert");
        let key_at = self.location(raw.key.span(), "tls.key");
        let tls = TlsConfig {
            cert: PathBuf::from(raw.cert.into_inner()),
            key: PathBuf::from(raw.key.into_inner()),
            require: raw.require.unwrap_or(false),
        };
        Ok((tls, (cert_at, key_at)))
    }

    fn server(&self, raw: RawServer, tls: bool) -> Result<ServerConfig, ConfigError> {
        let hostname = match raw.hostname {
            Some(h) => {
                if !is_domain(h.get_ref()) {
                    return Err(self.error(
                        h.span(),
                        "server.hostname",
                        format!("{:?} is not a host name", h.get_ref()),
                    ));
                }
                h.into_inner()
            }
            None => "sesrelay.local".to_owned(),
        };
        let listen = match raw.listen {
            Some(list) if list.get_ref().is_empty() => {
                return Err(self.error(
                    list.span(),
                    "server.listen",
                    "the relay needs at least one address to listen on",
                ));
            }
            Some(list) => self.socket_addrs(list.into_inner(), "server.listen")?,
            None => vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
        };
        let listen_tls = match raw.listen_tls {
            Some(list) if !tls && !list.get_ref().is_empty() => {
                return Err(self.error(
                    list.span(),
                    "server.listen_tls",
                    "implicit TLS needs a [tls] section with cert and key",
                ));
            }
            Some(list) => self.socket_addrs(list.into_inner(), "server.listen_tls")?,
            None => Vec::new(),
        };
        let region = match raw.region {
            Some(r) => {
                let ok = !r.get_ref().is_empty()
                    && r.get_ref().len() <= 64
                    && r.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !ok {
                    return Err(self.error(
                        r.span(),
                        "server.region",
                        "a region is 1-64 letters, digits and '-', such as \"us-east-1\"",
                    ));
                }
                r.into_inner()
            }
            None => "local".to_owned(),
        };
        let message_size_span = raw.max_message_size.as_ref().map(Spanned::span);
        let inflight_span = raw.max_inflight_bytes.as_ref().map(Spanned::span);
        let max_message_size =
            self.integer(raw.max_message_size, "server.max_message_size", 41_943_040)?;
        let max_recipients = self.integer(raw.max_recipients, "server.max_recipients", 50)?;
        let max_connections = self.integer(raw.max_connections, "server.max_connections", 1000)?;
        let idle_timeout =
            self.duration(raw.idle_timeout, "server.idle_timeout", TIMEOUT_RANGE, 300)?;
        let max_inflight_bytes = self.integer(
            raw.max_inflight_bytes,
            "server.max_inflight_bytes",
            268_435_456,
        )?;
        if max_message_size > max_inflight_bytes {
            // Name the key the operator wrote; when both are written, the message size.
            return Err(match (message_size_span, inflight_span) {
                (Some(span), _) => self.error(
                    span,
                    "server.max_message_size",
                    format!(
                        "must not exceed server.max_inflight_bytes ({max_inflight_bytes}): \
                         a message that large could never be held"
                    ),
                ),
                (None, span) => self.error(
                    span.unwrap_or(0..0),
                    "server.max_inflight_bytes",
                    format!(
                        "must be at least server.max_message_size ({max_message_size}, \
                         its default): a message that large could never be held"
                    ),
                ),
            });
        }
        let shutdown_timeout = self.duration(
            raw.shutdown_timeout,
            "server.shutdown_timeout",
            TIMEOUT_RANGE,
            25,
        )?;
        let trusted_networks = match raw.trusted_networks {
            Some(list) => {
                let mut nets = Vec::with_capacity(list.len());
                for item in list {
                    nets.push(parse_network(item.get_ref()).ok_or_else(|| {
                        self.error(
                            item.span(),
                            "server.trusted_networks",
                            format!(
                                "{:?} is not a network; write an address or a CIDR block such as \"10.0.0.0/8\"",
                                item.get_ref()
                            ),
                        )
                    })?);
                }
                nets
            }
            None => vec![
                "127.0.0.0/8".parse().expect("valid literal"),
                "::1/128".parse().expect("valid literal"),
            ],
        };
        Ok(ServerConfig {
            hostname,
            listen,
            listen_tls,
            region,
            max_message_size: to_usize(max_message_size),
            max_recipients: to_usize(max_recipients),
            max_connections: to_usize(max_connections),
            idle_timeout,
            max_inflight_bytes,
            shutdown_timeout,
            trusted_networks,
        })
    }

    fn socket_addrs(
        &self,
        list: Vec<Spanned<String>>,
        key: &str,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut addrs = Vec::with_capacity(list.len());
        for item in list {
            let addr: SocketAddr = item.get_ref().parse().map_err(|_| {
                self.error(
                    item.span(),
                    key,
                    format!(
                        "{:?} is not an address and port such as \"127.0.0.1:2525\" or \"[::1]:2525\"",
                        item.get_ref()
                    ),
                )
            })?;
            addrs.push(addr);
        }
        Ok(addrs)
    }

    /// An integer key in its range (see [`RANGES`]), or `default` when absent.
    fn integer(
        &self,
        value: Option<Spanned<i64>>,
        key: &str,
        default: u64,
    ) -> Result<u64, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let range = INTEGER_RANGES
            .iter()
            .find(|r| r.key == key)
            .copied()
            .unwrap_or(IntegerRange {
                key: "",
                min: 1,
                max: i64::MAX as u64,
                note: "",
            });
        match u64::try_from(*value.get_ref()) {
            Ok(n) if (range.min..=range.max).contains(&n) => Ok(n),
            _ => Err(self.error(
                value.span(),
                key,
                format!(
                    "must be an integer from {} to {}{}, not {}",
                    range.min,
                    range.max,
                    range.note,
                    value.get_ref()
                ),
            )),
        }
    }

    /// A duration key within `limits`, or `default_secs` when absent.
    fn duration(
        &self,
        value: Option<Spanned<String>>,
        key: &str,
        limits: DurationRange,
        default_secs: u64,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(Duration::from_secs(default_secs));
        };
        let Ok(d) = humantime::parse_duration(value.get_ref()) else {
            return Err(self.error(
                value.span(),
                key,
                format!(
                    "{:?} is not a duration; write a positive number with a unit, such as \"30s\" or \"5m\"",
                    value.get_ref()
                ),
            ));
        };
        if d < limits.min || d > limits.max {
            return Err(self.error(
                value.span(),
                key,
                format!(
                    "must be a duration from {} to {}, not {:?}",
                    limits.min_text,
                    limits.max_text,
                    value.get_ref()
                ),
            ));
        }
        Ok(d)
    }

    fn admin(
        &self,
        raw: RawAdmin,
        secrets: &mut Vec<SecretRef>,
    ) -> Result<AdminConfig, ConfigError> {
        let listen = match raw.listen {
            Some(l) => l.get_ref().parse().map_err(|_| {
                self.error(
                    l.span(),
                    "admin.listen",
                    format!(
                        "{:?} is not an address and port such as \"127.0.0.1:2580\"",
                        l.get_ref()
                    ),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 2580)),
        };
        let public_url = match raw.public_url {
            Some(u) => {
                let ok = url::Url::parse(u.get_ref())
                    .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
                if !ok {
                    return Err(self.error(
                        u.span(),
                        "admin.public_url",
                        format!("{:?} is not an http:// or https:// URL", u.get_ref()),
                    ));
                }
                u.into_inner().trim_end_matches('/').to_owned()
            }
            None => format!("http://{listen}"),
        };
        for (i, key) in raw.access_keys.unwrap_or_default().into_iter().enumerate() {
            let id = key.id.get_ref();
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(self.error(
                    key.id.span(),
                    format!("admin.access_keys[{i}].id"),
                    "an access key id is letters and digits, such as \"AKIAIOSFODNN7EXAMPLE\"",
                ));
            }
            secrets.push(SecretRef {
                at: self.location(
                    key.secret_env.span(),
                    format!("admin.access_keys[{i}].secret_env"),
                ),
                var: key.secret_env.into_inner(),
                purpose: SecretPurpose::AccessKey {
                    id: key.id.into_inner(),
                },
            });
        }
        let mut ui_users: Vec<UiUser> = Vec::new();
        for (i, user) in raw.ui_users.unwrap_or_default().into_iter().enumerate() {
            let taken = ui_users
                .iter()
                .any(|u| u.username == *user.username.get_ref());
            self.credentials(
                &format!("admin.ui_users[{i}]"),
                &user.username,
                &user.password_hash,
                taken,
            )?;
            ui_users.push(UiUser {
                username: user.username.into_inner(),
                password_hash: user.password_hash.into_inner(),
            });
        }
        Ok(AdminConfig {
            listen,
            public_url,
            access_keys: Vec::new(),
            api: raw.api.unwrap_or(true),
            ui_users,
        })
    }

    fn verification(
        &self,
        raw: RawVerification,
        hostname: &str,
        secrets: &mut Vec<SecretRef>,
    ) -> Result<VerificationConfig, ConfigError> {
        let sender = match raw.sender {
            Some(s) => {
                if !is_address(s.get_ref()) {
                    return Err(self.error(
                        s.span(),
                        "verification.sender",
                        format!("{:?} is not an email address", s.get_ref()),
                    ));
                }
                s.into_inner()
            }
            None => format!("no-reply@{hostname}"),
        };
        let link_ttl = self.duration(
            raw.link_ttl,
            "verification.link_ttl",
            LINK_TTL_RANGE,
            24 * 3600,
        )?;
        if let Some(var) = raw.secret_env {
            secrets.push(SecretRef {
                at: self.location(var.span(), "verification.secret_env"),
                var: var.into_inner(),
                purpose: SecretPurpose::LinkKey,
            });
        }
        let dns_resolver = match raw.dns_resolver {
            Some(r) => Some(
                r.get_ref()
                    .parse::<SocketAddr>()
                    .or_else(|_| r.get_ref().parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        self.error(
                            r.span(),
                            "verification.dns_resolver",
                            format!(
                                "{:?} is not an address such as \"127.0.0.1\" or \"127.0.0.1:5353\"",
                                r.get_ref()
                            ),
                        )
                    })?,
            ),
            None => None,
        };
        Ok(VerificationConfig {
            sender,
            link_ttl,
            secret: None,
            dns_resolver,
        })
    }

    /// A domain's token or an address's link nonce: 1-256 printable ASCII characters.
    fn token(
        &self,
        value: Option<Spanned<String>>,
        identity_key: &str,
        name: &str,
    ) -> Result<Option<String>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let text = value.get_ref();
        if text.is_empty() || text.len() > 256 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.error(
                value.span(),
                format!("{identity_key}.{name}"),
                format!("a {name} is 1-256 printable ASCII characters"),
            ));
        }
        Ok(Some(value.into_inner()))
    }

    /// Resource tags (AWS tagging): keys 1-128 and values 0-256 characters.
    fn resource_tags(
        &self,
        raw: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
        key: &str,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let raw = raw.unwrap_or_default();
        if raw.len() > MAX_RESOURCE_TAGS {
            // Point at the tag written last: it is one too many.
            let last = raw.keys().map(Spanned::span).max_by_key(|s| s.start);
            return Err(self.error(
                last.unwrap_or(0..0),
                format!("{key}.resource_tags"),
                format!(
                    "at most {MAX_RESOURCE_TAGS} resource tags (as AWS allows), not {}",
                    raw.len()
                ),
            ));
        }
        let mut tags = BTreeMap::new();
        for (name, value) in raw {
            if let Err(message) = validate_resource_tag(name.get_ref(), value.get_ref()) {
                return Err(self.error(
                    name.span(),
                    format!("{key}.resource_tags.{}", quote_key(name.get_ref())),
                    message,
                ));
            }
            tags.insert(name.into_inner(), value.into_inner());
        }
        Ok(tags)
    }

    fn upstream(
        &self,
        raw: RawUpstream,
        hostname: &str,
        secrets: &mut Vec<SecretRef>,
    ) -> Result<UpstreamSettings, ConfigError> {
        let mut target = parse_upstream_url(raw.url.get_ref())
            .map_err(|m| self.error(raw.url.span(), "upstream.url", m))?;
        let ses = self.ses_upstream(&mut target, &raw)?;
        let username = raw.username.filter(|u| !u.get_ref().is_empty());
        let password_env = raw.password_env.filter(|p| !p.get_ref().is_empty());
        match (username, password_env) {
            (None, None) => {}
            (Some(user), None) => {
                return Err(self.error(
                    user.span(),
                    "upstream.username",
                    "upstream AUTH needs upstream.password_env: the name of the environment \
                     variable that holds the password",
                ));
            }
            (None, Some(var)) => {
                return Err(self.error(
                    var.span(),
                    "upstream.password_env",
                    "upstream.password_env is set but upstream.username is empty",
                ));
            }
            (Some(user), Some(var)) => {
                if matches!(target, UpstreamTarget::Dir(_)) {
                    return Err(self.error(
                        raw.url.span(),
                        "upstream.url",
                        "a dir: upstream takes no username/password_env",
                    ));
                }
                if matches!(target, UpstreamTarget::Ses(_)) {
                    return Err(self.error(
                        user.span(),
                        "upstream.username",
                        "the SES API upstream signs its requests with AWS credentials from the \
                         environment, a profile or a role; it takes no username/password_env",
                    ));
                }
                secrets.push(SecretRef {
                    at: self.location(var.span(), "upstream.password_env"),
                    var: var.into_inner(),
                    purpose: SecretPurpose::UpstreamPassword {
                        username: user.into_inner(),
                    },
                });
            }
        }
        let timeout = self.duration(raw.timeout, "upstream.timeout", TIMEOUT_RANGE, 120)?;
        // Whether the file exists is checked by `Config::check_files`.
        let ca_file = raw.ca_file.map(|f| PathBuf::from(f.into_inner()));
        Ok(UpstreamSettings {
            target,
            credentials: None,
            timeout,
            ca_file,
            hello_name: hostname.to_owned(),
            ses,
        })
    }

    /// `upstream.region`, `upstream.profile` and `upstream.role_arn`, which only the SES API
    /// upstream takes; an explicit endpoint's region is filled in here.
    fn ses_upstream(
        &self,
        target: &mut UpstreamTarget,
        raw: &RawUpstream,
    ) -> Result<SesCredentials, ConfigError> {
        let UpstreamTarget::Ses(endpoint) = target else {
            for (value, key) in [
                (&raw.region, "upstream.region"),
                (&raw.profile, "upstream.profile"),
                (&raw.role_arn, "upstream.role_arn"),
            ] {
                if let Some(value) = value {
                    return Err(self.error(
                        value.span(),
                        key,
                        format!("{key} is only for the SES API upstream (url = \"ses://REGION\")"),
                    ));
                }
            }
            return Ok(SesCredentials::default());
        };
        if let Some(region) = &raw.region {
            if !is_region_name(region.get_ref()) {
                return Err(self.error(
                    region.span(),
                    "upstream.region",
                    format!(
                        "{:?} is not an AWS region name, such as \"us-east-1\"",
                        region.get_ref()
                    ),
                ));
            }
            match endpoint {
                SesEndpoint::Standard { .. } => {
                    return Err(self.error(
                        region.span(),
                        "upstream.region",
                        "the region is in the URL (ses://REGION); upstream.region is for an \
                         explicit endpoint (ses+https://HOST)",
                    ));
                }
                SesEndpoint::Explicit { region: r, .. } => *r = region.get_ref().clone(),
            }
        }
        if endpoint.region().is_empty() {
            return Err(self.error(
                raw.url.span(),
                "upstream.url",
                "requests to an explicit SES endpoint are signed for a region, and this host \
                 does not name one: give upstream.region",
            ));
        }
        let profile = match &raw.profile {
            Some(p) if p.get_ref().is_empty() || p.get_ref().chars().any(char::is_whitespace) => {
                return Err(self.error(
                    p.span(),
                    "upstream.profile",
                    "a profile name is a non-empty word, as in ~/.aws/config's [profile NAME]",
                ));
            }
            p => p.as_ref().map(|p| p.get_ref().clone()),
        };
        let role_arn = match &raw.role_arn {
            Some(arn) if !is_role_arn(arn.get_ref()) => {
                return Err(self.error(
                    arn.span(),
                    "upstream.role_arn",
                    format!(
                        "{:?} is not an IAM role ARN, such as \"arn:aws:iam::123456789012:role/sesrelay\"",
                        arn.get_ref()
                    ),
                ));
            }
            arn => arn.as_ref().map(|a| a.get_ref().clone()),
        };
        Ok(SesCredentials { profile, role_arn })
    }

    /// `[events]`: the account id and where each SES destination's records go.
    fn events(&self, raw: RawEvents) -> Result<EventsConfig, ConfigError> {
        let mut events = EventsConfig::default();
        if let Some(id) = raw.account_id {
            if !(id.get_ref().len() == 12 && id.get_ref().bytes().all(|b| b.is_ascii_digit())) {
                return Err(self.error(
                    id.span(),
                    "events.account_id",
                    "an AWS account id is 12 digits, such as \"000000000000\"",
                ));
            }
            events.account_id = id.into_inner();
        }
        if let Some(dir) = raw.dir {
            if dir.get_ref().is_empty() {
                return Err(self.error(dir.span(), "events.dir", "must name a directory"));
            }
            events.dir = PathBuf::from(dir.into_inner());
        }
        for (kind, raw_map, service) in [
            ("sns", raw.sns, ArnService::Sns),
            ("eventbridge", raw.eventbridge, ArnService::EventBridge),
        ] {
            for (arn, mapping) in raw_map {
                let key = format!("events.{kind}.{}", quote_key(arn.get_ref()));
                self.arn(&arn, &key, service)?;
                if mapping.endpoints.get_ref().is_empty() {
                    return Err(self.error(
                        mapping.endpoints.span(),
                        format!("{key}.endpoints"),
                        "at least one http:// or https:// URL",
                    ));
                }
                let mut urls = Vec::new();
                for (i, url) in mapping.endpoints.into_inner().into_iter().enumerate() {
                    let ok = url::Url::parse(url.get_ref()).is_ok_and(|u| {
                        matches!(u.scheme(), "http" | "https") && u.host().is_some()
                    });
                    if !ok {
                        return Err(self.error(
                            url.span(),
                            format!("{key}.endpoints[{i}]"),
                            format!("{:?} is not an http:// or https:// URL", url.get_ref()),
                        ));
                    }
                    urls.push(url.into_inner());
                }
                match service {
                    ArnService::Sns => events.sns.insert(arn.into_inner(), urls),
                    _ => events.eventbridge.insert(arn.into_inner(), urls),
                };
            }
        }
        for (arn, mapping) in raw.firehose {
            let key = format!("events.firehose.{}", quote_key(arn.get_ref()));
            self.arn(&arn, &key, ArnService::Firehose)?;
            if mapping.dir.get_ref().is_empty() {
                return Err(self.error(
                    mapping.dir.span(),
                    format!("{key}.dir"),
                    "must name a directory",
                ));
            }
            events
                .firehose
                .insert(arn.into_inner(), PathBuf::from(mapping.dir.into_inner()));
        }
        Ok(events)
    }

    /// An ARN of `service`'s resources: `arn:<partition>:<service>:<region>:<account>:<resource>`.
    fn arn(
        &self,
        arn: &Spanned<String>,
        key: &str,
        service: ArnService,
    ) -> Result<(), ConfigError> {
        if is_arn_of(arn.get_ref(), service) {
            Ok(())
        } else {
            Err(self.error(
                arn.span(),
                key,
                format!(
                    "{:?} is not {}, such as \"{}\"",
                    arn.get_ref(),
                    service.what(),
                    service.example()
                ),
            ))
        }
    }

    /// A set's `event_destinations`: at most 10, each with one target.
    fn event_destinations(
        &self,
        raw: Option<Spanned<BTreeMap<Spanned<String>, RawEventDestination>>>,
        set_key: &str,
    ) -> Result<BTreeMap<String, EventDestination>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(BTreeMap::new());
        };
        let span = raw.span();
        let raw = raw.into_inner();
        if raw.len() > MAX_DESTINATIONS_PER_SET {
            return Err(self.error(
                span,
                format!("{set_key}.event_destinations"),
                format!(
                    "at most {MAX_DESTINATIONS_PER_SET} event destinations per configuration set (as SES allows), not {}",
                    raw.len()
                ),
            ));
        }
        let mut out = BTreeMap::new();
        for (name, dest) in raw {
            let key = format!("{set_key}.event_destinations.{}", quote_key(name.get_ref()));
            if !is_valid_configuration_set_name(name.get_ref()) {
                return Err(self.error(
                    name.span(),
                    key,
                    "an event destination name is 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                ));
            }
            let Some(types) = dest.matching_event_types else {
                return Err(self.error(
                    name.span(),
                    format!("{key}.matching_event_types"),
                    "missing required key",
                ));
            };
            let types_span = types.span();
            let mut matching = Vec::new();
            for t in types.into_inner() {
                let Some(event_type) = EventType::from_api_name(t.get_ref()) else {
                    return Err(self.error(
                        t.span(),
                        format!("{key}.matching_event_types"),
                        format!(
                            "{:?} is not an event type; one of {}",
                            t.get_ref(),
                            EventType::ALL.map(EventType::api_name).join(", ")
                        ),
                    ));
                };
                matching.push(event_type);
            }
            if matching.is_empty() {
                return Err(self.error(
                    types_span,
                    format!("{key}.matching_event_types"),
                    "at least one event type",
                ));
            }
            matching.sort();
            matching.dedup();
            let mut targets = Vec::new();
            if let Some(arn) = dest.sns_topic_arn {
                self.arn(&arn, &format!("{key}.sns_topic_arn"), ArnService::Sns)?;
                targets.push(DestinationTarget::Sns {
                    topic_arn: arn.into_inner(),
                });
            }
            if let Some(arn) = dest.event_bus_arn {
                self.arn(
                    &arn,
                    &format!("{key}.event_bus_arn"),
                    ArnService::EventBridge,
                )?;
                targets.push(DestinationTarget::EventBridge {
                    event_bus_arn: arn.into_inner(),
                });
            }
            match (dest.firehose_stream_arn, dest.iam_role_arn) {
                (Some(arn), role) => {
                    self.arn(
                        &arn,
                        &format!("{key}.firehose_stream_arn"),
                        ArnService::Firehose,
                    )?;
                    targets.push(DestinationTarget::Firehose {
                        delivery_stream_arn: arn.into_inner(),
                        iam_role_arn: role.map(Spanned::into_inner).unwrap_or_default(),
                    });
                }
                (None, Some(role)) => {
                    return Err(self.error(
                        role.span(),
                        format!("{key}.iam_role_arn"),
                        "iam_role_arn goes with firehose_stream_arn",
                    ));
                }
                (None, None) => {}
            }
            if let Some(dimensions) = dest.cloudwatch {
                let span = dimensions.span();
                let mut out_dims = Vec::new();
                for (i, d) in dimensions.into_inner().into_iter().enumerate() {
                    let dkey = format!("{key}.cloudwatch[{i}]");
                    let Some(source) =
                        DimensionValueSource::from_api_name(d.value_source.get_ref())
                    else {
                        return Err(self.error(
                            d.value_source.span(),
                            format!("{dkey}.value_source"),
                            "one of MESSAGE_TAG, EMAIL_HEADER, LINK_TAG",
                        ));
                    };
                    if !is_dimension_text(d.name.get_ref()) {
                        return Err(self.error(
                            d.name.span(),
                            format!("{dkey}.name"),
                            "a dimension name is 1-256 characters of A-Z, a-z, 0-9, '_', '-', '.', ':'",
                        ));
                    }
                    if !is_dimension_text(d.default_value.get_ref()) {
                        return Err(self.error(
                            d.default_value.span(),
                            format!("{dkey}.default_value"),
                            "a default value is 1-256 characters of A-Z, a-z, 0-9, '_', '-', '.', '@'",
                        ));
                    }
                    out_dims.push(CloudWatchDimension {
                        name: d.name.into_inner(),
                        value_source: source,
                        default_value: d.default_value.into_inner(),
                    });
                }
                if out_dims.is_empty() {
                    return Err(self.error(
                        span,
                        format!("{key}.cloudwatch"),
                        "at least one dimension",
                    ));
                }
                targets.push(DestinationTarget::CloudWatch {
                    dimensions: out_dims,
                });
            }
            let target = match targets.len() {
                1 => targets.remove(0),
                n => {
                    return Err(self.error(
                        name.span(),
                        key,
                        format!(
                            "an event destination has exactly one of sns_topic_arn, event_bus_arn, \
                             firehose_stream_arn, cloudwatch; this one has {n}"
                        ),
                    ));
                }
            };
            out.insert(
                name.into_inner(),
                EventDestination {
                    enabled: dest.enabled.unwrap_or(false),
                    matching_event_types: matching,
                    target,
                },
            );
        }
        Ok(out)
    }

    /// `[account]`: the sandbox's quotas apply unless the file gives its own.
    fn account(&self, raw: RawAccount) -> Result<(AccountRules, AccountLimits), ConfigError> {
        let sandbox = raw.sandbox.unwrap_or(false);
        let max_send_rate = match raw.max_send_rate {
            None if sandbox => SANDBOX_SEND_RATE,
            None => 0.0,
            Some(rate) => {
                let n = rate.get_ref().0;
                if !(n.is_finite() && (0.0..=MAX_SEND_RATE).contains(&n)) {
                    return Err(self.error(
                        rate.span(),
                        "account.max_send_rate",
                        format!(
                            "must be a number of recipients per second from 0 (no limit) to {MAX_SEND_RATE}, not {n}"
                        ),
                    ));
                }
                n
            }
        };
        let default_quota = if sandbox { SANDBOX_24_HOUR_SEND } else { 0 };
        let max_24_hour_send = self.integer(
            raw.max_24_hour_send,
            "account.max_24_hour_send",
            default_quota,
        )?;
        let suppression_file = match raw.suppression_file {
            Some(file) if file.get_ref().is_empty() => {
                return Err(self.error(
                    file.span(),
                    "account.suppression_file",
                    "must name a file; remove the key to keep the list beside the configuration",
                ));
            }
            Some(file) => Some(PathBuf::from(file.into_inner())),
            None => None,
        };
        Ok((
            AccountRules {
                sandbox,
                sending_enabled: raw.sending_enabled.unwrap_or(true),
            },
            AccountLimits {
                max_send_rate,
                max_24_hour_send,
                suppression_file,
                shared: raw.shared.map(|shared| self.shared(shared)).transpose()?,
            },
        ))
    }

    /// `[account.shared]`.
    fn shared(&self, raw: RawShared) -> Result<SharedAccountConfig, ConfigError> {
        let url = raw.redis_url.get_ref();
        let parsed = url::Url::parse(url).ok();
        match parsed.as_ref().map(url::Url::scheme) {
            Some("redis" | "valkey") if parsed.as_ref().is_some_and(|u| u.host().is_some()) => {}
            Some("redis+unix" | "unix") => {}
            Some("rediss" | "valkeys") => {
                return Err(self.error(
                    raw.redis_url.span(),
                    "account.shared.redis_url",
                    "TLS to Redis (rediss://) is not built into sesrelay: reach Redis on a \
                     private network or through a TLS sidecar, with redis://",
                ));
            }
            _ => {
                return Err(self.error(
                    raw.redis_url.span(),
                    "account.shared.redis_url",
                    format!(
                        "{url:?} is not a Redis URL; write redis://HOST[:PORT][/DB] (user and \
                         password may precede the host) or redis+unix:///PATH"
                    ),
                ));
            }
        }
        if redis::Client::open(url.as_str()).is_err() {
            return Err(self.error(
                raw.redis_url.span(),
                "account.shared.redis_url",
                format!("{url:?} is not a Redis URL the client accepts"),
            ));
        }
        let key_prefix = match raw.key_prefix {
            None => "sesrelay:".to_owned(),
            Some(prefix)
                if prefix.get_ref().len() > 128
                    || prefix
                        .get_ref()
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace() || c == '{' || c == '}') =>
            {
                return Err(self.error(
                    prefix.span(),
                    "account.shared.key_prefix",
                    "at most 128 characters, without spaces, control characters or braces (the \
                     keys' hash tag is sesrelay's)",
                ));
            }
            Some(prefix) => prefix.into_inner(),
        };
        let timeout = match raw.timeout {
            None => Duration::from_millis(50),
            some => self.duration(some, "account.shared.timeout", SHARED_TIMEOUT_RANGE, 0)?,
        };
        let on_unavailable = match raw.on_unavailable {
            None => OnUnavailable::Local,
            Some(value) => match value.get_ref().as_str() {
                "local" => OnUnavailable::Local,
                "closed" => OnUnavailable::Closed,
                "open" => OnUnavailable::Open,
                other => {
                    return Err(self.error(
                        value.span(),
                        "account.shared.on_unavailable",
                        format!("{other:?} is not one of \"local\", \"closed\", \"open\""),
                    ));
                }
            },
        };
        let replicas = match raw.replicas {
            None => 1,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(n @ 1..=10_000) => n,
                _ => {
                    return Err(self.error(
                        n.span(),
                        "account.shared.replicas",
                        format!(
                            "must be a number of replicas from 1 to 10000, not {}",
                            n.get_ref()
                        ),
                    ));
                }
            },
        };
        Ok(SharedAccountConfig {
            redis_url: url.clone(),
            key_prefix,
            timeout,
            on_unavailable,
            replicas,
        })
    }

    fn policy(
        &self,
        raw: RawPolicy,
        raw_sets: BTreeMap<Spanned<String>, RawConfigurationSet>,
        raw_identities: BTreeMap<Spanned<String>, RawIdentity>,
        region: &str,
        max_recipients: usize,
        account: AccountRules,
    ) -> Result<(Policy, Resources), ConfigError> {
        let mut resources = Resources::default();
        let mut sets = BTreeMap::new();
        for (name, set) in raw_sets {
            if !is_valid_configuration_set_name(name.get_ref()) {
                return Err(self.error(
                    name.span(),
                    format!("configuration_sets.{}", quote_key(name.get_ref())),
                    "a configuration set name is 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                ));
            }
            let mut tags = BTreeMap::new();
            for (tag, value) in set.tags.unwrap_or_default() {
                if let Err(e) = validate_tag(tag.get_ref(), value.get_ref()) {
                    return Err(self.error(
                        tag.span(),
                        format!(
                            "configuration_sets.{}.tags.{}",
                            quote_key(name.get_ref()),
                            quote_key(tag.get_ref())
                        ),
                        e.to_string(),
                    ));
                }
                tags.insert(tag.into_inner(), value.into_inner());
            }
            let set_key = format!("configuration_sets.{}", quote_key(name.get_ref()));
            resources.configuration_sets.insert(
                name.get_ref().clone(),
                SetRecord {
                    resource_tags: self.resource_tags(set.resource_tags, &set_key)?,
                    event_destinations: self
                        .event_destinations(set.event_destinations, &set_key)?,
                },
            );
            sets.insert(
                name.into_inner(),
                ConfigurationSet {
                    sending_enabled: set.sending_enabled.unwrap_or(true),
                    tags,
                },
            );
        }

        let mut identities = IdentityTable::default();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (name, identity) in raw_identities {
            let key = format!("identities.{}", quote_key(name.get_ref()));
            let Some(kind) = IdentityKind::of(name.get_ref()) else {
                return Err(self.error(
                    name.span(),
                    key,
                    "an identity is an email address (joe@example.com) or a domain name (example.com)",
                ));
            };
            let lower = name.get_ref().to_ascii_lowercase();
            if let Some(other) = seen.insert(lower.clone(), name.get_ref().clone()) {
                return Err(self.error(
                    name.span(),
                    key,
                    format!(
                        "the same identity as \"{other}\" (identities compare case-insensitively)"
                    ),
                ));
            }
            let default_configuration_set = match identity.default_configuration_set {
                Some(set) => {
                    if !is_valid_configuration_set_name(set.get_ref()) {
                        return Err(self.error(
                            set.span(),
                            format!("{key}.default_configuration_set"),
                            "a configuration set name is 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                        ));
                    }
                    Some(set.into_inner())
                }
                None => None,
            };
            let verification = match (kind, identity.verification_token, identity.link_nonce) {
                (IdentityKind::Domain, token, None) => Verification::Domain {
                    dns_token: self.token(token, &key, "verification_token")?,
                },
                (IdentityKind::Domain, _, Some(nonce)) => {
                    return Err(self.error(
                        nonce.span(),
                        format!("{key}.link_nonce"),
                        "a domain is verified through DNS, not a link: its token is verification_token",
                    ));
                }
                (IdentityKind::Address, Some(token), Some(_)) => {
                    return Err(self.error(
                        token.span(),
                        format!("{key}.verification_token"),
                        "on an address, verification_token is the older name of link_nonce: \
                         give only link_nonce",
                    ));
                }
                (IdentityKind::Address, Some(token), None) => Verification::Address {
                    link_nonce: self.token(Some(token), &key, "verification_token")?,
                },
                (IdentityKind::Address, None, nonce) => Verification::Address {
                    link_nonce: self.token(nonce, &key, "link_nonce")?,
                },
            };
            let resource_tags = self.resource_tags(identity.resource_tags, &key)?;
            identities.insert(
                &lower,
                Identity {
                    verified: identity.verified.unwrap_or(false),
                    default_configuration_set,
                },
            );
            resources.identities.insert(
                lower,
                IdentityRecord {
                    name: name.into_inner(),
                    verification,
                    resource_tags,
                },
            );
        }

        let policy = Policy {
            require_verified_sender: raw.require_verified_sender.unwrap_or(true),
            inherit_domain_default: raw.inherit_domain_default.unwrap_or(false),
            region: region.to_ascii_uppercase(),
            max_recipients,
            account,
            identities,
            configuration_sets: sets,
        };
        Ok((policy, resources))
    }
}

/// The AWS services whose ARNs an event destination names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArnService {
    Sns,
    EventBridge,
    Firehose,
}

impl ArnService {
    fn what(self) -> &'static str {
        match self {
            ArnService::Sns => "an SNS topic ARN",
            ArnService::EventBridge => "an EventBridge event bus ARN",
            ArnService::Firehose => "a Firehose delivery stream ARN",
        }
    }

    fn example(self) -> &'static str {
        match self {
            ArnService::Sns => "arn:aws:sns:us-east-1:000000000000:ses-events",
            ArnService::EventBridge => "arn:aws:events:us-east-1:000000000000:event-bus/default",
            ArnService::Firehose => "arn:aws:firehose:us-east-1:000000000000:deliverystream/ses",
        }
    }
}

/// Whether `arn` is `arn:<partition>:<service>:<region>:<12 digits>:<resource>` for
/// `service` (`event-bus/NAME`, `deliverystream/NAME`), without control characters or
/// spaces, at most 2048 characters.
pub fn is_arn_of(arn: &str, service: ArnService) -> bool {
    if arn.len() > 2048 || arn.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return false;
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, svc, region, account, resource] = parts[..] else {
        return false;
    };
    let (name, want) = match service {
        ArnService::Sns => (Some(resource), "sns"),
        ArnService::EventBridge => (resource.strip_prefix("event-bus/"), "events"),
        ArnService::Firehose => (resource.strip_prefix("deliverystream/"), "firehose"),
    };
    prefix == "arn"
        && partition.starts_with("aws")
        && svc == want
        && !region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && name.is_some_and(|n| !n.is_empty() && !n.contains([':', '/']))
}

/// CloudWatch dimension names and default values: 1-256 of `[A-Za-z0-9_.:@-]`.
pub fn is_dimension_text(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b))
}

/// A checked integer as the `usize` the runtime uses (every range fits a 64-bit `usize`).
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The dotted key whose name or value covers byte `offset` (deepest match), or "".
fn key_at(text: &str, offset: usize) -> String {
    fn walk(table: &DeTable<'_>, offset: usize, prefix: &str, found: &mut Option<String>) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                quote_key(key.get_ref())
            } else {
                format!("{prefix}.{}", quote_key(key.get_ref()))
            };
            let hit = |s: Range<usize>| s.contains(&offset) || (s.is_empty() && s.start == offset);
            if hit(key.span()) || hit(value.span()) {
                *found = Some(path.clone());
            }
            if let DeValue::Table(inner) = value.get_ref() {
                walk(inner, offset, &path, found);
            }
        }
    }
    let Ok(doc) = DeTable::parse(text) else {
        return String::new();
    };
    let mut found = None;
    walk(doc.get_ref(), offset, "", &mut found);
    found.unwrap_or_default()
}

fn quote_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_owned()
    } else {
        format!("\"{key}\"")
    }
}

fn parse_network(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// The URL forms `upstream.url` takes, for error messages.
const UPSTREAM_FORMS: &str =
    "use smtp://HOST:PORT, smtps://HOST:PORT, ses://REGION, ses+https://HOST or dir:PATH";

/// `smtp://host[:port][?tls=required|opportunistic|none]`, `smtps://host[:port]`,
/// `ses://REGION`, `ses+https://host[:port]`, `ses+http://host:port`, `dir:PATH`.
fn parse_upstream_url(url: &str) -> Result<UpstreamTarget, String> {
    if let Some(path) = url.strip_prefix("dir:") {
        if path.is_empty() {
            return Err("dir: needs a directory, such as \"dir:outbox\"".to_owned());
        }
        return Ok(UpstreamTarget::Dir(PathBuf::from(path)));
    }
    if let Some(region) = url.strip_prefix("ses://") {
        if !is_region_name(region) {
            return Err(format!(
                "{url:?}: ses:// takes an AWS region name, such as \"ses://us-east-1\""
            ));
        }
        return Ok(UpstreamTarget::Ses(SesEndpoint::Standard {
            region: region.to_owned(),
        }));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("{url:?} is not a URL ({e}); {UPSTREAM_FORMS}"))?;
    if let Some(scheme @ ("https" | "http")) = parsed.scheme().strip_prefix("ses+") {
        return parse_ses_endpoint(url, scheme, &parsed);
    }
    let (default_port, mut tls) = match parsed.scheme() {
        "smtp" => (25, UpstreamTls::Opportunistic),
        "smtps" => (465, UpstreamTls::Wrapper),
        other => return Err(format!("unknown scheme {other:?}; {UPSTREAM_FORMS}")),
    };
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(format!("{url:?} names no host")),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "put upstream credentials in upstream.username and upstream.password_env, not in the URL"
                .to_owned(),
        );
    }
    if !(parsed.path().is_empty() || parsed.path() == "/") || parsed.fragment().is_some() {
        return Err(format!("{url:?}: an upstream URL has no path"));
    }
    for (name, value) in parsed.query_pairs() {
        match (name.as_ref(), value.as_ref(), parsed.scheme()) {
            ("tls", "required", "smtp") => tls = UpstreamTls::Required,
            ("tls", "opportunistic", "smtp") => tls = UpstreamTls::Opportunistic,
            ("tls", "none", "smtp") => tls = UpstreamTls::None,
            ("tls", _, "smtp") => {
                return Err(format!(
                    "tls={value} is not known; use tls=required, tls=opportunistic or tls=none"
                ));
            }
            _ => return Err(format!("unknown URL parameter {name}={value}")),
        }
    }
    Ok(UpstreamTarget::Smtp {
        host,
        port: parsed.port().unwrap_or(default_port),
        tls,
    })
}

/// `ses+https://HOST[:PORT]` or `ses+http://HOST:PORT`. The region is read from an AWS
/// host name (`email.REGION.amazonaws.com`, `email-fips.REGION...`, a VPC endpoint's
/// `...email.REGION.vpce.amazonaws.com`); otherwise it is left empty for `upstream.region`.
fn parse_ses_endpoint(
    url: &str,
    scheme: &str,
    parsed: &url::Url,
) -> Result<UpstreamTarget, String> {
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        _ => return Err(format!("{url:?} names no host")),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "the SES API upstream takes AWS credentials from the environment, a \
                    profile or a role, never from the URL"
                .to_owned(),
        );
    }
    if !(parsed.path().is_empty() || parsed.path() == "/")
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(format!(
            "{url:?}: an SES endpoint URL has no path or parameters"
        ));
    }
    if scheme == "http" && parsed.port().is_none() {
        return Err(format!(
            "{url:?}: ses+http:// (for a local test double) needs a port, such as ses+http://127.0.0.1:8080"
        ));
    }
    let endpoint = match parsed.port() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    };
    let labels: Vec<&str> = host.split('.').collect();
    let region = labels
        .windows(2)
        .find(|pair| pair[0].starts_with("email") && is_region_name(pair[1]))
        .map_or_else(String::new, |pair| pair[1].to_owned());
    Ok(UpstreamTarget::Ses(SesEndpoint::Explicit {
        url: endpoint,
        region,
    }))
}

/// An AWS region name: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`...
fn is_region_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && name.len() <= 32
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "iam", "", account, resource]
            if partition.starts_with("aws")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty())
    )
}

/// A domain name something can address: dot-separated labels of ASCII letters, digits, '-'
/// and '_', 1-63 octets each, not starting or ending with '-', at most 253 octets in all,
/// no empty label (so no leading, trailing or doubled dot) and a last label that is not all
/// digits (that would be an address, not a name).
pub fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !s
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// An email address something can deliver to: `local@domain` with a dot-atom local part
/// (RFC 5322 atext and single dots inside, 1-64 octets, ASCII), a domain that
/// [`is_domain`], and at most 254 octets in all (RFC 5321's path limit less the brackets).
pub fn is_address(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    s.len() <= 254 && is_local_part(local) && is_domain(domain)
}

/// A dot-atom local part: atext runs joined by single dots, 1-64 octets.
fn is_local_part(local: &str) -> bool {
    const ATEXT_SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";
    !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(&b))
        })
}

/// AWS resource tags: a key of 1-128 characters, a value of at most 256 (and at most
/// [`MAX_RESOURCE_TAGS`] of them on one resource).
pub fn validate_resource_tag(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.chars().count() > 128 {
        let shown: String = key.chars().take(128).collect();
        return Err(format!("a tag key is 1-128 characters, not {shown:?}"));
    }
    if value.chars().count() > 256 {
        return Err("a tag value is at most 256 characters".to_owned());
    }
    if key.chars().chain(value.chars()).any(char::is_control) {
        return Err("tags hold no control characters".to_owned());
    }
    Ok(())
}

/// An email address (local@domain) or a domain name, each as [`is_address`] and
/// [`is_domain`] have them.
pub fn is_identity(s: &str) -> bool {
    if s.contains('@') {
        is_address(s)
    } else {
        is_domain(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let t = "a\nbc\néx = 1\n";
        assert_eq!(line_column(t, 0), (1, 1));
        assert_eq!(line_column(t, 2), (2, 1));
        assert_eq!(line_column(t, 4), (2, 3));
        // "é" is two bytes but one column
        assert_eq!(line_column(t, 7), (3, 2));
    }

    #[test]
    fn a_replicas_share_of_the_limits() {
        let limits = AccountLimits {
            max_send_rate: 14.0,
            max_24_hour_send: 50_000,
            suppression_file: None,
            shared: None,
        };
        let share = limits.share(4);
        assert_eq!(share.max_send_rate, 3.5);
        assert_eq!(share.max_24_hour_send, 12_500);
        // No limit stays no limit; a share is never below one recipient.
        let none = AccountLimits {
            max_send_rate: 0.0,
            max_24_hour_send: 3,
            ..limits.clone()
        }
        .share(10);
        assert_eq!((none.max_send_rate, none.max_24_hour_send), (0.0, 1));
        assert_eq!(limits.share(0).max_24_hour_send, 50_000);
    }

    #[test]
    fn upstream_urls() {
        assert!(matches!(
            parse_upstream_url("smtp://127.0.0.1:2526"),
            Ok(UpstreamTarget::Smtp {
                port: 2526,
                tls: UpstreamTls::Opportunistic,
                ..
            })
        ));
        assert!(matches!(
            parse_upstream_url("smtp://mail.example.com?tls=required"),
            Ok(UpstreamTarget::Smtp {
                port: 25,
                tls: UpstreamTls::Required,
                ..
            })
        ));
        assert!(matches!(
            parse_upstream_url("smtps://email-smtp.us-east-1.amazonaws.com"),
            Ok(UpstreamTarget::Smtp {
                port: 465,
                tls: UpstreamTls::Wrapper,
                ..
            })
        ));
        assert!(matches!(
            parse_upstream_url("dir:outbox"),
            Ok(UpstreamTarget::Dir(_))
        ));
        assert_eq!(
            parse_upstream_url("ses://us-east-1"),
            Ok(UpstreamTarget::Ses(SesEndpoint::Standard {
                region: "us-east-1".into()
            }))
        );
        assert_eq!(
            parse_upstream_url("ses+https://email-fips.us-gov-west-1.amazonaws.com"),
            Ok(UpstreamTarget::Ses(SesEndpoint::Explicit {
                url: "https://email-fips.us-gov-west-1.amazonaws.com".into(),
                region: "us-gov-west-1".into()
            }))
        );
        assert_eq!(
            parse_upstream_url("ses+https://vpce-0a1b-x2y3.email.eu-west-1.vpce.amazonaws.com:443"),
            Ok(UpstreamTarget::Ses(SesEndpoint::Explicit {
                url: "https://vpce-0a1b-x2y3.email.eu-west-1.vpce.amazonaws.com:443".into(),
                region: "eu-west-1".into()
            }))
        );
        assert_eq!(
            parse_upstream_url("ses+http://127.0.0.1:8025"),
            Ok(UpstreamTarget::Ses(SesEndpoint::Explicit {
                url: "http://127.0.0.1:8025".into(),
                region: String::new()
            }))
        );
        for bad in [
            "ses://",
            "ses://US-EAST-1",
            "ses://us-east",
            "ses+https://k:s@email.us-east-1.amazonaws.com",
            "ses+https://email.us-east-1.amazonaws.com/v2",
            "ses+http://127.0.0.1",
            "ses+smtp://x",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad}");
        }
        assert!(is_role_arn("arn:aws:iam::123456789012:role/team/sesrelay"));
        assert!(is_role_arn("arn:aws-us-gov:iam::123456789012:role/x"));
        assert!(!is_role_arn("arn:aws:iam::123456789012:user/x"));
        assert!(!is_role_arn("arn:aws:iam::1234:role/x"));
        assert!(parse_upstream_url("http://x").is_err());
        assert!(parse_upstream_url("smtp://u:p@x").is_err());
        assert!(parse_upstream_url("smtps://x?tls=none").is_err());
        assert!(parse_upstream_url("dir:").is_err());
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    #[test]
    fn numbers_at_their_limits_load() {
        let config = parse(
            "[server]\nmax_message_size = 1073741824\nmax_recipients = 1000\n\
             max_connections = 1000000\nmax_inflight_bytes = 68719476736\n\
             idle_timeout = \"24h\"\nshutdown_timeout = \"1ms\"\n\
             [upstream]\nurl = \"dir:x\"\ntimeout = \"1day\"\n\
             [verification]\nlink_ttl = \"365d\"\n",
        )
        .unwrap();
        assert_eq!(config.server.max_message_size, 1 << 30);
        assert_eq!(config.server.max_recipients, 1000);
        assert_eq!(config.server.max_connections, 1_000_000);
        assert_eq!(config.server.max_inflight_bytes, 64 << 30);
        assert_eq!(config.server.idle_timeout, Duration::from_secs(86_400));
        assert_eq!(config.server.shutdown_timeout, Duration::from_millis(1));
        assert_eq!(config.upstream.timeout, Duration::from_secs(86_400));
        assert_eq!(config.verification.link_ttl, LINK_TTL_RANGE.max);
        // The same message size and budget are allowed.
        parse("[server]\nmax_message_size = 1000\nmax_inflight_bytes = 1000\n[upstream]\nurl = \"dir:x\"\n")
            .unwrap();
    }

    #[test]
    fn numbers_out_of_range_name_their_key() {
        for (text, key) in [
            (
                "[server]\nmax_connections = 1000001\n",
                "server.max_connections",
            ),
            ("[server]\nmax_recipients = -5\n", "server.max_recipients"),
            (
                "[server]\nmax_message_size = 0\n",
                "server.max_message_size",
            ),
            (
                "[server]\nmax_inflight_bytes = 0\n",
                "server.max_inflight_bytes",
            ),
            ("[server]\nidle_timeout = \"25h\"\n", "server.idle_timeout"),
            (
                "[server]\nshutdown_timeout = \"0s\"\n",
                "server.shutdown_timeout",
            ),
            (
                "[verification]\nlink_ttl = \"366d\"\n",
                "verification.link_ttl",
            ),
            (
                "[verification]\nlink_ttl = \"99999999999999999999y\"\n",
                "verification.link_ttl",
            ),
        ] {
            let text = format!("{text}[upstream]\nurl = \"dir:x\"\n");
            match parse(&text) {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    const WITH_SECRETS: &str = "[upstream]\nurl = \"smtp://127.0.0.1:2526\"\nusername = \"app\"\n\
        password_env = \"PW\"\n\n[admin]\naccess_keys = [{ id = \"AKID1\", secret_env = \"K1\" }, \
        { id = \"AKID2\", secret_env = \"K2\" }]\n\n[verification]\nsecret_env = \"LINK\"\n";

    fn map(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |var| pairs.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
    }

    #[test]
    fn parsing_reads_no_secret_and_resolving_puts_each_in_its_place() {
        // The variables exist nowhere: parsing does not look.
        let parsed = parse(WITH_SECRETS).unwrap();
        assert!(!parsed.secrets_resolved());
        assert_eq!(parsed.upstream.credentials, None);
        assert!(parsed.admin.as_ref().unwrap().access_keys.is_empty());
        assert_eq!(parsed.verification.secret, None);

        let lookup = map(&[
            ("PW", "hunter2"),
            ("K1", "secret-one"),
            ("K2", "secret-two"),
            ("LINK", "0123456789abcdef"),
        ]);
        let config = parsed.resolve_secrets(&lookup).unwrap();
        assert!(config.secrets_resolved());
        assert_eq!(
            config.upstream.credentials,
            Some(("app".to_owned(), "hunter2".to_owned()))
        );
        let keys = &config.admin.as_ref().unwrap().access_keys;
        assert_eq!(
            keys.iter()
                .map(|k| (k.id.as_str(), k.secret.as_str()))
                .collect::<Vec<_>>(),
            [("AKID1", "secret-one"), ("AKID2", "secret-two")]
        );
        assert_eq!(
            config.verification.secret.as_deref(),
            Some(&b"0123456789abcdef"[..])
        );
        assert!(!format!("{:?}", config.secrets).contains("secret-one"));

        // A configuration re-read from the file takes the running one's values.
        let again = parse(WITH_SECRETS)
            .unwrap()
            .resolve_secrets(&|var| config.resolved_secret(var).map(str::to_owned))
            .unwrap();
        assert_eq!(again.upstream.credentials, config.upstream.credentials);
        assert_eq!(
            again.admin.unwrap().access_keys,
            config.admin.unwrap().access_keys
        );
    }

    #[test]
    fn a_secret_that_cannot_be_resolved_names_its_key() {
        let all = [
            ("PW", "hunter2"),
            ("K1", "secret-one"),
            ("K2", "secret-two"),
            ("LINK", "0123456789abcdef"),
        ];
        for (missing, short, expected) in [
            (
                "PW",
                None,
                "t.toml:4:16: upstream.password_env: the environment variable PW is not set (or is not UTF-8)",
            ),
            (
                "K2",
                Some(""),
                "t.toml:7:82: admin.access_keys[1].secret_env: the environment variable K2 is not set (or is empty or not UTF-8)",
            ),
            (
                "LINK",
                Some("too short"),
                "t.toml:10:14: verification.secret_env: the environment variable LINK must hold a secret of at least 16 characters",
            ),
        ] {
            let pairs: Vec<(&str, &str)> = all
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .chain(short.map(|v| (missing, v)))
                .collect();
            let err = parse(WITH_SECRETS)
                .unwrap()
                .resolve_secrets(&map(&pairs))
                .unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn identities_are_typed_at_load_with_their_own_token() {
        let config = parse(
            "[upstream]\nurl = \"dir:x\"\n\
             [identities.\"Example.ORG\"]\nverification_token = \"dns\"\n\
             [identities.\"done.example\"]\nverified = true\nverification_token = \"old\"\n\
             [identities.\"bare.example\"]\n\
             [identities.\"joe@example.org\"]\nlink_nonce = \"n1\"\n\
             [identities.\"old@example.org\"]\nverification_token = \"n2\"\n\
             [identities.localhost]\n",
        )
        .unwrap();
        let kinds: Vec<(&str, IdentityKind)> = config
            .identities()
            .map(|(name, _, record)| (name, record.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("bare.example", IdentityKind::Domain),
                ("done.example", IdentityKind::Domain),
                ("example.org", IdentityKind::Domain),
                ("joe@example.org", IdentityKind::Address),
                ("localhost", IdentityKind::Domain),
                ("old@example.org", IdentityKind::Address),
            ]
        );
        let (_, org) = config.identity("EXAMPLE.org").unwrap();
        assert_eq!(org.name, "Example.ORG");
        assert_eq!((org.dns_token(), org.link_nonce()), (Some("dns"), None));
        let (_, joe) = config.identity("joe@example.org").unwrap();
        assert_eq!((joe.dns_token(), joe.link_nonce()), (None, Some("n1")));
        // The older key still reads as an address's nonce.
        let (_, old) = config.identity("old@example.org").unwrap();
        assert_eq!((old.dns_token(), old.link_nonce()), (None, Some("n2")));
        assert!(!format!("{old:?}").contains("n2"));
        // Only unverified domains with a token are pending.
        assert_eq!(
            config.pending_domains().collect::<Vec<_>>(),
            [PendingDomain {
                name: "example.org",
                token: "dns"
            }]
        );
        assert_eq!(
            IdentityKind::of("joe@example.org"),
            Some(IdentityKind::Address)
        );
        assert_eq!(IdentityKind::of("example.org"), Some(IdentityKind::Domain));
        assert_eq!(IdentityKind::of("joe at example.org"), None);
    }

    #[test]
    fn identities_and_domains() {
        for ok in [
            "example.com",
            "joe@example.com",
            "joe+x@sub.example.com",
            "localhost",
        ] {
            assert!(is_identity(ok), "{ok}");
        }
        for bad in [
            "",
            "@example.com",
            "joe@",
            "a b@example.com",
            "exa mple.com",
            "a..b",
            "joe@-",
            "a..b@example.org",
            ".a@example.org",
            "a.@example.org",
            "example.org.",
            ".example.org",
            "-bad.example",
            "bad-.example",
            "joe@example.org.",
            "jo\u{e9}@example.org",
            "joe@exampl\u{e9}.org",
            "\"a b\"@example.org",
            "a@b@example.org",
            "joe@1.2.3.4",
        ] {
            assert!(!is_identity(bad), "{bad}");
        }
        let label = "a".repeat(63);
        assert!(is_domain(&format!("{label}.example")));
        assert!(!is_domain(&format!("{label}a.example")));
        let long = ["abcdefghi"; 25].join(".");
        assert_eq!(long.len(), 249);
        assert!(is_domain(&format!("{long}.com")));
        assert!(!is_domain(&format!("{long}.comm0")));
        let local = "l".repeat(64);
        assert!(is_address(&format!("{local}@example.org")));
        assert!(!is_address(&format!("{local}l@example.org")));
        assert!(!is_address(&format!("{local}@{long}.com")));
        for ok in [
            "o'brien+x@example.org",
            "a.b.c@example.org",
            "x@a-b.example",
        ] {
            assert!(is_address(ok), "{ok}");
        }
    }
}
