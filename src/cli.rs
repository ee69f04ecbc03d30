//! The command line: `serve`, `check`, `resolve`, `cert`, `hash-password`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use crate::config::{self, Config, IdentityKind};
use crate::policy::{Decision, MessageFacts, SetReason};
use crate::relay::rejection_reply;
use crate::server::Server;
use crate::upstream::{SesEndpoint, UpstreamTarget, UpstreamTls};

#[derive(Debug, Parser)]
#[command(
    name = "sesrelay",
    version,
    about = "An SMTP relay that enforces Amazon SES configuration sets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file
    #[arg(long, value_name = "PATH", env = "SESRELAY_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (logs on stderr)
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Log line format
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate the configuration and print the identity table as the relay applies it
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Dry run of the policy: which configuration set a message from ADDR gets, or the
    /// SMTP reply it is rejected with (exit 0 accepted, 1 rejected, 2 bad config or usage)
    Resolve {
        /// The From address (also taken as the envelope sender)
        #[arg(long, value_name = "ADDR")]
        from: String,
        /// The X-SES-CONFIGURATION-SET header's value
        #[arg(long, value_name = "NAME")]
        configuration_set: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write a self-signed development certificate and key: DIR/relay.crt and
    /// DIR/relay.key (mode 0600), for `[tls] cert` and `key`
    Cert {
        /// The name clients connect to (a DNS name or an IP address)
        #[arg(long, value_name = "NAME")]
        hostname: String,
        /// Where to write the pair
        #[arg(long, value_name = "DIR", default_value = "certs")]
        out: PathBuf,
        /// Replace an existing pair
        #[arg(long)]
        force: bool,
    },
    /// Read a password from standard input (one line) and print its argon2id hash, for
    /// `password_hash` in `[auth] users`
    HashPassword,
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config, log_format } => serve(&config.config, log_format),
        Command::Check { config } => check(&config.config),
        Command::Resolve {
            from,
            configuration_set,
            config,
        } => resolve(&config.config, &from, configuration_set),
        Command::Cert {
            hostname,
            out,
            force,
        } => match write_cert(&hostname, &out, force) {
            Ok((cert, key)) => {
                println!("wrote {} and {}", cert.display(), key.display());
                println!(
                    "[tls]\ncert = \"{}\"\nkey = \"{}\"",
                    cert.display(),
                    key.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sesrelay: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::HashPassword => hash_password(),
    }
}

/// `sesrelay hash-password`: one line from standard input (its line ending removed), its
/// argon2id PHC string on standard output. Exit 0, or 1 for an empty or unreadable line.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("sesrelay: cannot read the password from standard input: {e}");
        return ExitCode::from(1);
    }
    let password = line
        .strip_suffix('\n')
        .map_or(line.as_str(), |l| l.strip_suffix('\r').unwrap_or(l));
    match crate::password::hash(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "sesrelay: no hash made: {e} (give the password as one line on standard input)"
            );
            ExitCode::from(1)
        }
    }
}

/// Writes a self-signed pair for `hostname` into `dir` (created if missing); the key is
/// created with mode 0600. Existing files are kept unless `force`.
fn write_cert(hostname: &str, dir: &Path, force: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let valid = config::is_domain(hostname) || hostname.parse::<std::net::IpAddr>().is_ok();
    anyhow::ensure!(
        valid,
        "--hostname {hostname:?} is not a host name or an IP address"
    );
    let (cert_pem, key_pem) = crate::tls::self_signed(hostname)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cert = dir.join("relay.crt");
    let key = dir.join("relay.key");
    if !force {
        for path in [&cert, &key] {
            anyhow::ensure!(
                !path.exists(),
                "{} exists; pass --force to replace it",
                path.display()
            );
        }
    }
    // The key: written to a new file of mode 0600, then renamed over the old one.
    let key_tmp = dir.join(".relay.key.tmp");
    let _ = std::fs::remove_file(&key_tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_tmp)
        .with_context(|| format!("cannot create {}", key_tmp.display()))?;
    file.write_all(key_pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", key_tmp.display()))?;
    std::fs::rename(&key_tmp, &key).with_context(|| format!("cannot write {}", key.display()))?;
    std::fs::write(&cert, cert_pem).with_context(|| format!("cannot write {}", cert.display()))?;
    Ok((cert, key))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(path: &Path, log_format: LogFormat) -> ExitCode {
    init_logging(log_format);
    match run_server(path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sesrelay: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_server(path: &Path) -> anyhow::Result<()> {
    let config =
        Config::load(path).context("the configuration is not valid, so the relay did not start")?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await.context("cannot start")?;
        // Registered before the listeners announce themselves: a SIGHUP from then on
        // reloads, never kills.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangups) => {
                tokio::spawn(reload_on_hangup(std::sync::Arc::clone(server.relay()), hangups));
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP: reload by editing the file instead"),
        }
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            tracing::info!("stop signal received: finishing the messages in flight");
            let _ = stop.send(true);
        });
        server.run(stopped).await;
        Ok(())
    })
}

