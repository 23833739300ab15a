//! How a (prefix, policy, client key) becomes a storage key.
//!
//! Layout: `{prefix}:{policy}:{code}{{client}}`, e.g. `floodwall:per-ip:g{203.0.113.7}`, where
//! the code is one letter per algorithm ([`algorithm_code`]). Keys are kept short because Redis
//! spends memory on each key by size class: a key of up to 30 bytes costs 16 bytes less than one of
//! 31–46. Policy names hold no `:` or `{`, so a key names one (policy, algorithm, client) only.
//! The client part is the Redis Cluster hash tag, so every policy checked for one client lives in
//! one slot and is decided in one script call. Client keys are untrusted: a key that is empty,
//! longer than [`MAX_PLAIN_CLIENT_KEY`] bytes, or holds anything but printable ASCII outside
//! `{}#*?[]\` is replaced by `#` and 32 hex digits of its SHA-256, so no client can move the slot,
//! empty the tag, inject glob patterns, or make a key long. Plain keys never
//! start with `#`, so a digest cannot collide with a plain key.

use std::borrow::Cow;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::Algorithm;
use crate::policy::Policy;

/// The longest client key kept as it is; longer keys are digested.
pub const MAX_PLAIN_CLIENT_KEY: usize = 64;

/// Length of a digested client key: `#` and 32 hex digits.
pub const DIGEST_CLIENT_KEY_LEN: usize = 33;

/// A key prefix that is not 1–64 characters of `A-Z a-z 0-9 _ . : -`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid key prefix {prefix:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', ':' and '-'"
)]
pub struct PrefixError {
    /// The rejected prefix.
    pub prefix: String,
}

/// Checks a storage key prefix.
///
/// # Errors
///
/// [`PrefixError`] when the prefix is empty, longer than 64 bytes, or holds other characters.
pub fn validate_prefix(prefix: &str) -> Result<(), PrefixError> {
    let ok = (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PrefixError {
            prefix: prefix.to_owned(),
        })
    }
}

fn is_plain(client_key: &[u8]) -> bool {
    (1..=MAX_PLAIN_CLIENT_KEY).contains(&client_key.len())
        && client_key[0] != b'#'
        && client_key.iter().all(|&b| {
            (0x21..=0x7e).contains(&b)
                && !matches!(b, b'{' | b'}' | b'#' | b'*' | b'?' | b'[' | b']' | b'\\')
        })
}

/// The client part of a storage key: the key itself when plain, otherwise its digest.
///
/// ```
/// use floodwall_core::key::client_tag;
///
/// assert_eq!(client_tag(b"203.0.113.7"), "203.0.113.7");
/// let hostile = client_tag(b"a{b}c");
/// assert!(hostile.starts_with('#') && hostile.len() == 33);
/// assert_eq!(client_tag(&[b'x'; 10_000]).len(), 33);
/// ```
pub fn client_tag(client_key: &[u8]) -> Cow<'_, str> {
    if is_plain(client_key) {
        // Plain keys are ASCII by construction.
        if let Ok(plain) = std::str::from_utf8(client_key) {
            return Cow::Borrowed(plain);
        }
    }
    let digest = Sha256::digest(client_key);
    let mut tag = String::with_capacity(DIGEST_CLIENT_KEY_LEN);
    tag.push('#');
    for byte in &digest[..16] {
        // Writing to a String cannot fail.
        let _ = write!(tag, "{byte:02x}");
    }
    Cow::Owned(tag)
}

/// The one-letter code of an algorithm in storage keys: `f`ixed_window, sliding_`l`og,
/// sliding_`w`indow, `t`oken_bucket, `g`cra. Codes never change once released: they name stored
/// state.
pub const fn algorithm_code(algorithm: Algorithm) -> char {
    match algorithm {
        Algorithm::FixedWindow => 'f',
        Algorithm::SlidingLog => 'l',
        Algorithm::SlidingWindow => 'w',
        Algorithm::TokenBucket => 't',
        Algorithm::Gcra => 'g',
        Algorithm::Concurrency => 'c',
    }
}

