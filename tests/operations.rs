//! Operating sesrelay: readiness and liveness, the drain on SIGTERM, `/metrics` as
//! Prometheus text and its counters, `[admin] api = false`, and the one JSON log line each
//! message gets. Over real sockets on 127.0.0.1; the real binary where signals or the log
//! format are the point.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::peers::RelayProcess;
use common::{Capture, Client, Script, header, standard_config};
use serde_json::Value;
use sesrelay::config::Config;
use sesrelay::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a state change (readiness, a gauge) may take to show before the test fails.
const SETTLE: Duration = Duration::from_secs(10);

/// A relay in this process with its admin listener, on a config file in a temporary
/// directory.
struct Running {
    smtp: SocketAddr,
    admin: SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// `config` is TOML without `server.listen` and `[admin]`; `admin` is what goes into
    /// `[admin]` besides `listen`.
    async fn start(config: &str, admin: &str) -> Running {
        Running::start_with_secrets(config, admin, &|_| None).await
    }

    async fn start_with_secrets(
        config: &str,
        admin: &str,
        secrets: &dyn Fn(&str) -> Option<String>,
    ) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let server = "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_timeout = \"2s\"\n";
        let text = if config.contains("[server]\n") {
            config.replacen("[server]\n", server, 1)
        } else {
            format!("{server}{config}")
        };
        let text = format!("{text}\n[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n");
        let path = dir.path().join("sesrelay.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load_with(&path, secrets).expect("valid config");
        let server = Server::bind(config).await.expect("binds");
        let smtp = server.local_addrs()[0];
        let admin = server.admin_addr().expect("an admin listener");
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        Running {
            smtp,
            admin,
            stop,
            done,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.done)
            .await
            .expect("stops within 10 s")
            .unwrap();
    }
}

/// A GET on the admin listener: the status and the body.
async fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    get_with(admin, path, &[]).await
}

async fn get_with(admin: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut request = client.get(format!("http://{admin}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// GETs `path` until its status is `status` (at most [`SETTLE`]); the last body.
async fn wait_for_status(admin: SocketAddr, path: &str, status: u16) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (got, body) = get(admin, path).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {got} {body}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request written by hand (any Host, no signature), with `Connection: close`: the
/// status and the body.
async fn raw_request(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::AsyncReadExt as _;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

// ---------------------------------------------------------------------------------------
// Readiness.
// ---------------------------------------------------------------------------------------

/// A small SMTP server that answers the probe's dialogue (greeting, EHLO, QUIT); the
/// returned task owns the listener, so aborting it closes the port.
fn answering_upstream(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                if stream.write_all(b"220 upstream ESMTP\r\n").await.is_err() {
                    return;
                }
                let mut line = String::new();
                loop {
                    line.clear();
                    match stream.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("QUIT") {
                        b"221 2.0.0 Bye\r\n"
                    } else if upper.starts_with("EHLO") {
                        b"250-upstream\r\n250 8BITMIME\r\n"
                    } else {
                        b"250 2.0.0 Ok\r\n"
                    };
                    if stream.write_all(reply).await.is_err() || upper.starts_with("QUIT") {
                        return;
                    }
                }
            });
        }
    })
}

#[tokio::test]
async fn readiness_follows_the_upstream_away_and_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = answering_upstream(listener);
    let relay = Running::start(&standard_config(&format!("smtp://{addr}?tls=none")), "").await;

    let (status, body) = get(relay.admin, "/healthz/ready").await;
    assert_eq!(
        (status, json(&body)),
        (200, serde_json::json!({"status": "ready"}))
    );
    let (status, body) = get(relay.admin, "/healthz/live").await;
    assert_eq!(
        (status, json(&body)),
        (200, serde_json::json!({"status": "live"}))
    );

    // The upstream goes away: the port is closed.
    upstream.abort();
    let _ = upstream.await;
    let body = json(&wait_for_status(relay.admin, "/healthz/ready", 503).await);
    assert_eq!(body["status"], "upstream unavailable", "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(&addr.to_string()), "{body}");
    // Liveness does not depend on the upstream.
    assert_eq!(get(relay.admin, "/healthz/live").await.0, 200);

    // It comes back on the same port.
    let listener = TcpListener::bind(addr).await.expect("the port again");
    let upstream = answering_upstream(listener);
    let body = json(&wait_for_status(relay.admin, "/healthz/ready", 200).await);
    assert_eq!(body, serde_json::json!({"status": "ready"}));
    upstream.abort();
    relay.stop().await;
}

