//! envoyproxy/ratelimit's YAML configuration (`[rls] envoy_config`), loaded as it is: each file's
//! `domain` and nested `descriptors` become a descriptor tree matched with that service's
//! semantics, and each `rate_limit` a `fixed_window` policy (or `[rls] envoy_algorithm`'s).

use std::path::{Path, PathBuf};
use std::time::Duration;

use floodwall::{Algorithm, Mode, Policy};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;

/// One envoyproxy/ratelimit file: a domain and its descriptor tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErlDomain {
    /// The domain.
    pub domain: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The first level of descriptors.
    pub descriptors: Vec<ErlNode>,
}

/// One descriptor of the tree: an entry key, the value it must have (ending in `*`: a prefix),
/// what it limits, and the descriptors below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErlNode {
    /// The entry key.
    pub key: String,
    /// The value: `None` for any value, `Some("x*")` for a prefix.
    pub value: Option<String>,
    /// What a descriptor ending here gets.
    pub limit: ErlLimit,
    /// The next entry's descriptors.
    pub children: Vec<ErlNode>,
}

/// What a descriptor ending at a node gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErlLimit {
    /// No `rate_limit`: not limited.
    None,
    /// `unlimited: true`: never limited.
    Unlimited {
        /// The `rate_limit`'s own `name`, which other limits may replace.
        name: Option<String>,
        /// The names of the limits this one replaces when both apply to a request.
        replaces: Vec<String>,
    },
    /// `requests_per_unit: 0`: every hit is over the limit, until the end of the unit's window
    /// and in every window after.
    Zero {
        /// What the answers call it (as a policy made of a `rate_limit` would be called).
        label: String,
        /// The unit, as a period: 7, 30 and 365 days for a week, a month and a year.
        period: Duration,
        /// The `rate_limit`'s own `name`, which other limits may replace.
        name: Option<String>,
        /// The names of the limits this one replaces when both apply to a request.
        replaces: Vec<String>,
    },
    /// Limited by the policy named `policy`; `name` and `replaces` as the file gives them.
    Policy {
        /// The floodwall policy made of this `rate_limit`.
        policy: String,
        /// The `rate_limit`'s own `name`, which other limits may replace.
        name: Option<String>,
        /// The names of the limits this one replaces when both apply to a request.
        replaces: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    domain: Spanned<String>,
    #[serde(default)]
    descriptors: Vec<RawDescriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescriptor {
    key: Spanned<String>,
    value: Option<Spanned<String>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    #[serde(default)]
    descriptors: Vec<RawDescriptor>,
    shadow_mode: Option<bool>,
    /// Accepted and ignored: floodwall's metrics are per policy already.
    #[serde(rename = "detailed_metric")]
    _detailed_metric: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    unit: Option<Spanned<String>>,
    requests_per_unit: Option<Spanned<u64>>,
    unlimited: Option<bool>,
    name: Option<String>,
    #[serde(default)]
    replaces: Vec<RawReplaces>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplaces {
    name: String,
}

/// Everything the files of `[rls] envoy_config` define: their domains and their policies.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) domains: Vec<ErlDomain>,
    pub(super) policies: Vec<Policy>,
}

/// An envoyproxy/ratelimit `unit` as a period: its windows are multiples of the unit since the
/// epoch, a month being 30 days and a year 365.
fn period(unit: &str) -> Option<Duration> {
    let seconds = match unit.to_ascii_lowercase().as_str() {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        "week" => 7 * 86_400,
        "month" => 30 * 86_400,
        "year" => 365 * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

struct Loader<'a> {
    file: &'a Path,
    algorithm: Algorithm,
    taken: Vec<String>,
    loaded: &'a mut Loaded,
    errors: &'a mut Vec<ConfigError>,
}

impl Loader<'_> {
    fn error(&mut self, at: &serde_saphyr::Location, message: String, hint: Option<&str>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line: at.line() as usize,
            column: at.column() as usize,
            message,
            hint: hint.map(str::to_owned),
        });
    }

    /// A policy name for the limit at `path` (the entries down to it): readable, valid, unique.
    fn policy_name(&mut self, domain: &str, path: &[String]) -> String {
        let mut name: String = std::iter::once(domain)
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".")
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '-' => c,
                _ => '_',
            })
            .collect();
        name.truncate(56);
        let base = name.clone();
        let mut n = 1;
        while self.taken.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        self.taken.push(name.clone());
        name
    }

    fn nodes(&mut self, domain: &str, raw: &[RawDescriptor], path: &[String]) -> Vec<ErlNode> {
        let mut nodes: Vec<ErlNode> = Vec::new();
        for descriptor in raw {
            let key = descriptor.key.value.clone();
            let value = descriptor.value.as_ref().map(|v| v.value.clone());
            if key.is_empty() {
                self.error(
                    &descriptor.key.referenced,
                    "a descriptor with an empty key".into(),
                    None,
                );
                continue;
            }
            if nodes.iter().any(|n| n.key == key && n.value == value) {
                let shown = match &value {
                    Some(value) => format!("{key}={value}"),
                    None => key.clone(),
                };
                self.error(
                    &descriptor.key.referenced,
                    format!("duplicate descriptor {shown:?} in domain {domain:?}"),
                    Some("merge the two: one descriptor per key and value at each level"),
                );
                continue;
            }
            let mut here = path.to_vec();
            here.push(match &value {
                Some(value) => format!("{key}_{value}"),
                None => key.clone(),
            });
            let limit = match &descriptor.rate_limit {
                None => ErlLimit::None,
                Some(limit) => self.limit(
                    domain,
                    limit,
                    &here,
                    descriptor.shadow_mode.unwrap_or(false),
                ),
            };
            let children = self.nodes(domain, &descriptor.descriptors, &here);
            nodes.push(ErlNode {
                key,
                value,
                limit,
                children,
            });
        }
        nodes
    }

    fn limit(
        &mut self,
        domain: &str,
        raw: &Spanned<RawRateLimit>,
        path: &[String],
        shadow: bool,
    ) -> ErlLimit {
        let at = &raw.referenced;
        let limit = &raw.value;
        let name = limit.name.clone();
        let replaces: Vec<String> = limit.replaces.iter().map(|r| r.name.clone()).collect();
        if limit.unlimited == Some(true) {
            return ErlLimit::Unlimited { name, replaces };
        }
        let (Some(unit), Some(requests)) = (&limit.unit, &limit.requests_per_unit) else {
            self.error(
                at,
                "rate_limit needs unit and requests_per_unit (or unlimited: true)".into(),
                Some("e.g. rate_limit: { unit: second, requests_per_unit: 10 }"),
            );
            return ErlLimit::None;
        };
        let Some(period) = period(&unit.value) else {
            self.error(
                &unit.referenced,
                format!("unknown unit {:?}", unit.value),
                Some("one of second, minute, hour, day, week, month, year"),
            );
            return ErlLimit::None;
        };
        let label = self.policy_name(domain, path);
        if requests.value == 0 {
            return ErlLimit::Zero {
                label,
                period,
                name,
                replaces,
            };
        }
        let policy = match Policy::new(&label, self.algorithm, requests.value, period) {
            Ok(policy) => policy,
            Err(error) => {
                self.error(&requests.referenced, error.to_string(), None);
                return ErlLimit::None;
            }
        };
        let policy = match shadow {
            true => policy.with_mode(Mode::Shadow),
            false => policy,
        };
        self.loaded.policies.push(policy);
        ErlLimit::Policy {
            policy: label,
            name,
            replaces,
        }
    }
}

