//! Bearer tokens for the admin API and the check API.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::error::ApiError;

/// Which API a token guards, for the answer that asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `[admin] token_env`.
    Admin,
    /// `[check] token_env`.
    Check,
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The password of `Authorization: Basic …`: how a browser sends the admin token, which it
/// prompts for (any user name) and then sends with every request of the dashboard. Refused when
/// the request comes from another site's page (its `Origin` is not this host), so a page
/// elsewhere cannot act with the credentials the browser keeps.
fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let value = headers
        .get(AUTHORIZATION)?
        .as_bytes()
        .strip_prefix(b"Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let at = decoded.iter().position(|b| *b == b':')?;
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let host = headers.get(http::header::HOST)?.as_bytes();
        let origin = origin.as_bytes();
        let same = origin
            .strip_prefix(b"http://")
            .or_else(|| origin.strip_prefix(b"https://"))
            .is_some_and(|origin_host| origin_host == host);
        if !same {
            return None;
        }
    }
    Some(decoded[at + 1..].to_vec())
}

/// The name of the admin token `headers` carry (as a bearer token, or as a browser's Basic
/// password): `admin` for `token_env`'s, a `[admin] tokens` name for one of those, `anonymous`
/// when no token is configured. 401 for any other.
pub(crate) fn admin_caller(
    headers: &HeaderMap,
    admin: Option<&crate::config::AdminConfig>,
) -> Result<String, ApiError> {
    let guarded = admin.filter(|admin| admin.guarded());
    let Some(admin) = guarded else {
        bearer(headers, None, Api::Admin)?;
        return Ok("anonymous".to_owned());
    };
    let main = admin.token.iter().map(|token| ("admin", token.as_str()));
    let named = admin
        .tokens
        .iter()
        .map(|(name, token)| (name.as_str(), token.as_str()));
    let password = basic_password(headers);
    // Every token is compared, so the time taken does not say which one came close.
    let mut caller = None;
    for (name, token) in main.chain(named) {
        let matched = match &password {
            Some(password) => same_token(password, token.as_bytes()),
            None => bearer(headers, Some(token), Api::Admin).is_ok(),
        };
        if matched && caller.is_none() {
            caller = Some(name.to_owned());
        }
    }
    match caller {
        Some(name) => Ok(name),
        None => {
            // A repeated Authorization header says so rather than 401.
            bearer(headers, None, Api::Admin)?;
            Err(ApiError::Unauthorized(Api::Admin))
        }
    }
}

/// Refuses a request without `Authorization: Bearer <token>` when a token is configured, and
/// one with more than one `Authorization` header whether or not one is (which would count is
/// ambiguous).
pub(crate) fn bearer(headers: &HeaderMap, token: Option<&str>, api: Api) -> Result<(), ApiError> {
    let mut given = headers.get_all(AUTHORIZATION).iter();
    let first = given.next();
    if given.next().is_some() {
        return Err(ApiError::Ambiguous("the Authorization header".to_owned()));
    }
    // No token configured: the API is open to whoever reaches its listener.
    let Some(token) = token else {
        return Ok(());
    };
    let given = first
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if same_token(given, token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(api))
    }
}
