//! What the exporter publishes under which name, and with which headers (DESIGN §4, §4.3).
//!
//! * The object names: hourly and daily files, their indexes and manifest, the retrieval
//!   objects of the deployed apps, exposure configurations. Every name the pipeline writes is
//!   built here, so the writer and everything that reads a bucket agree on it.
//! * [`check_object_key`]: the one rule for which keys are safe to use at all.
//! * [`ObjectKind`]: what an object is, which fixes its Content-Type and Cache-Control. The
//!   exporter's storage adapter stores these headers with each upload, and a server in front of
//!   a bucket that keeps no headers derives them from the name with [`ObjectKind::of_key`]:
//!   both go through [`ObjectKind::cache_control`], so they cannot disagree.
//!
//! Nothing here does I/O or reads a clock: a caller that needs the time passes the last
//! closed hour (DESIGN §2).

use diagnosis_domain::domain::Region;

use crate::render::PartNumber;

/// The day part of `retrieve/{MCC}/00000`, the apps' first-run bundle (DESIGN §4.3).
pub const RETRIEVAL_BUNDLE: &str = "00000";

/// The folder of the published exposure configurations (DESIGN §4).
pub const EXPOSURE_CONFIG_FOLDER: &str = "exposure-configuration";

/// Object key of an hourly file, relative to the bucket prefix (DESIGN §4):
/// `{region}/{start}-{end}-{nnnnn}.zip`, with the window's real end.
pub fn hourly_file_key(region: &Region, start: u64, end: u64, part: PartNumber) -> String {
    format!("{region}/{start}-{end}-{part}.zip")
}

/// Object key of a daily file, relative to the bucket prefix (DESIGN §4):
/// `{region}/daily/{start}-{end}-{nnnnn}.zip`, with the window's real end.
pub fn daily_file_key(region: &Region, start: u64, end: u64, part: PartNumber) -> String {
    format!("{region}/daily/{start}-{end}-{part}.zip")
}

/// `{region}/index.txt`: the hourly files of the last 14 days (DESIGN §4).
pub fn hourly_index_key(region: &str) -> String {
    format!("{region}/index.txt")
}

/// `{region}/daily/index.txt`: the daily files of the last 14 days (DESIGN §4).
pub fn daily_index_key(region: &str) -> String {
    format!("{region}/daily/index.txt")
}

/// `{region}/index.json`: the manifest of every indexed file (DESIGN §4).
pub fn manifest_key(region: &str) -> String {
    format!("{region}/index.json")
}

/// `retrieve/{MCC}/{DDDDD}`: one UTC day's keys for the deployed apps (DESIGN §4.3).
/// `region_path` is `COMPAT_REGION_PATH`, `day` the day number.
pub fn retrieval_day_key(region_path: &str, day: i64) -> String {
    format!("retrieve/{region_path}/{day:05}")
}

/// `retrieve/{MCC}/00000`: the apps' first-run bundle (DESIGN §4.3).
pub fn retrieval_bundle_key(region_path: &str) -> String {
    format!("retrieve/{region_path}/{RETRIEVAL_BUNDLE}")
}

/// `exposure-configuration/{file}`: one file of `EXPOSURE_CONFIG_DIR` (DESIGN §4).
pub fn exposure_config_key(file_name: &str) -> String {
    format!("{EXPOSURE_CONFIG_FOLDER}/{file_name}")
}

