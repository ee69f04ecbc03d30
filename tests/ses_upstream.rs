//! The SES API upstream (`ses+http://`), over real sockets, against a test double that is
//! sesrelay itself: a second `sesrelay` process serving the v2 API with `access_keys` (so
//! every call's SigV4 signature is verified) and forwarding to a capturing SMTP upstream.
//! The relay under test is the real binary, with its AWS credentials in environment
//! variables, as in a pod.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::peers::RelayProcess;
use common::{Capture, Client, Relay, Script, after_prepended, header};

const KEY_ID: &str = "AKIDSESDOUBLE";
const SECRET: &str = "double-secret-key";
/// The temporary credentials the STS double hands out for `upstream.role_arn`; the SES
/// double accepts them too.
const ROLE_KEY_ID: &str = "ASIASESRELAYROLE";
const ROLE_SECRET: &str = "assumed-role-secret";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/sesrelay-sender";
/// The relay under test's `upstream.timeout`.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The identities both relays know. The double does not know `stranger.example`.
const IDENTITIES: &str = r#"
[configuration_sets.transactional]
[configuration_sets.marketing]

[identities."example.com"]
verified = true
default_configuration_set = "transactional"

[identities."joe@example.com"]
verified = true
default_configuration_set = "marketing"
"#;

/// The test double: sesrelay serving the v2 API with one access key, forwarding to
/// `capture`. `account` is its `[account]` section, if any.
fn start_double(dir: &Path, capture: &Capture, account: &str) -> RelayProcess {
    let dir = dir.join("double");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nregion = \"us-east-1\"\n\n\
         [upstream]\nurl = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         access_keys = [{{ id = \"{KEY_ID}\", secret_env = \"DOUBLE_SECRET\" }}, \
         {{ id = \"{ROLE_KEY_ID}\", secret_env = \"ROLE_SECRET\" }}]\n\
         {account}\n{IDENTITIES}",
        capture.url()
    );
    let path = dir.join("sesrelay.toml");
    std::fs::write(&path, config).unwrap();
    RelayProcess::start(
        &path,
        &[("DOUBLE_SECRET", SECRET), ("ROLE_SECRET", ROLE_SECRET)],
    )
}