/// The storage key of `client_key` under `policy`: `{prefix}:{policy}:{code}{{client}}`.
///
/// The algorithm is part of the key so that changing a policy's algorithm starts fresh state
/// instead of reading another algorithm's layout. The limit and period are not: changing them on
/// reload keeps the counts.
pub fn storage_key(prefix: &str, policy: &Policy, client_key: &[u8]) -> String {
    storage_key_for_tag(prefix, policy, &client_tag(client_key))
}

/// [`storage_key`] from a tag already computed with [`client_tag`], so that a caller deciding
/// several policies for one client (or also deriving its cluster slot) digests a hostile key once.
pub fn storage_key_for_tag(prefix: &str, policy: &Policy, tag: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + policy.name().len() + tag.len() + 5);
    key.push_str(prefix);
    key.push(':');
    key.push_str(policy.name());
    key.push(':');
    key.push(algorithm_code(policy.algorithm()));
    key.push('{');
    key.push_str(tag);
    key.push('}');
    key
}

/// The storage key of the shares of `policy`'s rate among proxies for the client with `tag`
/// (see [`crate::quota`]): the policy's key with the code `q`, so that it shares the client's
/// hash tag and never collides with a decision's state.
pub fn quota_key_for_tag(prefix: &str, policy: &Policy, tag: &str) -> String {
    let mut key = storage_key_for_tag(prefix, policy, tag);
    let code = prefix.len() + 1 + policy.name().len() + 1;
    key.replace_range(code..code + 1, "q");
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_quota_key_shares_the_tag_but_not_the_state_key() {
        let policy =
            Policy::new("per-tenant", Algorithm::Gcra, 10, Duration::from_secs(1)).unwrap();
        assert_eq!(
            quota_key_for_tag("fw", &policy, "acme"),
            "fw:per-tenant:q{acme}"
        );
        assert_eq!(
            storage_key_for_tag("fw", &policy, "acme"),
            "fw:per-tenant:g{acme}"
        );
    }

    #[test]
    fn hostile_client_keys_are_digested_to_a_fixed_length() {
        let hostile: [&[u8]; 12] = [
            b"",
            b"{",
            b"}",
            b"}abc",
            b"{}",
            b"a{b}c",
            b"a\0b",
            b"a\r\nb",
            b"\xff\xfe",
            b"*",
            b"#abc",
            b"with space",
        ];
        for key in hostile {
            let tag = client_tag(key);
            assert_eq!(tag.len(), DIGEST_CLIENT_KEY_LEN, "{key:?}");
            assert!(tag.bytes().skip(1).all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(client_tag(&[b'a'; 65]).len(), DIGEST_CLIENT_KEY_LEN);
        assert_eq!(client_tag(&[b'a'; 64]).len(), 64);
        assert_ne!(client_tag(b"{"), client_tag(b"}"));
    }

    #[test]
    fn storage_key_has_exactly_one_hash_tag() {
        let policy = Policy::new("per-ip", Algorithm::Gcra, 1, Duration::from_secs(1)).unwrap();
        assert_eq!(
            storage_key("floodwall", &policy, b"2001:db8::1"),
            "floodwall:per-ip:g{2001:db8::1}"
        );
        let key = storage_key("floodwall", &policy, b"}x{y}");
        assert_eq!(key.matches('{').count(), 1);
        assert_eq!(key.matches('}').count(), 1);
    }

    #[test]
    fn every_algorithm_has_its_own_code() {
        let codes: std::collections::BTreeSet<char> =
            Algorithm::ALL.into_iter().map(algorithm_code).collect();
        assert_eq!(codes.len(), Algorithm::ALL.len());
        assert!(codes.iter().all(char::is_ascii_lowercase));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(validate_prefix("floodwall").is_ok());
        assert!(validate_prefix("app:rl").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("a{b}").is_err());
    }
}
