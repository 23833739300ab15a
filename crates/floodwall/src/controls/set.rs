//! What operators decided about clients, as plain data: blocks of one key under one policy until
//! a time, and allow and deny lists of keys and networks. No clock and no I/O: the time is
//! given, and the store shell keeps it in step with other instances.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use hashbrown::{Equivalent, HashMap};
use ipnet::IpNet;
use smallvec::SmallVec;

/// The longest key a block or a list entry may name, in bytes.
pub const MAX_CONTROL_KEY_BYTES: usize = 256;

/// The most blocks and list entries kept at once (the configured list entries included), so a
/// flood of admin calls cannot grow memory without bound.
pub const MAX_CONTROLS: usize = 10_000;

/// Which list an entry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum List {
    /// Never limited: its checks are admitted without counting.
    Allow,
    /// Always refused, whatever the policies say ([`Source::DenyList`](crate::Source)).
    Deny,
}

impl List {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            List::Allow => "allow",
            List::Deny => "deny",
        }
    }

    /// `allow` or `deny`, as [`List::as_str`] writes them.
    pub fn parse(text: &str) -> Option<List> {
        match text {
            "allow" => Some(List::Allow),
            "deny" => Some(List::Deny),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            List::Allow => 0,
            List::Deny => 1,
        }
    }
}

/// One entry of a list: a client key exactly, or a network, which holds every key that is an
/// address in it (and every address a caller screens with
/// [`Limiter::screen_client`](crate::Limiter::screen_client)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListEntry {
    /// A key, compared byte for byte.
    Key(Vec<u8>),
    /// A network in CIDR form; a bare address is its own /32 or /128.
    Network(IpNet),
}

impl ListEntry {
    /// A network when `text` is an address or a CIDR (`10.0.0.0/8`, `2001:db8::/32`), else a
    /// key. The network is kept in its canonical form, host bits cleared.
    pub fn parse(text: &str) -> ListEntry {
        if let Ok(network) = IpNet::from_str(text) {
            return ListEntry::Network(network.trunc());
        }
        match IpAddr::from_str(text) {
            Ok(address) => ListEntry::Network(IpNet::from(address)),
            Err(_) => ListEntry::Key(text.as_bytes().to_vec()),
        }
    }

    /// The entry as bytes: the key itself, or the network's CIDR text.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ListEntry::Key(key) => key.clone(),
            ListEntry::Network(network) => network.to_string().into_bytes(),
        }
    }

    /// [`ListEntry::parse`] of bytes; a key that is not UTF-8 is a key.
    pub fn from_bytes(bytes: &[u8]) -> ListEntry {
        match std::str::from_utf8(bytes) {
            Ok(text) => ListEntry::parse(text),
            Err(_) => ListEntry::Key(bytes.to_vec()),
        }
    }
}

impl fmt::Display for ListEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListEntry::Key(key) => f.write_str(&String::from_utf8_lossy(key)),
            ListEntry::Network(network) => write!(f, "{network}"),
        }
    }
}

/// Who made a control and when, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The name the operator acted under (an admin token's name), or `config` for an entry of
    /// the configuration file.
    pub by: String,
    /// When it was made.
    pub at_ms: u64,
}

/// A key blocked under one policy until a time: every check of it is denied until then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The policy's name.
    pub policy: String,
    /// The client key.
    pub key: Vec<u8>,
    /// When the block ends, in milliseconds since the Unix epoch.
    pub until_ms: u64,
    /// Who blocked it, and when.
    pub made: Provenance,
}

/// An entry of a list, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The list it is on.
    pub list: List,
    /// The entry.
    pub entry: ListEntry,
    /// Who listed it, and when.
    pub made: Provenance,
    /// Whether it comes from the configuration file: such an entry is changed there, not at run
    /// time.
    pub from_config: bool,
}

