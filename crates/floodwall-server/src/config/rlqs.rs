//! `[rlqs]` and `[[rlqs.bucket]]`: Envoy's RateLimitQuotaService, and the rules that map the
//! buckets Envoy reports on to the policies whose rates every reporting Envoy shares.

use std::net::SocketAddr;
use std::time::Duration;

use floodwall::Policy;
use floodwall::core::quota::Capacity;

use super::error::Diagnostics;
use super::raw::RawRlqs;
use super::resolve_listen;
use super::rls::{RlsRule, Unusable, WrittenRule, entry_rules};
use super::validate::{duration, parse_or};

/// `[rlqs]`: the Envoy RateLimitQuotaService v3 listener and its bucket rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlqsConfig {
    /// Where `StreamRateLimitQuotas` is served (gRPC over h2c).
    pub listen: SocketAddr,
    /// How long an Envoy may enforce an assignment it has not had renewed.
    pub assignment_ttl: Duration,
    /// The bucket rules, in file order: matched to a reported `BucketId` (its entries sorted by
    /// key) as RLS rules are matched to descriptors.
    pub buckets: Vec<RlqsBucket>,
}

/// `[[rlqs.bucket]]`: the buckets of `domain` whose `BucketId` entries match are shares of
/// `policies`; the same shape as an RLS rule, with the bucket's entries as its descriptor.
pub type RlqsBucket = RlsRule;

/// The default `assignment_ttl`: two of Envoy's reports and then some.
pub const DEFAULT_ASSIGNMENT_TTL: Duration = Duration::from_secs(12);

/// Envoy 1.40 reports every 5 s whatever `reporting_interval` says.
const ENVOY_REPORTS_EVERY: Duration = Duration::from_secs(5);

/// `[rlqs]`, checked.
pub(super) fn rlqs(
    raw: Option<&RawRlqs>,
    defined: &[&str],
    policies: &[Policy],
    diagnostics: &mut Diagnostics<'_>,
) -> Option<RlqsConfig> {
    let raw = raw?;
    let listen = match &raw.listen {
        Some(listen) => parse_or(
            diagnostics,
            listen,
            |text| resolve_listen(text),
            Some("host:port, e.g. \"127.0.0.1:8083\""),
        ),
        None => {
            diagnostics.error(
                None,
                "[rlqs] needs listen: the address Envoy streams its quota usage to",
                Some("add listen = \"127.0.0.1:8083\" under [rlqs]".to_owned()),
            );
            None
        }
    };
    let assignment_ttl = match &raw.assignment_ttl {
        Some(ttl) => parse_or(
            diagnostics,
            ttl,
            |text| {
                duration(text).and_then(|ttl| match ttl > ENVOY_REPORTS_EVERY {
                    true => Ok(ttl),
                    false => Err(format!(
                        "assignment_ttl {text} lapses before Envoy's next report (every 5 s): its buckets would fall back to no_assignment_behavior between reports"
                    )),
                })
            },
            Some("more than 5s, e.g. \"12s\""),
        ),
        None => Some(DEFAULT_ASSIGNMENT_TTL),
    };
    // Policies a proxy's token bucket cannot carry.
    let unusable: Vec<Unusable> = policies
        .iter()
        .filter_map(|policy| {
            Capacity::of(policy).err().map(|error| Unusable {
                policy: policy.name().to_owned(),
                message: format!(
                    "bucket rule uses policy {:?}, which Envoy cannot share",
                    policy.name()
                ),
                hint: error.to_string(),
            })
        })
        .collect();
    let written = raw.buckets.iter().map(|bucket| WrittenRule {
        domain: &bucket.domain,
        entries: &bucket.bucket,
        policies: &bucket.policies,
        settle: false,
        entries_are: "bucket",
    });
    let buckets = entry_rules(written, defined, &unusable, diagnostics);
    Some(RlqsConfig {
        listen: listen?,
        assignment_ttl: assignment_ttl?,
        buckets,
    })
}

/// Refuses an `[rlqs] listen` that another listener (`others`: its section and address)
/// already has.
pub(super) fn listener_apart(
    raw: Option<&RawRlqs>,
    rlqs: Option<&RlqsConfig>,
    others: &[(&str, Option<SocketAddr>)],
    diagnostics: &mut Diagnostics<'_>,
) {
    let (Some(raw_listen), Some(rlqs)) = (raw.and_then(|r| r.listen.as_ref()), rlqs) else {
        return;
    };
    let listen = rlqs.listen;
    let clash = others
        .iter()
        .find(|(_, other)| *other == Some(listen) && listen.port() != 0);
    if let Some((section, _)) = clash {
        diagnostics.error(
            Some(raw_listen.span()),
            format!("[rlqs] listen {listen} is also {section} listen"),
            Some("give each listener its own port".to_owned()),
        );
    }
}
