//! `POST /claim-key` body (DESIGN §3.2): `KeyClaimRequest` decoding, the app key check and
//! one-time code normalisation, up to the database. No input may panic.

use crate::claim_request;

pub fn claim_body(body: &[u8]) {
    if let Ok((_, Some(code))) = claim_request(body) {
        // What reaches the store has the shape of an issued code.
        assert_eq!(code.as_str().len(), 10);
    }
}