/// How a check is to be answered, before any store is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Screen {
    /// Decide as usual.
    Pass,
    /// A key (or the client's address) is deny-listed: refuse all of it.
    Deny,
    /// Some pairs are allow-listed (`true` at their index): decide only the others.
    Allow(SmallVec<[bool; 2]>),
    /// Some pairs are blocked: refuse all of it; each blocked pair's wait at its index.
    Blocked(SmallVec<[Option<Duration>; 2]>),
}

#[derive(Debug, Default)]
struct ListSet {
    keys: HashMap<Vec<u8>, Listed>,
    networks: Vec<Listed>,
}

impl ListSet {
    fn len(&self) -> usize {
        self.keys.len() + self.networks.len()
    }

    fn insert(&mut self, listed: Listed) {
        match &listed.entry {
            ListEntry::Key(key) => {
                self.keys.insert(key.clone(), listed);
            }
            ListEntry::Network(_) => {
                match self.networks.iter_mut().find(|n| n.entry == listed.entry) {
                    Some(existing) => *existing = listed,
                    None => self.networks.push(listed),
                }
            }
        }
    }

    fn get(&self, entry: &ListEntry) -> Option<&Listed> {
        match entry {
            ListEntry::Key(key) => self.keys.get(key),
            ListEntry::Network(_) => self.networks.iter().find(|n| &n.entry == entry),
        }
    }

    fn remove(&mut self, entry: &ListEntry) -> Option<Listed> {
        match entry {
            ListEntry::Key(key) => self.keys.remove(key),
            ListEntry::Network(_) => {
                let at = self.networks.iter().position(|n| &n.entry == entry)?;
                Some(self.networks.swap_remove(at))
            }
        }
    }

    /// Whether `key` is listed: exactly, or as an address (or a network, as an IPv6 key
    /// grouped by prefix is) inside a listed network.
    fn holds_key(&self, key: &[u8]) -> bool {
        if self.keys.contains_key(key) {
            return true;
        }
        if self.networks.is_empty() || key.len() > 50 {
            return false;
        }
        let Ok(text) = std::str::from_utf8(key) else {
            return false;
        };
        if let Ok(address) = IpAddr::from_str(text) {
            return self.holds_address(address);
        }
        IpNet::from_str(text).is_ok_and(|inner| {
            self.networks.iter().any(|listed| match &listed.entry {
                ListEntry::Network(network) => network.contains(&inner),
                ListEntry::Key(_) => false,
            })
        })
    }

    fn holds_address(&self, address: IpAddr) -> bool {
        // An IPv4 client seen over an IPv6 socket is the IPv4 address.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        self.networks.iter().any(|listed| match &listed.entry {
            ListEntry::Network(network) => network.contains(&address),
            ListEntry::Key(_) => false,
        })
    }
}

/// A block's (policy, key) borrowed from a check: found in the map without allocating. It
/// hashes as the owned pair does (`String` as `str`, `Vec<u8>` as `[u8]`).
#[derive(Hash)]
struct PairRef<'k>(&'k str, &'k [u8]);

impl Equivalent<(String, Vec<u8>)> for PairRef<'_> {
    fn equivalent(&self, key: &(String, Vec<u8>)) -> bool {
        self.0 == key.0 && self.1 == key.1.as_slice()
    }
}

/// Blocks and lists: the configured entries and the ones made at run time.
#[derive(Debug, Default)]
pub(crate) struct ControlSet {
    blocks: HashMap<(String, Vec<u8>), Block>,
    lists: [ListSet; 2],
}

