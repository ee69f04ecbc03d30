//! The admin listener: the SES v2 API (`/v2/email/...`) over HTTP, with axum.
//!
//! Every change the API makes goes through [`store::Store`] into the configuration file and
//! the running relay at once. `/verify` serves the links of verification messages. Access:
//! loopback clients only, or, with `[admin] access_keys`, requests signed with SigV4.
//!
//! The listener is safe to leave on in a developer's machine (SPEC 6): it refuses what a
//! web page could send (`guard`), judges a signature's head before reading a body
//! (`authorize`), caps bodies per route ([`body_cap`]) and connections
//! ([`Limits`]), and times out slow clients; at shutdown it never waits long for them.
//!
//! `GET /healthz/live`, `GET /healthz/ready` and `GET /metrics` are outside both checks
//! (see [`probe_routes`]): Kubernetes probes and Prometheus scrapers name the pod's address
//! in `Host` and never sign. With `[admin] api = false` they and the pages ([`ui`]) are all
//! the listener serves.

pub mod api;
pub mod capture;
pub mod error;
pub mod event_destinations;
pub mod idempotency;
pub mod sigv4;
pub mod store;
pub mod suppression;
pub mod ui;
pub mod v1;
pub mod verification;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::config::{self, Config};
use crate::relay::Relay;
use crate::upstream::Envelope;
use error::ApiError;
use store::Store;
use verification::{VerificationError, Verifier};

/// How often pending domains are looked up in DNS.
const DOMAIN_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// What every handler shares.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub relay: Arc<Relay>,
    pub store: Store,
    pub verifier: Verifier,
    /// send-email's answers by call (`amz-sdk-invocation-id` and body), for the SDKs'
    /// retries.
    pub send_email_calls: idempotency::Cache<Result<String, ApiError>>,
    /// The send-email first attempts running detached from their connections (so that a
    /// client giving up does not cut a delivery short): at most as many as the listener
    /// holds connections, so that the sends in flight stay bounded as they were.
    pub detached_sends: Arc<tokio::sync::Semaphore>,
}

impl std::ops::Deref for AdminState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AdminState {
    pub fn new(relay: Arc<Relay>) -> Result<AdminState, VerificationError> {
        let config = relay.config();
        let verifier = Verifier::new(&config)?;
        let store = Store::new(&config.path, Arc::clone(&relay));
        Ok(AdminState {
            inner: Arc::new(Inner {
                relay,
                store,
                verifier,
                send_email_calls: idempotency::Cache::new(
                    idempotency::WINDOW,
                    idempotency::CAPACITY,
                ),
                detached_sends: Arc::new(tokio::sync::Semaphore::new(
                    crate::fdlimit::admin_connection_cap(crate::fdlimit::nofile_limit()),
                )),
            }),
        })
    }

    /// Sends the verification message for a new email-address identity, through the
    /// upstream and not through the policy, in the background: create-email-identity
    /// answers at once, however slow the upstream (a slow answer made the SDKs retry, and
    /// the retry failed with AlreadyExists). A failure is logged: the identity stays
    /// pending, and deleting and creating it again sends a new message.
    pub fn send_verification(&self, address: &str, nonce: &str) {
        let state = self.clone();
        let (address, nonce) = (address.to_owned(), nonce.to_owned());
        tokio::spawn(async move { state.deliver_verification(&address, &nonce).await });
    }

    async fn deliver_verification(&self, address: &str, nonce: &str) {
        let config = self.relay.config();
        let Some(message) = self
            .verifier
            .message(&config, address, nonce, SystemTime::now())
        else {
            tracing::warn!(%address, "cannot build a verification message for this address");
            return;
        };
        let envelope = Envelope {
            mail_from: config.verification.sender.clone(),
            rcpt_to: vec![address.to_owned()],
        };
        // send_direct logs the delivery either way.
        if let Err(e) = self.relay.send_direct(&envelope, message).await {
            tracing::warn!(%address, error = %e, "verification message not sent");
        }
    }

