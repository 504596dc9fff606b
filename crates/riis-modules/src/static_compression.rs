//! `StaticCompression`: serves compressed copies of static files, made once
//! and kept on disk.
//!
//! Registers for **SendResponse** (LOW priority, so in SendResponse's
//! inverted order it runs before DynamicCompression and leaves it nothing to
//! do). On the final send of a whole response with a strong ETag (a 200
//! sent in one piece: the URL's own file, whole, or for a folder URL
//! without a query its default document, which a child request produced),
//! it picks
//! brotli, zstd or gzip from `Accept-Encoding` and replaces the body with
//! the compressed copy. Copies live in `directory`, named by a hash of the
//! physical path, the strong ETag (which changes whenever the bytes do,
//! RFC 9110 §8.8.3), the coding and its level, so a changed file (or
//! level) gets a new copy and the old one is never served again.
//! A missing copy is made in the background, as IIS does: the request that
//! finds it missing queues it for the module's compression thread and is
//! sent the file as it is (DynamicCompression, when enabled, encodes that
//! response at its fast level), so no request waits for gzip 9 or zstd 19
//! and no runtime worker is taken from the others. Each copy is queued once
//! (at most 64 wait; past that, files go as they are until the queue
//! drains), made only if the file is still as the request found it (its
//! length and modification time, which its ETag is made of), written to a
//! temporary file of its own, synced, then renamed
//! into place; an empty copy is never trusted. Copies of up to 256 KiB are
//! also kept in memory, 64 MiB in all; larger ones are sent from their
//! files. Names come from Rust's default
//! hasher with fixed keys: the same across restarts of one build; a new
//! build may name copies anew (old ones are left for the operator to
//! remove).
//!
//! The directory is made owner-only (0700). One that belongs to another
//! user, or that others may write to, is refused (logged once; files then
//! go uncompressed until it is fixed): in a shared `/tmp`, another user
//! could otherwise plant the bytes served.
//!
//! Never encoded: files under `min_size` (2,700 bytes) or over `max_size`
//! (4 MiB: a copy is made from the file read whole into memory), types not listed,
//! ranges and responses that already have a `Content-Encoding`. A HEAD of
//! a file gets what its GET would (the coding, the copy's length, the weak
//! ETag) once a GET made the copy; a HEAD makes none. Compressible files always get `Vary: Accept-Encoding`; encoded
//! ones a weak ETag.
//!
//! Configuration section `static_compression`:
//! - `enabled` (default true);
//! - `mime_types` (default: `text/*`, JSON, JavaScript, XML, SVG, WASM …);
//! - `min_size` (2700) and `max_size` (4194304);
//! - `directory` (default: `riis-compressed-<uid>` under the system temp
//!   dir, one per user, so one user's folder never stops another's);
//! - `gzip_level` (9), `brotli_quality` (9) and `zstd_level` (19, the
//!   highest whose window browsers accept): paid once per file;
//! - `do_disk_space_limiting` (true) and `max_disk_space_usage` (100, in
//!   MB, as IIS's `httpCompression` has them): when the copies in a
//!   directory pass the limit, the oldest are deleted until they take at
//!   most nine tenths of it. The directory's usage is counted by one scan
//!   the first time this process writes a copy into it, then kept up to
//!   date by the copies it writes; the scan that prunes counts anew, so
//!   copies other processes wrote are taken into account there.

use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use riis_pipeline::http::{header, HeaderValue, Method, StatusCode};
use riis_pipeline::{
    EntityChunk, HttpContext, HttpModule, ModuleError, ModuleRegistration, Priority,
    RequestNotification, RequestNotificationStatus, RequestNotifications, ResourceKind, Section,
    SendResponseProvider, ServerInfo,
};
use serde::Deserialize;

use crate::background::Background;
use crate::content_encoding::{self, Coding};

