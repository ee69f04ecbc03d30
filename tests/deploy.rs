//! The deployment files in `deploy/`, checked as far as they can be without a container
//! runtime or a cluster: the manifests parse and hold together (probes, ports, the drain
//! against the grace period, secrets, the read-only config mount), the configurations they
//! carry load, the Containerfile and the systemd unit say what the relay needs, and the unit
//! passes `systemd-analyze verify` where that tool exists.
//!
//! YAML is read by PyYAML (`python3-yaml`, which `.ci/run` installs) and handed over as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser as _;
use serde_json::Value;
use sesrelay::cli::{Cli, Command as CliCommand};
use sesrelay::config::Config;
use sesrelay::upstream::{SesEndpoint, UpstreamTarget, UpstreamTls};

/// Where the image and the unit expect the configuration.
const CONFIG_PATH: &str = "/etc/sesrelay/sesrelay.toml";
const CONFIG_DIR: &str = "/etc/sesrelay";
const SMTP_PORT: u16 = 2525;
const ADMIN_PORT: u16 = 2580;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file, parsed by PyYAML and converted to JSON; empty documents
/// left out.
fn yaml_documents(path: &str) -> Vec<Value> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        docs = list(yaml.safe_load_all(open(sys.argv[1], encoding='utf-8')))\n\
        print(json.dumps([d for d in docs if d is not None]))";
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(repo_file(path))
        .output()
        .expect(
            "python3 runs (the YAML checks need python3 with PyYAML: apt-get install python3-yaml)",
        );
    assert!(
        out.status.success(),
        "{path} does not parse as YAML (or PyYAML is missing: apt-get install python3-yaml):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's documents as JSON")
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind} expected");
    found[0]
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn items<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what} is not a list: {v}"))
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|c| c["name"] == name)
}

/// The command line a container or unit runs, as sesrelay's own parser reads it; the path
/// of `serve`'s config file.
fn serve_config(args: &[String]) -> PathBuf {
    let argv = std::iter::once("sesrelay".to_owned()).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("sesrelay does not take {args:?}:\n{e}"));
    match cli.command {
        CliCommand::Serve { config, .. } => config.config,
        other => panic!("{args:?} is not `serve`: {other:?}"),
    }
}

/// A Kubernetes memory quantity in bytes (the suffixes the manifests use).
fn memory_bytes(quantity: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return n.parse::<u64>().expect("a whole number") * factor;
        }
    }
    quantity.parse().expect("a memory quantity")
}

/// A value for every variable a manifest's container sets from a Secret (the Secret in the
/// same file must hold the key), to resolve the configuration's `*_env` names against.
fn secret_env(docs: &[Value], container: &Value, file: &str) -> BTreeMap<String, String> {
    let secret = kind(docs, "Secret");
    let mut env = BTreeMap::new();
    for var in items(&container["env"], "env") {
        let Some(reference) = var["valueFrom"]["secretKeyRef"].as_object() else {
            continue;
        };
        let name = str_of(&var["name"], "env name");
        assert_eq!(
            reference["name"], secret["metadata"]["name"],
            "{file}: {name} names a Secret the file does not define"
        );
        let key = str_of(&reference["key"], "secretKeyRef key");
        assert!(
            secret["stringData"][key].is_string() || secret["data"][key].is_string(),
            "{file}: the Secret has no key {key} for {name}"
        );
        // 32 characters: enough for every kind of secret the config may name.
        env.insert(name.to_owned(), format!("{name:_<32}"));
    }
    env
}

