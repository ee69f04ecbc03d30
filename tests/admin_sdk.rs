//! The API as the AWS SDKs use it, over real sockets on 127.0.0.1: retries that resend one
//! `amz-sdk-invocation-id` (send-email answers them from the first attempt and delivers
//! once), clients with short timeouts (create-email-identity answers before the
//! verification message is sent), display names in RFC 2047 encoded-words, and SES v1
//! (Query) requests, answered in v1's XML error shape.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Capture, Script};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sesrelay::config::Config;
use sesrelay::server::Server;
use tokio::sync::watch;

/// A relay with its admin API and a config file in a temporary directory.
struct Api {
    _dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Api {
    /// Sends through `upstream` (an upstream URL); `example.com` is verified.
    async fn start(upstream: &str) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"[server]
listen = ["127.0.0.1:0"]
region = "us-east-1"
shutdown_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[upstream]
url = "{upstream}"

[identities."example.com"]
verified = true
"#
        );
        let path = dir.path().join("sesrelay.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).expect("a valid config");
        let server = Server::bind(config).await.expect("binds");
        let base = format!("http://{}", server.admin_addr().expect("admin listener"));
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        Api {
            _dir: dir,
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
            stop,
            done,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("stops")
            .unwrap();
    }

    /// send-email with `body`, with the invocation id the SDKs send when given: the
    /// status, the `x-amzn-ErrorType` and the JSON body.
    async fn send(&self, body: &Value, invocation: Option<&str>) -> (u16, String, Value) {
        let mut req = self
            .http
            .post(format!("{}/v2/email/outbound-emails", self.base))
            .json(body);
        if let Some(id) = invocation {
            req = req.header("amz-sdk-invocation-id", id);
        }
        let resp = req.send().await.expect("send-email answers");
        let status = resp.status().as_u16();
        let code = resp
            .headers()
            .get("x-amzn-ErrorType")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.json().await.expect("a JSON body");
        (status, code, body)
    }

    /// send-email that must succeed; its MessageId.
    async fn sent(&self, body: &Value, invocation: Option<&str>) -> String {
        let (status, code, answer) = self.send(body, invocation).await;
        assert_eq!(status, 200, "{code} {answer}");
        answer["MessageId"].as_str().unwrap().to_owned()
    }
}

fn simple(from: &str, to: &str, subject: &str) -> Value {
    json!({
        "FromEmailAddress": from,
        "Destination": {"ToAddresses": [to]},
        "Content": {"Simple": {"Subject": {"Data": subject}, "Body": {"Text": {"Data": "Hi"}}}},
    })
}

/// A port on 127.0.0.1 with nothing listening on it (yet).
fn vacant_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------
// send-email is idempotent on amz-sdk-invocation-id.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn one_invocation_id_is_one_delivery() {
    let upstream = Capture::start(Script::default()).await;
    let api = Api::start(&upstream.url()).await;
    let hello = simple("sender@example.com", "bob@example.net", "hello");

    // An SDK's retry: the same id, the same body. One delivery, one MessageId.
    let first = api.sent(&hello, Some("inv-0001")).await;
    let again = api.sent(&hello, Some("inv-0001")).await;
    assert_eq!(first, again);
    upstream.wait_for(1).await;

    // Another call (another id) is another message.
    let other = api.sent(&hello, Some("inv-0002")).await;
    assert_ne!(other, first);
    upstream.wait_for(2).await;

    // The id reused with another body is another call too, not answered with the first's
    // MessageId.
    let changed = simple("sender@example.com", "bob@example.net", "changed");
    let reused = api.sent(&changed, Some("inv-0001")).await;
    assert_ne!(reused, first);
    upstream.wait_for(3).await;

    // Without the header, every request sends.
    let plain_1 = api.sent(&hello, None).await;
    let plain_2 = api.sent(&hello, None).await;
    assert_ne!(plain_1, plain_2);
    upstream.wait_for(5).await;

    // A refusal is an answer too: the retry gets the same error, and nothing is sent.
    let unverified = simple("nobody@unverified.test", "bob@example.net", "x");
    let refused = api.send(&unverified, Some("inv-0003")).await;
    assert_eq!(
        (refused.0, refused.1.as_str()),
        (400, "MessageRejected"),
        "{refused:?}"
    );
    assert_eq!(api.send(&unverified, Some("inv-0003")).await, refused);