/// The `static_compression` configuration section.
///
/// Read field by field through serde's derive (`remote = "Self"` names it
/// `StaticCompressionConfig::deserialize`), then checked as a whole by the
/// `Deserialize` impl below, for what no single field can tell.
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct StaticCompressionConfig {
    /// Whether static files are served compressed.
    pub enabled: bool,
    /// MIME types to compress (`type/*` matches a whole type).
    #[serde(deserialize_with = "content_encoding::mime_type_list")]
    pub mime_types: Vec<String>,
    /// Smallest file compressed.
    pub min_size: u64,
    /// Largest file compressed.
    pub max_size: u64,
    /// Where compressed copies are kept; empty for the default.
    pub directory: PathBuf,
    /// gzip level, 0–9.
    #[serde(deserialize_with = "content_encoding::gzip_level")]
    pub gzip_level: u32,
    /// brotli quality, 0–11.
    #[serde(deserialize_with = "content_encoding::brotli_quality")]
    pub brotli_quality: u32,
    /// zstd level, 1–19.
    #[serde(deserialize_with = "content_encoding::zstd_level")]
    pub zstd_level: u32,
    /// Whether the copies in `directory` are held to `max_disk_space_usage`.
    pub do_disk_space_limiting: bool,
    /// Megabytes the copies in `directory` may take (at least 1).
    #[serde(deserialize_with = "megabytes")]
    pub max_disk_space_usage: u64,
}

impl<'de> Deserialize<'de> for StaticCompressionConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let config = StaticCompressionConfig::deserialize(d)?;
        // Both bounds hold for a file to be compressed: with these crossed
        // nothing ever is, which is a mistake, not a way to switch it off
        // (`enabled = false` is).
        if config.min_size > config.max_size {
            return Err(serde::de::Error::custom(format!(
                "min_size ({}) is larger than max_size ({}): no file would be compressed \
                 (enabled = false turns StaticCompression off)",
                config.min_size, config.max_size
            )));
        }
        Ok(config)
    }
}

/// `max_disk_space_usage`: at least one megabyte (no limit at all is
/// `do_disk_space_limiting = false`, as in IIS).
fn megabytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let mb = u64::deserialize(d)?;
    if (1..=MAX_DISK_SPACE_MB).contains(&mb) {
        Ok(mb)
    } else {
        Err(serde::de::Error::custom(format!(
            "{mb} is not a size in megabytes (1 to {MAX_DISK_SPACE_MB}; \
             do_disk_space_limiting = false sets no limit)"
        )))
    }
}

/// The largest `max_disk_space_usage`: 1 PiB, far past any disk, and small
/// enough that counting it in bytes cannot overflow.
const MAX_DISK_SPACE_MB: u64 = 1 << 30;

impl Default for StaticCompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mime_types: content_encoding::default_types(),
            min_size: 2700,
            max_size: 4 * 1024 * 1024,
            directory: PathBuf::new(),
            gzip_level: 9,
            brotli_quality: 9,
            zstd_level: content_encoding::ZSTD_MAX_LEVEL,
            do_disk_space_limiting: true,
            max_disk_space_usage: 100,
        }
    }
}

/// Copies held in memory, by the name of their file on disk, and their total
/// size, and the copies being made now; shared by every request (the
/// module's factory holds it).
#[derive(Default)]
struct Copies {
    memory: Mutex<(HashMap<PathBuf, Bytes>, usize)>,
    making: Mutex<HashSet<PathBuf>>,
    /// Copy directories looked at: a private one is not looked at again, a
    /// refused one is logged once and looked at again now and then.
    directories: Mutex<HashMap<PathBuf, DirectoryCheck>>,
    /// Bytes the files in each copy directory take, as far as this process
    /// knows (see [`Copies::wrote`]).
    disk_usage: Mutex<HashMap<PathBuf, u64>>,
    /// Copies deleted to keep `max_disk_space_usage`, and when: they are
    /// not made again for [`PRUNED_REST`].
    pruned: Mutex<HashMap<PathBuf, std::time::Instant>>,
    /// The configuration's folder: a relative `directory` is taken from it.
    folder: PathBuf,
}

