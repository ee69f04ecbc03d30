//! RFC 2047 encoded-words (`=?UTF-8?B?w4lsaXNl?=`, `=?iso-8859-1?Q?=C9lise?=`) in display
//! names, decoded as JavaMail's `MimeUtility.decodeText` does, which is what SES (a Java
//! service) shows, and leniently in the same ways:
//!
//! - an encoded-word is recognised wherever it appears, also inside a quoted string or
//!   run together with other text;
//! - white space between two encoded-words is dropped (RFC 2047 6.2), and so adjacent
//!   encoded-words of one charset are decoded as one byte string, so that a character
//!   split across two of them (which encoders should not do, and some do) comes out whole;
//! - the charset is any label of the Encoding Standard (`encoding_rs`: UTF-8, ISO-8859-*,
//!   windows-125*, Shift_JIS, ...), an RFC 2231 language suffix (`UTF-8*en`) ignored;
//! - a word that cannot be decoded (an unknown charset or encoding, bad base64) is kept as
//!   it is written, as JavaMail keeps it; bytes invalid in their charset become U+FFFD.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

/// Base64 as encoders write it in headers: padding optional, stray low bits allowed.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// `text` with its encoded-words decoded; borrowed when it has none.
pub fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains("=?") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    // Decoded bytes of adjacent encoded-words not yet turned into text, and their charset.
    let mut run: Option<(&'static encoding_rs::Encoding, Vec<u8>)> = None;
    // White space seen after an encoded-word: dropped if another encoded-word follows.
    let mut gap = "";
    let mut rest = text;
    while !rest.is_empty() {
        let Some(start) = rest.find("=?") else {
            break;
        };
        match encoded_word(&rest[start..]) {
            Some((encoding, bytes, len)) => {
                let before = &rest[..start];
                let joins = run.is_some() && before.bytes().all(is_white_space);
                if !joins {
                    flush(&mut out, &mut run);
                    out.push_str(gap);
                    out.push_str(before);
                }
                match &mut run {
                    Some((charset, pending)) if *charset == encoding => {
                        pending.extend_from_slice(&bytes);
                    }
                    _ => {
                        flush(&mut out, &mut run);
                        run = Some((encoding, bytes));
                    }
                }
                rest = &rest[start + len..];
                // The white space after it, held back until we know what follows.
                let white = rest.bytes().take_while(|&b| is_white_space(b)).count();
                gap = &rest[..white];
                rest = &rest[white..];
            }
            None => {
                // Not an encoded-word: "=?" is plain text.
                flush(&mut out, &mut run);
                out.push_str(gap);
                gap = "";
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
            }
        }
    }
    flush(&mut out, &mut run);
    out.push_str(gap);
    out.push_str(rest);
    Cow::Owned(out)
}

fn is_white_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn flush(out: &mut String, run: &mut Option<(&'static encoding_rs::Encoding, Vec<u8>)>) {
    if let Some((encoding, bytes)) = run.take() {
        let (text, _) = encoding.decode_without_bom_handling(&bytes);
        out.push_str(&text);
    }
}

/// The encoded-word at the start of `s` (`=?charset?encoding?text?=`): its charset, its
/// decoded bytes and its length in `s`; `None` when `s` does not start with one that can
/// be decoded.
fn encoded_word(s: &str) -> Option<(&'static encoding_rs::Encoding, Vec<u8>, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let text = &inner[..end];
    let len = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    let token_char = |b: u8| b.is_ascii_graphic() && b != b'?';
    if charset.is_empty()
        || !charset.bytes().all(token_char)
        || !text.bytes().all(|b| b.is_ascii_graphic() && b != b'?')
    {
        return None;
    }
    // RFC 2231: `charset*language`.
    let label = charset.split_once('*').map_or(charset, |(c, _)| c);
    let charset = encoding_rs::Encoding::for_label_no_replacement(label.as_bytes())?;
    let bytes = if encoding.eq_ignore_ascii_case("B") {
        LENIENT_BASE64.decode(text).ok()?
    } else if encoding.eq_ignore_ascii_case("Q") {
        q_decode(text.as_bytes())
    } else {
        return None;
    };
    Some((charset, bytes, len))
}

/// The "Q" encoding: `_` is a space, `=XX` a byte; a `=` not followed by two hex digits is
/// kept as it is.
fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'=');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn words_in_base64_and_q_are_decoded() {
        for (encoded, decoded) in [
            ("=?UTF-8?B?Sm9lIEJsb2dncw==?=", "Joe Bloggs"),
            ("=?utf-8?b?Sm9lIEJsb2dncw?=", "Joe Bloggs"),
            ("=?UTF-8?B?w4lsaXNl?=", "\u{c9}lise"),
            ("=?utf-8?Q?Joe_Bloggs?=", "Joe Bloggs"),
            ("=?UTF-8?q?=C3=89lise?=", "\u{c9}lise"),
            ("=?ISO-8859-1?Q?=C9lise?=", "\u{c9}lise"),
            ("=?iso-8859-1?B?yWxpc2U=?=", "\u{c9}lise"),
            ("=?windows-1252?Q?=80uro?=", "\u{20ac}uro"),
            ("=?US-ASCII?Q?plain?=", "plain"),
            ("=?UTF-8*en?Q?Joe?=", "Joe"),
            ("=?UTF-8?Q?a=3Fb=3D?=", "a?b="),
        ] {
            assert_eq!(decode(encoded), decoded, "{encoded}");
        }
    }

    #[test]
    fn white_space_between_encoded_words_is_dropped_and_kept_elsewhere() {
        assert_eq!(decode("=?UTF-8?Q?Joe?= =?UTF-8?Q?_Bloggs?="), "Joe Bloggs");
        assert_eq!(
            decode("=?UTF-8?Q?Joe?=\r\n\t =?ISO-8859-1?Q?_Bl=F6ggs?="),
            "Joe Bl\u{f6}ggs"
        );
        assert_eq!(decode("Dr. =?UTF-8?Q?Joe?= Bloggs"), "Dr. Joe Bloggs");
        assert_eq!(decode("=?UTF-8?Q?Joe?=  "), "Joe  ");
        assert_eq!(decode("  =?UTF-8?Q?Joe?="), "  Joe");
        assert_eq!(decode("=?UTF-8?Q?Joe?==?UTF-8?Q?Bloggs?="), "JoeBloggs");
    }

    #[test]
    fn a_character_split_across_two_words_comes_out_whole() {
        // "É" is C3 89 in UTF-8, cut between the two words.
        assert_eq!(decode("=?UTF-8?Q?=C3?= =?UTF-8?Q?=89lise?="), "\u{c9}lise");
        assert_eq!(
            decode("=?UTF-8?B?ww==?= =?UTF-8?B?iWxpc2U=?="),
            "\u{c9}lise"
        );
    }

    #[test]
    fn what_cannot_be_decoded_is_kept() {
        for text in [
            "Joe Bloggs",
            "=?",
            "a =? b",
            "=?UTF-8?B?",
            "=?UTF-8?X?abc?=",
            "=?no-such-charset?Q?abc?=",
            "=??Q?abc?=",
            "=?UTF-8?B?!!!?=",
            "=?UTF-8?Q?two words?=",
        ] {
            assert_eq!(decode(text), text, "{text}");
        }
        assert_eq!(decode("=?no-such?Q?a?= =?UTF-8?Q?b?="), "=?no-such?Q?a?= b");
        // Bytes invalid in their charset are U+FFFD.
        assert_eq!(decode("=?UTF-8?Q?=FF?="), "\u{fffd}");
    }
}
