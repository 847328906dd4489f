//! `diagnosis-exporter verify` (DESIGN §6): checks a published bucket the way a phone would,
//! and everything a phone relies on without checking (DESIGN §4, §4.1, §4.2).
//!
//! The checks, each violation one line naming the object:
//!
//! 1. `{region}/index.txt`, `{region}/daily/index.txt` and `{region}/index.json` exist and
//!    parse; each index lists names of its own kind, oldest first, none twice, and every listed
//!    object exists.
//! 2. Every listed file is a two-entry zip whose `export.bin` carries the header, the window,
//!    part and region of its name, batch 1 of 1, 1 to 10 signature infos with the platform
//!    algorithm, keys of 16 bytes in canonical order with `rolling_period` 144 omitted, and an
//!    `export.sig` with one matching signature per signature info; every given public key
//!    verifies at least one of them over the whole `export.bin`.
//! 3. The manifest lists exactly the indexed files, with their true kind, window, part, key
//!    count, size and SHA-256.
//! 4. No `key_data` is published twice among the hourly files, nor among the daily files.
//! 5. Each daily file holds exactly the keys of its day's 24 hourly files.
//! 6. No hour (and no day) between the oldest and the newest listed is missing, and each
//!    window's parts run from `00001` without a gap.
//!
//! Files are read one at a time and days are processed in order, so memory holds one file,
//! the `key_data` seen so far (for check 4) and the keys of one day (for check 5).
//!
//! This module must never write to the bucket, never stop at the first violation, and never
//! panic on what it reads: a bucket is evidence to judge, and malformed bytes are a finding.
//! Only a failing source (I/O, HTTP) ends a run early, as an error.

mod export_file;
mod manifest;
mod names;
mod source;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use diagnosis_core::domain::Region;
use diagnosis_format::sign::PublicKey;
use thiserror::Error;

use self::export_file::{ExportedKey, check_export_file};
use self::manifest::Manifest;
use self::names::{DAY, HOUR, Kind, ObjectName, check_continuity, parse_index};
pub use self::source::{
    BucketSource, DirectorySource, HttpSource, MAX_OBJECT_BYTES, MemorySource, Source, source_for,
};

/// Default export region (`EXPORT_REGION`, DESIGN §6).
pub const DEFAULT_REGION: &str = "CA";

/// Why a bucket could not be verified at all. Problems with the published content are not
/// errors: they are the violations of a [`VerifyReport`].
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The region to verify is not a valid export region.
    #[error("{region:?} is not an export region (1 to 16 characters of [A-Za-z0-9_])")]
    InvalidRegion {
        /// The rejected value.
        region: String,
    },
    /// The path or URL cannot be read by `verify`.
    #[error("cannot verify {location}: {reason}")]
    UnsupportedLocation {
        /// The path or URL given.
        location: String,
        /// Why, and what to use instead.
        reason: String,
    },
    /// An object key that a folder source refuses to turn into a path.
    #[error("{key:?} is not an object key that can be read from a folder")]
    UnsafeKey {
        /// The key.
        key: String,
    },
    /// Reading from a folder failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An HTTP request failed before a status was received, or while reading the body.
    #[error("GET {url}: {reason}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with a status that is neither the object nor "no such object".
    #[error("GET {url}: unexpected HTTP status {status}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The object store failed.
    #[error("reading {key}: {reason}")]
    Storage {
        /// The object key.
        key: String,
        /// What the store said.
        reason: String,
    },
    /// An object is larger than any published file can be.
    #[error("{location} is larger than {limit} bytes")]
    TooLarge {
        /// The path or URL.
        location: String,
        /// The limit.
        limit: u64,
    },
}

/// What to verify against.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The export region (`EXPORT_REGION`, default `CA`).
    pub region: String,
    /// Every one of these must verify each file; with none, signatures are not checked.
    pub public_keys: Vec<PublicKey>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            region: DEFAULT_REGION.to_owned(),
            public_keys: Vec::new(),
        }
    }
}

