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

use super::networks::Networks;

/// The longest key a block or a list entry may name, in bytes: longer than any key the service's
/// check API or RLS accept, so any key they decide can be blocked or listed.
pub const MAX_CONTROL_KEY_BYTES: usize = 64 * 1024;

/// The most key bytes all blocks and list entries hold together, so that long keys cannot grow
/// memory (here and in a shared store) as far as [`MAX_CONTROLS`] of them would.
pub const MAX_CONTROL_BYTES: usize = 16 * 1024 * 1024;

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

/// A list entry that looks like a network but is not one (`10.0.0.0/33`, `1.2.3.4/32/1`,
/// `10.0.0.256`): taken as a key, it would never match the addresses the operator meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{entry:?} looks like a network but is not one: write an address (203.0.113.7, 2001:db8::1) or a CIDR whose prefix fits its family (203.0.113.0/24 with /0 to /32, 2001:db8::/32 with /0 to /128)"
)]
pub struct EntryError {
    /// The entry as given.
    pub entry: String,
}

/// Whether `text` is written as an address or a network would be: digits and dots (an IPv4
/// address), or hex digits and colons with at least two colons (IPv6), before any `/`; or
/// anything before a `/` that parses as an address.
fn looks_like_network(text: &str) -> bool {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    if prefix.is_some() && IpAddr::from_str(address).is_ok() {
        return true;
    }
    let dotted =
        address.split('.').count() == 4 && address.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let coloned = address.bytes().filter(|b| *b == b':').count() >= 2
        && address
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
    dotted || coloned
}

impl ListEntry {
    /// A network when `text` is an address or a CIDR (`10.0.0.0/8`, `2001:db8::/32`), kept in its
    /// canonical form with host bits cleared; else a key.
    ///
    /// # Errors
    ///
    /// [`EntryError`] when `text` is written like an address or a network but is not a valid
    /// one, so that an operator's typo is refused rather than listed as a key.
    pub fn parse(text: &str) -> Result<ListEntry, EntryError> {
        if let Ok(network) = IpNet::from_str(text) {
            return Ok(ListEntry::Network(network.trunc()));
        }
        if let Ok(address) = IpAddr::from_str(text) {
            return Ok(ListEntry::Network(IpNet::from(address)));
        }
        if looks_like_network(text) {
            return Err(EntryError {
                entry: text.to_owned(),
            });
        }
        Ok(ListEntry::Key(text.as_bytes().to_vec()))
    }

    /// The entry as bytes: the key itself, or the network's CIDR text.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            ListEntry::Key(key) => key.clone(),
            ListEntry::Network(network) => network.to_string().into_bytes(),
        }
    }

    /// [`ListEntry::parse`] of bytes, as a store keeps them: bytes that are not UTF-8, or that
    /// [`ListEntry::parse`] refuses (kept by an older version), are a key.
    pub fn from_bytes(bytes: &[u8]) -> ListEntry {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| ListEntry::parse(text).ok())
            .unwrap_or_else(|| ListEntry::Key(bytes.to_vec()))
    }
}

impl fmt::Display for ListEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListEntry::Key(key) => write!(f, "{}", crate::client_key::Escaped(key)),
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
    networks: Networks,
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
            ListEntry::Network(_) => self.networks.insert(listed),
        }
    }

    fn get(&self, entry: &ListEntry) -> Option<&Listed> {
        match entry {
            ListEntry::Key(key) => self.keys.get(key),
            ListEntry::Network(network) => self.networks.get(network),
        }
    }

    fn remove(&mut self, entry: &ListEntry) -> Option<Listed> {
        match entry {
            ListEntry::Key(key) => self.keys.remove(key),
            ListEntry::Network(network) => self.networks.remove(network),
        }
    }

    fn retain(&mut self, keep: impl Fn(&Listed) -> bool) {
        self.keys.retain(|_, listed| keep(listed));
        self.networks.retain(keep);
    }

    /// Whether `key` is listed: exactly, or as an address (or a network, as an IPv6 key
    /// grouped by prefix is) inside a listed network.
    fn holds_key(&self, key: &[u8]) -> bool {
        if self.keys.contains_key(key) {
            return true;
        }
        if self.networks.len() == 0 || key.len() > 50 {
            return false;
        }
        let Ok(text) = std::str::from_utf8(key) else {
            return false;
        };
        if let Ok(address) = IpAddr::from_str(text) {
            return self.networks.holds_address(address);
        }
        IpNet::from_str(text).is_ok_and(|inner| self.networks.holds_network(&inner))
    }

    fn holds_address(&self, address: IpAddr) -> bool {
        self.networks.holds_address(address)
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

    /// The bytes of every key blocked or listed (a network counts its text).
    pub(crate) fn key_bytes(&self) -> usize {
        let blocked: usize = self.blocks.keys().map(|(_, key)| key.len()).sum();
        let listed: usize = self
            .lists
            .iter()
            .flat_map(|set| set.keys.keys())
            .map(Vec::len)
            .sum();
        // A network's text is at most 43 bytes.
        let networks: usize = self.lists.iter().map(|set| set.networks.len() * 43).sum();
        blocked + listed + networks
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
            let mut list: Vec<Listed> = set
                .keys
                .values()
                .chain(set.networks.values())
                .cloned()
                .collect();
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
            set.retain(&keep);
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
            entry: ListEntry::parse(text).unwrap(),
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
            Ok(ListEntry::Network("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            ListEntry::parse("::1"),
            Ok(ListEntry::Network("::1/128".parse().unwrap()))
        );
        for key in ["user-7", "1.2.3", "a:b", "user:1:2", "10.0.0.1x", "café/1"] {
            assert_eq!(
                ListEntry::parse(key),
                Ok(ListEntry::Key(key.as_bytes().to_vec())),
                "{key}"
            );
        }
    }

    #[test]
    fn entries_written_like_networks_must_be_networks() {
        for typo in [
            "10.0.0.0/33",
            "1.2.3.4/32/1",
            "10.0.0.256",
            "10.0.0.0/",
            "10.0.0.0/8x",
            "2001:db8::/129",
            "2001:db8::1::2",
            "::1/-1",
        ] {
            assert!(ListEntry::parse(typo).is_err(), "{typo}");
        }
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
            set.unlist(List::Allow, &ListEntry::parse("monitor").unwrap())
                .is_some()
        );
        assert_eq!(
            set.screen(pairs(&[("per-user", "monitor")]), || 0),
            Screen::Pass
        );
    }
}
