//! Every configuration error names the file, line and column, and says how to fix it.

use std::path::Path;
use std::time::Duration;

use floodwall::core::Calendar;
use floodwall_server::config::{Config, ConfigError};

use crate::the_one_error;

fn errors(source: &str) -> Vec<ConfigError> {
    Config::parse(source, Path::new("test.toml")).unwrap_err().0
}

const POLICY: &str = "[[policy]]\nname = \"p\"\nalgorithm = \"gcra\"\nlimit = 5\nperiod = \"1s\"\n";

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
    use floodwall::{List, ListEntry};
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

#[test]
fn each_mistake_is_reported_at_its_line_with_a_fix() {
    // (file, line, column, words in the message, words in the message or hint)
    let cases: Vec<(String, usize, usize, &str, &str)> = vec![
        (
            "[access]\nallow = [\"ok\"]\ndeny = [\"\"]\n".into(),
            3,
            9,
            "a deny entry must be 1 to 65536 bytes",
            "203.0.113.0/24",
        ),
        (
            "[access]\nallow = [\"ok\"]\ndeny = [\"10.0.0.0/33\"]\n".into(),
            3,
            9,
            "looks like a network but is not one",
            "/0 to /32",
        ),
        (
            "[access]\nblock = []\n".into(),
            2,
            1,
            "unknown",
            "allow",
        ),
        (
            "[admin]\nlisten = \"127.0.0.1:9090\"\ntokens = { \"bad name\" = \"X\" }\n".into(),
            3,
            25,
            "token name \"bad name\"",
            "ops = ",
        ),
        (
            "[[policy]]\nname = \"exports\"\nalgorithm = \"concurrency\"\nlimit = 2\nperiod = \"1m\"\n\
             [rls]\nlisten = \"127.0.0.1:8081\"\n[[rls.rule]]\ndomain = \"edge\"\n\
             descriptor = [\"user\"]\npolicies = [\"exports\"]\n"
                .into(),
            11,
            13,
            "concurrency policy \"exports\", which Envoy cannot release",
            "POST /v1/leases",
        ),
        (
            "[rls]\nlisten = \"127.0.0.1:8081\"\nenvoy_algorithm = \"concurrency\"\n".into(),
            3,
            19,
            "Envoy never tells the rate limit service when a request ends",
            "fixed_window",
        ),
        (
            "[server]\nlisen = 1\n".into(),
            2,
            1,
            "unknown key \"lisen\" in [server]",
            "known keys there: listen",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\npolicies = [\"p\"]\nrespond = {{ status = 101 }}\n"
            ),
            9,
            22,
            "status 101",
            "200 to 599",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\npolicies = [\"p\"]\nrespond = {{ status = 600 }}\n"
            ),
            9,
            22,
            "status 600",
            "200 to 599",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\npolicies = [\"p\"]\nrespond = {{ status = 204, json = {{ a = 1 }} }}\n"
            ),
            9,
            11,
            "204 has no body",
            "remove json",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\npolicies = []\nrespond = {{ status = 200 }}\n"
            ),
            8,
            12,
            "policies = [] limits nothing",
            "name at least one policy",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GETT /\"\npolicies = [\"p\"]\nrespond = {{ status = 200 }}\n"
            ),
            7,
            9,
            "unknown method \"GETT\"",
            "GET, HEAD, POST",
        ),
        (
            "  \n".into(),
            1,
            1,
            "the file is empty",
            "floodwall config example",
        ),
        (
            POLICY.replace("gcra", "leaky"),
            3,
            13,
            "unknown algorithm \"leaky\"",
            "fixed_window, sliding_log, sliding_window, token_bucket, gcra",
        ),
        (
            POLICY.replace("\"1s\"", "\"1 sec\""),
            5,
            10,
            "invalid period",
            "500ms, 1s, 1m, 1h, 1d",
        ),
        (
            POLICY.replace("\"1s\"", "\"1mo\""),
            5,
            10,
            "calendar months (1mo) are for fixed_window only",
            "algorithm = \"fixed_window\"",
        ),
        (
            POLICY
                .replace("gcra", "fixed_window")
                .replace("\"1s\"", "\"5mo\""),
            5,
            10,
            "5 months is not supported",
            "1, 2, 3, 4, 6 or 12 months",
        ),
        (
            format!(
                "{POLICY}[rls]\nlisten = \"127.0.0.1:8081\"\n[[rls.rule]]\ndomain = \"edge\"\ndescriptor = [\"plan=\"]\npolicies = [\"p\"]\n"
            ),
            10,
            15,
            "descriptor entry \"plan=\" has an empty value",
            "\"key=prefix*\"",
        ),
        (
            format!(
                "{POLICY}[rls]\nlisten = \"127.0.0.1:8081\"\n[[rls.rule]]\ndomain = \"edge\"\ndescriptor = [\"user\"]\npolicies = [\"nope\"]\n"
            ),
            11,
            13,
            "rule uses undefined policy \"nope\"",
            "defined policies: p",
        ),
        (
            format!(
                "{POLICY}[rls]\nlisten = \"127.0.0.1:8081\"\n[[rls.rule]]\ndomain = \"edge\"\ndescriptor = [\"user\"]\npolicies = [\"p\"]\n[[rls.rule]]\ndomain = \"edge\"\ndescriptor = [\"user\"]\npolicies = [\"p\"]\n"
            ),
            14,
            14,
            "domain \"edge\" already has a rule for this descriptor",
            "first defined at test.toml:9",
        ),
        (
            format!(
                "{POLICY}[[rls.rule]]\ndomain = \"edge\"\ndescriptor = [\"user\"]\npolicies = [\"p\"]\n"
            ),
            1,
            1,
            "[rls] needs listen",
            "listen = \"127.0.0.1:8081\"",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:8080\"\n[rls]\nlisten = \"127.0.0.1:8080\"\n".into(),
            4,
            10,
            "[rls] listen 127.0.0.1:8080 is also [server] listen",
            "its own port",
        ),
        (
            "[rls]\nlisten = \"127.0.0.1:8081\"\nrule_file = \"x\"\n".into(),
            3,
            1,
            "unknown key \"rule_file\" in [rls]",
            "known keys there: listen, envoy_config, envoy_algorithm, allow_overrides, max_overrides, rule",
        ),
        (
            "[log]\ndecisions = \"denials\"\n".into(),
            2,
            13,
            "unknown decisions \"denials\"",
            "off (the default), denied, or all",
        ),
        (
            "[log]\nsample = 1.5\n".into(),
            2,
            10,
            "sample 1.5 must be more than 0 and at most 1",
            "0.01 for one in a hundred",
        ),
        (
            "[log]\nsample = 0.0\n".into(),
            2,
            10,
            "sample 0 must be more than 0 and at most 1",
            "0.01 for one in a hundred",
        ),
        (
            POLICY.replace("limit = 5", "limit = 0"),
            4,
            9,
            "limit 0",
            "at least 1",
        ),
        (
            POLICY.replace("gcra", "fixed_window") + "burst = 3\n",
            6,
            9,
            "burst is not supported by fixed_window",
            "token_bucket and gcra",
        ),
        (
            POLICY.to_owned() + "lease = 2\n",
            6,
            9,
            "lease is not supported by gcra",
            "use fixed_window",
        ),
        (
            POLICY.replace("gcra", "fixed_window") + "lease = 6\n",
            6,
            9,
            "lease 6 is larger than the limit 5",
            "a tenth of it",
        ),
        (
            POLICY.replace("gcra", "fixed_window") + "lease = -1\n",
            6,
            9,
            "lease -1 must be 0 (none) or more",
            "lease",
        ),
        (
            format!("{POLICY}{POLICY}"),
            7,
            8,
            "duplicate policy name \"p\"",
            "first defined on line 2",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\npolicies = [\"q\"]\nrespond = {{ status = 200 }}\n"
            ),
            8,
            13,
            "undefined policy \"q\"",
            "defined policies: p",
        ),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n".into(),
            2,
            20,
            "invalid trusted proxy network",
            "CIDR",
        ),
        (
            "[storage]\non_error = \"retry\"\n".into(),
            2,
            12,
            "unknown on_error",
            "allow",
        ),
        (
            "[storage]\nurl = \"mongodb://x\"\n".into(),
            2,
            7,
            "unknown storage URL",
            "redis+cluster://",
        ),
        // What connecting would refuse is caught here, with its line.
        (
            "[storage]\nurl = \"redis+cluster://a\"\n".into(),
            2,
            7,
            "every cluster node needs host:port",
            "redis+cluster://",
        ),
        (
            "[storage]\nurl = \"redis://x:1\"\nprefix = \"has space\"\n".into(),
            3,
            10,
            "prefix",
            "letters, digits",
        ),
        (
            "[server]\nmax_connections = 0\n".into(),
            2,
            19,
            "max_connections 0 must be from 1",
            "file descriptor limit",
        ),
        (
            "[admin]\nlisten = \"127.0.0.1:9090\"\ntoken_env = \"FLOODWALL_TEST_UNSET_VARIABLE\"\n"
                .into(),
            3,
            13,
            "FLOODWALL_TEST_UNSET_VARIABLE (token_env) is not set",
            "remove token_env",
        ),
        (
            "[check]\ntoken_env = \"FLOODWALL_TEST_UNSET_VARIABLE\"\n".into(),
            2,
            13,
            "is not set",
            "set the variable",
        ),
        (
            "[admin]\nlisten = \"0.0.0.0:9090\"\n".into(),
            2,
            10,
            "beyond loopback",
            "allow_unauthenticated = true",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n".into(),
            4,
            10,
            "is also [server] listen",
            "its own port",
        ),
        (
            "[check]\nlisten = \"127.0.0.1:8080\"\n".into(),
            2,
            10,
            "[check] listen 127.0.0.1:8080 is also [server] listen",
            "its own port",
        ),
        (
            "[check]\nmax_policies = 0\n".into(),
            2,
            16,
            "max_policies 0 must be from 1 to 1024",
            "e.g. 16",
        ),
        (
            "[server]\nheader_timeout = \"0s\"\n".into(),
            2,
            18,
            "must be more than zero",
            "",
        ),
        (
            "[server]\nmax_header_bytes = 1000\n".into(),
            2,
            20,
            "must be at least 8192",
            "e.g. 32768",
        ),
        (
            "[server]\nheaders = \"ietf\"\n".into(),
            2,
            11,
            "unknown headers mode",
            "draft, legacy, both, none",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET api\"\npolicies = [\"p\"]\nrespond = {{ status = 200 }}\n"
            ),
            7,
            9,
            "must start with /",
            "METHOD PATH",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\nkey = \"cookie:sid\"\nrespond = {{ status = 200 }}\n"
            ),
            8,
            7,
            "unknown key",
            "header:NAME",
        ),
        (
            "[[route]]\nmatch = \"GET /\"\n".into(),
            2,
            9,
            "exactly one of respond or upstream",
            "respond",
        ),
    ];
    for (source, line, column, message, fix) in cases {
        let errors = errors(&source);
        let error = &errors[0];
        let text = error.to_string();
        assert_eq!(
            (error.line, error.column),
            (line, column),
            "{text}\n--- in ---\n{source}"
        );
        assert!(
            text.starts_with(&format!("test.toml:{line}:{column}: ")),
            "{text}"
        );
        assert!(error.message.contains(message), "{text}");
        assert!(text.contains(fix), "no fix in: {text}");
    }
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
