//! The SES v2 API over HTTP on 127.0.0.1: every operation's success and error answers, the
//! TOML file it keeps (comments and all), concurrent edits, verification links and DNS.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sesrelay::admin::verification::Verifier;
use sesrelay::config::Config;
use sesrelay::server::Server;
use tokio::sync::watch;

/// A relay with its admin API, its config file in a temporary directory and a `dir:`
/// upstream beside it.
struct Api {
    dir: tempfile::TempDir,
    base: String,
    smtp: std::net::SocketAddr,
    http: reqwest::Client,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

const BASE_CONFIG: &str = r#"# The operator's comment at the top.
[server]
listen = ["127.0.0.1:0"]
region = "us-east-1"   # shown upper-cased

[admin]
listen = "127.0.0.1:0"

[upstream]
url = "dir:OUTBOX"   # where mail lands
"#;

impl Api {
    async fn start(extra: &str) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let text = BASE_CONFIG.replace("OUTBOX", &dir.path().join("outbox").display().to_string());
        std::fs::write(dir.path().join("sesrelay.toml"), format!("{text}{extra}")).unwrap();
        Api::start_in(dir).await
    }

    /// Starts (or restarts) on the config file already in `dir`.
    async fn start_in(dir: tempfile::TempDir) -> Api {
        Api::start_with_secrets(dir, &|_| None).await
    }

    /// [`Api::start_in`], the secrets the file names looked up in `secrets`.
    async fn start_with_secrets(
        dir: tempfile::TempDir,
        secrets: &dyn Fn(&str) -> Option<String>,
    ) -> Api {
        let config =
            Config::load_with(&dir.path().join("sesrelay.toml"), secrets).expect("valid config");
        let server = Server::bind(config).await.expect("binds");
        let base = format!("http://{}", server.admin_addr().expect("admin listener"));
        let smtp = server.local_addrs()[0];
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        Api {
            dir,
            base,
            smtp,
            http: reqwest::Client::new(),
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

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("sesrelay.toml")
    }

    fn file(&self) -> String {
        std::fs::read_to_string(self.config_path()).unwrap()
    }

    fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }

    /// Calls the API; returns the status, the `x-amzn-ErrorType` header and the JSON body.
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
        // Every response, success or error, carries a request id, as SES's do.
        let request_id = resp
            .headers()
            .get("x-amzn-RequestId")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(
            uuid::Uuid::parse_str(&request_id).is_ok(),
            "{path}: x-amzn-RequestId {request_id:?}"
        );
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

    /// Expects an error: checks status, code and message.
    async fn err(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: u16,
        code: &str,
        message: &str,
    ) {
        let (got_status, got_code, got_body) = self.call(method.clone(), path, body).await;
        assert_eq!(
            (
                got_status.as_u16(),
                got_code.as_str(),
                got_body["message"].as_str().unwrap_or("")
            ),
            (status, code, message),
            "{method} {path}"
        );
    }

    async fn create_set(&self, name: &str) {
        self.ok(
            Method::POST,
            "/v2/email/configuration-sets",
            Some(json!({"ConfigurationSetName": name})),
        )
        .await;
    }

    async fn create_identity(&self, name: &str, set: Option<&str>) -> Value {
        let mut body = json!({"EmailIdentity": name});
        if let Some(set) = set {
            body["ConfigurationSetName"] = json!(set);
        }
        self.ok(Method::POST, "/v2/email/identities", Some(body))
            .await
    }

    /// Marks an identity verified the way an operator does: in the file, then restart.
    async fn verify_by_hand(self, identity: &str) -> Api {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        let marker = format!("[identities.\"{identity}\"]\nverified = false");
        assert!(text.contains(&marker), "{text}");
        std::fs::write(
            &path,
            text.replace(
                &marker,
                &format!("[identities.\"{identity}\"]\nverified = true"),
            ),
        )
        .unwrap();
        let dir = self.stop().await;
        Api::start_in(dir).await
    }

