//! The real binaries, as the end-to-end tests start them.

use std::path::{Path, PathBuf};

/// A binary of the workspace built next to the running test (`target/debug/NAME`); the test
/// command builds every binary before the tests.
pub fn built_binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    let target = test_exe.parent().and_then(Path::parent).unwrap();
    let binary = target.join(name);
    assert!(
        binary.exists(),
        "{} is not built: run the tests through infra/dev/test (it builds every binary first)",
        binary.display()
    );
    binary
}

/// A fresh, uniquely named directory under the system's temporary directory.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("diagnosis-{label}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
