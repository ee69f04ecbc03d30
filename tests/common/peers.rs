//! Real processes as test peers: the `sesrelay` binary, Postfix's smtp-sink, swaks and the
//! aws CLI. A missing tool fails the test with what to install (`.ci/run` installs them).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A child process killed when the test ends, however it ends. Its stderr (when piped) is
/// drained by a thread into `log`, so a chatty child never blocks on a full pipe.
pub struct Running {
    pub child: Child,
    pub log: Log,
}

impl Running {
    /// Spawns `command` with stderr piped and drained.
    pub fn spawn(command: &mut Command, what: &str) -> Running {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        let log = Log::drain(child.stderr.take());
        Running { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child's stderr, kept in memory as it arrives (and echoed to the test's own stderr,
/// which the test harness captures and shows when a test fails).
#[derive(Clone, Default)]
pub struct Log {
    shared: Arc<(Mutex<LogState>, Condvar)>,
}

#[derive(Default)]
struct LogState {
    text: String,
    closed: bool,
}

impl Log {
    /// Reads `stderr` to its end on a thread of its own.
    pub fn drain(stderr: Option<ChildStderr>) -> Log {
        let log = Log::default();
        let Some(stderr) = stderr else {
            log.close();
            return log;
        };
        let writer = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        eprint!("{text}");
                        let (state, changed) = &*writer.shared;
                        state.lock().unwrap().text.push_str(&text);
                        changed.notify_all();
                    }
                }
            }
            writer.close();
        });
        log
    }

    fn close(&self) {
        let (state, changed) = &*self.shared;
        state.lock().unwrap().closed = true;
        changed.notify_all();
    }

    /// Waits until the stream has ended (the process closed its stderr), up to `timeout`.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let (state, changed) = &*self.shared;
        let guard = state.lock().unwrap();
        let (guard, _) = changed
            .wait_timeout_while(guard, timeout, |s| !s.closed)
            .unwrap();
        guard.closed
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.shared.0.lock().unwrap().text.clone()
    }

    /// Waits until `count` lines contain `needle` and returns them; fewer when the stream
    /// ends or `timeout` passes first.
    pub fn wait_for_lines(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let (state, changed) = &*self.shared;
        let mut guard = state.lock().unwrap();
        loop {
            let found: Vec<String> = guard
                .text
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_owned)
                .collect();
            let now = Instant::now();
            if found.len() >= count || guard.closed || now >= deadline {
                return found;
            }
            guard = changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// The addresses of the log lines `<needle> <address>` (the address is the word after
    /// the needle), waiting for `count` of them.
    pub fn addresses(&self, needle: &str, count: usize, timeout: Duration) -> Vec<SocketAddr> {
        self.wait_for_lines(needle, count, timeout)
            .iter()
            .filter_map(|line| {
                let rest = &line[line.find(needle)? + needle.len()..];
                let word: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                word.parse().ok()
            })
            .collect()
    }
}

