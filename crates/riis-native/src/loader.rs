//! Loading module libraries, as IIS loads the DLLs of `<globalModules>`.
//!
//! A library is opened once, checked (the `riis_module_abi` stamp the header
//! leaves in it, then the entry point), and kept loaded for the life of the
//! process: a module may have started threads or handed out callbacks, so
//! unloading it would not be safe.

use std::fmt;
use std::path::{Path, PathBuf};

use riis_abi::{riis_register_module_fn, ABI_MAJOR, ABI_MINOR};
use riis_pipeline::{ModuleError, ModuleRegistration, ServerInfo};

/// A module library named in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeModuleSpec {
    /// The module's name (the `[[modules]]` list refers to it).
    pub name: String,
    /// The shared library.
    pub image: PathBuf,
    /// IIS-style precondition: a comma-separated list of `bitness32`,
    /// `bitness64` and `integratedMode`; the module loads only when all hold.
    pub precondition: Option<String>,
}

/// Why a module library cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The image file does not exist.
    MissingFile(PathBuf),
    /// The file is not a loadable shared library (the loader's message).
    NotSharedLibrary(PathBuf, String),
    /// The library exports neither `RegisterModule` nor the C++ entry point.
    MissingRegisterModule(PathBuf),
    /// The library has no `riis_module_abi` stamp: not built with
    /// `riis_module.h`.
    MissingAbiStamp(PathBuf),
    /// Built for an ABI this server cannot host.
    AbiMismatch {
        /// The image.
        image: PathBuf,
        /// What the module was built for (major, minor).
        module: (u32, u32),
    },
    /// The precondition names something riis does not know.
    UnknownPrecondition(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingFile(p) => write!(f, "image `{}` does not exist", p.display()),
            Self::NotSharedLibrary(p, why) => {
                write!(f, "image `{}` is not a loadable shared library: {why}", p.display())
            }
            Self::MissingRegisterModule(p) => write!(
                f,
                "image `{}` does not export `RegisterModule` (was it declared extern \"C\"?)",
                p.display()
            ),
            Self::MissingAbiStamp(p) => write!(
                f,
                "image `{}` has no `riis_module_abi` symbol: it was not built with riis_module.h or httpserv.h",
                p.display()
            ),
            Self::AbiMismatch { image, module } => write!(
                f,
                "image `{}` was built for riis module ABI {}.{}; this server hosts {}.0 to {}.{}",
                image.display(),
                module.0,
                module.1,
                ABI_MAJOR,
                ABI_MAJOR,
                ABI_MINOR
            ),
            Self::UnknownPrecondition(p) => write!(
                f,
                "unknown precondition `{p}` (known: bitness32, bitness64, integratedMode, classicMode)"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Whether a precondition holds on this server. riis runs every module in the
/// integrated pipeline, so `integratedMode` always holds and `classicMode`
/// never does.
pub fn precondition_holds(precondition: &str) -> Result<bool, LoadError> {
    let mut holds = true;
    for part in precondition
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        holds &= match part {
            "bitness64" => cfg!(target_pointer_width = "64"),
            "bitness32" => cfg!(target_pointer_width = "32"),
            "integratedMode" => true,
            "classicMode" => false,
            other => return Err(LoadError::UnknownPrecondition(other.to_owned())),
        };
    }
    Ok(holds)
}

/// A loaded, checked module library.
#[derive(Clone, Copy)]
pub struct NativeLibrary {
    entry: riis_register_module_fn,
    /// The ABI minor version the library was built for.
    abi_minor: u32,
}

impl fmt::Debug for NativeLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeLibrary").finish_non_exhaustive()
    }
}

/// A file as it was: device, inode and modification time.
type FileStamp = (u64, u64, i64);

/// Each image's file as it was when first loaded, by path.
static LOADED_FILES: std::sync::Mutex<Vec<(PathBuf, FileStamp)>> =
    std::sync::Mutex::new(Vec::new());

