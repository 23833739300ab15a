//! The networks of one list, looked up in time that does not grow with the list: a check asks
//! "is this address in any listed network?" on every request, and a list may hold thousands.
//!
//! Two networks in CIDR form are either disjoint or one holds the other, so the networks that no
//! other listed network holds (the outermost) are disjoint ranges; sorted by first address, the
//! one that could hold an address is the last that starts at or before it. Adding or removing a
//! network changes only the ranges inside it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Bound;

use ipnet::IpNet;

use super::set::{ListEntry, Listed};

/// Where a network sits: its family (0 for IPv4, 1 for IPv6), first address and prefix length.
/// In this order a network comes before the networks it holds.
type Place = (usize, u128, u8);

/// A network's family, first and last address.
fn span(network: &IpNet) -> (usize, u128, u128) {
    match network {
        IpNet::V4(v4) => (
            0,
            u128::from(u32::from(v4.network())),
            u128::from(u32::from(v4.broadcast())),
        ),
        IpNet::V6(v6) => (1, u128::from(v6.network()), u128::from(v6.broadcast())),
    }
}

fn place(network: &IpNet) -> Place {
    let (family, first, _) = span(network);
    (family, first, network.prefix_len())
}

/// An address's family and value; an IPv4 address seen over an IPv6 socket is the IPv4 one.
fn point(address: IpAddr) -> (usize, u128) {
    match address {
        IpAddr::V4(v4) => (0, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (0, u128::from(u32::from(v4))),
            None => (1, u128::from(v6)),
        },
    }
}

/// The listed networks of one list.
#[derive(Debug, Default)]
pub(super) struct Networks {
    listed: BTreeMap<Place, Listed>,
    /// Per family, the outermost networks: first address to last.
    outer: [BTreeMap<u128, u128>; 2],
}

