//! What the log says: JSON lines when asked, the opt-in decision log (client keys digested
//! unless `raw_keys`), upstream failures at warn with route and cause, and a rejected reload's
//! errors one line each.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::binary::{Floodwall, config_file};
use crate::outages::closed_port;

const LIMITED: &str = r#"
[[policy]]
name = "one"
algorithm = "fixed_window"
limit = 1
period = "1h"

[[route]]
match = "GET /limited"
key = "ip"
policies = ["one"]
respond = { status = 200, json = { ok = true } }
"#;

async fn get(client: &Client, service: &Floodwall, path: &str) -> StatusCode {
    client.get(service.url(path)).send().await.unwrap().status()
}

/// `[log] format = "json"`: every line is one JSON object; the decision log names the route,
/// outcome and violated policy, and a digest of the key, never the key.
#[tokio::test]
async fn json_lines_and_a_decision_log_of_denials_without_client_keys() {
    let file = config_file(&format!(
        "[log]\nformat = \"json\"\ndecisions = \"denied\"\n{LIMITED}"
    ));
    let service = Floodwall::serve(Some(file.path()));
    let client = Client::new();
    assert_eq!(get(&client, &service, "/limited").await, StatusCode::OK);
    assert_eq!(
        get(&client, &service, "/limited").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let line = service.log_line("\"outcome\":\"denied\"").await;
    let decision: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(decision["target"], "floodwall::decision");
    assert_eq!(decision["route"], "GET /limited");
    assert_eq!(decision["policies"], "one");
    assert_eq!(
        decision["retry_after_ms"].as_u64().map(|ms| ms > 0),
        Some(true)
    );
    let key = decision["key"].as_str().unwrap();
    assert!(key.starts_with("sha256:") && key.len() == 23, "{line}");
    // Only denials: the admitted first request left no line.
    assert_eq!(service.log_lines("floodwall::decision").len(), 1);
    assert!(
        !service.logged("127.0.0.1\",\"cost"),
        "a raw key was logged"
    );
    for line in service.log_lines("") {
        let object: Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(
            object["level"].is_string() && object["timestamp"].is_string(),
            "{line}"
        );
    }
    let started: Value =
        serde_json::from_str(&service.log_line("floodwall starting").await).unwrap();
    assert_eq!(started["policies"], "one (fixed_window, 1 per 1h)");
}

/// `decisions = "all"` with `raw_keys` logs admissions too, with the key as it is; `sample`
/// keeps that fraction of them.
#[tokio::test]
async fn every_decision_sampled_with_raw_keys_when_asked() {
    let file = config_file(&format!(
        "[log]\ndecisions = \"all\"\nsample = 0.5\nraw_keys = true\n{}",
        LIMITED.replace("limit = 1\n", "limit = 100\n")
    ));
    let service = Floodwall::serve(Some(file.path()));
    let client = Client::new();
    for _ in 0..10 {
        assert_eq!(get(&client, &service, "/limited").await, StatusCode::OK);
    }
    // The tenth decision is the fifth kept: wait for it, then count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = service.log_lines("floodwall::decision");
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("outcome=\"allowed\"") || l.contains("outcome=allowed")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| l.contains("key=127.0.0.1")),
        "{lines:#?}"
    );
}

/// A failed forward is a warning naming the route, the upstream, the status and the cause; a
/// burst of them is one line a second, with the count of the rest.
#[tokio::test]
async fn upstream_failures_are_warnings_with_route_and_cause() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_address = silent.local_addr().unwrap();
    let file = config_file(&format!(
        r#"
[[route]]
match = "GET /down"
upstream = "http://127.0.0.1:{closed}"

[[route]]
match = "GET /slow"
upstream = "http://{silent_address}"
upstream_timeout = "200ms"
"#,
        closed = closed_port()
    ));
    let service = Floodwall::serve(Some(file.path()));
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &service, "/down").await,
            StatusCode::BAD_GATEWAY
        );
    }
    let refused = service.log_line("upstream failed").await;
    assert!(refused.contains("WARN"), "{refused}");
    assert!(refused.contains("route=GET /down"), "{refused}");
    assert!(refused.contains("status=502"), "{refused}");
    assert!(
        refused.to_lowercase().contains("connection refused"),
        "{refused}"
    );
    assert_eq!(
        service.log_lines("route=GET /down").len(),
        1,
        "three failures in a second make one line"
    );
    assert_eq!(
        get(&client, &service, "/slow").await,
        StatusCode::GATEWAY_TIMEOUT
    );
    let slow = service.log_line("route=GET /slow").await;
    assert!(
        slow.contains("status=504") && slow.contains("upstream_timeout"),
        "{slow}"
    );
    drop(silent);
}

