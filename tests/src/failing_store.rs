//! An object store with faults, for the exporter's error paths: it refuses writes
//! after a number of them succeeded, refuses every delete, or is slow to write.
//! Whatever fails, the indexes must only ever name objects that exist, and no
//! failure after publication may keep new hours from being indexed (DESIGN §4.2).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Delegates to `inner`, but every write after the first `allowed_writes` fails,
/// deletes fail when `refuse_deletes`, and each write first waits `write_delay`.
pub struct FailingStore {
    inner: Arc<dyn ObjectStore>,
    allowed_writes: usize,
    writes: AtomicUsize,
    refuse_deletes: bool,
    write_delay: Duration,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, allowed_writes: usize) -> FailingStore {
        FailingStore {
            inner,
            allowed_writes,
            writes: AtomicUsize::new(0),
            refuse_deletes: false,
            write_delay: Duration::ZERO,
        }
    }

    /// Every write succeeds; every delete fails (a permanent `403` on `DeleteObject`).
    pub fn refusing_deletes(inner: Arc<dyn ObjectStore>) -> FailingStore {
        FailingStore {
            refuse_deletes: true,
            ..FailingStore::new(inner, usize::MAX)
        }
    }

    /// Every write succeeds after waiting `delay`.
    pub fn slow(inner: Arc<dyn ObjectStore>, delay: Duration) -> FailingStore {
        FailingStore {
            write_delay: delay,
            ..FailingStore::new(inner, usize::MAX)
        }
    }

    /// How many writes were started so far.
    pub fn writes_started(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    async fn refuse(&self) -> Result<()> {
        let write = self.writes.fetch_add(1, Ordering::SeqCst);
        if !self.write_delay.is_zero() {
            tokio::time::sleep(self.write_delay).await;
        }
        if write >= self.allowed_writes {
            return Err(object_store::Error::Generic {
                store: "failing",
                source: "the store refused the write".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for FailingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FailingStore(after {} writes, refusing deletes: {}, delay {:?})",
            self.allowed_writes, self.refuse_deletes, self.write_delay
        )
    }
}

impl fmt::Display for FailingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FailingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.refuse().await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.refuse().await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        if self.refuse_deletes {
            return locations
                .map(|_| {
                    Err(object_store::Error::Generic {
                        store: "failing",
                        source: "the store refused the delete".into(),
                    })
                })
                .boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.refuse().await?;
        self.inner.copy_opts(from, to, options).await
    }
}