/// `dir:`: ready while a file can be created in the directory.
#[tokio::test]
async fn readiness_of_a_dir_upstream_follows_the_directory() {
    let out = tempfile::tempdir().unwrap();
    let outbox = out.path().join("outbox");
    let relay = Running::start(&standard_config(&format!("dir:{}", outbox.display())), "").await;
    assert_eq!(get(relay.admin, "/healthz/ready").await.0, 200);
    assert_eq!(
        std::fs::read_dir(&outbox).unwrap().count(),
        0,
        "the probe leaves nothing behind"
    );

    // A file where the directory was: nothing can be written there.
    std::fs::remove_dir(&outbox).unwrap();
    std::fs::write(&outbox, b"not a directory").unwrap();
    let body = json(&wait_for_status(relay.admin, "/healthz/ready", 503).await);
    assert_eq!(body["status"], "upstream unavailable", "{body}");

    std::fs::remove_file(&outbox).unwrap();
    std::fs::create_dir(&outbox).unwrap();
    wait_for_status(relay.admin, "/healthz/ready", 200).await;
    relay.stop().await;
}

/// SIGTERM while a client is in DATA: readiness turns 503 at once, liveness stays 200,
/// the message finishes and reaches the upstream, and the process exits 0.
#[tokio::test]
async fn sigterm_during_data_lets_the_message_finish_while_readiness_is_503() {
    let upstream = Capture::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = standard_config(&upstream.url()).replacen(
        "[server]\n",
        "[server]\nshutdown_timeout = \"20s\"\n",
        1,
    ) + "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let mut relay = RelayProcess::start_in(dir.path(), &config);
    let admin = relay.admin.expect("an admin listener");
    assert_eq!(get(admin, "/healthz/ready").await.0, 200);

    let mut c = Client::ready(relay.smtp_addr()).await;
    assert_eq!(c.cmd("MAIL FROM:<joe@example.com>").await, "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<a@example.net>").await, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"From: joe@example.com\r\nSubject: drain\r\n\r\nfirst half\r\n")
        .await;

    relay.process.signal("TERM");
    let body = json(&wait_for_status(admin, "/healthz/ready", 503).await);
    assert_eq!(body, serde_json::json!({"status": "draining"}));
    let (status, _) = get(admin, "/healthz/live").await;
    assert_eq!(status, 200, "live while draining");
    // Still draining, whatever the upstream's state.
    assert_eq!(get(admin, "/healthz/ready").await.0, 503);

    c.send(b"second half\r\n.\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let got = upstream.wait_for(1).await;
    assert!(
        got[0].content.ends_with(b"first half\r\nsecond half\r\n"),
        "{}",
        String::from_utf8_lossy(&got[0].content)
    );
    // The session's next command is answered 421 4.3.2.
    let next = c.cmd("NOOP").await;
    assert!(next.starts_with("421 4.3.2"), "{next}");

    let (status, relay) = tokio::task::spawn_blocking(move || {
        let status = relay.process.wait_exit(Duration::from_secs(10));
        (status, relay)
    })
    .await
    .unwrap();
    let status = status.unwrap_or_else(|| panic!("still running: {}", relay.log()));
    assert!(status.success(), "{status}: {}", relay.log());
}

