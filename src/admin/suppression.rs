//! The suppression-list operations of the SES v2 API, over [`crate::suppression`]:
//! PutSuppressedDestination, GetSuppressedDestination, DeleteSuppressedDestination,
//! ListSuppressedDestinations, PutAccountSuppressionAttributes and
//! PutConfigurationSetSuppressionOptions, with the botocore model's shapes.
//!
//! Times are written as REST-JSON writes a `timestamp` in a body: epoch seconds, a JSON
//! number (with milliseconds as its fraction). Query-string times (`StartDate`, `EndDate`)
//! arrive as botocore sends them, ISO 8601; epoch seconds are taken too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::api::{invalid_address, parse};
use super::error::ApiError;
use crate::suppression::{ListQuery, SuppressedDestination, SuppressionError, SuppressionReason};

/// The largest `PageSize` of ListSuppressedDestinations, and its default.
pub const MAX_PAGE_SIZE: usize = 1000;

fn suppression_error(e: SuppressionError) -> ApiError {
    match e {
        SuppressionError::InvalidAddress(address) => invalid_address(&address),
        SuppressionError::Full => ApiError::bad_request(e.to_string()),
        other => {
            tracing::error!(error = %other, "suppression list change failed");
            ApiError::internal(other.to_string())
        }
    }
}

/// A `SuppressionListReason`, or BadRequestException.
fn reason(text: &str) -> Result<SuppressionReason, ApiError> {
    SuppressionReason::parse(text).ok_or_else(|| {
        let shown: String = text.chars().take(64).collect();
        ApiError::bad_request(format!(
            "Invalid reason <{shown}>: the reason must be BOUNCE or COMPLAINT."
        ))
    })
}

fn reasons(texts: &[String]) -> Result<Vec<SuppressionReason>, ApiError> {
    texts.iter().map(|t| reason(t)).collect()
}

/// sesrelay has one account-level list and no tenants: a named tenant does not exist.
fn no_tenants(tenant: Option<&str>) -> Result<(), ApiError> {
    match tenant {
        None => Ok(()),
        Some(name) => Err(ApiError::not_found(format!(
            "Tenant <{}> does not exist: sesrelay has no tenants, only the account-level suppression list.",
            name.chars().take(64).collect::<String>()
        ))),
    }
}

/// A checked address (the path's, percent-decoded), or BadRequestException.
fn address(text: &str) -> Result<&str, ApiError> {
    if crate::config::is_address(text) {
        Ok(text)
    } else {
        Err(invalid_address(text))
    }
}

/// Epoch seconds, milliseconds as the fraction.
fn epoch_seconds(t: SystemTime) -> Value {
    let millis = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    if millis.is_multiple_of(1000) {
        json!(u64::try_from(millis / 1000).unwrap_or(u64::MAX))
    } else {
        json!(millis as f64 / 1000.0)
    }
}

