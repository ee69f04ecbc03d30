//! The seed workflow end to end with the real aws CLI: `aws sesv2 --endpoint-url ...` →
//! the `sesrelay` binary's admin listener, mail through Postfix's smtp-sink, swaks as the
//! SMTP client, and the verification link opened over HTTP.
//!
//! The aws CLI is `$SESRELAY_AWS_CLI`, else `aws` on PATH (`.ci/run` installs it from PyPI
//! in a virtual environment and sets the variable); swaks and smtp-sink come from
//! `apt-get install swaks postfix`. Without them this test fails and says what to install.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::aws::aws_cli;
use common::peers::{free_port, sesrelay, smtp_sink, swaks};

/// swaks sending from sender@example.com with `subject` and `body`; the transcript.
fn swaks_send(server: SocketAddr, subject: &str, body: &str) -> (bool, String) {
    let out = swaks(
        server,
        &[
            "--from",
            "sender@example.com",
            "--to",
            "recipient@example.net",
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            body,
        ],
    );
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), transcript)
}

/// smtp-sink's dump directory; remembers which dumps the test has looked at.
struct Dumps {
    dir: PathBuf,
    seen: HashSet<PathBuf>,
}

impl Dumps {
    fn unseen(&self) -> Vec<(PathBuf, String)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !self.seen.contains(p))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|f| {
                let text = std::fs::read(&f).ok()?;
                // smtp-sink writes LF line endings; be lenient about CRLF all the same.
                let text = String::from_utf8_lossy(&text).replace("\r\n", "\n");
                Some((f, text))
            })
            .collect()
    }

    /// The next dump that contains `marker` (put it in the body, so that the dump is whole
    /// when it is found), waiting up to 10 s.
    fn next(&mut self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((path, text)) = self.unseen().into_iter().find(|(_, t)| t.contains(marker))
            {
                self.seen.insert(path);
                return text;
            }
            if Instant::now() > deadline {
                let others: Vec<String> = self.unseen().into_iter().map(|(_, t)| t).collect();
                panic!("smtp-sink got no message with {marker:?}; other new dumps: {others:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Nothing arrived that the test has not looked at (rejected mail is never forwarded).
    fn assert_no_new(&self, after: &str) {
        let new: Vec<String> = self.unseen().into_iter().map(|(_, t)| t).collect();
        assert!(new.is_empty(), "after {after}, smtp-sink got: {new:#?}");
    }
}

/// The dump's header lines: smtp-sink's X-* lines, then the message's header block.
fn header_block(dump: &str) -> &str {
    dump.split_once("\n\n").map_or(dump, |(h, _)| h)
}

fn set_headers(dump: &str) -> Vec<&str> {
    header_block(dump)
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-ses-configuration-set:")
        })
        .collect()
}

/// Asserts the dump carries exactly one `X-SES-CONFIGURATION-SET: <set>`.
fn assert_set(dump: &str, set: &str) {
    assert_eq!(
        set_headers(dump),
        [format!("X-SES-CONFIGURATION-SET: {set}")],
        "{dump}"
    );
}

/// One run of the aws CLI.
struct CliOut {
    service: &'static str,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    args: Vec<String>,
}

impl std::fmt::Display for CliOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "aws {} {}\nexit code: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.service,
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

struct Aws {
    bin: PathBuf,
    endpoint: String,
    /// The access key the CLI signs with.
    key: (&'static str, &'static str),
}

impl Aws {
    /// `aws sesv2 ARGS`.
    fn run(&self, args: &[&str]) -> CliOut {
        self.run_service("sesv2", args)
    }

