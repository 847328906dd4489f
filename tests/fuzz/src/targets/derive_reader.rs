//! The reader of published files that derived windows are merged from
//! (`pipeline::read_published_keys`, DESIGN §4.2): the zip local header, the streamed inflate
//! of `export.bin` and the key decoder. The first byte picks a chunk size of 1 to 256 bytes;
//! the rest is the object. No input may panic, and the chunk size never changes the keys read.

use std::num::NonZeroU64;

use crate::{HOURLY_OBJECT, block_on};
use diagnosis_exporter::pipeline::{CHUNK_BYTES, read_published_keys};
use diagnosis_exporter::storage::Bucket;
use diagnosis_format::names::ObjectKind;

pub fn derive_reader(data: &[u8]) {
    let Some((&chunk, object)) = data.split_first() else {
        return;
    };
    let small = NonZeroU64::MIN.saturating_add(u64::from(chunk));
    let production = NonZeroU64::new(CHUNK_BYTES).unwrap_or(NonZeroU64::MAX);
    let bucket = Bucket::in_memory();
    block_on(async {
        if let Err(error) = bucket
            .put(
                HOURLY_OBJECT,
                object.to_vec().into(),
                ObjectKind::ExportFile,
            )
            .await
        {
            panic!("the in-memory bucket refused a put: {error}");
        }
        let size = object.len() as u64;
        let read = read_published_keys(&bucket, HOURLY_OBJECT, size, production).await;
        let read_in_chunks = read_published_keys(&bucket, HOURLY_OBJECT, size, small).await;
        match (read, read_in_chunks) {
            (Ok(keys), Ok(keys_in_chunks)) => assert!(keys == keys_in_chunks),
            (Err(_), Err(_)) => {}
            (read, read_in_chunks) => panic!(
                "chunks of {small} bytes read {:?}, chunks of {production} bytes read {:?}",
                read_in_chunks.map(|keys| keys.len()),
                read.map(|keys| keys.len()),
            ),
        }
    });
}
