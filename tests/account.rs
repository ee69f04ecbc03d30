//! `[account]` (SPEC 4.5) over real sockets: the sandbox's verified recipients, the sending
//! rate and the 24-hour quota counted in recipients, the account-wide pause; over SMTP and
//! over the v2 API (`get-account`, `put-account-sending-attributes`, send-email's errors).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{Capture, Client, Script, Served};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sesrelay::config::Config;

const MESSAGE: &[u8] = b"From: joe@example.com\r\nSubject: hi\r\n\r\nbody\r\n";

/// A relay with its admin API, its config file in a temporary directory, forwarding to a
/// capturing upstream.
struct Relay {
    dir: tempfile::TempDir,
    served: Served,
    smtp: std::net::SocketAddr,
    base: String,
    http: reqwest::Client,
}

impl Relay {
    async fn start(upstream: &Capture, account: &str) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"[server]
listen = ["127.0.0.1:0"]
region = "us-east-1"
shutdown_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[upstream]
url = "{}"

[identities."example.com"]
verified = true

[identities."pending@elsewhere.test"]
verified = false

{account}
"#,
            upstream.url()
        );
        let path = dir.path().join("sesrelay.toml");
        std::fs::write(&path, text).unwrap();
        let served = Served::load(&path).await;
        Relay {
            dir,
            smtp: served.smtp,
            base: served.base(),
            served,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
        }
    }

    async fn stop(self) {
        self.served.stop().await;
    }

    fn file(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sesrelay.toml")).unwrap()
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn get_account(&self) -> Value {
        let (status, body) = self
            .call(reqwest::Method::GET, "/v2/email/account", json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// send-email with Simple content from joe@example.com to `to`.
    async fn send_email(&self, to: &[&str]) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            "/v2/email/outbound-emails",
            json!({
                "FromEmailAddress": "joe@example.com",
                "Destination": { "ToAddresses": to },
                "Content": { "Simple": {
                    "Subject": { "Data": "hi" },
                    "Body": { "Text": { "Data": "body" } },
                } },
            }),
        )
        .await
    }
}

async fn smtp_send(relay: &Relay, to: &[&str]) -> String {
    let mut c = Client::ready(relay.smtp).await;
    let reply = c.mail("joe@example.com", to, MESSAGE).await;
    c.cmd("QUIT").await;
    reply
}

#[tokio::test]
async fn the_sandbox_takes_verified_recipients_and_the_simulator_only() {
    let upstream = Capture::start(Script::default()).await;
    // No rate limit here, so that the test does not depend on the clock.
    let relay = Relay::start(&upstream, "[account]\nsandbox = true\nmax_send_rate = 0\n").await;

    let ok = smtp_send(&relay, &["ann@example.com"]).await;
    assert!(ok.starts_with("250 2.0.0 Ok "), "{ok}");
    let refused = smtp_send(
        &relay,
        &[
            "ann@example.com",
            "stranger@elsewhere.test",
            "pending@elsewhere.test",
        ],
    )
    .await;
    assert_eq!(
        refused,
        "554 5.7.1 Message rejected: Email address is not verified. The following identities \
         failed the check in region US-EAST-1: stranger@elsewhere.test, pending@elsewhere.test"
    );
    let simulator = smtp_send(
        &relay,
        &[
            "success@simulator.amazonses.com",
            "bounce+x@simulator.amazonses.com",
        ],
    )
    .await;
    assert!(simulator.starts_with("250 2.0.0 Ok "), "{simulator}");
    // The refused message was not forwarded, in whole or in part; the simulator's
    // recipients never are (SPEC 8).
    let got = upstream.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.messages().len(), 1);
    assert_eq!(got[0].rcpt_to, ["ann@example.com"]);

    // The API refuses the same way, as MessageRejected.
    let (status, body) = relay.send_email(&["stranger@elsewhere.test"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["__type"], "MessageRejected");
    assert_eq!(
        body["message"],
        "Email address is not verified. The following identities failed the check in region \
         US-EAST-1: stranger@elsewhere.test"
    );

    // get-account: the sandbox's quotas, the simulator's recipients not counted.
    let account = relay.get_account().await;
    assert_eq!(account["ProductionAccessEnabled"], false);
    assert_eq!(account["SendingEnabled"], true);
    assert_eq!(account["EnforcementStatus"], "HEALTHY");
    assert_eq!(
        account["SendQuota"],
        json!({ "Max24HourSend": 200.0, "MaxSendRate": -1.0, "SentLast24Hours": 1.0 })
    );
    relay.stop().await;
}

