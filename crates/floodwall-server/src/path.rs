//! Request paths as routes see them: percent-encoded unreserved characters decoded, dot
//! segments removed (RFC 3986 §5.2.4) and repeated slashes merged, so that `/public/../admin`
//! is matched, limited and forwarded as `/admin`. A path that climbs above `/` or hides a `/`,
//! `\` or NUL in a percent-encoding is refused: no route could be chosen for it safely.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// `..` segments above the root.
    #[error("the path climbs above / with .. segments")]
    AboveRoot,
    /// `%2F`, `%5C` or `%00`: a separator or NUL that routing would not see.
    #[error("the path hides a /, \\ or NUL in a percent-encoding")]
    EncodedSeparator,
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent-encoding")]
    MalformedEscape,
}

/// Whether `byte` is unreserved (RFC 3986 §2.3): encoding it changes nothing, so it is decoded.
fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Decodes unreserved characters; other escapes are kept, with upper-case hex digits.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte != b'%' {
            decoded.push(char::from(byte));
            index += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(index + 1).copied().and_then(hex),
            bytes.get(index + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::MalformedEscape);
        };
        let value = high * 16 + low;
        if matches!(value, b'/' | b'\\' | 0) {
            return Err(PathError::EncodedSeparator);
        }
        if unreserved(value) {
            decoded.push(char::from(value));
        } else {
            decoded.push('%');
            decoded.push(char::from(bytes[index + 1].to_ascii_uppercase()));
            decoded.push(char::from(bytes[index + 2].to_ascii_uppercase()));
        }
        index += 3;
    }
    Ok(decoded)
}

/// `path` (an origin-form path, `/` first) normalised for routing and forwarding. Borrowed when
/// it is already normal, which is every well-behaved client's case.
pub(crate) fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let plain = !path.contains('%')
        && !path.contains("//")
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..");
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = decoded.split('/').skip(1).peekable();
    // Whether the path ends in a directory (`/`, `/.`, `/..`): its trailing slash is kept.
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => trailing_slash = last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = last;
            }
            // An empty segment is a repeated slash (merged), or the trailing one.
            "" => trailing_slash = last,
            segment => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

#[cfg(test)]
mod tests {
    use super::{PathError, normalize};

    #[test]
    fn dot_segments_and_unreserved_escapes_resolve_before_routing() {
        for (raw, normal) in [
            ("/", "/"),
            ("/public/page", "/public/page"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/.%2e/login", "/login"),
            ("/public/./../admin", "/admin"),
            ("/./admin", "/admin"),
            ("/a/b/../../c", "/c"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("//admin", "/admin"),
            ("/public//..//admin", "/admin"),
            ("/%7Euser/%61bc", "/~user/abc"),
            ("/q%3fx/%c3%a9", "/q%3Fx/%C3%A9"),
            ("/dir/", "/dir/"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(normal), "{raw}");
        }
    }

    #[test]
    fn climbing_above_the_root_or_hidden_separators_are_refused() {
        for (raw, error) in [
            ("/..", PathError::AboveRoot),
            ("/../admin", PathError::AboveRoot),
            ("/public/../../etc/passwd", PathError::AboveRoot),
            ("/%2e%2e/admin", PathError::AboveRoot),
            ("/public/..%2fadmin", PathError::EncodedSeparator),
            ("/public/..%2Fadmin", PathError::EncodedSeparator),
            ("/public/..%5cadmin", PathError::EncodedSeparator),
            ("/file%00.json", PathError::EncodedSeparator),
            ("/bad%zz", PathError::MalformedEscape),
            ("/cut%2", PathError::MalformedEscape),
        ] {
            assert_eq!(normalize(raw), Err(error), "{raw}");
        }
    }
}
