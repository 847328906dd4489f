//! The bucket check of `infra/dev/chaos`: is what a phone can read right now correct, and
//! has nothing that must never change changed since the last look?
//!
//! One [`BucketChecker`] lives for a whole chaos run and remembers, across checks:
//! * the SHA-256 of every immutable object the first time it was seen — hourly and daily
//!   zips, and a day's retrieval object once it covers the whole day (DESIGN §4, §4.3) — so
//!   a rewrite with other bytes is caught however much later it happens;
//! * the last hour `{region}/index.txt` listed at each observation of a bucket prefix
//!   ([`IndexTracker`]), so an index that goes backwards is caught, whether a full check or
//!   a sample taken while exporters run saw it.
//!
//! A check ([`BucketChecker::check`]) runs `diagnosis-verify` over the bucket (signatures,
//! header, windows, parts, manifest, counts, every object the three indexes name exists and
//! verifies, and the deployed apps' retrieval objects: each one that must exist, its window,
//! its keys against the hourly files, its Cache-Control), then adds the rules verify does not
//! hold across time: the hours of `index.txt` are contiguous, immutable objects kept their
//! bytes, and the index did not go backwards. After a pass that ran to completion it also asks
//! for completeness ([`Expectation`]); after an interrupted one, the findings a pass that died
//! between its steps leaves behind until the next pass are counted, not reported
//! ([`one_pass_apart`], [`retrieval_out_of_step`]).
//!
//! The check only reads; it must never write to the bucket it judges.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use diagnosis_exporter::storage::Bucket;
use diagnosis_exporter::verify_command::BucketSource;
use diagnosis_format::names::{RETRIEVAL_BUNDLE, daily_index_key, hourly_index_key};
use diagnosis_format::sign::PublicKey;
use diagnosis_verify::{
    Finding, RetrievalObject, RetrievalProblem, Served, Source, VerifyError, VerifyOptions,
    verify_bucket,
};
use futures::future::BoxFuture;
use sha2::{Digest as _, Sha256};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// What a check may demand beyond consistency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expectation {
    /// The last pass ran to completion without faults, so the bucket must be complete:
    /// `index.txt` reaches `through_hour`, every complete day of it has its daily file, and
    /// every day it covers has its retrieval object, as has `00000`.
    pub complete: bool,
    /// The last closed hour when that pass started.
    pub through_hour: Option<i64>,
}

/// One broken rule, naming the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// What `diagnosis-verify` found.
    Verify(Finding),
    /// `index.txt` lists hours with a gap between them.
    IndexGap { after: i64, next: i64 },
    /// An `index.txt` line that is not an hourly file of the region.
    IndexUnreadable { line: String },
    /// The last hour `index.txt` lists is older than at the previous observation.
    IndexRegressed { from: i64, to: i64 },
    /// `index.txt` existed at an earlier observation and is gone now.
    IndexVanished { last_hour: i64 },
    /// An immutable object's bytes differ from the first time it was seen.
    ImmutableChanged { object: String },
    /// After a complete pass, something the pass must have published is absent.
    Incomplete { what: String },
}

