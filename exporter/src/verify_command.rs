//! The `diagnosis-exporter verify <location>` command (DESIGN §6): picks where the bucket is
//! read from, which public keys to check against, the retrieval path and the CDN to fetch the
//! apps' objects through, runs [`diagnosis_verify`] and prints its report.
//!
//! [`diagnosis_verify`] reads folders and HTTP(S) servers itself and knows nothing of the
//! exporter's storage; object-store buckets (`s3://`, `gs://`, `az://`, `memory://`) are
//! read here, through the same [`Bucket`] the exporter publishes with, as a
//! [`BucketSource`], which also gives each object's stored Cache-Control. It never writes, and
//! never shows the apps' HMAC key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use diagnosis_core::config::{ProcessEnv, optional};
use diagnosis_core::domain::{DEFAULT_EXPORT_REGION, DEFAULT_REGION};
use diagnosis_core::time::SystemClock;
use futures::future::BoxFuture;

use crate::config::SigningConfig;
use crate::storage::Bucket;
use diagnosis_format::sign::PublicKey;
use diagnosis_verify::{
    CacheControl, CdnCheck, Edge, HttpSource, MAX_OBJECT_BYTES, Served, Source, VerifyError,
    VerifyOptions, scheme_of, verify_bucket,
};

/// The command line of `verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyArgs {
    /// Where the bucket is.
    pub location: String,
    /// Public key PEM files; none: the public halves of `SIGNING_KEY_FILE`.
    pub public_key_files: Vec<PathBuf>,
    /// The export region; none: `EXPORT_REGION`, else `CA`.
    pub region: Option<String>,
    /// The MCC of `retrieve/{MCC}/`; none: `COMPAT_REGION_PATH`, else `302`.
    pub compat_path: Option<String>,
    /// The CDN to fetch the retrieval objects through; none: `location` when it is an
    /// `http(s)://` URL and an HMAC key is given.
    pub cdn: Option<String>,
    /// A file holding the apps' hex `HMAC_KEY`, which turns the CDN check on.
    pub hmac_key_file: Option<PathBuf>,
}

/// Checks the bucket at `args.location` and prints the report. Fails when the bucket has any
/// violation.
pub async fn run_verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let public_keys = public_keys(&args.public_key_files)?;
    let region = match &args.region {
        Some(region) => region.clone(),
        None => optional(
            &ProcessEnv,
            "EXPORT_REGION",
            DEFAULT_EXPORT_REGION.to_owned(),
        )?,
    };
    let compat_path = match &args.compat_path {
        Some(path) => path.clone(),
        None => optional(&ProcessEnv, "COMPAT_REGION_PATH", DEFAULT_REGION.to_owned())?,
    };
    let source = source_for(&args.location)?;
    let cdn = cdn_check(args, &compat_path)?;
    let report = verify_bucket(
        source.as_ref(),
        &VerifyOptions {
            region,
            public_keys,
            compat_path,
            cdn,
        },
    )
    .await?;
    println!("{report}");
    if report.is_ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// The given PEM files, or the public halves of `SIGNING_KEY_FILE`.
fn public_keys(files: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    if files.is_empty() {
        let Some(signing) = SigningConfig::from_env(&ProcessEnv)? else {
            bail!("no public key: pass --public-key PEM or set SIGNING_KEY_FILE");
        };
        return Ok(signing.load()?.public_keys());
    }
    let mut keys = Vec::new();
    for path in files {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        keys.push(PublicKey::from_named_pem(
            &path.display().to_string(),
            &pem,
        )?);
    }
    Ok(keys)
}

