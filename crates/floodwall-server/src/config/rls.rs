//! `[rls]` and `[[rls.rule]]`: Envoy's RateLimitService, and the rules that map descriptors to
//! policies.

use std::net::SocketAddr;

use std::path::PathBuf;
use std::str::FromStr;

use floodwall::{Algorithm, Policy};

use super::erl::{self, ErlDomain};
use super::error::Diagnostics;
use super::raw::RawRls;
use super::resolve_listen;
use super::validate::parse_or;
use toml::Spanned;

/// `[rls]`: the Envoy RateLimitService v3 listener and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsConfig {
    /// Where `ShouldRateLimit` is served (gRPC over h2c).
    pub listen: SocketAddr,
    /// The rules, in file order.
    pub rules: Vec<RlsRule>,
    /// The domains of `envoy_config`'s envoyproxy/ratelimit files.
    pub envoy_domains: Vec<ErlDomain>,
    /// Whether a descriptor's own `limit` replaces its rule's limit.
    pub allow_overrides: bool,
    /// The most distinct overrides kept at once.
    pub max_overrides: usize,
}

/// The default `max_overrides`.
pub const DEFAULT_MAX_OVERRIDES: usize = 1_000;

/// `[[rls.rule]]`: the descriptors of `domain` whose entries match `descriptor` are limited by
/// `policies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsRule {
    /// The Envoy domain.
    pub domain: String,
    /// The entries, in order.
    pub descriptor: Vec<EntryMatch>,
    /// The policies that limit matching descriptors, all-or-nothing with the rest of the request.
    pub policies: Vec<String>,
    /// Whether matching descriptors are settles (Envoy's `apply_on_stream_done` calls, which
    /// report a cost after the response): always answered OK and always charged, into debt
    /// past what is left.
    pub settle: bool,
    /// Where the rule was written, for messages: `file:line`.
    pub origin: String,
}

/// What one descriptor entry must be to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryMatch {
    /// `key`: any value, which becomes part of the client key.
    Any {
        /// The entry's key.
        key: String,
    },
    /// `key=value`: exactly that value.
    Exact {
        /// The entry's key.
        key: String,
        /// The value it must have.
        value: String,
    },
    /// `key=prefix*`: a value starting with `prefix`, which becomes part of the client key.
    Prefix {
        /// The entry's key.
        key: String,
        /// What the value must start with.
        prefix: String,
    },
}

impl EntryMatch {
    /// The entry's key.
    pub fn key(&self) -> &str {
        match self {
            EntryMatch::Any { key }
            | EntryMatch::Exact { key, .. }
            | EntryMatch::Prefix { key, .. } => key,
        }
    }

    /// Whether the entry's value is part of the client key (it is not pinned to one value).
    pub fn keys_the_client(&self) -> bool {
        !matches!(self, EntryMatch::Exact { .. })
    }
}

const ENTRY_HINT: &str = "\"key\" (any value), \"key=value\" (exactly that value) or \"key=prefix*\" (a value starting with prefix), e.g. \"remote_address\", \"plan=free\", \"path=/api/*\"";

fn entry(text: &String) -> Result<EntryMatch, String> {
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (text.as_str(), None),
    };
    if key.is_empty() {
        return Err(format!("descriptor entry {text:?} has an empty key"));
    }
    Ok(match value {
        None => EntryMatch::Any {
            key: key.to_owned(),
        },
        Some("") => return Err(format!("descriptor entry {text:?} has an empty value")),
        Some(value) => match value.strip_suffix('*') {
            Some(prefix) => EntryMatch::Prefix {
                key: key.to_owned(),
                prefix: prefix.to_owned(),
            },
            None => EntryMatch::Exact {
                key: key.to_owned(),
                value: value.to_owned(),
            },
        },
    })
}