/// How long a copy deleted for space is not made again. Files whose
/// copies take more than `max_disk_space_usage` would otherwise keep the
/// compression thread busy for ever, each request of a deleted copy
/// queueing it at the highest level again (a review kept a core busy with
/// 44 tiny requests a second); meanwhile the file goes as it is
/// (DynamicCompression, when enabled, encodes it at its fast level).
const PRUNED_REST: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl Copies {
    /// [`private_directory`], remembered: a private directory is checked
    /// in full once, and after that only that it is still the same one (one
    /// `stat`: a temp cleaner may remove it, and someone else make a
    /// directory of their own at its path, which must not be read from or
    /// written to); a refused one is logged once.
    fn directory_usable(&self, dir: &Path) -> bool {
        let mut seen = self.directories.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(dir) {
            Some(&DirectoryCheck::Private(id)) if crate::private_directory_id(dir) == Some(id) => {
                return true
            }
            // Not every request pays a `mkdir` and a `stat` for a directory
            // that was wrong a moment ago.
            Some(DirectoryCheck::Refused(at)) if at.elapsed() < RECHECK_REFUSED => return false,
            _ => {}
        }
        // Made again if it went away (a temp cleaner), with the checks of
        // its first use.
        match crate::private_directory(dir) {
            Ok(id) => {
                seen.insert(dir.to_owned(), DirectoryCheck::Private(id));
                true
            }
            Err(why) => {
                let refused = DirectoryCheck::Refused(std::time::Instant::now());
                // Logged when it turns refused (first use, or replaced).
                if !matches!(
                    seen.insert(dir.to_owned(), refused),
                    Some(DirectoryCheck::Refused(_))
                ) {
                    tracing::error!(
                        "StaticCompression: {why}; static files go uncompressed until it is fixed"
                    );
                }
                false
            }
        }
    }

    /// Takes `name` out of the copies being made: made, failed or not
    /// queued after all.
    fn finished(&self, name: &Path) {
        self.making
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Keeps `data`, the copy `name`, in memory if it is small and there is
    /// room.
    fn remember(&self, name: &Path, data: &Bytes) {
        if data.len() > MEMORY_COPY_LIMIT {
            return;
        }
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if memory.1 + data.len() <= MEMORY_TOTAL_LIMIT
            && memory.0.insert(name.to_owned(), data.clone()).is_none()
        {
            memory.1 += data.len();
        }
    }

    /// Counts the copy `name` of `bytes` just written into `dir` and, past
    /// `limit` bytes, deletes the oldest copies there (never `name`, which
    /// would only be made again) until they take at most nine tenths of it
    /// (so the next copies do not each start a scan). Only the compression
    /// thread comes here, so no request waits for a scan.
    fn wrote(&self, dir: &Path, name: &Path, bytes: u64, limit: Option<u64>) {
        let Some(limit) = limit else {
            return;
        };
        let mut usage = self.disk_usage.lock().unwrap_or_else(|e| e.into_inner());
        let used = match usage.get_mut(dir) {
            Some(used) => {
                *used += bytes;
                *used
            }
            // The scan finds the new copy too.
            None => *usage
                .entry(dir.to_owned())
                .or_insert_with(|| copy_files(dir).iter().map(|f| f.len).sum()),
        };
        if used > limit {
            let (left, deleted) = prune(dir, limit / 10 * 9, name);
            usage.insert(dir.to_owned(), left);
            drop(usage);
            let now = std::time::Instant::now();
            let mut pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
            pruned.retain(|_, at| now.duration_since(*at) < PRUNED_REST);
            pruned.extend(deleted.into_iter().map(|path| (path, now)));
        }
    }

    /// Whether the copy `name` was deleted for space lately (see
    /// [`PRUNED_REST`]).
    fn resting(&self, name: &Path) -> bool {
        let pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        pruned
            .get(name)
            .is_some_and(|at| at.elapsed() < PRUNED_REST)
    }
}

/// A file in a copy directory.
struct CopyFile {
    path: PathBuf,
    len: u64,
    modified: std::time::SystemTime,
    /// A temporary file a copy is being written to (or was, by a process
    /// that died before renaming it).
    temporary: bool,
}

/// What a file name in a copy directory is: a copy riis made
/// (`<16 hex digits>.<gz|br|zst>`, `Some(false)`), the temporary file of
/// one (`.<copy name>.<pid>.<n>.tmp`, `Some(true)`), or something riis did
/// not make (`None`), which it neither counts nor deletes.
fn copy_name_kind(name: &str) -> Option<bool> {
    let is_copy = |n: &str| {
        n.split_once('.').is_some_and(|(hash, suffix)| {
            hash.len() == 16
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && matches!(suffix, "gz" | "br" | "zst")
        })
    };
    if is_copy(name) {
        return Some(false);
    }
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = inner.rsplitn(3, '.');
    let (n, pid, copy) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(n) && digits(pid) && is_copy(copy)).then_some(true)
}

/// The copies in a copy directory and their temporary files: regular files
/// named as riis names them (see [`copy_name_kind`]).
fn copy_files(dir: &Path) -> Vec<CopyFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let temporary = copy_name_kind(entry.file_name().to_str()?)?;
            let meta = entry.metadata().ok().filter(|m| m.is_file())?;
            Some(CopyFile {
                temporary,
                path: entry.path(),
                len: meta.len(),
                modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
            })
        })
        .collect()
}

