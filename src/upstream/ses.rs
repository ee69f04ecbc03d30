//! The SES API upstream (`ses://REGION`, `ses+https://HOST[:PORT]`, `ses+http://HOST:PORT`):
//! each message is one SES v2 `SendEmail` call with Raw content, signed by the AWS SDK with
//! credentials from its default chain (environment, shared config and profiles with SSO,
//! web identity, ECS, instance metadata), optionally through a profile and an assumed role.
//!
//! The message goes as it was rewritten, without sesrelay's `X-SES-CONFIGURATION-SET` and
//! `X-SES-MESSAGE-TAGS` (the relay leaves them out for this upstream): the resolved set and
//! tags travel as `ConfigurationSetName` and `EmailTags`. `Destination` is the envelope's
//! recipients and `FromEmailAddress` the envelope sender (the From header's address for
//! the null sender).
//!
//! SES's answers become SMTP replies here, in SES's own SMTP words (SPEC 13): rejections
//! and pauses 554, throttling and quotas `454 4.7.0`, everything that is not the message's
//! fault (5xx, timeouts, connection and credential failures, a request SES would not
//! authenticate) [`DeliveryError::Unavailable`], which the client sees as `451 4.4.1`.
//!
//! The SDK's client is built on first use (loading the configuration reads files and the
//! environment; `sesrelay check` never does), with its connection pool, `upstream.timeout`
//! as the operation timeout and no retries of its own: a retried SendEmail whose first
//! attempt reached SES would send twice, so a failure goes back to the SMTP client as a
//! 4xx, and the client decides.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::config::http::HttpResponse;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, MessageTag, RawMessage};
use aws_smithy_http_client::tls;
use tokio::sync::OnceCell;

use super::{
    Delivered, DeliveryError, Envelope, SesEndpoint, Tagging, UpstreamError, UpstreamSettings,
};
use crate::message::Forwarded;
use crate::smtp::reply::{self, Reply};

/// A successful readiness check is trusted this long before SES is asked again (probes
/// come every few seconds from every replica; GetAccount is rate-limited).
const PROBE_CACHE: Duration = Duration::from_secs(30);
/// The longest wait for a TCP connection to the endpoint (within `upstream.timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The session name of an assumed role (`upstream.role_arn`), seen in CloudTrail.
const SESSION_NAME: &str = "sesrelay";

