//! Who a request counts against: the client key extracted from each request.
//!
//! Keys are bytes; the store hashes any key that is long or unusual, so a client cannot steer
//! or inflate storage with what it sends.

mod client_ip;

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use http::HeaderName;
use http::request::Parts;

pub use self::client_ip::{
    ClientIp, DEFAULT_MAX_HOPS, ForwardedHeader, parse_forwarded_entry, parse_forwarded_for_entry,
};

/// Why no key could be extracted from a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The request lacks what the key is made of (answered 401 with this text as the detail).
    #[error("this endpoint is rate limited per client and the request has no {what}")]
    Missing {
        /// What was missing, e.g. `header "x-api-key"`.
        what: String,
    },
    /// The server records no peer address (answered 500): serve with axum's
    /// `into_make_service_with_connect_info::<SocketAddr>()`, or insert a [`PeerAddr`].
    #[error(
        "the server records no peer address: serve with into_make_service_with_connect_info::<SocketAddr>() or insert a PeerAddr extension"
    )]
    NoPeerAddress,
}

/// Extracts the client key of a request.
///
/// Implemented by [`ClientIp`], [`Header`], [`Query`], [`Global`], [`Extension`], pairs of
/// extractors (a composite key), [`Fallback`] (see [`KeyExtractorExt::or`]) and [`key_fn`].
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of this request.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the request carries no key of this kind.
    fn extract(&self, request: &Parts) -> Result<Vec<u8>, KeyError>;
}

impl KeyExtractor for Box<dyn KeyExtractor> {
    fn extract(&self, request: &Parts) -> Result<Vec<u8>, KeyError> {
        (**self).extract(request)
    }
}

/// Combinators on key extractors.
pub trait KeyExtractorExt: KeyExtractor + Sized {
    /// Uses `fallback` when this extractor finds no key (e.g. the client IP when no API key
    /// was sent). Keys from the two sources never collide: each is tagged with its source.
    fn or<F: KeyExtractor>(self, fallback: F) -> Fallback<Self, F> {
        Fallback {
            first: self,
            fallback,
        }
    }
}

impl<K: KeyExtractor> KeyExtractorExt for K {}

/// The TCP peer address, as a request extension, for servers other than axum's (which records
/// `ConnectInfo<SocketAddr>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address recorded for a request, if any.
pub(crate) fn peer_addr(request: &Parts) -> Option<SocketAddr> {
    if let Some(PeerAddr(address)) = request.extensions.get::<PeerAddr>() {
        return Some(*address);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(address)) = request
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*address);
    }
    None
}

/// Keys requests by the value of one header (e.g. an API key). The first line counts.
#[derive(Debug, Clone)]
pub struct Header {
    name: HeaderName,
}

impl Header {
    /// Keys by the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Header { name }
    }
}

impl KeyExtractor for Header {
    fn extract(&self, request: &Parts) -> Result<Vec<u8>, KeyError> {
        match request.headers.get(&self.name) {
            Some(value) if !value.is_empty() => Ok(value.as_bytes().to_vec()),
            _ => Err(KeyError::Missing {
                what: format!("header {:?}", self.name.as_str()),
            }),
        }
    }
}

/// Keys requests by one query parameter (percent-decoded). The first occurrence counts.
#[derive(Debug, Clone)]
pub struct Query {
    name: String,
}

impl Query {
    /// Keys by the query parameter `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Query { name: name.into() }
    }
}

impl KeyExtractor for Query {
    fn extract(&self, request: &Parts) -> Result<Vec<u8>, KeyError> {
        let query = request.uri.query().unwrap_or_default();
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, value)| *name == self.name && !value.is_empty())
            .map(|(_, value)| value.into_owned().into_bytes())
            .ok_or_else(|| KeyError::Missing {
                what: format!("query parameter {:?}", self.name),
            })
    }
}

