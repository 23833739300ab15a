//! The client's IP address: the TCP peer, or, behind trusted proxies, the rightmost address in
//! `X-Forwarded-For` / `Forwarded` that no trusted proxy added.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;
use http::header::FORWARDED;
use http::request::Parts;
use ipnet::IpNet;

use super::{KeyError, KeyExtractor, peer_addr};

/// The most header entries examined for one request, whatever the headers' length: the walk
/// starts from the right, where our own proxies' entries are, so real chains need only a few.
pub const DEFAULT_MAX_HOPS: usize = 32;

/// Which header carries the chain of addresses behind trusted proxies. Only the configured one
/// is read, so a client cannot pick the one that suits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (de facto; each proxy appends its peer).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// Keys requests by client IP address.
///
/// Without trusted proxies (the default), the key is the TCP peer and forwarding headers are
/// ignored: anyone can write them. With [`ClientIp::trusted_proxies`], a request whose peer is
/// trusted is keyed by walking the configured header from the right, over every line of it in
/// order: trusted addresses are skipped, and the first untrusted one is the client. An entry that
/// is malformed, `unknown` or obfuscated (`_hidden`) ends the walk at the nearest trusted hop
/// instead of reaching further left, where a client could have written anything. If every entry
/// is trusted, the leftmost one is the client. At most [`DEFAULT_MAX_HOPS`] entries are read.
///
/// IPv6 clients are grouped by prefix (default /64, the block one subscriber usually holds, so an
/// attacker cannot get 2^64 fresh keys); IPv4 clients by /32. `::ffff:a.b.c.d` counts as IPv4.
///
/// The peer address comes from axum's `ConnectInfo<SocketAddr>` (serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`) or a [`PeerAddr`](super::PeerAddr)
/// extension; without either, extraction fails with [`KeyError::NoPeerAddress`].
#[derive(Debug, Clone)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    max_hops: usize,
}

impl Default for ClientIp {
    fn default() -> Self {
        ClientIp {
            trusted: Vec::new(),
            header: ForwardedHeader::default(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_hops: DEFAULT_MAX_HOPS,
        }
    }
}

impl ClientIp {
    /// The TCP peer's address, no proxy trusted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts these networks as proxies that append the address they saw.
    #[must_use]
    pub fn trusted_proxies(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted = networks.into_iter().map(|n| n.trunc()).collect();
        self
    }

    /// Reads this header behind trusted proxies (default `X-Forwarded-For`).
    #[must_use]
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Groups IPv6 clients by this prefix length (default 64; at most 128).
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// Groups IPv4 clients by this prefix length (default 32; at most 32).
    #[must_use]
    pub fn ipv4_prefix(mut self, bits: u8) -> Self {
        self.ipv4_prefix = bits.min(32);
        self
    }

    /// Reads at most this many header entries per request (default [`DEFAULT_MAX_HOPS`], at least 1).
    #[must_use]
    pub fn max_hops(mut self, hops: usize) -> Self {
        self.max_hops = hops.max(1);
        self
    }

    /// Which list, if any, holds the client of `request` (the address the trusted proxies
    /// vouch for, else the peer): what a route asks before anything else, policies or none.
    /// `None` when the request carries no peer address.
    pub fn screen(&self, limiter: &floodwall::Limiter, request: &Parts) -> Option<floodwall::List> {
        let peer = peer_addr(request)?;
        limiter.screen_client(self.resolve(peer.ip(), &request.headers))
    }

    /// The client address for a request from `peer` with these headers, before grouping.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => FORWARDED.as_str(),
        };
        let mut nearest_trusted = peer;
        let mut examined = 0;
        // Lines in order form one list; walk it from the end.
        for line in headers.get_all(name).iter().rev() {
            let Ok(line) = line.to_str() else {
                return nearest_trusted;
            };
            for entry in line.rsplit(',') {
                examined += 1;
                if examined > self.max_hops {
                    return nearest_trusted;
                }
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                let parsed = match self.header {
                    ForwardedHeader::XForwardedFor => parse_node(entry),
                    ForwardedHeader::Forwarded => parse_forwarded_element(entry),
                };
                let Some(address) = parsed else {
                    return nearest_trusted;
                };
                if !self.is_trusted(address) {
                    return address;
                }
                nearest_trusted = address;
            }
        }
        nearest_trusted
    }

    /// The key for a client address: the address, or its network when grouped.
    pub fn key_for(&self, address: IpAddr) -> String {
        let address = address.to_canonical();
        let (prefix, whole) = match address {
            IpAddr::V4(_) => (self.ipv4_prefix, 32),
            IpAddr::V6(_) => (self.ipv6_prefix, 128),
        };
        if prefix == whole {
            return address.to_string();
        }
        // The builder clamps both prefixes, so the network always exists.
        IpNet::new(address, prefix).map_or_else(
            |_| address.to_string(),
            |network| network.trunc().to_string(),
        )
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted
            .iter()
            .any(|network| network.contains(&address))
    }
}

impl KeyExtractor for ClientIp {
    fn extract(&self, request: &Parts) -> Result<Vec<u8>, KeyError> {
        let peer = peer_addr(request).ok_or(KeyError::NoPeerAddress)?;
        let client = self.resolve(peer.ip(), &request.headers);
        Ok(self.key_for(client).into_bytes())
    }
}

/// One `X-Forwarded-For` entry, or the value of a `Forwarded` `for=` after unquoting:
/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return address
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| IpAddr::V6(a).to_canonical());
    }
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    // An IPv4 address with a port; a bare IPv6 address never gets here with one colon.
    let (address, port) = node.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    address.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// One `Forwarded` element (`for=…;proto=…;by=…`): the address in its `for` parameter. `None`
/// for a missing `for`, `unknown`, an obfuscated identifier, or anything malformed.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let node = match value.strip_prefix('"') {
        Some(quoted) => {
            let inner = quoted.strip_suffix('"')?;
            // Escapes never occur in an address; one means this is not one.
            if inner.contains(['"', '\\']) {
                return None;
            }
            inner
        }
        None => value,
    };
    // `unknown` and `_obfuscated` name no address: the walk must stop there.
    parse_node(node)
}

/// For tests and fuzzing: parses one `X-Forwarded-For` entry.
#[doc(hidden)]
pub fn parse_forwarded_for_entry(entry: &str) -> Option<IpAddr> {
    parse_node(entry.trim())
}

/// For tests and fuzzing: parses one `Forwarded` element.
#[doc(hidden)]
pub fn parse_forwarded_entry(element: &str) -> Option<IpAddr> {
    parse_forwarded_element(element.trim())
}
