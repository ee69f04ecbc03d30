//! The SES v1 (Query) API on the admin listener, driven by the real clients: boto3's `ses`
//! client (`$SESRELAY_PYTHON`, [`common::python`]) and `aws ses` (`$SESRELAY_AWS_CLI`,
//! [`common::aws`]), against a relay in this process whose upstream is the capturing
//! [`Capture`]. Sends take the policy path of SMTP and v2 (sets, tags, default sets,
//! SES's refusals, the account's quotas); identities are written to the configuration
//! file; every answer is read by botocore's own parser.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::aws::Cli;
use common::python::run_python;
use common::{Capture, Captured, Script, Served};
use serde_json::{Value, json};

/// The relay's configuration: the sets and identities the tests use, `[account]` as given.
fn config_text(upstream: &str, account: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
region = "us-east-1"
shutdown_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[upstream]
url = "{upstream}"

[configuration_sets.transactional]
[configuration_sets.marketing]
[configuration_sets.paused]
sending_enabled = false

[identities."example.com"]
verified = true
default_configuration_set = "transactional"

[identities."joe@example.com"]
verified = true

[identities."quiet.example.com"]
verified = true
default_configuration_set = "paused"

[account]
{account}
"#
    )
}

/// A relay with its admin listener, its upstream and its configuration file.
struct Setup {
    _dir: tempfile::TempDir,
    file: PathBuf,
    upstream: Capture,
    served: Served,
}

impl Setup {
    async fn start(account: &str) -> Setup {
        let upstream = Capture::start(Script::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sesrelay.toml");
        std::fs::write(&file, config_text(&upstream.url(), account)).unwrap();
        let served = Served::load(&file).await;
        Setup {
            _dir: dir,
            file,
            upstream,
            served,
        }
    }

    fn base(&self) -> String {
        self.served.base()
    }

    /// Runs `script` (after [`PRELUDE`]) with the endpoint as its argument; the JSON it
    /// prints.
    async fn boto3(&self, script: &str) -> Value {
        let out = run_python(&format!("{PRELUDE}{script}"), &[&self.base()]).await;
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("the script printed no JSON ({e}):\n{out}"))
    }

    async fn stop(self) {
        self.served.stop().await;
    }
}

/// What every boto3 script starts with: `ses`, the v1 client, and `sesv2`, on the
/// endpoint, no retries (a throttle must be seen as it is); `error(call)` runs a call that
/// must fail and gives its code, message and HTTP status.
const PRELUDE: &str = r#"
import sys, json, time, boto3, botocore.exceptions
from botocore.config import Config
def make(service):
    return boto3.client(
        service, endpoint_url=sys.argv[1], region_name="us-east-1",
        aws_access_key_id="AKIDBOTO3", aws_secret_access_key="boto3-secret",
        config=Config(read_timeout=10, connect_timeout=5,
                      retries={"mode": "standard", "max_attempts": 1}))
ses = make("ses")
sesv2 = make("sesv2")
def error(call):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return {"code": e.response["Error"]["Code"], "message": e.response["Error"]["Message"],
                "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}
    return {"code": None}
def meta(answer):
    answer.pop("ResponseMetadata", None)
    return answer
"#;

/// The message the upstream received for `rcpt` first in its envelope.
fn received_for<'a>(messages: &'a [Captured], rcpt: &str) -> &'a Captured {
    messages
        .iter()
        .find(|m| m.rcpt_to.first().map(String::as_str) == Some(rcpt))
        .unwrap_or_else(|| panic!("no message for {rcpt}: {messages:#?}"))
}

fn text(m: &Captured) -> String {
    String::from_utf8_lossy(&m.content).into_owned()
}

fn is_ses_message_id(id: &str) -> bool {
    id.starts_with("0100") && id.ends_with("-000000") && id.len() == 60
}

