//! The file-system side of WebDav's methods: paths held to their folder
//! without symbolic links, claims that keep two methods off the same files
//! at once, trees copied and walked without recursion, uploads put in
//! place whole.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use super::properties;

/// The resolved path of `path`, a path below `configured_root` (the folder
/// a URL maps into, `real_root` that folder resolved), when no part of it
/// that exists is a symbolic link; `None` otherwise, or when `path` is
/// not below the folder at all (a MapPath module mapped it elsewhere).
///
/// WebDav follows no link inside the folder: locations guard URLs, and a
/// link would let a URL under one location reach files under another (or
/// outside the site). The part of `path` that does not exist yet is what a
/// PUT or MKCOL is to make.
pub(super) fn plain_path(configured_root: &Path, real_root: &Path, path: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(configured_root).ok()?;
    let mut at = real_root.to_path_buf();
    let mut exists = true;
    for component in rest.components() {
        match component {
            Component::Normal(name) => at.push(name),
            Component::CurDir => continue,
            _ => return None,
        }
        if exists {
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => return None,
                Ok(_) => {}
                Err(_) => exists = false,
            }
        }
    }
    Some(at)
}

/// `folder` (a site's or virtual directory's, as configured) resolved
/// through its links: remembered with the identity (device and inode) of
/// what it leads to, so that each request costs two `stat`s rather than a
/// `readlink` per component, and a link switched to another folder (a
/// `current` release) is resolved again at once.
pub(super) fn real_folder(folder: &Path) -> std::io::Result<PathBuf> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    type Known = HashMap<PathBuf, ((u64, u64), PathBuf)>;
    static KNOWN: LazyLock<Mutex<Known>> = LazyLock::new(Mutex::default);
    let meta = std::fs::metadata(folder)?;
    let id = (meta.dev(), meta.ino());
    {
        let known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known_id, real)) = known.get(folder) {
            // The remembered path must still be that folder too: a folder
            // removed and another made may get the same inode number.
            let still = std::fs::symlink_metadata(real)
                .is_ok_and(|m| m.is_dir() && (m.dev(), m.ino()) == id);
            if *known_id == id && still {
                return Ok(real.clone());
            }
        }
    }
    let real = std::fs::canonicalize(folder)?;
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    // Folders come from the configuration: few, but reloads may bring new
    // ones; the memory starts over rather than grow.
    if known.len() >= 1024 {
        known.clear();
    }
    known.insert(folder.to_path_buf(), (id, real.clone()));
    Ok(real)
}

/// What a method waiting for its paths does once it has them.
/// Handed its claim later, it may give back work to do on this thread
/// once every other freed method was handed its paths (see
/// [`Granted::Later`]).
pub(super) type Resume = Box<dyn FnOnce(Claim, Granted) -> Option<Deferred> + Send>;

/// Work a freed method could not queue, done after the others are handed
/// their paths.
pub(super) type Deferred = Box<dyn FnOnce() + Send>;

/// When a claim was granted.
pub(super) enum Granted {
    /// At once, on the thread that asked.
    Now,
    /// When another method let go of its paths, on that method's thread:
    /// the waiting method is to be queued again, not run there; what it
    /// cannot queue it gives back, to be done there after every method
    /// the release freed was handed its paths.
    Later,
    /// Never: [`MOST_WAITING`] methods wait already (the claim handed is
    /// empty).
    Refused,
}

/// The resolved paths methods are working on now, and the methods waiting
/// for some of them.
struct Claims {
    held: Vec<PathBuf>,
    waiting: Vec<(Vec<PathBuf>, Resume)>,
}

static CLAIMS: LazyLock<Mutex<Claims>> = LazyLock::new(|| {
    Mutex::new(Claims {
        held: Vec::new(),
        waiting: Vec::new(),
    })
});

/// Paths a method works on, held until it is dropped.
pub(super) struct Claim(Vec<PathBuf>);

fn overlaps(held: &[PathBuf], paths: &[PathBuf]) -> bool {
    held.iter()
        .any(|h| paths.iter().any(|p| h.starts_with(p) || p.starts_with(h)))
}

