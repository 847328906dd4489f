//! `diagnosis-exporter verify` (DESIGN §6): checks a published bucket the way a phone would,
//! and everything a phone relies on without checking (DESIGN §4, §4.1, §4.2).
//!
//! A crate of its own so that it cannot reach the pipeline that writes the bucket: it depends
//! on `diagnosis-format` for what the format *is* (object names, the one rule for safe object
//! keys, the signature labels, the limits, signature verification) and on nothing of the
//! exporter. What it reads, it reads independently of the writer, as a phone does: each zip is
//! unpacked by the `zip` crate ([`diagnosis_format::archive::unzip_export`], not the
//! exporter's hand-written deflate writer or its ranged reader of its own files), and
//! `export.bin` and `export.sig` are decoded whole by prost from the generated messages, not by
//! the streaming encoder and decoder the exporter writes and merges with
//! ([`diagnosis_proto::export_bin`]). A bug in the writer therefore shows up here as a finding
//! instead of being read back the way it was written.
//!
//! The checks, each violation a [`Finding`] naming the object:
//!
//! 1. `{region}/index.txt`, `{region}/daily/index.txt` and `{region}/index.json` exist and
//!    parse; each index lists names of its own kind, oldest first, none twice, and every listed
//!    object exists.
//! 2. Every listed file is a two-entry zip whose `export.bin` carries the header, the window,
//!    part and region of its name, batch 1 of 1, 1 to 10 signature infos with the platform
//!    algorithm, keys of 16 bytes in canonical order with `rolling_period` 144 omitted, and an
//!    `export.sig` with one matching signature per signature info. With public keys given,
//!    at least one of them verifies a signature over the whole `export.bin`, and every
//!    signature labelled as a given key labels its signatures elsewhere in the bucket
//!    verifies with that key; every given key signs at least one file. So during a key
//!    rotation the old and the new key together pass a bucket whose older files carry only
//!    the old signature, and the report counts the files each key signs.
//! 3. The manifest lists exactly the indexed files, with their true kind, window, part, key
//!    count, size and SHA-256.
//! 4. No `key_data` is published twice among the hourly files, nor among the daily files.
//! 5. Each daily file holds exactly the keys of its day's 24 hourly files.
//! 6. No hour (and no day) between the oldest and the newest listed is missing, and each
//!    window's parts run from `00001` without a gap.
//! 7. The deployed apps' objects (DESIGN §4.3, module `retrieval`): `retrieve/{MCC}/00000`
//!    and `retrieve/{MCC}/{DDDDD}` for every day the apps may ask for that the published
//!    hours reach, today's included, each a file as in check 2 whose window follows the newest
//!    listed hour, holding exactly the keys published in its window (`00000`: those still
//!    relevant at its end), with its kind's `Cache-Control` where the source keeps headers,
//!    and, with a CDN given, served through the edge function's path byte for byte.
//!
//! Files are read one at a time and days are processed in order, so memory holds one file,
//! the `key_data` seen so far (for check 4), the keys of one day (for checks 5 and 7), the
//! keys of `00000` (for check 7) and the label of each signature that not every given key
//! verifies (for check 2's labels, judged once the whole bucket has shown which label each
//! key signs under).
//!
//! This crate must never write to the bucket, never stop at the first violation, and never
//! panic on what it reads: a bucket is evidence to judge, and malformed bytes are a finding.
//! Only a failing source (I/O, HTTP) ends a run early, as an error.

#[cfg(feature = "fetch")]
mod edge;
mod export_file;
#[cfg(feature = "fetch")]
mod fetch;
mod finding;
mod manifest;
mod names;
mod retrieval;
mod source;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use diagnosis_domain::domain::{DEFAULT_EXPORT_REGION, DEFAULT_REGION, Region};
use diagnosis_format::names::{daily_index_key, hourly_index_key, manifest_key};
use diagnosis_format::sign::PublicKey;
use thiserror::Error;

