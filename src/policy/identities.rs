//! The identity table: which verified identity covers an address.
//!
//! An address is covered by, from the most specific to the broadest: the address itself,
//! the address without its `+label`, its domain, then each parent domain. Identities and
//! addresses compare case-insensitively.

use std::collections::BTreeMap;

/// One identity: an email address or a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub verified: bool,
    pub default_configuration_set: Option<String>,
}

/// Every configured identity, keyed by its lower-cased name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityTable {
    entries: BTreeMap<String, Identity>,
}

impl IdentityTable {
    /// Adds (or replaces) an identity; the name is lower-cased.
    pub fn insert(&mut self, name: &str, identity: Identity) {
        self.entries.insert(name.to_ascii_lowercase(), identity);
    }

    pub fn get(&self, name: &str) -> Option<&Identity> {
        self.entries.get(&name.to_ascii_lowercase())
    }

    /// Every identity, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Identity)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The verified identities that cover `address`, most specific first.
    pub fn verified_covering<'a>(
        &'a self,
        address: &str,
    ) -> impl Iterator<Item = (String, &'a Identity)> + 'a {
        candidates(address).into_iter().filter_map(move |name| {
            let identity = self.entries.get(&name)?;
            identity.verified.then_some((name, identity))
        })
    }

    /// True when some verified identity covers `address`.
    pub fn covers(&self, address: &str) -> bool {
        self.verified_covering(address).next().is_some()
    }
}

/// The identity names that could cover `address`, most specific first, lower-cased:
/// `joe+news@mail.example.com` → the address, `joe@mail.example.com`, `mail.example.com`,
/// `example.com`, `com`. An address without `@` yields nothing.
pub fn candidates(address: &str) -> Vec<String> {
    let address = address.trim().to_ascii_lowercase();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Vec::new();
    };
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if local.is_empty() || domain.is_empty() {
        return Vec::new();
    }
    let mut names = vec![format!("{local}@{domain}")];
    if let Some((base, _label)) = local.split_once('+')
        && !base.is_empty()
    {
        names.push(format!("{base}@{domain}"));
    }
    if domain.starts_with('[') {
        // An address literal has no parent domains.
        names.push(domain.to_owned());
        return names;
    }
    let mut rest = domain;
    loop {
        names.push(rest.to_owned());
        match rest.split_once('.') {
            Some((_, parent)) if !parent.is_empty() => rest = parent,
            _ => break,
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_order() {
        assert_eq!(
            candidates("Joe+News@Mail.Example.COM"),
            [
                "joe+news@mail.example.com",
                "joe@mail.example.com",
                "mail.example.com",
                "example.com",
                "com"
            ]
        );
        assert_eq!(
            candidates("joe@example.com"),
            ["joe@example.com", "example.com", "com"]
        );
        assert_eq!(
            candidates("+x@example.com"),
            ["+x@example.com", "example.com", "com"]
        );
        assert_eq!(
            candidates("a+b+c@x.org"),
            ["a+b+c@x.org", "a@x.org", "x.org", "org"]
        );
        assert_eq!(
            candidates("joe@[127.0.0.1]"),
            ["joe@[127.0.0.1]", "[127.0.0.1]"]
        );
        assert!(candidates("no-at-sign").is_empty());
        assert!(candidates("@example.com").is_empty());
        assert!(candidates("joe@").is_empty());
    }
}
