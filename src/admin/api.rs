//! The SES v2 operations: request and response shapes as the botocore model gives them
//! (`reference/sesv2-model-subset.json`), so that `aws sesv2 --endpoint-url ...` parses every
//! answer and prints SES's own messages.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AdminState;
use super::error::ApiError;
use super::idempotency::{self, Claim};
use super::verification::LinkError;
use crate::account::Throttle;
use crate::config::{self, IdentityKind, Verification};
use crate::message::encoded_word;
use crate::policy::{Rejection, is_valid_configuration_set_name};
use crate::relay::{Refusal, Submission};
use crate::upstream::DeliveryError;

/// The body as JSON; an empty body is `{}`.
pub(super) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TagOut<'a> {
    key: &'a str,
    value: &'a str,
}

fn tags_out(tags: &BTreeMap<String, String>) -> Vec<TagOut<'_>> {
    tags.iter()
        .map(|(key, value)| TagOut { key, value })
        .collect()
}

/// Resource tags as AWS takes them: at most 50, keys 1-128 and values at most 256
/// characters, no key twice.
fn resource_tags(tags: Vec<Tag>) -> Result<Vec<(String, String)>, ApiError> {
    if tags.len() > config::MAX_RESOURCE_TAGS {
        return Err(ApiError::bad_request(format!(
            "Too many tags: a resource has at most {} tags, not {}.",
            config::MAX_RESOURCE_TAGS,
            tags.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(tags.len());
    let mut out: Vec<(String, String)> = Vec::with_capacity(tags.len());
    for tag in tags {
        config::validate_resource_tag(&tag.key, &tag.value)
            .map_err(|m| ApiError::bad_request(format!("Invalid tag: {m}.")))?;
        if !seen.insert(tag.key.clone()) {
            return Err(ApiError::bad_request(format!(
                "Duplicate tag key <{}>.",
                tag.key
            )));
        }
        out.push((tag.key, tag.value));
    }
    Ok(out)
}

/// The paging parameters of the List operations: from the query string (GET, as the
/// published model has it) or from a JSON body (POST, as newer botocore models send it).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ListRequest {
    page_size: Option<i64>,
    next_token: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for ListRequest {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if req.method() == axum::http::Method::GET {
            return ListRequest::from_query(req.uri().query());
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))?;
        parse(&body)
    }
}

impl ListRequest {
    /// A page of `page_size` items (1 to 1000) after `next_token`.
    pub(super) fn new(page_size: Option<i64>, next_token: Option<String>) -> ListRequest {
        ListRequest {
            page_size,
            next_token,
        }
    }

    fn from_query(query: Option<&str>) -> Result<ListRequest, ApiError> {
        let mut req = ListRequest::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "PageSize" => {
                    req.page_size = Some(value.parse().map_err(|_| {
                        ApiError::bad_request("PageSize must be a number from 1 to 1000.")
                    })?);
                }
                "NextToken" => req.next_token = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(req)
    }
}

/// One page of `items` (sorted by name). `NextToken` is the last name of the previous page,
/// base64-encoded.
pub(super) fn page<'a, T>(
    items: impl Iterator<Item = (&'a str, T)>,
    req: &ListRequest,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let page_size = match req.page_size {
        None => 1000,
        Some(n) if (1..=1000).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::bad_request(
                "PageSize must be a number from 1 to 1000.",
            ));
        }
    };
    let after = match &req.next_token {
        None => None,
        Some(token) => Some(
            STANDARD
                .decode(token.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::bad_request("Invalid NextToken."))?,
        ),
    };
    let mut items = items.filter(|(name, _)| after.as_deref().is_none_or(|a| *name > a));
    let mut out = Vec::new();
    let mut last = None;
    for (name, value) in items.by_ref().take(page_size) {
        last = Some(name);
        out.push(value);
    }
    let next = match (items.next(), last) {
        (Some(_), Some(last)) => Some(STANDARD.encode(last)),
        _ => None,
    };
    Ok((out, next))
}

/// `{"<field>": [...], "NextToken": ...}`.
fn list_body<T: Serialize>(
    field: &str,
    (items, next): (Vec<T>, Option<String>),
) -> Result<Response, ApiError> {
    let mut body = serde_json::Map::new();
    body.insert(field.to_owned(), json!(items));
    if let Some(next) = next {
        body.insert("NextToken".to_owned(), json!(next));
    }
    Ok(Json(Value::Object(body)).into_response())
}

