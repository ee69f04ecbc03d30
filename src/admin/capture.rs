//! The captured-mail API (SPEC.md section 10): Mailpit's `/api/v1` shapes with sesrelay's
//! facts in an `SES` object, Server-Sent Events, and LocalStack's `/_aws/ses`.
//!
//! Access ([`access`]): without `[admin] access_keys`, loopback clients only (as the SES
//! API); with them, HTTP Basic auth from `[admin] ui_users` (never SigV4). The routes sit
//! behind the listener's `guard` (Host, Origin, JSON bodies).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::capture::{Captured, Outcome};

/// Messages in a page when `limit` is not given (Mailpit's default).
const DEFAULT_LIMIT: usize = 50;

/// The routes; `access` is applied here, `guard` by the caller.
pub fn routes(state: &AdminState) -> Router<AdminState> {
    Router::new()
        .route("/api/v1/messages", get(list).delete(delete))
        .route("/api/v1/message/{id}", get(message))
        .route("/api/v1/message/{id}/raw", get(raw))
        .route("/api/v1/message/{id}/headers", get(headers))
        .route("/api/v1/search", get(search))
        .route("/api/v1/events", get(events))
        .route("/_aws/ses", get(localstack_list).delete(localstack_delete))
        .layer(middleware::from_fn_with_state(state.clone(), access))
}

// ---------------------------------------------------------------------------------------
// Access.
// ---------------------------------------------------------------------------------------

fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"Error": "authentication required"})),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sesrelay\""),
    );
    response
}

/// `user:password` of a Basic Authorization header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Without access keys, loopback clients only; with them, Basic auth by one of
/// `ui_users` (argon2 on a blocking thread; an unknown user is checked against a dummy
/// hash so that the time taken does not tell which names exist). With access keys and no
/// ui_users, everyone gets 401.
pub(super) async fn access(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.relay.config();
    let Some(admin) = config.admin.as_ref() else {
        return next.run(request).await;
    };
    if admin.access_keys.is_empty() {
        if !peer.ip().to_canonical().is_loopback() {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"Error": "sesrelay serves captured mail to loopback clients only; configure [admin] access_keys and ui_users to allow others"})),
            )
                .into_response();
        }
        return next.run(request).await;
    }
    let Some((user, password)) = basic_credentials(request.headers()) else {
        return unauthorized();
    };
    let (hash, known) = match admin.ui_users.iter().find(|u| u.username == user) {
        Some(u) => (u.password_hash.clone(), true),
        None => (crate::password::DUMMY_HASH.to_owned(), false),
    };
    let verified =
        tokio::task::spawn_blocking(move || crate::password::verify(&password, &hash)).await;
    if verified.unwrap_or(false) && known {
        next.run(request).await
    } else {
        unauthorized()
    }
}

// ---------------------------------------------------------------------------------------
// Shapes.
// ---------------------------------------------------------------------------------------

fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `{Name, Address}` of `Name <address>` or `address`.
fn mailbox(text: &str) -> Value {
    let text = text.trim();
    match (text.rfind('<'), text.ends_with('>')) {
        (Some(open), true) => json!({
            "Name": text[..open].trim().trim_matches('"'),
            "Address": &text[open + 1..text.len() - 1],
        }),
        _ => json!({"Name": "", "Address": text}),
    }
}

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<Value> {
    list.map(|a| {
        a.iter()
            .map(|m| {
                json!({
                    "Name": m.name().unwrap_or_default(),
                    "Address": m.address().unwrap_or_default(),
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

/// What the list and the message share, read from the raw bytes when they are kept.
struct Read {
    message_id: String,
    cc: Vec<Value>,
    reply_to: Vec<Value>,
    snippet: String,
}

fn read(c: &Captured) -> Read {
    let raw = c.raw();
    let parsed = raw
        .as_deref()
        .and_then(|raw| mail_parser::MessageParser::default().parse(raw));
    let Some(m) = parsed else {
        return Read {
            message_id: String::new(),
            cc: Vec::new(),
            reply_to: Vec::new(),
            snippet: String::new(),
        };
    };
    let text = m.body_text(0).unwrap_or_default();
    let snippet: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Read {
        message_id: m.message_id().unwrap_or_default().to_owned(),
        cc: addresses(m.cc()),
        reply_to: addresses(m.reply_to()),
        snippet: snippet.chars().take(250).collect(),
    }
}

fn ses(c: &Captured) -> serde_json::Map<String, Value> {
    let tags: serde_json::Map<String, Value> = c
        .tags
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    let mut ses = serde_json::Map::new();
    ses.insert("Outcome".into(), c.outcome.as_str().into());
    ses.insert("Reply".into(), c.reply.clone().into());
    ses.insert(
        "ConfigurationSet".into(),
        c.configuration_set.clone().into(),
    );
    ses.insert(
        "ConfigurationSetSource".into(),
        c.set_source.as_str().into(),
    );
    ses.insert("Identity".into(), c.identity.clone().into());
    ses.insert("Tags".into(), Value::Object(tags));
    ses.insert("Protocol".into(), c.protocol.into());
    ses.insert("Client".into(), c.client.to_string().into());
    ses.insert("User".into(), c.user.clone().into());
    ses.insert("MailFrom".into(), c.mail_from.clone().into());
    ses.insert("RcptTo".into(), c.rcpt_to.clone().into());
    ses.insert("RawKept".into(), c.raw().is_some().into());
    ses
}

/// One message of a list (and of an SSE event's data).
pub fn list_item(c: &Captured) -> Value {
    let r = read(c);
    json!({
        "ID": c.id,
        "MessageID": r.message_id,
        "Read": false,
        "From": mailbox(&c.from),
        "To": c.to.iter().map(|t| mailbox(t)).collect::<Vec<_>>(),
        "Cc": r.cc,
        "Bcc": [],
        "ReplyTo": r.reply_to,
        "Subject": c.subject,
        "Created": rfc3339(c.time),
        "Size": c.size,
        "Attachments": 0,
        "Snippet": r.snippet,
        "Tags": [],
        "SES": Value::Object(ses(c)),
    })
}

fn message_view(c: &Captured) -> Value {
    let mut item = list_item(c);
    let parts = c.parts();
    let events: Vec<Value> = c
        .events()
        .iter()
        .map(|e| {
            json!({
                "Type": e.event_type,
                "Time": rfc3339(e.time),
                "Destination": e.destination,
                "Summary": e.summary,
            })
        })
        .collect();
    if let Some(object) = item.as_object_mut() {
        object.insert(
            "Text".into(),
            parts
                .as_ref()
                .and_then(|p| p.text.clone())
                .unwrap_or_default()
                .into(),
        );
        object.insert(
            "HTML".into(),
            parts
                .as_ref()
                .and_then(|p| p.html.clone())
                .unwrap_or_default()
                .into(),
        );
        object.insert(
            "Headers".into(),
            parts.as_ref().map(headers_map).unwrap_or_else(|| json!({})),
        );
        if let Some(Value::Object(ses)) = object.get_mut("SES") {
            ses.insert("Events".into(), events.into());
        }
    }
    item
}

/// Mailpit's headers: name → every value, in order.
fn headers_map(parts: &crate::capture::Parts) -> Value {
    let mut map = serde_json::Map::new();
    for (name, value) in &parts.headers {
        if let Value::Array(values) = map
            .entry(name.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            values.push(value.clone().into());
        }
    }
    Value::Object(map)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"Error": "message not found"})),
    )
        .into_response()
}

fn find(state: &AdminState, id: &str) -> Option<Arc<Captured>> {
    let store = state.relay.capture();
    if id == "latest" {
        store.latest()
    } else {
        store.get(id)
    }
}

// ---------------------------------------------------------------------------------------
// Handlers.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Page {
    start: Option<usize>,
    limit: Option<usize>,
    query: Option<String>,
}

fn page_answer(total: usize, start: usize, messages: &[Arc<Captured>]) -> Json<Value> {
    let messages: Vec<Value> = messages.iter().map(|c| list_item(c)).collect();
    Json(json!({
        "total": total,
        "unread": 0,
        "count": messages.len(),
        "messages_count": total,
        "start": start,
        "tags": [],
        "messages": messages,
    }))
}

/// `GET /api/v1/messages?start=&limit=`: newest first.
async fn list(State(state): State<AdminState>, Query(page): Query<Page>) -> Json<Value> {
    let start = page.start.unwrap_or(0);
    let (total, messages) = state
        .relay
        .capture()
        .list(start, page.limit.unwrap_or(DEFAULT_LIMIT));
    page_answer(total, start, &messages)
}

/// `GET /api/v1/search?query=&start=&limit=`.
async fn search(State(state): State<AdminState>, Query(page): Query<Page>) -> Json<Value> {
    let start = page.start.unwrap_or(0);
    let (total, messages) = state.relay.capture().search(
        page.query.as_deref().unwrap_or(""),
        start,
        page.limit.unwrap_or(DEFAULT_LIMIT),
    );
    page_answer(total, start, &messages)
}

#[derive(Debug, Deserialize)]
struct DeleteRequest {
    #[serde(rename = "IDs", default)]
    ids: Vec<String>,
}

/// `DELETE /api/v1/messages`: every message, or those of `{"IDs": [...]}`.
async fn delete(State(state): State<AdminState>, body: Bytes) -> Response {
    let store = state.relay.capture();
    let ids = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        match serde_json::from_slice::<DeleteRequest>(&body) {
            Ok(request) => request.ids,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"Error": format!("the body is not {{\"IDs\": [...]}}: {e}")})),
                )
                    .into_response();
            }
        }
    };
    if ids.is_empty() {
        store.delete_all();
    } else {
        store.delete(&ids);
    }
    (StatusCode::OK, "ok").into_response()
}