/// A reload rejected for several mistakes logs each on a line of its own, then one summary.
#[tokio::test]
async fn a_rejected_reload_logs_one_line_per_error() {
    let file = config_file(LIMITED);
    let service = Floodwall::serve(Some(file.path()));
    std::fs::write(
        file.path(),
        "[server]\nlisen = 1\n\n[storage]\nurll = \"memory://\"\n",
    )
    .unwrap();
    service.signal("-HUP");
    let summary = service.log_line("rejected, keeping").await;
    assert!(summary.contains("(2 errors above)"), "{summary}");
    let errors = service.log_lines("SIGHUP: ");
    let unknown = errors
        .iter()
        .find(|l| l.contains(":2:1: unknown key \"lisen\" in [server]"))
        .unwrap();
    assert!(unknown.contains("; hint: known keys there"), "{unknown}");
    assert!(
        errors
            .iter()
            .any(|l| l.contains(":5:1: unknown key \"urll\" in [storage]")),
        "{errors:#?}"
    );
    // Two errors and the summary, each on its own line.
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

/// An Envoy request is one decision-log line naming every client key it carries, and a denial
/// by its second descriptor names the policy that denied it.
#[tokio::test]
async fn an_envoy_request_logs_one_line_with_all_of_its_keys() {
    use crate::rls::{CONFIG, ask, connect, descriptor, request};

    let file = config_file(&format!(
        "[log]\ndecisions = \"all\"\nraw_keys = true\n{CONFIG}"
    ));
    let service = Floodwall::serve(Some(file.path()));
    let mut client = connect(service.rls.expect("the RLS listener")).await;
    // per-ip admits 3 an hour, per-user 1: the second request is over by its user.
    let both = || {
        request(vec![
            descriptor(&[("remote_address", "192.0.2.7")]),
            descriptor(&[("user", "alice")]),
        ])
    };
    assert_eq!(ask(&mut client, both()).await.overall_code, 1);
    assert_eq!(ask(&mut client, both()).await.overall_code, 2);
    let denied = service.log_line("outcome=\"denied\"").await;
    assert!(
        denied.contains("route=\"grpc ShouldRateLimit\"") || denied.contains("route=grpc"),
        "{denied}"
    );
    assert!(denied.contains("key=192.0.2.7,alice"), "{denied}");
    assert!(denied.contains("policies=per-user"), "{denied}");
    assert_eq!(service.log_lines("floodwall::decision").len(), 2);
}

/// With `raw_keys`, a key that holds a line break, a NUL or a bidi
/// override is written escaped: it cannot forge a log line, in the text format or in JSON.
#[tokio::test]
async fn raw_keys_are_escaped_so_no_key_forges_a_line() {
    for format in ["text", "json"] {
        let file = config_file(&format!(
            "[log]\nformat = \"{format}\"\ndecisions = \"all\"\nraw_keys = true\n\
             [[policy]]\nname = \"one\"\nalgorithm = \"fixed_window\"\nlimit = 5\nperiod = \"1h\"\n\
             [[route]]\nmatch = \"GET /\"\nkey = \"query:user\"\npolicies = [\"one\"]\n\
             respond = {{ status = 200, json = {{ ok = true }} }}\n"
        ));
        let service = Floodwall::serve(Some(file.path()));
        let client = Client::new();
        let forged = "u%0A2026-01-01T00:00:00Z%20ERROR%20forged%00%E2%80%AE";
        assert_eq!(
            get(&client, &service, &format!("/?user={forged}")).await,
            StatusCode::OK
        );
        let line = service.log_line("floodwall::decision").await;
        let escaped = r"u\n2026-01-01T00:00:00Z ERROR forged\0\u{202e}";
        match format {
            "json" => {
                let decision: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(decision["key"], escaped, "{line}");
            }
            _ => assert!(line.contains(escaped), "{line}"),
        }
        assert!(
            service
                .log_lines("forged")
                .iter()
                .all(|l| l.contains("floodwall::decision")),
            "{format}: a forged line: {:#?}",
            service.log_lines("")
        );
    }
}
