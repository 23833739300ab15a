//! The service behind Sentinel, with real processes: `/readyz`, the metrics and the log name
//! the master in use and say when it changed; a failover is followed while enforcing goes on;
//! `config check` refuses sentinel URLs that lack a part and a `wait_replicas` out of range,
//! naming the line.

use std::time::Duration;

use floodwall_testkit::RedisSentinels;
use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::binary::{Floodwall, config_file, floodwall};

const POLICY: &str = r#"
[[policy]]
name = "few"
algorithm = "fixed_window"
limit = 5
period = "1h"
"#;

async fn readyz(client: &Client, service: &Floodwall) -> Value {
    let ready = client.get(service.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    ready.json().await.unwrap()
}

async fn check(client: &Client, service: &Floodwall) -> StatusCode {
    client
        .post(service.url("/v1/check"))
        .body(r#"{"policy": "few", "key": "k"}"#)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_names_the_master_in_use_and_follows_a_failover() {
    let set = RedisSentinels::start(1, 3).unwrap();
    let config = config_file(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\nurl = \"{}\"\ntimeout = \"50ms\"\n{POLICY}",
        set.url()
    ));
    let service = Floodwall::serve_with(Some(config.path()), &[], true);
    // The failover takes longer than the service keeps an idle connection open: no reuse.
    let client = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let old = set.master_index().unwrap();
    let body = readyz(&client, &service).await;
    let master = &body["store"]["master"];
    assert_eq!(master["name"], RedisSentinels::MASTER_NAME, "{body}");
    assert_eq!(
        master["address"],
        format!("127.0.0.1:{}", set.nodes()[old].port().unwrap()),
        "{body}"
    );
    assert_eq!(master["changes"], 1, "{body}");
    assert!(service.logged("redis master found by the sentinels"));
    for _ in 0..3 {
        assert_eq!(check(&client, &service).await, StatusCode::OK);
    }

    let new = tokio::task::spawn_blocking(move || {
        let new = set.failover().unwrap();
        (set, new)
    });
    let (set, new) = new.await.unwrap();
    let changed = service
        .log_line_within("redis master changed", Duration::from_secs(5))
        .await;
    let new_address = format!("127.0.0.1:{}", set.nodes()[new].port().unwrap());
    assert!(changed.contains(&new_address), "{changed}");
    let body = readyz(&client, &service).await;
    assert_eq!(body["store"]["master"]["address"], new_address, "{body}");
    assert_eq!(body["store"]["master"]["changes"], 2, "{body}");
    assert!(
        body["store"]["master"]["changed_at_unix_ms"]
            .as_u64()
            .unwrap()
            > 0
    );
    let metrics = service.metrics().await;
    assert!(
        metrics.contains("floodwall_redis_master_changes_total 2"),
        "{metrics}"
    );
    // The dashboard's store line names it too.
    let dashboard: Value = client
        .get(service.admin_url("/v1/dashboard"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        dashboard["store"]["master"]["address"], new_address,
        "{dashboard}"
    );
    for metric in [
        "floodwall_redis_master_changes_total",
        "floodwall_redis_master_changed_at_seconds",
    ] {
        assert!(metrics.contains(&format!("# HELP {metric} ")), "{metrics}");
    }
    // The count moved with the failover: two more, then the limit.
    assert_eq!(check(&client, &service).await, StatusCode::OK);
    assert_eq!(check(&client, &service).await, StatusCode::OK);
    assert_eq!(
        check(&client, &service).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[test]
fn config_check_refuses_a_sentinel_url_without_its_parts() {
    for (url, why) in [
        ("redis+sentinel:///mymaster", "no sentinel given"),
        ("redis+sentinel://s1:26379", "no master name"),
        ("redis+sentinel://s1:26379/mymaster/first", "not a number"),
    ] {
        let file = config_file(&format!("[storage]\nurl = \"{url}\"\n{POLICY}"));
        let output = floodwall(&["config", "check", file.path().to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{url}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(":2:7:"), "{url}: {stderr}");
        assert!(stderr.contains(why), "{url}: {stderr}");
    }
    let file = config_file(&format!(
        "[storage]\nurl = \"redis+sentinel://s1,s2:26380/mymaster/2\"\n{POLICY}"
    ));
    let output = floodwall(&["config", "check", file.path().to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn config_check_takes_wait_replicas_from_0_to_16() {
    for (value, accepted) in [
        ("0", true),
        ("1", true),
        ("16", true),
        ("17", false),
        ("-1", false),
    ] {
        let file = config_file(&format!(
            "[storage]\nurl = \"redis://127.0.0.1:6390\"\nwait_replicas = {value}\n{POLICY}"
        ));
        let output = floodwall(&["config", "check", file.path().to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if accepted {
            assert_eq!(output.status.code(), Some(0), "{value}: {stderr}");
        } else {
            assert_eq!(output.status.code(), Some(2), "{value}");
            assert!(stderr.contains(":3:17: wait_replicas"), "{value}: {stderr}");
        }
    }
}