/// One key for every request: a limit shared by all clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyExtractor for Global {
    fn extract(&self, _request: &Parts) -> Result<Vec<u8>, KeyError> {
        Ok(b"global".to_vec())
    }
}

/// Keys requests by a value an earlier layer stored as a request extension, such as the id of
/// the authenticated user. Its `Display` form is the key.
pub struct Extension<T> {
    what: &'static str,
    _type: PhantomData<fn() -> T>,
}

impl<T> Extension<T> {
    /// Keys by the `T` extension; `what` names it in the 401 answer when it is absent
    /// (e.g. `"authenticated user"`).
    pub fn new(what: &'static str) -> Self {
        Extension {
            what,
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Extension<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extension")
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> Clone for Extension<T> {
    fn clone(&self) -> Self {
        Extension::new(self.what)
    }
}

impl<T: fmt::Display + Send + Sync + 'static> KeyExtractor for Extension<T> {
    fn extract(&self, request: &Parts) -> Result<Vec<u8>, KeyError> {
        request
            .extensions
            .get::<T>()
            .map(|value| value.to_string().into_bytes())
            .ok_or_else(|| KeyError::Missing {
                what: self.what.to_owned(),
            })
    }
}

/// A composite key: both parts must be present. The first part is length-prefixed, so
/// `("ab", "c")` and `("a", "bc")` are different keys.
impl<A: KeyExtractor, B: KeyExtractor> KeyExtractor for (A, B) {
    fn extract(&self, request: &Parts) -> Result<Vec<u8>, KeyError> {
        let first = self.0.extract(request)?;
        let second = self.1.extract(request)?;
        let mut key = Vec::with_capacity(first.len() + second.len() + 9);
        key.extend_from_slice(first.len().to_string().as_bytes());
        key.push(b':');
        key.extend_from_slice(&first);
        key.extend_from_slice(&second);
        Ok(key)
    }
}

/// The first extractor's key, or the fallback's when the first finds none. See
/// [`KeyExtractorExt::or`].
#[derive(Debug, Clone)]
pub struct Fallback<A, B> {
    first: A,
    fallback: B,
}

impl<A: KeyExtractor, B: KeyExtractor> KeyExtractor for Fallback<A, B> {
    fn extract(&self, request: &Parts) -> Result<Vec<u8>, KeyError> {
        // Tagged, so an API key that happens to read like an address is not that address.
        let (tag, key) = match self.first.extract(request) {
            Ok(key) => (b'1', key),
            Err(KeyError::Missing { .. }) => (b'2', self.fallback.extract(request)?),
            Err(error) => return Err(error),
        };
        let mut tagged = Vec::with_capacity(key.len() + 2);
        tagged.extend_from_slice(&[tag, b':']);
        tagged.extend_from_slice(&key);
        Ok(tagged)
    }
}

/// Any other key: a closure from the request head.
///
/// ```
/// use floodwall_http::key::{key_fn, KeyError};
/// let by_tenant = key_fn(|request| {
///     request
///         .uri
///         .path()
///         .strip_prefix("/tenants/")
///         .and_then(|rest| rest.split('/').next())
///         .map(|tenant| tenant.as_bytes().to_vec())
///         .ok_or(KeyError::Missing { what: "tenant in the path".into() })
/// });
/// # let _ = by_tenant;
/// ```
pub fn key_fn<F>(extract: F) -> FnKey<F>
where
    F: Fn(&Parts) -> Result<Vec<u8>, KeyError> + Send + Sync + 'static,
{
    FnKey(extract)
}

/// A key extractor made from a closure by [`key_fn`].
#[derive(Clone)]
pub struct FnKey<F>(F);

impl<F> fmt::Debug for FnKey<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnKey")
    }
}

impl<F> KeyExtractor for FnKey<F>
where
    F: Fn(&Parts) -> Result<Vec<u8>, KeyError> + Send + Sync + 'static,
{
    fn extract(&self, request: &Parts) -> Result<Vec<u8>, KeyError> {
        (self.0)(request)
    }
}
