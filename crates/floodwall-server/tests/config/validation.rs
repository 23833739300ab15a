//! Every configuration error names the file, line and column, and says how to fix it.

use std::path::Path;
use std::time::Duration;

use floodwall::core::Calendar;
use floodwall_server::config::{Config, ConfigError, EntryMatch};

use crate::the_one_error;

pub(crate) fn errors(source: &str) -> Vec<ConfigError> {
    Config::parse(source, Path::new("test.toml")).unwrap_err().0
}

pub(crate) const POLICY: &str =
    "[[policy]]\nname = \"p\"\nalgorithm = \"gcra\"\nlimit = 5\nperiod = \"1s\"\n";

#[test]
fn the_example_file_and_the_embedded_default_are_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../floodwall.example.toml");
    let config = Config::from_file(&example).unwrap();
    assert_eq!(config.policies.len(), 3);
    assert_eq!(config.routes.len(), 3);
    let default = Config::embedded_default();
    assert_eq!(default.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(default.storage.url(), "memory://");
    assert_eq!(default.policy("per-ip").unwrap().limit(), 10);
}

/// `[access]` entries are keys or networks, kept in file order per list; named admin tokens
/// guard the admin API too.
#[test]
fn access_lists_and_named_tokens_are_read() {
    use floodwall::List;
    use floodwall::controls::ListEntry;
    // PATH stands in for a token variable: it is set, and not empty, wherever tests run.
    let source = "[admin]\nlisten = \"127.0.0.1:9090\"\ntokens = { ops = \"PATH\" }\n\
                  [access]\nallow = [\"10.0.0.0/8\", \"monitor\"]\ndeny = [\"203.0.113.7\"]\n";
    let config = Config::parse(source, Path::new("test.toml")).unwrap();
    assert_eq!(
        config.access,
        vec![
            (List::Allow, ListEntry::parse("10.0.0.0/8").unwrap()),
            (List::Allow, ListEntry::Key(b"monitor".to_vec())),
            (List::Deny, ListEntry::parse("203.0.113.7/32").unwrap()),
        ]
    );
    let admin = config.admin.unwrap();
    assert_eq!(admin.tokens[0].0, "ops");
    assert!(admin.guarded());
}

/// An admin API beyond loopback without a token starts only when the operator says so.
#[test]
fn an_open_admin_api_beyond_loopback_needs_allow_unauthenticated() {
    let open = "[admin]\nlisten = \"0.0.0.0:9090\"\nallow_unauthenticated = true\n";
    assert!(Config::parse(open, Path::new("test.toml")).is_ok());
    let loopback = "[admin]\nlisten = \"[::1]:9090\"\n";
    assert!(Config::parse(loopback, Path::new("test.toml")).is_ok());
}

/// Syntax errors and unknown keys are all reported together, however many there are.
#[test]
fn every_syntax_error_and_every_unknown_key_is_reported() {
    let unknown = "[server]\nlisen = 1\nmax_conections = 5\n[admin]\nlisten = \"127.0.0.1:9\"\ntoken = \"x\"\n\
                   [storage]\nurll = \"memory://\"\n[[policy]]\nname = \"p\"\nalgorithm = \"gcra\"\nlimit = 5\nperiod = \"1s\"\n\
                   burts = 3\nmode2 = \"x\"\n[[route]]\nmatch = \"GET /\"\npolicies = [\"p\"]\nrespond = { status = 200, jsn = 1 }\n\
                   upstrem = \"x\"\n[typo]\nx = 1\n";
    let errors = errors(unknown);
    assert_eq!(errors.len(), 9, "{errors:#?}");
    assert!(errors.iter().all(|e| e.message.starts_with("unknown key")));
    let syntax = "[server\nlisten = \"a\"\n[storage]\nurl = = \"b\"\n";
    let errors = self::errors(syntax);
    assert!(errors.len() >= 2, "{errors:#?}");
}

#[test]
fn every_error_in_a_file_is_reported_not_just_the_first() {
    let source = format!(
        "[server]\nlisten = \"nowhere\"\n[storage]\ntimeout = \"soon\"\n{}",
        POLICY.replace("limit = 5", "limit = -1")
    );
    let errors = errors(&source);
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 4, 8], "{errors:?}");
}