/// The most methods that may wait for paths at once; past that a method
/// is refused (503) rather than wait: the waiting list is walked at each
/// release, and a flood of requests on one folder must not make that walk
/// long.
pub(super) const MOST_WAITING: usize = 256;

/// Claims `paths` for a method and then calls `resume`: at once when no
/// other method works on them, on what is inside them or on what holds
/// them, and none that came earlier waits for them; else once those
/// methods let go, in the order they came. No thread waits meanwhile: a
/// long COPY holds up only the methods on its own tree, not the module's
/// threads. A COPY into a folder while another client moves it away, two
/// PROPPATCHes of one file, a PUT finishing while its folder is deleted:
/// each goes after the other, so neither undoes the other's work halfway.
/// All of a method's paths are claimed at once, so no two methods wait for
/// each other. When [`MOST_WAITING`] wait already, `resume` is told so
/// at once ([`Granted::Refused`]).
pub(super) fn claim_then(paths: Vec<PathBuf>, resume: Resume) {
    let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    let busy =
        overlaps(&claims.held, &paths) || claims.waiting.iter().any(|(w, _)| overlaps(w, &paths));
    if busy {
        if claims.waiting.len() >= MOST_WAITING {
            drop(claims);
            resume(Claim(Vec::new()), Granted::Refused);
            return;
        }
        claims.waiting.push((paths, resume));
        return;
    }
    claims.held.extend(paths.iter().cloned());
    drop(claims);
    resume(Claim(paths), Granted::Now);
}

/// Methods with their paths, to be handed them in this order.
type Handing = std::collections::VecDeque<(Vec<PathBuf>, Resume)>;

thread_local! {
    /// The methods this thread is handing their paths to, while it does:
    /// one handed paths may let go of them at once (refused, its client
    /// gone), and the methods that frees join this list rather than be
    /// handed theirs from inside (a chain of such would grow the stack).
    static HANDING: std::cell::RefCell<Option<Handing>> = const { std::cell::RefCell::new(None) };
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut ready = std::collections::VecDeque::new();
        {
            let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
            for path in &self.0 {
                if let Some(i) = claims.held.iter().position(|h| h == path) {
                    claims.held.swap_remove(i);
                }
            }
            // In the order they came: those whose paths are free now and
            // that no earlier waiter's paths overlap.
            let mut earlier: Vec<PathBuf> = Vec::new();
            let mut i = 0;
            while i < claims.waiting.len() {
                let paths = &claims.waiting[i].0;
                if overlaps(&claims.held, paths) || overlaps(&earlier, paths) {
                    earlier.extend(paths.iter().cloned());
                    i += 1;
                    continue;
                }
                let (paths, resume) = claims.waiting.remove(i);
                claims.held.extend(paths.iter().cloned());
                ready.push_back((paths, resume));
            }
        }
        let outermost = HANDING.with(|handing| {
            let mut handing = handing.borrow_mut();
            match handing.as_mut() {
                Some(list) => {
                    list.extend(ready.drain(..));
                    false
                }
                None => {
                    *handing = Some(std::mem::take(&mut ready));
                    true
                }
            }
        });
        if !outermost {
            return;
        }
        // Freed methods first, in order; then, one at a time, the work
        // they gave back (which may free more). A panic in one is caught
        // here, so the rest are still handed on and the list is cleared.
        let mut deferred: std::collections::VecDeque<Deferred> = std::collections::VecDeque::new();
        loop {
            let next = HANDING.with(|h| h.borrow_mut().as_mut().and_then(|l| l.pop_front()));
            if let Some((paths, resume)) = next {
                let handed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    resume(Claim(paths), Granted::Later)
                }));
                match handed {
                    Ok(Some(work)) => deferred.push_back(work),
                    Ok(None) => {}
                    Err(_) => tracing::error!("WebDav: a waiting method panicked when resumed"),
                }
                continue;
            }
            let Some(work) = deferred.pop_front() else {
                break;
            };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
                tracing::error!("WebDav: a waiting method panicked");
            }
        }
        HANDING.with(|h| *h.borrow_mut() = None);
    }
}