/// SIGHUP reads the configuration file again, even when it seems unchanged (SPEC 7).
async fn reload_on_hangup(
    relay: std::sync::Arc<crate::relay::Relay>,
    mut hangups: tokio::signal::unix::Signal,
) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP received: reading the configuration file again");
        // The outcome is logged and counted by the relay.
        let _ = relay.reload(true).await;
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            if let Some(tls) = &config.tls
                && let Err(e) = crate::tls::server_config(&tls.cert, &tls.key)
            {
                eprintln!("sesrelay: {}: {e}", config.path.display());
                return ExitCode::from(1);
            }
            print!("{}", check_report(&config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sesrelay: {e}");
            ExitCode::from(1)
        }
    }
}

/// What `sesrelay check` prints for a valid configuration.
pub fn check_report(config: &Config) -> String {
    let mut out = String::new();
    let policy = &config.policy;
    let _ = writeln!(out, "{}: valid", config.path.display());
    let _ = writeln!(
        out,
        "upstream: {}",
        describe_upstream(&config.upstream.target)
    );
    if let Some(tls) = &config.tls {
        let _ = writeln!(
            out,
            "tls: cert {}, key {}, require = {}; implicit TLS on {}",
            tls.cert.display(),
            tls.key.display(),
            tls.require,
            if config.server.listen_tls.is_empty() {
                "no listener".to_owned()
            } else {
                config
                    .server
                    .listen_tls
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    let _ = writeln!(
        out,
        "policy: require_verified_sender = {}, inherit_domain_default = {}, region {}",
        policy.require_verified_sender, policy.inherit_domain_default, policy.region
    );

    let _ = writeln!(
        out,
        "configuration sets ({}):",
        policy.configuration_sets.len()
    );
    let set_width = policy
        .configuration_sets
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0);
    for (name, set) in &policy.configuration_sets {
        let state = if set.sending_enabled {
            "sending enabled"
        } else {
            "sending paused"
        };
        let tags: Vec<String> = set.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(out, "  {name:set_width$}  {state}");
        if !tags.is_empty() {
            let _ = write!(out, "  tags: {}", tags.join(", "));
        }
        out.push('\n');
    }

    let _ = writeln!(out, "identities ({}):", policy.identities.len());
    let width = config
        .identities()
        .map(|(name, _, _)| name.len())
        .max()
        .unwrap_or(0)
        .max("IDENTITY".len());
    let _ = writeln!(
        out,
        "  {:width$}  {:7}  {:10}  DEFAULT SET",
        "IDENTITY", "TYPE", "STATUS"
    );
    for (name, identity, record) in config.identities() {
        let kind = record.kind().as_str();
        let status = if identity.verified {
            "verified"
        } else {
            "unverified"
        };
        let default = match &identity.default_configuration_set {
            None => "-".to_owned(),
            Some(set) if !policy.configuration_sets.contains_key(set) => {
                format!("{set} (does not exist)")
            }
            Some(set) if !identity.verified => format!("{set} (not applied: unverified)"),
            Some(set) => set.clone(),
        };
        let _ = writeln!(out, "  {name:width$}  {kind:7}  {status:10}  {default}");
    }
    for pending in pending_verifications(config) {
        let _ = writeln!(out, "pending: {pending}");
    }
    for warning in config.warnings() {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

/// The verifications still pending, one sentence each: a domain's TXT record, an address's
/// link. (An address's link nonce is a secret: it is never shown.)
pub fn pending_verifications(config: &Config) -> Vec<String> {
    let mut lines: Vec<String> = config
        .pending_domains()
        .map(|pending| {
            format!(
                "domain {name} is verified once TXT _amazonses.{name} holds \"{token}\"",
                name = pending.name,
                token = pending.token,
            )
        })
        .collect();
    for (name, identity, record) in config.identities() {
        if identity.verified || record.kind() != IdentityKind::Address {
            continue;
        }
        lines.push(match record.link_nonce() {
            Some(_) => format!("address {name} waits for its verification link to be opened"),
            None => format!(
                "address {name} has no verification link pending (create it through the API \
                 to send one, or set verified = true)"
            ),
        });
    }
    lines
}

fn describe_upstream(target: &UpstreamTarget) -> String {
    match target {
        UpstreamTarget::Dir(path) => format!("dir:{} (one .eml file per message)", path.display()),
        UpstreamTarget::Ses(SesEndpoint::Standard { region }) => {
            format!("SES API in {region} (SendEmail, AWS credentials from the default chain)")
        }
        UpstreamTarget::Ses(SesEndpoint::Explicit { url, region }) => format!(
            "SES API at {url}, signed for {region} (SendEmail, AWS credentials from the default chain)"
        ),
        UpstreamTarget::Smtp { host, port, tls } => {
            let how = match tls {
                UpstreamTls::None => "smtp, no TLS",
                UpstreamTls::Opportunistic => "smtp, STARTTLS when offered",
                UpstreamTls::Required => "smtp, STARTTLS required",
                UpstreamTls::Wrapper => "smtps, implicit TLS",
            };
            format!("{host}:{port} ({how})")
        }
    }
}

fn resolve(path: &Path, from: &str, configuration_set: Option<String>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sesrelay: {e}");
            return ExitCode::from(2);
        }
    };
    match resolve_address(&config, from, configuration_set.as_deref()) {
        Ok(answer) => {
            print!("{}", answer.text);
            if answer.accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("sesrelay: {e}");
            ExitCode::from(2)
        }
    }
}

/// The policy's dry run for a message from one address: what `sesrelay resolve` prints and
/// what the identities page's resolve form shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveAnswer {
    pub accepted: bool,
    /// `sesrelay resolve`'s output, one or more lines.
    pub text: String,
}

/// A dry run that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("--from needs an email address such as joe@example.com, not {0:?}")]
    NotAnAddress(String),
}

