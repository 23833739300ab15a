//! Requests refused before any router sees them, on every listener: framing this service will
//! not pass on, and methods it does not serve.

use http::header::TRANSFER_ENCODING;
use http::request::Parts;
use http::{Method, StatusCode};

use crate::error::ApiError;

/// Why `request` cannot be served at all, if it cannot:
/// - a `Transfer-Encoding` other than `chunked` alone (`gzip, chunked`, say): the body's coding
///   would be forwarded under headers that no longer describe it (501);
/// - `CONNECT`: no tunnels are made here (405).
pub(crate) fn refused(request: &Parts) -> Option<ApiError> {
    if request.method == Method::CONNECT {
        return Some(ApiError::MethodNotAllowed {
            method: request.method.clone(),
            allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        });
    }
    let mut codings = request
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|coding| !coding.is_empty());
    let only_chunked = match codings.next() {
        None => true,
        Some(first) => first.eq_ignore_ascii_case("chunked") && codings.next().is_none(),
    };
    (!only_chunked).then_some(ApiError::Status {
        status: StatusCode::NOT_IMPLEMENTED,
        title: "Transfer coding not implemented",
        detail: "only Transfer-Encoding: chunked is accepted; send other codings as Content-Encoding",
    })
}