/// `[rls]`, and the policies its `envoy_config` files define (added to `policies`).
pub(super) fn rls(
    raw: Option<&RawRls>,
    defined: &[&str],
    policies: &mut Vec<Policy>,
    diagnostics: &mut Diagnostics<'_>,
) -> Option<RlsConfig> {
    let raw = raw?;
    let algorithm = match &raw.envoy_algorithm {
        Some(text) => parse_or(
            diagnostics,
            text,
            |text| match Algorithm::from_str(text) {
                Ok(Algorithm::Concurrency) => Err(IN_FLIGHT_OVER_RLS.to_owned()),
                parsed => parsed.map_err(|e| e.to_string()),
            },
            Some(
                "the algorithm of the envoy_config files' limits; fixed_window, their own, is the default",
            ),
        ),
        None => Some(Algorithm::FixedWindow),
    };
    let files: Vec<PathBuf> = raw
        .envoy_config
        .iter()
        .flat_map(|files| files.get_ref())
        .map(|file| PathBuf::from(file.get_ref()))
        .collect();
    let base = diagnostics
        .file()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let taken = defined.iter().map(|name| (*name).to_owned()).collect();
    let loaded = erl::load(
        &files,
        &base,
        algorithm.unwrap_or(Algorithm::FixedWindow),
        taken,
        &mut diagnostics.errors,
    );
    policies.extend(loaded.policies);
    let listen = match &raw.listen {
        Some(listen) => parse_or(
            diagnostics,
            listen,
            |text| resolve_listen(text),
            Some("host:port, e.g. \"127.0.0.1:8081\""),
        ),
        None => {
            diagnostics.error(
                None,
                "[rls] needs listen: the address Envoy sends ShouldRateLimit to",
                Some("add listen = \"127.0.0.1:8081\" under [rls]".to_owned()),
            );
            None
        }
    };
    let in_flight: Vec<Unusable> = policies
        .iter()
        .filter(|p| p.algorithm() == Algorithm::Concurrency)
        .map(|p| Unusable {
            policy: p.name().to_owned(),
            message: format!(
                "rule uses the concurrency policy {:?}, which Envoy cannot release",
                p.name()
            ),
            hint: IN_FLIGHT_OVER_RLS.to_owned(),
        })
        .collect();
    let written = raw.rules.iter().map(|rule| WrittenRule {
        domain: &rule.domain,
        entries: &rule.descriptor,
        policies: &rule.policies,
        settle: rule.settle,
        entries_are: "descriptor",
    });
    let rules = entry_rules(written, defined, &in_flight, diagnostics);
    for domain in &loaded.domains {
        if let Some(rule) = rules.iter().find(|r| r.domain == domain.domain) {
            diagnostics.error(
                raw.envoy_config.as_ref().map(|files| files.span()),
                format!(
                    "domain {:?} is defined both by [[rls.rule]] ({}) and by {}",
                    domain.domain,
                    rule.origin,
                    domain.file.display()
                ),
                Some("define each domain in one place".to_owned()),
            );
        }
    }
    Some(RlsConfig {
        listen: listen?,
        rules,
        envoy_domains: loaded.domains,
        allow_overrides: raw.allow_overrides.unwrap_or(false),
        max_overrides: match &raw.max_overrides {
            Some(most) => parse_or(
                diagnostics,
                most,
                |most| super::validate::count("max_overrides", *most, 1_000_000),
                Some("the most distinct descriptor limit overrides kept at once, e.g. 1000"),
            )
            .unwrap_or(DEFAULT_MAX_OVERRIDES),
            None => DEFAULT_MAX_OVERRIDES,
        },
    })
}

/// Why an in-flight limit cannot be decided over Envoy's rate limit service.
const IN_FLIGHT_OVER_RLS: &str = "Envoy never tells the rate limit service when a request ends, so a concurrency policy's slot would only come back after its period; limit requests in flight on a floodwall route, or through POST /v1/leases";

/// A policy a kind of rule cannot use, and what to say when one names it.
pub(super) struct Unusable {
    pub(super) policy: String,
    pub(super) message: String,
    pub(super) hint: String,
}

