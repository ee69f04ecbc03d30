//! The API as the AWS SDKs use it, over real sockets on 127.0.0.1: clients with short
//! timeouts (create-email-identity answers before the verification message is sent).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
