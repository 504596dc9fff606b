//! A watch over the raw bytes of an HTTP/1.x connection for the one
//! smuggling shape a parsed request no longer shows: a head with both
//! Content-Length and Transfer-Encoding.
//!
//! hyper frames such a request by Transfer-Encoding, drops the
//! Content-Length from the parsed head and closes the connection after the
//! response (RFC 9112 §6.3 allows that). RFC 9112 §6.1 also lets a server
//! refuse the request outright, which is what riis promises (400 and a
//! closed connection, as nginx answers). So riis follows the request stream
//! as it is read: heads line by line (only the two field names and the
//! length's digits are looked at), bodies skipped by their framing (a
//! length, or chunk sizes), and it notes the number of the first head that
//! had both fields. The request service then refuses the request with that
//! number ([`crate::strict::check_head`]).
//!
//! The watch costs a search for line ends per read and one byte comparison
//! per header line. It never decides anything else: bytes it cannot follow
//! (a malformed chunk line, say) are hyper's to refuse, and the watch stops
//! following a connection it has lost track of rather than guess.

/// Where the watch is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Before a request line; empty lines there are skipped (RFC 9112 §2.2).
    Idle,
    /// Inside a line whose bytes do not matter (the request line, other
    /// fields, chunk extensions); the next line is a field line.
    SkipLine,
    /// At the start of a field line, or of the empty line that ends a head.
    FieldStart,
    /// Matching a field name (with its colon): which, and bytes matched.
    Name(Field, u8),
    /// In Content-Length's value.
    Length,
    /// In a body of known length (bytes left in `length`).
    Body,
    /// In a chunk-size (hex digits so far in `length`).
    ChunkSize,
    /// After a chunk-size, to the end of its line.
    ChunkLine,
    /// In chunk data (bytes left in `length`).
    ChunkData,
    /// After chunk data, to the end of its line (the CRLF).
    ChunkEnd,
    /// At the start of a trailer line, or of the empty line that ends the
    /// message.
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Not following the connection (HTTP/2, or after a refused head).
    Off,
}

/// The fields the watch looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
}

impl Field {
    /// The field name in lower case, with the colon that ends it (no space
    /// may come before the colon; hyper refuses that).
    fn pattern(self) -> &'static [u8] {
        match self {
            Field::ContentLength => b"content-length:",
            Field::TransferEncoding => b"transfer-encoding:",
        }
    }
}

/// The watch of one connection.
#[derive(Debug, Clone)]
pub struct FramingWatch {
    step: Step,
    /// Heads completed on the connection.
    heads: u64,
    /// The current head has a Content-Length field.
    has_length: bool,
    /// The current head has a Transfer-Encoding field.
    has_coding: bool,
    /// Content-Length's value, the chunk-size being read, or the bytes
    /// left of a body or chunk.
    length: u64,
    /// The bytes read so far end inside a request line (no line end yet).
    in_request_line: bool,
    /// Bytes of that request line read so far.
    request_line_len: usize,
    /// Bytes followed so far.
    fed: u64,
    /// Where (in bytes followed) the head being read began; `None` between
    /// heads.
    head_from: Option<u64>,
}

impl Default for FramingWatch {
    fn default() -> Self {
        Self {
            step: Step::Idle,
            heads: 0,
            has_length: false,
            has_coding: false,
            length: 0,
            in_request_line: false,
            request_line_len: 0,
            fed: 0,
            head_from: None,
        }
    }
}

impl FramingWatch {
    /// Heads completed on the connection so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Stops following the connection (it speaks HTTP/2).
    pub fn stop(&mut self) {
        self.step = Step::Off;
        self.head_from = None;
    }

    /// The bytes of a head begun but not finished yet (0 between heads): a
    /// request arriving behind the one being served, whose head still
    /// owes the header-read timeout.
    pub fn unfinished_head(&self) -> u64 {
        self.head_from.map_or(0, |from| self.fed - from)
    }

