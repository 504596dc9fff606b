//! Virtual directories (a location's `physical_path`: IIS's
//! `<virtualDirectory>`, nginx's `alias`) over real sockets: files, the
//! folder redirect, default documents and listings come from the
//! directory's folder; nested locations inherit it; links out of it are
//! refused with `follow_symlinks = false`; CGI programs run from it with
//! it as `DOCUMENT_ROOT`; and the configuration errors name the key.

mod common;

use std::path::PathBuf;

use common::{Connection, RunningBinary, TempDir};

const MODULES: &str = r#"
[[modules]]
name = "StaticFile"
[[modules]]
name = "DefaultDocument"
[[modules]]
name = "DirectoryListing"
[[modules]]
name = "Cgi"

[[handlers]]
name = "CGI-exe"
path = "*.cgi"
resource_type = "File"
modules = ["Cgi"]

[[handlers]]
name = "StaticFile"
path = "*"
verbs = ["GET", "HEAD"]
resource_type = "Either"
modules = ["StaticFile", "DefaultDocument", "DirectoryListing"]
"#;

/// The site (`www`) and, beside it, the folders its virtual directories
/// map to; `locations` is appended to the site.
fn config(dir: &TempDir, locations: &str) -> PathBuf {
    if !dir.path().join("www").exists() {
        folders(dir);
    }
    dir.write(
        "riis.toml",
        format!(
            "{MODULES}\n[[sites]]\nname = \"Site\"\nroot = \"www\"\n\
             bindings = [\"127.0.0.1:0\"]\n{locations}"
        ),
    )
}

