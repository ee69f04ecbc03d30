//! Real processes as test peers: the `sesrelay` binary, Postfix's smtp-sink, swaks and the
//! aws CLI. A missing tool fails the test with what to install (`.ci/run` installs them).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port that was free a moment ago.
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
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited with {status} before listening: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
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
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Running(cmd.spawn().expect("smtp-sink starts"));
    wait_for_port(addr, "smtp-sink", &mut child);
    (child, addr)
}

/// Starts the `sesrelay` binary on `config` with `env`, and waits for `listeners`.
pub fn sesrelay(config: &Path, env: &[(&str, &str)], listeners: &[SocketAddr]) -> Running {
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_sesrelay"))
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sesrelay starts"),
    );
    for &addr in listeners {
        wait_for_port(addr, "sesrelay", &mut child);
    }
    child
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
