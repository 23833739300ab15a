//! The rules of one configuration, compiled for lookup. A domain of `[[rls.rule]]` keeps, per
//! shape (the entry keys in order), its candidates, and the most specific one that matches
//! wins. A domain of an envoyproxy/ratelimit file keeps its descriptor tree and is walked as
//! that service walks it: at each entry the exact value, else the matching wildcard value with
//! the most literal characters (`*` stands for any characters, anywhere and as often as
//! written), else the key alone, never going back; a descriptor is limited only by the node its
//! last entry lands on.

use std::collections::HashMap;
use std::time::Duration;

use floodwall::Policy;

use crate::config::{Config, EntryMatch, ErlDomain, ErlLimit, ErlNode, RlsRule};

/// Every domain's rules.
#[derive(Debug, Default)]
pub(crate) struct RuleBook {
    domains: HashMap<String, Domain>,
}

/// One domain's rules.
#[derive(Debug)]
pub(crate) enum Domain {
    /// `[[rls.rule]]`, by shape: the entry keys joined by NUL (which no configured key holds).
    Rules(HashMap<String, Vec<Rule>>),
    /// An envoyproxy/ratelimit file's tree.
    Envoy(Vec<Node>),
}

/// One rule, its policies resolved.
#[derive(Debug)]
pub(crate) struct Rule {
    entries: Vec<EntryMatch>,
    policies: Vec<Policy>,
    settle: bool,
}

/// One node of an envoyproxy/ratelimit tree, its policy resolved.
#[derive(Debug)]
pub(crate) struct Node {
    key: String,
    value: Value,
    limit: Option<Limit>,
    children: Vec<Node>,
}

#[derive(Debug)]
enum Value {
    Any,
    Exact(String),
    /// A value with `*` in it: the literal pieces between the stars, in order.
    Wildcard(Vec<String>),
}

/// Whether `value` is the pieces of a wildcard with anything (or nothing) in each `*`: the
/// first piece at its start, the last at its end, the others in order between.
fn wildcard_matches(pieces: &[String], value: &str) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return true;
    };
    let Some(mut left) = value.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        // No star at all: the whole value.
        return left.is_empty();
    };
    for piece in middle {
        match left.find(piece.as_str()) {
            Some(at) => left = &left[at + piece.len()..],
            None => return false,
        }
    }
    left.len() >= last.len() && left.ends_with(last.as_str())
}

/// A node's limit: what it does, and its name and the names it replaces.
#[derive(Debug)]
struct Limit {
    kind: LimitKind,
    name: Option<String>,
    replaces: Vec<String>,
}

#[derive(Debug)]
enum LimitKind {
    Policies(Vec<Policy>),
    Unlimited,
    Zero { label: String, period: Duration },
}

/// What limits a matched descriptor beyond its policies: envoyproxy/ratelimit's `unlimited:
/// true` and `requests_per_unit: 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special<'b> {
    /// Never limited; answered with all the remaining a status can say.
    Unlimited,
    /// Every hit over the limit; `label` names it, `period` is its unit.
    Zero { label: &'b str, period: Duration },
}

/// What a descriptor matched: the policies that limit it, its client key, and (for the
/// envoyproxy/ratelimit format) its limit's name, the names it replaces, and what else it is.
#[derive(Debug)]
pub(crate) struct Matched<'b> {
    pub(crate) policies: &'b [Policy],
    pub(crate) key: Vec<u8>,
    pub(crate) name: Option<&'b str>,
    pub(crate) replaces: &'b [String],
    pub(crate) special: Option<Special<'b>>,
    /// Whether the descriptor is a settle: charged, never denied.
    pub(crate) settle: bool,
}

/// How closely an entry matcher fits: an exact value over a prefix (a longer one first) over
/// any value.
fn rank(entry: &EntryMatch) -> (u8, usize) {
    match entry {
        EntryMatch::Exact { .. } => (2, 0),
        EntryMatch::Prefix { prefix, .. } => (1, prefix.len()),
        EntryMatch::Any { .. } => (0, 0),
    }
}

fn node(erl: &ErlNode, config: &Config) -> Node {
    let value = match &erl.value {
        None => Value::Any,
        Some(value) if value.contains('*') => {
            Value::Wildcard(value.split('*').map(str::to_owned).collect())
        }
        Some(value) => Value::Exact(value.clone()),
    };
    let limit = match &erl.limit {
        ErlLimit::None => None,
        ErlLimit::Policy {
            policy,
            name,
            replaces,
        } => Some(Limit {
            kind: LimitKind::Policies(config.policy(policy).cloned().into_iter().collect()),
            name: name.clone(),
            replaces: replaces.clone(),
        }),
        ErlLimit::Unlimited { name, replaces } => Some(Limit {
            kind: LimitKind::Unlimited,
            name: name.clone(),
            replaces: replaces.clone(),
        }),
        ErlLimit::Zero {
            label,
            period,
            name,
            replaces,
        } => Some(Limit {
            kind: LimitKind::Zero {
                label: label.clone(),
                period: *period,
            },
            name: name.clone(),
            replaces: replaces.clone(),
        }),
    };
    Node {
        key: erl.key.clone(),
        value,
        limit,
        children: erl.children.iter().map(|c| node(c, config)).collect(),
    }
}