fn folders(dir: &TempDir) {
    use std::os::unix::fs::PermissionsExt;
    dir.write("www/index.html", "site home");
    dir.write("www/pictures/only-in-site.txt", "hidden by the directory");
    dir.write("shared/pictures/cat.txt", "a cat");
    dir.write("shared/pictures/index.html", "pictures home");
    dir.write("shared/pictures/thumbs/small.txt", "a small cat");
    dir.write("shared/pictures/private/listed.txt", "in a listing");
    dir.write("outside/secret.txt", "not for the web");
    std::os::unix::fs::symlink(
        dir.path().join("outside/secret.txt"),
        dir.path().join("shared/pictures/link.txt"),
    )
    .unwrap();
    let program = dir.write(
        "programs/env.cgi",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n\
         echo \"root=$DOCUMENT_ROOT file=$SCRIPT_FILENAME name=$SCRIPT_NAME pwd=$(pwd)\"\n",
    );
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const LOCATIONS: &str = r#"
[[sites.locations]]
path = "/pictures"
physical_path = "shared/pictures"
static_file = { follow_symlinks = false }

[[sites.locations]]
path = "/pictures/private"
directory_listing = { enabled = true }
default_document = { enabled = false }

[[sites.locations]]
path = "/bin"
physical_path = "programs"
"#;

#[test]
fn a_virtual_directory_serves_its_own_folder() {
    let dir = TempDir::new("vdir");
    let config = config(&dir, LOCATIONS);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    assert_eq!(conn.get("/").text(), "site home");
    assert_eq!(conn.get("/pictures/cat.txt").text(), "a cat");
    // The site's own folder of that name is not reached.
    assert_eq!(conn.get("/pictures/only-in-site.txt").status, 404);
    // A nested location maps into the same folder.
    assert_eq!(conn.get("/pictures/thumbs/small.txt").text(), "a small cat");
    // The directory itself: the folder redirect, then its default document.
    let resp = conn.get("/pictures");
    assert_eq!(resp.status, 301);
    assert_eq!(resp.header("location"), Some("/pictures/"));
    assert_eq!(conn.get("/pictures/").text(), "pictures home");
    // A listing of one of its folders, with the URLs of the directory.
    let listing = conn.get("/pictures/private/");
    assert_eq!(listing.status, 200);
    assert!(
        listing.text().contains("/pictures/private/listed.txt"),
        "{}",
        listing.text()
    );
    // A link out of the directory's folder, with follow_symlinks = false.
    assert_eq!(conn.get("/pictures/link.txt").status, 404);
    // Matched at a segment boundary.
    assert_eq!(conn.get("/picturesque").status, 404);
    // Locations ignore ASCII case, as IIS's do: any spelling of the
    // directory's path maps into its folder, and what follows keeps its
    // case (`CAT.txt` is no file there).
    assert_eq!(conn.get("/PICTURES/cat.txt").text(), "a cat");
    assert_eq!(conn.get("/Pictures/CAT.txt").status, 404);
    let listing = conn.get("/PICTURES/private/");
    assert_eq!(listing.status, 200, "the nested location's listing");
    assert!(listing.text().contains("listed.txt"), "{}", listing.text());
}

#[test]
fn a_program_in_a_virtual_directory_runs_from_it() {
    let dir = TempDir::new("vdir-cgi");
    let config = config(&dir, LOCATIONS);
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);

    let resp = conn.get("/bin/env.cgi");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let programs = std::fs::canonicalize(dir.path().join("programs")).unwrap();
    let listed = dir.path().join("programs");
    let text = resp.text();
    assert!(
        text.contains(&format!("root={} ", listed.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("file={}/env.cgi ", listed.display())),
        "{text}"
    );
    assert!(text.contains("name=/bin/env.cgi "), "{text}");
    assert!(
        text.trim_end()
            .ends_with(&format!("pwd={}", programs.display())),
        "{text}"
    );
}

#[test]
fn a_virtual_directory_that_is_not_a_folder_is_a_configuration_error() {
    let dir = TempDir::new("vdir-bad");
    for (physical, says) in [
        ("missing", "is not a usable directory"),
        ("www/index.html", "is not a directory"),
        ("", "the physical path is empty"),
    ] {
        let config = config(
            &dir,
            &format!("[[sites.locations]]\npath = \"/p\"\nphysical_path = \"{physical}\"\n"),
        );
        let out = common::riis_command("check-config", &config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{physical:?}");
        assert!(
            err.contains("key `sites[0].locations[0].physical_path`"),
            "{physical:?}: {err}"
        );
        assert!(err.contains(says), "{physical:?}: {err}");
    }
    let config = config(
        &dir,
        "[[sites.locations]]\npath = \"/\"\nphysical_path = \"shared\"\n",
    );
    let out = common::riis_command("check-config", &config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("set the site's `root` instead"), "{err}");
}

/// Folders written relative to a configuration in a folder beside them
/// (`../www`) reach programs without `..` in their paths: php-cgi and
/// php-fpm refuse a `SCRIPT_FILENAME` that has one.
#[test]
fn folders_above_the_configuration_are_named_without_parent_steps() {
    let dir = TempDir::new("vdir-up");
    config(&dir, "");
    let config = dir.write(
        "conf/riis.toml",
        format!(
            "{MODULES}\n[[sites]]\nname = \"Site\"\nroot = \"../www\"\n\
             bindings = [\"127.0.0.1:0\"]\n\
             [[sites.locations]]\npath = \"/bin\"\nphysical_path = \"../conf/../programs\"\n"
        ),
    );
    let server = RunningBinary::start(&["--config", config.to_str().unwrap()]);
    let mut conn = Connection::open(server.addr);
    assert_eq!(conn.get("/").text(), "site home");
    let resp = conn.get("/bin/env.cgi");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let programs = std::fs::canonicalize(dir.path().join("programs")).unwrap();
    let text = resp.text();
    assert!(
        text.contains(&format!("root={} ", programs.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("file={}/env.cgi ", programs.display())),
        "{text}"
    );
    assert!(!text.contains(".."), "{text}");
}

/// The warnings `check-config` prints for `config`, which must pass: the
/// message of each, by the key it names.
fn warnings_of(config: &std::path::Path) -> Vec<(String, String)> {
    let out = common::riis_command("check-config", config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    err.lines()
        .filter_map(|l| l.strip_prefix("riis: warning: "))
        .map(|w| {
            let key = w
                .split_once("key `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map_or("", |(key, _)| key);
            (key.to_owned(), w.to_owned())
        })
        .collect()
}

/// The warning at `key` among `warnings`.
fn warning_at<'a>(warnings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    warnings
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, w)| w.as_str())
}

/// `check-config` warns, and still passes, where a location's configuration
/// does not cover all the URLs of its files: a virtual directory inside
/// the site's root is also served at its URL there, and two folders whose
/// names differ only in case share a location (locations ignore case).
#[test]
fn check_config_warns_where_a_location_does_not_cover_its_files() {
    let dir = TempDir::new("vdir-warn");
    folders(&dir);
    dir.write("www/assets/media/a.png", "a picture");
    dir.write("www/public/a.txt", "public");
    dir.write("www/PUBLIC/b.txt", "not meant to be public");
    dir.write("www/docs/a.txt", "docs");
    let config = config(
        &dir,
        r#"
[[sites.locations]]
path = "/media"
physical_path = "www/assets/media"

[[sites.locations]]
path = "/public"

[[sites.locations]]
path = "/docs"
handlers = [
    { name = "Everything", path = "*", modules = ["StaticFile"] },
    { name = "Programs", path = "*.cgi", resource_type = "File", modules = ["Cgi"] },
]

[[sites.locations]]
path = "/pictures"
physical_path = "shared/pictures"

[[sites.locations]]
path = "/pictures/thumbs"
physical_path = "shared/pictures/thumbs"

[[sites.locations]]
path = "/small"
physical_path = "shared/pictures/thumbs"
"#,
    );
    let warnings = warnings_of(&config);
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    let warning = |key: &str| {
        warning_at(&warnings, key).unwrap_or_else(|| panic!("no warning at {key}: {warnings:?}"))
    };
    assert!(warning("sites[0].locations[0].physical_path")
        .contains("is inside the site's root, so its files are also served as `/assets/media/…`"));
    let twins = warning("sites[0].locations[1].path");
    assert!(
        twins.contains("locations ignore case")
            && twins.contains("www/public`")
            && twins.contains("www/PUBLIC`"),
        "{twins}"
    );
    assert!(warning("sites[0].locations[5].physical_path").contains(
        "is also the folder of location `/pictures/thumbs`, so its files are also served as `/pictures/thumbs/…`"
    ));
    assert!(warning("sites[0].locations[2].handlers[1]").contains(
        "handler `Programs` is never chosen: handler `Everything` before it (`*`, every method) takes every request it would"
    ));
    // Each names its line in the file.
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("www/assets/media"))
        .unwrap()
        + 1;
    assert!(
        warning("sites[0].locations[0].physical_path").contains(&format!("riis.toml:{line}: ")),
        "{warnings:?}"
    );

    // The server starts, and logs the same warnings.
    let log = dir.path().join("serve.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_riis"));
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .env("RIIS_LOG", "warn");
    let mut child = command.spawn().unwrap();
    let addr = common::listening_addr(&mut child);
    assert_eq!(common::get(addr, "/media/a.png").text(), "a picture");
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged.lines().filter(|l| l.contains(" WARN ")).count(),
        4,
        "{logged}"
    );
    assert!(
        logged.contains("handler `Programs` is never chosen"),
        "{logged}"
    );
}