#[cfg(feature = "fetch")]
pub use self::edge::{Edge, MIN_HMAC_KEY_BYTES, retrieve_hmac};
use self::export_file::{CheckedFile, CheckedSignature, ExportedKey, check_export_file};
#[cfg(feature = "fetch")]
pub use self::fetch::{DirectorySource, HttpSource, source_for};
pub use self::finding::{Finding, KeyProblem, ManifestField, NameError};
use self::manifest::Manifest;
pub use self::names::Kind;
use self::names::{DAY, HOUR, ObjectName, check_continuity, parse_index};
pub use self::retrieval::{
    CdnCheck, KeyCount, ObjectDigest, RetrievalObject, RetrievalProblem, RetrievalWindow,
};
use self::retrieval::{DayKeys, RetrievalRun};
pub use self::source::{
    CacheControl, MAX_OBJECT_BYTES, MemorySource, Served, Source, scheme_of, shown_location,
};

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
    /// An object key that a folder source refuses to turn into a path, or an HTTP source into
    /// a URL.
    #[error("{key:?} is not an object key a source can read: it {reason}")]
    UnsafeKey {
        /// The key.
        key: String,
        /// Which rule of `diagnosis_format::names::check_object_key` it breaks.
        reason: &'static str,
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
    /// The HTTPS server's certificate is not trusted: an unknown CA, another name, expired.
    #[error("GET {url}: {reason}")]
    UntrustedServer {
        /// The URL requested.
        url: String,
        /// What is wrong with the certificate, and where the trusted roots come from.
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
    /// The retrieval path's MCC is not three digits.
    #[error("{path:?} is not the three-digit MCC of the apps' retrieval path, such as 302")]
    InvalidCompatPath {
        /// The rejected value.
        path: String,
    },
    /// The apps' HMAC key is not one the edge function accepts; the key is never shown.
    #[error("the HMAC key {reason} (it must be the apps' HMAC_KEY: hex of at least 32 bytes)")]
    InvalidHmacKey {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// What to verify against.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The export region (`EXPORT_REGION`, default `CA`).
    pub region: String,
    /// Each file must be signed by at least one of these, and each must sign at least one
    /// file; with none, signatures are not checked.
    pub public_keys: Vec<PublicKey>,
    /// The MCC of the apps' retrieval path `retrieve/{MCC}/` (`COMPAT_REGION_PATH`, default
    /// `302`).
    pub compat_path: String,
    /// The CDN the apps fetch their retrieval objects through, if it is to be checked.
    pub cdn: Option<CdnCheck>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            region: DEFAULT_EXPORT_REGION.to_owned(),
            public_keys: Vec::new(),
            compat_path: DEFAULT_REGION.to_owned(),
            cdn: None,
        }
    }
}

/// How many of the files read one given public key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignerCount {
    /// The key.
    pub public_key: PublicKey,
    /// Files with a signature that verifies with it.
    pub files: u64,
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
    /// For each given public key, in the order given, how many files it signs (retrieval
    /// objects included).
    pub signers: Vec<SignerCount>,
    /// The retrieval objects read (DESIGN §4.3), `00000` first.
    pub retrieval: Vec<RetrievalObject>,
    /// How many retrieval objects were fetched through the CDN's edge path.
    pub through_cdn: usize,
    /// Every rule broken, each naming the object.
    pub violations: Vec<Finding>,
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
    /// A summary line, one line per given public key, then one line per violation and per
    /// note.
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
        if !self.retrieval.is_empty() {
            let keys: u64 = self.retrieval.iter().filter_map(|object| object.keys).sum();
            write!(
                f,
                "\n{} retrieval object(s) ({keys} keys)",
                self.retrieval.len()
            )?;
            if self.through_cdn > 0 {
                write!(f, ", {} fetched through the CDN", self.through_cdn)?;
            }
        }
        for (number, signer) in (1..).zip(&self.signers) {
            write!(
                f,
                "\npublic key {number} of {} ({:?}) signs {} file(s)",
                self.signers.len(),
                signer.public_key,
                signer.files
            )?;
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
    let compat_path = &options.compat_path;
    if compat_path.len() != 3 || !compat_path.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidCompatPath {
            path: compat_path.clone(),
        });
    }
    let mut run = Run::new(&region, options);
    let listing = run.read_listing(source).await?;
    let plan = DayPlan::new(&listing);
    if plan.days.is_empty() {
        run.note(format!(
            "{} and {} list no files",
            listing.hourly_index, listing.daily_index
        ));
    }
    run.start_retrieval(source, &listing).await?;
    for (&day, files) in &plan.days {
        run.check_day(source, &listing, &plan, day, files).await?;
    }
    run.finish_retrieval(source).await?;
    run.judge_signers(&listing.hourly_index);
    Ok(run.report)
}