/// Resolves a message whose From and envelope sender are `from`, with `configuration_set`
/// as its `X-SES-CONFIGURATION-SET` header, against `config`'s policy.
pub fn resolve_address(
    config: &Config,
    from: &str,
    configuration_set: Option<&str>,
) -> Result<ResolveAnswer, ResolveError> {
    let looks_like_address = from.rsplit_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && !d.is_empty() && !from.contains(char::is_whitespace)
    });
    if !looks_like_address {
        return Err(ResolveError::NotAnAddress(from.to_owned()));
    }
    let facts = MessageFacts {
        envelope_sender: Some(from.to_owned()),
        from: Some(vec![from.to_owned()]),
        sender: Vec::new(),
        configuration_set: configuration_set.map(|s| s.trim().to_owned()),
        tags: None,
        api_tags: None,
        sender_limit: None,
        ..MessageFacts::default()
    };
    let (text, code) = resolve_report(config, &facts);
    Ok(ResolveAnswer {
        accepted: code == ExitCode::SUCCESS,
        text,
    })
}

/// What `sesrelay resolve` prints, and its exit code.
pub fn resolve_report(config: &Config, facts: &MessageFacts) -> (String, ExitCode) {
    match config.policy.resolve(facts) {
        Decision::Reject(rejection) => (
            format!("{}\n", rejection_reply(&rejection)),
            ExitCode::from(1),
        ),
        Decision::Accept(acceptance) => {
            let mut out = String::new();
            let why = match &acceptance.reason {
                SetReason::Header | SetReason::ApiParameter => {
                    "named by --configuration-set".to_owned()
                }
                SetReason::Default { identity } => {
                    format!("default of the verified identity {identity}")
                }
                SetReason::NoDefault {
                    identity: Some(identity),
                } => {
                    format!("the verified identity {identity} has no default")
                }
                SetReason::NoDefault { identity: None } => {
                    "no verified identity covers the sender".to_owned()
                }
            };
            match &acceptance.configuration_set {
                Some(set) => {
                    let _ = writeln!(out, "accepted: configuration set {set} ({why})");
                    let _ = writeln!(out, "X-SES-CONFIGURATION-SET: {set}");
                }
                None => {
                    let _ = writeln!(
                        out,
                        "accepted: no configuration set ({why}); forwarded untagged"
                    );
                }
            }
            if !acceptance.tags.is_empty() {
                let tags: Vec<String> = acceptance
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let _ = writeln!(out, "X-SES-MESSAGE-TAGS: {}", tags.join(", "));
            }
            (out, ExitCode::SUCCESS)
        }
    }
}
