//! The default exposure configurations shipped in `infra/exposure-configuration/` pass the
//! same check the exporter applies before publishing (DESIGN §4.2, §4.3).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use diagnosis_format::exposure_config::{ConfigVersions, check_exposure_config};

#[test]
fn shipped_default_configurations_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/exposure-configuration");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let bytes = std::fs::read(&path).unwrap();
        let versions = check_exposure_config(&name, &bytes)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        checked.push((name, versions));
    }
    checked.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        checked,
        vec![
            ("CA.json".to_owned(), ConfigVersions::V1),
            ("region.json".to_owned(), ConfigVersions::RegionContent),
        ]
    );
}