    /// Looks up a pending domain's TXT record; marks it verified when the token is there.
    /// True when the domain became verified.
    pub async fn check_domain(&self, domain: &str) -> bool {
        let config = self.relay.config();
        let Some(token) = config
            .identity(domain)
            .and_then(|(_, record)| record.dns_token())
        else {
            return false;
        };
        if !self.verifier.domain_has_token(domain, token).await {
            return false;
        }
        let marked = self
            .store
            .edit(
                |editor, config| match config.policy.identities.get(domain) {
                    Some(identity) if !identity.verified => {
                        editor.mark_verified(domain).map(|()| true)
                    }
                    _ => Ok(false),
                },
            )
            .await;
        match marked {
            Ok(true) => {
                tracing::info!(%domain, "domain verified: its _amazonses TXT record holds the token");
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(%domain, error = %e, "cannot record the domain as verified");
                false
            }
        }
    }

    /// Looks up every pending domain once.
    pub async fn check_pending_domains(&self) {
        let config = self.relay.config();
        for pending in config.pending_domains() {
            self.check_domain(pending.name).await;
        }
    }
}

/// The routes: the probe routes ([`probe_routes`]) open; the API behind the access check,
/// `/verify` open to whoever has a link, the pages ([`ui::routes`]) behind their own access
/// check ([`ui::ui_auth`]), all behind the listener's own checks (`guard`: Host, Origin,
/// content type). With `[admin] api = false` (read at start), only the probe routes and the
/// pages; every other path is 404 in SES's error shape.
pub fn router(state: AdminState) -> Router {
    let api_enabled = state
        .relay
        .config()
        .admin
        .as_ref()
        .is_none_or(|admin| admin.api);
    // The captured-mail API and the pages ([`ui`]) are served with `api = false` too: they
    // are the developer's view of what was sent, not the SES API.
    let captured =
        capture::routes(&state).layer(axum::middleware::from_fn_with_state(state.clone(), guard));
    let app = if api_enabled {
        probe_routes()
            .merge(captured)
            .merge(ui::routes(&state))
            .merge(api_routes(&state))
    } else {
        probe_routes()
            .merge(captured)
            .merge(ui::routes(&state))
            .fallback(api_disabled)
    };
    app.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        count_requests,
    ))
    .layer(axum::middleware::from_fn(request_id))
    .with_state(state)
}

/// Health and metrics, outside `guard` and `authorize`: a Kubernetes probe or a Prometheus
/// scraper sends `Host: <pod-ip>:<port>` and never signs. That is safe because these routes
/// are GET only (any other method is 405, and no body is ever read), change nothing, and
/// answer only what an operator may show anyone who can reach the port: whether the process
/// lives, whether it is ready (with the upstream's connection error, which names its host
/// and port but never a credential), and counters whose labels come from closed lists or
/// from the configured set names (see [`crate::metrics`]) — no address, user, header value
/// or secret.
fn probe_routes() -> Router<AdminState> {
    Router::new()
        .route("/healthz/live", get(health_live))
        .route("/healthz/ready", get(health_ready))
        .route("/metrics", get(metrics_page))
}

