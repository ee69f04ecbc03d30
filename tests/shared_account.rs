//! `[account.shared]` (SPEC 12): two `sesrelay` processes sharing the account's quotas and
//! SendEmail's idempotency through a real `redis-server` this test starts on a free port
//! (Debian's `redis-server`, which `.ci/run` installs).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::{RelayProcess, Running, free_addr, tool, wait_for_port};
use common::{Capture, Client, Script};
use reqwest::StatusCode;
use serde_json::{Value, json};

const IDENTITIES: &str = r#"
[configuration_sets.transactional]

[identities."example.com"]
verified = true
default_configuration_set = "transactional"
"#;

/// A redis-server of this test's own: no persistence, loopback only.
struct Redis {
    addr: SocketAddr,
    process: Running,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_on(free_addr())
    }

    fn start_on(addr: SocketAddr) -> Redis {
        let server = tool(
            "redis-server",
            &["/usr/bin/redis-server", "/usr/bin/valkey-server"],
            "redis-server",
        );
        let mut process = Running::spawn(
            Command::new(server)
                .args(["--port", &addr.port().to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null()),
            "redis-server",
        );
        wait_for_port(addr, "redis-server", &mut process);
        Redis { addr, process }
    }

    fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}

/// One replica: the real binary, SMTP and the v2 API on port 0, `[account]` as given with
/// `[account.shared]` on `redis`.
struct Replica {
    process: RelayProcess,
    http: reqwest::Client,
}

impl Replica {
    fn start(dir: &Path, name: &str, upstream: &Capture, account: &str, shared: &str) -> Replica {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nregion = \"us-east-1\"\n\n\
             [upstream]\nurl = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [account]\n{account}\n\n[account.shared]\n{shared}\n{IDENTITIES}",
            upstream.url()
        );
        let path = dir.join("sesrelay.toml");
        std::fs::write(&path, config).unwrap();
        Replica {
            process: RelayProcess::start(&path, &[]),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, to: &[&str]) -> String {
        self.send_from("joe@example.com", to).await
    }

    async fn send_from(&self, from: &str, to: &[&str]) -> String {
        let mut client = Client::ready(self.process.smtp_addr()).await;
        let content = format!(
            "From: {from}\r\nTo: {}\r\nSubject: s\r\n\r\nbody\r\n",
            to[0]
        );
        let reply = client.mail(from, to, content.as_bytes()).await;
        client.cmd("QUIT").await;
        reply
    }

    fn admin(&self) -> String {
        format!("http://{}", self.process.admin.unwrap())
    }