/// The CDN check `--hmac-key-file` asks for (DESIGN §4.3): against `--cdn`, or against the
/// location itself when it is the CDN (an `http(s)://` URL, and no other `--cdn`), which then
/// serves the retrieval objects only at the edge function's path.
pub fn cdn_check(args: &VerifyArgs, compat_path: &str) -> anyhow::Result<Option<CdnCheck>> {
    let Some(key_file) = &args.hmac_key_file else {
        if args.cdn.is_some() {
            bail!(
                "--cdn needs --hmac-key-file: the CDN serves the apps' objects only to requests \
                 carrying their HMAC"
            );
        }
        return Ok(None);
    };
    let location_is_http = matches!(
        scheme_of(&args.location)
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("http" | "https")
    );
    let same = |url: &str| url.trim_end_matches('/') == args.location.trim_end_matches('/');
    let (url, read_through) = match &args.cdn {
        Some(url) => (url.as_str(), same(url)),
        None if location_is_http => (args.location.as_str(), true),
        None => bail!(
            "--hmac-key-file needs --cdn URL, or an http:// or https:// LOCATION that is the CDN"
        ),
    };
    let edge = Edge::new(
        HttpSource::new(url)?,
        compat_path,
        &read_key_file(key_file)?,
        Arc::new(SystemClock),
    )
    .with_context(|| key_file.display().to_string())?;
    Ok(Some(if read_through {
        CdnCheck::ReadThrough(edge)
    } else {
        CdnCheck::Compare(edge)
    }))
}

fn read_key_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The source for a `verify` location: a folder, `file://`, `http://` or `https://` as
/// [`diagnosis_verify::source_for`] reads them; `s3://`, `gs://`, `az://` and `memory://`
/// through [`Bucket::from_url`], with the standard credentials.
pub fn source_for(location: &str) -> Result<Box<dyn Source>, VerifyError> {
    let scheme = scheme_of(location).map(str::to_ascii_lowercase);
    match scheme.as_deref() {
        None | Some("file" | "http" | "https") => diagnosis_verify::source_for(location),
        Some("s3" | "gs" | "az" | "memory") => {
            let bucket =
                Bucket::from_url(location).map_err(|error| VerifyError::UnsupportedLocation {
                    location: location.to_owned(),
                    reason: error.to_string(),
                })?;
            Ok(Box::new(BucketSource::new(bucket)))
        }
        Some(_) => Err(VerifyError::UnsupportedLocation {
            location: location.to_owned(),
            reason: "verify reads a folder or a file://, http://, https://, s3://, gs:// or \
                     az:// location"
                .to_owned(),
        }),
    }
}

/// Any bucket the exporter can publish to (`s3://`, `gs://`, `az://`, `memory://`), read
/// through object_store with the standard credentials.
#[derive(Debug, Clone)]
pub struct BucketSource {
    bucket: Bucket,
}

impl BucketSource {
    /// Reads the objects of `bucket`.
    pub fn new(bucket: Bucket) -> BucketSource {
        BucketSource { bucket }
    }
}

impl Source for BucketSource {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, VerifyError>> {
        Box::pin(async move {
            let bytes = self
                .bucket
                .get(key)
                .await
                .map_err(|e| VerifyError::Storage {
                    key: key.to_owned(),
                    reason: e.to_string(),
                })?;
            match bytes {
                Some(bytes) if bytes.len() as u64 > MAX_OBJECT_BYTES => {
                    Err(VerifyError::TooLarge {
                        location: format!("{}/{key}", self.bucket.location()),
                        limit: MAX_OBJECT_BYTES,
                    })
                }
                bytes => Ok(bytes),
            }
        })
    }

    /// The object with the Cache-Control the store keeps for it (none on a `file://` bucket).
    fn get_served<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Served>, VerifyError>> {
        Box::pin(async move {
            let Some(bytes) = self.get(key).await? else {
                return Ok(None);
            };
            let attributes =
                self.bucket
                    .attributes(key)
                    .await
                    .map_err(|e| VerifyError::Storage {
                        key: key.to_owned(),
                        reason: e.to_string(),
                    })?;
            let cache_control = match attributes {
                Some((_, cache_control)) => CacheControl::Kept(cache_control),
                None => CacheControl::NotKept,
            };
            Ok(Some(Served {
                bytes,
                cache_control,
            }))
        })
    }

    fn describe(&self) -> String {
        self.bucket.location().to_owned()
    }
}