/// The verdict on a bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Hourly files listed in `{region}/index.txt`.
    pub hourly_files: usize,
    /// Daily files listed in `{region}/daily/index.txt`.
    pub daily_files: usize,
    /// Keys in the hourly files that could be read.
    pub keys_hourly: u64,
    /// Keys in the daily files that could be read.
    pub keys_daily: u64,
    /// Size of all listed files that exist.
    pub bytes: u64,
    /// Every rule broken, one line each, naming the object.
    pub violations: Vec<String>,
    /// What was not checked, and why; not violations.
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// No violation was found.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    /// A summary line, then one line per violation and per note.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys_hourly.saturating_add(self.keys_daily);
        write!(
            f,
            "{} hourly files ({} keys), {} daily files ({} keys), {} bytes",
            self.hourly_files, self.keys_hourly, self.daily_files, self.keys_daily, self.bytes
        )?;
        if keys > 0 {
            // Display only: the precision of f64 is ample for a ratio shown to one decimal.
            #[allow(clippy::cast_precision_loss)]
            let per_key = self.bytes as f64 / keys as f64;
            write!(f, ", {per_key:.1} bytes per key")?;
        }
        if self.is_ok() {
            write!(f, ": OK")?;
        } else {
            write!(f, ": {} violation(s)", self.violations.len())?;
        }
        for violation in &self.violations {
            write!(f, "\nviolation: {violation}")?;
        }
        for note in &self.notes {
            write!(f, "\nnote: {note}")?;
        }
        Ok(())
    }
}