/// A temporary file younger than this may still be being written; older,
/// its writer died and it is deleted with the oldest copies.
const TEMPORARY_FILE_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes the oldest copies in `dir` (by when the copy was made), but not
/// `keep`, until the rest take at most `target` bytes; returns what they
/// take, and the copies deleted.
fn prune(dir: &Path, target: u64, keep: &Path) -> (u64, Vec<PathBuf>) {
    let now = std::time::SystemTime::now();
    let mut files: Vec<CopyFile> = copy_files(dir)
        .into_iter()
        .filter(|f| {
            !f.temporary
                || now
                    .duration_since(f.modified)
                    .is_ok_and(|age| age >= TEMPORARY_FILE_AGE)
        })
        .collect();
    files.sort_by_key(|f| f.modified);
    let mut used: u64 = files.iter().map(|f| f.len).sum();
    let mut deleted = Vec::new();
    for file in &files {
        if used <= target {
            break;
        }
        if file.path == keep {
            continue;
        }
        match std::fs::remove_file(&file.path) {
            Ok(()) => {
                used -= file.len;
                if !file.temporary {
                    deleted.push(file.path.clone());
                }
            }
            // Gone already (another process pruned it): not counted.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => used -= file.len,
            Err(e) => tracing::warn!(
                file = %file.path.display(),
                "StaticCompression: cannot delete an old copy: {e}"
            ),
        }
    }
    tracing::info!(
        directory = %dir.display(),
        deleted = deleted.len(),
        bytes_left = used,
        "StaticCompression: copies passed max_disk_space_usage; the oldest were deleted (and are not made again for 30 minutes)"
    );
    (used, deleted)
}

/// What the last look at a copy directory found.
enum DirectoryCheck {
    /// Ours and private: this directory.
    Private(crate::DirectoryId),
    /// Refused then; looked at again after [`RECHECK_REFUSED`].
    Refused(std::time::Instant),
}

/// How long a refused copy directory is taken as refused before it is
/// looked at again (the operator may have fixed it).
const RECHECK_REFUSED: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes a copy's name out of [`Copies::making`] when its maker is done,
/// however it ends.
struct Making<'a> {
    copies: &'a Copies,
    name: &'a Path,
}

impl Drop for Making<'_> {
    fn drop(&mut self) {
        self.copies.finished(self.name);
    }
}

/// A copy to be made on the compression thread.
struct Job {
    name: PathBuf,
    source: Source,
    coding: Coding,
    level: u32,
    disk_limit: Option<u64>,
}

/// Where a job finds the bytes to compress: the response's body, the file
/// (or a folder's default document) as StaticFile sent it, `len` bytes in
/// all, with the [`Stamp`] of each file it reads from when it was queued.
/// Always descriptors the request opened, never a path opened again: the
/// path may lead elsewhere by the time the job runs (a folder swapped for
/// a link where `follow_symlinks = false`, a FIFO in the file's place).
struct Source {
    chunks: Vec<EntityChunk>,
    len: u64,
    stamps: Vec<Stamp>,
}

/// A file's length, modification and status change times: what its strong
/// ETag is made of. A file whose stamp changed between the request and the
/// copy (or while the copy read it) may hold other bytes than the ETag
/// names, and is not copied under that name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    changed: (i64, i64),
}

impl Stamp {
    fn of(file: &std::fs::File) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// The stamps of the files a body reads from.
    fn of_body(chunks: &[EntityChunk]) -> Option<Vec<Self>> {
        chunks
            .iter()
            .filter_map(|chunk| match chunk {
                EntityChunk::File { file, .. } => Some(Self::of(file)),
                EntityChunk::Memory(_) => None,
            })
            .collect()
    }
}

impl Source {
    /// The bytes, whole, or `None` if they cannot all be read or their
    /// files changed since the request.
    fn read(&self) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let unchanged = || Stamp::of_body(&self.chunks).as_ref() == Some(&self.stamps);
        if !unchanged() {
            return None;
        }
        let mut out = Vec::with_capacity(self.len as usize);
        for chunk in &self.chunks {
            match chunk {
                EntityChunk::Memory(b) => out.extend_from_slice(b),
                EntityChunk::File {
                    file,
                    offset,
                    length,
                } => {
                    let start = out.len();
                    out.resize(start + *length as usize, 0);
                    file.read_exact_at(&mut out[start..], *offset).ok()?;
                }
            }
        }
        (out.len() as u64 == self.len && unchanged()).then_some(out)
    }
}