#[tokio::test]
async fn the_sandbox_defaults_to_one_per_second() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&upstream, "[account]\nsandbox = true\n").await;
    let account = relay.get_account().await;
    assert_eq!(
        account["SendQuota"],
        json!({ "Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 0.0 })
    );
    // Two recipients pass an empty window (else they could never be sent); the next
    // message, within the second, does not.
    let first = smtp_send(&relay, &["a@example.com", "b@example.com"]).await;
    assert!(first.starts_with("250 "), "{first}");
    let second = smtp_send(&relay, &["c@example.com"]).await;
    assert_eq!(
        second,
        "454 4.7.0 Throttling failure: Maximum sending rate exceeded."
    );
    relay.stop().await;
}

#[tokio::test]
async fn the_rate_counts_recipients_and_a_throttled_message_is_not_forwarded() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&upstream, "[account]\nmax_send_rate = 3\n").await;
    let mut c = Client::ready(relay.smtp).await;
    let first = c
        .mail("joe@example.com", &["a@x.test", "b@x.test"], MESSAGE)
        .await;
    assert!(first.starts_with("250 "), "{first}");
    let second = c
        .mail("joe@example.com", &["c@x.test", "d@x.test"], MESSAGE)
        .await;
    assert_eq!(
        second,
        "454 4.7.0 Throttling failure: Maximum sending rate exceeded."
    );
    // One recipient still fits; the simulator's are free.
    let third = c.mail("joe@example.com", &["e@x.test"], MESSAGE).await;
    assert!(third.starts_with("250 "), "{third}");
    let free = c
        .mail(
            "joe@example.com",
            &["success@simulator.amazonses.com"],
            MESSAGE,
        )
        .await;
    assert!(free.starts_with("250 "), "{free}");
    // Over the API the same limit is TooManyRequestsException (429), which SDKs retry.
    let (status, body) = relay.send_email(&["f@x.test"]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["__type"], "TooManyRequestsException");
    assert_eq!(body["message"], "Maximum sending rate exceeded.");
    // A throttle is not an error of the client's: the session goes on, and a second
    // later the window has room again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = c
        .mail("joe@example.com", &["c@x.test", "d@x.test"], MESSAGE)
        .await;
    assert!(later.starts_with("250 "), "{later}");
    c.cmd("QUIT").await;
    upstream.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The simulator's message was accepted without the upstream (SPEC 8).
    let rcpts: Vec<Vec<String>> = upstream.messages().into_iter().map(|m| m.rcpt_to).collect();
    assert_eq!(
        rcpts,
        [
            vec!["a@x.test", "b@x.test"],
            vec!["e@x.test"],
            vec!["c@x.test", "d@x.test"],
        ]
    );
    relay.stop().await;
}

#[tokio::test]
async fn the_daily_quota_counts_recipients_and_refused_mail_gives_its_place_back() {
    let upstream = Capture::start(Script {
        rcpt: HashMap::from([(
            "refused@x.test".to_owned(),
            "550 5.1.1 No such user".to_owned(),
        )]),
        ..Script::default()
    })
    .await;
    let relay = Relay::start(&upstream, "[account]\nmax_24_hour_send = 3\n").await;
    let refused = smtp_send(&relay, &["refused@x.test"]).await;
    assert!(refused.starts_with("550 "), "{refused}");
    let two = smtp_send(&relay, &["a@x.test", "b@x.test"]).await;
    assert!(two.starts_with("250 "), "{two}");
    let (status, body) = relay.send_email(&["c@x.test"]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let over = smtp_send(&relay, &["d@x.test"]).await;
    assert_eq!(
        over,
        "454 4.7.0 Throttling failure: Daily message quota exceeded."
    );
    let (status, body) = relay.send_email(&["d@x.test"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["__type"], "LimitExceededException");
    assert_eq!(body["message"], "Daily message quota exceeded.");
    let account = relay.get_account().await;
    assert_eq!(account["ProductionAccessEnabled"], true);
    assert_eq!(
        account["SendQuota"],
        json!({ "Max24HourSend": 3.0, "MaxSendRate": -1.0, "SentLast24Hours": 3.0 })
    );
    relay.stop().await;
}

#[tokio::test]
async fn pausing_the_account_through_the_api_stops_every_message_and_is_kept_in_the_file() {
    let upstream = Capture::start(Script::default()).await;
    let relay = Relay::start(&upstream, "").await;
    let (status, body) = relay
        .call(
            reqwest::Method::PUT,
            "/v2/email/account/sending",
            json!({ "SendingEnabled": false }),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({})));
    assert!(
        relay.file().contains("[account]\nsending_enabled = false"),
        "{}",
        relay.file()
    );
    assert_eq!(relay.get_account().await["SendingEnabled"], false);
    let paused = smtp_send(&relay, &["a@x.test"]).await;
    assert_eq!(
        paused,
        "554 5.7.1 Message rejected: Sending paused for this account. For more information, \
         please check the inbox of the email address associated with your AWS account."
    );
    let (status, body) = relay.send_email(&["a@x.test"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["__type"], "SendingPausedException");
    assert_eq!(
        body["message"],
        "Sending paused for this account. For more information, please check the inbox of the \
         email address associated with your AWS account."
    );
    // The file loads as it is now, paused.
    let loaded = Config::load(&relay.dir.path().join("sesrelay.toml")).unwrap();
    assert!(!loaded.policy.account.sending_enabled);

    let (status, _) = relay
        .call(
            reqwest::Method::PUT,
            "/v2/email/account/sending",
            json!({ "SendingEnabled": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let resumed = smtp_send(&relay, &["a@x.test"]).await;
    assert!(resumed.starts_with("250 "), "{resumed}");
    assert_eq!(upstream.wait_for(1).await.len(), 1);
    relay.stop().await;
}

#[test]
fn the_shipped_config_has_a_production_account() {
    let config = Config::load(Path::new("config/sesrelay.toml")).unwrap();
    assert!(!config.policy.account.sandbox);
    assert!(config.policy.account.sending_enabled);
    assert_eq!(config.account.max_send_rate, 0.0);
    assert_eq!(config.account.max_24_hour_send, 0);
}
