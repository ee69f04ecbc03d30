//! A Python with boto3 as a test peer: `$SESRELAY_PYTHON`, else `python3` on PATH (`.ci/run`
//! installs boto3 in the virtual environment of the aws CLI and sets the variable), run
//! with nothing of the user's own AWS setup.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// A Python with boto3; without one, the test fails and says what to install.
pub fn python() -> PathBuf {
    let python = std::env::var_os("SESRELAY_PYTHON")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let has_boto3 = std::process::Command::new(&python)
        .args(["-c", "import boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_boto3,
        "{} has no boto3: run .ci/run, which installs it, or `pip install boto3` (in a \
         virtual environment), then set SESRELAY_PYTHON to its python",
        python.display()
    );
    python
}

/// Runs `script` with `args`; its standard output (it must exit 0 within 60 s).
pub async fn run_python(script: &str, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(python());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the script ends within 60 s")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the script failed ({}):\n--- stdout:\n{stdout}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