/// Copies that may wait for the compression thread; past this, files go as
/// they are until it catches up.
const QUEUED_COPIES: usize = 64;

/// Makes one copy, on the compression thread: compresses, writes, counts
/// it against the directory's limit, and keeps it in memory if small.
fn make(copies: &Copies, job: Job) {
    let _making = Making {
        copies,
        name: &job.name,
    };
    let made = job
        .source
        .read()
        .ok_or_else(|| "the file could not be read whole".to_owned())
        .map(|body| job.coding.compress(&body, job.level))
        .and_then(|data| {
            // Checked again here, on the compression thread: the directory
            // may have gone (it is made again) or been replaced since the
            // request queued the copy.
            if !copies.directory_usable(job.name.parent().unwrap_or(Path::new("."))) {
                return Err("the copy directory is not usable".to_owned());
            }
            write_copy(&job.name, &data)
                .map(|()| data)
                .map_err(|e| format!("the copy could not be written: {e}"))
        });
    match made {
        Ok(data) => {
            let dir = job.name.parent().unwrap_or(Path::new("."));
            copies.wrote(dir, &job.name, data.len() as u64, job.disk_limit);
            copies.remember(&job.name, &Bytes::from(data));
        }
        Err(why) => tracing::warn!(
            copy = %job.name.display(),
            "StaticCompression: no compressed copy ({why}); the file goes as it is"
        ),
    }
}

/// Unique temporary names within the process (with the process id, across
/// processes sharing the directory).
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Writes `data` as `name`: to a temporary file of this call's own, synced,
/// then renamed into place, so a reader sees a whole copy or none.
fn write_copy(name: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = name.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        TEMPORARY.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, name)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Compressed copies larger than this are sent from their files rather
/// than kept in memory.
const MEMORY_COPY_LIMIT: usize = 256 * 1024;

/// Memory all in-memory copies may take together; past it, copies are sent
/// from their files.
const MEMORY_TOTAL_LIMIT: usize = 64 * 1024 * 1024;

/// The default directory's name under the system temp dir (with the uid).
const DEFAULT_DIRECTORY: &str = "riis-compressed";

/// The module instance.
pub struct StaticCompression {
    config: Section<StaticCompressionConfig>,
    copies: Arc<Copies>,
    maker: Arc<Background<Job>>,
}

impl StaticCompressionConfig {
    /// Where copies are kept: `directory` (relative to the configuration's
    /// folder, `folder`), or the default under the system temp dir.
    fn copy_directory(&self, folder: &Path) -> PathBuf {
        if self.directory.as_os_str().is_empty() {
            crate::per_user_temp(DEFAULT_DIRECTORY)
        } else {
            folder.join(&self.directory)
        }
    }

    /// Why no copies of this section are kept, when it is on and takes the
    /// default directory, and that directory is not a private folder of
    /// this user's (another user made it first in the shared temp dir):
    /// for `riis check-config`'s warnings.
    pub fn default_directory_refusal(&self) -> Option<String> {
        (self.enabled && self.directory.as_os_str().is_empty())
            .then(|| crate::default_folder_refusal(DEFAULT_DIRECTORY))
            .flatten()
    }

    /// The level configured for `coding`.
    fn level(&self, coding: Coding) -> u32 {
        match coding {
            Coding::Gzip => self.gzip_level,
            Coding::Brotli => self.brotli_quality,
            Coding::Zstd => self.zstd_level,
        }
    }
}

impl StaticCompression {
    /// The file name of the copy of what `path` answered with, in the
    /// version its strong `etag` names, in `coding` at `level`.
    fn copy_name(dir: &Path, path: &Path, etag: &str, coding: Coding, level: u32) -> PathBuf {
        // SipHash with fixed keys: names stay the same across restarts.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(path.as_os_str().as_encoded_bytes());
        h.write(etag.as_bytes());
        h.write_u32(level);
        dir.join(format!("{:016x}.{}", h.finish(), coding.suffix()))
    }