/// The three index objects, read and checked on names alone (checks 1, 3 and 6).
struct Listing {
    hourly_index: String,
    daily_index: String,
    /// The hourly files, oldest first.
    hourly: Vec<ObjectName>,
    /// The daily files, oldest first.
    daily: Vec<ObjectName>,
    manifest: Option<Manifest>,
}

impl Listing {
    fn index_of(&self, kind: Kind) -> &str {
        match kind {
            Kind::Hourly => &self.hourly_index,
            Kind::Daily => &self.daily_index,
        }
    }
}

/// The listed files by UTC day, and which hours are listed (check 5 compares only complete
/// days).
struct DayPlan {
    days: BTreeMap<u64, DayFiles>,
    listed_hours: HashSet<u64>,
    oldest_hour: Option<u64>,
    newest_hour: Option<u64>,
}

/// The listed files of one UTC day.
#[derive(Debug, Default)]
struct DayFiles {
    hourly: Vec<ObjectName>,
    daily: Vec<ObjectName>,
}

impl DayPlan {
    fn new(listing: &Listing) -> Self {
        let mut days: BTreeMap<u64, DayFiles> = BTreeMap::new();
        for name in &listing.hourly {
            days.entry(day_of(name.start))
                .or_default()
                .hourly
                .push(name.clone());
        }
        for name in &listing.daily {
            days.entry(name.start).or_default().daily.push(name.clone());
        }
        Self {
            days,
            listed_hours: listing.hourly.iter().map(|name| name.start).collect(),
            oldest_hour: listing.hourly.first().map(|name| name.start),
            newest_hour: listing.hourly.last().map(|name| name.start),
        }
    }

    /// Starts of the hours of `day` that the hourly index does not list.
    fn missing_hours(&self, day: u64) -> Vec<u64> {
        (0..24)
            .map(|hour| day.saturating_add(hour * HOUR))
            .filter(|start| !self.listed_hours.contains(start))
            .collect()
    }

    /// Why the daily file `label` of `day`, some of whose hours are not listed, is not
    /// compared: a note, not a violation, because the 14-day window cuts the oldest day and
    /// the two indexes are not written at the same instant.
    fn not_compared(&self, label: &str, day: u64, hourly_index: &str) -> String {
        let missing = self.missing_hours(day);
        let published_late = match (missing.last(), self.newest_hour) {
            (Some(&last_missing), Some(newest)) => last_missing > newest,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let cut_by_the_window = match (missing.last(), self.oldest_hour) {
            (Some(&last_missing), Some(oldest)) => last_missing < oldest,
            _ => false,
        };
        let count = missing.len();
        if published_late {
            format!(
                "{label}: not compared with hourly files: {count} of the day's hours are not in \
                 {hourly_index} yet"
            )
        } else if cut_by_the_window {
            format!(
                "{label}: not compared with hourly files: the day's first {count} hour(s) are no \
                 longer in {hourly_index}"
            )
        } else {
            format!(
                "{label}: not compared with hourly files: {count} of the day's hours are missing \
                 from {hourly_index}"
            )
        }
    }
}

/// UTC midnight on or before `unix`.
fn day_of(unix: u64) -> u64 {
    unix - unix % DAY
}

/// A signature that not every given public key verifies, kept until the whole bucket has
/// shown which label each key signs under.
struct UnverifiedSignature {
    object: String,
    index: usize,
    signature: CheckedSignature,
}

/// The state of one verification run.
struct Run<'a> {
    region: &'a Region,
    public_keys: &'a [PublicKey],
    /// Check 7: the MCC of `retrieve/{MCC}/`.
    compat_path: &'a str,
    /// Check 7: the CDN to fetch retrieval objects through.
    #[cfg(feature = "fetch")]
    cdn: Option<&'a CdnCheck>,
    /// Check 7, once the listing is read.
    retrieval: Option<RetrievalRun>,
    report: VerifyReport,
    /// Check 4: each hourly `key_data` seen, with the file (index into `files_read`) it was in.
    hourly_seen: HashMap<[u8; 16], u32>,
    /// Check 4, for the daily files.
    daily_seen: HashMap<[u8; 16], u32>,
    /// Object keys of the files read so far, to name where a duplicate was first seen.
    files_read: Vec<String>,
    /// Check 2: for each signature label (version, ID), the given keys that verify a
    /// signature carrying it somewhere in the bucket.
    labels: HashMap<(Option<String>, Option<String>), BTreeSet<usize>>,
    /// Check 2: signatures some given key does not verify.
    unverified: Vec<UnverifiedSignature>,
    /// Files whose signatures could be read.
    files_with_signatures: u64,
}

