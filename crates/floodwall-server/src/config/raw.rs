//! The TOML file as written: every key known (`deny_unknown_fields`), every value that can be
//! wrong kept with its span, so that errors can name the line.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    pub(crate) admin: Option<RawAdmin>,
    pub(crate) access: Option<RawAccess>,
    pub(crate) check: Option<Spanned<RawCheck>>,
    pub(crate) log: Option<RawLog>,
    pub(crate) rls: Option<RawRls>,
    pub(crate) rlqs: Option<RawRlqs>,
    pub(crate) telemetry: Option<RawTelemetry>,
    #[serde(default)]
    pub(crate) storage: RawStorage,
    #[serde(default, rename = "policy")]
    pub(crate) policies: Vec<RawPolicy>,
    #[serde(default, rename = "route")]
    pub(crate) routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) listen: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<Spanned<String>>,
    pub(crate) ipv6_prefix: Option<Spanned<i64>>,
    pub(crate) headers: Option<Spanned<String>>,
    pub(crate) max_connections: Option<Spanned<i64>>,
    pub(crate) header_timeout: Option<Spanned<String>>,
    pub(crate) idle_timeout: Option<Spanned<String>>,
    pub(crate) body_timeout: Option<Spanned<String>>,
    pub(crate) max_header_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) listen: Spanned<String>,
    pub(crate) token_env: Option<Spanned<String>>,
    /// Named tokens: name = the environment variable holding it.
    pub(crate) tokens: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub(crate) allow_unauthenticated: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccess {
    #[serde(default)]
    pub(crate) allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) deny: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    pub(crate) enabled: Option<bool>,
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) token_env: Option<Spanned<String>>,
    pub(crate) max_policies: Option<Spanned<i64>>,
    pub(crate) reservation_ttl: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub(crate) endpoint: Spanned<String>,
    pub(crate) sampling_ratio: Option<Spanned<f64>>,
    pub(crate) service_name: Option<Spanned<String>>,
    pub(crate) metrics: Option<bool>,
    pub(crate) metrics_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) prefix: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) on_error: Option<Spanned<String>>,
    pub(crate) max_keys: Option<Spanned<i64>>,
    pub(crate) wait_replicas: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub(crate) name: Spanned<String>,
    pub(crate) algorithm: Spanned<String>,
    pub(crate) limit: Spanned<i64>,
    pub(crate) period: Spanned<String>,
    pub(crate) burst: Option<Spanned<i64>>,
    pub(crate) max_debt: Option<Spanned<i64>>,
    pub(crate) prefetch: Option<Spanned<i64>>,
    pub(crate) mode: Option<Spanned<String>>,
    pub(crate) on_error: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    #[serde(rename = "match")]
    pub(crate) matcher: Spanned<String>,
    pub(crate) key: Option<Spanned<String>>,
    pub(crate) policies: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) respond: Option<Spanned<RawRespond>>,
    pub(crate) upstream: Option<Spanned<String>>,
    pub(crate) upstream_timeout: Option<Spanned<String>>,
    pub(crate) cost: Option<Spanned<i64>>,
    pub(crate) settle_from: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRespond {
    pub(crate) status: Spanned<i64>,
    pub(crate) json: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub(crate) format: Option<Spanned<String>>,
    pub(crate) decisions: Option<Spanned<String>>,
    pub(crate) sample: Option<Spanned<f64>>,
    pub(crate) max_per_second: Option<Spanned<i64>>,
    pub(crate) raw_keys: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRls {
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) envoy_config: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) envoy_algorithm: Option<Spanned<String>>,
    pub(crate) allow_overrides: Option<bool>,
    pub(crate) max_overrides: Option<Spanned<i64>>,
    #[serde(default, rename = "rule")]
    pub(crate) rules: Vec<RawRlsRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRlsRule {
    pub(crate) domain: Spanned<String>,
    pub(crate) descriptor: Spanned<Vec<Spanned<String>>>,
    pub(crate) policies: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(crate) settle: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRlqs {
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) assignment_ttl: Option<Spanned<String>>,
    #[serde(default, rename = "bucket")]
    pub(crate) buckets: Vec<RawRlqsBucket>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRlqsBucket {
    pub(crate) domain: Spanned<String>,
    pub(crate) bucket: Spanned<Vec<Spanned<String>>>,
    pub(crate) policies: Spanned<Vec<Spanned<String>>>,
}