pub struct SesUpstream {
    endpoint: SesEndpoint,
    region: String,
    profile: Option<String>,
    role_arn: Option<String>,
    timeout: Duration,
    /// PEM roots added to the system's for the endpoint's TLS (`upstream.ca_file`).
    extra_roots: Option<Vec<u8>>,
    client: OnceCell<Client>,
    /// When the last readiness check passed.
    ready_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SesUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SesUpstream")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("profile", &self.profile)
            .field("role_arn", &self.role_arn)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SesUpstream {
    pub fn new(settings: &UpstreamSettings, endpoint: &SesEndpoint) -> Result<Self, UpstreamError> {
        let extra_roots = match &settings.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| UpstreamError::CaFile {
                path: path.display().to_string(),
                source,
            })?),
            None => None,
        };
        Ok(SesUpstream {
            endpoint: endpoint.clone(),
            region: endpoint.region().to_owned(),
            profile: settings.ses.profile.clone(),
            role_arn: settings.ses.role_arn.clone(),
            timeout: settings.timeout,
            extra_roots,
            client: OnceCell::new(),
            ready_at: Mutex::new(None),
        })
    }

    /// The SDK client, built on first use.
    async fn client(&self) -> Result<&Client, DeliveryError> {
        self.client.get_or_try_init(|| self.build_client()).await
    }

    async fn build_client(&self) -> Result<Client, DeliveryError> {
        let mut roots = tls::TrustStore::empty().with_native_roots(true);
        if let Some(pem) = &self.extra_roots {
            roots = roots.with_pem_certificate(pem.clone());
        }
        let context = tls::TlsContext::builder()
            .with_trust_store(roots)
            .build()
            .map_err(|e| DeliveryError::Unavailable(format!("TLS setup for SES failed: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .tls_context(context)
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .http_client(http);
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_sesv2::config::Builder::from(&shared)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(self.timeout)
                    .connect_timeout(CONNECT_TIMEOUT.min(self.timeout))
                    .build(),
            );
        if let Some(url) = self.endpoint.url() {
            config = config.endpoint_url(url);
        }
        if let Some(role) = &self.role_arn {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name(SESSION_NAME)
                .configure(&shared)
                .build()
                .await;
            config = config.credentials_provider(provider);
        }
        tracing::info!(
            region = %self.region,
            endpoint = self.endpoint.url().unwrap_or("standard"),
            profile = self.profile.as_deref(),
            role_arn = self.role_arn.as_deref(),
            "SES API upstream ready"
        );
        Ok(Client::from_conf(config.build()))
    }

    /// One `SendEmail`. `Ok` carries SES's MessageId.
    pub async fn deliver(
        &self,
        envelope: &Envelope,
        message: Forwarded,
        tagging: &Tagging<'_>,
    ) -> Result<Delivered, DeliveryError> {
        let client = self.client().await?;
        let from = if envelope.mail_from.is_empty() {
            tagging.from_header.map(str::to_owned)
        } else {
            Some(envelope.mail_from.clone())
        };
        let raw = RawMessage::builder()
            .data(Blob::new(message.to_vec()))
            .build()
            .map_err(|e| DeliveryError::Unavailable(format!("cannot build the request: {e}")))?;
        drop(message);
        let mut tags = Vec::with_capacity(tagging.tags.len());
        for (name, value) in tagging.tags {
            tags.push(
                MessageTag::builder()
                    .name(name)
                    .value(value)
                    .build()
                    .map_err(|e| {
                        DeliveryError::Unavailable(format!("cannot build the request: {e}"))
                    })?,
            );
        }
        let request = client
            .send_email()
            .set_from_email_address(from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(envelope.rcpt_to.clone()))
                    .build(),
            )
            .content(EmailContent::builder().raw(raw).build())
            .set_configuration_set_name(tagging.configuration_set.map(str::to_owned))
            .set_email_tags((!tags.is_empty()).then_some(tags));
        let result = match request.send().await {
            Ok(output) => match output.message_id() {
                Some(id) if !id.is_empty() => Ok(Delivered {
                    reply: format!("250 Ok {id}"),
                    ses_message_id: Some(id.to_owned()),
                }),
                _ => Err(DeliveryError::Unavailable(
                    "SES answered SendEmail without a MessageId".to_owned(),
                )),
            },
            Err(e) => Err(send_error(&e)),
        };
        // A send is evidence for readiness too: any answer of SES's proves the endpoint
        // and the credentials; an unavailable SES is checked again at the next probe.
        match &result {
            Ok(_) | Err(DeliveryError::Refused { .. }) => self.set_ready(true),
            Err(_) => self.set_ready(false),
        }
        result
    }

    fn set_ready(&self, ready: bool) {
        let mut ready_at = self
            .ready_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *ready_at = ready.then(Instant::now);
    }

    /// Readiness: a `GetAccount` call proves the endpoint answers and the credentials are
    /// accepted. `AccessDeniedException` proves as much (the caller was authenticated; its
    /// policy lacks the optional `ses:GetAccount`). A pass is trusted for 30 s, or until a
    /// send finds SES unavailable.
    pub async fn probe(&self, limit: Duration) -> Result<(), DeliveryError> {
        let fresh = self
            .ready_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < PROBE_CACHE);
        if fresh {
            return Ok(());
        }
        let check = async {
            let client = self.client().await?;
            match client.get_account().send().await {
                Ok(_) => Ok(()),
                Err(SdkError::ServiceError(e))
                    if e.err().code() == Some("AccessDeniedException") =>
                {
                    Ok(())
                }
                Err(e) => Err(DeliveryError::Unavailable(format!(
                    "GetAccount failed: {}",
                    describe(&e)
                ))),
            }
        };
        let result = match tokio::time::timeout(limit.min(self.timeout), check).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Unavailable(
                "GetAccount did not answer in time".to_owned(),
            )),
        };
        self.set_ready(result.is_ok());
        result
    }
}

