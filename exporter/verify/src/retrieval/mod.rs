//! The deployed COVID Alert apps' objects (DESIGN §4.3): `retrieve/{MCC}/{DDDDD}` for each day
//! the apps may ask for, and `retrieve/{MCC}/00000`. Each is checked as every export file is
//! (archive, header, region, batch, signatures, key order: `export_file`), then by the rule
//! of [`window`] (which objects must exist, and each one's window), against the files it is
//! derived from (exactly the keys published in its window; for `00000`, those still relevant
//! at its end), for its `Cache-Control` where the source keeps headers, and, with a CDN given,
//! for what the apps get through the edge function's path.
//!
//! The objects are read by their key, so the check needs no listing of the bucket. `00000` is
//! read first (its start names the day the bucket was built on); each day's object is read
//! when the run reads that day's files, and the day's keys are fed to `00000` as they come, so
//! memory holds one day's keys and the keys of `00000`.
//!
//! This module never writes, and never judges keys it could not read: an object compared with
//! files that are missing or broken is a note saying why, not a guess.

mod keys;
mod problem;
mod window;

use std::collections::{BTreeMap, BTreeSet};

use diagnosis_domain::time::{
    SECONDS_PER_HOUR, earliest_publish_hour, is_relevant, key_expiry, relevance_cutoff,
};
use diagnosis_format::names::{
    ObjectKind, RETRIEVAL_BUNDLE, retrieval_bundle_key, retrieval_day_key,
};
#[cfg(feature = "fetch")]
use sha2::{Digest as _, Sha256};

use self::keys::{KeyMatch, KeyVerdict};
pub use self::problem::{KeyCount, ObjectDigest, RetrievalProblem, RetrievalWindow};
use self::window::{ListedHours, Verdict, judge_bundle, judge_day};
#[cfg(feature = "fetch")]
use crate::edge::Edge;
use crate::export_file::{CheckedFile, ExportedKey, check_export_file};
#[cfg(feature = "fetch")]
use crate::fetch::HttpAnswer;
use crate::names::{DAY, HOUR, ObjectName};
use crate::source::{CacheControl, Served, Source};
use crate::{Finding, Listing, Run, VerifyError};

/// Where the apps' retrieval objects are also fetched from: the CDN, through the edge
/// function's path `/retrieve/{MCC}/{P}/{hmac}` (DESIGN §4.3). Without the `fetch` feature
/// there is no CDN to ask, and this has no value.
#[derive(Debug, Clone)]
pub enum CdnCheck {
    /// Each retrieval object read from the bucket is also fetched through the CDN, which must
    /// serve the same bytes.
    #[cfg(feature = "fetch")]
    Compare(Edge),
    /// The location is the CDN itself, which serves retrieval objects only at the edge path:
    /// they are read there.
    #[cfg(feature = "fetch")]
    ReadThrough(Edge),
}

/// One retrieval object that was read, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalObject {
    /// Its object key.
    pub object: String,
    /// Its `export.bin` window, when it could be read.
    pub window: Option<RetrievalWindow>,
    /// Its number of keys, when they could be read.
    pub keys: Option<u64>,
    /// Its size and SHA-256.
    pub digest: ObjectDigest,
}

/// What the files of one UTC day hold, as read.
#[derive(Debug, Default)]
pub(crate) struct DayKeys {
    /// The day number.
    pub(crate) day: u64,
    /// The keys of each listed hour whose every part was read, by start.
    pub(crate) hours: BTreeMap<u64, Vec<ExportedKey>>,
    /// The starts of listed hours of which some part could not be read.
    pub(crate) unreadable: BTreeSet<u64>,
    /// The keys of the day's daily file, when it is listed and every part was read.
    pub(crate) daily: Option<Vec<ExportedKey>>,
}

impl DayKeys {
    /// Groups the keys read from `hourly` and `daily` (one entry per file, `None` for a file
    /// that could not be read) by hour.
    pub(crate) fn new(
        day: u64,
        hourly: &[ObjectName],
        hourly_keys: Vec<Option<Vec<ExportedKey>>>,
        daily_keys: Vec<Option<Vec<ExportedKey>>>,
    ) -> Self {
        let mut keys = Self {
            day,
            ..Self::default()
        };
        for (name, file) in hourly.iter().zip(hourly_keys) {
            match file {
                Some(file) if !keys.unreadable.contains(&name.start) => {
                    keys.hours.entry(name.start).or_default().extend(file);
                }
                _ => {
                    keys.hours.remove(&name.start);
                    keys.unreadable.insert(name.start);
                }
            }
        }
        if !daily_keys.is_empty() {
            keys.daily = daily_keys
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(|parts| parts.into_iter().flatten().collect());
        }
        keys
    }
}

