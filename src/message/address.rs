//! RFC 5322 address lists (section 3.4, with the obsolete forms of 4.4), read strictly.
//!
//! The policy checks every address of From, Sender and Return-Path, so this reader must
//! never "recover" a different address from a malformed one: a mailbox it cannot read as
//! `local@domain` is an error, and the message fails (the check never fails open).
//! Comments (nested, with quoted pairs) and folding white space are understood wherever the
//! RFC allows them, including around the `@` and the dots (`evil (c) @ example.com` is
//! `evil@example.com`). Errors carry JavaMail's `AddressException` texts, which is what SES
//! (a Java service) answers with.
//!
//! The reader is one linear pass: a tokenizer, then a parser over the tokens.

use std::fmt;

/// One mailbox: the address, and the display name as written (unfolded, comments dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub display_name: Option<String>,
    /// `local@domain`, the local part as written (quoted when it was quoted).
    pub address: String,
}

impl Mailbox {
    /// The mailbox as JavaMail prints it (`InternetAddress.toString`), as SES lists it in a
    /// rejection: `Joe Bloggs <joe@x.test>`, the display name quoted only where it must be
    /// (`"Bloggs, Joe" <joe@x.test>`); the bare address without a display name.
    ///
    /// The display name's RFC 2047 encoded-words are decoded first
    /// (`=?UTF-8?B?Sm9lIEJsb2dncw==?=` is `Joe Bloggs`).
    pub fn shown(&self) -> String {
        let name = self
            .display_name
            .as_deref()
            .map(super::encoded_word::decode);
        match name.as_deref().filter(|n| !n.is_empty()) {
            None => self.address.clone(),
            Some(name) => {
                let must_quote = name
                    .bytes()
                    .any(|b| b.is_ascii_control() || b"()<>@,;:\\\".[]".contains(&b));
                if must_quote {
                    let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
                    format!("\"{escaped}\" <{}>", self.address)
                } else {
                    format!("{name} <{}>", self.address)
                }
            }
        }
    }
}

