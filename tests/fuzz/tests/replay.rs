//! Every committed fuzz input, replayed on stable Rust through the same target functions the
//! libFuzzer binaries call (DESIGN §7): the seeds and what campaigns kept in
//! `tests/fuzz/corpus/<target>/`, the inputs that once crashed a target
//! (`corpus/<target>/regression-*`) among them. `cargo test` thus checks on every run what the
//! corpora prove, without nightly Rust or a fuzzing run.

use std::collections::BTreeSet;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use diagnosis_fuzz::targets::TARGETS;

fn fuzz_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// The names of the entries of `dir` (only those ending in `.extension` if one is given),
/// without that extension.
fn names_in(dir: &Path, extension: Option<&str>) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| extension.is_none_or(|ext| path.extension().is_some_and(|e| e == ext)))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[test]
fn every_committed_input_replays_through_its_target_without_a_finding() {
    let mut replayed = 0;
    let mut findings = Vec::new();
    for (name, target) in TARGETS {
        let inputs = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(!inputs.is_empty(), "the corpus of {name} is empty");
        for input in inputs {
            let bytes = fs::read(&input).expect("a readable corpus file");
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| target(&bytes))) {
                findings.push(format!("{}: {}", input.display(), panic_message(&*payload)));
            }
            replayed += 1;
        }
    }
    assert!(
        findings.is_empty(),
        "{} of {replayed} committed inputs fail their target:\n{}",
        findings.len(),
        findings.join("\n")
    );
}

#[test]
fn every_target_has_a_corpus_a_libfuzzer_binary_that_only_calls_it_and_a_line_in_infra_dev_fuzz() {
    let names: BTreeSet<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    assert_eq!(names.len(), TARGETS.len(), "a target is listed twice");
    assert_eq!(names_in(&fuzz_dir().join("corpus"), None), names, "corpus/");
    let binaries = fuzz_dir().join("libfuzzer/fuzz_targets");
    assert_eq!(
        names_in(&binaries, Some("rs")),
        names,
        "libfuzzer/fuzz_targets/"
    );
    for name in &names {
        let source = fs::read_to_string(binaries.join(format!("{name}.rs"))).expect("readable");
        let call = format!("fuzz_target!(|data: &[u8]| diagnosis_fuzz::targets::{name}(data));");
        assert!(
            source.contains(&call),
            "libfuzzer/fuzz_targets/{name}.rs is not the one line `{call}`"
        );
    }
    let manifest = fs::read_to_string(fuzz_dir().join("libfuzzer/Cargo.toml")).expect("readable");
    for name in &names {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "libfuzzer/Cargo.toml has no [[bin]] for {name}"
        );
    }
    let script = fs::read_to_string(fuzz_dir().join("../../infra/dev/fuzz")).expect("readable");
    let listed: BTreeSet<String> = script
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"')?.split_once(':'))
        .map(|(name, _)| name.to_owned())
        .collect();
    assert_eq!(listed, names, "the TARGETS of infra/dev/fuzz");
}