/// A rule as written: `[[rls.rule]]`'s descriptor, or `[[rlqs.bucket]]`'s bucket.
pub(super) struct WrittenRule<'a> {
    pub(super) domain: &'a Spanned<String>,
    pub(super) entries: &'a Spanned<Vec<Spanned<String>>>,
    pub(super) policies: &'a Spanned<Vec<Spanned<String>>>,
    /// Whether the rule settles costs reported after the response.
    pub(super) settle: bool,
    /// What the entries describe, for messages: "descriptor" or "bucket".
    pub(super) entries_are: &'static str,
}

/// The valid rules among `written`, in order; every mistake reported, and a second rule for
/// the same domain and entries refused.
pub(super) fn entry_rules<'a>(
    written: impl Iterator<Item = WrittenRule<'a>>,
    defined: &[&str],
    unusable: &[Unusable],
    diagnostics: &mut Diagnostics<'_>,
) -> Vec<RlsRule> {
    let mut rules: Vec<RlsRule> = Vec::new();
    for rule in written {
        let entries_span = rule.entries.span();
        let entries_are = rule.entries_are;
        let Some(parsed) = self::rule(rule, defined, unusable, diagnostics) else {
            continue;
        };
        if let Some(first) = rules
            .iter()
            .find(|r| r.domain == parsed.domain && r.descriptor == parsed.descriptor)
        {
            diagnostics.error(
                Some(entries_span),
                format!(
                    "domain {:?} already has a rule for this {entries_are}",
                    parsed.domain
                ),
                Some(format!(
                    "it is first defined at {}; list every policy in that rule's policies",
                    first.origin
                )),
            );
            continue;
        }
        rules.push(parsed);
    }
    rules
}

fn rule(
    raw: WrittenRule<'_>,
    defined: &[&str],
    unusable: &[Unusable],
    diagnostics: &mut Diagnostics<'_>,
) -> Option<RlsRule> {
    let (entries_are, settle) = (raw.entries_are, raw.settle);
    let domain = parse_or(
        diagnostics,
        raw.domain,
        |domain| match domain.is_empty() {
            true => Err("an empty domain matches no request".to_owned()),
            false => Ok(domain.clone()),
        },
        Some("the domain Envoy's rate limit filter sends, e.g. \"edge\""),
    );
    if raw.entries.get_ref().is_empty() {
        diagnostics.error(
            Some(raw.entries.span()),
            format!("{entries_are} = [] matches no {entries_are}"),
            Some(format!("list its entries in order: {ENTRY_HINT}")),
        );
    }
    let mut descriptor = Vec::new();
    let mut valid = true;
    for text in raw.entries.get_ref() {
        match parse_or(diagnostics, text, entry, Some(ENTRY_HINT)) {
            Some(entry) => descriptor.push(entry),
            None => valid = false,
        }
    }
    if raw.policies.get_ref().is_empty() {
        diagnostics.error(
            Some(raw.policies.span()),
            "policies = [] limits nothing",
            Some("name at least one policy".to_owned()),
        );
        valid = false;
    }
    let mut policies = Vec::new();
    for name in raw.policies.get_ref() {
        if let Some(refused) = unusable.iter().find(|u| &u.policy == name.get_ref()) {
            diagnostics.error(
                Some(name.span()),
                refused.message.clone(),
                Some(refused.hint.clone()),
            );
            valid = false;
        } else if defined.contains(&name.get_ref().as_str()) {
            policies.push(name.get_ref().clone());
        } else {
            let hint = match defined.is_empty() {
                true => "define it in a [[policy]] section".to_owned(),
                false => format!("defined policies: {}", defined.join(", ")),
            };
            diagnostics.error(
                Some(name.span()),
                format!("rule uses undefined policy {:?}", name.get_ref()),
                Some(hint),
            );
            valid = false;
        }
    }
    let origin = format!(
        "{}:{}",
        diagnostics.file().display(),
        diagnostics.line_of(raw.domain.span().start)
    );
    (valid && !descriptor.is_empty()).then_some(RlsRule {
        domain: domain?,
        descriptor,
        policies,
        settle,
        origin,
    })
}