    async fn sent_last_24_hours(&self) -> f64 {
        let body: Value = self
            .http
            .get(format!("{}/v2/email/account", self.admin()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["SendQuota"]["SentLast24Hours"]
            .as_f64()
            .unwrap_or_else(|| panic!("{body}"))
    }

    /// send-email with `invocation` as `amz-sdk-invocation-id`: the status and the body.
    async fn send_email(&self, invocation: &str, subject: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v2/email/outbound-emails", self.admin()))
            .header("amz-sdk-invocation-id", invocation)
            .json(&json!({
                "FromEmailAddress": "joe@example.com",
                "Destination": { "ToAddresses": ["ann@customer.example"] },
                "Content": { "Simple": {
                    "Subject": { "Data": subject },
                    "Body": { "Text": { "Data": "body" } },
                } },
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `sesrelay_account_checks_total{path}` from `/metrics`.
    async fn account_checks(&self, path: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.admin()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = format!("sesrelay_account_checks_total{{path=\"{path}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    }

    async fn ready(&self) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/healthz/ready", self.admin()))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn shared(redis: &Redis, prefix: &str, on_unavailable: &str) -> String {
    format!(
        "redis_url = \"{}\"\nkey_prefix = \"{prefix}:\"\ntimeout = \"50ms\"\n\
         on_unavailable = \"{on_unavailable}\"\nreplicas = 2\n",
        redis.url()
    )
}

const THROTTLED_RATE: &str = "454 4.7.0 Throttling failure: Maximum sending rate exceeded.";
const THROTTLED_QUOTA: &str = "454 4.7.0 Throttling failure: Daily message quota exceeded.";

/// Ten one-recipient messages to `replica`, one after the other: the replies.
async fn burst(replica: &Replica) -> Vec<String> {
    let mut replies = Vec::new();
    for i in 0..10 {
        replies.push(replica.send(&[&format!("r{i}@customer.example")]).await);
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_across_two_replicas_stays_under_the_shared_rate() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let upstream = Capture::start(Script::default()).await;
    let shared = shared(&redis, "burst", "closed");
    let a = Replica::start(dir.path(), "a", &upstream, "max_send_rate = 5", &shared);
    let b = Replica::start(dir.path(), "b", &upstream, "max_send_rate = 5", &shared);

    // Twenty one-recipient messages, ten to each replica at once. Each replica alone
    // would let 5 go at once; together they may let 5 go, then one every 200 ms.
    let started = Instant::now();
    let (from_a, from_b) = tokio::join!(burst(&a), burst(&b));
    let elapsed = started.elapsed();
    let replies: Vec<&String> = from_a.iter().chain(&from_b).collect();
    let accepted = replies.iter().filter(|r| r.starts_with("250 ")).count();
    for reply in &replies {
        assert!(
            reply.starts_with("250 2.0.0 Ok ") || reply.as_str() == THROTTLED_RATE,
            "{reply}"
        );
    }
    let allowed = 5 + (elapsed.as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (5..=allowed).contains(&accepted),
        "{accepted} accepted in {elapsed:?} (at most {allowed}): {replies:?}"
    );
    assert_eq!(upstream.messages().len(), accepted);
    assert_eq!(a.sent_last_24_hours().await, accepted as f64);
    // Every one of the twenty was checked on Redis.
    assert_eq!(
        a.account_checks("shared").await + b.account_checks("shared").await,
        20.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_across_both_stay_under_the_shared_quota() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let mut script = Script::default();
    script.rcpt.insert(
        "gone@customer.example".to_owned(),
        "550 5.1.1 <gone@customer.example>: Recipient address rejected".to_owned(),
    );
    let upstream = Capture::start(script).await;
    let shared = shared(&redis, "quota", "closed");
    let a = Replica::start(dir.path(), "a", &upstream, "max_24_hour_send = 6", &shared);
    let b = Replica::start(dir.path(), "b", &upstream, "max_24_hour_send = 6", &shared);

    // A policy rejection is not counted; a message the upstream refuses is refunded.
    let rejected = a
        .send_from("x@unverified.example", &["ann@customer.example"])
        .await;
    assert!(
        rejected.starts_with("554 5.7.1 Message rejected"),
        "{rejected}"
    );
    let refused = b
        .send(&["ann@customer.example", "gone@customer.example"])
        .await;
    assert!(refused.starts_with("550 5.1.1"), "{refused}");
    assert_eq!(a.sent_last_24_hours().await, 0.0);
    assert_eq!(b.sent_last_24_hours().await, 0.0);

    // Two recipients a message, alternating replicas: three messages fill the quota of 6.
    let pair = ["p@customer.example", "q@customer.example"];
    for replica in [&a, &b, &a] {
        let reply = replica.send(&pair).await;
        assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    }
    assert_eq!(b.send(&pair).await, THROTTLED_QUOTA);
    assert_eq!(a.send(&["one@customer.example"]).await, THROTTLED_QUOTA);
    assert_eq!(a.sent_last_24_hours().await, 6.0);
    assert_eq!(b.sent_last_24_hours().await, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invocation_id_sent_to_both_replicas_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    // The first delivery is slow, so that the second replica's attempt arrives while the
    // first is still sending.
    let upstream = Capture::start(Script {
        slow_first_reply: Some(Duration::from_millis(700)),
        ..Script::default()
    })
    .await;
    let shared = shared(&redis, "idem", "closed");
    let a = Replica::start(dir.path(), "a", &upstream, "", &shared);
    let b = Replica::start(dir.path(), "b", &upstream, "", &shared);

    let invocation = "7c2f0b4e-3a41-4f5e-9a51-0c7c2d1e9b10";
    let first = a.send_email(invocation, "once");
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.send_email(invocation, "once").await
    };
    let ((status_a, body_a), (status_b, body_b)) = tokio::join!(first, second);
    assert_eq!(status_a, StatusCode::OK, "{body_a}");
    assert_eq!(status_b, StatusCode::OK, "{body_b}");
    assert_eq!(body_a["MessageId"], body_b["MessageId"]);
    // Later, on either replica: the same answer, still one delivery.
    let (_, again) = b.send_email(invocation, "once").await;
    assert_eq!(again["MessageId"], body_a["MessageId"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.messages().len(), 1);

    // The same id with another body is another request: refused.
    let (status, body) = a.send_email(invocation, "another subject").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(upstream.messages().len(), 1);
}

/// Sends until a reply starts with `prefix` (at most `within`); the replies seen.
async fn send_until(replica: &Replica, prefix: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let reply = replica.send(&["ann@customer.example"]).await;
        let done = reply.starts_with(prefix);
        seen.push(reply);
        if done {
            return seen;
        }
        assert!(Instant::now() < deadline, "never {prefix}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_closed_refuses_with_451_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let upstream = Capture::start(Script::default()).await;
    let shared = shared(&redis, "closed", "closed");
    let a = Replica::start(dir.path(), "a", &upstream, "max_send_rate = 100", &shared);
    assert!(a.send(&["ann@customer.example"]).await.starts_with("250 "));

    redis.process.signal("STOP");
    let started = Instant::now();
    let reply = a.send(&["ann@customer.example"]).await;
    assert_eq!(
        reply,
        "451 4.3.0 The account's sending quotas cannot be checked now, try again later"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = a.ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(a.account_checks("closed").await, 1.0);

    redis.process.signal("CONT");
    send_until(&a, "250 ", Duration::from_secs(10)).await;
    let (status, body) = a.ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_local_keeps_the_local_share_and_a_restart_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start();
    let upstream = Capture::start(Script::default()).await;
    let shared = shared(&redis, "local", "local");
    // 4 a second for the account: 2 a second for each of the 2 replicas on their own.
    let a = Replica::start(dir.path(), "a", &upstream, "max_send_rate = 4", &shared);
    let b = Replica::start(dir.path(), "b", &upstream, "max_send_rate = 4", &shared);
    assert!(a.send(&["ann@customer.example"]).await.starts_with("250 "));
    assert_eq!(b.sent_last_24_hours().await, 1.0);

    redis.process.signal("STOP");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut replies = Vec::new();
    for i in 0..5 {
        replies.push(a.send(&[&format!("s{i}@customer.example")]).await);
    }
    let accepted = replies.iter().filter(|r| r.starts_with("250 ")).count();
    assert_eq!(accepted, 2, "the local share is 2 a second: {replies:?}");
    assert_eq!(a.account_checks("local_share").await, 5.0);
    assert!(replies.iter().any(|r| r == THROTTLED_RATE), "{replies:?}");
    let (status, body) = a.ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shared_account"], "degraded", "{body}");

    // Redis gone and a new one on the same address: picked up without a restart. The new
    // Redis starts from nothing; what it counts is seen by both replicas.
    redis.process.signal("CONT");
    redis.kill();
    let _redis = Redis::start_on(redis.addr);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let reply = a.send(&["late@customer.example"]).await;
        if reply.starts_with("250 ") && b.sent_last_24_hours().await >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis never picked up again: {reply}"
        );
    }
    let (status, body) = a.ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shared_account"], "shared", "{body}");
}
