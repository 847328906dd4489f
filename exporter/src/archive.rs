//! Zip step: `export.bin` and `export.sig` become the published file (DESIGN §4.1), and the
//! reverse for checking a published file the way a phone reads it.
//!
//! The archive holds exactly two deflated entries, `export.bin` then `export.sig`. Everything
//! that could vary between two builds of the same window is fixed (modification time
//! 1980-01-01 00:00, Unix attributes 0644, no extra fields, no comment), so a rebuild produces
//! a byte-identical file and a rerun of the exporter is harmless (STYLE 6).
//!
//! This module must never accept an archive with other entries, another order, or an entry
//! larger than [`MAX_ENTRY_BYTES`] when it unpacks one: the `verify` command reads files from
//! a bucket that anyone with write access could have tampered with.

use std::io::{Cursor, Read as _, Write as _};

use thiserror::Error;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

/// Name of the first entry (DESIGN §4.1).
pub const EXPORT_BIN_NAME: &str = "export.bin";
/// Name of the second entry (DESIGN §4.1).
pub const EXPORT_SIG_NAME: &str = "export.sig";

/// Largest entry [`unzip_export`] unpacks: Apple's 750 000 keys at their largest encoding
/// (about 60 bytes each) fit with room to spare.
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;

/// Deflate level of published files. Files are written once and downloaded by every phone,
/// so the smallest output wins: for 100 000 keys of one hour, level 9 gives 17.97 bytes per
/// key against 18.06 at the default level 6 (random key order: 20.51 and 20.83); see
/// `tests/compression.rs`.
pub const COMPRESSION_LEVEL: i64 = 9;

/// Why an export archive could not be built or read.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// The zip library failed to write or read the archive.
    #[error("zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// Reading an entry failed.
    #[error("zip entry {name}: {source}")]
    Read {
        /// The entry.
        name: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The archive's entries are not exactly `export.bin` then `export.sig`.
    #[error("an export archive must hold exactly export.bin then export.sig, found {found:?}")]
    Entries {
        /// The entry names found, in order.
        found: Vec<String>,
    },
    /// An entry is larger than [`MAX_ENTRY_BYTES`].
    #[error("zip entry {name} is larger than {limit} bytes")]
    TooLarge {
        /// The entry.
        name: String,
        /// The limit it exceeds.
        limit: u64,
    },
}

/// The two entries of an export archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntries {
    /// The bytes of `export.bin`.
    pub export_bin: Vec<u8>,
    /// The bytes of `export.sig`.
    pub export_sig: Vec<u8>,
}

fn entry_options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(COMPRESSION_LEVEL))
        // Fixed, so that the bytes depend on the content only.
        .last_modified_time(DateTime::DEFAULT)
        .system(zip::System::Unix)
        .unix_permissions(0o644)
        .large_file(false)
}

/// Builds the published archive: `export.bin` then `export.sig`, deflated, deterministic.
pub fn zip_export(export_bin: &[u8], export_sig: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let capacity = export_bin.len() + export_sig.len() + 512;
    let mut writer = ZipWriter::new(Cursor::new(Vec::with_capacity(capacity)));
    for (name, bytes) in [(EXPORT_BIN_NAME, export_bin), (EXPORT_SIG_NAME, export_sig)] {
        writer.start_file(name, entry_options())?;
        writer
            .write_all(bytes)
            .map_err(|source| ArchiveError::Read {
                name: name.to_owned(),
                source,
            })?;
    }
    Ok(writer.finish()?.into_inner())
}

/// Unpacks an export archive, insisting on exactly `export.bin` then `export.sig` and on
/// entries of at most [`MAX_ENTRY_BYTES`].
pub fn unzip_export(zip: &[u8]) -> Result<ExportEntries, ArchiveError> {
    unzip_export_within(zip, MAX_ENTRY_BYTES)
}

fn unzip_export_within(zip: &[u8], max_entry_bytes: u64) -> Result<ExportEntries, ArchiveError> {
    let mut archive = ZipArchive::new(Cursor::new(zip))?;
    let names: Vec<&[u8]> = archive.file_names_raw().collect();
    if names != [EXPORT_BIN_NAME.as_bytes(), EXPORT_SIG_NAME.as_bytes()] {
        let found = names
            .iter()
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        return Err(ArchiveError::Entries { found });
    }
    let export_bin = read_entry(&mut archive, 0, EXPORT_BIN_NAME, max_entry_bytes)?;
    let export_sig = read_entry(&mut archive, 1, EXPORT_SIG_NAME, max_entry_bytes)?;
    Ok(ExportEntries {
        export_bin,
        export_sig,
    })
}