/// The warnings' harder cases: a virtual directory that holds the site's
/// root, one reached through a link inside the root, and folders a
/// location names in two cases, with no warning where RequestFiltering
/// refuses the second URL anyway (a hidden segment, an internal location)
/// or where the two names are one folder.
#[test]
fn check_config_warns_of_held_roots_and_links_but_not_of_refused_urls() {
    let dir = TempDir::new("vdir-warn-more");
    folders(&dir);
    dir.write("elsewhere/e.txt", "elsewhere");
    dir.write("shared/uploads/u.txt", "an upload");
    std::os::unix::fs::symlink(
        dir.path().join("shared/uploads"),
        dir.path().join("www/uploads"),
    )
    .unwrap();
    dir.write("www/App_Data/files/f.txt", "data");
    dir.write("www/internal/media/m.txt", "media");
    dir.write("www/same/a.txt", "one folder");
    std::os::unix::fs::symlink(dir.path().join("www/same"), dir.path().join("www/SAME")).unwrap();
    dir.write("www/robots.txt", "robots");
    dir.write("www/.cache/store/c.txt", "cached");
    dir.write("www/ROBOTS.TXT", "ROBOTS");
    let config = dir.write(
        "riis.toml",
        format!(
            "[[modules]]\nname = \"RequestFiltering\"\n{MODULES}\n[[sites]]\nname = \"Site\"\nroot = \"www\"\n\
             bindings = [\"127.0.0.1:0\"]\n{}",
            r#"
[[sites.locations]]
path = "/all"
physical_path = "elsewhere"

[[sites.locations]]
path = "/files"
physical_path = "www/uploads"

[[sites.locations]]
path = "/data"
physical_path = "www/App_Data/files"

[[sites.locations]]
path = "/internal"
request_filtering = { internal = true }

[[sites.locations]]
path = "/media"
physical_path = "www/internal/media"

[[sites.locations]]
path = "/same"

[[sites.locations]]
path = "/robots.txt"

[[sites.locations]]
path = "/cache"
physical_path = "www/.cache/store"
"#
        ),
    );
    let warnings = warnings_of(&config);
    let err = format!("{warnings:?}");
    let at = |key: &str| warning_at(&warnings, key);
    let files = at("sites[0].locations[1].physical_path").unwrap_or_else(|| panic!("{err}"));
    assert!(
        files.contains("is inside the site's root, so its files are also served as `/uploads/…`"),
        "{files}"
    );
    let robots = at("sites[0].locations[6].path").unwrap_or_else(|| panic!("{err}"));
    assert!(
        robots.contains("www/ROBOTS.TXT` and `") && robots.contains("www/robots.txt` both get"),
        "{robots}"
    );
    // Refused anyway, or one folder: no warning.
    for quiet in [
        "sites[0].locations[2].physical_path",
        "sites[0].locations[4].physical_path",
        "sites[0].locations[5].path",
        // StaticFile refuses `/.cache/…` (`allow_hidden = false`).
        "sites[0].locations[7].physical_path",
    ] {
        assert!(at(quiet).is_none(), "{quiet}: {err}");
    }
    assert_eq!(warnings.len(), 2, "{err}");

    // A site's own list of hidden segments replaces riis's defaults: with
    // one that leaves `App_Data` out, `/App_Data/files/…` is served, and
    // the folder `/data` maps is reachable there too.
    let text = std::fs::read_to_string(&config).unwrap();
    let replaced = dir.write(
        "riis.toml",
        text.replacen(
            "bindings = [\"127.0.0.1:0\"]\n",
            "bindings = [\"127.0.0.1:0\"]\nrequest_filtering = { hidden_segments = [\".git\"] }\n",
            1,
        ),
    );
    let warnings = warnings_of(&replaced);
    assert!(
        warning_at(&warnings, "sites[0].locations[2].physical_path").is_some(),
        "{warnings:?}"
    );
    // So with a deeper location that reopens what is hidden above it.
    let reopened = dir.write(
        "riis.toml",
        format!(
            "{text}\n[[sites.locations]]\npath = \"/App_Data/files/pub\"\n\
             request_filtering = {{ hidden_segments = [\".git\"] }}\n"
        ),
    );
    let warnings = warnings_of(&reopened);
    assert!(
        warning_at(&warnings, "sites[0].locations[2].physical_path").is_some(),
        "{warnings:?}"
    );
    std::fs::write(&config, text).unwrap();

    // A virtual directory that holds the site's root serves the root's
    // files at its own URLs, outside the root's locations.
    let text = std::fs::read_to_string(&config).unwrap();
    let config = dir.write(
        "riis.toml",
        text.replace("physical_path = \"elsewhere\"", "physical_path = \".\""),
    );
    let warnings = warnings_of(&config);
    let all = warning_at(&warnings, "sites[0].locations[0].physical_path")
        .unwrap_or_else(|| panic!("{warnings:?}"));
    assert!(
        all.contains("holds the site's root") && all.contains("also served as `/all/www/…`"),
        "{all}"
    );
}