    /// The copy `name`, from memory or from its file; `None` when there is
    /// none yet (or the directory is refused).
    fn find_copy(&self, name: &Path) -> Option<EntityChunk> {
        let memory = self.copies.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = memory.0.get(name) {
            return Some(EntityChunk::Memory(b.clone()));
        }
        drop(memory);
        if !self
            .copies
            .directory_usable(name.parent().unwrap_or(Path::new(".")))
        {
            return None;
        }
        let file = std::fs::File::open(name).ok()?;
        let length = file.metadata().ok().filter(|m| m.is_file())?.len();
        if length == 0 {
            return None;
        }
        if length as usize <= MEMORY_COPY_LIMIT {
            // Read once (a copy made by an earlier run of the server, or
            // one the memory had no room for then).
            use std::io::Read;
            let mut data = Vec::with_capacity(length as usize);
            (&file).take(length).read_to_end(&mut data).ok()?;
            let data = Bytes::from(data);
            self.copies.remember(name, &data);
            return Some(EntityChunk::Memory(data));
        }
        Some(EntityChunk::File {
            file: Arc::new(file),
            offset: 0,
            length,
        })
    }

    /// A range of a file this module would send a copy of carries the
    /// `Vary` its 200 would (RFC 9110 §15.3.7). Ranges come from the file
    /// as it is; only the whole file is negotiated. A multipart answer's
    /// type is `multipart/byteranges`, so the file's is taken from the
    /// URL's extension.
    fn partial_content(&self, ctx: &mut HttpContext) {
        if self.could_compress(ctx) {
            content_encoding::add_vary(ctx.response_mut().headers_mut());
        }
    }

    /// Whether the request's file is one this module would send copies of:
    /// a file within the size bounds, of a listed type (by the response's
    /// `Content-Type`, or the URL's extension for a multipart answer), whose
    /// response allows transforming.
    fn could_compress(&self, ctx: &mut HttpContext) -> bool {
        let Some((kind, len)) = ctx.resource_info().map(|info| (info.kind, info.len)) else {
            return false;
        };
        let config = ctx.config(self.config);
        if content_encoding::forbids_transform(ctx.response().headers()) {
            return false;
        }
        match kind {
            ResourceKind::File if len < config.min_size || len > config.max_size => return false,
            ResourceKind::File => {}
            // A folder's default document, sent under the folder's URL
            // without a query, gets copies as a file does (see
            // `on_send_response`); its size is the child's, not known here,
            // and whether a copy exists decides (`not_modified`).
            ResourceKind::Directory if !ctx.request().query_string().is_empty() => return false,
            ResourceKind::Directory => return true,
        }
        let guessed = content_encoding::type_of_url(ctx.request().url());
        content_encoding::type_listed(
            ctx.response().header(header::CONTENT_TYPE),
            &config.mime_types,
        ) || content_encoding::type_listed(guessed.as_ref(), &config.mime_types)
    }