// ---------------------------------------------------------------------------------------
// Identities.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEmailIdentityRequest {
    email_identity: String,
    configuration_set_name: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// `DkimAttributes`: sesrelay signs nothing; for a domain, `Tokens` holds the token to
/// publish as TXT `_amazonses.<domain>`.
fn dkim_attributes(kind: IdentityKind, verified: bool, dns_token: Option<&str>) -> Value {
    match kind {
        IdentityKind::Address => {
            json!({ "SigningEnabled": false, "Status": "NOT_STARTED", "Tokens": [] })
        }
        IdentityKind::Domain => json!({
            "SigningEnabled": false,
            "Status": if verified { "SUCCESS" } else { "PENDING" },
            "Tokens": dns_token.into_iter().collect::<Vec<_>>(),
            "SigningAttributesOrigin": "AWS_SES",
        }),
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // getrandom failing is a broken system; a v7 UUID is still unpredictable enough
        // to serve as a public token.
        bytes[..16].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
    }
    STANDARD.encode(bytes)
}

pub async fn create_email_identity(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateEmailIdentityRequest = parse(&body)?;
    let name = req.email_identity.trim().to_owned();
    let tags = resource_tags(req.tags)?;
    let (kind, token) =
        add_identity(&state, &name, req.configuration_set_name.as_deref(), &tags).await?;
    Ok(Json(json!({
        "IdentityType": kind.ses_type(),
        "VerifiedForSendingStatus": false,
        "DkimAttributes": dkim_attributes(kind, false, Some(&token)),
    }))
    .into_response())
}

/// Adds the identity `name` (an address or a domain), pending, to the configuration file:
/// an address is sent its verification message in the background; a domain's token is
/// the one to publish as TXT `_amazonses.<domain>`. Its kind and token.
pub(super) async fn add_identity(
    state: &AdminState,
    name: &str,
    configuration_set: Option<&str>,
    tags: &[(String, String)],
) -> Result<(IdentityKind, String), ApiError> {
    let Some(kind) = IdentityKind::of(name) else {
        return Err(ApiError::bad_request(format!(
            "Invalid email identity <{name}>."
        )));
    };
    // A domain's token goes into its TXT record; an address's is the nonce its
    // verification link must match.
    let token = new_token();
    let verification = match kind {
        IdentityKind::Domain => Verification::Domain {
            dns_token: Some(token.clone()),
        },
        IdentityKind::Address => Verification::Address {
            link_nonce: Some(token.clone()),
        },
    };
    state
        .store
        .edit(|editor, config| {
            if config.policy.identities.get(name).is_some() {
                return Err(ApiError::already_exists(format!(
                    "Email identity <{name}> already exists."
                )));
            }
            if let Some(set) = configuration_set
                && !config.policy.configuration_sets.contains_key(set)
            {
                return Err(ApiError::no_configuration_set(set));
            }
            editor.add_identity(name, configuration_set, &verification, tags)
        })
        .await?;
    tracing::info!(identity = %name, "email identity created");
    if kind == IdentityKind::Address {
        // In the background: the answer does not wait for the upstream.
        state.send_verification(name, &token);
    }
    Ok((kind, token))
}