#[test]
fn weeks_and_calendar_months_are_periods() {
    let source = POLICY.replace("gcra", "fixed_window");
    let config = |period: &str| {
        Config::parse(
            &source.replace("\"1s\"", &format!("\"{period}\"")),
            Path::new("test.toml"),
        )
        .unwrap()
    };
    let weekly = config("1w");
    assert_eq!(weekly.policies[0].period(), Duration::from_secs(7 * 86_400));
    assert_eq!(weekly.policies[0].calendar(), Calendar::Weeks(1));
    assert_eq!(config("7d").policies[0].calendar(), Calendar::Epoch);
    let quarterly = config("3mo");
    assert_eq!(quarterly.policies[0].calendar(), Calendar::Months(3));
    // Other algorithms take `w` as seven days.
    let bucket =
        Config::parse(&POLICY.replace("\"1s\"", "\"2w\""), Path::new("test.toml")).unwrap();
    assert_eq!(
        bucket.policies[0].period(),
        Duration::from_secs(14 * 86_400)
    );
    assert_eq!(bucket.policies[0].calendar(), Calendar::Epoch);
    assert_eq!(
        quarterly.policies[0].algorithm(),
        floodwall::Algorithm::FixedWindow
    );
}

#[test]
fn a_listen_address_may_name_a_host() {
    let config = Config::parse(
        "[server]\nlisten = \"localhost:8080\"\n",
        Path::new("test.toml"),
    )
    .unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    let unresolved = errors("[server]\nlisten = \"no-such-host.invalid:8080\"\n");
    assert!(
        unresolved[0]
            .message
            .contains("cannot resolve \"no-such-host.invalid\""),
        "{}",
        unresolved[0]
    );
    let errors = errors("[server]\nlisten = \"8080\"\n");
    assert!(
        errors[0].message.contains("write HOST:PORT"),
        "{}",
        errors[0]
    );
}

/// Defaults a file leaves out: headers up to 32 KiB (nginx's four 8 KiB buffers).
#[test]
fn a_file_that_leaves_limits_out_gets_the_documented_defaults() {
    let config = Config::parse(POLICY, Path::new("test.toml")).unwrap();
    assert_eq!(config.server.max_header_bytes, 32_768);
}

/// The storage URL as messages and logs show it: a Redis password never appears.
#[test]
fn the_storage_url_is_shown_without_its_password() {
    let redis = format!("{POLICY}[storage]\nurl = \"redis://app:s3cret@127.0.0.1:6379/2\"\n");
    let config = Config::parse(&redis, Path::new("test.toml")).unwrap();
    assert_eq!(config.storage.url(), "redis://app:***@127.0.0.1:6379/2");
    let memory = Config::parse(POLICY, Path::new("test.toml")).unwrap();
    assert_eq!(memory.storage.url(), "memory://");
    assert!(matches!(
        config.storage.store,
        floodwall::StorageConfig::Redis(_)
    ));
    let named = format!("{POLICY}[storage]\nurl = \"memory://\"\nmax_keys = 1000\n");
    let named = Config::parse(&named, Path::new("test.toml")).unwrap();
    assert!(matches!(
        named.storage.store,
        floodwall::StorageConfig::Memory { max_keys: 1000 }
    ));
}

/// A listen address is IP:PORT or NAME:PORT; a name that could never be a host is refused by
/// its shape, before any lookup.
#[test]
fn listen_addresses_of_the_wrong_shape_say_how_to_write_one() {
    use floodwall_server::config::resolve_listen;
    assert_eq!(
        resolve_listen("127.0.0.1:8080").unwrap().to_string(),
        "127.0.0.1:8080"
    );
    assert!(resolve_listen("localhost:8080").unwrap().ip().is_loopback());
    for bad in [
        ":8080",
        "my host:8080",
        "a/b:8080",
        "localhost",
        "localhost:http",
    ] {
        let message = resolve_listen(bad).unwrap_err();
        assert!(message.contains("write HOST:PORT"), "{bad}: {message}");
    }
}

/// A token comes from its variable when it has one; an empty or blank variable is refused like
/// a missing one, never served as an open API. (Cargo gives every test the package's metadata
/// as variables: the name is set, the homepage is set and empty.)
#[test]
fn a_token_variable_must_hold_a_token() {
    assert_eq!(
        std::env::var("CARGO_PKG_NAME").as_deref(),
        Ok("floodwall-server")
    );
    assert_eq!(std::env::var("CARGO_PKG_HOMEPAGE").as_deref(), Ok(""));
    let set = "[admin]\nlisten = \"127.0.0.1:9090\"\ntoken_env = \"CARGO_PKG_NAME\"\n";
    let config = Config::parse(set, Path::new("test.toml")).unwrap();
    let admin = config.admin.unwrap();
    assert_eq!(admin.token.as_deref(), Some("floodwall-server"));
    let empty = "[admin]\nlisten = \"127.0.0.1:9090\"\ntoken_env = \"CARGO_PKG_HOMEPAGE\"\n";
    the_one_error(&errors(empty), "CARGO_PKG_HOMEPAGE (token_env) is empty");
}