#[tokio::test]
async fn boto3_sends_raw_and_simple_messages_through_the_policy() {
    let setup = Setup::start("").await;
    let out = setup
        .boto3(
            r#"
raw = (b"From: App <app@example.com>\r\nTo: bob@example.net\r\nSubject: raw\r\n"
       b"X-SES-CONFIGURATION-SET: transactional\r\nX-SES-MESSAGE-TAGS: origin=header\r\n\r\nhello raw\r\n")
r1 = ses.send_raw_email(RawMessage={"Data": raw}, ConfigurationSetName="marketing",
                        Tags=[{"Name": "campaign", "Value": "launch"}, {"Name": "team", "Value": "growth"}])
r2 = ses.send_raw_email(Source="app@example.com", Destinations=["carol@example.net"],
                        RawMessage={"Data": b"From: app@example.com\r\nTo: dave@example.net\r\nSubject: default\r\n\r\nhi\r\n"})
r3 = ses.send_email(Source="App <app@example.com>",
                    Destination={"ToAddresses": ["erin@example.net"], "CcAddresses": ["frank@example.net"]},
                    Message={"Subject": {"Data": "Simple subject", "Charset": "UTF-8"},
                             "Body": {"Text": {"Data": "plain body"}, "Html": {"Data": "<p>html body</p>"}}},
                    ReplyToAddresses=["help@example.com"], Tags=[{"Name": "kind", "Value": "simple"}])
print(json.dumps({"raw": r1["MessageId"], "default": r2["MessageId"], "simple": r3["MessageId"]}))
"#,
        )
        .await;
    for id in ["raw", "default", "simple"] {
        let id = out[id].as_str().unwrap();
        assert!(is_ses_message_id(id), "{id}");
    }
    let messages = setup.upstream.wait_for(3).await;

    // The API's set overrides the header's; the API's tags replace the header's.
    let raw = received_for(&messages, "bob@example.net");
    assert_eq!(
        common::header(&raw.content, "X-SES-CONFIGURATION-SET"),
        ["marketing"]
    );
    let tags = common::header(&raw.content, "X-SES-MESSAGE-TAGS");
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert!(tags[0].contains("campaign=launch"), "{tags:?}");
    assert!(tags[0].contains("team=growth"), "{tags:?}");
    assert!(!tags[0].contains("origin=header"), "{tags:?}");
    assert_eq!(raw.mail_from, "app@example.com");
    assert!(text(raw).contains("hello raw"));

    // Destinations is the envelope, Source the envelope sender; the identity's default
    // set applies.
    let default = received_for(&messages, "carol@example.net");
    assert_eq!(default.rcpt_to, ["carol@example.net"]);
    assert_eq!(
        common::header(&default.content, "X-SES-CONFIGURATION-SET"),
        ["transactional"]
    );

    // SendEmail: a MIME message made of Subject and bodies, its Message-ID the MessageId.
    let simple = received_for(&messages, "erin@example.net");
    assert_eq!(simple.rcpt_to, ["erin@example.net", "frank@example.net"]);
    let body = text(simple);
    assert!(body.contains("Subject: Simple subject"), "{body}");
    assert!(body.contains("plain body"), "{body}");
    assert!(body.contains("<p>html body</p>"), "{body}");
    assert!(body.contains("Reply-To: help@example.com"), "{body}");
    assert!(
        body.contains(&format!(
            "Message-ID: <{}@email.amazonses.com>",
            out["simple"].as_str().unwrap()
        )),
        "{body}"
    );
    assert_eq!(
        common::header(&simple.content, "X-SES-CONFIGURATION-SET"),
        ["transactional"]
    );
    assert_eq!(
        common::header(&simple.content, "X-SES-MESSAGE-TAGS"),
        ["kind=simple"]
    );
    setup.stop().await;
}

