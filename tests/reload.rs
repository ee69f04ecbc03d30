//! Reloading the configuration (SPEC 7): a change to the file, however it is made (written
//! in place, renamed over, a ConfigMap's `..data` swap), applies to the next message; a
//! broken file or one that changes what cannot change live is refused and the running
//! configuration kept; SIGHUP reloads the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Capture, Client, Script, Served, header};
use sesrelay::config::Config;

const MESSAGE: &[u8] = b"From: bob@example.com\r\nSubject: hi\r\n\r\nbody\r\n";

fn config_text(upstream: &str, default_set: &str) -> String {
    format!(
        r#"# The operator's file.
[server]
listen = ["127.0.0.1:0"]
shutdown_timeout = "2s"

[upstream]
url = "{upstream}"

[configuration_sets.transactional]
[configuration_sets.marketing]

[identities."example.com"]
verified = true
default_configuration_set = "{default_set}"
"#
    )
}

/// A relay on the config file at `path`, its directory watcher set up.
async fn start(path: &Path) -> Served {
    let served = Served::load(path).await;
    // The watcher is set up as the server starts running.
    tokio::time::sleep(Duration::from_millis(100)).await;
    served
}

/// Waits (at most 5 s) until the relay has counted `succeeded` and `failed` reloads.
trait Reloads {
    async fn wait_for_reloads(&self, succeeded: u64, failed: u64);
}

