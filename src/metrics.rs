//! The relay's metrics: one registry, shared through the [`Relay`](crate::relay::Relay)
//! (`relay.metrics()`), served by the admin listener at `GET /metrics`.
//!
//! Every label value comes from a closed list (a reason code, an error class, an SES
//! operation name, an HTTP status) or from the configuration sets that exist in the
//! configuration; none carries an address, a user name, a header value or a secret, so the
//! page is safe to serve without authentication and its cardinality is bounded. The one
//! exception is `sesrelay_cloudwatch_events_total`, a CloudWatch event destination's
//! counter: its dimension values are the message tags or headers the operator chose to
//! count by (as CloudWatch would show them), at most 1,000 sets of values per destination.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::smtp::InflightBudget;
use crate::upstream::DeliveryError;

/// The `Content-Type` of the Prometheus text format (0.0.4), served by default.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The `Content-Type` of the OpenMetrics text format, served when the scraper asks for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why a connection was turned away (`sesrelay_smtp_connections_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// `server.max_connections` reached: `421 4.7.0`.
    MaxConnections,
    /// Not in `trusted_networks`, and no `[auth]` to let it authenticate: `554 5.7.1`.
    Network,
}

impl ConnectionRefusal {
    pub fn code(self) -> &'static str {
        match self {
            ConnectionRefusal::MaxConnections => "max_connections",
            ConnectionRefusal::Network => "network",
        }
    }
}

/// Every reason code a message may be refused with (`sesrelay_messages_rejected_total`),
/// listed so that each series exists (at 0) from the start.
pub const REJECTION_REASONS: &[&str] = &[
    "missing_from",
    "not_verified",
    "set_missing",
    "default_set_missing",
    "set_paused",
    "invalid_tag",
    "invalid_address",
    "duplicate_header",
    "too_many_recipients",
    "sender_not_allowed",
    "account_paused",
    "throttled_rate",
    "throttled_quota",
    "upstream_refused",
    "upstream_unavailable",
    "upstream_local_io",
    "upstream_needs_8bitmime",
    "upstream_bad_address",
    "too_large",
    "inflight_budget",
    "quotas_unavailable",
];

/// How the account's limits were checked (`sesrelay_account_checks_total{path}`): `local`
/// (no `[account.shared]`), `shared` (Redis answered), and when Redis did not:
/// `local_share` (this replica's share), `closed` (refused with 451), `open` (uncounted).
pub const ACCOUNT_CHECK_PATHS: &[&str] = &["local", "shared", "local_share", "closed", "open"];

/// Where send-email's idempotency was kept (`sesrelay_idempotency_checks_total{store}`):
/// `shared` (Redis) or `local` (this process: no `[account.shared]`, or Redis away).
pub const IDEMPOTENCY_STORES: &[&str] = &["shared", "local"];

/// Every class of upstream error (`sesrelay_upstream_errors_total{class}`).
pub const UPSTREAM_ERROR_CLASSES: &[&str] = &[
    "refused",
    "unavailable",
    "local_io",
    "needs_8bitmime",
    "bad_address",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetLabel {
    configuration_set: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabel {
    store: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: &'static str,
}

/// Every kind of event sink (`sesrelay_events_*_total{sink}`): SNS notifications, EventBridge
/// events, Firehose JSON lines, the JSON lines of destinations without a mapping (`file`),
/// CloudWatch counters.
pub const EVENT_SINKS: &[&str] = &["sns", "eventbridge", "firehose", "file", "cloudwatch"];

/// The event publisher's counters ([`crate::events::Publisher`]): handles on families of
/// the registry, cloned into the publisher's workers.
#[derive(Clone)]
pub struct EventCounters {
    published: Family<SinkLabel, Counter>,
    retried: Family<SinkLabel, Counter>,
    dropped: Family<SinkLabel, Counter>,
    cloudwatch: Family<Vec<(String, String)>, Counter>,
}

impl std::fmt::Debug for EventCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventCounters").finish_non_exhaustive()
    }
}

impl EventCounters {
    /// `n` records a sink took (an endpoint answered 2xx, a line was written, a CloudWatch
    /// counter moved). `sink` is one of [`EVENT_SINKS`].
    pub fn published(&self, sink: &'static str, n: u64) {
        self.published.get_or_create(&SinkLabel { sink }).inc_by(n);
    }