pub async fn get_email_identity(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let mut config = state.relay.config();
    let (identity, record) = config
        .identity(&name)
        .ok_or_else(|| ApiError::no_identity(&name))?;
    if !identity.verified && record.kind() == IdentityKind::Domain {
        // A pending domain: look for its TXT record now, as SES keeps doing. Read the
        // configuration again either way: the background checker may have been quicker.
        state.check_domain(&name).await;
        config = state.relay.config();
    }
    let (identity, record) = config
        .identity(&name)
        .ok_or_else(|| ApiError::no_identity(&name))?;
    let tags = tags_out(&record.resource_tags);
    let mut body = json!({
        "IdentityType": record.kind().ses_type(),
        "FeedbackForwardingStatus": true,
        "VerifiedForSendingStatus": identity.verified,
        "DkimAttributes": dkim_attributes(record.kind(), identity.verified, record.dns_token()),
        "Policies": {},
        "Tags": tags,
        "VerificationStatus": if identity.verified { "SUCCESS" } else { "PENDING" },
    });
    if let Some(set) = &identity.default_configuration_set {
        body["ConfigurationSetName"] = json!(set);
    }
    Ok(Json(body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutConfigurationSetAttributesRequest {
    configuration_set_name: Option<String>,
}

pub async fn put_email_identity_configuration_set_attributes(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PutConfigurationSetAttributesRequest = parse(&body)?;
    state
        .store
        .edit(|editor, config| {
            if config.policy.identities.get(&name).is_none() {
                return Err(ApiError::no_identity(&name));
            }
            if let Some(set) = &req.configuration_set_name
                && !config.policy.configuration_sets.contains_key(set)
            {
                return Err(ApiError::no_configuration_set(set));
            }
            editor.set_default_configuration_set(&name, req.configuration_set_name.as_deref())
        })
        .await?;
    Ok(Json(json!({})).into_response())
}

pub async fn delete_email_identity(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    remove_identity(&state, &name).await?;
    Ok(Json(json!({})).into_response())
}

/// Removes the identity `name` from the configuration file (NotFoundException when there
/// is none).
pub(super) async fn remove_identity(state: &AdminState, name: &str) -> Result<(), ApiError> {
    state
        .store
        .edit(|editor, config| {
            if config.policy.identities.get(name).is_none() {
                return Err(ApiError::no_identity(name));
            }
            editor.remove_identity(name)
        })
        .await?;
    tracing::info!(identity = %name, "email identity deleted");
    Ok(())
}

pub async fn list_email_identities(
    State(state): State<AdminState>,
    req: ListRequest,
) -> Result<Response, ApiError> {
    let config = state.relay.config();
    let entries = config.identities().map(|(key, identity, record)| {
        (
            key,
            json!({
                "IdentityType": record.kind().ses_type(),
                "IdentityName": record.name,
                "SendingEnabled": identity.verified,
                "VerificationStatus": if identity.verified { "SUCCESS" } else { "PENDING" },
            }),
        )
    });
    list_body("EmailIdentities", page(entries, &req)?)
}

// ---------------------------------------------------------------------------------------
// Configuration sets.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct SendingOptions {
    sending_enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateConfigurationSetRequest {
    configuration_set_name: String,
    sending_options: Option<SendingOptions>,
    #[serde(default)]
    tags: Vec<Tag>,
}

fn check_set_name(name: &str) -> Result<(), ApiError> {
    if is_valid_configuration_set_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid configuration set name <{name}>: only alphanumeric ASCII characters, '_', and '-' are allowed, and at most 64 of them."
        )))
    }
}

pub async fn create_configuration_set(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateConfigurationSetRequest = parse(&body)?;
    let name = req.configuration_set_name;
    check_set_name(&name)?;
    let tags = resource_tags(req.tags)?;
    let enabled = req
        .sending_options
        .and_then(|o| o.sending_enabled)
        .unwrap_or(true);
    state
        .store
        .edit(|editor, config| {
            if config.policy.configuration_sets.contains_key(&name) {
                return Err(ApiError::already_exists(format!(
                    "Configuration set <{name}> already exists."
                )));
            }
            editor.add_configuration_set(&name, enabled, &tags)
        })
        .await?;
    super::suppression::forget_set_options(&state, &name).await;
    tracing::info!(configuration_set = %name, "configuration set created");
    Ok(Json(json!({})).into_response())
}

pub async fn get_configuration_set(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let config = state.relay.config();
    let set = config
        .policy
        .configuration_sets
        .get(&name)
        .ok_or_else(|| ApiError::no_configuration_set(&name))?;
    let tags = config
        .resources
        .configuration_sets
        .get(&name)
        .map(|r| tags_out(&r.resource_tags))
        .unwrap_or_default();
    let mut body = json!({
        "ConfigurationSetName": name,
        "SendingOptions": { "SendingEnabled": set.sending_enabled },
        "Tags": tags,
    });
    if let Some(reasons) = state.relay.suppression().set_options(&name) {
        body["SuppressionOptions"] = super::suppression::reasons_object(&reasons);
    }
    Ok(Json(body).into_response())
}

