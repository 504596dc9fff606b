//! The FastCGI 1.0 record layer, as far as a web server's side of the
//! Responder role needs it: records out (begin, parameters, input, abort)
//! and records in (output, error output, end).

use riis_pipeline::bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version every record carries.
const VERSION: u8 = 1;
/// The one request id riis uses per connection: it never multiplexes.
pub(super) const REQUEST_ID: u16 = 1;
/// A record header's size.
const HEADER_LEN: usize = 8;
/// The most content one record holds.
const MAX_CONTENT: usize = 65_535;
/// Input is cut at a multiple of 8 below [`MAX_CONTENT`], so records need
/// no padding.
const INPUT_CONTENT: usize = 65_528;

/// Record types (FastCGI specification §8).
pub(super) mod kind {
    pub(in super::super) const BEGIN_REQUEST: u8 = 1;
    pub(in super::super) const END_REQUEST: u8 = 3;
    pub(in super::super) const PARAMS: u8 = 4;
    pub(in super::super) const STDIN: u8 = 5;
    pub(in super::super) const STDOUT: u8 = 6;
    pub(in super::super) const STDERR: u8 = 7;
}

/// `FCGI_RESPONDER`.
const ROLE_RESPONDER: u16 = 1;
/// `FCGI_KEEP_CONN`: the application leaves the connection open after the
/// request.
const FLAG_KEEP_CONN: u8 = 1;

/// Appends one record's header for `len` bytes of content.
fn header(out: &mut BytesMut, record: u8, len: usize) {
    debug_assert!(len <= MAX_CONTENT);
    out.put_u8(VERSION);
    out.put_u8(record);
    out.put_u16(REQUEST_ID);
    out.put_u16(len as u16);
    out.put_u8(0); // padding
    out.put_u8(0); // reserved
}

/// Appends `FCGI_BEGIN_REQUEST` for a Responder.
pub(super) fn begin_request(out: &mut BytesMut, keep_connection: bool) {
    header(out, kind::BEGIN_REQUEST, 8);
    out.put_u16(ROLE_RESPONDER);
    out.put_u8(if keep_connection { FLAG_KEEP_CONN } else { 0 });
    out.put_bytes(0, 5);
}

/// Name-value pairs, encoded, with where each ends, so that
/// [`params`] can cut them into records between pairs.
#[derive(Default)]
pub(super) struct Pairs {
    encoded: BytesMut,
    /// The offset in `encoded` where each pair ends, in order.
    ends: Vec<usize>,
}

impl Pairs {
    /// Adds one name-value pair.
    pub(super) fn add(&mut self, name: &[u8], value: &[u8]) {
        length(&mut self.encoded, name.len());
        length(&mut self.encoded, value.len());
        self.encoded.put_slice(name);
        self.encoded.put_slice(value);
        self.ends.push(self.encoded.len());
    }

    /// The encoded pairs' size.
    pub(super) fn len(&self) -> usize {
        self.encoded.len()
    }
}

/// Appends the pairs as `FCGI_PARAMS` records, then the empty record that
/// ends the stream. Each record starts on a pair: `php-fpm` and `php-cgi`
/// decode each record on its own and reset a request whose record ends
/// inside a pair. Only a pair larger than a record spans records (the
/// specification allows it; PHP refuses it anyway), in records of its own.
pub(super) fn params(out: &mut BytesMut, pairs: &Pairs) {
    let data = &pairs.encoded[..];
    let mut start = 0;
    let mut ends = pairs.ends.iter().copied().peekable();
    while let Some(&first) = ends.peek() {
        if first - start > MAX_CONTENT {
            // A pair too large for one record.
            stream(out, kind::PARAMS, &data[start..first], MAX_CONTENT);
            ends.next();
            start = first;
            continue;
        }
        let mut end = start;
        while let Some(next) = ends.next_if(|&e| e - start <= MAX_CONTENT) {
            end = next;
        }
        header(out, kind::PARAMS, end - start);
        out.put_slice(&data[start..end]);
        start = end;
    }
    header(out, kind::PARAMS, 0);
}

/// A name-value pair length: one byte below 128, else four with the high
/// bit set.
fn length(out: &mut BytesMut, len: usize) {
    if len < 128 {
        out.put_u8(len as u8);
    } else {
        out.put_u32(len as u32 | 0x8000_0000);
    }
}

/// Appends `data` as records of `record`, at most `max` bytes each.
fn stream(out: &mut BytesMut, record: u8, data: &[u8], max: usize) {
    for piece in data.chunks(max) {
        header(out, record, piece.len());
        out.put_slice(piece);
    }
}

/// Appends the request body as `FCGI_STDIN` records.
pub(super) fn input(out: &mut BytesMut, data: &[u8]) {
    stream(out, kind::STDIN, data, INPUT_CONTENT);
}

