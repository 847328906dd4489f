//! The client's address behind proxies (DESIGN §3.2): the `X-Forwarded-For` walk of
//! `diagnosis_submit::client::client_address` over hostile header lines, under each of the three
//! rules. No input may panic, and whatever the header says, the walk never names an address
//! that a rule does not allow.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use diagnosis_submit::client::{ForwardedFor, TrustedProxies, client_address};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// Proxies as a deployment lists them: a pod network, a balancer subnet, one IPv6 range.
static TRUSTED: LazyLock<TrustedProxies> =
    LazyLock::new(
        || match TrustedProxies::parse("10.0.0.0/8, 192.168.1.0/24, 2001:db8:aa::/48") {
            Ok(Some(trusted)) => trusted,
            other => panic!("the harness's proxy list must parse: {other:?}"),
        },
    );

fuzz_target!(|input: &[u8]| {
    // Byte 0: the rule; byte 1: the peer; the rest: header lines separated by b'\n'.
    let (Some(&rule_byte), Some(&peer_byte)) = (input.first(), input.get(1)) else {
        return;
    };
    let rule = match rule_byte % 3 {
        0 => ForwardedFor::Ignored,
        1 => ForwardedFor::OneHop,
        _ => ForwardedFor::TrustedProxies(TRUSTED.clone()),
    };
    let peer = match peer_byte % 4 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        1 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
        2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xaa, 0, 0, 0, 0, 1)),
        _ => IpAddr::V6(Ipv4Addr::new(192, 168, 1, 7).to_ipv6_mapped()),
    };
    let mut headers = HeaderMap::new();
    for line in input[2..].split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", value);
        }
    }
    let client = client_address(&rule, &headers, peer);
    let canonical_peer = peer.to_canonical();
    assert!(
        !matches!(client, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()),
        "a mapped address is returned as IPv4"
    );
    match rule {
        ForwardedFor::Ignored => assert_eq!(client, canonical_peer),
        ForwardedFor::OneHop => {}
        ForwardedFor::TrustedProxies(_) => {
            // An untrusted peer is the client, whatever its header claims.
            let peer_trusted = matches!(peer_byte % 4, 0 | 2 | 3);
            if !peer_trusted {
                assert_eq!(client, canonical_peer);
            }
        }
    }
});