    /// One more attempt at a record an endpoint did not take.
    pub fn retried(&self, sink: &'static str) {
        self.retried.get_or_create(&SinkLabel { sink }).inc();
    }

    /// `n` records given up: a full queue, retries spent, a write that failed, the
    /// shutdown grace over.
    pub fn dropped(&self, sink: &'static str, n: u64) {
        self.dropped.get_or_create(&SinkLabel { sink }).inc_by(n);
    }

    /// Records dropped so far for `sink`.
    pub fn dropped_count(&self, sink: &'static str) -> u64 {
        self.dropped.get_or_create(&SinkLabel { sink }).get()
    }

    /// One event counted for a CloudWatch destination, with its labels (configuration set,
    /// destination, event type, then one per dimension). The publisher bounds their values.
    pub fn cloudwatch(&self, labels: Vec<(String, String)>) {
        self.cloudwatch.get_or_create(&labels).inc();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    operation: &'static str,
    status: u16,
}

/// The registry and a handle on each metric in it.
pub struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections: Counter,
    connections_refused: Family<ReasonLabel, Counter>,
    accepted: Family<SetLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    delivery: Histogram,
    upstream_errors: Family<ClassLabel, Counter>,
    received_bytes: Counter,
    inflight_bytes: Gauge,
    inflight_limit: Gauge,
    budget: OnceLock<InflightBudget>,
    reloads: Family<ResultLabel, Counter>,
    api_requests: Family<ApiLabels, Counter>,
    events: EventCounters,
    account_checks: Family<PathLabel, Counter>,
    idempotency_checks: Family<StoreLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero, the names prefixed `sesrelay_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sesrelay");
        let connections_open = Gauge::default();
        registry.register(
            "smtp_connections_open",
            "SMTP sessions open now",
            connections_open.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "smtp_connections",
            "SMTP connections accepted, those then refused included",
            connections.clone(),
        );
        let connections_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "smtp_connections_refused",
            "SMTP connections turned away at connect, by reason (max_connections, network)",
            connections_refused.clone(),
        );
        let accepted = Family::<SetLabel, Counter>::default();
        registry.register(
            "messages_accepted",
            "Messages the upstream took (answered 250), by resolved configuration set (\"\" for none)",
            accepted.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "messages_rejected",
            "Messages refused (policy, throttling, upstream, size, in-flight budget), by reason",
            rejected.clone(),
        );
        // 5 ms to about 41 s, doubling.
        let delivery = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "upstream_delivery_duration",
            "Time the upstream took to take or refuse one message",
            Unit::Seconds,
            delivery.clone(),
        );
        let upstream_errors = Family::<ClassLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Deliveries the upstream did not take, by class",
            upstream_errors.clone(),
        );
        let received_bytes = Counter::default();
        registry.register_with_unit(
            "received",
            "Bytes of the messages handed to the relay (SMTP DATA and API send-email)",
            Unit::Bytes,
            received_bytes.clone(),
        );
        let inflight_bytes = Gauge::default();
        registry.register_with_unit(
            "inflight",
            "Bytes of message data held now, against server.max_inflight_bytes",
            Unit::Bytes,
            inflight_bytes.clone(),
        );
        let inflight_limit = Gauge::default();
        registry.register_with_unit(
            "inflight_limit",
            "server.max_inflight_bytes: the budget for all messages held at once",
            Unit::Bytes,
            inflight_limit.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result (success, failure)",
            reloads.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Admin API requests, by SES operation and HTTP status",
            api_requests.clone(),
        );
        let account_checks = Family::<PathLabel, Counter>::default();
        registry.register(
            "account_checks",
            "Messages checked against the account's limits, by path (local, shared, local_share, closed, open)",
            account_checks.clone(),
        );
        let idempotency_checks = Family::<StoreLabel, Counter>::default();
        registry.register(
            "idempotency_checks",
            "send-email calls with an invocation id, by where their idempotency was kept (shared, local)",
            idempotency_checks.clone(),
        );
        for &path in ACCOUNT_CHECK_PATHS {
            account_checks.get_or_create(&PathLabel { path }).get();
        }
        for &store in IDEMPOTENCY_STORES {
            idempotency_checks
                .get_or_create(&StoreLabel { store })
                .get();
        }
        let events = EventCounters {
            published: Family::default(),
            retried: Family::default(),
            dropped: Family::default(),
            cloudwatch: Family::default(),
        };
        registry.register(
            "events_published",
            "Event records a sink took (endpoint answered 2xx, line written, counter moved), by sink",
            events.published.clone(),
        );
        registry.register(
            "events_retried",
            "Further attempts at event records an HTTP endpoint did not take, by sink",
            events.retried.clone(),
        );
        registry.register(
            "events_dropped",
            "Event records given up (queue full, retries spent, write failed, shutdown), by sink",
            events.dropped.clone(),
        );
        registry.register(
            "cloudwatch_events",
            "Events of CloudWatch event destinations, by configuration set, destination, event type and dimension",
            events.cloudwatch.clone(),
        );
        for &sink in EVENT_SINKS {
            for family in [&events.published, &events.retried, &events.dropped] {
                family.get_or_create(&SinkLabel { sink }).get();
            }
        }
        for reason in [
            ConnectionRefusal::MaxConnections,
            ConnectionRefusal::Network,
        ] {
            connections_refused
                .get_or_create(&ReasonLabel {
                    reason: reason.code(),
                })
                .get();
        }
        for &reason in REJECTION_REASONS {
            rejected.get_or_create(&ReasonLabel { reason }).get();
        }
        for &class in UPSTREAM_ERROR_CLASSES {
            upstream_errors.get_or_create(&ClassLabel { class }).get();
        }
        for result in ["success", "failure"] {
            reloads.get_or_create(&ResultLabel { result }).get();
        }
        Metrics {
            registry,
            connections_open,
            connections,
            connections_refused,
            accepted,
            rejected,
            delivery,
            upstream_errors,
            received_bytes,
            inflight_bytes,
            inflight_limit,
            budget: OnceLock::new(),
            reloads,
            api_requests,
            events,
            account_checks,
            idempotency_checks,
        }
    }

    /// One message checked against the account's limits, by `path` (one of
    /// [`ACCOUNT_CHECK_PATHS`]).
    pub fn account_check(&self, path: &'static str) {
        self.account_checks.get_or_create(&PathLabel { path }).inc();
    }

    /// One send-email call with an invocation id, its idempotency kept in `store` (one of
    /// [`IDEMPOTENCY_STORES`]).
    pub fn idempotency_check(&self, store: &'static str) {
        self.idempotency_checks
            .get_or_create(&StoreLabel { store })
            .inc();
    }

    /// The event publisher's counters.
    pub fn events(&self) -> &EventCounters {
        &self.events
    }

    /// The in-flight budget whose use `sesrelay_inflight_bytes` shows (read at each
    /// scrape). The first budget given is kept.
    pub fn watch_budget(&self, budget: &InflightBudget) {
        let _ = self.budget.set(budget.clone());
    }

    /// A TCP connection was accepted on an SMTP listener.
    pub fn connection_accepted(&self) {
        self.connections.inc();
    }

    /// A session started (`open` true) or ended.
    pub fn session(&self, open: bool) {
        if open {
            self.connections_open.inc();
        } else {
            self.connections_open.dec();
        }
    }

    /// A connection was turned away.
    pub fn connection_refused(&self, why: ConnectionRefusal) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason: why.code() })
            .inc();
    }

    /// A message the upstream took, with the set it resolved to. The set must be one that
    /// exists (the policy accepts no other), so the label's values stay within the
    /// configuration's sets.
    pub fn accepted(&self, configuration_set: Option<&str>) {
        let label = SetLabel {
            configuration_set: configuration_set.unwrap_or("").to_owned(),
        };
        self.accepted.get_or_create(&label).inc();
    }

    /// A message refused, with its reason code (one of [`REJECTION_REASONS`]).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// One delivery attempt to the upstream: how long it took and how it ended.
    pub fn delivery(&self, elapsed: Duration, result: Result<(), &DeliveryError>) {
        self.delivery.observe(elapsed.as_secs_f64());
        if let Err(e) = result {
            self.upstream_errors
                .get_or_create(&ClassLabel { class: e.class() })
                .inc();
        }
    }

    /// Bytes of one message handed to the relay.
    pub fn received(&self, bytes: usize) {
        self.received_bytes.inc_by(bytes as u64);
    }

    /// A configuration reload (SIGHUP or a change of the file) ended: `ok` when the new
    /// configuration is in force, false when it was refused and the old one kept.
    /// Counted in `sesrelay_config_reloads_total{result="success"|"failure"}`.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Reloads counted so far: `(succeeded, failed)`.
    pub fn reloads(&self) -> (u64, u64) {
        let count = |result| self.reloads.get_or_create(&ResultLabel { result }).get();
        (count("success"), count("failure"))
    }

    /// One admin API request answered: the SES operation ([`api_operation`]) and the
    /// HTTP status.
    pub fn api_request(&self, operation: &'static str, status: u16) {
        self.api_requests
            .get_or_create(&ApiLabels { operation, status })
            .inc();
    }

    /// The page: the Prometheus text format (0.0.4), or OpenMetrics text with `openmetrics`.
    pub fn encode(&self, openmetrics: bool) -> String {
        if let Some(budget) = self.budget.get() {
            self.inflight_bytes.set(saturating_i64(budget.in_use()));
            self.inflight_limit.set(saturating_i64(budget.limit()));
        }
        let mut out = String::with_capacity(8 * 1024);
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing into a String cannot fail.
        debug_assert!(encoded.is_ok());
        out
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The SES operation a request to the admin listener calls, from its method and path, as
/// the aws CLI names it (`SendEmail`, `GetAccount`, ...); `Verify` for the verification
/// links, `Unknown` for anything else. A fixed list: the label's values are bounded.
pub fn api_operation(method: &axum::http::Method, path: &str) -> &'static str {
    use axum::http::Method;
    let Some(rest) = path.strip_prefix("/v2/email/") else {
        return match (method, path) {
            (&Method::GET | &Method::HEAD, "/verify") => "Verify",
            _ if path.starts_with("/api/v1/") || path == "/_aws/ses" => "Capture",
            _ => "Unknown",
        };
    };
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let put = method == Method::PUT;
    let delete = method == Method::DELETE;
    match segments.as_slice() {
        ["identities"] if post => "CreateEmailIdentity",
        ["identities"] if get => "ListEmailIdentities",
        ["list-identities"] if post => "ListEmailIdentities",
        ["identities", _] if get => "GetEmailIdentity",
        ["identities", _] if delete => "DeleteEmailIdentity",
        ["identities", _, "configuration-set"] if put => {
            "PutEmailIdentityConfigurationSetAttributes"
        }
        ["configuration-sets"] if post => "CreateConfigurationSet",
        ["configuration-sets"] if get => "ListConfigurationSets",
        ["list-configuration-sets"] if post => "ListConfigurationSets",
        ["configuration-sets", _] if get => "GetConfigurationSet",
        ["configuration-sets", _] if delete => "DeleteConfigurationSet",
        ["configuration-sets", _, "sending"] if put => "PutConfigurationSetSendingOptions",
        ["configuration-sets", _, "event-destinations"] if post => {
            "CreateConfigurationSetEventDestination"
        }
        ["configuration-sets", _, "event-destinations"] if get => {
            "GetConfigurationSetEventDestinations"
        }
        ["configuration-sets", _, "event-destinations", _] if put => {
            "UpdateConfigurationSetEventDestination"
        }
        ["configuration-sets", _, "event-destinations", _] if delete => {
            "DeleteConfigurationSetEventDestination"
        }
        ["outbound-emails"] if post => "SendEmail",
        ["account"] if get => "GetAccount",
        ["account", "sending"] if put => "PutAccountSendingAttributes",
        ["account", "suppression"] if put => "PutAccountSuppressionAttributes",
        ["configuration-sets", _, "suppression-options"] if put => {
            "PutConfigurationSetSuppressionOptions"
        }
        ["suppression", "addresses"] if put => "PutSuppressedDestination",
        ["suppression", "addresses"] if get => "ListSuppressedDestinations",
        ["list-suppressed-destinations"] if post => "ListSuppressedDestinations",
        ["suppression", "addresses", _] if get => "GetSuppressedDestination",
        ["suppression", "addresses", _] if delete => "DeleteSuppressedDestination",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn operations_from_method_and_path() {
        let rows = [
            (Method::POST, "/v2/email/outbound-emails", "SendEmail"),
            (Method::GET, "/v2/email/account", "GetAccount"),
            (
                Method::PUT,
                "/v2/email/account/sending",
                "PutAccountSendingAttributes",
            ),
            (Method::POST, "/v2/email/identities", "CreateEmailIdentity"),
            (Method::GET, "/v2/email/identities", "ListEmailIdentities"),
            (
                Method::POST,
                "/v2/email/list-identities",
                "ListEmailIdentities",
            ),
            (
                Method::GET,
                "/v2/email/identities/joe%40example.com",
                "GetEmailIdentity",
            ),
            (
                Method::DELETE,
                "/v2/email/identities/example.com",
                "DeleteEmailIdentity",
            ),
            (
                Method::PUT,
                "/v2/email/identities/example.com/configuration-set",
                "PutEmailIdentityConfigurationSetAttributes",
            ),
            (
                Method::POST,
                "/v2/email/configuration-sets",
                "CreateConfigurationSet",
            ),
            (
                Method::GET,
                "/v2/email/configuration-sets",
                "ListConfigurationSets",
            ),
            (
                Method::POST,
                "/v2/email/list-configuration-sets",
                "ListConfigurationSets",
            ),
            (
                Method::GET,
                "/v2/email/configuration-sets/m",
                "GetConfigurationSet",
            ),
            (
                Method::DELETE,
                "/v2/email/configuration-sets/m",
                "DeleteConfigurationSet",
            ),
            (
                Method::PUT,
                "/v2/email/configuration-sets/m/sending",
                "PutConfigurationSetSendingOptions",
            ),
            (
                Method::PUT,
                "/v2/email/account/suppression",
                "PutAccountSuppressionAttributes",
            ),
            (
                Method::PUT,
                "/v2/email/configuration-sets/m/suppression-options",
                "PutConfigurationSetSuppressionOptions",
            ),
            (
                Method::PUT,
                "/v2/email/suppression/addresses",
                "PutSuppressedDestination",
            ),
            (
                Method::GET,
                "/v2/email/suppression/addresses",
                "ListSuppressedDestinations",
            ),
            (
                Method::POST,
                "/v2/email/list-suppressed-destinations",
                "ListSuppressedDestinations",
            ),
            (
                Method::GET,
                "/v2/email/suppression/addresses/joe%40example.com",
                "GetSuppressedDestination",
            ),
            (
                Method::DELETE,
                "/v2/email/suppression/addresses/joe%40example.com",
                "DeleteSuppressedDestination",
            ),
            (Method::GET, "/verify", "Verify"),
            (Method::GET, "/v2/email/outbound-emails", "Unknown"),
            (Method::POST, "/", "Unknown"),
            (Method::GET, "/v2/email/nothing/here", "Unknown"),
            (Method::PATCH, "/v2/email/account", "Unknown"),
        ];
        for (method, path, operation) in rows {
            assert_eq!(api_operation(&method, path), operation, "{method} {path}");
        }
    }

    #[test]
    fn counters_show_on_the_page() {
        let metrics = Metrics::new();
        metrics.accepted(Some("marketing"));
        metrics.accepted(None);
        metrics.rejected("not_verified");
        metrics.reload(false);
        metrics.api_request("SendEmail", 200);
        metrics.delivery(
            Duration::from_millis(20),
            Err(&DeliveryError::Unavailable("x".into())),
        );
        metrics.watch_budget(&InflightBudget::new(1000));
        let page = metrics.encode(false);
        for line in [
            "sesrelay_messages_accepted_total{configuration_set=\"marketing\"} 1",
            "sesrelay_messages_accepted_total{configuration_set=\"\"} 1",
            "sesrelay_messages_rejected_total{reason=\"not_verified\"} 1",
            "sesrelay_messages_rejected_total{reason=\"set_paused\"} 0",
            "sesrelay_config_reloads_total{result=\"failure\"} 1",
            "sesrelay_config_reloads_total{result=\"success\"} 0",
            "sesrelay_api_requests_total{operation=\"SendEmail\",status=\"200\"} 1",
            "sesrelay_upstream_errors_total{class=\"unavailable\"} 1",
            "sesrelay_upstream_delivery_duration_seconds_count 1",
            "sesrelay_inflight_limit_bytes 1000",
            "sesrelay_inflight_bytes 0",
        ] {
            assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
        }
        assert!(metrics.encode(true).ends_with("# EOF\n"));
    }
}
