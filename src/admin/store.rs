//! Changes to the configuration file, made by the API: one at a time, with `toml_edit` so
//! the operator's comments and layout survive, validated, written atomically, and swapped
//! into the running relay at once.
//!
//! Every change reads the file afresh under one lock, applies itself to that text, checks
//! that the result is a valid configuration, writes it (temporary file, fsync, rename,
//! fsync of the directory) and only then replaces the live configuration. Two concurrent
//! calls therefore never lose one another's change, and a change the file cannot take is
//! never half-applied.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::error::ApiError;
use crate::config::{self, Config, Verification};
use crate::events::{DestinationTarget, EventDestination};
use crate::relay::Relay;

pub struct Store {
    path: PathBuf,
    relay: Arc<Relay>,
}

impl Store {
    pub fn new(path: &Path, relay: Arc<Relay>) -> Store {
        Store {
            path: path.to_owned(),
            relay,
        }
    }

    /// Applies `change` to the file. `change` sees the document and the configuration it
    /// holds now; an `Err` from it leaves the file and the relay untouched.
    pub async fn edit<T>(
        &self,
        change: impl FnOnce(&mut Editor<'_>, &Config) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        // One change at a time, API writes and reloads alike.
        let mut changes = self.relay.lock_changes().await;
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", self.path.display())))?;
        let current = Config::parse(&text, &self.path)
            .map_err(|e| ApiError::internal(format!("the configuration file is not valid: {e}")))?;
        let mut doc: DocumentMut = text.parse().map_err(|e| {
            ApiError::internal(format!("the configuration file is not valid TOML: {e}"))
        })?;
        let result = change(&mut Editor { doc: &mut doc }, &current)?;
        let new_text = doc.to_string();
        // The secrets the file names are the running configuration's (read once, at start);
        // a variable it does not know yet is read from the environment.
        let live = self.relay.config();
        let lookup = |var: &str| {
            live.resolved_secret(var)
                .map(str::to_owned)
                .or_else(|| config::env_lookup(var))
        };
        let next = Config::parse(&new_text, &self.path)
            .and_then(|c| c.resolve_secrets(&lookup))
            .map_err(|e| {
                tracing::error!(error = %e, "an API change would make the configuration invalid");
                ApiError::bad_request(format!(
                    "the change would make the configuration invalid: {e}"
                ))
            })?;
        // The file may hold a hand edit not yet reloaded; one that cannot apply live is
        // refused here as a reload refuses it, never half-applied.
        let fixed = live.fixed_changes(&next);
        if !fixed.is_empty() {
            return Err(ApiError::bad_request(format!(
                "the configuration file changes {}, which cannot change while sesrelay runs: restart it first",
                fixed.join(", ")
            )));
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, new_text.as_bytes()))
            .await
            .map_err(|e| ApiError::internal(format!("writer task failed: {e}")))?
            .map_err(|e| {
                ApiError::internal(format!("cannot write {}: {e}", self.path.display()))
            })?;
        changes
            .apply(next)
            .map_err(|e| ApiError::internal(format!("cannot set up the upstream: {e}")))?;
        Ok(result)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".to_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The document being changed, with the operations the API needs.
pub struct Editor<'a> {
    doc: &'a mut DocumentMut,
}

/// Which top-level table an entry lives in.
#[derive(Clone, Copy)]
enum Section {
    Identities,
    ConfigurationSets,
}

impl Section {
    fn key(self) -> &'static str {
        match self {
            Section::Identities => "identities",
            Section::ConfigurationSets => "configuration_sets",
        }
    }
}