    /// A 304 says what the 200 would (RFC 9110 §15.4.5, RFC 9111 §4.3.4):
    /// for a file with a compressed copy, `Vary: Accept-Encoding`; when the
    /// client would be sent a copy (its `Accept-Encoding` picks one that
    /// exists), the weak ETag, and on HEAD the copy's length. A cache then
    /// refreshes the variant it holds instead of finding no match, or
    /// taking the file's strong validator for a compressed body.
    fn not_modified(&self, ctx: &mut HttpContext) {
        // A file the module never compresses has no copy to revalidate,
        // whatever tag the client sends: its 304 is the 200's, untouched.
        if !self.could_compress(ctx) {
            return;
        }
        let Some(etag) = strong_etag(ctx) else {
            return;
        };
        let Some(path) = ctx.mapped_path().map(Path::to_path_buf) else {
            return;
        };
        let is_file = ctx
            .resource_info()
            .is_some_and(|info| info.kind == ResourceKind::File);
        let config = ctx.config(self.config);
        let dir = config.copy_directory(&self.copies.folder);
        let copy_len = |coding| {
            let name = Self::copy_name(&dir, &path, &etag, coding, config.level(coding));
            self.find_copy(&name).map(|copy| copy.len())
        };
        let weak = format!("W/{etag}");
        let asked_for_copy = content_encoding::lists_weak_form(ctx.request().headers(), &etag);
        let served = content_encoding::negotiate(ctx.request().headers()).and_then(&copy_len);
        // A file's 200 carries `Vary` whether a copy exists yet or not
        // (`on_send_response`); a folder's only once its default
        // document's copy does, its size being the child's.
        let compressible = is_file
            || asked_for_copy
            || served.is_some()
            || [Coding::Brotli, Coding::Zstd, Coding::Gzip]
                .into_iter()
                .any(|coding| copy_len(coding).is_some());
        if !compressible {
            return;
        }
        let head = ctx.request().method() == Method::HEAD;
        let headers = ctx.response_mut().headers_mut();
        content_encoding::add_vary(headers);
        // The weak tag only where this request's 200 would be a copy: a
        // client that lists both tags but would get the file must not be
        // told the copy's (a cache would then freshen, and serve, the
        // compressed body to it).
        if served.is_some() {
            if let Ok(v) = HeaderValue::try_from(weak) {
                headers.insert(header::ETAG, v);
            }
        }
        if let (true, Some(len)) = (head, served) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
}

impl HttpModule for StaticCompression {
    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        let config = ctx.config(self.config);
        let method = ctx.request().method();
        if config.enabled
            && provider.headers_being_sent()
            && ctx.response().status() == StatusCode::NOT_MODIFIED
        {
            self.not_modified(ctx);
            return RequestNotificationStatus::Continue;
        }
        if config.enabled
            && provider.headers_being_sent()
            && ctx.response().status() == StatusCode::PARTIAL_CONTENT
        {
            self.partial_content(ctx);
            return RequestNotificationStatus::Continue;
        }
        if !config.enabled
            || !provider.headers_being_sent()
            || !provider.is_final_send()
            || (method != Method::GET && method != Method::HEAD)
            || ctx.response().status() != StatusCode::OK
            || !ctx.response().headers().contains_key(header::ETAG)
        {
            return RequestNotificationStatus::Continue;
        }
        // The version of what is sent: a strong ETag changes whenever its
        // bytes do (RFC 9110 §8.8.3), so with the physical path it names
        // the copy. It need not be the request's own file: a default
        // document comes from a child request, under the folder's path.
        let Some(etag) = strong_etag(ctx) else {
            return RequestNotificationStatus::Continue;
        };
        // Probed (and the path mapped) now if the handler did not: an
        // answer OutputCache kept skips the handler, and goes out as its
        // file's would, from the copy.
        let Some(info) = ctx.resource_info() else {
            return RequestNotificationStatus::Continue;
        };
        let Some(path) = ctx.mapped_path().map(Path::to_path_buf) else {
            return RequestNotificationStatus::Continue;
        };
        let response = ctx.response();
        // HEAD has no body, only the length GET's would have; a cache hit
        // for a HEAD holds the body (the server sends none) and no length.
        let len = if ctx.request().method() == Method::HEAD {
            response
                .header(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or_else(|| response.buffered_len())
        } else {
            response.buffered_len()
        };
        // Only what is a file's bytes as they are: the URL's own file, sent
        // whole; or a folder's default document, for the folder URL without
        // a query (a handler whose answer could depend on one shares no
        // copy). A body produced for a path that is no file or folder is
        // DynamicCompression's.
        let whole_file = match info.kind {
            ResourceKind::File => len == info.len,
            ResourceKind::Directory => ctx.request().query_string().is_empty(),
        };
        if !whole_file {
            return RequestNotificationStatus::Continue;
        }
        let config = ctx.config(self.config);
        let response = ctx.response();
        if len < config.min_size
            || len > config.max_size
            || !content_encoding::compressible_response(response.status(), response.headers())
            || !content_encoding::type_listed(
                response.header(header::CONTENT_TYPE),
                &config.mime_types,
            )
        {
            return RequestNotificationStatus::Continue;
        }
        let coding = content_encoding::negotiate(ctx.request().headers());
        content_encoding::add_vary(ctx.response_mut().headers_mut());
        // HEAD gets the headers GET would (RFC 9110 §9.3.2), the copy's
        // length included, so a cache can freshen the variant it holds. A
        // folder's copy is named by the folder's path, as its GET found it.
        let head = ctx.request().method() == Method::HEAD;
        let Some(coding) = coding else {
            return RequestNotificationStatus::Continue;
        };
        let config = ctx.config(self.config);
        let level = config.level(coding);
        let dir = config.copy_directory(&self.copies.folder);
        let name = Self::copy_name(&dir, &path, &etag, coding, level);
        if let Some(copy) = self.find_copy(&name) {
            let response = ctx.response_mut();
            content_encoding::mark_encoded(response.headers_mut(), coding);
            if head {
                response.set_header(header::CONTENT_LENGTH, HeaderValue::from(copy.len()));
            } else {
                response.set_entity_chunks(vec![copy]);
            }
            return RequestNotificationStatus::Continue;
        }
        // A HEAD has no body to copy (and the file's path, opened again on
        // the compression thread, might lead elsewhere by then): the next
        // GET makes the copy.
        if head || self.copies.resting(&name) || !self.copies.directory_usable(&dir) {
            return RequestNotificationStatus::Continue;
        }
        // One request queues each copy; this one and those that come
        // before it is made are sent the file as it is.
        if !self
            .copies
            .making
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone())
        {
            return RequestNotificationStatus::Continue;
        }
        let source = {
            let chunks = ctx.response().entity_chunks().to_vec();
            match Stamp::of_body(&chunks) {
                Some(stamps) => Source {
                    chunks,
                    len,
                    stamps,
                },
                None => {
                    self.copies.finished(&name);
                    return RequestNotificationStatus::Continue;
                }
            }
        };
        let job = Job {
            name,
            source,
            coding,
            level,
            disk_limit: config
                .do_disk_space_limiting
                .then(|| config.max_disk_space_usage * 1024 * 1024),
        };
        if let Err(job) = self.maker.queue(job) {
            self.copies.finished(&job.name);
        }
        RequestNotificationStatus::Continue
    }
}

