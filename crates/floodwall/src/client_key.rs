//! How a client key is written where people and URLs see it. A client key is any bytes a route,
//! the check API or RLS produced from a request: not UTF-8, holding newlines, NULs, bidi or
//! zero-width characters. So it is never written as it is:
//!
//! - [`percent_encoded`] is the key as one URL path segment: decoding it ([`percent_decoded`])
//!   gives the same bytes back, whatever they are. An admin API shows keys this way so that a key
//!   shown can be named in a path as it is.
//! - [`Escaped`] is the key for a person or a log line: printable characters as they are; control,
//!   bidi, zero-width and other invisible characters, `\` and bytes that are not UTF-8 as escapes
//!   (`\n`, `\u{202e}`, `\xff`), so a key can neither forge a line nor display as another key.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Bytes a path segment carries as they are (RFC 3986 `pchar`, less `%` itself): everything
/// else is encoded. `/`, `?` and `#` would end the segment; the rest are not URL characters.
const OUTSIDE_PCHAR: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `key` as one URL path segment: unreserved and sub-delimiter characters, `:` and `@` as they
/// are, every other byte (non-ASCII and invalid UTF-8 included) as `%XX`.
///
/// ```
/// use floodwall::client_key::{percent_decoded, percent_encoded};
///
/// assert_eq!(percent_encoded(b"203.0.113.7"), "203.0.113.7");
/// assert_eq!(percent_encoded(b"a/b c\n"), "a%2Fb%20c%0A");
/// assert_eq!(percent_encoded(&[0xFF, 0xFE]), "%FF%FE");
/// assert_eq!(percent_decoded("%FF%FE"), vec![0xFF, 0xFE]);
/// ```
pub fn percent_encoded(key: &[u8]) -> String {
    let mut encoded = String::with_capacity(key.len());
    for chunk in key.utf8_chunks() {
        encoded.extend(utf8_percent_encode(chunk.valid(), OUTSIDE_PCHAR));
        for byte in chunk.invalid() {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    // Non-ASCII characters are encoded too (the set covers every byte above 0x7F).
    encoded
}

/// The bytes of a percent-encoded path segment: every `%XX` decoded, anything else as it is (a
/// `%` not followed by two hex digits stays a `%`).
pub fn percent_decoded(segment: &str) -> Vec<u8> {
    percent_decode_str(segment).collect()
}

/// A client key written for a person or a log line; see the [module](self) documentation.
///
/// ```
/// use floodwall::client_key::Escaped;
///
/// assert_eq!(Escaped(b"203.0.113.7").to_string(), "203.0.113.7");
/// assert_eq!(Escaped(b"a\nlevel=ERROR").to_string(), "a\\nlevel=ERROR");
/// assert_eq!(Escaped("\u{202E}1.0.0.01".as_bytes()).to_string(), "\\u{202e}1.0.0.01");
/// assert_eq!(Escaped(&[b'k', 0xFF]).to_string(), "k\\xff");
/// ```
#[derive(Clone, Copy)]
pub struct Escaped<'k>(pub &'k [u8]);

/// Whether `c` is shown as an escape: it is invisible, or changes how what follows displays.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Soft hyphen, Arabic letter mark, Mongolian vowel separator.
            '\u{AD}' | '\u{61C}' | '\u{180E}'
            // Zero-width spaces and joiners, directional marks.
            | '\u{200B}'..='\u{200F}'
            // Line and paragraph separators, bidi embeddings and overrides.
            | '\u{2028}'..='\u{202E}'
            // Word joiner, invisible operators, bidi isolates, deprecated format characters.
            | '\u{2060}'..='\u{206F}'
            // Byte order mark / zero-width no-break space.
            | '\u{FEFF}'
            // Interlinear annotation, object replacement anchors.
            | '\u{FFF9}'..='\u{FFFB}'
            // Tag characters.
            | '\u{E0000}'..='\u{E007F}'
        )
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    '\0' => f.write_str("\\0")?,
                    c if hidden(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                    c => fmt::Write::write_char(f, c)?,
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_key_survives_percent_encoding(key in proptest::collection::vec(any::<u8>(), 0..300)) {
            let encoded = percent_encoded(&key);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_graphic() && !b"/?#\\".contains(&b)));
            prop_assert_eq!(percent_decoded(&encoded), key);
        }

        #[test]
        fn an_escaped_key_is_one_line_of_visible_text(key in proptest::collection::vec(any::<u8>(), 0..300)) {
            let shown = Escaped(&key).to_string();
            prop_assert!(!shown.chars().any(hidden), "{shown:?}");
        }

        #[test]
        fn distinct_keys_escape_distinctly(
            a in proptest::collection::vec(any::<u8>(), 0..12),
            b in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(Escaped(&a).to_string(), Escaped(&b).to_string());
        }
    }

    #[test]
    fn look_alikes_and_line_breaks_are_shown_as_escapes() {
        for (key, shown) in [
            ("\u{202E}1.0.0.01", "\\u{202e}1.0.0.01"),
            ("10.0.0.1\u{200B}", "10.0.0.1\\u{200b}"),
            ("a\r\nb", "a\\r\\nb"),
            ("nul\0", "nul\\0"),
            ("back\\slash", "back\\\\slash"),
            ("café", "café"),
            ("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}"),
        ] {
            assert_eq!(Escaped(key.as_bytes()).to_string(), shown, "{key:?}");
        }
    }
}
