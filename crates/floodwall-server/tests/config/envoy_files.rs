//! envoyproxy/ratelimit files read as configuration: the file's limits become policies, and a
//! malformed file is refused at its line.

use floodwall_server::config::Config;

use crate::fixtures::{ERL, setup};
use crate::the_one_error;

#[test]
fn envoy_algorithm_upgrades_the_files_limits() {
    let (_dir, file) = setup(ERL, "envoy_algorithm = \"gcra\"\n");
    let config = Config::from_file(&file).unwrap();
    assert_eq!(config.policies.len(), 9, "{:?}", config.policies);
    assert!(
        config
            .policies
            .iter()
            .all(|p| p.algorithm() == floodwall::Algorithm::Gcra)
    );
    let (_dir, file) = setup(ERL, "");
    let config = Config::from_file(&file).unwrap();
    let names: Vec<&str> = config.policies.iter().map(|p| p.name()).collect();
    assert!(names.contains(&"edge.database_users"), "{names:?}");
    assert!(
        config
            .policies
            .iter()
            .all(|p| p.algorithm() == floodwall::Algorithm::FixedWindow)
    );
}

#[test]
fn malformed_files_are_refused_at_their_line() {
    let cases = [
        (
            "domain: edge\ndescriptors:\n  - key: a\n    rate_limits: {}\n",
            4,
            "rate_limits",
        ),
        (
            "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n",
            4,
            "unknown unit \"fortnight\"",
        ),
        (
            "domain: edge\ndescriptors:\n  - key: a\n    value: b\n  - key: a\n    value: b\n",
            5,
            "duplicate descriptor \"a=b\"",
        ),
        (
            "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: { unit: second }\n",
            4,
            "needs unit and requests_per_unit",
        ),
        ("domain: edge\ndescriptors:\n  - value: b\n", 3, "key"),
    ];
    for (erl, line, says) in cases {
        let (_dir, file) = setup(erl, "");
        let errors = Config::from_file(&file).unwrap_err().0;
        let error = &errors[0];
        assert!(error.file.ends_with("ratelimit.yaml"), "{error}");
        assert_eq!(error.line, line, "{error}\n--- in ---\n{erl}");
        assert!(error.message.contains(says), "{error}");
    }
    // A domain in two places.
    let (dir, file) = setup(ERL, "");
    std::fs::write(dir.path().join("again.yaml"), ERL).unwrap();
    std::fs::write(
        &file,
        "[rls]\nlisten = \"127.0.0.1:0\"\nenvoy_config = [\"ratelimit.yaml\", \"again.yaml\"]\n",
    )
    .unwrap();
    let errors = Config::from_file(&file).unwrap_err().0;
    assert!(
        errors[0]
            .message
            .contains("domain \"edge\" is also defined in"),
        "{}",
        errors[0]
    );
}

/// Every unit of envoyproxy/ratelimit is a period: a month is 30 days and a year 365, as that
/// service counts them.
#[test]
fn each_unit_is_its_period() {
    let units = [
        ("second", 1),
        ("minute", 60),
        ("hour", 3_600),
        ("day", 86_400),
        ("week", 604_800),
        ("month", 2_592_000),
        ("year", 31_536_000),
    ];
    let mut erl = String::from("domain: units\ndescriptors:\n");
    for (unit, _) in units {
        erl.push_str(&format!(
            "  - key: {unit}\n    rate_limit: {{ unit: {}, requests_per_unit: 1 }}\n",
            unit.to_uppercase()
        ));
    }
    let (_dir, file) = setup(&erl, "");
    let config = Config::from_file(&file).unwrap();
    for (unit, seconds) in units {
        let policy = config.policy(&format!("units.{unit}")).unwrap();
        assert_eq!(policy.period().as_secs(), seconds, "{unit}");
    }
}

/// Descriptors whose names differ only in characters a policy name cannot hold get names of
/// their own, numbered in file order.
#[test]
fn clashing_policy_names_are_numbered() {
    let erl = "domain: edge\ndescriptors:\n  - key: a b\n    rate_limit: { unit: second, requests_per_unit: 1 }\n  - key: a!b\n    rate_limit: { unit: second, requests_per_unit: 2 }\n  - key: a_b\n    rate_limit: { unit: second, requests_per_unit: 3 }\n";
    let (_dir, file) = setup(erl, "");
    let config = Config::from_file(&file).unwrap();
    let named: Vec<(&str, u64)> = config
        .policies
        .iter()
        .map(|p| (p.name(), p.limit()))
        .collect();
    assert_eq!(
        named,
        [("edge.a_b", 1), ("edge.a_b-2", 2), ("edge.a_b-3", 3)]
    );
}

/// A domain is defined once: by an envoyproxy/ratelimit file or by `[[rls.rule]]`, not both.
/// Rules of other domains may sit beside a file.
#[test]
fn a_domain_of_a_file_may_not_also_have_rules() {
    let rule = |domain: &str| {
        format!(
            "[[policy]]\nname = \"p\"\nalgorithm = \"gcra\"\nlimit = 5\nperiod = \"1s\"\n[[rls.rule]]\ndomain = \"{domain}\"\ndescriptor = [\"user\"]\npolicies = [\"p\"]\n"
        )
    };
    let (_dir, file) = setup(ERL, &rule("elsewhere"));
    let config = Config::from_file(&file).unwrap();
    assert!(config.policy("p").is_some());
    let (_dir, file) = setup(ERL, &rule("edge"));
    let errors = Config::from_file(&file).unwrap_err().0;
    the_one_error(&errors, "domain \"edge\" is defined both by [[rls.rule]]");
}