/// Reads `files` (relative to `base`, the directory of the configuration file), each one
/// domain. `taken` holds the names already in use by `[[policy]]`.
pub(super) fn load(
    files: &[PathBuf],
    base: &Path,
    algorithm: Algorithm,
    taken: Vec<String>,
    errors: &mut Vec<ConfigError>,
) -> Loaded {
    let mut loaded = Loaded::default();
    let mut taken = taken;
    for file in files {
        let path = base.join(file);
        let whole = |message: String| ConfigError {
            file: path.clone(),
            line: 0,
            column: 0,
            message,
            hint: None,
        };
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(error) => {
                errors.push(whole(format!("cannot read the file: {error}")));
                continue;
            }
        };
        let raw: RawFile = match serde_saphyr::from_str(&source) {
            Ok(raw) => raw,
            Err(error) => {
                let (line, column) = error
                    .location()
                    .map_or((0, 0), |at| (at.line() as usize, at.column() as usize));
                errors.push(ConfigError {
                    file: path.clone(),
                    line,
                    column,
                    message: first_line(&error.to_string()),
                    hint: Some("the envoyproxy/ratelimit format: domain, descriptors (key, value, rate_limit {unit, requests_per_unit, unlimited, name, replaces}, shadow_mode, descriptors)".into()),
                });
                continue;
            }
        };
        let domain = raw.domain.value.clone();
        if domain.is_empty() {
            errors.push(ConfigError {
                file: path.clone(),
                line: raw.domain.referenced.line() as usize,
                column: raw.domain.referenced.column() as usize,
                message: "the domain is empty".into(),
                hint: None,
            });
            continue;
        }
        if let Some(first) = loaded.domains.iter().find(|d| d.domain == domain) {
            errors.push(ConfigError {
                file: path.clone(),
                line: raw.domain.referenced.line() as usize,
                column: raw.domain.referenced.column() as usize,
                message: format!(
                    "domain {domain:?} is also defined in {}",
                    first.file.display()
                ),
                hint: Some("one file per domain".into()),
            });
            continue;
        }
        let mut loader = Loader {
            file: &path,
            algorithm,
            taken: std::mem::take(&mut taken),
            loaded: &mut loaded,
            errors,
        };
        let descriptors = loader.nodes(&domain, &raw.descriptors, &[]);
        taken = loader.taken;
        loaded.domains.push(ErlDomain {
            domain,
            file: path,
            descriptors,
        });
    }
    loaded
}

/// The first line of a parser's message, which may go on to quote the source.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}