/// The response's ETag when it is a strong one.
fn strong_etag(ctx: &HttpContext) -> Option<String> {
    ctx.response()
        .header(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|t| t.starts_with('"'))
        .map(str::to_owned)
}

/// Entry point.
pub fn register_module(
    _server_version: u32,
    registration: &mut ModuleRegistration<'_>,
    server: &ServerInfo,
) -> Result<(), ModuleError> {
    let config = registration.declare_section::<StaticCompressionConfig>("static_compression")?;
    let copies = Arc::new(Copies {
        folder: server.configuration_folder.clone(),
        ..Copies::default()
    });
    let maker = {
        let copies = copies.clone();
        Arc::new(Background::new(
            "riis-compress",
            QUEUED_COPIES,
            move |job| make(&copies, job),
        ))
    };
    registration.set_request_notifications(
        move || StaticCompression {
            config,
            copies: copies.clone(),
            maker: maker.clone(),
        },
        RequestNotification::SendResponse.into(),
        RequestNotifications::NONE,
    )?;
    registration
        .set_priority_for_request_notification(RequestNotification::SendResponse, Priority::Low);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{copy_name_kind, EntityChunk, Source, Stamp};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    /// A file of its own for one test, removed when the test ends.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let path = std::env::temp_dir()
                .join(format!("riis-compression-{name}-{}", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            Self(path)
        }

        /// Rewrites the file in place with `bytes`, dated `secs` after the
        /// epoch (so the change shows even within one clock tick).
        fn rewrite(&self, bytes: &[u8], secs: u64) {
            std::fs::write(&self.0, bytes).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&self.0)
                .unwrap()
                .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A copy is made only from the bytes the request's ETag names: a file
    /// changed after the request was queued (even in place, to the same
    /// length and modification time) is not copied.
    #[test]
    fn a_file_changed_after_the_request_is_not_copied() {
        let scratch = Scratch::new("by-body", b"first version");
        scratch.rewrite(b"first version", 1_000);
        let file = Arc::new(std::fs::File::open(&scratch.0).unwrap());
        let chunks = vec![
            EntityChunk::Memory(bytes::Bytes::from_static(b"<")),
            EntityChunk::File {
                file,
                offset: 6,
                length: 7,
            },
        ];
        let stamps = Stamp::of_body(&chunks).unwrap();
        let body = Source {
            chunks,
            len: 8,
            stamps,
        };
        assert_eq!(body.read().as_deref(), Some(&b"<version"[..]));

        // The same length and modification time: the change time tells.
        std::thread::sleep(Duration::from_millis(20));
        scratch.rewrite(b"other version", 1_000);
        assert_eq!(body.read(), None);
    }

    #[test]
    fn only_names_riis_gives_are_copies() {
        assert_eq!(copy_name_kind("0123456789abcdef.gz"), Some(false));
        assert_eq!(copy_name_kind("0123456789abcdef.zst"), Some(false));
        assert_eq!(
            copy_name_kind(".0123456789abcdef.br.4242.7.tmp"),
            Some(true)
        );
        for other in [
            ".keep",
            "notes.txt",
            "0123456789abcdef.gz.bak",
            "0123456789abcdeg.gz",
            "0123456789abcdef.deflate",
            ".0123456789abcdef.br.x.7.tmp",
            ".notes.txt.1.2.tmp",
        ] {
            assert_eq!(copy_name_kind(other), None, "{other}");
        }
    }
}
