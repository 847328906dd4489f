//! Where `verify` reads a published bucket from: the [`Source`] trait, and memory (tests and
//! the fuzz targets). A folder and an HTTP or HTTPS server are the sources of module `fetch`
//! (feature `fetch`). Object-store buckets are read by the command through its own
//! [`Source`], so this module knows nothing of the exporter's storage.
//!
//! A source only fetches bytes by object key; it never judges them. It must never write,
//! never read outside its root (a folder refuses every key that
//! [`diagnosis_format::names::check_object_key`] refuses), never follow redirects, and never hold an object larger than
//! [`MAX_OBJECT_BYTES`], so a hostile bucket cannot exhaust memory.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use futures::future::BoxFuture;

use diagnosis_domain::redacted::MARKER;

use crate::VerifyError;

/// Largest object a source hands out. The largest legitimate object is a zip of 750 000 keys,
/// about 14 MB (DESIGN §4.1); anything past this is refused rather than read.
pub const MAX_OBJECT_BYTES: u64 = 64 * 1024 * 1024;

/// Where published objects are read from.
///
/// `get` returns `Ok(None)` when the object does not exist, and an error only when the source
/// itself fails (I/O, an unexpected HTTP status, a timeout, an oversized object).
pub trait Source: Send + Sync {
    /// The object stored under `key` (relative to the bucket root), if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, VerifyError>>;

    /// The object with the `Cache-Control` it is served with, where the source keeps headers
    /// (an object store's metadata, an HTTP response). The default reads [`Source::get`] and
    /// keeps none, as a folder does.
    fn get_served<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Served>, VerifyError>> {
        Box::pin(async move {
            Ok(self.get(key).await?.map(|bytes| Served {
                bytes,
                cache_control: CacheControl::NotKept,
            }))
        })
    }

    /// Where the objects come from, for messages.
    fn describe(&self) -> String;
}

/// An object as it is served: its bytes and its `Cache-Control`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The object's bytes.
    pub bytes: Bytes,
    /// Its `Cache-Control`, as far as the source knows it.
    pub cache_control: CacheControl,
}

/// What a source knows of an object's `Cache-Control` (DESIGN §4, §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheControl {
    /// The source keeps no headers (a folder): whatever serves it sets them.
    NotKept,
    /// The header the object is stored or served with; `None` when it has none.
    Kept(Option<String>),
}

/// A bucket held in memory, for tests. An object inserted with [`MemorySource::insert`] keeps
/// no headers, as in a folder; one inserted with [`MemorySource::insert_served`] keeps its
/// `Cache-Control`, as in an object store.
#[derive(Clone, Default)]
pub struct MemorySource {
    objects: HashMap<String, Bytes>,
    cache_control: HashMap<String, String>,
}

impl MemorySource {
    /// An empty bucket.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `bytes` under `key` without headers, replacing any earlier object.
    pub fn insert(&mut self, key: impl Into<String>, bytes: impl Into<Bytes>) {
        let key = key.into();
        self.cache_control.remove(&key);
        self.objects.insert(key, bytes.into());
    }

    /// Stores `bytes` under `key` with its `Cache-Control`, replacing any earlier object.
    pub fn insert_served(
        &mut self,
        key: impl Into<String>,
        bytes: impl Into<Bytes>,
        cache_control: &str,
    ) {
        let key = key.into();
        self.cache_control
            .insert(key.clone(), cache_control.to_owned());
        self.objects.insert(key, bytes.into());
    }

    /// Deletes the object under `key`, returning it.
    pub fn remove(&mut self, key: &str) -> Option<Bytes> {
        self.cache_control.remove(key);
        self.objects.remove(key)
    }

    /// The object under `key`.
    pub fn object(&self, key: &str) -> Option<&Bytes> {
        self.objects.get(key)
    }

    /// The `Cache-Control` the object under `key` was stored with, if any.
    pub fn cache_control(&self, key: &str) -> Option<&str> {
        self.cache_control.get(key).map(String::as_str)
    }

    /// Every object key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.objects.keys().map(String::as_str)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the bucket holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

impl From<HashMap<String, Bytes>> for MemorySource {
    fn from(objects: HashMap<String, Bytes>) -> Self {
        Self {
            objects,
            cache_control: HashMap::new(),
        }
    }
}

impl fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Object keys only: the content may be large.
        let mut keys: Vec<&str> = self.keys().collect();
        keys.sort_unstable();
        f.debug_tuple("MemorySource").field(&keys).finish()
    }
}

impl Source for MemorySource {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, VerifyError>> {
        Box::pin(std::future::ready(Ok(self.objects.get(key).cloned())))
    }

    fn get_served<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Served>, VerifyError>> {
        let served = self.objects.get(key).map(|bytes| Served {
            bytes: bytes.clone(),
            cache_control: match self.cache_control.get(key) {
                Some(value) => CacheControl::Kept(Some(value.clone())),
                None => CacheControl::NotKept,
            },
        });
        Box::pin(std::future::ready(Ok(served)))
    }

    fn describe(&self) -> String {
        format!("memory ({} objects)", self.objects.len())
    }
}
/// A location as messages show it (DESIGN §7: no credentials in messages or logs): in a
/// `scheme://user:password@host/…` URL everything before the last `@` becomes `..`, since a
/// password holding `/`, `?`, `#` or `@` unescaped runs past where a URL parser ends the user
/// information; a query or fragment is cut to `?..`. When a `?` or `#` comes before the last
/// `@`, that `@` may as well sit in a query's token as end a password: only `scheme://..` is
/// shown. Anything else is shown as it is.
pub fn shown_location(location: &str) -> String {
    let Some(scheme) = scheme_of(location) else {
        return location.to_owned();
    };
    let rest = &location[scheme.len() + 3..];
    let cut = rest.find(['?', '#']);
    let (hidden, rest) = match rest.rfind('@') {
        Some(at) if cut.is_some_and(|cut| cut < at) => return format!("{scheme}://{MARKER}"),
        Some(at) => (format!("{MARKER}@"), &rest[at + 1..]),
        None => (String::new(), rest),
    };
    let tail = match rest.find(['?', '#']) {
        Some(cut) => format!("{}?{MARKER}", &rest[..cut]),
        None => rest.to_owned(),
    };
    format!("{scheme}://{hidden}{tail}")
}

/// The scheme of `scheme://rest` (RFC 3986 syntax); `None` for anything else (a path).
pub fn scheme_of(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    well_formed.then_some(scheme)
}
