//! Configuration-set resolution (SPEC.md section 4).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::tags::{TagError, merge_tags, parse_tags, validate_tag};
use super::{ConfigurationSet, Policy};

/// What a message says about itself, as far as the rules care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFacts {
    /// The envelope MAIL FROM; `None` for the null path `<>`.
    pub envelope_sender: Option<String>,
    /// The From header's addresses; `None` when there is no From header or it does not
    /// parse.
    pub from: Option<Vec<String>>,
    /// The Sender header's addresses.
    pub sender: Vec<String>,
    /// The Return-Path header's addresses (`<>` gives none).
    pub return_path: Vec<String>,
    /// The text of the first address header that could not be read (SES's
    /// `Transaction failed: <text>`): the check never fails open.
    pub address_error: Option<String>,
    /// The first header of SES's single-occurrence list that appears twice, as SES spells it.
    pub duplicate_header: Option<String>,
    /// The envelope's recipients (SES counts them at the end of DATA; the sandbox checks
    /// each).
    pub recipients: Vec<String>,
    /// How a header mailbox with a display name is listed in a rejection, by lower-cased
    /// address (`Joe Bloggs <joe@x.test>`, as JavaMail prints it); others are listed bare.
    pub shown: HashMap<String, String>,
    /// The first `X-SES-CONFIGURATION-SET` header's value, unfolded and trimmed, or the
    /// set named beside the message ([`MessageFacts::set_from_api`]).
    pub configuration_set: Option<String>,
    /// True when `configuration_set` is the API's `ConfigurationSetName`, not the header.
    pub set_from_api: bool,
    /// The first `X-SES-MESSAGE-TAGS` header's value, unfolded.
    pub tags: Option<String>,
    /// Tags given beside the message (the API's `EmailTags`): used alone, the header's
    /// are then ignored, as SES does.
    pub api_tags: Option<Vec<(String, String)>>,
    /// The authenticated user's `allowed_senders`, when the message came from a user who
    /// has them; `None`: no such limit.
    pub sender_limit: Option<SenderLimit>,
}

/// What an authenticated user may send from (`[auth] users.allowed_senders`), as an IAM
/// policy's `ses:FromAddress` condition limits an SES user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderLimit {
    pub username: String,
    /// Lower-case addresses (`joe@example.org`) and domains (`example.com`).
    pub allowed: Vec<String>,
}

impl SenderLimit {
    /// Whether `address` is one of the listed addresses or in one of the listed domains.
    /// Matching is case-insensitive and exact: a domain covers its own addresses, not its
    /// subdomains' (as `*@example.com` in an IAM condition), and `joe@example.org` does not
    /// cover `joe+x@example.org`.
    pub fn allows(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        let domain = address.rsplit_once('@').map(|(_, d)| d);
        self.allowed.iter().any(|item| {
            if item.contains('@') {
                *item == address
            } else {
                domain.is_some_and(|d| d == item)
            }
        })
    }
}

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept(Acceptance),
    Reject(Rejection),
}

/// An accepted message: the set it is tagged with (if any), why, and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    pub configuration_set: Option<String>,
    pub reason: SetReason,
    /// The merged `X-SES-MESSAGE-TAGS`, client tags first.
    pub tags: Vec<(String, String)>,
}

/// Where the configuration set came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetReason {
    /// The `X-SES-CONFIGURATION-SET` header named it.
    Header,
    /// The API's `ConfigurationSetName` named it.
    ApiParameter,
    /// The default of this verified identity.
    Default { identity: String },
    /// No set: the most specific verified identity (if any) has no default.
    NoDefault { identity: Option<String> },
}

impl SetReason {
    /// For logs: where the set came from (`header`, `address default`, `domain default`,
    /// `none`) and the identity that decided, when one did.
    pub fn describe(&self) -> (&'static str, Option<&str>) {
        match self {
            SetReason::Header => ("header", None),
            SetReason::ApiParameter => ("api parameter", None),
            SetReason::Default { identity } if identity.contains('@') => {
                ("address default", Some(identity))
            }
            SetReason::Default { identity } => ("domain default", Some(identity)),
            SetReason::NoDefault { identity } => ("none", identity.as_deref()),
        }
    }
}

