//! The account-level suppression list, as SES keeps it: the suppressed destinations
//! (`EmailAddress`, `Reason`, `LastUpdateTime`), the account's `SuppressedReasons` and the
//! configuration sets' `SuppressionOptions`.
//!
//! The list lives in memory and in a JSON file of its own beside the configuration file
//! ([`path_for`]: `<config dir>/<config stem>.suppression.json`). The file is read once, at
//! start ([`SuppressionList::load`]); a missing file is an empty list with SES's defaults,
//! and a file that cannot be read or is not a valid list is a start error naming it.
//!
//! Reads ([`SuppressionList::get`], [`SuppressionList::list`], ...) are in memory and never
//! wait for a write. Changes are made one at a time (one lock): each writes the whole new
//! list to the file atomically (temporary file, fsync, rename, fsync of the directory)
//! and only then becomes visible, so a change that cannot be written is not made, and a
//! change the caller was told about survives a crash.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

/// The most addresses the list holds; one more is [`SuppressionError::Full`].
pub const MAX_ENTRIES: usize = 1_000_000;

/// The largest file read at start: [`MAX_ENTRIES`] entries of about 1 KiB each at most.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// The version of the file's layout.
const FILE_VERSION: u32 = 1;

/// Why an address is on the list (`SuppressionListReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SuppressionReason {
    Bounce,
    Complaint,
}

impl SuppressionReason {
    /// Both reasons, in SES's order.
    pub const ALL: [SuppressionReason; 2] =
        [SuppressionReason::Bounce, SuppressionReason::Complaint];

    /// `BOUNCE` or `COMPLAINT`.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounce => "BOUNCE",
            SuppressionReason::Complaint => "COMPLAINT",
        }
    }

    /// SES's spelling only (`BOUNCE`, `COMPLAINT`; case matters, as for SES's enums).
    pub fn parse(text: &str) -> Option<SuppressionReason> {
        SuppressionReason::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

impl fmt::Display for SuppressionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `reasons` sorted, each once.
fn normalized(reasons: &[SuppressionReason]) -> Vec<SuppressionReason> {
    let mut out = reasons.to_vec();
    out.sort_unstable();
    out.dedup();
    out
}

/// One address on the list (`SuppressedDestination`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressedDestination {
    /// As it was last put (lookups ignore case).
    pub email_address: String,
    pub reason: SuppressionReason,
    /// Whole milliseconds.
    pub last_update_time: SystemTime,
    /// The message whose bounce or complaint put the address on the list, when an event
    /// did (`Attributes.MessageId`).
    pub message_id: Option<String>,
    /// That event's feedback id (`Attributes.FeedbackId`).
    pub feedback_id: Option<String>,
}

/// What a list call asks for ([`SuppressionList::list`]).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only these reasons; empty: all.
    pub reasons: Vec<SuppressionReason>,
    /// Only entries last updated at or after this time.
    pub start: Option<SystemTime>,
    /// Only entries last updated at or before this time.
    pub end: Option<SystemTime>,
    /// Only entries after this key (a previous page's [`ListPage::next`]).
    pub after: Option<String>,
    /// At most this many entries (at least 1).
    pub page_size: usize,
}

/// One page of a list call.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// In the order of their keys (the lower-cased addresses).
    pub destinations: Vec<SuppressedDestination>,
    /// When more entries match: the key to pass as [`ListQuery::after`].
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SuppressionError {
    #[error("cannot read the suppression list {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a valid suppression list: {reason} (sesrelay does not start over it: fix the file, or move it away to start with an empty list)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write the suppression list {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Invalid email address <{0}>.")]
    InvalidAddress(String),
    #[error("The suppression list is full: it holds at most {MAX_ENTRIES} addresses.")]
    Full,
}

