//! The reader of published files that derived windows are merged from (DESIGN §4.2):
//! `diagnosis_format::reader`, the zip local header, the streamed inflate of `export.bin` and
//! the key decoder, fed the object in the reads of `read_range` as the exporter's merge feeds
//! it. The first byte picks a chunk size of 1 to 256 bytes; the rest is the object. No input may
//! panic, and the chunk size never changes the keys read.
//!
//! Not covered here, because it is I/O: the exporter's ranged reads of the bucket and their
//! checks against the file's ledger row (size, length of each read, SHA-256, the key count),
//! in `exporter/src/pipeline/derive.rs`, which its own tests attack.

use std::num::NonZeroU64;

use diagnosis_format::reader::{CHUNK_BYTES, read_keys};

pub fn derive_reader(data: &[u8]) {
    let Some((&chunk, object)) = data.split_first() else {
        return;
    };
    let small = NonZeroU64::MIN.saturating_add(u64::from(chunk));
    let production = NonZeroU64::new(CHUNK_BYTES).unwrap_or(NonZeroU64::MAX);
    match (read_keys(object, production), read_keys(object, small)) {
        (Ok(keys), Ok(keys_in_chunks)) => assert!(keys == keys_in_chunks),
        (Err(_), Err(_)) => {}
        (read, read_in_chunks) => panic!(
            "chunks of {small} bytes read {:?}, chunks of {production} bytes read {:?}",
            read_in_chunks.map(|keys| keys.len()),
            read.map(|keys| keys.len()),
        ),
    }
}
