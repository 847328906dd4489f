//! Who is claiming (DESIGN §3.2): the address a failed `/claim-key` is counted
//! against, taken from the TCP peer or, behind proxies the operator trusts,
//! from `X-Forwarded-For`.
//!
//! Every proxy appends the address it received the request from, so only the
//! entries appended by trusted proxies are facts; anything further left was
//! written by the client and may be forged. The walk therefore starts at the
//! right and stops at the first address that no trusted proxy could have
//! written. The header is split on its raw bytes, entry by entry (DESIGN §3.2,
//! "Raw bytes"): whatever a client writes left of the address its proxy
//! appended, bytes that are not text included, is never read.
//!
//! The header lines come in as the bytes the HTTP server received, so the walk
//! the service runs is the one the fuzz targets run (DESIGN §7). This module
//! must never log an address.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// How many `X-Forwarded-For` entries the walk looks at, from the right. No
/// real chain of proxies is this long; the cap keeps a huge header cheap.
pub const MAX_FORWARDED_ENTRIES: usize = 32;

/// Which `X-Forwarded-For` entries are believed (`TRUST_X_FORWARDED_FOR`,
/// `TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ForwardedFor {
    /// The peer is the client; `X-Forwarded-For` is ignored (the default).
    #[default]
    Ignored,
    /// `TRUST_X_FORWARDED_FOR=true`: the peer is a proxy, and the last entry
    /// (the one it appended) is the client when it is an address.
    OneHop,
    /// `TRUSTED_PROXIES`: walk the header from the right past trusted proxies.
    TrustedProxies(TrustedProxies),
}

/// A non-empty list of networks whose proxies are trusted to append the address
/// they received a request from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `TRUSTED_PROXIES`: comma-separated CIDRs, or bare addresses (one
    /// host, /32 or /128). `None` when the list is empty. The error names the
    /// entry that is wrong.
    pub fn parse(list: &str) -> Result<Option<TrustedProxies>, String> {
        if list.trim().is_empty() {
            return Ok(None);
        }
        let mut networks = Vec::new();
        for (index, entry) in list.split(',').enumerate() {
            let entry = entry.trim();
            let network = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "entry {} ({entry:?}) is not a CIDR such as 10.0.0.0/8 or an address",
                        index + 1
                    )
                })?;
            if network.prefix_len() == 0 {
                // Every peer would be a trusted proxy, and the walk would end at the
                // leftmost entry, which the client writes: every client would choose
                // who it is and no ban would hold (DESIGN §3.2, §6).
                return Err(format!(
                    "entry {} ({entry:?}) trusts every address, so any client could name \
                     itself in X-Forwarded-For; list only the proxies' own networks",
                    index + 1
                ));
            }
            if let IpNet::V6(v6) = network
                && v6.addr().to_ipv4_mapped().is_some()
            {
                // Peers and forwarded addresses are compared in their IPv4 form.
                return Err(format!(
                    "entry {} ({entry:?}) is an IPv4-mapped IPv6 range; write it as IPv4",
                    index + 1
                ));
            }
            networks.push(network.trunc());
        }
        Ok(Some(TrustedProxies(networks)))
    }

    /// Whether `ip` is in one of the trusted networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&ip))
    }
}

/// The client's address: the peer unless `rule` says which forwarded entry to
/// believe. `forwarded_for` is every `X-Forwarded-For` header line, in the
/// order received, as raw bytes. IPv4-mapped IPv6 addresses come back as IPv4.
pub fn client_address<'a, L>(rule: &ForwardedFor, forwarded_for: L, peer: IpAddr) -> IpAddr
where
    L: IntoIterator<Item = &'a [u8]>,
    L::IntoIter: DoubleEndedIterator,
{
    let peer = peer.to_canonical();
    match rule {
        ForwardedFor::Ignored => peer,
        ForwardedFor::OneHop => forwarded_from_right(forwarded_for)
            .next()
            .flatten()
            .unwrap_or(peer),
        ForwardedFor::TrustedProxies(trusted) => {
            if !trusted.contains(peer) {
                return peer;
            }
            // The nearest hop known to be honest so far: where the walk ends
            // when the chain runs out or stops making sense.
            let mut last_trusted = peer;
            for entry in forwarded_from_right(forwarded_for).take(MAX_FORWARDED_ENTRIES) {
                match entry {
                    Some(ip) if trusted.contains(ip) => last_trusted = ip,
                    Some(ip) => return ip,
                    None => return last_trusted,
                }
            }
            last_trusted
        }
    }
}