/// The retrieval part of one run: what the listing and `00000` fixed, and what is left.
pub(crate) struct RetrievalRun {
    listed: ListedHours,
    today: u64,
    bundle: Option<Bundle>,
    /// Days whose files were handed over (their object checked, their keys fed to `00000`).
    days_seen: BTreeSet<u64>,
    /// Some object was read from a source that keeps no headers.
    headers_not_kept: bool,
}

impl RetrievalRun {
    fn bundle_days(&self) -> Option<std::ops::RangeInclusive<u64>> {
        let window = self.bundle.as_ref()?.window;
        (window.start < window.end).then(|| window.start / DAY..=(window.end - 1) / DAY)
    }
}

/// `00000` while the days are read.
struct Bundle {
    object: String,
    window: RetrievalWindow,
    matching: KeyMatch,
    /// Why its keys cannot be compared, once some day's cannot be known.
    not_compared: Option<String>,
}

/// What reading a retrieval object gave.
enum Reading {
    Object(Served),
    Missing,
    /// Not read, for a reason already reported (only the CDN's edge skips an object).
    #[cfg(feature = "fetch")]
    Skipped,
}

impl Run<'_> {
    /// Reads `00000` (its start names the day the bucket was built on) and fixes which days'
    /// objects must exist. Nothing is required of a bucket whose `index.txt` lists no hour.
    pub(crate) async fn start_retrieval(
        &mut self,
        source: &dyn Source,
        listing: &Listing,
    ) -> Result<(), VerifyError> {
        let (Some(oldest), Some(newest)) = (listing.hourly.first(), listing.hourly.last()) else {
            self.note(format!(
                "retrieval objects not checked: {} lists no hour",
                listing.hourly_index
            ));
            return Ok(());
        };
        let listed = ListedHours {
            oldest: oldest.start,
            newest: newest.start,
        };
        let object = retrieval_bundle_key(self.compat_path);
        let read = self
            .read_retrieval_file(source, &object, RETRIEVAL_BUNDLE, None)
            .await?;
        let found = read.as_ref().and_then(|(file, _)| window_of(file));
        let today = listed.today(found.map(|window| window.start));
        self.retrieval = Some(RetrievalRun {
            listed,
            today,
            bundle: None,
            days_seen: BTreeSet::new(),
            headers_not_kept: false,
        });
        let Some((file, cache_control)) = read else {
            return Ok(());
        };
        let expected = listed.bundle_window(today);
        let Some(window) =
            self.judge_window(&object, judge_bundle(found, expected), &file, expected)
        else {
            return Ok(());
        };
        self.check_cache_control(&object, &cache_control, ObjectKind::RetrievalBundle);
        if let Some(run) = &mut self.retrieval {
            run.bundle = Some(Bundle {
                object,
                window,
                matching: KeyMatch::new(file.keys),
                not_compared: None,
            });
        }
        Ok(())
    }

    /// Whether the retrieval objects need `day`'s keys.
    pub(crate) fn retrieval_wants(&self, day: u64) -> bool {
        self.retrieval.as_ref().is_some_and(|run| {
            run.listed.required_days(run.today).contains(&day)
                || run.bundle_days().is_some_and(|days| days.contains(&day))
        })
    }

    /// Checks `keys.day`'s object when it must exist, and feeds the day's keys to `00000`.
    pub(crate) async fn retrieval_day(
        &mut self,
        source: &dyn Source,
        keys: &DayKeys,
    ) -> Result<(), VerifyError> {
        let Some(run) = &mut self.retrieval else {
            return Ok(());
        };
        if !run.days_seen.insert(keys.day) {
            return Ok(());
        }
        if run.listed.required_days(run.today).contains(&keys.day) {
            self.check_day_object(source, keys).await?;
        }
        self.feed_bundle(keys);
        Ok(())
    }

    /// The days no listed file belongs to (today's after the newest hour, and any gap), the
    /// verdict on `00000`, and what could not be checked.
    pub(crate) async fn finish_retrieval(
        &mut self,
        source: &dyn Source,
    ) -> Result<(), VerifyError> {
        let Some(run) = &self.retrieval else {
            return Ok(());
        };
        let mut days: BTreeSet<u64> = run.listed.required_days(run.today).collect();
        days.extend(run.bundle_days().into_iter().flatten());
        let unseen: Vec<u64> = days.difference(&run.days_seen).copied().collect();
        for day in unseen {
            let keys = DayKeys {
                day,
                ..DayKeys::default()
            };
            self.retrieval_day(source, &keys).await?;
        }
        let Some(run) = self.retrieval.take() else {
            return Ok(());
        };
        if let Some(bundle) = run.bundle {
            match bundle.not_compared {
                Some(why) => self.note(format!("{}: keys not compared: {why}", bundle.object)),
                None => self.key_verdict(
                    &bundle.object,
                    bundle.window,
                    true,
                    bundle.matching.finish(),
                ),
            }
        }
        if run.headers_not_kept {
            self.note(format!(
                "Cache-Control of the retrieval objects not checked: {} keeps no headers",
                source.describe()
            ));
        }
        Ok(())
    }

    async fn check_day_object(
        &mut self,
        source: &dyn Source,
        keys: &DayKeys,
    ) -> Result<(), VerifyError> {
        let Some(run) = &self.retrieval else {
            return Ok(());
        };
        let (listed, today) = (run.listed, run.today);
        let day = keys.day;
        let day_number = i64::try_from(day).unwrap_or(i64::MAX);
        let object = retrieval_day_key(self.compat_path, day_number);
        let p = format!("{day:05}");
        let Some((file, cache_control)) = self
            .read_retrieval_file(source, &object, &p, Some(day))
            .await?
        else {
            return Ok(());
        };
        let expected = listed.day_window(day);
        let found = window_of(&file);
        let Some(window) =
            self.judge_window(&object, judge_day(day, found, expected), &file, expected)
        else {
            return Ok(());
        };
        // The newest hour it holds fixes whether it is final (DESIGN §4.3).
        let last_hour = i64::try_from(window.end / HOUR).unwrap_or(i64::MAX) - 1;
        let kind = ObjectKind::RetrievalDay {
            day: day_number,
            last_closed_hour: last_hour,
        };
        self.check_cache_control(&object, &cache_control, kind);
        let nothing_before = listed.nothing_before_oldest(today);
        match published(listed, nothing_before, keys, window, 0) {
            Ok(files) => {
                let mut matching = KeyMatch::new(file.keys);
                files
                    .iter()
                    .copied()
                    .flatten()
                    .for_each(|key| matching.expect(key));
                self.key_verdict(&object, window, false, matching.finish());
            }
            Err(why) => self.note(format!("{object}: keys not compared: {why}")),
        }
        Ok(())
    }

    /// Feeds `keys.day`'s keys that are relevant at the end of `00000` to its comparison.
    fn feed_bundle(&mut self, keys: &DayKeys) {
        let Some(run) = &mut self.retrieval else {
            return;
        };
        if !run
            .bundle_days()
            .is_some_and(|days| days.contains(&keys.day))
        {
            return;
        }
        let nothing_before = run.listed.nothing_before_oldest(run.today);
        let listed = run.listed;
        let Some(bundle) = &mut run.bundle else {
            return;
        };
        if bundle.not_compared.is_some() {
            return;
        }
        let end = bundle.window.end;
        let needed_from = first_start_holding_relevant(end);
        match published(listed, nothing_before, keys, bundle.window, needed_from) {
            Ok(files) => files
                .iter()
                .copied()
                .flatten()
                .filter(|key| relevant_at(key, end))
                .for_each(|key| bundle.matching.expect(key)),
            Err(why) => bundle.not_compared = Some(why),
        }
    }

    /// The window to compare keys over, after reporting one that is not the expected; `None`
    /// when it is no window of the object at all.
    fn judge_window(
        &mut self,
        object: &str,
        verdict: Verdict,
        file: &CheckedFile,
        expected: RetrievalWindow,
    ) -> Option<RetrievalWindow> {
        let found = window_of(file);
        match (verdict, found) {
            (Verdict::Expected, _) => Some(expected),
            (Verdict::OutOfStep, Some(found)) => {
                self.retrieval_finding(object, RetrievalProblem::OutOfStep { found, expected });
                Some(found)
            }
            (Verdict::NotItsWindow | Verdict::OutOfStep, _) => {
                let (start, end) = file.timestamps.unwrap_or_default();
                self.retrieval_finding(
                    object,
                    RetrievalProblem::NotItsWindow {
                        start,
                        end,
                        expected,
                    },
                );
                None
            }
        }
    }

    /// Reads `object` (day `p`; `day` is `None` for `00000`), checks it as an export file,
    /// compares it with the CDN and records it; returns it with its `Cache-Control` when its
    /// keys could be read.
    async fn read_retrieval_file(
        &mut self,
        source: &dyn Source,
        object: &str,
        p: &str,
        day: Option<u64>,
    ) -> Result<Option<(CheckedFile, CacheControl)>, VerifyError> {
        let served = match self.read_retrieval(source, object, p, day).await? {
            Reading::Object(served) => served,
            Reading::Missing => {
                self.retrieval_finding(object, RetrievalProblem::Missing);
                return Ok(None);
            }
            #[cfg(feature = "fetch")]
            Reading::Skipped => return Ok(None),
        };
        let mut file = check_export_file(
            object,
            None,
            self.region,
            self.public_keys,
            &served.bytes,
            &mut self.report.violations,
        );
        #[cfg(feature = "fetch")]
        self.compare_with_cdn(object, p, day, &file).await?;
        if let Some(signatures) = file.signatures.take() {
            self.record_signatures(object, signatures);
        }
        self.report.retrieval.push(RetrievalObject {
            object: object.to_owned(),
            window: window_of(&file),
            keys: file.key_count,
            digest: digest(&file),
        });
        Ok(file
            .key_count
            .is_some()
            .then_some((file, served.cache_control)))
    }

    /// The object from the location, or through the edge when the location is the CDN.
    async fn read_retrieval(
        &mut self,
        source: &dyn Source,
        object: &str,
        p: &str,
        day: Option<u64>,
    ) -> Result<Reading, VerifyError> {
        #[cfg(feature = "fetch")]
        if let Some(CdnCheck::ReadThrough(edge)) = self.cdn {
            return self.read_through(edge, object, p, day).await;
        }
        #[cfg(not(feature = "fetch"))]
        let _ = (p, day);
        Ok(match source.get_served(object).await? {
            Some(served) => Reading::Object(served),
            None => Reading::Missing,
        })
    }

    /// The object through the edge, the location being the CDN.
    #[cfg(feature = "fetch")]
    async fn read_through(
        &mut self,
        edge: &Edge,
        object: &str,
        p: &str,
        day: Option<u64>,
    ) -> Result<Reading, VerifyError> {
        if !self.edge_serves(edge, object, day) {
            return Ok(Reading::Skipped);
        }
        match edge.fetch(p).await? {
            HttpAnswer::Object(served) => {
                self.report.through_cdn += 1;
                Ok(Reading::Object(served))
            }
            HttpAnswer::Status(404 | 403) => Ok(Reading::Missing),
            HttpAnswer::Status(status) => {
                let request = edge.shown(p);
                self.retrieval_finding(object, RetrievalProblem::CdnStatus { request, status });
                Ok(Reading::Skipped)
            }
        }
    }

    /// With a CDN to compare with, fetches `p` through the edge as the apps do and holds it to
    /// the object's bytes.
    #[cfg(feature = "fetch")]
    async fn compare_with_cdn(
        &mut self,
        object: &str,
        p: &str,
        day: Option<u64>,
        file: &CheckedFile,
    ) -> Result<(), VerifyError> {
        let Some(CdnCheck::Compare(edge)) = self.cdn else {
            return Ok(());
        };
        if !self.edge_serves(edge, object, day) {
            return Ok(());
        }
        let request = edge.shown(p);
        let problem = match edge.fetch(p).await? {
            HttpAnswer::Object(served) => {
                self.report.through_cdn += 1;
                let served = ObjectDigest {
                    bytes: served.bytes.len() as u64,
                    sha256: hex::encode(Sha256::digest(&served.bytes)),
                };
                let stored = digest(file);
                if served == stored {
                    return Ok(());
                }
                RetrievalProblem::CdnDiffers {
                    request,
                    served,
                    stored,
                }
            }
            HttpAnswer::Status(status) => RetrievalProblem::CdnStatus { request, status },
        };
        self.retrieval_finding(object, problem);
        Ok(())
    }

    /// Whether the edge lets the apps' request for `day` through now; a note when not.
    #[cfg(feature = "fetch")]
    fn edge_serves(&mut self, edge: &Edge, object: &str, day: Option<u64>) -> bool {
        let Some(day) = day else {
            return true;
        };
        if edge.serves_day(day) {
            return true;
        }
        let served = edge.served_days();
        self.note(format!(
            "{object}: not fetched through the CDN: by its clock the edge serves days {} to {} \
             only",
            served.start(),
            served.end()
        ));
        false
    }

    fn check_cache_control(&mut self, object: &str, found: &CacheControl, kind: ObjectKind) {
        let expected = kind.cache_control();
        match found {
            CacheControl::NotKept => {
                if let Some(run) = &mut self.retrieval {
                    run.headers_not_kept = true;
                }
            }
            CacheControl::Kept(value) if value.as_deref() == Some(expected) => {}
            CacheControl::Kept(value) => self.retrieval_finding(
                object,
                RetrievalProblem::CacheControl {
                    found: value.clone(),
                    expected,
                },
            ),
        }
    }

    fn key_verdict(
        &mut self,
        object: &str,
        window: RetrievalWindow,
        relevant_at_end: bool,
        verdict: KeyVerdict,
    ) {
        let counted = |(count, first)| KeyCount {
            window,
            relevant_at_end,
            count,
            first,
        };
        if let Some(foreign) = verdict.foreign {
            self.retrieval_finding(object, RetrievalProblem::ForeignKeys(counted(foreign)));
        }
        if let Some(missing) = verdict.missing {
            self.retrieval_finding(object, RetrievalProblem::MissingKeys(counted(missing)));
        }
        if verdict.left_out > 0 {
            self.note(format!(
                "{object}: {} published key(s) left out at the platforms' ceiling of keys per \
                 file (the apps fetch one object)",
                verdict.left_out
            ));
        }
    }

    fn retrieval_finding(&mut self, object: &str, problem: RetrievalProblem) {
        self.violation(Finding::Retrieval {
            object: object.to_owned(),
            problem,
        });
    }
}

