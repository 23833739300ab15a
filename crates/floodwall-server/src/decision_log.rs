//! The opt-in decision log (`[log] decisions`): one line per decision, sampled and capped per
//! second, with the client key digested unless `raw_keys` is set.

use std::sync::atomic::{AtomicU64, Ordering};

use floodwall::{Check, Error, Mode, Source, Verdict};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::{DecisionLogMode, LogConfig};

/// Where decision lines go: filter them with `RUST_LOG=floodwall::decision=…`.
const TARGET: &str = "floodwall::decision";

/// The decision log of one configuration.
#[derive(Debug)]
pub(crate) struct DecisionLog {
    mode: DecisionLogMode,
    sample: f64,
    raw_keys: bool,
    /// Decisions that qualified for the log, for sampling.
    seen: AtomicU64,
    cap: PerSecond,
}

impl DecisionLog {
    /// The log `config` asks for; `None` when it is off.
    pub(crate) fn new(config: &LogConfig) -> Option<Self> {
        (config.decisions != DecisionLogMode::Off).then(|| DecisionLog {
            mode: config.decisions,
            sample: config.sample,
            raw_keys: config.raw_keys,
            seen: AtomicU64::new(0),
            cap: PerSecond::new(config.max_per_second as u64),
        })
    }

    /// Logs one decision of `route` on `check`, under its distinct keys and its largest cost,
    /// if the mode, the sample and the cap let it. A check with no pairs (an Envoy request no
    /// rule limits) is not logged.
    pub(crate) fn record(&self, route: &str, check: &Check<'_>, outcome: Result<&Verdict, &Error>) {
        if check.is_empty() {
            return;
        }
        let class = LineClass::of(outcome);
        if self.mode == DecisionLogMode::Denied && class == LineClass::Allowed {
            return;
        }
        if !self.sampled() {
            return;
        }
        match self.cap.admit() {
            Admission::Refused => return,
            Admission::Admitted { dropped } if dropped > 0 => tracing::warn!(
                target: TARGET,
                dropped,
                "decision log: {dropped} lines past [log] max_per_second were not written"
            ),
            Admission::Admitted { .. } => {}
        }
        let mut keys: Vec<&[u8]> = Vec::with_capacity(check.len());
        for (_, key) in check.pairs() {
            if !keys.contains(key) {
                keys.push(key);
            }
        }
        let key = keys
            .iter()
            .map(|key| self.key_text(key))
            .collect::<Vec<_>>()
            .join(",");
        let cost = check.cost();
        match outcome {
            Ok(verdict) => {
                let policies: Vec<&str> = match class {
                    LineClass::Denied => verdict.violated().map(|p| p.name()).collect(),
                    LineClass::ShadowDenied => verdict
                        .iter()
                        .filter(|(p, d)| p.mode() == Mode::Shadow && !d.allowed)
                        .map(|(p, _)| p.name())
                        .collect(),
                    _ => verdict.iter().map(|(p, _)| p.name()).collect(),
                };
                let remaining = verdict.iter().map(|(_, d)| d.remaining).min();
                let retry_after_ms = verdict
                    .retry_after()
                    .map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX));
                tracing::info!(
                    target: TARGET,
                    route,
                    outcome = class.as_str(),
                    policies = %policies.join(","),
                    key = %key,
                    cost,
                    remaining = remaining.filter(|_| verdict.source() != Source::FailOpen),
                    retry_after_ms,
                    source = Source::as_str(verdict.source()),
                    "decision"
                );
            }
            Err(error) => tracing::info!(
                target: TARGET,
                route,
                outcome = class.as_str(),
                key = %key,
                cost,
                %error,
                "decision"
            ),
        }
    }

    /// One in `1 / sample` of the decisions that qualify, evenly spread.
    fn sampled(&self) -> bool {
        if self.sample >= 1.0 {
            return true;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.sample).floor() > (n * self.sample).floor()
    }

    fn key_text(&self, key: &[u8]) -> String {
        if self.raw_keys {
            return floodwall::client_key::Escaped(key).to_string();
        }
        key_digest(key)
    }
}