/// Why `key` is not an acceptable object key, if it is not: the one rule for every key the
/// exporter writes, reads or deletes, and for the `BUCKET_URL` prefix.
///
/// A key is a relative path of plain segments that must name the same object on every
/// backend, an object store as well as a folder (`file://` buckets, copies read by `verify`).
/// Two rules grew up separately and each was right about something the other missed, so this
/// one refuses the union:
/// * empty keys and segments, `.` and `..`, a leading `/`: they could climb out of the prefix
///   or the folder, or name another object than they appear to;
/// * control characters: a key travels into log lines, `index.txt` and HTTP paths, where a
///   line break or NUL could forge a line or cut the name short;
/// * `\` and `:`: a path separator and a drive or stream marker to some file systems, so
///   `a\..\b` or `C:x` could escape a folder that `/`-splitting calls safe.
///
/// No name the exporter publishes contains any of these.
pub fn check_object_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("is empty");
    }
    if key.starts_with('/') {
        return Err("starts with '/'");
    }
    if key.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if key.contains(['\\', ':']) {
        return Err("contains '\\' or ':'");
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err("has an empty segment"),
            ".." => return Err("has a '..' segment"),
            "." => return Err("has a '.' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// `Cache-Control` of an object that never changes once written: fourteen days, as a file
/// leaves the indexes after 14 days (DESIGN §4).
pub const IMMUTABLE: &str = "public, max-age=1209600, immutable";

/// `Cache-Control` of a retrieval object that is still rebuilt (DESIGN §4.3): the apps poll
/// every 4 hours, an hour-old copy is acceptable, and a CDN may serve a slightly stale one
/// while it revalidates.
pub const GROWING: &str = "public, max-age=3600, max-stale=600";

/// What an object is, which fixes its Content-Type and Cache-Control (DESIGN §4, §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// An hourly or daily zip: never changes once written.
    ExportFile,
    /// An `index.txt`: rewritten as hours close.
    Index,
    /// `{region}/index.json`: rewritten with the indexes.
    Manifest,
    /// `exposure-configuration/*.json`.
    ExposureConfig,
    /// `retrieve/{MCC}/{DDDDD}` for UTC day `day`, as it stands when the newest closed hour
    /// (DESIGN §2) is `last_closed_hour`: for the writer, the newest hour the object holds;
    /// for a server, the newest hour closed now.
    RetrievalDay {
        /// The day number.
        day: i64,
        /// The newest closed hour.
        last_closed_hour: i64,
    },
    /// `retrieve/{MCC}/00000`: rebuilt once a day, never final (DESIGN §4.3).
    RetrievalBundle,
}

impl ObjectKind {
    /// The `Content-Type` the object is served with (DESIGN §4).
    pub fn content_type(self) -> &'static str {
        match self {
            ObjectKind::ExportFile
            | ObjectKind::RetrievalDay { .. }
            | ObjectKind::RetrievalBundle => "application/zip",
            ObjectKind::Index => "text/plain; charset=utf-8",
            ObjectKind::Manifest | ObjectKind::ExposureConfig => "application/json",
        }
    }

    /// The `Cache-Control` the object is served with (DESIGN §4, §4.3). A day's retrieval
    /// object grows until the day's last hour has closed, and is immutable from then on: it is
    /// rebuilt once more after that hour closes and never again.
    pub fn cache_control(self) -> &'static str {
        match self {
            ObjectKind::ExportFile => IMMUTABLE,
            ObjectKind::RetrievalDay {
                day,
                last_closed_hour,
            } => {
                let days_last_hour = day.saturating_mul(24).saturating_add(23);
                if last_closed_hour >= days_last_hour {
                    IMMUTABLE
                } else {
                    GROWING
                }
            }
            ObjectKind::RetrievalBundle => GROWING,
            ObjectKind::Index | ObjectKind::Manifest => "public, max-age=300",
            ObjectKind::ExposureConfig => "public, max-age=3600",
        }
    }

    /// The kind of a published object from its key relative to the bucket prefix, for servers
    /// in front of a bucket that keeps no headers (a `file://` folder): `last_closed_hour` is
    /// the newest hour closed at the time of serving. `None` for keys the exporter does not
    /// publish.
    pub fn of_key(key: &str, last_closed_hour: i64) -> Option<ObjectKind> {
        if let Some(name) = key
            .strip_prefix(EXPOSURE_CONFIG_FOLDER)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            return (!name.is_empty()).then_some(ObjectKind::ExposureConfig);
        }
        if let Some(rest) = key.strip_prefix("retrieve/") {
            let (region_path, day) = rest.rsplit_once('/')?;
            if region_path.is_empty() || day.is_empty() {
                return None;
            }
            if day == RETRIEVAL_BUNDLE {
                return Some(ObjectKind::RetrievalBundle);
            }
            // A name that is not a day number is some other object: treat it as final, as
            // nothing the exporter writes there changes but today's day.
            let is_day = day.len() == 5 && day.bytes().all(|b| b.is_ascii_digit());
            let kind = match day.parse::<i64>() {
                Ok(day) if is_day => ObjectKind::RetrievalDay {
                    day,
                    last_closed_hour,
                },
                _ => ObjectKind::ExportFile,
            };
            return Some(kind);
        }
        let last = key.rsplit('/').next().unwrap_or(key);
        match last {
            "index.txt" => Some(ObjectKind::Index),
            "index.json" => Some(ObjectKind::Manifest),
            _ if last.len() > ".zip".len() && last.ends_with(".zip") => {
                Some(ObjectKind::ExportFile)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ca() -> Region {
        Region::parse("CA").unwrap()
    }

    #[test]
    fn object_names_follow_the_design() {
        let ca = ca();
        assert_eq!(
            hourly_file_key(&ca, 1_764_280_800, 1_764_284_400, PartNumber::FIRST),
            "CA/1764280800-1764284400-00001.zip"
        );
        assert_eq!(
            daily_file_key(&ca, 1_764_201_600, 1_764_288_000, PartNumber::FIRST),
            "CA/daily/1764201600-1764288000-00001.zip"
        );
        assert_eq!(
            hourly_file_key(&ca, 0, 3600, PartNumber::new(99_999).unwrap()),
            "CA/0-3600-99999.zip"
        );
        assert_eq!(hourly_index_key("CA"), "CA/index.txt");
        assert_eq!(daily_index_key("CA"), "CA/daily/index.txt");
        assert_eq!(manifest_key("CA"), "CA/index.json");
        assert_eq!(retrieval_day_key("302", 20_410), "retrieve/302/20410");
        assert_eq!(retrieval_day_key("302", 7), "retrieve/302/00007");
        assert_eq!(retrieval_bundle_key("302"), "retrieve/302/00000");
        assert_eq!(
            exposure_config_key("CA.json"),
            "exposure-configuration/CA.json"
        );
    }

    #[test]
    fn keys_that_could_escape_the_prefix_are_refused() {
        let check = |key: &str, expected: Option<&str>| {
            assert_eq!(check_object_key(key).err(), expected, "{key:?}");
        };
        check("CA/index.txt", None);
        check("CA/1764280800-1764284400-00001.zip", None);
        check("retrieve/302/20410", None);
        check("exposure-configuration/CA.json", None);
        check("a", None);
        check("", Some("is empty"));
        check("/CA/index.txt", Some("starts with '/'"));
        check("CA//index.txt", Some("has an empty segment"));
        check("CA/", Some("has an empty segment"));
        check("../CA/index.txt", Some("has a '..' segment"));
        check("CA/../../etc/passwd", Some("has a '..' segment"));
        check("..", Some("has a '..' segment"));
        check("CA/./index.txt", Some("has a '.' segment"));
        check("CA/index\n.txt", Some("contains a control character"));
        check("CA/index\0.txt", Some("contains a control character"));
        check("CA\\..\\..\\etc", Some("contains '\\' or ':'"));
        check("C:/x", Some("contains '\\' or ':'"));
        check("CA/index.txt:stream", Some("contains '\\' or ':'"));
        // A dot inside a name is an ordinary character.
        check("CA/..zip", None);
        check("CA/.hidden", None);
    }

    #[test]
    fn every_kind_has_the_headers_of_the_design() {
        let day = 20_410;
        let table = [
            (ObjectKind::ExportFile, "application/zip", IMMUTABLE),
            (
                ObjectKind::Index,
                "text/plain; charset=utf-8",
                "public, max-age=300",
            ),
            (
                ObjectKind::Manifest,
                "application/json",
                "public, max-age=300",
            ),
            (
                ObjectKind::ExposureConfig,
                "application/json",
                "public, max-age=3600",
            ),
            (ObjectKind::RetrievalBundle, "application/zip", GROWING),
            // Today, from 00:00 until the day's last hour closes: growing.
            (
                ObjectKind::RetrievalDay {
                    day,
                    last_closed_hour: day * 24 - 1,
                },
                "application/zip",
                GROWING,
            ),
            (
                ObjectKind::RetrievalDay {
                    day,
                    last_closed_hour: day * 24 + 22,
                },
                "application/zip",
                GROWING,
            ),
            // Once its hour 23 has closed: immutable.
            (
                ObjectKind::RetrievalDay {
                    day,
                    last_closed_hour: day * 24 + 23,
                },
                "application/zip",
                IMMUTABLE,
            ),
            (
                ObjectKind::RetrievalDay {
                    day: day - 3,
                    last_closed_hour: day * 24 + 5,
                },
                "application/zip",
                IMMUTABLE,
            ),
        ];
        for (kind, content_type, cache_control) in table {
            assert_eq!(kind.content_type(), content_type, "{kind:?}");
            assert_eq!(kind.cache_control(), cache_control, "{kind:?}");
        }
        assert_eq!(IMMUTABLE, "public, max-age=1209600, immutable");
        assert_eq!(GROWING, "public, max-age=3600, max-stale=600");
    }

    #[test]
    fn published_keys_map_back_to_their_kind() {
        let hour = 20_410 * 24 + 5;
        let check = |key: &str, expected: Option<ObjectKind>| {
            assert_eq!(ObjectKind::of_key(key, hour), expected, "{key:?}");
        };
        check(
            "CA/1764280800-1764284400-00001.zip",
            Some(ObjectKind::ExportFile),
        );
        check(
            "CA/daily/1764201600-1764288000-00001.zip",
            Some(ObjectKind::ExportFile),
        );
        check("CA/index.txt", Some(ObjectKind::Index));
        check("CA/daily/index.txt", Some(ObjectKind::Index));
        check("CA/index.json", Some(ObjectKind::Manifest));
        check(
            "exposure-configuration/CA.json",
            Some(ObjectKind::ExposureConfig),
        );
        check(
            "exposure-configuration/region.json",
            Some(ObjectKind::ExposureConfig),
        );
        check("retrieve/302/00000", Some(ObjectKind::RetrievalBundle));
        check(
            "retrieve/302/20410",
            Some(ObjectKind::RetrievalDay {
                day: 20_410,
                last_closed_hour: hour,
            }),
        );
        check("retrieve/302/", None);
        check("retrieve/", None);
        check("retrieve/20410", None);
        check("exposure-configuration/", None);
        check("CA/notes.md", None);
        check(".zip", None);
        check("index.txt", Some(ObjectKind::Index));
    }

    /// Regression: a server without a clock served today's `retrieve/302/{today}` as
    /// immutable for fourteen days, so a cache kept the first, empty version all day.
    #[test]
    fn todays_retrieval_object_is_served_growing_until_its_day_closes() {
        let day = 20_410;
        let key = retrieval_day_key("302", day);
        let served = |last_closed_hour| {
            ObjectKind::of_key(&key, last_closed_hour)
                .unwrap()
                .cache_control()
        };
        assert_eq!(served(day * 24 - 1), GROWING);
        assert_eq!(served(day * 24 + 12), GROWING);
        assert_eq!(served(day * 24 + 23), IMMUTABLE);
        assert_eq!(served(day * 24 + 400), IMMUTABLE);
    }
}
