//! The manifest `{region}/index.json` (DESIGN §4): which files it lists, and whether what it
//! says about each one (kind, window, part, key count, size, SHA-256) is what was published.
//!
//! Comparisons only: this module never reads an object itself and never stops at the first
//! disagreement.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;

use crate::export_file::CheckedFile;
use crate::finding::{Finding, ManifestField};
use crate::names::ObjectName;

/// `index.json` as published.
#[derive(Debug, Deserialize)]
struct ManifestDocument {
    region: String,
    /// Required by the format; its value is not compared with anything, because a verifier
    /// has no trustworthy clock to compare it with.
    #[serde(rename = "generated_at")]
    _generated_at: u64,
    files: Vec<ManifestEntry>,
}

/// One entry of `files`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ManifestEntry {
    key: String,
    kind: String,
    start: u64,
    end: u64,
    part: u32,
    keys: u64,
    bytes: u64,
    sha256: String,
}

/// A parsed manifest, by object key.
#[derive(Debug)]
pub(crate) struct Manifest {
    key: String,
    entries: HashMap<String, ManifestEntry>,
}

impl Manifest {
    /// Parses `bytes` published as `manifest_key` for `region`; `None` (with a violation) when
    /// it is not a manifest at all.
    pub(crate) fn parse(
        manifest_key: &str,
        region: &str,
        bytes: &[u8],
        findings: &mut Vec<Finding>,
    ) -> Option<Self> {
        let document: ManifestDocument = match serde_json::from_slice(bytes) {
            Ok(document) => document,
            Err(error) => {
                findings.push(Finding::ManifestMalformed {
                    object: manifest_key.to_owned(),
                    reason: error.to_string(),
                });
                return None;
            }
        };
        if document.region != region {
            findings.push(Finding::ManifestRegion {
                object: manifest_key.to_owned(),
                found: document.region.clone(),
                expected: region.to_owned(),
            });
        }
        let mut entries = HashMap::with_capacity(document.files.len());
        for entry in document.files {
            if entries.contains_key(&entry.key) {
                findings.push(Finding::ManifestRepeat {
                    object: manifest_key.to_owned(),
                    file: entry.key,
                });
                continue;
            }
            entries.insert(entry.key.clone(), entry);
        }
        Some(Self {
            key: manifest_key.to_owned(),
            entries,
        })
    }

    /// The manifest lists exactly the files of both indexes.
    pub(crate) fn check_listing(
        &self,
        listed: &[(&str, &ObjectName)],
        findings: &mut Vec<Finding>,
    ) {
        for (index_key, name) in listed {
            if !self.entries.contains_key(&name.key) {
                findings.push(Finding::ManifestOmits {
                    object: self.key.clone(),
                    file: name.key.clone(),
                    index: (*index_key).to_owned(),
                });
            }
        }
        let listed_keys: BTreeSet<&str> =
            listed.iter().map(|(_, name)| name.key.as_str()).collect();
        let unlisted: BTreeSet<&str> = self
            .entries
            .keys()
            .map(String::as_str)
            .filter(|key| !listed_keys.contains(key))
            .collect();
        for key in unlisted {
            findings.push(Finding::ManifestUnindexed {
                object: self.key.clone(),
                file: key.to_owned(),
            });
        }
    }

    /// What the manifest says about `name` against its name and its checked content.
    pub(crate) fn check_file(
        &self,
        name: &ObjectName,
        file: &CheckedFile,
        findings: &mut Vec<Finding>,
    ) {
        let Some(entry) = self.entries.get(&name.key) else {
            return;
        };
        for (field, agrees, said, actual) in compared(entry, name, file) {
            if !agrees {
                findings.push(Finding::ManifestMismatch {
                    object: self.key.clone(),
                    file: name.key.clone(),
                    field,
                    said,
                    actual,
                });
            }
        }
    }
}