/// The SES API and `/verify`, behind `guard` and `authorize`.
fn api_routes(state: &AdminState) -> Router<AdminState> {
    let api = Router::new()
        .route(
            "/v2/email/identities",
            post(api::create_email_identity).get(api::list_email_identities),
        )
        .route(
            "/v2/email/identities/{identity}",
            get(api::get_email_identity).delete(api::delete_email_identity),
        )
        .route(
            "/v2/email/identities/{identity}/configuration-set",
            put(api::put_email_identity_configuration_set_attributes),
        )
        .route(
            "/v2/email/configuration-sets",
            post(api::create_configuration_set).get(api::list_configuration_sets),
        )
        .route(
            "/v2/email/configuration-sets/{name}",
            get(api::get_configuration_set).delete(api::delete_configuration_set),
        )
        .route(
            "/v2/email/configuration-sets/{name}/sending",
            put(api::put_configuration_set_sending_options),
        )
        .route(
            "/v2/email/configuration-sets/{name}/event-destinations",
            post(event_destinations::create).get(event_destinations::get_all),
        )
        .route(
            "/v2/email/configuration-sets/{name}/event-destinations/{destination}",
            put(event_destinations::update).delete(event_destinations::delete),
        )
        // Newer botocore models list with POST and a JSON body.
        .route(
            "/v2/email/list-identities",
            post(api::list_email_identities),
        )
        .route(
            "/v2/email/list-configuration-sets",
            post(api::list_configuration_sets),
        )
        .route("/v2/email/outbound-emails", post(api::send_email))
        .route("/v2/email/account", get(api::get_account))
        .route(
            "/v2/email/account/sending",
            put(api::put_account_sending_attributes),
        )
        // The suppression list.
        .route(
            "/v2/email/suppression/addresses",
            put(suppression::put_suppressed_destination)
                .get(suppression::list_suppressed_destinations),
        )
        .route(
            "/v2/email/suppression/addresses/{address}",
            get(suppression::get_suppressed_destination)
                .delete(suppression::delete_suppressed_destination),
        )
        .route(
            "/v2/email/list-suppressed-destinations",
            post(suppression::list_suppressed_destinations),
        )
        .route(
            "/v2/email/account/suppression",
            put(suppression::put_account_suppression_attributes),
        )
        .route(
            "/v2/email/configuration-sets/{name}/suppression-options",
            put(suppression::put_configuration_set_suppression_options),
        )
        // The v1 (Query) API's form posts.
        .route("/", post(v1::query))
        .fallback(api::unknown_operation)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        // The caps are applied by `authorize`, per route, before any handler runs.
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/verify", get(api::verify_link))
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
}

/// `GET /healthz/live`: 200 while the process serves.
async fn health_live() -> Response {
    probe_answer(
        axum::http::StatusCode::OK,
        serde_json::json!({"status": "live"}),
    )
}

/// `GET /healthz/ready`: 200, or 503 while draining or while the upstream cannot be
/// reached (checked at most every [`crate::health::CHECK_TTL`]).
async fn health_ready(State(state): State<AdminState>) -> Response {
    use crate::health::Readiness;
    use axum::http::StatusCode;
    let shared = state.relay.shared_store().is_some();
    match state.relay.readiness().await {
        Readiness::Ready if shared => probe_answer(
            StatusCode::OK,
            serde_json::json!({"status": "ready", "shared_account": "shared"}),
        ),
        Readiness::Ready => probe_answer(StatusCode::OK, serde_json::json!({"status": "ready"})),
        Readiness::Degraded(error) => probe_answer(
            StatusCode::OK,
            serde_json::json!({"status": "ready", "shared_account": "degraded", "error": error}),
        ),
        Readiness::SharedUnavailable(error) => probe_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "shared account unavailable", "error": error}),
        ),
        Readiness::Draining => probe_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "draining"}),
        ),
        Readiness::UpstreamUnavailable(error) => probe_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "upstream unavailable", "error": error}),
        ),
    }
}

fn probe_answer(status: axum::http::StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// `GET /metrics`: the Prometheus text format, or OpenMetrics when the scraper's `Accept`
/// asks for `application/openmetrics-text`.
async fn metrics_page(State(state): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        crate::metrics::OPENMETRICS_CONTENT_TYPE
    } else {
        crate::metrics::PROMETHEUS_CONTENT_TYPE
    };
    let page = state.relay.metrics().encode(openmetrics);
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// Every path but the probe routes with `[admin] api = false`.
async fn api_disabled() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "The SES API is off on this listener ([admin] api = false): it serves only /healthz/live, /healthz/ready, /metrics and the pages.",
    )
}

/// Counts every request but the probe routes' and the pages' in `sesrelay_api_requests_total`, by SES
/// operation ([`crate::metrics::api_operation`], or the v1 action a handler answered,
/// [`v1::Operation`]) and status, refusals by `guard` and `authorize` included.
async fn count_requests(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if matches!(path, "/healthz/live" | "/healthz/ready" | "/metrics")
        || ui::is_page(request.method(), path)
    {
        return next.run(request).await;
    }
    let operation = crate::metrics::api_operation(request.method(), path);
    let response = next.run(request).await;
    // A v1 request names its action in its body: the handler tells it.
    let operation = response
        .extensions()
        .get::<v1::Operation>()
        .map_or(operation, |v1| v1.0);
    state
        .relay
        .metrics()
        .api_request(operation, response.status().as_u16());
    response
}

