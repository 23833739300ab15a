//! Self-test of the Redis guards: real processes start, answer, survive faults, and vanish.

// Tests fail by panicking; unwrap and expect are how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use floodwall_testkit::{RedisCluster, RedisServer, wait_until};

#[test]
fn a_server_starts_answers_and_is_killed_on_drop() {
    let server = RedisServer::start().unwrap();
    assert!(server.ping());
    assert_eq!(server.cli(&["SET", "k", "v"]).unwrap(), "OK");
    assert_eq!(server.cli(&["GET", "k"]).unwrap(), "v");
    assert_eq!(server.cli(&["CONFIG", "GET", "save"]).unwrap(), "save");
    // The port reported is the one this process listens on, and a second guard gets its own
    // server: state never leaks between tests, and nothing of a server on another port is used.
    let port = server.port().unwrap();
    assert_eq!(
        server.cli(&["CONFIG", "GET", "port"]).unwrap(),
        format!("port\n{port}")
    );
    let other = RedisServer::start().unwrap();
    assert_ne!(other.port(), Some(port));
    assert_eq!(other.cli(&["GET", "k"]).unwrap(), "");
    let pid = server.pid().unwrap();
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived"
    );
}

#[test]
fn a_server_restarts_on_the_same_port_and_pauses() {
    let mut server = RedisServer::start().unwrap();
    let port = server.port();
    server.kill();
    assert!(!server.ping());
    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert!(server.ping());
    server.pause().unwrap();
    assert!(!server.ping(), "a stopped server must not answer");
    server.resume().unwrap();
    assert!(server.ping());
}

#[test]
fn a_server_listens_on_a_unix_socket() {
    let server = RedisServer::builder().unix_socket().start().unwrap();
    assert!(server.ping());
    assert!(server.port().is_none());
    assert!(server.url().starts_with("redis+unix:///"));
}

#[test]
fn a_three_master_cluster_forms_and_serves_every_slot() {
    let cluster = RedisCluster::start().unwrap();
    assert_eq!(cluster.nodes().len(), 3);
    let info = cluster.nodes()[0].cli(&["CLUSTER", "INFO"]).unwrap();
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    assert!(info.contains("cluster_known_nodes:3"), "{info}");
    // Keys land on different masters; -c follows the redirections.
    for key in ["{a}x", "{b}x", "{c}x"] {
        assert_eq!(cluster.cli(&["SET", key, "1"]).unwrap(), "OK");
    }
    assert_eq!(cluster.url().matches("127.0.0.1:").count(), 3);
}

#[test]
fn a_cluster_with_replicas_fails_over_when_a_master_is_killed() {
    let mut cluster = RedisCluster::start_with(3, 1).unwrap();
    assert_eq!(cluster.nodes().len(), 6);
    // A key whose slot the first master serves: it answers OK itself rather than MOVED.
    let first = &cluster.nodes()[0];
    let key = (0..1000)
        .map(|i| format!("{{k{i}}}"))
        .find(|key| {
            first
                .cli(&["SET", key, "1"])
                .is_ok_and(|reply| reply == "OK")
        })
        .unwrap();
    cluster.node_mut(0).unwrap().kill();
    // Writable again only once a replica was promoted for that slot.
    wait_until(Duration::from_secs(20), || {
        Ok(cluster
            .cli(&["SET", &key, "2"])
            .is_ok_and(|reply| reply == "OK"))
    })
    .unwrap();
    assert_eq!(cluster.cli(&["GET", &key]).unwrap(), "2");
}