/// Why a message is refused. [`Rejection::message`] is SES's own message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No From header, or one that does not parse.
    MissingFrom,
    /// These addresses (in order, once each) are covered by no verified identity.
    NotVerified {
        region: String,
        addresses: Vec<String>,
    },
    /// The set named for the message does not exist.
    ConfigurationSetDoesNotExist(String),
    /// The sender's default set does not exist: it was deleted (SES: a bad request).
    DefaultConfigurationSetDeleted(String),
    /// The set has `sending_enabled = false`.
    SendingPaused(String),
    /// `X-SES-MESSAGE-TAGS` holds a tag SES would refuse.
    InvalidTag(TagError),
    /// An address header that does not read as mailboxes (JavaMail's text).
    InvalidAddress(String),
    /// A header that may appear only once appears twice (its name as SES spells it).
    DuplicateHeader(String),
    /// More recipients than the limit (the number is the limit).
    TooManyRecipients(usize),
    /// The authenticated user's `allowed_senders` do not cover this address (From, Sender
    /// or the envelope sender).
    SenderNotAllowed { username: String, address: String },
    /// `[account] sending_enabled = false`.
    AccountSendingPaused,
}

impl Rejection {
    /// A short stable code for the kind of rejection, for metrics and logs (never the
    /// message's own data).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MissingFrom => "missing_from",
            Rejection::NotVerified { .. } => "not_verified",
            Rejection::ConfigurationSetDoesNotExist(_) => "set_missing",
            Rejection::DefaultConfigurationSetDeleted(_) => "default_set_missing",
            Rejection::SendingPaused(_) => "set_paused",
            Rejection::InvalidTag(_) => "invalid_tag",
            Rejection::InvalidAddress(_) => "invalid_address",
            Rejection::DuplicateHeader(_) => "duplicate_header",
            Rejection::TooManyRecipients(_) => "too_many_recipients",
            Rejection::SenderNotAllowed { .. } => "sender_not_allowed",
            Rejection::AccountSendingPaused => "account_paused",
        }
    }

    /// SES's message, as the SES API returns it.
    pub fn message(&self) -> String {
        match self {
            Rejection::MissingFrom => "Missing required header 'From'.".to_owned(),
            Rejection::NotVerified { region, addresses } => {
                let mut text = format!(
                    "Email address is not verified. The following identities failed the check in region {region}: "
                );
                list_within(&mut text, addresses, MAX_MESSAGE);
                text
            }
            Rejection::ConfigurationSetDoesNotExist(name)
            | Rejection::DefaultConfigurationSetDeleted(name) => {
                format!("Configuration set <{}> does not exist.", shown(name))
            }
            Rejection::SendingPaused(_) => "Sending paused for this configuration set.".to_owned(),
            Rejection::InvalidTag(e) => e.to_string(),
            Rejection::InvalidAddress(text) => text.clone(),
            Rejection::DuplicateHeader(name) => format!("Duplicate header '{name}'."),
            Rejection::TooManyRecipients(limit) => format!("Recipient count exceeds {limit}."),
            Rejection::SenderNotAllowed { username, address } => {
                format!("User {username} is not authorized to send from {address}")
            }
            Rejection::AccountSendingPaused => "Sending paused for this account. For more information, please check the inbox of the email address associated with your AWS account.".to_owned(),
        }
    }
}

/// The longest message that still fits one SMTP reply line: 512 octets less
/// `554 5.7.1 `, `Message rejected: ` and the CRLF.
const MAX_MESSAGE: usize = 512 - 10 - 18 - 2;

/// Appends `items` joined by `, ` to `text`, cut at an item so that `text` stays within
/// `max` octets; a cut list ends with `...` (as SES ends a list too long to show).
fn list_within(text: &mut String, items: &[String], max: usize) {
    for (i, item) in items.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let last = i + 1 == items.len();
        let room_for_dots = if last { 0 } else { 3 };
        if text.len() + sep.len() + item.len() + room_for_dots > max {
            text.push_str("...");
            return;
        }
        text.push_str(sep);
        text.push_str(item);
    }
}

/// A set name as quoted in a reply: names that can exist are short; anything else taken
/// from a header is cut to 64 characters.
fn shown(name: &str) -> String {
    if name.chars().count() <= 64 {
        name.to_owned()
    } else {
        let mut s: String = name.chars().take(64).collect();
        s.push_str("...");
        s
    }
}