/// `sha256:` and the first 8 bytes of the key's SHA-256, in hex: the same key gives the same
/// digest on every instance, so one client's lines can be followed without logging who it is.
/// It is a pseudonym, not anonymity: a key from a small space (an IPv4 address) can be found
/// again by hashing every candidate.
pub(crate) fn key_digest(key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    let mut text = String::with_capacity(23);
    text.push_str("sha256:");
    for byte in &digest[..8] {
        use std::fmt::Write as _;
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// How a decision went, as the log and the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineClass {
    Allowed,
    Denied,
    ShadowDenied,
    Error,
    Refused,
}

impl LineClass {
    fn of(outcome: Result<&Verdict, &Error>) -> Self {
        match outcome {
            Ok(verdict) if !verdict.allowed() => LineClass::Denied,
            Ok(verdict) if verdict.iter().any(|(_, d)| !d.allowed) => LineClass::ShadowDenied,
            Ok(_) => LineClass::Allowed,
            Err(Error::StoreUnavailable { .. }) => LineClass::Error,
            Err(_) => LineClass::Refused,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            LineClass::Allowed => "allowed",
            LineClass::Denied => "denied",
            LineClass::ShadowDenied => "shadow_denied",
            LineClass::Error => "error",
            LineClass::Refused => "refused",
        }
    }
}

/// At most `limit` events per second of the process's monotonic clock; the events refused in
/// one second are reported by the first admitted in a later one.
#[derive(Debug)]
pub(crate) struct PerSecond {
    limit: u64,
    started: Instant,
    second: AtomicU64,
    used: AtomicU64,
    refused: AtomicU64,
}

/// Whether [`PerSecond::admit`] let an event through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead; `dropped` events were refused since the last report.
    Admitted { dropped: u64 },
    /// Over the limit for this second.
    Refused,
}

impl PerSecond {
    pub(crate) fn new(limit: u64) -> Self {
        PerSecond {
            limit,
            started: Instant::now(),
            second: AtomicU64::new(0),
            used: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub(crate) fn admit(&self) -> Admission {
        let second = self.started.elapsed().as_secs();
        let current = self.second.load(Ordering::Relaxed);
        if second != current
            && self
                .second
                .compare_exchange(current, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // Racing callers may each take a unit of the old second's count: the cap is a
            // bound on log volume, not an exact quota.
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.limit {
            Admission::Admitted {
                dropped: self.refused.swap(0, Ordering::Relaxed),
            }
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Admission::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_keeps_the_asked_fraction_evenly() {
        let config = LogConfig {
            decisions: DecisionLogMode::All,
            sample: 0.25,
            ..LogConfig::default()
        };
        let log = DecisionLog::new(&config).unwrap();
        let kept: Vec<bool> = (0..8).map(|_| log.sampled()).collect();
        assert_eq!(kept, [false, false, false, true, false, false, false, true]);
        let config = LogConfig {
            sample: 0.003,
            ..config
        };
        let log = DecisionLog::new(&config).unwrap();
        assert_eq!((0..10_000).filter(|_| log.sampled()).count(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_refuses_past_its_limit_and_reports_what_it_refused() {
        let cap = PerSecond::new(2);
        assert_eq!(cap.admit(), Admission::Admitted { dropped: 0 });
        assert_eq!(cap.admit(), Admission::Admitted { dropped: 0 });
        assert_eq!(cap.admit(), Admission::Refused);
        assert_eq!(cap.admit(), Admission::Refused);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!(cap.admit(), Admission::Admitted { dropped: 2 });
        assert_eq!(cap.admit(), Admission::Admitted { dropped: 0 });
        assert_eq!(cap.admit(), Admission::Refused);
    }

    #[test]
    fn a_key_digest_is_short_stable_and_not_the_key() {
        let digest = key_digest(b"203.0.113.7");
        assert_eq!(digest, key_digest(b"203.0.113.7"));
        assert_ne!(digest, key_digest(b"203.0.113.8"));
        assert!(
            digest.starts_with("sha256:") && digest.len() == 23,
            "{digest}"
        );
        assert!(!digest.contains("203.0.113.7"));
    }
}
