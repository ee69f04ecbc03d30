//! The SES v1 (Query) protocol (SPEC 11): form-encoded `POST /` requests
//! (`Action=SendRawEmail&...&Version=2010-12-01`), XML answers in SES's 2010-12-01
//! namespace, as django-ses, Laravel's `ses` transport, Rails' v1 delivery, boto3's `ses`
//! client and `aws ses` speak it.
//!
//! The operations are v2's underneath: sends go through [`api::submit_send`] (the relay's
//! one policy path, as SMTP's and v2's do, with v2's idempotency on
//! `amz-sdk-invocation-id`), identities through [`api::add_identity`] and
//! [`api::remove_identity`] into the configuration file. What is v1's own is here: the
//! form's parameters ([`Params`]: lists as `X.member.N`), the answers' XML (written with
//! quick-xml, which escapes), and the error codes v1 clients know (`MessageRejected`,
//! `ConfigurationSetDoesNotExist`, `Throttling`, ...).
//!
//! Every v1 request carries a SigV4 `Authorization` header, checked by the listener before
//! it gets here (`authorize` in [`super`]): a form post is what a web page can send
//! cross-site without a preflight.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use quick_xml::Writer;
use quick_xml::events::BytesText;

use super::api::{self, Content, Outgoing};
use super::error::ApiError;
use super::{AdminState, RequestId};
use crate::config::IdentityKind;
use crate::policy::Rejection;
use crate::relay::Refusal;

/// The XML namespace of SES v1's answers.
pub const NAMESPACE: &str = "http://ses.amazonaws.com/doc/2010-12-01/";
/// An action name is shown in a message up to this many characters.
const MAX_SHOWN_ACTION: usize = 64;
/// GetIdentityVerificationAttributes takes at most this many identities, as SES does.
const MAX_IDENTITIES_ASKED: usize = 100;
/// `X.member.N`: N is at most this (a list is never longer than the body allows anyway).
const MAX_MEMBER_INDEX: usize = 100_000;

/// True when `headers` say the body is a form (`application/x-www-form-urlencoded`): a
/// v1 Query request when it is posted to `/`.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// True when the request is a v1 Query request: a form posted to `/`.
pub fn is_query(path: &str, headers: &HeaderMap) -> bool {
    path == "/" && is_form(headers)
}

/// The operations served, by action name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    SendRawEmail,
    SendEmail,
    GetSendQuota,
    GetSendStatistics,
    GetAccountSendingEnabled,
    VerifyEmailIdentity,
    VerifyEmailAddress,
    VerifyDomainIdentity,
    ListIdentities,
    ListVerifiedEmailAddresses,
    GetIdentityVerificationAttributes,
    DeleteIdentity,
    DeleteVerifiedEmailAddress,
    ListConfigurationSets,
    DescribeConfigurationSet,
}

impl Action {
    const ALL: [Action; 15] = [
        Action::SendRawEmail,
        Action::SendEmail,
        Action::GetSendQuota,
        Action::GetSendStatistics,
        Action::GetAccountSendingEnabled,
        Action::VerifyEmailIdentity,
        Action::VerifyEmailAddress,
        Action::VerifyDomainIdentity,
        Action::ListIdentities,
        Action::ListVerifiedEmailAddresses,
        Action::GetIdentityVerificationAttributes,
        Action::DeleteIdentity,
        Action::DeleteVerifiedEmailAddress,
        Action::ListConfigurationSets,
        Action::DescribeConfigurationSet,
    ];

    fn name(self) -> &'static str {
        match self {
            Action::SendRawEmail => "SendRawEmail",
            Action::SendEmail => "SendEmail",
            Action::GetSendQuota => "GetSendQuota",
            Action::GetSendStatistics => "GetSendStatistics",
            Action::GetAccountSendingEnabled => "GetAccountSendingEnabled",
            Action::VerifyEmailIdentity => "VerifyEmailIdentity",
            Action::VerifyEmailAddress => "VerifyEmailAddress",
            Action::VerifyDomainIdentity => "VerifyDomainIdentity",
            Action::ListIdentities => "ListIdentities",
            Action::ListVerifiedEmailAddresses => "ListVerifiedEmailAddresses",
            Action::GetIdentityVerificationAttributes => "GetIdentityVerificationAttributes",
            Action::DeleteIdentity => "DeleteIdentity",
            Action::DeleteVerifiedEmailAddress => "DeleteVerifiedEmailAddress",
            Action::ListConfigurationSets => "ListConfigurationSets",
            Action::DescribeConfigurationSet => "DescribeConfigurationSet",
        }
    }

    fn of(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether the answer has a `<XResult>` element: VerifyEmailAddress and
    /// DeleteVerifiedEmailAddress have no output shape.
    fn has_result(self) -> bool {
        !matches!(
            self,
            Action::VerifyEmailAddress | Action::DeleteVerifiedEmailAddress
        )
    }
}