impl Networks {
    pub(super) fn len(&self) -> usize {
        self.listed.len()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Listed> {
        self.listed.values()
    }

    /// Whether an outermost network of `family` holds `first..=last`.
    fn covers(&self, family: usize, first: u128, last: u128) -> bool {
        self.outer[family]
            .range(..=first)
            .next_back()
            .is_some_and(|(_, end)| *end >= last)
    }

    /// Lists `listed` (a network entry), replacing the same network's entry.
    pub(super) fn insert(&mut self, listed: Listed) {
        let ListEntry::Network(network) = &listed.entry else {
            return;
        };
        let (family, first, last) = span(network);
        let at = place(network);
        if self.listed.insert(at, listed).is_some() || self.covers(family, first, last) {
            return;
        }
        // The outermost networks inside the new one are held by it now.
        let inside: Vec<u128> = self.outer[family]
            .range(first..=last)
            .map(|(start, _)| *start)
            .collect();
        for start in inside {
            self.outer[family].remove(&start);
        }
        self.outer[family].insert(first, last);
    }

    pub(super) fn get(&self, network: &IpNet) -> Option<&Listed> {
        self.listed.get(&place(network))
    }

    pub(super) fn remove(&mut self, network: &IpNet) -> Option<Listed> {
        let removed = self.listed.remove(&place(network))?;
        let (family, first, last) = span(network);
        if self.outer[family].get(&first) == Some(&last) {
            self.outer[family].remove(&first);
            self.uncover(family, first, last);
        }
        Some(removed)
    }

    /// Makes outermost the networks inside `first..=last` that no other one inside it holds.
    fn uncover(&mut self, family: usize, first: u128, last: u128) {
        let mut reach: Option<u128> = None;
        let within = (
            Bound::Included((family, first, 0)),
            Bound::Included((family, last, u8::MAX)),
        );
        for (_, listed) in self.listed.range(within) {
            let ListEntry::Network(network) = &listed.entry else {
                continue;
            };
            let (_, start, end) = span(network);
            if reach.is_some_and(|reach| start <= reach) {
                continue;
            }
            self.outer[family].insert(start, end);
            reach = Some(end);
        }
    }

    /// Keeps only the entries for which `keep` holds.
    pub(super) fn retain(&mut self, keep: impl Fn(&Listed) -> bool) {
        self.listed.retain(|_, listed| keep(listed));
        self.outer = Default::default();
        self.uncover(0, 0, u128::MAX);
        self.uncover(1, 0, u128::MAX);
    }

    /// Whether a listed network holds `address`.
    pub(super) fn holds_address(&self, address: IpAddr) -> bool {
        let (family, value) = point(address);
        self.covers(family, value, value)
    }

    /// Whether a listed network holds all of `network`.
    pub(super) fn holds_network(&self, network: &IpNet) -> bool {
        let (family, first, last) = span(network);
        self.covers(family, first, last)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::controls::{List, Provenance};

    fn listed(network: IpNet) -> Listed {
        Listed {
            list: List::Deny,
            entry: ListEntry::Network(network),
            made: Provenance {
                by: "test".to_owned(),
                at_ms: 0,
            },
            from_config: false,
        }
    }

    /// Networks in a small space (10.0.0.0/22 and 2001:db8::/118), so that they nest often.
    fn network() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (0u32..1024, 22u8..=32).prop_map(|(host, prefix)| {
                let address = std::net::Ipv4Addr::from(0x0A00_0000 | host);
                IpNet::V4(ipnet::Ipv4Net::new_assert(address, prefix).trunc())
            }),
            (0u128..1024, 118u8..=128).prop_map(|(host, prefix)| {
                let base: u128 = 0x2001_0db8 << 96;
                let address = std::net::Ipv6Addr::from(base | host);
                IpNet::V6(ipnet::Ipv6Net::new_assert(address, prefix).trunc())
            }),
        ]
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u32..1100)
                .prop_map(|host| IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 | host))),
            (0u32..1100).prop_map(|host| {
                let mapped = std::net::Ipv4Addr::from(0x0A00_0000 | host).to_ipv6_mapped();
                IpAddr::V6(mapped)
            }),
            (0u128..1100).prop_map(|host| IpAddr::from(std::net::Ipv6Addr::from(
                (0x2001_0db8 << 96) | host
            ))),
        ]
    }

    /// The model: every listed network, asked one by one.
    fn model_holds(model: &[IpNet], address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        model.iter().any(|network| network.contains(&address))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn lookups_agree_with_asking_every_network(
            steps in proptest::collection::vec((any::<bool>(), network()), 1..80),
            probes in proptest::collection::vec(address(), 40),
            inner in proptest::collection::vec(network(), 10),
        ) {
            let mut networks = Networks::default();
            let mut model: Vec<IpNet> = Vec::new();
            for (add, network) in steps {
                if add {
                    networks.insert(listed(network));
                    if !model.contains(&network) {
                        model.push(network);
                    }
                } else {
                    let removed = networks.remove(&network).is_some();
                    let at = model.iter().position(|n| *n == network);
                    prop_assert_eq!(removed, at.is_some());
                    if let Some(at) = at {
                        model.swap_remove(at);
                    }
                }
                prop_assert_eq!(networks.len(), model.len());
                for address in &probes {
                    prop_assert_eq!(
                        networks.holds_address(*address),
                        model_holds(&model, *address),
                        "{} with {:?}", address, model
                    );
                }
                for network in &inner {
                    prop_assert_eq!(
                        networks.holds_network(network),
                        model.iter().any(|listed| listed.contains(network)),
                        "{} with {:?}", network, model
                    );
                }
            }
            let keep_v4 = |listed: &Listed| matches!(listed.entry, ListEntry::Network(IpNet::V4(_)));
            networks.retain(keep_v4);
            model.retain(|network| matches!(network, IpNet::V4(_)));
            for address in &probes {
                prop_assert_eq!(networks.holds_address(*address), model_holds(&model, *address));
            }
        }
    }

    #[test]
    fn ten_thousand_networks_answer_like_the_model() {
        let mut networks = Networks::default();
        let mut model = Vec::new();
        for i in 0u32..10_000 {
            // /24s spread over 10.0.0.0/8, every tenth a /16 holding some of them.
            let prefix = if i % 10 == 0 { 16 } else { 24 };
            let address = std::net::Ipv4Addr::from(
                0x0A00_0000 | (i.wrapping_mul(2_654_435_761) & 0x00FF_FF00),
            );
            let network = IpNet::V4(ipnet::Ipv4Net::new_assert(address, prefix).trunc());
            networks.insert(listed(network));
            model.push(network);
        }
        for i in 0u32..20_000 {
            let address = IpAddr::from(std::net::Ipv4Addr::from(
                i.wrapping_mul(40_503) ^ 0x0A00_0000,
            ));
            assert_eq!(
                networks.holds_address(address),
                model_holds(&model, address),
                "{address}"
            );
        }
    }
}
