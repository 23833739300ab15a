//! Every mistake a configuration can hold, one row each: the file, line and column it is
//! reported at, and the fix the message gives.

use crate::validation::{POLICY, errors};

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
            "[[policy]]\nname = \"exports\"\nalgorithm = \"concurrency\"\nlimit = 2\nperiod = \"1m\"\n\
             [rlqs]\nlisten = \"127.0.0.1:8083\"\n[[rlqs.bucket]]\ndomain = \"edge\"\n\
             bucket = [\"tenant\"]\npolicies = [\"exports\"]\n"
                .into(),
            11,
            13,
            "bucket rule uses policy \"exports\", which Envoy cannot share",
            "in-flight limit",
        ),
        (
            "[rlqs]\nlisten = \"127.0.0.1:8083\"\nassignment_ttl = \"5s\"\n".into(),
            3,
            18,
            "lapses before Envoy's next report",
            "more than 5s",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:8090\"\n[rlqs]\nlisten = \"127.0.0.1:8090\"\n".into(),
            4,
            10,
            "[rlqs] listen 127.0.0.1:8090 is also [server] listen",
            "its own port",
        ),
        (
            format!(
                "{POLICY}[rlqs]\nlisten = \"127.0.0.1:8083\"\n[[rlqs.bucket]]\ndomain = \"edge\"\nbucket = []\npolicies = [\"p\"]\n"
            ),
            10,
            10,
            "bucket = [] matches no bucket",
            "key=prefix*",
        ),
        (
            format!(
                "{POLICY}[rlqs]\nlisten = \"127.0.0.1:8083\"\n[[rlqs.bucket]]\ndomain = \"edge\"\nbucket = [\"tenant\"]\npolicies = [\"p\"]\n[[rlqs.bucket]]\ndomain = \"edge\"\nbucket = [\"tenant\"]\npolicies = [\"p\"]\n"
            ),
            14,
            10,
            "domain \"edge\" already has a rule for this bucket",
            "first defined at",
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
            POLICY.to_owned() + "prefetch = 2\n",
            6,
            12,
            "prefetch is not supported by gcra",
            "use fixed_window",
        ),
        (
            POLICY.replace("gcra", "fixed_window") + "prefetch = 6\n",
            6,
            12,
            "prefetch 6 is larger than the limit 5",
            "a tenth of it",
        ),
        (
            POLICY.replace("gcra", "fixed_window") + "prefetch = -1\n",
            6,
            12,
            "prefetch -1 must be 0 (none) or more",
            "prefetch",
        ),
        (
            POLICY.to_owned() + "max_debt = 6\n",
            6,
            12,
            "max_debt 6 is larger than the capacity 5",
            "max_debt",
        ),
        (
            POLICY.replace("gcra", "sliding_log") + "max_debt = 2\n",
            6,
            12,
            "max_debt is not supported by sliding_log",
            "sliding_log promises at most limit units in any period",
        ),
        (
            POLICY.to_owned() + "max_debt = -1\n",
            6,
            12,
            "max_debt -1 must be 0 (no debt) or more",
            "max_debt",
        ),
        (
            POLICY.replace("gcra", "fixed_window") + "lease = 6\n",
            6,
            1,
            "\"lease\" in [[policy]] is now called \"prefetch\"",
            "prefetch = …, with the same value",
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
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\npolicies = [\"p\"]\nrespond = {{ status = 200 }}\nsettle_from = \"header:x-usage\"\n"
            ),
            10,
            15,
            "settle_from on a route that answers itself",
            "upstream = ",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\npolicies = [\"p\"]\nupstream = \"http://127.0.0.1:9000\"\nsettle_from = \"x-usage\"\n"
            ),
            10,
            15,
            "names no response header",
            "header:x-usage",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\nupstream = \"http://127.0.0.1:9000\"\nsettle_from = \"header:x-usage\"\n"
            ),
            9,
            15,
            "settle_from on a route without policies",
            "policies",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\npolicies = [\"p\"]\nrespond = {{ status = 200 }}\ncost = 6\n"
            ),
            10,
            8,
            "cost 6 can never be admitted by policy \"p\", whose capacity is 5",
            "at most each policy's capacity",
        ),
        (
            format!(
                "{POLICY}[[route]]\nmatch = \"GET /\"\npolicies = [\"p\"]\nrespond = {{ status = 200 }}\ncost = -1\n"
            ),
            10,
            8,
            "cost -1 is negative",
            "0 to only look",
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
