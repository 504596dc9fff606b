//! The configuration examples of the user guide are TOML that riis can
//! read: each ```toml block of README.md, docs/ and docs/modules/ parses.
//! (Whether each passes `riis check-config` depends on folders,
//! certificates and servers of its own; the bundled example files are
//! checked whole in `server_binary.rs`.)

use std::path::{Path, PathBuf};

/// The Markdown files of the guide.
fn guide() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![repo.join("README.md")];
    for folder in ["docs", "docs/modules"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(repo.join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

/// The ```toml blocks of `text`, each with the line it starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut open {
            None if line.trim_start() == "```toml" => open = Some((n + 2, String::new())),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.extend(open.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(open.is_none(), "a ```toml block is not closed");
    blocks
}

#[test]
fn every_toml_example_of_the_guide_parses() {
    let mut count = 0;
    for file in guide() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, block) in toml_blocks(&text) {
            count += 1;
            if let Err(e) = block.parse::<toml::Table>() {
                panic!("{}:{line}: not TOML: {e}", file.display());
            }
        }
    }
    // The guide has dozens; none found would mean the search broke.
    assert!(count > 50, "only {count} TOML examples found");
}