impl Violation {
    /// A short name for the kind of violation, for tables.
    pub fn category(&self) -> String {
        match self {
            Violation::Verify(finding) => {
                let debug = format!("{finding:?}");
                let name = debug.split([' ', '{', '(']).next().unwrap_or("finding");
                format!("verify: {name}")
            }
            Violation::IndexGap { .. } => "index.txt has a gap".to_owned(),
            Violation::IndexUnreadable { .. } => "index.txt line unreadable".to_owned(),
            Violation::IndexRegressed { .. } => "index.txt went backwards".to_owned(),
            Violation::IndexVanished { .. } => "index.txt disappeared".to_owned(),
            Violation::ImmutableChanged { .. } => "immutable object changed".to_owned(),
            Violation::Incomplete { .. } => "incomplete after a clean pass".to_owned(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Verify(finding) => write!(f, "{finding}"),
            Violation::IndexGap { after, next } => write!(
                f,
                "index.txt: hour {next} follows hour {after}; the hours between are missing"
            ),
            Violation::IndexUnreadable { line } => {
                write!(f, "index.txt: {line:?} is not an hourly file of the region")
            }
            Violation::IndexRegressed { from, to } => write!(
                f,
                "index.txt: its last hour went back from {from} to {to} ({} hour(s))",
                from - to
            ),
            Violation::IndexVanished { last_hour } => write!(
                f,
                "index.txt: gone, after it listed hours up to {last_hour}"
            ),
            Violation::ImmutableChanged { object } => write!(
                f,
                "{object}: its bytes changed since it was first seen (it is immutable)"
            ),
            Violation::Incomplete { what } => write!(f, "after a complete pass: {what}"),
        }
    }
}

/// The last hour `index.txt` listed at each observation of each bucket prefix, and every time
/// it went backwards. Shared by the full checks and the samples taken while exporters run.
#[derive(Debug, Default)]
pub struct IndexTracker {
    last: HashMap<String, i64>,
    regressions: u64,
    largest_step: i64,
}

impl IndexTracker {
    /// Records that `prefix`'s `index.txt` listed hours up to `last_hour` (`None`: no index,
    /// or an empty one) and returns the violation when it went backwards or disappeared.
    pub fn observe(&mut self, prefix: &str, last_hour: Option<i64>) -> Option<Violation> {
        let previous = self.last.get(prefix).copied();
        match (previous, last_hour) {
            (None, None) => None,
            (Some(from), None) => Some(Violation::IndexVanished { last_hour: from }),
            (previous, Some(to)) => {
                self.last.insert(prefix.to_owned(), to);
                match previous {
                    Some(from) if to < from => {
                        self.regressions += 1;
                        self.largest_step = self.largest_step.max(from - to);
                        Some(Violation::IndexRegressed { from, to })
                    }
                    _ => None,
                }
            }
        }
    }

    /// Whether `prefix` ever had an index.
    pub fn has_seen(&self, prefix: &str) -> bool {
        self.last.contains_key(prefix)
    }

    /// How many times an index went backwards.
    pub fn regressions(&self) -> u64 {
        self.regressions
    }

    /// The largest backward step of an index's last hour, in hours (0: never).
    pub fn largest_step(&self) -> i64 {
        self.largest_step
    }

    /// Forgets a prefix that will not be observed again.
    pub fn forget(&mut self, prefix: &str) {
        self.last.remove(prefix);
    }
}

/// The hours an `index.txt` lists, oldest first as written, with the lines that name no
/// hourly file of `region`.
pub fn index_hours(region: &str, text: &str) -> (Vec<i64>, Vec<String>) {
    let mut hours = Vec::new();
    let mut unreadable = Vec::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        match hour_of_line(region, line) {
            Some(hour) => hours.push(hour),
            None => unreadable.push(line.to_owned()),
        }
    }
    (hours, unreadable)
}

/// `CA/{start}-{end}-{part}.zip` with `end = start + 3600` on an hour boundary: the hour.
fn hour_of_line(region: &str, line: &str) -> Option<i64> {
    let name = line.strip_prefix(region)?.strip_prefix('/')?;
    let stem = name.strip_suffix(".zip")?;
    let mut fields = stem.split('-');
    let start: i64 = fields.next()?.parse().ok()?;
    let end: i64 = fields.next()?.parse().ok()?;
    let part = fields.next()?;
    let well_formed = fields.next().is_none()
        && part.len() == 5
        && part.bytes().all(|b| b.is_ascii_digit())
        && start % HOUR == 0
        && end == start + HOUR;
    well_formed.then_some(start / HOUR)
}

/// The violations of `index.txt`'s hours: gaps between consecutive distinct hours.
fn gaps(hours: &[i64]) -> Vec<Violation> {
    let distinct: BTreeSet<i64> = hours.iter().copied().collect();
    distinct
        .iter()
        .zip(distinct.iter().skip(1))
        .filter(|(after, next)| **next != **after + 1)
        .map(|(&after, &next)| Violation::IndexGap { after, next })
        .collect()
}

/// A bucket source that remembers the SHA-256 of everything verify read, so the immutable
/// objects verify already fetched are not fetched twice.
struct HashingSource {
    inner: BucketSource,
    hashes: Mutex<HashMap<String, [u8; 32]>>,
}

impl HashingSource {
    fn remember(&self, key: &str, bytes: &[u8]) {
        self.hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), Sha256::digest(bytes).into());
    }
}

