//! The DATA decoder (`smtp::data::DataDecoder`, SPEC 3) on arbitrary bytes.
//!
//! Input: one byte choosing the size cap and the chunking, then the bytes that follow the
//! 354 reply. Checks:
//! - no panic;
//! - the outcome (where DATA ends, the content, whether it was too long) is the same for
//!   every chunking: whole, one byte at a time, and pseudo-random cuts;
//! - the content has no bare LF and no bare CR, ends in CRLF, and passes one more SMTP hop
//!   intact: dot-stuffed as any client does, it decodes to itself and ends exactly at the
//!   terminator (no line in it can end DATA early: SMTP smuggling).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesrelay::smtp::data::{DataDecoder, Progress};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Bytes of the input consumed up to the end of DATA; `None` when it never ended.
    end: Option<usize>,
    oversized: bool,
    content: Vec<u8>,
}

fn decode<'a>(max_size: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut decoder = DataDecoder::new(max_size);
    let mut total = 0;
    let mut end = None;
    for chunk in chunks {
        match decoder.feed(chunk) {
            Progress::NeedMore => total += chunk.len(),
            Progress::Done { consumed } => {
                assert!(consumed <= chunk.len(), "consumed past the chunk");
                end = Some(total + consumed);
                break;
            }
        }
    }
    let oversized = decoder.is_oversized();
    Outcome {
        end,
        oversized,
        content: decoder.into_content(),
    }
}

/// Cuts `data` at pseudo-random points derived from `seed` (xorshift).
fn random_chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x9e37_7900;
    let mut chunks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = (state as usize % 7 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// What an SMTP client sends for `content` (RFC 5321 4.5.2): a dot doubled at the start
/// of each line, then the terminator.
fn dot_stuffed(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 8);
    let mut line_start = true;
    for &b in content {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    // Mostly a cap that is never reached; sometimes a tiny one, to exercise the 552 path.
    let max_size = if control & 0x80 == 0 {
        1 << 20
    } else {
        usize::from(control & 0x3f)
    };

    let whole = decode(max_size, std::iter::once(data));
    let bytewise = decode(max_size, data.chunks(1));
    assert_eq!(whole, bytewise, "one byte at a time changed the outcome");
    let random = decode(max_size, random_chunks(data, control).into_iter());
    assert_eq!(whole, random, "another chunking changed the outcome");

    let content = &whole.content;
    if whole.oversized {
        assert!(content.is_empty(), "oversized content was kept");
        return;
    }
    assert!(content.len() <= max_size, "content past the size cap");
    for (i, &b) in content.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && content[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert!(content.get(i + 1) == Some(&b'\n'), "bare CR at {i}");
        }
    }
    if whole.end.is_some() && !content.is_empty() {
        assert!(content.ends_with(b"\r\n"), "content does not end in CRLF");
    }
    if whole.end.is_some() {
        // One more hop: the next server must see exactly this content, ending where the
        // terminator is and nowhere before.
        let wire = dot_stuffed(content);
        let again = decode(usize::MAX >> 1, std::iter::once(&wire[..]));
        assert_eq!(again.end, Some(wire.len()), "the content ends DATA early");
        assert_eq!(
            &again.content, content,
            "the content does not survive another hop"
        );
    }
});
