//! SES's error shape: an HTTP status, `x-amzn-ErrorType: <Code>` and `{"message": ...}`.
//! The aws CLI prints `An error occurred (<Code>) when calling the <Operation> operation:
//! <message>`.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// SES's error code; owned when the error was read back from elsewhere (the shared
    /// idempotency store).
    pub code: Cow<'static, str>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundException", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "AlreadyExistsException", message)
    }

    pub fn message_rejected(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MessageRejected", message)
    }

    pub fn sending_paused(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "SendingPausedException", message)
    }

    /// The account's sending rate (botocore retries it, with backoff, as a throttle).
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            message,
        )
    }

    /// The account's 24-hour quota.
    pub fn limit_exceeded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "LimitExceededException", message)
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            message,
        )
    }

    /// "Email identity <x> does not exist."
    pub fn no_identity(name: &str) -> Self {
        Self::not_found(format!("Email identity <{name}> does not exist."))
    }

    /// "Configuration set <x> does not exist."
    pub fn no_configuration_set(name: &str) -> Self {
        Self::not_found(format!("Configuration set <{name}> does not exist."))
    }
}

impl ApiError {
    /// An error kept as text (status, code, message), made an `ApiError` again; `None` for
    /// a status that is not an error's or a code that is not a word.
    pub fn from_parts(status: u16, code: &str, message: &str) -> Option<ApiError> {
        let status = StatusCode::from_u16(status).ok()?;
        let word =
            !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric());
        (word && (status.is_client_error() || status.is_server_error())).then(|| ApiError {
            status,
            code: Cow::Owned(code.to_owned()),
            message: message.to_owned(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message, "__type": self.code });
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            "x-amzn-ErrorType",
            HeaderValue::from_str(&self.code)
                .unwrap_or(HeaderValue::from_static("InternalFailure")),
        );
        response
    }
}