/// The published keys of `keys.day`'s part of `window`, one slice per file (DESIGN §4.3), or
/// why they cannot be known. Hours that start before `needed_from` need not be known: they
/// can hold no key the object wants.
fn published(
    listed: ListedHours,
    nothing_before_oldest: bool,
    keys: &DayKeys,
    window: RetrievalWindow,
    needed_from: u64,
) -> Result<Vec<&[ExportedKey]>, String> {
    let day_start = keys.day.saturating_mul(DAY);
    let day_end = day_start.saturating_add(DAY);
    let (from, to) = (window.start.max(day_start), window.end.min(day_end));
    let mut files = Vec::new();
    let mut hour = from;
    while hour < to {
        let needed = hour >= needed_from;
        if hour < listed.oldest && !nothing_before_oldest {
            // Cut from index.txt by its 14 days: the day's daily file stands for the day.
            match &keys.daily {
                Some(daily) if from == day_start && to == day_end => {
                    return Ok(vec![daily.as_slice()]);
                }
                _ if needed => {
                    return Err(format!(
                        "hour {hour} is no longer listed and the day's daily file is not listed \
                         or could not be read"
                    ));
                }
                _ => {}
            }
        } else if hour >= listed.oldest {
            match keys.hours.get(&hour) {
                Some(file) => files.push(file.as_slice()),
                None if !needed => {}
                None if keys.unreadable.contains(&hour) => {
                    return Err(format!("a file of hour {hour} could not be read"));
                }
                None if hour > listed.newest => {
                    return Err(format!("hour {hour} is after the newest listed hour"));
                }
                None => return Err(format!("hour {hour} is not listed")),
            }
        }
        hour = hour.saturating_add(HOUR);
    }
    Ok(files)
}

