//! The DATA reader: CRLF framing, dot-unstuffing, the size cap, bare LF and bare CR
//! normalising, and the in-flight budget.
//!
//! Bytes are fed in whatever chunks the socket delivers; the decoder keeps only a few bits
//! of state between chunks, so a line may be split anywhere (even between CR and LF).
//!
//! The rules (RFC 5321 4.5.2, Postfix 3.9's `smtpd_forbid_bare_newline = normalize`, and
//! SPEC.md section 3):
//! - Only `<CRLF>.<CRLF>` ends DATA: a `.` line ends the message only when the line before
//!   it ended in CRLF and the `.` line itself ends in CRLF.
//! - A line ending in a bare LF, or in a bare CR (a CR not followed by LF), is taken as a
//!   CRLF line: the message gets `CRLF` there. Hence no bare LF, no bare CR and no lone `.`
//!   line reaches the upstream unstuffed (SMTP smuggling), and a header line cannot hide
//!   behind a bare CR: what the relay inspects is what the upstream gets.
//! - A line beginning with `.` that has other characters loses that first `.`. A lone `.`
//!   line that does not end DATA (bare LF or bare CR around it) has nothing else on it and
//!   is kept as `.`; the upstream client stuffs it again.
//! - All other bytes, 8-bit ones and NUL included, pass untouched.
//! - Past `max_size` octets, or when the in-flight budget has no room for the buffer, the
//!   content is no longer stored, but reading goes on to the end of DATA, so that the
//!   client gets its 552 or 452 in step.

use super::budget::Reservation;

/// The first allocation of a buffer that was not sized from `SIZE=`.
const FIRST_ALLOCATION: usize = 8 * 1024;

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
    /// Inside a line, just after a CR (not yet stored: CRLF or bare CR, both end the line).
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

/// What a finished DATA gave.
#[derive(Debug)]
pub enum Decoded {
    /// The message, and the share of the in-flight budget its buffer holds.
    Message {
        content: Vec<u8>,
        reservation: Reservation,
    },
    /// Larger than `max_size`: nothing was kept (552 5.3.4).
    TooLong,
    /// The in-flight budget had no room for it: nothing was kept (452 4.3.1).
    NoRoom,
}

/// Decodes one message's DATA into its content.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    content: Vec<u8>,
    max_size: usize,
    /// Size of the decoded content, counted on even after it stops being stored.
    size: u64,
    /// The budget share of `content`'s allocation.
    reservation: Reservation,
    /// The budget refused to grow: nothing more is stored.
    starved: bool,
}

impl DataDecoder {
    /// A decoder outside any budget.
    pub fn new(max_size: usize) -> Self {
        DataDecoder::with_budget(max_size, None, Reservation::detached())
    }

    /// A decoder whose buffer is paid for from `reservation` (grown as the buffer grows).
    /// With `size_hint` (the `SIZE=` of MAIL), the buffer is allocated once at that size,
    /// bounded by `max_size`, when the budget has room for it.
    pub fn with_budget(
        max_size: usize,
        size_hint: Option<usize>,
        mut reservation: Reservation,
    ) -> Self {
        let mut content = Vec::new();
        if let Some(hint) = size_hint.map(|h| h.min(max_size)).filter(|&h| h > 0)
            && reservation.grow_to(hint as u64)
        {
            content.reserve_exact(hint);
        }
        DataDecoder {
            state: State::LineStart { after_crlf: true },
            content,
            max_size,
            size: 0,
            reservation,
            starved: false,
        }
    }

