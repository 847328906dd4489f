//! `verify` on the indexes read back from a bucket (DESIGN §4): `index.txt`, `daily/index.txt`
//! and the `index.json` manifest, separated by NUL bytes (`split_index_objects`). The files
//! they list do not exist, which `verify` reports. No input may panic.

use crate::{block_on, split_index_objects};
use diagnosis_verify::{MemorySource, VerifyOptions, verify_bucket};

pub fn verify_indexes(data: &[u8]) {
    let mut source = MemorySource::new();
    let keys = ["CA/index.txt", "CA/daily/index.txt", "CA/index.json"];
    for (key, object) in keys.into_iter().zip(split_index_objects(data)) {
        if let Some(object) = object {
            source.insert(key, object.to_vec());
        }
    }
    if let Err(error) = block_on(verify_bucket(&source, &VerifyOptions::default())) {
        panic!("a memory source cannot fail: {error}");
    }
}
