//! A one-request HTTP client for the commands that talk to a running service (`check
//! --server`, `admin`).

use anyhow::Context as _;

/// Sends one request to the service at `server` (`http://host:port`) on a connection of its
/// own, with `token` as its bearer token and `body` as JSON; answers its status and body.
pub(crate) async fn send(
    server: &str,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> anyhow::Result<(http::StatusCode, String)> {
    let base: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL like http://127.0.0.1:8080"))?;
    let authority = base
        .authority()
        .filter(|_| base.scheme_str() == Some("http"))
        .with_context(|| format!("--server {server:?} must be http://host:port"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority.as_str());
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = bytes::Bytes::from(body.unwrap_or_default());
    let request = request.body(http_body_util::Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
}