/// Checks the bucket behind `source` (DESIGN §4) and reports every violation.
///
/// Returns an error only when the source itself fails or the region is invalid; everything
/// wrong with the published content is in the report.
pub async fn verify_bucket(
    source: &dyn Source,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let region = Region::parse(&options.region).ok_or_else(|| VerifyError::InvalidRegion {
        region: options.region.clone(),
    })?;
    let mut run = Run {
        region: &region,
        public_keys: &options.public_keys,
        report: VerifyReport::default(),
        hourly_seen: HashMap::new(),
        daily_seen: HashMap::new(),
        files_read: Vec::new(),
    };
    if options.public_keys.is_empty() {
        run.report
            .notes
            .push("no public key given: signatures were not verified".to_owned());
    }

    // Check 1: the three index objects.
    let hourly_index = format!("{region}/index.txt");
    let daily_index = format!("{region}/daily/index.txt");
    let manifest_key = format!("{region}/index.json");
    let mut hourly = run.read_index(source, &hourly_index, Kind::Hourly).await?;
    let mut daily = run.read_index(source, &daily_index, Kind::Daily).await?;
    let manifest = match source.get(&manifest_key).await? {
        None => {
            run.violation(format!("{manifest_key}: does not exist"));
            None
        }
        Some(bytes) => Manifest::parse(
            &manifest_key,
            region.as_str(),
            &bytes,
            &mut run.report.violations,
        ),
    };
    run.report.hourly_files = hourly.len();
    run.report.daily_files = daily.len();

    // Check 3 (the listing) and check 6, on names alone.
    if let Some(manifest) = &manifest {
        let listed: Vec<(&str, &ObjectName)> = hourly
            .iter()
            .map(|name| (hourly_index.as_str(), name))
            .chain(daily.iter().map(|name| (daily_index.as_str(), name)))
            .collect();
        manifest.check_listing(&listed, &mut run.report.violations);
    }
    check_continuity(
        &hourly_index,
        Kind::Hourly,
        &hourly,
        &mut run.report.violations,
    );
    check_continuity(
        &daily_index,
        Kind::Daily,
        &daily,
        &mut run.report.violations,
    );

    // Checks 2 to 5, file by file, one UTC day at a time.
    hourly.sort_by_key(ObjectName::order);
    daily.sort_by_key(ObjectName::order);
    let listed_hours: HashSet<u64> = hourly.iter().map(|name| name.start).collect();
    let oldest_hour = hourly.first().map(|name| name.start);
    let newest_hour = hourly.last().map(|name| name.start);
    let mut days: BTreeMap<u64, DayFiles> = BTreeMap::new();
    for name in hourly {
        days.entry(day_of(name.start))
            .or_default()
            .hourly
            .push(name);
    }
    for name in daily {
        days.entry(name.start).or_default().daily.push(name);
    }
    if days.is_empty() {
        run.report
            .notes
            .push(format!("{hourly_index} and {daily_index} list no files"));
    }
    for (day, files) in days {
        let hours_listed = (0..24)
            .filter(|hour| listed_hours.contains(&day.saturating_add(hour * HOUR)))
            .count();
        // Only a day with all 24 hours listed and a daily file is compared (check 5).
        let collect = hours_listed == 24 && !files.daily.is_empty();
        let mut unreadable = false;
        let mut hourly_keys = Vec::new();
        for name in &files.hourly {
            match run
                .check_file(source, name, &hourly_index, manifest.as_ref())
                .await?
            {
                Some(keys) if collect => hourly_keys.extend(keys),
                Some(_) => {}
                None => unreadable = true,
            }
        }
        let mut daily_keys = Vec::new();
        for name in &files.daily {
            match run
                .check_file(source, name, &daily_index, manifest.as_ref())
                .await?
            {
                Some(keys) if collect => daily_keys.extend(keys),
                Some(_) => {}
                None => unreadable = true,
            }
        }
        // Comparing with a file missing would blame the daily file for a broken hourly one,
        // or the reverse; the broken file is already reported.
        let compare = collect && !unreadable;

        // Check 5.
        let daily_label = files.daily.first().map(|name| {
            if files.daily.len() == 1 {
                name.key.clone()
            } else {
                format!("{} (and its other parts)", name.key)
            }
        });
        match daily_label {
            Some(label) if compare => {
                compare_day(&label, hourly_keys, daily_keys, &mut run.report.violations);
            }
            Some(label) if unreadable && hours_listed == 24 => run.report.notes.push(format!(
                "{label}: not compared with hourly files: some of the day's files could not be \
                 read"
            )),
            Some(label) => {
                let missing: Vec<u64> = (0..24)
                    .map(|hour| day.saturating_add(hour * HOUR))
                    .filter(|start| !listed_hours.contains(start))
                    .collect();
                let published_late = match (missing.last(), newest_hour) {
                    (Some(&last_missing), Some(newest)) => last_missing > newest,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                let cut_by_the_window = match (missing.last(), oldest_hour) {
                    (Some(&last_missing), Some(oldest)) => last_missing < oldest,
                    _ => false,
                };
                // Notes, not violations: the 14-day window cuts the oldest day, and the two
                // indexes are not written at the same instant.
                if published_late {
                    run.report.notes.push(format!(
                        "{label}: not compared with hourly files: {} of the day's hours are \
                         not in {hourly_index} yet",
                        missing.len()
                    ));
                } else if cut_by_the_window {
                    run.report.notes.push(format!(
                        "{label}: not compared with hourly files: the day's first {} hour(s) \
                         are no longer in {hourly_index}",
                        missing.len()
                    ));
                } else {
                    run.report.notes.push(format!(
                        "{label}: not compared with hourly files: {} of the day's hours are \
                         missing from {hourly_index}",
                        missing.len()
                    ));
                }
            }
            None if hours_listed == 24 => run.report.notes.push(format!(
                "all 24 hourly files of the day starting {day} are listed, but no daily file \
                 is (yet)"
            )),
            None => {}
        }
    }
    Ok(run.report)
}

/// The listed files of one UTC day.
#[derive(Debug, Default)]
struct DayFiles {
    hourly: Vec<ObjectName>,
    daily: Vec<ObjectName>,
}

/// UTC midnight on or before `unix`.
fn day_of(unix: u64) -> u64 {
    unix - unix % DAY
}

/// The state of one verification run.
struct Run<'a> {
    region: &'a Region,
    public_keys: &'a [PublicKey],
    report: VerifyReport,
    /// Check 4: each hourly `key_data` seen, with the file (index into `files_read`) it was in.
    hourly_seen: HashMap<[u8; 16], u32>,
    /// Check 4, for the daily files.
    daily_seen: HashMap<[u8; 16], u32>,
    /// Object keys of the files read so far, to name where a duplicate was first seen.
    files_read: Vec<String>,
}

