//! Exposure configurations (DESIGN §4.2, §4.3): every `*.json` of
//! `EXPOSURE_CONFIG_DIR` is validated and, if valid, published byte for byte
//! under `exposure-configuration/`. An invalid file is refused with a message
//! naming the file and the field, and the previously published version stays.

use std::path::Path;

use bytes::Bytes;
use diagnosis_format::exposure_config::validate_exposure_config;
use diagnosis_format::names::{ObjectKind, exposure_config_key};

use super::{ExportError, Exporter};

/// A configuration file that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedConfig {
    pub file: String,
    pub reason: String,
}

impl Exporter {
    /// Publishes the valid configurations; returns how many were published and
    /// the refused ones.
    pub(super) async fn publish_exposure_configs(
        &self,
        dir: &Path,
    ) -> Result<(usize, Vec<RefusedConfig>), ExportError> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| ExportError::ConfigDir(dir.display().to_string(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ExportError::ConfigDir(dir.display().to_string(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && entry.path().is_file() {
                names.push(name);
            }
        }
        names.sort();
        let mut published = 0;
        let mut refused = Vec::new();
        for name in names {
            let path = dir.join(&name);
            let bytes = std::fs::read(&path)
                .map_err(|e| ExportError::ConfigDir(path.display().to_string(), e))?;
            match validate_exposure_config(&name, &bytes) {
                Ok(()) => {
                    self.put_fenced(
                        &exposure_config_key(&name),
                        Bytes::from(bytes),
                        ObjectKind::ExposureConfig,
                    )
                    .await?;
                    published += 1;
                }
                Err(e) => {
                    tracing::error!(file = %name, error = %e, "exposure configuration refused; the published version stays");
                    refused.push(RefusedConfig {
                        file: name,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok((published, refused))
    }
}
