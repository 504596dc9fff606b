//! A watch over the raw bytes of an HTTP/2 connection for frame floods that
//! carry nothing: endless PRIORITY, `WINDOW_UPDATE +1`, PING or frames of
//! unknown types. Each is valid, and h2 processes each; a client sending
//! them as fast as it can kept a worker's core busy for as long as the
//! connection lived (the CVE-2019-9513/9518 class; nginx closes such a
//! connection: "http2 flood detected").
//!
//! nginx's rule, as riis applies it: the bytes the client sent are set
//! against the bytes of what it asked for (the payloads of HEADERS,
//! CONTINUATION and DATA frames); past eight times those, and 1 MiB more,
//! the connection is a flood and is closed. An ordinary client's other
//! frames are a few bytes per request and per window of body; what riis
//! sends counts for a 256th of its bytes too, since a client taking a
//! large answer through a small window sends a WINDOW_UPDATE or two per
//! window it read (26 bytes per 32 KiB at the protocol's default: 8 MiB of
//! them for a 10 GB download, which nginx's rule alone would close).
//!
//! The watch reads the 9-byte frame headers only and skips payloads by
//! their length; it follows the client's preface first.

/// The client's connection preface (RFC 9113 §3.4), before the frames.
const PREFACE_LEN: u64 = 24;

/// What the client may send beyond eight times its payloads, in bytes of
/// everything sent (nginx's 1 MiB, times eight).
const SLACK: u64 = 8 * 1024 * 1024;

/// The watch of one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct FloodWatch {
    /// Bytes of the preface still to skip.
    preface_left: u64,
    /// The frame header being read, and how much of it.
    header: [u8; 9],
    header_len: usize,
    /// Bytes of the current frame's payload still to skip.
    payload_left: u64,
    /// Every byte the client sent.
    total: u64,
    /// The payload bytes of HEADERS, CONTINUATION and DATA frames.
    useful: u64,
}

impl Default for FloodWatch {
    fn default() -> Self {
        Self {
            preface_left: PREFACE_LEN,
            header: [0; 9],
            header_len: 0,
            payload_left: 0,
            total: 0,
            useful: 0,
        }
    }
}

impl FloodWatch {
    /// `bytes` of answers went to the client: its WINDOW_UPDATE frames for
    /// them are no flood.
    pub fn credit_sent(&mut self, bytes: usize) {
        self.useful += bytes as u64 / 256;
    }

    /// Follows `bytes`, the next the client sent; whether the connection
    /// is now a flood.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        self.total += bytes.len() as u64;
        let skip = self.preface_left.min(bytes.len() as u64);
        self.preface_left -= skip;
        bytes = &bytes[skip as usize..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            let n = (9 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < 9 {
                break;
            }
            self.header_len = 0;
            let length = u64::from(u32::from_be_bytes([
                0,
                self.header[0],
                self.header[1],
                self.header[2],
            ]));
            // DATA, HEADERS, CONTINUATION: what the client asks for.
            if matches!(self.header[3], 0x0 | 0x1 | 0x9) {
                self.useful += length;
            }
            self.payload_left = length;
        }
        self.total > 8 * self.useful + SLACK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, 0, 0, 0, 0, 1]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_that_carry_nothing_are_a_flood_past_the_slack() {
        let mut watch = FloodWatch::default();
        assert!(!watch.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        let window_update = frame(0x8, &[0, 0, 0, 1]);
        let mut sent = 0;
        while !watch.feed(&window_update) {
            sent += window_update.len();
            assert!(sent < 9 * 1024 * 1024, "never a flood");
        }
        assert!(sent > 8 * 1024 * 1024 - 64, "{sent}");
    }

    /// A download through the protocol's default window: a WINDOW_UPDATE
    /// for the stream and one for the connection per 32 KiB taken.
    #[test]
    fn a_long_download_through_a_small_window_is_no_flood() {
        let mut watch = FloodWatch::default();
        assert!(!watch.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!watch.feed(&frame(0x1, &[7; 30])));
        let updates = [frame(0x8, &[0, 0, 128, 0]), frame(0x8, &[0, 0, 128, 0])].concat();
        // 20 GB in 32 KiB windows.
        for _ in 0..(20u64 << 30) / 32768 {
            watch.credit_sent(32768);
            assert!(!watch.feed(&updates));
        }
    }

    #[test]
    fn requests_and_their_bodies_are_no_flood() {
        let mut watch = FloodWatch::default();
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // Headers of 40 bytes, a 16 KiB DATA frame and the client's
        // WINDOW_UPDATE and PING now and then, many times over, fed in
        // pieces that cut frames anywhere.
        for _ in 0..2000 {
            stream.extend(frame(0x1, &[7; 40]));
            stream.extend(frame(0x0, &[1; 16384]));
            stream.extend(frame(0x8, &[0, 0, 0, 1]));
            stream.extend(frame(0x6, &[0; 8]));
        }
        for piece in stream.chunks(1000) {
            assert!(!watch.feed(piece));
        }
        assert_eq!(watch.total, stream.len() as u64);
        assert_eq!(watch.useful, 2000 * (40 + 16384));
        // Then the same client floods: closed once past eight times its
        // payloads and the slack.
        let priority = frame(0x2, &[0, 0, 0, 0, 16]);
        let mut flooded = false;
        for _ in 0..(8 * 2000 * 16424 / 14 + SLACK as usize) {
            if watch.feed(&priority) {
                flooded = true;
                break;
            }
        }
        assert!(flooded);
    }
}