/// `GET /api/v1/message/{id|latest}`.
async fn message(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match find(&state, &id) {
        Some(c) => Json(message_view(&c)).into_response(),
        None => not_found(),
    }
}

/// `GET /api/v1/message/{id}/raw`: as forwarded, or as received; 404 once evicted.
async fn raw(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match find(&state, &id).and_then(|c| c.raw()) {
        Some(raw) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], raw).into_response(),
        None => not_found(),
    }
}

/// `GET /api/v1/message/{id}/headers`: name → values; 404 once the raw bytes are evicted.
async fn headers(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match find(&state, &id).and_then(|c| c.parts()) {
        Some(parts) => Json(headers_map(&parts)).into_response(),
        None => not_found(),
    }
}

fn sse_event(c: &Captured) -> Event {
    Event::default()
        .event("message")
        .id(c.id.clone())
        .data(list_item(c).to_string())
}

/// `GET /api/v1/events`: one `message` event per captured outcome, `id` the message's;
/// with `Last-Event-ID`, what came after that message first.
async fn events(State(state): State<AdminState>, request_headers: HeaderMap) -> impl IntoResponse {
    let store = state.relay.capture();
    // Subscribe first, then replay: a message captured in between comes twice at worst,
    // and is dropped by its sequence number.
    let live = store.subscribe();
    let replay: Vec<Arc<Captured>> = request_headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| store.since(id.trim()))
        .unwrap_or_default();
    let last_seq = replay.last().map_or(0, |c| c.seq);
    let replayed = futures_util::stream::iter(
        replay
            .into_iter()
            .map(|c| Ok::<Event, Infallible>(sse_event(&c))),
    );
    let live = futures_util::stream::unfold(live, move |mut live| async move {
        loop {
            match live.recv().await {
                Ok(c) if c.seq > last_seq => return Some((Ok(sse_event(&c)), live)),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures_util::StreamExt as _;
    Sse::new(replayed.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

// ---------------------------------------------------------------------------------------
// LocalStack's `/_aws/ses`.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct LocalStackFilter {
    id: Option<String>,
    email: Option<String>,
}

/// LocalStack's `Timestamp`: UTC, to the second, no zone (`2026-11-26T13:29:38`).
fn localstack_time(time: SystemTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::OffsetDateTime::from(time)
        .format(&format)
        .unwrap_or_default()
}

/// The `Source` of a record: the envelope sender, else the From address.
fn source(c: &Captured) -> String {
    if c.mail_from.is_empty() {
        mailbox(c.from.split(',').next().unwrap_or_default())["Address"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        c.mail_from.clone()
    }
}

fn localstack_record(c: &Captured, region: &str) -> Value {
    match &c.simple {
        Some(simple) => json!({
            "Id": c.id,
            "Region": region,
            "Timestamp": localstack_time(c.time),
            "Source": source(c),
            "Destination": {
                "ToAddresses": simple.to_addresses,
                "CcAddresses": simple.cc_addresses,
                "BccAddresses": simple.bcc_addresses,
            },
            "Subject": simple.subject,
            "Body": {"text_part": simple.text, "html_part": simple.html},
        }),
        None => json!({
            "Id": c.id,
            "Region": region,
            "Timestamp": localstack_time(c.time),
            "Source": source(c),
            "RawData": c.raw().map(|raw| String::from_utf8_lossy(&raw).into_owned()),
        }),
    }
}

/// `GET /_aws/ses?id=&email=`: the messages sent (forwarded), oldest first, as LocalStack
/// lists them; `email` is compared with `Source`, ignoring case.
async fn localstack_list(
    State(state): State<AdminState>,
    Query(filter): Query<LocalStackFilter>,
) -> Json<Value> {
    let config = state.relay.config();
    let store = state.relay.capture();
    let (_, mut all) = store.list(0, usize::MAX);
    all.reverse();
    let messages: Vec<Value> = all
        .iter()
        .filter(|c| c.outcome == Outcome::Forwarded)
        .filter(|c| filter.id.as_deref().is_none_or(|id| c.id == id))
        .filter(|c| {
            filter
                .email
                .as_deref()
                .is_none_or(|email| source(c).eq_ignore_ascii_case(email))
        })
        .map(|c| localstack_record(c, &config.server.region))
        .collect();
    Json(json!({ "messages": messages }))
}

/// `DELETE /_aws/ses?id=`: that message, or every one; 204.
async fn localstack_delete(
    State(state): State<AdminState>,
    Query(filter): Query<LocalStackFilter>,
) -> StatusCode {
    let store = state.relay.capture();
    match filter.id {
        Some(id) => {
            store.delete(&[id]);
        }
        None => store.delete_all(),
    }
    StatusCode::NO_CONTENT
}