impl Source for HashingSource {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, VerifyError>> {
        Box::pin(async move {
            let bytes = self.inner.get(key).await?;
            if let Some(bytes) = &bytes {
                self.remember(key, bytes);
            }
            Ok(bytes)
        })
    }

    fn get_served<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Served>, VerifyError>> {
        Box::pin(async move {
            let served = self.inner.get_served(key).await?;
            if let Some(served) = &served {
                self.remember(key, &served.bytes);
            }
            Ok(served)
        })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// What one check saw.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Every broken rule.
    pub violations: Vec<Violation>,
    /// No index had been written to this prefix yet: nothing is published, so only the
    /// objects already uploaded were checked.
    pub unpublished: bool,
    pub hourly_files: usize,
    pub daily_files: usize,
    pub keys_hourly: u64,
    pub keys_daily: u64,
    pub retrieval_objects: usize,
    /// The last hour `index.txt` lists.
    pub last_hour: Option<i64>,
    /// Disagreements between the manifest and the two `index.txt` files seen after an
    /// interrupted pass ([`one_pass_apart`]): not violations, counted for the table.
    pub indexes_one_pass_apart: u64,
    /// Retrieval objects absent or out of step with `index.txt` after an interrupted pass
    /// ([`retrieval_out_of_step`]): not violations, counted for the table.
    pub retrieval_out_of_step: u64,
}

/// Whether `finding` says only that `index.json` and the two `index.txt` files list different
/// files. They are three objects, and an object store writes one at a time: a pass that dies
/// between them leaves them one pass apart until the next pass rewrites all three (DESIGN
/// §4.2). Each must still name only files that exist and verify, which the other findings
/// check; after a pass that ran to completion they must agree.
pub fn one_pass_apart(finding: &Finding) -> bool {
    matches!(
        finding,
        Finding::ManifestOmits { .. } | Finding::ManifestUnindexed { .. }
    )
}

/// Whether `finding` says only that a retrieval object is absent, or holds the window of an
/// older (or newer) pass than the one that wrote `index.txt`. A pass writes the hours and the
/// indexes before it derives the retrieval objects (DESIGN §4.2), so one that dies in between,
/// or whose derived step failed, leaves them so until the next pass; each object present must
/// still be a signed export holding exactly the keys of its own window, which the other
/// findings check. After a pass that ran to completion they must be there and up to date.
pub fn retrieval_out_of_step(finding: &Finding) -> bool {
    matches!(
        finding,
        Finding::Retrieval {
            problem: RetrievalProblem::Missing | RetrievalProblem::OutOfStep { .. },
            ..
        }
    )
}

/// Checks buckets and remembers what must not change between checks (module docs).
#[derive(Debug)]
pub struct BucketChecker {
    region: String,
    compat_region_path: String,
    public_keys: Vec<PublicKey>,
    /// SHA-256 of each immutable object when first seen, by `prefix/key`.
    immutable: HashMap<String, [u8; 32]>,
    tracker: Arc<Mutex<IndexTracker>>,
    checks: u64,
    immutable_changed: u64,
}

impl BucketChecker {
    /// A checker for the export region `region` and the retrieval path
    /// `retrieve/{compat_region_path}/`, verifying signatures against `public_keys`.
    pub fn new(region: &str, compat_region_path: &str, public_keys: Vec<PublicKey>) -> Self {
        BucketChecker {
            region: region.to_owned(),
            compat_region_path: compat_region_path.to_owned(),
            public_keys,
            immutable: HashMap::new(),
            tracker: Arc::new(Mutex::new(IndexTracker::default())),
            checks: 0,
            immutable_changed: 0,
        }
    }

    /// The index tracker, to share with samplers that watch `index.txt` while exporters run.
    pub fn tracker(&self) -> Arc<Mutex<IndexTracker>> {
        Arc::clone(&self.tracker)
    }

    /// Full checks made so far.
    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// Immutable objects found with other bytes than when first seen.
    pub fn immutable_changed(&self) -> u64 {
        self.immutable_changed
    }

    /// Forgets a prefix that will not be checked again.
    pub fn forget(&mut self, prefix: &str) {
        let start = format!("{prefix}/");
        self.immutable.retain(|key, _| !key.starts_with(&start));
        self.tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget(prefix);
    }

