//! SES message tags: the `X-SES-MESSAGE-TAGS` header and the tags of a configuration set.
//!
//! Names are ASCII letters, digits, `_` and `-`; values may also hold `.` and `@`; each is
//! at most 255 characters (SES-BEHAVIOUR.md, "SES headers").

use std::collections::{BTreeMap, HashSet};
use std::fmt;

const MAX_LEN: usize = 255;

/// Why a tag is refused. `Display` gives SES's message, which the SMTP reply quotes after
/// `Transaction failed: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagError {
    InvalidName(String),
    NameTooLong(String),
    InvalidValue(String),
    ValueTooLong(String),
    /// An item without `=`.
    Malformed(String),
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagError::InvalidName(name) => write!(
                f,
                "Invalid tag name <{}>: only alphanumeric ASCII characters, '_',  '-' are allowed.",
                shown(name)
            ),
            TagError::NameTooLong(name) => write!(
                f,
                "Invalid tag name <{}>: Tag name cannot exceed 255 characters.",
                shown(name)
            ),
            TagError::InvalidValue(value) => write!(
                f,
                "Invalid tag value <{}>: only alphanumeric ASCII characters, '_',  '-', '.', '@' are allowed.",
                shown(value)
            ),
            TagError::ValueTooLong(value) => write!(
                f,
                "Invalid tag value <{}>: Tag value cannot exceed 255 characters.",
                shown(value)
            ),
            TagError::Malformed(item) => {
                write!(f, "Invalid tag <{}>: expected name=value.", shown(item))
            }
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

/// Checks one tag against SES's rules.
pub fn validate_tag(name: &str, value: &str) -> Result<(), TagError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(TagError::InvalidName(name.to_owned()));
    }
    if name.len() > MAX_LEN {
        return Err(TagError::NameTooLong(name.to_owned()));
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
        let Some((name, value)) = item.split_once('=') else {
            return Err(TagError::Malformed(item.to_owned()));
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
        assert_eq!(
            parse_tags("bad name=x").unwrap_err().to_string(),
            "Invalid tag name <bad name>: only alphanumeric ASCII characters, '_',  '-' are allowed."
        );
        assert_eq!(
            parse_tags("a=b c").unwrap_err(),
            TagError::InvalidValue("b c".into())
        );
        assert_eq!(
            parse_tags("a").unwrap_err(),
            TagError::Malformed("a".into())
        );
        assert_eq!(
            parse_tags("=x").unwrap_err(),
            TagError::InvalidName("".into())
        );
        let long = "v".repeat(256);
        assert_eq!(
            parse_tags(&format!("a={long}")).unwrap_err(),
            TagError::ValueTooLong(long.clone())
        );
        assert!(
            TagError::ValueTooLong(long)
                .to_string()
                .ends_with("Tag value cannot exceed 255 characters.")
        );
        assert!(parse_tags(&format!("{}=x", "n".repeat(255))).is_ok());
        assert!(parse_tags("a=user@example.com").is_ok());
        assert!(parse_tags("a=").is_ok());
    }
}