impl<'a> Run<'a> {
    fn new(region: &'a Region, options: &'a VerifyOptions) -> Self {
        let public_keys = options.public_keys.as_slice();
        let mut report = VerifyReport {
            signers: public_keys
                .iter()
                .map(|&public_key| SignerCount {
                    public_key,
                    files: 0,
                })
                .collect(),
            ..VerifyReport::default()
        };
        if public_keys.is_empty() {
            report
                .notes
                .push("no public key given: signatures were not verified".to_owned());
        }
        Self {
            region,
            public_keys,
            compat_path: &options.compat_path,
            #[cfg(feature = "fetch")]
            cdn: options.cdn.as_ref(),
            retrieval: None,
            report,
            hourly_seen: HashMap::new(),
            daily_seen: HashMap::new(),
            files_read: Vec::new(),
            labels: HashMap::new(),
            unverified: Vec::new(),
            files_with_signatures: 0,
        }
    }

    fn violation(&mut self, finding: Finding) {
        self.report.violations.push(finding);
    }

    fn note(&mut self, note: String) {
        self.report.notes.push(note);
    }

    /// Check 1 for the three index objects, check 3's listing and check 6.
    async fn read_listing(&mut self, source: &dyn Source) -> Result<Listing, VerifyError> {
        let region = self.region;
        let hourly_index = hourly_index_key(region.as_str());
        let daily_index = daily_index_key(region.as_str());
        let manifest_key = manifest_key(region.as_str());
        let mut hourly = self.read_index(source, &hourly_index, Kind::Hourly).await?;
        let mut daily = self.read_index(source, &daily_index, Kind::Daily).await?;
        let manifest = match source.get(&manifest_key).await? {
            None => {
                self.violation(Finding::Missing {
                    object: manifest_key,
                });
                None
            }
            Some(bytes) => Manifest::parse(
                &manifest_key,
                region.as_str(),
                &bytes,
                &mut self.report.violations,
            ),
        };
        self.report.hourly_files = hourly.len();
        self.report.daily_files = daily.len();
        if let Some(manifest) = &manifest {
            let listed: Vec<(&str, &ObjectName)> = hourly
                .iter()
                .map(|name| (hourly_index.as_str(), name))
                .chain(daily.iter().map(|name| (daily_index.as_str(), name)))
                .collect();
            manifest.check_listing(&listed, &mut self.report.violations);
        }
        let findings = &mut self.report.violations;
        check_continuity(&hourly_index, Kind::Hourly, &hourly, findings);
        check_continuity(&daily_index, Kind::Daily, &daily, findings);
        hourly.sort_by_key(ObjectName::order);
        daily.sort_by_key(ObjectName::order);
        Ok(Listing {
            hourly_index,
            daily_index,
            hourly,
            daily,
            manifest,
        })
    }