/// SES's mailbox simulator (`success@simulator.amazonses.com`, ...): never subject to the
/// sandbox's verified-recipient rule. `lower` is lower-case.
pub fn is_mailbox_simulator(lower: &str) -> bool {
    lower
        .rsplit_once('@')
        .is_some_and(|(_, domain)| domain == "simulator.amazonses.com")
}

/// A decision and the configuration set it settled on on the way, with where the set came
/// from: known for every acceptance, and for the rejections that came after the set was
/// chosen (a set that does not exist or is paused, the account's checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub decision: Decision,
    pub set: Option<(Option<String>, SetReason)>,
}

impl Policy {
    /// Applies SPEC.md section 4 to one message.
    pub fn resolve(&self, facts: &MessageFacts) -> Decision {
        self.resolve_traced(facts).decision
    }

    /// [`Policy::resolve`], with the set chosen on the way ([`Resolution`]).
    pub fn resolve_traced(&self, facts: &MessageFacts) -> Resolution {
        let mut set = None;
        let decision = self.judge(facts, &mut set);
        Resolution { decision, set }
    }

    fn judge(
        &self,
        facts: &MessageFacts,
        trail: &mut Option<(Option<String>, SetReason)>,
    ) -> Decision {
        // SES accepts every RCPT and counts them with the message.
        if facts.recipients.len() > self.max_recipients {
            return Decision::Reject(Rejection::TooManyRecipients(self.max_recipients));
        }

        // A header that may appear once appears twice.
        if let Some(name) = &facts.duplicate_header {
            return Decision::Reject(Rejection::DuplicateHeader(name.clone()));
        }

        // An address header that does not read fails the message: never skipped.
        if let Some(text) = &facts.address_error {
            return Decision::Reject(Rejection::InvalidAddress(text.clone()));
        }

        // The From header must be there.
        let Some(from) = facts.from.as_deref().filter(|f| !f.is_empty()) else {
            return Decision::Reject(Rejection::MissingFrom);
        };

        // The user's own limit comes first, as SES checks its caller's permission before
        // the message: From, Sender, then the envelope sender; the first not covered is named.
        if let Some(limit) = &facts.sender_limit {
            let checked = from
                .iter()
                .chain(&facts.sender)
                .chain(facts.envelope_sender.iter());
            for address in checked {
                if !limit.allows(address) {
                    return Decision::Reject(Rejection::SenderNotAllowed {
                        username: limit.username.clone(),
                        address: address.clone(),
                    });
                }
            }
        }

        // 1. Addresses checked: From, Sender, Return-Path, then the envelope sender. Each
        // address is looked at once (a set), so a header of 40,000 addresses is linear.
        if self.require_verified_sender {
            let mut failed: Vec<String> = Vec::new();
            let mut seen: HashSet<String> = HashSet::new();
            let headers = from
                .iter()
                .chain(&facts.sender)
                .chain(&facts.return_path)
                .map(|a| (a, true));
            let checked = headers.chain(facts.envelope_sender.iter().map(|a| (a, false)));
            for (address, in_header) in checked {
                let lower = address.to_ascii_lowercase();
                if !self.identities.covers(address) && seen.insert(lower.clone()) {
                    // A header mailbox as JavaMail prints it; the envelope sender bare.
                    let shown = in_header.then(|| facts.shown.get(&lower)).flatten();
                    failed.push(shown.cloned().unwrap_or_else(|| address.clone()));
                }
            }
            if !failed.is_empty() {
                return Decision::Reject(Rejection::NotVerified {
                    region: self.region.clone(),
                    addresses: failed,
                });
            }
        }

        // 2. An explicit set overrides; 3. else the sender's default.
        let (configuration_set, reason) = match &facts.configuration_set {
            Some(name) if facts.set_from_api => (Some(name.clone()), SetReason::ApiParameter),
            Some(name) => (Some(name.clone()), SetReason::Header),
            None => self.default_set(&from[0]),
        };
        *trail = Some((configuration_set.clone(), reason.clone()));

        // 4. The set must exist and be enabled.
        let no_tags = BTreeMap::new();
        let set_tags = match &configuration_set {
            None => &no_tags,
            Some(name) => match self.configuration_sets.get(name) {
                None if matches!(reason, SetReason::Header | SetReason::ApiParameter) => {
                    return Decision::Reject(Rejection::ConfigurationSetDoesNotExist(name.clone()));
                }
                None => {
                    return Decision::Reject(Rejection::DefaultConfigurationSetDeleted(
                        name.clone(),
                    ));
                }
                Some(ConfigurationSet {
                    sending_enabled: false,
                    ..
                }) => return Decision::Reject(Rejection::SendingPaused(name.clone())),
                Some(set) => &set.tags,
            },
        };

        // 5. The account: paused, then (sandbox) every recipient verified.
        if !self.account.sending_enabled {
            return Decision::Reject(Rejection::AccountSendingPaused);
        }
        if self.account.sandbox {
            let mut failed: Vec<String> = Vec::new();
            let mut seen: HashSet<String> = HashSet::new();
            for address in &facts.recipients {
                let lower = address.to_ascii_lowercase();
                if !is_mailbox_simulator(&lower)
                    && !self.identities.covers(address)
                    && seen.insert(lower)
                {
                    failed.push(address.clone());
                }
            }
            if !failed.is_empty() {
                return Decision::Reject(Rejection::NotVerified {
                    region: self.region.clone(),
                    addresses: failed,
                });
            }
        }

        // Tags: the API's, else the client's first header; then the set's.
        let client_tags = match (&facts.api_tags, facts.tags.as_deref()) {
            (Some(tags), _) => {
                if let Some(e) = tags.iter().find_map(|(n, v)| validate_tag(n, v).err()) {
                    return Decision::Reject(Rejection::InvalidTag(e));
                }
                tags.clone()
            }
            (None, Some(header)) => match parse_tags(header) {
                Ok(tags) => tags,
                Err(e) => return Decision::Reject(Rejection::InvalidTag(e)),
            },
            (None, None) => Vec::new(),
        };
        Decision::Accept(Acceptance {
            configuration_set,
            reason,
            tags: merge_tags(client_tags, set_tags),
        })
    }

