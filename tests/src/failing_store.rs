//! An object store that refuses writes after a number of them succeeded, for
//! the exporter's error path: whatever fails, the indexes must only ever name
//! objects that exist (DESIGN §4.2).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Delegates to `inner`, but every write after the first `allowed_writes` fails.
pub struct FailingStore {
    inner: Arc<dyn ObjectStore>,
    allowed_writes: usize,
    writes: AtomicUsize,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, allowed_writes: usize) -> FailingStore {
        FailingStore {
            inner,
            allowed_writes,
            writes: AtomicUsize::new(0),
        }
    }

    fn refuse(&self) -> Result<()> {
        if self.writes.fetch_add(1, Ordering::SeqCst) >= self.allowed_writes {
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
        write!(f, "FailingStore(after {} writes)", self.allowed_writes)
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
        self.refuse()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.refuse()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.refuse()?;
        self.inner.copy_opts(from, to, options).await
    }
}