/// What a failed member of a copy is answered with: its href and status.
pub(super) type Failures = Vec<(String, u16)>;

/// Copies `from` to `to` (a folder with what is in it when `infinite`),
/// dead properties included, by a walk with a list of its own (a tree of
/// thousands of levels must not overflow the thread's stack). Names that
/// `shown` refuses (hidden ones) are not copied; a symbolic link is not
/// copied (403 for it: WebDav makes no links), nor a FIFO, socket or
/// device. A copied file loses
/// set-user-ID and similar bits. `href` makes a member's href from its
/// URL. Gives the members that failed.
pub(super) fn copy_tree(
    from: &Path,
    to: &Path,
    url: &str,
    infinite: bool,
    shown: &dyn Fn(&str) -> bool,
    href: &dyn Fn(&str, bool) -> String,
) -> Failures {
    use std::os::unix::fs::PermissionsExt;
    let mut failed = Vec::new();
    let mut pending = vec![(from.to_path_buf(), to.to_path_buf(), url.to_owned(), true)];
    while let Some((from, to, url, top)) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&from) {
            Ok(m) => m,
            Err(e) => {
                failed.push((href(&url, false), super::io_status(&e)));
                continue;
            }
        };
        // A link is not followed; a FIFO, socket or device is not a file
        // to copy (opening a FIFO would wait for a writer for good).
        if meta.file_type().is_symlink() || !(meta.is_file() || meta.is_dir()) {
            failed.push((href(&url, false), 403));
            continue;
        }
        if !meta.is_dir() {
            let copied = std::fs::copy(&from, &to).and_then(|_| {
                let mode = meta.permissions().mode();
                if mode & 0o7000 != 0 {
                    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode & 0o777))?;
                }
                properties::copy_dead(&from, &to)
            });
            if let Err(e) = copied {
                failed.push((href(&url, false), super::io_status(&e)));
            }
            continue;
        }
        if let Err(e) = std::fs::create_dir(&to).and_then(|()| properties::copy_dead(&from, &to)) {
            failed.push((href(&url, true), super::io_status(&e)));
            continue;
        }
        if top && !infinite {
            continue;
        }
        let entries = match std::fs::read_dir(&from) {
            Ok(e) => e,
            Err(e) => {
                failed.push((href(&url, true), super::io_status(&e)));
                continue;
            }
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(text) = name.to_str().filter(|n| shown(n)) else {
                continue;
            };
            let child_url = format!("{}/{text}", url.trim_end_matches('/'));
            pending.push((entry.path(), to.join(&name), child_url, false));
        }
    }
    failed
}

/// Whether `path` is, or (a folder) holds, a symbolic link: a MOVE would
/// carry it to a URL whose location guards it otherwise.
pub(super) fn holds_link(path: &Path) -> std::io::Result<bool> {
    let mut pending = vec![path.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            return Ok(true);
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(false)
}

/// Removes a file, a link or a whole folder.
pub(super) fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path)? {
        m if m.is_dir() => std::fs::remove_dir_all(path),
        _ => std::fs::remove_file(path),
    }
}

