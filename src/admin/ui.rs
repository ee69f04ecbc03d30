//! The pages on the admin listener (SPEC 10): the list of captured mail at `/`, a message's
//! page, its HTML part alone (for a sandboxed iframe), and the identities page with its
//! resolve form. Server-rendered with askama from `templates/`; one stylesheet and one small
//! script, compiled into the binary, are the only assets.
//!
//! Safety: every page carries [`PAGE_CSP`] (nothing is loaded from elsewhere, no inline
//! script), a message's HTML is served alone with `Content-Security-Policy: sandbox` (no
//! script, an opaque origin) and shown in an `<iframe sandbox>`. The listener's `guard`
//! (Host, Origin) applies to every page, and [`ui_auth`] decides who may see them.

use std::net::SocketAddr;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::AdminState;
use crate::config::Config;

/// The pages' Content-Security-Policy: everything from this listener only, no inline script
/// or style, frames only from here (the HTML part), never framed by another site.
pub const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// A message's HTML part: sandboxed (no script, no forms, an opaque origin), nothing loaded
/// from the network (a remote image would tell its sender the mail was opened), framed only
/// by the message page.
pub const HTML_PART_CSP: &str = "sandbox; default-src 'none'; img-src data:; \
     style-src 'unsafe-inline'; font-src data:; frame-ancestors 'self'";

const APP_CSS: &str = include_str!("../../static/app.css");
const APP_JS: &str = include_str!("../../static/app.js");

/// The pages' routes, behind [`ui_auth`] and the listener's `guard`. Served whether or not
/// `[admin] api` is on: the pages are the developer's view.
pub fn routes(state: &AdminState) -> Router<AdminState> {
    Router::new()
        .route("/", get(list_page))
        .route("/identities", get(identities_page))
        .route("/static/app.css", get(app_css))
        .route("/static/app.js", get(app_js))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ui_auth))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::guard,
        ))
}

/// Whether `GET path` is one of the pages (not counted as an API request).
pub fn is_page(method: &axum::http::Method, path: &str) -> bool {
    (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        && (path == "/"
            || path == "/identities"
            || path.starts_with("/message/")
            || path.starts_with("/static/"))
}

/// Who may see the pages: loopback clients. (With `[admin] access_keys` set, the pages are
/// meant to take HTTP Basic auth from `[admin] ui_users`; until that exists they stay
/// loopback-only whatever the keys.)
pub async fn ui_auth(
    State(_state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !peer.ip().to_canonical().is_loopback() {
        tracing::info!(%peer, uri = %request.uri(), "page refused: not a loopback client");
        return error_page(
            StatusCode::FORBIDDEN,
            "sesrelay serves its pages to loopback clients only.",
        );
    }
    next.run(request).await
}

// ---------------------------------------------------------------------------------------
// Rendering.
// ---------------------------------------------------------------------------------------

/// A rendered page with the pages' headers.
fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => with_page_headers(
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
            PAGE_CSP,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "a page could not be rendered");
            with_page_headers(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "the page could not be rendered",
                )
                    .into_response(),
                PAGE_CSP,
            )
        }
    }
}

fn with_page_headers(mut response: Response, csp: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        &ErrorPage {
            title: status.canonical_reason().unwrap_or("Error"),
            message,
        },
    )
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    with_page_headers(
        ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        PAGE_CSP,
    )
}

// ---------------------------------------------------------------------------------------
// The list.
// ---------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    title: &'static str,
}

async fn list_page() -> Response {
    page(
        StatusCode::OK,
        &ListPage {
            title: "Captured mail",
        },
    )
}

// ---------------------------------------------------------------------------------------
// The identities page and its resolve form.
// ---------------------------------------------------------------------------------------

/// One identity as the relay applies it.
struct IdentityRow {
    name: String,
    kind: &'static str,
    verified: bool,
    /// The default set, or `-`.
    default_set: String,
    /// Why the default does not apply, when it does not.
    default_note: Option<&'static str>,
}

/// A configuration set.
struct SetRow {
    name: String,
    sending_enabled: bool,
    tags: String,
}

/// The resolve form's answer.
struct Resolved {
    from: String,
    set: String,
    accepted: bool,
    /// What `sesrelay resolve` prints, or why it could not run.
    text: String,
}

#[derive(Template)]
#[template(path = "identities.html")]
struct IdentitiesPage {
    title: &'static str,
    require_verified_sender: bool,
    inherit_domain_default: bool,
    sets: Vec<SetRow>,
    identities: Vec<IdentityRow>,
    pending: Vec<String>,
    warnings: Vec<String>,
    from: String,
    set: String,
    resolved: Option<Resolved>,
}

#[derive(Debug, Default, Deserialize)]
struct ResolveQuery {
    from: Option<String>,
    set: Option<String>,
}

async fn identities_page(
    State(state): State<AdminState>,
    Query(query): Query<ResolveQuery>,
) -> Response {
    let config = state.relay.config();
    let from = query.from.unwrap_or_default().trim().to_owned();
    let set = query.set.unwrap_or_default().trim().to_owned();
    let resolved = (!from.is_empty()).then(|| {
        let header = (!set.is_empty()).then_some(set.as_str());
        match crate::cli::resolve_address(&config, &from, header) {
            Ok(answer) => Resolved {
                from: from.clone(),
                set: set.clone(),
                accepted: answer.accepted,
                text: answer.text.trim_end().to_owned(),
            },
            Err(e) => Resolved {
                from: from.clone(),
                set: set.clone(),
                accepted: false,
                text: e.to_string().replace("--from", "From"),
            },
        }
    });
    page(
        StatusCode::OK,
        &IdentitiesPage {
            title: "Identities",
            require_verified_sender: config.policy.require_verified_sender,
            inherit_domain_default: config.policy.inherit_domain_default,
            sets: set_rows(&config),
            identities: identity_rows(&config),
            pending: crate::cli::pending_verifications(&config),
            warnings: config.warnings(),
            from,
            set,
            resolved,
        },
    )
}

fn set_rows(config: &Config) -> Vec<SetRow> {
    config
        .policy
        .configuration_sets
        .iter()
        .map(|(name, set)| SetRow {
            name: name.clone(),
            sending_enabled: set.sending_enabled,
            tags: set
                .tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

fn identity_rows(config: &Config) -> Vec<IdentityRow> {
    let sets = &config.policy.configuration_sets;
    config
        .identities()
        .map(|(name, identity, record)| {
            let (default_set, default_note) = match &identity.default_configuration_set {
                None => ("-".to_owned(), None),
                Some(set) if !sets.contains_key(set) => {
                    (set.clone(), Some("does not exist: a deleted set"))
                }
                Some(set) if !identity.verified => (set.clone(), Some("not applied: unverified")),
                Some(set) => (set.clone(), None),
            };
            IdentityRow {
                name: name.to_owned(),
                kind: record.kind().as_str(),
                verified: identity.verified,
                default_set,
                default_note,
            }
        })
        .collect()
}
