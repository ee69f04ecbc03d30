//! The capture API's search: `from:`, `to:`, `subject:`, `set:`, `outcome:` and free text,
//! values quoted when they hold spaces (`subject:"big news"`), `-` before a term to
//! exclude. Every term must hold; matching ignores case.

use super::Captured;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The From header and the envelope sender (contains).
    From,
    /// The To header and the envelope recipients (contains).
    To,
    /// The subject (contains).
    Subject,
    /// The configuration set (equals); `set:none` for messages without one.
    Set,
    /// The outcome (equals): `forwarded`, `rejected`, `upstream-refused`.
    Outcome,
    /// Any of the above, the id, the reply, the tags and the raw text (contains).
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    field: Field,
    value: String,
    negated: bool,
}

/// A parsed search query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    terms: Vec<Term>,
}

/// Splits on whitespace outside double quotes; the quotes are removed.
fn words(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in query.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

impl Query {
    pub fn parse(query: &str) -> Query {
        let terms = words(query)
            .into_iter()
            .filter_map(|word| {
                let (negated, word) = match word.strip_prefix('-') {
                    Some(rest) if !rest.is_empty() => (true, rest.to_owned()),
                    _ => (false, word),
                };
                let (field, value) = match word.split_once(':') {
                    Some((key, value)) => {
                        let field = match key.to_ascii_lowercase().as_str() {
                            "from" => Some(Field::From),
                            "to" => Some(Field::To),
                            "subject" => Some(Field::Subject),
                            "set" => Some(Field::Set),
                            "outcome" => Some(Field::Outcome),
                            _ => None,
                        };
                        match field {
                            Some(field) => (field, value.to_owned()),
                            None => (Field::Text, word.clone()),
                        }
                    }
                    None => (Field::Text, word),
                };
                let value = value.to_lowercase();
                (!value.is_empty()).then_some(Term {
                    field,
                    value,
                    negated,
                })
            })
            .collect();
        Query { terms }
    }

    pub fn matches(&self, captured: &Captured) -> bool {
        self.terms
            .iter()
            .all(|term| term.holds(captured) != term.negated)
    }
}

fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(needle)
}

impl Term {
    fn holds(&self, c: &Captured) -> bool {
        let v = self.value.as_str();
        match self.field {
            Field::From => contains(&c.from, v) || contains(&c.mail_from, v),
            Field::To => {
                c.to.iter().any(|t| contains(t, v)) || c.rcpt_to.iter().any(|t| contains(t, v))
            }
            Field::Subject => contains(&c.subject, v),
            Field::Set => match &c.configuration_set {
                Some(set) => set.to_lowercase() == v,
                None => v == "none",
            },
            Field::Outcome => c.outcome.as_str() == v,
            Field::Text => {
                [
                    &c.id,
                    &c.from,
                    &c.mail_from,
                    &c.subject,
                    &c.reply,
                    c.configuration_set.as_deref().unwrap_or_default(),
                ]
                .iter()
                .any(|s| contains(s, v))
                    || c.to.iter().chain(&c.rcpt_to).any(|t| contains(t, v))
                    || c.tags
                        .iter()
                        .any(|(n, value)| contains(n, v) || contains(value, v))
                    || c.raw()
                        .is_some_and(|raw| contains(&String::from_utf8_lossy(&raw), v))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_quotes_and_negation() {
        let q = Query::parse(r#"from:joe subject:"big news" -outcome:rejected hello"#);
        assert_eq!(
            q.terms,
            vec![
                Term {
                    field: Field::From,
                    value: "joe".into(),
                    negated: false
                },
                Term {
                    field: Field::Subject,
                    value: "big news".into(),
                    negated: false
                },
                Term {
                    field: Field::Outcome,
                    value: "rejected".into(),
                    negated: true
                },
                Term {
                    field: Field::Text,
                    value: "hello".into(),
                    negated: false
                },
            ]
        );
        assert_eq!(Query::parse("  ").terms, vec![]);
        assert_eq!(Query::parse("x:y").terms[0].field, Field::Text);
    }
}