/// Removes `path` for a DELETE: a file, a link, or a folder with all that
/// is in it, by a walk with a list of its own. Unlike
/// `std::fs::remove_dir_all`, which stops at the first member it cannot
/// remove with some members gone and the rest not, it goes on past such
/// a member and gives each, with its status and its href (`href` makes
/// it from its URL below `url`): RFC 4918 §9.6.1 answers them in a 207.
/// The folders holding one stay, and are not listed (a folder cannot go
/// while something is in it, and the RFC keeps the answer to the member
/// that failed). `remove_one` removes one file (`false`) or empty folder
/// (`true`).
pub(super) fn remove_reporting(
    path: &Path,
    url: &str,
    href: &dyn Fn(&str, bool) -> String,
    remove_one: &dyn Fn(&Path, bool) -> std::io::Result<()>,
) -> Failures {
    enum Step {
        /// Look at it: remove a file, list a folder.
        Enter(PathBuf, String),
        /// A folder whose members were all looked at: remove it.
        Leave(PathBuf, String),
    }
    let mut failed = Vec::new();
    // The folders that keep a member that failed, so stay.
    let mut kept: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let keep_ancestors = |of: &Path, kept: &mut std::collections::HashSet<PathBuf>| {
        for folder in of.ancestors().skip(1) {
            if !folder.starts_with(path) || !kept.insert(folder.to_path_buf()) {
                break;
            }
        }
    };
    let mut pending = vec![Step::Enter(path.to_path_buf(), url.to_owned())];
    while let Some(step) = pending.pop() {
        match step {
            Step::Enter(at, at_url) => {
                let meta = match std::fs::symlink_metadata(&at) {
                    Ok(m) => m,
                    // Gone meanwhile (another process's work): as wanted.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        failed.push((href(&at_url, false), super::io_status(&e)));
                        keep_ancestors(&at, &mut kept);
                        continue;
                    }
                };
                if !meta.is_dir() {
                    if let Err(e) = remove_one(&at, false) {
                        failed.push((href(&at_url, false), super::io_status(&e)));
                        keep_ancestors(&at, &mut kept);
                    }
                    continue;
                }
                let entries = match std::fs::read_dir(&at) {
                    Ok(entries) => entries,
                    Err(e) => {
                        failed.push((href(&at_url, true), super::io_status(&e)));
                        keep_ancestors(&at, &mut kept);
                        continue;
                    }
                };
                pending.push(Step::Leave(at.clone(), at_url.clone()));
                for entry in entries.filter_map(Result::ok) {
                    let name = entry.file_name();
                    let member_url = format!(
                        "{}/{}",
                        at_url.trim_end_matches('/'),
                        name.to_string_lossy()
                    );
                    pending.push(Step::Enter(entry.path(), member_url));
                }
            }
            Step::Leave(at, at_url) => {
                if kept.contains(&at) {
                    continue;
                }
                if let Err(e) = remove_one(&at, true) {
                    failed.push((href(&at_url, true), super::io_status(&e)));
                    keep_ancestors(&at, &mut kept);
                }
            }
        }
    }
    failed
}

/// Removes one file (`false`) or empty folder (`true`).
pub(super) fn remove_one(path: &Path, folder: bool) -> std::io::Result<()> {
    if folder {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// A name beside `path` no other file has: `.riis-<kind>-` and 128
/// random bits in hex.
pub(super) fn hidden_beside(path: &Path, kind: &str) -> PathBuf {
    let token = super::locks::new_token();
    let unique = token["urn:uuid:".len()..].replace('-', "");
    path.parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".riis-{kind}-{unique}"))
}

/// A file for an upload's bytes in `folder`: unnamed (`O_TMPFILE`) where
/// the file system allows it, so that nothing of an upload cut short, or
/// of a server killed during one, stays behind.
pub(super) fn upload_file(folder: &Path) -> std::io::Result<File> {
    tempfile::tempfile_in(folder)
}

/// The mode of a file the server makes: 0666 less the process's umask.
/// The umask is read once, from `/proc/self/status` (Linux 4.7 and
/// later): umask(2) cannot read it without setting it, for every thread
/// at once. Without it, 022 (the usual one) is assumed.
pub(super) fn new_file_mode() -> u32 {
    static UMASK: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(umask_of_status)
            .unwrap_or(0o022)
    });
    0o666 & !*UMASK
}

/// The `Umask:` line of a `/proc/<pid>/status` text, in octal.
fn umask_of_status(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok().map(|m| m & 0o777)
}

/// Puts the upload `file` at `target` with one rename: linked first under
/// a hidden name beside it (copied there instead when the file system
/// cannot link an unnamed file, or the folder moved to another one), given
/// `mode` and, when it replaces a file, that file's dead properties.
pub(super) fn put_in_place(
    file: &mut File,
    target: &Path,
    mode: u32,
    replaces: bool,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let named = hidden_beside(target, "put");
    let linked = rustix::fs::linkat(
        rustix::fs::CWD,
        format!("/proc/self/fd/{}", file.as_raw_fd()),
        rustix::fs::CWD,
        &named,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    );
    if linked.is_err() {
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&named)?;
        file.seek(SeekFrom::Start(0))?;
        let copied = std::io::copy(file, &mut copy);
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&named);
            return Err(e);
        }
    }
    let placed =
        std::fs::set_permissions(&named, std::fs::Permissions::from_mode(mode)).and_then(|()| {
            if replaces {
                // A file system without them has none to keep.
                let _ = properties::copy_dead(target, &named);
                keep_owner(target, &named);
            }
            std::fs::rename(&named, target)
        });
    if placed.is_err() {
        let _ = std::fs::remove_file(&named);
    }
    placed
}