pub async fn delete_configuration_set(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    state
        .store
        .edit(|editor, config| {
            if !config.policy.configuration_sets.contains_key(&name) {
                return Err(ApiError::no_configuration_set(&name));
            }
            // Identities that name it keep naming it: their mail now fails (a deleted set).
            editor.remove_configuration_set(&name)
        })
        .await?;
    super::suppression::forget_set_options(&state, &name).await;
    tracing::info!(configuration_set = %name, "configuration set deleted");
    Ok(Json(json!({})).into_response())
}

pub async fn list_configuration_sets(
    State(state): State<AdminState>,
    req: ListRequest,
) -> Result<Response, ApiError> {
    let config = state.relay.config();
    let names = config
        .policy
        .configuration_sets
        .keys()
        .map(|k| (k.as_str(), k.as_str()));
    list_body("ConfigurationSets", page(names, &req)?)
}

pub async fn put_configuration_set_sending_options(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: SendingOptions = parse(&body)?;
    let enabled = req.sending_enabled.unwrap_or(false);
    state
        .store
        .edit(|editor, config| {
            if !config.policy.configuration_sets.contains_key(&name) {
                return Err(ApiError::no_configuration_set(&name));
            }
            editor.set_sending_enabled(&name, enabled)
        })
        .await?;
    Ok(Json(json!({})).into_response())
}

// ---------------------------------------------------------------------------------------
// The account.
// ---------------------------------------------------------------------------------------

/// A limit as SES reports it: -1 for none.
pub(super) fn reported_limit(limit: f64) -> f64 {
    if limit > 0.0 { limit } else { -1.0 }
}

