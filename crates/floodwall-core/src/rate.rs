//! Rates written the way people say them: `"10/minute"`, `"5 per 2 minutes"`.

use std::time::Duration;

/// A limit over a period, as written in a rate string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units admitted per period; at least 1.
    pub limit: u64,
    /// The period; at least one second.
    pub period: Duration,
}

/// A rate string that is not one of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {input:?}: expected COUNT/UNIT, COUNT per UNIT or COUNT per N UNITs, \
     e.g. \"10/minute\", \"100 per second\", \"5 per 2 minutes\", \"1000/day\" \
     (units: second, minute, hour, day; COUNT and N whole numbers of at least 1)"
)]
pub struct ParseRateError {
    /// The rejected text.
    pub input: String,
}

/// Parses `COUNT/UNIT`, `COUNT per UNIT` and `COUNT per N UNITs` (or `COUNT/N UNITs`), where
/// UNIT is second, minute, hour or day, singular or plural, in any case.
///
/// ```
/// use std::time::Duration;
/// use floodwall_core::{Rate, parse_rate};
///
/// assert_eq!(parse_rate("10/minute")?, Rate { limit: 10, period: Duration::from_secs(60) });
/// assert_eq!(parse_rate("5 per 2 minutes")?.period, Duration::from_secs(120));
/// assert!(parse_rate("10 a minute").is_err());
/// # Ok::<(), floodwall_core::ParseRateError>(())
/// ```
///
/// # Errors
///
/// [`ParseRateError`], whose message lists the accepted forms.
pub fn parse_rate(input: &str) -> Result<Rate, ParseRateError> {
    let error = || ParseRateError {
        input: input.to_owned(),
    };
    let text = input.trim();
    let (count, per) = match text.split_once('/') {
        Some((count, per)) => (count.trim_end(), per.trim_start()),
        None => {
            let (count, rest) = text.split_once(char::is_whitespace).ok_or_else(error)?;
            let rest = rest.trim_start();
            let per = strip_prefix_ignore_case(rest, "per")
                .filter(|per| per.starts_with(char::is_whitespace))
                .ok_or_else(error)?;
            (count, per.trim_start())
        }
    };
    let limit = whole_number(count).ok_or_else(error)?;
    let (multiple, unit) = match per.find(|c: char| !c.is_ascii_digit()) {
        Some(0) => (1, per),
        Some(end) => (
            whole_number(&per[..end]).ok_or_else(error)?,
            per[end..].trim_start(),
        ),
        None => return Err(error()),
    };
    let seconds = unit_seconds(unit).ok_or_else(error)?;
    let period = multiple.checked_mul(seconds).ok_or_else(error)?;
    Ok(Rate {
        limit,
        period: Duration::from_secs(period),
    })
}

/// A whole number of at least 1, digits only (`u64`'s parser alone would take a `+`).
fn whole_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&n| n > 0)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn unit_seconds(unit: &str) -> Option<u64> {
    let lower = unit.to_ascii_lowercase();
    let singular = lower.strip_suffix('s').unwrap_or(&lower);
    match singular {
        "second" => Some(1),
        "minute" => Some(60),
        "hour" => Some(3_600),
        "day" => Some(86_400),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: u64, seconds: u64) -> Rate {
        Rate {
            limit,
            period: Duration::from_secs(seconds),
        }
    }

    #[test]
    fn every_documented_form_parses() {
        for (text, expected) in [
            ("10/minute", rate(10, 60)),
            ("10 per minute", rate(10, 60)),
            ("5 per 2 minutes", rate(5, 120)),
            ("100/second", rate(100, 1)),
            ("1000/day", rate(1000, 86_400)),
            ("3/hour", rate(3, 3_600)),
            ("  7 PER   3 Hours ", rate(7, 10_800)),
            ("2 / 30 seconds", rate(2, 30)),
            ("2/30seconds", rate(2, 30)),
            ("1 per days", rate(1, 86_400)),
        ] {
            assert_eq!(parse_rate(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn malformed_rates_are_refused_with_the_accepted_forms() {
        for text in [
            "",
            "10",
            "10/",
            "/minute",
            "0/minute",
            "10/0 minutes",
            "-1/minute",
            "+5/minute",
            "10 a minute",
            "10 perminute",
            "10/fortnight",
            "10/minutess",
            "1.5/second",
            "10/2",
            "99999999999999999999/second",
            "1 per 99999999999999999 days",
            "10/minute; 100/hour",
            "é/minute",
        ] {
            let error = parse_rate(text).expect_err(text);
            assert_eq!(error.input, text);
            assert!(error.to_string().contains("5 per 2 minutes"), "{error}");
        }
    }
}
