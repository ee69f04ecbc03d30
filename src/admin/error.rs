//! SES's error shape: an HTTP status, `x-amzn-ErrorType: <Code>` and `{"message": ...}`.
//! The aws CLI prints `An error occurred (<Code>) when calling the <Operation> operation:
//! <message>`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
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

/// Every code an [`ApiError`] is made with: an answer kept elsewhere (the shared
/// idempotency store) names its code by text and gets it back from this list.
const CODES: &[&str] = &[
    "AccessDeniedException",
    "AlreadyExistsException",
    "BadRequestException",
    "InternalFailure",
    "LimitExceededException",
    "MessageRejected",
    "NotFoundException",
    "SendingPausedException",
    "ServiceUnavailable",
    "TooManyRequestsException",
];

impl ApiError {
    /// An error kept as text (status, code, message), made an `ApiError` again; `None` for
    /// a status or code that no `ApiError` has.
    pub fn from_parts(status: u16, code: &str, message: &str) -> Option<ApiError> {
        let status = StatusCode::from_u16(status).ok()?;
        let code = CODES.iter().find(|c| **c == code)?;
        Some(ApiError::new(status, code, message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message, "__type": self.code });
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-amzn-ErrorType", HeaderValue::from_static(self.code));
        response
    }
}