/// The in-memory list.
#[derive(Debug, Clone)]
struct State {
    /// By lower-cased address.
    destinations: BTreeMap<String, SuppressedDestination>,
    /// The account's `SuppressedReasons`, normalized.
    account: Vec<SuppressionReason>,
    /// The sets' `SuppressionOptions.SuppressedReasons`, normalized.
    sets: BTreeMap<String, Vec<SuppressionReason>>,
}

impl Default for State {
    /// SES's defaults for a new account: both reasons (accounts created since November
    /// 2019), no address, no set options.
    fn default() -> State {
        State {
            destinations: BTreeMap::new(),
            account: SuppressionReason::ALL.to_vec(),
            sets: BTreeMap::new(),
        }
    }
}

/// One change, made to the file first and then to memory.
enum Change {
    Put(String, SuppressedDestination),
    Delete(String),
    Account(Vec<SuppressionReason>),
    SetOptions(String, Option<Vec<SuppressionReason>>),
}

impl State {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Put(key, entry) => {
                self.destinations.insert(key, entry);
            }
            Change::Delete(key) => {
                self.destinations.remove(&key);
            }
            Change::Account(reasons) => self.account = reasons,
            Change::SetOptions(set, Some(reasons)) => {
                self.sets.insert(set, reasons);
            }
            Change::SetOptions(set, None) => {
                self.sets.remove(&set);
            }
        }
    }
}

/// The suppression list of the account: in memory, persisted to its own file.
pub struct SuppressionList {
    /// `None`: kept in memory only ([`SuppressionList::in_memory`]).
    path: Option<PathBuf>,
    state: RwLock<State>,
    /// Held by each change from reading the state to making it visible.
    writer: tokio::sync::Mutex<()>,
}

impl fmt::Debug for SuppressionList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuppressionList")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish()
    }
}

/// The list's file for the configuration file `config`:
/// `<config dir>/<config file stem>.suppression.json`.
pub fn path_for(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map_or_else(|| "sesrelay".into(), |s| s.to_string_lossy().into_owned());
    config.with_file_name(format!("{stem}.suppression.json"))
}

/// The lookup key of an address: ASCII lower case (addresses are ASCII, see
/// [`crate::config::is_address`]).
fn key_of(address: &str) -> String {
    address.to_ascii_lowercase()
}

