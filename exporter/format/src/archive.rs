//! Zip step: `export.bin` and `export.sig` become the published file (DESIGN §4.1), and the
//! reverse for checking a published file the way a phone reads it.
//!
//! Why by hand and not with the `zip` crate (a dev-dependency for the tests' independent
//! reading): the published bytes are the contract, pinned by the golden fixtures, and a writer
//! we do not own may change its headers, flags or extra fields in any release.
//!
//! The archive holds exactly two deflated entries, `export.bin` then `export.sig`. Everything
//! that could vary between two builds of the same window is fixed (modification time
//! 1980-01-01 00:00, Unix attributes 0644, no extra fields, no comment), so a rebuild produces
//! a byte-identical file and a rerun of the exporter is harmless (STYLE 6).
//!
//! The exporter also reads its own files back to merge them into bigger windows, in ranged
//! reads: [`read_first_entry`] reads the local header at the start of a published file and
//! says where the deflated `export.bin` lies. The zip layout is written down once, in the
//! constants below, for the writer and that reader.
//!
//! This module must never accept an archive with other entries, another order, or an entry
//! larger than [`MAX_ENTRY_BYTES`] when it unpacks one: the `verify` command reads files from
//! a bucket that anyone with write access could have tampered with.

use std::io::{Cursor, Read as _};

use libdeflater::{CompressionLvl, Compressor};
use thiserror::Error;
use zip::ZipArchive;

/// Name of the first entry (DESIGN §4.1).
pub const EXPORT_BIN_NAME: &str = "export.bin";
/// Name of the second entry (DESIGN §4.1).
pub const EXPORT_SIG_NAME: &str = "export.sig";

/// Largest entry [`unzip_export`] unpacks: Apple's 750 000 keys at their largest encoding
/// (about 60 bytes each) fit with room to spare.
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;

/// Deflate level of published files (libdeflate, 1–12). Files are written once and downloaded by
/// every phone, so size matters most, but the exporter also writes every key three or four
/// times (hourly, daily, retrieval objects), so speed matters too. On one hour of 100 000
/// realistic keys (`infra/dev/bench`), libdeflate at this level is both smaller and several
/// times faster than zlib at level 9; levels above it gain a few hundredths of a byte per key
/// at a fraction of the speed (tests/bench/README.md).
pub const COMPRESSION_LEVEL: i32 = 6;

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
    /// The compression level is not one libdeflate knows.
    #[error("deflate level {COMPRESSION_LEVEL} is not one of 1 to 12")]
    Level,
    /// libdeflate could not compress an entry into its own bound.
    #[error("zip entry {0}: compression failed")]
    Compress(String),
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

/// `PK\x03\x04`, `PK\x01\x02` and `PK\x05\x06`: local header, central directory entry, end of
/// central directory.
const LOCAL_HEADER: u32 = 0x0403_4b50;
/// Length of a local header before its file name.
pub const LOCAL_HEADER_LEN: usize = 30;
/// Length of a central directory entry before its file name.
const CENTRAL_HEADER_LEN: usize = 46;
// Offsets of the fields of a local header that the reader needs.
const LOCAL_METHOD_AT: usize = 8;
const LOCAL_CRC_AT: usize = 14;
const LOCAL_COMPRESSED_AT: usize = 18;
const LOCAL_SIZE_AT: usize = 22;
const LOCAL_NAME_LEN_AT: usize = 26;
const LOCAL_EXTRA_LEN_AT: usize = 28;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
/// Version 2.0 of the format (deflate), written by a Unix system.
const VERSION_NEEDED: u16 = 20;
const VERSION_MADE_BY: u16 = (3 << 8) | 20;
const METHOD_DEFLATE: u16 = 8;
/// 1980-01-01 00:00:00 in MS-DOS form: the earliest the format can say, fixed so that the
/// bytes depend on the content only.
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1;
/// A regular file, mode 0644.
const UNIX_FILE_ATTRIBUTES: u32 = 0o100_644 << 16;

