//! The admin listener: the SES v2 API (`/v2/email/...`) over HTTP, with axum.
//!
//! Every change the API makes goes through [`store::Store`] into the configuration file and
//! the running relay at once. `/verify` serves the links of verification messages. Access:
//! loopback clients only, or, with `[admin] access_keys`, requests signed with SigV4.

pub mod api;
pub mod error;
pub mod sigv4;
pub mod store;
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

use crate::config;
use crate::relay::Relay;
use crate::upstream::Envelope;
use error::ApiError;
use store::Store;
use verification::{VerificationError, Verifier};

/// SendEmail carries up to 40 MiB of message, base64-encoded inside JSON.
const MAX_BODY: usize = 60 * 1024 * 1024;
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
            }),
        })
    }

    /// Sends the verification message for a new email-address identity, through the
    /// upstream and not through the policy. A failure is logged: the identity stays pending.
    pub async fn send_verification(&self, address: &str, nonce: &str) {
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

/// The routes: the API behind the access check, `/verify` open to whoever has a link.
pub fn router(state: AdminState) -> Router {
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
        .fallback(api::unknown_operation)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .route("/verify", get(api::verify_link))
        .merge(api)
        .with_state(state)
}

/// Loopback only, or a valid SigV4 signature when access keys are configured.
async fn authorize(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.relay.config();
    let keys: &[config::AccessKey] = config
        .admin
        .as_ref()
        .map_or(&[], |admin| admin.access_keys.as_slice());
    if keys.is_empty() {
        if !peer.ip().to_canonical().is_loopback() {
            return ApiError::access_denied(
                "sesrelay serves its API to loopback clients only; configure [admin] access_keys to sign requests from elsewhere.",
            )
            .into_response();
        }
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "The request body is too large.",
            )
            .into_response();
        }
    };
    let signed = sigv4::SignedRequest {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &bytes,
    };
    if let Err(e) = sigv4::verify(&signed, "ses", keys, SystemTime::now()) {
        tracing::info!(%peer, code = e.code(), "API request refused: {e}");
        let status = axum::http::StatusCode::from_u16(e.status())
            .unwrap_or(axum::http::StatusCode::FORBIDDEN);
        return ApiError::new(status, e.code(), e.to_string()).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Serves the admin API on `listener` until `shutdown` is set; looks up pending domains in
/// the background.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
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
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    checker.abort();
    result
}
