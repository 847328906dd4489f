//! The export archive reader (`archive::unzip_export`) that `verify` uses on every object it
//! reads back (DESIGN §4.1). No input may panic; what it accepts survives a round trip.

use diagnosis_format::archive::{unzip_export, zip_export};

pub fn published_zip(zip: &[u8]) {
    if let Ok(entries) = unzip_export(zip) {
        let rezipped = match zip_export(&entries.export_bin, &entries.export_sig) {
            Ok(rezipped) => rezipped,
            Err(error) => panic!("entries read from an archive cannot be archived: {error}"),
        };
        match unzip_export(&rezipped) {
            Ok(again) => assert!(again == entries, "the round trip changed the entries"),
            Err(error) => panic!("an archive the exporter wrote does not read back: {error}"),
        }
    }
}