/// What both manifests must get right about the sesrelay container: returns the
/// configuration its ConfigMap carries, with the secrets resolved from the container's env.
fn check_sesrelay_pod(
    file: &str,
    docs: &[Value],
    pod: &Value,
    relay: &Value,
) -> (Config, BTreeMap<String, String>) {
    // The ConfigMap's file loads, as serve would load it.
    let config_map = kind(docs, "ConfigMap");
    let text = str_of(
        &config_map["data"]["sesrelay.toml"],
        "ConfigMap sesrelay.toml",
    );
    let parsed = Config::parse(text, Path::new(&format!("{file}#sesrelay.toml")))
        .unwrap_or_else(|e| panic!("the ConfigMap's sesrelay.toml does not load: {e}"));

    // The command line runs serve on the mounted file.
    let args: Vec<String> = items(&relay["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg").to_owned())
        .collect();
    assert_eq!(serve_config(&args), Path::new(CONFIG_PATH), "{file}");

    // The ConfigMap is mounted as a directory (a subPath mount is never updated), read-only.
    let mounts = items(&relay["volumeMounts"], "volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == CONFIG_DIR)
        .unwrap_or_else(|| panic!("{file}: nothing is mounted at {CONFIG_DIR}"));
    assert!(
        mount.get("subPath").is_none(),
        "{file}: a subPath mount never sees ConfigMap updates"
    );
    assert_eq!(mount["readOnly"], true, "{file}");
    let volume_name = str_of(&mount["name"], "volume name");
    let volume = named(items(&pod["volumes"], "volumes"), volume_name)
        .unwrap_or_else(|| panic!("{file}: no volume {volume_name}"));
    assert_eq!(
        volume["configMap"]["name"], config_map["metadata"]["name"],
        "{file}: the mounted volume is not the ConfigMap"
    );
    assert!(
        volume["configMap"].get("items").is_none(),
        "{file}: keep the whole ConfigMap in the directory"
    );

    // Probes on the admin listener: live and ready, on the port the config listens on.
    let admin = parsed.admin.as_ref().expect("[admin] is configured");
    assert_eq!(admin.listen.port(), ADMIN_PORT, "{file}: admin.listen");
    assert!(
        admin.listen.ip().is_unspecified(),
        "{file}: the kubelet probes the pod's IP, so the admin listener must not be loopback only"
    );
    for (probe, path) in [
        ("livenessProbe", "/healthz/live"),
        ("readinessProbe", "/healthz/ready"),
        ("startupProbe", "/healthz/live"),
    ] {
        if probe == "startupProbe" && relay.get(probe).is_none() {
            continue;
        }
        let get = &relay[probe]["httpGet"];
        assert_eq!(get["path"], path, "{file}: {probe}");
        assert_eq!(get["port"], ADMIN_PORT, "{file}: {probe}");
    }
    let admin_port = named(items(&relay["ports"], "ports"), "admin").expect("an admin port");
    assert_eq!(admin_port["containerPort"], ADMIN_PORT, "{file}");

    // The kubelet waits longer than sesrelay drains (and than the preStop pause before).
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("{file}: terminationGracePeriodSeconds is not set"));
    let pause = relay["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        Duration::from_secs(grace) > parsed.server.shutdown_timeout + Duration::from_secs(pause),
        "{file}: terminationGracePeriodSeconds ({grace}s) must be longer than the preStop pause \
         ({pause}s) plus server.shutdown_timeout ({:?})",
        parsed.server.shutdown_timeout
    );

    // Every secret the config names comes from the Secret through the env; with the mount
    // read-only, that includes the verification key, which would otherwise be a file
    // written beside the config.
    let env = secret_env(docs, relay, file);
    let resolved = parsed
        .clone()
        .resolve_secrets(&|var| env.get(var).cloned())
        .unwrap_or_else(|e| panic!("{file}: a secret the config names is not in the env: {e}"));
    assert!(
        resolved.verification.secret.is_some(),
        "{file}: set [verification] secret_env: the read-only mount cannot hold a generated key"
    );
    // SES's SMTP endpoint takes the SMTP password from the Secret; the SES API upstream
    // takes no password at all (the pod's IAM role signs), and nothing AWS-secret is in
    // the Secret or the env.
    if matches!(resolved.upstream.target, UpstreamTarget::Ses(_)) {
        assert_eq!(resolved.upstream.credentials, None, "{file}");
        for name in env.keys() {
            assert!(
                !name.starts_with("AWS_") && !name.starts_with("SES_SMTP"),
                "{file}: {name} in the env: the SES API upstream uses the pod's role"
            );
        }
    } else {
        let (_, password) = resolved
            .upstream
            .credentials
            .as_ref()
            .expect("upstream credentials");
        assert_eq!(Some(password), env.get("SES_SMTP_PASSWORD"), "{file}");
    }

    // Locked down: not root, read-only root, no privilege, no capability.
    let security = &relay["securityContext"];
    let non_root =
        security["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true;
    assert!(non_root, "{file}: runAsNonRoot");
    for uid in [&security["runAsUser"], &pod["securityContext"]["runAsUser"]] {
        assert_ne!(uid.as_u64(), Some(0), "{file}: runAsUser 0");
    }
    assert_eq!(security["readOnlyRootFilesystem"], true, "{file}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{file}");
    assert!(
        items(&security["capabilities"]["drop"], "capabilities.drop").contains(&Value::from("ALL")),
        "{file}: drop ALL capabilities"
    );

    // Resources, and room in the memory limit for every message the relay may hold.
    let resources = &relay["resources"];
    assert!(
        resources["requests"]["cpu"].is_string(),
        "{file}: cpu request"
    );
    assert!(
        resources["requests"]["memory"].is_string(),
        "{file}: memory request"
    );
    let limit = memory_bytes(str_of(&resources["limits"]["memory"], "memory limit"));
    assert!(
        limit > parsed.server.max_inflight_bytes,
        "{file}: the memory limit ({limit} bytes) must exceed server.max_inflight_bytes ({})",
        parsed.server.max_inflight_bytes
    );

    (resolved, env)
}

fn deployment_pod(docs: &[Value]) -> &Value {
    &kind(docs, "Deployment")["spec"]["template"]["spec"]
}

#[test]
fn every_kubernetes_manifest_parses() {
    let dir = repo_file("deploy/kubernetes");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/kubernetes") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let relative = format!(
                "deploy/kubernetes/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            let docs = yaml_documents(&relative);
            assert!(!docs.is_empty(), "{relative} holds no document");
            for doc in &docs {
                assert!(
                    doc["apiVersion"].is_string(),
                    "{relative}: a document without apiVersion"
                );
                assert!(
                    doc["kind"].is_string(),
                    "{relative}: a document without kind"
                );
                assert!(
                    doc["metadata"]["name"].is_string(),
                    "{relative}: a {} without a name",
                    doc["kind"]
                );
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "the sidecar, SES API sidecar and shared-relay manifests"
    );
}

#[test]
fn sidecar_manifest_holds_together() {
    let file = "deploy/kubernetes/sidecar.yaml";
    let docs = yaml_documents(file);
    let pod = deployment_pod(&docs);

    // sesrelay is a native sidecar: an init container that keeps running.
    let relay = named(items(&pod["initContainers"], "initContainers"), "sesrelay")
        .expect("sesrelay among the init containers");
    assert_eq!(relay["restartPolicy"], "Always", "{file}: a native sidecar");
    let (config, _) = check_sesrelay_pod(file, &docs, pod, relay);

    // The app sends to 127.0.0.1:2525, where sesrelay listens, and needs no AUTH for it.
    let smtp: SocketAddr = ([127, 0, 0, 1], SMTP_PORT).into();
    assert_eq!(config.server.listen, vec![smtp], "{file}: server.listen");
    assert!(
        config
            .server
            .trusted_networks
            .iter()
            .any(|n| n.contains(&smtp.ip())),
        "{file}: loopback must be trusted"
    );
    let app = named(items(&pod["containers"], "containers"), "app").expect("the app container");
    let app_env = items(&app["env"], "app env");
    assert_eq!(named(app_env, "SMTP_HOST").unwrap()["value"], "127.0.0.1");
    assert_eq!(named(app_env, "SMTP_PORT").unwrap()["value"], "2525");
}

#[test]
fn ses_api_sidecar_manifest_holds_together() {
    let file = "deploy/kubernetes/sidecar-ses-api.yaml";
    let docs = yaml_documents(file);
    let pod = deployment_pod(&docs);
    let relay = named(items(&pod["initContainers"], "initContainers"), "sesrelay")
        .expect("sesrelay among the init containers");
    assert_eq!(relay["restartPolicy"], "Always", "{file}: a native sidecar");
    let (config, _) = check_sesrelay_pod(file, &docs, pod, relay);
    assert!(
        matches!(
            &config.upstream.target,
            UpstreamTarget::Ses(SesEndpoint::Standard { region }) if region == "us-east-1"
        ),
        "{file}: {:?}",
        config.upstream.target
    );
    // The pod runs as the ServiceAccount the file defines, bound to an IAM role (IRSA).
    let account = kind(&docs, "ServiceAccount");
    assert_eq!(
        pod["serviceAccountName"], account["metadata"]["name"],
        "{file}: serviceAccountName"
    );
    let role = str_of(
        &account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "the IRSA annotation",
    );
    assert!(
        role.starts_with("arn:aws:iam::") && role.contains(":role/"),
        "{file}: {role}"
    );
}

#[test]
fn shared_relay_manifest_holds_together() {
    let file = "deploy/kubernetes/shared-relay.yaml";
    let docs = yaml_documents(file);
    let deployment = kind(&docs, "Deployment");
    let pod = deployment_pod(&docs);
    let relay =
        named(items(&pod["containers"], "containers"), "sesrelay").expect("the sesrelay container");
    let (config, _) = check_sesrelay_pod(file, &docs, pod, relay);

    assert!(
        deployment["spec"]["replicas"].as_u64().unwrap_or(1) >= 2,
        "{file}: a shared relay runs 2+ replicas"
    );
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        &deployment["spec"]["selector"]["matchLabels"], pod_labels,
        "{file}"
    );

    // A read-only, replicated config: the admin listener serves health and metrics only.
    assert!(
        !config.admin.as_ref().expect("[admin]").api,
        "{file}: [admin] api = false"
    );

    // SMTP on every interface, on the port the Service sends to.
    let smtp: SocketAddr = ([0, 0, 0, 0], SMTP_PORT).into();
    assert_eq!(config.server.listen, vec![smtp], "{file}: server.listen");
    let container_ports = items(&relay["ports"], "ports");
    assert_eq!(
        named(container_ports, "smtp").expect("an smtp port")["containerPort"],
        SMTP_PORT
    );

    // The Service: smtp 2525 and admin 2580, to the pods' named ports, selecting the pods.
    let service = kind(&docs, "Service");
    assert_eq!(
        &service["spec"]["selector"], pod_labels,
        "{file}: Service selector"
    );
    let service_ports = items(&service["spec"]["ports"], "Service ports");
    for (name, port) in [("smtp", SMTP_PORT), ("admin", ADMIN_PORT)] {
        let p = named(service_ports, name).unwrap_or_else(|| panic!("Service port {name}"));
        assert_eq!(p["port"], port, "{file}: Service port {name}");
        let target = str_of(&p["targetPort"], "targetPort");
        assert_eq!(
            named(container_ports, target).unwrap_or_else(|| panic!("no container port {target}"))
                ["containerPort"],
            port,
            "{file}: Service port {name}"
        );
    }

    // The PodDisruptionBudget covers these pods and keeps one of them.
    let pdb = kind(&docs, "PodDisruptionBudget");
    assert_eq!(
        &pdb["spec"]["selector"]["matchLabels"], pod_labels,
        "{file}: PDB selector"
    );
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    let keeps = match (
        pdb["spec"]["minAvailable"].as_u64(),
        pdb["spec"]["maxUnavailable"].as_u64(),
    ) {
        (Some(min), None) => min,
        (None, Some(max)) => replicas.saturating_sub(max),
        other => {
            panic!("{file}: the PDB needs minAvailable or maxUnavailable as a number: {other:?}")
        }
    };
    assert!(
        keeps >= 1 && keeps < replicas,
        "{file}: the PDB must keep one replica and allow an eviction"
    );
}

