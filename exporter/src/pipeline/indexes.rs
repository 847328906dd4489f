//! Step 8, rewrite the indexes (DESIGN §4): `{region}/index.txt`,
//! `{region}/daily/index.txt` and the `{region}/index.json` manifest, built from
//! the ledger and written only after every object they name exists.

use bytes::Bytes;
use diagnosis_core::store::ExportRecord;
use serde::Serialize;

/// `index.txt`: one object key per line, oldest first, each line ending in `\n`.
pub fn index_txt(records: &[ExportRecord]) -> String {
    let mut text = String::with_capacity(records.len() * 40);
    for record in records {
        text.push_str(&record.object_key);
        text.push('\n');
    }
    text
}

#[derive(Debug, Serialize)]
struct Manifest<'a> {
    region: &'a str,
    generated_at: i64,
    files: Vec<ManifestFile<'a>>,
}

#[derive(Debug, Serialize)]
struct ManifestFile<'a> {
    key: &'a str,
    kind: &'a str,
    start: i64,
    end: i64,
    part: i32,
    keys: i64,
    bytes: i64,
    sha256: &'a str,
}

/// `index.json`: every indexed file with its key count, size and SHA-256.
pub fn manifest_json(
    region: &str,
    generated_at: i64,
    hourly: &[ExportRecord],
    daily: &[ExportRecord],
) -> Bytes {
    let files = hourly
        .iter()
        .chain(daily)
        .map(|r| ManifestFile {
            key: &r.object_key,
            kind: &r.kind,
            start: r.start_ts,
            end: r.end_ts,
            part: r.part,
            keys: r.key_count,
            bytes: r.bytes,
            sha256: &r.sha256,
        })
        .collect();
    let manifest = Manifest {
        region,
        generated_at,
        files,
    };
    // Serialising plain strings and integers cannot fail.
    Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap_or_default())
}

/// The manifest to publish: the previous one's bytes when it already lists exactly these files
/// (its `generated_at` is when what it lists was generated, so a pass that changes nothing
/// leaves it as it was), else a new one generated at `now`.
pub fn manifest_for(
    region: &str,
    now: i64,
    hourly: &[ExportRecord],
    daily: &[ExportRecord],
    previous: Option<&Bytes>,
) -> Bytes {
    if let Some(previous) = previous
        && let Some(at) = generated_at(previous)
    {
        let same = manifest_json(region, at, hourly, daily);
        if same == previous {
            return same;
        }
    }
    manifest_json(region, now, hourly, daily)
}

/// The `generated_at` of a published manifest; `None` when it is not one.
fn generated_at(manifest: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Head {
        generated_at: i64,
    }
    serde_json::from_slice::<Head>(manifest)
        .ok()
        .map(|head| head.generated_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, kind: &str, start: i64) -> ExportRecord {
        ExportRecord {
            object_key: key.into(),
            kind: kind.into(),
            region: "CA".into(),
            start_ts: start,
            end_ts: start + 3600,
            part: 1,
            key_count: 3,
            bytes: 250,
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn index_lines_end_in_newlines_in_ledger_order() {
        let records = [
            record("CA/1-2-00001.zip", "hourly", 1),
            record("CA/2-3-00001.zip", "hourly", 2),
        ];
        assert_eq!(index_txt(&records), "CA/1-2-00001.zip\nCA/2-3-00001.zip\n");
        assert_eq!(index_txt(&[]), "");
    }

    #[test]
    fn the_manifest_lists_hourly_then_daily_files() {
        let json = manifest_json(
            "CA",
            1_764_343_200,
            &[record("CA/1-2-00001.zip", "hourly", 1)],
            &[record("CA/daily/0-86400-00001.zip", "daily", 0)],
        );
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["region"], "CA");
        assert_eq!(value["generated_at"], 1_764_343_200);
        assert_eq!(value["files"][0]["key"], "CA/1-2-00001.zip");
        assert_eq!(value["files"][0]["kind"], "hourly");
        assert_eq!(value["files"][1]["kind"], "daily");
        assert_eq!(value["files"][1]["sha256"], "ab".repeat(32));
        assert_eq!(value["files"][0]["keys"], 3);
        assert_eq!(value["files"][0]["bytes"], 250);
        assert_eq!(value["files"][0]["part"], 1);
    }

    #[test]
    fn an_unchanged_manifest_keeps_its_bytes_and_a_changed_one_is_new() {
        let hourly = [record("CA/1-2-00001.zip", "hourly", 3600)];
        let previous = manifest_json("CA", 100, &hourly, &[]);
        assert_eq!(
            manifest_for("CA", 999, &hourly, &[], Some(&previous)),
            previous
        );
        let more = [
            record("CA/1-2-00001.zip", "hourly", 3600),
            record("CA/2-3-00001.zip", "hourly", 7200),
        ];
        assert_eq!(
            manifest_for("CA", 999, &more, &[], Some(&previous)),
            manifest_json("CA", 999, &more, &[])
        );
        for damaged in [Bytes::from_static(b"not json"), Bytes::new()] {
            assert_eq!(
                manifest_for("CA", 999, &hourly, &[], Some(&damaged)),
                manifest_json("CA", 999, &hourly, &[])
            );
        }
        assert_eq!(
            manifest_for("CA", 999, &hourly, &[], None),
            manifest_json("CA", 999, &hourly, &[])
        );
    }
}
