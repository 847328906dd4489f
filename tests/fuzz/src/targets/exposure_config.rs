//! Exposure configurations before publication (DESIGN §4.2, §4.3): the strict JSON parser, the
//! v1 and v2 platform rules as `CA.json`, and the syntax-only check as `region.json`. No input
//! may panic; a configuration that passes is also valid app content.

use diagnosis_format::exposure_config::{REGION_CONTENT_FILE, check_exposure_config};

pub fn exposure_config(bytes: &[u8]) {
    let as_config = check_exposure_config("CA.json", bytes);
    let as_content = check_exposure_config(REGION_CONTENT_FILE, bytes);
    if as_config.is_ok() {
        assert!(
            as_content.is_ok(),
            "a valid configuration failed the syntax check"
        );
    }
}