/// Gives `new` the owner and group of `old` where the server may (running
/// as root, or as the owner with the group among its own): a PUT over a
/// file keeps whose it is. Elsewhere the new file is the server's, as any
/// file it makes.
fn keep_owner(old: &Path, new: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(old) else {
        return;
    };
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    // The new file is the server's already: a chown would only cost a
    // write to the file system's journal.
    if (meta.uid(), meta.gid()) == (uid.as_raw(), gid.as_raw()) {
        return;
    }
    let _ = nix::unistd::chown(
        new,
        Some(nix::unistd::Uid::from_raw(meta.uid())),
        Some(nix::unistd::Gid::from_raw(meta.gid())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        let real = root.canonicalize().unwrap();
        assert_eq!(
            plain_path(&root, &real, &root.join("a/new/x")),
            Some(real.join("a/new/x"))
        );
        assert_eq!(plain_path(&root, &real, &root.join("link")), None);
        assert_eq!(plain_path(&root, &real, &root.join("link/x")), None);
        assert_eq!(plain_path(&root, &real, Path::new("/etc/passwd")), None);
    }

    #[test]
    fn claims_on_one_tree_wait_for_each_other() {
        use std::sync::mpsc::channel;
        let (tx, rx) = channel::<(&str, Claim, bool)>();
        let granted = |name: &'static str| -> Resume {
            let tx = tx.clone();
            Box::new(move |claim, when| {
                let _ = tx.send((name, claim, matches!(when, Granted::Now)));
                None
            })
        };
        claim_then(vec![PathBuf::from("/claims-test/a")], granted("first"));
        let (name, first, now) = rx.recv().unwrap();
        assert_eq!((name, now), ("first", true));
        // Inside it: waits, without a thread. Another tree: at once.
        claim_then(vec![PathBuf::from("/claims-test/a/b")], granted("inside"));
        claim_then(vec![PathBuf::from("/claims-test/ab")], granted("beside"));
        // Inside what waits: after it, though nobody holds it.
        claim_then(vec![PathBuf::from("/claims-test/a/b/c")], granted("later"));
        let (name, beside, now) = rx.recv().unwrap();
        assert_eq!((name, now), ("beside", true));
        drop(beside);
        assert!(rx.try_recv().is_err(), "inside still waits");
        drop(first);
        let (name, inside, now) = rx.recv().unwrap();
        assert_eq!((name, now), ("inside", false));
        assert!(rx.try_recv().is_err(), "later waits for inside");
        drop(inside);
        let (name, _later, now) = rx.recv().unwrap();
        assert_eq!((name, now), ("later", false));
    }

    #[test]
    fn a_waiter_that_panics_loses_no_other_waiter() {
        let (tx, rx) = std::sync::mpsc::channel::<&str>();
        let keep = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hold = |name: &'static str| -> Resume {
            let (tx, keep) = (tx.clone(), keep.clone());
            Box::new(move |claim, _| {
                keep.lock().unwrap().push(claim);
                tx.send(name).unwrap();
                None
            })
        };
        claim_then(
            vec![
                PathBuf::from("/claims-panic/a"),
                PathBuf::from("/claims-panic/b"),
            ],
            hold("holder"),
        );
        assert_eq!(rx.recv().unwrap(), "holder");
        claim_then(
            vec![PathBuf::from("/claims-panic/a")],
            Box::new(|_, _| panic!("a method's bug")),
        );
        claim_then(vec![PathBuf::from("/claims-panic/b")], hold("b"));
        let holder = keep.lock().unwrap().pop().unwrap();
        drop(holder);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(),
            "b"
        );
        // This thread still hands paths on afterwards.
        claim_then(vec![PathBuf::from("/claims-panic/c")], hold("c"));
        assert_eq!(rx.recv().unwrap(), "c");
        claim_then(vec![PathBuf::from("/claims-panic/c")], hold("d"));
        let c = keep.lock().unwrap().pop().unwrap();
        drop(c);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(),
            "d"
        );
    }

    #[test]
    fn a_chain_of_waiters_let_go_at_once_is_handed_on_without_recursion() {
        // Each waiter, handed its path, lets go at once (as a refused one
        // does): 200 in a row must not nest 200 deep.
        let holder = std::sync::Arc::new(std::sync::Mutex::new(None));
        let h = holder.clone();
        claim_then(
            vec![PathBuf::from("/claims-chain/x")],
            Box::new(move |c, _| {
                *h.lock().unwrap() = Some(c);
                None
            }),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..200 {
            let tx = tx.clone();
            claim_then(
                vec![PathBuf::from("/claims-chain/x")],
                Box::new(move |claim, _| {
                    drop(claim);
                    tx.send(()).unwrap();
                    None
                }),
            );
        }
        drop(holder.lock().unwrap().take());
        for _ in 0..200 {
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        }
    }

    #[test]
    fn deep_trees_copy_and_walk_without_recursion() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().join("from");
        for _ in 0..300 {
            deep.push("a");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), "x").unwrap();
        let failed = copy_tree(
            &dir.path().join("from"),
            &dir.path().join("to"),
            "/to",
            true,
            &|_| true,
            &|u, _| u.to_owned(),
        );
        assert!(failed.is_empty(), "{failed:?}");
        assert!(!holds_link(&dir.path().join("to")).unwrap());
        std::os::unix::fs::symlink("/", dir.path().join("to/l")).unwrap();
        assert!(holds_link(&dir.path().join("to")).unwrap());
    }

    #[test]
    fn a_delete_goes_on_past_a_member_it_cannot_remove() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("d");
        for folder in ["keep/deeper", "gone/deeper"] {
            std::fs::create_dir_all(top.join(folder)).unwrap();
        }
        for file in [
            "a",
            "keep/b",
            "keep/deeper/stuck",
            "gone/c",
            "gone/deeper/e",
            "z",
        ] {
            std::fs::write(top.join(file), "x").unwrap();
        }
        let stuck = top.join("keep/deeper/stuck");
        let failing = |path: &Path, folder: bool| {
            if path == stuck {
                Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            } else {
                remove_one(path, folder)
            }
        };
        let failed = remove_reporting(&top, "/d", &|u, _| u.to_owned(), &failing);
        // The member alone is answered; the folders holding it stay.
        assert_eq!(failed, [("/d/keep/deeper/stuck".to_owned(), 403)]);
        assert!(stuck.exists());
        for gone in ["a", "z", "gone", "keep/b"] {
            assert!(!top.join(gone).exists(), "{gone}");
        }
        // Nothing in the way: all of it goes.
        let failed = remove_reporting(&top, "/d", &|u, _| u.to_owned(), &remove_one);
        assert!(failed.is_empty(), "{failed:?}");
        assert!(!top.exists());
        // The target itself failing is its own answer.
        std::fs::write(&top, "x").unwrap();
        let refusing =
            |_: &Path, _: bool| Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        let failed = remove_reporting(&top, "/d", &|u, _| u.to_owned(), &refusing);
        assert_eq!(failed, [("/d".to_owned(), 403)]);
    }

    #[test]
    fn the_umask_is_read_from_the_status_file() {
        assert_eq!(
            umask_of_status("Name:\triis\nUmask:\t0027\nState:\tS\n"),
            Some(0o027)
        );
        assert_eq!(umask_of_status("Name:\triis\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(umask_of_status(&own).is_some(), "{own}");
    }

    #[test]
    fn uploads_are_put_in_place_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t.txt");
        std::fs::write(&target, "old").unwrap();
        let mut file = upload_file(dir.path()).unwrap();
        file.write_all(b"new bytes").unwrap();
        put_in_place(&mut file, &target, 0o640, true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new bytes");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "nothing else is left");
    }
}
