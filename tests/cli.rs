//! The command line, as a user runs it: exit codes and output of check, resolve, serve.

use std::process::{Command, Output};

fn sesrelay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sesrelay"))
        .args(args)
        .env_remove("SESRELAY_CONFIG")
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_prints_the_identity_table_and_warns_about_deleted_sets() {
    let out = sesrelay(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("config/sesrelay.toml: valid\n"), "{text}");
    assert!(
        text.contains("upstream: dir:outbox (one .eml file per message)\n"),
        "{text}"
    );
    assert!(
        text.contains("  example.com         domain   verified    transactional\n"),
        "{text}"
    );
    assert!(
        text.contains("  joe@example.com     address  verified    marketing\n"),
        "{text}"
    );
    assert!(
        text.contains("  legacy.example.org  domain   verified    retired (does not exist)\n"),
        "{text}"
    );
    assert!(text.ends_with(
        "warning: identity legacy.example.org: default configuration set retired does not exist \
         (deleted set); mail that resolves to it is rejected with 554 5.3.0\n"
    ));
}

#[test]
fn check_shows_what_each_pending_identity_waits_for_and_never_a_link_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesrelay.toml");
    std::fs::write(
        &path,
        "[upstream]\nurl = \"dir:outbox\"\n\n\
         [identities.\"example.org\"]\nverification_token = \"dns-token-1\"\n\n\
         [identities.\"verified.example\"]\nverified = true\nverification_token = \"dns-token-2\"\n\n\
         [identities.\"joe@example.org\"]\nlink_nonce = \"secret-nonce-1\"\n\n\
         [identities.\"old@example.org\"]\nverification_token = \"secret-nonce-2\"\n\n\
         [identities.\"hand@example.org\"]\nverified = false\n",
    )
    .unwrap();
    let out = sesrelay(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for row in [
        "  example.org       domain   unverified  -\n",
        "  hand@example.org  address  unverified  -\n",
        "  joe@example.org   address  unverified  -\n",
        "  old@example.org   address  unverified  -\n",
        "  verified.example  domain   verified    -\n",
    ] {
        assert!(text.contains(row), "{row:?} in:\n{text}");
    }
    let pending: Vec<&str> = text.lines().filter(|l| l.starts_with("pending:")).collect();
    assert_eq!(
        pending,
        [
            "pending: domain example.org is verified once TXT _amazonses.example.org holds \"dns-token-1\"",
            "pending: address hand@example.org has no verification link pending (create it through the API to send one, or set verified = true)",
            "pending: address joe@example.org waits for its verification link to be opened",
            "pending: address old@example.org waits for its verification link to be opened",
        ],
        "{text}"
    );
    assert!(!text.contains("secret-nonce"), "{text}");
    assert!(!text.contains("_amazonses.joe"), "{text}");
}

#[test]
fn a_number_out_of_range_stops_serve_with_its_key() {
    let out = sesrelay(&[
        "serve",
        "--config",
        "tests/bad_configs/32-max-connections-too-large.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(
            "32-max-connections-too-large.toml:2:19: server.max_connections: must be an integer from 1 to 1000000, not 9223372036854775807"
        ),
        "{err}"
    );
}

#[test]
fn check_refuses_a_bad_config_with_exit_1() {
    let out = sesrelay(&["check", "--config", "tests/bad_configs/01-unknown-key.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).starts_with(
            "sesrelay: tests/bad_configs/01-unknown-key.toml:3:1: server.bogus: unknown key"
        ),
        "{}",
        stderr(&out)
    );
    let out = sesrelay(&["check", "--config", "no/such/file.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no/such/file.toml: cannot read the configuration file"));
}

#[test]
fn the_config_path_comes_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_sesrelay"))
        .arg("check")
        .env(
            "SESRELAY_CONFIG",
            "tests/bad_configs/03-missing-upstream.toml",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("03-missing-upstream.toml:1:1: upstream: missing required key"));
}

#[test]
fn resolve_answers_like_the_relay() {
    let rows: [(&[&str], i32, &str); 7] = [
        (
            &["--from", "joe@example.com"],
            0,
            "accepted: configuration set marketing (default of the verified identity joe@example.com)\n\
             X-SES-CONFIGURATION-SET: marketing\nX-SES-MESSAGE-TAGS: team=growth\n",
        ),
        (
            &["--from", "joe+news@Example.com"],
            0,
            "accepted: configuration set marketing (default of the verified identity joe@example.com)\n\
             X-SES-CONFIGURATION-SET: marketing\nX-SES-MESSAGE-TAGS: team=growth\n",
        ),
        (
            &["--from", "ann@mail.example.com"],
            0,
            "accepted: configuration set transactional (default of the verified identity example.com)\n\
             X-SES-CONFIGURATION-SET: transactional\n",
        ),
        (
            &[
                "--from",
                "joe@example.com",
                "--configuration-set",
                "transactional",
            ],
            0,
            "accepted: configuration set transactional (named by --configuration-set)\n\
             X-SES-CONFIGURATION-SET: transactional\n",
        ),
        (
            &["--from", "joe@example.com", "--configuration-set", "gone"],
            1,
            "554 5.3.0 Configuration Set does not exist: Configuration set <gone> does not exist.\n",
        ),
        (
            &["--from", "a@legacy.example.org"],
            1,
            "554 5.3.0 Configuration Set does not exist: Configuration set <retired> does not exist.\n",
        ),
        (
            &["--from", "x@nowhere.test"],
            1,
            "554 5.7.1 Message rejected: Email address is not verified. The following identities failed the check in region LOCAL: x@nowhere.test\n",
        ),
    ];
    for (args, code, expected) in rows {
        let mut all = vec!["resolve"];
        all.extend_from_slice(args);
        let out = sesrelay(&all);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), expected, "{args:?}");
    }
}

#[test]
fn resolve_with_a_bad_config_or_address_exits_2() {
    let out = sesrelay(&[
        "resolve",
        "--from",
        "joe@example.com",
        "--config",
        "tests/bad_configs/21-syntax-error.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = sesrelay(&["resolve", "--from", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--from needs an email address"));
}

#[test]
fn serve_refuses_a_bad_config_in_one_paragraph() {
    let out = sesrelay(&["serve", "--config", "tests/bad_configs/11-tls-section.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("the relay did not start"), "{err}");
    assert!(
        err.contains("11-tls-section.toml:3:1: tls.keyfile: unknown key"),
        "{err}"
    );
}

#[test]
fn version_and_help() {
    let out = sesrelay(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        format!("sesrelay {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = sesrelay(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    for verb in ["serve", "check", "resolve", "cert"] {
        assert!(stdout(&out).contains(verb));
    }
}

/// `hash-password` reads one line from standard input and prints an argon2id hash that
/// verifies it; an empty line is refused.
#[test]
fn hash_password_prints_an_argon2id_hash() {
    use std::io::Write as _;
    use std::process::Stdio;

    let run = |input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sesrelay"))
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(b"example-password\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hash = stdout(&out);
    let hash = hash.strip_suffix('\n').expect("one line");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(sesrelay::password::verify("example-password", hash));
    assert!(!sesrelay::password::verify("example-password\n", hash));
    // CRLF too; a second line is not read.
    let out = run(b"example-password\r\nsecond line\n");
    assert!(sesrelay::password::verify(
        "example-password",
        stdout(&out).trim_end()
    ));
    for empty in [&b""[..], b"\n"] {
        let out = run(empty);
        assert_eq!(out.status.code(), Some(1));
        assert!(stdout(&out).is_empty());
        assert!(
            stderr(&out).contains("the password is empty"),
            "{}",
            stderr(&out)
        );
    }
}
