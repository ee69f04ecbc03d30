//! The pages in a real Chromium: Debian's `chromium`, driven through `chromium-driver`
//! (chromedriver) with fantoccini. `.ci/run` installs both. The tests run as root, hence
//! `--no-sandbox`. Every wait polls for up to [`WAIT`]; nothing asserts on timing.
//!
//! With `SESRELAY_SCREENSHOTS=DIR`, the list and a message page are written to DIR as
//! `list.png` and `message.png` (the README's pictures: `SESRELAY_SCREENSHOTS=docs`).
//! Nothing else is ever written outside temporary directories.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use sesrelay::config::Config;
use sesrelay::server::Server;
use tokio::sync::watch;

use common::peers::{free_port, tool};

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(10);

/// One browser at a time: each is a Chromium, and the machine may have two cores.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// chromedriver (in a process group of its own, with the Chromium it starts) and a
/// WebDriver session on it.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        use std::os::unix::process::CommandExt as _;
        let chromedriver = tool(
            "chromedriver",
            &["/usr/bin/chromedriver"],
            "chromium-driver",
        );
        let chromium = tool("chromium", &["/usr/bin/chromium"], "chromium");
        let profile = tempfile::tempdir().unwrap();
        let mut last_error = String::new();
        // chromedriver needs a port number; another process may take the free one first.
        for _ in 0..3 {
            let port = free_port();
            let mut driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts");
            let capabilities = json!({
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-dev-shm-usage",
                        "--disable-gpu",
                        "--no-first-run",
                        "--window-size=1280,1000",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            });
            let serde_json::Value::Object(capabilities) = capabilities else {
                unreachable!()
            };
            let url = format!("http://127.0.0.1:{port}");
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await
                {
                    Ok(client) => {
                        return Browser {
                            driver,
                            client: Some(client),
                            _profile: profile,
                        };
                    }
                    Err(e) => last_error = e.to_string(),
                }
                if tokio::time::Instant::now() > deadline
                    || driver.try_wait().ok().flatten().is_some()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            kill_group(&mut driver);
        }
        panic!("no WebDriver session with chromedriver and chromium: {last_error}");
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    /// Ends the session (Chromium quits), then chromedriver.
    async fn stop(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(WAIT, client.close()).await;
        }
        kill_group(&mut self.driver);
    }

    async fn goto(&self, url: &str) {
        self.client().goto(url).await.expect("page loads");
    }

    /// The text of the first element `css` matches, once `ready` holds for it (polled up to
    /// [`WAIT`]).
    async fn text_when(&self, css: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Ok(element) = self.client().find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                if ready(&text) {
                    return text;
                }
                last = Some(text);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css}: not there or not as expected within {WAIT:?}; last text: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of `css` once it exists.
    async fn text(&self, css: &str) -> String {
        self.text_when(css, |_| true).await
    }

    /// Types `value` into the input `css`, replacing what it held.
    async fn fill(&self, css: &str, value: &str) {
        let input = self
            .client()
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .expect("input there");
        input.clear().await.expect("input cleared");
        input.send_keys(value).await.expect("typed");
    }

    async fn click(&self, css: &str) {
        self.client()
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .expect("element there")
            .click()
            .await
            .expect("clicked");
    }

    /// Writes a screenshot of the page as `DIR/name` when `SESRELAY_SCREENSHOTS=DIR`.
    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("SESRELAY_SCREENSHOTS") else {
            return;
        };
        let png = self.client().screenshot().await.expect("screenshot");
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked leaves no chromedriver or Chromium behind.
        kill_group(&mut self.driver);
    }
}