/// The id of one request (a random UUID): its answer's `x-amzn-RequestId` header, and the
/// `RequestId` of a v1 error's body. Handlers find it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    pub fn new() -> RequestId {
        RequestId(uuid::Uuid::new_v4().to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

/// Every response carries `x-amzn-RequestId`, as SES's do: the SDKs log it. The id is
/// chosen before the request runs, so that a body that names it (a v1 error) names the
/// same.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = RequestId::new();
    request.extensions_mut().insert(id.clone());
    let mut response = next.run(request).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

/// The request's id (set by `request_id`; a new one if a test calls a layer without it).
fn request_id_of(extensions: &axum::http::Extensions) -> RequestId {
    extensions.get::<RequestId>().cloned().unwrap_or_default()
}

/// A refusal in the shape the client reads: v1's XML for a v1 Query request, else SES v2's
/// JSON.
fn refusal(v1_query: bool, id: &RequestId, e: ApiError) -> Response {
    if v1_query {
        v1::api_error(id, &e)
    } else {
        e.into_response()
    }
}

// ---------------------------------------------------------------------------------------
// The listener's bounds.
// ---------------------------------------------------------------------------------------

/// The admin listener's bounds. Connections are served by hyper's HTTP/1.1 connection
/// builder directly (not `axum::serve`), because that is where the timeouts that matter
/// live and where each connection can be dropped at shutdown:
///
/// - `max_connections`: connections held at once. One more is answered
///   `503 ServiceUnavailable` at once and closed, so a client always gets an answer and
///   the listener never holds more descriptors than its share ([`fdlimit::admin_connection_cap`]).
/// - `header_timeout`: hyper's `header_read_timeout` (and a head is at most 64 KiB). A request's head must arrive within
///   it, and it restarts when a keep-alive connection waits for its next request, so it is
///   also the idle timeout.
/// - `body_timeout` / `large_body_timeout`: the whole body must arrive within it
///   (`large_body_timeout` for `send-email`, whose body may be 54 MiB); then 408.
/// - `shutdown_grace`: after shutdown the listener stops accepting, idle connections close,
///   and requests still running get this long before their connections are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub large_body_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// A request's head: 10 s, and a keep-alive connection idles at most as long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The body of any operation but `send-email`: 20 s.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// The body of `send-email` (up to 54 MiB): 120 s, about 0.5 MB/s.
pub const LARGE_BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this long after shutdown for requests still running (and never more than half
/// of `server.shutdown_timeout`).
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The body cap of every operation but `send-email`: 256 KiB (50 tags of 128 + 256
/// characters, JSON-escaped, fit in it several times over).
pub const SMALL_BODY_CAP: usize = 256 * 1024;
/// What `send-email` carries beside the message: addresses, tags, names (1 MiB).
const SEND_EMAIL_OVERHEAD: usize = 1024 * 1024;
/// Bodies over [`SMALL_BODY_CAP`] (send-email's) read at once, process-wide: 4, so that
/// the admin listener holds at most about 4 × 54 MiB of uploads whatever its connections.
/// One more waits for a turn within its body deadline, then gets 503.
pub const MAX_LARGE_BODIES: usize = 4;
static LARGE_BODIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LARGE_BODIES);
/// A request head (request line and headers) is at most 64 KiB: hyper's read buffer.
const MAX_HEAD_BYTES: usize = 64 * 1024;

impl Limits {
    /// The bounds for `config`, the connection cap from the descriptor budget in force.
    pub fn for_config(config: &Config) -> Limits {
        Limits {
            max_connections: crate::fdlimit::admin_connection_cap(crate::fdlimit::nofile_limit()),
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            large_body_timeout: LARGE_BODY_TIMEOUT,
            shutdown_grace: MAX_SHUTDOWN_GRACE.min(config.server.shutdown_timeout / 2),
        }
    }
}

/// The body cap of a route: `send-email` carries the message base64-encoded in JSON
/// (`server.max_message_size` × 4/3 plus 1 MiB: about 54.3 MiB for SES's 40 MiB); v1's
/// `POST /` carries it base64-encoded in a form, where `+`, `/` and `=` are
/// percent-encoded (an eighth more: about 61 MiB), so that a large SendRawEmail gets its
/// answer rather than a 413; every other operation [`SMALL_BODY_CAP`].
pub fn body_cap(path: &str, config: &Config) -> usize {
    let base64 = config.server.max_message_size.div_ceil(3).saturating_mul(4);
    match path {
        "/v2/email/outbound-emails" => base64.saturating_add(SEND_EMAIL_OVERHEAD),
        "/" => base64
            .saturating_add(base64 / 8)
            .saturating_add(SEND_EMAIL_OVERHEAD),
        _ => SMALL_BODY_CAP,
    }
}

/// What each connection tells its requests about the listener.
#[derive(Debug, Clone, Copy)]
struct ListenerInfo {
    local: SocketAddr,
    limits: Limits,
}

// ---------------------------------------------------------------------------------------
// The listener's own checks: Host, Origin, content type (SPEC 6).
// ---------------------------------------------------------------------------------------

/// A web page must not drive the API: a request with a body must be JSON (or a SigV4-signed
/// form post to `/`, the v1 API's), its `Origin`, when sent, must be the listener's own, and
/// its `Host` must be the listen address, a loopback name or `public_url`'s host (no DNS
/// rebinding). Refusals are 403 (415 for the content type) in SES's error shape (v1's
/// XML for a form posted to `/`).
async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let config = state.relay.config();
    let local = request
        .extensions()
        .get::<ListenerInfo>()
        .map(|info| info.local);
    let public_url = config.admin.as_ref().map(|a| a.public_url.as_str());
    let v1_query = v1::is_query(request.uri().path(), request.headers());
    let id = request_id_of(request.extensions());
    if let Err(e) = check_request_origin(request.headers(), local, public_url) {
        tracing::info!(uri = %request.uri(), "admin request refused: {}", e.message);
        return refusal(v1_query, &id, e);
    }
    if let Err(e) = check_content_type(request.uri().path(), request.headers()) {
        return refusal(v1_query, &id, e);
    }
    next.run(request).await
}

/// The Host and Origin checks.
fn check_request_origin(
    headers: &axum::http::HeaderMap,
    local: Option<SocketAddr>,
    public_url: Option<&str>,
) -> Result<(), ApiError> {
    let public = public_url.and_then(|u| url::Url::parse(u).ok());
    let public_host = public
        .as_ref()
        .and_then(|u| u.host_str())
        .map(str::to_ascii_lowercase);
    let host_value = match headers.get(axum::http::header::HOST) {
        Some(value) => value.to_str().map_err(|_| foreign_host())?,
        None => return Err(foreign_host()),
    };
    let host = host_name(host_value).ok_or_else(foreign_host)?;
    if !allowed_host(&host, local, public_host.as_deref()) {
        return Err(foreign_host());
    }
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| foreign_origin())?.trim();
    let own = format!("http://{}", host_value.trim());
    let public_origin = public.as_ref().map(|u| u.origin().ascii_serialization());
    if origin.eq_ignore_ascii_case(&own)
        || public_origin.is_some_and(|p| origin.eq_ignore_ascii_case(&p))
    {
        Ok(())
    } else {
        Err(foreign_origin())
    }
}