fn read_entry(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    expected_name: &str,
    max_entry_bytes: u64,
) -> Result<Vec<u8>, ArchiveError> {
    let entry = archive.by_index(index)?;
    if entry.name_raw() != expected_name.as_bytes() {
        return Err(ArchiveError::Entries {
            found: vec![String::from_utf8_lossy(entry.name_raw()).into_owned()],
        });
    }
    let too_large = || ArchiveError::TooLarge {
        name: expected_name.to_owned(),
        limit: max_entry_bytes,
    };
    if entry.size() > max_entry_bytes {
        return Err(too_large());
    }
    // The declared size may lie; never read more than the limit whatever it says.
    let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
    entry
        .take(max_entry_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ArchiveError::Read {
            name: expected_name.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > max_entry_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entries_of(zip: &[u8]) -> Vec<(String, CompressionMethod, u64)> {
        let mut archive = ZipArchive::new(Cursor::new(zip)).unwrap();
        (0..archive.len())
            .map(|i| {
                let file = archive.by_index(i).unwrap();
                (
                    file.name().unwrap().into_owned(),
                    file.compression(),
                    file.size(),
                )
            })
            .collect()
    }

    #[test]
    fn round_trip_with_two_deflated_entries_in_order() {
        let bin = b"EK Export v1    some bytes".repeat(50);
        let sig = b"signature bytes".to_vec();
        let zip = zip_export(&bin, &sig).unwrap();
        assert_eq!(
            entries_of(&zip),
            vec![
                (
                    "export.bin".to_owned(),
                    CompressionMethod::Deflated,
                    bin.len() as u64
                ),
                (
                    "export.sig".to_owned(),
                    CompressionMethod::Deflated,
                    sig.len() as u64
                ),
            ]
        );
        assert_eq!(
            unzip_export(&zip).unwrap(),
            ExportEntries {
                export_bin: bin,
                export_sig: sig
            }
        );
    }

    #[test]
    fn archives_are_deterministic_and_carry_no_varying_metadata() {
        let zip = zip_export(b"EK Export v1    ", b"sig").unwrap();
        assert_eq!(zip, zip_export(b"EK Export v1    ", b"sig").unwrap());

        // Walk the local file headers: fixed time and date, no extra fields.
        let mut offset = 0;
        for name in ["export.bin", "export.sig"] {
            let header = &zip[offset..];
            assert_eq!(&header[..4], b"PK\x03\x04");
            let time = u16::from_le_bytes([header[10], header[11]]);
            let date = u16::from_le_bytes([header[12], header[13]]);
            assert_eq!((time, date), (0, (1 << 5) | 1), "1980-01-01 00:00:00");
            let compressed = u32::from_le_bytes(header[18..22].try_into().unwrap()) as usize;
            let name_len = u16::from_le_bytes([header[26], header[27]]) as usize;
            let extra_len = u16::from_le_bytes([header[28], header[29]]) as usize;
            assert_eq!(&header[30..30 + name_len], name.as_bytes());
            assert_eq!(extra_len, 0, "{name} has extra fields");
            offset += 30 + name_len + compressed;
        }
        assert_eq!(&zip[offset..offset + 4], b"PK\x01\x02");
    }

    fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            writer.start_file(*name, entry_options()).unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn unzip_insists_on_exactly_the_two_entries_in_order() {
        fn check(entries: &[(&str, &[u8])], expected: &[&str]) {
            match unzip_export(&zip_with(entries)) {
                Err(ArchiveError::Entries { found }) => assert_eq!(found, expected),
                other => panic!("expected an entries error, got {other:?}"),
            }
        }
        check(
            &[("export.sig", b"s"), ("export.bin", b"b")],
            &["export.sig", "export.bin"],
        );
        check(&[("export.bin", b"b")], &["export.bin"]);
        check(
            &[("export.bin", b"b"), ("export.sig", b"s"), ("extra", b"x")],
            &["export.bin", "export.sig", "extra"],
        );
        check(
            &[("EXPORT.BIN", b"b"), ("export.sig", b"s")],
            &["EXPORT.BIN", "export.sig"],
        );
        check(&[], &[]);
    }

    #[test]
    fn unzip_refuses_garbage_and_oversized_entries() {
        assert!(matches!(
            unzip_export(b"not a zip"),
            Err(ArchiveError::Zip(_))
        ));
        // Zeros deflate to almost nothing: a small file that unpacks past the limit.
        let zip = zip_export(&[0_u8; 100_001], b"s").unwrap();
        assert!(zip.len() < 1_000, "{}", zip.len());
        unzip_export_within(&zip, 100_001).unwrap();
        match unzip_export_within(&zip, 100_000) {
            Err(error @ ArchiveError::TooLarge { .. }) => assert_eq!(
                error.to_string(),
                "zip entry export.bin is larger than 100000 bytes"
            ),
            other => panic!("expected TooLarge, got {other:?}"),
        }

        // An archive that understates the entry's size is cut off at the limit all the same.
        let mut lying = zip.clone();
        let central = lying.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        // Uncompressed size: offset 22 in the local header, 24 in the central directory.
        lying[22..26].copy_from_slice(&10_u32.to_le_bytes());
        lying[central + 24..central + 28].copy_from_slice(&10_u32.to_le_bytes());
        let error = unzip_export_within(&lying, 100_000).unwrap_err();
        assert!(
            matches!(
                error,
                ArchiveError::Read { .. } | ArchiveError::TooLarge { .. }
            ),
            "{error:?}"
        );
    }
}