impl Reloads for Served {
    async fn wait_for_reloads(&self, succeeded: u64, failed: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.relay.metrics().reloads();
            if now == (succeeded, failed) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {succeeded} reloads and {failed} failures, counted {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Replaces `path` as editors do: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The set the upstream saw on its `n`th message.
fn set_of(upstream: &Capture, n: usize) -> Vec<String> {
    header(&upstream.messages()[n].content, "X-SES-CONFIGURATION-SET")
}

#[tokio::test]
async fn a_reload_changes_the_resolved_set_between_two_messages_on_one_connection() {
    let upstream = Capture::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesrelay.toml");
    std::fs::write(&path, config_text(&upstream.url(), "transactional")).unwrap();
    let relay = start(&path).await;

    let mut c = Client::ready(relay.smtp).await;
    let first = c.mail("bob@example.com", &["r@x.test"], MESSAGE).await;
    assert!(first.starts_with("250 "), "{first}");

    replace(&path, &config_text(&upstream.url(), "marketing"));
    relay.wait_for_reloads(1, 0).await;

    let second = c.mail("bob@example.com", &["r@x.test"], MESSAGE).await;
    assert!(second.starts_with("250 "), "{second}");
    c.cmd("QUIT").await;
    upstream.wait_for(2).await;
    assert_eq!(set_of(&upstream, 0), ["transactional"]);
    assert_eq!(set_of(&upstream, 1), ["marketing"]);

    // Written in place (truncate and write), too.
    std::fs::write(&path, config_text(&upstream.url(), "transactional")).unwrap();
    relay.wait_for_reloads(2, 0).await;
    let mut c = Client::ready(relay.smtp).await;
    let third = c.mail("bob@example.com", &["r@x.test"], MESSAGE).await;
    assert!(third.starts_with("250 "), "{third}");
    upstream.wait_for(3).await;
    assert_eq!(set_of(&upstream, 2), ["transactional"]);
    relay.stop().await;
}

#[tokio::test]
async fn a_broken_file_is_refused_and_the_running_configuration_kept() {
    let upstream = Capture::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesrelay.toml");
    std::fs::write(&path, config_text(&upstream.url(), "marketing")).unwrap();
    let relay = start(&path).await;

    // A syntax error: refused, counted, and the old rules still apply.
    replace(
        &path,
        &config_text(&upstream.url(), "marketing").replace("verified = true", "verified = yes"),
    );
    relay.wait_for_reloads(0, 1).await;
    let mut c = Client::ready(relay.smtp).await;
    let kept = c.mail("bob@example.com", &["r@x.test"], MESSAGE).await;
    assert!(kept.starts_with("250 "), "{kept}");
    upstream.wait_for(1).await;
    assert_eq!(set_of(&upstream, 0), ["marketing"]);

    // The failure is on the metrics page.
    let page = relay.relay.metrics().encode(false);
    assert!(
        page.contains("sesrelay_config_reloads_total{result=\"failure\"} 1\n"),
        "{page}"
    );
    // The same broken text again is not tried (and counted) again.
    replace(
        &path,
        &config_text(&upstream.url(), "marketing").replace("verified = true", "verified = yes"),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    relay.wait_for_reloads(0, 1).await;

    // Fixed again: applied.
    replace(&path, &config_text(&upstream.url(), "transactional"));
    relay.wait_for_reloads(1, 1).await;
    let applied = c.mail("bob@example.com", &["r@x.test"], MESSAGE).await;
    assert!(applied.starts_with("250 "), "{applied}");
    upstream.wait_for(2).await;
    assert_eq!(set_of(&upstream, 1), ["transactional"]);
    relay.stop().await;
}

#[tokio::test]
async fn a_change_that_cannot_apply_live_is_refused_whole() {
    let upstream = Capture::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesrelay.toml");
    std::fs::write(&path, config_text(&upstream.url(), "marketing")).unwrap();
    let relay = start(&path).await;

    // A new listen address and a new default together: neither applies.
    let moved = config_text(&upstream.url(), "transactional").replace("127.0.0.1:0", "127.0.0.1:1");
    replace(&path, &moved);
    relay.wait_for_reloads(0, 1).await;
    let mut c = Client::ready(relay.smtp).await;
    let kept = c.mail("bob@example.com", &["r@x.test"], MESSAGE).await;
    assert!(kept.starts_with("250 "), "{kept}");
    upstream.wait_for(1).await;
    assert_eq!(set_of(&upstream, 0), ["marketing"]);
    let err = relay.relay.reload(true).await.unwrap_err().to_string();
    assert!(
        err.ends_with(
            "server.listen cannot change while sesrelay runs (restart it to apply); the running configuration is kept"
        ),
        "{err}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_new_upstream_applies_to_the_next_message() {
    let first = Capture::start(Script::default()).await;
    let second = Capture::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesrelay.toml");
    std::fs::write(&path, config_text(&first.url(), "marketing")).unwrap();
    let relay = start(&path).await;
    let mut c = Client::ready(relay.smtp).await;
    assert!(
        c.mail("bob@example.com", &["r@x.test"], MESSAGE)
            .await
            .starts_with("250 ")
    );
    replace(&path, &config_text(&second.url(), "marketing"));
    relay.wait_for_reloads(1, 0).await;
    assert!(
        c.mail("bob@example.com", &["r@x.test"], MESSAGE)
            .await
            .starts_with("250 ")
    );
    assert_eq!(first.wait_for(1).await.len(), 1);
    assert_eq!(second.wait_for(1).await.len(), 1);
    relay.stop().await;
}

/// A ConfigMap volume: `sesrelay.toml -> ..data/sesrelay.toml`, `..data -> ..<timestamp>`;
/// an update writes a new timestamped directory and renames a new `..data` link over the
/// old one. The file's own inode never changes.
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    let upstream = Capture::start(Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path();
    let version = |name: &str, text: &str| -> PathBuf {
        let d = volume.join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("sesrelay.toml"), text).unwrap();
        d
    };
    version(
        "..2026_11_27_01",
        &config_text(&upstream.url(), "marketing"),
    );
    std::os::unix::fs::symlink("..2026_11_27_01", volume.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/sesrelay.toml", volume.join("sesrelay.toml")).unwrap();
    let path = volume.join("sesrelay.toml");
    let relay = start(&path).await;

    version(
        "..2026_11_27_02",
        &config_text(&upstream.url(), "transactional"),
    );
    std::os::unix::fs::symlink("..2026_11_27_02", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    std::fs::remove_dir_all(volume.join("..2026_11_27_01")).unwrap();
    relay.wait_for_reloads(1, 0).await;

    let mut c = Client::ready(relay.smtp).await;
    assert!(
        c.mail("bob@example.com", &["r@x.test"], MESSAGE)
            .await
            .starts_with("250 ")
    );
    upstream.wait_for(1).await;
    assert_eq!(set_of(&upstream, 0), ["transactional"]);
    relay.stop().await;
}

/// The API writes the file and swaps the configuration under the same lock as reloads: its
/// own writes are never reloaded a second time, and concurrent writes all land.
#[tokio::test]
async fn api_writes_and_reloads_share_one_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesrelay.toml");
    let text = config_text(
        &format!("dir:{}", dir.path().join("outbox").display()),
        "marketing",
    )
    .replace(
        "[upstream]",
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream]",
    );
    std::fs::write(&path, text).unwrap();
    let relay = start(&path).await;
    let base = format!("http://{}", relay.admin.unwrap());
    let http = reqwest::Client::new();
    let mut calls = Vec::new();
    for i in 0..10 {
        let (http, base) = (http.clone(), base.clone());
        calls.push(tokio::spawn(async move {
            http.post(format!("{base}/v2/email/configuration-sets"))
                .json(&serde_json::json!({ "ConfigurationSetName": format!("set-{i}") }))
                .send()
                .await
                .unwrap()
                .status()
        }));
        // A reload of the file by SIGHUP's path, racing the writes.
        let _ = relay.relay.reload(true).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), reqwest::StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let config = relay.relay.config();
    for i in 0..10 {
        assert!(
            config
                .policy
                .configuration_sets
                .contains_key(&format!("set-{i}")),
            "set-{i} is live"
        );
    }
    let on_disk = Config::load(&path).unwrap();
    assert_eq!(on_disk.policy.configuration_sets.len(), 12);
    assert_eq!(relay.relay.metrics().reloads().1, 0);
    relay.stop().await;
}

/// The real binary: SIGHUP reads the file again (even unchanged), and the process goes on.
#[test]
fn sighup_reloads_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let relay = common::peers::RelayProcess::start_in(
        dir.path(),
        &format!(
            "[policy]\nrequire_verified_sender = false\n\n[upstream]\nurl = \"dir:{}\"\n",
            dir.path().join("outbox").display()
        ),
    );
    relay.process.signal("HUP");
    let lines =
        relay
            .process
            .log
            .wait_for_lines("configuration reloaded", 1, Duration::from_secs(5));
    assert_eq!(lines.len(), 1, "{}", relay.log());
    // Broken, then SIGHUP: refused, logged with file, line and column, still serving.
    std::fs::write(dir.path().join("sesrelay.toml"), "[server]\nbogus = 1\n").unwrap();
    relay.process.signal("HUP");
    let lines =
        relay
            .process
            .log
            .wait_for_lines("configuration not reloaded", 1, Duration::from_secs(5));
    assert!(!lines.is_empty(), "{}", relay.log());
    assert!(
        lines[0].contains("sesrelay.toml:2:1: server.bogus: unknown key"),
        "{}",
        lines[0]
    );
    let out = common::peers::swaks(
        relay.smtp_addr(),
        &["--from", "a@x.test", "--to", "b@x.test"],
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("<-  250 2.0.0 Ok "), "{transcript}");
}