    /// Checks `bucket`, published under `prefix` (the name its history is kept under).
    /// Errors only when the bucket cannot be read; everything wrong with it is a violation.
    pub async fn check(
        &mut self,
        bucket: &Bucket,
        prefix: &str,
        expectation: Expectation,
    ) -> anyhow::Result<CheckReport> {
        self.checks += 1;
        let mut report = CheckReport::default();
        let listing = bucket.list("").await?;
        let hourly_index = hourly_index_key(&self.region);
        let index_text = bucket.get(&hourly_index).await?;
        // The exporter writes index.json, then daily/index.txt, then index.txt: publication
        // starts with index.txt, and the other two exist whenever it does.
        let indexes_present = listing.binary_search(&hourly_index).is_ok();
        let seen_before = self
            .tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .has_seen(prefix);

        let source = HashingSource {
            inner: BucketSource::new(bucket.clone()),
            hashes: Mutex::new(HashMap::new()),
        };
        let retrieval = if indexes_present || seen_before || expectation.complete {
            self.verify(&source, expectation, &mut report).await?
        } else {
            report.unpublished = true;
            Vec::new()
        };

        // index.txt: contiguous, and never behind what was seen before.
        let mut indexed_hours = Vec::new();
        if let Some(text) = &index_text {
            let (hours, unreadable) = index_hours(&self.region, &String::from_utf8_lossy(text));
            report.violations.extend(
                unreadable
                    .into_iter()
                    .map(|line| Violation::IndexUnreadable { line }),
            );
            report.violations.extend(gaps(&hours));
            indexed_hours = hours;
        }
        report.last_hour = indexed_hours.iter().copied().max();
        let observed = if index_text.is_some() {
            report.last_hour
        } else {
            None
        };
        if let Some(violation) = self
            .tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(prefix, observed)
        {
            report.violations.push(violation);
        }

        // Immutable export files, indexed or not.
        let hashes = source
            .hashes
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let region_folder = format!("{}/", self.region);
        for key in listing
            .iter()
            .filter(|key| key.starts_with(&region_folder) && key.ends_with(".zip"))
        {
            let digest = match hashes.get(key) {
                Some(digest) => *digest,
                None => match bucket.get(key).await? {
                    Some(bytes) => Sha256::digest(&bytes).into(),
                    // Listed a moment ago and gone: only a deletion can do that, and the
                    // exporter deletes only unindexed files, which a check never needs.
                    None => continue,
                },
            };
            self.remember(prefix, key, digest, &mut report);
        }

        // A day's retrieval object is immutable once it holds the whole day (DESIGN §4.3).
        for object in retrieval.iter().filter(|object| holds_a_whole_day(object)) {
            if let Ok(digest) = <[u8; 32]>::try_from(hex::decode(&object.digest.sha256)?) {
                self.remember(prefix, &object.object, digest, &mut report);
            }
        }

        if expectation.complete {
            self.check_complete(bucket, &indexed_hours, expectation, &mut report)
                .await?;
        }
        Ok(report)
    }

    /// `diagnosis-verify`'s findings, except those an interrupted pass leaves until the next
    /// one (counted); returns the retrieval objects it read.
    async fn verify(
        &self,
        source: &HashingSource,
        expectation: Expectation,
        report: &mut CheckReport,
    ) -> anyhow::Result<Vec<RetrievalObject>> {
        let verified = verify_bucket(
            source,
            &VerifyOptions {
                region: self.region.clone(),
                public_keys: self.public_keys.clone(),
                compat_path: self.compat_region_path.clone(),
                cdn: None,
            },
        )
        .await?;
        report.hourly_files = verified.hourly_files;
        report.daily_files = verified.daily_files;
        report.keys_hourly = verified.keys_hourly;
        report.keys_daily = verified.keys_daily;
        report.retrieval_objects = verified.retrieval.len();
        for finding in verified.violations {
            if !expectation.complete && one_pass_apart(&finding) {
                report.indexes_one_pass_apart += 1;
            } else if !expectation.complete && retrieval_out_of_step(&finding) {
                report.retrieval_out_of_step += 1;
            } else {
                report.violations.push(Violation::Verify(finding));
            }
        }
        Ok(verified.retrieval)
    }

