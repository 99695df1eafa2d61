//! Fails when rmcp's `ServerHandler` has a method that `Backpressure` does not
//! forward to the wrapped handler. Every method has a default, so a forgotten
//! one would compile and silently answer with rmcp's default instead of the
//! user's handler. The trait is read from the rmcp source this crate was built
//! against, located with `cargo metadata`.
#![cfg(all(not(loom), feature = "rmcp"))]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host")
}

fn rmcp_source_dir() -> PathBuf {
    // Offline and for this platform only: everything needed is already fetched.
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(host_triple())
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rmcp = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rmcp")
        .expect("rmcp among the dependencies");
    let manifest = PathBuf::from(rmcp["manifest_path"].as_str().unwrap());
    manifest.parent().unwrap().to_path_buf()
}

/// Names of the `fn`s declared at `indent` spaces in `text`.
fn fn_names(text: &str, indent: usize) -> Vec<String> {
    let prefix = " ".repeat(indent);
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let rest = rest.strip_prefix("async ").unwrap_or(rest);
            let name = rest.strip_prefix("fn ")?;
            Some(name.split(['(', '<']).next()?.trim().to_string())
        })
        .collect()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` not found"));
    let rest = &text[from..];
    let to = rest
        .find(end)
        .unwrap_or_else(|| panic!("`{end}` not found after `{start}`"));
    &rest[..to]
}

#[test]
fn every_server_handler_method_is_forwarded() {
    let trait_file = rmcp_source_dir().join("src/handler/server.rs");
    let trait_source = std::fs::read_to_string(&trait_file)
        .unwrap_or_else(|e| panic!("read {}: {e}", trait_file.display()));
    let methods_macro = between(
        &trait_source,
        "macro_rules! server_handler_methods",
        "pub trait ServerHandler",
    );
    let trait_methods: BTreeSet<String> = fn_names(methods_macro, 8).into_iter().collect();
    assert!(
        trait_methods.len() >= 30,
        "parsed too few methods: {trait_methods:?}"
    );
    assert!(trait_methods.contains("call_tool") && trait_methods.contains("get_info"));

    let ours = include_str!("../src/rmcp/handler.rs");
    let impl_block = between(
        ours,
        "impl<H: ServerHandler> ServerHandler for Backpressure<H>",
        "\n}\n",
    );
    let forwarded: BTreeSet<String> = fn_names(impl_block, 4).into_iter().collect();

    let missing: Vec<_> = trait_methods.difference(&forwarded).collect();
    let unknown: Vec<_> = forwarded.difference(&trait_methods).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "Backpressure must forward exactly rmcp's ServerHandler methods.\n\
         missing (add them to src/rmcp/handler.rs): {missing:?}\n\
         not in the trait: {unknown:?}"
    );

    // And each one reaches the wrapped handler's method of the same name.
    for chunk in impl_block
        .split("\n    fn ")
        .chain(impl_block.split("\n    async fn "))
        .skip(1)
    {
        let name = chunk.split(['(', '<']).next().unwrap().trim();
        if !trait_methods.contains(name) {
            continue;
        }
        let body_end = chunk.find("\n    }").unwrap_or(chunk.len());
        assert!(
            chunk[..body_end].contains(&format!("self.inner.{name}(")),
            "`{name}` does not call the wrapped handler's `{name}`"
        );
    }
}
