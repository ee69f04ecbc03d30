//! boto3, the AWS SDK for Python, against the relay: its `sesv2` client retrying a
//! send-email whose first attempt timed out (one delivery, one MessageId), and its `ses`
//! (v1) client reading the v1 XML error of an action sesrelay does not serve
//! (tests/v1_api.rs has the v1 operations).
//!
//! The Python is `$SESRELAY_PYTHON`, else `python3` on PATH, with boto3
//! ([`common::python`]).

mod common;

use std::time::Duration;

use common::python::run_python;
use common::{Capture, Script};
use sesrelay::config::Config;
use sesrelay::server::Server;
use tokio::sync::watch;

/// The relay in this process, with its admin API, sending through `upstream`; the admin
/// URL and what stops it.
async fn start(
    upstream: &str,
) -> (
    tempfile::TempDir,
    String,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesrelay.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nshutdown_timeout = \"2s\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"{upstream}\"\n\n\
             [identities.\"example.com\"]\nverified = true\n"
        ),
    )
    .unwrap();
    let server = Server::bind(Config::load(&path).unwrap()).await.unwrap();
    let base = format!("http://{}", server.admin_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let done = tokio::spawn(server.run(stopped));
    (dir, base, stop, done)
}

/// boto3's sesv2 client with a 1 s read timeout and up to 6 attempts, sending once; prints
/// the MessageId and how many times botocore retried.
const SEND_WITH_RETRIES: &str = r#"
import sys, boto3
from botocore.config import Config
client = boto3.client(
    "sesv2", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id="AKIDBOTO3", aws_secret_access_key="boto3-secret",
    config=Config(read_timeout=1, connect_timeout=5,
                  retries={"mode": "standard", "max_attempts": 6}))
answer = client.send_email(
    FromEmailAddress="sender@example.com",
    Destination={"ToAddresses": ["bob@example.net"]},
    Content={"Simple": {"Subject": {"Data": "retried by boto3"},
                        "Body": {"Text": {"Data": "once"}}}})
print(answer["MessageId"])
print(answer["ResponseMetadata"]["RetryAttempts"])
"#;

#[tokio::test]
async fn boto3_retrying_a_slow_send_email_delivers_once() {
    // The upstream takes 2.5 s to accept the first message: botocore gives up on its first
    // attempt after 1 s and retries with the same amz-sdk-invocation-id.
    let upstream = Capture::start(Script {
        slow_first_reply: Some(Duration::from_millis(2500)),
        ..Script::default()
    })
    .await;
    let (_dir, base, stop, done) = start(&upstream.url()).await;
    let out = run_python(SEND_WITH_RETRIES, &[&base]).await;
    let mut lines = out.lines();
    let message_id = lines.next().unwrap_or_default().to_owned();
    let retries: u32 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    assert!(retries >= 1, "botocore did not retry:\n{out}");
    let messages = upstream.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        upstream.messages().len(),
        1,
        "delivered once, retries and all"
    );
    let received = String::from_utf8_lossy(&messages[0].content).into_owned();
    assert!(
        received.contains(&format!("Message-ID: <{message_id}@email.amazonses.com>")),
        "the retry was answered with the first attempt's MessageId {message_id}:\n{received}"
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
}

/// boto3's ses (v1) client: list_templates (no operation of sesrelay's) raises ClientError;
/// prints the error's code, message, request id and the x-amzn-RequestId header.
const V1_UNKNOWN_ACTION: &str = r#"
import sys, boto3, botocore.exceptions
from botocore.config import Config
client = boto3.client(
    "ses", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id="AKIDBOTO3", aws_secret_access_key="boto3-secret",
    config=Config(read_timeout=10, connect_timeout=5, retries={"max_attempts": 1}))
try:
    client.list_templates(MaxItems=10)
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
    print(e.response["Error"]["Type"])
    print(e.response["Error"]["Message"])
    print(e.response["ResponseMetadata"]["RequestId"])
    print(e.response["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-requestid", ""))
    print(e.response["ResponseMetadata"]["HTTPStatusCode"])
else:
    sys.exit("list_templates did not raise")
"#;

#[tokio::test]
async fn boto3_ses_client_reads_the_v1_error() {
    let upstream = Capture::start(Script::default()).await;
    let (_dir, base, stop, done) = start(&upstream.url()).await;
    let out = run_python(V1_UNKNOWN_ACTION, &[&base]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.get(..3),
        Some(
            &[
                "InvalidAction",
                "Sender",
                "Unrecognized action: sesrelay does not serve the v1 action ListTemplates.",
            ][..]
        ),
        "{out}"
    );
    let (request_id, header) = (lines[3], lines[4]);
    assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{out}");
    assert_eq!(request_id, header, "the body's RequestId is the header's");
    assert_eq!(lines[5], "400");
    assert!(upstream.messages().is_empty());
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
}