    /// Waits (at most 10 s) until the outbox holds `n` messages; they, in name order.
    /// Verification messages are sent in the background, after create-email-identity has
    /// answered.
    async fn wait_messages(&self, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} messages in the outbox, found {}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn messages(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.outbox())
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

fn simple(from: &str, to: &str) -> Value {
    json!({
        "FromEmailAddress": from,
        "Destination": {"ToAddresses": [to]},
        "Content": {"Simple": {"Subject": {"Data": "Hello"}, "Body": {"Text": {"Data": "Hi there"}}}},
    })
}

#[tokio::test]
async fn email_identities_from_creation_to_deletion() {
    let api = Api::start("").await;
    api.create_set("my-set").await;
    let created = api
        .create_identity("Sender@Example.com", Some("my-set"))
        .await;
    assert_eq!(
        created,
        json!({
            "IdentityType": "EMAIL_ADDRESS",
            "VerifiedForSendingStatus": false,
            "DkimAttributes": {"SigningEnabled": false, "Status": "NOT_STARTED", "Tokens": []},
        })
    );
    api.err(
        Method::POST,
        "/v2/email/identities",
        Some(json!({"EmailIdentity": "sender@example.com"})),
        400,
        "AlreadyExistsException",
        "Email identity <sender@example.com> already exists.",
    )
    .await;
    api.err(
        Method::POST,
        "/v2/email/identities",
        Some(json!({"EmailIdentity": "not an identity"})),
        400,
        "BadRequestException",
        "Invalid email identity <not an identity>.",
    )
    .await;

    let got = api
        .ok(
            Method::GET,
            "/v2/email/identities/sender%40example.com",
            None,
        )
        .await;
    assert_eq!(got["IdentityType"], "EMAIL_ADDRESS");
    assert_eq!(got["VerifiedForSendingStatus"], false);
    assert_eq!(got["VerificationStatus"], "PENDING");
    assert_eq!(got["ConfigurationSetName"], "my-set");
    assert_eq!(got["Tags"], json!([]));

    // Remove the default (no ConfigurationSetName), then set it again.
    api.ok(
        Method::PUT,
        "/v2/email/identities/sender%40example.com/configuration-set",
        Some(json!({})),
    )
    .await;
    let got = api
        .ok(
            Method::GET,
            "/v2/email/identities/sender%40example.com",
            None,
        )
        .await;
    assert!(got.get("ConfigurationSetName").is_none(), "{got}");
    api.err(
        Method::PUT,
        "/v2/email/identities/sender%40example.com/configuration-set",
        Some(json!({"ConfigurationSetName": "nosuch"})),
        404,
        "NotFoundException",
        "Configuration set <nosuch> does not exist.",
    )
    .await;
    api.err(
        Method::PUT,
        "/v2/email/identities/nobody%40example.com/configuration-set",
        Some(json!({"ConfigurationSetName": "my-set"})),
        404,
        "NotFoundException",
        "Email identity <nobody@example.com> does not exist.",
    )
    .await;
    api.ok(
        Method::PUT,
        "/v2/email/identities/sender%40example.com/configuration-set",
        Some(json!({"ConfigurationSetName": "my-set"})),
    )
    .await;

    let list = api.ok(Method::GET, "/v2/email/identities", None).await;
    assert_eq!(
        list,
        json!({"EmailIdentities": [{
            "IdentityType": "EMAIL_ADDRESS", "IdentityName": "Sender@Example.com",
            "SendingEnabled": false, "VerificationStatus": "PENDING"}]})
    );

    api.ok(
        Method::DELETE,
        "/v2/email/identities/SENDER%40example.com",
        None,
    )
    .await;
    for method in [Method::GET, Method::DELETE] {
        api.err(
            method,
            "/v2/email/identities/sender%40example.com",
            None,
            404,
            "NotFoundException",
            "Email identity <sender@example.com> does not exist.",
        )
        .await;
    }
    assert!(!api.file().contains("identities"), "{}", api.file());
    api.stop().await;
}

#[tokio::test]
async fn a_missing_set_creates_no_identity() {
    let api = Api::start("").await;
    let before = api.file();
    api.err(
        Method::POST,
        "/v2/email/identities",
        Some(json!({"EmailIdentity": "x@example.com", "ConfigurationSetName": "nope"})),
        404,
        "NotFoundException",
        "Configuration set <nope> does not exist.",
    )
    .await;
    api.err(
        Method::GET,
        "/v2/email/identities/x%40example.com",
        None,
        404,
        "NotFoundException",
        "Email identity <x@example.com> does not exist.",
    )
    .await;
    assert_eq!(api.file(), before);
    assert!(api.messages().is_empty(), "no verification message either");
    api.stop().await;
}

#[tokio::test]
async fn configuration_sets_from_creation_to_deletion() {
    let api = Api::start("").await;
    api.ok(
        Method::POST,
        "/v2/email/configuration-sets",
        Some(json!({
            "ConfigurationSetName": "marketing",
            "SendingOptions": {"SendingEnabled": false},
            "DeliveryOptions": {"TlsPolicy": "REQUIRE"},
            "Tags": [{"Key": "team", "Value": "growth"}],
        })),
    )
    .await;
    api.create_set("transactional").await;
    api.err(
        Method::POST,
        "/v2/email/configuration-sets",
        Some(json!({"ConfigurationSetName": "marketing"})),
        400,
        "AlreadyExistsException",
        "Configuration set <marketing> already exists.",
    )
    .await;
    api.err(
        Method::POST, "/v2/email/configuration-sets", Some(json!({"ConfigurationSetName": "no spaces"})),
        400, "BadRequestException",
        "Invalid configuration set name <no spaces>: only alphanumeric ASCII characters, '_', and '-' are allowed, and at most 64 of them.",
    )
    .await;
    api.err(
        Method::POST,
        "/v2/email/configuration-sets",
        Some(json!({})),
        400,
        "BadRequestException",
        "Invalid request body: missing field `ConfigurationSetName` at line 1 column 2",
    )
    .await;

    let got = api
        .ok(Method::GET, "/v2/email/configuration-sets/marketing", None)
        .await;
    assert_eq!(
        got,
        json!({"ConfigurationSetName": "marketing", "SendingOptions": {"SendingEnabled": false},
               "Tags": [{"Key": "team", "Value": "growth"}]})
    );
    api.ok(
        Method::PUT,
        "/v2/email/configuration-sets/marketing/sending",
        Some(json!({"SendingEnabled": true})),
    )
    .await;
    let got = api
        .ok(Method::GET, "/v2/email/configuration-sets/marketing", None)
        .await;
    assert_eq!(got["SendingOptions"]["SendingEnabled"], true);
    // SendingEnabled absent means false, as in SES.
    api.ok(
        Method::PUT,
        "/v2/email/configuration-sets/transactional/sending",
        Some(json!({})),
    )
    .await;
    let got = api
        .ok(
            Method::GET,
            "/v2/email/configuration-sets/transactional",
            None,
        )
        .await;
    assert_eq!(got["SendingOptions"]["SendingEnabled"], false);
    api.err(
        Method::PUT,
        "/v2/email/configuration-sets/nosuch/sending",
        Some(json!({"SendingEnabled": true})),
        404,
        "NotFoundException",
        "Configuration set <nosuch> does not exist.",
    )
    .await;

    // Paging, with GET and query parameters and with POST and a JSON body.
    let first = api
        .ok(Method::GET, "/v2/email/configuration-sets?PageSize=1", None)
        .await;
    assert_eq!(first["ConfigurationSets"], json!(["marketing"]));
    let token = first["NextToken"].as_str().unwrap().to_owned();
    let second = api
        .ok(
            Method::POST,
            "/v2/email/list-configuration-sets",
            Some(json!({"PageSize": 1, "NextToken": token})),
        )
        .await;
    assert_eq!(second, json!({"ConfigurationSets": ["transactional"]}));
    api.err(
        Method::GET,
        "/v2/email/configuration-sets?PageSize=0",
        None,
        400,
        "BadRequestException",
        "PageSize must be a number from 1 to 1000.",
    )
    .await;
    api.err(
        Method::GET,
        "/v2/email/configuration-sets?NextToken=%%%",
        None,
        400,
        "BadRequestException",
        "Invalid NextToken.",
    )
    .await;

    api.ok(
        Method::DELETE,
        "/v2/email/configuration-sets/marketing",
        None,
    )
    .await;
    for method in [Method::GET, Method::DELETE] {
        api.err(
            method,
            "/v2/email/configuration-sets/marketing",
            None,
            404,
            "NotFoundException",
            "Configuration set <marketing> does not exist.",
        )
        .await;
    }
    let list = api
        .ok(Method::GET, "/v2/email/configuration-sets", None)
        .await;
    assert_eq!(list, json!({"ConfigurationSets": ["transactional"]}));
    api.err(
        Method::GET,
        "/v2/email/templates",
        None,
        404,
        "UnknownOperationException",
        "sesrelay does not implement this operation.",
    )
    .await;
    api.stop().await;
}

#[tokio::test]
async fn send_email_runs_the_smtp_policy() {
    let api = Api::start(
        "\n[configuration_sets.marketing]\ntags = { team = \"growth\" }\n\n[configuration_sets.quiet]\nsending_enabled = false\n",
    )
    .await;
    api.create_identity("sender@example.com", Some("marketing"))
        .await;
    api.create_identity("old@example.com", Some("marketing"))
        .await;
    let api = api.verify_by_hand("sender@example.com").await;
    let api = api.verify_by_hand("old@example.com").await;

    let sent = api
        .ok(
            Method::POST,
            "/v2/email/outbound-emails",
            Some(simple("Sender <sender@example.com>", "bob@example.net")),
        )
        .await;
    let id = sent["MessageId"].as_str().unwrap().to_owned();
    // SES's form (region us-east-1: 0100...-000000), and a Simple message's Message-ID
    // names the same id, as SES's do.
    assert!(
        id.starts_with("0100") && id.ends_with("-000000") && id.len() == 60,
        "{id}"
    );
    let eml = std::fs::read_to_string(api.outbox().join(format!("{id}.eml"))).unwrap();
    assert!(eml.contains(&format!(" with HTTP id {id}\r\n")), "{eml}");
    assert!(
        eml.contains(&format!("Message-ID: <{id}@email.amazonses.com>\r\n")),
        "{eml}"
    );
    assert!(
        eml.contains(
            "\r\nX-SES-CONFIGURATION-SET: marketing\r\nX-SES-MESSAGE-TAGS: team=growth\r\n"
        ),
        "{eml}"
    );
    assert!(
        eml.contains("\r\nFrom: Sender <sender@example.com>\r\n"),
        "{eml}"
    );
    assert!(eml.contains("\r\nSubject: Hello\r\n"), "{eml}");
    assert!(eml.contains("\r\nMessage-ID: <"), "{eml}");
    assert!(eml.ends_with("\r\n\r\nHi there\r\n"), "{eml:?}");
    let envelope: Value = serde_json::from_str(
        &std::fs::read_to_string(api.outbox().join(format!("{id}.envelope.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        envelope,
        json!({"mail_from": "sender@example.com", "rcpt_to": ["bob@example.net"]})
    );

    // The API's set overrides; its tags are used alone (the set's still merge in).
    let mut req = simple("sender@example.com", "bob@example.net");
    req["ConfigurationSetName"] = json!("marketing");
    req["EmailTags"] = json!([{"Name": "campaign", "Value": "spring"}]);
    let id = api
        .ok(Method::POST, "/v2/email/outbound-emails", Some(req))
        .await["MessageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let eml = std::fs::read_to_string(api.outbox().join(format!("{id}.eml"))).unwrap();
    assert!(
        eml.contains("X-SES-MESSAGE-TAGS: campaign=spring, team=growth\r\n"),
        "{eml}"
    );

    // Raw content: the envelope comes from the headers; bare LFs become CRLF.
    let raw = "From: sender@example.com\nTo: carol@example.net\nCc: dave@example.net\nSubject: raw\nX-SES-CONFIGURATION-SET: marketing\nX-SES-MESSAGE-TAGS: campaign=raw\n\nraw body\n";
    let req = json!({"Content": {"Raw": {"Data": base64(raw)}}});
    let id = api
        .ok(Method::POST, "/v2/email/outbound-emails", Some(req))
        .await["MessageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let eml = std::fs::read_to_string(api.outbox().join(format!("{id}.eml"))).unwrap();
    assert!(eml.ends_with("\r\nFrom: sender@example.com\r\nTo: carol@example.net\r\nCc: dave@example.net\r\nSubject: raw\r\n\r\nraw body\r\n"), "{eml:?}");
    assert!(eml.contains("X-SES-CONFIGURATION-SET: marketing\r\nX-SES-MESSAGE-TAGS: campaign=raw, team=growth\r\n"), "{eml}");
    let envelope =
        std::fs::read_to_string(api.outbox().join(format!("{id}.envelope.json"))).unwrap();
    assert_eq!(
        envelope,
        r#"{"mail_from":"sender@example.com","rcpt_to":["carol@example.net","dave@example.net"]}"#
    );

    // Refusals, each with SES's code and message.
    let region = "US-EAST-1";
    api.err(Method::POST, "/v2/email/outbound-emails", Some(simple("nobody@example.org", "bob@example.net")),
        400, "MessageRejected",
        &format!("Email address is not verified. The following identities failed the check in region {region}: nobody@example.org")).await;
    let mut req = simple("sender@example.com", "bob@example.net");
    req["ConfigurationSetName"] = json!("nosuch");
    api.err(
        Method::POST,
        "/v2/email/outbound-emails",
        Some(req),
        404,
        "NotFoundException",
        "Configuration set <nosuch> does not exist.",
    )
    .await;
    let mut req = simple("sender@example.com", "bob@example.net");
    req["ConfigurationSetName"] = json!("quiet");
    api.err(
        Method::POST,
        "/v2/email/outbound-emails",
        Some(req),
        400,
        "SendingPausedException",
        "Sending paused for this configuration set.",
    )
    .await;
    let mut req = simple("sender@example.com", "bob@example.net");
    req["EmailTags"] = json!([{"Name": "bad name", "Value": "x"}]);
    api.err(
        Method::POST,
        "/v2/email/outbound-emails",
        Some(req),
        400,
        "BadRequestException",
        "Invalid tag name <bad name>: only alphanumeric ASCII characters, '_',  '-' are allowed.",
    )
    .await;
    // A deleted default is a bad request.
    api.ok(
        Method::DELETE,
        "/v2/email/configuration-sets/marketing",
        None,
    )
    .await;
    api.err(
        Method::POST,
        "/v2/email/outbound-emails",
        Some(simple("old@example.com", "bob@example.net")),
        400,
        "BadRequestException",
        "Configuration set <marketing> does not exist.",
    )
    .await;
    // Malformed requests.
    let mut req = simple("sender@example.com", "bob@example.net");
    req["Destination"] = json!({});
    api.err(
        Method::POST,
        "/v2/email/outbound-emails",
        Some(req),
        400,
        "BadRequestException",
        "The message must have at least one recipient: give Destination.",
    )
    .await;
    api.err(
        Method::POST,
        "/v2/email/outbound-emails",
        Some(json!({"Content": {"Raw": {"Data": "%%%"}}})),
        400,
        "BadRequestException",
        "Content.Raw.Data is not valid base64.",
    )
    .await;
    api.err(Method::POST, "/v2/email/outbound-emails",
        Some(json!({"Content": {"Template": {"TemplateName": "t"}}, "FromEmailAddress": "sender@example.com"})),
        400, "BadRequestException",
        "Content.Template is not supported by sesrelay; send Simple or Raw content.").await;
    let mut req = simple("sender@example.com", "bob@example.net");
    req["Content"]["Raw"] = json!({"Data": base64("From: sender@example.com\r\n\r\nx")});
    api.err(
        Method::POST,
        "/v2/email/outbound-emails",
        Some(req),
        400,
        "BadRequestException",
        "Content must hold exactly one of Simple, Raw and Template.",
    )
    .await;
    let mut req = simple("not an address", "bob@example.net");
    req["FromEmailAddress"] = json!("not an address");
    api.err(
        Method::POST,
        "/v2/email/outbound-emails",
        Some(req),
        400,
        "BadRequestException",
        "Invalid email address <not an address>.",
    )
    .await;
    api.stop().await;
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn the_file_keeps_its_comments_and_a_restart_keeps_every_change() {
    let api =
        Api::start("\n# Sets below were made by hand.\n[configuration_sets.by-hand]  # keep me\n")
            .await;
    api.create_set("api-set").await;
    api.create_identity("example.org", Some("api-set")).await;
    api.create_identity("joe@example.org", None).await;
    api.ok(
        Method::PUT,
        "/v2/email/configuration-sets/by-hand/sending",
        Some(json!({"SendingEnabled": false})),
    )
    .await;
    let text = api.file();
    // The operator's lines, in their order, untouched.
    let mut at = 0;
    for line in [
        "# The operator's comment at the top.\n",
        "region = \"us-east-1\"   # shown upper-cased\n",
        "   # where mail lands\n",
        "# Sets below were made by hand.\n",
        "[configuration_sets.by-hand]  # keep me\nsending_enabled = false\n",
        "[configuration_sets.api-set]\n",
        "[identities.\"example.org\"]\nverified = false\ndefault_configuration_set = \"api-set\"\nverification_token = \"",
        "[identities.\"joe@example.org\"]\nverified = false\nlink_nonce = \"",
    ] {
        let found = text[at..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} not in order in:\n{text}"));
        at += found + line.len();
    }
    let live = api
        .ok(Method::GET, "/v2/email/identities/example.org", None)
        .await;
    let dir = api.stop().await;
    let api = Api::start_in(dir).await;
    let after = api
        .ok(Method::GET, "/v2/email/identities/example.org", None)
        .await;
    assert_eq!(live, after);
    assert_eq!(after["ConfigurationSetName"], "api-set");
    assert_eq!(
        after["DkimAttributes"]["Tokens"].as_array().unwrap().len(),
        1
    );
    let set = api
        .ok(Method::GET, "/v2/email/configuration-sets/by-hand", None)
        .await;
    assert_eq!(set["SendingOptions"]["SendingEnabled"], false);
    api.stop().await;
}

#[tokio::test]
async fn concurrent_changes_are_all_kept() {
    let api = std::sync::Arc::new(Api::start("").await);
    let mut tasks = Vec::new();
    for i in 0..25 {
        let a = std::sync::Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            a.create_set(&format!("set-{i:02}")).await;
        }));
        let a = std::sync::Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            a.create_identity(&format!("domain{i:02}.example"), None)
                .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let config = Config::load(&api.config_path()).unwrap();
    assert_eq!(config.policy.configuration_sets.len(), 25);
    assert_eq!(config.policy.identities.len(), 25);
    let listed = api
        .ok(Method::GET, "/v2/email/configuration-sets", None)
        .await;
    assert_eq!(listed["ConfigurationSets"].as_array().unwrap().len(), 25);
    let api = std::sync::Arc::into_inner(api).unwrap();
    api.stop().await;
}

/// The link in the verification message, as a path on the admin listener.
fn link_path(message: &str) -> String {
    let start = message.find("/verify?token=").expect("a link");
    let end = message[start..]
        .find(['\r', '\n'])
        .map_or(message.len(), |e| start + e);
    message[start..end].to_owned()
}

#[tokio::test]
async fn verification_links_verify_and_nothing_else_does() {
    let api = Api::start("\n[verification]\nsender = \"verify@relay.example\"\n").await;
    api.create_identity("joe@example.com", None).await;
    let messages = api.wait_messages(1).await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert!(
        message.contains("From: verify@relay.example\r\n"),
        "{message}"
    );
    assert!(message.contains("To: joe@example.com\r\n"), "{message}");
    assert!(
        message.contains("Subject: Email Address Verification Request in region US-EAST-1\r\n"),
        "{message}"
    );
    assert!(
        message.contains("This link expires 24 hours after"),
        "{message}"
    );
    let envelope: Value = serde_json::from_str(
        &std::fs::read_dir(api.outbox())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".envelope.json"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        envelope,
        json!({"mail_from": "verify@relay.example", "rcpt_to": ["joe@example.com"]})
    );
    let path = link_path(message);
    let get = |p: String| {
        let url = format!("{}{p}", api.base);
        let http = api.http.clone();
        async move {
            let resp = http.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };

    // Tampered: another identity under the same signature.
    let (_, signature) = path
        .trim_start_matches("/verify?token=")
        .split_once('.')
        .unwrap();
    let forged = format!("/verify?token={}.{signature}", {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("9999999999:eve@example.com")
    });
    let (status, body) = get(forged).await;
    assert_eq!(status, 400);
    assert!(body.contains("its signature does not match"), "{body}");
    let (status, _) = get("/verify?token=garbage".to_owned()).await;
    assert_eq!(status, 400);

    // Expired: a link signed with the relay's own key, an hour past its expiry.
    let config = Config::load(&api.config_path()).unwrap();
    let verifier = Verifier::new(&config).unwrap();
    let nonce = config
        .identity("joe@example.com")
        .and_then(|(_, record)| record.link_nonce())
        .expect("the identity keeps its link's nonce")
        .to_owned();
    let stale = verifier.token(
        "joe@example.com",
        &nonce,
        SystemTime::now() - Duration::from_secs(3600),
    );
    let (status, body) = get(format!("/verify?token={stale}")).await;
    assert_eq!(status, 400);
    assert!(body.contains("has expired"), "{body}");
    let got = api
        .ok(Method::GET, "/v2/email/identities/joe%40example.com", None)
        .await;
    assert_eq!(got["VerificationStatus"], "PENDING");

    // The real link.
    let (status, body) = get(path.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("successfully verified the email address joe@example.com"),
        "{body}"
    );
    let got = api
        .ok(Method::GET, "/v2/email/identities/joe%40example.com", None)
        .await;
    assert_eq!(got["VerifiedForSendingStatus"], true);
    assert_eq!(got["VerificationStatus"], "SUCCESS");
    assert!(
        api.file()
            .contains("[identities.\"joe@example.com\"]\nverified = true\n")
    );
    // A link for an identity deleted since then verifies nothing, nor does it verify the
    // identity when it is created again.
    api.ok(
        Method::DELETE,
        "/v2/email/identities/joe%40example.com",
        None,
    )
    .await;
    let (status, body) = get(path.clone()).await;
    assert_eq!(status, 404, "{body}");
    api.create_identity("joe@example.com", None).await;
    let (status, body) = get(path).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no longer valid"), "{body}");
    let got = api
        .ok(Method::GET, "/v2/email/identities/joe%40example.com", None)
        .await;
    assert_eq!(got["VerificationStatus"], "PENDING");
    api.stop().await;
}

/// A DNS server on 127.0.0.1 that answers TXT `_amazonses.<domain>` from a table.
async fn dns_server(records: Vec<(String, String)>) -> std::net::SocketAddr {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::{RData, Record};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::new();
            answer.set_id(query.id());
            answer.set_message_type(MessageType::Response);
            answer.set_op_code(query.op_code());
            answer.set_recursion_desired(query.recursion_desired());
            answer.set_recursion_available(true);
            answer.add_queries(query.queries().to_vec());
            let mut found = false;
            for q in query.queries() {
                let name = q.name().to_ascii().to_ascii_lowercase();
                for (record_name, value) in &records {
                    if name.trim_end_matches('.') == record_name {
                        answer.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::TXT(TXT::new(vec![value.clone()])),
                        ));
                        found = true;
                    }
                }
            }
            if !found {
                answer.set_response_code(ResponseCode::NXDomain);
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

#[tokio::test]
async fn domains_verify_through_their_txt_record() {
    // The token is only known once the identity exists: start with an empty DNS, then
    // restart the relay against a DNS that has the record.
    let empty = dns_server(vec![]).await;
    let api = Api::start(&format!("\n[verification]\ndns_resolver = \"{empty}\"\n")).await;
    let created = api.create_identity("Example.ORG", None).await;
    assert_eq!(created["IdentityType"], "DOMAIN");
    assert_eq!(created["DkimAttributes"]["Status"], "PENDING");
    let token = created["DkimAttributes"]["Tokens"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let got = api
        .ok(Method::GET, "/v2/email/identities/example.org", None)
        .await;
    assert_eq!(got["VerificationStatus"], "PENDING");
    assert!(api.messages().is_empty(), "domains get no message");

    let dir = api.stop().await;
    let path = dir.path().join("sesrelay.toml");
    let wrong = dns_server(vec![(
        "_amazonses.example.org".into(),
        "not-the-token".into(),
    )])
    .await;
    let right = dns_server(vec![("_amazonses.example.org".into(), token.clone())]).await;
    for (dns, verified) in [(wrong, false), (right, true)] {
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find("dns_resolver = \"").unwrap() + "dns_resolver = \"".len();
        let end = start + text[start..].find('"').unwrap();
        std::fs::write(&path, format!("{}{dns}{}", &text[..start], &text[end..])).unwrap();
        let api = Api::start_in(tempdir_holding(&path)).await;
        let got = api
            .ok(Method::GET, "/v2/email/identities/example.org", None)
            .await;
        assert_eq!(got["VerifiedForSendingStatus"], verified, "{got}");
        assert_eq!(
            got["DkimAttributes"]["Status"],
            if verified { "SUCCESS" } else { "PENDING" }
        );
        assert_eq!(api.file().contains("verified = true"), verified);
        let moved = api.stop().await;
        std::fs::copy(moved.path().join("sesrelay.toml"), &path).unwrap();
    }
    drop(dir);
}

/// A new temporary directory holding a copy of the config file at `path` (and its key).
fn tempdir_holding(path: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(path, dir.path().join("sesrelay.toml")).unwrap();
    let key = path.with_file_name("sesrelay.verification-key");
    if key.exists() {
        std::fs::copy(&key, dir.path().join("sesrelay.verification-key")).unwrap();
    }
    dir
}

#[tokio::test]
async fn with_access_keys_unsigned_requests_are_refused() {
    // The secret is looked up at load, here in a map rather than the environment.
    let var = "SESRELAY_TEST_ADMIN_SECRET_A";
    let secrets = std::collections::HashMap::from([(var, "wJalrXUtnFEMI-test-secret")]);
    let dir = tempfile::tempdir().unwrap();
    let text = BASE_CONFIG
        .replace("OUTBOX", &dir.path().join("outbox").display().to_string())
        .replace("listen = \"127.0.0.1:0\"\n", &format!("listen = \"127.0.0.1:0\"\naccess_keys = [{{ id = \"AKIDTEST\", secret_env = \"{var}\" }}]\n"));
    std::fs::write(dir.path().join("sesrelay.toml"), text).unwrap();
    let api = Api::start_with_secrets(dir, &|v| secrets.get(v).map(|s| s.to_string())).await;
    api.err(
        Method::GET,
        "/v2/email/configuration-sets",
        None,
        403,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    )
    .await;
    let now = sigv4_date(SystemTime::now());
    let resp = api.http
        .get(format!("{}/v2/email/configuration-sets", api.base))
        .header("x-amz-date", &now)
        .header("authorization", format!(
            "AWS4-HMAC-SHA256 Credential=AKIDOTHER/{}/us-east-1/ses/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
            &now[..8], "0".repeat(64)))
        .send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        resp.headers()["x-amzn-ErrorType"],
        "UnrecognizedClientException"
    );
    let resp = api.http
        .get(format!("{}/v2/email/configuration-sets", api.base))
        .header("x-amz-date", &now)
        .header("authorization", format!(
            "AWS4-HMAC-SHA256 Credential=AKIDTEST/{}/us-east-1/ses/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
            &now[..8], "0".repeat(64)))
        .send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        resp.headers()["x-amzn-ErrorType"],
        "InvalidSignatureException"
    );
    // The verification link needs no signature: its token is its proof.
    let resp = api
        .http
        .get(format!("{}/verify?token=x.y", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    api.stop().await;
}

/// `YYYYMMDDTHHMMSSZ`, the `X-Amz-Date` form.
fn sigv4_date(t: SystemTime) -> String {
    let format =
        time::format_description::parse_borrowed::<2>("[year][month][day]T[hour][minute][second]Z")
            .expect("a valid format");
    time::OffsetDateTime::from(t)
        .format(&format)
        .expect("formats")
}

#[tokio::test]
async fn smtp_mail_follows_api_changes_at_once() {
    let api = Api::start("").await;
    api.create_set("first").await;
    api.create_identity("example.com", Some("first")).await;
    let api = api.verify_by_hand("example.com").await;
    let send = |smtp| async move {
        let mut stream = tokio::net::TcpStream::connect(smtp).await.unwrap();
        let script = b"EHLO t\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n";
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(script).await.unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("354 ") {
            let n = stream.read(&mut buf).await.unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        stream
            .write_all(b"From: a@example.com\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            .await
            .unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        rest.lines().next().unwrap_or_default().to_owned()
    };
    assert!(send(api.smtp).await.starts_with("250 2.0.0 Ok "));
    api.ok(Method::DELETE, "/v2/email/configuration-sets/first", None)
        .await;
    assert_eq!(
        send(api.smtp).await,
        "554 5.3.0 Configuration Set does not exist: Configuration set <first> does not exist."
    );
    api.create_set("first").await;
    assert!(send(api.smtp).await.starts_with("250 2.0.0 Ok "));
    api.stop().await;
}
