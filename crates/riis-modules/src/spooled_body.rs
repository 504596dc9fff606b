//! Request bodies as the gateway modules (Cgi, FastCgi, ReverseProxy)
//! collect them before the application is asked: the first
//! [`MEMORY_LIMIT`] bytes in memory, the rest in an unnamed temporary file
//! (nginx's `client_body_buffer_size` and `client_body_temp_path`), so that
//! a large upload costs disk, not memory, however many arrive at once.
//!
//! The file is made in the system's temporary folder (`$TMPDIR`, else
//! `/tmp`) and has no name: it disappears with the last handle, even if
//! riis is killed. Its pieces are read back with `pread` on the thread that
//! sends them, as nginx reads its temporary files: just written, they are
//! in the page cache.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use riis_pipeline::bytes::Bytes;

/// Bytes of a body kept in memory; a longer body goes to a file.
pub(crate) const MEMORY_LIMIT: usize = 64 * 1024;

/// A request body being collected.
#[derive(Default)]
pub(crate) struct BodySpool {
    memory: Vec<u8>,
    /// The file, once the body outgrew memory, and its length.
    file: Option<(File, u64)>,
}

impl BodySpool {
    /// Bytes collected so far.
    pub(crate) fn len(&self) -> u64 {
        self.memory.len() as u64 + self.file.as_ref().map_or(0, |(_, len)| *len)
    }

    /// Adds `data` to the body: to memory while it fits, else to the file
    /// (made at the first byte that does not fit).
    pub(crate) fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.memory.len() + data.len() <= MEMORY_LIMIT {
            self.memory.extend_from_slice(data);
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some((tempfile::tempfile()?, 0));
        }
        let Some((file, len)) = &mut self.file else {
            return Ok(());
        };
        file.write_all(data)?;
        *len += data.len() as u64;
        Ok(())
    }

    /// The whole body, to send.
    pub(crate) fn finish(self) -> SpooledBody {
        match self.file {
            None => SpooledBody::Memory(self.memory.into()),
            Some((file, len)) => SpooledBody::Spooled {
                memory: self.memory.into(),
                file: Arc::new(file),
                len,
            },
        }
    }
}

/// A whole request body: in memory, or its first bytes in memory and the
/// rest in a file. Cheap to clone (a request sent again sends it again).
#[derive(Clone)]
pub(crate) enum SpooledBody {
    Memory(Bytes),
    Spooled {
        memory: Bytes,
        file: Arc<File>,
        /// Bytes in the file.
        len: u64,
    },
}

impl Default for SpooledBody {
    fn default() -> Self {
        SpooledBody::Memory(Bytes::new())
    }
}

impl SpooledBody {
    /// The body's length.
    pub(crate) fn len(&self) -> u64 {
        match self {
            SpooledBody::Memory(bytes) => bytes.len() as u64,
            SpooledBody::Spooled { memory, len, .. } => memory.len() as u64 + len,
        }
    }

    /// Whether the body is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// At most `most` bytes from `offset`: empty at the end.
    pub(crate) fn piece(&self, offset: u64, most: usize) -> io::Result<Bytes> {
        let (memory, file) = match self {
            SpooledBody::Memory(bytes) => (bytes, None),
            SpooledBody::Spooled {
                memory, file, len, ..
            } => (memory, Some((file, *len))),
        };
        let in_memory = memory.len() as u64;
        if offset < in_memory {
            let start = offset as usize;
            let end = memory.len().min(start.saturating_add(most));
            return Ok(memory.slice(start..end));
        }
        let Some((file, len)) = file else {
            return Ok(Bytes::new());
        };
        let at = offset - in_memory;
        let size = (len.saturating_sub(at)).min(most as u64) as usize;
        let mut buf = vec![0u8; size];
        file.read_exact_at(&mut buf, at)?;
        Ok(buf.into())
    }

    /// The pieces of the body in order, each at most `most` bytes.
    pub(crate) fn pieces(&self, most: usize) -> Pieces<'_> {
        Pieces {
            body: self,
            offset: 0,
            most,
        }
    }
}

/// The pieces of a [`SpooledBody`], read as they are taken.
pub(crate) struct Pieces<'a> {
    body: &'a SpooledBody,
    offset: u64,
    most: usize,
}

impl Iterator for Pieces<'_> {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<io::Result<Bytes>> {
        match self.body.piece(self.offset, self.most) {
            Ok(piece) if piece.is_empty() => None,
            Ok(piece) => {
                self.offset += piece.len() as u64;
                Some(Ok(piece))
            }
            Err(e) => {
                // One failure ends the pieces.
                self.offset = self.body.len();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(body: &SpooledBody, most: usize) -> Vec<u8> {
        let mut all = Vec::new();
        for piece in body.pieces(most) {
            let piece = piece.unwrap();
            assert!(piece.len() <= most);
            all.extend_from_slice(&piece);
        }
        all
    }

    #[test]
    fn a_small_body_stays_in_memory() {
        let mut spool = BodySpool::default();
        spool.push(b"hello ").unwrap();
        spool.push(b"world").unwrap();
        assert_eq!(spool.len(), 11);
        let body = spool.finish();
        assert!(matches!(body, SpooledBody::Memory(_)));
        assert_eq!(collect(&body, 4), b"hello world");
    }

    #[test]
    fn a_large_body_goes_to_a_file_and_comes_back_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut spool = BodySpool::default();
        for part in data.chunks(10_000) {
            spool.push(part).unwrap();
        }
        assert_eq!(spool.len(), data.len() as u64);
        let body = spool.finish();
        assert!(matches!(body, SpooledBody::Spooled { .. }));
        assert_eq!(body.len(), data.len() as u64);
        // Pieces that straddle memory and file, and ones of the file only.
        assert_eq!(collect(&body, 7_000), data);
        assert_eq!(collect(&body, 64 * 1024), data);
        // A clone reads the same bytes again.
        assert_eq!(collect(&body.clone(), 100_000), data);
    }
}
