//! Every key the file may have, checked before the values are: so that a file with several
//! unknown keys (or several syntax errors) hears of all of them at once, not one per attempt.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::Diagnostics;

/// What a table may hold.
struct Section {
    /// Where it is, for messages: `[server]`, `[[route]]`, `respond`.
    name: &'static str,
    keys: &'static [&'static str],
    /// Keys that hold tables of their own (or arrays of them), with their sections.
    tables: &'static [(&'static str, &'static Section)],
    /// Keys whose value is free-form (a JSON body): not looked into.
    free: &'static [&'static str],
}

const SERVER: Section = Section {
    name: "[server]",
    keys: &[
        "listen",
        "trusted_proxies",
        "ipv6_prefix",
        "headers",
        "max_connections",
        "header_timeout",
        "idle_timeout",
        "body_timeout",
        "max_header_bytes",
    ],
    tables: &[],
    free: &[],
};

const ADMIN: Section = Section {
    name: "[admin]",
    keys: &["listen", "token_env", "allow_unauthenticated"],
    tables: &[],
    // Token names are the operator's own.
    free: &["tokens"],
};

const CHECK: Section = Section {
    name: "[check]",
    keys: &[
        "enabled",
        "listen",
        "token_env",
        "max_policies",
        "reservation_ttl",
    ],
    tables: &[],
    free: &[],
};

const LOG: Section = Section {
    name: "[log]",
    keys: &[
        "format",
        "decisions",
        "sample",
        "max_per_second",
        "raw_keys",
    ],
    tables: &[],
    free: &[],
};

const TELEMETRY: Section = Section {
    name: "[telemetry]",
    keys: &[
        "endpoint",
        "sampling_ratio",
        "service_name",
        "metrics",
        "metrics_interval",
    ],
    tables: &[],
    free: &[],
};

const RLS_RULE: Section = Section {
    name: "[[rls.rule]]",
    keys: &["domain", "descriptor", "policies", "settle"],
    tables: &[],
    free: &[],
};

const RLQS_BUCKET: Section = Section {
    name: "[[rlqs.bucket]]",
    keys: &["domain", "bucket", "policies"],
    tables: &[],
    free: &[],
};

const RLQS: Section = Section {
    name: "[rlqs]",
    keys: &["listen", "assignment_ttl"],
    tables: &[("bucket", &RLQS_BUCKET)],
    free: &[],
};

const RLS: Section = Section {
    name: "[rls]",
    keys: &[
        "listen",
        "envoy_config",
        "envoy_algorithm",
        "allow_overrides",
        "max_overrides",
    ],
    tables: &[("rule", &RLS_RULE)],
    free: &[],
};

const STORAGE: Section = Section {
    name: "[storage]",
    keys: &[
        "url",
        "prefix",
        "timeout",
        "on_error",
        "max_keys",
        "wait_replicas",
    ],
    tables: &[],
    free: &[],
};

const POLICY: Section = Section {
    name: "[[policy]]",
    keys: &[
        "name",
        "algorithm",
        "limit",
        "period",
        "burst",
        "max_debt",
        "prefetch",
        "mode",
        "on_error",
    ],
    tables: &[],
    free: &[],
};

const RESPOND: Section = Section {
    name: "respond",
    keys: &["status"],
    tables: &[],
    free: &["json"],
};

const ROUTE: Section = Section {
    name: "[[route]]",
    keys: &[
        "match",
        "key",
        "policies",
        "upstream",
        "upstream_timeout",
        "cost",
        "settle_from",
    ],
    tables: &[("respond", &RESPOND)],
    free: &[],
};

const ACCESS: Section = Section {
    name: "[access]",
    keys: &["allow", "deny"],
    tables: &[],
    free: &[],
};

const FILE: Section = Section {
    name: "the top level",
    keys: &[],
    tables: &[
        ("server", &SERVER),
        ("admin", &ADMIN),
        ("access", &ACCESS),
        ("check", &CHECK),
        ("log", &LOG),
        ("rls", &RLS),
        ("rlqs", &RLQS),
        ("telemetry", &TELEMETRY),
        ("storage", &STORAGE),
        ("policy", &POLICY),
        ("route", &ROUTE),
    ],
    free: &[],
};

/// Parses `source` and reports every syntax error and every unknown key; `false` if there
/// was any, in which case its values are not worth checking.
pub(super) fn check(source: &str, diagnostics: &mut Diagnostics<'_>) -> bool {
    let (document, syntax_errors) = DeTable::parse_recoverable(source);
    let clean = syntax_errors.is_empty();
    for error in syntax_errors {
        diagnostics.error(error.span(), error.message().trim().to_owned(), None);
    }
    if !clean {
        return false;
    }
    let before = diagnostics.errors.len();
    walk(document.get_ref(), &FILE, diagnostics);
    diagnostics.errors.len() == before
}

fn walk(table: &DeTable<'_>, section: &Section, diagnostics: &mut Diagnostics<'_>) {
    for (key, value) in table {
        let name = key.get_ref().as_ref();
        if section.keys.contains(&name) || section.free.contains(&name) {
            continue;
        }
        if let Some((_, inner)) = section.tables.iter().find(|(table, _)| *table == name) {
            match value.get_ref() {
                DeValue::Table(table) => walk(table, inner, diagnostics),
                DeValue::Array(array) => {
                    for item in array {
                        if let DeValue::Table(table) = item.get_ref() {
                            walk(table, inner, diagnostics);
                        }
                    }
                }
                // A value of the wrong kind is the values' check to report.
                _ => {}
            }
            continue;
        }
        report_unknown(key, section, diagnostics);
    }
}

/// Keys that were renamed: (section, old name, new name).
const RENAMED: &[(&str, &str, &str)] = &[("[[policy]]", "lease", "prefetch")];

fn report_unknown(
    key: &Spanned<impl AsRef<str>>,
    section: &Section,
    diagnostics: &mut Diagnostics<'_>,
) {
    let renamed = RENAMED
        .iter()
        .find(|(name, old, _)| *name == section.name && *old == key.get_ref().as_ref());
    if let Some((_, old, new)) = renamed {
        diagnostics.error(
            Some(key.span()),
            format!("{old:?} in {} is now called {new:?}", section.name),
            Some(format!("rename it: {new} = …, with the same value")),
        );
        return;
    }
    let known: Vec<&str> = section
        .keys
        .iter()
        .chain(section.free)
        .copied()
        .chain(section.tables.iter().map(|(name, _)| *name))
        .collect();
    diagnostics.error(
        Some(key.span()),
        format!(
            "unknown key {:?} in {}",
            key.get_ref().as_ref(),
            section.name
        ),
        Some(format!(
            "known keys there: {}; `floodwall config example` prints every key",
            known.join(", ")
        )),
    );
}