/// `POST /`: a v1 Query request is answered by its action; anything else posted to `/` is
/// no operation of the v2 API.
pub async fn query(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return api::unknown_operation().await.into_response();
    }
    let params = Params::parse(&body);
    let Some(name) = params.get("Action").filter(|a| !a.is_empty()) else {
        return error(
            &request_id,
            StatusCode::BAD_REQUEST,
            "MissingAction",
            "The request must contain the parameter Action.",
        );
    };
    let Some(action) = Action::of(name) else {
        tracing::info!(action = %shown_action(name), "v1 Query request for an action sesrelay does not serve");
        return error(
            &request_id,
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!(
                "Unrecognized action: sesrelay does not serve the v1 action {}.",
                shown_action(name)
            ),
        );
    };
    let answer = match action {
        Action::SendRawEmail | Action::SendEmail => api::once_per_call(
            state,
            peer,
            &headers,
            body,
            move |state, peer, body| async move {
                let params = Params::parse(&body);
                let send = if action == Action::SendRawEmail {
                    raw_send(&params)?
                } else {
                    simple_send(&params)?
                };
                api::submit_send(&state, peer, send, refusal_error).await
            },
        )
        .await
        .map(|id| vec![Node::text("MessageId", id)]),
        Action::GetSendQuota => Ok(send_quota(&state).await),
        Action::GetSendStatistics => Ok(send_statistics(&state)),
        Action::GetAccountSendingEnabled => Ok(vec![Node::text(
            "Enabled",
            state
                .relay
                .config()
                .policy
                .account
                .sending_enabled
                .to_string(),
        )]),
        Action::VerifyEmailIdentity | Action::VerifyEmailAddress => {
            verify_email(&state, &params).await
        }
        Action::VerifyDomainIdentity => verify_domain(&state, &params).await,
        Action::ListIdentities => list_identities(&state, &params),
        Action::ListVerifiedEmailAddresses => Ok(verified_addresses(&state)),
        Action::GetIdentityVerificationAttributes => verification_attributes(&state, &params),
        Action::DeleteIdentity => delete_identity(&state, params.required("Identity")).await,
        Action::DeleteVerifiedEmailAddress => {
            delete_identity(&state, params.required("EmailAddress")).await
        }
        Action::ListConfigurationSets => list_configuration_sets(&state, &params),
        Action::DescribeConfigurationSet => describe_configuration_set(&state, &params),
    };
    let mut response = match answer {
        Ok(result) => answer_xml(&request_id, action, result),
        Err(e) => {
            tracing::info!(
                action = action.name(),
                code = %e.code,
                "v1 request refused: {}",
                e.message
            );
            render_error(&request_id, &e)
        }
    };
    response.extensions_mut().insert(Operation(action.name()));
    response
}

/// The v1 action a response answered, for the request counter's `operation` label (one of
/// the served actions' names: a closed list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation(pub &'static str);

// ---------------------------------------------------------------------------------------
// The form.
// ---------------------------------------------------------------------------------------

/// A v1 request's parameters: `Name=value` pairs (a name given twice keeps its first
/// value); lists as `Name.member.N` (N from 1), structures as `Name.Field`.
#[derive(Debug, Default)]
struct Params {
    values: HashMap<String, String>,
}