impl RuleBook {
    /// The rules of `config`'s `[rls]` (its rules and its envoyproxy/ratelimit files), with
    /// their policies.
    pub(crate) fn new(rules: &[RlsRule], envoy: &[ErlDomain], config: &Config) -> Self {
        let mut by_domain: HashMap<String, HashMap<String, Vec<Rule>>> = HashMap::new();
        for rule in rules {
            let shape = shape(rule.descriptor.iter().map(EntryMatch::key));
            let policies = rule
                .policies
                .iter()
                .filter_map(|name| config.policy(name).cloned())
                .collect();
            by_domain
                .entry(rule.domain.clone())
                .or_default()
                .entry(shape)
                .or_default()
                .push(Rule {
                    entries: rule.descriptor.clone(),
                    policies,
                    settle: rule.settle,
                });
        }
        let mut book = RuleBook::default();
        for (domain, mut by_shape) in by_domain {
            // Most specific first, so the first that matches wins; the sort is stable, so rules
            // of equal rank keep file order.
            for rules in by_shape.values_mut() {
                rules.sort_by(|a, b| {
                    let ranks = |rule: &Rule| rule.entries.iter().map(rank).collect::<Vec<_>>();
                    ranks(b).cmp(&ranks(a))
                });
            }
            book.domains.insert(domain, Domain::Rules(by_shape));
        }
        for domain in envoy {
            let nodes = domain.descriptors.iter().map(|n| node(n, config)).collect();
            book.domains
                .insert(domain.domain.clone(), Domain::Envoy(nodes));
        }
        book
    }

    /// The rules of `domain`, if it has any.
    pub(crate) fn domain(&self, domain: &str) -> Option<&Domain> {
        self.domains.get(domain)
    }

    /// The configured domains.
    pub(crate) fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }
}

impl Domain {
    /// What limits the descriptor of `entries` (key, value) in order, if anything, and its
    /// client key: the values its match does not pin.
    pub(crate) fn lookup<'e>(
        &self,
        entries: impl ExactSizeIterator<Item = (&'e str, &'e str)> + Clone,
    ) -> Option<Matched<'_>> {
        match self {
            Domain::Rules(by_shape) => {
                let (rule, key) = lookup_rule(by_shape, entries)?;
                Some(Matched {
                    policies: &rule.policies,
                    key,
                    name: None,
                    replaces: &[],
                    special: None,
                    settle: rule.settle,
                })
            }
            Domain::Envoy(roots) => walk(roots, entries),
        }
    }
}

/// The most specific rule of the descriptor's shape whose entries all match, and its client key.
fn lookup_rule<'b, 'e>(
    by_shape: &'b HashMap<String, Vec<Rule>>,
    entries: impl ExactSizeIterator<Item = (&'e str, &'e str)> + Clone,
) -> Option<(&'b Rule, Vec<u8>)> {
    let rules = by_shape.get(&shape(entries.clone().map(|(key, _)| key)))?;
    let rule = rules.iter().find(|rule| {
        rule.entries
            .iter()
            .zip(entries.clone())
            .all(|(matcher, (_, value))| match matcher {
                EntryMatch::Any { .. } => true,
                EntryMatch::Exact { value: exact, .. } => value == exact,
                EntryMatch::Prefix { prefix, .. } => value.starts_with(prefix.as_str()),
            })
    })?;
    let unpinned = rule
        .entries
        .iter()
        .zip(entries)
        .filter(|(matcher, _)| matcher.keys_the_client())
        .map(|(_, (_, value))| value.as_bytes());
    Some((rule, client_key(unpinned)))
}

/// The envoyproxy/ratelimit walk down a tree.
fn walk<'b, 'e>(
    roots: &'b [Node],
    entries: impl Iterator<Item = (&'e str, &'e str)>,
) -> Option<Matched<'b>> {
    let mut level = roots;
    let mut last: Option<&Node> = None;
    let mut unpinned: Vec<&[u8]> = Vec::new();
    for (key, value) in entries {
        let exact = level
            .iter()
            .find(|n| n.key == key && matches!(&n.value, Value::Exact(v) if v == value));
        let wildcard = || {
            level
                .iter()
                .filter(|n| n.key == key)
                .filter_map(|n| match &n.value {
                    Value::Wildcard(pieces) if wildcard_matches(pieces, value) => {
                        Some((pieces.iter().map(String::len).sum::<usize>(), n))
                    }
                    _ => None,
                })
                .max_by_key(|(literal, _)| *literal)
                .map(|(_, n)| n)
        };
        let any = || {
            level
                .iter()
                .find(|n| n.key == key && matches!(n.value, Value::Any))
        };
        let node = exact.or_else(wildcard).or_else(any)?;
        if !matches!(node.value, Value::Exact(_)) {
            unpinned.push(value.as_bytes());
        }
        last = Some(node);
        level = &node.children;
    }
    let limit = last?.limit.as_ref()?;
    let (policies, special) = match &limit.kind {
        LimitKind::Policies(policies) => (&policies[..], None),
        LimitKind::Unlimited => (&[][..], Some(Special::Unlimited)),
        LimitKind::Zero { label, period } => (
            &[][..],
            Some(Special::Zero {
                label,
                period: *period,
            }),
        ),
    };
    Some(Matched {
        policies,
        key: client_key(unpinned.into_iter()),
        name: limit.name.as_deref(),
        replaces: &limit.replaces,
        special,
        settle: false,
    })
}