/// A rule that is refused is reported once: it is not kept to clash with the rules after it.
#[test]
fn a_refused_rule_brings_no_follow_on_errors() {
    let rule = |policy: &str| {
        format!(
            "[[rls.rule]]\ndomain = \"edge\"\ndescriptor = [\"user\"]\npolicies = [\"{policy}\"]\n"
        )
    };
    let source = format!(
        "{POLICY}[rls]\nlisten = \"127.0.0.1:8081\"\n{}{}",
        rule("nope"),
        rule("p")
    );
    the_one_error(&errors(&source), "undefined policy \"nope\"");
}

/// A route's key names its parts, joined by `+`, in order.
#[test]
fn route_keys_are_their_parts() {
    use floodwall_server::config::KeyPart;
    let source = format!(
        "{POLICY}[[route]]\nmatch = \"GET /\"\nkey = \"ip + global + header:x-api-key + query:tenant\"\npolicies = [\"p\"]\nrespond = {{ status = 200 }}\n"
    );
    let config = Config::parse(&source, Path::new("test.toml")).unwrap();
    let key = &config.routes[0].key;
    assert_eq!(key.len(), 4, "{key:?}");
    assert_eq!(key[0], KeyPart::Ip);
    assert_eq!(key[1], KeyPart::Global);
    assert!(
        matches!(&key[2], KeyPart::Header(name) if name == "x-api-key"),
        "{key:?}"
    );
    assert_eq!(key[3], KeyPart::Query("tenant".into()));
    for (right, wrong) in [("global", "everyone"), ("query:tenant", "query:")] {
        let source = source.replace(right, wrong);
        let message = &errors(&source)[0].message;
        assert!(
            message.contains(&format!("unknown key \"{wrong}\"")),
            "{message}"
        );
    }
}

/// A route matches a method and an exact path or a prefix written `/…/*`; it forwards only to a
/// plain `http://host:port`.
#[test]
fn route_matches_and_upstreams_have_one_shape() {
    use floodwall_server::config::PathMatch;
    let route = |matcher: &str, action: &str| {
        format!("{POLICY}[[route]]\nmatch = \"{matcher}\"\npolicies = [\"p\"]\n{action}\n")
    };
    let respond = "respond = { status = 200 }";
    let config = Config::parse(&route("GET /api/*", respond), Path::new("test.toml")).unwrap();
    assert_eq!(
        config.routes[0].matcher.path,
        PathMatch::Prefix("/api/".into())
    );
    let config = Config::parse(&route("* /api", respond), Path::new("test.toml")).unwrap();
    assert_eq!(
        config.routes[0].matcher.path,
        PathMatch::Exact("/api".into())
    );
    assert_eq!(config.routes[0].matcher.method, None);
    let message = &errors(&route("GET /api*", respond))[0].message;
    assert!(
        message.contains("a wildcard must follow a slash: write \"/api/*\""),
        "{message}"
    );
    let forward = |upstream: &str| route("GET /", &format!("upstream = \"{upstream}\""));
    assert!(Config::parse(&forward("http://127.0.0.1:9000"), Path::new("test.toml")).is_ok());
    for wrong in [
        "https://127.0.0.1:9000",
        "/just-a-path",
        "http://127.0.0.1:9000/base",
    ] {
        let message = &errors(&forward(wrong))[0].message;
        assert!(
            message.contains("must be http://host:port"),
            "{wrong}: {message}"
        );
    }
}

/// A bound with no upper end says only its lower one.
#[test]
fn an_unbounded_count_asks_only_for_one_or_more() {
    let source = format!("{POLICY}[storage]\nmax_keys = 0\n");
    let message = &errors(&source)[0].message;
    assert_eq!(message, "max_keys 0 must be at least 1");
}

/// A policy's mistake is shown at the value that is wrong: an invalid name at the name.
#[test]
fn an_invalid_policy_name_is_shown_at_the_name() {
    let source = POLICY.replace("name = \"p\"", "name = \"two words\"");
    let error = &errors(&source)[0];
    assert_eq!((error.line, error.column), (2, 8), "{error}");
}

