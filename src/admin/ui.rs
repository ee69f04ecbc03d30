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
use std::time::SystemTime;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::AdminState;
use crate::capture::{Captured, Outcome, SetSource};
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
        .route("/message/{id}", get(message_page))
        .route("/message/{id}/html", get(message_html))
        .route("/message/{id}/row", get(row_fragment))
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

/// Who may see the pages: whoever may use the capture API ([`super::capture::access`]):
/// without `[admin] access_keys`, loopback clients; with them, HTTP Basic auth by one of
/// `[admin] ui_users`.
pub async fn ui_auth(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    super::capture::access(State(state), ConnectInfo(peer), request, next).await
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

/// Messages on one page of the list.
const PAGE_SIZE: usize = 50;
/// The raw source shown in the message page at most (the whole is at the raw link).
const RAW_SHOWN: usize = 256 * 1024;

/// One row of the list (`templates/row.html`), also served alone for the live list.
struct MessageRow {
    id: String,
    time: String,
    outcome: &'static str,
    /// The badge's class: `ok`, `bad`, `warn`.
    outcome_class: &'static str,
    from: String,
    to: String,
    subject: String,
    /// `marketing · address default`, `no set · none`.
    set: String,
}

impl MessageRow {
    fn of(c: &Captured) -> MessageRow {
        let set = c.configuration_set.as_deref().unwrap_or("no set");
        MessageRow {
            id: c.id.clone(),
            time: format_time(c.time),
            outcome: c.outcome.as_str(),
            outcome_class: outcome_class(c.outcome),
            from: if c.from.is_empty() {
                c.mail_from.clone()
            } else {
                c.from.clone()
            },
            to: if c.to.is_empty() {
                c.rcpt_to.join(", ")
            } else {
                c.to.join(", ")
            },
            subject: c.subject.clone(),
            set: format!("{set} · {}", source_words(c.set_source)),
        }
    }
}

fn outcome_class(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Forwarded => "ok",
        Outcome::Rejected => "bad",
        Outcome::UpstreamRefused => "warn",
    }
}

/// A set's source in words.
fn source_words(source: SetSource) -> &'static str {
    match source {
        SetSource::Header => "header",
        SetSource::ApiParameter => "API parameter",
        SetSource::AddressDefault => "address default",
        SetSource::DomainDefault => "domain default",
        SetSource::None => "none",
    }
}

/// `2026-11-27 04:41:19 UTC`.
fn format_time(time: SystemTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from(time)
        .format(format)
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    title: &'static str,
    query: String,
    total: usize,
    messages: Vec<MessageRow>,
    /// The live list: the unfiltered first page only.
    live: bool,
    previous: Option<String>,
    next: Option<String>,
    capture_enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    q: Option<String>,
    start: Option<usize>,
}

/// `GET /?q=&start=`: newest first, [`PAGE_SIZE`] at a time, filtered by the store's search.
async fn list_page(State(state): State<AdminState>, Query(query): Query<ListQuery>) -> Response {
    let store = state.relay.capture();
    let q = query.q.unwrap_or_default().trim().to_owned();
    let start = query.start.unwrap_or(0);
    let (total, messages) = if q.is_empty() {
        store.list(start, PAGE_SIZE)
    } else {
        store.search(&q, start, PAGE_SIZE)
    };
    let link = |start: usize| {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        if !q.is_empty() {
            url.append_pair("q", &q);
        }
        if start > 0 {
            url.append_pair("start", &start.to_string());
        }
        format!("/?{}", url.finish())
    };
    let previous = (start > 0).then(|| link(start.saturating_sub(PAGE_SIZE)));
    let next = (start + messages.len() < total).then(|| link(start + PAGE_SIZE));
    page(
        StatusCode::OK,
        &ListPage {
            title: "Mail",
            live: q.is_empty() && start == 0,
            query: q,
            total,
            messages: messages.iter().map(|c| MessageRow::of(c)).collect(),
            previous,
            next,
            capture_enabled: store.enabled(),
        },
    )
}

#[derive(Template)]
#[template(path = "row.html")]
struct RowFragment {
    m: MessageRow,
}

/// `GET /message/{id}/row`: the list's row for one message, for the live list's script.
async fn row_fragment(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.relay.capture().get(&id) {
        Some(c) => page(
            StatusCode::OK,
            &RowFragment {
                m: MessageRow::of(&c),
            },
        ),
        None => not_found(),
    }
}

fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such message: it was never captured, or it is no longer kept ([capture] max_messages).",
    )
}

// ---------------------------------------------------------------------------------------
// A message.
// ---------------------------------------------------------------------------------------

