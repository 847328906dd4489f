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
use crate::storage::{Bucket, StorageError};
use diagnosis_format::sign::PublicKey;
use diagnosis_verify::{
    CacheControl, CdnCheck, Edge, Finding, HttpSource, MAX_OBJECT_BYTES, RetrievalProblem, Served,
    Source, VerifyError, VerifyOptions, VerifyReport, scheme_of, shown_location, verify_bucket,
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
    if let Some(hint) = hint(args, &report) {
        println!("{hint}");
    }
    if report.is_ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// What to try when retrieval objects were looked for by their keys on an HTTP server and
/// not found: a CDN with the edge function serves them only at its path (DESIGN §4.3).
fn hint(args: &VerifyArgs, report: &VerifyReport) -> Option<&'static str> {
    let missing = report.violations.iter().any(|finding| {
        matches!(
            finding,
            Finding::Retrieval {
                problem: RetrievalProblem::Missing,
                ..
            }
        )
    });
    (missing && args.hmac_key_file.is_none() && is_http(&args.location)).then_some(
        "hint: a CDN serves the deployed apps' retrieve/{MCC}/… objects only at \
         /retrieve/{MCC}/{P}/{hmac}; give --hmac-key-file with the apps' HMAC_KEY to read them \
         there",
    )
}

fn is_http(location: &str) -> bool {
    matches!(
        scheme_of(location).map(str::to_ascii_lowercase).as_deref(),
        Some("http" | "https")
    )
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
    let location_is_http = is_http(&args.location);
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
                    location: shown_location(location),
                    reason: match error {
                        StorageError::InvalidUrl { reason, .. } => reason,
                        other => other.to_string(),
                    },
                })?;
            Ok(Box::new(BucketSource::new(bucket)))
        }
        Some(_) => Err(VerifyError::UnsupportedLocation {
            location: shown_location(location),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(location: &str, cdn: Option<&str>, key_file: Option<&Path>) -> VerifyArgs {
        VerifyArgs {
            location: location.to_owned(),
            cdn: cdn.map(str::to_owned),
            hmac_key_file: key_file.map(Path::to_path_buf),
            ..VerifyArgs::default()
        }
    }

    fn key_file(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("diagnosis-verify-{name}-{}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A bucket URL verify cannot read is named once, as the location given, with the reason:
    /// not as the exporter's `BUCKET_URL`, which verify does not read.
    #[test]
    fn a_bucket_url_verify_refuses_is_named_as_its_location() {
        let error = source_for("s3:///prefix").map(|_| ()).unwrap_err();
        let shown = error.to_string();
        assert!(matches!(error, VerifyError::UnsupportedLocation { .. }));
        assert!(shown.starts_with("cannot verify s3:///prefix: "), "{shown}");
        assert!(shown.contains("no bucket"), "{shown}");
        assert!(!shown.contains("BUCKET_URL"), "{shown}");
        assert_eq!(shown.matches("s3:").count(), 1, "{shown}");
    }

    /// A cloud secret holding `/` (as AWS secret keys often do) ends the user information of a
    /// bucket URL early; the refusal shows no part of it.
    #[test]
    fn a_bucket_url_holding_a_secret_with_a_slash_is_refused_without_it() {
        let error = source_for("s3://AKIDEXAMPLE:wJalr/XUtnFEMI@bucket/prefix")
            .map(|_| ())
            .unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(
            matches!(error, VerifyError::UnsupportedLocation { .. }),
            "{shown}"
        );
        for fragment in ["wJalr", "XUtnFEMI", "AKIDEXAMPLE"] {
            assert!(!shown.contains(fragment), "{shown}");
        }
    }

    #[test]
    fn the_cdn_is_checked_with_the_apps_key_against_cdn_or_an_http_location() {
        let key = "ab".repeat(32);
        let file = key_file("good", &format!("{key}\n"));
        let check = |location: &str, cdn: Option<&str>| {
            cdn_check(&args(location, cdn, Some(&file)), "302").unwrap()
        };
        assert!(matches!(
            check("s3://bucket/p", Some("https://cdn.example/")),
            Some(CdnCheck::Compare(edge)) if edge.base_url() == "https://cdn.example"
        ));
        assert!(matches!(
            check("https://cdn.example/", None),
            Some(CdnCheck::ReadThrough(_))
        ));
        assert!(matches!(
            check("https://cdn.example", Some("https://cdn.example/")),
            Some(CdnCheck::ReadThrough(_))
        ));
        assert!(
            cdn_check(&args("s3://bucket/p", None, None), "302")
                .unwrap()
                .is_none()
        );

        let refused = |args: &VerifyArgs| format!("{:#}", cdn_check(args, "302").unwrap_err());
        assert!(
            refused(&args("s3://b", Some("https://cdn.example"), None)).contains("--hmac-key-file")
        );
        assert!(refused(&args("s3://b", None, Some(&file))).contains("--cdn URL"));
        let short = key_file("short", &"ab".repeat(31));
        let message = refused(&args("https://cdn.example", None, Some(&short)));
        assert!(message.contains(&short.display().to_string()), "{message}");
        assert!(message.contains("shorter than 32 bytes"), "{message}");
        assert!(!message.contains(&"ab".repeat(31)), "{message}");
        std::fs::remove_file(file).unwrap();
        std::fs::remove_file(short).unwrap();
    }

    #[test]
    fn a_missing_retrieval_object_on_an_http_location_without_the_key_gets_a_hint() {
        let mut report = VerifyReport::default();
        assert_eq!(
            hint(&args("https://cdn.example", None, None), &report),
            None
        );
        report.violations.push(Finding::Retrieval {
            object: "retrieve/302/00000".to_owned(),
            problem: RetrievalProblem::Missing,
        });
        assert!(hint(&args("https://cdn.example", None, None), &report).is_some());
        assert_eq!(hint(&args("s3://bucket", None, None), &report), None);
        let with_key = args("https://cdn.example", None, Some(Path::new("k")));
        assert_eq!(hint(&with_key, &report), None);
    }
}