/// `export.bin`'s window, when both timestamps are there.
fn window_of(file: &CheckedFile) -> Option<RetrievalWindow> {
    match file.timestamps {
        Some((Some(start), Some(end))) => Some(RetrievalWindow { start, end }),
        _ => None,
    }
}

fn digest(file: &CheckedFile) -> ObjectDigest {
    ObjectDigest {
        bytes: file.bytes,
        sha256: file.sha256.clone(),
    }
}

/// Whether `key` is relevant at `at` (DESIGN §2: it expired less than 14 days before).
fn relevant_at(key: &ExportedKey, at: u64) -> bool {
    let expiry = key_expiry(key.rolling_start_interval_number, key.rolling_period);
    is_relevant(expiry, i64::try_from(at).unwrap_or(i64::MAX))
}

/// The start of the first hour that can hold a key relevant at `at`: a key is published no
/// earlier than two hours after the hour it expires in (DESIGN §2), and a relevant key expires
/// after `at − 14 days`.
fn first_start_holding_relevant(at: u64) -> u64 {
    let cutoff = relevance_cutoff(i64::try_from(at).unwrap_or(i64::MAX));
    let hour = earliest_publish_hour(cutoff.saturating_add(1));
    u64::try_from(hour.saturating_mul(SECONDS_PER_HOUR)).unwrap_or(0)
}
