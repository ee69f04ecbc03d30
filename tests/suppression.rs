//! The suppression list: every operation over HTTP with its success and error answers,
//! listing with filters and pages, the file beside the config across restarts, concurrent
//! puts, the automatic additions of events, and the real aws CLI.
//!
//! The aws CLI is `$SESRELAY_AWS_CLI`, else `aws` on PATH (`.ci/run` installs it).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sesrelay::config::Config;
use sesrelay::relay::Relay;
use sesrelay::server::Server;
use sesrelay::suppression::SuppressionReason;
use tokio::sync::watch;

mod common;

use common::aws::Cli;

const CONFIG: &str = r#"# The operator's comment.
[server]
listen = ["127.0.0.1:0"]
region = "us-east-1"

[admin]
listen = "127.0.0.1:0"

[upstream]
url = "dir:OUTBOX"

[configuration_sets.marketing]
"#;

/// A relay with its admin API, its config file in a temporary directory.
struct Api {
    dir: tempfile::TempDir,
    base: String,
    relay: Arc<Relay>,
    http: reqwest::Client,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Api {
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let text = CONFIG.replace("OUTBOX", &dir.path().join("outbox").display().to_string());
        std::fs::write(dir.path().join("sesrelay.toml"), text).unwrap();
        Api::start_in(dir).await
    }

    /// Starts (or starts again) on the files already in `dir`.
    async fn start_in(dir: tempfile::TempDir) -> Api {
        let config = Config::load(&dir.path().join("sesrelay.toml")).expect("valid config");
        let server = Server::bind(config).await.expect("binds");
        let base = format!("http://{}", server.admin_addr().expect("admin listener"));
        let relay = Arc::clone(server.relay());
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        Api {
            dir,
            base,
            relay,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            stop,
            done,
        }
    }

    async fn stop(self) -> tempfile::TempDir {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("stops")
            .unwrap();
        self.dir
    }

    fn list_file(&self) -> PathBuf {
        self.dir.path().join("sesrelay.suppression.json")
    }

    /// The status, the `x-amzn-ErrorType` header and the JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let code = resp
            .headers()
            .get("x-amzn-ErrorType")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, code, body)
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, code, body) = self.call(method.clone(), path, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {code} {body}");
        body
    }

    /// Expects an error with this status, code and message.
    async fn err(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        (status, code, message): (u16, &str, &str),
    ) {
        let (got_status, got_code, got_body) = self.call(method.clone(), path, body).await;
        assert_eq!(
            (
                got_status.as_u16(),
                got_code.as_str(),
                got_body["message"].as_str().unwrap_or("")
            ),
            (status, code, message),
            "{method} {path}: {got_body}"
        );
    }

    async fn put(&self, address: &str, reason: &str) {
        let body = self
            .ok(
                Method::PUT,
                "/v2/email/suppression/addresses",
                Some(json!({"EmailAddress": address, "Reason": reason})),
            )
            .await;
        assert_eq!(body, json!({}));
    }

    async fn get(&self, address: &str) -> Value {
        self.ok(
            Method::GET,
            &format!("/v2/email/suppression/addresses/{}", encode(address)),
            None,
        )
        .await
    }

    /// Every page of a GET listing with `query` (and PageSize), in order.
    async fn list_all(&self, query: &str, page_size: usize) -> (Vec<Value>, usize) {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/v2/email/suppression/addresses?PageSize={page_size}{query}");
            if let Some(token) = &token {
                path.push_str(&format!("&NextToken={}", encode(token)));
            }
            let page = self.ok(Method::GET, &path, None).await;
            pages += 1;
            let items = page["SuppressedDestinationSummaries"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"));
            assert!(items.len() <= page_size, "{page}");
            out.extend(items.iter().cloned());
            match page["NextToken"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => return (out, pages),
            }
            assert!(pages < 100, "paging does not end");
        }
    }
}

/// Percent-encodes a path segment or query value as botocore does.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn addresses(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["EmailAddress"].as_str().unwrap().to_owned())
        .collect()
}

