//! The embedded defaults: what `riis serve` runs without a configuration
//! file, and the configuration `riis serve --root DIR` builds.
//!
//! The example site is compiled into the binary, so the defaults work from any
//! directory: when the repository's `examples/site` is not where it was at
//! build time, the embedded copy is written to a private temporary folder.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, ServerConfig};

const DEFAULTS: &str = include_str!("../../../examples/defaults.toml");

const SITE_FILES: &[(&str, &[u8])] = &[
    (
        "index.html",
        include_bytes!("../../../examples/site/index.html"),
    ),
    (
        "style.css",
        include_bytes!("../../../examples/site/style.css"),
    ),
    (
        "hello.txt",
        include_bytes!("../../../examples/site/hello.txt"),
    ),
];

/// Where the example site's folder is: the repository's copy when it is
/// there, otherwise the embedded copy, written out once.
fn example_base() -> Result<PathBuf, std::io::Error> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    if repo.join("site/index.html").is_file() {
        return Ok(repo);
    }
    // One folder per user id (not per $USER, which may be unset), made
    // owner-only: in a shared /tmp another user could otherwise create it
    // first and plant files, or links that the writes below would follow.
    let uid = nix::unistd::geteuid().as_raw();
    let base =
        std::env::temp_dir().join(format!("riis-{}-defaults-{uid}", env!("CARGO_PKG_VERSION")));
    owner_only_directory(&base, uid)?;
    let site = base.join("site");
    std::fs::create_dir_all(&site)?;
    for (name, data) in SITE_FILES {
        let path = site.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(*data) {
            std::fs::write(&path, data)?;
        }
    }
    Ok(base)
}

/// Creates `dir` readable by its owner only, or checks that the one there
/// is a directory of `uid` that nobody else may write to.
fn owner_only_directory(dir: &Path, uid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of this user that only it may write to",
            dir.display()
        )));
    }
    Ok(())
}

/// The embedded default configuration: the example site on 127.0.0.1:8080.
pub fn default_config() -> Result<ServerConfig, ConfigError> {
    let file = Path::new("<embedded defaults>");
    let base = example_base().map_err(|e| ConfigError {
        file: file.to_owned(),
        line: None,
        key: None,
        message: format!("cannot write the embedded example site: {e}"),
    })?;
    ServerConfig::parse(DEFAULTS, file, &base)
}

/// The defaults serving `root` instead of the example site.
pub fn root_config(root: &Path) -> Result<ServerConfig, ConfigError> {
    // Said of the option, not of a line of the embedded text.
    if !root.is_dir() {
        return Err(ConfigError {
            file: Path::new("--root").to_owned(),
            line: None,
            key: None,
            message: format!("`{}` is not a directory", root.display()),
        });
    }
    let text = DEFAULTS.replace("root = \"site\"", "root = \".\"");
    ServerConfig::parse(&text, Path::new("<--root>"), root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded defaults list the same modules, in the same order, as a
    /// file without `[[modules]]` gets: `riis serve` with no file and with a
    /// file that names only sites behave alike.
    #[test]
    fn the_embedded_defaults_list_the_default_modules() {
        let dir = std::env::temp_dir();
        let config = root_config(&dir).unwrap();
        let names: Vec<&str> = config.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, crate::config::DEFAULT_MODULES);
        assert!(names.contains(&"AnonymousAuthentication"));
    }
}
