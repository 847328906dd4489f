//! The client's address behind proxies (DESIGN §3.2): the `X-Forwarded-For` walk of
//! `diagnosis_domain::client_ip::client_address` over hostile header lines, raw bytes included,
//! under each of the three rules. `submit` hands the walk the same lines, every
//! `X-Forwarded-For` value of the request in order; that lookup in hyper's header map is not
//! covered here. No input may panic, whatever the header says the walk never
//! names an address that a rule does not allow, and once the walk has named an untrusted
//! forwarded client, nothing written left of it (here: a byte that is not ASCII and a copy of
//! the first line's bytes) changes who it is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use diagnosis_domain::client_ip::{ForwardedFor, TrustedProxies, client_address};
use http::HeaderValue;

/// Proxies as a deployment lists them: a pod network, a balancer subnet, one IPv6 range.
static TRUSTED: LazyLock<TrustedProxies> =
    LazyLock::new(
        || match TrustedProxies::parse("10.0.0.0/8, 192.168.1.0/24, 2001:db8:aa::/48") {
            Ok(Some(trusted)) => trusted,
            other => panic!("the harness's proxy list must parse: {other:?}"),
        },
    );

pub fn forwarded_for(input: &[u8]) {
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
    let lines: Vec<HeaderValue> = input[2..]
        .split(|b| *b == b'\n')
        .filter_map(|line| HeaderValue::from_bytes(line).ok())
        .collect();
    let client = client_address(&rule, lines.iter().map(HeaderValue::as_bytes), peer);
    let canonical_peer = peer.to_canonical();
    let forwarded_client = match &rule {
        ForwardedFor::Ignored => false,
        ForwardedFor::OneHop => client != canonical_peer,
        ForwardedFor::TrustedProxies(trusted) => !trusted.contains(client),
    };
    if forwarded_client && let Some(first) = lines.first() {
        let forged = [b"\xff ", first.as_bytes(), b",", first.as_bytes()].concat();
        let Ok(forged) = HeaderValue::from_bytes(&forged) else {
            return;
        };
        let prefixed = std::iter::once(&forged).chain(&lines[1..]);
        assert_eq!(
            client_address(&rule, prefixed.map(HeaderValue::as_bytes), peer),
            client,
            "entries left of the forwarded client changed who it is"
        );
    }
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
}
