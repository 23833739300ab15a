//! Connections a hostile or careless client holds: headers dribbled, keep-alive left idle,
//! bodies stalled, headers too large, and more sockets than the process has descriptors.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::binary::{Floodwall, config_file};
use crate::in_process::Service;

const CONFIG: &str = r#"
[[policy]]
name = "per-key"
algorithm = "fixed_window"
limit = 1000
period = "1m"

[[route]]
match = "GET /"
key = "ip"
policies = ["per-key"]
respond = { status = 200, json = { message = "hello" } }
"#;

/// Reads until the server closes the connection (end of stream or reset) and returns what it
/// sent; panics if it stays open past `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("the connection was still open after {within:?}"),
        }
    }
}

/// Connections that send their headers a byte at a time are closed once `header_timeout` has
/// passed since they connected, however steadily they keep sending.
#[tokio::test]
async fn slowloris_connections_are_closed_within_the_header_timeout() {
    let service = Service::start(&format!("[server]\nheader_timeout = \"1s\"\n{CONFIG}")).await;
    let started = Instant::now();
    let mut dribblers = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(service.address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        dribblers.push(tokio::spawn(async move {
            // One byte every 100 ms: never a whole header line, never idle for long.
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b"X").await.is_err() {
                    return started.elapsed();
                }
                let mut probe = [0_u8; 1];
                if let Ok(Ok(0) | Err(_)) =
                    timeout(Duration::from_millis(1), stream.read(&mut probe)).await
                {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "a slowloris connection was still open after 5 s"
                );
            }
        }));
    }
    for dribbler in dribblers {
        let closed_after = dribbler.await.unwrap();
        assert!(
            closed_after >= Duration::from_millis(900),
            "closed after {closed_after:?}, before the header timeout"
        );
    }
    // The service itself still answers.
    let answer = reqwest::get(service.url("/")).await.unwrap();
    assert_eq!(answer.status(), 200);
}

/// A keep-alive connection is closed after `idle_timeout` with no request, and a connection
/// that has answered is not held to the (shorter) header timeout while it is idle.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let service = Service::start(&format!(
        "[server]\nheader_timeout = \"300ms\"\nidle_timeout = \"1500ms\"\n{CONFIG}"
    ))
    .await;
    let mut stream = TcpStream::connect(service.address).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0_u8; 4096];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from = Instant::now();
    // Past the header timeout the idle connection still serves a second request, whose header
    // clock starts at its first byte (it arrives in two parts, 200 ms apart).
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(b"Host: x\r\n\r\n").await.unwrap();
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from_again = Instant::now();
    closed_within(&mut stream, Duration::from_secs(4)).await;
    let idle_for = idle_from_again.elapsed();
    assert!(
        idle_for >= Duration::from_millis(1400),
        "closed after {idle_for:?} idle, before idle_timeout (first idle at {idle_from:?})"
    );
}

/// A request whose body keeps arriving is not cut by the header timeout; a body that stalls
/// for longer than `body_timeout` is answered 408 problem+json.
#[tokio::test]
async fn a_body_in_progress_is_served_and_a_stalled_body_gets_408() {
    let service = Service::start(&format!(
        "[server]\nheader_timeout = \"300ms\"\nbody_timeout = \"500ms\"\n{CONFIG}"
    ))
    .await;
    let body = br#"{"policy": "per-key", "key": "slow-but-steady"}"#;
    let mut stream = TcpStream::connect(service.address).await.unwrap();
    let head = format!(
        "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The body over about a second, a chunk every 150 ms: longer than the header timeout,
    // never a pause as long as the body timeout.
    for chunk in body.chunks(8) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(chunk).await.unwrap();
    }
    let mut buffer = [0_u8; 4096];
    let n = timeout(Duration::from_secs(3), stream.read(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buffer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut stalled = TcpStream::connect(service.address).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"policy\"",
        )
        .await
        .unwrap();
    let answer = closed_within(&mut stalled, Duration::from_secs(3)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

/// Headers past `max_header_bytes` are refused with 431, not buffered.
#[tokio::test]
async fn headers_past_max_header_bytes_get_431() {
    let service = Service::start(CONFIG).await;
    let mut stream = TcpStream::connect(service.address).await.unwrap();
    let filler = "a".repeat(1000);
    let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for n in 0..40 {
        head.push_str(&format!("x-filler-{n}: {filler}\r\n"));
    }
    head.push_str("\r\n");
    // The server may close before it has read everything; the answer is what matters.
    let _ = stream.write_all(head.as_bytes()).await;
    let answer = closed_within(&mut stream, Duration::from_secs(3)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // Below the bound, the same kind of request is served.
    let small = reqwest::Client::new()
        .get(service.url("/"))
        .header("x-filler", "a".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
}

/// Hundreds of connections each sending ~380 KB of headers and then dribbling cost the server
/// at most a few tens of kilobytes each, not what they send.
#[tokio::test]
async fn fat_header_slowloris_keeps_memory_bounded() {
    let config = config_file(CONFIG);
    let floodwall = Floodwall::serve(Some(config.path()));
    // Warm up the allocator and the connection machinery before the baseline.
    for _ in 0..20 {
        reqwest::get(floodwall.url("/")).await.unwrap();
    }
    let before = floodwall.resident_bytes();
    let line = format!("x-fat: {}\r\n", "a".repeat(7_000));
    let mut attackers = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(floodwall.address).await.unwrap();
        let line = line.clone();
        attackers.push(tokio::spawn(async move {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
            for _ in 0..54 {
                if stream.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
            // Then dribble, holding the connection (until the server closes it).
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
            }
            stream
        }));
    }
    let mut held = Vec::new();
    for attacker in attackers {
        held.push(attacker.await.unwrap());
    }
    let grown = floodwall.resident_bytes().saturating_sub(before);
    // 300 × 380 KB would be 114 MB; the bound is 32 KiB of buffer per connection.
    assert!(
        grown < 40 * 1024 * 1024,
        "resident memory grew by {} MB under 300 fat-header connections",
        grown / (1024 * 1024)
    );
    drop(held);
}

/// With 1 100 idle sockets on a process limited to 1 024 file descriptors, `/healthz` and the
/// admin listener still answer at once: the listener's bound fits the limit, and at the bound
/// the connection that has waited longest with no request is closed to make room.
#[tokio::test]
async fn healthz_and_admin_answer_while_idle_sockets_exceed_the_fd_limit() {
    // This test process holds the 1 100 sockets itself.
    rlimit::increase_nofile_limit(4096).unwrap();
    let config = config_file(&format!("[admin]\nlisten = \"127.0.0.1:0\"\n{CONFIG}"));
    let floodwall = Floodwall::serve_with_fd_limit(config.path(), 1024);
    let mut idle = Vec::new();
    for _ in 0..1100 {
        // Past the bound, connections wait in the kernel's queue; connecting still succeeds.
        if let Ok(Ok(stream)) = timeout(
            Duration::from_secs(2),
            TcpStream::connect(floodwall.address),
        )
        .await
        {
            idle.push(stream);
        }
    }
    assert!(idle.len() >= 1000, "only {} sockets connected", idle.len());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let healthz = client.get(floodwall.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let metrics = client
        .get(floodwall.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(!floodwall.logged("panicked"));
    drop(idle);
}
