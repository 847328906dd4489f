//! The manifest `{region}/index.json` (DESIGN §4): which files it lists, and whether what it
//! says about each one (kind, window, part, key count, size, SHA-256) is what was published.
//!
//! Comparisons only: this module never reads an object itself and never stops at the first
//! disagreement.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;

use super::export_file::CheckedFile;
use super::names::ObjectName;

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
        violations: &mut Vec<String>,
    ) -> Option<Self> {
        let document: ManifestDocument = match serde_json::from_slice(bytes) {
            Ok(document) => document,
            Err(error) => {
                violations.push(format!(
                    "{manifest_key}: not a manifest ({{\"region\", \"generated_at\", \"files\": \
                     [...]}}): {error}"
                ));
                return None;
            }
        };
        if document.region != region {
            violations.push(format!(
                "{manifest_key}: region is {:?}, expected {region:?}",
                document.region
            ));
        }
        let mut entries = HashMap::with_capacity(document.files.len());
        for entry in document.files {
            if entries.contains_key(&entry.key) {
                violations.push(format!(
                    "{manifest_key}: lists {} more than once",
                    entry.key
                ));
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
        violations: &mut Vec<String>,
    ) {
        for (index_key, name) in listed {
            if !self.entries.contains_key(&name.key) {
                violations.push(format!(
                    "{}: does not list {}, which {index_key} lists",
                    self.key, name.key
                ));
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
            violations.push(format!(
                "{}: lists {key}, which neither index.txt lists",
                self.key
            ));
        }
    }

    /// What the manifest says about `name` against its name and its checked content.
    pub(crate) fn check_file(
        &self,
        name: &ObjectName,
        file: &CheckedFile,
        violations: &mut Vec<String>,
    ) {
        let Some(entry) = self.entries.get(&name.key) else {
            return;
        };
        let mut mismatch = |field: &str, said: String, actual: String| {
            violations.push(format!(
                "{}: {}: {field} is {said}, but {actual}",
                self.key, name.key
            ));
        };
        if entry.kind != name.kind.as_str() {
            mismatch(
                "kind",
                format!("{:?}", entry.kind),
                format!("the name says {}", name.kind),
            );
        }
        if entry.start != name.start {
            mismatch(
                "start",
                entry.start.to_string(),
                format!("the name says {}", name.start),
            );
        }
        if entry.end != name.end {
            mismatch(
                "end",
                entry.end.to_string(),
                format!("the name says {}", name.end),
            );
        }
        if entry.part != name.part.get() {
            mismatch(
                "part",
                entry.part.to_string(),
                format!("the name says {}", name.part.get()),
            );
        }
        if entry.bytes != file.bytes {
            mismatch(
                "bytes",
                entry.bytes.to_string(),
                format!("the object has {}", file.bytes),
            );
        }
        if entry.sha256 != file.sha256 {
            mismatch(
                "sha256",
                entry.sha256.clone(),
                format!("the object's is {}", file.sha256),
            );
        }
        if let Some(count) = file.key_count
            && entry.keys != count
        {
            mismatch(
                "keys",
                entry.keys.to_string(),
                format!("export.bin holds {count}"),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use diagnosis_core::domain::Region;

    use super::*;
    use crate::verify::names::parse_object_name;

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
            assert_eq!(violations.len(), 1, "{text}");
            assert!(
                violations[0].starts_with("CA/index.json: not a manifest"),
                "{violations:?}"
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
            bytes: 11,
            sha256: "cd".to_owned(),
            key_count: Some(4),
            keys: Vec::new(),
        };
        manifest.check_file(&hour, &file, &mut violations);
        manifest.check_file(&day, &file, &mut violations);
        let key = &hour.key;
        assert_eq!(
            violations,
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
