//! The SES v1 (Query) protocol (SPEC 11): form-encoded `POST /` requests
//! (`Action=SendRawEmail&...&Version=2010-12-01`), XML answers in SES's 2010-12-01
//! namespace. django-ses, Laravel's `ses` transport, boto3's `ses` client and `aws ses`
//! still speak it.
//!
//! sesrelay does not serve the v1 operations yet: every action is answered with v1's
//! `InvalidAction` error, in v1's XML shape, which those clients parse and report
//! cleanly ("An error occurred (InvalidAction) when calling the SendRawEmail operation:
//! ..."), instead of v2's JSON, which they cannot parse. The refusals of the listener's own
//! checks (signature, access, body) reach a v1 client in the same shape. Operations are
//! to be added in [`query`], by action name.

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::RequestId;
use super::error::ApiError;

/// The XML namespace of SES v1's answers.
pub const NAMESPACE: &str = "http://ses.amazonaws.com/doc/2010-12-01/";
/// An action name is shown in a message up to this many characters.
const MAX_SHOWN_ACTION: usize = 64;

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

/// `POST /`: a v1 Query request is answered by its action (none is served yet:
/// `InvalidAction`); anything else posted to `/` is no operation of the v2 API.
pub async fn query(
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return super::api::unknown_operation().await.into_response();
    }
    let action = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "Action")
        .map(|(_, value)| value.into_owned());
    let Some(action) = action.filter(|a| !a.is_empty()) else {
        return error(
            &request_id,
            StatusCode::BAD_REQUEST,
            "MissingAction",
            "The request must contain the parameter Action.",
        );
    };
    tracing::info!(
        action = %shown_action(&action),
        "v1 Query request refused: sesrelay serves the SES v2 API"
    );
    error(
        &request_id,
        StatusCode::BAD_REQUEST,
        "InvalidAction",
        &format!(
            "Unrecognized action: sesrelay serves the SES v2 API at /v2/email/...; \
             the v1 Query API (Action={}) is not available.",
            shown_action(&action)
        ),
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
    let body = format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\">\n  <Error>\n    <Type>{kind}</Type>\n    \
         <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
         <RequestId>{}</RequestId>\n</ErrorResponse>\n",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id.as_str()),
    );
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

/// An error of the listener's own checks (signature, access, body), for a v1 client: the
/// same status and message, the code as the Query protocol names it.
pub fn api_error(request_id: &RequestId, e: &ApiError) -> Response {
    error(request_id, e.status, query_code(e.code), &e.message)
}

/// The Query protocol's name for a v2 error code: the signature errors have names of their
/// own, and the others lose their `Exception` suffix.
fn query_code(code: &str) -> &str {
    match code {
        "UnrecognizedClientException" => "InvalidClientTokenId",
        "InvalidSignatureException" => "SignatureDoesNotMatch",
        other => other.strip_suffix("Exception").unwrap_or(other),
    }
}

/// `s` with `&`, `<`, `>`, `"` and `'` escaped, and the characters XML 1.0 cannot carry
/// (control characters other than tab, LF and CR) as `?`.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_escaped() {
        assert_eq!(
            xml_escape("a<b>&\"c\" 'd'\u{0}\u{7f}\té"),
            "a&lt;b&gt;&amp;&quot;c&quot; &apos;d&apos;??\té"
        );
    }

    #[test]
    fn v2_codes_have_their_query_names() {
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

    #[tokio::test]
    async fn every_action_is_invalid_for_now() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let id = RequestId::new();
        let response = query(
            Extension(id.clone()),
            headers.clone(),
            Bytes::from_static(
                b"Action=SendRawEmail&RawMessage.Data=RnJvbTogYUBleGFtcGxlLmNvbQ%3D%3D&Version=2010-12-01",
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/xml");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.starts_with(
                "<ErrorResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>InvalidAction</Code>\n    <Message>Unrecognized action: sesrelay serves the SES v2 API at /v2/email/...; the v1 Query API (Action=SendRawEmail) is not available.</Message>"
            ),
            "{body}"
        );
        assert!(
            body.ends_with(&format!(
                "</Error>\n  <RequestId>{}</RequestId>\n</ErrorResponse>\n",
                id.as_str()
            )),
            "{body}"
        );
        let response = query(
            Extension(id),
            headers,
            Bytes::from_static(b"Action=%3Cscript%3E&Version=2010-12-01"),
        )
        .await;
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("(Action=&lt;script&gt;)"), "{body}");
    }
}