/// The relay under test: `ses+http://` to `double`, credentials from the environment
/// (`secret` as AWS_SECRET_ACCESS_KEY; nothing read from the machine's ~/.aws, no
/// instance metadata), an admin listener for its readiness. `identities` replaces the
/// shared table when given.
fn start_relay(dir: &Path, double: SocketAddr, secret: &str, identities: &str) -> RelayProcess {
    start_relay_with(
        dir,
        double,
        identities,
        "",
        &[
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
    )
}

/// The relay under test with more `[upstream]` keys and `env` (beside empty AWS config and
/// credentials files and no instance metadata).
fn start_relay_with(
    dir: &Path,
    double: SocketAddr,
    identities: &str,
    upstream: &str,
    env: &[(&str, &str)],
) -> RelayProcess {
    let dir = dir.join("relay");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nregion = \"us-east-1\"\n\n\
         [upstream]\nurl = \"ses+http://{double}\"\nregion = \"us-east-1\"\ntimeout = \"{}s\"\n{upstream}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\napi = false\n\n{identities}",
        TIMEOUT.as_secs()
    );
    let path = dir.join("sesrelay.toml");
    std::fs::write(&path, config).unwrap();
    let config_file = dir.join("aws-config");
    let credentials_file = dir.join("aws-credentials");
    for file in [&config_file, &credentials_file] {
        if !file.exists() {
            std::fs::write(file, "").unwrap();
        }
    }
    let mut all = vec![
        ("AWS_CONFIG_FILE", config_file.to_str().unwrap()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            credentials_file.to_str().unwrap(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    all.extend_from_slice(env);
    RelayProcess::start(&path, &all)
}

/// A message from `from` to `to`, with `extra` header lines.
fn message(from: &str, to: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: through the SES API\r\n{extra}\r\nHello over SendEmail.\r\n"
    )
    .into_bytes()
}

/// The id in a `250 2.0.0 Ok <id>` reply.
fn id_of(reply: &str) -> &str {
    reply
        .strip_prefix("250 2.0.0 Ok ")
        .unwrap_or_else(|| panic!("not an acceptance: {reply}"))
}

/// The id in the first `Received:` header (`... id <id>`, on its second line): the id the
/// relay that wrote it gave the message.
fn received_id(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    assert!(text.starts_with("Received: "), "{text}");
    let (_, rest) = text.split_once(" id ").expect("Received: has an id");
    rest.split([' ', ';', '\t', '\r'])
        .next()
        .unwrap()
        .to_owned()
}

fn is_ses_form(id: &str) -> bool {
    let lengths: Vec<usize> = id.split('-').map(str::len).collect();
    lengths == [16, 8, 4, 4, 4, 12, 6]
        && id
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One message from joe@example.com to ann@customer.example through `relay`, on a
/// connection of its own: the final reply.
async fn send_one(relay: &RelayProcess) -> String {
    let mut client = Client::ready(relay.smtp_addr()).await;
    client
        .mail(
            "joe@example.com",
            &["ann@customer.example"],
            &message("joe@example.com", "ann@customer.example", ""),
        )
        .await
}

async fn get(addr: SocketAddr, path: &str) -> u16 {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .expect("an answer")
        .status()
        .as_u16()
}

/// GETs `path` until it answers `status` (at most 10 s).
async fn wait_for_status(addr: SocketAddr, path: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(addr, path).await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} answers {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_goes_through_send_email_with_the_resolved_set_tags_and_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(Script::default()).await;
    let double = start_double(dir.path(), &capture, "");
    let relay = start_relay(dir.path(), double.admin.unwrap(), SECRET, IDENTITIES);
    wait_for_status(relay.admin.unwrap(), "/healthz/ready", 200).await;

    // joe@example.com's default set is marketing; the header adds a tag.
    let mut client = Client::ready(relay.smtp_addr()).await;
    let content = message(
        "Joe <joe@example.com>",
        "ann@customer.example",
        "X-SES-MESSAGE-TAGS: campaign=launch\r\nX-Custom: kept\r\n",
    );
    let reply = client
        .mail(
            "bounces@example.com",
            &["ann@customer.example", "hidden@customer.example"],
            &content,
        )
        .await;
    let id = id_of(&reply).to_owned();
    assert!(is_ses_form(&id), "{reply}");

    let got = capture.wait_for(1).await.remove(0);
    // The double's 250 MessageId is the id the client was given.
    assert_eq!(received_id(&got.content), id);
    // The envelope: Destination = the envelope's recipients (the Bcc one too), and
    // FromEmailAddress = the envelope sender.
    assert_eq!(got.mail_from, "bounces@example.com");
    assert_eq!(
        got.rcpt_to,
        ["ann@customer.example", "hidden@customer.example"]
    );
    // The set and tags arrived as SendEmail parameters: the double wrote them as its own
    // headers, once; the relay's message carried none of them.
    assert_eq!(
        header(&got.content, "X-SES-CONFIGURATION-SET"),
        ["marketing"]
    );
    assert_eq!(
        header(&got.content, "X-SES-MESSAGE-TAGS"),
        ["campaign=launch"]
    );
    // Below the double's own lines: the relay's Received and the client's message,
    // without its X-SES-* lines.
    let (_, relayed) = after_prepended(&got.content);
    let (relay_head, original) = after_prepended(relayed);
    assert!(!relay_head.contains("X-SES-"), "{relay_head}");
    assert_eq!(
        original,
        message(
            "Joe <joe@example.com>",
            "ann@customer.example",
            "X-Custom: kept\r\n"
        )
    );

    // The null sender: FromEmailAddress is the From header's address.
    let content = message("Someone <someone@example.com>", "ann@customer.example", "");
    let reply = client.mail("", &["ann@customer.example"], &content).await;
    assert!(is_ses_form(id_of(&reply)), "{reply}");
    let got = capture.wait_for(2).await.remove(1);
    assert_eq!(got.mail_from, "someone@example.com");
    assert_eq!(
        header(&got.content, "X-SES-CONFIGURATION-SET"),
        ["transactional"]
    );

    // The log line holds both ids: sesrelay's own and SES's.
    let log = relay.log();
    let line = log
        .lines()
        .find(|l| l.contains("message forwarded") && l.contains(&id))
        .unwrap_or_else(|| panic!("no log line with {id}: {log}"));
    assert!(line.contains("ses_message_id"), "{line}");
    assert!(!log.contains(SECRET), "the secret is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_and_nothing_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(Script::default()).await;
    let double = start_double(dir.path(), &capture, "");
    let relay = start_relay(
        dir.path(),
        double.admin.unwrap(),
        "not-the-secret",
        IDENTITIES,
    );
    // The readiness check signs a GetAccount: the double refuses the signature.
    assert_eq!(get(relay.admin.unwrap(), "/healthz/ready").await, 503);

    let reply = send_one(&relay).await;
    assert_eq!(reply, "451 4.4.1 Upstream unavailable, try again later");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(capture.messages().is_empty());
    assert!(
        relay.log().contains("403 InvalidSignatureException"),
        "{}",
        relay.log()
    );
    assert!(!relay.log().contains("not-the-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doubles_refusals_come_back_in_ses_words() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(Script::default()).await;
    // The double: at most 1 recipient a second and 2 a day.
    let double = start_double(
        dir.path(),
        &capture,
        "[account]\nmax_send_rate = 1\nmax_24_hour_send = 2\n",
    );
    // The relay under test also trusts stranger.example, which the double does not know.
    let identities = format!("{IDENTITIES}\n[identities.\"stranger.example\"]\nverified = true\n");
    let relay = start_relay(dir.path(), double.admin.unwrap(), SECRET, &identities);
    let mut client = Client::ready(relay.smtp_addr()).await;

    let reply = client
        .mail(
            "x@stranger.example",
            &["ann@customer.example"],
            &message("X <x@stranger.example>", "ann@customer.example", ""),
        )
        .await;
    assert_eq!(
        reply,
        "554 5.7.1 Message rejected: Email address is not verified. The following identities \
         failed the check in region US-EAST-1: X <x@stranger.example>"
    );

    let send = |n: usize| message("joe@example.com", &format!("r{n}@customer.example"), "");
    let first = client
        .mail("joe@example.com", &["r1@customer.example"], &send(1))
        .await;
    assert!(first.starts_with("250 2.0.0 Ok "), "{first}");
    let second = client
        .mail("joe@example.com", &["r2@customer.example"], &send(2))
        .await;
    assert_eq!(
        second,
        "454 4.7.0 Throttling failure: Maximum sending rate exceeded."
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = client
        .mail("joe@example.com", &["r3@customer.example"], &send(3))
        .await;
    assert!(third.starts_with("250 2.0.0 Ok "), "{third}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fourth = client
        .mail("joe@example.com", &["r4@customer.example"], &send(4))
        .await;
    assert_eq!(
        fourth,
        "454 4.7.0 Throttling failure: Daily message quota exceeded."
    );
    assert_eq!(capture.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_double_is_a_451_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(Script::default()).await;
    let mut double = start_double(dir.path(), &capture, "");
    let relay = start_relay(dir.path(), double.admin.unwrap(), SECRET, IDENTITIES);
    let mut client = Client::ready(relay.smtp_addr()).await;
    let content = message("joe@example.com", "ann@customer.example", "");
    let reply = client
        .mail("joe@example.com", &["ann@customer.example"], &content)
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");

    // Stopped (SIGSTOP): connections are made, nothing answers. The client gets its 451
    // once upstream.timeout has passed, not later.
    double.process.signal("STOP");
    let started = Instant::now();
    let reply = client
        .mail("joe@example.com", &["ann@customer.example"], &content)
        .await;
    let waited = started.elapsed();
    assert_eq!(reply, "451 4.4.1 Upstream unavailable, try again later");
    assert!(
        waited >= TIMEOUT - Duration::from_millis(100) && waited < TIMEOUT + Duration::from_secs(2),
        "answered after {waited:?}"
    );
    double.process.signal("CONT");
    let reply = client
        .mail("joe@example.com", &["ann@customer.example"], &content)
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");

    // Gone: the connection is refused, the 451 comes at once.
    let _ = double.process.child.kill();
    let _ = double.process.child.wait();
    let started = Instant::now();
    let reply = client
        .mail("joe@example.com", &["ann@customer.example"], &content)
        .await;
    assert_eq!(reply, "451 4.4.1 Upstream unavailable, try again later");
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    wait_for_status(relay.admin.unwrap(), "/healthz/ready", 503).await;
    // Two messages were answered 250. The one answered 451 while the double was stopped
    // had been sent: the double, woken, may still have taken it (the duplicate a timeout
    // after sending can make, README "Upstreams").
    let delivered = capture.messages().len();
    assert!((2..=3).contains(&delivered), "{delivered} delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mb_message_arrives_intact() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(Script::default()).await;
    let double = start_double(dir.path(), &capture, "");
    let relay = start_relay(dir.path(), double.admin.unwrap(), SECRET, IDENTITIES);
    let mut body = String::with_capacity(5 * 1024 * 1024 + 100);
    let mut n = 0u64;
    while body.len() < 5 * 1024 * 1024 {
        // Lines of every length up to 998, some starting with a dot.
        let len = (n * 7919 % 997) as usize + 1;
        let fill = char::from(b'a' + (n % 26) as u8);
        if n.is_multiple_of(5) {
            body.push('.');
        }
        body.extend(std::iter::repeat_n(
            fill,
            len.saturating_sub(usize::from(n.is_multiple_of(5))),
        ));
        body.push_str("\r\n");
        n += 1;
    }
    let content = [
        message("joe@example.com", "ann@customer.example", "").as_slice(),
        body.as_bytes(),
    ]
    .concat();
    let mut wire = content.clone();
    // Dot-stuffing for the SMTP client's side.
    wire = String::from_utf8(wire)
        .unwrap()
        .replace("\r\n.", "\r\n..")
        .into_bytes();
    let mut client = Client::ready(relay.smtp_addr()).await;
    let reply = client
        .mail("joe@example.com", &["ann@customer.example"], &wire)
        .await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    let got = capture.wait_for(1).await.remove(0);
    let (_, relayed) = after_prepended(&got.content);
    let (_, original) = after_prepended(relayed);
    assert_eq!(original.len(), content.len());
    assert!(
        original == content.as_slice(),
        "the message changed on the way"
    );
}

/// An SMTP upstream whose 250 carries an SES-form id (SES's SMTP endpoint answers
/// `250 Ok <id>`): the client is given that id.
#[tokio::test]
async fn an_smtp_upstreams_ses_id_is_passed_through() {
    let ses_id = "0100019a2b3c4d5e-0f1e2d3c-4b5a-4697-8877-665544332211-000000";
    let capture = Capture::start(Script {
        data: format!("250 Ok {ses_id}"),
        ..Script::default()
    })
    .await;
    let relay = Relay::start(&common::standard_config(&capture.url())).await;
    let mut client = Client::ready(relay.addr).await;
    let content = message("joe@example.com", "ann@customer.example", "");
    let reply = client
        .mail("joe@example.com", &["ann@customer.example"], &content)
        .await;
    assert_eq!(reply, format!("250 2.0.0 Ok {ses_id}"));

    // Another sesrelay as the upstream: its SES-form id comes back through the first.
    let second = Relay::start(&common::standard_config(&format!(
        "smtp://{}?tls=none",
        relay.addr
    )))
    .await;
    let mut client = Client::ready(second.addr).await;
    let reply = client
        .mail("joe@example.com", &["ann@customer.example"], &content)
        .await;
    assert_eq!(reply, format!("250 2.0.0 Ok {ses_id}"));

    // An upstream whose 250 carries no such id: the relay's own id.
    let plain = Capture::start(Script::default()).await;
    let third = Relay::start(&common::standard_config(&plain.url())).await;
    let mut client = Client::ready(third.addr).await;
    let reply = client
        .mail("joe@example.com", &["ann@customer.example"], &content)
        .await;
    let id = id_of(&reply);
    assert!(is_ses_form(id), "{reply}");
    assert_eq!(received_id(&plain.wait_for(1).await[0].content), id);
    for relay in [relay, second, third] {
        relay.stop().await;
    }
}

#[test]
fn ses_upstreams_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    for (url, extra, expected) in [
        ("ses://us-east-1", "", "SES API in us-east-1"),
        (
            "ses+https://vpce-0abc.email.eu-west-1.vpce.amazonaws.com",
            "profile = \"mail\"\nrole_arn = \"arn:aws:iam::123456789012:role/sesrelay\"\n",
            "SES API at https://vpce-0abc.email.eu-west-1.vpce.amazonaws.com, signed for eu-west-1",
        ),
    ] {
        let path = dir.path().join("sesrelay.toml");
        std::fs::write(&path, format!("[upstream]\nurl = \"{url}\"\n{extra}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sesrelay"))
            .args(["check", "--config"])
            .arg(&path)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{url}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(expected), "{stdout}");
    }
}

/// No credentials anywhere in the chain: the client gets a 451, never a 5xx, and the relay
/// is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_is_a_451() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(Script::default()).await;
    let double = start_double(dir.path(), &capture, "");
    let relay = start_relay_with(dir.path(), double.admin.unwrap(), IDENTITIES, "", &[]);
    assert_eq!(get(relay.admin.unwrap(), "/healthz/ready").await, 503);
    let mut client = Client::ready(relay.smtp_addr()).await;
    let started = Instant::now();
    let reply = client
        .mail(
            "joe@example.com",
            &["ann@customer.example"],
            &message("joe@example.com", "ann@customer.example", ""),
        )
        .await;
    assert_eq!(reply, "451 4.4.1 Upstream unavailable, try again later");
    assert!(started.elapsed() < TIMEOUT + Duration::from_secs(1));
    assert!(capture.messages().is_empty());
}

/// `upstream.profile`: the credentials of a named profile in the shared credentials file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_named_profile() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(Script::default()).await;
    let double = start_double(dir.path(), &capture, "");
    std::fs::create_dir_all(dir.path().join("relay")).unwrap();
    std::fs::write(
        dir.path().join("relay/aws-credentials"),
        format!(
            "[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = wrong\n\n\
             [mail]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
        ),
    )
    .unwrap();
    let relay = start_relay_with(
        dir.path(),
        double.admin.unwrap(),
        IDENTITIES,
        "profile = \"mail\"\n",
        &[],
    );
    wait_for_status(relay.admin.unwrap(), "/healthz/ready", 200).await;
    let reply = send_one(&relay).await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    assert_eq!(capture.wait_for(1).await.len(), 1);
}

/// `upstream.role_arn`: the relay assumes the role with STS (a double answering
/// AssumeRole, reached through the SDK's `AWS_ENDPOINT_URL_STS`) and signs SendEmail with
/// the temporary credentials. Its own credentials would be refused by the SES double.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assumed_role_signs_the_sends() {
    use axum::routing::post;
    let dir = tempfile::tempdir().unwrap();
    let capture = Capture::start(Script::default()).await;
    let double = start_double(dir.path(), &capture, "");

    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::clone(&calls);
    let sts = axum::Router::new().route(
        "/",
        post(move |body: String| {
            let seen = std::sync::Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(body);
                (
                    [("content-type", "text/xml")],
                    format!(
                        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                         <AssumeRoleResult><AssumedRoleUser>\
                         <Arn>arn:aws:sts::123456789012:assumed-role/sesrelay-sender/sesrelay</Arn>\
                         <AssumedRoleId>AROAEXAMPLE:sesrelay</AssumedRoleId></AssumedRoleUser>\
                         <Credentials><AccessKeyId>{ROLE_KEY_ID}</AccessKeyId>\
                         <SecretAccessKey>{ROLE_SECRET}</SecretAccessKey>\
                         <SessionToken>session-token</SessionToken>\
                         <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
                         </AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId>\
                         </ResponseMetadata></AssumeRoleResponse>"
                    ),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sts_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sts).await });

    let relay = start_relay_with(
        dir.path(),
        double.admin.unwrap(),
        IDENTITIES,
        &format!("role_arn = \"{ROLE_ARN}\"\n"),
        &[
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            (
                "AWS_SECRET_ACCESS_KEY",
                "base-credentials-the-double-refuses",
            ),
            ("AWS_ENDPOINT_URL_STS", &sts_url),
        ],
    );
    let reply = send_one(&relay).await;
    assert!(reply.starts_with("250 2.0.0 Ok "), "{reply}");
    assert_eq!(capture.wait_for(1).await.len(), 1);
    let calls = calls.lock().unwrap().clone();
    assert!(!calls.is_empty(), "no AssumeRole call");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(calls[0].as_bytes())
        .into_owned()
        .collect();
    assert!(
        form.contains(&("Action".into(), "AssumeRole".into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("RoleArn".into(), ROLE_ARN.into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("RoleSessionName".into(), "sesrelay".into())),
        "{form:?}"
    );
}
