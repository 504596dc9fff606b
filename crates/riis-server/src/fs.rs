//! The real file system the engine probes when it chooses a handler, with
//! the server's file cache (IIS's static file cache).
//!
//! A probe of a small regular file answers from the cache when the file's
//! current metadata (`stat`: device, inode, size, modification and change
//! times) still matches the cached copy: one system call, no open, read or
//! close. A changed file is read again and raises FileChange; additions and
//! removals raise CacheOperation; a periodic sweep drops entries nobody used
//! since the last sweep and raises CacheCleanup.
//!
//! Cached files larger than [`KEEP_OPEN_FROM`] are also kept open (at most
//! [`OPEN_FILES_KEPT`] of them), so a plain HTTP/1.x response can send them
//! with `sendfile` from the page cache: no copy into the socket from the
//! server's memory and no open or close per request. Measured on a 100 KiB
//! file, that copy was a fifth of the server's CPU time; smaller files go
//! out faster from memory in one `writev`.
//!
//! Without a cache hit, a probe opens the path and asks the open file what it
//! is (`open` + `fstat`), so the static handler reads that descriptor: the
//! path is resolved once per request. Opens never block (a FIFO in a site
//! root would otherwise hang a worker), and anything but a regular file or a
//! directory counts as absent, so devices and pipes are never served.

use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use riis_pipeline::{
    CacheOperation, FileSystem, GlobalNotification, Pipeline, Probe, ResourceInfo,
};

/// Limits of the file cache (`[server] file_cache_*`).
#[derive(Debug, Clone, Copy)]
pub struct FileCacheLimits {
    /// Total bytes of file content held; 0 turns the cache off.
    pub max_size: u64,
    /// Largest file cached (IIS's `maxResponseSize`, 256 KiB by default).
    pub max_file_size: u64,
}

/// What identifies a version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A file modified less than this long before it is read is served but not
/// cached (git's "racy clean" rule): a rewrite within the same timestamp
/// tick, with the same length, would otherwise look unchanged and be served
/// stale from the cache. Two seconds cover coarse file-system clocks.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a file last modified at `meta`'s mtime may still change without
/// its timestamps showing it.
fn unsettled(meta: &Metadata) -> bool {
    meta.modified().map_or(true, |m| {
        std::time::SystemTime::now()
            .duration_since(m)
            .map_or(true, |age| age < SETTLE)
    })
}

/// Cached files at least this large are also kept open.
pub const KEEP_OPEN_FROM: u64 = 64 * 1024;

/// Most cached files kept open at once: a bound on the descriptors the cache
/// holds, well under the usual limit of open files.
pub const OPEN_FILES_KEPT: usize = 256;

struct Entry {
    version: Version,
    info: ResourceInfo,
    content: Bytes,
    /// The file, open, for files of [`KEEP_OPEN_FROM`] bytes or more.
    file: Option<Arc<File>>,
    used: AtomicBool,
}

const SHARDS: usize = 16;

/// One shard of the cache: path → entry. A path is kept and hashed as its
/// bytes: `Path`'s own hash walks its components, and cost a static request
/// about 200 instructions per hash (two per lookup). Paths come from the
/// engine's mapping, which writes one path one way.
type Shard = Mutex<HashMap<Vec<u8>, Arc<Entry>, PathHasher>>;