/// Every `X-Forwarded-For` entry, all header lines in order, from the right;
/// `None` for an entry that is not an address. Lines are split on the raw
/// bytes, so an entry that is not text spoils only itself, never its
/// neighbours (DESIGN §3.2).
fn forwarded_from_right<'a>(
    lines: impl IntoIterator<Item = &'a [u8], IntoIter: DoubleEndedIterator>,
) -> impl Iterator<Item = Option<IpAddr>> {
    lines
        .into_iter()
        .rev()
        .flat_map(|line| line.rsplit(|byte| *byte == b','))
        .map(parse_entry)
}

/// One entry, spaces and tabs around it ignored: `192.0.2.1`,
/// `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
/// Anything else (`unknown`, obfuscated RFC 7239 names, an empty entry, bytes
/// that are not ASCII) is not an address.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let mut entry = entry;
    while let [b' ' | b'\t', rest @ ..] = entry {
        entry = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = entry {
        entry = rest;
    }
    if !entry.is_ascii() {
        return None;
    }
    let entry = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|v6| IpAddr::V6(v6).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trusted(list: &str) -> ForwardedFor {
        ForwardedFor::TrustedProxies(
            TrustedProxies::parse(list)
                .expect("valid list")
                .expect("non-empty list"),
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn the_walk_finds_the_first_untrusted_address_from_the_right() {
        let proxies = trusted("10.0.0.0/8, 192.168.1.1, 2001:db8:ffff::/48");
        // (rule, peer, X-Forwarded-For lines, expected client)
        let cases: &[(&ForwardedFor, &str, &[&str], &str)] = &[
            // No header: the peer, trusted or not.
            (&proxies, "203.0.113.9", &[], "203.0.113.9"),
            (&proxies, "10.0.0.1", &[], "10.0.0.1"),
            // An untrusted peer's header is ignored, however it looks.
            (&proxies, "203.0.113.9", &["198.51.100.1"], "203.0.113.9"),
            (
                &proxies,
                "203.0.113.9",
                &["198.51.100.1, 10.0.0.2"],
                "203.0.113.9",
            ),
            // One trusted hop.
            (&proxies, "10.0.0.1", &["198.51.100.1"], "198.51.100.1"),
            // Two trusted hops: the inner proxy's entry is skipped.
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1, 10.0.0.2"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1, 192.168.1.1"],
                "198.51.100.1",
            ),
            // Spoofed prefixes: the client's own entries stay left of its address.
            (
                &proxies,
                "10.0.0.1",
                &["1.1.1.1, 10.9.9.9, 198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &["10.3.3.3", "198.51.100.1, 10.0.0.2"],
                "198.51.100.1",
            ),
            // A trusted-looking forged entry left of the real client changes nothing.
            (
                &proxies,
                "10.0.0.1",
                &["10.0.0.7, 198.51.100.1"],
                "198.51.100.1",
            ),
            // Several header lines count in order, the last line rightmost.
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1", "10.0.0.2"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &["10.0.0.2", "198.51.100.1"],
                "198.51.100.1",
            ),
            // Every entry trusted: the farthest trusted hop.
            (&proxies, "10.0.0.1", &["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
            // A malformed entry ends the walk at the last trusted hop.
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1, garbage, 10.0.0.2"],
                "10.0.0.2",
            ),
            (&proxies, "10.0.0.1", &["198.51.100.1, unknown"], "10.0.0.1"),
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1,, 10.0.0.2"],
                "10.0.0.2",
            ),
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1, 1.2.3.4.5"],
                "10.0.0.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1, [1.2.3.4]"],
                "10.0.0.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1, 2001:db8::1:99999"],
                "10.0.0.1",
            ),
            (&proxies, "10.0.0.1", &[""], "10.0.0.1"),
            // Ports and brackets.
            (&proxies, "10.0.0.1", &["198.51.100.1:4711"], "198.51.100.1"),
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1, 10.0.0.2:443"],
                "198.51.100.1",
            ),
            (&proxies, "10.0.0.1", &["[2001:db8::7]"], "2001:db8::7"),
            (&proxies, "10.0.0.1", &["[2001:db8::7]:4711"], "2001:db8::7"),
            // IPv6 peers, proxies and clients.
            (
                &proxies,
                "2001:db8:ffff::1",
                &["2001:db8::7"],
                "2001:db8::7",
            ),
            (
                &proxies,
                "10.0.0.1",
                &["2001:db8::7, [2001:db8:ffff::2]:80"],
                "2001:db8::7",
            ),
            (
                &proxies,
                "2001:db8:fffe::1",
                &["2001:db8::7"],
                "2001:db8:fffe::1",
            ),
            // IPv4-mapped IPv6 is IPv4: a mapped peer in a trusted IPv4 range is
            // trusted, and a mapped client comes back as IPv4.
            (
                &proxies,
                "::ffff:10.0.0.1",
                &["198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &["::ffff:198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &["198.51.100.1, ::ffff:10.0.0.2"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "::ffff:203.0.113.9",
                &["198.51.100.1"],
                "203.0.113.9",
            ),
            // The one-hop shorthand: the rightmost entry if it parses, else the peer.
            (&ForwardedFor::OneHop, "203.0.113.9", &[], "203.0.113.9"),
            (
                &ForwardedFor::OneHop,
                "203.0.113.9",
                &["198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &ForwardedFor::OneHop,
                "203.0.113.9",
                &["10.0.0.1, 198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &ForwardedFor::OneHop,
                "203.0.113.9",
                &["198.51.100.1", "192.0.2.5:80"],
                "192.0.2.5",
            ),
            (
                &ForwardedFor::OneHop,
                "203.0.113.9",
                &["198.51.100.1, nope"],
                "203.0.113.9",
            ),
            // Ignored: the peer, whatever the header says.
            (
                &ForwardedFor::Ignored,
                "203.0.113.9",
                &["198.51.100.1"],
                "203.0.113.9",
            ),
            (
                &ForwardedFor::Ignored,
                "::ffff:203.0.113.9",
                &[],
                "203.0.113.9",
            ),
        ];
        for (rule, peer, lines, expected) in cases {
            let headers = lines.iter().map(|line| line.as_bytes());
            assert_eq!(
                client_address(rule, headers, ip(peer)),
                ip(expected),
                "{rule:?}, peer {peer}, X-Forwarded-For {lines:?}"
            );
        }
    }

    /// Bytes that are not ASCII, as a client may write them left of the address
    /// its proxy appends, or as a broken hop may write them further right.
    #[test]
    fn bytes_that_are_not_ascii_spoil_only_their_own_entry() {
        let proxies = trusted("10.0.0.0/8, 192.168.1.1, 2001:db8:ffff::/48");
        let one_hop = ForwardedFor::OneHop;
        let ignored = ForwardedFor::Ignored;
        // (rule, peer, X-Forwarded-For lines as raw bytes, expected client)
        let cases: &[(&ForwardedFor, &str, &[&[u8]], &str)] = &[
            // Left of the client's address: its identity is unchanged.
            (
                &proxies,
                "10.0.0.1",
                &[b"\xff, 198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &[b"\xff198.51.100.9, 198.51.100.1, 10.0.0.2"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &[b"\xff", b"198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &[b"caf\xc3\xa9, \x80\x80, 198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &[b"\xfe\xff", b"\xff, 198.51.100.1, 10.0.0.2", b"10.0.0.3"],
                "198.51.100.1",
            ),
            // Spaces and tabs around an entry are not part of it; other bytes are.
            (
                &proxies,
                "10.0.0.1",
                &[b" \t198.51.100.1\t "],
                "198.51.100.1",
            ),
            (&proxies, "10.0.0.1", &[b"\xc2\xa0198.51.100.1"], "10.0.0.1"),
            // Between trusted hops: the walk ends at the last trusted hop.
            (
                &proxies,
                "10.0.0.1",
                &[b"198.51.100.1, \xff, 10.0.0.2"],
                "10.0.0.2",
            ),
            (
                &proxies,
                "10.0.0.1",
                &[b"198.51.100.1", b"\xff198.51.100.2", b"10.0.0.2"],
                "10.0.0.2",
            ),
            (
                &proxies,
                "10.0.0.1",
                &[b"198.51.100.1, 10.0.0.2\xff"],
                "10.0.0.1",
            ),
            // As the rightmost untrusted entry: the walk ends at the last trusted hop.
            (
                &proxies,
                "10.0.0.1",
                &[b"198.51.100.1, \xff198.51.100.7"],
                "10.0.0.1",
            ),
            (
                &proxies,
                "10.0.0.1",
                &[b"198.51.100.1, 198.51.100.7\xff, 10.0.0.2"],
                "10.0.0.2",
            ),
            (&proxies, "10.0.0.1", &[b"\xff,"], "10.0.0.1"),
            // An untrusted peer is the client, whatever the header holds.
            (
                &proxies,
                "203.0.113.9",
                &[b"\xff, 198.51.100.1"],
                "203.0.113.9",
            ),
            // One hop: only the rightmost entry counts.
            (
                &one_hop,
                "203.0.113.9",
                &[b"\xff, 198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &one_hop,
                "203.0.113.9",
                &[b"\xff", b"198.51.100.1"],
                "198.51.100.1",
            ),
            (
                &one_hop,
                "203.0.113.9",
                &[b"198.51.100.1, \xff"],
                "203.0.113.9",
            ),
            (
                &one_hop,
                "203.0.113.9",
                &[b"\xff198.51.100.1"],
                "203.0.113.9",
            ),
            (
                &one_hop,
                "203.0.113.9",
                &[b"198.51.100.1\xff"],
                "203.0.113.9",
            ),
            // Ignored: the peer, whatever the bytes.
            (
                &ignored,
                "203.0.113.9",
                &[b"\xff, 198.51.100.1"],
                "203.0.113.9",
            ),
            (
                &ignored,
                "203.0.113.9",
                &[b"198.51.100.1\xff"],
                "203.0.113.9",
            ),
        ];
        for (rule, peer, lines, expected) in cases {
            assert_eq!(
                client_address(rule, lines.iter().copied(), ip(peer)),
                ip(expected),
                "{rule:?}, peer {peer}, X-Forwarded-For {:?}",
                lines
                    .iter()
                    .map(|line| line.escape_ascii().to_string())
                    .collect::<Vec<_>>()
            );
        }
    }

    /// An entry as a header may hold it: an address (trusted or not, with or
    /// without a port), a word, nothing, or any bytes a header value allows.
    fn entry() -> impl Strategy<Value = Vec<u8>> {
        let header_byte = prop_oneof![Just(b'\t'), 0x20_u8..=0x7e, 0x80_u8..=0xff];
        prop_oneof![
            prop::sample::select(vec![
                "198.51.100.1",
                "198.51.100.2:4711",
                "[2001:db8::7]:80",
                "10.0.0.2",
                "192.168.1.1",
                "2001:db8:ffff::2",
                "::ffff:10.0.0.3",
                "unknown",
                "",
            ])
            .prop_map(|entry| entry.as_bytes().to_vec()),
            prop::collection::vec(header_byte, 0..8),
        ]
    }

    proptest! {
        /// DESIGN §3.2: what a client writes left of the address its proxy
        /// appended never changes its identity, whatever the bytes.
        #[test]
        fn what_is_written_left_of_a_forwarded_client_never_changes_it(
            rule in 0..3_u8,
            peer in prop::sample::select(vec!["10.0.0.1", "203.0.113.9", "2001:db8:ffff::1"]),
            lines in prop::collection::vec(prop::collection::vec(entry(), 1..5), 1..4),
            prefix in prop::collection::vec(entry(), 1..4),
        ) {
            let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1, 2001:db8:ffff::/48")
                .expect("valid list")
                .expect("non-empty list");
            let rule = match rule {
                0 => ForwardedFor::Ignored,
                1 => ForwardedFor::OneHop,
                _ => ForwardedFor::TrustedProxies(proxies.clone()),
            };
            let lines: Vec<Vec<u8>> = lines.iter().map(|entries| entries.join(&b","[..])).collect();
            let peer = ip(peer);
            let client = client_address(&rule, lines.iter().map(Vec::as_slice), peer);
            let forwarded = match &rule {
                ForwardedFor::Ignored => false,
                ForwardedFor::OneHop => client != peer,
                ForwardedFor::TrustedProxies(trusted) => !trusted.contains(client),
            };
            let mut forged = lines.clone();
            forged[0] = [prefix.join(&b","[..]), b",".to_vec(), lines[0].clone()].concat();
            let after = client_address(&rule, forged.iter().map(Vec::as_slice), peer);
            if forwarded {
                prop_assert_eq!(after, client);
            }
        }
    }

    #[test]
    fn a_huge_header_is_walked_only_so_far() {
        let chain = vec!["10.0.0.2"; 10_000].join(", ");
        let line = format!("198.51.100.1, {chain}");
        // The client is beyond the cap, so the walk ends at the farthest trusted hop seen.
        assert_eq!(
            client_address(&trusted("10.0.0.0/8"), [line.as_bytes()], ip("10.0.0.1")),
            ip("10.0.0.2")
        );
        let short = vec!["10.0.0.2"; MAX_FORWARDED_ENTRIES - 1].join(", ");
        let line = format!("198.51.100.1, {short}");
        assert_eq!(
            client_address(&trusted("10.0.0.0/8"), [line.as_bytes()], ip("10.0.0.1")),
            ip("198.51.100.1")
        );
    }

    /// A network holding every address would trust the client itself: whatever it
    /// writes in `X-Forwarded-For` would be believed, and a banned client would be
    /// someone new with every request.
    #[test]
    fn a_network_that_holds_every_address_is_refused() {
        for everyone in ["0.0.0.0/0", "::/0", "10.0.0.0/8, 0.0.0.0/0", "1.2.3.4/0"] {
            let refused = TrustedProxies::parse(everyone).expect_err(everyone);
            assert!(refused.contains("trusts every address"), "{refused}");
        }
        assert!(TrustedProxies::parse("0.0.0.0/1").is_ok());
    }

    #[test]
    fn trusted_proxies_parse_cidrs_and_bare_addresses() {
        let list = TrustedProxies::parse(" 10.0.0.0/8 ,192.168.1.1, 2001:db8::/32,::1")
            .expect("valid")
            .expect("non-empty");
        for inside in ["10.255.0.1", "192.168.1.1", "2001:db8:5::1", "::1"] {
            assert!(list.contains(ip(inside)), "{inside}");
        }
        for outside in ["11.0.0.1", "192.168.1.2", "2001:db9::1", "::2"] {
            assert!(!list.contains(ip(outside)), "{outside}");
        }
        // A host part in a CIDR is allowed and means the network.
        let loose = TrustedProxies::parse("10.1.2.3/16")
            .expect("valid")
            .expect("non-empty");
        assert!(loose.contains(ip("10.1.200.1")));
        assert_eq!(TrustedProxies::parse(""), Ok(None));
        assert_eq!(TrustedProxies::parse("  "), Ok(None));
        for bad in [
            "10.0.0.0/33",
            "proxy.internal",
            "10.0.0.0/8,",
            "10.0.0.0/8,,192.168.0.0/16",
            "::ffff:10.0.0.0/104",
            "10.0.0.1:80",
        ] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