    let subjects: Vec<String> = upstream
        .messages()
        .iter()
        .map(|m| common::header(&m.content, "Subject").join(""))
        .collect();
    assert_eq!(subjects, ["hello", "hello", "changed", "hello", "hello"]);
    api.stop().await;
}

#[tokio::test]
async fn a_retry_during_the_first_attempt_waits_for_its_answer() {
    // The upstream holds its answer to the first message for 1.5 s: the SDK's retry
    // arrives while the first attempt is still delivering.
    let upstream = Capture::start(Script {
        slow_first_reply: Some(Duration::from_millis(1500)),
        ..Script::default()
    })
    .await;
    let api = Arc::new(Api::start(&upstream.url()).await);
    let hello = simple("sender@example.com", "bob@example.net", "slow");
    let first = {
        let (api, hello) = (Arc::clone(&api), hello.clone());
        tokio::spawn(async move { api.send(&hello, Some("inv-slow")).await })
    };
    upstream.wait_for(1).await;
    assert!(!first.is_finished(), "the upstream has not answered yet");
    let started = Instant::now();
    let retries: Vec<_> = (0..2)
        .map(|_| {
            let (api, hello) = (Arc::clone(&api), hello.clone());
            tokio::spawn(async move { api.send(&hello, Some("inv-slow")).await })
        })
        .collect();
    let first = first.await.unwrap();
    assert_eq!(first.0, 200, "{first:?}");
    for retry in retries {
        assert_eq!(retry.await.unwrap(), first);
    }
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "the retries waited for the first attempt"
    );
    // Later retries get the answer at once.
    let late = api.send(&hello, Some("inv-slow")).await;
    assert_eq!(late, first);
    assert_eq!(upstream.messages().len(), 1, "one delivery in all");
    Arc::into_inner(api).unwrap().stop().await;
}

#[tokio::test]
async fn a_retry_after_a_transient_failure_sends() {
    // Nothing listens where the upstream should be: the first attempt fails, retryably.
    let addr = vacant_port();
    let api = Api::start(&format!("smtp://{addr}?tls=none")).await;
    let hello = simple("sender@example.com", "bob@example.net", "retried");
    let (status, code, body) = api.send(&hello, Some("inv-transient")).await;
    assert_eq!(
        (status, code.as_str()),
        (503, "ServiceUnavailable"),
        "{body}"
    );
    // The upstream is back; the SDK retries with the same id, and this time it is sent.
    let upstream = Capture::start_on(&addr.to_string(), Script::default(), None).await;
    let id = api.sent(&hello, Some("inv-transient")).await;
    assert_eq!(api.sent(&hello, Some("inv-transient")).await, id);
    upstream.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(upstream.messages().len(), 1);
    api.stop().await;
}

// ---------------------------------------------------------------------------------------
// create-email-identity does not wait for the upstream.
// ---------------------------------------------------------------------------------------