/// Warns when `image` is not the file loaded from that path before: the
/// dynamic loader hands back the library already loaded under the name, so
/// a replaced file (a new build copied over it) runs its old code until the
/// process restarts, as a DLL does until IIS recycles its worker process.
fn warn_if_replaced(image: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    let stamp = (meta.dev(), meta.ino(), meta.mtime());
    let mut loaded = LOADED_FILES.lock().unwrap_or_else(|e| e.into_inner());
    match loaded.iter().find(|(path, _)| path == image) {
        Some((_, first)) if *first != stamp => tracing::warn!(
            image = %image.display(),
            "the module image changed since it was loaded; a loaded library cannot be \
             replaced in a running process, so its modules go on with the code loaded \
             first: restart riis to load the new one"
        ),
        Some(_) => {}
        None => loaded.push((image.to_owned(), stamp)),
    }
}

impl NativeLibrary {
    /// Opens and checks `image`. The library stays loaded for the life of the
    /// process (opening the same image again reuses it).
    pub fn open(image: &Path) -> Result<Self, LoadError> {
        match std::fs::metadata(image) {
            Err(_) => return Err(LoadError::MissingFile(image.to_owned())),
            // dlopen would block on a FIFO (check-config and reloads with
            // it) and read a device: only regular files are libraries.
            Ok(meta) if !meta.is_file() => {
                return Err(LoadError::NotSharedLibrary(
                    image.to_owned(),
                    "not a regular file".to_owned(),
                ))
            }
            Ok(meta) => warn_if_replaced(image, &meta),
        }
        // RTLD_NOW: a symbol the library needs and nothing provides is a
        // load error now, not the process's death at the first call that
        // reaches it (the lazy binding's "symbol lookup error").
        // SAFETY: loading a library runs its initialisers; which libraries to
        // trust is the operator's decision, made in the configuration.
        let library = unsafe {
            libloading::os::unix::Library::open(
                Some(image),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        }
        .map_err(|e| LoadError::NotSharedLibrary(image.to_owned(), e.to_string()))?;
        // Kept loaded for the process's life (see the module docs).
        let library: &'static libloading::Library =
            Box::leak(Box::new(libloading::Library::from(library)));

        // The C++ layer's entry point wins: the library's RegisterModule then
        // has the C++ (IIS) signature and must not be called directly.
        // SAFETY: the symbol, when present, is the function httpserv.h defines
        // with the riis_register_module_fn signature.
        let cxx = unsafe { library.get::<riis_register_module_fn>(riis_abi::CXX_REGISTER_SYMBOL) };
        // SAFETY: a C module's RegisterModule has this signature
        // (riis_module.h).
        let c = unsafe { library.get::<riis_register_module_fn>(riis_abi::REGISTER_SYMBOL) };
        let entry = match (cxx, c) {
            (Ok(entry), _) | (Err(_), Ok(entry)) => *entry,
            (Err(_), Err(_)) => return Err(LoadError::MissingRegisterModule(image.to_owned())),
        };
        // SAFETY: the stamp riis_module.h defines is a const uint32_t.
        let stamp = unsafe { library.get::<*const u32>(riis_abi::ABI_SYMBOL) }
            .map_err(|_| LoadError::MissingAbiStamp(image.to_owned()))?;
        // SAFETY: the symbol's address points at the stamp, a readable
        // uint32_t in the library's data.
        let version = unsafe { **stamp };
        let (major, minor) = (version >> 16, version & 0xFFFF);
        if major != ABI_MAJOR || minor > ABI_MINOR {
            return Err(LoadError::AbiMismatch {
                image: image.to_owned(),
                module: (major, minor),
            });
        }
        Ok(Self {
            entry,
            abi_minor: minor,
        })
    }

    /// Registers the module: through its entry point, or, while an earlier
    /// configuration that lists it (under the same name) is still in use,
    /// with what its entry point registered then, as IIS calls
    /// `RegisterModule` once in a worker process (see
    /// `registration::Registered`).
    pub fn register(
        &self,
        registration: &mut ModuleRegistration<'_>,
        _server: &ServerInfo,
    ) -> Result<(), ModuleError> {
        crate::registration::register_library_module(self.entry, self.abi_minor, registration)
    }
}