    /// `aws SERVICE ARGS` (`ses` is the v1 API).
    fn run_service(&self, service: &'static str, args: &[&str]) -> CliOut {
        let mut cmd = Command::new(&self.bin);
        // Nothing of the user's own AWS setup may reach the CLI.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(name);
            }
        }
        let out = cmd
            .env("AWS_ACCESS_KEY_ID", self.key.0)
            .env("AWS_SECRET_ACCESS_KEY", self.key.1)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_DEFAULT_OUTPUT", "json")
            .env("AWS_PAGER", "")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .args([service, "--endpoint-url", &self.endpoint])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the aws CLI runs");
        CliOut {
            service,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Runs a command that must succeed; its JSON output (`{}` when it prints nothing).
    fn ok(&self, args: &[&str]) -> Value {
        self.ok_in("sesv2", args)
    }

    /// [`Aws::ok`] for `aws SERVICE ARGS`.
    fn ok_in(&self, service: &'static str, args: &[&str]) -> Value {
        let out = self.run_service(service, args);
        assert_eq!(out.code, Some(0), "expected success:\n{out}");
        if out.stdout.trim().is_empty() {
            return json!({});
        }
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("the output is not JSON ({e}):\n{out}"))
    }

    /// Runs a command that must fail as a service error with `code` and `message`, the
    /// way the CLI prints SES's errors.
    fn fails(&self, args: &[&str], operation: &str, code: &str, message: &str) -> CliOut {
        self.fails_in("sesv2", args, operation, code, message)
    }

    /// [`Aws::fails`] for `aws SERVICE ARGS`.
    fn fails_in(
        &self,
        service: &'static str,
        args: &[&str],
        operation: &str,
        code: &str,
        message: &str,
    ) -> CliOut {
        let out = self.run_service(service, args);
        assert!(
            matches!(out.code, Some(254 | 255)),
            "expected exit code 254 or 255:\n{out}"
        );
        let expected =
            format!("An error occurred ({code}) when calling the {operation} operation: {message}");
        assert!(
            out.stderr.contains(&expected),
            "expected {expected:?} in stderr:\n{out}"
        );
        out
    }
}