    /// Feeds a chunk of the byte stream that follows the 354 reply.
    pub fn feed(&mut self, chunk: &[u8]) -> Progress {
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            i += 1;
            self.state = match self.state {
                State::LineStart { after_crlf } => self.line_start(b, after_crlf),
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
                    _ => {
                        // A lone "." ending in a bare CR: content, never the end; `b`
                        // begins the next line.
                        self.push(b".\r\n");
                        self.line_start(b, false)
                    }
                },
                State::InLine => self.in_line(b),
                State::Cr => match b {
                    b'\n' => {
                        self.push(b"\r\n");
                        State::LineStart { after_crlf: true }
                    }
                    _ => {
                        // Bare CR: normalised to CRLF; `b` begins the next line.
                        self.push(b"\r\n");
                        self.line_start(b, false)
                    }
                },
            };
            // Plain bytes in the middle of a line are copied in one run, not one at a time.
            if self.state == State::InLine {
                let rest = chunk.get(i..).unwrap_or_default();
                let run = rest
                    .iter()
                    .position(|&c| c == b'\r' || c == b'\n')
                    .unwrap_or(rest.len());
                self.push(rest.get(..run).unwrap_or_default());
                i += run;
            }
        }
        Progress::NeedMore
    }

    /// The first byte of a line.
    fn line_start(&mut self, b: u8, after_crlf: bool) -> State {
        match b {
            b'.' => State::Dot { after_crlf },
            _ => self.in_line(b),
        }
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
        if self.size > self.max_size as u64 || self.starved {
            return;
        }
        let needed = self.content.len() + bytes.len();
        if needed > self.content.capacity() && !self.make_room(needed) {
            self.starve();
            return;
        }
        self.content.extend_from_slice(bytes);
    }

    /// Grows the buffer (and its reservation) to hold `needed` bytes: doubling, never past
    /// `max_size`; at least `needed` exactly when doubling does not fit the budget.
    fn make_room(&mut self, needed: usize) -> bool {
        let doubled = self
            .content
            .capacity()
            .saturating_mul(2)
            .max(FIRST_ALLOCATION)
            .min(self.max_size)
            .max(needed);
        for target in [doubled, needed] {
            if self.reservation.grow_to(target as u64) {
                self.content.reserve_exact(target - self.content.len());
                return true;
            }
        }
        false
    }

    /// No room in the budget: drop what was kept and keep reading without storing.
    fn starve(&mut self) {
        self.starved = true;
        self.content = Vec::new();
        self.reservation.release();
    }

    /// True when the content grew past the size cap (and was not kept).
    pub fn is_oversized(&self) -> bool {
        self.size > self.max_size as u64
    }

    /// The outcome, once [`Progress::Done`] was returned.
    pub fn finish(self) -> Decoded {
        if self.is_oversized() {
            Decoded::TooLong
        } else if self.starved {
            Decoded::NoRoom
        } else {
            Decoded::Message {
                content: self.content,
                reservation: self.reservation,
            }
        }
    }

    /// The decoded message (empty when oversized or refused by the budget).
    pub fn into_content(self) -> Vec<u8> {
        match self.finish() {
            Decoded::Message { content, .. } => content,
            Decoded::TooLong | Decoded::NoRoom => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::budget::InflightBudget;

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
            // bare CR lines become CRLF lines too
            (b"a\rb\r\n.\r\n", b"a\r\nb\r\n"),
            // "\r.\r\n" after a bare CR is not the end
            (b"a\rb\r.\r\n.\r\n", b"a\r\nb\r\n.\r\n"),
            (b"\r.\r\n.\r\n", b"\r\n.\r\n"),
            (b".\r.\r\n.\r\n", b".\r\n.\r\n"),
            (b".\r\r\n.\r\n", b".\r\n\r\n"),
            (b"a\r\r\n.\r\n", b"a\r\n\r\n"),
            (b"..\rx\r\n.\r\n", b".\r\nx\r\n"),
            // "\r.\r" is a lone dot line, content, never the end
            (b"a\r.\rb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
            // "\r\n.\r" + "\n" after a bare CR is not the end either
            (b"a\r\n.\r.\r\n.\r\n", b"a\r\n.\r\n.\r\n"),
            // a header behind a bare CR becomes a header line of its own
            (
                b"Subject: a\rX-SES-CONFIGURATION-SET: evil\r\n\r\nb\r\n.\r\n",
                b"Subject: a\r\nX-SES-CONFIGURATION-SET: evil\r\n\r\nb\r\n",
            ),
            // NUL passes untouched
            (b"a\0b\r\n.\r\n", b"a\0b\r\n"),
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
    fn bare_cr_cannot_smuggle_a_second_message() {
        let input = b"Subject: x\r\n\r\nbody\r.\rMAIL FROM:<evil@x>\r\nDATA\r\n\r\n.\r\n";
        let (content, consumed) = decode(input);
        assert_eq!(
            content,
            b"Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<evil@x>\r\nDATA\r\n\r\n"
        );
        assert_eq!(consumed, input.len());
    }

    /// Every input over a small alphabet, up to 7 bytes, then the end marker: every chunking
    /// gives the same result, and the content has CRLF line endings only.
    #[test]
    fn every_short_input_decodes_to_clean_lines() {
        const ALPHABET: [u8; 4] = [b'a', b'.', b'\r', b'\n'];
        for len in 0..=7u32 {
            for n in 0..4usize.pow(len) {
                let mut input: Vec<u8> = (0..len)
                    .map(|k| ALPHABET[(n / 4usize.pow(k)) % 4])
                    .collect();
                input.extend_from_slice(b"\r\n.\r\n");
                let (content, _) = decode(&input);
                for (k, &b) in content.iter().enumerate() {
                    match b {
                        b'\r' => assert_eq!(content.get(k + 1), Some(&b'\n'), "{input:?}"),
                        b'\n' => assert_eq!(content.get(k.wrapping_sub(1)), Some(&b'\r')),
                        _ => {}
                    }
                }
                assert!(
                    content.is_empty() || content.ends_with(b"\r\n"),
                    "{input:?}"
                );
            }
        }
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

    #[test]
    fn the_buffer_is_paid_for_from_the_budget() {
        let budget = InflightBudget::new(1 << 20);
        let mut d = DataDecoder::with_budget(1 << 20, None, budget.reservation());
        let line = vec![b'x'; 20_000];
        assert_eq!(d.feed(&line), Progress::NeedMore);
        assert!(budget.in_use() >= 20_000);
        assert_eq!(d.feed(b"\r\n.\r\n"), Progress::Done { consumed: 5 });
        let Decoded::Message {
            content,
            reservation,
        } = d.finish()
        else {
            panic!("the message fits");
        };
        assert_eq!(content.len(), 20_002);
        assert!(reservation.bytes() as usize >= content.capacity().min(20_002));
        assert_eq!(budget.in_use(), reservation.bytes());
        drop(reservation);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn size_hint_allocates_once() {
        let budget = InflightBudget::new(1 << 20);
        let mut d = DataDecoder::with_budget(1 << 20, Some(30_000), budget.reservation());
        assert_eq!(budget.in_use(), 30_000);
        let before = d.content.as_ptr();
        for _ in 0..100 {
            d.feed(&[b'y'; 298]);
            d.feed(b"\r\n");
        }
        assert_eq!(
            d.content.as_ptr(),
            before,
            "no reallocation within the hint"
        );
        // A hint above max_size is bounded by it.
        let d = DataDecoder::with_budget(1000, Some(usize::MAX), budget.reservation());
        assert_eq!(d.reservation.bytes(), 1000);
    }

    #[test]
    fn no_room_reads_to_the_end_and_keeps_nothing() {
        let budget = InflightBudget::new(10_000);
        let _other = budget.try_reserve(5_000).unwrap();
        let mut d = DataDecoder::with_budget(1 << 20, Some(50_000), budget.reservation());
        assert_eq!(
            budget.in_use(),
            5_000,
            "the hint did not fit: nothing taken"
        );
        assert_eq!(d.feed(&[b'z'; 8_000]), Progress::NeedMore);
        assert_eq!(budget.in_use(), 5_000, "starved: its share given back");
        assert_eq!(d.feed(b"\r\n.\r\nQUIT"), Progress::Done { consumed: 5 });
        assert!(matches!(d.finish(), Decoded::NoRoom));
        assert_eq!(budget.in_use(), 5_000);
    }

    #[test]
    fn too_long_wins_over_no_room() {
        let budget = InflightBudget::new(10);
        let mut d = DataDecoder::with_budget(20, None, budget.reservation());
        d.feed(&[b'z'; 30]);
        d.feed(b"\r\n.\r\n");
        assert!(matches!(d.finish(), Decoded::TooLong));
    }
}