fn not_listed(address: &str) -> ApiError {
    ApiError::not_found(format!(
        "Email address <{address}> does not exist on your suppression list."
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutSuppressedDestinationRequest {
    email_address: Option<String>,
    reason: Option<String>,
    tenant_name: Option<String>,
}

/// PutSuppressedDestination: `PUT /v2/email/suppression/addresses`.
pub async fn put_suppressed_destination(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PutSuppressedDestinationRequest = parse(&body)?;
    no_tenants(req.tenant_name.as_deref())?;
    let email = req
        .email_address
        .ok_or_else(|| ApiError::bad_request("EmailAddress is required."))?;
    let email = address(email.trim())?;
    let reason = reason(
        req.reason
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("Reason is required."))?,
    )?;
    state
        .relay
        .suppression()
        .put(email, reason)
        .await
        .map_err(suppression_error)?;
    tracing::info!(address = %email, %reason, "address put on the suppression list");
    Ok(Json(json!({})).into_response())
}

/// The `TenantName` of a query string.
fn query_tenant(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(name, _)| name == "TenantName")
        .map(|(_, value)| value.into_owned())
}

/// GetSuppressedDestination: `GET /v2/email/suppression/addresses/{EmailAddress}`.
pub async fn get_suppressed_destination(
    State(state): State<AdminState>,
    Path(email): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_tenants(query_tenant(query.as_deref()).as_deref())?;
    let email = address(&email)?;
    let entry = state
        .relay
        .suppression()
        .get(email)
        .ok_or_else(|| not_listed(email))?;
    let mut out = json!({
        "EmailAddress": entry.email_address,
        "Reason": entry.reason.as_str(),
        "LastUpdateTime": epoch_seconds(entry.last_update_time),
    });
    let mut attributes = serde_json::Map::new();
    if let Some(id) = &entry.message_id {
        attributes.insert("MessageId".to_owned(), json!(id));
    }
    if let Some(id) = &entry.feedback_id {
        attributes.insert("FeedbackId".to_owned(), json!(id));
    }
    if !attributes.is_empty() {
        out["Attributes"] = Value::Object(attributes);
    }
    Ok(Json(json!({ "SuppressedDestination": out })).into_response())
}

/// DeleteSuppressedDestination: `DELETE /v2/email/suppression/addresses/{EmailAddress}`.
pub async fn delete_suppressed_destination(
    State(state): State<AdminState>,
    Path(email): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    no_tenants(query_tenant(query.as_deref()).as_deref())?;
    let email = address(&email)?;
    let removed = state
        .relay
        .suppression()
        .delete(email)
        .await
        .map_err(suppression_error)?;
    if !removed {
        return Err(not_listed(email));
    }
    tracing::info!(address = %email, "address removed from the suppression list");
    Ok(Json(json!({})).into_response())
}

/// The parameters of ListSuppressedDestinations: from the query string (GET, the
/// published model: `Reason` repeated, `StartDate`, `EndDate`, `NextToken`, `PageSize`) or
/// from a JSON body (`POST /v2/email/list-suppressed-destinations`, as newer botocore
/// models list: `Reasons`, times as epoch seconds or ISO 8601 strings).
#[derive(Debug, Default)]
pub struct ListSuppressedRequest {
    reasons: Vec<String>,
    start: Option<String>,
    end: Option<String>,
    next_token: Option<String>,
    page_size: Option<String>,
    tenant: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ListSuppressedBody {
    #[serde(default, alias = "Reason")]
    reasons: Vec<String>,
    start_date: Option<Value>,
    end_date: Option<Value>,
    next_token: Option<String>,
    page_size: Option<Value>,
    tenant_name: Option<String>,
}

/// A JSON scalar as text (a number stays its digits).
fn scalar_text(value: Option<Value>) -> Option<String> {
    value.map(|v| match v {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for ListSuppressedRequest {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if req.method() == axum::http::Method::GET {
            let mut out = ListSuppressedRequest::default();
            let query = req.uri().query().unwrap_or("");
            for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
                let value = value.into_owned();
                match name.as_ref() {
                    "Reason" => out.reasons.push(value),
                    "StartDate" => out.start = Some(value),
                    "EndDate" => out.end = Some(value),
                    "NextToken" => out.next_token = Some(value),
                    "PageSize" => out.page_size = Some(value),
                    "TenantName" => out.tenant = Some(value),
                    _ => {}
                }
            }
            return Ok(out);
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))?;
        let body: ListSuppressedBody = parse(&body)?;
        Ok(ListSuppressedRequest {
            reasons: body.reasons,
            start: scalar_text(body.start_date),
            end: scalar_text(body.end_date),
            next_token: body.next_token,
            page_size: scalar_text(body.page_size),
            tenant: body.tenant_name,
        })
    }
}

/// A time as clients send one: ISO 8601 / RFC 3339 (botocore's query strings), or epoch
/// seconds.
fn parse_time(name: &str, text: &str) -> Result<SystemTime, ApiError> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if (0.0..1e12).contains(&seconds) {
            return Ok(UNIX_EPOCH + Duration::from_secs_f64(seconds));
        }
    } else if let Ok(t) =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t.into());
    } else if let Ok(t) = time::OffsetDateTime::parse(
        text,
        &time::format_description::well_known::Iso8601::DEFAULT,
    ) {
        return Ok(t.into());
    }
    let shown: String = text.chars().take(64).collect();
    Err(ApiError::bad_request(format!(
        "Invalid {name} <{shown}>: give a time such as 2024-01-31T12:00:00Z, or epoch seconds."
    )))
}

fn invalid_next_token() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidNextTokenException",
        "The NextToken is not valid.",
    )
}