/// A plain HTTP/1.1 GET of `url` (http://127.0.0.1:PORT/...): the status and the body.
fn http_get(url: &str) -> (u16, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http:// URL: {url}"));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sesrelay-test\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// Borrowed arguments for [`Aws::run`].
fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn identity_names(list: &Value) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = list["EmailIdentities"]
        .as_array()
        .unwrap_or_else(|| panic!("no EmailIdentities in {list}"))
        .iter()
        .map(|i| {
            (
                i["IdentityName"].as_str().unwrap_or_default().to_owned(),
                i["VerificationStatus"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    names.sort();
    names
}

const DEFAULT_SET: &str = "my-first-configuration-set";

#[test]
fn seed_workflow_with_the_aws_cli() {
    let started = Instant::now();
    let aws_bin = aws_cli();
    let sink_dir = tempfile::tempdir().unwrap();
    let relay_dir = tempfile::tempdir().unwrap();
    let (_sink, sink_addr) = smtp_sink(sink_dir.path());
    let mut dumps = Dumps {
        dir: sink_dir.path().to_owned(),
        seen: HashSet::new(),
    };

    let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config_path = relay_dir.path().join("sesrelay.toml");
    let operator_comment = "# An operator's comment that must survive every API change.";
    let trailing_comment = "# a trailing comment that must survive too";
    std::fs::write(
        &config_path,
        format!(
            "{operator_comment}\n\
             [server]\n\
             listen = [\"{smtp}\"]\n\
             region = \"us-east-1\"\n\
             \n\
             [admin]\n\
             listen = \"{admin}\"\n\
             \n\
             [upstream]\n\
             url = \"smtp://{sink_addr}?tls=none\"   {trailing_comment}\n"
        ),
    )
    .unwrap();
    let mut relay = sesrelay(&config_path, &[], &[smtp, admin]);
    let aws = Aws {
        bin: aws_bin,
        endpoint: format!("http://{admin}"),
        key: ("AKIDEXAMPLE", "wJalrXUtnFEMIexample"),
    };

    // 1. A configuration set.
    aws.ok(&[
        "create-configuration-set",
        "--configuration-set-name",
        DEFAULT_SET,
    ]);

    // 2. An email identity with that default: pending, and a verification message is sent
    //    through the upstream.
    let created = aws.ok(&[
        "create-email-identity",
        "--email-identity",
        "sender@example.com",
        "--configuration-set-name",
        DEFAULT_SET,
    ]);
    assert_eq!(created["IdentityType"], "EMAIL_ADDRESS", "{created}");
    assert_eq!(created["VerifiedForSendingStatus"], false, "{created}");
    let pending = aws.ok(&[
        "get-email-identity",
        "--email-identity",
        "sender@example.com",
    ]);
    assert_eq!(pending["VerifiedForSendingStatus"], false, "{pending}");
    assert_eq!(pending["VerificationStatus"], "PENDING", "{pending}");

    let link_prefix = format!("http://{admin}/verify?token=");
    let verification = dumps.next(&link_prefix);
    let headers = header_block(&verification);
    assert!(
        headers.contains("\nSubject: Email Address Verification Request in region US-EAST-1\n"),
        "{verification}"
    );
    assert!(
        headers.contains("\nTo: sender@example.com\n"),
        "{verification}"
    );
    assert!(
        headers.contains("X-Rcpt-Args: <sender@example.com>"),
        "{verification}"
    );
    let link_start = verification.find(&link_prefix).unwrap();
    let link: String = verification[link_start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert!(link.len() > link_prefix.len() + 20, "{link}");

    // Before the link is opened, the address may not send.
    let (ok, transcript) = swaks_send(smtp, "too early", "body-too-early");
    assert!(!ok, "{transcript}");
    assert!(
        transcript.contains(
            "<** 554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: sender@example.com"
        ),
        "{transcript}"
    );

    let (status, page) = http_get(&link);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("successfully verified"), "{page}");

    // 3. Verified, with its default set.
    let identity = aws.ok(&[
        "get-email-identity",
        "--email-identity",
        "sender@example.com",
    ]);
    assert_eq!(identity["VerifiedForSendingStatus"], true, "{identity}");
    assert_eq!(identity["VerificationStatus"], "SUCCESS", "{identity}");
    assert_eq!(identity["ConfigurationSetName"], DEFAULT_SET, "{identity}");

    // 4. SendEmail takes the identity's default set.
    let sent = aws.ok(&[
        "send-email",
        "--from-email-address",
        "sender@example.com",
        "--destination",
        "ToAddresses=recipient@example.net",
        "--content",
        r#"{"Simple":{"Subject":{"Data":"via the API"},"Body":{"Text":{"Data":"hello"}}}}"#,
    ]);
    let message_id = sent["MessageId"]
        .as_str()
        .unwrap_or_else(|| panic!("no MessageId in {sent}"))
        .to_owned();
    assert!(!message_id.is_empty(), "{sent}");
    let dump = dumps.next(&message_id);
    assert_set(&dump, DEFAULT_SET);
    assert!(dump.contains("\nSubject: via the API\n"), "{dump}");
    assert!(dump.contains("X-Mail-Args: <sender@example.com>"), "{dump}");
    assert!(
        dump.contains("X-Rcpt-Args: <recipient@example.net>"),
        "{dump}"
    );
    assert!(dump.contains("\n\nhello\n"), "{dump}");

    // 5. The same default over SMTP.
    let (ok, transcript) = swaks_send(smtp, "via smtp", "body-via-smtp");
    assert!(ok, "{transcript}");
    assert!(transcript.contains("<-  250 2.0.0 Ok "), "{transcript}");
    let dump = dumps.next("body-via-smtp");
    assert_set(&dump, DEFAULT_SET);
    assert!(dump.contains("\nSubject: via smtp\n"), "{dump}");

    // 6. An explicit set overrides the default; Raw content takes the default.
    aws.ok(&[
        "create-configuration-set",
        "--configuration-set-name",
        "other-set",
    ]);
    let sent = aws.ok(&[
        "send-email",
        "--from-email-address",
        "sender@example.com",
        "--destination",
        "ToAddresses=recipient@example.net",
        "--configuration-set-name",
        "other-set",
        "--content",
        r#"{"Simple":{"Subject":{"Data":"override"},"Body":{"Text":{"Data":"body-override"}}}}"#,
    ]);
    let dump = dumps.next("body-override");
    assert!(
        dump.contains(sent["MessageId"].as_str().unwrap()),
        "{sent}\n{dump}"
    );
    assert_set(&dump, "other-set");

    // aws CLI v1 takes Raw.Data as the message text and base64-encodes it itself.
    let raw = "From: sender@example.com\r\nTo: recipient@example.net\r\nSubject: raw message\r\n\r\nbody-raw\r\n";
    let raw_file = relay_dir.path().join("raw.json");
    std::fs::write(&raw_file, json!({ "Raw": { "Data": raw } }).to_string()).unwrap();
    let raw_arg = format!("file://{}", raw_file.display());
    let sent = aws.ok(&["send-email", "--content", &raw_arg]);
    let dump = dumps.next("body-raw");
    assert!(
        dump.contains(sent["MessageId"].as_str().unwrap()),
        "{sent}\n{dump}"
    );
    assert_set(&dump, DEFAULT_SET);
    assert!(dump.contains("X-Mail-Args: <sender@example.com>"), "{dump}");
    assert!(
        dump.contains("X-Rcpt-Args: <recipient@example.net>"),
        "{dump}"
    );
    assert!(dump.contains("\nSubject: raw message\n"), "{dump}");

    // 7. No default set: mail goes out untagged.
    aws.ok(&[
        "put-email-identity-configuration-set-attributes",
        "--email-identity",
        "sender@example.com",
    ]);
    let identity = aws.ok(&[
        "get-email-identity",
        "--email-identity",
        "sender@example.com",
    ]);
    assert!(identity.get("ConfigurationSetName").is_none(), "{identity}");
    assert_eq!(identity["VerifiedForSendingStatus"], true, "{identity}");
    let (ok, transcript) = swaks_send(smtp, "no default", "body-no-default");
    assert!(ok, "{transcript}");
    let dump = dumps.next("body-no-default");
    assert!(set_headers(&dump).is_empty(), "{dump}");
    assert!(
        !dump
            .to_ascii_lowercase()
            .contains("x-ses-configuration-set"),
        "{dump}"
    );

    // 8. The default back, then the set deleted under it: mail is refused, SES-style.
    aws.ok(&[
        "put-email-identity-configuration-set-attributes",
        "--email-identity",
        "sender@example.com",
        "--configuration-set-name",
        DEFAULT_SET,
    ]);
    let identity = aws.ok(&[
        "get-email-identity",
        "--email-identity",
        "sender@example.com",
    ]);
    assert_eq!(identity["ConfigurationSetName"], DEFAULT_SET, "{identity}");
    aws.ok(&[
        "delete-configuration-set",
        "--configuration-set-name",
        DEFAULT_SET,
    ]);
    let deleted_reply = "<** 554 5.3.0 Configuration Set does not exist: Configuration set <my-first-configuration-set> does not exist.";
    let (ok, transcript) = swaks_send(smtp, "deleted set", "body-deleted-set");
    assert!(!ok, "{transcript}");
    assert!(transcript.contains(deleted_reply), "{transcript}");
    let out = aws.run(&[
        "send-email",
        "--from-email-address",
        "sender@example.com",
        "--destination",
        "ToAddresses=recipient@example.net",
        "--content",
        r#"{"Simple":{"Subject":{"Data":"deleted set"},"Body":{"Text":{"Data":"body-deleted-api"}}}}"#,
    ]);
    assert!(matches!(out.code, Some(254 | 255)), "{out}");
    assert!(out.stderr.contains("BadRequestException"), "{out}");
    assert!(
        out.stderr
            .contains("Configuration set <my-first-configuration-set> does not exist."),
        "{out}"
    );
    let identity = aws.ok(&[
        "get-email-identity",
        "--email-identity",
        "sender@example.com",
    ]);
    assert_eq!(identity["ConfigurationSetName"], DEFAULT_SET, "{identity}");
    assert_eq!(identity["VerifiedForSendingStatus"], true, "{identity}");
    dumps.assert_no_new("mail resolving to a deleted set");

    // 9. Errors as SES prints them.
    aws.fails(
        &[
            "get-email-identity",
            "--email-identity",
            "nobody@example.com",
        ],
        "GetEmailIdentity",
        "NotFoundException",
        "Email identity <nobody@example.com> does not exist.",
    );
    aws.fails(
        &[
            "create-email-identity",
            "--email-identity",
            "failed@example.com",
            "--configuration-set-name",
            "nope",
        ],
        "CreateEmailIdentity",
        "NotFoundException",
        "Configuration set <nope> does not exist.",
    );
    aws.fails(
        &[
            "get-email-identity",
            "--email-identity",
            "failed@example.com",
        ],
        "GetEmailIdentity",
        "NotFoundException",
        "Email identity <failed@example.com> does not exist.",
    );
    dumps.assert_no_new("a failed create-email-identity");

    // An identity that exists but is not verified yet may not send.
    aws.ok(&[
        "create-email-identity",
        "--email-identity",
        "pending@example.org",
    ]);
    let verification = dumps.next("To: pending@example.org");
    assert!(verification.contains(&link_prefix), "{verification}");
    aws.fails(
        &[
            "send-email",
            "--from-email-address",
            "pending@example.org",
            "--destination",
            "ToAddresses=recipient@example.net",
            "--content",
            r#"{"Simple":{"Subject":{"Data":"unverified"},"Body":{"Text":{"Data":"x"}}}}"#,
        ],
        "SendEmail",
        "MessageRejected",
        "Email address is not verified. The following identities failed the check in region US-EAST-1: pending@example.org",
    );

    aws.ok(&[
        "put-configuration-set-sending-options",
        "--configuration-set-name",
        "other-set",
        "--no-sending-enabled",
    ]);
    let paused = aws.run(&[
        "send-email",
        "--from-email-address",
        "sender@example.com",
        "--destination",
        "ToAddresses=recipient@example.net",
        "--configuration-set-name",
        "other-set",
        "--content",
        r#"{"Simple":{"Subject":{"Data":"paused"},"Body":{"Text":{"Data":"x"}}}}"#,
    ]);
    assert!(matches!(paused.code, Some(254 | 255)), "{paused}");
    assert!(
        paused.stderr.contains(
            "An error occurred (SendingPausedException) when calling the SendEmail operation"
        ),
        "{paused}"
    );
    dumps.assert_no_new("refused SendEmail calls");

    // 10. The lists show what exists.
    let identities = aws.ok(&["list-email-identities"]);
    assert_eq!(
        identity_names(&identities),
        [
            ("pending@example.org".to_owned(), "PENDING".to_owned()),
            ("sender@example.com".to_owned(), "SUCCESS".to_owned()),
        ],
        "{identities}"
    );
    let sender = identities["EmailIdentities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["IdentityName"] == "sender@example.com")
        .unwrap();
    assert_eq!(sender["IdentityType"], "EMAIL_ADDRESS", "{identities}");
    assert_eq!(sender["SendingEnabled"], true, "{identities}");
    let sets = aws.ok(&["list-configuration-sets"]);
    assert_eq!(sets["ConfigurationSets"], json!(["other-set"]), "{sets}");

    // 11. Everything is in the file: a restart (after SIGKILL) keeps it all.
    drop(relay);
    relay = sesrelay(&config_path, &[], &[smtp, admin]);
    let identity = aws.ok(&[
        "get-email-identity",
        "--email-identity",
        "sender@example.com",
    ]);
    assert_eq!(identity["VerifiedForSendingStatus"], true, "{identity}");
    assert_eq!(identity["VerificationStatus"], "SUCCESS", "{identity}");
    assert_eq!(identity["ConfigurationSetName"], DEFAULT_SET, "{identity}");
    let pending = aws.ok(&[
        "get-email-identity",
        "--email-identity",
        "pending@example.org",
    ]);
    assert_eq!(pending["VerifiedForSendingStatus"], false, "{pending}");
    let sets = aws.ok(&["list-configuration-sets"]);
    assert_eq!(sets["ConfigurationSets"], json!(["other-set"]), "{sets}");
    let other = aws.ok(&[
        "get-configuration-set",
        "--configuration-set-name",
        "other-set",
    ]);
    assert_eq!(other["ConfigurationSetName"], "other-set", "{other}");
    assert_eq!(other["SendingOptions"]["SendingEnabled"], false, "{other}");
    let (ok, transcript) = swaks_send(smtp, "after restart", "body-after-restart");
    assert!(!ok, "{transcript}");
    assert!(transcript.contains(deleted_reply), "{transcript}");
    dumps.assert_no_new("the restart");

    let text = std::fs::read_to_string(&config_path).unwrap();
    assert!(text.contains(operator_comment), "{text}");
    assert!(text.contains(trailing_comment), "{text}");
    drop(relay);
    eprintln!("the aws CLI workflow took {:?}", started.elapsed());
}

#[test]
fn with_access_keys_the_cli_must_sign_with_one_of_them() {
    let bin = aws_cli();
    let dir = tempfile::tempdir().unwrap();
    let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("sesrelay.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"{smtp}\"]\n\n[admin]\nlisten = \"{admin}\"\n\
             access_keys = [{{ id = \"AKIDRELAY\", secret_env = \"RELAY_API_SECRET\" }}]\n\n\
             [upstream]\nurl = \"dir:{}\"\n",
            dir.path().join("outbox").display()
        ),
    )
    .unwrap();
    let _relay = sesrelay(
        &config,
        &[("RELAY_API_SECRET", "the-relay-api-secret")],
        &[admin],
    );
    let endpoint = format!("http://{admin}");
    let signed = Aws {
        bin: bin.clone(),
        endpoint: endpoint.clone(),
        key: ("AKIDRELAY", "the-relay-api-secret"),
    };
    signed.ok(&[
        "create-configuration-set",
        "--configuration-set-name",
        "signed",
    ]);
    let listed = signed.ok(&["list-configuration-sets"]);
    assert_eq!(listed["ConfigurationSets"], json!(["signed"]));
    // Paths with percent-encoded characters are signed over their encoding, twice.
    signed.fails(
        &[
            "get-email-identity",
            "--email-identity",
            "joe+x@example.com",
        ],
        "GetEmailIdentity",
        "NotFoundException",
        "Email identity <joe+x@example.com> does not exist.",
    );
    // A v1 request is judged by its signature too, and answered in v1's shape.
    let listed = signed.ok_in("ses", &["list-identities"]);
    assert_eq!(listed["Identities"], json!([]));
    signed.fails_in(
        "ses",
        &["list-templates"],
        "ListTemplates",
        "InvalidAction",
        &v1_invalid_action("ListTemplates"),
    );
    let wrong_secret = Aws {
        bin: bin.clone(),
        endpoint: endpoint.clone(),
        key: ("AKIDRELAY", "not-the-secret"),
    };
    wrong_secret.fails(
        &["list-configuration-sets"],
        "ListConfigurationSets",
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided.",
    );
    wrong_secret.fails_in(
        "ses",
        &["send-raw-email", "--raw-message", "Data=forged"],
        "SendRawEmail",
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided.",
    );
    let unknown = Aws {
        bin,
        endpoint,
        key: ("AKIDSTRANGER", "whatever"),
    };
    unknown.fails(
        &[
            "create-configuration-set",
            "--configuration-set-name",
            "nope",
        ],
        "CreateConfigurationSet",
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    );
    unknown.fails_in(
        "ses",
        &["list-identities"],
        "ListIdentities",
        "InvalidClientTokenId",
        "The security token included in the request is invalid.",
    );
    assert!(!std::fs::read_to_string(&config).unwrap().contains("nope"));
    assert!(
        !dir.path().join("outbox").exists()
            || std::fs::read_dir(dir.path().join("outbox"))
                .unwrap()
                .next()
                .is_none(),
        "no v1 request sent anything"
    );
}

/// What `aws ses` prints after "... operation: " for a v1 action sesrelay does not serve.
fn v1_invalid_action(action: &str) -> String {
    format!("Unrecognized action: sesrelay does not serve the v1 action {action}.")
}

/// `aws ses` speaks the v1 (Query) API: an action sesrelay does not serve gets v1's XML
/// error, which it reports as SES's own, and nothing is sent.
#[test]
fn v1_commands_sesrelay_does_not_serve_get_v1s_invalid_action() {
    let bin = aws_cli();
    let dir = tempfile::tempdir().unwrap();
    let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("sesrelay.toml");
    let outbox = dir.path().join("outbox");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"{smtp}\"]\n\n[admin]\nlisten = \"{admin}\"\n\n\
             [upstream]\nurl = \"dir:{}\"\n\n[identities.\"example.com\"]\nverified = true\n",
            outbox.display()
        ),
    )
    .unwrap();
    let _relay = sesrelay(&config, &[], &[admin]);
    let aws = Aws {
        bin,
        endpoint: format!("http://{admin}"),
        key: ("AKIDANY", "any-secret"),
    };
    aws.fails_in(
        "ses",
        &[
            "send-bounce",
            "--original-message-id",
            "0100-x",
            "--bounce-sender",
            "sender@example.com",
            "--bounced-recipient-info-list",
            "Recipient=bob@example.net,BounceType=DoesNotExist",
        ],
        "SendBounce",
        "InvalidAction",
        &v1_invalid_action("SendBounce"),
    );
    aws.fails_in(
        "ses",
        &[
            "get-identity-dkim-attributes",
            "--identities",
            "example.com",
        ],
        "GetIdentityDkimAttributes",
        "InvalidAction",
        &v1_invalid_action("GetIdentityDkimAttributes"),
    );
    let nothing = !outbox.exists() || std::fs::read_dir(&outbox).unwrap().next().is_none();
    assert!(nothing, "a v1 request sent something");
}

/// `[account]` with the aws CLI: get-account's figures, send-email's quota and sandbox
/// errors, and put-account-sending-attributes pausing SMTP and the API alike, kept in the
/// file.
#[test]
fn the_account_with_the_aws_cli() {
    let bin = aws_cli();
    let dir = tempfile::tempdir().unwrap();
    let relay = common::peers::RelayProcess::start_in(
        dir.path(),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"dir:{}\"\n\n\
             [identities.\"example.com\"]\nverified = true\n\n\
             [account]\nsandbox = true\nmax_send_rate = 0\nmax_24_hour_send = 2\n",
            dir.path().join("outbox").display()
        ),
    );
    let aws = Aws {
        bin,
        endpoint: format!("http://{}", relay.admin.unwrap()),
        key: ("AKIDEXAMPLE", "any-secret"),
    };
    let account = aws.ok(&["get-account"]);
    assert_eq!(account["ProductionAccessEnabled"], json!(false));
    assert_eq!(account["SendingEnabled"], json!(true));
    assert_eq!(
        account["SendQuota"],
        json!({ "Max24HourSend": 2.0, "MaxSendRate": -1.0, "SentLast24Hours": 0.0 })
    );
    let send = |to: &str| -> Vec<String> {
        [
            "send-email",
            "--from-email-address",
            "app@example.com",
            "--destination",
            &format!("ToAddresses={to}"),
            "--content",
            "Simple={Subject={Data=hi},Body={Text={Data=hello}}}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    aws.fails(
        &args(&send("stranger@elsewhere.test")),
        "SendEmail",
        "MessageRejected",
        "Email address is not verified. The following identities failed the check in region \
         LOCAL: stranger@elsewhere.test",
    );
    aws.ok(&args(&send("success@simulator.amazonses.com")));
    aws.ok(&args(&send("a@example.com")));
    aws.ok(&args(&send("b@example.com")));
    aws.fails(
        &args(&send("c@example.com")),
        "SendEmail",
        "LimitExceededException",
        "Daily message quota exceeded.",
    );
    let account = aws.ok(&["get-account"]);
    assert_eq!(account["SendQuota"]["SentLast24Hours"], json!(2.0));

    aws.ok(&["put-account-sending-attributes", "--no-sending-enabled"]);
    assert_eq!(aws.ok(&["get-account"])["SendingEnabled"], json!(false));
    let file = std::fs::read_to_string(dir.path().join("sesrelay.toml")).unwrap();
    assert!(file.contains("sending_enabled = false"), "{file}");
    let paused = "Sending paused for this account. For more information, please check the inbox \
                  of the email address associated with your AWS account.";
    aws.fails(
        &args(&send("a@example.com")),
        "SendEmail",
        "SendingPausedException",
        paused,
    );
    let out = swaks(
        relay.smtp_addr(),
        &["--from", "app@example.com", "--to", "a@example.com"],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        transcript.contains(&format!("<** 554 5.7.1 Message rejected: {paused}")),
        "{transcript}"
    );
    aws.ok(&["put-account-sending-attributes", "--sending-enabled"]);
    assert_eq!(aws.ok(&["get-account"])["SendingEnabled"], json!(true));
}