impl Editor<'_> {
    /// The `[identities]` or `[configuration_sets]` table, created (implicit) if missing.
    fn section(&mut self, section: Section) -> Result<&mut dyn TableLike, ApiError> {
        let item = self.doc.entry(section.key()).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        item.as_table_like_mut().ok_or_else(|| {
            ApiError::internal(format!(
                "{} in the configuration is not a table",
                section.key()
            ))
        })
    }

    /// The entry's key as written in the file (identities compare case-insensitively).
    fn find(&mut self, section: Section, name: &str) -> Result<Option<String>, ApiError> {
        let table = self.section(section)?;
        let found = table
            .iter()
            .map(|(k, _)| k.to_owned())
            .find(|k| match section {
                Section::Identities => k.eq_ignore_ascii_case(name),
                Section::ConfigurationSets => k == name,
            });
        Ok(found)
    }

    fn entry(&mut self, section: Section, name: &str) -> Result<&mut dyn TableLike, ApiError> {
        let key = self
            .find(section, name)?
            .ok_or_else(|| ApiError::internal(format!("{name} vanished from the file")))?;
        self.section(section)?
            .get_mut(&key)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| {
                ApiError::internal(format!("{name} in the configuration is not a table"))
            })
    }

    fn insert(&mut self, section: Section, name: &str, entry: Table) -> Result<(), ApiError> {
        self.section(section)?.insert(name, Item::Table(entry));
        Ok(())
    }

    fn remove(&mut self, section: Section, name: &str) -> Result<(), ApiError> {
        if let Some(key) = self.find(section, name)? {
            self.section(section)?.remove(&key);
        }
        Ok(())
    }

    /// Adds `[identities."<name>"]`, unverified, with its domain token (`verification_token`)
    /// or its address's link nonce (`link_nonce`).
    pub fn add_identity(
        &mut self,
        name: &str,
        default_configuration_set: Option<&str>,
        verification: &Verification,
        resource_tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        let mut t = Table::new();
        t.insert("verified", toml_edit::value(false));
        if let Some(set) = default_configuration_set {
            t.insert("default_configuration_set", toml_edit::value(set));
        }
        match verification {
            Verification::Domain {
                dns_token: Some(token),
            } => {
                t.insert("verification_token", toml_edit::value(token));
            }
            Verification::Address {
                link_nonce: Some(nonce),
            } => {
                t.insert("link_nonce", toml_edit::value(nonce));
            }
            Verification::Domain { dns_token: None }
            | Verification::Address { link_nonce: None } => {}
        }
        if !resource_tags.is_empty() {
            t.insert(
                "resource_tags",
                Item::Value(Value::InlineTable(inline(resource_tags))),
            );
        }
        self.insert(Section::Identities, name, t)
    }

    pub fn remove_identity(&mut self, name: &str) -> Result<(), ApiError> {
        self.remove(Section::Identities, name)
    }

    /// Sets (or, with `None`, removes) an identity's default configuration set.
    pub fn set_default_configuration_set(
        &mut self,
        identity: &str,
        set: Option<&str>,
    ) -> Result<(), ApiError> {
        let entry = self.entry(Section::Identities, identity)?;
        match set {
            Some(set) => {
                entry.insert("default_configuration_set", toml_edit::value(set));
            }
            None => {
                entry.remove("default_configuration_set");
            }
        }
        Ok(())
    }

    pub fn mark_verified(&mut self, identity: &str) -> Result<(), ApiError> {
        self.entry(Section::Identities, identity)?
            .insert("verified", toml_edit::value(true));
        Ok(())
    }

    /// Adds `[configuration_sets.<name>]`.
    pub fn add_configuration_set(
        &mut self,
        name: &str,
        sending_enabled: bool,
        resource_tags: &[(String, String)],
    ) -> Result<(), ApiError> {
        let mut t = Table::new();
        if !sending_enabled {
            t.insert("sending_enabled", toml_edit::value(false));
        }
        if !resource_tags.is_empty() {
            t.insert(
                "resource_tags",
                Item::Value(Value::InlineTable(inline(resource_tags))),
            );
        }
        self.insert(Section::ConfigurationSets, name, t)
    }

    pub fn remove_configuration_set(&mut self, name: &str) -> Result<(), ApiError> {
        self.remove(Section::ConfigurationSets, name)
    }

    /// Adds or replaces `[configuration_sets.SET.event_destinations.NAME]`.
    pub fn put_event_destination(
        &mut self,
        set: &str,
        name: &str,
        dest: &EventDestination,
    ) -> Result<(), ApiError> {
        let mut t = Table::new();
        t.insert("enabled", toml_edit::value(dest.enabled));
        let mut types = Array::new();
        for event_type in &dest.matching_event_types {
            types.push(event_type.api_name());
        }
        t.insert("matching_event_types", toml_edit::value(types));
        match &dest.target {
            DestinationTarget::Sns { topic_arn } => {
                t.insert("sns_topic_arn", toml_edit::value(topic_arn));
            }
            DestinationTarget::EventBridge { event_bus_arn } => {
                t.insert("event_bus_arn", toml_edit::value(event_bus_arn));
            }
            DestinationTarget::Firehose {
                delivery_stream_arn,
                iam_role_arn,
            } => {
                t.insert("firehose_stream_arn", toml_edit::value(delivery_stream_arn));
                if !iam_role_arn.is_empty() {
                    t.insert("iam_role_arn", toml_edit::value(iam_role_arn));
                }
            }
            DestinationTarget::CloudWatch { dimensions } => {
                let mut list = Array::new();
                for d in dimensions {
                    let mut dim = InlineTable::new();
                    dim.insert("name", Value::from(d.name.as_str()));
                    dim.insert("value_source", Value::from(d.value_source.api_name()));
                    dim.insert("default_value", Value::from(d.default_value.as_str()));
                    list.push(dim);
                }
                t.insert("cloudwatch", toml_edit::value(list));
            }
        }
        let entry = self.entry(Section::ConfigurationSets, set)?;
        let dests = entry
            .entry("event_destinations")
            .or_insert_with(|| {
                let mut t = Table::new();
                t.set_implicit(true);
                Item::Table(t)
            })
            .as_table_like_mut()
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "configuration_sets.{set}.event_destinations in the configuration is not a table"
                ))
            })?;
        dests.insert(name, Item::Table(t));
        Ok(())
    }

    /// Removes `[configuration_sets.SET.event_destinations.NAME]`.
    pub fn remove_event_destination(&mut self, set: &str, name: &str) -> Result<(), ApiError> {
        let entry = self.entry(Section::ConfigurationSets, set)?;
        if let Some(dests) = entry
            .get_mut("event_destinations")
            .and_then(Item::as_table_like_mut)
        {
            dests.remove(name);
        }
        Ok(())
    }

    /// `[account] sending_enabled`, the section created if missing.
    pub fn set_account_sending_enabled(&mut self, enabled: bool) -> Result<(), ApiError> {
        let account = self
            .doc
            .entry("account")
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_like_mut()
            .ok_or_else(|| ApiError::internal("account in the configuration is not a table"))?;
        account.insert("sending_enabled", toml_edit::value(enabled));
        Ok(())
    }

    pub fn set_sending_enabled(&mut self, set: &str, enabled: bool) -> Result<(), ApiError> {
        self.entry(Section::ConfigurationSets, set)?
            .insert("sending_enabled", toml_edit::value(enabled));
        Ok(())
    }
}