    /// The default set of the most specific verified identity covering `sender`. A verified
    /// identity without a default ends the search, unless `inherit_domain_default`.
    fn default_set(&self, sender: &str) -> (Option<String>, SetReason) {
        let mut first_without_default = None;
        for (name, identity) in self.identities.verified_covering(sender) {
            if let Some(set) = &identity.default_configuration_set {
                return (Some(set.clone()), SetReason::Default { identity: name });
            }
            if !self.inherit_domain_default {
                return (
                    None,
                    SetReason::NoDefault {
                        identity: Some(name),
                    },
                );
            }
            first_without_default.get_or_insert(name);
        }
        (
            None,
            SetReason::NoDefault {
                identity: first_without_default,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AccountRules, Identity, IdentityTable};

    fn policy() -> Policy {
        let mut identities = IdentityTable::default();
        let mut add = |name: &str, verified: bool, set: Option<&str>| {
            identities.insert(
                name,
                Identity {
                    verified,
                    default_configuration_set: set.map(str::to_owned),
                },
            )
        };
        add("example.com", true, Some("transactional"));
        add("joe@example.com", true, Some("marketing"));
        add("ann@example.com", true, None);
        add("pending@example.com", false, Some("marketing"));
        add("old.example.com", true, Some("retired"));
        add("quiet.example.com", true, Some("paused"));
        add("example.org", true, Some("transactional"));
        add("news.example.org", true, Some("marketing"));
        add("bare.example.net", true, None);
        add("unverified.example", false, Some("marketing"));
        let sets = [
            ("transactional", true, vec![]),
            ("marketing", true, vec![("team", "growth")]),
            ("paused", false, vec![]),
        ]
        .into_iter()
        .map(|(name, enabled, tags)| {
            (
                name.to_owned(),
                ConfigurationSet {
                    sending_enabled: enabled,
                    tags: tags
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                },
            )
        })
        .collect();
        Policy {
            require_verified_sender: true,
            inherit_domain_default: false,
            region: "US-EAST-1".to_owned(),
            max_recipients: 50,
            account: AccountRules::default(),
            identities,
            configuration_sets: sets,
        }
    }

    fn facts(from: &str) -> MessageFacts {
        MessageFacts {
            envelope_sender: Some(from.to_owned()),
            from: Some(vec![from.to_owned()]),
            ..MessageFacts::default()
        }
    }

    enum Want {
        Set(Option<&'static str>, &'static str),
        Reply(&'static str),
    }

    /// Renders a decision the way the table states it: `set=<name> tags=<...>` or the
    /// rejection's SES message.
    fn outcome(d: &Decision) -> (Option<String>, String) {
        match d {
            Decision::Accept(a) => (
                a.configuration_set.clone(),
                a.tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Decision::Reject(r) => (None, format!("REJECT {}", r.message())),
        }
    }

    #[test]
    fn rules_table() {
        type Edit = fn(&mut MessageFacts, &mut Policy);
        let none: Edit = |_, _| {};
        let rows: Vec<(&str, &str, Edit, Want)> = vec![
            (
                "4.3 domain default",
                "bob@example.com",
                none,
                Want::Set(Some("transactional"), ""),
            ),
            (
                "4.3 address default overrides the domain's",
                "joe@example.com",
                none,
                Want::Set(Some("marketing"), "team=growth"),
            ),
            (
                "4.3 +label address uses the address identity",
                "joe+news@example.com",
                none,
                Want::Set(Some("marketing"), "team=growth"),
            ),
            (
                "4.3 identities compare case-insensitively",
                "JOE@Example.COM",
                none,
                Want::Set(Some("marketing"), "team=growth"),
            ),
            (
                "4.3 subdomain is covered by its parent domain",
                "a@mail.example.com",
                none,
                Want::Set(Some("transactional"), ""),
            ),
            (
                "4.3 a verified subdomain is more specific than its parent",
                "a@news.example.org",
                none,
                Want::Set(Some("marketing"), "team=growth"),
            ),
            (
                "4.3 unverified address falls through to its verified domain",
                "pending@example.com",
                none,
                Want::Set(Some("transactional"), ""),
            ),
            (
                "4.3 verified address without a default gets no set",
                "ann@example.com",
                none,
                Want::Set(None, ""),
            ),
            (
                "4.3 inherit_domain_default falls through to the domain",
                "ann@example.com",
                |_, p| p.inherit_domain_default = true,
                Want::Set(Some("transactional"), ""),
            ),
            (
                "4.3 verified domain without a default: no set",
                "x@bare.example.net",
                none,
                Want::Set(None, ""),
            ),
            (
                "4.2 header overrides the default",
                "joe@example.com",
                |f, _| f.configuration_set = Some("transactional".into()),
                Want::Set(Some("transactional"), ""),
            ),
            (
                "4.2 header names a set that does not exist",
                "joe@example.com",
                |f, _| f.configuration_set = Some("nosuch".into()),
                Want::Reply("Configuration set <nosuch> does not exist."),
            ),
            (
                "4.4 default names a deleted set",
                "a@old.example.com",
                none,
                Want::Reply("Configuration set <retired> does not exist."),
            ),
            (
                "4.4 resolved set is paused",
                "a@quiet.example.com",
                none,
                Want::Reply("Sending paused for this configuration set."),
            ),
            (
                "4.4 header names a paused set",
                "joe@example.com",
                |f, _| f.configuration_set = Some("paused".into()),
                Want::Reply("Sending paused for this configuration set."),
            ),
            (
                "4.1 unverified sender",
                "x@unverified.example",
                none,
                Want::Reply(
                    "Email address is not verified. The following identities failed the check in region US-EAST-1: x@unverified.example",
                ),
            ),
            (
                "4.1 unknown domain",
                "x@nowhere.test",
                none,
                Want::Reply(
                    "Email address is not verified. The following identities failed the check in region US-EAST-1: x@nowhere.test",
                ),
            ),
            (
                "4.1 every failing address once, From then Sender then envelope",
                "a@bad.test",
                |f, _| {
                    f.from = Some(vec![
                        "a@bad.test".into(),
                        "joe@example.com".into(),
                        "A@BAD.test".into(),
                    ]);
                    f.sender = vec!["s@bad.test".into()];
                    f.envelope_sender = Some("bounce@bad.test".into());
                },
                Want::Reply(
                    "Email address is not verified. The following identities failed the check in region US-EAST-1: a@bad.test, s@bad.test, bounce@bad.test",
                ),
            ),
            (
                "4.1 unverified Sender header",
                "joe@example.com",
                |f, _| f.sender = vec!["s@bad.test".into()],
                Want::Reply(
                    "Email address is not verified. The following identities failed the check in region US-EAST-1: s@bad.test",
                ),
            ),
            (
                "4.1 unverified envelope sender",
                "joe@example.com",
                |f, _| f.envelope_sender = Some("bounce@bad.test".into()),
                Want::Reply(
                    "Email address is not verified. The following identities failed the check in region US-EAST-1: bounce@bad.test",
                ),
            ),
            (
                "4.1 the null envelope sender is not checked",
                "joe@example.com",
                |f, _| f.envelope_sender = None,
                Want::Set(Some("marketing"), "team=growth"),
            ),
            (
                "4.1 require_verified_sender = false lets anyone through",
                "x@nowhere.test",
                |_, p| p.require_verified_sender = false,
                Want::Set(None, ""),
            ),
            (
                "4.1 unverified sender still gets its header set when checks are off",
                "x@nowhere.test",
                |f, p| {
                    p.require_verified_sender = false;
                    f.configuration_set = Some("marketing".into())
                },
                Want::Set(Some("marketing"), "team=growth"),
            ),
            (
                "4.3 the first From address is the sender",
                "joe@example.com",
                |f, _| f.from = Some(vec!["joe@example.com".into(), "bob@example.com".into()]),
                Want::Set(Some("marketing"), "team=growth"),
            ),
            (
                "3 no From header",
                "joe@example.com",
                |f, _| f.from = None,
                Want::Reply("Missing required header 'From'."),
            ),
            (
                "3 From header without an address",
                "joe@example.com",
                |f, _| f.from = Some(vec![]),
                Want::Reply("Missing required header 'From'."),
            ),
            (
                "5 client tags first, then the set's for other names",
                "joe@example.com",
                |f, _| f.tags = Some("campaign=spring, team=web".into()),
                Want::Set(Some("marketing"), "campaign=spring, team=web"),
            ),
            (
                "5 client tags merged with the set's",
                "joe@example.com",
                |f, _| f.tags = Some("campaign=spring".into()),
                Want::Set(Some("marketing"), "campaign=spring, team=growth"),
            ),
            (
                "5 tags without a set",
                "ann@example.com",
                |f, _| f.tags = Some("a=b".into()),
                Want::Set(None, "a=b"),
            ),
            (
                "5 invalid tag",
                "joe@example.com",
                |f, _| f.tags = Some("bad name=x".into()),
                Want::Reply(
                    "Invalid tag name <bad name>: only alphanumeric ASCII characters, '_',  '-' are allowed.",
                ),
            ),
            (
                "4.5 account paused",
                "joe@example.com",
                |_, p| p.account.sending_enabled = false,
                Want::Reply(
                    "Sending paused for this account. For more information, please check the inbox of the email address associated with your AWS account.",
                ),
            ),
            (
                "4.5 account paused comes after the sender's check",
                "x@nowhere.test",
                |_, p| p.account.sending_enabled = false,
                Want::Reply(
                    "Email address is not verified. The following identities failed the check in region US-EAST-1: x@nowhere.test",
                ),
            ),
            (
                "4.5 production: any recipient",
                "joe@example.com",
                |f, _| f.recipients = vec!["anyone@elsewhere.test".into()],
                Want::Set(Some("marketing"), "team=growth"),
            ),
            (
                "4.5 sandbox: verified recipients and the mailbox simulator pass",
                "joe@example.com",
                |f, p| {
                    p.account.sandbox = true;
                    f.recipients = vec![
                        "ann@example.com".into(),
                        "x+y@news.example.org".into(),
                        "Success+t1@Simulator.AmazonSES.com".into(),
                        "bounce@simulator.amazonses.com".into(),
                    ];
                },
                Want::Set(Some("marketing"), "team=growth"),
            ),
            (
                "4.5 sandbox: unverified recipients are listed, once each, bare",
                "joe@example.com",
                |f, p| {
                    p.account.sandbox = true;
                    f.recipients = vec![
                        "a@elsewhere.test".into(),
                        "ann@example.com".into(),
                        "pending@example.com".into(),
                        "A@elsewhere.test".into(),
                        "x@simulator.amazonses.com.evil.test".into(),
                    ];
                },
                Want::Reply(
                    "Email address is not verified. The following identities failed the check in region US-EAST-1: a@elsewhere.test, x@simulator.amazonses.com.evil.test",
                ),
            ),
            (
                "4.5 sandbox: recipients are checked even with sender checks off",
                "x@nowhere.test",
                |f, p| {
                    p.account.sandbox = true;
                    p.require_verified_sender = false;
                    f.recipients = vec!["b@nowhere.test".into()];
                },
                Want::Reply(
                    "Email address is not verified. The following identities failed the check in region US-EAST-1: b@nowhere.test",
                ),
            ),
        ];
        for (name, from, edit, want) in rows {
            let mut f = facts(from);
            let mut p = policy();
            edit(&mut f, &mut p);
            let got = outcome(&p.resolve(&f));
            let expected = match want {
                Want::Set(set, tags) => (set.map(str::to_owned), tags.to_owned()),
                Want::Reply(text) => (None, format!("REJECT {text}")),
            };
            assert_eq!(got, expected, "row: {name}");
        }
    }

    #[test]
    fn allowed_senders_limit_from_sender_and_envelope() {
        let limit = SenderLimit {
            username: "app".into(),
            allowed: vec!["example.com".into(), "joe@example.org".into()],
        };
        assert!(limit.allows("Ann@Example.COM"));
        assert!(limit.allows("joe@example.org"));
        assert!(!limit.allows("joe+x@example.org"), "exact addresses only");
        assert!(!limit.allows("ann@news.example.com"), "no subdomains");
        assert!(!limit.allows("ann@example.org"));
        assert!(!limit.allows("example.com"));

        let p = policy();
        let judge = |from: &str, sender: &[&str], envelope: Option<&str>| {
            let facts = MessageFacts {
                envelope_sender: envelope.map(str::to_owned),
                from: Some(vec![from.to_owned()]),
                sender: sender.iter().map(|s| (*s).to_owned()).collect(),
                sender_limit: Some(limit.clone()),
                ..MessageFacts::default()
            };
            outcome(&p.resolve(&facts)).1
        };
        assert_eq!(judge("ann@example.com", &[], Some("b@example.com")), "");
        assert_eq!(judge("ann@example.com", &[], None), "", "<> is not checked");
        assert_eq!(
            judge("x@example.net", &[], Some("b@example.com")),
            "REJECT User app is not authorized to send from x@example.net"
        );
        assert_eq!(
            judge("ann@example.com", &["s@news.example.org"], None),
            "REJECT User app is not authorized to send from s@news.example.org"
        );
        assert_eq!(
            judge("ann@example.com", &[], Some("bounce@example.org")),
            "REJECT User app is not authorized to send from bounce@example.org"
        );
        // The limit is checked before the identities: an unverified address the user may
        // not use gets the user's refusal.
        assert_eq!(
            judge("x@nowhere.test", &[], None),
            "REJECT User app is not authorized to send from x@nowhere.test"
        );
    }

    #[test]
    fn reasons() {
        let p = policy();
        let reason = |from: &str| match p.resolve(&facts(from)) {
            Decision::Accept(a) => a.reason,
            Decision::Reject(r) => panic!("{r:?}"),
        };
        assert_eq!(
            reason("joe+x@example.com"),
            SetReason::Default {
                identity: "joe@example.com".into()
            }
        );
        assert_eq!(
            reason("ann@example.com"),
            SetReason::NoDefault {
                identity: Some("ann@example.com".into())
            }
        );
    }

    #[test]
    fn deleted_sets_are_listed() {
        let p = policy();
        let deleted: Vec<_> = p.deleted_set_defaults().collect();
        assert_eq!(deleted, [("old.example.com", "retired")]);
    }

    #[test]
    fn long_header_set_names_are_cut_in_the_message() {
        let r = Rejection::ConfigurationSetDoesNotExist("x".repeat(500));
        assert!(r.message().len() < 120);
        let r = Rejection::DefaultConfigurationSetDeleted("x".repeat(500));
        assert!(r.message().len() < 120);
    }

    #[test]
    fn set_reasons_as_logged() {
        let rows = [
            (SetReason::Header, ("header", None)),
            (
                SetReason::Default {
                    identity: "joe@example.com".into(),
                },
                ("address default", Some("joe@example.com")),
            ),
            (
                SetReason::Default {
                    identity: "example.com".into(),
                },
                ("domain default", Some("example.com")),
            ),
            (SetReason::NoDefault { identity: None }, ("none", None)),
            (
                SetReason::NoDefault {
                    identity: Some("example.org".into()),
                },
                ("none", Some("example.org")),
            ),
        ];
        for (reason, described) in rows {
            assert_eq!(reason.describe(), described);
        }
    }
}
