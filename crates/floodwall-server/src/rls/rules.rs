//! The rules of `[[rls.rule]]`, compiled for lookup: per domain and shape (the entry keys in
//! order), the candidates; the most specific one that matches wins.

use std::collections::HashMap;

use floodwall::Policy;

use crate::config::{Config, EntryMatch, RlsRule};

/// Every domain's rules.
#[derive(Debug, Default)]
pub(crate) struct RuleBook {
    domains: HashMap<String, Domain>,
}

/// One domain's rules, by shape: the entry keys joined by NUL (which no configured key holds).
#[derive(Debug, Default)]
pub(crate) struct Domain {
    by_shape: HashMap<String, Vec<Rule>>,
}

/// One rule, its policies resolved.
#[derive(Debug)]
pub(crate) struct Rule {
    entries: Vec<EntryMatch>,
    /// The policies, all-or-nothing with the rest of the request.
    pub(crate) policies: Vec<Policy>,
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

impl RuleBook {
    /// The rules of `config`'s `[rls]`, with their policies.
    pub(crate) fn new(rules: &[RlsRule], config: &Config) -> Self {
        let mut book = RuleBook::default();
        for rule in rules {
            let shape = shape(rule.descriptor.iter().map(EntryMatch::key));
            let policies = rule
                .policies
                .iter()
                .filter_map(|name| config.policy(name).cloned())
                .collect();
            book.domains
                .entry(rule.domain.clone())
                .or_default()
                .by_shape
                .entry(shape)
                .or_default()
                .push(Rule {
                    entries: rule.descriptor.clone(),
                    policies,
                });
        }
        // Most specific first, so the first that matches wins; the sort is stable, so rules of
        // equal rank keep file order.
        for domain in book.domains.values_mut() {
            for rules in domain.by_shape.values_mut() {
                rules.sort_by(|a, b| {
                    let ranks = |rule: &Rule| rule.entries.iter().map(rank).collect::<Vec<_>>();
                    ranks(b).cmp(&ranks(a))
                });
            }
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
    /// The most specific rule whose entries match `entries` (key, value) in order, and the client
    /// key made of the values it does not pin.
    pub(crate) fn lookup<'e>(
        &self,
        entries: impl ExactSizeIterator<Item = (&'e str, &'e str)> + Clone,
    ) -> Option<(&Rule, Vec<u8>)> {
        let rules = self
            .by_shape
            .get(&shape(entries.clone().map(|(key, _)| key)))?;
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
        (RuleBook::new(&rules, &config), config)
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
        let (rule, key) = book.domain("edge")?.lookup(entries.iter().copied())?;
        Some((rule.policies[0].name().to_owned(), key))
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