/// A port that was free a moment ago (for peers that cannot bind port 0 and say so, and
/// for an address where nothing listens).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// 127.0.0.1 with a free port.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Waits until `addr` accepts connections; fails with the child's stderr if it exits.
pub fn wait_for_port(addr: SocketAddr, what: &str, child: &mut Running) {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.child.try_wait() {
            child.log.wait_closed(Duration::from_millis(500));
            panic!(
                "{what} exited with {status} before listening: {}",
                child.log.text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} is not listening on {addr}");
}

/// `command -v name`.
pub fn command_v(name: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A tool from `candidates` or PATH, else a failure naming the Debian package.
pub fn tool(name: &str, candidates: &[&str], package: &str) -> PathBuf {
    for c in candidates {
        let p = Path::new(c);
        if p.is_file() {
            return p.to_owned();
        }
    }
    if let Some(p) = command_v(name) {
        return p;
    }
    panic!("{name} is not installed: `apt-get install {package}` (.ci/run does this)");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Starts Postfix's smtp-sink dumping each message into `dir` (LF line endings, the
/// envelope in X-Mail-Args / X-Rcpt-Args lines first).
pub fn smtp_sink(dir: &Path) -> (Running, SocketAddr) {
    let sink = tool("smtp-sink", &["/usr/sbin/smtp-sink"], "postfix");
    let addr = free_addr();
    let mut cmd = Command::new(sink);
    if is_root() {
        // smtp-sink refuses to run as root; the dump directory must be writable by nobody.
        cmd.args(["-u", "nobody"]);
        let _ = Command::new("chmod").arg("777").arg(dir).status();
    }
    let template = format!("{}/%Y%m%d%H%M%S.", dir.display());
    cmd.args(["-d", &template, &addr.to_string(), "10"])
        .stdout(Stdio::null());
    let mut child = Running::spawn(&mut cmd, "smtp-sink");
    wait_for_port(addr, "smtp-sink", &mut child);
    (child, addr)
}

/// `sesrelay serve --config <config> <args>` with `env`, stderr drained.
fn spawn_sesrelay(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Running {
    Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_sesrelay"))
            .args(["serve", "--config"])
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null()),
        "sesrelay",
    )
}

/// Starts the `sesrelay` binary on `config` with `env`, and waits for `listeners` (fixed
/// addresses, for a restart on the same ones; otherwise prefer [`RelayProcess`]).
pub fn sesrelay(config: &Path, env: &[(&str, &str)], listeners: &[SocketAddr]) -> Running {
    let mut child = spawn_sesrelay(config, env, &[]);
    for &addr in listeners {
        wait_for_port(addr, "sesrelay", &mut child);
    }
    child
}

/// The `sesrelay` binary on a config whose listeners bind port 0: the addresses it got are
/// read from its log lines (`listening for SMTP on <addr>`, `listening for the SES v2 API
/// on <addr>`), so there is no race for a port.
pub struct RelayProcess {
    pub process: Running,
    /// The SMTP listeners, in the order of `server.listen`.
    pub smtp: Vec<SocketAddr>,
    /// The admin listener, when `[admin]` is configured.
    pub admin: Option<SocketAddr>,
}

impl RelayProcess {
    pub const SMTP_LINE: &str = "listening for SMTP on";
    pub const ADMIN_LINE: &str = "listening for the SES v2 API on";

    /// Starts the relay on the config file at `config` and waits until it listens.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> RelayProcess {
        RelayProcess::start_with_args(config, env, &[])
    }

    /// [`RelayProcess::start`] with more arguments to `serve` (`--log-format json`).
    pub fn start_with_args(config: &Path, env: &[(&str, &str)], args: &[&str]) -> RelayProcess {
        let text = std::fs::read_to_string(config).expect("config readable");
        let table: toml::Table = text.parse().expect("config is TOML");
        let server = table.get("server").and_then(|s| s.as_table());
        let smtp_count = server
            .and_then(|s| s.get("listen"))
            .and_then(|l| l.as_array())
            .map_or(1, Vec::len);
        let has_admin = table.contains_key("admin");
        let process = spawn_sesrelay(config, env, args);
        let smtp = process
            .log
            .addresses(Self::SMTP_LINE, smtp_count, START_TIMEOUT);
        let admin = if has_admin {
            process
                .log
                .addresses(Self::ADMIN_LINE, 1, START_TIMEOUT)
                .first()
                .copied()
        } else {
            None
        };
        assert!(
            smtp.len() == smtp_count && admin.is_some() == has_admin,
            "sesrelay did not report its listeners: {}",
            process.log.text()
        );
        RelayProcess {
            process,
            smtp,
            admin,
        }
    }

    /// Writes `config` (TOML; `server.listen` is set to 127.0.0.1:0 unless given) into
    /// `dir` and starts the relay on it.
    pub fn start_in(dir: &Path, config: &str) -> RelayProcess {
        let config = if config.contains("listen = [") {
            config.to_owned()
        } else if config.contains("[server]\n") {
            config.replacen("[server]\n", "[server]\nlisten = [\"127.0.0.1:0\"]\n", 1)
        } else {
            format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{config}")
        };
        let path = dir.join("sesrelay.toml");
        std::fs::write(&path, config).expect("config written");
        RelayProcess::start(&path, &[])
    }

    /// The first SMTP listener.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp[0]
    }

    pub fn log(&self) -> String {
        self.process.log.text()
    }
}

/// Runs swaks against `server`.
pub fn swaks(server: SocketAddr, args: &[&str]) -> Output {
    let swaks = tool("swaks", &["/usr/bin/swaks"], "swaks");
    Command::new(swaks)
        .args(["--server", &server.to_string(), "--timeout", "20"])
        .args(args)
        .output()
        .expect("swaks runs")
}
