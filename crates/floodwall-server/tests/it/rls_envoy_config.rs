//! envoyproxy/ratelimit's YAML loaded as it is (`[rls] envoy_config`): a table of requests and
//! the decision each must get, written from that service's documented semantics (exact values
//! before prefixes before the key alone, no going back once an entry matched, a limit only where
//! the last entry lands, `unlimited`, `shadow_mode`, `replaces`), served in process and from a
//! cluster. (How such files load, and how malformed ones are refused, is the config target's.)

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use floodwall_server::config::Config;

use crate::envoy_files::{ERL, setup};
use crate::in_process::Service;
use crate::rls::{ask, client, descriptor, request};

/// A descriptor's entries, and the overall code of each call in turn.
type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<i32>);

#[tokio::test]
async fn each_request_gets_the_decision_envoyproxy_ratelimit_would_give() {
    let (_dir, file) = setup(ERL, "");
    let service = Service::start_config(Config::from_file(&file).unwrap()).await;
    let mut client = client(&service).await;
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    let table: Vec<Case<'_>> = vec![
        (vec![("remote_address", "192.0.2.1")], vec![ok, ok, over]),
        (vec![("remote_address", "192.0.2.2")], vec![ok]),
        // The exact value wins over the key alone; another value has the key's limit, per value.
        (vec![("database", "users")], vec![ok, over]),
        (vec![("database", "orders")], vec![ok, ok, ok, over]),
        (vec![("database", "billing")], vec![ok]),
        // A prefix.
        (vec![("path", "/api/v1/users")], vec![ok, over]),
        (vec![("path", "/other")], vec![ok, ok, ok]),
        // key1=value1 is taken for the first entry, so the limit is its key2's (1), not
        // key1's key2=x (5): no going back.
        (vec![("key1", "value1"), ("key2", "x")], vec![ok, over]),
        (
            vec![("key1", "other"), ("key2", "x")],
            vec![ok, ok, ok, ok, ok, over],
        ),
        (vec![("key1", "other"), ("key2", "y")], vec![ok, ok]),
        // A descriptor that ends where no rate_limit is: not limited.
        (vec![("key1", "value1")], vec![ok, ok, ok]),
        // unlimited, and shadow mode (counted, never over).
        (vec![("free", "f")], vec![ok, ok, ok]),
        (vec![("trial", "t")], vec![ok, ok, ok]),
        // More entries than the tree is deep.
        (
            vec![("remote_address", "192.0.2.9"), ("path", "/")],
            vec![ok, ok, ok],
        ),
    ];
    for (entries, codes) in table {
        let mut got = Vec::new();
        for _ in &codes {
            got.push(
                ask(&mut client, request(vec![descriptor(&entries)]))
                    .await
                    .overall_code,
            );
        }
        assert_eq!(got, codes, "{entries:?}");
    }
    // The limit's unit as Envoy names it, and shadow mode's counts.
    let answer = ask(
        &mut client,
        request(vec![descriptor(&[("database", "users")])]),
    )
    .await;
    let limit = answer.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, Unit::try_from(limit.unit)),
        (1, Ok(Unit::Second))
    );
    let trial = ask(&mut client, request(vec![descriptor(&[("trial", "t")])])).await;
    assert_eq!(trial.statuses[0].limit_remaining, 0);
    assert_eq!(trial.statuses[0].code, ok);
    let free = ask(&mut client, request(vec![descriptor(&[("free", "f")])])).await;
    assert_eq!(free.statuses[0].current_limit, None);

    // `replaces`: with vip in the request, user_limit does not apply.
    let both = request(vec![
        descriptor(&[("user", "ann")]),
        descriptor(&[("vip", "ann")]),
    ]);
    let answer = ask(&mut client, both).await;
    assert_eq!(answer.statuses[0].current_limit, None);
    assert_eq!(
        answer.statuses[1]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        100
    );
    let alone = ask(&mut client, request(vec![descriptor(&[("user", "ann")])])).await;
    assert_eq!(
        alone.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        10
    );
    assert_eq!(
        alone.statuses[0].limit_remaining, 9,
        "the replaced limit counted nothing"
    );
}