impl Params {
    fn parse(body: &[u8]) -> Params {
        let mut values = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            values
                .entry(name.into_owned())
                .or_insert_with(|| value.into_owned());
        }
        Params { values }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A parameter that must be there (botocore checks too, but a hand-made form may not).
    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| missing(name))
    }

    /// The members of the list `name`, in their order N: `name.member.N` for a list of
    /// strings, or `name.member.N.Field` (then each member's fields) for a list of
    /// structures. An empty list is `name=` or nothing.
    fn members(&self, name: &str) -> Result<BTreeMap<usize, HashMap<&str, &str>>, ApiError> {
        let prefix = format!("{name}.member.");
        let mut members: BTreeMap<usize, HashMap<&str, &str>> = BTreeMap::new();
        for (key, value) in &self.values {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let (index, field) = rest.split_once('.').unwrap_or((rest, ""));
            let index = index
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_MEMBER_INDEX).contains(n))
                .ok_or_else(|| {
                    invalid_parameter(format!(
                        "Invalid list member index in parameter {}.",
                        shown(key)
                    ))
                })?;
            members
                .entry(index)
                .or_default()
                .insert(field, value.as_str());
        }
        Ok(members)
    }

    /// The list of strings `name`.
    fn list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        Ok(self
            .members(name)?
            .into_values()
            .filter_map(|fields| fields.get("").map(|v| (*v).to_owned()))
            .collect())
    }

    /// `Tags.member.N.Name` / `.Value`: the message's tags when the list is given (an empty
    /// list too: `Tags=`), else none. A tag without its name or value is the policy's to
    /// refuse, with SES's message.
    fn tags(&self) -> Result<Option<Vec<(String, String)>>, ApiError> {
        let members = self.members("Tags")?;
        if members.is_empty() && self.get("Tags").is_none() {
            return Ok(None);
        }
        Ok(Some(
            members
                .into_values()
                .map(|fields| {
                    let field =
                        |f: &str| fields.get(f).map_or_else(String::new, |v| (*v).to_owned());
                    (field("Name"), field("Value"))
                })
                .collect(),
        ))
    }

    /// `MaxItems`, 1 to 1000 (absent: 1000).
    fn max_items(&self) -> Result<Option<i64>, ApiError> {
        match self.get("MaxItems") {
            None => Ok(None),
            Some(text) => match text.trim().parse::<i64>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(Some(n)),
                _ => Err(invalid_parameter(
                    "MaxItems must be a number from 1 to 1000.",
                )),
            },
        }
    }

    fn list_request(&self) -> Result<api::ListRequest, ApiError> {
        Ok(api::ListRequest::new(
            self.max_items()?,
            self.get("NextToken").map(str::to_owned),
        ))
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "MissingParameter",
        format!("The request must contain the parameter {name}."),
    )
}

fn invalid_parameter(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "InvalidParameterValue", message)
}

/// A client's text in a message: at most 256 characters, control characters as `?`.
fn shown(text: &str) -> String {
    text.chars()
        .take(256)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Sends.
// ---------------------------------------------------------------------------------------

/// SendRawEmail: `RawMessage.Data` (base64); `Destinations` the envelope when given, else
/// the message's To, Cc and Bcc; `Source` the envelope sender, else the message's From.
fn raw_send(params: &Params) -> Result<Outgoing, ApiError> {
    let data = params.required("RawMessage.Data")?;
    let compact: String = data.split_ascii_whitespace().collect();
    let bytes = STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| invalid_parameter("RawMessage.Data is not valid base64."))?;
    Ok(Outgoing {
        from: params.get("Source").map(str::to_owned),
        destination: api::Destination {
            to_addresses: params.list("Destinations")?,
            cc_addresses: Vec::new(),
            bcc_addresses: Vec::new(),
        },
        reply_to: Vec::new(),
        content: Content::Raw(bytes),
        tags: params.tags()?,
        configuration_set: params.get("ConfigurationSetName").map(str::to_owned),
    })
}

/// SendEmail: `Source`, `Destination.{To,Cc,Bcc}Addresses`, `Message.Subject`,
/// `Message.Body.{Text,Html}` (each `Data` and `Charset`), made into a MIME message as
/// v2's Simple content is.
fn simple_send(params: &Params) -> Result<Outgoing, ApiError> {
    let source = params.required("Source")?;
    let content = |prefix: &str| {
        params
            .get(&format!("{prefix}.Data"))
            .map(|data| api::ContentData {
                data: data.to_owned(),
                charset: params.get(&format!("{prefix}.Charset")).map(str::to_owned),
            })
    };
    let subject = content("Message.Subject").ok_or_else(|| missing("Message.Subject.Data"))?;
    let simple = api::SimpleMessage {
        subject,
        body: api::Body {
            text: content("Message.Body.Text"),
            html: content("Message.Body.Html"),
        },
        headers: Vec::new(),
        attachments: Vec::new(),
    };
    Ok(Outgoing {
        from: Some(source.to_owned()),
        destination: api::Destination {
            to_addresses: params.list("Destination.ToAddresses")?,
            cc_addresses: params.list("Destination.CcAddresses")?,
            bcc_addresses: params.list("Destination.BccAddresses")?,
        },
        reply_to: params.list("ReplyToAddresses")?,
        content: Content::Simple(simple),
        tags: params.tags()?,
        configuration_set: params.get("ConfigurationSetName").map(str::to_owned),
    })
}

