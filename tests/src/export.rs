//! `ExportHarness`: the real export pipeline over a fresh Postgres database and
//! a real S3-compatible bucket (the moto server started by `infra/dev/test`),
//! with a manual clock. Keys are stored through the same store functions the
//! submit service uses.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use diagnosis_core::domain::{
    AppPublicKey, DiagnosisKey, KeyData, OneTimeCode, OriginatorLabel, Region, ReportType,
    ServerPublicKey,
};
use diagnosis_core::store::{
    BanPolicy, ClaimCodeKey, ClaimOutcome, ClaimWindow, ClientIdentifier, ClientIdentityKey,
    HashedCode, IssueOutcome, NewCode, Store, StoreKeysOutcome, SubmitInstance, SubmitLimits,
};
use diagnosis_core::time::ManualClock;
use diagnosis_exporter::config::ExportSettings;
use diagnosis_exporter::pipeline::{Exporter, RunOutcome, RunReport};
use diagnosis_exporter::storage::Bucket;
use diagnosis_exporter::verify_command::BucketSource;
use diagnosis_format::sign::{PublicKey, SigningKeys};
use diagnosis_verify::{VerifyOptions, VerifyReport, verify_bucket};

use crate::pg::TestDatabase;
use crate::s3::TestBucket;

/// The exporter's test signing key, committed under `exporter/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../exporter/fixtures")
        .join(name)
}

pub fn test_signing_keys() -> SigningKeys {
    let path = fixture("test-signing-key.pem");
    SigningKeys::from_env_values(&path.display().to_string(), Some("v1"), Some("302"))
        .unwrap_or_else(|e| panic!("test signing key: {e}"))
}

pub fn test_public_keys() -> Vec<PublicKey> {
    let pem = std::fs::read_to_string(fixture("test-signing-key.pub.pem"))
        .unwrap_or_else(|e| panic!("test public key: {e}"));
    vec![PublicKey::from_pem(&pem).unwrap_or_else(|e| panic!("test public key: {e}"))]
}

/// The exporter's settings as tests start them (the contract's defaults).
pub fn test_export_settings() -> ExportSettings {
    ExportSettings {
        key_region: Region::parse("302").unwrap_or_else(|| panic!("region")),
        export_region: Region::parse("CA").unwrap_or_else(|| panic!("region")),
        grace_seconds: 600,
        max_keys_per_file: 500_000,
        pad_min_keys: 0,
        exposure_config_dir: None,
        compat_region_path: "302".to_owned(),
        delete_unindexed_after: Duration::hours(24),
    }
}

/// A database, a bucket and a clock, and an exporter over them.
#[derive(Debug)]
pub struct ExportHarness {
    pub db: Arc<TestDatabase>,
    pub store: Store,
    pub clock: ManualClock,
    pub bucket: Bucket,
    pub test_bucket: TestBucket,
    pub settings: ExportSettings,
}

impl ExportHarness {
    pub async fn new(start: DateTime<Utc>) -> ExportHarness {
        Self::with_settings(start, |_| {}).await
    }

    pub async fn with_settings(
        start: DateTime<Utc>,
        adjust: impl FnOnce(&mut ExportSettings),
    ) -> ExportHarness {
        let db = Arc::new(TestDatabase::new().await);
        Self::sharing(db, ManualClock::new(start), adjust).await
    }

    /// An exporter over an existing database and clock (for example a `TestApp`'s).
    pub async fn sharing(
        db: Arc<TestDatabase>,
        clock: ManualClock,
        adjust: impl FnOnce(&mut ExportSettings),
    ) -> ExportHarness {
        // The test's clock is the database's too: the exporter's clock check and the hours
        // uploads are filed under read it.
        let store =
            Store::from_pool(db.pool().clone()).with_database_clock(Arc::new(clock.clone()));
        let test_bucket = TestBucket::new().await;
        let bucket = test_bucket.bucket();
        let mut settings = test_export_settings();
        adjust(&mut settings);
        ExportHarness {
            db,
            store,
            clock,
            bucket,
            test_bucket,
            settings,
        }
    }

    /// An exporter over this harness's store and clock, writing to `bucket`.
    pub async fn exporter_with(&self, bucket: Bucket) -> Exporter {
        self.exporter_on(self.store.clone(), bucket).await
    }

    /// An exporter over `store` (for example one with another database clock) and this
    /// harness's clock and bucket.
    pub async fn exporter_over(&self, store: Store) -> Exporter {
        self.exporter_on(store, self.bucket.clone()).await
    }

    async fn exporter_on(&self, store: Store, bucket: Bucket) -> Exporter {
        Exporter::new(
            store,
            bucket,
            Arc::new(self.clock.clone()),
            self.settings.clone(),
            test_signing_keys(),
        )
        .await
        .unwrap_or_else(|e| panic!("building the exporter: {e}"))
    }

    pub async fn exporter(&self) -> Exporter {
        self.exporter_with(self.bucket.clone()).await
    }

