//! Who is claiming (DESIGN §3.2): the address a failed `/claim-key` is counted
//! against. The rules and the `X-Forwarded-For` walk are
//! `diagnosis_core::client_ip`, pure code the fuzz targets run too; this module
//! only hands it the request's header lines. It must never log an address.

use std::net::IpAddr;

use diagnosis_core::client_ip;
use http::{HeaderMap, HeaderValue};

pub use diagnosis_core::client_ip::{ForwardedFor, MAX_FORWARDED_ENTRIES, TrustedProxies};

/// The client's address: the peer unless `rule` says which `X-Forwarded-For`
/// entry to believe (`client_ip::client_address`).
pub fn client_address(rule: &ForwardedFor, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    let lines = headers
        .get_all("x-forwarded-for")
        .into_iter()
        .map(HeaderValue::as_bytes);
    client_ip::client_address(rule, lines, peer)
}
