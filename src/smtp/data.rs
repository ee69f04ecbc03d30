//! The DATA reader: CRLF framing, dot-unstuffing, the size cap and bare-LF normalising.
//!
//! Bytes are fed in whatever chunks the socket delivers; the decoder keeps only a few bits
//! of state between chunks, so a line may be split anywhere (even between CR and LF).
//!
//! The rules (RFC 5321 4.5.2, and Postfix 3.9's `smtpd_forbid_bare_newline = normalize`):
//! - Only `<CRLF>.<CRLF>` ends DATA: a `.` line ends the message only when the line before
//!   it ended in CRLF and the `.` line itself ends in CRLF.
//! - A line ending in a bare LF is taken as a CRLF line: the message gets `CRLF` there.
//!   Hence no bare LF and no lone `.` line reaches the upstream unstuffed (SMTP smuggling).
//! - A line beginning with `.` that has other characters loses that first `.`. A lone `.`
//!   line that does not end DATA (bare LF around it) has nothing else on it and is kept as
//!   `.`; the upstream client stuffs it again.
//! - A CR not followed by LF is an ordinary byte, as are all 8-bit bytes.
//! - Past `max_size` octets the content is no longer stored, but reading goes on to the
//!   end of DATA, so that the client gets its 552 in step.

/// Where the decoder stands within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `after_crlf` tells whether the previous line ended in CRLF.
    LineStart { after_crlf: bool },
    /// Saw `.` at the start of a line.
    Dot { after_crlf: bool },
    /// Saw `.` then CR at the start of a line.
    DotCr { after_crlf: bool },
    /// Inside a line.
    InLine,
    /// Inside a line, just after a CR.
    Cr,
}

/// Result of feeding a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All of the chunk was consumed; more data is needed.
    NeedMore,
    /// The end-of-data line was found; this many bytes of the chunk were consumed (the
    /// rest belongs to the command stream).
    Done { consumed: usize },
}

/// Decodes one message's DATA into its content.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    content: Vec<u8>,
    max_size: usize,
    /// Size of the decoded content, counted on even after it stops being stored.
    size: u64,
}

impl DataDecoder {
    pub fn new(max_size: usize) -> Self {
        DataDecoder {
            state: State::LineStart { after_crlf: true },
            content: Vec::new(),
            max_size,
            size: 0,
        }
    }