    /// One pass, which must complete.
    pub async fn run(&self) -> RunReport {
        match self.exporter().await.run_once().await {
            Ok(RunOutcome::Completed(report)) => report,
            Ok(RunOutcome::Skipped) => panic!("the export run was skipped"),
            Err(e) => panic!("the export run failed: {e}"),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub fn now(&self) -> DateTime<Utc> {
        use diagnosis_core::time::Clock;
        self.clock.now()
    }

    /// Stores `keys` as one upload of a freshly claimed keypair, at the clock's time.
    pub async fn upload(&self, keys: &[DiagnosisKey]) {
        let server = self.claimed_keypair().await;
        let outcome = self
            .store
            .store_diagnosis_keys(&server, keys, &test_region(), self.now(), 15)
            .await
            .unwrap_or_else(|e| panic!("store keys: {e}"));
        assert!(
            matches!(outcome, StoreKeysOutcome::Stored { .. }),
            "{outcome:?}"
        );
    }

    /// The server key of a freshly issued and claimed keypair (region `302`, quota 1000), at
    /// the clock's time.
    pub async fn claimed_keypair(&self) -> ServerPublicKey {
        let region = test_region();
        let label = OriginatorLabel::parse("ON").unwrap_or_else(|| panic!("label"));
        let now = self.now();
        let new = NewCode {
            region: &region,
            originator: &label,
            hash_id: None,
            initial_remaining_keys: 1000,
            claim_recovery: Duration::minutes(10),
        };
        let IssueOutcome::Issued { code, .. } = self
            .store
            .issue_one_time_code(&new, now, [OneTimeCode::generate()])
            .await
            .unwrap_or_else(|e| panic!("issue: {e}"))
        else {
            panic!("no code issued")
        };
        let mut app = [0_u8; 32];
        rand::fill(&mut app[..]);
        let key = ClientIdentityKey::from_secret(&[1; 32]).unwrap_or_else(|| panic!("test key"));
        let client = ClientIdentifier::new(&key, std::net::IpAddr::from([192, 0, 2, 1]));
        let code_key = ClaimCodeKey::from_secret(&[2; 32]).unwrap_or_else(|| panic!("test key"));
        let code = HashedCode::new(&code_key, code);
        let ClaimOutcome::Claimed(server) = self
            .store
            .claim_one_time_code(
                Some(&code),
                &AppPublicKey::from_array(app),
                &client,
                now,
                ClaimWindow {
                    code_expiry: Duration::hours(24),
                    keypair_validity_days: 15,
                },
                BanPolicy {
                    max_failures: 50,
                    ban_duration: Duration::hours(1),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("claim: {e}"))
        else {
            panic!("not claimed")
        };
        server
    }

    /// Records the limits of a submit replica in `submit_settings` at the clock's time, as a
    /// replica does when it starts: the contract's defaults as `adjust` changes them.
    pub async fn record_submit_settings(&self, adjust: impl FnOnce(&mut SubmitLimits)) {
        let mut limits = SubmitLimits {
            one_time_code_expiry: Duration::hours(24),
            encryption_key_validity_days: 15,
            claim_ban_duration: Duration::hours(1),
            statement_timeout: std::time::Duration::from_millis(5_000),
        };
        adjust(&mut limits);
        self.store
            .record_submit_settings(&SubmitInstance::new(self.now()), &limits)
            .await
            .unwrap_or_else(|e| panic!("recording submit settings: {e}"));
    }

    /// Verifies the published bucket with the test public key.
    pub async fn verify(&self) -> VerifyReport {
        let source = BucketSource::new(self.bucket.clone());
        verify_bucket(
            &source,
            &VerifyOptions {
                region: "CA".into(),
                public_keys: test_public_keys(),
                compat_path: self.settings.compat_region_path.clone(),
                cdn: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("verify: {e}"))
    }

    /// The lines of an index object.
    pub async fn index(&self, key: &str) -> Vec<String> {
        let bytes = self
            .bucket
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .unwrap_or_else(|| panic!("{key} does not exist"));
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The region the submit service stores keys under in the tests (`REGION`, `302`).
pub fn test_region() -> Region {
    Region::parse("302").unwrap_or_else(|| panic!("region"))
}

/// The object key of the first (and, with few keys, only) file of hour `hour` in the test
/// region's `CA/` folder, spelled out here rather than taken from the exporter (DESIGN §4).
pub fn hour_key(hour: i64) -> String {
    format!("CA/{}-{}-00001.zip", hour * 3600, (hour + 1) * 3600)
}

/// The object key of the retrieval bundle of day `day` (`retrieve/302/{day:05}`, DESIGN §4.3).
pub fn retrieval_day(day: i64) -> String {
    format!("retrieve/302/{day:05}")
}

/// A random key with the given metadata.
pub fn key(rolling_start_interval_number: i64, transmission_risk_level: i32) -> DiagnosisKey {
    let mut data = [0_u8; 16];
    rand::fill(&mut data[..]);
    DiagnosisKey {
        key_data: KeyData::from_array(data),
        rolling_start_interval_number: i32::try_from(rolling_start_interval_number)
            .unwrap_or(i32::MAX),
        rolling_period: 144,
        transmission_risk_level,
        report_type: ReportType::ConfirmedTest,
        days_since_onset: None,
    }
}
