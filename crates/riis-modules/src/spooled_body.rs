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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use riis_pipeline::bytes::Bytes;

/// Bytes of a body kept in memory; a longer body goes to a file.
pub(crate) const MEMORY_LIMIT: usize = 64 * 1024;

/// The most all request bodies of the process may hold in temporary files
/// together. Past it, a body that needs more fails with 503: the temporary
/// folder is often a `tmpfs` (memory), and a hundred uploads of IIS's
/// default 30 MB limit would otherwise take 3 GB of it.
pub(crate) const SPOOL_BUDGET: u64 = 2 * 1024 * 1024 * 1024;

/// What bodies hold of [`SPOOL_BUDGET`] now.
static SPOOLED: AtomicU64 = AtomicU64::new(0);

/// A body's temporary file, counted against [`SPOOL_BUDGET`] until it is
/// closed.
pub(crate) struct SpoolFile {
    file: File,
    /// Bytes written (and counted).
    len: u64,
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        SPOOLED.fetch_sub(self.len, Ordering::AcqRel);
    }
}

impl SpoolFile {
    /// Writes `data` at the end, if the budget has room for it.
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let bytes = data.len() as u64;
        if !crate::take_from_budget(&SPOOLED, bytes, SPOOL_BUDGET) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the request bodies waiting in temporary files take the server's 2 GiB budget",
            ));
        }
        // Counted first: the file holds them until it is dropped.
        self.len += bytes;
        self.file.write_all(data)
    }
}

/// A request body being collected.
#[derive(Default)]
pub(crate) struct BodySpool {
    memory: Vec<u8>,
    /// The file, once the body outgrew memory.
    file: Option<SpoolFile>,
}

impl BodySpool {
    /// Bytes collected so far.
    pub(crate) fn len(&self) -> u64 {
        self.memory.len() as u64 + self.file.as_ref().map_or(0, |f| f.len)
    }

    /// Adds `data` to the body: to memory while it fits, else to the file
    /// (made at the first byte that does not fit).
    pub(crate) fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.memory.len() + data.len() <= MEMORY_LIMIT {
            self.memory.extend_from_slice(data);
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(SpoolFile {
                file: tempfile::tempfile()?,
                len: 0,
            });
        }
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        file.append(data)
    }

    /// The whole body, to send.
    pub(crate) fn finish(self) -> SpooledBody {
        match self.file {
            None => SpooledBody::Memory(self.memory.into()),
            Some(file) => SpooledBody::Spooled {
                memory: self.memory.into(),
                len: file.len,
                file: Arc::new(file),
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
        file: Arc<SpoolFile>,
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
        file.file.read_exact_at(&mut buf, at)?;
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

    /// A body's file counts against the process's budget while it lives.
    #[test]
    fn a_spooled_body_is_counted_until_it_goes() {
        let mut spool = BodySpool::default();
        spool.push(&vec![b'a'; MEMORY_LIMIT]).unwrap();
        assert!(spool.file.is_none());
        spool.push(&vec![b'b'; 10_000]).unwrap();
        assert_eq!(spool.file.as_ref().map(|f| f.len), Some(10_000));
        // The global count holds at least this body's (other tests spool
        // too); it gives it back when the body goes.
        assert!(SPOOLED.load(Ordering::Acquire) >= 10_000);
        let body = spool.finish();
        assert_eq!(collect(&body, 4096).len(), MEMORY_LIMIT + 10_000);
        let again = body.clone();
        drop(body);
        assert!(
            SPOOLED.load(Ordering::Acquire) >= 10_000,
            "a clone still holds it"
        );
        drop(again);
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