fn shape<'k>(keys: impl Iterator<Item = &'k str>) -> String {
    let mut shape = String::new();
    for (i, key) in keys.enumerate() {
        if i > 0 {
            shape.push('\0');
        }
        shape.push_str(key);
    }
    shape
}

/// The client key of a descriptor's unpinned values, encoded as an HTTP route's composite key
/// is (each key so far length-prefixed, then the next value), so `remote_address` alone keys by
/// the address exactly as a route keyed by `ip` does; no values at all is the global key.
fn client_key<'v>(values: impl Iterator<Item = &'v [u8]>) -> Vec<u8> {
    let mut key: Option<Vec<u8>> = None;
    for value in values {
        key = Some(match key {
            None => value.to_vec(),
            Some(before) => {
                let mut joined = Vec::with_capacity(before.len() + value.len() + 8);
                joined.extend_from_slice(before.len().to_string().as_bytes());
                joined.push(b':');
                joined.extend_from_slice(&before);
                joined.extend_from_slice(value);
                joined
            }
        });
    }
    key.unwrap_or_else(|| b"global".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(source: &str) -> (RuleBook, Config) {
        let config = Config::parse(source, std::path::Path::new("t.toml")).unwrap();
        let rules = config
            .rls
            .as_ref()
            .map(|r| r.rules.clone())
            .unwrap_or_default();
        (RuleBook::new(&rules, &[], &config), config)
    }

    const RULES: &str = r#"
[[policy]]
name = "any"
algorithm = "gcra"
limit = 1
period = "1s"
[[policy]]
name = "free"
algorithm = "gcra"
limit = 1
period = "1s"
[[policy]]
name = "api"
algorithm = "gcra"
limit = 1
period = "1s"
[[policy]]
name = "api-v2"
algorithm = "gcra"
limit = 1
period = "1s"

[rls]
listen = "127.0.0.1:0"
[[rls.rule]]
domain = "edge"
descriptor = ["plan", "user"]
policies = ["any"]
[[rls.rule]]
domain = "edge"
descriptor = ["plan=free", "user"]
policies = ["free"]
[[rls.rule]]
domain = "edge"
descriptor = ["path=/api/*"]
policies = ["api"]
[[rls.rule]]
domain = "edge"
descriptor = ["path=/api/v2/*"]
policies = ["api-v2"]
"#;

    fn matched(book: &RuleBook, entries: &[(&str, &str)]) -> Option<(String, Vec<u8>)> {
        let matched = book.domain("edge")?.lookup(entries.iter().copied())?;
        Some((matched.policies[0].name().to_owned(), matched.key))
    }

    #[test]
    fn the_most_specific_rule_wins_and_unpinned_values_key_the_client() {
        let (book, _) = book(RULES);
        assert_eq!(
            matched(&book, &[("plan", "free"), ("user", "ann")]),
            Some(("free".into(), b"ann".to_vec()))
        );
        // Any plan but free: the key has both values, length-prefixed.
        assert_eq!(
            matched(&book, &[("plan", "pro"), ("user", "ann")]),
            Some(("any".into(), b"3:proann".to_vec()))
        );
        // The longer prefix is the more specific.
        assert_eq!(
            matched(&book, &[("path", "/api/v2/x")]).map(|m| m.0),
            Some("api-v2".into())
        );
        assert_eq!(
            matched(&book, &[("path", "/api/v1/x")]).map(|m| m.0),
            Some("api".into())
        );
        assert_eq!(matched(&book, &[("path", "/other")]), None);
        // Keys in another order, or another count of entries, are another shape.
        assert_eq!(matched(&book, &[("user", "ann"), ("plan", "free")]), None);
        assert_eq!(matched(&book, &[("plan", "free")]), None);
        assert!(book.domain("other").is_none());
    }

    #[test]
    fn composite_client_keys_are_unambiguous() {
        let key = |values: &[&str]| client_key(values.iter().map(|v| v.as_bytes()));
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["203.0.113.7"]), b"203.0.113.7");
        assert_eq!(key(&[]), b"global");
    }
}