/// A failed call in one line: SES's status, code and message, or what kept the call from
/// getting an answer.
fn describe<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(context) => format!(
            "SES answered {} {}: {}",
            context.raw().status().as_u16(),
            context.err().code().unwrap_or("(no code)"),
            context.err().message().unwrap_or_default()
        ),
        SdkError::TimeoutError(_) => "no answer within upstream.timeout".to_owned(),
        other => {
            // The chain of causes, each by its Display (the Debug forms are long).
            let mut text = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(e) = cause {
                let next = e.to_string();
                if !text.ends_with(&next) {
                    text.push_str(": ");
                    text.push_str(&next);
                }
                cause = e.source();
            }
            text
        }
    }
}

/// What a failed `SendEmail` means for the SMTP client.
fn send_error<E>(e: &SdkError<E, HttpResponse>) -> DeliveryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(context) => {
            let err = context.err();
            let status = context.raw().status().as_u16();
            let code = err.code().unwrap_or_default();
            let message = err.message().unwrap_or_default();
            refusal(status, code, message)
        }
        other => DeliveryError::Unavailable(describe(other)),
    }
}

/// SES's error `code` (with HTTP `status` and its `message`) as SES's own SMTP interface
/// would answer it.
pub(crate) fn refusal(status: u16, code: &str, message: &str) -> DeliveryError {
    let refused = |reply: Reply| DeliveryError::Refused {
        code: reply.code(),
        text: format!("{} {}", reply.enhanced(), reply.text()),
    };
    let message = if message.is_empty() { code } else { message };
    match code {
        "MessageRejected"
        | "MailFromDomainNotVerifiedException"
        | "SendingPausedException"
        | "AccountSuspendedException"
        | "AccountSendingPausedException"
        | "ConfigurationSetSendingPausedException" => refused(reply::message_rejected(message)),
        "NotFoundException" | "ConfigurationSetDoesNotExistException" => {
            refused(reply::configuration_set_missing(message))
        }
        "BadRequestException" | "InvalidParameterValue" | "ValidationException" => {
            refused(reply::transaction_failed(message))
        }
        "TooManyRequestsException"
        | "LimitExceededException"
        | "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded" => refused(reply::throttled(message)),
        _ if status == 429 => refused(reply::throttled(message)),
        // Authentication and authorization (a wrong key, an expired token, a policy
        // without ses:SendEmail), 5xx and anything unknown: not the message's fault.
        _ => DeliveryError::Unavailable(format!("SES answered {status} {code}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_of(e: DeliveryError) -> String {
        crate::relay::delivery_reply(&e).to_line()
    }

    #[test]
    fn ses_errors_become_ses_smtp_replies() {
        let cases = [
            (
                400,
                "MessageRejected",
                "Email address is not verified. The following identities failed the check in region US-EAST-1: a@b.example",
                "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: a@b.example",
            ),
            (
                404,
                "NotFoundException",
                "Configuration set <x> does not exist.",
                "554 5.3.0 Configuration Set does not exist: Configuration set <x> does not exist.",
            ),
            (
                400,
                "SendingPausedException",
                "Sending paused for this account.",
                "554 5.7.1 Message rejected: Sending paused for this account.",
            ),
            (
                400,
                "BadRequestException",
                "Duplicate header 'Subject'.",
                "554 5.6.0 Transaction failed: Duplicate header 'Subject'.",
            ),
            (
                429,
                "TooManyRequestsException",
                "Maximum sending rate exceeded.",
                "454 4.7.0 Throttling failure: Maximum sending rate exceeded.",
            ),
            (
                400,
                "LimitExceededException",
                "Daily message quota exceeded.",
                "454 4.7.0 Throttling failure: Daily message quota exceeded.",
            ),
            (
                429,
                "SomethingNew",
                "",
                "454 4.7.0 Throttling failure: SomethingNew",
            ),
            (
                403,
                "SignatureDoesNotMatch",
                "x",
                "451 4.4.1 Upstream unavailable, try again later",
            ),
            (
                403,
                "AccessDeniedException",
                "x",
                "451 4.4.1 Upstream unavailable, try again later",
            ),
            (
                500,
                "InternalFailure",
                "x",
                "451 4.4.1 Upstream unavailable, try again later",
            ),
            (
                503,
                "ServiceUnavailable",
                "x",
                "451 4.4.1 Upstream unavailable, try again later",
            ),
        ];
        for (status, code, message, expected) in cases {
            assert_eq!(reply_of(refusal(status, code, message)), expected, "{code}");
        }
    }
}
