//! From the raw file to a [`Config`]: every value checked, every error collected.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use floodwall::core::key::validate_prefix;
use floodwall::core::parse_period;
use floodwall::memory::DEFAULT_MAX_KEYS;
use floodwall::redis::{DEFAULT_PREFIX, DEFAULT_TIMEOUT, RedisConfig};
use floodwall::{Algorithm, Mode, OnError, Policy};
use toml::Spanned;

use super::error::Diagnostics;
use super::raw::{RawConfig, RawPolicy};
use super::{Config, ConfigErrors, StorageSection, listeners, routes};

const STORAGE_SCHEMES: &str = "memory://, redis://, rediss://, redis+unix://, redis+cluster://, \
     rediss+cluster://, redis+sentinel://, rediss+sentinel://";

/// More replicas than any deployment runs: a larger `wait_replicas` is a typo.
const MAX_WAIT_REPLICAS: u32 = 16;

pub(super) fn parse(source: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut diagnostics = Diagnostics::new(file, source);
    if source.trim().is_empty() {
        diagnostics.error(
            None,
            "the file is empty",
            Some("start from `floodwall config example > floodwall.toml`, or run floodwall serve without --config for the embedded demo".to_owned()),
        );
        return Err(ConfigErrors(diagnostics.errors));
    }
    if !super::schema::check(source, &mut diagnostics) {
        let mut errors = diagnostics.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    }
    let raw: RawConfig = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(error) => {
            let hint = error
                .message()
                .contains("unknown field")
                .then(|| "`floodwall config example` prints every key".to_owned());
            diagnostics.error(error.span(), error.message().trim().to_owned(), hint);
            return Err(ConfigErrors(diagnostics.errors));
        }
    };
    let server = listeners::server(&raw, &mut diagnostics);
    let admin = listeners::admin(&raw, &mut diagnostics);
    let access = listeners::access(&raw, &mut diagnostics);
    let check = listeners::check(&raw, &mut diagnostics);
    let log = super::log::log(&raw, &mut diagnostics);
    let telemetry = super::telemetry::telemetry(&raw, &mut diagnostics);
    let storage = storage(&raw, &mut diagnostics);
    let policies = policies(&raw.policies, &mut diagnostics);
    // Names of every [[policy]], valid or not: a route naming an invalid one is not reported again.
    let mut defined: Vec<&str> = Vec::new();
    for policy in &raw.policies {
        if !defined.contains(&policy.name.get_ref().as_str()) {
            defined.push(policy.name.get_ref());
        }
    }
    let mut policies: Vec<Policy> = policies.into_iter().map(|(policy, _)| policy).collect();
    let routes = raw
        .routes
        .iter()
        .filter_map(|route| routes::route(route, &defined, &policies, &mut diagnostics))
        .collect();
    let rls = super::rls::rls(raw.rls.as_ref(), &defined, &mut policies, &mut diagnostics);
    let rlqs = super::rlqs::rlqs(raw.rlqs.as_ref(), &defined, &policies, &mut diagnostics);
    super::rlqs::listener_apart(
        raw.rlqs.as_ref(),
        rlqs.as_ref(),
        &[
            ("[server]", Some(server.listen)),
            ("[admin]", admin.as_ref().map(|admin| admin.listen)),
            ("[check]", check.listen),
            ("[rls]", rls.as_ref().map(|rls| rls.listen)),
        ],
        &mut diagnostics,
    );
    listeners::listeners_apart(
        &raw,
        &server,
        admin.as_ref(),
        &check,
        rls.as_ref(),
        &mut diagnostics,
    );
    if !diagnostics.errors.is_empty() {
        let mut errors = diagnostics.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        file: file.to_owned(),
        server,
        admin,
        access,
        check,
        log,
        telemetry,
        rls,
        rlqs,
        storage,
        policies,
        routes,
    })
}

/// Parses a spanned value with `parse`, recording `hint` at its span on failure.
pub(super) fn parse_or<T, R>(
    diagnostics: &mut Diagnostics<'_>,
    value: &Spanned<R>,
    parse: impl FnOnce(&R) -> Result<T, String>,
    hint: Option<&str>,
) -> Option<T> {
    match parse(value.get_ref()) {
        Ok(parsed) => Some(parsed),
        Err(message) => {
            diagnostics.error(Some(value.span()), message, hint.map(str::to_owned));
            None
        }
    }
}

fn on_error(text: &String) -> Result<OnError, String> {
    OnError::from_str(text).map_err(|_| format!("unknown on_error {text:?}"))
}