/// A refusal of the relay as v1 names it: SES's messages ([`Rejection::message`]) under
/// v1's codes, all HTTP 400 but a sender an SMTP user may not use (403); the upstream's
/// failures as v2 has them.
fn refusal_error(refusal: Refusal) -> ApiError {
    let v1 =
        |code: &'static str, message: String| ApiError::new(StatusCode::BAD_REQUEST, code, message);
    match refusal {
        Refusal::Rejected(rejection) => {
            let message = rejection.message();
            match rejection {
                Rejection::NotVerified { .. } | Rejection::TooManyRecipients(_) => {
                    v1("MessageRejected", message)
                }
                Rejection::ConfigurationSetDoesNotExist(_)
                | Rejection::DefaultConfigurationSetDeleted(_) => {
                    v1("ConfigurationSetDoesNotExist", message)
                }
                Rejection::SendingPaused(_) => {
                    v1("ConfigurationSetSendingPausedException", message)
                }
                Rejection::AccountSendingPaused => v1("AccountSendingPausedException", message),
                Rejection::InvalidAddress(_)
                | Rejection::InvalidTag(_)
                | Rejection::MissingFrom
                | Rejection::DuplicateHeader(_) => v1("InvalidParameterValue", message),
                Rejection::SenderNotAllowed { .. } => ApiError::access_denied(message),
            }
        }
        Refusal::Throttled(throttle) => v1("Throttling", throttle.to_string()),
        other @ (Refusal::Upstream(_) | Refusal::QuotasUnavailable) => api::refusal_error(other),
    }
}

// ---------------------------------------------------------------------------------------
// The account.
// ---------------------------------------------------------------------------------------

/// A double as SES writes one (`200.0`, `-1.0`).
fn double(value: f64) -> String {
    format!("{value:?}")
}

/// GetSendQuota: the counters the SMTP listener's 454s use; no limit is -1, as get-account
/// shows it.
async fn send_quota(state: &AdminState) -> Vec<Node> {
    let config = state.relay.config();
    vec![
        Node::text(
            "Max24HourSend",
            double(api::reported_limit(config.account.max_24_hour_send as f64)),
        ),
        Node::text(
            "MaxSendRate",
            double(api::reported_limit(config.account.max_send_rate)),
        ),
        Node::text(
            "SentLast24Hours",
            double(state.relay.sent_last_24_hours().await as f64),
        ),
    ]
}

/// GetSendStatistics: one data point per 15-minute interval of the last two weeks in which
/// the relay counted something ([`crate::statistics`]).
fn send_statistics(state: &AdminState) -> Vec<Node> {
    let points = state
        .relay
        .statistics()
        .data_points(std::time::SystemTime::now())
        .into_iter()
        .map(|point| {
            Node::parent(
                "member",
                vec![
                    Node::text("Timestamp", point.timestamp_rfc3339()),
                    Node::text(
                        "DeliveryAttempts",
                        point.counts.delivery_attempts.to_string(),
                    ),
                    Node::text("Bounces", point.counts.bounces.to_string()),
                    Node::text("Complaints", point.counts.complaints.to_string()),
                    Node::text("Rejects", point.counts.rejects.to_string()),
                ],
            )
        })
        .collect();
    vec![Node::parent("SendDataPoints", points)]
}

// ---------------------------------------------------------------------------------------
// Identities.
// ---------------------------------------------------------------------------------------

/// VerifyEmailIdentity, VerifyEmailAddress: a new address is added, pending, and sent its
/// verification message; a pending one is sent it again, as SES does; a verified one
/// stays as it is.
async fn verify_email(state: &AdminState, params: &Params) -> Result<Vec<Node>, ApiError> {
    let address = params.required("EmailAddress")?.trim();
    if IdentityKind::of(address) != Some(IdentityKind::Address) {
        return Err(invalid_parameter(format!(
            "Invalid email address <{}>.",
            shown(address)
        )));
    }
    verify(state, address).await?;
    Ok(Vec::new())
}