fn foreign_host() -> ApiError {
    ApiError::access_denied(
        "The Host header names neither this listener's address, a loopback name nor [admin] public_url's host.",
    )
}

fn foreign_origin() -> ApiError {
    ApiError::access_denied(
        "Cross-origin requests are refused: the Origin header is not this listener's own.",
    )
}

/// The host part of a Host header value (`name`, `name:port`, `[v6]`, `[v6]:port`),
/// lower-cased, brackets kept for IPv6.
fn host_name(value: &str) -> Option<String> {
    let value = value.trim();
    let host = if value.starts_with('[') {
        let end = value.find(']')?;
        let rest = value.get(end + 1..)?;
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        value.get(..=end)?
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return None,
            None => value,
        }
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `localhost`, a loopback address, the listen address (any address when it listens on
/// all of them: an address literal cannot be rebound) or `public_url`'s host.
fn allowed_host(host: &str, local: Option<SocketAddr>, public_host: Option<&str>) -> bool {
    if host == "localhost" || public_host == Some(host) {
        return true;
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = literal.parse::<std::net::IpAddr>() else {
        return false;
    };
    if ip.to_canonical().is_loopback() {
        return true;
    }
    local.is_some_and(|l| l.ip().is_unspecified() || l.ip().to_canonical() == ip.to_canonical())
}

/// A body must be JSON; a form post to `/` (the v1 API's) must carry a SigV4 Authorization
/// header, else it is refused as AWS refuses an unsigned request.
fn check_content_type(path: &str, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let has_body = headers.contains_key(axum::http::header::TRANSFER_ENCODING)
        || headers
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if !has_body {
        return Ok(());
    }
    let media_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media_type == "application/json" || media_type.starts_with("application/x-amz-json-") {
        return Ok(());
    }
    let signed = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("AWS4-HMAC-SHA256 "));
    if path == "/" && media_type == "application/x-www-form-urlencoded" {
        if signed {
            return Ok(());
        }
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token",
        ));
    }
    Err(ApiError::new(
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "BadRequestException",
        "A request body must be JSON: send it with Content-Type: application/json.",
    ))
}

