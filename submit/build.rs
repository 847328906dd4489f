//! Records the git branch and revision the binary is built from, for
//! `/services/version.json`. Outside a git checkout (for example a container
//! build from a source archive) `DIAGNOSIS_BUILD_BRANCH`/`DIAGNOSIS_BUILD_REVISION`
//! may be set; otherwise both read `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    for name in ["DIAGNOSIS_BUILD_BRANCH", "DIAGNOSIS_BUILD_REVISION"] {
        println!("cargo:rerun-if-env-changed={name}");
    }
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    let branch = std::env::var("DIAGNOSIS_BUILD_BRANCH")
        .ok()
        .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let revision = std::env::var("DIAGNOSIS_BUILD_REVISION")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DIAGNOSIS_BUILD_BRANCH={branch}");
    println!("cargo:rustc-env=DIAGNOSIS_BUILD_REVISION={revision}");
}
