//! The real file system the engine probes when it chooses a handler.
//!
//! A probe opens the path and asks the open file what it is (`open` +
//! `fstat`), so the static handler can read the same descriptor: the path is
//! resolved once per request, as nginx does. The open never blocks (a FIFO in
//! a site root would otherwise hang a worker), and anything but a regular
//! file or a directory counts as absent, so devices and pipes are never
//! served.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use riis_pipeline::{FileSystem, Probe, ResourceInfo};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFileSystem;

impl FileSystem for RealFileSystem {
    fn probe(&self, path: &Path) -> Option<Probe> {
        let file: File = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if meta.is_dir() {
            return Some(Probe {
                info: ResourceInfo::directory(),
                file: None,
            });
        }
        if !meta.is_file() {
            return None;
        }
        Some(Probe {
            info: ResourceInfo::file(meta.len(), meta.modified().ok()),
            file: Some(file),
        })
    }
}