/// Now, to whole milliseconds (as the file and the API keep it).
fn now_millis() -> SystemTime {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH + Duration::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

impl SuppressionList {
    /// Reads the list from `path`; a missing file is an empty list with SES's defaults
    /// (the file is written at the first change).
    pub fn load(path: &Path) -> Result<SuppressionList, SuppressionError> {
        let state = match read_file(path)? {
            Some(bytes) => decode(&bytes).map_err(|reason| SuppressionError::Corrupt {
                path: path.to_owned(),
                reason,
            })?,
            None => State::default(),
        };
        tracing::debug!(path = %path.display(), addresses = state.destinations.len(), "suppression list read");
        Ok(SuppressionList {
            path: Some(path.to_owned()),
            state: RwLock::new(state),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// An empty list with SES's defaults, never written anywhere: for a configuration that
    /// was not read from a file (the in-process tests build theirs from text).
    pub fn in_memory() -> SuppressionList {
        SuppressionList {
            path: None,
            state: RwLock::new(State::default()),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// The file, unless the list is kept in memory only.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `address`, case-insensitively. In memory, no I/O: for the mail path.
    pub fn get(&self, address: &str) -> Option<SuppressedDestination> {
        self.read().destinations.get(&key_of(address)).cloned()
    }

    /// The entry for `address` when it stops mail sent with `set` now: the address is on
    /// the list with a reason that [`suppressed_reasons_for`](Self::suppressed_reasons_for)
    /// `set` includes (SES sends to a listed address whose reason the settings do not
    /// name).
    pub fn suppresses(&self, address: &str, set: Option<&str>) -> Option<SuppressedDestination> {
        let state = self.read();
        let entry = state.destinations.get(&key_of(address))?;
        reasons_for(&state, set)
            .contains(&entry.reason)
            .then(|| entry.clone())
    }

    /// How many addresses the list holds.
    pub fn len(&self) -> usize {
        self.read().destinations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One page of the entries that match `query`, in key order.
    pub fn list(&self, query: &ListQuery) -> ListPage {
        use std::ops::Bound;
        let state = self.read();
        let lower = match &query.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        let mut matching = state
            .destinations
            .range::<str, _>((lower, Bound::Unbounded))
            .filter(|(_, entry)| {
                (query.reasons.is_empty() || query.reasons.contains(&entry.reason))
                    && query.start.is_none_or(|t| entry.last_update_time >= t)
                    && query.end.is_none_or(|t| entry.last_update_time <= t)
            });
        let mut page = ListPage::default();
        let mut last = None;
        for (key, entry) in matching.by_ref().take(query.page_size.max(1)) {
            last = Some(key);
            page.destinations.push(entry.clone());
        }
        if matching.next().is_some() {
            page.next = last.cloned();
        }
        page
    }

    /// The account's `SuppressedReasons`.
    pub fn account_reasons(&self) -> Vec<SuppressionReason> {
        self.read().account.clone()
    }

    /// A set's own `SuppressedReasons`, when it has options.
    pub fn set_options(&self, set: &str) -> Option<Vec<SuppressionReason>> {
        self.read().sets.get(set).cloned()
    }

    /// The reasons that put an address on the list for mail sent with `set`: the set's
    /// options when it has them, else the account's.
    pub fn suppressed_reasons_for(&self, set: Option<&str>) -> Vec<SuppressionReason> {
        reasons_for(&self.read(), set).to_vec()
    }

    /// Puts `address` on the list with `reason` (an address already there gets the new
    /// reason and time). Written to the file before it returns.
    pub async fn put(
        &self,
        address: &str,
        reason: SuppressionReason,
    ) -> Result<(), SuppressionError> {
        self.insert(address, reason, None, None).await
    }

    /// Removes `address`; false when it was not on the list.
    pub async fn delete(&self, address: &str) -> Result<bool, SuppressionError> {
        let key = key_of(address);
        let _turn = self.writer.lock().await;
        if !self.read().destinations.contains_key(&key) {
            return Ok(false);
        }
        self.commit(Change::Delete(key)).await?;
        Ok(true)
    }

    /// SES's automatic suppression after a bounce or complaint of mail sent with `set`:
    /// puts `address` on the list when [`suppressed_reasons_for`](Self::suppressed_reasons_for)
    /// `set` includes `reason`, with the event's message and feedback ids. True when it did.
    /// A full list is logged and the address left off.
    pub async fn add_from_event(
        &self,
        address: &str,
        reason: SuppressionReason,
        set: Option<&str>,
        message_id: Option<&str>,
        feedback_id: Option<&str>,
    ) -> Result<bool, SuppressionError> {
        if !self.suppressed_reasons_for(set).contains(&reason) {
            return Ok(false);
        }
        match self
            .insert(
                address,
                reason,
                message_id.map(str::to_owned),
                feedback_id.map(str::to_owned),
            )
            .await
        {
            Ok(()) => {
                tracing::info!(%address, %reason, "address added to the suppression list");
                Ok(true)
            }
            Err(SuppressionError::Full) => {
                tracing::warn!(%address, %reason, "the suppression list is full: address not added");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn insert(
        &self,
        address: &str,
        reason: SuppressionReason,
        message_id: Option<String>,
        feedback_id: Option<String>,
    ) -> Result<(), SuppressionError> {
        if !crate::config::is_address(address) {
            return Err(SuppressionError::InvalidAddress(address.to_owned()));
        }
        let key = key_of(address);
        let _turn = self.writer.lock().await;
        {
            let state = self.read();
            if state.destinations.len() >= MAX_ENTRIES && !state.destinations.contains_key(&key) {
                return Err(SuppressionError::Full);
            }
        }
        let entry = SuppressedDestination {
            email_address: address.to_owned(),
            reason,
            last_update_time: now_millis(),
            message_id,
            feedback_id,
        };
        self.commit(Change::Put(key, entry)).await
    }

    /// Sets the account's `SuppressedReasons`.
    pub async fn put_account_reasons(
        &self,
        reasons: &[SuppressionReason],
    ) -> Result<(), SuppressionError> {
        let _turn = self.writer.lock().await;
        self.commit(Change::Account(normalized(reasons))).await
    }

    /// Sets a set's `SuppressedReasons` (`None`: removes its options, so that it uses the
    /// account's). Nothing is written when nothing changes.
    pub async fn put_set_options(
        &self,
        set: &str,
        reasons: Option<&[SuppressionReason]>,
    ) -> Result<(), SuppressionError> {
        let reasons = reasons.map(normalized);
        let _turn = self.writer.lock().await;
        if self.read().sets.get(set) == reasons.as_ref() {
            return Ok(());
        }
        self.commit(Change::SetOptions(set.to_owned(), reasons))
            .await
    }

    /// Forgets a set's options (the set was deleted, or is created anew).
    pub async fn remove_set(&self, set: &str) -> Result<(), SuppressionError> {
        self.put_set_options(set, None).await
    }

    /// Writes the list with `change` to the file, then makes it visible. The caller holds
    /// `writer`.
    async fn commit(&self, change: Change) -> Result<(), SuppressionError> {
        if let Some(path) = &self.path {
            let bytes = encode(&self.read(), &change);
            let target = path.clone();
            tokio::task::spawn_blocking(move || {
                crate::admin::store::write_atomically(&target, &bytes)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(|source| SuppressionError::Write {
                path: path.clone(),
                source,
            })?;
        }
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(change);
        Ok(())
    }
}

fn reasons_for<'a>(state: &'a State, set: Option<&str>) -> &'a [SuppressionReason] {
    set.and_then(|s| state.sets.get(s))
        .unwrap_or(&state.account)
}

// ---------------------------------------------------------------------------------------
// The file.
// ---------------------------------------------------------------------------------------

/// The file's bytes, or `None` when there is no file.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, SuppressionError> {
    use std::io::Read;
    let read_error = |source| SuppressionError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SuppressionError::Corrupt {
            path: path.to_owned(),
            reason: format!("the file is larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(Some(bytes))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FileIn {
    version: u32,
    suppression_attributes: ReasonsIn,
    #[serde(default)]
    configuration_sets: BTreeMap<String, ReasonsIn>,
    #[serde(default)]
    suppressed_destinations: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReasonsIn {
    suppressed_reasons: Vec<SuppressionReason>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct EntryIn {
    email_address: String,
    reason: SuppressionReason,
    last_update_time: String,
    message_id: Option<String>,
    feedback_id: Option<String>,
}

/// The state a file holds, or why it is not a valid list.
fn decode(bytes: &[u8]) -> Result<State, String> {
    let file: FileIn = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != FILE_VERSION {
        return Err(format!(
            "Version {} is not one this sesrelay reads ({FILE_VERSION})",
            file.version
        ));
    }
    if file.suppressed_destinations.len() > MAX_ENTRIES {
        return Err(format!(
            "{} addresses, more than the {MAX_ENTRIES} the list holds",
            file.suppressed_destinations.len()
        ));
    }
    let mut state = State {
        destinations: BTreeMap::new(),
        account: normalized(&file.suppression_attributes.suppressed_reasons),
        sets: BTreeMap::new(),
    };
    for (set, options) in file.configuration_sets {
        if !crate::policy::is_valid_configuration_set_name(&set) {
            return Err(format!("invalid configuration set name {set:?}"));
        }
        state
            .sets
            .insert(set, normalized(&options.suppressed_reasons));
    }
    for entry in file.suppressed_destinations {
        if !crate::config::is_address(&entry.email_address) {
            return Err(format!("invalid email address {:?}", entry.email_address));
        }
        let time = time::OffsetDateTime::parse(
            &entry.last_update_time,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| {
            format!(
                "{}: invalid LastUpdateTime {:?}: {e}",
                entry.email_address, entry.last_update_time
            )
        })?;
        let key = key_of(&entry.email_address);
        let destination = SuppressedDestination {
            email_address: entry.email_address,
            reason: entry.reason,
            last_update_time: time.into(),
            message_id: entry.message_id,
            feedback_id: entry.feedback_id,
        };
        if let Some(first) = state.destinations.insert(key, destination) {
            return Err(format!("{} is listed twice", first.email_address));
        }
    }
    Ok(state)
}

/// RFC 3339 in UTC, to the millisecond.
fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t
        .replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The file for `state` with `change` made, without copying the state.
fn encode(state: &State, change: &Change) -> Vec<u8> {
    let file = FileOut { state, change };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

struct FileOut<'a> {
    state: &'a State,
    change: &'a Change,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReasonsOut<'a> {
    suppressed_reasons: &'a [SuppressionReason],
}

impl Serialize for FileOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let account = match self.change {
            Change::Account(reasons) => reasons,
            _ => &self.state.account,
        };
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("Version", &FILE_VERSION)?;
        map.serialize_entry(
            "SuppressionAttributes",
            &ReasonsOut {
                suppressed_reasons: account,
            },
        )?;
        map.serialize_entry("ConfigurationSets", &SetsOut(self))?;
        map.serialize_entry("SuppressedDestinations", &DestinationsOut(self))?;
        map.end()
    }
}

struct SetsOut<'a>(&'a FileOut<'a>);

impl Serialize for SetsOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut sets: BTreeMap<&str, &[SuppressionReason]> = self
            .0
            .state
            .sets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        if let Change::SetOptions(set, reasons) = self.0.change {
            match reasons {
                Some(reasons) => {
                    sets.insert(set, reasons);
                }
                None => {
                    sets.remove(set.as_str());
                }
            }
        }
        let mut map = serializer.serialize_map(Some(sets.len()))?;
        for (set, reasons) in sets {
            map.serialize_entry(
                set,
                &ReasonsOut {
                    suppressed_reasons: reasons,
                },
            )?;
        }
        map.end()
    }
}

struct DestinationsOut<'a>(&'a FileOut<'a>);

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EntryOut<'a> {
    email_address: &'a str,
    reason: SuppressionReason,
    last_update_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback_id: Option<&'a str>,
}

impl<'a> EntryOut<'a> {
    fn of(entry: &'a SuppressedDestination) -> EntryOut<'a> {
        EntryOut {
            email_address: &entry.email_address,
            reason: entry.reason,
            last_update_time: rfc3339(entry.last_update_time),
            message_id: entry.message_id.as_deref(),
            feedback_id: entry.feedback_id.as_deref(),
        }
    }
}

impl Serialize for DestinationsOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (skip, added) = match self.0.change {
            Change::Put(key, entry) => (Some(key.as_str()), Some(entry)),
            Change::Delete(key) => (Some(key.as_str()), None),
            _ => (None, None),
        };
        let destinations = &self.0.state.destinations;
        let len = destinations.len()
            - usize::from(skip.is_some_and(|k| destinations.contains_key(k)))
            + usize::from(added.is_some());
        let mut seq = serializer.serialize_seq(Some(len))?;
        for (key, entry) in destinations {
            if Some(key.as_str()) != skip {
                seq.serialize_element(&EntryOut::of(entry))?;
            }
        }
        if let Some(entry) = added {
            seq.serialize_element(&EntryOut::of(entry))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SuppressionReason::{Bounce, Complaint};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn the_file_sits_beside_the_config() {
        assert_eq!(
            path_for(Path::new("/etc/sesrelay/sesrelay.toml")),
            Path::new("/etc/sesrelay/sesrelay.suppression.json")
        );
        assert_eq!(
            path_for(Path::new("relay.toml")),
            Path::new("relay.suppression.json")
        );
    }

    #[test]
    fn a_missing_file_is_an_empty_list_with_ses_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let list = SuppressionList::load(&dir.path().join("s.json")).unwrap();
        assert!(list.is_empty());
        assert_eq!(list.account_reasons(), [Bounce, Complaint]);
        assert_eq!(
            list.suppressed_reasons_for(Some("any")),
            [Bounce, Complaint]
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written before a change"
        );
    }

    #[test]
    fn changes_survive_a_reload_and_lookups_ignore_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let rt = runtime();
        let list = SuppressionList::load(&path).unwrap();
        rt.block_on(async {
            list.put("Joe@Example.COM", Bounce).await.unwrap();
            list.put("ann@example.com", Complaint).await.unwrap();
            list.put_account_reasons(&[Complaint, Complaint])
                .await
                .unwrap();
            list.put_set_options("marketing", Some(&[])).await.unwrap();
            list.put_set_options("news", Some(&[Bounce])).await.unwrap();
            assert!(list.delete("ANN@example.com").await.unwrap());
            assert!(!list.delete("ann@example.com").await.unwrap());
        });
        let joe = list.get("joe@example.com").expect("listed");
        assert_eq!(joe.email_address, "Joe@Example.COM");
        assert_eq!(joe.reason, Bounce);
        let again = SuppressionList::load(&path).unwrap();
        assert_eq!(again.get("JOE@EXAMPLE.COM"), Some(joe));
        assert_eq!(again.get("ann@example.com"), None);
        assert_eq!(again.account_reasons(), [Complaint]);
        assert_eq!(again.suppressed_reasons_for(None), [Complaint]);
        assert_eq!(again.suppressed_reasons_for(Some("marketing")), []);
        assert_eq!(again.suppressed_reasons_for(Some("news")), [Bounce]);
        assert_eq!(again.suppressed_reasons_for(Some("other")), [Complaint]);
        rt.block_on(again.remove_set("news")).unwrap();
        assert_eq!(again.set_options("news"), None);
        assert_eq!(
            SuppressionList::load(&path).unwrap().set_options("news"),
            None
        );
    }

    #[test]
    fn events_add_only_the_reasons_in_force() {
        let rt = runtime();
        let list = SuppressionList::in_memory();
        rt.block_on(async {
            list.put_set_options("quiet", Some(&[])).await.unwrap();
            list.put_set_options("bounces", Some(&[Bounce]))
                .await
                .unwrap();
            assert!(
                !list
                    .add_from_event("a@x.test", Bounce, Some("quiet"), None, None)
                    .await
                    .unwrap()
            );
            assert!(
                !list
                    .add_from_event("b@x.test", Complaint, Some("bounces"), None, None)
                    .await
                    .unwrap()
            );
            assert!(
                list.add_from_event("c@x.test", Complaint, None, Some("m-1"), Some("f-1"))
                    .await
                    .unwrap()
            );
        });
        assert_eq!(list.get("a@x.test"), None);
        assert_eq!(list.get("b@x.test"), None);
        let c = list.get("c@x.test").unwrap();
        assert_eq!(c.message_id.as_deref(), Some("m-1"));
        assert_eq!(c.feedback_id.as_deref(), Some("f-1"));
        assert!(list.suppresses("c@x.test", None).is_some());
        assert!(list.suppresses("c@x.test", Some("bounces")).is_none());
        assert!(list.suppresses("c@x.test", Some("quiet")).is_none());
    }

    #[test]
    fn invalid_addresses_are_refused() {
        let rt = runtime();
        let list = SuppressionList::in_memory();
        for bad in ["", "no-at", "a@", "ünï@x.test", "a b@x.test"] {
            assert!(matches!(
                rt.block_on(list.put(bad, Bounce)),
                Err(SuppressionError::InvalidAddress(_))
            ));
        }
    }

    #[test]
    fn listing_filters_and_pages() {
        let rt = runtime();
        let list = SuppressionList::in_memory();
        rt.block_on(async {
            for i in 0..5 {
                list.put(&format!("b{i}@x.test"), Bounce).await.unwrap();
                list.put(&format!("c{i}@x.test"), Complaint).await.unwrap();
            }
        });
        let mut query = ListQuery {
            reasons: vec![Complaint],
            page_size: 2,
            ..ListQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = list.list(&query);
            seen.extend(page.destinations.iter().map(|d| d.email_address.clone()));
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                "c0@x.test",
                "c1@x.test",
                "c2@x.test",
                "c3@x.test",
                "c4@x.test"
            ]
        );
        let all = list.list(&ListQuery {
            page_size: 100,
            ..ListQuery::default()
        });
        assert_eq!(all.destinations.len(), 10);
        assert_eq!(all.next, None);
        let future = SystemTime::now() + Duration::from_secs(60);
        let none = list.list(&ListQuery {
            start: Some(future),
            page_size: 100,
            ..ListQuery::default()
        });
        assert!(none.destinations.is_empty());
        let before = list.list(&ListQuery {
            end: Some(future),
            page_size: 100,
            ..ListQuery::default()
        });
        assert_eq!(before.destinations.len(), 10);
    }

    #[test]
    fn corrupt_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let cases = [
            "",
            "not json",
            r#"{"Version": 2, "SuppressionAttributes": {"SuppressedReasons": []}}"#,
            r#"{"Version": 1, "SuppressionAttributes": {"SuppressedReasons": ["SPAM"]}}"#,
            r#"{"Version": 1, "SuppressionAttributes": {"SuppressedReasons": []},
                "SuppressedDestinations": [{"EmailAddress": "nope", "Reason": "BOUNCE", "LastUpdateTime": "2024-01-01T00:00:00Z"}]}"#,
            r#"{"Version": 1, "SuppressionAttributes": {"SuppressedReasons": []},
                "SuppressedDestinations": [
                  {"EmailAddress": "a@x.test", "Reason": "BOUNCE", "LastUpdateTime": "2024-01-01T00:00:00Z"},
                  {"EmailAddress": "A@x.test", "Reason": "BOUNCE", "LastUpdateTime": "2024-01-01T00:00:00Z"}]}"#,
            r#"{"Version": 1, "SuppressionAttributes": {"SuppressedReasons": []},
                "SuppressedDestinations": [{"EmailAddress": "a@x.test", "Reason": "BOUNCE", "LastUpdateTime": "yesterday"}]}"#,
        ];
        for case in cases {
            std::fs::write(&path, case).unwrap();
            let e = SuppressionList::load(&path).expect_err(case);
            assert!(matches!(e, SuppressionError::Corrupt { .. }), "{case}: {e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        let good = r#"{"Version": 1, "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE"]},
            "ConfigurationSets": {"news": {"SuppressedReasons": []}},
            "SuppressedDestinations": [{"EmailAddress": "a@x.test", "Reason": "COMPLAINT",
              "LastUpdateTime": "2024-01-02T03:04:05.678Z", "MessageId": "m"}]}"#;
        std::fs::write(&path, good).unwrap();
        let list = SuppressionList::load(&path).unwrap();
        let a = list.get("a@x.test").unwrap();
        assert_eq!(
            a.last_update_time,
            UNIX_EPOCH + Duration::from_millis(1_704_164_645_678)
        );
        assert_eq!(rfc3339(a.last_update_time), "2024-01-02T03:04:05.678Z");
        assert_eq!(list.suppressed_reasons_for(Some("news")), []);
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join("s.json");
        let rt = runtime();
        let list = SuppressionList::load(&path).unwrap();
        let e = rt.block_on(list.put("a@x.test", Bounce)).unwrap_err();
        assert!(matches!(e, SuppressionError::Write { .. }), "{e}");
        assert_eq!(list.get("a@x.test"), None);
    }
}
