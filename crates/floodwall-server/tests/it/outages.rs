//! The store failing at start and while serving: refused credentials stop the start, an
//! unreachable store is served past and said so, `/readyz` tells which, and an outage is
//! logged as it begins and ends with at most one summary every few seconds.

use std::process::Stdio;
use std::time::Duration;

use floodwall_testkit::RedisServer;
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::binary::{Floodwall, config_file};

const POLICIES: &str = r#"
[[policy]]
name = "open"
algorithm = "gcra"
limit = 1000
period = "1h"

[[policy]]
name = "closed"
algorithm = "gcra"
limit = 1000
period = "1h"
on_error = "deny"
"#;

/// A loopback port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn credentials_or_an_acl_redis_refuses_stop_the_start_with_a_clear_error() {
    // Two ACL users: one whose password the service gets wrong, one without the scripting
    // commands the store needs.
    let redis = RedisServer::builder()
        .args([
            "--user",
            "app",
            "on",
            ">right-password",
            "~*",
            "+@all",
            "--user",
            "pinger",
            "on",
            ">wrong-password",
            "~*",
            "+ping",
        ])
        .start()
        .unwrap();
    let port = redis.port().unwrap();
    for url in [
        format!("redis://app:wrong-password@127.0.0.1:{port}"),
        format!("redis://pinger:wrong-password@127.0.0.1:{port}"),
    ] {
        let config = config_file(&format!("[storage]\nurl = \"{url}\"\n{POLICIES}"));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_floodwall"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let Ok(output) =
            tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await
        else {
            panic!("floodwall kept running with refused credentials ({url})");
        };
        let output = output.unwrap();
        let (status, stderr) = (output.status, String::from_utf8_lossy(&output.stderr));
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("refused access"), "{stderr}");
        assert!(
            !stderr.contains("wrong-password"),
            "the password was printed: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_served_past_and_readyz_names_its_state() {
    let port = closed_port();
    let config = config_file(&format!(
        "[storage]\nurl = \"redis://127.0.0.1:{port}\"\ntimeout = \"50ms\"\n{POLICIES}"
    ));
    let service = Floodwall::serve(Some(config.path()));
    assert!(service.logged("does not answer at start"));
    let client = Client::new();
    // The first policy fails open; the second fails closed, so the service is not ready.
    let ready = client.get(service.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["store"]["state"], "down", "{body}");
    assert_eq!(
        body["failing_closed"],
        serde_json::json!(["closed"]),
        "{body}"
    );
    let open = client
        .post(service.url("/v1/check"))
        .body(r#"{"policy": "open", "key": "k"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);

    // Every policy failing open: degraded, but ready.
    let config = config_file(&format!(
        "[storage]\nurl = \"redis://127.0.0.1:{port}\"\ntimeout = \"50ms\"\n\
         [[policy]]\nname = \"open\"\nalgorithm = \"gcra\"\nlimit = 5\nperiod = \"1h\"\n"
    ));
    let service = Floodwall::serve(Some(config.path()));
    let ready = client.get(service.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["store"]["state"], "down", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_is_summarised_at_most_every_few_seconds() {
    let mut redis = RedisServer::start().unwrap();
    let config = config_file(&format!(
        "[storage]\nurl = \"{}\"\ntimeout = \"50ms\"\n{POLICIES}",
        redis.url()
    ));
    let service = Floodwall::serve(Some(config.path()));
    let client = Client::new();
    redis.kill();
    // Seven seconds of answers given by on_error: thousands of fallbacks, a handful of lines.
    let started = tokio::time::Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(7) {
        for policy in ["open", "closed"] {
            let body = format!(r#"{{"policy": "{policy}", "key": "k"}}"#);
            client
                .post(service.url("/v1/check"))
                .body(body)
                .send()
                .await
                .unwrap();
            answered += 1;
        }
    }
    assert!(answered > 200, "{answered}");
    service
        .log_line_within("still unavailable", Duration::from_secs(3))
        .await;
    let lines = service.log_lines("store");
    assert!(
        lines.len() <= 5,
        "{answered} fallback answers logged {} lines: {lines:#?}",
        lines.len()
    );
    assert_eq!(service.log_lines("store unavailable").len(), 1);
}

/// A password or ACL changed while serving is named as Redis names it (NOPERM, WRONGPASS) in
/// `/readyz`, the outage log and the error-kind metric, not as the timeouts, broken pipes and
/// open circuits the reconnecting connection sees; put right, enforcing resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_refused_while_serving_are_named_as_redis_names_them() {
    let redis = RedisServer::builder()
        .args(["--user", "app", "on", ">right-password", "~*", "+@all"])
        .start()
        .unwrap();
    let port = redis.port().unwrap();
    let config = config_file(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\nurl = \"redis://app:right-password@127.0.0.1:{port}\"\ntimeout = \"50ms\"\n{POLICIES}"
    ));
    let service = Floodwall::serve(Some(config.path()));
    let client = Client::new();
    let check = || async {
        client
            .post(service.url("/v1/check"))
            .body(r#"{"policy": "closed", "key": "k"}"#)
            .send()
            .await
            .unwrap()
            .status()
    };
    let readyz_kind = || async {
        let ready: Value = client
            .get(service.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ready["store"]["error_kind"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let until_named = |kind: &'static str| async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert_eq!(check().await, StatusCode::SERVICE_UNAVAILABLE);
            if readyz_kind().await == kind {
                return;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "readyz never said {kind}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let until_enforcing = |after: &'static str| async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(15);
        while check().await != StatusCode::OK {
            assert!(
                tokio::time::Instant::now() < until,
                "never recovered from {after}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(check().await, StatusCode::OK);

    // The ACL loses the scripting commands: every call is refused as NOPERM.
    redis
        .cli(&["ACL", "SETUSER", "app", "-@scripting"])
        .unwrap();
    until_named("noperm").await;
    redis.cli(&["ACL", "SETUSER", "app", "+@all"]).unwrap();
    until_enforcing("NOPERM").await;

    // The password changes and the connection is cut: reconnections fail as WRONGPASS.
    redis
        .cli(&["ACL", "SETUSER", "app", "resetpass", ">new-password"])
        .unwrap();
    redis.cli(&["CLIENT", "KILL", "USER", "app"]).unwrap();
    until_named("wrongpass").await;
    // Once Redis has named the refusal, the connection's failures are counted as it.
    assert_eq!(check().await, StatusCode::SERVICE_UNAVAILABLE);
    let line = service.log_line("kind=\"wrongpass\"").await;
    assert!(line.contains("authentication failed"), "{line}");
    assert!(!line.contains("right-password"), "{line}");
    let metrics = service.metrics().await;
    let counted = |kind: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("floodwall_store_errors_total{{kind=\"{kind}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(counted("noperm") > 0.0, "{metrics}");
    assert!(counted("wrongpass") > 0.0, "{metrics}");

    // Put right: enforcing resumes by itself.
    redis
        .cli(&["ACL", "SETUSER", "app", "resetpass", ">right-password"])
        .unwrap();
    until_enforcing("WRONGPASS").await;
}