struct EventRow {
    event_type: String,
    time: String,
    destination: String,
    summary: String,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    title: String,
    id: String,
    row: MessageRow,
    /// The decision in words, in order.
    trail: Vec<String>,
    facts: Vec<(&'static str, String)>,
    tags: Vec<(String, String)>,
    events: Vec<EventRow>,
    headers: Vec<(String, String)>,
    text: Option<String>,
    has_html: bool,
    /// The raw source (lossy UTF-8, at most [`RAW_SHOWN`] bytes), and whether it was cut.
    raw: Option<String>,
    raw_cut: bool,
}

/// The decision trail of a captured message, in words.
fn decision_trail(c: &Captured) -> Vec<String> {
    let mut trail = Vec::new();
    trail.push(match c.outcome {
        Outcome::Forwarded => "forwarded: the upstream took it".to_owned(),
        Outcome::Rejected => "rejected by the SES rules: nothing was forwarded".to_owned(),
        Outcome::UpstreamRefused => {
            "accepted by the SES rules, then refused by the upstream".to_owned()
        }
    });
    let set = c.configuration_set.as_deref();
    let identity = c.identity.as_deref();
    trail.push(match (c.set_source, set) {
        (SetSource::Header, Some(set)) => format!("X-SES-CONFIGURATION-SET header → {set}"),
        (SetSource::ApiParameter, Some(set)) => {
            format!("ConfigurationSetName API parameter → {set}")
        }
        (SetSource::AddressDefault, Some(set)) => format!(
            "default configuration set of {} → {set}",
            identity.unwrap_or("the sender's address")
        ),
        (SetSource::DomainDefault, Some(set)) => format!(
            "default configuration set of the domain {} → {set}",
            identity.unwrap_or("of the sender")
        ),
        (_, Some(set)) => format!("configuration set → {set}"),
        (_, None) => match identity {
            Some(identity) => {
                format!("no configuration set: the verified identity {identity} has no default")
            }
            None if c.outcome == Outcome::Rejected => {
                "no configuration set: the message was refused before one was chosen".to_owned()
            }
            None => "no configuration set: no verified identity with a default covers the sender"
                .to_owned(),
        },
    });
    if let Some(identity) = identity {
        trail.push(format!("identity that decided: {identity}"));
    }
    if !c.tags.is_empty() {
        let tags: Vec<String> = c.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        trail.push(format!("X-SES-MESSAGE-TAGS: {}", tags.join(", ")));
    }
    trail.push(format!("reply: {}", c.reply));
    trail
}

/// `GET /message/{id}`.
async fn message_page(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(c) = state.relay.capture().get(&id) else {
        return not_found();
    };
    let parts = c.parts();
    let (text, html) = match (&parts, &c.simple) {
        (Some(parts), _) => (parts.text.clone(), parts.html.is_some()),
        (None, Some(simple)) => (simple.text.clone(), simple.html.is_some()),
        (None, None) => (None, false),
    };
    let raw = c.raw();
    let raw_cut = raw.as_ref().is_some_and(|r| r.len() > RAW_SHOWN);
    let raw = raw.map(|r| String::from_utf8_lossy(&r[..r.len().min(RAW_SHOWN)]).into_owned());
    let mut facts = vec![
        ("Time", format_time(c.time)),
        ("Protocol", c.protocol.to_owned()),
        ("Client", c.client.to_string()),
    ];
    if let Some(user) = &c.user {
        facts.push(("AUTH user", user.clone()));
    }
    facts.push((
        "MAIL FROM",
        if c.mail_from.is_empty() {
            "<>".to_owned()
        } else {
            c.mail_from.clone()
        },
    ));
    facts.push(("RCPT TO", c.rcpt_to.join(", ")));
    facts.push(("Size", format!("{} bytes", c.size)));
    facts.push(("ID", c.id.clone()));
    let events = c
        .events()
        .into_iter()
        .map(|e| EventRow {
            event_type: e.event_type,
            time: format_time(e.time),
            destination: e.destination,
            summary: e.summary,
        })
        .collect();
    page(
        StatusCode::OK,
        &MessagePage {
            title: if c.subject.is_empty() {
                "(no subject)".to_owned()
            } else {
                c.subject.clone()
            },
            id: c.id.clone(),
            row: MessageRow::of(&c),
            trail: decision_trail(&c),
            facts,
            tags: c.tags.clone(),
            events,
            headers: parts.map(|p| p.headers).unwrap_or_default(),
            text,
            has_html: html,
            raw,
            raw_cut,
        },
    )
}

/// `GET /message/{id}/html`: the HTML part alone, sandboxed ([`HTML_PART_CSP`]), for the
/// message page's `<iframe sandbox>`.
async fn message_html(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(c) = state.relay.capture().get(&id) else {
        return not_found();
    };
    let html = c
        .parts()
        .and_then(|p| p.html)
        .or_else(|| c.simple.as_ref().and_then(|s| s.html.clone()));
    match html {
        Some(html) => with_page_headers(
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
            HTML_PART_CSP,
        ),
        None => not_found(),
    }
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