/// Builds the published archive: `export.bin` then `export.sig`, deflated by libdeflate at
/// [`COMPRESSION_LEVEL`], deterministic: fixed time and attributes, no extra field, no comment,
/// no data descriptor.
pub fn zip_export(export_bin: &[u8], export_sig: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let level = CompressionLvl::new(COMPRESSION_LEVEL).map_err(|_| ArchiveError::Level)?;
    let mut compressor = Compressor::new(level);
    let entries = [(EXPORT_BIN_NAME, export_bin), (EXPORT_SIG_NAME, export_sig)];
    // Compressed straight into the archive. The first allocation is zeroed, which the system
    // maps lazily: only the pages libdeflate writes cost memory, not the whole bound.
    let mut zip = vec![
        0_u8;
        LOCAL_HEADER_LEN
            + EXPORT_BIN_NAME.len()
            + compressor.deflate_compress_bound(export_bin.len())
    ];
    let mut first = true;
    let mut central = Vec::with_capacity(2 * (CENTRAL_HEADER_LEN + EXPORT_BIN_NAME.len()));
    for (name, data) in entries {
        let too_large = || ArchiveError::TooLarge {
            name: name.to_owned(),
            limit: u64::from(u32::MAX),
        };
        let size = u32::try_from(data.len()).map_err(|_| too_large())?;
        let crc = libdeflater::crc32(data);
        let name_len = u16::try_from(name.len()).map_err(|_| too_large())?;
        let header_at = if first { 0 } else { zip.len() };
        let data_at = header_at + LOCAL_HEADER_LEN + name.len();
        if !first {
            zip.resize(data_at + compressor.deflate_compress_bound(data.len()), 0);
        }
        first = false;
        let compressed_len = compressor
            .deflate_compress(data, &mut zip[data_at..])
            .map_err(|_| ArchiveError::Compress(name.to_owned()))?;
        zip.truncate(data_at + compressed_len);
        let compressed = u32::try_from(compressed_len).map_err(|_| too_large())?;

        let entry = Entry {
            name,
            crc,
            compressed,
            size,
            name_len,
            header_at: u32::try_from(header_at).map_err(|_| too_large())?,
        };
        zip[header_at..data_at].copy_from_slice(&entry.local_header());
        entry.put_central_header(&mut central);
    }
    let central_at = u32::try_from(zip.len()).map_err(|_| ArchiveError::TooLarge {
        name: EXPORT_SIG_NAME.to_owned(),
        limit: u64::from(u32::MAX),
    })?;
    let central_len = u32::try_from(central.len()).unwrap_or(u32::MAX);
    zip.extend(&central);
    put_end_of_central_directory(&mut zip, central_len, central_at);
    Ok(zip)
}

/// One member of the archive, once compressed: what its two headers say.
struct Entry<'a> {
    name: &'a str,
    crc: u32,
    compressed: u32,
    size: u32,
    name_len: u16,
    /// Offset of its local header in the archive.
    header_at: u32,
}

impl Entry<'_> {
    fn local_header(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(LOCAL_HEADER_LEN + self.name.len());
        header.extend(LOCAL_HEADER.to_le_bytes());
        header.extend(VERSION_NEEDED.to_le_bytes());
        self.put_shared_fields(&mut header);
        header.extend(0_u16.to_le_bytes()); // extra field length
        debug_assert_eq!(header.len(), LOCAL_HEADER_LEN);
        header.extend(self.name.as_bytes());
        header
    }

    fn put_central_header(&self, central: &mut Vec<u8>) {
        central.extend(CENTRAL_HEADER.to_le_bytes());
        central.extend(VERSION_MADE_BY.to_le_bytes());
        central.extend(VERSION_NEEDED.to_le_bytes());
        self.put_shared_fields(central);
        central.extend(0_u16.to_le_bytes()); // extra field length
        central.extend(0_u16.to_le_bytes()); // comment length
        central.extend(0_u16.to_le_bytes()); // disk number
        central.extend(0_u16.to_le_bytes()); // internal attributes
        central.extend(UNIX_FILE_ATTRIBUTES.to_le_bytes());
        central.extend(self.header_at.to_le_bytes());
        central.extend(self.name.as_bytes());
    }

    fn put_shared_fields(&self, out: &mut Vec<u8>) {
        put_entry_fields(out, self.crc, self.compressed, self.size, self.name_len);
    }
}

/// The end of central directory record of a two-member archive without a comment.
fn put_end_of_central_directory(zip: &mut Vec<u8>, central_len: u32, central_at: u32) {
    zip.extend(END_OF_CENTRAL_DIRECTORY.to_le_bytes());
    zip.extend(0_u16.to_le_bytes()); // this disk
    zip.extend(0_u16.to_le_bytes()); // disk with the central directory
    zip.extend(2_u16.to_le_bytes()); // entries on this disk
    zip.extend(2_u16.to_le_bytes()); // entries in all
    zip.extend(central_len.to_le_bytes());
    zip.extend(central_at.to_le_bytes());
    zip.extend(0_u16.to_le_bytes()); // comment length
}

/// The fields local and central headers share, from the flags to the file name length.
fn put_entry_fields(out: &mut Vec<u8>, crc: u32, compressed: u32, size: u32, name_len: u16) {
    out.extend(0_u16.to_le_bytes()); // flags: no data descriptor, no encryption
    out.extend(METHOD_DEFLATE.to_le_bytes());
    out.extend(DOS_TIME.to_le_bytes());
    out.extend(DOS_DATE.to_le_bytes());
    out.extend(crc.to_le_bytes());
    out.extend(compressed.to_le_bytes());
    out.extend(size.to_le_bytes());
    out.extend(name_len.to_le_bytes());
}