const ON_ERROR_HINT: &str = "one of allow (fail open), deny (fail closed: 503), local (an in-process limiter until the store is back)";

/// `[storage]`, checked with the store's own URL and prefix rules, so that what connecting
/// would refuse is reported here with its line.
fn storage(raw: &RawConfig, diagnostics: &mut Diagnostics<'_>) -> StorageSection {
    let storage = &raw.storage;
    let url = storage.url.as_ref().and_then(|url| {
        parse_or(
            diagnostics,
            url,
            |text| match floodwall::StorageConfig::from_url(text) {
                Ok(_) => Ok(text.clone()),
                Err(_) if !STORAGE_SCHEMES.split(", ").any(|s| text.starts_with(s)) => {
                    Err(format!("unknown storage URL {text:?}"))
                }
                Err(error) => Err(error.to_string()),
            },
            Some(&format!("a URL starting with one of {STORAGE_SCHEMES}")),
        )
    });
    let prefix = storage.prefix.as_ref().and_then(|prefix| {
        parse_or(
            diagnostics,
            prefix,
            |text| {
                validate_prefix(text)
                    .map(|()| text.clone())
                    .map_err(|e| e.to_string())
            },
            Some("letters, digits and '_', '-', '.', ':', e.g. \"floodwall\""),
        )
    });
    let timeout = storage
        .timeout
        .as_ref()
        .and_then(|timeout| parse_or(diagnostics, timeout, |text| duration(text), None));
    let on_error = storage
        .on_error
        .as_ref()
        .and_then(|value| parse_or(diagnostics, value, on_error, Some(ON_ERROR_HINT)));
    let max_keys = storage.max_keys.as_ref().and_then(|max| {
        parse_or(
            diagnostics,
            max,
            |max| count("max_keys", *max, usize::MAX),
            Some("the memory store's bound on tracked keys, e.g. 1000000"),
        )
    });
    let wait_replicas = storage.wait_replicas.as_ref().and_then(|replicas| {
        parse_or(
            diagnostics,
            replicas,
            |replicas| {
                u32::try_from(*replicas)
                    .ok()
                    .filter(|&n| n <= MAX_WAIT_REPLICAS)
                    .ok_or_else(|| {
                        format!("wait_replicas {replicas} must be from 0 to {MAX_WAIT_REPLICAS}")
                    })
            },
            Some("replicas that confirm each decision's write before it is answered, e.g. 1 (0: none)"),
        )
    });
    let store = match url {
        Some(url) if url != floodwall::StorageConfig::MEMORY_URL => {
            floodwall::StorageConfig::Redis(
                RedisConfig::new(url)
                    .prefix(prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned()))
                    .timeout(timeout.unwrap_or(DEFAULT_TIMEOUT))
                    .wait_replicas(wait_replicas.unwrap_or(0)),
            )
        }
        _ => floodwall::StorageConfig::Memory {
            max_keys: max_keys.unwrap_or(DEFAULT_MAX_KEYS),
        },
    };
    StorageSection {
        store,
        on_error: on_error.unwrap_or(OnError::Allow),
    }
}

/// A bound of `name`: a whole number from 1 to `most`.
pub(super) fn count(name: &str, value: i64, most: usize) -> Result<usize, String> {
    usize::try_from(value)
        .ok()
        .filter(|n| (1..=most).contains(n))
        .ok_or_else(|| match most {
            usize::MAX => format!("{name} {value} must be at least 1"),
            _ => format!("{name} {value} must be from 1 to {most}"),
        })
}