#[test]
fn container_config_loads() {
    let file = "deploy/sesrelay.container.toml";
    let text = read(file);
    let config = Config::parse(&text, Path::new(file)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.server.listen,
        vec![SocketAddr::from(([0, 0, 0, 0], SMTP_PORT))]
    );
    let admin = config.admin.as_ref().expect("[admin]");
    assert_eq!(admin.listen, SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT)));
    assert!(admin.public_url.starts_with("http"), "public_url is set");
    assert!(
        config.server.trusted_networks.len() > 2,
        "trusted_networks names the pod or cluster network besides loopback"
    );
    assert!(!config.strip_ses_headers, "SES reads the X-SES-* headers");
    match &config.upstream.target {
        UpstreamTarget::Smtp { host, port, tls } => {
            assert_eq!(host, "email-smtp.us-east-1.amazonaws.com");
            assert_eq!(*port, 465);
            assert_eq!(*tls, UpstreamTls::Wrapper);
        }
        other => panic!("the upstream is SES's SMTP endpoint, not {other:?}"),
    }

    // The two variables the file names, and nothing else, make it whole.
    let env = BTreeMap::from([
        ("SES_SMTP_PASSWORD", "ses-smtp-password"),
        ("SESRELAY_LINK_SECRET", "0123456789abcdef0123456789abcdef"),
    ]);
    let resolved = config
        .resolve_secrets(&|var| env.get(var).map(|v| (*v).to_owned()))
        .unwrap_or_else(|e| panic!("{e}"));
    let (user, password) = resolved.upstream.credentials.expect("upstream AUTH");
    assert!(!user.is_empty());
    assert_eq!(password, "ses-smtp-password");
    assert!(resolved.verification.secret.is_some());

    // And the way the README tells a user to check it.
    let out = Command::new(env!("CARGO_BIN_EXE_sesrelay"))
        .args(["check", "--config", file])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SESRELAY_CONFIG")
        .envs(env)
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "sesrelay check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Containerfile's instructions, continuation lines joined, comments dropped.
fn containerfile_instructions() -> Vec<(String, String)> {
    let text = read("deploy/Containerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (word, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((word.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

#[test]
fn containerfile_builds_with_the_lockfile_and_runs_unprivileged() {
    let all = containerfile_instructions();
    let stages: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, (word, _))| word == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "a multi-stage build");

    // The build stage: the official Rust image of the crate's toolchain, the lockfile.
    let build_from = &all[stages[0]].1;
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("rust-version in Cargo.toml");
    assert!(
        build_from.contains(&format!("rust:{rust_version}")),
        "the build stage uses rust:{rust_version}: {build_from}"
    );
    let build = &all[stages[0]..stages[1]];
    assert!(
        build
            .iter()
            .any(|(w, rest)| w == "RUN" && rest.contains("cargo build --release --locked")),
        "cargo build --release --locked"
    );
    // Everything the binary is compiled from: the sources, and the pages' templates and
    // assets (askama and include_str! read them at build time).
    for dir in ["src", "templates", "static"] {
        assert!(
            build
                .iter()
                .any(|(w, rest)| w == "COPY" && rest == &format!("{dir} ./{dir}")),
            "the build stage copies {dir}/"
        );
    }

    // The runtime stage.
    let runtime = &all[*stages.last().unwrap()..];
    let one = |word: &str| -> &str {
        let found: Vec<&str> = runtime
            .iter()
            .filter(|(w, _)| w == word)
            .map(|(_, rest)| rest.as_str())
            .collect();
        assert_eq!(found.len(), 1, "one {word} in the runtime stage");
        found[0]
    };
    let user = one("USER");
    let uid = user.split(':').next().unwrap();
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER is numeric (runAsNonRoot checks it): {user}"));
    assert_ne!(uid, 0, "USER is not root");
    let exposed: Vec<&str> = one("EXPOSE").split_whitespace().collect();
    assert!(
        exposed.contains(&"2525") && exposed.contains(&"2580"),
        "{exposed:?}"
    );
    assert_eq!(one("STOPSIGNAL"), "SIGTERM");
    let entrypoint: Vec<String> = serde_json::from_str(one("ENTRYPOINT")).expect("exec form");
    assert_eq!(entrypoint, ["sesrelay"]);
    let cmd: Vec<String> = serde_json::from_str(one("CMD")).expect("exec form");
    assert_eq!(serve_config(&cmd), Path::new(CONFIG_PATH));
    assert!(
        runtime.iter().any(|(w, rest)| w == "COPY"
            && rest.contains("deploy/sesrelay.container.toml")
            && rest.ends_with(CONFIG_PATH)),
        "the image carries the container config at {CONFIG_PATH}"
    );

    let ignore = read(".dockerignore");
    assert!(
        ignore
            .lines()
            .any(|l| l.trim() == "target/" || l.trim() == "target"),
        ".dockerignore keeps target/ out of the build context"
    );
}

