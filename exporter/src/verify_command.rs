//! The `diagnosis-exporter verify <location>` command (DESIGN §6): picks where the bucket is
//! read from, which public keys to check against, runs [`diagnosis_verify`] and prints its
//! report.
//!
//! [`diagnosis_verify`] reads folders and HTTP(S) servers itself and knows nothing of the
//! exporter's storage; object-store buckets (`s3://`, `gs://`, `az://`, `memory://`) are
//! read here, through the same [`Bucket`] the exporter publishes with, as a
//! [`BucketSource`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use diagnosis_core::config::{ProcessEnv, optional};
use diagnosis_core::domain::DEFAULT_EXPORT_REGION;
use futures::future::BoxFuture;

use crate::config::SigningConfig;
use crate::storage::Bucket;
use diagnosis_format::sign::PublicKey;
use diagnosis_verify::{
    MAX_OBJECT_BYTES, Source, VerifyError, VerifyOptions, scheme_of, verify_bucket,
};

/// Checks the bucket at `location` and prints the report: with `public_key_files`, against
/// those PEM files; without, against the public halves of `SIGNING_KEY_FILE`. The region is
/// `region`, else `EXPORT_REGION`, else `CA`. Fails when the bucket has any violation.
pub async fn run_verify(
    location: &str,
    public_key_files: &[PathBuf],
    region: Option<String>,
) -> anyhow::Result<ExitCode> {
    let public_keys = if public_key_files.is_empty() {
        let Some(signing) = SigningConfig::from_env(&ProcessEnv)? else {
            bail!("no public key: pass --public-key PEM or set SIGNING_KEY_FILE");
        };
        signing.load()?.public_keys()
    } else {
        let mut keys = Vec::new();
        for path in public_key_files {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            keys.push(PublicKey::from_named_pem(
                &path.display().to_string(),
                &pem,
            )?);
        }
        keys
    };
    let region = match region {
        Some(region) => region,
        None => optional(
            &ProcessEnv,
            "EXPORT_REGION",
            DEFAULT_EXPORT_REGION.to_owned(),
        )?,
    };
    let source = source_for(location)?;
    let report = verify_bucket(
        source.as_ref(),
        &VerifyOptions {
            region,
            public_keys,
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

    fn describe(&self) -> String {
        self.bucket.location().to_owned()
    }
}