/// Where the deflated `export.bin` lies in a file the exporter published, from its first local
/// header (DESIGN §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstEntry {
    /// Offset of the deflated bytes in the file.
    pub data_start: u64,
    /// Offset just past them.
    pub data_end: u64,
    /// CRC-32 of the inflated `export.bin`.
    pub crc32: u32,
    /// Length of the inflated `export.bin`.
    pub size: u64,
}

/// Why the start of a published file is not the exporter's own zip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EntryError {
    /// Fewer bytes than the header needs.
    #[error("truncated zip header")]
    Truncated,
    /// Not a local header, or not deflated.
    #[error("not a deflated zip entry")]
    NotDeflated,
    /// The first entry is another file.
    #[error("the first entry is not export.bin")]
    NotExportBin,
}

/// Reads the local header at the start of `first` (the first bytes of a published file; a
/// few hundred are plenty) and says where `export.bin` lies. Only the exporter's own layout is
/// accepted: the first entry is `export.bin`, deflated. The sizes are the header's word; the
/// reader checks them against the file's size, the inflated length and the CRC-32.
pub fn read_first_entry(first: &[u8]) -> Result<FirstEntry, EntryError> {
    let field = |at: usize, len: usize| -> Result<u64, EntryError> {
        let bytes = first.get(at..at + len).ok_or(EntryError::Truncated)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0_u64, |value, &byte| (value << 8) | u64::from(byte)))
    };
    if field(0, 4)? != u64::from(LOCAL_HEADER)
        || field(LOCAL_METHOD_AT, 2)? != u64::from(METHOD_DEFLATE)
    {
        return Err(EntryError::NotDeflated);
    }
    let name_len = usize::try_from(field(LOCAL_NAME_LEN_AT, 2)?).unwrap_or(usize::MAX);
    let extra_len = usize::try_from(field(LOCAL_EXTRA_LEN_AT, 2)?).unwrap_or(usize::MAX);
    match first.get(LOCAL_HEADER_LEN..LOCAL_HEADER_LEN.saturating_add(name_len)) {
        Some(name) if name == EXPORT_BIN_NAME.as_bytes() => {}
        Some(_) => return Err(EntryError::NotExportBin),
        None => return Err(EntryError::Truncated),
    }
    let data_start = (LOCAL_HEADER_LEN + name_len).saturating_add(extra_len) as u64;
    Ok(FirstEntry {
        data_start,
        data_end: data_start.saturating_add(field(LOCAL_COMPRESSED_AT, 4)?),
        crc32: u32::try_from(field(LOCAL_CRC_AT, 4)?).unwrap_or(0),
        size: field(LOCAL_SIZE_AT, 4)?,
    })
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
    use std::io::Write as _;

    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};

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

    #[test]
    fn the_first_entry_reader_finds_export_bin_in_the_writers_files() {
        let bin = b"EK Export v1    some bytes".repeat(50);
        let zip = zip_export(&bin, b"sig").unwrap();
        let entry = read_first_entry(&zip[..64]).unwrap();
        assert_eq!(
            entry.data_start,
            (LOCAL_HEADER_LEN + EXPORT_BIN_NAME.len()) as u64
        );
        assert_eq!(entry.size, bin.len() as u64);
        assert_eq!(entry.crc32, libdeflater::crc32(&bin));
        let deflated = &zip[entry.data_start as usize..entry.data_end as usize];
        let mut inflated = vec![0; bin.len()];
        let written = libdeflater::Decompressor::new()
            .deflate_decompress(deflated, &mut inflated)
            .unwrap();
        assert_eq!(&inflated[..written], bin.as_slice());

        assert_eq!(read_first_entry(&zip[..20]), Err(EntryError::Truncated));
        assert_eq!(read_first_entry(&zip[..35]), Err(EntryError::Truncated));
        assert_eq!(
            read_first_entry(b"not a zip at all, not at all, no"),
            Err(EntryError::NotDeflated)
        );
        let mut stored = zip.clone();
        stored[LOCAL_METHOD_AT] = 0;
        assert_eq!(read_first_entry(&stored), Err(EntryError::NotDeflated));
        let swapped = zip_with(&[("export.sig", b"s"), ("export.bin", b"b")]);
        assert_eq!(read_first_entry(&swapped), Err(EntryError::NotExportBin));
    }

    fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .last_modified_time(zip::DateTime::DEFAULT);
            writer.start_file(*name, options).unwrap();
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