impl Run<'_> {
    fn violation(&mut self, message: String) {
        self.report.violations.push(message);
    }

    async fn read_index(
        &mut self,
        source: &dyn Source,
        index_key: &str,
        kind: Kind,
    ) -> Result<Vec<ObjectName>, VerifyError> {
        Ok(match source.get(index_key).await? {
            None => {
                self.violation(format!("{index_key}: does not exist"));
                Vec::new()
            }
            Some(bytes) => parse_index(
                self.region,
                index_key,
                kind,
                &bytes,
                &mut self.report.violations,
            ),
        })
    }

    /// Checks 1 (existence), 2, 3 (content) and 4 for one listed file; returns its keys, or
    /// `None` when the object does not exist or its keys cannot be read.
    async fn check_file(
        &mut self,
        source: &dyn Source,
        name: &ObjectName,
        index_key: &str,
        manifest: Option<&Manifest>,
    ) -> Result<Option<Vec<ExportedKey>>, VerifyError> {
        let Some(zip) = source.get(&name.key).await? else {
            self.violation(format!(
                "{}: listed in {index_key} but the object does not exist",
                name.key
            ));
            return Ok(None);
        };
        let file = check_export_file(
            name,
            self.region,
            self.public_keys,
            &zip,
            &mut self.report.violations,
        );
        drop(zip);
        if let Some(manifest) = manifest {
            manifest.check_file(name, &file, &mut self.report.violations);
        }
        self.report.bytes = self.report.bytes.saturating_add(file.bytes);
        let key_count = file.key_count.unwrap_or_default();
        let seen = match name.kind {
            Kind::Hourly => {
                self.report.keys_hourly = self.report.keys_hourly.saturating_add(key_count);
                &mut self.hourly_seen
            }
            Kind::Daily => {
                self.report.keys_daily = self.report.keys_daily.saturating_add(key_count);
                &mut self.daily_seen
            }
        };

        // Check 4.
        let file_number = u32::try_from(self.files_read.len()).unwrap_or(u32::MAX);
        let mut repeats = 0_usize;
        let mut first_repeat: Option<(usize, [u8; 16], u32)> = None;
        for (index, key) in file.keys.iter().enumerate() {
            if let Some(&earlier) = seen.get(&key.key_data) {
                repeats += 1;
                first_repeat.get_or_insert((index, key.key_data, earlier));
            } else {
                seen.insert(key.key_data, file_number);
            }
        }
        if let Some((index, key_data, earlier)) = first_repeat {
            let where_seen = if earlier == file_number {
                "in this file".to_owned()
            } else {
                let earlier = usize::try_from(earlier)
                    .ok()
                    .and_then(|earlier| self.files_read.get(earlier))
                    .map_or("an earlier file", String::as_str);
                format!("in {earlier}")
            };
            self.violation(format!(
                "{}: {repeats} key_data value(s) are published twice among the {} files \
                 (first: key {index} of the file, key_data {}, already {where_seen})",
                name.key,
                name.kind,
                hex::encode(key_data)
            ));
        }
        self.files_read.push(name.key.clone());
        Ok(file.key_count.map(|_| file.keys))
    }
}