/// An upstream that accepts connections and never says a word; counts them.
async fn stalled_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn create_email_identity_answers_while_the_upstream_stalls() {
    let (addr, accepted) = stalled_upstream().await;
    let api = Api::start(&format!("smtp://{addr}?tls=none")).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let started = Instant::now();
    let resp = impatient
        .post(format!("{}/v2/email/identities", api.base))
        .json(&json!({"EmailIdentity": "new@example.org"}))
        .send()
        .await
        .expect("create-email-identity answers within the client's 3 s");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["VerifiedForSendingStatus"], false, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let got: Value = api
        .http
        .get(format!(
            "{}/v2/email/identities/new%40example.org",
            api.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["VerificationStatus"], "PENDING", "{got}");
    // The verification message is on its way, in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no delivery was attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.stop().await;
}

// ---------------------------------------------------------------------------------------
// Display names in RFC 2047 encoded-words.
// ---------------------------------------------------------------------------------------

/// The base64 of the one `=?utf-8?b?...?=` word in `value`, decoded (lettre's encoding
/// of a non-ASCII name); panics when there is not exactly one such word.
fn one_b_word(value: &str) -> String {
    use base64::Engine as _;
    let lower = value.to_ascii_lowercase();
    assert_eq!(
        lower.matches("=?").count(),
        1,
        "one encoded-word in {value:?}"
    );
    let start = lower.find("=?utf-8?b?").expect("a UTF-8 B word") + "=?utf-8?b?".len();
    let end = start + value[start..].find("?=").unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&value[start..end])
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn encoded_display_names_are_encoded_once() {
    let upstream = Capture::start(Script::default()).await;
    let api = Api::start(&upstream.url()).await;
    let mut req = simple(
        "=?UTF-8?B?w4lsaXNl?= <sender@example.com>",
        "=?utf-8?Q?Bj=C3=B6rn?= <bjorn@example.net>",
        "names",
    );
    req["ReplyToAddresses"] = json!(["=?UTF-8?B?Sm9lIEJsb2dncw==?= <joe@example.com>"]);
    api.sent(&req, None).await;
    let message = &upstream.wait_for(1).await[0];
    let from = common::header(&message.content, "From").join("");
    assert_eq!(one_b_word(&from), "\u{c9}lise", "{from}");
    assert!(from.ends_with(" <sender@example.com>"), "{from}");
    let to = common::header(&message.content, "To").join("");
    assert_eq!(one_b_word(&to), "Bj\u{f6}rn", "{to}");
    // An ASCII name needs no encoding at all (lettre quotes it).
    assert_eq!(
        common::header(&message.content, "Reply-To"),
        ["\"Joe Bloggs\" <joe@example.com>"]
    );
    assert_eq!(message.rcpt_to, ["bjorn@example.net"]);
    api.stop().await;
}

// ---------------------------------------------------------------------------------------
// SES v1 (Query) requests get v1's XML error.
// ---------------------------------------------------------------------------------------

/// A form posted to `path` with `authorization` (none when empty): the status, the
/// Content-Type, the `x-amzn-RequestId` and the body.
async fn post_form(
    api: &Api,
    path: &str,
    authorization: &str,
    form: &str,
) -> (u16, String, String, String) {
    let mut req = api
        .http
        .post(format!("{}{path}", api.base))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(form.to_owned());
    if !authorization.is_empty() {
        let (_, amz_date) = common::v1_authorization();
        req = req
            .header("authorization", authorization)
            .header("x-amz-date", amz_date);
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, request_id) = (header("content-type"), header("x-amzn-RequestId"));
    let status = resp.status().as_u16();
    (status, content_type, request_id, resp.text().await.unwrap())
}

#[tokio::test]
async fn v1_query_requests_get_v1s_xml_error() {
    let upstream = Capture::start(Script::default()).await;
    let api = Api::start(&upstream.url()).await;
    // What the aws CLI and boto3 send (without access keys, any well-formed signature
    // passes).
    let (authorization, _) = common::v1_authorization();
    let authorization = authorization.as_str();
    // An action sesrelay does not serve.
    let form = "Action=ListTemplates&MaxItems=10&Version=2010-12-01";
    let (status, content_type, request_id, body) = post_form(&api, "/", authorization, form).await;
    assert_eq!((status, content_type.as_str()), (400, "text/xml"), "{body}");
    assert!(uuid::Uuid::parse_str(&request_id).is_ok(), "{request_id:?}");
    assert_eq!(
        body,
        format!(
            "<ErrorResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>InvalidAction</Code>\n    <Message>Unrecognized action: sesrelay does not serve the v1 action ListTemplates.</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n"
        )
    );

    // No Action at all.
    let (status, _, request_id, body) =
        post_form(&api, "/", authorization, "Version=2010-12-01").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("<Code>MissingAction</Code>"), "{body}");
    assert!(
        body.contains(&format!("<RequestId>{request_id}</RequestId>")),
        "{body}"
    );

    // Unsigned, a v1 request is refused before anything else, in v1's shape too.
    let (status, content_type, request_id, body) = post_form(&api, "/", "", form).await;
    assert_eq!((status, content_type.as_str()), (403, "text/xml"), "{body}");
    assert!(
        body.contains("<Code>MissingAuthenticationToken</Code>\n    <Message>Request is missing Authentication Token</Message>"),
        "{body}"
    );
    assert!(
        body.contains(&format!("<RequestId>{request_id}</RequestId>")),
        "{body}"
    );

    // A form posted anywhere else is no v1 request: the v2 API's refusal, in JSON.
    let (status, content_type, _, body) =
        post_form(&api, "/v2/email/outbound-emails", authorization, form).await;
    assert_eq!(
        (status, content_type.as_str()),
        (415, "application/json"),
        "{body}"
    );
    // JSON posted to `/` is no operation of either API.
    let resp = api
        .http
        .post(format!("{}/", api.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        resp.headers()["x-amzn-ErrorType"],
        "UnknownOperationException"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(upstream.messages().is_empty(), "nothing was sent");
    api.stop().await;
}