    /// Feeds a chunk of the byte stream that follows the 354 reply.
    pub fn feed(&mut self, chunk: &[u8]) -> Progress {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            i += 1;
            self.state = match self.state {
                State::LineStart { after_crlf } => match b {
                    b'.' => State::Dot { after_crlf },
                    _ => self.in_line(b),
                },
                State::Dot { after_crlf } => match b {
                    b'\r' => State::DotCr { after_crlf },
                    b'\n' => {
                        // A lone "." ending in a bare LF: content, never the end.
                        self.push(b".\r\n");
                        State::LineStart { after_crlf: false }
                    }
                    // The stuffed dot is dropped.
                    _ => self.in_line(b),
                },
                State::DotCr { after_crlf } => match b {
                    b'\n' if after_crlf => {
                        return Progress::Done { consumed: i };
                    }
                    b'\n' => {
                        self.push(b".\r\n");
                        State::LineStart { after_crlf: true }
                    }
                    // ".\r" followed by more: the dot was stuffing, the CR is content.
                    b'\r' => {
                        self.push(b"\r");
                        State::Cr
                    }
                    _ => {
                        self.push(b"\r");
                        self.in_line(b)
                    }
                },
                State::InLine => self.in_line(b),
                State::Cr => match b {
                    b'\n' => {
                        self.push(b"\r\n");
                        State::LineStart { after_crlf: true }
                    }
                    b'\r' => {
                        self.push(b"\r");
                        State::Cr
                    }
                    _ => {
                        self.push(b"\r");
                        self.in_line(b)
                    }
                },
            };
            // Plain bytes in the middle of a line are copied in one run, not one at a time.
            if self.state == State::InLine {
                let rest = &chunk[i..];
                let run = rest
                    .iter()
                    .position(|&c| c == b'\r' || c == b'\n')
                    .unwrap_or(rest.len());
                self.push(&rest[..run]);
                i += run;
            }
        }
        Progress::NeedMore
    }

    /// One byte inside a line (or the first byte of a line that is not a dot).
    fn in_line(&mut self, b: u8) -> State {
        match b {
            b'\r' => State::Cr,
            b'\n' => {
                // Bare LF: normalised to CRLF.
                self.push(b"\r\n");
                State::LineStart { after_crlf: false }
            }
            _ => {
                self.push(&[b]);
                State::InLine
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size <= self.max_size as u64 {
            self.content.extend_from_slice(bytes);
        }
    }

    /// True when the content grew past the size cap (and was not kept).
    pub fn is_oversized(&self) -> bool {
        self.size > self.max_size as u64
    }

    /// The decoded message (empty when oversized).
    pub fn into_content(self) -> Vec<u8> {
        if self.is_oversized() {
            Vec::new()
        } else {
            self.content
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of every size from 1 to its length and checks each gives
    /// the same result: splitting must never change the outcome.
    fn decode(input: &[u8]) -> (Vec<u8>, usize) {
        let mut outcome = None;
        for step in 1..=input.len().max(1) {
            let mut d = DataDecoder::new(1 << 20);
            let mut total = 0;
            let mut done = None;
            for chunk in input.chunks(step) {
                match d.feed(chunk) {
                    Progress::NeedMore => total += chunk.len(),
                    Progress::Done { consumed } => {
                        done = Some(total + consumed);
                        break;
                    }
                }
            }
            let result = (d.into_content(), done.expect("end of data not found"));
            if let Some(previous) = &outcome {
                assert_eq!(previous, &result, "chunk size {step} changed the result");
            }
            outcome = Some(result);
        }
        outcome.unwrap()
    }

    #[test]
    fn table() {
        let rows: &[(&[u8], &[u8])] = &[
            (b"a\r\n.\r\n", b"a\r\n"),
            (b".\r\n", b""),
            (b"..\r\n.\r\n", b".\r\n"),
            (b"..x\r\n.\r\n", b".x\r\n"),
            (b".x\r\n.\r\n", b"x\r\n"),
            // bare LF lines become CRLF lines
            (b"a\nb\n\r\n.\r\n", b"a\r\nb\r\n\r\n"),
            // "\n.\r\n" is not the end: the line before ended in a bare LF
            (b"a\n.\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
            // "\r\n.\n" is not the end: the dot line ends in a bare LF
            (b"a\r\n.\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
            (b"a\n.\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
            // bare CR is an ordinary byte
            (b"a\rb\r\n.\r\n", b"a\rb\r\n"),
            (b"\r.\r\n.\r\n", b"\r.\r\n"),
            (b".\r.\r\n.\r\n", b"\r.\r\n"),
            (b".\r\r\n.\r\n", b"\r\r\n"),
            (b"a\r\r\n.\r\n", b"a\r\r\n"),
            // 8-bit bytes pass untouched
            (b"caf\xc3\xa9 \xff\r\n.\r\n", b"caf\xc3\xa9 \xff\r\n"),
        ];
        for (input, expected) in rows {
            let (content, consumed) = decode(input);
            assert_eq!(
                content,
                expected.to_vec(),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(consumed, input.len());
        }
    }

    #[test]
    fn stops_at_the_end_marker_and_leaves_the_rest() {
        let input = b"hi\r\n.\r\nQUIT\r\n";
        let (content, consumed) = decode(input);
        assert_eq!(content, b"hi\r\n");
        assert_eq!(&input[consumed..], b"QUIT\r\n");
    }

    #[test]
    fn smuggled_commands_stay_content() {
        let input =
            b"Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n\r\n.\r\n";
        let (content, _) = decode(input);
        assert_eq!(
            content,
            b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n\r\n"
        );
    }

    #[test]
    fn oversized_keeps_reading_to_the_end() {
        let mut d = DataDecoder::new(10);
        assert_eq!(d.feed(b"0123456789ABCDEF\r\n"), Progress::NeedMore);
        assert!(d.is_oversized());
        assert_eq!(d.feed(b"more\r\n.\r\nQUIT"), Progress::Done { consumed: 9 });
        assert!(d.into_content().is_empty());
    }

    #[test]
    fn exactly_at_the_cap_is_accepted() {
        let mut d = DataDecoder::new(6);
        assert_eq!(d.feed(b"1234\r\n.\r\n"), Progress::Done { consumed: 9 });
        assert!(!d.is_oversized());
        assert_eq!(d.into_content(), b"1234\r\n");
    }

    #[test]
    fn long_lines_pass_whole() {
        let line = vec![b'x'; 5000];
        let mut input = line.clone();
        input.extend_from_slice(b"\r\n.\r\n");
        let mut d = DataDecoder::new(1 << 20);
        assert!(matches!(d.feed(&input), Progress::Done { .. }));
        let mut expected = line;
        expected.extend_from_slice(b"\r\n");
        assert_eq!(d.into_content(), expected);
    }
}