/// Check 5: the daily file's keys, all fields, are exactly the union of its day's hourly
/// files (DESIGN §4: "exactly the union of its 24 hourly files").
fn compare_day(
    daily_label: &str,
    mut hourly: Vec<ExportedKey>,
    mut daily: Vec<ExportedKey>,
    violations: &mut Vec<String>,
) {
    hourly.sort_unstable();
    daily.sort_unstable();
    if hourly == daily {
        return;
    }
    // A merge walk over the two sorted multisets.
    let (mut missing, mut extra) = (0_usize, 0_usize);
    let (mut first_missing, mut first_extra) = (None, None);
    let (mut h, mut d) = (hourly.iter().peekable(), daily.iter().peekable());
    loop {
        match (h.peek(), d.peek()) {
            (None, None) => break,
            (Some(a), Some(b)) if a == b => {
                h.next();
                d.next();
            }
            (Some(a), Some(b)) if a < b => {
                missing += 1;
                first_missing.get_or_insert(**a);
                h.next();
            }
            (Some(a), None) => {
                missing += 1;
                first_missing.get_or_insert(**a);
                h.next();
            }
            (_, Some(b)) => {
                extra += 1;
                first_extra.get_or_insert(**b);
                d.next();
            }
        }
    }
    let mut parts = Vec::new();
    if let Some(key) = first_missing {
        parts.push(format!(
            "{missing} key(s) of the day's hourly files are missing (first: key_data {})",
            hex::encode(key.key_data)
        ));
    }
    if let Some(key) = first_extra {
        parts.push(format!(
            "{extra} key(s) are not in the day's hourly files, or differ from them in a field \
             (first: key_data {})",
            hex::encode(key.key_data)
        ));
    }
    violations.push(format!(
        "{daily_label}: is not exactly the union of its day's 24 hourly files: {}",
        parts.join("; ")
    ));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(n: u8, trl: i32) -> ExportedKey {
        ExportedKey {
            rolling_start_interval_number: 100,
            rolling_period: 144,
            transmission_risk_level: trl,
            report_type: 1,
            days_since_onset: None,
            key_data: [n; 16],
        }
    }

    #[test]
    fn day_comparison_counts_missing_and_extra_keys() {
        let mut violations = Vec::new();
        compare_day(
            "D",
            vec![key(1, 1), key(2, 1), key(3, 1)],
            vec![key(3, 1), key(2, 1), key(1, 1)],
            &mut violations,
        );
        assert!(violations.is_empty());

        compare_day(
            "D",
            vec![key(1, 1), key(2, 1), key(3, 1)],
            vec![key(1, 1), key(2, 2), key(4, 1), key(4, 1)],
            &mut violations,
        );
        assert_eq!(
            violations,
            [format!(
                "D: is not exactly the union of its day's 24 hourly files: 2 key(s) of the \
                 day's hourly files are missing (first: key_data {}); 3 key(s) are not in the \
                 day's hourly files, or differ from them in a field (first: key_data {})",
                hex::encode([2_u8; 16]),
                hex::encode([4_u8; 16])
            )]
        );
    }

    #[test]
    fn report_summary() {
        let mut report = VerifyReport {
            hourly_files: 30,
            daily_files: 1,
            keys_hourly: 80,
            keys_daily: 70,
            bytes: 15_000,
            violations: Vec::new(),
            notes: vec!["n".to_owned()],
        };
        assert!(report.is_ok());
        assert_eq!(
            report.to_string(),
            "30 hourly files (80 keys), 1 daily files (70 keys), 15000 bytes, 100.0 bytes per \
             key: OK\nnote: n"
        );
        report.violations.push("v".to_owned());
        report.keys_hourly = 0;
        report.keys_daily = 0;
        assert!(!report.is_ok());
        assert_eq!(
            report.to_string(),
            "30 hourly files (0 keys), 1 daily files (0 keys), 15000 bytes: 1 violation(s)\n\
             violation: v\nnote: n"
        );
    }

    #[tokio::test]
    async fn an_invalid_region_is_an_error() {
        let options = VerifyOptions {
            region: "../x".to_owned(),
            ..VerifyOptions::default()
        };
        assert!(matches!(
            verify_bucket(&MemorySource::new(), &options).await,
            Err(VerifyError::InvalidRegion { .. })
        ));
    }

    #[tokio::test]
    async fn timestamps_at_the_end_of_time_are_judged_without_overflow() {
        let last_hour = (u64::MAX - HOUR) / HOUR * HOUR;
        let last_day = (u64::MAX - DAY) / DAY * DAY;
        let mut bucket = MemorySource::new();
        bucket.insert(
            "CA/index.txt",
            format!(
                "CA/0-3600-00001.zip\nCA/{last_hour}-{}-00001.zip\n",
                last_hour + HOUR
            ),
        );
        bucket.insert(
            "CA/daily/index.txt",
            format!("CA/daily/{last_day}-{}-00001.zip\n", last_day + DAY),
        );
        bucket.insert(
            "CA/index.json",
            "{\"region\": \"CA\", \"generated_at\": 0, \"files\": []}",
        );
        let report = verify_bucket(&bucket, &VerifyOptions::default())
            .await
            .unwrap();
        assert!(
            report
                .violations
                .iter()
                .any(|violation| violation.starts_with("CA/index.txt: no hourly file for ")),
            "{report}"
        );
        assert_eq!(
            report
                .violations
                .iter()
                .filter(|violation| violation.ends_with("but the object does not exist"))
                .count(),
            3,
            "{report}"
        );
    }

    #[tokio::test]
    async fn an_empty_bucket_reports_its_missing_indexes() {
        let report = verify_bucket(&MemorySource::new(), &VerifyOptions::default())
            .await
            .unwrap();
        assert_eq!(
            report.violations,
            [
                "CA/index.txt: does not exist",
                "CA/daily/index.txt: does not exist",
                "CA/index.json: does not exist",
            ]
        );
    }
}
