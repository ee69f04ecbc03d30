//! What was sent (SPEC 10) over real sockets: the capture of every outcome, the
//! Mailpit-shaped `/api/v1`, Server-Sent Events and LocalStack's `/_aws/ses`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Capture, Client, Script, standard_config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sesrelay::config::Config;
use sesrelay::server::Server;
use tokio::sync::watch;

struct Setup {
    _dir: tempfile::TempDir,
    smtp: SocketAddr,
    base: String,
    http: reqwest::Client,
    upstream: Capture,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Setup {
    /// The standard identities, an admin listener, the capturing upstream answering as
    /// `script`, and `extra` TOML appended.
    async fn start(script: Script, extra: &str) -> Setup {
        Setup::start_with(script, extra, &|_| None).await
    }

    async fn start_with(
        script: Script,
        extra: &str,
        secrets: &dyn Fn(&str) -> Option<String>,
    ) -> Setup {
        let upstream = Capture::start(script).await;
        let text = format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
            standard_config(&upstream.url()).replacen(
                "[server]",
                "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_timeout = \"2s\"",
                1
            )
        );
        let dir = tempfile::tempdir().unwrap();
        let text = text.replace("TEMPDIR", &dir.path().display().to_string());
        let config = Config::parse(&text, &dir.path().join("sesrelay.toml"))
            .expect("valid config")
            .resolve_secrets(secrets)
            .expect("secrets");
        let server = Server::bind(config).await.expect("binds");
        let base = format!("http://{}", server.admin_addr().expect("admin"));
        let smtp = server.local_addrs()[0];
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        Setup {
            _dir: dir,
            smtp,
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            upstream,
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

    async fn send(&self, from: &str, to: &[&str], content: &str) -> String {
        let mut client = Client::ready(self.smtp).await;
        client.mail(from, to, content.as_bytes()).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn get_text(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (resp.status(), resp.bytes().await.unwrap().to_vec())
    }
}

fn mail(from: &str, to: &str, subject: &str, extra: &str) -> String {
    format!(
        "From: Sender <{from}>\r\nTo: {to}\r\nCc: Copy <cc@example.net>\r\nSubject: {subject}\r\n\
         Message-ID: <m1@example.com>\r\n{extra}\r\nHello there,\r\nthe body.\r\n"
    )
}

fn id_of(reply: &str) -> String {
    assert!(reply.starts_with("250 "), "{reply}");
    reply.rsplit(' ').next().unwrap().to_owned()
}

#[tokio::test]
async fn every_outcome_is_captured_with_its_set_and_source() {
    let s = Setup::start(Script::default(), "").await;
    // 1. The header names the set.
    let r1 = s
        .send(
            "amy@example.com",
            &["to@example.net"],
            &mail(
                "amy@example.com",
                "To One <to@example.net>",
                "by header",
                "X-SES-CONFIGURATION-SET: marketing\r\nX-SES-MESSAGE-TAGS: campaign=spring\r\n",
            ),
        )
        .await;
    let id1 = id_of(&r1);
    // 2. The address's default.
    let id2 = id_of(
        &s.send(
            "joe@example.com",
            &["to@example.net"],
            &mail("joe@example.com", "to@example.net", "address default", ""),
        )
        .await,
    );
    // 3. The domain's default.
    let id3 = id_of(
        &s.send(
            "amy@example.com",
            &["to@example.net"],
            &mail("amy@example.com", "to@example.net", "domain default", ""),
        )
        .await,
    );
    // 4. Rejected: not verified.
    let rejected = s
        .send(
            "x@unverified.test",
            &["to@example.net"],
            &mail("x@unverified.test", "to@example.net", "rejected", ""),
        )
        .await;
    assert!(rejected.starts_with("554 5.7.1"), "{rejected}");
    let upstream = s.upstream.wait_for(3).await;

    let (status, list) = s.get("/api/v1/messages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 4);
    assert_eq!(list["count"], 4);
    assert_eq!(list["start"], 0);
    assert_eq!(list["unread"], 0);
    let messages = list["messages"].as_array().unwrap();
    // Newest first.
    assert_eq!(messages[0]["SES"]["Outcome"], "rejected");
    assert_eq!(messages[0]["SES"]["Reply"], rejected);
    assert_eq!(messages[0]["SES"]["ConfigurationSet"], Value::Null);
    assert_eq!(messages[0]["SES"]["ConfigurationSetSource"], "none");
    assert_eq!(messages[1]["ID"], id3.as_str());
    assert_eq!(messages[1]["SES"]["ConfigurationSet"], "transactional");
    assert_eq!(
        messages[1]["SES"]["ConfigurationSetSource"],
        "domain-default"
    );
    assert_eq!(messages[1]["SES"]["Identity"], "example.com");
    assert_eq!(messages[2]["ID"], id2.as_str());
    assert_eq!(messages[2]["SES"]["ConfigurationSet"], "marketing");
    assert_eq!(
        messages[2]["SES"]["ConfigurationSetSource"],
        "address-default"
    );
    assert_eq!(messages[2]["SES"]["Identity"], "joe@example.com");
    let first = &messages[3];
    assert_eq!(first["ID"], id1.as_str());
    assert_eq!(first["MessageID"], "m1@example.com");
    assert_eq!(first["Read"], false);
    assert_eq!(
        first["From"],
        json!({"Name": "Sender", "Address": "amy@example.com"})
    );
    assert_eq!(
        first["To"],
        json!([{"Name": "To One", "Address": "to@example.net"}])
    );
    assert_eq!(
        first["Cc"],
        json!([{"Name": "Copy", "Address": "cc@example.net"}])
    );
    assert_eq!(first["Subject"], "by header");
    assert_eq!(first["Snippet"], "Hello there, the body.");
    let created = first["Created"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{created}"
    );
    assert!(first["Size"].as_u64().unwrap() > 100);
    let ses = &first["SES"];
    assert_eq!(ses["Outcome"], "forwarded");
    assert_eq!(ses["Reply"], r1);
    assert_eq!(ses["ConfigurationSet"], "marketing");
    assert_eq!(ses["ConfigurationSetSource"], "header");
    assert_eq!(ses["Identity"], Value::Null);
    assert_eq!(ses["Tags"], json!({"campaign": "spring", "team": "growth"}));
    assert_eq!(ses["Protocol"], "ESMTP");
    assert_eq!(ses["Client"], "127.0.0.1");
    assert_eq!(ses["MailFrom"], "amy@example.com");
    assert_eq!(ses["RcptTo"], json!(["to@example.net"]));

    // One message: headers, text, events; `latest`.
    let (status, one) = s.get(&format!("/api/v1/message/{id1}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["Text"], "Hello there,\r\nthe body.\r\n");
    assert_eq!(one["HTML"], "");
    assert_eq!(one["Headers"]["Subject"], json!(["by header"]));
    assert_eq!(
        one["Headers"]["X-SES-CONFIGURATION-SET"],
        json!(["marketing"])
    );
    assert_eq!(
        one["SES"]["Events"],
        json!([]),
        "marketing has no destinations"
    );
    let (_, latest) = s.get("/api/v1/message/latest").await;
    assert_eq!(latest["SES"]["Outcome"], "rejected");
    let (status, headers) = s.get(&format!("/api/v1/message/{id2}/headers")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["From"], json!(["Sender <joe@example.com>"]));

    // Raw: as the upstream received it (forwarded), as received (rejected).
    let (status, raw) = s.get_text(&format!("/api/v1/message/{id1}/raw")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        raw, upstream[0].content,
        "raw bytes are what the upstream got"
    );
    let (_, raw3) = s.get_text(&format!("/api/v1/message/{id3}/raw")).await;
    assert_eq!(raw3, upstream[2].content);
    let rejected_id = messages[0]["ID"].as_str().unwrap();
    let (_, raw_rejected) = s
        .get_text(&format!("/api/v1/message/{rejected_id}/raw"))
        .await;
    assert_eq!(
        raw_rejected,
        mail("x@unverified.test", "to@example.net", "rejected", "").as_bytes()
    );
    let (status, _) = s.get("/api/v1/message/nosuch").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn upstream_refusals_are_captured() {
    let s = Setup::start(
        Script {
            data: "554 5.7.1 go away".into(),
            ..Script::default()
        },
        "",
    )
    .await;
    let refused = s
        .send(
            "joe@example.com",
            &["to@example.net"],
            &mail("joe@example.com", "to@example.net", "refused", ""),
        )
        .await;
    assert!(refused.starts_with("554"), "{refused}");
    let (_, one) = s.get("/api/v1/message/latest").await;
    assert_eq!(one["SES"]["Outcome"], "upstream-refused");
    assert_eq!(one["SES"]["Reply"], refused);
    assert_eq!(one["SES"]["ConfigurationSet"], "marketing");
    s.stop().await;
}

/// A message the account's quota throttles is captured as rejected, with its 454 and the
/// set it resolved to, and it is not forwarded.
#[tokio::test]
async fn throttled_messages_are_captured_as_rejected() {
    let s = Setup::start(Script::default(), "[account]\nmax_24_hour_send = 1\n").await;
    let first = s
        .send(
            "joe@example.com",
            &["to@example.net"],
            &mail("joe@example.com", "to@example.net", "first", ""),
        )
        .await;
    id_of(&first);
    let throttled = s
        .send(
            "joe@example.com",
            &["to@example.net"],
            &mail("joe@example.com", "to@example.net", "second", ""),
        )
        .await;
    assert_eq!(
        throttled,
        "454 4.7.0 Throttling failure: Daily message quota exceeded."
    );
    let (_, one) = s.get("/api/v1/message/latest").await;
    assert_eq!(one["Subject"], "second");
    assert_eq!(one["SES"]["Outcome"], "rejected");
    assert_eq!(one["SES"]["Reply"], throttled);
    assert_eq!(one["SES"]["ConfigurationSet"], "marketing");
    assert_eq!(one["SES"]["ConfigurationSetSource"], "address-default");
    assert_eq!(s.upstream.messages().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn search_and_delete() {
    let s = Setup::start(Script::default(), "").await;
    let a = id_of(
        &s.send(
            "joe@example.com",
            &["alice@example.net"],
            &mail("joe@example.com", "alice@example.net", "big news today", ""),
        )
        .await,
    );
    let b = id_of(
        &s.send(
            "amy@example.com",
            &["bob@example.net"],
            &mail("amy@example.com", "bob@example.net", "small talk", ""),
        )
        .await,
    );
    s.send(
        "x@unverified.test",
        &["bob@example.net"],
        &mail("x@unverified.test", "bob@example.net", "nope", ""),
    )
    .await;
    let ids = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["ID"].as_str().unwrap().to_owned())
            .collect()
    };
    let search = |q: &str| {
        format!(
            "/api/v1/search?query={}",
            percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let (_, r) = s.get(&search("from:joe")).await;
    assert_eq!(ids(&r), std::slice::from_ref(&a));
    assert_eq!(r["total"], 1);
    let (_, r) = s.get(&search("to:bob@example.net outcome:forwarded")).await;
    assert_eq!(ids(&r), std::slice::from_ref(&b));
    let (_, r) = s.get(&search("subject:\"big news\"")).await;
    assert_eq!(ids(&r), std::slice::from_ref(&a));
    let (_, r) = s.get(&search("set:transactional")).await;
    assert_eq!(ids(&r), std::slice::from_ref(&b));
    let (_, r) = s.get(&search("outcome:rejected")).await;
    assert_eq!(r["total"], 1);
    let (_, r) = s.get(&search("talk")).await;
    assert_eq!(ids(&r), std::slice::from_ref(&b));
    let (_, r) = s.get(&search("-outcome:rejected")).await;
    assert_eq!(r["total"], 2);
    let (_, r) = s.get("/api/v1/messages?start=1&limit=1").await;
    assert_eq!(ids(&r), std::slice::from_ref(&b));
    assert_eq!(r["total"], 3);
    assert_eq!(r["start"], 1);

    // Delete some, then all.
    let resp = s
        .http
        .delete(format!("{}/api/v1/messages", s.base))
        .json(&json!({"IDs": [a]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, r) = s.get("/api/v1/messages").await;
    assert_eq!(r["total"], 2);
    assert!(!ids(&r).contains(&a));
    let resp = s
        .http
        .delete(format!("{}/api/v1/messages", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, r) = s.get("/api/v1/messages").await;
    assert_eq!(r["total"], 0);

    // DELETE keeps the listener's Origin and Host rules.
    let resp = s
        .http
        .delete(format!("{}/api/v1/messages", s.base))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = s
        .http
        .delete(format!("{}/_aws/ses", s.base))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = s
        .http
        .get(format!("{}/api/v1/messages", s.base))
        .header("Host", "rebound.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    s.stop().await;
}

#[tokio::test]
async fn the_store_is_bounded() {
    let body = mail("joe@example.com", "to@example.net", "bounded", "");
    // Room for two bodies of about this size, three records.
    let s = Setup::start(
        Script::default(),
        &format!(
            "[capture]\nmax_messages = 3\nmax_bytes = {}\n",
            2 * (body.len() + 400)
        ),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(id_of(
            &s.send("joe@example.com", &["to@example.net"], &body).await,
        ));
    }
    let (_, r) = s.get("/api/v1/messages").await;
    assert_eq!(r["total"], 3, "the oldest record is dropped");
    let (status, _) = s.get(&format!("/api/v1/message/{}", ids[0])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The second message's record stays; its body went first.
    let (status, one) = s.get(&format!("/api/v1/message/{}", ids[1])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["SES"]["RawKept"], false);
    let (status, _) = s.get_text(&format!("/api/v1/message/{}/raw", ids[1])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an evicted body is 404");
    for id in &ids[2..] {
        let (status, _) = s.get_text(&format!("/api/v1/message/{id}/raw")).await;
        assert_eq!(status, StatusCode::OK);
    }
    s.stop().await;

    // max_messages = 0: capture off.
    let s = Setup::start(Script::default(), "[capture]\nmax_messages = 0\n").await;
    id_of(&s.send("joe@example.com", &["to@example.net"], &body).await);
    let (_, r) = s.get("/api/v1/messages").await;
    assert_eq!(r["total"], 0);
    s.stop().await;
}

/// Reads SSE frames from `resp` until one whose `id:` is `id`, within `within`.
async fn sse_until(resp: &mut reqwest::Response, buffer: &mut String, id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if buffer.contains(&format!("id: {id}\n")) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no event for {id} within {within:?}; got {buffer:?}"))
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn server_sent_events_arrive_and_resume() {
    let s = Setup::start(Script::default(), "").await;
    let client = reqwest::Client::new();
    let mut resp = client
        .get(format!("{}/api/v1/events", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = mail("joe@example.com", "to@example.net", "live", "");
    let first = id_of(&s.send("joe@example.com", &["to@example.net"], &body).await);
    let replied = Instant::now();
    let mut buffer = String::new();
    sse_until(&mut resp, &mut buffer, &first, Duration::from_secs(1)).await;
    assert!(replied.elapsed() < Duration::from_secs(1));
    assert!(buffer.contains("event: message\n"), "{buffer}");
    let data = buffer
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let item: Value = serde_json::from_str(data).unwrap();
    assert_eq!(item["ID"], first.as_str());
    assert_eq!(item["SES"]["ConfigurationSetSource"], "address-default");
    drop(resp);

    // Two more while no one listens; a resume from the first replays both, in order.
    let second = id_of(&s.send("joe@example.com", &["to@example.net"], &body).await);
    let third = id_of(&s.send("joe@example.com", &["to@example.net"], &body).await);
    let mut resp = client
        .get(format!("{}/api/v1/events", s.base))
        .header("Last-Event-ID", &first)
        .send()
        .await
        .unwrap();
    let mut buffer = String::new();
    sse_until(&mut resp, &mut buffer, &third, Duration::from_secs(2)).await;
    let at_second = buffer
        .find(&format!("id: {second}\n"))
        .expect("second replayed");
    let at_third = buffer.find(&format!("id: {third}\n")).unwrap();
    assert!(at_second < at_third);
    assert!(!buffer.contains(&format!("id: {first}\n")));
    s.stop().await;
}

#[tokio::test]
async fn localstack_retrospection() {
    let s = Setup::start(Script::default(), "").await;
    let smtp_id = id_of(
        &s.send(
            "joe@example.com",
            &["to@example.net"],
            &mail("joe@example.com", "to@example.net", "over smtp", ""),
        )
        .await,
    );
    // A Simple send through the API, with a set named beside it.
    let resp = s
        .http
        .post(format!("{}/v2/email/outbound-emails", s.base))
        .json(&json!({
            "FromEmailAddress": "amy@example.com",
            "Destination": {"ToAddresses": ["to@example.net"], "CcAddresses": ["cc@example.net"]},
            "ConfigurationSetName": "marketing",
            "Content": {"Simple": {
                "Subject": {"Data": "over the api"},
                "Body": {"Text": {"Data": "plain words"}, "Html": {"Data": "<p>html words</p>"}}
            }}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let api_id = resp.json::<Value>().await.unwrap()["MessageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let upstream = s.upstream.wait_for(2).await;

    let (_, one) = s.get(&format!("/api/v1/message/{api_id}")).await;
    assert_eq!(one["SES"]["ConfigurationSetSource"], "api-parameter");
    assert_eq!(one["SES"]["ConfigurationSet"], "marketing");
    assert_eq!(one["SES"]["Protocol"], "HTTP");
    assert_eq!(one["Text"], "plain words");
    assert_eq!(one["HTML"], "<p>html words</p>");

    let (status, all) = s.get("/_aws/ses").await;
    assert_eq!(status, StatusCode::OK);
    let messages = all["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    let smtp = &messages[0];
    let keys: Vec<&str> = smtp
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["Id", "RawData", "Region", "Source", "Timestamp"]);
    assert_eq!(smtp["Id"], smtp_id.as_str());
    assert_eq!(smtp["Region"], "us-east-1");
    assert_eq!(smtp["Source"], "joe@example.com");
    assert_eq!(
        smtp["RawData"].as_str().unwrap().as_bytes(),
        upstream[0].content.as_slice()
    );
    let stamp = smtp["Timestamp"].as_str().unwrap();
    assert_eq!(stamp.len(), 19, "{stamp}");
    assert_eq!(&stamp[10..11], "T");
    assert!(!stamp.ends_with('Z'));
    let simple = &messages[1];
    assert_eq!(
        simple,
        &json!({
            "Id": api_id,
            "Region": "us-east-1",
            "Timestamp": simple["Timestamp"],
            "Source": "amy@example.com",
            "Destination": {
                "ToAddresses": ["to@example.net"],
                "CcAddresses": ["cc@example.net"],
                "BccAddresses": []
            },
            "Subject": "over the api",
            "Body": {"text_part": "plain words", "html_part": "<p>html words</p>"}
        })
    );

    // Filters.
    let (_, by_id) = s.get(&format!("/_aws/ses?id={api_id}")).await;
    assert_eq!(by_id["messages"].as_array().unwrap().len(), 1);
    assert_eq!(by_id["messages"][0]["Id"], api_id.as_str());
    let (_, by_email) = s.get("/_aws/ses?email=joe@example.com").await;
    assert_eq!(by_email["messages"].as_array().unwrap().len(), 1);
    assert_eq!(by_email["messages"][0]["Id"], smtp_id.as_str());
    let (_, none) = s.get("/_aws/ses?email=nobody@example.com").await;
    assert_eq!(none["messages"], json!([]));

    // DELETE one, then all: 204.
    let resp = s
        .http
        .delete(format!("{}/_aws/ses?id={smtp_id}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (_, left) = s.get("/_aws/ses").await;
    assert_eq!(left["messages"].as_array().unwrap().len(), 1);
    let resp = s
        .http
        .delete(format!("{}/_aws/ses", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (_, left) = s.get("/_aws/ses").await;
    assert_eq!(left["messages"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn basic_auth_with_access_keys() {
    let hash = sesrelay::password::hash("s3cret").unwrap();
    let s = Setup::start_with(
        Script::default(),
        &format!(
            "access_keys = [{{ id = \"AKIDTEST\", secret_env = \"KEY\" }}]\n\
             ui_users = [{{ username = \"dev\", password_hash = \"{hash}\" }}]\n"
        ),
        &|var| (var == "KEY").then(|| "secretkey".to_owned()),
    )
    .await;
    for path in ["/api/v1/messages", "/_aws/ses", "/api/v1/events"] {
        let resp = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Basic realm=\"sesrelay\""
        );
    }
    let resp = s
        .http
        .get(format!("{}/api/v1/messages", s.base))
        .basic_auth("dev", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = s
        .http
        .get(format!("{}/api/v1/messages", s.base))
        .basic_auth("nobody", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = s
        .http
        .get(format!("{}/api/v1/messages", s.base))
        .basic_auth("dev", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = s
        .http
        .delete(format!("{}/_aws/ses", s.base))
        .basic_auth("dev", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    s.stop().await;

    // Access keys and no ui_users: nobody.
    let s = Setup::start_with(
        Script::default(),
        "access_keys = [{ id = \"AKIDTEST\", secret_env = \"KEY\" }]\n",
        &|var| (var == "KEY").then(|| "secretkey".to_owned()),
    )
    .await;
    let resp = s
        .http
        .get(format!("{}/api/v1/messages", s.base))
        .basic_auth("dev", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn the_events_published_for_a_message_are_in_its_record() {
    let s = Setup::start(
        Script::default(),
        "[events]\ndir = \"TEMPDIR/events\"\n\
         [configuration_sets.marketing.event_destinations.to-app]\n\
         enabled = true\n\
         matching_event_types = [\"SEND\", \"DELIVERY\"]\n\
         sns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:app\"\n",
    )
    .await;
    let id = id_of(
        &s.send(
            "joe@example.com",
            &["to@example.net"],
            &mail("joe@example.com", "to@example.net", "with events", ""),
        )
        .await,
    );
    let (_, one) = s.get(&format!("/api/v1/message/{id}")).await;
    let events = one["SES"]["Events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["Type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Send", "Delivery"]);
    assert!(
        events
            .iter()
            .all(|e| e["Destination"] == "marketing/to-app")
    );
    assert!(
        events[1]["Summary"]
            .as_str()
            .unwrap()
            .starts_with("to@example.net: 250"),
        "{events:?}"
    );
    // A set without destinations publishes nothing, and records none.
    let other = id_of(
        &s.send(
            "amy@example.com",
            &["to@example.net"],
            &mail("amy@example.com", "to@example.net", "no events", ""),
        )
        .await,
    );
    let (_, one) = s.get(&format!("/api/v1/message/{other}")).await;
    assert_eq!(one["SES"]["Events"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn served_with_the_api_off() {
    let s = Setup::start(Script::default(), "api = false\n").await;
    id_of(
        &s.send(
            "joe@example.com",
            &["to@example.net"],
            &mail("joe@example.com", "to@example.net", "api off", ""),
        )
        .await,
    );
    let (status, list) = s.get("/api/v1/messages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 1);
    let (status, _) = s.get("/_aws/ses").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.get("/v2/email/account").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}
