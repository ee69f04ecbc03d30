//! The SES rules, pure and synchronous: no I/O, no async, no SMTP.
//!
//! [`Policy::resolve`] takes what a message says about itself ([`MessageFacts`]) and
//! decides: accept with a configuration set and tags, or reject with a [`Rejection`].

mod identities;
mod resolve;
mod tags;

use std::collections::BTreeMap;

pub use identities::{Identity, IdentityTable, candidates};
pub use resolve::{
    Acceptance, Decision, MessageFacts, Rejection, Resolution, SenderLimit, SetReason,
    is_mailbox_simulator,
};
pub use tags::{TagError, merge_tags, parse_tags, validate_tag};

/// A configuration set that exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigurationSet {
    /// `false`: mail that resolves to this set is rejected (sending paused).
    pub sending_enabled: bool,
    /// Message tags added to `X-SES-MESSAGE-TAGS` for names the client did not give.
    pub tags: BTreeMap<String, String>,
}

/// The account's switches (`[account]`, SPEC 4.5); its quotas are counted by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountRules {
    /// Recipients must be covered by verified identities too (mailbox simulator excepted).
    pub sandbox: bool,
    /// `false`: every message gets SES's account-paused 554.
    pub sending_enabled: bool,
}

impl Default for AccountRules {
    fn default() -> AccountRules {
        AccountRules {
            sandbox: false,
            sending_enabled: true,
        }
    }
}

/// Everything the rules need: the `[policy]` switches, the region, the identity table and
/// the configuration sets that exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub require_verified_sender: bool,
    pub inherit_domain_default: bool,
    /// Upper-case, as SES prints it in rejections.
    pub region: String,
    /// Recipients one message may have (`server.max_recipients`; SES: 50).
    pub max_recipients: usize,
    /// `[account]`'s switches.
    pub account: AccountRules,
    pub identities: IdentityTable,
    pub configuration_sets: BTreeMap<String, ConfigurationSet>,
}

impl Policy {
    /// Identities whose default names a set that does not exist: `(identity, set)`.
    pub fn deleted_set_defaults(&self) -> impl Iterator<Item = (&str, &str)> {
        self.identities.iter().filter_map(|(name, identity)| {
            let set = identity.default_configuration_set.as_deref()?;
            (!self.configuration_sets.contains_key(set)).then_some((name, set))
        })
    }
}

/// A set name is 1–64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_configuration_set_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