// ---------------------------------------------------------------------------------------
// Health and metrics outside the Host and signature checks; `api = false`.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn probes_and_metrics_need_neither_a_known_host_nor_a_signature() {
    let out = tempfile::tempdir().unwrap();
    let relay = Running::start_with_secrets(
        &standard_config(&format!("dir:{}", out.path().display())),
        "access_keys = [{ id = \"AKIDTEST\", secret_env = \"SECRET\" }]",
        &|name| (name == "SECRET").then(|| "s3cret".to_owned()),
    )
    .await;
    let admin = relay.admin;
    // As a kubelet or Prometheus asks: the pod's address in Host, no signature.
    for path in ["/healthz/live", "/healthz/ready", "/metrics"] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 10.1.2.3:2580\r\nUser-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = raw_request(admin, &request).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // The API behind them is still guarded and still wants a signature.
    let (status, body) = raw_request(
        admin,
        "GET /v2/email/account HTTP/1.1\r\nHost: 10.1.2.3:2580\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Host header"), "{body}");
    let (status, body) = raw_request(
        admin,
        "GET /v2/email/account HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // GET only.
    let (status, _) = raw_request(
        admin,
        "POST /metrics HTTP/1.1\r\nHost: 10.1.2.3:2580\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ).await;
    assert_eq!(status, 405);
    relay.stop().await;
}

#[tokio::test]
async fn with_api_false_only_health_metrics_and_the_pages_are_served() {
    let out = tempfile::tempdir().unwrap();
    let relay = Running::start(
        &standard_config(&format!("dir:{}", out.path().display())),
        "api = false",
    )
    .await;
    assert_eq!(get(relay.admin, "/healthz/live").await.0, 200);
    assert_eq!(get(relay.admin, "/healthz/ready").await.0, 200);
    assert_eq!(get(relay.admin, "/metrics").await.0, 200);
    // The pages are the developer's view: served without the API.
    for path in ["/", "/identities"] {
        let (status, body) = get(relay.admin, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.starts_with("<!doctype html>"), "{path}: {body}");
    }
    for path in [
        "/v2/email/account",
        "/v2/email/configuration-sets",
        "/verify?token=x",
    ] {
        let (status, body) = get(relay.admin, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(
            json(&body)["__type"],
            "UnknownOperationException",
            "{path}: {body}"
        );
    }
    let response = reqwest::Client::new()
        .post(format!("http://{}/v2/email/outbound-emails", relay.admin))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        response.headers()["x-amzn-ErrorType"],
        "UnknownOperationException"
    );
    relay.stop().await;
}

// ---------------------------------------------------------------------------------------
// /metrics.
// ---------------------------------------------------------------------------------------

/// Labels as a test writes them.
type Labels<'a> = &'a [(&'a str, &'a str)];

/// One sample: its name and labels (sorted), and its value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Parses the Prometheus text format (0.0.4) strictly: every line is `# HELP name text`,
/// `# TYPE name type`, or `name[{label="value",...}] value`; a sample belongs to a family
/// whose TYPE came before it (a histogram's `_bucket`, `_sum`, `_count` too), each family
/// is declared once, and no sample is given twice. Panics on the first line that is not.
fn parse_prometheus(text: &str) -> Samples {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn value(s: &str) -> Option<f64> {
        match s {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => s.parse().ok(),
        }
    }
    /// `{a="x",b="y"}` at the start of `s`: the labels and the rest of `s`.
    fn labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
        let mut rest = s.strip_prefix('{')?;
        let mut out = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                return Some((out, after));
            }
            let eq = rest.find('=')?;
            let name = &rest[..eq];
            if !is_name(name) || name.starts_with("__") {
                return None;
            }
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut val = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        '\\' => val.push('\\'),
                        '"' => val.push('"'),
                        'n' => val.push('\n'),
                        _ => return None,
                    },
                    '\n' => return None,
                    c => val.push(c),
                }
            };
            out.push((name.to_owned(), val));
            rest = &rest[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return None;
            }
        }
    }

    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Samples::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("{}", at()));
            assert!(is_name(name) && !help.is_empty(), "{}", at());
            assert!(
                helps.insert(name.to_owned(), help.to_owned()).is_none(),
                "HELP twice: {}",
                at()
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{}", at()));
            assert!(is_name(name), "{}", at());
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{}",
                at()
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {}",
                at()
            );
        } else {
            assert!(!line.starts_with('#'), "an unknown comment: {}", at());
            let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{}", at()));
            let name = &line[..name_end];
            assert!(is_name(name), "{}", at());
            let (mut labels, rest) = if line[name_end..].starts_with('{') {
                labels(&line[name_end..]).unwrap_or_else(|| panic!("bad labels: {}", at()))
            } else {
                (Vec::new(), &line[name_end..])
            };
            let mut words = rest
                .strip_prefix(' ')
                .unwrap_or_else(|| panic!("{}", at()))
                .split(' ');
            let v = words
                .next()
                .and_then(value)
                .unwrap_or_else(|| panic!("bad value: {}", at()));
            if let Some(timestamp) = words.next() {
                assert!(timestamp.parse::<i64>().is_ok(), "{}", at());
            }
            assert!(words.next().is_none(), "{}", at());
            let family = types
                .iter()
                .find(|(family, kind)| {
                    name == family.as_str()
                        || (kind.as_str() == "histogram"
                            && ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|s| name.strip_suffix(s) == Some(family.as_str())))
                })
                .unwrap_or_else(|| panic!("a sample of no declared family: {}", at()));
            assert!(helps.contains_key(family.0), "no HELP: {}", at());
            labels.sort();
            assert!(
                samples.insert((name.to_owned(), labels), v).is_none(),
                "a sample twice: {}",
                at()
            );
        }
    }
    samples
}