/// ListSuppressedDestinations: `GET /v2/email/suppression/addresses` or
/// `POST /v2/email/list-suppressed-destinations`. In the order of the addresses (lower
/// case); `NextToken` names the last address of the page.
pub async fn list_suppressed_destinations(
    State(state): State<AdminState>,
    req: ListSuppressedRequest,
) -> Result<Response, ApiError> {
    no_tenants(req.tenant.as_deref())?;
    let page_size = match &req.page_size {
        None => MAX_PAGE_SIZE,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "PageSize must be a number from 1 to {MAX_PAGE_SIZE}."
                )));
            }
        },
    };
    let after = match &req.next_token {
        None => None,
        Some(token) => Some(
            URL_SAFE_NO_PAD
                .decode(token.trim().as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(invalid_next_token)?,
        ),
    };
    let query = ListQuery {
        reasons: reasons(&req.reasons)?,
        start: req
            .start
            .as_deref()
            .map(|t| parse_time("StartDate", t))
            .transpose()?,
        end: req
            .end
            .as_deref()
            .map(|t| parse_time("EndDate", t))
            .transpose()?,
        after,
        page_size,
    };
    let page = state.relay.suppression().list(&query);
    let summaries: Vec<Value> = page.destinations.iter().map(summary).collect();
    let mut body = json!({ "SuppressedDestinationSummaries": summaries });
    if let Some(next) = page.next {
        body["NextToken"] = json!(URL_SAFE_NO_PAD.encode(next));
    }
    Ok(Json(body).into_response())
}

fn summary(entry: &SuppressedDestination) -> Value {
    json!({
        "EmailAddress": entry.email_address,
        "Reason": entry.reason.as_str(),
        "LastUpdateTime": epoch_seconds(entry.last_update_time),
    })
}

/// `{"SuppressedReasons": [...]}`, as GetAccount's `SuppressionAttributes` and
/// GetConfigurationSet's `SuppressionOptions` show them.
pub fn reasons_object(reasons: &[SuppressionReason]) -> Value {
    let names: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
    json!({ "SuppressedReasons": names })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutAccountSuppressionAttributesRequest {
    suppressed_reasons: Option<Vec<String>>,
    /// Auto validation: accepted and ignored.
    #[allow(dead_code)]
    validation_attributes: Option<Value>,
}

/// PutAccountSuppressionAttributes: `PUT /v2/email/account/suppression`.
/// `SuppressedReasons` absent is none (the list is then filled by hand only).
pub async fn put_account_suppression_attributes(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PutAccountSuppressionAttributesRequest = parse(&body)?;
    let reasons = reasons(&req.suppressed_reasons.unwrap_or_default())?;
    state
        .relay
        .suppression()
        .put_account_reasons(&reasons)
        .await
        .map_err(suppression_error)?;
    tracing::info!(?reasons, "account suppression reasons changed");
    Ok(Json(json!({})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutConfigurationSetSuppressionOptionsRequest {
    suppressed_reasons: Option<Vec<String>>,
    suppression_scope: Option<String>,
    /// Auto validation: accepted and ignored.
    #[allow(dead_code)]
    validation_options: Option<Value>,
}

/// PutConfigurationSetSuppressionOptions:
/// `PUT /v2/email/configuration-sets/{Name}/suppression-options`. `SuppressedReasons`
/// (even empty) becomes the set's own; absent, the set's options are removed and it uses
/// the account's again.
pub async fn put_configuration_set_suppression_options(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PutConfigurationSetSuppressionOptionsRequest = parse(&body)?;
    match req.suppression_scope.as_deref() {
        None | Some("ACCOUNT") => {}
        Some("TENANT") => {
            return Err(ApiError::bad_request(
                "SuppressionScope TENANT is not supported: sesrelay has no tenants.",
            ));
        }
        Some(other) => {
            let shown: String = other.chars().take(64).collect();
            return Err(ApiError::bad_request(format!(
                "Invalid SuppressionScope <{shown}>: it must be ACCOUNT or TENANT."
            )));
        }
    }
    let reasons = req.suppressed_reasons.as_deref().map(reasons).transpose()?;
    if !state
        .relay
        .config()
        .policy
        .configuration_sets
        .contains_key(&name)
    {
        return Err(ApiError::no_configuration_set(&name));
    }
    state
        .relay
        .suppression()
        .put_set_options(&name, reasons.as_deref())
        .await
        .map_err(suppression_error)?;
    tracing::info!(configuration_set = %name, ?reasons, "configuration set suppression options changed");
    Ok(Json(json!({})).into_response())
}

/// Forgets the suppression options of a set that was deleted or created anew, so that a
/// new set of an old name starts with the account's. A failure is logged: the set's
/// change is made already.
pub async fn forget_set_options(state: &AdminState, name: &str) {
    if let Err(e) = state.relay.suppression().remove_set(name).await {
        tracing::error!(configuration_set = %name, error = %e, "cannot remove the set's suppression options");
    }
}