pub(super) fn duration(text: &str) -> Result<Duration, String> {
    match parse_period(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err(format!(
            "duration {text:?} must be more than zero (e.g. 50ms, 1s)"
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// The valid policies, with the line each is defined on. A name used twice is an error at the
/// second use, whether or not the first is valid.
fn policies(raw: &[RawPolicy], diagnostics: &mut Diagnostics<'_>) -> Vec<(Policy, usize)> {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    let mut valid = Vec::new();
    for raw in raw {
        let name = raw.name.get_ref().as_str();
        let line = diagnostics.line_of(raw.name.span().start);
        if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == name) {
            diagnostics.error(
                Some(raw.name.span()),
                format!("duplicate policy name {name:?}"),
                Some(format!(
                    "it is first defined on line {first}; give each policy its own name"
                )),
            );
            continue;
        }
        seen.push((name, line));
        if let Some(policy) = policy(raw, diagnostics) {
            valid.push((policy, line));
        }
    }
    valid
}

fn policy(raw: &RawPolicy, diagnostics: &mut Diagnostics<'_>) -> Option<Policy> {
    let algorithm = parse_or(
        diagnostics,
        &raw.algorithm,
        |text| Algorithm::from_str(text).map_err(|e| e.to_string()),
        None,
    );
    let months = floodwall::core::parse_calendar_months(raw.period.get_ref());
    let period = match months {
        // Calendar months have no constant length; checked with the policy below.
        Some(_) => Some(floodwall::core::NOMINAL_MONTH),
        None => parse_or(diagnostics, &raw.period, |text| duration(text), None),
    };
    let limit = parse_or(
        diagnostics,
        &raw.limit,
        |limit| {
            u64::try_from(*limit)
                .ok()
                .filter(|l| *l > 0)
                .ok_or(format!("limit {limit} must be at least 1"))
        },
        Some("the number of requests (units) allowed per period"),
    );
    let mode = raw.mode.as_ref().and_then(|mode| {
        parse_or(
            diagnostics,
            mode,
            |text| match text.as_str() {
                "enforce" => Ok(Mode::Enforce),
                "shadow" => Ok(Mode::Shadow),
                other => Err(format!("unknown mode {other:?}")),
            },
            Some("enforce (the default) or shadow (count and report, never deny)"),
        )
    });
    let policy_on_error = raw
        .on_error
        .as_ref()
        .and_then(|value| parse_or(diagnostics, value, on_error, Some(ON_ERROR_HINT)));
    let (algorithm, period, limit) = (algorithm?, period?, limit?);
    if months.is_some() && algorithm != Algorithm::FixedWindow {
        diagnostics.error(
            Some(raw.period.span()),
            format!(
                "calendar months ({}) are for fixed_window only: {algorithm} needs a period of constant length",
                raw.period.get_ref()
            ),
            Some("use algorithm = \"fixed_window\" for a quota per calendar month, or a period in days (30d)".to_owned()),
        );
        return None;
    }
    // `1w` in a fixed window means calendar weeks, from Monday; `7d` stays aligned to the epoch.
    let weeks = raw
        .period
        .get_ref()
        .strip_suffix('w')
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|_| algorithm == Algorithm::FixedWindow);
    let built = match (months, weeks) {
        (Some(months), _) => Policy::monthly(raw.name.get_ref(), limit, months),
        (None, Some(weeks)) => Policy::weekly(raw.name.get_ref(), limit, weeks),
        (None, None) => Policy::new(raw.name.get_ref(), algorithm, limit, period),
    };
    let mut policy = match built {
        Ok(policy) => policy,
        Err(error) => {
            let span = match error {
                floodwall::PolicyError::InvalidName { .. } => raw.name.span(),
                floodwall::PolicyError::PeriodTooShort { .. }
                | floodwall::PolicyError::PeriodTooLong { .. }
                | floodwall::PolicyError::CalendarMonths { .. } => raw.period.span(),
                _ => raw.limit.span(),
            };
            diagnostics.error(Some(span), error.to_string(), None);
            return None;
        }
    };
    // Burst before max_debt: a debt is bounded by the capacity the burst sets.
    type With = fn(Policy, u64) -> Result<Policy, floodwall::PolicyError>;
    let counts: [(_, _, _, _, With); 3] = [
        (
            &raw.burst,
            "burst",
            1,
            "must be at least 1",
            Policy::with_burst,
        ),
        (
            &raw.max_debt,
            "max_debt",
            0,
            "must be 0 (no debt) or more",
            Policy::with_max_debt,
        ),
        (
            &raw.prefetch,
            "prefetch",
            0,
            "must be 0 (none) or more",
            Policy::with_prefetch,
        ),
    ];
    for (field, what, least, rule, with) in counts {
        let Some(value) = field else { continue };
        let Some(count) = u64::try_from(*value.get_ref()).ok().filter(|n| *n >= least) else {
            diagnostics.error(
                Some(value.span()),
                format!("{what} {} {rule}", value.get_ref()),
                None,
            );
            return None;
        };
        policy = match with(policy, count) {
            Ok(policy) => policy,
            Err(error) => {
                diagnostics.error(Some(value.span()), error.to_string(), None);
                return None;
            }
        };
    }
    if let Some(mode) = mode {
        policy = policy.with_mode(mode);
    }
    if let Some(on_error) = policy_on_error {
        policy = policy.with_on_error(on_error);
    }
    Some(policy)
}
