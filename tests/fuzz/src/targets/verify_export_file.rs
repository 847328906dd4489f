//! `verify` on one published export file (DESIGN §4.1, §4.2, §4.3): the object is listed both as
//! the hourly file and as the daily part of the committed fixtures, and stored as the deployed
//! apps' retrieval objects of that day and `00000`, and checked with the fixtures' public key,
//! so archive, header, `TemporaryExposureKeyExport`, `export.sig`, DER signature and key checks
//! all run, and the retrieval objects' window and key comparison on whatever the bytes say. No
//! input may panic; a bucket is evidence, and bad bytes are violations.

use crate::{DAILY_OBJECT, HOURLY_OBJECT, block_on, fixture_public_key};
use diagnosis_verify::{MemorySource, VerifyOptions, verify_bucket};

/// The apps' object of the day `HOURLY_OBJECT` is in (day 20418).
const RETRIEVAL_DAY: &str = "retrieve/302/20418";

pub fn verify_export_file(zip: &[u8]) {
    let mut source = MemorySource::new();
    source.insert("CA/index.txt", format!("{HOURLY_OBJECT}\n"));
    source.insert("CA/daily/index.txt", format!("{DAILY_OBJECT}\n"));
    source.insert(HOURLY_OBJECT, zip.to_vec());
    source.insert(DAILY_OBJECT, zip.to_vec());
    source.insert(RETRIEVAL_DAY, zip.to_vec());
    source.insert("retrieve/302/00000", zip.to_vec());
    let options = VerifyOptions {
        region: "CA".to_owned(),
        public_keys: vec![*fixture_public_key()],
        ..VerifyOptions::default()
    };
    match block_on(verify_bucket(&source, &options)) {
        // Without a manifest there is always at least that violation.
        Ok(report) => assert!(!report.is_ok()),
        Err(error) => panic!("a memory source cannot fail: {error}"),
    }
}