/// Kills chromedriver's process group (chromedriver and the Chromium it started).
fn kill_group(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A relay with its admin listener, its config file and a `dir:` upstream in a temporary
/// directory.
struct Relay {
    _dir: tempfile::TempDir,
    base: String,
    smtp: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]
shutdown_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[upstream]
url = "dir:OUTBOX"

[configuration_sets.transactional]

[configuration_sets.marketing]
tags = { team = "growth" }

[identities."example.com"]
verified = true
default_configuration_set = "transactional"

[identities."joe@example.com"]
verified = true
default_configuration_set = "marketing"

[identities."legacy.example.org"]
verified = true
default_configuration_set = "retired"

[identities."new.example.net"]
verified = false
verification_token = "pending-token-123"
"#;

impl Relay {
    async fn start() -> Relay {
        Relay::start_with("", &|_| None).await
    }

    /// With `admin` added to `[admin]`, the secrets it names looked up in `secrets`.
    async fn start_with(admin: &str, secrets: &dyn Fn(&str) -> Option<String>) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let text = CONFIG
            .replace("OUTBOX", &dir.path().join("outbox").display().to_string())
            .replace(
                "listen = \"127.0.0.1:0\"\n\n[upstream]",
                &format!("listen = \"127.0.0.1:0\"\n{admin}\n[upstream]"),
            );
        let path = dir.path().join("sesrelay.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load_with(&path, secrets).expect("valid config");
        let server = Server::bind(config).await.expect("binds");
        let base = format!("http://{}", server.admin_addr().expect("admin listener"));
        let smtp = server.local_addrs()[0];
        let (stop, stopped) = watch::channel(false);
        let done = tokio::spawn(server.run(stopped));
        Relay {
            _dir: dir,
            base,
            smtp,
            stop,
            done,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(WAIT, self.done).await;
    }

    /// Sends one message over SMTP; the relay's final reply.
    async fn send(&self, from: &str, to: &str, headers: &str, body: &str) -> String {
        let mut client = common::Client::ready(self.smtp).await;
        let content = format!(
            "From: {from}\r\nTo: {to}\r\n{headers}Message-ID: <{}@test>\r\n\r\n{body}",
            uuid::Uuid::new_v4()
        );
        let content = content.replace("\r\n", "\n").replace('\n', "\r\n");
        let reply = client.mail(from, &[to], content.as_bytes()).await;
        let _ = client.cmd("QUIT").await;
        reply
    }
}

/// The body of a multipart/alternative message (boundary `b1`) whose HTML part's script would change the page, its frame and its own text, and whose
/// image would be fetched from `pixel` if anything remote were loaded.
fn hostile_html(pixel: std::net::SocketAddr) -> String {
    format!(
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nWelcome, Joe (text).\r\n\
         --b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
         <html><head><title>mail</title></head><body>\
         <h1 id=\"greeting\">Welcome, Joe</h1>\
         <p id=\"marker\">the script did not run</p>\
         <img src=\"http://{pixel}/pixel.png\" alt=\"\">\
         <script>\
         document.getElementById('marker').textContent = 'the script ran';\
         document.title = 'pwned';\
         try {{ window.parent.document.body.dataset.pwned = 'yes'; }} catch (e) {{}}\
         try {{ window.top.document.title = 'pwned'; }} catch (e) {{}}\
         </script></body></html>\r\n\
         --b1--\r\n"
    )
}

/// Counts the connections made to it: nothing should ever connect.
async fn tripwire() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (addr, hits)
}

/// The identities page shows the table as the relay applies it, and its resolve form
/// answers what `sesrelay resolve` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_page_and_resolve_form() {
    let _one = ONE_BROWSER.lock().await;
    let relay = Relay::start().await;
    let browser = Browser::start().await;

    browser.goto(&relay.url("/identities")).await;
    let table = browser
        .text_when("#identities", |t| t.contains("joe@example.com"))
        .await;
    let joe = table
        .lines()
        .find(|l| l.contains("joe@example.com"))
        .expect("a row for joe@example.com");
    assert!(
        joe.contains("verified") && joe.contains("marketing"),
        "{joe}"
    );
    let new = table
        .lines()
        .find(|l| l.contains("new.example.net"))
        .expect("a row for new.example.net");
    assert!(new.contains("unverified"), "{new}");
    let legacy = table
        .lines()
        .find(|l| l.contains("legacy.example.org"))
        .expect("a row for legacy.example.org");
    assert!(
        legacy.contains("retired") && legacy.contains("deleted set"),
        "{legacy}"
    );
    let warnings = browser.text("#warnings").await;
    assert!(warnings.contains("retired does not exist"), "{warnings}");
    let pending = browser.text("#pending").await;
    assert!(
        pending.contains("_amazonses.new.example.net") && pending.contains("pending-token-123"),
        "{pending}"
    );
    let sets = browser.text("#sets").await;
    assert!(sets.contains("team=growth"), "{sets}");

    // The form: an address's default.
    browser.fill("#resolve-from", "joe@example.com").await;
    browser.click("#resolve-submit").await;
    let answer = browser
        .text_when("#resolve-answer", |t| t.contains("joe@example.com"))
        .await;
    assert!(
        answer.contains(
            "accepted: configuration set marketing (default of the verified identity joe@example.com)"
        ),
        "{answer}"
    );
    assert!(
        answer.contains("X-SES-CONFIGURATION-SET: marketing"),
        "{answer}"
    );

    // The header's set wins; then a deleted set's rejection, with SES's reply.
    browser.fill("#resolve-from", "ann@example.com").await;
    browser.fill("#resolve-set", "marketing").await;
    browser.click("#resolve-submit").await;
    let answer = browser
        .text_when("#resolve-answer", |t| t.contains("ann@example.com"))
        .await;
    assert!(
        answer.contains("accepted: configuration set marketing (named by"),
        "{answer}"
    );

    browser
        .fill("#resolve-from", "old@legacy.example.org")
        .await;
    browser.fill("#resolve-set", "").await;
    browser.click("#resolve-submit").await;
    let answer = browser
        .text_when("#resolve-answer", |t| t.contains("old@legacy.example.org"))
        .await;
    assert!(answer.contains("rejected"), "{answer}");
    assert!(
        answer.contains("554 5.3.0") && answer.contains("retired"),
        "{answer}"
    );
    let class = browser
        .client()
        .find(Locator::Css("#resolve-answer"))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(class.contains("rejected"), "{class}");

    // Not an address: said so, as the command says it.
    browser.goto(&relay.url("/identities?from=nobody")).await;
    let answer = browser.text("#resolve-answer").await;
    assert!(answer.contains("needs an email address"), "{answer}");

    browser.stop().await;
    relay.stop().await;
}