impl ControlSet {
    /// Whether nothing is blocked or listed: every check passes without a look.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.blocks.len() + self.lists.iter().map(ListSet::len).sum::<usize>()
    }

    pub(crate) fn block(&mut self, block: Block) {
        self.blocks
            .insert((block.policy.clone(), block.key.clone()), block);
    }

    pub(crate) fn unblock(&mut self, policy: &str, key: &[u8]) -> Option<Block> {
        self.blocks.remove(&PairRef(policy, key))
    }

    pub(crate) fn list(&mut self, listed: Listed) {
        self.lists[listed.list.index()].insert(listed);
    }

    pub(crate) fn listed(&self, list: List, entry: &ListEntry) -> Option<&Listed> {
        self.lists[list.index()].get(entry)
    }

    pub(crate) fn unlist(&mut self, list: List, entry: &ListEntry) -> Option<Listed> {
        self.lists[list.index()].remove(entry)
    }

    /// The blocks still in force at `now_ms`, soonest to end first.
    pub(crate) fn blocks(&self, now_ms: u64) -> Vec<Block> {
        let mut blocks: Vec<Block> = self
            .blocks
            .values()
            .filter(|block| block.until_ms > now_ms)
            .cloned()
            .collect();
        blocks
            .sort_by(|a, b| (a.until_ms, &a.policy, &a.key).cmp(&(b.until_ms, &b.policy, &b.key)));
        blocks
    }

    /// Every list entry, allow list first, each list in entry order.
    pub(crate) fn entries(&self) -> Vec<Listed> {
        let mut entries = Vec::with_capacity(self.len());
        for set in &self.lists {
            let mut list: Vec<Listed> = set.keys.values().chain(&set.networks).cloned().collect();
            list.sort_by_key(|listed| listed.entry.to_bytes());
            entries.extend(list);
        }
        entries
    }

    /// Keeps only the entries for which `keep` holds, and the blocks only if `blocks`.
    pub(crate) fn retain(&mut self, blocks: bool, keep: impl Fn(&Listed) -> bool) {
        if !blocks {
            self.blocks.clear();
        }
        for set in &mut self.lists {
            set.keys.retain(|_, listed| keep(listed));
            set.networks.retain(|listed| keep(listed));
        }
    }

    /// Drops the blocks that ended by `now_ms`.
    pub(crate) fn prune(&mut self, now_ms: u64) {
        self.blocks.retain(|_, block| block.until_ms > now_ms);
    }

    /// Which list, if any, holds the client address `address`: deny before allow.
    pub(crate) fn screen_address(&self, address: IpAddr) -> Option<List> {
        [List::Deny, List::Allow]
            .into_iter()
            .find(|list| self.lists[list.index()].holds_address(address))
    }

    /// How to answer a check of `pairs` at `now_ms` (read only when a pair is blocked): a
    /// deny-listed key refuses the whole check, an allow-listed pair is left out of it, and a
    /// blocked pair that is not allow-listed refuses the whole check for as long as its block
    /// lasts.
    pub(crate) fn screen<'k>(
        &self,
        pairs: impl ExactSizeIterator<Item = (&'k str, &'k [u8])> + Clone,
        now_ms: impl Fn() -> u64,
    ) -> Screen {
        let [allow, deny] = &self.lists;
        if deny.len() > 0 && pairs.clone().any(|(_, key)| deny.holds_key(key)) {
            return Screen::Deny;
        }
        let allowed: SmallVec<[bool; 2]> = if allow.len() > 0 {
            pairs.clone().map(|(_, key)| allow.holds_key(key)).collect()
        } else {
            SmallVec::from_elem(false, pairs.len())
        };
        let blocked = |(policy, key): (&str, &[u8])| self.blocks.get(&PairRef(policy, key));
        if !self.blocks.is_empty() && pairs.clone().any(|pair| blocked(pair).is_some()) {
            let now_ms = now_ms();
            let waits: SmallVec<[Option<Duration>; 2]> = pairs
                .zip(&allowed)
                .map(|(pair, listed)| {
                    let block = (!listed).then(|| blocked(pair)).flatten()?;
                    let left = block
                        .until_ms
                        .checked_sub(now_ms)
                        .filter(|left| *left > 0)?;
                    Some(Duration::from_millis(left))
                })
                .collect();
            if waits.iter().any(Option::is_some) {
                return Screen::Blocked(waits);
            }
        }
        if allowed.iter().any(|listed| *listed) {
            Screen::Allow(allowed)
        } else {
            Screen::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made() -> Provenance {
        Provenance {
            by: "ops".to_owned(),
            at_ms: 0,
        }
    }

    fn listed(list: List, text: &str) -> Listed {
        Listed {
            list,
            entry: ListEntry::parse(text),
            made: made(),
            from_config: false,
        }
    }

    fn pairs<'k>(
        pairs: &'k [(&'k str, &'k str)],
    ) -> impl ExactSizeIterator<Item = (&'k str, &'k [u8])> + Clone {
        pairs.iter().map(|(policy, key)| (*policy, key.as_bytes()))
    }

    #[test]
    fn entries_are_networks_when_they_parse_as_addresses() {
        assert_eq!(
            ListEntry::parse("10.1.2.3/8"),
            ListEntry::Network("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            ListEntry::parse("::1"),
            ListEntry::Network("::1/128".parse().unwrap())
        );
        assert_eq!(
            ListEntry::parse("user-7"),
            ListEntry::Key(b"user-7".to_vec())
        );
    }

    #[test]
    fn a_deny_listed_network_refuses_its_addresses_and_its_grouped_prefixes() {
        let mut set = ControlSet::default();
        set.list(listed(List::Deny, "203.0.113.0/24"));
        set.list(listed(List::Deny, "2001:db8::/32"));
        for key in ["203.0.113.9", "2001:db8:1::/64", "2001:db8::7"] {
            assert_eq!(
                set.screen(pairs(&[("p", key)]), || 0),
                Screen::Deny,
                "{key}"
            );
        }
        for key in ["203.0.114.9", "2001:db9::/64", "user", "203.0.113.9x"] {
            assert_eq!(
                set.screen(pairs(&[("p", key)]), || 0),
                Screen::Pass,
                "{key}"
            );
        }
        let mapped: IpAddr = "::ffff:203.0.113.1".parse().unwrap();
        assert_eq!(set.screen_address(mapped), Some(List::Deny));
    }

    #[test]
    fn deny_beats_allow_and_allow_beats_a_block() {
        let mut set = ControlSet::default();
        set.list(listed(List::Allow, "10.0.0.0/8"));
        set.list(listed(List::Deny, "10.9.9.9"));
        set.block(Block {
            policy: "p".to_owned(),
            key: b"10.1.1.1".to_vec(),
            until_ms: 5_000,
            made: made(),
        });
        assert_eq!(set.screen(pairs(&[("p", "10.9.9.9")]), || 0), Screen::Deny);
        assert_eq!(
            set.screen(pairs(&[("p", "10.1.1.1")]), || 0),
            Screen::Allow(SmallVec::from_slice(&[true]))
        );
        assert_eq!(
            set.screen_address("10.9.9.9".parse().unwrap()),
            Some(List::Deny)
        );
    }

    #[test]
    fn a_block_refuses_its_own_policy_and_key_until_it_ends() {
        let mut set = ControlSet::default();
        set.block(Block {
            policy: "p".to_owned(),
            key: b"k".to_vec(),
            until_ms: 5_000,
            made: made(),
        });
        let both = [("q", "k"), ("p", "k")];
        assert_eq!(
            set.screen(pairs(&both), || 1_000),
            Screen::Blocked(SmallVec::from_slice(&[None, Some(Duration::from_secs(4))]))
        );
        assert_eq!(set.screen(pairs(&[("q", "k")]), || 1_000), Screen::Pass);
        assert_eq!(set.screen(pairs(&[("p", "k")]), || 5_000), Screen::Pass);
        set.prune(5_000);
        assert!(set.is_empty());
    }

    #[test]
    fn allow_listed_pairs_are_marked_and_the_rest_decided() {
        let mut set = ControlSet::default();
        set.list(listed(List::Allow, "monitor"));
        assert_eq!(
            set.screen(pairs(&[("per-user", "monitor"), ("global", "all")]), || 0),
            Screen::Allow(SmallVec::from_slice(&[true, false]))
        );
        assert!(
            set.unlist(List::Allow, &ListEntry::parse("monitor"))
                .is_some()
        );
        assert_eq!(
            set.screen(pairs(&[("per-user", "monitor")]), || 0),
            Screen::Pass
        );
    }
}
