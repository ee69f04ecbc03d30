//! SES message tags: the `X-SES-MESSAGE-TAGS` header and the tags of a configuration set.
//!
//! Names are ASCII letters, digits, `_` and `-`; values may also hold `.` and `@`; each is
//! at most 255 characters (SES-BEHAVIOUR.md, "SES headers").

use std::collections::{BTreeMap, HashSet};
use std::fmt;

const MAX_LEN: usize = 255;

/// Why a tag is refused. `Display` gives SES's message (SES-BEHAVIOUR.md, "SES headers",
/// to the character, double spaces included), which the SMTP reply quotes after
/// `Transaction failed: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagError {
    NameMissing,
    InvalidName(String),
    NameTooLong(String),
    /// An empty value, or an item without `=`.
    ValueMissing,
    InvalidValue(String),
    ValueTooLong(String),
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagError::NameMissing => f.write_str("The tag name must be specified."),
            TagError::InvalidName(name) => write!(
                f,
                "Invalid tag name <{}>: only alphanumeric ASCII characters, '_',  '-' are allowed.",
                shown(name)
            ),
            TagError::NameTooLong(_) => f.write_str("Tag name cannot exceed 255 characters."),
            TagError::ValueMissing => f.write_str("The tag value must be specified."),
            TagError::InvalidValue(value) => write!(
                f,
                "Invalid tag value <{}>: only alphanumeric ASCII characters, '_',  '-' , '.', '@' are allowed.",
                shown(value)
            ),
            TagError::ValueTooLong(_) => f.write_str("Tag value cannot exceed 255 characters."),
        }
    }
}

/// At most 64 characters of a refused name or value, so that a reply stays readable.
fn shown(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(64).collect();
        t.push_str("...");
        t
    }
}

/// Checks one tag against SES's rules: the name before the value; a name may carry SES's
/// own `ses:` prefix.
pub fn validate_tag(name: &str, value: &str) -> Result<(), TagError> {
    if name.is_empty() {
        return Err(TagError::NameMissing);
    }
    let bare = name.strip_prefix("ses:").unwrap_or(name);
    if bare.is_empty()
        || !bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(TagError::InvalidName(name.to_owned()));
    }
    if name.len() > MAX_LEN {
        return Err(TagError::NameTooLong(name.to_owned()));
    }
    if value.is_empty() {
        return Err(TagError::ValueMissing);
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b))
    {
        return Err(TagError::InvalidValue(value.to_owned()));
    }
    if value.len() > MAX_LEN {
        return Err(TagError::ValueTooLong(value.to_owned()));
    }
    Ok(())
}

/// Parses `name=value, name=value`. Empty items (a trailing comma) are skipped; when a
/// name repeats, its first value wins.
/// Linear in the header's length (a set of the names seen).
pub fn parse_tags(header: &str) -> Result<Vec<(String, String)>, TagError> {
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) = match item.split_once('=') {
            Some(pair) => pair,
            // `name` alone: the name is checked first, then the missing value.
            None => (item, ""),
        };
        let (name, value) = (name.trim(), value.trim());
        validate_tag(name, value)?;
        if seen.insert(name) {
            tags.push((name.to_owned(), value.to_owned()));
        }
    }
    Ok(tags)
}

/// The client's tags, then the set's tags whose names the client did not give.
pub fn merge_tags(
    client: Vec<(String, String)>,
    set_tags: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let given: HashSet<&str> = client.iter().map(|(n, _)| n.as_str()).collect();
    let extra: Vec<(String, String)> = set_tags
        .iter()
        .filter(|(name, _)| !given.contains(name.as_str()))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    drop(given);
    let mut tags = client;
    tags.extend(extra);
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_merges() {
        let client = parse_tags(" team=web , campaign=spring-2026, team=ignored,").unwrap();
        assert_eq!(
            client,
            pairs(&[("team", "web"), ("campaign", "spring-2026")])
        );
        let set: BTreeMap<String, String> = [
            ("team".into(), "growth".into()),
            ("env".into(), "prod".into()),
        ]
        .into();
        assert_eq!(
            merge_tags(client, &set),
            pairs(&[
                ("team", "web"),
                ("campaign", "spring-2026"),
                ("env", "prod")
            ])
        );
    }

    #[test]
    fn errors_quote_ses() {
        let text = |h: &str| parse_tags(h).unwrap_err().to_string();
        assert_eq!(
            text("bad name=x"),
            "Invalid tag name <bad name>: only alphanumeric ASCII characters, '_',  '-' are allowed."
        );
        assert_eq!(
            text("a=b c"),
            "Invalid tag value <b c>: only alphanumeric ASCII characters, '_',  '-' , '.', '@' are allowed."
        );
        assert_eq!(text("=x"), "The tag name must be specified.");
        assert_eq!(text("a="), "The tag value must be specified.");
        assert_eq!(text("a"), "The tag value must be specified.");
        // The name is checked before the value.
        assert_eq!(
            text("b!d=b c"),
            "Invalid tag name <b!d>: only alphanumeric ASCII characters, '_',  '-' are allowed."
        );
        let long = "v".repeat(256);
        assert_eq!(
            text(&format!("a={long}")),
            "Tag value cannot exceed 255 characters."
        );
        assert_eq!(
            text(&format!("{long}=x")),
            "Tag name cannot exceed 255 characters."
        );
        assert!(parse_tags(&format!("{}=x", "n".repeat(255))).is_ok());
        assert!(parse_tags("a=user@example.com").is_ok());
        assert!(parse_tags("ses:source-ip=x, ses:=y").is_err());
        assert_eq!(
            parse_tags("ses:configuration-set=x").unwrap(),
            [("ses:configuration-set".to_owned(), "x".to_owned())]
        );
    }
}