#[test]
fn an_rlqs_section_maps_buckets_to_the_policies_envoys_share() {
    let source = format!(
        "{POLICY}[rlqs]\nlisten = \"127.0.0.1:0\"\n\
         [[rlqs.bucket]]\ndomain = \"edge\"\nbucket = [\"name=api\", \"tenant\"]\npolicies = [\"p\"]\n"
    );
    let config = Config::parse(&source, Path::new("test.toml")).unwrap();
    let rlqs = config.rlqs.unwrap();
    assert_eq!(
        rlqs.assignment_ttl,
        floodwall_server::config::DEFAULT_ASSIGNMENT_TTL
    );
    assert_eq!(rlqs.buckets.len(), 1);
    let bucket = &rlqs.buckets[0];
    assert_eq!(bucket.domain, "edge");
    assert_eq!(bucket.policies, vec!["p".to_owned()]);
    assert_eq!(
        bucket.descriptor,
        vec![
            EntryMatch::Exact {
                key: "name".into(),
                value: "api".into()
            },
            EntryMatch::Any {
                key: "tenant".into()
            },
        ]
    );
    let with_ttl = format!("{POLICY}[rlqs]\nlisten = \"127.0.0.1:0\"\nassignment_ttl = \"30s\"\n");
    let config = Config::parse(&with_ttl, Path::new("test.toml")).unwrap();
    assert_eq!(config.rlqs.unwrap().assignment_ttl, Duration::from_secs(30));
}

/// The README's `[[...]]` blocks for costs known after the answer parse as written: the LLM
/// gateway in front of a model server, and the RLS rules that settle Envoy's stream-done calls.
#[test]
fn the_readmes_settling_configurations_parse_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let block_after = |marker: &str| {
        let from = readme.find(marker).unwrap();
        let start = readme[from..].find("```toml\n").unwrap() + from + "```toml\n".len();
        let end = readme[start..].find("```").unwrap() + start;
        readme[start..end].to_owned()
    };
    let gateway = Config::parse(
        &block_after("As the service, in front of the model server:"),
        Path::new("README.md"),
    )
    .unwrap();
    let route = &gateway.routes[0];
    assert_eq!(route.cost, 1);
    assert_eq!(
        route.settle_from.as_ref().map(|h| h.as_str()),
        Some("x-usage")
    );
    let rules = format!(
        "[[policy]]\nname = \"tokens\"\nalgorithm = \"token_bucket\"\nlimit = 1000\nperiod = \"1m\"\n\
         [rls]\nlisten = \"127.0.0.1:0\"\n{}",
        block_after("hits_addend: {format: \"%RESP(x-usage)%\"}\n  ```")
    );
    let rls = Config::parse(&rules, Path::new("README.md"))
        .unwrap()
        .rls
        .unwrap();
    assert_eq!(
        rls.rules.iter().map(|r| r.settle).collect::<Vec<_>>(),
        [false, true]
    );
}

#[test]
fn telemetry_is_off_unless_configured_and_its_mistakes_name_their_line() {
    let off = Config::parse(POLICY, Path::new("test.toml")).unwrap();
    assert_eq!(off.telemetry, None);
    let source = format!(
        "{POLICY}[telemetry]\nendpoint = \"http://collector:4317\"\nsampling_ratio = 0.25\n"
    );
    let on = Config::parse(&source, Path::new("test.toml")).unwrap();
    let telemetry = on.telemetry.unwrap();
    assert_eq!(telemetry.endpoint, "http://collector:4317");
    assert_eq!(telemetry.sampling_ratio, 0.25);
    assert_eq!(telemetry.service_name, "floodwall");
    assert!(telemetry.metrics);
    assert_eq!(telemetry.metrics_interval, Duration::from_secs(10));
    let wrong = format!(
        "{POLICY}[telemetry]\nendpoint = \"collector:4317\"\nsampling_ratio = 1.5\nservice_name = \"\"\nmetrics_interval = \"10ms\"\n"
    );
    let found = errors(&wrong);
    let lines: Vec<usize> = found.iter().map(|e| e.line).collect();
    assert_eq!(lines, [7, 8, 9, 10], "{found:#?}");
    assert!(found[0].message.contains("http://host:port"), "{found:#?}");
    assert!(found[1].message.contains("from 0 to 1"), "{found:#?}");
    assert!(found[3].message.contains("at least 100ms"), "{found:#?}");
    assert!(found.iter().all(|e| e.hint.is_some()), "{found:#?}");
    let tls = errors(&format!(
        "{POLICY}[telemetry]\nendpoint = \"https://collector:4317\"\n"
    ));
    assert!(tls[0].message.contains("TLS"), "{tls:#?}");
    let missing = errors(&format!("{POLICY}[telemetry]\nsampling_ratio = 1.0\n"));
    assert!(missing[0].message.contains("endpoint"), "{missing:#?}");
}