pub async fn get_account(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let config = state.relay.config();
    let rules = config.policy.account;
    Ok(Json(json!({
        "DedicatedIpAutoWarmupEnabled": false,
        "EnforcementStatus": "HEALTHY",
        "ProductionAccessEnabled": !rules.sandbox,
        "SendingEnabled": rules.sending_enabled,
        "SendQuota": {
            "Max24HourSend": reported_limit(config.account.max_24_hour_send as f64),
            "MaxSendRate": reported_limit(config.account.max_send_rate),
            "SentLast24Hours": state.relay.sent_last_24_hours().await as f64,
        },
        "SuppressionAttributes": super::suppression::reasons_object(
            &state.relay.suppression().account_reasons()
        ),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutAccountSendingAttributesRequest {
    sending_enabled: Option<bool>,
}

/// `SendingEnabled` absent is false, as `put-configuration-set-sending-options` takes it.
pub async fn put_account_sending_attributes(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PutAccountSendingAttributesRequest = parse(&body)?;
    let enabled = req.sending_enabled.unwrap_or(false);
    state
        .store
        .edit(|editor, _| editor.set_account_sending_enabled(enabled))
        .await?;
    tracing::info!(sending_enabled = enabled, "account sending changed");
    Ok(Json(json!({})).into_response())
}

// ---------------------------------------------------------------------------------------
// SendEmail.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Destination {
    #[serde(default)]
    pub(super) to_addresses: Vec<String>,
    #[serde(default)]
    pub(super) cc_addresses: Vec<String>,
    #[serde(default)]
    pub(super) bcc_addresses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ContentData {
    pub(super) data: String,
    pub(super) charset: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Body {
    pub(super) text: Option<ContentData>,
    pub(super) html: Option<ContentData>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct MessageHeader {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SimpleMessage {
    pub(super) subject: ContentData,
    #[serde(default)]
    pub(super) body: Body,
    #[serde(default)]
    pub(super) headers: Vec<MessageHeader>,
    #[serde(default)]
    pub(super) attachments: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawMessage {
    data: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EmailContent {
    simple: Option<SimpleMessage>,
    raw: Option<RawMessage>,
    template: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MessageTag {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendEmailRequest {
    from_email_address: Option<String>,
    destination: Option<Destination>,
    #[serde(default)]
    reply_to_addresses: Vec<String>,
    content: EmailContent,
    email_tags: Option<Vec<MessageTag>>,
    configuration_set_name: Option<String>,
}

/// `Name <addr>` or `addr` → the mailbox and the bare address, checked: an ASCII address
/// an SMTP upstream takes ([`config::is_address`]), so that delivery never fails on it
/// later. A display name in RFC 2047 encoded-words (`=?UTF-8?B?w4lsaXNl?=`, as SES's
/// documentation tells callers to write a non-ASCII one) is decoded here, so that lettre
/// encodes it once when it writes the header, not a second time.
fn address_of(text: &str) -> Result<(lettre::message::Mailbox, String), ApiError> {
    let mut mailbox: lettre::message::Mailbox =
        text.trim().parse().map_err(|_| invalid_address(text))?;
    if let Some(name) = &mailbox.name
        && let Cow::Owned(decoded) = encoded_word::decode(name)
    {
        if decoded.chars().any(char::is_control) {
            return Err(invalid_address(text));
        }
        mailbox.name = Some(decoded);
    }
    let bare = mailbox.email.to_string();
    checked_address(&bare)?;
    Ok((mailbox, bare))
}

/// A bare address as SMTP carries it, or BadRequestException.
fn checked_address(address: &str) -> Result<(), ApiError> {
    if config::is_address(address) {
        Ok(())
    } else {
        Err(invalid_address(address))
    }
}

/// "Invalid email address <x>." with at most 256 characters of the client's text,
/// control characters shown as '?'.
pub(super) fn invalid_address(text: &str) -> ApiError {
    let shown: String = text
        .chars()
        .take(256)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    ApiError::bad_request(format!("Invalid email address <{shown}>."))
}

/// Builds the MIME message of `Content.Simple`.
fn simple_message(
    message_id: &str,
    from: &lettre::message::Mailbox,
    destination: &Destination,
    reply_to: &[String],
    simple: SimpleMessage,
) -> Result<Vec<u8>, ApiError> {
    use lettre::message::header::{HeaderName, HeaderValue};
    use lettre::message::{Message, MultiPart, SinglePart};

    if !simple.attachments.is_empty() {
        return Err(ApiError::bad_request(
            "Attachments in Content.Simple are not supported by sesrelay; send Content.Raw instead.",
        ));
    }
    for part in [
        Some(&simple.subject),
        simple.body.text.as_ref(),
        simple.body.html.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(charset) = &part.charset
            && !charset.eq_ignore_ascii_case("utf-8")
            && !charset.eq_ignore_ascii_case("us-ascii")
        {
            return Err(ApiError::bad_request(format!(
                "Unsupported charset <{charset}>: sesrelay writes UTF-8."
            )));
        }
    }
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(simple.subject.data)
        .date_now()
        .message_id(Some(format!("<{message_id}@email.amazonses.com>")));
    for to in &destination.to_addresses {
        builder = builder.to(address_of(to)?.0);
    }
    for cc in &destination.cc_addresses {
        builder = builder.cc(address_of(cc)?.0);
    }
    for r in reply_to {
        builder = builder.reply_to(address_of(r)?.0);
    }
    for header in simple.headers {
        let name = HeaderName::new_from_ascii(header.name.clone()).map_err(|_| {
            ApiError::bad_request(format!("Invalid header name <{}>.", header.name))
        })?;
        if header.value.contains(['\r', '\n']) || !header.value.is_ascii() {
            return Err(ApiError::bad_request(format!(
                "Invalid value for header <{}>.",
                header.name
            )));
        }
        builder = builder.raw_header(HeaderValue::new(name, header.value));
    }
    // The envelope is sesrelay's own; lettre's only has to be well-formed.
    let lettre_envelope =
        lettre::address::Envelope::new(Some(from.email.clone()), vec![from.email.clone()])
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    builder = builder.envelope(lettre_envelope);
    let message = match (simple.body.text, simple.body.html) {
        (Some(text), Some(html)) => {
            builder.multipart(MultiPart::alternative_plain_html(text.data, html.data))
        }
        (Some(text), None) => builder.singlepart(SinglePart::plain(text.data)),
        (None, Some(html)) => builder.singlepart(SinglePart::html(html.data)),
        (None, None) => builder.singlepart(SinglePart::plain(String::new())),
    }
    .map_err(|e| ApiError::bad_request(format!("Invalid message: {e}")))?;
    Ok(message.formatted())
}

pub(super) fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Rejected(rejection) => {
            let message = rejection.message();
            match rejection {
                Rejection::NotVerified { .. } | Rejection::TooManyRecipients(_) => {
                    ApiError::message_rejected(message)
                }
                Rejection::ConfigurationSetDoesNotExist(_) => ApiError::not_found(message),
                Rejection::DefaultConfigurationSetDeleted(_)
                | Rejection::MissingFrom
                | Rejection::InvalidAddress(_)
                | Rejection::DuplicateHeader(_)
                | Rejection::InvalidTag(_) => ApiError::bad_request(message),
                Rejection::SendingPaused(_) | Rejection::AccountSendingPaused => {
                    ApiError::sending_paused(message)
                }
                Rejection::SenderNotAllowed { .. } => ApiError::access_denied(message),
            }
        }
        Refusal::Throttled(throttle @ Throttle::Rate) => {
            ApiError::too_many_requests(throttle.to_string())
        }
        Refusal::Throttled(throttle @ Throttle::Quota) => {
            ApiError::limit_exceeded(throttle.to_string())
        }
        Refusal::QuotasUnavailable => ApiError::service_unavailable(
            "The account's sending quotas cannot be checked now; try again later.",
        ),
        Refusal::Upstream(e @ DeliveryError::BadAddress(_)) => ApiError::bad_request(e.to_string()),
        Refusal::Upstream(e) if e.is_permanent() => {
            ApiError::message_rejected(crate::relay::delivery_reply(&e).to_line())
        }
        Refusal::Upstream(e) => {
            ApiError::service_unavailable(crate::relay::delivery_reply(&e).to_line())
        }
    }
}

/// SendEmail. With the SDKs' `amz-sdk-invocation-id` header it is idempotent
/// ([`once_per_call`]).
pub async fn send_email(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    once_per_call(
        state,
        peer,
        &headers,
        body,
        |state, peer, body| async move { send_once(&state, peer, &body).await },
    )
    .await
    .map(|id| Json(json!({ "MessageId": id })).into_response())
}

/// Runs the send `send` once per call: with the SDKs' `amz-sdk-invocation-id` header
/// ([`idempotency`]), the first attempt of a call runs, in a task of its own so that a
/// client giving up does not cut a delivery short (at most `detached_sends` at once);
/// every other attempt gets its answer, waiting for it if need be. The call is the
/// invocation id with the body, so v1's form and v2's JSON never share an answer.
pub(super) async fn once_per_call<F, Fut>(
    state: AdminState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Bytes,
    send: F,
) -> Result<String, ApiError>
where
    F: FnOnce(AdminState, SocketAddr, Bytes) -> Fut + Send + 'static,
    Fut: Future<Output = Result<String, ApiError>> + Send + 'static,
{
    let Some(invocation) = idempotency::invocation_id(headers) else {
        return send(state, peer, body).await;
    };
    let key = idempotency::key(invocation, &body).await;
    // Replicas sharing the account share the calls too (SPEC 12); without Redis, this
    // process remembers them.
    if let Some(store) = state.relay.shared_store() {
        let wait = state.relay.config().upstream.timeout + Duration::from_secs(10);
        match idempotency::shared_claim(&store, invocation, &key, wait).await {
            idempotency::SharedClaim::First => {
                state.relay.metrics().idempotency_check("shared");
                let slot = Arc::clone(&state.detached_sends)
                    .acquire_owned()
                    .await
                    .map_err(|_| ApiError::internal("The send failed inside sesrelay."))?;
                let invocation = invocation.to_owned();
                let task = tokio::spawn(async move {
                    let _slot = slot;
                    let answer = send(state, peer, body).await;
                    let keep = kept(&answer);
                    idempotency::shared_finish(&store, &invocation, &key, &answer, keep).await;
                    answer
                });
                return task.await.unwrap_or_else(|_| {
                    Err(ApiError::internal("The send failed inside sesrelay."))
                });
            }
            idempotency::SharedClaim::Answer(answer) => {
                state.relay.metrics().idempotency_check("shared");
                tracing::info!(
                    invocation_id = %invocation.chars().take(64).collect::<String>(),
                    "send retry of a call already seen (on Redis): it gets the first attempt's answer"
                );
                return answer;
            }
            idempotency::SharedClaim::Conflict => {
                state.relay.metrics().idempotency_check("shared");
                return Err(ApiError::bad_request(
                    "The amz-sdk-invocation-id was already used for another request.",
                ));
            }
            idempotency::SharedClaim::Unavailable(e) => {
                tracing::debug!(error = %e, "Redis unavailable: the call's idempotency is kept in this process");
            }
        }
    }
    state.relay.metrics().idempotency_check("local");
    match state.send_email_calls.claim(key) {
        Claim::First(pending) => {
            let slot = Arc::clone(&state.detached_sends)
                .acquire_owned()
                .await
                .map_err(|_| ApiError::internal("The send failed inside sesrelay."))?;
            let task = tokio::spawn(async move {
                let _slot = slot;
                let answer = send(state, peer, body).await;
                pending.finish(answer.clone(), kept(&answer));
                answer
            });
            task.await
                .unwrap_or_else(|_| Err(ApiError::internal("The send failed inside sesrelay.")))
        }
        Claim::Retry(first) => {
            tracing::info!(
                invocation_id = %invocation.chars().take(64).collect::<String>(),
                "send retry of a call already seen: it gets the first attempt's answer"
            );
            first.wait().await.unwrap_or_else(|| {
                Err(ApiError::service_unavailable(
                    "The first attempt of this call ended without an answer; try again.",
                ))
            })
        }
    }
}

/// Whether a send's answer is kept for the call's later attempts: all but the retryable
/// failures (5xx, and throttling: v2's 429, v1's `Throttling`), so that a retry after a
/// transient failure sends for real.
fn kept(answer: &Result<String, ApiError>) -> bool {
    match answer {
        Ok(_) => true,
        Err(e) => {
            !(e.status.is_server_error()
                || e.status == axum::http::StatusCode::TOO_MANY_REQUESTS
                || e.code == "Throttling")
        }
    }
}

/// What a send is made of, whichever API it came through (v2's SendEmail, v1's SendEmail
/// and SendRawEmail).
pub(super) struct Outgoing {
    /// The sender (`Name <addr>` or `addr`): the envelope sender and a Simple message's
    /// From; without it, the message's From.
    pub(super) from: Option<String>,
    /// The envelope; empty: the message's To, Cc and Bcc.
    pub(super) destination: Destination,
    pub(super) reply_to: Vec<String>,
    pub(super) content: Content,
    /// Tags given beside the message: used instead of the header's.
    pub(super) tags: Option<Vec<(String, String)>>,
    /// A set given beside the message: it overrides the header.
    pub(super) configuration_set: Option<String>,
}

/// A message as a caller gives it.
pub(super) enum Content {
    /// Subject and bodies, made into a MIME message here.
    Simple(SimpleMessage),
    /// The whole message, decoded from base64.
    Raw(Vec<u8>),
}

/// One v2 send: the request read, checked and submitted; the MessageId or the error.
async fn send_once(state: &AdminState, peer: SocketAddr, body: &Bytes) -> Result<String, ApiError> {
    let req: SendEmailRequest = parse(body)?;
    let content = match (req.content.simple, req.content.raw, req.content.template) {
        (Some(simple), None, None) => Content::Simple(simple),
        (None, Some(raw), None) => Content::Raw(
            STANDARD
                .decode(raw.data.trim())
                .map_err(|_| ApiError::bad_request("Content.Raw.Data is not valid base64."))?,
        ),
        (None, None, Some(_)) => {
            return Err(ApiError::bad_request(
                "Content.Template is not supported by sesrelay; send Simple or Raw content.",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "Content must hold exactly one of Simple, Raw and Template.",
            ));
        }
    };
    let send = Outgoing {
        from: req.from_email_address,
        destination: req.destination.unwrap_or_default(),
        reply_to: req.reply_to_addresses,
        content,
        tags: req
            .email_tags
            .map(|tags| tags.into_iter().map(|t| (t.name, t.value)).collect()),
        configuration_set: req.configuration_set_name,
    };
    submit_send(state, peer, send, refusal_error).await
}

/// A send checked and submitted through the relay's policy path ([`crate::relay::Relay::submit`]),
/// as SMTP's are; the MessageId, or the error: the input's as BadRequestException, the
/// relay's refusals as `refused` names them for the caller's API.
pub(super) async fn submit_send(
    state: &AdminState,
    peer: SocketAddr,
    send: Outgoing,
    refused: fn(Refusal) -> ApiError,
) -> Result<String, ApiError> {
    let config = state.relay.config();
    let destination = send.destination;
    let from = send.from.as_deref().map(address_of).transpose()?;
    // A Simple message names its id in its Message-ID, as SES's do: the id is chosen here.
    let mut id = None;
    let mut simple_parts = None;
    let content = match send.content {
        Content::Simple(simple) => {
            let Some((mailbox, _)) = &from else {
                return Err(ApiError::bad_request(
                    "A sender (FromEmailAddress, Source) is required with a Simple message.",
                ));
            };
            let chosen = id.insert(crate::relay::new_message_id(&config.server.region));
            simple_parts = Some(crate::capture::SimpleParts {
                subject: simple.subject.data.clone(),
                text: simple.body.text.as_ref().map(|t| t.data.clone()),
                html: simple.body.html.as_ref().map(|t| t.data.clone()),
                destination: destination
                    .to_addresses
                    .iter()
                    .chain(&destination.cc_addresses)
                    .chain(&destination.bcc_addresses)
                    .cloned()
                    .collect(),
                to_addresses: destination.to_addresses.clone(),
                cc_addresses: destination.cc_addresses.clone(),
                bcc_addresses: destination.bcc_addresses.clone(),
            });
            simple_message(chosen, mailbox, &destination, &send.reply_to, simple)?
        }
        Content::Raw(bytes) => crate::message::crlf_line_endings(bytes),
    };
    if content.len() > config.server.max_message_size {
        return Err(ApiError::message_rejected("Message too long."));
    }
    let message = crate::relay::read_message(content).await;
    let mail_from = match from {
        Some((_, bare)) => bare,
        None => {
            let first = message
                .first_from()
                .ok_or_else(|| ApiError::bad_request("Missing required header 'From'."))?;
            checked_address(&first)?;
            first
        }
    };
    let mut rcpt_to = Vec::new();
    let listed = [
        &destination.to_addresses,
        &destination.cc_addresses,
        &destination.bcc_addresses,
    ];
    for address in listed.into_iter().flatten() {
        rcpt_to.push(address_of(address)?.1);
    }
    if rcpt_to.is_empty() {
        rcpt_to = message.recipients().to_vec();
    }
    if rcpt_to.is_empty() {
        return Err(ApiError::bad_request(
            "The message must have at least one recipient: give Destination.",
        ));
    }
    // Every envelope address is checked before delivery: a bad one is the client's error
    // (BadRequestException), never a retryable failure of the upstream.
    for address in &rcpt_to {
        checked_address(address)?;
    }
    let submission = Submission {
        id,
        peer: peer.ip(),
        helo: format!("[{}]", peer.ip().to_canonical()),
        protocol: "HTTP",
        auth_user: None,
        tls: None,
        mail_from,
        rcpt_to,
        message,
        configuration_set: send.configuration_set,
        tags: send.tags,
        simple: simple_parts,
    };
    state.relay.submit(submission).await.map_err(refused)
}

// ---------------------------------------------------------------------------------------
// The verification link, and anything else.
// ---------------------------------------------------------------------------------------

pub async fn verify_link(State(state): State<AdminState>, RawQuery(query): RawQuery) -> Response {
    let token = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let page = |status: axum::http::StatusCode, title: &str, text: &str| {
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{}</p></body></html>",
            html_escape(text)
        );
        (status, Html(html)).into_response()
    };
    let (identity, nonce) = match state.verifier.check(&token, SystemTime::now()) {
        Ok(checked) => checked,
        Err(e) => {
            return page(
                axum::http::StatusCode::BAD_REQUEST,
                "Verification failed",
                &e.to_string(),
            );
        }
    };
    let result = state
        .store
        .edit(|editor, config| {
            let Some((_, record)) = config.identity(&identity) else {
                return Err(ApiError::no_identity(&identity));
            };
            if record.link_nonce() != Some(nonce.as_str()) {
                return Err(ApiError::bad_request(LinkError::Superseded.to_string()));
            }
            editor.mark_verified(&identity)
        })
        .await;
    match result {
        Ok(()) => {
            tracing::info!(%identity, "email address verified through its link");
            page(
                axum::http::StatusCode::OK,
                "Email Address Verification Request was Successful",
                &format!(
                    "Congratulations! You have successfully verified the email address {identity}. \
                     You can now start sending email from this address."
                ),
            )
        }
        Err(e) => page(e.status, "Verification failed", &e.message),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub async fn unknown_operation() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "sesrelay does not implement this operation.",
    )
}