/// Appends the empty `FCGI_STDIN` record that ends the body.
pub(super) fn end_of_input(out: &mut BytesMut) {
    header(out, kind::STDIN, 0);
}

/// A record from the application.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Record {
    /// `FCGI_STDOUT` content (empty: the output ended).
    Output(Bytes),
    /// `FCGI_STDERR` content.
    ErrorOutput(Bytes),
    /// `FCGI_END_REQUEST`: the application's exit status and the
    /// protocol status.
    End {
        app_status: u32,
        protocol_status: u8,
    },
    /// A record for another request id or of a type a Responder's web
    /// server does not act on (management records): skipped.
    Other,
}

/// `FCGI_END_REQUEST`'s protocol statuses.
pub(super) mod protocol_status {
    pub(in super::super) const REQUEST_COMPLETE: u8 = 0;
    pub(in super::super) const CANT_MPX_CONN: u8 = 1;
    pub(in super::super) const OVERLOADED: u8 = 2;
    pub(in super::super) const UNKNOWN_ROLE: u8 = 3;
}

/// Takes one whole record off the front of `buf`: `Ok(None)` while it is
/// incomplete, an error for what is not FastCGI.
pub(super) fn next_record(buf: &mut BytesMut) -> Result<Option<Record>, String> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(format!(
            "the application's answer is not FastCGI (version byte {})",
            buf[0]
        ));
    }
    let record = buf[1];
    let id = u16::from_be_bytes([buf[2], buf[3]]);
    let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    let padding = usize::from(buf[6]);
    if buf.len() < HEADER_LEN + len + padding {
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let content = buf.split_to(len).freeze();
    buf.advance(padding);
    // Id 0 is the management records' (FCGI_GET_VALUES_RESULT,
    // FCGI_UNKNOWN_TYPE); any other than the request's is an answer to a
    // request this connection never carried: the application is confused,
    // and its answer to this one may never come (nginx: "upstream sent
    // unexpected FastCGI request id").
    if id == 0 {
        return Ok(Some(Record::Other));
    }
    if id != REQUEST_ID {
        return Err(format!(
            "the application answered for request id {id}, not {REQUEST_ID}"
        ));
    }
    Ok(Some(match record {
        kind::STDOUT => Record::Output(content),
        kind::STDERR => Record::ErrorOutput(content),
        kind::END_REQUEST => {
            if content.len() < 8 {
                return Err("the application's FCGI_END_REQUEST is too short".into());
            }
            Record::End {
                app_status: u32::from_be_bytes([content[0], content[1], content[2], content[3]]),
                protocol_status: content[4],
            }
        }
        _ => Record::Other,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The application's side: reads back the records a request was
    /// written as.
    fn records(mut buf: BytesMut) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            assert_eq!(buf[0], VERSION);
            assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), REQUEST_ID);
            let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
            let padding = usize::from(buf[6]);
            out.push((buf[1], buf[8..8 + len].to_vec()));
            buf.advance(8 + len + padding);
        }
        out
    }

    #[test]
    fn a_request_is_begin_params_and_input() {
        let mut out = BytesMut::new();
        begin_request(&mut out, true);
        let mut pairs = Pairs::default();
        pairs.add(b"SCRIPT_NAME", b"/a.php");
        pairs.add(b"LONG", &[b'v'; 200]);
        params(&mut out, &pairs);
        input(&mut out, b"body");
        end_of_input(&mut out);
        let recs = records(out);
        assert_eq!(recs[0], (kind::BEGIN_REQUEST, vec![0, 1, 1, 0, 0, 0, 0, 0]));
        assert_eq!(recs[1].0, kind::PARAMS);
        let p = &recs[1].1;
        assert_eq!(&p[..2], &[11, 6]);
        assert_eq!(&p[2..19], b"SCRIPT_NAME/a.php");
        // A value of 200 bytes has a four-byte length.
        assert_eq!(&p[19..25], &[4, 0x80, 0, 0, 200, b'L']);
        assert_eq!(recs[2], (kind::PARAMS, vec![]));
        assert_eq!(recs[3], (kind::STDIN, b"body".to_vec()));
        assert_eq!(recs[4], (kind::STDIN, vec![]));
    }

    /// Decodes one record's pairs on their own, as `php-fpm` does: `None`
    /// if the record ends inside a pair.
    fn decode_alone(mut content: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        fn len(data: &mut &[u8]) -> Option<usize> {
            let first = *data.first()?;
            if first < 128 {
                *data = &data[1..];
                return Some(usize::from(first));
            }
            let bytes = data.get(..4)?;
            let n = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x7fff_ffff;
            *data = &data[4..];
            Some(n as usize)
        }
        let mut found = Vec::new();
        while !content.is_empty() {
            let name_len = len(&mut content)?;
            let value_len = len(&mut content)?;
            let name = content.get(..name_len)?.to_vec();
            content = &content[name_len..];
            let value = content.get(..value_len)?.to_vec();
            content = &content[value_len..];
            found.push((name, value));
        }
        Some(found)
    }

    #[test]
    fn params_records_start_on_a_pair() {
        let mut pairs = Pairs::default();
        let mut sent = Vec::new();
        // 100 pairs of about 1 KiB: past 64 KiB, which a cut every 65,535
        // bytes would split inside a pair.
        for i in 0..100 {
            let name = format!("HTTP_X_HEADER_{i}").into_bytes();
            let value = vec![b'a' + (i % 26) as u8; 1000 + i];
            pairs.add(&name, &value);
            sent.push((name, value));
        }
        let mut out = BytesMut::new();
        params(&mut out, &pairs);
        let recs = records(out);
        assert!(recs.len() > 2, "{} records", recs.len());
        assert_eq!(recs.last(), Some(&(kind::PARAMS, vec![])));
        let mut got = Vec::new();
        for (k, content) in &recs[..recs.len() - 1] {
            assert_eq!(*k, kind::PARAMS);
            assert!(!content.is_empty() && content.len() <= MAX_CONTENT);
            got.extend(decode_alone(content).expect("a record that ends inside a pair"));
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn a_pair_larger_than_a_record_spans_records_of_its_own() {
        let mut pairs = Pairs::default();
        pairs.add(b"A", b"1");
        pairs.add(b"HUGE", &vec![b'h'; 150_000]);
        pairs.add(b"B", b"2");
        let mut out = BytesMut::new();
        params(&mut out, &pairs);
        let recs = records(out);
        let contents: Vec<&[u8]> = recs.iter().map(|(_, c)| &c[..]).collect();
        // "A", the huge pair in three records, "B", the end.
        assert_eq!(contents.len(), 6);
        assert_eq!(contents[0], &[1, 1, b'A', b'1']);
        assert!(contents[1..4].iter().all(|c| c.len() <= MAX_CONTENT));
        let huge: Vec<u8> = contents[1..4].concat();
        assert_eq!(
            decode_alone(&huge).unwrap(),
            vec![(b"HUGE".to_vec(), vec![b'h'; 150_000])]
        );
        assert_eq!(contents[4], &[1, 1, b'B', b'2']);
        assert!(contents[5].is_empty());
    }

    #[test]
    fn long_streams_are_cut_into_records() {
        let mut out = BytesMut::new();
        input(&mut out, &vec![7u8; 200_000]);
        let recs = records(out);
        assert_eq!(recs.len(), 4);
        assert!(recs
            .iter()
            .all(|(k, c)| *k == kind::STDIN && c.len() <= INPUT_CONTENT));
        assert_eq!(recs.iter().map(|(_, c)| c.len()).sum::<usize>(), 200_000);
    }

    #[test]
    fn records_in_are_taken_whole_with_their_padding() {
        let mut buf = BytesMut::new();
        // STDOUT "hi" with 6 bytes of padding, then END_REQUEST.
        buf.put_slice(&[
            1,
            kind::STDOUT,
            0,
            1,
            0,
            2,
            6,
            0,
            b'h',
            b'i',
            0,
            0,
            0,
            0,
            0,
            0,
        ]);
        buf.put_slice(&[
            1,
            kind::END_REQUEST,
            0,
            1,
            0,
            8,
            0,
            0,
            0,
            0,
            0,
            3,
            2,
            0,
            0,
            0,
        ]);
        let mut partial = buf.split_to(5);
        assert_eq!(next_record(&mut partial).unwrap(), None);
        partial.unsplit(buf);
        assert_eq!(
            next_record(&mut partial).unwrap(),
            Some(Record::Output(Bytes::from_static(b"hi")))
        );
        assert_eq!(
            next_record(&mut partial).unwrap(),
            Some(Record::End {
                app_status: 3,
                protocol_status: protocol_status::OVERLOADED
            })
        );
        assert!(partial.is_empty());
        // A management record (id 0) is skipped; another request's id, and
        // what is not FastCGI, are errors.
        let mut management = BytesMut::from(&[1, 10, 0, 0, 0, 1, 0, 0, b'x'][..]);
        assert_eq!(next_record(&mut management).unwrap(), Some(Record::Other));
        let mut other = BytesMut::from(&[1, kind::STDOUT, 0, 9, 0, 1, 0, 0, b'x'][..]);
        assert!(next_record(&mut other)
            .unwrap_err()
            .contains("request id 9"));
        let mut http = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        assert!(next_record(&mut http).is_err());
    }
}
