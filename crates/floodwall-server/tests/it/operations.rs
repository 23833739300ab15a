//! Operating the service: SIGHUP reload under load (J4) and SIGTERM draining (J3).

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::binary::Floodwall;

fn config(limit: u64) -> String {
    format!(
        "[[policy]]\nname = \"p\"\nalgorithm = \"fixed_window\"\nlimit = {limit}\nperiod = \"1h\"\n\
         [[route]]\nmatch = \"GET /\"\npolicies = [\"p\"]\nrespond = {{ status = 200, json = {{ ok = true }} }}\n"
    )
}

/// The policy's limit and remaining units for the test client, read without consuming.
async fn peek(client: &Client, service: &Floodwall) -> (u64, u64) {
    let body = r#"{"policy": "p", "key": "127.0.0.1", "cost": 0}"#;
    let response = client
        .post(service.url("/v1/check"))
        .body(body)
        .send()
        .await
        .unwrap();
    let state: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    (
        state["limit"].as_u64().unwrap(),
        state["remaining"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_file_keeps_counters_and_rejects_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.toml");
    std::fs::write(&file, config(5)).unwrap();
    let service = Floodwall::serve(Some(&file));
    let client = Client::new();
    for _ in 0..2 {
        assert_eq!(
            client.get(service.url("/")).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    assert_eq!(peek(&client, &service).await, (5, 3));

    // Load throughout the reloads: every answer is a decision, never an error.
    let load = {
        let (client, url) = (client.clone(), service.url("/v1/check"));
        tokio::spawn(async move {
            let mut answered = 0;
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                let body = r#"{"policy": "p", "key": "someone else", "cost": 0}"#;
                let status = client.post(&url).body(body).send().await.unwrap().status();
                assert_eq!(status, StatusCode::OK);
                answered += 1;
            }
            answered
        })
    };

    std::fs::write(&file, config(8)).unwrap();
    service.signal("-HUP");
    let until = Instant::now() + Duration::from_secs(5);
    while peek(&client, &service).await.0 != 8 {
        assert!(Instant::now() < until, "the new limit never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The two units counted before the reload still count under the new limit.
    assert_eq!(peek(&client, &service).await, (8, 6));
    // Lines are read in order: once the reload's last line is in, a warning would be too.
    service.log_line("configuration reloaded").await;
    assert!(
        !service.logged("apply at restart only"),
        "a reload that changed only a limit warned about a restart"
    );

    std::fs::write(
        &file,
        "[[policy]]\nname = \"p\"\nalgorithm = \"leaky\"\nlimit = 8\nperiod = \"1h\"\n",
    )
    .unwrap();
    service.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        peek(&client, &service).await,
        (8, 6),
        "an invalid file replaced the running one"
    );
    // J4: the log says why, with the file's line and column.
    let rejected = service
        .log_line("rejected, keeping the running configuration")
        .await;
    assert!(rejected.contains("live.toml"), "{rejected}");
    service.log_line("live.toml:3:13: unknown algorithm").await;

    // Storage settings are read once: a reload that changes them applies the rest and says so.
    std::fs::write(
        &file,
        format!(
            "[storage]
on_error = \"deny\"\n{}",
            config(9)
        ),
    )
    .unwrap();
    service.signal("-HUP");
    service.log_line("apply at restart only").await;
    let until = Instant::now() + Duration::from_secs(5);
    while peek(&client, &service).await.0 != 9 {
        assert!(Instant::now() < until, "the rest of the file never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(load.await.unwrap() > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drain.toml");
    std::fs::write(&file, config(1_000_000)).unwrap();
    let mut service = Floodwall::serve(Some(&file));
    let client = Client::new();
    let url = service.url("/");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut outcomes = (0u32, 0u32);
                for _ in 0..50 {
                    match client.get(&url).send().await {
                        Ok(response) => {
                            // A response that started is finished, whole and valid.
                            assert_eq!(response.status(), StatusCode::OK);
                            let body = response.bytes().await.unwrap();
                            assert_eq!(&body[..], br#"{"ok":true}"#);
                            outcomes.0 += 1;
                        }
                        Err(error) => {
                            // After the listener closed: refused or closed before any answer.
                            assert!(error.is_connect() || error.is_request(), "{error}");
                            outcomes.1 += 1;
                        }
                    }
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let signalled = Instant::now();
    service.signal("-TERM");
    let code = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap();
    let exit_after = signalled.elapsed();
    let mut answered = 0;
    for task in tasks {
        answered += task.await.unwrap().0;
    }
    assert_eq!(code, Some(0));
    assert!(
        exit_after < Duration::from_secs(5),
        "exited after {exit_after:?}"
    );
    assert!(answered > 0);
}

/// A burst of connections far deeper than the old default queue of 128 is held by the kernel
/// until the service accepts it: none is dropped at the handshake, so none can be reset when a
/// stop closes the listener right after.
#[tokio::test]
async fn a_listener_queues_a_burst_of_connections_it_has_not_accepted_yet() {
    const BURST: usize = 1000;
    let listener = floodwall_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = listener.local_addr().unwrap();
    let queue = listener.into_std().unwrap();
    // The system caps every queue at `somaxconn`; a host set below the burst cannot hold it.
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .unwrap_or(BURST);
    let burst = BURST.min(cap);
    assert!(
        burst > 128,
        "net.core.somaxconn = {cap} is too low for this test"
    );
    let clients: Vec<_> = (0..burst)
        .map(|_| std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)))
        .collect::<Result<_, _>>()
        .unwrap();
    // A handshake whose last packet the kernel dropped for a full queue is not in the queue,
    // so counting what accept returns without waiting counts what the queue held.
    queue.set_nonblocking(true).unwrap();
    let queued = std::iter::from_fn(|| queue.accept().ok()).count();
    assert_eq!(queued, clients.len());
}

/// Every request that reached the service before SIGTERM is answered, whole: requests just
/// written on idle keep-alive connections, and requests on connections still in the kernel's
/// queue when the signal arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_request_sent_before_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drain.toml");
    std::fs::write(&file, config(1_000_000)).unwrap();
    let mut service = Floodwall::serve(Some(&file));
    let address = service.address;
    let request: &'static [u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    // Keep-alive connections that have been answered once and sit idle.
    let mut kept = Vec::new();
    for _ in 0..600 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut first = [0_u8; 1024];
        let n = stream.read(&mut first).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"));
        kept.push(stream);
    }
    // New connections with their requests, many still queued in the kernel at the signal.
    let sent: Vec<_> = (0..300)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(address).await.ok()?;
                stream.write_all(request).await.ok()?;
                Some(stream)
            })
        })
        .collect();
    let mut written = Vec::new();
    for task in sent {
        if let Some(stream) = task.await.unwrap() {
            written.push(stream);
        }
    }
    // A connection is queued once the service's kernel has its handshake's last ACK, which on
    // a starved machine can trail the client's connect(); one that has not arrived at the
    // signal is reset by any server, so the handshakes get a moment to land.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Second requests on the kept connections, written back to back, the signal right after:
    // the service has read only some of them when it starts to stop.
    for stream in &mut kept {
        stream.write_all(request).await.unwrap();
    }
    service.signal("-TERM");
    written.extend(kept);
    assert!(
        written.len() >= 800,
        "only {} requests were sent",
        written.len()
    );
    let mut unanswered = 0;
    for stream in &mut written {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        match read.await {
            Ok(Ok(_))
                if answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(br#"{"ok":true}"#) => {}
            _ => unanswered += 1,
        }
    }
    assert_eq!(
        unanswered,
        0,
        "of {} requests sent before SIGTERM",
        written.len()
    );
    let code = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}