/// VerifyDomainIdentity: the domain's `VerificationToken`, to publish as TXT
/// `_amazonses.<domain>` (the same token for a domain already there, as SES answers).
async fn verify_domain(state: &AdminState, params: &Params) -> Result<Vec<Node>, ApiError> {
    let domain = params.required("Domain")?.trim();
    if IdentityKind::of(domain) != Some(IdentityKind::Domain) {
        return Err(invalid_parameter(format!(
            "Invalid domain name <{}>.",
            shown(domain)
        )));
    }
    let token = verify(state, domain).await?;
    Ok(vec![Node::text("VerificationToken", token)])
}

/// Adds the identity `name` if it is new; its token (a domain's TXT token; empty for an
/// address).
async fn verify(state: &AdminState, name: &str) -> Result<String, ApiError> {
    if state.relay.config().identity(name).is_none() {
        match api::add_identity(state, name, None, &[]).await {
            Ok((IdentityKind::Domain, token)) => return Ok(token),
            Ok((IdentityKind::Address, _)) => return Ok(String::new()),
            // Added meanwhile by another request: it is one already there.
            Err(e) if e.code == "AlreadyExistsException" => {}
            Err(e) => return Err(e),
        }
    }
    let config = state.relay.config();
    let Some((identity, record)) = config.identity(name) else {
        return Err(ApiError::internal(
            "The identity was removed while it was being verified; try again.",
        ));
    };
    match record.kind() {
        IdentityKind::Domain => Ok(record.dns_token().unwrap_or_default().to_owned()),
        IdentityKind::Address => {
            if !identity.verified
                && let Some(nonce) = record.link_nonce()
            {
                state.send_verification(name, nonce);
            }
            Ok(String::new())
        }
    }
}

/// `Success` for a verified identity, else `Pending`.
fn verification_status(verified: bool) -> &'static str {
    if verified { "Success" } else { "Pending" }
}

/// ListIdentities: names, by `IdentityType` when given, paged by `MaxItems`/`NextToken`.
fn list_identities(state: &AdminState, params: &Params) -> Result<Vec<Node>, ApiError> {
    let kind = match params.get("IdentityType") {
        None | Some("") => None,
        Some("EmailAddress") => Some(IdentityKind::Address),
        Some("Domain") => Some(IdentityKind::Domain),
        Some(other) => {
            return Err(invalid_parameter(format!(
                "Invalid IdentityType <{}>: it is EmailAddress or Domain.",
                shown(other)
            )));
        }
    };
    let config = state.relay.config();
    let names = config
        .identities()
        .filter(|(_, _, record)| kind.is_none_or(|k| record.kind() == k))
        .map(|(key, _, record)| (key, record.name.clone()));
    let (names, next) = api::page(names, &params.list_request()?)?;
    let mut result = vec![Node::list("Identities", names)];
    if let Some(next) = next {
        result.push(Node::text("NextToken", next));
    }
    Ok(result)
}

/// ListVerifiedEmailAddresses: the verified address identities.
fn verified_addresses(state: &AdminState) -> Vec<Node> {
    let config = state.relay.config();
    let addresses = config
        .identities()
        .filter(|(_, identity, record)| identity.verified && record.kind() == IdentityKind::Address)
        .map(|(_, _, record)| record.name.clone());
    vec![Node::list("VerifiedEmailAddresses", addresses.collect())]
}

/// GetIdentityVerificationAttributes: an entry for each identity asked that exists (those
/// that do not are left out, as SES leaves them), with a domain's token.
fn verification_attributes(state: &AdminState, params: &Params) -> Result<Vec<Node>, ApiError> {
    let asked = params.list("Identities")?;
    if asked.len() > MAX_IDENTITIES_ASKED {
        return Err(invalid_parameter(format!(
            "At most {MAX_IDENTITIES_ASKED} identities can be asked at once."
        )));
    }
    let config = state.relay.config();
    let mut entries = Vec::new();
    for name in &asked {
        let Some((identity, record)) = config.identity(name) else {
            continue;
        };
        let mut value = vec![Node::text(
            "VerificationStatus",
            verification_status(identity.verified),
        )];
        if let Some(token) = record.dns_token() {
            value.push(Node::text("VerificationToken", token));
        }
        entries.push(Node::parent(
            "entry",
            vec![
                Node::text("key", name.as_str()),
                Node::parent("value", value),
            ],
        ));
    }
    Ok(vec![Node::parent("VerificationAttributes", entries)])
}