/// Why an address list could not be read. `Display` is JavaMail's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    MissingDomain,
    MissingLocal,
    LocalControlOrWhitespace,
    DomainControlOrWhitespace,
    DomainIllegalCharacter,
    IllegalSemicolon,
    NestedGroup,
    MissingQuote,
    MissingParenthesis,
    MissingBracket,
    MissingAngle,
    IllegalRouteAddr,
    IllegalAddress,
    /// A list with no mailbox where one is required (an empty From).
    Empty,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::MissingDomain => "Missing final '@domain'",
            AddressError::MissingLocal => "Missing local name",
            AddressError::LocalControlOrWhitespace => {
                "Local address contains control or whitespace"
            }
            AddressError::DomainControlOrWhitespace => "Domain contains control or whitespace",
            AddressError::DomainIllegalCharacter => "Domain contains illegal character",
            AddressError::IllegalSemicolon => "Illegal semicolon, not in group",
            AddressError::NestedGroup => "Nested group",
            AddressError::MissingQuote => "Missing '\"'",
            AddressError::MissingParenthesis => "Missing ')'",
            AddressError::MissingBracket => "Missing ']'",
            AddressError::MissingAngle => "Missing '>'",
            AddressError::IllegalRouteAddr => "Illegal route-addr",
            AddressError::IllegalAddress => "Illegal address",
            AddressError::Empty => "Empty address",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// A run of atext (8-bit bytes included: RFC 6532).
    Atom(&'a [u8]),
    /// A quoted string, with its quotes.
    Quoted(&'a [u8]),
    /// A domain literal, with its brackets.
    Literal(&'a [u8]),
    /// One of `<>:;@,.` (and any other special seen outside its place).
    Special(u8),
    /// A control character outside a quoted string or comment.
    Control,
}

/// Splits a header value into tokens; comments and white space are dropped.
fn tokenize(value: &[u8]) -> Result<Vec<Tok<'_>>, AddressError> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                let mut depth = 0usize;
                loop {
                    match value.get(i) {
                        None => return Err(AddressError::MissingParenthesis),
                        Some(b'\\') => i += 2,
                        Some(b'(') => {
                            depth += 1;
                            i += 1;
                        }
                        Some(b')') => {
                            depth -= 1;
                            i += 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'"' => {
                let end = delimited(value, i + 1, b'"', AddressError::MissingQuote)?;
                toks.push(Tok::Quoted(&value[i..end]));
                i = end;
            }
            b'[' => {
                let end = delimited(value, i + 1, b']', AddressError::MissingBracket)?;
                toks.push(Tok::Literal(&value[i..end]));
                i = end;
            }
            b')' => return Err(AddressError::MissingParenthesis),
            b']' => return Err(AddressError::MissingBracket),
            b'<' | b'>' | b':' | b';' | b'@' | b',' | b'.' | b'\\' => {
                toks.push(Tok::Special(b));
                i += 1;
            }
            0..=31 | 127 => {
                toks.push(Tok::Control);
                i += 1;
            }
            _ => {
                let start = i;
                while i < value.len() && is_atext(value[i]) {
                    i += 1;
                }
                toks.push(Tok::Atom(&value[start..i]));
            }
        }
    }
    Ok(toks)
}

/// The end (just past `close`) of a quoted string or domain literal whose content starts
/// at `from`; a backslash quotes the next byte.
fn delimited(
    value: &[u8],
    from: usize,
    close: u8,
    missing: AddressError,
) -> Result<usize, AddressError> {
    let mut i = from;
    loop {
        match value.get(i) {
            None => return Err(missing),
            Some(b'\\') if i + 1 < value.len() => i += 2,
            Some(b'\\') => return Err(missing),
            Some(&b) if b == close => return Ok(i + 1),
            Some(_) => i += 1,
        }
    }
}

/// RFC 5322 atext, plus 8-bit bytes (RFC 6532).
fn is_atext(b: u8) -> bool {
    b >= 0x80
        || (b.is_ascii_graphic()
            && !matches!(
                b,
                b'(' | b')'
                    | b'<'
                    | b'>'
                    | b'['
                    | b']'
                    | b':'
                    | b';'
                    | b'@'
                    | b'\\'
                    | b','
                    | b'.'
                    | b'"'
            ))
}

/// Reads an address list (From, Sender, To, Cc, Bcc, Reply-To). Empty members (`a@x, ,
/// b@y`) are skipped as RFC 5322 4.4 allows; groups contribute their members.
pub fn parse_address_list(value: &[u8]) -> Result<Vec<Mailbox>, AddressError> {
    let toks = tokenize(value)?;
    let mut out = Vec::new();
    let mut p = Parser {
        toks: &toks,
        pos: 0,
    };
    loop {
        p.address(&mut out, false)?;
        match p.next() {
            None => break,
            Some(Tok::Special(b',')) => {}
            Some(Tok::Special(b';')) => return Err(AddressError::IllegalSemicolon),
            Some(_) => return Err(AddressError::IllegalAddress),
        }
    }
    Ok(out)
}

/// Reads a Return-Path value: `<addr>` or `<>` (the null path: `None`). A bare address
/// without brackets is taken too.
pub fn parse_return_path(value: &[u8]) -> Result<Option<Mailbox>, AddressError> {
    let toks = tokenize(value)?;
    if toks == [Tok::Special(b'<'), Tok::Special(b'>')] {
        return Ok(None);
    }
    let list = parse_address_list(value)?;
    match <[Mailbox; 1]>::try_from(list) {
        Ok([one]) => Ok(Some(one)),
        Err(list) if list.is_empty() => Err(AddressError::Empty),
        Err(_) => Err(AddressError::IllegalAddress),
    }
}

struct Parser<'t, 'a> {
    toks: &'t [Tok<'a>],
    pos: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        let t = self.peek();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// One member of a list: nothing (an empty member), a mailbox, or a group. Stops
    /// before the `,` (or `;` inside a group) that ends it.
    fn address(&mut self, out: &mut Vec<Mailbox>, in_group: bool) -> Result<(), AddressError> {
        // Scan ahead (within this member) for what decides its form: `<` (name-addr),
        // `:` (group) or neither (addr-spec).
        let mut form = None;
        for t in &self.toks[self.pos..] {
            match t {
                Tok::Special(b',') | Tok::Special(b';') => break,
                Tok::Special(b'<') => {
                    form = Some(b'<');
                    break;
                }
                Tok::Special(b':') => {
                    form = Some(b':');
                    break;
                }
                _ => {}
            }
        }
        match form {
            Some(b'<') => {
                let display_name = self.phrase();
                self.next(); // '<'
                let address = self.angle_addr()?;
                out.push(Mailbox {
                    display_name,
                    address,
                });
            }
            Some(_) => {
                if in_group {
                    return Err(AddressError::NestedGroup);
                }
                let _name = self.phrase();
                self.next(); // ':'
                loop {
                    self.address(out, true)?;
                    match self.next() {
                        Some(Tok::Special(b',')) => {}
                        Some(Tok::Special(b';')) => break,
                        // RFC 5322 4.4: a group may lack its final ';' at the end.
                        None => break,
                        Some(_) => return Err(AddressError::IllegalAddress),
                    }
                }
            }
            None => {
                if matches!(self.peek(), None | Some(Tok::Special(b',' | b';'))) {
                    return Ok(()); // an empty member
                }
                let address = self.addr_spec()?;
                out.push(Mailbox {
                    display_name: None,
                    address,
                });
            }
        }
        Ok(())
    }

    /// A display name: words and dots up to the `<` or `:` (obs-phrase allows dots).
    fn phrase(&mut self) -> Option<String> {
        let mut words: Vec<String> = Vec::new();
        while let Some(t) = self.peek() {
            match t {
                Tok::Atom(a) => words.push(String::from_utf8_lossy(a).into_owned()),
                Tok::Quoted(q) => words.push(unquote(q)),
                // obs-phrase: a dot belongs to the word before it (`J. Q.`).
                Tok::Special(b'.') => match words.last_mut() {
                    Some(last) => last.push('.'),
                    None => words.push(".".to_owned()),
                },
                Tok::Control => words.push("?".to_owned()),
                Tok::Special(b'@') | Tok::Literal(_) | Tok::Special(b'\\') => {
                    words.push("?".to_owned())
                }
                _ => break,
            }
            self.pos += 1;
        }
        (!words.is_empty()).then(|| words.join(" "))
    }

    /// After `<`: an optional obs-route, an addr-spec, `>`.
    fn angle_addr(&mut self) -> Result<String, AddressError> {
        if self.peek() == Some(Tok::Special(b'>')) {
            // `<>` in an address list is no mailbox.
            return Err(AddressError::MissingLocal);
        }
        if self.peek() == Some(Tok::Special(b'@')) {
            // obs-route: `@a.example,@b.example:` — skipped.
            loop {
                match self.next() {
                    Some(Tok::Special(b':')) => break,
                    Some(Tok::Special(b'>')) | None => return Err(AddressError::IllegalRouteAddr),
                    Some(_) => {}
                }
            }
        }
        let address = self.addr_spec()?;
        match self.next() {
            Some(Tok::Special(b'>')) => {}
            None => return Err(AddressError::MissingAngle),
            Some(_) => return Err(AddressError::IllegalAddress),
        }
        // Nothing but the end of the member may follow.
        match self.peek() {
            None | Some(Tok::Special(b',' | b';')) => Ok(address),
            Some(_) => Err(AddressError::IllegalAddress),
        }
    }

    /// `local@domain`: words separated by dots, `@`, atoms separated by dots (or a
    /// domain literal).
    fn addr_spec(&mut self) -> Result<String, AddressError> {
        let mut address = String::new();
        let mut expect_word = true;
        loop {
            match self.peek() {
                Some(Tok::Atom(a)) if expect_word => {
                    address.push_str(&String::from_utf8_lossy(a));
                    expect_word = false;
                }
                Some(Tok::Quoted(q)) if expect_word => {
                    if q.iter().any(|&b| b < 32 && b != b'\t' || b == 127) {
                        return Err(AddressError::LocalControlOrWhitespace);
                    }
                    address.push_str(&String::from_utf8_lossy(q));
                    expect_word = false;
                }
                Some(Tok::Special(b'.')) if !expect_word => {
                    address.push('.');
                    expect_word = true;
                }
                Some(Tok::Special(b'@')) => break,
                Some(Tok::Control) => return Err(AddressError::LocalControlOrWhitespace),
                // Two words in a row: white space inside the local part.
                Some(Tok::Atom(_) | Tok::Quoted(_)) => {
                    return Err(AddressError::LocalControlOrWhitespace);
                }
                None | Some(Tok::Special(b',' | b';' | b'>')) => {
                    return Err(if address.is_empty() {
                        AddressError::MissingLocal
                    } else {
                        AddressError::MissingDomain
                    });
                }
                Some(_) => return Err(AddressError::IllegalAddress),
            }
            self.pos += 1;
        }
        if address.is_empty() || expect_word {
            // `@x`, `a.@x` or `.a@x`.
            return Err(AddressError::MissingLocal);
        }
        self.pos += 1; // '@'
        address.push('@');
        if let Some(Tok::Literal(l)) = self.peek() {
            self.pos += 1;
            address.push_str(&String::from_utf8_lossy(l));
            return self.end_of_addr_spec(address);
        }
        let mut expect_atom = true;
        let mut domain_len = 0;
        loop {
            match self.peek() {
                Some(Tok::Atom(a)) if expect_atom => {
                    address.push_str(&String::from_utf8_lossy(a));
                    domain_len += a.len();
                    expect_atom = false;
                }
                Some(Tok::Special(b'.')) if !expect_atom => {
                    address.push('.');
                    expect_atom = true;
                }
                Some(Tok::Atom(_)) => return Err(AddressError::DomainControlOrWhitespace),
                Some(Tok::Control) => return Err(AddressError::DomainControlOrWhitespace),
                None | Some(Tok::Special(b',' | b';' | b'>')) => break,
                Some(_) => return Err(AddressError::DomainIllegalCharacter),
            }
            self.pos += 1;
        }
        if domain_len == 0 || expect_atom {
            return Err(if domain_len == 0 {
                AddressError::MissingDomain
            } else {
                AddressError::DomainIllegalCharacter
            });
        }
        self.end_of_addr_spec(address)
    }

    fn end_of_addr_spec(&self, address: String) -> Result<String, AddressError> {
        match self.peek() {
            None | Some(Tok::Special(b',' | b';' | b'>')) => Ok(address),
            Some(Tok::Control) => Err(AddressError::DomainControlOrWhitespace),
            Some(_) => Err(AddressError::DomainIllegalCharacter),
        }
    }
}

/// A quoted string's content, quoted pairs resolved.
fn unquote(q: &[u8]) -> String {
    let inner = q
        .strip_prefix(b"\"")
        .and_then(|q| q.strip_suffix(b"\""))
        .unwrap_or(q);
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if !escaped && (b == b'\r' || b == b'\n') {
            continue; // unfolding: CRLF goes, the white space after it stays
        }
        if escaped || b != b'\\' {
            out.push(b);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(v: &str) -> Result<Vec<String>, String> {
        parse_address_list(v.as_bytes())
            .map(|l| l.into_iter().map(|m| m.address).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn comments_and_folding_white_space_are_understood() {
        for (value, expected) in [
            ("evil(comment)@attacker.com", "evil@attacker.com"),
            ("evil @ attacker.com", "evil@attacker.com"),
            ("evil@ attacker.com", "evil@attacker.com"),
            (
                "evil (a (nested) comment) @ (c) attacker . com",
                "evil@attacker.com",
            ),
            ("Joe <joe(c)@(d)x.com>", "joe@x.com"),
            ("\"Joe, Q\" <joe@x.com> (trailing)", "joe@x.com"),
            ("joe@x.com (Joe)", "joe@x.com"),
            ("<@route.example,@b.example:joe@x.com>", "joe@x.com"),
            ("\"quoted local\"@x.com", "\"quoted local\"@x.com"),
            ("joe@[127.0.0.1]", "joe@[127.0.0.1]"),
            ("first.last@x.com", "first.last@x.com"),
            ("joe@x.com\r\n (folded)", "joe@x.com"),
        ] {
            assert_eq!(addrs(value), Ok(vec![expected.to_owned()]), "{value}");
        }
    }

    #[test]
    fn lists_and_groups() {
        assert_eq!(
            addrs("a@x.com, \"B\" <b@y.com>, , c@z.com"),
            Ok(vec!["a@x.com".into(), "b@y.com".into(), "c@z.com".into()])
        );
        assert_eq!(
            addrs("team: a@x.com, b@y.com; , c@z.com"),
            Ok(vec!["a@x.com".into(), "b@y.com".into(), "c@z.com".into()])
        );
        assert_eq!(addrs("undisclosed-recipients:;"), Ok(vec![]));
        assert_eq!(addrs(""), Ok(vec![]));
    }

    #[test]
    fn unreadable_mailboxes_are_errors() {
        for (value, error) in [
            (
                "not an address",
                "Local address contains control or whitespace",
            ),
            ("joe", "Missing final '@domain'"),
            ("@x.com", "Missing local name"),
            ("joe@", "Missing final '@domain'"),
            ("joe@x.com, garbage", "Missing final '@domain'"),
            ("<>", "Missing local name"),
            ("joe@x..com", "Domain illegal"),
            ("joe@exa mple.com", "Domain contains control or whitespace"),
            (
                "jo\0e@x.com",
                "Local address contains control or whitespace",
            ),
            ("a@x.com; b@y.com", "Illegal semicolon, not in group"),
            ("<joe@x.com", "Missing '>'"),
            ("(unclosed@x.com", "Missing ')'"),
            ("\"unclosed@x.com", "Missing '\"'"),
            ("g: h: a@x.com;;", "Nested group"),
            ("Joe <joe@x.com> extra", "Illegal address"),
            ("joe@x.com@y.com", "Domain contains illegal character"),
        ] {
            let got = addrs(value);
            assert!(got.is_err(), "{value:?} gave {got:?}");
            if !error.ends_with("illegal") {
                assert_eq!(got, Err(error.to_owned()), "{value:?}");
            }
        }
    }

    #[test]
    fn mailboxes_are_shown_as_javamail_prints_them() {
        let shown = |v: &str| {
            parse_address_list(v.as_bytes())
                .unwrap()
                .iter()
                .map(Mailbox::shown)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shown("\"Joe Bloggs\" <joe@x.test>, ann@y.test, Bloggs\r\n Joe <j@x.test>"),
            [
                "Joe Bloggs <joe@x.test>",
                "ann@y.test",
                "Bloggs Joe <j@x.test>"
            ]
        );
        assert_eq!(
            shown("\"Bloggs, Joe\" <joe@x.test>, \"A \\\"B\\\" C\" <a@x.test>, J. Q. <q@x.test>"),
            [
                "\"Bloggs, Joe\" <joe@x.test>",
                "\"A \\\"B\\\" C\" <a@x.test>",
                "\"J. Q.\" <q@x.test>"
            ]
        );
    }

    #[test]
    fn encoded_display_names_are_shown_decoded() {
        let shown = |v: &str| {
            parse_address_list(v.as_bytes())
                .unwrap()
                .iter()
                .map(Mailbox::shown)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shown(
                "=?UTF-8?B?Sm9lIEJsb2dncw==?= <joe@x.test>, =?utf-8?Q?Ann?=\r\n =?ISO-8859-1?Q?_L=E9e?= <ann@x.test>"
            ),
            ["Joe Bloggs <joe@x.test>", "Ann L\u{e9}e <ann@x.test>"]
        );
        // Decoded first, then quoted where the decoded name must be.
        assert_eq!(
            shown("=?UTF-8?Q?Bloggs=2C_Joe?= <joe@x.test>, \"=?UTF-8?B?w4lsaXNl?=\" <e@x.test>"),
            ["\"Bloggs, Joe\" <joe@x.test>", "\u{c9}lise <e@x.test>"]
        );
        // What is not an encoded-word stays as written.
        assert_eq!(shown("=?bogus <b@x.test>"), ["=?bogus <b@x.test>"]);
    }

    #[test]
    fn display_names_are_kept() {
        let list =
            parse_address_list(b"\"Joe Q. Bloggs\" <joe@x.com>, Ann Lee <ann@y.com>").unwrap();
        assert_eq!(list[0].display_name.as_deref(), Some("Joe Q. Bloggs"));
        assert_eq!(list[1].display_name.as_deref(), Some("Ann Lee"));
    }

    #[test]
    fn return_path() {
        assert_eq!(parse_return_path(b"<>"), Ok(None));
        assert_eq!(parse_return_path(b" < > "), Ok(None));
        assert_eq!(
            parse_return_path(b"<bounce@x.com>")
                .unwrap()
                .unwrap()
                .address,
            "bounce@x.com"
        );
        assert!(parse_return_path(b"<a@x.com>, <b@y.com>").is_err());
        assert!(parse_return_path(b"").is_err());
    }

    #[test]
    fn forty_thousand_addresses_are_linear() {
        let mut v = String::new();
        for i in 0..40_000 {
            v.push_str(&format!("User {i} <u{i}@example.com>, "));
        }
        assert_eq!(parse_address_list(v.as_bytes()).unwrap().len(), 40_000);
    }
}