/// A path as the cache's key.
fn key_of(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

/// The hasher of the cache's paths, for choosing a shard and within it.
/// Every static file request looks its path up, and std's SipHash spent
/// about 600 instructions on the two hashes of a short path. foldhash is
/// seeded at random per process too (with weaker guarantees than SipHash),
/// and the cache only holds files that exist, which clients cannot add.
type PathHasher = foldhash::quality::RandomState;

/// The operating system's file system with a content cache for small files.
pub struct RealFileSystem {
    limits: FileCacheLimits,
    shards: Box<[Shard]>,
    hasher: PathHasher,
    used_bytes: AtomicU64,
    /// Entries holding their file open.
    open_files: AtomicUsize,
    /// Where to raise FileChange, CacheOperation and CacheCleanup: the
    /// pipeline of the configuration in force (the pipeline owns this file
    /// system, hence the weak reference). Replaced on every reload; read
    /// only on cache events, never on a cache hit.
    pipeline: Mutex<Weak<Pipeline>>,
}

impl std::fmt::Debug for RealFileSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealFileSystem")
            .field("limits", &self.limits)
            .field("used_bytes", &self.used_bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl RealFileSystem {
    /// A file system with a cache of the given limits.
    pub fn new(limits: FileCacheLimits) -> Self {
        Self {
            limits,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(PathHasher::default())))
                .collect(),
            hasher: Default::default(),
            used_bytes: AtomicU64::new(0),
            open_files: AtomicUsize::new(0),
            pipeline: Mutex::new(Weak::new()),
        }
    }

    /// Connects the cache to the pipeline whose global modules hear about
    /// it: the server's first, then each reload's.
    pub fn attach(&self, pipeline: &Arc<Pipeline>) {
        *self.pipeline.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(pipeline);
    }

    fn notify(&self, n: GlobalNotification, raise: impl FnOnce(&Pipeline)) {
        let pipeline = self
            .pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade();
        if let Some(p) = pipeline {
            if p.has_global_listeners(n) {
                raise(&p);
            }
        }
    }

    fn shard(&self, path: &Path) -> &Shard {
        &self.shards[self.hasher.hash_one(key_of(path)) as usize % SHARDS]
    }

    fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Entry>, PathHasher>> {
        // Entries are replaced whole; a poisoned shard holds nothing torn.
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of content held now.
    pub fn cached_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// Cached files held open now.
    pub fn open_files(&self) -> usize {
        self.open_files.load(Ordering::Relaxed)
    }

    /// Accounts for an entry leaving the cache.
    fn forget(&self, entry: &Entry) {
        self.used_bytes
            .fetch_sub(entry.content.len() as u64, Ordering::Relaxed);
        if entry.file.is_some() {
            self.open_files.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, path: &Path, changed: bool) {
        let removed = Self::lock(self.shard(path)).remove(key_of(path));
        if let Some(entry) = removed {
            self.forget(&entry);
            let key = path.to_string_lossy();
            self.notify(GlobalNotification::CacheOperation, |p| {
                p.raise_cache_operation(&CacheOperation::Remove { key: &key })
            });
            if changed {
                self.notify(GlobalNotification::FileChange, |p| {
                    p.raise_file_change(path)
                });
            }
        }
    }

    /// Drops entries not used since the previous sweep and raises
    /// CacheCleanup. The server calls it periodically.
    pub fn cleanup(&self) {
        if self.limits.max_size == 0 {
            return;
        }
        let mut stale = Vec::new();
        for shard in self.shards.iter() {
            for (path, entry) in Self::lock(shard).iter() {
                if !entry.used.swap(false, Ordering::Relaxed) {
                    stale.push(path.clone());
                }
            }
        }
        for path in stale {
            self.remove(Path::new(std::ffi::OsStr::from_bytes(&path)), false);
        }
        self.notify(GlobalNotification::CacheCleanup, |p| {
            p.raise_cache_cleanup()
        });
    }

    /// Reads a small file whole and keeps it, if the budget allows.
    fn fill(&self, path: &Path, version: Version, info: ResourceInfo) -> Option<Probe> {
        let file = match open_nonblocking(path) {
            Ok(file) => file,
            Err(e) => return probe_unopened(path, &e),
        };
        let meta = file.metadata().ok()?;
        if Version::of(&meta) != version {
            // Changed between stat and open: serve what is open now, uncached.
            return probe_open(file, &meta);
        }
        let mut data = vec![0; version.len as usize];
        if file.read_exact_at(&mut data, 0).is_err() {
            return probe_open(file, &meta);
        }
        let after = file.metadata().ok()?;
        if Version::of(&after) != version {
            // Written while it was read: what was read may be torn.
            return probe_open(file, &after);
        }
        let content = Bytes::from(data);
        if unsettled(&after) {
            // Served as read, not kept (see SETTLE); shaped like an entry.
            let large = content.len() as u64 >= KEEP_OPEN_FROM;
            return Some(Probe {
                info,
                file: large.then(|| Arc::new(file)),
                content: Some(content),
            });
        }
        let bytes = content.len() as u64;
        let mut file = Some(Arc::new(file));
        if self.used_bytes.load(Ordering::Relaxed) + bytes <= self.limits.max_size {
            // Kept open while the budget of descriptors allows (a race past
            // it by a few concurrent fills is harmless).
            if bytes >= KEEP_OPEN_FROM && self.open_files.load(Ordering::Relaxed) < OPEN_FILES_KEPT
            {
                self.open_files.fetch_add(1, Ordering::Relaxed);
            } else {
                file = None;
            }
            let entry = Arc::new(Entry {
                version,
                info,
                content: content.clone(),
                file: file.clone(),
                used: AtomicBool::new(true),
            });
            let mut shard = Self::lock(self.shard(path));
            // Counted before the entry is visible: a removal of it (which
            // takes the same lock) then never subtracts first and wraps.
            self.used_bytes.fetch_add(bytes, Ordering::Relaxed);
            let previous = shard.insert(key_of(path).to_vec(), entry);
            drop(shard);
            if let Some(previous) = previous {
                self.forget(&previous);
            }
            let key = path.to_string_lossy();
            self.notify(GlobalNotification::CacheOperation, |p| {
                p.raise_cache_operation(&CacheOperation::Add { key: &key, bytes })
            });
        }
        Some(Probe {
            info,
            file,
            content: Some(content),
        })
    }
}

/// Opens `path` for reading without blocking on it: a FIFO put where a file
/// was expected opens at once (and is then refused as no file) instead of
/// stalling the worker until a writer comes.
pub(crate) fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

fn info_of(meta: &Metadata) -> Option<ResourceInfo> {
    if meta.is_dir() {
        Some(ResourceInfo::directory())
    } else if meta.is_file() {
        Some(ResourceInfo::of_file(meta))
    } else {
        None
    }
}

/// A file that is there but cannot be opened now for a reason of the
/// server's own (out of descriptors or memory, an I/O error): described
/// without a descriptor, so its handler opens it again and answers the
/// failure as the server's (500), not as a missing file (a 404 that caches
/// keep). Missing, refused or linked names stay `None`, as before.
fn probe_unopened(path: &Path, error: &std::io::Error) -> Option<Probe> {
    use std::io::ErrorKind;
    let theirs = matches!(
        error.kind(),
        ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::NotADirectory
            | ErrorKind::InvalidFilename
    ) || error.raw_os_error() == Some(libc::ELOOP);
    // Out of descriptors, `open` fails so for every path before it looks:
    // a file the server may not read is still left out, as before.
    if theirs || nix::unistd::access(path, nix::unistd::AccessFlags::R_OK).is_err() {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    Some(Probe {
        info: info_of(&meta)?,
        file: None,
        content: None,
    })
}

/// `path` opened and described, not kept (the cache is off, or the file
/// is past what it keeps); described without a descriptor when it cannot
/// be opened for a reason of the server's own (see [`probe_unopened`]).
fn probe_uncached(path: &Path) -> Option<Probe> {
    let file = match open_nonblocking(path) {
        Ok(file) => file,
        Err(e) => return probe_unopened(path, &e),
    };
    let meta = file.metadata().ok()?;
    probe_open(file, &meta)
}

fn probe_open(file: File, meta: &Metadata) -> Option<Probe> {
    let info = info_of(meta)?;
    Some(Probe {
        info,
        file: meta.is_file().then(|| Arc::new(file)),
        content: None,
    })
}

impl FileSystem for RealFileSystem {
    fn is_denied(&self, path: &Path) -> bool {
        // Non-blocking, as the probe opens.
        matches!(open_nonblocking(path), Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied)
    }

    fn probe(&self, path: &Path) -> Option<Probe> {
        if self.limits.max_size == 0 {
            return probe_uncached(path);
        }
        let Ok(meta) = std::fs::metadata(path) else {
            // Gone: if it was cached, that is a change to report.
            self.remove(path, true);
            return None;
        };
        let Some(info) = info_of(&meta) else {
            // No file any more (a FIFO, a device): a cached entry goes now,
            // its memory and descriptor with it.
            self.remove(path, true);
            return None;
        };
        // A file replaced by a folder is left to the sweep: folders are
        // probed on every request for them, and a lookup here would cost
        // each of them a lock for a case that rarely happens.
        if meta.is_dir() {
            return Some(Probe {
                info,
                file: None,
                content: None,
            });
        }
        let version = Version::of(&meta);
        let cached = Self::lock(self.shard(path)).get(key_of(path)).cloned();
        if let Some(entry) = cached {
            if entry.version == version {
                entry.used.store(true, Ordering::Relaxed);
                return Some(Probe {
                    info: entry.info,
                    file: entry.file.clone(),
                    content: Some(entry.content.clone()),
                });
            }
            self.remove(path, true);
        }
        if version.len > self.limits.max_file_size {
            return probe_uncached(path);
        }
        self.fill(path, version, info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in a folder of its own, both removed when the guard drops
    /// (also when an assertion fails).
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn temp_file(name: &str, data: &[u8]) -> TempFile {
        let dir = std::env::temp_dir().join(format!("riis-fs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.txt");
        write_settled(&p, data);
        TempFile(p)
    }

    /// Writes `data` and dates it a minute back, past SETTLE, so that the
    /// cache keeps it.
    fn write_settled(p: &Path, data: &[u8]) {
        std::fs::write(p, data).unwrap();
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }

    fn limits() -> FileCacheLimits {
        FileCacheLimits {
            max_size: 1 << 20,
            max_file_size: 1 << 10,
        }
    }

    #[test]
    fn small_files_are_cached_and_revalidated() {
        let fs = RealFileSystem::new(limits());
        let p_file = temp_file("cache", b"one");
        let p = p_file.path();
        let first = fs.probe(p).unwrap();
        assert_eq!(first.content.as_deref(), Some(&b"one"[..]));
        assert_eq!(fs.cached_bytes(), 3);
        assert_eq!(fs.probe(p).unwrap().content.as_deref(), Some(&b"one"[..]));
        // A different length is a different version, whatever the clock says.
        write_settled(p, b"second");
        assert_eq!(
            fs.probe(p).unwrap().content.as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(fs.cached_bytes(), 6);
        std::fs::remove_file(p).unwrap();
        assert!(fs.probe(p).is_none());
    }

    #[test]
    fn large_files_are_opened_not_cached_and_sweeps_drop_unused_entries() {
        let fs = RealFileSystem::new(limits());
        let big_file = temp_file("big", &vec![b'x'; 4096]);
        let big = big_file.path();
        let probe = fs.probe(big).unwrap();
        assert!(probe.content.is_none());
        assert!(probe.file.is_some());
        assert_eq!(fs.cached_bytes(), 0);

        let small_file = temp_file("sweep", b"abc");
        let small = small_file.path();
        fs.probe(small).unwrap();
        fs.cleanup(); // used since the last sweep: kept
        assert_eq!(fs.cached_bytes(), 3);
        fs.cleanup(); // unused since: dropped
        assert_eq!(fs.cached_bytes(), 0);
    }

    #[test]
    fn large_cached_files_are_kept_open_within_the_budget() {
        let fs = RealFileSystem::new(FileCacheLimits {
            max_size: 1 << 20,
            max_file_size: 256 << 10,
        });
        let small_file = temp_file("open-small", &[b's'; 1000]);
        let small = small_file.path();
        assert!(fs.probe(small).unwrap().file.is_none());
        assert!(fs.probe(small).unwrap().file.is_none());
        let len = KEEP_OPEN_FROM as usize;
        let big_file = temp_file("open-big", &vec![b'b'; len]);
        let big = big_file.path();
        let filled = fs.probe(big).unwrap();
        let hit = fs.probe(big).unwrap();
        assert_eq!(hit.content.as_ref().map(|c| c.len()), Some(len));
        let (a, b) = (filled.file.unwrap(), hit.file.unwrap());
        assert!(Arc::ptr_eq(&a, &b), "the same descriptor is shared");
        assert_eq!(fs.open_files(), 1);
        // A change replaces the entry and its descriptor.
        write_settled(big, &vec![b'c'; len + 1]);
        let changed = fs.probe(big).unwrap();
        assert!(!Arc::ptr_eq(&a, changed.file.as_ref().unwrap()));
        assert_eq!(fs.open_files(), 1);
        fs.cleanup();
        fs.cleanup();
        assert_eq!(fs.open_files(), 0);
    }

    #[test]
    fn a_file_rewritten_in_place_within_a_tick_is_not_served_stale() {
        let fs = RealFileSystem::new(limits());
        let file = temp_file("racy", b"AAAA");
        let p = file.path();
        for round in 0..20 {
            // Same length, timestamps as close as the clock makes them.
            std::fs::write(p, b"AAAA").unwrap();
            assert_eq!(fs.probe(p).unwrap().content.as_deref(), Some(&b"AAAA"[..]));
            std::fs::write(p, b"BBBB").unwrap();
            assert_eq!(
                fs.probe(p).unwrap().content.as_deref(),
                Some(&b"BBBB"[..]),
                "round {round}"
            );
        }
        // Just written: served, not kept until it settles.
        assert_eq!(fs.cached_bytes(), 0);
    }

    #[test]
    fn special_files_are_absent() {
        let fs = RealFileSystem::new(limits());
        assert!(fs.probe(Path::new("/dev/null")).is_none());
        let off = RealFileSystem::new(FileCacheLimits {
            max_size: 0,
            max_file_size: 0,
        });
        assert!(off.probe(Path::new("/dev/null")).is_none());
    }
}