/// DeleteIdentity, DeleteVerifiedEmailAddress: removed from the configuration file; one
/// that is not there is no error, as in SES.
async fn delete_identity(
    state: &AdminState,
    name: Result<&str, ApiError>,
) -> Result<Vec<Node>, ApiError> {
    let name = name?.trim();
    if state.relay.config().identity(name).is_none() {
        return Ok(Vec::new());
    }
    match api::remove_identity(state, name).await {
        Ok(()) => Ok(Vec::new()),
        Err(e) if e.code == "NotFoundException" => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// Configuration sets.
// ---------------------------------------------------------------------------------------

fn list_configuration_sets(state: &AdminState, params: &Params) -> Result<Vec<Node>, ApiError> {
    let config = state.relay.config();
    let names = config
        .policy
        .configuration_sets
        .keys()
        .map(|k| (k.as_str(), k.clone()));
    let (names, next) = api::page(names, &params.list_request()?)?;
    let members = names
        .into_iter()
        .map(|name| Node::parent("member", vec![Node::text("Name", name)]))
        .collect();
    let mut result = vec![Node::parent("ConfigurationSets", members)];
    if let Some(next) = next {
        result.push(Node::text("NextToken", next));
    }
    Ok(result)
}

/// DescribeConfigurationSet: the name, and with `ConfigurationSetAttributeNames`
/// `reputationOptions` its `SendingEnabled`. The other attributes (event destinations,
/// tracking and delivery options) are v2's to read.
fn describe_configuration_set(state: &AdminState, params: &Params) -> Result<Vec<Node>, ApiError> {
    let name = params.required("ConfigurationSetName")?;
    let attributes = params.list("ConfigurationSetAttributeNames")?;
    for attribute in &attributes {
        if !matches!(
            attribute.as_str(),
            "eventDestinations" | "trackingOptions" | "deliveryOptions" | "reputationOptions"
        ) {
            return Err(invalid_parameter(format!(
                "Invalid ConfigurationSetAttributeName <{}>.",
                shown(attribute)
            )));
        }
    }
    let config = state.relay.config();
    let Some(set) = config.policy.configuration_sets.get(name) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ConfigurationSetDoesNotExist",
            format!("Configuration set <{}> does not exist.", shown(name)),
        ));
    };
    let mut result = vec![Node::parent(
        "ConfigurationSet",
        vec![Node::text("Name", name)],
    )];
    if attributes.iter().any(|a| a == "reputationOptions") {
        result.push(Node::parent(
            "ReputationOptions",
            vec![
                Node::text("SendingEnabled", set.sending_enabled.to_string()),
                Node::text("ReputationMetricsEnabled", "false"),
            ],
        ));
    }
    Ok(result)
}

// ---------------------------------------------------------------------------------------
// The XML.
// ---------------------------------------------------------------------------------------

/// An element of an answer: text, or elements. Names are this module's own; text is the
/// library's to escape ([`write_node`]).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(Cow<'static, str>, String),
    Parent(Cow<'static, str>, Vec<Node>),
}

impl Node {
    fn text(name: &'static str, value: impl Into<String>) -> Node {
        Node::Text(Cow::Borrowed(name), value.into())
    }

    fn parent(name: impl Into<Cow<'static, str>>, children: Vec<Node>) -> Node {
        Node::Parent(name.into(), children)
    }

    /// A list of strings: `<name><member>..</member>...</name>`.
    fn list(name: &'static str, items: Vec<String>) -> Node {
        Node::parent(
            name,
            items
                .into_iter()
                .map(|item| Node::text("member", item))
                .collect(),
        )
    }
}

/// Text as XML 1.0 can carry it: the control characters it cannot (all but tab, LF and
/// CR) become `?`. Escaping is quick-xml's.
fn xml_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

fn write_node(w: &mut Writer<Vec<u8>>, node: &Node) -> io::Result<()> {
    match node {
        Node::Text(name, value) => {
            w.create_element(name.as_ref())
                .write_text_content(BytesText::new(&xml_text(value)))?;
        }
        Node::Parent(name, children) if children.is_empty() => {
            w.create_element(name.as_ref()).write_empty()?;
        }
        Node::Parent(name, children) => {
            w.create_element(name.as_ref()).write_inner_content(|w| {
                children.iter().try_for_each(|child| write_node(w, child))
            })?;
        }
    }
    Ok(())
}

/// `root` in SES's namespace, as a document.
fn document(root: &Node) -> io::Result<Vec<u8>> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let (name, children) = match root {
        Node::Parent(name, children) => (name.as_ref(), children.as_slice()),
        Node::Text(..) => return Err(io::Error::other("the root must hold elements")),
    };
    w.create_element(name)
        .with_attribute(("xmlns", NAMESPACE))
        .write_inner_content(|w| children.iter().try_for_each(|child| write_node(w, child)))?;
    let mut bytes = w.into_inner();
    bytes.push(b'\n');
    Ok(bytes)
}