/// Each field of a manifest entry: whether it agrees with the file's name and content, what it
/// says, and what is true.
fn compared(
    entry: &ManifestEntry,
    name: &ObjectName,
    file: &CheckedFile,
) -> [(ManifestField, bool, String, String); 7] {
    [
        (
            ManifestField::Kind,
            entry.kind == name.kind.as_str(),
            format!("{:?}", entry.kind),
            name.kind.to_string(),
        ),
        (
            ManifestField::Start,
            entry.start == name.start,
            entry.start.to_string(),
            name.start.to_string(),
        ),
        (
            ManifestField::End,
            entry.end == name.end,
            entry.end.to_string(),
            name.end.to_string(),
        ),
        (
            ManifestField::Part,
            entry.part == name.part.get(),
            entry.part.to_string(),
            name.part.get().to_string(),
        ),
        (
            ManifestField::Bytes,
            entry.bytes == file.bytes,
            entry.bytes.to_string(),
            file.bytes.to_string(),
        ),
        (
            ManifestField::Sha256,
            entry.sha256 == file.sha256,
            entry.sha256.clone(),
            file.sha256.clone(),
        ),
        (
            ManifestField::Keys,
            file.key_count.is_none_or(|count| entry.keys == count),
            entry.keys.to_string(),
            file.key_count
                .map_or_else(String::new, |count| count.to_string()),
        ),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use diagnosis_domain::domain::Region;

    use super::*;
    use crate::names::parse_object_name;

    fn name(key: &str) -> ObjectName {
        parse_object_name(&Region::parse("CA").unwrap(), key).unwrap()
    }

    #[test]
    fn malformed_manifests_are_one_violation() {
        for text in [
            "",
            "[]",
            "{\"region\": \"CA\"}",
            "{\"region\": \"CA\", \"generated_at\": 1, \"files\": [{\"key\": 1}]}",
            "{\"region\": \"CA\", \"generated_at\": -1, \"files\": []}",
        ] {
            let mut violations = Vec::new();
            assert!(
                Manifest::parse("CA/index.json", "CA", text.as_bytes(), &mut violations).is_none()
            );
            assert!(
                matches!(
                    violations.as_slice(),
                    [Finding::ManifestMalformed { object, .. }] if object == "CA/index.json"
                ),
                "{text}: {violations:?}"
            );
        }
    }

    #[test]
    fn listing_region_duplicates_and_fields_are_compared() {
        let hour = name("CA/1764280800-1764284400-00001.zip");
        let day = name("CA/daily/1764201600-1764288000-00001.zip");
        let text = r#"{"region": "US", "generated_at": 1764290000, "files": [
            {"key": "CA/1764280800-1764284400-00001.zip", "kind": "daily", "start": 1764280800,
             "end": 1764284401, "part": 2, "keys": 3, "bytes": 10, "sha256": "ab"},
            {"key": "CA/1764280800-1764284400-00001.zip", "kind": "hourly", "start": 1764280800,
             "end": 1764284400, "part": 1, "keys": 3, "bytes": 10, "sha256": "ab"},
            {"key": "CA/0-3600-00001.zip", "kind": "hourly", "start": 0,
             "end": 3600, "part": 1, "keys": 0, "bytes": 10, "sha256": "ab", "extra": true}
        ]}"#;
        let mut violations = Vec::new();
        let manifest =
            Manifest::parse("CA/index.json", "CA", text.as_bytes(), &mut violations).unwrap();
        manifest.check_listing(
            &[("CA/index.txt", &hour), ("CA/daily/index.txt", &day)],
            &mut violations,
        );
        let file = CheckedFile {
            timestamps: None,
            bytes: 11,
            sha256: "cd".to_owned(),
            key_count: Some(4),
            keys: Vec::new(),
            signatures: None,
        };
        manifest.check_file(&hour, &file, &mut violations);
        manifest.check_file(&day, &file, &mut violations);
        let key = &hour.key;
        let object = "CA/index.json".to_owned();
        let mismatch = |field, said: &str, actual: &str| Finding::ManifestMismatch {
            object: object.clone(),
            file: key.clone(),
            field,
            said: said.to_owned(),
            actual: actual.to_owned(),
        };
        assert_eq!(
            violations,
            [
                Finding::ManifestRegion {
                    object: object.clone(),
                    found: "US".to_owned(),
                    expected: "CA".to_owned(),
                },
                Finding::ManifestRepeat {
                    object: object.clone(),
                    file: key.clone(),
                },
                Finding::ManifestOmits {
                    object: object.clone(),
                    file: day.key.clone(),
                    index: "CA/daily/index.txt".to_owned(),
                },
                Finding::ManifestUnindexed {
                    object: object.clone(),
                    file: "CA/0-3600-00001.zip".to_owned(),
                },
                mismatch(ManifestField::Kind, "\"daily\"", "hourly"),
                mismatch(ManifestField::End, "1764284401", "1764284400"),
                mismatch(ManifestField::Part, "2", "1"),
                mismatch(ManifestField::Bytes, "10", "11"),
                mismatch(ManifestField::Sha256, "ab", "cd"),
                mismatch(ManifestField::Keys, "3", "4"),
            ]
        );
        let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "CA/index.json: region is \"US\", expected \"CA\"".to_owned(),
                format!("CA/index.json: lists {key} more than once"),
                format!(
                    "CA/index.json: does not list {}, which CA/daily/index.txt lists",
                    day.key
                ),
                "CA/index.json: lists CA/0-3600-00001.zip, which neither index.txt lists"
                    .to_owned(),
                format!("CA/index.json: {key}: kind is \"daily\", but the name says hourly"),
                format!("CA/index.json: {key}: end is 1764284401, but the name says 1764284400"),
                format!("CA/index.json: {key}: part is 2, but the name says 1"),
                format!("CA/index.json: {key}: bytes is 10, but the object has 11"),
                format!("CA/index.json: {key}: sha256 is ab, but the object's is cd"),
                format!("CA/index.json: {key}: keys is 3, but export.bin holds 4"),
            ]
        );
    }
}