// ---------------------------------------------------------------------------------------
// Access, and the body read under its cap and deadline.
// ---------------------------------------------------------------------------------------

/// Loopback only, or a valid SigV4 signature when access keys are configured. With keys,
/// the Authorization header (present, well-formed, a known key, the scope, the date) is
/// checked before a byte of the body is read; then the body is read under its route's cap
/// ([`body_cap`]) and deadline, and the signature checked against it.
async fn authorize(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.relay.config();
    let limits = request
        .extensions()
        .get::<ListenerInfo>()
        .map_or_else(|| Limits::for_config(&config), |info| info.limits);
    let keys: &[config::AccessKey] = config
        .admin
        .as_ref()
        .map_or(&[], |admin| admin.access_keys.as_slice());
    let (parts, body) = request.into_parts();
    // A v1 Query request is refused in v1's XML shape, which its clients parse.
    let v1_query = v1::is_query(parts.uri.path(), &parts.headers);
    let id = request_id_of(&parts.extensions);
    let refuse = |e: ApiError| refusal(v1_query, &id, e);
    let now = SystemTime::now();
    let head = sigv4::RequestHead {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
    };
    let checked = if keys.is_empty() {
        if !peer.ip().to_canonical().is_loopback() {
            return refuse(ApiError::access_denied(
                "sesrelay serves its API to loopback clients only; configure [admin] access_keys to sign requests from elsewhere.",
            ));
        }
        // A v1 request is a form post, which any web page can send cross-site without a
        // preflight: loopback is no defence, so it must carry a SigV4 Authorization
        // header, well-formed (any credentials) even without keys (SPEC 11).
        if v1_query {
            let checked = match sigv4::check_head_any_key(&head, "ses", now) {
                Err(sigv4::SigV4Error::WrongService { .. }) => {
                    sigv4::check_head_any_key(&head, "email", now)
                }
                other => other,
            };
            if let Err(e) = checked {
                return refuse(signature_refused(peer, &e));
            }
        }
        None
    } else {
        // v1 clients may scope their signature to `email`, the v1 endpoint's prefix.
        let checked = match sigv4::check_head(&head, "ses", keys, now) {
            Err(sigv4::SigV4Error::WrongService { .. }) if v1_query => {
                sigv4::check_head(&head, "email", keys, now)
            }
            other => other,
        };
        match checked {
            Ok(checked) => Some(checked),
            Err(e) => return refuse(signature_refused(peer, &e)),
        }
    };
    let path = parts.uri.path();
    let cap = body_cap(path, &config);
    let deadline = if cap > SMALL_BODY_CAP {
        limits.large_body_timeout
    } else {
        limits.body_timeout
    };
    let bytes = match read_body(&parts.headers, body, cap, deadline).await {
        Ok(bytes) => bytes,
        Err(e) => return refuse(e),
    };
    if let Some(checked) = checked
        && let Err(e) = checked.verify_body(&bytes)
    {
        return refuse(signature_refused(peer, &e));
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn signature_refused(peer: SocketAddr, e: &sigv4::SigV4Error) -> ApiError {
    tracing::info!(%peer, code = e.code(), "API request refused: {e}");
    let status =
        axum::http::StatusCode::from_u16(e.status()).unwrap_or(axum::http::StatusCode::FORBIDDEN);
    ApiError::new(status, e.code(), e.to_string())
}

/// The whole body, at most `cap` bytes (a larger declared length is refused unread), within
/// `deadline`.
async fn read_body(
    headers: &axum::http::HeaderMap,
    body: Body,
    cap: usize,
    deadline: Duration,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body is too large: at most {cap} bytes."),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let started = tokio::time::Instant::now();
    let _turn = if cap > SMALL_BODY_CAP && declared != Some(0) {
        match tokio::time::timeout(deadline, LARGE_BODIES.acquire()).await {
            Ok(Ok(turn)) => Some(turn),
            _ => {
                return Err(ApiError::service_unavailable(
                    "Too many messages are being uploaded at once; try again shortly.",
                ));
            }
        }
    } else {
        None
    };
    let deadline = deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, cap)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!(
                "The request body did not arrive within {} seconds.",
                deadline.as_secs_f32()
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Serving.
// ---------------------------------------------------------------------------------------

/// Serves the admin API on `listener` until `shutdown` is set, with the bounds of the
/// current configuration ([`Limits::for_config`]); looks up pending domains in the
/// background.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = Limits::for_config(&state.relay.config());
    serve_with(listener, state, shutdown, limits).await
}

/// What a connection over the cap is told before it is closed.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
x-amzn-ErrorType: ServiceUnavailable\r\n\
connection: close\r\n\
content-length: 93\r\n\r\n\
{\"message\":\"Too many concurrent connections to the admin API.\",\"__type\":\"ServiceUnavailable\"}";

/// Refused connections whose request is drained briefly (so that the client reads the 503
/// rather than a reset); past this many, a refused connection is closed at once.
const MAX_DRAINING_REFUSALS: usize = 8;
/// How long a refused connection's request is drained.
const REFUSAL_DRAIN: Duration = Duration::from_millis(200);

/// [`serve`] with explicit bounds.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AdminState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    limits: Limits,
) -> std::io::Result<()> {
    let checker_state = state.clone();
    let mut checker_shutdown = shutdown.clone();
    let checker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(DOMAIN_CHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = async { let _ = checker_shutdown.wait_for(|stop| *stop).await; } => return,
                _ = tick.tick() => checker_state.check_pending_domains().await,
            }
        }
    });
    let local = listener.local_addr()?;
    tracing::debug!(%local, ?limits, "admin listener bounds");
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(tokio::sync::Semaphore::new(MAX_DRAINING_REFUSALS));
    let (drain, draining) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        refuse_busy(stream, &refusals);
                        continue;
                    };
                    let info = ListenerInfo { local, limits };
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        app.clone(),
                        info,
                        draining.clone(),
                        slot,
                    ));
                }
                Err(e) => {
                    // Out of descriptors (or a connection gone before it was accepted):
                    // back off a little instead of spinning.
                    tracing::warn!(error = %e, "admin listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    checker.abort();
    let _ = drain.send(true);
    let finished = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::info!(
            remaining = connections.len(),
            "admin connections still open after the shutdown grace are dropped"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Tells a connection over the cap that the listener is busy, then closes it.
fn refuse_busy(stream: tokio::net::TcpStream, refusals: &Arc<tokio::sync::Semaphore>) {
    // The socket's send buffer is empty: the short answer goes out without waiting.
    let _ = stream.try_write(BUSY_RESPONSE);
    let Ok(permit) = Arc::clone(refusals).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let _permit = permit;
        let mut stream = stream;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(REFUSAL_DRAIN, async {
            let mut left = 64 * 1024usize;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    });
}

/// One connection: HTTP/1.1 with the head timeout, until it ends or shutdown; then idle
/// connections close at once and a request still running is left to finish until the
/// listener drops the connection.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    info: ListenerInfo,
    mut draining: tokio::sync::watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    use tower::ServiceExt as _;
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(info);
        app.clone().oneshot(request.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(info.limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
            return;
        }
        _ = draining.wait_for(|d| *d) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