fn xml_response(status: StatusCode, body: io::Result<Vec<u8>>) -> Response {
    let Ok(body) = body else {
        // Writing into memory does not fail; should it, the client still gets an answer.
        return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

/// An answer: `<XResponse xmlns="..."><XResult>...</XResult><ResponseMetadata><RequestId/>
/// </ResponseMetadata></XResponse>`, the RequestId the one of the `x-amzn-RequestId`
/// header.
fn answer_xml(request_id: &RequestId, action: Action, result: Vec<Node>) -> Response {
    let name = action.name();
    let mut children = Vec::new();
    if action.has_result() {
        children.push(Node::parent(format!("{name}Result"), result));
    }
    children.push(Node::parent(
        "ResponseMetadata",
        vec![Node::text("RequestId", request_id.as_str())],
    ));
    xml_response(
        StatusCode::OK,
        document(&Node::parent(format!("{name}Response"), children)),
    )
}

/// An action name as a message shows it: at most [`MAX_SHOWN_ACTION`] characters,
/// control characters as `?`.
fn shown_action(action: &str) -> String {
    let mut shown: String = action
        .chars()
        .take(MAX_SHOWN_ACTION)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if action.chars().count() > MAX_SHOWN_ACTION {
        shown.push_str("...");
    }
    shown
}

/// A v1 error: `status`, `Content-Type: text/xml` and
/// `<ErrorResponse xmlns="..."><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`,
/// the `RequestId` the one of the `x-amzn-RequestId` header. `Type` is `Receiver` for a
/// failure of the server (5xx), else `Sender`.
pub fn error(request_id: &RequestId, status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let root = Node::parent(
        "ErrorResponse",
        vec![
            Node::parent(
                "Error",
                vec![
                    Node::text("Type", kind),
                    Node::text("Code", code),
                    Node::text("Message", message),
                ],
            ),
            Node::text("RequestId", request_id.as_str()),
        ],
    );
    xml_response(status, document(&root))
}

/// An error of the listener's own checks (signature, access, body) or of an operation, for
/// a v1 client: the same status and message, the code as the Query protocol names it.
pub fn api_error(request_id: &RequestId, e: &ApiError) -> Response {
    error(request_id, e.status, query_code(&e.code), &e.message)
}

/// An operation's error: v2's codes as v1 names them ([`query_code`]); v2's throttling
/// status (429) is v1's 400.
fn render_error(request_id: &RequestId, e: &ApiError) -> Response {
    let status = if e.status == StatusCode::TOO_MANY_REQUESTS {
        StatusCode::BAD_REQUEST
    } else {
        e.status
    };
    error(request_id, status, query_code(&e.code), &e.message)
}

/// The Query protocol's name for a code: the signature errors have names of their own,
/// v2's bad input is `InvalidParameterValue` and its limits `Throttling`; v1's own codes
/// are kept, `...Exception` ones included; other v2 codes lose their `Exception` suffix.
fn query_code(code: &str) -> &str {
    match code {
        "UnrecognizedClientException" => "InvalidClientTokenId",
        "InvalidSignatureException" => "SignatureDoesNotMatch",
        "BadRequestException" => "InvalidParameterValue",
        "TooManyRequestsException" | "LimitExceededException" => "Throttling",
        "ConfigurationSetSendingPausedException" | "AccountSendingPausedException" => code,
        other => other.strip_suffix("Exception").unwrap_or(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn errors_are_xml_escaped_by_the_library() {
        let id = RequestId::new();
        let response = error(
            &id,
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "a<b>&\"c\" 'd'\u{0}\u{7f}\té",
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/xml");
        let body = body_of(response).await;
        assert_eq!(
            body,
            format!(
                "<ErrorResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\">\n  <Error>\n    \
                 <Type>Sender</Type>\n    <Code>InvalidAction</Code>\n    \
                 <Message>a&lt;b&gt;&amp;&quot;c&quot; &apos;d&apos;??\té</Message>\n  </Error>\n  \
                 <RequestId>{}</RequestId>\n</ErrorResponse>\n",
                id.as_str()
            )
        );
        let response = error(
            &id,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "x",
        );
        assert!(body_of(response).await.contains("<Type>Receiver</Type>"));
    }

    #[tokio::test]
    async fn answers_have_their_result_and_metadata() {
        let id = RequestId::new();
        let body = body_of(answer_xml(
            &id,
            Action::ListIdentities,
            vec![Node::list(
                "Identities",
                vec!["a@example.com".into(), "x<y".into()],
            )],
        ))
        .await;
        assert_eq!(
            body,
            format!(
                "<ListIdentitiesResponse xmlns=\"{NAMESPACE}\">\n  <ListIdentitiesResult>\n    \
                 <Identities>\n      <member>a@example.com</member>\n      <member>x&lt;y</member>\n    \
                 </Identities>\n  </ListIdentitiesResult>\n  <ResponseMetadata>\n    \
                 <RequestId>{}</RequestId>\n  </ResponseMetadata>\n</ListIdentitiesResponse>\n",
                id.as_str()
            )
        );
        let body = body_of(answer_xml(&id, Action::VerifyEmailAddress, Vec::new())).await;
        assert!(!body.contains("Result"), "{body}");
        let body = body_of(answer_xml(&id, Action::VerifyEmailIdentity, Vec::new())).await;
        assert!(body.contains("<VerifyEmailIdentityResult/>"), "{body}");
    }

    #[test]
    fn codes_have_their_query_names() {
        for (v2, v1) in [
            (
                "MissingAuthenticationTokenException",
                "MissingAuthenticationToken",
            ),
            ("IncompleteSignatureException", "IncompleteSignature"),
            ("UnrecognizedClientException", "InvalidClientTokenId"),
            ("InvalidSignatureException", "SignatureDoesNotMatch"),
            ("AccessDeniedException", "AccessDenied"),
            ("RequestEntityTooLarge", "RequestEntityTooLarge"),
            ("BadRequestException", "InvalidParameterValue"),
            ("TooManyRequestsException", "Throttling"),
            ("LimitExceededException", "Throttling"),
            ("MessageRejected", "MessageRejected"),
            (
                "ConfigurationSetDoesNotExist",
                "ConfigurationSetDoesNotExist",
            ),
            (
                "ConfigurationSetSendingPausedException",
                "ConfigurationSetSendingPausedException",
            ),
            (
                "AccountSendingPausedException",
                "AccountSendingPausedException",
            ),
        ] {
            assert_eq!(query_code(v2), v1);
        }
    }

    #[test]
    fn forms_are_told_from_json() {
        let mut headers = HeaderMap::new();
        assert!(!is_form(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        assert!(is_form(&headers));
        assert!(is_query("/", &headers));
        assert!(!is_query("/v2/email/outbound-emails", &headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_query("/", &headers));
    }

    #[test]
    fn lists_and_tags_are_read_in_member_order() {
        let params = Params::parse(
            b"Destinations.member.2=b%40x.com&Destinations.member.1=a%40x.com&Destinations.member.10=c%40x.com\
              &Tags.member.2.Name=k2&Tags.member.2.Value=v2&Tags.member.1.Name=k1&Tags.member.1.Value=v%3D1",
        );
        assert_eq!(
            params.list("Destinations").unwrap(),
            ["a@x.com", "b@x.com", "c@x.com"]
        );
        assert_eq!(
            params.tags().unwrap(),
            Some(vec![
                ("k1".to_owned(), "v=1".to_owned()),
                ("k2".to_owned(), "v2".to_owned())
            ])
        );
        assert_eq!(Params::parse(b"Action=X").tags().unwrap(), None);
        assert_eq!(Params::parse(b"Tags=").tags().unwrap(), Some(Vec::new()));
        assert!(Params::parse(b"Tags.member.0.Name=a").tags().is_err());
        assert!(
            Params::parse(b"Destinations.member.x=a")
                .list("Destinations")
                .is_err()
        );
        assert!(Params::parse(b"MaxItems=0").max_items().is_err());
        assert!(Params::parse(b"MaxItems=abc").max_items().is_err());
    }

    #[test]
    fn every_action_is_found_by_its_name() {
        for action in Action::ALL {
            assert_eq!(Action::of(action.name()), Some(action));
        }
        assert_eq!(Action::of("SendBounce"), None);
    }

    #[test]
    fn doubles_are_written_as_ses_writes_them() {
        assert_eq!(double(200.0), "200.0");
        assert_eq!(double(-1.0), "-1.0");
        assert_eq!(double(0.5), "0.5");
    }
}