fn inline(pairs: &[(String, String)]) -> InlineTable {
    let mut t = InlineTable::new();
    for (k, v) in pairs {
        t.insert(k, Value::from(v.as_str()));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# The operator's header comment.
[server]
hostname = "relay.example"   # trailing comment

[upstream]
url = "dir:outbox"

# Sets we use.
[configuration_sets.transactional]

[identities."example.com"]
verified = true # verified by hand
default_configuration_set = "transactional"
"#;

    fn edit(f: impl FnOnce(&mut Editor<'_>)) -> String {
        let mut doc: DocumentMut = FILE.parse().unwrap();
        f(&mut Editor { doc: &mut doc });
        doc.to_string()
    }

    #[test]
    fn adding_keeps_comments_and_layout() {
        let out = edit(|e| {
            e.add_configuration_set("marketing", false, &[("team".into(), "growth".into())])
                .unwrap();
            e.add_identity(
                "joe@example.com",
                Some("marketing"),
                &Verification::Address { link_nonce: None },
                &[],
            )
            .unwrap();
        });
        assert!(out.starts_with(
            "# The operator's header comment.\n[server]\nhostname = \"relay.example\"   # trailing comment\n"
        ));
        assert!(out.contains("# Sets we use.\n[configuration_sets.transactional]\n"));
        assert!(out.contains("verified = true # verified by hand\n"));
        assert!(out.contains(
            "[configuration_sets.marketing]\nsending_enabled = false\nresource_tags = { team = \"growth\" }\n"
        ), "{out}");
        assert!(out.contains(
            "[identities.\"joe@example.com\"]\nverified = false\ndefault_configuration_set = \"marketing\"\n"
        ), "{out}");
        let config = Config::parse(&out, Path::new("t.toml")).unwrap();
        assert!(config.policy.configuration_sets.contains_key("marketing"));
        assert!(config.policy.identities.get("joe@example.com").is_some());
    }

    #[test]
    fn changing_and_removing_keeps_the_rest() {
        let out = edit(|e| {
            e.set_default_configuration_set("EXAMPLE.com", None)
                .unwrap();
            e.set_sending_enabled("transactional", false).unwrap();
        });
        assert!(out.contains("[identities.\"example.com\"]\nverified = true # verified by hand\n"));
        assert!(!out.contains("default_configuration_set"));
        assert!(out.contains("[configuration_sets.transactional]\nsending_enabled = false\n"));
        let out = edit(|e| {
            e.remove_configuration_set("transactional").unwrap();
            e.remove_identity("Example.COM").unwrap();
        });
        assert!(!out.contains("transactional]"));
        assert!(!out.contains("example.com"));
        assert!(out.contains("[upstream]\nurl = \"dir:outbox\"\n"));
    }

    #[test]
    fn sections_are_created_when_missing() {
        let mut doc: DocumentMut = "[upstream]\nurl = \"dir:x\"\n".parse().unwrap();
        let mut e = Editor { doc: &mut doc };
        e.add_identity(
            "example.org",
            None,
            &Verification::Domain {
                dns_token: Some("tok".to_owned()),
            },
            &[],
        )
        .unwrap();
        e.mark_verified("example.org").unwrap();
        e.add_identity(
            "joe@example.org",
            None,
            &Verification::Address {
                link_nonce: Some("nonce".to_owned()),
            },
            &[],
        )
        .unwrap();
        let out = doc.to_string();
        assert_eq!(
            out,
            "[upstream]\nurl = \"dir:x\"\n\n[identities.\"example.org\"]\nverified = true\nverification_token = \"tok\"\n\n[identities.\"joe@example.org\"]\nverified = false\nlink_nonce = \"nonce\"\n"
        );
        let config = Config::parse(&out, Path::new("t.toml")).unwrap();
        assert_eq!(
            config.identity("example.org").unwrap().1.dns_token(),
            Some("tok")
        );
        assert_eq!(
            config.identity("joe@example.org").unwrap().1.link_nonce(),
            Some("nonce")
        );
    }

    #[test]
    fn atomic_write_replaces_the_file_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