    /// Whether the bytes read so far are whole requests (heads and bodies),
    /// nothing of a next one begun: an end of the stream here leaves no
    /// request cut short. `false` while the watch does not follow the
    /// connection.
    pub fn between_requests(&self) -> bool {
        self.step == Step::Idle
    }

    /// The bytes of the request line read so far, when the bytes read end
    /// inside one. Past the limit, hyper would read on until its buffer for
    /// a head is full and answer 431 (header fields too large); the line is
    /// a request target too long, which riis answers with 414 as nginx and
    /// IIS do.
    pub fn unfinished_request_line(&self) -> Option<usize> {
        // (Cheapest test first: it runs on every read.)
        (self.in_request_line && self.step == Step::SkipLine).then_some(self.request_line_len)
    }

    /// Follows `bytes`, the next bytes read from the connection. Returns
    /// the number (from 1) of a head that had both Content-Length and
    /// Transfer-Encoding, when `bytes` completed one; the watch then stops,
    /// since the connection ends with that request.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<u64> {
        let base = self.fed;
        self.fed += bytes.len() as u64;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.step {
                Step::Off => return None,
                Step::Idle => {
                    if b != b'\r' && b != b'\n' {
                        self.step = Step::SkipLine;
                        self.in_request_line = true;
                        self.request_line_len = 0;
                        self.head_from = Some(base + i as u64);
                        continue;
                    }
                }
                Step::SkipLine => {
                    // The hot path: from line end to line end while the
                    // next line starts with neither field name, and the
                    // head's end (CRLF CRLF) handled here too.
                    loop {
                        let Some(end) = line_end(bytes, i) else {
                            // No line end in this read: the next one goes on.
                            if self.in_request_line {
                                self.request_line_len =
                                    self.request_line_len.saturating_add(bytes.len() - i);
                            }
                            return None;
                        };
                        i = end + 1;
                        self.in_request_line = false;
                        match bytes.get(i..).unwrap_or_default() {
                            [b'\r', b'\n', ..] | [b'\n', ..] => {
                                i += if bytes[i] == b'\r' { 2 } else { 1 };
                                if let Some(head) = self.end_head() {
                                    return Some(head);
                                }
                                break;
                            }
                            [b'\r' | b'c' | b'C' | b't' | b'T', ..] | [] => {
                                self.step = Step::FieldStart;
                                break;
                            }
                            _ => {}
                        }
                    }
                    continue;
                }
                Step::ChunkLine | Step::ChunkEnd | Step::TrailerLine => {
                    i = line_end(bytes, i)?;
                    self.step = match self.step {
                        Step::ChunkLine if self.length == 0 => Step::TrailerStart,
                        Step::ChunkLine => Step::ChunkData,
                        Step::ChunkEnd => {
                            self.length = 0;
                            Step::ChunkSize
                        }
                        _ => Step::TrailerStart,
                    };
                }
                Step::FieldStart => match b {
                    // hyper refuses a CR that does not end a line.
                    b'\r' => {}
                    b'\n' => {
                        if let Some(head) = self.end_head() {
                            return Some(head);
                        }
                    }
                    _ => {
                        self.step = match b.to_ascii_lowercase() {
                            b'c' => Step::Name(Field::ContentLength, 1),
                            b't' => Step::Name(Field::TransferEncoding, 1),
                            _ => Step::SkipLine,
                        };
                    }
                },
                Step::Name(field, matched) => {
                    let pattern = field.pattern();
                    if b.to_ascii_lowercase() != pattern[usize::from(matched)] {
                        // Another field: this byte may end the line.
                        self.step = Step::SkipLine;
                        continue;
                    }
                    let matched = matched + 1;
                    self.step = if usize::from(matched) < pattern.len() {
                        Step::Name(field, matched)
                    } else if field == Field::ContentLength {
                        self.has_length = true;
                        self.length = 0;
                        Step::Length
                    } else {
                        self.has_coding = true;
                        Step::SkipLine
                    };
                }
                Step::Length => match b {
                    b' ' | b'\t' => {}
                    b'0'..=b'9' => {
                        // hyper refuses lengths that overflow; the watch
                        // only has to stay in step with valid ones.
                        self.length = self
                            .length
                            .saturating_mul(10)
                            .saturating_add(u64::from(b - b'0'));
                    }
                    _ => {
                        self.step = Step::SkipLine;
                        continue;
                    }
                },
                Step::Body | Step::ChunkData => {
                    let take = self.length.min((bytes.len() - i) as u64);
                    self.length -= take;
                    // `take` is at most what is left of `bytes`.
                    i += take as usize;
                    if self.length == 0 {
                        self.step = if self.step == Step::Body {
                            Step::Idle
                        } else {
                            Step::ChunkEnd
                        };
                    }
                    continue;
                }
                Step::ChunkSize => match (b as char).to_digit(16) {
                    Some(digit) => {
                        let Some(length) = self
                            .length
                            .checked_mul(16)
                            .and_then(|l| l.checked_add(u64::from(digit)))
                        else {
                            // hyper refuses it and closes.
                            self.step = Step::Off;
                            return None;
                        };
                        self.length = length;
                    }
                    None => {
                        self.step = Step::ChunkLine;
                        continue;
                    }
                },
                Step::TrailerStart => match b {
                    b'\r' => {}
                    b'\n' => self.step = Step::Idle,
                    _ => self.step = Step::TrailerLine,
                },
            }
            i += 1;
        }
        None
    }

    /// The empty line after a head: notes a conflict, else moves on to the
    /// body its framing announces.
    fn end_head(&mut self) -> Option<u64> {
        self.heads += 1;
        self.head_from = None;
        let (length, coding) = (self.has_length, self.has_coding);
        self.has_length = false;
        self.has_coding = false;
        if length && coding {
            self.step = Step::Off;
            return Some(self.heads);
        }
        self.step = if coding {
            self.length = 0;
            Step::ChunkSize
        } else if length && self.length > 0 {
            Step::Body
        } else {
            Step::Idle
        };
        None
    }
}