/// The value of `name{labels}`, 0 when the page does not have it.
fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    samples
        .get(&(name.to_owned(), labels))
        .copied()
        .unwrap_or(0.0)
}

async fn scrape(admin: SocketAddr) -> (String, Samples) {
    let (status, page) = get(admin, "/metrics").await;
    assert_eq!(status, 200, "{page}");
    let samples = parse_prometheus(&page);
    (page, samples)
}

/// Waits until `name{labels}` is `want` on the page (gauges follow sessions that end on
/// their own time).
async fn wait_for_sample(admin: SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (page, samples) = scrape(admin).await;
        if sample(&samples, name, labels) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is not {want}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_counters_move_with_traffic() {
    let upstream = Capture::start(Script::default()).await;
    let config = standard_config(&upstream.url()).replacen(
        "[server]\n",
        "[server]\nmax_inflight_bytes = 100000000\n",
        1,
    );
    let relay = Running::start(&config, "").await;
    let admin = relay.admin;

    let (page, before) = scrape(admin).await;
    for (name, labels) in [
        ("sesrelay_smtp_connections_total", vec![]),
        ("sesrelay_smtp_connections_open", vec![]),
        ("sesrelay_received_bytes_total", vec![]),
        (
            "sesrelay_messages_rejected_total",
            vec![("reason", "not_verified")],
        ),
        ("sesrelay_config_reloads_total", vec![("result", "success")]),
        ("sesrelay_config_reloads_total", vec![("result", "failure")]),
        (
            "sesrelay_smtp_connections_refused_total",
            vec![("reason", "max_connections")],
        ),
        (
            "sesrelay_upstream_errors_total",
            vec![("class", "unavailable")],
        ),
        ("sesrelay_upstream_delivery_duration_seconds_count", vec![]),
    ] {
        let key = (
            name.to_owned(),
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            before.get(&key),
            Some(&0.0),
            "{name}{labels:?} at 0:\n{page}"
        );
    }
    assert_eq!(
        sample(&before, "sesrelay_inflight_limit_bytes", &[]),
        100_000_000.0
    );

    // Traffic: two messages forwarded (sets marketing and transactional), one from an
    // unverified sender, one naming a set that does not exist.
    let messages: [(&str, &[u8]); 4] = [
        ("joe@example.com", b"From: joe@example.com\r\nSubject: a\r\n\r\nhello\r\n"),
        ("ann@example.com", b"From: ann@example.com\r\nSubject: b\r\n\r\nhello again\r\n"),
        ("eve@unverified.test", b"From: eve@unverified.test\r\nSubject: c\r\n\r\nno\r\n"),
        (
            "ann@example.com",
            b"From: ann@example.com\r\nX-SES-CONFIGURATION-SET: no-such-set-xyz\r\nSubject: d\r\n\r\nno\r\n",
        ),
    ];
    let mut c = Client::ready(relay.smtp).await;
    // This session is open now.
    let (_, during) = scrape(admin).await;
    assert_eq!(sample(&during, "sesrelay_smtp_connections_open", &[]), 1.0);
    let mut replies = Vec::new();
    for (from, content) in messages {
        replies.push(c.mail(from, &["a@example.net"], content).await);
    }
    assert!(
        replies[0].starts_with("250 ") && replies[1].starts_with("250 "),
        "{replies:?}"
    );
    assert!(replies[2].starts_with("554 5.7.1"), "{replies:?}");
    assert!(replies[3].starts_with("554 5.3.0"), "{replies:?}");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    upstream.wait_for(2).await;
    // And the API: one operation, one path that is none.
    assert_eq!(get(admin, "/v2/email/account").await.0, 200);
    assert_eq!(get(admin, "/v2/email/no-such-thing").await.0, 404);
    wait_for_sample(admin, "sesrelay_smtp_connections_open", &[], 0.0).await;

    let (page, after) = scrape(admin).await;
    let bytes: usize = messages.iter().map(|(_, m)| m.len()).sum();
    let rows: &[(&str, Labels, f64)] = &[
        ("sesrelay_smtp_connections_total", &[], 1.0),
        ("sesrelay_smtp_connections_open", &[], 0.0),
        (
            "sesrelay_messages_accepted_total",
            &[("configuration_set", "marketing")],
            1.0,
        ),
        (
            "sesrelay_messages_accepted_total",
            &[("configuration_set", "transactional")],
            1.0,
        ),
        (
            "sesrelay_messages_rejected_total",
            &[("reason", "not_verified")],
            1.0,
        ),
        (
            "sesrelay_messages_rejected_total",
            &[("reason", "set_missing")],
            1.0,
        ),
        ("sesrelay_received_bytes_total", &[], bytes as f64),
        (
            "sesrelay_upstream_delivery_duration_seconds_count",
            &[],
            2.0,
        ),
        (
            "sesrelay_api_requests_total",
            &[("operation", "GetAccount"), ("status", "200")],
            1.0,
        ),
        (
            "sesrelay_api_requests_total",
            &[("operation", "Unknown"), ("status", "404")],
            1.0,
        ),
        ("sesrelay_inflight_bytes", &[], 0.0),
    ];
    for (name, labels, want) in rows {
        assert_eq!(
            sample(&after, name, labels),
            *want,
            "{name}{labels:?}:\n{page}"
        );
    }
    // Scrapes and probes are not API requests.
    assert!(!page.contains("operation=\"Metrics\""), "{page}");
    // No label carries an address, a header's set name or anything from a client.
    for (_, labels) in after.keys() {
        for (_, value) in labels {
            assert!(
                !value.contains('@')
                    && !value.contains("127.0.0.1")
                    && !value.contains("no-such-set"),
                "label value {value:?}"
            );
        }
    }

    // The README's table lists exactly these families, with these types. A family with no
    // series yet has no TYPE line: the CloudWatch counter has none until a CloudWatch event
    // destination counts (tests/events.rs checks it then).
    let served: BTreeMap<String, String> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect();
    let mut listed = readme_metrics();
    assert_eq!(
        listed.remove("sesrelay_cloudwatch_events_total").as_deref(),
        Some("counter")
    );
    assert_eq!(listed, served);

    // OpenMetrics for a scraper that asks for it.
    let (status, open) = get_with(
        admin,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(open.ends_with("# EOF\n"), "{open}");
    relay.stop().await;
}

/// The rows of README.md's metrics table: name and type.
fn readme_metrics() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    let section = readme
        .split("\n### Metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("a Metrics section in the README");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `sesrelay_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once("` | ")?;
            let kind = rest.split(' ').next()?;
            Some((format!("sesrelay_{name}"), kind.to_owned()))
        })
        .collect()
}

/// Every reason code the relay counts is explained in the README.
#[test]
fn the_readme_explains_every_rejection_reason() {
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    for reason in sesrelay::metrics::REJECTION_REASONS {
        assert!(
            readme.contains(&format!("`{reason}`")),
            "README.md does not explain reason {reason}"
        );
    }
}

#[tokio::test]
async fn refused_connections_are_counted_by_reason() {
    let out = tempfile::tempdir().unwrap();
    let dir = format!("dir:{}", out.path().display());
    // Room for one session.
    let relay = Running::start(
        &standard_config(&dir).replacen("[server]\n", "[server]\nmax_connections = 1\n", 1),
        "",
    )
    .await;
    let first = Client::ready(relay.smtp).await;
    let (mut second, greeting) = Client::connect(relay.smtp).await;
    assert!(greeting.starts_with("421 4.7.0"), "{greeting}");
    assert!(second.is_closed().await);
    let (_, samples) = scrape(relay.admin).await;
    assert_eq!(
        sample(
            &samples,
            "sesrelay_smtp_connections_refused_total",
            &[("reason", "max_connections")]
        ),
        1.0
    );
    assert_eq!(
        sample(&samples, "sesrelay_smtp_connections_total", &[]),
        2.0
    );
    assert_eq!(sample(&samples, "sesrelay_smtp_connections_open", &[]), 1.0);
    drop(first);
    relay.stop().await;

    // Nobody trusted and no [auth]: every client is turned away at connect.
    let relay = Running::start(
        &standard_config(&dir).replacen("[server]\n", "[server]\ntrusted_networks = []\n", 1),
        "",
    )
    .await;
    let (_, greeting) = Client::connect(relay.smtp).await;
    assert!(greeting.starts_with("554 5.7.1"), "{greeting}");
    wait_for_sample(
        relay.admin,
        "sesrelay_smtp_connections_refused_total",
        &[("reason", "network")],
        1.0,
    )
    .await;
    relay.stop().await;
}

// ---------------------------------------------------------------------------------------
// The log line of a message.
// ---------------------------------------------------------------------------------------

/// The JSON log line (`--log-format json`) whose fields hold `id`: its `fields` object.
fn log_fields(relay: &RelayProcess, id: &str) -> serde_json::Map<String, Value> {
    let lines = relay
        .process
        .log
        .wait_for_lines(&format!("\"id\":\"{id}\""), 1, SETTLE);
    assert_eq!(lines.len(), 1, "one line for {id}: {}", relay.log());
    let line: Value = serde_json::from_str(&lines[0])
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", lines[0]));
    line["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no fields: {line}"))
        .clone()
}

#[tokio::test]
async fn the_json_log_line_of_a_message_holds_every_field() {
    let upstream = Capture::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let hash = sesrelay::password::hash("app-password").unwrap();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n{}\n[auth]\nusers = [{{ username = \"app\", password_hash = \"{hash}\" }}]\n",
        standard_config(&upstream.url()).replacen("[server]\n", "", 1)
    );
    let path = dir.path().join("sesrelay.toml");
    std::fs::write(&path, config).unwrap();
    let relay = RelayProcess::start_with_args(&path, &[], &["--log-format", "json"]);
    assert_log_is_json(&relay);

    let mut c = Client::ready(relay.smtp_addr()).await;
    let auth = base64_plain("app", "app-password");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {auth}")).await,
        "235 2.7.0 Authentication successful"
    );
    let content = b"From: Joe Bloggs <joe@example.com>\r\nTo: a@example.net\r\n\
X-SES-MESSAGE-TAGS: campaign=spring\r\nSubject: logged\r\n\r\nbody\r\n";
    let reply = c
        .mail(
            "bounces@example.com",
            &["a@example.net", "b@example.net"],
            content,
        )
        .await;
    let id = reply
        .strip_prefix("250 2.0.0 Ok ")
        .unwrap_or_else(|| panic!("{reply}"))
        .to_owned();
    let forwarded = upstream.wait_for(1).await;
    let tags = header(&forwarded[0].content, "X-SES-MESSAGE-TAGS");
    assert_eq!(tags, ["campaign=spring, team=growth"]);

    let fields = log_fields(&relay, &id);
    let expected = serde_json::json!({
        "message": "message forwarded",
        "outcome": "accepted",
        "id": id,
        "client": "127.0.0.1",
        "protocol": "ESMTPA",
        "user": "app",
        "mail_from": "bounces@example.com",
        "from": "joe@example.com",
        "configuration_set": "marketing",
        "set_reason": "address default",
        "identity": "joe@example.com",
        "tags": "campaign=spring, team=growth",
        "rcpts": 2,
        "size": content.len(),
        "upstream": "250 2.0.0 queued as CAPTURE",
    });
    for (key, want) in expected.as_object().unwrap() {
        assert_eq!(fields.get(key), Some(want), "{key} in {fields:?}");
    }
    assert!(fields["latency_ms"].is_u64(), "{fields:?}");

    // A rejected message: its line says why, and what the client was told.
    let reply = c
        .mail(
            "eve@unverified.test",
            &["a@example.net"],
            b"From: eve@unverified.test\r\nSubject: no\r\n\r\nno\r\n",
        )
        .await;
    assert!(reply.starts_with("554 5.7.1"), "{reply}");
    let lines = relay
        .process
        .log
        .wait_for_lines("\"outcome\":\"rejected\"", 1, SETTLE);
    let line: Value = serde_json::from_str(&lines[0]).unwrap();
    let fields = &line["fields"];
    assert_eq!(fields["reason"], "not_verified", "{line}");
    assert_eq!(fields["reply"], reply.as_str(), "{line}");
    assert_eq!(fields["mail_from"], "eve@unverified.test", "{line}");
    assert_eq!(fields["user"], "app", "{line}");
    assert!(
        fields["id"].is_string() && fields["latency_ms"].is_u64(),
        "{line}"
    );
    assert!(fields.get("configuration_set").is_none(), "{line}");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
}

/// Every line the binary wrote is one JSON object.
fn assert_log_is_json(relay: &RelayProcess) {
    for line in relay.log().lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()),
            "not a JSON object: {line}"
        );
    }
}

/// The AUTH PLAIN response for `user` and `password`.
fn base64_plain(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

#[test]
fn the_parser_refuses_what_is_not_prometheus_text() {
    let good =
        "# HELP a_total A counter.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n";
    assert_eq!(parse_prometheus(good).len(), 1);
    for bad in [
        "a_total 1\n",                                        // no TYPE
        "# TYPE a counter\n# HELP a A.\na{x=1} 1\n",          // unquoted label
        "# TYPE a gauge\n# HELP a A.\na one\n",               // not a number
        "# TYPE a gauge\n# HELP a A.\na 1\na 2\n",            // a sample twice
        "# TYPE a gauge\n# HELP a A.\n# TYPE a gauge\na 1\n", // a family twice
        "# TYPE 1a gauge\n",                                  // a bad name
        "# TYPE a gauge\n# HELP a A.\na{x=\"1\" 1\n",         // unclosed labels
    ] {
        let caught = std::panic::catch_unwind(|| parse_prometheus(bad));
        assert!(caught.is_err(), "accepted: {bad:?}");
    }
}