    fn remember(&mut self, prefix: &str, key: &str, digest: [u8; 32], report: &mut CheckReport) {
        let name = format!("{prefix}/{key}");
        match self.immutable.get(&name) {
            Some(first) if *first != digest => {
                self.immutable_changed += 1;
                report.violations.push(Violation::ImmutableChanged {
                    object: name.clone(),
                });
                // Judged against the first bytes for good: a later change back is not new.
            }
            Some(_) => {}
            None => {
                self.immutable.insert(name, digest);
            }
        }
    }

    /// After a complete pass: `index.txt` reaches the hour the pass started after, and every
    /// complete day has its daily file. That the retrieval objects are all there and up to
    /// date, verify has already checked.
    async fn check_complete(
        &self,
        bucket: &Bucket,
        indexed_hours: &[i64],
        expectation: Expectation,
        report: &mut CheckReport,
    ) -> anyhow::Result<()> {
        let mut missing = |what: String| {
            report.violations.push(Violation::Incomplete { what });
        };
        let last = indexed_hours.iter().copied().max();
        if let Some(through) = expectation.through_hour
            && last.is_none_or(|last| last < through)
        {
            missing(format!(
                "index.txt ends at hour {}, the pass started after hour {through} closed",
                last.map_or_else(|| "(none)".to_owned(), |h| h.to_string())
            ));
        }
        // Hours per day of the index, to find the complete days.
        let mut per_day: BTreeMap<i64, usize> = BTreeMap::new();
        for hour in indexed_hours.iter().collect::<BTreeSet<_>>() {
            *per_day.entry(hour.div_euclid(24)).or_default() += 1;
        }
        let daily_text = bucket
            .get(&daily_index_key(&self.region))
            .await?
            .unwrap_or_default();
        let daily_days: BTreeSet<i64> = String::from_utf8_lossy(&daily_text)
            .lines()
            .filter_map(|line| {
                let name = line.strip_prefix(&format!("{}/daily/", self.region))?;
                let start: i64 = name.split('-').next()?.parse().ok()?;
                Some(start.div_euclid(DAY))
            })
            .collect();
        for (&day, &hours) in &per_day {
            if hours == 24 && !daily_days.contains(&day) {
                missing(format!(
                    "day {day} has all 24 hours indexed but no daily file"
                ));
            }
        }
        Ok(())
    }
}

/// Whether `object` is a day's retrieval object holding the whole day.
fn holds_a_whole_day(object: &RetrievalObject) -> bool {
    !object.object.ends_with(RETRIEVAL_BUNDLE)
        && object
            .window
            .is_some_and(|window| window.end.checked_sub(window.start) == Some(DAY.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::test_start_time;
    use crate::export::{ExportHarness, hour_key, key, test_public_keys};
    use chrono::Duration;
    use diagnosis_core::time::{interval_number, last_closed_hour};
    use diagnosis_format::names::ObjectKind;

    fn found(report: &CheckReport, wanted: impl Fn(&Violation) -> bool) -> bool {
        report.violations.iter().any(wanted)
    }

    /// The real exporter publishes 40 hours (a complete UTC day among them) to the S3 server;
    /// then the bucket is changed behind its back, one rule at a time.
    #[tokio::test]
    async fn a_published_bucket_passes_and_each_broken_rule_is_found() {
        let start = test_start_time();
        let h = ExportHarness::new(start).await;
        let expired = interval_number(start.timestamp()) / 144 * 144 - 3 * 144;
        h.upload(&[key(expired, 1), key(expired + 144, 2)]).await;
        h.advance(Duration::hours(40));
        h.run().await;
        let through = last_closed_hour(h.now().timestamp(), 600);
        let complete = Expectation {
            complete: true,
            through_hour: Some(through),
        };
        let mut checker = BucketChecker::new("CA", "302", test_public_keys());

        let report = checker.check(&h.bucket, "p", complete).await.unwrap();
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert!(report.daily_files >= 1, "{report:?}");
        assert_eq!(report.last_hour, Some(through));
        assert!(report.retrieval_objects >= 3, "{report:?}");
        // Checking again changes nothing.
        let report = checker.check(&h.bucket, "p", complete).await.unwrap();
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(checker.checks(), 2);

        // An hourly file rewritten with another hour's (valid, signed) bytes.
        let victim = hour_key(through - 5);
        let original = h.bucket.get(&victim).await.unwrap().unwrap();
        let other = h.bucket.get(&hour_key(through - 6)).await.unwrap().unwrap();
        h.bucket
            .put(&victim, other, ObjectKind::ExportFile)
            .await
            .unwrap();
        let report = checker.check(&h.bucket, "p", complete).await.unwrap();
        let changed = format!("p/{victim}");
        assert!(
            found(&report, |v| *v
                == Violation::ImmutableChanged {
                    object: changed.clone()
                }),
            "{:?}",
            report.violations
        );
        assert!(found(&report, |v| matches!(v, Violation::Verify(_))));
        assert_eq!(checker.immutable_changed(), 1);
        h.bucket
            .put(&victim, original, ObjectKind::ExportFile)
            .await
            .unwrap();

        // index.txt one hour behind what the last check saw.
        let index = hourly_index_key("CA");
        let full = h.bucket.get(&index).await.unwrap().unwrap();
        let lines: Vec<&str> = std::str::from_utf8(&full).unwrap().lines().collect();
        let behind = format!("{}\n", lines[..lines.len() - 1].join("\n"));
        h.bucket
            .put(&index, Bytes::from(behind), ObjectKind::Index)
            .await
            .unwrap();
        let report = checker
            .check(&h.bucket, "p", Expectation::default())
            .await
            .unwrap();
        assert!(
            found(&report, |v| *v
                == Violation::IndexRegressed {
                    from: through,
                    to: through - 1
                }),
            "{:?}",
            report.violations
        );
        assert_eq!(checker.tracker().lock().unwrap().largest_step(), 1);

        // A hole in index.txt.
        let mut holed: Vec<&str> = lines.clone();
        holed.remove(lines.len() / 2);
        h.bucket
            .put(
                &index,
                Bytes::from(format!("{}\n", holed.join("\n"))),
                ObjectKind::Index,
            )
            .await
            .unwrap();
        let report = checker
            .check(&h.bucket, "p", Expectation::default())
            .await
            .unwrap();
        assert!(
            found(&report, |v| matches!(v, Violation::IndexGap { .. })),
            "{:?}",
            report.violations
        );
        h.bucket
            .put(&index, full.clone(), ObjectKind::Index)
            .await
            .unwrap();

        // A pass that died between index.json and index.txt: the manifest already lists the
        // last hour, index.txt does not yet. Each names only verified files, so this is no
        // violation while passes are interrupted, and one after a complete pass.
        let mut apart = BucketChecker::new("CA", "302", test_public_keys());
        let one_behind = format!("{}\n", lines[..lines.len() - 1].join("\n"));
        h.bucket
            .put(&index, Bytes::from(one_behind), ObjectKind::Index)
            .await
            .unwrap();
        let report = apart
            .check(&h.bucket, "a", Expectation::default())
            .await
            .unwrap();
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(report.indexes_one_pass_apart, 1, "{report:?}");
        let report = apart.check(&h.bucket, "a", complete).await.unwrap();
        assert!(
            found(&report, |v| matches!(
                v,
                Violation::Verify(Finding::ManifestUnindexed { .. })
            )),
            "{:?}",
            report.violations
        );
        // index.txt without index.json is a violation whatever the expectation: the manifest
        // is written first.
        let manifest = diagnosis_format::names::manifest_key("CA");
        let saved = h.bucket.get(&manifest).await.unwrap().unwrap();
        h.bucket.delete(&manifest).await.unwrap();
        let report = apart
            .check(&h.bucket, "a", Expectation::default())
            .await
            .unwrap();
        assert!(
            found(&report, |v| matches!(
                v,
                Violation::Verify(Finding::Missing { .. })
            )),
            "{:?}",
            report.violations
        );
        h.bucket
            .put(&manifest, saved, ObjectKind::Manifest)
            .await
            .unwrap();
        h.bucket
            .put(&index, full.clone(), ObjectKind::Index)
            .await
            .unwrap();

        // A retrieval object that is not a signed export, and a missing bundle. The bundle may
        // be missing after an interrupted pass (counted, not a violation), the broken object
        // never; after a complete pass both are violations.
        let day = through.div_euclid(24);
        let today = format!("retrieve/302/{day:05}");
        h.bucket
            .put(
                &today,
                Bytes::from_static(b"not a zip"),
                ObjectKind::RetrievalBundle,
            )
            .await
            .unwrap();
        let bundle = h.bucket.get("retrieve/302/00000").await.unwrap().unwrap();
        h.bucket.delete("retrieve/302/00000").await.unwrap();
        let broken = |v: &Violation| matches!(v, Violation::Verify(Finding::ArchiveInvalid { object, .. }) if *object == today);
        let missing = |v: &Violation| {
            matches!(
                v,
                Violation::Verify(Finding::Retrieval { object, problem: RetrievalProblem::Missing })
                    if object == "retrieve/302/00000"
            )
        };
        let report = checker
            .check(&h.bucket, "p", Expectation::default())
            .await
            .unwrap();
        assert!(found(&report, broken), "{:?}", report.violations);
        assert!(!found(&report, missing), "{:?}", report.violations);
        assert_eq!(report.retrieval_out_of_step, 1, "{report:?}");
        let report = checker.check(&h.bucket, "p", complete).await.unwrap();
        assert!(found(&report, broken), "{:?}", report.violations);
        assert!(found(&report, missing), "{:?}", report.violations);
        h.bucket
            .put("retrieve/302/00000", bundle, ObjectKind::RetrievalBundle)
            .await
            .unwrap();

        // Nothing published under a prefix is no violation; an index that vanishes is.
        let mut fresh = BucketChecker::new("CA", "302", test_public_keys());
        let empty = crate::s3::TestBucket::new().await.bucket();
        let report = fresh
            .check(&empty, "q", Expectation::default())
            .await
            .unwrap();
        assert!(
            report.unpublished && report.violations.is_empty(),
            "{report:?}"
        );
        h.bucket.delete(&index).await.unwrap();
        let report = checker
            .check(&h.bucket, "p", Expectation::default())
            .await
            .unwrap();
        assert!(
            found(&report, |v| matches!(v, Violation::IndexVanished { .. })),
            "{:?}",
            report.violations
        );
    }

    #[test]
    fn index_lines_are_read_as_hours() {
        let text = "CA/3600-7200-00001.zip\nCA/7200-10800-00001.zip\nCA/7200-10800-00002.zip\n\
                    CA/daily/0-86400-00001.zip\nCA/10800-18000-00001.zip\n";
        let (hours, unreadable) = index_hours("CA", text);
        assert_eq!(hours, vec![1, 2, 2]);
        assert_eq!(
            unreadable,
            vec!["CA/daily/0-86400-00001.zip", "CA/10800-18000-00001.zip"]
        );
    }

    #[test]
    fn gaps_between_hours_are_violations_and_parts_are_not() {
        assert!(gaps(&[1, 2, 2, 3]).is_empty());
        assert_eq!(
            gaps(&[1, 2, 5, 6, 8]),
            vec![
                Violation::IndexGap { after: 2, next: 5 },
                Violation::IndexGap { after: 6, next: 8 },
            ]
        );
    }

    #[test]
    fn the_tracker_counts_each_step_back_and_keeps_the_largest() {
        let mut tracker = IndexTracker::default();
        assert_eq!(tracker.observe("a", None), None);
        assert_eq!(tracker.observe("a", Some(10)), None);
        assert_eq!(tracker.observe("a", Some(12)), None);
        assert_eq!(
            tracker.observe("a", Some(9)),
            Some(Violation::IndexRegressed { from: 12, to: 9 })
        );
        // Judged against the previous observation: catching up again is no regression.
        assert_eq!(tracker.observe("a", Some(12)), None);
        assert_eq!(
            tracker.observe("a", Some(11)),
            Some(Violation::IndexRegressed { from: 12, to: 11 })
        );
        // Another prefix has a history of its own.
        assert_eq!(tracker.observe("b", Some(1)), None);
        assert_eq!(
            tracker.observe("a", None),
            Some(Violation::IndexVanished { last_hour: 11 })
        );
        assert_eq!(tracker.regressions(), 2);
        assert_eq!(tracker.largest_step(), 3);
        tracker.forget("a");
        assert!(!tracker.has_seen("a"));
        assert_eq!(tracker.observe("a", Some(1)), None);
    }
}