/// The position of the next LF in `bytes` at or after `from`.
///
/// Most lines of a request head are short, where memchr's vector search
/// costs more to set up than it saves: the first 64 bytes of a line are
/// searched here a word (8 bytes) at a time, the rest of a longer line by
/// memchr.
fn line_end(bytes: &[u8], from: usize) -> Option<usize> {
    const NEAR: usize = 64;
    const LF: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    let near_end = bytes.len().min(from + NEAR);
    let mut at = from;
    while let Some(word) = bytes.get(at..at + 8).filter(|_| at + 8 <= near_end) {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // Bytes of `x` that are zero were LF; each gets its high bit set
        // in `found` and no other byte does (no carry crosses a byte).
        let x = word ^ LF;
        let found = !(((x & LOW7) + LOW7) | x | LOW7);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if let Some(k) = bytes[at..near_end].iter().position(|&b| b == b'\n') {
        return Some(at + k);
    }
    memchr::memchr(b'\n', &bytes[near_end..]).map(|k| near_end + k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` whole and in every split into two reads, and one byte
    /// at a time; all must agree.
    fn watch(stream: &[u8]) -> Option<u64> {
        let whole = FramingWatch::default().feed(stream);
        for cut in 0..=stream.len() {
            let mut w = FramingWatch::default();
            let got = w.feed(&stream[..cut]).or_else(|| w.feed(&stream[cut..]));
            assert_eq!(got, whole, "split at {cut}");
        }
        let mut w = FramingWatch::default();
        let bytewise = stream.iter().find_map(|b| w.feed(std::slice::from_ref(b)));
        assert_eq!(bytewise, whole, "byte by byte");
        whole
    }

    #[test]
    fn an_unfinished_request_line_is_measured() {
        let mut w = FramingWatch::default();
        assert_eq!(w.unfinished_request_line(), None);
        w.feed(b"\r\nGET /aaaa");
        assert_eq!(w.unfinished_request_line(), Some(9));
        w.feed(b"aaaa");
        assert_eq!(w.unfinished_request_line(), Some(13));
        // Its end came (hyper parses it, and the limits are checked on the
        // parsed head); a long field line is not a request line.
        w.feed(b" HTTP/1.1\r\nUser-Agent: a-field-longer-than-the-line");
        assert_eq!(w.unfinished_request_line(), None);
        w.feed(b"\r\n\r\nGET /b");
        assert_eq!(w.unfinished_request_line(), Some(6));
        // The next request's line is counted from its own start.
        w.feed(b"bbb");
        assert_eq!(w.unfinished_request_line(), Some(9));
    }

    #[test]
    fn an_unfinished_head_is_measured_across_reads() {
        let mut w = FramingWatch::default();
        w.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\n");
        assert_eq!(w.unfinished_head(), 17);
        w.feed(b"Host: a\r\n");
        assert_eq!(w.unfinished_head(), 26);
        w.feed(b"\r\n");
        assert_eq!(w.unfinished_head(), 0);
        // A body is no head.
        w.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
        assert_eq!(w.unfinished_head(), 0);
        // Empty lines before a request line are not part of its head.
        w.feed(b"cde\r\nGE");
        assert_eq!(w.unfinished_head(), 2);
    }

    #[test]
    fn both_fields_in_either_order_and_case() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHOST: a\r\ntransfer-ENCODING: chunked\r\ncontent-length:5\r\n\r\n",
            b"POST / HTTP/1.1\nHost: a\nContent-Length: 0\nTransfer-Encoding: chunked\n\n",
            // Lines longer than the plain loop's reach.
            b"POST /a-path-long-enough-to-need-memchr-for-its-line-end HTTP/1.1\r\n\
              User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n\
              Transfer-Encoding: gzip, deflate, br, zstd, chunked\r\nContent-Length: 3\r\n\r\n",
        ] {
            assert_eq!(watch(head), Some(1), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn one_field_or_lookalikes_are_fine() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Lengthy: 1\r\nTransfer-Encodings: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /content-length:1/transfer-encoding: HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(watch(head), None, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn bodies_are_skipped_by_their_framing() {
        // The fields inside bodies are data, not heads.
        let data = "\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n{data}\
             POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
             {len:x};ext=1\r\n{data}\r\n0\r\nX-Trailer: 1\r\n\r\n\
             GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            len = data.len()
        );
        let stream = stream.as_bytes();
        assert_eq!(watch(stream), None);
        // And the heads after them are still read.
        let mut smuggled = stream.to_vec();
        smuggled.extend_from_slice(
            b"\r\nPOST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(watch(&smuggled), Some(4));
    }

    #[test]
    fn line_ends_are_found_at_every_offset_and_length() {
        for len in 0..200 {
            for lf in (0..len).step_by(3).chain([len]) {
                let mut bytes = vec![b'a'; len];
                if lf < len {
                    bytes[lf] = b'\n';
                }
                // High bytes next to the LF must not be mistaken for it.
                if lf > 0 && lf < len {
                    bytes[lf - 1] = 0x8a;
                }
                for from in [0, 1, 7, 8, 9].into_iter().filter(|&f| f <= lf.min(len)) {
                    let want = (lf < len).then_some(lf);
                    assert_eq!(
                        line_end(&bytes, from),
                        want,
                        "len {len} lf {lf} from {from}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_stopped_watch_reports_nothing() {
        let mut w = FramingWatch::default();
        w.stop();
        assert_eq!(
            w.feed(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            None
        );
    }
}