#[tokio::test]
async fn boto3_gets_ses_v1_errors() {
    let setup = Setup::start("").await;
    let out = setup
        .boto3(
            r#"
def raw(sender):
    return {"Data": ("From: %s\r\nTo: bob@example.net\r\nSubject: x\r\n\r\nx\r\n" % sender).encode()}
out = {}
out["unverified"] = error(lambda: ses.send_raw_email(RawMessage=raw("stranger@elsewhere.test")))
out["no_set"] = error(lambda: ses.send_raw_email(RawMessage=raw("app@example.com"), ConfigurationSetName="nope"))
out["paused_set"] = error(lambda: ses.send_raw_email(RawMessage=raw("app@quiet.example.com")))
out["bad_tag"] = error(lambda: ses.send_raw_email(RawMessage=raw("app@example.com"), Tags=[{"Name": "bad name", "Value": "v"}]))
out["no_from"] = error(lambda: ses.send_raw_email(RawMessage={"Data": b"To: bob@example.net\r\n\r\nx\r\n"}))
out["bad_source"] = error(lambda: ses.send_email(Source="not an address", Destination={"ToAddresses": ["bob@example.net"]},
                                                 Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}))
out["unknown_action"] = error(lambda: ses.list_templates(MaxItems=1))
out["enabled_before"] = ses.get_account_sending_enabled()["Enabled"]
sesv2.put_account_sending_attributes(SendingEnabled=False)
out["enabled_paused"] = ses.get_account_sending_enabled()["Enabled"]
out["paused_account"] = error(lambda: ses.send_raw_email(RawMessage=raw("app@example.com")))
sesv2.put_account_sending_attributes(SendingEnabled=True)
out["enabled_after"] = ses.get_account_sending_enabled()["Enabled"]
print(json.dumps(out))
"#,
        )
        .await;
    let expect = |key: &str, code: &str, message: &str| {
        assert_eq!(
            out[key],
            json!({"code": code, "message": message, "status": 400}),
            "{key}"
        );
    };
    expect(
        "unverified",
        "MessageRejected",
        "Email address is not verified. The following identities failed the check in region US-EAST-1: stranger@elsewhere.test",
    );
    expect(
        "no_set",
        "ConfigurationSetDoesNotExist",
        "Configuration set <nope> does not exist.",
    );
    expect(
        "paused_set",
        "ConfigurationSetSendingPausedException",
        "Sending paused for this configuration set.",
    );
    expect(
        "paused_account",
        "AccountSendingPausedException",
        "Sending paused for this account. For more information, please check the inbox of the email address associated with your AWS account.",
    );
    assert_eq!(out["bad_tag"]["code"], "InvalidParameterValue", "{out}");
    assert!(
        out["bad_tag"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid tag name <bad name>"),
        "{out}"
    );
    expect(
        "no_from",
        "InvalidParameterValue",
        "Missing required header 'From'.",
    );
    expect(
        "bad_source",
        "InvalidParameterValue",
        "Invalid email address <not an address>.",
    );
    expect(
        "unknown_action",
        "InvalidAction",
        "Unrecognized action: sesrelay does not serve the v1 action ListTemplates.",
    );
    assert_eq!(out["enabled_before"], true);
    assert_eq!(out["enabled_paused"], false);
    assert_eq!(out["enabled_after"], true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(setup.upstream.messages().is_empty(), "nothing was sent");
    setup.stop().await;
}

#[tokio::test]
async fn boto3_sees_the_quotas_and_the_statistics() {
    let setup = Setup::start("max_send_rate = 1\nmax_24_hour_send = 3").await;
    let out = setup
        .boto3(
            r#"
def raw(*to):
    return {"Data": ("From: app@example.com\r\nTo: %s\r\nSubject: q\r\n\r\nq\r\n" % ", ".join(to)).encode()}
out = {}
out["quota_before"] = meta(ses.get_send_quota())
out["statistics_before"] = meta(ses.get_send_statistics())
ses.send_raw_email(RawMessage=raw("a@example.net", "b@example.net"))
out["rate"] = error(lambda: ses.send_raw_email(RawMessage=raw("c@example.net")))
out["quota_after"] = meta(ses.get_send_quota())
time.sleep(1.2)
out["daily"] = error(lambda: ses.send_raw_email(RawMessage=raw("c@example.net", "d@example.net")))
out["rejected"] = error(lambda: ses.send_raw_email(RawMessage=raw("x@example.net"), ConfigurationSetName="nope"))
points = ses.get_send_statistics()["SendDataPoints"]
out["points"] = [{k: v for k, v in p.items() if k != "Timestamp"} for p in points]
out["timestamps_are_dates"] = all(hasattr(p["Timestamp"], "isoformat") for p in points)
print(json.dumps(out))
"#,
        )
        .await;
    assert_eq!(
        out["quota_before"],
        json!({"Max24HourSend": 3.0, "MaxSendRate": 1.0, "SentLast24Hours": 0.0})
    );
    assert_eq!(out["statistics_before"], json!({"SendDataPoints": []}));
    assert_eq!(
        out["rate"],
        json!({"code": "Throttling", "message": "Maximum sending rate exceeded.", "status": 400})
    );
    // Quotas count recipients: one message to two.
    assert_eq!(out["quota_after"]["SentLast24Hours"], json!(2.0));
    assert_eq!(
        out["daily"],
        json!({"code": "Throttling", "message": "Daily message quota exceeded.", "status": 400})
    );
    assert_eq!(out["rejected"]["code"], "ConfigurationSetDoesNotExist");
    // Everything fell in this quarter hour (or, at its turn, in two).
    let points = out["points"].as_array().unwrap();
    let sum = |field: &str| {
        points
            .iter()
            .map(|p| p[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!((1..=2).contains(&points.len()), "{out}");
    assert_eq!(sum("DeliveryAttempts"), 2, "{out}");
    assert_eq!(sum("Rejects"), 1, "{out}");
    assert_eq!(sum("Bounces"), 0, "{out}");
    assert_eq!(sum("Complaints"), 0, "{out}");
    assert_eq!(out["timestamps_are_dates"], true);
    assert_eq!(setup.upstream.wait_for(1).await.len(), 1);
    setup.stop().await;
}

#[tokio::test]
async fn boto3_identity_lifecycle_is_written_to_the_file() {
    let setup = Setup::start("").await;
    let out = setup
        .boto3(
            r#"
out = {}
meta(ses.verify_email_identity(EmailAddress="new@example.org"))
ses.verify_email_address(EmailAddress="old@example.org")
out["token"] = ses.verify_domain_identity(Domain="newdomain.test")["VerificationToken"]
out["token_again"] = ses.verify_domain_identity(Domain="newdomain.test")["VerificationToken"]
out["attributes"] = ses.get_identity_verification_attributes(
    Identities=["new@example.org", "newdomain.test", "example.com", "missing@nowhere.test"])["VerificationAttributes"]
out["addresses"] = ses.list_identities(IdentityType="EmailAddress")["Identities"]
out["domains"] = ses.list_identities(IdentityType="Domain")["Identities"]
page1 = ses.list_identities(MaxItems=2)
page2 = ses.list_identities(MaxItems=2, NextToken=page1["NextToken"])
out["pages"] = [page1["Identities"], page2["Identities"]]
out["all"] = [i for p in ses.get_paginator("list_identities").paginate(PaginationConfig={"PageSize": 3})
              for i in p["Identities"]]
out["verified"] = ses.list_verified_email_addresses()["VerifiedEmailAddresses"]
out["bad_type"] = error(lambda: ses._make_api_call("ListIdentities", {"IdentityType": "Phone"}))
out["bad_address"] = error(lambda: ses.verify_email_identity(EmailAddress="nobody"))
time.sleep(0.5)
ses.delete_identity(Identity="new@example.org")
ses.delete_verified_email_address(EmailAddress="old@example.org")
ses.delete_identity(Identity="never@nowhere.test")
out["after"] = ses.list_identities()["Identities"]
print(json.dumps(out))
"#,
        )
        .await;
    let token = out["token"].as_str().unwrap();
    assert!(!token.is_empty(), "{out}");
    assert_eq!(
        out["token_again"], token,
        "the same token for the same domain"
    );
    assert_eq!(
        out["attributes"],
        json!({
            "new@example.org": {"VerificationStatus": "Pending"},
            "newdomain.test": {"VerificationStatus": "Pending", "VerificationToken": token},
            "example.com": {"VerificationStatus": "Success"},
        })
    );
    assert_eq!(
        out["addresses"],
        json!(["joe@example.com", "new@example.org", "old@example.org"])
    );
    assert_eq!(
        out["domains"],
        json!(["example.com", "newdomain.test", "quiet.example.com"])
    );
    let everything = json!([
        "example.com",
        "joe@example.com",
        "new@example.org",
        "newdomain.test",
        "old@example.org",
        "quiet.example.com"
    ]);
    assert_eq!(
        out["pages"],
        json!([
            ["example.com", "joe@example.com"],
            ["new@example.org", "newdomain.test"]
        ])
    );
    assert_eq!(out["all"], everything);
    assert_eq!(out["verified"], json!(["joe@example.com"]));
    assert_eq!(out["bad_type"]["code"], "InvalidParameterValue", "{out}");
    assert_eq!(
        out["bad_address"],
        json!({"code": "InvalidParameterValue", "message": "Invalid email address <nobody>.", "status": 400})
    );
    assert_eq!(
        out["after"],
        json!([
            "example.com",
            "joe@example.com",
            "newdomain.test",
            "quiet.example.com"
        ])
    );
    // The file has the domain and its token, and neither address any more.
    let file = std::fs::read_to_string(&setup.file).unwrap();
    assert!(file.contains("newdomain.test"), "{file}");
    assert!(file.contains(token), "{file}");
    assert!(!file.contains("new@example.org"), "{file}");
    assert!(!file.contains("old@example.org"), "{file}");
    // Both addresses were sent their verification message, in the background.
    let messages = setup.upstream.wait_for(2).await;
    let mut to: Vec<&str> = messages.iter().map(|m| m.rcpt_to[0].as_str()).collect();
    to.sort();
    assert_eq!(to, ["new@example.org", "old@example.org"]);
    assert!(text(&messages[0]).contains("Email Address Verification Request"));
    setup.stop().await;
}

#[tokio::test]
async fn boto3_lists_and_describes_configuration_sets() {
    let setup = Setup::start("").await;
    let out = setup
        .boto3(
            r#"
out = {}
out["all"] = meta(ses.list_configuration_sets())
page1 = ses.list_configuration_sets(MaxItems=2)
out["page1"] = meta(page1)
out["page2"] = meta(ses.list_configuration_sets(MaxItems=2, NextToken=page1["NextToken"]))
out["paused"] = meta(ses.describe_configuration_set(ConfigurationSetName="paused",
                                                   ConfigurationSetAttributeNames=["reputationOptions"]))
out["plain"] = meta(ses.describe_configuration_set(ConfigurationSetName="marketing"))
out["missing"] = error(lambda: ses.describe_configuration_set(ConfigurationSetName="nope"))
print(json.dumps(out))
"#,
        )
        .await;
    let sets = |names: &[&str]| json!(names.iter().map(|n| json!({"Name": n})).collect::<Vec<_>>());
    assert_eq!(
        out["all"],
        json!({"ConfigurationSets": sets(&["marketing", "paused", "transactional"])})
    );
    assert_eq!(
        out["page1"]["ConfigurationSets"],
        sets(&["marketing", "paused"])
    );
    assert_eq!(
        out["page2"],
        json!({"ConfigurationSets": sets(&["transactional"])})
    );
    assert_eq!(
        out["paused"],
        json!({
            "ConfigurationSet": {"Name": "paused"},
            "ReputationOptions": {"SendingEnabled": false, "ReputationMetricsEnabled": false},
        })
    );
    assert_eq!(
        out["plain"],
        json!({"ConfigurationSet": {"Name": "marketing"}})
    );
    assert_eq!(
        out["missing"],
        json!({"code": "ConfigurationSetDoesNotExist", "message": "Configuration set <nope> does not exist.", "status": 400})
    );
    setup.stop().await;
}

// ---------------------------------------------------------------------------------------
// The aws CLI.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_aws_cli_speaks_v1() {
    let setup = Setup::start("max_24_hour_send = 100").await;
    let base = setup.base();
    let cli = Cli::ses(base.clone());
    let dir = tempfile::tempdir().unwrap();
    let message = dir.path().join("message.json");
    std::fs::write(
        &message,
        json!({
            "Data": "From: app@example.com\r\nTo: bob@example.net\r\nSubject: from the CLI\r\n\r\ncli body\r\n"
        })
        .to_string(),
    )
    .unwrap();
    let raw_arg = format!("file://{}", message.display());
    let sent = cli
        .ok(&[
            "send-raw-email",
            "--raw-message",
            &raw_arg,
            "--configuration-set-name",
            "marketing",
            "--tags",
            "Name=via,Value=cli",
        ])
        .await;
    assert!(
        is_ses_message_id(sent["MessageId"].as_str().unwrap()),
        "{sent}"
    );
    let sent = cli
        .ok(&[
            "send-email",
            "--from",
            "joe@example.com",
            "--to",
            "carol@example.net",
            "--subject",
            "simple from the CLI",
            "--text",
            "text part",
        ])
        .await;
    assert!(
        is_ses_message_id(sent["MessageId"].as_str().unwrap()),
        "{sent}"
    );
    let messages = setup.upstream.wait_for(2).await;
    let raw = received_for(&messages, "bob@example.net");
    assert!(text(raw).contains("cli body"));
    assert_eq!(
        common::header(&raw.content, "X-SES-CONFIGURATION-SET"),
        ["marketing"]
    );
    assert_eq!(
        common::header(&raw.content, "X-SES-MESSAGE-TAGS"),
        ["via=cli"]
    );
    let simple = received_for(&messages, "carol@example.net");
    assert!(text(simple).contains("Subject: simple from the CLI"));
    assert!(text(simple).contains("text part"));

    assert_eq!(
        cli.ok(&["get-send-quota"]).await,
        json!({"Max24HourSend": 100.0, "MaxSendRate": -1.0, "SentLast24Hours": 2.0})
    );
    cli.fails(&[
            "send-email",
            "--from",
            "someone@elsewhere.test",
            "--to",
            "carol@example.net",
            "--subject",
            "s",
            "--text",
            "t",
        ],
        "SendEmail",
        "MessageRejected",
        "Email address is not verified. The following identities failed the check in region US-EAST-1: someone@elsewhere.test",
    )
    .await;

    cli.ok(&[
        "verify-email-identity",
        "--email-address",
        "cli@example.org",
    ])
    .await;
    let token = cli
        .ok(&["verify-domain-identity", "--domain", "cli.test"])
        .await;
    assert!(
        token["VerificationToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(
        cli.ok(&["list-identities", "--identity-type", "Domain"])
            .await,
        json!({"Identities": ["cli.test", "example.com", "quiet.example.com"]})
    );
    cli.ok(&["delete-identity", "--identity", "cli.test"]).await;
    let file = std::fs::read_to_string(&setup.file).unwrap();
    assert!(file.contains("cli@example.org"), "{file}");
    assert!(!file.contains("cli.test"), "{file}");
    assert_eq!(
        cli.ok(&["list-configuration-sets"]).await["ConfigurationSets"],
        json!([{"Name": "marketing"}, {"Name": "paused"}, {"Name": "transactional"}])
    );
    cli.fails(
        &[
            "describe-configuration-set",
            "--configuration-set-name",
            "nope",
        ],
        "DescribeConfigurationSet",
        "ConfigurationSetDoesNotExist",
        "Configuration set <nope> does not exist.",
    )
    .await;
    setup.stop().await;
}

// ---------------------------------------------------------------------------------------
// By hand: the authorization, and every answer through botocore's parser.
// ---------------------------------------------------------------------------------------

/// A form posted to `/` with `headers`: the status, Content-Type, `x-amzn-RequestId` and
/// body.
async fn post(base: &str, headers: &[(&str, &str)], form: &str) -> (u16, String, String, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut req = client
        .post(format!("{base}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, id) = (header("content-type"), header("x-amzn-requestid"));
    (
        resp.status().as_u16(),
        content_type,
        id,
        resp.text().await.unwrap(),
    )
}

/// A signed v1 form post (any credentials: the listener has no access keys).
async fn signed(base: &str, form: &str) -> (u16, String) {
    let (authorization, amz_date) = common::v1_authorization();
    let (status, _, _, body) = post(
        base,
        &[("authorization", &authorization), ("x-amz-date", &amz_date)],
        form,
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn unsigned_and_unknown_requests_are_refused_in_xml() {
    let setup = Setup::start("").await;
    let base = setup.base();
    let raw = "RnJvbTogYXBwQGV4YW1wbGUuY29tDQpUbzogYm9iQGV4YW1wbGUubmV0DQoNCmhp";
    let send = format!(
        "Action=SendRawEmail&RawMessage.Data={}&Version=2010-12-01",
        raw.replace('=', "%3D")
    );
    // From loopback, without Authorization: what a web page could post cross-site.
    for form in [send.as_str(), "Action=GetSendQuota&Version=2010-12-01", ""] {
        let (status, content_type, id, body) = post(&base, &[], form).await;
        assert_eq!((status, content_type.as_str()), (403, "text/xml"), "{body}");
        assert!(
            body.contains("<Code>MissingAuthenticationToken</Code>"),
            "{body}"
        );
        assert!(
            body.contains(&format!("<RequestId>{id}</RequestId>")),
            "{body}"
        );
    }
    // An Authorization header of another scheme is none; a SigV4 one that is incomplete
    // is refused too.
    let (status, _, _, body) = post(
        &base,
        &[("authorization", "Bearer x")],
        "Action=GetSendQuota",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("<Code>MissingAuthenticationToken</Code>"),
        "{body}"
    );
    let (status, _, _, body) = post(
        &base,
        &[("authorization", "AWS4-HMAC-SHA256 Credential=AKID/x")],
        "Action=GetSendQuota",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("<Code>IncompleteSignature</Code>"), "{body}");
    // Signed, an unknown action: InvalidAction, in XML.
    let (status, body) = signed(&base, "Action=CreateTemplate&Version=2010-12-01").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.starts_with("<ErrorResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\">"),
        "{body}"
    );
    assert!(body.contains("<Code>InvalidAction</Code>"), "{body}");
    // Signed, it sends.
    let (status, body) = signed(&base, &send).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<SendRawEmailResult>"), "{body}");
    assert_eq!(setup.upstream.wait_for(1).await.len(), 1);
    // The request counter names the v1 actions answered; the refusals before them are
    // counted as requests to `/`.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sesrelay_api_requests_total{operation=\"SendRawEmail\",status=\"200\"} 1",
        "sesrelay_api_requests_total{operation=\"Unknown\",status=\"403\"} 4",
        "sesrelay_api_requests_total{operation=\"Unknown\",status=\"400\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    setup.stop().await;
}

/// Parses each answer with botocore's QueryParser and the v1 model's shape for it
/// (argv[1]: a JSON list of [operation, status, body]); prints the parsed answers.
const PARSE_WITH_BOTOCORE: &str = r#"
import sys, json, botocore.session, botocore.parsers
model = botocore.session.get_session().get_service_model("ses")
parser = botocore.parsers.QueryParser()
out = []
for operation, status, body in json.load(open(sys.argv[1])):
    shape = model.operation_model(operation).output_shape
    parsed = parser.parse({"body": body.encode(), "headers": {}, "status_code": status}, shape)
    meta = parsed.pop("ResponseMetadata", {})
    out.append({"operation": operation, "parsed": parsed, "request_id": meta.get("RequestId")})
print(json.dumps(out, default=str))
"#;

#[tokio::test]
async fn every_answer_parses_with_botocore() {
    let setup = Setup::start("").await;
    let base = setup.base();
    let raw = "RnJvbTogYXBwQGV4YW1wbGUuY29tDQpUbzogYm9iQGV4YW1wbGUubmV0DQoNCmhp";
    let forms: Vec<(&str, String)> = vec![
        (
            "SendRawEmail",
            format!(
                "Action=SendRawEmail&RawMessage.Data={}&Tags.member.1.Name=a&Tags.member.1.Value=b",
                raw.replace('=', "%3D")
            ),
        ),
        (
            "SendEmail",
            "Action=SendEmail&Source=app%40example.com&Destination.ToAddresses.member.1=bob%40example.net\
             &Message.Subject.Data=s&Message.Body.Text.Data=t"
                .to_owned(),
        ),
        ("GetSendQuota", "Action=GetSendQuota".to_owned()),
        ("GetSendStatistics", "Action=GetSendStatistics".to_owned()),
        (
            "GetAccountSendingEnabled",
            "Action=GetAccountSendingEnabled".to_owned(),
        ),
        (
            "VerifyEmailIdentity",
            "Action=VerifyEmailIdentity&EmailAddress=a%40example.org".to_owned(),
        ),
        (
            "VerifyEmailAddress",
            "Action=VerifyEmailAddress&EmailAddress=b%40example.org".to_owned(),
        ),
        (
            "VerifyDomainIdentity",
            "Action=VerifyDomainIdentity&Domain=parsed.test".to_owned(),
        ),
        (
            "ListIdentities",
            "Action=ListIdentities&MaxItems=2".to_owned(),
        ),
        (
            "ListVerifiedEmailAddresses",
            "Action=ListVerifiedEmailAddresses".to_owned(),
        ),
        (
            "GetIdentityVerificationAttributes",
            "Action=GetIdentityVerificationAttributes&Identities.member.1=parsed.test\
             &Identities.member.2=example.com"
                .to_owned(),
        ),
        (
            "DeleteIdentity",
            "Action=DeleteIdentity&Identity=a%40example.org".to_owned(),
        ),
        (
            "DeleteVerifiedEmailAddress",
            "Action=DeleteVerifiedEmailAddress&EmailAddress=b%40example.org".to_owned(),
        ),
        (
            "ListConfigurationSets",
            "Action=ListConfigurationSets&MaxItems=1".to_owned(),
        ),
        (
            "DescribeConfigurationSet",
            "Action=DescribeConfigurationSet&ConfigurationSetName=paused\
             &ConfigurationSetAttributeNames.member.1=reputationOptions"
                .to_owned(),
        ),
        // An error, in the shape botocore reads errors in.
        (
            "SendRawEmail",
            format!(
                "Action=SendRawEmail&RawMessage.Data={}&ConfigurationSetName=nope",
                raw.replace('=', "%3D")
            ),
        ),
    ];
    let mut answers = Vec::new();
    for (operation, form) in &forms {
        let (status, body) = signed(&base, &format!("{form}&Version=2010-12-01")).await;
        answers.push(json!([operation, status, body]));
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("answers.json");
    std::fs::write(&input, Value::Array(answers).to_string()).unwrap();
    let out = run_python(PARSE_WITH_BOTOCORE, &[input.to_str().unwrap()]).await;
    let parsed: Value = serde_json::from_str(out.trim()).unwrap();
    let parsed = parsed.as_array().unwrap();
    assert_eq!(parsed.len(), forms.len());
    let get = |i: usize| &parsed[i]["parsed"];
    for (i, answer) in parsed.iter().enumerate() {
        assert!(
            answer["request_id"]
                .as_str()
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()),
            "{i}: {answer}"
        );
    }
    assert!(
        is_ses_message_id(get(0)["MessageId"].as_str().unwrap()),
        "{}",
        get(0)
    );
    assert!(
        is_ses_message_id(get(1)["MessageId"].as_str().unwrap()),
        "{}",
        get(1)
    );
    assert_eq!(
        get(2),
        &json!({"Max24HourSend": -1.0, "MaxSendRate": -1.0, "SentLast24Hours": 2.0})
    );
    let points = get(3)["SendDataPoints"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{}", get(3));
    assert_eq!(points[0]["DeliveryAttempts"], 2);
    assert!(
        points[0]["Timestamp"].as_str().unwrap().contains("+00:00"),
        "{}",
        get(3)
    );
    assert_eq!(get(4), &json!({"Enabled": true}));
    assert_eq!(get(5), &json!({}));
    assert_eq!(get(6), &json!({}));
    assert!(
        get(7)["VerificationToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(
        get(8)["Identities"].as_array().unwrap().len(),
        2,
        "{}",
        get(8)
    );
    assert!(get(8)["NextToken"].is_string(), "{}", get(8));
    assert_eq!(
        get(9),
        &json!({"VerifiedEmailAddresses": ["joe@example.com"]})
    );
    assert_eq!(
        get(10)["VerificationAttributes"]["example.com"],
        json!({"VerificationStatus": "Success"})
    );
    assert_eq!(
        get(10)["VerificationAttributes"]["parsed.test"]["VerificationStatus"],
        "Pending"
    );
    assert_eq!(get(11), &json!({}));
    assert_eq!(get(12), &json!({}));
    assert_eq!(get(13)["ConfigurationSets"], json!([{"Name": "marketing"}]));
    assert!(get(13)["NextToken"].is_string());
    assert_eq!(
        get(14),
        &json!({
            "ConfigurationSet": {"Name": "paused"},
            "ReputationOptions": {"SendingEnabled": false, "ReputationMetricsEnabled": false}
        })
    );
    assert_eq!(
        get(15)["Error"],
        json!({"Type": "Sender", "Code": "ConfigurationSetDoesNotExist", "Message": "Configuration set <nope> does not exist."})
    );
    setup.stop().await;
}

/// The config file path is in the temporary directory, never in the repository.
#[test]
fn the_test_configuration_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sesrelay.toml");
    std::fs::write(&file, config_text("smtp://127.0.0.1:1?tls=none", "")).unwrap();
    assert!(sesrelay::config::Config::load(Path::new(&file)).is_ok());
}