const ADDRESSES: &str = "/v2/email/suppression/addresses";

#[tokio::test]
async fn put_get_and_delete_with_their_errors() {
    let api = Api::start().await;
    let before = now_seconds();
    api.put("Joe+news@Example.com", "BOUNCE").await;
    let after = now_seconds();

    // Looked up in any case; the address as it was put.
    let got = api.get("joe+NEWS@example.COM").await;
    let destination = &got["SuppressedDestination"];
    assert_eq!(destination["EmailAddress"], "Joe+news@Example.com", "{got}");
    assert_eq!(destination["Reason"], "BOUNCE", "{got}");
    let time = destination["LastUpdateTime"]
        .as_f64()
        .unwrap_or_else(|| panic!("LastUpdateTime is epoch seconds, a number: {got}"));
    assert!(
        time >= before.floor() - 0.001 && time <= after + 0.001,
        "{before} <= {time} <= {after}"
    );
    assert!(
        destination.get("Attributes").is_none(),
        "a put by hand has no Attributes: {got}"
    );
    assert_eq!(
        got.as_object().unwrap().len(),
        1,
        "only SuppressedDestination: {got}"
    );

    // A second put changes the reason and the time.
    tokio::time::sleep(Duration::from_millis(20)).await;
    api.put("joe+news@example.com", "COMPLAINT").await;
    let again = api.get("joe+news@example.com").await;
    assert_eq!(again["SuppressedDestination"]["Reason"], "COMPLAINT");
    assert_eq!(
        again["SuppressedDestination"]["EmailAddress"],
        "joe+news@example.com"
    );
    assert!(
        again["SuppressedDestination"]["LastUpdateTime"]
            .as_f64()
            .unwrap()
            > time
    );
    assert!(
        api.relay
            .suppression()
            .get("JOE+news@example.com")
            .is_some()
    );

    // Errors.
    let bad_request = |m: &'static str| (400, "BadRequestException", m);
    api.err(
        Method::PUT,
        ADDRESSES,
        Some(json!({"EmailAddress": "not-an-address", "Reason": "BOUNCE"})),
        bad_request("Invalid email address <not-an-address>."),
    )
    .await;
    api.err(
        Method::PUT,
        ADDRESSES,
        Some(json!({"EmailAddress": "a@x.test", "Reason": "SPAM"})),
        bad_request("Invalid reason <SPAM>: the reason must be BOUNCE or COMPLAINT."),
    )
    .await;
    api.err(
        Method::PUT,
        ADDRESSES,
        Some(json!({"EmailAddress": "a@x.test", "Reason": "bounce"})),
        bad_request("Invalid reason <bounce>: the reason must be BOUNCE or COMPLAINT."),
    )
    .await;
    api.err(
        Method::PUT,
        ADDRESSES,
        Some(json!({"EmailAddress": "a@x.test"})),
        bad_request("Reason is required."),
    )
    .await;
    api.err(
        Method::PUT,
        ADDRESSES,
        Some(json!({"Reason": "BOUNCE"})),
        bad_request("EmailAddress is required."),
    )
    .await;
    api.err(
        Method::PUT,
        ADDRESSES,
        Some(json!({"EmailAddress": "a@x.test", "Reason": "BOUNCE", "TenantName": "t1"})),
        (
            404,
            "NotFoundException",
            "Tenant <t1> does not exist: sesrelay has no tenants, only the account-level suppression list.",
        ),
    )
    .await;
    assert!(
        api.relay.suppression().get("a@x.test").is_none(),
        "nothing refused was added"
    );
    api.err(
        Method::GET,
        &format!("{ADDRESSES}/nobody%40x.test"),
        None,
        (
            404,
            "NotFoundException",
            "Email address <nobody@x.test> does not exist on your suppression list.",
        ),
    )
    .await;
    api.err(
        Method::GET,
        &format!("{ADDRESSES}/no-at-sign"),
        None,
        bad_request("Invalid email address <no-at-sign>."),
    )
    .await;

    // Delete, then it is gone, and a second delete is NotFound.
    let deleted = api
        .ok(
            Method::DELETE,
            &format!("{ADDRESSES}/JOE%2Bnews%40example.com"),
            None,
        )
        .await;
    assert_eq!(deleted, json!({}));
    api.err(
        Method::GET,
        &format!("{ADDRESSES}/joe%2Bnews%40example.com"),
        None,
        (
            404,
            "NotFoundException",
            "Email address <joe+news@example.com> does not exist on your suppression list.",
        ),
    )
    .await;
    api.err(
        Method::DELETE,
        &format!("{ADDRESSES}/joe%2Bnews%40example.com"),
        None,
        (
            404,
            "NotFoundException",
            "Email address <joe+news@example.com> does not exist on your suppression list.",
        ),
    )
    .await;
    api.err(
        Method::DELETE,
        &format!("{ADDRESSES}/bad%20address"),
        None,
        bad_request("Invalid email address <bad address>."),
    )
    .await;

    // The request counter knows the operations.
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sesrelay_api_requests_total{operation=\"PutSuppressedDestination\",status=\"200\"} 2",
        "sesrelay_api_requests_total{operation=\"PutSuppressedDestination\",status=\"400\"} 5",
        "sesrelay_api_requests_total{operation=\"GetSuppressedDestination\",status=\"200\"} 2",
        "sesrelay_api_requests_total{operation=\"GetSuppressedDestination\",status=\"404\"} 2",
        "sesrelay_api_requests_total{operation=\"DeleteSuppressedDestination\",status=\"200\"} 1",
        "sesrelay_api_requests_total{operation=\"DeleteSuppressedDestination\",status=\"404\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn listing_filters_by_reason_and_time_and_pages() {
    let api = Api::start().await;
    for i in 0..5 {
        api.put(&format!("bounced{i}@x.test"), "BOUNCE").await;
    }
    for i in 0..4 {
        api.put(&format!("Complained{i}@x.test"), "COMPLAINT").await;
    }

    let (all, pages) = api.list_all("", 1000).await;
    assert_eq!(pages, 1);
    assert_eq!(all.len(), 9);
    for item in &all {
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["EmailAddress", "LastUpdateTime", "Reason"],
            "a summary has exactly these: {item}"
        );
        assert!(item["LastUpdateTime"].is_number(), "{item}");
    }

    // The reason filter, repeated or not, and pages of 2 that add up to the whole.
    let (complaints, pages) = api.list_all("&Reason=COMPLAINT", 2).await;
    assert_eq!(
        addresses(&complaints),
        [
            "Complained0@x.test",
            "Complained1@x.test",
            "Complained2@x.test",
            "Complained3@x.test"
        ]
    );
    assert_eq!(pages, 2);
    let (bounces, pages) = api.list_all("&Reason=BOUNCE", 2).await;
    assert_eq!(bounces.len(), 5);
    assert_eq!(pages, 3);
    assert!(bounces.iter().all(|b| b["Reason"] == "BOUNCE"));
    let (both, _) = api.list_all("&Reason=BOUNCE&Reason=COMPLAINT", 4).await;
    assert_eq!(addresses(&both), addresses(&all));
    let (one_by_one, pages) = api.list_all("", 1).await;
    assert_eq!(addresses(&one_by_one), addresses(&all));
    assert_eq!(pages, 9);

    // Times: ISO 8601 as botocore sends them, or epoch seconds.
    let (none, _) = api
        .list_all("&StartDate=2100-01-01T00%3A00%3A00Z", 10)
        .await;
    assert!(none.is_empty());
    let (none, _) = api.list_all("&EndDate=2000-01-01T00%3A00%3A00Z", 10).await;
    assert!(none.is_empty());
    let (since, _) = api
        .list_all(
            "&StartDate=2000-01-01T00%3A00%3A00.000000Z&EndDate=2100-01-01T00%3A00%3A00Z",
            10,
        )
        .await;
    assert_eq!(since.len(), 9);
    let (since, _) = api
        .list_all(&format!("&StartDate={}", now_seconds() as u64 - 60), 10)
        .await;
    assert_eq!(since.len(), 9);

    // The POST form of newer botocore models.
    let page = api
        .ok(
            Method::POST,
            "/v2/email/list-suppressed-destinations",
            Some(json!({"Reasons": ["COMPLAINT"], "PageSize": 3, "StartDate": 946684800})),
        )
        .await;
    assert_eq!(
        page["SuppressedDestinationSummaries"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let token = page["NextToken"].as_str().expect("a next page").to_owned();
    let rest = api
        .ok(
            Method::POST,
            "/v2/email/list-suppressed-destinations",
            Some(json!({"Reasons": ["COMPLAINT"], "PageSize": 3, "NextToken": token})),
        )
        .await;
    assert_eq!(
        addresses(rest["SuppressedDestinationSummaries"].as_array().unwrap()),
        ["Complained3@x.test"]
    );
    assert!(rest.get("NextToken").is_none(), "{rest}");

    // Errors.
    let bad = |m: &'static str| (400, "BadRequestException", m);
    for size in ["0", "1001", "x"] {
        api.err(
            Method::GET,
            &format!("{ADDRESSES}?PageSize={size}"),
            None,
            bad("PageSize must be a number from 1 to 1000."),
        )
        .await;
    }
    api.err(
        Method::GET,
        &format!("{ADDRESSES}?Reason=SPAM"),
        None,
        bad("Invalid reason <SPAM>: the reason must be BOUNCE or COMPLAINT."),
    )
    .await;
    api.err(
        Method::GET,
        &format!("{ADDRESSES}?StartDate=yesterday"),
        None,
        bad("Invalid StartDate <yesterday>: give a time such as 2024-01-31T12:00:00Z, or epoch seconds."),
    )
    .await;
    api.err(
        Method::GET,
        &format!("{ADDRESSES}?NextToken=%25%25%25"),
        None,
        (
            400,
            "InvalidNextTokenException",
            "The NextToken is not valid.",
        ),
    )
    .await;
    api.stop().await;
}

#[tokio::test]
async fn account_and_configuration_set_reasons() {
    let api = Api::start().await;
    let account = |body: &Value| body["SuppressionAttributes"]["SuppressedReasons"].clone();
    // SES's default for a new account: both reasons.
    let got = api.ok(Method::GET, "/v2/email/account", None).await;
    assert_eq!(account(&got), json!(["BOUNCE", "COMPLAINT"]), "{got}");

    let put_account =
        |reasons: Value| api.ok(Method::PUT, "/v2/email/account/suppression", Some(reasons));
    assert_eq!(
        put_account(json!({"SuppressedReasons": ["COMPLAINT", "COMPLAINT"]})).await,
        json!({})
    );
    let got = api.ok(Method::GET, "/v2/email/account", None).await;
    assert_eq!(account(&got), json!(["COMPLAINT"]), "{got}");
    put_account(json!({})).await;
    let got = api.ok(Method::GET, "/v2/email/account", None).await;
    assert_eq!(account(&got), json!([]), "absent is none: {got}");
    put_account(json!({"SuppressedReasons": ["COMPLAINT", "BOUNCE"]})).await;
    let got = api.ok(Method::GET, "/v2/email/account", None).await;
    assert_eq!(account(&got), json!(["BOUNCE", "COMPLAINT"]), "{got}");
    api.err(
        Method::PUT,
        "/v2/email/account/suppression",
        Some(json!({"SuppressedReasons": ["BOUNCE", "HARD"]})),
        (
            400,
            "BadRequestException",
            "Invalid reason <HARD>: the reason must be BOUNCE or COMPLAINT.",
        ),
    )
    .await;
    assert_eq!(
        api.relay.suppression().account_reasons(),
        [SuppressionReason::Bounce, SuppressionReason::Complaint]
    );

    // A set shows SuppressionOptions only once it has its own.
    let set_path = "/v2/email/configuration-sets/marketing";
    let options_path = "/v2/email/configuration-sets/marketing/suppression-options";
    let got = api.ok(Method::GET, set_path, None).await;
    assert!(got.get("SuppressionOptions").is_none(), "{got}");
    api.ok(
        Method::PUT,
        options_path,
        Some(json!({"SuppressedReasons": ["BOUNCE"]})),
    )
    .await;
    let got = api.ok(Method::GET, set_path, None).await;
    assert_eq!(
        got["SuppressionOptions"],
        json!({"SuppressedReasons": ["BOUNCE"]}),
        "{got}"
    );
    let suppression = api.relay.suppression();
    assert_eq!(
        suppression.suppressed_reasons_for(Some("marketing")),
        [SuppressionReason::Bounce]
    );
    assert_eq!(
        suppression.suppressed_reasons_for(None),
        [SuppressionReason::Bounce, SuppressionReason::Complaint]
    );
    // An empty list is the set's own (it suppresses nothing); absent gives the account's back.
    api.ok(
        Method::PUT,
        options_path,
        Some(json!({"SuppressedReasons": [], "SuppressionScope": "ACCOUNT"})),
    )
    .await;
    let got = api.ok(Method::GET, set_path, None).await;
    assert_eq!(got["SuppressionOptions"], json!({"SuppressedReasons": []}));
    assert!(
        suppression
            .suppressed_reasons_for(Some("marketing"))
            .is_empty()
    );
    api.ok(Method::PUT, options_path, Some(json!({}))).await;
    let got = api.ok(Method::GET, set_path, None).await;
    assert!(got.get("SuppressionOptions").is_none(), "{got}");

    // Errors.
    api.err(
        Method::PUT,
        "/v2/email/configuration-sets/nosuch/suppression-options",
        Some(json!({"SuppressedReasons": ["BOUNCE"]})),
        (
            404,
            "NotFoundException",
            "Configuration set <nosuch> does not exist.",
        ),
    )
    .await;
    api.err(
        Method::PUT,
        options_path,
        Some(json!({"SuppressedReasons": ["NOPE"]})),
        (
            400,
            "BadRequestException",
            "Invalid reason <NOPE>: the reason must be BOUNCE or COMPLAINT.",
        ),
    )
    .await;
    api.err(
        Method::PUT,
        options_path,
        Some(json!({"SuppressedReasons": ["BOUNCE"], "SuppressionScope": "TENANT"})),
        (
            400,
            "BadRequestException",
            "SuppressionScope TENANT is not supported: sesrelay has no tenants.",
        ),
    )
    .await;
    assert_eq!(suppression.set_options("marketing"), None);

    // Deleting a set drops its options: a new set of the same name has none.
    api.ok(
        Method::PUT,
        options_path,
        Some(json!({"SuppressedReasons": ["COMPLAINT"]})),
    )
    .await;
    api.ok(Method::DELETE, set_path, None).await;
    assert_eq!(suppression.set_options("marketing"), None);
    api.ok(
        Method::POST,
        "/v2/email/configuration-sets",
        Some(json!({"ConfigurationSetName": "marketing"})),
    )
    .await;
    let got = api.ok(Method::GET, set_path, None).await;
    assert!(got.get("SuppressionOptions").is_none(), "{got}");
    api.stop().await;
}

#[tokio::test]
async fn events_add_addresses_per_the_reasons_in_force() {
    let api = Api::start().await;
    api.ok(
        Method::PUT,
        "/v2/email/configuration-sets/marketing/suppression-options",
        Some(json!({"SuppressedReasons": ["COMPLAINT"]})),
    )
    .await;
    let suppression = api.relay.suppression();
    // The set suppresses complaints only; the account (no set) both.
    assert!(
        !suppression
            .add_from_event(
                "bounced@x.test",
                SuppressionReason::Bounce,
                Some("marketing"),
                None,
                None
            )
            .await
            .unwrap()
    );
    assert!(
        suppression
            .add_from_event(
                "complained@x.test",
                SuppressionReason::Complaint,
                Some("marketing"),
                Some("0100019ac0e1b2c3-5f1e2d3c-4b5a-4697-8877-665544332211-000000"),
                Some("feedback-1"),
            )
            .await
            .unwrap()
    );
    assert!(
        suppression
            .add_from_event(
                "bounced@x.test",
                SuppressionReason::Bounce,
                None,
                None,
                None
            )
            .await
            .unwrap()
    );
    let got = api.get("complained@x.test").await;
    assert_eq!(
        got["SuppressedDestination"]["Attributes"],
        json!({
            "MessageId": "0100019ac0e1b2c3-5f1e2d3c-4b5a-4697-8877-665544332211-000000",
            "FeedbackId": "feedback-1",
        }),
        "{got}"
    );
    assert_eq!(got["SuppressedDestination"]["Reason"], "COMPLAINT");
    // What stops mail: the entry's reason must be among the reasons in force.
    assert!(suppression.suppresses("bounced@x.test", None).is_some());
    assert!(
        suppression
            .suppresses("bounced@x.test", Some("marketing"))
            .is_none()
    );
    assert!(
        suppression
            .suppresses("Complained@X.test", Some("marketing"))
            .is_some()
    );
    api.stop().await;
}

#[tokio::test]
async fn the_list_survives_a_restart() {
    let api = Api::start().await;
    let config_before = std::fs::read_to_string(api.dir.path().join("sesrelay.toml")).unwrap();
    assert!(!api.list_file().exists(), "no file before the first change");
    api.put("kept@x.test", "COMPLAINT").await;
    api.put("gone@x.test", "BOUNCE").await;
    api.ok(Method::DELETE, &format!("{ADDRESSES}/gone%40x.test"), None)
        .await;
    api.ok(
        Method::PUT,
        "/v2/email/account/suppression",
        Some(json!({"SuppressedReasons": ["BOUNCE"]})),
    )
    .await;
    api.ok(
        Method::PUT,
        "/v2/email/configuration-sets/marketing/suppression-options",
        Some(json!({"SuppressedReasons": []})),
    )
    .await;
    let kept = api.get("kept@x.test").await;
    assert!(api.list_file().exists());
    let dir = api.stop().await;

    // The configuration file is not touched: the list has a file of its own.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sesrelay.toml")).unwrap(),
        config_before
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let api = Api::start_in(dir).await;
    assert_eq!(api.get("KEPT@x.test").await, kept);
    api.err(
        Method::GET,
        &format!("{ADDRESSES}/gone%40x.test"),
        None,
        (
            404,
            "NotFoundException",
            "Email address <gone@x.test> does not exist on your suppression list.",
        ),
    )
    .await;
    let account = api.ok(Method::GET, "/v2/email/account", None).await;
    assert_eq!(
        account["SuppressionAttributes"],
        json!({"SuppressedReasons": ["BOUNCE"]})
    );
    let set = api
        .ok(Method::GET, "/v2/email/configuration-sets/marketing", None)
        .await;
    assert_eq!(set["SuppressionOptions"], json!({"SuppressedReasons": []}));
    api.stop().await;
}

#[tokio::test]
async fn concurrent_puts_all_land() {
    let api = Arc::new(Api::start().await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let api = Arc::clone(&api);
        tasks.spawn(async move {
            let reason = if i % 2 == 0 { "BOUNCE" } else { "COMPLAINT" };
            api.put(&format!("user{i:02}@x.test"), reason).await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a put task");
    }
    let (all, _) = api.list_all("", 1000).await;
    let expected: Vec<String> = (0..40).map(|i| format!("user{i:02}@x.test")).collect();
    assert_eq!(addresses(&all), expected);
    let api = Arc::into_inner(api).expect("no other handle");
    let dir = api.stop().await;
    let api = Api::start_in(dir).await;
    let (all, _) = api.list_all("", 1000).await;
    assert_eq!(addresses(&all), expected, "every put is in the file");
    api.stop().await;
}

#[tokio::test]
async fn a_corrupt_list_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("relay.toml");
    std::fs::write(
        &config_path,
        CONFIG.replace("OUTBOX", &dir.path().join("outbox").display().to_string()),
    )
    .unwrap();
    let list = dir.path().join("relay.suppression.json");
    std::fs::write(&list, "{\"Version\": 1, \"SuppressedDestinations\": [").unwrap();

    let config = Config::load(&config_path).unwrap();
    let e = Server::bind(config)
        .await
        .err()
        .expect("a corrupt list is a start error");
    let text = e.to_string();
    assert!(
        text.contains(&list.display().to_string()) && text.contains("not a valid suppression list"),
        "{text}"
    );

    // The binary says so and exits 1.
    let out = Command::new(env!("CARGO_BIN_EXE_sesrelay"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env_remove("SESRELAY_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&list.display().to_string()),
        "the error names the file: {stderr}"
    );
    // The file is left as it was, for the operator to look at.
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "{\"Version\": 1, \"SuppressedDestinations\": ["
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_manages_the_suppression_list() {
    let api = Api::start().await;
    let cli = Cli::sesv2(api.base.clone());

    let before = now_seconds();
    for (address, reason) in [
        ("joe@example.com", "BOUNCE"),
        ("ann@example.com", "COMPLAINT"),
        ("bob@example.com", "BOUNCE"),
    ] {
        let out = cli
            .ok(&[
                "put-suppressed-destination",
                "--email-address",
                address,
                "--reason",
                reason,
            ])
            .await;
        assert_eq!(out, json!({}));
    }
    let got = cli
        .ok(&[
            "get-suppressed-destination",
            "--email-address",
            "Joe@Example.com",
        ])
        .await;
    let destination = &got["SuppressedDestination"];
    assert_eq!(destination["EmailAddress"], "joe@example.com", "{got}");
    assert_eq!(destination["Reason"], "BOUNCE", "{got}");
    // The CLI (v1) prints a timestamp as it came: epoch seconds.
    let time = destination["LastUpdateTime"]
        .as_f64()
        .unwrap_or_else(|| panic!("{got}"));
    assert!(
        time >= before.floor() - 0.001 && time <= now_seconds(),
        "{got}"
    );

    let listed = cli.ok(&["list-suppressed-destinations"]).await;
    assert_eq!(
        addresses(listed["SuppressedDestinationSummaries"].as_array().unwrap()),
        ["ann@example.com", "bob@example.com", "joe@example.com"],
        "{listed}"
    );
    let bounces = cli
        .ok(&[
            "list-suppressed-destinations",
            "--reasons",
            "BOUNCE",
            "--start-date",
            "2000-01-01T00:00:00Z",
            "--end-date",
            "2100-01-01T00:00:00Z",
        ])
        .await;
    assert_eq!(
        addresses(
            bounces["SuppressedDestinationSummaries"]
                .as_array()
                .unwrap()
        ),
        ["bob@example.com", "joe@example.com"],
        "{bounces}"
    );
    let none = cli
        .ok(&[
            "list-suppressed-destinations",
            "--start-date",
            "2100-01-01T00:00:00Z",
        ])
        .await;
    assert_eq!(none["SuppressedDestinationSummaries"], json!([]), "{none}");
    // Pages: the CLI has no paginator for this operation, so the token goes back by hand.
    let first = cli
        .ok(&["list-suppressed-destinations", "--page-size", "2"])
        .await;
    assert_eq!(
        addresses(first["SuppressedDestinationSummaries"].as_array().unwrap()),
        ["ann@example.com", "bob@example.com"]
    );
    let token = first["NextToken"].as_str().expect("a NextToken").to_owned();
    let second = cli
        .ok(&[
            "list-suppressed-destinations",
            "--page-size",
            "2",
            "--next-token",
            &token,
        ])
        .await;
    assert_eq!(
        addresses(second["SuppressedDestinationSummaries"].as_array().unwrap()),
        ["joe@example.com"]
    );
    assert!(second.get("NextToken").is_none(), "{second}");

    let deleted = cli
        .ok(&[
            "delete-suppressed-destination",
            "--email-address",
            "joe@example.com",
        ])
        .await;
    assert_eq!(deleted, json!({}));
    cli.fails(
        &[
            "get-suppressed-destination",
            "--email-address",
            "joe@example.com",
        ],
        "GetSuppressedDestination",
        "NotFoundException",
        "Email address <joe@example.com> does not exist on your suppression list.",
    )
    .await;
    cli.fails(
        &[
            "delete-suppressed-destination",
            "--email-address",
            "joe@example.com",
        ],
        "DeleteSuppressedDestination",
        "NotFoundException",
        "Email address <joe@example.com> does not exist on your suppression list.",
    )
    .await;
    cli.fails(
        &[
            "put-suppressed-destination",
            "--email-address",
            "x@example.com",
            "--reason",
            "SPAM",
        ],
        "PutSuppressedDestination",
        "BadRequestException",
        "Invalid reason <SPAM>: the reason must be BOUNCE or COMPLAINT.",
    )
    .await;

    // The account's reasons, shown by get-account.
    let account = cli.ok(&["get-account"]).await;
    assert_eq!(
        account["SuppressionAttributes"],
        json!({"SuppressedReasons": ["BOUNCE", "COMPLAINT"]}),
        "{account}"
    );
    cli.ok(&[
        "put-account-suppression-attributes",
        "--suppressed-reasons",
        "COMPLAINT",
    ])
    .await;
    let account = cli.ok(&["get-account"]).await;
    assert_eq!(
        account["SuppressionAttributes"],
        json!({"SuppressedReasons": ["COMPLAINT"]}),
        "{account}"
    );

    // A set's own options, shown by get-configuration-set.
    cli.ok(&[
        "create-configuration-set",
        "--configuration-set-name",
        "news",
    ])
    .await;
    cli.ok(&[
        "put-configuration-set-suppression-options",
        "--configuration-set-name",
        "news",
        "--suppressed-reasons",
        "BOUNCE",
        "COMPLAINT",
    ])
    .await;
    let set = cli
        .ok(&["get-configuration-set", "--configuration-set-name", "news"])
        .await;
    assert_eq!(
        set["SuppressionOptions"],
        json!({"SuppressedReasons": ["BOUNCE", "COMPLAINT"]}),
        "{set}"
    );
    cli.fails(
        &[
            "put-configuration-set-suppression-options",
            "--configuration-set-name",
            "nosuch",
            "--suppressed-reasons",
            "BOUNCE",
        ],
        "PutConfigurationSetSuppressionOptions",
        "NotFoundException",
        "Configuration set <nosuch> does not exist.",
    )
    .await;
    assert_eq!(
        api.relay.suppression().suppressed_reasons_for(Some("news")),
        [SuppressionReason::Bounce, SuppressionReason::Complaint]
    );
    assert_eq!(
        api.relay.suppression().suppressed_reasons_for(None),
        [SuppressionReason::Complaint]
    );
    api.stop().await;
}

/// `account.suppression_file` puts the list where the operator says (a writable volume
/// when the configuration's directory is read-only); it is read from there at start.
#[tokio::test]
async fn the_list_can_live_in_a_file_of_the_operators_choosing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let list = state.join("suppressed.json");
    let text = CONFIG.replace("OUTBOX", &dir.path().join("outbox").display().to_string())
        + &format!("\n[account]\nsuppression_file = \"{}\"\n", list.display());
    std::fs::write(dir.path().join("sesrelay.toml"), text).unwrap();
    let api = Api::start_in(dir).await;
    api.put("there@x.test", "BOUNCE").await;
    assert!(list.is_file());
    assert!(
        !api.list_file().exists(),
        "nothing beside the configuration"
    );
    let dir = api.stop().await;
    let api = Api::start_in(dir).await;
    assert_eq!(
        api.get("there@x.test").await["SuppressedDestination"]["Reason"],
        "BOUNCE"
    );
    api.stop().await;
}
