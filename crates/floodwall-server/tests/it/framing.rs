//! Framing faults are blamed on whoever made them: a client's malformed body is a 4xx, not the
//! upstream's 502; codings and methods this service does not pass on are refused; an upstream's
//! ambiguous framing is a 502 problem; answers the framework makes are problems too.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::paths::{raw, raw_with_body, service};

#[tokio::test]
async fn a_clients_framing_faults_are_the_clients() {
    let service = service().await;
    let chunked = "POST /public/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked";
    let (status, body) = raw_with_body(service.address, chunked, "zz\r\nhello\r\n0\r\n\r\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Malformed request body"), "{body}");

    let gzip = "POST /public/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked";
    let (status, body) = raw_with_body(service.address, gzip, "5\r\nhello\r\n0\r\n\r\n").await;
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("Content-Encoding"), "{body}");

    let (status, body) = raw(service.address, "CONNECT /public/x HTTP/1.1\r\nHost: x").await;
    assert_eq!(status, 405, "{body}");

    // An absolute-form URI names the host: it replaces the Host header.
    let (status, body) = raw(
        service.address,
        "GET http://other.example/public/host HTTP/1.1\r\nHost: x",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"upstream saw host Some("other.example")"#);
}

#[tokio::test]
async fn an_upstream_answer_with_two_framings_is_a_502_problem() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    let service = crate::in_process::Service::start(&format!(
        "[[route]]\nmatch = \"GET /*\"\nupstream = \"http://{up}\"\n"
    ))
    .await;
    let (status, body) = raw(service.address, "GET /smuggle HTTP/1.1\r\nHost: x").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("\"Bad gateway\""), "{body}");
}

#[tokio::test]
async fn answers_the_framework_makes_are_problems() {
    let service = crate::in_process::Service::start(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[policy]]\nname = \"p\"\nalgorithm = \"gcra\"\nlimit = 5\nperiod = \"1s\"\n",
    )
    .await;
    let (status, body) = raw(service.address, "GET /v1/check HTTP/1.1\r\nHost: x").await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("allowed: POST"), "{body}");
    let admin = service.admin_address.unwrap();
    for (head, expected) in [
        ("GET /v1/limits/%FF/k HTTP/1.1\r\nHost: localhost", 400),
        ("GET /nothing-here HTTP/1.1\r\nHost: localhost", 404),
        (
            "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0",
            405,
        ),
        // Without a token, only its own host is answered.
        ("GET /metrics HTTP/1.1\r\nHost: x", 421),
    ] {
        let (status, body) = raw(admin, head).await;
        assert_eq!(status, expected, "{head}: {body}");
        assert!(body.contains("\"title\""), "{head}: {body}");
    }
}
