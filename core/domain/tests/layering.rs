//! The layering of the workspace (ARCHITECTURE.md, "Layering"): the pure domain crate, the
//! export format and the fuzz targets do no I/O, and `verify`, which fetches over HTTPS with its
//! own runtime, never reaches the store side. Each test asks `cargo tree` for a crate's normal dependencies, direct
//! and transitive, as `cargo build -p` resolves them, and names the chain that pulls in each
//! crate it must not have.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// The store side and the binaries' plumbing: a database driver, its pool and migrations, the
/// log subscriber, the metrics exporter, the object store, and the crates that hold them.
const STORE_SIDE: &[&str] = &[
    "tokio-postgres",
    "postgres-protocol",
    "postgres-types",
    "deadpool",
    "deadpool-postgres",
    "refinery",
    "refinery-core",
    "tracing-subscriber",
    "metrics-exporter-prometheus",
    "object_store",
    "diagnosis-core",
    "diagnosis-listener",
    "diagnosis-submit",
    "diagnosis-exporter",
];

/// An async runtime, sockets, TLS and HTTP: with [`STORE_SIDE`], the I/O a pure crate must not
/// reach.
const RUNTIME: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "rustls",
    "hyper",
    "hyper-util",
    "reqwest",
];

fn io() -> Vec<&'static str> {
    [RUNTIME, STORE_SIDE].concat()
}

#[test]
fn the_domain_crate_pulls_in_no_io() {
    assert_none_of(&io(), "diagnosis-domain");
}

#[test]
fn the_export_format_pulls_in_no_io() {
    assert_none_of(&io(), "diagnosis-format");
}

/// The fuzz targets run the services' own parsing code, which therefore lives on the pure side
/// (`diagnosis-domain`, `diagnosis-format`, `verify` without its fetchers): building them
/// builds no async runtime, no socket or HTTP stack and nothing of the store.
#[test]
fn the_fuzz_targets_pull_in_no_io_and_nothing_of_the_store_side() {
    assert_none_of(&io(), "diagnosis-fuzz");
}

#[test]
fn verify_pulls_in_nothing_of_the_store_side() {
    assert_none_of(STORE_SIDE, "diagnosis-verify");
}

fn assert_none_of(forbidden: &[&str], package: &str) {
    let is_forbidden = |name: &String| forbidden.contains(&name.as_str());
    // A chain is named up to the first forbidden crate on it: what that one brings is its own.
    let mut found: Vec<String> = dependency_chains(package)
        .iter()
        .filter(|chain| chain.iter().position(is_forbidden) == Some(chain.len() - 1))
        .map(|chain| chain.join(" -> "))
        .collect();
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "{package} must not depend on these crates (ARCHITECTURE.md, \"Layering\"):\n{}",
        found.join("\n")
    );
}

/// Every normal dependency of `package`, direct or transitive, as the chain of crates from
/// `package` to it.
fn dependency_chains(package: &str) -> Vec<Vec<String>> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .arg("tree")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "-p",
            package,
            "-e",
            "normal",
            "--no-dedupe",
            "--prefix",
            "depth",
            "--format",
            "{p}",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cargo tree -p {package}: {stderr}");
    let mut chains = Vec::new();
    let mut path: Vec<String> = Vec::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let depth: usize = line[..digits].parse().unwrap();
        let name = line[digits..].split_whitespace().next().unwrap();
        path.truncate(depth);
        path.push(name.to_owned());
        chains.push(path.clone());
    }
    assert_eq!(
        chains.first().map(|chain| chain.join(" -> ")),
        Some(package.to_owned()),
        "cargo tree did not list {package} first"
    );
    chains
}