/// An ERL file upgraded to GCRA and served from a Redis cluster: the limits are the file's,
/// and a spent client gets back exactly one call after one emission interval (a fixed window
/// would give none or a whole window's worth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_file_is_served_from_a_cluster() {
    let cluster = floodwall_testkit::RedisCluster::start().unwrap();
    let erl = "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: { unit: second, requests_per_unit: 2 }\n";
    let storage = format!(
        "envoy_algorithm = \"gcra\"\n[storage]\nurl = \"{}\"\ntimeout = \"2s\"\non_error = \"deny\"\n",
        cluster.url()
    );
    let (_dir, file) = setup(erl, &storage);
    let service = Service::start_config(Config::from_file(&file).unwrap()).await;
    let mut client = client(&service).await;
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    for address in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let mut codes = Vec::new();
        for _ in 0..3 {
            let call = request(vec![descriptor(&[("remote_address", address)])]);
            codes.push(ask(&mut client, call).await.overall_code);
        }
        assert_eq!(codes, [ok, ok, over], "{address}");
    }
    // One emission interval is 500 ms; at 600 ms one call has come back, not two.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let call = || request(vec![descriptor(&[("remote_address", "192.0.2.1")])]);
    let first = ask(&mut client, call()).await;
    assert_eq!(first.overall_code, ok);
    let limit = first.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, Unit::try_from(limit.unit)),
        (2, Ok(Unit::Second))
    );
    assert_eq!(ask(&mut client, call()).await.overall_code, over);
}

/// What envoyproxy/ratelimit's own test configurations use and floodwall once refused or
/// answered differently: `requests_per_unit: 0` (a ban), week, month and year units, the
/// remaining of an `unlimited` descriptor, and `*` in the middle of a value and more than once.
const ERL_EDGES: &str = r#"
domain: edges
descriptors:
  - key: banned
    rate_limit:
      unit: second
      requests_per_unit: 0
  - key: weekly
    rate_limit:
      unit: week
      requests_per_unit: 3
  - key: monthly
    rate_limit:
      unit: month
      requests_per_unit: 3
  - key: yearly
    rate_limit:
      unit: year
      requests_per_unit: 3
  - key: free
    rate_limit:
      unlimited: true
  - key: foo
    value: bar*b
    rate_limit:
      unit: minute
      requests_per_unit: 1
  - key: foo
    value: foo*bar*baz
    rate_limit:
      unit: minute
      requests_per_unit: 2
"#;

#[tokio::test]
async fn envoyproxy_ratelimit_edge_cases_answer_as_that_service_does() {
    let (_dir, file) = setup(ERL_EDGES, "");
    let service = Service::start_config(Config::from_file(&file).unwrap()).await;
    let mut client = client(&service).await;
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    let edge = |entries: &[(&str, &str)]| {
        let mut request = request(vec![descriptor(entries)]);
        request.domain = "edges".to_owned();
        request
    };

    // requests_per_unit 0: every request over the limit, in every window; the file loads.
    for _ in 0..3 {
        let banned = ask(&mut client, edge(&[("banned", "x")])).await;
        assert_eq!(banned.overall_code, over);
        let status = &banned.statuses[0];
        assert_eq!(status.code, over);
        assert_eq!(status.limit_remaining, 0);
        let limit = status.current_limit.as_ref().unwrap();
        assert_eq!(
            (limit.requests_per_unit, Unit::try_from(limit.unit)),
            (0, Ok(Unit::Second))
        );
        assert!(status.duration_until_reset.is_some());
        assert!(!banned.raw_body.is_empty());
        assert!(
            banned
                .response_headers_to_add
                .iter()
                .any(|h| h.key == "retry-after"),
            "{:?}",
            banned.response_headers_to_add
        );
    }
    // A ban beside another descriptor refuses the request and consumes nothing of the other.
    let both = {
        let mut request = request(vec![
            descriptor(&[("weekly", "w2")]),
            descriptor(&[("banned", "x")]),
        ]);
        request.domain = "edges".to_owned();
        request
    };
    assert_eq!(ask(&mut client, both).await.overall_code, over);
    let weekly = ask(&mut client, edge(&[("weekly", "w2")])).await;
    assert_eq!(weekly.statuses[0].limit_remaining, 2, "nothing was taken");

    // Week, month and year report their units.
    for (key, unit) in [
        ("weekly", Unit::Week),
        ("monthly", Unit::Month),
        ("yearly", Unit::Year),
    ] {
        let answer = ask(&mut client, edge(&[(key, "v")])).await;
        let limit = answer.statuses[0].current_limit.as_ref().unwrap();
        assert_eq!(Unit::try_from(limit.unit), Ok(unit), "{key}");
        assert_eq!(limit.requests_per_unit, 3);
    }

    // unlimited: OK with all a status can say remains.
    let free = ask(&mut client, edge(&[("free", "f")])).await;
    assert_eq!(free.statuses[0].code, ok);
    assert_eq!(free.statuses[0].limit_remaining, u32::MAX);

    // Wildcards anywhere in a value, more than once.
    for (value, codes) in [
        ("barab", vec![ok, over]),
        ("barb", vec![ok, over]),
        ("bara", vec![ok, ok, ok]),
        ("foo123bar456baz", vec![ok, ok, over]),
        ("foobarbaz", vec![ok, ok, over]),
        ("foo123bar456ba", vec![ok, ok, ok]),
    ] {
        let mut got = Vec::new();
        for _ in &codes {
            got.push(ask(&mut client, edge(&[("foo", value)])).await.overall_code);
        }
        assert_eq!(got, codes, "{value}");
    }
}