/// The list shows captured mail with outcome, set and source; the search filters it; a
/// message's page tells the decision in words and shows the HTML part in a sandboxed frame,
/// where a script runs nothing and nothing remote is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_message_pages() {
    let _one = ONE_BROWSER.lock().await;
    let relay = Relay::start().await;
    let (pixel, pixel_hits) = tripwire().await;

    let reply = relay
        .send(
            "joe@example.com",
            "someone@example.org",
            "Subject: Welcome, Joe\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/alternative; boundary=b1\r\n",
            &hostile_html(pixel),
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let reply = relay
        .send(
            "ann@example.com",
            "team@example.org",
            "Subject: Header set\r\nX-SES-CONFIGURATION-SET: marketing\r\n",
            "Chosen by the header.\r\n",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let reply = relay
        .send(
            "old@legacy.example.org",
            "someone@example.org",
            "Subject: From a retired set\r\n",
            "Its domain's default set was deleted.\r\n",
        )
        .await;
    assert!(reply.starts_with("554 5.3.0"), "{reply}");

    let browser = Browser::start().await;
    browser.goto(&relay.url("/")).await;
    let list = browser
        .text_when("#messages", |t| {
            t.contains("Welcome, Joe") && t.contains("Header set") && t.contains("retired set")
        })
        .await;
    let rows: Vec<&str> = list.lines().collect();
    // Newest first.
    let position = |needle: &str| rows.iter().position(|r| r.contains(needle)).unwrap();
    assert!(position("retired set") < position("Header set"), "{list}");
    assert!(position("Header set") < position("Welcome, Joe"), "{list}");
    let joe = rows[position("Welcome, Joe")];
    assert!(
        joe.contains("forwarded") && joe.contains("marketing · address default"),
        "{joe}"
    );
    assert!(
        joe.contains("joe@example.com") && joe.contains("someone@example.org"),
        "{joe}"
    );
    let ann = rows[position("Header set")];
    assert!(ann.contains("marketing · header"), "{ann}");
    let old = rows[position("retired set")];
    assert!(old.contains("rejected"), "{old}");
    // The live list's event stream is open (for the picture too).
    browser.text_when("#live", |t| t == "live").await;
    browser.screenshot("list.png").await;

    // The search, server-side.
    browser.fill("#search", "outcome:rejected").await;
    browser.click("form.search button").await;
    let filtered = browser
        .text_when("#messages", |t| !t.contains("Welcome, Joe"))
        .await;
    assert!(filtered.contains("retired set"), "{filtered}");
    assert!(!filtered.contains("Header set"), "{filtered}");
    browser.goto(&relay.url("/?q=set:marketing+from:ann")).await;
    let filtered = browser
        .text_when("#messages", |t| t.contains("Header set"))
        .await;
    assert!(!filtered.contains("Welcome, Joe"), "{filtered}");

    // A message's page: the decision in words.
    browser.goto(&relay.url("/")).await;
    browser
        .text_when("#messages", |t| t.contains("Welcome, Joe"))
        .await;
    browser
        .client()
        .find(Locator::LinkText("Welcome, Joe"))
        .await
        .expect("the subject links to the message")
        .click()
        .await
        .unwrap();
    let trail = browser
        .text_when("#trail", |t| t.contains("joe@example.com"))
        .await;
    assert!(
        trail.contains("default configuration set of joe@example.com → marketing"),
        "{trail}"
    );
    assert!(trail.contains("forwarded"), "{trail}");
    assert!(trail.contains("X-SES-MESSAGE-TAGS: team=growth"), "{trail}");
    let text = browser.text("#text-part").await;
    assert!(text.contains("Welcome, Joe (text)."), "{text}");
    let headers = browser.text("#headers").await;
    assert!(headers.contains("X-SES-CONFIGURATION-SET"), "{headers}");
    let raw = browser.text("#raw").await;
    assert!(
        raw.contains("<script>"),
        "the raw source shown as text: {raw}"
    );

    // The HTML part: in an iframe with an empty sandbox attribute (no scripts, an opaque
    // origin), served with a CSP sandbox of its own.
    let frame = browser
        .client()
        .find(Locator::Css("iframe#html-part"))
        .await
        .expect("the HTML part's frame");
    assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some(""));
    let src = frame.attr("src").await.unwrap().expect("src");
    let response = reqwest::get(relay.url(&src)).await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.starts_with("sandbox;") && !csp.contains("allow-scripts"),
        "{csp}"
    );
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    browser.screenshot("message.png").await;

    // The listener's Origin and Host rules hold for the pages.
    let http = reqwest::Client::new();
    let foreign = http
        .get(relay.url("/"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let rebound = http
        .get(relay.url(&src))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let own = http.get(relay.url("/")).send().await.unwrap();
    assert_eq!(own.status(), 200);
    let csp = own.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );

    // Inside the frame the message is shown, and its script did not run.
    frame.enter_frame().await.expect("into the frame");
    let greeting = browser.text("#greeting").await;
    assert_eq!(greeting, "Welcome, Joe");
    let marker = browser.text("#marker").await;
    assert_eq!(marker, "the script did not run");
    browser.client().enter_parent_frame().await.unwrap();
    // Nothing changed in the page's origin.
    let page = browser
        .client()
        .execute(
            "return [document.title, document.body.dataset.pwned || null];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(page, json!(["Welcome, Joe · sesrelay", null]));
    assert_eq!(
        pixel_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the message's remote image was fetched"
    );

    // The header's set, and a rejection, in words.
    browser
        .goto(&relay.url("/?q=subject:%22Header+set%22"))
        .await;
    browser
        .text_when("#messages", |t| t.contains("Header set"))
        .await;
    browser.click("#messages a").await;
    let trail = browser.text_when("#trail", |t| t.contains("header")).await;
    assert!(
        trail.contains("X-SES-CONFIGURATION-SET header → marketing"),
        "{trail}"
    );
    browser.goto(&relay.url("/?q=outcome:rejected")).await;
    browser
        .text_when("#messages", |t| t.contains("retired set"))
        .await;
    browser.click("#messages a").await;
    let trail = browser
        .text_when("#trail", |t| t.contains("rejected"))
        .await;
    assert!(trail.contains("554 5.3.0"), "{trail}");
    assert!(
        trail.contains("default configuration set of the domain legacy.example.org → retired"),
        "{trail}"
    );

    browser.stop().await;
    relay.stop().await;
}

/// A message sent over SMTP while the list is open appears on it without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_message_appears_without_reload() {
    let _one = ONE_BROWSER.lock().await;
    let relay = Relay::start().await;
    let reply = relay
        .send(
            "joe@example.com",
            "someone@example.org",
            "Subject: Before the page\r\n",
            "First.\r\n",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");

    let browser = Browser::start().await;
    browser.goto(&relay.url("/")).await;
    browser
        .text_when("#messages", |t| t.contains("Before the page"))
        .await;
    // The event stream is open.
    browser.text_when("#live", |t| t == "live").await;
    // A mark that a reload would lose.
    browser
        .client()
        .execute("window.sesrelayMark = 'kept'; return true;", vec![])
        .await
        .unwrap();

    let reply = relay
        .send(
            "ann@example.com",
            "team@example.org",
            "Subject: While the page is open\r\nX-SES-CONFIGURATION-SET: marketing\r\n",
            "Second.\r\n",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let list = browser
        .text_when("#messages", |t| t.contains("While the page is open"))
        .await;
    let first_row = list.lines().find(|l| l.contains(" UTC ")).expect("a row");
    assert!(
        first_row.contains("While the page is open") && first_row.contains("marketing · header"),
        "the new message on top: {list}"
    );
    let mark = browser
        .client()
        .execute("return window.sesrelayMark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, json!("kept"), "the page was not reloaded");
    let total = browser.text("#total").await;
    assert_eq!(total, "2");

    browser.stop().await;
    relay.stop().await;
}

/// With `[admin] access_keys`, every page (the HTML part and the assets included) needs
/// HTTP Basic auth by one of `ui_users`, as the capture API does.
#[tokio::test]
async fn pages_take_basic_auth_with_access_keys() {
    let hash = sesrelay::password::hash("s3cret").unwrap();
    let relay = Relay::start_with(
        &format!(
            "access_keys = [{{ id = \"AKIDTEST\", secret_env = \"KEY\" }}]\n\
             ui_users = [{{ username = \"dev\", password_hash = \"{hash}\" }}]\n"
        ),
        &|var| (var == "KEY").then(|| "secretkey".to_owned()),
    )
    .await;
    let reply = relay
        .send(
            "joe@example.com",
            "someone@example.org",
            "Subject: Hi\r\nContent-Type: text/html\r\n",
            "<p>hi</p>\r\n",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let http = reqwest::Client::new();
    let (_, list) = {
        let resp = http
            .get(relay.url("/api/v1/messages"))
            .basic_auth("dev", Some("s3cret"))
            .send()
            .await
            .unwrap();
        (
            resp.status(),
            resp.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let id = list["messages"][0]["ID"]
        .as_str()
        .expect("an id")
        .to_owned();
    for path in [
        "/".to_owned(),
        "/identities?from=joe%40example.com".to_owned(),
        format!("/message/{id}"),
        format!("/message/{id}/html"),
        format!("/message/{id}/row"),
        "/static/app.js".to_owned(),
    ] {
        let resp = http.get(relay.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Basic realm=\"sesrelay\"",
            "{path}"
        );
        let resp = http
            .get(relay.url(&path))
            .basic_auth("dev", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let resp = http
            .get(relay.url(&path))
            .basic_auth("dev", Some("s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    relay.stop().await;
}