/// `Key=value` lines of the unit's `[Service]` section (a key may repeat).
fn unit_service_settings(text: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" {
            let (key, value) = line.split_once('=').expect("Key=value");
            out.push((key.to_owned(), value.to_owned()));
        }
    }
    out
}

#[test]
fn systemd_unit_drains_reloads_and_is_hardened() {
    let file = "deploy/sesrelay.service";
    let text = read(file);
    let settings = unit_service_settings(&text);
    let get = |key: &str| -> &str {
        let found: Vec<&str> = settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(found.len(), 1, "{file}: one {key}=");
        found[0]
    };

    let exec: Vec<String> = get("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/sesrelay");
    assert_eq!(serve_config(&exec[1..]), Path::new(CONFIG_PATH));
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(get("KillSignal"), "SIGTERM");
    assert_eq!(get("Restart"), "on-failure");

    // systemd waits longer than sesrelay drains, with the default and with the container
    // config (the one the unit's header installs).
    let stop = humantime::parse_duration(get("TimeoutStopSec")).expect("TimeoutStopSec");
    let container = Config::parse(
        &read("deploy/sesrelay.container.toml"),
        Path::new("deploy/sesrelay.container.toml"),
    )
    .expect("the container config");
    for drain in [Duration::from_secs(25), container.server.shutdown_timeout] {
        assert!(
            stop > drain,
            "TimeoutStopSec ({stop:?}) must exceed shutdown_timeout ({drain:?})"
        );
    }

    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("EnvironmentFile", "-/etc/sesrelay/env"),
        ("LimitNOFILE", "65536"),
        ("ConfigurationDirectory", "sesrelay"),
        ("StateDirectory", "sesrelay"),
    ] {
        assert_eq!(get(key), value, "{file}: {key}");
    }

    // systemd's own check, when the machine has it. It wants ExecStart's binary to exist,
    // so the unit is checked with the binary this test was built with; and it reports bad
    // keys and values on stderr while still exiting 0, so any line about the unit fails.
    let Some(analyze) = which("systemd-analyze") else {
        println!("note: systemd-analyze is not on this machine; `systemd-analyze verify` skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let unit = dir.path().join("sesrelay.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/sesrelay", env!("CARGO_BIN_EXE_sesrelay")),
    )
    .expect("write the unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("sesrelay.service"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify {file}:\n{stderr}"
    );
}

/// The program's path, if it is on `PATH`.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
