//! The real aws CLI as a test peer: `$SESRELAY_AWS_CLI`, else `aws` on PATH (`.ci/run`
//! installs it from PyPI in a virtual environment and sets the variable), run with nothing
//! of the user's own AWS setup.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// The aws CLI: `$SESRELAY_AWS_CLI`, else `aws` on PATH.
pub fn aws_cli() -> PathBuf {
    let runs = |path: &Path| {
        Command::new(path)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let path = std::env::var_os("SESRELAY_AWS_CLI")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| super::peers::command_v("aws"))
        .expect("the aws CLI is not installed: set SESRELAY_AWS_CLI (.ci/run does)");
    assert!(runs(&path), "{} does not run `--version`", path.display());
    path
}

pub struct CliOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

/// `aws SERVICE --endpoint-url ENDPOINT ARGS` (`sesv2`, or `ses` for the v1 API), with
/// nothing of the user's AWS setup; with `single_attempt`, botocore does not retry.
pub fn aws(
    bin: &Path,
    service: &str,
    endpoint: &str,
    args: &[&str],
    single_attempt: bool,
) -> CliOut {
    let mut cmd = Command::new(bin);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIexample")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_DEFAULT_OUTPUT", "json")
        .env("AWS_PAGER", "")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    if single_attempt {
        cmd.env("AWS_MAX_ATTEMPTS", "1");
    }
    let out = cmd
        .args([
            service,
            "--endpoint-url",
            endpoint,
            "--cli-read-timeout",
            "10",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the aws CLI runs");
    CliOut {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        args: format!("{service} {}", args.join(" ")),
    }
}

/// The aws CLI pointed at one endpoint, for one service.
pub struct Cli {
    pub bin: PathBuf,
    pub endpoint: String,
    /// `sesv2`, or `ses` (the v1 API).
    pub service: &'static str,
    /// No retries by botocore (an error is seen as the first attempt got it).
    pub single_attempt: bool,
}

impl Cli {
    /// `aws sesv2` at `endpoint`, retrying as botocore does.
    pub fn sesv2(endpoint: impl Into<String>) -> Cli {
        Cli {
            bin: aws_cli(),
            endpoint: endpoint.into(),
            service: "sesv2",
            single_attempt: false,
        }
    }

    /// `aws ses` (the v1 API) at `endpoint`, one attempt per call.
    pub fn ses(endpoint: impl Into<String>) -> Cli {
        Cli {
            service: "ses",
            single_attempt: true,
            ..Cli::sesv2(endpoint)
        }
    }

    pub async fn run(&self, args: &[&str]) -> CliOut {
        let (bin, endpoint) = (self.bin.clone(), self.endpoint.clone());
        let (service, single_attempt) = (self.service, self.single_attempt);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            aws(&bin, service, &endpoint, &args, single_attempt)
        })
        .await
        .unwrap()
    }

    pub async fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args).await;
        assert_eq!(
            out.code,
            Some(0),
            "aws {}\n{}\n{}",
            out.args,
            out.stdout,
            out.stderr
        );
        if out.stdout.trim().is_empty() {
            return json!({});
        }
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
    }

    pub async fn fails(&self, args: &[&str], operation: &str, code: &str, message: &str) {
        let out = self.run(args).await;
        assert!(
            matches!(out.code, Some(254 | 255)),
            "aws {}: {:?}\n{}\n{}",
            out.args,
            out.code,
            out.stdout,
            out.stderr
        );
        let expected =
            format!("An error occurred ({code}) when calling the {operation} operation: {message}");
        assert!(
            out.stderr.contains(&expected),
            "expected {expected:?} in:\n{}",
            out.stderr
        );
    }
}