    async fn read_index(
        &mut self,
        source: &dyn Source,
        index_key: &str,
        kind: Kind,
    ) -> Result<Vec<ObjectName>, VerifyError> {
        Ok(match source.get(index_key).await? {
            None => {
                self.violation(Finding::Missing {
                    object: index_key.to_owned(),
                });
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

    /// Checks 2 to 4 for every file of one UTC day, check 7 for the day's retrieval object and
    /// its share of `00000`, then check 5 when the day is complete.
    async fn check_day(
        &mut self,
        source: &dyn Source,
        listing: &Listing,
        plan: &DayPlan,
        day: u64,
        files: &DayFiles,
    ) -> Result<(), VerifyError> {
        let hours_listed = 24 - plan.missing_hours(day).len();
        // Only a day with all 24 hours listed and a daily file is compared (check 5).
        let compare = hours_listed == 24 && !files.daily.is_empty();
        let collect = compare || self.retrieval_wants(day / DAY);
        let hourly = self
            .check_files(source, listing, &files.hourly, collect)
            .await?;
        let daily = self
            .check_files(source, listing, &files.daily, collect)
            .await?;
        let keys = DayKeys::new(day / DAY, &files.hourly, hourly, daily);
        self.retrieval_day(source, &keys).await?;
        let Some(first_daily) = files.daily.first() else {
            if hours_listed == 24 {
                self.note(format!(
                    "all 24 hourly files of the day starting {day} are listed, but no daily \
                     file is (yet)"
                ));
            }
            return Ok(());
        };
        let label = if files.daily.len() == 1 {
            first_daily.key.clone()
        } else {
            format!("{} (and its other parts)", first_daily.key)
        };
        match (keys.unreadable.is_empty(), keys.daily) {
            // Check 5.
            (true, Some(daily)) if compare => {
                let hourly = keys.hours.into_values().flatten().collect();
                if let Some(finding) =
                    compare_day(first_daily, files.daily.len() > 1, hourly, daily)
                {
                    self.violation(finding);
                }
            }
            // Comparing with a file missing would blame the daily file for a broken hourly
            // one, or the reverse; the broken file is already reported.
            _ if hours_listed == 24 => self.note(format!(
                "{label}: not compared with hourly files: some of the day's files could not be \
                 read"
            )),
            _ => {
                let note = plan.not_compared(&label, day, &listing.hourly_index);
                self.note(note);
            }
        }
        Ok(())
    }

    /// Checks `names` one by one; with `collect`, returns each one's keys (`None` for a file
    /// that does not exist or whose keys cannot be read), else nothing.
    async fn check_files(
        &mut self,
        source: &dyn Source,
        listing: &Listing,
        names: &[ObjectName],
        collect: bool,
    ) -> Result<Vec<Option<Vec<ExportedKey>>>, VerifyError> {
        let mut keys = Vec::new();
        for name in names {
            let file_keys = self.check_file(source, listing, name).await?;
            if collect {
                keys.push(file_keys);
            }
        }
        Ok(keys)
    }

    /// Checks 1 (existence), 2, 3 (content) and 4 for one listed file; returns its keys, or
    /// `None` when the object does not exist or its keys cannot be read.
    async fn check_file(
        &mut self,
        source: &dyn Source,
        listing: &Listing,
        name: &ObjectName,
    ) -> Result<Option<Vec<ExportedKey>>, VerifyError> {
        let Some(zip) = source.get(&name.key).await? else {
            self.violation(Finding::ListedButMissing {
                object: name.key.clone(),
                index: listing.index_of(name.kind).to_owned(),
            });
            return Ok(None);
        };
        let mut file = check_export_file(
            &name.key,
            Some(name),
            self.region,
            self.public_keys,
            &zip,
            &mut self.report.violations,
        );
        drop(zip);
        if let Some(manifest) = &listing.manifest {
            manifest.check_file(name, &file, &mut self.report.violations);
        }
        self.report.bytes = self.report.bytes.saturating_add(file.bytes);
        let key_count = file.key_count.unwrap_or_default();
        match name.kind {
            Kind::Hourly => {
                self.report.keys_hourly = self.report.keys_hourly.saturating_add(key_count);
            }
            Kind::Daily => {
                self.report.keys_daily = self.report.keys_daily.saturating_add(key_count);
            }
        }
        if let Some(signatures) = file.signatures.take() {
            self.record_signatures(&name.key, signatures);
        }
        self.record_key_data(name, &file);
        self.files_read.push(name.key.clone());
        Ok(file.key_count.map(|_| file.keys))
    }

    /// Check 2 for one file's signatures: at least one given key signs it. Which label each
    /// key signs under is learnt here and judged in [`Run::judge_signers`].
    fn record_signatures(&mut self, object: &str, signatures: Vec<CheckedSignature>) {
        if self.public_keys.is_empty() {
            return;
        }
        self.files_with_signatures += 1;
        let signers: BTreeSet<usize> = signatures
            .iter()
            .flat_map(|signature| signature.verified_by.iter().copied())
            .collect();
        if signers.is_empty() {
            self.violation(Finding::NotSignedByGivenKey {
                object: object.to_owned(),
                given: self.public_keys.len(),
            });
        }
        for &number in &signers {
            if let Some(count) = self.report.signers.get_mut(number) {
                count.files += 1;
            }
        }
        for (index, signature) in signatures.into_iter().enumerate() {
            let label = (signature.key_version.clone(), signature.key_id.clone());
            self.labels
                .entry(label)
                .or_default()
                .extend(signature.verified_by.iter().copied());
            if signature.verified_by.len() < self.public_keys.len() {
                self.unverified.push(UnverifiedSignature {
                    object: object.to_owned(),
                    index,
                    signature,
                });
            }
        }
    }

    /// Check 2, once the whole bucket is read: every signature whose label a given key signs
    /// under verifies with that key (a phone holding the key for the label checks exactly
    /// that signature), and every given key signs some file.
    fn judge_signers(&mut self, hourly_index: &str) {
        for unverified in std::mem::take(&mut self.unverified) {
            let signature = &unverified.signature;
            let label = (signature.key_version.clone(), signature.key_id.clone());
            let Some(claimed) = self.labels.get(&label) else {
                continue;
            };
            for &number in claimed {
                if signature.verified_by.contains(&number) {
                    continue;
                }
                if let Some(&public_key) = self.public_keys.get(number) {
                    self.report
                        .violations
                        .push(Finding::SignatureDoesNotVerify {
                            object: unverified.object.clone(),
                            index: unverified.index,
                            key_version: signature.key_version.clone(),
                            key_id: signature.key_id.clone(),
                            key_number: number + 1,
                            public_key,
                        });
                }
            }
        }
        if self.files_with_signatures == 0 {
            return;
        }
        for (number, signer) in (1..).zip(&self.report.signers) {
            if signer.files == 0 {
                self.report.violations.push(Finding::KeySignsNothing {
                    object: hourly_index.to_owned(),
                    key_number: number,
                    public_key: signer.public_key,
                    files: self.files_with_signatures,
                });
            }
        }
    }

    /// Check 4: no `key_data` twice among the files of one series.
    fn record_key_data(&mut self, name: &ObjectName, file: &CheckedFile) {
        let seen = match name.kind {
            Kind::Hourly => &mut self.hourly_seen,
            Kind::Daily => &mut self.daily_seen,
        };
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
        if let Some((first, key_data, earlier)) = first_repeat {
            let first_seen_in = (earlier != file_number).then(|| {
                usize::try_from(earlier)
                    .ok()
                    .and_then(|earlier| self.files_read.get(earlier))
                    .map_or_else(|| "an earlier file".to_owned(), Clone::clone)
            });
            self.violation(Finding::KeyDataRepeated {
                object: name.key.clone(),
                kind: name.kind,
                count: repeats,
                first,
                key_data,
                first_seen_in,
            });
        }
    }
}

/// Check 5: the daily file's keys, all fields, are exactly the union of its day's hourly
/// files (DESIGN §4: "exactly the union of its 24 hourly files").
fn compare_day(
    daily: &ObjectName,
    parts: bool,
    mut hourly_keys: Vec<ExportedKey>,
    mut daily_keys: Vec<ExportedKey>,
) -> Option<Finding> {
    hourly_keys.sort_unstable();
    daily_keys.sort_unstable();
    if hourly_keys == daily_keys {
        return None;
    }
    // A merge walk over the two sorted multisets.
    let (mut missing, mut extra) = (0_usize, 0_usize);
    let (mut first_missing, mut first_extra) = (None, None);
    let (mut h, mut d) = (hourly_keys.iter().peekable(), daily_keys.iter().peekable());
    loop {
        match (h.peek(), d.peek()) {
            (None, None) => break,
            (Some(a), Some(b)) if a == b => {
                h.next();
                d.next();
            }
            (Some(a), Some(b)) if a < b => {
                missing += 1;
                first_missing.get_or_insert(a.key_data);
                h.next();
            }
            (Some(a), None) => {
                missing += 1;
                first_missing.get_or_insert(a.key_data);
                h.next();
            }
            (_, Some(b)) => {
                extra += 1;
                first_extra.get_or_insert(b.key_data);
                d.next();
            }
        }
    }
    Some(Finding::DayNotUnion {
        object: daily.key.clone(),
        parts,
        missing,
        first_missing,
        extra,
        first_extra,
    })
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
        let daily = names::parse_object_name(
            &Region::parse("CA").unwrap(),
            "CA/daily/1764201600-1764288000-00001.zip",
        )
        .unwrap();
        assert_eq!(
            compare_day(
                &daily,
                false,
                vec![key(1, 1), key(2, 1), key(3, 1)],
                vec![key(3, 1), key(2, 1), key(1, 1)],
            ),
            None
        );

        let finding = compare_day(
            &daily,
            true,
            vec![key(1, 1), key(2, 1), key(3, 1)],
            vec![key(1, 1), key(2, 2), key(4, 1), key(4, 1)],
        )
        .unwrap();
        assert_eq!(
            finding,
            Finding::DayNotUnion {
                object: daily.key.clone(),
                parts: true,
                missing: 2,
                first_missing: Some([2; 16]),
                extra: 3,
                first_extra: Some([4; 16]),
            }
        );
        assert_eq!(
            finding.to_string(),
            format!(
                "{} (and its other parts): is not exactly the union of its day's 24 hourly \
                 files: 2 key(s) of the day's hourly files are missing (first: key_data {}); 3 \
                 key(s) are not in the day's hourly files, or differ from them in a field \
                 (first: key_data {})",
                daily.key,
                hex::encode([2_u8; 16]),
                hex::encode([4_u8; 16])
            )
        );
    }

    #[test]
    fn report_summary() {
        let public_key = diagnosis_format::sign::SigningKey::from_pem(include_str!(
            "../../fixtures/test-signing-key.pem"
        ))
        .unwrap()
        .public_key();
        let mut report = VerifyReport {
            hourly_files: 30,
            daily_files: 1,
            keys_hourly: 80,
            keys_daily: 70,
            bytes: 15_000,
            signers: vec![SignerCount {
                public_key,
                files: 31,
            }],
            violations: Vec::new(),
            notes: vec!["n".to_owned()],
            ..VerifyReport::default()
        };
        assert!(report.is_ok());
        assert_eq!(
            report.to_string(),
            format!(
                "30 hourly files (80 keys), 1 daily files (70 keys), 15000 bytes, 100.0 bytes \
                 per key: OK\npublic key 1 of 1 ({public_key:?}) signs 31 file(s)\nnote: n"
            )
        );
        report.violations.push(Finding::Missing {
            object: "CA/index.txt".to_owned(),
        });
        report.signers.clear();
        report.keys_hourly = 0;
        report.keys_daily = 0;
        assert!(!report.is_ok());
        assert_eq!(
            report.to_string(),
            "30 hourly files (0 keys), 1 daily files (0 keys), 15000 bytes: 1 violation(s)\n\
             violation: CA/index.txt: does not exist\nnote: n"
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
            report.violations.iter().any(|finding| matches!(
                finding,
                Finding::WindowsMissing { object, kind: Kind::Hourly, .. } if object == "CA/index.txt"
            )),
            "{report}"
        );
        assert_eq!(
            report
                .violations
                .iter()
                .filter(|finding| matches!(finding, Finding::ListedButMissing { .. }))
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
        let missing = |object: &str| Finding::Missing {
            object: object.to_owned(),
        };
        assert_eq!(
            report.violations,
            [
                missing("CA/index.txt"),
                missing("CA/daily/index.txt"),
                missing("CA/index.json"),
            ]
        );
        assert_eq!(
            report.violations[0].to_string(),
            "CA/index.txt: does not exist"
        );
    }
}
