//! Locates the library's built examples for tests that run them as child
//! processes, and refuses stale ones. Shared by the workspace's test crates
//! (`#[path]`-included), so every test finds them the same way.
#![allow(dead_code)] // Each includer uses part of it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

const REBUILD: &str = "run the whole suite with `scripts/test.sh` (it builds the examples), \
    or `cargo build --workspace --examples --all-features` before running one test target";

/// The workspace root: the nearest ancestor of this crate holding `Cargo.lock`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .expect("a workspace root with Cargo.lock")
        .to_path_buf()
}

/// The path of the built example `name`, in `target/<profile>/examples/` next
/// to this test binary's directory. Panics with what to run when it is
/// missing or older than the library's or the examples' sources.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join("examples").join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {REBUILD}", path.display()));
    let root = workspace_root();
    for sources in ["src", "examples"] {
        if let Some((_, newer)) = newest_file(&root.join(sources)).filter(|(t, _)| *t > built) {
            panic!(
                "{} is older than {}: {REBUILD}",
                path.display(),
                newer.display()
            );
        }
    }
    path
}

/// The most recently modified file below `dir`.
fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            modified.map(|t| (t, path))
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.0 > n.0)
        {
            newest = Some(c);
        }
    }
    newest
}
